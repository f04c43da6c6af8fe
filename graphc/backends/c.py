"""The C backend: a Plan lowered once to instructions for the C interpreter (csrc/exec.c).

Lowering (once per Plan, in `make_runner`):
  * plan_arena places every intermediate in one per-call byte arena (liveness reuse, in-place
    elementwise ops, reshape-like ops as aliases). Feeds, parameters and the outputs are
    *external*: outputs are written straight into fresh arrays, never copied.
  * Each step with a C kernel for its op, dtypes and shapes becomes one or a few instructions
    in a flat int64 array (format in csrc/exec.h); float attributes go to a double array,
    constants to a byte pool. The rules are `LOWERINGS` below, picked by each OpDef's `lowering`.
    C codes are found by name, never by a table here: an elementwise kernel K of the registry
    (`OpDef.kernel(attrs)`) is GC_U_K / GC_B_K / GC_F_K, an activation A is GC_ACT_A, the opcode
    of a one-op kernel is GC_OP_<OP> (all upper-cased; csrc/elementwise.def and csrc/exec.h).
  * Steps without a C lowering stay NumPy steps: the code is cut into segments around them and
    they read and write the arena through ndarray views at the planned offsets.

Per call: allocate the arena and the outputs, fill the pointer table, call gc_exec once per
segment (once in all for a fully lowered plan), turn a non-zero status into a GraphError naming
the op and its source line.
"""
from __future__ import annotations

import functools
import math
import sys
import time
from typing import Optional

import numpy as np

from .. import _cgraphc
from ..compiler.schedule import ALIGN, Plan, nbytes, plan_arena
from ..ir.errors import GraphError, node_error
from ..ops import REGISTRY, memory_traits
from . import openblas
from .numpy_backend import run_node

ffi, lib = _cgraphc.ffi, _cgraphc.lib

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOATS = (F32, F64)
DTYPE_CODE = {F32: lib.GC_DT_F32, F64: lib.GC_DT_F64, np.dtype(np.int32): lib.GC_DT_I32,
              np.dtype(np.int64): lib.GC_DT_I64, np.dtype(np.bool_): lib.GC_DT_BOOL}
MAX_NDIM = 8  # gc_binary and the strided copy take at most 8 dims after collapsing



@functools.cache
def c_code(prefix: str, name: str) -> Optional[int]:
    """The C code named prefix + NAME, e.g. c_code("GC_U_", "gelu_tanh") -> lib.GC_U_GELU_TANH;
    None when the C library has none (that step then runs in NumPy)."""
    return getattr(lib, prefix + name.upper(), None)


def _kernel(node) -> tuple:
    """(kernel name, float parameter) of an elementwise node, from its OpDef."""
    opdef = REGISTRY[node.op]
    return opdef.kernel(node.attrs), opdef.kernel_value(node.attrs)


_NO_REF = -1
_EMPTY_ARENA = np.zeros(ALIGN, np.uint8)  # the arena of plans whose intermediates hold no bytes


def _prod(shape) -> int:
    return math.prod(shape)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _contiguous_strides(shape) -> list:
    strides, acc = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = acc
        acc *= shape[i]
    return strides


def _collapse(shape, *stride_lists):
    """Drop size-1 dims and merge neighbours that are contiguous for every operand.

    Returns (shape, [strides per operand]); dims i, i+1 merge when each operand's stride[i]
    equals stride[i+1] * shape[i+1] (true for broadcast dims with stride 0 on both)."""
    dims = [(d, [s[i] for s in stride_lists]) for i, d in enumerate(shape) if d != 1]
    out: list = []
    for d, st in dims:
        if out:
            pd, pst = out[-1]
            if all(p == q * d for p, q in zip(pst, st)):
                out[-1] = (pd * d, st)
                continue
        out.append((d, st))
    return [d for d, _ in out], [[st[k] for _, st in out] for k in range(len(stride_lists))]


def _broadcast_strides(in_shape, out_shape) -> list:
    """Element strides of a contiguous `in_shape` array read as `out_shape` (0 on broadcast dims)."""
    lead = len(out_shape) - len(in_shape)
    own = _contiguous_strides(in_shape)
    return [0 if i < lead or in_shape[i - lead] == 1 else own[i - lead] for i in range(len(out_shape))]


class _Lowering:
    """Builds the instruction words of one Plan; `ref(slot)` encodes where a value lives."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.words: list = []
        self.fconst: list = [0.0]
        self.scratch_need = 0
        self.loc: dict = {}  # slot -> (kind, value) with kind a gc_ref_kind
        self.colsum: dict = {}  # GEMM step -> slot of the bias gradient it also writes (_colsum_hosts)
        self.merged: dict = {}  # step -> the step whose instruction also computes it (loss and gradient)
        self.last: tuple = (-1, 0)  # (step, word index) of the last instruction emitted

    # -- operands ----------------------------------------------------------------------------
    def ref(self, slot: int) -> int:
        kind, value = self.loc[slot]
        return (value << 2) | kind

    def fidx(self, value) -> int:
        self.fconst.append(float(value))
        return len(self.fconst) - 1

    def emit(self, op: int, step: int, dtype, *args) -> None:
        code = dtype if isinstance(dtype, int) else DTYPE_CODE[np.dtype(dtype)]
        self.last = (step, len(self.words))
        # ("scratch", offset) operands stay tuples until the arena size is known (_resolve_scratch)
        self.words += [int(op), 4 + len(args), step, int(code)] + [a if isinstance(a, tuple) else int(a)
                                                                   for a in args]


# -- lowering rules: (lowering, step index, step) -> True when emitted, False for NumPy -------------
def _floats(node, inputs=None) -> bool:
    """The node and its (first k) inputs share one float dtype that the kernels cover."""
    ins = node.inputs if inputs is None else node.inputs[:inputs]
    return node.dtype in FLOATS and all(i.dtype == node.dtype for i in ins)


def _gemm(lw, k, step):
    node = step.node
    if not _floats(node):
        return False
    a, b = node.inputs[:2]
    ta, tb = bool(node.attrs.get("trans_a")), bool(node.attrs.get("trans_b"))
    if a.ndim == 2:
        r, c = a.shape
        m, kk, lda = (c, r, c) if ta else (r, c, c)
    else:
        m, kk, lda = 1, a.shape[0], a.shape[0]
    if b.ndim == 2:
        r, c = b.shape
        n, ldb = (r, c) if tb else (c, c)
    else:
        n, ldb = 1, 1
    if k in lw.colsum:  # a plain matmul that also computes a bias gradient
        return _gemm_ex(lw, k, step)
    ins = step.inputs
    bias = lw.ref(ins[2]) if len(ins) == 3 else _NO_REF
    act = c_code("GC_ACT_", node.attrs.get("act", "identity"))
    if act is None:
        return False
    before = lw.last
    lw.emit(lib.GC_OP_GEMM, k, node.dtype, int(ta), int(tb), m, n, kk, max(lda, 1), max(ldb, 1), max(n, 1),
            lw.ref(ins[0]), lw.ref(ins[1]), lw.ref(step.out), bias, act, lw.fidx(node.attrs.get("alpha", 0.0)))
    _side_by_side(lw, k, before)
    return True


def _gemm_ex(lw, k, step):
    """matmul_update (C = x + alpha op(A) op(B)), matmul_act_grad (C = op(A) op(B) * act'(y)), and
    a plain 2-d matmul that also owes a bias gradient (_colsum_hosts): one GEMM whose epilogue reads
    the third input, contiguous like the output (gc_sgemm_ex)."""
    if not _gemm_ex_lowers(step.node):
        return False
    node = step.node
    a, b = node.inputs[:2]
    ta, tb = bool(node.attrs["trans_a"]), bool(node.attrs["trans_b"])
    m, n = node.shape
    kk = a.shape[0] if ta else a.shape[1]
    addend = gate = None
    alpha, gate_act, gate_param = 1.0, 0, 0.0
    if node.op == "matmul_update":
        addend, alpha = step.inputs[2], node.attrs["alpha"]
    elif node.op == "matmul_act_grad":
        gate, gate_act, gate_param = step.inputs[2], c_code("GC_ACT_", node.attrs["act"]), node.attrs["alpha"]
    colsum = lw.colsum.get(k)
    if m * n == 0:
        return colsum is None
    before = lw.last
    lw.emit(lib.GC_OP_GEMM_EX, k, node.dtype, int(ta), int(tb), m, n, kk, max(a.shape[1], 1), max(b.shape[1], 1),
            max(n, 1), lw.ref(step.inputs[0]), lw.ref(step.inputs[1]), lw.ref(step.out),
            _NO_REF if addend is None else lw.ref(addend), _NO_REF if gate is None else lw.ref(gate),
            lw.fidx(alpha), gate_act, lw.fidx(gate_param), _NO_REF if colsum is None else lw.ref(colsum))
    _side_by_side(lw, k, before)
    return True


# Both GEMMs of a side-by-side pair have at least this many multiply-adds, and the larger at most
# twice the smaller's (unequal halves would leave a thread idle). The floor is about where a GEMM
# uses the pool on its own (thin kernels from 2^18 multiply-adds, packed ones from 2^20), so a
# pair rarely wakes a worker its GEMMs would have left asleep. In the W-mlp backward two pairs
# qualify: the middle layer's input-gradient and weight-update GEMMs (256 x 512 x 256 and
# 512 x 256 x 256: the step took 1.3-1.9 % less time, and stand-alone the two took 5 % longer one
# after the other, each split over both threads) and the 10-class layer's (256 x 256 x 10 and
# 256 x 10 x 256: another 0.8 % on average over four runs, from -0.1 to 2 %: within this VM's
# noise); bench/ab_trees.py, 15-21 rounds, both orders, 2-core Xeon VM, 2026-12-02.
SIDE_BY_SIDE_MIN_FMAS = 1 << 19
_GEMM_OPS = (lib.GC_OP_GEMM, lib.GC_OP_GEMM_EX)  # operands start ta tb M N K
_CONV_OPS = (lib.GC_OP_CONV2D, lib.GC_OP_CONV2D_INPUT_GRAD, lib.GC_OP_CONV2D_WEIGHT_GRAD)  # N C H W O KH KW sh sw ph pw


def _side_by_side(lw, k, before) -> None:
    """Turn the GEMM instructions of steps k - 1 and k (the one just emitted; `before` is lw.last
    ahead of it) into one GC_OP_SIDE_BY_SIDE when they are independent and about as large: each
    then runs on one thread at the same time, instead of both threads splitting one GEMM and then
    the other (no barriers, no A packed twice). Independent: neither reads what the other writes
    (its output, and the bias gradient a GEMM may also write) and the two write different bytes;
    with the arena's liveness reuse, step k's output may have been given a buffer that step k - 1
    reads for the last time, which _overlap sees."""
    (prev_step, at), (_, here) = before, lw.last
    words = lw.words
    if prev_step != k - 1 or k == 0 or words[at] not in _GEMM_OPS or words[here] not in _GEMM_OPS:
        return
    small, large = sorted(words[i + 6] * words[i + 7] * words[i + 8] for i in (at, here))
    if small < SIDE_BY_SIDE_MIN_FMAS or large > 2 * small:
        return
    steps = lw.plan.steps

    def writes(j) -> list:
        return [steps[j].out] + ([lw.colsum[j]] if j in lw.colsum else [])

    for reader, written in ((k - 1, writes(k)), (k, writes(k - 1))):
        if any(_overlap(lw, i, o) for i in steps[reader].inputs for o in written):
            return
    if any(_overlap(lw, a, b) for a in writes(k - 1) for b in writes(k)):
        return
    pair = words[at:]
    words[at:] = [lib.GC_OP_SIDE_BY_SIDE, 4 + len(pair), k - 1, 0] + pair
    lw.last = (k - 1, at)


def _gemm_ex_lowers(node) -> bool:
    """_gemm_ex emits node: float 2-d operands and, for matmul_act_grad, a gate it knows."""
    from ..ops.fused import GATE_ACTS
    if not _floats(node) or any(i.ndim != 2 for i in node.inputs[:2]) or node.ndim != 2:
        return False
    if node.op == "matmul":
        return len(node.inputs) == 2
    if node.op == "matmul_update":
        return node.inputs[2].ndim == 2
    return (node.op == "matmul_act_grad" and node.inputs[2].ndim == 2 and node.attrs["act"] in GATE_ACTS
            and c_code("GC_ACT_", node.attrs["act"]) is not None)


def _colsum_hosts(plan: Plan, arena) -> dict:
    """{GEMM step: sum_to step} for the bias gradients a later GEMM computes while it packs B.

    The backward pass of x @ W + b reads dZ twice: dW = x^T @ dZ and db = sum_to(dZ, b), the
    column sums of dZ. gc_sgemm_ex sums the columns of op(B) = dZ as it packs them, so the sum_to
    step s is dropped and its output written by the GEMM step h > s. That is safe when
      - h reads the same dZ as its B (not transposed) and lowers to GC_OP_GEMM_EX;
      - no step between s and h reads the sum (or a view of it): it is written later than planned;
      - a step after h reads it, or it is an output, so the arena holds its buffer from step s
        until after h (the planner gave it to no other value in between);
      - dZ is live up to h anyway (h reads it), so the sum reads what sum_to would have read."""
    steps = plan.steps
    root = getattr(arena, "root", {})
    outputs = set(plan.outputs)
    hosts: dict = {}
    taken: set = set()
    for s, st in enumerate(steps):
        node = st.node
        if node.op != "sum_to" or node.dtype not in FLOATS:
            continue
        g, like = node.inputs
        if g.ndim != 2 or g.dtype != node.dtype or like.shape not in ((g.shape[1],), (1, g.shape[1])):
            continue
        src = root.get(st.inputs[0], st.inputs[0])
        readers = [t for t in range(s + 1, len(steps))
                   if any(root.get(i, i) == st.out for i in steps[t].inputs)]
        for h in range(s + 1, len(steps)):
            host = steps[h]
            if readers and readers[0] <= h:
                break
            if (h in taken or REGISTRY[host.node.op].lowering not in ("gemm", "gemm_ex")
                    or len(host.inputs) < 2 or root.get(host.inputs[1], host.inputs[1]) != src
                    or host.node.attrs.get("trans_b") or host.node.dtype != node.dtype
                    or not _gemm_ex_lowers(host.node) or 0 in host.node.shape):
                continue
            if readers or st.out in outputs:
                hosts[h] = s
                taken.add(h)
            break
    return hosts


def _unary(lw, k, step):
    node = step.node
    if not _floats(node):
        return False
    kernel, param = _kernel(node)
    op = c_code("GC_U_", kernel)
    if op is None:
        return False
    if _prod(node.shape):
        lw.emit(lib.GC_OP_UNARY, k, node.dtype, op, _prod(node.shape), lw.ref(step.inputs[0]), lw.ref(step.out),
                lw.fidx(param))
    return True


def _act_grad(lw, k, step):
    node = step.node
    y, g = node.inputs
    act = c_code("GC_ACT_", node.attrs["act"])
    if not _floats(node) or y.shape != g.shape or act is None:
        return False
    if _prod(node.shape):
        lw.emit(lib.GC_OP_ACT_BWD, k, node.dtype, act, _prod(node.shape), lw.ref(step.inputs[0]),
                lw.ref(step.inputs[1]), lw.ref(step.out), lw.fidx(_kernel(node)[1]))
    return True


def _binary(lw, k, step):
    node = step.node
    op = c_code("GC_B_", _kernel(node)[0])
    if not _floats(node) or op is None:
        return False
    a, b = node.inputs
    shape = node.shape
    if not _prod(shape):
        return True
    dims, (sa, sb) = _collapse(shape, _broadcast_strides(a.shape, shape), _broadcast_strides(b.shape, shape))
    if len(dims) > MAX_NDIM:
        return False
    lw.emit(lib.GC_OP_BINARY, k, node.dtype, op, len(dims), lw.ref(step.inputs[0]),
            lw.ref(step.inputs[1]), lw.ref(step.out), *dims, *sa, *sb)
    return True


def _emit_copy(lw, k, elem_bytes, shape, strides, src_ref, dst_ref):
    """dst (contiguous, `shape`) = the elements of src read with `strides`; False if too many dims."""
    dims, (st,) = _collapse(shape, strides)
    if len(dims) > MAX_NDIM:
        return False
    lw.emit(lib.GC_OP_COPY, k, lib.GC_DT_BOOL, elem_bytes, len(dims), src_ref, dst_ref, *dims, *st)
    return True


def _emit_reduce(lw, k, op, dtype, in_shape, axes, src_ref, dst_ref):
    """Reduce over `axes` into a contiguous result (keepdims layout): one gc_reduce per group of
    adjacent reduced axes, innermost group first, through the arena's scratch area."""
    total = _prod(in_shape)
    out_total = _prod([d for i, d in enumerate(in_shape) if i not in axes])
    if out_total == 0:
        return True
    if total == 0:  # an empty sum is 0; an empty max is an error NumPy reports
        if op == lib.GC_R_MAX:
            return False
        lw.emit(lib.GC_OP_FILL, k, dtype, out_total, dst_ref, lw.fidx(0.0))
        return True
    groups: list = []  # [size, reduced] with size-1 dims dropped and like neighbours merged
    for i, d in enumerate(in_shape):
        if d == 1:
            continue
        red = i in axes
        if groups and groups[-1][1] == red:
            groups[-1][0] *= d
        else:
            groups.append([d, red])
    if not any(red for _, red in groups):  # only size-1 axes reduced: a plain copy
        return _emit_copy(lw, k, dtype.itemsize, [total], [1], src_ref, dst_ref)
    passes = [i for i in range(len(groups) - 1, -1, -1) if groups[i][1]]
    sizes, remaining = [], total
    for g in passes:
        remaining //= groups[g][0]
        sizes.append(remaining)
    offsets = [0, _aligned(sizes[0] * dtype.itemsize)] if len(passes) > 1 else []
    if len(passes) > 1:
        lw.scratch_need = max(lw.scratch_need, offsets[1] + _aligned(sizes[1] * dtype.itemsize))
    src = src_ref
    for p, g in enumerate(passes):
        outer = _prod([s for s, _ in groups[:g]])
        inner = _prod([s for s, _ in groups[g + 1:]])
        dst = dst_ref if p == len(passes) - 1 else ("scratch", offsets[p % 2])
        lw.emit(lib.GC_OP_REDUCE, k, dtype, op, outer, groups[g][0], inner, src, dst)
        src = dst
        del groups[g]
    return True


def _reduce(lw, k, step):
    node = step.node
    if not _floats(node):
        return False
    op = c_code("GC_R_", node.op)
    if op is None:
        return False
    return _emit_reduce(lw, k, op, node.dtype, node.inputs[0].shape, set(node.attrs["axes"]),
                        lw.ref(step.inputs[0]), lw.ref(step.out))


def _sum_to(lw, k, step):
    node = step.node
    g, like = node.inputs
    if node.dtype not in FLOATS or g.dtype != node.dtype:
        return False
    shape = like.shape
    lead = g.ndim - len(shape)
    axes = set(range(lead)) | {lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1}
    return _emit_reduce(lw, k, lib.GC_R_SUM, node.dtype, g.shape, axes, lw.ref(step.inputs[0]), lw.ref(step.out))


def _broadcast_like(lw, k, step):
    node = step.node
    x = node.inputs[0]
    if not _prod(node.shape):
        return True
    return _emit_copy(lw, k, node.dtype.itemsize, node.shape, _broadcast_strides(x.shape, node.shape),
                      lw.ref(step.inputs[0]), lw.ref(step.out))


def _transpose(lw, k, step):
    node = step.node
    if not _prod(node.shape):
        return True
    own = _contiguous_strides(node.inputs[0].shape)
    return _emit_copy(lw, k, node.dtype.itemsize, node.shape, [own[a] for a in node.attrs["axes"]],
                      lw.ref(step.inputs[0]), lw.ref(step.out))


def _softmax(lw, k, step):
    node = step.node
    if not _floats(node) or node.attrs["axis"] != node.ndim - 1:
        return False
    if len(node.inputs) == 2 and node.inputs[0].shape != node.inputs[1].shape:  # softmax_grad(y, g)
        return False
    if _prod(node.shape):
        cols = node.shape[-1]
        rows = _prod(node.shape) // cols
        refs = [lw.ref(s) for s in step.inputs] + [lw.ref(step.out)]
        lw.emit(c_code("GC_OP_", node.op), k, node.dtype, rows, cols, *refs, int(bool(node.attrs["log"])))
    return True


def _sce(lw, k, step):
    node = step.node
    logits, labels = node.inputs[:2]
    if not _floats(node, 1) or labels.dtype != np.dtype(np.int64):
        return False
    rows, cols = logits.shape
    if len(node.inputs) == 3:  # the gradient (logits, labels, upstream g)
        if node.inputs[2].dtype != node.dtype or node.inputs[2].shape != ():
            return False
        if rows == 0:  # nothing to write, but the label check must still see every row: none
            return True
    refs = [lw.ref(s) for s in step.inputs] + [lw.ref(step.out)]
    if len(node.inputs) == 3 and _pair_sce(lw, k, step, refs):
        return True
    lw.emit(c_code("GC_OP_", node.op), k, node.dtype, rows, cols, *refs)
    return True


def _pair_sce(lw, k, step, refs) -> bool:
    """Rewrite the softmax cross-entropy instruction just emitted for step k - 1 into
    GC_OP_SOFTMAX_CE_LOSS_AND_GRAD when step k is its gradient on the same logits and labels: each
    row's exps are then computed once (the kernel reads a row's label logit before writing it)."""
    at = _loss_before_grad(lw, k, step, "softmax_cross_entropy", lib.GC_OP_SOFTMAX_CROSS_ENTROPY, 9)
    if at is None:
        return False
    words = lw.words
    rows, cols, loss_ref = words[at + 4], words[at + 5], words[at + 8]
    words[at:] = [lib.GC_OP_SOFTMAX_CE_LOSS_AND_GRAD, 11, k - 1, words[at + 3], rows, cols, refs[0], refs[1], refs[2],
                  loss_ref, refs[3]]
    lw.merged[k] = k - 1
    return True


def _loss_before_grad(lw, k, step, loss_op: str, loss_code: int, loss_words: int):
    """Where the loss instruction of step k - 1 starts in lw.words when step k is its gradient and
    the two may run as one instruction at step k - 1; else None. That is safe when the gradient's
    upstream scale is not the loss (so it exists by then), and nothing the plan frees at step
    k - 1 can hold the gradient's bytes: the loss step reads only the two inputs, which step k
    reads again (the gradient may overwrite them in place: the paired kernels read each element
    before writing it)."""
    prev_step, at = lw.last
    if prev_step != k - 1 or k == 0:
        return None
    prev = lw.plan.steps[k - 1]
    words = lw.words
    if (prev.node.op != loss_op or list(prev.inputs) != list(step.inputs[:2])
            or prev.node.dtype != step.node.dtype or step.inputs[2] == prev.out
            or len(words) - at != loss_words or words[at] != loss_code):
        return None
    if _overlap(lw, prev.out, step.out):  # never trust a planner bug with memory
        return None
    return at


def _bce(lw, k, step):
    """binary_cross_entropy(z, t) -> the loss; bce_logits_grad(z, t, scale) -> (sigmoid(z) - t) * scale,
    the scale a runtime scalar the interpreter reads. A gradient step right after the loss step on
    the same z and t turns that step's instruction into one pass computing both (_pair_bce)."""
    node = step.node
    z, t = node.inputs[:2]
    if not _floats(node) or z.shape != t.shape:
        return False
    refs = [lw.ref(s) for s in step.inputs] + [lw.ref(step.out)]
    if node.op == "bce_logits_grad":
        if node.inputs[2].shape != ():
            return False
        if _prod(z.shape) and not _pair_bce(lw, k, step, refs):
            lw.emit(lib.GC_OP_BCE_LOGITS_GRAD, k, node.dtype, _prod(z.shape), *refs)
        return True
    lw.emit(lib.GC_OP_BINARY_CROSS_ENTROPY, k, node.dtype, _prod(z.shape), *refs)
    return True


def _pair_bce(lw, k, step, refs) -> bool:
    """Rewrite the loss instruction just emitted for step k - 1 into GC_OP_BCE_LOSS_AND_GRAD when
    step k is the gradient on the same z and t (_loss_before_grad says when that is safe)."""
    at = _loss_before_grad(lw, k, step, "binary_cross_entropy", lib.GC_OP_BINARY_CROSS_ENTROPY, 8)
    if at is None:
        return False
    words = lw.words
    loss_ref, dz_ref = words[at + 7], refs[3]
    words[at:] = [lib.GC_OP_BCE_LOSS_AND_GRAD, 10, k - 1, words[at + 3], words[at + 4], refs[0], refs[1], refs[2],
                  loss_ref, dz_ref]
    lw.merged[k] = k - 1
    return True


def _overlap(lw, a: int, b: int) -> bool:
    """Values (slots) a and b may share bytes: the same pointer-table entry or overlapping arena ranges."""
    (ka, va), (kb, vb) = lw.loc[a], lw.loc[b]
    if ka != kb:
        return False
    if ka != lib.GC_REF_ARENA:
        return va == vb
    na, nb = nbytes(lw.plan.nodes[a]), nbytes(lw.plan.nodes[b])
    return va < vb + nb and vb < va + na


def _conv(lw, k, step):
    node = step.node
    if not _floats(node):
        return False
    x, w = node.inputs[:2]
    (sh, sw), (ph, pw) = node.attrs["stride"], node.attrs["padding"]
    geometry = list(x.shape) + [w.shape[0], w.shape[2], w.shape[3], sh, sw, ph, pw]
    ins = step.inputs
    if node.op == "conv2d":
        bias = lw.ref(ins[2]) if len(ins) == 3 else _NO_REF
        lw.emit(lib.GC_OP_CONV2D, k, node.dtype, *geometry, lw.ref(ins[0]), lw.ref(ins[1]), bias,
                lw.ref(step.out))
    elif node.op == "conv2d_input_grad":
        lw.emit(lib.GC_OP_CONV2D_INPUT_GRAD, k, node.dtype, *geometry, lw.ref(ins[1]), lw.ref(ins[2]),
                lw.ref(step.out))
    else:
        lw.emit(lib.GC_OP_CONV2D_WEIGHT_GRAD, k, node.dtype, *geometry, lw.ref(ins[0]), lw.ref(ins[2]),
                lw.ref(step.out))
    return True


def _pool(lw, k, step):
    node = step.node
    if not _floats(node):
        return False
    x = node.inputs[0]
    geometry = list(x.shape) + [*node.attrs["kernel"], *node.attrs["stride"], *node.attrs["padding"]]
    ins = [lw.ref(s) for s in step.inputs]
    if node.op == "avg_pool2d_grad":
        ins = ins[1:]  # x only gives the shape
    lw.emit(c_code("GC_OP_", node.op), k, node.dtype, *geometry, *ins, lw.ref(step.out))
    return True


def _cast(lw, k, step):
    node = step.node
    src, dst = node.inputs[0].dtype, node.dtype
    if src not in DTYPE_CODE or dst not in DTYPE_CODE or (src.kind == "f" and dst.kind in "iu"):
        return False  # float -> int (NaN, overflow) is undefined in C: NumPy decides
    if _prod(node.shape):
        lw.emit(lib.GC_OP_CAST, k, dst, DTYPE_CODE[src], _prod(node.shape), lw.ref(step.inputs[0]),
                lw.ref(step.out))
    return True


def _fill(lw, k, step):
    node = step.node
    if node.dtype not in DTYPE_CODE:
        return False
    if _prod(node.shape):
        lw.emit(lib.GC_OP_FILL, k, node.dtype, _prod(node.shape), lw.ref(step.out),
                lw.fidx(1.0 if node.op == "ones_like" else 0.0))
    return True


def _alias(lw, k, step):
    return True  # same bytes as its input (plan_arena's `aliasing`): nothing to run


def _fused(lw, k, step):
    """fused_elementwise: allocate vector registers by liveness, scalars to scalar slots."""
    node = step.node
    program = node.attrs["program"]
    codes = [c_code("GC_F_", op) for op, _, _ in program]
    if not _floats(node) or not program or None in codes:
        return False
    n = _prod(node.shape)
    nin = len(node.inputs)
    full = [t.shape == node.shape and t.shape != () for t in node.inputs]
    # value id -> (kind, index); inputs first
    where: dict = {}
    in_slot, nscalar = [], 0
    for i, is_full in enumerate(full):
        if is_full:
            where[i] = (lib.GC_FK_INPUT, i)
            in_slot.append(-1)
        else:
            where[i] = (lib.GC_FK_SCALAR, nscalar)
            in_slot.append(nscalar)
            nscalar += 1
    last_use: dict = {}
    for j, (_, args, _) in enumerate(program):
        for a in args:
            last_use[a] = j
    free_regs: list = []
    nvreg = 0
    instr: list = []
    for j, ((_, args, param), code) in enumerate(zip(program, codes)):
        vid = nin + j
        if any(not 0 <= a < vid for a in args) or len(args) != lib.gc_fused_arity(code):
            return False  # a malformed program: NumPy reports it
        ops = [where[a] for a in args]
        is_scalar = all(kind == lib.GC_FK_SCALAR for kind, _ in ops)
        for a in set(args):  # a dying register can hold this result (same index, elementwise)
            if last_use[a] == j and where[a][0] == lib.GC_FK_VREG:
                free_regs.append(where[a][1])
        if is_scalar:
            dst = (lib.GC_FK_SCALAR, nscalar)
            nscalar += 1
        elif j == len(program) - 1:
            dst = (lib.GC_FK_OUT, 0)
        else:
            if free_regs:
                dst = (lib.GC_FK_VREG, free_regs.pop())
            else:
                dst = (lib.GC_FK_VREG, nvreg)
                nvreg += 1
        where[vid] = dst
        if dst[0] == lib.GC_FK_VREG and vid not in last_use:
            free_regs.append(dst[1])  # never read
        a = ops[0] if ops else (lib.GC_FK_SCALAR, 0)
        b = ops[1] if len(ops) > 1 else a
        instr += [code, dst[0], dst[1], a[0], a[1], b[0], b[1],
                  lw.fidx(0.0 if param is None else param)]
    if nvreg > lib.GC_FUSED_MAX_VREGS or nscalar > lib.GC_FUSED_MAX_SCALARS:
        return False
    lw.emit(lib.GC_OP_FUSED, k, node.dtype, n, lw.ref(step.out), nin, len(program), nvreg, nscalar,
            *[lw.ref(s) for s in step.inputs], *in_slot, *instr)
    return True


# lowering rules by the name an OpDef gives in its `lowering` field
LOWERINGS = {
    "gemm": _gemm, "gemm_ex": _gemm_ex, "unary": _unary, "binary": _binary, "act_grad": _act_grad, "reduce": _reduce,
    "sum_to": _sum_to, "broadcast_like": _broadcast_like, "transpose": _transpose, "softmax": _softmax,
    "sce": _sce, "bce": _bce, "conv": _conv, "pool": _pool, "cast": _cast, "fill": _fill, "fused": _fused,
    "alias": _alias,
}


def _rule(op: str):
    lowering = REGISTRY[op].lowering
    return LOWERINGS[lowering] if lowering else None


# -- building the runner -------------------------------------------------------------------------
class Lowered:
    """Everything precomputed for one Plan; calls go through `run` (see make_runner)."""

    def __init__(self, plan: Plan, reuse: bool = True):
        self.plan = plan
        steps = plan.steps
        leaves = {s for s, _ in plan.feeds} | {s for s, _ in plan.params} | {s for s, _ in plan.constants}
        inplace_ops, aliasing = memory_traits()
        alias_slots = {st.out for st in steps if st.node.op in aliasing}
        direct: dict = {}  # output slot written straight into outs[j]
        for j, s in enumerate(plan.outputs):
            if s not in leaves and s not in alias_slots and s not in direct:
                direct[s] = j
        external = frozenset(leaves | set(direct))
        self.arena = plan_arena(plan, reuse=reuse, inplace_ops=inplace_ops, aliasing=aliasing, external=external)
        if not self._inplace_is_elementwise(plan, self.arena):  # never trust a planner bug with memory
            self.arena = plan_arena(plan, reuse=reuse, aliasing=aliasing, external=external)
        lw = self.lw = _Lowering(plan)
        # the pointer table: used feeds, parameters, then the outputs
        self.feed_ext = [(e, k) for e, (_, k) in enumerate(plan.feeds)]
        self.param_ext = [(len(plan.feeds) + e, k) for e, (_, k) in enumerate(plan.params)]
        n_in = len(plan.feeds) + len(plan.params)
        self.out_ext = [(n_in + j, j) for j in range(len(plan.outputs))]
        self.n_ext = n_in + len(plan.outputs)
        for e, (s, _) in enumerate(plan.feeds):
            lw.loc[s] = (lib.GC_REF_EXT, e)
        for e, (s, _) in enumerate(plan.params):
            lw.loc[s] = (lib.GC_REF_EXT, len(plan.feeds) + e)
        self.pool = self._pool(plan, lw)
        for s, j in direct.items():
            lw.loc[s] = (lib.GC_REF_EXT, n_in + j)
        for s, off in self.arena.offsets.items():
            if s not in self.arena.root:
                lw.loc.setdefault(s, (lib.GC_REF_ARENA, off))
        for s, r in self.arena.root.items():
            lw.loc[s] = lw.loc[r]
        self.scratch_base = _aligned(self.arena.nbytes)

        # instructions, cut into C segments around NumPy steps
        self.program: list = []  # ("c", start, end) | ("np", step index)
        self.numpy_steps = []
        self.colsum_hosts = _colsum_hosts(plan, self.arena)
        lw.colsum = {h: steps[s].out for h, s in self.colsum_hosts.items()}
        deferred = {s: h for h, s in self.colsum_hosts.items()}
        start = 0
        for k, step in enumerate(steps):
            if k in deferred:
                continue  # computed by the GEMM of step deferred[k]
            rule = _rule(step.node.op)
            before = len(lw.words)
            if rule is not None and rule(lw, k, step):
                continue
            del lw.words[before:]
            if k in lw.colsum:  # pragma: no cover - _colsum_hosts only picks GEMMs that lower
                raise AssertionError("a GEMM owing a bias gradient did not lower")
            if step.node.op in aliasing:  # pragma: no cover - aliases always lower
                raise AssertionError("alias step without a lowering")
            if len(lw.words) > start:
                self.program.append(("c", start, len(lw.words)))
            start = len(lw.words)
            self.program.append(("np", k))
            self.numpy_steps.append(k)
        for j, s in enumerate(plan.outputs):  # outputs not written in place: copy them out
            if direct.get(s) != j:
                node = plan.nodes[s]
                _emit_copy(lw, len(steps), node.dtype.itemsize, [_prod(node.shape)], [1], lw.ref(s),
                           (n_in + j) << 2 | lib.GC_REF_EXT)
        if len(lw.words) > start:
            self.program.append(("c", start, len(lw.words)))
        self._resolve_scratch()
        self.arena_bytes = self.scratch_base + lw.scratch_need
        self.code = np.array(lw.words, dtype=np.int64)
        self.fconst = np.array(lw.fconst, dtype=np.float64)
        self._validate()
        code_ptr = ffi.cast("int64_t *", ffi.from_buffer(self.code))
        self.segments_code = [(code_ptr + item[1], item[2] - item[1]) for item in self.program if item[0] == "c"]
        self.fconst_ptr = ffi.cast("double *", ffi.from_buffer(self.fconst))
        self.pool_ptr = ffi.from_buffer(self.pool) if self.pool.size else ffi.NULL
        self.segments = len(self.segments_code)
        self.multiply_adds = _multiply_adds(self.code)
        self.side_by_side = _side_by_side_pairs(self.code)  # [(first step, second step)]
        self.releases_openblas = self.multiply_adds >= openblas.RELEASE_MIN_MULTIPLY_ADDS

    def step_notes(self) -> dict:
        """{step: remark} for Function.explain(): what the C code does differently from the plan."""
        notes = {s: f"C: computed inside step {h}'s GEMM, which reads %{self.plan.steps[h].inputs[1]} as its B"
                 for h, s in self.colsum_hosts.items()}
        notes.update({k: "NumPy step (no C kernel for these operands)" for k in self.numpy_steps})
        notes.update({k: f"C: computed by step {h}'s instruction, loss and gradient in one pass"
                      for k, h in self.lw.merged.items()})
        for a, b in self.side_by_side:
            notes[a] = f"C: runs side by side with step {b}, one thread each"
            notes[b] = f"C: runs side by side with step {a}, one thread each"
        return notes

    @staticmethod
    def _inplace_is_elementwise(plan, arena) -> bool:
        """Every in-place output overwrites an input with exactly its own size (the kernels allow
        out == in only index for index, never over a smaller, broadcast operand)."""
        for st in plan.steps:
            if st.out in arena.inplace:
                for i in st.inputs:
                    r = arena.root.get(i, i)
                    if arena.offsets.get(r) == arena.offsets[st.out] and nbytes(plan.nodes[r]) != nbytes(st.node):
                        return False
        return True

    @staticmethod
    def _pool(plan, lw):
        """Constants copied into one read-only byte pool at aligned offsets."""
        arrays, offsets, top = {}, {}, 0
        for s, value in plan.constants:
            arr = np.ascontiguousarray(value, dtype=plan.nodes[s].dtype)
            arrays[s] = arr
            offsets[s] = top
            top += _aligned(arr.nbytes)
        pool = np.zeros(top + ALIGN, dtype=np.uint8)
        pad = (-pool.ctypes.data) % ALIGN
        for s, arr in arrays.items():
            off = offsets[s] + pad
            pool[off:off + arr.nbytes] = arr.reshape(-1).view(np.uint8)
            lw.loc[s] = (lib.GC_REF_POOL, off)
        return pool

    def _resolve_scratch(self):
        """Reductions emitted ("scratch", offset) operands before the arena size was final."""
        words = self.lw.words
        for i, w in enumerate(words):
            if isinstance(w, tuple):
                words[i] = ((self.scratch_base + w[1]) << 2) | lib.GC_REF_ARENA

    def _validate(self):
        """Every value the code can reach lies inside the arena, the pool or the pointer table
        (the C side trusts the offsets, so a planner bug must stop here, not corrupt memory)."""
        for s, (kind, value) in self.lw.loc.items():
            node = self.plan.nodes[s]
            end = value + node.dtype.itemsize * _prod(node.shape)
            ok = (0 <= value and end <= self.arena_bytes if kind == lib.GC_REF_ARENA else
                  0 <= value and end <= self.pool.size if kind == lib.GC_REF_POOL else 0 <= value < self.n_ext)
            if not ok:
                raise GraphError(f"internal error: value %{s} ({node.op}) planned outside its buffer")


def _side_by_side_pairs(code) -> list:
    """The (first, second) step indexes of each GC_OP_SIDE_BY_SIDE pair in `code`."""
    pairs, i, words = [], 0, [int(w) for w in code]
    while i < len(words):
        if words[i] == lib.GC_OP_SIDE_BY_SIDE:
            first = i + 4
            second = first + words[first + 1]
            pairs.append((words[first + 2], words[second + 2]))
        i += words[i + 1]
    return pairs


def _multiply_adds(code) -> int:
    """Multiply-adds of the GEMM and convolution instructions in `code`: the work of a call."""
    total, i, words = 0, 0, [int(w) for w in code]
    while i < len(words):
        op, a = words[i], i + 4
        if op == lib.GC_OP_SIDE_BY_SIDE:  # its two instructions follow, whole
            i = a
            continue
        if op in _GEMM_OPS:
            total += words[a + 2] * words[a + 3] * words[a + 4]
        elif op in _CONV_OPS:
            n, c, h, w, o, kh, kw, sh, sw, ph, pw = words[a:a + 11]
            total += n * o * ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1) * c * kh * kw
        i += words[i + 1]
    return total


def _release_openblas() -> None:
    """Before a large call on more than one thread: end OpenBLAS's spinning workers (openblas.py)."""
    if lib.gc_get_num_threads() > 1:
        openblas.release()


def make_runner(plan: Plan, reuse: bool = True):
    """callable(feeds, params) -> fresh output arrays, running `plan` through gc_exec.

    The callable carries `segments` (gc_exec calls per run: 1 when every step has a C lowering),
    `numpy_steps` (step indexes run by NumPy) and `lowered` (the code, arena layout, ...)."""
    lo = Lowered(plan, reuse)
    if lo.numpy_steps:
        run = _mixed_runner(lo)
    else:
        run = _fast_runner(lo)
    # Function.profile(): the same computation, each step's time added to seconds[step] (the last
    # entry, len(plan.steps), collects the copies of outputs out of the arena)
    run.timed = lambda seconds: (_mixed_runner if lo.numpy_steps else _fast_runner)(lo, seconds)
    run.segments = lo.segments
    run.numpy_steps = list(lo.numpy_steps)
    run.lowered = lo
    return run


def _out_specs(lo):
    return [(tuple(lo.plan.nodes[s].shape), lo.plan.nodes[s].dtype) for s in lo.plan.outputs]


KEEP_ARENA_BYTES = 1 << 24  # a compiled plan keeps an arena up to this size between calls


def _held_refcount() -> int:
    """sys.getrefcount of an array that only a runner's spare list holds (in a tuple with the
    cdata of ffi.from_buffer, which also keeps it alive), measured rather than assumed; 0 where
    reference counts do not say "nobody else holds this" (another interpreter, free threading)."""
    if sys.implementation.name != "cpython" or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return 0
    arr = np.empty(1)
    spare = [(arr, ffi.from_buffer(arr))]
    del arr
    return sys.getrefcount(spare[0][0])


_HELD_REFCOUNT = _held_refcount()


def _exec_of(lo: Lowered, seconds: Optional[np.ndarray]):
    """gc_exec, or with `seconds` (float64, one entry per plan step plus one for the output copies)
    gc_exec_timed adding each instruction's time to its step's entry."""
    if seconds is None:
        return lib.gc_exec
    n = len(lo.plan.steps) + 1
    if seconds.dtype != np.float64 or seconds.shape != (n,):
        raise ValueError(f"seconds must be float64 of shape ({n},), got {seconds.dtype}{seconds.shape}")
    timed_args = (ffi.from_buffer("double[]", seconds), n)
    return lambda *a: lib.gc_exec_timed(*a, *timed_args)


def _fast_runner(lo: Lowered, seconds: Optional[np.ndarray] = None):
    """The runner of a plan that is one or more C segments and no NumPy step (`seconds`: see
    _exec_of; Function.profile() times the same runner a call uses).

    A call costs little more than gc_exec itself. Per-call state (pointer table, arena) lives in
    a free list, so concurrent calls (gc_exec releases the GIL) each take their own and a
    sequential loop reuses one. Addresses are looked up with ffi.from_buffer only for arrays the
    state has not seen: a feed passed again, or a parameter that is last call's output (what
    `updates=` makes every step), reuses the pointer stored with it (the stored cdata keeps a
    buffer export, so NumPy cannot move that array's memory meanwhile). Each output keeps up to
    two buffers: one that nothing but the runner references any more (refcount) is written again
    instead of allocating; so a training step ping-pongs between two buffers per parameter."""
    specs = _out_specs(lo)
    ext_type = ffi.typeof(f"void *[{max(lo.n_ext, 1)}]")
    free: list = []  # idle call states: [ext, arena pointer, arena, held, spares, known]

    # A large arena is allocated per call instead of kept: a Function caches one plan per
    # signature, and keeping, say, a ResNet's activations for each would hold memory for nothing;
    # next to the milliseconds such a plan runs, the allocation costs nothing.
    keep_arena = lo.arena_bytes <= KEEP_ARENA_BYTES

    def new_arena():
        arena = np.empty(lo.arena_bytes + ALIGN, np.uint8) if lo.arena_bytes else _EMPTY_ARENA
        return ffi.from_buffer(arena), arena

    def new_state():
        arena_ptr, arena = new_arena() if keep_arena else (None, None)
        return [ffi.new(ext_type), arena_ptr, arena, [(None, None)] * lo.n_ext, [[] for _ in specs], {}]

    def new_output(spare, known, j):
        """A fresh buffer for output j; it becomes one of the (at most two) spares of that output."""
        arr = np.empty(*specs[j])
        t = (arr, ffi.from_buffer(arr))
        if len(spare) == 2:
            known.pop(id(spare.pop(0)[0]), None)
        spare.append(t)
        known[id(arr)] = t
        return t

    def pointer(v, known):
        t = known.get(id(v))
        return t if t is not None and t[0] is v else (v, ffi.from_buffer(v))

    def fail(rc, state, feeds, params, outs, arena):
        free.append(state)
        _raise(lo, rc, feeds, params, outs, arena)

    # The body is generated for this plan (the loops unrolled): at a few microseconds per call,
    # Python's loop and tuple-unpacking overhead would be a large part of the total.
    ns = {"_free": free, "_new_state": new_state, "_new_output": new_output, "_pointer": pointer, "_fail": fail,
          "_rc": sys.getrefcount, "_HELD": _HELD_REFCOUNT, "_exec": _exec_of(lo, seconds), "_fc": lo.fconst_ptr,
          "_nfc": len(lo.fconst), "_pool": lo.pool_ptr}
    lines = ["def run(feeds, params):"]
    if lo.releases_openblas:
        ns["_release_openblas"] = _release_openblas
        lines += ["    _release_openblas()"]
    lines += ["    state = _free.pop() if _free else _new_state()",
             "    ext, arena, arena_arr, held, spares, known = state"]
    if not keep_arena:
        ns["_new_arena"] = new_arena
        lines += ["    arena, arena_arr = _new_arena()"]
    for e, what in [(e, f"feeds[{k}]") for e, k in lo.feed_ext] + [(e, f"params[{k}]") for e, k in lo.param_ext]:
        lines += [f"    v = {what}",
                  f"    if held[{e}][0] is not v:",
                  f"        t = held[{e}] = _pointer(v, known)",
                  f"        ext[{e}] = t[1]"]
    for e, j in lo.out_ext:  # a spare that only this runner holds is written again
        lines += [f"    sp = spares[{j}]",
                  "    t = (sp[0] if sp and _rc(sp[0][0]) == _HELD else",
                  "         sp[1] if len(sp) == 2 and _rc(sp[1][0]) == _HELD else",
                  f"         _new_output(sp, known, {j}))",
                  f"    o{j} = t[0]",
                  f"    ext[{e}] = t[1]"]
    outs = "[" + ", ".join(f"o{j}" for j in range(len(specs))) + "]"
    for i, (ptr, n) in enumerate(lo.segments_code):
        ns[f"_code{i}"] = ptr
        lines += [f"    rc = _exec(_code{i}, {n}, _fc, _nfc, _pool, ext, arena)",
                  f"    if rc:\n        _fail(rc, state, feeds, params, {outs}, arena_arr)"]
    lines += ["    _free.append(state)", f"    return {outs}"]
    exec("\n".join(lines), ns)  # noqa: S102 - source built above from integers and names only
    return ns["run"]


def _mixed_runner(lo: Lowered, seconds: Optional[np.ndarray] = None):
    """C segments with NumPy steps in between, which see the arena through ndarray views. With
    `seconds` (float64, one entry per plan step and one for the output copies), each step's time
    is added to its entry: gc_exec_timed's for C instructions, perf_counter's for NumPy steps."""
    plan = lo.plan
    specs = _out_specs(lo)
    steps = plan.steps
    np_steps = {k: (steps[k].inputs, steps[k].out, steps[k].node, k) for k in lo.numpy_steps}
    segs = iter(lo.segments_code)
    program = [("c", next(segs)) if item[0] == "c" else ("np", np_steps[item[1]]) for item in lo.program]
    fconst, nfc, pool = lo.fconst_ptr, len(lo.fconst), lo.pool_ptr
    fb, exec_ = ffi.from_buffer, _exec_of(lo, seconds)
    ext_type = ffi.typeof(f"void *[{max(lo.n_ext, 1)}]")

    def run(feeds, params):
        if lo.releases_openblas:
            _release_openblas()
        arena = np.empty(lo.arena_bytes + ALIGN, np.uint8)
        outs = [np.empty(shape, dtype) for shape, dtype in specs]
        ext = ffi.new(ext_type)
        for e, k in lo.feed_ext:
            ext[e] = fb(feeds[k])
        for e, k in lo.param_ext:
            ext[e] = fb(params[k])
        for e, j in lo.out_ext:
            ext[e] = fb(outs[j])
        arena_ptr = fb(arena)
        pad = _arena_pad(arena)
        with np.errstate(all="ignore"):  # NaN/inf propagate as in C; check_finite reports them
            for kind, what in program:
                if kind == "c":
                    rc = exec_(what[0], what[1], fconst, nfc, pool, ext, arena_ptr)
                    if rc:
                        _raise(lo, rc, feeds, params, outs, arena)
                    continue
                ins, out, node, k = what
                t0 = time.perf_counter()
                r = run_node(node, [_value(lo, s, feeds, params, outs, arena, pad) for s in ins])
                np.copyto(_value(lo, out, feeds, params, outs, arena, pad), r, casting="unsafe")
                if seconds is not None:
                    seconds[k] += time.perf_counter() - t0
        return outs

    return run


def _arena_pad(arena) -> int:
    """gc_exec rounds the arena's address up to 64 bytes; views must use the same base."""
    return (-int(ffi.cast("uintptr_t", ffi.from_buffer(arena)))) % ALIGN


def _value(lo: Lowered, slot: int, feeds, params, outs, arena, pad: int) -> np.ndarray:
    """The ndarray holding `slot` during a call (a view for arena values and aliases)."""
    node = lo.plan.nodes[slot]
    kind, value = lo.lw.loc[slot]
    if kind == lib.GC_REF_ARENA:
        return np.ndarray(node.shape, node.dtype, buffer=arena, offset=pad + value)
    if kind == lib.GC_REF_POOL:
        return np.ndarray(node.shape, node.dtype, buffer=lo.pool, offset=value)
    n_feeds, n_params = len(lo.feed_ext), len(lo.param_ext)
    if value < n_feeds:
        arr = feeds[lo.feed_ext[value][1]]
    elif value < n_feeds + n_params:
        arr = params[lo.param_ext[value - n_feeds][1]]
    else:
        arr = outs[value - n_feeds - n_params]
    return arr if arr.shape == node.shape else arr.reshape(node.shape)


def _raise(lo: Lowered, rc: int, feeds, params, outs, arena):
    """Turn gc_exec's packed status into a GraphError about the failing step's node."""
    step = (rc >> 32) - 1
    status = rc & 0xFFFFFFFF
    if status >= 1 << 31:
        status -= 1 << 32
    if not 0 <= step < len(lo.plan.steps):
        raise GraphError(f"internal error in the C plan interpreter (status {status}, step {step})")
    st = lo.plan.steps[step]
    node = st.node
    if REGISTRY[node.op].lowering == "sce" and status > 0:  # the first bad label row + 1
        pad = _arena_pad(arena) if arena is not None else 0
        labels = _value(lo, st.inputs[1], feeds, params, outs, arena, pad)
        classes = node.inputs[0].shape[1]
        raise node_error(node, f"labels must lie in [0, {classes}); found {labels[status - 1]}")
    if status == lib.GC_K_ENOMEM:
        raise node_error(node, "the C kernel could not allocate its scratch memory")
    raise node_error(node, f"the C kernel rejected its arguments (status {status})")
