"""Imported ONNX models: conformance run time, and PGD on the light ResNet-50.

    python bench/onnx_models.py [--repeats 3] [--backends c,numpy] [--threads 2]

Each backend runs in its own process (rounds interleaved), and medians of --repeats are printed
with the machine, versions and thread count. Measured: importing light ResNet-50 (random He
weights in place of its constant fills, 25.6 M parameters), one forward pass (batch 1, 224x224),
10 PGD steps (each a forward and backward pass), and gc.gradcheck(mode="fast") of the
cross-entropy's input gradient.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _one_round(backend: str) -> dict:
    import warnings

    import numpy as np

    import graphc as gc
    import graphc.onnx
    from graphc.tools.onnx_conformance import light_model_with_random_weights
    proto = light_model_with_random_weights("resnet50")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = gc.onnx.load(proto)
    out = {"load_s": time.perf_counter() - t}
    x = np.random.default_rng(1).random((1, 3, 224, 224)).astype(np.float32)
    gc.predict_logits(model, x, backend=backend)  # compiles
    t = time.perf_counter()
    y = gc.predict(model, x, backend=backend)
    out["forward_s"] = time.perf_counter() - t
    gc.attacks.pgd(model, x, y, eps=4 / 255, steps=1, backend=backend)  # compiles the gradient graph
    t = time.perf_counter()
    gc.attacks.pgd(model, x, y, eps=4 / 255, steps=10, backend=backend)
    out["pgd10_s"] = time.perf_counter() - t
    xp, yp = gc.placeholder("x", (None, 3, 224, 224)), gc.placeholder("y", (None,), "int64")
    t = time.perf_counter()
    report = gc.gradcheck(gc.softmax_cross_entropy(model(xp), yp), {xp: x, yp: y}, mode="fast", backend=backend)
    out["gradcheck_s"] = time.perf_counter() - t
    out["gradcheck_ok"] = bool(report)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", default="c,numpy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_one_round(args.worker)))
        return 0
    import numpy as np
    import onnx

    import graphc
    env = dict(os.environ, GRAPHC_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), PYTHONPATH=os.path.dirname(os.path.dirname(
                   os.path.abspath(__file__))))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = {b: [] for b in backends}
    for _ in range(args.repeats):
        for b in backends:  # rounds interleaved, each backend in its own process
            done = subprocess.run([sys.executable, __file__, "--worker", b], env=env, capture_output=True, text=True,
                                  check=True)
            rows[b].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; python {platform.python_version()}, numpy {np.__version__}, onnx "
          f"{onnx.__version__}, graphc {graphc.__version__}; {args.threads} threads; medians of {args.repeats}")
    print(f"{'light ResNet-50, batch 1':28s} {'load s':>7s} {'forward s':>9s} {'PGD 10 steps s':>14s} "
          f"{'gradcheck s':>11s}  gradcheck")
    for b, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("load_s", "forward_s", "pgd10_s", "gradcheck_s")}
        print(f"{'graphc ' + b:28s} {med['load_s']:7.2f} {med['forward_s']:9.2f} {med['pgd10_s']:14.1f} "
              f"{med['gradcheck_s']:11.1f}  {'pass' if all(r['gradcheck_ok'] for r in rs) else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
