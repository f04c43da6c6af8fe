"""Smoke test of `graphc bench`: it runs and its --json output parses (no timing assertions)."""
import json

from graphc.tools.bench import main


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


def test_bench_compiler_suite_small(tmp_path, capsys):
    """The compiler suite at tiny sizes: tables print, and the JSON holds every table's keys."""
    path = tmp_path / "compiler.json"
    assert main(["--suite", "compiler", "--repeats", "1", "--nodes", "40,120", "--rss-steps", "3",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "passes on/off" in out and "compile time" in out and "RSS after step" in out
    res = json.loads(path.read_text())["results"]["compiler"]
    assert set(res) == {"mlp_passes", "mlp_passes_targets", "compile_time", "compile_time_targets", "rss"}
    rows = {(r["impl"].split()[0], r["passes"]) for r in res["mlp_passes"]}
    assert {("numpy", None), ("graphc", "on"), ("graphc", "off")} <= rows
    for r in res["mlp_passes"]:
        assert {"median_ms", "vs_numpy", "vs_torch", "max_rel_diff"} <= set(r)
        if r["passes"] is not None:
            assert {"steps", "arena_bytes", "naive_bytes"} <= set(r)
            assert 0 < r["arena_bytes"] <= r["naive_bytes"]
            assert r["max_rel_diff"] < 1e-4
    assert {"on_vs_numpy", "met_vs_numpy", "on_vs_torch", "met_vs_torch"} <= set(res["mlp_passes_targets"])
    assert [r["target_nodes"] for r in res["compile_time"]] == [40, 120]
    for r in res["compile_time"]:
        assert {"nodes", "steps", "compile_ms", "plan_ms", "lower_ms", "run_ms", "ms_per_node"} <= set(r)
        assert r["nodes"] > 0
    assert "per_node_growth" in res["compile_time_targets"]
    rss = res["rss"]
    assert [r["step"] for r in rss["rows"]] == [0, 1, 3]
    assert {"rss_bytes", "peak_bytes", "maxrss_bytes"} <= set(rss["rows"][0])
    assert {"growth_after_step1_bytes", "flat"} <= set(rss)
