"""Where 2 pool threads start to beat 1, per kernel (the PAR_MIN_* constants in csrc/kernels.c and
SERIAL_MAX_FMAS in csrc/gemm.c were read off its output). Run it on a build whose thresholds are
zero, so that 2 threads really split every size:

    GRAPHC_CFLAGS="-DGC_PAR_MIN_ZERO -DSERIAL_MAX_FMAS=0" python csrc/build_cffi.py --into /tmp/pb
    cp -r graphc/. /tmp/pb/graphc/  (without the .so)   # or PYTHONPATH=/tmp/pb:. with the .so there
    PYTHONPATH=/tmp/pb python csrc/tests/pool_bench.py [kernel ...]

Calls are back to back (the worker stays awake, as between the kernels of a plan); each time is
the median of 15 batches of >= 2 ms; ratio = time at 1 thread / time at 2 threads.
"""
import sys
import time

import numpy as np
from graphc._cgraphc import ffi, lib


def per_call(fn, min_s=2e-3, reps=15):
    fn()
    t0 = time.perf_counter()
    fn()
    batch = max(1, int(min_s / max(time.perf_counter() - t0, 1e-7)))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        ts.append((time.perf_counter() - t0) / batch)
    return float(np.median(ts))


def ptr(a):
    return ffi.from_buffer("float[]", a)  # keeps `a` alive as long as the pointer


def kernels():
    rng = np.random.default_rng(0)

    def unary(op):
        def make(n):
            x = rng.standard_normal(n).astype(np.float32)
            y = np.empty_like(x)
            px, py = ptr(x), ptr(y)
            return lambda: lib.gc_unary_f32(op, n, px, py, 0.0)
        return make

    def binary_add(n):
        a = rng.standard_normal(n).astype(np.float32)
        b, y = a.copy(), np.empty_like(a)
        shape, st = ffi.new("int64_t[1]", [n]), ffi.new("int64_t[1]", [1])
        pa, pb, py = ptr(a), ptr(b), ptr(y)
        return lambda: lib.gc_binary_f32(lib.GC_B_ADD, 1, shape, pa, st, pb, st, py)

    def softmax(n):
        cols = 64
        x = rng.standard_normal(n).astype(np.float32)
        y = np.empty_like(x)
        px, py = ptr(x), ptr(y)
        return lambda: lib.gc_softmax_f32(n // cols, cols, px, py, 0)

    def reduce_rows(n):
        cols = 64
        x = rng.standard_normal(n).astype(np.float32)
        y = np.empty(n // cols, np.float32)
        px, py = ptr(x), ptr(y)
        return lambda: lib.gc_reduce_f32(lib.GC_R_SUM, n // cols, cols, 1, px, py)

    def bce(n):
        z = rng.standard_normal(n).astype(np.float32)
        t = (rng.random(n) > 0.5).astype(np.float32)
        out = np.empty(1, np.float32)
        pz, pt, po = ptr(z), ptr(t), ptr(out)
        return lambda: lib.gc_bce_logits_fwd_f32(n, pz, pt, po)

    def gemm(n):  # n = M*N*K multiply-adds, square
        m = max(1, round(n ** (1 / 3)))
        a = rng.standard_normal((m, m)).astype(np.float32)
        b, c = a.copy(), np.empty_like(a)
        pa, pb, pc = ptr(a), ptr(b), ptr(c)
        return lambda: lib.gc_sgemm(0, 0, m, m, m, pa, m, pb, m, 0.0, pc, m, ffi.NULL, 0, 0.0)

    return {"relu": unary(lib.GC_U_RELU), "exp": unary(lib.GC_U_EXP), "add": binary_add,
            "softmax64": softmax, "sum64": reduce_rows, "bce": bce, "gemm": gemm}


def main(names):
    ks = kernels()
    for name in names or ks:
        sizes = [2 ** k for k in (range(10, 21) if name != "gemm" else range(12, 25, 1))]
        print(name)
        for n in sizes:
            fn = ks[name](n)
            lib.gc_set_num_threads(1)
            t1 = per_call(fn)
            lib.gc_set_num_threads(2)
            t2 = per_call(fn)
            print(f"  {n:>9}  1 thr {t1 * 1e6:9.2f} us  2 thr {t2 * 1e6:9.2f} us  ratio {t1 / t2:5.2f}")
    lib.gc_set_num_threads(0)


if __name__ == "__main__":
    main(sys.argv[1:])
