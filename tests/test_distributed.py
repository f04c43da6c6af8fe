"""graphc.distributed on a real Dask LocalCluster (two single-threaded worker processes, started
once for this module): distributed evaluate == serial, fuzzing campaigns, sweeps, data-parallel
training == single-process training, worker faults, task errors and the --cluster commands."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

dask_distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")

import graphc as gc  # noqa: E402
from graphc import attacks, nn, optim  # noqa: E402
from graphc import distributed as gd  # noqa: E402
from graphc.learn.train import Trainer, limit_threads  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The attack callables defined below reach the workers by reference: local workers start with this
# process's sys.path, so they import this module (once, on first use).


@pytest.fixture(scope="module")
def client():
    cluster = dask_distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
    client = dask_distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with limit_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    from graphc import data
    return data.load("digits", seed=0)


@pytest.fixture(scope="module")
def model(digits):
    m = nn.MLP([64, 32, 10], seed=0)
    Trainer(m, optim.Adam(0.01), batch_size=32, seed=0).fit(digits.X_train, digits.y_train, 4)
    return m


def same_rows(a, b):
    """Two RobustnessReports with the same rows (the names may differ, e.g. a wrapped attack)."""
    assert (a.n, a.clean_acc, a.n_correct) == (b.n, b.clean_acc, b.n_correct)
    assert a.rows == b.rows


# -- evaluate == serial ------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [7, 1024])
def test_evaluate_equals_serial_for_fgsm_and_pgd_with_random_start(client, model, digits, chunk):
    # chunk 7: 65 chunks of the 450 test rows; chunk 1024: the 1,347 training rows in two chunks
    X, Y = (digits.X_test, digits.y_test) if chunk == 7 else (digits.X_train, digits.y_train)
    eps = (0.05, 0.1)
    rep = gd.evaluate(model, X, Y, attacks=("fgsm", ("pgd", {"seed": 3})), eps=eps, client=client, chunk=chunk,
                      keep_adversarial=True)
    assert rep.complete and not rep.missing and rep.n == len(X) and rep.workers == 2
    assert rep.tasks == -(-len(X) // chunk) * (1 + 2 * len(eps))
    np.testing.assert_array_equal(rep.index, np.arange(len(X)))
    for name in ("fgsm", "pgd"):
        kw = {"seed": 3} if name == "pgd" else {}
        serial = attacks.evaluate(model, X, Y, name, eps=eps, **kw)
        assert rep[name].to_dict() == serial.to_dict()
        for e in eps:  # the adversarial examples themselves, bit for bit
            np.testing.assert_array_equal(rep.adversarial[(name, e)], attacks.ATTACKS[name](model, X, Y, e, **kw))
    assert 0.0 < rep["pgd"].robust_acc[-1] < rep["pgd"].clean_acc  # the attack does something


def test_l2_pgd_chunks_that_are_multiples_of_the_batch_size_are_bitwise_serial(client, model, digits):
    X, Y = digits.X_train, digits.y_train
    rep = gd.evaluate(model, X, Y, attacks="pgd", eps=(0.5,), norm=2, client=client, chunk=1024, seed=1)
    assert list(rep) == ["pgd_l2"]
    assert rep["pgd_l2"].to_dict() == attacks.evaluate(model, X, Y, "pgd", eps=(0.5,), norm=2, seed=1).to_dict()
    # any other chunk size: the same examples to rounding (see graphc.distributed.evaluation)
    rep7 = gd.evaluate(model, X[:140], Y[:140], attacks="pgd", eps=(0.5,), norm=2, client=client, chunk=7,
                       seed=1, keep_adversarial=True)
    np.testing.assert_allclose(rep7.adversarial[("pgd_l2", 0.5)],
                               attacks.pgd(model, X[:140], Y[:140], 0.5, norm=2, seed=1), rtol=0, atol=1e-6)


def test_autoattack_equals_serial(client, model, digits):
    if not hasattr(gc.attacks, "autoattack"):
        pytest.skip("graphc.attacks has no autoattack yet (the attack-suite issue adds it)")
    X, Y = digits.X_test[:60], digits.y_test[:60]
    for chunk in (23, 1024):  # uneven chunks (23, 23, 14), and one chunk
        rep = gd.evaluate(model, X, Y, attacks=("autoattack",), eps=(0.1,), client=client, chunk=chunk, seed=2)
        same_rows(rep["autoattack"], attacks.evaluate(model, X, Y, "autoattack", eps=(0.1,), seed=2))


def test_targeted_attacks_and_per_example_targets(client, model, digits):
    X, Y = digits.X_test[:100], digits.y_test[:100]
    target = (Y + 3) % 10
    rep = gd.evaluate(model, X, Y, attacks=("bim", "pgd"), eps=(0.1,), client=client, chunk=9, targeted=True,
                      target=target, steps=5)
    for name in ("bim", "pgd"):
        serial = attacks.evaluate(model, X, Y, name, eps=(0.1,), targeted=True, target=target, steps=5)
        assert rep[name].to_dict() == serial.to_dict()
    assert rep["pgd"].rows[0]["n_success"] > 0


def test_empty_input_and_bad_arguments(client, model, digits):
    rep = gd.evaluate(model, digits.X_test[:0], digits.y_test[:0], attacks=("fgsm",), eps=(0.1,), client=client)
    assert rep.complete and rep.n == 0 and rep["fgsm"].n == 0 and np.isnan(rep["fgsm"].clean_acc)
    X, Y = digits.X_test[:10], digits.y_test[:10]
    with pytest.raises(gc.GraphError, match="unknown attack 'nope'"):
        gd.evaluate(model, X, Y, attacks=("nope",), client=client)
    with pytest.raises(gc.GraphError, match="chunk must be a positive int"):
        gd.evaluate(model, X, Y, chunk=0, client=client)
    with pytest.raises(gc.GraphError, match="x has 10 rows but y has 9"):
        gd.evaluate(model, X, Y[:9], client=client)
    with pytest.raises(gc.GraphError, match="target must be one class or one class per example"):
        gd.evaluate(model, X, Y, attacks="pgd", targeted=True, target=np.zeros(3, np.int64), client=client)


def test_a_task_error_is_the_workers_graph_error_with_the_chunk_rows(client, model, digits):
    X, Y = digits.X_test[:40], digits.y_test[:40].copy()
    Y[17] = 12  # a label out of range, in the chunk of rows 14:21
    with pytest.raises(gc.GraphError) as info:
        gd.evaluate(model, X, Y, attacks=("fgsm",), eps=(0.1,), client=client, chunk=7)
    text = str(info.value)
    assert "rows 14:21" in text and "fgsm at eps=0.1" in text and "tcp://" in text, text
    assert "label" in text and "12" in text, text
    with pytest.raises(gc.GraphError, match="label"):  # the serial evaluation refuses the same labels
        attacks.evaluate(model, X, Y, "fgsm", eps=(0.1,))


def fgsm_that_fails(model, x, y, eps, index=None, **kw):
    if index is not None and 7 in index:
        raise ZeroDivisionError("a bug in a user's attack")
    return attacks.fgsm(model, x, y, eps, **kw)


def test_a_non_graph_error_is_a_task_error_with_the_worker_traceback(client, model, digits):
    with pytest.raises(gd.TaskError) as info:
        gd.evaluate(model, digits.X_test[:20], digits.y_test[:20], attacks=fgsm_that_fails, eps=(0.1,),
                    client=client, chunk=5)
    text = str(info.value)
    assert "fgsm_that_fails at eps=0.1 on rows 5:10" in text and "ZeroDivisionError" in text
    assert "a bug in a user's attack" in text and "worker traceback" in text


def slow_on_the_first_chunk(model, x, y, eps, index=None, **kw):
    if index is not None and index[0] == 0:
        time.sleep(2.5)
    return attacks.fgsm(model, x, y, eps, **kw)


def test_a_run_cut_short_returns_what_finished_marked_incomplete(client, model, digits):
    X, Y = digits.X_test[:200], digits.y_test[:200]
    rep = gd.evaluate(model, X, Y, attacks=slow_on_the_first_chunk, eps=(0.1,), client=client, chunk=25,
                      timeout=1.0, progress=False)
    assert not rep.complete and (0, 25) in rep.missing
    assert 0 < len(rep.index) < len(X) and len(rep.index) + sum(hi - lo for lo, hi in rep.missing) == len(X)
    assert "INCOMPLETE" in rep.table() and "missing rows 0:25" in rep.table()
    # what finished is right: the serial evaluation of exactly those rows
    part = rep["slow_on_the_first_chunk"]
    assert part.n == len(rep.index)
    same_rows(part, attacks.evaluate(model, X[rep.index], Y[rep.index], "fgsm", eps=(0.1,)))
    time.sleep(1.6)  # let the worker finish the sleeping task before the next test


def test_ctrl_c_returns_what_finished(client, model, digits, monkeypatch):
    """Ctrl-C while waiting: the run stops, unfinished tasks are cancelled, finished rows are reported."""
    from graphc.distributed import evaluation
    real = dask_distributed.as_completed

    def interrupted_after_three(futures, **kw):
        for k, f in enumerate(real(futures, **kw)):
            if k == 3:
                raise KeyboardInterrupt
            yield f

    monkeypatch.setattr(evaluation.dd, "as_completed", interrupted_after_three)
    X, Y = digits.X_test[:60], digits.y_test[:60]
    rep = gd.evaluate(model, X, Y, attacks=("fgsm",), eps=(0.1,), client=client, chunk=10, progress=False)
    assert not rep.complete and len(rep.index) <= 10 and len(rep.missing) >= 5  # 3 of 12 tasks: at most a chunk
    assert rep["fgsm"].n == len(rep.index) and "INCOMPLETE" in rep.status()
    if len(rep.index):
        same_rows(rep["fgsm"], attacks.evaluate(model, X[rep.index], Y[rep.index], "fgsm", eps=(0.1,)))


# -- sweep ----------------------------------------------------------------------------------------------------
def test_sweep_tables_robustness_over_eps_for_each_model_and_attack(client, model, digits, tmp_path):
    X, Y = digits.X_test[:150], digits.y_test[:150]
    untrained = nn.MLP([64, 32, 10], seed=1)
    eps = (0.05, 0.1)
    sw = gd.sweep({"trained": model, "untrained": untrained}, X, Y, attacks=("fgsm", ("pgd", {"seed": 0})),
                  eps=eps, client=client, chunk=50)
    assert sw.complete and len(sw.rows()) == 2 * 2 * len(eps)
    for name, m in (("trained", model), ("untrained", untrained)):
        for attack in ("fgsm", "pgd"):
            serial = attacks.evaluate(m, X, Y, attack, eps=eps, **({"seed": 0} if attack == "pgd" else {}))
            assert sw.reports[name][attack].to_dict() == serial.to_dict()
    table = sw.table()
    assert "eps=0.05" in table and "trained" in table and "untrained" in table
    line = next(t for t in table.splitlines() if t.startswith("trained ") and " pgd " in t)
    r = sw.reports["trained"]["pgd"]
    assert f"{r.clean_acc:.2%}" in line and f"{r.robust_acc[1]:.2%}" in line
    path = sw.plot(str(tmp_path / "curves.png"))
    assert os.path.getsize(path) > 10_000


# -- fuzzing campaigns ----------------------------------------------------------------------------------------
def test_fuzz_campaign_aggregates_its_tasks(client):
    report = gd.fuzz(30, seed=1, client=client, backends=("c", "numpy"), examples_per_task=8)
    assert report, report.failure
    assert report.stats.tried == 30 and report.tasks == 4 and report.workers == 2
    assert report.stats.nodes > 30 and len(report.stats.ops) >= 12 and report.stats.failures == 0
    line = report.summary()
    assert line.startswith("graphc fuzz: 30 graphs tried,") and "0 failures" in line and "4 tasks on 2 workers" in line
    again = gd.fuzz(30, seed=1, client=client, backends=("numpy",), examples_per_task=8)
    other = gd.fuzz(30, seed=2, client=client, backends=("numpy",), examples_per_task=8)
    assert again.stats.nodes == report.stats.nodes and again.stats.ops == report.stats.ops  # same seed, same graphs
    assert (other.stats.nodes, other.stats.ops) != (report.stats.nodes, report.stats.ops)
    assert len({gd.task_seed(s, k) for s in range(3) for k in range(1000)}) == 3000


BUGGY_MODULE = textwrap.dedent('''
    """Registers tanh_scaled: a copy of tanh whose VJP is twice too large (a planted bug)."""
    import dataclasses

    from graphc.ops import REGISTRY

    REGISTRY["tanh_scaled"] = dataclasses.replace(
        REGISTRY["tanh"], name="tanh_scaled", vjp=lambda g, out, x: [2 * g * (1 - out * out)])
''')


def _unregister_buggy():
    from graphc.ops import REGISTRY as registry
    registry.pop("tanh_scaled", None)
    sys.modules.pop("graphc_dist_buggy", None)


def test_fuzz_finds_a_planted_wrong_vjp_and_writes_a_reproducer_that_reproduces(client, tmp_path, monkeypatch):
    module = tmp_path / "graphc_dist_buggy.py"
    module.write_text(BUGGY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    client.upload_file(str(module))  # the workers import it too: the op exists where graphs are checked
    out = tmp_path / "repro.py"
    try:
        report = gd.fuzz(100, seed=3, client=client, backends=("numpy",), ops=["tanh_scaled", "add", "matmul", "sum"],
                         imports=["graphc_dist_buggy"], examples_per_task=25, out=str(out))
        assert not report and report.stats.failures == 1 and "tanh_scaled" in report.failure
        assert report.reproducer == str(out) and report.tasks == report.failure_task + 1
        assert "1 failures" in report.summary()
        src = out.read_text()
        assert "import graphc_dist_buggy" in src and 'apply("tanh_scaled"' in src
        assert src.count("gc.placeholder(") <= 2  # shrunk on the worker
        again = gd.fuzz(100, seed=3, client=client, backends=("numpy",), ops=["tanh_scaled", "add", "matmul", "sum"],
                        imports=["graphc_dist_buggy"], examples_per_task=25, out=str(tmp_path / "again.py"))
        assert again.failure_task == report.failure_task  # the first failure, whichever task finished first
    finally:
        client.run(_unregister_buggy)
        _unregister_buggy()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]))
    run = subprocess.run([sys.executable, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "gradcheck FAILED" in run.stdout and "tanh_scaled" in run.stdout


# -- data-parallel training ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,opt,tol", [("float64", "adam", 1e-10), ("float32", "sgd", 1e-5)])
def test_data_parallel_training_equals_single_process_training(client, digits, dtype, opt, tol):
    X, Y = digits.X_train[:600], digits.y_train[:600]
    start = nn.MLP([64, 32, 10], seed=2, dtype=dtype)
    single = pickle.loads(pickle.dumps(start))
    make = (lambda: optim.Adam(0.01)) if opt == "adam" else (lambda: optim.SGD(0.1, momentum=0.9))
    ref = gc.train(single, X, Y, epochs=2, optimizer=make(), batch_size=64, seed=5)
    for shards in (1, 2, 3):
        m = pickle.loads(pickle.dumps(start))
        hist = gd.train(m, X, Y, epochs=2, optimizer=make(), batch_size=64, client=client, seed=5, shards=shards,
                        X_test=digits.X_test, y_test=digits.y_test)
        for p, q in zip(m.parameters(), single.parameters()):
            assert p.value.dtype == np.dtype(dtype)
            assert np.abs(p.value - q.value).max() <= tol * np.abs(q.value).max(), (shards, p.name)
        assert abs(hist.last["loss"] - ref.last["loss"]) <= 1e-4 * abs(ref.last["loss"])
        assert hist.last["samples_per_s"] > 0 and 0 < hist.last["test_acc"] <= 1
    assert not np.allclose(single.parameters()[0].value, start.parameters()[0].value)  # it did train


# -- faults --------------------------------------------------------------------------------------------------
def pgd_that_kills_its_worker_once(model, x, y, eps, marker=None, index=None, **kw):
    """The first call that sees row 0 kills its own worker process (SIGKILL, as the OOM killer would)."""
    if index is not None and index[0] == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return attacks.pgd(model, x, y, eps, index=index, **kw)


def test_a_worker_killed_mid_run_does_not_change_the_result(client, model, digits, tmp_path):
    X, Y = digits.X_test[:120], digits.y_test[:120]
    marker = str(tmp_path / "killed")
    pids = set(client.run(os.getpid).values())
    rep = gd.evaluate(model, X, Y, attacks=pgd_that_kills_its_worker_once, eps=(0.1,), client=client, chunk=20,
                      seed=4, marker=marker)
    assert os.path.exists(marker)  # a worker did die
    assert rep.complete
    same_rows(rep["pgd_that_kills_its_worker_once"], attacks.evaluate(model, X, Y, "pgd", eps=(0.1,), seed=4))
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids  # the nanny replaced the dead worker


# -- the model on a worker, connect(), the commands --------------------------------------------------------------
def test_a_model_shipped_to_a_worker_gives_identical_logits(client, model, digits):
    X = digits.X_test
    remote = client.submit(gc.predict_logits, model, X, pure=False).result()
    np.testing.assert_array_equal(remote, gc.predict_logits(model, X))


def test_connect_local_starts_single_threaded_workers_and_closes_them(client, monkeypatch):
    with gd.connect("local:1") as c:
        info = c.scheduler_info()["workers"]
        assert len(info) == 1 and all(w["nthreads"] == 1 for w in info.values())
        assert all(t == 1 for t in c.run(lambda: gc.backend_info()["threads"]).values())
        env = c.run(lambda: {k: os.environ.get(k) for k in gd.cluster.MALLOC_ENV})
        assert all(e == gd.cluster.MALLOC_ENV for e in env.values())  # not Dask's page-faulting default
        cluster = c.cluster
    assert c.status == "closed" and cluster.status.name == "closed"
    monkeypatch.setenv("GRAPHC_CLUSTER", client.scheduler.address)
    with gd.connect() as c:  # GRAPHC_CLUSTER: the running scheduler, no new cluster
        assert c.scheduler.address == client.scheduler.address and c.cluster is None
    for bad in ("local:x", "local:0", "", 12):
        with pytest.raises(gc.GraphError):
            gd.connect(bad)
    with pytest.raises(gc.GraphError, match="cannot reach a Dask scheduler"):
        gd.connect("tcp://127.0.0.1:9", timeout=1)


def test_attack_and_train_commands_run_on_a_cluster(client, capsys):
    from graphc.tools import cli
    common = ["--data", "iris", "--model", "softmax", "--epochs", "3", "--no-progress"]
    args = common + ["--attack", "fgsm,pgd", "--eps", "0.1,0.3", "--steps", "3"]
    assert cli.main(["attack", *args]) == 0
    serial = capsys.readouterr().out
    assert cli.main(["attack", *args, "--cluster", client.scheduler.address, "--chunk", "7"]) == 0
    on_cluster = capsys.readouterr().out
    tables = lambda text: [t for t in text.splitlines() if t.startswith(("fgsm:", "pgd", " 0."))]  # noqa: E731
    assert tables(on_cluster) == tables(serial) and len(tables(serial)) == 6
    assert cli.main(["train", *common, "--batch-size", "16", "--cluster", client.scheduler.address]) == 0
    out = capsys.readouterr().out
    assert "data-parallel training on tcp://" in out and "final test accuracy" in out


def test_fuzz_command_starts_a_local_cluster_without_a_main_guard(tmp_path):
    """`graphc fuzz --cluster local:2` in a fresh process: the documented command path needs no
    `if __name__ == "__main__"` from the user."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "graphc.tools.cli", "fuzz", "--cluster", "local:2", "--max-examples",
                          "12", "--examples-per-task", "4", "--backend", "numpy", "--out", str(tmp_path / "r.py")],
                         capture_output=True, text=True, env=env, timeout=240, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "graphc fuzz: 12 graphs tried" in run.stdout and "3 tasks on 2 workers" in run.stdout, run.stdout
