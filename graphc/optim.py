"""`graphc.optim`: the public name of graphc.learn.optim (this module is that one)."""
import sys

from .learn import optim as _impl

sys.modules[__name__] = _impl
