"""`graphc bench`: GEMM, MLP and logistic-regression training steps, per-call dispatch overhead, compiler, peers.

    graphc bench [--suite gemm,mlp,lr,dispatch,compiler,peers,mixed,instep] [--sizes 256,512] [--repeats R]
                 [--threads N] [--nodes 100,1000,10000] [--rss-steps 1000] [--json [PATH]]
                 [--peers numpy,torch,jax,pytensor,graphc-c,graphc-numpy] [--workloads lr,small,mlp]
                 [--rounds 7] [--mixed] [--mixed-size 1024]

Prints the machine (CPU, ISA, cores, thread counts, library versions, date) and one table per suite.
--json alone prints one JSON document instead of the tables; --json PATH also writes it there.
The default suites are gemm,mlp,lr,dispatch,compiler (quick looks; gemm times graphc and NumPy in a
worker process each, the others run in this process). `peers` is the fair
comparison with NumPy, PyTorch, JAX, PyTensor (each peer in its own process, rounds interleaved; see
graphc.tools.bench.peers); `--mixed` (alone: only that suite) measures graphc and NumPy in one
process and graphc next to a busy process (graphc.tools.bench.mixed); `instep` compares the W-mlp
step's large kernels inside the step with the same kernels alone (graphc.tools.bench.instep). The
workloads are described in graphc.tools.bench.workloads; the GEMM table in .gemm; the compiler
suite (passes on/off, arena bytes, compile time vs graph size, RSS) in .compiler.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

SUITES = ("gemm", "mlp", "lr", "dispatch", "compiler", "peers", "mixed", "instep")
DEFAULT_SUITES = ("gemm", "mlp", "lr", "dispatch", "compiler")


def cpu_isa() -> str:
    """The SIMD extensions the CPU reports that graphc's and the peers' kernels may use."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown"
    isa = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA")) if flag in flags]
    avx512 = [f[6:].upper() for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl") if f in flags]
    if avx512:
        isa.append("AVX-512" + "/".join(avx512))
    return "+".join(isa[:2]) + (", " + ", ".join(isa[2:]) if isa[2:] else "") if isa else "no AVX2"


def machine_info(threads=None) -> dict:
    """Where the numbers come from: CPU, cores, thread counts, versions, date."""
    import graphc as gc

    from .gemm import cpu_model
    info = gc.backend_info()
    out = {
        "cpu": cpu_model(), "isa": cpu_isa(), "logical_cpus": os.cpu_count(),
        "graphc_threads": threads or info["threads"],
        "avx2": info["avx2"], "gemm_simd": info["gemm_simd"], "c_available": info["c_available"],
        "python": platform.python_version(),
        "numpy": np.__version__, "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        from threadpoolctl import threadpool_info
        out["blas"] = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}), "
                       f"{threads or i.get('num_threads')} threads"
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        out["blas"] = ["unknown (threadpoolctl not installed)"]
    from .workloads import _torch
    torch = _torch()
    out["torch"] = (f"{torch.__version__}, {threads or torch.get_num_threads()} threads" if torch is not None
                    else "not installed")
    return out


def _table(rows, columns) -> str:
    """Fixed-width text table; columns: (key, header, format)."""
    cells = [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    out = [line([h for _, h, _ in columns]), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(c) for c in cells])


def _format(suite, rows) -> str:
    if suite == "gemm":
        from .gemm import format_table
        return format_table(rows)
    if suite == "mlp":
        return _table(rows, [("impl", "W-mlp step (784-512-256-10, batch 256, f32)", "{}"),
                             ("median_ms", "ms", "{:.2f}"), ("vs_numpy", "x numpy", "{:.2f}"),
                             ("max_rel_diff", "param diff", "{:.1e}")])
    if suite == "compiler":
        from .compiler import format_tables
        return format_tables(rows)
    if suite == "peers":
        from .peers import format_tables as peers_tables
        return peers_tables(rows)
    if suite == "mixed":
        from .mixed import format_tables as mixed_tables
        return mixed_tables(rows)
    if suite == "instep":
        from .instep import format_table as instep_table
        return instep_table(rows)
    if suite == "lr":
        return _table(rows, [("impl", "W-lr step (30->1, 569 samples, f64)", "{}"),
                             ("median_us", "us", "{:.1f}"), ("vs_numpy", "x numpy", "{:.2f}")])
    return _table(rows, [("impl", "dispatch (50 elementwise ops, 16 elements)", "{}"),
                         ("optimize", "passes", "{}"), ("steps", "steps", "{}"),
                         ("us_per_call", "us/call", "{:.2f}")])


def run_suites(suites, sizes=None, repeats=None, threads=None, log=None, nodes=None, rss_steps=None,
               peers=None, workloads=None, rounds=None, mixed_size=None, min_batch_s=None) -> dict:
    from . import workloads as W
    results = {}
    if "peers" in suites:  # before any library here starts a thread pool: the workers are separate processes
        from .peers import MIN_BATCH_S, REPEATS, ROUNDS, peers_suite
        results["peers"] = peers_suite(peers, workloads, rounds or ROUNDS, repeats or REPEATS, threads,
                                       MIN_BATCH_S if min_batch_s is None else min_batch_s, log=log)
    if "mixed" in suites:  # sets its own thread counts (default: all CPUs)
        from . import mixed
        results["mixed"] = mixed.mixed_suite(mixed_size or 1024, rounds or mixed.ROUNDS, repeats or mixed.REPEATS,
                                             threads, log=log)
    with W.thread_limits(threads):
        for suite in suites:
            if suite in ("peers", "mixed"):
                continue
            if log:
                log(f"running {suite} ...")
            if suite == "gemm":
                from .gemm import gemm_table
                kw = {"repeats": repeats} if repeats else {}
                if sizes:
                    kw["sizes"] = tuple(sizes)
                results[suite] = gemm_table(threads=threads, **kw)
            elif suite == "mlp":
                results[suite] = W.mlp_table(repeats=repeats or 20)
            elif suite == "lr":
                results[suite] = W.lr_table(repeats=repeats or 20)
            elif suite == "instep":
                from .instep import REPEATS, ROUNDS, instep_table
                results[suite] = instep_table(repeats or REPEATS, rounds or ROUNDS)
            elif suite == "compiler":
                from .compiler import compiler_suite
                results[suite] = compiler_suite(repeats, nodes, rss_steps, threads)
            else:
                results[suite] = W.dispatch_table(repeats=repeats or 20)
    return {s: results[s] for s in suites}


# --isa: the variables that cap each library's instruction set. OPENBLAS_CORETYPE needs a
# DYNAMIC_ARCH OpenBLAS (NumPy's and SciPy's wheels are); each peer's header line shows what loaded.
# XLA's flag does not reach JAX's YNNPACK matmuls: GRAPHC_BENCH_YNN_ISA has the JAX worker preset
# YNNPACK's cpuid cache (peers.py, ynn_cap.py). PyTorch's MKL runs its AVX2 "zen" sgemm kernels on
# AMD CPUs either way (perf report); MKL_ENABLE_INSTRUCTIONS caps it on Intel ones.
ISA_CAPS = {"avx2": {"GRAPHC_SIMD": "avx2", "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
                     "MKL_ENABLE_INSTRUCTIONS": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
                     "GRAPHC_BENCH_YNN_ISA": "avx2"}}


def isa_env(isa: str) -> dict:
    """The environment of a run capped to `isa` (XLA_FLAGS keeps the flags already set)."""
    env = dict(ISA_CAPS[isa])
    xla = os.environ.get("XLA_FLAGS", "")
    if env["XLA_FLAGS"] not in xla.split():
        env["XLA_FLAGS"] = f"{xla} {env['XLA_FLAGS']}".strip()
    else:
        env["XLA_FLAGS"] = xla
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="graphc bench", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=None, help=f"comma-separated subset of {','.join(SUITES)} "
                                                 f"(default {','.join(DEFAULT_SUITES)})")
    p.add_argument("--sizes", default=None, help="GEMM square sizes, comma separated (default 256,512,1024,2048)")
    p.add_argument("--repeats", type=int, default=None, help="measurements per median (default per suite)")
    p.add_argument("--threads", type=int, default=None, help="threads for graphc, NumPy's BLAS and PyTorch "
                                                              "(peers, mixed: also JAX, PyTensor; default all CPUs)")
    p.add_argument("--nodes", default=None, help="compiler suite: graph sizes in nodes (default 100,1000,10000)")
    p.add_argument("--rss-steps", type=int, default=None, help="compiler suite: W-mlp steps for the RSS series "
                                                                "(default 1000)")
    p.add_argument("--peers", default=None, help="peers suite: comma-separated subset of "
                                                 "numpy,torch,jax,pytensor,graphc-c,graphc-numpy (default all)")
    p.add_argument("--workloads", default=None, help="peers suite: comma-separated subset of lr,small,mlp")
    p.add_argument("--rounds", type=int, default=None, help="peers / mixed: interleaved rounds (default 7 / 5)")
    p.add_argument("--min-batch-ms", type=float, default=None,
                   help="peers: a measurement of a short step times a batch of calls lasting this long (default 2)")
    p.add_argument("--mixed", action="store_true", help="add the mixed-use suite (graphc and NumPy GEMMs "
                                                        "interleaved in one process; small MLP next to a busy process)")
    p.add_argument("--mixed-size", type=int, default=None, help="mixed: GEMM size (default 1024)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="print JSON instead of tables (or, with PATH, also write it there)")
    p.add_argument("--isa", choices=sorted(ISA_CAPS), default=None,
                   help="cap every library's SIMD level (graphc, OpenBLAS, PyTorch, XLA) to measure what a CPU "
                        "without AVX-512 gets; the whole run goes to a child process with the variables set")
    args = p.parse_args(argv)
    if args.isa and any(os.environ.get(k) != v for k, v in isa_env(args.isa).items()):
        import subprocess  # the capped libraries read their variables when they load: a fresh process
        rest = list(sys.argv[1:] if argv is None else argv)
        if rest and rest[0] == "bench":
            rest = rest[1:]
        env = dict(os.environ, **isa_env(args.isa))
        return subprocess.run([sys.executable, "-m", "graphc.tools.cli", "bench", *rest], env=env).returncode
    suite_arg = args.suite if args.suite is not None else ("" if args.mixed else ",".join(DEFAULT_SUITES))
    suites = [s.strip() for s in suite_arg.split(",") if s.strip()]
    if args.mixed and "mixed" not in suites:
        suites.append("mixed")
    split = lambda v: [s.strip() for s in v.split(",") if s.strip()] if v else None  # noqa: E731
    from .peers import PEERS, WORKLOADS
    for opt, val, known in (("--peers", split(args.peers), PEERS), ("--workloads", split(args.workloads), WORKLOADS)):
        if val and set(val) - set(known):
            p.error(f"unknown {opt} {sorted(set(val) - set(known))}; choose from {','.join(known)}")
    bad = [s for s in suites if s not in SUITES]
    if bad:
        p.error(f"unknown suite(s) {bad}; choose from {SUITES}")
    sizes = [int(s) for s in args.sizes.split(",") if s] if args.sizes else None
    nodes = [int(s) for s in args.nodes.split(",") if s] if args.nodes else None
    quiet = args.json == "-"
    peers_or_mixed = {"peers", "mixed"} & set(suites)
    if peers_or_mixed and not args.threads:  # those suites default to every CPU, and say so
        from .peers import all_cpus
        args.threads = all_cpus()
    info = machine_info(args.threads)
    if not quiet:
        print(f"machine: {info['cpu']} ({info['isa']}), {info['logical_cpus']} logical CPUs, graphc "
              f"{info['graphc_threads']} threads, graphc AVX2 kernels {info['avx2']}, GEMM {info['gemm_simd']}"
              f"{' (GRAPHC_SIMD)' if os.environ.get('GRAPHC_SIMD') else ''}")
        print(f"numpy {info['numpy']}, BLAS: {'; '.join(info['blas'])}; torch: {info['torch']}")
        print(f"python {info['python']}, {info['platform']}, {info['date']}")
        capped = {k: os.environ[k] for k in ISA_CAPS["avx2"] if os.environ.get(k)}
        if capped:
            print("instruction sets capped: " + " ".join(f"{k}={v!r}" for k, v in capped.items()))
    log = None if quiet else (lambda m: print(m, file=sys.stderr))
    results = run_suites(suites, sizes, args.repeats, args.threads, log, nodes, args.rss_steps,
                         split(args.peers), split(args.workloads), args.rounds, args.mixed_size,
                         None if args.min_batch_ms is None else args.min_batch_ms / 1e3)
    if not quiet:
        for suite, rows in results.items():
            print()
            print(_format(suite, rows))
    if args.json:
        doc = json.dumps({"machine": info, "results": results}, indent=2, default=str)
        if quiet:
            print(doc)
        else:
            with open(args.json, "w") as f:
                f.write(doc + "\n")
    return 0
