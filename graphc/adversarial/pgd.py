"""Gradient-sign and projected-gradient attacks: FGSM, BIM, PGD (L∞ and L2) and MI-FGSM.

All iterate the same loop: one compiled call gives every row's input gradient of its own loss (the
gradient of the *sum* of per-sample losses) and the logits; the step, projection and clipping run in
NumPy in float64 and the result is cast back to x's dtype with the ε promise kept exactly.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from ..ir.errors import GraphError
from ..learn.train import LossSpec
from . import _random
from ._common import (
    AttackReport,
    Clip,
    ball_start,
    check_clip,
    check_data,
    check_dlr_classes,
    check_eps,
    check_labels,
    check_on_masking,
    check_steps,
    clip_range,
    finalise,
    flat,
    gradient_health,
    gradient_oracle,
    logits,
    masking,
    norm_name,
    num_classes,
    project_box,
    targets,
    unit,
)

__all__ = ["fgsm", "bim", "pgd", "mifgsm", "loss_name"]


_LOSS_NAMES = {"cross_entropy": "ce", "ce": "ce", "softmax_cross_entropy": "ce", "xent": "ce",
               "cw": "cw", "margin": "cw", "dlr": "dlr"}


def loss_name(loss: LossSpec) -> LossSpec:
    """'ce', 'cw' or 'dlr' for the built-in losses (per-sample objectives); a callable is kept as is."""
    if callable(loss):
        return loss
    name = _LOSS_NAMES.get(str(loss).lower())
    if name is None:
        raise GraphError(f"unknown loss {loss!r}; choose cross_entropy, cw, dlr or pass a callable(logits, labels)")
    return name


def iterate(name: str, model, x, y, eps, step: Optional[float], steps, norm, random_init: bool, targeted: bool,
            target, clip: Clip, seed: int, index, loss: LossSpec, batch_size: int, backend: Optional[str],
            keep_best: bool, decay: Optional[float] = None) -> tuple[np.ndarray, AttackReport]:
    """The shared loop of FGSM/BIM/PGD/MI-FGSM. Every quantity is per sample (the random start comes
    from the sample's own stream, see graphc.adversarial._random), so the result for a row does not
    depend on batch_size or on which rows share its batch."""
    norm = norm_name(norm)
    x, y = check_data(model, x, y)
    eps = check_eps(eps)
    steps = check_steps(steps)
    check_clip(x, clip, name)
    index = _random.default_index(index, len(x))
    seed = _random.check_seed(seed)
    step = 2.5 * eps / steps if step is None else check_eps(step, "step")
    loss = loss_name(loss)
    report = AttackReport(name, len(x), steps)
    if len(x) == 0:
        return x.copy(), report
    shape = tuple(x.shape[1:])
    classes = num_classes(model, shape, backend)
    check_labels(y, classes, name)
    if isinstance(loss, str):
        check_dlr_classes(loss, targeted, classes, name)
    if eps == 0:
        return x.copy(), report
    gradient = gradient_oracle(model, shape, loss, targeted, backend)
    out, zero_idx, bad_idx = [], [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        tb = targets(targeted, None if target is None else np.broadcast_to(target, y.shape)[start:start + batch_size],
                     yb, classes)
        x64 = xb.astype(np.float64)
        x_adv = x64.copy()
        if random_init:
            x_adv = clip_range(x64 + ball_start(x64, eps, norm, seed, index[start:start + batch_size]), clip)
        best, found = x_adv.copy(), np.zeros(len(xb), bool)
        zero_any, bad_any = np.zeros(len(xb), bool), np.zeros(len(xb), bool)
        velocity = np.zeros_like(x64)
        for _ in range(steps):
            g, z, _ = gradient(x_adv, yb, tb)
            if keep_best:
                pred = z.argmax(1)
                ok = pred == tb if targeted else pred != yb
                best[ok], found = x_adv[ok], found | ok
            zero, nonfinite = gradient_health(g)
            zero_any |= zero
            bad_any |= nonfinite
            g[nonfinite] = 0.0  # never let NaN/inf into the iterate
            if decay is not None:  # MI-FGSM: accumulate L1-normalised gradients
                l1 = np.abs(flat(g)).sum(axis=1)
                velocity = decay * velocity + g / np.where(l1 > 0, l1, 1.0).reshape((-1,) + (1,) * (g.ndim - 1))
                g = velocity
            x_adv = project_box(x64, x_adv + step * unit(g, norm), eps, norm, clip)
        if keep_best and steps > 1:
            pred = logits(model, x_adv, backend).argmax(1)
            ok = pred == tb if targeted else pred != yb
            best[ok], found = x_adv[ok], found | ok
            x_adv = np.where(found.reshape((-1,) + (1,) * (x_adv.ndim - 1)), best, x_adv)
        out.append(finalise(xb, x_adv, eps, norm, clip))
        zero_idx.append(np.flatnonzero(zero_any) + start)
        bad_idx.append(np.flatnonzero(bad_any) + start)
    report.zero_grad = np.concatenate(zero_idx)
    report.nonfinite = np.concatenate(bad_idx)
    return np.concatenate(out), report


def _done(result, on_masking: str, return_report: bool):
    x_adv, report = result
    masking(report, on_masking)
    return (x_adv, report) if return_report else x_adv


def fgsm(model, x: np.ndarray, y: np.ndarray, eps: float, clip: Clip = (0, 1), loss: LossSpec = "cross_entropy",
         targeted: bool = False, target: Any = None, batch_size: int = 512, backend: Optional[str] = None,
         on_masking: str = "warn", return_report: bool = False, index: Optional[np.ndarray] = None):
    """Fast gradient sign method (Goodfellow et al. 2015): x' = clip(x + ε·sign(∇ₓℓ(x, y))).

    Targeted: x' = clip(x − ε·sign(∇ₓℓ(x, target))). Returns x' (and the AttackReport when
    return_report=True). ‖x' − x‖∞ ≤ ε holds exactly in x's dtype. Clean inputs outside `clip`
    raise a GraphError (pass clip=None for unbounded data). `index` (the rows' global indices) is
    checked and otherwise unused — nothing here is random — so that sharded evaluation can pass it
    to every attack alike (the same holds for bim and mifgsm).

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.full((2, 4), 0.5, np.float32); y = np.array([0, 1])
    >>> d = fgsm(m, x, y, 0.1).astype(np.float64) - x
    >>> bool(np.all(np.abs(d) <= 0.1) and np.all(np.abs(d) > 0.1 - 1e-7))
    True
    """
    check_on_masking(on_masking)
    return _done(iterate("fgsm", model, x, y, eps, eps, 1, "inf", False, targeted, target, clip, 0, index, loss,
                         batch_size, backend, keep_best=False), on_masking, return_report)


def pgd(model, x: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None, steps: int = 10,
        norm: Union[str, float] = "inf", random_start: bool = True, targeted: bool = False, target: Any = None,
        clip: Clip = (0, 1), seed: int = 0, loss: LossSpec = "cross_entropy", batch_size: int = 512,
        backend: Optional[str] = None, keep_best: bool = True, on_masking: str = "warn",
        return_report: bool = False, index: Optional[np.ndarray] = None):
    """Projected gradient descent (Madry et al. 2018) in the L∞ (norm="inf") or L2 (norm=2) ball.

    Start at x (or a uniform random point of the ε-ball when random_start), then `steps` times:
    L∞: x ← Π(x + step·sign(∇ₓℓ));  L2: x ← Π(x + step·∇ₓℓ/‖∇ₓℓ‖₂); Π projects onto the ε-ball
    around the clean input and then into `clip`. step defaults to 2.5·ε/steps. Targeted mode
    descends the loss of `target` (an int, an array, or None: (y + 1) mod classes).

    keep_best (default): an example that was adversarial at some iterate but not at the last keeps
    that iterate (robust accuracy then counts any success found along the way).

    Randomness is per sample: sample i's random start is drawn from np.random.default_rng([seed, index[i]]),
    where `index` holds the rows' global indices (default np.arange(len(x))).
    So attacking any chunking of the data (with the matching index slices) gives bit-identical
    results to one call on all of it, whatever the batch_size. Returns x' (and the AttackReport
    when return_report).

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((6, 4)).astype(np.float32); y = np.arange(6) % 3
    >>> a = pgd(m, x, y, 0.1, steps=3, seed=1)
    >>> b = np.concatenate([pgd(m, x[:2], y[:2], 0.1, steps=3, seed=1),
    ...                     pgd(m, x[2:], y[2:], 0.1, steps=3, seed=1, index=np.arange(2, 6))])
    >>> bool(np.array_equal(a, b))
    True
    """
    check_on_masking(on_masking)
    return _done(iterate(f"pgd-l{norm_name(norm)}", model, x, y, eps, step, steps, norm, random_start, targeted,
                         target, clip, seed, index, loss, batch_size, backend, keep_best), on_masking, return_report)


def bim(model, x: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None, steps: int = 10,
        clip: Clip = (0, 1), loss: LossSpec = "cross_entropy", targeted: bool = False, target: Any = None,
        batch_size: int = 512, backend: Optional[str] = None, keep_best: bool = True, on_masking: str = "warn",
        return_report: bool = False, index: Optional[np.ndarray] = None):
    """Basic iterative method / iterative FGSM (Kurakin et al. 2017): L∞ PGD from the clean input
    (no random start); step defaults to 2.5·ε/steps."""
    check_on_masking(on_masking)
    return _done(iterate("bim", model, x, y, eps, step, steps, "inf", False, targeted, target, clip, 0, index, loss,
                         batch_size, backend, keep_best), on_masking, return_report)


def mifgsm(model, x: np.ndarray, y: np.ndarray, eps: float, step: Optional[float] = None, steps: int = 10,
           decay: float = 1.0, clip: Clip = (0, 1), loss: LossSpec = "cross_entropy", targeted: bool = False,
           target: Any = None, batch_size: int = 512, backend: Optional[str] = None, keep_best: bool = True,
           on_masking: str = "warn", return_report: bool = False, index: Optional[np.ndarray] = None):
    """Momentum iterative FGSM (Dong et al. 2018), L∞: from the clean input, `steps` times

        g ← decay·g + ∇ₓℓ / ‖∇ₓℓ‖₁,   x ← Π(x + step·sign(g)),

    with Π the projection onto the ε-ball around the clean input and into `clip`; step defaults to
    ε/steps (the paper's α = ε/T). Deterministic (no random start).

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.full((2, 4), 0.5, np.float32)
    >>> d = mifgsm(m, x, np.array([0, 1]), 0.1, steps=5).astype(np.float64) - x
    >>> bool(np.abs(d).max() <= 0.1)
    True
    """
    check_on_masking(on_masking)
    try:
        decay = float(decay)
    except (TypeError, ValueError):
        raise GraphError(f"decay must be a number >= 0, got {decay!r}") from None
    if not np.isfinite(decay) or decay < 0:
        raise GraphError(f"decay must be a finite number >= 0, got {decay}")
    steps_checked = check_steps(steps)
    if step is None:
        step = check_eps(eps) / steps_checked
    return _done(iterate("mifgsm", model, x, y, eps, step, steps_checked, "inf", False, targeted, target, clip, 0,
                         index, loss, batch_size, backend, keep_best, decay=decay), on_masking, return_report)
