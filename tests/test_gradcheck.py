"""gc.gradcheck: float64 central differences, fast mode, kinks, and per-node localisation of
deliberately wrong VJPs (buggy copies of real ops, registered under new names by a fixture)."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import GraphError
from graphc.ops import REGISTRY, apply
from graphc.ops.linalg import matmul
from graphc.verify.gradcheck import DEFAULT_EPS, compare_backends

THIS_FILE = os.path.basename(__file__)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- buggy copies of real ops ---------------------------------------------------------------------
BUGS = {
    # name: (copied op, wrong VJP)
    "tanh_scaled": ("tanh", lambda g, out, x: [2.0 * g * (1 - out * out)]),
    "matmul_untransposed": ("matmul", lambda g, out, a, b, trans_a=False, trans_b=False:
                            [matmul(g, b), matmul(a, g, trans_a=True)]),
    "add_no_unbroadcast": ("add", lambda g, out, a, b: [g, g]),
}


@pytest.fixture
def buggy_ops():
    for name, (base, vjp) in BUGS.items():
        REGISTRY[name] = dataclasses.replace(REGISTRY[base], name=name, vjp=vjp)
    yield
    for name in BUGS:
        REGISTRY.pop(name, None)


def _mlp_with(bug: str, x, w, b):
    """A small MLP with one deliberately broken op in the middle; good ops before and after it."""
    h = gc.sigmoid(x) * 1.5  # fine
    if bug == "tanh_scaled":
        z = apply("tanh_scaled", [h @ w + b])
    elif bug == "matmul_untransposed":
        z = gc.tanh(apply("matmul_untransposed", [h, w], trans_a=False, trans_b=False) + b)
    else:
        z = gc.tanh(apply("add_no_unbroadcast", [h @ w, b]))
    return (gc.softmax(z) * np.array([[1.0, -2.0, 0.5]])).sum()  # fine


# -- passing checks -------------------------------------------------------------------------------
def test_worked_example_passes_with_exact_values():
    # f = (x + y) z at x=-2, y=5, z=-4: df/dx = df/dy = -4, df/dz = 3
    x, y, z = (gc.placeholder(n, (), "float64") for n in "xyz")
    report = gc.gradcheck((x + y) * z, {x: -2.0, y: 5.0, z: -4.0})
    assert report.passed and report and report.status == "pass"
    assert report.checked == 3 and report.failed == 0
    np.testing.assert_allclose([report.analytic[n][0] for n in "xyz"], [-4.0, -4.0, 3.0])
    np.testing.assert_allclose([report.numeric[n][0] for n in "xyz"], [-4.0, -4.0, 3.0], rtol=1e-9)
    assert report.max_abs_error < 1e-8
    assert "passed" in str(report)


def test_default_step_is_the_cube_root_of_machine_epsilon():
    assert DEFAULT_EPS == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))


def test_function_form_with_integer_labels(rng):
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, size=5)
    report = gc.gradcheck(lambda z, y: gc.softmax_cross_entropy(z, y), [logits, labels])
    assert report.passed, report
    assert set(report.analytic) == {"z"}  # labels are fed, not checked


def test_dict_form_with_parameters_and_unchecked_feeds(rng):
    x = gc.placeholder("x", (None, 3), "float64")
    t = gc.placeholder("t", (None,), "float64")
    W = gc.parameter(rng.normal(size=(3, 2)), name="W")
    v = gc.parameter(rng.normal(size=2), name="v")
    loss = gc.binary_cross_entropy(gc.tanh(x @ W) @ v, t)
    X, T = rng.normal(size=(6, 3)), (rng.random(6) > 0.5).astype(np.float64)
    report = gc.gradcheck(loss, [W, v], feeds={x: X, t: T})  # parameters use their .value
    assert report.passed and set(report.analytic) == {"W", "v"}, report
    report = gc.gradcheck(loss, {x: X, W: None}, feeds={t: T})  # v stays a constant
    assert report.passed and set(report.analytic) == {"x", "W"}, report


def test_float32_graph_is_checked_in_float64(rng):
    # A float32 MLP: float32 finite differences would be noise at these tolerances; the check
    # clones the graph in float64 and meets them.
    X = rng.normal(size=(4, 3)).astype(np.float32)
    W1 = gc.parameter(rng.normal(size=(3, 5)).astype(np.float32), name="W1")
    W2 = gc.parameter(rng.normal(size=(5, 2)).astype(np.float32), name="W2")
    x = gc.placeholder("x", (None, 3), "float32")
    loss = gc.mse(gc.leaky_relu(x @ W1) @ W2, np.ones((4, 2), np.float32))
    report = gc.gradcheck(loss, {x: X, W1: None, W2: None}, atol=1e-8, rtol=1e-7)
    assert report.passed, report
    assert report.built_dtypes == ("float32",)
    assert all(a.dtype == np.float64 for a in report.analytic.values())
    assert "float64" in str(report) and "float32" in str(report)


def test_vector_output_full_jacobian(rng):
    X = rng.normal(size=(2, 3))
    report = gc.gradcheck(lambda x: gc.softmax(x, axis=1), [X])
    assert report.passed, report
    assert report.analytic["x"].shape == (6, 2, 3) and report.checked == 36


def test_several_outputs(rng):
    a, b = gc.placeholder("a", (3,), "float64"), gc.placeholder("b", (3,), "float64")
    report = gc.gradcheck([gc.exp(a) * b, (a * b).sum()], {a: rng.normal(size=3), b: rng.normal(size=3)})
    assert report.passed and report.analytic["a"].shape == (4, 3), report


def test_second_derivatives(rng):
    def grad_norm(x):
        g = gc.grad((gc.tanh(x) * gc.sigmoid(x)).sum(), x)
        return (g * g).sum()
    assert gc.gradcheck(grad_norm, [rng.normal(size=4)]).passed


def test_stop_gradient_is_respected_by_the_numeric_side(rng):
    # d/dx [x * stop_gradient(x)] = stop_gradient(x): finite differences keep it frozen too.
    for mode in ("full", "fast"):
        report = gc.gradcheck(lambda x: (x * gc.stop_gradient(x)).sum(), [rng.normal(size=3)], mode=mode)
        assert report.passed and report.mode == mode, report


def test_fast_mode_passes(rng):
    X, W = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    report = gc.gradcheck(lambda x, w: gc.tanh(x @ w).sum(), [X, W], mode="fast")
    assert report.passed and report.mode == "fast" and report.checked == 1, report


# -- failures and localisation --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_wrong_vjps_fail_and_are_localised(buggy_ops, rng, bug, mode):
    X, W, B = rng.normal(size=(4, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)
    report = gc.gradcheck(lambda x, w, b: _mlp_with(bug, x, w, b),
                          [X.astype(np.float32), W.astype(np.float32), B.astype(np.float32)], mode=mode)
    assert not report and report.status == "fail", report
    assert report.culprit is not None and report.culprit.op == bug, report
    assert THIS_FILE in report.culprit.source  # the line in _mlp_with that created the node
    assert bug in str(report)
    if mode == "fast":
        assert report.mode == "fast, then full"
    if bug == "add_no_unbroadcast":
        assert "shape" in report.culprit.reason and "(4, 3)" in report.culprit.reason
        assert report.error is not None
    else:
        w = report.worst
        assert w is not None and abs(w.analytic - w.numeric) == pytest.approx(w.abs_error)
        assert w.abs_error > report.atol + report.rtol * max(abs(w.analytic), abs(w.numeric))
        assert w.input in ("x", "w", "b") and len(w.index) in (1, 2)
        assert report.culprit.analytic != pytest.approx(report.culprit.numeric, rel=1e-3)


def test_fast_mode_over_its_fallback_budget_reports_the_failing_projection(buggy_ops, rng):
    """A failing projection falls back to the full Jacobian only within fallback_seconds (a
    ResNet-50 input would take days): past it, the report says what disagreed and, for a compiled
    backend, that the NumPy backend's gradient disagrees too (a VJP rule, not the backend)."""
    X = rng.normal(size=(20, 30))
    report = gc.gradcheck(lambda x: apply("tanh_scaled", [x]).sum(), [X], mode="fast", fallback_seconds=0.0)
    assert not report and report.status == "fail" and report.mode == "fast", report
    assert report.checked == 1 and report.failed == 1 and report.worst is None and report.culprit is None
    assert "1 backward and 1,200 forward passes" in report.note, report.note  # 2 per element of x
    assert "was not computed (fallback_seconds=0)" in report.note
    if report.backend != "numpy":
        assert "NumPy backend's gradient" in report.note and "a VJP rule or in autodiff" in report.note
    # within the budget, the same failure goes on to the full Jacobian and names the node
    full = gc.gradcheck(lambda x: apply("tanh_scaled", [x]).sum(), [X], mode="fast")
    assert full.mode == "fast, then full" and full.culprit.op == "tanh_scaled" and full.failed == X.size


@pytest.mark.skipif(not gc.backend_info()["c_available"], reason="C extension not built")
def test_fast_mode_tells_a_backend_fault_from_a_vjp_rule(monkeypatch, rng):
    """The C backend's gradient made wrong on purpose (doubled): the NumPy backend's agrees with
    finite differences, so the note puts the fault in the backend."""
    from graphc.verify import gradcheck as gradcheck_module
    build = gradcheck_module._Context.build_gradient

    def doubled_on_c(self, backend=None):
        build(self, backend)
        if (backend or self.backend) == "c":
            fn = self.fn
            self.fn = lambda **feeds: [2 * np.asarray(g) for g in fn(**feeds)]
            self.fn.placeholders = fn.placeholders

    monkeypatch.setattr(gradcheck_module._Context, "build_gradient", doubled_on_c)
    report = gc.gradcheck(lambda x: gc.tanh(x).sum(), [rng.normal(size=(8, 5))], mode="fast", backend="c",
                          fallback_seconds=0.0)
    assert not report and report.mode == "fast", report
    assert "it agrees with finite differences, so the fault is in the c backend" in report.note, report.note


def test_scaled_gradient_values_in_the_report(buggy_ops):
    x = gc.placeholder("x", (2,), "float64")
    X = np.array([0.3, -0.7])
    report = gc.gradcheck(apply("tanh_scaled", [x]).sum(), {x: X})
    assert not report
    np.testing.assert_allclose(report.analytic["x"][0], 2 * (1 - np.tanh(X) ** 2))
    np.testing.assert_allclose(report.numeric["x"][0], 1 - np.tanh(X) ** 2, rtol=1e-8)
    assert report.worst.rel_error == pytest.approx(0.5)
    assert report.culprit.input_index == 0
    assert report.culprit.analytic == pytest.approx(2 * report.culprit.numeric, rel=1e-6)


def test_bug_next_to_a_kink_is_still_a_failure(buggy_ops):
    # ReLU sits at its kink for x[0]; the scaled tanh gradient is wrong everywhere else.
    x = gc.placeholder("x", (3,), "float64")
    loss = (gc.relu(x) + apply("tanh_scaled", [x])).sum()
    report = gc.gradcheck(loss, {x: np.array([0.0, 0.5, -0.4])})
    assert report.status == "fail" and report.culprit.op == "tanh_scaled", report


# -- kinks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, value, op", [
    (lambda x: gc.relu(x).sum(), [0.0, 1.0, -1.0], "relu"),
    (lambda x: gc.leaky_relu(x).sum(), [1.0, 0.0], "leaky_relu"),
    (lambda x: gc.clip(x, -1.0, 1.0).sum(), [1.0, 0.5], "clip"),
    (lambda x: gc.max_pool2d(x, 2).sum(), np.ones((1, 1, 2, 2)), "max_pool2d"),
    (lambda x: (gc.sign(x) * x * x).sum() + gc.where(x > 0.5, x, 2 * x).sum(), [0.5, 0.0], None),
    (lambda x: (gc.sign(x) + x).sum(), [0.0, 2.0], "sign"),
])
def test_kinks_are_reported_not_failed(build, value, op):
    report = gc.gradcheck(build, [np.asarray(value, dtype=np.float64)])
    assert report.status == "kink" and report, report
    assert report.kinks and "not a gradient bug" in str(report)
    if op is not None:
        assert any(k.op == op for k in report.kinks), report


def test_ties_that_finite_differences_agree_with_pass():
    # max and maximum split the gradient at ties, which is what central differences see.
    assert gc.gradcheck(lambda x: gc.max(x), [np.array([1.0, 1.0, 0.0])]).passed
    assert gc.gradcheck(lambda a, b: gc.maximum(a, b).sum(), [np.ones(2), np.ones(2)]).passed
    assert gc.gradcheck(lambda x: gc.abs(x).sum(), [np.array([0.0, 1.0])]).passed  # symmetric kink


def test_kink_note_names_the_source_line():
    x = gc.placeholder("x", (2,), "float64")
    r = gc.relu(x)  # the kink
    report = gc.gradcheck((r * 2.0).sum(), {x: np.array([0.0, 1.0])})
    assert report.status == "kink"
    assert THIS_FILE in report.kinks[0].source and "x[0]" in report.kinks[0].trigger


# -- errors ---------------------------------------------------------------------------------------
def test_errors_name_the_problem():
    x = gc.placeholder("x", (2,), "float64")
    y = gc.placeholder("y", (2,), "float64")
    with pytest.raises(GraphError, match="placeholder 'y'"):
        gc.gradcheck((x * y).sum(), {x: np.ones(2)})
    with pytest.raises(GraphError, match="mode"):
        gc.gradcheck((x * 2).sum(), {x: np.ones(2)}, mode="quick")
    with pytest.raises(GraphError, match="list of arrays"):
        gc.gradcheck(lambda a: a.sum(), {x: np.ones(2)})
    with pytest.raises(GraphError, match="shape"):
        gc.gradcheck((x * 2).sum(), {x: np.ones(3)})
    with pytest.raises(GraphError, match="Tensors"):
        gc.gradcheck((x * 2).sum(), {"x": np.ones(2)})


def test_int_only_inputs_have_nothing_to_check():
    report = gc.gradcheck(lambda x: gc.cast(x, "float64").sum(), [np.arange(3)])
    assert report.passed and report.checked == 0 and "no floating-point inputs" in str(report)


# -- backends against each other ------------------------------------------------------------------
def test_compare_backends(rng):
    x = gc.placeholder("x", (3, 2), "float32")
    W = gc.parameter(rng.normal(size=(2, 2)).astype(np.float32), name="W")
    loss = gc.tanh(x @ W).sum()
    values = {x: rng.normal(size=(3, 2)).astype(np.float32)}
    assert compare_backends(loss, values, ["numpy", "numpy"]) is None
    if gc.backends.C_AVAILABLE:
        assert compare_backends(loss, values, ["numpy", "c"]) is None


def test_graphc_imports_and_checks_without_hypothesis():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "import numpy as np, graphc as gc\n"
            "assert gc.gradcheck(lambda x: gc.exp(x).sum(), [np.ones(2)])\n"
            "try:\n    import graphc.testing\nexcept ImportError:\n    print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_max_pool_tie_between_elements_that_stay_maxima_is_a_kink():
    # Both inputs stay the maximum of some window whichever way the tie breaks, so only the
    # number of windows routed to each element changes: found by `graphc fuzz` (seed 0).
    a = gc.placeholder("a", (1, 1, 2, 1), "float64")
    pooled = gc.max_pool2d(a, (2, 1), stride=1, padding=(1, 0))
    loss = (pooled * np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)).sum()
    report = gc.gradcheck(loss, {a: np.full((1, 1, 2, 1), 0.5)})
    assert report.status == "kink", report
    assert any(k.op == "max_pool2d" for k in report.kinks)
    assert gc.gradcheck(loss, {a: np.array([0.5, 0.9]).reshape(1, 1, 2, 1)}).status == "pass"


def test_ties_in_more_windows_than_any_fixed_cap_are_all_examined():
    # An all-zero image: every 2x2 window is a four-way tie, so each of the 324 input elements
    # has a failing column (found by `graphc fuzz --seed 2`: 68 of them, behind a conv, were
    # reported as a failure when only the first 64 columns were examined for kinks).
    report = gc.gradcheck(lambda x: gc.max_pool2d(x, 2).sum(), [np.zeros((1, 1, 18, 18))])
    assert report.failed > 64, report
    assert report.status == "kink" and report, report
    assert all(k.op == "max_pool2d" for k in report.kinks)


# -- backends that disagree only because rounding put a kink input on the other side -------------
def _relu_of_difference():
    x = gc.placeholder("x", (3,), "float64")
    z = x * 2.0
    return x, z, gc.relu(z)


def test_a_branch_switch_on_rounding_noise_explains_a_disagreement():
    """With 1e30 in the graph, 1e13 and 0 are the same value up to rounding: relu taking the other
    branch there is a kink (the fuzzer's edge-value check reports it as one), not a bug."""
    from graphc.verify.gradcheck import _first_rounding_flip
    x, z, r = _relu_of_difference()
    xs = np.array([1e30, 1.0, 2.0])
    a = {x.id: xs, z.id: np.array([1e13, 2.0, 4.0]), r.id: np.array([1e13, 2.0, 4.0])}
    b = {x.id: xs, z.id: np.array([0.0, 2.0, 4.0]), r.id: np.array([0.0, 2.0, 4.0])}
    note = _first_rounding_flip([z, r], [a, b], ["c", "numpy"])
    assert note and note.startswith("relu created at") and "64 roundings of 1e+30" in note


def test_a_branch_switch_on_different_values_explains_nothing():
    from graphc.verify.gradcheck import _first_rounding_flip
    x, z, r = _relu_of_difference()
    xs = np.array([1.0, 1.0, 2.0])
    a = {x.id: xs, z.id: np.array([0.5, 2.0, 4.0]), r.id: np.array([0.5, 2.0, 4.0])}
    b = {x.id: xs, z.id: np.array([-0.5, 2.0, 4.0]), r.id: np.array([0.0, 2.0, 4.0])}
    assert _first_rounding_flip([z, r], [a, b], ["c", "numpy"]) is None
    assert _first_rounding_flip([z, r], [a, a], ["c", "numpy"]) is None  # no switch at all


def test_an_elementwise_op_amplifying_rounding_noise_explains_a_disagreement():
    """z is 0 or the FMA residue -2.8e14 of 3 * 1e30 - 3 * 1e30 (rounding noise beside 1e30); its
    square is 0 or 7.8e28, past any tolerance, yet no backend is wrong (graphc fuzz --seed 2 found
    it as (z * z + c) ** inf). Where the inputs are the same and the outputs are not, the op
    itself disagrees, and nothing is explained."""
    from graphc.verify.gradcheck import _first_rounding_flip
    x = gc.placeholder("x", (2,), "float64")
    z = x * 3.0
    y = z * z
    xs = np.array([1e30, 1.0])
    fma = {x.id: xs, z.id: np.array([-2.8e14, 3.0]), y.id: np.array([7.84e28, 9.0])}
    plain = {x.id: xs, z.id: np.array([0.0, 3.0]), y.id: np.array([0.0, 9.0])}
    note = _first_rounding_flip([z, y], [fma, plain], ["c", "numpy"])
    assert note and note.startswith("mul created at") and "amplifies rounding noise" in note, note
    wrong = {x.id: xs, z.id: np.array([0.0, 3.0]), y.id: np.array([7.84e28, 9.0])}
    assert _first_rounding_flip([z, y], [wrong, plain], ["c", "numpy"]) is None


def _overflowing_product():
    # row 0: inf * -2.5 + 1e30 * 1e30 + 2 * -1: the middle product overflows float32 but not float64
    a = gc.placeholder("a", (2, 3), "float32")
    b = gc.placeholder("b", (3, 1), "float32")
    av = np.array([[np.inf, 1e30, 2.0], [1.0, 2.0, 3.0]], np.float32)
    bv = np.array([[-2.5], [1e30], [-1.0]], np.float32)
    return a, b, a @ b, av, bv


def test_a_float32_sum_overflowing_next_to_an_infinity_explains_nan_against_inf():
    """Accumulated in float32 the row is -inf + inf = NaN; in float64 (the NumPy backend's
    products) it is -inf. Neither backend is wrong: found by `graphc fuzz --seed 2`."""
    from graphc.verify.gradcheck import _first_rounding_flip
    a, b, p, av, bv = _overflowing_product()
    nan_row = {a.id: av, b.id: bv, p.id: np.array([[np.nan], [3e30]], np.float32)}
    inf_row = {a.id: av, b.id: bv, p.id: np.array([[-np.inf], [3e30]], np.float32)}
    note = _first_rounding_flip([p], [nan_row, inf_row], ["c", "numpy"])
    assert note and note.startswith("matmul created at") and "precision and order of accumulation" in note


def test_an_overflow_explains_nothing_where_the_terms_fit_or_the_op_is_elementwise():
    from graphc.verify.gradcheck import _first_rounding_flip
    a, b, p, av, bv = _overflowing_product()
    small = av.copy()
    small[0, 1] = 1.0  # no product leaves float32's range: NaN against -inf is a real difference
    assert _first_rounding_flip([p], [{a.id: small, b.id: bv, p.id: np.array([[np.nan], [3]], np.float32)},
                                      {a.id: small, b.id: bv, p.id: np.array([[-np.inf], [3]], np.float32)}],
                                ["c", "numpy"]) is None
    x = gc.placeholder("x", (2,), "float32")
    y = x * x  # elementwise: 1e30 * 1e30 is inf on every backend, NaN would be a bug
    xv = np.array([1e30, np.inf], np.float32)
    assert _first_rounding_flip([y], [{x.id: xv, y.id: np.array([np.nan, np.inf], np.float32)},
                                      {x.id: xv, y.id: np.array([np.inf, np.inf], np.float32)}],
                                ["c", "numpy"]) is None


def test_an_overflow_under_a_negative_coefficient_is_still_explained():
    """x + alpha * (a @ b) with alpha = -1: the product's terms 2.5e38 + 2.5e38 leave float32's
    range (then meet -inf: NaN in float32, -inf in float64) although 3e38 - 5e38 would fit. The
    bound takes |alpha| as it takes |inputs|, so the cancellation does not hide the overflow."""
    from graphc.ops.fused import matmul_update
    from graphc.verify.gradcheck import _first_rounding_flip
    a = gc.placeholder("a", (1, 3), "float32")
    b = gc.placeholder("b", (3, 1), "float32")
    x = gc.placeholder("x", (1, 1), "float32")
    u = matmul_update(a, b, x, alpha=-1.0)
    ins = {a.id: np.array([[2.5e19, 2.5e19, 1e-30]], np.float32),
           b.id: np.array([[1e19], [1e19], [-np.inf]], np.float32), x.id: np.array([[3e38]], np.float32)}
    note = _first_rounding_flip([u], [{**ins, u.id: np.array([[np.nan]], np.float32)},
                                      {**ins, u.id: np.array([[np.inf]], np.float32)}], ["c", "numpy"])
    assert note and note.startswith("matmul_update created at") and "order of accumulation" in note


@pytest.mark.skipif(not gc.backend_info()["c_available"], reason="C extension not built")
def test_an_overflowing_float32_product_is_either_a_match_or_explained():
    from graphc.verify.gradcheck import rounding_branch_flip
    a, b, p, av, bv = _overflowing_product()
    loss = gc.sum(p * gc.constant(np.array([[0.5], [2.0]], np.float32)))
    values = {a: av, b: bv}
    with np.errstate(all="ignore"):
        problem = compare_backends(loss, values, ["c", "numpy"])
        flip = rounding_branch_flip(loss, values, ["c", "numpy"])
    assert (problem is None) == (flip is None), (problem, flip)


def test_rounding_noise_scales_with_finite_values_next_to_inf_and_nan():
    from graphc.verify.gradcheck import _largest_finite
    assert _largest_finite([np.array([1e30, np.inf, -2.0], np.float32), np.array([np.nan]), np.arange(5)]) \
        == float(np.float32(1e30))
    assert _largest_finite([np.array([np.inf, np.nan]), np.zeros(0)]) == 1.0


@pytest.mark.skipif(not gc.backend_info()["c_available"], reason="C extension not built")
def test_cancelling_1e30_products_beside_an_infinity_are_rounding_noise():
    """d/dw of sum((a @ w) * c) is a^T c; with 1e30 and -1e30 in a column of a against equal c
    entries that is 0 exactly, or the FMA's ~1e22 rounding residue. a also holds inf, so before the
    noise scale counted finite elements one by one, a's 1e30 was left out and the residue was
    reported as a disagreement (found by graphc fuzz --seed 2 on the Xeon VM, where the thin C
    kernel gives 1.3e22)."""
    a = gc.placeholder("a", (8, 2), "float32")
    w = gc.placeholder("w", (2, 3), "float32")
    c = np.tile(np.float32([[-0.599], [-0.379], [-0.794], [-0.794], [-0.794], [-0.794], [-0.0], [-0.794]]), (1, 3))
    loss = gc.sum((a @ w) * gc.constant(c))
    av = np.tile(np.float32([[-2.2], [-1.5], [-0.79], [-0.088], [-1e30], [1.32], [2.03], [1e30]]), (1, 2))
    av[1, 0] = np.inf
    with np.errstate(all="ignore"):
        assert compare_backends(loss, {a: av, w: np.zeros((2, 3), np.float32)}, ["c", "numpy"]) is None


@pytest.mark.skipif(not gc.backend_info()["c_available"], reason="C extension not built")
def test_gradient_cancellation_is_measured_against_the_gradient_graphs_values():
    """d/dx of erf(x) / x at x = 1e-30 is erf'(x) / x - erf(x) / x**2: two 1.1e30 terms that cancel,
    so a 1-ulp difference between two erf implementations leaves 0 or ~4e22. The forward values
    are all near 1; the noise scale must come from the gradient's graph (graphc fuzz --seed 6)."""
    x = gc.placeholder("x", (2,), "float32")
    loss = gc.sum(gc.erf(x) / x * gc.constant(np.float32([0.5, 0.25])))
    with np.errstate(all="ignore"):
        assert compare_backends(loss, {x: np.float32([1.0, 1e-30])}, ["c", "numpy"]) is None


@pytest.mark.skipif(not gc.backend_info()["c_available"], reason="C extension not built")
def test_cancellation_of_1e30_products_is_either_a_match_or_a_rounding_flip():
    """relu(x1 @ x2) where a column of x2 holds 1e30 and -1e30 against equal x1 entries: 0 in exact
    arithmetic, rounding noise in floating point (an FMA keeps the first product's rounding
    error). Whether the backends agree depends on the BLAS; when they do not, the disagreement is
    explained by the relu's branch, never left as a failure."""
    from graphc.verify.gradcheck import rounding_branch_flip
    x1 = gc.placeholder("x1", (4,), "float64")
    x2 = gc.placeholder("x2", (4, 3), "float64")
    loss = gc.sum(gc.relu(x1 @ x2) * gc.constant(np.array([0.044715, 1.0, 1.0])))
    values = {x1: np.array([0.0, 0.09375, 0.09375, 0.09375]),
              x2: np.array([[0.0, 0.0, 0.0], [1e30, 1.0, 1.0], [0.0, 1.0, 1.0], [-1e30, 1.0, 1.0]])}
    problem = compare_backends(loss, values, ["c", "numpy"])
    flip = rounding_branch_flip(loss, values, ["c", "numpy"])
    assert (problem is None) == (flip is None), (problem, flip)
