"""Smoke test of `graphc bench`: it runs and its --json output parses (no timing assertions)."""
import json

from graphc.bench import main


def test_bench_dispatch_json_parses(capsys):
    assert main(["--suite", "dispatch", "--repeats", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"cpu", "logical_cpus", "graphc_threads", "numpy", "date", "blas", "torch"} <= set(doc["machine"])
    rows = doc["results"]["dispatch"]
    assert {r["impl"] for r in rows} >= {"graphc numpy", "numpy hand-written"}
    assert all(r["us_per_call"] > 0 for r in rows)


def test_bench_tables_and_json_file(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--suite", "lr,dispatch", "--repeats", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "W-lr" in out and "dispatch" in out
    assert set(json.loads(path.read_text())["results"]) == {"lr", "dispatch"}
