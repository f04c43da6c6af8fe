"""Regressions for what a new user and a PyTorch-oracle probe found (issue 15): wrong or
inconsistent numbers, silent surprises, and what a PyTorch user reaches for first. Each test
failed on the code before its fix."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE

BACKENDS = ["numpy"] + (["c"] if C_AVAILABLE else [])


def _grad(y, x, feeds, backend):
    return gc.compile(gc.grad(y, x), backend=backend)(**feeds)


# -- wrong or inconsistent numbers ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_leaky_relu_with_a_negative_slope_has_the_right_gradient(backend):
    x = gc.placeholder("x", (4,), "float64")
    X = np.array([-2.0, -1.0, 1.0, 2.0])
    g = _grad(gc.leaky_relu(x, alpha=-0.5).sum(), x, {"x": X}, backend)
    np.testing.assert_array_equal(g, [-0.5, -0.5, 1.0, 1.0])  # PyTorch's values


@pytest.mark.parametrize("backend", BACKENDS)
def test_leaky_relu_with_a_negative_slope_after_a_matmul_is_not_fused_wrongly(backend):
    # the fusion pass would make dense(..., act=leaky_relu), whose VJP reads the output's sign
    x = gc.placeholder("x", (3, 2), "float32")
    W = gc.parameter(np.array([[1.0, -1.0], [2.0, 0.5]], np.float32))
    y = gc.leaky_relu(x @ W, alpha=-0.5).sum()
    X = np.array([[1, 2], [-1, 0.5], [3, -3]], np.float32)
    got = gc.compile(gc.grad(y, W), backend=backend)(x=X)
    z = X @ W.value
    want = X.T @ np.where(z > 0, 1.0, -0.5)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pow_gradients_are_zero_not_nan_where_the_derivative_is_zero(backend):
    a = gc.placeholder("a", (3,), "float64")
    b = gc.placeholder("b", (3,), "float64")
    ga, gb = _grad((a ** b).sum(), [a, b], {"a": np.array([0.0, 2.0, 0.0]), "b": np.array([2.0, 0.5, 0.0])},
                   backend)
    np.testing.assert_allclose(ga, [0.0, 0.5 * 2.0 ** -0.5, 0.0])
    np.testing.assert_allclose(gb, [0.0, np.sqrt(2.0) * np.log(2.0), 0.0])
    x = gc.placeholder("x", (2,), "float64")
    np.testing.assert_array_equal(_grad(gc.power(x, 0).sum(), x, {"x": np.array([0.0, 1.0])}, backend), [0, 0])
    p = gc.placeholder("p", (), "float64")
    gp = _grad((gc.relu(x) ** p).sum(), p, {"x": np.array([0.0, 2.0]), "p": np.array(1.5)}, backend)
    assert np.isfinite(gp) and gp == pytest.approx(2.0 ** 1.5 * np.log(2.0))


@pytest.mark.skipif(not C_AVAILABLE, reason="compares the C backend with NumPy")
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_softmax_cross_entropy_gradient_does_not_hide_a_non_finite_logit(bad):
    z = gc.placeholder("z", (2, 3), "float64")
    y = gc.placeholder("y", (2,), "int64")
    loss = gc.softmax_cross_entropy(z, y)
    Z = np.array([[bad, 0.0, 1.0], [0.5, 0.1, -0.2]])
    feeds = {"z": Z, "y": np.array([1, 0])}
    outs = {b: gc.compile([loss, gc.grad(loss, z)], backend=b)(**feeds) for b in ("c", "numpy")}
    for c_val, np_val in zip(outs["c"], outs["numpy"]):
        np.testing.assert_array_equal(np.isnan(c_val), np.isnan(np_val))
    row0 = outs["c"][1][0]
    assert np.isfinite(outs["c"][1][1]).all()
    assert np.isfinite(row0).all() if bad == -np.inf else np.isnan(row0).all()  # -inf: probability 0, defined


def test_integer_sums_accumulate_like_numpy():
    v = gc.placeholder("v", (4,), "int32")
    s = gc.sum(v)
    assert s.dtype == np.int64
    assert gc.compile(s)(v=np.full(4, 2 ** 30, np.int32)) == 2 ** 32


def test_gradcheck_near_a_domain_edge_is_not_a_wrong_vjp():
    x = gc.placeholder("x", (2,), "float64")
    report = gc.gradcheck(gc.log(x).sum(), {x: np.array([1e-7, 1.0])})
    assert report, report
    assert report.edges and "x[0]" in report.edges[0]
    assert "domain edge" in str(report)


# -- silent surprises ----------------------------------------------------------------------------------
def test_same_shape_layers_start_different_and_reproducibly():
    gc.manual_seed(0)
    m = gc.nn.Sequential(gc.nn.Linear(16, 16), gc.nn.ReLU(), gc.nn.Linear(16, 16))
    w1, w2 = (p.value for p in m.parameters() if p.value.ndim == 2)
    assert not np.array_equal(w1, w2)
    gc.manual_seed(0)
    again = gc.nn.Sequential(gc.nn.Linear(16, 16), gc.nn.ReLU(), gc.nn.Linear(16, 16))
    for p, q in zip(m.parameters(), again.parameters()):
        np.testing.assert_array_equal(p.value, q.value)
    rebuilt = gc.nn.Module.from_config(m.config())  # the drawn seeds are part of the config
    for p, q in zip(m.parameters(), rebuilt.parameters()):
        np.testing.assert_array_equal(p.value, q.value)


def test_one_conversion_rule_for_arrays_and_lists():
    x = gc.placeholder("x", (None, 2), "float32")
    y = gc.placeholder("y", (None,), "int64")
    f = gc.compile(gc.softmax_cross_entropy(x, y))
    base = f(x=np.array([[1.0, 2.0]], np.float32), y=np.array([1]))
    assert f(x=np.array([[1.0, 2.0]]), y=[1]) == base  # float64 array -> float32: same kind, accepted
    assert f(x=[[1.0, 2.0]], y=np.array([1], np.int32)) == base  # list of floats, int32 labels
    for bad_y in (np.array([1.0]), [1.5]):  # floats for integer labels: refused, with the reason
        with pytest.raises(gc.GraphError, match="floats would be truncated"):
            f(x=[[1.0, 2.0]], y=bad_y)
    model = gc.nn.MLP([2, 3, 2], seed=0)
    with pytest.raises(gc.GraphError, match="floats would be truncated"):
        gc.train(model, np.ones((4, 2)), np.array([0.0, 1.0, 0.0, 1.0]), epochs=1, progress=False)
    gc.train(model, np.ones((4, 2)), [0, 1, 0, 1], epochs=1, progress=False)  # float64 X trains a float32 model


def test_a_feed_dict_serves_every_function_of_a_graph():
    x = gc.placeholder("x", (None, 3), "float32")
    y = gc.placeholder("y", (None,), "int64")
    W = gc.parameter(np.ones((3, 2), np.float32))
    logits = x @ W
    loss = gc.softmax_cross_entropy(logits, y)
    feeds = {"x": np.ones((2, 3), np.float32), "y": np.array([0, 1])}
    gc.compile(loss)(**feeds)
    np.testing.assert_array_equal(gc.compile(logits)(**feeds), np.full((2, 2), 3.0, np.float32))
    with pytest.raises(gc.GraphError, match=r"unexpected feed\(s\) \['yy_typo'\]"):
        gc.compile(logits)(x=feeds["x"], yy_typo=1)


# -- what a PyTorch user reaches for first -------------------------------------------------------------
def test_subpackages_are_attributes_right_after_import():
    code = "import graphc as gc; print(gc.nn.Linear, gc.optim.SGD, gc.attacks.fgsm, gc.data.load)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=_env())


def test_train_and_eval_modes_switch_dropout():
    m = gc.nn.Sequential(gc.nn.Linear(4, 32, seed=0), gc.nn.Dropout(0.5), gc.nn.Linear(32, 2, seed=1))
    x = gc.placeholder("x", (None, 4), "float32")
    X = np.ones((3, 4), np.float32)
    evaluated = gc.compile(m(x))(x=X)
    assert m.train() is m and m.training and all(layer.training for layer in m.modules())
    trained = gc.compile(m(x))(x=X)
    assert not np.allclose(evaluated, trained)  # dropout is active in training mode
    m.eval()
    np.testing.assert_array_equal(gc.compile(m(x))(x=X), evaluated)
    np.testing.assert_array_equal(gc.predict_logits(m.train(), X), evaluated)  # predict always evaluates


def test_reprs_and_numpy_conversion():
    x = gc.placeholder("x", (None, 3), "float32")
    f = gc.compile(gc.tanh(x).sum())
    assert "placeholders ['x']" in repr(f) and "0 plan(s)" in repr(f)
    f(x=np.ones((2, 3), np.float32))
    report = f.explain()
    assert repr(report) == str(report) and report.startswith("Plan:")
    with pytest.raises(gc.GraphError, match="symbolic"):
        np.asarray(x)


def test_train_is_a_plain_function_with_clear_argument_errors():
    assert inspect.isfunction(gc.train) and "optimizer" in inspect.signature(gc.train).parameters
    model = gc.nn.MLP([2, 3, 2], seed=0)
    with pytest.raises(gc.GraphError, match=r"optimizer must be.*SGD\(0.01\).*test_first_hour.py"):
        gc.train(model, np.ones((4, 2)), [0, 1, 0, 1], optimizer=0.01)
    with pytest.raises(gc.GraphError, match=r"y \(class labels\).*not numeric.*test_first_hour.py"):
        gc.train(model, np.ones((4, 2)), np.array(["a", "b", "a", "b"]))


def _env(**extra):
    env = {k: v for k, v in os.environ.items()}
    root = os.path.dirname(os.path.dirname(os.path.abspath(gc.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "graphc.tools.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=120)


def test_cli_version_info_help_and_a_missing_extra(tmp_path):
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"graphc {gc.__version__}"
    out = _cli("info", "--help")
    assert out.returncode == 0 and "usage: graphc info" in out.stdout
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'sklearn':\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = _env()
    env["PYTHONPATH"] = f"{block}{os.pathsep}{env['PYTHONPATH']}"
    out = _cli("demo", "--epochs", "1", "--out", str(tmp_path / "o"), env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "graphc demo: this dataset ships with scikit-learn: pip install 'graphc[demo]' (or pip install scikit-learn)"]


def test_garbage_model_files_say_what_they_are(tmp_path):
    garbage = tmp_path / "model.npz"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(gc.nn.ModelFileError, match=r"not a graphc model file \(not a zip archive"):
        gc.nn.Module.load(garbage)


def test_a_missing_extension_names_the_real_reason():
    code = ("import sys; sys.modules['graphc._cgraphc'] = None\n"
            "import warnings; warnings.simplefilter('ignore')\n"
            "import graphc; print(graphc.backend_info()['c_import_error'])")
    env = {k: v for k, v in _env().items() if k != "GRAPHC_BACKEND"}  # "c" would refuse to start without it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "was not built" in out.stdout and "circular import" not in out.stdout


def test_huge_zero_stride_feeds_are_refused_before_the_copy():
    x = gc.placeholder("x", (None, None), "float32")
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float64), shape=(1 << 22, 1 << 22), strides=(0, 0))
    with pytest.raises(gc.GraphError, match="more than this machine has available"):
        gc.compile(x.sum())(x=huge)


# -- indexing ------------------------------------------------------------------------------------------
INDEX_KEYS = [(slice(None), 0), slice(1, 3), (Ellipsis, slice(None, None, 2)), np.array([1, 0, 1]),
              (0, np.array([2, 2, 0])), (slice(None), np.array([[0, 1], [2, 2]]), -1), (None, 1),
              (Ellipsis, None, 1), -1, (1, slice(None, None, -1)), (slice(None), [0, 2])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", INDEX_KEYS, ids=[repr(k) for k in INDEX_KEYS])
def test_indexing_matches_numpy_and_scatters_gradients(backend, key):
    X = np.arange(24.0).reshape(2, 3, 4)
    x = gc.placeholder("x", (None, 3, 4), "float64")
    y = x[key]
    value, grad = gc.compile([y, gc.grad((y * 1.5).sum(), x)], backend=backend)(x=X)
    np.testing.assert_array_equal(value, X[key])
    want = np.zeros_like(X)
    np.add.at(want, key, 1.5)  # repeated integer indices accumulate
    np.testing.assert_array_equal(grad, want)


def test_indexing_gradient_against_pytorch():
    torch = pytest.importorskip("torch")
    X = np.random.default_rng(0).normal(size=(4, 5))
    idx = np.array([3, 0, 3, 1])
    x = gc.placeholder("x", (4, 5), "float64")
    loss = (gc.tanh(x[idx, 1:4]) * np.arange(12.0).reshape(4, 3)).sum() + x[:, -1].sum()
    got = gc.compile(gc.grad(loss, x))(x=X)
    tx = torch.tensor(X, requires_grad=True)
    tl = (torch.tanh(tx[torch.tensor(idx), 1:4]) * torch.arange(12.0, dtype=torch.float64).reshape(4, 3)).sum()
    (tl + tx[:, -1].sum()).backward()
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12)


def test_bad_indices_raise_graph_errors():
    x = gc.placeholder("x", (None, 3, 4), "float64")
    for key, pattern in [((0, 0, 0, 0), "too many indices"), ((Ellipsis, Ellipsis), "single ellipsis"),
                         (np.array([True, False]), "boolean masks"), ((slice(None), 1.5), "unsupported index"),
                         ((slice(None), 3), "out of bounds for axis 1 with size 3")]:
        with pytest.raises(gc.GraphError, match=pattern):
            x[key]
    f = gc.compile(x[np.array([0, 5])])
    with pytest.raises(gc.GraphError, match="index 5 is out of bounds for axis 0 with size 2"):
        f(x=np.zeros((2, 3, 4)))
