/* graphc's own thread pool: every parallel kernel (GEMM, elementwise, rows, conv) runs on it.
 *
 * gc_parallel(nt, fn, ctx) runs fn(ctx, tid, team) on `team` threads, tid 0 being the calling
 * thread, and returns when all are done. team <= nt: it is 1 when the pool is already running a
 * region (a kernel on a pool thread calling the GEMM, or another application thread calling
 * graphc at the same time), so nested and concurrent use never deadlock, they run serially; and
 * it is smaller when the system refuses to create more threads. fn must use `team`, not nt.
 * gc_barrier() waits for the whole team of the region the calling thread is in; outside a region
 * or in a one-thread team it returns at once.
 *
 * Workers are created on first use, persist, and wait for work with a short spin (a budget in
 * microseconds) before sleeping on a futex, so they use no CPU once graphc returns.
 * gc_pool_hold(1) / gc_pool_hold(0) bracket a plan execution (gc_exec): while held, idle workers
 * spin longer, so consecutive kernels of one plan do not each pay a wake-up.
 * In a child process after fork() the pool is empty again and refills on first use.
 */
#pragma once
#include <stdint.h>

/* Most threads one region uses (the kernels' per-thread arrays are sized by it). */
#define GC_MAX_THREADS 64

/* Returns the team size used. */
int gc_parallel(int nt, void (*fn)(void *ctx, int tid, int team), void *ctx);
/* Splits [0, n) into `team` contiguous ranges of near-equal length (OpenMP's static schedule):
 * fn(ctx, begin, end, tid). With nt <= 1 or n <= 1 it calls fn(ctx, 0, n, 0) directly. */
void gc_parallel_for(int nt, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end, int tid), void *ctx);
void gc_barrier(void);
void gc_pool_hold(int on);
/* Worker threads alive in this process (for tests: 0 after fork until the next region). */
int gc_pool_workers(void);
/* Regions this process has run on more than one thread (a fork child inherits the count): a caller can tell
 * whether some work split across threads at all (graphc bench --mixed's loaded-machine check). */
int64_t gc_pool_regions(void);

/* CLOCK_MONOTONIC in nanoseconds (the spin budgets' clock; gc_exec_timed's too). */
int64_t gc_now_ns(void);

/* Threads used by the parallel kernels. n <= 0 means "use the default": GRAPHC_NUM_THREADS if
 * set, otherwise the number of CPUs this process may run on (sched_getaffinity). */
void gc_set_num_threads(int n);
int gc_get_num_threads(void);
