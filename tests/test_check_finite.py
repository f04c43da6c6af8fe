"""check_finite: the first node that makes NaN/inf from finite inputs is named, with its line."""
import os

import numpy as np
import pytest

import graphc as gc

HERE = os.path.basename(__file__)


def test_forward_node_is_reported_with_source_line_and_input_summary():
    x = gc.placeholder("x", (3,), "float64")
    y = gc.log(x - 1.0)  # makes -inf at x == 1
    loss = (y * y).sum()
    f = gc.compile([loss, gc.grad(loss, x)], check_finite=True)
    np.testing.assert_allclose(f(x=np.array([2.0, 3.0, 4.0]))[0], np.log([1, 2, 3.0]) @ np.log([1, 2, 3.0]))
    with pytest.raises(gc.GraphError) as info:
        f(x=np.array([2.0, 1.0, 4.0]))
    msg = str(info.value)
    assert msg.startswith("log") and HERE in msg and "-inf" in msg and "min 0" in msg and "NaN: False" in msg


def test_backward_node_is_reported():
    x = gc.placeholder("x", (2,), "float64")
    y = gc.sqrt(x).sum()  # finite at 0, but its gradient 0.5/sqrt(0) is inf
    f = gc.compile(gc.grad(y, x), check_finite=True)
    with pytest.raises(gc.GraphError, match=r"non-finite.*inf") as info:
        f(x=np.array([0.0, 1.0]))
    assert "div" in str(info.value) or "fused_elementwise" in str(info.value) or "mul" in str(info.value)
    assert HERE in str(info.value)


def test_non_finite_feed_is_reported_and_off_by_default():
    x = gc.placeholder("x", (2,), "float64")
    y = (x * 2).sum()
    assert np.isnan(gc.compile(y)(x=np.array([np.nan, 1.0])))
    with pytest.raises(gc.GraphError, match="feed holds non-finite"):
        gc.compile(y, check_finite=True)(x=np.array([np.nan, 1.0]))


def test_environment_variable_turns_it_on(monkeypatch):
    monkeypatch.setenv("GRAPHC_CHECK_FINITE", "1")
    x = gc.placeholder("x", (1,), "float64")
    with pytest.raises(gc.GraphError, match="non-finite"):
        gc.compile(gc.exp(x).sum())(x=np.array([1000.0]))
