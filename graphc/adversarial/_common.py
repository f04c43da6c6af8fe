"""What every attack shares: argument checks (the clip-box promise included), norms and projections,
the compiled model functions (per-sample objectives and their input gradients, class gradients,
logits), and the AttackReport.

Two rules keep a sample's result independent of the batch it is attacked in, so that any sharding
of the data gives bit-identical results (graphc.distributed relies on it):

* objectives are per-sample and the compiled gradient is that of their *sum*, so row i of the
  gradient is ∇ℓ(x_i) exactly (no 1/N then ×N rounding);
* every compiled call of a model runs on one fixed number of rows (`rows_per_call`: 128, fewer for a
  model whose activations per row are large): a batch is cut into blocks of that size and the last
  one padded with zero rows. Matrix libraries pick kernels, and with them summation orders, by
  matrix size: OpenBLAS switches to its small-matrix kernels below about 2^20 multiply-adds (a
  96-row call of a 64-128-10 MLP sums a row differently from a 128-row call), graphc's own GEMM
  treats a single row apart. With one fixed size every row of every call goes through the same
  kernels, whatever the batch, the chunk or the number of samples still running; and each compiled
  function needs one plan only, compiled once. The size depends on the model alone, never on the
  batch, so every compiled function of a model uses the same one.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .. import ops as F
from ..compiler import autodiff
from ..compiler.runtime import compile as gc_compile
from ..ir.errors import GraphError, user_source
from ..ir.graph import reachable
from ..ir.tensor import Tensor, placeholder
from ..learn.train import LossSpec, loss_tensor, model_cache
from . import _random

Clip = Optional[tuple]
ROWS_PER_CALL = 128  # a multiple of 16, OpenBLAS's row tile, also when two threads split the rows
# A call's forward values stay under this many elements (256 MB of float32): an MLP or CNN with up
# to 512K values per row keeps 128 rows (a 784-512-256-10 MLP has 3K), while an ImageNet network
# (ResNet-50: 60M values per 224² image, counting every ReLU, BatchNorm and sum) runs one row per call
# instead of padding one image to 128 and doing 128 times the work.
CALL_ELEMENTS = 1 << 26
SEED_FEED = "seed"  # a model whose evaluation graph reads this int64 scalar is randomized: fed per call


class GradientMaskingWarning(UserWarning):
    """A gradient-masking symptom: all-zero or non-finite input gradients, probabilities instead of
    logits, a randomized forward pass, a black-box or transfer attack beating the white-box ones,
    or a DLR loss on too few classes. The message starts with the name of the check, in brackets."""


class GradientMaskingError(RuntimeError):
    """Raised instead of GradientMaskingWarning when on_masking="raise"."""


@dataclass
class AttackReport:
    """What happened during an attack: examples whose input gradient was all-zero (at some step) or
    non-finite (at some step), and how many steps ran. `masked` holds the union of both.

    Attacks that know more fill in the per-sample arrays: `success` (bool: the attack reached its
    goal), `queries` (Square: model evaluations used), `l2` (‖x' − x‖₂ of the returned points), and
    `details` (autoattack: its AutoAttackReport)."""

    attack: str
    n: int
    steps: int
    zero_grad: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    nonfinite: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    success: Optional[np.ndarray] = None
    queries: Optional[np.ndarray] = None
    l2: Optional[np.ndarray] = None
    details: Any = None

    @property
    def masked(self) -> np.ndarray:
        return np.union1d(self.zero_grad, self.nonfinite)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success is not None and len(self.success) else float("nan")

    @property
    def median_l2(self) -> float:
        """Median ‖x' − x‖₂ over the examples the attack had to move to succeed (successful, ‖δ‖ > 0;
        clean inputs that are already misclassified do not count); NaN when there are none."""
        if self.success is None or self.l2 is None:
            return float("nan")
        moved = self.success & (self.l2 > 0)
        return float(np.median(self.l2[moved])) if moved.any() else float("nan")

    def summary(self) -> str:
        if not len(self.masked):
            return f"{self.attack}: input gradients finite and non-zero for all {self.n} examples"
        return (f"[zero-or-nonfinite-gradient] {self.attack}: gradient masking symptoms on {len(self.masked)} of "
                f"{self.n} examples ({len(self.zero_grad)} with an all-zero input gradient, {len(self.nonfinite)} "
                f"non-finite); the attack could not move those along the gradient, so their robust accuracy is "
                f"not evidence of robustness")


# -- argument checks ----------------------------------------------------------------------------------
def check_data(model, x, y):
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


def check_labels(y: np.ndarray, classes: int, attack: str) -> None:
    """Class labels must index the model's logits."""
    if len(y) and (y.min() < 0 or y.max() >= classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise GraphError(f"{attack} called at {user_source()}: labels must lie in [0, {classes}); found {bad}")


def check_eps(eps, name: str = "eps") -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise GraphError(f"{name} must be a finite number >= 0, got {type(eps).__name__} {eps!r}") from None
    if not np.isfinite(eps) or eps < 0:
        raise GraphError(f"{name} must be a finite number >= 0, got {eps}")
    return eps


def check_steps(steps, name: str = "steps", minimum: int = 1) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < minimum:
        raise GraphError(f"{name} must be an int >= {minimum}, got {steps!r}")
    return int(steps)


def norm_name(norm) -> str:
    s = str(norm).lower()
    s = {"inf": "inf", "linf": "inf", "l_inf": "inf", str(np.inf): "inf", "2": "2", "l2": "2", "2.0": "2"}.get(s, s)
    if s not in ("inf", "2"):
        raise GraphError(f"norm must be 'inf' or 2, got {norm!r}")
    return s


def check_clip(x: np.ndarray, clip: Clip, attack: str) -> None:
    """Refuse clean inputs outside the clip box: the attack would first move them into the box,
    which can be much further than ε (standardised features clipped into [0, 1] move by up to 2.4),
    so the returned points would silently break ‖x' − x‖ ≤ ε."""
    if clip is None or x.size == 0:
        return
    try:
        lo, hi = clip
    except (TypeError, ValueError):
        raise GraphError(f"{attack}: clip must be None or a (low, high) pair, got {clip!r}") from None
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    if not lo <= hi:
        raise GraphError(f"{attack}: clip=({lo}, {hi}) is empty (low > high)")
    finite = x[np.isfinite(x)]
    if not finite.size:
        return
    x_min, x_max = float(finite.min()), float(finite.max())
    if x_min >= lo and x_max <= hi:
        return
    moved = max(lo - x_min, x_max - hi)
    raise GraphError(
        f"{attack} called at {user_source()}: the clean inputs x lie in [{x_min:.6g}, {x_max:.6g}], outside the "
        f"clip box [{lo:.6g}, {hi:.6g}]; clipping would move points by up to {moved:.4g}, far beyond ε, so the "
        f"attack refuses. Pass clip=None for unbounded inputs (e.g. standardised features) or a box that "
        f"contains the data, e.g. clip=({math.floor(min(x_min, lo)):g}, {math.ceil(max(x_max, hi)):g}).")


def targets(targeted: bool, target, y: np.ndarray, classes: int) -> np.ndarray:
    """The labels an attack aims at: y itself (untargeted), `target` broadcast to y's shape, or by
    default (y + 1) mod classes (deterministic and never the true label)."""
    if not targeted:
        return y
    if target is None:
        return (y + 1) % classes
    t = np.broadcast_to(np.asarray(target, np.int64), y.shape).copy()
    if t.size and (t.min() < 0 or t.max() >= classes):
        raise GraphError(f"target classes must lie in [0, {classes}), got {t.min()}..{t.max()}")
    return t


def masking(report: AttackReport, on_masking: str) -> None:
    if not len(report.masked) or on_masking == "ignore":
        return
    if on_masking == "raise":
        raise GradientMaskingError(report.summary())
    warnings.warn(report.summary(), GradientMaskingWarning, stacklevel=3)


def check_on_masking(on_masking: str) -> None:
    if on_masking not in ("warn", "raise", "ignore"):
        raise GraphError(f"on_masking must be 'warn', 'raise' or 'ignore', got {on_masking!r}")


# -- norms and projections ----------------------------------------------------------------------------
def flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), math.prod(a.shape[1:]))  # not -1: an empty batch has no size to infer


def mean(a) -> float:
    return float(np.mean(a)) if len(a) else float("nan")  # the mean of no examples, without a warning


def l2(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(flat(a).astype(np.float64) ** 2, axis=1))


def linf(a: np.ndarray) -> np.ndarray:
    return np.abs(flat(a)).max(axis=1) if a.size else np.zeros(len(a))


def bshape(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def clip_range(x: np.ndarray, clip: Clip) -> np.ndarray:
    if clip is None:
        return x
    lo, hi = clip
    return np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def project(delta: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Onto the ε-ball around 0 (L∞: clip; L2: rescale rows longer than ε)."""
    if norm == "inf":
        return np.clip(delta, -eps, eps)
    n = l2(delta)
    scale = np.where(n > eps, eps / np.maximum(n, 1e-300), 1.0)
    return delta * bshape(scale, delta)


def project_box(x64: np.ndarray, x_new: np.ndarray, eps: float, norm: str, clip: Clip) -> np.ndarray:
    """Onto the ε-ball around x and then into the clip box. With x inside the box (check_clip), clipping
    only moves coordinates towards x, so the result stays in the ball."""
    return clip_range(x64 + project(x_new - x64, eps, norm), clip)


def unit(g: np.ndarray, norm: str) -> np.ndarray:
    """The steepest-ascent direction for a step of unit norm: sign(g) (L∞) or g/‖g‖₂ (L2; 0 for g = 0)."""
    if norm == "inf":
        return np.sign(g)
    n = l2(g)
    return g / bshape(np.where(n > 0, n, 1.0), g)


def finalise(x: np.ndarray, x_adv64: np.ndarray, eps: float, norm: str, clip: Clip) -> np.ndarray:
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
            n = l2(d)
            bad = n > eps
            if not bad.any():
                break
            shrink = eps / n[bad] * (1 - 1e-6)
            out[bad] = (x64[bad] + d[bad] * bshape(shrink, d[bad])).astype(x.dtype)
    if clip is not None:
        out = clip_range(out, clip).astype(x.dtype)
    return out


def sphere_start(x64: np.ndarray, eps: float, norm: str, seed: int, index: np.ndarray, stream: tuple) -> np.ndarray:
    """Auto-PGD's random start, per sample from its own stream: ε·t/‖t‖ with t uniform in [−1, 1]^d
    (L∞: one coordinate at ±ε) or t ~ N(0, I) (L2: on the sphere)."""
    d = math.prod(x64.shape[1:])
    if norm == "inf":
        t = 2.0 * _random.uniform(seed, index, stream, d) - 1.0
        delta = eps * t / np.maximum(np.abs(t).max(axis=1, keepdims=True), 1e-300)
    else:
        t = _random.normal(seed, index, stream, d)
        delta = eps * t / np.maximum(np.sqrt((t ** 2).sum(1)), 1e-300)[:, None]
    return delta.reshape(x64.shape)


def ball_start(x64: np.ndarray, eps: float, norm: str, seed: int, index: np.ndarray) -> np.ndarray:
    """PGD's random start: uniform in the L∞ ball, or uniform in the L2 ball (direction ~ N(0, I), radius
    ε·u^(1/d)), sample i drawn from np.random.default_rng([seed, index[i]])."""
    d = math.prod(x64.shape[1:])
    rows = []
    for g in _random.generators(seed, index):
        if norm == "inf":
            rows.append(g.uniform(-eps, eps, size=d))
        else:
            t = g.standard_normal(d)
            rows.append(t * (eps * g.uniform() ** (1.0 / d) / max(float(np.sqrt(t @ t)), 1e-300)))
    return np.array(rows, np.float64).reshape(x64.shape)


# -- compiled model functions -------------------------------------------------------------------------
def rows_per_call(logits: Tensor) -> int:
    """The fixed block size of a model's compiled calls: the largest power of two up to ROWS_PER_CALL
    whose forward activations (every batched value reachable from the logits) fit in CALL_ELEMENTS."""
    per_row = sum(math.prod(n.shape[1:]) for n in reachable([logits]) if n.shape and n.shape[0] is None)
    rows = ROWS_PER_CALL
    while rows > 1 and rows * per_row > CALL_ELEMENTS:
        rows //= 2
    return rows


class RowFunction:
    """A compiled Function of a batch of rows, called so that row i of every output depends only on
    row i of the inputs: the rows go through in blocks of exactly `rows` (see rows_per_call), the last
    one padded with zero rows. A model whose graph reads the SEED_FEED placeholder (a randomized
    defence, e.g. dropout left on) gets a new seed per call."""

    def __init__(self, fn, rows: int = ROWS_PER_CALL):
        self.fn = fn
        self.rows = rows
        self.names = {p.name for p in fn.placeholders}
        self.seeded = SEED_FEED in self.names
        self.calls = 0

    def __call__(self, **feeds) -> list:
        """Feeds by name: arrays with a batch axis (cut into blocks), and 0-d scalars (passed to every
        block). Feeds the function does not read (e.g. y of a targeted cross-entropy) are dropped."""
        feeds = {k: v for k, v in feeds.items() if k in self.names}
        batched = [k for k, v in feeds.items() if getattr(v, "ndim", 0)]  # np.ndim is slow per call
        n = len(feeds[batched[0]])
        rows = self.rows
        starts = range(0, max(n, 1), rows)
        parts = []
        for lo in starts:
            block = {}
            for k, v in feeds.items():
                if k in batched:
                    v = v[lo:lo + rows]
                    if len(v) < rows:
                        v = np.concatenate([v, np.zeros((rows - len(v),) + v.shape[1:], v.dtype)])
                block[k] = v
            if self.seeded:
                self.calls += 1
                block[SEED_FEED] = np.array(self.calls, np.int64)
            out = self.fn(**block)
            parts.append(out if isinstance(out, list) else [out])
        keep = [min(rows, n - lo) for lo in starts]
        return [np.concatenate([p[k][:r] for p, r in zip(parts, keep)]) for k in range(len(parts[0]))]


def _model_logits(model, x: Tensor) -> Tensor:
    seed = placeholder(SEED_FEED, (), "int64")
    return model(x, training=False, seed=seed)


def _cached(model, key, build):
    cache = model_cache(model)
    if key not in cache:
        cache[key] = build()
    return cache[key]


def logits_fn(model, feature_shape: tuple, backend: Optional[str]) -> RowFunction:
    """f(x=...) -> [logits]; the model only, never a gradient (what Square and the checks use)."""
    def build():
        x = placeholder("x", (None,) + tuple(feature_shape), model.dtype)
        z = _model_logits(model, x)
        return RowFunction(gc_compile(z, backend=backend), rows_per_call(z))
    return _cached(model, ("attack-logits", tuple(feature_shape), backend), build)


def logits(model, x: np.ndarray, backend: Optional[str], batch_size: int = 512) -> np.ndarray:
    """The model's logits on the rows of x, computed row-independently (see RowFunction)."""
    f = logits_fn(model, tuple(x.shape[1:]), backend)
    xs = x.astype(model.dtype, copy=False)
    if len(x) == 0:
        return f.fn(x=xs) if not f.seeded else f.fn(x=xs, **{SEED_FEED: np.array(0, np.int64)})
    return np.concatenate([f(x=xs[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])


def num_classes(model, feature_shape: tuple, backend: Optional[str]) -> int:
    def build():
        return int(logits(model, np.zeros((1,) + tuple(feature_shape), model.dtype), backend).shape[1])
    return _cached(model, ("attack-classes", tuple(feature_shape), backend), build)


def _top_logits(z: Tensor, k: int) -> list:
    """The k largest logits of each row, largest first, as (N,) Tensors (repeated max-and-mask; the masked
    entry is pushed below the row's minimum, outside the gradient, so it is never picked again)."""
    classes = z.shape[1]
    span = F.stop_gradient(F.max(z, axis=1, keepdims=True) + F.max(-z, axis=1, keepdims=True)) + 1.0
    tops, m = [], z
    for _ in range(k):
        tops.append(F.max(m, axis=1))
        m = m - F.one_hot(F.argmax(m, axis=1), classes, z.dtype) * span
    return tops


def objective(loss: str, targeted: bool, z: Tensor, y: Tensor, t: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(total, per_sample): the per-sample quantity an attack *ascends*, shape (N,), and a scalar whose
    input gradient has row i = ∇ of sample i's value:

    ce:  CE(z, y) untargeted; −CE(z, t) targeted.
    cw:  max_{j≠y} z_j − z_y untargeted; z_t − max_{j≠t} z_j targeted (the Carlini–Wagner margin).
    dlr: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3) untargeted (Croce & Hein 2020), targeted
         −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), where z_π1 ≥ z_π2 ≥ … are the sorted logits.

    For ce the total is N·softmax_cross_entropy: the fused op's backward scales by upstream/N = N/N,
    exactly 1, so its rows are the per-sample gradients (and it keeps the fused kernel's care for
    confident rows, where p_y − 1 would cancel). Its per-sample values are left to cross_entropy() in
    float64 (None here): a float32 log-softmax rounds a confident row's loss of 1e-6 by ±10 %."""
    classes = z.shape[1]

    def picked(labels):
        return F.sum(z * F.one_hot(labels, classes, z.dtype), axis=1)

    def best_other(labels):
        span = F.stop_gradient(F.max(z, axis=1, keepdims=True) + F.max(-z, axis=1, keepdims=True)) + 1.0
        return F.max(z - F.one_hot(labels, classes, z.dtype) * span, axis=1)

    if loss == "ce":
        total = F.softmax_cross_entropy(z, t if targeted else y) * F.size_of(z, 0)
        return (-total if targeted else total), None  # the per-sample values: cross_entropy() on the logits
    if loss == "cw":
        obj = picked(t) - best_other(t) if targeted else best_other(y) - picked(y)
    elif loss == "dlr":
        if targeted:
            z1, _, z3, z4 = _top_logits(z, 4)
            obj = -(picked(y) - picked(t)) / (z1 - (z3 + z4) * 0.5 + 1e-12)
        else:
            z1, _, z3 = _top_logits(z, 3)
            obj = -(picked(y) - best_other(y)) / (z1 - z3 + 1e-12)
    else:
        raise GraphError(f"unknown loss {loss!r}; choose 'ce', 'cw' or 'dlr'")
    return F.sum(obj), obj


def cross_entropy(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row softmax cross-entropy log Σ_j exp(z_j − z_y) of logits z, in float64: with d = z − z_y and
    m = max d, it is m + log1p(Σ_{j ≠ argmax} exp(d_j − m)), exact to rounding even for confident rows.

    >>> cross_entropy(np.array([[0.0, 0.0], [40.0, 0.0]]), np.array([0, 0]))   # log 2, and e^-40
    array([6.93147181e-01, 4.24835426e-18])
    """
    d = z.astype(np.float64) - z[np.arange(len(z)), labels].astype(np.float64)[:, None]
    top = d.argmax(axis=1)
    m = d[np.arange(len(d)), top]
    e = np.exp(d - m[:, None])
    e[np.arange(len(d)), top] = 0.0
    return m + np.log1p(e.sum(axis=1))


def check_dlr_classes(loss: str, targeted: bool, classes: int, attack: str) -> None:
    need = 4 if targeted else 3
    if loss == "dlr" and classes < need:
        what = "targeted DLR loss −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)" if targeted else \
            "DLR loss −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3)"
        raise GraphError(f"[dlr-classes] {attack}: the {what} needs at least {need} classes and this model has "
                         f"{classes}; use loss='ce' (or 'cw') instead")


def objective_fn(model, feature_shape: tuple, loss: str, targeted: bool, backend: Optional[str]) -> RowFunction:
    """f(x=, y=[, t=]) -> [∇ₓ Σᵢ objectiveᵢ (row i = ∇ of sample i's objective), logits, objective (N,)]."""
    def build():
        x = placeholder("x", (None,) + tuple(feature_shape), model.dtype)
        y = placeholder("y", (None,), "int64")
        t = placeholder("t", (None,), "int64") if targeted else None
        z = _model_logits(model, x)
        total, per_sample = objective(loss, targeted, z, y, t)
        outputs = [autodiff.grad(total, x), z] + ([] if per_sample is None else [per_sample])
        return RowFunction(gc_compile(outputs, backend=backend), rows_per_call(z))
    return _cached(model, ("attack-objective", tuple(feature_shape), loss, targeted, backend), build)


def scalar_loss_fn(model, feature_shape: tuple, loss: LossSpec, backend: Optional[str]):
    """For a user's callable(logits, labels) -> scalar loss: f(x, y) -> [∇ₓ loss, logits, loss]. Its
    gradient is that of a batch *mean* (for the built-in losses use objective_fn instead)."""
    def build():
        x = placeholder("x", (None,) + tuple(feature_shape), model.dtype)
        y = placeholder("y", (None,), "int64")
        z = _model_logits(model, x)
        ell = loss_tensor(loss, z, y)
        return gc_compile([autodiff.grad(ell, x), z, ell], backend=backend)
    return _cached(model, ("attack-scalar-loss", tuple(feature_shape), loss, backend), build)


def class_gradients_fn(model, feature_shape: tuple, backend: Optional[str]) -> RowFunction:
    """f(x=) -> [logits, ∇ₓ z_0, …, ∇ₓ z_{C−1}]: every class's input gradient in one compiled call
    (the forward pass is shared by CSE). DeepFool and the ART adapter's class_gradient use it."""
    classes = num_classes(model, feature_shape, backend)

    def build():
        x = placeholder("x", (None,) + tuple(feature_shape), model.dtype)
        z = _model_logits(model, x)
        grads = [autodiff.grad(F.sum(z * _unit_row(k, classes, z.dtype)), x) for k in range(classes)]
        return RowFunction(gc_compile([z] + grads, backend=backend), rows_per_call(z))
    return _cached(model, ("attack-class-grads", tuple(feature_shape), backend), build)


def _unit_row(k: int, classes: int, dtype) -> np.ndarray:
    e = np.zeros((1, classes), dtype)
    e[0, k] = 1
    return e


def gradient_oracle(model, feature_shape: tuple, loss: LossSpec, targeted: bool, backend: Optional[str]):
    """callable(x64, y, t) -> (g, logits, objective): g (float64) is row i's gradient of the quantity the
    attack ascends. Built-in losses ('ce', 'cw', 'dlr') use objective_fn (row-independent); a callable
    loss(logits, labels) -> scalar is taken as a batch mean, evaluated on t when targeted and descended."""
    if isinstance(loss, str):
        f = objective_fn(model, feature_shape, loss, targeted, backend)

        def builtin(x64, y, t):
            xd = x64.astype(model.dtype)
            out = f(**(dict(x=xd, y=y, t=t) if targeted else dict(x=xd, y=y)))
            g, z = out[0].astype(np.float64), out[1]
            if loss == "ce":
                obj = -cross_entropy(z, t) if targeted else cross_entropy(z, y)
            else:
                obj = out[2].astype(np.float64)
            return g, z, obj
        return builtin
    f_custom = scalar_loss_fn(model, feature_shape, loss, backend)
    sign = -1.0 if targeted else 1.0

    def custom(x64, y, t):
        g, z, ell = f_custom(x=x64.astype(model.dtype), y=t if targeted else y)
        return g.astype(np.float64) * (sign * len(x64)), z, None  # mean → per-example gradient
    return custom


def momentum_step_fn(model, feature_shape: tuple, loss: str, targeted: bool, norm: str, clip: Clip,
                     backend: Optional[str]) -> RowFunction:
    """Auto-PGD's whole iteration as one compiled call:

        f(x0, xk, xprev, gk, eta (N,), alpha, eps, y[, t]) -> [x_next, ∇f(x_next), logits, Σ|∇f| per row[, f]]

    with z = P(xk + eta·u(gk)) and x_next = P(xk + alpha(z − xk) + (1 − alpha)(xk − xprev)), u = sign (L∞)
    or g/‖g‖₂ (L2), P the projection onto the ε-ball around x0 and into the clip box. The step, the two
    projections, the model and its input gradient run in the plan's C kernels instead of ~30 NumPy passes
    over the batch. Every op is per row, so rows stay independent of each other."""
    clip_key = None if clip is None else tuple(None if c is None else float(c) for c in clip)

    def build():
        dtype = model.dtype
        rest = tuple(range(1, len(feature_shape) + 1))
        x0, xk, xprev, gk = (placeholder(name, (None,) + tuple(feature_shape), dtype)
                             for name in ("x0", "xk", "xprev", "gk"))
        eta = F.reshape(placeholder("eta", (None,), dtype), (-1,) + (1,) * len(feature_shape))
        alpha, eps = placeholder("alpha", (), dtype), placeholder("eps", (), dtype)
        y = placeholder("y", (None,), "int64")
        t = placeholder("t", (None,), "int64") if targeted else None

        def row_norm(v):
            return F.sqrt(F.sum(v * v, axis=rest, keepdims=True))

        def project(v):
            if norm == "inf":
                v = F.maximum(F.minimum(v, x0 + eps), x0 - eps)
            else:
                d = v - x0
                v = x0 + d * F.minimum(eps / F.maximum(row_norm(d), 1e-30), 1.0)
            if clip_key is not None:
                lo, hi = clip_key
                v = v if hi is None else F.minimum(v, hi)
                v = v if lo is None else F.maximum(v, lo)
            return v

        u = F.sign(gk) if norm == "inf" else gk / F.maximum(row_norm(gk), 1e-30)
        z = project(xk + eta * u)
        x_next = project(xk + alpha * (z - xk) + (1.0 - alpha) * (xk - xprev))
        logits_next = _model_logits(model, x_next)
        total, per_sample = objective(loss, targeted, logits_next, y, t)
        g = autodiff.grad(total, x_next)
        outputs = [x_next, g, logits_next, F.sum(F.abs(g), axis=rest)]
        fn = gc_compile(outputs + ([] if per_sample is None else [per_sample]), backend=backend)
        return RowFunction(fn, rows_per_call(logits_next))
    return _cached(model, ("apgd-step", tuple(feature_shape), loss, targeted, norm, clip_key, backend), build)


def gradient_health(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(zero, nonfinite) per row: an all-zero input gradient, or one with a NaN/inf entry."""
    gflat = flat(g)
    nonfinite = ~np.all(np.isfinite(gflat), axis=1)
    zero = ~nonfinite & ~np.any(gflat != 0, axis=1)
    return zero, nonfinite
