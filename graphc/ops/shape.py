"""Shape ops: reshape, transpose, expand_dims/squeeze, concatenate (views in NumPy)."""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor
from . import OpDef, apply, register
from .core import broadcast_shapes, known, normalize_axes

__all__ = ["reshape", "transpose", "expand_dims", "squeeze", "concatenate", "flatten"]


def _reshape_infer(inputs, shape):
    x = inputs[0]
    if builtins_sum(d == -1 for d in shape) > 1:
        raise GraphError(f"reshape to {shape}: only one dimension may be -1")
    if any(d < -1 for d in shape):
        raise GraphError(f"reshape to {shape}: negative size")
    if not known(x.shape):
        return tuple(None if d == -1 else d for d in shape), x.dtype
    total = int(np.prod(x.shape))
    rest = int(np.prod([d for d in shape if d != -1]))
    if -1 in shape:
        if rest == 0 or total % rest:
            raise GraphError(f"cannot reshape {x.shape} ({total} elements) to {shape}")
        return tuple(total // rest if d == -1 else d for d in shape), x.dtype
    if rest != total:
        raise GraphError(f"cannot reshape {x.shape} ({total} elements) to {shape}")
    return tuple(shape), x.dtype


def builtins_sum(it):
    total = 0
    for v in it:
        total += v
    return total


def _reshape_vjp(g, out, x, shape):
    return [reshape(g, x.shape) if known(x.shape) else apply("reshape_like", [g, x])]


register(OpDef("reshape", infer=_reshape_infer, forward=lambda x, shape: np.reshape(x, shape),
               vjp=_reshape_vjp, arity=1, alias=True, lowering="alias", fuzz="reshape", value_preserving=True))


def _reshape_like_infer(inputs):
    g, like = inputs
    if known(g.shape) and known(like.shape) and np.prod(g.shape) != np.prod(like.shape):
        raise GraphError(f"cannot reshape {g.shape} to {like.shape}")
    return like.shape, g.dtype


register(OpDef("reshape_like", infer=_reshape_like_infer, forward=lambda g, like: np.reshape(g, like.shape),
               vjp=lambda gg, out, g, like: [apply("reshape_like", [gg, g]), None], arity=2, alias=True,
               lowering="alias", same_shape_identity=True, fuzz="reshape_like", value_preserving=True, made_by="vjp"))


def reshape(x, shape) -> Tensor:
    """New shape, same data; one entry may be -1 (inferred)."""
    x = as_tensor(x)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if shape == x.shape:
        return x
    return apply("reshape", [x], shape=shape)


def flatten(x, start_axis: int = 1) -> Tensor:
    """Merge the axes from start_axis on into one (NCHW feature maps -> (N, C*H*W))."""
    x = as_tensor(x)
    head, tail = x.shape[:start_axis], x.shape[start_axis:]
    if known(tail):
        if builtins_sum(d is None for d in head) > 1:
            raise GraphError(f"flatten of {x.shape}: at most one unknown size before axis {start_axis}")
        return reshape(x, tuple(-1 if d is None else d for d in head) + (int(np.prod(tail)),))
    if known(head):
        return reshape(x, tuple(head) + (-1,))
    raise GraphError(f"flatten of {x.shape}: sizes on one side of axis {start_axis} must be known")


def _transpose_infer(inputs, axes):
    x = inputs[0]
    if sorted(axes) != list(range(x.ndim)):
        raise GraphError(f"axes {axes} are not a permutation of the {x.ndim} axes")
    return tuple(x.shape[a] for a in axes), x.dtype


register(OpDef("transpose", infer=_transpose_infer, forward=lambda x, axes: np.transpose(x, axes),
               vjp=lambda g, out, x, axes: [transpose(g, tuple(int(i) for i in np.argsort(axes)))], arity=1,
               lowering="transpose", fuzz="transpose", value_preserving=True))


def transpose(x, axes=None) -> Tensor:
    """Permute axes (reverse them by default, like numpy.transpose and Tensor.T)."""
    x = as_tensor(x)
    axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(int(a) % max(x.ndim, 1) for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return apply("transpose", [x], axes=axes)


def _expand_infer(inputs, axes):
    x = inputs[0]
    ndim = x.ndim + len(axes)
    normalize_axes(axes, ndim)
    dims = iter(x.shape)
    return tuple(1 if i in axes else next(dims) for i in range(ndim)), x.dtype


def _squeeze_infer(inputs, axes):
    x = inputs[0]
    normalize_axes(axes, x.ndim)
    if any(x.shape[a] not in (1, None) for a in axes):
        raise GraphError(f"cannot squeeze axes {axes} of shape {x.shape}: their size is not 1")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype


register(OpDef("expand_dims", infer=_expand_infer, forward=lambda x, axes: np.expand_dims(x, axes),
               vjp=lambda g, out, x, axes: [squeeze(g, axes)], arity=1, alias=True, lowering="alias",
               fuzz="expand_dims", value_preserving=True))
register(OpDef("squeeze", infer=_squeeze_infer, forward=lambda x, axes: np.squeeze(x, axes),
               vjp=lambda g, out, x, axes: [expand_dims(g, axes)], arity=1, alias=True, lowering="alias",
               fuzz="squeeze", value_preserving=True))


def expand_dims(x, axes) -> Tensor:
    """Insert size-1 axes at the given positions of the result."""
    x = as_tensor(x)
    axes = normalize_axes(axes, x.ndim + (1 if isinstance(axes, (int, np.integer)) else len(axes)))
    return apply("expand_dims", [x], axes=axes)


def squeeze(x, axes) -> Tensor:
    x = as_tensor(x)
    return apply("squeeze", [x], axes=normalize_axes(axes, x.ndim))


def _concat_infer(inputs, axis):
    first = inputs[0]
    if any(t.ndim != first.ndim for t in inputs):
        raise GraphError("all inputs must have the same number of dimensions")
    rest = [tuple(d for i, d in enumerate(t.shape) if i != axis) for t in inputs]
    try:
        others = broadcast_shapes(*rest)
    except GraphError:
        raise GraphError(f"sizes off axis {axis} differ: {[t.shape for t in inputs]}") from None
    if any(len(r) != len(others) or any(a is not None and a != b for a, b in zip(r, others)) for r in rest):
        raise GraphError(f"sizes off axis {axis} differ: {[t.shape for t in inputs]}")
    sizes = [t.shape[axis] for t in inputs]
    total = None if None in sizes else builtins_sum(sizes)
    shape = list(others)
    shape.insert(axis, total)
    return tuple(shape), np.result_type(*[t.dtype for t in inputs])


def _concat_vjp(g, out, *xs, axis):
    return [apply("concat_slice", [g, *xs], axis=axis, index=i) for i in range(len(xs))]


def _concat_slice_forward(g, *xs, axis, index):
    start = builtins_sum(x.shape[axis] for x in xs[:index])
    return np.take(g, np.arange(start, start + xs[index].shape[axis]), axis=axis)


def _concat_slice_infer(inputs, axis, index):
    g, *xs = inputs
    shape = list(g.shape)
    shape[axis] = xs[index].shape[axis]
    return tuple(shape), g.dtype


register(OpDef("concatenate", infer=_concat_infer,
               forward=lambda *xs, axis: np.concatenate(xs, axis=axis), vjp=_concat_vjp, fuzz="concatenate",
               value_preserving=True))
register(OpDef("concat_slice", infer=_concat_slice_infer, forward=_concat_slice_forward, fuzz="concat_slice",
               made_by="vjp",
               no_vjp="the backward of concatenate; its own VJP is not implemented (no second derivative "
                      "through concatenate)"))


def concatenate(xs, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    xs = [as_tensor(x) for x in xs]
    if not xs:
        raise GraphError("concatenate needs at least one tensor")
    like = next((x for x in xs if x.dtype.kind == "f"), xs[0])
    xs = [as_tensor(x, like=like) if not isinstance(x, Tensor) else x for x in xs]
    return apply("concatenate", xs, axis=normalize_axes(axis, xs[0].ndim)[0])
