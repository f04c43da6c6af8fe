/* The GEMM called from inside someone else's OpenMP team (tests/test_c_gemm.py builds and runs it):
 *
 *   gcc -std=c11 -O1 -fopenmp -Icsrc csrc/tests/gemm_in_team.c csrc/gemm.c csrc/threads.c -lm -o gemm_in_team
 *
 * Two outer threads each run GEMMs with different numbers of K blocks, first serial ones
 * (gc_set_num_threads(1), as when a kernel parallelises over a batch and calls the GEMM per item),
 * then ones that ask for 2 threads: both callers then want graphc's pool at once, one region gets
 * it and uses barriers, the other must run serially. A barrier that bound to the wrong team, or a
 * pool that waited for a busy pool, would hang: this program then never exits (the test runs it
 * with a timeout). It prints the number of wrong results and exits 0 when there are none.
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "gemm.h"
#include "threads.h"

static int run(int gemm_threads) {
    gc_set_num_threads(gemm_threads);
    int wrong = 0, threads = 0;
#pragma omp parallel num_threads(2) reduction(+ : wrong, threads)
    {
        threads = 1;
        const int64_t M = 96, N = 64, K = omp_get_thread_num() == 0 ? 300 : 1100; /* 2 vs 5 K blocks */
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
        for (int64_t i = 0; i < M * K; i++) A[i] = 1.0f;
        for (int64_t i = 0; i < K * N; i++) B[i] = 0.5f;
        for (int rep = 0; rep < 20; rep++) {
            gc_sgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C, N, NULL, GC_ACT_IDENTITY, 0.0f);
            for (int64_t i = 0; i < M * N; i++) wrong += C[i] != 0.5f * (float)K;
        }
        free(A);
        free(B);
        free(C);
    }
    printf("%d outer threads, %d wrong results (GEMM threads %d)\n", threads, wrong, gemm_threads);
    return wrong;
}

int main(void) {
    const int wrong = run(1) + run(2);
    return wrong != 0;
}
