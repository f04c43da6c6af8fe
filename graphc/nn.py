"""`graphc.nn`: the public name of graphc.learn.nn (this module is that one)."""
import sys

from .learn import nn as _impl

sys.modules[__name__] = _impl
