"""Scale report of graphc.distributed: evaluate() with PGD on 1 and 2 local Dask workers against the
serial graphc.attacks.evaluate, the per-task overheads, and a model of the wall time at 8, 64 and
512 workers built from those measurements and Dask's documented ~1 ms of overhead per task.

    python bench/scale_distributed.py                 # 3 interleaved rounds (about 4 minutes on 2 cores)
    python bench/scale_distributed.py --rounds 1 --examples 3000 --json scale.json
    python bench/scale_distributed.py --malloc-check   # the serial attack under Dask's worker malloc settings

Each peer (serial, local:1, local:2) runs in its own process, rounds interleaved; medians are
reported with the machine, versions and thread counts. The serial peer and every worker run
graphc's kernels and BLAS on one thread. Wall times depend on what else the machine runs (the load
average is printed); CPU seconds (the serial process, or the sum over the workers, from getrusage)
do not, so the overhead per task and the model are computed from CPU time.

Also: data-parallel training throughput (samples/s) of graphc.distributed.train against gc.train
on the same batches (digits, the same MLP, global batch --train-batch, one epoch).

Workload: a 64-512-512-10 MLP trained on scikit-learn's digits; the 1,797 digits repeated to
--examples rows with a little uniform noise; PGD-L∞, random start, --steps steps, at ε = 0.05 and
0.1. Results of every peer are checked to be identical to the serial run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

DASK_TASK_OVERHEAD_S = 1e-3  # "Each task suffers about 1ms of overhead" (distributed.dask.org)
EPS = (0.05, 0.1)


# -- the workload -----------------------------------------------------------------------------------------
def workload(n: int):
    import graphc as gc
    from graphc import data, nn, optim
    s = data.load("digits", seed=0)
    X0 = np.concatenate([s.X_train, s.X_test])
    y0 = np.concatenate([s.y_train, s.y_test])
    model = nn.MLP([64, 512, 512, 10], seed=0)
    gc.train(model, s.X_train, s.y_train, epochs=3, optimizer=optim.Adam(0.005), seed=0, progress=False)
    reps = -(-n // len(X0))
    rng = np.random.default_rng(0)
    X = np.clip(np.tile(X0, (reps, 1))[:n] + rng.uniform(-0.02, 0.02, (n, X0.shape[1])), 0, 1).astype(np.float32)
    y = np.tile(y0, reps)[:n]
    return model, X, y


def attack_kwargs(steps: int) -> dict:
    return {"steps": steps, "seed": 0}


# -- peers (each in its own process) ------------------------------------------------------------------------
def _cpu() -> float:
    """CPU seconds of this process (all threads)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _train_data():
    from graphc import data, nn
    s = data.load("digits", seed=0)
    return nn.MLP([64, 512, 512, 10], seed=1), s.X_train, s.y_train


def peer_serial(args) -> dict:
    import graphc as gc
    from graphc import attacks, optim
    from graphc.learn.train import limit_threads
    model, X, y = workload(args.examples)
    load = os.getloadavg()[0]
    with limit_threads(1):
        start, cpu = time.perf_counter(), _cpu()
        rep = attacks.evaluate(model, X, y, "pgd", eps=EPS, **attack_kwargs(args.steps))
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu
        # CPU cost of one PGD step as a function of the batch size: a + b·rows (per call, per row);
        # (20 steps − 2 steps) / 18: the random start and the final check cancel out
        per_step = {}
        for rows in (8, 512):
            xb, yb = X[:rows], y[:rows]
            attacks.pgd(model, xb, yb, 0.1, steps=2)
            times = []
            for _ in range(5):
                t = _cpu()
                attacks.pgd(model, xb, yb, 0.1, steps=20, seed=0)
                t20 = _cpu() - t
                t = _cpu()
                attacks.pgd(model, xb, yb, 0.1, steps=2, seed=0)
                times.append((t20 - (_cpu() - t)) / 18)
            per_step[rows] = statistics.median(times)
        m, Xt, yt = _train_data()
        t = time.perf_counter()
        gc.train(m, Xt, yt, epochs=1, optimizer=optim.Adam(1e-3), batch_size=args.train_batch, seed=0, progress=False)
        train_s = time.perf_counter() - t
    b = (per_step[512] - per_step[8]) / (512 - 8)
    a = per_step[8] - 8 * b
    return {"seconds": seconds, "cpu_s": cpu, "load": load, "robust_acc": rep.robust_acc, "clean_acc": rep.clean_acc,
            "step_call_s": a, "step_row_s": b, "train_samples_per_s": len(Xt) / train_s,
            "train_params": [p.value.tolist() for p in m.parameters()][-1]}


def peer_cluster(args, workers: int) -> dict:
    import distributed as dd

    from graphc import distributed as gd
    from graphc import optim
    model, X, y = workload(args.examples)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    client = gd.connect(f"local:{workers}")
    client.wait_for_workers(workers)
    start_s = time.perf_counter() - t0
    try:
        workers_cpu = sum(client.run(_cpu).values())
        with dd.get_task_stream(client) as ts:
            t, cpu = time.perf_counter(), _cpu()
            wall_start = time.time()
            rep = gd.evaluate(model, X, y, attacks=("pgd",), eps=EPS, client=client, chunk=args.chunk, progress=False,
                              **attack_kwargs(args.steps))
            seconds, cpu = time.perf_counter() - t, _cpu() - cpu
        workers_cpu = sum(client.run(_cpu).values()) - workers_cpu
        # Dask's fine performance metrics of the tasks: CPU time of the task threads, time they waited
        # (for a CPU, on this shared machine), and Dask's own time around each task
        task_metrics: dict = {}
        for digest in client.run(lambda dask_worker: dict(dask_worker.digests_total)).values():
            for key, value in digest.items():
                if isinstance(key, tuple) and key[0] == "execute" and key[-1] == "seconds":
                    task_metrics[key[-2]] = task_metrics.get(key[-2], 0.0) + value
        compute = {"_attack_task": [], "_clean_task": [], "_value": []}
        first_start = math.inf
        for task in ts.data:
            name = task["key"].split("-", 1)[0] if isinstance(task["key"], str) else str(task["key"])
            for ss in task["startstops"]:
                if ss["action"] == "compute":
                    compute.setdefault(name, []).append(ss["stop"] - ss["start"])
                    if name == "_attack_task":
                        first_start = min(first_start, ss["start"] - wall_start)
        # scheduler throughput on this machine: no-op tasks, all submitted at once
        n_noop = 2000
        t = time.perf_counter()
        dd.wait(client.map(_noop, range(n_noop), pure=False))
        noop_s = (time.perf_counter() - t) / n_noop
        m, Xt, yt = _train_data()
        t = time.perf_counter()
        gd.train(m, Xt, yt, epochs=1, optimizer=optim.Adam(1e-3), batch_size=args.train_batch, client=client, seed=0)
        train_s = time.perf_counter() - t
    finally:
        client.close()
    report = rep["pgd"]
    return {"seconds": seconds, "workers_cpu_s": workers_cpu, "client_cpu_s": cpu, "load": load, "start_s": start_s,
            "robust_acc": report.robust_acc, "clean_acc": report.clean_acc, "train_samples_per_s": len(Xt) / train_s,
            "train_params": [p.value.tolist() for p in m.parameters()][-1],
            "task_cpu_s": task_metrics.get("thread-cpu", 0.0), "task_wait_s": task_metrics.get("thread-noncpu", 0.0),
            "task_dask_s": task_metrics.get("executor", 0.0) + task_metrics.get("other", 0.0),
            "tasks": rep.tasks, "attack_tasks": len(compute["_attack_task"]),
            "attack_compute_s": sum(compute["_attack_task"]), "clean_compute_s": sum(compute["_clean_task"]),
            "max_attack_task_s": max(compute["_attack_task"]), "first_attack_start_s": first_start,
            "noop_task_s": noop_s}


def _noop(i):
    return i


def peer_malloc(args) -> dict:
    """CPU time and minor page faults of the serial evaluation in this process (its environment
    decides glibc's malloc settings)."""
    import resource

    from graphc import attacks
    from graphc.learn.train import limit_threads
    model, X, y = workload(args.examples)
    with limit_threads(1):
        before = resource.getrusage(resource.RUSAGE_SELF)
        attacks.evaluate(model, X, y, "pgd", eps=EPS, **attack_kwargs(args.steps))
        after = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt}


def malloc_check(args) -> None:
    from graphc.distributed.cluster import MALLOC_ENV
    settings = {"default glibc": {}, "Dask's nanny (MALLOC_TRIM_THRESHOLD_=65536)": {"MALLOC_TRIM_THRESHOLD_": "65536"},
                "graphc's local workers": MALLOC_ENV}
    runs: dict = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, env in settings.items():
            runs[name].append(run_peer("malloc", args, env))
    print(f"serial PGD evaluation ({args.examples:,} examples, {args.steps} steps, 2 eps) under three malloc "
          f"settings, medians of {args.rounds}:")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"  {name:<46} CPU {med['cpu_s']:6.2f} s  (system {med['sys_s']:5.2f} s)  "
              f"{med['minor_faults']:>9,.0f} minor page faults")


# -- the driver ------------------------------------------------------------------------------------------------
def run_peer(name: str, args, extra_env: Optional[dict] = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", name, "--examples", str(args.examples), "--steps",
           str(args.steps), "--chunk", str(args.chunk), "--train-batch", str(args.train_batch)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), GRAPHC_NUM_THREADS="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(extra_env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"peer {name} failed:\n{out.stdout}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


BATCH = 512  # the attacks' default batch_size: a chunk is attacked in calls of at most this many rows


def predict(serial_s: float, workers: int, chunk: int, n: int, steps: int, call_s: float, row_s: float,
            task_overhead_s: float, fixed_s: float, sched_s: float = DASK_TASK_OVERHEAD_S) -> dict:
    """Wall time of evaluate at `workers` workers, each with a core of its own: the attack tasks run
    in waves of `workers`; a task of r rows costs steps·⌈r/512⌉ calls of a seconds plus r·b seconds
    of per-row work, plus its overhead o; the scheduler handles tasks one at a time at `sched_s`
    each, which bounds the rate; `fixed_s` covers shipping the model and the first compiles."""
    chunks = math.ceil(n / chunk)
    n_attack = chunks * len(EPS)
    tasks = n_attack + chunks  # + one clean-prediction task per chunk
    rows = min(chunk, n)
    task_s = steps * math.ceil(rows / BATCH) * call_s + rows * row_s + task_overhead_s
    waves = math.ceil(n_attack / workers)
    compute = waves * task_s
    return {"workers": workers, "chunk": chunk, "tasks": tasks, "busy_s": compute, "scheduler_s": tasks * sched_s,
            "wall_s": fixed_s + max(compute, tasks * sched_s), "serial_s": serial_s}


def machine() -> dict:
    import platform

    import distributed

    import graphc
    from graphc.tools.bench.gemm import cpu_model
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "dask.distributed": distributed.__version__, "graphc": graphc.__version__,
            "backend": graphc.backend_info()["backend"], "threads": "1 per worker (graphc kernels and BLAS)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=12000, help="rows to attack (default 12,000)")
    p.add_argument("--steps", type=int, default=50, help="PGD steps (default 50)")
    p.add_argument("--chunk", type=int, default=1024, help="rows per task (default 1024)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--workers", default="1,2", help="local cluster sizes to measure (default 1,2)")
    p.add_argument("--train-batch", type=int, default=256, help="global batch of the training measurement")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    p.add_argument("--malloc-check", action="store_true",
                   help="only compare the serial attack's CPU time under glibc's, Dask's and graphc's malloc settings")
    p.add_argument("--peer", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer:
        if args.peer == "serial":
            res = peer_serial(args)
        elif args.peer == "malloc":
            res = peer_malloc(args)
        else:
            res = peer_cluster(args, int(args.peer.split(":")[1]))
        print(json.dumps(res))
        return 0
    if args.malloc_check:
        malloc_check(args)
        return 0

    workers = [int(w) for w in args.workers.split(",")]
    peers = ["serial"] + [f"local:{w}" for w in workers]
    runs: dict = {name: [] for name in peers}
    for r in range(args.rounds):
        for name in peers:
            res = run_peer(name, args)
            runs[name].append(res)
            print(f"round {r + 1}/{args.rounds} {name:>8}: {res['seconds']:7.2f} s", file=sys.stderr, flush=True)

    med = {name: {k: statistics.median(run[k] for run in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
           for name, rs in runs.items()}
    serial = med["serial"]
    identical = all(run["robust_acc"] == runs["serial"][0]["robust_acc"] for rs in runs.values() for run in rs)
    info = machine()
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    print(f"workload: PGD-Linf (random start, {args.steps} steps) at eps {', '.join(map(str, EPS))} on "
          f"{args.examples:,} examples (digits, repeated with noise), MLP 64-512-512-10 float32, "
          f"chunk {args.chunk}; {args.rounds} rounds, medians")
    print(f"results identical to serial in every run: {'yes' if identical else 'NO'} "
          f"(robust accuracy {', '.join(f'{a:.2%}' for a in runs['serial'][0]['robust_acc'])})")
    loads = ", ".join(f"{n} {med[n]['load']:.1f}" for n in peers)
    print(f"load average (1 min, median) at the start of each peer's runs: {loads} on {os.cpu_count()} logical CPUs")
    print()
    head = (f"{'peer':<8}  {'wall s':>7}  {'speed-up':>8}  {'vs serial':>9}  {'tasks':>5}  {'start s':>7}  "
            f"{'CPU s':>6}  {'in tasks':>8}  {'waiting':>7}  {'Dask/task ms':>12}  {'worker bg CPU s':>15}  "
            f"{'client CPU s':>12}")
    print(head)
    print("-" * len(head))
    print(f"{'serial':<8}  {serial['seconds']:>7.2f}  {'-':>8}  {1.0:>9.2f}  {'-':>5}  {'-':>7}  "
          f"{serial['cpu_s']:>6.2f}  {'-':>8}  {'-':>7}  {'-':>12}  {'-':>15}  {'-':>12}")
    one = med[f"local:{workers[0]}"]
    for w in workers:
        m = med[f"local:{w}"]
        # CPU s: all worker processes; in tasks: the task threads (graphc's work); waiting: task time
        # off-CPU (a busy machine); Dask/task: Dask's time around each task; background: worker CPU
        # outside tasks (event loop, heartbeats, the statistical profiler, transfers)
        print(f"{'local:' + str(w):<8}  {m['seconds']:>7.2f}  {one['seconds'] / m['seconds']:>8.2f}  "
              f"{serial['seconds'] / m['seconds']:>9.2f}  {m['tasks']:>5.0f}  {m['start_s']:>7.2f}  "
              f"{m['workers_cpu_s']:>6.2f}  {m['task_cpu_s']:>8.2f}  {m['task_wait_s']:>7.2f}  "
              f"{m['task_dask_s'] / m['tasks'] * 1e3:>12.1f}  {m['workers_cpu_s'] - m['task_cpu_s']:>15.2f}  "
              f"{m['client_cpu_s']:>12.2f}")
    noop = med[f"local:{workers[-1]}"]["noop_task_s"]
    print(f"\nno-op tasks on local:{workers[-1]}: {noop * 1e3:.2f} ms per task end to end (Dask documents ~1 ms)")
    a = serial["step_call_s"]
    print(f"one PGD step (CPU time, one thread): {a * 1e6:.0f} us per call + {serial['step_row_s'] * 1e6:.1f} us "
          f"per row")
    # per-row cost of a whole attack (all steps, random start, checks), so that the model gives the
    # CPU time of the work back: CPU = steps·calls·a + rows·eps·b (the serial run's; the tasks' is
    # the same work, measured on busier CPUs)
    calls = len(EPS) * math.ceil(args.examples / BATCH)
    b = (serial["cpu_s"] - args.steps * calls * a) / (args.examples * len(EPS))

    # the model: CPU costs measured here, a free core per worker, Dask's ~1 ms per task at the scheduler
    base = med[f"local:{workers[0]}"]
    fixed = base["first_attack_start_s"]
    task_overhead = max(0.0, (base["workers_cpu_s"] - base["task_cpu_s"] + base["task_dask_s"]) / base["tasks"])

    def model(w, chunk, n):
        return predict(serial["cpu_s"] * n / args.examples, w, chunk, n, args.steps, a, b, task_overhead, fixed)

    print(f"\nmodel: wall = fixed + max(waves x (steps x calls x a + rows x b + o), tasks x 1 ms), a free core per "
          f"worker; a {a * 1e6:.0f} us per call, b {b * 1e3:.2f} ms per row and eps (the whole attack), fixed "
          f"{fixed:.2f} s (model shipped and compiled before the first attack task), o {task_overhead * 1e3:.1f} ms "
          f"per task (Dask's time around it and the workers' background CPU, from local:{workers[0]}); "
          f"'vs serial' against the serial run's CPU time")
    for w in workers:
        pr = model(w, args.chunk, args.examples)
        print(f"  at local:{w}: predicted {pr['wall_s']:.2f} s, measured {med[f'local:{w}']['seconds']:.2f} s wall")
    head = (f"{'examples':>10}  {'workers':>7}  {'chunk':>5}  {'tasks':>6}  {'busy s':>8}  {'sched s':>7}  "
            f"{'wall s':>8}  {'vs serial':>9}  {'best chunk':>10}  {'its wall s':>10}  {'vs serial':>9}")
    print("\n" + head)
    print("-" * len(head))
    candidates = [2 ** k for k in range(4, 15)]
    for n in (args.examples, args.examples * 100):
        for w in (1, 2, 8, 64, 512):
            pr = model(w, args.chunk, n)
            best = min((model(w, c, n) for c in candidates), key=lambda r: r["wall_s"])
            print(f"{n:>10,}  {w:>7}  {args.chunk:>5}  {pr['tasks']:>6}  {pr['busy_s']:>8.1f}  "
                  f"{pr['scheduler_s']:>7.1f}  {pr['wall_s']:>8.1f}  {pr['serial_s'] / pr['wall_s']:>9.1f}  "
                  f"{best['chunk']:>10}  {best['wall_s']:>10.1f}  {best['serial_s'] / best['wall_s']:>9.1f}")

    ref = np.asarray(runs["serial"][0]["train_params"])
    print(f"\ndata-parallel training, one epoch of digits (1,347 rows), MLP 64-512-512-10, Adam, global batch "
          f"{args.train_batch}:")
    for name in peers:
        diff = max(float(np.abs(np.asarray(r["train_params"]) - ref).max()) for r in runs[name])
        what = "gc.train (one process)" if name == "serial" else f"graphc.distributed.train on {name}"
        print(f"  {what:<42} {med[name]['train_samples_per_s']:>9,.0f} samples/s   max |param - serial| {diff:.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": vars(args), "runs": runs, "medians": med}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
