/* fused_elementwise: a straight-line elementwise program evaluated in one pass over memory.
 *
 * The output (n elements) is computed block by block (GC_FUSED_BLOCK elements); intermediate
 * values live in a small register file on the stack, so a chain of k elementwise ops reads its
 * inputs once and writes the output once instead of making k passes over memory.
 *
 * Operands: inputs are full-size (n elements) or scalars. Values whose operands are all scalars
 * are computed once, before the blocks, into scalar slots. Each instruction is 8 words:
 *   op (a GC_F_ code), dst_kind, dst, a_kind, a, b_kind, b, param_idx
 * with kinds gc_fused_kind: a vector register, a full input (index into `in`), a scalar slot,
 * or (dst only) the output. param_idx indexes fconst (the op's parameter, or a constant's value).
 * in_slot[i] is -1 for a full-size input, else the scalar slot that receives in[i][0].
 * Only the last instruction may write the output; if it writes a scalar slot instead (every
 * input scalar), the output is filled with that value. out may equal a full-size input.
 *
 * Each instruction runs the same code as gc_unary / gc_binary / gc_act_backward for its op (the
 * switches generated from elementwise.def), so results match those kernels and
 * graphc.ops.fused.run_program (NumPy): maximum/minimum propagate NaN, relu_grad is g * (y > 0).
 * Returns GC_K_OK, or GC_K_EINVAL for an index out of range (nothing written).
 */
#pragma once
#include <stdint.h>
#include "kernels.h"

/* The op codes are GC_F_<NAME> of kernels.h (enum gc_elementwise_op, from elementwise.def).
 * Their number of operands: 0 for GC_F_CONST, 1 for unary ops, 2 for binary ops and activation
 * gradients (y = a, g = b); -1 for a code that is no fused op. */
int gc_fused_arity(int op);

enum gc_fused_kind { GC_FK_VREG = 0, GC_FK_INPUT = 1, GC_FK_SCALAR = 2, GC_FK_OUT = 3 };

enum { GC_FUSED_BLOCK = 256, GC_FUSED_MAX_VREGS = 24, GC_FUSED_MAX_SCALARS = 256, GC_FUSED_INSTR_WORDS = 8 };

int gc_fused_f32(int64_t n, int64_t nin, const float *const *in, const int64_t *in_slot,
                 int64_t ninstr, const int64_t *instr, int64_t nvreg, int64_t nscalar,
                 const double *fconst, int64_t nfconst, float *out);
int gc_fused_f64(int64_t n, int64_t nin, const double *const *in, const int64_t *in_slot,
                 int64_t ninstr, const int64_t *instr, int64_t nvreg, int64_t nscalar,
                 const double *fconst, int64_t nfconst, double *out);
