"""Clean-up passes: dead code, common subexpressions, constant folding, algebraic identities."""
from __future__ import annotations

import numpy as np

from ...ir.graph import reachable
from ...ir.tensor import Tensor, constant
from ...ops import REGISTRY
from .rewrite import is_constant, rewrite

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


_RESHAPES = ("reshape", "reshape_like", "expand_dims", "squeeze")


def _reshaped(x: Tensor, node: Tensor) -> Tensor:
    """x's data in node's shape, looking through reshapes: one reshape at most, or none."""
    while x.op in _RESHAPES:
        x = x.inputs[0]
    if x.shape == node.shape:
        return x
    return Tensor("reshape", [x], {"shape": node.shape}, node.shape, node.dtype, node.name, node.source)


def simplify(outputs: list) -> list:
    """Algebraic identities and layout rewrites that never change a value."""
    def rule(node: Tensor):
        op, ins = node.op, node.inputs
        if op in ("mul",):
            a, b = ins
            if is_constant(b, 1) and _same_as(node, a):
                return a
            if is_constant(a, 1) and _same_as(node, b):
                return b
        if op == "add":
            a, b = ins
            if is_constant(b, 0) and _same_as(node, a):
                return a
            if is_constant(a, 0) and _same_as(node, b):
                return b
        if op == "sub" and is_constant(ins[1], 0) and _same_as(node, ins[0]):
            return ins[0]
        if op == "div" and is_constant(ins[1], 1) and _same_as(node, ins[0]):
            return ins[0]
        if op == "power" and node.attrs["p"] == 1.0:
            return ins[0]
        if op == "neg" and ins[0].op == "neg":
            return ins[0].inputs[0]
        if op == "cast" and ins[0].dtype == node.dtype:
            return ins[0]
        if op == "transpose" and ins[0].op == "transpose":
            inner = ins[0]
            axes = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
            if axes == tuple(range(len(axes))):
                return inner.inputs[0]
            return Tensor("transpose", inner.inputs, {"axes": axes}, node.shape, node.dtype, node.name, node.source)
        if op in ("reshape", "reshape_like") and ins[0].shape == node.shape:
            return ins[0]
        if op == "reshape" and ins[0].op in _RESHAPES:
            return _reshaped(ins[0], node)
        if op in ("sum", "max") and all(ins[0].shape[a] == 1 for a in node.attrs["axes"]):
            return _reshaped(ins[0], node)  # reducing size-1 axes only moves no value
        if op == "matmul":
            a, b = ins
            attrs = dict(node.attrs)
            changed = False
            if a.op == "transpose" and a.ndim == 2:
                a, attrs["trans_a"], changed = a.inputs[0], not attrs["trans_a"], True
            if b.op == "transpose" and b.ndim == 2:
                b, attrs["trans_b"], changed = b.inputs[0], not attrs["trans_b"], True
            if changed:
                return Tensor("matmul", [a, b], attrs, node.shape, node.dtype, node.name, node.source)
        return None

    return rewrite(outputs, rule)


__all__ = ["dce", "cse", "fold_constants", "simplify", "reachable"]
