"""graphc.optim against NumPy reference updates, and the Trainer (one compiled step, history, seeds)."""
import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.learn.train import History, Trainer, accuracy, limit_threads


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with limit_threads(1):
        yield


def quadratic_problem(rng):
    """loss = mean((X w - t)^2) in float64, with its NumPy gradient."""
    X, t = rng.normal(size=(16, 3)), rng.normal(size=16)
    w0 = rng.normal(size=3)
    x_ph, t_ph = gc.placeholder("x", (None, 3), "float64"), gc.placeholder("t", (None,), "float64")
    w = gc.parameter(w0, name="w")
    loss = gc.mean((x_ph @ w - t_ph) ** 2)

    def np_grad(wv):
        return 2 * X.T @ (X @ wv - t) / len(t)
    return X, t, w0, w, loss, np_grad


def compiled_step(opt, w, loss):
    return gc.compile(loss, updates=opt.updates([w], gc.grad(loss, [w])))


def test_sgd_matches_numpy(rng):
    X, t, w0, w, loss, g = quadratic_problem(rng)
    step = compiled_step(optim.SGD(0.05), w, loss)
    ref = w0.copy()
    for _ in range(5):
        step(x=X, t=t)
        ref = ref - 0.05 * g(ref)
    np.testing.assert_allclose(w.value, ref, rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_numpy(rng, nesterov):
    X, t, w0, w, loss, g = quadratic_problem(rng)
    opt = optim.SGD(0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    step = compiled_step(opt, w, loss)
    ref, v = w0.copy(), np.zeros(3)
    for _ in range(6):
        step(x=X, t=t)
        grad = g(ref) + 0.01 * ref
        v = 0.9 * v + grad
        ref = ref - 0.05 * (grad + 0.9 * v if nesterov else v)
    np.testing.assert_allclose(w.value, ref, rtol=1e-12)
    assert len(opt.state_parameters()) == 1


def test_adam_matches_numpy(rng):
    X, t, w0, w, loss, g = quadratic_problem(rng)
    opt = optim.Adam(0.1, beta1=0.8, beta2=0.95, eps=1e-6)
    step = compiled_step(opt, w, loss)
    ref, m, v = w0.copy(), np.zeros(3), np.zeros(3)
    for k in range(1, 8):
        step(x=X, t=t)
        grad = g(ref)
        m = 0.8 * m + 0.2 * grad
        v = 0.95 * v + 0.05 * grad ** 2
        mhat, vhat = m / (1 - 0.8 ** k), v / (1 - 0.95 ** k)
        ref = ref - 0.1 * mhat / (np.sqrt(vhat) + 1e-6)
    np.testing.assert_allclose(w.value, ref, rtol=1e-10)
    powers = {p.name: float(p.value) for p in opt.state_parameters() if p.shape == ()}
    assert powers == pytest.approx({"beta1_power": 0.8 ** 7, "beta2_power": 0.95 ** 7})


def test_one_call_does_forward_backward_and_update(rng):
    X, t, w0, w, loss, g = quadratic_problem(rng)
    opt = optim.GD(0.1)
    step = compiled_step(opt, w, loss)
    value = step(x=X, t=t)
    assert value == pytest.approx(np.mean((X @ w0 - t) ** 2))  # the loss before the update
    np.testing.assert_allclose(w.value, w0 - 0.1 * g(w0))
    opt.lr = 0.0  # a parameter of the graph: no recompilation needed
    before = w.value.copy()
    step(x=X, t=t)
    np.testing.assert_array_equal(w.value, before)
    assert len(step._plans) == 1


def test_optimiser_factory_and_validation():
    assert isinstance(optim.get("adam"), optim.Adam)
    assert optim.get("momentum").momentum == 0.9
    with pytest.raises(ValueError):
        optim.get("rmsprop")
    with pytest.raises(ValueError):
        optim.SGD(-1.0)
    with pytest.raises(ValueError):
        optim.SGD(0.1, nesterov=True)


def test_gd_full_batch_logistic_regression_is_the_course_update(rng):
    # One full-batch GD step on the mean NLL with lr = γN is w ← w + γ Σ (y − σ(wᵀx + b)) x.
    X = rng.normal(size=(40, 2)).astype(np.float32)
    Y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64)
    model = nn.LogisticRegression(2)
    model.weight.value = np.array([[0.2], [-0.1]], np.float32)
    w0, b0 = model.boundary()
    gamma = 0.01
    Trainer(model, optim.GD(gamma * len(X)), batch_size=None).fit(X, Y, epochs=1)
    p = 1 / (1 + np.exp(-(X @ w0 + b0)))
    np.testing.assert_allclose(model.boundary()[0], w0 + gamma * (Y - p) @ X, rtol=1e-5)


# -- Trainer ----------------------------------------------------------------------------------------
def blobs():
    from graphc import data
    return data.load("blobs", seed=0)


def test_trainer_history_and_table(capsys):
    s = blobs()
    model = nn.MLP([2, 16, 2], seed=0)
    hist = Trainer(model, optim.SGD(0.1, momentum=0.9), batch_size=16, verbose=True, progress=False).fit(
        s.X_train, s.y_train, 4, s.X_test, s.y_test)
    assert isinstance(hist, History) and len(hist) == 4
    assert hist.keys() == ["epoch", "loss", "train_acc", "test_acc", "seconds"]
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist.last["test_acc"] == accuracy(model, s.X_test, s.y_test)
    assert hist.last["test_acc"] >= 0.95
    out = capsys.readouterr().out
    assert "train acc" in out and "test acc" in out and len(out.strip().splitlines()) == 5
    assert hist.table().splitlines()[0] == out.strip().splitlines()[0]


def test_training_is_deterministic_given_the_seed():
    s = blobs()
    runs = []
    for seed in (0, 0, 1):
        model = nn.MLP([2, 8, 2], seed=0, dropout=0.2)
        runs.append(Trainer(model, "adam", batch_size=8, seed=seed).fit(s.X_train, s.y_train, 2)["loss"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_trainer_compiles_one_step_and_reuses_it():
    s = blobs()
    trainer = Trainer(nn.MLP([2, 8, 2]), optim.SGD(0.1), batch_size=30)
    assert len(s.X_train) % 30
    trainer.fit(s.X_train, s.y_train, 1)
    fn = trainer._step_fn
    trainer.fit(s.X_train, s.y_train, 2)
    assert trainer._step_fn is fn
    assert len(fn._plans) == 2  # full batches of 30 and the one smaller last batch
    assert trainer.epochs_done == 3 and trainer.steps == 3 * -(-len(s.X_train) // 30)
    with pytest.raises(ValueError, match="compiled for inputs of shape"):
        trainer.fit(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), 1)


def test_train_function_and_callable_module(capsys):
    s = blobs()
    hist = gc.train(nn.SoftmaxRegression(2, 2), s.X_train, s.y_train, epochs=3, optimizer="sgd",
                    X_test=s.X_test, y_test=s.y_test)
    assert hist.last["test_acc"] >= 0.95
    assert isinstance(hist.trainer, Trainer)


def test_progress_bar_runs_when_tqdm_is_installed():
    pytest.importorskip("tqdm")
    s = blobs()
    hist = Trainer(nn.MLP([2, 8, 2]), "adam", batch_size=32, progress=True).fit(s.X_train, s.y_train, 2)
    assert len(hist) == 2


def test_losses_and_divergence_report():
    s = blobs()
    for loss in ("mse", "cw", lambda z, y: gc.softmax_cross_entropy(z, y) * 2.0):
        hist = gc.train(nn.MLP([2, 8, 2]), s.X_train, s.y_train, epochs=3, loss=loss, optimizer=optim.SGD(0.05))
        assert np.isfinite(hist["loss"]).all()
    with pytest.raises(ValueError, match="unknown loss"):
        gc.train(nn.MLP([2, 8, 2]), s.X_train, s.y_train, epochs=1, loss="hinge")
    X = s.X_train * 1e6
    with pytest.raises(FloatingPointError, match="diverged"):
        gc.train(nn.MLP([2, 64, 2]), X, s.y_train, epochs=3, optimizer=optim.SGD(1e6), loss="mse")
