"""What distribution rests on, checked in one process: models and compiled Functions pickle (and
rebuild their compiled caches), and attacks seed their randomness per sample, so an example's
adversarial input does not depend on the batch or slice it is attacked in."""
import pickle

import numpy as np
import pytest

import graphc as gc
from graphc import attacks, nn, optim
from graphc.learn.train import Trainer, limit_threads

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with limit_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    from graphc import data
    return data.load("digits", seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    model = nn.MLP([64, 32, 10], seed=0)
    trainer = Trainer(model, optim.Adam(0.01), batch_size=32, seed=0)
    trainer.fit(digits.X_train, digits.y_train, 3)
    attacks.pgd(model, digits.X_test[:5], digits.y_test[:5], 0.1)  # fills the compiled caches
    return model, trainer


# -- pickling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads), ("cloudpickle", "cloudpickle")])
def test_a_trained_model_pickles_without_its_caches_and_gives_identical_logits(trained, digits, dumps, loads):
    if dumps == "cloudpickle":
        cloudpickle = pytest.importorskip("cloudpickle")
        dumps, loads = cloudpickle.dumps, cloudpickle.loads
    model, _ = trained
    assert model._cache, "the fixture should have compiled something on the model"
    copy = loads(dumps(model))
    assert copy._cache == {} and model._cache  # the original keeps its caches
    X = digits.X_test
    np.testing.assert_array_equal(gc.predict_logits(copy, X), gc.predict_logits(model, X))
    np.testing.assert_array_equal(attacks.pgd(copy, X[:40], digits.y_test[:40], 0.1, seed=2),
                                  attacks.pgd(model, X[:40], digits.y_test[:40], 0.1, seed=2))
    assert [n for n, _ in copy.named_parameters()] == [n for n, _ in model.named_parameters()]
    for p, q in zip(copy.parameters(), model.parameters()):
        assert p is not q and p.value is not q.value and p.value.dtype == q.value.dtype


def test_unpickled_tensors_take_fresh_ids_in_graph_order(trained):
    """Ids order graphs and key graph walks: an unpickled parameter must never share an id with a
    node built later in the receiving process, and must sort before the nodes that use it."""
    model, _ = trained
    copy = pickle.loads(pickle.dumps(model))
    x = gc.placeholder("x", (None, 64))
    out = copy(x)
    ids = [n.id for n in gc.reachable([out])]
    assert len(set(ids)) == len(ids)
    for n in gc.reachable([out]):
        assert all(i.id < n.id for i in n.inputs)


def test_a_function_pickles_as_its_graph_and_options(trained, digits):
    model, trainer = trained
    X = digits.X_test[:64].astype(np.float32)
    x = gc.placeholder("x", (None, 64))
    f = gc.compile([model(x), gc.grad(model(x).sum(), x)], backend="numpy", passes=["cse", "dce"])
    g = pickle.loads(pickle.dumps(f))
    assert g.backend == "numpy" and g.passes == ("cse", "dce") and g._plans == {}
    for a, b in zip(f(x=X), g(x=X)):
        np.testing.assert_array_equal(a, b)
    # a training step with optimiser updates: the copy updates its own (copied) parameters
    step = pickle.loads(pickle.dumps(trainer._step_fn))
    assert len(step.updates) == len(trainer._step_fn.updates)
    before = [p.value.copy() for p, _ in trainer._step_fn.updates]
    step(x=X, y=digits.y_test[:64])
    for (p, _), b in zip(trainer._step_fn.updates, before):
        np.testing.assert_array_equal(p.value, b)  # the original's parameters did not move
    assert any(not np.array_equal(p.value, b) for (p, _), b in zip(step.updates, before))


def test_a_deep_graph_pickles_without_hitting_the_recursion_limit():
    x = gc.placeholder("x", (None, 3), "float64")
    y = x
    for _ in range(3000):  # deeper than the default recursion limit of 1000
        y = gc.tanh(y) * 1.01
    f = gc.compile([y.sum(), gc.grad(y.sum(), x)])
    g = pickle.loads(pickle.dumps(f))
    X = np.random.default_rng(0).random((4, 3))
    for a, b in zip(f(x=X), g(x=X)):
        np.testing.assert_array_equal(a, b)


# -- per-sample seeding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["inf", 2])
def test_random_starts_are_seeded_per_sample_not_per_batch(trained, digits, norm):
    model, _ = trained
    X, Y = digits.X_test[:60], digits.y_test[:60]
    whole = attacks.pgd(model, X, Y, 0.1, norm=norm, steps=1, step=1e-9, seed=4, keep_best=False, clip=None)
    for batch_size in (1, 7, 512):
        again = attacks.pgd(model, X, Y, 0.1, norm=norm, steps=1, step=1e-9, seed=4, keep_best=False, clip=None,
                            batch_size=batch_size)
        np.testing.assert_allclose(again, whole, rtol=0, atol=1e-6)
    part = attacks.pgd(model, X[25:40], Y[25:40], 0.1, norm=norm, steps=1, step=1e-9, seed=4, keep_best=False,
                       clip=None, index=np.arange(25, 40))
    np.testing.assert_allclose(part, whole[25:40], rtol=0, atol=1e-6)
    # the start is the example's own draw: default_rng([seed, index])
    rng = np.random.default_rng([4, 30])
    if norm == "inf":
        start = X[30] + rng.uniform(-0.1, 0.1, size=64)
        np.testing.assert_allclose(whole[30], start, rtol=0, atol=2e-6)
    other_seed = attacks.pgd(model, X, Y, 0.1, norm=norm, steps=1, step=1e-9, seed=5, keep_best=False, clip=None)
    assert not np.allclose(other_seed, whole)


def test_pgd_results_do_not_depend_on_the_batch_or_slice(trained, digits):
    """Full PGD (10 steps, random start, keep_best): slices with their global indices and any batch
    size give the same adversarial examples as one call on the whole set."""
    model, _ = trained
    X, Y = digits.X_test, digits.y_test
    whole = attacks.pgd(model, X, Y, 0.1, seed=1)
    pieces = np.concatenate([attacks.pgd(model, X[i:i + 7], Y[i:i + 7], 0.1, seed=1,
                                         index=np.arange(i, min(i + 7, len(X)))) for i in range(0, len(X), 7)])
    np.testing.assert_array_equal(pieces, whole)
    np.testing.assert_array_equal(attacks.pgd(model, X, Y, 0.1, seed=1, batch_size=64), whole)


def test_index_and_seed_are_checked(trained, digits):
    model, _ = trained
    X, Y = digits.X_test[:5], digits.y_test[:5]
    with pytest.raises(gc.GraphError, match="one integer per example"):
        attacks.pgd(model, X, Y, 0.1, index=np.arange(4))
    with pytest.raises(gc.GraphError, match="one integer per example"):
        attacks.pgd(model, X, Y, 0.1, index=np.linspace(0, 1, 5))
    with pytest.raises(gc.GraphError, match="non-negative"):
        attacks.pgd(model, X, Y, 0.1, index=np.array([0, 1, -2, 3, 4]))
    with pytest.raises(gc.GraphError, match="seed must be an int >= 0"):
        attacks.pgd(model, X, Y, 0.1, seed=-1)
    # fgsm and bim take index too (nothing in them is random), so evaluate can pass it to any attack
    np.testing.assert_array_equal(attacks.fgsm(model, X, Y, 0.1, index=np.arange(10, 15)),
                                  attacks.fgsm(model, X, Y, 0.1))
    np.testing.assert_array_equal(attacks.bim(model, X, Y, 0.1, index=np.arange(10, 15)),
                                  attacks.bim(model, X, Y, 0.1))
    rep = attacks.evaluate(model, X, Y, "pgd", eps=[0.1], seed=3, index=np.arange(100, 105))
    sliced = attacks.pgd(model, X, Y, 0.1, seed=3, index=np.arange(100, 105))
    assert rep.row(0.1)["robust_acc"] == float(np.mean(gc.predict(model, sliced) == Y))
