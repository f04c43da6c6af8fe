"""In-step efficiency: how fast the W-mlp step's large kernels run inside the step, against alone.

    graphc bench --suite instep [--rounds 7] [--repeats 50] [--threads N]

Issue 14 (item 5) asks the GEMMs to keep at least 95 % of their stand-alone speed inside the
training step. Both sides are measured with Function.profile() (each instruction timed inside the
C interpreter, mean over `repeats` calls), in this process, in `rounds` rounds that each measure
the step and then every kernel alone; medians over the rounds:

  in step   the W-mlp SGD step (784-512-256-10, batch 256, float32, C backend);
  alone     each step that takes at least 2 % of it, rebuilt by itself: the same op with the same
            attributes (so the same fused epilogue: bias and ReLU, SGD update, ReLU gate) on random
            inputs of the same shapes, compiled without passes so that it lowers to the same
            instruction, and called back to back (its operands stay in cache). Two GEMMs that run
            side by side in the step are rebuilt together, and run side by side alone too.

alone / in step is the fraction of its stand-alone speed the kernel keeps inside the step.
"""
from __future__ import annotations

import numpy as np

import graphc as gc

from .workloads import MLP_SIZES, _mlp_data, graphc_mlp_step

MIN_SHARE = 0.02
REPEATS = 50
ROUNDS = 7


def _alone(nodes: list, seed: int = 0):
    """`nodes` (plan nodes) compiled by themselves on random inputs: (Function, feeds, how they
    lowered), or None when an input is not a float (its values would need a valid range)."""
    from ...ops import apply
    rng = np.random.default_rng(seed)
    holders, feeds = {}, {}
    for n in nodes:
        for i in n.inputs:
            if i.id in holders:
                continue
            if np.dtype(i.dtype).kind != "f":
                return None
            name = f"in{len(holders)}"
            holders[i.id] = gc.placeholder(name, i.shape, i.dtype)
            feeds[name] = rng.standard_normal(i.shape).astype(i.dtype)
    outs = [apply(n.op, [holders[i.id] for i in n.inputs], **n.attrs) for n in nodes]
    f = gc.compile(outs, backend="c", optimize=False)
    f(**feeds)
    run = next(iter(f._plans.values()))[1]
    how = ("side by side" if run.lowered.side_by_side else
           "split over the threads" if len(nodes) == 1 else "one after the other")
    return f, feeds, how


def _op_seconds(prof, ops: set) -> float:
    return sum(r["seconds"] for r in prof.rows if r["op"] in ops)


def instep_table(repeats: int = REPEATS, rounds: int = ROUNDS, min_share: float = MIN_SHARE) -> dict:
    """`rounds` rounds, each profiling the step and then every rebuilt kernel over `repeats` calls;
    medians over the rounds (the ratios per round first, so that a slow spell of the machine
    slows both sides of a ratio)."""
    if not gc.backend_info()["c_available"]:
        return dict(error="graphc C extension not built")
    weights, x, y = _mlp_data(256, MLP_SIZES, "float32")
    _, _, f = graphc_mlp_step(weights, MLP_SIZES, "float32", 0.01, "c")
    first = f.profile(x=x, y=y, repeats=repeats)
    plan = f._last_plan
    pairs = dict(next(r for p, r in f._plans.values() if p is plan).lowered.side_by_side)
    groups = []
    for r in first.rows:
        if r["seconds"] >= min_share * first.steps_seconds:
            steps = [r["step"]] + ([pairs[r["step"]]] if r["step"] in pairs else [])
            nodes = [plan.steps[k].node for k in steps]
            groups.append((steps, nodes, _alone(nodes)))
    in_step = {tuple(g[0]): [] for g in groups}
    alone = {tuple(g[0]): [] for g in groups}
    totals, calls = [], []
    for _ in range(max(1, rounds)):
        prof = f.profile(x=x, y=y, repeats=repeats)
        totals.append(prof.steps_seconds)
        calls.append(prof.call_seconds)
        for steps, nodes, built in groups:
            in_step[tuple(steps)].append(sum(prof.rows[k]["seconds"] for k in steps))
            if built is not None:
                g, feeds, _how = built
                alone[tuple(steps)].append(_op_seconds(g.profile(repeats=repeats, **feeds), {n.op for n in nodes}))
    rows, kept_rounds = [], []
    for steps, nodes, built in groups:
        key = tuple(steps)
        ins, al = np.array(in_step[key]), np.array(alone[key])
        what = " + ".join(f"{n.op} {'x'.join(map(str, n.shape))}" for n in nodes)
        row = dict(steps=",".join(map(str, steps)), what=what, in_step_us=float(np.median(ins)) * 1e6,
                   alone_us=None, alone_as=None, kept=None)
        if built is not None:
            row.update(alone_us=float(np.median(al)) * 1e6, alone_as=built[2], kept=float(np.median(al / ins)))
        rows.append(row)
    timed = [tuple(g[0]) for g in groups if g[2] is not None]
    if timed:
        kept_rounds = [sum(alone[k][i] for k in timed) / sum(in_step[k][i] for k in timed) for i in range(len(totals))]
    covered = float(np.median([sum(in_step[k][i] for k in in_step) / totals[i] for i in range(len(totals))]))
    return dict(rows=rows, step_us=float(np.median(totals)) * 1e6, call_us=float(np.median(calls)) * 1e6,
                repeats=repeats, rounds=len(totals), covered=covered,
                kept=float(np.median(kept_rounds)) if kept_rounds else None,
                kept_range=(min(kept_rounds), max(kept_rounds)) if kept_rounds else None)


def format_table(res: dict) -> str:
    from . import _table
    if "error" in res:
        return f"instep: {res['error']}"
    out = [_table(res["rows"], [("steps", "W-mlp step: steps", "{}"), ("what", "op and output shape", "{}"),
                                ("in_step_us", "in step us", "{:.1f}"), ("alone_us", "alone us", "{:.1f}"),
                                ("kept", "alone / in step", "{:.3f}"), ("alone_as", "alone, run", "{}")])]
    kept = res["kept"]
    if kept is None:
        out.append("no step could be rebuilt alone")
    else:
        lo, hi = res["kept_range"]
        out.append(f"these steps: {res['covered'] * 100:.0f} % of the step's {res['step_us'] / 1e3:.2f} ms "
                   f"({res['rounds']} rounds of {res['repeats']} timed calls; a call through the usual path: "
                   f"{res['call_us'] / 1e3:.2f} ms);\ntogether they keep {kept:.3f} of their stand-alone speed inside "
                   f"the step (rounds {lo:.3f}-{hi:.3f}; issue 14 asks >= 0.95)")
    return "\n".join(out)
