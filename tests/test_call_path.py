"""The call path of a compiled Function (issue 14, item 4): a call that matches the last
signature skips conversions and reuses pointers and buffers. These tests pin what must not
change for the user: every returned array is theirs, nothing they hold is ever overwritten, and
anything unusual still goes through the full checks."""
import threading

import numpy as np
import pytest

import graphc as gc


def _lr_step(backend=None):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    T = (rng.random(40) > 0.5).astype(np.float64)
    w = gc.parameter(np.zeros(5), name="w")
    b = gc.parameter(np.zeros(()), name="b")
    x = gc.placeholder("x", (None, 5), "float64")
    t = gc.placeholder("t", (None,), "float64")
    loss = gc.binary_cross_entropy(x @ w + b, t)
    gw, gb = gc.grad(loss, [w, b])
    f = gc.compile(loss, backend=backend, updates={w: w - 0.5 * gw, b: b - 0.5 * gb})
    return f, (w, b), X, T


def _numpy_lr(X, T, steps):
    w, b, n = np.zeros(X.shape[1]), 0.0, len(X)
    history = []
    for _ in range(steps):
        z = X @ w + b
        loss = np.mean(np.maximum(z, 0) - z * T + np.log1p(np.exp(-np.abs(z))))
        g = (1 / (1 + np.exp(-z)) - T) / n
        w, b = w - 0.5 * (X.T @ g), b - 0.5 * g.sum()
        history.append((loss, w.copy(), b))
    return history


def test_training_steps_match_numpy_and_old_values_stay_intact():
    """updates= ping-pongs parameter buffers; a snapshot the user keeps must never change."""
    f, (w, b), X, T = _lr_step()
    ref = _numpy_lr(X, T, 12)
    kept_w, losses = [], []
    for _ in range(12):
        losses.append(f(x=X, t=T))
        kept_w.append(w.value)  # the user's reference to this step's array
    for k, (loss, w_ref, _) in enumerate(ref):
        np.testing.assert_allclose(losses[k], loss, rtol=1e-12)
        np.testing.assert_allclose(kept_w[k], w_ref, rtol=1e-12, atol=1e-15)
    assert len({id(a) for a in kept_w}) == 12


def test_dropped_outputs_are_reused_but_held_ones_never():
    x = gc.placeholder("x", (None, 3), "float64")
    f = gc.compile(gc.exp(x) + 1.0)
    a = np.linspace(0, 1, 6).reshape(2, 3)
    held = [f(x=a * k) for k in range(5)]
    for k, out in enumerate(held):
        np.testing.assert_allclose(out, np.exp(a * k) + 1.0)
    view = f(x=a)[:1]  # a view keeps its base alive: the base must not be written again
    before = view.copy()
    for k in range(4):
        f(x=a * (k + 7))
    np.testing.assert_array_equal(view, before)


def test_feed_changed_in_place_between_calls_is_read_again():
    x = gc.placeholder("x", (4,), "float64")
    f = gc.compile(x * 2.0)
    buf = np.arange(4.0)
    np.testing.assert_array_equal(f(x=buf), [0, 2, 4, 6])
    buf[:] = 10
    np.testing.assert_array_equal(f(x=buf), [20, 20, 20, 20])


@pytest.mark.parametrize("case", ["noncontiguous", "misaligned", "list", "other_dtype", "other_shape", "extra"])
def test_unusual_calls_after_fast_ones_take_the_full_path(case):
    x = gc.placeholder("x", (None, 3), "float32")
    y = gc.placeholder("y_extra_name_test", (None,), "float32")  # noqa: F841 - lives so 'extra' is allowed
    f = gc.compile(gc.tanh(x) * 3.0)
    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    for _ in range(3):
        f(x=a)
    if case == "noncontiguous":
        feed, ref = np.asfortranarray(a), a
    elif case == "misaligned":
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(a.shape)
        raw[...] = a
        assert not raw.flags.aligned
        feed, ref = raw, a
    elif case == "list":
        feed, ref = a.tolist(), a
    elif case == "other_dtype":
        feed, ref = a.astype(np.float64), a
    elif case == "other_shape":
        feed, ref = a[:2].copy(), a[:2]
    else:
        out = f(x=a, y_extra_name_test=np.zeros(2, np.float32))
        np.testing.assert_allclose(out, np.tanh(a) * 3, rtol=1e-6)
        return
    np.testing.assert_allclose(f(x=feed), np.tanh(ref) * 3, rtol=1e-6)
    np.testing.assert_allclose(f(x=a), np.tanh(a) * 3, rtol=1e-6)


def test_errors_on_the_fast_signature_still_name_the_feed():
    x = gc.placeholder("x", (None, 3), "float32")
    f = gc.compile(x + 1.0)
    f(x=np.zeros((2, 3), np.float32))
    with pytest.raises(gc.GraphError, match="missing feed 'x'"):
        f()
    with pytest.raises(gc.GraphError, match="unexpected feed"):
        f(x=np.zeros((2, 3), np.float32), nosuchname=1)
    with pytest.raises(gc.GraphError, match="floats would be truncated"):
        gc.compile(gc.placeholder("k", (2,), "int64") + 1)(k=np.zeros(2))


def test_parameter_replaced_by_the_user_is_read():
    p = gc.parameter(np.ones(3), name="p")
    x = gc.placeholder("x", (3,), "float64")
    f = gc.compile(x * p)
    np.testing.assert_array_equal(f(x=np.ones(3)), [1, 1, 1])
    p.value = np.full(3, 2.0)
    np.testing.assert_array_equal(f(x=np.ones(3)), [2, 2, 2])
    p.value[:] = 5  # in place: the same object, new contents
    np.testing.assert_array_equal(f(x=np.ones(3)), [5, 5, 5])
    p.value = [7, 7, 7]  # not an array: converted by the full path
    np.testing.assert_array_equal(f(x=np.ones(3)), [7, 7, 7])


def test_concurrent_calls_each_get_their_own_buffers():
    x = gc.placeholder("x", (None, 8), "float64")
    f = gc.compile(gc.sigmoid(x @ gc.constant(np.eye(8))) * 2.0)
    errors = []

    def work(k):
        a = np.full((16, 8), float(k) / 10)
        want = 2 / (1 + np.exp(-a))
        for _ in range(200):
            out = f(x=a)
            if not np.allclose(out, want):
                errors.append(k)
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
