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


class Uses:
    """What a use-aware rule knows about the original graph (see Rules)."""

    __slots__ = ("orig", "_users", "_out_ids")

    def __init__(self, orig: Tensor, users: dict, out_ids: set):
        self.orig, self._users, self._out_ids = orig, users, out_ids

    def private(self, n: Tensor) -> bool:
        """n (an original node) has one consumer and is not an output: a fusion may absorb it."""
        return len(self._users.get(n.id, ())) == 1 and n.id not in self._out_ids


class Rules:
    """A rewrite pass made of small named rules, each keyed by the op it matches.

        simplify = Rules("simplify")

        @simplify.rule("neg")
        def double_negation(node):
            # --x -> x (the first docstring line documents the rule)
            x = node.inputs[0]
            return x.inputs[0] if x.op == "neg" else None

    A rule sees a node whose inputs are already rewritten and returns its replacement or None.
    For each node the rules of its op are tried in the order they were added; the first
    replacement wins. Calling the Rules object runs the pass (one bottom-up sweep).

    Rules(name, uses=True) calls its rules as rule(node, uses): `uses.orig` is the node before
    rewriting (its inputs are the original nodes) and `uses.private(n)` says whether the original
    node n has exactly one consumer and is not an output, for patterns that may only swallow
    intermediates nothing else reads."""

    def __init__(self, name: str, uses: bool = False):
        self.name = name
        self.uses = uses
        self.by_op: dict[str, list[Rule]] = {}

    def rule(self, *ops: str) -> Callable[[Rule], Rule]:
        def add(fn: Rule) -> Rule:
            for op in ops:
                self.by_op.setdefault(op, []).append(fn)
            return fn
        return add

    def apply(self, node: Tensor, uses: Optional[Uses] = None) -> Optional[Tensor]:
        for fn in self.by_op.get(node.op, ()):
            replacement = fn(node) if uses is None else fn(node, uses)
            if replacement is not None:
                return replacement
        return None

    def __call__(self, outputs: list) -> list:
        if not self.uses:
            return rewrite(outputs, self.apply)
        users, out_ids = users_of(outputs)
        return rewrite(outputs, lambda node, orig: self.apply(node, Uses(orig, users, out_ids)), with_original=True)

    def describe(self) -> list[tuple[str, str, str]]:
        """(op, rule name, its one-line docstring) for every rule: the pass's documentation."""
        return [(op, fn.__name__, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
                for op, fns in self.by_op.items() for fn in fns]
