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


# -- peers and mixed suites -----------------------------------------------------------------------
import importlib.util  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import graphc  # noqa: E402
from graphc.tools.bench import peers  # noqa: E402

HAVE_C = graphc.backend_info()["c_available"]


def _installed(mod):
    return importlib.util.find_spec(mod) is not None


def _rows(res, workload):
    return {r["peer"]: r for r in res["rows"] if r["workload"] == workload}


def test_peers_suite_end_to_end(tmp_path, capsys):
    """numpy, graphc C and PyTorch (when installed) each in a worker process, 2 rounds of two workloads
    (the W-mlp step is the small one's code at other sizes; test_peer_steps_match_numpy_in_process runs
    it): every peer's update after one step matches the NumPy step's, table and JSON carry the columns."""
    path = tmp_path / "peers.json"
    assert main(["--suite", "peers", "--peers", "numpy,graphc-c,torch", "--workloads", "lr,small", "--rounds", "2",
                 "--repeats", "1", "--min-batch-ms", "0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "AVX" in out and "2 interleaved rounds" in out
    assert peers.WORKLOADS["lr"] in out and peers.WORKLOADS["small"] in out and peers.WORKLOADS["mlp"] not in out
    doc = json.loads(path.read_text())
    assert {"isa", "date", "numpy"} <= set(doc["machine"])
    res = doc["results"]["peers"]
    assert res["threads"] == peers.all_cpus() and res["rounds"] == 2
    expected = {"numpy": True, "graphc-c": HAVE_C, "torch": _installed("torch")}
    assert {r["workload"] for r in res["rows"]} == {"lr", "small"}
    for w in ("lr", "small"):
        rows = _rows(res, w)
        assert set(rows) == set(expected)
        for p, present in expected.items():
            r = rows[p]
            if not present:
                assert r["status"] == "not installed" and r.get("median_us") is None
                continue
            assert r["status"] == "ok", r
            assert r["met_tolerance"], r
            assert r["update_rel_diff"] <= peers.TOLERANCE[r["dtype"]]
            assert r["rounds"] == 2 and r["median_us"] > 0 and r["min_us"] <= r["median_us"] <= r["max_us"]
            assert r["vs_best"] >= 1.0
        assert rows["numpy"]["vs_numpy"] == 1.0 and rows["numpy"]["update_rel_diff"] == 0.0
        assert min(r["vs_best"] for r in rows.values() if r.get("vs_best")) == 1.0
        timed = {p: r for p, r in rows.items() if r.get("median_us")}
        for p, r in timed.items():  # paired: round by round against the fastest other peer
            if len(timed) < 2:
                break
            other = min((q for q in timed if q != p), key=lambda q: timed[q]["median_us"])
            assert r["best_other"] == other
            want = np.median(np.array(r["rounds_us"]) / np.array(timed[other]["rounds_us"]))
            assert r["vs_best_other_paired"] == pytest.approx(want)
            ratios = np.array(r["rounds_us"]) / np.array(timed[other]["rounds_us"])
            q1, q3 = r["vs_best_other_paired_quartiles"]
            assert q1 <= r["vs_best_other_paired"] <= q3
            assert [q1, q3] == pytest.approx(np.percentile(ratios, [25, 75]))


@pytest.mark.skipif(not _installed("jax"), reason="jax not installed")
def test_peers_jax_worker_matches_numpy():
    """The jitted JAX step (donated parameters, x64 enabled in its worker) takes the NumPy step (the MLP
    code at the small sizes: jitting the W-mlp step too costs seconds)."""
    res = peers.peers_suite(["numpy", "jax"], ["lr", "small"], rounds=1, repeats=1, min_batch_s=0.0)
    for w in ("lr", "small"):
        r = _rows(res, w)["jax"]
        assert r["status"] == "ok" and r["met_tolerance"] and r["median_us"] > 0, r


@pytest.mark.skipif(not _installed("pytensor"), reason="pytensor not installed")
@pytest.mark.parametrize("workload", ["lr", "small"])
def test_pytensor_step_matches_numpy(workload):
    """PyTensor's compiled step with updates, built with the Python linker here: its C linker compiles
    for over a minute on an empty cache (the benchmark uses it; the graph is the same). The W-mlp step
    is the small one's code with bigger sizes."""
    from pytensor.compile.mode import Mode
    r = peers.check_one_step("pytensor", peers.workload_data(workload), Mode(linker="py", optimizer="fast_compile"))
    assert r["met_tolerance"], r
    assert r["loss"] == pytest.approx(r["numpy_loss"], rel=1e-5)


@pytest.mark.parametrize("workload", list(peers.WORKLOADS))
@pytest.mark.parametrize("peer", ["graphc-numpy", "graphc-c", "torch"])
def test_peer_steps_match_numpy_in_process(peer, workload):
    """One step of each peer from the same weights updates the parameters as the NumPy step does (and
    the NumPy step agrees with PyTorch's autograd, an independent oracle)."""
    if peer == "graphc-c" and not HAVE_C:
        pytest.skip("C extension not built")
    if peer == "torch" and not _installed("torch"):
        pytest.skip("torch not installed")
    r = peers.check_one_step(peer, peers.workload_data(workload))
    assert r["met_tolerance"], r
    assert r["loss"] == pytest.approx(r["numpy_loss"], rel=1e-5)


def test_peer_check_catches_a_wrong_step(monkeypatch):
    """The update check is not vacuous: a NumPy-written step that skips the bias update fails it."""
    from graphc.tools.bench import workloads
    real = workloads.numpy_mlp_step

    def no_bias_update(weights, lr):
        biases = [w.copy() for w in weights[1::2]]
        step = real(weights, lr)

        def wrong(x, y):
            loss = step(x, y)
            for w, b in zip(weights[1::2], biases):
                w[...] = b
            return loss
        return wrong

    data = peers.workload_data("small")
    good = peers.check_one_step("graphc-numpy", data)
    monkeypatch.setattr(workloads, "numpy_mlp_step", no_bias_update)  # the reference is now wrong
    bad = peers.check_one_step("graphc-numpy", data)
    assert good["met_tolerance"] and not bad["met_tolerance"] and bad["update_rel_diff"] > 0.5


def test_peers_missing_library_is_not_installed(tmp_path):
    """A peer whose import fails is listed as 'not installed'; the others still run."""
    fake = tmp_path / "fake" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    root = str(Path(graphc.__file__).resolve().parents[1])
    res = peers.peers_suite(["numpy", "jax"], ["lr"], rounds=1, repeats=1, min_batch_s=0.0,
                            extra_env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), root])})
    rows = _rows(res, "lr")
    assert rows["jax"]["status"] == "not installed" and rows["jax"].get("median_us") is None
    assert "hidden by the test" in res["peers"]["jax"]["reason"]
    assert rows["numpy"]["status"] == "ok" and rows["numpy"]["median_us"] > 0
    assert "not installed" in peers.format_tables(res)


def test_bench_rejects_unknown_peer():
    with pytest.raises(SystemExit):
        main(["--suite", "peers", "--peers", "numpy,nope"])


@pytest.mark.skipif(not HAVE_C, reason="C extension not built")
def test_mixed_small(tmp_path, capsys):
    """--mixed alone runs only that suite: GEMMs alone and interleaved, small MLP at 1 and 2 threads
    without and with a busy process, which is gone afterwards."""
    path = tmp_path / "mixed.json"
    assert main(["--mixed", "--mixed-size", "64", "--rounds", "1", "--repeats", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "interleaved" in out and "busy process" in out
    res = json.loads(path.read_text())["results"]
    assert set(res) == {"mixed"}
    g = res["mixed"]["gemm"]["rows"]
    assert [r["impl"].split()[0] for r in g] == ["graphc", "numpy", "control:"]
    assert g[2]["met"] is None and g[2]["alone_gflops"] == g[0]["alone_gflops"]
    assert g[0]["max_rel_diff"] < 1e-5
    for r in g:
        assert r["alone_gflops"] > 0 and r["interleaved_gflops"] > 0
        assert r["ratio"] == pytest.approx(r["interleaved_gflops"] / r["alone_gflops"])
    loaded = res["mixed"]["loaded"]["rows"]
    assert [(r["busy_pid"] is None, r["threads"]) for r in loaded] == [(True, 1), (True, 2), (False, 1), (False, 2)]
    # the small MLP step has no kernel large enough to split: 2 threads run the 1-thread code
    assert [r["parallel_regions"] for r in loaded] == [0, 0, 0, 0]
    assert res["mixed"]["loaded"]["same_code"] and res["mixed"]["loaded"]["met"]
    assert "the same code as 1 thread" in out
    pid = loaded[-1]["busy_pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.skipif(not HAVE_C, reason="C extension not built")
def test_instep_rebuilds_each_large_step_alone(capsys):
    """--suite instep: the W-mlp step's large kernels are timed inside the step and rebuilt alone
    with the same op, attributes and lowering (the side-by-side pair stays a pair)."""
    assert main(["--suite", "instep", "--repeats", "2", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "alone / in step" in out and "issue 14 asks >= 0.95" in out
    from graphc.tools.bench.instep import instep_table
    res = instep_table(repeats=2, rounds=2)
    whats = [r["what"] for r in res["rows"]]
    assert "dense 256x512" in whats and "matmul_update 784x512" in whats
    pair = next(r for r in res["rows"] if r["what"] == "matmul_act_grad 256x512 + matmul_update 512x256")
    assert "," in pair["steps"] and pair["alone_as"] == "side by side"
    for r in res["rows"]:  # a step with integer inputs (labels) is not rebuilt: its row has no alone time
        assert r["in_step_us"] > 0
        if r["alone_us"] is not None:
            assert r["alone_us"] > 0 and r["kept"] > 0  # the median of the rounds' alone / in-step ratios
    assert 0.5 < res["covered"] <= 1.0 and res["rounds"] == 2
    assert res["kept_range"][0] <= res["kept"] <= res["kept_range"][1]


def test_gemm_suite_times_each_library_in_its_own_process():
    """graphc's GEMM and numpy.matmul are timed in two worker processes (not this one), on the same
    operands: graphc's product is checked against float64 NumPy there."""
    import os

    import pytest

    import graphc
    from graphc.tools.bench.gemm import format_table, gemm_table
    if not graphc.backend_info()["c_available"]:
        pytest.skip("the C extension is not built")
    rows = gemm_table(sizes=(48,), dtypes=("float32", "float64"), threads=1, repeats=1, extra_shapes=False,
                      rounds=2, pause_s=0.0)
    assert [(r["name"], r["dtype"]) for r in rows] == [("48^3", "float32"), ("48^3", "float64")]
    for r in rows:
        assert len({r["graphc_pid"], r["numpy_pid"], os.getpid()}) == 3
        assert r["graphc_gflops"] > 0 and r["numpy_gflops"] > 0 and r["ratio"] > 0
        assert r["max_rel_err"] < (1e-5 if r["dtype"] == "float32" else 1e-13)
    assert "48^3" in format_table(rows)


def test_isa_cap_runs_the_bench_in_a_capped_child(tmp_path):
    """--isa avx2 reruns the whole bench in a child process whose libraries are capped to AVX2:
    graphc's GEMM reports the AVX2 level (on a CPU that has it) and the JSON says so."""
    import subprocess
    import sys
    if not graphc.backend_info()["c_available"]:
        pytest.skip("C extension not built")
    out = tmp_path / "isa.json"
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPHC_SIMD", "OPENBLAS_CORETYPE")}
    subprocess.run([sys.executable, "-m", "graphc.tools.cli", "bench", "--suite", "lr", "--repeats", "2",
                    "--isa", "avx2", "--json", str(out)], env=env, check=True, capture_output=True, text=True)
    machine = json.loads(out.read_text())["machine"]
    have = graphc.backend_info()["gemm_simd"]
    if have not in ("avx2", "avx512"):
        pytest.skip(f"this CPU's GEMM level is {have}: nothing to cap")
    assert machine["gemm_simd"] == "avx2"
    assert graphc.backend_info()["gemm_simd"] == have  # this process was left alone
    openblas = [b for b in machine["blas"] if b.startswith("openblas")]
    assert all("(Haswell)" in b for b in openblas), openblas  # NumPy's DYNAMIC_ARCH OpenBLAS took the cap


def test_elf_symbols_reads_the_symbol_table_like_the_dynamic_loader():
    """ynn_cap's ELF reader: graphc's own extension, an exported function's address from the
    symbol table plus the load address equals the address the dynamic loader gives ctypes."""
    import ctypes

    from graphc.tools.bench.ynn_cap import _loaded, elf_symbols
    if not graphc.backend_info()["c_available"]:
        pytest.skip("C extension not built")
    from graphc import _cgraphc
    lib = ctypes.CDLL(_cgraphc.__file__)
    where = _loaded(os.path.basename(_cgraphc.__file__))
    assert where is not None
    syms = elf_symbols(where[0], ["gc_sgemm", "gc_dgemm", "no_such_symbol_anywhere"])
    assert set(syms) == {"gc_sgemm", "gc_dgemm"}
    for name, value in syms.items():
        assert where[1] + value == ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    with pytest.raises(ValueError, match="not a 64-bit"):
        elf_symbols(__file__, ["x"])


def test_ynn_cap_keeps_jax_matmuls_correct():
    """--isa avx2's JAX worker presets YNNPACK's cpuid cache; a matmul afterwards still agrees with
    NumPy (the kernels it picks are the AVX2+FMA3 ones, shown by `perf report` in the README)."""
    import subprocess
    import sys
    pytest.importorskip("jax")
    code = ("import jax, jax.numpy as jnp, numpy as np\n"
            "from graphc.tools.bench.ynn_cap import cap_ynn_to_avx2\n"
            "print(cap_ynn_to_avx2())\n"
            "a = np.random.default_rng(0).standard_normal((256, 300)).astype(np.float32)\n"
            "b = np.random.default_rng(1).standard_normal((300, 129)).astype(np.float32)\n"
            "c = np.asarray(jax.jit(jnp.dot)(a, b))\n"
            "print(float(np.abs(c - a.astype(np.float64) @ b).max()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith(("avx2+fma3", "not capped")), out
    assert float(out[1]) < 1e-3
