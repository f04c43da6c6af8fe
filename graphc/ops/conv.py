"""2-d convolution and pooling on NCHW tensors (PyTorch's layouts and defaults)."""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import Domain, OpDef, apply, register
from .elementwise import _floatify
from .linalg import widen
from .reduce import sum

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "conv_output_size"]


def _pair(v, what):
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) for p in pair):
        raise GraphError(f"{what} must be an int or a pair of ints, got {v!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size, k, s, p):
    return None if size is None else (size + 2 * p - k) // s + 1


def _windows(x, kh, kw, sh, sw, ph, pw, fill=0.0):
    """(N, C, OH, OW, KH, KW) strided view of the padded input (no copy beyond the padding)."""
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _scatter_windows(cols, shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of _windows: add (N, C, OH, OW, KH, KW) window values back into an (N, C, H, W) array."""
    n, c, h, w = shape
    oh, ow = cols.shape[2:4]
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += cols[:, :, :, :, i, j]
    return out[:, :, ph:ph + h, pw:pw + w]


# -- conv2d ---------------------------------------------------------------------------------
def _conv_infer(inputs, stride, padding):
    x, w = inputs[:2]
    if x.ndim != 4 or w.ndim != 4:
        raise GraphError(f"conv2d needs x (N, C, H, W) and w (O, C, KH, KW), got {x.ndim}-d and {w.ndim}-d")
    if x.dtype.kind != "f" or w.dtype != x.dtype:
        raise GraphError(f"conv2d needs x and w of one floating dtype, got {x.dtype} and {w.dtype}")
    if x.shape[1] is not None and w.shape[1] is not None and x.shape[1] != w.shape[1]:
        raise GraphError(f"input has {x.shape[1]} channels but the weights expect {w.shape[1]}")
    if len(inputs) == 3 and inputs[2].shape not in ((w.shape[0],), (None,)):
        raise GraphError(f"bias must have shape ({w.shape[0]},), got {inputs[2].shape}")
    (sh, sw), (ph, pw) = stride, padding
    oh = conv_output_size(x.shape[2], w.shape[2], sh, ph) if w.shape[2] is not None else None
    ow = conv_output_size(x.shape[3], w.shape[3], sw, pw) if w.shape[3] is not None else None
    if (oh is not None and oh < 1) or (ow is not None and ow < 1):
        raise GraphError(f"the kernel {w.shape[2:]} does not fit the padded input {x.shape[2:]}")
    return (x.shape[0], w.shape[0], oh, ow), x.dtype


def _contract(a, b, axes_a, axes_b):
    """np.tensordot(a, b, (axes_a, axes_b)) through np.matmul. np.dot hands a product with one
    column and a contraction of length 1 to BLAS's scal, which sets NaN * 0 to 0 (OpenBLAS): a 1x1
    convolution with a zero weight then hid a NaN or inf input that the C backend propagates."""
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    shape_a, shape_b = [a.shape[i] for i in free_a], [b.shape[i] for i in free_b]
    m, n, k = (int(np.prod(d, dtype=np.int64)) for d in (shape_a, shape_b, [a.shape[i] for i in axes_a]))
    lhs = a.transpose(free_a + list(axes_a)).reshape(m, k)  # explicit sizes: any of them may be 0
    rhs = b.transpose(list(axes_b) + free_b).reshape(k, n)
    return np.matmul(lhs, rhs).reshape(shape_a + shape_b)


# The products are computed in float64 for float32 operands and rounded once (linalg.widen).
def _conv_forward(x, w, *b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    wx, ww = widen(x, w)
    win = _windows(wx, w.shape[2], w.shape[3], sh, sw, ph, pw)
    y = _contract(win, ww, [1, 4, 5], [1, 2, 3]).transpose(0, 3, 1, 2).astype(x.dtype)
    if b:
        y = y + b[0][None, :, None, None]
    return np.ascontiguousarray(y)


def _conv_input_grad_forward(x, w, gy, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    wg, ww = widen(gy, w)
    cols = _contract(wg, ww, [1], [0]).transpose(0, 3, 1, 2, 4, 5)  # (N, C, OH, OW, KH, KW)
    return _scatter_windows(cols, x.shape, w.shape[2], w.shape[3], sh, sw, ph, pw).astype(x.dtype, copy=False)


def _conv_weight_grad_forward(x, w, gy, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    wx, wg = widen(x, gy)
    win = _windows(wx, w.shape[2], w.shape[3], sh, sw, ph, pw)
    return _contract(wg, win, [0, 2, 3], [0, 2, 3]).astype(x.dtype, copy=False)


def _conv_vjp(g, out, x, w, *b, stride, padding):
    attrs = dict(stride=stride, padding=padding)
    grads = [apply("conv2d_input_grad", [x, w, g], **attrs), apply("conv2d_weight_grad", [x, w, g], **attrs)]
    return grads + ([sum(g, (0, 2, 3))] if b else [])


def _input_grad_vjp(gg, out, x, w, gy, stride, padding):
    attrs = dict(stride=stride, padding=padding)  # bilinear in (w, gy): <gg, A(w)ᵀgy> = <conv(gg, w), gy>
    return [None, apply("conv2d_weight_grad", [gg, w, gy], **attrs), apply("conv2d", [gg, w], **attrs)]


def _weight_grad_vjp(gg, out, x, w, gy, stride, padding):
    attrs = dict(stride=stride, padding=padding)
    return [apply("conv2d_input_grad", [x, gg, gy], **attrs), None, apply("conv2d", [x, gg], **attrs)]


register(OpDef("conv2d", infer=_conv_infer, forward=_conv_forward, vjp=_conv_vjp, lowering="conv", fuzz="conv"))
register(OpDef("conv2d_input_grad", infer=lambda i, stride, padding: (i[0].shape, i[0].dtype),
               forward=_conv_input_grad_forward, vjp=_input_grad_vjp, arity=3, lowering="conv", fuzz="conv",
               made_by="vjp"))
register(OpDef("conv2d_weight_grad", infer=lambda i, stride, padding: (i[1].shape, i[1].dtype),
               forward=_conv_weight_grad_forward, vjp=_weight_grad_vjp, arity=3, lowering="conv", fuzz="conv",
               made_by="vjp"))


def conv2d(x, w, b=None, stride=1, padding=0) -> Tensor:
    """2-d cross-correlation as in PyTorch: x (N, C, H, W), w (O, C, KH, KW), b (O,) or None.

    Output (N, O, OH, OW) with OH = (H + 2·padding − KH) // stride + 1; zero padding."""
    x, w = _floatify(x), as_tensor(w)
    attrs = dict(stride=_pair(stride, "stride"), padding=_pair(padding, "padding"))
    if min(attrs["stride"]) < 1 or min(attrs["padding"]) < 0:
        raise GraphError(f"conv2d: stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    inputs = [x, w] if b is None else [x, w, as_tensor(b, like=x)]
    return apply("conv2d", inputs, **attrs)


# -- pooling --------------------------------------------------------------------------------
def _pool_infer(inputs, kernel, stride, padding):
    x = inputs[0]
    if x.ndim != 4 or x.dtype.kind != "f":
        raise GraphError(f"pooling needs a floating (N, C, H, W) input, got {x.ndim}-d {x.dtype}")
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph > kh // 2 or pw > kw // 2:
        raise GraphError(f"padding {padding} must be at most half the kernel {kernel}")
    oh, ow = conv_output_size(x.shape[2], kh, sh, ph), conv_output_size(x.shape[3], kw, sw, pw)
    if (oh is not None and oh < 1) or (ow is not None and ow < 1):
        raise GraphError(f"the pooling window {kernel} does not fit the input {x.shape[2:]}")
    return (x.shape[0], x.shape[1], oh, ow), x.dtype


def _maxpool_forward(x, kernel, stride, padding):
    win = _windows(x, *kernel, *stride, *padding, fill=-np.inf)
    return np.ascontiguousarray(win.max(axis=(4, 5)))


def _maxpool_grad_forward(x, gy, kernel, stride, padding):
    (kh, kw) = kernel
    win = _windows(x, *kernel, *stride, *padding, fill=-np.inf)
    flat = win.reshape(win.shape[:4] + (kh * kw,))
    real = _windows(np.ones(x.shape, bool), *kernel, *stride, *padding, fill=False).reshape(flat.shape)
    # PyTorch's rule: the first in-bounds element that is the maximum, a NaN beating any number
    # (so a window of -inf routes to its first real element, never to the padding)
    nan = np.isnan(flat) & real
    top = np.where(real, flat, -np.inf).max(axis=4, keepdims=True)
    first = np.where(nan.any(axis=4), np.argmax(nan, axis=4), np.argmax((flat == top) & real, axis=4))
    cols = np.zeros(flat.shape, dtype=gy.dtype)
    np.put_along_axis(cols, first[..., None], gy[..., None], axis=4)
    return _scatter_windows(cols.reshape(win.shape), x.shape, *kernel, *stride, *padding)


def _avgpool_forward(x, kernel, stride, padding):
    win = _windows(x, *kernel, *stride, *padding)
    return np.ascontiguousarray(win.sum(axis=(4, 5)) / np.asarray(kernel[0] * kernel[1], x.dtype))


def _avgpool_grad_forward(x, gy, kernel, stride, padding):
    cols = np.broadcast_to((gy / np.asarray(kernel[0] * kernel[1], gy.dtype))[..., None, None],
                           gy.shape + tuple(kernel))
    return _scatter_windows(cols, x.shape, *kernel, *stride, *padding)


_POOL_ATTRS = ("kernel", "stride", "padding")
def _maxpool_routing(x, out_shape, attrs):
    # how many windows route their gradient to each input element: a tie can move a window's
    # maximum between two elements that both stay maxima of other windows, so counts, not support
    return _maxpool_grad_forward(x, np.ones(out_shape, x.dtype), **attrs)


register(OpDef("max_pool2d", infer=_pool_infer, forward=_maxpool_forward, arity=1,
               vjp=lambda g, out, x, **a: [apply("max_pool2d_grad", [x, g], **a)],
               domain=(Domain(distinct=True),), lowering="pool", fuzz="pool", value_preserving=True,
               branch=lambda out, x, **a: _maxpool_routing(x, out.shape, a)))
register(OpDef("max_pool2d_grad", infer=lambda i, **a: (i[0].shape, i[0].dtype), forward=_maxpool_grad_forward,
               arity=2, lowering="pool", fuzz="pool", made_by="vjp",
               no_vjp="a backward op: its own VJP is not needed for "
               "first and second derivatives of max_pool2d (the routing is piecewise constant)",
               branch=lambda out, x, gy, **a: _maxpool_routing(x, gy.shape, a)))
register(OpDef("avg_pool2d", infer=_pool_infer, forward=_avgpool_forward, arity=1,
               vjp=lambda g, out, x, **a: [apply("avg_pool2d_grad", [x, g], **a)], lowering="pool", fuzz="pool"))
register(OpDef("avg_pool2d_grad", infer=lambda i, **a: (i[0].shape, i[0].dtype), forward=_avgpool_grad_forward,
               vjp=lambda gg, out, x, gy, **a: [None, apply("avg_pool2d", [gg], **a)], arity=2, lowering="pool",
               fuzz="pool", made_by="vjp"))


def _pool_attrs(kernel, stride: Optional[object], padding):
    kernel = _pair(kernel, "kernel")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise GraphError(f"pooling: kernel and stride must be >= 1, padding >= 0; got {kernel}, {stride}, {padding}")
    return dict(kernel=kernel, stride=stride, padding=padding)


def max_pool2d(x, kernel, stride=None, padding=0) -> Tensor:
    """Max over kernel windows (stride defaults to the kernel, padding counts as -inf, as PyTorch)."""
    return apply("max_pool2d", [_floatify(x)], **_pool_attrs(kernel, stride, padding))


def avg_pool2d(x, kernel, stride=None, padding=0) -> Tensor:
    """Mean over kernel windows; zero padding is counted in the mean (PyTorch's default)."""
    return apply("avg_pool2d", [_floatify(x)], **_pool_attrs(kernel, stride, padding))
