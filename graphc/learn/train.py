"""Training loops: a Trainer that compiles one step (forward + backward + optimiser update) and
runs it over mini-batches, with per-epoch metrics and an optional tqdm progress bar.

    >>> import graphc as gc
    >>> from graphc import nn, optim, data
    >>> s = data.load("digits", seed=0)
    >>> model = nn.MLP([64, 128, 10], seed=0)
    >>> hist = gc.train(model, s.X_train, s.y_train, epochs=2, optimizer=optim.Adam(0.01),
    ...                 X_test=s.X_test, y_test=s.y_test)
    >>> sorted(hist.rows[-1])
    ['epoch', 'loss', 'seconds', 'test_acc', 'train_acc']
    >>> from graphc.train import accuracy
    >>> accuracy(model, s.X_test, s.y_test) > 0.9
    True

The step is compiled once per (model, optimiser, loss) and reused; the compiled Function makes
one plan per batch shape (two when the last batch of an epoch is smaller).

`predict_logits`, `predict` and `accuracy` evaluate a model on arrays with a cached evaluation
graph (dropout off); attacks and plots use them too.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .. import ops as F
from ..compiler.autodiff import grad
from ..compiler.runtime import compile as gc_compile
from ..compiler.runtime import convert_array
from ..ir.errors import GraphError, user_source
from ..ir.tensor import Tensor, placeholder

__all__ = ["Trainer", "History", "train", "predict_logits", "predict", "accuracy", "loss_tensor", "model_cache",
           "limit_threads"]

LossSpec = Union[str, Callable[[Tensor, Tensor], Tensor]]


def model_cache(model) -> dict:
    """The dict where compiled Functions built on `model` are cached (one per purpose and shape)."""
    cache = getattr(model, "_cache", None)
    if cache is None:
        cache = {}
        model._cache = cache
    return cache


def loss_tensor(loss: LossSpec, logits: Tensor, labels: Tensor) -> Tensor:
    """Scalar loss Tensor: 'cross_entropy' (softmax cross-entropy, the default), 'mse' (on one-hot
    targets, 1/(2N) Σ‖y − f‖²), 'cw' (Carlini–Wagner margin max_{j≠y} z_j − z_y, mean; for attacks),
    or a callable(logits, labels) -> scalar Tensor."""
    if callable(loss):
        return loss(logits, labels)
    name = str(loss).lower()
    if name in ("cross_entropy", "ce", "softmax_cross_entropy", "xent"):
        return F.softmax_cross_entropy(logits, labels)
    classes = logits.shape[1]
    if classes is None:
        raise ValueError(f"loss {loss!r} needs a known number of classes")
    onehot = F.one_hot(labels, classes, logits.dtype)
    if name == "mse":
        return F.mse(logits, onehot)
    if name in ("cw", "margin"):
        z_true = F.sum(logits * onehot, axis=1)
        z_other = F.max(logits - 1e4 * onehot, axis=1)
        return F.mean(z_other - z_true)
    raise ValueError(f"unknown loss {loss!r}; choose cross_entropy, mse, cw or pass a callable")


def training_data(X, y, dtype, x_name: str = "X", y_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """(X as `dtype`, y as int64 class labels) by graphc's one conversion rule (NumPy's same_kind:
    float64 data trains a float32 model; float or string labels are refused), or a GraphError that
    names the argument and the user's line."""
    where = f" (at {user_source()})"
    try:
        X = convert_array(X, np.dtype(dtype), x_name)
        y = convert_array(y, np.dtype(np.int64), f"{y_name} (class labels)")
    except GraphError as exc:
        raise GraphError(f"{exc}{where}") from None
    if X.ndim == 0 or y.ndim != 1:
        raise GraphError(f"{x_name} needs one row per example and {y_name} one label per row; got shapes "
                         f"{X.shape} and {y.shape}{where}")
    if len(X) != len(y):
        raise GraphError(f"{x_name} has {len(X)} rows but {y_name} has {len(y)}{where}")
    return X.astype(dtype, copy=False), y.astype(np.int64, copy=False)


def _feature_shape(X: np.ndarray) -> tuple:
    return tuple(int(d) for d in np.shape(X)[1:])


def _eval_fn(model, feature_shape: tuple, dtype, backend: Optional[str]):
    key = ("eval", feature_shape, np.dtype(dtype).str, backend)
    cache = model_cache(model)
    if key not in cache:
        x = placeholder("x", (None,) + feature_shape, dtype)
        cache[key] = gc_compile(model(x, training=False), backend=backend)
    return cache[key]


def predict_logits(model, X: np.ndarray, batch_size: int = 1024, backend: Optional[str] = None) -> np.ndarray:
    """Logits of `model` on the rows of X (evaluation graph: dropout off), in chunks of batch_size."""
    X = np.asarray(X)
    dtype = model.dtype if hasattr(model, "dtype") else np.dtype("float32")
    X = X.astype(dtype, copy=False)
    f = _eval_fn(model, _feature_shape(X), dtype, backend)
    if len(X) == 0:  # the graph runs on an empty batch too, and knows the number of classes
        return f(x=X)
    return np.concatenate([f(x=X[i:i + batch_size]) for i in range(0, len(X), batch_size)])


def predict(model, X: np.ndarray, batch_size: int = 1024, backend: Optional[str] = None) -> np.ndarray:
    """Predicted class indices (argmax of the logits)."""
    return np.argmax(predict_logits(model, X, batch_size, backend), axis=1)


def accuracy(model, X: np.ndarray, y: np.ndarray, batch_size: int = 1024, backend: Optional[str] = None) -> float:
    """Share of rows of X whose predicted class equals y."""
    if len(X) == 0:
        return float("nan")
    return float(np.mean(predict(model, X, batch_size, backend) == np.asarray(y)))


class History:
    """Per-epoch metrics: `rows` (list of dicts), `history["test_acc"]` gives one column."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.trainer: Optional[Trainer] = None

    def append(self, row: dict) -> None:
        self.rows.append(dict(row))

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def keys(self) -> list:
        keys: list = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        return keys

    def to_dict(self) -> dict:
        return {k: self[k] for k in self.keys()}

    def table(self) -> str:
        """The metrics as a fixed-width text table (what verbose training prints)."""
        lines = [format_header(self.keys())]
        lines += [format_row(r, self.keys()) for r in self.rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"History({len(self.rows)} epochs, last={self.last})"


_COLUMNS = {"epoch": ("epoch", "{:>5d}"), "loss": ("loss", "{:>8.4f}"), "train_acc": ("train acc", "{:>9.2%}"),
            "test_acc": ("test acc", "{:>8.2%}"), "test_robust": ("test robust", "{:>11.2%}"),
            "seconds": ("time", "{:>6.2f}s")}


def format_header(keys: Sequence[str]) -> str:
    cells = []
    for k in keys:
        title, fmt = _COLUMNS.get(k, (k, "{:>10.4g}"))
        width = len(fmt.format(1 if "d}" in fmt else 0.5))
        cells.append(f"{title:>{max(width, len(title))}}")
    return "  ".join(cells)


def format_row(row: dict, keys: Sequence[str]) -> str:
    cells = []
    for k in keys:
        title, fmt = _COLUMNS.get(k, (k, "{:>10.4g}"))
        width = max(len(fmt.format(1 if "d}" in fmt else 0.5)), len(title))
        v = row.get(k)
        text = "-" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)
        cells.append(f"{text:>{width}}")
    return "  ".join(cells)


class Trainer:
    """Compiles one training step for `model` and runs it over mini-batches.

    The step is a single gc.compile'd Function: loss, gradients (gc.grad w.r.t. model.parameters())
    and the optimiser's update tensors (`updates=`), so one call does forward, backward and update.
    Dropout layers get a fresh integer seed per step through an int64 placeholder.

    Args:
        model: a graphc.nn model (callable on a Tensor, with .parameters()).
        optimizer: a graphc.optim optimiser (default Adam(1e-3)) or a name ('sgd', 'adam', ...).
        loss: 'cross_entropy' (default), 'mse', 'cw' or a callable(logits, labels) -> scalar Tensor.
        batch_size: mini-batch size; None means full-batch gradient descent.
        backend: graphc backend name (None: GRAPHC_BACKEND / auto).
        seed: shuffling and dropout seed (training is deterministic given it).
        progress: show a tqdm bar per epoch (None: only when stderr is a terminal; needs tqdm).
        verbose: print one table row per epoch.

    >>> from graphc import nn, optim, data
    >>> s = data.load("breast_cancer", seed=0)
    >>> t = Trainer(nn.LogisticRegression(30), optim.SGD(0.1), batch_size=32)
    >>> h = t.fit(s.X_train, s.y_train, epochs=5, X_test=s.X_test, y_test=s.y_test)
    >>> h.last["test_acc"] > 0.9
    True
    """

    def __init__(self, model, optimizer: Any = None, loss: LossSpec = "cross_entropy",
                 batch_size: Optional[int] = 32, backend: Optional[str] = None, seed: int = 0,
                 progress: Optional[bool] = None, verbose: bool = False):
        from . import optim as _optim
        if not hasattr(model, "parameters") or not callable(model):
            raise GraphError(f"model must be a graphc.nn model (called on a Tensor, with .parameters()), got "
                             f"{type(model).__name__} (at {user_source()})")
        self.model = model
        if optimizer is None:
            optimizer = _optim.Adam(1e-3)
        elif isinstance(optimizer, str):
            try:
                optimizer = _optim.get(optimizer)
            except ValueError as exc:
                raise GraphError(f"optimizer={optimizer!r}: {exc} (at {user_source()})") from None
        if not isinstance(optimizer, _optim.Optimizer):
            hint = f" (a learning rate? use optimizer=graphc.optim.SGD({optimizer!r}))" \
                if isinstance(optimizer, (int, float)) else ""
            raise GraphError(f"optimizer must be a graphc.optim optimiser or one of 'gd', 'sgd', 'momentum', "
                             f"'adam'; got {type(optimizer).__name__} {optimizer!r}{hint} (at {user_source()})")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise GraphError(f"batch_size must be a positive integer or None (whole batch), got {batch_size!r} "
                             f"(at {user_source()})")
        self.optimizer = optimizer
        self.loss = loss
        self.batch_size = batch_size
        self.backend = backend
        self.seed = int(seed)
        self.progress = progress
        self.verbose = verbose
        self.steps = 0
        self.epochs_done = 0
        self._step_fn = None
        self._feature_shape: Optional[tuple] = None
        self._rng = np.random.default_rng(self.seed)

    # -- compilation -------------------------------------------------------------------------------
    def _compile(self, feature_shape: tuple) -> None:
        if self._step_fn is not None:
            if feature_shape != self._feature_shape:
                raise ValueError(f"this Trainer was compiled for inputs of shape {self._feature_shape}, "
                                 f"got {feature_shape}")
            return
        dtype = self.model.dtype
        x = placeholder("x", (None,) + feature_shape, dtype)
        y = placeholder("y", (None,), "int64")
        seed = placeholder("dropout_seed", (), "int64") if getattr(self.model, "uses_dropout", False) else None
        logits = self.model(x, training=True, seed=seed)
        loss = loss_tensor(self.loss, logits, y)
        params = self.model.parameters()
        grads = grad(loss, params)
        updates = self.optimizer.updates(params, grads)
        self._step_fn = gc_compile([loss], backend=self.backend, updates=updates)
        self._uses_seed = seed is not None
        self._feature_shape = feature_shape

    def step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One optimiser step on a batch; returns the batch loss (before the update)."""
        xb = np.asarray(xb, dtype=self.model.dtype)
        self._compile(_feature_shape(xb))
        feeds = {"x": xb, "y": np.asarray(yb, dtype=np.int64)}
        if self._uses_seed:
            feeds["dropout_seed"] = np.int64(self.seed * 1_000_003 + self.steps)
        (loss,) = self._step_fn(**feeds)
        self.steps += 1
        return float(loss)

    # -- loop ----------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int = 10, X_test: Optional[np.ndarray] = None,
            y_test: Optional[np.ndarray] = None, adversary: Optional[Callable] = None,
            callback: Optional[Callable[[dict], Any]] = None, history: Optional[History] = None,
            metrics: Optional[dict] = None) -> History:
        """Train for `epochs` passes over (X, y); returns the History (one row per epoch).

        adversary(x_batch, y_batch) -> x_batch', if given, replaces each batch before the step
        (adversarial training). metrics {column: fn() -> float} adds columns computed after each
        epoch. callback(row) runs after each epoch; returning True stops training."""
        X, y = training_data(X, y, self.model.dtype, "X", "y")
        self._compile(_feature_shape(X))
        history = history if history is not None else History()
        history.trainer = self
        bs = len(X) if self.batch_size is None else int(self.batch_size)
        show = self.progress if self.progress is not None else (sys.stderr.isatty() and not os.environ.get("CI"))
        tqdm = _tqdm() if show else None
        write = tqdm.write if tqdm is not None else print
        metrics = dict(metrics or {})
        keys = (["epoch", "loss", "train_acc"] + (["test_acc"] if X_test is not None else []) + list(metrics)
                + ["seconds"])
        if self.verbose:
            write(format_header(keys))
        from .data import batches
        for _ in range(int(epochs)):
            start = time.perf_counter()
            total, count = 0.0, 0
            it = batches(X, y, bs, shuffle=True, rng=self._rng)
            nb = -(-len(X) // bs)
            if tqdm is not None:
                it = tqdm(it, total=nb, desc=f"epoch {self.epochs_done + 1}", leave=False, unit="batch")
            for xb, yb in it:
                if adversary is not None:
                    xb = np.asarray(adversary(xb, yb), dtype=self.model.dtype)
                loss = self.step(xb, yb)
                total += loss * len(xb)
                count += len(xb)
                if tqdm is not None:
                    it.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.epochs_done += 1
            row = {"epoch": self.epochs_done, "loss": total / max(count, 1),
                   "train_acc": accuracy(self.model, X, y, backend=self.backend)}
            if X_test is not None:
                row["test_acc"] = accuracy(self.model, X_test, y_test, backend=self.backend)
            for name, fn in metrics.items():
                row[name] = float(fn())
            row["seconds"] = time.perf_counter() - start
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"training diverged at epoch {self.epochs_done}: loss {row['loss']} "
                                         f"(try a smaller learning rate than {self.optimizer.lr})")
            history.append(row)
            if self.verbose:
                write(format_row(row, keys))
            if callback is not None and callback(row):
                break
        return history

    def predict(self, X: np.ndarray) -> np.ndarray:
        return predict(self.model, X, backend=self.backend)

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return accuracy(self.model, X, y, backend=self.backend)


@contextlib.contextmanager
def limit_threads(n: int = 1):
    """Run the block with n BLAS threads (via threadpoolctl, when installed) and n graphc C-kernel
    threads, restoring both afterwards.

    Small models run thousands of tiny kernels; multi-threaded OpenBLAS and graphc's pool spin-wait for
    each other and can be 10-50x slower on them when the cores are shared with other work."""
    from ..backends import backend_info, set_num_threads
    before = backend_info().get("threads", 0) if backend_info().get("c_available") else None
    if before is not None:
        set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
    finally:
        if before is not None:
            set_num_threads(before)


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are an optional extra
        return None
    return tqdm


def train(model, X: np.ndarray, y: np.ndarray, epochs: int = 10, optimizer: Any = None, batch_size: Optional[int] = 32,
          X_test: Optional[np.ndarray] = None, y_test: Optional[np.ndarray] = None, loss: LossSpec = "cross_entropy",
          seed: int = 0, backend: Optional[str] = None, progress: Optional[bool] = None, verbose: bool = False,
          adversary: Optional[Callable] = None) -> History:
    """Train `model` on (X, y) and return its History (loss, train/test accuracy, seconds per epoch).

    A shortcut for `Trainer(model, optimizer, loss, batch_size, ...).fit(X, y, epochs, X_test, y_test)`;
    the Trainer is `history.trainer` (call .fit again to continue training).

    >>> import graphc as gc
    >>> from graphc import nn, data
    >>> s = data.load("iris", seed=0)
    >>> h = gc.train(nn.SoftmaxRegression(4, 3), s.X_train, s.y_train, epochs=30, optimizer="sgd")
    >>> h.last["train_acc"] > 0.85
    True
    """
    trainer = Trainer(model, optimizer, loss=loss, batch_size=batch_size, backend=backend, seed=seed,
                      progress=progress, verbose=verbose)
    return trainer.fit(X, y, epochs, X_test=X_test, y_test=y_test, adversary=adversary)
