"""graphc ends NumPy's spinning OpenBLAS workers before a large multi-threaded call (backends/openblas.py).

Each scenario runs in a fresh interpreter: whether OpenBLAS has workers, and whether other Python
threads exist, is process state that earlier tests (Dask clusters, thread tests) would change.
The observable is OpenBLAS's own `blas_server_avail` flag: 1 while its worker threads exist.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.backends import C_AVAILABLE, openblas

pytestmark = pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")

SCRIPT = textwrap.dedent("""
    import json, sys, threading
    import numpy as np
    import graphc as gc
    from graphc.backends import openblas
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(2, user_api="blas")  # workers exist whatever the machine's CPU count
    except ImportError:
        pass
    gc.set_num_threads(2)
    rng = np.random.default_rng(0)
    big_a, big_b = rng.standard_normal((512, 256), np.float32), rng.standard_normal((256, 512), np.float32)
    small_a, small_b = big_a[:64, :64].copy(), big_b[:64, :64].copy()

    def compiled(a, b):
        pa, pb = gc.placeholder("a", a.shape, "float32"), gc.placeholder("b", b.shape, "float32")
        return gc.compile(pa @ pb, backend="c")

    big, small = compiled(big_a, big_b), compiled(small_a, small_b)
    numpy_big = lambda: np.matmul(big_a, big_b)
    libs = openblas.libraries()

    def avail():  # OpenBLAS's own flag: its worker threads exist
        return [int(a.value) for _, _, a in openblas._found]

    out = {"libraries": libs}
    numpy_big()
    out["after_numpy"] = avail()
    case = sys.argv[1]
    if case == "thread":
        ev = threading.Event()
        t = threading.Thread(target=ev.wait)
        t.start()
    if case == "one_thread":
        gc.set_num_threads(1)
    if case == "disabled":
        openblas.set_enabled(False)
    f, (a, b) = (small, (small_a, small_b)) if case == "small" else (big, (big_a, big_b))
    r = f(a=a, b=b)
    out["after_graphc"] = avail()
    out["graphc_err"] = float(np.max(np.abs(r - a.astype(np.float64) @ b)))
    # NumPy starts its workers again and still computes the right product
    r = numpy_big()
    out["numpy_err"] = float(np.max(np.abs(r - big_a.astype(np.float64) @ big_b)))
    out["after_numpy_again"] = avail()
    if case == "thread":
        ev.set()
        t.join()
    print(json.dumps(out))
""")


def run_case(case: str, env=None) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def openblas_with_workers():
    """Skip unless NumPy runs on an OpenBLAS whose thread server graphc can see (Linux, pthreads)."""
    out = run_case("small")
    if not out["libraries"] or 1 not in out["after_numpy"]:
        pytest.skip("no OpenBLAS with worker threads in this process (not Linux, or NumPy on another BLAS)")
    return out


def test_a_large_call_ends_the_workers_and_numpy_starts_them_again(openblas_with_workers):
    out = run_case("large")
    assert out["after_numpy"].count(1) >= 1
    assert out["after_graphc"] == [0] * len(out["after_graphc"])  # every OpenBLAS's workers ended
    assert 1 in out["after_numpy_again"]  # NumPy's OpenBLAS started its workers again
    assert out["graphc_err"] < 1e-3 and out["numpy_err"] < 1e-3


@pytest.mark.parametrize("case", ["small", "thread", "one_thread", "disabled"])
def test_workers_are_left_alone(openblas_with_workers, case):
    """Not for a small plan (the restart would cost more than the spin), nor while another Python
    thread exists (it could be inside OpenBLAS), nor on one graphc thread, nor when turned off."""
    out = run_case(case)
    assert out["after_graphc"] == out["after_numpy"]
    assert out["graphc_err"] < 1e-3 and out["numpy_err"] < 1e-3


def test_env_var_turns_it_off(openblas_with_workers):
    out = run_case("large", env={"GRAPHC_RELEASE_OPENBLAS": "0"})
    assert out["after_graphc"] == out["after_numpy"]


def test_release_without_openblas_workers_is_a_no_op():
    openblas.libraries()
    assert openblas.release() >= 0  # whatever the state: never raises


def runner_of(f):
    """The runner of the plan a Function used last."""
    return next(run for plan, run in f._plans.values() if plan is f._last_plan)


def test_multiply_adds_of_gemms():
    """The work estimate that decides the release: the GEMM and conv2d instructions' multiply-adds."""
    x = gc.placeholder("x", (64, 100), "float32")
    w1, w2 = gc.parameter(np.zeros((100, 50), np.float32), "w1"), gc.parameter(np.zeros((50, 10), np.float32), "w2")
    loss = gc.sum(gc.relu(x @ w1) @ w2)
    g1, g2 = gc.grad(loss, [w1, w2])
    f = gc.compile([loss, g1, g2], backend="c")
    f(x=np.ones((64, 100), np.float32))
    lo = runner_of(f).lowered
    forward = 64 * 100 * 50 + 64 * 50 * 10
    backward = 64 * 10 * 50 + 100 * 64 * 50 + 50 * 64 * 10  # dh, dW1, dW2 (dx is not asked for)
    assert lo.multiply_adds == forward + backward
    assert not lo.releases_openblas
    big = gc.placeholder("a", (512, 512), "float32")
    g = gc.compile(big @ gc.placeholder("b", (512, 256), "float32"), backend="c")
    g(a=np.ones((512, 512), np.float32), b=np.ones((512, 256), np.float32))
    assert runner_of(g).lowered.multiply_adds == openblas.RELEASE_MIN_MULTIPLY_ADDS == 512 * 512 * 256
    assert runner_of(g).lowered.releases_openblas


def test_multiply_adds_of_a_convolution():
    xs = gc.placeholder("x", (2, 3, 9, 9), "float32")
    k = gc.parameter(np.zeros((4, 3, 3, 3), np.float32), "k")
    f = gc.compile(gc.conv2d(xs, k, stride=2, padding=1), backend="c")
    f(x=np.ones((2, 3, 9, 9), np.float32))
    lo = runner_of(f).lowered
    assert lo.multiply_adds == 2 * 4 * 5 * 5 * 3 * 3 * 3
