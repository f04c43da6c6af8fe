"""A/B benchmark of two graphc source trees on the W-mlp training step (784-512-256-10, batch 256,
float32, SGD via updates=, C backend): is a refactoring free?

    python bench/ab_trees.py OLD_TREE NEW_TREE [--rounds 7] [--repeats 30] [--threads 2]
    python bench/ab_trees.py OLD_TREE NEW_TREE --turns 200 [--repeats 10] [--threads 2]

Each tree must have its C extension built in place (python setup.py build_ext --inplace). Every
measurement runs in its own Python process (PYTHONPATH=<tree>), the two trees alternating round
by round, so neither shares a thread pool or a warm cache with the other; a round's number is
the median of `repeats` steps. Prints the machine, per-round medians, the median over rounds and
the ratio NEW/OLD, and the C arena bytes of each tree's plan (memory must not grow).

--turns N (ping-pong): both trees' processes stay alive and take turns, `repeats` steps each, N
times; the result is the median (and quartiles) of the per-turn ratios NEW/OLD. A turn lasts
tens of milliseconds, so the two trees see the same spell of the machine and its slow and fast
spells cancel. On the noisy 2-core Zen 4 VM (2026-12-03) two copies of one tree gave 0.942 with
15 rounds but 0.996 (quartiles 0.967-1.016) with 200 turns. Only one process runs at a time (the
other waits on its pipe; graphc's idle workers sleep after ~50 us), so the pools do not fight.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETUP = r"""
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


def median_step_s():
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
"""

CHILD = SETUP + r"""
median = median_step_s()
runner = next(iter(f._plans.values()))[1]
print(json.dumps({"median_ms": median * 1e3, "arena_bytes": int(runner.lowered.arena_bytes),
                  "steps": len(runner.lowered.plan.steps), "segments": runner.segments}))
"""

PINGPONG_CHILD = SETUP + r"""
print("ready", flush=True)
for _ in sys.stdin:
    print(median_step_s(), flush=True)
"""


def _tree_env(tree: str) -> dict:
    return dict(os.environ, PYTHONPATH=os.path.abspath(tree), GRAPHC_BACKEND="c")


def pingpong(trees: list, turns: int, repeats: int, threads: int) -> list:
    """Per-turn median step times (seconds) of each tree, the trees alternating turn by turn."""
    procs = [subprocess.Popen([sys.executable, "-c", PINGPONG_CHILD, str(repeats), str(threads)],
                              env=_tree_env(t), cwd=os.path.abspath(t), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for t in trees]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a tree's step did not start (run it alone to see why)")
        times: list = [[] for _ in trees]
        for turn in range(turns):
            for i in (range(len(trees)) if turn % 2 == 0 else reversed(range(len(trees)))):
                procs[i].stdin.write("go\n")
                procs[i].stdin.flush()
                times[i].append(float(procs[i].stdout.readline()))
        return times
    finally:
        for p in procs:
            p.stdin.close()
            p.wait()


def measure(tree: str, repeats: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(repeats), str(threads)], env=_tree_env(tree),
                         capture_output=True, text=True, check=True, cwd=os.path.abspath(tree))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--turns", type=int, default=0, help="ping-pong mode with this many turns (see above)")
    args = p.parse_args()
    sys.path.insert(0, os.path.abspath(args.new))
    from graphc.tools.bench import machine_info
    info = machine_info(args.threads)
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, graphc threads {args.threads}, "
          f"Python {info['python']}, NumPy {info['numpy']}, {info['date']}")
    if args.turns:
        old, new = pingpong([args.old, args.new], args.turns, args.repeats, args.threads)
        ratios = [n / o for o, n in zip(old, new)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"old {args.old}: median {statistics.median(old) * 1e3:.3f} ms; new {args.new}: "
              f"{statistics.median(new) * 1e3:.3f} ms ({args.turns} turns of {args.repeats} steps)")
        print(f"new / old: {statistics.median(ratios):.3f} (per-turn ratios, quartiles {q1:.3f}-{q3:.3f})")
        return 0
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
