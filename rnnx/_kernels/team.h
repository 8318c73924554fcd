/* rnnx's own threads: a pool that runs a job on a team of threads, a barrier for the team's
 * members, and the process's budget of kernel threads.
 *
 * rnnx does not use OpenMP: an OpenMP runtime is shared by every library in the process
 * (PyTorch's libgomp has the same soname as the system's), and its idle policy is set for all
 * of them at once (OMP_WAIT_POLICY, read when it loads). rnnx's threads get the behaviour they
 * need here instead, touching no one else's: every wait (a worker waiting for its next job, the
 * caller waiting for a job's end, a member waiting at the barrier) spins for RNNX_SPIN_NS, which
 * covers back-to-back jobs and steps when every thread has a core, then sleeps on a futex
 * (Linux; elsewhere it yields, then naps), so that an idle or waiting thread gives its core
 * away on a busy machine instead of burning it.
 *
 * rnnx_pool_run(size, job, ctx) runs job(ctx) on the calling thread (member 0)
 * and size - 1 pool workers (started on first use, kept), and returns when all are done.
 * rnnx_team_member() / rnnx_team_size() name the running thread's place in its job. One job
 * runs at a time: a call that finds the pool busy (another Python thread's kernel, the GIL
 * being released) runs its job alone, as member 0 of 1; so must every job be written.
 *
 * When the batch is too small to split by rows (batch 1 above all), the threads split the
 * hidden units of every step instead and meet twice per step at rnnx_barrier.
 * Sense-reversing: the last thread to arrive resets the count and flips the shared sense
 * that the others wait on, and wakes them if any went to sleep.
 *
 * A team needs all its members running at once. rnnx_claim_threads therefore hands out
 * kernel threads from a process-wide budget of one per core this process may use: a call
 * asking for more gets what is left (at least 1), so neither set_num_threads(16) on two
 * cores nor two concurrent calls oversubscribe the cores with spinning teams; and a team
 * whose members had to sleep (other processes on the cores) makes the next calls run
 * without one. Results do not depend on the thread count, so this changes only the speed.
 */
#ifndef RNNX_TEAM_H
#define RNNX_TEAM_H
#include <limits.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#define RNNX_POOL 1
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#else
#define RNNX_POOL 0
#endif

/* The running thread's place in its job (member 0 of 1 outside any job). */
static __thread int rnnx_member_id = 0, rnnx_member_count = 1;
static inline int rnnx_team_size(void) { return rnnx_member_count; }
static inline int rnnx_team_member(void) { return rnnx_member_id; }

/* Cores this process may run on (its CPU affinity, read once). */
static int rnnx_cores_cached = 0;
static inline int rnnx_cores(void) {
    int n = __atomic_load_n(&rnnx_cores_cached, __ATOMIC_RELAXED);
    if (n > 0) return n;
#if defined(__linux__)
    cpu_set_t set;
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
#endif
#if RNNX_POOL
    if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
    if (n < 1) n = 1;
    __atomic_store_n(&rnnx_cores_cached, n, __ATOMIC_RELAXED);
    return n;
}

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

/* Wait while *word == value: spin for RNNX_SPIN_NS, then sleep, counted in *sleepers (whoever
 * changes *word wakes the sleepers: seq_cst store, then load of *sleepers). Returns whether
 * it slept. */
static inline int rnnx_wait_while(int *word, int value, int *sleepers) {
    long long deadline = 0;
    for (unsigned spins = 1;; spins++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != value) return 0;
        RNNX_PAUSE();
        if (spins % 64 == 0) {      /* the clock every 64 pauses (a few microseconds) */
            long long now = rnnx_now_ns();
            if (!deadline) deadline = now + RNNX_SPIN_NS;
            else if (now > deadline) break;
        }
    }
    __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == value) rnnx_sleep_while(word, value);
    __atomic_sub_fetch(sleepers, 1, __ATOMIC_RELAXED);
    return 1;
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
    if (rnnx_wait_while(&b->sense, !sense, &b->sleepers))
        __atomic_add_fetch(&b->slept, 1, __ATOMIC_RELAXED);
}

/* The pool (see the top of this file). */
typedef void (*rnnx_job)(void *ctx);

#define RNNX_MAX_WORKERS 255
/* One slot per worker, a cache line each: the caller bumps `go` of a job's members only, so
 * a worker reads the job's fields only for a job it is in, and the caller cannot start the
 * next job (rewrite those fields) before every member has finished this one. */
typedef struct {
    int go;            /* bumped per job of this worker (its futex word) */
    int asleep;        /* the worker sleeps on go */
    char pad[56];
} rnnx_slot;

static struct {
    rnnx_slot slot[RNNX_MAX_WORKERS + 1];
    int pending;        /* members still running the job (the caller's futex word) */
    int caller_asleep;
    int started;        /* workers created */
    int busy;           /* a job is running (taken with a compare-and-swap) */
    int size;           /* members of the job */
    rnnx_job job;
    void *ctx;
} rnnx_pool_state;

#if RNNX_POOL
static void *rnnx_worker_main(void *arg) {
    int id = (int)(long)arg, seen = 0;
    rnnx_slot *slot = &rnnx_pool_state.slot[id];
    for (;;) {
        rnnx_wait_while(&slot->go, seen, &slot->asleep);
        seen = __atomic_load_n(&slot->go, __ATOMIC_ACQUIRE);
        rnnx_member_id = id;
        rnnx_member_count = rnnx_pool_state.size;
        rnnx_pool_state.job(rnnx_pool_state.ctx);
        rnnx_member_id = 0;
        rnnx_member_count = 1;
        /* seq_cst decrement, then load: either the caller's futex finds pending 0, or its
           caller_asleep increment (seq_cst, before its futex) is seen here and it is woken */
        if (__atomic_sub_fetch(&rnnx_pool_state.pending, 1, __ATOMIC_SEQ_CST) == 0
                && __atomic_load_n(&rnnx_pool_state.caller_asleep, __ATOMIC_SEQ_CST))
            rnnx_wake_all(&rnnx_pool_state.pending);
    }
    return NULL;
}

static void rnnx_pool_after_fork(void) {
    /* the child has none of the parent's workers: new ones start from clean slots */
    memset(&rnnx_pool_state, 0, sizeof(rnnx_pool_state));
}
#endif

/* Start workers up to n - 1 (at most RNNX_MAX_WORKERS); returns the team size available. */
static inline int rnnx_pool_grow(int n) {
#if RNNX_POOL
    static int atfork_registered = 0;
    if (!atfork_registered) {
        pthread_atfork(NULL, NULL, rnnx_pool_after_fork);
        atfork_registered = 1;
    }
    if (n - 1 > RNNX_MAX_WORKERS) n = RNNX_MAX_WORKERS + 1;
    /* workers start with every signal blocked (they inherit this thread's mask): signals
       go to Python's threads, and no handler runs on a kernel thread */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    while (rnnx_pool_state.started < n - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, rnnx_worker_main,
                                    (void *)(long)(rnnx_pool_state.started + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        rnnx_pool_state.started++;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return rnnx_pool_state.started + 1 < n ? rnnx_pool_state.started + 1 : n;
#else
    (void)n;
    return 1;
#endif
}

/* Run job(ctx) on `size` threads, this one as member 0 (see the top of this file). */
static inline void rnnx_pool_run(int size, rnnx_job job, void *ctx) {
    int idle = 0;
    if (size <= 1 || !__atomic_compare_exchange_n(&rnnx_pool_state.busy, &idle, 1, 0,
                                                  __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        job(ctx);   /* member 0 of 1 */
        return;
    }
    size = rnnx_pool_grow(size);
    rnnx_pool_state.job = job;
    rnnx_pool_state.ctx = ctx;
    rnnx_pool_state.size = size;
    __atomic_store_n(&rnnx_pool_state.pending, size - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&rnnx_pool_state.caller_asleep, 0, __ATOMIC_RELAXED);
    for (int id = 1; id < size; id++) {
        rnnx_slot *slot = &rnnx_pool_state.slot[id];
        /* seq_cst bump, then load: the worker either sees it or is woken */
        __atomic_add_fetch(&slot->go, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&slot->asleep, __ATOMIC_SEQ_CST) > 0) rnnx_wake_all(&slot->go);
    }
    rnnx_member_id = 0;
    rnnx_member_count = size;
    job(ctx);
    rnnx_member_count = 1;
    for (;;) {
        int left = __atomic_load_n(&rnnx_pool_state.pending, __ATOMIC_ACQUIRE);
        if (left == 0) break;
        rnnx_wait_while(&rnnx_pool_state.pending, left, &rnnx_pool_state.caller_asleep);
    }
    __atomic_store_n(&rnnx_pool_state.busy, 0, __ATOMIC_RELEASE);
}
#endif
