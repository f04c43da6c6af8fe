"""Reverse-mode automatic differentiation as a graph-to-graph transform.

grad(y, wrt) sweeps the graph of y in reverse topological order, calls each op's VJP rule
(written with graphc ops) on the upstream gradient, and sums contributions where a node fans
out. The result is more graph: it can be compiled, optimised and differentiated again.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from ..ir.errors import GraphError, node_error, user_source
from ..ir.graph import reachable
from ..ir.tensor import Tensor, constant
from ..ops import REGISTRY
from ..ops.core import cast, zeros_like


def grad(y: Tensor, wrt: Union[Tensor, Sequence[Tensor]]) -> Union[Tensor, list[Tensor]]:
    """Gradient Tensors of the scalar y with respect to each tensor of `wrt` (in that order).

    Works for any node: parameters, placeholders (the input itself, as attacks need) and
    intermediates. Non-differentiable paths (sign, comparisons, argmax, integer tensors)
    contribute zero; a tensor y does not depend on gets a zero gradient."""
    if not isinstance(y, Tensor):
        raise GraphError(f"grad (called at {user_source()}): y must be a graphc Tensor, got {type(y).__name__}")
    single = isinstance(wrt, Tensor)
    try:
        targets = [wrt] if single else list(wrt)
    except TypeError:
        raise GraphError(f"grad (called at {user_source()}): wrt must be a Tensor or a list of Tensors, "
                         f"got {type(wrt).__name__}") from None
    for t in targets:
        if not isinstance(t, Tensor):
            raise GraphError(f"grad (called at {user_source()}): wrt must hold graphc Tensors, "
                             f"got {type(t).__name__}")
    if y.shape != ():
        raise node_error(y, f"grad needs a scalar output, got shape {y.shape}; reduce it first "
                            "(e.g. .sum() or .mean())")
    if y.dtype.kind != "f":
        raise node_error(y, f"grad needs a floating-point output, got {y.dtype}")

    order = reachable([y])
    target_ids = {t.id for t in targets}
    # A node needs a gradient only if some target lies below it.
    needed: set[int] = set()
    for node in order:
        if node.id in target_ids or any(i.id in needed for i in node.inputs):
            needed.add(node.id)

    pending: dict[int, list[Tensor]] = {y.id: [constant(np.ones((), y.dtype))]}
    total: dict[int, Tensor] = {}
    for node in reversed(order):
        parts = pending.pop(node.id, None)
        if parts is None or node.id not in needed:
            continue
        g = parts[0]
        for p in parts[1:]:
            g = g + p  # fan-out: gradients of all uses add up
        total[node.id] = g
        opdef = REGISTRY[node.op]
        if not node.inputs or not opdef.differentiable:
            continue
        if not any(i.id in needed and i.dtype.kind == "f" for i in node.inputs):
            continue
        if opdef.vjp is None:
            raise node_error(node, "has no gradient rule (it is a backward op that graphc cannot "
                                   "differentiate again)")
        input_grads = opdef.vjp(g, node, *node.inputs, **node.attrs)
        for inp, gi in zip(node.inputs, input_grads):
            if gi is None or inp.id not in needed or inp.dtype.kind != "f":
                continue
            if gi.dtype != inp.dtype:
                gi = cast(gi, inp.dtype)
            pending.setdefault(inp.id, []).append(gi)

    result = [total.get(t.id) if t.id in total else zeros_like(t) for t in targets]
    return result[0] if single else result
