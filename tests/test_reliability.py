"""Long-run reliability: fork safety, flat memory over many calls, bitwise determinism."""
import multiprocessing as mp
import os

import numpy as np
import pytest

import graphc as gc
from graphc import backends


def _mlp_step(seed=0, batch=64, sizes=(64, 128, 10), dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, sizes[0]), dtype)
    y = gc.placeholder("y", (None,), "int64")
    params, h = [], x
    for k, (i, o) in enumerate(zip(sizes, sizes[1:])):
        W = gc.parameter((rng.normal(size=(i, o)) * np.sqrt(2 / i)).astype(dtype), name=f"W{k}")
        b = gc.parameter(np.zeros(o, dtype), name=f"b{k}")
        params += [W, b]
        h = h @ W + b
        if k < len(sizes) - 2:
            h = gc.relu(h)
    loss = gc.softmax_cross_entropy(h, y)
    step = gc.compile(loss, updates={p: p - 0.05 * g for p, g in zip(params, gc.grad(loss, params))})
    X = rng.random((batch, sizes[0]), dtype=np.float32).astype(dtype)
    Y = rng.integers(0, sizes[-1], batch)
    return step, params, X, Y


def _child_gemm(queue):
    a = np.ones((300, 300), np.float32)
    x = gc.placeholder("a", (300, 300), "float32")
    queue.put(float(gc.compile((x @ x).sum())(a=a)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_parallel_kernels_does_not_hang():
    a = gc.placeholder("a", (300, 300), "float32")
    f = gc.compile((a @ a).sum())
    assert f(a=np.ones((300, 300), np.float32)) == 300.0 ** 3  # parallel region in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child_gemm, args=(queue,)) for _ in range(2)]
    for p in children:
        p.start()
    for p in children:
        p.join(timeout=60)
    hung = [p for p in children if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a forked child hung in the kernels"
    assert [queue.get(timeout=5) for _ in children] == [300.0 ** 3] * 2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_stays_flat_over_10000_training_steps():
    step, params, X, Y = _mlp_step(batch=32, sizes=(32, 64, 10))
    for _ in range(500):  # warm up: plans, arenas, allocator pools
        step(x=X, y=Y)
    before = _rss_bytes()
    for _ in range(10_000):
        step(x=X, y=Y)
    growth = _rss_bytes() - before
    # measured: well under 1 MiB; a leak of one small buffer per call would be > 5 MiB here
    assert growth < 4 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 10,000 calls"


def test_training_is_bitwise_reproducible():
    def run():
        step, params, X, Y = _mlp_step(seed=3)
        losses = [step(x=X, y=Y) for _ in range(20)]
        return losses, [p.value.copy() for p in params]
    (l1, p1), (l2, p2) = run(), run()
    assert [a.tobytes() for a in l1] == [b.tobytes() for b in l2]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(p1, p2))


@pytest.mark.skipif(not backends.C_AVAILABLE, reason="C extension not built")
def test_thread_count_is_settable():
    old = gc.backend_info()["threads"]
    try:
        gc.set_num_threads(1)
        assert gc.backend_info()["threads"] == 1
        gc.set_num_threads(2)
        assert gc.backend_info()["threads"] == 2
    finally:
        gc.set_num_threads(old)
