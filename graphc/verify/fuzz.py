"""`graphc fuzz`: random-graph gradient fuzzing with a three-way oracle.

Hypothesis draws random graphs (graphc.testing.graphs); each one's gradients are checked on
every selected backend against float64 central finite differences (gc.gradcheck), and the
backends against each other. A failing graph is shrunk by hypothesis to a minimal one, written
as a standalone Python reproducer, and the command exits with status 1.

    graphc fuzz --max-examples 200                 # C (if built) and NumPy, seed 0
    graphc fuzz --seconds 60 --seed 7 --backend numpy --dtype float32
    graphc fuzz --ops matmul,tanh,grad --max-nodes 12 --out repro.py
    graphc fuzz --max-examples 100000 --cluster local:8   # a campaign on Dask (or tcp://host:8786)
"""
from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

__all__ = ["main", "FuzzStats", "run_fuzz"]


@dataclass
class FuzzStats:
    tried: int = 0
    nodes: int = 0
    kinks: int = 0
    failures: int = 0
    shrink_steps: int = 0
    ops: dict = field(default_factory=dict)  # op -> graphs it ran in (built, differentiated or compiled)
    seconds: float = 0.0

    def count(self, ops) -> None:
        for op in ops:
            self.ops[op] = self.ops.get(op, 0) + 1

    def count_from(self, other: FuzzStats) -> None:
        """Add another campaign's per-op counts (tasks of a distributed campaign)."""
        for op, n in other.ops.items():
            self.ops[op] = self.ops.get(op, 0) + n

    def never_drawn(self, all_ops: Sequence[str]) -> list:
        return sorted(op for op in all_ops if op not in self.ops)

    def summary(self, all_ops: Sequence[str], backends: Sequence[str], seed: int) -> str:
        missing = self.never_drawn(all_ops)
        line = (f"graphc fuzz: {self.tried} graphs tried, {self.nodes} nodes checked, {len(all_ops) - len(missing)}/"
                f"{len(all_ops)} ops covered, {self.failures} failures ({self.kinks} at kinks; backends "
                f"{', '.join(backends)}; seed {seed}; {self.seconds:.1f} s)")
        per_op = ", ".join(f"{op} {self.ops[op]}" for op in sorted(self.ops, key=lambda o: (-self.ops[o], o)))
        line += f"\n  graphs per op: {per_op}"
        if missing:
            line += f"\n  never drawn: {', '.join(missing)}"
        return line


class _Progress:
    """tqdm when installed, else a carriage-return counter on stderr."""

    def __init__(self, total: Optional[int], enabled: bool):
        self.enabled, self.total, self._last = enabled, total, 0.0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, unit="graph", file=sys.stderr, leave=False, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, stats: FuzzStats, force: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = stats.tried
            self._bar.set_postfix(nodes=stats.nodes, failures=stats.failures, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if force or now - self._last > 0.2:
            self._last = now
            total = f"/{self.total}" if self.total else ""
            print(f"\rfuzz: {stats.tried}{total} graphs, {stats.nodes} nodes, {stats.failures} failures",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="graphc fuzz", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-examples", type=int, default=None,
                   help="graphs to try (default 200, or unlimited with --seconds)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same graphs)")
    p.add_argument("--backend", default="c,numpy",
                   help="comma-separated backends to check (default c,numpy; c is skipped if not built)")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="both",
                   help="dtype the graphs are built in (the check itself runs in float64)")
    p.add_argument("--max-nodes", type=int, default=10, help="ops per random graph, at most")
    p.add_argument("--ops", default=None, help="comma-separated ops to build graphs from (default: all)")
    p.add_argument("--mode", choices=["full", "fast"], default="full", help="gradcheck mode")
    p.add_argument("--out", default="graphc_fuzz_repro.py", help="where to write the reproducer of a failure")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one registering extra ops); the reproducer imports it too")
    p.add_argument("--chunk", type=int, default=50, help="examples per hypothesis run (each with its own seed)")
    p.add_argument("--shrink-seconds", type=float, default=60.0, help="time allowed for shrinking a failure")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-edges", action="store_true",
                   help="skip comparing the backends on edge values (0, -0, inf, NaN, 1e30) of each graph")
    p.add_argument("--require-coverage", action="store_true",
                   help="exit with status 1 when some registered op was never drawn (CI)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run the campaign on Dask (pip install 'graphc[distributed]'): local:N starts N local "
                        "worker processes, tcp://host:8786 uses a running scheduler; tasks of --examples-per-task "
                        "graphs with distinct seeds")
    p.add_argument("--examples-per-task", type=int, default=100, help="with --cluster: graphs per task (default 100)")
    return p.parse_args(list(argv))


def _backends(spec: str) -> list[str]:
    from ..backends import C_AVAILABLE
    wanted = [b.strip().lower() for b in spec.split(",") if b.strip()]
    out = []
    for b in wanted:
        if b not in ("c", "numpy"):
            raise SystemExit(f"graphc fuzz: unknown backend {b!r} (choose from c, numpy)")
        if b == "c" and not C_AVAILABLE:
            warnings.warn("graphc fuzz: the C extension is not built; skipping the C backend", RuntimeWarning,
                          stacklevel=2)
            continue
        if b not in out:
            out.append(b)
    if not out:
        raise SystemExit("graphc fuzz: no backend left to check")
    return out


def run_fuzz(*, max_examples: Optional[int], seconds: Optional[float], seed: int, backends: Sequence[str],
             dtype: Optional[str], max_nodes: int, ops: Optional[Sequence[str]], mode: str, chunk: int,
             progress: bool, shrink_seconds: float = 60.0, edges: bool = True) -> tuple[FuzzStats, Optional[tuple]]:
    """Run the property; returns the stats and, on failure, (minimal graph, GraphCheck).
    edges: also compare the backends on inputs with edge values (0, ±inf, NaN, ...)."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import Flaky, NoSuchExample

    from .strategies import GraphCheck, check_graph, graphs, prune

    stats = FuzzStats()
    start = time.monotonic()
    deadline = start + seconds if seconds else None
    if max_examples is None and deadline is None:
        max_examples = 200
    bar = _Progress(max_examples, progress)
    strategy = graphs(max_nodes=max_nodes, ops=ops, dtype=dtype)
    failure = None
    run = 0
    try:
        while True:
            if max_examples is not None and stats.tried >= max_examples:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            n = chunk if max_examples is None else min(chunk, max_examples - stats.tried)
            tried_before = stats.tried
            seen: dict = {}  # graph source -> failed?  (hypothesis replays; answers must not change)
            smallest: list = []  # the smallest failing graph so far, and when the first was found

            def condition(g, n=n, tried_before=tried_before, seen=seen, smallest=smallest):
                key = g.code() + repr(sorted((t.name, v.tobytes()) for t, v in g.values.items()))
                if key in seen:
                    return seen[key]
                if smallest:  # shrinking: hypothesis looks for a smaller failing graph
                    if time.monotonic() - smallest[1] > shrink_seconds:
                        return False  # shrink budget spent: keep the smallest failure so far
                    stats.shrink_steps += 1
                    failed = not check_graph(g, backends, mode, localize=False, edges=edges)
                    if failed and len(g.nodes) <= len(smallest[0].nodes):
                        smallest[0] = g
                elif stats.tried - tried_before >= n or (deadline is not None and time.monotonic() >= deadline):
                    return False  # budget spent: let hypothesis finish this run cheaply
                else:
                    result = check_graph(g, backends, mode, localize=False, edges=edges)
                    stats.tried += 1
                    stats.nodes += len(g.nodes)
                    stats.count(ops_exercised(g))
                    stats.kinks += result.status == "kink"
                    failed = not result
                    if failed:
                        stats.failures += 1
                        smallest[:] = [g, time.monotonic()]
                    bar.update(stats)
                seen[key] = failed
                return failed

            cfg = settings(max_examples=n, deadline=None, database=None,
                           suppress_health_check=list(HealthCheck))
            try:
                g = find(strategy, condition, settings=cfg, random=random.Random(seed * 100003 + run))
            except NoSuchExample:
                g = None
            except Flaky:  # e.g. a backend reading uninitialised memory: keep what failed
                g = None
            if smallest and (g is None or len(smallest[0].nodes) < len(g.nodes)):
                g = smallest[0]
            run += 1
            if g is not None:
                g = prune(g, lambda c: not check_graph(c, backends, mode, localize=False, edges=edges))
                result = check_graph(g, backends, mode, edges=edges)
                if result:  # it failed while searching but passes now: nondeterminism is a finding too
                    result = GraphCheck("fail", "FLAKY: this graph failed during the search but passes when "
                                                "re-run (a backend reading uninitialised memory, or a race?)")
                failure = (g, result)
                break
            if stats.tried == tried_before:  # hypothesis found nothing new to try
                break
    finally:
        bar.close()
        stats.seconds = time.monotonic() - start
    return stats, failure


def ops_exercised(g) -> set:
    """The registry ops a random graph runs: its own nodes, those of its gradient graph (backward
    ops), and those of its compiled plan (fused ops made by the passes), fused-program kernels
    counted as their ops."""
    from ..compiler.autodiff import grad
    from ..compiler.passes import run_pipeline
    from ..compiler.runtime import specialize
    from ..ir.graph import reachable
    from ..ops import fused_kernels
    floats = [t for t in g.inputs if t.dtype.kind == "f"]
    try:
        targets = [g.output] + list(grad(g.output, floats))
        arrays = [np.asarray(g.values[t]) for t in g.inputs]
        compiled = run_pipeline(specialize(targets, g.inputs, arrays, [], []))
    except Exception:  # noqa: BLE001 - the check itself reports graphs that do not compile
        return set(g.ops)
    ops = {n.op for n in reachable(targets + compiled) if n.inputs}
    kernels = fused_kernels()
    for n in reachable(compiled):
        if n.op == "fused_elementwise":
            ops |= {kernels[k][0].name for k, _, _ in n.attrs["program"] if k in kernels}
    return ops


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `graphc fuzz`; returns the exit status (0 green, 1 failure found)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    for mod in args.imports:
        importlib.import_module(mod)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("graphc fuzz needs hypothesis: pip install hypothesis (or graphc[test])", file=sys.stderr)
        return 2
    from ..ops import REGISTRY
    from .strategies import LEAVES, reproducer

    backends = _backends(args.backend)
    ops = [o.strip() for o in args.ops.split(",")] if args.ops else None
    dtype = None if args.dtype == "both" else args.dtype
    if args.cluster:
        return _main_on_cluster(args, backends, ops, dtype)
    try:
        stats, failure = run_fuzz(max_examples=args.max_examples, seconds=args.seconds, seed=args.seed,
                                  backends=backends, dtype=dtype, max_nodes=args.max_nodes, ops=ops,
                                  mode=args.mode, chunk=max(1, args.chunk), shrink_seconds=args.shrink_seconds,
                                  progress=not args.no_progress and sys.stderr.isatty(), edges=not args.no_edges)
    except KeyboardInterrupt:
        print("graphc fuzz: interrupted", file=sys.stderr)
        return 130
    all_ops = sorted(name for name in REGISTRY if name not in LEAVES) if ops is None else ops
    if failure is not None:
        g, result = failure
        title = (f"graphc fuzz reproducer (seed {args.seed}, backends {', '.join(backends)}): a {len(g.nodes)}-node "
                 f"graph, shrunk by hypothesis.\n\n{result.message}")
        setup = "".join(f"import {m}  # noqa: F401 (registers what the graph uses)\n" for m in args.imports)
        src = reproducer(g, backends=backends, mode=args.mode, title=title, setup=setup, edges=not args.no_edges)
        out = os.path.abspath(args.out)
        with open(out, "w") as fh:
            fh.write(src)
        print(f"graphc fuzz: FAILURE on a {len(g.nodes)}-node graph (after {stats.shrink_steps} shrink steps):")
        print("  " + result.message.replace("\n", "\n  "))
        print(f"reproducer written to {out} (run: python {args.out})")
    print(stats.summary(all_ops, backends, args.seed))
    if failure is not None:
        return 1
    missing = stats.never_drawn(all_ops)
    if args.require_coverage and missing:
        print(f"graphc fuzz: {len(missing)} op(s) never drawn (--require-coverage): {', '.join(missing)}",
              file=sys.stderr)
        return 1
    return 0


def _main_on_cluster(args: argparse.Namespace, backends: list, ops: Optional[list], dtype: Optional[str]) -> int:
    """`graphc fuzz --cluster ...`: the same campaign split into seeded tasks on Dask."""
    from ..distributed import fuzz as fuzz_on_cluster  # this command is a tool: it may use the layers below

    try:
        report = fuzz_on_cluster(args.max_examples, args.seed, client=args.cluster, backends=backends,
                                 seconds=args.seconds, examples_per_task=max(1, args.examples_per_task), dtype=dtype,
                                 max_nodes=args.max_nodes, ops=ops, mode=args.mode, imports=args.imports,
                                 out=args.out, shrink_seconds=args.shrink_seconds,
                                 progress=not args.no_progress and sys.stderr.isatty())
    except KeyboardInterrupt:
        print("graphc fuzz: interrupted", file=sys.stderr)
        return 130
    if not report:
        print(f"graphc fuzz: FAILURE in task {report.failure_task} (shrunk on its worker):")
        print("  " + report.failure.replace("\n", "\n  "))
        print(f"reproducer written to {report.reproducer} (run: python {args.out})")
    print(report.summary())
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
