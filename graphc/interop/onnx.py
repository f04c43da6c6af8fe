"""`graphc.onnx`: bring models in from ONNX (PyTorch, scikit-learn, any exporter) and send graphc
models out to ONNX Runtime.

    >>> import graphc as gc, graphc.onnx
    >>> model = gc.onnx.load("model.onnx")            # doctest: +SKIP
    >>> logits = gc.predict_logits(model, X)           # doctest: +SKIP
    >>> gc.onnx.save(model, "again.onnx", input_shape=(None, 64))  # doctest: +SKIP

`load` returns a graphc.nn.Module: model(x) builds its graph, so gc.grad, gc.gradcheck, the
attacks, gc.train (fine-tuning: initializers are gc.parameters), state_dict and save all work.
`save` / `save_graph` export a Module or a graph of Tensors; `backend` is the ONNX backend API
(prepare / run_model / run_node), which ONNX's conformance suite runs against.

Inside graphc, `import onnx` is always the real onnx package (absolute imports only).
"""
from __future__ import annotations

import base64
import os
import warnings
from collections import Counter
from typing import Optional, Union

import numpy as np

from ..ir.errors import GraphError, MissingExtra

try:
    import onnx
except ImportError as exc:  # the `onnx` extra
    raise MissingExtra("graphc.onnx needs the onnx package: pip install 'graphc[onnx]'") from exc

from ..ir.tensor import Tensor, constant, parameter, placeholder
from ..learn import nn
from . import onnx_rules  # noqa: F401 - registers the importer's rules
from .onnx_graph import (
    DTYPES,
    MIN_OPSET,
    RULES,
    GraphImporter,
    default_opset,
    dtype_name,
    initializer_array,
    needed_nodes,
)

__all__ = ["load", "save", "save_graph", "backend", "OnnxModel", "ImportNote", "read_model", "SUPPORTED_OPS"]

SUPPORTED_OPS = sorted(RULES)
_ACTIVATIONS_TO_CUT = ("Softmax", "LogSoftmax")


class ImportNote(UserWarning):
    """Something the importer changed or skipped on purpose (a cut Softmax, a label branch, ...)."""


def read_model(f) -> onnx.ModelProto:
    """An ONNX ModelProto from a path, bytes or a ModelProto; a GraphError for anything else."""
    if isinstance(f, onnx.ModelProto):
        model = f
    elif isinstance(f, (bytes, bytearray, memoryview)):
        model = _parse(bytes(f), "the given bytes")
    elif isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        with open(path, "rb") as fh:  # FileNotFoundError stays a FileNotFoundError
            data = fh.read()
        model = _parse(data, path)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            onnx.external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    else:
        raise GraphError(f"graphc.onnx.load takes a path, bytes or an onnx.ModelProto, got {type(f).__name__}")
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise GraphError("not an ONNX model: no IR version or no graph outputs (is this an .onnx file?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx's ValidationError and friends
        raise GraphError(f"invalid ONNX model: {str(exc).strip().splitlines()[0]}") from None
    return model


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise GraphError(f"{what} is not an ONNX model (truncated or not protobuf: {type(exc).__name__}: "
                         f"{exc})") from None


def _input_names(model: onnx.ModelProto) -> list:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _tensor_type(vi: onnx.ValueInfoProto, what: str):
    if not vi.type.HasField("tensor_type"):
        raise GraphError(f"{what} '{vi.name}' is a {vi.type.WhichOneof('value')}, not a tensor")
    tt = vi.type.tensor_type
    if tt.elem_type not in DTYPES:
        raise GraphError(f"{what} '{vi.name}' has element type {dtype_name(tt.elem_type)}, which graphc does not "
                         f"compute (float32, float64, integers, bool)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return DTYPES[tt.elem_type], dims


# -- output selection ---------------------------------------------------------------------------------
def _select_output(model: onnx.ModelProto, output: Optional[str], logits: bool, notes: list) -> str:
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    if output is not None:
        if output not in producer and output not in {o.name for o in graph.output}:
            raise GraphError(f"output {output!r} is not computed by this model; its outputs are "
                             f"{[o.name for o in graph.output]}")
        name = output
    else:
        name = _only_float_output(graph, producer, notes)
    if logits:
        cut = name
        while cut in producer and producer[cut].op_type == "Identity":
            cut = producer[cut].input[0]
        node = producer.get(cut)
        if node is not None and node.op_type in _ACTIVATIONS_TO_CUT and (node.domain or "") == "":
            axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
            notes.append(f"cut the trailing {node.op_type} '{node.name or cut}'"
                         f"{'' if axis is None else f' (axis {axis})'}: the model returns its input "
                         f"'{node.input[0]}', the logits (load(..., logits=False) keeps it)")
            name = node.input[0]
    return name


def _only_float_output(graph, producer, notes) -> str:
    candidates = []
    for out in graph.output:
        name, t = out.name, out.type
        node = producer.get(name)
        if not t.HasField("tensor_type"):
            if node is not None and node.op_type == "ZipMap":
                notes.append(f"output '{name}' is a {t.WhichOneof('value')} made by ZipMap; read as its "
                             f"probability tensor '{node.input[0]}'")
                candidates.append(node.input[0])
            else:
                notes.append(f"skipped output '{name}': a {t.WhichOneof('value')}, not a tensor")
            continue
        if t.tensor_type.elem_type not in (1, 11):
            notes.append(f"skipped output '{name}' ({dtype_name(t.tensor_type.elem_type)}: labels, not scores)")
            continue
        ml = [n.op_type for n in needed_nodes(graph, [name]) if (n.domain or "") not in ("", "ai.onnx")]
        if ml:
            notes.append(f"skipped output '{name}': it is computed by non-default-domain ops {sorted(set(ml))}")
            continue
        candidates.append(name)
    roots = []
    for c in candidates:
        r = c
        while r in producer and producer[r].op_type == "Identity":
            r = producer[r].input[0]
        if r not in [x[1] for x in roots]:
            roots.append((c, r))
    if len(roots) != 1:
        raise GraphError(f"cannot tell which output holds the scores: {[c for c, _ in roots] or 'none'} of "
                         f"{[o.name for o in graph.output]}; pass output='<name>'")
    return roots[0][0]


# -- the Module ----------------------------------------------------------------------------------------
def _data_initializers(model: onnx.ModelProto, outputs: list) -> set:
    """Initializers some node reads as data (they become gc.parameters when floating)."""
    inits = {t.name for t in model.graph.initializer}
    data = set()
    for node in needed_nodes(model.graph, outputs):
        rule = RULES.get(node.op_type)
        static = rule.static_inputs if rule is not None else frozenset()
        data.update(name for k, name in enumerate(node.input) if name in inits and k not in static)
    return data


class OnnxModel(nn.Module):
    """An imported ONNX model as a graphc Module: model(x) builds its graph on the Tensor x.

    Floating initializers read as data are the model's parameters (named as in the file, so a
    PyTorch state_dict's keys line up); constants stay constants. `notes` says what was cut or
    skipped; `input_shape` is the input's shape with the batch axis None; `summary()` describes it."""

    def __init__(self, model: Union[str, bytes, onnx.ModelProto], output: Optional[str] = None, logits: bool = True,
                 stripped: bool = False):
        super().__init__()
        if stripped:  # rebuilt from a saved graphc model file: the parameters' values come from the file
            proto = _parse(base64.b64decode(str(model).encode("ascii")), "the saved ONNX graph")
            for t in proto.graph.initializer:
                if not _has_data(t) and t.data_type in DTYPES:
                    t.raw_data = np.zeros(tuple(t.dims), DTYPES[t.data_type]).tobytes()
            model = proto
        self.proto = read_model(model)
        self.opset = default_opset(self.proto)
        newest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= self.opset <= newest:
            raise GraphError(f"the model uses opset {self.opset}; graphc imports opsets {MIN_OPSET} to {newest}")
        names = _input_names(self.proto)
        if len(names) != 1:
            raise GraphError(f"the model has {len(names)} inputs {names}; graphc.onnx.load builds a Module on one "
                             f"input (graphc.onnx.backend.prepare runs graphs with several)")
        self.input_name = names[0]
        vi = next(i for i in self.proto.graph.input if i.name == self.input_name)
        self.input_dtype, dims = _tensor_type(vi, "input")
        if self.input_dtype.kind != "f":
            raise GraphError(f"input '{self.input_name}' is {self.input_dtype}; a graphc Module takes a floating input")
        if not dims:
            raise GraphError(f"input '{self.input_name}' is a scalar; a graphc Module takes a batch")
        self.notes: list = []
        self.exported_batch = dims[0]
        if dims[0] is not None:
            self.notes.append(f"input '{self.input_name}' was exported with batch size {dims[0]}; any batch size is "
                              f"accepted")
        if any(d is None for d in dims[1:]):
            raise GraphError(f"input '{self.input_name}' has sizes {dims} unknown beyond the batch axis; graphc "
                             f"needs the feature shape (export with fixed sizes except the batch)")
        self.input_shape = (None,) + tuple(dims[1:])
        self.output_name = _select_output(self.proto, output, logits, self.notes)
        data = _data_initializers(self.proto, [self.output_name])
        for t in self.proto.graph.initializer:
            if t.name in data and t.data_type in (1, 11):
                value = initializer_array(t) if _has_data(t) else np.zeros(tuple(t.dims), DTYPES[t.data_type])
                self._params[t.name] = parameter(value, name=t.name)
        self._config = dict(model=base64.b64encode(_without_parameters(self.proto, self._params)).decode("ascii"),
                            output=output, logits=bool(logits), stripped=True)
        x = placeholder("x", self.input_shape, self.input_dtype)
        self.forward(x)  # imports every node now: an unsupported op or attribute is a GraphError at load
        for note in self.notes:
            warnings.warn(note, ImportNote, stacklevel=3)

    @property
    def dtype(self) -> np.dtype:
        return self.input_dtype

    def forward(self, x: Tensor, training: bool = False, seed=None) -> Tensor:
        if x.ndim != len(self.input_shape) or any(
                a is not None and b is not None and a != b for a, b in zip(x.shape[1:], self.input_shape[1:])):
            raise GraphError(f"the ONNX model takes inputs of shape {self.input_shape}, got {x.shape}")
        if any(d is None for d in x.shape[1:]):
            raise GraphError(f"the ONNX model needs its input's feature sizes {self.input_shape[1:]}, got {x.shape}")
        if x.dtype != self.input_dtype:
            raise GraphError(f"the ONNX model takes {self.input_dtype} inputs, got {x.dtype}")
        batch = self.exported_batch if x.shape[0] is None else None
        graph = GraphImporter(self.proto, self._params, notes=self.notes, declared_batch=batch)
        (out,) = graph.run({self.input_name: x}, [self.output_name])
        return out if isinstance(out, Tensor) else constant(out)

    def summary(self) -> str:
        """The imported graph: inputs, output, op counts, parameters and what was cut or skipped."""
        nodes = needed_nodes(self.proto.graph, [self.output_name])
        ops = Counter(n.op_type for n in nodes)
        producer = self.proto.producer_name + (f" {self.proto.producer_version}" if self.proto.producer_version else "")
        lines = [f"ONNX model: opset {self.opset}, IR version {self.proto.ir_version}"
                 + (f", producer {producer}" if producer.strip() else ""),
                 f"input: '{self.input_name}' {self.input_dtype} {self.input_shape} (None = any batch size)",
                 f"output: '{self.output_name}'",
                 f"layers: {len(nodes)} nodes: " + ", ".join(f"{op} x{k}" for op, k in ops.most_common()),
                 f"parameters: {self.num_parameters():,} in {len(self._params)} tensors (trainable initializers)"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"OnnxModel(input={self.input_name!r} {self.input_shape}, output={self.output_name!r}, " \
               f"{self.num_parameters():,} parameters)"


nn.LAYERS["OnnxModel"] = OnnxModel  # so nn.Module.load rebuilds a saved imported model


def _has_data(t: onnx.TensorProto) -> bool:
    return bool(t.raw_data or t.float_data or t.double_data or t.int32_data or t.int64_data
                or t.data_location == onnx.TensorProto.EXTERNAL) or int(np.prod(t.dims)) == 0


def _without_parameters(model: onnx.ModelProto, params: dict) -> bytes:
    """The model's bytes with the parameters' data left out (a saved Module stores them itself)."""
    slim = onnx.ModelProto()
    slim.CopyFrom(model)
    for t in slim.graph.initializer:
        if t.name in params:
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.ClearField("double_data")
    return slim.SerializeToString()


def load(f, logits: bool = True, output: Optional[str] = None) -> OnnxModel:
    """Import an ONNX model (a path, bytes or an onnx.ModelProto) as a graphc Module.

    logits=True cuts a trailing Softmax/LogSoftmax (with an ImportNote warning) so attacks and
    losses see logits; a scikit-learn model's label branch (ArgMax, ZipMap, ...) is skipped and its
    probabilities reached through the cut. `output` picks an output (or any tensor) by name.
    Unsupported ops, attributes, dtypes or shapes raise GraphError naming the node, the op and the
    opset."""
    return OnnxModel(f, output=output, logits=logits)


# the rest of the public API (at the end: the backend reads read_model from this module)
from . import onnx_backend as backend  # noqa: E402
from .onnx_export import save, save_graph  # noqa: E402
