/* graphc C kernels (API in kernels.h and fused.h): elementwise ops, fused elementwise programs,
 * broadcasting binary ops, reductions, softmax, fused losses, conv2d and pooling, for float32 and
 * float64.
 *
 * The kernels are written once, as ordinary C over a type T, in elementwise.inc, kernels_ops.inc
 * and kernels_conv.inc; this file includes each template twice, once per precision. Inside a
 * template:
 *   T        element type (float / double)
 *   ACC      accumulator for loss, softmax and cancellation-prone sums: double for both
 *            types (float32 losses are summed in double; some code relies on ACC == double)
 *   SFX(f)   the name f with the type suffix (f_f32 / f_f64)
 *   GEMM     gc_sgemm / gc_dgemm
 * <tgmath.h> makes exp/log/pow/sqrt/fabs pick expf etc. for float arguments.
 *
 * The elementwise ops come from the X-macro list elementwise.def: this file generates from it
 * the op kinds (ew_kind, gc_fused_arity), the activation -> gradient map and the AVX2 array loops
 * of the vectorised ops (vec_*, over the vmath.inc functions, picked at run time).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <tgmath.h>
#include "fused.h"
#include "gemm.h"
#include "kernels.h"
#include "threads.h"
#include "vmath.inc"
#include "loss_rows.inc" /* AVX2 bodies of the fused losses */

/* Parallel thresholds: below this much work (elements, or the kernel's own unit) a kernel runs
 * on the calling thread, because handing half of it to a pool thread costs more than it saves.
 * Each is the size from which 2 threads beat 1 in csrc/tests/pool_bench.py (float32, calls back
 * to back so the worker is awake, medians of 15 batches; 2-core Xeon VM, quiet, 2026-12-01):
 * relu/exp 1.25-1.39x at 32768 elements (<= 1.1x below), add 1.13x at 65536 (noisy below),
 * softmax over rows of 64 1.30x at 4096, row sums 1.26x at 32768 (0.73x at 8192), BCE 2.3x at
 * 4096. Conv and pooling were not measured: they keep the OpenMP build's 65536. */
#ifdef GC_PAR_MIN_ZERO /* csrc/tests/pool_bench.py's build: every kernel splits */
#define PAR_MIN_SCALE 0
#else
#define PAR_MIN_SCALE 1
#endif
#define PAR_MIN_UNARY (32768 * PAR_MIN_SCALE)  /* elements: gc_unary, gc_act_backward, BCE backward */
#define PAR_MIN_BINARY (65536 * PAR_MIN_SCALE) /* output elements of a broadcasting binary op */
#define PAR_MIN_FUSED (32768 * PAR_MIN_SCALE)  /* elements of a fused elementwise program */
#define PAR_MIN_REDUCE (32768 * PAR_MIN_SCALE) /* elements read by a reduction */
#define PAR_MIN_ROWS (4096 * PAR_MIN_SCALE)     /* elements of softmax / its backward / softmax-CE */
#define PAR_MIN_BCE (4096 * PAR_MIN_SCALE)     /* elements of the BCE loss: exp + log1p each (was n*16 >= 65536) */
#define PAR_MIN_CONV (65536 * PAR_MIN_SCALE)   /* multiply-adds of a conv2d (its GEMMs thread themselves) */
#define PAR_MIN_POOL (65536 * PAR_MIN_SCALE)   /* window taps of a pooling layer */
/* Work unit handed to a thread by the blocked elementwise loops. */
#define GC_BLOCK 16384
/* Elements processed per stack buffer in the row kernels (softmax, losses). */
#define GC_CHUNK 256

/* Thread count for `work` units: 1 below `min_work`, else gc_get_num_threads() (threads.h). */
static int threads_for(int64_t work, int64_t min_work) {
    if (work < min_work) return 1;
    const int nt = gc_get_num_threads();
    return nt > 1 ? nt : 1;
}

/* Like threads_for, but never more threads than independent items. */
static int threads_for_items(int64_t items, int64_t work, int64_t min_work) {
    const int nt = threads_for(work, min_work);
    return items < nt ? (int)(items > 1 ? items : 1) : nt;
}

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

/* floor(a / b) and ceil(a / b) for b > 0 and any sign of a (C division truncates toward 0). */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* malloc for count elements of elem bytes, NULL on overflow or failure. */
static void *alloc_elems(int64_t count, size_t elem) {
    if (count < 0 || (uint64_t)count > SIZE_MAX / elem) return NULL;
    return malloc(count > 0 ? (size_t)count * elem : 1);
}

/* Output size of a conv/pool window sweep; checks every geometric argument first.
 * Returns GC_K_EINVAL unless N, C, H, W >= 0, KH, KW, sh, sw >= 1, ph, pw >= 0 and the padded
 * input holds at least one window (so OH, OW >= 1). The explicit H + 2ph >= KH test matters:
 * C division truncates, so (H + 2ph - KH) / sh + 1 would be 1 for slightly negative numerators. */
static int window_geometry(int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                           int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t *OH, int64_t *OW) {
    if (N < 0 || C < 0 || H < 0 || W < 0 || KH < 1 || KW < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0)
        return GC_K_EINVAL;
    if (H + 2 * ph < KH || W + 2 * pw < KW) return GC_K_EINVAL;
    *OH = (H + 2 * ph - KH) / sh + 1;
    *OW = (W + 2 * pw - KW) / sw + 1;
    return GC_K_OK;
}

/* Index + 1 of the first label outside [0, cols), or 0. */
static int64_t first_bad_label(int64_t rows, int64_t cols, const int64_t *labels) {
    for (int64_t r = 0; r < rows; r++)
        if (labels[r] < 0 || labels[r] >= cols) return r + 1;
    return 0;
}

/* The status is an int: for more than 2^31 - 1 rows, row + 1 saturates instead of wrapping. */
static int bad_label_code(int64_t code) { return code > 2147483647 ? 2147483647 : (int)code; }

/* ------------------------------- elementwise op kinds ------------------------------- */

enum ew_kind_t { EW_NONE = 0, EW_CONST, EW_UNARY, EW_BINARY, EW_ACT_GRAD };

/* What an op code is: the flags of elementwise.def, by code. */
static int ew_kind(int op) {
    switch (op) {
    case GC_F_CONST: return EW_CONST;
#define GC_EW_UNARY(NAME, EXPR) case GC_F_##NAME: return EW_UNARY;
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) GC_EW_UNARY(NAME, EXPR) case GC_F_##NAME##_GRAD: return EW_ACT_GRAD;
#define GC_EW_BINARY(NAME, EXPR) case GC_F_##NAME: return EW_BINARY;
#include "elementwise.def"
    default: return EW_NONE;
    }
}

int gc_fused_arity(int op) {
    switch (ew_kind(op)) {
    case EW_CONST: return 0;
    case EW_UNARY: return 1;
    case EW_BINARY: case EW_ACT_GRAD: return 2;
    default: return -1;
    }
}

/* The GC_F_*_GRAD code of an activation, -1 for identity or an unknown code. */
static int act_grad_op(int act) {
    switch (act) {
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) case GC_ACT_##NAME: return GC_F_##NAME##_GRAD;
#include "elementwise.def"
    default: return -1;
    }
}

/* ------------------------ run-time SIMD selection for the math kernels ------------------------ */

/* Written once when the library is loaded (constructor), only read afterwards: no data race. */
static int g_cpu_has_avx2_fma = 0;
/* Flipped by tests while other threads may be running kernels: atomic (a plain load on x86). */
static _Atomic int g_math_simd_enabled = 1;

#ifdef GC_VM_AVX2
__attribute__((constructor)) static void detect_cpu(void) {
    __builtin_cpu_init(); /* required when called from a constructor */
    g_cpu_has_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

int gc_kernels_simd_level(void) { return g_cpu_has_avx2_fma && g_math_simd_enabled; }
void gc_kernels_set_simd(int enabled) { g_math_simd_enabled = enabled != 0; }

/* vec_<op>_f32 / _f64(n, x, y, p): y = op(x) with the AVX2 form of a vectorised op; returns 0
 * (nothing written) when the AVX2 path is off, so the caller runs the portable loop. Full
 * vectors, then the tail through a zero-padded stack buffer (never touches memory past n; x == y
 * is fine because each block is loaded before it is stored). */
#ifdef GC_VM_AVX2
#define VEC_LOOP(NAME, T, W, VT, LOAD, STORE, SET1, KERNEL)                           \
    static __attribute__((target("avx2,fma"))) void NAME##_avx2(int64_t n, const T *x, T *y, T p) { \
        const VT vp = SET1(p);                                                        \
        int64_t i = 0;                                                                \
        for (; i + W <= n; i += W) STORE(y + i, KERNEL(LOAD(x + i), vp));             \
        if (i < n) {                                                                  \
            T buf[W] = {0};                                                           \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(T));                          \
            STORE(buf, KERNEL(LOAD(buf), vp));                                        \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(T));                          \
        }                                                                             \
    }                                                                                 \
    static int NAME(int64_t n, const T *x, T *y, T p) {                               \
        if (!gc_kernels_simd_level()) return 0;                                       \
        NAME##_avx2(n, x, y, p);                                                      \
        return 1;                                                                     \
    }
#define GC_EW_UNARY_VEC(NAME, EXPR, VEC)                                                                   \
    VEC_LOOP(vec_##VEC##_f32, float, 8, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, vop_##VEC##_ps) \
    VEC_LOOP(vec_##VEC##_f64, double, 4, __m256d, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd, vop_##VEC##_pd)
#include "elementwise.def"
#undef VEC_LOOP
#else /* portable build: no vector forms */
#define GC_EW_UNARY_VEC(NAME, EXPR, VEC)                                                              \
    static int vec_##VEC##_f32(int64_t n, const float *x, float *y, float p) { (void)n, (void)x, (void)y, (void)p; return 0; } \
    static int vec_##VEC##_f64(int64_t n, const double *x, double *y, double p) { (void)n, (void)x, (void)y, (void)p; return 0; }
#include "elementwise.def"
#endif

/* ------------------------------- fused program checks ------------------------------- */

/* Is operand (kind, index) valid to read? Scalars and registers by range, inputs only when full. */
static int fused_operand_ok(int64_t kind, int64_t idx, int64_t nin, const int64_t *in_slot, int64_t nvreg,
                            int64_t nscalar) {
    switch (kind) {
    case GC_FK_VREG: return idx >= 0 && idx < nvreg;
    case GC_FK_INPUT: return idx >= 0 && idx < nin && in_slot[idx] == -1;
    case GC_FK_SCALAR: return idx >= 0 && idx < nscalar;
    default: return 0;
    }
}

/* Checks every index of a program before anything is read or written. */
static int fused_validate(int64_t n, int64_t nin, const int64_t *in_slot, int64_t ninstr, const int64_t *instr,
                          int64_t nvreg, int64_t nscalar, int64_t nfconst) {
    if (n < 0 || nin < 0 || ninstr < 1 || nvreg < 0 || nvreg > GC_FUSED_MAX_VREGS || nscalar < 0 ||
        nscalar > GC_FUSED_MAX_SCALARS)
        return GC_K_EINVAL;
    for (int64_t i = 0; i < nin; i++)
        if (in_slot[i] < -1 || in_slot[i] >= nscalar) return GC_K_EINVAL;
    for (int64_t j = 0; j < ninstr; j++) {
        const int64_t *w = instr + j * GC_FUSED_INSTR_WORDS;
        const int64_t op = w[0], dk = w[1], d = w[2];
        if (w[7] < 0 || w[7] >= nfconst) return GC_K_EINVAL;
        if (op < INT32_MIN || op > INT32_MAX) return GC_K_EINVAL;
        const int last = j == ninstr - 1;
        if (dk == GC_FK_OUT) {
            if (!last) return GC_K_EINVAL;
        } else if (dk == GC_FK_VREG) {
            if (d < 0 || d >= nvreg) return GC_K_EINVAL;
        } else if (dk == GC_FK_SCALAR) {
            if (d < 0 || d >= nscalar) return GC_K_EINVAL;
        } else {
            return GC_K_EINVAL;
        }
        const int dst_scalar = dk == GC_FK_SCALAR;
        switch (gc_fused_arity((int)op)) {
        case 0:
            if (!dst_scalar) return GC_K_EINVAL;
            break;
        case 1:
            if (!fused_operand_ok(w[3], w[4], nin, in_slot, nvreg, nscalar)) return GC_K_EINVAL;
            /* a scalar result needs a scalar operand and a vector result a vector one */
            if (dst_scalar != (w[3] == GC_FK_SCALAR)) return GC_K_EINVAL;
            break;
        case 2: {
            if (!fused_operand_ok(w[3], w[4], nin, in_slot, nvreg, nscalar) ||
                !fused_operand_ok(w[5], w[6], nin, in_slot, nvreg, nscalar))
                return GC_K_EINVAL;
            const int both_scalar = w[3] == GC_FK_SCALAR && w[5] == GC_FK_SCALAR;
            if (dst_scalar != both_scalar) return GC_K_EINVAL;
            break;
        }
        default: return GC_K_EINVAL;
        }
    }
    return GC_K_OK;
}

/* ---------------------------------- float32 ---------------------------------- */
#define T float
#define ACC double
#define SFX(name) name##_f32
#define GEMM gc_sgemm
#include "elementwise.inc"
#include "kernels_ops.inc"
#include "kernels_conv.inc"
#undef T
#undef ACC
#undef SFX
#undef GEMM

/* ---------------------------------- float64 ---------------------------------- */
#define T double
#define ACC double
#define SFX(name) name##_f64
#define GEMM gc_dgemm
#include "elementwise.inc"
#include "kernels_ops.inc"
#include "kernels_conv.inc"
#undef T
#undef ACC
#undef SFX
#undef GEMM
