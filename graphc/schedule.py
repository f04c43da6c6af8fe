"""Scheduling: a deterministic topological order of the nodes and the liveness of every value."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .errors import GraphError
from .graph import reachable
from .tensor import Tensor

LEAVES = ("placeholder", "parameter", "constant")


def topological_order(outputs: list[Tensor]) -> list[Tensor]:
    """Same graph, same order: Kahn's algorithm breaking ties by creation order."""
    nodes = reachable(outputs)
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in nodes)
    g.add_edges_from((i.id, n.id) for n in nodes for i in n.inputs)
    by_id = {n.id: n for n in nodes}
    try:
        return [by_id[i] for i in nx.lexicographical_topological_sort(g)]
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        raise GraphError(f"the graph has a cycle through nodes {[by_id[a].op for a, _ in cycle]}") from None


@dataclass
class Step:
    node: Tensor
    inputs: tuple  # value slots
    out: int  # value slot
    free: tuple = ()  # slots whose last use is this step


@dataclass
class Plan:
    """A graph specialised to concrete shapes, in execution order, with liveness."""
    nodes: list  # all nodes in order; slot i holds nodes[i]'s value
    steps: list  # one Step per non-leaf node
    outputs: list  # slots of the requested outputs
    feeds: list = field(default_factory=list)  # (slot, placeholder index)
    params: list = field(default_factory=list)  # (slot, parameter index)
    constants: list = field(default_factory=list)  # (slot, ndarray)
    compile_seconds: float = 0.0


def make_plan(outputs: list[Tensor], feed_index: dict) -> Plan:
    """Order the nodes, give each a slot, and free each slot after its last use.

    feed_index maps the `origin` attribute of a placeholder/parameter clone to its position
    in the call's feeds or parameters."""
    order = topological_order(outputs)
    slot = {n.id: k for k, n in enumerate(order)}
    last_use: dict[int, int] = {}
    for k, n in enumerate(order):
        for i in n.inputs:
            last_use[slot[i.id]] = k
    keep = {slot[o.id] for o in outputs}
    plan = Plan(order, [], [slot[o.id] for o in outputs])
    frees: dict[int, list[int]] = {}
    for s, k in last_use.items():
        if s not in keep and order[s].op not in LEAVES:
            frees.setdefault(k, []).append(s)
    for k, n in enumerate(order):
        if n.op == "placeholder":
            plan.feeds.append((k, feed_index[n.attrs["origin"]]))
        elif n.op == "parameter":
            plan.params.append((k, feed_index[n.attrs["origin"]]))
        elif n.op == "constant":
            plan.constants.append((k, n.value))
        else:
            plan.steps.append(Step(n, tuple(slot[i.id] for i in n.inputs), k, tuple(frees.get(k, ()))))
    return plan
