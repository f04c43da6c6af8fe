"""Plots with matplotlib (the optional `demo` extra): training curves, 2-D decision boundaries,
clean-vs-adversarial image grids, accuracy-vs-ε curves, and drawings of the computation graph.

Every function returns a matplotlib Figure and, given `path`, also writes it as PNG. Figures are
made with matplotlib's object API and the Agg canvas (no pyplot, no display, no global state):

    >>> from graphc import nn, data, viz
    >>> import graphc as gc
    >>> s = data.load("moons", seed=0)
    >>> model = nn.MLP([2, 16, 2], activation="tanh")
    >>> h = gc.train(model, s.X_train, s.y_train, epochs=20, optimizer="adam")
    >>> fig = viz.plot_decision_boundary(model, s.X_train, s.y_train, path="boundary.png")  # doctest: +SKIP

`draw_graph(loss, gradients=gc.grad(loss, params), path="graph.png")` draws the DAG itself,
forward nodes and gradient nodes in different colours; it uses Graphviz `dot` when installed and
networkx + matplotlib otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..ir.errors import MissingExtra
from ..ir.graph import reachable
from ..ir.tensor import Tensor

__all__ = ["plot_history", "plot_decision_boundary", "plot_adversarial_examples", "plot_robustness",
           "draw_graph", "graph_to_dot", "classify_nodes", "is_png"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLORS = {"forward": "#4C72B0", "gradient": "#DD8452", "input": "#55A868", "parameter": "#E5C94A",
          "constant": "#B0B0B0"}


def _figure(w: float, h: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("plots need matplotlib: pip install 'graphc[demo]'") from exc
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Optional[Union[str, os.PathLike]]):
    if path is not None:
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    return fig


def is_png(path: Union[str, os.PathLike]) -> bool:
    """True when the file starts with the PNG signature and has an IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"


# -- training curves ----------------------------------------------------------------------------
def plot_history(history: Any, path=None, title: str = "training") -> Any:
    """Loss and accuracy per epoch. `history` is a History, a {column: list} dict, or a dict
    {label: History} to compare runs (e.g. standard vs adversarial training)."""
    runs = history if isinstance(history, dict) and history and not isinstance(next(iter(history.values())), list) \
        else {"": history}
    fig = _figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, h in runs.items():
        cols = h.to_dict() if hasattr(h, "to_dict") else dict(h)
        epochs = cols.get("epoch") or list(range(1, len(cols.get("loss", [])) + 1))
        prefix = f"{label} " if label else ""
        ax_loss.plot(epochs, cols["loss"], marker="o", ms=3, label=f"{prefix}loss")
        for key, style in (("train_acc", "-"), ("test_acc", "--"), ("test_robust", ":")):
            if key in cols and any(v is not None for v in cols[key]):
                ax_acc.plot(epochs, [np.nan if v is None else v for v in cols[key]], style, marker="o", ms=3,
                            label=f"{prefix}{key.replace('_', ' ')}")
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# -- decision boundary --------------------------------------------------------------------------
def plot_decision_boundary(model, X: np.ndarray, y: np.ndarray, path=None, title: Optional[str] = None,
                           resolution: int = 200, padding: float = 0.5, ax: Any = None,
                           backend: Optional[str] = None) -> Any:
    """Predicted class regions of a model on 2-D inputs, with the data on top.

    Binary models are shaded by p(y=1|x) with the 0.5 contour drawn; a LogisticRegression also gets
    its boundary line wᵀx + b = 0 (dashed), as in the course figures."""
    from ..learn.train import predict_logits
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision boundaries are drawn for 2-D inputs, got X of shape {X.shape}")
    fig = None
    if ax is None:
        fig = _figure(5.5, 4.8)
        ax = fig.subplots()
    (x0, y0), (x1, y1) = X.min(0) - padding, X.max(0) + padding
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    z = predict_logits(model, grid, backend=backend).astype(np.float64)
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    classes = p.shape[1]
    if classes == 2:
        cs = ax.contourf(gx, gy, p[:, 1].reshape(gx.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(gx, gy, p[:, 1].reshape(gx.shape), levels=[0.5], colors="k", linewidths=1.2)
        if fig is not None:
            fig.colorbar(cs, ax=ax, label="p(y = 1 | x)")
    else:
        ax.contourf(gx, gy, p.argmax(1).reshape(gx.shape), levels=np.arange(classes + 1) - 0.5, cmap="tab10",
                    alpha=0.35)
    if hasattr(model, "boundary"):
        w, b = model.boundary()
        xs = np.linspace(x0, x1, 2)
        if abs(w[1]) > 1e-12:
            ax.plot(xs, -(w[0] * xs + b) / w[1], "k--", lw=1.5, label="wᵀx + b = 0")
            ax.legend(loc="lower right", fontsize=8)
    if classes == 2:
        ax.scatter(X[:, 0], X[:, 1], c=np.where(y == 1, "#d62728", "#1f77b4"), edgecolors="w", s=20, linewidths=0.6)
    else:
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="tab10", vmin=0, vmax=9, edgecolors="k", s=20, linewidths=0.5)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x₁", ylabel="x₂",
           title=title or f"{type(model).__name__} decision boundary")
    if fig is None:
        return ax
    fig.tight_layout()
    return _save(fig, path)


# -- adversarial examples -----------------------------------------------------------------------
def plot_adversarial_examples(model, x_clean: np.ndarray, x_adv: np.ndarray, y: np.ndarray, path=None,
                              image_shape: Optional[Sequence[int]] = None, n: int = 8,
                              class_names: Optional[Sequence[str]] = None, title: str = "",
                              backend: Optional[str] = None) -> Any:
    """A grid: clean images (row 1), adversarial images (row 2), the perturbation δ (row 3), each
    titled with the model's prediction (green when correct, red when wrong)."""
    from ..learn.train import predict
    x_clean, x_adv, y = np.asarray(x_clean)[:n], np.asarray(x_adv)[:n], np.asarray(y)[:n]
    n = len(x_clean)
    if image_shape is None:
        side = int(round(np.sqrt(np.prod(x_clean.shape[1:]))))
        image_shape = (side, side)
    hw = tuple(image_shape)[-2:]
    p_clean, p_adv = predict(model, x_clean, backend=backend), predict(model, x_adv, backend=backend)
    names = list(class_names) if class_names is not None else None

    def label(k):
        return names[k] if names else str(k)

    fig = _figure(1.3 * n + 0.8, 4.4)
    axes = fig.subplots(3, n, squeeze=False)
    delta = (x_adv.astype(np.float64) - x_clean.astype(np.float64)).reshape((n,) + hw)
    dmax = max(float(np.abs(delta).max()), 1e-12)
    for j in range(n):
        for i, (img, pred) in enumerate(((x_clean[j], p_clean[j]), (x_adv[j], p_adv[j]))):
            ax = axes[i, j]
            ax.imshow(np.asarray(img).reshape(hw), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"pred {label(pred)}", fontsize=8, color="green" if pred == y[j] else "red")
        axes[2, j].imshow(delta[j], cmap="RdBu_r", vmin=-dmax, vmax=dmax)
        axes[2, j].set_title(f"|δ|∞={np.abs(delta[j]).max():.2f}", fontsize=7)
        for i in range(3):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    for i, name in enumerate(("clean", "adversarial", "δ")):
        axes[i, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# -- robustness curves --------------------------------------------------------------------------
def plot_robustness(reports: Any, path=None, title: str = "accuracy under attack") -> Any:
    """Accuracy vs ε, one line per RobustnessReport; `reports` is a report, a list of them, or a dict
    {label: report}. ε = 0 is the clean accuracy."""
    if hasattr(reports, "rows"):
        reports = {reports.attack: reports}
    elif not isinstance(reports, dict):
        reports = {r.attack: r for r in reports}
    fig = _figure(6, 4.2)
    ax = fig.subplots()
    for label, r in reports.items():
        eps = [0.0] + [row["eps"] for row in r.rows]
        acc = [r.clean_acc] + [row["robust_acc"] for row in r.rows]
        ax.plot(eps, acc, marker="o", label=label)
    ax.set(xlabel="ε", ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# -- the computation graph ----------------------------------------------------------------------
def classify_nodes(outputs: Union[Tensor, Sequence[Tensor]], gradients: Sequence[Tensor] = ()) -> dict:
    """{node id: kind} with kind input / parameter / constant / forward / gradient.

    Forward nodes are those the `outputs` depend on; gradient nodes are the rest of what the
    `gradients` depend on (the backward graph that gc.grad built)."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    grads = [gradients] if isinstance(gradients, Tensor) else list(gradients)
    forward = {n.id for n in reachable(outs)}
    kinds = {}
    for n in reachable(outs + grads):
        if n.op == "placeholder":
            kinds[n.id] = "input"
        elif n.op == "parameter":
            kinds[n.id] = "parameter"
        elif n.op == "constant":
            kinds[n.id] = "constant"
        else:
            kinds[n.id] = "forward" if n.id in forward else "gradient"
    return kinds


def _node_label(n: Tensor) -> str:
    shape = "(" + ",".join("?" if d is None else str(d) for d in n.shape) + ")"
    if n.op in ("placeholder", "parameter"):
        return f"{n.name or n.op}\n{shape}"
    if n.op == "constant":
        v = n.value
        return f"{v.item():.3g}" if v.size == 1 else f"const {shape}"
    return f"{n.op}\n{shape}"


def graph_to_dot(outputs: Union[Tensor, Sequence[Tensor]], gradients: Sequence[Tensor] = (),
                 title: str = "") -> str:
    """Graphviz DOT text of the graph (forward blue, gradient orange, inputs green, parameters gold)."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    grads = [gradients] if isinstance(gradients, Tensor) else list(gradients)
    kinds = classify_nodes(outs, grads)
    nodes = reachable(outs + grads)
    lines = ["digraph graphc {", "  rankdir=TB;", '  node [style=filled, fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f'  label="{title}"; labelloc=t;')
    shapes = {"input": "ellipse", "parameter": "box", "constant": "plaintext", "forward": "box",
              "gradient": "box"}
    results = {t.id for t in outs + grads}
    for n in nodes:
        k = kinds[n.id]
        label = _node_label(n).replace('"', "'").replace("\n", "\\n")
        extra = ", penwidth=2.5" if n.id in results else ""
        style = ', style="filled,rounded"' if k in ("forward", "gradient") else ""
        lines.append(f'  n{n.id} [label="{label}", shape={shapes[k]}, fillcolor="{COLORS[k]}"{style}{extra}];')
    for n in nodes:
        for i in n.inputs:
            color = "#DD8452" if kinds[n.id] == "gradient" else "#333333"
            lines.append(f'  n{i.id} -> n{n.id} [color="{color}"];')
    lines.append("}")
    return "\n".join(lines)


def draw_graph(outputs: Union[Tensor, Sequence[Tensor]], gradients: Sequence[Tensor] = (), path=None,
               engine: str = "auto", title: str = "") -> Any:
    """Draw the DAG of `outputs` (and of `gradients`, the backward graph) to `path` (PNG).

    engine: "dot" (Graphviz, must be on PATH), "networkx" (networkx + matplotlib, layered by
    topological generation) or "auto" (dot when installed). Returns the path written (dot) or the
    matplotlib Figure (networkx).

    >>> import numpy as np, graphc as gc
    >>> x = gc.placeholder("x", (None, 2)); w = gc.parameter(np.zeros(2), name="w")
    >>> loss = gc.mean((x @ w) ** 2)
    >>> fig = draw_graph(loss, gc.grad(loss, [w]), engine="networkx")
    """
    if engine not in ("auto", "dot", "networkx"):
        raise ValueError(f"engine must be 'auto', 'dot' or 'networkx', got {engine!r}")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise RuntimeError("Graphviz `dot` is not on PATH; use engine='networkx'")
    if dot is not None and engine in ("auto", "dot") and path is not None:
        text = graph_to_dot(outputs, gradients, title)
        with tempfile.NamedTemporaryFile("w", suffix=".dot", delete=False) as fh:
            fh.write(text)
            src = fh.name
        try:
            subprocess.run([dot, "-Tpng", "-Gdpi=110", src, "-o", os.fspath(path)], check=True,
                           capture_output=True, timeout=60)
        finally:
            os.unlink(src)
        return os.fspath(path)
    return _draw_networkx(outputs, gradients, path, title)


def _draw_networkx(outputs, gradients, path, title):
    import networkx as nx
    from matplotlib.patches import Patch
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    grads = [gradients] if isinstance(gradients, Tensor) else list(gradients)
    kinds = classify_nodes(outs, grads)
    nodes = reachable(outs + grads)
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.id)
        for i in n.inputs:
            g.add_edge(i.id, n.id)
    for layer, ids in enumerate(nx.topological_generations(g)):
        for k in ids:
            g.nodes[k]["layer"] = layer
    pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal")
    pos = {k: (float(p[0]), -float(p[1])) for k, p in pos.items()}  # first layer at the top
    layers = max(nx.get_node_attributes(g, "layer").values()) + 1
    width = max(len(ids) for ids in nx.topological_generations(g))
    fig = _figure(min(4 + 1.3 * width, 30), min(2 + 0.75 * layers, 40))
    ax = fig.subplots()
    by_id = {n.id: n for n in nodes}
    edge_colors = [COLORS["gradient"] if kinds[v] == "gradient" else "#555555" for _, v in g.edges]
    nx.draw_networkx_edges(g, pos, ax=ax, edge_color=edge_colors, arrows=True, arrowsize=8, width=0.8,
                           node_size=1500)
    for kind, color in COLORS.items():
        ids = [k for k in g.nodes if kinds[k] == kind]
        nx.draw_networkx_nodes(g, pos, nodelist=ids, ax=ax, node_color=color, node_size=1500,
                               node_shape="o" if kind == "input" else "s", edgecolors="k", linewidths=0.5)
    nx.draw_networkx_labels(g, pos, {k: _node_label(by_id[k]) for k in g.nodes}, ax=ax, font_size=6.5)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in COLORS.items()], loc="upper left", fontsize=7,
              bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "computation graph (forward and gradient nodes)")
    ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)
