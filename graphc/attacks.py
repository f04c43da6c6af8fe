"""`graphc.attacks`: the public name of graphc.adversarial.attacks (this module is that one)."""
import sys

from .adversarial import attacks as _impl

sys.modules[__name__] = _impl
