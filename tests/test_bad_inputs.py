"""The bad-input matrix: every public entry point fed what it should not get.

Entry points: placeholders and feeds (compiled calls), compile(), ops at build time, parameters
whose value is swapped between calls, the attacks (fgsm, pgd, evaluate) and model save/load.
Inputs: wrong Python types, NaN/inf, empty and mismatched batches, bad labels, odd memory layouts
(Fortran order, strided, negative strides, read-only, byte-swapped, misaligned, zero strides),
integer arrays where floats go, and shapes whose element count overflows 32-bit ints.

Every case runs under both backends and ends in one of two ways:
  * a correct result: equal to the result on a clean, C-contiguous, native copy of the input
    (NaN and inf propagate row by row, as documented; check_finite names the feed or parameter);
  * a graphc.GraphError whose message names the problem and, where a node or an op call is
    involved, this file's line that created it.
Never a crash, a hang, another exception type or a silently wrong number.

BAD_INPUT_CASES lists every case id (per backend); `pytest -v tests/test_bad_inputs.py` shows them.
"""
import io
import os
import re
import warnings

import numpy as np
import pytest

import graphc as gc
from graphc import attacks, backends, nn

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

HERE = os.path.basename(__file__)
with open(__file__) as _fh:
    _SOURCE = _fh.read().splitlines()


def line_of(marker: str) -> int:
    """1-based line of this file holding `# marker: <marker>` (so messages can be checked for it)."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if text.rstrip().endswith(f"# marker: {marker}")]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


BACKENDS = [pytest.param("c", marks=pytest.mark.skipif(not backends.C_AVAILABLE,
                                                       reason=f"C extension not built: {backends.C_IMPORT_ERROR}")),
            "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """For the tests that are not parametrized over cases (the huge-shape ones)."""
    return request.param


# -- array helpers --------------------------------------------------------------------------------
def misaligned(a: np.ndarray) -> np.ndarray:
    """A copy of `a` that starts 1 byte into a uint8 buffer (so not aligned for its dtype)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned or a.dtype.itemsize == 1
    return out


def read_only(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out.setflags(write=False)
    return out


def swapped(a: np.ndarray) -> np.ndarray:
    """Same values, the other byte order ('>f4' on little-endian machines)."""
    return a.astype(a.dtype.newbyteorder("S"))


def strided(a: np.ndarray) -> np.ndarray:
    """A view of `a`'s values with a step of 2 along the last axis (not contiguous)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def everything_odd(a: np.ndarray) -> np.ndarray:
    """Byte-swapped, Fortran-ordered and misaligned at once."""
    s = swapped(a)
    buf = np.zeros(s.nbytes + 1, np.uint8)
    out = np.ndarray(s.shape, s.dtype, buffer=buf, offset=1, strides=np.asfortranarray(s).strides)
    out[...] = s
    assert not out.flags.aligned and not out.flags.c_contiguous and not out.dtype.isnative
    return out


def assert_same(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


def expect_graph_error(fn, pattern: str, marker: str = None, located: bool = True) -> str:
    """fn() raises GraphError matching `pattern`; its message names this file (at `marker`'s line)."""
    with pytest.raises(gc.GraphError, match=pattern) as info:
        fn()
    msg = str(info.value)
    if marker is not None:
        assert f"{HERE}:{line_of(marker)}" in msg, msg
    elif located:
        assert re.search(re.escape(HERE) + r":\d+", msg), msg
    return msg


# -- the graph fed in the feed cases: dense + tanh + exp/relu reductions + softmax cross-entropy ----
RNG = np.random.default_rng(0)
X0 = RNG.random((6, 4))
Y0 = np.array([0, 1, 2, 2, 1, 0])
W0 = RNG.normal(size=(4, 3))
B0 = RNG.normal(size=3)


def classifier(dtype, backend, check_finite=False, W=W0, b=B0):
    """f(x, y) -> [loss, logits, d loss/dx, d loss/dW], and the parameters (W, b)."""
    x = gc.placeholder("x", (None, 4), dtype)  # marker: x
    y = gc.placeholder("y", (None,), "int64")  # marker: y
    Wp = gc.parameter(np.asarray(W, dtype), name="W")  # marker: W
    bp = gc.parameter(np.asarray(B0 if b is None else b, dtype), name="b")
    h = gc.tanh(x @ Wp + bp)  # marker: dense
    logits = h * 3.0 + gc.exp(x * 0.5).sum(axis=1, keepdims=True) * 0.1 - gc.relu(x).max(axis=1, keepdims=True)
    loss = gc.softmax_cross_entropy(logits, y)  # marker: loss
    gx, gW = gc.grad(loss, [x, Wp])
    return gc.compile([loss, logits, gx, gW], backend=backend, check_finite=check_finite), (Wp, bp)


def _ok(**feeds):
    return ("ok", feeds)


def _err(pattern, marker=None):
    return ("error", pattern, marker)


def _nonfinite(value):
    return ("nonfinite", value)


# id -> callable(X, Y) -> (feeds, expectation); expectation:
#   ("ok", clean feeds)      the result equals the result on the clean feeds
#   ("error", regex, marker) GraphError matching regex, naming the line of `marker` (or just this file)
#   ("nonfinite", v)         row 0 of x is v: rows 1.. are exact, row 0 and the batch mean propagate it
FEED_CASES = {
    # wrong Python types
    "x_str": lambda X, Y: ({"x": "abc", "y": Y}, _err(r"feed 'x' cannot be converted", "x")),
    "x_none": lambda X, Y: ({"x": None, "y": Y}, _err(r"feed 'x' cannot be converted.*not numeric", "x")),
    "x_dict": lambda X, Y: ({"x": {"a": 1}, "y": Y}, _err(r"feed 'x' cannot be converted.*not numeric", "x")),
    "x_object": lambda X, Y: ({"x": object(), "y": Y}, _err(r"feed 'x' cannot be converted.*not numeric", "x")),
    "x_bytes": lambda X, Y: ({"x": b"\x00\x01", "y": Y}, _err(r"feed 'x' cannot be converted", "x")),
    "x_tensor": lambda X, Y: ({"x": gc.placeholder("t", (6, 4)), "y": Y}, _err(r"not a symbolic Tensor", "x")),
    "x_str_array": lambda X, Y: ({"x": X.astype(str), "y": Y},
                                 _err(r"feed 'x' cannot be converted.*<U.*not numeric", "x")),
    "x_ragged_list": lambda X, Y: ({"x": [[1.0, 2.0, 3.0, 4.0], [1.0]], "y": Y[:2]},
                                   _err(r"feed 'x' cannot be converted", "x")),
    "x_complex": lambda X, Y: ({"x": X.astype(np.complex64), "y": Y}, _err(r"complex64 values is not numeric", "x")),
    "x_masked_array": lambda X, Y: ({"x": np.ma.masked_array(X, X > 0.5), "y": Y}, _err(r"masked array", "x")),
    "y_str": lambda X, Y: ({"x": X, "y": "abc"}, _err(r"feed 'y' cannot be converted", "y")),
    "y_none": lambda X, Y: ({"x": X, "y": None}, _err(r"feed 'y' cannot be converted", "y")),
    "y_dict": lambda X, Y: ({"x": X, "y": {}}, _err(r"feed 'y' cannot be converted", "y")),
    "y_object": lambda X, Y: ({"x": X, "y": object()}, _err(r"feed 'y' cannot be converted", "y")),
    "y_tensor": lambda X, Y: ({"x": X, "y": gc.placeholder("t", (6,), "int64")}, _err(r"not a symbolic Tensor", "y")),
    "x_list_of_lists": lambda X, Y: ({"x": X.tolist(), "y": Y.tolist()}, _ok(x=X, y=Y)),
    "x_np_matrix": lambda X, Y: ({"x": np.asmatrix(X), "y": Y}, _ok(x=X, y=Y)),
    # wrong shapes, dtypes, precision
    "x_scalar": lambda X, Y: ({"x": X.dtype.type(1), "y": Y}, _err(r"shape \(\) but the placeholder has 2", "x")),
    "x_rank_3": lambda X, Y: ({"x": X[None], "y": Y}, _err(r"2 dimension\(s\)", "x")),
    "x_wrong_width": lambda X, Y: ({"x": X[:, :3], "y": Y}, _err(r"shape \(6, 3\), expected \(\?, 4\)", "x")),
    # one rule for arrays and lists alike: NumPy's same_kind casting (other float precisions convert)
    "x_other_float": lambda X, Y: ({"x": X.astype(np.float64 if X.dtype == np.float32 else np.float32), "y": Y},
                                   _ok(x=X.astype(np.float64 if X.dtype == np.float32 else np.float32)
                                       .astype(X.dtype), y=Y)),
    "x_float16": lambda X, Y: ({"x": X.astype(np.float16), "y": Y},
                               _ok(x=X.astype(np.float16).astype(X.dtype), y=Y)),
    "x_int64": lambda X, Y: ({"x": (X * 4).astype(np.int64), "y": Y},
                             _ok(x=(X * 4).astype(np.int64).astype(X.dtype), y=Y)),
    "x_int8": lambda X, Y: ({"x": (X * 4 - 2).astype(np.int8), "y": Y},
                            _ok(x=(X * 4 - 2).astype(np.int8).astype(X.dtype), y=Y)),
    "x_uint8": lambda X, Y: ({"x": (X * 3).astype(np.uint8), "y": Y},
                             _ok(x=(X * 3).astype(np.uint8).astype(X.dtype), y=Y)),
    "x_bool": lambda X, Y: ({"x": X > 0.5, "y": Y}, _ok(x=(X > 0.5).astype(X.dtype), y=Y)),
    # batches
    "empty_batch": lambda X, Y: ({"x": X[:0], "y": Y[:0]}, ("empty",)),
    "batch_mismatch": lambda X, Y: ({"x": X, "y": Y[:5]}, _err(r"batch sizes differ: logits 6, labels 5", "loss")),
    "batch_mismatch_empty_x": lambda X, Y: ({"x": X[:0], "y": Y},
                                            _err(r"batch sizes differ: logits 0, labels 6", "loss")),
    "batch_mismatch_empty_y": lambda X, Y: ({"x": X, "y": Y[:0]},
                                            _err(r"batch sizes differ: logits 6, labels 0", "loss")),
    # labels
    "labels_negative": lambda X, Y: ({"x": X, "y": np.where(np.arange(6) == 3, -1, Y)},
                                     _err(r"labels must lie in \[0, 3\); found -1", "loss")),
    "labels_too_big": lambda X, Y: ({"x": X, "y": np.where(np.arange(6) == 2, 3, Y)},
                                    _err(r"labels must lie in \[0, 3\); found 3", "loss")),
    "labels_huge": lambda X, Y: ({"x": X, "y": np.where(np.arange(6) == 5, 2 ** 40, Y)},
                                 _err(r"labels must lie in \[0, 3\); found 1099511627776", "loss")),
    "labels_int64_min": lambda X, Y: ({"x": X, "y": np.where(np.arange(6) == 0, np.iinfo(np.int64).min, Y)},
                                      _err(r"labels must lie in \[0, 3\); found -9223372036854775808", "loss")),
    "labels_int8_negative": lambda X, Y: ({"x": X, "y": np.array([0, 1, -1, 2, 1, 0], np.int8)},
                                          _err(r"labels must lie in \[0, 3\); found -1", "loss")),
    "labels_float": lambda X, Y: ({"x": X, "y": Y.astype(np.float64)},
                                  _err(r"feed 'y' has dtype float64 but int64.*truncated", "y")),
    "labels_float32": lambda X, Y: ({"x": X, "y": Y.astype(np.float32) + 0.5},
                                    _err(r"feed 'y' has dtype float32 but int64.*truncated", "y")),
    "labels_float_list": lambda X, Y: ({"x": X, "y": [0.0, 1.5, 2.0, 2.0, 1.0, 0.7]},
                                       _err(r"feed 'y' has dtype float64 but int64.*truncated", "y")),
    "labels_2d": lambda X, Y: ({"x": X, "y": Y[:, None]}, _err(r"feed 'y' has shape \(6, 1\).*1 dimension", "y")),
    "labels_int32": lambda X, Y: ({"x": X, "y": Y.astype(np.int32)}, _ok(x=X, y=Y)),
    "labels_uint8": lambda X, Y: ({"x": X, "y": Y.astype(np.uint8)}, _ok(x=X, y=Y)),
    "labels_bool": lambda X, Y: ({"x": X, "y": Y > 0}, _ok(x=X, y=(Y > 0).astype(np.int64))),
    "labels_list": lambda X, Y: ({"x": X, "y": Y.tolist()}, _ok(x=X, y=Y)),
    # non-finite values
    "x_nan": lambda X, Y: (None, _nonfinite(np.nan)),
    "x_inf": lambda X, Y: (None, _nonfinite(np.inf)),
    "x_neg_inf": lambda X, Y: (None, _nonfinite(-np.inf)),
    # memory layouts of x
    "x_fortran": lambda X, Y: ({"x": np.asfortranarray(X), "y": Y}, _ok(x=X, y=Y)),
    "x_strided": lambda X, Y: ({"x": strided(X), "y": Y}, _ok(x=X, y=Y)),
    "x_negative_strides": lambda X, Y: ({"x": X[::-1, ::-1], "y": Y[::-1]},
                                        _ok(x=X[::-1, ::-1].copy(), y=Y[::-1].copy())),
    "x_read_only": lambda X, Y: ({"x": read_only(X), "y": read_only(Y)}, _ok(x=X, y=Y)),
    "x_byteswapped": lambda X, Y: ({"x": swapped(X), "y": Y}, _ok(x=X, y=Y)),
    "x_misaligned": lambda X, Y: ({"x": misaligned(X), "y": Y}, _ok(x=X, y=Y)),
    "x_zero_stride_rows": lambda X, Y: ({"x": np.broadcast_to(X[2], X.shape), "y": Y},
                                        _ok(x=np.repeat(X[2:3], 6, axis=0), y=Y)),
    "x_zero_stride_all": lambda X, Y: ({"x": np.lib.stride_tricks.as_strided(X[1, 1:2], X.shape, (0, 0)), "y": Y},
                                       _ok(x=np.full(X.shape, X[1, 1]), y=Y)),
    "x_swapped_fortran_misaligned": lambda X, Y: ({"x": everything_odd(X), "y": Y}, _ok(x=X, y=Y)),
    # memory layouts of the labels
    "y_strided": lambda X, Y: ({"x": X, "y": np.repeat(Y, 3)[::3]}, _ok(x=X, y=Y)),
    "y_byteswapped": lambda X, Y: ({"x": X, "y": swapped(Y)}, _ok(x=X, y=Y)),
    "y_misaligned": lambda X, Y: ({"x": X, "y": misaligned(Y)}, _ok(x=X, y=Y)),
    "y_swapped_misaligned": lambda X, Y: ({"x": X, "y": misaligned(swapped(Y))}, _ok(x=X, y=Y)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(FEED_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_feeds(backend, case, dtype):
    X, Y = X0.astype(dtype), Y0.copy()
    f, _ = classifier(dtype, backend)
    ref = f(x=X, y=Y)
    feeds, expect = FEED_CASES[case](X, Y)
    kind = expect[0]
    if kind == "ok":
        assert_same(f(**feeds), f(**expect[1]))
    elif kind == "error":
        expect_graph_error(lambda: f(**feeds), expect[1], expect[2])
    elif kind == "empty":
        loss, logits, gx, gW = f(**feeds)
        assert np.isnan(loss) and loss.dtype == dtype  # the mean over no rows (documented: NaN)
        assert logits.shape == (0, 3) and gx.shape == (0, 4) and gx.dtype == dtype
        np.testing.assert_array_equal(gW, np.zeros((4, 3), dtype))  # a sum over no rows
    else:  # non-finite row 0: propagates through its own row and the batch mean only
        bad = X.copy()
        bad[0, 1] = expect[1]
        loss, logits, gx, gW = f(x=bad, y=Y)
        assert not np.isfinite(loss) or expect[1] < 0
        if expect[1] > 0 or np.isnan(expect[1]):
            assert not np.isfinite(logits[0]).all()
        np.testing.assert_allclose(logits[1:], ref[1][1:], rtol=1e-5, atol=1e-6)
        if np.isfinite(loss):
            np.testing.assert_allclose(gx[1:], ref[2][1:], rtol=1e-5, atol=1e-6)
        assert not np.isfinite(gW).all()  # x[0] * (its row's gradient) reaches every weight it meets
        checked, _ = classifier(dtype, backend, check_finite=True)
        checked(x=X, y=Y)  # clean input passes
        expect_graph_error(lambda: checked(x=bad, y=Y), r"placeholder 'x'.*the feed holds non-finite values", "x")
    # the Function is not poisoned by the bad call
    assert_same(f(x=X, y=Y), ref)


# -- a convolutional graph for 4-d layouts ------------------------------------------------------------
XC = RNG.random((3, 2, 5, 5))
WC = RNG.normal(size=(3, 2, 3, 3))

CONV_LAYOUTS = {
    "fortran": lambda X: (np.asfortranarray(X), X),
    "transposed_view": lambda X: (np.ascontiguousarray(X.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), X),
    "channels_last_view": lambda X: (np.ascontiguousarray(X.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), X),
    "strided": lambda X: (strided(X), X),
    "negative_strides": lambda X: (X[:, ::-1, ::-1], X[:, ::-1, ::-1].copy()),
    "read_only": lambda X: (read_only(X), X),
    "byteswapped": lambda X: (swapped(X), X),
    "misaligned": lambda X: (misaligned(X), X),
    "zero_stride_batch": lambda X: (np.broadcast_to(X[1], X.shape), np.repeat(X[1:2], 3, axis=0)),
    "swapped_fortran_misaligned": lambda X: (everything_odd(X), X),
    "int64": lambda X: ((X * 5).astype(np.int64), (X * 5).astype(np.int64).astype(X.dtype)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CONV_LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_feed_layouts(backend, case, dtype):
    x = gc.placeholder("im", (None, 2, 5, 5), dtype)
    w = gc.parameter(WC.astype(dtype), name="w")
    y = gc.max_pool2d(gc.relu(gc.conv2d(x, w, padding=1)), 2) + gc.avg_pool2d(gc.conv2d(x, w, stride=2), 1)
    loss = (y * y).mean()
    f = gc.compile([y, loss] + gc.grad(loss, [x, w]), backend=backend)
    odd, clean = CONV_LAYOUTS[case](XC.astype(dtype))
    assert_same(f(im=odd), f(im=np.ascontiguousarray(clean)), rtol=1e-4)


# -- parameters whose value is replaced between calls ------------------------------------------------
# id -> (new W value (from the float64 W0), new b value or None (unchanged), expectation)
PARAM_CASES = {
    "new_shape_consistent": (lambda: RNG.normal(size=(4, 5)), lambda: np.zeros(5), "ok"),
    "new_shape_inner_mismatch": (lambda: RNG.normal(size=(5, 3)), None,
                                 _err(r"matmul.*inner dimensions differ: 4 vs 5", "dense")),
    "new_shape_bias_mismatch": (lambda: RNG.normal(size=(4, 5)), None, _err(r"do not broadcast", "dense")),
    "scalar": (lambda: np.float64(2.0), None, _err(r"matmul supports 1-d and 2-d operands", "dense")),
    "float64_value": (lambda: W0, None, "ok"),
    "float32_value": (lambda: W0.astype(np.float32), None, "ok"),
    "int_value": (lambda: np.round(W0 * 3).astype(np.int64), None, "ok"),
    "bool_value": (lambda: W0 > 0, None, "ok"),
    "list_value": (lambda: W0.tolist(), None, "ok"),
    "tuple_value": (lambda: tuple(map(tuple, W0)), None, "ok"),
    "fortran": (lambda: np.asfortranarray(W0), None, "ok"),
    "strided": (lambda: strided(W0), None, "ok"),
    "negative_strides": (lambda: W0[::-1, ::-1], None, "ok"),
    "read_only": (lambda: read_only(W0), None, "ok"),
    "byteswapped": (lambda: swapped(W0), None, "ok"),
    "misaligned": (lambda: misaligned(W0), None, "ok"),
    "zero_strides": (lambda: np.broadcast_to(W0[1], W0.shape), None, "ok"),
    "np_matrix": (lambda: np.asmatrix(W0), None, "ok"),
    "none": (lambda: None, None, _err(r"parameter 'W'.*numeric array, got object", "W")),
    "str": (lambda: "abc", None, _err(r"parameter 'W'.*numeric array, got <U3", "W")),
    "dict": (lambda: {"W": W0}, None, _err(r"parameter 'W'.*numeric array", "W")),
    "object": (lambda: object(), None, _err(r"parameter 'W'.*numeric array", "W")),
    "tensor": (lambda: gc.placeholder("t", (4, 3)), None,
               _err(r"parameter 'W'.*(numeric array|must be an array)", "W")),
    "complex": (lambda: W0.astype(complex), None, _err(r"parameter 'W'.*numeric array, got complex128", "W")),
    "ragged_list": (lambda: [[1.0, 2.0], [3.0]], None, _err(r"parameter 'W'.*must be an array", "W")),
    "nan": (lambda: np.where(np.arange(12).reshape(4, 3) == 4, np.nan, W0), None, "nonfinite"),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_parameter_value_replaced_between_calls(backend, case):
    dtype = "float32"
    X, Y = X0.astype(dtype), Y0
    f, (W, b) = classifier(dtype, backend)
    ref = f(x=X, y=Y)
    make_w, make_b, expect = PARAM_CASES[case]
    W.value = make_w()
    if make_b is not None:
        b.value = make_b()
    if expect == "ok":
        clean_w = np.ascontiguousarray(np.asarray(W.value), dtype=dtype)
        clean_b = np.ascontiguousarray(np.asarray(b.value), dtype=dtype)
        fresh, _ = classifier(dtype, backend, W=clean_w, b=clean_b)
        assert_same(f(x=X, y=Y), fresh(x=X, y=Y))
        assert_same(f(x=X, y=Y), fresh(x=X, y=Y))  # the cached plan too
    elif expect == "nonfinite":
        loss, logits, gx, gW = f(x=X, y=Y)
        assert np.isnan(loss) and np.isnan(logits[:, 1]).all()  # W[1, 1] reaches column 1 of every row
        checked, (Wc, _) = classifier(dtype, backend, check_finite=True)
        Wc.value = W.value
        expect_graph_error(lambda: checked(x=X, y=Y), r"parameter 'W'.*holds non-finite values", "W")
    else:
        expect_graph_error(lambda: f(x=X, y=Y), expect[1], expect[2])
    W.value, b.value = W0.astype(dtype), B0.astype(dtype)
    assert_same(f(x=X, y=Y), ref)  # the old value works again: nothing stale in the plan cache


# -- ops and leaves at build time ---------------------------------------------------------------------
def _x():
    return gc.placeholder("x", (None, 3), "float32")


def _im():
    return gc.placeholder("im", (1, 1, 4, 4), "float32")


def _w33():
    return gc.parameter(np.ones((1, 1, 3, 3), np.float32))


# id -> (build: () -> Tensor, expectation): "ok" builds, compiles and runs (checked against NumPy
# with the `check` callable), or a regex of the GraphError (which must name this file's line)
BUILD_CASES = {
    "add_str": (lambda: _x() + "abc", r"cannot turn str into a graph constant"),
    "add_none": (lambda: _x() + None, r"cannot turn NoneType into a graph constant"),
    "add_dict": (lambda: _x() + {"a": 1}, r"cannot turn dict into a graph constant"),
    "add_object": (lambda: _x() + object(), r"cannot turn object into a graph constant"),
    "add_str_array": (lambda: _x() + np.array(["a", "b", "c"]), r"cannot turn ndarray into a graph constant"),
    "add_complex": (lambda: _x() + 1j, r"cannot turn complex into a graph constant"),
    "add_mismatch": (lambda: _x() + np.ones(4), r"add.*do not broadcast"),
    "matmul_str": (lambda: _x() @ "abc", r"cannot turn str|matmul"),
    "matmul_none": (lambda: _x() @ None, r"cannot turn NoneType"),
    "matmul_mismatch": (lambda: _x() @ np.ones((4, 2)), r"matmul.*inner dimensions differ"),
    "matmul_3d": (lambda: _x() @ np.ones((3, 2, 2)), r"matmul supports 1-d and 2-d"),
    "exp_str": (lambda: gc.exp("abc"), r"cannot turn str"),
    "exp_none": (lambda: gc.exp(None), r"cannot turn NoneType"),
    "reshape_str": (lambda: _x().reshape("a"), r"reshape.*bad argument"),
    "reshape_none": (lambda: _x().reshape(None), r"reshape.*bad argument"),
    "reshape_size": (lambda: gc.placeholder("p", (2, 3)).reshape(4, 2), r"reshape"),
    "sum_axis_str": (lambda: _x().sum(axis="a"), r"axis 'a' is out of range"),
    "sum_axis_float": (lambda: _x().sum(axis=1.0), r"sum.*(bad argument|axis)"),
    "sum_axis_out_of_range": (lambda: _x().sum(axis=2), r"axis 2 is out of range"),
    "softmax_axis": (lambda: gc.softmax(_x(), axis=5), r"axis 5 is out of range"),
    "leaky_relu_alpha_str": (lambda: gc.leaky_relu(_x(), "a"), r"leaky_relu.*bad argument"),
    "dropout_p_str": (lambda: gc.dropout(_x(), "a"), r"dropout.*bad argument"),
    "dropout_p_nan": (lambda: gc.dropout(_x(), float("nan")), r"dropout probability must be in \[0, 1\)"),
    "dropout_p_one": (lambda: gc.dropout(_x(), 1.0), r"dropout probability must be in \[0, 1\)"),
    "clip_str": (lambda: gc.clip(_x(), "a", 1.0), r"clip.*bad argument"),
    "power_str": (lambda: gc.power(_x(), "a"), r"power.*bad argument"),
    "cast_unknown": (lambda: _x().astype("foo"), r"cast.*unknown dtype 'foo'"),
    "cast_object": (lambda: _x().astype(object), r"cast.*unsupported dtype object"),
    "cast_complex": (lambda: _x().astype(complex), r"cast.*unsupported dtype complex128"),
    "conv_stride_zero": (lambda: gc.conv2d(_im(), _w33(), stride=0), r"stride must be >= 1"),
    "conv_stride_str": (lambda: gc.conv2d(_im(), _w33(), stride="a"), r"stride must be an int"),
    "conv_padding_negative": (lambda: gc.conv2d(_im(), _w33(), padding=-1), r"padding >= 0"),
    "conv_kernel_too_big": (lambda: gc.conv2d(gc.placeholder("im", (1, 1, 2, 2)), _w33()), r"does not fit"),
    "conv_channels": (lambda: gc.conv2d(gc.placeholder("im", (1, 2, 4, 4)), _w33()), r"conv2d"),
    "pool_kernel_zero": (lambda: gc.max_pool2d(_im(), 0), r"kernel and stride must be >= 1"),
    "pool_kernel_none": (lambda: gc.max_pool2d(_im(), None), r"max_pool2d.*bad argument"),
    "sce_float_labels": (lambda: gc.softmax_cross_entropy(_x(), gc.placeholder("l", (None,), "float32")),
                         r"labels must be integer class indices"),
    "sce_2d_labels": (lambda: gc.softmax_cross_entropy(_x(), gc.placeholder("l", (None, 3), "int64")),
                      r"labels must be 1-d"),
    "sce_float_constant_labels": (lambda: gc.softmax_cross_entropy(_x(), np.array([0.5, 1.0])),
                                  r"labels must be integer class indices"),
    "placeholder_shape_str": (lambda: gc.placeholder("p", "abc"), r"a shape is a tuple"),
    "placeholder_shape_none": (lambda: gc.placeholder("p", None), r"a shape is a tuple"),
    "placeholder_shape_negative": (lambda: gc.placeholder("p", (-1, 2)), r"non-negative ints"),
    "placeholder_shape_float": (lambda: gc.placeholder("p", (2.0,)), r"non-negative ints"),
    "placeholder_dtype_unknown": (lambda: gc.placeholder("p", (2,), "foo"), r"unknown dtype 'foo'"),
    "placeholder_dtype_object": (lambda: gc.placeholder("p", (2,), object), r"unsupported dtype object"),
    "placeholder_dtype_str": (lambda: gc.placeholder("p", (2,), str), r"unsupported dtype <U0"),
    "placeholder_name_none": (lambda: gc.placeholder(None, (2,)), r"Python identifier"),
    "placeholder_name_keyword_like": (lambda: gc.placeholder("a b", (2,)), r"Python identifier"),
    "parameter_str": (lambda: gc.parameter("abc"), r"parameter.*cannot turn str into a numeric array"),
    "parameter_none": (lambda: gc.parameter(None), r"parameter.*cannot turn NoneType"),
    "parameter_dict": (lambda: gc.parameter({}), r"parameter.*cannot turn dict"),
    "parameter_object": (lambda: gc.parameter(object()), r"parameter.*cannot turn object"),
    "parameter_tensor": (lambda: gc.parameter(_x()), r"parameter.*not a symbolic"),
    "parameter_ragged": (lambda: gc.parameter([[1.0], [1.0, 2.0]]), r"parameter.*cannot turn list"),
    "constant_str": (lambda: gc.constant("abc"), r"constant.*cannot turn str"),
    "constant_none": (lambda: gc.constant(None), r"constant.*cannot turn NoneType"),
    "grad_wrt_str": (lambda: gc.grad(_x().sum(), "x"), r"wrt must hold graphc Tensors, got str"),
    "grad_wrt_none": (lambda: gc.grad(_x().sum(), None), r"wrt must be a Tensor or a list"),
    "grad_of_str": (lambda: gc.grad("loss", _x()), r"y must be a graphc Tensor"),
    "grad_of_vector": (lambda: gc.grad(_x().sum(axis=1), _x()), r"scalar"),
    # these build: the result is checked against NumPy
    "exp_list": (lambda: gc.exp([1.0, 2.0]), lambda out: np.testing.assert_allclose(out, np.exp([1.0, 2.0]))),
    "placeholder_dtype_swapped": (lambda: (gc.placeholder("p", (3,), ">f4") * 2).sum(),
                                  lambda out: np.testing.assert_array_equal(out, np.float32(12))),
    "parameter_swapped": (lambda: (gc.parameter(np.array([1, 2, 3], ">f8")) * 2).sum(),
                          lambda out: np.testing.assert_array_equal(out, 12.0)),
    "parameter_int_list": (lambda: gc.parameter([1, 2, 3]) * 0.5,
                           lambda out: np.testing.assert_array_equal(out, [0.5, 1.0, 1.5])),
    "constant_swapped_misaligned": (lambda: gc.constant(misaligned(swapped(np.array([1.0, 2.0, 3.0])))) * 1.0,
                                    lambda out: np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])),
    "leaky_relu_alpha_nan": (lambda: gc.leaky_relu(gc.constant(np.array([-1.0, 2.0])), float("nan")),
                             lambda out: np.testing.assert_array_equal(out, [np.nan, 2.0])),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_build_time(backend, case):
    build, expect = BUILD_CASES[case]
    if callable(expect):
        out = build()
        feeds = {"p": np.array([1, 2, 3], np.float32)} if case == "placeholder_dtype_swapped" else {}
        expect(gc.compile(out, backend=backend)(**feeds))
    else:
        expect_graph_error(build, expect)


# -- compile() and the call itself -----------------------------------------------------------------------
def _loss():
    return (gc.placeholder("x", (None, 3), "float32") ** 2).sum()


_P = gc.parameter(np.zeros(3, np.float32), name="P")

COMPILE_CASES = {
    "outputs_none": (lambda b: gc.compile(None, backend=b), r"takes a Tensor or a list of Tensors, got NoneType"),
    "outputs_str": (lambda b: gc.compile("loss", backend=b), r"got str"),
    "outputs_dict": (lambda b: gc.compile({"a": _loss()}, backend=b), r"got dict"),
    "outputs_object": (lambda b: gc.compile(object(), backend=b), r"got object"),
    "outputs_array": (lambda b: gc.compile([np.ones(3)], backend=b), r"outputs must be graphc Tensors, got ndarray"),
    "outputs_empty": (lambda b: gc.compile([], backend=b), r"at least one output"),
    "outputs_list_with_none": (lambda b: gc.compile([_loss(), None], backend=b), r"got NoneType"),
    "backend_int": (lambda b: gc.compile(_loss(), backend=1), r"backend must be one of"),
    "backend_unknown": (lambda b: gc.compile(_loss(), backend="cuda"), r"unknown backend 'cuda'"),
    "passes_str": (lambda b: gc.compile(_loss(), backend=b, passes="cse"), r"list of pass names"),
    "passes_none_item": (lambda b: gc.compile(_loss(), backend=b, passes=[None]), r"list of pass names"),
    "passes_unknown": (lambda b: gc.compile(_loss(), backend=b, passes=["nope"]), r"unknown pass"),
    "updates_list": (lambda b: gc.compile(_loss(), backend=b, updates=[_P]), r"updates=.*takes a dict"),
    "updates_array_value": (lambda b: gc.compile(_loss(), backend=b, updates={_P: np.ones(3)}), r"must be a Tensor"),
    "updates_key_placeholder": (lambda b: gc.compile(_loss(), backend=b, updates={gc.placeholder("q", (3,)): _P}),
                                r"updates keys must be parameters"),
    "updates_wrong_shape": (lambda b: gc.compile(_loss(), backend=b, updates={_P: _P.reshape(3, 1)}),
                            r"update of parameter 'P' has shape \(3, 1\)"),
    "updates_wrong_dtype": (lambda b: gc.compile(_loss(), backend=b, updates={_P: _P.astype("float64")}),
                            r"update of parameter 'P'.*float64"),
    "check_finite_str": (lambda b: gc.compile(_loss(), backend=b, check_finite="no"), r"check_finite=.*True, False"),
    "duplicate_placeholder_names": (lambda b: gc.compile(_loss() + _loss(), backend=b), r"two different placeholders"),
}


@pytest.mark.parametrize("case", sorted(COMPILE_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile(backend, case):
    make, pattern = COMPILE_CASES[case]
    expect_graph_error(lambda: make(backend), pattern, located=case == "duplicate_placeholder_names")


CALL_CASES = {
    "positional": (lambda f, X: f(X), r"keyword arguments"),
    "two_dicts": (lambda f, X: f({"x": X}, {"x": X}), r"keyword arguments"),
    "missing": (lambda f, X: f(), r"missing feed 'x'"),
    "unexpected": (lambda f, X: f(x=X, z=X), r"unexpected feed\(s\) \['z'\]"),
    "unexpected_non_str_key": (lambda f, X: f({"x": X, 1: X, None: X}), r"unexpected feed\(s\) \[1, None\]"),
    "dict_with_tensor_key": ("ok", lambda f, X, x: f({x: X})),
    "empty_dict_and_keyword": ("ok", lambda f, X, x: f({}, x=X)),
}


@pytest.mark.parametrize("case", sorted(CALL_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_call(backend, case):
    x = gc.placeholder("x", (None, 3), "float32")
    f = gc.compile((x * x).sum(), backend=backend)
    X = X0[:, :3].astype(np.float32)
    first, second = CALL_CASES[case]
    if first == "ok":
        np.testing.assert_allclose(second(f, X, x), np.sum(X * X), rtol=1e-6)
    else:
        expect_graph_error(lambda: first(f, X), second, located=case != "positional" and case != "two_dicts")


# -- shapes whose element count overflows 32-bit ints ----------------------------------------------------
def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_huge_declared_shapes_build_and_compile_without_crashing(backend):
    h = gc.placeholder("h", (70000, 70000), "float32")  # 4.9e9 elements: > 2**32
    w = gc.parameter(np.ones((70000, 2), np.float32), name="w")
    big = gc.placeholder("big", (2 ** 31 + 1, 2 ** 31 + 1), "float64")  # 2**62 elements
    y = (h @ w).sum() + big.sum() + (gc.reshape(big, (-1,)) * 2.0).max()
    f = gc.compile([y] + gc.grad(y, [w]), backend=backend)
    assert "not called yet" in f.explain()
    expect_graph_error(lambda: f(h=np.ones((2, 2), np.float32), big=np.ones((1, 1))),
                       r"feed '(h|big)' has shape \((2, 2|1, 1)\), expected \((70000, 70000|2147483649, 2147483649)\)")
    small = gc.placeholder("small", (None, 70000), "float32")
    g = gc.compile((small @ w).sum(), backend=backend)
    np.testing.assert_allclose(g(small=np.full((1, 70000), 0.5, np.float32)), 70000.0, rtol=1e-6)


def test_zero_stride_feed_too_big_to_copy_is_a_graph_error(backend):
    v = gc.placeholder("v", (None,), "float32")  # marker: v
    f = gc.compile(v.sum(), backend=backend)
    huge = np.lib.stride_tricks.as_strided(np.ones(1, np.float32), (2 ** 50,), (0,))  # 4 PiB as contiguous
    expect_graph_error(lambda: f(v=huge), r"feed 'v' of shape \(1125899906842624,\) needs a contiguous", "v")
    huge64 = np.lib.stride_tricks.as_strided(np.ones(1, np.int64), (2 ** 50,), (0,))  # int -> float copy
    expect_graph_error(lambda: f(v=huge64), r"needs a contiguous float32 copy", "v")


@pytest.mark.skipif(_mem_available() < 8 * 2 ** 30, reason="needs about 5 GiB of free memory")
def test_more_than_2_31_elements_through_a_c_kernel(backend):
    """A (2**30 + 1, 2) bool feed (2**31 + 2 elements, 2 GiB) transposed by the C strided copy:
    indexes past 2**31 on both sides must be computed in 64 bits. Every row of the feed is
    [True, False], so row 0 of the result is all True and row 1 all False. (The feed is built
    contiguous: NumPy's own copy of a zero-stride view this size takes seconds.)"""
    n = 2 ** 30 + 1
    feed = np.empty((n, 2), np.bool_)
    feed.view(np.uint8)[:, 0], feed.view(np.uint8)[:, 1] = 1, 0
    m = gc.placeholder("m", (n, 2), "bool")
    out = gc.compile(gc.transpose(m), backend=backend)(m=feed)
    del feed
    assert out.shape == (2, n) and out.dtype == np.bool_
    assert out[0].all() and not out[1].any()  # out[1, -1] is element 2**31 + 1
    del out


@pytest.mark.skipif(not os.environ.get("GRAPHC_BIG_TESTS") or _mem_available() < 12 * 2 ** 30,
                    reason="set GRAPHC_BIG_TESTS=1 (needs about 9 GiB of free memory)")
def test_2_31_plus_1_float_elements_through_the_reductions(backend):
    n = 2 ** 31 + 1
    v = gc.placeholder("v", (None,), "float32")
    f = gc.compile([v.sum(), v.max()], backend=backend)
    total, top = f(v=np.lib.stride_tricks.as_strided(np.ones(1, np.float32), (n,), (0,)))
    assert top == 1.0
    assert abs(float(total) - n) <= n * 1e-6


# -- attacks ------------------------------------------------------------------------------------------------
XA = RNG.random((6, 4)).astype(np.float32)
YA = np.array([0, 1, 2, 0, 1, 2])


def _model():
    return nn.MLP([4, 8, 3], seed=0)


def _fgsm(m, x, y, backend, eps=0.1):
    return attacks.fgsm(m, x, y, eps, backend=backend)


def _pgd(m, x, y, backend, eps=0.1):
    return attacks.pgd(m, x, y, eps, steps=3, backend=backend)


def _evaluate(m, x, y, backend, eps=0.1):
    return attacks.evaluate(m, x, y, "pgd", eps=[eps], steps=2, backend=backend)


ATTACK_FNS = {"fgsm": _fgsm, "pgd": _pgd, "evaluate": _evaluate}

# id -> (kwargs for the attack (x, y, eps, model), expectation): "ok" with the clean (x, y) to compare
# against, or an error regex
ATTACK_CASES = {
    "x_str": (dict(x="abc"), r"x must hold numbers"),
    "x_none": (dict(x=None), r"x must hold numbers"),
    "x_dict": (dict(x={"a": 1}), r"x must hold numbers"),
    "x_object": (dict(x=object()), r"x must hold numbers"),
    "x_tensor": (dict(x=gc.placeholder("t", (6, 4))), r"x must be a NumPy array"),
    "x_scalar": (dict(x=np.float32(0.5)), r"x must have a batch axis"),
    "x_ragged": (dict(x=[[0.1, 0.2], [0.3]]), r"x cannot be converted"),
    "x_wrong_width": (dict(x=XA[:, :3]), r"matmul.*inner dimensions differ"),
    "y_str": (dict(y="abc"), r"y must hold numbers"),
    "y_none": (dict(y=None), r"y must hold numbers"),
    "y_object": (dict(y=object()), r"y must hold numbers"),
    "y_float": (dict(y=YA.astype(float)), r"y must hold integer class labels, got float64"),
    "y_float_list": (dict(y=[0.5, 1, 2, 0, 1, 2]), r"y must hold integer class labels, got float64"),
    "y_2d": (dict(y=YA[:, None]), r"y must be a 1-d array"),
    "y_negative": (dict(y=np.where(np.arange(6) == 1, -1, YA)), r"labels must lie in \[0, 3\); found -1"),
    "y_too_big": (dict(y=np.where(np.arange(6) == 4, 3, YA)), r"labels must lie in \[0, 3\); found 3"),
    "batch_mismatch": (dict(y=YA[:5]), r"x has 6 rows but y has 5"),
    "eps_str": (dict(eps="abc"), r"eps must be"),
    "eps_none": (dict(eps=None), r"eps must be"),
    "eps_nan": (dict(eps=float("nan")), r"eps must be a finite number"),
    "eps_negative": (dict(eps=-0.1), r"eps must be a finite number >= 0"),
    "model_none": (dict(model=None), r"model must be a graphc.nn model, got NoneType"),
    "model_str": (dict(model="mlp"), r"model must be a graphc.nn model, got str"),
    "x_int": (dict(x=(XA > 0.5).astype(np.int64)), ("ok", dict(x=(XA > 0.5).astype(np.float32)))),
    "x_fortran": (dict(x=np.asfortranarray(XA)), ("ok", {})),
    "x_strided": (dict(x=strided(XA)), ("ok", {})),
    "x_read_only": (dict(x=read_only(XA), y=read_only(YA)), ("ok", {})),
    "x_byteswapped": (dict(x=swapped(XA)), ("ok", {})),
    "x_misaligned": (dict(x=misaligned(XA)), ("ok", {})),
    "x_swapped_fortran_misaligned": (dict(x=everything_odd(XA)), ("ok", {})),
    "y_byteswapped": (dict(y=swapped(YA)), ("ok", {})),
    "y_int16_misaligned": (dict(y=misaligned(YA.astype(np.int16))), ("ok", {})),
    "y_list": (dict(y=YA.tolist()), ("ok", {})),
    "empty_batch": (dict(x=XA[:0], y=YA[:0]), "empty"),
    "x_nan_row": (dict(x=np.where(np.arange(6)[:, None] == 0, np.nan, XA).astype(np.float32)), "nan"),
}


def _same_attack_result(got, want):
    if isinstance(want, np.ndarray):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert got.to_dict() == want.to_dict()


@pytest.mark.parametrize("case", sorted(ATTACK_CASES))
@pytest.mark.parametrize("attack", sorted(ATTACK_FNS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_attacks(backend, attack, case):
    run = ATTACK_FNS[attack]
    args, expect = ATTACK_CASES[case]
    model = args.get("model", _model())
    x, y, eps = args.get("x", XA), args.get("y", YA), args.get("eps", 0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if expect == "empty":
            out = run(model, x, y, backend, eps)
            if attack == "evaluate":
                assert out.n == 0 and np.isnan(out.clean_acc) and len(out.rows) == 1
            else:
                assert out.shape == (0, 4) and out.dtype == np.float32
        elif expect == "nan":
            out = run(model, x, y, backend, eps)
            if attack == "evaluate":
                assert out.n == 6 and len(out.rows) == 1  # NaN rows count as misclassified or not; no crash
            else:
                assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()
                assert np.abs(out[1:] - XA[1:]).max() <= 0.1 + 1e-7
                if attack == "fgsm":  # rows are independent: the clean rows get the clean rows' attack
                    np.testing.assert_array_equal(out[1:], run(model, XA[1:], YA[1:], backend, eps))
                assert any(issubclass(w.category, attacks.GradientMaskingWarning) for w in caught)
        elif isinstance(expect, tuple):
            clean = {"x": XA, "y": YA, **expect[1]}
            _same_attack_result(run(model, x, y, backend, eps), run(_model(), clean["x"], clean["y"], backend, eps))
        else:
            expect_graph_error(lambda: run(model, x, y, backend, eps), expect,
                               located=expect.startswith(("labels", "matmul")))


# -- save / load ------------------------------------------------------------------------------------------
def _saved(tmp_path, backend):
    model = _model()
    path = tmp_path / "model.npz"
    model.save(path)
    return model, path, path.read_bytes(), gc.predict_logits(model, XA, backend=backend)


SAVE_CASES = {
    "path_none": (lambda m, p: m.save(None), r"path must be a str or os.PathLike, got NoneType"),
    "path_int": (lambda m, p: m.save(3), r"got int"),
    "path_dict": (lambda m, p: m.save({}), r"got dict"),
    "path_bytesio": (lambda m, p: m.save(io.BytesIO()), r"got BytesIO"),
    "value_none": (lambda m, p: (setattr(m.parameters()[0], "value", None), m.save(p)),
                   r"cannot save parameter '0.weight': its value is object"),
    "value_str": (lambda m, p: (setattr(m.parameters()[0], "value", "abc"), m.save(p)), r"its value is <U3"),
    "value_int": (lambda m, p: (setattr(m.parameters()[1], "value", np.zeros(8, int)), m.save(p)),
                  r"'0.bias': its value is int64"),
    "value_wrong_shape": (lambda m, p: (setattr(m.parameters()[0], "value", np.zeros((3, 8))), m.save(p)),
                          r"float64 \(3, 8\), the model expects a float array of shape \(8, 4\)"),
    "value_complex": (lambda m, p: (setattr(m.parameters()[0], "value", np.zeros((8, 4), complex)), m.save(p)),
                      r"complex128"),
    "load_none": (lambda m, p: nn.Module.load(None), r"path must be a str"),
    "load_int": (lambda m, p: nn.Module.load(7), r"got int"),
    "load_object": (lambda m, p: nn.Module.load(object()), r"got object"),
    "load_weights_none": (lambda m, p: m.load_weights(None), r"path must be a str"),
    "load_weights_other_architecture": (lambda m, p: nn.MLP([4, 5, 3]).load_weights(p),
                                        r"'0.weight' has shape \(8, 4\), the model expects \(5, 4\)"),
    "load_directory": (lambda m, p: nn.Module.load(p.parent), r"a directory, not a model file"),
    # these work: a model whose values have odd layouts saves and loads the same numbers
    "value_byteswapped": (lambda m, p: _odd_values(m, p, swapped), None),
    "value_fortran_misaligned": (lambda m, p: _odd_values(m, p, lambda a: misaligned(np.asfortranarray(a))), None),
    "value_float64_list": (lambda m, p: _odd_values(m, p, lambda a: a.astype(np.float64).tolist()), None),
}


def _odd_values(model, path, odd):
    values = [p.value.copy() for p in model.parameters()]
    for p, v in zip(model.parameters(), values):
        p.value = odd(v)
    model.save(path)
    loaded = nn.Module.load(path)
    for p, v in zip(loaded.parameters(), values):
        assert p.value.dtype == np.float32 and p.value.flags.c_contiguous
        np.testing.assert_array_equal(p.value, v)
    return loaded


@pytest.mark.parametrize("case", sorted(SAVE_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load(backend, case, tmp_path):
    model, path, blob, logits = _saved(tmp_path, backend)
    action, pattern = SAVE_CASES[case]
    if pattern is None:
        loaded = action(model, path)
        np.testing.assert_array_equal(gc.predict_logits(loaded, XA, backend=backend), logits)
    else:
        with pytest.raises(nn.ModelFileError, match=pattern) as info:
            action(model, path)
        assert isinstance(info.value, gc.GraphError)
    # the file on disk is the good one or the new good one, and nothing else is left in the folder
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    if pattern is not None:
        assert path.read_bytes() == blob
        np.testing.assert_array_equal(gc.predict_logits(nn.Module.load(path), XA, backend=backend), logits)


# -- the matrix's size ---------------------------------------------------------------------------------------
BAD_INPUT_CASES = (
    [f"feeds[{d}]/{c}" for c in FEED_CASES for d in ("float32", "float64")]
    + [f"conv[{d}]/{c}" for c in CONV_LAYOUTS for d in ("float32", "float64")]
    + [f"parameter/{c}" for c in PARAM_CASES]
    + [f"build/{c}" for c in BUILD_CASES]
    + [f"compile/{c}" for c in COMPILE_CASES]
    + [f"call/{c}" for c in CALL_CASES]
    + [f"attack/{a}/{c}" for a in ATTACK_FNS for c in ATTACK_CASES]
    + [f"save_load/{c}" for c in SAVE_CASES]
    + ["huge/declared_shapes", "huge/zero_stride_too_big", "huge/2**31+_elements_c_copy", "huge/2**31+1_floats"]
)


def test_the_matrix_is_the_size_we_report():
    print(f"\nbad-input matrix: {len(BAD_INPUT_CASES)} cases per backend, "
          f"{len(BAD_INPUT_CASES) * 2} with both backends")
    assert len(BAD_INPUT_CASES) == len(set(BAD_INPUT_CASES)) >= 380
