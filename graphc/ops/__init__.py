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
from typing import Any, Callable, Optional

import numpy as np

from ..ir.errors import GraphError, node_error, user_source
from ..ir.tensor import Tensor, as_tensor


@dataclass(frozen=True)
class Domain:
    """Where an op's inputs may be drawn for fuzzing and gradient checks.

    kind: "real", "positive" (log, sqrt), "nonzero" (division), "unit" (-1, 1), "bounded" (values,
    even computed ones, must stay in [low, high]: exp's argument, an exponent);
    kinks: points where the op is not differentiable (relu: 0), kept away from by strategies
    and reported by gradcheck; distinct: values must be unique (ties in max / max-pool)."""
    kind: str = "real"
    kinks: tuple = ()
    distinct: bool = False
    low: float = -3.0
    high: float = 3.0


@dataclass(frozen=True)
class OpDef:
    """Everything graphc knows about one op. Every other layer reads its tables from here.

    Semantics: `infer` (shape+dtype rule), `forward` (NumPy), `vjp` (built from graphc ops, so
    gradients are graphs), `differentiable` (False: gradients through it are zero), `promotes`
    (the forward is one NumPy primitive that promotes mixed float operands itself, so casting the
    float32 ones to float64 first gives the same value: the simplify pass makes that cast explicit).

    Memory traits, read by the arena planner (both `Function.explain()` and the C backend):
    `inplace` (its kernels may write the output over a same-size input, index for index) and
    `alias` (the output is input 0's bytes in a new shape: a view, no kernel).

    C lowering: `lowering` names the rule in graphc.backends.c.LOWERINGS that emits it ("unary",
    "binary", "gemm", ...); elementwise kernels find their C code by convention from `kernel(attrs)`
    (GC_U_<NAME>, GC_B_<NAME>, GC_F_<NAME>), with `kernel_param` the attribute passed as the
    kernel's float parameter. `fusible`: may be an instruction of a fused_elementwise program;
    `variants` names the kernels one op stands for, by attribute values (activation_grad's
    relu_grad, sigmoid_grad, ...). `dense_act`: may be the GEMM's epilogue activation.

    Verification: `domain` (one Domain per input: fuzz range, kinks, distinct values), `branch`
    ((out, *inputs, **attrs) -> an array that changes exactly when the op switches branch; default:
    the sign of each input minus each kink), `fuzz` (the graphc.testing case kind that draws its
    inputs), `value_preserving` / `monotonic` (a kink after it applies before it; distinct values
    stay distinct), `no_vjp` (why a differentiable op has no VJP of its own), `fuzz_attrs` and
    `fuzz_weight` (what attribute values and how often random graphs draw it), `made_by` (ops
    that only gradients or the compiler create: random graphs reach them through grad or passes)."""
    name: str
    infer: Callable  # (inputs: list[Tensor], **attrs) -> (shape, dtype)
    forward: Callable  # (*arrays, **attrs) -> ndarray
    vjp: Optional[Callable] = None  # (g, out, *inputs, **attrs) -> list[Tensor | None], one per input
    domain: Any = ()  # one Domain per input (missing entries: Domain()), or a callable(**attrs) giving them
    differentiable: bool = True
    promotes: bool = False
    elementwise: bool = False
    arity: Optional[int] = None  # None = variadic
    # memory
    inplace: bool = False
    alias: bool = False
    same_shape_identity: bool = False  # (x, like) shape plumbing: the identity once both shapes are equal
    # C lowering
    lowering: Optional[str] = None
    kernel_param: Optional[str] = None
    fusible: bool = False
    variants: dict = field(default_factory=dict)  # kernel name -> the attribute values it stands for
    dense_act: bool = False
    # verification
    branch: Optional[Callable] = None
    fuzz: Optional[str] = None
    fuzz_attrs: Any = field(default_factory=dict)  # attr -> candidate values, or callable(draw, shape, dtype)
    fuzz_weight: int = 1  # how often random graphs draw it, relative to other ops
    value_preserving: bool = False
    monotonic: bool = False
    no_vjp: str = ""
    made_by: str = ""  # "vjp": only gradients create it; "passes": only the compiler does

    def input_domain(self, i: int, attrs: Optional[dict] = None) -> Domain:
        domains = self.domain(**(attrs or {})) if callable(self.domain) else self.domain
        return domains[i] if i < len(domains) else Domain()

    def kernel(self, attrs: dict) -> str:
        """The name of the elementwise kernel computing a node of this op with these attributes."""
        for name, fixed in self.variants.items():
            if all(attrs.get(k) == v for k, v in fixed.items()):
                return name
        return self.name

    def kernel_attrs(self, kernel: str, param: float) -> dict:
        """The attributes a fused instruction (kernel, param) stands for (inverse of `kernel`)."""
        attrs = dict(self.variants.get(kernel, {}))
        if self.kernel_param:
            attrs[self.kernel_param] = param
        return attrs

    def kernel_value(self, attrs: dict) -> float:
        """The float parameter its kernels take (leaky slope, exponent, ...), 0 when none."""
        return float(attrs.get(self.kernel_param) or 0.0) if self.kernel_param else 0.0


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


_fused_cache: list = [None, {}]  # [registry fingerprint, table]


def fused_kernels() -> dict:
    """kernel name -> (OpDef, fixed attributes) for every instruction a fused_elementwise
    program may hold (derived from the registry's `fusible` ops and their `variants`)."""
    fingerprint = tuple(map(id, REGISTRY.values()))  # tests register and remove ops on the fly
    if _fused_cache[0] != fingerprint:
        table = {}
        for op in REGISTRY.values():
            if op.fusible:
                for name, fixed in (op.variants or {op.name: {}}).items():
                    table[name] = (op, fixed)
        _fused_cache[:] = [fingerprint, table]
    return _fused_cache[1]


def memory_traits() -> tuple:
    """(in-place ops, aliasing ops): the arena planner's view of the registry."""
    return (frozenset(n for n, op in REGISTRY.items() if op.inplace),
            frozenset(n for n, op in REGISTRY.items() if op.alias))


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
from .extra import *  # noqa: E402,F401,F403
from .fused import *  # noqa: E402,F401,F403
from .indexing import *  # noqa: E402,F401,F403
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
    from . import conv, core, elementwise, extra, fused, indexing, linalg, nn, reduce, shape
    for mod in (conv, core, elementwise, extra, fused, indexing, linalg, nn, reduce, shape):
        for name in getattr(mod, "__all__", ()):
            fn = globals().get(name)
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
                globals()[name] = _graph_errors(fn)
                PUBLIC.append(name)


PUBLIC: list = []  # the public op functions, re-exported as gc.<name>
_wrap_public_ops()
__all__ = list(PUBLIC)
