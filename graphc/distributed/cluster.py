"""Connecting to Dask: a local cluster of single-threaded worker processes, or a running scheduler."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional, Union

try:
    import dask as _dask
    import distributed as _dd
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError("graphc.distributed runs on Dask: pip install 'graphc[distributed]' "
                      f"(or pip install distributed) ({_exc})") from None

from ..ir.errors import GraphError

__all__ = ["connect", "using_client", "SingleThreadedKernels", "ClientLike"]

ClientLike = Union["_dd.Client", str, None]
_LOCAL = re.compile(r"^local(?::(\d+))?$")

# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, to hand freed memory back to the
# OS. Setting it switches off glibc's adaptive mmap threshold, so every array over 128 KiB is
# mmapped and page-faulted in afresh: a PGD evaluation took 28 % more CPU time (3.8 million minor
# page faults instead of 3,000; `python bench/scale_distributed.py --malloc-check`). Local workers
# get fixed thresholds instead: arrays up to 32 MiB come from the heap, and the heap is trimmed
# when 128 MiB lie free at its top.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


class SingleThreadedKernels(WorkerPlugin):
    """Sets graphc's C-kernel thread count on every worker, including workers that join or are
    restarted later: one worker process per core with one thread each, so kernels must not spawn
    their own threads as well (Dask's nanny already sets OMP/OpenBLAS/MKL threads to 1)."""

    name = "graphc-kernel-threads"

    def __init__(self, threads: int = 1):
        self.threads = int(threads)

    def setup(self, worker) -> None:
        from ..backends import set_num_threads
        set_num_threads(self.threads)


def connect(address: Optional[str] = None, timeout: float = 30.0) -> _dd.Client:
    """A Dask client for graphc's distributed evaluation, fuzzing and training.

    address:
      - "local:N" starts a LocalCluster of N worker processes with one thread each (graphc's
        kernels single-threaded in them too); "local" uses one worker per core;
      - "tcp://host:8786" (or any Dask scheduler address) connects to a running scheduler;
      - None reads the GRAPHC_CLUSTER environment variable, else starts "local:<cores>".

    The client closes a cluster it started when it is closed; use it as a context manager:

    >>> from graphc import distributed as gd             # doctest: +SKIP
    >>> with gd.connect("local:2") as client:             # doctest: +SKIP
    ...     report = gd.evaluate(model, X, y, attacks=("pgd",), eps=(0.1,), client=client)

    Local workers are spawned processes that import the main module of the program again: a
    script that calls connect("local:N") must do so under `if __name__ == "__main__":` (the
    `graphc` command, Jupyter and pytest need nothing). Local workers import graphc from the
    same sys.path as this process; on a real cluster graphc must be installed on every worker.
    """
    if address is None:
        address = os.environ.get("GRAPHC_CLUSTER") or f"local:{os.cpu_count() or 1}"
    if not isinstance(address, str) or not address.strip():
        raise GraphError(f"cluster address must be 'local:N' or a scheduler address such as "
                         f"'tcp://host:8786', got {address!r}")
    address = address.strip()
    local = _LOCAL.match(address)
    if local:
        n = int(local.group(1)) if local.group(1) else (os.cpu_count() or 1)
        if n < 1:
            raise GraphError(f"a local cluster needs at least one worker, got {address!r}")
        # The nannies read these from the config, overridden by this process's environment (where an
        # earlier nanny has left Dask's values: each one copies its settings into it before spawning).
        env = {**_dask.config.get("distributed.nanny.pre-spawn-environ", {}), **MALLOC_ENV}
        os.environ.update(MALLOC_ENV)
        with _dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            client = _dd.Client(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        client.register_plugin(SingleThreadedKernels(1))
        return client
    if address.startswith("local"):
        raise GraphError(f"a local cluster is written 'local' or 'local:N' (N workers), got {address!r}")
    try:
        return _dd.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise GraphError(f"cannot reach a Dask scheduler at {address!r} within {timeout:g} s "
                         f"({type(exc).__name__}: {exc}); start one with `dask scheduler` and "
                         f"workers with `dask worker {address}`") from None


@contextlib.contextmanager
def using_client(client: ClientLike = None) -> Iterator[_dd.Client]:
    """The client to run on: the one given; for an address, a new one (closed afterwards); for None,
    the current default Dask client if there is one, else connect() (closed afterwards)."""
    if isinstance(client, _dd.Client):
        yield client
        return
    if client is None:
        try:
            current = _dd.default_client()
        except ValueError:  # no client in this process: start one for this call
            current = None
        if current is not None:
            yield current
            return
    with connect(client) as own:
        yield own


def n_workers(client: _dd.Client) -> int:
    """Workers the scheduler knows right now (at least 1, for sizing task windows)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


class TaskError(RuntimeError):
    """A task failed on a worker with an error that is not a GraphError: the message names the task,
    its rows or seed, the worker, and holds the worker's traceback."""


def worker_address() -> str:
    """This worker's address (inside a task), or "client" when run in the client process."""
    try:
        return _dd.get_worker().address
    except ValueError:
        return "client"


@contextlib.contextmanager
def located(what: str) -> Iterator[None]:
    """Inside a task: re-raise a failure with `what` (e.g. "pgd at eps=0.1 on rows 14:21") and the
    worker's address, a GraphError as a GraphError, anything else as a TaskError."""
    try:
        yield
    except GraphError as exc:
        raise type(exc)(f"{what} (worker {worker_address()}): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem on the worker
        import traceback
        raise TaskError(f"{what} (worker {worker_address()}) raised {type(exc).__name__}: {exc}\n"
                        f"worker traceback:\n{traceback.format_exc()}") from None


def result_or_raise(future):
    """future.result(), with a task's GraphError or TaskError raised without Dask's remote
    traceback frames (the message already says where it happened)."""
    try:
        return future.result()
    except (GraphError, TaskError) as exc:
        raise exc.with_traceback(None) from None


def _value(obj):
    return obj


def ship(client: _dd.Client, obj):
    """A future holding `obj` that survives the loss of workers: a task that returns it (the scheduler
    keeps the task and recomputes it elsewhere), not scattered data (lost with its last worker). Each
    worker that needs it fetches it once from a peer and keeps it."""
    return client.submit(_value, obj, pure=False)
