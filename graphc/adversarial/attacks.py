"""Adversarial examples from input gradients: FGSM, BIM, PGD (L∞ and L2), robustness evaluation
and Madry-style adversarial training.

The attacker's problem is max_{‖δ‖ ≤ ε} ℓ(f_θ(x + δ), y). graphc differentiates the model's loss
with respect to its *input* placeholder (gc.grad(loss, x)), compiles that once per model (cached on
the model) and the attacks iterate in NumPy:

    >>> from graphc import nn, data, attacks
    >>> import graphc as gc
    >>> s = data.load("digits", seed=0)
    >>> model = nn.MLP([64, 64, 10], seed=0)
    >>> _ = gc.train(model, s.X_train, s.y_train, epochs=5, optimizer="adam")
    >>> x_adv = attacks.fgsm(model, s.X_test, s.y_test, eps=0.1)
    >>> bool(abs(x_adv - s.X_test).max() <= 0.1 + 1e-7) and bool(x_adv.min() >= 0)
    True
    >>> report = attacks.evaluate(model, s.X_test, s.y_test, "pgd", eps=[0.05, 0.1])
    >>> print(report.table())                                  # doctest: +SKIP

Conventions: x and y are NumPy arrays (x rows in the model's input layout, y integer labels); each
attack returns a NumPy array of adversarial inputs with x's shape and dtype. Inputs are clipped to
`clip` (default (0, 1), pixel data; None for no clipping). The loss is softmax cross-entropy by
default; `loss="cw"` uses the Carlini–Wagner margin, or pass a callable(logits, labels) -> scalar
Tensor. Untargeted attacks ascend the loss of the true label; targeted ones descend the loss of
the target label.

Determinism, per sample: an example's adversarial input depends only on the example, the model,
the attack's arguments, `seed` and the example's global index, never on which other examples share
its batch (or its chunk and worker in graphc.distributed). Random starts are drawn from the
example's own generator np.random.default_rng([seed, index[i]]), where `index` holds the examples'
global indices (default np.arange(len(x)): pass the indices of a slice of a larger set to get the
same starts as on the whole set), and the input gradient is that of the example's own loss (the
summed, not the batch-mean, loss).

Gradient masking: an all-zero or non-finite input gradient means the attack cannot make progress
(saturated softmax, dead ReLUs, shattered gradients, NaNs). The attacks never hide this: they warn
with a GradientMaskingWarning naming how many examples were affected (on_masking="raise" raises
GradientMaskingError instead), and `return_report=True` returns an AttackReport with the indices.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..compiler.autodiff import grad as gc_grad
from ..compiler.runtime import compile as gc_compile
from ..ir.errors import GraphError
from ..ir.tensor import Tensor, placeholder
from ..learn.train import History, LossSpec, Trainer, accuracy, loss_tensor, model_cache, predict_logits
from ..ops import size_of

__all__ = ["fgsm", "bim", "pgd", "evaluate", "adversarial_training", "input_gradient", "AttackReport",
           "RobustnessReport", "GradientMaskingWarning", "GradientMaskingError", "ATTACKS"]

Clip = Optional[tuple]


class GradientMaskingWarning(UserWarning):
    """Input gradients were all zero or non-finite for some examples (the attack is unreliable there)."""


class GradientMaskingError(RuntimeError):
    """Raised instead of GradientMaskingWarning when on_masking="raise"."""


@dataclass
class AttackReport:
    """What happened during an attack: examples whose input gradient was all-zero (at some step) or
    non-finite (at some step), and how many steps ran. `masked` holds the union of both."""

    attack: str
    n: int
    steps: int
    zero_grad: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    nonfinite: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def masked(self) -> np.ndarray:
        return np.union1d(self.zero_grad, self.nonfinite)

    def summary(self) -> str:
        if not len(self.masked):
            return f"{self.attack}: input gradients finite and non-zero for all {self.n} examples"
        return (f"{self.attack}: gradient masking symptoms on {len(self.masked)} of {self.n} examples "
                f"({len(self.zero_grad)} with an all-zero input gradient, {len(self.nonfinite)} non-finite); "
                f"the attack could not move those along the gradient, so their robust accuracy is not "
                f"evidence of robustness")


# -- the input-gradient function ----------------------------------------------------------------
def _loss_key(loss):
    return loss if callable(loss) else str(loss).lower()


def _grad_fn(model, feature_shape: tuple, dtype, loss: LossSpec, backend: Optional[str]):
    """Compiled f(x, y) -> [∂ℓ/∂x of the summed loss (per-example gradients), logits, batch-mean loss],
    cached on the model."""
    key = ("input-grad-sum", feature_shape, np.dtype(dtype).str, _loss_key(loss), backend)
    cache = model_cache(model)
    if key not in cache:
        x = placeholder("x", (None,) + feature_shape, dtype)
        y = placeholder("y", (None,), "int64")
        logits = model(x, training=False)
        ell = loss_tensor(loss, logits, y)
        # The summed loss N·mean: its gradient reaches the loss's backward as exactly N, which the
        # mean divides by N again, so a row's gradient is bitwise the same in any batch (the mean's
        # gradient times N afterwards is not). The loss is an output too, so `y` stays a placeholder
        # even when no gradient reaches x.
        cache[key] = gc_compile([gc_grad(ell * size_of(x, 0, dtype), x), logits, ell], backend=backend)
    return cache[key]


def input_gradient(model, x: np.ndarray, y: np.ndarray, loss: LossSpec = "cross_entropy",
                   backend: Optional[str] = None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(∇ₓℓ per example, logits) for the rows of x, in x's shape, float64.

    ℓ is the per-example loss (the gradient of the summed loss), so a row's gradient does not depend
    on which other rows share its batch."""
    x, y = _check_data(model, x, y)
    dtype = model.dtype
    f = _grad_fn(model, tuple(x.shape[1:]), dtype, loss, backend)
    grads, logits = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].astype(dtype)
        g, z, _ = f(x=xb, y=y[i:i + batch_size])
        grads.append(g.astype(np.float64))
        logits.append(z)
    return np.concatenate(grads), np.concatenate(logits)


# -- helpers ------------------------------------------------------------------------------------
def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), math.prod(a.shape[1:]))  # not -1: an empty batch has no size to infer


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")  # the mean of no examples, without a warning


def _l2(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(_flat(a).astype(np.float64) ** 2, axis=1))


def _bshape(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _clip_range(x: np.ndarray, clip: Clip) -> np.ndarray:
    if clip is None:
        return x
    lo, hi = clip
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def _project(delta: np.ndarray, eps: float, norm: str) -> np.ndarray:
    if norm == "inf":
        return np.clip(delta, -eps, eps)
    n = _l2(delta)
    scale = np.where(n > eps, eps / np.maximum(n, 1e-300), 1.0)
    return delta * _bshape(scale, delta)


def _finalise(x: np.ndarray, x_adv64: np.ndarray, eps: float, norm: str, clip: Clip) -> np.ndarray:
    """Cast to x's dtype so that ‖x_adv − x‖ ≤ ε and the clip range hold exactly after rounding."""
    out = x_adv64.astype(x.dtype)
    x64 = x.astype(np.float64)
    for _ in range(8):
        d = out.astype(np.float64) - x64
        if norm == "inf":
            bad = np.abs(d) > eps
            if not bad.any():
                break
            out[bad] = np.nextafter(out[bad], x[bad])  # one ulp back towards x
        else:
            n = _l2(d)
            bad = n > eps
            if not bad.any():
                break
            shrink = eps / n[bad] * (1 - 1e-6)
            out[bad] = (x64[bad] + d[bad] * _bshape(shrink, d[bad])).astype(x.dtype)
    if clip is not None:
        out = _clip_range(out, clip).astype(x.dtype)
    return out


def _targets(targeted: bool, target, y: np.ndarray, classes: int) -> np.ndarray:
    if not targeted:
        return y
    if target is None:  # the next class: deterministic and never the true label
        return (y + 1) % classes
    t = np.broadcast_to(np.asarray(target, np.int64), y.shape).copy()
    if t.size and (t.min() < 0 or t.max() >= classes):
        raise GraphError(f"target classes must lie in [0, {classes}), got {t.min()}..{t.max()}")
    return t


def _masking(report: AttackReport, on_masking: str) -> None:
    if not len(report.masked) or on_masking == "ignore":
        return
    if on_masking == "raise":
        raise GradientMaskingError(report.summary())
    warnings.warn(report.summary(), GradientMaskingWarning, stacklevel=3)


def _check_data(model, x, y):
    """x as a numeric array with a batch axis and y as int64 class labels, one per row, or a
    GraphError naming the problem (never a silent truncation of float labels)."""
    if not hasattr(model, "parameters"):
        raise GraphError(f"model must be a graphc.nn model, got {type(model).__name__}")
    arrays = []
    for name, v in (("x", x), ("y", y)):
        if isinstance(v, Tensor):
            raise GraphError(f"{name} must be a NumPy array, not a symbolic {v!r}")
        try:
            v = np.asarray(v)
        except (TypeError, ValueError) as exc:
            raise GraphError(f"{name} cannot be converted to an array: {exc}") from None
        if v.dtype.kind not in "fiub":
            raise GraphError(f"{name} must hold numbers, got {type(v).__name__} of dtype {v.dtype}")
        if v.ndim == 0:
            raise GraphError(f"{name} must have a batch axis (one row per example), got a scalar")
        arrays.append(v)
    x, y = arrays
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if y.ndim != 1:
        raise GraphError(f"y must be a 1-d array of class labels, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise GraphError(f"y must hold integer class labels, got {y.dtype}")
    if len(x) != len(y):
        raise GraphError(f"x has {len(x)} rows but y has {len(y)}")
    return x, y.astype(np.int64)


def _check_args(model, x, y, eps, norm):
    x, y = _check_data(model, x, y)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise GraphError(f"eps must be a finite number >= 0, got {type(eps).__name__} {eps!r}") from None
    if not np.isfinite(eps) or eps < 0:
        raise GraphError(f"eps must be a finite number >= 0, got {eps}")
    if norm not in ("inf", "2"):
        raise GraphError(f"norm must be 'inf' or 2, got {norm!r}")
    return x, y, eps


def _check_index(index, n: int) -> np.ndarray:
    """The examples' global indices (default 0..n-1) as int64, or a GraphError."""
    if index is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(index)
    if idx.shape != (n,) or (idx.size and idx.dtype.kind not in "iu"):
        raise GraphError(f"index must hold one integer per example ({n}), got {idx.dtype} of shape {idx.shape}")
    if idx.size and idx.min() < 0:
        raise GraphError(f"index must hold non-negative sample indices, got {idx.min()}")
    return idx.astype(np.int64)


def _random_start(shape: tuple, eps: float, norm: str, seed: int, index: np.ndarray) -> np.ndarray:
    """One uniform point of the L∞ ball, or of the L2 ball (uniform in volume), per example, each
    drawn from the example's own generator default_rng([seed, index[i]])."""
    delta = np.empty(shape, np.float64)
    dim = math.prod(shape[1:])
    for i, k in enumerate(index):
        rng = np.random.default_rng([seed, int(k)])
        if norm == "inf":
            delta[i] = rng.uniform(-eps, eps, size=shape[1:])
        else:
            d = rng.standard_normal(shape[1:])
            r = eps * rng.uniform() ** (1.0 / dim)
            delta[i] = d * (r / max(float(np.sqrt(np.sum(d * d))), 1e-300))
    return delta


def _norm_name(norm) -> str:
    s = str(norm).lower()
    return {"inf": "inf", "linf": "inf", "l_inf": "inf", str(np.inf): "inf", "2": "2", "l2": "2", "2.0": "2"}.get(s, s)


# -- the attack loop ------------------------------------------------------------------------------
def _attack(name: str, model, x, y, eps: float, step: Optional[float], steps: int, norm, random_start: bool,
            targeted: bool, target, clip: Clip, seed: int, loss: LossSpec, batch_size: int,
            backend: Optional[str], keep_best: bool, index=None) -> tuple[np.ndarray, AttackReport]:
    norm = _norm_name(norm)
    x, y, eps = _check_args(model, x, y, eps, norm)
    index = _check_index(index, len(x))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GraphError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise GraphError(f"steps must be an int >= 1, got {steps!r}")
    steps = int(steps)
    step = 2.5 * eps / steps if step is None else float(step)
    report = AttackReport(name, len(x), steps)
    if eps == 0 or len(x) == 0:
        return x.copy(), report
    dtype = model.dtype
    f = _grad_fn(model, tuple(x.shape[1:]), dtype, loss, backend)
    sign = -1.0 if targeted else 1.0
    out, zero_idx, bad_idx = [], [], []
    classes = predict_logits(model, x[:1], backend=backend).shape[1] if targeted else 0
    if targeted and target is not None:
        target = np.broadcast_to(np.asarray(target, np.int64), y.shape)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x64 = xb.astype(np.float64)
        if random_start:
            delta = _random_start(xb.shape, eps, norm, int(seed), index[start:start + batch_size])
            x_adv = _clip_range(x64 + delta, clip)
        else:
            x_adv = x64.copy()
        tb = None if target is None else target[start:start + batch_size]
        labels = _targets(True, tb, yb, classes) if targeted else yb
        best, found = x_adv.copy(), np.zeros(len(xb), bool)
        zero_any, bad_any = np.zeros(len(xb), bool), np.zeros(len(xb), bool)
        for _ in range(steps):
            g, z, _ = f(x=x_adv.astype(dtype), y=labels)
            g = g.astype(np.float64)
            if keep_best:
                pred = z.argmax(1)
                ok = pred == labels if targeted else pred != yb
                best[ok], found = x_adv[ok], found | ok
            gflat = _flat(g)
            nonfinite = ~np.all(np.isfinite(gflat), axis=1)
            zero = ~nonfinite & ~np.any(gflat != 0, axis=1)
            zero_any |= zero
            bad_any |= nonfinite
            g[nonfinite] = 0.0  # never let NaN/inf into the iterate
            if norm == "inf":
                direction = np.sign(g)
            else:
                gn = _l2(g)
                direction = g / _bshape(np.where(gn > 0, gn, 1.0), g)
            x_adv = x_adv + sign * step * direction
            x_adv = _clip_range(x64 + _project(x_adv - x64, eps, norm), clip)
        if keep_best and steps > 1:
            z = predict_logits(model, x_adv.astype(dtype), backend=backend)
            pred = z.argmax(1)
            ok = pred == labels if targeted else pred != yb
            best[ok], found = x_adv[ok], found | ok
            x_adv = np.where(_bshape(found, x_adv), best, x_adv)
        out.append(_finalise(xb, x_adv, eps, norm, clip))
        zero_idx.append(np.flatnonzero(zero_any) + start)
        bad_idx.append(np.flatnonzero(bad_any) + start)
    report.zero_grad = np.concatenate(zero_idx)
    report.nonfinite = np.concatenate(bad_idx)
    return np.concatenate(out), report


def fgsm(model, x: np.ndarray, y: np.ndarray, eps: float, clip: Clip = (0, 1), loss: LossSpec = "cross_entropy",
         targeted: bool = False, target: Any = None, batch_size: int = 512, backend: Optional[str] = None,
         on_masking: str = "warn", return_report: bool = False, index: Any = None):
    """Fast gradient sign method (Goodfellow et al. 2015): x' = clip(x + ε·sign(∇ₓℓ(x, y))).

    Targeted: x' = clip(x − ε·sign(∇ₓℓ(x, target))). Returns x' (and the AttackReport when
    return_report=True). ‖x' − x‖∞ ≤ ε holds exactly in x's dtype. FGSM draws nothing at random:
    `index` (the examples' global indices) is accepted for a signature shared with pgd.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.full((2, 4), 0.5, np.float32); y = np.array([0, 1])
    >>> d = fgsm(m, x, y, 0.1).astype(np.float64) - x
    >>> bool(np.all(np.abs(d) <= 0.1) and np.all(np.abs(d) > 0.1 - 1e-7))
    True
    """
    x_adv, report = _attack("fgsm", model, x, y, eps, eps, 1, "inf", False, targeted, target, clip, 0, loss,
                            batch_size, backend, keep_best=False, index=index)
    _masking(report, on_masking)
    return (x_adv, report) if return_report else x_adv


def pgd(model, x: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None, steps: int = 10,
        norm: Union[str, float] = "inf", random_start: bool = True, targeted: bool = False, target: Any = None,
        clip: Clip = (0, 1), seed: int = 0, loss: LossSpec = "cross_entropy", batch_size: int = 512,
        backend: Optional[str] = None, keep_best: bool = True, on_masking: str = "warn",
        return_report: bool = False, index: Any = None):
    """Projected gradient descent (Madry et al. 2018) in the L∞ (norm="inf") or L2 (norm=2) ball.

    Start at x (or a uniform random point of the ε-ball when random_start), then `steps` times:
    L∞: x ← Π(x + step·sign(∇ₓℓ));  L2: x ← Π(x + step·∇ₓℓ/‖∇ₓℓ‖₂); Π projects onto the ε-ball
    around the clean input and then into `clip`. step defaults to 2.5·ε/steps. Targeted mode
    descends the loss of `target` (an int, an array, or None: (y + 1) mod classes).

    keep_best (default): an example that was adversarial at some iterate but not at the last keeps
    that iterate (robust accuracy then counts any success found along the way).
    Example i starts from a point drawn by np.random.default_rng([seed, index[i]]) (index: the
    examples' global indices, default 0..n-1), so its result depends on seed and index, not on
    batch_size or on the other examples. Returns x' (and the AttackReport when return_report).
    """
    x_adv, report = _attack(f"pgd-l{_norm_name(norm)}", model, x, y, eps, step, steps, norm, random_start, targeted,
                            target, clip, seed, loss, batch_size, backend, keep_best, index=index)
    _masking(report, on_masking)
    return (x_adv, report) if return_report else x_adv


def bim(model, x: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None, steps: int = 10,
        clip: Clip = (0, 1), loss: LossSpec = "cross_entropy", targeted: bool = False, target: Any = None,
        batch_size: int = 512, backend: Optional[str] = None, keep_best: bool = True, on_masking: str = "warn",
        return_report: bool = False, index: Any = None):
    """Basic iterative method / iterative FGSM (Kurakin et al. 2017): L∞ PGD from the clean input
    (no random start); step defaults to 2.5·ε/steps. `index` is accepted as in pgd (nothing is random)."""
    x_adv, report = _attack("bim", model, x, y, eps, step, steps, "inf", False, targeted, target, clip, 0, loss,
                            batch_size, backend, keep_best, index=index)
    _masking(report, on_masking)
    return (x_adv, report) if return_report else x_adv


ATTACKS: dict = {"fgsm": fgsm, "bim": bim, "pgd": pgd,
                 "pgd_l2": lambda *a, **k: pgd(*a, norm=2, **k)}


# -- evaluation -----------------------------------------------------------------------------------
@dataclass
class RobustnessReport:
    """Clean and robust accuracy of a model under one attack at several ε.

    Each row: eps, robust_acc (share of *all* examples still classified correctly after the attack),
    success_rate = n_success / n_correct
    (the denominator n_correct is the number of examples the model classified correctly without
    attack; success = misclassified after the attack, or for targeted attacks = the target class),
    mean/max ‖δ‖∞ and ‖δ‖₂ over all examples, and the gradient masking counts (zero_grad, nonfinite)."""

    attack: str
    n: int
    clean_acc: float
    n_correct: int
    rows: list = field(default_factory=list)

    @property
    def eps(self) -> list:
        return [r["eps"] for r in self.rows]

    @property
    def robust_acc(self) -> list:
        return [r["robust_acc"] for r in self.rows]

    def row(self, eps: float) -> dict:
        for r in self.rows:
            if np.isclose(r["eps"], eps):
                return r
        raise KeyError(f"no row for eps={eps}; have {self.eps}")

    def to_dict(self) -> dict:
        return {"attack": self.attack, "n": self.n, "clean_acc": self.clean_acc, "n_correct": self.n_correct,
                "rows": [dict(r) for r in self.rows]}

    def table(self) -> str:
        head = (f"{self.attack}: clean accuracy {self.clean_acc:.2%} ({self.n_correct}/{self.n}); "
                f"success rate = share of the {self.n_correct} clean-correct examples the attack flips")
        cols = f"{'eps':>6}  {'robust acc':>10}  {'success':>8}  {'mean|d|inf':>10}  {'max|d|inf':>9}  " \
               f"{'mean|d|2':>8}  {'max|d|2':>7}  {'masked':>6}"
        lines = [head, cols]
        for r in self.rows:
            lines.append(f"{r['eps']:>6.3f}  {r['robust_acc']:>10.2%}  {r['success_rate']:>8.2%}  "
                         f"{r['mean_linf']:>10.4f}  {r['max_linf']:>9.4f}  {r['mean_l2']:>8.4f}  "
                         f"{r['max_l2']:>7.4f}  {r['zero_grad'] + r['nonfinite']:>6d}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def evaluate(model, x: np.ndarray, y: np.ndarray, attack: Union[str, Callable] = "pgd",
             eps: Sequence[float] = (0.05, 0.1, 0.2), backend: Optional[str] = None, index: Any = None,
             **attack_kwargs) -> RobustnessReport:
    """Clean accuracy, then for each ε: robust accuracy, attack success rate over the originally
    correct examples (denominator: their number, `n_correct`), and mean/max ‖δ‖∞ and ‖δ‖₂.

    attack: 'fgsm', 'bim', 'pgd', 'pgd_l2', or a callable(model, x, y, eps, **attack_kwargs) -> x_adv.
    Extra keyword arguments go to the attack (e.g. steps=20, norm=2, targeted=True, seed=1).
    index: the examples' global indices, passed to the built-in attacks (their random starts are
    seeded per example by seed and index; see the module docstring).
    Gradient masking warnings are collected into the rows (zero_grad, nonfinite) instead of raised.
    """
    x, y = _check_data(model, x, y)
    name = attack if isinstance(attack, str) else getattr(attack, "__name__", "attack")
    fn = ATTACKS.get(attack) if isinstance(attack, str) else attack if callable(attack) else None
    if fn is None:
        raise GraphError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS)} or pass a callable")
    try:
        eps = [float(e) for e in ([eps] if np.ndim(eps) == 0 else list(eps))]
    except (TypeError, ValueError):
        raise GraphError(f"eps must be a number or a list of numbers, got {eps!r}") from None
    if name == "pgd" and _norm_name(attack_kwargs.get("norm", "inf")) == "2":
        name = "pgd_l2"
    targeted = bool(attack_kwargs.get("targeted", False))
    clean_pred = predict_logits(model, x, backend=backend).argmax(1)
    correct = clean_pred == y
    report = RobustnessReport(name, len(x), float(correct.mean()) if len(x) else float("nan"), int(correct.sum()))
    builtin = isinstance(attack, str)
    for e in eps:
        e = float(e)
        kwargs = dict(attack_kwargs)
        if builtin:
            kwargs.update(return_report=True, on_masking="ignore", backend=backend)
            if index is not None:
                kwargs["index"] = index
            x_adv, rep = fn(model, x, y, e, **kwargs)
        else:
            x_adv, rep = fn(model, x, y, e, **kwargs), None
        pred = predict_logits(model, x_adv, backend=backend).argmax(1)
        if targeted:
            classes = predict_logits(model, x[:1], backend=backend).shape[1]
            tgt = _targets(True, attack_kwargs.get("target"), y, classes)
            success = correct & (pred == tgt)
        else:
            success = correct & (pred != y)
        d = x_adv.astype(np.float64) - x.astype(np.float64)
        linf = np.abs(_flat(d)).max(axis=1) if d.size else np.zeros(len(x))
        l2 = _l2(d)
        report.rows.append({
            "eps": e, "robust_acc": _mean(pred == y), "success_rate":
            float(success.sum() / correct.sum()) if correct.any() else float("nan"),
            "n_success": int(success.sum()), "n_correct": int(correct.sum()),
            "mean_linf": _mean(linf), "max_linf": float(linf.max()) if len(linf) else float("nan"),
            "mean_l2": _mean(l2), "max_l2": float(l2.max()) if len(l2) else float("nan"),
            "zero_grad": 0 if rep is None else len(rep.zero_grad),
            "nonfinite": 0 if rep is None else len(rep.nonfinite)})
    return report


# -- adversarial training -------------------------------------------------------------------------
def adversarial_training(model, X: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None,
                         steps: int = 7, epochs: int = 10, optimizer: Any = None, batch_size: int = 64,
                         norm: Union[str, float] = "inf", clip: Clip = (0, 1), adv_fraction: float = 1.0,
                         X_test: Optional[np.ndarray] = None, y_test: Optional[np.ndarray] = None,
                         eval_eps: Optional[float] = None, seed: int = 0, loss: LossSpec = "cross_entropy",
                         backend: Optional[str] = None, progress: Optional[bool] = None, verbose: bool = False,
                         trainer: Optional[Trainer] = None) -> History:
    """Madry-style adversarial training: min_θ E[max_{‖δ‖≤ε} ℓ(f_θ(x + δ), y)].

    Each mini-batch is replaced by PGD adversarial examples (random start, `steps` steps of size
    `step`, default 2.5·ε/steps) computed against the current weights, then one optimiser step is
    taken on them. adv_fraction < 1 attacks only that share of each batch (the rest stays clean).
    With X_test given, each epoch also records `test_robust` (PGD robust accuracy at eval_eps,
    default eps). Pass `trainer` to continue an existing Trainer (e.g. to fine-tune a trained model).
    Returns the History."""
    if not 0.0 < adv_fraction <= 1.0:
        raise ValueError(f"adv_fraction must be in (0, 1], got {adv_fraction}")
    trainer = trainer or Trainer(model, optimizer, loss=loss, batch_size=batch_size, backend=backend, seed=seed,
                                 progress=progress, verbose=verbose)
    calls = [0]

    def adversary(xb, yb):
        calls[0] += 1
        k = len(xb) if adv_fraction == 1.0 else int(round(adv_fraction * len(xb)))
        if k == 0:
            return xb
        x_adv = pgd(model, xb[:k], yb[:k], eps, step, steps, norm=norm, random_start=True, clip=clip,
                    seed=seed * 1_000_003 + calls[0], loss=loss, backend=backend, keep_best=False,
                    on_masking="ignore")
        return np.concatenate([x_adv, xb[k:]]) if k < len(xb) else x_adv

    metrics = {}
    if X_test is not None:
        e_eval = eps if eval_eps is None else eval_eps
        metrics["test_robust"] = lambda: accuracy(
            model, pgd(model, X_test, y_test, e_eval, None, steps, norm=norm, clip=clip, seed=seed,
                       backend=backend, on_masking="ignore"), y_test, backend=backend)
    return trainer.fit(X, y, epochs, X_test=X_test, y_test=y_test, adversary=adversary, metrics=metrics)
