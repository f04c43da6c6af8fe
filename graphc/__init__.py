"""graphc: a computational-graph compiler for neural networks.

Build a DAG of ops from Python, differentiate it symbolically (gradients are graphs), compile
it, and run it on C kernels or NumPy:

    import numpy as np, graphc as gc
    x = gc.placeholder("x", shape=(None, 3), dtype="float64")
    y = gc.placeholder("y", shape=(None,), dtype="int64")
    W = gc.parameter(np.zeros((3, 4)), name="W")
    b = gc.parameter(np.zeros(4), name="b")
    loss = gc.softmax_cross_entropy(x @ W + b, y)
    gW, gb, gx = gc.grad(loss, [W, b, x])
    f = gc.compile([loss, gW, gb, gx])
    loss_v, gW_v, gb_v, gx_v = f(x=X, y=Y)
"""
from __future__ import annotations

import networkx as _nx

from .backends import backend_info, set_num_threads
from .compiler.autodiff import grad
from .compiler.runtime import Function, compile
from .ir.errors import GraphError
from .ir.graph import reachable
from .ir.tensor import Tensor, as_tensor, constant, parameter, placeholder
from .learn.nn import manual_seed
from .learn.train import Trainer, accuracy, predict, predict_logits, train
from .ops import *  # every public op function (graphc.ops.__all__)
from .ops import REGISTRY
from .verify.gradcheck import GradcheckReport, gradcheck

__version__ = "0.1.0"


def to_networkx(outputs) -> _nx.DiGraph:
    """The DAG of `outputs` as a networkx DiGraph (node key: Tensor id; attributes: op, shape,
    dtype, name, source, attrs; edges carry the input position as `index`)."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    g = _nx.DiGraph()
    for n in reachable(outs):
        g.add_node(n.id, op=n.op, shape=n.shape, dtype=str(n.dtype), name=n.name, source=n.source,
                   attrs=dict(n.attrs))
        for k, i in enumerate(n.inputs):
            g.add_edge(i.id, n.id, index=k)
    return g


# Subpackages a user reaches as attributes right after `import graphc` (imported on first use,
# so `import graphc` stays light): gc.nn, gc.optim, gc.data, gc.attacks, gc.testing, gc.distributed, ...
_LAZY = {"nn": "graphc.learn.nn", "optim": "graphc.learn.optim", "data": "graphc.learn.data",
         "attacks": "graphc.adversarial.attacks", "testing": "graphc.verify.strategies",
         "viz": "graphc.tools.viz", "fuzz": "graphc.verify.fuzz", "onnx": "graphc.interop.onnx",
         "distributed": "graphc.distributed"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [n for n in dir() if not n.startswith("_")]
