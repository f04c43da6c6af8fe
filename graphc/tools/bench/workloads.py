"""Benchmark workloads: whole training steps and per-call overhead, graphc against baselines.

W-mlp     one SGD step (forward, backward, update) of an MLP 784-512-256-10, ReLU, softmax
          cross-entropy (mean), batch 256, float32: graphc C, graphc NumPy backend, a
          hand-written NumPy backprop of the same step, and PyTorch CPU eager when installed.
W-lr      one full-batch gradient-descent step of logistic regression 30 -> 1 on 569 samples,
          float64 (sklearn's breast-cancer data when installed, else random): graphc vs NumPy.
          The step functions here (numpy_/torch_/graphc_ mlp and lr) are also the peers suite's
          (graphc.tools.bench.peers, which adds JAX and PyTensor and runs each in its own process).
dispatch  a compiled chain of 50 elementwise ops on 16-element arrays: microseconds per call,
          i.e. what graphc costs around the arithmetic (default passes: fused into one kernel;
          and with optimize=False: 50 separate steps).

Every step computes the loss as well as the update, in every implementation. Times are medians
over `repeats` measurements after warm-up; a measurement of a microsecond-scale call averages a
batch of calls.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

import graphc as gc

MLP_SIZES = (784, 512, 256, 10)
PAUSE_S = 0.2  # longer than the spin-wait of idle graphc / OpenBLAS worker threads


# -- timing ---------------------------------------------------------------------------------------
def median_seconds(fn, repeats: int, warmup: int = 2, min_batch_s: float = 0.0) -> float:
    """Median seconds per call of fn(); calls are batched so one measurement lasts >= min_batch_s."""
    for _ in range(warmup):
        fn()
    batch = 1
    if min_batch_s > 0:
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        batch = max(1, int(min_batch_s / one))
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return float(np.median(times))


@contextlib.contextmanager
def thread_limits(n):
    """Run graphc's kernels, NumPy's BLAS and PyTorch with n threads (None: leave defaults)."""
    if not n:
        yield
        return
    info = gc.backend_info()
    old_gc = info["threads"]
    gc.set_num_threads(n)
    torch_old = None
    torch = _torch()
    if torch is not None:
        torch_old = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
            ctx = threadpool_limits(limits=n, user_api="blas")
        except ImportError:
            ctx = contextlib.nullcontext()
        with ctx:
            yield
    finally:
        gc.set_num_threads(old_gc)
        if torch_old is not None:
            torch.set_num_threads(torch_old)


def _torch():
    try:
        import torch
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return torch


def _rel_diff(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if a.size else 0.0


# -- W-mlp ---------------------------------------------------------------------------------------
def _mlp_data(batch, sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype)
        weights += [w, np.zeros(fan_out, dtype)]
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return weights, x, y


def graphc_mlp_step(weights, sizes, dtype, lr, backend):
    """compile(updates=...) of one SGD step; returns (step(x, y) -> loss, parameter Tensors)."""
    params = [gc.parameter(w, name=f"p{i}") for i, w in enumerate(weights)]
    x = gc.placeholder("x", (None, sizes[0]), dtype)
    y = gc.placeholder("y", (None,), "int64")
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = gc.relu(h)
    loss = gc.softmax_cross_entropy(h, y)
    grads = gc.grad(loss, params)
    f = gc.compile(loss, backend=backend, updates={p: p - lr * g for p, g in zip(params, grads)})
    return (lambda xv, yv: f(x=xv, y=yv)), params, f


def numpy_mlp_step(weights, lr):
    """The same step written by hand in NumPy (in-place updates of `weights`)."""
    ws = weights

    def step(x, y):
        n = x.shape[0]
        acts = [x]
        h = x
        for i in range(0, len(ws), 2):
            h = h @ ws[i]
            h += ws[i + 1]
            if i + 2 < len(ws):
                np.maximum(h, 0, out=h)
                acts.append(h)
        z = h
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y]))
        g = e / s
        g[rows, y] -= 1
        g *= z.dtype.type(1.0 / n)
        for i in range(len(ws) - 2, -1, -2):
            a = acts[i // 2]
            dw = a.T @ g
            db = g.sum(axis=0)
            if i > 0:
                g = g @ ws[i].T
                g *= a > 0
            ws[i] -= z.dtype.type(lr) * dw
            ws[i + 1] -= z.dtype.type(lr) * db
        return loss

    return step


def torch_mlp_step(weights, lr):
    torch = _torch()
    ps = [torch.tensor(w, requires_grad=True) for w in weights]
    cross_entropy = torch.nn.functional.cross_entropy

    def step(x, y):
        h = x
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            if i + 2 < len(ps):
                h = torch.relu(h)
        loss = cross_entropy(h, y)
        grads = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for p, g in zip(ps, grads):
                p.sub_(lr * g)
        return loss.item()

    return step, ps


def mlp_table(batch=256, sizes=MLP_SIZES, dtype="float32", repeats=20, lr=0.01, torch=True, rounds=3) -> list:
    """One row per implementation: impl, median_ms, vs_numpy (time / hand-written NumPy time),
    max_rel_diff of the parameters after one step against the hand-written step.

    The implementations take turns (`rounds` times, each keeping its best median), with a pause
    before each turn: idle BLAS / graphc workers spin for a while after a call and would steal
    the next library's cores on a small machine."""
    weights, x, y = _mlp_data(batch, sizes, dtype)
    # correctness: one step from the same weights, parameters compared with the NumPy step
    ref = [w.copy() for w in weights]
    numpy_mlp_step(ref, lr)(x, y)
    impls = []
    for backend in ("c", "numpy"):
        if backend == "c" and not gc.backend_info()["c_available"]:
            continue
        step, params, _ = graphc_mlp_step([w.copy() for w in weights], sizes, dtype, lr, backend)
        step(x, y)
        diff = max(_rel_diff(p.value, r) for p, r in zip(params, ref))
        impls.append((f"graphc {backend}", step, diff))
    hand = [w.copy() for w in weights]
    impls.append(("numpy hand-written", numpy_mlp_step(hand, lr), 0.0))
    if torch and _torch() is not None:
        tm = _torch()
        tstep, ps = torch_mlp_step([w.copy() for w in weights], lr)
        xt, yt = tm.from_numpy(x), tm.from_numpy(y)
        tstep(xt, yt)
        diff = max(_rel_diff(p.detach().numpy(), r) for p, r in zip(ps, ref))
        impls.append((f"pytorch {tm.__version__} eager", lambda *_: tstep(xt, yt), diff))
    best = {name: float("inf") for name, _, _ in impls}
    for _ in range(rounds):  # alternate the implementations; keep each one's best median
        for name, step, _ in impls:
            time.sleep(PAUSE_S)
            best[name] = min(best[name], median_seconds(lambda step=step: step(x, y), repeats))
    rows = [dict(impl=name, median_ms=best[name] * 1e3, max_rel_diff=diff) for name, _, diff in impls]
    base = next(r["median_ms"] for r in rows if r["impl"] == "numpy hand-written")
    for r in rows:
        r["vs_numpy"] = r["median_ms"] / base
    return rows


# -- W-lr ----------------------------------------------------------------------------------------
def lr_data():
    try:
        from sklearn.datasets import load_breast_cancer
        X, y = load_breast_cancer(return_X_y=True)
        X = (X - X.mean(0)) / X.std(0)
        source = "sklearn breast cancer"
    except ImportError:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((569, 30))
        y = (X @ rng.standard_normal(30) > 0).astype(np.float64)
        source = "random"
    return np.ascontiguousarray(X, np.float64), y.astype(np.float64), source


def graphc_lr_step(d: int, lr: float, backend: str, w0=None, b0=None):
    """compile(updates=...) of one full-batch GD step of logistic regression d -> 1 (float64, loss
    = mean binary cross-entropy on logits); returns (step(X, Y) -> loss, [w, b] Tensors)."""
    w = gc.parameter(np.zeros(d) if w0 is None else np.array(w0, np.float64), name="w")
    b = gc.parameter(np.zeros(()) if b0 is None else np.array(b0, np.float64), name="b")
    x = gc.placeholder("x", (None, d), "float64")
    t = gc.placeholder("t", (None,), "float64")
    loss = gc.binary_cross_entropy(x @ w + b, t)
    gw, gb = gc.grad(loss, [w, b])
    f = gc.compile(loss, backend=backend, updates={w: w - lr * gw, b: b - lr * gb})
    return (lambda xv, yv: f(x=xv, t=yv)), [w, b]


def numpy_lr_step(params: list, lr: float):
    """The same step by hand in NumPy; params = [w (d,), b ()] are updated in place."""
    w, b = params

    def step(X, Y):
        z = X @ w + b
        loss = np.mean(np.maximum(z, 0) - z * Y + np.log1p(np.exp(-np.abs(z))))
        g = (1.0 / (1.0 + np.exp(-z)) - Y) / X.shape[0]
        w[...] -= lr * (X.T @ g)
        b[...] -= lr * g.sum()
        return float(loss)

    return step


def torch_lr_step(params: list, lr: float):
    """PyTorch eager (autograd) of the same step; returns (step(X, Y) -> loss, [w, b] tensors)."""
    torch = _torch()
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step(X, Y):
        w, b = ps
        loss = bce(X @ w + b, Y)
        grads = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for p, g in zip(ps, grads):
                p.sub_(lr * g)
        return loss.item()

    return step, ps


def lr_table(repeats=20, lr=0.1) -> list:
    """graphc vs hand-written NumPy for one full-batch GD step (loss + update) of logistic regression."""
    X, Y, source = lr_data()
    n, d = X.shape
    rows = []
    for backend in ("c", "numpy"):
        if backend == "c" and not gc.backend_info()["c_available"]:
            continue
        step, _ = graphc_lr_step(d, lr, backend)
        sec = median_seconds(lambda step=step: step(X, Y), repeats, min_batch_s=0.02)
        rows.append(dict(impl=f"graphc {backend}", median_us=sec * 1e6))
    step = numpy_lr_step([np.zeros(d), np.zeros(())], lr)
    sec = median_seconds(lambda: step(X, Y), repeats, min_batch_s=0.02)
    rows.append(dict(impl="numpy hand-written", median_us=sec * 1e6))
    for r in rows:
        r["vs_numpy"] = r["median_us"] / rows[-1]["median_us"]
        r["data"] = source
    return rows


# -- dispatch ------------------------------------------------------------------------------------
def dispatch_table(n_ops=50, size=16, repeats=20) -> list:
    """Microseconds per call of a compiled chain of n_ops elementwise ops on `size` elements."""
    x = gc.placeholder("x", (size,), "float64")
    y = x
    for i in range(n_ops):
        y = y * 1.0001 if i % 2 else y + 0.5
    X = np.linspace(-1, 1, size)
    rows = []
    for backend in ("c", "numpy"):
        if backend == "c" and not gc.backend_info()["c_available"]:
            continue
        for optimize in (True, False):
            f = gc.compile(y, backend=backend, optimize=optimize)
            f(x=X)
            sec = median_seconds(lambda f=f: f(x=X), repeats, min_batch_s=0.02)
            rows.append(dict(impl=f"graphc {backend}", optimize=optimize, steps=len(f._last_plan.steps),
                             us_per_call=sec * 1e6))

    def numpy_chain():
        v = X
        for i in range(n_ops):
            v = v * 1.0001 if i % 2 else v + 0.5
        return v

    rows.append(dict(impl="numpy hand-written", optimize=None, steps=n_ops,
                     us_per_call=median_seconds(numpy_chain, repeats, min_batch_s=0.02) * 1e6))
    return rows
