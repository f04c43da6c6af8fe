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

from .autodiff import grad
from .backends import backend_info, set_num_threads
from .check import GradcheckReport, gradcheck
from .errors import GraphError
from .graph import reachable
from .ops import (
    REGISTRY,
    abs,
    activation_grad,
    add,
    argmax,
    avg_pool2d,
    binary_cross_entropy,
    binary_cross_entropy_probs,
    broadcast_like,
    cast,
    clip,
    concatenate,
    conv2d,
    div,
    dropout,
    equal,
    exp,
    expand_dims,
    flatten,
    greater,
    greater_equal,
    leaky_relu,
    less,
    less_equal,
    log,
    log_softmax,
    matmul,
    max,
    max_pool2d,
    maximum,
    mean,
    minimum,
    mse,
    mul,
    neg,
    nll_loss,
    not_equal,
    one_hot,
    ones_like,
    pow,
    power,
    relu,
    reshape,
    sigmoid,
    sign,
    size_of,
    softmax,
    softmax_cross_entropy,
    sqrt,
    squeeze,
    stop_gradient,
    sub,
    sum,
    sum_to,
    tanh,
    transpose,
    where,
    zeros_like,
)
from .runtime import Function, compile
from .tensor import Tensor, as_tensor, constant, parameter, placeholder
from .train import Trainer  # graphc.train is a callable module: gc.train(model, X, y, ...)

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


__all__ = [n for n in dir() if not n.startswith("_")]
