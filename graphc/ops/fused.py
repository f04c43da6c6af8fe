"""Fused ops produced by the fusion pass (graphc.passes), each one C kernel call.

dense(x, W[, b]; trans_a, trans_b, act, alpha) = act(op(x) @ op(W) + b): the GEMM with its
bias + activation epilogue. Its VJP reads the stored output (ReLU' = y > 0, σ' = y(1 − y)).
Also x @ w + b for a matrix x, a vector w and a scalar b (1-d output, identity only): the GEMV.

matmul_update(A, B, x; trans_a, trans_b, alpha) = x + alpha * op(A) @ op(B) and
matmul_act_grad(A, B, y; trans_a, trans_b, act, alpha) = activation_grad(y, op(A) @ op(B), act):
the SGD step's weight update and ReLU mask as the epilogue of their GEMM (gc_sgemm_ex); the
third input is read index for index, never written, and never shares the output's buffer.

fused_elementwise(*inputs; program) evaluates a straight-line elementwise program in one pass.
program is a tuple of (op, args, param) instructions; value ids 0..len(inputs)-1 are the inputs,
id len(inputs)+j is instruction j's result; the last instruction's result is the output. Every
input has the output's shape or is a scalar (shape ()). Ops: the unary and binary names of
graphc.ops.fused_kernels() (derived from the registry: every `fusible` op and its `variants`)
and ("const", (), value).
"""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphError
from . import REGISTRY, Domain, OpDef, apply, fused_kernels, register
from .core import unbroadcast
from .elementwise import ACTIVATIONS, activation_grad
from .elementwise import _act_grad_forward as activation_grad_forward
from .linalg import _matmul_forward, _matmul_infer, _matmul_vjp
from .reduce import sum

__all__ = ["dense", "matmul_update", "matmul_act_grad"]


# -- dense ------------------------------------------------------------------------------------
def _act_forward(z, act, alpha):
    if act == "identity":
        return z
    op = REGISTRY[act]
    return op.forward(z, **op.kernel_attrs(act, alpha))


def _dense_infer(inputs, trans_a, trans_b, act, alpha):
    if act not in ACTIVATIONS:
        raise GraphError(f"unknown activation {act!r}")
    if act == "leaky_relu" and alpha < 0:  # the VJP reads the output, whose sign then hides the side
        raise GraphError(f"dense with leaky_relu needs alpha >= 0 (got {alpha}); use leaky_relu(x @ w + b, alpha)")
    shape, dtype = _matmul_infer(inputs[:2], trans_a, trans_b)
    if len(shape) == 1 and inputs[0].ndim == 2 and inputs[1].ndim == 1:  # matrix @ vector: one column
        if act != "identity":
            raise GraphError("dense of a matrix and a vector takes no activation")
        if len(inputs) == 3 and inputs[2].shape != ():
            raise GraphError(f"dense of a matrix and a vector: the bias must be a scalar, got shape {inputs[2].shape}")
        return shape, dtype
    if len(shape) != 2:
        raise GraphError("dense needs 2-d operands")
    if len(inputs) == 3 and inputs[2].shape not in ((shape[1],), (None,)):
        raise GraphError(f"bias of shape {inputs[2].shape} does not match {shape[1]} columns")
    return shape, dtype


def _dense_forward(x, w, *b, trans_a, trans_b, act, alpha):
    z = _matmul_forward(x, w, trans_a, trans_b)
    if b:
        z = z + b[0]
    return _act_forward(z, act, alpha)


def _dense_vjp(g, out, x, w, *b, trans_a, trans_b, act, alpha):
    gz = g if act == "identity" else activation_grad(out, g, act, alpha)
    grads = _matmul_vjp(gz, None, x, w, trans_a, trans_b)
    return grads + ([unbroadcast(sum(gz, 0), b[0])] if b else [])


def _dense_branch(out, x, w, *b, act, **_):
    return np.sign(np.asarray(out, np.float64)) if act in ("relu", "leaky_relu") else None


register(OpDef("dense", infer=_dense_infer, forward=_dense_forward, vjp=_dense_vjp, lowering="gemm", fuzz="dense",
               branch=_dense_branch, made_by="passes"))


def dense(x, w, b=None, act: str = "identity", alpha: float = 0.0, trans_a=False, trans_b=False):
    """act(x @ w + b) as one op (what the fusion pass makes of matmul + bias + activation)."""
    inputs = [x, w] if b is None else [x, w, b]
    return apply("dense", inputs, trans_a=bool(trans_a), trans_b=bool(trans_b), act=act, alpha=float(alpha))


# -- matmul_update, matmul_act_grad: the SGD step's epilogues ---------------------------------------
def _mm2_infer(inputs, trans_a, trans_b, what):
    shape, dtype = _matmul_infer(inputs[:2], trans_a, trans_b)
    if len(shape) != 2:
        raise GraphError(f"{what} needs 2-d operands")
    third = inputs[2]
    if third.shape != shape or third.dtype != dtype:
        raise GraphError(f"{what}: the third input is {third.shape} {third.dtype}, not the product's "
                         f"{shape} {dtype} (no broadcasting: the GEMM's epilogue reads it index for index)")
    return shape, dtype


def _update_infer(inputs, trans_a, trans_b, alpha):
    return _mm2_infer(inputs, trans_a, trans_b, "matmul_update")


def _update_forward(a, b, x, trans_a, trans_b, alpha):
    z = _matmul_forward(a, b, trans_a, trans_b)
    # alpha in the product's dtype, as the unfused mul by a constant of that dtype computes it
    return x + np.asarray(alpha, z.dtype) * z


def _update_vjp(g, out, a, b, x, trans_a, trans_b, alpha):
    return _matmul_vjp(g * alpha, None, a, b, trans_a, trans_b) + [g]


register(OpDef("matmul_update", infer=_update_infer, forward=_update_forward, vjp=_update_vjp, arity=3,
               lowering="gemm_ex", fuzz="matmul_update", made_by="passes"))


def matmul_update(a, b, x, alpha: float, trans_a: bool = False, trans_b: bool = False):
    """x + alpha * (op(a) @ op(b)) as one GEMM (what the fusion pass makes of an SGD update
    p - lr * (X^T @ G)); x is read, never written."""
    return apply("matmul_update", [a, b, x], trans_a=bool(trans_a), trans_b=bool(trans_b), alpha=float(alpha))


GATE_ACTS = ("relu", "leaky_relu")  # derivatives that are a 0/1 (or slope) factor read from the output


def _act_mm_infer(inputs, trans_a, trans_b, act, alpha):
    if act not in GATE_ACTS:
        raise GraphError(f"matmul_act_grad supports {GATE_ACTS}, not {act!r}")
    return _mm2_infer(inputs, trans_a, trans_b, "matmul_act_grad")


def _act_mm_forward(a, b, y, trans_a, trans_b, act, alpha):
    return activation_grad_forward(y, _matmul_forward(a, b, trans_a, trans_b), act, alpha)


def _act_mm_vjp(g, out, a, b, y, trans_a, trans_b, act, alpha):
    # d/dy of g * relu'(y) is 0 away from the kink, as activation_grad's own VJP says
    return _matmul_vjp(activation_grad(y, g, act, alpha), None, a, b, trans_a, trans_b) + [None]


def _act_mm_domain(act="relu", alpha=0.0, **_):
    return (Domain(), Domain(), Domain(kinks=(0.0,)))


def _act_mm_branch(out, a, b, y, **_):
    return np.sign(np.asarray(y, np.float64))


register(OpDef("matmul_act_grad", infer=_act_mm_infer, forward=_act_mm_forward, vjp=_act_mm_vjp, arity=3,
               domain=_act_mm_domain, branch=_act_mm_branch, lowering="gemm_ex", fuzz="matmul_act_grad",
               made_by="passes"))


def matmul_act_grad(a, b, y, act: str = "relu", alpha: float = 0.0, trans_a: bool = False, trans_b: bool = False):
    """activation_grad(y, op(a) @ op(b), act, alpha) as one GEMM whose epilogue multiplies by the
    activation's derivative read from its output y (relu, leaky_relu)."""
    return apply("matmul_act_grad", [a, b, y], trans_a=bool(trans_a), trans_b=bool(trans_b), act=act,
                 alpha=float(alpha))


# -- fused elementwise ----------------------------------------------------------------------------
def run_program(program, inputs, dtype):
    """NumPy interpreter of a fused_elementwise program (the reference for the C kernel): each
    instruction runs the forward of the registry op its kernel name stands for."""
    kernels = fused_kernels()
    vals = list(inputs)
    for kernel, args, param in program:
        if kernel == "const":
            vals.append(np.asarray(param, dtype))
            continue
        op, _ = kernels[kernel]
        vals.append(op.forward(*[vals[a] for a in args], **op.kernel_attrs(kernel, param)))
    return np.asarray(vals[-1], dtype=dtype)


def _fused_infer(inputs, program, shape, dtype):
    for t in inputs:
        if t.shape not in (tuple(shape), ()):
            raise GraphError(f"fused_elementwise input of shape {t.shape} is neither {shape} nor a scalar")
    return tuple(shape), np.dtype(dtype)


def _fused_forward(*inputs, program, shape, dtype):
    out = run_program(program, inputs, dtype)
    return np.broadcast_to(out, shape) if out.shape != tuple(shape) else out


register(OpDef("fused_elementwise", infer=_fused_infer, forward=_fused_forward, elementwise=True, inplace=True,
               lowering="fused", fuzz="fused_elementwise", no_vjp="made by the fusion pass after differentiation",
               made_by="passes"))
