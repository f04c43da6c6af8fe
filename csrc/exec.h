/* The plan interpreter: one C call runs a whole compiled graphc Plan (or a segment of one).
 *
 * graphc/backends/c.py lowers a Plan once into a flat int64 instruction array (`code`), a
 * double array of float attributes (`fconst`) and a byte pool of constants (`pool`).
 * gc_exec walks the instructions in order and calls the kernels of gemm.h / kernels.h / fused.h.
 *
 * Instruction layout (all words int64):
 *   [0] opcode (gc_exec_op)   [1] length in words, header included   [2] step index (for errors)
 *   [3] dtype (gc_exec_dtype) [4...] operands, one layout per opcode (see exec.c)
 *
 * Operand references are one word: -1 means "none" (optional bias); otherwise
 *   (value << 2) | kind, kind a gc_ref_kind:
 *   GC_REF_ARENA  byte offset into this call's arena (intermediates);
 *   GC_REF_POOL   byte offset into the constant pool;
 *   GC_REF_EXT    index into `ext`, the per-call pointer table (feeds, parameters, outputs).
 * The arena pointer is rounded up to 64 bytes inside gc_exec; the caller allocates 63 spare bytes.
 *
 * Return value: 0 on success, else ((step + 1) << 32) | (uint32_t)status, where step is the
 * failing instruction's step word (-1 when the code itself is malformed) and status is the
 * kernel's gc_status (> 0: first bad label row + 1 of softmax cross-entropy) or a gc_exec_err.
 * The interpreter keeps no state between calls: two threads may run one code array at once,
 * each with its own arena and pointer table.
 */
#pragma once
#include <stdint.h>

/* Opcodes of kernels that run one registry op are named after it: GC_OP_<OP> (graphc/backends/c.py
 * finds them by that name). */
enum gc_exec_op {
    GC_OP_GEMM = 1,                       /* ta tb M N K lda ldb ldc A B C bias act alpha_idx */
    GC_OP_UNARY = 2,                      /* kop n x y param_idx                              (gc_unary) */
    GC_OP_ACT_BWD = 3,                    /* act n y g dx param_idx                    (gc_act_backward) */
    GC_OP_BINARY = 4,                     /* kop ndim a b out shape[ndim] a_strides[ndim] b_strides[ndim] */
    GC_OP_REDUCE = 5,                     /* kop outer n inner x y                           (gc_reduce) */
    GC_OP_SOFTMAX = 6,                    /* rows cols x y log */
    GC_OP_SOFTMAX_GRAD = 7,               /* rows cols y g dx log */
    GC_OP_SOFTMAX_CROSS_ENTROPY = 8,      /* rows cols logits labels loss */
    GC_OP_SOFTMAX_CROSS_ENTROPY_GRAD = 9, /* rows cols logits labels g(scalar ref) dlogits */
    GC_OP_BINARY_CROSS_ENTROPY = 10,      /* n z t loss */
    GC_OP_CONV2D = 11,                    /* N C H W O KH KW sh sw ph pw x w bias y */
    GC_OP_CONV2D_INPUT_GRAD = 12,         /* N C H W O KH KW sh sw ph pw w gy gx */
    GC_OP_CONV2D_WEIGHT_GRAD = 13,        /* N C H W O KH KW sh sw ph pw x gy gw */
    GC_OP_MAX_POOL2D = 14,                /* N C H W kh kw sh sw ph pw x y */
    GC_OP_MAX_POOL2D_GRAD = 15,           /* N C H W kh kw sh sw ph pw x gy gx */
    GC_OP_AVG_POOL2D = 16,                /* N C H W kh kw sh sw ph pw x y */
    GC_OP_AVG_POOL2D_GRAD = 17,           /* N C H W kh kw sh sw ph pw gy gx */
    GC_OP_FUSED = 18,                     /* n out nin ninstr nvreg nscalar in_ref[nin] in_slot[nin] instr[8*ninstr] */
    GC_OP_CAST = 19,                      /* src_dtype n x y   (word [3] is the destination dtype) */
    GC_OP_COPY = 20,                      /* elem_bytes ndim x y shape[ndim] x_strides[ndim]: strided gather */
    GC_OP_FILL = 21,                      /* n y value_idx */
    GC_OP_GEMM_EX = 22,                   /* ta tb M N K lda ldb ldc A B C addend gate alpha_idx gate_act
                                             gate_param_idx colsum: C = (addend + alpha op(A) op(B)) * act'(gate),
                                             addend and gate contiguous M x N or -1; colsum (length N, or -1)
                                             = the column sums of op(B) (gc_sgemm_ex) */
    GC_OP_BCE_LOGITS_GRAD = 23,           /* n z t scale(scalar ref) dz: dz = (sigmoid(z) - t) * scale */
    GC_OP_BCE_LOSS_AND_GRAD = 24,         /* n z t scale(scalar ref) loss dz: GC_OP_BINARY_CROSS_ENTROPY and
                                             GC_OP_BCE_LOGITS_GRAD on the same z, t in one pass (the C
                                             backend pairs them when they run back to back) */
    GC_OP_SIDE_BY_SIDE = 25,              /* two whole instructions (header included), run at the same
                                             time on two threads, each kernel on one thread (on one
                                             thread one after the other when no second is free); the
                                             C backend emits it for independent GEMMs (word [3] unused) */
    GC_OP_SOFTMAX_CE_LOSS_AND_GRAD = 26   /* rows cols logits labels g(scalar ref) loss dlogits:
                                             GC_OP_SOFTMAX_CROSS_ENTROPY and its _GRAD on the same
                                             logits and labels in one pass (paired like BCE's) */
};

enum gc_exec_dtype { GC_DT_F32 = 0, GC_DT_F64 = 1, GC_DT_I32 = 2, GC_DT_I64 = 3, GC_DT_BOOL = 4 };

enum gc_ref_kind { GC_REF_ARENA = 0, GC_REF_POOL = 1, GC_REF_EXT = 2 };

/* Interpreter errors (kernel errors are passed through unchanged). */
enum gc_exec_err { GC_E_BADCODE = -100, GC_E_BADOP = -101, GC_E_BADDTYPE = -102 };

int64_t gc_exec(const int64_t *code, int64_t ncode, const double *fconst, int64_t nfconst,
                const void *pool, void *const *ext, void *arena);
/* gc_exec that also adds each instruction's wall time, in seconds, to seconds[its step index]
 * (header word [2]; indexes outside [0, nsteps) are not timed). A GC_OP_SIDE_BY_SIDE pair counts
 * once, under the step its header names (the first of the two). Function.profile() calls it. */
int64_t gc_exec_timed(const int64_t *code, int64_t ncode, const double *fconst, int64_t nfconst,
                      const void *pool, void *const *ext, void *arena, double *seconds, int64_t nsteps);

/* What GC_OP_GEMM runs: C = act(op(A) @ op(B) + bias) with beta 0 (gemm.h's conventions; A, B, C,
 * bias are float when f64 == 0, else double). Products with a short side (matrix-vector, or a
 * side of at most 16 with few multiply-adds) take unpacked loops on the calling thread, the rest
 * the packed GEMM. Exported for the tests. */
void gc_exec_matmul(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                    const void *B, int64_t ldb, void *C, int64_t ldc, const void *bias, int act, double act_param);
