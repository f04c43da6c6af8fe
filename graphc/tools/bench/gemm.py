"""GEMM benchmark: graphc's C kernel (gc_sgemm / gc_dgemm) against numpy.matmul, each in its own process.

    python -m graphc.tools.bench.gemm [--threads N] [--repeats R] [--rounds 3] [--sizes 256,512,...] [--no-extra]

Each library runs in a worker subprocess of its own (the peers suite's worker, driven over a pipe),
with the same thread count (OMP/OPENBLAS/GRAPHC_NUM_THREADS in its environment, threadpoolctl's limit
on numpy's BLAS): in one process, idle OpenBLAS workers spin (~0.1 s) through graphc's next call and
the two pools fight for the cores, so a same-process table measured that contention (`graphc bench
--mixed` measures it on purpose). Both workers build the same operands from the same seed. Per shape,
`rounds` turns alternate between the workers (the first one rotating), with a pause before each
turn; a turn is a batch of `repeats` calls after warm-up and gives the median call, and each
library's best turn is reported, so a burst of load from another process spoils one turn rather
than the comparison. The graphc worker also checks its product against a float64 single-thread
numpy.matmul of the same operands (max_rel_err). GRAPHC_GEMM_MODULE names another cffi module to
measure (e.g. a development build of csrc/gemm.c); by default graphc._cgraphc.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import time

import numpy as np

# An MLP 784-512-256-10 training step on a batch of 256: (name, M, N, K, transA, transB).
# Forward  h = x @ W;  backward  dW = x^T @ g (transA),  dx = g @ W^T (transB).
MLP_SHAPES = [
    ("fwd1 x@W1", 256, 512, 784, False, False),
    ("fwd2 h1@W2", 256, 256, 512, False, False),
    ("fwd3 h2@W3", 256, 10, 256, False, False),
    ("dW3 h2^T@g3", 256, 10, 256, True, False),
    ("dh2 g3@W3^T", 256, 256, 10, False, True),
    ("dW2 h1^T@g2", 512, 256, 256, True, False),
    ("dh1 g2@W2^T", 256, 512, 256, False, True),
    ("dW1 x^T@g1", 784, 512, 256, True, False),
    ("dx g1@W1^T", 256, 784, 512, False, True),
]

_PAUSE_S = 0.25  # longer than the spin-wait of idle workers (OpenBLAS: 2^28 cycles, ~0.1 s; graphc: ~50 us)


def load_lib():
    """(ffi, lib, module name) of the C extension to measure."""
    names = [os.environ["GRAPHC_GEMM_MODULE"]] if os.environ.get("GRAPHC_GEMM_MODULE") else []
    names += ["graphc._cgraphc", "_gemm_dev"]
    err = None
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            err = exc
            continue
        if hasattr(mod.lib, "gc_sgemm"):
            return mod.ffi, mod.lib, name
    raise ImportError(f"no graphc C extension with a GEMM found ({err})")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _operands(shape, dtype, seed):
    _, M, N, K, tA, tB = shape
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M) if tA else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tB else (K, N)).astype(dtype)
    return A, B, np.empty((M, N), dtype)


def _gemm_caller(ffi, lib, A, B, C, transA, transB):
    f = lib.gc_sgemm if C.dtype == np.float32 else lib.gc_dgemm
    ctype = "float *" if C.dtype == np.float32 else "double *"
    M, N = C.shape
    K = A.shape[0] if transA else A.shape[1]
    pa, pb, pc = (ffi.cast(ctype, x.ctypes.data) for x in (A, B, C))
    lda, ldb, ldc = A.shape[1], B.shape[1], N

    def run():
        f(int(transA), int(transB), M, N, K, pa, lda, pb, ldb, 0.0, pc, ldc, ffi.NULL, 0, 0.0)

    return run


def worker_main(library: str) -> int:
    """Serve timings of one library ('graphc' or 'numpy') over stdin/stdout (see peers.worker_main)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(**msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    threads = int(os.environ.get("GRAPHC_BENCH_THREADS", "1"))
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")
    except ImportError:  # OPENBLAS_NUM_THREADS in the environment still applies
        threadpool_limits = None
    if library == "graphc":
        ffi, lib, name = load_lib()
        lib.gc_set_num_threads(threads)
        version = f"{name}, SIMD level {lib.gc_simd_level()}"
    else:
        version = f"numpy {np.__version__}"
    send(status="ok", version=version, pid=os.getpid())
    cache = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("cmd") != "time":
            break
        key = (tuple(msg["shape"]), msg["dtype"])
        if key not in cache:
            name, M, N, K, tA, tB = msg["shape"]
            A, B, C = _operands(msg["shape"], np.dtype(msg["dtype"]), msg["seed"])
            err = None
            if library == "graphc":
                run = _gemm_caller(ffi, lib, A, B, C, tA, tB)
                run()
                opA, opB = (A.T if tA else A).astype(np.float64), (B.T if tB else B).astype(np.float64)
                with (threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext()):
                    ref = opA @ opB  # one BLAS thread: no pool woken to spin through the timings
                err = float(np.max(np.abs(C - ref), initial=0.0)) / max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
            else:
                opA, opB = (A.T if tA else A), (B.T if tB else B)
                run = (lambda a, b, c: lambda: np.matmul(a, b, out=c))(opA, opB, C)
            cache[key] = (run, err)
        run, err = cache[key]
        send(seconds=_median_time(run, msg["repeats"]), max_rel_err=err)
    return 0


def gemm_table(sizes=(256, 512, 1024, 2048), dtypes=("float32", "float64"), threads=None, repeats=5,
               extra_shapes=True, rounds=3, pause_s: float = _PAUSE_S) -> list[dict]:
    """Time C = op(A) @ op(B) with graphc's GEMM and numpy.matmul, each in its own worker process.

    Returns one dict per (shape, dtype): name, M, N, K, transA, transB, dtype, threads,
    graphc_s / numpy_s (seconds: best of `rounds` turn medians), graphc_gflops / numpy_gflops,
    ratio (graphc speed / numpy speed), max_rel_err (graphc vs float64 numpy, relative to max |C|),
    graphc_pid / numpy_pid (the worker processes)."""
    from .peers import _Worker
    _, lib, _ = load_lib()
    nt = int(threads) if threads else lib.gc_get_num_threads()
    shapes = [(f"{n}^3", n, n, n, False, False) for n in sizes]
    if extra_shapes:
        shapes += MLP_SHAPES
    workers = {name: _Worker(name, nt, module="graphc.tools.bench.gemm") for name in ("graphc", "numpy")}
    rows = []
    try:
        pids = {name: w.recv()["pid"] for name, w in workers.items()}
        for dtype in dtypes:
            dt = np.dtype(dtype)
            for seed, shape in enumerate(shapes):
                name, M, N, K, tA, tB = shape
                # Fewer repeats would be noise-dominated for sub-millisecond shapes.
                reps = max(repeats, int(min(100, 1e8 / max(2 * M * N * K, 1))))
                best = {"graphc": float("inf"), "numpy": float("inf")}
                err = None
                for r in range(max(1, rounds)):
                    for lib_name in (("graphc", "numpy") if r % 2 == 0 else ("numpy", "graphc")):
                        time.sleep(pause_s)
                        reply = workers[lib_name].call(cmd="time", shape=list(shape), dtype=dt.name, seed=seed,
                                                       repeats=reps)
                        best[lib_name] = min(best[lib_name], reply["seconds"])
                        err = reply["max_rel_err"] if lib_name == "graphc" else err
                flops = 2.0 * M * N * K
                rows.append(dict(
                    name=name, M=M, N=N, K=K, transA=tA, transB=tB, dtype=dt.name, threads=nt,
                    graphc_s=best["graphc"], numpy_s=best["numpy"],
                    graphc_gflops=flops / best["graphc"] / 1e9, numpy_gflops=flops / best["numpy"] / 1e9,
                    ratio=best["numpy"] / best["graphc"], max_rel_err=err,
                    graphc_pid=pids["graphc"], numpy_pid=pids["numpy"],
                ))
    finally:
        for w in workers.values():
            w.close()
    return rows


def format_table(rows) -> str:
    head = f"{'shape':<14}{'M':>6}{'N':>6}{'K':>6} {'op':<5}{'dtype':<9}{'graphc':>9}{'numpy':>9}{'ratio':>7}"
    lines = [head, f"{'':<37}{'':<14}{'GFLOP/s':>9}{'GFLOP/s':>9}", "-" * len(head)]
    for r in rows:
        op = ("T" if r["transA"] else "N") + ("T" if r["transB"] else "N")
        lines.append(f"{r['name']:<14}{r['M']:>6}{r['N']:>6}{r['K']:>6} {op:<5}{r['dtype']:<9}"
                     f"{r['graphc_gflops']:>9.1f}{r['numpy_gflops']:>9.1f}{r['ratio']:>7.2f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="threads for both libraries")
    p.add_argument("--repeats", type=int, default=5, help="calls per batch (more for small shapes)")
    p.add_argument("--rounds", type=int, default=3, help="alternating batches per library")
    p.add_argument("--sizes", default="256,512,1024,2048", help="square sizes, comma separated")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--no-extra", action="store_true", help="skip the MLP training-step shapes")
    args = p.parse_args(argv)
    _, lib, modname = load_lib()
    nt = args.threads or lib.gc_get_num_threads()
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "unknown (threadpoolctl not installed: numpy threads not pinned)"
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"threads: {nt} (graphc and numpy, each in its own process)   module: {modname}   "
          f"SIMD level: {lib.gc_simd_level()}")
    print(f"numpy {np.__version__}, BLAS: {blas}")
    rows = gemm_table(sizes=tuple(int(s) for s in args.sizes.split(",") if s),
                      dtypes=tuple(args.dtypes.split(",")), threads=nt, repeats=args.repeats,
                      extra_shapes=not args.no_extra, rounds=args.rounds)
    print(format_table(rows))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    main()
