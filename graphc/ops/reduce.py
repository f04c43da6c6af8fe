"""Reductions over axes: sum, max, argmax; mean is sum / size."""
from __future__ import annotations

import builtins

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import Domain, OpDef, apply, register
from .core import broadcast_like, cast, normalize_axes, size_of
from .elementwise import _floatify, equal

__all__ = ["sum", "mean", "max", "argmax"]


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(inputs, axes, keepdims):
    x = inputs[0]
    return _reduced_shape(x.shape, normalize_axes(axes, x.ndim), keepdims), x.dtype


def _sum_infer(inputs, axes, keepdims):
    """NumPy's rule: small integers (and bools) accumulate in the platform integer, so a sum of
    int32 values does not wrap at 2**31."""
    x = inputs[0]
    shape, _ = _reduce_infer(inputs, axes, keepdims)
    return shape, np.add.reduce(np.zeros(1, x.dtype)).dtype


def _kept(g: Tensor, axes, keepdims) -> Tensor:
    from .shape import expand_dims
    return g if keepdims or not axes else expand_dims(g, axes)


def _max_forward(x, axes, keepdims):
    if x.size == 0 and any(x.shape[a] == 0 for a in axes):
        raise GraphError(f"max over an empty axis of an array of shape {x.shape}")
    return np.max(x, axis=axes, keepdims=keepdims)


def _max_vjp(g, out, x, axes, keepdims):
    mask = cast(equal(x, _kept(out, axes, keepdims)), g.dtype)
    count = sum(mask, axes, keepdims=True)  # ties share the gradient evenly
    return [mask * (_kept(g, axes, keepdims) / count)]


register(OpDef("sum", infer=_sum_infer, forward=lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims),
               vjp=lambda g, out, x, axes, keepdims: [broadcast_like(_kept(g, axes, keepdims), x)], arity=1,
               lowering="reduce", fuzz="reduce"))
register(OpDef("max", infer=_reduce_infer, forward=_max_forward, vjp=_max_vjp, arity=1,
               domain=(Domain(distinct=True),), lowering="reduce", fuzz="reduce", value_preserving=True,
               branch=lambda out, x, axes, keepdims: x == np.max(x, axis=axes, keepdims=True)))


def _attrs(x: Tensor, axis, keepdims):
    return dict(axes=normalize_axes(axis, x.ndim), keepdims=builtins.bool(keepdims))


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors numpy.sum
    """Sum over `axis` (None: all axes), as numpy.sum."""
    x = as_tensor(x)
    if x.dtype == np.dtype(bool):
        x = cast(x, np.int64)
    return apply("sum", [x], **_attrs(x, axis, keepdims))


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over `axis` (None: all axes); the count may be known only at call time."""
    x = _floatify(x)
    attrs = _attrs(x, axis, keepdims)
    return sum(x, attrs["axes"], keepdims) / size_of(x, attrs["axes"])


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors numpy.max
    """Maximum over `axis`; at ties the gradient is shared evenly among the maxima."""
    x = as_tensor(x)
    return apply("max", [x], **_attrs(x, axis, keepdims))


def _argmax_infer(inputs, axis):
    x = inputs[0]
    (a,) = normalize_axes(axis, x.ndim)
    return _reduced_shape(x.shape, (a,), False), np.dtype(np.int64)


register(OpDef("argmax", infer=_argmax_infer, forward=lambda x, axis: np.argmax(x, axis=axis).astype(np.int64),
               differentiable=False, arity=1, fuzz="argmax", domain=(Domain(distinct=True),)))


def argmax(x, axis: int = -1) -> Tensor:
    """Index of the largest value along `axis` (int64; no gradient)."""
    x = as_tensor(x)
    return apply("argmax", [x], axis=normalize_axes(axis, x.ndim)[0])
