"""Backend selection: "c" (the cffi extension built from csrc/) or "numpy" (always present).

GRAPHC_BACKEND=c|numpy|auto picks the default; "auto" means C when the extension is built.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

from ..ir.errors import GraphError


def _load_extension():
    """(module, None) or (None, the reason it is missing, in words a user can act on)."""
    import importlib
    import importlib.util
    try:
        if importlib.util.find_spec("graphc._cgraphc") is None:
            return None, ("graphc._cgraphc was not built (no C compiler at install time? reinstall with a C "
                          "compiler and the Python headers: pip install --force-reinstall --no-deps graphc)")
        return importlib.import_module("graphc._cgraphc"), None
    except ImportError as exc:  # built, but it does not load (wrong platform, missing libgomp, ...)
        return None, f"graphc._cgraphc is built but does not load: {exc}"


# the extension is optional: installs without a compiler still work on NumPy
_cgraphc, C_IMPORT_ERROR = _load_extension()
C_AVAILABLE = _cgraphc is not None

BACKENDS = ("auto", "c", "numpy")
_warned = False

# GRAPHC_SIMD caps the C kernels' instruction set below the best the CPU has, e.g. to measure on
# an AVX-512 machine what a user with AVX2 only gets, or to rule the vector paths out of a bug.
SIMD_LEVELS = ("scalar", "avx2", "avx512")


def _cap_simd() -> None:
    want = os.environ.get("GRAPHC_SIMD", "").strip().lower()
    if not want or not C_AVAILABLE:
        return
    if want not in SIMD_LEVELS:
        warnings.warn(f"GRAPHC_SIMD={want!r} is not one of {SIMD_LEVELS}; ignored (the best level the CPU "
                      "has is used)", RuntimeWarning, stacklevel=2)
        return
    level = SIMD_LEVELS.index(want)
    _cgraphc.lib.gc_set_simd_max(level)  # the GEMM (and its thin kernels)
    _cgraphc.lib.gc_kernels_set_simd(int(level >= 1))  # the vector-math and loss kernels (AVX2 at most)


_cap_simd()


def _warn_once() -> None:
    global _warned
    if not _warned and os.environ.get("GRAPHC_BACKEND", "auto") != "numpy":
        _warned = True
        warnings.warn(f"graphc's C extension is not available ({C_IMPORT_ERROR}); using the NumPy backend. "
                      "Set GRAPHC_BACKEND=numpy to silence this.", RuntimeWarning, stacklevel=3)


def resolve(name: Optional[str] = None) -> str:
    """The concrete backend ("c" or "numpy") for a requested name (None: GRAPHC_BACKEND or auto)."""
    name = name or os.environ.get("GRAPHC_BACKEND") or "auto"
    if not isinstance(name, str):
        raise GraphError(f"backend must be one of {BACKENDS}, got {type(name).__name__} {name!r}")
    name = name.lower()
    if name not in BACKENDS:
        raise GraphError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        if not C_AVAILABLE:
            _warn_once()
        return "c" if C_AVAILABLE else "numpy"
    if name == "c" and not C_AVAILABLE:
        raise GraphError(f"the C backend was requested but the extension is not built ({C_IMPORT_ERROR})")
    return name


def runner(name: str):
    """Factory turning a Plan into a callable(feeds, params) -> list of output arrays."""
    if name == "c":
        from .c import make_runner
    else:
        from .numpy_backend import make_runner
    return make_runner


def set_num_threads(n: int) -> None:
    """Threads used by the C kernels (<= 0: the default, GRAPHC_NUM_THREADS if set, else the number
    of CPUs this process may run on). Forked children keep the setting; graphc's thread pool
    re-creates its workers in the child on first use."""
    if C_AVAILABLE:
        _cgraphc.lib.gc_set_num_threads(int(n))


def backend_info() -> dict:
    """Which backend runs by default, whether the AVX2+FMA kernels were selected, the GEMM's SIMD
    level ("scalar", "avx2" or "avx512": the best the CPU has, or lower under GRAPHC_SIMD), thread
    count, and whether large calls end NumPy's spinning OpenBLAS workers first (backends/openblas.py)."""
    from . import openblas
    info = {"backend": resolve(), "c_available": C_AVAILABLE, "avx2": False, "gemm_simd": "scalar",
            "threads": 1, "c_import_error": C_IMPORT_ERROR, "release_openblas": openblas.enabled()}
    if C_AVAILABLE:
        lib = _cgraphc.lib
        # True only when both the GEMM and the vector-math kernels run their AVX2+FMA paths
        kernels_simd = lib.gc_kernels_simd_level() if hasattr(lib, "gc_kernels_simd_level") else 1
        info["avx2"] = bool(lib.gc_simd_level()) and bool(kernels_simd)
        info["gemm_simd"] = {0: "scalar", 1: "avx2", 2: "avx512"}.get(int(lib.gc_simd_level()), "scalar")
        info["threads"] = int(_cgraphc.lib.gc_get_num_threads())
    return info


if not C_AVAILABLE:
    _warn_once()
