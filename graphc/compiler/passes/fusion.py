"""Fusion passes: rewrite op patterns into the fused ops the C kernels implement."""
from __future__ import annotations

from ...ir.graph import reachable
from ...ir.tensor import Tensor
from ...ops import REGISTRY, fused_kernels
from ...ops.elementwise import ACTIVATIONS
from ...ops.fused import GATE_ACTS
from .rewrite import Rules, merged_source, rewrite, users_of, with_inputs


def _fused(op, inputs, attrs, like: Tensor, replaced) -> Tensor:
    return Tensor(op, inputs, attrs, like.shape, like.dtype, like.name, merged_source(replaced))


fuse_losses = Rules("fuse_losses")
"""Loss patterns -> their fused, numerically stable forms (forward and backward)."""


def _is_log_softmax_last(n: Tensor) -> bool:
    return n.op == "softmax" and n.attrs["log"] and n.attrs["axis"] == n.ndim - 1


@fuse_losses.rule("nll_loss")
def softmax_cross_entropy(node):
    """nll_loss(log_softmax(z), y) -> softmax_cross_entropy(z, y)."""
    logp, labels = node.inputs
    if not _is_log_softmax_last(logp):
        return None
    return _fused("softmax_cross_entropy", [logp.inputs[0], labels], {}, node, [logp, node])


@fuse_losses.rule("softmax_grad")
def softmax_cross_entropy_grad(node):
    """softmax_grad(log_softmax(z), nll_loss_grad(.., y, g), log) -> softmax_cross_entropy_grad(z, y, g)."""
    logp, upstream = node.inputs
    if not (node.attrs["log"] and _is_log_softmax_last(logp) and upstream.op == "nll_loss_grad"
            and upstream.inputs[0] is logp):
        return None
    _, labels, g = upstream.inputs
    return _fused("softmax_cross_entropy_grad", [logp.inputs[0], labels, g], {}, node, [upstream, node])


@fuse_losses.rule("binary_cross_entropy_probs")
def binary_cross_entropy_on_logits(node):
    """binary_cross_entropy_probs(sigmoid(z), t) -> binary_cross_entropy(z, t)."""
    probs, targets = node.inputs
    if probs.op != "sigmoid":
        return None
    return _fused("binary_cross_entropy", [probs.inputs[0], targets], {}, node, [probs, node])


@fuse_losses.rule("activation_grad")
def binary_cross_entropy_grad(node):
    """activation_grad(sigmoid(z), bce_probs_grad(.., t, s), sigmoid) -> bce_logits_grad(z, t, s),
    the (sigmoid(z) - t) * s that binary_cross_entropy's VJP makes."""
    y, upstream = node.inputs
    if not (node.attrs["act"] == "sigmoid" and y.op == "sigmoid" and upstream.op == "bce_probs_grad"
            and upstream.inputs[0] is y):
        return None
    _, t, scale = upstream.inputs
    if scale.shape != () or scale.dtype != node.dtype or t.dtype != node.dtype or t.shape != node.shape:
        return None
    return _fused("bce_logits_grad", [y.inputs[0], t, scale], {}, node, [upstream, node])


def _epilogue(node: Tensor) -> bool:
    """node is an activation the GEMM applies in its epilogue (a copy under another name is not).
    dense's VJP reads the activation's output, which tells the side of the kink only for a slope
    alpha >= 0: a leaky ReLU with a negative slope stays a separate op."""
    return REGISTRY[node.op].dense_act and node.op in ACTIVATIONS and node.attrs.get("alpha", 0.0) >= 0


def _matrix_vector(mm: Tensor) -> bool:
    """mm is a matmul of a matrix by a vector (output (M,): one GEMM column, N == 1)."""
    return mm.op == "matmul" and mm.ndim == 1 and mm.inputs[0].ndim == 2 and mm.inputs[1].ndim == 1


def fuse_dense(outputs: list) -> list:
    """act(matmul(x, W) + b) -> dense(x, W, b, act), also without the bias or the activation.

    Also x @ w + b for a vector w and a scalar b (logistic regression's logits): dense with a 1-d
    output, the scalar its one column's bias (identity activation only: the GEMV adds it).
    Fires only when the matmul (and the bias sum) feed nothing else, so nothing is computed twice."""
    users, out_ids = users_of(outputs)

    def private(n: Tensor) -> bool:  # n (an original node) has one user and is not an output
        return len(users.get(n.id, ())) == 1 and n.id not in out_ids

    def matmul_plus_bias(add: Tensor, orig: Tensor):
        """(index of the matmul operand, bias) if add = matmul + row-vector bias (or matrix @ vector
        + scalar)."""
        for k in (0, 1):
            mm, b = add.inputs[k], add.inputs[1 - k]
            if not (mm.op == "matmul" and private(orig.inputs[k]) and mm.shape == add.shape and b.dtype == add.dtype):
                continue
            if mm.ndim == 2 and b.shape in ((add.shape[1],), (1, add.shape[1])):
                return mm, b
            if _matrix_vector(mm) and b.shape == ():
                return mm, b
        return None

    def rule(node: Tensor, orig: Tensor):
        act, alpha, inner, inner_orig, replaced = "identity", 0.0, node, orig, [node]
        if _epilogue(node):
            act, alpha = node.op, node.attrs.get("alpha", 0.0)
            inner, inner_orig = node.inputs[0], orig.inputs[0]
            if not private(inner_orig):
                return None
            replaced = [inner, node]
        elif node.op == "add" and len(users.get(orig.id, ())) == 1 and _epilogue(users[orig.id][0]):
            return None  # the activation above will take this add along
        mm, bias = inner, None
        if inner.op == "add":
            found = matmul_plus_bias(inner, inner_orig)
            if found is None or (found[0].ndim == 1 and act != "identity"):
                return None
            mm, bias = found
            replaced = [mm] + replaced
            if bias.ndim == 2:
                bias = Tensor("reshape", [bias], {"shape": (bias.shape[1],)}, (bias.shape[1],), bias.dtype,
                              bias.name, bias.source)
        elif inner.op != "matmul" or inner.ndim != 2 or act == "identity":
            return None  # a bare matmul stays a matmul
        if mm.dtype != node.dtype:
            return None
        attrs = dict(trans_a=mm.attrs["trans_a"], trans_b=mm.attrs["trans_b"], act=act, alpha=float(alpha))
        inputs = list(mm.inputs) + ([bias] if bias is not None else [])
        return _fused("dense", inputs, attrs, node, replaced)

    return rewrite(outputs, rule, with_original=True)


# ---------------------------------------------------------------------------------------------
fuse_gemm_epilogue = Rules("fuse_gemm_epilogue", uses=True)
"""Elementwise consumers of a bare matmul -> its GEMM's epilogue (the SGD step's extra passes)."""


def _scalar_constant(t: Tensor):
    """The float value of a scalar constant node, else None."""
    if t.op == "constant" and t.shape == () and t.dtype.kind == "f":
        return float(t.value)
    return None


def _private_matmul(mm: Tensor, mm_orig: Tensor, like: Tensor, uses) -> bool:
    """mm is a 2-d matmul of like's shape and dtype that nothing else reads."""
    return (mm.op == "matmul" and mm.ndim == 2 and mm.shape == like.shape and mm.dtype == like.dtype
            and all(i.ndim == 2 and i.dtype == like.dtype for i in mm.inputs) and uses.private(mm_orig))


@fuse_gemm_epilogue.rule("add", "sub")
def sgd_update_into_gemm(node, uses):
    """x - c * (A @ B), x + c * (A @ B), x ± A @ B -> matmul_update(A, B, x, alpha=±c): one GEMM."""
    if node.dtype.kind != "f":
        return None
    sides = ((1, 1.0), (0, 1.0)) if node.op == "add" else ((1, -1.0),)
    for k, sign in sides:
        t, t_orig, x = node.inputs[k], uses.orig.inputs[k], node.inputs[1 - k]
        if x.shape != node.shape or x.dtype != node.dtype:
            continue  # the epilogue reads x index for index: no broadcasting
        mm, mm_orig, scale = t, t_orig, 1.0
        if t.op == "mul" and t.dtype == node.dtype and uses.private(t_orig):
            for j in (0, 1):
                c = _scalar_constant(t.inputs[j])
                if c is not None and t.inputs[j].dtype == node.dtype:
                    mm, mm_orig, scale = t.inputs[1 - j], t_orig.inputs[1 - j], c
                    break
        if not _private_matmul(mm, mm_orig, node, uses):
            continue
        attrs = dict(trans_a=mm.attrs["trans_a"], trans_b=mm.attrs["trans_b"], alpha=sign * scale)
        replaced = [mm, node] if mm is t else [mm, t, node]
        return _fused("matmul_update", [mm.inputs[0], mm.inputs[1], x], attrs, node, replaced)
    return None


@fuse_gemm_epilogue.rule("activation_grad")
def relu_mask_into_gemm(node, uses):
    """activation_grad(y, A @ B, relu | leaky_relu) -> matmul_act_grad(A, B, y): the mask in the GEMM."""
    y, g = node.inputs
    if node.attrs["act"] not in GATE_ACTS or y.shape != node.shape or y.dtype != node.dtype:
        return None
    if not _private_matmul(g, uses.orig.inputs[1], node, uses):
        return None
    attrs = dict(trans_a=g.attrs["trans_a"], trans_b=g.attrs["trans_b"], act=node.attrs["act"],
                 alpha=float(node.attrs.get("alpha", 0.0)))
    return _fused("matmul_act_grad", [g.inputs[0], g.inputs[1], y], attrs, node, [g, node])


# ---------------------------------------------------------------------------------------------
def _fusable(n: Tensor) -> bool:
    op = REGISTRY[n.op]
    if not op.fusible or n.dtype.kind != "f" or op.kernel(n.attrs) not in fused_kernels():
        return False
    return all(i.shape in (n.shape, ()) and i.dtype == n.dtype for i in n.inputs)


def _instruction(n: Tensor, args) -> tuple:
    op = REGISTRY[n.op]
    return (op.kernel(n.attrs), tuple(args), op.kernel_value(n.attrs))


def fuse_elementwise(outputs: list) -> list:
    """Chains and trees of elementwise ops of one shape -> one fused_elementwise node.

    A node joins its consumer's group when that consumer is its only user (and it is not an
    output), so every fused intermediate is needed nowhere else and is never materialised."""
    users, out_ids = users_of(outputs)
    nodes = reachable(outputs)
    group: dict[int, int] = {}  # node id -> id of its group's root (the group's last node)
    for n in reversed(nodes):  # consumers before producers
        if not _fusable(n):
            continue
        group.setdefault(n.id, n.id)
        for i in n.inputs:
            if _fusable(i) and i.shape == n.shape and i.id not in out_ids and len(users.get(i.id, ())) == 1:
                group[i.id] = group[n.id]
    members: dict[int, list[Tensor]] = {}
    for n in nodes:
        if n.id in group:
            members.setdefault(group[n.id], []).append(n)

    memo: dict[int, Tensor] = {}
    for node in nodes:
        root = group.get(node.id)
        if root is not None and root != node.id:
            continue  # an interior member: only its group reads it, so it is never built
        if root is not None and len(members[root]) > 1:
            memo[node.id] = _build_group(node, members[root], memo)
            continue
        ins = [memo[i.id] for i in node.inputs]
        memo[node.id] = node if all(a is b for a, b in zip(ins, node.inputs)) else with_inputs(node, ins)
    return [memo[o.id] for o in outputs]


def _build_group(root: Tensor, members: list[Tensor], memo: dict) -> Tensor:
    """One fused_elementwise node computing `root` from the members' external inputs."""
    member_ids = {m.id for m in members}
    inputs: list[Tensor] = []
    input_index: dict[int, int] = {}
    for m in members:
        for i in m.inputs:
            if i.id in member_ids or (i.op == "constant" and i.shape == ()):
                continue
            ext = memo[i.id]
            if ext.id not in input_index:
                input_index[ext.id] = len(inputs)
                inputs.append(ext)
    program: list[tuple] = []
    value_of: dict[int, int] = {}  # member id -> value id of its result
    for m in members:  # members are in topological order
        args = []
        for i in m.inputs:
            if i.id in member_ids:
                args.append(value_of[i.id])
            elif i.op == "constant" and i.shape == ():
                program.append(("const", (), float(i.value)))  # scalars become immediates
                args.append(len(inputs) + len(program) - 1)
            else:
                args.append(input_index[memo[i.id].id])
        program.append(_instruction(m, args))
        value_of[m.id] = len(inputs) + len(program) - 1
    attrs = dict(program=tuple(program), shape=root.shape, dtype=root.dtype)
    return Tensor("fused_elementwise", inputs, attrs, root.shape, root.dtype, root.name, merged_source(members))
