"""Mixed use: graphc and NumPy in ONE process, and graphc on a machine with another busy process.

    graphc bench --mixed [--mixed-size 1024] [--rounds 5] [--repeats 15] [--threads N]

GEMM      graphc's n x n float32 GEMM (a compiled `a @ b` of two placeholders on the C backend, as a
          user program calls it) and NumPy's (np.matmul into a preallocated output), both with the same
          thread count. Per round: graphc alone (R calls), NumPy alone (R calls), then R pairs
          interleaved call by call (graphc, NumPy, graphc, ...), each call timed on its own. Reported:
          GFLOP/s alone and interleaved (median over rounds of the per-round medians) and
          interleaved / alone. Control: R graphc calls each after a pure-Python busy loop as long
          as NumPy's call (no NumPy, no OpenBLAS): what pausing between calls costs graphc by
          itself (its worker has gone to sleep, its core idled). Issue 14's target: both >= 0.9
          (thread pools that spin after a call,
          or want the same cores, slow the other library down). graphc's pool spins at most ~50 us
          when idle; OpenBLAS's workers spin 2^OPENBLAS_THREAD_TIMEOUT cycles (default 2^28, ~0.1 s)
          after every NumPy call, on the cores graphc's next call wants: graphc ends them before a
          large call (graphc/backends/openblas.py); `GRAPHC_RELEASE_OPENBLAS=0 graphc bench --mixed`
          shows the cost of not doing so, and `OPENBLAS_THREAD_TIMEOUT=4` (read when NumPy loads
          OpenBLAS) the alternative of making them sleep at once.
loaded    the small MLP step (64-32-10, batch 32, float32, SGD through compile(updates=...)) at 1 and
          2 graphc threads, without and with one busy-loop process (started here, pinned
          to the last CPU, killed afterwards), 1- and 2-thread runs interleaved per round. Target:
          with the busy process, 2 threads no slower than 1. The C pool counts the regions it runs
          on more than one thread: when the 2-thread steps ran none, no kernel of the step was
          large enough to split, both thread counts ran the same code, and the target holds by
          construction (the timed ratio then only shows the machine's noise).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import numpy as np

import graphc as gc

from .workloads import PAUSE_S, _mlp_data, _rel_diff, graphc_mlp_step

ROUNDS = 5
REPEATS = 15
TARGET_RATIO = 0.9
SMALL_SIZES = (64, 32, 10)


def _blas_limits(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gemm_mixed(size: int = 1024, rounds: int = ROUNDS, repeats: int = REPEATS, threads: int = 0) -> dict:
    """graphc vs NumPy n^3 float32 GEMM, alone and interleaved call by call in this process."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size)).astype(np.float32)
    B = rng.standard_normal((size, size)).astype(np.float32)
    C = np.empty((size, size), np.float32)
    a = gc.placeholder("a", (size, size), "float32")
    b = gc.placeholder("b", (size, size), "float32")
    f = gc.compile(a @ b, backend="c")
    ours = lambda: f(a=A, b=B)  # noqa: E731
    theirs = lambda: np.matmul(A, B, out=C)  # noqa: E731
    diff = _rel_diff(ours(), A.astype(np.float64) @ B)
    per_round = {k: [] for k in ("graphc_alone", "numpy_alone", "graphc_mixed", "numpy_mixed", "graphc_paused")}
    for _ in range(max(1, rounds)):
        for key, fn in (("graphc_alone", ours), ("numpy_alone", theirs)):
            fn()
            per_round[key].append(float(np.median([_timed(fn) for _ in range(max(1, repeats))])))
            time.sleep(PAUSE_S)  # the other library's workers have gone to sleep before its turn
        ours(), theirs()
        pairs = [(_timed(ours), _timed(theirs)) for _ in range(max(1, repeats))]
        per_round["graphc_mixed"].append(float(np.median([p[0] for p in pairs])))
        per_round["numpy_mixed"].append(float(np.median([p[1] for p in pairs])))
        pause = per_round["numpy_alone"][-1]
        paused = []
        for _ in range(max(1, repeats)):
            _busy_wait(pause)
            paused.append(_timed(ours))
        per_round["graphc_paused"].append(float(np.median(paused)))
        time.sleep(PAUSE_S)
    flops = 2.0 * size ** 3
    gflops = {k: flops / float(np.median(v)) / 1e9 for k, v in per_round.items()}
    rows = []
    for lib, impl in (("graphc", "graphc c (compiled a @ b)"), ("numpy", "numpy matmul")):
        alone, mixed = gflops[f"{lib}_alone"], gflops[f"{lib}_mixed"]
        rows.append(dict(impl=impl, size=size, threads=threads, alone_gflops=alone, interleaved_gflops=mixed,
                         ratio=mixed / alone, met=mixed / alone >= TARGET_RATIO,
                         max_rel_diff=diff if lib == "graphc" else None))
    alone, paused = gflops["graphc_alone"], gflops["graphc_paused"]
    rows.append(dict(impl="control: graphc c after a pause as long", size=size, threads=threads, alone_gflops=alone,
                     interleaved_gflops=paused, ratio=paused / alone, met=None, max_rel_diff=None))
    return dict(rows=rows, target=TARGET_RATIO, rounds=rounds, repeats=repeats)


def _busy_process(cpu: int) -> subprocess.Popen:
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def loaded_small_mlp(rounds: int = ROUNDS, repeats: int = REPEATS, busy: bool = True,
                     thread_counts=(1, 2), min_batch_s: float = 2e-3) -> dict:
    """The small MLP step at 1 and 2 graphc threads, without and with one busy-loop process."""
    from .peers import _calibrate, _round
    weights, x, y = _mlp_data(32, SMALL_SIZES, "float32")
    step_fn, _, _ = graphc_mlp_step(weights, SMALL_SIZES, "float32", 0.01, "c")
    step = lambda: step_fn(x, y)  # noqa: E731
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    old = gc.backend_info()["threads"]
    from ...backends.c import lib
    rows = []
    try:
        for load in (("none", "busy") if busy else ("none",)):
            proc = _busy_process(cpus[-1]) if load == "busy" else None
            label = f"1 busy process on CPU {cpus[-1]}" if proc else "no busy process"
            try:
                if proc:
                    time.sleep(0.2)  # let it start spinning
                gc.set_num_threads(thread_counts[0])
                batch = _calibrate(step, min_batch_s)
                times = {t: [] for t in thread_counts}
                regions = dict.fromkeys(thread_counts, 0)
                for r in range(max(1, rounds)):
                    order = thread_counts if r % 2 == 0 else thread_counts[::-1]
                    for t in order:
                        gc.set_num_threads(t)
                        time.sleep(PAUSE_S)
                        before = lib.gc_pool_regions()
                        times[t].append(_round(step, batch, repeats))
                        regions[t] += lib.gc_pool_regions() - before
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
            base = float(np.median(times[thread_counts[0]]))
            for t in thread_counts:
                med = float(np.median(times[t]))
                rows.append(dict(load=label, threads=t, median_us=med * 1e6, vs_1_thread=med / base,
                                 busy_pid=proc.pid if proc else None, parallel_regions=int(regions[t])))
    finally:
        gc.set_num_threads(old)
    busy_rows = [r for r in rows if r["busy_pid"]]
    # 0 regions: the 2-thread steps never split work, so they ran the 1-thread code
    same_code = len(busy_rows) > 1 and busy_rows[-1]["parallel_regions"] == 0
    met = (same_code or busy_rows[-1]["vs_1_thread"] <= 1.0) if len(busy_rows) > 1 else None
    return dict(rows=rows, met=met, same_code=same_code, cpus=len(cpus))


def mixed_suite(size: int = 1024, rounds: int = ROUNDS, repeats: int = REPEATS, threads=None, busy: bool = True,
                log=None) -> dict:
    from .peers import all_cpus
    n = int(threads or all_cpus())
    if not gc.backend_info()["c_available"]:
        return dict(error="graphc C extension not built")
    old = gc.backend_info()["threads"]
    gc.set_num_threads(n)
    try:
        with _blas_limits(n):
            if log:
                log(f"mixed: {size}^2 float32 GEMM, graphc and numpy in one process ...")
            gemm = gemm_mixed(size, rounds, repeats, n)
            if log:
                log("mixed: small MLP step at 1 and 2 threads, without and with a busy process ...")
            loaded = loaded_small_mlp(rounds, repeats, busy)
    finally:
        gc.set_num_threads(old)
    from ...backends import openblas
    return dict(threads=n, gemm=gemm, loaded=loaded, release_openblas=openblas.enabled(),
                openblas_thread_timeout=os.environ.get("OPENBLAS_THREAD_TIMEOUT"))


def format_tables(res: dict) -> str:
    from . import _table
    if "error" in res:
        return f"mixed: {res['error']}"
    g, ld = res["gemm"], res["loaded"]
    size = g["rows"][0]["size"]
    out = [_table(g["rows"], [("impl", f"mixed: {size}^2 f32 GEMM in one process, {res['threads']} threads", "{}"),
                              ("alone_gflops", "alone GFLOP/s", "{:.1f}"),
                              ("interleaved_gflops", "interleaved", "{:.1f}"),
                              ("ratio", f"ratio (>= {g['target']})", "{:.2f}"),
                              ("met", "met", "{}")]),
           "(control: each graphc call after a Python busy loop as long as NumPy's call, no NumPy:\n"
           " what the pause alone costs graphc, its worker asleep and its second core idle)",
           # OpenBLAS's idle workers busy-wait 2^OPENBLAS_THREAD_TIMEOUT cycles (default 28, ~0.1 s)
           # after each call, on the cores graphc's next call wants; 4 makes them sleep at once
           "OPENBLAS_THREAD_TIMEOUT=" + (res.get("openblas_thread_timeout") or "unset (OpenBLAS default 28: "
                                         "its idle workers spin ~2^28 cycles after each call)"),
           "graphc ends OpenBLAS's idle workers before large calls: " + (
               "yes (GRAPHC_RELEASE_OPENBLAS=0 turns it off)" if res.get("release_openblas")
               else "no (GRAPHC_RELEASE_OPENBLAS=0)"),
           ""]
    out.append(_table(ld["rows"], [("load", "small MLP step (64-32-10, b32, f32), graphc c", "{}"),
                                   ("threads", "threads", "{}"), ("median_us", "us", "{:.1f}"),
                                   ("vs_1_thread", "x 1 thread", "{:.2f}"),
                                   ("parallel_regions", "regions on 2+ threads", "{}")]))
    if ld["met"] is not None:
        why = (" (the 2-thread steps ran no region on two threads: the same code as 1 thread, so the"
               " ratio is the machine's noise)" if ld.get("same_code") else "")
        out.append(f"loaded-machine target (2 threads <= 1 thread with a busy process): "
                   f"{'met' if ld['met'] else 'missed'}{why}")
    return "\n".join(out)
