"""The `graphc` command. Each subcommand lives in its own module and is imported on use."""
from __future__ import annotations

import importlib
import sys

from ..ir.errors import MissingExtra

# subcommand -> (module, function taking argv, one-line help)
COMMANDS = {
    "demo": ("graphc.tools.demo", "demo_main",
             "train an MLP on digits, attack it (FGSM/PGD/AutoAttack), adversarially train, plot"),
    "train": ("graphc.tools.demo", "train_main", "train a model on a bundled dataset"),
    "attack": ("graphc.tools.demo", "attack_main",
               "train (or load) a model and attack it: FGSM, PGD, APGD, Square, C&W, DeepFool, AutoAttack"),
    "fuzz": ("graphc.verify.fuzz", "main",
             "random-graph gradient fuzzing: C vs NumPy vs finite differences"),
    "bench": ("graphc.tools.bench", "main",
              "benchmarks: GEMM, training steps, dispatch, compiler; peers in own processes; --mixed"),
    "info": ("graphc.tools.cli", "info_main",
             "print the backend in use, SIMD level and thread count (--model x.onnx: an imported ONNX model)"),
}


def info_main(argv) -> int:
    import argparse

    import graphc
    p = argparse.ArgumentParser(prog="graphc info", description="Print the backend in use, whether the AVX2+FMA "
                                "kernels run, the thread count and the graphc version; with --model, an ONNX model "
                                "as graphc imports it.")
    p.add_argument("--model", default=None, help="an ONNX file: print its layers, parameter count and what was cut")
    args = p.parse_args(argv)
    if args.model:
        import warnings

        from graphc.interop.onnx import ImportNote, load
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportNote)  # summary() lists them
            try:
                model = load(args.model)
            except (graphc.GraphError, FileNotFoundError) as exc:
                print(f"graphc info: {exc}", file=sys.stderr)
                return 2
        print(model.summary())
        return 0
    print(f"graphc: {graphc.__version__}")
    for k, v in graphc.backend_info().items():
        print(f"{k}: {v}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: graphc <command> [options]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:8s} {text}")
        print("\n`graphc <command> --help` shows a command's options; `graphc --version` the version.")
        return 0
    if argv[0] in ("-V", "--version"):
        import graphc
        print(f"graphc {graphc.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"graphc: unknown command {name!r}; try `graphc --help`", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except MissingExtra as exc:  # an optional dependency the command needs is not installed
        print(f"graphc {name}: {exc}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
