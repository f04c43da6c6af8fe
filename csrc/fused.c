/* fused_elementwise kernel (API and program format in fused.h).
 *
 * The per-op loops are written once over a type T in fused.inc, which this file includes once
 * per precision (the same scheme as kernels.c): T is the element type, SFX(f) the suffixed name.
 */
#include <math.h>
#include <stdint.h>
#include <tgmath.h>

#include "fused.h"
#include "gemm.h"
#include "kernels.h"

/* Below this many elements the program runs on the calling thread: starting an OpenMP team
 * costs microseconds, more than a short program over a small array takes. */
#define GC_FUSED_PAR_MIN 65536

static int fused_threads(int64_t n) {
    if (n < GC_FUSED_PAR_MIN) return 1;
    int nt = gc_get_num_threads();
    return nt > 1 ? nt : 1;
}

static int fused_is_unary(int64_t op) { return op >= GC_F_NEG && op <= GC_F_POWER; }
static int fused_is_binary(int64_t op) { return op >= GC_F_ADD && op <= GC_F_TANH_GRAD; }

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
        if (op == GC_F_CONST) {
            if (!dst_scalar) return GC_K_EINVAL;
        } else if (fused_is_unary(op)) {
            if (!fused_operand_ok(w[3], w[4], nin, in_slot, nvreg, nscalar)) return GC_K_EINVAL;
            /* a scalar result needs a scalar operand and a vector result a vector one */
            if (dst_scalar != (w[3] == GC_FK_SCALAR)) return GC_K_EINVAL;
        } else if (fused_is_binary(op)) {
            if (!fused_operand_ok(w[3], w[4], nin, in_slot, nvreg, nscalar) ||
                !fused_operand_ok(w[5], w[6], nin, in_slot, nvreg, nscalar))
                return GC_K_EINVAL;
            const int both_scalar = w[3] == GC_FK_SCALAR && w[5] == GC_FK_SCALAR;
            if (dst_scalar != both_scalar) return GC_K_EINVAL;
        } else {
            return GC_K_EINVAL;
        }
    }
    return GC_K_OK;
}

#define T float
#define SFX(name) name##_f32
#include "fused.inc"
#undef T
#undef SFX

#define T double
#define SFX(name) name##_f64
#include "fused.inc"
#undef T
#undef SFX
