"""Tests of the C kernels in csrc/kernels*.c (header csrc/kernels.h) against NumPy references.

Imports the real extension, graphc._cgraphc (skipped when it is not built). To test a module
built elsewhere, e.g. `python csrc/build_cffi.py /tmp/kdev _k_dev gemm,kernels`,
set GRAPHC_TEST_CMODULE=/tmp/kdev:_k_dev.

Error measure: max |got - ref| / max |ref| (infinity norm relative to the output), with NaN and
inf required at the same places; tolerances 1e-5 for float32 and 1e-12 for float64. Backward
kernels are also checked against central finite differences in float64.
"""
import importlib
import math
import os
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def _load_module():
    spec = os.environ.get("GRAPHC_TEST_CMODULE")
    if spec:
        path, name = spec.split(":")
        sys.path.insert(0, path)
        mod = importlib.import_module(name)
        return mod.ffi, mod.lib
    try:
        from graphc._cgraphc import ffi, lib
    except ImportError:
        pytest.skip("C extension not built", allow_module_level=True)
    return ffi, lib


ffi, lib = _load_module()

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
TOL = {F32: 1e-5, F64: 1e-12}
SFX = {F32: "f32", F64: "f64"}
CTYPE = {F32: "float *", F64: "double *", np.dtype(np.int64): "int64_t *"}
SENTINEL = 1234.5

# GRAPHC_KERNEL_EXAMPLES=2000 for a longer local soak.
SETTINGS = settings(max_examples=int(os.environ.get("GRAPHC_KERNEL_EXAMPLES", "100")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def ptr(a):
    """Pointer to element [0, ..., 0] of a (views with any strides allowed); a must stay alive."""
    if a is None:
        return ffi.NULL
    return ffi.cast(CTYPE[a.dtype], a.ctypes.data)


def kfn(name, dt):
    return getattr(lib, f"{name}_{SFX[np.dtype(dt)]}")


def rel_err(got, ref):
    """Infinity-norm error relative to the reference's norm; non-finite entries must match exactly."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan), "NaN positions differ"
    inf = np.isinf(ref)
    assert np.array_equal(got[inf], ref[inf]), "infinities differ"
    fin = ~(nan | inf)
    if not fin.any():
        return 0.0
    diff = np.max(np.abs(got[fin] - ref[fin]))
    scale = np.max(np.abs(ref[fin]))
    return diff / scale if scale > 0 else diff


def assert_close(got, ref, dt, tol=None):
    err = rel_err(got, ref)
    assert err <= (tol if tol is not None else TOL[np.dtype(dt)]), f"relative error {err:.3g}"


def assert_close_terms(got, ref, terms, dt):
    """|got - ref| <= tol * max |terms|, where terms is the same sum over absolute values."""
    assert got.shape == ref.shape
    scale = float(np.max(np.abs(terms))) if terms.size else 0.0
    err = float(np.max(np.abs(got - ref))) / scale if scale > 0 else float(np.max(np.abs(got - ref), initial=0))
    assert err <= TOL[np.dtype(dt)], f"error {err:.3g} relative to the summed terms"


def guarded(shape, dt, fill=SENTINEL):
    """An array of `shape` at the start of a larger buffer; check_guard() verifies the tail."""
    size = int(np.prod(shape))
    buf = np.full(size + 17, fill, dtype=dt)
    return buf, buf[:size].reshape(shape)


def check_guard(buf, size):
    assert np.all(buf[size:] == SENTINEL), "kernel wrote past the end of its output"


@pytest.fixture(autouse=True)
def _restore_defaults():
    yield
    lib.gc_kernels_set_simd(1)
    lib.gc_set_num_threads(0)


def set_simd(enabled):
    lib.gc_kernels_set_simd(enabled)
    if enabled and not lib.gc_kernels_simd_level():
        pytest.skip("CPU without AVX2+FMA")


# ------------------------------------------------------------------------------------------
# vector math accuracy over the whole range
# ------------------------------------------------------------------------------------------

def _sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


_erf = np.vectorize(math.erf, otypes=[np.float64])


# PyTorch's definitions (torch.nn.functional), in float64
def _softplus_ref(x, beta):
    with np.errstate(over="ignore"):
        return np.where(x * beta > 20, x, np.log1p(np.exp(x * beta)) / beta)


def _elu_ref(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _gelu_ref(x):
    with np.errstate(invalid="ignore"):
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _gelu_tanh_ref(x):
    with np.errstate(invalid="ignore", over="ignore"):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


MATH_REFS = {"exp": np.exp, "log": np.log, "sigmoid": _sigmoid_ref, "tanh": np.tanh}
MATH_TOL = {F32: 5e-7, F64: 1e-15}


def _math_inputs(dt):
    fi = np.finfo(dt)
    lim = 120.0 if dt == F32 else 760.0  # past exp over/underflow, tanh/sigmoid saturation
    with np.errstate(over="ignore"):
        lg = np.minimum(np.geomspace(float(fi.smallest_subnormal), float(fi.max), 60001), fi.max)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, fi.max, -fi.max, fi.tiny, -fi.tiny,
               fi.smallest_subnormal, -fi.smallest_subnormal, 1e30, -1e30, 1.0, -1.0, 0.5]
    parts = [np.linspace(-lim, lim, 200001), np.linspace(-1, 1, 50001), lg, -lg, np.asarray(special, float)]
    if dt == F32:
        parts += [np.linspace(88, 89, 2001), np.linspace(-104, -87, 4001)]
    else:
        parts += [np.linspace(708, 710, 2001), np.linspace(-746, -707, 4001)]
    return np.concatenate(parts).astype(dt)


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(MATH_REFS))
def test_math_accuracy_whole_range(name, dt, simd):
    set_simd(simd)
    x = _math_inputs(dt)
    # Reference in higher precision (float64 for float32, x87 long double for float64), rounded once.
    hi = np.float64 if dt == F32 else np.longdouble
    with np.errstate(all="ignore"):
        ref = MATH_REFS[name](x.astype(hi)).astype(dt)
    got = np.empty_like(x)
    kfn(f"gc_v{name}", dt)(x.size, ptr(x), ptr(got))
    assert np.array_equal(np.isnan(got), np.isnan(ref)), "NaN positions differ"
    fin = np.isfinite(ref)
    assert np.array_equal(got[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)]), "infinities differ"
    # Relative error, with the smallest normal as the floor: subnormal results have fewer bits.
    g, r = got[fin].astype(np.float64), ref[fin].astype(np.float64)
    if dt == F64:
        g, r = got[fin].astype(np.longdouble), ref[fin].astype(np.longdouble)
    err = np.abs(g - r) / np.maximum(np.abs(r), float(np.finfo(dt).tiny))
    worst = int(np.argmax(err))
    assert err[worst] <= MATH_TOL[dt], f"{name}({x[fin][worst]!r}) = {got[fin][worst]!r}, want {ref[fin][worst]!r}"


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_math_saturation_and_specials(dt, simd):
    set_simd(simd)

    def run(name, values):
        x = np.asarray(values, dtype=dt)
        y = np.empty_like(x)
        kfn(f"gc_v{name}", dt)(x.size, ptr(x), ptr(y))
        return y

    big = 110.0 if dt == F32 else 800.0
    assert np.all(run("exp", [big, np.inf]) == np.inf)
    assert np.all(run("exp", [-big, -1000.0, -np.inf]) == 0)
    assert list(run("sigmoid", [-1000.0, 1000.0, -np.inf, np.inf])) == [0, 1, 0, 1]
    assert list(run("tanh", [20.0, -20.0, 1e30, -np.inf])) == [1, -1, 1, -1]
    assert np.signbit(run("tanh", [-0.0])[0]) and run("sigmoid", [-0.0])[0] == 0.5
    assert list(run("log", [0.0, -0.0, np.inf])) == [-np.inf, -np.inf, np.inf]
    for name in MATH_REFS:
        assert np.isnan(run(name, [np.nan])[0])
    assert np.isnan(run("log", [-1.0])[0])
    # sigmoid of large negative inputs keeps its relative accuracy instead of flushing to 0
    s = float(run("sigmoid", [-80.0])[0])
    assert abs(s / np.exp(-80.0) - 1) < 1e-6


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_math_tails_and_in_place(dt):
    """Every length around the vector width: exact tail handling, no write past n, x == y."""
    rng = np.random.default_rng(0)
    for n in range(0, 20):
        for name in MATH_REFS:
            x = (rng.standard_normal(n) + (3 if name == "log" else 0)).astype(dt)
            x = np.abs(x) if name == "log" else x
            buf, y = guarded((n,), dt)
            kfn(f"gc_v{name}", dt)(n, ptr(x), ptr(y))
            check_guard(buf, n)
            assert_close(y, MATH_REFS[name](x.astype(np.float64)), dt, tol=1e-6 if dt == F32 else 2e-15)
            z = x.copy()
            kfn(f"gc_v{name}", dt)(n, ptr(z), ptr(z))
            assert np.array_equal(z, y)


# ------------------------------------------------------------------------------------------
# elementwise unary and activation backward
# ------------------------------------------------------------------------------------------

UNARY = {
    "GC_U_NEG": lambda x, p: -x,
    "GC_U_EXP": lambda x, p: np.exp(x),
    "GC_U_LOG": lambda x, p: np.log(x),
    "GC_U_SQRT": lambda x, p: np.sqrt(x),
    "GC_U_ABS": lambda x, p: np.abs(x),
    "GC_U_SIGN": lambda x, p: np.sign(x),
    "GC_U_SIGMOID": lambda x, p: _sigmoid_ref(x),
    "GC_U_TANH": lambda x, p: np.tanh(x),
    "GC_U_RELU": lambda x, p: np.maximum(x, 0),
    "GC_U_LEAKY_RELU": lambda x, p: np.where(x < 0, x * p, x),
    "GC_U_POWER": lambda x, p: np.power(x, p),
    "GC_U_SOFTPLUS": lambda x, p: _softplus_ref(x, p),
    "GC_U_ELU": lambda x, p: _elu_ref(x, p),
    "GC_U_GELU": lambda x, p: _gelu_ref(x),
    "GC_U_GELU_TANH": lambda x, p: _gelu_tanh_ref(x),
    "GC_U_SILU": lambda x, p: x * _sigmoid_ref(x),
    "GC_U_ERF": lambda x, p: _erf(x),
}
POSITIVE_ONLY = {"GC_U_LOG", "GC_U_SQRT", "GC_U_POWER"}


def _unary_input(rng, op, n, dt):
    x = rng.standard_normal(n) * 3
    if op in POSITIVE_ONLY:
        x = np.abs(x) + 0.1
    return x.astype(dt)


@SETTINGS
@given(op=st.sampled_from(sorted(UNARY)), n=st.integers(0, 300), dt=st.sampled_from(DTYPES),
       param=st.sampled_from([2.0, 1.0, 0.5, 3.0, -1.5, 0.01]), seed=st.integers(0, 2**31))
def test_unary_ops(op, n, dt, param, seed):
    x = _unary_input(np.random.default_rng(seed), op, n, dt)
    ref = UNARY[op](x.astype(np.float64), param)
    buf, y = guarded((n,), dt)
    assert kfn("gc_unary", dt)(getattr(lib, op), n, ptr(x), ptr(y), param) == 0
    check_guard(buf, n)
    assert_close(y, ref, dt)
    kfn("gc_unary", dt)(getattr(lib, op), n, ptr(x), ptr(x), param)  # in place
    assert np.array_equal(x, y, equal_nan=True)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_unary_large_parallel_and_nan(dt):
    rng = np.random.default_rng(1)
    lib.gc_set_num_threads(2)
    for op in sorted(UNARY):
        x = _unary_input(rng, op, 200_003, dt)
        y = np.empty_like(x)
        assert kfn("gc_unary", dt)(getattr(lib, op), x.size, ptr(x), ptr(y), 0.5) == 0
        assert_close(y, UNARY[op](x.astype(np.float64), 0.5), dt)
    nan = np.full(3, np.nan, dtype=dt)
    for op in sorted(UNARY):
        out = np.zeros_like(nan)
        kfn("gc_unary", dt)(getattr(lib, op), 3, ptr(nan), ptr(out), 0.1)
        assert np.all(np.isnan(out)), op
    assert kfn("gc_unary", dt)(99, 3, ptr(nan), ptr(nan), 0.0) == lib.GC_K_EINVAL


ACTS = {
    "GC_ACT_IDENTITY": (lambda x, p: x, lambda y, g, p: g),
    "GC_ACT_RELU": (lambda x, p: np.maximum(x, 0), lambda y, g, p: g * (y > 0)),
    "GC_ACT_LEAKY_RELU": (lambda x, p: np.where(x > 0, x, p * x), lambda y, g, p: g * np.where(y > 0, 1, p)),
    "GC_ACT_SIGMOID": (lambda x, p: _sigmoid_ref(x), lambda y, g, p: g * y * (1 - y)),
    "GC_ACT_TANH": (lambda x, p: np.tanh(x), lambda y, g, p: g * (1 - y * y)),
    "GC_ACT_ELU": (_elu_ref, lambda y, g, p: g * np.where(y > 0, 1, y + p)),
}


@SETTINGS
@given(act=st.sampled_from(sorted(ACTS)), n=st.integers(0, 200), dt=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**31))
def test_act_backward(act, n, dt, seed):
    rng = np.random.default_rng(seed)
    fwd, bwd = ACTS[act]
    y = fwd(rng.standard_normal(n) * 2, 0.1).astype(dt)
    g = rng.standard_normal(n).astype(dt)
    buf, dx = guarded((n,), dt)
    assert kfn("gc_act_backward", dt)(getattr(lib, act), n, ptr(y), ptr(g), ptr(dx), 0.1) == 0
    check_guard(buf, n)
    assert_close(dx, bwd(y.astype(np.float64), g.astype(np.float64), 0.1), dt)


@pytest.mark.parametrize("act", sorted(ACTS))
def test_act_backward_finite_differences(act):
    rng = np.random.default_rng(2)
    fwd, _ = ACTS[act]
    x = rng.uniform(0.2, 2.0, 64) * rng.choice([-1, 1], 64)  # away from the kink at 0
    g = rng.standard_normal(64)
    y = fwd(x, 0.1)
    dx = np.empty_like(x)
    assert lib.gc_act_backward_f64(getattr(lib, act), x.size, ptr(y), ptr(g), ptr(dx), 0.1) == 0
    h = 1e-6
    fd = g * (fwd(x + h, 0.1) - fwd(x - h, 0.1)) / (2 * h)
    assert np.max(np.abs(dx - fd)) < 1e-8


# ------------------------------------------------------------------------------------------
# the activations added with the op table: softplus, elu, gelu (erf and tanh forms), silu, erf
# ------------------------------------------------------------------------------------------

NEW_UNARY = {"GC_U_SOFTPLUS": [1.0, 2.0, 0.5], "GC_U_ELU": [1.0, 0.3], "GC_U_GELU": [0.0],
             "GC_U_GELU_TANH": [0.0], "GC_U_SILU": [0.0], "GC_U_ERF": [0.0]}


def _activation_inputs(dt):
    fi = np.finfo(dt)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.max, -fi.max, fi.tiny, -fi.tiny, fi.smallest_subnormal,
               1e30, -1e30, 10.0, -10.0, 20.0, -20.0, 40.0, 1e-8, -1e-8]
    parts = [np.linspace(-40, 40, 40001), np.linspace(-1, 1, 4001), np.asarray(special, float)]
    return np.concatenate(parts).astype(dt)


def _assert_activation_close(got, ref, x, dt, rel_ulps=16, x_ulps=4):
    """|got - ref| <= rel_ulps eps |ref| + x_ulps eps |x|: the second term allows for 1 + erf(x)
    and 1 + tanh(u), which cancel for x << 0 in the formulas PyTorch defines (a 1-ulp error of
    erf or tanh near -1 moves 0.5 x (1 + ...) by about eps |x|). NaN and inf where ref has them."""
    got, ref, x = (np.asarray(a, np.float64) for a in (got, ref, x))
    assert np.array_equal(np.isnan(got), np.isnan(ref)), ("NaN positions differ", x[np.isnan(got) != np.isnan(ref)])
    inf = np.isinf(ref)
    assert np.array_equal(got[inf], ref[inf]), "infinities differ"
    fin = np.isfinite(ref)
    eps = float(np.finfo(dt).eps)
    # (subnormal results have fewer bits: relative to the smallest normal number there)
    scale = np.maximum(np.abs(ref[fin]), float(np.finfo(dt).tiny))
    bound = rel_ulps * eps * scale + x_ulps * eps * np.minimum(np.abs(x[fin]), 1e300)
    err = np.abs(got[fin] - ref[fin])
    worst = int(np.argmax(err - bound))
    assert err[worst] <= bound[worst], f"x={x[fin][worst]!r}: got {got[fin][worst]!r}, want {ref[fin][worst]!r}"


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("op", sorted(NEW_UNARY))
def test_new_activations_whole_range(op, dt, simd):
    """Against PyTorch's definitions evaluated in float64 (float32 inputs are exact in float64)."""
    set_simd(simd)
    x = _activation_inputs(dt)
    for param in NEW_UNARY[op]:
        y = np.empty_like(x)
        assert kfn("gc_unary", dt)(getattr(lib, op), x.size, ptr(x), ptr(y), param) == 0
        with np.errstate(all="ignore"):
            ref = UNARY[op](x.astype(np.float64), param)
        _assert_activation_close(y, ref, x, dt)


_TORCH_FORMS = {
    "GC_U_SOFTPLUS": lambda F, t, p: F.softplus(t, beta=p, threshold=20),
    "GC_U_ELU": lambda F, t, p: F.elu(t, alpha=p),
    "GC_U_GELU": lambda F, t, p: F.gelu(t),
    "GC_U_GELU_TANH": lambda F, t, p: F.gelu(t, approximate="tanh"),
    "GC_U_SILU": lambda F, t, p: F.silu(t),
    "GC_U_ERF": lambda F, t, p: t.erf(),
}


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("op", sorted(NEW_UNARY))
def test_new_activations_match_torch(op, dt):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.concatenate([np.linspace(-30, 30, 6001), [0.0, -0.0, 1e-7, -1e-7, 19.99, 20.0, 20.01]]).astype(dt)
    for param in NEW_UNARY[op]:
        y = np.empty_like(x)
        assert kfn("gc_unary", dt)(getattr(lib, op), x.size, ptr(x), ptr(y), param) == 0
        want = _TORCH_FORMS[op](F, torch.from_numpy(x.copy()), param).numpy()
        # torch's own float32 kernels are a few ulp off the exact values too
        _assert_activation_close(y, want, x, dt, rel_ulps=32, x_ulps=8)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu_gradient_from_its_output_matches_torch(dt, alpha):
    """gc_act_backward(GC_ACT_ELU) and the fused elu_grad take y = elu(x), PyTorch's
    elu_backward(is_result=True): g * (y > 0 ? 1 : y + alpha)."""
    torch = pytest.importorskip("torch")
    x = np.linspace(-8, 8, 1601).astype(dt)
    g = np.cos(np.arange(x.size)).astype(dt)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = torch.nn.functional.elu(t, alpha=alpha)
    yt.backward(torch.from_numpy(g.copy()))
    y = yt.detach().numpy()
    dx = np.empty_like(x)
    assert kfn("gc_act_backward", dt)(lib.GC_ACT_ELU, x.size, ptr(y), ptr(g), ptr(dx), alpha) == 0
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=8 * np.finfo(dt).eps, atol=8 * np.finfo(dt).eps)


# ------------------------------------------------------------------------------------------
# the op table: every code of elementwise.def, through every kernel that takes it
# ------------------------------------------------------------------------------------------

def _codes(prefix):
    return {name[len(prefix):]: getattr(lib, name) for name in dir(lib) if name.startswith(prefix)}


def run_fused(dt, op, inputs, param=0.0, scalar_b=False):
    """One-instruction fused program op(inputs...) -> out; with scalar_b, input 1 is a scalar slot."""
    n = inputs[0].size
    nin = len(inputs)
    in_slot = [-1] + ([0] if scalar_b else [-1] * (nin - 1))
    b_kind = lib.GC_FK_SCALAR if scalar_b else lib.GC_FK_INPUT
    b_idx = 0 if scalar_b else min(1, nin - 1)
    instr = np.array([op, lib.GC_FK_OUT, 0, lib.GC_FK_INPUT, 0, b_kind if nin > 1 else lib.GC_FK_INPUT, b_idx, 1],
                     np.int64)
    fconst = np.array([0.0, param])
    ins = ffi.new(f"{CTYPE[np.dtype(dt)][:-2]} *[]", [ptr(a) for a in inputs])
    slots = np.array(in_slot, np.int64)
    out = np.full(n, SENTINEL, dt)
    rc = kfn("gc_fused", dt)(n, nin, ins, ffi.cast("int64_t *", slots.ctypes.data), 1,
                              ffi.cast("int64_t *", instr.ctypes.data), 0, int(scalar_b),
                              ffi.cast("double *", fconst.ctypes.data), 2, ptr(out))
    return rc, out


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_every_op_code_has_one_kind_and_fuses_exactly_like_its_kernel(dt):
    """The code spaces agree (GC_U_ and GC_B_ codes are fused codes of arity 1 and 2, every
    activation has a GC_F_<ACT>_GRAD), and a one-instruction fused program gives bit for bit what
    gc_unary / gc_binary / gc_act_backward give (the same generated switch runs both)."""
    unary, binary, fused, acts = _codes("GC_U_"), _codes("GC_B_"), _codes("GC_F_"), _codes("GC_ACT_")
    assert lib.gc_fused_arity(lib.GC_F_CONST) == 0 and lib.gc_fused_arity(lib.GC_F_END) == -1
    assert not set(unary) & set(binary)
    for name, code in unary.items():
        assert fused[name] == code and lib.gc_fused_arity(code) == 1, name
    for name, code in binary.items():
        assert fused[name] == code and lib.gc_fused_arity(code) == 2, name
    acts.pop("END")
    for act in acts:
        if act != "IDENTITY":
            assert act in unary and lib.gc_fused_arity(fused[act + "_GRAD"]) == 2, act
    grads = {k for k in fused if k.endswith("_GRAD")}
    assert set(fused) == set(unary) | set(binary) | grads | {"CONST", "END"}

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(997) * 3, [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(dt)
    z = np.concatenate([rng.standard_normal(997) * 3, [1.0, -2.0, 0.0, np.nan, 0.5]]).astype(dt)
    for name, code in unary.items():
        want = np.empty_like(x)
        assert kfn("gc_unary", dt)(code, x.size, ptr(x), ptr(want), 0.7) == 0
        rc, got = run_fused(dt, code, [x], 0.7)
        assert rc == 0 and np.array_equal(got, want, equal_nan=True), name
    shape = ffi.new("int64_t[]", [x.size])
    for name, code in binary.items():
        for scalar_b in (False, True):
            b = z[:1].copy() if scalar_b else z
            want = np.empty_like(x)
            strides = ffi.new("int64_t[]", [0 if scalar_b else 1])
            assert kfn("gc_binary", dt)(code, 1, shape, ptr(x), ffi.new("int64_t[]", [1]), ptr(b), strides,
                                        ptr(want)) == 0
            rc, got = run_fused(dt, code, [x, b], scalar_b=scalar_b)
            assert rc == 0 and np.array_equal(got, want, equal_nan=True), name
    for act in acts:
        if act == "IDENTITY":
            continue
        y = np.empty_like(x)
        kfn("gc_unary", dt)(unary[act], x.size, ptr(x), ptr(y), 0.7)
        want = np.empty_like(x)
        assert kfn("gc_act_backward", dt)(acts[act], x.size, ptr(y), ptr(z), ptr(want), 0.7) == 0
        rc, got = run_fused(dt, fused[act + "_GRAD"], [y, z], 0.7)
        assert rc == 0 and np.array_equal(got, want, equal_nan=True), act


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_fused_rejects_codes_that_are_no_fused_op(dt):
    x = np.ones(4, dt)
    for code in (-1, lib.GC_F_END, 10_000):
        rc, out = run_fused(dt, code, [x])
        assert rc == lib.GC_K_EINVAL and np.all(out == SENTINEL)
    assert kfn("gc_act_backward", dt)(lib.GC_ACT_END, 4, ptr(x), ptr(x), ptr(x), 0.0) == lib.GC_K_EINVAL


# ------------------------------------------------------------------------------------------
# binary ops with broadcasting
# ------------------------------------------------------------------------------------------

BINARY = {
    "GC_B_ADD": np.add, "GC_B_SUB": np.subtract, "GC_B_MUL": np.multiply, "GC_B_DIV": np.divide,
    "GC_B_POW": np.power, "GC_B_MAXIMUM": np.maximum, "GC_B_MINIMUM": np.minimum,
}


def run_binary(op, a, b, out=None):
    """Call gc_binary on NumPy arrays (any strides); returns out."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    ab, bb = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    isz = a.dtype.itemsize
    if out is None:
        out = np.empty(shape, dtype=a.dtype)
    nd = len(shape)
    shp = ffi.new("int64_t[]", list(shape) or [1])
    sa = ffi.new("int64_t[]", [s // isz for s in ab.strides] or [0])
    sb = ffi.new("int64_t[]", [s // isz for s in bb.strides] or [0])
    rc = kfn("gc_binary", a.dtype)(getattr(lib, op), nd, shp, ptr(a), sa, ptr(b), sb, ptr(out))
    assert rc == 0
    return out


def _binary_operands(rng, op, sa, sb, dt):
    a = rng.standard_normal(sa) * 2
    b = rng.standard_normal(sb) * 2
    if op == "GC_B_POW":
        a = np.abs(a) + 0.5
    if op == "GC_B_DIV":
        b = np.where(np.abs(b) < 0.1, 0.5, b)
    return np.asarray(a, dtype=dt), np.asarray(b, dtype=dt)


@SETTINGS
@given(op=st.sampled_from(sorted(BINARY)), dt=st.sampled_from(DTYPES),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=5, min_side=0, max_side=5),
       seed=st.integers(0, 2**31), transpose_a=st.booleans(), reverse_b=st.booleans())
def test_binary_broadcast(op, dt, shapes, seed, transpose_a, reverse_b):
    rng = np.random.default_rng(seed)
    a, b = _binary_operands(rng, op, shapes.input_shapes[0], shapes.input_shapes[1], dt)
    if transpose_a and a.ndim >= 2:  # non-contiguous operand with the same logical values
        a = np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)
    if reverse_b and b.ndim >= 1:  # negative strides
        b = np.ascontiguousarray(b[::-1])[::-1]
    ref = BINARY[op](a.astype(np.float64), b.astype(np.float64))
    buf, out = guarded(shapes.result_shape, dt)
    run_binary(op, a, b, out)
    check_guard(buf, out.size)
    assert_close(out, ref, dt)


FAST_PATHS = {
    "same": ((7, 13), (7, 13)), "scalar_b": ((7, 13), ()), "scalar_a": ((), (7, 13)),
    "row": ((7, 13), (13,)), "row_a": ((13,), (7, 13)), "column": ((7, 13), (7, 1)),
    "column_a": ((7, 1), (7, 13)), "outer": ((7, 1), (1, 13)), "big_row": ((300, 301), (301,)),
    "big_flat": ((200_001,), (200_001,)), "big_column": ((1001, 70), (1001, 1)),
}


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", sorted(FAST_PATHS))
def test_binary_fast_paths_and_in_place(case, dt):
    rng = np.random.default_rng(3)
    lib.gc_set_num_threads(2)
    sa, sb = FAST_PATHS[case]
    for op in sorted(BINARY):
        a, b = _binary_operands(rng, op, sa, sb, dt)
        ref = BINARY[op](a.astype(np.float64), b.astype(np.float64))
        assert_close(run_binary(op, a, b), ref, dt)
        if a.shape == ref.shape:  # out aliases a
            a2 = a.copy()
            run_binary(op, a2, b, a2)
            assert_close(a2, ref, dt)
        if b.shape == ref.shape:  # out aliases b
            b2 = b.copy()
            run_binary(op, a, b2, b2)
            assert_close(b2, ref, dt)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_binary_nan_and_bad_args(dt):
    a = np.array([np.nan, 1.0, np.nan, 2.0], dtype=dt)
    b = np.array([1.0, np.nan, np.nan, 3.0], dtype=dt)
    for op in ("GC_B_MAXIMUM", "GC_B_MINIMUM"):
        out = run_binary(op, a, b)
        assert np.array_equal(np.isnan(out), [True, True, True, False])
    shp = ffi.new("int64_t[]", [1] * 9)
    st_ = ffi.new("int64_t[]", [0] * 9)
    out = np.zeros(1, dtype=dt)
    assert kfn("gc_binary", dt)(lib.GC_B_ADD, 9, shp, ptr(a), st_, ptr(b), st_, ptr(out)) == lib.GC_K_EINVAL
    assert kfn("gc_binary", dt)(42, 1, shp, ptr(a), st_, ptr(b), st_, ptr(out)) == lib.GC_K_EINVAL
    assert out[0] == 0


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------

def run_reduce(op, x):
    outer, n, inner = x.shape
    y = np.empty((outer, inner), dtype=x.dtype)
    assert kfn("gc_reduce", x.dtype)(getattr(lib, op), outer, n, inner, ptr(x), ptr(y)) == 0
    return y


REDUCE_REFS = {"GC_R_SUM": np.sum, "GC_R_MEAN": np.mean, "GC_R_MAX": np.max}


@SETTINGS
@given(op=st.sampled_from(sorted(REDUCE_REFS)), dt=st.sampled_from(DTYPES),
       shape=st.tuples(st.integers(0, 4), st.integers(1, 300), st.integers(0, 7)), seed=st.integers(0, 2**31))
def test_reduce(op, dt, shape, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) + 0.5).astype(dt)
    assert_close(run_reduce(op, x), REDUCE_REFS[op](x.astype(np.float64), axis=1), dt)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_reduce_empty_axis_and_nan(dt):
    x = np.zeros((2, 0, 3), dtype=dt)
    assert np.all(run_reduce("GC_R_SUM", x) == 0)
    assert np.all(np.isnan(run_reduce("GC_R_MEAN", x)))
    assert np.all(run_reduce("GC_R_MAX", x) == -np.inf)
    y = np.full((0, 5), SENTINEL, dtype=dt)
    assert kfn("gc_reduce", dt)(lib.GC_R_SUM, 0, 4, 5, ptr(y), ptr(y)) == 0
    for inner in (1, 3):
        x = np.ones((2, 20, inner), dtype=dt)
        x[1, 7, 0] = np.nan
        m = run_reduce("GC_R_MAX", x)
        assert np.isnan(m[1, 0]) and m[0, 0] == 1
    assert kfn("gc_reduce", dt)(7, 1, 1, 1, ptr(y), ptr(y)) == lib.GC_K_EINVAL


@pytest.mark.parametrize("inner", [1, 3])
def test_reduce_float32_pairwise_accuracy(inner):
    """Summation error stays O(log n): 1e6 float32 values with a large common offset."""
    lib.gc_set_num_threads(2)
    n = 1_000_000 if inner == 1 else 300_000
    x = (np.random.default_rng(4).random((1, n, inner)) + 1000.0).astype(np.float32)
    exact = x.astype(np.float64).sum(axis=1)
    for op, ref in (("GC_R_SUM", exact), ("GC_R_MEAN", exact / n)):
        got = run_reduce(op, x).astype(np.float64)
        assert np.max(np.abs(got - ref) / np.abs(ref)) <= 1e-5


# ------------------------------------------------------------------------------------------
# softmax
# ------------------------------------------------------------------------------------------

def _exp_rest(x):
    """Long-double exps of x - rowmax and the row sums without the max's own 1 (see ce_ref)."""
    x = x.astype(np.longdouble)
    m = np.max(x, axis=1, keepdims=True, initial=-np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(x - m)
    rest = np.zeros((x.shape[0], 1), dtype=np.longdouble)
    if x.shape[1]:
        first = np.argmax(x == m, axis=1)
        for r in range(x.shape[0]):
            rest[r, 0] = np.sum(np.delete(e[r], first[r]))
    return x, m, e, rest


def softmax_ref(x, log):
    """Reference in long double; log(sum) as log1p(rest) so confident rows keep their digits."""
    x, m, e, rest = _exp_rest(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((x - m) - np.log1p(rest) if log else e / (1 + rest)).astype(np.float64)


def run_softmax(x, log, out=None):
    out = np.empty_like(x) if out is None else out
    assert kfn("gc_softmax", x.dtype)(x.shape[0], x.shape[1], ptr(x), ptr(out), log) == 0
    return out


def run_softmax_bwd(y, g, log):
    dx = np.empty_like(y)
    assert kfn("gc_softmax_backward", y.dtype)(y.shape[0], y.shape[1], ptr(y), ptr(g), ptr(dx), log) == 0
    return dx


@SETTINGS
@given(dt=st.sampled_from(DTYPES), rows=st.integers(0, 6), cols=st.integers(0, 600), log=st.integers(0, 1),
       scale=st.sampled_from([1.0, 30.0]), seed=st.integers(0, 2**31))
def test_softmax_forward_backward(dt, rows, cols, log, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale).astype(dt)
    g = rng.standard_normal((rows, cols)).astype(dt)
    buf, y = guarded((rows, cols), dt)
    assert kfn("gc_softmax", dt)(rows, cols, ptr(x), ptr(y), log) == 0
    check_guard(buf, y.size)
    assert_close(y, softmax_ref(x, log), dt)
    z = x.copy()
    run_softmax(z, log, out=z)  # in place
    assert np.array_equal(z, y)
    yd = y.astype(np.longdouble)
    gd = g.astype(np.longdouble)
    # The backward subtracts nearly equal terms when the softmax saturates (g_j - sum g*y with
    # y ~ onehot), so the error is measured against the size of those terms, not of the result.
    if log:
        gsum = gd.sum(axis=1, keepdims=True)
        ref = gd - np.exp(yd) * gsum
        scale = np.max(np.abs(gd), initial=0) + np.max(np.abs(np.exp(yd) * gsum), initial=0)
    else:
        ref = yd * (gd - (gd * yd).sum(axis=1, keepdims=True))
        scale = np.max(np.abs(yd), initial=0) * np.max(np.abs(gd), initial=0)
    buf, dx = guarded((rows, cols), dt)
    assert kfn("gc_softmax_backward", dt)(rows, cols, ptr(y), ptr(g), ptr(dx), log) == 0
    check_guard(buf, dx.size)
    assert np.max(np.abs(dx - ref), initial=0) <= TOL[dt] * scale


@pytest.mark.parametrize("log", [0, 1])
def test_softmax_backward_finite_differences(log):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 5))
    g = rng.standard_normal((3, 5))
    dx = run_softmax_bwd(run_softmax(x, log), g, log)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (np.sum(g * run_softmax(xp, log)) - np.sum(g * run_softmax(xm, log))) / (2 * h)
    assert np.max(np.abs(dx - fd)) < 1e-8


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_softmax_special_rows_and_parallel(dt):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0], [1000.0, 0.0, -1000.0]], dtype=dt)
    for log in (0, 1):
        y = run_softmax(x, log)
        assert np.all(np.isnan(y[0])), "all -inf row gives NaN like NumPy"
        assert_close(y[1:], softmax_ref(x[1:], log), dt)
    lib.gc_set_num_threads(2)
    x = np.random.default_rng(6).standard_normal((400, 300)).astype(dt)
    for log in (0, 1):
        assert_close(run_softmax(x, log), softmax_ref(x, log), dt)


# ------------------------------------------------------------------------------------------
# fused losses
# ------------------------------------------------------------------------------------------

def ce_ref(x, labels):
    """Mean cross-entropy in long double: (max - x[label]) + log1p(sum of the other exps)."""
    x, m, _, rest = _exp_rest(x)
    rows = np.arange(len(labels))
    return float(np.mean((m[:, 0] - x[rows, labels]) + np.log1p(rest[:, 0])))


def ce_grad_ref(x, labels, g):
    """(softmax - onehot) * g / rows, with 1 - p at the label summed from the other classes."""
    x, m, e, rest = _exp_rest(x)
    rows = np.arange(len(labels))
    total = e.sum(axis=1)
    grad = e / total[:, None]
    others = np.array([np.sum(np.delete(e[r], labels[r])) for r in rows], dtype=np.longdouble)
    grad[rows, labels] = -others / total
    return (grad * g / len(labels)).astype(np.float64)


def run_ce_fwd(x, labels):
    loss = np.full(1, SENTINEL, dtype=x.dtype)
    rc = kfn("gc_softmax_ce_fwd", x.dtype)(x.shape[0], x.shape[1], ptr(x), ptr(labels), ptr(loss))
    return rc, loss[0]


def run_ce_bwd(x, labels, g):
    buf, d = guarded(x.shape, x.dtype)
    rc = kfn("gc_softmax_ce_bwd", x.dtype)(x.shape[0], x.shape[1], ptr(x), ptr(labels), g, ptr(d))
    check_guard(buf, d.size)
    return rc, d


@SETTINGS
@given(dt=st.sampled_from(DTYPES), rows=st.integers(1, 40), cols=st.integers(1, 300),
       scale=st.sampled_from([1.0, 20.0]), seed=st.integers(0, 2**31))
def test_softmax_ce(dt, rows, cols, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale).astype(dt)
    labels = rng.integers(0, cols, rows).astype(np.int64)
    rc, loss = run_ce_fwd(x, labels)
    assert rc == 0
    xd = x.astype(np.float64)
    assert_close(np.array([loss]), np.array([ce_ref(xd, labels)]), dt)
    rc, d = run_ce_bwd(x, labels, 0.7)
    assert rc == 0
    assert_close(d, ce_grad_ref(xd, labels, 0.7), dt)


def test_softmax_ce_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6)) * 2
    labels = np.array([0, 5, 2, 2], dtype=np.int64)
    g = 1.3
    _, d = run_ce_bwd(x, labels, g)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = g * (run_ce_fwd(xp, labels)[1] - run_ce_fwd(xm, labels)[1]) / (2 * h)
    assert np.max(np.abs(d - fd)) < 1e-8


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_softmax_ce_labels_and_empty(dt):
    x = np.zeros((4, 3), dtype=dt)
    for bad_row, bad in ((0, -1), (2, 3), (3, 1 << 40)):
        labels = np.array([0, 1, 2, 0], dtype=np.int64)
        labels[bad_row] = bad
        rc, loss = run_ce_fwd(x, labels)
        assert rc == bad_row + 1 and loss == SENTINEL
        rc, d = run_ce_bwd(x, labels, 1.0)
        assert rc == bad_row + 1 and np.all(d == SENTINEL)
    labels = np.array([0, 7, 9, 0], dtype=np.int64)
    assert run_ce_fwd(x, labels)[0] == 2  # first bad row wins
    rc, loss = run_ce_fwd(np.zeros((0, 3), dtype=dt), np.zeros(0, dtype=np.int64))
    assert rc == 0 and np.isnan(loss)
    rc, _ = run_ce_fwd(np.zeros((2, 0), dtype=dt), np.zeros(2, dtype=np.int64))
    assert rc == 1  # no class is a valid label when cols == 0
    lib.gc_set_num_threads(2)
    x = np.random.default_rng(8).standard_normal((2000, 100)).astype(dt)
    labels = np.random.default_rng(9).integers(0, 100, 2000).astype(np.int64)
    assert_close(np.array([run_ce_fwd(x, labels)[1]]), np.array([ce_ref(x.astype(np.float64), labels)]), dt)


def bce_ref(z, t):
    return np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))


def run_bce_fwd(z, t):
    loss = np.full(1, SENTINEL, dtype=z.dtype)
    assert kfn("gc_bce_logits_fwd", z.dtype)(z.size, ptr(z), ptr(t), ptr(loss)) == 0
    return loss[0]


@SETTINGS
@given(dt=st.sampled_from(DTYPES), n=st.integers(1, 500), scale=st.sampled_from([1.0, 50.0]),
       seed=st.integers(0, 2**31))
def test_bce_logits(dt, n, scale, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(n) * scale).astype(dt)
    t = rng.random(n).astype(dt)
    zd, td = z.astype(np.float64), t.astype(np.float64)
    assert_close(np.array([run_bce_fwd(z, t)]), np.array([bce_ref(zd, td)]), dt)
    buf, dz = guarded((n,), dt)
    assert kfn("gc_bce_logits_bwd", dt)(n, ptr(z), ptr(t), 0.5, ptr(dz)) == 0
    check_guard(buf, n)
    assert_close(dz, (_sigmoid_ref(zd) - td) * 0.5 / n, dt)


def test_bce_finite_differences_and_edges():
    rng = np.random.default_rng(10)
    z = rng.standard_normal(9) * 3
    t = rng.random(9)
    dz = np.empty_like(z)
    lib.gc_bce_logits_bwd_f64(z.size, ptr(z), ptr(t), 2.0, ptr(dz))
    h = 1e-6
    fd = np.array([2.0 * (run_bce_fwd(z + h * e, t) - run_bce_fwd(z - h * e, t)) / (2 * h) for e in np.eye(9)])
    assert np.max(np.abs(dz - fd)) < 1e-8
    z = np.array([1000.0, -1000.0])
    assert run_bce_fwd(z, np.array([1.0, 0.0])) == 0
    assert run_bce_fwd(z, np.array([0.0, 1.0])) == 1000.0
    assert np.isnan(run_bce_fwd(np.zeros(0), np.zeros(0)))


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["+inf", "-inf", "nan"])
def test_losses_and_softmax_with_non_finite_inputs_follow_numpy(dt, bad):
    """NumPy's max-shifted formulas (graphc's NumPy backend): a row whose max is NaN or +inf, or that
    is all -inf, is NaN in softmax, log-softmax and the cross-entropy gradient, and makes the loss
    NaN; a -inf logit below a finite max is an exact 0 of the softmax. BCE from logits follows its
    stable formula max(z, 0) - z t + log1p(exp(-|z|)) and sigmoid(z) - t."""
    for row, label in [([bad, 0.0, 1.0], 0), ([bad, 0.0, 1.0], 2), ([0.0, 1.0, bad], 0), ([bad, bad, bad], 1)]:
        x = np.array([row], dt)
        labels = np.array([label], np.int64)
        with np.errstate(all="ignore"):
            xd = x.astype(np.float64)
            z = xd - np.max(xd, axis=1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(axis=1, keepdims=True)
            want_loss = np.mean(np.log(e.sum(axis=1)) - z[0, label])
            want_grad = p.copy()
            want_grad[0, label] -= 1
            want_log = z - np.log(e.sum(axis=1, keepdims=True))
        rc, loss = run_ce_fwd(x, labels)
        assert rc == 0
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6, err_msg=str((row, label)))  # NaN/inf must match
        rc, grad = run_ce_bwd(x, labels, 1.0)
        assert rc == 0
        assert np.array_equal(np.isnan(grad), np.isnan(want_grad)), (row, label, grad)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-6)
        for log, want in ((0, p), (1, want_log)):
            y = np.empty_like(x)
            assert kfn("gc_softmax", dt)(1, 3, ptr(x), ptr(y), log) == 0
            np.testing.assert_allclose(y, want, rtol=1e-6)  # NaN and inf must match too
    z = np.array([bad, -bad, bad, 0.5], dt)
    t = np.array([1.0, 0.0, 0.0, 0.5], dt)
    with np.errstate(all="ignore"):
        zd, td = z.astype(np.float64), t.astype(np.float64)
        want_loss = bce_ref(zd, td)
        want_grad = (_sigmoid_ref(zd) - td) / z.size
    np.testing.assert_allclose(run_bce_fwd(z, t), want_loss, rtol=1e-6)
    dz = np.empty_like(z)
    assert kfn("gc_bce_logits_bwd", dt)(z.size, ptr(z), ptr(t), 1.0, ptr(dz)) == 0
    np.testing.assert_allclose(dz, want_grad, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# conv2d
# ------------------------------------------------------------------------------------------

def _windows(xp, kh, kw, sh, sw, oh, ow):
    """xp[:, :, kh + sh*i, kw + sw*j] for the (oh, ow) output grid."""
    return xp[:, :, kh:kh + sh * (oh - 1) + 1:sh, kw:kw + sw * (ow - 1) + 1:sw]


def conv_ref(x, w, b, s, p):
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    oh, ow = (H + 2 * p[0] - KH) // s[0] + 1, (W + 2 * p[1] - KW) // s[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    y = np.zeros((N, O, oh, ow))
    for i in range(KH):
        for j in range(KW):
            y += np.einsum("nchw,oc->nohw", _windows(xp, i, j, s[0], s[1], oh, ow), w[:, :, i, j])
    return y if b is None else y + b[None, :, None, None]


def conv_bwd_ref(x, w, gy, s, p):
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    oh, ow = gy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for i in range(KH):
        for j in range(KW):
            _windows(gxp, i, j, s[0], s[1], oh, ow)[...] += np.einsum("nohw,oc->nchw", gy, w[:, :, i, j])
            gw[:, :, i, j] = np.einsum("nohw,nchw->oc", gy, _windows(xp, i, j, s[0], s[1], oh, ow))
    return gxp[:, :, p[0]:p[0] + H, p[1]:p[1] + W], gw


def geom_args(x_shape, w_shape, s, p):
    N, C, H, W = x_shape
    O, _, KH, KW = w_shape
    return (N, C, H, W, O, KH, KW, s[0], s[1], p[0], p[1])


def run_conv(x, w, b, s, p):
    args = geom_args(x.shape, w.shape, s, p)
    oh, ow = (x.shape[2] + 2 * p[0] - w.shape[2]) // s[0] + 1, (x.shape[3] + 2 * p[1] - w.shape[3]) // s[1] + 1
    buf, y = guarded((x.shape[0], w.shape[0], oh, ow), x.dtype)
    assert kfn("gc_conv2d_fwd", x.dtype)(*args, ptr(x), ptr(w), ptr(b), ptr(y)) == 0
    check_guard(buf, y.size)
    return y


def run_conv_bwd(x, w, gy, s, p):
    args = geom_args(x.shape, w.shape, s, p)
    bufx, gx = guarded(x.shape, x.dtype)
    bufw, gw = guarded(w.shape, x.dtype)
    assert kfn("gc_conv2d_bwd_input", x.dtype)(*args, ptr(w), ptr(gy), ptr(gx)) == 0
    assert kfn("gc_conv2d_bwd_weight", x.dtype)(*args, ptr(x), ptr(gy), ptr(gw)) == 0
    check_guard(bufx, gx.size)
    check_guard(bufw, gw.size)
    return gx, gw


@st.composite
def conv_cases(draw):
    N, C, O = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, KH - 2 * p[0]), 8))
    W = draw(st.integers(max(1, KW - 2 * p[1]), 8))
    return (N, C, H, W), (O, C, KH, KW), s, p, draw(st.booleans())


@SETTINGS
@given(case=conv_cases(), dt=st.sampled_from(DTYPES), seed=st.integers(0, 2**31))
def test_conv2d(case, dt, seed):
    xs, ws, s, p, with_bias = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(xs).astype(dt), rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[0]).astype(dt) if with_bias else None
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    y = run_conv(x, w, b, s, p)
    bd = None if b is None else b.astype(np.float64)
    # Sums of products may cancel: errors are measured against the size of the summed terms
    # (the same sums over |x|, |w|, |gy|), the most float32 rounding can be held to.
    terms_y = conv_ref(np.abs(xd), np.abs(wd), None if b is None else np.abs(bd), s, p)
    assert_close_terms(y, conv_ref(xd, wd, bd, s, p), terms_y, dt)
    gy = rng.standard_normal(y.shape).astype(dt)
    gx, gw = run_conv_bwd(x, w, gy, s, p)
    rgx, rgw = conv_bwd_ref(xd, wd, gy.astype(np.float64), s, p)
    tgx, tgw = conv_bwd_ref(np.abs(xd), np.abs(wd), np.abs(gy.astype(np.float64)), s, p)
    assert_close_terms(gx, rgx, tgx, dt)
    if xs[0] == 0:
        assert np.all(gw == 0)
    else:
        assert_close_terms(gw, rgw, tgw, dt)


@pytest.mark.parametrize("xs,ws,s,p", [
    ((2, 2, 5, 4), (3, 2, 3, 2), (1, 1), (1, 0)),
    ((1, 3, 6, 7), (2, 3, 3, 3), (2, 3), (1, 2)),
    ((2, 3, 4, 4), (2, 3, 1, 1), (1, 1), (0, 0)),  # 1x1 direct path
])
def test_conv2d_backward_finite_differences(xs, ws, s, p):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    gy = rng.standard_normal(run_conv(x, w, b, s, p).shape)
    gx, gw = run_conv_bwd(x, w, gy, s, p)
    h = 1e-6

    def loss(x_, w_):
        return np.sum(gy * run_conv(x_, w_, b, s, p))

    for arr, grad, is_x in ((x, gx, True), (w, gw, False)):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(*arr.shape):
            ap, am = arr.copy(), arr.copy()
            ap[idx] += h
            am[idx] -= h
            fd[idx] = ((loss(ap, w) - loss(am, w)) if is_x else (loss(x, ap) - loss(x, am))) / (2 * h)
        assert np.max(np.abs(grad - fd)) < 1e-7


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_conv2d_parallel_batch_and_threads(dt):
    """Big enough for the batch-parallel path; two Python threads calling at once (cffi drops the GIL)."""
    rng = np.random.default_rng(12)
    x, w, b = (rng.standard_normal(sh).astype(dt) for sh in ((5, 6, 14, 13), (7, 6, 3, 3), (7,)))
    lib.gc_set_num_threads(2)
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 2), (1, 1))
    gy = rng.standard_normal(ref.shape).astype(dt)
    rgx, rgw = conv_bwd_ref(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), (1, 2), (1, 1))
    results = []

    def work():
        for _ in range(3):
            results.append((run_conv(x, w, b, (1, 2), (1, 1)),) + run_conv_bwd(x, w, gy, (1, 2), (1, 1)))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for y, gx, gw in results:
        assert_close(y, ref, dt)
        assert_close(gx, rgx, dt)
        assert_close(gw, rgw, dt)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_conv2d_rejects_bad_geometry(dt):
    x = np.ones((1, 1, 2, 2), dtype=dt)
    w = np.ones((1, 1, 3, 3), dtype=dt)
    out = np.full(16, SENTINEL, dtype=dt)
    bad = [
        (1, 1, 2, 2, 1, 3, 3, 1, 1, 0, 0),   # kernel larger than the input: OH would be <= 0
        (1, 1, 2, 2, 1, 3, 3, 2, 2, 0, 0),   # same, with C's truncating division hiding it
        (1, 1, 2, 2, 1, 0, 1, 1, 1, 0, 0),   # empty kernel
        (1, 1, 2, 2, 1, 1, 1, 0, 1, 0, 0),   # zero stride
        (1, 1, 2, 2, 1, 1, 1, 1, 1, -1, 0),  # negative padding
        (-1, 1, 2, 2, 1, 1, 1, 1, 1, 0, 0),  # negative size
    ]
    for args in bad:
        assert kfn("gc_conv2d_fwd", dt)(*args, ptr(x), ptr(w), ffi.NULL, ptr(out)) == lib.GC_K_EINVAL
        assert kfn("gc_conv2d_bwd_input", dt)(*args, ptr(w), ptr(x), ptr(out)) == lib.GC_K_EINVAL
        assert kfn("gc_conv2d_bwd_weight", dt)(*args, ptr(x), ptr(x), ptr(out)) == lib.GC_K_EINVAL
        pool_args = args[:4] + args[5:]
        if args[4] >= 0:
            assert kfn("gc_maxpool2d_fwd", dt)(*pool_args, ptr(x), ptr(out)) == lib.GC_K_EINVAL
            assert kfn("gc_avgpool2d_bwd", dt)(*pool_args, ptr(x), ptr(out)) == lib.GC_K_EINVAL
    assert np.all(out == SENTINEL)


# ------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------

def pool_out(H, W, k, s, p):
    return (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1


def maxpool_ref(x, k, s, p):
    """Forward output and gradient routing (first max in row-major order, padding = -inf)."""
    N, C, H, W = x.shape
    oh, ow = pool_out(H, W, k, s, p)
    y = np.full((N, C, oh, ow), -np.inf)
    arg = np.full((N, C, oh, ow), -1, dtype=np.int64)
    for n, c, i, j in np.ndindex(N, C, oh, ow):
        h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
        hs, ws_ = max(h0, 0), max(w0, 0)
        win = x[n, c, hs:min(h0 + k[0], H), ws_:min(w0 + k[1], W)]
        if win.size:
            flat = int(np.argmax(win))  # first max; argmax also returns the first NaN
            y[n, c, i, j] = win.flat[flat]
            arg[n, c, i, j] = (hs + flat // win.shape[1]) * W + ws_ + flat % win.shape[1]
    return y, arg


def avgpool_ref(x, k, s, p):
    N, C, H, W = x.shape
    oh, ow = pool_out(H, W, k, s, p)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    y = np.zeros((N, C, oh, ow))
    for i in range(k[0]):
        for j in range(k[1]):
            y += _windows(xp, i, j, s[0], s[1], oh, ow)
    return y / (k[0] * k[1])


def run_pool(kind, x, k, s, p):
    N, C, H, W = x.shape
    args = (N, C, H, W, k[0], k[1], s[0], s[1], p[0], p[1])
    buf, y = guarded((N, C) + pool_out(H, W, k, s, p), x.dtype)
    assert kfn(f"gc_{kind}pool2d_fwd", x.dtype)(*args, ptr(x), ptr(y)) == 0
    check_guard(buf, y.size)
    return y


def run_pool_bwd(kind, x, gy, k, s, p):
    N, C, H, W = x.shape
    args = (N, C, H, W, k[0], k[1], s[0], s[1], p[0], p[1])
    buf, gx = guarded(x.shape, x.dtype)
    if kind == "max":
        assert kfn("gc_maxpool2d_bwd", x.dtype)(*args, ptr(x), ptr(gy), ptr(gx)) == 0
    else:
        assert kfn("gc_avgpool2d_bwd", x.dtype)(*args, ptr(gy), ptr(gx)) == 0
    check_guard(buf, gx.size)
    return gx


@st.composite
def pool_cases(draw):
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0])), draw(st.integers(0, k[1])))  # p == k: windows fully in padding
    H = draw(st.integers(max(1, k[0] - 2 * p[0]), 8))
    W = draw(st.integers(max(1, k[1] - 2 * p[1]), 8))
    return (N, C, H, W), k, s, p


@SETTINGS
@given(case=pool_cases(), dt=st.sampled_from(DTYPES), ties=st.booleans(), seed=st.integers(0, 2**31))
def test_pooling(case, dt, ties, seed):
    xs, k, s, p = case
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 3, xs) if ties else rng.standard_normal(xs)).astype(dt)
    y = run_pool("max", x, k, s, p)
    ref_y, arg = maxpool_ref(x.astype(np.float64), k, s, p)
    assert_close(y, ref_y, dt)
    gy = rng.standard_normal(y.shape).astype(dt)
    gx = run_pool_bwd("max", x, gy, k, s, p)
    ref_gx = np.zeros((xs[0], xs[1], xs[2] * xs[3]))
    for n, c, i, j in np.ndindex(*y.shape):
        if arg[n, c, i, j] >= 0:
            ref_gx[n, c, arg[n, c, i, j]] += gy[n, c, i, j]
    assert_close(gx, ref_gx.reshape(xs), dt)
    assert_close(run_pool("avg", x, k, s, p), avgpool_ref(x.astype(np.float64), k, s, p), dt)
    ref_avg = np.zeros(xs)
    gyd = gy.astype(np.float64)
    # adjoint of the average pool: scatter gy / (kh*kw) over each (unpadded part of the) window
    xp = np.zeros((xs[0], xs[1], xs[2] + 2 * p[0], xs[3] + 2 * p[1]))
    for i in range(k[0]):
        for j in range(k[1]):
            _windows(xp, i, j, s[0], s[1], *y.shape[2:])[...] += gyd / (k[0] * k[1])
    ref_avg = xp[:, :, p[0]:p[0] + xs[2], p[1]:p[1] + xs[3]]
    assert_close(run_pool_bwd("avg", x, gy, k, s, p), ref_avg, dt)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1)), ((3, 3), (2, 1), (1, 0))])
def test_pooling_finite_differences(kind, k, s, p):
    rng = np.random.default_rng(13)
    xs = (2, 2, 5, 6)
    x = rng.permutation(np.prod(xs)).reshape(xs) * 0.1  # distinct values: no ties within 2h
    gy = rng.standard_normal(run_pool(kind, x, k, s, p).shape)
    gx = run_pool_bwd(kind, x, gy, k, s, p)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*xs):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = np.sum(gy * (run_pool(kind, xp, k, s, p) - run_pool(kind, xm, k, s, p))) / (2 * h)
    assert np.max(np.abs(gx - fd)) < 1e-8


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_maxpool_ties_nan_and_parallel(dt):
    x = np.ones((1, 1, 4, 4), dtype=dt)
    gy = np.ones((1, 1, 2, 2), dtype=dt)
    gx = run_pool_bwd("max", x, gy, (2, 2), (2, 2), (0, 0))
    want = np.zeros((4, 4))
    want[::2, ::2] = 1  # first element of each window
    assert np.array_equal(gx[0, 0], want)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, 1] = 5
    y = run_pool("max", x, (2, 2), (2, 2), (0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 1
    gx = run_pool_bwd("max", x, gy, (2, 2), (2, 2), (0, 0))
    assert gx[0, 0, 1, 1] == 1 and gx[0, 0, 0, 1] == 0  # NaN takes the gradient, like PyTorch
    lib.gc_set_num_threads(2)
    x = np.random.default_rng(14).standard_normal((4, 16, 32, 32)).astype(dt)
    assert_close(run_pool("max", x, (3, 3), (2, 2), (1, 1)), maxpool_ref(x, (3, 3), (2, 2), (1, 1))[0], dt)
    assert_close(run_pool("avg", x, (2, 2), (2, 2), (0, 0)), avgpool_ref(x, (2, 2), (2, 2), (0, 0)), dt)


# ------------------------------------------------------------------------------------------
# the AVX2 loss bodies (csrc/loss_rows.inc) against the portable ones and float64 references
# ------------------------------------------------------------------------------------------

def _bce_terms_ref(z, t):
    """The BCE terms in float64 from libm-grade NumPy functions (no shared code with the kernel)."""
    with np.errstate(all="ignore"):
        return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


@pytest.mark.parametrize("simd", [1, 0])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bce_logits_every_tail_and_wide_range(dt, simd):
    """Every n around the vector widths, logits from 1e-300 to 1e30 (exp(-|z|) from 1 to 0, the
    log1p argument from 1 down through the subnormals), one term at a time so that each element's
    error shows, then NaN and +-inf anywhere in a vector or in its tail."""
    set_simd(simd)
    rng = np.random.default_rng(21)
    mags = np.concatenate([[0.0, 1e-300, 1e-30, 1e-8, 0.5, 1.0, 20.0, 36.0, 37.5, 700.0, 745.0, 746.0, 1e30],
                           np.logspace(-20, 3, 200)])
    for zabs in mags:
        for sign in (1.0, -1.0):
            z = np.array([sign * zabs], dt)
            if not np.isfinite(z[0]):
                continue
            for tv in (0.0, 0.3, 1.0):
                t = np.array([tv], dt)
                want = _bce_terms_ref(z.astype(np.float64), t.astype(np.float64))[0]
                got = run_bce_fwd(z, t)
                assert abs(got - want) <= TOL[np.dtype(dt)] * max(abs(want), np.finfo(dt).tiny), (z, t, got, want)
    for n in list(range(1, 18)) + [31, 32, 33, 569]:
        z = (rng.standard_normal(n) * 30).astype(dt)
        t = rng.random(n).astype(dt)
        zd, td = z.astype(np.float64), t.astype(np.float64)
        assert_close_terms(np.array([run_bce_fwd(z, t)]), np.array([bce_ref(zd, td)]),
                           np.array([np.mean(np.abs(_bce_terms_ref(zd, td)))]), dt)
        for bad in (np.nan, np.inf, -np.inf):
            for pos in {0, n // 2, n - 1}:
                zb = z.copy()
                zb[pos] = bad
                with np.errstate(all="ignore"):
                    want = bce_ref(zb.astype(np.float64), td)
                got = run_bce_fwd(zb, t)
                if np.isfinite(want):
                    assert abs(got - want) <= 1e-5 * abs(want), (n, pos, bad)
                else:
                    assert (np.isnan(got) and np.isnan(want)) or got == want, (n, pos, bad, got, want)


def _bce_logits_grid():
    """Logits where the BCE kernels' approximations are weakest or special: |z| near 0 (exp(-|z|)
    near 1, the log1p series' widest argument), the exp/log1p transitions, the underflow of
    exp(-|z|) into the subnormals (|z| ~ 708..745), |z| up to 1e3, signed zeros."""
    mags = np.concatenate([np.linspace(0, 3, 3001), np.linspace(3, 40, 1001), np.geomspace(1e-300, 1e3, 1500),
                           np.linspace(700, 750, 501), [1000.0]])
    return np.concatenate([mags, -mags, [-0.0]])


def _run_bce_terms(z, t):
    """The forward kernel run on one element at a time: each term's own value (not a sum)."""
    out = np.empty(1, z.dtype)
    got = np.empty_like(z)
    f = kfn("gc_bce_logits_fwd", z.dtype)
    for i in range(z.size):
        f(1, ptr(z[i:i + 1]), ptr(t[i:i + 1]), ptr(out))
        got[i] = out[0]
    return got


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
def test_bce_terms_within_a_few_ulp_of_long_double(simd):
    """Each float64 term max(z,0) - z t + log1p(exp(-|z|)) within 3 ulp of an x87 long double
    reference (ulps of the largest of the summands, which the additions round to anyway), for
    t = 0, 1 (the softplus of -z / z, no cancellation) and 0.3; +-inf and NaN as the formula says."""
    set_simd(simd)
    z = _bce_logits_grid()
    zl = z.astype(np.longdouble)
    for tv in (0.0, 1.0, 0.3):
        t = np.full_like(z, tv)
        got = _run_bce_terms(z, t)
        ref = np.maximum(zl, 0) - zl * np.longdouble(tv) + np.log1p(np.exp(-np.abs(zl)))
        size = np.maximum(np.abs(ref), np.maximum(np.maximum(zl, 0), np.abs(zl * np.longdouble(tv))))
        ulp = np.spacing(size.astype(np.float64)).astype(np.longdouble)
        err = np.abs(got.astype(np.longdouble) - ref) / ulp
        worst = int(np.argmax(err))
        assert err[worst] <= 3, (tv, z[worst], got[worst], float(ref[worst]), float(err[worst]))
    specials = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf, -np.inf, np.nan, np.nan])
    tt = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0])
    got = _run_bce_terms(specials, tt)
    want = _bce_terms_ref(specials, tt)  # the formula in NumPy: inf * 0 and inf - inf are NaN, -inf * -1 is +inf
    np.testing.assert_array_equal(got, want)


def _bce_grad_ref(z, t, scale):
    zl, tl = z.astype(np.longdouble), t.astype(np.longdouble)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(zl))
        sig = np.where(zl >= 0, 1 / (1 + e), e / (1 + e))
        sig = np.where(np.isnan(zl), np.nan, sig)
    return (sig - tl) * np.longdouble(scale), sig


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bce_logits_grad_every_tail_extremes_and_in_place(dt, simd):
    """gc_bce_logits_grad, dz = (sigmoid(z) - t) * scale in double: against long double over the
    logits grid (a tiny sigmoid(z) for z << 0 keeps its relative accuracy when t = 0, subnormals
    included), every n around the vector widths with no write past n, dz over z and over t, and
    NaN / +-inf anywhere in a vector or its tail."""
    set_simd(simd)
    f = kfn("gc_bce_logits_grad", dt)
    eps = np.finfo(dt).eps
    z = _bce_logits_grid().astype(dt)
    for tv in (0.0, 1.0, 0.25):
        t = np.full_like(z, tv)
        scale = 1.0 / 569
        dz = np.empty_like(z)
        assert f(z.size, ptr(z), ptr(t), scale, ptr(dz)) == 0
        ref, sig = _bce_grad_ref(z, t, scale)
        # one rounding to dt at the end, plus double-precision error relative to the summands
        tol = eps * np.abs(ref) + 8 * np.finfo(np.float64).eps * (sig + abs(tv)) * scale
        if dt == F64:
            tol = np.maximum(tol, np.finfo(np.float64).smallest_subnormal)  # subnormal results
        else:
            tol = np.maximum(tol, np.finfo(np.float32).smallest_subnormal)
        bad = np.abs(dz.astype(np.longdouble) - ref) > tol
        assert not bad.any(), (tv, z[bad][:5], dz[bad][:5], ref[bad][:5].astype(np.float64))
    rng = np.random.default_rng(5)
    for n in list(range(1, 18)) + [31, 32, 33, 255, 256, 257, 569]:
        z = (rng.standard_normal(n) * 30).astype(dt)
        t = rng.random(n).astype(dt)
        ref = _bce_grad_ref(z, t, 0.5)[0].astype(np.float64)
        buf, dz = guarded((n,), dt)
        assert f(n, ptr(z), ptr(t), 0.5, ptr(dz)) == 0
        check_guard(buf, n)
        assert_close(dz, ref, dt, tol=4 * eps)
        for which in ("z", "t"):
            zz, tt = z.copy(), t.copy()
            out = zz if which == "z" else tt
            assert f(n, ptr(zz), ptr(tt), 0.5, ptr(out)) == 0
            np.testing.assert_array_equal(out, dz, err_msg=f"dz over {which}, n={n}")
        for bad, want in ((np.nan, np.nan), (np.inf, None), (-np.inf, None)):
            for pos in {0, n // 2, n - 1}:
                zb = z.copy()
                zb[pos] = bad
                got = np.empty_like(zb)
                assert f(n, ptr(zb), ptr(t), 0.5, ptr(got)) == 0
                sig = {np.inf: 1.0, -np.inf: 0.0}.get(bad)
                if want is None:
                    assert got[pos] == dt.type((sig - float(t[pos])) * 0.5), (n, pos, bad, got[pos])
                else:
                    assert np.isnan(got[pos])
                others = np.arange(n) != pos
                np.testing.assert_array_equal(got[others], dz[others])
    assert f(0, ffi.NULL, ffi.NULL, 1.0, ffi.NULL) == 0
    assert f(-1, ffi.NULL, ffi.NULL, 1.0, ffi.NULL) != 0


@pytest.mark.parametrize("simd", [1, 0], ids=["avx2", "libm"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bce_loss_and_gradient_in_one_pass_equal_the_two_kernels(dt, simd):
    """gc_bce_logits_fwd_grad gives gc_bce_logits_fwd's loss and gc_bce_logits_grad's dz bit for bit:
    every tail, extremes and NaN/inf, dz over z or t, one and two threads (the partial sums follow
    the same ranges)."""
    set_simd(simd)
    both, fwd, grad = kfn("gc_bce_logits_fwd_grad", dt), kfn("gc_bce_logits_fwd", dt), kfn("gc_bce_logits_grad", dt)
    rng = np.random.default_rng(12)
    grid = _bce_logits_grid()
    cases = [(rng.standard_normal(n) * 30, rng.random(n)) for n in list(range(1, 18)) + [31, 33, 569]]
    cases += [(grid, np.full_like(grid, 0.0)), (grid, np.full_like(grid, 1.0)),
              (np.array([np.nan, 1.0, np.inf, -np.inf, 2.0]), np.array([0.5, 0.5, 1.0, 0.0, np.nan]))]
    for threads, extra in ((1, []), (2, [(rng.standard_normal(70001) * 5, rng.random(70001))])):
        lib.gc_set_num_threads(threads)
        for zv, tv in cases + extra:
            z, t = zv.astype(dt), tv.astype(dt)
            n, scale = z.size, 1.0 / z.size
            want_loss, want_dz = np.empty(1, dt), np.empty_like(z)
            assert fwd(n, ptr(z), ptr(t), ptr(want_loss)) == 0
            assert grad(n, ptr(z), ptr(t), scale, ptr(want_dz)) == 0
            loss = np.empty(1, dt)
            buf, dz = guarded((n,), dt)
            assert both(n, ptr(z), ptr(t), scale, ptr(loss), ptr(dz)) == 0
            check_guard(buf, n)
            np.testing.assert_array_equal(loss, want_loss, err_msg=f"n={n}")
            np.testing.assert_array_equal(dz, want_dz, err_msg=f"n={n}")
            for which in ("z", "t"):
                zz, tt = z.copy(), t.copy()
                out = zz if which == "z" else tt
                assert both(n, ptr(zz), ptr(tt), scale, ptr(loss), ptr(out)) == 0
                np.testing.assert_array_equal(loss, want_loss, err_msg=f"dz over {which}, n={n}")
                np.testing.assert_array_equal(out, want_dz, err_msg=f"dz over {which}, n={n}")
    loss = np.full(1, SENTINEL, dt)
    assert both(0, ffi.NULL, ffi.NULL, 1.0, ptr(loss), ffi.NULL) == 0 and np.isnan(loss[0])
    assert both(-1, ffi.NULL, ffi.NULL, 1.0, ptr(loss), ffi.NULL) != 0


def test_bce_loss_and_gradient_match_pytorch():
    """The forward and the gradient kernels against PyTorch's binary_cross_entropy_with_logits and
    its autograd (float64, mean reduction), on logits up to |z| = 1e3 and every tail length."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    for n in (1, 3, 4, 5, 7, 8, 9, 31, 569):
        for scale in (1.0, 30.0, 1e3):
            z = rng.standard_normal(n) * scale
            t = rng.random(n)
            zt = torch.tensor(z, requires_grad=True)
            want = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(t))
            want.backward()
            np.testing.assert_allclose(run_bce_fwd(z, t), want.item(), rtol=1e-14, atol=1e-300)
            dz = np.empty_like(z)
            assert lib.gc_bce_logits_grad_f64(n, ptr(z), ptr(t), 1.0 / n, ptr(dz)) == 0
            np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-14, atol=1e-17 / n)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_softmax_ce_loss_and_grad_in_one_pass_across_threads(dt, threads):
    """gc_softmax_ce_fwd_grad over enough rows to split them between threads: the loss and the
    gradient have the bits of gc_softmax_ce_fwd and gc_softmax_ce_bwd at the same thread count."""
    lib.gc_set_num_threads(threads)
    rng = np.random.default_rng(23)
    x = (rng.standard_normal((3001, 10)) * 5).astype(dt)
    labels = rng.integers(0, 10, 3001).astype(np.int64)
    rc, loss = run_ce_fwd(x, labels)
    rc2, d = run_ce_bwd(x, labels, 1.5)
    assert rc == rc2 == 0
    both_loss, (buf, both_d) = np.zeros(1, dt), guarded(x.shape, dt)
    assert kfn("gc_softmax_ce_fwd_grad", dt)(3001, 10, ptr(x), ptr(labels), 1.5, ptr(both_loss), ptr(both_d)) == 0
    check_guard(buf, x.size)
    assert both_loss[0] == loss and np.array_equal(both_d, d)


@pytest.mark.parametrize("simd", [1, 0])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_softmax_ce_short_rows_every_width(dt, simd):
    """Row widths around the vector widths (1..17, 31..33), ties at the max (the first wins),
    confident rows (rest far below eps), -inf logits below a finite max; forward and backward
    (in place too) against the long-double references, and the first bad label still reported."""
    set_simd(simd)
    rng = np.random.default_rng(22)
    for cols in list(range(1, 18)) + [31, 32, 33]:
        for rows in (1, 3, 5, 32):
            for scale in (1.0, 40.0):
                x = (rng.standard_normal((rows, cols)) * scale).astype(dt)
                if cols > 2:
                    x[0, cols - 1] = x[0, 1] = np.max(x[0]) + 1  # a tie at the max
                    x[-1, cols // 2] = -np.inf
                labels = rng.integers(0, cols, rows).astype(np.int64)
                labels[-1] = (cols // 2 + 1) % cols  # never the -inf logit (its loss is +inf)
                xd = x.astype(np.float64)
                rc, loss = run_ce_fwd(x, labels)
                assert rc == 0
                assert_close(np.array([loss]), np.array([ce_ref(xd, labels)]), dt)
                rc, d = run_ce_bwd(x, labels, 0.7)
                assert rc == 0
                assert_close(d, ce_grad_ref(xd, labels, 0.7), dt)
                z = x.copy()
                assert kfn("gc_softmax_ce_bwd", dt)(rows, cols, ptr(z), ptr(labels), 0.7, ptr(z)) == 0
                assert np.array_equal(z, d), "in place (dlogits == logits) gives the same gradient"
                both_loss, both_d = np.full(1, SENTINEL, dtype=dt), guarded(x.shape, dt)
                fwd_grad = kfn("gc_softmax_ce_fwd_grad", dt)
                assert fwd_grad(rows, cols, ptr(x), ptr(labels), 0.7, ptr(both_loss), ptr(both_d[1])) == 0
                check_guard(both_d[0], x.size)
                assert both_loss[0] == loss and np.array_equal(both_d[1], d), "one pass: the same bits as two"
                z = x.copy()
                assert fwd_grad(rows, cols, ptr(z), ptr(labels), 0.7, ptr(both_loss), ptr(z)) == 0
                assert both_loss[0] == loss and np.array_equal(z, d), "one pass in place"
                bad = labels.copy()
                bad[rows // 2] = cols
                assert run_ce_fwd(x, bad)[0] == rows // 2 + 1
                assert run_ce_bwd(x, bad, 1.0)[0] == rows // 2 + 1
                assert fwd_grad(rows, cols, ptr(x), ptr(bad), 1.0, ptr(both_loss), ptr(both_d[1])) == rows // 2 + 1
    confident = np.array([[0.0, -60.0, -70.0, -80.0, -90.0]], dt)
    rc, loss = run_ce_fwd(confident, np.array([0], np.int64))
    assert rc == 0 and loss > 0
    assert_close(np.array([loss]), np.array([ce_ref(confident.astype(np.float64), np.array([0]))]), dt)
