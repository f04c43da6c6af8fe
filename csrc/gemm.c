/* Packed, cache-blocked GEMM with a fused epilogue (GotoBLAS/BLIS structure).
 *
 *   for jc in N step NC:            B block (KC x NC) lives in L3, shared by all threads
 *     for pc in K step KC:          pack B[pc:pc+KC, jc:jc+NC] into NR-wide panels
 *       for ic in M step MC:        pack A[ic:ic+MC, pc:pc+KC] into MR-tall panels (L2)
 *         for jr in NC step NR:     one B micro-panel (KC x NR) stays in L1
 *           for ir in MC step MR:   register micro-kernel: MR x NR tile of C
 *
 * Packing copies every operand into zero-padded, 64-byte-aligned panels, so the micro-kernel
 * never sees a stride, a transpose or a ragged edge: transposes are handled by the packing
 * routines reading with swapped strides, edges by zero padding on read and by a bounded
 * write-back (an edge tile is computed into a local buffer and only its valid part stored).
 *
 * The epilogue (beta * C, bias, activation) is applied while the tile is in registers, on the
 * write-back of the last K block; earlier K blocks just accumulate into C.
 *
 * Two implementations share the driver: AVX2+FMA micro-kernels (compiled per function with
 * target attributes, since the module is built for plain x86-64) and a portable plain-C one.
 * Scratch is allocated per call: two threads may run GEMMs concurrently.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GC_X86 1
#endif
#include "gemm.h"

/* ------------------------------------------------------------------------------------------ */
/* Threads and SIMD selection                                                                  */
/* ------------------------------------------------------------------------------------------ */

static int g_threads = 0;
static int g_simd_enabled = 1;
static int g_cpu_avx2 = 0; /* set once at load time, read-only afterwards */

#ifdef GC_X86
__attribute__((constructor)) static void gemm_detect_cpu(void) {
    __builtin_cpu_init();
    g_cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

void gc_set_num_threads(int n) { g_threads = n > 0 ? n : 0; }
int gc_get_num_threads(void) {
    if (g_threads > 0) return g_threads;
    const char *e = getenv("GRAPHC_NUM_THREADS");
    if (e && atoi(e) > 0) return atoi(e);
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
int gc_simd_level(void) { return g_cpu_avx2 && g_simd_enabled; }
void gc_set_simd_enabled(int enabled) { g_simd_enabled = enabled != 0; }

/* ------------------------------------------------------------------------------------------ */
/* Shared definitions                                                                          */
/* ------------------------------------------------------------------------------------------ */

#define GC_ALIGN 64
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* aligned_alloc needs a size that is a multiple of the alignment. */
static void *scratch_alloc(size_t bytes) {
    return aligned_alloc(GC_ALIGN, (size_t)round_up((int64_t)(bytes ? bytes : 1), GC_ALIGN));
}

/* One GEMM call, type-erased so the blocking driver is written once for float and double. */
typedef struct {
    int transA, transB;
    int64_t M, N, K, lda, ldb, ldc;
    const void *A, *B;
    void *C;
    const void *bias;
    double beta, act_param;
    int act;
} gemm_args;

/* What the write-back of one micro-tile must do. Earlier K blocks only accumulate. */
typedef struct {
    int add_c;        /* add beta*C (first K block, beta != 0) or C (later K blocks) */
    double beta;      /* multiplier of the old C when add_c */
    int last;         /* last K block: add the bias and apply the activation */
    int act;
    double act_param;
} epi_t;

/* kernel(kc, packed A panel, packed B panel, C tile, ldc, valid rows m <= MR, valid cols n <= NR,
 *        epilogue, bias + column offset of this tile or NULL) */
typedef void (*kernel_fn)(int64_t, const void *, const void *, void *, int64_t, int64_t, int64_t,
                          const epi_t *, const void *);
/* pack_a(A, lda, transA, row0, col0 (k), rows, kc, dst): MR-tall panels, k-major inside a panel.
 * pack_b(B, ldb, transB, row0 (k), col0, kc, cols, dst): NR-wide panels, k-major inside. */
typedef void (*pack_fn)(const void *, int64_t, int, int64_t, int64_t, int64_t, int64_t, void *);

typedef struct {
    size_t esize;
    int64_t mr, nr, mc, kc, nc;
    pack_fn pack_a, pack_b;
    kernel_fn kernel;
} gemm_impl;

/* ------------------------------------------------------------------------------------------ */
/* Scalar activation (also the reference for the vectorised epilogue)                          */
/* ------------------------------------------------------------------------------------------ */

/* relu as "s < 0 ? 0 : s" keeps NaN (like numpy.maximum) and matches _mm256_max_p*(0, s). */
static inline float act_f32(float s, int act, float p) {
    switch (act) {
    case GC_ACT_RELU: return s < 0 ? 0.0f : s;
    case GC_ACT_LEAKY_RELU: return s < 0 ? s * p : s;
    /* In double, then rounded once: correctly rounded in practice, exact limits at +-inf. */
    case GC_ACT_SIGMOID: return (float)(1.0 / (1.0 + exp(-(double)s)));
    case GC_ACT_TANH: return (float)tanh((double)s);
    default: return s;
    }
}

static inline double act_f64(double s, int act, double p) {
    switch (act) {
    case GC_ACT_RELU: return s < 0 ? 0.0 : s;
    case GC_ACT_LEAKY_RELU: return s < 0 ? s * p : s;
    case GC_ACT_SIGMOID: return 1.0 / (1.0 + exp(-s));
    case GC_ACT_TANH: return tanh(s);
    default: return s;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Type-generic scalar pieces, instantiated for float (s) and double (d)                       */
/* ------------------------------------------------------------------------------------------ */

/* Portable micro-kernel size: 8 SSE2 registers of accumulators for float, 8 for double. */
#define SC_MR 4
#define SC_NR 8

#define GEN_SCALAR(P, T, ACT)                                                                      \
/* Write back an m x n tile held in acc (row stride accld) into C with the epilogue. */            \
static void P##_tile_store(const T *acc, int64_t accld, int64_t m, int64_t n, T *c, int64_t ldc,  \
                           const epi_t *e, const T *bias) {                                       \
    const T beta = (T)e->beta, p = (T)e->act_param;                                               \
    for (int64_t i = 0; i < m; i++)                                                                \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T s = acc[i * accld + j];                                                              \
            if (e->add_c) s += beta * c[i * ldc + j];                                              \
            if (e->last) {                                                                         \
                if (bias) s += bias[j];                                                            \
                s = ACT(s, e->act, p);                                                             \
            }                                                                                      \
            c[i * ldc + j] = s;                                                                    \
        }                                                                                          \
}                                                                                                  \
                                                                                                   \
/* A panel i (rows row0+i*mr ...) at dst + i*mr*kc, laid out [k][mr]; rows past `rows` are 0. */  \
static void P##_pack_a_mr(const T *A, int64_t lda, int transA, int64_t row0, int64_t col0,        \
                          int64_t rows, int64_t kc, T *dst, int64_t mr) {                         \
    for (int64_t i0 = 0; i0 < rows; i0 += mr, dst += mr * kc) {                                    \
        const int64_t m = MIN(mr, rows - i0);                                                      \
        if (!transA) { /* A is M x K: row r of the panel is contiguous in k */                     \
            for (int64_t i = 0; i < m; i++) {                                                      \
                const T *src = A + (row0 + i0 + i) * lda + col0;                                   \
                for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = src[k];                         \
            }                                                                                      \
            for (int64_t i = m; i < mr; i++)                                                       \
                for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = 0;                              \
        } else {       /* A is K x M: for fixed k the panel's rows are contiguous */               \
            for (int64_t k = 0; k < kc; k++) {                                                     \
                const T *src = A + (col0 + k) * lda + row0 + i0;                                   \
                int64_t i = 0;                                                                     \
                for (; i < m; i++) dst[k * mr + i] = src[i];                                       \
                for (; i < mr; i++) dst[k * mr + i] = 0;                                           \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* B panel j (cols col0+j*nr ...) at dst + j*nr*kc, laid out [k][nr]; cols past `cols` are 0. */  \
static void P##_pack_b_nr(const T *B, int64_t ldb, int transB, int64_t row0, int64_t col0,        \
                          int64_t kc, int64_t cols, T *dst, int64_t nr) {                         \
    for (int64_t j0 = 0; j0 < cols; j0 += nr, dst += nr * kc) {                                    \
        const int64_t n = MIN(nr, cols - j0);                                                      \
        if (!transB) { /* B is K x N: for fixed k the panel's columns are contiguous */            \
            for (int64_t k = 0; k < kc; k++) {                                                     \
                const T *src = B + (row0 + k) * ldb + col0 + j0;                                   \
                int64_t j = 0;                                                                     \
                for (; j < n; j++) dst[k * nr + j] = src[j];                                       \
                for (; j < nr; j++) dst[k * nr + j] = 0;                                           \
            }                                                                                      \
        } else {       /* B is N x K: column j of the panel is contiguous in k */                  \
            for (int64_t j = 0; j < n; j++) {                                                      \
                const T *src = B + (col0 + j0 + j) * ldb + row0;                                   \
                for (int64_t k = 0; k < kc; k++) dst[k * nr + j] = src[k];                         \
            }                                                                                      \
            for (int64_t j = n; j < nr; j++)                                                       \
                for (int64_t k = 0; k < kc; k++) dst[k * nr + j] = 0;                              \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static void P##_pack_a_sc(const void *A, int64_t lda, int tA, int64_t r0, int64_t c0, int64_t rows,\
                          int64_t kc, void *dst) {                                                 \
    P##_pack_a_mr((const T *)A, lda, tA, r0, c0, rows, kc, (T *)dst, SC_MR);                       \
}                                                                                                  \
static void P##_pack_b_sc(const void *B, int64_t ldb, int tB, int64_t r0, int64_t c0, int64_t kc, \
                          int64_t cols, void *dst) {                                               \
    P##_pack_b_nr((const T *)B, ldb, tB, r0, c0, kc, cols, (T *)dst, SC_NR);                       \
}                                                                                                  \
                                                                                                   \
/* Portable micro-kernel: plain C, the compiler vectorises the j loop with SSE2. */                \
static void P##_kernel_sc(int64_t kc, const void *va, const void *vb, void *vc, int64_t ldc,      \
                          int64_t m, int64_t n, const epi_t *e, const void *bias) {               \
    const T *a = (const T *)va, *b = (const T *)vb;                                                \
    T acc[SC_MR * SC_NR] = {0};                                                                    \
    for (int64_t k = 0; k < kc; k++, a += SC_MR, b += SC_NR)                                       \
        for (int i = 0; i < SC_MR; i++)                                                            \
            for (int j = 0; j < SC_NR; j++) acc[i * SC_NR + j] += a[i] * b[j];                     \
    P##_tile_store(acc, SC_NR, m, n, (T *)vc, ldc, e, (const T *)bias);                            \
}                                                                                                  \
                                                                                                   \
/* Tiny problems: no packing, no threads; strided dot products in blocks of 64 columns. */         \
static void P##_direct(const gemm_args *g) {                                                       \
    const T *A = (const T *)g->A, *B = (const T *)g->B, *bias = (const T *)g->bias;               \
    T *C = (T *)g->C;                                                                              \
    const int64_t sak = g->transA ? g->lda : 1, sai = g->transA ? 1 : g->lda;                      \
    const int64_t sbk = g->transB ? 1 : g->ldb, sbj = g->transB ? g->ldb : 1;                      \
    const epi_t e = {g->beta != 0, g->beta, 1, g->act, g->act_param};                              \
    T acc[64];                                                                                     \
    for (int64_t i = 0; i < g->M; i++)                                                             \
        for (int64_t j0 = 0; j0 < g->N; j0 += 64) {                                                \
            const int64_t n = MIN(64, g->N - j0);                                                  \
            for (int64_t j = 0; j < n; j++) acc[j] = 0;                                            \
            for (int64_t k = 0; k < g->K; k++) {                                                   \
                const T a = A[i * sai + k * sak];                                                  \
                const T *b = B + k * sbk + j0 * sbj;                                               \
                for (int64_t j = 0; j < n; j++) acc[j] += a * b[j * sbj];                          \
            }                                                                                      \
            P##_tile_store(acc, 0, 1, n, C + i * g->ldc + j0, g->ldc, &e, bias ? bias + j0 : NULL);\
        }                                                                                          \
}                                                                                                  \
                                                                                                   \
/* K == 0: C = act(beta * C + bias), nothing to multiply. */                                       \
static void P##_no_k(const gemm_args *g) {                                                         \
    const T zero = 0;                                                                              \
    const epi_t e = {g->beta != 0, g->beta, 1, g->act, g->act_param};                              \
    const T *bias = (const T *)g->bias;                                                            \
    for (int64_t i = 0; i < g->M; i++)                                                             \
        for (int64_t j = 0; j < g->N; j++)                                                         \
            P##_tile_store(&zero, 0, 1, 1, (T *)g->C + i * g->ldc + j, g->ldc, &e,                 \
                           bias ? bias + j : NULL);                                                \
}

GEN_SCALAR(s, float, act_f32)
GEN_SCALAR(d, double, act_f64)

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA micro-kernels                                                                    */
/* ------------------------------------------------------------------------------------------ */

#ifdef GC_X86
#define AVX2 __attribute__((target("avx2,fma")))

/* sgemm: 6 x 16 tile = 12 ymm accumulators + 2 B vectors + 1 A broadcast (15 of 16 registers). */
#define S_MR 6
#define S_NR 16
/* dgemm: 6 x 8 tile, same register budget with 4 doubles per vector. */
#define D_MR 6
#define D_NR 8

AVX2 static inline __m256 s_act8(__m256 v, int act, __m256 p) {
    const __m256 zero = _mm256_setzero_ps();
    switch (act) {
    case GC_ACT_RELU: return _mm256_max_ps(zero, v); /* NaN in v -> v */
    case GC_ACT_LEAKY_RELU:
        return _mm256_blendv_ps(v, _mm256_mul_ps(v, p), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    default: return v;
    }
}

AVX2 static inline __m256d d_act4(__m256d v, int act, __m256d p) {
    const __m256d zero = _mm256_setzero_pd();
    switch (act) {
    case GC_ACT_RELU: return _mm256_max_pd(zero, v);
    case GC_ACT_LEAKY_RELU:
        return _mm256_blendv_pd(v, _mm256_mul_pd(v, p), _mm256_cmp_pd(v, zero, _CMP_LT_OQ));
    default: return v;
    }
}

static int act_in_registers(int act) {
    return act == GC_ACT_IDENTITY || act == GC_ACT_RELU || act == GC_ACT_LEAKY_RELU;
}

AVX2 static void s_pack_a_avx2(const void *A, int64_t lda, int tA, int64_t r0, int64_t c0,
                               int64_t rows, int64_t kc, void *dst) {
    s_pack_a_mr((const float *)A, lda, tA, r0, c0, rows, kc, (float *)dst, S_MR);
}
AVX2 static void s_pack_b_avx2(const void *B, int64_t ldb, int tB, int64_t r0, int64_t c0,
                               int64_t kc, int64_t cols, void *dst) {
    s_pack_b_nr((const float *)B, ldb, tB, r0, c0, kc, cols, (float *)dst, S_NR);
}
AVX2 static void d_pack_a_avx2(const void *A, int64_t lda, int tA, int64_t r0, int64_t c0,
                               int64_t rows, int64_t kc, void *dst) {
    d_pack_a_mr((const double *)A, lda, tA, r0, c0, rows, kc, (double *)dst, D_MR);
}
AVX2 static void d_pack_b_avx2(const void *B, int64_t ldb, int tB, int64_t r0, int64_t c0,
                               int64_t kc, int64_t cols, void *dst) {
    d_pack_b_nr((const double *)B, ldb, tB, r0, c0, kc, cols, (double *)dst, D_NR);
}

/* One k step of the 6-row kernels: broadcast A[k][i], FMA into both halves of row i. */
#define S_FMA_ROW(i)                                                                               \
    do {                                                                                           \
        const __m256 ai = _mm256_broadcast_ss(a + (i));                                            \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                                                \
        c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                                                \
    } while (0)

#define S_STEP()                                                                                   \
    do {                                                                                           \
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);                           \
        S_FMA_ROW(0); S_FMA_ROW(1); S_FMA_ROW(2); S_FMA_ROW(3); S_FMA_ROW(4); S_FMA_ROW(5);        \
        a += S_MR;                                                                                 \
        b += S_NR;                                                                                 \
    } while (0)

/* Full-tile write-back of row i with the epilogue in registers. */
#define S_STORE_ROW(i)                                                                             \
    do {                                                                                           \
        float *cr = c + (i) * ldc;                                                                 \
        __m256 v0 = c##i##0, v1 = c##i##1;                                                         \
        if (e->add_c) {                                                                            \
            v0 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr), v0);                                  \
            v1 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr + 8), v1);                              \
        }                                                                                          \
        if (bias) {                                                                                \
            v0 = _mm256_add_ps(v0, bias0);                                                         \
            v1 = _mm256_add_ps(v1, bias1);                                                         \
        }                                                                                          \
        _mm256_storeu_ps(cr, s_act8(v0, act, vp));                                                 \
        _mm256_storeu_ps(cr + 8, s_act8(v1, act, vp));                                             \
    } while (0)

#define S_SPILL_ROW(i)                                                                             \
    do {                                                                                           \
        _mm256_store_ps(tile + (i) * S_NR, c##i##0);                                               \
        _mm256_store_ps(tile + (i) * S_NR + 8, c##i##1);                                           \
    } while (0)

AVX2 static void s_kernel_avx2(int64_t kc, const void *va, const void *vb, void *vc, int64_t ldc,
                               int64_t m, int64_t n, const epi_t *e, const void *vbias) {
    const float *a = (const float *)va, *b = (const float *)vb;
    float *c = (float *)vc;
    const float *bias = e->last ? (const float *)vbias : NULL;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;

    /* The C tile is needed only after the K loop; start fetching it now so that its misses
     * (C is re-read once per K block) overlap the arithmetic. */
    if (e->add_c)
        for (int64_t i = 0; i < S_MR; i++) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + S_NR - 1), _MM_HINT_T0);
        }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(a + 8 * S_MR), _MM_HINT_T0);
        S_STEP(); S_STEP(); S_STEP(); S_STEP();
    }
    for (; k < kc; k++) S_STEP();

    if (m == S_MR && n == S_NR) {
        const int act = e->last && act_in_registers(e->act) ? e->act : GC_ACT_IDENTITY;
        const __m256 vbeta = _mm256_set1_ps((float)e->beta), vp = _mm256_set1_ps((float)e->act_param);
        const __m256 bias0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 bias1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        S_STORE_ROW(0); S_STORE_ROW(1); S_STORE_ROW(2); S_STORE_ROW(3); S_STORE_ROW(4); S_STORE_ROW(5);
        if (e->last && !act_in_registers(e->act)) /* sigmoid / tanh: libm on the tile, still in L1 */
            for (int i = 0; i < S_MR; i++)
                for (int j = 0; j < S_NR; j++) c[i * ldc + j] = act_f32(c[i * ldc + j], e->act, 0);
    } else {
        float tile[S_MR * S_NR] __attribute__((aligned(32)));
        S_SPILL_ROW(0); S_SPILL_ROW(1); S_SPILL_ROW(2); S_SPILL_ROW(3); S_SPILL_ROW(4); S_SPILL_ROW(5);
        s_tile_store(tile, S_NR, m, n, c, ldc, e, bias);
    }
}

#define D_FMA_ROW(i)                                                                               \
    do {                                                                                           \
        const __m256d ai = _mm256_broadcast_sd(a + (i));                                           \
        c##i##0 = _mm256_fmadd_pd(ai, b0, c##i##0);                                                \
        c##i##1 = _mm256_fmadd_pd(ai, b1, c##i##1);                                                \
    } while (0)

#define D_STEP()                                                                                   \
    do {                                                                                           \
        const __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);                          \
        D_FMA_ROW(0); D_FMA_ROW(1); D_FMA_ROW(2); D_FMA_ROW(3); D_FMA_ROW(4); D_FMA_ROW(5);        \
        a += D_MR;                                                                                 \
        b += D_NR;                                                                                 \
    } while (0)

#define D_STORE_ROW(i)                                                                             \
    do {                                                                                           \
        double *cr = c + (i) * ldc;                                                                \
        __m256d v0 = c##i##0, v1 = c##i##1;                                                        \
        if (e->add_c) {                                                                            \
            v0 = _mm256_fmadd_pd(vbeta, _mm256_loadu_pd(cr), v0);                                  \
            v1 = _mm256_fmadd_pd(vbeta, _mm256_loadu_pd(cr + 4), v1);                              \
        }                                                                                          \
        if (bias) {                                                                                \
            v0 = _mm256_add_pd(v0, bias0);                                                         \
            v1 = _mm256_add_pd(v1, bias1);                                                         \
        }                                                                                          \
        _mm256_storeu_pd(cr, d_act4(v0, act, vp));                                                 \
        _mm256_storeu_pd(cr + 4, d_act4(v1, act, vp));                                             \
    } while (0)

#define D_SPILL_ROW(i)                                                                             \
    do {                                                                                           \
        _mm256_store_pd(tile + (i) * D_NR, c##i##0);                                               \
        _mm256_store_pd(tile + (i) * D_NR + 4, c##i##1);                                           \
    } while (0)

AVX2 static void d_kernel_avx2(int64_t kc, const void *va, const void *vb, void *vc, int64_t ldc,
                               int64_t m, int64_t n, const epi_t *e, const void *vbias) {
    const double *a = (const double *)va, *b = (const double *)vb;
    double *c = (double *)vc;
    const double *bias = e->last ? (const double *)vbias : NULL;
    __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;

    /* The C tile is needed only after the K loop; start fetching it now so that its misses
     * (C is re-read once per K block) overlap the arithmetic. */
    if (e->add_c)
        for (int64_t i = 0; i < D_MR; i++) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + D_NR - 1), _MM_HINT_T0);
        }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(a + 8 * D_MR), _MM_HINT_T0);
        D_STEP(); D_STEP(); D_STEP(); D_STEP();
    }
    for (; k < kc; k++) D_STEP();

    if (m == D_MR && n == D_NR) {
        const int act = e->last && act_in_registers(e->act) ? e->act : GC_ACT_IDENTITY;
        const __m256d vbeta = _mm256_set1_pd(e->beta), vp = _mm256_set1_pd(e->act_param);
        const __m256d bias0 = bias ? _mm256_loadu_pd(bias) : _mm256_setzero_pd();
        const __m256d bias1 = bias ? _mm256_loadu_pd(bias + 4) : _mm256_setzero_pd();
        D_STORE_ROW(0); D_STORE_ROW(1); D_STORE_ROW(2); D_STORE_ROW(3); D_STORE_ROW(4); D_STORE_ROW(5);
        if (e->last && !act_in_registers(e->act))
            for (int i = 0; i < D_MR; i++)
                for (int j = 0; j < D_NR; j++) c[i * ldc + j] = act_f64(c[i * ldc + j], e->act, 0);
    } else {
        double tile[D_MR * D_NR] __attribute__((aligned(32)));
        D_SPILL_ROW(0); D_SPILL_ROW(1); D_SPILL_ROW(2); D_SPILL_ROW(3); D_SPILL_ROW(4); D_SPILL_ROW(5);
        d_tile_store(tile, D_NR, m, n, c, ldc, e, bias);
    }
}

/* Zen 3 figures: A block (MC x KC) ~147 KB sits in L2, a B micro-panel (KC x NR) 16 KB in L1,
 * the B block (KC x NC) in L3. */
static const gemm_impl S_AVX2 = {sizeof(float), S_MR, S_NR, 144, 256, 4080,
                                 s_pack_a_avx2, s_pack_b_avx2, s_kernel_avx2};
static const gemm_impl D_AVX2 = {sizeof(double), D_MR, D_NR, 72, 256, 4080,
                                 d_pack_a_avx2, d_pack_b_avx2, d_kernel_avx2};
#endif /* GC_X86 */

static const gemm_impl S_SCALAR = {sizeof(float), SC_MR, SC_NR, 128, 256, 4096,
                                   s_pack_a_sc, s_pack_b_sc, s_kernel_sc};
static const gemm_impl D_SCALAR = {sizeof(double), SC_MR, SC_NR, 64, 256, 4096,
                                   d_pack_a_sc, d_pack_b_sc, d_kernel_sc};

/* ------------------------------------------------------------------------------------------ */
/* Blocking driver                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const gemm_impl *im;
    const gemm_args *g;
    int nt;
    int split_rows;     /* 1: threads own disjoint row ranges (IC loop); 0: disjoint JR ranges */
    int64_t kc_max, mc_max;
    char *bpack;        /* kc_max x round_up(nc, NR), shared */
    char *apack;        /* per thread: mc_max x kc_max */
    size_t apack_stride;
} driver_ctx;

#define AT(p, elems, es) ((const char *)(p) + (size_t)(elems) * (es))

/* C tiles for rows [ic, ic+mc) x panels [jp0, jp1) of the current B block. */
static void macro_kernel(const driver_ctx *x, const char *apack, int64_t ic, int64_t mc, int64_t jc,
                         int64_t nc, int64_t jp0, int64_t jp1, int64_t kc, const epi_t *e) {
    const gemm_impl *im = x->im;
    const gemm_args *g = x->g;
    const size_t es = im->esize;
    for (int64_t jp = jp0; jp < jp1; jp++) {
        const int64_t jr = jp * im->nr, n = MIN(im->nr, nc - jr);
        const char *bpanel = x->bpack + (size_t)(jr * kc) * es;
        const void *bias = g->bias ? AT(g->bias, jc + jr, es) : NULL;
        for (int64_t ir = 0; ir < mc; ir += im->mr) {
            char *c = (char *)g->C + (size_t)((ic + ir) * g->ldc + jc + jr) * es;
            im->kernel(kc, apack + (size_t)(ir * kc) * es, bpanel, c, g->ldc,
                       MIN(im->mr, mc - ir), n, e, bias);
        }
    }
}

/* Body run by every thread (tid of nt); with nt == 1 it is called without a parallel region,
 * where the barriers are no-ops. */
static void driver_body(const driver_ctx *x, int tid) {
    const gemm_impl *im = x->im;
    const gemm_args *g = x->g;
    const int nt = x->nt;
    const size_t es = im->esize;
    char *apack = x->apack + x->apack_stride * (size_t)tid;

    /* Row range of this thread when splitting rows: whole MR panels, as even as possible. */
    const int64_t mpanels = (g->M + im->mr - 1) / im->mr;
    int64_t r0 = 0, r1 = g->M;
    if (x->split_rows) {
        r0 = MIN(g->M, mpanels * tid / nt * im->mr);
        r1 = MIN(g->M, mpanels * (tid + 1) / nt * im->mr);
    }

    for (int64_t jc = 0; jc < g->N; jc += im->nc) {
        const int64_t nc = MIN(im->nc, g->N - jc);
        const int64_t npanels = (nc + im->nr - 1) / im->nr;
        /* B panels packed by this thread; in JR mode also the only ones it computes with. */
        const int64_t jp0 = npanels * tid / nt, jp1 = npanels * (tid + 1) / nt;
        for (int64_t pc = 0; pc < g->K; pc += im->kc) {
            const int64_t kc = MIN(im->kc, g->K - pc);
            const epi_t e = {pc > 0 || g->beta != 0, pc > 0 ? 1.0 : g->beta, pc + kc == g->K,
                             g->act, g->act_param};
            if (jp1 > jp0)
                im->pack_b(g->B, g->ldb, g->transB, pc, jc + jp0 * im->nr, kc,
                           MIN(nc, jp1 * im->nr) - jp0 * im->nr,
                           x->bpack + (size_t)(jp0 * im->nr * kc) * es);
            if (x->split_rows) {
#pragma omp barrier
                for (int64_t ic = r0; ic < r1; ic += x->mc_max) {
                    const int64_t mc = MIN(x->mc_max, r1 - ic);
                    im->pack_a(g->A, g->lda, g->transA, ic, pc, mc, kc, apack);
                    macro_kernel(x, apack, ic, mc, jc, nc, 0, npanels, kc, &e);
                }
                /* B is repacked by all threads next iteration. */
#pragma omp barrier
            } else if (jp1 > jp0) {
                for (int64_t ic = 0; ic < g->M; ic += x->mc_max) {
                    const int64_t mc = MIN(x->mc_max, g->M - ic);
                    im->pack_a(g->A, g->lda, g->transA, ic, pc, mc, kc, apack);
                    macro_kernel(x, apack, ic, mc, jc, nc, jp0, jp1, kc, &e);
                }
            }
        }
    }
}

/* Below this many multiply-adds a call is too small to pay for packing / threads. */
#define DIRECT_MAX_FMAS 32768
#define SERIAL_MAX_FMAS (1 << 19)

static void gemm_run(const gemm_impl *im, const gemm_args *g, void (*direct)(const gemm_args *),
                     void (*no_k)(const gemm_args *)) {
    if (g->M <= 0 || g->N <= 0) return;
    if (g->K <= 0) {
        no_k(g);
        return;
    }
    const double fmas = (double)g->M * (double)g->N * (double)g->K;
    if (fmas < DIRECT_MAX_FMAS) {
        direct(g);
        return;
    }

    driver_ctx x;
    x.im = im;
    x.g = g;
    int nt = gc_get_num_threads();
    if (fmas < SERIAL_MAX_FMAS) nt = 1;
    const int64_t mpanels = (g->M + im->mr - 1) / im->mr;
    const int64_t npanels = (MIN(g->N, im->nc) + im->nr - 1) / im->nr;
    /* Split rows (each thread packs its own A blocks, all share B) when every thread gets a
     * few row panels; otherwise split the B panels and let each thread pack the small A. */
    x.split_rows = mpanels >= 4 * (int64_t)nt || mpanels >= npanels;
    if (x.split_rows) nt = (int)MIN((int64_t)nt, mpanels);
    else nt = (int)MIN((int64_t)nt, npanels);
    if (nt < 1) nt = 1;
    x.nt = nt;

    x.kc_max = MIN(im->kc, g->K);
    const int64_t rows_per_thread = x.split_rows ? (mpanels + nt - 1) / nt * im->mr : g->M;
    x.mc_max = MIN(im->mc, round_up(rows_per_thread, im->mr));
    /* Even MC blocks: e.g. 200 rows as 102 + 98 rather than 144 + 56. */
    {
        const int64_t nblk = (rows_per_thread + x.mc_max - 1) / x.mc_max;
        x.mc_max = round_up((rows_per_thread + nblk - 1) / nblk, im->mr);
    }
    const int64_t nc_max = round_up(MIN(im->nc, g->N), im->nr);
    const size_t es = im->esize;
    const size_t bbytes = (size_t)(x.kc_max * nc_max) * es;
    x.apack_stride = (size_t)round_up((int64_t)((size_t)(x.mc_max * x.kc_max) * es), GC_ALIGN);
    x.bpack = (char *)scratch_alloc(bbytes);
    x.apack = (char *)scratch_alloc(x.apack_stride * (size_t)nt);
    if (!x.bpack || !x.apack) {
        /* Out of memory for scratch: still produce the right answer, slowly. */
        free(x.bpack);
        free(x.apack);
        direct(g);
        return;
    }

    if (nt == 1) {
        driver_body(&x, 0);
    } else {
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num();
            /* The runtime may give fewer threads than asked (nesting, limits): the blocking
             * still holds (scratch was sized for more threads), only the split changes. */
            driver_ctx xt = x;
            xt.nt = omp_get_num_threads();
            driver_body(&xt, tid);
#else
            driver_body(&x, 0);
#endif
        }
    }
    free(x.bpack);
    free(x.apack);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                */
/* ------------------------------------------------------------------------------------------ */

void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const float *A, int64_t lda, const float *B, int64_t ldb,
              float beta, float *C, int64_t ldc,
              const float *bias, int act, float act_param) {
    const gemm_args g = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, A, B, C, bias,
                         beta, act_param, act};
    const gemm_impl *im = &S_SCALAR;
#ifdef GC_X86
    if (gc_simd_level()) im = &S_AVX2;
#endif
    gemm_run(im, &g, s_direct, s_no_k);
}

void gc_dgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const double *A, int64_t lda, const double *B, int64_t ldb,
              double beta, double *C, int64_t ldc,
              const double *bias, int act, double act_param) {
    const gemm_args g = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, A, B, C, bias,
                         beta, act_param, act};
    const gemm_impl *im = &D_SCALAR;
#ifdef GC_X86
    if (gc_simd_level()) im = &D_AVX2;
#endif
    gemm_run(im, &g, d_direct, d_no_k);
}
