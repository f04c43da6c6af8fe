"""`graphc fuzz`: the random-graph property from the command line, its summary, its reproducers."""
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

import graphc.backends
from graphc.ops import REGISTRY
from graphc.tools import cli
from graphc.verify import fuzz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"graphc fuzz: (\d+) graphs tried, (\d+) nodes checked, (\d+)/(\d+) ops covered, "
                     r"(\d+) failures \((\d+) at kinks; backends ([a-z, ]+); seed (\d+); [\d.]+ s\)")


def _summary(text: str) -> re.Match:
    m = SUMMARY.search(text)
    assert m, text
    return m


def test_fuzz_is_green_and_prints_the_summary(capsys):
    assert fuzz.main(["--max-examples", "40", "--seed", "1", "--no-progress"]) == 0
    m = _summary(capsys.readouterr().out)
    assert int(m.group(1)) == 40 and int(m.group(2)) > 40 and int(m.group(3)) >= 15
    assert m.group(5) == "0" and m.group(8) == "1"
    expected = "c, numpy" if graphc.backends.C_AVAILABLE else "numpy"
    assert m.group(7) == expected


def test_same_seed_same_graphs(capsys):
    runs = []
    for _ in range(2):
        assert fuzz.main(["--max-examples", "15", "--seed", "5", "--backend", "numpy", "--dtype", "float64"]) == 0
        m = _summary(capsys.readouterr().out)
        runs.append(m.groups()[:4])
    assert runs[0] == runs[1]


def test_cli_dispatch_and_help(capsys):
    assert cli.main(["fuzz", "--max-examples", "5", "--backend", "numpy", "--ops", "tanh,matmul,grad"]) == 0
    _summary(capsys.readouterr().out)
    with pytest.raises(SystemExit) as exc:
        cli.main(["fuzz", "--help"])
    assert exc.value.code == 0 and "--max-examples" in capsys.readouterr().out


def test_time_budget_stops_the_run(capsys):
    start = time.monotonic()
    assert fuzz.main(["--seconds", "1.5", "--backend", "numpy", "--chunk", "10"]) == 0
    assert time.monotonic() - start < 20
    assert int(_summary(capsys.readouterr().out).group(1)) > 0


def test_c_backend_missing_is_skipped_with_a_warning(monkeypatch, capsys):
    monkeypatch.setattr(graphc.backends, "C_AVAILABLE", False)
    with pytest.warns(RuntimeWarning, match="skipping the C backend"):
        assert fuzz.main(["--max-examples", "3", "--backend", "c,numpy"]) == 0
    assert _summary(capsys.readouterr().out).group(7) == "numpy"
    with pytest.warns(RuntimeWarning), pytest.raises(SystemExit, match="no backend"):
        fuzz.main(["--max-examples", "3", "--backend", "c"])


BUGGY_MODULE = textwrap.dedent('''
    """Registers tanh_scaled: a copy of tanh whose VJP is twice too large."""
    import dataclasses

    from graphc.ops import REGISTRY

    REGISTRY["tanh_scaled"] = dataclasses.replace(
        REGISTRY["tanh"], name="tanh_scaled", vjp=lambda g, out, x: [2 * g * (1 - out * out)])
''')


@pytest.fixture
def buggy_module(tmp_path, monkeypatch):
    (tmp_path / "graphc_fuzz_buggy.py").write_text(BUGGY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    REGISTRY.pop("tanh_scaled", None)
    sys.modules.pop("graphc_fuzz_buggy", None)


def test_failure_is_shrunk_written_and_reproduced(buggy_module, capsys):
    out = buggy_module / "repro.py"
    code = fuzz.main(["--max-examples", "100", "--seed", "3", "--ops", "tanh_scaled,add,matmul,sum",
                      "--import", "graphc_fuzz_buggy", "--backend", "numpy", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1, text
    m = _summary(text)
    assert m.group(5) == "1" and "FAILURE" in text and "tanh_scaled" in text
    src = out.read_text()
    assert "import graphc_fuzz_buggy" in src and 'apply("tanh_scaled"' in src
    assert src.count("gc.placeholder(") <= 2  # shrunk: hypothesis keeps what the failure needs
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(buggy_module)]))
    run = subprocess.run([sys.executable, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "gradcheck FAILED" in run.stdout and "tanh_scaled" in run.stdout


def test_reproducer_of_a_fixed_bug_exits_zero(buggy_module, capsys):
    out = buggy_module / "repro.py"
    assert fuzz.main(["--max-examples", "50", "--ops", "tanh_scaled", "--import", "graphc_fuzz_buggy",
                      "--backend", "numpy", "--out", str(out)]) == 1
    capsys.readouterr()
    # "fix" the op in the module the reproducer imports: the reproducer now passes
    (buggy_module / "graphc_fuzz_buggy.py").write_text(BUGGY_MODULE.replace("2 * g", "g"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(buggy_module)]))
    run = subprocess.run([sys.executable, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "no longer reproduces" in run.stdout, run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GRAPHC_SLOW_TESTS"), reason="set GRAPHC_SLOW_TESTS=1 (about 10 s)")
def test_two_hundred_examples_in_under_two_minutes():
    start = time.monotonic()
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "graphc.tools.cli", "fuzz", "--max-examples", "200"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert time.monotonic() - start < 120
    assert _summary(run.stdout).group(1) == "200"

