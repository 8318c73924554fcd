/* A team of OpenMP threads that share one time loop, meeting at a barrier; and the process's
 * budget of kernel threads.
 *
 * When the batch is too small to split by rows (batch 1 above all), the threads split the
 * hidden units of every step instead and meet twice per step. OpenMP's own barrier sleeps
 * under OMP_WAIT_POLICY=PASSIVE (rnnx's default) and would cost a futex round trip per
 * step; this one spins for a few microseconds, which is all a step takes when every member
 * has a core, then sleeps on a futex (Linux; elsewhere it yields, then naps), so that a
 * member waiting for a descheduled one gives its core away instead of burning it.
 * Sense-reversing: the last thread to arrive resets the count and flips the shared sense
 * that the others wait on, and wakes them if any went to sleep.
 *
 * A team needs all its members running at once. rnnx_claim_threads therefore hands out
 * kernel threads from a process-wide budget of one per core this process may use: a call
 * asking for more gets what is left (at least 1), so neither set_num_threads(16) on two
 * cores nor two concurrent calls (the GIL is released) oversubscribe the cores with spinning
 * teams; and a team whose members had to sleep (other processes on the cores) makes the
 * next calls run without one. Results do not depend on the thread count, so this changes
 * only the speed.
 */
#ifndef RNNX_TEAM_H
#define RNNX_TEAM_H
#include <limits.h>
#include <sched.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
static inline int rnnx_team_size(void) { return omp_get_num_threads(); }
static inline int rnnx_team_member(void) { return omp_get_thread_num(); }
static inline int rnnx_cores(void) { return omp_get_num_procs(); }
#else
static inline int rnnx_team_size(void) { return 1; }
static inline int rnnx_team_member(void) { return 0; }
static inline int rnnx_cores(void) { return 1; }
#endif

/* Kernel threads in use by running calls, process-wide. */
static int rnnx_busy_threads = 0;

/* Take up to `want` threads from the budget of rnnx_cores() (at least 1, even when it is
 * spent); give them back with rnnx_release_threads. */
static inline int rnnx_claim_threads(int want) {
    int cores = rnnx_cores(), busy = __atomic_load_n(&rnnx_busy_threads, __ATOMIC_RELAXED), got;
    do {
        got = cores - busy < want ? cores - busy : want;
        if (got < 1) got = 1;
    } while (!__atomic_compare_exchange_n(&rnnx_busy_threads, &busy, busy + got, 1,
                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return got;
}

static inline void rnnx_release_threads(int n) {
    __atomic_sub_fetch(&rnnx_busy_threads, n, __ATOMIC_ACQ_REL);
}
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNX_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define RNNX_PAUSE() __asm__ __volatile__("yield")
#else
#define RNNX_PAUSE() ((void)0)
#endif

/* How long a waiter spins before it sleeps: a few steps' work at batch 1. */
#define RNNX_SPIN_NS 20000

static inline long long rnnx_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

typedef struct {
    int count;     /* threads arrived at the current barrier */
    int sense;     /* flips when the last one arrives (the futex word) */
    int size;      /* threads in the team */
    int sleepers;  /* waiters that stopped spinning */
    int slept;     /* times a waiter slept, this call */
} rnnx_barrier;

static inline void rnnx_barrier_init(rnnx_barrier *b) {
    b->count = 0; b->sense = 0; b->size = 1; b->sleepers = 0; b->slept = 0;
}

/* Teams pay only when every member has a core. A call whose members slept at more than a
 * quarter of its 2 * steps barriers (cores busy with other processes) makes the next
 * RNNX_BACKOFF_CALLS calls that would use a team run on one thread; then teams are tried
 * again. */
#define RNNX_BACKOFF_CALLS 16
static int rnnx_team_backoff = 0;

static inline int rnnx_team_allowed(void) {
    if (__atomic_load_n(&rnnx_team_backoff, __ATOMIC_RELAXED) <= 0) return 1;
    __atomic_sub_fetch(&rnnx_team_backoff, 1, __ATOMIC_RELAXED);
    return 0;
}

static inline void rnnx_team_review(const rnnx_barrier *b, long steps) {
    if (2L * __atomic_load_n(&b->slept, __ATOMIC_RELAXED) > steps)
        __atomic_store_n(&rnnx_team_backoff, RNNX_BACKOFF_CALLS, __ATOMIC_RELAXED);
}

/* Sleep while *word == value (or return early: callers re-check). */
static inline void rnnx_sleep_while(int *word, int value) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    static const struct timespec nap = {0, 50000};
    if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == value) { sched_yield(); nanosleep(&nap, NULL); }
#endif
}

static inline void rnnx_wake_all(int *word) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Every member stores the team size before its first wait (all store the same value). */
static inline void rnnx_barrier_join(rnnx_barrier *b, int size) {
    __atomic_store_n(&b->size, size, __ATOMIC_RELAXED);
}

static inline void rnnx_barrier_wait(rnnx_barrier *b, int *local_sense) {
    int sense = !*local_sense;
    *local_sense = sense;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == __atomic_load_n(&b->size, __ATOMIC_RELAXED)) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        /* seq_cst store, then load: either a sleeper's futex finds the new sense, or its
           sleepers increment (seq_cst, before its futex) is seen here and it is woken */
        __atomic_store_n(&b->sense, sense, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0) rnnx_wake_all(&b->sense);
        return;
    }
    long long deadline = 0;
    for (unsigned spins = 1;; spins++) {
        if (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) == sense) return;
        RNNX_PAUSE();
        if (spins % 64 == 0) {      /* the clock every 64 pauses (a few microseconds) */
            long long now = rnnx_now_ns();
            if (!deadline) deadline = now + RNNX_SPIN_NS;
            else if (now > deadline) break;
        }
    }
    __atomic_add_fetch(&b->slept, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->sense, __ATOMIC_SEQ_CST) != sense) rnnx_sleep_while(&b->sense, !sense);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_RELAXED);
}
#endif
