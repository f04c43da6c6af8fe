"""Graph -> Graph rewrites run by gc.compile on the specialised (concrete-shape) graph.

Each pass takes the list of output Tensors and returns a new list; nodes are immutable, so a
pass rebuilds only what changes. The pipeline, in order:

  simplify        x*1, x+0, --x, transpose∘transpose, sum over size-1 axes, matmul(Aᵀ, B) -> trans flag,
                  op(float32, float64) -> op(cast(float32), float64) for products and binary primitives
  fold_constants  evaluate subgraphs that depend on constants only
  cse             one node per (op, attributes, inputs), also across forward and backward
  fuse_losses     nll_loss(log_softmax(z)) -> softmax_cross_entropy(z); BCE(sigmoid(z)) -> BCE on logits
  fuse_dense      act(matmul(x, W) + b) -> dense(x, W, b, act): one GEMM with its epilogue
  fuse_gemm_epilogue  x - c*(A @ B) -> matmul_update; activation_grad(y, A @ B, relu) -> matmul_act_grad
  fuse_elementwise chains of elementwise ops -> one fused_elementwise node
  dce             only what the outputs need (every pass also drops what became unreachable)

gc.compile(..., passes=[...]) picks a subset (in pipeline order); optimize=False runs none.
"""
from __future__ import annotations

from .basic import cse, dce, fold_constants, simplify
from .fusion import fuse_dense, fuse_elementwise, fuse_gemm_epilogue, fuse_losses

PIPELINE = {
    "simplify": simplify,
    "fold_constants": fold_constants,
    "cse": cse,
    "fuse_losses": fuse_losses,
    "fuse_dense": fuse_dense,
    "fuse_gemm_epilogue": fuse_gemm_epilogue,
    "fuse_elementwise": fuse_elementwise,
    "dce": dce,
}
DEFAULT_PASSES = tuple(PIPELINE)


def run_pipeline(outputs: list, passes=DEFAULT_PASSES) -> list:
    unknown = set(passes) - set(PIPELINE)
    if unknown:
        from ...ir.errors import GraphError
        raise GraphError(f"unknown pass(es) {sorted(unknown)}; available: {list(PIPELINE)}")
    for name, fn in PIPELINE.items():
        if name in passes:
            outputs = fn(outputs)
    return outputs


__all__ = ["PIPELINE", "DEFAULT_PASSES", "run_pipeline", "simplify", "fold_constants", "cse", "dce",
           "fuse_losses", "fuse_dense", "fuse_gemm_epilogue", "fuse_elementwise"]
