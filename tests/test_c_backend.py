"""The C backend (plan lowered to csrc/exec.c instructions) against the NumPy backend.

Tolerances, relative to the reference output's norm: float64 1e-12, float32 1e-5. NaN and inf
must sit in the same places.
"""
import inspect
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.extra import numpy as hnp

import graphc as gc
from graphc.backends import C_AVAILABLE
from graphc.ir.graph import reachable
from graphc.ops import apply, fused_kernels
from graphc.ops.fused import run_program

pytestmark = pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_close(got, want, tol=None, what="", scale=0.0):
    """got ~ want within tol relative to max(|want|, scale): `scale` is the magnitude of the terms
    that were summed or cancelled on the way (rounding is relative to those, not to the result)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    tol = TOL[want.dtype] if tol is None else tol
    bad = ~np.isfinite(want)
    np.testing.assert_array_equal(~np.isfinite(got), bad, err_msg=f"{what}: NaN/inf positions differ")
    np.testing.assert_array_equal(got[bad], want[bad], err_msg=f"{what}: NaN/inf values differ")
    g, w = got[~bad].astype(np.float64), want[~bad].astype(np.float64)
    err = np.linalg.norm(g - w)
    assert err <= tol * max(np.linalg.norm(w), scale, np.finfo(want.dtype).tiny), f"{what}: relative error {err}"


def term_scales(outputs, values: dict) -> list:
    """Per output: the largest finite |value| of any node it is computed from (NumPy, float64 view).

    A float32 difference of 1 ulp in a term of size M moves a result by about M * 2**-24 whatever
    the result's own size, so cross-backend tolerances scale with M when terms cancel."""
    from graphc.verify.gradcheck import _Interpreter
    vals = _Interpreter(outputs).run({t.id: v for t, v in values.items()})
    scales = []
    for o in outputs:
        biggest = 0.0
        for n in reachable([o]):
            v = np.asarray(vals[n.id])
            if v.dtype.kind == "f" and v.size:
                finite = np.abs(v[np.isfinite(v)])
                if finite.size:
                    biggest = max(biggest, float(finite.max()) * np.sqrt(v.size))
        scales.append(biggest)
    return scales


def runner_of(f):
    """The runner of the plan a Function used last."""
    return next(run for plan, run in f._plans.values() if plan is f._last_plan)


def both(outputs, feeds, **kw):
    """Compile for C and NumPy, run, compare every output; returns (C function, C results)."""
    fc = gc.compile(outputs, backend="c", **kw)
    fn = gc.compile(outputs, backend="numpy", **kw)
    rc, rn = fc(**feeds), fn(**feeds)
    if isinstance(outputs, gc.Tensor):
        rc, rn = [rc], [rn]
    for k, (a, b) in enumerate(zip(rc, rn)):
        assert_close(a, b, what=f"output {k}")
    return fc, rc


# -- whole training steps --------------------------------------------------------------------------
def _mlp(dt, sizes=(20, 16, 12, 5), act=gc.relu):
    rng = np.random.default_rng(1)
    x = gc.placeholder("x", (None, sizes[0]), dt)
    y = gc.placeholder("y", (None,), "int64")
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = gc.parameter((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dt), name=f"W{i}")
        bias = gc.parameter(rng.standard_normal(b).astype(dt) * 0.1, name=f"b{i}")
        params += [w, bias]
        h = h @ w + bias
        if i < len(sizes) - 2:
            h = act(h)
    return x, y, params, gc.softmax_cross_entropy(h, y)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("act", [gc.relu, gc.tanh, gc.sigmoid, lambda h: gc.leaky_relu(h, 0.1)])
def test_mlp_training_step_matches_numpy_and_runs_in_one_c_call(dt, batch, act):
    x, y, params, loss = _mlp(dt, act=act)
    grads = gc.grad(loss, params + [x])
    rng = np.random.default_rng(batch)
    feeds = dict(x=rng.standard_normal((batch, 20)).astype(dt), y=rng.integers(0, 5, batch))
    fc, _ = both([loss] + grads, feeds)
    run = runner_of(fc)
    assert run.numpy_steps == [] and run.segments == 1, fc.explain()


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_sgd_updates_match_numpy_over_several_steps(dt):
    results = {}
    for backend in ("c", "numpy"):
        x, y, params, loss = _mlp(dt)
        grads = gc.grad(loss, params)
        step = gc.compile(loss, backend=backend, updates={p: p - 0.1 * g for p, g in zip(params, grads)})
        rng = np.random.default_rng(0)
        losses = [step(x=rng.standard_normal((9, 20)).astype(dt), y=rng.integers(0, 5, 9)) for _ in range(5)]
        results[backend] = (losses, [p.value for p in params])
    for a, b in zip(results["c"][0] + results["c"][1], results["numpy"][0] + results["numpy"][1]):
        assert_close(a, b, tol=TOL[np.dtype(dt)] * 10)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("batch,hw,stride,padding", [(1, (8, 8), 1, 1), (3, (7, 9), 2, 0), (2, (6, 5), 1, 2)])
def test_cnn_training_step_matches_numpy(dt, batch, hw, stride, padding):
    rng = np.random.default_rng(2)
    h, w = hw
    x = gc.placeholder("x", (None, 2, h, w), dt)
    y = gc.placeholder("y", (None,), "int64")
    k1 = gc.parameter(rng.standard_normal((4, 2, 3, 3)).astype(dt) * 0.3, name="k1")
    c1 = gc.parameter(rng.standard_normal(4).astype(dt) * 0.1, name="c1")
    k2 = gc.parameter(rng.standard_normal((3, 4, 2, 2)).astype(dt) * 0.3, name="k2")
    t = gc.relu(gc.conv2d(x, k1, c1, stride=stride, padding=padding))
    t = gc.max_pool2d(t, 2, stride=1, padding=1)
    t = gc.conv2d(t, k2)
    t = gc.avg_pool2d(t, 2, stride=1)
    t = gc.flatten(t)
    wd = gc.parameter(rng.standard_normal((t.shape[1], 5)).astype(dt) * 0.2, name="wd")
    loss = gc.softmax_cross_entropy(gc.tanh(t @ wd), y)
    params = [k1, c1, k2, wd]
    grads = gc.grad(loss, params + [x])
    feeds = dict(x=rng.standard_normal((batch, 2, h, w)).astype(dt), y=rng.integers(0, 5, batch))
    fc, _ = both([loss] + grads, feeds)
    assert runner_of(fc).numpy_steps == [], fc.explain()


def test_size_zero_batch():
    x, y, params, loss = _mlp("float64")
    grads = gc.grad(loss, params)
    both([loss, gc.sum(x, 0), gc.mean(x, 1)] + grads, dict(x=np.zeros((0, 20)), y=np.zeros(0, np.int64)))
    # convolution and pooling over an empty batch: empty outputs, zero weight gradients
    img = gc.placeholder("img", (None, 2, 6, 6), "float32")
    k = gc.parameter(np.ones((3, 2, 3, 3), np.float32), name="k")
    t = gc.avg_pool2d(gc.max_pool2d(gc.relu(gc.conv2d(img, k, padding=1)), 2), 1)
    out = gc.sum(t * t)
    both([t, out] + gc.grad(out, [k, img]), dict(img=np.zeros((0, 2, 6, 6), np.float32)))


def test_logistic_regression_bce_step():
    rng = np.random.default_rng(3)
    x = gc.placeholder("x", (None, 6), "float64")
    t = gc.placeholder("t", (None,), "float64")
    w = gc.parameter(rng.standard_normal(6), name="w")
    b = gc.parameter(0.1, name="b")
    loss = gc.binary_cross_entropy(x @ w + b, t)
    fc, _ = both([loss] + gc.grad(loss, [w, b, x]),
                 dict(x=rng.standard_normal((33, 6)), t=(rng.random(33) > 0.5).astype(float)))
    assert runner_of(fc).segments == 1


def _w_lr_step(backend, X, d):
    """The bench's W-lr step: full-batch GD on mean BCE of x @ w + b (float64), via updates=."""
    w = gc.parameter(np.linspace(-0.3, 0.3, d), name="w")
    b = gc.parameter(np.asarray(0.1), name="b")
    x = gc.placeholder("x", (None, d), "float64")
    t = gc.placeholder("t", (None,), "float64")
    loss = gc.binary_cross_entropy(x @ w + b, t)
    gw, gb = gc.grad(loss, [w, b])
    return gc.compile(loss, backend=backend, updates={w: w - 0.5 * gw, b: b - 0.5 * gb}), w, b


def test_w_lr_step_is_one_c_call_and_matches_the_numpy_backend():
    """The W-lr plan (569 x 30): the logits one dense node (GEMV + scalar bias), the loss and its
    gradient one kernel each (no sigmoid / sub / mul left), all in one C segment; losses and
    parameters after several steps equal the NumPy backend's (also with saturated logits and
    rows that are not a multiple of the vector width)."""
    rng = np.random.default_rng(4)
    for n, spread in ((569, 1.0), (37, 40.0)):
        X = rng.standard_normal((n, 30)) * spread
        T = (rng.random(n) > 0.5).astype(np.float64)
        fc, wc, bc = _w_lr_step("c", X, 30)
        fn, wn, bn = _w_lr_step("numpy", X, 30)
        for _ in range(4):
            assert_close(fc(x=X, t=T), fn(x=X, t=T), what="loss")
            assert_close(wc.value, wn.value, what="w")
            assert_close(bc.value, bn.value, what="b")
        run = runner_of(fc)
        assert run.segments == 1 and run.numpy_steps == []
        ops = [st.node.op for st in fc._last_plan.steps]
        assert {"dense", "binary_cross_entropy", "bce_logits_grad"} <= set(ops), ops
        assert not {"add", "sigmoid", "sub"} & set(ops), ops


def _opcodes(f):
    """The opcodes of the code the C backend runs for f's last plan, in order."""
    code, ops, pc = runner_of(f).lowered.code, [], 0
    while pc < len(code):
        ops.append(int(code[pc]))
        pc += int(code[pc + 1])
    return ops


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_bce_loss_and_gradient_run_as_one_instruction_only_when_safe(dt):
    """The loss and its gradient, back to back on the same logits and targets, become one
    GC_OP_BCE_LOSS_AND_GRAD; not when the gradient's scale is computed from the loss (it does not
    exist yet where the pair would run) or when only one of them is needed. Values match the
    NumPy backend every time."""
    from graphc.backends.c import lib
    rng = np.random.default_rng(6)
    z = gc.placeholder("z", (None,), dt)
    t = gc.placeholder("t", (None,), dt)
    loss = gc.binary_cross_entropy(z, t)
    feeds = dict(z=(rng.standard_normal(45) * 20).astype(dt), t=rng.random(45).astype(dt))
    pair, fwd, grad = lib.GC_OP_BCE_LOSS_AND_GRAD, lib.GC_OP_BINARY_CROSS_ENTROPY, lib.GC_OP_BCE_LOGITS_GRAD
    fc, _ = both([loss, gc.grad(loss, z)], feeds)
    ops = _opcodes(fc)
    assert pair in ops and fwd not in ops and grad not in ops, ops
    _check_unpaired(loss, z, feeds, pair, fwd, grad)
    g_by_loss = apply("bce_logits_grad", [z, t, loss])  # back to back, but the scale is the loss itself
    fc, _ = both([loss, g_by_loss], feeds)
    assert [st.node.op for st in fc._last_plan.steps] == ["binary_cross_entropy", "bce_logits_grad"]
    ops = _opcodes(fc)
    assert pair not in ops and fwd in ops and grad in ops, ops


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_softmax_ce_loss_and_gradient_run_as_one_instruction_only_when_safe(dt):
    """Softmax cross-entropy and its gradient, back to back on the same logits and labels, become
    one GC_OP_SOFTMAX_CE_LOSS_AND_GRAD with the same bits as the two kernels run apart (also for
    rows with non-finite logits and a confident row); not when the gradient's scale is the loss, or
    when only the gradient is needed. Values match the NumPy backend every time."""
    from graphc.backends.c import lib
    rng = np.random.default_rng(8)
    z = gc.placeholder("z", (None, 10), dt)
    y = gc.placeholder("y", (None,), "int64")
    loss = gc.softmax_cross_entropy(z, y)
    logits = (rng.standard_normal((37, 10)) * 4).astype(dt)
    logits[3, 2] = 60  # a confident row
    logits[5, 1] = np.inf
    logits[6, 4] = np.nan
    feeds = dict(z=logits, y=rng.integers(0, 10, 37))
    pair = lib.GC_OP_SOFTMAX_CE_LOSS_AND_GRAD
    fwd, grad = lib.GC_OP_SOFTMAX_CROSS_ENTROPY, lib.GC_OP_SOFTMAX_CROSS_ENTROPY_GRAD
    fc = gc.compile([loss, gc.grad(loss, z)], backend="c")
    got = fc(**feeds)
    ops = _opcodes(fc)
    assert pair in ops and fwd not in ops and grad not in ops, ops
    apart = [gc.compile(loss, backend="c")(**feeds), gc.compile(gc.grad(loss, z), backend="c")(**feeds)]
    np.testing.assert_array_equal(got[0], apart[0])
    np.testing.assert_array_equal(got[1], apart[1])
    finite = [r for r in range(37) if r not in (5, 6)]
    fn = gc.compile([loss, gc.grad(loss, z)], backend="numpy")
    assert_close(got[1][finite], fn(**feeds)[1][finite], what="gradient")
    assert np.isnan(got[0]) and np.isnan(got[1][[5, 6]]).all()
    feeds["z"] = np.nan_to_num(logits, nan=0.0, posinf=0.0)
    both([loss, gc.grad(loss, z)], feeds)
    _check_unpaired(loss, z, feeds, pair, fwd, grad)


def _check_unpaired(loss, z, feeds, pair, fwd, grad):
    """A loss and its gradient stay two instructions when the gradient's scale needs the loss
    first, and only the gradient runs when the loss is not wanted; both match NumPy."""
    sq = loss * loss  # d(sq)/dloss = 2 loss: the gradient's scale needs the loss first
    fc, _ = both([sq, gc.grad(sq, z)], feeds)
    ops = _opcodes(fc)
    assert pair not in ops and fwd in ops and grad in ops, ops
    fc, _ = both([gc.grad(loss, z)], feeds)  # no loss wanted: the gradient alone
    ops = _opcodes(fc)
    assert pair not in ops and fwd not in ops and grad in ops, ops


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_independent_gemms_run_side_by_side_only_when_safe(dt):
    """Two independent GEMMs of about the same size in consecutive steps run as one
    GC_OP_SIDE_BY_SIDE, each on one thread: the input-gradient and weight-update GEMMs of an MLP's
    middle layer and of its 10-class layer. SGD steps then match the NumPy backend; GEMMs that read
    each other's result, or are too small, stay separate."""
    from graphc.backends.c import SIDE_BY_SIDE_MIN_FMAS, lib
    n = 256
    assert n * n * 10 >= SIDE_BY_SIDE_MIN_FMAS > 64 ** 3
    x, y, params, loss = _mlp(dt, sizes=(n, n, n, 10))
    lr = 0.05
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((n, n)).astype(dt), rng.integers(0, 10, n)
    grads = gc.grad(loss, params)
    fc = gc.compile(loss, backend="c", updates={p: p - lr * g for p, g in zip(params, grads)})
    # the same steps on the NumPy backend, from the same starting values (_mlp's fixed seed)
    _, _, params_n, loss_n = _mlp(dt, sizes=(n, n, n, 10))
    grads_n = gc.grad(loss_n, params_n)
    fn = gc.compile(loss_n, backend="numpy", updates={p: p - lr * g for p, g in zip(params_n, grads_n)})
    for _ in range(3):
        assert_close(fc(x=X, y=Y), fn(x=X, y=Y), what="loss")
        for pc, pn in zip(params, params_n):
            assert_close(pc.value, pn.value, what=pc.name)
    assert _opcodes(fc).count(lib.GC_OP_SIDE_BY_SIDE) == 2, _opcodes(fc)

    a, b = gc.placeholder("a", (n, n), dt), gc.placeholder("b", (n, n), dt)
    feeds = dict(a=rng.standard_normal((n, n)).astype(dt), b=rng.standard_normal((n, n)).astype(dt))
    fc, _ = both([a @ b, b @ a], feeds)  # independent: side by side
    assert _opcodes(fc) == [lib.GC_OP_SIDE_BY_SIDE], _opcodes(fc)
    want = [feeds["a"] @ feeds["b"], feeds["b"] @ feeds["a"]]
    try:
        for threads in (1, 3):  # one thread: the two run one after the other
            gc.set_num_threads(threads)
            for got, ref in zip(fc(**feeds), want):
                assert_close(got, ref, what=f"{threads} threads")
    finally:
        gc.set_num_threads(0)
    fc, _ = both([a @ b, (a @ b) @ a], feeds)  # the second reads the first
    assert lib.GC_OP_SIDE_BY_SIDE not in _opcodes(fc), _opcodes(fc)
    fc, _ = both([a @ b, b[:64, :64] @ a[:64, :64]], feeds)  # too small, and unequal
    assert lib.GC_OP_SIDE_BY_SIDE not in _opcodes(fc), _opcodes(fc)


def test_side_by_side_rejects_malformed_code():
    """GC_OP_SIDE_BY_SIDE holds exactly two whole instructions, neither of them another pair."""
    from graphc.backends.c import ffi, lib
    fill = [lib.GC_OP_FILL, 7, 0, lib.GC_DT_F32, 0, 0 << 2 | lib.GC_REF_ARENA, 0]  # n = 0: writes nothing
    fconst, arena = np.zeros(1), np.zeros(128, np.uint8)

    def run(words):
        code = np.array(words, dtype=np.int64)
        return lib.gc_exec(ffi.cast("int64_t *", code.ctypes.data), len(code), ffi.cast("double *", fconst.ctypes.data),
                           1, ffi.NULL, ffi.NULL, ffi.cast("void *", arena.ctypes.data))

    def status(words):
        return int(np.int32(np.uint32(run(words) & 0xFFFFFFFF)))

    pair = [lib.GC_OP_SIDE_BY_SIDE, 4 + 2 * len(fill), 0, 0] + fill + fill
    assert status(pair) == 0
    assert status([lib.GC_OP_SIDE_BY_SIDE, 4 + len(fill), 0, 0] + fill) == lib.GC_E_BADCODE  # one instruction
    assert status([lib.GC_OP_SIDE_BY_SIDE, 4 + len(fill) + 3, 0, 0] + fill + fill[:3]) == lib.GC_E_BADCODE
    nested = [lib.GC_OP_SIDE_BY_SIDE, 4 + len(pair) + len(fill), 0, 0] + pair + fill
    assert status(nested) == lib.GC_E_BADCODE
    # a failing half is reported with its own step (7 here), not the pair's (0)
    broken = fill[:2] + [7] + fill[3:5] + [-1] + fill[6:]  # no output pointer
    rc = run([lib.GC_OP_SIDE_BY_SIDE, 4 + 2 * len(fill), 0, 0] + fill + broken)
    assert rc >> 32 == 7 + 1 and int(np.int32(np.uint32(rc & 0xFFFFFFFF))) == lib.GC_E_BADCODE


# -- op coverage -------------------------------------------------------------------------------------
@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=5, max_side=4),
       op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "minimum", "pow"]),
       dt=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_broadcasting_binary_ops_and_their_gradients(shapes, op, dt, seed):
    rng = np.random.default_rng(seed)
    (sa, sb), out = shapes.input_shapes, shapes.result_shape
    a = gc.placeholder("a", sa, dt)
    b = gc.placeholder("b", sb, dt)
    r = apply(op, [a, b])
    wts = gc.constant(rng.uniform(-1, 1, out).astype(dt))
    loss = gc.sum(r * wts)
    av = rng.uniform(0.5, 2.0, sa).astype(dt)
    bv = rng.uniform(0.5, 2.0, sb).astype(dt) * rng.choice([-1, 1], sb).astype(dt) if op != "pow" else \
        rng.uniform(-1.5, 1.5, sb).astype(dt)
    fc, _ = both([r, loss] + gc.grad(loss, [a, b]), dict(a=av, b=bv), optimize=False)


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=4), data=st.data(),
       op=st.sampled_from(["sum", "max", "mean"]), keepdims=st.booleans(), dt=st.sampled_from(["float32", "float64"]))
def test_reductions_over_any_axes(shape, data, op, keepdims, dt):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)))
    axis = None if not axes else tuple(axes)
    size = int(np.prod(shape))
    vals = np.random.default_rng(size).permutation(size).astype(dt).reshape(shape) / size  # distinct: no max ties
    x = gc.placeholder("x", shape, dt)
    r = getattr(gc, op)(x, axis=axis, keepdims=keepdims)
    loss = gc.sum(r * r)
    fc, _ = both([r] + gc.grad(loss, [x]), dict(x=vals), optimize=False)
    if op != "max":  # max's VJP uses `equal`, which has no C kernel
        assert runner_of(fc).numpy_steps == []


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_and_its_gradient(dt, log, axis):
    rng = np.random.default_rng(4)
    x = gc.placeholder("x", (5, 3, 7), dt)
    y = (gc.log_softmax if log else gc.softmax)(x, axis=axis)
    loss = gc.sum(y * gc.constant(rng.standard_normal((5, 3, 7)).astype(dt)))
    both([y] + gc.grad(loss, [x]), dict(x=rng.standard_normal((5, 3, 7)).astype(dt) * 3), optimize=False)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_unary_ops_casts_transposes_and_shape_plumbing(dt):
    rng = np.random.default_rng(5)
    x = gc.placeholder("x", (3, 4, 5), dt)
    v = gc.placeholder("v", (4, 1), dt)
    i = gc.placeholder("i", (3, 4, 5), "int64")
    pos = gc.exp(x)
    outs = [gc.neg(x), pos, gc.log(pos), gc.sqrt(pos), gc.abs(x), gc.sign(x), gc.sigmoid(x), gc.tanh(x),
            gc.relu(x), gc.leaky_relu(x, 0.2), gc.power(pos, 3.0), gc.power(pos, -0.5),
            gc.cast(x, "float64" if dt == "float32" else "float32"), gc.cast(i, dt),
            gc.transpose(x), gc.transpose(x, (1, 0, 2)), gc.reshape(x, (12, 5)), gc.expand_dims(x, 0),
            gc.squeeze(v, 1), gc.broadcast_like(v, x), gc.sum_to(x, v), gc.zeros_like(x), gc.ones_like(i),
            gc.stop_gradient(x) * 2, gc.sum(x, (0, 2))]
    fc, _ = both(outs, dict(x=rng.standard_normal((3, 4, 5)).astype(dt), v=rng.standard_normal((4, 1)).astype(dt),
                            i=rng.integers(-5, 5, (3, 4, 5))), optimize=False)
    assert runner_of(fc).numpy_steps == [], fc.explain()


@pytest.mark.parametrize("dt", ["bool", "int8", "uint8", "int16", "int32", "int64", "float32", "float64"])
def test_strided_copies_of_every_element_size(dt):
    """Transposes and broadcasts run as the C strided copy, one loop per element size (1, 2, 4, 8
    bytes): inner strides > 1, inner stride 0 (a column broadcast), outer stride 0 (a row
    broadcast), and a permutation of three axes. Bit-exact against NumPy."""
    a = (np.arange(5 * 7 * 3).reshape(5, 7, 3) % 5).astype(dt)
    m = gc.placeholder("m", a.shape, dt)
    col = gc.placeholder("col", (5, 1), dt)
    row = gc.placeholder("row", (1, 7), dt)
    like = gc.placeholder("like", (5, 7), dt)
    outs = [gc.transpose(m, (2, 0, 1)), gc.transpose(m, (1, 0, 2)), gc.transpose(gc.reshape(m, (35, 3))),
            gc.broadcast_like(col, like), gc.broadcast_like(row, like),
            gc.broadcast_like(m, gc.placeholder("big", (2, 5, 7, 3), dt))]
    feeds = dict(m=a, col=a[:, :1, 0].copy(), row=a[:1, :, 1].copy(), like=np.zeros((5, 7), dt),
                 big=np.zeros((2, 5, 7, 3), dt))
    f = gc.compile(outs, backend="c")
    got = f(**feeds)
    assert runner_of(f).numpy_steps == [], f.explain()
    want = [a.transpose(2, 0, 1), a.transpose(1, 0, 2), a.reshape(35, 3).T, np.broadcast_to(feeds["col"], (5, 7)),
            np.broadcast_to(feeds["row"], (5, 7)), np.broadcast_to(a, (2, 5, 7, 3))]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_matmul_with_vector_operands_and_transposes(dt):
    rng = np.random.default_rng(6)
    a = gc.placeholder("a", (4, 3), dt)
    b = gc.placeholder("b", (3, 5), dt)
    u = gc.placeholder("u", (3,), dt)
    w = gc.placeholder("w", (4,), dt)
    outs = [a @ b, u @ b, a @ u, w @ a, u @ u, gc.matmul(a, a, trans_a=True), gc.matmul(b, b, trans_b=True),
            gc.matmul(b, a, trans_a=True, trans_b=True)]
    loss = gc.sum(outs[1]) + gc.sum(outs[2]) + outs[4]
    feeds = {k: rng.standard_normal(s).astype(dt) for k, s in dict(a=(4, 3), b=(3, 5), u=(3,), w=(4,)).items()}
    fc, _ = both(outs + gc.grad(loss, [a, b, u]), feeds, optimize=False)
    assert runner_of(fc).numpy_steps == []


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 7, 784])
def test_matrix_vector_products_in_every_layout(dt, k):
    # M == 1 or N == 1 products take exec.c's vector loops instead of the packed GEMM
    rng = np.random.default_rng(k)
    m = 37
    a = gc.placeholder("a", (m, k), dt)
    at = gc.placeholder("at", (k, m), dt)
    v = gc.placeholder("v", (k,), dt)
    col = gc.placeholder("col", (k, 1), dt)
    row = gc.placeholder("row", (1, k), dt)
    u = gc.placeholder("u", (m,), dt)
    outs = [a @ v, v @ at, u @ a, at @ u, a @ col, gc.matmul(at, col, trans_a=True), gc.matmul(a, row, trans_b=True),
            row @ at, gc.matmul(row, a, trans_b=True), gc.matmul(col, at, trans_a=True),
            gc.matmul(col, a, trans_a=True, trans_b=True), v @ v]
    feeds = {t.name: rng.standard_normal(t.shape).astype(dt) for t in (a, at, v, col, row, u)}
    fc, _ = both(outs, feeds, optimize=False)
    assert runner_of(fc).numpy_steps == []


def test_fused_dense_epilogues():
    rng = np.random.default_rng(7)
    for dt in ("float32", "float64"):
        x = gc.placeholder("x", (None, 6), dt)
        w = gc.parameter(rng.standard_normal((6, 4)).astype(dt))
        b = gc.parameter(rng.standard_normal(4).astype(dt))
        outs = [gc.ops.dense(x, w, b, act=a, alpha=0.1) for a in ("identity", "relu", "leaky_relu", "sigmoid", "tanh")]
        outs.append(gc.ops.dense(x, w, None, act="relu", trans_b=False))
        loss = gc.sum(outs[2] * outs[4])
        both(outs + gc.grad(loss, [x, w, b]), dict(x=rng.standard_normal((9, 6)).astype(dt)), optimize=False)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 7, 30])
def test_dense_with_a_bias_on_matrix_vector_shapes(dt, k):
    """dense with a bias where the product is one column or one row (exec.c's GEMV loops, then the
    bias added): matrix @ vector + scalar (1-d output), (m, k) @ (k, 1) + (1,), (1, k) @ (k, n) + (n,),
    transposed layouts too, and the gradients; against the NumPy backend."""
    rng = np.random.default_rng(k)
    m, n = 37, 5
    a = gc.placeholder("a", (m, k), dt)
    at = gc.placeholder("at", (k, m), dt)
    row = gc.placeholder("row", (1, k), dt)
    v = gc.parameter(rng.standard_normal(k).astype(dt), name="v")
    col = gc.parameter(rng.standard_normal((k, 1)).astype(dt), name="col")
    wn = gc.parameter(rng.standard_normal((k, n)).astype(dt), name="wn")
    s = gc.parameter(np.asarray(0.75, dt), name="s")
    b1 = gc.parameter(np.array([-0.5], dt), name="b1")
    bn = gc.parameter(rng.standard_normal(n).astype(dt), name="bn")
    outs = [gc.ops.dense(a, v, s), gc.ops.dense(at, v, s, trans_a=True), gc.ops.dense(a, col, b1),
            gc.ops.dense(row, wn, bn), gc.ops.dense(row, gc.transpose(wn), bn, trans_b=True)]
    loss = sum(gc.sum(o * o) for o in outs)
    feeds = {t.name: rng.standard_normal(t.shape).astype(dt) for t in (a, at, row)}
    fc, _ = both(outs + gc.grad(loss, [v, s, b1, bn]), feeds, optimize=False)
    assert runner_of(fc).numpy_steps == []


NEW_ACTIVATIONS = {"softplus": lambda t: gc.softplus(t, beta=2.0), "elu": lambda t: gc.elu(t, alpha=0.7),
                   "gelu": gc.gelu, "gelu_tanh": lambda t: gc.gelu(t, approximate="tanh"), "silu": gc.silu,
                   "erf": gc.erf}


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("optimize", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", sorted(NEW_ACTIVATIONS))
def test_new_activations_run_in_c_alone_and_inside_fused_chains(name, optimize, dt):
    """Forward and gradient of each activation added with the op table: its own C kernel
    (optimize=False) or an instruction of a fused_elementwise program, never a NumPy step."""
    x = gc.placeholder("x", (None, 33), dt)
    y = NEW_ACTIVATIONS[name](x * 2.0 - 0.5)
    g = gc.grad(gc.sum(y * y), [x])[0]
    X = np.random.default_rng(4).standard_normal((64, 33)).astype(dt) * 3
    fc, _ = both([y, g], dict(x=X), optimize=optimize)
    run = runner_of(fc)
    assert run.numpy_steps == [] and run.segments == 1, fc.explain()
    if optimize:  # an inner link of a chain: one fused program holds it
        z = (NEW_ACTIVATIONS[name](x * 2.0 - 0.5) + 1.0) * x
        fz, _ = both(z, dict(x=X))
        kernels = [op for st in fz._last_plan.steps if st.node.op == "fused_elementwise"
                   for op, _, _ in st.node.attrs["program"]]
        assert name in kernels and len(fz._last_plan.steps) == 1, fz.explain()


# -- fused_elementwise --------------------------------------------------------------------------------

def _fused_of_arity(n: int) -> list:
    """The fused kernels with n operands, from the registry."""
    return sorted(k for k, (op, _) in fused_kernels().items() if op.arity == n)


def _params(kernel: str) -> list:
    """Values of the kernel's float parameter: the registry's fuzz values for it (None: no parameter)."""
    op, _ = fused_kernels()[kernel]
    if not op.kernel_param:
        return [None]
    spec = op.fuzz_attrs if isinstance(op.fuzz_attrs, dict) else {}
    return list(spec.get(op.kernel_param, (0.1, 1.0)))


@st.composite
def fused_programs(draw):
    dt = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    shape = draw(st.sampled_from([(), (1,), (5,), (3, 7), (2, 300), (0, 4)]))
    nin = draw(st.integers(1, 3))
    full = [draw(st.booleans()) for _ in range(nin)]
    program = []
    nvals = nin
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "const"]))
        if kind == "const":
            program.append(("const", (), draw(st.sampled_from([0.5, -2.0, 3.0]))))
        elif kind == "unary":
            op = draw(st.sampled_from(_fused_of_arity(1)))
            program.append((op, (draw(st.integers(0, nvals - 1)),), draw(st.sampled_from(_params(op)))))
        else:
            op = draw(st.sampled_from(_fused_of_arity(2)))
            args = (draw(st.integers(0, nvals - 1)), draw(st.integers(0, nvals - 1)))
            program.append((op, args, draw(st.sampled_from(_params(op)))))
        nvals += 1
    seed = draw(st.integers(0, 2**16))
    return dt, shape, full, tuple(program), seed


def _fused_inputs(dt, shape, full, seed):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0.2, 2.0, shape if f else ()) * rng.choice([-1, 1])).astype(dt) for f in full]


def _check_fused(dt, shape, full, program, values):
    with np.errstate(all="ignore"):
        want = np.broadcast_to(run_program(program, values, dt), shape)
    usable = bool(np.all(np.isfinite(want)) and (want.size == 0 or np.max(np.abs(want)) < 1e6))
    if currently_in_test_context():
        assume(usable)
    else:
        assert usable, "a fixed test case must be finite"
    phs = [gc.placeholder(f"i{k}", v.shape, dt) for k, v in enumerate(values)]
    node = apply("fused_elementwise", phs, program=program, shape=shape, dtype=dt)
    f = gc.compile(node, backend="c", optimize=False)
    got = f(**{f"i{k}": v for k, v in enumerate(values)})
    assert runner_of(f).numpy_steps == [] and runner_of(f).segments == 1
    assert_close(got, np.array(want), what=str(program))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(fused_programs())
def test_fused_elementwise_kernel_matches_run_program(case):
    dt, shape, full, program, seed = case
    _check_fused(dt, shape, full, program, _fused_inputs(dt, shape, full, seed))


@pytest.mark.parametrize("n", [255, 256, 257, 70001])  # block edges and the multi-threaded path
def test_fused_elementwise_long_chains_and_sizes(n):
    program = (("mul", (0, 1), None), ("tanh", (2,), None), ("const", (), 0.5), ("add", (3, 4), None),
               ("sigmoid_grad", (5, 0), None), ("exp", (6,), None), ("maximum", (7, 1), None),
               ("relu_grad", (8, 0), None), ("power", (9,), 2.0), ("sub", (10, 2), None))
    for dt in (np.float32, np.float64):
        rng = np.random.default_rng(n)
        values = [rng.standard_normal(n).astype(dt), np.asarray(0.7, dt)]
        _check_fused(np.dtype(dt), (n,), [True, False], program, values)


# -- structure, errors, memory, threads ---------------------------------------------------------------
def test_numpy_steps_between_c_segments():
    rng = np.random.default_rng(8)
    x = gc.placeholder("x", (6, 4), "float64")
    y = gc.placeholder("y", (6,), "int64")
    h = gc.tanh(x * 2.0)
    clipped = gc.clip(h, -0.5, 0.5)  # NumPy step between C steps
    oh = gc.one_hot(y, 4, "float64")  # NumPy step whose result is an output
    z = gc.where(gc.greater(clipped, 0), clipped, h * 3)
    loss = gc.sum(z * oh) + gc.sum(gc.reshape(z, (24,)))
    outs = [loss, oh, gc.reshape(h, (4, 6))] + gc.grad(loss, [x])
    fc, _ = both(outs, dict(x=rng.standard_normal((6, 4)), y=rng.integers(0, 4, 6)), optimize=False)
    run = runner_of(fc)
    assert run.numpy_steps and run.segments >= 2


def test_outputs_are_fresh_and_never_alias_inputs_or_each_other():
    x = gc.placeholder("x", (3, 4), "float64")
    p = gc.parameter(np.arange(12.0).reshape(3, 4), name="p")
    c = gc.constant(np.ones(3))
    h = x + p
    outs = [x, p, gc.reshape(p, (12,)), c, h, h, gc.reshape(h, (4, 3)), gc.stop_gradient(x)]
    X = np.random.default_rng(9).standard_normal((3, 4))
    fc, res = both(outs, dict(x=X), optimize=False)
    arrays = [X, p.value] + res
    for i, a in enumerate(arrays):
        assert a.flags.c_contiguous and a.flags.writeable
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["+inf", "-inf", "nan"])
def test_non_finite_logits_give_numpys_nan_and_inf(dt, bad):
    """A non-finite logit must not hide behind a finite result (issue 15 item 3: the C gradient row
    of softmax cross-entropy was [-0, 0, 0] for a +inf logit at the label, NumPy's and PyTorch's
    is NaN). Softmax, log-softmax, the fused loss and its gradient, and BCE from logits, row by row
    and as one batch, against the NumPy backend: NaN and inf in the same places."""
    rows = [([bad, 0.0, 1.0], 0), ([bad, 0.0, 1.0], 1), ([0.0, 1.0, bad], 0), ([bad, bad, 0.0], 2),
            ([0.5, -1.0, 2.0], 1)]
    x = gc.placeholder("x", (None, 3), dt)
    y = gc.placeholder("y", (None,), "int64")
    t = gc.placeholder("t", (None, 3), dt)
    loss = gc.softmax_cross_entropy(x, y)
    bce = gc.binary_cross_entropy(x, t)
    outs = [loss, gc.grad(loss, [x])[0], gc.softmax(x), gc.log_softmax(x), bce, gc.grad(bce, [x])[0]]
    batches = [[r] for r in rows] + [rows]
    for batch in batches:
        X = np.array([r for r, _ in batch], dt)
        Y = np.array([label for _, label in batch], np.int64)
        T = np.tile(np.array([0.0, 1.0, 0.25], dt), (len(batch), 1))
        with np.errstate(all="ignore"):
            both(outs, dict(x=X, y=Y, t=T))


def test_label_out_of_range_names_the_op_and_line():
    x = gc.placeholder("x", (None, 3), "float32")
    y = gc.placeholder("y", (None,), "int64")
    line = inspect.currentframe().f_lineno + 1
    loss = gc.softmax_cross_entropy(x * 2.0, y)
    f = gc.compile([loss] + gc.grad(loss, [x]), backend="c")
    with pytest.raises(gc.GraphError, match=rf"softmax_cross_entropy.*test_c_backend.py:{line}.*found 7"):
        f(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 7, 2]))
    with pytest.raises(gc.GraphError, match=r"found -1"):
        f(x=np.zeros((2, 3), np.float32), y=np.array([-1, 1]))
    assert runner_of(f).segments == 1  # the error came from inside the one gc_exec call
    f(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 2, 2]))  # still usable afterwards


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_arena_reuse_does_not_corrupt_results(dt):
    from graphc.backends.c import make_runner
    x, y, params, loss = _mlp(dt, sizes=(20, 32, 32, 32, 5))
    f = gc.compile([loss] + gc.grad(loss, params + [x]), backend="c")
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((17, 20)).astype(dt), rng.integers(0, 5, 17)
    with_reuse = f(x=X, y=Y)
    plan = f._last_plan
    fresh = make_runner(plan, reuse=False)
    reused = runner_of(f)
    assert reused.lowered.arena.nbytes < fresh.lowered.arena.nbytes
    params_v = [p.value for p in f.parameters]
    without = fresh([X, Y], params_v)
    for a, b in zip(with_reuse, without):
        np.testing.assert_array_equal(a, b)


def test_inplace_never_overwrites_a_smaller_broadcast_operand():
    # (2, 1) and (2, 2) float32 occupy the same 64-byte arena block, but pow(a, b - 1) must not
    # be written over b - 1 while it is still being read (found by hypothesis)
    a = gc.placeholder("a", (2,), "float32")
    b = gc.placeholder("b", (2, 1), "float32")
    loss = gc.sum(gc.pow(a, b) * gc.constant(np.array([[0.3, -0.7], [0.9, 0.2]], np.float32)))
    both([loss] + gc.grad(loss, [a, b]), dict(a=np.array([0.8, 1.7], np.float32), b=np.array([[1.3], [-0.4]],
                                                                                            np.float32)),
         optimize=False)


def test_concurrent_calls_from_four_threads_match_serial_calls():
    x, y, params, loss = _mlp("float64", sizes=(20, 64, 64, 5))
    f = gc.compile([loss] + gc.grad(loss, params), backend="c")
    rng = np.random.default_rng(11)
    batches = [(rng.standard_normal((n, 20)), rng.integers(0, 5, n)) for n in (8, 8, 8, 8)]
    serial = [f(x=X, y=Y) for X, Y in batches]
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(30):
                results[k] = f(x=batches[k][0], y=batches[k][1])
                for a, b in zip(results[k], serial[k]):
                    np.testing.assert_array_equal(a, b)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_set_num_threads_and_backend_info():
    info = gc.backend_info()
    assert info["c_available"] and info["threads"] >= 1
    flags = open("/proc/cpuinfo").read().split() if __import__("os").path.exists("/proc/cpuinfo") else []
    if flags:
        assert info["avx2"] == ("avx2" in flags and "fma" in flags)
        avx512 = info["avx2"] and {"avx512f", "avx512vl", "avx512dq"} <= set(flags)
        assert info["gemm_simd"] == ("avx512" if avx512 else "avx2" if info["avx2"] else "scalar")
    x, y, params, loss = _mlp("float32", sizes=(64, 256, 10))
    f = gc.compile([loss] + gc.grad(loss, params), backend="c")
    rng = np.random.default_rng(12)
    X, Y = rng.standard_normal((300, 64)).astype(np.float32), rng.integers(0, 10, 300)
    try:
        gc.set_num_threads(1)
        assert gc.backend_info()["threads"] == 1
        one = f(x=X, y=Y)
        for n in (2, 3, 4):  # more threads than this machine has cores is allowed too
            gc.set_num_threads(n)
            assert gc.backend_info()["threads"] == n
            for _ in range(10):  # repeated: a race shows up only now and then
                for a, b in zip(f(x=X, y=Y), one):
                    assert_close(a, b, what=f"{n} threads")
    finally:
        gc.set_num_threads(0)
    assert gc.backend_info()["threads"] == info["threads"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_random_graphs_agree_with_numpy(data):
    from graphc.testing import graphs
    g = data.draw(graphs(max_nodes=6))
    grads = gc.grad(g.output, g.inputs)
    feeds = {t.name: v for t, v in g.values.items()}
    # long random chains amplify rounding; any float32 node makes it float32 rounding
    mixed = any(n.dtype == np.float32 for n in reachable([g.output]))
    tol = 1e-10 if g.dtype == np.float64 and not mixed else 1e-4
    outputs = [g.output] + grads
    fc = gc.compile(outputs, backend="c")
    fn = gc.compile(outputs, backend="numpy")
    scales = term_scales(outputs, g.values) if tol > 1e-10 else [0.0] * len(outputs)
    for a, b, scale in zip(fc(**feeds), fn(**feeds), scales):
        assert_close(a, b, tol=tol, scale=scale)


# -- GC_OP_GEMM_EX: matmul_update / matmul_act_grad (the SGD step's fused epilogues) ---------------
@pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(30, 569, 1), (1, 40, 7), (9, 0, 5), (33, 17, 21), (150, 260, 40)])
def test_gemm_ex_ops_match_numpy_backend(dtype, m, k, n):
    """Both fused ops on the C backend against the NumPy backend, through the GEMV shapes (N or M
    = 1: the W-lr step's weight gradient), K = 0 and several K blocks (K = 260 > KC = 256)."""
    rng = np.random.default_rng(m * 100 + k + n)
    A = rng.standard_normal((k, m)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    X = rng.standard_normal((m, n)).astype(dtype)
    Y = rng.standard_normal((m, n)).astype(dtype)
    Y[Y < -1] = 0.0
    a, b, x, y = (gc.placeholder(nm, v.shape, dtype) for nm, v in zip("abxy", (A, B, X, Y)))
    outs = [gc.matmul_update(a, b, x, -0.1, trans_a=True), gc.matmul_act_grad(a, b, y, "relu", trans_a=True),
            gc.matmul_act_grad(a, b, y, "leaky_relu", 0.2, trans_a=True)]
    feeds = dict(a=A, b=B, x=X, y=Y)
    f = gc.compile(outs, backend="c")
    got = f(**feeds)
    lowered = f._plans[next(iter(f._plans))][1].lowered
    assert not lowered.numpy_steps  # all three ran as C GEMMs, not as NumPy fallbacks
    want = gc.compile(outs, backend="numpy")(**feeds)
    tol = 32 * np.finfo(dtype).eps * max(k, 1)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    assert np.all(got[1][Y <= 0] == 0)


# -- bias gradients summed by the weight-gradient GEMM (gc_sgemm_ex's colsum_b) --------------------
def _steps_and_hosts(f):
    lo = runner_of(f).lowered
    return [s.node.op for s in lo.plan.steps], lo.colsum_hosts


@pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")
@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 9, 300])
def test_bias_gradients_are_summed_by_the_weight_gradient_gemms(dt, batch):
    """db = sum_to(dZ) is dropped and written by the GEMM dW = h^T dZ of the same layer, with the
    SGD update fused (matmul_update) or the gradients returned (plain matmul); values as NumPy's."""
    rng = np.random.default_rng(batch)
    feeds = dict(x=rng.standard_normal((batch, 20)).astype(dt), y=rng.integers(0, 5, batch))
    x, y, params, loss = _mlp(dt)
    fc, _ = both([loss] + gc.grad(loss, params), feeds)
    ops, hosts = _steps_and_hosts(fc)
    assert sorted(ops[h] for h in hosts) == ["matmul"] * 3 and {ops[s] for s in hosts.values()} == {"sum_to"}
    assert "sum_to" in ops  # still in the plan (explain, NumPy backend); only the C code drops it
    results = {}
    for backend in ("c", "numpy"):
        x, y, params, loss = _mlp(dt)
        step = gc.compile(loss, backend=backend,
                          updates={p: p - 0.1 * g for p, g in zip(params, gc.grad(loss, params))})
        losses = [step(**feeds) for _ in range(3)]
        results[backend] = losses + [p.value for p in params]
        if backend == "c":
            ops, hosts = _steps_and_hosts(step)
            assert sorted(ops[h] for h in hosts) == ["matmul_update"] * 3
    for a, b in zip(results["c"], results["numpy"]):
        assert_close(a, b, tol=TOL[np.dtype(dt)] * 10)


@pytest.mark.skipif(not C_AVAILABLE, reason="the C extension is not built")
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_a_bias_gradient_read_before_its_gemm_is_summed_on_its_own(dt):
    """The sum would be written late (by the GEMM): a step between reading it keeps sum_to."""
    rng = np.random.default_rng(3)
    feeds = dict(x=rng.standard_normal((9, 4)).astype(dt), dz=rng.standard_normal((9, 6)).astype(dt))

    def graph(read_between: bool):
        x, dz = gc.placeholder("x", (None, 4), dt), gc.placeholder("dz", (None, 6), dt)
        b = gc.parameter(np.zeros(6, dt), name="b")
        g = gc.tanh(dz)
        db = gc.sum_to(g, b)
        reader = gc.exp(db) if read_between else db
        return [gc.matmul(gc.tanh(x), g, trans_a=True), reader]  # tanh(x): the GEMM runs last

    fc, _ = both(graph(True), feeds)
    ops, hosts = _steps_and_hosts(fc)
    assert ops.index("sum_to") < ops.index("exp") < ops.index("matmul") and hosts == {}
    fc, _ = both(graph(False), feeds)  # the positive control: the sum is only an output
    ops, hosts = _steps_and_hosts(fc)
    assert [(ops[h], ops[s]) for h, s in hosts.items()] == [("matmul", "sum_to")]


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.5, 2.0, -0.5, 1.5])
def test_power_at_ieee_edge_values_matches_numpy(dt, p):
    """x ** p at 0, -0, +-inf, NaN and negative x gives the NumPy backend's values bit for bit, and
    the same NaN and inf places fused into a chain (whose vectorised exp may differ by 2 ulp):
    NumPy computes ** 0.5 as sqrt (so (-inf) ** 0.5 is NaN like any negative base, where C's pow
    gives +inf) and ** 2 as x * x (found by graphc fuzz --seed 1)."""
    xs = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -4.0, 2.25, 1e-30, -1e30], dt)
    x = gc.placeholder("x", xs.shape, dt)
    outs = [x ** p, gc.exp(-(x ** p)) * 2.0]
    with np.errstate(all="ignore"):
        rc = gc.compile(outs, backend="c")(x=xs)
        rn = gc.compile(outs, backend="numpy")(x=xs)
    np.testing.assert_array_equal(rc[0], rn[0])
    np.testing.assert_allclose(rc[1], rn[1], rtol=1e-6 if dt == "float32" else 1e-14, equal_nan=True)


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("simd", [1, 0])
def test_softmax_ce_gradient_under_an_infinite_upstream_gradient_matches_numpy(dt, simd):
    """g * (softmax - onehot) with g = inf is -inf at the label and +inf elsewhere, as NumPy
    computes it; the kernels formed g * p - g there, inf - inf = NaN (found by graphc fuzz
    --seed 2). Both the loss-and-gradient instruction and the gradient alone, vector and scalar."""
    from graphc.backends.c import lib
    lib.gc_kernels_set_simd(simd)
    if simd and not lib.gc_kernels_simd_level():
        pytest.skip("CPU without AVX2+FMA")
    try:
        z = gc.placeholder("z", (None, 5), dt)
        y = gc.placeholder("y", (None,), "int64")
        loss = gc.softmax_cross_entropy(z, y)
        g = gc.placeholder("g", (), dt)
        scaled = loss * g
        feeds = dict(z=np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 3.0, 0.0]], dt),
                     y=np.array([2, 1]), g=np.array(np.inf, dt))
        for outs in ([scaled, gc.grad(scaled, z)], [gc.grad(scaled, z)]):
            with np.errstate(all="ignore"):
                rc = gc.compile(outs, backend="c")(**feeds)
                rn = gc.compile(outs, backend="numpy")(**feeds)
            grad_c, grad_n = rc[-1], rn[-1]
            np.testing.assert_array_equal(grad_c, grad_n)
            assert grad_c[0, 2] == -np.inf and grad_c[1, 1] == -np.inf and np.isposinf(grad_c[0, [0, 1, 3, 4]]).all()
    finally:
        lib.gc_kernels_set_simd(1)


_SIMD_SCRIPT = """
import json, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import graphc as gc
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 70)).astype(np.float32)
x, w = gc.placeholder("x", a.shape, "float32"), gc.placeholder("w", b.shape, "float32")
got = gc.compile(gc.relu(x @ w), backend="c")(x=a, w=b)
want = np.maximum(a.astype(np.float64) @ b, 0)
err = float(np.abs(got - want).max() / np.abs(want).max())
print(json.dumps(dict(info=gc.backend_info(), err=err, warnings=[str(c.message) for c in caught])))
"""


@pytest.mark.parametrize("level", ["scalar", "avx2", "bogus"])
def test_graphc_simd_caps_the_kernels_instruction_set(level):
    """GRAPHC_SIMD=scalar|avx2|avx512 caps the C kernels below what the CPU has (a user can measure
    the AVX2 path on an AVX-512 machine); the results stay right; an unknown value warns and is
    ignored."""
    env = dict(os.environ, GRAPHC_SIMD=level, GRAPHC_BACKEND="c")
    best = subprocess.run([sys.executable, "-c", _SIMD_SCRIPT], env=dict(env, GRAPHC_SIMD=""), capture_output=True,
                          text=True, check=True)
    best = json.loads(best.stdout)["info"]
    out = json.loads(subprocess.run([sys.executable, "-c", _SIMD_SCRIPT], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["err"] < 1e-5
    levels = ["scalar", "avx2", "avx512"]
    if level == "bogus":
        assert out["info"]["gemm_simd"] == best["gemm_simd"]
        assert any("GRAPHC_SIMD='bogus'" in m for m in out["warnings"]), out["warnings"]
        return
    assert not out["warnings"]
    expect = levels[min(levels.index(level), levels.index(best["gemm_simd"]))]
    assert out["info"]["gemm_simd"] == expect
    assert out["info"]["avx2"] == (expect != "scalar" and best["avx2"])
