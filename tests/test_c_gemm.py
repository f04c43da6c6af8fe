"""Tests of the C GEMM (csrc/gemm.c) against a float64 NumPy reference.

Covers every SIMD level the CPU has (portable, AVX2, AVX-512; gc_set_simd_max), 1 and 2 threads, all transpose
combinations, non-tight leading dimensions, beta 0 (C may hold NaN) and 1, bias, every
activation, empty dimensions, and memory safety (guard values around C, guard pages after A/B).

The module under test is graphc._cgraphc; GRAPHC_TEST_CMODULE names another cffi module built
from csrc/gemm.c (e.g. `python csrc/build_cffi.py /tmp/gemmdev _gemm_dev gemm`) for kernel work.
"""
import importlib
import mmap
import os
import shutil
import subprocess
import sys
import sysconfig
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    _mod = importlib.import_module(os.environ.get("GRAPHC_TEST_CMODULE", "graphc._cgraphc"))
except ImportError:
    pytest.skip("graphc C extension not built", allow_module_level=True)
ffi, lib = _mod.ffi, _mod.lib
if not hasattr(lib, "gc_sgemm"):
    pytest.skip("C extension has no GEMM", allow_module_level=True)

IDENTITY, RELU, LEAKY, SIGMOID, TANH, ELU = (lib.GC_ACT_IDENTITY, lib.GC_ACT_RELU, lib.GC_ACT_LEAKY_RELU,
                                             lib.GC_ACT_SIGMOID, lib.GC_ACT_TANH, lib.GC_ACT_ELU)
CTYPE = {np.dtype(np.float32): "float *", np.dtype(np.float64): "double *"}
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


SCALAR, AVX2, AVX512 = 0, 1, 2
LEVEL_NAMES = {SCALAR: "scalar", AVX2: "avx2", AVX512: "avx512"}


def _cpu_levels():
    """The GEMM SIMD levels this CPU (and this build) can run: gc_simd_level() reaches the cap
    set by gc_set_simd_max exactly when the level is available."""
    if not hasattr(lib, "gc_set_simd_max"):  # an older module (GRAPHC_TEST_CMODULE)
        return [SCALAR, AVX2] if lib.gc_simd_level() else [SCALAR]
    levels = []
    for level in (SCALAR, AVX2, AVX512):
        lib.gc_set_simd_max(level)
        if lib.gc_simd_level() == level:
            levels.append(level)
    lib.gc_set_simd_max(-1)
    return levels


CPU_LEVELS = _cpu_levels()
# Every level, each skipped (not silently replaced by another) where the CPU lacks it.
LEVELS = [pytest.param(level, id=LEVEL_NAMES[level],
                       marks=pytest.mark.skipif(level not in CPU_LEVELS, reason=f"CPU has no {LEVEL_NAMES[level]}"))
          for level in (AVX512, AVX2, SCALAR)]


def set_level(level):
    """Run the GEMM at exactly `level` (the caller skipped levels the CPU lacks)."""
    if hasattr(lib, "gc_set_simd_max"):
        lib.gc_set_simd_max(level)
    else:
        lib.gc_set_simd_enabled(int(level > 0))
    assert lib.gc_simd_level() == level


@pytest.fixture(autouse=True)
def _restore_settings():
    yield
    lib.gc_set_simd_enabled(1)
    lib.gc_set_num_threads(0)


def _ptr(x):
    if x is None:
        return ffi.NULL
    return ffi.cast(CTYPE[x.dtype], x.ctypes.data)


def _ld(x):
    """Leading dimension of a row-major (possibly strided-row) 2-D view."""
    assert x.ndim == 2
    if x.size == 0:
        return max(x.shape[1], 1)
    assert x.shape[1] == 1 or x.strides[1] == x.itemsize
    ld = x.strides[0] // x.itemsize if x.shape[0] > 1 else x.shape[1]
    return max(ld, x.shape[1], 1)


def gemm(A, B, C, transA=False, transB=False, beta=0.0, bias=None, act=IDENTITY, act_param=0.0):
    """Call gc_sgemm/gc_dgemm on NumPy views (A, B as stored; op() is applied by the kernel)."""
    M, K = (A.shape[1], A.shape[0]) if transA else A.shape
    N = B.shape[0] if transB else B.shape[1]
    assert C.shape == (M, N) and (B.shape[1] if transB else B.shape[0]) == K
    f = lib.gc_sgemm if C.dtype == np.float32 else lib.gc_dgemm
    f(int(transA), int(transB), M, N, K, _ptr(A), _ld(A), _ptr(B), _ld(B), beta, _ptr(C), _ld(C),
      _ptr(bias), act, act_param)
    return C


def act_ref(z, act, p):
    with np.errstate(over="ignore", invalid="ignore"):
        if act == RELU:
            return np.where(z < 0, 0.0, z)
        if act == LEAKY:
            return np.where(z < 0, z * p, z)
        if act == SIGMOID:
            return 1.0 / (1.0 + np.exp(-z))
        if act == TANH:
            return np.tanh(z)
        if act == ELU:
            return np.where(z > 0, z, p * np.expm1(np.minimum(z, 0)))
    return z


def reference(A, B, C0, transA, transB, beta, bias, act, p):
    a = A.astype(np.float64)
    b = B.astype(np.float64)
    z = (a.T if transA else a) @ (b.T if transB else b)
    if beta:
        z = z + beta * C0.astype(np.float64)
    if bias is not None:
        z = z + bias.astype(np.float64)
    return act_ref(z, act, p)


def rel_err(C, ref):
    return np.linalg.norm(C.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-300)


def padded(rng, rows, cols, pad, dtype):
    """A rows x cols view with row stride cols + pad (a submatrix of a larger array)."""
    big = rng.standard_normal((rows, cols + pad)).astype(dtype)
    return big[:, pad // 2: pad // 2 + cols]


# Sizes around the register tiles (AVX2 MR=6, NR=16/8; AVX-512 MR=14, NR=32/16), the scalar
# tiles (4, 8) and the cache blocks (MC 144/72 and 336/168, KC 256), plus small ones; large enough
# products go through the packed path.
SIZES = st.one_of(st.integers(0, 20),
                  st.sampled_from([5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 28, 29, 31, 32, 33, 71, 72, 73,
                                   143, 144, 145, 167, 168, 169, 255, 256, 257, 300, 337]),
                  st.integers(0, 300))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from([np.float32, np.float64]), M=SIZES, N=SIZES, K=SIZES,
       transA=st.booleans(), transB=st.booleans(),
       pads=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
       beta=st.sampled_from([0.0, 1.0]), with_bias=st.booleans(),
       act=st.sampled_from([IDENTITY, RELU, LEAKY, SIGMOID, TANH, ELU]),
       level=st.sampled_from(CPU_LEVELS), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_matches_numpy_reference(dtype, M, N, K, transA, transB, pads, beta, with_bias, act, level,
                                 threads, seed):
    rng = np.random.default_rng(seed)
    set_level(level)
    lib.gc_set_num_threads(threads)
    A = padded(rng, *((K, M) if transA else (M, K)), pads[0], dtype)
    B = padded(rng, *((N, K) if transB else (K, N)), pads[1], dtype)
    C = padded(rng, M, N, pads[2], dtype)
    if beta == 0:
        C[...] = np.nan  # must be ignored, not multiplied by 0
    C0 = C.copy()
    bias = rng.standard_normal(N).astype(dtype) if with_bias else None
    gemm(A, B, C, transA, transB, beta, bias, act, 0.1)
    ref = reference(A, B, C0, transA, transB, beta, bias, act, 0.1)
    assert np.all(np.isfinite(C))
    assert rel_err(C, ref) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("threads", [2])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (6, 16, 256), (7, 4100, 3), (5, 3, 600), (150, 90, 513),
                                   (1, 300, 300), (300, 1, 300), (64, 64, 64), (12, 2000, 64),
                                   (300, 40, 300), (97, 4090, 20)])
def test_block_boundaries(dtype, level, threads, M, N, K):
    """Deterministic shapes crossing NC (4080), several KC blocks, vectors (M or N == 1), threads
    splitting B panels (small M), A read in place (few B panels)."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(M * 7 + N * 3 + K)
    for transA in (False, True):
        for transB in (False, True):
            A = rng.standard_normal((K, M) if transA else (M, K)).astype(dtype)
            B = rng.standard_normal((N, K) if transB else (K, N)).astype(dtype)
            C = rng.standard_normal((M, N)).astype(dtype)
            C0, bias = C.copy(), rng.standard_normal(N).astype(dtype)
            gemm(A, B, C, transA, transB, 1.0, bias, RELU)
            ref = reference(A, B, C0, transA, transB, 1.0, bias, RELU, 0.0)
            assert rel_err(C, ref) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(256, 256, 512), (200, 128, 300), (45, 250, 70), (256, 512, 200)])
def test_a_in_place_and_packed_agree_bitwise(dtype, level, threads, M, N, K):
    """With a few B panels per thread the AVX-512 kernels read A in place; when A's rows are a
    multiple of 4 KB apart they pack it instead (in place, its rows would evict each other from
    L1). The same A, contiguous and as a view with a 4 KB row stride, takes each path: the
    results agree bit for bit (the same FMA chains) and with NumPy, with a ReLU epilogue."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(M + N + K)
    A = rng.standard_normal((M, K)).astype(dtype)
    wide = np.empty((M, 4096 // np.dtype(dtype).itemsize), dtype)
    wide[:, :K] = A
    B = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    contiguous = gemm(A, B, np.empty((M, N), dtype), bias=bias, act=RELU)
    strided = gemm(wide[:, :K], B, np.empty((M, N), dtype), bias=bias, act=RELU)
    np.testing.assert_array_equal(contiguous, strided)
    ref = reference(A, B, np.zeros((M, N)), False, False, 0.0, bias, RELU, 0.0)
    assert rel_err(contiguous, ref) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_guard_values_around_c(dtype, level, threads):
    """Only the M x N window of C is written: sentinels around and between rows survive."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(1)
    sentinel = dtype(-12345.5)
    for M, N, K in [(1, 1, 1), (7, 17, 5), (13, 33, 300), (145, 47, 64), (100, 200, 20), (6, 16, 40)]:
        for beta in (0.0, 1.0):
            big = np.full((M + 6, N + 11), sentinel, dtype)
            C = big[3:3 + M, 5:5 + N]
            if beta:
                C[...] = rng.standard_normal((M, N))
            C0 = C.copy()
            A = rng.standard_normal((M, K)).astype(dtype)
            B = rng.standard_normal((K, N)).astype(dtype)
            gemm(A, B, C, beta=beta, act=TANH)
            outside = np.ones(big.shape, bool)
            outside[3:3 + M, 5:5 + N] = False
            assert np.all(big[outside] == sentinel)
            assert rel_err(C, reference(A, B, C0, False, False, beta, None, TANH, 0)) <= TOL[np.dtype(dtype)]


_PAGE = mmap.PAGESIZE


def _guarded(shape, ld, dtype, keep):
    """A 2-D view whose last element ends right before an inaccessible page (Linux), so reading
    past the end of A or B segfaults instead of passing silently."""
    import ctypes

    rows, cols = shape
    nbytes = ((rows - 1) * ld + cols) * np.dtype(dtype).itemsize
    span = (nbytes + _PAGE - 1) // _PAGE * _PAGE
    m = mmap.mmap(-1, span + 2 * _PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base, _PAGE, 0) == 0  # guard before
    assert libc.mprotect(base + _PAGE + span, _PAGE, 0) == 0  # guard after
    start = _PAGE + span - nbytes
    flat = np.frombuffer(m, dtype=np.uint8, count=nbytes, offset=start).view(dtype)
    keep.append((m, flat, libc, base, span))
    view = np.lib.stride_tricks.as_strided(flat, shape, (ld * flat.itemsize, flat.itemsize))
    view[...] = np.arange(rows * cols).reshape(rows, cols) % 7 - 3
    return view


def _unguard(keep):
    for _m, _flat, libc, base, span in keep:
        libc.mprotect(base, span + 2 * _PAGE, 3)  # PROT_READ | PROT_WRITE
    keep.clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect guard pages")
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_reads_past_a_and_b(dtype, level):
    set_level(level)
    keep = []
    try:
        for M, N, K in [(1, 1, 1), (7, 9, 5), (13, 19, 257), (200, 190, 3), (37, 1, 300), (1, 37, 300)]:
            for transA in (False, True):
                for transB in (False, True):
                    a_shape = (K, M) if transA else (M, K)
                    b_shape = (N, K) if transB else (K, N)
                    A = _guarded(a_shape, a_shape[1] + 1, dtype, keep)
                    B = _guarded(b_shape, b_shape[1], dtype, keep)
                    C = np.full((M, N), np.nan, dtype)
                    gemm(A, B, C, transA, transB)
                    ref = reference(A, B, None, transA, transB, 0.0, None, IDENTITY, 0)
                    np.testing.assert_allclose(C, ref, rtol=1e-5, atol=1e-5)
                    _unguard(keep)
    finally:
        _unguard(keep)


SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, -1e-3, 0.3, -0.3, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5,
           5.0, -5.0, 9.0, -9.0, 15.0, -15.0, 20.0, -20.0, 40.0, -40.0, 88.0, -88.0, 100.0, -100.0,
           700.0, -700.0, 800.0, -800.0, 1e30, -1e30, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("act", [SIGMOID, TANH, RELU, LEAKY, ELU])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N", [(40, 5), (192, 200)])  # the direct path and the packed path
def test_activation_accuracy(dtype, level, act, M, N):
    """Epilogue activations elementwise against libm (through NumPy) on exactly known inputs:
    with K = 1, A = x (a column) and B = 1, the pre-activation is x[i] + bias[j], rounded once in
    the working precision exactly as NumPy rounds it."""
    set_level(level)
    rng = np.random.default_rng(3)
    x = np.resize(np.concatenate([SPECIAL, rng.standard_normal(M) * 6]), (M, 1)).astype(dtype)
    bias = np.concatenate([[0.0, 0.0], rng.standard_normal(N) * 3, rng.uniform(-1e-3, 1e-3, N)])
    bias = rng.permutation(bias[:N]).astype(dtype)
    bias[0] = 0  # keep the special values as they are in one column
    B = np.ones((1, N), dtype)
    C = np.full((M, N), np.nan, dtype)
    gemm(x, B, C, bias=bias, act=act, act_param=0.25)
    with np.errstate(invalid="ignore", over="ignore"):
        z = (x + bias).astype(np.float64)
    ref = act_ref(z, act, 0.25)
    assert np.array_equal(np.isnan(C), np.isnan(ref))
    tol = 5e-7 if dtype == np.float32 else 2e-15
    with np.errstate(invalid="ignore"):
        err = np.abs(C.astype(np.float64) - ref)
        ok = np.isnan(ref) | (C == ref) | (err <= tol * np.abs(ref)) | (err <= np.finfo(dtype).tiny)
    assert np.all(ok), (z[~ok][:5], C[~ok][:5], ref[~ok][:5])


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k_zero(dtype, level):
    """K == 0: C = act(beta * C + bias); A and B are never read (NULL here)."""
    set_level(level)
    rng = np.random.default_rng(4)
    f = lib.gc_sgemm if dtype == np.float32 else lib.gc_dgemm
    for beta in (0.0, 1.0):
        C = rng.standard_normal((5, 7)).astype(dtype)
        C0 = C.copy()
        if beta == 0:
            C[...] = np.nan
        bias = rng.standard_normal(7).astype(dtype)
        f(0, 0, 5, 7, 0, ffi.NULL, 1, ffi.NULL, 7, beta, _ptr(C), 7, _ptr(bias), RELU, 0.0)
        np.testing.assert_array_equal(C, act_ref(beta * C0 + bias if beta else 0 * C0 + bias, RELU, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_outputs_touch_nothing(dtype):
    f = lib.gc_sgemm if dtype == np.float32 else lib.gc_dgemm
    C = np.full((4, 4), 7.0, dtype)
    A = np.ones((4, 4), dtype)
    f(0, 0, 0, 4, 4, _ptr(A), 4, _ptr(A), 4, 0.0, _ptr(C), 4, ffi.NULL, SIGMOID, 0.0)
    f(0, 0, 4, 0, 4, _ptr(A), 4, _ptr(A), 4, 0.0, _ptr(C), 4, ffi.NULL, SIGMOID, 0.0)
    f(1, 1, 0, 0, 0, ffi.NULL, 1, ffi.NULL, 1, 0.0, ffi.NULL, 1, ffi.NULL, SIGMOID, 0.0)
    assert np.all(C == 7.0)


def test_paths_and_threads_agree_closely():
    """AVX-512 vs AVX2 vs portable, 1 vs 2 threads: same maths, different summation order only."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((300, 290))
    B = rng.standard_normal((290, 310))
    outs = []
    for level in CPU_LEVELS:
        for threads in (1, 2):
            set_level(level)
            lib.gc_set_num_threads(threads)
            outs.append(gemm(A, B, np.empty((300, 310))))
    for o in outs[1:]:
        assert rel_err(o, outs[0]) <= 1e-14


def test_concurrent_calls_from_two_threads():
    """Per-call scratch: GEMMs running at the same time in two threads must not interfere."""
    rng = np.random.default_rng(6)
    jobs = [(rng.standard_normal((257, 300)).astype(np.float32),
             rng.standard_normal((300, 199)).astype(np.float32)) for _ in range(2)]
    refs = [a.astype(np.float64) @ b for a, b in jobs]
    errors = []

    def work(i):
        a, b = jobs[i]
        for _ in range(20):
            c = gemm(a, b, np.empty((257, 199), np.float32))
            if rel_err(c, refs[i]) > 1e-5:
                errors.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_thread_count_settings(monkeypatch):
    lib.gc_set_num_threads(3)
    assert lib.gc_get_num_threads() == 3
    lib.gc_set_num_threads(0)
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "5")
    assert lib.gc_get_num_threads() == 5
    monkeypatch.delenv("GRAPHC_NUM_THREADS")
    assert lib.gc_get_num_threads() >= 1


def test_simd_switch():
    lib.gc_set_simd_enabled(0)
    assert lib.gc_simd_level() == SCALAR
    lib.gc_set_simd_enabled(1)
    best = lib.gc_simd_level()
    assert best == max(CPU_LEVELS)
    if hasattr(lib, "gc_set_simd_max"):
        for cap in (SCALAR, AVX2, AVX512):
            lib.gc_set_simd_max(cap)
            assert lib.gc_simd_level() == min(cap, best)
        lib.gc_set_simd_max(-1)
        assert lib.gc_simd_level() == best
        lib.gc_set_simd_max(AVX2)
        lib.gc_set_simd_enabled(1)  # re-enabling lifts the cap, as before there were levels
        assert lib.gc_simd_level() == best
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
        # a level only where the CPU has its features (a build may still choose the portable path
        # only); /proc/cpuinfo lists avx512* only when the kernel enables the zmm state
        has_avx2 = "avx2" in flags and "fma" in flags
        assert best <= (AVX512 if has_avx2 and {"avx512f", "avx512vl", "avx512dq"} <= set(flags)
                        else AVX2 if has_avx2 else SCALAR)


EDGE = [0, 1, 2, 7, 13, 31, 32, 33, 63, 64, 65, 200, 517]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_shapes_every_level(dtype, level):
    """Every M, N, K in EDGE (tile, vector and block edges of all levels; 0 and 1 for the empty and
    vector cases), with the other options cycling deterministically over the cases: 1 or 2
    threads, the 4 transpose combinations, padded lda/ldb/ldc, beta 0 over a NaN-filled C or
    beta 1, bias, each activation."""
    set_level(level)
    rng = np.random.default_rng(11)
    acts = [IDENTITY, RELU, LEAKY, SIGMOID, TANH, ELU]
    i = 0
    for M in EDGE:
        for N in EDGE:
            for K in EDGE:
                i += 1
                transA, transB, beta = i % 2 == 1, i // 2 % 2 == 1, float(i // 4 % 2)
                act, pads = acts[i % len(acts)], (i % 3, i % 5, i % 4)
                if M * N * K > 1 << 18 and i % 4:  # keep the large cases to a quarter
                    continue
                lib.gc_set_num_threads(1 + i % 3 // 2)
                A = padded(rng, *((K, M) if transA else (M, K)), pads[0], dtype)
                B = padded(rng, *((N, K) if transB else (K, N)), pads[1], dtype)
                C = padded(rng, M, N, pads[2], dtype)
                if beta == 0:
                    C[...] = np.nan
                C0 = C.copy()
                bias = rng.standard_normal(N).astype(dtype) if i % 7 < 4 else None
                gemm(A, B, C, transA, transB, beta, bias, act, 0.1)
                ref = reference(A, B, C0, transA, transB, beta, bias, act, 0.1)
                assert np.all(np.isfinite(C)), (M, N, K, transA, transB, beta, act)
                assert rel_err(C, ref) <= TOL[np.dtype(dtype)], (M, N, K, transA, transB, beta, act)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_levels_agree_on_the_epilogue(dtype):
    """The AVX-512 write-back runs the AVX2 activation code on 256-bit halves: with K = 1 (one
    exact product per element) every level gives the same bits for every activation."""
    if not {AVX2, AVX512} <= set(CPU_LEVELS):
        pytest.skip("needs AVX2 and AVX-512")
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((70, 1)) * 5).astype(dtype)
    B = np.ones((1, 45), dtype)
    bias = (rng.standard_normal(45) * 2).astype(dtype)
    C0 = rng.standard_normal((70, 45)).astype(dtype)
    for act in (IDENTITY, RELU, LEAKY, SIGMOID, TANH, ELU):
        for beta in (0.0, 1.0):
            outs = []
            for level in (AVX2, AVX512):
                set_level(level)
                outs.append(gemm(x, B, C0.copy(), beta=beta, bias=bias, act=act, act_param=0.3))
            np.testing.assert_array_equal(outs[0], outs[1])


CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


def test_gemm_inside_an_outer_openmp_team_does_not_deadlock(tmp_path):
    """csrc/tests/gemm_in_team.c: two threads of the caller's OpenMP team run GEMMs with different
    numbers of K blocks, serial ones, then ones that both ask for graphc's pool at once (one gets
    it, the other must run serially). A barrier on the GEMM's serial path bound to the OpenMP team
    and hung (fixed in 5430ddc; the harness hangs on the code before it). Built with the C
    compiler and run with a timeout, since a deadlock cannot be caught inside this process."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if not shutil.which(cc.split()[0]):
        pytest.skip(f"no C compiler ({cc})")
    exe = tmp_path / "gemm_in_team"
    sources = [os.path.join(CSRC, "tests", "gemm_in_team.c"), os.path.join(CSRC, "gemm.c"),
               os.path.join(CSRC, "threads.c")]
    build = subprocess.run(cc.split() + ["-std=c11", "-O1", "-fopenmp", "-pthread", "-I", CSRC, *sources,
                                         "-lm", "-o", str(exe)], capture_output=True, text=True)
    if build.returncode:
        pytest.skip(f"cannot build the OpenMP harness: {build.stderr.strip()[:300]}")
    try:
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("GEMMs called from inside an OpenMP team deadlocked (no exit within 120 s)")
    assert run.returncode == 0, run.stdout + run.stderr
    for threads in (1, 2):
        assert f"2 outer threads, 0 wrong results (GEMM threads {threads})" in run.stdout, run.stdout + run.stderr


# -- the extended epilogue (gc_sgemm_ex / gc_dgemm_ex): alpha, addend, gate ----------------------
def gemm_ex(A, B, C, transA=False, transB=False, alpha=1.0, beta=0.0, bias=None, act=IDENTITY, act_param=0.0,
            addend=None, gate=None, gate_act=RELU, gate_param=0.0, colsum=None):
    """Call gc_sgemm_ex/gc_dgemm_ex through its descriptor; returns the status."""
    M, K = (A.shape[1], A.shape[0]) if transA else A.shape
    N = B.shape[0] if transB else B.shape[1]
    d = ffi.new("gc_gemm_desc *")
    d.trans_a, d.trans_b, d.m, d.n, d.k = int(transA), int(transB), M, N, K
    d.a, d.lda, d.b, d.ldb, d.c, d.ldc = _ptr(A), _ld(A), _ptr(B), _ld(B), _ptr(C), _ld(C)
    d.alpha, d.beta, d.bias, d.act, d.act_param = alpha, beta, _ptr(bias), act, act_param
    d.addend, d.ldx = _ptr(addend), _ld(addend) if addend is not None else 0
    d.gate, d.ldg = _ptr(gate), _ld(gate) if gate is not None else 0
    d.gate_act, d.gate_param = gate_act, gate_param
    d.colsum_b = _ptr(colsum)
    f = lib.gc_sgemm_ex if C.dtype == np.float32 else lib.gc_dgemm_ex
    return f(d)


def reference_ex(A, B, C0, transA, transB, alpha, beta, bias, act, p, addend, gate, gate_act, gate_param):
    a, b = A.astype(np.float64), B.astype(np.float64)
    z = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    if beta:
        z = z + beta * C0.astype(np.float64)
    if addend is not None:
        z = z + addend.astype(np.float64)
    if bias is not None:
        z = z + bias.astype(np.float64)
    z = act_ref(z, act, p)
    if gate is not None:  # activation_grad's products: g * (y > 0), g * (y > 0 ? 1 : slope)
        z = z * np.where(gate > 0, 1.0, gate_param if gate_act == LEAKY else 0.0)
    return z


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from([np.float32, np.float64]), M=SIZES, N=SIZES, K=SIZES,
       transA=st.booleans(), transB=st.booleans(),
       pads=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
       alpha=st.sampled_from([1.0, 0.0, -0.1, 2.5]), beta=st.sampled_from([0.0, 1.0]),
       with_addend=st.booleans(), gate=st.sampled_from([None, RELU, LEAKY]), with_bias=st.booleans(),
       level=st.sampled_from(CPU_LEVELS), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_extended_epilogue_matches_numpy(dtype, M, N, K, transA, transB, pads, alpha, beta, with_addend, gate,
                                         with_bias, level, threads, seed):
    """C = gate'(alpha * op(A) op(B) + beta C + addend + bias) against float64 NumPy, with padded
    leading dimensions for every matrix, NaN garbage in C when beta = 0, and gates holding zeros
    and negatives (the kink: relu' is 0 at 0)."""
    rng = np.random.default_rng(seed)
    set_level(level)
    lib.gc_set_num_threads(threads)
    A = padded(rng, *((K, M) if transA else (M, K)), pads[0], dtype)
    B = padded(rng, *((N, K) if transB else (K, N)), pads[1], dtype)
    C = padded(rng, M, N, pads[2], dtype)
    if beta == 0:
        C[...] = np.nan
    C0 = C.copy()
    X = padded(rng, M, N, pads[3], dtype) if with_addend else None
    G = None
    if gate is not None:
        G = padded(rng, M, N, (pads[3] + 1) % 4, dtype)
        G[rng.random(G.shape) < 0.2] = 0.0
    bias = rng.standard_normal(N).astype(dtype) if with_bias else None
    assert gemm_ex(A, B, C, transA, transB, alpha, beta, bias, IDENTITY, 0.0, X, G, gate or RELU, 0.1) == 0
    ref = reference_ex(A, B, C0, transA, transB, alpha, beta, bias, IDENTITY, 0.0, X, G, gate, 0.1)
    assert np.all(np.isfinite(C))
    assert rel_err(C, ref) <= TOL[np.dtype(dtype)]
    if G is not None and gate == RELU:
        assert np.all(C[G <= 0] == 0)  # masked exactly, not approximately


# ------------------------------------------------------------------------------------------
# gc_exec_matmul: what the interpreter's GEMM instruction runs (unpacked small-shape loops of
# csrc/small.inc for matrix-vector products and products with a side <= 16, else the GEMM)
# ------------------------------------------------------------------------------------------

EDGE = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33)
EDGE_K = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 30, 33, 64, 70)


def exec_matmul(A, B, C, transA, transB, bias=None, act=IDENTITY):
    f64 = int(C.dtype == np.float64)
    M, N = C.shape
    K = A.shape[0] if transA else A.shape[1]
    lib.gc_exec_matmul(f64, int(transA), int(transB), M, N, K, _ptr(A), _ld(A), _ptr(B), _ld(B), _ptr(C), _ld(C),
                       _ptr(bias), act, 0.0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", [(784, 512, 256), (256, 10, 256), (300, 40, 600), (5, 7, 3), (6, 16, 0)])
def test_sgd_update_epilogue_is_one_rounding_from_numpy(dtype, level, M, N, K):
    """W - lr * X^T G (the weight-gradient GEMM of an SGD step, several K blocks for K = 600):
    the fused result is within a few ulp of NumPy's two-pass float computation, and W is not written."""
    set_level(level)
    rng = np.random.default_rng(M + N + K)
    X = rng.standard_normal((K, M)).astype(dtype)
    G = rng.standard_normal((K, N)).astype(dtype)
    W = rng.standard_normal((M, N)).astype(dtype)
    W0, lr = W.copy(), 0.01
    out = np.full((M, N), np.nan, dtype)
    assert gemm_ex(X, G, out, transA=True, alpha=-lr, addend=W) == 0
    np.testing.assert_array_equal(W, W0)
    want = W.astype(np.float64) - lr * (X.T.astype(np.float64) @ G.astype(np.float64))
    scale = np.abs(W).max() + lr * np.abs(X.T.astype(np.float64)) @ np.abs(G.astype(np.float64))
    assert np.all(np.abs(out - want) <= 8 * np.finfo(dtype).eps * scale)


def sequential_colsum(opB, dtype):
    """sum_k opB[k] added row after row in dtype (NumPy's order for a sum over axis 0)."""
    out = np.zeros(opB.shape[1], dtype)
    for row in opB:
        out = out + row
    return out


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,N,K,transB", [
    (196, 64, 300, False),   # rows split across threads, two K blocks (small: the sanitizer run too)
    (40, 512, 600, False),   # several K blocks, B panels split across threads
    (256, 10, 256, False),   # one partial panel
    (64, 4100, 9, False),    # more columns than one NC block
    (33, 37, 300, True),     # op(B) = B^T
    (3, 5, 7, False),        # below DIRECT_MAX_FMAS: B is never packed
    (6, 16, 0, False),       # K = 0: the sums are 0
    (0, 7, 5, False),        # M = 0: no product, the sums are still owed
])
def test_colsum_of_b_is_numpy_sum_over_rows(level, dtype, threads, M, N, K, transB):
    """colsum_b = the column sums of op(B), bit for bit NumPy's sum over axis 0 (row after row,
    also across K blocks and threads), next to an unchanged product and epilogue."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(M * 7 + N + K)
    A = rng.standard_normal((K, M)).astype(dtype)
    B = rng.standard_normal((N, K) if transB else (K, N)).astype(dtype)
    W = rng.standard_normal((M, N)).astype(dtype)
    out = np.full((M, N), np.nan, dtype)
    sums = np.full(N + 2, np.nan, dtype)  # two guard values after the N sums
    assert gemm_ex(A, B, out, transA=True, transB=transB, alpha=-0.01, addend=W, colsum=sums[:N]) == 0
    opB = B.T if transB else B
    np.testing.assert_array_equal(sums[:N], sequential_colsum(opB, dtype))
    assert np.isnan(sums[N:]).all()
    plain = np.full((M, N), np.nan, dtype)
    assert gemm_ex(A, B, plain, transA=True, transB=transB, alpha=-0.01, addend=W) == 0
    np.testing.assert_array_equal(out, plain)


def test_colsum_refuses_a_missing_b():
    A, C, sums = np.ones((2, 3), np.float32), np.zeros((3, 4), np.float32), np.full(4, 7.0, np.float32)
    d = ffi.new("gc_gemm_desc *")
    d.trans_a, d.m, d.n, d.k, d.lda, d.ldb, d.ldc = 1, 3, 4, 2, 3, 4, 4
    d.a, d.b, d.c, d.colsum_b = _ptr(A), ffi.NULL, _ptr(C), _ptr(sums)
    assert lib.gc_sgemm_ex(d) == -1
    assert np.all(sums == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_keeps_nan_like_activation_grad(dtype):
    """relu' gate: a NaN product stays NaN where the gate is <= 0 (NaN * 0), as in activation_grad's
    g * (y > 0); a NaN gate counts as not > 0."""
    A = np.array([[np.nan], [1.0], [2.0]], dtype)  # K = 1: C = A @ B exactly
    B = np.ones((1, 2), dtype)
    gate = np.array([[-1.0, 0.0], [0.0, 2.0], [np.nan, 3.0]], dtype)
    C = np.zeros((3, 2), dtype)
    assert gemm_ex(A, B, C, gate=gate, gate_act=RELU) == 0
    want = np.array([[np.nan, np.nan], [0.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(C, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extended_entry_refuses_bad_descriptors(dtype):
    A = np.ones((3, 4), dtype)
    B = np.ones((4, 5), dtype)
    C = np.full((3, 5), 7.0, dtype)
    assert gemm_ex(A, B, C, gate=np.ones((3, 5), dtype), gate_act=SIGMOID) == -1
    d = ffi.new("gc_gemm_desc *")
    d.m, d.n, d.k, d.lda, d.ldb, d.ldc = 3, 5, 4, 4, 5, 4  # ldc < N
    d.a, d.b, d.c = _ptr(A), _ptr(B), _ptr(C)
    f = lib.gc_sgemm_ex if dtype == np.float32 else lib.gc_dgemm_ex
    assert f(d) == -1
    d.ldc, d.m = 5, -1
    assert f(d) == -1
    assert f(ffi.NULL) == -1
    assert np.all(C == 7.0)


@pytest.mark.parametrize("simd", [1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transA,transB", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_exec_matmul_small_shapes_match_numpy(dtype, transA, transB, simd):
    """Every row/column/K count around the vector widths (4, 8) and the 4- and 8-row blocks, with
    padded leading dimensions; the padding of C must stay untouched. Bias and relu on half the
    shapes (those that take the unpacked GEMM or fall back to the packed one)."""
    lib.gc_set_simd_enabled(simd)
    lib.gc_set_num_threads(1)
    rng = np.random.default_rng(11 + transA + 2 * transB)
    dt = np.dtype(dtype)
    for M in EDGE:
        for N in EDGE:
            for K in EDGE_K:
                pad = (M + N + K) % 3
                A = padded(rng, *((K, M) if transA else (M, K)), pad, dtype)
                B = padded(rng, *((N, K) if transB else (K, N)), 2 - pad, dtype)
                big = np.full((M, N + pad + 1), 77.0, dtype)
                C = big[:, :N]
                with_bias = (M * N + K) % 2 == 0
                act = RELU if (M + K) % 2 else IDENTITY
                bias = rng.standard_normal(N).astype(dtype) if with_bias else None
                exec_matmul(A, B, C, transA, transB, bias, act)
                ref = reference(A, B, np.zeros((M, N)), transA, transB, 0.0, bias, act, 0.0)
                assert rel_err(C, ref) <= TOL[dt], (M, N, K)
                assert np.all(big[:, N:] == 77.0), ("wrote into C's padding", M, N, K)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("transA", [False, True])
def test_tiny_and_blocked_products_round_alike(level, transA):
    """Products under DIRECT_MAX_FMAS multiply-adds take the unpacked direct path, the others
    the packed (or thin) kernels; both must form each a*b + c the same way, fused where the
    kernels use FMA. The float32 terms 1e-30 * inf and then -1e30 * 1e30 sum to inf fused (as in
    float64: the exact product -1e60 is finite) but to inf - inf = NaN unfused, so this row and
    column tell the two apart (graphc fuzz --seed 5 found the direct path unfused)."""
    set_level(level)
    row = np.array([1e-30, -1e30], np.float32)
    col = np.array([np.inf, 1e30], np.float32)
    rng = np.random.default_rng(0)
    values = {}
    for n in (1, 64):  # 1 x 1 x 2 is direct; 64 x 64 x 2 (8192 multiply-adds) is blocked
        A = rng.standard_normal((n, 2)).astype(np.float32)
        B = rng.standard_normal((2, n)).astype(np.float32)
        A[n // 2], B[:, n // 3] = row, col
        C = np.empty((n, n), np.float32)
        gemm(np.ascontiguousarray(A.T) if transA else A, B, C, transA=transA)
        values[n] = C[n // 2, n // 3]
    assert np.array_equal(values[1], values[64], equal_nan=True), values
    if level == SCALAR:  # the portable level rounds a*b, then adds: inf - inf
        assert np.isnan(values[1])
    else:  # fused, as float64 computes it
        assert values[1] == np.inf


@pytest.mark.parametrize("level", [p for p in LEVELS if p.values[0] == AVX2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,K", [(120, 4), (80, 5), (65, 7)])
def test_packed_kernel_sums_k_in_order_like_the_direct_path(level, dtype, N, K):
    """The packed AVX2 kernels' k loop (inline assembly, four k steps at a time, then the C tail)
    forms every C[i, j] as the FMA chain over k = 0, 1, ... that the direct path forms: a row
    alone (N*K < 512 multiply-adds) takes the direct path, 64 rows the packed one (N > 64: A is
    packed), and their bits agree on random operands, where another order would round apart."""
    set_level(level)
    rng = np.random.default_rng(K)
    A = rng.standard_normal((64, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    blocked = np.empty((64, N), dtype)
    gemm(A, B, blocked)
    for i in range(64):
        row = np.empty((1, N), dtype)
        gemm(A[i:i + 1], B, row)
        np.testing.assert_array_equal(blocked[i], row[0], err_msg=f"row {i}")


@pytest.mark.parametrize("level", [p for p in LEVELS if p.values[0] == AVX2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transA", [False, True])
@pytest.mark.parametrize("N,K", [(40, 4), (10, 5), (33, 7), (40, 12), (16, 31)])
def test_strided_kernel_sums_k_in_order_like_the_direct_path(level, dtype, transA, N, K):
    """With few columns (N <= 64) the AVX2 kernels read A in place through its row and k strides
    (inline assembly, four k steps at a time, then the C tail; A stored M x K or, transposed,
    K x M): every C[i, j] is the FMA chain over k = 0, 1, ... that a row alone (the direct path,
    N*K < 512) forms, so their bits agree on random operands, where another order would round
    apart."""
    set_level(level)
    rng = np.random.default_rng(N * 100 + K)
    A = rng.standard_normal((64, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    stored = np.ascontiguousarray(A.T) if transA else A
    blocked = gemm(stored, B, np.empty((64, N), dtype), transA=transA)
    for i in range(64):
        row = gemm(np.ascontiguousarray(stored[:, i:i + 1]) if transA else A[i:i + 1], B,
                   np.empty((1, N), dtype), transA=transA)
        np.testing.assert_array_equal(blocked[i], row[0], err_msg=f"row {i}")
    np.testing.assert_allclose(blocked, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(569, 1, 30, 0, 0), (1, 30, 569, 1, 0), (30, 1, 569, 1, 0), (1, 1, 70, 0, 0),
                                   (1, 10, 32, 0, 1), (32, 10, 32, 0, 0), (10, 33, 17, 1, 1)])
def test_exec_matmul_propagates_nan_and_inf(dtype, shape):
    """A NaN or inf operand entry reaches exactly the outputs it touches, like the float64
    reference (inf * 0 and inf - inf give NaN, relu keeps NaN)."""
    M, N, K, transA, transB = shape
    rng = np.random.default_rng(M + N + K)
    for bad in (np.nan, np.inf, -np.inf):
        for act in (IDENTITY, RELU):
            A = rng.standard_normal((K, M) if transA else (M, K)).astype(dtype)
            B = rng.standard_normal((N, K) if transB else (K, N)).astype(dtype)
            A.flat[rng.integers(A.size)] = bad
            B.flat[rng.integers(B.size)] = -bad if bad == np.inf else bad
            C = np.empty((M, N), dtype)
            exec_matmul(A, B, C, transA, transB, None, act)
            with np.errstate(all="ignore"):
                ref = reference(A, B, np.zeros((M, N)), transA, transB, 0.0, None, act, 0.0)
            assert np.array_equal(np.isnan(C), np.isnan(ref)), (bad, act)
            assert np.array_equal(np.isinf(C), np.isinf(ref)), (bad, act)
            fin = np.isfinite(ref)
            assert rel_err(np.where(fin, C, 0), np.where(fin, ref, 0)) <= 1e-4


# ------------------------------------------------------------------------------------------
# Thin products (N <= 16 or K <= 16): on AVX-512 the float32 GEMM runs them through unpacked
# kernels (tn: A stored K x M and N <= 16; dot: A stored M x K, N <= 14 and long K; ks: the other
# N <= 16 ones, and K <= 16 with any N) with their own write-back; the other levels and float64
# take the packed path. Every epilogue part, 1 and 2 threads (the threads split the rows and
# transpose operands privately).
# ------------------------------------------------------------------------------------------

# Epilogue sets: the ks kernel has copies compiled for none, bias, gate, alpha + addend (and a
# run-time one for the rest); activations go through a separate write-back.
THIN_EPILOGUES = [
    {},
    {"bias": True},
    {"gate": RELU},
    {"gate": LEAKY},
    {"alpha": -0.01, "addend": True},
    {"beta": 1.0},
    {"beta": 1.0, "bias": True, "act": RELU},
    {"bias": True, "act": SIGMOID},
    {"act": TANH, "alpha": 2.5},
    {"act": ELU, "addend": True},
    {"act": LEAKY, "gate": RELU},
    {"alpha": 0.5, "beta": 1.0, "addend": True, "bias": True, "act": LEAKY, "gate": LEAKY},
]


def _thin_bound(A, B, C0, transA, transB, epi, X, G, bias, ref):
    """Elementwise error bound of a float32/float64 result: a K-term sum in working precision is
    within (K - 1) eps sum |a_k b_k| of the exact one (any summation order), the epilogue adds a
    few roundings of its terms and of the result; activations and gates do not amplify errors.
    Unlike a norm-relative tolerance it holds for outputs that cancel to near zero, and a wrong
    element (a missed term, row or epilogue part) is off by far more."""
    eps = np.finfo(C0.dtype).eps
    a, b = np.abs(A.astype(np.float64)), np.abs(B.astype(np.float64))
    K = a.shape[0] if transA else a.shape[1]
    scale = abs(epi.get("alpha", 1.0)) * ((a.T if transA else a) @ (b.T if transB else b))
    scale = (K + 2) * scale + 4 * abs(epi.get("beta", 0.0)) * np.abs(np.nan_to_num(C0.astype(np.float64)))
    if X is not None:
        scale = scale + 4 * np.abs(X.astype(np.float64))
    if bias is not None:
        scale = scale + 4 * np.abs(bias.astype(np.float64))
    if G is not None and epi["gate"] == RELU:
        scale = scale * (G > 0)
    return eps * (scale + 4 * np.abs(ref))


def _thin_case(rng, dtype, M, N, K, transA, transB, epi, pad=0):
    """Operands (row strides padded by `pad`), the call's result, its float64 reference and an
    elementwise error bound."""
    A = padded(rng, *((K, M) if transA else (M, K)), pad, dtype)
    B = padded(rng, *((N, K) if transB else (K, N)), (pad + 1) % 3, dtype)
    C = padded(rng, M, N, (pad + 2) % 3, dtype)
    beta = epi.get("beta", 0.0)
    if not beta:
        C[...] = np.nan  # must not be read
    C0 = C.copy()
    X = padded(rng, M, N, pad, dtype) if epi.get("addend") else None
    G = None
    if epi.get("gate"):
        G = padded(rng, M, N, (pad + 1) % 3, dtype)
        G[rng.random(G.shape) < 0.25] = 0.0  # the kink: relu' is 0 there
    bias = rng.standard_normal(N).astype(dtype) if epi.get("bias") else None
    alpha, act, gate_act = epi.get("alpha", 1.0), epi.get("act", IDENTITY), epi.get("gate", RELU)
    assert gemm_ex(A, B, C, transA, transB, alpha, beta, bias, act, 0.1, X, G, gate_act, 0.2) == 0
    ref = reference_ex(A, B, C0, transA, transB, alpha, beta, bias, act, 0.1, X, G, gate_act, 0.2)
    return C, ref, G, _thin_bound(A, B, C0, transA, transB, epi, X, G, bias, ref)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("transA,transB", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_thin_products_match_numpy(transA, transB, level, threads):
    """float32, N = 1..17 against K = 1..17 plus longer K (the tn kernel; dot at K = 128, 300
    with its 16-lane K tail; ks with one vector per row; the fall-back to packing at N = 17) and
    K = 1..17 against wide N (the ks kernel's 64-column blocks and partial vectors), rows around
    every kernel's row block (dot 1-8 rows, tn 16-64, ks 8 and 4); the epilogue set cycles over
    THIN_EPILOGUES."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(21 + 2 * transA + transB)
    shapes = [(M, N, K) for M in (1, 3, 17, 35, 67) for N in range(1, 18) for K in (1, 2, 7, 15, 16, 17, 40, 128, 300)]
    shapes += [(M, N, K) for M in (4, 9, 66) for N in (18, 31, 47, 64, 65, 100, 130, 256) for K in range(1, 18)]
    for i, (M, N, K) in enumerate(shapes):
        epi = THIN_EPILOGUES[i % len(THIN_EPILOGUES)]
        C, ref, G, bound = _thin_case(rng, np.float32, M, N, K, transA, transB, epi, pad=i % 3)
        assert np.all(np.isfinite(C)), (M, N, K, epi)
        assert np.all(np.abs(C - ref) <= bound), (M, N, K, epi, np.max(np.abs(C - ref) / bound))
        if G is not None and epi["gate"] == RELU:
            assert np.all(C[G <= 0] == 0), (M, N, K, epi)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K,transA,transB", [(256, 10, 256, 0, 0), (256, 256, 10, 0, 1), (256, 10, 256, 1, 0),
                                                 (250, 10, 784, 0, 0), (784, 10, 250, 1, 0), (250, 784, 10, 0, 1),
                                                 (256, 16, 256, 0, 1), (256, 256, 16, 1, 1)])
def test_thin_mlp_shapes_every_epilogue(dtype, level, threads, M, N, K, transA, transB):
    """The thin GEMMs of an MLP's 10-class output layer (logits, the hidden gradient through the
    relu' gate, the SGD update of the weights), a partial last row block (250 rows), and the
    same shapes at the edge of the thin kernels (N or K = 16), with every epilogue set."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(M + N + K)
    for epi in THIN_EPILOGUES:
        C, ref, G, bound = _thin_case(rng, dtype, M, N, K, transA, transB, epi, pad=1)
        assert np.all(np.isfinite(C)), epi
        assert np.all(np.abs(C - ref) <= bound), (epi, np.max(np.abs(C - ref) / bound))
        assert rel_err(C, ref) <= TOL[np.dtype(dtype)], (epi, rel_err(C, ref))
        if G is not None and epi["gate"] == RELU:
            assert np.all(C[G <= 0] == 0), epi


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
def test_thin_products_touch_only_c(level, threads):
    """Sentinels around and between C's rows survive every thin kernel and epilogue (masked
    stores of partial vectors and row tails)."""
    set_level(level)
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(31)
    sentinel = np.float32(-12345.5)
    i = 0
    for M, N, K in [(37, 10, 256), (37, 3, 20), (70, 17, 9), (9, 70, 5), (130, 16, 16), (5, 1, 300)]:
        for transA in (False, True):
            for epi in THIN_EPILOGUES:
                i += 1
                big = np.full((M + 6, N + 21), sentinel, np.float32)
                C = big[3:3 + M, 5:5 + N]
                beta = epi.get("beta", 0.0)
                C[...] = rng.standard_normal((M, N)) if beta else np.nan
                C0 = C.copy()
                A = rng.standard_normal((K, M) if transA else (M, K)).astype(np.float32)
                B = rng.standard_normal((N, K) if i % 2 else (K, N)).astype(np.float32)  # transB = i % 2
                X = rng.standard_normal((M, N)).astype(np.float32) if epi.get("addend") else None
                G = rng.standard_normal((M, N)).astype(np.float32) if epi.get("gate") else None
                bias = rng.standard_normal(N).astype(np.float32) if epi.get("bias") else None
                alpha, act, gate_act = epi.get("alpha", 1.0), epi.get("act", IDENTITY), epi.get("gate", RELU)
                transB = bool(i % 2)
                assert gemm_ex(A, B, C, transA, transB, alpha, beta, bias, act, 0.1, X, G, gate_act, 0.2) == 0
                outside = np.ones(big.shape, bool)
                outside[3:3 + M, 5:5 + N] = False
                assert np.all(big[outside] == sentinel), (M, N, K, transA, epi)
                ref = reference_ex(A, B, C0, transA, transB, alpha, beta, bias, act, 0.1, X, G, gate_act, 0.2)
                assert rel_err(C, ref) <= 1e-5, (M, N, K, transA, epi)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect guard pages")
@pytest.mark.parametrize("threads", [1, 2])
def test_thin_products_read_nothing_past_their_operands(threads):
    """A, B, the addend and the gate end right before an inaccessible page: the thin kernels'
    K tails, row tails and partial column vectors load masked."""
    lib.gc_set_num_threads(threads)
    keep = []
    try:
        for M, N, K in [(33, 10, 37), (35, 7, 300), (9, 70, 5), (36, 130, 11), (17, 16, 16), (3, 1, 70)]:
            for transA in (False, True):
                for transB in (False, True):
                    a_shape, b_shape = ((K, M) if transA else (M, K)), ((N, K) if transB else (K, N))
                    A = _guarded(a_shape, a_shape[1], np.float32, keep)
                    B = _guarded(b_shape, b_shape[1], np.float32, keep)
                    X = _guarded((M, N), N, np.float32, keep)
                    G = _guarded((M, N), N, np.float32, keep)
                    C = np.full((M, N), np.nan, np.float32)
                    assert gemm_ex(A, B, C, transA, transB, alpha=-0.5, addend=X, gate=G) == 0
                    ref = reference_ex(A, B, None, transA, transB, -0.5, 0.0, None, IDENTITY, 0, X, G, RELU, 0)
                    np.testing.assert_allclose(C, ref, rtol=1e-5, atol=1e-4)
                    _unguard(keep)
    finally:
        _unguard(keep)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,N,K,transA,transB", [(40, 10, 50, 0, 0), (40, 10, 50, 1, 1), (40, 50, 10, 0, 1),
                                                 (40, 50, 10, 1, 0)])
def test_thin_products_propagate_nan_and_inf(threads, M, N, K, transA, transB):
    """A NaN or inf in A reaches exactly the outputs of its row (op(A)'s), in B those of its
    column, through the zero-padded lanes of the thin kernels; the relu' gate keeps a NaN NaN."""
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(M + N + K)
    for bad in (np.nan, np.inf):
        A = rng.standard_normal((K, M) if transA else (M, K)).astype(np.float32)
        B = rng.standard_normal((N, K) if transB else (K, N)).astype(np.float32)
        A[(3, 5) if transA else (5, 3)] = bad  # op(A)[5, 3]: row 5 of C
        B[(7, 2) if transB else (2, 7)] = -bad  # op(B)[2, 7]: column 7 of C
        G = np.zeros((M, N), np.float32)
        C = np.empty((M, N), np.float32)
        assert gemm_ex(A, B, C, transA, transB, gate=G) == 0
        with np.errstate(all="ignore"):
            ref = reference_ex(A, B, None, transA, transB, 1.0, 0.0, None, IDENTITY, 0, None, G, RELU, 0)
        assert np.array_equal(np.isnan(C), np.isnan(ref)), bad
        assert np.isnan(C[5]).all() and np.isnan(C[:, 7]).all()
        assert np.all(C[np.isfinite(ref)] == 0)
