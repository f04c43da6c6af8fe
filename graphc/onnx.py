"""`graphc.onnx`: the public name of graphc.interop.onnx (this module is that one)."""
import sys

from .interop import onnx as _impl

sys.modules[__name__] = _impl
