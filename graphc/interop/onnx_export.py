"""Export graphc graphs to ONNX, for ONNX Runtime (servers, GPUs, other languages).

    >>> import graphc as gc, graphc.onnx
    >>> gc.onnx.save(model, "model.onnx", input_shape=(None, 64))   # doctest: +SKIP
    >>> import onnxruntime as ort                                     # doctest: +SKIP
    >>> ort.InferenceSession("model.onnx").run(None, {"x": X})        # doctest: +SKIP

Each graphc op maps to one or a few ONNX ops (a table below); placeholders become graph inputs
(unknown sizes become symbolic dimensions, so the batch size stays free), parameters and
constants become initializers. An op without an ONNX form (a training-only op such as dropout
with its seed, a gradient op) is refused with a GraphError naming it and the line that made it.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir.errors import GraphError, node_error
from ..ir.graph import reachable
from ..ir.tensor import Tensor, placeholder

__all__ = ["save", "save_graph", "to_model", "EXPORTERS"]

MIN_OPSET, MAX_OPSET = 13, 21


class _Writer:
    """Accumulates the ONNX nodes and initializers of one graph."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict = {}  # Tensor id -> ONNX value name
        self.used: set = set()
        self.counter = 0

    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "._/:" else "_" for c in hint) or "v"
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def const(self, value, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(list(values), np.int64), hint)

    def node(self, op: str, inputs: list, hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out


def _tensor_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# -- the op table: graphc op -> writer(w, node, input names) -> output name ---------------------------
def _unary(onnx_op: str) -> Callable:
    return lambda w, n, x: w.node(onnx_op, [x[0]], n.op)


def _binary(onnx_op: str) -> Callable:
    return lambda w, n, x: w.node(onnx_op, [x[0], x[1]], n.op)


def _matmul(w, n, x):
    a, b = n.inputs
    ta, tb = n.attrs.get("trans_a", False), n.attrs.get("trans_b", False)
    if a.ndim == 2 and b.ndim == 2:
        return w.node("Gemm", [x[0], x[1]], "matmul", transA=int(ta), transB=int(tb))
    return w.node("MatMul", [x[0], x[1]], "matmul")


def _leaky_relu(w, n, x):
    return w.node("LeakyRelu", [x[0]], "leaky_relu", alpha=float(n.attrs["alpha"]))


def _power(w, n, x):
    return w.node("Pow", [x[0], w.const(np.asarray(n.attrs["p"], n.dtype), "exponent")], "power")


def _clip(w, n, x):
    lo, hi = n.attrs["lo"], n.attrs["hi"]
    args = [x[0], "" if lo is None else w.const(np.asarray(lo, n.dtype), "lo"),
            "" if hi is None else w.const(np.asarray(hi, n.dtype), "hi")]
    while args[-1] == "":
        args.pop()
    return w.node("Clip", args, "clip")


def _cast(w, n, x):
    return w.node("Cast", [x[0]], "cast", to=_tensor_type(n.dtype))


def _softmax(w, n, x):
    return w.node("LogSoftmax" if n.attrs["log"] else "Softmax", [x[0]], "softmax", axis=int(n.attrs["axis"]))


def _reshape(w, n, x):
    return w.node("Reshape", [x[0], w.ints(n.attrs["shape"], "shape")], "reshape")


def _transpose(w, n, x):
    return w.node("Transpose", [x[0]], "transpose", perm=list(n.attrs["axes"]))


def _expand_dims(w, n, x):
    return w.node("Unsqueeze", [x[0], w.ints(n.attrs["axes"], "axes")], "expand_dims")


def _squeeze(w, n, x):
    return w.node("Squeeze", [x[0], w.ints(n.attrs["axes"], "axes")], "squeeze")


def _concatenate(w, n, x):
    return w.node("Concat", list(x), "concatenate", axis=int(n.attrs["axis"]))


def _reduce(onnx_op: str, axes_input_from: int) -> Callable:
    def write(w, n, x):
        axes, keep = list(n.attrs["axes"]), int(n.attrs["keepdims"])
        if w.opset >= axes_input_from:
            return w.node(onnx_op, [x[0], w.ints(axes, "axes")], n.op, keepdims=keep)
        return w.node(onnx_op, [x[0]], n.op, axes=axes, keepdims=keep)
    return write


def _argmax(w, n, x):
    return w.node("ArgMax", [x[0]], "argmax", axis=int(n.attrs["axis"]), keepdims=0)


def _size_of(w, n, x):
    shape = w.node("Shape", [x[0]], "shape")
    axes = n.attrs["axes"] if n.attrs["axes"] is not None else range(n.inputs[0].ndim)
    dims = w.node("Gather", [shape, w.ints(axes, "axes")], "dims")
    count = w.node("ReduceProd", [dims], "count", keepdims=0)
    return w.node("Cast", [count], "size_of", to=_tensor_type(n.dtype))


def _fill_like(value) -> Callable:
    def write(w, n, x):
        shape = w.node("Shape", [x[0]], "shape")
        return w.node("ConstantOfShape", [shape], n.op, value=numpy_helper.from_array(np.ones(1, n.dtype) * value))
    return write


def _where(w, n, x):
    return w.node("Where", [x[0], x[1], x[2]], "where")


def _conv(w, n, x):
    (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
    kernel = list(n.inputs[1].shape[2:])
    return w.node("Conv", list(x), n.op, kernel_shape=kernel, strides=[sh, sw], pads=[ph, pw, ph, pw],
                  group=int(n.attrs.get("groups", 1)))


def _pool(onnx_op: str) -> Callable:
    def write(w, n, x):
        (kh, kw), (sh, sw), (ph, pw) = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
        extra = {"count_include_pad": 1} if onnx_op == "AveragePool" else {}  # graphc counts the padding
        return w.node(onnx_op, [x[0]], n.op, kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], **extra)
    return write


def _pad(w, n, x):
    pads = [b for b, _ in n.attrs["pads"]] + [e for _, e in n.attrs["pads"]]
    fill = w.const(np.asarray(n.attrs["value"], n.dtype), "fill")
    return w.node("Pad", [x[0], w.ints(pads, "pads"), fill], "pad", mode="constant")


def _slice(w, n, x):
    starts, ends, steps = [], [], []
    for start, stop, step in n.attrs["index"]:
        starts.append(start if start is not None else (0 if step > 0 else -1))
        ends.append(stop if stop is not None else (2 ** 62 if step > 0 else -(2 ** 62)))
        steps.append(step)
    axes = list(range(len(starts)))
    return w.node("Slice", [x[0], w.ints(starts, "starts"), w.ints(ends, "ends"), w.ints(axes, "axes"),
                            w.ints(steps, "steps")], "slice")


def _identity(w, n, x):
    return w.node("Identity", [x[0]], n.op)


def _sign(w, n, x):
    return w.node("Sign", [x[0]], "sign")


def _softplus(w, n, x):
    beta = float(n.attrs.get("beta", 1.0))
    if beta == 1.0:
        return w.node("Softplus", [x[0]], "softplus")
    b = w.const(np.asarray(beta, n.dtype), "beta")
    return w.node("Div", [w.node("Softplus", [w.node("Mul", [x[0], b], "scaled")], "softplus"), b], "softplus")


def _elu(w, n, x):
    return w.node("Elu", [x[0]], "elu", alpha=float(n.attrs.get("alpha", 1.0)))


def _gelu(w, n, x):
    approximate = n.attrs.get("approximate", "none")
    if w.opset >= 20:
        return w.node("Gelu", [x[0]], "gelu", approximate=approximate)
    if approximate != "none":
        raise node_error(n, f"gelu(approximate={approximate!r}) needs opset 20 (Gelu); export with opset=20")
    half = w.const(np.asarray(0.5, n.dtype), "half")
    root = w.const(np.asarray(np.sqrt(0.5), n.dtype), "sqrt_half")
    erf = w.node("Erf", [w.node("Mul", [x[0], root], "scaled")], "erf")
    one = w.const(np.asarray(1.0, n.dtype), "one")
    return w.node("Mul", [w.node("Mul", [x[0], half], "half_x"), w.node("Add", [erf, one], "one_plus")], "gelu")


def _silu(w, n, x):
    return w.node("Mul", [x[0], w.node("Sigmoid", [x[0]], "sigmoid")], "silu")


def _broadcast_like(w, n, x):
    shape = w.node("Shape", [x[1]], "shape")
    return w.node("Expand", [x[0], shape], "broadcast_like")


EXPORTERS: dict = {
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _binary("Div"),
    "pow": _binary("Pow"), "maximum": _binary("Max"), "minimum": _binary("Min"),
    "less": _binary("Less"), "less_equal": _binary("LessOrEqual"), "greater": _binary("Greater"),
    "greater_equal": _binary("GreaterOrEqual"), "equal": _binary("Equal"),
    "neg": _unary("Neg"), "exp": _unary("Exp"), "log": _unary("Log"), "sqrt": _unary("Sqrt"), "abs": _unary("Abs"),
    "sigmoid": _unary("Sigmoid"), "tanh": _unary("Tanh"), "relu": _unary("Relu"), "sign": _sign,
    "leaky_relu": _leaky_relu, "power": _power, "clip": _clip, "cast": _cast, "where": _where,
    "stop_gradient": _identity, "matmul": _matmul, "softmax": _softmax,
    "reshape": _reshape, "transpose": _transpose, "expand_dims": _expand_dims, "squeeze": _squeeze,
    "concatenate": _concatenate, "sum": _reduce("ReduceSum", 13), "max": _reduce("ReduceMax", 18),
    "argmax": _argmax, "size_of": _size_of, "zeros_like": _fill_like(0), "ones_like": _fill_like(1),
    "conv2d": _conv, "grouped_conv2d": _conv, "max_pool2d": _pool("MaxPool"), "avg_pool2d": _pool("AveragePool"),
    "pad": _pad, "slice": _slice, "broadcast_like": _broadcast_like,
    "softplus": _softplus, "elu": _elu, "gelu": _gelu, "silu": _silu,
}
"""graphc op name -> writer(writer, node, input value names) -> output value name."""

_WHY_NOT = {
    "dropout": "dropout is a training op (its mask comes from a seed); export the inference graph, "
               "model(x, training=False), where it is the identity",
}


def to_model(outputs: Union[Tensor, Sequence[Tensor]], opset: int = 18, output_names: Optional[Sequence[str]] = None,
             doc: str = "") -> onnx.ModelProto:
    """The ONNX ModelProto of a graph of Tensors (see save_graph)."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise GraphError("save_graph takes a Tensor or a list of Tensors")
    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise GraphError(f"graphc exports opsets {MIN_OPSET} to {MAX_OPSET}, got opset={opset}")
    names = list(output_names) if output_names is not None else [
        o.name if o.name and o.op != "parameter" else f"output_{k}" for k, o in enumerate(outs)]
    if len(names) != len(outs) or len(set(names)) != len(names):
        raise GraphError(f"output_names {names} must be {len(outs)} distinct names")
    w = _Writer(opset)
    w.used.update(names)
    inputs = []
    for n in reachable(outs):
        if n.op == "placeholder":
            name = w.fresh(n.name)
            dims = [("batch" if k == 0 else f"{n.name}_dim{k}") if d is None else d for k, d in enumerate(n.shape)]
            inputs.append(helper.make_tensor_value_info(name, _tensor_type(n.dtype), dims))
        elif n.op in ("parameter", "constant"):
            name = w.const(np.asarray(n.value, n.dtype), n.name or n.op)
        else:
            writer = EXPORTERS.get(n.op)
            if writer is None:
                why = _WHY_NOT.get(n.op, "it has no ONNX form in graphc's exporter (supported: "
                                          + ", ".join(sorted(EXPORTERS)) + ")")
                raise node_error(n, f"cannot export op '{n.op}' to ONNX: {why}")
            name = writer(w, n, [w.names[i.id] for i in n.inputs])
        w.names[n.id] = name
    graph_outputs = []
    for o, name in zip(outs, names):
        w.nodes.append(helper.make_node("Identity", [w.names[o.id]], [name], name=f"output_{name}"))
        dims = [("batch" if k == 0 else f"{name}_dim{k}") if d is None else d for k, d in enumerate(o.shape)]
        graph_outputs.append(helper.make_tensor_value_info(name, _tensor_type(o.dtype), dims))
    graph = helper.make_graph(w.nodes, "graphc", inputs, graph_outputs, initializer=w.initializers, doc_string=doc)
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries this opset: what current ONNX Runtime releases read
    model = helper.make_model(graph, opset_imports=opsets, producer_name="graphc",
                              ir_version=helper.find_min_ir_version_for(opsets))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - an exporter bug must not write a file ONNX Runtime rejects
        raise GraphError(f"the exported ONNX model does not validate: {exc}") from None
    return model


def save_graph(outputs: Union[Tensor, Sequence[Tensor]], f, opset: int = 18,
               output_names: Optional[Sequence[str]] = None) -> onnx.ModelProto:
    """Write the graph of `outputs` to ONNX (a path or a binary file object): placeholders become
    inputs (None sizes become symbolic), parameters and constants initializers (current values).

    >>> import graphc as gc, numpy as np, io
    >>> x = gc.placeholder("x", (None, 3)); w = gc.parameter(np.ones((3, 2), np.float32), name="w")
    >>> m = gc.onnx.save_graph(gc.relu(x @ w), io.BytesIO())
    >>> [n.op_type for n in m.graph.node]
    ['Gemm', 'Relu', 'Identity']
    """
    model = to_model(outputs, opset, output_names)
    _write(model, f)
    return model


def save(model, f, input_shape: Sequence[Optional[int]], opset: int = 18, input_name: str = "x",
         output_name: str = "logits") -> onnx.ModelProto:
    """Export a Module's inference graph x -> logits (dropout off) to ONNX.

    input_shape: the input's shape with None for the batch axis, e.g. (None, 64) or (None, 1, 28, 28);
    the exported model accepts any batch size."""
    if not hasattr(model, "forward") or not callable(model):
        raise GraphError(f"graphc.onnx.save exports a graphc.nn.Module, got {type(model).__name__}")
    dtype = getattr(model, "dtype", np.dtype("float32"))
    x = placeholder(input_name, tuple(input_shape), dtype)
    logits = model(x, training=False)
    return save_graph([logits], f, opset, output_names=[output_name])


def _write(model: onnx.ModelProto, f) -> None:
    data = model.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
        return
    if not isinstance(f, (str, os.PathLike)):
        raise GraphError(f"save takes a path or a binary file object, got {type(f).__name__}")
    path = os.fspath(f)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:  # written beside it, then renamed: never half a file
        fh.write(data)
    os.replace(tmp, path)

