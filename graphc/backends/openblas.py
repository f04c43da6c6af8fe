"""Sharing the cores with NumPy's OpenBLAS: release its idle workers before a large graphc call.

After every threaded call, OpenBLAS's worker threads busy-wait for 2^OPENBLAS_THREAD_TIMEOUT
cycles (default 2^28, about 0.1 s) before they sleep; on x86-64 the wait is a loop of nops, not
a yield. A multi-threaded graphc call made in that window shares its cores with those spinning
threads and ran at 0.41-0.47x of its own speed (`graphc bench --mixed`: a 1024^2 float32 GEMM
interleaved call by call with NumPy's). graphc cannot shorten the wait (OpenBLAS reads the
variable once, when NumPy loads it), but it can end the workers: `blas_thread_shutdown_` is the
function OpenBLAS's own fork handler calls, and OpenBLAS starts its workers again on its next
threaded call (the same lazy start it makes in a forked child). So before a call of at least
RELEASE_MIN_MULTIPLY_ADDS that runs on more than one thread, the C runner calls `release()`,
which shuts down the workers of every OpenBLAS in the process that has any.

The cost falls on NumPy: its next threaded call starts a worker again (about 45 us here), once
per large graphc call, against the ~0.5x slowdown a spinning worker costs graphc. Nothing is
done while other Python threads exist (one of them could be inside OpenBLAS, and the shutdown is
not safe against a running call), nor when OpenBLAS has no workers, nor on a single graphc
thread. GRAPHC_RELEASE_OPENBLAS=0, or `set_enabled(False)`, turns it off; setting
OPENBLAS_THREAD_TIMEOUT=4 before NumPy is imported makes OpenBLAS's workers sleep at once anyway.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

# A plan with at least this many multiply-adds (GEMMs and convolutions) releases OpenBLAS's
# workers before it runs. Releasing costs ~25 us when a worker spins (the join) and ~45 us in
# NumPy's next threaded call; a spinning worker costs graphc about half its speed. 2^26 is about
# 0.4 ms of graphc work on 2 threads (1024^2 GEMMs at 300 GFLOP/s, AMD EPYC 2-core VM,
# 2026-12-02), so the release costs at most ~5 % of such a call and saves about half of it.
RELEASE_MIN_MULTIPLY_ADDS = 1 << 26

_enabled = os.environ.get("GRAPHC_RELEASE_OPENBLAS", "1").strip() not in ("0", "false", "no", "off")
_found: list = []  # (path, shutdown function, c_int of blas_server_avail) per OpenBLAS in the process
_scanned_at = -1  # len(sys.modules) when the process was last scanned for OpenBLAS libraries


def set_enabled(flag: bool) -> None:
    """Turn the release of OpenBLAS's idle workers before large graphc calls on or off."""
    global _enabled
    _enabled = bool(flag)


def enabled() -> bool:
    return _enabled


def _loaded_openblas_paths() -> list:
    """Paths of the shared libraries with "openblas" in their name mapped into this process (Linux)."""
    paths: list = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                name = os.path.basename(path).lower()
                if "openblas" in name and ".so" in name and path.startswith("/") and path not in paths:
                    paths.append(path)
    except OSError:  # not Linux: nothing to release
        pass
    return paths


def _scan() -> list:
    found = []
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1)
    for path in _loaded_openblas_paths():
        try:
            so = ctypes.CDLL(path, mode=mode)  # RTLD_NOLOAD: only a library that is already loaded
            shutdown = so.blas_thread_shutdown_
            avail = ctypes.c_int.in_dll(so, "blas_server_avail")
        except (OSError, AttributeError, ValueError):
            continue  # not OpenBLAS's thread server (an OpenMP build, a renamed symbol)
        shutdown.restype, shutdown.argtypes = ctypes.c_int, []
        found.append((path, shutdown, avail))
    return found


def libraries() -> list:
    """Paths of the OpenBLAS libraries whose workers `release()` would end (rescanned after imports)."""
    global _found, _scanned_at
    if len(sys.modules) != _scanned_at:
        _found, _scanned_at = _scan(), len(sys.modules)
    return [path for path, _, _ in _found]


def release() -> int:
    """End the worker threads of each OpenBLAS in the process that has them, when that is safe.
    Returns how many libraries had workers to end."""
    if not _enabled or threading.active_count() != 1:
        return 0
    if len(sys.modules) != _scanned_at:
        libraries()
    ended = 0
    for _, shutdown, avail in _found:
        if avail.value:
            shutdown()
            ended += 1
    return ended
