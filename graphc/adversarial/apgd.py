"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020): PGD with momentum whose step size adapts per sample.

Per sample, starting from a random point on the ε-sphere with step size η = 2ε:

    z      = P(x_k + η·u(∇f(x_k)))                           u = sign (L∞) or g/‖g‖₂ (L2)
    x_k+1  = P(x_k + α(z − x_k) + (1 − α)(x_k − x_k−1))       α = 0.75 (α = 1 for the first step)

and at the checkpoints w_j = ⌈p_j·N⌉ (p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j − p_j−1 − 0.03, 0.06))
the step size is halved, and the iterate moved back to the best point found so far, when

    1. fewer than ρ·(w_j − w_j−1) of the steps since the last checkpoint increased f, or
    2. the step size was not halved at the last checkpoint and the best loss has not improved since.

f is the cross-entropy or the difference-of-logits-ratio (DLR) loss, untargeted or targeted.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from ..ir.errors import GraphError
from . import _random
from ._common import (
    AttackReport,
    Clip,
    check_clip,
    check_data,
    check_dlr_classes,
    check_eps,
    check_labels,
    check_on_masking,
    check_steps,
    cross_entropy,
    finalise,
    gradient_health,
    gradient_oracle,
    logits,
    masking,
    momentum_step_fn,
    norm_name,
    num_classes,
    project_box,
    sphere_start,
)

__all__ = ["apgd", "checkpoints", "halve_step", "run"]

STREAM = 2  # the first label of APGD's random streams


def checkpoints(steps: int) -> list[int]:
    """Auto-PGD's checkpoint iterations w_j = ⌈p_j·N⌉ for j ≥ 1 (in exact integer hundredths of N).

    >>> checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted({-(-q * steps // 100) for q in p[1:]})


def halve_step(increases: np.ndarray, period: int, rho: float, halved_last: np.ndarray, best_then: np.ndarray,
               best_now: np.ndarray) -> np.ndarray:
    """Auto-PGD's two conditions at a checkpoint, per sample: halve when the share of steps that increased
    the loss since the last checkpoint is below ρ, or when the step size was kept at the last checkpoint
    and the best loss did not improve since.

    >>> halve_step(np.array([5, 20]), 22, 0.75, np.array([False, False]), np.array([1., 1.]), np.array([2., 2.]))
    array([ True, False])
    """
    return (increases < rho * period) | (~halved_last & (best_now <= best_then))


def _run(gradient, model, x64, y, t, eps, norm, steps, rho, clip, seed, index, stream, goal, backend, loss,
         targeted):
    """One Auto-PGD run on a batch. Returns (x_found, success, x_best, f_best, zero_any, nonfinite_any).

    `goal`: "misclassify" (argmax ≠ y) or "target" (argmax = t). A sample stops at its first success:
    the working arrays keep only the samples still running (compacted when some succeed), and each
    iteration is one compiled call (momentum_step_fn) plus per-sample bookkeeping on short vectors."""
    n = len(x64)
    dtype = model.dtype
    step = momentum_step_fn(model, tuple(x64.shape[1:]), loss, targeted, norm, clip, backend)
    x_start = project_box(x64, x64 + sphere_start(x64, eps, norm, seed, index, stream), eps, norm, clip)
    x_found, success = x64.copy(), np.zeros(n, bool)
    zero_any, bad_any = np.zeros(n, bool), np.zeros(n, bool)
    x_best64, f_best_all = x_start.copy(), np.full(n, -np.inf)

    def goal_met(z, rows):
        pred = z.argmax(1)
        return pred != y[rows] if goal == "misclassify" else pred == t[rows]

    def health(zero, nonfinite, won, rows, g):
        # a symptom only where the attack still needs the gradient (DLR is flat, = 1, once y is 3rd)
        zero_any[rows] |= zero & ~won
        bad_any[rows] |= nonfinite & ~won
        if nonfinite.any():
            g[nonfinite] = 0  # never let NaN/inf into the iterate

    def objective_of(out, z, rows):
        if loss == "ce":
            f = cross_entropy(z, t[rows]) if targeted else cross_entropy(z, y[rows])
            f = -f if targeted else f
        else:
            f = out.astype(np.float64)
        return np.where(np.isfinite(f), f, -np.inf)

    rows = np.arange(n)
    g, z, f = gradient(x_start, y, t)
    zero, nonfinite = gradient_health(g)
    won = goal_met(z, rows)
    health(zero, nonfinite, won, rows, g)
    f = np.where(np.isfinite(f), f, -np.inf)
    x_found[won], success[won] = x_start[won], True
    # the working set: samples still running, compact arrays in the model's dtype
    keep = ~won
    rows = rows[keep]
    x0 = x64[keep].astype(dtype)
    xk = x_start[keep].astype(dtype)
    xp, gk, fk = xk.copy(), g[keep].astype(dtype), f[keep]
    xb, gb, fb = xk.copy(), gk.copy(), fk.copy()
    eta = np.full(len(rows), 2.0 * eps, dtype)
    increases = np.zeros(len(rows), np.int64)
    halved_last = np.zeros(len(rows), bool)
    best_at_check = fb.copy()
    checks = set(checkpoints(steps))
    last_check = 0
    yt = {"y": y[rows]} | ({"t": t[rows]} if targeted else {})
    for k in range(steps):
        if not len(rows):
            break
        out = step(x0=x0, xk=xk, xprev=xp, gk=gk, eta=eta, alpha=np.array(1.0 if k == 0 else 0.75, dtype),
                   eps=np.array(eps, dtype), **yt)
        x_next, g_next, z, gsum = out[:4]
        won = goal_met(z, rows)
        x_found[rows[won]], success[rows[won]] = x_next[won], True
        health(gsum == 0, ~np.isfinite(gsum), won, rows, g_next)
        f = objective_of(out[4] if len(out) > 4 else None, z, rows)
        increases += f > fk
        xp, xk, gk, fk = xk, x_next, g_next, f
        better = f > fb
        if better.any():
            xb[better], gb[better], fb[better] = x_next[better], g_next[better], f[better]
        if k + 1 in checks:
            halve = halve_step(increases, k + 1 - last_check, rho, halved_last, best_at_check, fb)
            if halve.any():
                eta[halve] *= 0.5  # and back to the best point (xk, gk, fk are this call's fresh outputs)
                xk[halve], gk[halve], fk[halve] = xb[halve], gb[halve], fb[halve]
            halved_last, best_at_check, increases = halve, fb.copy(), np.zeros_like(increases)
            last_check = k + 1
        if won.any():  # drop the finished samples from the working set
            keep = ~won
            rows, x0, xk, xp, gk, fk, xb, gb, fb, eta, increases, halved_last, best_at_check = (
                a[keep] for a in (rows, x0, xk, xp, gk, fk, xb, gb, fb, eta, increases, halved_last, best_at_check))
            yt = {key: v[keep] for key, v in yt.items()}
    x_best64[rows], f_best_all[rows] = xb, fb
    return x_found, success, x_best64, f_best_all, zero_any, bad_any


def apgd(model, x: np.ndarray, y: np.ndarray, eps: float, norm: Union[str, float] = "inf", steps: int = 100,
         loss: str = "ce", targeted: bool = False, target: Any = None, restarts: int = 1, rho: float = 0.75,
         clip: Clip = (0, 1), seed: int = 0, index: Optional[np.ndarray] = None, batch_size: int = 512,
         backend: Optional[str] = None, on_masking: str = "warn", return_report: bool = False):
    """Auto-PGD (APGD) in the L∞ or L2 ε-ball, with the cross-entropy (loss="ce") or the
    difference-of-logits-ratio loss (loss="dlr"; needs ≥ 3 classes, ≥ 4 when targeted).

    steps: gradient steps per restart (the published 100). restarts: runs from fresh random starts,
    each on the samples not yet successful. Untargeted: success = misclassified. Targeted: success =
    classified as `target` (an int, an array, or None: each sample's most likely wrong class on the
    clean input); the targeted losses are −CE(z, t) and −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2).
    Clean points that already meet the goal are returned unchanged.

    Returns x' (and the AttackReport when return_report: `success` per sample, masking symptoms):
    for a successful sample its first successful iterate, otherwise its highest-loss point over all
    restarts. ‖x' − x‖ ≤ ε and `clip` hold exactly in x's dtype.

    Randomness is per sample: restart r of sample i starts from a point drawn from the stream of
    (seed, index[i], r) (index: the rows' global indices, default np.arange(len(x))), and step sizes,
    checkpoints and best points are per sample, so any chunking of the data gives bit-identical results.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    >>> x_adv = apgd(m, x, np.arange(5) % 3, 0.1, steps=10)
    >>> bool(np.abs(x_adv - x).max() <= 0.1)
    True
    """
    return run(model, x, y, eps, norm, steps, loss, targeted, target, restarts, rho, clip, seed, index, batch_size,
               backend, on_masking, return_report)


def run(model, x, y, eps, norm, steps, loss, targeted, target, restarts, rho, clip, seed, index, batch_size, backend,
        on_masking, return_report, goal: Optional[str] = None, stream: tuple = ()):
    """apgd with two more knobs for autoattack: `goal` ("misclassify" or "target"; by default "target"
    when targeted) and `stream`, the label of the random streams (APGD-T uses one per target rank)."""
    name = f"apgd-{'t-' if targeted else ''}{loss}"
    check_on_masking(on_masking)
    norm = norm_name(norm)
    x, y = check_data(model, x, y)
    eps = check_eps(eps)
    steps = check_steps(steps)
    restarts = check_steps(restarts, "restarts")
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise GraphError(f"rho must be a number in [0, 1], got {rho!r}") from None
    if not 0.0 <= rho <= 1.0:
        raise GraphError(f"rho must be a number in [0, 1], got {rho}")
    if loss not in ("ce", "dlr"):
        raise GraphError(f"apgd: loss must be 'ce' or 'dlr', got {loss!r}")
    check_clip(x, clip, name)
    index = _random.default_index(index, len(x))
    seed = _random.check_seed(seed)
    report = AttackReport(name, len(x), steps, success=np.zeros(len(x), bool))
    if len(x) == 0:
        return (x.copy(), report) if return_report else x.copy()
    shape = tuple(x.shape[1:])
    classes = num_classes(model, shape, backend)
    check_labels(y, classes, name)
    check_dlr_classes(loss, targeted, classes, name)
    goal = goal or ("target" if targeted else "misclassify")
    if targeted and target is None and not stream:
        stream = (1,)  # the most likely wrong class: APGD-T's first target in autoattack, with its stream
    gradient = gradient_oracle(model, shape, loss, targeted, backend)
    out, zero_idx, bad_idx = [], [], []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        xb, yb, ib = x[sl], y[sl], index[sl]
        x64 = xb.astype(np.float64)
        z_clean = logits(model, xb, backend)
        tb = _targets_of(targeted, target, z_clean, yb, y.shape, sl, classes)
        pred = z_clean.argmax(1)
        done = pred != yb if goal == "misclassify" else pred == tb
        x_adv, f_adv = x64.copy(), np.full(len(xb), -np.inf)
        zero_any, bad_any = np.zeros(len(xb), bool), np.zeros(len(xb), bool)
        if eps > 0:
            for r in range(restarts):
                rows = np.flatnonzero(~done)
                if not len(rows):
                    break
                found, won, best, f_best, zero, bad = _run(
                    gradient, model, x64[rows], yb[rows], None if tb is None else tb[rows], eps, norm, steps, rho,
                    clip, seed, ib[rows], (STREAM,) + stream + (r,), goal, backend, loss, targeted)
                zero_any[rows] |= zero
                bad_any[rows] |= bad
                higher = ~won & (f_best > f_adv[rows])
                x_adv[rows[higher]], f_adv[rows[higher]] = best[higher], f_best[higher]
                x_adv[rows[won]] = found[won]
                done[rows[won]] = True
        final = finalise(xb, x_adv, eps, norm, clip)
        pred = logits(model, final, backend).argmax(1)  # the report describes the points returned, after rounding
        report.success[sl] = pred != yb if goal == "misclassify" else pred == tb
        out.append(final)
        zero_idx.append(np.flatnonzero(zero_any) + start)
        bad_idx.append(np.flatnonzero(bad_any) + start)
    report.zero_grad, report.nonfinite = np.concatenate(zero_idx), np.concatenate(bad_idx)
    masking(report, on_masking)
    x_out = np.concatenate(out)
    return (x_out, report) if return_report else x_out


def _targets_of(targeted: bool, target, z_clean: np.ndarray, yb: np.ndarray, full_shape, sl: slice,
                classes: int) -> Optional[np.ndarray]:
    if not targeted:
        return None
    if target is None:  # the most likely wrong class on the clean input
        z = np.where(np.arange(classes)[None, :] == yb[:, None], -np.inf, z_clean)
        return z.argmax(1)
    t = np.broadcast_to(np.asarray(target, np.int64), full_shape)[sl].copy()
    if t.size and (t.min() < 0 or t.max() >= classes):
        raise GraphError(f"target classes must lie in [0, {classes}), got {t.min()}..{t.max()}")
    return t
