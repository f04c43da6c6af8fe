"""graphc's thread pool (csrc/threads.c): results at 1-4 threads, the thread-count settings, fork
safety, concurrent callers, and no libgomp.

Exactness across thread counts: the pool splits whole rows / images / blocks, so the GEMM (its K
summation order does not depend on the split), the elementwise and fused kernels, softmax, the
reductions and the conv2d forward/input gradient give bitwise the same result at any thread count.
The softmax cross-entropy and BCE losses and the conv2d weight gradient add one partial sum per
thread, so they agree only within rounding across thread counts.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE

pytestmark = pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")

if C_AVAILABLE:
    from graphc._cgraphc import ffi, lib

THREADS = (1, 2, 3, 4)


@pytest.fixture(autouse=True)
def _default_threads():
    yield
    lib.gc_set_num_threads(0)


def buf(a: np.ndarray):
    """A cffi pointer that keeps the array alive."""
    return ffi.from_buffer("double[]" if a.dtype == np.float64 else "float[]", a)


def at_threads(fn):
    """fn() run at 1, 2, 3 and 4 threads: {threads: result}."""
    out = {}
    for nt in THREADS:
        lib.gc_set_num_threads(nt)
        assert lib.gc_get_num_threads() == nt
        out[nt] = fn()
    return out


def assert_same_at_all_thread_counts(results):
    for nt, r in results.items():
        np.testing.assert_array_equal(r, results[1], err_msg=f"{nt} threads differ from 1 thread")


# -- GEMM ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K,ta,tb", [
    (203, 157, 301, 0, 0),   # rows split over threads, 2 K blocks (barriers between them)
    (8, 700, 530, 0, 1),     # few rows: the B panels are split instead (JR mode)
    (97, 64, 1100, 1, 0),    # 5 K blocks
    (256, 500, 1001, 0, 0),  # columns split, 4 K blocks, the last one shorter (each thread
    (256, 520, 1001, 1, 1),  # packs its panels in a region of its own: no barriers)
])
def test_gemm_same_result_at_every_thread_count(dt, M, N, K, ta, tb):
    rng = np.random.default_rng(M + N + K)
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dt)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dt)
    bias = rng.standard_normal(N).astype(dt)
    gemm = lib.gc_dgemm if dt == np.float64 else lib.gc_sgemm

    def run():
        C = np.full((M, N), np.nan, dt)
        gemm(ta, tb, M, N, K, buf(A), A.shape[1], buf(B), B.shape[1], 0.0, buf(C), N, buf(bias),
             lib.GC_ACT_RELU, 0.0)
        return C

    res = at_threads(run)
    assert_same_at_all_thread_counts(res)
    ref = np.maximum((A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64) + bias, 0)
    tol = 1e-4 if dt == np.float32 else 1e-11
    np.testing.assert_allclose(res[1], ref, rtol=tol, atol=tol * np.sqrt(K))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K,ta", [
    (147, 12544, 64, 1),     # ResNet-50's first convolution, input gradient: 3 full NC blocks, then 256
    (30, 2 * 4096 + 100, 600, 0),  # columns: 2 full NC blocks and a narrow one, 3 K blocks
])
def test_gemm_columns_split_over_several_nc_blocks_repeatedly(dt, M, N, K, ta):
    """Split columns, the threads run without waiting for each other, so one may start the next
    NC block while another still computes the last. The narrow last block splits its panels
    differently; before each thread's B region was fixed by its index, a fast thread packed
    over panels a slow one was still reading (wrong results in 6-26 % of the calls at 2-4
    threads, 2-core VM, 2026-12-03). Four threads on fewer cores make the threads' progress
    uneven; every repeat must equal the one-thread result bit for bit."""
    rng = np.random.default_rng(N + K)
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dt)
    B = rng.standard_normal((K, N)).astype(dt)
    gemm = lib.gc_dgemm if dt == np.float64 else lib.gc_sgemm

    def run():
        C = np.full((M, N), np.nan, dt)
        gemm(ta, 0, M, N, K, buf(A), A.shape[1], buf(B), N, 0.0, buf(C), N, ffi.NULL, lib.GC_ACT_IDENTITY, 0.0)
        return C

    lib.gc_set_num_threads(1)
    one = run()
    for nt in (2, 4):
        lib.gc_set_num_threads(nt)
        for repeat in range(8):
            np.testing.assert_array_equal(run(), one, err_msg=f"{nt} threads, repeat {repeat}")
    ref = (A.T if ta else A).astype(np.float64) @ B.astype(np.float64)
    tol = 1e-4 if dt == np.float32 else 1e-11
    np.testing.assert_allclose(one, ref, rtol=tol, atol=tol * np.sqrt(K))


# -- elementwise, fused, reductions, softmax, losses ------------------------------------------------
N_BIG = 300_001  # above every kernel's threshold, not a multiple of any block


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_elementwise_kernels_same_result_at_every_thread_count(dt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N_BIG).astype(dt)
    sfx = "f64" if dt == np.float64 else "f32"
    unary, act_bwd, binary = (getattr(lib, f"gc_{k}_{sfx}") for k in ("unary", "act_backward", "binary"))

    def run_unary():
        y = np.empty_like(x)
        assert unary(lib.GC_U_EXP, N_BIG, buf(x), buf(y), 0.0) == 0
        return y

    res = at_threads(run_unary)
    assert_same_at_all_thread_counts(res)
    np.testing.assert_allclose(res[1], np.exp(x), rtol=5e-7 if dt == np.float32 else 1e-15)

    g = rng.standard_normal(N_BIG).astype(dt)

    def run_act_bwd():
        dx = np.empty_like(x)
        assert act_bwd(lib.GC_ACT_RELU, N_BIG, buf(x), buf(g), buf(dx), 0.0) == 0
        return dx

    res = at_threads(run_act_bwd)
    assert_same_at_all_thread_counts(res)
    np.testing.assert_array_equal(res[1], np.where(x > 0, g, 0))

    # a (600, 501) + (501,) row broadcast
    a = rng.standard_normal((600, 501)).astype(dt)
    b = rng.standard_normal(501).astype(dt)
    shape = ffi.new("int64_t[2]", a.shape)
    sa, sb = ffi.new("int64_t[2]", [501, 1]), ffi.new("int64_t[2]", [0, 1])

    def run_binary():
        out = np.empty_like(a)
        assert binary(lib.GC_B_MUL, 2, shape, buf(a), sa, buf(b), sb, buf(out)) == 0
        return out

    res = at_threads(run_binary)
    assert_same_at_all_thread_counts(res)
    np.testing.assert_array_equal(res[1], a * b)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_row_kernels_same_result_at_every_thread_count(dt):
    rng = np.random.default_rng(1)
    rows, cols = 3001, 67
    x = (rng.standard_normal((rows, cols)) * 3).astype(dt)
    labels = rng.integers(0, cols, rows).astype(np.int64)
    sfx = "f64" if dt == np.float64 else "f32"
    softmax, reduce_, ce_fwd, ce_bwd = (getattr(lib, f"gc_{k}_{sfx}") for k in
                                        ("softmax", "reduce", "softmax_ce_fwd", "softmax_ce_bwd"))
    x64 = x.astype(np.float64)
    p_ref = np.exp(x64 - x64.max(1, keepdims=True))
    p_ref /= p_ref.sum(1, keepdims=True)
    tol = 1e-5 if dt == np.float32 else 1e-13

    def run_softmax():
        y = np.empty_like(x)
        assert softmax(rows, cols, buf(x), buf(y), 0) == 0
        return y

    res = at_threads(run_softmax)
    assert_same_at_all_thread_counts(res)
    np.testing.assert_allclose(res[1], p_ref, rtol=tol, atol=tol * 1e-3)

    for op, inner in ((lib.GC_R_SUM, 1), (lib.GC_R_MEAN, 67)):
        def run_reduce(op=op, inner=inner):
            outer = x.size // (cols * inner) if inner == 1 else 1
            n = cols if inner == 1 else rows
            y = np.empty(outer * inner, dt)
            assert reduce_(op, outer, n, inner, buf(x), buf(y)) == 0
            return y

        res = at_threads(run_reduce)
        assert_same_at_all_thread_counts(res)
        ref = x64.sum(1) if op == lib.GC_R_SUM else x64.mean(0)
        np.testing.assert_allclose(res[1], ref, rtol=tol, atol=tol * 10)

    lab = ffi.from_buffer("int64_t[]", labels)

    def run_ce_bwd():
        d = np.empty_like(x)
        assert ce_bwd(rows, cols, buf(x), lab, 1.0, buf(d)) == 0
        return d

    res = at_threads(run_ce_bwd)
    assert_same_at_all_thread_counts(res)
    onehot = np.eye(cols)[labels]
    np.testing.assert_allclose(res[1], (p_ref - onehot) / rows, rtol=tol, atol=tol / rows)

    def run_ce_fwd():
        loss = np.empty(1, dt)
        assert ce_fwd(rows, cols, buf(x), lab, buf(loss)) == 0
        return loss[0]

    res = at_threads(run_ce_fwd)  # one partial sum per thread: equal within rounding
    ref = float(np.mean(-np.log(p_ref[np.arange(rows), labels])))
    rel = 4 * np.finfo(np.float32).eps if dt == np.float32 else 1e-13  # the oracle's log(p) loses digits
    for nt, v in res.items():
        assert abs(v - ref) <= rel * abs(ref), (nt, v, ref)


def test_bce_loss_within_rounding_at_every_thread_count():
    rng = np.random.default_rng(2)
    z = rng.standard_normal(N_BIG)
    t = (rng.random(N_BIG) > 0.5).astype(np.float64)

    def run():
        loss = np.empty(1)
        assert lib.gc_bce_logits_fwd_f64(N_BIG, buf(z), buf(t), buf(loss)) == 0
        return loss[0]

    ref = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))
    for nt, v in at_threads(run).items():
        assert abs(v - ref) <= 1e-13 * abs(ref), (nt, v, ref)


def test_fused_program_in_a_compiled_function_same_at_every_thread_count():
    x = gc.placeholder("x", (None,), "float32")
    f = gc.compile(gc.tanh(x) * 2.0 + gc.exp(-x * x), backend="c")
    xv = np.random.default_rng(3).standard_normal(N_BIG).astype(np.float32)
    res = at_threads(lambda: f(x=xv))
    assert_same_at_all_thread_counts(res)
    np.testing.assert_allclose(res[1], np.tanh(xv) * 2 + np.exp(-xv * xv), rtol=2e-6, atol=1e-6)


# -- conv2d ----------------------------------------------------------------------------------------
def _conv_ref(x, w):
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    y = np.zeros((N, O, H - KH + 1, W - KW + 1))
    for i in range(KH):
        for j in range(KW):
            y += np.einsum("nchw,oc->nohw", x[:, :, i:i + H - KH + 1, j:j + W - KW + 1], w[:, :, i, j])
    return y


def test_conv2d_at_every_thread_count():
    rng = np.random.default_rng(4)
    N, C, H, W, O, K = 6, 3, 20, 18, 8, 3
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, K, K))
    OH, OW = H - K + 1, W - K + 1
    gy = rng.standard_normal((N, O, OH, OW))
    geo = (N, C, H, W, O, K, K, 1, 1, 0, 0)

    def fwd():
        y = np.empty((N, O, OH, OW))
        assert lib.gc_conv2d_fwd_f64(*geo, buf(x), buf(w), ffi.NULL, buf(y)) == 0
        return y

    def bwd_input():
        gx = np.empty_like(x)
        assert lib.gc_conv2d_bwd_input_f64(*geo, buf(w), buf(gy), buf(gx)) == 0
        return gx

    def bwd_weight():
        gw = np.empty_like(w)
        assert lib.gc_conv2d_bwd_weight_f64(*geo, buf(x), buf(gy), buf(gw)) == 0
        return gw

    res = at_threads(fwd)
    assert_same_at_all_thread_counts(res)
    np.testing.assert_allclose(res[1], _conv_ref(x, w), rtol=1e-12, atol=1e-11)
    assert_same_at_all_thread_counts(at_threads(bwd_input))
    res = at_threads(bwd_weight)  # one partial sum per thread: equal within rounding
    ref = np.einsum("nohw,nchw->oc", gy, x[:, :, 0:OH, 0:OW])  # tap (0, 0)
    for nt, gw in res.items():
        np.testing.assert_allclose(gw[:, :, 0, 0], ref, rtol=1e-12, atol=1e-10, err_msg=f"{nt} threads")
        np.testing.assert_allclose(gw, res[1], rtol=1e-13, atol=1e-12, err_msg=f"{nt} threads")


# -- settings --------------------------------------------------------------------------------------
def test_set_num_threads_and_backend_info():
    gc.set_num_threads(3)
    assert gc.backend_info()["threads"] == 3
    gc.set_num_threads(0)
    assert gc.backend_info()["threads"] >= 1


def _threads_in_subprocess(env_value):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHC_NUM_THREADS"}
    if env_value is not None:
        env["GRAPHC_NUM_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", "import graphc; print(graphc.backend_info()['threads'])"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_default_is_the_cpus_this_process_may_use_and_env_var_overrides():
    assert _threads_in_subprocess(None) == len(os.sched_getaffinity(0))
    assert _threads_in_subprocess("5") == 5


def test_libgomp_is_not_linked():
    ldd = shutil.which("ldd")
    if not ldd:
        pytest.skip("no ldd")
    from graphc import _cgraphc
    out = subprocess.run([ldd, _cgraphc.__file__], capture_output=True, text=True).stdout
    assert "gomp" not in out and "libc" in out, out


def test_pool_counts_the_regions_it_runs_on_more_than_one_thread():
    """gc_pool_regions: +1 for a GEMM split over 2 threads, +0 for the same GEMM at 1 thread and
    for one too small to split (below SERIAL_MAX_FMAS, 2^20 multiply-adds)."""
    def regions_of(n, threads):
        lib.gc_set_num_threads(threads)
        a = np.ones((n, n), np.float32)
        c = np.empty((n, n), np.float32)
        before = lib.gc_pool_regions()
        lib.gc_sgemm(0, 0, n, n, n, buf(a), n, buf(a), n, 0.0, buf(c), n, ffi.NULL, 0, 0.0)
        assert c[0, 0] == n
        return lib.gc_pool_regions() - before

    assert regions_of(256, 2) == 1
    assert regions_of(256, 1) == 0
    assert regions_of(32, 2) == 0


def test_a_side_by_side_pair_honours_one_thread():
    """The middle layer's backward GEMMs of an MLP step lower to one side-by-side pair (two
    threads, one GEMM each). Set to one thread after compiling, the same plan runs the pair on the
    caller, one GEMM after the other, with the same values: no region on two threads."""
    from graphc.tools.bench.workloads import _mlp_data, graphc_mlp_step
    sizes = (64, 128, 128, 10)  # 2^20 multiply-adds per middle GEMM: above SIDE_BY_SIDE_MIN_FMAS
    lib.gc_set_num_threads(2)
    results = {}
    for threads in (2, 1):
        weights, x, y = _mlp_data(64, sizes, "float32")
        _, params, f = graphc_mlp_step(weights, sizes, "float32", 0.1, "c")
        f(x=x, y=y)  # compiled (and the pool started) at 2 threads
        assert next(iter(f._plans.values()))[1].lowered.side_by_side, "no pair: the test sees nothing"
        lib.gc_set_num_threads(threads)
        before = lib.gc_pool_regions()
        f(x=x, y=y)
        regions = lib.gc_pool_regions() - before
        results[threads] = [p.value.copy() for p in params]
        lib.gc_set_num_threads(2)
        assert (regions == 0) == (threads == 1), (threads, regions)
    for a, b in zip(results[1], results[2]):
        np.testing.assert_array_equal(a, b)  # each GEMM alone on a thread: the same bits


# -- fork, concurrency -----------------------------------------------------------------------------
def _gemm_check(_=None):
    """A GEMM big enough for 2 threads; returns (max error, pool workers before, after)."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((300, 200)).astype(np.float32)
    B = rng.standard_normal((200, 250)).astype(np.float32)
    C = np.empty((300, 250), np.float32)
    before = lib.gc_pool_workers()
    lib.gc_sgemm(0, 0, 300, 250, 200, buf(A), 200, buf(B), 250, 0.0, buf(C), 250, ffi.NULL, 0, 0.0)
    err = float(np.abs(C - A.astype(np.float64) @ B).max())
    return err, before, lib.gc_pool_workers()


_AFFINITY_SCRIPT = r"""
import os, sys, time
import numpy as np
import graphc as gc
from graphc._cgraphc import lib
lib.gc_set_num_threads(2)
a = gc.placeholder("a", (256, 512), "float32")
b = gc.placeholder("b", (512, 256), "float32")
f = gc.compile([a @ b], backend="c")
A, B = np.ones((256, 512), np.float32), np.ones((512, 256), np.float32)

def call_then_pause():
    assert f(a=A, b=B)[0][0, 0] == 512
    time.sleep(0.02)  # far past the idle spin: the worker sleeps

def worker_tids():
    return [t for t in os.listdir("/proc/self/task")
            if open(f"/proc/self/task/{t}/comm").read().strip() == "graphc-worker"]

for _ in range(5):
    call_then_pause()
workers = worker_tids()
assert len(workers) == 1, workers
tid = int(workers[0])
allowed = os.sched_getaffinity(0)
# 1. asleep, the worker keeps off the CPU its last owner ran on; awake, it has its whole affinity
#    back: a worker called on keeps working on every CPU the process may use.
assert os.sched_getaffinity(tid) < allowed, (os.sched_getaffinity(tid), allowed)
# 2. someone else (taskset -a, a cpuset) changes the sleeping worker's affinity: theirs stands
mine = {min(allowed)}
os.sched_setaffinity(tid, mine)
for _ in range(3):
    call_then_pause()
assert os.sched_getaffinity(tid) == mine, os.sched_getaffinity(tid)
os.sched_setaffinity(tid, allowed)
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="the worker's CPU placement is Linux-only and needs two CPUs")
def test_sleeping_worker_keeps_off_the_owner_cpu_and_respects_an_outside_affinity():
    """csrc/threads.c: an idle worker takes its last owner's CPU out of its affinity before it
    sleeps (so the wake-up places it on another CPU) and puts it back once awake, unless its
    affinity was changed from outside meanwhile. In a subprocess: it changes a pool thread's
    affinity."""
    out = subprocess.run([sys.executable, "-c", _AFFINITY_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_forked_child_runs_parallel_gemm():
    lib.gc_set_num_threads(2)
    err, _, workers = _gemm_check()  # the parent's pool now has a worker
    assert err < 1e-3 and workers >= 1
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child_err, child_before, child_after = pool.apply(_gemm_check)
    assert child_err < 1e-3
    assert child_before == 0 and child_after >= 1  # the child re-created its own worker


def test_concurrent_python_threads_calling_one_function():
    rng = np.random.default_rng(6)
    x = gc.placeholder("x", (None, 96), "float32")
    w = rng.standard_normal((96, 128)).astype(np.float32) / 10
    f = gc.compile(gc.softmax(gc.relu(x @ gc.constant(w)), axis=-1), backend="c")
    feeds = [rng.standard_normal((200 + 8 * i, 96)).astype(np.float32) for i in range(6)]

    def ref(xv):
        h = np.maximum(xv.astype(np.float64) @ w, 0)
        e = np.exp(h - h.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    refs = [ref(xv) for xv in feeds]
    lib.gc_set_num_threads(2)
    errors = []

    def worker(k):
        try:
            for rep in range(15):
                i = (k + rep) % len(feeds)
                np.testing.assert_allclose(f(x=feeds[i]), refs[i], rtol=1e-4, atol=1e-6)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not errors, errors[0]
