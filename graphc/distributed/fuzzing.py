"""Gradient-fuzzing campaigns on a Dask cluster: `graphc fuzz`, split into tasks with distinct seeds.

Each task runs graphc.verify.fuzz.run_fuzz (hypothesis draws random graphs; C vs NumPy vs float64
finite differences) for `examples_per_task` graphs with its own seed, seed·2³² + task number, so
the tasks of one campaign and of campaigns with other seeds never draw the same graphs. A task that
finds a failure shrinks it on its worker and sends back the reproducer's source; the client writes
the first failure (lowest task number, so the same seed gives the same reproducer) to `out`.
"""
from __future__ import annotations

import importlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import distributed as dd

from ..ir.errors import GraphError
from ..verify.fuzz import FuzzStats
from .cluster import ClientLike, located, n_workers, result_or_raise, using_client
from .evaluation import _progress_bar

__all__ = ["fuzz", "FuzzReport", "task_seed"]


def task_seed(seed: int, task: int) -> int:
    """The seed of task `task` of a campaign: distinct across tasks and across campaign seeds."""
    return int(seed) * 2 ** 32 + int(task)


@dataclass
class FuzzReport:
    """A campaign's totals (graphs, nodes, ops covered, failures, kinks), the first failure's message
    and the path of its reproducer. Falsy when a failure was found."""

    stats: FuzzStats
    all_ops: list
    backends: list
    seed: int
    tasks: int = 0
    workers: int = 0
    failure: Optional[str] = None
    failure_task: Optional[int] = None
    reproducer: Optional[str] = None
    cpu_seconds: float = 0.0
    task_seconds: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        """The `graphc fuzz` summary line, then where it ran."""
        return (self.stats.summary(self.all_ops, self.backends, self.seed)
                + f" [{self.tasks} tasks on {self.workers} workers, {self.cpu_seconds:.1f} task-seconds]")


def _fuzz_task(task: int, seed: int, campaign_seed: int, examples: Optional[int], seconds: Optional[float],
               backends: list, dtype: Optional[str], max_nodes: int, ops: Optional[list], mode: str,
               imports: list, shrink_seconds: float) -> dict:
    with located(f"fuzz task {task} (seed {seed})"):
        for module in imports:  # e.g. a module registering extra ops: they must exist on the worker too
            importlib.import_module(module)
        from ..verify.fuzz import run_fuzz
        from ..verify.strategies import reproducer
        with warnings.catch_warnings():
            # Hypothesis warns when the global `random` state changes while it draws: in a worker,
            # Dask's own threads use it. The graphs come from hypothesis's seeded generator, not it.
            warnings.filterwarnings("ignore", message="Do not use the `random` module inside strategies")
            stats, failure = run_fuzz(max_examples=examples, seconds=seconds, seed=seed, backends=backends,
                                      dtype=dtype, max_nodes=max_nodes, ops=ops, mode=mode,
                                      chunk=max(1, min(50, examples or 50)), progress=False,
                                      shrink_seconds=shrink_seconds)
        out = {"stats": stats, "failure": None}
        if failure is not None:
            g, result = failure
            title = (f"graphc fuzz reproducer (campaign seed {campaign_seed}, task {task}, task seed {seed}, backends "
                     f"{', '.join(backends)}): a {len(g.nodes)}-node graph, shrunk by hypothesis.\n\n{result.message}")
            setup = "".join(f"import {m}  # noqa: F401 (registers what the graph uses)\n" for m in imports)
            out["failure"] = {"message": result.message, "nodes": len(g.nodes),
                              "source": reproducer(g, backends=backends, mode=mode, title=title, setup=setup,
                                                          edges=True)}
        return out


def fuzz(max_examples: Optional[int] = None, seed: int = 0, client: ClientLike = None,
         backends: Sequence[str] = ("c", "numpy"), *, seconds: Optional[float] = None, examples_per_task: int = 100,
         dtype: Optional[str] = None, max_nodes: int = 10, ops: Optional[Sequence[str]] = None, mode: str = "full",
         imports: Sequence[str] = (), out: str = "graphc_fuzz_repro.py", shrink_seconds: float = 60.0,
         progress: Optional[bool] = None) -> FuzzReport:
    """Run `max_examples` random graphs (or until `seconds` pass; 200 when neither is given) through
    graphc's gradient check on the cluster, `examples_per_task` graphs per task.

    backends: which backends to check ("c" is dropped with a warning where the extension is not
    built); dtype, max_nodes, ops, mode: as `graphc fuzz`. imports: modules to import first on the
    client and on every worker (e.g. one that registers extra ops; make them importable there, e.g.
    with client.upload_file). On the first failure, tasks after it are cancelled, the ones before
    it finish (so the first failure is the same for the same seed), and its reproducer is written
    to `out`. Returns a FuzzReport (falsy on failure; .summary() is the `graphc fuzz` line).

    >>> report = gd.fuzz(100_000, seed=1, client=client)        # doctest: +SKIP
    >>> print(report.summary())                                 # doctest: +SKIP
    """
    from ..ops import REGISTRY
    from ..verify.fuzz import _backends
    from ..verify.strategies import LEAVES

    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise GraphError(f"max_examples must be a positive int, got {max_examples!r}")
    if not isinstance(examples_per_task, int) or examples_per_task < 1:
        raise GraphError(f"examples_per_task must be a positive int, got {examples_per_task!r}")
    if not isinstance(seed, int) or seed < 0:
        raise GraphError(f"seed must be an int >= 0, got {seed!r}")
    if max_examples is None and seconds is None:
        max_examples = 200
    imports, ops = list(imports), (list(ops) if ops is not None else None)
    for module in imports:
        importlib.import_module(module)
    backends = _backends(",".join(backends))
    all_ops = sorted(name for name in REGISTRY if name not in LEAVES) if ops is None else list(ops)
    n_tasks = math.inf if max_examples is None else math.ceil(max_examples / examples_per_task)
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds

    def examples_of(k: int) -> int:
        if max_examples is None:
            return examples_per_task
        return min(examples_per_task, max_examples - k * examples_per_task)

    results: dict = {}
    first_failure: Optional[int] = None
    with using_client(client) as c:
        workers = n_workers(c)
        window = 2 * workers  # tasks in flight: enough to keep every worker busy, few to cancel
        pending: dict = {}
        ac = dd.as_completed()
        bar = _progress_bar(None if max_examples is None else max_examples, progress, "graphc fuzz")
        submitted = 0

        def submit_more() -> None:
            nonlocal submitted
            while (len(pending) < window and submitted < n_tasks and first_failure is None
                   and (deadline is None or time.monotonic() < deadline)):
                k = submitted
                left = None if deadline is None else max(0.1, deadline - time.monotonic())
                f = c.submit(_fuzz_task, k, task_seed(seed, k), seed, examples_of(k), left, backends, dtype,
                             max_nodes, ops, mode, imports, shrink_seconds, pure=False)
                pending[f] = k
                ac.add(f)
                submitted += 1

        try:
            submit_more()
            for f in ac:
                k = pending.pop(f, None)
                if k is None:  # cancelled
                    continue
                res = result_or_raise(f)
                results[k] = res
                if bar is not None:
                    bar.update(res["stats"].tried)
                if res["failure"] is not None and (first_failure is None or k < first_failure):
                    first_failure = k
                    later = [g for g, j in pending.items() if j > k]
                    for g in later:
                        del pending[g]
                    c.cancel(later)
                submit_more()
        finally:
            if bar is not None:
                bar.close()
            if pending:
                c.cancel(list(pending))
    counted = sorted(k for k in results if first_failure is None or k <= first_failure)
    stats = FuzzStats()
    for k in counted:
        s = results[k]["stats"]
        stats.tried += s.tried
        stats.nodes += s.nodes
        stats.kinks += s.kinks
        stats.failures += s.failures
        stats.shrink_steps += s.shrink_steps
        stats.count_from(s)
    stats.seconds = time.monotonic() - start
    report = FuzzReport(stats, all_ops, backends, seed, tasks=len(counted), workers=workers,
                        cpu_seconds=sum(results[k]["stats"].seconds for k in counted),
                        task_seconds=[results[k]["stats"].seconds for k in counted])
    if first_failure is not None:
        failure = results[first_failure]["failure"]
        path = os.path.abspath(out)
        with open(path, "w") as fh:
            fh.write(failure["source"])
        report.failure, report.failure_task, report.reproducer = failure["message"], first_failure, path
    return report
