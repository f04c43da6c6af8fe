"""Minimal-norm L2 attacks: Carlini–Wagner L2 and DeepFool. They have no ε: they look for the smallest
perturbation that changes the decision, and are judged by their success rate and the median L2 norm
of the successful perturbations (AttackReport.success_rate, AttackReport.median_l2).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._common import (
    AttackReport,
    Clip,
    check_clip,
    check_data,
    check_eps,
    check_labels,
    check_steps,
    class_gradients_fn,
    clip_range,
    flat,
    gradient_oracle,
    l2,
    logits,
    num_classes,
    targets,
)

__all__ = ["cw_l2", "deepfool"]


def _box(clip: Clip) -> tuple[float, float]:
    if clip is None:
        return -np.inf, np.inf
    lo, hi = clip
    return (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))


def cw_l2(model, x: np.ndarray, y: np.ndarray, confidence: float = 0.0, c: float = 1.0, steps: int = 100,
          binary_search_steps: int = 9, lr: float = 0.01, clip: Clip = (0, 1), targeted: bool = False,
          target: Any = None, batch_size: int = 512, backend: Optional[str] = None, return_report: bool = False):
    """Carlini & Wagner's L2 attack (IEEE S&P 2017): per sample, minimise

        ‖x' − x‖₂² + c · max(z_y − max_{j≠y} z_j, −confidence)        (targeted: max_{j≠t} z_j − z_t)

    over x' = lo + (hi − lo)(tanh(w) + 1)/2 (the change of variables that keeps x' in the clip box
    [lo, hi]; with clip=None, over x' itself) with Adam (learning rate `lr`, `steps` iterations from the
    clean point), and binary-search c per sample over `binary_search_steps` rounds (success: c ← the
    midpoint below; failure: the midpoint above, or ×10 while no success was seen). Returns the
    successful x' of smallest L2 norm per sample, or the clean x where none was found; with
    return_report, an AttackReport with `success`, `l2` and `median_l2`.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    >>> x_adv, rep = cw_l2(m, x, np.arange(6) % 3, steps=20, binary_search_steps=3, return_report=True)
    >>> bool(rep.success_rate > 0.5)
    True
    """
    x, y = check_data(model, x, y)
    confidence = check_eps(confidence, "confidence")
    c = check_eps(c, "c")
    lr = check_eps(lr, "lr")
    steps = check_steps(steps)
    binary_search_steps = check_steps(binary_search_steps, "binary_search_steps")
    check_clip(x, clip, "cw_l2")
    report = AttackReport("cw-l2", len(x), steps * binary_search_steps, success=np.zeros(len(x), bool),
                          l2=np.zeros(len(x)))
    if len(x) == 0:
        return (x.copy(), report) if return_report else x.copy()
    shape = tuple(x.shape[1:])
    classes = num_classes(model, shape, backend)
    check_labels(y, classes, "cw_l2")
    gradient = gradient_oracle(model, shape, "cw", targeted, backend)
    lo, hi = _box(clip)
    tanh_space = np.isfinite(lo) and np.isfinite(hi)
    out = []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        xb, yb = x[sl], y[sl]
        tb = targets(targeted, None if target is None else np.broadcast_to(target, y.shape)[sl], yb, classes)
        best, won = _cw_batch(gradient, xb.astype(np.float64), yb, tb, confidence, c, steps, binary_search_steps, lr,
                              lo, hi, tanh_space, targeted)
        x_adv = clip_range(best, clip).astype(x.dtype)
        out.append(x_adv)
        report.success[sl] = won
        report.l2[sl] = l2(x_adv.astype(np.float64) - xb.astype(np.float64))
    x_out = np.concatenate(out)
    return (x_out, report) if return_report else x_out


def _cw_batch(gradient, x64, y, t, kappa, c0, steps, rounds, lr, lo, hi, tanh_space, targeted):
    n = len(x64)
    bs = (-1,) + (1,) * (x64.ndim - 1)
    if tanh_space:
        half = (hi - lo) / 2.0
        w0 = np.arctanh(np.clip((x64 - lo) / half - 1.0, -1 + 1e-6, 1 - 1e-6))

        def to_x(w):
            return lo + half * (np.tanh(w) + 1.0)
    else:
        w0 = x64.copy()

        def to_x(w):
            return w
    const = np.full(n, float(c0))
    lower, upper = np.zeros(n), np.full(n, np.inf)
    best, best_l2 = x64.copy(), np.full(n, np.inf)
    won = np.zeros(n, bool)
    for _ in range(rounds):
        w = w0.copy()
        m, v = np.zeros_like(w), np.zeros_like(w)
        hit = np.zeros(n, bool)
        for k in range(1, steps + 1):
            xa = to_x(w)
            g_obj, z, obj = gradient(xa, y, t)  # obj: the margin the attack ascends (≥ κ means done)
            pred = z.argmax(1)
            ok = (pred == t if targeted else pred != y) & (obj >= kappa)
            dist = l2(xa - x64)
            better = ok & (dist < best_l2)
            best[better], best_l2[better] = xa[better], dist[better]
            hit |= ok
            # d/dx' of ‖x' − x‖² + c·max(−obj, −κ)
            active = (-obj > -kappa).reshape(bs)
            grad_x = 2.0 * (xa - x64) - np.where(active, const.reshape(bs) * g_obj, 0.0)
            grad_w = grad_x * (half * (1.0 - np.tanh(w) ** 2)) if tanh_space else grad_x
            m = 0.9 * m + 0.1 * grad_w
            v = 0.999 * v + 0.001 * grad_w ** 2
            w = w - lr * (m / (1 - 0.9 ** k)) / (np.sqrt(v / (1 - 0.999 ** k)) + 1e-8)
        won |= hit
        upper = np.where(hit, np.minimum(upper, const), upper)
        lower = np.where(hit, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0)
    return best, won


def deepfool(model, x: np.ndarray, y: np.ndarray, steps: int = 50, overshoot: float = 0.02, clip: Clip = (0, 1),
             batch_size: int = 512, backend: Optional[str] = None, return_report: bool = False):
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), multi-class, L2.

    Per sample, linearise the classifier at the current point and step to the nearest linearised
    decision boundary: with f_k = z_k − z_y and w_k = ∇z_k − ∇z_y, pick l = argmin_{k≠y} |f_k|/‖w_k‖₂
    and add r = (|f_l| + 10⁻⁴)/‖w_l‖₂² · w_l to the accumulated perturbation; the candidate is
    clip(x + (1 + overshoot)·r_total). Stops per sample at the first misclassified candidate or after
    `steps`. All class gradients come from one compiled call per step. Returns x' (and the
    AttackReport with `success`, `l2`, `median_l2`).

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    >>> x_adv, rep = deepfool(m, x, np.arange(6) % 3, return_report=True)
    >>> bool(rep.success.all())
    True
    """
    x, y = check_data(model, x, y)
    steps = check_steps(steps)
    overshoot = check_eps(overshoot, "overshoot")
    check_clip(x, clip, "deepfool")
    report = AttackReport("deepfool", len(x), steps, success=np.zeros(len(x), bool), l2=np.zeros(len(x)))
    if len(x) == 0:
        return (x.copy(), report) if return_report else x.copy()
    f = class_gradients_fn(model, tuple(x.shape[1:]), backend)
    check_labels(y, num_classes(model, tuple(x.shape[1:]), backend), "deepfool")
    out = []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        xb, yb = x[sl], y[sl]
        x64 = xb.astype(np.float64)
        cand, r_total = x64.copy(), np.zeros_like(x64)
        done = np.zeros(len(xb), bool)
        for it in range(steps + 1):
            rows = np.flatnonzero(~done)
            if not len(rows):
                break
            res = f(x=cand[rows].astype(model.dtype))
            z = res[0].astype(np.float64)
            own = yb[rows]
            fooled = z.argmax(1) != own
            done[rows[fooled]] = True
            if it == steps:
                break
            rows, z, own = rows[~fooled], z[~fooled], own[~fooled]
            grads = np.stack([flat(g[~fooled].astype(np.float64)) for g in res[1:]], axis=1)   # (n, C, D)
            n = len(rows)
            fk = z - z[np.arange(n), own][:, None]                   # f_k = z_k − z_y
            wk = grads - grads[np.arange(n), own][:, None, :]        # w_k = ∇z_k − ∇z_y
            wnorm = np.sqrt((wk ** 2).sum(axis=2))
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = np.abs(fk) / wnorm                            # distance to the linearised boundary k
            dist[np.arange(n), own] = np.inf
            dist[~np.isfinite(dist)] = np.inf
            nearest = dist.argmin(1)
            stuck = ~np.isfinite(dist[np.arange(n), nearest])      # no class with a usable gradient
            done[rows[stuck]] = True
            wl, nl = wk[np.arange(n), nearest], wnorm[np.arange(n), nearest]
            size = np.where(stuck, 0.0, (np.abs(fk[np.arange(n), nearest]) + 1e-4) / np.where(stuck, 1.0, nl) ** 2)
            r_total[rows] += (size[:, None] * wl).reshape((n,) + x64.shape[1:])
            cand[rows] = clip_range(x64[rows] + (1.0 + overshoot) * r_total[rows], clip)
        x_adv = cand.astype(x.dtype)
        won = logits(model, x_adv, backend).argmax(1) != yb
        x_adv = np.where(won.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, xb)
        out.append(x_adv)
        report.success[sl] = won
        report.l2[sl] = l2(x_adv.astype(np.float64) - x64)
    x_out = np.concatenate(out)
    return (x_out, report) if return_report else x_out
