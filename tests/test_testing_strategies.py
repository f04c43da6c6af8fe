"""graphc.testing: values inside op domains, op cases, random graphs, reproducers."""
import doctest
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.ops import REGISTRY, Domain
from graphc.testing import (
    GRAPH_OPS,
    OpCase,
    RandomGraph,
    arrays_for,
    arrays_in,
    check_graph,
    graphs,
    prune,
    reproducer,
    slot_domain,
)
from graphc.verify.gradcheck import _Interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
FIND = settings(max_examples=300, deadline=None, database=None, derandomize=True)  # shrinks what it finds
EXISTS = settings(FIND, max_examples=2000, phases=[Phase.generate])  # only needs one example
HELPER_OPS = {"sum", "mul", "add", "cast", "tanh", "sigmoid"}  # loss assembly and domain adapters


def _env(*extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, *extra]))


# -- values inside domains ------------------------------------------------------------------------
@FAST
@given(st.data())
def test_arrays_in_respects_the_domain(data):
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    pos = data.draw(arrays_in(REGISTRY["log"].input_domain(0), (3, 4), dtype))
    assert pos.dtype == np.dtype(dtype) and pos.shape == (3, 4) and (pos >= 0.2).all() and (pos <= 4).all()
    nz = data.draw(arrays_in(REGISTRY["div"].input_domain(1), (10,), dtype))
    assert (np.abs(nz) >= 0.5 - 1e-6).all()
    kinked = data.draw(arrays_in(Domain(kinks=(0.0, 1.0)), (20,), dtype))
    assert (np.abs(kinked) >= 0.05 - 1e-6).all() and (np.abs(kinked - 1.0) >= 0.05 - 1e-6).all()
    distinct = np.sort(data.draw(arrays_in(Domain(distinct=True), (12,), dtype)).ravel())
    assert (np.diff(distinct) >= 6.0 / (2 * 12) - 1e-5).all()  # far apart, not just unequal


def test_arrays_for_draws_both_float_dtypes():
    for dtype in (np.float32, np.float64):
        case = find(arrays_for("tanh"), lambda c, dtype=dtype: c.inputs[0].dtype == dtype, settings=EXISTS)
        assert case.dtype == dtype


@FAST
@given(st.data())
def test_arrays_for_fits_each_op(data):
    log = data.draw(arrays_for("log"))
    assert (log.inputs[0] > 0).all()
    relu = data.draw(arrays_for("relu"))
    assert (np.abs(relu.inputs[0]) >= 0.05 - 1e-6).all()
    mx = data.draw(arrays_for("max"))
    assert len(np.unique(mx.inputs[0])) == mx.inputs[0].size
    mxm = data.draw(arrays_for("maximum"))
    both = np.concatenate([np.ravel(a) for a in mxm.inputs])
    assert len(np.unique(both)) == both.size  # no ties between the two operands either
    sce = data.draw(arrays_for("softmax_cross_entropy"))
    logits, labels = sce.inputs
    assert labels.dtype == np.int64 and labels.shape == logits.shape[:1]
    assert (0 <= labels).all() and (labels < logits.shape[1]).all()
    clip = data.draw(arrays_for("clip"))
    for bound in (clip.attrs["lo"], clip.attrs["hi"]):
        if bound is not None:
            assert (np.abs(clip.inputs[0] - bound) >= 0.05 - 1e-6).all()
    for op in ("conv2d", "max_pool2d", "matmul", "concatenate", "sum_to", "where", "dropout"):
        case = data.draw(arrays_for(op))
        xs = [gc.placeholder(f"x{k}", np.shape(a), a.dtype) for k, a in enumerate(case.float_inputs)]
        out = case.build(*xs)  # shapes and attributes are accepted by the op
        val = gc.compile(out)(**{f"x{k}": a for k, a in enumerate(case.float_inputs)})
        assert np.all(np.isfinite(val))


def test_slot_domain_adds_what_the_registry_does_not_declare():
    assert slot_domain("clip", 0, {"lo": -0.5, "hi": 2.0}).kinks == (-0.5, 2.0)
    assert 0.0 in slot_domain("sign", 0).kinks
    assert slot_domain("less", 1).distinct and slot_domain("argmax", 0).distinct
    assert slot_domain("log", 0).kind == "positive"


def test_unknown_ops_are_refused_and_copies_use_like():
    with pytest.raises(ValueError, match="unknown op"):
        arrays_for("no_such_op")
    with pytest.raises(ValueError, match="leaf"):
        arrays_for("placeholder")
    with pytest.raises(ValueError, match="no builder"):
        graphs(ops=["no_such_op"])


def test_op_case_builds_a_weighted_scalar_loss():
    case = OpCase("mul", [np.ones((2, 3)), np.arange(3.0)], {})
    assert case.loss(gc.placeholder("a", (2, 3), "float64"), gc.placeholder("b", (3,), "float64")).shape == ()
    assert gc.gradcheck(case.loss, case.float_inputs).passed
    assert "mul" in repr(case)


# -- random graphs --------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(graphs())
def test_gradcheck_passes_on_random_graphs(g):
    assert g.output.shape == () and g.output.dtype.kind == "f"
    report = g.gradcheck()
    assert report, f"{g.code()}\n{report}"


@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(graphs(dtype="float32", max_nodes=6))
def test_float32_random_graphs_check_cleanly(g):
    report = g.gradcheck()
    assert report and "float32" in report.built_dtypes, report


def _uses(g: RandomGraph):
    return [(n, i) for n in g.nodes for i in n.inputs]


@pytest.mark.parametrize("name, prop", [
    ("broadcasting", lambda g: any(n.op in ("add", "mul", "sub", "div", "maximum") and len(n.inputs) == 2
                                   and n.inputs[0].shape != n.inputs[1].shape
                                   and all(i.op == "placeholder" for i in n.inputs) for n in g.nodes)),
    ("fan-out", lambda g: any(sum(1 for n in g.nodes for i in n.inputs if i is t) >= 2
                              for t in g.nodes if t.op not in ("constant",))),
    ("reused subexpression", lambda g: any(len(n.inputs) == 2 and n.inputs[0] is n.inputs[1] for n in g.nodes)),
    ("several inputs", lambda g: len(g.inputs) >= 3),
    ("gradient inside the graph", lambda g: any(n.op.endswith("_grad") for n in g.nodes)),
    ("convolution", lambda g: "conv2d" in g.ops),
    ("float32", lambda g: g.dtype == np.float32),
])
def test_graphs_cover_the_structures_that_matter(name, prop):
    g = find(graphs(), prop, settings=EXISTS)
    assert isinstance(g, RandomGraph) and g.output.shape == ()


@FAST
@given(graphs(ops=["tanh", "matmul", "relu"], max_nodes=5))
def test_graphs_use_only_the_requested_ops(g):
    assert g.ops <= {"tanh", "matmul", "relu", "reshape"} | HELPER_OPS, g.ops
    vals = _Interpreter([g.output]).run({t.id: v for t, v in g.values.items()})
    assert np.isfinite(vals[g.output.id])


def test_graph_ops_include_registry_ops_and_composites():
    assert {"matmul", "conv2d", "max_pool2d", "softmax_cross_entropy", "grad", "mean"} <= set(GRAPH_OPS)
    from graphc.testing import COMPOSITES
    assert all(op in REGISTRY for op in GRAPH_OPS if op not in COMPOSITES)
    assert not set(COMPOSITES) & set(REGISTRY)  # a composite name never shadows an op


# -- reproducers ----------------------------------------------------------------------------------
def test_reproducer_rebuilds_the_graph_exactly(tmp_path):
    g = find(graphs(max_nodes=6), lambda g: len(g.nodes) >= 8 and len(g.inputs) >= 2, settings=EXISTS)
    src = reproducer(g, title="a passing graph")
    path = tmp_path / "repro.py"
    path.write_text(src)
    # the rebuilt loss evaluates to the same bits as the original
    ns: dict = {"__name__": "repro"}
    exec(compile(src.split("\nbackends = ")[0], str(path), "exec"), ns)
    mine = _Interpreter([g.output]).run({t.id: v for t, v in g.values.items()})[g.output.id]
    theirs = _Interpreter([ns["loss"]]).run({t.id: v for t, v in ns["values"].items()})[ns["loss"].id]
    assert np.array_equal(mine, theirs)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no longer reproduces" in out.stdout


BUGGY_MODULE = textwrap.dedent('''
    """Registers mul_scaled: a copy of mul whose VJP is 3x too large for its first operand."""
    import dataclasses

    from graphc.ops import REGISTRY
    from graphc.ops.core import unbroadcast

    REGISTRY["mul_scaled"] = dataclasses.replace(
        REGISTRY["mul"], name="mul_scaled",
        vjp=lambda g, out, a, b: [unbroadcast(3 * g * b, a), unbroadcast(g * a, b)])
''')


@pytest.fixture
def buggy_module(tmp_path, monkeypatch):
    (tmp_path / "graphc_buggy_ops.py").write_text(BUGGY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    importlib.import_module("graphc_buggy_ops")
    yield tmp_path
    REGISTRY.pop("mul_scaled", None)
    sys.modules.pop("graphc_buggy_ops", None)


def test_reproducer_of_a_failure_reproduces_it(buggy_module):
    prop = graphs(ops=["mul_scaled", "tanh"], max_nodes=4, dtype="float64")
    g = find(prop, lambda g: not check_graph(g), settings=FIND)  # hypothesis shrinks it
    g = prune(g, lambda g: not check_graph(g))  # and unneeded terms go
    assert "mul_scaled" in g.ops and len(g.nodes) <= 5, g.code()
    src = reproducer(g, setup="import graphc_buggy_ops  # noqa: F401", title="mul_scaled is wrong")
    path = buggy_module / "repro_fail.py"
    path.write_text(src)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         env=_env(str(buggy_module)), timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "gradcheck FAILED" in out.stdout and "mul_scaled" in out.stdout


def test_docstring_examples_run():
    import graphc.testing
    import graphc.verify.gradcheck
    for module in (graphc.verify.gradcheck, graphc.testing):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@given(st.data())
@settings(max_examples=20, deadline=None)
def test_conv_builder_keeps_x_and_w_in_one_dtype(data):
    """A cast can leave a tensor of the other float dtype in the pool; conv2d's weights are new
    inputs of the graph's dtype, so the builder must not pick that tensor as x (graphc fuzz
    --seed 5 crashed on conv2d of float64 x and float32 w)."""
    from graphc.verify.strategies import _Builder, _g_conv
    b = _Builder(data.draw, np.dtype("float32"), 4)
    b.new_input((1, 1, 3, 3))
    b.pool.append(gc.cast(b.pool[0], "float64"))
    y = _g_conv(b, "conv2d")
    assert y.op == "conv2d" and y.dtype == np.float32 and y.inputs[0].dtype == y.inputs[1].dtype
