"""Function.profile(): per-step times of a compiled function next to the wall time of a call."""
import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE
from graphc.ir.errors import GraphError
from graphc.tools.bench.workloads import _mlp_data, graphc_mlp_step

BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built"))]


def _mlp_step(backend, lr=0.1):
    """An SGD step of a 20-64-48-5 MLP on 256 rows (the benchmark's W-mlp recipe, smaller)."""
    sizes = (20, 64, 48, 5)
    weights, x, y = _mlp_data(256, sizes, "float32")
    _, params, f = graphc_mlp_step(weights, sizes, "float32", lr, backend)
    return f, params, dict(x=x, y=y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_times_every_step_and_is_a_real_call(backend):
    f, params, feeds = _mlp_step(backend)
    g, params_ref, _ = _mlp_step(backend)
    repeats = 3
    p = f.profile(repeats=repeats, **feeds)
    for _ in range(2 * repeats + 1):  # profile took this many steps, updates committed
        g(**feeds)
    for a, b in zip(params, params_ref):
        np.testing.assert_array_equal(a.value, b.value)

    plan = f._last_plan
    assert [r["step"] for r in p.rows] == list(range(len(plan.steps)))
    assert [r["op"] for r in p.rows] == [s.node.op for s in plan.steps]
    assert sum(r["seconds"] for r in p.rows) + p.copy_seconds == pytest.approx(p.steps_seconds)
    assert p.steps_seconds > 0 and p.call_seconds > 0 and p.repeats == repeats and p.backend == backend
    assert all(r["seconds"] >= 0 for r in p.rows)
    assert sum(r["share"] for r in p.rows) == pytest.approx(1 - p.copy_seconds / p.steps_seconds)
    gemm_like = [r for r in p.rows if r["op"] in ("dense", "matmul_update", "matmul_act_grad", "matmul")]
    assert gemm_like and all(r["seconds"] > 0 or "counted under step" in r["note"] for r in gemm_like)
    assert "test_profile.py" in p.rows[0]["source"]
    text = str(p)
    assert text.startswith(f"Profile: {len(plan.steps)} steps, backend {backend}") and repr(p) == text
    for r in p.rows:
        assert r["op"] in text


@pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")
def test_profile_names_what_another_step_computes():
    """On C the loss and its gradient are one instruction, a bias gradient comes out of a GEMM and
    two independent GEMMs may run side by side: those steps have no time of their own, and the
    row says under which step it is counted."""
    f, _, feeds = _mlp_step("c")
    p = f.profile(repeats=2, **feeds)
    by_op = {}
    for r in p.rows:
        by_op.setdefault(r["op"], []).append(r)
    grad_row = by_op["softmax_cross_entropy_grad"][0]
    assert grad_row["seconds"] == 0 and "loss and gradient in one pass" in grad_row["note"]
    assert grad_row["note"].endswith(f"counted under step {grad_row['step'] - 1}")
    assert all(r["seconds"] == 0 and "inside step" in r["note"] for r in by_op["sum_to"])
    lowered = next(iter(f._plans.values()))[1].lowered
    for a, b in lowered.side_by_side:
        assert p.rows[a]["seconds"] > 0 and p.rows[b]["seconds"] == 0
        assert f"side by side with step {a}" in p.rows[b]["note"]


@pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")
def test_profile_times_numpy_steps_between_c_segments():
    x = gc.placeholder("x", (1000,), "float64")
    k = gc.cast(gc.exp(x), "int64")  # float -> int: the C lowering leaves it to NumPy
    f = gc.compile(gc.sum(gc.cast(k, "float64") * x), backend="c")
    v = np.linspace(0, 3, 1000)
    p = f.profile(repeats=4, x=v)
    np_rows = [r for r in p.rows if "NumPy step" in r["note"]]
    assert [r["op"] for r in np_rows] == ["cast"] and np_rows[0]["seconds"] > 0
    assert f(x=v) == pytest.approx(np.sum(np.exp(v).astype(np.int64) * v))


@pytest.mark.parametrize("repeats", [0, -1, 2.5, True, "3"])
def test_profile_rejects_a_bad_repeat_count(repeats):
    x = gc.placeholder("x", (3,), "float64")
    f = gc.compile(x * 2.0)
    with pytest.raises(GraphError, match="repeats"):
        f.profile(repeats=repeats, x=np.ones(3))


def test_profile_checks_feeds_like_a_call():
    x = gc.placeholder("x", (3,), "float64")
    f = gc.compile(x * 2.0)
    with pytest.raises(GraphError, match="missing feed 'x'"):
        f.profile()
    p = f.profile({x: np.ones(3)}, repeats=1)  # the dict form of a call works too
    assert len(p.rows) == len(f._last_plan.steps)
