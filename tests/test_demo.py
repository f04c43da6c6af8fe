"""The `graphc demo`, `graphc train` and `graphc attack` commands end to end (CI runs these)."""
import os
import subprocess
import sys
import time

import pytest

from graphc import nn, viz
from graphc.tools import cli

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_PNGS = ["training.png", "robustness.png", "adversarial_examples.png", "decision_boundary_logreg.png",
             "decision_boundary_mlp.png", "graph.png"]


def test_graphc_demo_one_epoch_writes_its_pngs(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphc.tools.cli", "demo", "--epochs", "1", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for section in ("1. standard training", "2. attacks", "3. adversarial training", "4. test accuracy before"):
        assert section in text
    assert "fgsm: clean accuracy" in text and "pgd: clean accuracy" in text
    assert "autoattack: clean accuracy" in text and "AutoAttack adv-trained" in text  # the AutoAttack row
    assert "PGD robust accuracy at ε=0.1" in text
    assert f"Output folder: {out}" in text
    for name in DEMO_PNGS:
        assert viz.is_png(out / name), name
    assert seconds < 60, seconds  # typically ~6 s on 2 cores


def test_graphc_train_and_attack_subcommands(tmp_path, capsys):
    model_path = tmp_path / "lr.npz"
    assert cli.main(["train", "--data", "breast_cancer", "--model", "logreg", "--optimizer", "sgd", "--epochs", "5",
                     "--save", str(model_path), "--out", str(tmp_path / "train"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "train acc" in out
    assert viz.is_png(tmp_path / "train" / "training.png")
    assert isinstance(nn.Module.load(model_path), nn.LogisticRegression)

    assert cli.main(["attack", "--load", str(model_path), "--data", "breast_cancer", "--attack", "fgsm,pgd_l2",
                     "--eps", "0.5,1.0", "--steps", "5", "--out", str(tmp_path / "attack")]) == 0
    out = capsys.readouterr().out
    assert "fgsm: clean accuracy" in out and "pgd_l2: clean accuracy" in out
    assert viz.is_png(tmp_path / "attack" / "robustness.png")


def test_train_a_cnn_from_the_command_line(capsys):
    assert cli.main(["train", "--model", "cnn", "--epochs", "1", "--no-progress", "--seed", "1"]) == 0
    assert "SmallCNN" in capsys.readouterr().out


def test_bad_arguments_are_reported():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--eps", "big"])
    with pytest.raises(ValueError, match="unknown dataset"):
        cli.main(["train", "--data", "cifar10", "--epochs", "1"])
    with pytest.raises(ValueError, match="logistic regression is binary"):
        cli.main(["train", "--model", "logreg", "--epochs", "1"])
