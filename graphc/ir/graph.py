"""Graph walks shared by autodiff, the scheduler and the passes (iterative: no recursion limit)."""
from __future__ import annotations

from typing import Iterable

from .tensor import Tensor


def reachable(outputs: Iterable[Tensor]) -> list[Tensor]:
    """Every node the outputs depend on, in creation order (a topological order, since a node's
    inputs always exist before it)."""
    seen: dict[int, Tensor] = {}
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen[node.id] = node
        stack.extend(i for i in node.inputs if i.id not in seen)
    return [seen[k] for k in sorted(seen)]


def consumers(nodes: list[Tensor]) -> dict[int, list[Tensor]]:
    users: dict[int, list[Tensor]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i.id, []).append(n)
    return users
