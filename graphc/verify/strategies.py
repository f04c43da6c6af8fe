"""Hypothesis strategies for testing graphc and graphs built with it (needs `hypothesis`).

    from graphc.testing import arrays_for, arrays_in, graphs, reproducer

- ``arrays_in(domain, shape, dtype)``: one array inside an op input's Domain (positive for log
  and sqrt, away from kinks such as ReLU's 0, values far apart where ties matter).
- ``arrays_for(op)``: an OpCase: input arrays and attributes that op accepts (matching shapes,
  broadcasting, labels in range, conv/pool windows that fit), drawn in float32 and float64.
- ``graphs(max_nodes=..., ops=...)``: random DAGs built from the op registry (broadcasting,
  fan-out, reused subexpressions, several inputs, gradients of gradients) ending in a scalar,
  with input values drawn inside every domain they meet.
- ``reproducer(graph)``: a standalone Python script rebuilding a graph (in graphc source code)
  with its input values and re-running the check; ``check_graph`` is that check (every backend
  against float64 finite differences, and the backends against each other).

This module is imported on demand (``import graphc.testing``): graphc itself does not need
hypothesis.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..ir.errors import GraphError
from ..ir.graph import reachable
from ..ir.tensor import Tensor, constant
from ..ops import REGISTRY, Domain, apply
from ..ops.elementwise import ACTIVATIONS
from .gradcheck import GradcheckReport, compare_backends, gradcheck, rounding_branch_flip

__all__ = ["arrays_in", "arrays_for", "OpCase", "CASES", "GRAPH_BUILDERS", "COMPOSITES", "fuzz_attrs", "graphs",
           "RandomGraph", "GRAPH_OPS", "reproducer", "prune",
           "check_graph", "GraphCheck", "slot_domain", "LEAVES", "no_vjp_ops", "FLOAT_DTYPES"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LEAVES = ("placeholder", "parameter", "constant")
KINK_MARGIN = 0.05  # drawn values keep at least this far from a kink
_F64 = np.dtype(np.float64)


# -- values inside a Domain -------------------------------------------------------------------
def _repair_kinks(v: np.ndarray, kinks: Iterable[float], margin: float = KINK_MARGIN) -> np.ndarray:
    for k in kinks:
        near = np.abs(v - k) < margin
        if np.any(near):
            v = np.where(near, k + np.where(v >= k, margin, -margin), v)
    return v


@st.composite
def arrays_in(draw, domain: Optional[Domain] = None, shape: Sequence[int] = (), dtype="float64",
              kinks: Sequence[float] = (), distinct: Optional[bool] = None) -> np.ndarray:
    """A strategy for one array of `shape` and `dtype` inside `domain`.

    kind "positive"/"unit": values in [low, high]; "nonzero": |v| in [low, high], either sign;
    "real": [low, high]. Values stay KINK_MARGIN away from the domain's kinks (and `kinks`), and
    are far apart from each other (at least (high - low) / (2·size)) when distinct.

        >>> from hypothesis import given
        >>> from graphc.ops import REGISTRY
        >>> @given(arrays_in(REGISTRY["log"].input_domain(0), (3, 2), "float32"))
        ... def test(x):
        ...     assert x.dtype == np.float32 and (x > 0).all()
        >>> test()
    """
    domain = Domain() if domain is None else domain
    dt = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    distinct = domain.distinct if distinct is None else distinct
    low, high = float(domain.low), float(domain.high)
    if high <= low:
        high = low + 1.0
    if dt.kind in "iu":
        return draw(hnp.arrays(dt, shape, elements=st.integers(int(math.ceil(low)), int(math.floor(high)))))
    if dt.kind == "b":
        return draw(hnp.arrays(dt, shape))
    if distinct and n > 1:
        perm = np.array(draw(st.permutations(range(n))), dtype=np.float64)
        jitter = draw(hnp.arrays(np.float64, (n,), elements=st.floats(0.0, 0.5)))
        v = low + (perm + 0.25 + jitter) * ((high - low) / n)
    else:
        v = draw(hnp.arrays(np.float64, (n,), elements=st.floats(low, high, allow_nan=False,
                                                                 allow_infinity=False)))
    if domain.kind == "nonzero":
        low = max(low, 1e-3)
        v = np.clip(np.abs(v), low, None) if low > 0 else v
        signs = draw(hnp.arrays(np.bool_, (n,)))
        v = np.where(signs, -v, v)
    v = _repair_kinks(v, tuple(domain.kinks) + tuple(kinks))
    return v.reshape(shape).astype(dt)


# -- the domain of one input slot -------------------------------------------------------------------
def slot_domain(op: str, slot: int, attrs: Optional[dict] = None) -> Domain:
    """The Domain an input slot's values must be drawn from (the registry's, for these attributes)."""
    return REGISTRY[op].input_domain(slot, attrs)


def _merge(domains: Sequence[Domain]) -> Domain:
    if not domains:
        return Domain()
    kinds = {d.kind for d in domains}
    low, high = max(d.low for d in domains), min(d.high for d in domains)
    kind = "real"
    for k in ("unit", "positive", "nonzero", "bounded"):
        if k in kinds:
            kind = k
            break
    if kind in ("unit", "positive"):
        low = max(low, min(d.low for d in domains if d.kind == kind))
    if kind == "nonzero" and "real" in kinds:
        high = max(high, 0.5)
    if high <= low:
        high = low + 1.0
    kinks = tuple(sorted({k for d in domains for k in d.kinks}))
    return Domain(kind, kinks, any(d.distinct for d in domains), low, high)


# -- OpCase: one op's inputs and attributes ----------------------------------------------------------
@dataclass
class OpCase:
    """Inputs and attributes for one op. ``loss(*float_tensors)`` builds a scalar from the op's
    output (weighted by fixed random cotangents), ready for gc.gradcheck:

        >>> import graphc as gc
        >>> case = OpCase("mul", [np.ones((2, 3)), np.arange(3.0)], {})
        >>> bool(gc.gradcheck(case.loss, case.float_inputs))
        True
    """
    op: str
    inputs: list
    attrs: dict
    apply_as: Optional[str] = None  # build a different registered op (a copy) with these inputs

    @property
    def float_inputs(self) -> list:
        return [a for a in self.inputs if np.asarray(a).dtype.kind == "f"]

    @property
    def dtype(self) -> np.dtype:
        fl = self.float_inputs
        return np.result_type(*fl) if fl else _F64

    def build(self, *float_tensors: Tensor) -> Tensor:
        """The op's node, with the float inputs given as Tensors (the others become constants)."""
        it = iter(float_tensors)
        ins = [next(it) if np.asarray(a).dtype.kind == "f" else constant(a) for a in self.inputs]
        return apply(self.apply_as or self.op, ins, **self.attrs)

    def loss(self, *float_tensors: Tensor) -> Tensor:
        out = self.build(*float_tensors)
        dt = out.dtype if out.dtype.kind == "f" else self.dtype
        if out.dtype.kind != "f":
            out = apply("cast", [out], dtype=dt)
        shape = tuple(out.shape)
        weights = np.random.default_rng(len(shape) * 7 + 1).uniform(-1.0, 1.0, shape).astype(dt)
        y = apply("mul", [out, constant(weights)])
        return apply("sum", [y], axes=tuple(range(len(shape))), keepdims=False)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{np.asarray(a).dtype}{list(np.shape(a))}" for a in self.inputs)
        return f"OpCase({self.op}({shapes}), attrs={self.attrs})"


def _dtype(draw, dtype) -> np.dtype:
    if dtype is None:
        return draw(st.sampled_from(FLOAT_DTYPES))
    if isinstance(dtype, st.SearchStrategy):
        return np.dtype(draw(dtype))
    return np.dtype(dtype)


def _shape(draw, min_dims=0, max_dims=3, max_side=4, min_side=1) -> tuple:
    return tuple(draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                       max_side=max_side)))


def _vals(draw, op, slot, shape, dt, attrs=None, **over) -> np.ndarray:
    d = slot_domain(op, slot, attrs)
    if over:
        d = Domain(over.get("kind", d.kind), over.get("kinks", d.kinks), over.get("distinct", d.distinct),
                   over.get("low", d.low), over.get("high", d.high))
    return draw(arrays_in(d, shape, dt))


def _distinct_pool(draw, shapes, dt, low=-3.0, high=3.0) -> list:
    """Arrays whose values are all different from one another (ties between inputs matter)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    pool = draw(arrays_in(Domain(low=low, high=high, distinct=True), (max(sum(sizes), 1),), dt))
    out, k = [], 0
    for s, n in zip(shapes, sizes):
        out.append(pool[k:k + n].reshape(s))
        k += n
    return out


def _axes(draw, ndim) -> Optional[tuple]:
    if ndim == 0 or draw(st.booleans()):
        return tuple(range(ndim))
    return tuple(sorted(draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim))))


def _reshape_target(draw, shape) -> tuple:
    n = int(np.prod(shape, dtype=np.int64))
    cands = [(n,), (1, n), (n, 1), tuple(shape[::-1]) or (1,)]
    divs = [d for d in range(2, n) if n % d == 0]
    if divs:
        d = draw(st.sampled_from(divs))
        cands += [(d, n // d), (d, -1), (-1, d)]
    cands.append((-1,))
    target = draw(st.sampled_from(cands))
    return target if tuple(target) != tuple(shape) else (-1,) if len(shape) != 1 else (1, n)


def fuzz_attrs(draw, op: str) -> dict:
    """Attribute values for `op`, drawn from its registry entry's `fuzz_attrs` (candidates per
    attribute, or a callable given a `draw_from(candidates)` function)."""
    spec = REGISTRY[op].fuzz_attrs
    if callable(spec):
        return dict(spec(lambda candidates: draw(st.sampled_from(tuple(candidates)))))
    return {name: draw(st.sampled_from(tuple(values))) for name, values in spec.items()}


# each case function: (draw, dt, op, max_side) -> (inputs, attrs); CASES maps OpDef.fuzz to one
def _case_unary(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    attrs = fuzz_attrs(draw, op)
    return [_vals(draw, op, 0, shape, dt, attrs)], attrs


def _case_size_of(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    attrs = {"axes": _axes(draw, len(shape)), "dtype": dt}
    return [_vals(draw, op, 0, shape, dt, attrs)], attrs


def _case_binary(draw, dt, op, ms):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=ms)).input_shapes
    if slot_domain(op, 0).distinct or slot_domain(op, 1).distinct:  # ties are kinks (max) or flips (<)
        return _distinct_pool(draw, shapes, dt), {}
    return [_vals(draw, op, k, s, dt) for k, s in enumerate(shapes)], {}


def _case_where(draw, dt, op, ms):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=ms)).input_shapes
    cond = draw(hnp.arrays(np.bool_, shapes[0]))
    return [cond, _vals(draw, op, 1, shapes[1], dt), _vals(draw, op, 2, shapes[2], dt)], {}


def _case_reduce(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    x = _vals(draw, op, 0, shape, dt)
    return [x], {"axes": _axes(draw, len(shape)), "keepdims": draw(st.booleans())}


def _case_argmax(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    return [_vals(draw, op, 0, shape, dt)], {"axis": draw(st.integers(0, len(shape) - 1))}


def _case_sum_to(draw, dt, op, ms):
    like = _shape(draw, max_side=ms)
    grown = tuple(draw(st.integers(1, ms)) if d == 1 else d for d in like)
    lead = _shape(draw, max_dims=2, max_side=ms)
    g = lead + grown
    return [_vals(draw, op, 0, g, dt), _vals(draw, op, 1, like, dt)], {}


def _case_broadcast_like(draw, dt, op, ms):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=ms)).input_shapes
    return [_vals(draw, op, 0, shapes[0], dt), _vals(draw, op, 1, shapes[1], dt)], {}


def _case_activation_grad(draw, dt, op, ms):
    attrs = fuzz_attrs(draw, op)
    # y and g broadcast against each other (the VJP un-broadcasts both)
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=ms)).input_shapes
    return [_vals(draw, op, 0, shapes[0], dt, attrs), _vals(draw, op, 1, shapes[1], dt)], attrs


def _case_reshape(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    target = _reshape_target(draw, shape)
    return [_vals(draw, op, 0, shape, dt)], {"shape": tuple(int(d) for d in target)}


def _case_reshape_like(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    target = _reshape_target(draw, shape)
    n = int(np.prod(shape))
    like = tuple(n // int(np.prod([d for d in target if d != -1])) if d == -1 else d for d in target)
    return [_vals(draw, op, 0, shape, dt), _vals(draw, op, 1, like, dt)], {}


def _case_transpose(draw, dt, op, ms):
    shape = _shape(draw, min_dims=2, max_side=ms)
    perm = tuple(draw(st.permutations(range(len(shape)))))
    assume(perm != tuple(range(len(shape))))
    return [_vals(draw, op, 0, shape, dt)], {"axes": perm}


def _case_expand_dims(draw, dt, op, ms):
    shape = _shape(draw, max_dims=2, max_side=ms)
    k = draw(st.integers(1, 2))
    axes = tuple(sorted(draw(st.sets(st.integers(0, len(shape) + k - 1), min_size=k, max_size=k))))
    return [_vals(draw, op, 0, shape, dt)], {"axes": axes}


def _case_squeeze(draw, dt, op, ms):
    shape = list(_shape(draw, max_dims=2, max_side=ms))
    k = draw(st.integers(1, 2))
    for _ in range(k):
        shape.insert(draw(st.integers(0, len(shape))), 1)
    ones = [i for i, d in enumerate(shape) if d == 1]
    axes = tuple(sorted(draw(st.sets(st.sampled_from(ones), min_size=1))))
    return [_vals(draw, op, 0, tuple(shape), dt)], {"axes": axes}


def _concat_parts(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    axis = draw(st.integers(0, len(shape) - 1))
    k = draw(st.integers(1, 3))
    shapes = [shape[:axis] + (draw(st.integers(1, ms)),) + shape[axis + 1:] for _ in range(k)]
    return shape, axis, shapes, [_vals(draw, op, 0, s, dt) for s in shapes]


def _case_concatenate(draw, dt, op, ms):
    _, axis, _, xs = _concat_parts(draw, dt, op, ms)
    return xs, {"axis": axis}


def _case_concat_slice(draw, dt, op, ms):
    shape, axis, shapes, xs = _concat_parts(draw, dt, op, ms)
    g = _vals(draw, op, 0, shape[:axis] + (sum(s[axis] for s in shapes),) + shape[axis + 1:], dt)
    return [g, *xs], {"axis": axis, "index": draw(st.integers(0, len(xs) - 1))}


def _case_matmul(draw, dt, op, ms, ranks=((2, 2), (2, 2), (1, 2), (2, 1), (1, 1))):
    m, k, n = (draw(st.integers(1, ms)) for _ in range(3))
    a_nd, b_nd = draw(st.sampled_from(ranks))
    ta = a_nd == 2 and draw(st.booleans())
    tb = b_nd == 2 and draw(st.booleans())
    a_shape = ((k, m) if ta else (m, k)) if a_nd == 2 else (k,)
    b_shape = ((n, k) if tb else (k, n)) if b_nd == 2 else (k,)
    ins = [_vals(draw, op, 0, a_shape, dt), _vals(draw, op, 1, b_shape, dt)]
    return ins, {"trans_a": bool(ta), "trans_b": bool(tb)}


def _case_dense(draw, dt, op, ms):
    ins, attrs = _case_matmul(draw, dt, op, ms, ranks=((2, 2),))
    act = draw(st.sampled_from(ACTIVATIONS))
    attrs.update(act=act, alpha=0.1 if act == "leaky_relu" else 0.0)
    if draw(st.booleans()):
        n = ins[1].shape[0] if attrs["trans_b"] else ins[1].shape[1]
        ins.append(_vals(draw, op, 2, (n,), dt))
    return ins, attrs


def _case_matmul_update(draw, dt, op, ms):
    """matmul_update(a, b, x; alpha): x of the product's shape (the epilogue reads it elementwise)."""
    ins, attrs = _case_matmul(draw, dt, op, ms, ranks=((2, 2),))
    m = ins[0].shape[1] if attrs["trans_a"] else ins[0].shape[0]
    n = ins[1].shape[0] if attrs["trans_b"] else ins[1].shape[1]
    ins.append(_vals(draw, op, 2, (m, n), dt))
    attrs["alpha"] = draw(st.sampled_from([-0.1, 1.0, 0.0, 2.5]))
    return ins, attrs


def _case_matmul_act_grad(draw, dt, op, ms):
    """matmul_act_grad(a, b, y; act, alpha): y (the activation's output) with values at the kink."""
    from ..ops.fused import GATE_ACTS
    ins, attrs = _case_matmul(draw, dt, op, ms, ranks=((2, 2),))
    act = draw(st.sampled_from(GATE_ACTS))
    attrs.update(act=act, alpha=0.1 if act == "leaky_relu" else 0.0)
    m = ins[0].shape[1] if attrs["trans_a"] else ins[0].shape[0]
    n = ins[1].shape[0] if attrs["trans_b"] else ins[1].shape[1]
    ins.append(_vals(draw, op, 2, (m, n), dt, attrs))
    return ins, attrs


def _case_softmax(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    attrs = {"axis": draw(st.integers(0, len(shape) - 1)), "log": draw(st.booleans())}
    return [_vals(draw, op, 0, shape, dt)], attrs


def _case_softmax_grad(draw, dt, op, ms):
    (y,), attrs = _case_softmax(draw, dt, op, ms)
    if not attrs["log"]:  # y is a softmax output in practice; any values are valid for the VJP
        y = np.abs(y).astype(dt)
    return [y, _vals(draw, op, 1, y.shape, dt)], attrs


def _labels(draw, n, c) -> np.ndarray:
    return np.asarray(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)


def _case_classification(draw, dt, op, ms):
    n, c = draw(st.integers(1, ms)), draw(st.integers(1, ms))
    ins = [_vals(draw, op, 0, (n, c), dt), _labels(draw, n, c)]
    if REGISTRY[op].arity == 3:  # a backward op: the upstream gradient is a scalar
        ins.append(_vals(draw, op, 2, (), dt))
    return ins, {}


def _case_one_hot(draw, dt, op, ms):
    shape = _shape(draw, max_dims=2, max_side=ms)
    c = draw(st.integers(1, ms))
    labels = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, c - 1)))
    return [labels], {"classes": c, "dtype": dt}


def _case_bce(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    ins = [_vals(draw, op, 0, shape, dt), _vals(draw, op, 1, shape, dt)]
    if REGISTRY[op].arity == 3:  # a backward op: the upstream gradient is a scalar
        ins.append(_vals(draw, op, 2, (), dt))
    return ins, {}


def _case_dropout(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    p = draw(st.sampled_from([0.25, 0.5]))
    if draw(st.booleans()):
        return [_vals(draw, op, 0, shape, dt), np.asarray(draw(st.integers(0, 1000)), np.int64)], \
            {"p": p, "seed": None}
    return [_vals(draw, op, 0, shape, dt)], {"p": p, "seed": draw(st.integers(0, 1000))}


def _conv_geometry(draw, ms):
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(2, max(ms, 3) + 1)), draw(st.integers(2, max(ms, 3) + 1))
    kh, kw = draw(st.integers(1, min(h, 3))), draw(st.integers(1, min(w, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    oh, ow = (h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1
    return (n, c, h, w), (o, c, kh, kw), (n, o, oh, ow), stride, padding


def _case_conv(draw, dt, op, ms):
    xs, ws, ys, stride, padding = _conv_geometry(draw, ms)
    attrs = {"stride": stride, "padding": padding}
    x, w = _vals(draw, op, 0, xs, dt), _vals(draw, op, 1, ws, dt)
    if REGISTRY[op].arity != 3:  # the forward, with an optional bias
        ins = [x, w] + ([_vals(draw, op, 2, (ws[0],), dt)] if draw(st.booleans()) else [])
        return ins, attrs
    return [x, w, _vals(draw, op, 2, ys, dt)], attrs


def _case_pool(draw, dt, op, ms):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, max(ms, 3) + 1)), draw(st.integers(1, max(ms, 3) + 1))
    kernel = (draw(st.integers(1, min(h, 3))), draw(st.integers(1, min(w, 3))))
    stride = (draw(st.integers(1, kernel[0])), draw(st.integers(1, kernel[1])))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    distinct = slot_domain(op, 0).distinct or REGISTRY[op].branch is not None  # max-pool ties are kinks
    x = _distinct_pool(draw, [(n, c, h, w)], dt)[0] if distinct else _vals(draw, op, 0, (n, c, h, w), dt)
    if REGISTRY[op].arity == 2:  # a backward op: x and the output's gradient
        return [x, _vals(draw, op, 1, (n, c, oh, ow), dt)], attrs
    return [x], attrs


def _case_fused_elementwise(draw, dt, op, ms):
    shape = _shape(draw, max_side=ms)
    program = (("mul", (0, 1), None), ("tanh", (2,), None))
    return [_vals(draw, op, 0, shape, dt), _vals(draw, op, 1, shape, dt)], \
        {"program": program, "shape": shape, "dtype": dt}


def _case_pad(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
    return [_vals(draw, op, 0, shape, dt)], {"pads": pads, "value": draw(st.sampled_from([0.0, -1.5]))}


def _case_slice(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    index = []
    for d in shape:
        start, stop = draw(st.integers(-d, d - 1)), draw(st.one_of(st.none(), st.integers(-d, d)))
        step = draw(st.sampled_from([1, 1, 2, -1, -2]))
        assume(len(range(*slice(start, stop, step).indices(d))) > 0)
        index.append((start, stop, step))
    index = tuple(index)
    x = _vals(draw, op, 0, shape, dt)
    if op == "slice_grad":
        out = x[tuple(slice(*t) for t in index)]
        return [_vals(draw, op, 0, out.shape, dt), x], {"index": index}
    return [x], {"index": index}


def _case_grouped_conv(draw, dt, op, ms):
    groups = draw(st.integers(2, 3))
    (n, c, h, w), (o, _, kh, kw), (_, _, oh, ow), stride, padding = _conv_geometry(draw, ms)
    xs, ws, ys = (n, c * groups, h, w), (o * groups, c, kh, kw), (n, o * groups, oh, ow)
    attrs = {"stride": stride, "padding": padding, "groups": groups}
    x, wv = _vals(draw, op, 0, xs, dt), _vals(draw, op, 1, ws, dt)
    if op == "grouped_conv2d":
        return [x, wv] + ([_vals(draw, op, 2, (ws[0],), dt)] if draw(st.booleans()) else []), attrs
    return [x, wv, _vals(draw, op, 2, ys, dt)], attrs


def _indices(draw, size: int) -> np.ndarray:
    """Integer indices into an axis of `size`, negative ones and repeats included."""
    n = draw(st.integers(1, 4))
    return np.asarray(draw(st.lists(st.integers(-size, size - 1), min_size=n, max_size=n)), np.int64)


def _case_take(draw, dt, op, ms):
    shape = _shape(draw, min_dims=1, max_side=ms)
    axis = draw(st.integers(0, len(shape) - 1))
    idx = _indices(draw, shape[axis])
    x = _vals(draw, op, 0, shape, dt)
    if REGISTRY[op].arity == 3:  # take_grad(g, idx, like)
        out = np.take(x, idx, axis=axis)
        return [_vals(draw, op, 0, out.shape, dt), idx, x], {"axis": axis}
    return [x, idx], {"axis": axis}


CASES: dict[str, Callable] = {
    "unary": _case_unary, "size_of": _case_size_of, "binary": _case_binary, "where": _case_where,
    "reduce": _case_reduce, "argmax": _case_argmax, "sum_to": _case_sum_to, "broadcast_like": _case_broadcast_like,
    "activation_grad": _case_activation_grad, "reshape": _case_reshape, "reshape_like": _case_reshape_like,
    "transpose": _case_transpose, "expand_dims": _case_expand_dims, "squeeze": _case_squeeze,
    "concatenate": _case_concatenate, "concat_slice": _case_concat_slice, "matmul": _case_matmul,
    "dense": _case_dense, "matmul_update": _case_matmul_update, "matmul_act_grad": _case_matmul_act_grad,
    "softmax": _case_softmax, "softmax_grad": _case_softmax_grad,
    "classification": _case_classification, "one_hot": _case_one_hot, "bce": _case_bce, "dropout": _case_dropout,
    "conv": _case_conv, "pool": _case_pool, "fused_elementwise": _case_fused_elementwise,
    "pad": _case_pad, "slice": _case_slice, "grouped_conv": _case_grouped_conv, "take": _case_take,
}
"""OpDef.fuzz (a case kind) -> case function (draw, dtype, op, max_side) -> (inputs, attrs).
A new op names an existing kind in its registry entry, or adds a kind here."""


def _case_fn(op: str) -> Callable:
    kind = REGISTRY[op].fuzz if op in REGISTRY else None
    if kind in CASES:
        return CASES[kind]
    raise ValueError(f"graphc.testing has no strategy for op {op!r} (fuzz kind {kind!r}); give its OpDef a "
                     f"`fuzz` kind from graphc.testing.CASES (or pass like='<similar op>')")


def arrays_for(op: str, *, dtype=None, like: Optional[str] = None, max_side: int = 4) -> st.SearchStrategy:
    """A strategy for OpCase(op, inputs, attrs): arrays (and attributes) that `op` accepts.

    Values lie inside each input's declared domain (positive for log/sqrt, away from kinks, far
    apart where ties matter); shapes fit the op (broadcasting pairs, matmul inner sizes, conv and
    pooling windows, labels in range). dtype: None draws float32 and float64; like: draw as for
    another op (for a registered copy of an op).

        >>> import graphc as gc
        >>> from hypothesis import given, settings
        >>> @settings(max_examples=5, deadline=None)
        ... @given(arrays_for("log"))
        ... def test_log_gradient(case):
        ...     assert gc.gradcheck(case.loss, case.float_inputs)
        >>> test_log_gradient()
    """
    if op not in REGISTRY:
        raise ValueError(f"unknown op {op!r}")
    if op in LEAVES:
        raise ValueError(f"{op!r} is a leaf, not an op with inputs")
    fn = _case_fn(like or op)

    @st.composite
    def cases(draw):
        dt = _dtype(draw, dtype)
        inputs, attrs = fn(draw, dt, like or op, max_side)
        return OpCase(like or op, list(inputs), dict(attrs), apply_as=op if like else None)

    return cases()


def no_vjp_ops() -> list[str]:
    """Registered ops marked differentiable that have no VJP rule (gradients cannot flow through)."""
    return sorted(n for n, d in REGISTRY.items() if n not in LEAVES and d.differentiable and d.vjp is None)


# -- random graphs --------------------------------------------------------------------------------
@dataclass
class RandomGraph:
    """A random graph ending in a scalar `output`, its input placeholders and their `values`."""
    output: Tensor
    inputs: list
    values: dict
    dtype: np.dtype
    terms: list = field(default_factory=list)  # the scalar terms summed into output

    @property
    def nodes(self) -> list:
        return [n for n in reachable([self.output]) if n.inputs]

    @property
    def ops(self) -> set:
        return {n.op for n in self.nodes}

    def gradcheck(self, **kwargs) -> GradcheckReport:
        return gradcheck(self.output, self.values, **kwargs)

    def code(self) -> str:
        return _emit_graph([self.output], self.values)[0]

    def __repr__(self) -> str:
        return (f"RandomGraph({len(self.nodes)} nodes, {len(self.inputs)} inputs, {self.dtype}):\n"
                + self.code())


def _assemble(terms: list) -> Tensor:
    out = terms[0]
    for t in terms[1:]:
        if t.dtype != out.dtype:
            t = apply("cast", [t], dtype=out.dtype)
        out = apply("add", [out, t])
    return out


def _with_terms(g: RandomGraph, terms: list) -> RandomGraph:
    out = _assemble(terms)
    reach = {n.id for n in reachable([out])}
    inputs = [t for t in g.inputs if t.id in reach]
    new = RandomGraph(out, inputs, {t: v for t, v in g.values.items() if t.id in reach}, g.dtype, list(terms))
    _name_nodes(new)
    return new


def prune(g: RandomGraph, fails: Callable[[RandomGraph], bool]) -> RandomGraph:
    """Drop the output's terms that a failure does not need (greedy, after hypothesis's shrinking,
    which cannot delete a step from the middle of a graph).

        >>> import graphc as gc
        >>> x = gc.placeholder("x", (), "float64")
        >>> terms = [gc.exp(x), gc.tanh(x) * 0.0]
        >>> g = RandomGraph(terms[0] + terms[1], [x], {x: np.array(0.5)}, np.dtype("float64"), terms)
        >>> len(prune(g, lambda c: "exp" in c.ops).nodes)
        1
    """
    terms = list(g.terms)
    k = 0
    while len(terms) > 1 and k < len(terms):
        trial = terms[:k] + terms[k + 1:]
        if fails(_with_terms(g, trial)):
            terms = trial
        else:
            k += 1
    return _with_terms(g, terms) if len(terms) < len(g.terms) else g


class _Builder:
    def __init__(self, draw, dt: np.dtype, max_side: int):
        self.draw, self.dt, self.ms = draw, dt, max_side
        self.pool: list[Tensor] = []  # operands available to later ops
        self.leaves: list[Tensor] = []

    def new_input(self, shape) -> Tensor:
        t = Tensor("placeholder", (), {}, tuple(shape), self.dt, name=f"x{len(self.leaves)}", source="<input>")
        self.leaves.append(t)
        self.pool.append(t)
        return t

    def const(self, value) -> Tensor:
        return constant(np.asarray(value))

    def scalar(self, v: float) -> Tensor:
        return constant(np.asarray(v, dtype=self.dt))

    def pick(self, pred: Callable[[Tensor], bool] = lambda t: True) -> Optional[Tensor]:
        cands = [t for t in self.pool if t.dtype.kind == "f" and pred(t)]
        if not cands:
            return None
        return cands[self.draw(st.integers(0, len(cands) - 1))]

    def adapt(self, t: Tensor, dom: Domain) -> Tensor:
        """Map a computed (non-leaf) operand into a domain; leaves get suitable values instead."""
        if t.op == "placeholder":
            return t
        if dom.kind in ("positive", "nonzero"):
            return apply("add", [apply("mul", [t, t]), self.scalar(0.5)])
        if dom.kind == "unit":
            return apply("add", [apply("mul", [apply("sigmoid", [t]), self.scalar(0.9)]), self.scalar(0.05)])
        if dom.kind == "bounded":  # e.g. exp's argument: a computed value must not overflow it
            return apply("mul", [apply("tanh", [t]), self.scalar(max(abs(dom.low), abs(dom.high)))])
        return t


def _broadcastable(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _g_unary(b: _Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    attrs = fuzz_attrs(b.draw, op)
    return apply(op, [b.adapt(x, slot_domain(op, 0, attrs))], **attrs)


def _g_size_of(b: _Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    return apply(op, [x], axes=_axes(b.draw, x.ndim), dtype=b.dt)


def _g_binary(b: _Builder, op: str):
    a = b.pick()
    if a is None:
        return None
    c = b.pick(lambda t: _broadcastable(t.shape, a.shape))
    out = apply(op, [b.adapt(a, slot_domain(op, 0)), b.adapt(c, slot_domain(op, 1))])
    return out if out.dtype.kind == "f" else apply("cast", [out], dtype=b.dt)  # comparisons: 0/1 values


def _comparisons() -> list:
    return sorted(n for n, op in REGISTRY.items() if op.fuzz == "binary" and not op.differentiable)


def _g_where(b: _Builder, op: str):
    c1 = b.pick()
    if c1 is None:
        return None
    c2 = b.pick(lambda t: _broadcastable(t.shape, c1.shape))
    cond = apply(b.draw(st.sampled_from(_comparisons())), [c1, c2])
    x = b.pick(lambda t: _broadcastable(t.shape, cond.shape))
    x = c1 if x is None else x
    y = b.pick(lambda t: _broadcastable(t.shape, np.broadcast_shapes(cond.shape, x.shape)))
    y = c2 if y is None else y
    return apply(op, [cond, x, y])


def _g_reduce(b: _Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    axes = _axes(b.draw, x.ndim)
    keep = b.draw(st.booleans())
    if op == "mean":  # a composite: sum / size_of
        from ..ops import mean
        return mean(x, axes, keep)
    return apply(op, [x], axes=axes, keepdims=keep)


def _g_argmax(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    return apply("cast", [apply(op, [x], axis=b.draw(st.integers(0, x.ndim - 1)))], dtype=b.dt)


def _g_one_hot(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    labels = apply("argmax", [x], axis=x.ndim - 1)
    return apply(op, [labels], classes=int(x.shape[-1]), dtype=b.dt)


def _g_softmax(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    return apply("softmax" if op == "log_softmax" else op, [x], axis=b.draw(st.integers(0, x.ndim - 1)),
                   log=op == "log_softmax" or b.draw(st.booleans()))


def _g_transpose(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 2)
    if x is None:
        return None
    perm = tuple(b.draw(st.permutations(range(x.ndim))))
    if perm == tuple(range(x.ndim)):
        perm = perm[::-1]
    return apply(op, [x], axes=perm)


def _g_reshape(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    target = _reshape_target(b.draw, x.shape)
    return apply(op, [x], shape=tuple(int(d) for d in target))


def _g_squeeze(b: _Builder, op: str):
    x = b.pick(lambda t: 1 in t.shape)
    if x is None:
        return None
    axes = tuple(sorted(b.draw(st.sets(st.sampled_from([i for i, d in enumerate(x.shape) if d == 1]),
                                       min_size=1))))
    return apply(op, [x], axes=axes)


def _g_expand_dims(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim <= 2)
    if x is None:
        return None
    return apply(op, [x], axes=(b.draw(st.integers(0, x.ndim)),))


def _g_concatenate(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    axis = b.draw(st.integers(0, x.ndim - 1))

    def fits(t):
        return t.ndim == x.ndim and all(d == e for i, (d, e) in enumerate(zip(t.shape, x.shape)) if i != axis)
    y = b.pick(fits)
    return apply(op, [x, y], axis=axis)


def _g_matmul(b: _Builder, op: str):
    a = b.pick(lambda t: t.ndim in (1, 2))
    if a is None:
        a = b.pick(lambda t: t.ndim >= 1)
        if a is None:
            return None
        a = apply("reshape", [a], shape=(-1, a.shape[-1])) if a.ndim > 2 else a
    k = a.shape[-1]
    tb = b.draw(st.booleans())
    w = b.pick(lambda t: t.ndim == 2 and (t.shape[1] if tb else t.shape[0]) == k)
    if w is None or b.draw(st.booleans()):
        n = b.draw(st.integers(1, b.ms))
        w = b.new_input((n, k) if tb else (k, n))
    return apply(op, [a, w], trans_a=False, trans_b=bool(tb))


def _g_classification(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim == 2)
    if x is None:
        x = b.pick(lambda t: t.ndim >= 1)
        if x is None:
            return None
        x = apply("reshape", [x], shape=(1, -1) if x.ndim == 1 else (-1, x.shape[-1]))
    n, c = x.shape
    return apply(op, [x, b.const(_labels(b.draw, n, c))])


def _g_targets(b: _Builder, op: str):
    """A loss of (prediction, target in [0, 1]): binary cross entropies and the mse composite."""
    x = b.pick()
    if x is None:
        return None
    target = b.const(b.draw(arrays_in(Domain("unit", low=0.0, high=1.0), x.shape, b.dt)))
    if op == "mse":  # a composite
        from ..ops import mse
        return mse(x, target)
    return apply(op, [b.adapt(x, slot_domain(op, 0)), target])


def _g_dropout(b: _Builder, op: str):
    x = b.pick()
    if x is None:
        return None
    return apply(op, [x], p=b.draw(st.sampled_from([0.25, 0.5])), seed=b.draw(st.integers(0, 9)))


def _g_conv(b: _Builder, op: str):
    # the weights are new inputs of the graph's dtype, and conv2d takes x and w of one dtype: a
    # cast may have left a tensor of the other float dtype in the pool (graphc fuzz --seed 5)
    x = b.pick(lambda t: t.ndim == 4 and t.shape[2] >= 2 and t.shape[3] >= 2 and t.dtype == b.dt)
    if x is None:
        x = b.new_input((b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2)), b.draw(st.integers(2, 5)),
                         b.draw(st.integers(2, 5))))
    _, c, h, w_ = x.shape
    kh, kw = b.draw(st.integers(1, min(h, 3))), b.draw(st.integers(1, min(w_, 3)))
    stride = (b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2)))
    padding = (b.draw(st.integers(0, 1)), b.draw(st.integers(0, 1)))
    w = b.new_input((b.draw(st.integers(1, 2)), c, kh, kw))
    ins = [x, w] + ([b.new_input((w.shape[0],))] if b.draw(st.booleans()) else [])
    return apply(op, ins, stride=stride, padding=padding)


def _g_pool(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim == 4 and t.shape[2] >= 2 and t.shape[3] >= 2)
    if x is None:
        x = b.new_input((b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2)), b.draw(st.integers(2, 5)),
                         b.draw(st.integers(2, 5))))
    _, c, h, w_ = x.shape
    kh, kw = b.draw(st.integers(1, min(h, 3))), b.draw(st.integers(1, min(w_, 3)))
    stride = (b.draw(st.integers(1, kh)), b.draw(st.integers(1, kw)))
    padding = (b.draw(st.integers(0, kh // 2)), b.draw(st.integers(0, kw // 2)))
    return apply(op, [x], kernel=(kh, kw), stride=stride, padding=padding)


def _g_grad(b: _Builder, op: str):
    """A gradient inside the graph: second-order derivatives through every VJP rule."""
    from ..compiler.autodiff import grad
    computed = [t for t in b.pool if t.op not in LEAVES and t.dtype.kind == "f"]
    if not computed:
        return None
    s = computed[-1 - b.draw(st.integers(0, min(2, len(computed) - 1)))]  # a recent, deep node
    below = [t for t in reachable([s]) if t.op == "placeholder" and t.dtype.kind == "f"]
    if not below:
        return None
    wrt = below[b.draw(st.integers(0, len(below) - 1))]
    weights = b.const(b.draw(arrays_in(Domain(low=-1.0, high=1.0), s.shape, s.dtype)))
    inner = apply("sum", [apply("mul", [s, weights])], axes=tuple(range(s.ndim)), keepdims=False)
    try:
        g = grad(inner, wrt)
    except GraphError:
        return None
    if any(REGISTRY[n.op].vjp is None and REGISTRY[n.op].differentiable for n in reachable([g]) if n.inputs):
        return None  # a backward op without a VJP of its own (max-pool's, BCE-on-probabilities')
    return g


# OpDef.fuzz (a case kind) -> graph builder (builder, op) -> Tensor or None
GRAPH_BUILDERS: dict[str, Callable] = {
    "unary": _g_unary, "size_of": _g_size_of, "binary": _g_binary, "where": _g_where, "reduce": _g_reduce,
    "argmax": _g_argmax, "one_hot": _g_one_hot, "softmax": _g_softmax, "transpose": _g_transpose,
    "reshape": _g_reshape, "expand_dims": _g_expand_dims, "squeeze": _g_squeeze, "concatenate": _g_concatenate,
    "matmul": _g_matmul, "classification": _g_classification, "bce": _g_targets, "dropout": _g_dropout,
    "conv": _g_conv, "pool": _g_pool,
}
def _g_pad(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1)
    if x is None:
        return None
    pads = tuple((b.draw(st.integers(0, 2)), b.draw(st.integers(0, 2))) for _ in x.shape)
    return apply(op, [x], pads=pads, value=b.draw(st.sampled_from([0.0, -1.5])))


def _g_slice(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1 and all(d >= 1 for d in t.shape))
    if x is None:
        return None
    index = []
    for d in x.shape:
        step = b.draw(st.sampled_from([1, 1, 2, -1]))
        start = b.draw(st.integers(0, d - 1)) if step > 0 else b.draw(st.integers(-d, -1))
        index.append((start, None, step))
    return apply(op, [x], index=tuple(index))


def _g_grouped_conv(b: _Builder, op: str):
    groups = b.draw(st.integers(2, 3))
    c = b.draw(st.integers(1, 2))
    x = b.new_input((b.draw(st.integers(1, 2)), c * groups, b.draw(st.integers(2, 4)), b.draw(st.integers(2, 4))))
    kh, kw = b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2))
    w = b.new_input((b.draw(st.integers(1, 2)) * groups, c, kh, kw))
    return apply(op, [x, w], stride=(1, b.draw(st.integers(1, 2))), padding=(b.draw(st.integers(0, 1)), 0),
                 groups=groups)


def _g_take(b: _Builder, op: str):
    x = b.pick(lambda t: t.ndim >= 1 and all(d >= 1 for d in t.shape))
    if x is None:
        return None
    axis = b.draw(st.integers(0, x.ndim - 1))
    return apply(op, [x, b.const(_indices(b.draw, x.shape[axis]))], axis=axis)


GRAPH_BUILDERS.update(pad=_g_pad, slice=_g_slice, grouped_conv=_g_grouped_conv, take=_g_take)


def _g_dense_pattern(b: _Builder, op: str):
    """act(x @ W + b): what the fusion pass turns into one dense node (the GEMM's epilogue)."""
    h = _g_matmul(b, "matmul")
    if h is None or h.ndim != 2:
        return h
    h = apply("add", [h, b.new_input((h.shape[1],))])
    act = b.draw(st.sampled_from(ACTIVATIONS))
    return h if act == "identity" else apply(act, [h], **fuzz_attrs(b.draw, act))


def _g_sgd_update(b: _Builder, op: str):
    """x - c * (a @ W): an SGD-style update the fusion pass turns into one matmul_update GEMM."""
    h = _g_matmul(b, "matmul")
    if h is None or h.ndim != 2:
        return h
    x = b.new_input(h.shape)
    scaled = apply("mul", [b.scalar(b.draw(st.sampled_from([0.1, -0.5]))), h])
    if b.draw(st.booleans()):  # c (a @ W) + x: the same update written with add
        return apply("add", [scaled, x])
    return apply("sub", [x, scaled])


def _g_masked_backprop(b: _Builder, op: str):
    """activation_grad(y, g @ W^T, relu | leaky_relu): a ReLU layer's backward GEMM, which the
    fusion pass turns into one matmul_act_grad (the mask in the GEMM's epilogue)."""
    h = _g_matmul(b, "matmul")
    if h is None or h.ndim != 2:
        return h
    from ..ops.fused import GATE_ACTS
    act = b.draw(st.sampled_from(GATE_ACTS))
    y = b.new_input(h.shape)
    return apply("activation_grad", [y, h], act=act, alpha=0.1 if act == "leaky_relu" else 0.0)


def _g_reshape_like(b: _Builder, op: str):
    """reshape_like(x, like): the reshape VJP of a graph whose shapes are known only at run time."""
    x = b.pick(lambda t: t.ndim >= 1 and int(np.prod(t.shape)) > 1)
    if x is None:
        return None
    like = b.new_input(tuple(reversed(x.shape)) if x.ndim > 1 else (1, x.shape[0]))
    return apply("reshape_like", [x, like])


# composites: public functions made of several ops, patterns the passes rewrite, and a gradient
# taken inside the graph
COMPOSITES: dict[str, tuple[Callable, int]] = {
    "mean": (_g_reduce, 1), "log_softmax": (_g_softmax, 1), "mse": (_g_targets, 1), "grad": (_g_grad, 5),
    "linear_act": (_g_dense_pattern, 1), "runtime_reshape": (_g_reshape_like, 1),
    "sgd_update": (_g_sgd_update, 1), "masked_backprop": (_g_masked_backprop, 1),
}


def _graph_ops() -> tuple:
    """Registry ops random graphs draw directly (ops made only by gradients or passes are reached
    through `grad` and compilation), then the composites."""
    ops = [n for n, op in REGISTRY.items() if op.fuzz in GRAPH_BUILDERS and not op.made_by]
    return tuple(ops) + tuple(COMPOSITES)


GRAPH_OPS = _graph_ops()
"""Names `graphs(ops=...)` accepts: registry ops plus the composites mean, mse, log_softmax and grad
(a gradient taken inside the graph, so VJP rules are differentiated again)."""


def _weight(op: str) -> int:
    return COMPOSITES[op][1] if op in COMPOSITES else REGISTRY[op].fuzz_weight


def _builder_for(op: str, like: dict) -> tuple[Callable, str]:
    base = like.get(op, op)
    if base in COMPOSITES:
        return COMPOSITES[base][0], op
    kind = REGISTRY[base].fuzz if base in REGISTRY else None
    if kind in GRAPH_BUILDERS:
        return GRAPH_BUILDERS[kind], op
    raise ValueError(f"graphs(): no builder for op {op!r}; known: {', '.join(GRAPH_OPS)} "
                     "(pass like={op: similar_op} for a registered copy of an op)")


def _leaf_domains(output: Tensor, leaves: list) -> dict:
    """The Domain each input's values must be drawn from: what its consumers need, seen through
    ops that keep values (a ReLU after a reshape still needs values away from 0)."""
    order = reachable([output])
    need: dict[int, list] = {n.id: [] for n in order}
    for node in reversed(order):
        for slot, inp in enumerate(node.inputs):
            if node.op not in REGISTRY:
                continue
            need[inp.id].append(slot_domain(node.op, slot, node.attrs))
            opdef = REGISTRY[node.op]
            if opdef.value_preserving:  # its output values are input values: their needs apply here
                need[inp.id].extend(need[node.id])
            elif opdef.monotonic and any(d.distinct for d in need[node.id]):  # distinct stays distinct
                need[inp.id].append(Domain(distinct=True))
    return {t.id: _merge(need.get(t.id, [])) for t in leaves}


def _first_shapes(draw, max_inputs: int, max_side: int) -> list:
    base = _shape(draw, min_dims=0, max_dims=3, max_side=max_side)
    shapes = [base]
    for _ in range(draw(st.integers(0, max_inputs - 1))):
        kind = draw(st.sampled_from(["same", "suffix", "ones", "other"]))
        if kind == "same" or not base:
            shapes.append(base)
        elif kind == "suffix":
            shapes.append(base[draw(st.integers(1, len(base))):])
        elif kind == "ones":
            shapes.append(tuple(1 if draw(st.booleans()) else d for d in base))
        else:
            shapes.append(_shape(draw, max_side=max_side))
    return shapes


def graphs(max_nodes: int = 8, ops: Optional[Sequence[str]] = None, dtype=None, max_inputs: int = 3,
           max_side: int = 4, like: Optional[dict] = None) -> st.SearchStrategy:
    """A strategy for RandomGraph: a random DAG of registry ops ending in a scalar.

    It starts from 1..max_inputs placeholders with broadcast-compatible shapes, then applies up
    to max_nodes ops drawn from `ops` (default: GRAPH_OPS) to operands picked among the inputs
    and earlier results (so subexpressions are reused and nodes fan out); matmul and conv add
    new weight inputs; "grad" takes a gradient inside the graph. Operands computed by the graph
    are mapped into an op's domain (x*x + 0.5 before log), input values are drawn inside every
    domain they meet. The unused results are summed, weighted by random constants, into the
    scalar output. Graphs whose values overflow are rejected.

        >>> import graphc as gc
        >>> from hypothesis import given, settings
        >>> @settings(max_examples=5, deadline=None)
        ... @given(graphs(max_nodes=5))
        ... def test_random_graph_gradients(g):
        ...     assert gc.gradcheck(g.output, g.values)
        >>> test_random_graph_gradients()
    """
    like = dict(like or {})
    names = list(ops) if ops else list(GRAPH_OPS)
    builders = [(_builder_for(op, like), op) for op in names]  # unknown ops fail here, not on draw
    weighted = [bo for bo in builders for _ in range(_weight(bo[1]) if not ops else 1)]
    return _graphs(weighted, max_nodes, dtype, max_inputs, max_side)


@st.composite
def _graphs(draw, weighted: list, max_nodes: int, dtype, max_inputs: int, max_side: int) -> RandomGraph:
    dt = _dtype(draw, dtype)
    b = _Builder(draw, dt, max_side)
    for s in _first_shapes(draw, max_inputs, max_side):
        b.new_input(s)
    made: list[Tensor] = []
    for _ in range(draw(st.integers(1, max_nodes))):
        (fn, opname), _name = weighted[draw(st.integers(0, len(weighted) - 1))]
        t = fn(b, opname)
        if t is None or t.dtype.kind != "f":
            continue
        b.pool.append(t)
        made.append(t)
    assume(made)
    used = {i.id for t in made for n in reachable([t]) for i in n.inputs}
    sinks = [t for t in made if t.id not in used]
    terms = []
    for t in sinks:
        w = draw(arrays_in(Domain(low=-1.0, high=1.0), t.shape, t.dtype))
        y = apply("mul", [t, constant(w)])
        terms.append(apply("sum", [y], axes=tuple(range(t.ndim)), keepdims=False))
    out = _assemble(terms)
    reach = {n.id for n in reachable([out])}
    leaves = [t for t in b.leaves if t.id in reach]
    assume(leaves)
    domains = _leaf_domains(out, leaves)
    distinct = [t for t in leaves if domains[t.id].distinct]
    values = {}
    if distinct:  # one pool, so that values are distinct across inputs too (maximum(x0, x1))
        joint = _merge([domains[t.id] for t in distinct])
        sizes = [int(np.prod(t.shape, dtype=np.int64)) for t in distinct]
        pool = draw(arrays_in(joint, (max(sum(sizes), 1),), dt, distinct=True))
        start = 0
        for t, size in zip(distinct, sizes):
            values[t] = pool[start:start + size].reshape(t.shape)
            start += size
    for t in leaves:
        if t not in values:
            values[t] = draw(arrays_in(domains[t.id], t.shape, dt))
    g = RandomGraph(out, leaves, values, dt, terms)
    _name_nodes(g)
    assume(_finite_and_moderate(g))
    return g


def _name_nodes(g: RandomGraph) -> None:
    """Sources name the variables of the reproducer (`n7 = ...`), the nodes having no user line."""
    for k, n in enumerate(reachable([g.output])):
        if n.inputs:
            n.source = f"<random graph: n{k}>"


def _finite_and_moderate(g: RandomGraph, bound: float = 1e6) -> bool:
    from .gradcheck import _Interpreter
    try:
        vals = _Interpreter([g.output]).run({t.id: v for t, v in g.values.items()})
    except GraphError:
        return False
    for v in vals.values():
        a = np.asarray(v)
        if a.dtype.kind == "f" and a.size and not (np.all(np.isfinite(a)) and np.max(np.abs(a)) < bound):
            return False
    return True


# -- checking a graph: every backend vs finite differences, and backends vs each other ------------
@dataclass
class GraphCheck:
    """The outcome of check_graph: status "pass", "kink" or "fail", with a message on failure."""
    status: str
    message: str = ""
    reports: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.status != "fail"


EDGE_VALUES = (0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 1e-30)


def with_edge_values(values: dict, key: str) -> dict:
    """A copy of `values` in which about a third of the float elements are 0, -0, ±inf, NaN, ±1e30
    or 1e-30: where an op's result is defined by IEEE rules, every backend must give the same one.
    The choice depends only on `key` (e.g. the graph's code), so a reproducer makes it again."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    out = {}
    for t, v in values.items():
        v = np.array(v, copy=True)
        if v.dtype.kind == "f" and v.size:
            flat = v.reshape(-1)
            pick = rng.random(flat.size) < 1 / 3
            flat[pick] = rng.choice(np.asarray(EDGE_VALUES, dtype=v.dtype), int(pick.sum()))
        out[t] = v
    return out


def check_graph(g: RandomGraph, backends: Sequence[str] = ("numpy",), mode: str = "full",
                eps: Optional[float] = None, atol: Optional[float] = None, rtol: Optional[float] = None,
                localize: bool = True, edges: bool = False) -> GraphCheck:
    """Each backend's gradients against float64 finite differences, then (with two or more
    backends) the backends against each other in the graph's own dtype: a three-way oracle.
    edges=True also compares the backends on the inputs with edge values (with_edge_values):
    non-finite results are compared between backends, never against finite differences.
    localize=False skips naming the culprit node of a failure (faster while searching)."""
    reports = {}
    kink = False
    for backend in backends:
        try:
            rep = gradcheck(g.output, g.values, backend=backend, mode=mode, eps=eps, atol=atol, rtol=rtol,
                            localize=localize)
        except Exception as exc:  # noqa: BLE001 - a crash is a finding too
            return GraphCheck("fail", f"[{backend}] gradcheck raised {type(exc).__name__}: {exc}", reports)
        reports[backend] = rep
        if not rep:
            return GraphCheck("fail", f"[{backend}] {rep}", reports)
        kink = kink or rep.status == "kink"
    if len(backends) > 1:
        try:
            problem = compare_backends(g.output, g.values, backends)
        except Exception as exc:  # noqa: BLE001
            return GraphCheck("fail", f"comparing backends raised {type(exc).__name__}: {exc}", reports)
        if problem:
            return GraphCheck("fail", f"backends disagree: {problem}", reports)
        if edges:
            try:
                with np.errstate(all="ignore"):
                    problem = compare_backends(g.output, with_edge_values(g.values, g.code()), backends)
            except Exception as exc:  # noqa: BLE001
                return GraphCheck("fail", f"at edge values, comparing backends raised {type(exc).__name__}: {exc}",
                                  reports)
            if problem:
                # with 1e30 among the inputs a value can be rounding noise, and a relu of it goes
                # either way; a float32 sum of 1e30 * 1e30 next to -inf is NaN or -inf depending
                # on its accumulation: kinks, not disagreements (rounding_branch_flip)
                with np.errstate(all="ignore"):
                    flip = rounding_branch_flip(g.output, with_edge_values(g.values, g.code()), backends)
                if flip:
                    return GraphCheck("kink", f"at edge values, {problem}; {flip}", reports)
                return GraphCheck("fail", f"backends disagree at edge values (0, -0, inf, NaN, 1e30): {problem}",
                                  reports)
    return GraphCheck("kink" if kink else "pass", "", reports)


# -- reproducers ----------------------------------------------------------------------------------
def _public_simple(op: str) -> bool:
    """gc.<op>(*inputs) builds exactly this node (an elementwise op with a public function)."""
    from ..ops import PUBLIC
    return op in PUBLIC and REGISTRY[op].elementwise


def _py(v: Any) -> str:
    """Python source for an attribute value."""
    if isinstance(v, np.dtype):
        return f'np.dtype("{v}")'
    if isinstance(v, type) and issubclass(v, np.generic):
        return f'np.dtype("{np.dtype(v)}")'
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    if isinstance(v, (int, np.integer)):
        return repr(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if math.isfinite(f) else f'float("{f}")'
    if isinstance(v, tuple):
        return "(" + ", ".join(_py(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_py(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(x)}" for k, x in v.items()) + "}"
    if isinstance(v, np.ndarray):
        return _array_src(v)
    return repr(v)


def _array_src(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        return f'np.frombuffer(bytes.fromhex("{a.tobytes().hex()}"), dtype="{a.dtype}").reshape({_py(a.shape)})'
    body = repr(a.tolist()) if a.dtype.kind != "b" else repr(a.tolist())
    return f'np.array({body}, dtype="{a.dtype}")'


def _emit_graph(outputs: list, values: dict) -> tuple[str, dict]:
    lines = []
    var: dict[int, str] = {}
    names_used: set = set()
    k = 0
    for n in reachable(outputs):
        if n.op == "placeholder":
            name = n.name if n.name and n.name not in names_used else f"x{len(names_used)}"
            names_used.add(name)
            v = name
            lines.append(f'{v} = gc.placeholder("{name}", shape={_py(n.shape)}, dtype="{n.dtype}")')
        elif n.op == "parameter":
            v = f"p{k}"
            lines.append(f'{v} = gc.parameter({_array_src(n.value)}, name={n.name!r})')
        elif n.op == "constant":
            v = f"c{k}"
            lines.append(f"{v} = gc.constant({_array_src(n.value)})")
        else:
            v = f"n{k}"
            ins = [var[i.id] for i in n.inputs]
            if _public_simple(n.op) and not n.attrs and all(i.dtype.kind == "f" for i in n.inputs) \
                    and hasattr(__import__("graphc"), n.op):
                lines.append(f"{v} = gc.{n.op}({', '.join(ins)})")
            elif n.op == "where" and not n.attrs:
                lines.append(f"{v} = gc.where({', '.join(ins)})")
            else:
                attrs = "".join(f", {a}={_py(x)}" for a, x in n.attrs.items())
                lines.append(f'{v} = apply("{n.op}", [{", ".join(ins)}]{attrs})')
        var[n.id] = v
        k += 1
    return "\n".join(lines), var


def reproducer(graph: Union[RandomGraph, Tensor], values: Optional[dict] = None, *,
               backends: Sequence[str] = ("numpy",), mode: str = "full", eps: Optional[float] = None,
               atol: Optional[float] = None, rtol: Optional[float] = None, title: str = "",
               setup: str = "", edges: bool = False) -> str:
    """Python source of a standalone script that rebuilds the graph in graphc code, with its
    input values, and re-runs check_graph's checks; it exits with status 1 while the failure
    reproduces (an exception also propagates). `setup`: code run after the imports (e.g. to
    register an op the graph uses).

        >>> import graphc as gc
        >>> x = gc.placeholder("x", (2,), "float64")
        >>> src = reproducer(gc.tanh(x).sum(), {x: np.array([0.5, -1.0])})
        >>> "gc.tanh(x)" in src and "gradcheck" in src
        True
        >>> exec(compile(src, "<reproducer>", "exec"), {"__name__": "__main__"})  # doctest: +ELLIPSIS
        [numpy] gradcheck passed: ...
        the failure no longer reproduces
    """
    if isinstance(graph, RandomGraph):
        output, values = graph.output, graph.values
    else:
        output = graph
    if values is None:
        raise ValueError("reproducer(output, values): the input values are needed")
    code, var = _emit_graph([output], values)
    vals = ",\n    ".join(f"{var[t.id]}: {_array_src(np.asarray(v))}" for t, v in values.items() if t.id in var)
    kw = "".join(f", {k}={v!r}" for k, v in (("eps", eps), ("atol", atol), ("rtol", rtol)) if v is not None)
    edge_check = ""
    if edges:
        edge_vals = with_edge_values(values, graph.code() if isinstance(graph, RandomGraph) else code)
        ev = ",\n    ".join(f"{var[t.id]}: {_array_src(np.asarray(v))}" for t, v in edge_vals.items() if t.id in var)
        edge_check = f"""
edge_values = {{
    {ev},
}}
if len(backends) > 1:
    with np.errstate(all="ignore"):
        problem = compare_backends(loss, edge_values, backends)
        flip = problem and rounding_branch_flip(loss, edge_values, backends)
    if flip:  # rounding decided it: not a disagreement (check_graph counts it as a kink)
        print("backends differ at edge values only where rounding decides:", flip)
    elif problem:
        print("backends disagree at edge values:", problem)
        failed = True
"""
    doc = (title or "graphc gradient-check reproducer").replace('"""', "'''")
    return f'''"""{doc}

Rebuilds the graph and its input values, then checks each backend's gradients against float64
finite differences (gc.gradcheck) and the backends against each other. Exit status 1 while the
failure reproduces.
"""
import numpy as np

import graphc as gc
from graphc.backends import C_AVAILABLE
from graphc.verify.gradcheck import compare_backends, rounding_branch_flip
from graphc.ops import apply
{setup}
{code}
loss = {var[output.id]}
values = {{
    {vals},
}}

backends = [b for b in {list(backends)!r} if b != "c" or C_AVAILABLE]
failed = False
for backend in backends:
    report = gc.gradcheck(loss, values, backend=backend, mode={mode!r}{kw})
    print(f"[{{backend}}] {{report}}")
    failed = failed or not report
if len(backends) > 1:
    problem = compare_backends(loss, values, backends)
    if problem:
        print("backends disagree:", problem)
        failed = True
{edge_check}
if failed:
    raise SystemExit(1)
print("the failure no longer reproduces")
'''
