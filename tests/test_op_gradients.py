"""Every registered op's gradient against float64 central finite differences.

Inputs come from graphc.testing.arrays_for: hypothesis-drawn shapes and values inside each op's
declared domain (positive for log/sqrt, away from kinks, distinct where ties matter), built in
float32 and float64 (gradcheck re-runs everything in float64). The loss is sum(op(...) * R) with
fixed random weights R, so a transposed or mis-scaled VJP cannot hide behind a uniform cotangent.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.ir.errors import GraphError
from graphc.ops import REGISTRY
from graphc.testing import LEAVES, arrays_for, no_vjp_ops

OPS = sorted(n for n in REGISTRY if n not in LEAVES)
NO_VJP = set(no_vjp_ops())
# dense applies its activation to x @ w + b: values there cannot be steered away from ReLU's kink
MAY_MEET_KINKS = {"dense"}
SETTINGS = settings(max_examples=8, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def test_every_registered_op_has_a_strategy():
    missing = []
    for op in OPS:
        try:
            arrays_for(op)
        except ValueError as exc:
            missing.append(f"{op}: {exc}")
    assert not missing, "ops without an arrays_for strategy:\n" + "\n".join(missing)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", [o for o in OPS if o not in NO_VJP])
@SETTINGS
@given(data=st.data())
def test_op_gradient_matches_finite_differences(op, dtype, data):
    case = data.draw(arrays_for(op, dtype=dtype), label="case")
    report = gc.gradcheck(case.loss, case.float_inputs)
    assert report, f"{case}\n{report}"
    if op not in MAY_MEET_KINKS:
        assert report.status == "pass", f"{case} drew values at a kink:\n{report}"


@pytest.mark.parametrize("op", sorted(o for o in NO_VJP))
@settings(max_examples=3, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_ops_without_vjp_say_so(op, data):
    # Backward-only ops (max-pool's gradient, concatenate's slices, ...) cannot be differentiated
    # again: grad names the op, and gradcheck reports it as the culprit.
    case = data.draw(arrays_for(op, dtype="float64"), label="case")
    xs = [gc.placeholder(f"x{k}", np.shape(a), "float64") for k, a in enumerate(case.float_inputs)]
    loss = case.loss(*xs)
    with pytest.raises(GraphError, match="no gradient rule"):
        gc.grad(loss, xs)
    report = gc.gradcheck(loss, dict(zip(xs, case.float_inputs)))
    assert not report and report.culprit is not None and report.culprit.op == op


@pytest.mark.parametrize("op", ["tanh", "matmul", "conv2d", "softmax_cross_entropy", "max_pool2d", "dense"])
@settings(max_examples=4, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_float32_built_ops_check_cleanly_with_tight_tolerances(op, data):
    # The check re-runs the graph in float64, so even float32 graphs meet 1e-7 tolerances.
    case = data.draw(arrays_for(op, dtype="float32"), label="case")
    report = gc.gradcheck(case.loss, case.float_inputs, atol=1e-7, rtol=1e-6)
    assert report and report.built_dtypes == ("float32",), report


def test_matmul_vector_times_transposed_matrix_gradient():
    # Regression (found by graphc fuzz): the VJP of a 1-d @ 2-d product dropped trans_b.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3), rng.normal(size=(2, 3))
    report = gc.gradcheck(lambda a, b: (gc.matmul(a, b, trans_b=True) * np.array([1.0, -2.0])).sum(), [a, b])
    assert report.passed, report
    report = gc.gradcheck(lambda a, b: (gc.matmul(b, a, trans_a=True) * np.array([1.0, -2.0, 0.5])).sum(),
                          [rng.normal(size=2), b])
    assert report.passed, report


def test_bce_with_targets_of_another_dtype_differentiates():
    """The registry's binary_cross_entropy accepts float32 targets for float64 logits (the fuzzer
    builds it so; gc.binary_cross_entropy casts them first): its gradient graph must build too,
    with the targets' gradient in their own dtype (found by graphc fuzz, seed 0, on CI)."""
    from graphc.ops import apply
    from graphc.verify.gradcheck import compare_backends
    z = gc.placeholder("z", (5,), "float64")
    t = gc.placeholder("t", (5,), "float32")
    loss = apply("binary_cross_entropy", [z, t])
    gz, gt = gc.grad(loss, [z, t])
    assert gz.dtype == np.float64 and gt.dtype == np.float32
    values = {z: np.linspace(-2, 2, 5), t: np.array([0, 0.25, 0.5, 1, 1], np.float32)}
    assert gc.gradcheck(loss, values, backend="numpy")
    backends = ["numpy", "c"] if gc.backend_info()["c_available"] else ["numpy", "numpy"]
    assert compare_backends(loss, values, backends) is None
