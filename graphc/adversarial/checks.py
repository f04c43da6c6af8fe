"""Gradient-masking checks, after AutoAttack's checks.py: signs that a robustness number measured with
gradient attacks is not evidence of robustness. Each check has a name; a check that fires warns with
a GradientMaskingWarning whose message starts with "[name]", and is listed in the report.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ._common import GradientMaskingWarning, check_data, flat, gradient_health, gradient_oracle, logits_fn, num_classes

__all__ = ["Check", "CheckReport", "check_model", "CHECKS", "probability_output", "randomized", "input_gradients",
           "dlr_classes", "black_box_beats_white_box", "transfer_beats_white_box"]

# name -> what it means when it fires (the README's table is this dict)
CHECKS = {
    "probability-output": "the model's outputs are probabilities (every row in [0, 1], summing to 1), not logits: "
                          "cross-entropy on a softmax of probabilities saturates and its input gradients nearly "
                          "vanish, so gradient attacks stall. Attack the logits (drop the final softmax).",
    "randomized": "two forward passes on the same inputs differ (e.g. dropout left on at test time): each gradient "
                  "is a sample, and a fixed-seed attack under-estimates what an attacker averaging over the "
                  "randomness (EOT) achieves.",
    "zero-or-nonfinite-gradient": "some inputs have an all-zero or non-finite input gradient (quantised or "
                                  "thresholded inputs, saturated units, NaNs): gradient attacks cannot move them, so "
                                  "their robust accuracy says nothing.",
    "dlr-classes": "the DLR loss needs at least 3 classes and its targeted form at least 4; with fewer, APGD-T "
                   "falls back to the targeted cross-entropy and the ensemble loses its scale-invariant loss.",
    "black-box-beats-white-box": "Square (which never sees a gradient) found adversarial examples where APGD-CE "
                                 "and APGD-T failed: the gradients mislead the white-box attacks on those points.",
    "transfer-beats-white-box": "adversarial examples crafted on another model fool this one on points where the "
                                "white-box attacks failed: its own gradients are masked there.",
}


@dataclass
class Check:
    """One check's outcome: `fired`, how many examples it concerns (`count`, of `n`), and what was seen."""

    name: str
    fired: bool
    detail: str = ""
    count: int = 0
    n: int = 0

    @property
    def meaning(self) -> str:
        return CHECKS[self.name]

    def message(self) -> str:
        return f"[{self.name}] {self.detail} — {self.meaning}"


@dataclass
class CheckReport:
    """The checks that ran; `fired` lists the ones that found a symptom."""

    checks: list = field(default_factory=list)

    @property
    def fired(self) -> list:
        return [c for c in self.checks if c.fired]

    @property
    def names(self) -> list:
        return [c.name for c in self.checks]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; ran {self.names}")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def add(self, check: Check, warn: bool) -> Check:
        self.checks = [c for c in self.checks if c.name != check.name] + [check]
        if warn and check.fired:
            warnings.warn(check.message(), GradientMaskingWarning, stacklevel=3)
        return check

    def table(self) -> str:
        lines = []
        for c in self.checks:
            lines.append(f"  {'FIRED' if c.fired else 'ok':5s}  {c.name:27s}  {c.detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def probability_output(z: np.ndarray, tol: float = 1e-5) -> Check:
    """Fires when every row of the model's output lies in [0, 1] and sums to 1."""
    n = len(z)
    if not n or not np.all(np.isfinite(z)):
        return Check("probability-output", False, "no finite outputs to inspect", 0, n)
    fired = bool(z.min() > -tol and z.max() < 1 + tol and np.all(np.abs(z.sum(1) - 1) < tol))
    detail = (f"all {n} output rows are in [0, 1] and sum to 1" if fired else
              f"outputs span [{z.min():.3g}, {z.max():.3g}]; row sums [{z.sum(1).min():.3g}, {z.sum(1).max():.3g}]")
    return Check("probability-output", fired, detail, n if fired else 0, n)


def randomized(z1: np.ndarray, z2: np.ndarray) -> Check:
    """Fires when two forward passes on the same inputs differ at all (graphc's own models are bitwise
    deterministic, so any difference is randomness in the model)."""
    n = len(z1)
    differ = ~np.all((z1 == z2) | (np.isnan(z1) & np.isnan(z2)), axis=1) if n else np.zeros(0, bool)
    k = int(differ.sum())
    detail = (f"two forward passes differ on {k} of {n} inputs (max |Δz| = {np.nanmax(np.abs(z1 - z2)):.3g})" if k
              else f"two forward passes agree bitwise on all {n} inputs")
    return Check("randomized", bool(k), detail, k, n)


def input_gradients(g: np.ndarray) -> Check:
    """Fires when some rows of the input gradient are all zero or non-finite."""
    zero, nonfinite = gradient_health(g)
    k = int((zero | nonfinite).sum())
    detail = (f"{int(zero.sum())} of {len(g)} inputs have an all-zero and {int(nonfinite.sum())} a non-finite "
              f"cross-entropy input gradient" if k else f"input gradients finite and non-zero on all {len(g)} inputs")
    return Check("zero-or-nonfinite-gradient", bool(k), detail, k, len(g))


def dlr_classes(classes: int) -> Check:
    fired = classes < 4
    detail = (f"the model has {classes} classes" + ("; APGD-T uses the targeted cross-entropy" if fired else ""))
    return Check("dlr-classes", fired, detail, 0, 0)


def black_box_beats_white_box(fooled_by_square: np.ndarray, n: int) -> Check:
    """Fires when Square succeeded on points the white-box stages could not break."""
    k = int(np.count_nonzero(fooled_by_square))
    detail = (f"Square fooled {k} of {n} points that APGD-CE and APGD-T left robust" if k
              else "Square found nothing the white-box attacks had missed")
    return Check("black-box-beats-white-box", bool(k), detail, k, n)


def transfer_beats_white_box(fooled_by_transfer: np.ndarray, n: int) -> Check:
    k = int(np.count_nonzero(fooled_by_transfer))
    detail = (f"transferred examples fooled {k} of {n} points the white-box attacks left robust" if k
              else "transferred examples found nothing the white-box attacks had missed")
    return Check("transfer-beats-white-box", bool(k), detail, k, n)


def check_model(model, x: np.ndarray, y: np.ndarray, backend: Optional[str] = None, warn: bool = True,
                batch_size: int = 512) -> CheckReport:
    """Run the checks that need only the model and clean data: probability-output, randomized,
    zero-or-nonfinite-gradient (cross-entropy input gradients at x) and dlr-classes. Fired checks warn
    (GradientMaskingWarning, message "[name] …") unless warn=False; the report lists them all.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 3]); x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    >>> [c.name for c in check_model(m, x, np.arange(6) % 3, warn=False).fired]
    ['dlr-classes']
    """
    x, y = check_data(model, x, y)
    shape = tuple(x.shape[1:])
    report = CheckReport()
    f = logits_fn(model, shape, backend)
    xs = x.astype(model.dtype)
    chunks = [slice(i, i + batch_size) for i in range(0, len(x), batch_size)]
    z1 = np.concatenate([f(x=xs[s])[0] for s in chunks]) if chunks else np.zeros((0, 0))
    z2 = np.concatenate([f(x=xs[s])[0] for s in chunks]) if chunks else np.zeros((0, 0))
    report.add(probability_output(z1.astype(np.float64)), warn)
    report.add(randomized(z1, z2), warn)
    gradient = gradient_oracle(model, shape, "ce", False, backend)
    g = np.concatenate([gradient(x[s].astype(np.float64), y[s], None)[0] for s in chunks]) if chunks else \
        np.zeros((0,) + shape)
    report.add(input_gradients(flat(g) if len(g) else g.reshape(0, 0)), warn)
    report.add(dlr_classes(num_classes(model, shape, backend)), warn)
    return report
