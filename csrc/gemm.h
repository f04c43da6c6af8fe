/* GEMM with fused epilogue: the one matrix-multiply entry point of graphc.
 *
 *   C[M,N] = act( op(A)[M,K] @ op(B)[K,N] + beta * C + bias[N] )
 *
 * Row-major storage. op(A) = A (stored M x K, row stride lda) when transA == 0,
 * op(A) = A^T (A stored K x M, row stride lda) when transA != 0; likewise B (K x N or N x K).
 * beta is 0 (overwrite C; C may hold garbage, even NaN) or 1 (accumulate into C).
 * bias may be NULL; it is added per column (length N), before the activation.
 * act is a gc_act value; act_param is the activation's parameter (leaky-ReLU slope, ELU alpha;
 * ignored otherwise). NaN propagates through every activation (relu(NaN) = NaN, like
 * numpy.maximum). The activations are computed in double (float32 results are rounded once from
 * it) with the vmath.inc functions: sigmoid/tanh/elu are accurate to a few ulp of libm (float32:
 * correctly rounded in practice) and exact at +-inf.
 * Any of M, N, K may be 0 (K == 0 gives act(beta*C + bias)).
 */
#pragma once
#include <stdint.h>

/* Activations, generated from the GC_EW_ACT entries of elementwise.def (relu, leaky_relu,
 * sigmoid, tanh, elu, ...); GC_ACT_<NAME> is named after graphc's activation name, upper-cased. */
enum gc_act {
    GC_ACT_IDENTITY = 0,
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) GC_ACT_##NAME,
#include "elementwise.def"
    GC_ACT_END /* one past the last code */
};

void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const float *A, int64_t lda, const float *B, int64_t ldb,
              float beta, float *C, int64_t ldc,
              const float *bias, int act, float act_param);
void gc_dgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const double *A, int64_t lda, const double *B, int64_t ldb,
              double beta, double *C, int64_t ldc,
              const double *bias, int act, double act_param);

/* Threads used by the GEMM (and other parallel kernels). <= 0 means "use the default"
 * (GRAPHC_NUM_THREADS if set, otherwise the OpenMP default). */
void gc_set_num_threads(int n);
int gc_get_num_threads(void);
/* SIMD level of the GEMM micro-kernels: the best one this CPU (and OS) supports, capped by the
 * test hooks below. Anything nonzero also selects exec.c's AVX2 GEMV. */
enum gc_simd { GC_SIMD_SCALAR = 0, GC_SIMD_AVX2 = 1, GC_SIMD_AVX512 = 2 };
int gc_simd_level(void);
/* Force the portable path (0) or re-enable auto-detection (nonzero); used by tests. */
void gc_set_simd_enabled(int enabled);
/* Cap the level at `level` (0 scalar, 1 AVX2+FMA, 2 AVX-512; < 0: no cap), so tests can run each
 * level the CPU has: after gc_set_simd_max(L), gc_simd_level() == L iff the CPU supports L. */
void gc_set_simd_max(int level);
