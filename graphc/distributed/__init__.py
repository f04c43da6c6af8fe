"""graphc.distributed: robustness evaluation, gradient fuzzing and data-parallel training on Dask.

graphc does not grow a cluster of its own: it runs on `dask.distributed`, so the same code runs
on a local cluster of worker processes (`connect("local:4")`) or on a real one (`dask scheduler`
and `dask worker`, SSHCluster, dask-jobqueue for SLURM/PBS, dask-kubernetes):

    import graphc as gc
    from graphc import distributed as gd

    if __name__ == "__main__":                    # needed in a script that starts local workers
        with gd.connect("local:2") as client:     # or "tcp://host:8786", or None: $GRAPHC_CLUSTER
            rep = gd.evaluate(model, X, y, attacks=("fgsm", "pgd"), eps=(0.05, 0.1), client=client)
            print(rep.table())                    # == graphc.attacks.evaluate, whatever the chunking
            fz = gd.fuzz(10_000, seed=0, client=client)          # a gradient-fuzzing campaign
            sw = gd.sweep({"std": model, "adv": model2}, X, y, eps=(0.05, 0.1), client=client)
            gd.train(model, X, y, epochs=5, optimizer="adam", batch_size=256, client=client)

Models and compiled Functions pickle (a model without its compiled caches, a Function as its
graph and options), so they travel to the workers and recompile there once per worker.

When is `if __name__ == "__main__":` needed? Local workers are processes started with the
"spawn" method, which imports the program's main module again in each of them: a *script* that
starts a local cluster (connect("local:N"), or any function here with client=None and no Dask
client running) must start it under that guard, or the workers fail to start. The `graphc`
command (`graphc attack --cluster local:2`), Jupyter, pytest, and clients of a running scheduler
(`tcp://...`) need no guard.

Needs Dask: pip install 'graphc[distributed]'.
"""
from __future__ import annotations

from .cluster import SingleThreadedKernels, TaskError, connect, using_client
from .evaluation import EvaluationReport, SweepReport, evaluate, sweep
from .fuzzing import FuzzReport, fuzz, task_seed
from .training import train

__all__ = ["connect", "using_client", "evaluate", "sweep", "fuzz", "train", "EvaluationReport", "SweepReport",
           "FuzzReport", "TaskError", "SingleThreadedKernels", "task_seed"]
