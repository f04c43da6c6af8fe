"""A/B benchmark of two graphc source trees on the W-mlp training step (784-512-256-10, batch 256,
float32, SGD via updates=, C backend): is a refactoring free?

    python bench/ab_trees.py OLD_TREE NEW_TREE [--rounds 7] [--repeats 30] [--threads 2]

Each tree must have its C extension built in place (python setup.py build_ext --inplace). Every
measurement runs in its own Python process (PYTHONPATH=<tree>), the two trees alternating round
by round, so neither shares a thread pool or a warm cache with the other; a round's number is
the median of `repeats` steps. Prints the machine, per-round medians, the median over rounds and
the ratio NEW/OLD, and the C arena bytes of each tree's plan (memory must not grow).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import graphc as gc
try:
    from graphc.tools.bench.workloads import MLP_SIZES, _mlp_data, graphc_mlp_step
except ImportError:  # trees from before the package layout
    from graphc.bench.workloads import MLP_SIZES, _mlp_data, graphc_mlp_step
repeats, threads = int(sys.argv[1]), int(sys.argv[2])
gc.set_num_threads(threads)
weights, x, y = _mlp_data(256, MLP_SIZES, "float32")
step, params, f = graphc_mlp_step(weights, MLP_SIZES, "float32", 0.01, "c")
for _ in range(3):
    step(x, y)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    step(x, y)
    times.append(time.perf_counter() - t0)
times.sort()
runner = next(iter(f._plans.values()))[1]
print(json.dumps({"median_ms": times[len(times) // 2] * 1e3, "arena_bytes": int(runner.lowered.arena_bytes),
                  "steps": len(runner.lowered.plan.steps), "segments": runner.segments}))
"""


def measure(tree: str, repeats: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), GRAPHC_BACKEND="c")
    out = subprocess.run([sys.executable, "-c", CHILD, str(repeats), str(threads)], env=env, capture_output=True,
                         text=True, check=True, cwd=os.path.abspath(tree))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.new))
    from graphc.tools.bench import machine_info
    info = machine_info(args.threads)
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, graphc threads {args.threads}, "
          f"Python {info['python']}, NumPy {info['numpy']}, {info['date']}")
    results: dict = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            results[name].append(measure(getattr(args, name), args.repeats, args.threads))
        old, new = results["old"][-1]["median_ms"], results["new"][-1]["median_ms"]
        print(f"round {r + 1}: old {old:.2f} ms, new {new:.2f} ms")
    med = {k: statistics.median(m["median_ms"] for m in v) for k, v in results.items()}
    for k in ("old", "new"):
        last = results[k][-1]
        print(f"{k:3s} {getattr(args, k)}: median {med[k]:.2f} ms over {args.rounds} rounds; C arena "
              f"{last['arena_bytes']:,} bytes, {last['steps']} plan steps, {last['segments']} C segment(s)")
    print(f"new / old: {med['new'] / med['old']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
