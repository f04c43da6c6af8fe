"""Indexing Tensors as NumPy arrays: `x[:, 0]`, `x[1:3]`, `x[..., ::2]`, `x[None]`, `x[idx]`.

Basic indexing (integers, slices, Ellipsis, None) is the `slice` op plus views (squeeze,
expand_dims); one integer array (or integer Tensor) along an axis is the `take` op, whose
gradient scatter-adds, so repeated indices accumulate. Results and errors follow NumPy.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor, as_tensor, constant
from . import Domain, OpDef, apply, register
from .extra import slice as _slice
from .shape import expand_dims, squeeze

__all__ = ["take", "getitem"]


# -- take: one integer array along an axis ----------------------------------------------------
def _take_infer(inputs, axis):
    x, idx = inputs[:2]
    if idx.dtype.kind not in "iu":
        raise GraphError(f"indices must be integers, got {idx.dtype}")
    if not -x.ndim <= axis < x.ndim:
        raise GraphError(f"axis {axis} is out of range for a {x.ndim}-d input")
    axis %= x.ndim
    return x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype


def _take_forward(x, idx, axis):
    size = x.shape[axis]
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)].reshape(-1)[0]
        raise GraphError(f"index {bad} is out of bounds for axis {axis} with size {size}")
    return np.take(x, idx, axis=axis)


def _take_grad_forward(g, idx, like, axis):
    out = np.zeros(like.shape, g.dtype)
    moved = np.moveaxis(out, axis, 0)  # a view: add.at writes into `out`
    gm = np.moveaxis(g, list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    np.add.at(moved, idx % like.shape[axis] if like.shape[axis] else idx, gm)
    return out


register(OpDef("take", infer=_take_infer, forward=_take_forward, arity=2, fuzz="take", value_preserving=True,
               domain=(Domain(), Domain()),
               vjp=lambda g, out, x, idx, axis: [apply("take_grad", [g, idx, x], axis=axis), None]))
register(OpDef("take_grad", infer=lambda i, axis: (i[2].shape, i[0].dtype), forward=_take_grad_forward, arity=3,
               fuzz="take", made_by="vjp",
               vjp=lambda gg, out, g, idx, like, axis: [apply("take", [gg, idx], axis=axis), None, None]))


def take(x, indices, axis: int = 0) -> Tensor:
    """x's slices at `indices` (an integer array or Tensor) along `axis`, as numpy.take; the
    gradient adds up over repeated indices. Indices out of range raise GraphError."""
    x = as_tensor(x)
    idx = indices if isinstance(indices, Tensor) else constant(np.asarray(indices))
    if not -x.ndim <= int(axis) < x.ndim:
        raise GraphError(f"take: axis {axis} is out of range for a {x.ndim}-d input")
    return apply("take", [x, idx], axis=int(axis) % x.ndim)


# -- x[key] -----------------------------------------------------------------------------------------
def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _as_index_array(k):
    """An integer index array/Tensor, or None when k is not one (bool masks are refused)."""
    if isinstance(k, Tensor):
        if k.dtype.kind == "b":
            raise GraphError("boolean masks are not supported as indices; use gc.where(mask, x, 0) instead")
        if k.dtype.kind not in "iu":
            raise GraphError(f"index Tensors must hold integers, got {k.dtype}")
        return k
    if isinstance(k, (list, np.ndarray)):
        a = np.asarray(k)
        if a.dtype.kind == "b":
            raise GraphError("boolean masks are not supported as indices; use gc.where(mask, x, 0) instead")
        if a.dtype.kind not in "iu" and a.size:
            raise GraphError(f"index arrays must hold integers, got {a.dtype}")
        return constant(a.astype(np.int64))
    return None


def getitem(x: Tensor, key) -> Tensor:
    """x[key] with NumPy's rules for integers, slices, Ellipsis, None and one integer array."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise GraphError("an index can only have a single ellipsis ('...')")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > x.ndim:
        raise GraphError(f"too many indices: {used} for a {x.ndim}-d tensor of shape {x.shape}")
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (builtins.slice(None),) * (x.ndim - used) + key[at + 1:]
    else:
        key = key + (builtins.slice(None),) * (x.ndim - used)

    triples, drop, new_axes, array, array_axis = [], [], [], None, None
    axis = 0  # input axis the next entry indexes
    out_pos = 0  # output position the next entry produces
    for k in key:
        if k is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        d = x.shape[axis]
        idx = _as_index_array(k)
        if idx is not None:
            if array is not None:
                raise GraphError("only one integer-array index is supported; index in two steps")
            array, array_axis = idx, axis
            triples.append((None, None, 1))
            out_pos += idx.ndim
        elif _is_int(k):
            k = int(k)
            if d is not None and not -d <= k < d:
                raise GraphError(f"index {k} is out of bounds for axis {axis} with size {d}")
            triples.append((k, k + 1 if k != -1 else None, 1))
            drop.append(axis)
        elif isinstance(k, builtins.slice):
            step = 1 if k.step is None else k.step
            if not all(v is None or _is_int(v) for v in (k.start, k.stop, k.step)):
                raise GraphError(f"slice bounds must be integers or None, got {k}")
            if step == 0:
                raise GraphError("slice step cannot be zero")
            triples.append((k.start, k.stop, step))
            out_pos += 1
        else:
            raise GraphError(f"unsupported index {k!r} ({type(k).__name__}): use integers, slices, ..., None "
                             f"or one integer array")
        axis += 1
    advanced = sorted(drop + [array_axis]) if array is not None else []
    if advanced and advanced[-1] - advanced[0] != len(advanced) - 1:  # NumPy moves apart ones to the front
        raise GraphError("an integer next to an integer array is fine, but NumPy moves the axes of integers "
                         "and an array that are apart to the front; index in two steps")

    y = _slice(x, triples)
    if array is not None:
        y = apply("take", [y, array], axis=array_axis)
    if drop:  # the integer axes, counted in y (after take replaced one axis by the index's dims)
        shift = (array.ndim - 1) if array is not None else 0
        y = squeeze(y, tuple(a + shift if array is not None and a > array_axis else a for a in drop))
    if new_axes:
        y = expand_dims(y, tuple(new_axes))
    return y

