/* graphc C kernels (API in kernels.h): elementwise, broadcasting binary ops, reductions, softmax,
 * fused losses, conv2d and pooling, for float32 and float64.
 *
 * The kernels are written once, as ordinary C over a type T, in kernels_ops.inc and
 * kernels_conv.inc; this file includes each template twice, once per precision. Inside a
 * template:
 *   T        element type (float / double)
 *   ACC      accumulator for loss, softmax and cancellation-prone sums: double for both
 *            types (float32 losses are summed in double; some code relies on ACC == double)
 *   SFX(f)   the name f with the type suffix (f_f32 / f_f64)
 *   GEMM     gc_sgemm / gc_dgemm
 * <tgmath.h> makes exp/log/pow/sqrt/fabs pick expf etc. for float arguments.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <tgmath.h>
#ifdef _OPENMP
#include <omp.h>
#else /* built without OpenMP (e.g. Apple clang): the pragmas are ignored, one thread */
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#pragma GCC diagnostic ignored "-Wunused-variable" /* the thread counts nobody reads then */
#endif
#include "gemm.h"
#include "kernels.h"

/* Below this many elements (or multiply-adds) a kernel runs on the calling thread: starting an
 * OpenMP team costs a few microseconds, which is more than small kernels take. */
#define GC_PAR_MIN 65536
/* Work unit handed to a thread by the blocked elementwise loops. */
#define GC_BLOCK 16384
/* Elements processed per stack buffer in the row kernels (softmax, losses). */
#define GC_CHUNK 256

/* Thread count for `work` units: 1 when small, else gc_get_num_threads() (gemm.h). */
static int threads_for(int64_t work) {
    if (work < GC_PAR_MIN) return 1;
    int nt = gc_get_num_threads();
    return nt > 1 ? nt : 1;
}

/* Like threads_for, but never more threads than independent items. */
static int threads_for_items(int64_t items, int64_t work) {
    int nt = threads_for(work);
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

/* ---------------------------------- float32 ---------------------------------- */
#define T float
#define ACC double
#define SFX(name) name##_f32
#define GEMM gc_sgemm
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
#include "kernels_ops.inc"
#include "kernels_conv.inc"
#undef T
#undef ACC
#undef SFX
#undef GEMM
