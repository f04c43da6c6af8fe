"""Clean-up passes: dead code, common subexpressions, constant folding, algebraic identities."""
from __future__ import annotations

import numpy as np

from ...ir.graph import reachable
from ...ir.tensor import Tensor, constant
from ...ops import REGISTRY
from .rewrite import Rules, is_constant, rewrite

FOLD_LIMIT = 1 << 20  # elements: larger constant results are computed at run time instead


def dce(outputs: list) -> list:
    """Dead-code elimination. Graphs are closures of their outputs, so what is not reachable from
    the requested outputs (e.g. gradients nobody asked for) is already gone; this pass only
    re-roots the graph, and exists so the pipeline reads as a compiler's."""
    return list(outputs)


def _freeze(v):
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, np.dtype):
        return ("dtype", v.str)
    return v


def cse(outputs: list) -> list:
    """Common-subexpression elimination: same op, same attributes, same inputs -> one node.

    Constants are merged by value (small ones), placeholders and parameters never."""
    table: dict = {}

    def rule(node: Tensor):
        if node.op in ("placeholder", "parameter"):
            return None
        if node.op == "constant":
            if node.value.size > 256:
                return None
            key = ("constant", node.value.dtype.str, node.value.shape, node.value.tobytes())
        else:
            key = (node.op, _freeze(node.attrs), tuple(i.id for i in node.inputs))
        existing = table.get(key)
        if existing is not None:
            return existing
        table[key] = node
        return None

    return rewrite(outputs, rule)


def fold_constants(outputs: list) -> list:
    """Evaluate nodes whose inputs are all constants (NumPy forward, at compile time)."""
    def rule(node: Tensor):
        if node.op in ("placeholder", "parameter", "constant") or not node.inputs:
            return None
        if any(i.op != "constant" for i in node.inputs):
            return None
        size = int(np.prod(node.shape)) if node.shape else 1
        if size > FOLD_LIMIT:
            return None
        with np.errstate(all="ignore"):
            value = REGISTRY[node.op].forward(*[i.value for i in node.inputs], **node.attrs)
        folded = constant(np.asarray(value, dtype=node.dtype), name=node.name)
        folded.source = node.source
        return folded

    return rewrite(outputs, rule)


def _same_as(node: Tensor, x: Tensor) -> bool:
    """Replacing node by x changes nothing: same shape and dtype."""
    return x.shape == node.shape and x.dtype == node.dtype


def _reshaped(x: Tensor, node: Tensor) -> Tensor:
    """x's data in node's shape, looking through views: one reshape at most, or none."""
    while REGISTRY[x.op].alias:
        x = x.inputs[0]
    if x.shape == node.shape:
        return x
    return Tensor("reshape", [x], {"shape": node.shape}, node.shape, node.dtype, node.name, node.source)


simplify = Rules("simplify")
"""Algebraic identities and layout rewrites that never change a value."""


def _widened(x: Tensor, dtype, source: str) -> Tensor:
    """x as `dtype` (an exact float32 -> float64 cast), below a transpose so the GEMM flags still see it."""
    if x.dtype == dtype or x.dtype.kind != "f":
        return x
    if x.op == "transpose":
        inner = _widened(x.inputs[0], dtype, source)
        return Tensor("transpose", [inner], x.attrs, x.shape, dtype, x.name, x.source)
    return Tensor("cast", [x], {"dtype": np.dtype(dtype)}, x.shape, np.dtype(dtype), None, source)


# Ops whose forward is one NumPy primitive that promotes mixed operands itself (OpDef.promotes); a
# compound op such as activation_grad would round its float32 intermediates differently in float64.
_MIXED_FLOAT_OPS = sorted(name for name, d in REGISTRY.items() if d.promotes)


@simplify.rule(*_MIXED_FLOAT_OPS)
def widen_mixed_floats(node):
    """op(float32, float64) -> op(cast(float32 -> float64), float64): NumPy's promotion made explicit.

    The value is the same (the cast is exact, and NumPy computes the mixed op in float64 anyway),
    but every kernel then sees one dtype: the C backend has none for mixed operands and ran such
    steps on NumPy (a float32 batch times float64 weights: the W-mlp step took 9.6 ms, not 5.4).
    Registered first, so that it runs before the other rules of these ops."""
    floats = {i.dtype for i in node.inputs if i.dtype.kind == "f"}
    if len(floats) < 2:
        return None
    wide = np.result_type(*floats)
    out = Tensor(node.op, [_widened(i, wide, node.source) for i in node.inputs], node.attrs, node.shape, node.dtype,
                 node.name, node.source)
    flagged = transpose_into_gemm_flags(out) if node.op == "matmul" else None
    return out if flagged is None else flagged


@simplify.rule("mul")
def times_one(node):
    """x * 1 -> x and 1 * x -> x (when the shape and dtype stay)."""
    for k in (0, 1):
        if is_constant(node.inputs[1 - k], 1) and _same_as(node, node.inputs[k]):
            return node.inputs[k]
    return None


@simplify.rule("add")
def plus_zero(node):
    """x + 0 -> x and 0 + x -> x."""
    for k in (0, 1):
        if is_constant(node.inputs[1 - k], 0) and _same_as(node, node.inputs[k]):
            return node.inputs[k]
    return None


@simplify.rule("sub")
def minus_zero(node):
    """x - 0 -> x."""
    return node.inputs[0] if is_constant(node.inputs[1], 0) and _same_as(node, node.inputs[0]) else None


@simplify.rule("div")
def over_one(node):
    """x / 1 -> x."""
    return node.inputs[0] if is_constant(node.inputs[1], 1) and _same_as(node, node.inputs[0]) else None


@simplify.rule("power")
def power_one(node):
    """x ** 1 -> x."""
    return node.inputs[0] if node.attrs["p"] == 1.0 else None


@simplify.rule("neg")
def double_negation(node):
    """--x -> x."""
    x = node.inputs[0]
    return x.inputs[0] if x.op == "neg" else None


@simplify.rule("cast")
def cast_to_same(node):
    """cast(x, x.dtype) -> x."""
    return node.inputs[0] if node.inputs[0].dtype == node.dtype else None


@simplify.rule("transpose")
def transpose_of_transpose(node):
    """transpose(transpose(x, p), q) -> one transpose (or x when the axes cancel)."""
    inner = node.inputs[0]
    if inner.op != "transpose":
        return None
    axes = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
    if axes == tuple(range(len(axes))):
        return inner.inputs[0]
    return Tensor("transpose", inner.inputs, {"axes": axes}, node.shape, node.dtype, node.name, node.source)


@simplify.rule("reshape", "reshape_like")
def reshape_to_same(node):
    """A reshape to the shape it already has is the identity."""
    return node.inputs[0] if node.inputs[0].shape == node.shape else None


@simplify.rule("reshape")
def reshape_of_view(node):
    """reshape(view(x)) -> reshape(x): chains of views collapse to one."""
    x = node.inputs[0]
    return _reshaped(x, node) if REGISTRY[x.op].alias else None


@simplify.rule("sum", "max")
def reduce_size_one_axes(node):
    """Reducing only size-1 axes moves no value: a reshape."""
    x = node.inputs[0]
    return _reshaped(x, node) if all(x.shape[a] == 1 for a in node.attrs["axes"]) else None


@simplify.rule("matmul")
def transpose_into_gemm_flags(node):
    """matmul(transpose(A), B) -> matmul(A, B, trans_a=True) (and likewise for B): the GEMM packs it."""
    a, b = node.inputs
    attrs = dict(node.attrs)
    changed = False
    if a.op == "transpose" and a.ndim == 2:
        a, attrs["trans_a"], changed = a.inputs[0], not attrs["trans_a"], True
    if b.op == "transpose" and b.ndim == 2:
        b, attrs["trans_b"], changed = b.inputs[0], not attrs["trans_b"], True
    if not changed:
        return None
    return Tensor("matmul", [a, b], attrs, node.shape, node.dtype, node.name, node.source)


__all__ = ["dce", "cse", "fold_constants", "simplify", "reachable"]
