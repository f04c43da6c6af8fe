"""Symbolic Tensor handles: the nodes of a graphc graph.

A Tensor is an immutable node: an op name from the registry (graphc.ops), its input Tensors,
its attributes, and the shape and dtype inferred when it was created. Shapes may hold None
for sizes fixed only when a compiled Function is called (e.g. the batch size of a placeholder).
Nothing is global: a graph is the closure of its outputs.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .errors import GraphError, user_source

Shape = tuple  # of int | None
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))
_ids = itertools.count()


class Tensor:
    """A node of the graph. Build them with placeholder/parameter/constant and the ops."""

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "name", "source", "value", "id", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, op: str, inputs: Sequence[Tensor], attrs: dict, shape: Shape, dtype,
                 name: Optional[str] = None, source: Optional[str] = None, value: Any = None):
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = attrs
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.name = name
        self.source = source or user_source()
        self.value = value  # ndarray for parameters and constants, None otherwise
        self.id = next(_ids)  # creation order: inputs always have smaller ids (a topological order)

    def __reduce__(self):
        # Ids order a graph (inputs have smaller ids) and key every graph walk, so an unpickled
        # Tensor (e.g. on a Dask worker) takes a fresh id of its process: the constructor runs
        # again, after its inputs have been rebuilt.
        return Tensor, (self.op, self.inputs, self.attrs, self.shape, self.dtype, self.name, self.source, self.value)

    # -- introspection -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def T(self) -> Tensor:
        return _F.transpose(self)

    def __repr__(self) -> str:
        shape = "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"
        name = f" '{self.name}'" if self.name else ""
        return f"<Tensor {self.op}{name} shape={shape} dtype={self.dtype}>"

    def __hash__(self) -> int:
        return self.id

    def __array__(self, dtype=None, copy=None):
        raise GraphError(f"{self!r} is symbolic: it has no values until a compiled Function runs it "
                         f"(gc.compile(tensor)(**feeds) returns arrays), so NumPy cannot convert it "
                         f"(at {user_source()})")

    def __eq__(self, other):  # elementwise, as in NumPy; identity is `is`
        return _F.equal(self, other)

    def __ne__(self, other):
        return _F.not_equal(self, other)

    def __bool__(self):
        raise GraphError(f"the truth value of a symbolic {self!r} is unknown until it is run "
                         "(use gc.where for data-dependent choices)")

    def __len__(self):
        if not self.shape or self.shape[0] is None:
            raise GraphError(f"len() of {self!r} is not known before the graph runs")
        return self.shape[0]

    def __iter__(self):
        raise GraphError(f"cannot iterate over symbolic {self!r}")

    def __getitem__(self, key) -> Tensor:
        """NumPy indexing: integers, slices, ..., None and one integer array (gradients flow back)."""
        return _F.getitem(self, key)

    # -- arithmetic ----------------------------------------------------------------------
    def __add__(self, o): return _F.add(self, o)
    def __radd__(self, o): return _F.add(o, self)
    def __sub__(self, o): return _F.sub(self, o)
    def __rsub__(self, o): return _F.sub(o, self)
    def __mul__(self, o): return _F.mul(self, o)
    def __rmul__(self, o): return _F.mul(o, self)
    def __truediv__(self, o): return _F.div(self, o)
    def __rtruediv__(self, o): return _F.div(o, self)
    def __pow__(self, o): return _F.pow(self, o)
    def __rpow__(self, o): return _F.pow(o, self)
    def __matmul__(self, o): return _F.matmul(self, o)
    def __rmatmul__(self, o): return _F.matmul(o, self)
    def __neg__(self): return _F.neg(self)
    def __pos__(self): return self
    def __abs__(self): return _F.abs(self)
    def __lt__(self, o): return _F.less(self, o)
    def __le__(self, o): return _F.less_equal(self, o)
    def __gt__(self, o): return _F.greater(self, o)
    def __ge__(self, o): return _F.greater_equal(self, o)

    # -- methods mirroring NumPy ---------------------------------------------------------
    def sum(self, axis=None, keepdims=False) -> Tensor:
        return _F.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False) -> Tensor:
        return _F.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False) -> Tensor:
        return _F.max(self, axis, keepdims)

    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _F.reshape(self, shape)

    def transpose(self, *axes) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _F.transpose(self, axes or None)

    def astype(self, dtype) -> Tensor:
        return _F.cast(self, dtype)


def _check_shape(shape: Iterable) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise GraphError(f"a shape is a tuple of non-negative ints or None, got {type(shape).__name__} {shape!r} "
                         f"(at {user_source()})")
    out = []
    for d in shape:
        if d is not None and (not isinstance(d, (int, np.integer)) or d < 0):
            raise GraphError(f"shape entries must be non-negative ints or None, got {tuple(shape)!r} "
                             f"(at {user_source()})")
        out.append(None if d is None else int(d))
    return tuple(out)


def placeholder(name: str, shape: Sequence[Optional[int]] = (), dtype="float32") -> Tensor:
    """An input fed at call time: `f(name=array)`. None in `shape` means any size, fixed per call."""
    if not isinstance(name, str) or not name.isidentifier():
        raise GraphError(f"placeholder name must be a Python identifier (it is a keyword argument), got {name!r} "
                         f"(at {user_source()})")
    dtype = _numeric_dtype(dtype, f"placeholder '{name}'")
    t = Tensor("placeholder", (), {}, _check_shape(shape), dtype, name=name)
    _PLACEHOLDERS.add(t)
    return t


# Live placeholders (weakly held): a feed dict may then name placeholders that a Function's
# outputs do not reach (one dict for a loss and its predictions) without hiding typos.
_PLACEHOLDERS: weakref.WeakSet = weakref.WeakSet()


def placeholder_exists(name: str) -> bool:
    """Is some live placeholder called `name`?"""
    return any(t.name == name for t in list(_PLACEHOLDERS))


def _numeric_dtype(dtype, what: str) -> np.dtype:
    """np.dtype(dtype) in native byte order, or a GraphError unless it is bool, int or float."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise GraphError(f"{what} at {user_source()}: unknown dtype {dtype!r} ({exc})") from None
    if dt.kind not in "fiub":
        raise GraphError(f"{what} at {user_source()}: unsupported dtype {dt} "
                         f"(graphc computes on bool, integer and float arrays)")
    return dt.newbyteorder("=")


def _numeric_array(value, dtype, what: str) -> np.ndarray:
    """A fresh native-order copy of `value` as a bool/int/float array, or a GraphError."""
    if isinstance(value, Tensor):
        raise GraphError(f"{what} at {user_source()} takes an array value, not a symbolic {value!r}")
    if dtype is not None:
        dtype = _numeric_dtype(dtype, what)
    try:
        arr = np.array(value, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise GraphError(f"{what} at {user_source()}: cannot turn {type(value).__name__} into a numeric array "
                         f"({exc})") from None
    if arr.dtype.kind not in "fiub":
        raise GraphError(f"{what} at {user_source()}: cannot turn {type(value).__name__} into a numeric array "
                         f"(got dtype {arr.dtype})")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def parameter(value, name: Optional[str] = None, dtype=None) -> Tensor:
    """A trainable array held by the graph; its current `.value` is read at every call.

    Replace the value (`p.value = new_array`) between calls to update it; a new shape makes the
    compiled Function specialise again. Floating dtype is kept (float32 stays float32)."""
    arr = _numeric_array(value, dtype, "parameter" + (f" '{name}'" if name else ""))
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return Tensor("parameter", (), {}, arr.shape, arr.dtype, name=name, value=arr)


def constant(value, dtype=None, name: Optional[str] = None) -> Tensor:
    """A fixed array baked into the graph."""
    arr = _numeric_array(value, dtype, "constant" + (f" '{name}'" if name else ""))
    arr.setflags(write=False)
    return Tensor("constant", (), {}, arr.shape, arr.dtype, name=name, value=arr)


def as_tensor(x, like: Optional[Tensor] = None) -> Tensor:
    """Tensor passthrough; Python scalars and arrays become constants.

    Constants adopt the floating dtype of the tensor they meet (`like`), so `x32 * 0.5` and
    `x32 + np.ones(3)` stay float32 instead of silently upcasting the graph."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, np.bool_)):
        arr = np.asarray(x)
    elif isinstance(x, (int, float, np.number)) and not isinstance(x, np.ndarray):
        if like is not None and (like.dtype.kind == "f" or isinstance(x, (int, np.integer))):
            arr = np.asarray(x, dtype=like.dtype) if like.dtype.kind in "fi" else np.asarray(x)
        else:
            arr = np.asarray(x, dtype=np.float64 if isinstance(x, (float, np.floating)) else np.int64)
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise GraphError(f"cannot turn {type(x).__name__} into a graph constant ({exc})") from None
        if arr.dtype.kind not in "fiub":
            raise GraphError(f"cannot turn {type(x).__name__} into a graph constant (dtype {arr.dtype}; "
                             f"graphc computes on bool, integer and float arrays)")
        if like is not None and like.dtype.kind == "f" and arr.dtype.kind in "fiub":
            arr = arr.astype(like.dtype)
    return constant(arr)


from .. import ops as _F  # noqa: E402  (ops build Tensors; Tensor methods call ops)
