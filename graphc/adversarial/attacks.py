"""graphc.attacks: adversarial examples and robustness evaluation at the field's standard.

    white-box, L∞/L2 ball   fgsm, bim, pgd, mifgsm, apgd (CE / DLR, targeted)
    black-box (logits only) square
    minimal-norm (L2)       cw_l2, deepfool
    ensemble                autoattack (APGD-CE → APGD-T → Square) with an AutoAttackReport
    diagnostics             check_model (gradient-masking checks), evaluate (robust accuracy over ε)
    interop                 art_classifier (the Adversarial Robustness Toolbox runs on graphc models)
    training                adversarial_training (Madry et al.)

The attacker's problem is max_{‖δ‖ ≤ ε} ℓ(f_θ(x + δ), y). graphc differentiates the model's loss
with respect to its *input* placeholder, compiles forward and backward into one call per step (cached
on the model), and the attacks iterate in NumPy:

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
    >>> x_adv, aa = attacks.autoattack(model, s.X_test[:50], s.y_test[:50], eps=0.1, version="fast")
    >>> aa.robust_acc <= report.row(0.1)["robust_acc"] + 0.2
    True

Conventions: x and y are NumPy arrays (x rows in the model's input layout, y integer labels); each
attack returns a NumPy array of adversarial inputs with x's shape and dtype. Inputs are clipped to
`clip` (default (0, 1), pixel data; None for no clipping), and clean inputs outside `clip` raise a
GraphError instead of being silently moved beyond ε. Untargeted attacks ascend the loss of the true
label; targeted ones aim at `target`.

Randomness (random starts, restarts, Square's proposals) is drawn **per sample** from a stream that
depends only on (seed, the sample's global index): pass `index` (default np.arange(len(x))) when
attacking a slice of a larger set, and any chunking of the data gives bit-identical results to a
single call (graphc.distributed shards evaluation on this guarantee).

Gradient masking: an all-zero or non-finite input gradient means the attack cannot make progress
(saturated softmax, dead ReLUs, shattered gradients, NaNs). The attacks never hide this: they warn
with a GradientMaskingWarning naming how many examples were affected (on_masking="raise" raises
GradientMaskingError instead), and `return_report=True` returns an AttackReport with the indices.
check_model and autoattack run the other checks of AutoAttack's checks.py (see graphc.adversarial.checks).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..ir.errors import GraphError
from ..learn.train import History, LossSpec, Trainer, accuracy
from ._common import (
    AttackReport,
    Clip,
    GradientMaskingError,
    GradientMaskingWarning,
    check_data,
    flat,
    l2,
    linf,
    logits,
    mean,
    norm_name,
    num_classes,
    targets,
)
from .apgd import apgd
from .art import art_classifier
from .autoattack import AutoAttackReport, autoattack
from .checks import Check, CheckReport, check_model
from .minimal_norm import cw_l2, deepfool
from .pgd import bim, fgsm, mifgsm, pgd
from .square import square

__all__ = ["fgsm", "bim", "pgd", "mifgsm", "apgd", "square", "cw_l2", "deepfool", "autoattack", "evaluate",
           "adversarial_training", "input_gradient", "check_model", "art_classifier", "AttackReport",
           "AutoAttackReport", "RobustnessReport", "Check", "CheckReport", "GradientMaskingWarning",
           "GradientMaskingError", "ATTACKS"]


def input_gradient(model, x: np.ndarray, y: np.ndarray, loss: LossSpec = "cross_entropy",
                   backend: Optional[str] = None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(∇ₓℓ per example, logits) for the rows of x, in x's shape, float64.

    ℓ is the per-example loss, so a row's gradient does not depend on which other rows share its batch."""
    from ._common import gradient_oracle
    from .pgd import loss_name
    x, y = check_data(model, x, y)
    f = gradient_oracle(model, tuple(x.shape[1:]), loss_name(loss), False, backend)
    grads, zs = [], []
    for i in range(0, len(x), batch_size):
        g, z, _ = f(x[i:i + batch_size].astype(np.float64), y[i:i + batch_size], None)
        grads.append(g)
        zs.append(z)
    if not grads:
        return np.zeros(x.shape), logits(model, x, backend)
    return np.concatenate(grads), np.concatenate(zs)


# the helpers graphc.distributed reuses, so that its per-chunk reports use evaluate's very formulas
_check_data, _norm_name, _flat, _l2, _targets, _mean = check_data, norm_name, flat, l2, targets, mean


# -- evaluation -----------------------------------------------------------------------------------
def _pgd_l2(model, x, y, eps, on_masking: str = "warn", **kwargs):
    return pgd(model, x, y, eps, norm=2, on_masking=on_masking, **kwargs)


def _apgd_ce(model, x, y, eps, on_masking: str = "warn", **kwargs):
    return apgd(model, x, y, eps, loss="ce", on_masking=on_masking, **kwargs)


def _apgd_dlr(model, x, y, eps, on_masking: str = "warn", **kwargs):
    return apgd(model, x, y, eps, loss="dlr", on_masking=on_masking, **kwargs)


def _apgd_t(model, x, y, eps, on_masking: str = "warn", **kwargs):
    return apgd(model, x, y, eps, loss="dlr", targeted=True, on_masking=on_masking, **kwargs)


def _autoattack(model, x, y, eps, return_report: bool = False, backend: Optional[str] = None,
                on_masking: str = "warn", index=None, **kwargs):
    """autoattack as an ε-attack for evaluate: (x_adv, AttackReport with the clean-gradient symptoms)."""
    from ._common import gradient_health, gradient_oracle
    x_adv, aa = autoattack(model, x, y, eps, backend=backend, warn=on_masking != "ignore", index=index, **kwargs)
    if not return_report:
        return x_adv
    x, y = check_data(model, x, y)
    report = AttackReport("autoattack", len(x), 0, success=~aa.robust, details=aa)
    if len(x):
        g = gradient_oracle(model, tuple(x.shape[1:]), "ce", False, backend)(x.astype(np.float64), y, None)[0]
        zero, nonfinite = gradient_health(g)
        report.zero_grad, report.nonfinite = np.flatnonzero(zero), np.flatnonzero(nonfinite)
    return x_adv, report


# name -> attack(model, x, y, eps, **kwargs); names are matched with '-' and '_' alike
ATTACKS: dict = {"fgsm": fgsm, "bim": bim, "pgd": pgd, "pgd_l2": _pgd_l2, "mifgsm": mifgsm,
                 "apgd_ce": _apgd_ce, "apgd_dlr": _apgd_dlr, "apgd_t": _apgd_t, "square": square,
                 "autoattack": _autoattack}
MINIMAL_NORM = {"cw": cw_l2, "cw_l2": cw_l2, "deepfool": deepfool}


def _lookup(attack: str):
    key = str(attack).lower().replace("-", "_")
    if key in MINIMAL_NORM:
        raise GraphError(f"{attack!r} is a minimal-norm attack with no ε budget: call "
                         f"attacks.{MINIMAL_NORM[key].__name__}(model, x, y, return_report=True) and read "
                         f"report.success_rate and report.median_l2")
    if key not in ATTACKS:
        names = sorted(k.replace("_", "-") for k in ATTACKS)
        raise GraphError(f"unknown attack {attack!r}; choose one of {names} or pass a callable")
    return ATTACKS[key]


@dataclass
class RobustnessReport:
    """Clean and robust accuracy of a model under one attack at several ε.

    Each row: eps, robust_acc (share of *all* examples still classified correctly after the attack),
    success_rate = n_success / n_correct
    (the denominator n_correct is the number of examples the model classified correctly without
    attack; success = misclassified after the attack, or for targeted attacks = the target class),
    mean/max ‖δ‖∞ and ‖δ‖₂ over all examples, and the gradient masking counts (zero_grad, nonfinite).
    `details` holds, per row, what the attack reported beyond that (autoattack: its AutoAttackReport)."""

    attack: str
    n: int
    clean_acc: float
    n_correct: int
    rows: list = field(default_factory=list)
    details: list = field(default_factory=list)

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
             eps: Sequence[float] = (0.05, 0.1, 0.2), backend: Optional[str] = None,
             index: Optional[np.ndarray] = None, **attack_kwargs) -> RobustnessReport:
    """Clean accuracy, then for each ε: robust accuracy, attack success rate over the originally
    correct examples (denominator: their number, `n_correct`), and mean/max ‖δ‖∞ and ‖δ‖₂.

    attack: a name from ATTACKS (fgsm, bim, pgd, pgd-l2, mifgsm, apgd-ce, apgd-dlr, apgd-t, square,
    autoattack) or a callable(model, x, y, eps, **attack_kwargs) -> x_adv. Extra keyword arguments go
    to the attack (e.g. steps=20, norm=2, targeted=True, seed=1). `index` (the rows' global indices)
    is passed to attacks that take one, so that evaluating a shard of a larger set gives the rows the
    same random streams as evaluating the whole set (see the module docstring).
    Gradient masking warnings are collected into the rows (zero_grad, nonfinite) instead of raised.
    """
    x, y = check_data(model, x, y)
    name = attack if isinstance(attack, str) else getattr(attack, "__name__", "attack")
    if isinstance(attack, str):
        fn = _lookup(attack)
    elif callable(attack):
        fn = attack
    else:
        raise GraphError(f"attack must be a name from {sorted(ATTACKS)} or a callable, got {type(attack).__name__}")
    try:
        eps = [float(e) for e in ([eps] if np.ndim(eps) == 0 else list(eps))]
    except (TypeError, ValueError):
        raise GraphError(f"eps must be a number or a list of numbers, got {eps!r}") from None
    if name == "pgd" and norm_name(attack_kwargs.get("norm", "inf")) == "2":
        name = "pgd_l2"
    targeted = bool(attack_kwargs.get("targeted", False))
    clean_pred = logits(model, x, backend).argmax(1)
    correct = clean_pred == y
    report = RobustnessReport(name, len(x), mean(correct), int(correct.sum()))
    params = inspect.signature(fn).parameters
    kwargs = dict(attack_kwargs)
    if index is not None and "index" in params:
        kwargs["index"] = index
    builtin = isinstance(attack, str)
    if builtin:  # collect the masking symptoms into the rows instead of warning
        kwargs.update(return_report=True, backend=backend)
        if "on_masking" in params:
            kwargs["on_masking"] = "ignore"
    for e in eps:
        if builtin:
            x_adv, rep = fn(model, x, y, e, **kwargs)
        else:
            x_adv, rep = fn(model, x, y, e, **kwargs), None
        pred = logits(model, np.asarray(x_adv), backend).argmax(1)
        if targeted:
            classes = num_classes(model, tuple(x.shape[1:]), backend)
            success = correct & (pred == targets(True, attack_kwargs.get("target"), y, classes))
        else:
            success = correct & (pred != y)
        d = np.asarray(x_adv).astype(np.float64) - x.astype(np.float64)
        d_inf, d_2 = linf(d), l2(d)
        report.rows.append({
            "eps": e, "robust_acc": mean(pred == y), "success_rate":
            float(success.sum() / correct.sum()) if correct.any() else float("nan"),
            "n_success": int(success.sum()), "n_correct": int(correct.sum()),
            "mean_linf": mean(d_inf), "max_linf": float(d_inf.max()) if len(d_inf) else float("nan"),
            "mean_l2": mean(d_2), "max_l2": float(d_2.max()) if len(d_2) else float("nan"),
            "zero_grad": 0 if rep is None else len(rep.zero_grad),
            "nonfinite": 0 if rep is None else len(rep.nonfinite)})
        report.details.append(None if rep is None else rep.details)
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
