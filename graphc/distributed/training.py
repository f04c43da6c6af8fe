"""Synchronous data-parallel training on a Dask cluster.

Every global mini-batch (the same batches, in the same order, as graphc.train with the same seed)
is split into one contiguous shard per worker. Each worker runs its compiled gradient step on its
shard: the gradient of (shard mean loss) × (shard size / batch size), so that the shards' gradients
add up to the gradient of the batch-mean loss. The client sums them in shard (worker-rank) order,
in float64, applies the optimiser's update once with a compiled update step (graphc.optim's SGD,
momentum or Adam, the same update graph as single-process training), and sends the new weights
with the next batch's tasks.

It computes what single-process training computes, up to the order of one sum: with one worker
the parameters are bitwise graphc.train's, with k workers they agree to rounding (measured: 2e-16
relative in float64, 2e-7 in float32 after two epochs; tested to 1e-10 and 1e-5). It is a
capability for data and models too large for one process, not a speed-up for small ones: every
step costs a scheduler round trip (milliseconds), far more than a digits-MLP step (well under a
millisecond); bench/scale_distributed.py measures samples/s. Dropout masks are drawn per shard (seed of
the step and the shard's rank), so models with dropout train correctly but do not match
single-process training draw for draw.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import numpy as np

from ..compiler.autodiff import grad
from ..compiler.runtime import compile as gc_compile
from ..ir.errors import GraphError
from ..ir.tensor import placeholder
from ..learn.data import batches
from ..learn.train import History, LossSpec, accuracy, format_header, format_row, loss_tensor, model_cache
from .cluster import ClientLike, located, n_workers, result_or_raise, ship, using_client

__all__ = ["train"]

_LOCK = threading.Lock()  # guards the creation of each model's own lock on a worker


def _shard_step(model, values: list, xs: np.ndarray, ys: np.ndarray, weight: float, loss: LossSpec,
                backend, dropout_seed: int, rank: int) -> tuple:
    """On a worker: (weighted shard loss, gradients) at the given parameter values."""
    with located(f"gradient step on shard {rank} ({len(xs)} rows)"):
        cache = model_cache(model)
        with _LOCK:
            lock = cache.setdefault("data-parallel-lock", threading.Lock())
        with lock:  # tasks of one worker share the shipped model: set its weights, then run
            key = ("data-parallel-grad", xs.shape[1:], str(model.dtype), loss if callable(loss) else str(loss),
                   backend)
            if key not in cache:
                dtype = model.dtype
                x = placeholder("x", (None,) + tuple(xs.shape[1:]), dtype)
                y = placeholder("y", (None,), "int64")
                w = placeholder("shard_weight", (), dtype)
                seed = placeholder("dropout_seed", (), "int64") if getattr(model, "uses_dropout", False) else None
                weighted = loss_tensor(loss, model(x, training=True, seed=seed), y) * w
                cache[key] = (gc_compile([weighted] + grad(weighted, model.parameters()), backend=backend),
                              seed is not None)
            step, uses_seed = cache[key]
            for p, v in zip(model.parameters(), values):
                p.value = v
            feeds = {"x": xs.astype(model.dtype, copy=False), "y": ys, "shard_weight": np.asarray(weight, model.dtype)}
            if uses_seed:
                feeds["dropout_seed"] = np.int64(dropout_seed)
            out = step(**feeds)
    return float(out[0]), out[1:]


def _update_step(model, optimizer, backend):
    """A compiled call that applies the optimiser's update for given gradient values."""
    params = model.parameters()
    grads = [placeholder(f"grad{i}", p.shape, p.dtype) for i, p in enumerate(params)]
    return gc_compile([], backend=backend, updates=optimizer.updates(params, grads))


def train(model, X: np.ndarray, y: np.ndarray, epochs: int = 10, optimizer: Any = None,
          batch_size: Optional[int] = 32, client: ClientLike = None, loss: LossSpec = "cross_entropy",
          seed: int = 0, backend: Optional[str] = None, X_test: Optional[np.ndarray] = None,
          y_test: Optional[np.ndarray] = None, shards: Optional[int] = None, verbose: bool = False) -> History:
    """Train `model` in place by synchronous data-parallel SGD/Adam on a Dask cluster; returns the History
    (loss, test accuracy when X_test is given, seconds and samples/s per epoch).

    The batches are those of graphc.train(model, X, y, epochs, optimizer, batch_size, seed=seed), so
    the result equals single-process training to rounding. optimizer: a graphc.optim optimiser or a
    name ('sgd', 'adam', ...; default Adam(1e-3)). shards: pieces per batch (default: the number of
    workers). The optimiser's state lives on the client, in a fresh update step per
    call.

    >>> hist = gd.train(model, X, y, epochs=3, optimizer="adam", batch_size=256, client=client)  # doctest: +SKIP
    """
    from ..learn import optim as _optim
    X = np.asarray(X)
    X = X.astype(model.dtype, copy=False)
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(X) != len(y):
        raise GraphError(f"train needs integer labels y, one per row of X: got X {X.shape}, y {y.shape} {y.dtype}")
    y = y.astype(np.int64)
    if optimizer is None:
        optimizer = _optim.Adam(1e-3)
    elif isinstance(optimizer, str):
        optimizer = _optim.get(optimizer)
    bs = len(X) if batch_size is None else int(batch_size)
    if bs < 1:
        raise GraphError(f"batch_size must be >= 1, got {batch_size}")
    update = _update_step(model, optimizer, backend)
    params = model.parameters()
    history = History()
    rng = np.random.default_rng(int(seed))  # the Trainer's shuffling: same seed, same batches
    steps = 0
    with using_client(client) as c:
        k = int(shards) if shards is not None else n_workers(c)
        if k < 1:
            raise GraphError(f"shards must be >= 1, got {shards}")
        model_f = ship(c, model)
        for epoch in range(1, int(epochs) + 1):
            start = time.perf_counter()
            total, count = 0.0, 0
            for xb, yb in batches(X, y, bs, shuffle=True, rng=rng):
                values = [p.value for p in params]
                parts = [s for s in np.array_split(np.arange(len(xb)), min(k, len(xb))) if len(s)]
                futures = [c.submit(_shard_step, model_f, values, xb[s], yb[s], len(s) / len(xb), loss, backend,
                                    seed * 1_000_003 + steps * 1009 + r, r, pure=False)
                           for r, s in enumerate(parts)]
                results = [result_or_raise(f) for f in futures]  # shard (rank) order: a deterministic sum
                grads = [np.zeros(p.shape, np.float64) for p in params]
                for _, g in results:
                    for acc, gi in zip(grads, g):
                        acc += gi
                update(**{f"grad{i}": g.astype(p.dtype) for i, (g, p) in enumerate(zip(grads, params))})
                batch_loss = sum(l for l, _ in results)
                total += batch_loss * len(xb)
                count += len(xb)
                steps += 1
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "loss": total / max(count, 1)}
            if X_test is not None:
                row["test_acc"] = accuracy(model, X_test, y_test, backend=backend)
            row.update(seconds=seconds, samples_per_s=count / seconds if seconds > 0 else float("nan"))
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch}: loss {row['loss']}")
            history.append(row)
            if verbose:
                if epoch == 1:
                    print(format_header(list(row)))
                print(format_row(row, list(row)))
    return history
