/* C-only driver of every graphc kernel family, for AddressSanitizer / UndefinedBehaviorSanitizer /
 * LeakSanitizer (.ci/sanitize builds it with -fsanitize=address,undefined and runs it with
 * ASAN_OPTIONS=detect_leaks=1):
 *
 *   gcc -std=c11 -O1 -g -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer -Icsrc \
 *       csrc/tests/driver.c <every csrc .c file> -lm -o driver && ./driver
 *
 * Covers gemm.h (f32/f64, every transpose, every epilogue, bias, beta, SIMD on and off, 1 and 2
 * threads, sizes that hit the packed micro-kernels, their edges and the empty cases), kernels.h
 * (vector math, unary, activation backward, broadcasting binary, reductions, softmax and its
 * backward, softmax cross-entropy and BCE forward and backward, conv2d forward and both backwards,
 * max/avg pooling forward and backward), fused.h (a program with vector registers, scalar inputs,
 * a constant and several blocks) and exec.h (a hand-written instruction program with every
 * opcode family, plus the error paths). Each result is compared with a naive double-precision
 * reference; every buffer is heap-allocated to its exact size so ASan sees any overrun.
 * Exit status: 0 when every check passed, 1 otherwise (the first failures are printed).
 *
 * The typed tests are written once over T (float or double): this file includes itself twice
 * with DRIVER_TYPED defined (the same scheme as kernels.c with its .inc files).
 */
#ifndef DRIVER_TYPED

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "fused.h"
#include "gemm.h"
#include "kernels.h"
#include "threads.h"

static long g_checks, g_failures;

/* |got - want| <= tol * max(1, |want|), NaN only where NaN is expected, infinities exactly. */
static void check_close(const char *what, long index, double got, double want, double tol) {
    g_checks++;
    int ok;
    if (isnan(want)) ok = isnan(got);
    else if (isinf(want)) ok = got == want;
    else ok = !isnan(got) && fabs(got - want) <= tol * fmax(1.0, fabs(want));
    if (!ok) {
        if (g_failures < 40) fprintf(stderr, "FAIL %s [%ld]: got %.17g, want %.17g\n", what, index, got, want);
        g_failures++;
    }
}

static void check_int(const char *what, long long got, long long want) {
    g_checks++;
    if (got != want) {
        if (g_failures < 40) fprintf(stderr, "FAIL %s: got %lld, want %lld\n", what, got, want);
        g_failures++;
    }
}

/* Deterministic values in [lo, hi): a small LCG, so runs are reproducible without rand(). */
static uint64_t g_seed = 12345;
static double uniform(double lo, double hi) {
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(g_seed >> 11) / 9007199254740992.0;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static double act_ref(int act, double v, double alpha) {
    switch (act) {
    case GC_ACT_RELU: return v > 0 ? v : (isnan(v) ? v : 0.0);
    case GC_ACT_LEAKY_RELU: return v > 0 ? v : v * alpha;
    case GC_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case GC_ACT_TANH: return tanh(v);
    case GC_ACT_ELU: return v > 0 ? v : alpha * expm1(v);
    default: return v;
    }
}

/* Every activation, and every gc_unary op: written out here (not generated from elementwise.def)
 * so that the driver checks the list against independent references. */
static const int ACTS[] = {GC_ACT_IDENTITY, GC_ACT_RELU, GC_ACT_LEAKY_RELU, GC_ACT_SIGMOID, GC_ACT_TANH, GC_ACT_ELU};
static const int UNARY_OPS[] = {GC_U_NEG, GC_U_EXP, GC_U_LOG, GC_U_SQRT, GC_U_ABS, GC_U_SIGN, GC_U_SIGMOID,
                                GC_U_TANH, GC_U_RELU, GC_U_LEAKY_RELU, GC_U_POWER, GC_U_SOFTPLUS, GC_U_ELU,
                                GC_U_GELU, GC_U_GELU_TANH, GC_U_SILU, GC_U_ERF};
static const int BINARY_OPS[] = {GC_B_ADD, GC_B_SUB, GC_B_MUL, GC_B_DIV, GC_B_POW, GC_B_MAXIMUM, GC_B_MINIMUM};
#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

static double unary_ref(int op, double v, double param) {
    switch (op) {
    case GC_U_NEG: return -v;
    case GC_U_EXP: return exp(v);
    case GC_U_LOG: return log(v);
    case GC_U_SQRT: return sqrt(v);
    case GC_U_ABS: return fabs(v);
    case GC_U_SIGN: return (v > 0) - (v < 0);
    case GC_U_SIGMOID: return 1 / (1 + exp(-v));
    case GC_U_TANH: return tanh(v);
    case GC_U_RELU: return v > 0 ? v : 0;
    case GC_U_LEAKY_RELU: return v > 0 ? v : v * param;
    case GC_U_SOFTPLUS: return v * param > 20 ? v : log(1 + exp(v * param)) / param;
    case GC_U_ELU: return v > 0 ? v : param * (exp(v) - 1);
    case GC_U_GELU: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case GC_U_GELU_TANH: return 0.5 * v * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
    case GC_U_SILU: return v / (1 + exp(-v));
    case GC_U_ERF: return erf(v);
    default: return pow(v, param);
    }
}

static double binary_ref(int op, double a, double b) {
    switch (op) {
    case GC_B_ADD: return a + b;
    case GC_B_SUB: return a - b;
    case GC_B_MUL: return a * b;
    case GC_B_DIV: return a / b;
    case GC_B_POW: return pow(a, b);
    case GC_B_MAXIMUM: return a > b ? a : b;
    default: return a < b ? a : b;
    }
}

/* Output size of conv/pool along one axis (floor), as the kernels define it. */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

#define DRIVER_TYPED 1

#define T float
#define SFX(name) name##_f32
#define GEMM gc_sgemm
#define DT GC_DT_F32
#define OTHER_DT GC_DT_F64
#define TOL 2e-4
#include "driver.c"
#undef T
#undef SFX
#undef GEMM
#undef DT
#undef OTHER_DT
#undef TOL

#define T double
#define SFX(name) name##_f64
#define GEMM gc_dgemm
#define DT GC_DT_F64
#define OTHER_DT GC_DT_F32
#define TOL 1e-10
#include "driver.c"
#undef T
#undef SFX
#undef GEMM
#undef DT
#undef OTHER_DT
#undef TOL

/* ---- GC_OP_COPY for every element size: 1, 2, 4, 8 bytes (typed loops) and 3 (the generic one),
 * with an inner stride of 2 elements, an inner stride 0 (broadcast) and an outer stride 0 ---- */
#define REF(kind, v) ((int64_t)(((int64_t)(v) << 2) | (kind)))
static void test_copy_element_sizes(void) {
    const int64_t R = 5, C = 7;
    for (int64_t es = 1; es <= 8; es++) {
        if (es != 1 && es != 2 && es != 3 && es != 4 && es != 8) continue;
        uint8_t *x = xmalloc((size_t)(R * 2 * C * es)), *y = xmalloc((size_t)(R * C * es));
        for (int64_t i = 0; i < R * 2 * C * es; i++) x[i] = (uint8_t)(i * 7 + 3);
        /* (inner stride, outer stride) in elements: every other element, broadcast column, broadcast row */
        const int64_t strides[3][2] = {{2, 2 * C}, {0, 2 * C}, {1, 0}};
        for (int k = 0; k < 3; k++) {
            void *ext[2] = {x, y};
            const int64_t code[] = {GC_OP_COPY, 12, 0, GC_DT_BOOL, es, 2, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 1),
                                    R, C, strides[k][1], strides[k][0]};
            check_int("copy status", gc_exec(code, 12, NULL, 0, NULL, ext, NULL), 0);
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t b = 0; b < es; b++)
                        check_int("copy byte", y[(r * C + c) * es + b],
                                  x[(r * strides[k][1] + c * strides[k][0]) * es + b]);
        }
        free(x);
        free(y);
    }
}

int main(void) {
    test_copy_element_sizes();
    for (int threads = 1; threads <= 2; threads++) {
        gc_set_num_threads(threads);
        for (int level = GC_SIMD_AVX512; level >= GC_SIMD_SCALAR; level--) { /* capped at the CPU's */
            gc_set_simd_max(level);
            gc_kernels_set_simd(level > 0);
            run_all_f32();
            run_all_f64();
        }
    }
    gc_set_simd_enabled(1);
    gc_kernels_set_simd(1);
    gc_set_num_threads(0);
    check_int("threads back to the default", gc_get_num_threads() >= 1, 1);
    printf("graphc C driver: %ld checks, %ld failures (simd level: gemm %d, kernels %d)\n", g_checks, g_failures,
           gc_simd_level(), gc_kernels_simd_level());
    return g_failures ? 1 : 0;
}

#else /* ---- typed tests, compiled once per T ---- */

static T *SFX(vec)(int64_t n, double lo, double hi) {
    T *v = xmalloc(sizeof(T) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = (T)uniform(lo, hi);
    return v;
}

/* ---- GEMM: every transpose, epilogue, bias/beta combination against a naive product ---- */
static void SFX(test_gemm_case)(int ta, int tb, int64_t M, int64_t N, int64_t K, int act, int with_bias, int beta1) {
    const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3; /* padded leading dims */
    const int64_t arows = ta ? K : M, brows = tb ? N : K;
    T *A = SFX(vec)(arows * lda, -1, 1), *B = SFX(vec)(brows * ldb, -1, 1), *C = SFX(vec)(M * ldc, -1, 1);
    T *bias = with_bias ? SFX(vec)(N, -0.5, 0.5) : NULL;
    double *want = xmalloc(sizeof(double) * (size_t)(M * N > 0 ? M * N : 1));
    const double alpha = 0.1;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = beta1 ? (double)C[i * ldc + j] : 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
            if (bias) s += bias[j];
            want[i * N + j] = act_ref(act, s, alpha);
        }
    GEMM(ta, tb, M, N, K, A, lda, B, ldb, (T)(beta1 ? 1 : 0), C, ldc, bias, act, (T)alpha);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) check_close("gemm", (long)(i * N + j), C[i * ldc + j], want[i * N + j], TOL * 5);
    free(A);
    free(B);
    free(C);
    free(bias);
    free(want);
}

static void SFX(test_gemm)(void) {
    static const int64_t sizes[][3] = {{5, 7, 3}, {17, 33, 40}, {1, 9, 4}, {9, 1, 4}, {70, 45, 130},
                                       {0, 3, 2}, {3, 0, 2}, {4, 3, 0}, {13, 8, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int k = 0; k < COUNT(ACTS); k++)
                    SFX(test_gemm_case)(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], ACTS[k], k % 2, k == 2);
    SFX(test_gemm_case)(0, 0, 300, 260, 300, GC_ACT_RELU, 1, 0); /* several K blocks and threads */
    /* few rows, wider than NC (4096): the threads split the columns, and the narrow last NC block
     * splits its panels differently from the full ones (a race here went unseen: ThreadSanitizer) */
    SFX(test_gemm_case)(1, 0, 20, 4096 + 200, 300, GC_ACT_IDENTITY, 0, 0);
}

/* ---- vector math and unary ops ---- */
static void SFX(test_vmath)(void) {
    const int64_t n = 37; /* vector body and a tail */
    T *x = SFX(vec)(n, -20, 20), *p = SFX(vec)(n, 1e-3, 50), *y = xmalloc(sizeof(T) * n);
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-13;
    SFX(gc_vexp)(n, x, y);
    for (int64_t i = 0; i < n; i++) check_close("vexp", (long)i, y[i], exp((double)x[i]), tol);
    SFX(gc_vlog)(n, p, y);
    for (int64_t i = 0; i < n; i++) check_close("vlog", (long)i, y[i], log((double)p[i]), tol);
    SFX(gc_vsigmoid)(n, x, y);
    for (int64_t i = 0; i < n; i++) check_close("vsigmoid", (long)i, y[i], 1 / (1 + exp(-(double)x[i])), tol);
    SFX(gc_vtanh)(n, x, y);
    for (int64_t i = 0; i < n; i++) check_close("vtanh", (long)i, y[i], tanh((double)x[i]), tol);
    SFX(gc_vexp)(0, x, y); /* n == 0 touches nothing */
    free(x);
    free(p);
    free(y);
}

static void SFX(test_unary)(void) {
    const int64_t n = 19;
    for (int k = 0; k < COUNT(UNARY_OPS); k++) {
        const int op = UNARY_OPS[k];
        const int positive = op == GC_U_LOG || op == GC_U_SQRT || op == GC_U_POWER;
        T *x = SFX(vec)(n, positive ? 0.1 : -3, 3), *y = xmalloc(sizeof(T) * n);
        const double param = op == GC_U_POWER ? 2.5 : op == GC_U_SOFTPLUS ? 2.0 : op == GC_U_ELU ? 1.5 : 0.1;
        check_int("unary status", SFX(gc_unary)(op, n, x, y, (T)param), GC_K_OK);
        for (int64_t i = 0; i < n; i++) check_close("unary", op * 100 + (long)i, y[i], unary_ref(op, x[i], param), TOL);
        memcpy(y, x, sizeof(T) * n); /* in place */
        check_int("unary in place", SFX(gc_unary)(op, n, y, y, (T)param), GC_K_OK);
        for (int64_t i = 0; i < n; i++) check_close("unary in place", (long)i, y[i], unary_ref(op, x[i], param), TOL);
        free(x);
        free(y);
    }
    T one = 1;
    check_int("unary bad op", SFX(gc_unary)(99, 1, &one, &one, 0), GC_K_EINVAL);
    check_int("unary given a binary op", SFX(gc_unary)(GC_B_ADD, 1, &one, &one, 0), GC_K_EINVAL);
    check_int("unary given an activation gradient", SFX(gc_unary)(GC_F_RELU_GRAD, 1, &one, &one, 0), GC_K_EINVAL);
    check_int("unary n = 0", SFX(gc_unary)(GC_U_EXP, 0, &one, &one, 0), GC_K_OK);
}

static void SFX(test_act_backward)(void) {
    const int64_t n = 23;
    const double alpha = 0.2;
    for (int k = 0; k < COUNT(ACTS); k++) {
        const int act = ACTS[k];
        const int bounded = act == GC_ACT_SIGMOID || act == GC_ACT_TANH; /* outputs in (-1, 1) */
        T *y = SFX(vec)(n, bounded ? -0.9 : -2, bounded ? 0.9 : 2);
        if (act == GC_ACT_ELU) /* an elu output is > -alpha */
            for (int64_t i = 0; i < n; i++) y[i] = y[i] < -alpha ? (T)(-alpha / 2) : y[i];
        if (act == GC_ACT_SIGMOID)
            for (int64_t i = 0; i < n; i++) y[i] = (T)fabs((double)y[i]);
        T *g = SFX(vec)(n, -1, 1), *dx = xmalloc(sizeof(T) * n);
        check_int("act_backward status", SFX(gc_act_backward)(act, n, y, g, dx, (T)alpha), GC_K_OK);
        for (int64_t i = 0; i < n; i++) {
            const double yv = y[i], gv = g[i];
            const double want = act == GC_ACT_RELU ? gv * (yv > 0) : act == GC_ACT_LEAKY_RELU ? gv * (yv > 0 ? 1 : alpha)
                              : act == GC_ACT_SIGMOID ? gv * yv * (1 - yv) : act == GC_ACT_TANH ? gv * (1 - yv * yv)
                              : act == GC_ACT_ELU ? gv * (yv > 0 ? 1 : yv + alpha) : gv;
            check_close("act_backward", act * 100 + (long)i, dx[i], want, TOL);
        }
        free(y);
        free(g);
        free(dx);
    }
}

/* ---- broadcasting binary ops: a (3, 4) with b (4,) broadcast along rows, and a scalar ---- */
static void SFX(test_binary)(void) {
    const int64_t shape[2] = {3, 4}, sa[2] = {4, 1}, sb[2] = {0, 1}, sbt[2] = {1, 0};
    T *a = SFX(vec)(12, 0.5, 2), *b = SFX(vec)(4, 0.5, 2), *c = SFX(vec)(3, 0.5, 2), *out = xmalloc(sizeof(T) * 12);
    for (int k = 0; k < COUNT(BINARY_OPS); k++) {
        const int op = BINARY_OPS[k];
        check_int("binary status", SFX(gc_binary)(op, 2, shape, a, sa, b, sb, out), GC_K_OK);
        for (int64_t i = 0; i < 12; i++) check_close("binary row-broadcast", op * 100 + (long)i, out[i], binary_ref(op, a[i], b[i % 4]), TOL);
        check_int("binary status", SFX(gc_binary)(op, 2, shape, c, sbt, a, sa, out), GC_K_OK);
        for (int64_t i = 0; i < 12; i++) check_close("binary column-broadcast", op * 100 + (long)i, out[i], binary_ref(op, c[i / 4], a[i]), TOL);
    }
    T s1 = 3, s2 = 4, r = 0;
    check_int("binary scalar", SFX(gc_binary)(GC_B_MUL, 0, shape, &s1, sa, &s2, sb, &r), GC_K_OK);
    check_close("binary scalar", 0, r, 12, TOL);
    int64_t big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    check_int("binary ndim > 8", SFX(gc_binary)(GC_B_ADD, 9, big, a, big, b, big, out), GC_K_EINVAL);
    check_int("binary given a unary op", SFX(gc_binary)(GC_U_EXP, 2, shape, a, sa, b, sb, out), GC_K_EINVAL);
    free(a);
    free(b);
    free(c);
    free(out);
}

/* ---- reductions of the middle axis ---- */
static void SFX(test_reduce)(void) {
    const int64_t outer = 2, n = 5, inner = 3;
    T *x = SFX(vec)(outer * n * inner, -2, 2), *y = xmalloc(sizeof(T) * outer * inner);
    for (int op = GC_R_SUM; op <= GC_R_MAX; op++) {
        check_int("reduce status", SFX(gc_reduce)(op, outer, n, inner, x, y), GC_K_OK);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++) {
                double s = 0, m = -INFINITY;
                for (int64_t k = 0; k < n; k++) {
                    const double v = x[(o * n + k) * inner + i];
                    s += v;
                    m = v > m ? v : m;
                }
                check_close("reduce", op * 100 + (long)(o * inner + i), y[o * inner + i], op == GC_R_SUM ? s : op == GC_R_MEAN ? s / n : m, TOL);
            }
        check_int("reduce n = 0", SFX(gc_reduce)(op, outer, 0, inner, x, y), GC_K_OK);
        check_close("reduce n = 0", op, y[0], op == GC_R_SUM ? 0.0 : op == GC_R_MEAN ? NAN : -INFINITY, TOL);
    }
    /* a long reduction (pairwise summation over several blocks) */
    const int64_t m = 10007;
    T *z = SFX(vec)(m, 0, 1), zs = 0;
    double s = 0;
    for (int64_t i = 0; i < m; i++) s += z[i];
    SFX(gc_reduce)(GC_R_SUM, 1, m, 1, z, &zs);
    check_close("reduce long sum", 0, zs, s, sizeof(T) == 4 ? 1e-5 : 1e-12);
    free(x);
    free(y);
    free(z);
}

/* ---- softmax, log-softmax and their backward ---- */
static void SFX(test_softmax)(void) {
    const int64_t rows = 4, cols = 5;
    T *x = SFX(vec)(rows * cols, -3, 3), *y = xmalloc(sizeof(T) * rows * cols), *g = SFX(vec)(rows * cols, -1, 1);
    T *dx = xmalloc(sizeof(T) * rows * cols);
    for (int64_t j = 0; j < cols; j++) x[3 * cols + j] = (T)-INFINITY; /* an all -inf row gives NaN */
    for (int lg = 0; lg < 2; lg++) {
        check_int("softmax status", SFX(gc_softmax)(rows, cols, x, y, lg), GC_K_OK);
        for (int64_t r = 0; r < rows; r++) {
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < cols; j++) mx = fmax(mx, x[r * cols + j]);
            for (int64_t j = 0; j < cols; j++) s += exp(x[r * cols + j] - mx);
            for (int64_t j = 0; j < cols; j++) {
                const double want = r == 3 ? NAN : lg ? x[r * cols + j] - mx - log(s) : exp(x[r * cols + j] - mx) / s;
                check_close(lg ? "log_softmax" : "softmax", (long)(r * cols + j), y[r * cols + j], want, TOL);
            }
        }
        check_int("softmax backward status", SFX(gc_softmax_backward)(3, cols, y, g, dx, lg), GC_K_OK);
        for (int64_t r = 0; r < 3; r++) {
            double dot = 0, gs = 0;
            for (int64_t j = 0; j < cols; j++) {
                dot += (double)g[r * cols + j] * y[r * cols + j];
                gs += g[r * cols + j];
            }
            for (int64_t j = 0; j < cols; j++) {
                const double yv = y[r * cols + j], gv = g[r * cols + j];
                check_close("softmax backward", (long)(r * cols + j), dx[r * cols + j], lg ? gv - exp(yv) * gs : yv * (gv - dot), TOL);
            }
        }
    }
    free(x);
    free(y);
    free(g);
    free(dx);
}

/* ---- softmax cross-entropy and BCE on logits ---- */
static void SFX(test_losses)(void) {
    const int64_t rows = 4, cols = 3;
    T *z = SFX(vec)(rows * cols, -3, 3), *dz = xmalloc(sizeof(T) * rows * cols), loss = 0;
    int64_t *labels = xmalloc(sizeof(int64_t) * rows);
    const int64_t lab[4] = {0, 2, 1, 2};
    memcpy(labels, lab, sizeof lab);
    check_int("sce fwd status", SFX(gc_softmax_ce_fwd)(rows, cols, z, labels, &loss), 0);
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < cols; j++) mx = fmax(mx, z[r * cols + j]);
        for (int64_t j = 0; j < cols; j++) s += exp(z[r * cols + j] - mx);
        total += mx + log(s) - z[r * cols + labels[r]];
        for (int64_t j = 0; j < cols; j++) dz[r * cols + j] = (T)(exp(z[r * cols + j] - mx) / s);
    }
    check_close("sce fwd", 0, loss, total / rows, TOL);
    T *dl = xmalloc(sizeof(T) * rows * cols);
    check_int("sce bwd status", SFX(gc_softmax_ce_bwd)(rows, cols, z, labels, (T)2, dl), 0);
    for (int64_t i = 0; i < rows * cols; i++)
        check_close("sce bwd", (long)i, dl[i], (dz[i] - (i % cols == labels[i / cols])) * 2.0 / rows, TOL);
    labels[2] = 3; /* out of range: row 2 -> status 3, nothing written */
    loss = 7;
    check_int("sce bad label", SFX(gc_softmax_ce_fwd)(rows, cols, z, labels, &loss), 3);
    check_close("sce bad label leaves loss", 0, loss, 7, 0);
    labels[2] = -1;
    check_int("sce negative label", SFX(gc_softmax_ce_bwd)(rows, cols, z, labels, (T)1, dl), 3);
    check_int("sce 0 rows", SFX(gc_softmax_ce_fwd)(0, cols, z, labels, &loss), 0);
    check_close("sce 0 rows", 0, loss, NAN, 0);

    const int64_t n = 9;
    T *x = SFX(vec)(n, -4, 4), *t = SFX(vec)(n, 0, 1), *dx = xmalloc(sizeof(T) * n);
    check_int("bce fwd status", SFX(gc_bce_logits_fwd)(n, x, t, &loss), GC_K_OK);
    double b = 0;
    for (int64_t i = 0; i < n; i++) b += fmax(x[i], 0) - (double)x[i] * t[i] + log1p(exp(-fabs((double)x[i])));
    check_close("bce fwd", 0, loss, b / n, TOL);
    check_int("bce bwd status", SFX(gc_bce_logits_bwd)(n, x, t, (T)3, dx), GC_K_OK);
    for (int64_t i = 0; i < n; i++) check_close("bce bwd", (long)i, dx[i], (1 / (1 + exp(-(double)x[i])) - t[i]) * 3.0 / n, TOL);
    check_int("bce 0", SFX(gc_bce_logits_fwd)(0, x, t, &loss), GC_K_OK);
    check_close("bce 0", 0, loss, NAN, 0);
    free(z);
    free(dz);
    free(dl);
    free(labels);
    free(x);
    free(t);
    free(dx);
}

/* ---- conv2d forward and backward against naive loops ---- */
static void SFX(test_conv_case)(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    const int64_t OH = out_size(H, KH, sh, ph), OW = out_size(W, KW, sw, pw);
    const int64_t nx = N * C * H * W, nw = O * C * KH * KW, ny = N * O * OH * OW;
    T *x = SFX(vec)(nx, -1, 1), *w = SFX(vec)(nw, -1, 1), *bias = SFX(vec)(O, -1, 1), *y = xmalloc(sizeof(T) * ny);
    T *gy = SFX(vec)(ny, -1, 1), *gx = xmalloc(sizeof(T) * nx), *gw = xmalloc(sizeof(T) * nw);
    double *rgx = calloc((size_t)(nx ? nx : 1), sizeof(double)), *rgw = calloc((size_t)nw, sizeof(double));
    check_int("conv fwd status", SFX(gc_conv2d_fwd)(N, C, H, W, O, KH, KW, sh, sw, ph, pw, x, w, bias, y), GC_K_OK);
    check_int("conv bwd input status", SFX(gc_conv2d_bwd_input)(N, C, H, W, O, KH, KW, sh, sw, ph, pw, w, gy, gx), GC_K_OK);
    check_int("conv bwd weight status", SFX(gc_conv2d_bwd_weight)(N, C, H, W, O, KH, KW, sh, sw, ph, pw, x, gy, gw), GC_K_OK);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t yi = ((n * O + o) * OH + oh) * OW + ow;
                    double s = bias[o];
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                const int64_t ih = oh * sh - ph + kh, iw = ow * sw - pw + kw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                const int64_t xi = ((n * C + c) * H + ih) * W + iw, wi = ((o * C + c) * KH + kh) * KW + kw;
                                s += (double)x[xi] * w[wi];
                                rgx[xi] += (double)w[wi] * gy[yi];
                                rgw[wi] += (double)x[xi] * gy[yi];
                            }
                    check_close("conv fwd", (long)yi, y[yi], s, TOL * 5);
                }
    for (int64_t i = 0; i < nx; i++) check_close("conv bwd input", (long)i, gx[i], rgx[i], TOL * 5);
    for (int64_t i = 0; i < nw; i++) check_close("conv bwd weight", (long)i, gw[i], rgw[i], TOL * 5);
    free(x);
    free(w);
    free(bias);
    free(y);
    free(gy);
    free(gx);
    free(gw);
    free(rgx);
    free(rgw);
}

static void SFX(test_conv)(void) {
    SFX(test_conv_case)(2, 2, 5, 6, 3, 3, 2, 2, 1, 1, 1);
    SFX(test_conv_case)(2, 3, 4, 4, 2, 1, 1, 1, 1, 0, 0); /* 1x1, stride 1, no padding: no im2col */
    SFX(test_conv_case)(1, 1, 7, 7, 4, 3, 3, 3, 3, 2, 2);
    SFX(test_conv_case)(0, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1); /* empty batch: gw is zero-filled */
    T v = 0;
    check_int("conv kernel larger than input", SFX(gc_conv2d_fwd)(1, 1, 2, 2, 1, 3, 3, 1, 1, 0, 0, &v, &v, NULL, &v), GC_K_EINVAL);
    check_int("conv stride 0", SFX(gc_conv2d_fwd)(1, 1, 2, 2, 1, 1, 1, 0, 1, 0, 0, &v, &v, NULL, &v), GC_K_EINVAL);
}

/* ---- max and average pooling, forward and backward ---- */
static void SFX(test_pool)(void) {
    const int64_t N = 2, C = 2, H = 5, W = 6, kh = 2, kw = 3, sh = 2, sw = 2, ph = 1, pw = 1;
    const int64_t OH = out_size(H, kh, sh, ph), OW = out_size(W, kw, sw, pw), nx = N * C * H * W, ny = N * C * OH * OW;
    T *x = SFX(vec)(nx, -1, 1), *y = xmalloc(sizeof(T) * ny), *gy = SFX(vec)(ny, -1, 1), *gx = xmalloc(sizeof(T) * nx);
    double *rgx = xmalloc(sizeof(double) * nx);
    for (int max = 0; max < 2; max++) {
        check_int("pool fwd", max ? SFX(gc_maxpool2d_fwd)(N, C, H, W, kh, kw, sh, sw, ph, pw, x, y)
                                  : SFX(gc_avgpool2d_fwd)(N, C, H, W, kh, kw, sh, sw, ph, pw, x, y), GC_K_OK);
        check_int("pool bwd", max ? SFX(gc_maxpool2d_bwd)(N, C, H, W, kh, kw, sh, sw, ph, pw, x, gy, gx)
                                  : SFX(gc_avgpool2d_bwd)(N, C, H, W, kh, kw, sh, sw, ph, pw, gy, gx), GC_K_OK);
        for (int64_t i = 0; i < nx; i++) rgx[i] = 0;
        for (int64_t p = 0; p < N * C; p++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t yi = (p * OH + oh) * OW + ow;
                    double s = 0, m = -INFINITY;
                    int64_t arg = -1;
                    for (int64_t a = 0; a < kh; a++)
                        for (int64_t b = 0; b < kw; b++) {
                            const int64_t ih = oh * sh - ph + a, iw = ow * sw - pw + b;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            const int64_t xi = (p * H + ih) * W + iw;
                            s += x[xi];
                            if (x[xi] > m) {
                                m = x[xi];
                                arg = xi;
                            }
                            if (!max) rgx[xi] += (double)gy[yi] / (kh * kw);
                        }
                    if (max && arg >= 0) rgx[arg] += gy[yi];
                    check_close(max ? "maxpool fwd" : "avgpool fwd", (long)yi, y[yi], max ? m : s / (kh * kw), TOL);
                }
        for (int64_t i = 0; i < nx; i++) check_close(max ? "maxpool bwd" : "avgpool bwd", (long)i, gx[i], rgx[i], TOL);
    }
    T v = 0;
    check_int("pool kernel 0", SFX(gc_maxpool2d_fwd)(1, 1, 2, 2, 0, 1, 1, 1, 0, 0, &v, &v), GC_K_EINVAL);
    free(x);
    free(y);
    free(gy);
    free(gx);
    free(rgx);
}

/* ---- fused elementwise: out = relu((a * b + c) * 0.5), c a scalar input; n spans several blocks ---- */
static void SFX(test_fused)(void) {
    const int64_t n = 3 * GC_FUSED_BLOCK + 17;
    T *a = SFX(vec)(n, -2, 2), *b = SFX(vec)(n, -2, 2), *c = SFX(vec)(1, -1, 1), *out = xmalloc(sizeof(T) * n);
    const T *in[3] = {a, b, c};
    const int64_t in_slot[3] = {-1, -1, 0};
    const double fconst[2] = {0.0, 0.5};
    const int64_t instr[] = {
        GC_F_CONST, GC_FK_SCALAR, 1, GC_FK_SCALAR, 0, GC_FK_SCALAR, 0, 1,
        GC_F_MUL, GC_FK_VREG, 0, GC_FK_INPUT, 0, GC_FK_INPUT, 1, 0,
        GC_F_ADD, GC_FK_VREG, 0, GC_FK_VREG, 0, GC_FK_SCALAR, 0, 0,
        GC_F_MUL, GC_FK_VREG, 1, GC_FK_VREG, 0, GC_FK_SCALAR, 1, 0,
        GC_F_RELU, GC_FK_OUT, 0, GC_FK_VREG, 1, GC_FK_VREG, 1, 0,
    };
    const int64_t ninstr = sizeof instr / sizeof instr[0] / GC_FUSED_INSTR_WORDS;
    check_int("fused status", SFX(gc_fused)(n, 3, in, in_slot, ninstr, instr, 2, 2, fconst, 2, out), GC_K_OK);
    for (int64_t i = 0; i < n; i++) {
        const double v = ((double)a[i] * b[i] + c[0]) * 0.5;
        check_close("fused", (long)i, out[i], v > 0 ? v : 0, TOL);
    }
    int64_t bad[sizeof instr / sizeof instr[0]];
    memcpy(bad, instr, sizeof bad);
    bad[8 + 4] = 5; /* input index out of range */
    check_int("fused bad program", SFX(gc_fused)(n, 3, in, in_slot, ninstr, bad, 2, 2, fconst, 2, out), GC_K_EINVAL);
    free(a);
    free(b);
    free(c);
    free(out);
}

/* ---- the interpreter: a hand-written program over the pointer table and an arena ---- */
#define REF(kind, v) ((int64_t)(((int64_t)(v) << 2) | (kind)))
static void SFX(test_exec)(void) {
    const int64_t M = 3, N = 4, K = 5;
    T *A = SFX(vec)(M * K, -1, 1), *B = SFX(vec)(K * N, -1, 1), *bias = SFX(vec)(N, -1, 1);
    T *colsum = xmalloc(sizeof(T) * N), *trans = xmalloc(sizeof(T) * N * M), *filled = xmalloc(sizeof(T) * 5);
    T *scaled = xmalloc(sizeof(T) * M * N), *soft = xmalloc(sizeof(T) * M * N), *gemv = xmalloc(sizeof(T) * N);
    void *other = xmalloc(8 * N); /* colsum cast to the other float type */
    void *ext[10] = {A, B, bias, colsum, trans, filled, other, scaled, soft, gemv};
    const size_t arena_bytes = 512;
    uint8_t *arena = xmalloc(arena_bytes + 63);
    const double fconst[3] = {0.0, 2.5, 0.1};
    const int64_t ARENA_H = REF(GC_REF_ARENA, 0), ARENA_E = REF(GC_REF_ARENA, 128);
    const int64_t code[] = {
        /* h = relu(A @ B + bias) into the arena */
        GC_OP_GEMM, 18, 0, DT, 0, 0, M, N, K, K, N, N, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 1), ARENA_H,
        REF(GC_REF_EXT, 2), GC_ACT_RELU, 2,
        /* e = exp(h) */
        GC_OP_UNARY, 9, 1, DT, GC_U_EXP, M * N, ARENA_H, ARENA_E, 0,
        /* colsum = e.sum(axis=0) */
        GC_OP_REDUCE, 10, 2, DT, GC_R_SUM, 1, M, N, ARENA_E, REF(GC_REF_EXT, 3),
        /* trans = h.T (strided copy) */
        GC_OP_COPY, 12, 3, DT, (int64_t)sizeof(T), 2, ARENA_H, REF(GC_REF_EXT, 4), N, M, 1, N,
        /* filled = 2.5 */
        GC_OP_FILL, 7, 4, DT, 5, REF(GC_REF_EXT, 5), 1,
        /* other = (other float type) colsum */
        GC_OP_CAST, 8, 5, OTHER_DT, DT, N, REF(GC_REF_EXT, 3), REF(GC_REF_EXT, 6),
        /* scaled = h * bias (bias broadcast along rows) */
        GC_OP_BINARY, 15, 6, DT, GC_B_MUL, 2, ARENA_H, REF(GC_REF_EXT, 2), REF(GC_REF_EXT, 7), M, N, N, 1, 0, 1,
        /* soft = softmax(h) */
        GC_OP_SOFTMAX, 9, 7, DT, M, N, ARENA_H, REF(GC_REF_EXT, 8), 0,
        /* gemv = A[0] @ B (M == 1: the matrix-vector path) */
        GC_OP_GEMM, 18, 8, DT, 0, 0, 1, N, K, K, N, N, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 1), REF(GC_REF_EXT, 9),
        -1, GC_ACT_IDENTITY, 0,
    };
    const int64_t ncode = sizeof code / sizeof code[0];
    check_int("exec status", gc_exec(code, ncode, fconst, 3, NULL, ext, arena), 0);
    double h[12];
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = bias[j];
            for (int64_t k = 0; k < K; k++) s += (double)A[i * K + k] * B[k * N + j];
            h[i * N + j] = s > 0 ? s : 0;
        }
    for (int64_t j = 0; j < N; j++) {
        double s = 0, g = 0;
        for (int64_t i = 0; i < M; i++) s += exp(h[i * N + j]);
        for (int64_t k = 0; k < K; k++) g += (double)A[k] * B[k * N + j];
        check_close("exec reduce", (long)j, colsum[j], s, TOL * 5);
        check_close("exec cast", (long)j, DT == GC_DT_F32 ? ((double *)other)[j] : ((float *)other)[j], s, 1e-4);
        check_close("exec gemv", (long)j, gemv[j], g, TOL * 5);
        for (int64_t i = 0; i < M; i++) {
            check_close("exec transpose", (long)(j * M + i), trans[j * M + i], h[i * N + j], TOL * 5);
            check_close("exec binary", (long)(i * N + j), scaled[i * N + j], h[i * N + j] * bias[j], TOL * 5);
        }
    }
    for (int64_t i = 0; i < M; i++) {
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < N; j++) mx = fmax(mx, h[i * N + j]);
        for (int64_t j = 0; j < N; j++) s += exp(h[i * N + j] - mx);
        for (int64_t j = 0; j < N; j++) check_close("exec softmax", (long)(i * N + j), soft[i * N + j], exp(h[i * N + j] - mx) / s, TOL * 5);
    }
    for (int i = 0; i < 5; i++) check_close("exec fill", i, filled[i], 2.5, 0);

    /* errors: a bad label at step 41 comes back as (42 << 32) | (row + 1); nothing else runs */
    int64_t *labels = xmalloc(sizeof(int64_t) * M);
    labels[0] = 0;
    labels[1] = N;
    labels[2] = 1;
    void *ext2[3] = {A, labels, filled};
    const int64_t sce[] = {GC_OP_SOFTMAX_CROSS_ENTROPY, 9, 41, DT, M, N, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 1), REF(GC_REF_EXT, 2)};
    check_int("exec bad label", gc_exec(sce, 9, fconst, 3, NULL, ext2, arena), ((int64_t)42 << 32) | 2);
    const int64_t short_header[] = {GC_OP_FILL, 2, 0, DT};
    check_int("exec malformed", gc_exec(short_header, 4, fconst, 3, NULL, ext, arena), (int64_t)(uint32_t)GC_E_BADCODE);
    const int64_t bad_dtype[] = {GC_OP_UNARY, 9, 7, GC_DT_I32, GC_U_EXP, 1, ARENA_H, ARENA_E, 0};
    check_int("exec bad dtype", gc_exec(bad_dtype, 9, fconst, 3, NULL, ext, arena), ((int64_t)8 << 32) | (uint32_t)GC_E_BADDTYPE);
    const int64_t bad_op[] = {99, 4, 3, DT};
    check_int("exec bad op", gc_exec(bad_op, 4, fconst, 3, NULL, ext, arena), ((int64_t)4 << 32) | (uint32_t)GC_E_BADOP);
    const int64_t too_long[] = {GC_OP_FILL, 50, 0, DT, 1, REF(GC_REF_EXT, 5), 1};
    check_int("exec length past the end", gc_exec(too_long, 7, fconst, 3, NULL, ext, arena), (int64_t)(uint32_t)GC_E_BADCODE);
    const int64_t missing_operand[] = {GC_OP_UNARY, 6, 0, DT, GC_U_EXP, 1};
    check_int("exec missing operands", gc_exec(missing_operand, 6, fconst, 3, NULL, ext, arena), ((int64_t)1 << 32) | (uint32_t)GC_E_BADCODE);
    check_int("exec empty program", gc_exec(code, 0, fconst, 3, NULL, ext, arena), 0);
    free(labels);
    free(A);
    free(B);
    free(bias);
    free(colsum);
    free(trans);
    free(filled);
    free(scaled);
    free(soft);
    free(gemv);
    free(other);
    free(arena);
}

/* ---- GC_OP_SIDE_BY_SIDE: two independent GEMMs, one per thread, each large enough that its own
 * parallel region (nested, so serial) would otherwise split it ---- */
static void SFX(test_side_by_side)(void) {
    const int64_t M = 70, N = 90, K = 80;
    T *A = SFX(vec)(M * K, -1, 1), *B = SFX(vec)(K * N, -1, 1), *D = SFX(vec)(N * K, -1, 1);
    T *Y1 = xmalloc(sizeof(T) * M * N), *Y2 = xmalloc(sizeof(T) * M * N);
    void *ext[5] = {A, B, D, Y1, Y2};
    const double fconst[1] = {0.0};
    const int64_t code[] = {
        GC_OP_SIDE_BY_SIDE, 4 + 18 + 18, 0, 0,
        /* Y1 = A @ B */
        GC_OP_GEMM, 18, 0, DT, 0, 0, M, N, K, K, N, N, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 1), REF(GC_REF_EXT, 3),
        -1, GC_ACT_IDENTITY, 0,
        /* Y2 = relu(A @ D^T), D stored (N, K) */
        GC_OP_GEMM, 18, 1, DT, 0, 1, M, N, K, K, K, N, REF(GC_REF_EXT, 0), REF(GC_REF_EXT, 2), REF(GC_REF_EXT, 4),
        -1, GC_ACT_RELU, 0,
    };
    check_int("side by side status", gc_exec(code, sizeof code / sizeof code[0], fconst, 1, NULL, ext, NULL), 0);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s1 = 0, s2 = 0;
            for (int64_t k = 0; k < K; k++) {
                s1 += (double)A[i * K + k] * B[k * N + j];
                s2 += (double)A[i * K + k] * D[j * K + k];
            }
            check_close("side by side first", (long)(i * N + j), Y1[i * N + j], s1, TOL * 5);
            check_close("side by side second", (long)(i * N + j), Y2[i * N + j], s2 > 0 ? s2 : 0, TOL * 5);
        }
    free(A);
    free(B);
    free(D);
    free(Y1);
    free(Y2);
}
#undef REF

static void SFX(run_all)(void) {
    SFX(test_gemm)();
    SFX(test_vmath)();
    SFX(test_unary)();
    SFX(test_act_backward)();
    SFX(test_binary)();
    SFX(test_reduce)();
    SFX(test_softmax)();
    SFX(test_losses)();
    SFX(test_conv)();
    SFX(test_pool)();
    SFX(test_fused)();
    SFX(test_exec)();
    SFX(test_side_by_side)();
}

#endif /* DRIVER_TYPED */
