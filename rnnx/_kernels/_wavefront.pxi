# Wavefront inference over a stack of unidirectional layers (included by _recurrent.pyx).
#
# Layer l at step t needs only layer l at step t-1 (its own state) and layer l-1 at step t
# (its input row), so layers can run on different threads at the same time, layer l a step
# or more behind layer l-1: the threads take diagonals of the (layer, step) grid. Each
# thread owns a contiguous group of layers (whose weights stay in its core's cache) for one
# block of batch rows; after each step of each layer it publishes the number of steps done
# (a release store), and a layer waits (acquire) until the layer below has done step t.
# One handoff per step and layer replaces the per-layer calls' barriers; a layer never waits
# for the layer above, whose input rows of step t stay untouched once written.
# Every step is _recur_forward's own code on the same rows (T = 1 at step t), so every
# element is the same dot product and gate arithmetic as in the layer-by-layer path: the
# results are bitwise the same, whatever the thread count.
from libc.stdlib cimport calloc, free

DEF PROGRESS_STRIDE = 16      # intp counters per progress slot: 128 bytes, no false sharing
DEF CHUNK_STEPS = 8           # steps of a layer's input projected by one GEMM

cdef extern from *:
    """
    #include <sched.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <immintrin.h>
    #define RNNX_WF_PAUSE() _mm_pause()
    #else
    #define RNNX_WF_PAUSE() ((void)0)
    #endif
    #ifndef RNNX_WF_SPINS
    #define RNNX_WF_SPINS 200
    #endif
    /* Publish `steps` done (release: the rows written before it are visible to whoever
       acquires the count). */
    static inline void rnnx_progress_publish(ptrdiff_t *p, ptrdiff_t steps) {
        __atomic_store_n(p, steps, __ATOMIC_RELEASE);
    }
    /* Wait until *p >= steps: spin a few microseconds, then yield the core (an
       oversubscribed machine still makes progress). */
    static inline void rnnx_progress_wait(const ptrdiff_t *p, ptrdiff_t steps) {
        unsigned spins = 0;
        while (__atomic_load_n(p, __ATOMIC_ACQUIRE) < steps) {
            if (++spins < RNNX_WF_SPINS) RNNX_WF_PAUSE(); else sched_yield();
        }
    }
    """
    void rnnx_progress_publish(intp *p, intp steps) noexcept nogil
    void rnnx_progress_wait(const intp *p, intp steps) noexcept nogil


cpdef bint uses_wavefront(int cell, intp B, intp num_layers, intp ndir, bint training,
                          intp I, intp H, intp P, intp itemsize, int num_threads) noexcept nogil:
    """Whether forward_stack runs a stack's inference as a wavefront (rather than layer by
    layer): several threads and layers, one direction, inference, no projection, every
    layer's weights small enough to be projected step by step (and to stay in one core's
    cache), a batch too small to split into row blocks (measured: with row blocks the
    layer-by-layer path needs no synchronisation at all and balances layers of unequal
    input width, and is faster), and steps big enough to pay for a handoff (as the team's,
    MIN_TEAM_WORK; measured: an RNN at H = 128 runs faster on one thread). Not with every
    product through BLAS (set_gemm_backend("blas")): its steps run on the micro-kernel."""
    return (num_threads > 1 and num_layers > 1 and ndir == 1 and not training and P == H
            and _gemm_backend != GEMM_BLAS
            and B < 2 * MIN_BLOCK_ROWS and P * NUM_GATES[cell] * H >= MIN_TEAM_WORK
            and projects_per_step(cell, I, P, H, itemsize)
            and projects_per_step(cell, P, P, H, itemsize))


cdef void _project_steps(intp t0, intp t1, const intp *bs, const intp *of, intp r0, intp r1,
                         intp I, intp GH, const floating *x, Dir *d) noexcept nogil:
    """gates[rows of steps t0..t1-1 in batch rows [r0, r1)] = x[those rows] @ w_ih.T: one GEMM
    when the rows are the whole batch (contiguous), else one per step."""
    cdef intp s, n
    if r0 == 0 and r1 >= bs[0]:
        _step_gemm(False, of[t1] - of[t0], GH, I, x + of[t0] * I, I,
                   <floating *> d.w_ih_panels, NULL, 0, False, False,
                   <floating *> d.gates + of[t0] * GH, GH)
        return
    for s in range(t0, t1):
        n = min(bs[s], r1) - r0
        if n > 0:
            _step_gemm(False, n, GH, I, x + (of[s] + r0) * I, I, <floating *> d.w_ih_panels,
                       NULL, 0, False, False, <floating *> d.gates + (of[s] + r0) * GH, GH)


cdef void _wavefront_worker(int typenum, int cell, intp L, intp T, const intp *bs,
                            const intp *of, intp I, intp H, intp P, void **outs, Dir *dirs,
                            intp *progress, const intp *bounds, intp groups,
                            intp task) noexcept nogil:
    """Task `task` of the wavefront: layer group task % groups (layers l0..l1-1) for the
    row block task // groups, step by step; layer l's input is outs[l - 1] (layer 0: dirs[0].x)
    and its output outs[l] (N, P). Layer 0's input projections are in its gates already; the
    first layer of a group projects CHUNK_STEPS steps of its input at once as soon as the group
    below has done them (its input weights streamed once per chunk, not once per step), the
    others step by step (the layer below is their own)."""
    cdef intp g = task % groups, blk = task // groups, l, t, t1, Il
    cdef intp l0 = g * L // groups, l1 = (g + 1) * L // groups
    cdef intp r0 = bounds[blk], r1 = bounds[blk + 1], GH = NUM_GATES[cell] * H
    cdef intp *mine = progress + blk * L * PROGRESS_STRIDE
    for t in range(T):
        for l in range(l0, l1):
            Il = I if l == 0 else P
            if l > 0 and (l > l0 or t % CHUNK_STEPS == 0):
                t1 = min(T, t + CHUNK_STEPS) if l == l0 else t + 1
                rnnx_progress_wait(mine + (l - 1) * PROGRESS_STRIDE, t1)
                if typenum == cnp.NPY_FLOAT32:
                    _project_steps[float](t, t1, bs, of, r0, r1, Il, GH, <float *> outs[l - 1],
                                          &dirs[l])
                else:
                    _project_steps[double](t, t1, bs, of, r0, r1, Il, GH,
                                           <double *> outs[l - 1], &dirs[l])
            if typenum == cnp.NPY_FLOAT32:
                _recur_forward[float](cell, False, False, 1, bs + t, of + t, r0, r1, Il, H, P,
                                      <float *> outs[l], P, &dirs[l])
            else:
                _recur_forward[double](cell, False, False, 1, bs + t, of + t, r0, r1, Il, H, P,
                                       <double *> outs[l], P, &dirs[l])
            rnnx_progress_publish(mine + l * PROGRESS_STRIDE, t + 1)


def forward_stack(int cell, object x, object batch_sizes, object offsets, list layers,
                  list outs, intp hidden_size, int num_threads=2):
    """Run a stack of unidirectional layers forward at inference as a wavefront.

    x: (N, I) input of the first layer; layers: per layer the one-direction dict of
    forward_layer (see Dir; no projection); outs: per layer its (N, H) output, each the input
    of the next; each dict also has `gates` (N, G*H), scratch for the input projections of
    every step. `h` and `c` of each dict hold the initial states on entry and the final ones
    on return. The results are bitwise those of forward_layer called layer by layer.
    """
    cdef intp T, B, N, H = hidden_size, I, L = len(layers), l, tasks, groups, nblocks
    _check_packing(batch_sizes, offsets, &T, &B, &N)
    if cell < 0 or cell > 3:
        raise ValueError(f"unknown cell kind {cell}")
    if L < 1 or len(outs) != L:
        raise ValueError("one output array per layer expected")
    cdef int typenum = _float_type(x)
    I = x.shape[1]
    if x.shape[0] != N:
        raise ValueError("x must have one row per packed step")
    if any(d.get("w_hr") is not None for d in layers):
        raise ValueError("forward_stack does not take projections")
    cdef Dir *dirs = <Dir *> calloc(L, sizeof(Dir))
    cdef void **outp = <void **> calloc(L, sizeof(void *))
    cdef intp *progress = <intp *> calloc(MAX_BLOCKS * L * PROGRESS_STRIDE, sizeof(intp))
    cdef intp[MAX_BLOCKS + 1] bounds
    cdef const intp *bs = <intp *> cnp.PyArray_DATA(<cnp.ndarray> batch_sizes)
    cdef const intp *of = <intp *> cnp.PyArray_DATA(<cnp.ndarray> offsets)
    cdef int threads, me, size, claimed = 0
    if dirs == NULL or outp == NULL or progress == NULL:
        free(dirs); free(outp); free(progress)
        raise MemoryError()
    try:
        for l in range(L):
            outp[l] = _ptr(outs[l], typenum, N * H, f"outs[{l}]")
            _fill_dir(&dirs[l], layers[l], typenum, cell, False, False, False, N, B,
                      I if l == 0 else H, H, H, num_threads)
            dirs[l].gates = _ptr(layers[l].get("gates"), typenum, N * NUM_GATES[cell] * H,
                                 f"gates of layer {l}")
            # Every product on the micro-kernel, the up-front input projection too ("auto"
            # would give it to BLAS): the layer-by-layer path projects these layers' inputs
            # step by step on the micro-kernel, and the bits must be the same.
            dirs[l].gemm_backend = GEMM_MICROKERNEL
            dirs[l].x = _ptr(x, typenum, N * I, "x") if l == 0 else outp[l - 1]
        # threads: layer groups x row blocks, at most one task per thread, taken from the
        # process's budget (team.h) like every kernel call's
        num_threads = rnnx_claim_threads(num_threads)
        claimed = num_threads
        groups = min(max(num_threads, 1), L)
        _row_blocks(T, bs, 1, max(num_threads // groups, 1), 1, &nblocks, bounds)  # micro-kernel steps
        tasks = groups * nblocks
        threads = <int> tasks
        with nogil:
            # b_sum of every layer, and layer 0's input projections of every step
            for l in range(L):
                dirs[l].xs = NULL if l == 0 else dirs[l].gates   # not NULL: no projection
                if typenum == cnp.NPY_FLOAT32:
                    _project_inputs[float](cell, N, I, H, <float *> dirs[0].x, &dirs[l],
                                           num_threads)
                else:
                    _project_inputs[double](cell, N, I, H, <double *> dirs[0].x, &dirs[l],
                                            num_threads)
                dirs[l].xs = NULL       # the time loop reads the projections from gates
            if threads <= 1:
                _wavefront_worker(typenum, cell, L, T, bs, of, I, H, H, outp, dirs, progress,
                                  bounds, groups, 0)
            else:
                with parallel(num_threads=threads):
                    me = rnnx_team_member()
                    size = rnnx_team_size()
                    # fewer threads than asked (nested parallelism): each runs the tasks
                    # left over in task order, which the lower layers' progress allows
                    while me < tasks:
                        _wavefront_worker(typenum, cell, L, T, bs, of, I, H, H, outp, dirs,
                                          progress, bounds, groups, me)
                        me = me + size
    finally:
        if claimed:
            rnnx_release_threads(claimed)
        free(dirs)
        free(outp)
        free(progress)
