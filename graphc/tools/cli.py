"""The `graphc` command. Each subcommand lives in its own module and is imported on use."""
from __future__ import annotations

import importlib
import sys

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
              "benchmarks: GEMM, MLP/logistic-regression steps, dispatch overhead"),
    "info": ("graphc.tools.cli", "info_main", "print the backend in use, SIMD level and thread count"),
}


def info_main(argv) -> int:
    import graphc
    for k, v in graphc.backend_info().items():
        print(f"{k}: {v}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: graphc <command> [options]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:8s} {text}")
        print("\n`graphc <command> --help` shows a command's options.")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"graphc: unknown command {name!r}; try `graphc --help`", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
