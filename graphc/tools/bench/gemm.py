"""GEMM benchmark: graphc's C kernel (gc_sgemm / gc_dgemm) against numpy.matmul, side by side.

    python -m graphc.bench.gemm [--threads N] [--repeats R] [--sizes 256,512,...] [--no-extra]

Both libraries get the same thread count (numpy's BLAS through threadpoolctl when installed).
Timing: per shape, `rounds` alternating batches (graphc, numpy, graphc, ...) of `repeats` calls
after warm-up, with a short pause when switching library (idle BLAS workers, and graphc's
for ~50 us, spin for a while after a call and would steal the other library's cores). Each batch gives a median; the
best batch of each library is reported, so a burst of load from another process on a shared
machine spoils one batch rather than the comparison. GRAPHC_GEMM_MODULE names another cffi module
to measure (e.g. a development build of csrc/gemm.c); by default graphc._cgraphc.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
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


@contextlib.contextmanager
def _numpy_threads(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy keeps its own default (OPENBLAS_NUM_THREADS decides)
        yield False
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield True


def _median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


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


def gemm_table(sizes=(256, 512, 1024, 2048), dtypes=("float32", "float64"), threads=None, repeats=5,
               extra_shapes=True, rounds=3) -> list[dict]:
    """Time C = op(A) @ op(B) with graphc's GEMM and numpy.matmul on the same operands.

    Returns one dict per (shape, dtype): name, M, N, K, transA, transB, dtype, threads,
    graphc_s / numpy_s (seconds: best of `rounds` batch medians), graphc_gflops / numpy_gflops,
    ratio (graphc speed / numpy speed), max_rel_err (graphc vs numpy, relative to max |C|)."""
    ffi, lib, _ = load_lib()
    nt = int(threads) if threads else lib.gc_get_num_threads()
    shapes = [(f"{n}^3", n, n, n, False, False) for n in sizes]
    if extra_shapes:
        shapes += MLP_SHAPES
    rng = np.random.default_rng(0)
    rows = []
    old = lib.gc_get_num_threads()
    lib.gc_set_num_threads(nt)
    try:
        with _numpy_threads(nt):
            for dtype in dtypes:
                dt = np.dtype(dtype)
                for name, M, N, K, tA, tB in shapes:
                    A = rng.standard_normal((K, M) if tA else (M, K)).astype(dt)
                    B = rng.standard_normal((N, K) if tB else (K, N)).astype(dt)
                    opA, opB = (A.T if tA else A), (B.T if tB else B)
                    C_ours, C_np = np.empty((M, N), dt), np.empty((M, N), dt)
                    # Fewer repeats would be noise-dominated for sub-millisecond shapes.
                    reps = max(repeats, int(min(100, 1e8 / max(2 * M * N * K, 1))))
                    run = _gemm_caller(ffi, lib, A, B, C_ours, tA, tB)
                    t_ours = t_np = float("inf")
                    for _ in range(max(1, rounds)):
                        t_ours = min(t_ours, _median_time(run, reps))
                        time.sleep(_PAUSE_S)
                        t_np = min(t_np, _median_time(lambda: np.matmul(opA, opB, out=C_np), reps))  # noqa: B023
                        time.sleep(_PAUSE_S)
                    flops = 2.0 * M * N * K
                    scale = max(float(np.max(np.abs(C_np))), 1e-30)
                    rows.append(dict(
                        name=name, M=M, N=N, K=K, transA=tA, transB=tB, dtype=dt.name, threads=nt,
                        graphc_s=t_ours, numpy_s=t_np,
                        graphc_gflops=flops / t_ours / 1e9, numpy_gflops=flops / t_np / 1e9,
                        ratio=t_np / t_ours,
                        max_rel_err=float(np.max(np.abs(C_ours.astype(np.float64) - C_np))) / scale,
                    ))
    finally:
        lib.gc_set_num_threads(old)
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
    print(f"threads: {nt} (graphc and numpy)   module: {modname}   SIMD level: {lib.gc_simd_level()}")
    print(f"numpy {np.__version__}, BLAS: {blas}")
    rows = gemm_table(sizes=tuple(int(s) for s in args.sizes.split(",") if s),
                      dtypes=tuple(args.dtypes.split(",")), threads=nt, repeats=args.repeats,
                      extra_shapes=not args.no_extra, rounds=args.rounds)
    print(format_table(rows))


if __name__ == "__main__":
    main()
