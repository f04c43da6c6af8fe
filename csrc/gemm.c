/* Reference (naive) GEMM: placeholder until the packed AVX2 kernel lands. */
#include <math.h>
#include <stdlib.h>
#include <omp.h>
#include "gemm.h"

static int g_threads = 0;
static int g_simd_enabled = 1;

void gc_set_num_threads(int n) { g_threads = n > 0 ? n : 0; }
int gc_get_num_threads(void) {
    if (g_threads > 0) return g_threads;
    const char *e = getenv("GRAPHC_NUM_THREADS");
    if (e && atoi(e) > 0) return atoi(e);
    return omp_get_max_threads();
}
int gc_simd_level(void) { return 0 && g_simd_enabled; }
void gc_set_simd_enabled(int enabled) { g_simd_enabled = enabled != 0; }

#define NAIVE_GEMM(NAME, T, EXP)                                                              \
void NAME(int transA, int transB, int64_t M, int64_t N, int64_t K, const T *A, int64_t lda,   \
          const T *B, int64_t ldb, T beta, T *C, int64_t ldc, const T *bias, int act,         \
          T act_param) {                                                                      \
    for (int64_t i = 0; i < M; i++)                                                           \
        for (int64_t j = 0; j < N; j++) {                                                     \
            T s = 0;                                                                          \
            for (int64_t k = 0; k < K; k++)                                                   \
                s += (transA ? A[k * lda + i] : A[i * lda + k]) *                             \
                     (transB ? B[j * ldb + k] : B[k * ldb + j]);                              \
            if (beta != 0) s += C[i * ldc + j];                                               \
            if (bias) s += bias[j];                                                           \
            switch (act) {                                                                    \
            case GC_ACT_RELU: s = s > 0 ? s : 0; break;                                       \
            case GC_ACT_LEAKY_RELU: s = s > 0 ? s : s * act_param; break;                     \
            case GC_ACT_SIGMOID: s = 1 / (1 + EXP(-s)); break;                                \
            case GC_ACT_TANH: s = tanh(s); break;                                             \
            default: break;                                                                   \
            }                                                                                 \
            C[i * ldc + j] = s;                                                               \
        }                                                                                     \
}
NAIVE_GEMM(gc_sgemm, float, expf)
NAIVE_GEMM(gc_dgemm, double, exp)
