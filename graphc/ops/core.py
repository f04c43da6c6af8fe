"""Leaves, dtype casts, and the shape plumbing that autodiff needs (un-broadcasting, sizes)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor
from . import OpDef, apply, register

__all__ = ["cast", "stop_gradient", "zeros_like", "ones_like", "size_of", "sum_to", "broadcast_like",
           "unbroadcast", "broadcast_shapes", "normalize_axes", "known"]


def known(shape) -> bool:
    return all(d is not None for d in shape)


def broadcast_shapes(*shapes):
    """NumPy broadcasting on shapes that may hold None (unknown until call time)."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d is not None and d != 1}
        if len(sizes) > 1:
            raise GraphError("shapes " + " and ".join(str(s) for s in shapes) + " do not broadcast")
        if sizes:
            out.append(sizes.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def normalize_axes(axis, ndim: int) -> tuple:
    """axis (None, int or sequence, negatives allowed) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise GraphError(f"axis {a!r} is out of range for a {ndim}-d tensor")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise GraphError(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def _leaf_infer(inputs):
    raise GraphError("leaves are created with gc.placeholder / gc.parameter / gc.constant")


for _leaf in ("placeholder", "parameter", "constant"):
    register(OpDef(_leaf, infer=_leaf_infer, forward=None, arity=0, differentiable=_leaf != "constant", fuzz="leaf",
                   no_vjp="a leaf: gradients end here"))


# -- cast / stop_gradient / zeros_like ----------------------------------------------------
def _cast_vjp(g, out, x, dtype):
    return [cast(g, x.dtype) if x.dtype.kind == "f" else None]


register(OpDef("cast", infer=lambda i, dtype: (i[0].shape, np.dtype(dtype)),
               forward=lambda x, dtype: x.astype(dtype), vjp=_cast_vjp, arity=1, elementwise=True,
               lowering="cast", fuzz="unary", value_preserving=True,
               fuzz_attrs={"dtype": (np.dtype(np.float32), np.dtype(np.float64))}))


def cast(x: Tensor, dtype) -> Tensor:
    """Convert to `dtype`; the gradient flows back only into floating inputs."""
    from ..ir.tensor import _numeric_dtype
    dtype = _numeric_dtype(dtype, "cast")
    if x.dtype == dtype:
        return x
    return apply("cast", [x], dtype=dtype)


register(OpDef("stop_gradient", infer=lambda i: (i[0].shape, i[0].dtype), forward=lambda x: x,
               differentiable=False, arity=1, elementwise=True, alias=True, lowering="alias", fuzz="unary",
               value_preserving=True))


def stop_gradient(x: Tensor) -> Tensor:
    """Identity in the forward pass; no gradient flows through it."""
    return apply("stop_gradient", [x])


register(OpDef("zeros_like", infer=lambda i, dtype=None: (i[0].shape, np.dtype(dtype or i[0].dtype)),
               forward=lambda x, dtype=None: np.zeros(x.shape, dtype or x.dtype),
               differentiable=False, arity=1, lowering="fill", fuzz="unary", fuzz_attrs={"dtype": (None,)}))
register(OpDef("ones_like", infer=lambda i, dtype=None: (i[0].shape, np.dtype(dtype or i[0].dtype)),
               forward=lambda x, dtype=None: np.ones(x.shape, dtype or x.dtype),
               differentiable=False, arity=1, lowering="fill", fuzz="unary", fuzz_attrs={"dtype": (None,)}))


def zeros_like(x: Tensor, dtype=None) -> Tensor:
    return apply("zeros_like", [x], dtype=None if dtype is None else np.dtype(dtype))


def ones_like(x: Tensor, dtype=None) -> Tensor:
    return apply("ones_like", [x], dtype=None if dtype is None else np.dtype(dtype))


# -- size_of: a dimension product known only at call time (means, 1/N in losses) ----------
def _size_infer(inputs, axes, dtype):
    normalize_axes(axes, inputs[0].ndim)
    return (), np.dtype(dtype)


def _size_forward(x, axes, dtype):
    axes = normalize_axes(axes, x.ndim)
    return np.asarray(np.prod([x.shape[a] for a in axes]), dtype=dtype)


register(OpDef("size_of", infer=_size_infer, forward=_size_forward, differentiable=False, arity=1, fuzz="size_of"))


def size_of(x: Tensor, axes=None, dtype=None) -> Tensor:
    """Scalar number of elements of x along `axes` (all by default), as a graph value."""
    dtype = np.dtype(dtype or (x.dtype if x.dtype.kind == "f" else np.float64))
    axes = None if axes is None else normalize_axes(axes, x.ndim)
    if axes is not None and all(x.shape[a] is not None for a in axes):
        from ..ir.tensor import constant
        return constant(np.prod([x.shape[a] for a in axes]), dtype=dtype)
    if axes is None and known(x.shape):
        from ..ir.tensor import constant
        return constant(np.prod(x.shape), dtype=dtype)
    return apply("size_of", [x], axes=axes, dtype=dtype)


# -- un-broadcasting --------------------------------------------------------------------
def sum_to_shape(g: np.ndarray, shape) -> np.ndarray:
    """Sum g down to `shape` (the inverse of NumPy broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _sum_to_infer(inputs):
    g, like = inputs
    broadcast_shapes(g.shape, like.shape)
    return like.shape, g.dtype


register(OpDef("sum_to", infer=_sum_to_infer, forward=lambda g, like: sum_to_shape(g, like.shape),
               vjp=lambda g, out, x, like: [broadcast_like(g, x), None], arity=2, lowering="sum_to",
               same_shape_identity=True, fuzz="sum_to", made_by="vjp"))


def _broadcast_like_infer(inputs):
    x, like = inputs
    return broadcast_shapes(x.shape, like.shape), x.dtype


register(OpDef("broadcast_like", infer=_broadcast_like_infer,
               forward=lambda x, like: np.broadcast_to(x, np.broadcast_shapes(x.shape, like.shape)),
               vjp=lambda g, out, x, like: [sum_to(g, x), None], arity=2, lowering="broadcast_like",
               same_shape_identity=True, fuzz="broadcast_like", value_preserving=True, made_by="vjp"))


def sum_to(g: Tensor, like: Tensor) -> Tensor:
    """Sum g down to like's shape (known only at call time when like has None sizes)."""
    return apply("sum_to", [g, like])


def broadcast_like(x: Tensor, like: Tensor) -> Tensor:
    return apply("broadcast_like", [x, like])


def unbroadcast(g: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    """The gradient g of a broadcast result, reduced to the shape of the operand x."""
    if g is None:
        return None
    if g.shape == x.shape and known(x.shape):
        return g
    return sum_to(g, x)
