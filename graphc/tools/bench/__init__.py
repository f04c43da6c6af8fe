"""`graphc bench`: GEMM, MLP and logistic-regression training steps, per-call dispatch overhead, compiler.

    graphc bench [--suite gemm,mlp,lr,dispatch,compiler] [--sizes 256,512] [--repeats R] [--threads N]
                 [--nodes 100,1000,10000] [--rss-steps 1000] [--json [PATH]]

Prints the machine (CPU, cores, thread counts, library versions, date) and one table per suite.
--json alone prints one JSON document instead of the tables; --json PATH also writes it there.
The workloads are described in graphc.bench.workloads; the GEMM table in graphc.bench.gemm; the
compiler suite (passes on/off, arena bytes, compile time vs graph size, RSS) in graphc.bench.compiler.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

SUITES = ("gemm", "mlp", "lr", "dispatch", "compiler")


def machine_info(threads=None) -> dict:
    """Where the numbers come from: CPU, cores, thread counts, versions, date."""
    import graphc as gc

    from .gemm import cpu_model
    info = gc.backend_info()
    out = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "graphc_threads": threads or info["threads"],
        "avx2": info["avx2"], "c_available": info["c_available"], "python": platform.python_version(),
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
    if suite == "lr":
        return _table(rows, [("impl", "W-lr step (30->1, 569 samples, f64)", "{}"),
                             ("median_us", "us", "{:.1f}"), ("vs_numpy", "x numpy", "{:.2f}")])
    return _table(rows, [("impl", "dispatch (50 elementwise ops, 16 elements)", "{}"),
                         ("optimize", "passes", "{}"), ("steps", "steps", "{}"),
                         ("us_per_call", "us/call", "{:.2f}")])


def run_suites(suites, sizes=None, repeats=None, threads=None, log=None, nodes=None, rss_steps=None) -> dict:
    from . import workloads
    results = {}
    with workloads.thread_limits(threads):
        for suite in suites:
            if log:
                log(f"running {suite} ...")
            if suite == "gemm":
                from .gemm import gemm_table
                kw = {"repeats": repeats} if repeats else {}
                if sizes:
                    kw["sizes"] = tuple(sizes)
                results[suite] = gemm_table(threads=threads, **kw)
            elif suite == "mlp":
                results[suite] = workloads.mlp_table(repeats=repeats or 20)
            elif suite == "lr":
                results[suite] = workloads.lr_table(repeats=repeats or 20)
            elif suite == "compiler":
                from .compiler import compiler_suite
                results[suite] = compiler_suite(repeats, nodes, rss_steps, threads)
            else:
                results[suite] = workloads.dispatch_table(repeats=repeats or 20)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="graphc bench", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    p.add_argument("--sizes", default=None, help="GEMM square sizes, comma separated (default 256,512,1024,2048)")
    p.add_argument("--repeats", type=int, default=None, help="measurements per median (default per suite)")
    p.add_argument("--threads", type=int, default=None, help="threads for graphc, NumPy's BLAS and PyTorch")
    p.add_argument("--nodes", default=None, help="compiler suite: graph sizes in nodes (default 100,1000,10000)")
    p.add_argument("--rss-steps", type=int, default=None, help="compiler suite: W-mlp steps for the RSS series "
                                                                "(default 1000)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="print JSON instead of tables (or, with PATH, also write it there)")
    args = p.parse_args(argv)
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    bad = [s for s in suites if s not in SUITES]
    if bad:
        p.error(f"unknown suite(s) {bad}; choose from {SUITES}")
    sizes = [int(s) for s in args.sizes.split(",") if s] if args.sizes else None
    nodes = [int(s) for s in args.nodes.split(",") if s] if args.nodes else None
    quiet = args.json == "-"
    info = machine_info(args.threads)
    if not quiet:
        print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, graphc {info['graphc_threads']} "
              f"threads, AVX2 {info['avx2']}")
        print(f"numpy {info['numpy']}, BLAS: {'; '.join(info['blas'])}; torch: {info['torch']}")
        print(f"python {info['python']}, {info['platform']}, {info['date']}")
    log = None if quiet else (lambda m: print(m, file=sys.stderr))
    results = run_suites(suites, sizes, args.repeats, args.threads, log, nodes, args.rss_steps)
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
