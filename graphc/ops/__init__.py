"""The op registry: one entry per op, holding everything graphc knows about it.

An OpDef keeps together the op's shape+dtype rule (`infer`), its NumPy forward, its VJP rule
written with graphc ops (so gradients are graphs), its fuzzing domain and kinks (for
graphc.testing and gc.gradcheck), and the name of its C kernel, if any. The public functions
(gc.exp, gc.matmul, ...) live beside their OpDef in the submodules and are re-exported here.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..ir.errors import GraphError, node_error, user_source
from ..ir.tensor import Tensor, as_tensor


@dataclass(frozen=True)
class Domain:
    """Where an op's inputs may be drawn for fuzzing and gradient checks.

    kind: "real", "positive" (log, sqrt), "nonzero" (division), "unit" (-1, 1) ...;
    kinks: points where the op is not differentiable (relu: 0), kept away from by strategies
    and reported by gradcheck; distinct: values must be unique (ties in max / max-pool)."""
    kind: str = "real"
    kinks: tuple = ()
    distinct: bool = False
    low: float = -3.0
    high: float = 3.0


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: Callable  # (inputs: list[Tensor], **attrs) -> (shape, dtype)
    forward: Callable  # (*arrays, **attrs) -> ndarray
    vjp: Optional[Callable] = None  # (g, out, *inputs, **attrs) -> list[Tensor | None], one per input
    domain: tuple = ()  # one Domain per input (missing entries: Domain())
    differentiable: bool = True  # False: gradients through it are zero (sign, comparisons, ...)
    elementwise: bool = False
    c_kernel: Optional[str] = None
    arity: Optional[int] = None  # None = variadic
    tags: frozenset = field(default_factory=frozenset)

    def input_domain(self, i: int) -> Domain:
        return self.domain[i] if i < len(self.domain) else Domain()


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def apply(name: str, inputs, name_hint: Optional[str] = None, **attrs) -> Tensor:
    """Create a node of op `name`: shape and dtype are inferred now, errors name the user's line."""
    opdef = REGISTRY[name]
    tensors = list(inputs)
    try:
        shape, dtype = opdef.infer(tensors, **attrs)
    except GraphError as exc:
        probe = Tensor(name, tensors, attrs, (), np.float64)
        raise node_error(probe, str(exc)) from None
    return Tensor(name, tensors, attrs, shape, dtype, name=name_hint)


def promote(a, b):
    """Turn operands into Tensors; constants take the other side's dtype (no silent upcasts)."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    if isinstance(b, Tensor):
        return as_tensor(a, like=b), b
    return as_tensor(a), as_tensor(b)


from .conv import *  # noqa: E402,F401,F403
from .core import *  # noqa: E402,F401,F403
from .elementwise import *  # noqa: E402,F401,F403
from .fused import *  # noqa: E402,F401,F403
from .linalg import *  # noqa: E402,F401,F403
from .nn import *  # noqa: E402,F401,F403
from .reduce import *  # noqa: E402,F401,F403
from .shape import *  # noqa: E402,F401,F403


def _graph_errors(fn):
    """The public op `fn`, with argument errors (a str where a number goes, None for a shape, ...)
    raised as GraphError naming the op and the user's line, like every other build-time error."""
    @functools.wraps(fn)
    def op(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GraphError as exc:
            where = user_source()
            if " created at " in str(exc) or where in str(exc):
                raise
            raise GraphError(f"{fn.__name__} called at {where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise GraphError(f"{fn.__name__} called at {user_source()}: bad argument "
                             f"({type(exc).__name__}: {exc})") from None
    return op


def _wrap_public_ops() -> None:
    from . import conv, core, elementwise, fused, linalg, nn, reduce, shape
    for mod in (conv, core, elementwise, fused, linalg, nn, reduce, shape):
        for name in getattr(mod, "__all__", ()):
            fn = globals().get(name)
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
                globals()[name] = _graph_errors(fn)
                PUBLIC.append(name)


PUBLIC: list = []  # the public op functions, re-exported as gc.<name>
_wrap_public_ops()
__all__ = list(PUBLIC)
