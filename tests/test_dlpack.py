"""Feeds from other array libraries through DLPack: read in place on the CPU, clear errors otherwise."""
import tracemalloc

import numpy as np
import pytest

import graphc as gc
from graphc.compiler.runtime import _check_feed

torch = pytest.importorskip("torch")


def test_a_cpu_torch_tensor_is_read_in_place():
    t = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    x = gc.placeholder("x", (None, 3))
    arr = _check_feed(x, t)
    assert arr.__array_interface__["data"][0] == t.data_ptr()  # the tensor's own memory, no copy
    np.testing.assert_array_equal(arr, t.numpy())


def test_a_large_torch_feed_allocates_no_copy():
    t = torch.rand(1 << 20, 4, dtype=torch.float32)  # 16 MiB
    x = gc.placeholder("x", (None, 4))
    f = gc.compile((x * 2.0).sum(axis=0))
    expected = f(x=t.numpy().copy())
    tracemalloc.start()
    try:
        got = f(x=t)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # x * 2 may need one 16 MiB buffer (NumPy backend); a copy of the feed would add another
    assert peak < 20 * 2 ** 20, f"peak traced allocation {peak / 2 ** 20:.1f} MiB"


def test_torch_feeds_give_the_same_results_as_numpy_feeds():
    x = gc.placeholder("x", (None, 3), "float64")
    labels = gc.placeholder("y", (None,), "int64")
    w = gc.parameter(np.arange(12.0).reshape(3, 4) / 10)
    loss = gc.softmax_cross_entropy(x @ w, labels)
    f = gc.compile([loss, gc.grad(loss, [x])[0]])
    X, Y = np.random.default_rng(0).random((5, 3)), np.array([0, 1, 2, 3, 0])
    ref = f(x=X, y=Y)
    for tx in (torch.from_numpy(X), torch.from_numpy(np.asfortranarray(X)), torch.from_numpy(X.T.copy()).T):
        got = f(x=tx, y=torch.from_numpy(Y))
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    assert all(type(o) is np.ndarray for o in got)  # outputs stay NumPy arrays


def test_a_tensor_that_requires_grad_is_refused_with_advice():
    x = gc.placeholder("x", (None, 3))
    f = gc.compile(x.sum())
    with pytest.raises(gc.GraphError, match=r"feed .x. is a Tensor that requires grad; pass x.detach\(\)"):
        f(x=torch.ones(2, 3, requires_grad=True))
    assert f(x=torch.ones(2, 3, requires_grad=True).detach()) == 6


class _OnGpu:
    """Stands in for a CUDA tensor (no GPU needed): DLPack says the data lives on device 2 (CUDA)."""

    def __dlpack__(self, stream=None):
        raise AssertionError("must not be read")

    def __dlpack_device__(self):
        return (2, 0)


def test_a_gpu_array_is_refused_with_advice():
    f = gc.compile(gc.placeholder("x", (None, 3)).sum())
    with pytest.raises(gc.GraphError, match=r"on device 2:0; graphc runs on the CPU: move it there first .*x.cpu\(\)"):
        f(x=_OnGpu())


def test_unsupported_dtypes_and_wrong_precision_are_clear_errors():
    f = gc.compile(gc.placeholder("x", (None, 3)).sum())
    with pytest.raises(gc.GraphError, match=r"cannot be read through DLPack"):
        f(x=torch.ones(2, 3, dtype=torch.bfloat16))
    with pytest.raises(gc.GraphError, match=r"feed 'x' has .*shape \(2, 4\)|feed 'x' has shape \(2, 4\)"):
        f(x=torch.ones(2, 4))
