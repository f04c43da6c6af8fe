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

/* The extended entry point: one descriptor for everything the epilogue can do.
 *
 *   C = gate'( act( alpha * op(A) @ op(B) + beta * C + addend + bias[N] ), gate )
 *
 * alpha scales the product (the SGD step W - lr * X^T G is alpha = -lr, addend = W).
 * addend (M x N, row stride ldx) may be NULL; it is read on the write-back of the last K block
 * and must not overlap C (C holds partial sums across K blocks), nor may gate.
 * gate (M x N, row stride ldg) may be NULL; otherwise each result is multiplied, after the
 * activation, by the derivative of gate_act read from its output (the forward activations of a
 * ReLU layer): relu: gate > 0 ? 1 : 0, leaky_relu: gate > 0 ? 1 : gate_param; the products are
 * those of graphc's activation_grad kernel (g * 0 keeps a NaN g a NaN). Other gate_act values,
 * negative sizes or leading dimensions smaller than a row give GC_K_EINVAL (-1) and touch
 * nothing; 0 on success.
 * colsum_b (length n) may be NULL; otherwise it receives sum_k op(B)[k, j], summed row after row
 * like NumPy's sum over axis 0 and computed from the packed panels of B while they are in cache:
 * the bias gradient db = sum over the batch of dZ next to dW = X^T dZ, without another pass over
 * dZ. It must not overlap any operand. */
typedef struct {
    int trans_a, trans_b;
    int64_t m, n, k;
    const void *a;
    int64_t lda;
    const void *b;
    int64_t ldb;
    void *c;
    int64_t ldc;
    double alpha, beta;
    const void *bias; /* length n, or NULL */
    int act;          /* a gc_act applied after the addend and bias */
    double act_param;
    const void *addend;
    int64_t ldx;
    const void *gate;
    int64_t ldg;
    int gate_act; /* GC_ACT_RELU or GC_ACT_LEAKY_RELU when gate != NULL */
    double gate_param;
    void *colsum_b; /* NULL, or length n: receives the column sums of op(B) over K */
} gc_gemm_desc;

int gc_sgemm_ex(const gc_gemm_desc *d);
int gc_dgemm_ex(const gc_gemm_desc *d);
/* colsum_b alone (float64 when f64): out[j] = sum_k op(B)[k, j], op(B) K x N, for the callers that
 * compute a product without the packed GEMM. */
void gc_gemm_colsum(int f64, int trans_b, int64_t K, int64_t N, const void *B, int64_t ldb, void *out);

/* 1 when gc_sgemm / gc_sgemm_ex would run an M x N x K product (op(A) = A^T when transA) through
 * the unpacked kernels for thin shapes (N or K <= 16) at the current SIMD level: callers with
 * their own small-product loops (exec.c) leave those products to the GEMM. */
int gc_sgemm_is_thin(int transA, int64_t M, int64_t N, int64_t K);

/* Threads: gc_set_num_threads / gc_get_num_threads are in threads.h. */
/* SIMD level of the GEMM micro-kernels: the best one this CPU (and OS) supports, capped by the
 * test hooks below. Anything nonzero also selects exec.c's AVX2 GEMV. */
enum gc_simd { GC_SIMD_SCALAR = 0, GC_SIMD_AVX2 = 1, GC_SIMD_AVX512 = 2 };
int gc_simd_level(void);
/* Force the portable path (0) or re-enable auto-detection (nonzero); used by tests. */
void gc_set_simd_enabled(int enabled);
/* Cap the level at `level` (0 scalar, 1 AVX2+FMA, 2 AVX-512; < 0: no cap), so tests can run each
 * level the CPU has: after gc_set_simd_max(L), gc_simd_level() == L iff the CPU supports L. */
void gc_set_simd_max(int level);
