"""graphc.nn: layers against NumPy, initialisers, dropout, save/load, and accuracy floors."""
import os
import pickle

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.learn.train import Trainer, accuracy, limit_threads, predict_logits


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with limit_threads(1):
        yield


def run(t, **feeds):
    return gc.compile(t)(**feeds)


# -- layers -------------------------------------------------------------------------------------
def test_linear_matches_numpy(rng):
    layer = nn.Linear(5, 3, seed=1)
    layer.bias.value = rng.normal(size=3).astype(np.float32)
    X = rng.normal(size=(4, 5)).astype(np.float32)
    out = run(layer(gc.placeholder("x", (None, 5))), x=X)
    np.testing.assert_allclose(out, X @ layer.weight.value.T + layer.bias.value, rtol=1e-5, atol=1e-6)
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (3, 5)  # (out, in), as PyTorch


def test_initialisers_have_the_stated_scale_and_are_seeded():
    w = nn.Linear(400, 300, init="he", seed=0).weight.value
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.03 * np.sqrt(2 / 400)
    x = nn.Linear(400, 300, init="xavier", seed=0).weight.value
    a = np.sqrt(6 / 700)
    assert x.min() >= -a and x.max() <= a and abs(x.std() - a / np.sqrt(3)) < 0.03 * a
    np.testing.assert_array_equal(nn.MLP([8, 16, 4], seed=3).parameters()[0].value,
                                  nn.MLP([8, 16, 4], seed=3).parameters()[0].value)
    assert not np.array_equal(nn.MLP([8, 16, 4], seed=3).parameters()[0].value,
                              nn.MLP([8, 16, 4], seed=4).parameters()[0].value)
    with pytest.raises(ValueError, match="unknown init"):
        nn.Linear(2, 2, init="orthogonal")


def test_mlp_structure_names_and_forward(rng):
    m = nn.MLP([64, 128, 10], seed=0)
    assert [(n, p.shape) for n, p in m.named_parameters()] == [
        ("0.weight", (128, 64)), ("0.bias", (128,)), ("2.weight", (10, 128)), ("2.bias", (10,))]
    assert m.num_parameters() == 64 * 128 + 128 + 128 * 10 + 10
    X = rng.random((3, 64)).astype(np.float32)
    W1, b1, W2, b2 = (p.value for p in m.parameters())
    np.testing.assert_allclose(predict_logits(m, X), np.maximum(X @ W1.T + b1, 0) @ W2.T + b2, rtol=1e-4, atol=1e-5)
    tanh = nn.MLP([4, 6, 2], activation="tanh")
    assert isinstance(tanh[1], nn.Tanh)
    with pytest.raises(ValueError, match="activation"):
        nn.MLP([4, 2, 2], activation="swish")


def test_cnn_layers_shapes_and_pooling(rng):
    X = rng.random((2, 1, 8, 8)).astype(np.float32)
    x = gc.placeholder("x", (None, 1, 8, 8))
    conv = nn.Conv2d(1, 4, 3, padding=1, seed=0)
    assert run(conv(x), x=X).shape == (2, 4, 8, 8)
    assert run(nn.MaxPool2d(2)(x), x=X).shape == (2, 1, 4, 4)
    np.testing.assert_allclose(run(nn.AvgPool2d(2)(x), x=X)[0, 0, 0, 0], X[0, 0, :2, :2].mean(), rtol=1e-6)
    np.testing.assert_allclose(run(nn.MaxPool2d(2)(x), x=X)[0, 0, 0, 0], X[0, 0, :2, :2].max())
    assert run(nn.Flatten()(x), x=X).shape == (2, 64)
    cnn = nn.SmallCNN(1, 8, 10, seed=0)
    assert run(cnn(x), x=X).shape == (2, 10)
    flat = nn.SmallCNN(1, 8, 10, seed=0, flat_input=True)
    np.testing.assert_allclose(predict_logits(flat, X.reshape(2, 64)), predict_logits(cnn, X), rtol=1e-5)


def test_activation_layers():
    X = np.array([[-2.0, -0.5, 0.0, 1.5]], np.float32)
    x = gc.placeholder("x", (None, 4))
    np.testing.assert_allclose(run(nn.ReLU()(x), x=X), np.maximum(X, 0))
    np.testing.assert_allclose(run(nn.LeakyReLU()(x), x=X), np.where(X > 0, X, 0.1 * X))
    np.testing.assert_allclose(run(nn.Sigmoid()(x), x=X), 1 / (1 + np.exp(-X)), rtol=1e-6)
    np.testing.assert_allclose(run(nn.Tanh()(x), x=X), np.tanh(X), rtol=1e-6)


def test_dropout_only_in_training_and_seeded(rng):
    m = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5))
    X = np.ones((4, 100), np.float32)
    x = gc.placeholder("x", (None, 100))
    np.testing.assert_array_equal(run(m(x), x=X), X)  # evaluation graph: identity
    seed = gc.placeholder("seed", (), "int64")
    f = gc.compile(m(x, training=True, seed=seed))
    a, b, c = f(x=X, seed=1), f(x=X, seed=1), f(x=X, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a).tolist()) <= {0.0, 4.0}  # two layers of inverted dropout: kept values x4
    assert 0.15 < np.mean(a > 0) < 0.35  # kept by both layers: (1/2)^2, independent masks
    assert nn.MLP([4, 8, 2], dropout=0.3).uses_dropout and not nn.MLP([4, 8, 2]).uses_dropout


def test_logistic_regression_logits_give_the_bce_loss(rng):
    m = nn.LogisticRegression(3)
    m.weight.value = rng.normal(size=(3, 1)).astype(np.float32)
    m.bias.value = np.array([0.3], np.float32)
    X = rng.normal(size=(6, 3)).astype(np.float32)
    Y = np.array([0, 1, 1, 0, 1, 0])
    x, y, t = gc.placeholder("x", (None, 3)), gc.placeholder("y", (None,), "int64"), gc.placeholder("t", (None,))
    ce, bce = gc.compile([gc.softmax_cross_entropy(m(x), y), gc.binary_cross_entropy(m.decision_function(x), t)])(
        x=X, y=Y, t=Y.astype(np.float32))
    np.testing.assert_allclose(ce, bce, rtol=1e-5)
    w, b = m.boundary()
    np.testing.assert_allclose(predict_logits(m, X)[:, 1], X @ w + b, rtol=1e-5, atol=1e-6)


# -- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: nn.MLP([64, 32, 10], seed=1), lambda: nn.SmallCNN(1, 8, 10, seed=2),
                                  lambda: nn.LogisticRegression(64, seed=0),
                                  lambda: nn.Sequential(nn.Linear(64, 16), nn.LeakyReLU(0.2), nn.Dropout(0.1),
                                                        nn.Linear(16, 10, init="xavier"))],
                         ids=["mlp", "cnn", "logreg", "sequential"])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, rng, make):
    model = make()
    for p in model.parameters():  # non-trivial weights everywhere (biases too)
        p.value = (p.value + rng.normal(size=p.shape) * 0.1).astype(p.dtype)
    X = rng.random((5, 64)).astype(np.float32)
    if isinstance(model, nn.SmallCNN):
        X = X.reshape(5, 1, 8, 8)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nn.Module.load(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    np.testing.assert_array_equal(predict_logits(loaded, X), predict_logits(model, X))
    fresh = make()
    fresh.load_weights(path)
    np.testing.assert_array_equal(predict_logits(fresh, X), predict_logits(model, X))
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary files left behind


def test_load_is_typed_and_checks_the_class(tmp_path):
    nn.SoftmaxRegression(4, 3).save(tmp_path / "s.npz")
    assert isinstance(nn.SoftmaxRegression.load(tmp_path / "s.npz"), nn.SoftmaxRegression)
    with pytest.raises(nn.ModelFileError, match="holds a SoftmaxRegression, not a MLP"):
        nn.MLP.load(tmp_path / "s.npz")


def test_loading_a_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        pickle.dump({"0.weight": np.zeros((64, 32))}, fh)
    with pytest.raises(nn.ModelFileError, match="pickle"):
        nn.Module.load(path)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(nn.ModelFileError, match="pickle"):
        nn.Module.load(obj)


def test_loading_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    nn.MLP([64, 32, 10]).save(path)
    blob = path.read_bytes()
    for cut in (len(blob) // 2, 100, 10):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(blob[:cut])
        with pytest.raises(nn.ModelFileError, match="corrupt or truncated|not a valid|not a graphc"):
            nn.Module.load(bad)
    with pytest.raises(FileNotFoundError):
        nn.Module.load(tmp_path / "missing.npz")


def test_mismatched_shapes_or_names_are_reported(tmp_path):
    path = tmp_path / "m.npz"
    nn.MLP([64, 128, 10]).save(path)
    with pytest.raises(nn.ModelFileError, match=r"'0.weight' has shape \(128, 64\), the model expects \(64, 64\)"):
        nn.MLP([64, 64, 10]).load_weights(path)
    with pytest.raises(nn.ModelFileError, match="names do not match"):
        nn.MLP([64, 128, 128, 10]).load_weights(path)
    # a file whose weights disagree with its own architecture
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param:2.bias"] = np.zeros(7, np.float32)
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(nn.ModelFileError, match="'2.bias' has shape"):
        nn.Module.load(tmp_path / "tampered.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(nn.ModelFileError, match="not a graphc model"):
        nn.Module.load(tmp_path / "foreign.npz")


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = nn.MLP([4, 8, 2], seed=0)
    old.save(path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        nn.MLP([4, 8, 2], seed=1).save(path)
    assert path.read_bytes() == before  # the old model is intact
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # and the temporary file was removed
    np.testing.assert_array_equal(nn.Module.load(path).parameters()[0].value, old.parameters()[0].value)


# -- accuracy floors (fixed seeds, fixed split) -------------------------------------------------------
def test_logistic_regression_breast_cancer_accuracy():
    pytest.importorskip("sklearn")
    from graphc import data
    s = data.load("breast_cancer", seed=0)
    model = nn.LogisticRegression(30)
    hist = Trainer(model, optim.SGD(0.1), batch_size=32, seed=0).fit(s.X_train, s.y_train, 20)
    acc = accuracy(model, s.X_test, s.y_test)
    assert acc >= 0.95, acc  # measured 0.986 (140/142)
    assert hist["loss"][-1] < hist["loss"][0]


def test_mlp_digits_accuracy():
    pytest.importorskip("sklearn")
    from graphc import data
    s = data.load("digits", seed=0)
    model = nn.MLP([64, 128, 10], seed=0)
    Trainer(model, optim.Adam(0.01), batch_size=32, seed=0).fit(s.X_train, s.y_train, 15)
    acc = accuracy(model, s.X_test, s.y_test)
    assert acc >= 0.96, acc  # measured 0.969 (436/450)


def test_small_cnn_digits_accuracy():
    pytest.importorskip("sklearn")
    from graphc import data
    s = data.load("digits", seed=0, images=True)
    model = nn.SmallCNN(1, 8, 10, channels=(16, 32), seed=0)
    Trainer(model, optim.Adam(0.01), batch_size=32, seed=0).fit(s.X_train, s.y_train, 8)
    acc = accuracy(model, s.X_test, s.y_test)
    assert acc >= 0.96, acc  # measured 0.982 (442/450)


# -- Linear weight layout: (out, in) as PyTorch; graphc-model-v1 files (in, out) convert on load --------
DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_a_v1_model_file_loads_with_its_linear_weights_transposed():
    # saved by graphc 0.1.0 before the layout change (Linear weights stored as (in, out))
    old = DATA / "mlp-4-5-3-graphc-model-v1.npz"
    expected = np.load(DATA / "mlp-4-5-3-graphc-model-v1-expected.npz")
    with np.load(old) as z:
        assert str(z["__format__"]) == "graphc-model-v1" and z["param:0.weight"].shape == (4, 5)
    model = nn.Module.load(old)
    assert model.state_dict()["0.weight"].shape == (5, 4)
    # the logits were computed by the C backend; the NumPy backend rounds its sums differently
    np.testing.assert_allclose(predict_logits(model, expected["X"]), expected["logits"], rtol=1e-6, atol=1e-6)
    into = nn.MLP([4, 5, 3], seed=7).load_weights(old)
    np.testing.assert_allclose(predict_logits(into, expected["X"]), expected["logits"], rtol=1e-6, atol=1e-6)


def test_a_saved_model_is_v2_and_round_trips(tmp_path):
    m = nn.MLP([4, 5, 3], seed=1)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert str(z["__format__"]) == "graphc-model-v2" and z["param:0.weight"].shape == (5, 4)
    X = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(predict_logits(nn.Module.load(tmp_path / "m.npz"), X), predict_logits(m, X))


def test_a_pytorch_state_dict_loads_into_the_same_architecture():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    m = nn.MLP([4, 6, 3], seed=0)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    X = np.random.default_rng(1).random((5, 4)).astype(np.float32)
    np.testing.assert_allclose(predict_logits(m, X), tm(torch.from_numpy(X)).detach().numpy(), rtol=1e-5, atol=1e-6)
