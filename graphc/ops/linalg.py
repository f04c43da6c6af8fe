"""Matrix product. Transposed operands are attributes, not copies: the GEMM packs them."""
from __future__ import annotations

import numpy as np

from ..ir.errors import GraphError
from ..ir.tensor import Tensor
from . import OpDef, apply, promote, register
from .shape import expand_dims, squeeze

__all__ = ["matmul"]


def _matmul_infer(inputs, trans_a=False, trans_b=False):
    a, b = inputs
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise GraphError(f"matmul supports 1-d and 2-d operands, got {a.ndim}-d @ {b.ndim}-d")
    if (trans_a and a.ndim != 2) or (trans_b and b.ndim != 2):
        raise GraphError("transposed matmul operands must be 2-d")
    if a.dtype.kind != "f" or b.dtype.kind != "f":
        raise GraphError(f"matmul needs floating operands, got {a.dtype} and {b.dtype}")
    sa = a.shape[::-1] if trans_a else a.shape
    sb = b.shape[::-1] if trans_b else b.shape
    ka, kb = sa[-1], sb[0]
    if ka is not None and kb is not None and ka != kb:
        raise GraphError(f"inner dimensions differ: {ka} vs {kb}")
    return sa[:-1] + sb[1:], np.result_type(a.dtype, b.dtype)


def widen(*arrays) -> list:
    """float32 arrays as float64, others unchanged: the NumPy kernels of the products (matmul, the
    convolutions) compute a float32 product in float64 and round it once to float32.

    Why: NumPy's float32 BLAS may give a row of a product other bits depending on where the row sits
    in the block it computes. OpenBLAS 0.3.31's kernels on an AMD EPYC (Zen 5) did, for 38-284 of
    128 rows moved by a few places, and for the last 40 of 1000 output channels of a convolution.
    graphc promises that an attack on any chunking of the data gives the same bits, and a network
    whose channels are equal in exact arithmetic gives equal channels (ONNX's light SqueezeNet ends
    in a softmax of 1e10 logits). In float64 those differences stay far below float32's rounding
    (none in the same probes). The cost: this backend's W-mlp training step takes about 2.5x as
    long (2.8x NumPy's hand-written step instead of 1.1x; graphc bench --suite peers)."""
    return [a.astype(np.float64) if a.dtype == np.float32 else a for a in arrays]


def _matmul_forward(a, b, trans_a=False, trans_b=False):
    wa, wb = widen(a, b)
    return np.matmul(wa.T if trans_a else wa, wb.T if trans_b else wb).astype(np.result_type(a, b), copy=False)


def _matmul_vjp(g, out, a, b, trans_a=False, trans_b=False):
    if a.ndim == 2 and b.ndim == 2:
        # C = op(A) op(B): d op(A) = g op(B)^T, d op(B) = op(A)^T g, written without copies.
        ga = matmul(b, g, trans_a=trans_b, trans_b=True) if trans_a else matmul(g, b, trans_b=not trans_b)
        gb = matmul(g, a, trans_a=True, trans_b=trans_a) if trans_b else matmul(a, g, trans_a=not trans_a)
        return [ga, gb]
    # 1-d operands: promote to matrices as numpy.matmul does, then drop the added axes.
    a2 = expand_dims(a, 0) if a.ndim == 1 else a
    b2 = expand_dims(b, 1) if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = expand_dims(g2, 0)
    if b.ndim == 1:
        g2 = expand_dims(g2, g2.ndim)
    ga, gb = _matmul_vjp(g2, None, a2, b2, trans_a, trans_b)
    return [squeeze(ga, 0) if a.ndim == 1 else ga, squeeze(gb, 1) if b.ndim == 1 else gb]


register(OpDef("matmul", infer=_matmul_infer, forward=_matmul_forward, vjp=_matmul_vjp, arity=2, promotes=True,
               lowering="gemm", fuzz="matmul", fuzz_weight=2))


def matmul(a, b, trans_a: bool = False, trans_b: bool = False) -> Tensor:
    """Matrix product of 1-d/2-d operands (numpy.matmul rules); trans_a/trans_b use Aᵀ / Bᵀ."""
    a, b = promote(a, b)
    return apply("matmul", [a, b], trans_a=bool(trans_a), trans_b=bool(trans_b))
