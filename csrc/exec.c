/* The plan interpreter (API and instruction format in exec.h).
 *
 * One call runs a whole lowered Plan, so a training step costs one Python -> C transition
 * however many ops it has. The interpreter itself is a loop over instructions: decode the
 * operand references, call the kernel, stop at the first error. Everything per call (arena,
 * pointer table) comes from the caller; nothing here is static, so concurrent calls are safe.
 */
#include <stdint.h>
#include <string.h>

#include "exec.h"
#include "fused.h"
#include "gemm.h"
#include "kernels.h"
#include "threads.h"
#include "vmath.inc" /* GC_VM_AVX2, for small.inc */

enum { HEADER_WORDS = 4, ARENA_ALIGN = 64, MAX_NDIM = 8 };

typedef struct {
    uint8_t *arena;
    const uint8_t *pool;
    void *const *ext;
    const double *fconst;
    int64_t nfconst;
    int64_t failed_step; /* set by GC_OP_SIDE_BY_SIDE: the step of the half that failed */
} exec_ctx;

/* The address an operand reference names, or NULL for -1 / an unknown kind. */
static void *ref_ptr(const exec_ctx *c, int64_t ref) {
    if (ref < 0) return NULL;
    const int64_t v = ref >> 2;
    switch (ref & 3) {
    case GC_REF_ARENA: return c->arena + v;
    case GC_REF_POOL: return (void *)(c->pool + v);
    case GC_REF_EXT: return c->ext[v];
    default: return NULL;
    }
}

static int64_t pack_error(int64_t step, int status) {
    return (int64_t)(((uint64_t)(step + 1) << 32) | (uint32_t)status);
}

static size_t dtype_size(int64_t dt) {
    switch (dt) {
    case GC_DT_F32: case GC_DT_I32: return 4;
    case GC_DT_F64: case GC_DT_I64: return 8;
    case GC_DT_BOOL: return 1;
    default: return 0;
    }
}

/* ---- dtype conversion: every pair among f32/f64/i32/i64/bool except float -> int, whose
 * out-of-range and NaN cases are undefined in C (the lowering leaves those to NumPy). ---- */
#define CAST_LOOP(S, D, EXPR)                                        \
    do {                                                             \
        const S *xs = (const S *)x;                                  \
        D *yd = (D *)y;                                              \
        for (int64_t i = 0; i < n; i++) {                            \
            const S v = xs[i];                                       \
            yd[i] = (EXPR);                                          \
        }                                                            \
    } while (0)
#define CAST_FROM(S)                                                                 \
    switch (dst) {                                                                   \
    case GC_DT_F32: CAST_LOOP(S, float, (float)v); return GC_K_OK;                   \
    case GC_DT_F64: CAST_LOOP(S, double, (double)v); return GC_K_OK;                 \
    case GC_DT_BOOL: CAST_LOOP(S, uint8_t, (uint8_t)(v != 0)); return GC_K_OK;       \
    case GC_DT_I32: if (!src_float) { CAST_LOOP(S, int32_t, (int32_t)v); return GC_K_OK; } break; \
    case GC_DT_I64: if (!src_float) { CAST_LOOP(S, int64_t, (int64_t)v); return GC_K_OK; } break; \
    default: break;                                                                  \
    }                                                                                \
    return GC_E_BADDTYPE;

static int cast_any(int64_t src, int64_t dst, int64_t n, const void *x, void *y) {
    const int src_float = src == GC_DT_F32 || src == GC_DT_F64;
    switch (src) {
    case GC_DT_F32: { CAST_FROM(float) }
    case GC_DT_F64: { CAST_FROM(double) }
    case GC_DT_I32: { CAST_FROM(int32_t) }
    case GC_DT_I64: { CAST_FROM(int64_t) }
    case GC_DT_BOOL: { CAST_FROM(uint8_t) }
    default: return GC_E_BADDTYPE;
    }
}
#undef CAST_FROM
#undef CAST_LOOP

/* ---- strided gather into a contiguous y: transpose, broadcast (stride 0), plain copies ----
 * Element-size generic (bytes are moved, never interpreted), so it serves every dtype. Each row
 * of the output is one loop specialised for the element size, through integer types that may
 * alias anything and sit at any address (feeds can be misaligned): a load and a store per element,
 * vectorised for broadcasts, where a memcpy of a run-time size would be a library call per
 * element (which made 1-byte copies several times slower than NumPy's). */
typedef uint16_t any_u16 __attribute__((may_alias, aligned(1)));
typedef uint32_t any_u32 __attribute__((may_alias, aligned(1)));
typedef uint64_t any_u64 __attribute__((may_alias, aligned(1)));
#define COPY_ROW(TY)                                                                     \
    do {                                                                                 \
        const TY *s = (const TY *)(const void *)src;                                     \
        TY *d = (TY *)(void *)y;                                                         \
        const int64_t st = s_in / (int64_t)sizeof(TY);                                   \
        if (st == 0) { /* broadcast along the row */                                     \
            const TY v = s[0];                                                           \
            for (int64_t i = 0; i < inner; i++) d[i] = v;                                \
        } else {                                                                         \
            for (int64_t i = 0; i < inner; i++) d[i] = s[i * st];                        \
        }                                                                                \
    } while (0)

static void copy_strided(int64_t esize, int ndim, const int64_t *shape, const int64_t *xstr,
                         const uint8_t *x, uint8_t *y) {
    int64_t total = 1;
    for (int d = 0; d < ndim; d++) total *= shape[d];
    if (total == 0) return;
    if (ndim == 0) {
        memcpy(y, x, (size_t)esize);
        return;
    }
    const int64_t inner = shape[ndim - 1], s_in = xstr[ndim - 1] * esize, rows = total / inner;
    int64_t idx[MAX_NDIM] = {0};
    int64_t off = 0; /* byte offset of the current row's first element in x */
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = x + off;
        if (s_in == esize) {
            memcpy(y, src, (size_t)(inner * esize));
        } else {
            switch (esize) {
            case 1: COPY_ROW(uint8_t); break;
            case 2: COPY_ROW(any_u16); break;
            case 4: COPY_ROW(any_u32); break;
            case 8: COPY_ROW(any_u64); break;
            default:
                for (int64_t i = 0; i < inner; i++) memcpy(y + esize * i, src + i * s_in, (size_t)esize);
            }
        }
        y += inner * esize;
        /* odometer over the outer dims */
        for (int d = ndim - 2; d >= 0; d--) {
            off += xstr[d] * esize;
            if (++idx[d] < shape[d]) break;
            off -= idx[d] * xstr[d] * esize;
            idx[d] = 0;
        }
    }
}
#undef COPY_ROW

static int fill_any(int64_t dt, int64_t n, void *y, double v) {
    switch (dt) {
    case GC_DT_F32: for (int64_t i = 0; i < n; i++) ((float *)y)[i] = (float)v; return GC_K_OK;
    case GC_DT_F64: for (int64_t i = 0; i < n; i++) ((double *)y)[i] = v; return GC_K_OK;
    case GC_DT_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)y)[i] = (int32_t)v; return GC_K_OK;
    case GC_DT_I64: for (int64_t i = 0; i < n; i++) ((int64_t *)y)[i] = (int64_t)v; return GC_K_OK;
    case GC_DT_BOOL: for (int64_t i = 0; i < n; i++) ((uint8_t *)y)[i] = v != 0; return GC_K_OK;
    default: return GC_E_BADDTYPE;
    }
}

/* ---- small products: matmul with a short side, without the packed GEMM ----
 * gc_sgemm/gc_dgemm pack their operands into panels, which for a matrix-vector product or a
 * product with a side of a few elements costs more than the product itself (a 569x30 @ 30
 * product: about 9 us through the GEMM, 1-2 us here). The AVX2+FMA loops are in small.inc;
 * the portable fallback below covers the matrix-vector shapes on contiguous vectors:
 *   rows_dot:  y[r] = sum_k M[r*ld + k] * v[k]      (a row of M against v)
 *   axpy_rows: y[c] = sum_k v[k] * M[k*ld + c]      (v-weighted sum of the rows of M)
 * Both are picked by gc_simd_level() (gemm.h). Sums are reordered (vector lanes); the portable
 * float32 dot products are accumulated in double, the AVX2 ones in 8-lane float vectors (like
 * the packed SGEMM's tiles). */
static void rows_dot_f32_base(int64_t R, int64_t K, const float *M, int64_t ld, const float *v, float *y) {
    for (int64_t r = 0; r < R; r++) {
        const float *row = M + r * ld;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; k++) s += (double)row[k] * (double)v[k];
        y[r] = (float)s;
    }
}
static void rows_dot_f64_base(int64_t R, int64_t K, const double *M, int64_t ld, const double *v, double *y) {
    for (int64_t r = 0; r < R; r++) {
        const double *row = M + r * ld;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; k++) s += row[k] * v[k];
        y[r] = s;
    }
}
static void axpy_rows_f32_base(int64_t K, int64_t C, const float *M, int64_t ld, const float *v, float *y) {
    for (int64_t c = 0; c < C; c++) y[c] = 0;
    for (int64_t k = 0; k < K; k++) {
        const float *row = M + k * ld, w = v[k];
#pragma omp simd
        for (int64_t c = 0; c < C; c++) y[c] += w * row[c];
    }
}
static void axpy_rows_f64_base(int64_t K, int64_t C, const double *M, int64_t ld, const double *v, double *y) {
    for (int64_t c = 0; c < C; c++) y[c] = 0;
    for (int64_t k = 0; k < K; k++) {
        const double *row = M + k * ld, w = v[k];
#pragma omp simd
        for (int64_t c = 0; c < C; c++) y[c] += w * row[c];
    }
}
#include "small.inc"
#ifdef GC_VM_AVX2
#define SMALL_PICK(name, f64) (gc_simd_level() ? sm_##name##_##f64##_avx2 : name##_##f64##_base)
#else
#define SMALL_PICK(name, f64) name##_##f64##_base
#endif

/* Matrix-vector products up to this many multiply-adds take the single-threaded vector loops;
 * larger ones the (multi-threaded) GEMM, whose packing cost is then small next to the product. */
#define GEMV_MAX_FMAS (1 << 20)
/* Products with a side (M, N or K) of at most SMALL_SIDE and at most SMALL_MAX_FMAS multiply-adds
 * run unpacked on the calling thread. PROVISIONAL: on a loaded 2-core machine (load ~7), one
 * thread, min of 60 batches, the unpacked loops were on par with the packed GEMM for 32x10x32
 * f32 (1.3 vs 1.2 us incl. the cffi call) up to 256x16x64, and faster at 256x10x256 f32 (26 vs
 * 31 us) and 256x256x16 (49 vs 52 us f32, 121 vs 142 us f64); slower at 2048x10x64 f32
 * (86 vs 74 us). Re-measure on a quiet machine before trusting this bound. */
#define SMALL_SIDE 16
#define SMALL_MAX_FMAS (1 << 17)

#define PICK_RUN(name, ...) \
    (f64 ? SMALL_PICK(name, f64)(__VA_ARGS__) : SMALL_PICK(name, f32)(__VA_ARGS__))

/* C = op(A) @ op(B) when M == 1 or N == 1 with contiguous vectors, no bias and no activation;
 * 0 when it applied. */
static int try_gemv(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                    const void *B, int64_t ldb, void *C, int64_t ldc, const void *bias, int act) {
    if (bias || act != GC_ACT_IDENTITY || (M != 1 && N != 1) || M * N * K > GEMV_MAX_FMAS || K < 1) return -1;
    if (N == 1 && (M == 1 || ldc == 1) && (tb || ldb == 1 || K == 1)) {
        /* op(B) is a contiguous K-vector (K x 1 with ldb 1, or 1 x K), so is the column C */
        if (!ta) PICK_RUN(rows_dot, M, K, A, lda, B, C); /* A is M x K: one dot product per row */
        else PICK_RUN(axpy_rows, K, M, A, lda, B, C);    /* A is K x M: its rows weighted by B */
        return 0;
    }
    if (M == 1 && (!ta || lda == 1 || K == 1)) {
        /* op(A) is a contiguous K-vector; B is K x N, or N x K when transposed */
        if (!tb) PICK_RUN(axpy_rows, K, N, B, ldb, A, C);
        else PICK_RUN(rows_dot, N, K, B, ldb, A, C);
        return 0;
    }
    return -1;
}

/* try_gemv with a bias: C = op(A) @ op(B) + bias (bias[j] added to column j, after the product,
 * as the GEMM epilogue adds it), identity activation only; 0 when it applied. This is the dense
 * node of x @ w + b with a scalar b (N == 1), which the unpacked small-GEMM loops would run one
 * masked column at a time (about 14 us for 569x30 @ 30 instead of 2). */
static int try_gemv_bias(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                         const void *B, int64_t ldb, void *C, int64_t ldc, const void *bias, int act) {
    if (!bias || act != GC_ACT_IDENTITY) return -1;
    if (try_gemv(f64, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, NULL, act) != 0) return -1;
    /* try_gemv applied: C is contiguous (a column when N == 1, a row when M == 1) */
    const int64_t n = M * N;
    if (f64) {
        double *restrict c = C;
        const double *b = bias;
        if (N == 1) {
            const double b0 = b[0];
            for (int64_t i = 0; i < n; i++) c[i] += b0;
        } else {
            for (int64_t i = 0; i < n; i++) c[i] += b[i];
        }
    } else {
        float *restrict c = C;
        const float *b = bias;
        if (N == 1) {
            const float b0 = b[0];
            for (int64_t i = 0; i < n; i++) c[i] += b0;
        } else {
            for (int64_t i = 0; i < n; i++) c[i] += b[i];
        }
    }
    return 0;
}

/* C = act(op(A) @ op(B) + bias) unpacked when a side is short (see SMALL_SIDE); identity and relu
 * only (the other activations' accuracy contract is the GEMM epilogue's). 0 when it applied. */
static int try_small_gemm(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                          const void *B, int64_t ldb, void *C, int64_t ldc, const void *bias, int act) {
#ifdef GC_VM_AVX2
    if (!gc_simd_level() || M < 1 || N < 1 || K < 1 || (act != GC_ACT_IDENTITY && act != GC_ACT_RELU)) return -1;
    if ((M > SMALL_SIDE && N > SMALL_SIDE && K > SMALL_SIDE) || M * N * K > SMALL_MAX_FMAS) return -1;
    /* gc_sgemm's thin kernels (AVX-512, N or K <= 16) are faster than these loops: measured
     * (2026-12-01, 2-core Xeon VM, 1 thread, CPU time, noisy machine) 32x10x256 5.0 vs 11.0 us,
     * 64x10x128 4.7 vs 9.7, 256x16x32 7.8 vs 10.1, 512x16x16 11.4 vs 13.6, 32x64x16 NT 3.2 vs
     * 4.3, 128x8x128 NT 6.1 vs 19.6, 10x10x1000 5.6 vs 10.2, 32x10x32 1.7 vs 1.8 (gc_sgemm first). */
    if (!f64 && gc_sgemm_is_thin(ta, M, N, K)) return -1;
    if (tb && K * N > SM_TBUF) return -1;
    const int64_t sai = ta ? 1 : lda, sak = ta ? lda : 1;
    const int relu = act == GC_ACT_RELU;
    if (f64) {
        const double *Bk = B;
        int64_t ldk = ldb;
        double bt[tb ? K * N : 1]; /* op(B) as K x N rows (g @ W^T) */
        if (tb) {
            const double *b = B;
            for (int64_t k = 0; k < K; k++)
                for (int64_t j = 0; j < N; j++) bt[k * N + j] = b[j * ldb + k];
            Bk = bt, ldk = N;
        }
        sm_gemm_nn_f64_avx2(M, N, K, A, sai, sak, Bk, ldk, C, ldc, bias, relu);
    } else {
        const float *Bk = B;
        int64_t ldk = ldb;
        float bt[tb ? K * N : 1];
        if (tb) {
            const float *b = B;
            for (int64_t k = 0; k < K; k++)
                for (int64_t j = 0; j < N; j++) bt[k * N + j] = b[j * ldb + k];
            Bk = bt, ldk = N;
        }
        sm_gemm_nn_f32_avx2(M, N, K, A, sai, sak, Bk, ldk, C, ldc, bias, relu);
    }
    return 0;
#else
    (void)f64, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C,
        (void)ldc, (void)bias, (void)act;
    return -1;
#endif
}

void gc_exec_matmul(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                    const void *B, int64_t ldb, void *C, int64_t ldc, const void *bias, int act, double act_param) {
    if (try_gemv(f64, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, bias, act) == 0) return;
    if (try_small_gemm(f64, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, bias, act) == 0) return;
    if (f64) gc_dgemm(ta, tb, M, N, K, A, lda, B, ldb, 0.0, C, ldc, bias, act, act_param);
    else gc_sgemm(ta, tb, M, N, K, A, lda, B, ldb, 0.0f, C, ldc, bias, act, (float)act_param);
}

/* c[i] = (alpha * c[i] + x[i]) * (g[i] > 0 ? 1 : gp) over n contiguous elements, x and g optional:
 * gc_sgemm_ex's epilogue (same operations, same order) for the products try_gemv computed. */
#define GEMM_EX_EPILOGUE(SFX, T)                                                                \
    static void epilogue_##SFX(int64_t n, T *c, T alpha, const T *x, const T *g, T gp) {        \
        for (int64_t i = 0; i < n; i++) {                                                       \
            T s = c[i];                                                                         \
            if (alpha != 1) s *= alpha;                                                         \
            if (x) s += x[i];                                                                   \
            if (g) s *= g[i] > 0 ? (T)1 : gp;                                                   \
            c[i] = s;                                                                           \
        }                                                                                       \
    }
GEMM_EX_EPILOGUE(f32, float)
GEMM_EX_EPILOGUE(f64, double)
#undef GEMM_EX_EPILOGUE

/* Call the _f32 or _f64 twin of a kernel; void pointers convert implicitly, scalars by prototype. */
#define TWIN(fn, ...) (f64 ? fn##_f64(__VA_ARGS__) : fn##_f32(__VA_ARGS__))
/* Operand i of this instruction; a NULL pointer for a required operand means malformed code. */
#define PTR(i) ref_ptr(c, a[i])
#define NEED(k) if (nargs < (k)) return GC_E_BADCODE
#define REQUIRE(p) if (!(p)) return GC_E_BADCODE
#define FCONST(i) ((a[i] >= 0 && a[i] < c->nfconst) ? c->fconst[a[i]] : 0.0)

/* Runs one instruction: opcode op, dtype dt, operand words a[0..nargs). */
static int run_instr(exec_ctx *c, int64_t op, int64_t dt, const int64_t *a, int64_t nargs);

/* GC_OP_SIDE_BY_SIDE: thread t runs instruction t; a kernel's own parallel region nested in this
 * one runs on its thread alone. With one thread set (gc_set_num_threads) the two run one after the
 * other on the caller: the pair is lowered once per plan, the thread count is read per call. */
typedef struct {
    exec_ctx *c;
    const int64_t *instr[2];
    int status[2];
} side_by_side_ctx;

static void side_by_side_thread(void *p, int tid, int team) {
    side_by_side_ctx *x = (side_by_side_ctx *)p;
    for (int i = tid; i < 2; i += team) {
        const int64_t *w = x->instr[i];
        x->status[i] = run_instr(x->c, w[0], w[3], w + HEADER_WORDS, w[1] - HEADER_WORDS);
    }
}

static int run_instr(exec_ctx *c, int64_t op, int64_t dt, const int64_t *a, int64_t nargs) {
    if (op == GC_OP_SIDE_BY_SIDE) {
        /* a = two instructions; neither may be another pair (no recursion on malformed code) */
        if (nargs < 2 * HEADER_WORDS || a[1] < HEADER_WORDS || a[1] > nargs - HEADER_WORDS)
            return GC_E_BADCODE;
        const int64_t *b = a + a[1];
        if (b[1] != nargs - a[1] || a[0] == GC_OP_SIDE_BY_SIDE || b[0] == GC_OP_SIDE_BY_SIDE) return GC_E_BADCODE;
        side_by_side_ctx x = {c, {a, b}, {GC_K_OK, GC_K_OK}};
        gc_parallel(gc_get_num_threads() > 1 ? 2 : 1, side_by_side_thread, &x);
        for (int i = 0; i < 2; i++)
            if (x.status[i] != GC_K_OK) {
                c->failed_step = x.instr[i][2];
                return x.status[i];
            }
        return GC_K_OK;
    }
    const int f64 = dt == GC_DT_F64;
    if (op != GC_OP_CAST && op != GC_OP_COPY && op != GC_OP_FILL && dt != GC_DT_F32 && dt != GC_DT_F64)
        return GC_E_BADDTYPE;
    switch (op) {
    case GC_OP_GEMM: {
        NEED(14);
        void *A = PTR(8), *B = PTR(9), *C = PTR(10), *bias = PTR(11);
        REQUIRE(A && B && C);
        if (try_gemv_bias(f64, (int)a[0], (int)a[1], a[2], a[3], a[4], A, a[5], B, a[6], C, a[7], bias,
                          (int)a[12]) == 0)
            return GC_K_OK;
        gc_exec_matmul(f64, (int)a[0], (int)a[1], a[2], a[3], a[4], A, a[5], B, a[6], C, a[7], bias, (int)a[12],
                       FCONST(13));
        return GC_K_OK;
    }
    case GC_OP_GEMM_EX: {
        NEED(17);
        void *A = PTR(8), *B = PTR(9), *C = PTR(10);
        const void *X = PTR(11), *G = PTR(12);
        void *S = PTR(16); /* the column sums of op(B) (a bias gradient), or NULL */
        REQUIRE(A && B && C);
        const double alpha = FCONST(13), gp = FCONST(15);
        const int gate_act = (int)a[14];
        if (G && gate_act != GC_ACT_RELU && gate_act != GC_ACT_LEAKY_RELU) return GC_K_EINVAL;
        /* Vector-shaped products (the W-lr step's X^T g) keep the unpacked GEMV loops; the
         * epilogue is then one short pass over the M*N outputs, cheaper than packing. */
        if (try_gemv(f64, (int)a[0], (int)a[1], a[2], a[3], a[4], A, a[5], B, a[6], C, a[7], NULL, GC_ACT_IDENTITY) ==
            0) {
            const int64_t n = a[2] * a[3];
            if (f64) epilogue_f64(n, C, alpha, X, G, gate_act == GC_ACT_LEAKY_RELU ? gp : 0.0);
            else epilogue_f32(n, C, (float)alpha, X, G, gate_act == GC_ACT_LEAKY_RELU ? (float)gp : 0.0f);
            if (S) gc_gemm_colsum(f64, (int)a[1], a[4], a[3], B, a[6], S);
            return GC_K_OK;
        }
        const gc_gemm_desc d = {(int)a[0], (int)a[1], a[2], a[3], a[4], A, a[5], B, a[6], C, a[7], alpha, 0.0,
                                NULL, GC_ACT_IDENTITY, 0.0, X, a[3] > 1 ? a[3] : 1, G, a[3] > 1 ? a[3] : 1,
                                gate_act, gp, S};
        return (f64 ? gc_dgemm_ex(&d) : gc_sgemm_ex(&d)) == 0 ? GC_K_OK : GC_K_EINVAL;
    }
    case GC_OP_UNARY: {
        NEED(5);
        void *x = PTR(2), *y = PTR(3);
        REQUIRE(x && y);
        return TWIN(gc_unary, (int)a[0], a[1], x, y, FCONST(4));
    }
    case GC_OP_ACT_BWD: {
        NEED(6);
        void *y = PTR(2), *g = PTR(3), *dx = PTR(4);
        REQUIRE(y && g && dx);
        return TWIN(gc_act_backward, (int)a[0], a[1], y, g, dx, FCONST(5));
    }
    case GC_OP_BINARY: {
        NEED(5);
        const int64_t nd = a[1];
        if (nd < 0 || nd > MAX_NDIM) return GC_E_BADCODE;
        NEED(5 + 3 * nd);
        void *x = PTR(2), *y = PTR(3), *out = PTR(4);
        REQUIRE(x && y && out);
        return TWIN(gc_binary, (int)a[0], (int)nd, a + 5, x, a + 5 + nd, y, a + 5 + 2 * nd, out);
    }
    case GC_OP_REDUCE: {
        NEED(6);
        void *x = PTR(4), *y = PTR(5);
        REQUIRE(x && y);
        return TWIN(gc_reduce, (int)a[0], a[1], a[2], a[3], x, y);
    }
    case GC_OP_SOFTMAX: {
        NEED(5);
        void *x = PTR(2), *y = PTR(3);
        REQUIRE(x && y);
        return TWIN(gc_softmax, a[0], a[1], x, y, (int)a[4]);
    }
    case GC_OP_SOFTMAX_GRAD: {
        NEED(6);
        void *y = PTR(2), *g = PTR(3), *dx = PTR(4);
        REQUIRE(y && g && dx);
        return TWIN(gc_softmax_backward, a[0], a[1], y, g, dx, (int)a[5]);
    }
    case GC_OP_SOFTMAX_CROSS_ENTROPY: {
        NEED(5);
        void *logits = PTR(2), *labels = PTR(3), *loss = PTR(4);
        REQUIRE(logits && labels && loss);
        return TWIN(gc_softmax_ce_fwd, a[0], a[1], logits, labels, loss);
    }
    case GC_OP_SOFTMAX_CROSS_ENTROPY_GRAD: {
        NEED(6);
        void *logits = PTR(2), *labels = PTR(3), *g = PTR(4), *dl = PTR(5);
        REQUIRE(logits && labels && g && dl);
        /* the upstream gradient is a runtime scalar, read here rather than in Python */
        const double gv = f64 ? *(const double *)g : (double)*(const float *)g;
        return TWIN(gc_softmax_ce_bwd, a[0], a[1], logits, labels, gv, dl);
    }
    case GC_OP_SOFTMAX_CE_LOSS_AND_GRAD: {
        NEED(7);
        void *logits = PTR(2), *labels = PTR(3), *g = PTR(4), *loss = PTR(5), *dl = PTR(6);
        REQUIRE(logits && labels && g && loss && dl);
        const double gv = f64 ? *(const double *)g : (double)*(const float *)g;
        return TWIN(gc_softmax_ce_fwd_grad, a[0], a[1], logits, labels, gv, loss, dl);
    }
    case GC_OP_BINARY_CROSS_ENTROPY: {
        NEED(4);
        void *z = PTR(1), *t = PTR(2), *loss = PTR(3);
        REQUIRE(z && t && loss);
        return TWIN(gc_bce_logits_fwd, a[0], z, t, loss);
    }
    case GC_OP_BCE_LOGITS_GRAD: {
        NEED(5);
        void *z = PTR(1), *t = PTR(2), *scale = PTR(3), *dz = PTR(4);
        REQUIRE(z && t && scale && dz);
        /* the scale (upstream gradient / n) is a runtime scalar, read here rather than in Python */
        const double sv = f64 ? *(const double *)scale : (double)*(const float *)scale;
        return TWIN(gc_bce_logits_grad, a[0], z, t, sv, dz);
    }
    case GC_OP_BCE_LOSS_AND_GRAD: {
        NEED(6);
        void *z = PTR(1), *t = PTR(2), *scale = PTR(3), *loss = PTR(4), *dz = PTR(5);
        REQUIRE(z && t && scale && loss && dz);
        const double sv = f64 ? *(const double *)scale : (double)*(const float *)scale;
        return TWIN(gc_bce_logits_fwd_grad, a[0], z, t, sv, loss, dz);
    }
    case GC_OP_CONV2D: {
        NEED(15);
        void *x = PTR(11), *w = PTR(12), *bias = PTR(13), *y = PTR(14);
        REQUIRE(x && w && y);
        return TWIN(gc_conv2d_fwd, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], x, w,
                    bias, y);
    }
    case GC_OP_CONV2D_INPUT_GRAD: {
        NEED(14);
        void *w = PTR(11), *gy = PTR(12), *gx = PTR(13);
        REQUIRE(w && gy && gx);
        return TWIN(gc_conv2d_bwd_input, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], w,
                    gy, gx);
    }
    case GC_OP_CONV2D_WEIGHT_GRAD: {
        NEED(14);
        void *x = PTR(11), *gy = PTR(12), *gw = PTR(13);
        REQUIRE(x && gy && gw);
        return TWIN(gc_conv2d_bwd_weight, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], x,
                    gy, gw);
    }
    case GC_OP_MAX_POOL2D: case GC_OP_AVG_POOL2D: {
        NEED(12);
        void *x = PTR(10), *y = PTR(11);
        REQUIRE(x && y);
        if (op == GC_OP_MAX_POOL2D)
            return TWIN(gc_maxpool2d_fwd, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], x, y);
        return TWIN(gc_avgpool2d_fwd, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], x, y);
    }
    case GC_OP_MAX_POOL2D_GRAD: {
        NEED(13);
        void *x = PTR(10), *gy = PTR(11), *gx = PTR(12);
        REQUIRE(x && gy && gx);
        return TWIN(gc_maxpool2d_bwd, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], x, gy, gx);
    }
    case GC_OP_AVG_POOL2D_GRAD: {
        NEED(12);
        void *gy = PTR(10), *gx = PTR(11);
        REQUIRE(gy && gx);
        return TWIN(gc_avgpool2d_bwd, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], gy, gx);
    }
    case GC_OP_FUSED: {
        NEED(6);
        const int64_t n = a[0], nin = a[2], ninstr = a[3];
        if (nin < 0 || nin > 1024 || ninstr < 1 || ninstr > 65536) return GC_E_BADCODE;
        NEED(6 + 2 * nin + GC_FUSED_INSTR_WORDS * ninstr);
        void *out = PTR(1);
        REQUIRE(out);
        const void *in[nin > 0 ? nin : 1];
        for (int64_t i = 0; i < nin; i++) {
            in[i] = ref_ptr(c, a[6 + i]);
            REQUIRE(in[i]);
        }
        const int64_t *slots = a + 6 + nin, *instr = a + 6 + 2 * nin;
        if (f64)
            return gc_fused_f64(n, nin, (const double *const *)in, slots, ninstr, instr, a[4], a[5], c->fconst,
                                c->nfconst, out);
        return gc_fused_f32(n, nin, (const float *const *)in, slots, ninstr, instr, a[4], a[5], c->fconst,
                            c->nfconst, out);
    }
    case GC_OP_CAST: {
        NEED(4);
        void *x = PTR(2), *y = PTR(3);
        REQUIRE(x && y && a[1] >= 0);
        return cast_any(a[0], dt, a[1], x, y);
    }
    case GC_OP_COPY: {
        NEED(4);
        const int64_t esize = a[0], nd = a[1];
        if (esize < 1 || esize > 16 || nd < 0 || nd > MAX_NDIM) return GC_E_BADCODE;
        NEED(4 + 2 * nd);
        void *x = PTR(2), *y = PTR(3);
        REQUIRE(x && y);
        for (int64_t d = 0; d < nd; d++)
            if (a[4 + d] < 0) return GC_E_BADCODE;
        copy_strided(esize, (int)nd, a + 4, a + 4 + nd, x, y);
        return GC_K_OK;
    }
    case GC_OP_FILL: {
        NEED(3);
        void *y = PTR(1);
        REQUIRE(y && a[0] >= 0 && dtype_size(dt));
        return fill_any(dt, a[0], y, FCONST(2));
    }
    default: return GC_E_BADOP;
    }
}

int64_t gc_exec(const int64_t *code, int64_t ncode, const double *fconst, int64_t nfconst, const void *pool,
                void *const *ext, void *arena) {
    return gc_exec_timed(code, ncode, fconst, nfconst, pool, ext, arena, NULL, 0);
}

int64_t gc_exec_timed(const int64_t *code, int64_t ncode, const double *fconst, int64_t nfconst,
                      const void *pool, void *const *ext, void *arena, double *seconds, int64_t nsteps) {
    exec_ctx c;
    /* Python allocates the arena with np.empty (16-byte aligned); buffers are planned at 64-byte
     * offsets, so align the base here once. */
    c.arena = (uint8_t *)(((uintptr_t)arena + (ARENA_ALIGN - 1)) & ~(uintptr_t)(ARENA_ALIGN - 1));
    c.pool = pool;
    c.ext = ext;
    c.fconst = fconst;
    c.nfconst = nfconst;
    c.failed_step = -1;
    /* While the plan runs, idle pool workers spin longer (threads.h), so its consecutive parallel
     * kernels do not each pay a wake-up; they go back to a short spin when it returns. */
    gc_pool_hold(1);
    int64_t pc = 0, result = 0;
    while (pc < ncode) {
        const int64_t *w = code + pc;
        if (ncode - pc < HEADER_WORDS || w[1] < HEADER_WORDS || w[1] > ncode - pc) {
            result = pack_error(-1, GC_E_BADCODE);
            break;
        }
        const int timed = seconds && w[2] >= 0 && w[2] < nsteps;
        const int64_t t0 = timed ? gc_now_ns() : 0;
        const int st = run_instr(&c, w[0], w[3], w + HEADER_WORDS, w[1] - HEADER_WORDS);
        if (timed) seconds[w[2]] += 1e-9 * (double)(gc_now_ns() - t0);
        if (st != GC_K_OK) {
            result = pack_error(c.failed_step >= 0 ? c.failed_step : w[2], st);
            break;
        }
        pc += w[1];
    }
    gc_pool_hold(0);
    return result;
}
