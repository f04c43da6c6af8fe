"""`graphc.data`: the public name of graphc.learn.data (this module is that one)."""
import sys

from .learn import data as _impl

sys.modules[__name__] = _impl
