"""Turn an ONNX graph into a graphc graph, node by node, with the rules of onnx_rules.

A value in the importer is either a graphc Tensor (computed at call time) or a *static* NumPy
array known now: initializers read as shapes, Constant nodes, and the Shape → Gather → Concat
arithmetic exporters emit to compute reshape targets. Static integer vectors may hold `Sym`
entries, sizes proportional to the batch size N (Shape of a tensor whose batch axis is unknown),
so a dynamic-batch model imports into one graph that runs for any batch size.

Every node is checked against the model's own type information: a graphc value whose dtype or
known shape differs from what ONNX says the node produces is refused (GraphError), never passed on.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ..compiler.runtime import compile as gc_compile
from ..compiler.runtime import specialize
from ..ir.errors import GraphError
from ..ir.graph import reachable
from ..ir.tensor import Tensor, constant

# ONNX element types graphc computes on (TensorProto.DataType -> NumPy)
DTYPES = {1: np.dtype("float32"), 2: np.dtype("uint8"), 3: np.dtype("int8"), 4: np.dtype("uint16"),
          5: np.dtype("int16"), 6: np.dtype("int32"), 7: np.dtype("int64"), 9: np.dtype("bool"),
          11: np.dtype("float64"), 12: np.dtype("uint32"), 13: np.dtype("uint64")}
MIN_OPSET = 6  # opsets 1-5 predate most op versions graphc implements (each node's op version is checked)


def dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def numpy_dtype(elem_type: int, what: str) -> np.dtype:
    if elem_type not in DTYPES:
        raise GraphError(f"{what}: element type {dtype_name(elem_type)} is not supported (graphc computes on "
                         f"float32, float64, integers and bool; convert the model, e.g. float16 -> float32)")
    return DTYPES[elem_type]


@dataclass(frozen=True)
class Sym:
    """A size known only at call time: coeff × N, with N the batch size. `source` is (tensor, axis)
    when the size was read off a tensor (Shape), so a tensor of that size can be built."""
    coeff: Fraction
    source: Optional[tuple] = field(default=None, compare=False, hash=False)

    def __mul__(self, other):
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return Sym(self.coeff * int(other)) if other else 0
        raise GraphError(f"cannot multiply the batch-dependent size {self} by {other}")

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Sym):
            ratio = self.coeff / other.coeff
            if ratio.denominator != 1:
                raise GraphError(f"{self} is not a multiple of {other}")
            return int(ratio)
        if isinstance(other, (int, np.integer)) and other:
            return Sym(self.coeff / int(other))
        raise GraphError(f"cannot divide the batch-dependent size {self} by {other}")

    __floordiv__ = __truediv__

    def __rtruediv__(self, other):
        raise GraphError(f"cannot divide {other} by the batch-dependent size {self}")

    __rfloordiv__ = __rtruediv__

    def __add__(self, other):
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool) and other == 0:
            return self
        if isinstance(other, Sym):
            return Sym(self.coeff + other.coeff)
        raise GraphError(f"cannot add {other} to the batch-dependent size {self}")

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Sym):
            diff = self.coeff - other.coeff
            return Sym(diff) if diff else 0
        return self + (-other if isinstance(other, (int, np.integer)) and not isinstance(other, bool) else other)

    def __rsub__(self, other):
        raise GraphError(f"cannot subtract the batch-dependent size {self} from {other}")

    def __repr__(self) -> str:
        return "N" if self.coeff == 1 else f"{self.coeff}·N"


def has_sym(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == object


def prod(dims) -> Any:
    out = 1
    for d in dims:
        out = d * out if isinstance(d, Sym) else out * int(d)
    return out


Value = Any  # Tensor | np.ndarray (static) | None (an absent optional input)


class NodeContext:
    """What a rule sees of one node: its inputs, attributes, opset version, and helpers."""

    def __init__(self, graph: GraphImporter, node: onnx.NodeProto, inputs: list, version: int):
        self.graph, self.node, self.inputs, self.version = graph, node, inputs, version
        self.op = node.op_type
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    # -- messages --------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        name = f"'{self.node.name}' " if self.node.name else ""
        outs = ", ".join(repr(o) for o in self.node.output if o)
        return f"ONNX node {name}({self.op}-{self.version}, opset {self.graph.opset}, output {outs})"

    def refuse(self, message: str) -> GraphError:
        return GraphError(f"{self.where}: {message}")

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    # -- inputs ----------------------------------------------------------------------------------
    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def is_static(self, i: int) -> bool:
        return self.has(i) and isinstance(self.inputs[i], np.ndarray)

    def all_static(self) -> bool:
        return all(v is None or isinstance(v, np.ndarray) for v in self.inputs)

    def tensor(self, i: int) -> Tensor:
        if not self.has(i):
            raise self.refuse(f"input {i} is missing")
        v = self.inputs[i]
        if isinstance(v, Tensor):
            return v
        if has_sym(v):
            raise self.refuse(f"input {i} holds sizes known only at call time ({v.tolist()}); graphc cannot use "
                              f"them as data")
        return constant(v)

    def static(self, i: int, what: str) -> np.ndarray:
        """Input i's value now: it sets a shape, axes or a bound, so it must be known when importing."""
        if not self.has(i):
            raise self.refuse(f"input {i} ({what}) is missing")
        v = self.inputs[i]
        if isinstance(v, np.ndarray):
            return v
        leaves = [n for n in reachable([v]) if not n.inputs]
        if all(n.op == "constant" for n in leaves):  # computed from constants: evaluate it now
            return np.asarray(gc_compile(v, backend="numpy")())
        raise self.graph.needs_static(self, i, what)

    def ints(self, i: int, what: str) -> list:
        v = self.static(i, what)
        if v.dtype.kind not in "iu" and not has_sym(v):
            raise self.refuse(f"{what} must be integers, got {v.dtype}")
        return [d if isinstance(d, Sym) else int(d) for d in v.reshape(-1).tolist()]

    def sym_shape(self, i: int) -> list:
        """Input i's shape with unknown sizes as Sym (multiples of the batch size)."""
        v = self.inputs[i]
        if isinstance(v, np.ndarray):
            return list(v.shape)
        return self.graph.sym_shape(v, self)


@dataclass
class Rule:
    fn: Callable  # (ctx) -> list of output values
    versions: frozenset  # the op's since_versions (schema versions) whose semantics fn implements
    attrs: frozenset  # attribute names fn reads (any other attribute is refused)
    static_inputs: frozenset = frozenset()  # input positions read as constants (shapes, axes, ...)


RULES: dict[str, Rule] = {}


class StaticInputNeeded(GraphError):
    """A graph input sets a shape or axes (known only when the model runs with values)."""

    def __init__(self, message: str, input_name: str):
        super().__init__(message)
        self.input_name = input_name


class GraphImporter:
    """Builds graphc Tensors for the outputs of one ONNX graph, given Tensors for its inputs."""

    def __init__(self, model: onnx.ModelProto, parameters: dict, notes: Optional[list] = None,
                 declared_batch: Optional[int] = None, static_feeds: Optional[dict] = None):
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        self.parameters = parameters  # initializer name -> gc.parameter (float data), others read as arrays
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.notes = notes if notes is not None else []
        self.declared_batch = declared_batch  # a fixed batch size the model was exported with, read as N
        self.static_feeds = static_feeds or {}
        self.value_info = value_types(model)
        self._sym_cache: dict = {}
        self._init_cache: dict = {}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- values ---------------------------------------------------------------------------------
    def initializer(self, name: str) -> Value:
        if name in self.parameters:
            return self.parameters[name]
        if name not in self._init_cache:
            self._init_cache[name] = initializer_array(self.initializers[name])
        return self._init_cache[name]

    def needs_static(self, ctx: NodeContext, i: int, what: str) -> GraphError:
        name = ctx.node.input[i]
        if name in self.graph_inputs:
            return StaticInputNeeded(f"{ctx.where}: input {i} ({what}) comes from the graph input '{name}'; graphc "
                                     f"needs it when importing (make it an initializer or a Constant)", name)
        return ctx.refuse(f"input {i} ({what}) is computed from the model's inputs; graphc needs it when "
                          f"importing (a constant)")

    def sym_shape(self, t: Tensor, ctx: Optional[NodeContext] = None) -> list:
        if all(d is not None for d in t.shape):
            return list(t.shape)
        if t.id not in self._sym_cache:
            probes = (7, 11)  # two batch sizes: a size a·N shows up as 7a and 11a
            shapes = [self._probe(t, n, ctx) for n in probes]
            dims = []
            for k, d in enumerate(t.shape):
                a, b = shapes[0][k], shapes[1][k]
                if d is not None:
                    dims.append(d)
                elif a * probes[1] == b * probes[0]:
                    dims.append(Sym(Fraction(a, probes[0]), source=(t, k)))
                else:
                    where = ctx.where if ctx else "ONNX import"
                    raise GraphError(f"{where}: axis {k} of a {tuple(t.shape)} tensor is not proportional to the "
                                     f"batch size; graphc cannot resolve this dynamic shape")
            self._sym_cache[t.id] = dims
        return list(self._sym_cache[t.id])

    def _probe(self, t: Tensor, n: int, ctx) -> tuple:
        nodes = reachable([t])
        holders = [p for p in nodes if p.op == "placeholder"]
        params = [p for p in nodes if p.op == "parameter"]
        fakes = [types.SimpleNamespace(shape=tuple(n if d is None else d for d in p.shape)) for p in holders]
        try:
            (concrete,) = specialize([t], holders, fakes, params, [np.asarray(p.value) for p in params])
        except GraphError as exc:
            where = ctx.where if ctx else "ONNX import"
            raise GraphError(f"{where}: the shape of {t!r} depends on the batch size in a way graphc cannot "
                             f"follow ({exc})") from None
        return concrete.shape

    # -- the walk ---------------------------------------------------------------------------------
    def run(self, feeds: dict, outputs: list) -> list:
        """Tensors (or static arrays) for `outputs`, given Tensors for the graph inputs in `feeds`."""
        env: dict = {}
        self.graph_inputs = {i.name for i in self.graph.input if i.name not in self.initializers}
        for name in self.initializers:
            env[name] = None  # read on use
        env.update(self.static_feeds)
        env.update(feeds)
        for node in needed_nodes(self.graph, outputs):
            ins = []
            for name in node.input:
                if not name:
                    ins.append(None)
                elif name in env and env[name] is None and name in self.initializers:
                    env[name] = self.initializer(name)
                    ins.append(env[name])
                elif name in env:
                    ins.append(env[name])
                else:
                    raise GraphError(f"ONNX node '{node.name}' ({node.op_type}) reads '{name}', which no node, "
                                     f"input or initializer provides")
            outs = self.apply(node, ins)
            for name, value in zip(node.output, outs):
                if name:
                    env[name] = value
        missing = [o for o in outputs if o not in env]
        if missing:
            raise GraphError(f"the ONNX graph does not compute {missing}")
        return [self.initializer(o) if env[o] is None else env[o] for o in outputs]

    def apply(self, node: onnx.NodeProto, ins: list) -> list:
        rule, ctx = check_node(self, node, ins)
        outs = [o if o is None or isinstance(o, Tensor) else np.asarray(o) for o in rule.fn(ctx)]
        for name, value in zip(node.output, outs):
            if name:
                self.check(ctx, name, value)
        return outs

    def check(self, ctx: NodeContext, name: str, value) -> None:
        """Refuse a value whose dtype or known sizes differ from what ONNX says the node makes."""
        if name not in self.value_info:
            return
        elem, dims = self.value_info[name]
        if value is None:
            raise ctx.refuse(f"output '{name}' is not computed")
        want = DTYPES.get(elem)
        have = np.dtype(np.int64) if has_sym(value) else value.dtype
        if want is None:
            raise ctx.refuse(f"output '{name}' has element type {dtype_name(elem)}, which graphc does not compute")
        if have != want:
            raise ctx.refuse(f"graphc would compute output '{name}' as {have}, ONNX specifies {want}")
        shape = value.shape
        if dims is not None and (len(dims) != len(shape) or any(
                a is not None and b is not None and a != b for a, b in zip(dims, shape))):
            if not (self.declared_batch is not None and len(dims) == len(shape) and shape[:1] == (None,)
                    and all(a is None or b is None or a == b for a, b in zip(dims[1:], shape[1:]))):
                raise ctx.refuse(f"graphc would compute output '{name}' with shape {tuple(shape)}, ONNX infers "
                                 f"{tuple(dims)}")


def check_node(graph: GraphImporter, node: onnx.NodeProto, ins: list) -> tuple:
    """(rule, context) for a node graphc supports: op, op version and attributes; else GraphError."""
    domain = node.domain or ""
    if domain not in ("", "ai.onnx"):
        raise GraphError(f"ONNX node '{node.name}' ({node.op_type}, domain {domain}) is not supported: graphc "
                         f"imports the default ONNX domain only")
    rule = RULES.get(node.op_type)
    version = since_version(node.op_type, graph.opset)
    ctx = NodeContext(graph, node, ins, version)
    if rule is None:
        raise ctx.refuse(f"op {node.op_type} is not supported by graphc's importer "
                         f"(supported: {', '.join(sorted(RULES))})")
    if version not in rule.versions:
        raise ctx.refuse(f"{node.op_type}-{version} (the version opset {graph.opset} selects) is not supported; "
                         f"graphc implements {node.op_type} versions {sorted(rule.versions)}")
    unknown = sorted(set(ctx.attrs) - rule.attrs)
    if unknown:
        raise ctx.refuse(f"attribute(s) {unknown} not supported")
    for name in node.output[1:]:
        if name and node.op_type not in MULTI_OUTPUT:
            raise ctx.refuse(f"output {name!r} is requested; graphc computes only the first output of "
                             f"{node.op_type}")
    return rule, ctx


MULTI_OUTPUT = {"Split", "Dropout", "BatchNormalization"}  # rules that compute several outputs


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def since_version(op_type: str, opset: int) -> int:
    try:
        return int(onnx.defs.get_schema(op_type, opset, "").since_version)
    except Exception:  # noqa: BLE001 - an op unknown to this onnx version
        return 0


def initializer_array(t: onnx.TensorProto) -> np.ndarray:
    if t.data_type not in DTYPES:
        raise GraphError(f"initializer '{t.name}' has element type {dtype_name(t.data_type)}, which graphc does not "
                         f"compute")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise GraphError(f"initializer '{t.name}' is stored in an external file; load the model with "
                         f"onnx.load(path) (which reads external data) and pass the ModelProto")
    return numpy_helper.to_array(t).astype(DTYPES[t.data_type], copy=False)


def value_types(model: onnx.ModelProto) -> dict:
    """name -> (elem_type, dims with None for unknown) from the model and ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a safety net, not required
        inferred = model
    out = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.elem_type:
            continue
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        out[vi.name] = (tt.elem_type, dims)
    return out


def needed_nodes(graph: onnx.GraphProto, outputs: list) -> list:
    """The nodes the outputs depend on, in graph order (ONNX lists nodes topologically)."""
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    need, stack = set(), [o for o in outputs]
    while stack:
        name = stack.pop()
        k = producer.get(name)
        if k is None or k in need:
            continue
        need.add(k)
        stack.extend(i for i in graph.node[k].input if i)
        for a in graph.node[k].attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise GraphError(f"ONNX node '{graph.node[k].name}' ({graph.node[k].op_type}) has a subgraph; "
                                 f"control flow (If, Loop, Scan) is not supported")
    return [graph.node[k] for k in sorted(need)]


def rule(*ops: str, versions, attrs=(), static=()):
    """Register fn as the importer rule of the ONNX ops `ops` (same versions and attributes)."""
    def deco(fn):
        for op in ops:
            RULES[op] = Rule(fn, frozenset(versions), frozenset(attrs), frozenset(static))
        return fn
    return deco
