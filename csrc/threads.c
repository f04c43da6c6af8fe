/* graphc's thread pool (API in threads.h).
 *
 * Why not OpenMP: libgomp forks/joins a team per kernel and its idle workers spin for a long
 * while after each region (GOMP_SPINCOUNT, ~300k iterations), so in a process that alternates
 * graphc calls with NumPy calls they take the cores OpenBLAS's threads want (and vice versa).
 * This pool's workers spin for a budget measured in microseconds, then sleep on a futex.
 *
 * Structure: one region at a time owns the pool (g_busy, taken with an atomic exchange; a caller
 * that finds it taken runs its region serially). Worker i (tid i + 1) has its own slot: the owner
 * publishes the region in g_job, then bumps the slot's sequence word of each worker it needs and
 * wakes it if it sleeps; workers that the region does not need are not touched. Each worker
 * decrements g_job.left when done; the owner works as tid 0, then waits for left == 0. Every wait
 * (worker for work, owner for workers, gc_barrier) is the same spin-then-futex loop
 * (await_change). The futex word's value is checked by the kernel, and the "sleeping" counters
 * are read after the word is changed (both sequentially consistent), so no wake-up is lost.
 *
 * Measured on the 2-core Xeon this was written on (csrc/tests/pool_bench.c, medians of 2000
 * regions with an empty body, 2 threads; three runs on a shared machine at load 4-5):
 *   region, worker spinning (back-to-back regions)   0.3-0.5 us (34 us in a run where the
 *                                                     worker had lost its core to other jobs)
 *   region, worker asleep on the futex               36-39 us (p10 35, p90 44-53): futex wake
 *                                                     plus the scheduler running the worker
 *   OpenMP region (libgomp, worker spinning)         0.8-2.1 us, for comparison
 * So a sleeping worker costs tens of microseconds to wake: the idle spin budget (GC_SPIN_IDLE_NS)
 * is about one wake-up, so that a caller issuing kernels back to back (a Python loop of
 * stand-alone kernel calls) keeps its worker awake, and the longer held budget covers the gaps
 * between the parallel kernels of one plan. Inside a region (barriers, the owner waiting for its
 * team) teammates are working, so the same long budget applies.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#include "threads.h"

/* Spin budgets, nanoseconds (see the measurements above). */
#ifndef GC_SPIN_IDLE_NS
#define GC_SPIN_IDLE_NS 50000 /* idle worker, no plan running: about one wake-up */
#endif
#ifndef GC_SPIN_HELD_NS
#define GC_SPIN_HELD_NS 1000000 /* idle worker during a plan (gc_pool_hold), or inside a region */
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

int64_t gc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
#define now_ns gc_now_ns

/* ---- sleeping on a 32-bit word: a futex on Linux, a condition variable elsewhere ---- */
#ifdef __linux__
static void sleep_while_eq(_Atomic uint32_t *w, uint32_t v) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}
static void wake_all(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0); }
static void sleep_reset(void) {}
#else
static pthread_mutex_t g_sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sleep_cv = PTHREAD_COND_INITIALIZER;
static void sleep_while_eq(_Atomic uint32_t *w, uint32_t v) {
    pthread_mutex_lock(&g_sleep_mu);
    if (atomic_load(w) == v) pthread_cond_wait(&g_sleep_cv, &g_sleep_mu);
    pthread_mutex_unlock(&g_sleep_mu);
}
static void wake_all(_Atomic uint32_t *w) {
    (void)w;
    pthread_mutex_lock(&g_sleep_mu);
    pthread_cond_broadcast(&g_sleep_cv);
    pthread_mutex_unlock(&g_sleep_mu);
}
static void sleep_reset(void) {
    pthread_mutex_init(&g_sleep_mu, NULL);
    pthread_cond_init(&g_sleep_cv, NULL);
}
#endif

static _Atomic int g_hold = 0; /* plans running now (gc_pool_hold) */
static void keep_off_owner_cpu(void);
static void restore_affinity(void);

/* Returns once *w != old: spins for up to `budget` ns (with pause, and sched_yield now and then
 * so a spinning thread gives way to other runnable threads on its core), then sleeps. *sleepers
 * counts the threads asleep on w; wakers call wake_all(w) only when it is non-zero. idle: a
 * worker waiting for work, whose budget depends on whether a plan is running. */
static void await_change(_Atomic uint32_t *w, uint32_t old, _Atomic int *sleepers, int idle) {
    int64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(w, memory_order_acquire) != old) return;
        cpu_relax();
        if (i % 32 == 0) { /* ~1-2 us of pauses between clock reads */
            const int64_t t = now_ns();
            if (!t0) t0 = t;
            const int64_t budget = idle && !atomic_load_explicit(&g_hold, memory_order_relaxed)
                                       ? GC_SPIN_IDLE_NS : GC_SPIN_HELD_NS;
            if (t - t0 > budget) break;
            if (i % 1024 == 0) sched_yield();
        }
    }
    if (idle) keep_off_owner_cpu();
    for (;;) {
        atomic_fetch_add(sleepers, 1);
        sleep_while_eq(w, old); /* returns at once if *w != old already */
        atomic_fetch_sub(sleepers, 1);
        if (atomic_load_explicit(w, memory_order_acquire) != old) break;
    }
    if (idle) restore_affinity();
}

/* ---- pool state ---- */

typedef struct {
    _Atomic uint32_t seq;   /* bumped by the owner for every region this worker joins */
    _Atomic int sleeping;
} __attribute__((aligned(64))) slot_t; /* one cache line each: no false sharing between workers */

static slot_t g_slots[GC_MAX_THREADS]; /* g_slots[i]: worker with tid i + 1 */
static _Atomic int g_nworkers = 0;     /* changed only by the pool owner (and after fork) */
static _Atomic int g_busy = 0;         /* a region owns the pool */

/* The region being run; written by its owner before the workers are released. */
static struct {
    void (*fn)(void *, int, int);
    void *ctx;
    int team;
    _Atomic uint32_t left; /* workers still running it */
    _Atomic int owner_sleeping;
    _Atomic int owner_cpu; /* the CPU the last owner started its region on, or -1; idle workers read it */
    _Atomic uint32_t bar_gen;
    _Atomic int bar_count, bar_sleeping;
} g_job = {.owner_cpu = -1};

/* Team size of the region this thread is running: 0 outside any, 1 in a serial run. */
static _Thread_local int t_team = 0;

#ifdef __linux__
static int current_cpu(void) { return sched_getcpu(); }

/* This thread's affinity without `cpu`, into *saved the one it had; 0 where that would leave
 * fewer CPUs than the team needs (4 threads on 2 CPUs must share) or nothing to change. */
static int avoid_cpu(int cpu, int team, cpu_set_t *saved) {
    if (cpu < 0 || pthread_getaffinity_np(pthread_self(), sizeof *saved, saved) != 0) return 0;
    if (!CPU_ISSET(cpu, saved) || CPU_COUNT(saved) < team) return 0;
    cpu_set_t others = *saved;
    CPU_CLR(cpu, &others);
    return pthread_setaffinity_np(pthread_self(), sizeof others, &others) == 0;
}

/* A worker woken from its futex is often placed on the CPU of the thread that woke it (the
 * scheduler's wake-affine heuristic), here the owner, busy with its own share of the region.
 * Two measures keep it off that CPU:
 *  - before it sleeps, an idle worker takes the last owner's CPU out of its affinity (and puts it
 *    back once awake), so that the wake-up itself places it on another CPU. Measured (2-core
 *    Xeon VM, 2026-12-03, csrc/tests/pool_bench.c's paused regions, 2 ms pauses, a busy loop of
 *    56 or 223 us per thread): with only the second measure every region woke the worker on the
 *    owner's CPU, where it ran only once the owner had finished its own share (regions of 189 and
 *    529 us, serial); with the first, 108 and 273 us (the rest is waking the other, halted vCPU).
 *  - a worker that still finds itself on the owner's CPU (the owner moved while it slept) steps
 *    off: its affinity without that CPU (the kernel migrates it at once), then as it was. 2-core
 *    Zen 4 VM, 2026-12-03, 32 back-to-back 256^3 float64 GEMMs after each 0.25 s pause: both
 *    threads on one CPU in 114 of 256 regions before, none after. */
static _Thread_local cpu_set_t t_affinity; /* the worker's own, while keep_off_owner_cpu holds */
static _Thread_local int t_kept_off = -1;    /* the CPU it took out, or -1 */

static void keep_off_owner_cpu(void) {
    const int cpu = atomic_load_explicit(&g_job.owner_cpu, memory_order_relaxed);
    t_kept_off = avoid_cpu(cpu, atomic_load(&g_nworkers) + 1, &t_affinity) ? cpu : -1;
}
/* Puts the worker's own affinity back, unless someone else changed it while the worker slept
 * (taskset -a, a cpuset): theirs then stands. */
static void restore_affinity(void) {
    if (t_kept_off < 0) return;
    cpu_set_t now, ours = t_affinity;
    CPU_CLR(t_kept_off, &ours);
    t_kept_off = -1;
    if (pthread_getaffinity_np(pthread_self(), sizeof now, &now) == 0 && CPU_EQUAL(&now, &ours))
        pthread_setaffinity_np(pthread_self(), sizeof t_affinity, &t_affinity);
}
static void step_off_cpu(int owner_cpu, int team) {
    cpu_set_t saved;
    if (current_cpu() == owner_cpu && avoid_cpu(owner_cpu, team, &saved))
        pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
}
#else
static int current_cpu(void) { return -1; }
static void keep_off_owner_cpu(void) {}
static void restore_affinity(void) {}
static void step_off_cpu(int owner_cpu, int team) { (void)owner_cpu, (void)team; }
#endif

static void *worker_main(void *arg) {
    const int tid = (int)(intptr_t)arg;
    slot_t *s = &g_slots[tid - 1];
    uint32_t seen = 0;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "graphc-worker"); /* in top -H, ps -L and /proc/.../comm */
#endif
    for (;;) {
        await_change(&s->seq, seen, &s->sleeping, 1);
        /* The owner bumps seq again only after this worker has finished: seq is stable. */
        seen = atomic_load_explicit(&s->seq, memory_order_acquire);
        step_off_cpu(atomic_load_explicit(&g_job.owner_cpu, memory_order_relaxed), g_job.team);
        t_team = g_job.team;
        g_job.fn(g_job.ctx, tid, g_job.team);
        t_team = 0;
        atomic_fetch_sub(&g_job.left, 1);
        if (atomic_load(&g_job.owner_sleeping)) wake_all(&g_job.left);
    }
    return NULL;
}

static void after_fork_child(void) {
    /* Only the forking thread exists in the child: forget the workers (they are re-created on
     * first use) and any region another thread of the parent was running. */
    atomic_store(&g_nworkers, 0);
    atomic_store(&g_busy, 0);
    atomic_store(&g_hold, 0);
    for (int i = 0; i < GC_MAX_THREADS; i++) {
        atomic_store(&g_slots[i].seq, 0);
        atomic_store(&g_slots[i].sleeping, 0);
    }
    atomic_store(&g_job.left, 0);
    atomic_store(&g_job.owner_sleeping, 0);
    atomic_store(&g_job.owner_cpu, -1);
    atomic_store(&g_job.bar_gen, 0);
    atomic_store(&g_job.bar_count, 0);
    atomic_store(&g_job.bar_sleeping, 0);
    t_team = 0;
    sleep_reset();
}

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

/* Grows the pool to `want` workers (the caller owns the pool); returns how many exist. */
static int ensure_workers(int want) {
    int have = atomic_load(&g_nworkers);
    if (have >= want) return have;
    pthread_once(&g_atfork_once, register_atfork);
    /* Workers start with every signal blocked: signals go to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (; have < want; have++) {
        pthread_t th;
        atomic_store(&g_slots[have].seq, 0);
        atomic_store(&g_slots[have].sleeping, 0);
        if (pthread_create(&th, &attr, worker_main, (void *)(intptr_t)(have + 1))) break;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    atomic_store(&g_nworkers, have);
    return have;
}

static int run_serial(void (*fn)(void *, int, int), void *ctx) {
    const int saved = t_team;
    if (saved) t_team = 1; /* nested: gc_barrier must not join the outer team's barrier */
    fn(ctx, 0, 1);
    t_team = saved;
    return 1;
}

static _Atomic int64_t g_regions = 0; /* gc_pool_regions */

int gc_parallel(int nt, void (*fn)(void *ctx, int tid, int team), void *ctx) {
    if (nt > GC_MAX_THREADS) nt = GC_MAX_THREADS;
    /* Serial when asked, when nested in a region, or when another thread's region owns the pool. */
    if (nt <= 1 || t_team > 0 || atomic_exchange_explicit(&g_busy, 1, memory_order_acquire))
        return run_serial(fn, ctx);
    int workers = ensure_workers(nt - 1);
    if (workers > nt - 1) workers = nt - 1;
    if (workers < 1) { /* could not create a thread */
        atomic_store_explicit(&g_busy, 0, memory_order_release);
        return run_serial(fn, ctx);
    }
    const int team = workers + 1;
    atomic_fetch_add_explicit(&g_regions, 1, memory_order_relaxed);
    g_job.fn = fn;
    g_job.ctx = ctx;
    g_job.team = team;
    atomic_store_explicit(&g_job.owner_cpu, current_cpu(), memory_order_relaxed);
    atomic_store(&g_job.left, (uint32_t)workers);
    for (int i = 0; i < workers; i++) {
        atomic_fetch_add(&g_slots[i].seq, 1); /* releases g_job to worker i */
        if (atomic_load(&g_slots[i].sleeping)) wake_all(&g_slots[i].seq);
    }
    t_team = team;
    fn(ctx, 0, team);
    t_team = 0;
    uint32_t left;
    while ((left = atomic_load_explicit(&g_job.left, memory_order_acquire)) != 0)
        await_change(&g_job.left, left, &g_job.owner_sleeping, 0);
    atomic_store_explicit(&g_busy, 0, memory_order_release);
    return team;
}

void gc_barrier(void) {
    const int team = t_team;
    if (team <= 1) return;
    const uint32_t gen = atomic_load_explicit(&g_job.bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&g_job.bar_count, 1, memory_order_acq_rel) == team - 1) {
        /* Last to arrive: nobody touches bar_count again until it sees the new generation. */
        atomic_store_explicit(&g_job.bar_count, 0, memory_order_relaxed);
        atomic_store(&g_job.bar_gen, gen + 1);
        if (atomic_load(&g_job.bar_sleeping)) wake_all(&g_job.bar_gen);
    } else {
        await_change(&g_job.bar_gen, gen, &g_job.bar_sleeping, 0);
    }
}

typedef struct {
    void (*fn)(void *, int64_t, int64_t, int);
    void *ctx;
    int64_t n;
} range_job;

static void range_body(void *p, int tid, int team) {
    const range_job *r = (const range_job *)p;
    /* Thread t gets n / team items, plus one while t < n % team (no overflow for any n). */
    const int64_t q = r->n / team, rem = r->n % team;
    const int64_t begin = q * tid + (tid < rem ? tid : rem);
    const int64_t end = begin + q + (tid < rem);
    if (begin < end) r->fn(r->ctx, begin, end, tid);
}

void gc_parallel_for(int nt, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end, int tid), void *ctx) {
    if (n <= 0) return;
    if ((int64_t)nt > n) nt = (int)n;
    if (nt <= 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    range_job r = {fn, ctx, n};
    gc_parallel(nt, range_body, &r);
}

void gc_pool_hold(int on) {
    if (on) atomic_fetch_add(&g_hold, 1);
    else atomic_fetch_sub(&g_hold, 1);
}

int gc_pool_workers(void) { return atomic_load(&g_nworkers); }
int64_t gc_pool_regions(void) { return atomic_load_explicit(&g_regions, memory_order_relaxed); }

/* ---- thread count ---- */

static _Atomic int g_threads = 0;      /* gc_set_num_threads; 0: default */
static _Atomic int g_default_threads = 0; /* CPUs we may run on, computed once */

static int cpus_available(void) {
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void gc_set_num_threads(int n) { atomic_store(&g_threads, n > 0 ? n : 0); }

int gc_get_num_threads(void) {
    int n = atomic_load(&g_threads);
    if (n <= 0) {
        const char *e = getenv("GRAPHC_NUM_THREADS");
        n = e ? atoi(e) : 0;
    }
    if (n <= 0) {
        n = atomic_load(&g_default_threads);
        if (!n) atomic_store(&g_default_threads, n = cpus_available());
    }
    return n < GC_MAX_THREADS ? n : GC_MAX_THREADS;
}
