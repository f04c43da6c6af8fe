"""In-step efficiency: how fast the W-mlp step's large kernels run inside the step, against alone.

    graphc bench --suite instep [--repeats 300] [--threads N]

Issue 14 (item 5) asks the GEMMs to keep at least 95 % of their stand-alone speed inside the
training step. Both sides are measured with Function.profile() (each instruction timed inside the
C interpreter, mean over `repeats` calls), in this process:

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
REPEATS = 300


def _alone(nodes: list, repeats: int, seed: int = 0):
    """Mean seconds per call of `nodes` (plan nodes) compiled by themselves, and how they lowered;
    None when an input is not a float (its values would need a valid range)."""
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
    prof = f.profile(repeats=repeats, **feeds)
    run = next(iter(f._plans.values()))[1]
    how = ("side by side" if run.lowered.side_by_side else
           "split over the threads" if len(nodes) == 1 else "one after the other")
    ops = [r for r in prof.rows if r["op"] in {n.op for n in nodes}]
    return sum(r["seconds"] for r in ops), how


def instep_table(repeats: int = REPEATS, min_share: float = MIN_SHARE) -> dict:
    if not gc.backend_info()["c_available"]:
        return dict(error="graphc C extension not built")
    weights, x, y = _mlp_data(256, MLP_SIZES, "float32")
    _, _, f = graphc_mlp_step(weights, MLP_SIZES, "float32", 0.01, "c")
    prof = f.profile(x=x, y=y, repeats=repeats)
    plan = f._last_plan
    pairs = dict(next(r for p, r in f._plans.values() if p is plan).lowered.side_by_side)
    rows = []
    for r in prof.rows:
        if r["seconds"] < min_share * prof.steps_seconds:
            continue
        group = [r["step"]] + ([pairs[r["step"]]] if r["step"] in pairs else [])
        nodes = [plan.steps[k].node for k in group]
        alone = _alone(nodes, repeats)
        what = " + ".join(f"{n.op} {'x'.join(map(str, n.shape))}" for n in nodes)
        row = dict(steps=",".join(map(str, group)), what=what, in_step_us=r["seconds"] * 1e6, alone_us=None,
                   alone_as=None, kept=None)
        if alone is not None:
            row.update(alone_us=alone[0] * 1e6, alone_as=alone[1], kept=alone[0] / r["seconds"])
        rows.append(row)
    timed = [r for r in rows if r["kept"] is not None]
    total_in = sum(r["in_step_us"] for r in timed)
    total_alone = sum(r["alone_us"] for r in timed)
    return dict(rows=rows, step_us=prof.steps_seconds * 1e6, call_us=prof.call_seconds * 1e6, repeats=repeats,
                covered=total_in / (prof.steps_seconds * 1e6), kept=total_alone / total_in if total_in else None)


def format_table(res: dict) -> str:
    from . import _table
    if "error" in res:
        return f"instep: {res['error']}"
    out = [_table(res["rows"], [("steps", "W-mlp step: steps", "{}"), ("what", "op and output shape", "{}"),
                                ("in_step_us", "in step us", "{:.1f}"), ("alone_us", "alone us", "{:.1f}"),
                                ("kept", "alone / in step", "{:.3f}"), ("alone_as", "alone, run", "{}")])]
    kept = res["kept"]
    out.append(f"these steps: {res['covered'] * 100:.0f} % of the step's {res['step_us'] / 1e3:.2f} ms (mean of "
               f"{res['repeats']} timed calls; a call through the usual path: median {res['call_us'] / 1e3:.2f} ms); "
               f"together they keep {kept:.3f} of their stand-alone speed inside the step (issue 14 asks >= 0.95)"
               if kept is not None else "no step could be rebuilt alone")
    return "\n".join(out)
