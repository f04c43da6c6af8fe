/* Wake-up cost of graphc's pool (the numbers in threads.c's header comment):
 *
 *   gcc -std=c11 -O2 -pthread -Icsrc csrc/tests/pool_bench.c csrc/threads.c -o pool_bench && ./pool_bench
 *
 * Times one 2-thread region with an empty body: back to back (the worker is still spinning) and
 * after a 5 ms pause (the worker has gone to sleep on its futex). Medians of many regions. Then
 * regions whose threads each run a busy loop (about 50 and 200 us), after 2 ms pauses: where the
 * woken worker lands on the owner's CPU it runs only after the owner's share, and such a region
 * takes two shares' time or more. With -fopenmp -DWITH_OMP it also times an empty OpenMP region
 * for comparison.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef WITH_OMP
#include <omp.h>
#endif
#include "threads.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static volatile int sink[64]; /* one per thread: the bench is clean under -fsanitize=thread */
static void body(void *ctx, int tid, int team) { (void)ctx; sink[tid & 63] = tid + team; }
static volatile double busy_sink[64];
static void busy(void *ctx, int tid, int team) {
    (void)team;
    double s = 0;
    for (long i = 0, n = *(const long *)ctx; i < n; i++) s += (double)i * 1e-9;
    busy_sink[tid & 63] = s;
}

enum { N = 2000 };
static int64_t t[N];

static double median_us(void) {
    qsort(t, N, sizeof t[0], cmp);
    return t[N / 2] / 1000.0;
}

int main(void) {
    gc_parallel(2, body, NULL); /* create the worker */
    for (int i = 0; i < N; i++) {
        const int64_t t0 = now_ns();
        gc_parallel(2, body, NULL);
        t[i] = now_ns() - t0;
    }
    printf("pool region, worker spinning: %.2f us\n", median_us());
    for (int i = 0; i < N / 4; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        const int64_t t0 = now_ns();
        gc_parallel(2, body, NULL);
        t[i] = now_ns() - t0;
    }
    qsort(t, N / 4, sizeof t[0], cmp);
    printf("pool region, worker asleep:   %.2f us (p10 %.2f, p90 %.2f)\n", t[N / 8] / 1000.0,
           t[N / 40] / 1000.0, t[N / 4 * 9 / 10] / 1000.0);
    for (long n = 100000; n <= 400000; n *= 4) {
        int64_t t0 = now_ns();
        busy(&n, 0, 1);
        const double share = (now_ns() - t0) / 1000.0;
        for (int i = 0; i < N / 10; i++) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            t0 = now_ns();
            gc_parallel(2, busy, &n);
            t[i] = now_ns() - t0;
        }
        qsort(t, N / 10, sizeof t[0], cmp);
        printf("pool region, worker asleep, %.0f us of work per thread: %.1f us (p10 %.1f, p90 %.1f)\n", share,
               t[N / 20] / 1000.0, t[N / 100] / 1000.0, t[N / 10 * 9 / 10] / 1000.0);
    }
#ifdef WITH_OMP
    for (int i = 0; i < N; i++) {
        const int64_t t0 = now_ns();
#pragma omp parallel num_threads(2)
        sink[omp_get_thread_num() & 63] = 1;
        t[i] = now_ns() - t0;
    }
    printf("OpenMP region, back to back:  %.2f us\n", median_us());
#endif
    return 0;
}
