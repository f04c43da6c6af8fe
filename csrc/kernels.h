/* graphc C kernels (besides GEMM, see gemm.h): vector math, elementwise, broadcasting binary ops,
 * reductions, softmax, fused losses, conv2d and pooling.
 *
 * Every kernel exists for float32 (_f32) and float64 (_f64); the _f64 twin has the same arguments
 * with double in place of float. All sizes are int64_t, all arrays are dense row-major (C order)
 * unless strides are passed, and strides are counted in ELEMENTS, not bytes.
 *
 * Return value of the int-returning kernels (gc_status):
 *   GC_K_OK (0)       done;
 *   GC_K_EINVAL (-1)  bad argument (unknown op, negative size, ndim out of range, empty conv
 *                     output, ...): nothing was written;
 *   GC_K_ENOMEM (-2)  scratch allocation failed: the output is unspecified;
 *   > 0               only gc_softmax_ce_*: (row + 1) of the first label outside [0, cols).
 * Size-0 inputs are valid and write nothing (except where documented: reductions over n == 0,
 * losses over 0 rows, gradients that must be zero-filled).
 *
 * Threads: large kernels run on graphc's thread pool with gc_get_num_threads() threads
 * (threads.h). No kernel keeps state between calls (scratch is malloc'ed per call), so two threads
 * may call at once.
 *
 * SIMD: exp/log/sigmoid/tanh and the vectorised ops of elementwise.def have AVX2+FMA versions
 * (vmath.inc) picked at run time (CPU check once at load).
 * gc_kernels_set_simd(0) forces the portable libm path (used by the tests to check both);
 * this flag is separate from gemm.h's gc_set_simd_enabled, which only steers the GEMM.
 */
#pragma once
#include <stdint.h>
#include "gemm.h" /* gc_act */

enum gc_status { GC_K_OK = 0, GC_K_EINVAL = -1, GC_K_ENOMEM = -2 };

/* ---- run-time SIMD selection for the math kernels ---- */
/* 1 when the AVX2+FMA math paths are in use, 0 when the portable (libm) path is. */
int gc_kernels_simd_level(void);
/* 0 forces the portable path; 1 (default) uses AVX2+FMA when the CPU has both. */
void gc_kernels_set_simd(int enabled);

/* ---- vector math on contiguous arrays, single-threaded, y may equal x ----
 * Accuracy (max relative error, whole range): float32 about 2 ulp (< 5e-7),
 * float64 about 3 ulp (< 1e-15). NaN propagates; exp overflows to inf and underflows through
 * subnormals to 0; log(0) = -inf, log(x < 0) = NaN; sigmoid and tanh saturate exactly to 0/1/-1;
 * sigmoid(x) for x < 0 is computed as e^x / (1 + e^x), so it stays accurate in relative terms. */
void gc_vexp_f32(int64_t n, const float *x, float *y);
void gc_vlog_f32(int64_t n, const float *x, float *y);
void gc_vsigmoid_f32(int64_t n, const float *x, float *y);
void gc_vtanh_f32(int64_t n, const float *x, float *y);
void gc_vexp_f64(int64_t n, const double *x, double *y);
void gc_vlog_f64(int64_t n, const double *x, double *y);
void gc_vsigmoid_f64(int64_t n, const double *x, double *y);
void gc_vtanh_f64(int64_t n, const double *x, double *y);

/* ---- elementwise op codes, generated from elementwise.def ----
 * One code space for every elementwise kernel: GC_U_<NAME> (gc_unary) and GC_B_<NAME> (gc_binary)
 * are the fused program codes GC_F_<NAME> of the same op under the name of the kernel taking them;
 * activations add GC_F_<NAME>_GRAD (their gradient from the output, see gc_act_backward) and
 * GC_ACT_<NAME> (gemm.h). Names follow graphc's op registry: the kernel of a node is
 * REGISTRY[op].kernel(attrs), upper-cased. gc_fused_arity (fused.h) tells the kinds apart. */
enum gc_elementwise_op {
    GC_F_CONST = 0, /* fused programs only: no operands, dst = param */
#define GC_EW_UNARY(NAME, EXPR) GC_F_##NAME, GC_U_##NAME = GC_F_##NAME,
#define GC_EW_ACT(NAME, EXPR, VEC, GRAD) GC_EW_UNARY(NAME, EXPR) GC_F_##NAME##_GRAD,
#define GC_EW_BINARY(NAME, EXPR) GC_F_##NAME, GC_B_##NAME = GC_F_##NAME,
#include "elementwise.def"
    GC_F_END /* one past the last code */
};

/* ---- elementwise unary: y[i] = op(x[i]); y may equal x ----
 * op a GC_U_ code (else GC_K_EINVAL); param: the op's parameter (leaky slope, exponent, beta of
 * softplus, alpha of elu), ignored otherwise. Every op propagates NaN. */
int gc_unary_f32(int op, int64_t n, const float *x, float *y, float param);
int gc_unary_f64(int op, int64_t n, const double *x, double *y, double param);

/* Activation backward from the activation's OUTPUT y (act is a gc_act from gemm.h):
 * identity: g; relu: g*(y>0); leaky: g*(y>0 ? 1 : param); sigmoid: g*y*(1-y); tanh: g*(1-y*y);
 * elu: g*(y>0 ? 1 : y+param) (the GRAD column of elementwise.def). dx may equal g or y. */
int gc_act_backward_f32(int act, int64_t n, const float *y, const float *g, float *dx, float param);
int gc_act_backward_f64(int act, int64_t n, const double *y, const double *g, double *dx, double param);

/* ---- binary elementwise with NumPy broadcasting ----
 * out (contiguous, shape out_shape[0..ndim)) = a op b, where a[i0..] is read at
 * sum_k i_k * a_strides[k] (0 on broadcast dims; any sign allowed), likewise b.
 * 0 <= ndim <= 8 (GC_BINARY_MAX_NDIM; callers collapse dims first, the kernel also merges
 * contiguous dims itself); ndim == 0 is a scalar. out may alias a or b when that operand has
 * out's shape and is contiguous (in place); other overlaps are not allowed. op is a GC_B_ code.
 * maximum/minimum propagate NaN like np.maximum/np.minimum. */
enum { GC_BINARY_MAX_NDIM = 8 };
int gc_binary_f32(int op, int ndim, const int64_t *out_shape, const float *a, const int64_t *a_strides,
                  const float *b, const int64_t *b_strides, float *out);
int gc_binary_f64(int op, int ndim, const int64_t *out_shape, const double *a, const int64_t *a_strides,
                  const double *b, const int64_t *b_strides, double *out);

/* ---- reductions of the middle axis: x (outer, n, inner) -> y (outer, inner) ----
 * Pairwise summation (like NumPy) in the input precision: relative error O(log n * eps).
 * n == 0: SUM gives 0, MEAN gives NaN, MAX gives -inf. MAX propagates NaN. */
enum gc_reduce_op { GC_R_SUM = 0, GC_R_MEAN = 1, GC_R_MAX = 2 };
int gc_reduce_f32(int op, int64_t outer, int64_t n, int64_t inner, const float *x, float *y);
int gc_reduce_f64(int op, int64_t outer, int64_t n, int64_t inner, const double *x, double *y);

/* ---- softmax over the last axis of (rows, cols); log != 0 gives log_softmax; y may equal x ----
 * Rows that are all -inf (or contain NaN / +inf) give NaN, like NumPy's max-shifted formula.
 * For float32 the row sums are accumulated in double. */
int gc_softmax_f32(int64_t rows, int64_t cols, const float *x, float *y, int log);
int gc_softmax_f64(int64_t rows, int64_t cols, const double *x, double *y, int log);
/* softmax: dx = y*(g - sum(g*y)); log_softmax: dx = g - exp(y)*sum(g). y is the forward OUTPUT.
 * dx may equal g. */
int gc_softmax_backward_f32(int64_t rows, int64_t cols, const float *y, const float *g, float *dx, int log);
int gc_softmax_backward_f64(int64_t rows, int64_t cols, const double *y, const double *g, double *dx, int log);

/* ---- fused losses, mean over the batch; float32 sums are accumulated in double ----
 * Softmax cross-entropy with integer labels: loss = mean_r(logsumexp(logits[r]) - logits[r, label_r]).
 * A row whose max logit is not finite (NaN, +inf, or all -inf) makes the loss NaN and its gradient
 * row NaN, as in NumPy and PyTorch; -inf logits in a row with a finite max are exact zeros of the
 * softmax (a -inf logit at the label gives a +inf loss).
 * All labels are checked before anything else is read or written: returns (r + 1) for the first
 * row whose label is outside [0, cols) (saturating at INT_MAX), else 0. rows == 0: *loss = NaN (mean of nothing), returns 0. */
int gc_softmax_ce_fwd_f32(int64_t rows, int64_t cols, const float *logits, const int64_t *labels, float *loss);
int gc_softmax_ce_fwd_f64(int64_t rows, int64_t cols, const double *logits, const int64_t *labels, double *loss);
/* dlogits = (softmax(logits) - onehot(labels)) * g / rows. Same label check and return codes. */
int gc_softmax_ce_bwd_f32(int64_t rows, int64_t cols, const float *logits, const int64_t *labels, float g,
                          float *dlogits);
int gc_softmax_ce_bwd_f64(int64_t rows, int64_t cols, const double *logits, const int64_t *labels, double g,
                          double *dlogits);
/* Both in one pass over the logits (each row's exps computed once): *loss as gc_softmax_ce_fwd and
 * dlogits as gc_softmax_ce_bwd, the same values. dlogits may equal logits. */
int gc_softmax_ce_fwd_grad_f32(int64_t rows, int64_t cols, const float *logits, const int64_t *labels, float g,
                               float *loss, float *dlogits);
int gc_softmax_ce_fwd_grad_f64(int64_t rows, int64_t cols, const double *logits, const int64_t *labels, double g,
                               double *loss, double *dlogits);
/* Binary cross-entropy on logits z with targets t: loss = mean(max(z,0) - z*t + log1p(exp(-|z|))).
 * n == 0: *loss = NaN. */
int gc_bce_logits_fwd_f32(int64_t n, const float *z, const float *t, float *loss);
int gc_bce_logits_fwd_f64(int64_t n, const double *z, const double *t, double *loss);
/* dz = (sigmoid(z) - t) * g / n; dz may equal z or t. */
int gc_bce_logits_bwd_f32(int64_t n, const float *z, const float *t, float g, float *dz);
int gc_bce_logits_bwd_f64(int64_t n, const double *z, const double *t, double g, double *dz);
/* dz = (sigmoid(z) - t) * scale (the bce_logits_grad op), sigmoid, difference and product in double
 * (rounded once to float for _f32); dz may equal z or t. */
int gc_bce_logits_grad_f32(int64_t n, const float *z, const float *t, double scale, float *dz);
int gc_bce_logits_grad_f64(int64_t n, const double *z, const double *t, double scale, double *dz);
/* Both at once, exp(-|z|) computed once per element: *loss as gc_bce_logits_fwd and dz as
 * gc_bce_logits_grad, bit for bit; dz may equal z or t (not loss). */
int gc_bce_logits_fwd_grad_f32(int64_t n, const float *z, const float *t, double scale, float *loss, float *dz);
int gc_bce_logits_fwd_grad_f64(int64_t n, const double *z, const double *t, double scale, double *loss,
                               double *dz);

/* ---- conv2d, NCHW, PyTorch layout and semantics (cross-correlation, zero padding) ----
 * x (N, C, H, W), w (O, C, KH, KW), bias (O) or NULL, y (N, O, OH, OW) with
 * OH = (H + 2*ph - KH) / sh + 1, OW = (W + 2*pw - KW) / sw + 1.
 * Requires sizes >= 0, KH, KW, sh, sw >= 1, ph, pw >= 0, and H + 2ph >= KH, W + 2pw >= KW
 * (OH, OW >= 1); otherwise GC_K_EINVAL and nothing is written. im2col + gc_sgemm/gc_dgemm with
 * per-call scratch of K*OH*OW elements per thread (K = C*KH*KW); 1x1/stride-1/no-pad skips im2col. */
int gc_conv2d_fwd_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                      const float *x, const float *w, const float *bias, float *y);
int gc_conv2d_fwd_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                      const double *x, const double *w, const double *bias, double *y);
/* gx (N, C, H, W) = col2im(W^T . gy), fully overwritten. */
int gc_conv2d_bwd_input_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            const float *w, const float *gy, float *gx);
int gc_conv2d_bwd_input_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                            const double *w, const double *gy, double *gx);
/* gw (O, C, KH, KW) = sum_n gy_n . im2col(x_n)^T, fully overwritten (zeros when N == 0).
 * The bias gradient is a plain reduction of gy over (N, OH, OW) (gc_reduce). */
int gc_conv2d_bwd_weight_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             const float *x, const float *gy, float *gw);
int gc_conv2d_bwd_weight_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             const double *x, const double *gy, double *gw);

/* ---- 2-D pooling, NCHW: x (N, C, H, W) -> y (N, C, OH, OW), OH = (H + 2*ph - kh) / sh + 1 (floor) ----
 * Same argument checks as conv2d. Max pooling treats padding as -inf (a window entirely in the
 * padding gives -inf) and propagates NaN; its backward recomputes the argmax from x and routes
 * the gradient to the FIRST maximum in row-major window order (PyTorch). Average pooling counts
 * the padding (count_include_pad=True): divisor kh*kw. Backward kernels overwrite all of gx. */
int gc_maxpool2d_fwd_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const float *x, float *y);
int gc_maxpool2d_fwd_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const double *x, double *y);
int gc_maxpool2d_bwd_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                         const float *x, const float *gy, float *gx);
int gc_maxpool2d_bwd_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                         const double *x, const double *gy, double *gx);
int gc_avgpool2d_fwd_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const float *x, float *y);
int gc_avgpool2d_fwd_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const double *x, double *y);
int gc_avgpool2d_bwd_f32(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const float *gy, float *gx);
int gc_avgpool2d_bwd_f64(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw, const double *gy, double *gx);
