"""Scheduling: a deterministic topological order of the nodes and the liveness of every value."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..ir.errors import GraphError
from ..ir.graph import reachable
from ..ir.tensor import Tensor

LEAVES = ("placeholder", "parameter", "constant")


def topological_order(outputs: list[Tensor]) -> list[Tensor]:
    """Same graph, same order: Kahn's algorithm, choosing among ready nodes by (newest input,
    own creation order). Ranking a node by its newest input runs it soon after that input is
    made (e.g. a parameter update right after its gradient), so values die young and the
    arena stays small."""
    nodes = reachable(outputs)
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in nodes)
    g.add_edges_from((i.id, n.id) for n in nodes for i in n.inputs)
    by_id = {n.id: n for n in nodes}
    rank = {n.id: (max((i.id for i in n.inputs), default=n.id), n.id) for n in nodes}
    try:
        return [by_id[i] for i in nx.lexicographical_topological_sort(g, key=rank.__getitem__)]
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
    check_finite: bool = False  # the NumPy executor then checks every step's output


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


ALIGN = 64  # bytes: every arena buffer starts on a cache line (and an AVX2 load boundary)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def nbytes(node: Tensor) -> int:
    count = 1
    for d in node.shape:
        count *= d
    return count * node.dtype.itemsize


@dataclass
class Arena:
    """Where each intermediate lives in one per-call buffer of `nbytes` bytes.

    offsets: slot -> byte offset for every value kept in the arena (aliases share their root's);
    root: slot -> the slot whose buffer it views (reshape-like ops, when `aliasing` allows);
    inplace: slots written over a dead input's buffer; naive_bytes: one buffer per intermediate."""
    offsets: dict
    root: dict
    nbytes: int
    naive_bytes: int
    inplace: set = field(default_factory=set)


def plan_arena(plan: Plan, reuse: bool = True, inplace_ops=frozenset(), aliasing=frozenset(),
               external=frozenset()) -> Arena:
    """Liveness-based arena planning.

    Each intermediate is live from the step that writes it to its last reader (outputs: to the
    end). With reuse, a value takes the best-fitting freed block (smallest that fits, split);
    an op in `inplace_ops` writes over an input whose life ends at that very step when the sizes
    match. Slots in `external` (leaves, and outputs written straight into the returned arrays)
    are not placed; an op in `aliasing` (e.g. reshape) shares its input's buffer."""
    steps = plan.steps
    root: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, step in enumerate(steps):
        for i in step.inputs:
            last[root.get(i, i)] = k
        if step.node.op in aliasing:
            root[step.out] = root.get(step.inputs[0], step.inputs[0])
    end = len(steps)
    for s in plan.outputs:
        last[root.get(s, s)] = end
    dying: dict[int, list[int]] = {}
    for r, k in last.items():
        dying.setdefault(k, []).append(r)

    offsets: dict[int, int] = {}
    inplace: set[int] = set()
    free: list[list[int]] = []  # [offset, size] blocks available for reuse
    top = naive = 0
    for k, step in enumerate(steps):
        s = step.out
        if s in root:
            if root[s] in offsets:
                offsets[s] = offsets[root[s]]
        elif s not in external:
            need = _aligned(nbytes(step.node))
            naive += need
            placed = None
            if reuse and step.node.op in inplace_ops:
                for i in step.inputs:
                    r = root.get(i, i)
                    # exact sizes, not aligned ones: a smaller (broadcast) operand padded to the same
                    # block size would still be read after the first elements of s overwrite it
                    if (r in offsets and r not in external and last.get(r) == k and i == r
                            and nbytes(plan.nodes[r]) == nbytes(step.node) and plan.nodes[r].dtype == step.node.dtype):
                        placed = offsets[r]
                        last[r] = -1  # its block now belongs to s: do not free it below
                        inplace.add(s)
                        break
            if placed is None and reuse:
                fits = [b for b in free if b[1] >= need]
                if fits:
                    best = min(fits, key=lambda b: b[1])
                    placed = best[0]
                    best[0] += need
                    best[1] -= need
                    if best[1] == 0:
                        free.remove(best)
                elif free and free[-1][0] + free[-1][1] == top:  # grow the free block at the top
                    placed = free.pop()[0]
                    top = placed + need
            if placed is None:
                placed, top = top, top + need
            offsets[s] = placed
            if s not in last:  # never read: free right away
                last[s] = k
                dying.setdefault(k, []).append(s)
        if reuse:
            for r in dying.get(k, ()):
                if r in offsets and last.get(r) == k and r not in external:
                    _release(free, offsets[r], _aligned(nbytes(plan.nodes[r])))
    return Arena(offsets, root, top, naive, inplace)


def _release(free: list, offset: int, size: int) -> None:
    """Return a block to the sorted free list, merging it with free neighbours."""
    k = 0
    while k < len(free) and free[k][0] < offset:
        k += 1
    free.insert(k, [offset, size])
    if k + 1 < len(free) and free[k][0] + free[k][1] == free[k + 1][0]:
        free[k][1] += free.pop(k + 1)[1]
    if k > 0 and free[k - 1][0] + free[k - 1][1] == free[k][0]:
        free[k - 1][1] += free.pop(k)[1]
