"""The importer's rules: one function per ONNX op (or family), built from graphc ops.

Each rule states the op versions whose semantics it implements (ONNX schema `since_version`s;
later versions that only add element types are listed once checked) and the attributes it reads;
anything else is refused by the importer before the rule runs. Rules compose existing graphc ops
wherever that is exact (Gemm = matmul with transpose flags, alpha and beta; BatchNormalization =
a per-channel affine; LRN = a window mean over channels by average pooling; ...). Integer shape
arithmetic on static values (Shape, Gather, Concat, ...) is evaluated here with NumPy.
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from .. import ops as F
from ..ir.errors import GraphError
from ..ir.tensor import Tensor, constant
from .onnx_graph import DTYPES, NodeContext, Sym, has_sym, numpy_dtype, prod, rule

_INT_MAX = 2 ** 62


def _norm_axis(ctx: NodeContext, axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise ctx.refuse(f"{what} {axis} is out of range for a {ndim}-d input")
    return axis % ndim


def _reshape_to(ctx: NodeContext, x, dims: list):
    """Reshape x to dims (ints and Syms; at most one Sym, which becomes -1)."""
    if isinstance(x, np.ndarray):
        if any(isinstance(d, Sym) for d in dims):
            raise ctx.refuse(f"cannot reshape a constant to the batch-dependent shape {dims}")
        return x.reshape([int(d) for d in dims])
    syms = [k for k, d in enumerate(dims) if isinstance(d, Sym)]
    if len(syms) > 1:
        raise ctx.refuse(f"target shape {dims} has more than one batch-dependent size")
    target = [-1 if isinstance(d, Sym) else int(d) for d in dims]
    return F.reshape(x, target)


def _product_equal(a, b) -> bool:
    return (isinstance(a, Sym) and isinstance(b, Sym) and a.coeff == b.coeff) or \
        (not isinstance(a, Sym) and not isinstance(b, Sym) and int(a) == int(b))


# -- constants and shapes ---------------------------------------------------------------------------
@rule("Constant", versions=(1, 9, 11, 12, 13, 19, 21, 23, 24, 25),
      attrs=("value", "value_float", "value_floats", "value_int", "value_ints", "sparse_value", "value_string",
             "value_strings"))
def _constant(ctx):
    a = ctx.attrs
    if "value" in a:
        t = a["value"]
        numpy_dtype(t.data_type, ctx.where)
        return [numpy_helper.to_array(t).astype(DTYPES[t.data_type], copy=False)]
    if "value_float" in a:
        return [np.asarray(a["value_float"], np.float32)]
    if "value_floats" in a:
        return [np.asarray(a["value_floats"], np.float32)]
    if "value_int" in a:
        return [np.asarray(a["value_int"], np.int64)]
    if "value_ints" in a:
        return [np.asarray(a["value_ints"], np.int64)]
    raise ctx.refuse(f"constant kind {sorted(a)} is not supported (sparse and string constants)")


def _batch_shaped(ctx, dims: list) -> Tensor:
    """A tensor of shape `dims` whose batch-dependent sizes (Syms read off tensors) are known only at
    call time: broadcast from those tensors (only its shape matters)."""
    base = constant(np.zeros([1 if isinstance(d, Sym) else int(d) for d in dims], np.bool_))
    for k, d in enumerate(dims):
        if not isinstance(d, Sym):
            continue
        if d.source is None:
            raise ctx.refuse(f"the shape {dims} depends on the batch size in a way graphc cannot build")
        src, axis = d.source
        index = [(0, 1, 1)] * src.ndim
        index[axis] = (None, None, 1)
        line = F.reshape(F.slice(src, index), [1] * k + [-1] + [1] * (len(dims) - k - 1))
        base = F.broadcast_like(base, line)
    return base


@rule("ConstantOfShape", versions=(9, 20, 21, 23, 24, 25), attrs=("value",), static=(0,))
def _constant_of_shape(ctx):
    shape = ctx.ints(0, "shape")
    if any(not isinstance(d, Sym) and d < 0 for d in shape):
        raise ctx.refuse(f"negative size in shape {shape}")
    t = ctx.attr("value")
    value = np.zeros(1, np.float32) if t is None else numpy_helper.to_array(t)
    if t is not None:
        numpy_dtype(t.data_type, ctx.where)
    if any(isinstance(d, Sym) for d in shape):  # e.g. zeros of the batch's size, made at call time
        fill = constant(np.full([1] * len(shape), value.reshape(-1)[0], dtype=value.dtype))
        return [F.broadcast_like(fill, _batch_shaped(ctx, shape))]
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


@rule("Shape", versions=(1, 13, 15, 19, 21, 23, 24, 25), attrs=("start", "end"))
def _shape(ctx):
    dims = ctx.sym_shape(0)
    n = len(dims)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", n)
    start = min(max(start + n if start < 0 else start, 0), n)
    end = min(max(end + n if end < 0 else end, 0), n)
    dims = dims[start:end]
    if any(isinstance(d, Sym) for d in dims):
        return [np.array(dims, dtype=object)]
    return [np.asarray(dims, np.int64).reshape(len(dims))]


@rule("Size", versions=(1, 13, 19, 21, 23, 24, 25))
def _size(ctx):
    total = prod(ctx.sym_shape(0))
    if isinstance(total, Sym):
        return [np.array(total, dtype=object)]
    return [np.asarray(total, np.int64)]


@rule("Identity", versions=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def _identity(ctx):
    return [ctx.inputs[0]]


@rule("Cast", versions=(6, 9, 13, 19, 21, 23, 24, 25, 28), attrs=("to", "saturate", "round_mode"))
def _cast(ctx):
    to = numpy_dtype(ctx.attr("to"), ctx.where)
    v = ctx.inputs[0]
    if isinstance(v, np.ndarray):
        if has_sym(v):
            if to.kind not in "iu":
                raise ctx.refuse(f"cannot cast batch-dependent sizes to {to}")
            return [v]
        return [v.astype(to)]
    return [F.cast(v, to) if v.dtype != to else v]  # float -> int truncates toward zero in both


@rule("CastLike", versions=(15, 19, 21, 23, 24, 25), attrs=("saturate", "round_mode"))
def _cast_like(ctx):
    to = ctx.inputs[1].dtype
    v = ctx.inputs[0]
    if isinstance(v, np.ndarray):
        return [v.astype(to)]
    return [F.cast(v, to) if v.dtype != to else v]


# -- reshaping ---------------------------------------------------------------------------------------
@rule("Reshape", versions=(5, 13, 14, 19, 21, 23, 24, 25), attrs=("allowzero",), static=(1,))
def _reshape(ctx):
    target = ctx.ints(1, "shape")
    allowzero = ctx.attr("allowzero", 0)
    dims = ctx.sym_shape(0)
    out = []
    for k, t in enumerate(target):
        if not isinstance(t, Sym) and t == 0 and not allowzero:
            if k >= len(dims):
                raise ctx.refuse(f"target {target}: a 0 at position {k} copies a size the {len(dims)}-d input lacks")
            out.append(dims[k])
        elif not isinstance(t, Sym) and t < -1:
            raise ctx.refuse(f"target {target} has a negative size")
        else:
            out.append(t)
    out = _resolve(ctx, dims, out, target)
    return [_reshape_to(ctx, ctx.inputs[0], out)]


def _resolve(ctx, dims: list, out: list, target) -> list:
    """Fill in a -1 and check the element counts, reading a leading size equal to a fixed
    exported batch as the batch size N (the model was exported for batch 1, run for any)."""
    total = prod(dims)
    free = [k for k, d in enumerate(out) if not isinstance(d, Sym) and d == -1]
    if len(free) > 1:
        raise ctx.refuse(f"target {target} has more than one -1")
    batch = ctx.graph.declared_batch
    if (isinstance(total, Sym) and batch is not None and out and not isinstance(out[0], Sym) and out[0] == batch
            and dims and isinstance(dims[0], Sym) and dims[0].coeff == 1):
        rest = prod([d for d in out[1:] if isinstance(d, Sym) or d != -1])
        if not isinstance(rest, Sym):
            out = [dims[0]] + out[1:]
            ctx.graph.note(f"{ctx.where}: reshape target {list(target)} read with the batch size N in place of "
                           f"the exported batch {batch}")
    if free:
        k = free[0]
        rest = prod([d for j, d in enumerate(out) if j != k])
        if not isinstance(rest, Sym) and rest == 0:
            raise ctx.refuse(f"cannot infer the -1 in {target}: the other sizes multiply to 0")
        if isinstance(total, Sym) or isinstance(rest, Sym):
            try:
                size = total / rest  # N·a / N·b is a number, N·a / b a size in N; b / N·a has no meaning
            except GraphError as exc:
                raise ctx.refuse(f"cannot reshape {dims} to {target}: {exc}") from None
        elif total % rest:
            raise ctx.refuse(f"cannot reshape {dims} to {target}")
        else:
            size = total // rest
        out[k] = size
    if not _product_equal(prod(out), total):
        raise ctx.refuse(f"cannot reshape a tensor of shape {dims} to {out}")
    return out


@rule("Flatten", versions=(1, 9, 11, 13, 21, 23, 24, 25), attrs=("axis",))
def _flatten(ctx):
    dims = ctx.sym_shape(0)
    axis = ctx.attr("axis", 1)
    axis = axis + len(dims) if axis < 0 else axis  # in [-r, r]: -1 is the last axis
    if not 0 <= axis <= len(dims):
        raise ctx.refuse(f"axis {ctx.attr('axis')} is out of range for a {len(dims)}-d input")
    return [_reshape_to(ctx, ctx.inputs[0], [prod(dims[:axis]), prod(dims[axis:])])]


@rule("Transpose", versions=(1, 13, 21, 23, 24, 25), attrs=("perm",))
def _transpose(ctx):
    v = ctx.inputs[0]
    perm = ctx.attr("perm")
    perm = list(range(v.ndim))[::-1] if perm is None else list(perm)
    if sorted(perm) != list(range(v.ndim)):
        raise ctx.refuse(f"perm {perm} is not a permutation of the {v.ndim} axes")
    if isinstance(v, np.ndarray):
        return [np.ascontiguousarray(np.transpose(v, perm))]
    return [F.transpose(v, perm)]


def _axes(ctx, attr_before: int, index: int = 1):
    """Axes from the attribute (op versions before `attr_before`) or from input `index`."""
    if ctx.version < attr_before:
        axes = ctx.attr("axes")
        return None if axes is None else list(axes)
    if ctx.has(index):
        return ctx.ints(index, "axes")
    return None


@rule("Squeeze", versions=(1, 11, 13, 21, 23, 24, 25), attrs=("axes",), static=(1,))
def _squeeze(ctx):
    v = ctx.inputs[0]
    axes = _axes(ctx, 13)
    dims = v.shape
    if axes is None:
        if any(d is None for d in dims):
            raise ctx.refuse(f"Squeeze without axes on a {tuple(dims)} input: which sizes are 1 is known only when "
                             f"it runs")
        axes = [k for k, d in enumerate(dims) if d == 1]
    axes = sorted({_norm_axis(ctx, a, len(dims), "axes") for a in axes})
    if any(dims[a] not in (1, None) for a in axes):
        raise ctx.refuse(f"cannot squeeze axes {axes} of shape {tuple(dims)}")
    if isinstance(v, np.ndarray):
        return [v.reshape([d for k, d in enumerate(dims) if k not in axes])]
    return [F.squeeze(v, axes) if axes else v]


@rule("Unsqueeze", versions=(1, 11, 13, 21, 23, 24, 25), attrs=("axes",), static=(1,))
def _unsqueeze(ctx):
    v = ctx.inputs[0]
    axes = _axes(ctx, 13)
    if axes is None:
        raise ctx.refuse("Unsqueeze needs axes")
    ndim = v.ndim + len(axes)
    axes = sorted(_norm_axis(ctx, a, ndim, "axes") for a in axes)
    if len(set(axes)) != len(axes):
        raise ctx.refuse(f"repeated axes {axes}")
    if isinstance(v, np.ndarray):
        return [np.expand_dims(v, tuple(axes))]
    return [F.expand_dims(v, tuple(axes))]


@rule("Concat", versions=(4, 11, 13), attrs=("axis",))
def _concat(ctx):
    vs = [v for v in ctx.inputs if v is not None]
    axis = _norm_axis(ctx, ctx.attr("axis"), vs[0].ndim)
    vs = [v for v in vs if not (isinstance(v, np.ndarray) and v.shape[axis] == 0)] or vs[:1]
    if all(isinstance(v, np.ndarray) for v in vs):
        obj = any(has_sym(v) for v in vs)
        return [np.concatenate([v.astype(object) if obj else v for v in vs], axis=axis)]
    if len(vs) == 1:
        return [ctx.tensor(0) if isinstance(vs[0], np.ndarray) else vs[0]]
    ts = [v if isinstance(v, Tensor) else constant(v) for v in vs]
    if len({t.dtype for t in ts}) > 1:
        raise ctx.refuse(f"inputs have different dtypes {[str(t.dtype) for t in ts]}")
    return [F.concatenate(ts, axis)]


def _slice_triples(ctx, dims, starts, ends, axes, steps):
    """One Python (start, stop, step) per axis, with ONNX's clamping rules applied."""
    index = [(None, None, 1)] * len(dims)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.refuse(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(ctx, a, len(dims), "axes")
        if st == 0:
            raise ctx.refuse("a slice step of 0")
        d = dims[a]
        if d is None or isinstance(d, Sym):
            if st == 1 and s == 0 and e >= _INT_MAX // 4:
                continue  # the whole axis
            if st == 1 and s >= 0 and e >= _INT_MAX // 4:
                index[a] = (s, None, 1)
                continue
            raise ctx.refuse(f"slicing axis {a}, whose size is known only at call time, with start {s}, end {e}, "
                             f"step {st}")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            index[a] = (s, e, st)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            index[a] = (s, None if e < 0 else e, st)
    return index


def _apply_slice(ctx, v, index):
    if isinstance(v, np.ndarray):
        return v[tuple(slice(*t) for t in index)]
    return F.slice(v, index)


@rule("Slice", versions=(1, 10, 11, 13), attrs=("starts", "ends", "axes"), static=(1, 2, 3, 4))
def _slice(ctx):
    dims = ctx.sym_shape(0)
    if ctx.version < 10:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = ctx.attr("axes")
        axes, steps = (None if axes is None else list(axes)), None
    else:
        starts, ends = ctx.ints(1, "starts"), ctx.ints(2, "ends")
        axes = ctx.ints(3, "axes") if ctx.has(3) else None
        steps = ctx.ints(4, "steps") if ctx.has(4) else None
    return [_apply_slice(ctx, ctx.inputs[0], _slice_triples(ctx, dims, starts, ends, axes, steps))]


@rule("Split", versions=(2, 11, 13, 18), attrs=("axis", "split", "num_outputs"), static=(1,))
def _split(ctx):
    dims = ctx.sym_shape(0)
    axis = _norm_axis(ctx, ctx.attr("axis", 0), len(dims))
    d = dims[axis]
    if isinstance(d, Sym):
        raise ctx.refuse(f"splitting axis {axis}, whose size is known only at call time")
    n_out = len(ctx.node.output)
    if ctx.version < 13:
        sizes = ctx.attr("split")
        sizes = None if sizes is None else list(sizes)
    else:
        sizes = ctx.ints(1, "split") if ctx.has(1) else None
    if sizes is None:
        n = ctx.attr("num_outputs", n_out)
        chunk = -(-d // n)
        sizes = [min(chunk, d - k * chunk) for k in range(n)]
    if sum(sizes) != d or len(sizes) != n_out or min(sizes) < 0:
        raise ctx.refuse(f"split sizes {sizes} do not divide axis {axis} of size {d} into {n_out} outputs")
    outs, start = [], 0
    for size in sizes:
        index = [(None, None, 1)] * len(dims)
        index[axis] = (start, start + size, 1)
        outs.append(_apply_slice(ctx, ctx.inputs[0], index))
        start += size
    return outs


@rule("Gather", versions=(1, 11, 13), attrs=("axis",))
def _gather(ctx):
    v = ctx.inputs[0]
    dims = ctx.sym_shape(0)
    axis = _norm_axis(ctx, ctx.attr("axis", 0), len(dims))
    idx = ctx.inputs[1]
    if idx.dtype.kind not in "iu" or (isinstance(idx, np.ndarray) and has_sym(idx)):
        raise ctx.refuse(f"indices must be integers, got {idx.dtype}")
    if isinstance(idx, np.ndarray):
        d = dims[axis]
        if isinstance(d, Sym):
            if (idx < 0).any():
                raise ctx.refuse(f"negative indices into axis {axis}, whose size is known only at call time")
        elif idx.size and (idx.min() < -d or idx.max() >= d):
            raise ctx.refuse(f"indices {idx.tolist()} out of range for axis {axis} of size {d}")
        if isinstance(v, np.ndarray):  # shape arithmetic, or a constant table
            return [np.take(v, idx, axis=axis)]
    # indices known only at call time, or data computed by the graph: gc.take (ONNX's negative
    # indices count from the end, as NumPy's); an index out of range is a GraphError when it runs
    return [F.take(ctx.tensor(0), ctx.tensor(1), axis)]


@rule("Expand", versions=(8, 13), static=(1,))
def _expand(ctx):
    shape = ctx.ints(1, "shape")
    v = ctx.inputs[0]
    if any(isinstance(d, Sym) for d in shape):
        return [F.broadcast_like(ctx.tensor(0), _batch_shaped(ctx, shape))]
    try:
        out_shape = np.broadcast_shapes(tuple(d if d is not None else 1 for d in v.shape), tuple(shape))
    except ValueError:
        raise ctx.refuse(f"shape {tuple(v.shape)} does not broadcast to {shape}") from None
    if isinstance(v, np.ndarray):
        return [np.broadcast_to(v, out_shape).copy()]
    if any(d is None for d in v.shape):
        raise ctx.refuse(f"expanding a {tuple(v.shape)} tensor whose sizes are known only at call time")
    return [F.broadcast_like(v, constant(np.zeros(out_shape, np.bool_)))]


@rule("Range", versions=(11,), static=(0, 1, 2))
def _range(ctx):
    start, limit, delta = (ctx.static(i, "range") for i in range(3))
    return [np.arange(start, limit, delta, dtype=start.dtype)]


# -- elementwise --------------------------------------------------------------------------------------
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _legacy_broadcast(ctx, a, b):
    """Before opset 7, B broadcast to A only with broadcast=1, its axes aligned from `axis`."""
    if ctx.version >= 7:
        return b
    if not ctx.attr("broadcast", 0):
        if tuple(a.shape) != tuple(b.shape):
            raise ctx.refuse(f"shapes {tuple(a.shape)} and {tuple(b.shape)} differ and broadcast=0")
        return b
    axis = ctx.attr("axis")
    if axis is None or b.ndim == 0:
        return b
    axis = _norm_axis(ctx, axis, a.ndim)
    trailing = a.ndim - axis - b.ndim
    if trailing < 0:
        raise ctx.refuse(f"B {tuple(b.shape)} does not fit A {tuple(a.shape)} from axis {axis}")
    shape = tuple(b.shape) + (1,) * trailing
    return b.reshape(shape) if isinstance(b, np.ndarray) else F.reshape(b, shape)


@rule("Add", "Sub", "Mul", "Div", versions=(6, 7, 13, 14), attrs=("axis", "broadcast"))
def _binary(ctx):
    a, b = ctx.inputs[:2]
    ctx.inputs[1] = b = _legacy_broadcast(ctx, a, b)
    static = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    if static and (a.dtype.kind in "iuO" and b.dtype.kind in "iuO"):  # shape arithmetic
        if ctx.op == "Div":
            if has_sym(a) or has_sym(b):
                return [np.array([x / y for x, y in np.broadcast(a, b)], dtype=object).reshape(
                    np.broadcast_shapes(a.shape, b.shape))]
            return [np.trunc(a / b).astype(a.dtype)]  # integer division truncates in ONNX
        return [_BINARY[ctx.op](a, b)]
    x, y = ctx.tensor(0), ctx.tensor(1)
    if x.dtype != y.dtype:
        raise ctx.refuse(f"operands have different dtypes {x.dtype} and {y.dtype}")
    if ctx.op == "Div" and x.dtype.kind != "f":
        raise ctx.refuse(f"integer division ({x.dtype}) truncates in ONNX; graphc divides integers as floats")
    return [{"Add": F.add, "Sub": F.sub, "Mul": F.mul, "Div": F.div}[ctx.op](x, y)]


def _unary(fn, float_only=True):
    def apply(ctx):
        x = ctx.tensor(0)
        if float_only and x.dtype.kind != "f":
            raise ctx.refuse(f"needs a floating input, got {x.dtype}")
        return [fn(x)]
    return apply


for _op, _fn in {"Neg": F.neg, "Exp": F.exp, "Log": F.log, "Sqrt": F.sqrt, "Abs": F.abs, "Sigmoid": F.sigmoid,
                 "Tanh": F.tanh, "Reciprocal": lambda x: 1 / x}.items():
    rule(_op, versions=(6, 13))(_unary(_fn))
rule("Relu", versions=(6, 13, 14))(_unary(F.relu))
rule("Sign", versions=(9, 13))(_unary(F.sign))
rule("Softsign", versions=(1, 22))(_unary(lambda x: x / (1 + F.abs(x))))


@rule("LeakyRelu", versions=(6, 16), attrs=("alpha",))
def _leaky_relu(ctx):
    return [F.leaky_relu(ctx.tensor(0), ctx.attr("alpha", 0.01))]  # ONNX's default slope is 0.01


@rule("ThresholdedRelu", versions=(10, 22), attrs=("alpha",))
def _thresholded_relu(ctx):
    x = ctx.tensor(0)
    return [F.where(F.greater(x, ctx.attr("alpha", 1.0)), x, 0.0)]


@rule("HardSigmoid", versions=(6, 22), attrs=("alpha", "beta"))
def _hard_sigmoid(ctx):
    x = ctx.tensor(0)
    return [F.clip(x * ctx.attr("alpha", 0.2) + ctx.attr("beta", 0.5), 0.0, 1.0)]


@rule("HardSwish", versions=(14, 22))
def _hard_swish(ctx):
    x = ctx.tensor(0)
    return [x * F.clip(x * (1 / 6) + 0.5, 0.0, 1.0)]


@rule("Selu", versions=(6, 22), attrs=("alpha", "gamma"))
def _selu(ctx):
    x = ctx.tensor(0)
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    return [F.where(F.greater(x, 0.0), x, (F.exp(x) - 1) * alpha) * gamma]


@rule("Elu", versions=(6, 22), attrs=("alpha",))
def _elu(ctx):
    if not hasattr(F, "elu"):
        raise ctx.refuse("gc.elu is not available in this graphc")
    return [F.elu(ctx.tensor(0), ctx.attr("alpha", 1.0))]


@rule("Softplus", versions=(1, 22))
def _softplus(ctx):
    if not hasattr(F, "softplus"):
        raise ctx.refuse("gc.softplus is not available in this graphc")
    return [F.softplus(ctx.tensor(0))]


@rule("Gelu", versions=(20,), attrs=("approximate",))
def _gelu(ctx):
    if not hasattr(F, "gelu"):
        raise ctx.refuse("gc.gelu is not available in this graphc")
    approximate = ctx.attr("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate not in ("none", "tanh"):
        raise ctx.refuse(f"approximate={approximate!r} (expected 'none' or 'tanh')")
    return [F.gelu(ctx.tensor(0), approximate=approximate)]


@rule("Erf", versions=(9, 13))
def _erf(ctx):
    x = ctx.tensor(0)
    if x.dtype.kind != "f":
        raise ctx.refuse(f"needs a floating input, got {x.dtype}")
    return [F.erf(x)]


@rule("Mish", versions=(18, 22))
def _mish(ctx):
    x = ctx.tensor(0)
    return [x * F.tanh(F.softplus(x))]


@rule("Swish", versions=(24,), attrs=("alpha",))
def _swish(ctx):
    x, alpha = ctx.tensor(0), ctx.attr("alpha", 1.0)
    return [F.silu(x) if alpha == 1.0 else x * F.sigmoid(x * alpha)]


@rule("Pow", versions=(1, 7, 12, 13, 15), attrs=("axis", "broadcast"))
def _pow(ctx):
    x = ctx.tensor(0)
    ctx.inputs[1] = _legacy_broadcast(ctx, ctx.inputs[0], ctx.inputs[1]) if ctx.version < 7 else ctx.inputs[1]
    if x.dtype.kind != "f":
        raise ctx.refuse(f"Pow of {x.dtype} values (graphc computes powers of floats)")
    if ctx.is_static(1) and ctx.inputs[1].size == 1 and not has_sym(ctx.inputs[1]):
        p = ctx.inputs[1]
        out = F.power(x, float(p.reshape(-1)[0]))
        return [F.reshape(out, np.broadcast_shapes(tuple(1 if d is None else d for d in x.shape), p.shape))
                if p.ndim > x.ndim else out]
    y = ctx.tensor(1)
    return [F.pow(x, y if y.dtype == x.dtype else F.cast(y, x.dtype))]


@rule("PRelu", versions=(6, 7, 9, 16))
def _prelu(ctx):
    x, slope = ctx.tensor(0), ctx.tensor(1)
    if ctx.version < 7 and slope.ndim == 1 and slope.shape[0] not in (1, None) and x.ndim > 2:
        # PRelu-6 (PyTorch's old exports): one slope per channel, axis 1
        if slope.shape[0] != x.shape[1]:
            raise ctx.refuse(f"{slope.shape[0]} slopes for {x.shape[1]} channels")
        slope = F.reshape(slope, (-1,) + (1,) * (x.ndim - 2))
    return [F.where(F.less(x, 0.0), x * slope, x)]


@rule("Clip", versions=(6, 11, 12, 13), attrs=("min", "max"), static=(1, 2))
def _clip(ctx):
    x = ctx.tensor(0)
    if ctx.version < 11:
        lo, hi = ctx.attr("min", -np.inf), ctx.attr("max", np.inf)
    else:
        lo = ctx.inputs[1] if ctx.has(1) else None
        hi = ctx.inputs[2] if ctx.has(2) else None
        if not all(v is None or (isinstance(v, np.ndarray) and not has_sym(v)) for v in (lo, hi)):
            out = x  # bounds computed at call time: max then min, as ONNX defines Clip
            if lo is not None:
                out = F.maximum(out, ctx.tensor(1))
            if hi is not None:
                out = F.minimum(out, ctx.tensor(2))
            return [out]
        lo = -np.inf if lo is None else lo.reshape(-1)[0]
        hi = np.inf if hi is None else hi.reshape(-1)[0]
    if x.dtype.kind == "f":
        if lo > hi:  # ONNX: every value becomes max
            return [F.clip(x, hi, hi)]
        return [F.clip(x, None if lo == -np.inf else lo, None if hi == np.inf else hi)]
    out = x
    if lo != -np.inf:
        out = F.maximum(out, constant(np.asarray(lo, x.dtype)))
    if hi != np.inf:
        out = F.minimum(out, constant(np.asarray(hi, x.dtype)))
    return [out]


@rule("Sum", "Max", "Min", "Mean", versions=(6, 8, 12, 13))
def _variadic(ctx):
    xs = [ctx.tensor(i) for i in range(len(ctx.inputs)) if ctx.has(i)]
    if len({x.dtype for x in xs}) > 1:
        raise ctx.refuse(f"operands have different dtypes {[str(x.dtype) for x in xs]}")
    fn = {"Sum": F.add, "Mean": F.add, "Max": F.maximum, "Min": F.minimum}[ctx.op]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    if ctx.op == "Mean":
        if out.dtype.kind != "f":
            raise ctx.refuse(f"Mean of {out.dtype} values")
        out = out / float(len(xs)) if len(xs) > 1 else out
    return [out]


_COMPARE = {"Equal": F.equal, "Less": F.less, "Greater": F.greater, "LessOrEqual": F.less_equal,
            "GreaterOrEqual": F.greater_equal}


@rule("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", versions=(7, 9, 11, 12, 13, 16, 19))
def _compare(ctx):
    a, b = ctx.inputs[:2]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and not (has_sym(a) or has_sym(b)):
        npf = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
               "GreaterOrEqual": np.greater_equal}[ctx.op]
        return [npf(a, b)]
    x, y = ctx.tensor(0), ctx.tensor(1)
    if x.dtype != y.dtype:
        raise ctx.refuse(f"operands have different dtypes {x.dtype} and {y.dtype}")
    return [_COMPARE[ctx.op](x, y)]


@rule("Not", versions=(1,))
def _not(ctx):
    x = ctx.tensor(0)
    return [F.equal(x, constant(np.asarray(False)))]


@rule("Where", versions=(9, 16))
def _where(ctx):
    if ctx.all_static() and not any(has_sym(v) for v in ctx.inputs):
        return [np.where(*ctx.inputs)]
    c, a, b = ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)
    if a.dtype != b.dtype:
        raise ctx.refuse(f"branches have different dtypes {a.dtype} and {b.dtype}")
    return [F.where(c, a, b)]


# -- matrix products ------------------------------------------------------------------------------------
@rule("Gemm", versions=(6, 7, 9, 11, 13), attrs=("alpha", "beta", "transA", "transB", "broadcast"))
def _gemm(ctx):
    a, b = ctx.tensor(0), ctx.tensor(1)
    if a.ndim != 2 or b.ndim != 2:
        raise ctx.refuse(f"Gemm needs 2-d A and B, got {a.ndim}-d and {b.ndim}-d")
    if a.dtype.kind != "f" or a.dtype != b.dtype:
        raise ctx.refuse(f"Gemm of {a.dtype} and {b.dtype} (graphc multiplies floating matrices)")
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    y = F.matmul(a, b, trans_a=bool(ctx.attr("transA", 0)), trans_b=bool(ctx.attr("transB", 0)))
    if alpha != 1.0:
        y = y * alpha
    if ctx.has(2) and beta != 0.0:
        c = ctx.tensor(2)
        if ctx.version < 7 and not ctx.attr("broadcast", 0) and c.shape != y.shape:
            raise ctx.refuse(f"C {c.shape} must be {y.shape} without broadcast=1")
        y = y + (c if beta == 1.0 else c * beta)
    return [y]


@rule("MatMul", versions=(1, 9, 13))
def _matmul(ctx):
    a, b = ctx.tensor(0), ctx.tensor(1)
    if a.dtype.kind != "f" or a.dtype != b.dtype:
        raise ctx.refuse(f"MatMul of {a.dtype} and {b.dtype} (graphc multiplies floating matrices)")
    if a.ndim <= 2 and b.ndim <= 2:
        return [F.matmul(a, b)]
    if b.ndim <= 2 and a.ndim > 2:  # (..., M, K) @ (K, N): one GEMM over the stacked rows
        lead = ctx.sym_shape(0)[:-1]
        k = a.shape[-1]
        y = F.matmul(F.reshape(a, (-1, k)), b)
        return [_reshape_to(ctx, y, lead + ([b.shape[-1]] if b.ndim == 2 else []))]
    raise ctx.refuse(f"batched MatMul of {a.ndim}-d by {b.ndim}-d operands (graphc multiplies 1-d and 2-d "
                     f"matrices)")


# -- softmax --------------------------------------------------------------------------------------------
@rule("Softmax", "LogSoftmax", versions=(1, 11, 13), attrs=("axis",))
def _softmax(ctx):
    x = ctx.tensor(0)
    if x.dtype.kind != "f":
        raise ctx.refuse(f"needs a floating input, got {x.dtype}")
    fn = F.log_softmax if ctx.op == "LogSoftmax" else F.softmax
    if ctx.version >= 13:
        return [fn(x, _norm_axis(ctx, ctx.attr("axis", -1), x.ndim))]
    # before opset 13: the input is coerced to 2-d at `axis` and normalised over the trailing block
    axis = _norm_axis(ctx, ctx.attr("axis", 1), x.ndim)
    if axis == x.ndim - 1:
        return [fn(x, -1)]
    dims = ctx.sym_shape(0)
    flat = _reshape_to(ctx, x, [prod(dims[:axis]), prod(dims[axis:])])
    return [_reshape_to(ctx, fn(flat, 1), dims)]


# -- reductions -------------------------------------------------------------------------------------------
@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", versions=(1, 11, 12, 13, 18, 20),
      attrs=("axes", "keepdims", "noop_with_empty_axes"), static=(1,))
def _reduce(ctx):
    x = ctx.tensor(0)
    attr_until = 13 if ctx.op == "ReduceSum" else 18
    axes = _axes(ctx, attr_until)
    keep = bool(ctx.attr("keepdims", 1))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    axes = tuple(sorted({_norm_axis(ctx, a, x.ndim, "axes") for a in axes}))
    if ctx.op == "ReduceMean":
        if x.dtype.kind != "f":
            raise ctx.refuse(f"ReduceMean of {x.dtype} values")
        return [F.mean(x, axes, keep)]
    if ctx.op == "ReduceSum":
        if x.dtype == np.bool_:
            raise ctx.refuse("ReduceSum of bool values")
        return [F.sum(x, axes, keep)]
    if any(x.shape[a] == 0 for a in axes):  # ONNX: the identity of max (min) over no elements
        shape = tuple(1 if k in axes else d for k, d in enumerate(x.shape) if keep or k not in axes)
        if any(d is None for d in shape):
            raise ctx.refuse("max/min over an empty axis of a tensor with sizes known only at call time")
        if x.dtype == np.bool_:
            fill = ctx.op == "ReduceMin"
        elif x.dtype.kind == "f":
            fill = -np.inf if ctx.op == "ReduceMax" else np.inf
        else:
            info = np.iinfo(x.dtype)
            fill = info.min if ctx.op == "ReduceMax" else info.max
        return [np.full(shape, fill, x.dtype)]
    if ctx.op == "ReduceMax":
        return [F.max(x, axes, keep)]
    if x.dtype == np.bool_:  # min of booleans: not max(not x)
        false = constant(np.asarray(False))
        return [F.equal(F.max(F.equal(x, false), axes, keep), false)]
    if x.dtype.kind != "f":
        raise ctx.refuse(f"ReduceMin of {x.dtype} values (computed as -max(-x) on floats)")
    return [-F.max(-x, axes, keep)]


@rule("ArgMax", versions=(1, 11, 12, 13), attrs=("axis", "keepdims", "select_last_index"))
def _argmax(ctx):
    x = ctx.tensor(0)
    axis = _norm_axis(ctx, ctx.attr("axis", 0), x.ndim)
    if ctx.attr("select_last_index", 0):  # the last maximum: the first one of the reversed axis
        if x.shape[axis] is None:
            raise ctx.refuse("select_last_index=1 on an axis whose size is known only at call time")
        index = [(None, None, 1)] * x.ndim
        index[axis] = (None, None, -1)
        out = (x.shape[axis] - 1) - F.argmax(F.slice(x, index), axis)
    else:
        out = F.argmax(x, axis)
    return [F.expand_dims(out, (axis,)) if ctx.attr("keepdims", 1) else out]


@rule("GlobalAveragePool", "GlobalMaxPool", versions=(1, 22))
def _global_pool(ctx):
    x = ctx.tensor(0)
    if x.dtype.kind != "f" or x.ndim < 3:
        raise ctx.refuse(f"needs a floating (N, C, ...) input, got {x.ndim}-d {x.dtype}")
    axes = tuple(range(2, x.ndim))
    return [F.mean(x, axes, True) if ctx.op == "GlobalAveragePool" else F.max(x, axes, True)]


# -- dropout, batch norm, LRN ----------------------------------------------------------------------------
@rule("Dropout", versions=(6, 7, 10, 12, 13, 22), attrs=("ratio", "seed", "is_test"), static=(1, 2))
def _dropout(ctx):
    if ctx.version < 7 and not ctx.attr("is_test", 0):
        raise ctx.refuse("is_test=0 (training dropout): graphc imports models for inference")
    if ctx.has(2) and ctx.node.input[2] in ctx.graph.graph_inputs:
        raise ctx.refuse("training_mode is a graph input: graphc imports Dropout for inference (the identity)")
    if ctx.has(2):
        training = ctx.static(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            raise ctx.refuse("training_mode=True: graphc imports models for inference (Dropout is the identity)")
    x = ctx.inputs[0]
    outs = [x]
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        t = ctx.tensor(0)
        outs.append(F.ones_like(t, dtype=np.bool_))
    return outs


@rule("BatchNormalization", versions=(6, 7, 9, 14, 15),
      attrs=("epsilon", "momentum", "spatial", "training_mode", "is_test"))
def _batch_norm(ctx):
    if ctx.version < 7 and not ctx.attr("is_test", 0):
        raise ctx.refuse("is_test=0 (training mode): graphc imports batch normalisation for inference")
    if ctx.attr("training_mode", 0):
        raise ctx.refuse("training_mode=1 (graphc imports batch normalisation for inference)")
    if not ctx.attr("spatial", 1):
        raise ctx.refuse("spatial=0 (per-activation statistics)")
    if any(o for o in ctx.node.output[1:]):
        raise ctx.refuse("running statistics outputs are requested (training mode)")
    x = ctx.tensor(0)
    if x.dtype.kind != "f" or x.ndim < 2:
        raise ctx.refuse(f"needs a floating (N, C, ...) input, got {x.ndim}-d {x.dtype}")
    scale, bias, mean, var = (ctx.tensor(i) for i in range(1, 5))
    shape = (-1,) + (1,) * (x.ndim - 2)
    c = [t if t.dtype == x.dtype else F.cast(t, x.dtype) for t in (scale, bias, mean, var)]
    scale, bias, mean, var = (F.reshape(t, shape) for t in c)
    # inference batch norm is a per-channel affine map: (x - mean) * (scale / sqrt(var + eps)) + bias
    factor = scale / F.sqrt(var + ctx.attr("epsilon", 1e-5))
    return [(x - mean) * factor + bias]


@rule("LRN", versions=(1, 13), attrs=("alpha", "beta", "bias", "size"))
def _lrn(ctx):
    x = ctx.tensor(0)
    if x.ndim != 4 or x.dtype.kind != "f" or any(d is None for d in x.shape[1:]):
        raise ctx.refuse(f"needs a floating (N, C, H, W) input with known C, H, W; got {tuple(x.shape)} {x.dtype}")
    size = int(ctx.attr("size"))
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    _, c, h, w = x.shape
    sq = F.reshape(x * x, (-1, 1, c, h * w))
    # the channel window [c - floor((size-1)/2), c + ceil((size-1)/2)], zero outside: a mean over it
    sq = F.pad(sq, [(0, 0), (0, 0), ((size - 1) // 2, size - 1 - (size - 1) // 2), (0, 0)])
    window_mean = F.reshape(F.avg_pool2d(sq, (size, 1), stride=1), (-1, c, h, w))
    return [x * F.power(window_mean * alpha + bias, -beta)]


# -- convolution and pooling ---------------------------------------------------------------------------
def _spatial(ctx, x, kernel):
    """(pads_begin, pads_end, strides) for a 1-d/2-d window op, from pads/auto_pad/strides."""
    nd = len(kernel)
    strides = list(ctx.attr("strides", [1] * nd))
    dilations = list(ctx.attr("dilations", [1] * nd))
    if any(d != 1 for d in dilations):
        raise ctx.refuse(f"dilations={dilations} (graphc's convolutions and pooling have dilation 1)")
    if len(strides) != nd or min(strides) < 1:
        raise ctx.refuse(f"strides={strides} for a {nd}-d window")
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd or min(pads) < 0:
            raise ctx.refuse(f"pads={pads} for a {nd}-d window")
        return pads[:nd], pads[nd:], strides
    if auto_pad == "VALID":
        return [0] * nd, [0] * nd, strides
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.refuse(f"auto_pad={auto_pad!r}")
    sizes = x.shape[2:]
    if any(d is None for d in sizes):
        raise ctx.refuse(f"auto_pad={auto_pad} on spatial sizes known only at call time")
    begin, end = [], []
    for d, k, s in zip(sizes, kernel, strides):
        total = max((-(-d // s) - 1) * s + k - d, 0)
        small = total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin, end, strides


def _to_2d(ctx, x, kernel, begin, end, strides):
    """1-d windows run as 2-d windows of height 1."""
    if len(kernel) == 2:
        return x, kernel, begin, end, strides, False
    if len(kernel) != 1:
        raise ctx.refuse(f"{len(kernel)}-d windows (graphc convolves and pools 1-d and 2-d inputs)")
    return F.expand_dims(x, (2,)), [1] + kernel, [0] + begin, [0] + end, [1] + strides, True


@rule("Conv", versions=(1, 11, 22), attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
def _conv(ctx):
    x, w = ctx.tensor(0), ctx.tensor(1)
    b = ctx.tensor(2) if ctx.has(2) else None
    if x.dtype.kind != "f" or w.dtype != x.dtype:
        raise ctx.refuse(f"Conv of {x.dtype} input and {w.dtype} weights")
    kernel = list(w.shape[2:])
    if ctx.attr("kernel_shape") is not None and list(ctx.attr("kernel_shape")) != kernel:
        raise ctx.refuse(f"kernel_shape={list(ctx.attr('kernel_shape'))} differs from the weights' {kernel}")
    if x.ndim != w.ndim or x.ndim not in (3, 4):
        raise ctx.refuse(f"{x.ndim - 2}-d convolution (graphc convolves 1-d and 2-d inputs)")
    begin, end, strides = _spatial(ctx, x, kernel)
    x, kernel, begin, end, strides, squeeze = _to_2d(ctx, x, kernel, begin, end, strides)
    if squeeze:
        w = F.expand_dims(w, (2,))
    group = int(ctx.attr("group", 1))
    if x.shape[1] is not None and w.shape[1] is not None and x.shape[1] != w.shape[1] * group:
        raise ctx.refuse(f"{x.shape[1]} input channels, weights for {group} group(s) of {w.shape[1]}")
    x, padding = _pad_for_window(x, begin, end, 0.0, limit=None)
    y = F.grouped_conv2d(x, w, b, stride=tuple(strides), padding=padding, groups=group)
    return [F.squeeze(y, (2,)) if squeeze else y]


def _pad_for_window(x, begin, end, fill, limit):
    """Symmetric padding the window op does itself, or an explicit pad op (then padding 0)."""
    if begin == end and (limit is None or all(p <= lim for p, lim in zip(begin, limit))):
        return x, tuple(begin)
    return F.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end)), fill), (0, 0)


def _pool_out(d, k, s, b, e, ceil):
    n = d + b + e - k
    return (-(-n // s) if ceil else n // s) + 1


@rule("MaxPool", "AveragePool", versions=(1, 7, 8, 10, 11, 12, 19, 22),
      attrs=("auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "storage_order",
             "strides"))
def _pool(ctx):
    x = ctx.tensor(0)
    if x.dtype.kind != "f":
        raise ctx.refuse(f"pooling of {x.dtype} values")
    kernel = list(ctx.attr("kernel_shape"))
    if x.ndim != len(kernel) + 2:
        raise ctx.refuse(f"a {len(kernel)}-d kernel on a {x.ndim}-d input")
    begin, end, strides = _spatial(ctx, x, kernel)
    if ctx.attr("ceil_mode", 0):
        sizes = x.shape[2:]
        if any(d is None for d in sizes) or any(
                _pool_out(d, k, s, b, e, True) != _pool_out(d, k, s, b, e, False)
                for d, k, s, b, e in zip(sizes, kernel, strides, begin, end)):
            raise ctx.refuse("ceil_mode=1 where it changes the output size (graphc pools with floor)")
    x, kernel, begin, end, strides, squeeze = _to_2d(ctx, x, kernel, begin, end, strides)
    if ctx.op == "MaxPool":
        x, padding = _pad_for_window(x, begin, end, -np.inf, limit=[k // 2 for k in kernel])
        y = F.max_pool2d(x, tuple(kernel), tuple(strides), padding)
    elif ctx.attr("count_include_pad", 0) or not any(begin + end):
        x, padding = _pad_for_window(x, begin, end, 0.0, limit=[k // 2 for k in kernel])
        y = F.avg_pool2d(x, tuple(kernel), tuple(strides), padding)
    else:  # the mean over the window's elements inside the input (ONNX's default)
        sizes = x.shape[2:]
        if any(d is None for d in sizes):
            raise ctx.refuse("average pooling without the padding on spatial sizes known only at call time")
        ones = np.pad(np.ones((1, 1) + tuple(sizes)), [(0, 0), (0, 0)] + list(zip(begin, end)))
        win = np.lib.stride_tricks.sliding_window_view(ones, tuple(kernel), axis=(2, 3))[:, :, ::strides[0],
                                                                                        ::strides[1]]
        scale = (kernel[0] * kernel[1]) / win.sum(axis=(4, 5))
        y = F.avg_pool2d(F.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end))), tuple(kernel), tuple(strides), 0)
        y = y * constant(scale.astype(x.dtype))
    return [F.squeeze(y, (2,)) if squeeze else y]


@rule("Pad", versions=(2, 11, 13, 18, 19, 21, 23, 24, 25), attrs=("mode", "pads", "value"), static=(1, 3))
def _pad(ctx):
    mode = ctx.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ctx.refuse(f"mode={mode!r} (graphc pads with a constant)")
    v = ctx.inputs[0]
    ndim = v.ndim
    if ctx.version < 11:
        pads, value = list(ctx.attr("pads")), ctx.attr("value", 0.0)
        axes = list(range(ndim))
    else:
        pads = ctx.ints(1, "pads")
        value = 0
        if ctx.has(2):
            value = ctx.inputs[2] if isinstance(ctx.inputs[2], Tensor) and ctx.node.input[2] in \
                ctx.graph.graph_inputs else ctx.static(2, "constant_value").reshape(-1)[0]
        axes = ctx.ints(3, "axes") if ctx.has(3) else list(range(ndim))
    axes = [_norm_axis(ctx, a, ndim, "axes") for a in axes]
    if len(pads) != 2 * len(axes):
        raise ctx.refuse(f"pads {pads} for axes {axes}")
    full = [(0, 0)] * ndim
    for k, a in enumerate(axes):
        full[a] = (pads[k], pads[k + len(axes)])
    grow = [(max(b, 0), max(e, 0)) for b, e in full]
    crop = [(-min(b, 0), -min(e, 0)) for b, e in full]
    if isinstance(v, np.ndarray):
        out = np.pad(v, grow, constant_values=value)
    elif isinstance(value, Tensor):  # fill computed at call time: pick it outside the input's region
        if any(d is None for d in v.shape):
            raise ctx.refuse("a computed fill value on sizes known only at call time")
        inside = np.pad(np.ones(v.shape, np.bool_), grow)
        out = F.where(constant(inside), F.pad(v, grow), F.reshape(value, ()))
    else:
        if value != 0 and v.dtype.kind != "f":
            raise ctx.refuse(f"a non-zero fill value for {v.dtype} values")
        out = F.pad(v, grow, float(value))
    if any(b or e for b, e in crop):
        index = [(b, (-e if e else None), 1) for b, e in crop]
        out = _apply_slice(ctx, out, index)
    return [out]



@rule("Tile", versions=(6, 13), static=(1,))
def _tile(ctx):
    v = ctx.inputs[0]
    repeats = ctx.ints(1, "repeats")
    if len(repeats) != v.ndim or min(repeats, default=1) < 0:
        raise ctx.refuse(f"repeats {repeats} for a {v.ndim}-d input")
    if isinstance(v, np.ndarray):
        return [np.tile(v, repeats)]
    out = v
    for axis, r in enumerate(repeats):
        if r == 0:
            raise ctx.refuse("a repeat count of 0")
        if r > 1:
            out = F.concatenate([out] * r, axis)
    return [out]


@rule("InstanceNormalization", versions=(1, 6, 22), attrs=("epsilon",))
def _instance_norm(ctx):
    x, scale, bias = ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)
    if x.dtype.kind != "f" or x.ndim < 3:
        raise ctx.refuse(f"needs a floating (N, C, ...) input, got {x.ndim}-d {x.dtype}")
    axes = tuple(range(2, x.ndim))
    shape = (-1,) + (1,) * (x.ndim - 2)
    centred = x - F.mean(x, axes, True)
    var = F.mean(centred * centred, axes, True)
    return [centred / F.sqrt(var + ctx.attr("epsilon", 1e-5)) * F.reshape(scale, shape) + F.reshape(bias, shape)]
