"""graphc.tools.viz: every plot writes a valid PNG; graph drawings tell forward from gradient nodes."""
import shutil

import numpy as np
import pytest

import graphc as gc
from graphc import attacks, data, nn, optim, viz
from graphc.learn.train import limit_threads

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with limit_threads(1):
        yield


@pytest.fixture(scope="module")
def moons_models():
    s = data.load("moons", seed=0)
    lr, mlp = nn.LogisticRegression(2), nn.MLP([2, 16, 2], activation="tanh", seed=0)
    h_lr = gc.train(lr, s.X_train, s.y_train, epochs=10, optimizer=optim.SGD(0.5), X_test=s.X_test,
                    y_test=s.y_test)
    h_mlp = gc.train(mlp, s.X_train, s.y_train, epochs=10, optimizer=optim.Adam(0.02), X_test=s.X_test,
                     y_test=s.y_test)
    return s, lr, mlp, h_lr, h_mlp


def test_is_png(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png at all")
    assert not viz.is_png(tmp_path / "a.png")


def test_training_curves(tmp_path, moons_models):
    _, _, _, h_lr, h_mlp = moons_models
    fig = viz.plot_history(h_mlp, tmp_path / "one.png")
    assert viz.is_png(tmp_path / "one.png")
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert labels == ["train acc", "test acc"]
    viz.plot_history({"logreg": h_lr, "mlp": h_mlp}, tmp_path / "two.png")
    assert viz.is_png(tmp_path / "two.png")


def test_decision_boundaries(tmp_path, moons_models):
    s, lr, mlp, _, _ = moons_models
    fig = viz.plot_decision_boundary(lr, s.X_train, s.y_train, tmp_path / "lr.png")
    assert viz.is_png(tmp_path / "lr.png")
    # the logistic-regression figure draws its boundary line wᵀx + b = 0
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("w")]
    w, b = lr.boundary()
    xs, ys = line.get_data()
    np.testing.assert_allclose(w[0] * xs + w[1] * ys + b, 0, atol=1e-4)
    viz.plot_decision_boundary(mlp, s.X_train, s.y_train, tmp_path / "mlp.png", resolution=50)
    assert viz.is_png(tmp_path / "mlp.png")
    blobs = data.load("blobs", seed=0)
    three = nn.SoftmaxRegression(2, 2)
    viz.plot_decision_boundary(three, blobs.X_train, blobs.y_train, tmp_path / "b.png", resolution=30)
    with pytest.raises(ValueError, match="2-D inputs"):
        viz.plot_decision_boundary(mlp, np.zeros((3, 4)), np.zeros(3))


def test_adversarial_grid_and_robustness_curves(tmp_path):
    pytest.importorskip("sklearn")
    s = data.load("digits", seed=0)
    model = nn.MLP([64, 32, 10], seed=0)
    gc.train(model, s.X_train, s.y_train, epochs=3, optimizer="adam")
    x, y = s.X_test[:6], s.y_test[:6]
    x_adv = attacks.fgsm(model, x, y, 0.2)
    fig = viz.plot_adversarial_examples(model, x, x_adv, y, tmp_path / "grid.png", image_shape=(1, 8, 8))
    assert viz.is_png(tmp_path / "grid.png") and len(fig.axes) == 3 * 6
    reports = {a: attacks.evaluate(model, s.X_test[:100], s.y_test[:100], a, eps=[0.05, 0.1]) for a in ("fgsm", "pgd")}
    fig = viz.plot_robustness(reports, tmp_path / "rob.png")
    assert viz.is_png(tmp_path / "rob.png")
    xs, ys = fig.axes[0].get_lines()[1].get_data()
    assert list(xs) == [0.0, 0.05, 0.1] and ys[0] == reports["pgd"].clean_acc


def small_graph():
    x = gc.placeholder("x", (None, 3))
    y = gc.placeholder("y", (None,), "int64")
    model = nn.MLP([3, 4, 2])
    loss = gc.softmax_cross_entropy(model(x), y)
    return loss, gc.grad(loss, model.parameters()), model


def test_forward_and_gradient_nodes_are_classified():
    loss, grads, model = small_graph()
    kinds = viz.classify_nodes(loss, grads)
    assert kinds[loss.id] == "forward"
    assert all(kinds[g.id] == "gradient" for g in grads)
    assert all(kinds[p.id] == "parameter" for p in model.parameters())
    assert sorted({k for k in kinds.values()}) == ["constant", "forward", "gradient", "input", "parameter"]
    dot = viz.graph_to_dot(loss, grads, title="mlp")
    assert dot.startswith("digraph graphc {") and dot.rstrip().endswith("}")
    assert dot.count(viz.COLORS["gradient"]) > 0 and dot.count(viz.COLORS["forward"]) > 0
    assert dot.count("->") == sum(len(n.inputs) for n in gc.reachable([loss, *grads]))
    assert '"0.weight\\n(4,3)"' in dot  # parameters are drawn with their dotted names


def test_draw_graph_with_networkx(tmp_path):
    loss, grads, _ = small_graph()
    viz.draw_graph(loss, grads, tmp_path / "g.png", engine="networkx")
    assert viz.is_png(tmp_path / "g.png")
    with pytest.raises(ValueError, match="engine"):
        viz.draw_graph(loss, grads, tmp_path / "h.png", engine="tikz")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_draw_graph_with_graphviz(tmp_path):
    loss, grads, _ = small_graph()
    assert viz.draw_graph(loss, grads, tmp_path / "g.png", engine="dot") == str(tmp_path / "g.png")
    assert viz.is_png(tmp_path / "g.png")
