/* fused_elementwise: a straight-line elementwise program evaluated in one pass over memory.
 *
 * The output (n elements) is computed block by block (GC_FUSED_BLOCK elements); intermediate
 * values live in a small register file on the stack, so a chain of k elementwise ops reads its
 * inputs once and writes the output once instead of making k passes over memory.
 *
 * Operands: inputs are full-size (n elements) or scalars. Values whose operands are all scalars
 * are computed once, before the blocks, into scalar slots. Each instruction is 8 words:
 *   op (gc_fused_op), dst_kind, dst, a_kind, a, b_kind, b, param_idx
 * with kinds gc_fused_kind: a vector register, a full input (index into `in`), a scalar slot,
 * or (dst only) the output. param_idx indexes fconst (leaky slope, exponent, constant value).
 * in_slot[i] is -1 for a full-size input, else the scalar slot that receives in[i][0].
 * Only the last instruction may write the output; if it writes a scalar slot instead (every
 * input scalar), the output is filled with that value. out may equal a full-size input.
 *
 * Results match graphc.ops.fused.run_program (NumPy): max/min propagate NaN, relu_grad is
 * g * (y > 0), exp/log/sigmoid/tanh use the kernels.h vector math.
 * Returns GC_K_OK, or GC_K_EINVAL for an index out of range (nothing written).
 */
#pragma once
#include <stdint.h>

enum gc_fused_op {
    /* unary: a */
    GC_F_NEG = 0, GC_F_EXP = 1, GC_F_LOG = 2, GC_F_SQRT = 3, GC_F_ABS = 4, GC_F_SIGN = 5,
    GC_F_SIGMOID = 6, GC_F_TANH = 7, GC_F_RELU = 8, GC_F_LEAKY_RELU = 9, GC_F_POWER = 10,
    GC_F_CONST = 11, /* no operands: dst = param (always a scalar slot) */
    /* binary: a, b */
    GC_F_ADD = 12, GC_F_SUB = 13, GC_F_MUL = 14, GC_F_DIV = 15, GC_F_MAXIMUM = 16, GC_F_MINIMUM = 17,
    /* activation gradients from the output y = a and upstream g = b */
    GC_F_RELU_GRAD = 18, GC_F_LEAKY_RELU_GRAD = 19, GC_F_SIGMOID_GRAD = 20, GC_F_TANH_GRAD = 21
};

enum gc_fused_kind { GC_FK_VREG = 0, GC_FK_INPUT = 1, GC_FK_SCALAR = 2, GC_FK_OUT = 3 };

enum { GC_FUSED_BLOCK = 256, GC_FUSED_MAX_VREGS = 24, GC_FUSED_MAX_SCALARS = 256, GC_FUSED_INSTR_WORDS = 8 };

int gc_fused_f32(int64_t n, int64_t nin, const float *const *in, const int64_t *in_slot,
                 int64_t ninstr, const int64_t *instr, int64_t nvreg, int64_t nscalar,
                 const double *fconst, int64_t nfconst, float *out);
int gc_fused_f64(int64_t n, int64_t nin, const double *const *in, const int64_t *in_slot,
                 int64_t ninstr, const int64_t *instr, int64_t nvreg, int64_t nscalar,
                 const double *fconst, int64_t nfconst, double *out);
