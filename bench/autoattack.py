"""AutoAttack and APGD on the demo's models: robust accuracy per attack, AutoAttack wall time, and APGD-CE
speed of graphc against ART's AutoProjectedGradientDescent run through graphc's ART adapter.

    python bench/autoattack.py [--n 500] [--eps 0.05,0.1,0.2] [--rounds 3] [--threads 1] [--models mlp,adv,cnn]
                               [--json PATH]

Models (the demo's recipes, trained once here on digits with test_size=0.3 so that 500 test points
exist): "mlp" (64-128-10, Adam 0.01, batch 32, 15 epochs), "adv" (the same, adversarially trained with
10-step PGD at ε = 0.1 as `graphc demo` does), "cnn" (SmallCNN 16/32 channels, 15 epochs).

Timings: every measured peer runs in its own process (one thread for graphc and BLAS unless
--threads), the processes of the peers alternate round by round, and the tables give medians over
rounds. Within a process the attack runs once to warm up (compile plans, fill caches) and then once
timed. Nothing here is a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def _data(n: int):
    from graphc import data
    s = data.load("digits", seed=0, test_size=0.3)
    if len(s.X_test) < n:
        raise SystemExit(f"only {len(s.X_test)} test points")
    return s, s.X_test[:n], s.y_test[:n]


def _train(kind: str, s):
    from graphc import attacks, nn, optim
    from graphc.learn.train import Trainer
    if kind == "cnn":
        model = nn.SmallCNN(1, 8, 10, seed=0, flat_input=True)
    else:
        model = nn.MLP([64, 128, 10], seed=0)
    trainer = Trainer(model, optim.Adam(0.01), batch_size=32, seed=0, progress=False)
    if kind == "adv":
        attacks.adversarial_training(model, s.X_train, s.y_train, 0.1, steps=10, epochs=15, seed=0, trainer=trainer)
    else:
        trainer.fit(s.X_train, s.y_train, 15)
    return model


# -- workers (one process each) ---------------------------------------------------------------------------
def _worker(args) -> dict:
    from graphc import attacks, nn
    from graphc.learn.train import accuracy, limit_threads
    _, x, y = _data(args.n)
    model = nn.Module.load(args.model_path)
    with limit_threads(args.threads):
        if args.worker == "autoattack":
            def run():
                return attacks.autoattack(model, x, y, args.eps_one, version="standard", warn=False)
        elif args.worker == "apgd-graphc":
            def run():
                return attacks.apgd(model, x, y, args.eps_one, steps=100), None
        elif args.worker == "apgd-art":
            from art.attacks.evasion import AutoProjectedGradientDescent
            clf = attacks.art_classifier(model, (64,), 10)
            onehot = np.eye(10, dtype=np.float32)[y]

            def run():
                attack = AutoProjectedGradientDescent(clf, norm=np.inf, eps=args.eps_one, eps_step=2 * args.eps_one,
                                                      max_iter=100, nb_random_init=1, batch_size=len(x), verbose=False)
                np.random.seed(0)
                return attack.generate(x, y=onehot), None
        else:
            raise SystemExit(f"unknown worker {args.worker}")
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        x_adv, report = run()
        seconds = time.perf_counter() - t0
    out = {"first": first, "seconds": seconds, "robust_acc": accuracy(model, x_adv, y),
           "attacked": int((model_predict(model, x) == y).sum())}
    if report is not None:
        out["stages"] = [{k: s[k] for k in ("name", "attacked", "fooled", "robust_acc", "seconds")}
                         for s in report.stages]
    return out


def model_predict(model, x):
    import graphc as gc
    return gc.predict(model, x)


def _spawn(worker: str, model_path: str, eps: float, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--model-path", model_path,
           "--eps-one", str(eps), "--n", str(args.n), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               GRAPHC_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"worker {worker} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the robustness table (in this process) ------------------------------------------------------------------
def robustness_table(model, x, y, eps_list, threads) -> list:
    from graphc import attacks
    from graphc.learn.train import accuracy, limit_threads
    rows = []
    with limit_threads(threads):
        for eps in eps_list:
            row = {"eps": eps, "clean": accuracy(model, x, y),
                   "fgsm": accuracy(model, attacks.fgsm(model, x, y, eps), y),
                   "pgd-10": accuracy(model, attacks.pgd(model, x, y, eps, steps=10), y),
                   "apgd-ce": accuracy(model, attacks.apgd(model, x, y, eps, on_masking="ignore"), y),
                   "apgd-t": accuracy(model, attacks.apgd(model, x, y, eps, loss="dlr", targeted=True,
                                                          on_masking="ignore"), y),
                   "square": accuracy(model, attacks.square(model, x, y, eps, queries=5000), y)}
            t0 = time.perf_counter()
            x_adv, rep = attacks.autoattack(model, x, y, eps, version="standard", warn=False)
            row["autoattack"] = rep.robust_acc
            row["aa_seconds"] = time.perf_counter() - t0
            row["checks_fired"] = [c.name for c in rep.checks.fired]
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="test points (default 500)")
    p.add_argument("--eps", default="0.05,0.1,0.2", help="ε for the robustness table (L∞)")
    p.add_argument("--time-eps", type=float, default=0.1, help="ε of the timed runs (default 0.1)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, peers alternating (default 3)")
    p.add_argument("--threads", type=int, default=1, help="graphc and BLAS threads (default 1)")
    p.add_argument("--models", default="mlp,adv,cnn", help="mlp, adv, cnn (default all)")
    p.add_argument("--no-table", action="store_true", help="skip the robustness table (timings only)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--eps-one", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    from graphc.learn.train import accuracy, limit_threads
    from graphc.tools.bench import machine_info
    info = machine_info(args.threads)
    import art
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs; graphc {info['graphc_threads']} thread(s), "
          f"C backend {info['c_available']}, AVX2 {info['avx2']}")
    print(f"python {info['python']}, numpy {info['numpy']}, ART {art.__version__}, {info['platform']}, {info['date']}")
    print(f"BLAS: {'; '.join(info['blas'])}")
    s, x, y = _data(args.n)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    eps_list = [float(e) for e in args.eps.split(",")]
    results = {"machine": info, "n": args.n, "models": {}}
    with tempfile.TemporaryDirectory() as tmp, limit_threads(args.threads):
        paths = {}
        for kind in kinds:
            t0 = time.perf_counter()
            model = _train(kind, s)
            paths[kind] = os.path.join(tmp, f"{kind}.npz")
            model.save(paths[kind])
            print(f"\ntrained {kind}: {type(model).__name__}, clean test accuracy {accuracy(model, x, y):.2%} on "
                  f"{args.n} points ({time.perf_counter() - t0:.1f} s)")
            results["models"][kind] = {"clean": accuracy(model, x, y)}
            if not args.no_table:
                rows = robustness_table(model, x, y, eps_list, args.threads)
                results["models"][kind]["table"] = rows
                cols = ["clean", "fgsm", "pgd-10", "apgd-ce", "apgd-t", "square", "autoattack"]
                print(f"robust accuracy, {kind}, L∞, {args.n} test points (Square 5,000 queries; AutoAttack "
                      f"standard = APGD-CE → APGD-T (9 targets) → Square)")
                print(f"{'eps':>5}  " + "  ".join(f"{c:>10}" for c in cols) + "  AA seconds  checks fired")
                for r in rows:
                    print(f"{r['eps']:>5.2f}  " + "  ".join(f"{r[c]:>10.2%}" for c in cols)
                          + f"  {r['aa_seconds']:>10.1f}  {','.join(r['checks_fired']) or '-'}")

        # timings, each peer in its own process, peers alternating
        timed = {}
        for r in range(args.rounds):
            for kind in kinds:
                for worker in ("autoattack", "apgd-graphc", "apgd-art"):
                    timed.setdefault((kind, worker), []).append(_spawn(worker, paths[kind], args.time_eps, args))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"\ntimings at ε = {args.time_eps} on {args.n} points, {args.threads} thread(s), medians of {args.rounds} "
          f"rounds (each peer in its own process; first = the warm-up run incl. compilation)")
    print(f"{'model':6} {'run':22} {'seconds':>8} {'first':>8} {'robust acc':>10} {'sample-steps/s':>14} "
          f"{'x ART':>6}")
    for kind in kinds:
        med = {w: {k: float(np.median([t[k] for t in timed[(kind, w)]])) for k in ("seconds", "first", "robust_acc")}
               for w in ("autoattack", "apgd-graphc", "apgd-art")}
        attacked = timed[(kind, "apgd-graphc")][0]["attacked"]
        for w, label in (("autoattack", "AutoAttack standard"), ("apgd-graphc", "APGD-CE graphc"),
                         ("apgd-art", "APGD-CE ART (adapter)")):
            rate = attacked * 100 / med[w]["seconds"] if w != "autoattack" else None
            ratio = med["apgd-art"]["seconds"] / med[w]["seconds"] if w == "apgd-graphc" else None
            print(f"{kind:6} {label:22} {med[w]['seconds']:>8.2f} {med[w]['first']:>8.2f} "
                  f"{med[w]['robust_acc']:>10.2%} {'' if rate is None else f'{rate:,.0f}':>14} "
                  f"{'' if ratio is None else f'{ratio:.1f}':>6}")
        stages = timed[(kind, "autoattack")][-1].get("stages", [])
        print("       AutoAttack stages (last round): " + ", ".join(
            f"{st['name']} {st['seconds']:.2f} s on {st['attacked']} points" for st in stages))
        results["models"][kind]["timings"] = {w: timed[(kind, w)] for w in ("autoattack", "apgd-graphc", "apgd-art")}
    print("sample-steps/s: (clean-correct points) × 100 steps / seconds — the nominal work; graphc stops a point at "
          "its first success, ART runs every point for all 100 steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
