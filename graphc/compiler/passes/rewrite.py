"""The one mechanism all passes share: rebuild a graph bottom-up, letting a rule replace nodes."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ...ir.graph import consumers, reachable
from ...ir.tensor import Tensor

Rule = Callable[[Tensor], Optional[Tensor]]


def with_inputs(node: Tensor, inputs) -> Tensor:
    """node with new inputs (same op, attributes, shape, dtype, name and source)."""
    return Tensor(node.op, inputs, node.attrs, node.shape, node.dtype, node.name, node.source, node.value)


def merged_source(nodes) -> str:
    """Source lines of the nodes a fused node replaces, each once, in order."""
    seen: list[str] = []
    for n in nodes:
        for part in n.source.split("; "):
            if part not in seen:
                seen.append(part)
    return "; ".join(seen)


def rewrite(outputs: list, rule: Rule, with_original: bool = False) -> list:
    """Visit nodes in topological order; `rule(node)` sees the node with its inputs already
    rewritten and returns a replacement or None to keep it. With with_original=True the rule is
    called as rule(node, original): pattern checks that need use counts look at the original
    graph (whose ids the consumer map knows), replacements are built from the rewritten node."""
    memo: dict[int, Tensor] = {}
    for node in reachable(outputs):
        ins = [memo[i.id] for i in node.inputs]
        current = node if all(a is b for a, b in zip(ins, node.inputs)) else with_inputs(node, ins)
        replacement = rule(current, node) if with_original else rule(current)
        memo[node.id] = current if replacement is None else replacement
    return [memo[o.id] for o in outputs]


def users_of(outputs: list) -> tuple[dict, set]:
    """Consumers of every node, and the ids of the outputs (which must stay materialised)."""
    return consumers(reachable(outputs)), {o.id for o in outputs}


def is_constant(node: Tensor, value: float) -> bool:
    return node.op == "constant" and node.value.size <= 64 and bool(np.all(node.value == value))
