"""Robustness evaluation sharded over a Dask cluster: evaluate() and sweep().

The points are cut into chunks of `chunk` rows; the model goes once to every worker and each
chunk to one, and one task runs per chunk × attack × ε (plus one per chunk for the clean
predictions). Model and chunks travel as tasks that return them, so the scheduler can rebuild
them when a worker dies: its tasks are re-run elsewhere and the result does not change. A task
returns per-sample results only (prediction after the attack, ‖δ‖∞, ‖δ‖₂, gradient-masking flags;
the adversarial inputs too with keep_adversarial=True), and the client assembles the same
RobustnessReport as the serial graphc.attacks.evaluate.

Equal to serial: every built-in attack receives `index`, the global indices of the chunk's rows,
and seeds each example's randomness from (seed, index), so an example's adversarial input does
not depend on the chunk it landed in, the chunk size or the number of workers. What remains is
floating point: a row's logits and gradient are bitwise the same in any batch when the kernels sum
a row in an order that does not depend on how many rows a call has. graphc's C GEMM and OpenBLAS
choose kernels by size (graphc: tiny products take an unpacked path), so a row's values may differ
in the last bit between a 7-row and a 512-row batch. L∞ attacks (FGSM, BIM, PGD, APGD, Square) only
use signs and argmaxes of those values, and give identical results unless a value is within
rounding of a tie; L2 steps use the gradient's magnitude and agree to rounding. A chunk that is a
multiple of the attack's batch_size (512 by default; e.g. the default chunk of 1024) gives every
batch the same rows as the serial run, and then all results are bitwise identical.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import distributed as dd
import numpy as np

from ..adversarial import attacks as A
from ..ir.errors import GraphError
from ..learn.train import predict_logits
from .cluster import ClientLike, located, n_workers, result_or_raise, ship, using_client

__all__ = ["evaluate", "sweep", "EvaluationReport", "SweepReport"]

AttackSpec = Union[str, Callable, tuple]  # a name, a callable, or (name or callable, {its own kwargs})


# -- attacks by name or callable ----------------------------------------------------------------
@dataclass(frozen=True)
class _Attack:
    """An attack as the tasks see it: built-ins travel by name (looked up on the worker)."""

    name: str  # the report's name, as graphc.attacks.evaluate names it
    attack: Union[str, Callable]  # a name in graphc.attacks, or a callable(model, x, y, eps, **kwargs)
    takes_index: bool
    kwargs: dict  # the attack's keyword arguments: the common ones updated with its own

    @property
    def builtin(self) -> bool:
        return isinstance(self.attack, str)

    def function(self) -> Callable:
        return _builtin(self.attack) if self.builtin else self.attack


def _builtin(name: str) -> Optional[Callable]:
    """graphc.attacks.ATTACKS[name], else a public attack function of graphc.attacks (e.g. autoattack):
    one that takes (model, x, y, eps, ...)."""
    fn = A.ATTACKS.get(name)
    if fn is None and not name.startswith("_") and name not in ("evaluate", "adversarial_training"):
        fn = getattr(A, name, None)
        try:
            params = list(inspect.signature(fn).parameters)[:4] if inspect.isfunction(fn) else []
        except (TypeError, ValueError):
            params = []
        fn = fn if len(params) == 4 and params[3] == "eps" else None
    return fn


def _resolve(attack: AttackSpec, common: dict) -> _Attack:
    kwargs = dict(common)
    if isinstance(attack, tuple):
        if len(attack) != 2 or not isinstance(attack[1], dict):
            raise GraphError(f"an attack with its own arguments is a pair (attack, {{keyword: value}}), got {attack!r}")
        attack, own = attack
        kwargs.update(own)
    target = kwargs.get("target")
    if target is not None and np.ndim(target) > 0:
        kwargs["target"] = np.asarray(target)
    if isinstance(attack, str):
        if _builtin(attack) is None:
            raise GraphError(f"unknown attack {attack!r}; choose one of {sorted(A.ATTACKS)} or pass a callable")
        name = attack
        if name == "pgd" and A._norm_name(kwargs.get("norm", "inf")) == "2":
            name = "pgd_l2"
        return _Attack(name, attack, True, kwargs)
    if callable(attack):
        try:
            params = inspect.signature(attack).parameters.values()
        except (TypeError, ValueError):
            params = []
        takes = any(p.name == "index" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        return _Attack(getattr(attack, "__name__", "attack"), attack, takes, kwargs)
    raise GraphError(f"an attack is a name ({sorted(A.ATTACKS)}) or a callable(model, x, y, eps, **kwargs), "
                     f"got {type(attack).__name__}")


def _attack_list(attacks) -> list:
    if isinstance(attacks, str) or callable(attacks) or (isinstance(attacks, tuple) and len(attacks) == 2
                                                         and isinstance(attacks[1], dict)):
        return [attacks]
    try:
        out = list(attacks)
    except TypeError:
        raise GraphError(f"attacks must be a name, a callable or a sequence of them, got {attacks!r}") from None
    if not out:
        raise GraphError("attacks is empty: name at least one attack, e.g. attacks=('pgd',)")
    return out


def _eps_list(eps) -> list:
    try:
        out = [float(e) for e in ([eps] if np.ndim(eps) == 0 else list(eps))]
    except (TypeError, ValueError):
        raise GraphError(f"eps must be a number or a list of numbers, got {eps!r}") from None
    if not out:
        raise GraphError("eps is empty: give at least one attack budget")
    return out


# -- the tasks (run on the workers) ----------------------------------------------------------------
def _clean_task(model, data, lo: int, backend):
    x, _ = data
    with located(f"clean predictions on rows {lo}:{lo + len(x)}"):
        logits = predict_logits(model, x, backend=backend)
    return logits.argmax(1), logits.shape[1]


def _attack_task(model, data, lo: int, attack: _Attack, eps: float, backend, keep: bool) -> dict:
    x, y = data
    index = np.arange(lo, lo + len(x), dtype=np.int64)
    kw = dict(attack.kwargs)
    if "target" in kw and np.ndim(kw["target"]) > 0:  # a per-example target array: this chunk's part
        kw["target"] = kw["target"][lo:lo + len(x)]
    with located(f"{attack.name} at eps={eps:g} on rows {lo}:{lo + len(x)}"):
        fn = attack.function()
        if fn is None:
            raise GraphError(f"attack {attack.attack!r} does not exist in this worker's graphc "
                             f"(is the same graphc version installed on every worker?)")
        if attack.builtin:
            kw.update(return_report=True, on_masking="ignore", backend=backend, index=index)
            x_adv, rep = fn(model, x, y, eps, **kw)
        else:
            if attack.takes_index:
                kw["index"] = index
            x_adv, rep = fn(model, x, y, eps, **kw), None
        x_adv = np.asarray(x_adv)
        if x_adv.shape != x.shape:
            raise GraphError(f"the attack returned shape {x_adv.shape} for inputs of shape {x.shape}")
        pred = predict_logits(model, x_adv, backend=backend).argmax(1)
    d = x_adv.astype(np.float64) - x.astype(np.float64)
    zero, nonfinite = np.zeros(len(x), bool), np.zeros(len(x), bool)
    if rep is not None:
        zero[np.asarray(rep.zero_grad, np.int64)] = True
        nonfinite[np.asarray(rep.nonfinite, np.int64)] = True
    return {"pred": pred, "linf": np.abs(A._flat(d)).max(axis=1) if d.size else np.zeros(len(x)),
            "l2": A._l2(d), "zero": zero, "nonfinite": nonfinite, "x_adv": x_adv if keep else None}


# -- reports --------------------------------------------------------------------------------------
def _robustness(attack: _Attack, y: np.ndarray, index: np.ndarray, clean_pred: np.ndarray, classes: int, eps: list,
                per_eps: list) -> A.RobustnessReport:
    """The RobustnessReport of graphc.attacks.evaluate, from per-sample results (same formulas)."""
    n = len(y)
    correct = clean_pred == y
    report = A.RobustnessReport(attack.name, n, float(correct.mean()) if n else float("nan"), int(correct.sum()))
    targeted = bool(attack.kwargs.get("targeted", False))
    target = attack.kwargs.get("target")
    if target is not None and np.ndim(target) > 0:
        target = target[index]  # the rows this report covers
    for e, r in zip(eps, per_eps):
        pred = r["pred"]
        if targeted:
            success = correct & (pred == A._targets(True, target, y, classes))
        else:
            success = correct & (pred != y)
        linf, l2 = r["linf"], r["l2"]
        report.rows.append({
            "eps": e, "robust_acc": A._mean(pred == y), "success_rate":
            float(success.sum() / correct.sum()) if correct.any() else float("nan"),
            "n_success": int(success.sum()), "n_correct": int(correct.sum()),
            "mean_linf": A._mean(linf), "max_linf": float(linf.max()) if len(linf) else float("nan"),
            "mean_l2": A._mean(l2), "max_l2": float(l2.max()) if len(l2) else float("nan"),
            "zero_grad": int(r["zero"].sum()), "nonfinite": int(r["nonfinite"].sum())})
    return report


@dataclass
class EvaluationReport:
    """Robustness of one model under several attacks, computed on a cluster.

    `reports[attack]` (or `report[attack]`) is the RobustnessReport graphc.attacks.evaluate gives
    for that attack. A run that was cancelled (Ctrl-C) or ran past its timeout returns what
    finished: complete=False, the reports cover the rows in `index` only, and `missing` lists the
    row ranges [lo, hi) that did not finish. `adversarial[(attack, eps)]` holds the adversarial
    inputs of the covered rows when keep_adversarial=True."""

    reports: dict
    n: int
    index: np.ndarray
    complete: bool = True
    missing: list = field(default_factory=list)
    chunk: int = 0
    tasks: int = 0
    workers: int = 0
    seconds: float = 0.0
    adversarial: dict = field(default_factory=dict)

    def __getitem__(self, attack: str) -> A.RobustnessReport:
        return self.reports[attack]

    def __iter__(self):
        return iter(self.reports)

    def __len__(self) -> int:
        return len(self.reports)

    def status(self) -> str:
        done = "complete" if self.complete else (f"INCOMPLETE: {len(self.index)} of {self.n} rows finished; "
                                                 f"missing rows {_ranges_text(self.missing)}")
        return (f"{self.n} examples in chunks of {self.chunk}, {self.tasks} tasks on {self.workers} workers, "
                f"{self.seconds:.1f} s; {done}")

    def table(self) -> str:
        return "\n\n".join([self.status()] + [r.table() for r in self.reports.values()])

    def to_dict(self) -> dict:
        return {"n": self.n, "complete": self.complete, "missing": [list(m) for m in self.missing],
                "reports": {k: r.to_dict() for k, r in self.reports.items()}}

    def __str__(self) -> str:
        return self.table()


def _ranges_text(ranges: list) -> str:
    text = ", ".join(f"{lo}:{hi}" for lo, hi in ranges[:6])
    return text + (f" and {len(ranges) - 6} more ranges" if len(ranges) > 6 else "")


# -- one model's evaluation: submit, then assemble -----------------------------------------------------
class _Job:
    """The tasks of one model's evaluation and the assembly of its report."""

    def __init__(self, model, attacks: list, eps: list, backend, keep: bool):
        self.model, self.attacks, self.eps = model, attacks, eps
        self.backend, self.keep = backend, keep
        self.futures: dict = {}  # future -> ("clean", k) or ("attack", k, a, j)

    def submit(self, client, chunks: list, data_futures: list) -> None:
        model_f = ship(client, self.model)
        for k, ((lo, _), data) in enumerate(zip(chunks, data_futures)):
            f = client.submit(_clean_task, model_f, data, lo, self.backend, pure=False)
            self.futures[f] = ("clean", k)
            for a, attack in enumerate(self.attacks):
                for j, e in enumerate(self.eps):
                    f = client.submit(_attack_task, model_f, data, lo, attack, e, self.backend, self.keep,
                                      pure=False)
                    self.futures[f] = ("attack", k, a, j)

    def assemble(self, results: dict, chunks: list, y: np.ndarray, n: int, **info) -> EvaluationReport:
        need = 1 + len(self.attacks) * len(self.eps)
        got: dict = {}
        for f, key in self.futures.items():
            if f in results:
                got.setdefault(key[1], {})[key] = results[f]
        done = [k for k in range(len(chunks)) if len(got.get(k, ())) == need]
        missing = [chunks[k] for k in sorted(set(range(len(chunks))) - set(done))]
        index = np.concatenate([np.arange(*chunks[k]) for k in done]) if done else np.zeros(0, np.int64)
        yi = y[index]
        clean = np.concatenate([got[k][("clean", k)][0] for k in done]) if done else np.zeros(0, np.int64)
        classes = got[done[0]][("clean", done[0])][1] if done else 0
        reports, adversarial = {}, {}
        for a, attack in enumerate(self.attacks):
            per_eps = []
            for j, e in enumerate(self.eps):
                parts = [got[k][("attack", k, a, j)] for k in done]
                per_eps.append({key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
                                for key in ("pred", "linf", "l2", "zero", "nonfinite")})
                if self.keep and parts:
                    adversarial[(attack.name, e)] = np.concatenate([p["x_adv"] for p in parts])
            reports[attack.name] = _robustness(attack, yi, index, clean, classes, self.eps, per_eps)
        return EvaluationReport(reports, n, index, complete=not missing, missing=missing,
                                adversarial=adversarial, **info)


def _chunks(n: int, chunk) -> list:
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise GraphError(f"chunk must be a positive int (rows per task), got {chunk!r}")
    return [(lo, min(lo + int(chunk), n)) for lo in range(0, n, int(chunk))]


def _progress_bar(total: int, progress: Optional[bool], desc: str):
    import sys
    show = progress if progress is not None else sys.stderr.isatty()
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are an optional extra
        return None
    return tqdm(total=total, desc=desc, unit="task", leave=False)


def _collect(client, futures: list, progress: Optional[bool], timeout: Optional[float], desc: str) -> dict:
    """{future: result} of the futures as they finish. Ctrl-C or the timeout ends the wait early
    (the unfinished tasks are cancelled, and missing from the results); a task's error is raised."""
    results: dict = {}
    bar = _progress_bar(len(futures), progress, desc)
    try:
        for f in dd.as_completed(futures, timeout=timeout):
            results[f] = result_or_raise(f)
            if bar is not None:
                bar.update(1)
    except (KeyboardInterrupt, TimeoutError, dd.TimeoutError):
        pass  # what finished is reported, marked incomplete
    finally:
        if bar is not None:
            bar.close()
        unfinished = [f for f in futures if f not in results]
        if unfinished:
            client.cancel(unfinished)
    return results


def _prepare(model, X, y, attacks, eps, attack_kwargs: dict):
    x, y = A._check_data(model, X, y)
    specs = [_resolve(a, attack_kwargs) for a in _attack_list(attacks)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise GraphError(f"attacks must have distinct names, got {names}")
    for s in specs:
        target = s.kwargs.get("target")
        if target is not None and np.ndim(target) > 0 and np.shape(target)[0] != len(x):
            raise GraphError(f"target must be one class or one class per example ({len(x)}), got shape "
                             f"{np.shape(target)}")
    return x, y, specs, _eps_list(eps)


def evaluate(model, X: np.ndarray, y: np.ndarray, attacks: Union[AttackSpec, Sequence[AttackSpec]] = ("pgd",),
             eps: Sequence[float] = (0.05, 0.1, 0.2), client: ClientLike = None, chunk: int = 1024,
             backend: Optional[str] = None, keep_adversarial: bool = False, progress: Optional[bool] = None,
             timeout: Optional[float] = None, **attack_kwargs) -> EvaluationReport:
    """Clean and robust accuracy of `model` on (X, y) under each attack at each ε, on a Dask cluster.

    attacks: names from graphc.attacks ('fgsm', 'bim', 'pgd', 'pgd_l2', and 'autoattack' or any
    other public attack function where graphc.attacks has one) or callables(model, x, y, eps,
    **kwargs) -> x_adv (a callable that takes `index` gets the rows' global indices). Extra keyword
    arguments go to every attack, as in graphc.attacks.evaluate (steps=20, seed=1, norm=2, ...);
    a pair (attack, {keyword: value}) gives one attack arguments of its own, e.g.
    attacks=("fgsm", ("pgd", {"steps": 20, "seed": 1})).
    client: a dask.distributed Client, an address for connect() ("local:4", "tcp://host:8786"), or
    None (the current Dask client, else a local cluster for this call). chunk: rows per task.
    timeout: seconds to wait; then, as after Ctrl-C, what finished is returned (complete=False).

    report[name] equals graphc.attacks.evaluate(model, X, y, name, eps, **attack_kwargs) whatever
    the chunk size and worker count (exactly so for L∞ attacks and for chunks that are multiples of
    the attack's batch_size; see the module docstring). A task that raises stops the run with its
    GraphError, naming the attack, ε, the rows of its chunk and the worker.

    >>> from graphc import distributed as gd                               # doctest: +SKIP
    >>> with gd.connect("local:2") as client:                              # doctest: +SKIP
    ...     rep = gd.evaluate(model, X, y, attacks=("fgsm", "pgd"), eps=(0.05, 0.1), client=client)
    >>> print(rep["pgd"].table())                                          # doctest: +SKIP
    """
    x, y, specs, eps = _prepare(model, X, y, attacks, eps, attack_kwargs)
    return _run([(None, model)], x, y, specs, eps, client, chunk, backend, keep_adversarial, progress, timeout,
                "graphc evaluate")[None]


def _run(models: list, x, y, specs, eps, client, chunk, backend, keep, progress, timeout, desc) -> dict:
    start = time.perf_counter()
    chunks = _chunks(len(x), chunk)
    jobs = [(name, _Job(model, specs, eps, backend, keep)) for name, model in models]
    if not chunks:  # no examples: nothing to distribute
        return {name: job.assemble({}, [], y, 0, chunk=int(chunk)) for name, job in jobs}
    with using_client(client) as c:
        data = [ship(c, (x[lo:hi], y[lo:hi])) for lo, hi in chunks]
        for _, job in jobs:
            job.submit(c, chunks, data)
        futures = [f for _, job in jobs for f in job.futures]
        results = _collect(c, futures, progress, timeout, desc)
        workers = n_workers(c)
    seconds = time.perf_counter() - start
    return {name: job.assemble(results, chunks, y, len(x), chunk=int(chunk), tasks=len(job.futures),
                               workers=workers, seconds=seconds) for name, job in jobs}


# -- sweeps -----------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    """Robust accuracy over ε for each model × attack: `reports[model]` is that model's
    EvaluationReport; rows() is the long table, table() the robustness curves side by side."""

    reports: dict
    eps: list

    def rows(self) -> list:
        out = []
        for model, rep in self.reports.items():
            for attack, r in rep.reports.items():
                for row in r.rows:
                    out.append({"model": model, "attack": attack, "clean_acc": r.clean_acc, "eps": row["eps"],
                                "robust_acc": row["robust_acc"], "success_rate": row["success_rate"]})
        return out

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.reports.values())

    def table(self) -> str:
        """One line per model × attack: clean accuracy, then robust accuracy at each ε."""
        cols = ["clean"] + [f"eps={e:g}" for e in self.eps]
        lines = []
        for model, rep in self.reports.items():
            for attack, r in rep.reports.items():
                lines.append((str(model), attack, [r.clean_acc] + list(r.robust_acc)))
        wm = max([5] + [len(m) for m, _, _ in lines])
        wa = max([6] + [len(a) for _, a, _ in lines])
        wc = max(8, *(len(c) for c in cols))
        head = f"{'model':<{wm}}  {'attack':<{wa}}  " + "  ".join(f"{c:>{wc}}" for c in cols)
        body = [f"{m:<{wm}}  {a:<{wa}}  " + "  ".join(f"{v:>{wc}.2%}" for v in vals) for m, a, vals in lines]
        note = "" if self.complete else "\n(INCOMPLETE: some chunks did not finish; see each report's status())"
        return "\n".join([head] + body) + note

    def plot(self, path: str, title: str = "robust accuracy vs eps") -> str:
        """Robustness curves (ε = 0 is the clean accuracy), one panel per attack; returns path."""
        import os

        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        attacks = list(dict.fromkeys(a for rep in self.reports.values() for a in rep.reports))
        fig, axes = plt.subplots(1, len(attacks), figsize=(4.5 * len(attacks), 3.6), squeeze=False)
        for ax, attack in zip(axes[0], attacks):
            for model, rep in self.reports.items():
                if attack in rep.reports:
                    r = rep.reports[attack]
                    ax.plot([0.0] + list(r.eps), [r.clean_acc] + list(r.robust_acc), marker="o", label=str(model))
            ax.set(title=attack, xlabel="eps", ylabel="accuracy", ylim=(-0.02, 1.02))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def __str__(self) -> str:
        return self.table()


def sweep(models: Union[Mapping[str, Any], Sequence[Any]], X: np.ndarray, y: np.ndarray,
          attacks: Union[AttackSpec, Sequence[AttackSpec]] = ("fgsm", "pgd"),
          eps: Sequence[float] = (0.025, 0.05, 0.1, 0.2), client: ClientLike = None, chunk: int = 1024,
          backend: Optional[str] = None, progress: Optional[bool] = None, timeout: Optional[float] = None,
          **attack_kwargs) -> SweepReport:
    """Robust accuracy of every model under every attack at every ε: all models' tasks go to the
    cluster at once (the data chunks are shipped once), one EvaluationReport per model.

    models: {name: model} or a list (named by position). Returns a SweepReport: .table(), .rows(),
    .plot(path) (robustness curves), .reports[name][attack] (RobustnessReport).

    >>> sw = gd.sweep({"standard": m1, "adv-trained": m2}, X, y, attacks=("fgsm", "pgd"),
    ...               eps=(0.05, 0.1, 0.2), client=client)                  # doctest: +SKIP
    >>> print(sw.table()); sw.plot("robustness.png")                        # doctest: +SKIP
    """
    named = list(models.items()) if isinstance(models, Mapping) else [(f"model{i}", m) for i, m in enumerate(models)]
    if not named:
        raise GraphError("sweep needs at least one model")
    x, y, specs, eps = _prepare(named[0][1], X, y, attacks, eps, attack_kwargs)
    for _, model in named[1:]:
        A._check_data(model, x[:0], y[:0])
    reports = _run(named, x, y, specs, eps, client, chunk, backend, False, progress, timeout, "graphc sweep")
    return SweepReport(reports, eps)
