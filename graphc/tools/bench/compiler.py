"""Compiler benchmarks: what the passes and the memory planner buy, and what compiling costs.

W-mlp passes   the W-mlp training step of graphc.bench.workloads (784-512-256-10, ReLU, softmax
               cross-entropy, batch 256, float32, SGD through compile(updates=...)) on the C
               backend with the default passes and with optimize=False, next to the hand-written
               NumPy step and PyTorch CPU eager (when installed): ms per step, ratio to NumPy and
               PyTorch, plan steps, and arena bytes (schedule.plan_arena with the Function's
               arena_options) against one buffer per intermediate. Target: passes-on C step
               <= 0.8x NumPy and <= PyTorch.
compile time   deterministic random chains of elementwise ops and matmuls with fan-out (each op
               may also read an earlier value), a scalar loss, and its gradient graph from
               gc.grad, sized to ~100 / 1,000 / 10,000 nodes (graphc.graph.reachable of loss and
               gradients). compile ms = time from gc.compile(...) through the first call, minus
               the run (a second call's time); `plan` is the Function's plan.compile_seconds
               (specialise, passes, schedule) and `lower` a re-lowering of that plan by the
               backend's runner factory. Target: 1,000 nodes < 100 ms, about linear growth.
RSS            resident memory of a fresh interpreter running the passes-on W-mlp step, after
               steps 1, 10, 100, 1000 (/proc/self/statm) and its peak so far: must stay flat after
               the first call. A child process, so the numbers are the workload's and not those of
               whatever ran before in the benchmark process. The peak is VmHWM (/proc/self/status):
               Linux carries the parent's ru_maxrss over fork + exec, so the child's ru_maxrss
               starts at the benchmark process's peak (it is kept in the JSON as maxrss_bytes).
"""
from __future__ import annotations

import gc as _pygc
import json
import os
import subprocess
import sys
import time

import numpy as np

import graphc as gc

from ...compiler.schedule import plan_arena
from ...ir.graph import reachable
from .workloads import (
    MLP_SIZES,
    PAUSE_S,
    _mlp_data,
    _rel_diff,
    _torch,
    graphc_mlp_step,
    median_seconds,
    numpy_mlp_step,
    torch_mlp_step,
)

COMPILE_NODES = (100, 1000, 10000)
RSS_STEPS = 1000
TARGET_VS_NUMPY = 0.8
TARGET_COMPILE_MS_1K = 100.0
RSS_FLAT_TOLERANCE = 1 << 20  # bytes of growth between step 1 and the last step still called flat


def _backend() -> str:
    return "c" if gc.backend_info()["c_available"] else "numpy"


# -- W-mlp, passes on vs off ---------------------------------------------------------------------
def _graphc_variant(weights, sizes, dtype, lr, backend, optimize):
    """(step, params, Function) for the workloads' W-mlp graph, compiled with or without passes.

    The graph comes from workloads.graphc_mlp_step; for optimize=False its loss and updates are
    compiled again with no passes (the first Function is never called, so never specialised)."""
    step, params, f = graphc_mlp_step(weights, sizes, dtype, lr, backend)
    if not optimize:
        f = gc.compile(f.outputs[0], backend=backend, updates=dict(f.updates), optimize=False)
        step = lambda xv, yv, f=f: f(x=xv, y=yv)  # noqa: E731
    return step, params, f


def _arena_row(f) -> dict:
    plan = f._last_plan
    arena = plan_arena(plan, **f.arena_options(plan))
    row = dict(steps=len(plan.steps), arena_bytes=arena.nbytes, naive_bytes=arena.naive_bytes,
               inplace_steps=len(arena.inplace))
    runner = next(run for p, run in f._plans.values() if p is plan)
    lowered = getattr(runner, "lowered", None)
    if lowered is not None:  # the C runner's real per-call buffer: arena plus kernel scratch
        row["c_arena_bytes"] = int(lowered.arena_bytes)
    return row


def passes_table(batch=256, sizes=MLP_SIZES, dtype="float32", repeats=20, lr=0.01, torch=True, rounds=3) -> list:
    """One row per implementation: impl, passes ("on"/"off"/None), median_ms, vs_numpy, vs_torch,
    max_rel_diff of the parameters after one step against the hand-written NumPy step, and for
    graphc steps, arena_bytes, naive_bytes, inplace_steps (and c_arena_bytes on C).

    Implementations take turns (`rounds` times, each keeping its best median) with a pause before
    each turn, as workloads.mlp_table does, to be fair on a small, loaded machine."""
    backend = _backend()
    weights, x, y = _mlp_data(batch, sizes, dtype)
    ref = [w.copy() for w in weights]
    numpy_mlp_step(ref, lr)(x, y)
    impls = []  # (row, step)
    for optimize in (True, False):
        step, params, f = _graphc_variant([w.copy() for w in weights], sizes, dtype, lr, backend, optimize)
        step(x, y)
        row = dict(impl=f"graphc {backend}", passes="on" if optimize else "off",
                   max_rel_diff=max(_rel_diff(p.value, r) for p, r in zip(params, ref)), **_arena_row(f))
        impls.append((row, step))
    impls.append((dict(impl="numpy hand-written", passes=None, max_rel_diff=0.0),
                  numpy_mlp_step([w.copy() for w in weights], lr)))
    tm = _torch() if torch else None
    if tm is not None:
        tstep, ps = torch_mlp_step([w.copy() for w in weights], lr)
        xt, yt = tm.from_numpy(x), tm.from_numpy(y)
        tstep(xt, yt)
        impls.append((dict(impl=f"pytorch {tm.__version__} eager", passes=None,
                           max_rel_diff=max(_rel_diff(p.detach().numpy(), r) for p, r in zip(ps, ref))),
                      lambda *_, tstep=tstep: tstep(xt, yt)))
    best = [float("inf")] * len(impls)
    for _ in range(rounds):
        for k, (_, step) in enumerate(impls):
            time.sleep(PAUSE_S)
            best[k] = min(best[k], median_seconds(lambda step=step: step(x, y), repeats))
    rows = []
    for (row, _), sec in zip(impls, best):
        rows.append({**row, "median_ms": sec * 1e3})
    base = next(r["median_ms"] for r in rows if r["impl"] == "numpy hand-written")
    torch_ms = next((r["median_ms"] for r in rows if r["impl"].startswith("pytorch")), None)
    for r in rows:
        r["vs_numpy"] = r["median_ms"] / base
        r["vs_torch"] = r["median_ms"] / torch_ms if torch_ms else None
    return rows


def passes_targets(rows) -> dict:
    on = next(r for r in rows if r.get("passes") == "on")
    off = next(r for r in rows if r.get("passes") == "off")
    return dict(target_vs_numpy=TARGET_VS_NUMPY, on_vs_numpy=on["vs_numpy"],
                met_vs_numpy=on["vs_numpy"] <= TARGET_VS_NUMPY, on_vs_torch=on["vs_torch"],
                met_vs_torch=None if on["vs_torch"] is None else on["vs_torch"] <= 1.0,
                speedup_on_vs_off=off["median_ms"] / on["median_ms"],
                arena_on_vs_off=on["arena_bytes"] / off["arena_bytes"] if off["arena_bytes"] else None)


# -- compile time --------------------------------------------------------------------------------
def random_graph(n_ops: int, seed: int = 0, width: int = 8, n_weights: int = 4):
    """A chain of n_ops random ops with fan-out, its mean loss and the gradients of every parameter.

    Each op reads the previous value and, for binary ops, a random earlier one; matmuls and bias
    adds read parameters. Values stay bounded (tanh/sigmoid squash them often, products take a
    tanh of their second operand), so every size also runs without overflow.
    Returns (placeholder x, [loss] + gradients)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, width), "float32")
    ws = [gc.parameter((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), name=f"w{i}")
          for i in range(n_weights)]
    bs = [gc.parameter(np.zeros(width, np.float32), name=f"b{i}") for i in range(n_weights)]
    values = [x]
    for _ in range(n_ops):
        a = values[-1]
        b = values[int(rng.integers(len(values)))]
        r = rng.random()
        if r < 0.15:
            v = a @ ws[int(rng.integers(n_weights))]
        elif r < 0.25:
            v = a + bs[int(rng.integers(n_weights))]
        elif r < 0.55:
            v = (gc.tanh, gc.sigmoid, gc.relu)[int(rng.integers(3))](a)
        elif r < 0.70:
            v = a + b
        elif r < 0.85:
            v = a * gc.tanh(b)
        else:
            v = a * float(rng.uniform(0.5, 1.0))
        values.append(v)
    loss = gc.mean(values[-1]) + gc.mean(values[len(values) // 2])
    return x, [loss] + gc.grad(loss, ws + bs)


def sized_graph(target_nodes: int, seed: int = 0):
    """random_graph with its op count tuned so reachable(loss + gradients) is close to target_nodes.
    Returns (x, outputs, nodes, grad_seconds)."""
    n_ops = max(1, target_nodes // 4)
    for _ in range(3):
        t0 = time.perf_counter()
        x, outs = random_graph(n_ops, seed)
        grad_s = time.perf_counter() - t0
        nodes = len(reachable(outs))
        if abs(nodes - target_nodes) <= max(2, target_nodes // 50):
            break
        n_ops = max(1, round(n_ops * target_nodes / nodes))
    return x, outs, nodes, grad_s


def compile_table(node_counts=COMPILE_NODES, repeats=5, batch=4) -> list:
    """Compile time vs graph size: one row per target node count (medians over `repeats` fresh
    Functions of the same graph): nodes, steps (after passes), grad_ms (building the gradient graph,
    not part of compiling), compile_ms (gc.compile through the first call, minus the run),
    plan_ms (specialise + passes + schedule), lower_ms (the backend runner's lowering of that
    plan, timed again on its own), run_ms (a second call), us_per_node = compile_ms / nodes * 1000."""
    backend = _backend()
    rows = []
    for target in node_counts:
        x, outs, nodes, grad_s = sized_graph(int(target))
        X = np.random.default_rng(1).standard_normal((batch, x.shape[1])).astype(np.float32)
        compile_s, plan_s, lower_s, run_s, steps = [], [], [], [], 0
        for _ in range(max(1, repeats)):
            _pygc.collect()
            t0 = time.perf_counter()
            f = gc.compile(outs, backend=backend)
            f(x=X)
            t1 = time.perf_counter()
            f(x=X)
            t2 = time.perf_counter()
            plan = f._last_plan
            t3 = time.perf_counter()
            f._runner(plan)
            lower_s.append(time.perf_counter() - t3)
            run_s.append(t2 - t1)
            compile_s.append(max((t1 - t0) - (t2 - t1), 0.0))
            plan_s.append(plan.compile_seconds)
            steps = len(plan.steps)
            del f, plan
        compile_ms = float(np.median(compile_s)) * 1e3
        rows.append(dict(target_nodes=int(target), nodes=nodes, steps=steps, grad_ms=grad_s * 1e3,
                         compile_ms=compile_ms, plan_ms=float(np.median(plan_s)) * 1e3,
                         lower_ms=float(np.median(lower_s)) * 1e3, run_ms=float(np.median(run_s)) * 1e3,
                         ms_per_node=compile_ms / nodes, us_per_node=compile_ms / nodes * 1e3, backend=backend))
    return rows


def compile_targets(rows) -> dict:
    out = dict(target_ms_1k=TARGET_COMPILE_MS_1K)
    k1 = next((r for r in rows if r["target_nodes"] == 1000), None)
    if k1 is not None:
        out["ms_1k"] = k1["compile_ms"]
        out["met_1k"] = k1["compile_ms"] < TARGET_COMPILE_MS_1K
    if len(rows) >= 2:
        lo, hi = min(rows, key=lambda r: r["nodes"]), max(rows, key=lambda r: r["nodes"])
        # per-node cost of the largest graph over that of the smallest; 1.0 is linear growth
        out["per_node_growth"] = hi["us_per_node"] / lo["us_per_node"] if lo["us_per_node"] else None
        mid = [r for r in rows if r["nodes"] >= 500]  # tiny graphs are dominated by fixed costs
        if len(mid) >= 2:
            a, b = min(mid, key=lambda r: r["nodes"]), max(mid, key=lambda r: r["nodes"])
            out["per_node_growth_from_1k"] = b["us_per_node"] / a["us_per_node"] if a["us_per_node"] else None
    return out


# -- resident memory -----------------------------------------------------------------------------
def _checkpoints(steps: int) -> list:
    marks, k = [], 1
    while k < steps:
        marks.append(k)
        k *= 10
    return marks + [steps]


def _rss_bytes():
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _hwm_bytes():
    """Peak resident set of this process's address space (VmHWM): unlike ru_maxrss, it starts
    afresh at exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_bytes()


def _maxrss_bytes():
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def rss_child(steps: int = RSS_STEPS, threads=None, lr: float = 0.01) -> dict:
    """Run in the child process: compile the passes-on W-mlp step, call it `steps` times."""
    if threads:
        gc.set_num_threads(int(threads))
    backend = _backend()
    weights, x, y = _mlp_data(256, MLP_SIZES, "float32")
    step, _, _ = graphc_mlp_step(weights, MLP_SIZES, "float32", lr, backend)
    marks = set(_checkpoints(steps))
    def sample(k):
        return dict(step=k, rss_bytes=_rss_bytes(), peak_bytes=_hwm_bytes(), maxrss_bytes=_maxrss_bytes())

    rows = [sample(0)]  # compiled, not yet called
    loss = None
    for k in range(1, steps + 1):
        loss = step(x, y)
        if k in marks:
            rows.append(sample(k))
    return dict(backend=backend, steps=steps, rows=rows, final_loss=float(loss))


def rss_series(steps: int = RSS_STEPS, threads=None) -> dict:
    """RSS after steps 1, 10, 100, ..., `steps` of the passes-on W-mlp step, in a fresh interpreter."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))  # holds graphc/
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import json, sys; from graphc.tools.bench.compiler import rss_child; "
            "print(json.dumps(rss_child(int(sys.argv[1]), int(sys.argv[2]) or None)))")
    proc = subprocess.run([sys.executable, "-c", code, str(int(steps)), str(int(threads or 0))],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the RSS child process failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    first = next((r for r in rows if r["step"] == 1), None)
    last = rows[-1]
    for r in rows:
        r["rss_mib"] = r["rss_bytes"] / 2**20 if r["rss_bytes"] is not None else None
        r["peak_mib"] = r["peak_bytes"] / 2**20 if r["peak_bytes"] is not None else None
        r["vs_step1_mib"] = ((r["rss_bytes"] - first["rss_bytes"]) / 2**20
                             if first and r["rss_bytes"] is not None and first["rss_bytes"] is not None else None)
    growth = (last["rss_bytes"] - first["rss_bytes"]
              if first and last["rss_bytes"] is not None and first["rss_bytes"] is not None else None)
    out["growth_after_step1_bytes"] = growth
    out["flat"] = None if growth is None else growth <= RSS_FLAT_TOLERANCE
    out["flat_tolerance_bytes"] = RSS_FLAT_TOLERANCE
    return out


# -- the suite -----------------------------------------------------------------------------------
def compiler_suite(repeats=None, node_counts=None, rss_steps=None, threads=None) -> dict:
    """All three tables, as `graphc bench --suite compiler` reports them."""
    # a smoke run (--repeats 1 or 2) takes one turn per implementation instead of three
    passes = passes_table(repeats=repeats or 20, rounds=1 if repeats and repeats < 3 else 3)
    compile_rows = compile_table(node_counts or COMPILE_NODES, repeats=min(repeats, 5) if repeats else 5)
    rss = rss_series(rss_steps or RSS_STEPS, threads)
    return {"mlp_passes": passes, "mlp_passes_targets": passes_targets(passes),
            "compile_time": compile_rows, "compile_time_targets": compile_targets(compile_rows), "rss": rss}


def _yes(v) -> str:
    return "-" if v is None else ("met" if v else "NOT met")


def format_tables(result: dict) -> str:
    from . import _table
    out = [_table(result["mlp_passes"], [
        ("impl", "W-mlp step, passes on/off (784-512-256-10, batch 256, f32)", "{}"), ("passes", "passes", "{}"),
        ("steps", "steps", "{}"), ("median_ms", "ms", "{:.2f}"), ("vs_numpy", "x numpy", "{:.2f}"),
        ("vs_torch", "x torch", "{:.2f}"), ("arena_bytes", "arena bytes", "{:,}"),
        ("naive_bytes", "naive bytes", "{:,}"), ("c_arena_bytes", "C arena+scratch", "{:,}"),
        ("max_rel_diff", "param diff", "{:.1e}")])]
    t = result["mlp_passes_targets"]
    torch_part = ("no PyTorch" if t["on_vs_torch"] is None
                  else f"<= PyTorch: {t['on_vs_torch']:.2f}x -> {_yes(t['met_vs_torch'])}")
    arena = f"; arena on/off {t['arena_on_vs_off']:.2f}x" if t["arena_on_vs_off"] else ""
    out.append(f"target: passes-on step <= {t['target_vs_numpy']}x NumPy: {t['on_vs_numpy']:.2f}x -> "
               f"{_yes(t['met_vs_numpy'])}; {torch_part}. passes on vs off: {t['speedup_on_vs_off']:.2f}x "
               f"faster{arena}")
    out.append("")
    out.append(_table(result["compile_time"], [
        ("target_nodes", "compile time (random chains + gradients)", "{:,}"), ("nodes", "nodes", "{:,}"),
        ("steps", "steps", "{:,}"), ("grad_ms", "gc.grad ms", "{:.1f}"), ("compile_ms", "compile ms", "{:.1f}"),
        ("plan_ms", "plan ms", "{:.1f}"), ("lower_ms", "lower ms", "{:.1f}"), ("run_ms", "run ms", "{:.2f}"),
        ("ms_per_node", "ms/node", "{:.4f}")]))
    t = result["compile_time_targets"]
    parts = []
    if "ms_1k" in t:
        parts.append(f"1,000 nodes < {t['target_ms_1k']:.0f} ms: {t['ms_1k']:.1f} ms -> {_yes(t['met_1k'])}")
    if t.get("per_node_growth") is not None:
        g = f"per-node cost, largest / smallest graph: {t['per_node_growth']:.2f}x"
        if t.get("per_node_growth_from_1k") is not None:
            g += f" (from 1,000 nodes up: {t['per_node_growth_from_1k']:.2f}x; 1.00 = linear)"
        parts.append(g)
    if parts:
        out.append("target: " + "; ".join(parts))
    out.append("")
    rss = result["rss"]
    out.append(_table(rss["rows"], [
        ("step", f"RSS after step (W-mlp, passes on, {rss['backend']}, fresh process; 0 = compiled)", "{:,}"),
        ("rss_mib", "RSS MiB", "{:.1f}"), ("vs_step1_mib", "vs step 1 MiB", "{:+.2f}"),
        ("peak_mib", "peak MiB", "{:.1f}")]))
    if rss["growth_after_step1_bytes"] is not None:
        out.append(f"flat after the first call (growth <= {rss['flat_tolerance_bytes'] / 2**20:.0f} MiB): "
                   f"{rss['growth_after_step1_bytes'] / 2**20:+.2f} MiB from step 1 to step {rss['steps']:,} -> "
                   f"{'yes' if rss['flat'] else 'NO'}")
    return "\n".join(out)
