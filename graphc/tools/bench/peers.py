"""Peer benchmark: the same training steps in NumPy, PyTorch, JAX, PyTensor and graphc, each in its own process.

    graphc bench --suite peers [--peers numpy,torch,jax,pytensor,graphc-c,graphc-numpy]
                 [--workloads lr,small,mlp] [--rounds 7] [--repeats 15] [--threads N]

Workloads (every peer computes the loss and applies the update, from the same initial weights and data):
  lr     W-lr: one full-batch gradient-descent step of logistic regression 30 -> 1 on 569 rows, float64
         (sklearn's breast-cancer data when installed, else random), mean binary cross-entropy on logits.
  small  one SGD step of an MLP 64-32-10, ReLU, softmax cross-entropy (mean), batch 32, float32.
  mlp    W-mlp: the same for 784-512-256-10, batch 256, float32.

Why one process per peer: two thread pools in one process (libgomp, OpenBLAS, PyTorch's, XLA's Eigen
pool) fight for the cores, and the idle workers of one library spin while the next one runs, so a
same-process loop measures contention (that is what `--mixed` measures, on purpose). Each peer is a
worker subprocess started once and driven over a pipe with one-line JSON messages: "set up the
workloads" (build the step, run one step from the initial weights, compare the parameters with the
hand-written NumPy step run in the same worker) and "run one round of R measurements of a workload,
report the median seconds per call". A measurement times a batch of calls lasting >= min_batch_s,
sized at the peer's first round (median of 5 timed calls), when no other worker is busy; every
round starts with one untimed batch. Rounds are interleaved across peers (peer A round 1, peer B
round 1, ..., then round 2 with the order rotated), with a pause before each turn so the previous
peer's spinning workers have gone to sleep. Reported: the median over rounds of the per-round
medians, the spread (max - min of the round medians, as a percentage of the median), and the
ratios to the hand-written NumPy step and to the best peer.

Thread counts: every worker gets the same count through its own knobs: OMP/OPENBLAS/MKL_NUM_THREADS
and GRAPHC_NUM_THREADS in its environment, threadpoolctl's limit on every loaded BLAS/OpenMP pool,
graphc.set_num_threads, torch.set_num_threads; JAX (XLA's CPU pool has no thread-count flag): one
thread via XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, and for 1 < N < all CPUs the worker's CPU
affinity is restricted to N CPUs. A peer whose library is missing is reported as "not installed".
"""
from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

PEERS = {  # key -> display name
    "numpy": "numpy hand-written",
    "torch": "pytorch eager",
    "jax": "jax jit",
    "pytensor": "pytensor",
    "graphc-c": "graphc c",
    "graphc-numpy": "graphc numpy",
}
WORKLOADS = {
    "lr": "W-lr step (30->1, 569 rows, f64, full-batch GD)",
    "small": "small MLP step (64-32-10, batch 32, f32, SGD)",
    "mlp": "W-mlp step (784-512-256-10, batch 256, f32, SGD)",
}
SMALL_SIZES = (64, 32, 10)
ROUNDS = 7
REPEATS = 15
MIN_BATCH_S = 2e-3  # one measurement of a microsecond-scale step averages this long a batch of calls
PAUSE_S = 0.5  # before each turn: longer than the spin-wait of idle workers (OpenBLAS: 2^28 cycles, ~0.1 s)
REPLY_TIMEOUT_S = 600.0  # a worker that says nothing for this long is declared hung
# After one step from the same weights, the max relative difference of each peer's parameter
# *updates* (p1 - p0) to the NumPy step's, relative to max |NumPy update| per parameter. The updates,
# not the parameters: a missing weight update moves the parameters by ~1e-4 relative (lr * grad
# against the weights) but its update by 1.0. float32 sums in different orders per library and
# rounds p - lr*g at |p|'s precision (measured ~1e-4 on the W-mlp step); float64 agrees to rounding.
TOLERANCE = {"float32": 1e-3, "float64": 1e-9}


def all_cpus() -> int:
    """CPUs this process may run on (the default thread count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- workloads ------------------------------------------------------------------------------------
def workload_data(name: str) -> dict:
    """Initial parameters (list of arrays), inputs x, y, learning rate, dtype and MLP sizes (or None)."""
    from .workloads import MLP_SIZES, _mlp_data, lr_data
    if name == "lr":
        X, Y, source = lr_data()
        rng = np.random.default_rng(1)
        # small random weights rather than zeros: with w = 0 every logit is 0 and a wrong X @ w
        # would go unnoticed by the parameter check after one step
        params = [rng.standard_normal(X.shape[1]) * 0.1, np.zeros(())]
        return dict(params=params, x=X, y=Y, lr=0.1, dtype="float64", sizes=None, data=source)
    if name in ("small", "mlp"):
        sizes, batch = (SMALL_SIZES, 32) if name == "small" else (MLP_SIZES, 256)
        weights, x, y = _mlp_data(batch, sizes, "float32")
        return dict(params=weights, x=x, y=y, lr=0.01, dtype="float32", sizes=sizes, data="random")
    raise ValueError(f"unknown workload {name!r}; choose from {list(WORKLOADS)}")


def save_data(datas: dict, path: str) -> dict:
    """Write the workloads' arrays to one .npz file (read back by load_data in each worker, so every
    peer starts from the very same bytes, and sklearn is imported once); returns the non-array part."""
    arrays, meta = {}, {}
    for w, d in datas.items():
        for i, p in enumerate(d["params"]):
            arrays[f"{w}.p{i}"] = p
        arrays[f"{w}.x"], arrays[f"{w}.y"] = d["x"], d["y"]
        meta[w] = dict(n_params=len(d["params"]), lr=d["lr"], dtype=d["dtype"], data=d["data"],
                       sizes=list(d["sizes"]) if d["sizes"] else None)
    np.savez(path, **arrays)
    return meta


def load_data(path: str, meta: dict) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {w: dict(m, params=[f[f"{w}.p{i}"] for i in range(m["n_params"])], x=f[f"{w}.x"], y=f[f"{w}.y"],
                        sizes=tuple(m["sizes"]) if m["sizes"] else None)
                for w, m in meta.items()}


def _mlp_forward(h, ps, relu):
    for i in range(0, len(ps), 2):
        h = h @ ps[i] + ps[i + 1]
        if i + 2 < len(ps):
            h = relu(h)
    return h


def _jax_step(data):
    import jax
    import jax.numpy as jnp
    lr = data["lr"]
    if data["sizes"] is None:
        def loss_fn(ps, x, t):
            z = x @ ps[0] + ps[1]
            return jnp.mean(jax.nn.softplus(z) - z * t)
    else:
        def loss_fn(ps, x, y):
            logp = jax.nn.log_softmax(_mlp_forward(x, ps, jax.nn.relu), axis=1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(ps, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        return [p - lr * g for p, g in zip(ps, grads)], loss

    jstep = jax.jit(update, donate_argnums=0)  # the parameters are updated in place
    state = [jnp.asarray(p) for p in data["params"]]
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])

    def step():
        nonlocal state
        state, loss = jstep(state, x, y)
        return float(loss)  # waits for the result, as every peer's step does

    return step, lambda: [np.asarray(p) for p in state]


def _pytensor_step(data, mode=None):
    import pytensor
    import pytensor.tensor as pt
    dt = data["dtype"]
    lr = np.asarray(data["lr"], dt)  # a float64 constant would upcast the float32 updates
    ps = [pytensor.shared(np.array(p), name=f"p{i}") for i, p in enumerate(data["params"])]
    x = pt.matrix("x", dtype=dt)
    if data["sizes"] is None:
        y = pt.vector("t", dtype=dt)
        z = x @ ps[0] + ps[1]
        loss = pt.mean(pt.softplus(z) - z * y)
    else:
        y = pt.vector("y", dtype="int64")
        logp = pt.special.log_softmax(_mlp_forward(x, ps, lambda h: pt.maximum(h, 0)), axis=1)
        loss = -pt.mean(logp[pt.arange(y.shape[0]), y])
    grads = pytensor.grad(loss, ps)
    f = pytensor.function([x, y], loss, updates=[(p, p - lr * g) for p, g in zip(ps, grads)], mode=mode)
    X, Y = data["x"], data["y"]
    return (lambda: float(f(X, Y))), lambda: [p.get_value() for p in ps]


def build_step(peer: str, data: dict, pytensor_mode=None):
    """(step() -> loss, params() -> list of arrays) of one peer's implementation of a workload.

    Each step starts from a copy of data['params'] and updates its own copy."""
    from . import workloads as W
    params = [np.array(p) for p in data["params"]]
    X, Y, lr, mlp = data["x"], data["y"], data["lr"], data["sizes"] is not None
    if peer == "numpy":
        fn = W.numpy_mlp_step(params, lr) if mlp else W.numpy_lr_step(params, lr)
        return (lambda: float(fn(X, Y))), lambda: params
    if peer == "torch":
        import torch
        fn, ts = W.torch_mlp_step(params, lr) if mlp else W.torch_lr_step(params, lr)
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
        return (lambda: fn(xt, yt)), lambda: [t.detach().numpy() for t in ts]
    if peer == "jax":
        return _jax_step(data)
    if peer == "pytensor":
        return _pytensor_step(data, pytensor_mode)
    if peer in ("graphc-c", "graphc-numpy"):
        backend = peer.split("-")[1]
        if mlp:
            fn, tensors, _ = W.graphc_mlp_step(params, data["sizes"], data["dtype"], lr, backend)
        else:
            fn, tensors = W.graphc_lr_step(X.shape[1], lr, backend, *params)
        return (lambda: float(fn(X, Y))), lambda: [t.value for t in tensors]
    raise ValueError(f"unknown peer {peer!r}; choose from {list(PEERS)}")


def check_one_step(peer: str, data: dict, pytensor_mode=None) -> dict:
    """One step of the peer and of the NumPy step from the same weights: max_rel_diff (parameters),
    update_rel_diff (p1 - p0, see TOLERANCE), met_tolerance, loss and numpy_loss; and the peer's
    step function (its parameters have taken that one step)."""
    from .workloads import _rel_diff
    step, params = build_step(peer, data, pytensor_mode)
    ref_step, ref_params = build_step("numpy", data)
    loss, ref_loss = step(), ref_step()
    after, ref_after = params(), ref_params()
    p_diff = max(_rel_diff(p, r) for p, r in zip(after, ref_after))
    u_diff = max(_rel_diff(np.asarray(p, np.float64) - p0, np.asarray(r, np.float64) - p0)
                 for p, r, p0 in zip(after, ref_after, data["params"]))
    return dict(max_rel_diff=p_diff, update_rel_diff=u_diff, met_tolerance=u_diff <= TOLERANCE[data["dtype"]],
                loss=loss, numpy_loss=ref_loss, step=step)


# -- the worker (one per peer) --------------------------------------------------------------------
_YNN_CAP = [""]  # what --isa avx2 did to JAX's YNNPACK kernels, for the header


def _load_peer(peer: str) -> tuple:
    """(status, version): import the peer's library, apply its thread knobs. 'missing' when not installed."""
    threads = int(os.environ.get("GRAPHC_BENCH_THREADS", "0")) or all_cpus()
    if os.environ.get("GRAPHC_BENCH_CPUS"):  # XLA sizes its pool by the CPUs it may use
        os.sched_setaffinity(0, {int(c) for c in os.environ["GRAPHC_BENCH_CPUS"].split(",")})
    try:
        if peer == "torch":
            import torch
            torch.set_num_threads(threads)
            version = f"torch {torch.__version__}"
        elif peer == "jax":
            import jax
            jax.config.update("jax_enable_x64", True)  # the W-lr step is float64
            version = f"jax {jax.__version__}"
            if os.environ.get("GRAPHC_BENCH_YNN_ISA") == "avx2":  # set by --isa avx2 (see ynn_cap)
                from .ynn_cap import cap_ynn_to_avx2
                _YNN_CAP[0] = cap_ynn_to_avx2()
        elif peer == "pytensor":
            import pytensor
            version = f"pytensor {pytensor.__version__}"
        elif peer.startswith("graphc"):
            import graphc as gc
            if peer == "graphc-c" and not gc.backend_info()["c_available"]:
                return "missing", "graphc C extension not built"
            gc.set_num_threads(threads)
            version = f"graphc {gc.__version__}"
        elif peer == "numpy":
            version = f"numpy {np.__version__}"
        else:
            return "missing", f"unknown peer {peer!r}"
    except ImportError as exc:
        return "missing", str(exc)
    try:  # every BLAS and OpenMP pool loaded so far (numpy's OpenBLAS, torch's libgomp, ...)
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads)
    except ImportError:  # the environment variables set by the parent still apply
        pass
    return "ok", version


def _thread_report(peer: str) -> str:
    """What the peer's libraries say their thread counts are, after set-up (for the fairness record)."""
    parts = []
    try:
        from threadpoolctl import threadpool_info
        parts += [f"{i.get('internal_api')}={i.get('num_threads')}" for i in threadpool_info()]
    except ImportError:
        pass
    if peer == "torch":
        import torch
        parts.append(f"torch={torch.get_num_threads()}")
    if peer.startswith("graphc"):
        import graphc as gc
        parts.append(f"graphc={gc.backend_info()['threads']}")
    if peer == "jax":
        parts.append(f"affinity={all_cpus()} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
        if _YNN_CAP[0]:
            parts.append(f"ynn={_YNN_CAP[0]}")
    return " ".join(parts)


def _calibrate(step, min_batch_s: float, calls: int = 5) -> int:
    """Calls per batch so that a batch lasts >= min_batch_s: from the median of `calls` timed calls
    after as many untimed ones. One timed call is not enough: the first calls after set-up (thread
    pools starting, pages faulted in) can be several times slower than the rest, and a batch sized
    from one of them was a single call, whose rounds then measured mostly warm-up."""
    for _ in range(calls):
        step()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return max(1, math.ceil(min_batch_s / max(float(np.median(times)), 1e-7)))


def _round(step, batch: int, repeats: int, cpu: list | None = None) -> float:
    """Median seconds per call over `repeats` timed batches; appends CPU seconds / wall seconds of the
    whole process (all its threads) to `cpu` when given: how many cores the peer kept busy."""
    for _ in range(batch):  # an untimed batch: warm caches and wake thread pools after the pause
        step()
    times = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(batch):
            step()
        times.append((time.perf_counter() - t0) / batch)
    if cpu is not None:
        cpu.append((time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9))
    return float(np.median(times))


def worker_main(peer: str) -> int:
    """Serve one peer over stdin/stdout; anything the libraries print goes to stderr."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")  # e.g. JAX's "donated buffers were not usable"

    def send(**msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    status, version = _load_peer(peer)
    send(status=status, version=version)
    if status != "ok":
        return 0
    steps = {}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "setup":
            out = {}
            datas = load_data(msg["data_path"], msg["meta"])
            for name, data in datas.items():
                try:
                    out[name] = check_one_step(peer, data)
                    step = out[name].pop("step")
                    # the batch is sized at the first round, not here: the other workers may
                    # still be importing their libraries on the same cores
                    steps[name] = [step, None, msg.get("min_batch_s", MIN_BATCH_S)]
                    out[name].update(dtype=data["dtype"], data=data["data"])
                except Exception as exc:  # noqa: BLE001 - reported in the table, the others go on
                    out[name] = dict(error=f"{type(exc).__name__}: {exc}"[:300])
            send(workloads=out, threads=_thread_report(peer))
        elif cmd == "round":
            entry = steps[msg["workload"]]
            if entry[1] is None:
                entry[1] = _calibrate(entry[0], entry[2])
            cpu = []
            median = _round(entry[0], entry[1], msg["repeats"], cpu)
            send(median_s=median, cpu_per_wall=cpu[0], batch=entry[1])
        else:
            break
    return 0


class _Worker:
    """A benchmark worker subprocess (`python -m <module> --worker <peer>`) driven by JSON lines; the
    GEMM suite (graphc.tools.bench.gemm) uses it too."""

    def __init__(self, peer: str, threads: int, extra_env=None, module: str = "graphc.tools.bench.peers"):
        import graphc
        self.peer = peer
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(graphc.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GRAPHC_NUM_THREADS",
                    "GRAPHC_BENCH_THREADS"):
            env[var] = str(threads)
        if peer == "jax" and threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1").strip()
        env.update(extra_env or {})
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if peer == "jax" and 1 < threads < len(cpus):  # the worker pins itself before importing jax
            env["GRAPHC_BENCH_CPUS"] = ",".join(map(str, cpus[:threads]))
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", peer], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def recv(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"worker {self.peer} died or hung: {' | '.join(tail)}")
        return json.loads(line)

    def call(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def peers_suite(peers=None, workloads=None, rounds: int = ROUNDS, repeats: int = REPEATS, threads=None,
                min_batch_s: float = MIN_BATCH_S, pause_s: float = PAUSE_S, log=None, extra_env=None) -> dict:
    """Run the peer benchmark. Returns {"threads", "rounds", "repeats", "peers": {key: {...}}, "rows": [...]}:
    one row per (workload, peer) with impl, version, status ('ok', 'not installed', 'failed: ...'),
    median_us, min_us, max_us, spread_pct, vs_numpy, vs_best, max_rel_diff, update_rel_diff, met_tolerance,
    batch, cpu_per_wall (process CPU seconds per wall second while timed: the cores it kept busy,
    spinning included)."""
    peers = list(peers or PEERS)
    workloads = list(workloads or WORKLOADS)
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"unknown peer {p!r}; choose from {list(PEERS)}")
    for w in workloads:
        if w not in WORKLOADS:
            raise ValueError(f"unknown workload {w!r}; choose from {list(WORKLOADS)}")
    threads = int(threads or all_cpus())
    info = {p: dict(name=PEERS[p], status="not run") for p in peers}
    setups, workers = {}, {}
    tmp = tempfile.TemporaryDirectory(prefix="graphc-peers-")
    started = {}
    try:
        for p in peers:  # they import their libraries in parallel
            started[p] = _Worker(p, threads, extra_env)
        data_path = os.path.join(tmp.name, "data.npz")
        datas = {w: workload_data(w) for w in workloads}
        meta = save_data(datas, data_path)
        for p, wk in started.items():
            try:
                hello = wk.recv()
                if hello["status"] != "ok":
                    info[p].update(status="not installed", version=None, reason=hello["version"])
                    wk.close()
                    continue
                info[p].update(status="ok", version=hello["version"])
                if log:
                    log(f"peers: setting up {PEERS[p]} ({hello['version']}) ...")
                reply = wk.call(cmd="setup", data_path=data_path, meta=meta, min_batch_s=min_batch_s)
                setups[p] = reply["workloads"]
                info[p]["threads"] = reply["threads"]
                workers[p] = wk
            except RuntimeError as exc:
                info[p].update(status=f"failed: {exc}")
        times = {(w, p): [] for w in workloads for p in workers}
        cpu = {(w, p): [] for w in workloads for p in workers}
        order = list(workers)
        for r in range(max(1, rounds)):
            if log:
                log(f"peers: round {r + 1}/{rounds}")
            turn = order[r % len(order):] + order[:r % len(order)] if order else []
            for w in workloads:
                for p in turn:
                    if p not in workers or "error" in setups[p][w]:
                        continue
                    time.sleep(pause_s)
                    try:
                        reply = workers[p].call(cmd="round", workload=w, repeats=repeats)
                        times[w, p].append(reply["median_s"])
                        setups[p][w]["batch"] = reply["batch"]
                        cpu[w, p].append(reply["cpu_per_wall"])
                    except RuntimeError as exc:
                        info[p].update(status=f"failed: {exc}")
                        del workers[p]
    finally:
        for wk in started.values():
            wk.close()
        tmp.cleanup()
    rows = []
    for w in workloads:
        block = []
        for p in peers:
            row = dict(workload=w, workload_name=WORKLOADS[w], peer=p, impl=PEERS[p],
                       version=info[p].get("version"), status=info[p]["status"])
            setup = setups.get(p, {}).get(w)
            if setup and "error" in setup:
                row["status"] = f"failed: {setup['error']}"
            elif setup:
                row.update({k: setup[k] for k in ("max_rel_diff", "update_rel_diff", "met_tolerance", "loss",
                                                  "numpy_loss", "batch", "dtype", "data")})
                ts = times.get((w, p)) or []
                if ts:
                    med = float(np.median(ts))
                    row.update(median_us=med * 1e6, min_us=min(ts) * 1e6, max_us=max(ts) * 1e6,
                               spread_pct=100.0 * (max(ts) - min(ts)) / med, rounds=len(ts),
                               rounds_us=[t * 1e6 for t in ts],
                               cpu_per_wall=float(np.median(cpu[w, p])))
            block.append(row)
        timed = [r for r in block if r.get("median_us")]
        base = next((r["median_us"] for r in timed if r["peer"] == "numpy"), None)
        best = min((r["median_us"] for r in timed), default=None)
        for r in timed:
            r["vs_numpy"] = r["median_us"] / base if base else None
            r["vs_best"] = r["median_us"] / best
            # Paired: a round of every peer runs back to back, so the ratio of two peers' times in
            # the same round cancels the slow and fast spells of a shared machine that the medians
            # keep. Against the fastest other peer: below 1, this peer's lead over the runner-up.
            others = [o for o in timed if o is not r and len(o["rounds_us"]) == len(r["rounds_us"])]
            if others:
                q = min(others, key=lambda o: o["median_us"])
                r["best_other"] = q["peer"]
                ratios = np.array(r["rounds_us"]) / np.array(q["rounds_us"])
                r["vs_best_other_paired"] = float(np.median(ratios))
                # how far the per-round ratios scatter: is a ratio near a target resolved?
                r["vs_best_other_paired_quartiles"] = [float(v) for v in np.percentile(ratios, [25, 75])]
        rows += block
    return dict(threads=threads, rounds=rounds, repeats=repeats, min_batch_s=min_batch_s, peers=info, rows=rows)


def format_tables(res: dict) -> str:
    from . import _table
    out = [f"peers: each in its own process, {res['threads']} threads each, median of {res['rounds']} "
           f"interleaved rounds of per-round medians ({res['repeats']} measurements per round); spread: "
           f"(max - min) / median of the round medians; x best other, paired: median over rounds of the "
           f"ratio to the fastest other peer's time in the same round (quartiles: of those ratios); diffs: "
           f"parameters and updates after one step vs the NumPy step; cpu/wall: cores the peer's process kept busy"]
    for p in res["peers"].values():
        extra = p.get("threads") or p.get("reason") or ""
        out.append(f"  {p['name']}: {p.get('version') or p['status']}" + (f"  [{extra}]" if extra else ""))
    for w, title in WORKLOADS.items():
        rows = [dict(r, impl=r["impl"] if r["status"] == "ok" else f"{r['impl']} ({r['status'][:60]})")
                for r in res["rows"] if r["workload"] == w]
        if not rows:
            continue
        us = w != "mlp"  # a fixed unit per workload, so that a noisy run does not change it
        unit, scale = ("us", 1.0) if us else ("ms", 1e-3)
        for r in rows:
            if r.get("median_us"):
                r["t"] = r["median_us"] * scale
            if r.get("vs_best_other_paired_quartiles"):
                r["paired_iqr"] = "{:.2f}-{:.2f}".format(*r["vs_best_other_paired_quartiles"])
        out.append("")
        out.append(_table(rows, [("impl", title, "{}"), ("t", unit, "{:.1f}" if us else "{:.2f}"),
                                 ("spread_pct", "spread %", "{:.0f}"), ("vs_numpy", "x numpy", "{:.2f}"),
                                 ("vs_best", "x best", "{:.2f}"),
                                 ("vs_best_other_paired", "x best other, paired", "{:.2f}"),
                                 ("paired_iqr", "quartiles", "{}"),
                                 ("max_rel_diff", "param diff", "{:.1e}"),
                                 ("update_rel_diff", "update diff", "{:.1e}"),
                                 ("cpu_per_wall", "cpu/wall", "{:.2f}")]))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    from . import main
    sys.exit(main(["--suite", "peers", *sys.argv[1:]]))
