"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based black-box attack.

It sees only the model's logits. Each iteration proposes, per sample, a random change of a square
window of the image (L∞: the window set to x ± ε, one random sign per channel; L2: the perturbation's
mass inside two windows redistributed as a centred ±pattern), queries the model once, and keeps the
proposal when it lowers the margin z_y − max_{j≠y} z_j (or misclassifies). The window's area is p·H·W
with p halved on the published schedule (p_init at first, p_init/512 at the end; the iteration
thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 are for 10,000 queries and rescaled to
`queries`). A sample stops at its first success.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from ..ir.errors import GraphError
from . import _random
from ._common import (
    AttackReport,
    Clip,
    check_clip,
    check_data,
    check_eps,
    check_labels,
    check_on_masking,
    check_steps,
    clip_range,
    finalise,
    logits,
    logits_fn,
    norm_name,
    num_classes,
)

__all__ = ["square", "p_schedule", "square_pattern"]

STREAM = 3  # the first label of Square's random streams
_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(iteration: int, queries: int, p_init: float) -> float:
    """The share of the image a proposal changes at `iteration` (0-based) of a `queries`-query budget.

    >>> [p_schedule(i, 10000, 0.8) for i in (0, 10, 11, 51, 8001)]
    [0.8, 0.8, 0.4, 0.2, 0.0015625]
    """
    i = int(iteration / queries * 10000)
    return p_init / 2 ** sum(i > t for t in _THRESHOLDS)


def _centred(h: int, w: int) -> np.ndarray:
    """Nested rectangles around the centre of an h×w block: the value at Chebyshev distance d from the
    centre is Σ_{k=d}^{m−1} 1/(k+1)², so the mass concentrates in the middle."""
    if h == 0:
        return np.zeros((0, w))
    d = np.maximum(np.abs(np.arange(h)[:, None] - h // 2), np.abs(np.arange(w)[None, :] - w // 2))
    m = max(h // 2, w // 2) + 1
    tail = np.concatenate([np.cumsum(1.0 / np.arange(m, 0, -1) ** 2)[::-1], [0.0]])  # tail[d] = Σ_{k≥d} 1/(k+1)²
    return tail[np.minimum(d, m)]


def square_pattern(s: int) -> np.ndarray:
    """The L2 Square proposal for an s×s window: +centred mass in the top half, − in the bottom half,
    unit L2 norm."""
    top, bottom = _centred(s // 2, s), _centred(s - s // 2, s)
    top = top / max(np.sqrt((top ** 2).sum()), 1e-300)
    bottom = bottom / max(np.sqrt((bottom ** 2).sum()), 1e-300)
    p = np.concatenate([top, -bottom])
    return p / np.sqrt((p ** 2).sum())


def _layout(x: np.ndarray, image_shape) -> tuple[int, int, int]:
    """(C, H, W) in which windows are drawn."""
    d = math.prod(x.shape[1:])
    if image_shape is not None:
        c, h, w = (int(v) for v in image_shape)
        if c * h * w != d:
            raise GraphError(f"square: image_shape {tuple(image_shape)} has {c * h * w} values but the rows of x "
                             f"have {d} (shape {x.shape[1:]})")
        return c, h, w
    if x.ndim == 4:
        return tuple(int(v) for v in x.shape[1:])
    if x.ndim == 3:
        return 1, int(x.shape[1]), int(x.shape[2])
    side = math.isqrt(d)
    return (1, side, side) if side * side == d else (1, 1, d)


def _window_mask(top: np.ndarray, left: np.ndarray, sh: int, sw: int, h: int, w: int) -> np.ndarray:
    """(n, 1, h, w) bool masks of the windows [top, top+sh) × [left, left+sw)."""
    rows = np.arange(h)[None, :] - top[:, None]
    cols = np.arange(w)[None, :] - left[:, None]
    return (((rows >= 0) & (rows < sh))[:, :, None] & ((cols >= 0) & (cols < sw))[:, None, :])[:, None]


def _placed(pattern: np.ndarray, top: np.ndarray, left: np.ndarray, h: int, w: int) -> np.ndarray:
    """(n, 1, h, w): pattern (n, s, s) placed at (top, left), zero elsewhere."""
    s = pattern.shape[1]
    rows = np.arange(h)[None, :] - top[:, None]
    cols = np.arange(w)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    r, c = np.clip(rows, 0, s - 1), np.clip(cols, 0, s - 1)
    vals = pattern[np.arange(len(top))[:, None, None], r[:, :, None], c[:, None, :]]
    return np.where(inside, vals, 0.0)[:, None]


def _norm(a: np.ndarray, axes=(1, 2, 3)) -> np.ndarray:
    return np.sqrt((a ** 2).sum(axis=axes, keepdims=True))


def square(model, x: np.ndarray, y: np.ndarray, eps: float, norm: Union[str, float] = "inf", queries: int = 5000,
           p_init: float = 0.8, clip: Clip = (0, 1), seed: int = 0, index: Optional[np.ndarray] = None,
           image_shape: Optional[tuple] = None, batch_size: int = 512, backend: Optional[str] = None,
           return_report: bool = False, on_masking: str = "warn"):
    """Square Attack, L∞ or L2, untargeted, at most `queries` model evaluations per sample.

    Uses only the model's logits (a compiled forward pass; no gradient is ever built), so it is the
    check against gradient masking: a model that resists PGD but not Square is masking gradients.
    Windows are drawn in the (C, H, W) layout of `image_shape`; by default x's own (N, C, H, W) or
    (N, H, W) shape, flat rows of a square number of features as one-channel square images, other flat
    rows as a 1×D strip (L∞ only; L2 needs H, W ≥ 3).

    on_masking is accepted for a uniform interface with the gradient attacks; Square has no gradient
    whose masking it could report. Returns x' (and, with return_report, an AttackReport whose
    `queries` holds the number of queries each sample used, 0 for clean points that are already
    misclassified, and `success`). A successful sample returns its first adversarial point; the
    others their lowest-margin point.

    Randomness is per sample: the proposals for sample i at iteration k come from the stream of
    (seed, index[i], k) (index: global row indices, default np.arange(len(x))), so any chunking of the
    data gives bit-identical results.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    >>> x_adv, rep = square(m, x, np.arange(5) % 3, 0.1, queries=50, return_report=True)
    >>> bool(np.abs(x_adv - x).max() <= 0.1), bool(rep.queries.max() <= 50)
    (True, True)
    """
    check_on_masking(on_masking)
    norm = norm_name(norm)
    x, y = check_data(model, x, y)
    eps = check_eps(eps)
    queries = check_steps(queries, "queries")
    try:
        p_init = float(p_init)
    except (TypeError, ValueError):
        raise GraphError(f"p_init must be a number in (0, 1], got {p_init!r}") from None
    if not 0.0 < p_init <= 1.0:
        raise GraphError(f"p_init must be a number in (0, 1], got {p_init}")
    check_clip(x, clip, "square")
    index = _random.default_index(index, len(x))
    seed = _random.check_seed(seed)
    c, h, w = _layout(x, image_shape)
    if norm == "2" and (h < 3 or w < 3):
        raise GraphError(f"square: the L2 attack moves mass between windows of at least 3×3 pixels; the layout "
                         f"(C, H, W) = {(c, h, w)} is too small (pass image_shape=(C, H, W) for image data)")
    report = AttackReport(f"square-l{norm}", len(x), queries, success=np.zeros(len(x), bool),
                          queries=np.zeros(len(x), np.int64))
    f = logits_fn(model, tuple(x.shape[1:]), backend)
    check_labels(y, num_classes(model, tuple(x.shape[1:]), backend), "square")
    out = []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        x_adv, _, used = _square_batch(f, model, x[sl], y[sl], index[sl], eps, norm, queries, p_init, clip, seed,
                                         (c, h, w))
        final = finalise(x[sl], x_adv, eps, norm, clip)
        out.append(final)
        # the report describes the points returned (after rounding into the ball), not the iterates
        report.success[sl] = logits(model, final, backend).argmax(1) != y[sl]
        report.queries[sl] = used
    x_out = np.concatenate(out) if out else x.copy()
    return (x_out, report) if return_report else x_out


def _square_batch(f, model, xb, yb, ib, eps, norm, queries, p_init, clip, seed, layout):
    c, h, w = layout
    n = len(xb)
    x64 = xb.astype(np.float64).reshape(n, c, h, w)

    def margin(xa, rows):
        """(margin z_y − max_{j≠y} z_j, misclassified) of the candidate points, one query each."""
        z = f(x=xa.reshape((len(rows),) + xb.shape[1:]).astype(model.dtype))[0].astype(np.float64)
        zy = z[np.arange(len(rows)), yb[rows]]
        others = np.where(np.arange(z.shape[1])[None, :] == yb[rows][:, None], -np.inf, z)
        return zy - others.max(1), z.argmax(1) != yb[rows]

    used = np.zeros(n, np.int64)
    everyone = np.arange(n)
    _, won = margin(x64, everyone)  # the clean points: not counted as attack queries
    x_best = x64.copy()
    m_best = np.full(n, np.inf)
    rows = np.flatnonzero(~won)
    if eps == 0 or not len(rows):
        return x_best.reshape(xb.shape), won, used
    x_best[rows] = _initial(x64[rows], eps, norm, clip, seed, ib[rows], layout)
    m_best[rows], hit = margin(x_best[rows], rows)
    used[rows] = 1
    won[rows] = hit
    for it in range(queries - 1):
        rows = np.flatnonzero(~won)
        if not len(rows):
            break
        p = p_schedule(it, queries, p_init)
        x0, xb_rows = x64[rows], x_best[rows]
        if norm == "inf":
            cand = _propose_linf(x0, xb_rows, eps, p, clip, seed, ib[rows], it, layout)
        else:
            cand = _propose_l2(x0, xb_rows, eps, p, clip, seed, ib[rows], it, layout)
        m, hit = margin(cand, rows)
        used[rows] += 1
        keep = (m < m_best[rows]) | hit
        x_best[rows[keep]], m_best[rows[keep]] = cand[keep], m[keep]
        won[rows[hit]] = True
    return x_best.reshape(xb.shape), won, used


def _initial(x0, eps, norm, clip, seed, idx, layout):
    """The published starting points: vertical stripes of ±ε (L∞); a grid of ±patterns scaled to ‖δ‖₂ = ε (L2)."""
    c, h, w = layout
    n = len(x0)
    if norm == "inf":
        stripes = _random.signs(seed, idx, (STREAM, -1), c * w).reshape(n, c, 1, w)
        return clip_range(x0 + eps * stripes, clip)
    s = max(h // 5, 1)
    signs = _random.signs(seed, idx, (STREAM, -1), c * (h // s) * (w // s)).reshape(n, c, h // s, w // s)
    delta = np.zeros_like(x0)
    pattern = square_pattern(s)
    top0, left0 = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
    for a in range(h // s):
        for b in range(w // s):
            r, q = top0 + a * s, left0 + b * s
            delta[:, :, r:r + s, q:q + s] += pattern[None, None] * signs[:, :, a, b][:, :, None, None]
    return clip_range(x0 + eps * delta / np.maximum(_norm(delta), 1e-12), clip)


def _window_size(p: float, h: int, w: int) -> tuple[int, int]:
    if h == 1:
        return 1, min(w, max(1, int(round(p * w))))
    s = min(h, w, max(1, int(round(math.sqrt(p * h * w)))))
    return s, s


def _propose_linf(x0, x_best, eps, p, clip, seed, idx, it, layout):
    c, h, w = layout
    sh, sw = _window_size(p, h, w)
    u = _random.uniform(seed, idx, (STREAM, it), 2 + c)
    top = np.minimum((u[:, 0] * (h - sh + 1)).astype(np.int64), h - sh)
    left = np.minimum((u[:, 1] * (w - sw + 1)).astype(np.int64), w - sw)
    sign = np.where(u[:, 2:] < 0.5, -1.0, 1.0)[:, :, None, None]
    inside = _window_mask(top, left, sh, sw, h, w)
    return np.where(inside, clip_range(x0 + eps * sign, clip), x_best)


def _propose_l2(x0, x_best, eps, p, clip, seed, idx, it, layout):
    c, h, w = layout
    s = min(h, w, max(3, int(round(math.sqrt(p * h * w)))))
    if s % 2 == 0:
        s = s + 1 if s < min(h, w) else s - 1
    u = _random.uniform(seed, idx, (STREAM, it), 5 + c)
    span = np.array([h - s + 1, w - s + 1, h - s + 1, w - s + 1], np.float64)
    corners = np.minimum((u[:, :4] * span).astype(np.int64), (span - 1).astype(np.int64))
    top1, left1, top2, left2 = corners.T
    transpose = u[:, 4] < 0.5
    sign = np.where(u[:, 5:] < 0.5, -1.0, 1.0)[:, :, None, None]
    delta = x_best - x0
    win1 = _window_mask(top1, left1, s, s, h, w)
    win2 = _window_mask(top2, left2, s, s, h, w)
    norm_win1 = np.sqrt((np.where(win1, delta, 0.0) ** 2).sum(axis=(2, 3), keepdims=True))  # per channel
    norm_all = _norm(delta)
    norm_both = _norm(np.where(win1 | win2, delta, 0.0))
    pattern = square_pattern(s)
    patterns = np.where(transpose[:, None, None], pattern.T[None], pattern[None])
    proposal = _placed(patterns, top1, left1, h, w) * sign + np.where(win1, delta, 0.0) / (1e-12 + norm_win1)
    proposal_norm = np.sqrt((proposal ** 2).sum(axis=(2, 3), keepdims=True))
    budget = np.sqrt(np.maximum(eps ** 2 - norm_all ** 2, 0.0) / c + norm_both ** 2)
    proposal = proposal / (1e-12 + proposal_norm) * budget
    delta = np.where(win2, 0.0, delta)
    delta = np.where(win1, proposal, delta)
    return clip_range(x0 + eps * delta / np.maximum(_norm(delta), 1e-12), clip)
