/* Packed, cache-blocked GEMM with a fused epilogue (GotoBLAS/BLIS structure).
 *
 *   for jc in N step NC:            B block (KC x NC) lives in L3, shared by all threads
 *     for pc in K step KC:          pack B[pc:pc+KC, jc:jc+NC] into NR-wide panels
 *       for ic in M step MC:        pack A[ic:ic+MC, pc:pc+KC] into MR-tall panels (L2)
 *         for jr in NC step NR:     one B micro-panel (KC x NR) stays in L1
 *           for ir in MC step MR:   register micro-kernel: MR x NR tile of C
 *
 * Packing copies the operands into zero-padded, 64-byte-aligned panels, so the micro-kernel
 * never sees a transpose or a ragged edge: transposes are handled by the packing routines
 * reading with swapped strides, edges by zero padding on read and by a bounded write-back
 * (masked stores in the AVX2 kernels, a local tile buffer in the portable one). When B has
 * only a few panels (N <= 4 NR), packing A costs more than it saves and the kernels read full
 * MR-row panels of A in place (only a partial last panel is packed).
 *
 * The epilogue (beta * C, bias, activation) is applied while the tile is in registers, on the
 * write-back of the last K block; earlier K blocks just accumulate into C.
 *
 * Three implementations share the driver: AVX-512 (F+VL+DQ) and AVX2+FMA micro-kernels
 * (compiled per function with target attributes, since the module is built for plain x86-64;
 * the best one the CPU and OS support is picked at run time, gc_simd_level()) and a portable
 * plain-C one.
 * Tiny products skip packing; small ones stay on one thread. Threads split the rows of C (or
 * the B panels when M is small). Thin float32 products (N or K <= 16) go to unpacked AVX-512
 * kernels instead of the driver ("Thin float32 products" below). Scratch is allocated per call:
 * two threads may run GEMMs concurrently.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* GC_NO_SIMD builds only the portable path (as on non-x86 targets), for testing it. */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(GC_NO_SIMD)
#include <immintrin.h>
#define GC_X86 1
#endif
#include "gemm.h"
#include "threads.h"
#include "vmath.inc" /* the activations of the epilogue */

/* ------------------------------------------------------------------------------------------ */
/* Threads and SIMD selection                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Highest level the tests allow (gc_set_simd_max / gc_set_simd_enabled); flipped by tests while
 * other threads may run GEMMs, hence atomic (a plain load on x86). */
static _Atomic int g_simd_max = GC_SIMD_AVX512;
static int g_cpu_level = GC_SIMD_SCALAR; /* set once at load time, read-only afterwards */
static int g_cpu_intel = 0;               /* likewise; tuning that differs between vendors */

#ifdef GC_X86
/* __builtin_cpu_supports reports a feature only when the OS also saves its register state
 * (libgcc checks XCR0 through xgetbv: YMM for AVX/AVX2/FMA, opmask + ZMM for AVX-512), so a
 * kernel that disabled AVX-512 state gets the AVX2 path. */
__attribute__((constructor)) static void gemm_detect_cpu(void) {
    __builtin_cpu_init();
    g_cpu_intel = __builtin_cpu_is("intel");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        g_cpu_level = GC_SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq"))
            g_cpu_level = GC_SIMD_AVX512;
    }
}
#endif

int gc_simd_level(void) {
    const int cap = g_simd_max;
    return g_cpu_level < cap ? g_cpu_level : cap;
}
void gc_set_simd_enabled(int enabled) { g_simd_max = enabled ? GC_SIMD_AVX512 : GC_SIMD_SCALAR; }
void gc_set_simd_max(int level) {
    g_simd_max = level < 0 || level > GC_SIMD_AVX512 ? GC_SIMD_AVX512 : level;
}

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
    double alpha;          /* multiplies the product */
    const void *addend;    /* NULL or M x N (row stride ldx), added on the last K block */
    const void *gate;      /* NULL or M x N (row stride ldg): multiply by act'(gate) at the end */
    int64_t ldx, ldg;
    double gate_param;     /* the factor where gate <= 0 (0 for relu, the slope for leaky_relu) */
    void *colsum;          /* NULL or N: the column sums of op(B) over K, written as B is packed */
} gemm_args;

/* What the write-back of one micro-tile must do, in this order:
 *   s = alpha * acc                     (every K block: C holds alpha * the partial product)
 *   s += beta * C        if add_c       (first K block with beta != 0; later blocks with 1)
 *   and on the last K block only:
 *   s += addend[i, j]    if addend
 *   s += bias[j]         if bias
 *   s = act(s)
 *   s *= gate[i, j] > 0 ? 1 : gate_param   if gate
 * addend and gate point at the tile's own top-left element (the driver offsets them per tile),
 * so every micro-kernel honours them through this one contract: the portable tile_store and the
 * AVX2 wb_row implement it, and a new kernel must too (or store through tile_store). */
typedef struct {
    int add_c;        /* add beta*C (first K block, beta != 0) or C (later K blocks) */
    double beta;      /* multiplier of the old C when add_c */
    int last;         /* last K block: add the bias and apply the activation */
    int act;
    double act_param;
    double alpha;     /* 1: no scaling pass over the accumulators */
    const void *addend, *gate; /* this tile's top-left, or NULL (only read when last) */
    int64_t ldx, ldg;
    double gate_param;
} epi_t;

/* e for the tile whose top-left element is (row, col) of C. */
static inline epi_t epi_at(const epi_t *e, int64_t row, int64_t col, size_t es) {
    epi_t t = *e;
    if (t.addend) t.addend = (const char *)t.addend + (size_t)(row * t.ldx + col) * es;
    if (t.gate) t.gate = (const char *)t.gate + (size_t)(row * t.ldg + col) * es;
    return t;
}

/* Start fetching what a tile's write-back reads (rows of m elements of n, es bytes each): C when
 * it is added to and, with extras, the addend and the gate of the last K block. Called before the
 * K loop, so that the misses overlap the arithmetic: without it the write-back waits on each row
 * in turn. The AVX2 kernels take the extras: W-mlp's weight update (784 x 512 x 256, the old
 * weights as the addend) ran 1.10-1.20x faster on one thread; on two, and for the whole AVX2 step,
 * the change was within the noise (0.95-1.00x the time; 2-core AMD EPYC Zen 4 VM,
 * GRAPHC_SIMD=avx2, interleaved processes, 2026-12-03). The AVX-512
 * kernels do not: their B micro-panel (KC x 32 floats, 33 KB) already fills Zen 4's 32 KB L1 and
 * the step took 1.00-1.04x the time with them. */
static inline void prefetch_epilogue(const epi_t *e, const void *c, int64_t ldc, int64_t m, int64_t n, size_t es,
                                     int extras) {
    const size_t last = (size_t)(n - 1) * es;
    for (int64_t i = 0; i < m; i++) {
        if (e->add_c) {
            const char *r = (const char *)c + (size_t)(i * ldc) * es;
            __builtin_prefetch(r, 0, 3);
            __builtin_prefetch(r + last, 0, 3);
        }
        if (extras && e->addend) {
            const char *r = (const char *)e->addend + (size_t)(i * e->ldx) * es;
            __builtin_prefetch(r, 0, 3);
            __builtin_prefetch(r + last, 0, 3);
        }
        if (extras && e->gate) {
            const char *r = (const char *)e->gate + (size_t)(i * e->ldg) * es;
            __builtin_prefetch(r, 0, 3);
            __builtin_prefetch(r + last, 0, 3);
        }
    }
}

/* The epilogue of a call's K block starting at pc (kc long). */
static inline epi_t epi_for(const gemm_args *g, int first, int last) {
    epi_t e = {!first || g->beta != 0, first ? g->beta : 1.0, last, g->act, g->act_param, g->alpha,
               last ? g->addend : NULL, last ? g->gate : NULL, g->ldx, g->ldg, g->gate_param};
    return e;
}

/* kernel(kc, A, rsa, csa, packed B panel, C tile, ldc, valid rows m <= MR, valid cols n <= NR,
 *        epilogue, bias + column offset of this tile or NULL).
 * A is a packed panel (the packed kernel ignores rsa/csa), or for the strided kernel A read in
 * place: element (i, k) of the tile's rows at A[i*rsa + k*csa], all MR rows valid. */
typedef void (*kernel_fn)(int64_t, const void *, int64_t, int64_t, const void *, void *, int64_t,
                          int64_t, int64_t, const epi_t *, const void *);
/* pack_a(A, lda, transA, row0, col0 (k), rows, kc, dst): MR-tall panels, k-major inside a panel.
 * pack_b(B, ldb, transB, row0 (k), col0, kc, cols, dst): NR-wide panels, k-major inside. */
typedef void (*pack_fn)(const void *, int64_t, int, int64_t, int64_t, int64_t, int64_t, void *);
/* colsum(packed panels, kc, nr, cols, out, first): out[j] (=, when first, else +=) the sum over the
 * kc rows of column j < cols of the NR-wide panels that pack_b wrote (see gemm_args.colsum). */
typedef void (*colsum_fn)(const void *, int64_t, int64_t, int64_t, void *, int);

typedef struct {
    size_t esize;
    void (*direct)(const gemm_args *); /* tiny products, unpacked: rounds as the kernels do */
    int64_t mr, nr, mc, kc, nc;
    pack_fn pack_a, pack_b;
    kernel_fn kernel;
    kernel_fn kernel_strided; /* NULL: always pack A */
    colsum_fn colsum;         /* NULL: the portable colsum_packed of esize */
    int (*thin)(const gemm_args *); /* NULL, or unpacked kernels for thin shapes: 0 when it ran */
    kernel_fn kernel_short;   /* NULL, or the packed kernel for a last panel of m <= mr_short rows */
    int64_t mr_short;
} gemm_impl;

/* Column sums of packed B panels (gemm_args.colsum), for one NR known at compile time so that a
 * panel's NR running sums stay in registers. Each column is summed row after row, k = 0, 1, ...
 * across the K blocks too (out carries the sums between blocks), which is the order of NumPy's
 * sum over axis 0. The panels are in cache: pack_b has just written them. */
#define GEN_COLSUM(NAME, T, NR, TARGET)                                                            \
    TARGET static void NAME(const void *vp, int64_t kc, int64_t nr, int64_t cols, void *vout,      \
                            int first) {                                                           \
        const T *p = (const T *)vp;                                                                \
        T *out = (T *)vout;                                                                        \
        (void)nr;                                                                                  \
        for (int64_t j0 = 0; j0 < cols; j0 += NR, p += NR * kc) {                                  \
            const int64_t n = MIN(NR, cols - j0);                                                  \
            T acc[NR];                                                                             \
            for (int j = 0; j < NR; j++) acc[j] = (first || j >= n) ? (T)0 : out[j0 + j];          \
            for (int64_t k = 0; k < kc; k++)                                                       \
                for (int j = 0; j < NR; j++) acc[j] += p[k * NR + j];                              \
            for (int64_t j = 0; j < n; j++) out[j0 + j] = acc[j];                                  \
        }                                                                                          \
    }

/* The same for any NR (the portable tables), and for op(B) read in place: the paths that never
 * pack B (tiny products, K == 0, out of scratch memory) still owe the caller its column sums. */
#define GEN_COLSUM_ANY(P, T)                                                                       \
    static void P##_colsum_packed(const void *vp, int64_t kc, int64_t nr, int64_t cols, void *vout, \
                                  int first) {                                                     \
        const T *p = (const T *)vp;                                                                \
        T *out = (T *)vout;                                                                        \
        for (int64_t j0 = 0; j0 < cols; j0 += nr, p += nr * kc) {                                  \
            const int64_t n = MIN(nr, cols - j0);                                                  \
            for (int64_t j = 0; j < n; j++)                                                        \
                if (first) out[j0 + j] = 0;                                                        \
            for (int64_t k = 0; k < kc; k++)                                                       \
                for (int64_t j = 0; j < n; j++) out[j0 + j] += p[k * nr + j];                      \
        }                                                                                          \
    }                                                                                              \
    static void P##_colsum_plain(int transB, int64_t K, int64_t N, const void *vb, int64_t ldb,    \
                                 void *vout) {                                                     \
        const T *B = (const T *)vb;                                                                \
        T *out = (T *)vout;                                                                        \
        for (int64_t j = 0; j < N; j++) out[j] = 0;                                                \
        for (int64_t k = 0; k < K; k++)                                                            \
            for (int64_t j = 0; j < N; j++) out[j] += transB ? B[j * ldb + k] : B[k * ldb + j];    \
    }
GEN_COLSUM_ANY(s, float)
GEN_COLSUM_ANY(d, double)

/* ------------------------------------------------------------------------------------------ */
/* Scalar activation (the portable epilogue; also the reference for the vectorised one)        */
/* ------------------------------------------------------------------------------------------ */

/* act(x) in double, from the GC_EW_ACT entries of elementwise.def. float32 epilogues widen to
 * double and round once: correctly rounded in practice, like the AVX2 path. */
#define T double
static double act_f64(double x, int act, double p) {
    switch (act) {
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) case GC_ACT_##NAME: return (EXPR);
#include "elementwise.def"
    default: return x;
    }
}
#undef T
static inline float act_f32(float x, int act, float p) {
    return act == GC_ACT_IDENTITY ? x : (float)act_f64((double)x, act, (double)p);
}

/* ------------------------------------------------------------------------------------------ */
/* Type-generic scalar pieces, instantiated for float (s) and double (d)                       */
/* ------------------------------------------------------------------------------------------ */

/* Portable micro-kernel size: 8 SSE2 registers of accumulators for float, 8 for double. */
#define SC_MR 4
#define SC_NR 8

/* Tiny problems: no packing, no threads; strided dot products in blocks of 64 columns.
 * MADD(a, b, c) is a*b + c as the impl's kernels form it: unfused in the portable impl, one
 * fused rounding where the vector kernels use FMA. So a product rounds alike whatever its size
 * picks: with float32 terms -1e30*1e30 and 1e-30*inf, the fused sum is inf (as in float64),
 * the unfused one -inf + inf = NaN. */
#define GEN_DIRECT(NAME, P, T, ATTR, MADD)                                                         \
static ATTR void NAME(const gemm_args *g) {                                                        \
    const T *A = (const T *)g->A, *B = (const T *)g->B, *bias = (const T *)g->bias;               \
    T *C = (T *)g->C;                                                                              \
    const int64_t sak = g->transA ? g->lda : 1, sai = g->transA ? 1 : g->lda;                      \
    const int64_t sbk = g->transB ? 1 : g->ldb, sbj = g->transB ? g->ldb : 1;                      \
    const epi_t e = epi_for(g, 1, 1);                                                              \
    T acc[64];                                                                                     \
    for (int64_t i = 0; i < g->M; i++)                                                             \
        for (int64_t j0 = 0; j0 < g->N; j0 += 64) {                                                \
            const int64_t n = MIN(64, g->N - j0);                                                  \
            for (int64_t j = 0; j < n; j++) acc[j] = 0;                                            \
            for (int64_t k = 0; k < g->K; k++) {                                                   \
                const T a = A[i * sai + k * sak];                                                  \
                const T *b = B + k * sbk + j0 * sbj;                                               \
                for (int64_t j = 0; j < n; j++) acc[j] = MADD(a, b[j * sbj], acc[j]);              \
            }                                                                                      \
            const epi_t et = epi_at(&e, i, j0, sizeof(T));                                         \
            P##_tile_store(acc, 0, 1, n, C + i * g->ldc + j0, g->ldc, &et, bias ? bias + j0 : NULL);\
        }                                                                                          \
}
#define MADD_PLAIN(a, b, c) ((a) * (b) + (c))

#define GEN_SCALAR(P, T, ACT)                                                                      \
/* Write back an m x n tile held in acc (row stride accld) into C with the epilogue. */            \
static void P##_tile_store(const T *acc, int64_t accld, int64_t m, int64_t n, T *c, int64_t ldc,  \
                           const epi_t *e, const T *bias) {                                       \
    const T beta = (T)e->beta, p = (T)e->act_param, alpha = (T)e->alpha, gp = (T)e->gate_param;   \
    const T *x = e->last ? (const T *)e->addend : NULL, *gt = e->last ? (const T *)e->gate : NULL; \
    for (int64_t i = 0; i < m; i++)                                                                \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T s = acc[i * accld + j];                                                              \
            if (e->alpha != 1) s *= alpha;                                                         \
            if (e->add_c) s += beta * c[i * ldc + j];                                              \
            if (e->last) {                                                                         \
                if (x) s += x[i * e->ldx + j];                                                     \
                if (bias) s += bias[j];                                                            \
                s = ACT(s, e->act, p);                                                             \
                if (gt) s *= gt[i * e->ldg + j] > 0 ? (T)1 : gp;                                   \
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
static void P##_kernel_sc(int64_t kc, const void *va, int64_t rsa, int64_t csa, const void *vb,   \
                          void *vc, int64_t ldc, int64_t m, int64_t n, const epi_t *e,             \
                          const void *bias) {                                                      \
    (void)rsa, (void)csa;                                                                          \
    const T *a = (const T *)va, *b = (const T *)vb;                                                \
    T acc[SC_MR * SC_NR] = {0};                                                                    \
    for (int64_t k = 0; k < kc; k++, a += SC_MR, b += SC_NR)                                       \
        for (int i = 0; i < SC_MR; i++)                                                            \
            for (int j = 0; j < SC_NR; j++) acc[i * SC_NR + j] += a[i] * b[j];                     \
    P##_tile_store(acc, SC_NR, m, n, (T *)vc, ldc, e, (const T *)bias);                            \
}                                                                                                  \
                                                                                                   \
GEN_DIRECT(P##_direct, P, T, , MADD_PLAIN)                                                         \
                                                                                                   \
/* K == 0: C = act(beta * C + addend + bias) (times the gate), nothing to multiply. */         \
static void P##_no_k(const gemm_args *g) {                                                         \
    const T zero = 0;                                                                              \
    const epi_t e = epi_for(g, 1, 1);                                                              \
    const T *bias = (const T *)g->bias;                                                            \
    for (int64_t i = 0; i < g->M; i++)                                                             \
        for (int64_t j = 0; j < g->N; j++) {                                                       \
            const epi_t et = epi_at(&e, i, j, sizeof(T));                                          \
            P##_tile_store(&zero, 0, 1, 1, (T *)g->C + i * g->ldc + j, g->ldc, &et,                \
                           bias ? bias + j : NULL);                                                \
        }                                                                                          \
}

GEN_SCALAR(s, float, act_f32)
GEN_SCALAR(d, double, act_f64)

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA: vector activations                                                              */
/* ------------------------------------------------------------------------------------------ */

#ifdef GC_X86
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
#if defined(__GNUC__) && defined(__x86_64__) && !defined(GC_NO_ASM)
#define GC_AVX2_ASM 1 /* the packed AVX2 k loops in inline assembly (see ASM_KLOOP4) */
#endif
GEN_DIRECT(s_direct_fma, s, float, AVX2, __builtin_fmaf)
GEN_DIRECT(d_direct_fma, d, double, AVX2, __builtin_fma)

/* The activation of the write-back, from the GC_EW_ACT entries of elementwise.def and their
 * vmath.inc forms. float32 tiles are widened to double (exactly) and rounded once at the end, as
 * in the scalar path: the results stay correctly rounded in practice. */
AVX2_INLINE __m256d d_act4(__m256d v, int act, __m256d p) {
    switch (act) {
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) case GC_ACT_##NAME: return vop_##VEC##_pd(v, p);
#include "elementwise.def"
    default: return v;
    }
}

AVX2_INLINE __m256 s_act8(__m256 v, int act, __m256d p) {
    if (act == GC_ACT_IDENTITY) return v;
    const __m256d lo = d_act4(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), act, p);
    const __m256d hi = d_act4(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), act, p);
    return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA micro-kernels                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* sgemm: 6 x 16 tile = 12 ymm accumulators + 2 B vectors + 1 A broadcast (15 of 16 registers). */
#define S_MR 6
#define S_NR 16
/* dgemm: 6 x 8 tile, same register budget with 4 doubles per vector. */
#define D_MR 6
#define D_NR 8

/* The kernels are written once with A strides (rsa between rows, csa between k steps) and
 * instantiated twice: for packed panels (rsa = 1, csa = MR, constants after inlining) and for
 * A read in place, used when there are too few columns for packing A to pay off. */

/* One k step of the 6-row kernels: broadcast A[i][k], FMA into both halves of row i. */
#define K_FMA_ROW(V, BCAST, FMA, i)                                                                \
    do {                                                                                           \
        const V ai = BCAST(a + (i) * rsa);                                                         \
        c##i##0 = FMA(ai, b0, c##i##0);                                                            \
        c##i##1 = FMA(ai, b1, c##i##1);                                                            \
    } while (0)

#define K_STEP(V, LOAD, BCAST, FMA, NR, HALF)                                                      \
    do {                                                                                           \
        const V b0 = LOAD(b), b1 = LOAD(b + (HALF));                                               \
        K_FMA_ROW(V, BCAST, FMA, 0); K_FMA_ROW(V, BCAST, FMA, 1); K_FMA_ROW(V, BCAST, FMA, 2);     \
        K_FMA_ROW(V, BCAST, FMA, 3); K_FMA_ROW(V, BCAST, FMA, 4); K_FMA_ROW(V, BCAST, FMA, 5);     \
        a += csa;                                                                                  \
        b += (NR);                                                                                 \
    } while (0)

/* Write-back of row i (if i < m) with the epilogue in registers: beta*C, bias, activation.
 * Edge tiles use masked loads/stores, which never touch memory outside the first n columns. */
#define K_WB_ROW(P, i)                                                                             \
    do {                                                                                           \
        if ((i) < m) {                                                                             \
            P##_wb_row(c + (i) * ldc, c##i##0, c##i##1, full, mask0, mask1, add_c, vbeta, bias != NULL,\
                       bias0, bias1, act, vp, &x);                                                 \
            if (x.addend) x.addend += x.ldx;                                                       \
            if (x.gate) x.gate += x.ldg;                                                           \
        }                                                                                          \
    } while (0)

/* The alpha / addend / gate part of the epilogue, as the AVX2 write-back sees it: row pointers
 * advanced row by row (K_WB_ROW), broadcast constants loaded once per tile. */
#define WB_EXTRA(P, T, V)                                                                          \
    typedef struct {                                                                               \
        int scale;              /* alpha != 1 */                                                   \
        V valpha, vgp;                                                                             \
        const T *addend, *gate; /* the current row's, or NULL */                                   \
        int64_t ldx, ldg;                                                                          \
    } P##_wb_extra;
WB_EXTRA(s, float, __m256)
WB_EXTRA(d, double, __m256d)
#undef WB_EXTRA

AVX2_INLINE void s_wb_row(float *cr, __m256 v0, __m256 v1, int full, __m256i mask0, __m256i mask1,
                          int add_c, __m256 vbeta, int has_bias, __m256 bias0, __m256 bias1, int act,
                          __m256d vp, const s_wb_extra *x) {
    if (x->scale) {
        v0 = _mm256_mul_ps(v0, x->valpha);
        v1 = _mm256_mul_ps(v1, x->valpha);
    }
    if (add_c) {
        const __m256 old0 = full ? _mm256_loadu_ps(cr) : _mm256_maskload_ps(cr, mask0);
        const __m256 old1 = full ? _mm256_loadu_ps(cr + 8) : _mm256_maskload_ps(cr + 8, mask1);
        v0 = _mm256_fmadd_ps(vbeta, old0, v0);
        v1 = _mm256_fmadd_ps(vbeta, old1, v1);
    }
    if (x->addend) {
        const float *xr = x->addend;
        v0 = _mm256_add_ps(v0, full ? _mm256_loadu_ps(xr) : _mm256_maskload_ps(xr, mask0));
        v1 = _mm256_add_ps(v1, full ? _mm256_loadu_ps(xr + 8) : _mm256_maskload_ps(xr + 8, mask1));
    }
    if (has_bias) {
        v0 = _mm256_add_ps(v0, bias0);
        v1 = _mm256_add_ps(v1, bias1);
    }
    v0 = s_act8(v0, act, vp);
    v1 = s_act8(v1, act, vp);
    if (x->gate) { /* times (gate > 0 ? 1 : p), a multiply as in activation_grad: NaN stays NaN */
        const float *gr = x->gate;
        const __m256 g0 = full ? _mm256_loadu_ps(gr) : _mm256_maskload_ps(gr, mask0);
        const __m256 g1 = full ? _mm256_loadu_ps(gr + 8) : _mm256_maskload_ps(gr + 8, mask1);
        const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
        v0 = _mm256_mul_ps(v0, _mm256_blendv_ps(x->vgp, one, _mm256_cmp_ps(g0, zero, _CMP_GT_OQ)));
        v1 = _mm256_mul_ps(v1, _mm256_blendv_ps(x->vgp, one, _mm256_cmp_ps(g1, zero, _CMP_GT_OQ)));
    }
    if (full) {
        _mm256_storeu_ps(cr, v0);
        _mm256_storeu_ps(cr + 8, v1);
    } else {
        _mm256_maskstore_ps(cr, mask0, v0);
        _mm256_maskstore_ps(cr + 8, mask1, v1);
    }
}

AVX2_INLINE void d_wb_row(double *cr, __m256d v0, __m256d v1, int full, __m256i mask0, __m256i mask1,
                          int add_c, __m256d vbeta, int has_bias, __m256d bias0, __m256d bias1,
                          int act, __m256d vp, const d_wb_extra *x) {
    if (x->scale) {
        v0 = _mm256_mul_pd(v0, x->valpha);
        v1 = _mm256_mul_pd(v1, x->valpha);
    }
    if (add_c) {
        const __m256d old0 = full ? _mm256_loadu_pd(cr) : _mm256_maskload_pd(cr, mask0);
        const __m256d old1 = full ? _mm256_loadu_pd(cr + 4) : _mm256_maskload_pd(cr + 4, mask1);
        v0 = _mm256_fmadd_pd(vbeta, old0, v0);
        v1 = _mm256_fmadd_pd(vbeta, old1, v1);
    }
    if (x->addend) {
        const double *xr = x->addend;
        v0 = _mm256_add_pd(v0, full ? _mm256_loadu_pd(xr) : _mm256_maskload_pd(xr, mask0));
        v1 = _mm256_add_pd(v1, full ? _mm256_loadu_pd(xr + 4) : _mm256_maskload_pd(xr + 4, mask1));
    }
    if (has_bias) {
        v0 = _mm256_add_pd(v0, bias0);
        v1 = _mm256_add_pd(v1, bias1);
    }
    v0 = d_act4(v0, act, vp);
    v1 = d_act4(v1, act, vp);
    if (x->gate) {
        const double *gr = x->gate;
        const __m256d g0 = full ? _mm256_loadu_pd(gr) : _mm256_maskload_pd(gr, mask0);
        const __m256d g1 = full ? _mm256_loadu_pd(gr + 4) : _mm256_maskload_pd(gr + 4, mask1);
        const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
        v0 = _mm256_mul_pd(v0, _mm256_blendv_pd(x->vgp, one, _mm256_cmp_pd(g0, zero, _CMP_GT_OQ)));
        v1 = _mm256_mul_pd(v1, _mm256_blendv_pd(x->vgp, one, _mm256_cmp_pd(g1, zero, _CMP_GT_OQ)));
    }
    if (full) {
        _mm256_storeu_pd(cr, v0);
        _mm256_storeu_pd(cr + 4, v1);
    } else {
        _mm256_maskstore_pd(cr, mask0, v0);
        _mm256_maskstore_pd(cr + 4, mask1, v1);
    }
}

/* Lane masks for columns [0, n) of the two halves of a row (lane j of half h: h*L + j < n). */
AVX2_INLINE void edge_masks(int64_t n, int64_t lanes, int wide, __m256i *mask0, __m256i *mask1) {
    /* 64-bit lanes (double) use pairs of 32-bit lanes, so the iota counts pairs in that case. */
    const __m256i iota = wide ? _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)
                              : _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    *mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), iota);
    *mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - lanes)), iota);
}

/* Packing with AVX2. The transposing cases (A stored M x K, B^T stored N x K: each panel
 * column/row is contiguous in k) go through 8x8 (float) / 4x4 (double) register transposes,
 * so that every load and store is a vector one. Rows past the edge are zeros, never loaded. */

AVX2_INLINE void transpose8_ps(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

AVX2_INLINE void transpose4_pd(__m256d r[4]) {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* dst[k*ld + r] = src_r[k] for r < 8 (zeros for r >= nrows), k < kc: 8 strided rows to a
 * k-major block of 8 columns inside panels of width ld. */
AVX2_INLINE void s_gather8(const float *const src[8], int nrows, int64_t kc, float *dst, int64_t ld) {
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) r[i] = i < nrows ? _mm256_loadu_ps(src[i] + k) : _mm256_setzero_ps();
        transpose8_ps(r);
        for (int kk = 0; kk < 8; kk++) _mm256_store_ps(dst + (k + kk) * ld, r[kk]);
    }
    for (; k < kc; k++)
        for (int i = 0; i < 8; i++) dst[k * ld + i] = i < nrows ? src[i][k] : 0.0f;
}

AVX2_INLINE void d_gather4(const double *const src[4], int nrows, int64_t kc, double *dst, int64_t ld) {
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        __m256d r[4];
        for (int i = 0; i < 4; i++) r[i] = i < nrows ? _mm256_loadu_pd(src[i] + k) : _mm256_setzero_pd();
        transpose4_pd(r);
        for (int kk = 0; kk < 4; kk++) _mm256_store_pd(dst + (k + kk) * ld, r[kk]);
    }
    for (; k < kc; k++)
        for (int i = 0; i < 4; i++) dst[k * ld + i] = i < nrows ? src[i][k] : 0.0;
}

AVX2 static void s_pack_b_avx2(const void *vB, int64_t ldb, int tB, int64_t r0, int64_t c0,
                               int64_t kc, int64_t cols, void *vdst) {
    const float *B = (const float *)vB;
    float *dst = (float *)vdst;
    for (int64_t j0 = 0; j0 < cols; j0 += S_NR, dst += S_NR * kc) {
        const int64_t n = MIN(S_NR, cols - j0);
        if (!tB) { /* B is K x N: each k row of the panel is 16 contiguous floats */
            const float *src = B + r0 * ldb + c0 + j0;
            __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
            if (n < S_NR) edge_masks(n, 8, 0, &m0, &m1);
            for (int64_t k = 0; k < kc; k++, src += ldb) {
                _mm256_store_ps(dst + k * S_NR, _mm256_maskload_ps(src, m0));
                _mm256_store_ps(dst + k * S_NR + 8, _mm256_maskload_ps(src + 8, m1));
            }
        } else { /* B is N x K: column j of the panel is contiguous in k */
            for (int h = 0; h < S_NR; h += 8) {
                const float *src[8];
                const int nrows = (int)MAX(0, MIN(8, n - h));
                for (int i = 0; i < 8; i++) src[i] = B + (c0 + j0 + h + MIN(i, MAX(nrows - 1, 0))) * ldb + r0;
                s_gather8(src, nrows, kc, dst + h, S_NR);
            }
        }
    }
}

AVX2 static void d_pack_b_avx2(const void *vB, int64_t ldb, int tB, int64_t r0, int64_t c0,
                               int64_t kc, int64_t cols, void *vdst) {
    const double *B = (const double *)vB;
    double *dst = (double *)vdst;
    for (int64_t j0 = 0; j0 < cols; j0 += D_NR, dst += D_NR * kc) {
        const int64_t n = MIN(D_NR, cols - j0);
        if (!tB) {
            const double *src = B + r0 * ldb + c0 + j0;
            __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
            if (n < D_NR) edge_masks(n, 4, 1, &m0, &m1);
            for (int64_t k = 0; k < kc; k++, src += ldb) {
                _mm256_store_pd(dst + k * D_NR, _mm256_maskload_pd(src, m0));
                _mm256_store_pd(dst + k * D_NR + 4, _mm256_maskload_pd(src + 4, m1));
            }
        } else {
            for (int h = 0; h < D_NR; h += 4) {
                const double *src[4];
                const int nrows = (int)MAX(0, MIN(4, n - h));
                for (int i = 0; i < 4; i++) src[i] = B + (c0 + j0 + h + MIN(i, MAX(nrows - 1, 0))) * ldb + r0;
                d_gather4(src, nrows, kc, dst + h, D_NR);
            }
        }
    }
}

AVX2 static void s_pack_a_avx2(const void *vA, int64_t lda, int tA, int64_t r0, int64_t c0,
                               int64_t rows, int64_t kc, void *vdst) {
    const float *A = (const float *)vA;
    float *dst = (float *)vdst;
    for (int64_t i0 = 0; i0 < rows; i0 += S_MR, dst += S_MR * kc) {
        const int64_t m = MIN(S_MR, rows - i0);
        if (!tA) { /* A is M x K: 6 rows contiguous in k, transposed 8 k at a time */
            const float *src[S_MR];
            for (int i = 0; i < S_MR; i++) src[i] = A + (r0 + i0 + MIN(i, m - 1)) * lda + c0;
            int64_t k = 0;
            for (; k + 8 <= kc; k += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = i < m ? _mm256_loadu_ps(src[i] + k) : _mm256_setzero_ps();
                transpose8_ps(r);
                for (int kk = 0; kk < 8; kk++) { /* 6 of the 8 lanes */
                    _mm_storeu_ps(dst + (k + kk) * S_MR, _mm256_castps256_ps128(r[kk]));
                    _mm_storel_pi((__m64 *)(dst + (k + kk) * S_MR + 4), _mm256_extractf128_ps(r[kk], 1));
                }
            }
            for (; k < kc; k++)
                for (int i = 0; i < S_MR; i++) dst[k * S_MR + i] = i < m ? src[i][k] : 0.0f;
        } else { /* A is K x M: the panel's 6 rows are contiguous for each k */
            const float *src = A + c0 * lda + r0 + i0;
            for (int64_t k = 0; k < kc; k++, src += lda) {
                if (m == S_MR) {
                    _mm_storeu_ps(dst + k * S_MR, _mm_loadu_ps(src));
                    _mm_storel_pi((__m64 *)(dst + k * S_MR + 4),
                                  _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(src + 4)));
                } else {
                    for (int i = 0; i < S_MR; i++) dst[k * S_MR + i] = i < m ? src[i] : 0.0f;
                }
            }
        }
    }
}

AVX2 static void d_pack_a_avx2(const void *vA, int64_t lda, int tA, int64_t r0, int64_t c0,
                               int64_t rows, int64_t kc, void *vdst) {
    const double *A = (const double *)vA;
    double *dst = (double *)vdst;
    for (int64_t i0 = 0; i0 < rows; i0 += D_MR, dst += D_MR * kc) {
        const int64_t m = MIN(D_MR, rows - i0);
        if (!tA) { /* rows 0-3 and 4-5 (+2 zero rows) transposed 4 k at a time */
            const double *src[D_MR];
            for (int i = 0; i < D_MR; i++) src[i] = A + (r0 + i0 + MIN(i, m - 1)) * lda + c0;
            int64_t k = 0;
            for (; k + 4 <= kc; k += 4) {
                __m256d lo[4], hi[4];
                for (int i = 0; i < 4; i++) {
                    lo[i] = i < m ? _mm256_loadu_pd(src[i] + k) : _mm256_setzero_pd();
                    hi[i] = i < 2 && 4 + i < m ? _mm256_loadu_pd(src[4 + i] + k) : _mm256_setzero_pd();
                }
                transpose4_pd(lo);
                transpose4_pd(hi);
                for (int kk = 0; kk < 4; kk++) {
                    _mm256_storeu_pd(dst + (k + kk) * D_MR, lo[kk]);
                    _mm_storeu_pd(dst + (k + kk) * D_MR + 4, _mm256_castpd256_pd128(hi[kk]));
                }
            }
            for (; k < kc; k++)
                for (int i = 0; i < D_MR; i++) dst[k * D_MR + i] = i < m ? src[i][k] : 0.0;
        } else {
            const double *src = A + c0 * lda + r0 + i0;
            for (int64_t k = 0; k < kc; k++, src += lda) {
                if (m == D_MR) {
                    _mm256_storeu_pd(dst + k * D_MR, _mm256_loadu_pd(src));
                    _mm_storeu_pd(dst + k * D_MR + 4, _mm_loadu_pd(src + 4));
                } else {
                    for (int i = 0; i < D_MR; i++) dst[k * D_MR + i] = i < m ? src[i] : 0.0;
                }
            }
        }
    }
}

/* The k loop of the packed 6-row kernels, four k steps per iteration, in assembly. Written in C,
 * GCC 12 spills an accumulator once per four k steps and copies others between registers (16 ymm:
 * 12 accumulators, 2 B vectors, 1 A broadcast leave it one spare); a loop of single k steps has no
 * spill but ~6 instructions of loop overhead per 12 FMAs. Measured on the 2-core AMD EPYC (Zen 4)
 * VM under GRAPHC_SIMD=avx2, 2026-12-02, interleaved processes, W-mlp shapes: the single-step C
 * loop ran 4-9 % faster than the unrolled one on one thread but 3-8 % slower on two; this loop ran
 * 4.5-8 % faster on one thread and 6-8 % on two (float32; float64 0-5 %), and the whole W-mlp step
 * took 0.91x the time (bench/ab_trees.py, 15 rounds). Each accumulator gets the same
 * FMAs in the same order as the C version (kept for the strided kernels and the k tail), so the
 * results are bitwise the same. Accumulators are register operands ("+x"); ymm12-15 hold the B
 * vectors and alternating A broadcasts. SFX: "ps" / "pd"; BC: "ss" / "sd"; ES:
 * element bytes; MR = 6. */
#define ASM_ROW(SFX, BC, ES, k, i, R)                                                              \
    "vbroadcast" BC " (" #ES "*" #i "+6*" #ES "*" #k ")(%[a]), %%ymm" R "\n\t"                  \
    "vfmadd231" SFX " %%ymm12, %%ymm" R ", %t[c" #i "0]\n\t"                                    \
    "vfmadd231" SFX " %%ymm13, %%ymm" R ", %t[c" #i "1]\n\t"
#define ASM_KSTEP(SFX, BC, ES, k)                                                                  \
    "vmovaps (64*" #k ")(%[b]), %%ymm12\n\t"                                                     \
    "vmovaps (64*" #k "+32)(%[b]), %%ymm13\n\t"                                                  \
    ASM_ROW(SFX, BC, ES, k, 0, "14") ASM_ROW(SFX, BC, ES, k, 1, "15")                              \
    ASM_ROW(SFX, BC, ES, k, 2, "14") ASM_ROW(SFX, BC, ES, k, 3, "15")                              \
    ASM_ROW(SFX, BC, ES, k, 4, "14") ASM_ROW(SFX, BC, ES, k, 5, "15")
#define ASM_KLOOP4(SFX, BC, ES, n4)                                                                \
    __asm__("1:\n\t"                                                                               \
            "prefetcht0 (6*" #ES "*8)(%[a])\n\t"                                                  \
            ASM_KSTEP(SFX, BC, ES, 0) ASM_KSTEP(SFX, BC, ES, 1) ASM_KSTEP(SFX, BC, ES, 2)          \
            ASM_KSTEP(SFX, BC, ES, 3)                                                              \
            "add $(6*" #ES "*4), %[a]\n\t"                                                        \
            "add $256, %[b]\n\t"                                                                   \
            "dec %[n]\n\t"                                                                         \
            "jnz 1b\n\t"                                                                           \
            : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n4), [c00] "+x"(c00), [c01] "+x"(c01),            \
              [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), \
              [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)  \
            :                                                                                      \
            : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc")
/* The same loop for A read in place (the strided kernels, rsa and csa run-time strides): rows
 * 0-2 at a0 + {0, 1, 2} rs, rows 3-5 at r11 = a0 + 3 rs + {0, 1, 2} rs (rs, cs in bytes, in r8
 * and r9; the k count in r10), both pointers moved by cs per k step. GCC allows 30 operands and
 * the 12 accumulators take 24, so the strides and count come in through one pointer and live
 * in clobbered registers. The C loop spilled 6 accumulators per four k steps; with this loop a
 * 512 x 64 x 512 product ran 1.07x faster on one thread (2-core AMD EPYC Zen 4 VM,
 * GRAPHC_SIMD=avx2, interleaved processes, 2026-12-03), bitwise the same. */
#define ASM_SROW(SFX, BC, addr, i, R)                                                              \
    "vbroadcast" BC " " addr ", %%ymm" R "\n\t"                                                   \
    "vfmadd231" SFX " %%ymm12, %%ymm" R ", %t[c" #i "0]\n\t"                                    \
    "vfmadd231" SFX " %%ymm13, %%ymm" R ", %t[c" #i "1]\n\t"
#define ASM_SKSTEP(SFX, BC, k)                                                                     \
    "vmovaps (64*" #k ")(%[b]), %%ymm12\n\t"                                                     \
    "vmovaps (64*" #k "+32)(%[b]), %%ymm13\n\t"                                                  \
    ASM_SROW(SFX, BC, "(%[a0])", 0, "14") ASM_SROW(SFX, BC, "(%[a0],%%r8,1)", 1, "15")             \
    ASM_SROW(SFX, BC, "(%[a0],%%r8,2)", 2, "14") ASM_SROW(SFX, BC, "(%%r11)", 3, "15")             \
    ASM_SROW(SFX, BC, "(%%r11,%%r8,1)", 4, "14") ASM_SROW(SFX, BC, "(%%r11,%%r8,2)", 5, "15")      \
    "add %%r9, %[a0]\n\t"                                                                        \
    "add %%r9, %%r11\n\t"
#define ASM_KLOOP4_STRIDED(SFX, BC, prm)                                                           \
    __asm__("mov (%[p]), %%r8\n\t"                                                                \
            "mov 8(%[p]), %%r9\n\t"                                                               \
            "mov 16(%[p]), %%r10\n\t"                                                             \
            "lea (%[a0],%%r8,2), %%r11\n\t"                                                       \
            "add %%r8, %%r11\n\t"                                                                 \
            "1:\n\t"                                                                             \
            "prefetcht0 (%[a0],%%r9,8)\n\t"                                                      \
            ASM_SKSTEP(SFX, BC, 0) ASM_SKSTEP(SFX, BC, 1) ASM_SKSTEP(SFX, BC, 2)                   \
            ASM_SKSTEP(SFX, BC, 3)                                                                 \
            "add $256, %[b]\n\t"                                                                 \
            "dec %%r10\n\t"                                                                      \
            "jnz 1b\n\t"                                                                         \
            : [a0] "+r"(a0), [b] "+r"(b), [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10),       \
              [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), \
              [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)                   \
            : [p] "r"(prm), "m"(*(const int64_t(*)[3])prm)                                         \
            : "r8", "r9", "r10", "r11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc")
/* In a kernel body: run the k loop above when A is packed (rsa, csa are constants there once
 * inlined), or the strided one when A is read in place, leaving k (and a, b) at the first step
 * of the tail. */
#ifdef GC_AVX2_ASM
#define ASM_PACKED_KLOOP(MR, SFX, BC, ES)                                                          \
    if (rsa == 1 && csa == (MR) && kc >= 4) {                                                      \
        int64_t n4 = kc / 4;                                                                       \
        ASM_KLOOP4(SFX, BC, ES, n4);                                                               \
        k = kc - kc % 4;                                                                           \
    } else if (kc >= 4) {                                                                          \
        const int64_t n4 = kc / 4;                                                                 \
        const int64_t prm[3] = {rsa * (ES), csa * (ES), n4};                                       \
        const char *a0 = (const char *)a;                                                          \
        ASM_KLOOP4_STRIDED(SFX, BC, prm);                                                          \
        a = (const void *)a0;                                                                      \
        k = kc - kc % 4;                                                                           \
    }
#else
#define ASM_PACKED_KLOOP(MR, SFX, BC, ES)
#endif

AVX2_INLINE void s_kernel_body(int64_t kc, const float *a, int64_t rsa, int64_t csa,
                               const float *b, float *c, int64_t ldc, int64_t m, int64_t n,
                               const epi_t *e, const float *bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const int add_c = e->add_c;

    prefetch_epilogue(e, c, ldc, m, n, sizeof(float), 1);

    int64_t k = 0;
    ASM_PACKED_KLOOP(S_MR, "ps", "ss", 4)
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(a + 8 * csa), _MM_HINT_T0);
        K_STEP(__m256, _mm256_load_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, S_NR, 8);
        K_STEP(__m256, _mm256_load_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, S_NR, 8);
        K_STEP(__m256, _mm256_load_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, S_NR, 8);
        K_STEP(__m256, _mm256_load_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, S_NR, 8);
    }
    for (; k < kc; k++) K_STEP(__m256, _mm256_load_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, S_NR, 8);

    const int full = n == S_NR;
    if (!e->last) bias = NULL;
    const int act = e->last ? e->act : GC_ACT_IDENTITY;
    __m256i mask0 = _mm256_set1_epi32(-1), mask1 = mask0;
    if (!full) edge_masks(n, 8, 0, &mask0, &mask1);
    const __m256 vbeta = _mm256_set1_ps((float)e->beta);
    const __m256d vp = _mm256_set1_pd((double)(float)e->act_param); /* the float parameter, widened */
    __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
    if (bias) {
        bias0 = full ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, mask0);
        bias1 = full ? _mm256_loadu_ps(bias + 8) : _mm256_maskload_ps(bias + 8, mask1);
    }
    s_wb_extra x = {e->alpha != 1, _mm256_set1_ps((float)e->alpha), _mm256_set1_ps((float)e->gate_param),
                    e->last ? (const float *)e->addend : NULL, e->last ? (const float *)e->gate : NULL,
                    e->ldx, e->ldg};
    K_WB_ROW(s, 0); K_WB_ROW(s, 1); K_WB_ROW(s, 2); K_WB_ROW(s, 3); K_WB_ROW(s, 4); K_WB_ROW(s, 5);
}

AVX2_INLINE void d_kernel_body(int64_t kc, const double *a, int64_t rsa, int64_t csa,
                               const double *b, double *c, int64_t ldc, int64_t m, int64_t n,
                               const epi_t *e, const double *bias) {
    __m256d c00 = _mm256_setzero_pd(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256d c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const int add_c = e->add_c;

    prefetch_epilogue(e, c, ldc, m, n, sizeof(double), 1);

    int64_t k = 0;
    ASM_PACKED_KLOOP(D_MR, "pd", "sd", 8)
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(a + 8 * csa), _MM_HINT_T0);
        K_STEP(__m256d, _mm256_load_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, D_NR, 4);
        K_STEP(__m256d, _mm256_load_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, D_NR, 4);
        K_STEP(__m256d, _mm256_load_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, D_NR, 4);
        K_STEP(__m256d, _mm256_load_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, D_NR, 4);
    }
    for (; k < kc; k++) K_STEP(__m256d, _mm256_load_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, D_NR, 4);

    const int full = n == D_NR;
    if (!e->last) bias = NULL;
    const int act = e->last ? e->act : GC_ACT_IDENTITY;
    __m256i mask0 = _mm256_set1_epi32(-1), mask1 = mask0;
    if (!full) edge_masks(n, 4, 1, &mask0, &mask1);
    const __m256d vbeta = _mm256_set1_pd(e->beta), vp = _mm256_set1_pd(e->act_param);
    __m256d bias0 = _mm256_setzero_pd(), bias1 = bias0;
    if (bias) {
        bias0 = full ? _mm256_loadu_pd(bias) : _mm256_maskload_pd(bias, mask0);
        bias1 = full ? _mm256_loadu_pd(bias + 4) : _mm256_maskload_pd(bias + 4, mask1);
    }
    d_wb_extra x = {e->alpha != 1, _mm256_set1_pd(e->alpha), _mm256_set1_pd(e->gate_param),
                    e->last ? (const double *)e->addend : NULL, e->last ? (const double *)e->gate : NULL,
                    e->ldx, e->ldg};
    K_WB_ROW(d, 0); K_WB_ROW(d, 1); K_WB_ROW(d, 2); K_WB_ROW(d, 3); K_WB_ROW(d, 4); K_WB_ROW(d, 5);
}

AVX2 static void s_kernel_avx2(int64_t kc, const void *a, int64_t rsa, int64_t csa, const void *b,
                               void *c, int64_t ldc, int64_t m, int64_t n, const epi_t *e,
                               const void *bias) {
    (void)rsa, (void)csa;
    s_kernel_body(kc, (const float *)a, 1, S_MR, (const float *)b, (float *)c, ldc, m, n, e,
                  (const float *)bias);
}
AVX2 static void s_kernel_avx2_strided(int64_t kc, const void *a, int64_t rsa, int64_t csa,
                                       const void *b, void *c, int64_t ldc, int64_t m, int64_t n,
                                       const epi_t *e, const void *bias) {
    s_kernel_body(kc, (const float *)a, rsa, csa, (const float *)b, (float *)c, ldc, m, n, e,
                  (const float *)bias);
}
AVX2 static void d_kernel_avx2(int64_t kc, const void *a, int64_t rsa, int64_t csa, const void *b,
                               void *c, int64_t ldc, int64_t m, int64_t n, const epi_t *e,
                               const void *bias) {
    (void)rsa, (void)csa;
    d_kernel_body(kc, (const double *)a, 1, D_MR, (const double *)b, (double *)c, ldc, m, n, e,
                  (const double *)bias);
}
AVX2 static void d_kernel_avx2_strided(int64_t kc, const void *a, int64_t rsa, int64_t csa,
                                       const void *b, void *c, int64_t ldc, int64_t m, int64_t n,
                                       const epi_t *e, const void *bias) {
    d_kernel_body(kc, (const double *)a, rsa, csa, (const double *)b, (double *)c, ldc, m, n, e,
                  (const double *)bias);
}

/* Zen 3 figures: A block (MC x KC) ~147 KB sits in L2, a B micro-panel (KC x NR) 16 KB in L1,
 * the B block (KC x NC) in L3. */
#ifndef S_MC
#define S_MC 144
#endif
#ifndef S_KC
#define S_KC 256
#endif
#ifndef S_NC
#define S_NC 4080
#endif
#ifndef D_MC
#define D_MC 72
#endif
#ifndef D_KC
#define D_KC 256
#endif
#ifndef D_NC
#define D_NC 4080
#endif
GEN_COLSUM(s_colsum_avx2, float, S_NR, AVX2)
GEN_COLSUM(d_colsum_avx2, double, D_NR, AVX2)
static const gemm_impl S_AVX2 = {sizeof(float), s_direct_fma, S_MR, S_NR, S_MC, S_KC, S_NC,
                                 s_pack_a_avx2, s_pack_b_avx2, s_kernel_avx2, s_kernel_avx2_strided,
                                 s_colsum_avx2};
static const gemm_impl D_AVX2 = {sizeof(double), d_direct_fma, D_MR, D_NR, D_MC, D_KC, D_NC,
                                 d_pack_a_avx2, d_pack_b_avx2, d_kernel_avx2, d_kernel_avx2_strided,
                                 d_colsum_avx2};

/* ------------------------------------------------------------------------------------------ */
/* AVX-512 (F + VL + DQ) micro-kernels                                                         */
/* ------------------------------------------------------------------------------------------ */

/* 32 zmm registers: sgemm 14 x 32 = 28 accumulators + 2 B vectors, A broadcast from memory as
 * an embedded-broadcast FMA operand (no register); dgemm 14 x 16, the same budget with 8 doubles
 * per vector. 12 x 32 / 12 x 16 measured the same within noise here (Xeon, Sapphire Rapids class,
 * one thread, CPU time: ~150 GFLOP/s f32, ~70 f64 at 1024^2); 14 rows need fewer B loads per FMA.
 * GCC keeps the 28 accumulators in registers with one spill per 4 k steps (checked with -S). */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#define AVX512_INLINE __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"), always_inline)) static inline

#ifndef S5_MR
#define S5_MR 14
#endif
#define S5_NR 32
#ifndef D5_MR
#define D5_MR 14
#endif
#define D5_NR 16
/* The packing routines store an MR-wide row of a panel with one 16-lane (float) or 2 x 8-lane
 * (double) masked store. */
_Static_assert(S5_MR <= 16 && D5_MR <= 16 && S5_MR >= 8 && D5_MR >= 8, "AVX-512 MR out of range");

/* Lanes [0, n) of a 16/8-lane vector, n clamped to [0, lanes]. */
AVX512_INLINE __mmask16 mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}
AVX512_INLINE __mmask8 mask8(int64_t n) {
    return n >= 8 ? (__mmask8)0xFF : n <= 0 ? (__mmask8)0 : (__mmask8)((1u << n) - 1);
}

/* Activations on 512-bit vectors through the AVX2 forms (s_act8/d_act4) on 256-bit halves: the
 * same instructions on the same values, so the AVX-512 epilogue gives bit-identical results. */
AVX512_INLINE __m512 s_act16(__m512 v, int act, __m256d p) {
    if (act == GC_ACT_IDENTITY) return v;
    const __m256 lo = s_act8(_mm512_castps512_ps256(v), act, p);
    const __m256 hi = s_act8(_mm512_extractf32x8_ps(v, 1), act, p);
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}
AVX512_INLINE __m512d d_act8(__m512d v, int act, __m256d p) {
    if (act == GC_ACT_IDENTITY) return v;
    const __m256d lo = d_act4(_mm512_castpd512_pd256(v), act, p);
    const __m256d hi = d_act4(_mm512_extractf64x4_pd(v, 1), act, p);
    return _mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1);
}

/* The alpha / addend / gate part of the epilogue (epi_t's contract) for one tile row: row
 * pointers into the addend and gate (NULL when absent), broadcast constants loaded once per tile. */
#define WB5_EXTRA(P, T, V)                                                                         \
    typedef struct {                                                                               \
        int scale; /* alpha != 1 */                                                                \
        V valpha, vgp;                                                                             \
        const T *addend, *gate;                                                                    \
    } P##_wb_extra;
WB5_EXTRA(s5, float, __m512)
WB5_EXTRA(d5, double, __m512d)
#undef WB5_EXTRA

/* The epilogue of epi_t on one vector, in the order of the AVX2 and portable paths: cr is the
 * vector's place in C, xr / gr its place in the addend / gate (read only when has_x / has_g).
 * The flags are separate so that callers with a known epilogue compile the rest away. Masked
 * loads touch only lanes m (of C, addend, gate). */
AVX512_INLINE __m512 s5_epi_core(__m512 v, const float *cr, __mmask16 m, int scale, __m512 valpha, int add_c,
                                 __m512 vbeta, int has_x, const float *xr, int has_bias, __m512 bias, int act,
                                 __m256d vp, int has_g, const float *gr, __m512 vgp) {
    if (scale) v = _mm512_mul_ps(v, valpha);
    if (add_c) v = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(m, cr), v);
    if (has_x) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, xr));
    if (has_bias) v = _mm512_add_ps(v, bias);
    v = s_act16(v, act, vp);
    if (has_g) { /* times (gate > 0 ? 1 : p), a multiply as in activation_grad: NaN stays NaN */
        /* Lanes with gate > 0 keep v, which is v * 1 exactly (v is an arithmetic result, never a
         * signalling NaN); the others (gate <= 0 or NaN) are multiplied by p. */
        const __mmask16 le = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m, gr), _mm512_setzero_ps(), _CMP_NGT_UQ);
        v = _mm512_mask_mul_ps(v, le, v, vgp);
    }
    return v;
}
/* The same for the vector at column offset off of a tile row whose addend and gate rows are x's. */
AVX512_INLINE __m512 s5_epi_vec(__m512 v, const float *cr, __mmask16 m, int64_t off, int add_c, __m512 vbeta,
                                int has_bias, __m512 bias, int act, __m256d vp, const s5_wb_extra *x) {
    return s5_epi_core(v, cr, m, x->scale, x->valpha, add_c, vbeta, x->addend != NULL,
                       x->addend ? x->addend + off : NULL, has_bias, bias, act, vp, x->gate != NULL,
                       x->gate ? x->gate + off : NULL, x->vgp);
}

/* Write-back of one tile row (two vectors) with the epilogue of epi_t. Masked loads/stores touch
 * only the first n columns (of C, addend, gate). */
AVX512_INLINE void s5_wb_row(float *cr, __m512 v0, __m512 v1, __mmask16 m0, __mmask16 m1, int add_c,
                             __m512 vbeta, int has_bias, __m512 bias0, __m512 bias1, int act,
                             __m256d vp, const s5_wb_extra *x) {
    v0 = s5_epi_vec(v0, cr, m0, 0, add_c, vbeta, has_bias, bias0, act, vp, x);
    v1 = s5_epi_vec(v1, cr + 16, m1, 16, add_c, vbeta, has_bias, bias1, act, vp, x);
    _mm512_mask_storeu_ps(cr, m0, v0);
    _mm512_mask_storeu_ps(cr + 16, m1, v1);
}
AVX512_INLINE void d5_wb_row(double *cr, __m512d v0, __m512d v1, __mmask8 m0, __mmask8 m1, int add_c,
                             __m512d vbeta, int has_bias, __m512d bias0, __m512d bias1, int act,
                             __m256d vp, const d5_wb_extra *x) {
    if (x->scale) {
        v0 = _mm512_mul_pd(v0, x->valpha);
        v1 = _mm512_mul_pd(v1, x->valpha);
    }
    if (add_c) {
        v0 = _mm512_fmadd_pd(vbeta, _mm512_maskz_loadu_pd(m0, cr), v0);
        v1 = _mm512_fmadd_pd(vbeta, _mm512_maskz_loadu_pd(m1, cr + 8), v1);
    }
    if (x->addend) {
        v0 = _mm512_add_pd(v0, _mm512_maskz_loadu_pd(m0, x->addend));
        v1 = _mm512_add_pd(v1, _mm512_maskz_loadu_pd(m1, x->addend + 8));
    }
    if (has_bias) {
        v0 = _mm512_add_pd(v0, bias0);
        v1 = _mm512_add_pd(v1, bias1);
    }
    v0 = d_act8(v0, act, vp);
    v1 = d_act8(v1, act, vp);
    if (x->gate) {
        const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
        const __mmask8 p0 = _mm512_cmp_pd_mask(_mm512_maskz_loadu_pd(m0, x->gate), zero, _CMP_GT_OQ);
        const __mmask8 p1 = _mm512_cmp_pd_mask(_mm512_maskz_loadu_pd(m1, x->gate + 8), zero, _CMP_GT_OQ);
        v0 = _mm512_mul_pd(v0, _mm512_mask_blend_pd(p0, x->vgp, one));
        v1 = _mm512_mul_pd(v1, _mm512_mask_blend_pd(p1, x->vgp, one));
    }
    _mm512_mask_storeu_pd(cr, m0, v0);
    _mm512_mask_storeu_pd(cr + 8, m1, v1);
}

/* The k loop of the 14-row kernels in assembly, wherever a k step's 14 A values are contiguous
 * (packed panels, and A^T read in place): the 28 accumulators sit in zmm0-27, the two B vectors
 * in zmm28-29 and A's broadcasts alternate between zmm30 and zmm31. GCC's version of this loop
 * from intrinsics (kept for A read in place untransposed and for the short-panel kernels)
 * spilled two accumulators to the stack once the write-back was inlined next to it: an extra
 * load and register copies every k step, which cost 8 % of the W-mlp step's GEMM time and 9 %
 * of A^T-in-place products such as 784 x 128 x 256 (2-core Xeon VM, 2026-12-02). Results are
 * identical: the same FMAs in the same order per element. Leaves row i of the tile (two
 * vectors) at tile + i * NR. ESZ: element bytes. */
#define K5_BCAST_FMA(BC, FM, ESZ, i, R0, R1, Z)                                                    \
    BC " " #i "*" #ESZ "(%[a]), %%zmm" #Z "\n\t"                                                    \
    FM " %%zmm" #Z ", %%zmm28, %%zmm" #R0 "\n\t"                                                    \
    FM " %%zmm" #Z ", %%zmm29, %%zmm" #R1 "\n\t"
#define K5_STEP(BC, FM, ESZ)                                                                       \
    "vmovaps (%[b]), %%zmm28\n\t"                                                                  \
    "vmovaps 64(%[b]), %%zmm29\n\t"                                                                \
    K5_BCAST_FMA(BC, FM, ESZ, 0, 0, 1, 30) K5_BCAST_FMA(BC, FM, ESZ, 1, 2, 3, 31)                  \
    K5_BCAST_FMA(BC, FM, ESZ, 2, 4, 5, 30) K5_BCAST_FMA(BC, FM, ESZ, 3, 6, 7, 31)                  \
    K5_BCAST_FMA(BC, FM, ESZ, 4, 8, 9, 30) K5_BCAST_FMA(BC, FM, ESZ, 5, 10, 11, 31)                \
    K5_BCAST_FMA(BC, FM, ESZ, 6, 12, 13, 30) K5_BCAST_FMA(BC, FM, ESZ, 7, 14, 15, 31)              \
    K5_BCAST_FMA(BC, FM, ESZ, 8, 16, 17, 30) K5_BCAST_FMA(BC, FM, ESZ, 9, 18, 19, 31)              \
    K5_BCAST_FMA(BC, FM, ESZ, 10, 20, 21, 30) K5_BCAST_FMA(BC, FM, ESZ, 11, 22, 23, 31)            \
    K5_BCAST_FMA(BC, FM, ESZ, 12, 24, 25, 30) K5_BCAST_FMA(BC, FM, ESZ, 13, 26, 27, 31)            \
    "add %[astep], %[a]\n\t"                                                                      \
    "add $128, %[b]\n\t"
#define K5_ZERO(R) "vpxord %%zmm" #R ", %%zmm" #R ", %%zmm" #R "\n\t"
#define K5_SAVE(R) "vmovaps %%zmm" #R ", " #R "*64(%[t])\n\t"
#define K5_EACH_ACC(X)                                                                             \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)    \
    X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27)
/* A is prefetched eight k steps ahead, as in the intrinsics loop. */
#define GEN_K5_ASM(P, T, MR, NR, BC, FM, ESZ)                                                      \
_Static_assert(MR == 14 && NR * ESZ == 128, "the assembly k loop is for 14 x (two vectors) tiles"); \
AVX512_INLINE int P##_kloop_asm(int64_t kc, const T *a, int64_t rsa, int64_t csa, const T *b, T *tile) { \
    if (rsa != 1) return 0; /* A rows apart in memory (A read in place, not transposed): intrinsics */ \
    int64_t quads = kc / 4, singles = kc % 4;                                                      \
    const int64_t astep = csa * ESZ; /* bytes between k steps: MR * ESZ packed, lda * ESZ for A^T */ \
    __asm__ volatile(                                                                              \
        K5_EACH_ACC(K5_ZERO)                                                                       \
        "test %[q], %[q]\n\t"                                                                      \
        "jz 2f\n\t"                                                                                \
        "1:\n\t"                                                                                   \
        "prefetcht0 (%[a], %[astep], 8)\n\t"                                                       \
        K5_STEP(BC, FM, ESZ) K5_STEP(BC, FM, ESZ) K5_STEP(BC, FM, ESZ) K5_STEP(BC, FM, ESZ)        \
        "dec %[q]\n\t"                                                                             \
        "jnz 1b\n\t"                                                                               \
        "2:\n\t"                                                                                   \
        "test %[s], %[s]\n\t"                                                                      \
        "jz 4f\n\t"                                                                                \
        "3:\n\t"                                                                                   \
        K5_STEP(BC, FM, ESZ)                                                                       \
        "dec %[s]\n\t"                                                                             \
        "jnz 3b\n\t"                                                                               \
        "4:\n\t"                                                                                   \
        K5_EACH_ACC(K5_SAVE)                                                                       \
        : [a] "+r"(a), [b] "+r"(b), [q] "+r"(quads), [s] "+r"(singles)                             \
        : [t] "r"(tile), [astep] "r"(astep)                                                        \
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",  \
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", \
          "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", \
          "xmm29", "xmm30", "xmm31");                                                              \
    return 1;                                                                                      \
}
GEN_K5_ASM(s5, float, S5_MR, S5_NR, "vbroadcastss", "vfmadd231ps", 4)
GEN_K5_ASM(d5, double, D5_MR, D5_NR, "vbroadcastsd", "vfmadd231pd", 8)
#undef GEN_K5_ASM
#undef K5_BCAST_FMA
#undef K5_STEP
#undef K5_ZERO
#undef K5_SAVE
#undef K5_EACH_ACC
/* The short-panel kernels keep the intrinsics loop (few accumulators: GCC keeps them in registers). */
#define NO_KLOOP_ASM(P, T)                                                                         \
    AVX512_INLINE int P##_kloop_asm(int64_t kc, const T *a, int64_t rsa, int64_t csa, const T *b, T *tile) { \
        (void)kc, (void)a, (void)rsa, (void)csa, (void)b, (void)tile;                              \
        return 0;                                                                                  \
    }
NO_KLOOP_ASM(s5r4, float)
NO_KLOOP_ASM(s5r8, float)
#undef NO_KLOOP_ASM

/* The kernels keep the tile in an array of vectors indexed only by constants after full
 * unrolling, which GCC keeps in registers (checked in the assembly: no spills in the k loop).
 * rsa/csa as in the AVX2 kernels: packed panels (1, MR) or A read in place. */
#define GEN_AVX512_KERNEL(P, T, V, MR, NR, L, SETZERO, LOAD, STORE, SET1, FMA, SET1D, MASK, MASKT, WB, MK) \
AVX512_INLINE void P##_body(int64_t kc, const T *a, int64_t rsa, int64_t csa, const T *b, T *c,     \
                            int64_t ldc, int64_t m, int64_t n, const epi_t *e, const T *bias) {    \
    const int add_c = e->add_c;                                                                    \
    prefetch_epilogue(e, c, ldc, m, n, sizeof(T), 0);                                              \
    /* Through a stack tile: one (not MR) inlined copy of the write-back and its activations. */ \
    T tile[MR * NR] __attribute__((aligned(64)));                                                  \
    if (!P##_kloop_asm(kc, a, rsa, csa, b, tile)) {                                                \
    V acc[MR][2];                                                                                  \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = SETZERO();       \
    int64_t k = 0;                                                                                 \
    for (; k + 4 <= kc; k += 4) {                                                                  \
        _mm_prefetch((const char *)(a + 8 * csa), _MM_HINT_T0);                                    \
        _Pragma("GCC unroll 4") for (int kk = 0; kk < 4; kk++) {                                   \
            const V b0 = LOAD(b), b1 = LOAD(b + L);                                                \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                \
                const V ai = SET1(a[i * rsa]);                                                     \
                acc[i][0] = FMA(ai, b0, acc[i][0]);                                                \
                acc[i][1] = FMA(ai, b1, acc[i][1]);                                                \
            }                                                                                      \
            a += csa;                                                                              \
            b += NR;                                                                               \
        }                                                                                          \
    }                                                                                              \
    for (; k < kc; k++) {                                                                          \
        const V b0 = LOAD(b), b1 = LOAD(b + L);                                                    \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                    \
            const V ai = SET1(a[i * rsa]);                                                         \
            acc[i][0] = FMA(ai, b0, acc[i][0]);                                                    \
            acc[i][1] = FMA(ai, b1, acc[i][1]);                                                    \
        }                                                                                          \
        a += csa;                                                                                  \
        b += NR;                                                                                   \
    }                                                                                              \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                        \
        STORE(tile + i * NR, acc[i][0]);                                                           \
        STORE(tile + i * NR + L, acc[i][1]);                                                       \
    }                                                                                              \
    }                                                                                              \
    if (!e->last) bias = NULL;                                                                     \
    const int act = e->last ? e->act : GC_ACT_IDENTITY;                                            \
    const MASKT m0 = MASK(n), m1 = MASK(n - L);                                                    \
    const V vbeta = SET1((T)e->beta);                                                              \
    const __m256d vp = SET1D;                                                                      \
    V bias0 = SETZERO(), bias1 = bias0;                                                            \
    if (bias) {                                                                                    \
        bias0 = MK(m0, bias);                                                                      \
        bias1 = MK(m1, bias + L);                                                                  \
    }                                                                                              \
    P##_wb_extra x = {e->alpha != 1, SET1((T)e->alpha), SET1((T)e->gate_param),                   \
                      (const T *)(e->last ? e->addend : NULL), (const T *)(e->last ? e->gate : NULL)}; \
    for (int64_t i = 0; i < m; i++) {                                                              \
        WB(c + i * ldc, LOAD(tile + i * NR), LOAD(tile + i * NR + L), m0, m1, add_c, vbeta,        \
           bias != NULL, bias0, bias1, act, vp, &x);                                               \
        if (x.addend) x.addend += e->ldx;                                                          \
        if (x.gate) x.gate += e->ldg;                                                              \
    }                                                                                              \
}                                                                                                  \
AVX512 static void P##_kernel(int64_t kc, const void *a, int64_t rsa, int64_t csa, const void *b,  \
                              void *c, int64_t ldc, int64_t m, int64_t n, const epi_t *e,          \
                              const void *bias) {                                                  \
    (void)rsa, (void)csa;                                                                          \
    P##_body(kc, (const T *)a, 1, MR, (const T *)b, (T *)c, ldc, m, n, e, (const T *)bias);        \
}                                                                                                  \
AVX512 static void P##_kernel_strided(int64_t kc, const void *a, int64_t rsa, int64_t csa,         \
                                      const void *b, void *c, int64_t ldc, int64_t m, int64_t n,   \
                                      const epi_t *e, const void *bias) {                          \
    P##_body(kc, (const T *)a, rsa, csa, (const T *)b, (T *)c, ldc, m, n, e, (const T *)bias);     \
}

/* vp: the float parameter widened to double, as in the AVX2 kernel. */
GEN_AVX512_KERNEL(s5, float, __m512, S5_MR, S5_NR, 16, _mm512_setzero_ps, _mm512_load_ps, _mm512_store_ps,
                  _mm512_set1_ps, _mm512_fmadd_ps, _mm256_set1_pd((double)(float)e->act_param),
                  mask16, __mmask16, s5_wb_row, _mm512_maskz_loadu_ps)
GEN_AVX512_KERNEL(d5, double, __m512d, D5_MR, D5_NR, 8, _mm512_setzero_pd, _mm512_load_pd, _mm512_store_pd,
                  _mm512_set1_pd, _mm512_fmadd_pd, _mm256_set1_pd(e->act_param),
                  mask8, __mmask8, d5_wb_row, _mm512_maskz_loadu_pd)

/* The last row panel of A is often short (256 rows = 18 panels of 14 and one of 4), and the full
 * kernel spends all 14 rows of FMAs on it. The same bodies with 4 or 8 rows of accumulators read
 * the packed 14-row panel (csa = S5_MR) and do only the rows that exist; each element of C goes
 * through the same FMAs in the same order, so results are identical. */
typedef s5_wb_extra s5r4_wb_extra;
typedef s5_wb_extra s5r8_wb_extra;
GEN_AVX512_KERNEL(s5r4, float, __m512, 4, S5_NR, 16, _mm512_setzero_ps, _mm512_load_ps, _mm512_store_ps,
                  _mm512_set1_ps, _mm512_fmadd_ps, _mm256_set1_pd((double)(float)e->act_param),
                  mask16, __mmask16, s5_wb_row, _mm512_maskz_loadu_ps)
GEN_AVX512_KERNEL(s5r8, float, __m512, 8, S5_NR, 16, _mm512_setzero_ps, _mm512_load_ps, _mm512_store_ps,
                  _mm512_set1_ps, _mm512_fmadd_ps, _mm256_set1_pd((double)(float)e->act_param),
                  mask16, __mmask16, s5_wb_row, _mm512_maskz_loadu_ps)
AVX512 static void s5_kernel_short(int64_t kc, const void *a, int64_t rsa, int64_t csa, const void *b, void *c,
                                   int64_t ldc, int64_t m, int64_t n, const epi_t *e, const void *bias) {
    (void)rsa, (void)csa;
    if (m <= 4) s5r4_body(kc, (const float *)a, 1, S5_MR, (const float *)b, (float *)c, ldc, m, n, e, bias);
    else s5r8_body(kc, (const float *)a, 1, S5_MR, (const float *)b, (float *)c, ldc, m, n, e, bias);
}

/* Packing. A panels are MR (14) wide, so each k row of a panel is written with one masked store;
 * rows/columns past the edge are written as zeros and never loaded (masked loads). The
 * transposing cases go through the AVX2 8x8 / 4x4 register transposes. */

AVX512 static void s5_pack_a(const void *vA, int64_t lda, int tA, int64_t r0, int64_t c0,
                             int64_t rows, int64_t kc, void *vdst) {
    const float *A = (const float *)vA;
    float *dst = (float *)vdst;
    for (int64_t i0 = 0; i0 < rows; i0 += S5_MR, dst += S5_MR * kc) {
        const int64_t m = MIN(S5_MR, rows - i0);
        if (!tA) { /* A is M x K: rows contiguous in k, transposed 8 rows x 8 k at a time */
            for (int g = 0; g < S5_MR; g += 8) {
                const int nrows = (int)MAX(0, MIN(8, m - g));
                const __mmask8 lanes = (__mmask8)mask8(S5_MR - g);
                const float *src[8];
                for (int i = 0; i < 8; i++) src[i] = A + (r0 + i0 + MIN(g + i, m - 1)) * lda + c0;
                int64_t k = 0;
                for (; k + 8 <= kc; k += 8) {
                    __m256 r[8];
                    for (int i = 0; i < 8; i++) r[i] = i < nrows ? _mm256_loadu_ps(src[i] + k) : _mm256_setzero_ps();
                    transpose8_ps(r);
                    for (int kk = 0; kk < 8; kk++) _mm256_mask_storeu_ps(dst + (k + kk) * S5_MR + g, lanes, r[kk]);
                }
                for (; k < kc; k++)
                    for (int i = g; i < MIN(g + 8, S5_MR); i++) dst[k * S5_MR + i] = i - g < nrows ? src[i - g][k] : 0.0f;
            }
        } else { /* A is K x M: the panel's rows are contiguous for each k */
            const float *src = A + c0 * lda + r0 + i0;
            const __mmask16 lm = mask16(m), sm = mask16(S5_MR);
            for (int64_t k = 0; k < kc; k++, src += lda)
                _mm512_mask_storeu_ps(dst + k * S5_MR, sm, _mm512_maskz_loadu_ps(lm, src));
        }
    }
}

/* Untransposed B (K x N): row k of the block is read front to back and dealt out to the panels,
 * rather than panel by panel with a stride of ldb between rows. One thread's 256 x 512 x 784 GEMM
 * (W-mlp's first layer) took 0.96x the time, with pack_b 4.8 % of the samples instead of 7.2 %;
 * two threads, each packing half of every row, 1.00x (ping-pong of two processes, 2-core AMD
 * EPYC Zen 4 VM, 2026-12-03). The AVX2 packers keep the panel order: with two threads they lost
 * 2-4 % this way on the same shapes. L: lanes per vector; an NR-wide panel row is two vectors. */
#define GEN_PACK_B_ROWS(P, T, NR, L, LOADU, MASKZ_LOADU, STOREU, MASK)                             \
    AVX512_INLINE void P##_pack_b_rows(const T *B, int64_t ldb, int64_t r0, int64_t c0, int64_t kc, \
                                       int64_t cols, T *dst) {                                     \
        const T *src = B + r0 * ldb + c0;                                                          \
        for (int64_t k = 0; k < kc; k++, src += ldb) {                                             \
            T *d = dst + k * NR;                                                                   \
            int64_t j0 = 0;                                                                        \
            for (; j0 + NR <= cols; j0 += NR, d += NR * kc) {                                      \
                STOREU(d, LOADU(src + j0));                                                        \
                STOREU(d + L, LOADU(src + j0 + L));                                                \
            }                                                                                      \
            if (j0 < cols) {                                                                       \
                STOREU(d, MASKZ_LOADU(MASK(cols - j0), src + j0));                                 \
                STOREU(d + L, MASKZ_LOADU(MASK(cols - j0 - L), src + j0 + L));                    \
            }                                                                                      \
        }                                                                                          \
    }
GEN_PACK_B_ROWS(s5, float, S5_NR, 16, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_storeu_ps, mask16)
GEN_PACK_B_ROWS(d5, double, D5_NR, 8, _mm512_loadu_pd, _mm512_maskz_loadu_pd, _mm512_storeu_pd, mask8)
#undef GEN_PACK_B_ROWS

AVX512 static void s5_pack_b(const void *vB, int64_t ldb, int tB, int64_t r0, int64_t c0,
                             int64_t kc, int64_t cols, void *vdst) {
    const float *B = (const float *)vB;
    float *dst = (float *)vdst;
    if (!tB) {
        s5_pack_b_rows(B, ldb, r0, c0, kc, cols, dst);
        return;
    }
    for (int64_t j0 = 0; j0 < cols; j0 += S5_NR, dst += S5_NR * kc) {
        const int64_t n = MIN(S5_NR, cols - j0);
        /* B is N x K: column j of the panel is contiguous in k */
        for (int h = 0; h < S5_NR; h += 8) {
            const float *src[8];
            const int nrows = (int)MAX(0, MIN(8, n - h));
            for (int i = 0; i < 8; i++) src[i] = B + (c0 + j0 + MIN(h + i, MAX(n - 1, 0))) * ldb + r0;
            s_gather8(src, nrows, kc, dst + h, S5_NR);
        }
    }
}

AVX512 static void d5_pack_a(const void *vA, int64_t lda, int tA, int64_t r0, int64_t c0,
                             int64_t rows, int64_t kc, void *vdst) {
    const double *A = (const double *)vA;
    double *dst = (double *)vdst;
    for (int64_t i0 = 0; i0 < rows; i0 += D5_MR, dst += D5_MR * kc) {
        const int64_t m = MIN(D5_MR, rows - i0);
        if (!tA) { /* rows in groups of 4, transposed 4 k at a time */
            for (int g = 0; g < D5_MR; g += 4) {
                const int nrows = (int)MAX(0, MIN(4, m - g));
                const __mmask8 lanes = mask8(MIN(4, D5_MR - g));
                const double *src[4];
                for (int i = 0; i < 4; i++) src[i] = A + (r0 + i0 + MIN(g + i, m - 1)) * lda + c0;
                int64_t k = 0;
                for (; k + 4 <= kc; k += 4) {
                    __m256d r[4];
                    for (int i = 0; i < 4; i++) r[i] = i < nrows ? _mm256_loadu_pd(src[i] + k) : _mm256_setzero_pd();
                    transpose4_pd(r);
                    for (int kk = 0; kk < 4; kk++) _mm256_mask_storeu_pd(dst + (k + kk) * D5_MR + g, lanes, r[kk]);
                }
                for (; k < kc; k++)
                    for (int i = g; i < MIN(g + 4, D5_MR); i++) dst[k * D5_MR + i] = i - g < nrows ? src[i - g][k] : 0.0;
            }
        } else {
            const double *src = A + c0 * lda + r0 + i0;
            const __mmask8 l0 = mask8(m), l1 = mask8(m - 8), s0 = mask8(D5_MR), s1 = mask8(D5_MR - 8);
            for (int64_t k = 0; k < kc; k++, src += lda) {
                _mm512_mask_storeu_pd(dst + k * D5_MR, s0, _mm512_maskz_loadu_pd(l0, src));
                _mm512_mask_storeu_pd(dst + k * D5_MR + 8, s1, _mm512_maskz_loadu_pd(l1, src + 8));
            }
        }
    }
}

AVX512 static void d5_pack_b(const void *vB, int64_t ldb, int tB, int64_t r0, int64_t c0,
                             int64_t kc, int64_t cols, void *vdst) {
    const double *B = (const double *)vB;
    double *dst = (double *)vdst;
    if (!tB) {
        d5_pack_b_rows(B, ldb, r0, c0, kc, cols, dst);
        return;
    }
    for (int64_t j0 = 0; j0 < cols; j0 += D5_NR, dst += D5_NR * kc) {
        const int64_t n = MIN(D5_NR, cols - j0);
        for (int h = 0; h < D5_NR; h += 4) {
            const double *src[4];
            const int nrows = (int)MAX(0, MIN(4, n - h));
            for (int i = 0; i < 4; i++) src[i] = B + (c0 + j0 + MIN(h + i, MAX(n - 1, 0))) * ldb + r0;
            d_gather4(src, nrows, kc, dst + h, D5_NR);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Thin float32 products on AVX-512 (N or K <= 16): unpacked kernels that fill whole vectors   */
/* ------------------------------------------------------------------------------------------ */

/* With N <= 16 the packed kernel's 14 x 32 tiles are mostly padding (N = 10: 10 of every 32 FMA
 * lanes do work: the logits and the weight update of a 10-class output layer), and with K <= 16
 * (the gradient through that layer, K = 10) packing and the per-tile write-back outweigh the few
 * FMAs per element. Three unpacked kernels, which read A in place, once:
 *   dot (A stored M x K, N <= 14, long K): C[i, j] = A[i, :] . op(B)[:, j], 16 k per vector; R rows
 *       x N columns of accumulators, then one horizontal-sum tree per row leaves the row's N
 *       results in one vector, which goes through the epilogue as a tile row would;
 *   tn (A stored K x M, op(A) = A^T, N <= 16: the weight-gradient shape X^T G): 16 rows of C per
 *       vector, V vectors x N columns of accumulators fed by op(A)[i0:i0+16V, k] * op(B)[k, j]
 *       (broadcast), then each 16 x 16 block transposed in registers into rows of C;
 *   ks (K <= 16, or N <= 16 where dot does not pay): outer products, rows of C in vectors.
 * Operands in the other layout than a kernel reads are first transposed into small buffers. The
 * whole K is summed in registers (no K blocks), so the epilogue runs once per element (beta * C
 * read once, then addend, bias, act, gate). */
#define THIN_NMAX 16

/* r[i] lane j <-> r[j] lane i: 4 rounds of 16 shuffles. */
AVX512_INLINE void transpose16_ps(__m512 r[16]) {
    __m512 t[16];
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* r[4p + c], 128-bit lane q: column 4q + c of rows 4p .. 4p+3 */
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i += 4) {
        const __m512d t0 = _mm512_castps_pd(t[i]), t1 = _mm512_castps_pd(t[i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[i + 2]), t3 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    /* transpose the 4 x 4 grid of 128-bit blocks */
    __m512 o[16];
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        const __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
        const __m512 u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        o[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        o[4 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        o[8 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        o[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] = o[i];
}

/* Lane j of the result: the sum of the 16 lanes of x[j] (a tree of 15 shuffle-pair adds). */
AVX512_INLINE __m512 hsum16_ps(const __m512 x[16]) {
    /* Slot s takes x[(s % 4) * 4 + s / 4], so that the last round leaves x[j]'s sum in lane j. */
    __m512 y[8], z[4], w[2];
    _Pragma("GCC unroll 8") for (int p = 0; p < 8; p++) {
        const __m512 a = x[(2 * p) % 4 * 4 + 2 * p / 4], b = x[(2 * p + 1) % 4 * 4 + (2 * p + 1) / 4];
        y[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++)
        z[p] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * p], y[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(y[2 * p], y[2 * p + 1], 0xDD));
    _Pragma("GCC unroll 2") for (int p = 0; p < 2; p++) {
        const __m512d a = _mm512_castps_pd(z[2 * p]), b = _mm512_castps_pd(z[2 * p + 1]);
        w[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
}

/* dst (cols x rows, row stride ldd) = the transpose of src (rows x cols, row stride lds). */
AVX512 static void s5_transpose(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst,
                                int64_t ldd) {
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
        const int64_t ri = MIN(16, rows - i0);
        for (int64_t j0 = 0; j0 < cols; j0 += 16) {
            const int64_t cj = MIN(16, cols - j0);
            const __mmask16 mj = mask16(cj);
            __m512 r[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                r[i] = i < ri ? _mm512_maskz_loadu_ps(mj, src + (i0 + i) * lds + j0) : _mm512_setzero_ps();
            transpose16_ps(r);
            _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)
                if (j < cj) _mm512_mask_storeu_ps(dst + (j0 + j) * ldd + i0, mask16(ri), r[j]);
        }
    }
}

/* The write-back of a thin product: all of K at once, so the first and last K block. The dot and
 * tn kernels (and ks with an activation) leave their results in a row-major stack tile, written
 * back by one loop (one copy of the epilogue and its activations, not one per register). */
/* The parts of the epilogue a call needs, as a bit set: the write-backs have copies compiled for
 * the common sets (the generic one reloads and tests each part per vector, a good part of ks's
 * time: K = 10 is 10 FMAs per vector written), EPI_ANY decides at run time. */
enum { EPI_SCALE = 1, EPI_ADD_C = 2, EPI_ADDEND = 4, EPI_BIAS = 8, EPI_GATE = 16, EPI_ACT = 32, EPI_ANY = 64 };

static int thin_epi_set(const gemm_args *g) {
    return (g->alpha != 1 ? EPI_SCALE : 0) | (g->beta != 0 ? EPI_ADD_C : 0) | (g->addend ? EPI_ADDEND : 0) |
           (g->bias ? EPI_BIAS : 0) | (g->gate ? EPI_GATE : 0) | (g->act != GC_ACT_IDENTITY ? EPI_ACT : 0);
}

typedef struct s5_thin_epi s5_thin_epi;
typedef void (*thin_tile_fn)(const s5_thin_epi *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t);
struct s5_thin_epi {
    const gemm_args *g;
    int add_c;
    __m512 vbeta;
    __m256d vp;
    s5_wb_extra x;     /* alpha, gate factor; addend and gate of C's row 0 */
    thin_tile_fn tile; /* the write-back of a tile, compiled for this call's epilogue set */
};

/* C[i0 + r, j0 + j] = the epilogue of tile[r * ldt + j], r < rows, j < cols; F: the epilogue set
 * (a constant) or EPI_ANY. What the loop reads is copied to locals first: a vector store may alias
 * anything, so fields read through t or g would be reloaded after every store. */
AVX512_INLINE void s5_thin_tile_body(const int F, const s5_thin_epi *t, const float *tile, int64_t ldt, int64_t i0,
                                     int64_t rows, int64_t j0, int64_t cols) {
    const gemm_args *g = t->g;
    const int any = F == EPI_ANY;
    const int scale = any ? t->x.scale : !!(F & EPI_SCALE), add_c = any ? t->add_c : !!(F & EPI_ADD_C);
    const int has_x = any ? t->x.addend != NULL : !!(F & EPI_ADDEND);
    const int has_g = any ? t->x.gate != NULL : !!(F & EPI_GATE);
    const int has_bias = any ? g->bias != NULL : !!(F & EPI_BIAS);
    const int act = any ? g->act : GC_ACT_IDENTITY;
    const __m512 valpha = t->x.valpha, vbeta = t->vbeta, vgp = t->x.vgp;
    const __m256d vp = t->vp;
    const int64_t ldc = g->ldc, ldx = g->ldx, ldg = g->ldg;
    const float *const bias = has_bias ? (const float *)g->bias + j0 : NULL;
    float *c = (float *)g->C + i0 * ldc + j0;
    const float *xr = has_x ? t->x.addend + i0 * ldx + j0 : NULL, *gr = has_g ? t->x.gate + i0 * ldg + j0 : NULL;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j += 16) {
            const __mmask16 m = mask16(cols - j);
            const __m512 vbias = has_bias ? _mm512_maskz_loadu_ps(m, bias + j) : _mm512_setzero_ps();
            const __m512 v = s5_epi_core(_mm512_load_ps(tile + r * ldt + j), c + j, m, scale, valpha, add_c, vbeta,
                                         has_x, has_x ? xr + j : NULL, has_bias, vbias, act, vp, has_g,
                                         has_g ? gr + j : NULL, vgp);
            _mm512_mask_storeu_ps(c + j, m, v);
        }
        c += ldc;
        if (has_x) xr += ldx;
        if (has_g) gr += ldg;
    }
}

#define GEN_THIN_TILE(NAME, F)                                                                     \
    AVX512 static void s5_thin_tile_##NAME(const s5_thin_epi *t, const float *tile, int64_t ldt, int64_t i0, \
                                           int64_t rows, int64_t j0, int64_t cols) {               \
        s5_thin_tile_body(F, t, tile, ldt, i0, rows, j0, cols);                                    \
    }
GEN_THIN_TILE(any, EPI_ANY)
GEN_THIN_TILE(plain, 0)
GEN_THIN_TILE(bias, EPI_BIAS)
GEN_THIN_TILE(gate, EPI_GATE)
GEN_THIN_TILE(update, EPI_SCALE | EPI_ADDEND)
#undef GEN_THIN_TILE

AVX512_INLINE s5_thin_epi s5_thin_epi_of(const gemm_args *g) {
    thin_tile_fn tile = s5_thin_tile_any;
    switch (thin_epi_set(g)) {
    case 0: tile = s5_thin_tile_plain; break;
    case EPI_BIAS: tile = s5_thin_tile_bias; break;
    case EPI_GATE: tile = s5_thin_tile_gate; break;
    case EPI_SCALE | EPI_ADDEND: tile = s5_thin_tile_update; break;
    }
    const s5_thin_epi t = {g, g->beta != 0, _mm512_set1_ps((float)g->beta), _mm256_set1_pd((double)(float)g->act_param),
                           {g->alpha != 1, _mm512_set1_ps((float)g->alpha), _mm512_set1_ps((float)g->gate_param),
                            (const float *)g->addend, (const float *)g->gate},
                           tile};
    return t;
}

/* dot: rows [r0, r1) of C, N columns, R rows at a time (then one at a time). bt: op(B) as N rows
 * of K (row stride ldbt). Accumulators R x N (+ R A vectors): at most 30 of the 32 registers. */
#define THIN_DOT_R(N) ((N) >= 15 ? 1 : 30 / ((N) + 1) > 8 ? 8 : 30 / ((N) + 1))
#define GEN_THIN_DOT(N)                                                                            \
AVX512_INLINE void s5_dot_block_##N(const int R, int64_t K, const float *a, int64_t lda,             \
                                    const float *bt, int64_t ldbt, float *tile) {                  \
    __m512 acc[THIN_DOT_R(N)][N];                                                                  \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                            \
        _Pragma("GCC unroll 16") for (int j = 0; j < N; j++) acc[r][j] = _mm512_setzero_ps();      \
    int64_t k = 0;                                                                                 \
    for (; k + 16 <= K; k += 16) {                                                                 \
        __m512 av[THIN_DOT_R(N)];                                                                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) av[r] = _mm512_loadu_ps(a + r * lda + k); \
        _Pragma("GCC unroll 16") for (int j = 0; j < N; j++) {                                     \
            __m512 b = _mm512_loadu_ps(bt + j * ldbt + k);                                         \
            if (R > 1) __asm__("" : "+v"(b)); /* one load, not one per row */                     \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][j] = _mm512_fmadd_ps(av[r], b, acc[r][j]); \
        }                                                                                          \
    }                                                                                              \
    if (k < K) {                                                                                   \
        const __mmask16 mk = mask16(K - k);                                                        \
        __m512 av[THIN_DOT_R(N)];                                                                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) av[r] = _mm512_maskz_loadu_ps(mk, a + r * lda + k); \
        _Pragma("GCC unroll 16") for (int j = 0; j < N; j++) {                                     \
            __m512 b = _mm512_maskz_loadu_ps(mk, bt + j * ldbt + k);                               \
            if (R > 1) __asm__("" : "+v"(b));                                                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r][j] = _mm512_fmadd_ps(av[r], b, acc[r][j]); \
        }                                                                                          \
    }                                                                                              \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                          \
        __m512 x[16];                                                                              \
        _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)                                      \
            x[j] = j < N ? acc[r][j < N ? j : 0] : _mm512_setzero_ps();                            \
        _mm512_store_ps(tile + 16 * r, hsum16_ps(x));                                              \
    }                                                                                              \
}                                                                                                  \
AVX512 static void s5_dot_rows_##N(int64_t r0, int64_t r1, int64_t K, const float *A, int64_t lda,  \
                                   const float *bt, int64_t ldbt, const s5_thin_epi *t) {           \
    float tile[16 * THIN_DOT_R(N)] __attribute__((aligned(64)));                                  \
    int64_t i = r0;                                                                                \
    for (; i + THIN_DOT_R(N) <= r1; i += THIN_DOT_R(N)) {                                          \
        s5_dot_block_##N(THIN_DOT_R(N), K, A + i * lda, lda, bt, ldbt, tile);                      \
        t->tile(t, tile, 16, i, THIN_DOT_R(N), 0, N);                                             \
    }                                                                                              \
    for (; i < r1; i++) {                                                                          \
        s5_dot_block_##N(1, K, A + i * lda, lda, bt, ldbt, tile);                                  \
        t->tile(t, tile, 16, i, 1, 0, N);                                                          \
    }                                                                                              \
}

/* tn: rows [r0, r1) of C (r0 a multiple of 16 V), V vectors of 16 rows at a time. b: op(B) as K
 * rows of N (row stride ldb). Accumulators V x N (+ V A vectors), at most 30 registers. */
#define THIN_TN_V(N) ((N) >= 15 ? 1 : (N) >= 10 ? 2 : (N) >= 6 ? 3 : 4)
/* k rows of A prefetched ahead of the one being read (A^T is read down its columns: one or two
 * cache lines per row k, 4 KB pages apart every few rows, which the hardware prefetchers miss). */
#define THIN_TN_PREFETCH 8
#define GEN_THIN_TN(N)                                                                             \
AVX512 static void s5_tn_rows_##N(int64_t r0, int64_t r1, int64_t K, const float *A, int64_t lda,  \
                                  const float *b, int64_t ldb, const s5_thin_epi *t) {             \
    enum { V = THIN_TN_V(N) };                                                                     \
    float tile[16 * 16 * V] __attribute__((aligned(64)));                                         \
    for (int64_t i0 = r0; i0 < r1; i0 += 16 * V) {                                                 \
        __mmask16 mv[V];                                                                           \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) mv[v] = mask16(r1 - i0 - 16 * v);      \
        __m512 acc[V][N];                                                                          \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                                        \
            _Pragma("GCC unroll 16") for (int j = 0; j < N; j++) acc[v][j] = _mm512_setzero_ps();  \
        const float *ak = A + i0, *bk = b;                                                         \
        for (int64_t k = 0; k < K; k++, ak += lda, bk += ldb) {                                    \
            if (k + THIN_TN_PREFETCH < K)                                                          \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                                \
                    _mm_prefetch((const char *)(ak + THIN_TN_PREFETCH * lda + 16 * v), _MM_HINT_T0); \
            __m512 av[V];                                                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) av[v] = _mm512_maskz_loadu_ps(mv[v], ak + 16 * v); \
            _Pragma("GCC unroll 16") for (int j = 0; j < N; j++) {                                 \
                const __m512 bj = _mm512_set1_ps(bk[j]);                                           \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) acc[v][j] = _mm512_fmadd_ps(av[v], bj, acc[v][j]); \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {                                      \
            __m512 x[16];                                                                          \
            _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)                                  \
                x[j] = j < N ? acc[v][j < N ? j : 0] : _mm512_setzero_ps();                        \
            transpose16_ps(x);                                                                     \
            _Pragma("GCC unroll 16") for (int l = 0; l < 16; l++) _mm512_store_ps(tile + 16 * (16 * v + l), x[l]); \
        }                                                                                          \
        t->tile(t, tile, 16, i0, MIN(16 * V, r1 - i0), 0, N);                                       \
    }                                                                                              \
}

/* ks (K <= 16 with any N, or N <= 16 where dot does not pay): C[i, j0:j0+16W] = sum_k op(A)[i, k]
 * op(B)[k, j0:j0+16W], U = 4 rows x W <= 4 vectors of C at a time (8 rows x 1 vector for N <= 16,
 * so that 8 FMA chains hide the FMA latency): per k, W vectors of op(B) and U broadcasts of op(A)
 * feed U W FMAs. Rows outermost, so that C, the addend and the gate are streamed along their rows.
 * a: row r0 of op(A) as rows of K (row stride lda); b: op(B) as K rows of N (row stride ldb).
 * F: the epilogue set (a constant), or EPI_ANY. */
AVX512_INLINE void s5_ks_block(const int U, const int W, const int F, int64_t K, const float *a, int64_t lda,
                               const float *b, int64_t ldb, int64_t n, const s5_thin_epi *t, int64_t i, int64_t j0,
                               float *tile) {
    __m512 acc[8][4];
    __mmask16 m[4];
    /* a full block (n == 16 W, a constant) loads op(B) unmasked */
    _Pragma("GCC unroll 4") for (int w = 0; w < W; w++) m[w] = n == 16 * W ? (__mmask16)0xFFFF : mask16(n - 16 * w);
    _Pragma("GCC unroll 8") for (int u = 0; u < U; u++)
        _Pragma("GCC unroll 4") for (int w = 0; w < W; w++) acc[u][w] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m512 bv[4];
        _Pragma("GCC unroll 4") for (int w = 0; w < W; w++)
            bv[w] = n == 16 * W ? _mm512_loadu_ps(b + k * ldb + 16 * w) : _mm512_maskz_loadu_ps(m[w], b + k * ldb + 16 * w);
        _Pragma("GCC unroll 8") for (int u = 0; u < U; u++) {
            __m512 au = _mm512_set1_ps(a[u * lda + k]);
            if (W > 1) __asm__("" : "+v"(au)); /* one broadcast load, not one per vector */
            _Pragma("GCC unroll 4") for (int w = 0; w < W; w++) acc[u][w] = _mm512_fmadd_ps(au, bv[w], acc[u][w]);
        }
    }
    const gemm_args *g = t->g;
    if (F == EPI_ANY && g->act != GC_ACT_IDENTITY) { /* through the tile: one copy of the activations */
        _Pragma("GCC unroll 8") for (int u = 0; u < U; u++)
            _Pragma("GCC unroll 4") for (int w = 0; w < W; w++) _mm512_store_ps(tile + 64 * u + 16 * w, acc[u][w]);
        s5_thin_tile_any(t, tile, 64, i, U, j0, n);
        return;
    }
    /* Straight from the registers (C is most of what ks writes: no round trip through a tile).
     * What the write-back reads is first copied to locals: a vector store may alias anything, so
     * fields read through t or g would be reloaded after every store (with those reloads and the
     * run-time tests of each epilogue part, 256 x 256 x 10 with a gate took 17 us, now 11). */
    const int any = F == EPI_ANY;
    const int scale = any ? t->x.scale : !!(F & EPI_SCALE), add_c = any ? t->add_c : !!(F & EPI_ADD_C);
    const int has_x = any ? t->x.addend != NULL : !!(F & EPI_ADDEND);
    const int has_g = any ? t->x.gate != NULL : !!(F & EPI_GATE);
    const int has_bias = any ? g->bias != NULL : !!(F & EPI_BIAS);
    const __m512 valpha = t->x.valpha, vbeta = t->vbeta, vgp = t->x.vgp;
    const int64_t ldc = g->ldc, ldx = g->ldx, ldg = g->ldg;
    const float *const xr0 = has_x ? t->x.addend + i * ldx + j0 : NULL;
    const float *const gr0 = has_g ? t->x.gate + i * ldg + j0 : NULL;
    float *const c = (float *)g->C + i * ldc + j0;
    __m512 vbias[4];
    _Pragma("GCC unroll 4") for (int w = 0; w < W; w++)
        vbias[w] = has_bias ? _mm512_maskz_loadu_ps(m[w], (const float *)g->bias + j0 + 16 * w) : _mm512_setzero_ps();
    _Pragma("GCC unroll 8") for (int u = 0; u < U; u++)
        _Pragma("GCC unroll 4") for (int w = 0; w < W; w++) {
            float *const cr = c + u * ldc + 16 * w;
            const __m512 v = s5_epi_core(acc[u][w], cr, m[w], scale, valpha, add_c, vbeta, has_x,
                                         has_x ? xr0 + u * ldx + 16 * w : NULL, has_bias, vbias[w], GC_ACT_IDENTITY,
                                         t->vp, has_g, has_g ? gr0 + u * ldg + 16 * w : NULL, vgp);
            _mm512_mask_storeu_ps(cr, m[w], v);
        }
}

AVX512_INLINE void s5_ks_rows_body(const int F, int64_t r0, int64_t r1, int64_t N, int64_t K, const float *a,
                                   int64_t lda, const float *b, int64_t ldb, const s5_thin_epi *t) {
    float tile[8 * 64] __attribute__((aligned(64)));
    int64_t i = r0;
    if (N <= 16) /* one vector per row: 8 rows at a time */
        for (; i + 8 <= r1; i += 8) s5_ks_block(8, 1, F, K, a + (i - r0) * lda, lda, b, ldb, N, t, i, 0, tile);
    for (; i + 4 <= r1; i += 4) {
        const float *ai = a + (i - r0) * lda;
        for (int64_t j0 = 0; j0 < N; j0 += 64) {
            const int64_t n = MIN(64, N - j0);
            switch (n == 64 ? 0 : (n + 15) / 16) {
            case 0: s5_ks_block(4, 4, F, K, ai, lda, b + j0, ldb, 64, t, i, j0, tile); break;
            case 1: s5_ks_block(4, 1, F, K, ai, lda, b + j0, ldb, n, t, i, j0, tile); break;
            case 2: s5_ks_block(4, 2, F, K, ai, lda, b + j0, ldb, n, t, i, j0, tile); break;
            case 3: s5_ks_block(4, 3, F, K, ai, lda, b + j0, ldb, n, t, i, j0, tile); break;
            default: s5_ks_block(4, 4, F, K, ai, lda, b + j0, ldb, n, t, i, j0, tile); break;
            }
        }
    }
    for (; i < r1; i++)
        for (int64_t j0 = 0; j0 < N; j0 += 16)
            s5_ks_block(1, 1, F, K, a + (i - r0) * lda, lda, b + j0, ldb, MIN(16, N - j0), t, i, j0, tile);
}

#define GEN_KS_ROWS(NAME, F)                                                                       \
    AVX512 static void s5_ks_rows_##NAME(int64_t r0, int64_t r1, int64_t N, int64_t K, const float *a, int64_t lda, \
                                         const float *b, int64_t ldb, const s5_thin_epi *t) {      \
        s5_ks_rows_body(F, r0, r1, N, K, a, lda, b, ldb, t);                                       \
    }
GEN_KS_ROWS(any, EPI_ANY)
GEN_KS_ROWS(plain, 0)
GEN_KS_ROWS(bias, EPI_BIAS)
GEN_KS_ROWS(gate, EPI_GATE)
GEN_KS_ROWS(update, EPI_SCALE | EPI_ADDEND)
#undef GEN_KS_ROWS

static void s5_ks_rows(int64_t r0, int64_t r1, int64_t N, int64_t K, const float *a, int64_t lda, const float *b,
                       int64_t ldb, const s5_thin_epi *t) {
    switch (thin_epi_set(t->g)) {
    case 0: s5_ks_rows_plain(r0, r1, N, K, a, lda, b, ldb, t); break;
    case EPI_BIAS: s5_ks_rows_bias(r0, r1, N, K, a, lda, b, ldb, t); break;
    case EPI_GATE: s5_ks_rows_gate(r0, r1, N, K, a, lda, b, ldb, t); break;
    case EPI_SCALE | EPI_ADDEND: s5_ks_rows_update(r0, r1, N, K, a, lda, b, ldb, t); break;
    default: s5_ks_rows_any(r0, r1, N, K, a, lda, b, ldb, t); break;
    }
}

#define THIN_EACH_N(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)
THIN_EACH_N(GEN_THIN_DOT)
THIN_EACH_N(GEN_THIN_TN)

typedef void (*thin_rows_fn)(int64_t, int64_t, int64_t, const float *, int64_t, const float *, int64_t,
                             const s5_thin_epi *);
#define THIN_DOT_ENTRY(N) s5_dot_rows_##N,
#define THIN_TN_ENTRY(N) s5_tn_rows_##N,
static const thin_rows_fn s5_dot_rows[THIN_NMAX + 1] = {NULL, THIN_EACH_N(THIN_DOT_ENTRY)};
static const thin_rows_fn s5_tn_rows[THIN_NMAX + 1] = {NULL, THIN_EACH_N(THIN_TN_ENTRY)};
#undef THIN_DOT_ENTRY
#undef THIN_TN_ENTRY

enum { THIN_DOT, THIN_TN, THIN_KS };

/* One thin product. Operands stored the other way round are transposed by each thread into its
 * own part of the scratch (op(B) whole, op(A) only the thread's rows): a buffer written by one
 * core and read by the other would cross between the cores' caches twice per call, which on the
 * 2-core Xeon cost more (~3 us for a 10 KB op(B)) than transposing it on both. */
typedef struct {
    const gemm_args *g;
    int kind;
    int tb;            /* op(B) transposed into the buffer, row stride ldbt */
    int ta;            /* op(A) rows transposed into the buffer (ks), row stride K */
    int64_t ldbt;
    size_t bfloats;    /* op(B)'s part of each thread's buffer */
    float *buf;        /* thread tid's buffer at buf + tid * stride */
    size_t stride;
    int64_t blk;       /* rows per kernel block: the threads' ranges are multiples of it */
} s5_thin_ctx;

AVX512 static void s5_thin_range(const s5_thin_ctx *x, int tid, int64_t r0, int64_t r1) {
    const gemm_args *g = x->g;
    if (r0 >= r1) return;
    const int64_t N = g->N, K = g->K;
    float *buf = x->buf + x->stride * (size_t)tid;
    const float *A = (const float *)g->A, *B = (const float *)g->B;
    int64_t lda = g->lda, ldb = g->ldb;
    if (x->tb) {
        /* dot reads op(B) as N rows of K, tn and ks as K rows of N */
        if (x->kind == THIN_DOT) s5_transpose(B, g->ldb, K, N, buf, x->ldbt); /* B stored K x N */
        else s5_transpose(B, g->ldb, N, K, buf, x->ldbt);                      /* B stored N x K */
        B = buf, ldb = x->ldbt;
    }
    const float *ar0 = A + r0 * lda; /* row r0 of op(A), for ks */
    if (x->ta) { /* ks reads op(A) as rows of K: rows [r0, r1) of it from A stored K x M */
        float *at = buf + x->bfloats;
        s5_transpose(A + r0, g->lda, K, r1 - r0, at, K);
        ar0 = at, lda = K;
    }
    const s5_thin_epi t = s5_thin_epi_of(g);
    switch (x->kind) {
    case THIN_DOT: s5_dot_rows[N](r0, r1, K, A, lda, B, ldb, &t); break;
    case THIN_TN: s5_tn_rows[N](r0, r1, K, A, lda, B, ldb, &t); break;
    default: s5_ks_rows(r0, r1, N, K, ar0, lda, B, ldb, &t); break;
    }
}

/* Rows of thread tid of team: whole kernel blocks, as even as possible. */
static void thin_rows_of(const s5_thin_ctx *x, int tid, int team, int64_t *r0, int64_t *r1) {
    const int64_t nb = (x->g->M + x->blk - 1) / x->blk;
    *r0 = MIN(x->g->M, nb * tid / team * x->blk);
    *r1 = MIN(x->g->M, nb * (tid + 1) / team * x->blk);
}

static void s5_thin_thread(void *ctx, int tid, int team) {
    const s5_thin_ctx *x = (const s5_thin_ctx *)ctx;
    int64_t r0, r1;
    thin_rows_of(x, tid, team, &r0, &r1);
    s5_thin_range(x, tid, r0, r1);
}

/* The thin kernels read all of op(B) once per block of rows: N <= 16 products go to them when
 * op(B) fits in L1 next to the A rows being read (48 KB), K <= 16 ones (ks) when it fits in L2
 * (256 KB; beyond that the packed GEMM's cache blocking wins). ks with A stored K x M transposes
 * each thread's rows of op(A) first: at most THIN_KS_MAX_AT floats of it. */
#ifndef THIN_MAX_BK
#define THIN_MAX_BK 12288
#endif
#ifndef THIN_KS_MAX_BK
#define THIN_KS_MAX_BK 65536
#endif
#ifndef THIN_KS_MAX_AT
#define THIN_KS_MAX_AT (1 << 20)
#endif
/* A stored M x K with N <= 16: dot or ks? ks computes one 16-lane vector per row and k (N of
 * the lanes useful), dot N / 16 vectors per row and 16 k plus a ~25-cycle reduction per row, so
 * dot pays from K (18 - N) >~ 800 (N <= 14; N = 15, 16 leave dot one row at a time, never
 * better). Measured (2026-12-01, 2-core Xeon VM, AVX-512, 256 rows, 1 thread, CPU time, min of
 * 60 x 20 calls, noisy): crossovers near K = 48 (N = 2), 80 (N = 4), 150 (N = 6, 8), 110 (N = 10),
 * 200-300 (N = 12, 14); ks won at every K for N = 16 (K = 256: 15.3 vs 28.4 us). */
#ifndef THIN_DOT_MIN_KN
#define THIN_DOT_MIN_KN 1024
#endif
/* Below THIN_SERIAL_MAX_FMAS multiply-adds one thread: the second pays from about 100k (pool
 * held, worker spinning), 1 << 18 leaves a margin. Measured (2026-12-01, 2-core Xeon VM, wall
 * time, min of 50 x 20 calls, other core idle; 1-thread / 2-thread time): dot Mx10x256 1.34 at
 * 164k multiply-adds, 1.44 at 246k, 1.67 at 328k, 1.83 at 655k; ks Mx256x10 (relu' gate) 0.99 at
 * 82k, 1.22 at 164k, 1.39 at 246k, 1.62 at 655k; tn 1.26 at 164k, 1.41 at 246k, 1.88 at 655k.
 * With the other core busy (another process) any region waits for the worker to be scheduled:
 * ~50 us instead of ~6 for 655k, as for every parallel kernel. */
#ifndef THIN_SERIAL_MAX_FMAS
#define THIN_SERIAL_MAX_FMAS (1 << 18)
#endif

/* The thin kernel for an M x N x K product (op(A) = A^T when transA), or -1 if it is not thin. */
static int thin_kind(int transA, int64_t M, int64_t N, int64_t K) {
    int kind = -1;
    if (N <= THIN_NMAX && N * K <= THIN_MAX_BK)
        kind = transA ? THIN_TN : N <= 14 && K * (18 - N) >= THIN_DOT_MIN_KN ? THIN_DOT : THIN_KS;
    else if (K <= THIN_NMAX && K * N <= THIN_KS_MAX_BK)
        kind = THIN_KS;
    if (kind == THIN_KS && transA && M * K > THIN_KS_MAX_AT) kind = -1;
    return kind;
}

/* The thin kernels for g, or -1 when the shape is not thin (or scratch cannot be had). */
static int s5_thin(const gemm_args *g) {
    const int64_t M = g->M, N = g->N, K = g->K;
    s5_thin_ctx x = {g, thin_kind(g->transA, M, N, K), 0, 0, 0, 0, NULL, 0, 4};
    if (x.kind < 0) return -1;
    x.blk = x.kind == THIN_TN ? 16 * THIN_TN_V(N) : x.kind == THIN_DOT ? THIN_DOT_R(N) : N <= 16 ? 8 : 4;
    int nt = gc_get_num_threads();
    if ((double)M * (double)N * (double)K < THIN_SERIAL_MAX_FMAS) nt = 1;
    nt = (int)MAX(1, MIN((int64_t)nt, (M + x.blk - 1) / x.blk));
    /* dot wants op(B) as N rows of K, tn and ks as K rows of N; ks wants op(A) as rows of K */
    const int b_nk = x.kind == THIN_DOT;
    x.tb = b_nk != g->transB;
    x.ta = x.kind == THIN_KS && g->transA;
    x.ldbt = b_nk ? round_up(K, 16) : round_up(N, 16);
    x.bfloats = x.tb ? (size_t)(x.ldbt * (b_nk ? N : K)) : 0;
    const int64_t rows_max = ((M + x.blk - 1) / x.blk + nt - 1) / nt * x.blk;
    x.stride = (size_t)round_up((int64_t)x.bfloats + (x.ta ? rows_max * K : 0), 16); /* whole cache lines */
    if (x.stride) {
        x.buf = (float *)scratch_alloc(x.stride * (size_t)nt * sizeof(float));
        if (!x.buf) return -1;
    }
    if (nt == 1) s5_thin_range(&x, 0, 0, M);
    else gc_parallel(nt, s5_thin_thread, &x);
    free(x.buf);
    return 0;
}

/* Blocking for this machine's caches (Sapphire Rapids class: L1d 48 KB, L2 2 MB per core):
 * the B micro-panel (KC x NR) stays in L1 while MR-row A panels stream from L2; the A block
 * (MC x KC) sits in L2. Swept (one thread, CPU time, 256^2..2048^2 and the W-mlp shapes): KC 192
 * and 384, MC 168 and 672, NC 1024 were all within noise of these or slower. */
#ifndef S5_MC
#define S5_MC 336
#endif
#ifndef S5_KC
#define S5_KC 256
#endif
#ifndef S5_NC
#define S5_NC 4096
#endif
#ifndef D5_MC
#define D5_MC 168
#endif
#ifndef D5_KC
#define D5_KC 256
#endif
#ifndef D5_NC
#define D5_NC 4096
#endif
GEN_COLSUM(s5_colsum, float, S5_NR, AVX512)
GEN_COLSUM(d5_colsum, double, D5_NR, AVX512)
static const gemm_impl S_AVX512 = {sizeof(float), s_direct_fma, S5_MR, S5_NR, S5_MC, S5_KC, S5_NC,
                                   s5_pack_a, s5_pack_b, s5_kernel, s5_kernel_strided, s5_colsum, s5_thin,
                                   s5_kernel_short, 8};
static const gemm_impl D_AVX512 = {sizeof(double), d_direct_fma, D5_MR, D5_NR, D5_MC, D5_KC, D5_NC,
                                   d5_pack_a, d5_pack_b, d5_kernel, d5_kernel_strided, d5_colsum};
#endif /* GC_X86 */

static const gemm_impl S_SCALAR = {sizeof(float), s_direct, SC_MR, SC_NR, 128, 256, 4096,
                                   s_pack_a_sc, s_pack_b_sc, s_kernel_sc, NULL, s_colsum_packed};
static const gemm_impl D_SCALAR = {sizeof(double), d_direct, SC_MR, SC_NR, 64, 256, 4096,
                                   d_pack_a_sc, d_pack_b_sc, d_kernel_sc, NULL, d_colsum_packed};

/* ------------------------------------------------------------------------------------------ */
/* Blocking driver                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const gemm_impl *im;
    const gemm_args *g;
    int nt;
    int split_rows;     /* 1: threads own disjoint row ranges (IC loop); 0: disjoint JR ranges */
    int direct_a;       /* kernels read A in place (few columns: packing A would not pay off) */
    int64_t kc_max, mc_max; /* K and M block sizes of this call (<= KC, MC) */
    char *bpack;        /* rows split: kc_max x round_up(nc, NR), shared; columns: per-thread regions */
    int64_t nc_panels;  /* B panels in a full NC block */
    colsum_fn colsum;   /* im->colsum or the portable one */
    char *apack;        /* per thread: mc_max x kc_max */
    size_t apack_stride;
} driver_ctx;

#define AT(p, elems, es) ((const char *)(p) + (size_t)(elems) * (es))

/* Make rows [ic, ic+mc) x k [pc, pc+kc) of A available to the kernels: packed into apack, or in
 * direct mode only the trailing partial MR panel (the kernels read full panels in place). */
static void prepare_a(const driver_ctx *x, char *apack, int64_t ic, int64_t mc, int64_t pc,
                      int64_t kc) {
    const gemm_impl *im = x->im;
    const gemm_args *g = x->g;
    if (!x->direct_a) {
        im->pack_a(g->A, g->lda, g->transA, ic, pc, mc, kc, apack);
    } else if (mc % im->mr) {
        const int64_t full = mc - mc % im->mr;
        im->pack_a(g->A, g->lda, g->transA, ic + full, pc, mc - full, kc, apack);
    }
}

/* Where thread tid's panels jp0.. of the current B block start. Splitting rows, all threads read
 * every panel of one packed block: panel jp sits at jp * NR * kc. Splitting columns, each thread
 * packs and reads only its own panels (at most ceil(nc_panels / nt) of them), in a region of its
 * own that does not move with the K block (a shorter last one) or the NC block (a narrower last
 * one splits its panels differently: a region placed by jp0 would overlap the one a slower
 * neighbour still reads in the previous block). So the threads never wait for each other. */
static char *bpack_of(const driver_ctx *x, int tid, int64_t jp0, int64_t kc) {
    const int64_t at = x->split_rows ? jp0 * kc : tid * ((x->nc_panels + x->nt - 1) / x->nt) * x->kc_max;
    return x->bpack + (size_t)(at * x->im->nr) * x->im->esize;
}

/* The part of B that this thread packs next (its panels of the next K or NC block), fetched into
 * L2 a slice per C tile while it computes with the current block, so that the next pack reads from
 * L2. In the W-mlp step the weights come from L3 or memory: the step streams several MB through
 * each core's 1 MB L2 between two uses of a weight matrix, and pack_b spent 25-35 us per call of
 * the middle layer's 256 x 256 x 512 product packing half of W2 (0.25 MB) where the same call
 * alone, with W2 in L2, spent 7-10 us (per-thread timers, 2-core Zen 4 VM, 2026-12-03). The part
 * is `strips` runs of `bytes` bytes, `stride` bytes apart: rows of B, or its columns when B is
 * transposed. */
typedef struct {
    const char *base;
    int64_t strips, bytes, stride;
    int64_t strip, off; /* the next line to fetch */
    int64_t per_tile;   /* lines per C tile */
} next_b;
/* At most a quarter of a 1 MB L2 (Zen 4) is fetched ahead, the first part the pack reads: a whole
 * wide block (256 x 4096 x 1024: 2 MB per thread) would evict the block being computed with. */
#ifndef NEXT_B_MAX_BYTES
#define NEXT_B_MAX_BYTES (256 << 10)
#endif

static void next_b_plan(next_b *f, const driver_ctx *x, int tid, int64_t jc, int64_t pc, int64_t kc,
                        int64_t tiles) {
    const gemm_impl *im = x->im;
    const gemm_args *g = x->g;
    const size_t es = im->esize;
    *f = (next_b){NULL, 0, 0, 0, 0, 0, 0}; /* nothing to fetch, unless set below */
    int64_t pn = pc + kc, jn = jc; /* the next block: the next K block, else the next NC block */
    if (pn >= g->K) {
        pn = 0;
        jn = jc + im->nc;
    }
    if (jn >= g->N || tiles <= 0) return;
    const int64_t nc = MIN(im->nc, g->N - jn), npanels = (nc + im->nr - 1) / im->nr;
    const int64_t jp0 = npanels * tid / x->nt, jp1 = npanels * (tid + 1) / x->nt;
    const int64_t kn = MIN(x->kc_max, g->K - pn), c0 = jn + jp0 * im->nr, cols = MIN(nc, jp1 * im->nr) - jp0 * im->nr;
    if (cols <= 0) return;
    f->stride = g->ldb * (int64_t)es;
    if (g->transB) { /* N x K: each column of op(B) is a run of kn elements */
        f->base = AT(g->B, c0 * g->ldb + pn, es);
        f->strips = cols;
        f->bytes = kn * (int64_t)es;
    } else {
        f->base = AT(g->B, pn * g->ldb + c0, es);
        f->strips = kn;
        f->bytes = cols * (int64_t)es;
    }
    /* Only the first NEXT_B_MAX_BYTES (in pack order): a larger block would evict the current one */
    f->strips = MIN(f->strips, MAX(1, NEXT_B_MAX_BYTES / (f->bytes + 64)));
    const int64_t lines = f->strips * ((f->bytes + 63) / 64 + 1);
    f->per_tile = (lines + tiles - 1) / tiles;
}

static inline void next_b_fetch(next_b *f) {
    for (int64_t i = 0; i < f->per_tile && f->strip < f->strips; i++) {
        const char *run = f->base + f->strip * f->stride;
        const char *line = (const char *)((uintptr_t)run & ~(uintptr_t)63) + f->off;
        __builtin_prefetch(line, 0, 2); /* prefetcht1: into L2, not L1, which the kernel is using */
        f->off += 64;
        if (line + 64 >= run + f->bytes) {
            f->off = 0;
            f->strip++;
        }
    }
}

/* C tiles for rows [ic, ic+mc) x panels [jp0, jp1) of the current B block; panel jp0 is packed
 * at bbase, the others follow it NR * kc elements apart. */
static void macro_kernel(const driver_ctx *x, const char *apack, const char *bbase, int64_t ic, int64_t mc, int64_t jc,
                         int64_t nc, int64_t jp0, int64_t jp1, int64_t pc, int64_t kc,
                         const epi_t *e, next_b *next) {
    const gemm_impl *im = x->im;
    const gemm_args *g = x->g;
    const size_t es = im->esize;
    /* In-place A: element (i, k) at A[i*rsa + k*csa]. */
    const int64_t rsa = g->transA ? 1 : g->lda, csa = g->transA ? g->lda : 1;
    for (int64_t jp = jp0; jp < jp1; jp++) {
        const int64_t jr = jp * im->nr, n = MIN(im->nr, nc - jr);
        const char *bpanel = bbase + (size_t)((jp - jp0) * im->nr * kc) * es;
        const void *bias = g->bias ? AT(g->bias, jc + jr, es) : NULL;
        for (int64_t ir = 0; ir < mc; ir += im->mr) {
            const int64_t m = MIN(im->mr, mc - ir);
            char *c = (char *)g->C + (size_t)((ic + ir) * g->ldc + jc + jr) * es;
            /* addend / gate move with the tile (only the last K block reads them) */
            epi_t et;
            const epi_t *te = e;
            if (e->addend || e->gate) {
                et = epi_at(e, ic + ir, jc + jr, es);
                te = &et;
            }
            if (x->direct_a && m == im->mr)
                im->kernel_strided(kc, AT(g->A, (ic + ir) * rsa + pc * csa, es), rsa, csa, bpanel, c,
                                   g->ldc, m, n, te, bias);
            else
                (m <= im->mr_short ? im->kernel_short : im->kernel)(
                    kc, x->direct_a ? apack : apack + (size_t)(ir * kc) * es, 0, 0, bpanel, c, g->ldc, m, n, te,
                    bias);
            next_b_fetch(next);
        }
    }
}

/* Body run by every thread (tid of nt) of our parallel region. With nt == 1 it does not call
 * gc_barrier: the GEMM may run serially inside another region (a kernel calling it from a pool
 * thread), and although gc_barrier is a no-op there, skipping it keeps the serial path free of
 * any synchronisation. */
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
        for (int64_t pc = 0; pc < g->K; pc += x->kc_max) {
            const int64_t kc = MIN(x->kc_max, g->K - pc);
            const epi_t e = epi_for(g, pc == 0, pc + kc == g->K);
            if (jp1 > jp0) {
                const int64_t cols = MIN(nc, jp1 * im->nr) - jp0 * im->nr;
                char *mine = bpack_of(x, tid, jp0, kc);
                im->pack_b(g->B, g->ldb, g->transB, pc, jc + jp0 * im->nr, kc, cols, mine);
                /* the same columns every K block: no other thread touches these sums */
                if (g->colsum)
                    x->colsum(mine, kc, im->nr, cols, (char *)g->colsum + (size_t)(jc + jp0 * im->nr) * es,
                              pc == 0);
            }
            next_b next;
            if (x->split_rows) {
                next_b_plan(&next, x, tid, jc, pc, kc, (r1 - r0 + im->mr - 1) / im->mr * npanels);
                if (nt > 1) gc_barrier(); /* B block packed by everyone */
                for (int64_t ic = r0; ic < r1; ic += x->mc_max) {
                    const int64_t mc = MIN(x->mc_max, r1 - ic);
                    prepare_a(x, apack, ic, mc, pc, kc);
                    macro_kernel(x, apack, x->bpack, ic, mc, jc, nc, 0, npanels, pc, kc, &e, &next);
                }
                if (nt > 1) gc_barrier(); /* B is repacked by all threads next iteration */
            } else {
                if (jp1 > jp0) {
                    next_b_plan(&next, x, tid, jc, pc, kc, (g->M + im->mr - 1) / im->mr * (jp1 - jp0));
                    for (int64_t ic = 0; ic < g->M; ic += x->mc_max) {
                        const int64_t mc = MIN(x->mc_max, g->M - ic);
                        prepare_a(x, apack, ic, mc, pc, kc);
                        macro_kernel(x, apack, bpack_of(x, tid, jp0, kc), ic, mc, jc, nc, jp0, jp1, pc, kc, &e,
                                     &next);
                    }
                }
            }
        }
    }
}

/* One thread of the parallel GEMM. The pool may give fewer threads than asked (nested in another
 * region, another thread's region running, thread creation refused): the blocking still holds
 * (scratch was sized for nt threads), only the split changes. */
static void driver_thread(void *ctx, int tid, int team) {
    driver_ctx xt = *(const driver_ctx *)ctx;
    xt.nt = team;
    driver_body(&xt, tid);
}

/* Below DIRECT_MAX_FMAS multiply-adds the unpacked loop wins (packing costs about as much as
 * the product: packing already wins at 8x8x8); below SERIAL_MAX_FMAS waking a second thread
 * costs more than it saves. Measured with the pool (2026-12-01, 2-core Xeon VM, AVX-512, square
 * float32, median of single calls): 2 threads lose at 96^3 (0.82x) and win from 128^3 (1.36x,
 * 2.1M multiply-adds); 1 << 20 sits between. */
#ifndef DIRECT_MAX_FMAS
#define DIRECT_MAX_FMAS 512
#endif
#ifndef SERIAL_MAX_FMAS
#define SERIAL_MAX_FMAS (1 << 20)
#endif
/* The same for products that read A in place (direct_a: no packing of A, a few B panels): a
 * second thread pays from about 1 << 18 multiply-adds, as for the thin kernels. Measured
 * (2026-12-03, 2-core AMD EPYC Zen 4 VM, 2 threads against 1, median of interleaved processes;
 * AVX2: GRAPHC_SIMD=avx2): AVX2 64x10x256 0.90x and 96x16x128 0.88x (they stay serial),
 * 128x10x256 1.2x, 128x32x64 1.57x, 64x64x64 1.18x, 256x10x256 (W-mlp's logits) 1.47x;
 * AVX-512 128x32x64 1.2x, 64x64x64 1.33x, 128x64x64 1.49x. float32 only: float64 256x10x256 was
 * 0.9-1.3x faster with two threads back to back, but `graphc bench --suite gemm` timed it at 8.7
 * GFLOP/s instead of 30 (a worker once asleep can take ~100 us per call to wake on this VM). */
#ifndef DIRECT_A_SERIAL_MAX_FMAS
#define DIRECT_A_SERIAL_MAX_FMAS (1 << 18)
#endif
#ifndef KC_SLACK
#define KC_SLACK 8 /* a K block may be KC / 8 longer than KC */
#endif
#ifndef DIRECT_A_MAX_PANELS
#define DIRECT_A_MAX_PANELS 4
#endif
#ifndef DIRECT_A_THREAD_PANELS
#define DIRECT_A_THREAD_PANELS (g_cpu_intel ? 0 : 8)
#endif

/* Whether the kernels may read A in place. Not for A^T with long rows: there every k step of
 * the kernel would touch another page. Not when A's rows are a multiple of 4 KB apart: then the
 * 14 rows a kernel reads at once fall in the same L1 sets and evict each other (256 x 128 x 1024
 * float32 took 1.64x the packed time in place, 2 threads, 2-core Zen 4 VM, 2026-12-03). */
static int direct_a_ok(const gemm_impl *im, const gemm_args *g) {
    const size_t row_bytes = (size_t)g->lda * im->esize;
    return im->kernel_strided != NULL && (g->transA ? row_bytes <= 4096 : row_bytes % 4096 != 0);
}

/* gemm_args.colsum on the paths that do not pack B. */
static void colsum_unpacked(const gemm_impl *im, const gemm_args *g) {
    if (!g->colsum || g->N <= 0) return;
    const int64_t K = MAX(g->K, 0);
    if (im->esize == sizeof(float)) s_colsum_plain(g->transB, K, g->N, g->B, g->ldb, g->colsum);
    else d_colsum_plain(g->transB, K, g->N, g->B, g->ldb, g->colsum);
}

static void gemm_run(const gemm_impl *im, const gemm_args *g, void (*no_k)(const gemm_args *)) {
    if (g->M <= 0 || g->N <= 0 || g->K <= 0) {
        colsum_unpacked(im, g);
        if (g->M > 0 && g->N > 0) no_k(g);
        return;
    }
    const double fmas = (double)g->M * (double)g->N * (double)g->K;
    if (fmas < DIRECT_MAX_FMAS) {
        colsum_unpacked(im, g);
        im->direct(g);
        return;
    }
    if (im->thin && im->thin(g) == 0) { /* B was read in place, not packed */
        colsum_unpacked(im, g);
        return;
    }

    driver_ctx x;
    x.im = im;
    x.g = g;
    /* Each A panel is read once per B panel: with at most DIRECT_A_MAX_PANELS of them, packing
     * A (a full extra pass over it) costs more than the strided reads it saves. */
    const int direct_ok = direct_a_ok(im, g);
    x.direct_a = direct_ok && (g->N + im->nr - 1) / im->nr <= DIRECT_A_MAX_PANELS;
    int nt = gc_get_num_threads();
    if (fmas < (x.direct_a && im->esize == sizeof(float) ? DIRECT_A_SERIAL_MAX_FMAS : SERIAL_MAX_FMAS)) nt = 1;
    const int64_t mpanels = (g->M + im->mr - 1) / im->mr;
    const int64_t npanels = (MIN(g->N, im->nc) + im->nr - 1) / im->nr;
    /* Split rows (each thread packs its own A blocks, all share B) when every thread gets a
     * few row panels; otherwise split the B panels and let each thread pack the small A. Also
     * split the B panels when that shares the work out more evenly: the slowest thread sets the
     * time, and 256 rows are 19 panels of 14 (10 + 9) but 512 columns 16 panels of 32 (8 + 8).
     * On a tie too: then every product of a layer with N outputs (forward, input gradient and
     * weight update) gives each thread the same columns, so the weights, activations and
     * gradients a thread reads were mostly written by the same core (W-mlp's dW1, 784 x 512 x
     * 256, ties: the whole step took 1.5 % less time with it, 2-core Xeon VM, 2026-12-02; since
     * the middle layer's two backward GEMMs run side by side (exec.c), dW1 reads a gradient one
     * core wrote, and the choice no longer changes the step: 1.002x). */
    {
        const int64_t t = nt > 1 ? nt : 1;
        const int64_t by_rows = (mpanels + t - 1) / t * npanels, by_cols = mpanels * ((npanels + t - 1) / t);
        x.split_rows = (mpanels >= 4 * t || mpanels >= npanels) && !(npanels >= t && by_cols <= by_rows);
    }
    if (x.split_rows) nt = (int)MIN((int64_t)nt, mpanels);
    else nt = (int)MIN((int64_t)nt, npanels);
    if (nt < 1) nt = 1;
    x.nt = nt;
    /* Once the split is known: what counts is how often each thread reads an A panel, once per
     * B panel it computes. Up to DIRECT_A_THREAD_PANELS in place still beats packing, since
     * in a column split every thread would pack all of A. Measured (2026-12-03, 2-core Zen 4
     * VM, AVX-512, float32, ping-pong of interleaved processes, in place / packed): 8 panels per
     * thread: W-mlp's 256x256x512 0.98x, 512x256x256 (A^T) 0.92x, 784x512x256 (A^T) 0.98x,
     * 4096x256x512 0.95x, the whole W-mlp step 0.976x; 10: 640^3 0.97x; 16: 1000^3 1.01x,
     * 1536^3 1.04x; 128: 256x4096x512 1.06x. On the 2-core Xeon VM (Sapphire Rapids class, 48 KB
     * L1d, 2 MB L2; 2026-12-03, both orders of the ping-pong, their geometric mean, which cancels
     * the position bias of up to 7 %) it is the other way round: in place / packed 256x256x512
     * 1.00x, 512x256x256 (A^T) 0.96x, 784x512x256 (A^T) 1.05x, 4096x256x512 1.04x, the whole W-mlp
     * step 1.04x (limit 4: 1.01x that of limit 0), so there only DIRECT_A_MAX_PANELS applies.
     * Results are bitwise the same either way. */
    if (direct_ok && (x.split_rows ? npanels : (npanels + nt - 1) / nt) <= DIRECT_A_THREAD_PANELS) x.direct_a = 1;

    /* Even K blocks, each up to KC_SLACK longer than KC when that saves a block: every K block
     * is one more pass over C, so 784 runs as 3 x 264 rather than 4 x 196 (or 3 x 256 + a thin
     * 16). The W-mlp first layer (256 x 512 x 784) took 6 % less time with it (interleaved
     * processes, 2-core Xeon VM, 2026-12-02); the B micro-panel of 264 k steps still fits L1. */
    {
        const int64_t kc_long = im->kc + im->kc / KC_SLACK;
        const int64_t nkb = (g->K + kc_long - 1) / kc_long;
        x.kc_max = round_up((g->K + nkb - 1) / nkb, 4);
    }
    const int64_t rows_per_thread = x.split_rows ? (mpanels + nt - 1) / nt * im->mr : g->M;
    x.mc_max = MIN(im->mc, round_up(rows_per_thread, im->mr));
    /* Even MC blocks: e.g. 200 rows as 102 + 98 rather than 144 + 56. */
    {
        const int64_t nblk = (rows_per_thread + x.mc_max - 1) / x.mc_max;
        x.mc_max = round_up((rows_per_thread + nblk - 1) / nblk, im->mr);
    }
    const int64_t nc_max = round_up(MIN(im->nc, g->N), im->nr);
    const size_t es = im->esize;
    x.nc_panels = nc_max / im->nr;
    /* Split columns, a team of t <= nt threads uses t regions of ceil(nc_panels / t) panels:
     * at most nc_panels + nt - 1 of them (bpack_of). */
    const int64_t bpanels = x.split_rows ? x.nc_panels : x.nc_panels + nt - 1;
    const size_t bbytes = (size_t)(x.kc_max * bpanels * im->nr) * es;
    x.apack_stride = (size_t)round_up((int64_t)((size_t)(x.mc_max * x.kc_max) * es), GC_ALIGN);
    /* One allocation for all scratch: with glibc, a single block that is freed and requested
     * again at the next call is recycled from the heap, whereas two blocks of this size make
     * free() trim the heap every call, so each call would page-fault its scratch in afresh. */
    const size_t bspan = (size_t)round_up((int64_t)bbytes, GC_ALIGN);
    char *scratch = (char *)scratch_alloc(bspan + x.apack_stride * (size_t)nt);
    if (!scratch) { /* out of memory for scratch: still produce the right answer, slowly */
        colsum_unpacked(im, g);
        im->direct(g);
        return;
    }
    x.bpack = scratch;
    x.colsum = im->colsum ? im->colsum : im->esize == sizeof(float) ? s_colsum_packed : d_colsum_packed;
    x.apack = scratch + bspan;

    if (nt == 1) driver_body(&x, 0);
    else gc_parallel(nt, driver_thread, &x);
    free(scratch);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* The micro-kernels of the selected SIMD level, for every entry point. */
#define IMPL_PICKER(P, T)                                                                          \
    static const gemm_impl *P##_impl(void) {                                                       \
        IMPL_X86(T)                                                                                \
        return &T##_SCALAR;                                                                        \
    }
#ifdef GC_X86
#define IMPL_X86(T)                                                                                \
    const int level = gc_simd_level();                                                             \
    if (level >= GC_SIMD_AVX512) return &T##_AVX512;                                               \
    if (level >= GC_SIMD_AVX2) return &T##_AVX2;
#else
#define IMPL_X86(T)
#endif
IMPL_PICKER(s, S)
IMPL_PICKER(d, D)
#undef IMPL_PICKER
#undef IMPL_X86

int gc_sgemm_is_thin(int transA, int64_t M, int64_t N, int64_t K) {
    if (M < 1 || N < 1 || K < 1 || (double)M * (double)N * (double)K < DIRECT_MAX_FMAS) return 0;
#ifdef GC_X86
    return s_impl()->thin != NULL && thin_kind(transA, M, N, K) >= 0;
#else
    (void)transA;
    return 0;
#endif
}

void gc_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const float *A, int64_t lda, const float *B, int64_t ldb,
              float beta, float *C, int64_t ldc,
              const float *bias, int act, float act_param) {
    const gemm_args g = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, A, B, C, bias,
                         beta, act_param, act, 1.0, NULL, NULL, 0, 0, 0.0};
    gemm_run(s_impl(), &g, s_no_k);
}

void gc_dgemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
              const double *A, int64_t lda, const double *B, int64_t ldb,
              double beta, double *C, int64_t ldc,
              const double *bias, int act, double act_param) {
    const gemm_args g = {transA != 0, transB != 0, M, N, K, lda, ldb, ldc, A, B, C, bias,
                         beta, act_param, act, 1.0, NULL, NULL, 0, 0, 0.0};
    gemm_run(d_impl(), &g, d_no_k);
}

/* The descriptor as gemm_args, or -1 (GC_K_EINVAL) when it is malformed. The gate factor where
 * gate <= 0 is the derivative of the activation there: 0 for relu, the slope for leaky_relu. */
static int desc_args(const gc_gemm_desc *d, gemm_args *g) {
    if (!d || d->m < 0 || d->n < 0 || d->k < 0) return -1;
    if (d->act < 0 || d->act >= GC_ACT_END) return -1;
    const int64_t M = d->m, N = d->n, K = d->k;
    const int64_t acols = d->trans_a ? M : K, bcols = d->trans_b ? K : N;
    if (d->lda < (acols > 1 ? acols : 1) || d->ldb < (bcols > 1 ? bcols : 1) || d->ldc < (N > 1 ? N : 1))
        return -1;
    if (M > 0 && N > 0 && !d->c) return -1;
    if (M > 0 && N > 0 && K > 0 && (!d->a || !d->b)) return -1;
    double gp = 0.0;
    if (d->gate) {
        if (d->ldg < (N > 1 ? N : 1)) return -1;
        if (d->gate_act == GC_ACT_LEAKY_RELU) gp = d->gate_param;
        else if (d->gate_act != GC_ACT_RELU) return -1;
    }
    if (d->addend && d->ldx < (N > 1 ? N : 1)) return -1;
    if (d->colsum_b && N > 0 && K > 0 && !d->b) return -1;
    const gemm_args a = {d->trans_a != 0, d->trans_b != 0, M, N, K, d->lda, d->ldb, d->ldc, d->a, d->b,
                         d->c, d->bias, d->beta, d->act_param, d->act, d->alpha, d->addend, d->gate,
                         d->ldx, d->ldg, gp, d->colsum_b};
    *g = a;
    return 0;
}

int gc_sgemm_ex(const gc_gemm_desc *d) {
    gemm_args g;
    if (desc_args(d, &g)) return -1;
    /* float32 parameters, as gc_sgemm takes them: the epilogue computes in float */
    g.alpha = (float)g.alpha;
    g.beta = (float)g.beta;
    g.act_param = (float)g.act_param;
    g.gate_param = (float)g.gate_param;
    gemm_run(s_impl(), &g, s_no_k);
    return 0;
}

int gc_dgemm_ex(const gc_gemm_desc *d) {
    gemm_args g;
    if (desc_args(d, &g)) return -1;
    gemm_run(d_impl(), &g, d_no_k);
    return 0;
}

void gc_gemm_colsum(int f64, int trans_b, int64_t K, int64_t N, const void *B, int64_t ldb, void *out) {
    if (N <= 0) return;
    if (f64) d_colsum_plain(trans_b != 0, K > 0 ? K : 0, N, B, ldb, out);
    else s_colsum_plain(trans_b != 0, K > 0 ? K : 0, N, B, ldb, out);
}
