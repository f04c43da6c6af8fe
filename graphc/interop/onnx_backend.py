"""`graphc.onnx.backend`: graphc as an ONNX backend (onnx.backend.base.Backend).

    >>> import graphc.onnx
    >>> rep = graphc.onnx.backend.prepare(model_proto)      # doctest: +SKIP
    >>> outputs = rep.run([x])                               # doctest: +SKIP

`prepare` imports the whole graph (every output, every input, initializers as constants) and
compiles it; a model graphc cannot run exactly is refused there with a GraphError naming the
node, its op, the attribute and the opset. Inputs that set shapes or axes (Reshape's shape
given as a graph input, ...) are read when `run` is called and the graph is built for their
values (cached). ONNX's conformance suite runs against this module:

    >>> import onnx.backend.test                                            # doctest: +SKIP
    >>> tests = onnx.backend.test.BackendTest(graphc.onnx.backend, __name__)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from ..compiler.runtime import compile as gc_compile
from ..ir.errors import GraphError
from ..ir.tensor import Tensor, constant, placeholder
from .onnx import _tensor_type, read_model
from .onnx_graph import MIN_OPSET, GraphImporter, StaticInputNeeded, check_node, default_opset, needed_nodes

__all__ = ["GraphcBackend", "GraphcRep", "prepare", "run_model", "run_node", "supports_device", "is_compatible"]


class GraphcRep(BackendRep):
    """A prepared ONNX model: `run(inputs)` (a list in the graph's input order, or a dict by name)
    returns the outputs, NumPy arrays in the graph's output order."""

    def __init__(self, model: onnx.ModelProto, backend: Optional[str] = None):
        self.model = model
        self.backend = backend
        inits = {t.name for t in model.graph.initializer}
        self.inputs = [i for i in model.graph.input if i.name not in inits]
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in model.graph.output]
        self.types = {i.name: _tensor_type(i, "input") for i in self.inputs}
        for o in model.graph.output:
            _tensor_type(o, "output")
        self.static_inputs: list = []  # graph inputs read as values when importing (shapes, axes)
        self.notes: list = []
        self._functions: dict = {}
        while True:
            try:
                self._functions[()] = self._build({})
                break
            except StaticInputNeeded as need:
                if need.input_name in self.static_inputs:
                    raise
                self.static_inputs.append(need.input_name)
                # the graph is built when run() brings these values; check now what can be checked
                graph = GraphImporter(model, {})
                for node in needed_nodes(model.graph, self.output_names):
                    check_node(graph, node, [])
                break

    def _build(self, static_values: dict):
        holders = {}
        for k, name in enumerate(self.input_names):
            if name in self.static_inputs:
                continue
            dtype, dims = self.types[name]
            holders[name] = placeholder(f"input_{k}", dims, dtype)
        statics = {name: np.asarray(static_values[name]) for name in self.static_inputs if name in static_values}
        if len(statics) < len(self.static_inputs):
            raise StaticInputNeeded("static inputs missing", next(n for n in self.static_inputs if n not in statics))
        graph = GraphImporter(self.model, {}, notes=self.notes, static_feeds=statics)
        outs = graph.run(holders, self.output_names)
        tensors = [o if isinstance(o, Tensor) else constant(o) for o in outs]
        return gc_compile(tensors, backend=self.backend), [f"input_{k}" for k, n in enumerate(self.input_names)
                                                          if n not in self.static_inputs]

    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise GraphError(f"missing inputs {missing}; the model's inputs are {self.input_names}")
            values = [inputs[n] for n in self.input_names]
        else:
            values = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(values) != len(self.input_names):
                raise GraphError(f"the model takes {len(self.input_names)} inputs {self.input_names}, "
                                 f"got {len(values)}")
        by_name = dict(zip(self.input_names, values))
        for name in self.input_names:
            _check_input(name, by_name[name], *self.types[name])
        while True:
            key = tuple(self.static_inputs) + tuple(_key(by_name[n]) for n in self.static_inputs)
            try:
                if key not in self._functions:
                    self._functions[key] = self._build({n: by_name[n] for n in self.static_inputs})
                break
            except StaticInputNeeded as need:  # one more input turns out to set a shape or axes
                if need.input_name in self.static_inputs:
                    raise
                self.static_inputs.append(need.input_name)
        fn, feed_names = self._functions[key]
        used = {p.name for p in fn.placeholders}
        feeds = {k: v for k, v in zip(feed_names, (by_name[n] for n in self.input_names if n not in self.static_inputs))
                 if k in used}
        outs = fn(**feeds)
        return namedtupledict("Outputs", self.output_names)(*outs)


def _check_input(name: str, value, dtype: np.dtype, dims: list) -> None:
    """Inputs the graph reads only for their shape or dtype are not fed: check them all here."""
    a = value if isinstance(value, np.ndarray) else np.asarray(value)
    if a.dtype != dtype:
        raise GraphError(f"input '{name}' has dtype {a.dtype}, the model declares {dtype}")
    if a.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, a.shape)):
        raise GraphError(f"input '{name}' has shape {a.shape}, the model declares {tuple(dims)}")


def _key(value) -> tuple:
    a = np.asarray(value)
    return (a.dtype.str, a.shape, a.tobytes())


class GraphcBackend(Backend):
    """The ONNX backend API over graphc (CPU only)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", backend: Optional[str] = None, **kwargs: Any) -> GraphcRep:
        """Import and compile `model` (a ModelProto, path or bytes); GraphError if graphc cannot run it
        exactly. `backend`: graphc's "c" or "numpy" (default: GRAPHC_BACKEND)."""
        if not cls.supports_device(device):
            raise GraphError(f"graphc runs on the CPU; device {device!r} is not supported")
        model = read_model(model)
        opset = default_opset(model)
        newest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= opset <= newest:
            raise GraphError(f"the model uses opset {opset}; graphc imports opsets {MIN_OPSET} to {newest}")
        return GraphcRep(model, backend=backend)

    @classmethod
    def run_model(cls, model, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Optional[Sequence] = None, **kwargs: Any) -> tuple:
        """Run one node on NumPy inputs (named after node.input, in order)."""
        arrays = [np.asarray(a) for a in (inputs.values() if isinstance(inputs, dict) else inputs)]
        ins = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for name, a in zip(node.input, arrays) if name]
        if outputs_info:
            outs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                    for name, (dt, shape) in zip(node.output, outputs_info)]
        else:
            outs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        graph = onnx.helper.make_graph([node], "run_node", ins, outs)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        model = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        inferred = {v.name: v for v in model.graph.value_info}
        model.graph.output.extend(inferred.get(n, onnx.helper.make_empty_tensor_value_info(n))
                                  for n in node.output if n)
        return cls.prepare(model, device, **kwargs).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")


prepare = GraphcBackend.prepare
run_model = GraphcBackend.run_model
run_node = GraphcBackend.run_node
supports_device = GraphcBackend.supports_device
is_compatible = GraphcBackend.is_compatible
