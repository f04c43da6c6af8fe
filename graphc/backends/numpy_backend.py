"""The reference backend: each step calls its op's NumPy forward."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..compiler.schedule import Plan
from ..ir.errors import GraphError, node_error
from ..ops import REGISTRY


def run_node(node, args: list) -> np.ndarray:
    """THE NumPy step: node's registry forward on `args`, as an array of node's dtype.

    Used by the NumPy backend, the C backend's NumPy steps and gradcheck's float64 re-run, so
    every way of running an op on NumPy errs and casts the same way: an op that raises names
    the node and the user's line that created it."""
    try:
        r = REGISTRY[node.op].forward(*args, **node.attrs)
    except GraphError as exc:
        raise node_error(node, str(exc)) from None
    except (ValueError, IndexError, TypeError, FloatingPointError, MemoryError) as exc:
        raise node_error(node, f"{type(exc).__name__}: {exc}") from None
    if type(r) is not np.ndarray or r.dtype != node.dtype:
        r = np.asarray(r, dtype=node.dtype)
    return r


def execute(plan: Plan, feeds: list, params: list, seconds: Optional[np.ndarray] = None) -> list:
    """Run the plan's steps in order; with `seconds`, add each step's time to seconds[step]."""
    vals = [None] * len(plan.nodes)
    leaf_ids = set()
    for slot, v in plan.constants:
        vals[slot] = v
    for slot, k in plan.feeds:
        vals[slot] = feeds[k]
        leaf_ids.add(id(feeds[k]))
        if plan.check_finite and feeds[k].dtype.kind == "f" and not np.isfinite(feeds[k]).all():
            raise node_error(plan.nodes[slot], f"the feed holds non-finite values ({_summary(feeds[k])})")
    for slot, k in plan.params:
        vals[slot] = params[k]
        leaf_ids.add(id(params[k]))
        if plan.check_finite and params[k].dtype.kind == "f" and not np.isfinite(params[k]).all():
            # a diverged weight is the usual source of NaN: no node "makes" it, so say so here
            raise node_error(plan.nodes[slot], f"the parameter holds non-finite values ({_summary(params[k])})")
    with np.errstate(all="ignore"):  # NaN/inf propagate as in C; check_finite reports them
        for k, step in enumerate(plan.steps):
            args = [vals[i] for i in step.inputs]
            t0 = time.perf_counter() if seconds is not None else 0.0
            r = run_node(step.node, args)
            if seconds is not None:
                seconds[k] += time.perf_counter() - t0
            if plan.check_finite:
                _check_finite(step.node, r, args)
            vals[step.out] = r
            for f in step.free:
                vals[f] = None
    return fresh_outputs(vals, plan.outputs, leaf_ids | {id(v) for _, v in plan.constants})


def _summary(a: np.ndarray) -> str:
    if a.dtype.kind not in "fc" or a.size == 0:
        return f"{a.dtype}{list(a.shape)}"
    finite = a[np.isfinite(a)]
    rng = f"min {finite.min():.4g}, max {finite.max():.4g}" if finite.size else "no finite values"
    return f"{a.dtype}{list(a.shape)} {rng}, NaN: {bool(np.isnan(a).any())}, inf: {bool(np.isinf(a).any())}"


def _check_finite(node, result: np.ndarray, inputs: list) -> None:
    """check_finite mode: a non-finite value born here (from finite inputs) stops the run."""
    if result.dtype.kind != "f" or np.isfinite(result).all():
        return
    if any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in inputs):
        return  # inherited: the node that made it was reported already, or it came from a feed
    bad = int(np.flatnonzero(~np.isfinite(result.reshape(-1)))[0])
    details = "; ".join(f"input {k}: {_summary(a)}" for k, a in enumerate(inputs))
    raise node_error(node, f"produced a non-finite value ({result.reshape(-1)[bad]} at flat index {bad}) from "
                           f"finite inputs [{details}]")


def fresh_outputs(vals: list, slots: list, leaf_ids: set) -> list:
    """Outputs never alias feeds, parameters, constants, one another, or any view."""
    outs, seen = [], set()
    for s in slots:
        v = vals[s]
        if id(v) in leaf_ids or id(v) in seen or v.base is not None or not v.flags.c_contiguous:
            v = np.array(v, order="C", copy=True)
        seen.add(id(v))
        outs.append(v)
    return outs


def make_runner(plan: Plan):
    def run(feeds, params):
        return execute(plan, feeds, params)

    # Function.profile(): one entry per step and one (unused here) for the C backend's output copies
    run.timed = lambda seconds: (lambda feeds, params: execute(plan, feeds, params, seconds))
    return run
