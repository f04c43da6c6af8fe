"""Primitives that imported models need and the core ops cannot express exactly or cheaply:
constant padding (asymmetric conv/pool padding, ONNX Pad), static slicing (ONNX Slice/Split,
and the VJP of pad), and grouped convolution (AlexNet's two towers, depthwise convolutions).

Each is a registry entry like any other op: shape rule, NumPy forward, VJP built from graphc
ops (so it can be differentiated again), fuzz domain. None has a C kernel; the C backend runs
them as NumPy steps between its C segments.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import OpDef, apply, register
from .conv import _pair, _scatter_windows, _windows, conv2d, conv_output_size
from .elementwise import _floatify
from .linalg import widen
from .reduce import sum

__all__ = ["pad", "slice", "grouped_conv2d"]


# -- pad --------------------------------------------------------------------------------------------
def _pad_infer(inputs, pads, value):
    x = inputs[0]
    if len(pads) != x.ndim:
        raise GraphError(f"pads {pads} must give (before, after) for each of the {x.ndim} axes")
    if value != 0 and x.dtype.kind != "f":
        raise GraphError(f"a non-zero fill value ({value}) needs a floating input, got {x.dtype}")
    return tuple(None if d is None else d + b + e for d, (b, e) in zip(x.shape, pads)), x.dtype


def _pad_forward(x, pads, value):
    return np.pad(x, pads, mode="constant", constant_values=np.asarray(value, x.dtype) if value else 0)


def _pad_vjp(g, out, x, pads, value):
    return [apply("slice", [g], index=tuple((b, -e if e else None, 1) for b, e in pads))]


register(OpDef("pad", infer=_pad_infer, forward=_pad_forward, vjp=_pad_vjp, arity=1, fuzz="pad",
               value_preserving=True))


def pad(x, pads, value: float = 0.0) -> Tensor:
    """Pad with a constant: pads is one (before, after) pair of non-negative ints per axis.

    >>> import graphc as gc
    >>> gc.pad(gc.placeholder("x", (None, 3)), [(0, 0), (1, 2)]).shape
    (None, 6)
    """
    x = as_tensor(x)
    pads = tuple((int(b), int(e)) for b, e in pads)
    if any(b < 0 or e < 0 for b, e in pads):
        raise GraphError(f"pad sizes must be non-negative, got {pads}")
    if not any(b or e for b, e in pads):
        return x
    return apply("pad", [x], pads=pads, value=float(value))


# -- slice ------------------------------------------------------------------------------------------
def _slices(index):
    return tuple(builtins.slice(*t) for t in index)


def _slice_infer(inputs, index):
    x = inputs[0]
    if len(index) != x.ndim:
        raise GraphError(f"slice needs one (start, stop, step) per axis of the {x.ndim}-d input, got {index}")
    shape = []
    for d, (start, stop, step) in zip(x.shape, index):
        if step == 0:
            raise GraphError("slice step must not be zero")
        if d is None:
            shape.append(None)
        else:
            shape.append(len(range(*builtins.slice(start, stop, step).indices(d))))
    return tuple(shape), x.dtype


def _slice_vjp(g, out, x, index):
    return [apply("slice_grad", [g, x], index=index)]


def _slice_grad_forward(g, like, index):
    out = np.zeros(like.shape, g.dtype)
    out[_slices(index)] = g
    return out


register(OpDef("slice", infer=_slice_infer, forward=lambda x, index: x[_slices(index)], vjp=_slice_vjp, arity=1,
               fuzz="slice", value_preserving=True))
register(OpDef("slice_grad", infer=lambda i, index: (i[1].shape, i[0].dtype), forward=_slice_grad_forward,
               vjp=lambda gg, out, g, like, index: [apply("slice", [gg], index=index), None], arity=2,
               fuzz="slice", made_by="vjp"))


def slice(x, index) -> Tensor:  # noqa: A001 - mirrors Python's slice
    """x[start:stop:step, ...] with one (start, stop, step) triple per axis (Python semantics; None
    allowed), e.g. `gc.slice(x, [(None, None, 1), (1, None, 2)])` is `x[:, 1::2]`."""
    x = as_tensor(x)
    index = tuple((None if a is None else int(a), None if b is None else int(b), 1 if c is None else int(c))
                  for a, b, c in index)
    if all(t in ((None, None, 1), (0, None, 1)) for t in index) and len(index) == x.ndim:
        return x
    return apply("slice", [x], index=index)


# -- grouped convolution ----------------------------------------------------------------------------
def _gconv_infer(inputs, stride, padding, groups):
    x, w = inputs[:2]
    if x.ndim != 4 or w.ndim != 4:
        raise GraphError(f"grouped_conv2d needs x (N, C, H, W) and w (O, C/groups, KH, KW), got {x.ndim}-d and "
                         f"{w.ndim}-d")
    if x.dtype.kind != "f" or w.dtype != x.dtype:
        raise GraphError(f"grouped_conv2d needs x and w of one floating dtype, got {x.dtype} and {w.dtype}")
    if w.shape[0] is not None and w.shape[0] % groups:
        raise GraphError(f"{w.shape[0]} output channels do not split into {groups} groups")
    if x.shape[1] is not None and w.shape[1] is not None and x.shape[1] != w.shape[1] * groups:
        raise GraphError(f"input has {x.shape[1]} channels; {groups} groups of {w.shape[1]} expected")
    if len(inputs) == 3 and inputs[2].shape not in ((w.shape[0],), (None,)):
        raise GraphError(f"bias must have shape ({w.shape[0]},), got {inputs[2].shape}")
    (sh, sw), (ph, pw) = stride, padding
    oh = conv_output_size(x.shape[2], w.shape[2], sh, ph) if w.shape[2] is not None else None
    ow = conv_output_size(x.shape[3], w.shape[3], sw, pw) if w.shape[3] is not None else None
    if (oh is not None and oh < 1) or (ow is not None and ow < 1):
        raise GraphError(f"the kernel {w.shape[2:]} does not fit the padded input {x.shape[2:]}")
    return (x.shape[0], w.shape[0], oh, ow), x.dtype


def _grouped(x, w, g, stride, padding):
    """The input windows as (N, G, C/G, OH, OW, KH, KW) and the weights as (G, O/G, C/G, KH, KW)."""
    kh, kw = w.shape[2:]
    win = _windows(x, kh, kw, *stride, *padding)
    n, c, oh, ow = win.shape[:4]
    return win.reshape(n, g, c // g, oh, ow, kh, kw), w.reshape(g, w.shape[0] // g, c // g, kh, kw)


# As in conv.py, float32 products are computed in float64 and rounded once (linalg.widen).
def _gconv_forward(x, w, *b, stride, padding, groups):
    win, wg = _grouped(*widen(x, w), groups, stride, padding)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True)
    y = y.reshape(x.shape[0], w.shape[0], *y.shape[3:]).astype(x.dtype)
    if b:
        y = y + b[0][None, :, None, None]
    return np.ascontiguousarray(y, dtype=x.dtype)


def _gconv_input_grad_forward(x, w, gy, stride, padding, groups):
    n, o, oh, ow = gy.shape
    wide_gy, wide_w = widen(gy, w)
    wg = wide_w.reshape(groups, o // groups, w.shape[1], *w.shape[2:])
    cols = np.einsum("ngohw,gocij->ngchwij", wide_gy.reshape(n, groups, o // groups, oh, ow), wg, optimize=True)
    cols = cols.reshape(n, x.shape[1], oh, ow, *w.shape[2:])
    return _scatter_windows(cols, x.shape, *w.shape[2:], *stride, *padding).astype(x.dtype, copy=False)


def _gconv_weight_grad_forward(x, w, gy, stride, padding, groups):
    win, _ = _grouped(*widen(x, w), groups, stride, padding)
    n, o, oh, ow = gy.shape
    (wide_gy,) = widen(gy)
    gw = np.einsum("ngohw,ngchwij->gocij", wide_gy.reshape(n, groups, o // groups, oh, ow), win, optimize=True)
    return gw.reshape(w.shape).astype(x.dtype, copy=False)


def _gconv_vjp(g, out, x, w, *b, **attrs):
    grads = [apply("grouped_conv2d_input_grad", [x, w, g], **attrs),
             apply("grouped_conv2d_weight_grad", [x, w, g], **attrs)]
    return grads + ([sum(g, (0, 2, 3))] if b else [])


def _gconv_input_grad_vjp(gg, out, x, w, gy, **attrs):
    # bilinear in (w, gy): <gg, A(w)ᵀ gy> = <conv(gg, w), gy>
    return [None, apply("grouped_conv2d_weight_grad", [gg, w, gy], **attrs), apply("grouped_conv2d", [gg, w], **attrs)]


def _gconv_weight_grad_vjp(gg, out, x, w, gy, **attrs):
    return [apply("grouped_conv2d_input_grad", [x, gg, gy], **attrs), None, apply("grouped_conv2d", [x, gg], **attrs)]


register(OpDef("grouped_conv2d", infer=_gconv_infer, forward=_gconv_forward, vjp=_gconv_vjp, fuzz="grouped_conv"))
register(OpDef("grouped_conv2d_input_grad", infer=lambda i, **a: (i[0].shape, i[0].dtype),
               forward=_gconv_input_grad_forward, vjp=_gconv_input_grad_vjp, arity=3, fuzz="grouped_conv",
               made_by="vjp"))
register(OpDef("grouped_conv2d_weight_grad", infer=lambda i, **a: (i[1].shape, i[1].dtype),
               forward=_gconv_weight_grad_forward, vjp=_gconv_weight_grad_vjp, arity=3, fuzz="grouped_conv",
               made_by="vjp"))


def grouped_conv2d(x, w, b=None, stride=1, padding=0, groups: int = 1) -> Tensor:
    """2-d convolution whose C input channels and O output channels are split into `groups`
    independent convolutions (PyTorch's Conv2d(groups=...)): w is (O, C/groups, KH, KW);
    groups = C is a depthwise convolution. groups=1 is gc.conv2d (the C kernel).

    >>> import graphc as gc
    >>> x = gc.placeholder("x", (None, 4, 5, 5)); w = gc.constant(np.ones((8, 1, 3, 3), "float32"))
    >>> gc.grouped_conv2d(x, w, groups=4, padding=1).shape
    (None, 8, 5, 5)
    """
    groups = int(groups)
    if groups < 1:
        raise GraphError(f"groups must be >= 1, got {groups}")
    if groups == 1:
        return conv2d(x, w, b, stride=stride, padding=padding)
    x, w = _floatify(x), as_tensor(w)
    attrs = dict(stride=_pair(stride, "stride"), padding=_pair(padding, "padding"), groups=groups)
    if min(attrs["stride"]) < 1 or min(attrs["padding"]) < 0:
        raise GraphError(f"grouped_conv2d: stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    inputs = [x, w] if b is None else [x, w, as_tensor(b, like=x)]
    return apply("grouped_conv2d", inputs, **attrs)
