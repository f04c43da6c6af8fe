"""Function.profile(): where a compiled function's time goes, step by step.

Two measurements of the same calls with the same feeds:
  - the wall time of a call through the usual path (median over `repeats` calls): what a user's
    loop pays, Python's call path included;
  - each plan step's time (mean over `repeats` calls through the runner a call uses, built once
    more with timing): the C backend times every instruction inside the interpreter
    (gc_exec_timed in place of gc_exec), the NumPy backend and the C backend's NumPy steps time
    each step in Python.
The difference between the call and the steps is what the call costs besides its kernels: feed
checks, pointers, output buffers, the Python -> C transition. Every profiled call is a real call,
so a function compiled with `updates=` takes 2 * repeats + 1 training steps. The two kinds of call
alternate, and the cost besides the steps is the difference of their means.
"""
from __future__ import annotations

import time

import numpy as np

from ..ir.errors import GraphError, fmt_shape


class Profile(str):
    """Function.profile()'s report: a str that displays as the table at the prompt, with the numbers
    as attributes:

    - rows: one dict per plan step, in plan order: step, op, shape, dtype, source (where the node
      was created), seconds (mean per call; 0 for a step computed inside another step), share (of
      the steps' total), note (what the C code does differently: fused into a GEMM, side by side);
    - call_seconds, call_mean_seconds: median and mean wall time of one call through the usual
      call path (the calls alternate with the timed ones);
    - steps_seconds: the steps' total per call (mean), output copies included;
    - copy_seconds: copying outputs out of the C arena, per call (mean);
    - repeats, backend, threads (the C backend's; None on NumPy)."""

    def __new__(cls, text: str, **data):
        obj = super().__new__(cls, text)
        obj.__dict__.update(data)
        return obj

    def __repr__(self) -> str:
        return str(self)


def profile_function(f, args: tuple, feeds: dict, repeats: int) -> Profile:
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise GraphError(f"profile(repeats=...) takes a positive int, got {repeats!r}")
    repeats = int(repeats)
    f(*args, **feeds)  # builds (or finds) the plan of this signature and warms the caches
    plan = f._last_plan
    run = next(r for p, r in f._plans.values() if p is plan)
    seconds = np.zeros(len(plan.steps) + 1)
    timed = run.timed(seconds)
    named = f._feed_dict(args, feeds)
    walls = []
    for _ in range(repeats):  # the two kinds of call alternate, so both see the same conditions
        t0 = time.perf_counter()
        f(*args, **feeds)
        walls.append(time.perf_counter() - t0)
        arrays = f._check_feeds(named)
        f._finish(timed(arrays, [f._param_value(p) for p in f.parameters]))
    seconds /= repeats

    lowered = getattr(run, "lowered", None)
    notes = lowered.step_notes() if lowered is not None else {}
    counted_in = {b: a for a, b in getattr(lowered, "side_by_side", [])}
    counted_in.update(getattr(getattr(lowered, "lw", None), "merged", {}))
    total = float(seconds.sum())
    rows = []
    for k, step in enumerate(plan.steps):
        n = step.node
        rows.append(dict(step=k, op=n.op, shape=tuple(n.shape), dtype=str(n.dtype), source=n.source.split("; ")[0],
                         seconds=float(seconds[k]), share=float(seconds[k]) / total if total > 0 else 0.0,
                         note=notes.get(k, "") + (f"; its time is counted under step {counted_in[k]}"
                                                  if k in counted_in else "")))
    from .. import backends
    threads = backends.backend_info()["threads"] if f.backend == "c" else None  # NumPy's BLAS has its own
    data = dict(rows=rows, call_seconds=float(np.median(walls)), call_mean_seconds=float(np.mean(walls)),
                steps_seconds=total,
                copy_seconds=float(seconds[-1]), repeats=repeats, backend=f.backend, threads=threads)
    return Profile(_format(data), **data)


def _format(d: dict) -> str:
    scale, unit = (1e3, "ms") if d["call_seconds"] >= 1e-3 else (1e6, "us")

    def t(seconds: float) -> str:
        return f"{seconds * scale:.3f} {unit}" if unit == "ms" else f"{seconds * scale:.1f} {unit}"

    rest = d["call_mean_seconds"] - d["steps_seconds"]  # two means over the same alternating calls
    rest_text = (f"{t(rest)} (mean call {t(d['call_mean_seconds'])} minus the steps)" if rest > 0 else
                 f"within the noise (the mean call, {t(d['call_mean_seconds'])}, is not longer than its steps)")
    threads = f", {d['threads']} thread(s)" if d["threads"] else ""
    path = ("feed checks, pointers, output buffers, Python -> C, the interpreter's loop" if d["backend"] == "c"
            else "feed checks, the step loop in Python, output copies")
    lines = [f"Profile: {len(d['rows'])} steps, backend {d['backend']}{threads}, {d['repeats']} calls per measurement",
             f"  one call: {t(d['call_seconds'])} (median, the usual call path); its steps "
             f"{t(d['steps_seconds'])} (mean, timed), of which output copies {t(d['copy_seconds'])};",
             f"  besides the steps (the call path: {path}): {rest_text}",
             f"  {'step':>4}  {'us':>9}  {'share':>6}  op -> shape   # created at"]
    for r in d["rows"]:
        us = f"{r['seconds'] * 1e6:9.1f}" if r["seconds"] > 0 else f"{'-':>9}"
        lines.append(f"  {r['step']:4d}  {us}  {r['share'] * 100:5.1f}%  {r['op']} -> {fmt_shape(r['shape'])} "
                     f"{r['dtype']}   # {r['source']}")
        if r["note"]:
            lines.append(f"{'':25}({r['note'].lstrip('; ')})")
    return "\n".join(lines)
