"""`graphc.testing`: the public name of graphc.verify.strategies (this module is that one)."""
import sys

from .verify import strategies as _impl

sys.modules[__name__] = _impl
