"""Finite-difference gradient checking: gc.gradcheck and its report.

gradcheck compares the gradients graphc derives (gc.grad, compiled on a backend) with central
finite differences of the forward pass. The check always runs in float64: the graph is cloned
with every floating leaf, constant and dtype attribute promoted to float64, so graphs built in
float32 are checked without float32 rounding noise. Finite differences use a NumPy interpreter of
the ops' own forwards (no compiler passes, no C kernels): the trusted oracle.

On a failure the report localises the bug: every node on the path is checked on its own (its
VJP rule, applied to the values it saw and a random upstream cotangent, against finite
differences of that op's forward alone) and the first node that disagrees is named, with its op
and the source line that created it. Failures explained by a non-differentiable point (ReLU at
0, clip at its bounds, ties in max / max-pool, a comparison flipping) are reported as kinks,
not as gradient bugs.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..backends import resolve as resolve_backend
from ..backends.numpy_backend import run_node
from ..ir.errors import GraphError, node_error, user_source
from ..ir.graph import reachable
from ..ir.tensor import Tensor, constant
from ..ops import REGISTRY

__all__ = ["gradcheck", "GradcheckReport", "Mismatch", "NodeMismatch", "KinkNote", "compare_backends",
           "DEFAULT_EPS", "DEFAULT_ATOL", "DEFAULT_RTOL"]

F64 = np.dtype(np.float64)
DEFAULT_EPS = float(np.finfo(np.float64).eps ** (1.0 / 3.0))  # ~6.06e-6: balances truncation and rounding
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3
KINK_STEPS = 4  # "within a few steps" of a non-differentiable point
_MAX_NODE_ELEMENTS = 256  # elements per input probed when localising a node
# mode="fast" falls back to the full Jacobian on a failure only when that is estimated to take at
# most this long (from the fast check's own passes): on a ResNet-50 input (150,528 elements, two
# float64 forward passes each) the fallback would run for days.
DEFAULT_FALLBACK_SECONDS = 60.0


# -- report ---------------------------------------------------------------------------------------
@dataclass
class Mismatch:
    """One Jacobian element: d output[out_index] / d input[index]."""
    input: str
    index: tuple
    output: str
    out_index: tuple
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float

    def __str__(self) -> str:
        out = self.output + (f"[{', '.join(map(str, self.out_index))}]" if self.out_index else "")
        return (f"d {out} / d {self.input}[{', '.join(map(str, self.index))}]: analytic {self.analytic:.8g}, "
                f"numeric {self.numeric:.8g} (abs err {self.abs_error:.3g}, rel err {self.rel_error:.3g})")


@dataclass
class NodeMismatch:
    """The first node whose own VJP disagrees with finite differences of its forward."""
    op: str
    source: str
    name: Optional[str]
    input_index: int
    index: tuple = ()
    analytic: float = float("nan")
    numeric: float = float("nan")
    abs_error: float = float("nan")
    rel_error: float = float("nan")
    reason: str = ""

    def __str__(self) -> str:
        what = self.op + (f" '{self.name}'" if self.name else "")
        head = f"{what} created at {self.source}, input {self.input_index}"
        if self.reason:
            return f"{head}: {self.reason}"
        return (f"{head}: its VJP gives {self.analytic:.8g} at [{', '.join(map(str, self.index))}] where finite "
                f"differences of its forward give {self.numeric:.8g} (abs err {self.abs_error:.3g})")


@dataclass
class KinkNote:
    """A non-differentiable point within a few finite-difference steps of the checked values."""
    op: str
    source: str
    detail: str
    trigger: str = ""  # which input element's step crosses it

    def __str__(self) -> str:
        return f"{self.op} created at {self.source}: {self.detail}" + (f" ({self.trigger})" if self.trigger else "")


@dataclass
class GradcheckReport:
    """What gc.gradcheck found. ``bool(report)`` is False only for a real failure.

    status: "pass"; "fail" (a gradient disagrees, or computing it raised); "kink" (every
    disagreement is explained by a non-differentiable point near the checked values — the
    derivative is not defined there, so this is not a gradient bug); "edge" (a checked value lies
    so close to the edge of an op's domain — log or sqrt near 0 — that finite differences could
    not decide even with a shrunken or one-sided step: not a gradient bug either).
    edges: the inputs whose finite-difference step had to shrink to stay inside a domain.
    worst: the worst Jacobian element (position, analytic and numeric values, errors).
    culprit: on failure, the first node whose own VJP disagrees with finite differences.
    kinks: the non-differentiable points the finite differences crossed.
    analytic / numeric: full Jacobians per input label, shape (output elements, *input shape)."""
    status: str
    mode: str
    eps: float
    atol: float
    rtol: float
    backend: str
    built_dtypes: tuple = ()
    checked: int = 0
    failed: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst: Optional[Mismatch] = None
    culprit: Optional[NodeMismatch] = None
    kinks: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    error: Optional[str] = None
    note: Optional[str] = None
    nodes: int = 0
    ops: frozenset = frozenset()
    analytic: dict = field(default_factory=dict, repr=False)
    numeric: dict = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __bool__(self) -> bool:
        return self.status != "fail"

    def __str__(self) -> str:
        built = "/".join(self.built_dtypes) or "?"
        head = {"pass": "gradcheck passed", "fail": "gradcheck FAILED",
                "kink": "gradcheck hit a kink (not a gradient bug)",
                "edge": "gradcheck could not decide near a domain edge (not a gradient bug)"}[self.status]
        lines = [f"{head}: {self.checked} Jacobian element(s) checked in float64 (graph built in {built}), "
                 f"{self.failed} outside |a - n| <= {self.atol:g} + {self.rtol:g}*max(|a|, |n|); mode {self.mode}, "
                 f"backend {self.backend}, eps {self.eps:.3g}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.worst is not None:
            lines.append(f"  worst: {self.worst}")
        if self.kinks:
            lines.append("  non-differentiable point(s) within a few steps:")
            lines += [f"    {k}" for k in self.kinks[:8]]
            if len(self.kinks) > 8:
                lines.append(f"    ... and {len(self.kinks) - 8} more")
        if self.edges:
            lines.append("  near a domain edge (finite-difference step shrunk or one-sided):")
            lines += [f"    {e}" for e in self.edges[:8]]
            if len(self.edges) > 8:
                lines.append(f"    ... and {len(self.edges) - 8} more")
        if self.culprit is not None:
            lines.append(f"  first node whose VJP disagrees: {self.culprit}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<GradcheckReport {self.status}: max abs err {self.max_abs_error:.3g}, {self.failed} failed>"


# -- setting up the problem -----------------------------------------------------------------------
@dataclass
class _Leaf:
    tensor: Tensor  # the user's leaf
    value: np.ndarray
    label: str
    checked: bool


def _label(t: Tensor, k: int) -> str:
    return t.name or f"input{k}"


def _problem(outputs_or_fn, inputs, feeds) -> tuple[list[Tensor], list[_Leaf]]:
    leaves: list[_Leaf] = []
    if callable(outputs_or_fn) and not isinstance(outputs_or_fn, Tensor):
        if isinstance(inputs, Mapping):
            raise GraphError("gradcheck(fn, inputs): give the inputs as a list of arrays, one per argument of fn")
        arrays = [np.asarray(v) for v in inputs]
        try:
            names = [p.name for p in inspect.signature(outputs_or_fn).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):  # builtins without a signature
            names = []
        tensors = []
        for k, a in enumerate(arrays):
            name = names[k] if k < len(names) and names[k].isidentifier() else f"x{k}"
            dtype = a.dtype if a.dtype.kind in "fiub" else F64
            t = Tensor("placeholder", (), {}, a.shape, dtype, name=name, source=user_source())
            tensors.append(t)
            leaves.append(_Leaf(t, a, name, a.dtype.kind == "f"))
        outs = outputs_or_fn(*tensors)
    else:
        outs = outputs_or_fn
        if isinstance(inputs, Tensor):
            inputs = [inputs]
        items = inputs.items() if isinstance(inputs, Mapping) else [(t, None) for t in inputs]
        for k, (t, v) in enumerate(items):
            if not isinstance(t, Tensor):
                raise GraphError(f"gradcheck inputs must be graphc Tensors (placeholders or parameters), "
                                 f"got {type(t).__name__}")
            if v is None:
                if t.value is None:
                    raise node_error(t, f"gradcheck needs a value for {t!r}: pass {{tensor: array}}")
                v = t.value
            v = np.asarray(v)
            leaves.append(_Leaf(t, v, _label(t, k), t.dtype.kind == "f"))
    for t, v in (feeds or {}).items():
        leaves.append(_Leaf(t, np.asarray(v), _label(t, len(leaves)), False))
    outs = [outs] if isinstance(outs, Tensor) else list(outs)
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise GraphError("gradcheck needs output Tensor(s) (or a function returning them)")
    return outs, leaves


def _up_attr(key: str, v):
    if isinstance(v, np.dtype) or (key == "dtype" and v is not None):
        d = np.dtype(v)
        return F64 if d.kind == "f" else d
    return v


def _clone_float64(outputs: list[Tensor], leaves: list[_Leaf]):
    """The graph again, every float promoted to float64; leaves become float64 placeholders."""
    by_id = {lf.tensor.id: (k, lf) for k, lf in enumerate(leaves)}
    clone: dict[int, Tensor] = {}
    new_leaves: dict[int, Tensor] = {}
    for node in reachable(outputs):
        if node.id in by_id:
            k, lf = by_id[node.id]
            if len(lf.value.shape) != len(node.shape) or any(
                    d is not None and d != s for d, s in zip(node.shape, lf.value.shape)):
                raise node_error(node, f"gradcheck value for '{lf.label}' has shape {lf.value.shape}, "
                                       f"expected {node.shape}")
            dtype = F64 if node.dtype.kind == "f" else node.dtype
            new = Tensor("placeholder", (), {}, lf.value.shape, dtype, name=f"_gc_in{k}", source=node.source)
            new_leaves[node.id] = new
        elif node.op == "placeholder":
            raise node_error(node, f"gradcheck needs a value for placeholder '{node.name}' (pass it in inputs, "
                                   "or in feeds= if it is not to be checked)")
        elif node.op in ("parameter", "constant"):
            v = np.asarray(node.value)
            new = constant(v.astype(F64) if v.dtype.kind == "f" else v, name=node.name)
            new.source = node.source
        else:
            ins = [clone[i.id] for i in node.inputs]
            attrs = {k: _up_attr(k, v) for k, v in node.attrs.items()}
            try:
                shape, dtype = REGISTRY[node.op].infer(ins, **attrs)
            except GraphError as exc:
                raise node_error(node, f"re-building the graph in float64 failed: {exc}") from None
            new = Tensor(node.op, ins, attrs, shape, dtype, node.name, node.source)
        clone[node.id] = new
    return [clone[o.id] for o in outputs], new_leaves


# -- a NumPy interpreter of the ops' own forwards (the finite-difference oracle) ------------------
class _Interpreter:
    def __init__(self, outputs: list[Tensor]):
        self.order = reachable(outputs)

    @staticmethod
    def step(node: Tensor, vals: dict) -> np.ndarray:
        return run_node(node, [vals[i.id] for i in node.inputs])

    def run(self, leaf_values: dict, frozen: Optional[dict] = None) -> dict:
        """All values; with `frozen` (values at the checked point), stop_gradient nodes keep theirs."""
        vals = {}
        with np.errstate(all="ignore"):
            for n in self.order:
                if n.id in leaf_values:
                    vals[n.id] = leaf_values[n.id]
                elif frozen is not None and n.op == "stop_gradient":
                    vals[n.id] = frozen[n.id]
                elif n.op in ("constant", "parameter"):
                    vals[n.id] = np.asarray(n.value)
                elif not n.inputs:
                    raise node_error(n, "no value for this leaf")
                else:
                    vals[n.id] = self.step(n, vals)
        return vals

    def downstream(self, leaf: Tensor) -> list[Tensor]:
        dirty = {leaf.id}
        out = []
        for n in self.order:
            if any(i.id in dirty for i in n.inputs):
                dirty.add(n.id)
                out.append(n)
        return out

    def rerun(self, base: dict, leaf: Tensor, value: np.ndarray, downstream: list[Tensor]) -> dict:
        """Values with `leaf` changed; stop_gradient nodes keep their base value (so the finite
        differences see the same function the gradient describes)."""
        vals = dict(base)
        vals[leaf.id] = value
        with np.errstate(all="ignore"):
            for n in downstream:
                if n.op != "stop_gradient":
                    vals[n.id] = self.step(n, vals)
        return vals


# -- kinks: which branch of a non-smooth op each element is on ------------------------------------
def _kink_parts(opdef, node: Tensor, ins: list) -> list:
    """sign(input - kink) for every declared kink of every float input, then sign(a - b) for a
    binary op whose ties matter: what the registry declares about where the op is not smooth."""
    parts = [np.sign(np.asarray(v, F64) - k) for i, v in enumerate(ins) if np.asarray(v).dtype.kind == "f"
             for k in opdef.input_domain(i, node.attrs).kinks]
    if opdef.elementwise and len(ins) == 2 and opdef.input_domain(0, node.attrs).distinct:
        parts.append(np.sign(np.asarray(ins[0], F64) - ins[1]))
    return parts


def _branch(node: Tensor, vals: dict) -> Optional[np.ndarray]:
    """An array that changes exactly when the op switches branch (None: the op is smooth)."""
    opdef = REGISTRY.get(node.op)
    ins = [vals[i.id] for i in node.inputs]
    if opdef is not None and opdef.branch is not None:
        return opdef.branch(vals[node.id], *ins, **node.attrs)
    if node.dtype.kind != "f" and any(i.dtype.kind == "f" for i in node.inputs):
        return vals[node.id]  # comparisons, argmax, casts to integers: piecewise constant
    if opdef is None:
        return None
    parts = _kink_parts(opdef, node, ins)
    if not parts:
        return None
    shape = np.broadcast_shapes(*(p.shape for p in parts))
    return np.stack([np.broadcast_to(p, shape) for p in parts])  # [which kink or tie, *element]


def _describe_branch_change(node: Tensor, before: np.ndarray, after: np.ndarray, vals: dict) -> str:
    where = np.argwhere(np.asarray(before != after).reshape(np.shape(before)))
    pos = tuple(int(i) for i in where[0]) if len(where) else ()
    opdef = REGISTRY.get(node.op)
    if opdef is not None and opdef.branch is not None:
        return f"it switches branch at element {list(pos)} ({opdef.name}'s own branch rule)"
    if node.dtype.kind != "f":
        return f"its discrete output flips at element {list(pos)} (the function jumps there)"
    if opdef is None or not pos:
        return f"it switches branch at element {list(pos)}"
    which, elem = pos[0], pos[1:]
    kinks = [(i, k) for i, v in enumerate(node.inputs) if v.dtype.kind == "f"
             for k in opdef.input_domain(i, node.attrs).kinks]
    if which >= len(kinks):
        return f"its inputs (nearly) tie at element {list(elem)}"
    i, k = kinks[which]
    x = np.asarray(vals[node.inputs[i].id])
    try:
        v = float(x[elem[len(elem) - x.ndim:]] if x.ndim else x)
    except IndexError:
        v = float("nan")
    return f"input {i} = {v:.6g} at {list(elem)} lies at its kink {k:g}"


# -- the check ------------------------------------------------------------------------------------
def gradcheck(outputs_or_fn: Union[Tensor, Sequence[Tensor], Callable[..., Any]],
              inputs: Union[Mapping, Sequence, Tensor], *, eps: Optional[float] = None,
              atol: Optional[float] = None, rtol: Optional[float] = None, mode: str = "full", seed: int = 0,
              backend: Optional[str] = None, feeds: Optional[Mapping] = None,
              localize: bool = True, fallback_seconds: float = DEFAULT_FALLBACK_SECONDS) -> GradcheckReport:
    """Check graphc's gradients against central finite differences, in float64.

    outputs_or_fn: output Tensor(s) with `inputs` a {leaf Tensor: value} dict (a list of
    parameters uses their current values); or a function building the outputs from input
    Tensors, with `inputs` a list of arrays, one per argument (float32 arrays build a float32
    graph; integer arrays, e.g. labels, are fed but not checked). Any other placeholder the
    graph needs goes in `feeds` (not checked).

    The graph is re-run in float64 even if it was built in float32. The step for element x is
    eps·max(1, |x|), eps defaulting to the cube root of float64's machine epsilon. Elements pass
    when |a − n| <= atol + rtol·max(|a|, |n|) (defaults 1e-5 and 1e-3). mode="fast" compares one
    random projection vᵀJu (one backward, two forward passes) and falls back to the full
    Jacobian on failure to name the worst element, when that is estimated (from the fast
    passes' times) to take at most `fallback_seconds`; otherwise the failing projection is
    reported, with the NumPy backend's value of it when another backend was checked. Returns a
    GradcheckReport: falsy only on a real failure, with the worst element, kinks met, and the
    first node whose own VJP disagrees.

        >>> import numpy as np, graphc as gc
        >>> x = gc.placeholder("x", (3,), "float32")
        >>> W = gc.parameter(np.eye(3, dtype="float32") * 0.5, name="W")
        >>> loss = gc.tanh(W @ x).sum()
        >>> report = gc.gradcheck(loss, {x: np.array([0.1, -0.2, 0.3], "float32"), W: None})
        >>> bool(report), report.status
        (True, 'pass')
        >>> bool(gc.gradcheck(lambda a, b: (a * b).sum(), [np.ones(2), np.arange(2.0)]))
        True
    """
    if mode not in ("full", "fast"):
        raise GraphError(f"gradcheck mode must be 'full' or 'fast', got {mode!r}")
    eps = DEFAULT_EPS if eps is None else float(eps)
    atol = DEFAULT_ATOL if atol is None else float(atol)
    rtol = DEFAULT_RTOL if rtol is None else float(rtol)
    backend_name = resolve_backend(backend)
    outs, leaves = _problem(outputs_or_fn, inputs, feeds)
    outs64, leaf_map = _clone_float64(outs, leaves)
    graph_nodes = [n for n in reachable(outs) if n.inputs]
    built = tuple(sorted({str(n.dtype) for n in reachable(outs) if n.dtype.kind == "f"}))
    report = GradcheckReport("pass", mode, eps, atol, rtol, backend_name, built_dtypes=built,
                             nodes=len(graph_nodes), ops=frozenset(n.op for n in graph_nodes))
    float_outs = [o for o in outs64 if o.dtype.kind == "f"]
    if not float_outs:
        raise GraphError("gradcheck needs at least one floating-point output")
    out_labels = [o.name or (f"output{k}" if len(outs) > 1 else "output") for k, o in enumerate(outs)
                  if o.dtype.kind == "f"]
    checked = [(lf, leaf_map[lf.tensor.id]) for lf in leaves if lf.checked and lf.tensor.id in leaf_map]
    feed_vals = {leaf_map[lf.tensor.id].id: (lf.value.astype(F64) if lf.checked else
                                             lf.value.astype(leaf_map[lf.tensor.id].dtype))
                 for lf in leaves if lf.tensor.id in leaf_map}
    interp = _Interpreter(float_outs)
    base = interp.run(feed_vals)
    out_sizes = [int(np.prod(o.shape, dtype=np.int64)) for o in float_outs]
    ctx = _Context(outs64=float_outs, out_labels=out_labels, out_sizes=out_sizes, checked=checked,
                   feed_vals=feed_vals, interp=interp, base=base, eps=eps, atol=atol, rtol=rtol,
                   backend=backend_name, rng=np.random.default_rng(seed))
    if not checked:
        report.note = "no floating-point inputs to check"
        return report
    try:
        ctx.build_gradient()
    except Exception as exc:  # noqa: BLE001 - a broken VJP may raise anything while building
        report.status, report.error = "fail", f"building the gradient graph raised {type(exc).__name__}: {exc}"
        if localize:
            report.culprit = _localize(ctx, report)
        return report

    if mode == "fast":
        ok = _fast_check(ctx, report)
        if ok:
            return report
        if report.error is None and ctx.fast["full_seconds"] > fallback_seconds:
            _explain_projection(ctx, report, fallback_seconds)
            return report
        report.mode = "fast, then full"
    _full_check(ctx, report)
    if report.status == "fail" and localize:
        report.culprit = _localize(ctx, report)
        if report.culprit is None and report.error is None:
            report.note = ("every node's own VJP agrees with finite differences; the mismatch comes from how "
                           "gradients are combined (autodiff accumulation, un-broadcasting, casts) or from the "
                           "compiled backend")
    return report


@dataclass
class _Context:
    outs64: list
    out_labels: list
    out_sizes: list
    checked: list
    feed_vals: dict
    interp: _Interpreter
    base: dict
    eps: float
    atol: float
    rtol: float
    backend: str
    rng: Any
    fn: Any = None
    cotangents: list = field(default_factory=list)
    fast: dict = field(default_factory=dict)  # the fast check's projection and timings

    def build_gradient(self, backend: Optional[str] = None):
        """Compile the VJP of the outputs (on `backend`, default the checked one) into self.fn."""
        from ..compiler.autodiff import grad
        from ..compiler.runtime import compile as gcompile
        from ..ops import mul
        from ..ops import sum as gsum
        if len(self.outs64) == 1 and self.outs64[0].shape == ():
            s = self.outs64[0]
        else:
            self.cotangents = [Tensor("placeholder", (), {}, o.shape, F64, name=f"_gc_v{k}")
                               for k, o in enumerate(self.outs64)]
            terms = [gsum(mul(o, v)) for o, v in zip(self.outs64, self.cotangents)]
            s = terms[0]
            for t in terms[1:]:
                s = s + t
        grads = grad(s, [new for _, new in self.checked])
        self.fn = gcompile(grads, backend=backend or self.backend)

    def vjp(self, v_flat: np.ndarray) -> list[np.ndarray]:
        feeds = {t.name: self.feed_vals[t.id] for t in self.fn.placeholders if t.id in self.feed_vals}
        wanted = {t.name for t in self.fn.placeholders}
        offset = 0
        for v, size in zip(self.cotangents, self.out_sizes):
            if v.name in wanted:
                feeds[v.name] = v_flat[offset:offset + size].reshape(v.shape)
            offset += size
        out = self.fn(**feeds)
        for (lf, new), g in zip(self.checked, out):
            if np.shape(g) != new.shape:
                raise GraphError(f"the gradient for '{lf.label}' has shape {np.shape(g)}, but '{lf.label}' "
                                 f"has shape {new.shape}")
        return [np.asarray(g, F64) for g in out]

    def step(self, x: np.ndarray) -> np.ndarray:
        return self.eps * np.maximum(1.0, np.abs(x))

    def flat_outputs(self, vals: dict) -> np.ndarray:
        return np.concatenate([np.asarray(vals[o.id], F64).reshape(-1) for o in self.outs64])


def _fast_check(ctx: _Context, report: GradcheckReport) -> bool:
    m = sum(ctx.out_sizes)
    v = ctx.rng.standard_normal(m) if ctx.cotangents else np.ones(m)  # a scalar loss is its own vᵀJ
    us = [ctx.rng.standard_normal(new.shape) for _, new in ctx.checked]
    norm = np.sqrt(sum(float(np.sum(u * u)) for u in us)) or 1.0
    us = [u / norm for u in us]
    start = time.perf_counter()
    try:
        g = ctx.vjp(v)
    except Exception as exc:  # noqa: BLE001
        report.status, report.error = "fail", f"computing the gradient raised {type(exc).__name__}: {exc}"
        return False
    backward = time.perf_counter() - start
    scales = [np.maximum(1.0, np.abs(ctx.feed_vals[new.id])) * u for (_, new), u in zip(ctx.checked, us)]
    analytic = sum(float(np.sum(gk * su)) for gk, su in zip(g, scales))
    plus = {new.id: ctx.feed_vals[new.id] + ctx.eps * su for (_, new), su in zip(ctx.checked, scales)}
    minus = {new.id: ctx.feed_vals[new.id] - ctx.eps * su for (_, new), su in zip(ctx.checked, scales)}
    start = time.perf_counter()
    fp = ctx.flat_outputs(ctx.interp.run({**ctx.feed_vals, **plus}, frozen=ctx.base))
    fm = ctx.flat_outputs(ctx.interp.run({**ctx.feed_vals, **minus}, frozen=ctx.base))
    forward = (time.perf_counter() - start) / 2
    numeric = float(v @ (fp - fm)) / (2 * ctx.eps)
    # the full check: one backward pass per output element, two forward passes per input element
    # (each rerunning only what depends on that input: at most a whole forward pass)
    n = sum(int(np.prod(new.shape, dtype=np.int64)) for _, new in ctx.checked)
    ctx.fast = dict(v=v, scales=scales, analytic=analytic, numeric=numeric, full_passes=(m, 2 * n),
                    full_seconds=m * backward + 2 * n * forward)
    err = abs(analytic - numeric)
    report.checked, report.max_abs_error = 1, err
    report.max_rel_error = err / max(abs(analytic), abs(numeric), 1e-300)
    return bool(err <= ctx.atol + ctx.rtol * max(abs(analytic), abs(numeric)))


def _explain_projection(ctx: _Context, report: GradcheckReport, fallback_seconds: float) -> None:
    """A failing projection whose full Jacobian would take too long: say what disagrees and, when
    a compiled backend was checked, what the NumPy backend's gradient gives for the same vᵀJu."""
    f = ctx.fast
    backward, forward = f["full_passes"]
    report.status, report.failed = "fail", 1
    lines = [f"the projection vᵀJu disagrees: analytic {f['analytic']:.9g}, numeric {f['numeric']:.9g}.",
             f"The full Jacobian ({backward:,} backward and {forward:,} forward passes, about "
             f"{f['full_seconds']:.3g} s) was not computed (fallback_seconds={fallback_seconds:g}): "
             "raise fallback_seconds, or check a smaller input with mode='full', to find the worst element."]
    if ctx.backend != "numpy":
        try:
            checked_fn = ctx.fn
            ctx.build_gradient("numpy")
            g = ctx.vjp(f["v"])
            ctx.fn = checked_fn
            on_numpy = sum(float(np.sum(gk * su)) for gk, su in zip(g, f["scales"]))
            agrees = abs(on_numpy - f["numeric"]) <= ctx.atol + ctx.rtol * max(abs(on_numpy), abs(f["numeric"]))
            lines.append(f"The NumPy backend's gradient gives {on_numpy:.9g}: "
                         + ("it agrees with finite differences, so the fault is in the "
                            f"{ctx.backend} backend." if agrees else
                            "it disagrees too, so the fault is in a VJP rule or in autodiff."))
        except Exception as exc:  # noqa: BLE001 - a diagnosis, not the check itself
            lines.append(f"(the NumPy backend's gradient raised {type(exc).__name__}: {exc})")
    report.note = " ".join(lines)


def _full_check(ctx: _Context, report: GradcheckReport) -> None:
    m = sum(ctx.out_sizes)
    # analytic Jacobian, one backward pass per output element
    try:
        rows = []
        for i in range(m):
            v = np.zeros(m)
            v[i] = 1.0
            rows.append(ctx.vjp(v))
        analytic = [np.stack([r[k] for r in rows]).reshape(m, -1) for k in range(len(ctx.checked))]
    except Exception as exc:  # noqa: BLE001
        report.status, report.error = "fail", f"computing the gradient raised {type(exc).__name__}: {exc}"
        analytic = None
    # numeric Jacobian, two forward passes per input element
    numeric, downstream, edge_columns = [], [], {}
    for k, (lf, new) in enumerate(ctx.checked):
        x = ctx.feed_vals[new.id]
        down = ctx.interp.downstream(new)
        downstream.append(down)
        jac = np.zeros((m, x.size))
        for j in range(x.size):
            jac[:, j], how = _difference(ctx, new, x, j, down)
            if how:
                edge_columns[(k, j)] = how
                index = [int(i) for i in np.unravel_index(j, x.shape)] if x.shape else []
                report.edges.append(f"{lf.label}{index} = {x.reshape(-1)[j]:.6g}: {how}")
        numeric.append(jac)
    report.numeric = {lf.label: j.reshape((m,) + new.shape) for (lf, new), j in zip(ctx.checked, numeric)}
    if analytic is None:
        return
    report.analytic = {lf.label: a.reshape((m,) + new.shape) for (lf, new), a in zip(ctx.checked, analytic)}

    failing = []  # (score, k, row, col)
    report.checked = int(sum(a.size for a in analytic))
    max_abs = max_rel = 0.0
    best = None
    for k, (a, n) in enumerate(zip(analytic, numeric)):
        with np.errstate(all="ignore"):
            err = np.abs(a - n)
            scale = np.maximum(np.abs(a), np.abs(n))
            tol = ctx.atol + ctx.rtol * scale
            bad = ~(err <= tol)
            score = np.where(np.isnan(err), np.inf, err / tol)
            rel = err / np.maximum(scale, 1e-300)
        if err.size:
            max_abs = max(max_abs, float(np.nanmax(err)) if not np.all(np.isnan(err)) else np.inf)
            max_rel = max(max_rel, float(np.nanmax(rel)) if not np.all(np.isnan(rel)) else np.inf)
            idx = np.unravel_index(int(np.argmax(score)), score.shape)
            if best is None or score[idx] > best[0]:
                best = (float(score[idx]), k, int(idx[0]), int(idx[1]))
        for r, c in zip(*np.nonzero(bad)):
            failing.append((float(score[r, c]), k, int(r), int(c)))
    report.max_abs_error, report.max_rel_error = max_abs, max_rel
    report.failed = len(failing)
    if best is not None:
        report.worst = _mismatch(ctx, analytic, numeric, *best[1:])
    if not failing:
        if report.error:
            report.status = "fail"
        return
    # near a domain edge, finite differences are the unreliable side: not a VJP bug
    failing = [f for f in failing if (f[1], f[3]) not in edge_columns]
    if not failing:
        report.status = "edge"
        return

    # kinks: does a small step around a failing input element make some op switch branch?
    columns = sorted({(k, c) for _, k, _, c in failing})
    explained: dict = {}
    # Every failing column is examined: each costs two reruns of the ops downstream of its input,
    # at most what the numeric Jacobian above already spent on it, and a column left unexamined
    # would be reported as a failure (a tie in every pooling window fails them all).
    for k, c in columns:
        notes = _kink_crossings(ctx, k, c, downstream[k])
        if notes:
            explained[(k, c)] = notes
    unexplained = [f for f in failing if (f[1], f[3]) not in explained]
    seen = set()
    for notes in explained.values():
        for note in notes:
            key = (note.op, note.source, note.detail)
            if key not in seen:
                seen.add(key)
                report.kinks.append(note)
    if unexplained:
        report.status = "fail"
        _, k, r, c = max(unexplained)
        report.worst = _mismatch(ctx, analytic, numeric, k, r, c)
    else:
        report.status = "kink"


_EDGE_SHRINK = 10.0  # each retry divides the step by this
_EDGE_TRIES = 8


def _difference(ctx: _Context, new: Tensor, x: np.ndarray, j: int, down: list) -> tuple[np.ndarray, str]:
    """d outputs / d x[j] by central differences, and how the step was adapted ("" when it was not).

    When x[j] ± h leaves an op's domain (log, sqrt near 0: a finite output turns NaN or inf), the
    step shrinks until both sides stay inside, then by 100 more so that it is small against the
    distance to the edge; if no symmetric step works, a one-sided second-order difference on the
    side that stays finite is used; if neither works, the column is NaN (undecided)."""
    flat = x.reshape(-1)
    f0 = ctx.flat_outputs(ctx.base)
    ok0 = ~np.isfinite(f0)  # outputs already non-finite at x do not count as leaving a domain

    def f(t: float) -> np.ndarray:
        xs = flat.copy()
        xs[j] = t
        return ctx.flat_outputs(ctx.interp.rerun(ctx.base, new, xs.reshape(x.shape), down))

    def finite(v: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(v) | ok0))

    h0 = ctx.step(flat[j])
    h = h0
    for attempt in range(_EDGE_TRIES + 1):
        xp, xm = flat[j] + h, flat[j] - h
        fp, fm = f(xp), f(xm)
        if finite(fp) and finite(fm):
            if attempt == 0:
                return (fp - fm) / (xp - xm), ""
            h /= 100.0
            xp, xm = flat[j] + h, flat[j] - h
            return (f(xp) - f(xm)) / (xp - xm), f"central step shrunk to {h:.3g} (from {h0:.3g})"
        h /= _EDGE_SHRINK
    for sgn in (1.0, -1.0):  # one-sided: (-3 f(x) + 4 f(x + s) - f(x + 2s)) / 2s
        s1 = sgn * h0 / 100.0
        f1, f2 = f(flat[j] + s1), f(flat[j] + 2 * s1)
        if finite(f1) and finite(f2):
            side = "forward" if sgn > 0 else "backward"
            return (-3 * f0 + 4 * f1 - f2) / (2 * s1), f"one-sided ({side}) difference, step {abs(s1):.3g}"
    return np.full(f0.shape, np.nan), "no finite-difference step stays inside the domain"


def _mismatch(ctx: _Context, analytic, numeric, k: int, r: int, c: int) -> Mismatch:
    lf, new = ctx.checked[k]
    a, n = float(analytic[k][r, c]), float(numeric[k][r, c])
    err = abs(a - n)
    # which output (and element of it) row r is
    o, off = 0, r
    while off >= ctx.out_sizes[o]:
        off -= ctx.out_sizes[o]
        o += 1
    out_shape = ctx.outs64[o].shape
    out_index = tuple(int(i) for i in np.unravel_index(off, out_shape)) if out_shape else ()
    index = tuple(int(i) for i in np.unravel_index(c, new.shape)) if new.shape else ()
    return Mismatch(lf.label, index, ctx.out_labels[o], out_index, a, n, err,
                    err / max(abs(a), abs(n), 1e-300))


def _kink_crossings(ctx: _Context, k: int, c: int, down: list[Tensor]) -> list[KinkNote]:
    lf, new = ctx.checked[k]
    x = ctx.feed_vals[new.id]
    flat = x.reshape(-1)
    h = KINK_STEPS * ctx.step(flat[c])
    sides = []
    for sgn in (1, -1):
        xs = flat.copy()
        xs[c] += sgn * h
        sides.append(ctx.interp.rerun(ctx.base, new, xs.reshape(x.shape), down))
    notes = []
    for node in down:
        b0 = _branch(node, ctx.base)
        if b0 is None:
            continue
        for vals in sides:
            b1 = _branch(node, vals)
            if b1 is not None and np.shape(b1) == np.shape(b0) and np.any(b1 != b0):
                at = ", ".join(str(int(q)) for q in np.unravel_index(c, x.shape))
                notes.append(KinkNote(node.op, node.source, _describe_branch_change(node, b0, b1, ctx.base),
                                      f"when {lf.label}[{at}] moves by {h:.2g}"))
                break
    return notes


# -- per-node localisation ------------------------------------------------------------------------
def _localize(ctx: _Context, report: GradcheckReport) -> Optional[NodeMismatch]:
    """The first node (in topological order) whose own VJP disagrees with finite differences of its
    forward, on the values it saw at the checked point."""
    on_path: set[int] = {new.id for _, new in ctx.checked}
    for node in ctx.interp.order:
        if any(i.id in on_path for i in node.inputs):
            on_path.add(node.id)
    for node in ctx.interp.order:
        if not node.inputs or node.id not in on_path:
            continue
        opdef = REGISTRY[node.op]
        if not opdef.differentiable or node.dtype.kind != "f":
            continue
        slots = [i for i, t in enumerate(node.inputs) if t.id in on_path and t.dtype.kind == "f"]
        if not slots:
            continue
        found = _check_node(ctx, node, slots)
        if found is not None:
            return found
    return None


def _check_node(ctx: _Context, node: Tensor, slots: list[int]) -> Optional[NodeMismatch]:
    opdef = REGISTRY[node.op]
    vals = [np.asarray(ctx.base[i.id]) for i in node.inputs]
    out_val = np.asarray(ctx.base[node.id])
    g = ctx.rng.standard_normal(out_val.shape)
    if opdef.vjp is None:
        return NodeMismatch(node.op, node.source, node.name, slots[0],
                            reason="the op has no VJP rule, so gradients cannot flow through it")
    # the op's VJP rule on fresh leaves holding the values the node saw
    phs = [Tensor("placeholder", (), {}, v.shape, t.dtype, name=f"_gc_n{i}", source=node.source)
           for i, (t, v) in enumerate(zip(node.inputs, vals))]
    try:
        out_t = Tensor(node.op, phs, node.attrs, out_val.shape, node.dtype, node.name, node.source)
        grads = opdef.vjp(constant(g.astype(node.dtype)), out_t, *phs, **node.attrs)
        grads = list(grads)
        if len(grads) != len(phs):
            return NodeMismatch(node.op, node.source, node.name, slots[0],
                                reason=f"its VJP returned {len(grads)} gradient(s) for {len(phs)} input(s)")
        wanted = [grads[i] for i in slots if grads[i] is not None]
        interp = _Interpreter(wanted)
        leafvals = {p.id: v for p, v in zip(phs, vals)}
        computed = interp.run(leafvals)
    except Exception as exc:  # noqa: BLE001
        return NodeMismatch(node.op, node.source, node.name, slots[0],
                            reason=f"applying its VJP raised {type(exc).__name__}: {exc}")
    forward = opdef.forward

    def value(args):
        with np.errstate(all="ignore"):
            return float(np.sum(np.asarray(forward(*args, **node.attrs), F64) * g))

    base_branch = _branch(node, {**{t.id: v for t, v in zip(node.inputs, vals)}, node.id: out_val})
    for i in slots:
        x = vals[i]
        gi = grads[i]
        a_full = np.zeros(x.shape) if gi is None else np.asarray(computed[gi.id], F64)
        if a_full.shape != x.shape:
            return NodeMismatch(node.op, node.source, node.name, i,
                                reason=f"its VJP returned a gradient of shape {a_full.shape} for input {i} of "
                                       f"shape {x.shape} (a missing un-broadcast or transpose?)")
        flat = x.reshape(-1)
        picks = np.arange(flat.size)
        if flat.size > _MAX_NODE_ELEMENTS:
            picks = np.sort(ctx.rng.choice(flat.size, _MAX_NODE_ELEMENTS, replace=False))
        for j in picks:
            h = ctx.step(flat[j])
            xp, xm = flat.copy(), flat.copy()
            xp[j] += h
            xm[j] -= h
            args_p = [*vals[:i], xp.reshape(x.shape).astype(x.dtype), *vals[i + 1:]]
            args_m = [*vals[:i], xm.reshape(x.shape).astype(x.dtype), *vals[i + 1:]]
            n = (value(args_p) - value(args_m)) / (xp[j] - xm[j])
            a = float(a_full.reshape(-1)[j])
            err = abs(a - n)
            if err <= ctx.atol + ctx.rtol * max(abs(a), abs(n)):
                continue
            if base_branch is not None and _node_crosses(node, vals, out_val, i, j, KINK_STEPS * h, base_branch):
                continue
            index = tuple(int(q) for q in np.unravel_index(j, x.shape)) if x.shape else ()
            return NodeMismatch(node.op, node.source, node.name, i, index, a, n, err,
                                err / max(abs(a), abs(n), 1e-300))
    return None


def _node_crosses(node, vals, out_val, i, j, h, base_branch) -> bool:
    opdef = REGISTRY[node.op]
    for sgn in (1, -1):
        x = vals[i].reshape(-1).copy()
        x[j] += sgn * h
        args = [*vals[:i], x.reshape(vals[i].shape), *vals[i + 1:]]
        with np.errstate(all="ignore"):
            out = np.asarray(opdef.forward(*args, **node.attrs), node.dtype)
        b = _branch(node, {**{t.id: v for t, v in zip(node.inputs, args)}, node.id: out})
        if b is not None and np.shape(b) == np.shape(base_branch) and np.any(b != base_branch):
            return True
    return False


# -- backends against each other (the third oracle in `graphc fuzz`) ------------------------------
def _targets(outputs, wrt, values) -> tuple:
    """The outputs and the gradient graphs of the first float scalar output w.r.t. `wrt` (default:
    the float leaves in `values`), with their names: what compare_backends compares."""
    from ..compiler.autodiff import grad
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    wrt = [t for t in values if t.dtype.kind == "f"] if wrt is None else list(wrt)
    scalar = [o for o in outs if o.shape == () and o.dtype.kind == "f"]
    grads = grad(scalar[0], wrt) if scalar and wrt else []
    names = [f"output{k}" for k in range(len(outs))] + [f"d/d{t.name or k}" for k, t in enumerate(wrt)][:len(grads)]
    return outs, outs + list(grads), names


# Inputs of a non-smooth op that differ between backends by less than this many roundings of the
# largest finite value of the forward pass are equal up to rounding (see rounding_branch_flip).
_ROUNDINGS = 64


def rounding_branch_flip(outputs: Union[Tensor, Sequence[Tensor]], values: Mapping, backends: Sequence[str],
                         wrt: Optional[Sequence[Tensor]] = None) -> Optional[str]:
    """Why two backends may disagree without either being wrong: the first non-smooth op (relu,
    clip, max, a comparison, ...) that takes another branch on one backend than on the other
    although the values it reads agree within rounding, i.e. within _ROUNDINGS units of the
    largest finite value in the graph. With edge values (1e30) a product can be rounding noise:
    relu(0.09375 * 1e30 - 0.09375 * 1e30) is relu(0) or relu(+-1e13) depending on whether the sum
    uses an FMA, and everything downstream of that relu follows. Also the first product or sum whose
    float32 terms overflow next to an infinity (_float32_overflow): inf on one backend, NaN on the
    other. None when no such op explains a difference (a branch switch whose inputs differ by more
    is a real disagreement)."""
    from ..compiler.runtime import compile as gcompile
    _, targets, _ = _targets(outputs, wrt, values)
    nodes = reachable(targets)
    inner = [n for n in nodes if n.inputs]
    leaves = {t.id: np.asarray(v) for t, v in values.items()}
    for n in nodes:
        if not n.inputs and n.id not in leaves and n.op in ("constant", "parameter"):
            leaves[n.id] = np.asarray(n.value)
    feeds = {t.name: v for t, v in values.items() if t.op == "placeholder"}
    per = []
    try:
        with np.errstate(all="ignore"):
            for b in backends:
                results = gcompile(inner, backend=b)(**feeds)
                per.append({**leaves, **{n.id: np.asarray(r) for n, r in zip(inner, results)}})
    except Exception:  # noqa: BLE001 - cannot look inside: the difference stays unexplained
        return None
    return _first_rounding_flip(inner, per, list(backends))


def _largest_finite(arrays: Iterable) -> float:
    """max(1, the largest |finite element| of the float arrays): the scale of rounding noise. An
    array holding 1e30 next to inf or NaN counts with its 1e30."""
    big = 1.0
    for v in map(np.asarray, arrays):
        if v.dtype.kind == "f" and v.size:
            with np.errstate(all="ignore"):
                big = max(big, float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)))
    return big


def _first_rounding_flip(inner: list, per: list, names: list) -> Optional[str]:
    """rounding_branch_flip on given values: per[k][node id] is backend names[k]'s value of each node
    (leaves included); inner are the non-leaf nodes in topological order."""
    f32 = any(v.dtype == np.float32 for v in per[0].values())
    big = _largest_finite(per[0].values())
    tol = _ROUNDINGS * float(np.finfo(np.float32 if f32 else np.float64).eps)
    first = per[0]

    def agree(a, b):
        if a is None or b is None:  # a leaf left out of the values: the same on every backend
            return True
        if a.dtype.kind != "f":
            return np.array_equal(a, b)
        return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=tol, atol=tol * big, equal_nan=True)

    for other, name in zip(per[1:], names[1:]):
        for n in inner:
            ins_agree = all(agree(first.get(i.id), other.get(i.id)) for i in n.inputs)
            if ins_agree and not agree(first.get(n.id), other.get(n.id)):
                note = _float32_overflow(n, first, other) or _amplified_noise(n, first, other)
                if note:
                    return f"{n.op} created at {n.source} {note} ({name} and {names[0]} differ there)"
            try:
                b0, b1 = _branch(n, first), _branch(n, other)
            except Exception:  # noqa: BLE001
                continue
            if b0 is None or b1 is None or np.shape(b0) != np.shape(b1):
                continue
            b0, b1 = np.asarray(b0), np.asarray(b1)
            flip = b0 != b1
            if b0.dtype.kind == "f":
                flip &= ~(np.isnan(b0) | np.isnan(b1))
            if not np.any(flip):
                continue
            if not ins_agree:
                return None
            return (f"{n.op} created at {n.source} takes another branch on {name} than on {names[0]} although "
                    f"its inputs agree within {_ROUNDINGS} roundings of {big:.3g}, the largest finite value")
    return None


def _float32_overflow(n: Tensor, first: dict, other: dict) -> Optional[str]:
    """Why a float32 product or sum may come out as inf on one backend and NaN (or the other
    infinity) on another from the same inputs: a partial sum of its finite terms leaves float32's
    range, and whether that overflow meets an infinity of the other sign depends on the precision
    and order in which the terms are accumulated (the NumPy backend accumulates float32 products
    in float64, the C GEMM in float32). The test: where the outputs differ, one of them is not
    finite and the op's forward on the absolute values of the finite inputs (infinities and NaN as
    0) and of its float attributes (matmul_update's alpha < 0 would otherwise cancel x against the
    product), in float64, exceeds float32's largest value. Only ops that combine many elements
    qualify; an elementwise op has no accumulation order to blame."""
    opdef = REGISTRY.get(n.op)
    if opdef is None or opdef.elementwise or n.dtype != np.float32:
        return None
    a, b = np.asarray(first[n.id]), np.asarray(other[n.id])
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    differ &= ~(np.isfinite(a) & np.isfinite(b))
    if not np.any(differ):
        return None
    args = []
    for i in n.inputs:
        v = np.asarray(first[i.id])
        if v.dtype.kind == "f":
            v = np.abs(np.where(np.isfinite(v), v.astype(np.float64), 0.0))
        args.append(v)
    try:
        with np.errstate(all="ignore"):
            attrs = {k: abs(v) if isinstance(v, float) else v for k, v in n.attrs.items()}
            bound = np.asarray(opdef.forward(*args, **attrs), dtype=np.float64)
    except Exception:  # noqa: BLE001
        return None
    if bound.shape != a.shape or not np.any(differ & (np.abs(bound) > float(np.finfo(np.float32).max))):
        return None
    return ("accumulates finite float32 terms beyond float32's range next to an infinity: inf or NaN "
            "there depends on the precision and order of accumulation")


def _amplified_noise(n: Tensor, first: dict, other: dict) -> Optional[str]:
    """An elementwise op that turns rounding noise in its inputs into a larger difference (the
    square of 0 against 3e14 beside 1e30, or x ** inf of a base just below and just above 1): where
    the outputs differ, some input already differs, within rounding. Where every input is the same
    on both backends and the outputs are not, the op itself disagrees: that explains nothing."""
    opdef = REGISTRY.get(n.op)
    if opdef is None or not opdef.elementwise:
        return None
    a, b = np.asarray(first[n.id]), np.asarray(other[n.id])
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    try:
        same_inputs = np.ones(a.shape, bool)
        for i in n.inputs:
            u, v = first.get(i.id), other.get(i.id)
            if u is None or v is None:
                continue
            u, v = np.broadcast_to(np.asarray(u), a.shape), np.broadcast_to(np.asarray(v), a.shape)
            same_inputs &= (u == v) | ((u != u) & (v != v))
    except ValueError:
        return None
    if not np.any(differ) or np.any(differ & same_inputs):
        return None
    return "amplifies rounding noise in its inputs (they differ only within rounding where its outputs differ)"


def compare_backends(outputs: Union[Tensor, Sequence[Tensor]], values: Mapping, backends: Iterable[str],
                     wrt: Optional[Sequence[Tensor]] = None, rtol: Optional[float] = None,
                     atol: Optional[float] = None) -> Optional[str]:
    """Run outputs and their gradients (w.r.t. `wrt`, default the float leaves in `values`) on each
    backend, in the graph's own dtype; None when all agree, else a message naming the first
    difference. Tolerances default by dtype (any float32 node: rtol 1e-3, atol 1e-4; else 1e-7, 1e-9), atol
    scaled by the largest finite intermediate value of the outputs' and the gradients' graphs.

        >>> import numpy as np, graphc as gc
        >>> x = gc.placeholder("x", (3,), "float64")
        >>> compare_backends(gc.tanh(x).sum(), {x: np.ones(3)}, ["numpy", "numpy"]) is None
        True
    """
    from ..compiler.runtime import compile as gcompile
    outs, targets, names = _targets(outputs, wrt, values)
    feeds = {t.name: v for t, v in values.items() if t.op == "placeholder"}
    results = {}
    for b in backends:
        results[b] = gcompile(targets, backend=b)(**feeds)
    nodes = reachable(targets)
    f32 = any(n.dtype == np.float32 for n in nodes)
    rt = rtol if rtol is not None else (1e-3 if f32 else 1e-7)
    at = atol if atol is not None else (1e-4 if f32 else 1e-9)
    # rounding differences scale with the largest finite intermediate value, not with the result,
    # of the forward pass and of the gradients' own graphs (d/dx of erf(x) / x at x = 1e-30
    # subtracts two 1.1e30 terms), as in rounding_branch_flip; an array holding 1e30 next to inf
    # counts with its 1e30
    with np.errstate(all="ignore"):
        vals = _Interpreter(targets).run({t.id: np.asarray(v) for t, v in values.items()})
        big = _largest_finite(vals.values())
    ref_name = next(iter(results))
    ref = results[ref_name]
    for b, res in results.items():
        if b == ref_name:
            continue
        for name, t, x, y in zip(names, targets, ref, res):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape:
                return f"{name}: shape {x.shape} on {ref_name} but {y.shape} on {b}"
            if x.dtype.kind != "f":
                if not np.array_equal(x, y):
                    return f"{name}: values differ between {ref_name} and {b}"
                continue
            close = np.isclose(x, y, rtol=rt, atol=at * big, equal_nan=True)
            if not np.all(close):
                idx = tuple(int(i) for i in np.argwhere(~close)[0])
                return (f"{name} ({t.op} created at {t.source}): {ref_name} gives {x[idx]!r} but {b} gives "
                        f"{y[idx]!r} at {list(idx)}")
    return None
