"""The core: graph building, symbolic gradients, compile/Function, errors, scheduling."""
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc
from graphc.compiler.schedule import topological_order

THIS_FILE = os.path.basename(__file__)


def test_lecture_worked_example():
    # f = (x + y) * z at x=-2, y=5, z=-4: f = -12, df/dx = df/dy = z = -4, df/dz = x + y = 3
    x, y, z = (gc.placeholder(n, (), "float64") for n in "xyz")
    f = (x + y) * z
    fn = gc.compile([f, *gc.grad(f, [x, y, z])])
    fv, gx, gy, gz = fn(x=-2.0, y=5.0, z=-4.0)
    assert fv == -12.0
    assert (gx, gy, gz) == (-4.0, -4.0, 3.0)


def test_issue_example_softmax_regression_gradients(rng):
    x = gc.placeholder("x", shape=(None, 3), dtype="float64")
    y = gc.placeholder("y", shape=(None,), dtype="int64")
    W = gc.parameter(rng.normal(size=(3, 4)), name="W")
    b = gc.parameter(rng.normal(size=4), name="b")
    loss = gc.softmax_cross_entropy(x @ W + b, y)
    gW, gb, gx = gc.grad(loss, [W, b, x])
    f = gc.compile([loss, gW, gb, gx])
    X, Y = rng.normal(size=(7, 3)), rng.integers(0, 4, size=7)
    loss_v, gW_v, gb_v, gx_v = f(x=X, y=Y)

    def ref_loss(Wv, bv, Xv):
        z = Xv @ Wv + bv
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -logp[np.arange(len(Y)), Y].mean()

    assert np.isclose(loss_v, ref_loss(W.value, b.value, X), rtol=1e-12)
    np.testing.assert_allclose(gW_v, numeric_grad(lambda w: ref_loss(w, b.value, X), W.value), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gb_v, numeric_grad(lambda v: ref_loss(W.value, v, X), b.value), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gx_v, numeric_grad(lambda v: ref_loss(W.value, b.value, v), X), rtol=1e-6, atol=1e-9)


def test_logistic_regression_gradient_matches_closed_form(rng):
    # d/dw mean BCE = -(1/N) Σ (y_n - σ(wᵀx_n)) x_n  (the course's update direction)
    X, Y = rng.normal(size=(50, 4)), rng.integers(0, 2, size=50).astype(np.float64)
    x = gc.placeholder("x", (None, 4), "float64")
    t = gc.placeholder("t", (None,), "float64")
    w = gc.parameter(rng.normal(size=4), name="w")
    loss = gc.binary_cross_entropy(x @ w, t)
    gw = gc.compile(gc.grad(loss, w))(x=X, t=Y)
    sigma = 1 / (1 + np.exp(-X @ w.value))
    np.testing.assert_allclose(gw, -((Y - sigma)[:, None] * X).sum(0) / len(X), rtol=1e-12)


def test_broadcasting_gradients_are_unbroadcast(rng):
    a = gc.parameter(rng.normal(size=(4, 1, 3)), name="a")
    b = gc.parameter(rng.normal(size=(5, 1)), name="b")
    c = gc.parameter(rng.normal(size=()), name="c")
    loss = ((a * b + c) ** 2).sum()
    ga, gb, gc_ = gc.compile(gc.grad(loss, [a, b, c]))()
    assert ga.shape == (4, 1, 3) and gb.shape == (5, 1) and gc_.shape == ()

    def ref(av, bv, cv):
        return ((av * bv + cv) ** 2).sum()
    np.testing.assert_allclose(ga, numeric_grad(lambda v: ref(v, b.value, c.value), a.value), rtol=1e-6)
    np.testing.assert_allclose(gb, numeric_grad(lambda v: ref(a.value, v, c.value), b.value), rtol=1e-6)
    np.testing.assert_allclose(gc_, numeric_grad(lambda v: ref(a.value, b.value, v), c.value), rtol=1e-6)


def test_broadcast_against_unknown_batch_size(rng):
    x = gc.placeholder("x", (None, 3), "float64")
    b = gc.parameter(rng.normal(size=3), name="b")
    loss = gc.tanh(x + b).sum()
    gb, gx = gc.compile(gc.grad(loss, [b, x]))(x=np.ones((6, 3)))
    expected = (1 - np.tanh(1 + b.value) ** 2)
    np.testing.assert_allclose(gb, 6 * expected, rtol=1e-12)
    np.testing.assert_allclose(gx, np.tile(expected, (6, 1)), rtol=1e-12)
    # a batch of one broadcasts too
    gb1, _ = gc.compile(gc.grad(loss, [b, x]))(x=np.ones((1, 3)))
    np.testing.assert_allclose(gb1, expected, rtol=1e-12)


def test_fan_out_accumulates():
    x = gc.placeholder("x", (), "float64")
    y = x * x + gc.exp(x) * x  # x used four times
    g = gc.compile(gc.grad(y, x))(x=0.7)
    assert np.isclose(g, 2 * 0.7 + np.exp(0.7) * 0.7 + np.exp(0.7), rtol=1e-14)


def test_gradient_wrt_input_placeholder_and_intermediate(rng):
    x = gc.placeholder("x", (None, 2), "float64")
    h = gc.relu(x @ gc.constant(np.array([[1.0, -1.0], [2.0, 0.5]])))
    loss = h.sum()
    gx, gh = gc.compile(gc.grad(loss, [x, h]))(x=np.array([[1.0, 1.0], [-1.0, 2.0]]))
    np.testing.assert_array_equal(gh, np.ones((2, 2)))
    mask = (np.array([[1.0, 1.0], [-1.0, 2.0]]) @ np.array([[1.0, -1.0], [2.0, 0.5]])) > 0
    np.testing.assert_allclose(gx, mask.astype(float) @ np.array([[1.0, -1.0], [2.0, 0.5]]).T)


def test_unrelated_and_integer_inputs_get_zero_gradients():
    x = gc.placeholder("x", (3,), "float64")
    other = gc.placeholder("other", (2,), "float64")
    k = gc.placeholder("k", (3,), "int64")
    y = (x * k).sum() + gc.sign(x).sum()
    gx, go, gk = gc.compile(gc.grad(y, [x, other, k]))(x=[1.0, -2.0, 3.0], other=[0.0, 0.0], k=[1, 2, 3])
    np.testing.assert_array_equal(gx, [1, 2, 3])  # sign contributes zero
    np.testing.assert_array_equal(go, [0, 0])
    np.testing.assert_array_equal(gk, [0, 0, 0])


def test_second_derivative_through_gradient_graph():
    x = gc.placeholder("x", (), "float64")
    y = gc.sigmoid(x) * x ** 3
    (g,) = [gc.grad(y, x)]
    h = gc.grad(g, x)
    xv = 0.3
    s = 1 / (1 + np.exp(-xv))
    d1 = lambda v: (1 / (1 + np.exp(-v))) * 3 * v ** 2 + (1 / (1 + np.exp(-v))) * (1 - 1 / (1 + np.exp(-v))) * v ** 3  # noqa: E731
    assert np.isclose(gc.compile(g)(x=xv), d1(xv), rtol=1e-12)
    assert np.isclose(gc.compile(h)(x=xv), (d1(xv + 1e-6) - d1(xv - 1e-6)) / 2e-6, rtol=1e-6)
    assert s > 0


def test_deep_chain_of_10000_nodes_compiles_without_recursion():
    x = gc.placeholder("x", (), "float64")
    y = x
    for _ in range(5000):
        y = y * 1.0001  # each step creates a constant and a mul: 10,000 nodes
    loss = y
    g = gc.grad(loss, x)
    f = gc.compile([loss, g])
    v, gv = f(x=1.0)
    assert np.isclose(v, 1.0001 ** 5000) and np.isclose(gv, 1.0001 ** 5000)


def test_float32_graphs_stay_float32(rng):
    x = gc.placeholder("x", (None, 3), "float32")
    W = gc.parameter(rng.normal(size=(3, 2)).astype(np.float32), name="W")
    loss = gc.mse(gc.sigmoid(x @ W) * 2.0 + np.ones(2), np.zeros((1, 2)))
    outs = gc.compile([loss, gc.grad(loss, W)])(x=np.ones((4, 3), np.float32))
    assert all(o.dtype == np.float32 for o in outs)
    assert loss.dtype == np.float32


def test_mse_is_half_mean_over_samples():
    p = gc.placeholder("p", (None, 2), "float64")
    t = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    pv = np.array([[0.0, 2.0], [3.0, 2.0], [1.0, 1.0]])
    val, g = gc.compile([gc.mse(p, t), gc.grad(gc.mse(p, t), p)])(p=pv)
    assert np.isclose(val, ((pv - t) ** 2).sum() / (2 * 3))
    np.testing.assert_allclose(g, (pv - t) / 3)


def test_outputs_are_fresh_arrays_that_never_alias():
    x = gc.placeholder("x", (3,), "float64")
    W = gc.parameter(np.arange(3.0), name="W")
    f = gc.compile([x, W, gc.reshape(x, (3, 1)), x * 2, x * 2])
    X = np.array([1.0, 2.0, 3.0])
    a, w, r, d1, d2 = f(x=X)
    for out in (a, w, r):
        out[0] = 99
    assert X[0] == 1.0 and W.value[0] == 0.0
    d1[0] = -1
    assert d2[0] == 2.0
    a2, *_ = f(x=X)
    assert a2[0] == 1.0 and a[0] == 99


def test_parameter_value_is_read_at_call_time():
    x = gc.placeholder("x", (2,), "float64")
    W = gc.parameter(np.ones(2), name="W")
    f = gc.compile((x * W).sum())
    assert f(x=[1.0, 2.0]) == 3.0
    W.value = np.array([2.0, 0.0])
    assert f(x=[1.0, 2.0]) == 2.0


def test_plans_are_cached_per_shape_signature():
    x = gc.placeholder("x", (None, 2), "float64")
    f = gc.compile((x * x).sum())
    assert f(x=np.ones((3, 2))) == 6.0
    assert f(x=np.ones((5, 2))) == 10.0
    assert f(x=np.ones((3, 2)) * 2) == 24.0
    assert len(f._plans) == 2


def test_explain_lists_steps_with_shapes_and_source_line():
    x = gc.placeholder("x", (None, 3), "float32")
    y = gc.relu(x).sum()
    f = gc.compile(y)
    f(x=np.ones((2, 3), np.float32))
    text = f.explain()
    assert "relu" in text and "(2, 3)" in text and THIS_FILE in text


def test_to_networkx_exports_the_dag():
    x = gc.placeholder("x", (2,), "float64")
    y = gc.exp(x).sum()
    g = gc.to_networkx(y)
    ops = sorted(d["op"] for _, d in g.nodes(data=True))
    assert ops == ["exp", "placeholder", "sum"]
    assert g.number_of_edges() == 2


def test_schedule_is_deterministic_and_topological():
    def build():
        a = gc.placeholder("a", (2,), "float64")
        b = gc.exp(a) + gc.log(gc.exp(a) * 2) - gc.tanh(a)
        return b.sum()
    orders = [[n.op for n in topological_order([build()])] for _ in range(3)]
    assert orders[0] == orders[1] == orders[2]
    y = build()
    pos = {n.id: k for k, n in enumerate(topological_order([y]))}
    assert all(pos[i.id] < pos[n.id] for n in topological_order([y]) for i in n.inputs)


def test_dropout_is_inverted_and_deterministic():
    x = gc.placeholder("x", (1000,), "float64")
    y = gc.dropout(x, 0.25, seed=3)
    f = gc.compile([y, gc.grad((y * 2).sum(), x)])
    a, g = f(x=np.ones(1000))
    b, _ = f(x=np.ones(1000))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1 / 0.75}
    assert 0.15 < (a == 0).mean() < 0.35
    np.testing.assert_array_equal(g, 2 * a)  # same mask in the backward pass
    seed = gc.placeholder("seed", (), "int64")
    z = gc.compile(gc.dropout(x, 0.5, seed=seed))
    assert not np.array_equal(z(x=np.ones(1000), seed=1), z(x=np.ones(1000), seed=2))


def test_threads_share_a_compiled_function(rng):
    x = gc.placeholder("x", (None, 8), "float64")
    W = gc.parameter(rng.normal(size=(8, 8)), name="W")
    f = gc.compile(gc.tanh(x @ W).sum())
    inputs = [rng.normal(size=(16, 8)) for _ in range(8)]
    expected = [f(x=v) for v in inputs]
    results = [None] * 8

    def work(k):
        for _ in range(20):
            results[k] = f(x=inputs[k])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


# -- errors: each names the op, the shapes and the user's line --------------------------------
def _line_of(pattern):
    with open(__file__) as f:
        for k, line in enumerate(f, 1):
            if pattern in line and "_line_of" not in line:
                return k
    raise AssertionError(pattern)


def test_grad_of_non_scalar_is_a_clear_error():
    x = gc.placeholder("x", (3,), "float64")
    y = gc.exp(x)  # marker: nonscalar
    with pytest.raises(gc.GraphError, match=r"scalar") as info:
        gc.grad(y, x)
    assert f"{THIS_FILE}:{_line_of('marker: nonscalar')}" in str(info.value)


def test_shape_mismatch_at_build_time_names_op_shapes_and_line():
    a = gc.placeholder("a", (None, 3), "float64")
    b = gc.placeholder("b", (4, 2), "float64")
    with pytest.raises(gc.GraphError) as info:
        a @ b  # marker: matmul-mismatch
    msg = str(info.value)
    assert "matmul" in msg and "(?, 3)" in msg and "(4, 2)" in msg
    assert f"{THIS_FILE}:{_line_of('marker: matmul-mismatch')}" in msg


def test_shape_mismatch_known_only_at_call_time():
    a = gc.placeholder("a", (None, 3), "float64")
    b = gc.placeholder("b", (None, 3), "float64")
    s = (a + b).sum()  # marker: late-mismatch
    f = gc.compile(s)
    with pytest.raises(gc.GraphError) as info:
        f(a=np.ones((4, 3)), b=np.ones((5, 3)))
    msg = str(info.value)
    assert "add" in msg and "(4, 3)" in msg and "(5, 3)" in msg
    assert f"{THIS_FILE}:{_line_of('marker: late-mismatch')}" in msg


@pytest.mark.parametrize("feeds, pattern", [
    ({}, r"missing feed 'x'"),
    ({"x": np.ones((2, 3)), "y": np.zeros(2, np.int64), "x_typo": 1}, r"unexpected feed.*'x_typo'"),
    ({"x": np.ones((2, 3), np.complex64), "y": np.zeros(2, np.int64)}, r"complex64 values is not numeric"),
    ({"x": np.ones((2, 4)), "y": np.zeros(2, np.int64)}, r"shape \(2, 4\), expected \(\?, 3\)"),
    ({"x": np.ones((2, 3, 1)), "y": np.zeros(2, np.int64)}, r"dimension"),
    ({"x": np.ones((2, 3)), "y": np.zeros(2)}, r"float64 but int64 is expected: floats would be truncated"),
    ({"x": np.ones((2, 3)), "y": np.array([0, 4])}, r"softmax_cross_entropy.*\[0, 4\).*found 4"),
    ({"x": np.ones((2, 3)), "y": np.array([-1, 0])}, r"softmax_cross_entropy.*found -1"),
    ({"x": np.ones((2, 3)), "y": np.zeros(3, np.int64)}, r"batch sizes differ"),
    ({"x": [["a", "b", "c"]], "y": np.zeros(1, np.int64)}, r"cannot be converted"),
])
def test_bad_feeds_raise_graph_error(feeds, pattern):
    x = gc.placeholder("x", (None, 3), "float64")  # marker: placeholder-x
    y = gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(x @ np.ones((3, 4)), y)  # marker: sce
    f = gc.compile(loss)
    with pytest.raises(gc.GraphError, match=pattern) as info:
        f(**feeds)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    if "unexpected" not in pattern:
        assert THIS_FILE in msg and re.search(r":\d+", msg)


def test_label_error_points_at_the_loss_line():
    x = gc.placeholder("x", (None, 3), "float64")
    y = gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(x, y)  # marker: label-line
    with pytest.raises(gc.GraphError) as info:
        gc.compile(loss)(x=np.ones((2, 3)), y=np.array([0, 3]))
    assert f"{THIS_FILE}:{_line_of('marker: label-line')}" in str(info.value)


def test_misc_build_errors():
    x = gc.placeholder("x", (2, 3), "float64")
    with pytest.raises(gc.GraphError, match="reshape"):
        x.reshape(4, 2)
    with pytest.raises(gc.GraphError, match="axis"):
        x.sum(axis=2)
    with pytest.raises(gc.GraphError, match="truth value"):
        bool(x > 0)
    with pytest.raises(gc.GraphError, match="named 'x'"):
        gc.compile(x.sum() + gc.placeholder("x", (2, 3), "float64").sum())
    with pytest.raises(gc.GraphError, match="dropout probability"):
        gc.dropout(x, 1.0)
    with pytest.raises(gc.GraphError, match="unknown backend"):
        gc.compile(x.sum(), backend="cuda")
    with pytest.raises(gc.GraphError, match="does not fit"):
        gc.conv2d(gc.placeholder("im", (1, 1, 2, 2)), gc.parameter(np.ones((1, 1, 3, 3), np.float32)))


def test_numpy_fallback_when_extension_missing():
    # Simulate an install without the C extension: import must work, warn once, run on NumPy.
    code = (
        "import sys, warnings\n"
        "sys.modules['graphc._cgraphc'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import graphc as gc\n"
        "    import numpy as np\n"
        "    x = gc.placeholder('x', (2,), 'float64')\n"
        "    print(gc.compile((x * x).sum())(x=np.array([1.0, 2.0])), gc.backend_info()['backend'])\n"
        "print(sum('C extension is not available' in str(m.message) for m in w))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRAPHC_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["5.0", "numpy", "1"]


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_convolutions_propagate_nan_and_inf_through_a_zero_weight(backend):
    """IEEE: inf * 0 and NaN * 0 are NaN. A 1x1 convolution with one channel used to go through
    np.dot, whose BLAS scaled by the zero weight and returned 0 (graphc fuzz --seed 3)."""
    if backend == "c" and not gc.backend_info()["c_available"]:
        pytest.skip("C extension not built")
    x = gc.placeholder("x", (1, 1, 2, 2), "float32")
    w = gc.placeholder("w", (1, 1, 1, 1), "float32")
    y = gc.conv2d(x, w)
    gx, gw = gc.grad(gc.sum(y * gc.constant(np.float32([[[[np.nan, 1.0], [2.0, 3.0]]]]))), [x, w])
    xv = np.float32([np.nan, np.inf, 1e30, 1.0]).reshape(1, 1, 2, 2)
    with np.errstate(all="ignore"):
        yv, gxv, gwv = gc.compile([y, gx, gw], backend=backend)(x=xv, w=np.zeros((1, 1, 1, 1), np.float32))
    np.testing.assert_array_equal(yv.ravel(), [np.nan, np.nan, 0.0, 0.0])
    np.testing.assert_array_equal(gxv.ravel(), [np.nan, 0.0, 0.0, 0.0])  # upstream NaN times the zero weight
    assert np.isnan(gwv).all()
