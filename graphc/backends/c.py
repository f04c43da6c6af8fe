"""The C backend: steps with a C kernel call into graphc._cgraphc, the rest use NumPy."""
from __future__ import annotations

import numpy as np

from .. import _cgraphc
from ..schedule import Plan
from .numpy_backend import compile_steps, execute

ffi, lib = _cgraphc.ffi, _cgraphc.lib
_CTYPE = {np.dtype(np.float32): "float *", np.dtype(np.float64): "double *"}


def _ptr(a: np.ndarray):
    return ffi.cast(_CTYPE[a.dtype], a.ctypes.data)


def _matmul(node):
    a_t, b_t = node.inputs
    if a_t.ndim != 2 or b_t.ndim != 2 or not (a_t.dtype == b_t.dtype == node.dtype) or node.dtype not in _CTYPE:
        return None
    ta, tb = node.attrs["trans_a"], node.attrs["trans_b"]
    m, n = node.shape
    k = a_t.shape[0] if ta else a_t.shape[1]
    gemm = lib.gc_sgemm if node.dtype == np.float32 else lib.gc_dgemm

    def run(a, b):
        a = np.ascontiguousarray(a)
        b = np.ascontiguousarray(b)
        c = np.empty((m, n), dtype=node.dtype)
        gemm(int(ta), int(tb), m, n, k, _ptr(a), a.shape[1], _ptr(b), b.shape[1], 0.0, _ptr(c), n,
             ffi.NULL, lib.GC_ACT_IDENTITY, 0.0)
        return c
    return run


OVERRIDES = {"matmul": _matmul}


def make_runner(plan: Plan):
    steps = compile_steps(plan, OVERRIDES)
    return lambda feeds, params: execute(plan, steps, feeds, params)
