/* A team of OpenMP threads that share one time loop, meeting at a spinning barrier.
 *
 * When the batch is too small to split by rows (batch 1 above all), the threads split the
 * hidden units of every step instead and meet twice per step. OpenMP's own barrier sleeps
 * under OMP_WAIT_POLICY=PASSIVE (rnnx's default) and would cost a futex round trip per
 * step; this one spins for a few microseconds, then yields, so an oversubscribed machine
 * still makes progress. Sense-reversing: the last thread to arrive resets the count and
 * flips the shared sense that the others wait on.
 */
#ifndef RNNX_TEAM_H
#define RNNX_TEAM_H
#include <sched.h>
#ifdef _OPENMP
#include <omp.h>
static inline int rnnx_team_size(void) { return omp_get_num_threads(); }
static inline int rnnx_team_member(void) { return omp_get_thread_num(); }
#else
static inline int rnnx_team_size(void) { return 1; }
static inline int rnnx_team_member(void) { return 0; }
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNX_PAUSE() _mm_pause()
#else
#define RNNX_PAUSE() ((void)0)
#endif

typedef struct {
    int count;   /* threads arrived at the current barrier */
    int sense;   /* flips when the last one arrives */
    int size;    /* threads in the team */
} rnnx_barrier;

static inline void rnnx_barrier_init(rnnx_barrier *b) { b->count = 0; b->sense = 0; b->size = 1; }

/* Every member stores the team size before its first wait (all store the same value). */
static inline void rnnx_barrier_join(rnnx_barrier *b, int size) {
    __atomic_store_n(&b->size, size, __ATOMIC_RELAXED);
}

static inline void rnnx_barrier_wait(rnnx_barrier *b, int *local_sense) {
    int sense = !*local_sense;
    *local_sense = sense;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == __atomic_load_n(&b->size, __ATOMIC_RELAXED)) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, sense, __ATOMIC_RELEASE);
        return;
    }
    unsigned spins = 0;
    while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != sense) {
        if (++spins < 20000) RNNX_PAUSE(); else sched_yield();
    }
}
#endif
