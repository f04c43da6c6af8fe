/* Vector math for graphc: exp, log, sigmoid, tanh on contiguous float32/float64 arrays.
 *
 * Two implementations of each function:
 *   - AVX2+FMA, compiled per function with __attribute__((target("avx2,fma"))) because the module
 *     is built for baseline x86-64 (no -march), and chosen at run time;
 *   - portable: a plain loop over libm (glibc's are < 1 ulp).
 * gc_kernels_set_simd(0) forces the portable one so tests can check both.
 *
 * The AVX2 algorithms (classic Cody-Waite / fdlibm designs, Taylor coefficients so that every
 * constant is exact-by-construction and easy to audit):
 *   exp(x)   = 2^n * e^r,  n = round(x/ln2), r = x - n*ln2 with ln2 split hi+lo via FMA,
 *              |r| <= ln2/2, e^r = 1 + (r + r^2*q(r)) with Taylor q (degree 13 total for
 *              double, 7 for float). 2^n is applied as 2^n1 * 2^n2 (n1 = floor(n/2)) so results
 *              that overflow, land in the subnormals, or underflow are rounded exactly once.
 *   log(x)   = e*ln2 + log1p(f), x = 2^e * (1+f), 1+f in [sqrt(1/2), sqrt(2)); with s = f/(2+f),
 *              log1p(f) = f - (f^2/2 - s*(f^2/2 + R(s^2))) (fdlibm), R a Taylor series of atanh.
 *              Subnormal inputs are scaled by 2^54 (2^25 for float) first.
 *   sigmoid  = 1/(1+e) for x >= 0 and e/(1+e) for x < 0, e = exp(-|x|): no overflow, and small
 *              results (x << 0) keep full relative accuracy.
 *   tanh(x)  = sign(x) * (-m / (2 + m)), m = expm1(-2|x|) in (-1, 0]; expm1 uses the exp
 *              reduction and 2^n*(e^r - 1) + (2^n - 1) in one FMA, so small |x| keeps full relative
 *              accuracy and large |x| saturates to exactly +-1.
 * Measured max relative error (tests/test_c_kernels.py): well under 5e-7 for float32 and 1e-15
 * for float64 over the whole range, subnormals, infinities and NaN included.
 */
#include <math.h>
#include <float.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"

/* GC_NO_SIMD (like gemm.c) builds only the portable path, as on non-x86 targets. */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(GC_NO_SIMD)
#define GC_HAVE_AVX2 1
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* Run-time selection                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Written once when the library is loaded (constructor), only read afterwards: no data race. */
static int g_cpu_has_avx2_fma = 0;
/* Flipped by tests while other threads may be running kernels: atomic (a plain load on x86). */
static _Atomic int g_math_simd_enabled = 1;

#ifdef GC_HAVE_AVX2
__attribute__((constructor)) static void detect_cpu(void) {
    __builtin_cpu_init(); /* required when called from a constructor */
    g_cpu_has_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

int gc_kernels_simd_level(void) { return g_cpu_has_avx2_fma && g_math_simd_enabled; }
void gc_kernels_set_simd(int enabled) { g_math_simd_enabled = enabled != 0; }

/* ------------------------------------------------------------------------------------------ */
/* Portable path (libm)                                                                        */
/* ------------------------------------------------------------------------------------------ */

static inline float sigmoid_scalar_f32(float x) {
    float e = expf(-fabsf(x));
    return (x >= 0 ? 1.0f : e) / (1.0f + e);
}
static inline double sigmoid_scalar_f64(double x) {
    double e = exp(-fabs(x));
    return (x >= 0 ? 1.0 : e) / (1.0 + e);
}

#ifdef GC_HAVE_AVX2
#define AVX2 __attribute__((target("avx2,fma")))

/* ------------------------------------------------------------------------------------------ */
/* AVX2 float64                                                                                */
/* ------------------------------------------------------------------------------------------ */

#define D(v) _mm256_set1_pd(v)
static const double LN2_HI = 0x1.62e42fefa39efp-1;   /* double(ln 2) */
static const double LN2_LO = 2.3190468138462996e-17; /* ln 2 - LN2_HI */
static const double LOG2E = 1.4426950408889634;

/* 2^k for integer-valued k in [-1022, 1023]: put k + 1023 in the exponent field. Adding
 * 1.5*2^52 leaves k (two's complement) in the low mantissa bits; only the low 12 matter. */
static inline AVX2 __m256d pow2i_pd(__m256d k) {
    __m256i bits = _mm256_castpd_si256(_mm256_add_pd(k, D(0x1.8p52)));
    bits = _mm256_add_epi64(bits, _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(bits, 52));
}

/* r = x - n*ln2 with the product exact (FMA) and ln2's rounding error added back. */
static inline AVX2 __m256d reduce_ln2_pd(__m256d x, __m256d n) {
    __m256d r = _mm256_fnmadd_pd(n, D(LN2_HI), x);
    return _mm256_fnmadd_pd(n, D(LN2_LO), r);
}

/* e^r - 1 for |r| <= ln2/2 (+ a little slack): r + r^2 * sum_{k=2..13} r^(k-2)/k!.
 * Truncation error < 5e-18 relative. */
static inline AVX2 __m256d expm1_small_pd(__m256d r) {
    __m256d q = D(1.0 / 6227020800.0); /* 1/13! */
    q = _mm256_fmadd_pd(q, r, D(1.0 / 479001600.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 39916800.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 3628800.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 362880.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 40320.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 5040.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 720.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 120.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 24.0));
    q = _mm256_fmadd_pd(q, r, D(1.0 / 6.0));
    q = _mm256_fmadd_pd(q, r, D(0.5));
    return _mm256_fmadd_pd(_mm256_mul_pd(r, r), q, r);
}

static inline AVX2 __m256d exp_pd(__m256d x) {
    /* Clamp so that n stays in [-1076, 1024]: beyond, the result is 0 or inf anyway.
     * max/min return their SECOND operand when one is NaN, so NaN flows through. */
    x = _mm256_min_pd(D(710.0), _mm256_max_pd(D(-746.0), x));
    __m256d n = _mm256_round_pd(_mm256_mul_pd(x, D(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = reduce_ln2_pd(x, n);
    __m256d p = _mm256_add_pd(expm1_small_pd(r), D(1.0));
    /* 2^n = 2^n1 * 2^n2 with both halves representable; p*2^n1 is exact, the last product
     * rounds once (correct overflow to inf and gradual underflow). */
    __m256d n1 = _mm256_round_pd(_mm256_mul_pd(n, D(0.5)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256d n2 = _mm256_sub_pd(n, n1);
    return _mm256_mul_pd(_mm256_mul_pd(p, pow2i_pd(n1)), pow2i_pd(n2));
}

/* expm1(y) for y <= 0 (used by tanh); y is clamped to >= -50 where expm1 == -1 in double. */
static inline AVX2 __m256d expm1_neg_pd(__m256d y) {
    y = _mm256_max_pd(D(-50.0), y);
    __m256d n = _mm256_round_pd(_mm256_mul_pd(y, D(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = reduce_ln2_pd(y, n);
    __m256d pm = expm1_small_pd(r);
    __m256d s = pow2i_pd(n); /* n in [-73, 0] */
    /* 2^n * e^r - 1 = s*pm + (s - 1), s - 1 exact for these n; one rounding in the FMA. */
    return _mm256_fmadd_pd(s, pm, _mm256_sub_pd(s, D(1.0)));
}

static inline AVX2 __m256d sigmoid_pd(__m256d x) {
    __m256d sign = D(-0.0);
    __m256d e = exp_pd(_mm256_or_pd(x, sign)); /* exp(-|x|) */
    __m256d num = _mm256_blendv_pd(e, D(1.0), _mm256_cmp_pd(x, D(0.0), _CMP_GE_OQ));
    return _mm256_div_pd(num, _mm256_add_pd(D(1.0), e));
}

static inline AVX2 __m256d tanh_pd(__m256d x) {
    __m256d sign = D(-0.0);
    __m256d ax = _mm256_andnot_pd(sign, x);
    __m256d m = expm1_neg_pd(_mm256_mul_pd(ax, D(-2.0)));
    __m256d t = _mm256_div_pd(_mm256_xor_pd(m, sign), _mm256_add_pd(D(2.0), m));
    return _mm256_or_pd(t, _mm256_and_pd(x, sign)); /* t >= 0 (or NaN): copy x's sign */
}

static inline AVX2 __m256d log_pd(__m256d x) {
    /* Subnormals: scale into the normal range first. */
    __m256d is_sub = _mm256_cmp_pd(x, D(DBL_MIN), _CMP_LT_OQ);
    __m256d xs = _mm256_blendv_pd(x, _mm256_mul_pd(x, D(0x1p54)), is_sub);
    __m256d eadj = _mm256_and_pd(is_sub, D(-54.0));

    __m256i bits = _mm256_castpd_si256(xs);
    /* Exponent field as a double: OR it into the mantissa of 2^52 and subtract 2^52. */
    __m256i efield = _mm256_srli_epi64(bits, 52);
    __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(efield, _mm256_set1_epi64x(0x4330000000000000LL))),
                              D(0x1p52));
    /* Mantissa in [1, 2), then fold into [sqrt(1/2), sqrt(2)). */
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFLL)),
                                                    _mm256_set1_epi64x(0x3FF0000000000000LL)));
    __m256d big = _mm256_cmp_pd(m, D(1.4142135623730951), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, D(0.5)), big);
    e = _mm256_add_pd(_mm256_add_pd(e, D(-1023.0)), _mm256_add_pd(eadj, _mm256_and_pd(big, D(1.0))));

    __m256d f = _mm256_sub_pd(m, D(1.0)); /* exact (Sterbenz) */
    __m256d s = _mm256_div_pd(f, _mm256_add_pd(D(2.0), f));
    __m256d z = _mm256_mul_pd(s, s);
    /* R = sum_{k>=1} 2 z^k / (2k+1), k = 1..10; truncation < 1e-17 relative since z <= 0.0295. */
    __m256d P = D(2.0 / 21.0);
    P = _mm256_fmadd_pd(P, z, D(2.0 / 19.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 17.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 15.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 13.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 11.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 9.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 7.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 5.0));
    P = _mm256_fmadd_pd(P, z, D(2.0 / 3.0));
    __m256d R = _mm256_mul_pd(z, P);
    __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(D(0.5), f), f);
    /* corr = hfsq - (s*(hfsq + R) + e*ln2_lo);  log = e*ln2_hi + (f - corr) */
    __m256d corr = _mm256_sub_pd(hfsq, _mm256_fmadd_pd(s, _mm256_add_pd(hfsq, R), _mm256_mul_pd(e, D(LN2_LO))));
    __m256d res = _mm256_fmadd_pd(e, D(LN2_HI), _mm256_sub_pd(f, corr));

    /* Special inputs: x == 0 -> -inf, x < 0 -> NaN, +inf -> +inf, NaN -> NaN. */
    res = _mm256_blendv_pd(res, D(-INFINITY), _mm256_cmp_pd(x, D(0.0), _CMP_EQ_OQ));
    res = _mm256_blendv_pd(res, D(NAN), _mm256_cmp_pd(x, D(0.0), _CMP_LT_OQ));
    res = _mm256_blendv_pd(res, x, _mm256_cmp_pd(x, D(INFINITY), _CMP_EQ_OQ));
    res = _mm256_blendv_pd(res, x, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
    return res;
}
#undef D

/* ------------------------------------------------------------------------------------------ */
/* AVX2 float32 (same algorithms, float-sized polynomials)                                     */
/* ------------------------------------------------------------------------------------------ */

#define F(v) _mm256_set1_ps(v)
static const float LN2_HI_F = 0x1.62e430p-1f;        /* float(ln 2) */
static const float LN2_LO_F = -1.9046542121259336e-09f; /* ln 2 - LN2_HI_F */
static const float LOG2E_F = 1.44269504088896341f;

static inline AVX2 __m256 reduce_ln2_ps(__m256 x, __m256 n) {
    __m256 r = _mm256_fnmadd_ps(n, F(LN2_HI_F), x);
    return _mm256_fnmadd_ps(n, F(LN2_LO_F), r);
}

/* e^r - 1 for |r| <= ln2/2: r + r^2 * sum_{k=2..8} r^(k-2)/k!; truncation < 1e-9 relative. */
static inline AVX2 __m256 expm1_small_ps(__m256 r) {
    __m256 q = F(1.0f / 40320.0f);
    q = _mm256_fmadd_ps(q, r, F(1.0f / 5040.0f));
    q = _mm256_fmadd_ps(q, r, F(1.0f / 720.0f));
    q = _mm256_fmadd_ps(q, r, F(1.0f / 120.0f));
    q = _mm256_fmadd_ps(q, r, F(1.0f / 24.0f));
    q = _mm256_fmadd_ps(q, r, F(1.0f / 6.0f));
    q = _mm256_fmadd_ps(q, r, F(0.5f));
    return _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, r);
}

/* 2^k for int32 k in [-126, 127]. */
static inline AVX2 __m256 pow2i_ps(__m256i k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

static inline AVX2 __m256 exp_ps(__m256 x) {
    /* n stays in [-150, 129]; NaN passes the clamp (second operand of max/min). */
    x = _mm256_min_ps(F(89.0f), _mm256_max_ps(F(-104.0f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, F(LOG2E_F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = reduce_ln2_ps(x, n);
    __m256 p = _mm256_add_ps(expm1_small_ps(r), F(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);          /* exact: n is integral */
    __m256i n1 = _mm256_srai_epi32(ni, 1);       /* floor(n/2) */
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2i_ps(n1)), pow2i_ps(n2));
}

/* expm1(y) for y <= 0, clamped to >= -40 where expm1 == -1 in float. */
static inline AVX2 __m256 expm1_neg_ps(__m256 y) {
    y = _mm256_max_ps(F(-40.0f), y);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(y, F(LOG2E_F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = reduce_ln2_ps(y, n);
    __m256 pm = expm1_small_ps(r);
    __m256 s = pow2i_ps(_mm256_cvtps_epi32(n)); /* n in [-58, 0] */
    return _mm256_fmadd_ps(s, pm, _mm256_sub_ps(s, F(1.0f)));
}

static inline AVX2 __m256 sigmoid_ps(__m256 x) {
    __m256 e = exp_ps(_mm256_or_ps(x, F(-0.0f))); /* exp(-|x|) */
    __m256 num = _mm256_blendv_ps(e, F(1.0f), _mm256_cmp_ps(x, F(0.0f), _CMP_GE_OQ));
    return _mm256_div_ps(num, _mm256_add_ps(F(1.0f), e));
}

static inline AVX2 __m256 tanh_ps(__m256 x) {
    __m256 sign = F(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    __m256 m = expm1_neg_ps(_mm256_mul_ps(ax, F(-2.0f)));
    __m256 t = _mm256_div_ps(_mm256_xor_ps(m, sign), _mm256_add_ps(F(2.0f), m));
    return _mm256_or_ps(t, _mm256_and_ps(x, sign));
}

static inline AVX2 __m256 log_ps(__m256 x) {
    __m256 is_sub = _mm256_cmp_ps(x, F(FLT_MIN), _CMP_LT_OQ);
    __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, F(0x1p25f)), is_sub);
    __m256 eadj = _mm256_and_ps(is_sub, F(-25.0f));

    __m256i bits = _mm256_castps_si256(xs);
    __m256 e = _mm256_cvtepi32_ps(_mm256_srli_epi32(bits, 23));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                                   _mm256_set1_epi32(0x3F800000)));
    __m256 big = _mm256_cmp_ps(m, F(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, F(0.5f)), big);
    e = _mm256_add_ps(_mm256_add_ps(e, F(-127.0f)), _mm256_add_ps(eadj, _mm256_and_ps(big, F(1.0f))));

    __m256 f = _mm256_sub_ps(m, F(1.0f));
    __m256 s = _mm256_div_ps(f, _mm256_add_ps(F(2.0f), f));
    __m256 z = _mm256_mul_ps(s, s);
    /* R = sum_{k=1..5} 2 z^k / (2k+1); truncation < 2e-9 relative. */
    __m256 P = F(2.0f / 11.0f);
    P = _mm256_fmadd_ps(P, z, F(2.0f / 9.0f));
    P = _mm256_fmadd_ps(P, z, F(2.0f / 7.0f));
    P = _mm256_fmadd_ps(P, z, F(2.0f / 5.0f));
    P = _mm256_fmadd_ps(P, z, F(2.0f / 3.0f));
    __m256 R = _mm256_mul_ps(z, P);
    __m256 hfsq = _mm256_mul_ps(_mm256_mul_ps(F(0.5f), f), f);
    __m256 corr = _mm256_sub_ps(hfsq, _mm256_fmadd_ps(s, _mm256_add_ps(hfsq, R), _mm256_mul_ps(e, F(LN2_LO_F))));
    __m256 res = _mm256_fmadd_ps(e, F(LN2_HI_F), _mm256_sub_ps(f, corr));

    res = _mm256_blendv_ps(res, F(-INFINITY), _mm256_cmp_ps(x, F(0.0f), _CMP_EQ_OQ));
    res = _mm256_blendv_ps(res, F(NAN), _mm256_cmp_ps(x, F(0.0f), _CMP_LT_OQ));
    res = _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, F(INFINITY), _CMP_EQ_OQ));
    res = _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return res;
}
#undef F

/* Array loops: full vectors, then the tail through a zero-padded stack buffer (never touches
 * memory past n; x == y is fine because each block is loaded before it is stored). */
#define AVX2_ARRAY_LOOP(NAME, T, W, VLOAD, VSTORE, KERNEL)                      \
    static AVX2 void NAME(int64_t n, const T *x, T *y) {                        \
        int64_t i = 0;                                                          \
        for (; i + W <= n; i += W) VSTORE(y + i, KERNEL(VLOAD(x + i)));         \
        if (i < n) {                                                            \
            T buf[W] = {0};                                                     \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(T));                    \
            VSTORE(buf, KERNEL(VLOAD(buf)));                                    \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(T));                    \
        }                                                                       \
    }
AVX2_ARRAY_LOOP(exp_avx2_f64, double, 4, _mm256_loadu_pd, _mm256_storeu_pd, exp_pd)
AVX2_ARRAY_LOOP(log_avx2_f64, double, 4, _mm256_loadu_pd, _mm256_storeu_pd, log_pd)
AVX2_ARRAY_LOOP(sigmoid_avx2_f64, double, 4, _mm256_loadu_pd, _mm256_storeu_pd, sigmoid_pd)
AVX2_ARRAY_LOOP(tanh_avx2_f64, double, 4, _mm256_loadu_pd, _mm256_storeu_pd, tanh_pd)
AVX2_ARRAY_LOOP(exp_avx2_f32, float, 8, _mm256_loadu_ps, _mm256_storeu_ps, exp_ps)
AVX2_ARRAY_LOOP(log_avx2_f32, float, 8, _mm256_loadu_ps, _mm256_storeu_ps, log_ps)
AVX2_ARRAY_LOOP(sigmoid_avx2_f32, float, 8, _mm256_loadu_ps, _mm256_storeu_ps, sigmoid_ps)
AVX2_ARRAY_LOOP(tanh_avx2_f32, float, 8, _mm256_loadu_ps, _mm256_storeu_ps, tanh_ps)
#endif /* GC_HAVE_AVX2 */

/* ------------------------------------------------------------------------------------------ */
/* Public entry points: dispatch between the AVX2 and the libm loops                           */
/* ------------------------------------------------------------------------------------------ */

#ifdef GC_HAVE_AVX2
#define DISPATCH(AVX2_FN) if (gc_kernels_simd_level()) { AVX2_FN(n, x, y); return; }
#else
#define DISPATCH(AVX2_FN)
#endif

#define MATH_ENTRY(NAME, T, AVX2_FN, SCALAR_EXPR)               \
    void NAME(int64_t n, const T *x, T *y) {                    \
        if (n <= 0) return;                                     \
        DISPATCH(AVX2_FN)                                       \
        for (int64_t i = 0; i < n; i++) {                       \
            T v = x[i];                                         \
            y[i] = SCALAR_EXPR;                                 \
        }                                                       \
    }

MATH_ENTRY(gc_vexp_f32, float, exp_avx2_f32, expf(v))
MATH_ENTRY(gc_vlog_f32, float, log_avx2_f32, logf(v))
MATH_ENTRY(gc_vsigmoid_f32, float, sigmoid_avx2_f32, sigmoid_scalar_f32(v))
MATH_ENTRY(gc_vtanh_f32, float, tanh_avx2_f32, tanhf(v))
MATH_ENTRY(gc_vexp_f64, double, exp_avx2_f64, exp(v))
MATH_ENTRY(gc_vlog_f64, double, log_avx2_f64, log(v))
MATH_ENTRY(gc_vsigmoid_f64, double, sigmoid_avx2_f64, sigmoid_scalar_f64(v))
MATH_ENTRY(gc_vtanh_f64, double, tanh_avx2_f64, tanh(v))
