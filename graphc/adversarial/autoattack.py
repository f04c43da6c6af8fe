"""An AutoAttack-style ensemble (Croce & Hein, ICML 2020): APGD-CE, then APGD-T (targeted DLR over the
most likely wrong classes), then the black-box Square attack, each run only on the points that are
still robust; a point counts as robust only if every attack failed on it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from ..ir.errors import GraphError
from . import _random
from ._common import Clip, check_clip, check_data, check_eps, check_labels, check_steps, logits, norm_name, num_classes
from .apgd import apgd
from .apgd import run as apgd_run
from .checks import CheckReport, black_box_beats_white_box, check_model, transfer_beats_white_box
from .square import square

__all__ = ["autoattack", "AutoAttackReport", "VERSIONS"]

# version -> (APGD steps, Square queries or 0 for no Square)
VERSIONS = {"standard": (100, 5000), "fast": (25, 0)}


@dataclass
class AutoAttackReport:
    """Robust accuracy after each stage (cumulative: a point fooled by any earlier stage stays fooled),
    the time each stage took, which stage broke each point, and the gradient-masking checks.

    stages: dicts with name, attacked (points it ran on), fooled (of those), robust_acc (after it), seconds.
    fooled_by: per sample, "" while robust, "clean" when misclassified without attack, else the stage."""

    eps: float
    norm: str
    version: str
    n: int
    clean_acc: float
    stages: list = field(default_factory=list)
    fooled_by: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    checks: CheckReport = field(default_factory=CheckReport)
    seconds: float = 0.0

    @property
    def robust(self) -> np.ndarray:
        return self.fooled_by == ""

    @property
    def robust_acc(self) -> float:
        """The final worst case: the share of points no attack could flip."""
        return float(self.robust.mean()) if self.n else float("nan")

    def stage(self, name: str) -> dict:
        for s in self.stages:
            if s["name"] == name:
                return s
        raise KeyError(f"no stage {name!r}; ran {[s['name'] for s in self.stages]}")

    def to_dict(self) -> dict:
        return {"eps": self.eps, "norm": self.norm, "version": self.version, "n": self.n,
                "clean_acc": self.clean_acc, "robust_acc": self.robust_acc, "seconds": self.seconds,
                "stages": [dict(s) for s in self.stages],
                "checks": [{"name": c.name, "fired": c.fired, "detail": c.detail, "count": c.count}
                           for c in self.checks.checks]}

    def table(self) -> str:
        lines = [f"AutoAttack ({self.version}, L{'∞' if self.norm == 'inf' else '2'}, ε = {self.eps:g}) on "
                 f"{self.n} points: clean accuracy {self.clean_acc:.2%}, robust accuracy {self.robust_acc:.2%} "
                 f"({self.seconds:.1f} s)",
                 f"  {'stage':10s} {'attacked':>8s} {'fooled':>7s} {'robust acc':>10s} {'seconds':>8s}"]
        for s in self.stages:
            lines.append(f"  {s['name']:10s} {s['attacked']:>8d} {s['fooled']:>7d} {s['robust_acc']:>10.2%} "
                         f"{s['seconds']:>8.2f}")
        lines.append("  checks:")
        lines.append(self.checks.table())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def autoattack(model, x: np.ndarray, y: np.ndarray, eps: float, norm: Union[str, float] = "inf",
               version: str = "standard", seed: int = 0, index: Optional[np.ndarray] = None, clip: Clip = (0, 1),
               n_target_classes: int = 9, steps: Optional[int] = None, queries: Optional[int] = None,
               surrogate=None, batch_size: int = 512, backend: Optional[str] = None, warn: bool = True
               ) -> tuple[np.ndarray, AutoAttackReport]:
    """Run the AutoAttack ensemble and return (x_adv, AutoAttackReport).

    version="standard": APGD-CE (100 steps), APGD-T (100 steps for each of the top `n_target_classes`
    wrong classes of the clean logits, or all C − 1 when fewer), Square (5,000 queries).
    version="fast": APGD-CE and APGD-T with 25 steps, no Square. `steps` and `queries` override.
    Each stage runs only on the points still robust. With fewer than 4 classes the targeted DLR loss
    is undefined and APGD-T uses the targeted cross-entropy (the dlr-classes check says so).
    `surrogate`: optionally a second model; PGD examples crafted on it are tried on the points the
    white-box stages left robust (the transfer check).

    Before attacking, check_model runs the model checks; after Square, the black-box check compares
    it with the white-box stages. Fired checks warn (unless warn=False) and are in report.checks.

    x_adv holds, for each broken point, the adversarial example of the stage that broke it, and the
    clean input for the robust ones. Deterministic for a seed, and per sample (see graphc.attacks:
    `index` gives the rows' global indices), so any chunking of the data gives bit-identical results.

    >>> from graphc import nn
    >>> m = nn.MLP([4, 8, 5]); x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    >>> x_adv, rep = autoattack(m, x, np.arange(8) % 5, 0.1, version="fast", warn=False)
    >>> [s["name"] for s in rep.stages], rep.robust_acc <= rep.clean_acc
    (['apgd-ce', 'apgd-t'], True)
    """
    norm = norm_name(norm)
    x, y = check_data(model, x, y)
    eps = check_eps(eps)
    if version not in VERSIONS:
        raise GraphError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
    default_steps, default_queries = VERSIONS[version]
    steps = default_steps if steps is None else check_steps(steps)
    queries = default_queries if queries is None else check_steps(queries, "queries", 0)
    n_target_classes = check_steps(n_target_classes, "n_target_classes")
    check_clip(x, clip, "autoattack")
    index = _random.default_index(index, len(x))
    seed = _random.check_seed(seed)
    start_all = time.perf_counter()
    report = AutoAttackReport(eps, norm, version, len(x), float("nan"), fooled_by=np.full(len(x), "", object))
    x_adv = x.copy()
    if len(x) == 0:
        return x_adv, report
    shape = tuple(x.shape[1:])
    classes = num_classes(model, shape, backend)
    check_labels(y, classes, "autoattack")
    report.checks = check_model(model, x, y, backend=backend, warn=warn, batch_size=batch_size)
    z_clean = logits(model, x, backend, batch_size)
    report.fooled_by[z_clean.argmax(1) != y] = "clean"
    report.clean_acc = report.robust_acc
    common = dict(eps=eps, norm=norm, clip=clip, seed=seed, batch_size=batch_size, backend=backend)

    def stage(name: str, run) -> np.ndarray:
        rows = np.flatnonzero(report.robust)
        t0 = time.perf_counter()
        fooled = np.zeros(0, np.int64)
        if len(rows):
            x_try = run(rows)
            broken = logits(model, x_try, backend, batch_size).argmax(1) != y[rows]
            fooled = rows[broken]
            x_adv[fooled] = x_try[broken]
            report.fooled_by[fooled] = name
        report.stages.append({"name": name, "attacked": int(len(rows)), "fooled": int(len(fooled)),
                              "robust_acc": report.robust_acc, "seconds": time.perf_counter() - t0})
        return fooled

    stage("apgd-ce", lambda rows: apgd(model, x[rows], y[rows], steps=steps, loss="ce", index=index[rows],
                                       on_masking="ignore", **common))

    # APGD-T: for rank r = 1, 2, ..., the r-th most likely class of the clean input (the true one is first)
    loss_t = "dlr" if classes >= 4 else "ce"
    order = np.argsort(-z_clean, axis=1, kind="stable")

    def targeted(rows):
        x_try = x[rows].copy()
        left = np.arange(len(rows))  # positions in rows still robust to APGD-T
        for rank in range(1, min(n_target_classes, classes - 1) + 1):
            if not len(left):
                break
            r = rows[left]
            found = apgd_run(model, x[r], y[r], eps, norm, steps, loss_t, True, order[r, rank], 1, 0.75, clip, seed,
                             index[r], batch_size, backend, "ignore", False, goal="misclassify", stream=(rank,))
            broken = logits(model, found, backend, batch_size).argmax(1) != y[r]
            x_try[left[broken]] = found[broken]
            left = left[~broken]
        return x_try
    stage("apgd-t", targeted)

    white_box_robust = report.robust.copy()
    if surrogate is not None:
        from .pgd import pgd
        fooled = stage("transfer", lambda rows: pgd(surrogate, x[rows], y[rows], eps, steps=steps, norm=norm,
                                                    clip=clip, seed=seed, index=index[rows], batch_size=batch_size,
                                                    backend=backend, on_masking="ignore"))
        report.checks.add(transfer_beats_white_box(fooled, int(white_box_robust.sum())), warn)
    if queries:
        fooled = stage("square", lambda rows: square(model, x[rows], y[rows], queries=queries, index=index[rows],
                                                     **common))
        report.checks.add(black_box_beats_white_box(fooled, int(white_box_robust.sum())), warn)
    report.seconds = time.perf_counter() - start_all
    return x_adv, report
