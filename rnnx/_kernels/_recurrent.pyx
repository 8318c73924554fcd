# Fused LSTM / GRU / RNN layer kernels, forward and backward through time.
#
# One call runs one layer, both directions. Rows of a batch never interact, so the time loop
# is split into tasks (direction x block of batch rows) that run on parallel threads; a batch
# too small for row blocks runs on a team of threads split by hidden units instead (team.h);
# the whole-sequence GEMMs are split into blocks of rows. Every element is the same dot
# product in the same order, and every gate the same arithmetic, whichever thread computes
# it, and BLAS itself stays single-threaded (rnnx._threads): results are bitwise the same
# whatever the number of threads.
# The sequence is *packed* as in PyTorch's PackedSequence: step t holds the first
# batch_sizes[t] rows of a length-sorted batch, stored at rows offsets[t] .. offsets[t+1]
# of the (N, features) arrays, N = sum(batch_sizes). A full-length batch is the special
# case batch_sizes = [B] * T, whose packed layout is just x.reshape(T * B, -1).
#
# Gate conventions are PyTorch's:
#   LSTM  i, f, g, o:  c' = f*c + i*g,  h' = o*tanh(c')   (h' = W_hr (o*tanh(c')) with proj_size)
#   GRU   r, z, n:     n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),  h' = (1-z)*n + z*h
#   RNN   h' = tanh or relu(W_ih x + b_ih + W_hh h + b_hh)
#
# Forward per direction and step: the input projection GEMM (or, for weights too big for
# L2, one GEMM for all N rows up front), the recurrent GEMM, and one fused loop for gates
# and states (gates.h). Training stores the activated gates (what backward needs), and
# backward overwrites them with the pre-activation gate gradients, which the whole-sequence
# GEMMs for dW_ih, dW_hh and dX then read.
cimport numpy as cnp
from libc.stdint cimport uint32_t
from libc.string cimport memcmp, memcpy
import numpy as np

from ._blas cimport floating, gemm

cnp.import_array()

DEF MAX_BLOCKS = 64
DEF MIN_BLOCK_ROWS = 8
# A batch of fewer rows than two row blocks: its time loop runs on a team split by hidden
# units (shares_time_loop), and its inputs are projected up front (projects_per_step).
DEF SMALL_BATCH = 2 * MIN_BLOCK_ROWS
DEF K_CHUNK = 256             # rows of k per packed chunk in the weight-gradient GEMMs
DEF MIN_TEAM_WORK = 32768     # multiply-adds per row and step worth two barriers
# With the BLAS backend the time loop's products are cut into tiles of BLAS_ROWS x BLAS_COLS at
# fixed places (row blocks start at multiples of BLAS_ROWS, team shares at multiples of
# BLAS_COLS): OpenBLAS's bits depend on a call's m and n, so every call must be the same
# whatever the thread count.
DEF BLAS_ROWS = 32
DEF BLAS_COLS = 64

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64) || defined(__SSE__)
    #include <xmmintrin.h>
    /* Flush denormal results to zero and treat denormal inputs as zero (MXCSR FTZ|DAZ). */
    static inline unsigned int rnnx_flush_denormals(void) {
        unsigned int old = _mm_getcsr(); _mm_setcsr(old | 0x8040); return old;
    }
    static inline void rnnx_restore_fp_mode(unsigned int old) { _mm_setcsr(old); }
    #else
    static inline unsigned int rnnx_flush_denormals(void) { return 0; }
    static inline void rnnx_restore_fp_mode(unsigned int old) { (void)old; }
    #endif
    """
    unsigned int rnnx_flush_denormals() noexcept nogil
    void rnnx_restore_fp_mode(unsigned int) noexcept nogil

cdef extern from *:
    """
    #ifndef RNNX_BUILD_FLAGS
    #define RNNX_BUILD_FLAGS ""
    #endif
    """
    const char *RNNX_BUILD_FLAGS

# The instruction-set flags this module was compiled with (setup.py's LEVELS).
BUILD_FLAGS = (<bytes> RNNX_BUILD_FLAGS).decode()

# Cell kinds and their number of gates.
cpdef enum Cell:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3

cdef int[4] NUM_GATES = [1, 1, 4, 3]

# GEMM backends: AUTO picks per kind of product (_use_blas); the others run every product
# through the micro-kernel (microgemm.h) or through BLAS (scipy.linalg.cython_blas).
cpdef enum GemmBackend:
    GEMM_AUTO = 0
    GEMM_BLAS = 1
    GEMM_MICROKERNEL = 2

cdef int _gemm_backend = GEMM_AUTO


def set_gemm_backend(int backend):
    """Use GemmBackend `backend` in the calls that follow."""
    global _gemm_backend
    if backend not in (GEMM_AUTO, GEMM_BLAS, GEMM_MICROKERNEL):
        raise ValueError(f"unknown GEMM backend {backend}")
    _gemm_backend = backend


def get_gemm_backend():
    return GemmBackend(_gemm_backend)

# Kinds of product, for the AUTO backend: the time loop's per-step products, the
# whole-sequence input projection and input gradient, the weight gradients.
cdef enum Product:
    STEP_PRODUCT
    SEQUENCE_PRODUCT
    WEIGHT_GRADIENT

ctypedef cnp.intp_t intp


cdef struct Dir:
    # Everything one direction of one layer reads and writes; NULL where unused.
    # Forward: weights, initial state, running state (ends as h_n/c_n), workspaces.
    void *w_hh_panels  # w_hh.T (forward) or w_hh (backward) packed in panels (microgemm.h)
    void *w_ih_panels  # w_ih.T (forward) or w_ih (backward) packed in panels
    void *b_ih       # (G*H,)  zeros when the module has no bias
    void *b_hh       # (G*H,)
    void *b_sum      # (G*H,) forward scratch: b_ih + b_hh (GRU: b_ih alone in the n columns)
    void *w_hr_panels  # w_hr.T (forward) or w_hr (backward) in panels: LSTM projection, or NULL
    void *h          # (B, P) running hidden state: h0 in, h_n out; backward: dh_n in, dh0 out
    void *c          # (B, H) running cell state (LSTM); backward: dc_n in, dc0 out
    void *x          # (N, I) the layer input (forward, when projected step by step)
    void *xs         # (B, G*H) input projection of one step (forward, step by step), or NULL
    void *gates      # (N, G*H) [input projections of every step, when projected up front ->]
                     # activated gates (training) -> gate gradients (backward)
    void *hg         # (B, G*H) recurrent GEMM result for one step; backward scratch
    void *h0         # (B, P) initial hidden state (training): the state entering each later
                     # step is in the layer output, which backward reads at out
    void *out        # backward: this direction's columns of the layer output (N rows, ldo
    intp ldo         # apart), the hidden state each step produced
    void *cbuf       # (N, H) cell state leaving each step (LSTM training)
    void *c0         # (B, H) initial cell state (LSTM training): the state entering each
                     # later step is in cbuf
    void *hn         # (N, H) W_hn h + b_hn per step (GRU training); backward: its gradient
    void *m          # (N, H) o*tanh(c) per step (LSTM proj; (B, H) when not training)
    void *dhtot      # (N, P) hidden-state gradient per step (LSTM proj backward)
    void *dm         # (B, H) gradient of o*tanh(c) for one step (LSTM proj backward)
    # Backward gradient accumulators (+=): NULL bias grads when the module has no bias.
    void *x_chunks   # per thread, K_CHUNK rows of the layer input in panels, for gw_ih
    void *gw_ih
    void *gw_hh
    void *gb_ih
    void *gb_hh
    void *gw_hr
    # The GEMM backend of this call (set_gemm_backend), and for BLAS the weights as they
    # are: w_ih (GH, I), w_hh (GH, P) and w_hr (P, H) (LSTM projection, or NULL), row-major.
    int gemm_backend
    void *w_ih
    void *w_hh
    void *w_hr


cdef extern from "vmath.h":
    void rnnx_tanh_f(float *a, intp n) noexcept nogil
    void rnnx_tanh_d(double *a, intp n) noexcept nogil


cdef extern from "gates.h":
    void rnnx_lstm_forward_row_f(intp n, intp H, const float *x, const float *hr,
                                 const float *b, float *g, float *c, float *m) noexcept nogil
    void rnnx_lstm_forward_row_d(intp n, intp H, const double *x, const double *hr,
                                 const double *b, double *g, double *c, double *m) noexcept nogil
    void rnnx_lstm_backward_row_f(intp n, intp H, float *g, const float *cn, const float *cp,
                                  const float *dm, float *dc) noexcept nogil
    void rnnx_lstm_backward_row_d(intp n, intp H, double *g, const double *cn,
                                  const double *cp, const double *dm, double *dc) noexcept nogil
    void rnnx_gru_forward_row_f(intp n, intp H, const float *x, const float *hr,
                                const float *b, const float *bhn, float *g, float *hn,
                                float *h) noexcept nogil
    void rnnx_gru_forward_row_d(intp n, intp H, const double *x, const double *hr,
                                const double *b, const double *bhn, double *g, double *hn,
                                double *h) noexcept nogil
    void rnnx_gru_backward_row_f(intp n, intp H, float *g, float *hn, const float *hp,
                                 float *dgh, float *dh) noexcept nogil
    void rnnx_gru_backward_row_d(intp n, intp H, double *g, double *hn, const double *hp,
                                 double *dgh, double *dh) noexcept nogil


cdef extern from "team.h":
    ctypedef struct rnnx_barrier:
        pass
    void rnnx_barrier_init(rnnx_barrier *b) noexcept nogil
    void rnnx_barrier_join(rnnx_barrier *b, int size) noexcept nogil
    void rnnx_barrier_wait(rnnx_barrier *b, int *local_sense) noexcept nogil
    int rnnx_team_size() noexcept nogil
    int rnnx_team_member() noexcept nogil
    ctypedef void (*rnnx_job)(void *ctx) noexcept nogil
    void rnnx_pool_run(int size, rnnx_job job, void *ctx) noexcept nogil
    int rnnx_claim_threads(int want) noexcept nogil
    int rnnx_team_allowed() noexcept nogil
    void rnnx_team_review(const rnnx_barrier *b, long steps) noexcept nogil
    void rnnx_release_threads(int n) noexcept nogil
    int rnnx_busy_threads


cdef extern from "microgemm.h":
    void rnnx_sgemm_nn(intp m, intp n, intp k, const float *a, intp ars, intp aps,
                       const float *bp, intp panel_stride, int accumulate, float *c,
                       intp ldc) noexcept nogil
    void rnnx_dgemm_nn(intp m, intp n, intp k, const double *a, intp ars, intp aps,
                       const double *bp, intp panel_stride, int accumulate, double *c,
                       intp ldc) noexcept nogil

# Columns per panel of a packed B operand: 64 bytes (rnn.panels packs them).
cdef inline intp _panel_width(floating *unused) noexcept nogil:
    return 64 // sizeof(floating)


cdef inline void _panel_gemm(intp m, intp n, intp k, const floating *a, intp ars, intp aps,
                             const floating *bp, intp panel_stride, bint accumulate, floating *c,
                             intp ldc) noexcept nogil:
    if floating is float:
        rnnx_sgemm_nn(m, n, k, a, ars, aps, bp, panel_stride, accumulate, c, ldc)
    else:
        rnnx_dgemm_nn(m, n, k, a, ars, aps, bp, panel_stride, accumulate, c, ldc)


cdef bint _use_blas(const Dir *d, Product kind) noexcept nogil:
    """Whether products of this kind run through BLAS. AUTO, from measurements (README,
    "Portable builds and GEMM backends"): the time loop's products (a few rows per step, the
    weights packed once per call) through the micro-kernel, the whole-sequence ones
    (thousands of rows, or a long k) through BLAS. The time loop's choice is one for all its products, forward and backward:
    the row blocks and team shares follow it (BLAS_ROWS, BLAS_COLS)."""
    if d.gemm_backend != GEMM_AUTO:
        return d.gemm_backend == GEMM_BLAS
    return kind != STEP_PRODUCT


cdef void _product(bint blas, intp m, intp n, intp k, const floating *a, intp ars, intp aps,
                   const floating *bp, intp panel_stride, const floating *b, intp ldb,
                   bint trans_b, bint accumulate, floating *c, intp ldc) noexcept nogil:
    """Every GEMM of the kernels: C (m, n) (+)= A (m, k) @ B (k, n), C row-major (row stride
    ldc), A[i, p] = a[i * ars + p * aps] (row-major A: aps = 1; stored transposed: ars = 1).
    The micro-kernel reads B in panels at bp (panel_stride apart, microgemm.h); BLAS (one
    single-threaded call) reads b: B (k, n) row-major with row stride ldb, or B.T (n, k)
    when trans_b; when b is NULL, each panel of bp as a (k, w) row-major matrix."""
    cdef bint trans_a = aps != 1
    cdef intp lda = aps if trans_a else max(ars, k), w = _panel_width(c), j
    cdef floating beta = 1 if accumulate else 0
    if not blas:
        _panel_gemm(m, n, k, a, ars, aps, bp, panel_stride, accumulate, c, ldc)
    elif b != NULL:
        gemm(trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
    else:
        for j in range((n + w - 1) // w):
            gemm(trans_a, False, m, min(w, n - j * w), k, 1, a, lda, bp + j * panel_stride, w,
                 beta, c + j * w, ldc)


cdef inline void _step_gemm(bint blas, intp m, intp n, intp k, const floating *a, intp lda,
                            const floating *bp, const floating *b, intp ldb, bint trans_b,
                            bint accumulate, floating *c, intp ldc) noexcept nogil:
    """C (m, n) (+)= A (m, k) @ B (k, n) of the time loop, A row-major; bp: B in panels
    (microgemm.h), b: B for BLAS (see _product), which runs in fixed tiles of BLAS_ROWS x
    BLAS_COLS counted from the first row and column (callers start at multiples of them)."""
    cdef intp i, j
    if not blas:
        _panel_gemm(m, n, k, a, lda, 1, bp, k * _panel_width(c), accumulate, c, ldc)
        return
    for i in range(0, m, BLAS_ROWS):
        for j in range(0, n, BLAS_COLS):
            _product(True, min(BLAS_ROWS, m - i), min(BLAS_COLS, n - j), k, a + i * lda, lda, 1,
                     NULL, 0, b + j * ldb if trans_b else b + j, ldb, trans_b, accumulate,
                     c + i * ldc + j, ldc)


cdef inline void _column_sums(intp rows, intp c0, intp c1, const floating *a, intp lda,
                              floating *acc, floating *acc2, intp n2) noexcept nogil:
    """acc[c0:c1] += a[:rows, c0:c1].sum(0) and, if acc2 is not NULL, acc2[c0:n2] likewise
    (columns below n2 only), rows added in order; nothing when acc is NULL."""
    cdef intp r, j, j2 = min(c1, n2)
    if acc == NULL:
        return
    for r in range(rows):
        for j in range(c0, c1):
            acc[j] += a[r * lda + j]
        if acc2 != NULL:
            for j in range(c0, j2):
                acc2[j] += a[r * lda + j]


cdef struct Rows:
    # The B operand (k, n) of a weight gradient, row by row. Row i is at b + i * ldb, or,
    # when bs is not NULL, it is the hidden state entering packed row i of a direction
    # (_entering_row): a row of b (the direction's output columns, row stride ldb) or of h0.
    const void *b
    intp ldb
    const void *h0          # (B, n) initial state
    const intp *bs          # the packing (batch_sizes, offsets, T) and the direction
    const intp *of
    intp T
    bint reverse


cdef inline intp _previous_row(bint reverse, intp t, intp T, const intp *bs, const intp *of,
                               intp rr) noexcept nogil:
    """The packed row of batch row rr at the step before t in its direction's order, or -1
    when rr was not alive there (its state entering t is then the initial one)."""
    cdef intp tp = t + 1 if reverse else t - 1
    if 0 <= tp < T and rr < bs[tp]:
        return of[tp] + rr
    return -1


cdef inline const floating *_entering_row(const floating *out, intp ldo, const floating *h0,
                                          intp P, intp prev, intp rr) noexcept nogil:
    """The hidden state entering a step of batch row rr whose previous row is `prev`
    (_previous_row): that row of the direction's output columns, or rr's initial state."""
    return out + prev * ldo if prev >= 0 else h0 + rr * P


cdef const floating *_pack_chunk(bint blas, const Rows *rows, intp k0, intp kc, intp n,
                                 floating *buf) noexcept nogil:
    """Rows k0..k0+kc of B (see Rows) as the product reads them: for BLAS, row-major (kc, n)
    with row stride n, read in place when B is a plain matrix with that row stride and
    gathered into buf otherwise; for the micro-kernel, packed into buf in panels
    (microgemm.h: buf[j, r, q] = B[k0 + r, j * w + q]). The padding columns of the last panel
    are left as they are: they only feed output lanes that are never stored."""
    cdef intp w = _panel_width(buf), r, i, jp, t = 0, lo, hi, mid
    cdef const floating *b = <const floating *> rows.b
    cdef const floating *row
    if blas and rows.bs == NULL and rows.ldb == n:
        return b + k0 * n
    if rows.bs != NULL:
        lo = 0                      # the step holding packed row k0
        hi = rows.T - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if rows.of[mid] <= k0:
                lo = mid
            else:
                hi = mid - 1
        t = lo
    for r in range(kc):
        i = k0 + r
        if rows.bs == NULL:
            row = b + i * rows.ldb
        else:
            while i >= rows.of[t + 1]:
                t += 1
            row = _entering_row(b, rows.ldb, <const floating *> rows.h0, n,
                                _previous_row(rows.reverse, t, rows.T, rows.bs, rows.of,
                                              i - rows.of[t]), i - rows.of[t])
        if blas:
            memcpy(buf + r * n, row, n * sizeof(floating))
        else:
            for jp in range((n + w - 1) // w):
                memcpy(buf + (jp * kc + r) * w, row + jp * w,
                       min(w, n - jp * w) * sizeof(floating))
    return buf


cdef void _chunk_blocks(bint blas, intp first, intp step, intp blocks, intp m, intp n, intp kc,
                        const floating *a, intp lda, const floating *b, floating *c,
                        floating *acc, floating *acc2, intp n2) noexcept nogil:
    """For row blocks first, first + step, ... of `blocks`: C[r0:r1] (+)= A[:, r0:r1].T @ B
    of one chunk of kc rows (a: the chunk's rows of A, b: of B as _pack_chunk returns them),
    and the column sums of A[:, r0:r1] (_column_sums)."""
    cdef intp i = first, r0, r1
    while i < blocks:
        r0 = i * m // blocks
        r1 = (i + 1) * m // blocks
        _product(blas, r1 - r0, n, kc, a + r0, 1, lda, b, kc * _panel_width(c), b, n, False,
                 True, c + r0 * n, n)
        _column_sums(kc, r0, r1, a, lda, acc, acc2, n2)
        i += step


cdef void _gemm_tn_accumulate(bint blas, intp m, intp n, intp k, const floating *a, intp lda,
                              const Rows *rows, floating *chunks, floating *c, floating *acc,
                              floating *acc2, intp n2, int num_threads) noexcept nogil:
    """C (m, n) += A.T @ B over a long k: a = A (k, m) row-major with row stride lda, read in
    place; B (k, n) given by `rows`. Also acc (m,) += A.sum(0) and acc2 (n2,) += A[:, :n2].sum(0)
    (the bias gradients; NULL: none), while each piece of A is still in cache.

    k is cut into chunks of K_CHUNK rows; each thread packs a chunk of B (_pack_chunk) into
    its own part of `chunks` (x_chunks_size elements), unless BLAS reads it in place, and
    adds the chunk's product to its blocks of C's rows, in chunk order. The blocks are fixed and each element is summed in the
    same order whichever thread owns it (the micro-kernel's dot products do not depend on the
    rows of a call; BLAS's do, so it always runs block by block): the result does not depend
    on the thread count, nor do the sums, each column's rows being added in order."""
    cdef intp w = _panel_width(c), blocks = (m + 127) // 128, k0 = 0, kc = 0
    cdef intp chunk = K_CHUNK * ((n + w - 1) // w) * w
    if num_threads <= 1 or blocks <= 1:
        for k0 in range(0, k, K_CHUNK):
            kc = min(K_CHUNK, k - k0)
            _chunk_blocks(blas, 0, 1, blocks if blas else 1, m, n, kc, a + k0 * lda, lda,
                          _pack_chunk(blas, rows, k0, kc, n, chunks), c, acc, acc2, n2)
        return
    cdef TnJob job
    job.blas, job.is_float, job.m, job.n, job.k = blas, floating is float, m, n, k
    job.a, job.lda, job.rows, job.chunks, job.chunk = a, lda, rows, chunks, chunk
    job.c, job.acc, job.acc2, job.n2, job.blocks = c, acc, acc2, n2, blocks
    rnnx_pool_run(num_threads, _tn_job, &job)


cdef struct TnJob:
    # _gemm_tn_accumulate's arguments, for its members (_tn_job)
    bint blas, is_float
    intp m, n, k, lda, chunk, blocks, n2
    const void *a
    const Rows *rows
    void *chunks
    void *c
    void *acc
    void *acc2


cdef void _tn_job(void *ctx) noexcept nogil:
    cdef TnJob *j = <TnJob *> ctx
    if j.is_float:
        _tn_member[float](j, <float *> j.chunks)
    else:
        _tn_member[double](j, <double *> j.chunks)


cdef void _tn_member(TnJob *j, floating *chunks) noexcept nogil:
    """This member's row blocks of every chunk of a _gemm_tn_accumulate, packing B's chunks
    into its own part of the scratch."""
    cdef int me = rnnx_team_member(), size = rnnx_team_size()
    cdef floating *buf = chunks + me * j.chunk
    cdef const floating *a = <const floating *> j.a
    cdef intp k0, kc
    for k0 in range(0, j.k, K_CHUNK):
        kc = min(K_CHUNK, j.k - k0)
        _chunk_blocks(j.blas, me, size, j.blocks, j.m, j.n, kc, a + k0 * j.lda, j.lda,
                      _pack_chunk(j.blas, j.rows, k0, kc, j.n, buf), <floating *> j.c,
                      <floating *> j.acc, <floating *> j.acc2, j.n2)


cpdef intp x_chunks_size(intp I, intp itemsize, int num_threads) noexcept nogil:
    """Elements of the x_chunks scratch that backward_layer needs for an input of I features."""
    cdef intp w = 64 // itemsize
    return num_threads * K_CHUNK * ((I + w - 1) // w) * w


cdef void _parallel_step_gemm(bint blas, intp m, intp n, intp k, const floating *a, intp lda,
                              const floating *bp, const floating *b, intp ldb, bint trans_b,
                              bint accumulate, floating *c, intp ldc,
                              int num_threads) noexcept nogil:
    """A whole-sequence C (m, n) (+)= A (m, k) @ B (k, n) (see _product) over blocks of rows
    of C on up to num_threads threads. Every element is the same dot product whichever block
    computes it, so the result is independent of threads; BLAS always runs block by block."""
    cdef intp blocks = (m + 191) // 192, panel_stride = k * _panel_width(c)
    if not blas and (num_threads <= 1 or blocks <= 1):
        _panel_gemm(m, n, k, a, lda, 1, bp, panel_stride, accumulate, c, ldc)
        return
    cdef StepJob job
    job.blas, job.is_float, job.m, job.n, job.k, job.a, job.lda = blas, floating is float, m, n, k, a, lda
    job.bp, job.b, job.ldb, job.trans_b, job.accumulate = bp, b, ldb, trans_b, accumulate
    job.c, job.ldc, job.blocks, job.panel_stride = c, ldc, blocks, panel_stride
    rnnx_pool_run(num_threads if blocks > 1 else 1, _step_gemm_job, &job)


cdef struct StepJob:
    # _parallel_step_gemm's arguments, for its members (_step_gemm_job)
    bint blas, is_float, trans_b, accumulate
    intp m, n, k, lda, ldb, ldc, blocks, panel_stride
    const void *a
    const void *bp
    const void *b
    void *c


cdef void _step_gemm_job(void *ctx) noexcept nogil:
    cdef StepJob *j = <StepJob *> ctx
    if j.is_float:
        _step_gemm_member[float](j, <float *> j.c)
    else:
        _step_gemm_member[double](j, <double *> j.c)


cdef void _step_gemm_member(StepJob *j, floating *c) noexcept nogil:
    """This member's share of the row blocks of a _parallel_step_gemm (a contiguous range)."""
    cdef int me = rnnx_team_member(), size = rnnx_team_size()
    cdef intp i, r0, r1
    for i in range(me * j.blocks // size, (me + 1) * j.blocks // size):
        r0 = i * j.m // j.blocks
        r1 = (i + 1) * j.m // j.blocks
        _product(j.blas, r1 - r0, j.n, j.k, <const floating *> j.a + r0 * j.lda, j.lda, 1,
                 <const floating *> j.bp, j.panel_stride, <const floating *> j.b, j.ldb,
                 j.trans_b, j.accumulate, c + r0 * j.ldc, j.ldc)


cdef inline void _tanh(floating *a, intp n) noexcept nogil:
    """a[:n] = tanh(a[:n]), vectorized."""
    if floating is float:
        rnnx_tanh_f(a, n)
    else:
        rnnx_tanh_d(a, n)


cpdef bint weights_fit_cache(int cell, intp I, intp P, intp H, intp itemsize) noexcept nogil:
    """Whether a direction's input and recurrent weights fit together in a 512 KiB L2."""
    return (I + P) * NUM_GATES[cell] * H * itemsize <= 512 * 1024


cpdef bint projects_per_step(int cell, intp B, intp I, intp P, intp H,
                             intp itemsize) noexcept nogil:
    """Whether the forward time loop projects each step's input itself, just before its
    recurrent GEMM, so the gate loop finds both terms in cache (weights that fit in L2),
    rather than projecting every step up front in one GEMM: bigger weights, which the
    per-step GEMMs would stream from memory at every step, and batches of fewer than
    SMALL_BATCH rows, whose steps are a few rows each: streaming the input weights
    once instead of at every step leaves L2 to the recurrent weights (LSTM, H = 128, batch 1:
    the second layer's time loop 2.5x faster)."""
    return B >= SMALL_BATCH and weights_fit_cache(cell, I, P, H, itemsize)


cdef void _project_inputs(int cell, intp B, intp N, intp I, intp H, const floating *x,
                          Dir *d, int num_threads) noexcept nogil:
    """b_sum = b_ih + b_hh, which the time loop adds to the two GEMM terms (the GRU's n
    columns take b_ih alone: its b_hn goes inside r * (W_hn h + b_hn)); when d.xs is NULL,
    also the input projection of every step into gates: for a small batch (B rows per step)
    with the time loop's products (the micro-kernel under "auto"), as it would be projected
    step by step."""
    cdef intp GH = NUM_GATES[cell] * H, j
    cdef floating *b_sum = <floating *> d.b_sum
    cdef const floating *b_ih = <floating *> d.b_ih
    cdef const floating *b_hh = <floating *> d.b_hh
    for j in range(GH):
        b_sum[j] = b_ih[j] + (b_hh[j] if cell != GRU or j < 2 * H else 0)
    if d.xs == NULL:
        # gates (N, GH) = x (N, I) @ w_ih.T      -- input projection of every step at once
        _parallel_step_gemm(_use_blas(d, STEP_PRODUCT if B < SMALL_BATCH else
                                      SEQUENCE_PRODUCT), N, GH, I, x, I,
                            <floating *> d.w_ih_panels, <floating *> d.w_ih, I, True, False,
                            <floating *> d.gates, GH, num_threads)


cdef void _gate_rows(int cell, bint training, intp n, intp off, intp r0, intp u0, intp u1,
                     intp H, intp P, floating *mstep, floating *out, intp ldo,
                     Dir *d) noexcept nogil:
    """The fused gate loop of one step for hidden units [u0, u1) of n rows (batch rows r0..,
    packed rows off..), whose GEMM terms are in xs (or gates) and hg; writes the new state
    (h, c), the activated gates (training: gates; else over xs), and out (no projection)."""
    cdef intp GH = NUM_GATES[cell] * H, nu = u1 - u0, r, j
    cdef const floating *b_hh = <floating *> d.b_hh
    cdef const floating *b_sum = <floating *> d.b_sum
    cdef floating *xs = <floating *> d.xs
    cdef floating *gates = <floating *> d.gates
    cdef floating *xrow
    cdef floating *xg
    cdef floating *hr
    cdef floating *hrow
    cdef floating *crow
    cdef floating *mrow
    cdef floating *hnrow
    for r in range(n):
        xrow = xs + (r0 + r) * GH if xs != NULL else gates + (off + r) * GH
        xg = gates + (off + r) * GH if training else xrow   # where the activated gates go
        hr = <floating *> d.hg + (r0 + r) * GH
        hrow = <floating *> d.h + (r0 + r) * P
        if cell == LSTM:
            crow = <floating *> d.c + (r0 + r) * H
            mrow = mstep + r * H if mstep != NULL else hrow
            # i, f, g, o = gates; c' = f * c + i * g; m = o * tanh(c')
            if floating is float:
                rnnx_lstm_forward_row_f(nu, H, xrow + u0, hr + u0, b_sum + u0, xg + u0,
                                        crow + u0, mrow + u0)
            else:
                rnnx_lstm_forward_row_d(nu, H, xrow + u0, hr + u0, b_sum + u0, xg + u0,
                                        crow + u0, mrow + u0)
            if training:
                memcpy(<floating *> d.cbuf + (off + r) * H + u0, crow + u0,
                       nu * sizeof(floating))
        elif cell == GRU:
            # r, z, n = gates; h' = n + z * (h - n), hn = W_hn h + b_hn kept for backward
            hnrow = <floating *> d.hn + (off + r) * H if training else hr + 2 * H
            if floating is float:
                rnnx_gru_forward_row_f(nu, H, xrow + u0, hr + u0, b_sum + u0, b_hh + 2 * H + u0,
                                       xg + u0, hnrow + u0, hrow + u0)
            else:
                rnnx_gru_forward_row_d(nu, H, xrow + u0, hr + u0, b_sum + u0, b_hh + 2 * H + u0,
                                       xg + u0, hnrow + u0, hrow + u0)
        else:
            for j in range(u0, u1):
                xg[j] = xrow[j] + (hr[j] + b_sum[j])
            if cell == RNN_TANH:
                _tanh(xg + u0, nu)
            else:
                for j in range(u0, u1):
                    xg[j] = 0 if xg[j] < 0 else xg[j]
            memcpy(hrow + u0, xg + u0, nu * sizeof(floating))
        if mstep == NULL:
            memcpy(out + (off + r) * ldo + u0, hrow + u0, nu * sizeof(floating))


# The LSTM projection h = W_hr m (proj_size): its three products. Like every other product
# they run on the micro-GEMM, whose every element is one dot product summed in k order, so
# the results do not depend on how many rows a call gets (a BLAS call's bits do: its kernels
# split rows by count) nor on the thread count.

cdef inline void _project(bint blas, intp n, intp H, intp P, const floating *m,
                          const floating *w_hr_panels, const floating *w_hr,
                          floating *h) noexcept nogil:
    """h (n, P) = m (n, H) @ w_hr.T; w_hr_panels: w_hr.T (H, P) in panels, w_hr (P, H)."""
    _step_gemm(blas, n, P, H, m, H, w_hr_panels, w_hr, H, True, False, h, P)


cdef inline void _project_backward(bint blas, intp n, intp H, intp P, const floating *dh,
                                   const floating *w_hr_panels, const floating *w_hr,
                                   floating *dm) noexcept nogil:
    """dm (n, H) = dh (n, P) @ w_hr; w_hr_panels: w_hr (P, H) in panels, w_hr (P, H)."""
    _step_gemm(blas, n, H, P, dh, P, w_hr_panels, w_hr, H, False, False, dm, H)


cdef void _projection_weight_grad(bint blas, intp N, intp H, intp P, const floating *dhtot,
                                  const floating *m, floating *chunks, floating *gw_hr,
                                  int nt) noexcept nogil:
    """gw_hr (P, H) += dhtot.T (P, N) @ m (N, H): chunks of K_CHUNK steps added in order, the
    rows of gw_hr in fixed blocks over the threads (as gw_ih; chunks: scratch for m's
    chunks, x_chunks_size(H) elements)."""
    cdef Rows m_rows = Rows(b=m, ldb=H, h0=NULL, bs=NULL, of=NULL, T=0, reverse=False)
    _gemm_tn_accumulate(blas, P, H, N, dhtot, P, &m_rows, chunks, gw_hr, NULL, NULL, 0, nt)


cdef void _recur_forward(int cell, bint training, bint reverse, intp T, const intp *batch_sizes,
                         const intp *offsets, intp r0, intp r1, intp I, intp H, intp P,
                         floating *out, intp ldo, Dir *d) noexcept nogil:
    """The time loop of one direction for batch rows [r0, r1): per step the input and the
    recurrent GEMM, then the fused gate loop, so that the pre-activations are still in cache
    when it reads them. Training keeps the activated gates in `gates`; out columns start at
    `out`."""
    cdef unsigned int fp_mode = rnnx_flush_denormals()
    cdef intp GH = NUM_GATES[cell] * H
    cdef const floating *w_hh_panels = <floating *> d.w_hh_panels
    cdef const floating *w_ih_panels = <floating *> d.w_ih_panels
    cdef const floating *w_ih = <floating *> d.w_ih
    cdef const floating *w_hh = <floating *> d.w_hh
    cdef const floating *w_hr = <floating *> d.w_hr
    cdef const floating *w_hr_panels = <floating *> d.w_hr_panels
    cdef const floating *x = <floating *> d.x
    cdef floating *xs = <floating *> d.xs
    cdef bint blas = _use_blas(d, STEP_PRODUCT)
    cdef floating *h = <floating *> d.h
    cdef floating *c = <floating *> d.c
    cdef floating *hg = <floating *> d.hg
    cdef floating *mstep
    cdef intp s, t, n, off, r

    if training:
        memcpy(<floating *> d.h0 + r0 * P, h + r0 * P, (r1 - r0) * P * sizeof(floating))
    if training and cell == LSTM:
        memcpy(<floating *> d.c0 + r0 * H, c + r0 * H, (r1 - r0) * H * sizeof(floating))
    for s in range(T):
        t = T - 1 - s if reverse else s
        n = min(batch_sizes[t], r1) - r0       # rows of this block alive at step t
        if n <= 0:
            continue
        off = offsets[t] + r0
        if xs != NULL:
            # xs[r0:r0+n] (n, GH) = x[off:off+n] (n, I) @ w_ih.T
            _step_gemm(blas, n, GH, I, x + off * I, I, w_ih_panels, w_ih, I, True, False,
                       xs + r0 * GH, GH)
        # hg[r0:r0+n] (n, GH) = h[r0:r0+n] (n, P) @ w_hh.T
        _step_gemm(blas, n, GH, P, h + r0 * P, P, w_hh_panels, w_hh, P, True, False,
                   hg + r0 * GH, GH)
        if w_hr_panels == NULL:
            mstep = NULL
        elif training:
            mstep = <floating *> d.m + off * H
        else:
            mstep = <floating *> d.m + r0 * H
        _gate_rows(cell, training, n, off, r0, 0, H, H, P, mstep, out, ldo, d)
        if w_hr_panels != NULL:
            _project(blas, n, H, P, mstep, w_hr_panels, w_hr, h + r0 * P)
            for r in range(n):
                memcpy(out + (off + r) * ldo, h + (r0 + r) * P, P * sizeof(floating))
    rnnx_restore_fp_mode(fp_mode)


cdef void _team_share(rnnx_barrier *barrier, intp ncols, intp H, intp w, intp *p0, intp *cols,
                      intp *u0, intp *u1) noexcept nogil:
    """Join the team at `barrier` and take this member's share of the work: the column panels
    p0.. (cols columns) of a GEMM with ncols columns in panels of w, and the hidden units
    [u0, u1)."""
    cdef int size = rnnx_team_size(), me = rnnx_team_member()
    cdef intp panels = (ncols + w - 1) // w
    rnnx_barrier_join(barrier, size)
    p0[0] = me * panels // size
    cols[0] = min((me + 1) * panels // size * w, ncols) - p0[0] * w
    u0[0] = me * H // size
    u1[0] = (me + 1) * H // size


cdef void _team_forward(int cell, bint training, intp T, const intp *batch_sizes,
                        const intp *offsets, intp I, intp H, intp P, floating *out, intp ldo,
                        Dir *d, rnnx_barrier *barrier) noexcept nogil:
    """One member of a team that runs the forward time loop of one direction (no projection)
    together: per step each member computes its panels of the two GEMMs' columns, the team
    meets, each member runs the gate loop for its share of the hidden units, the team meets.
    Every element is computed as in _recur_forward, so the result is the same."""
    cdef unsigned int fp_mode = rnnx_flush_denormals()
    cdef int sense = 0
    cdef bint lead = rnnx_team_member() == 0
    cdef intp GH = NUM_GATES[cell] * H, p0, j0, cols, u0, u1
    cdef const floating *x = <floating *> d.x
    cdef floating *xs = <floating *> d.xs
    cdef floating *h = <floating *> d.h
    cdef intp s, n, off, B = batch_sizes[0]
    cdef bint blas = _use_blas(d, STEP_PRODUCT)
    cdef intp w = BLAS_COLS if blas else _panel_width(out)
    _team_share(barrier, GH, H, w, &p0, &cols, &u0, &u1)
    j0 = p0 * w
    if training and lead:
        memcpy(<floating *> d.h0, h, B * P * sizeof(floating))
    if training and cell == LSTM and lead:
        memcpy(<floating *> d.c0, <floating *> d.c, B * H * sizeof(floating))
    for s in range(T):
        n = batch_sizes[s]
        off = offsets[s]
        if cols > 0:
            if xs != NULL:
                # xs[:n, j0:j0+cols] = x[off:off+n] (n, I) @ w_ih.T[:, j0:j0+cols]
                _step_gemm(blas, n, cols, I, x + off * I, I, <floating *> d.w_ih_panels + j0 * I,
                           <floating *> d.w_ih + j0 * I, I, True, False, xs + j0, GH)
            # hg[:n, j0:j0+cols] = h[:n] (n, P) @ w_hh.T[:, j0:j0+cols]
            _step_gemm(blas, n, cols, P, h, P, <floating *> d.w_hh_panels + j0 * P,
                       <floating *> d.w_hh + j0 * P, P, True, False, <floating *> d.hg + j0, GH)
        rnnx_barrier_wait(barrier, &sense)
        if u1 > u0:
            _gate_rows(cell, training, n, off, 0, u0, u1, H, P, <floating *> NULL, out, ldo, d)
        rnnx_barrier_wait(barrier, &sense)
    rnnx_restore_fp_mode(fp_mode)


cdef inline void _add_output_grads(intp n, intp off, intp r0, intp j0, intp j1, intp P,
                                   const floating *dout, intp lddo, floating *dh) noexcept nogil:
    """dh[r0:r0+n, j0:j1] += dout[off:off+n, j0:j1] (this direction's output gradients)."""
    cdef intp r, j
    for r in range(n):
        for j in range(j0, j1):
            dh[(r0 + r) * P + j] += dout[(off + r) * lddo + j]


cdef void _gate_grad_rows(int cell, bint reverse, intp t, intp T, const intp *batch_sizes,
                          const intp *offsets, intp n, intp r0, intp u0, intp u1, intp H,
                          intp P, floating *dh, Dir *d) noexcept nogil:
    """Step t's gate gradients for hidden units [u0, u1) of its first n rows from batch row
    r0, from dh = d.h (output gradients already added): turns the activated gates into
    pre-activation gradients (LSTM: and dc into dL/dc of the step before; GRU: dh into its
    direct part z * dh)."""
    cdef intp GH = NUM_GATES[cell] * H, nu = u1 - u0, off = offsets[t] + r0, r, j, k, prev, rr
    cdef floating *dc = <floating *> d.c
    cdef floating *dgh = <floating *> d.hg
    cdef const floating *cbuf = <floating *> d.cbuf
    cdef const floating *cprev
    cdef const floating *hp
    cdef floating *xg
    cdef floating *dmrow
    cdef floating hv
    for r in range(n):
        xg = <floating *> d.gates + (off + r) * GH
        k = (off + r) * H
        rr = r0 + r     # row in the batch-indexed state buffers
        if cell == LSTM:
            dmrow = <floating *> d.dm + rr * H if d.w_hr_panels != NULL else dh + rr * P
            # c entering step t: c' of the step before it in this direction's order, if the
            # row was alive there, else c0
            prev = _previous_row(reverse, t, T, batch_sizes, offsets, rr)
            cprev = cbuf + prev * H if prev >= 0 else <floating *> d.c0 + rr * H
            if floating is float:
                rnnx_lstm_backward_row_f(nu, H, xg + u0, cbuf + k + u0, cprev + u0, dmrow + u0,
                                         dc + rr * H + u0)
            else:
                rnnx_lstm_backward_row_d(nu, H, xg + u0, cbuf + k + u0, cprev + u0, dmrow + u0,
                                         dc + rr * H + u0)
        elif cell == GRU:
            # h entering the step
            hp = _entering_row(<floating *> d.out, d.ldo, <floating *> d.h0, P,
                               _previous_row(reverse, t, T, batch_sizes, offsets, rr), rr)
            if floating is float:
                rnnx_gru_backward_row_f(nu, H, xg + u0, <floating *> d.hn + k + u0, hp + u0,
                                        dgh + rr * GH + u0, dh + rr * P + u0)
            else:
                rnnx_gru_backward_row_d(nu, H, xg + u0, <floating *> d.hn + k + u0, hp + u0,
                                        dgh + rr * GH + u0, dh + rr * P + u0)
        else:
            for j in range(u0, u1):
                hv = xg[j]
                if cell == RNN_TANH:
                    xg[j] = dh[rr * P + j] * (1 - hv * hv)
                else:
                    xg[j] = dh[rr * P + j] if hv > 0 else 0


cdef void _recur_backward(int cell, bint reverse, intp T, const intp *batch_sizes,
                          const intp *offsets, intp r0, intp r1, intp H, intp P,
                          const floating *dout, intp lddo, Dir *d) noexcept nogil:
    """Back-propagate the time loop of one direction for batch rows [r0, r1); dout (or NULL)
    are this direction's output gradients. Leaves the gate gradients in gates (and the GRU's
    dhn in hn); h, c hold dh_n, dc_n on entry and dh0, dc0 on return."""
    cdef unsigned int fp_mode = rnnx_flush_denormals()
    cdef intp GH = NUM_GATES[cell] * H
    cdef const floating *w_hh_panels = <floating *> d.w_hh_panels
    cdef const floating *w_hr_panels = <floating *> d.w_hr_panels
    cdef const floating *w_hr = <floating *> d.w_hr
    cdef floating *dh = <floating *> d.h
    cdef floating *dm = <floating *> d.dm
    cdef floating *gates = <floating *> d.gates
    cdef floating *dgh = <floating *> d.hg
    cdef const floating *w_hh = <floating *> d.w_hh
    cdef bint blas = _use_blas(d, STEP_PRODUCT)
    cdef intp s, t, n, off

    for s in range(T):
        t = s if reverse else T - 1 - s
        n = min(batch_sizes[t], r1) - r0       # rows of this block alive at step t
        if n <= 0:
            continue
        off = offsets[t] + r0
        if dout != NULL:
            _add_output_grads(n, off, r0, 0, P, P, dout, lddo, dh)
        if cell == LSTM and w_hr_panels != NULL:
            memcpy(<floating *> d.dhtot + off * P, dh + r0 * P, n * P * sizeof(floating))
            _project_backward(blas, n, H, P, dh + r0 * P, w_hr_panels, w_hr, dm + r0 * H)
        _gate_grad_rows(cell, reverse, t, T, batch_sizes, offsets, n, r0, 0, H, H, P, dh, d)
        if cell == GRU:
            # dh[r0:r0+n] (n, P) += dgh[r0:r0+n] (n, GH) @ w_hh (GH, P)
            _step_gemm(blas, n, P, GH, dgh + r0 * GH, GH, w_hh_panels, w_hh, P, False, True,
                       dh + r0 * P, P)
        else:
            # dh[r0:r0+n] (n, P) = dgates[off:off+n] (n, GH) @ w_hh (GH, P)
            _step_gemm(blas, n, P, GH, gates + off * GH, GH, w_hh_panels, w_hh, P, False, False,
                       dh + r0 * P, P)
    rnnx_restore_fp_mode(fp_mode)


cdef void _team_backward(int cell, intp T, const intp *batch_sizes, const intp *offsets,
                         intp H, intp P, const floating *dout, intp lddo, Dir *d,
                         rnnx_barrier *barrier) noexcept nogil:
    """One member of a team that back-propagates the time loop of one direction (no
    projection) together: per step each member computes the gate gradients of its share of
    the hidden units, the team meets, each member computes its panels of dh's columns, the
    team meets. The same arithmetic as _recur_backward, so the same result."""
    cdef unsigned int fp_mode = rnnx_flush_denormals()
    cdef int sense = 0
    cdef intp GH = NUM_GATES[cell] * H, p0, j0, cols, u0, u1
    cdef floating *dh = <floating *> d.h
    cdef intp s, t, n
    cdef bint blas = _use_blas(d, STEP_PRODUCT)
    cdef intp w = BLAS_COLS if blas else _panel_width(dh)
    _team_share(barrier, P, H, w, &p0, &cols, &u0, &u1)
    j0 = p0 * w
    for s in range(T):
        t = T - 1 - s
        n = batch_sizes[t]
        if u1 > u0:
            if dout != NULL:    # no projection: P == H, so units and columns coincide
                _add_output_grads(n, offsets[t], 0, u0, u1, P, dout, lddo, dh)
            _gate_grad_rows(cell, False, t, T, batch_sizes, offsets, n, 0, u0, u1, H, P, dh, d)
        rnnx_barrier_wait(barrier, &sense)
        if cols > 0:
            if cell == GRU:
                # dh[:n, j0:j0+cols] += dgh[:n] (n, GH) @ w_hh[:, j0:j0+cols]
                _step_gemm(blas, n, cols, GH, <floating *> d.hg, GH,
                           <floating *> d.w_hh_panels + j0 * GH, <floating *> d.w_hh + j0, P,
                           False, True, dh + j0, P)
            else:
                # dh[:n, j0:j0+cols] = dgates[off:off+n] (n, GH) @ w_hh[:, j0:j0+cols]
                _step_gemm(blas, n, cols, GH, <floating *> d.gates + offsets[t] * GH, GH,
                           <floating *> d.w_hh_panels + j0 * GH, <floating *> d.w_hh + j0, P,
                           False, False, dh + j0, P)
        rnnx_barrier_wait(barrier, &sense)
    rnnx_restore_fp_mode(fp_mode)


cdef void _weight_grads(int cell, intp T, const intp *bs, const intp *of, bint reverse, intp N,
                        intp I, intp H, intp P, floating *gates, Dir *d, int nt) noexcept nogil:
    """Whole-sequence GEMMs: accumulate dW_ih, dW_hh, db_ih, db_hh (and dW_hr) from the gate
    gradients that _recur_backward left in gates (N, GH) (and in hn, dhtot)."""
    cdef intp GH = NUM_GATES[cell] * H
    cdef const floating *hnb = <floating *> d.hn
    cdef floating *gb_ih = <floating *> d.gb_ih    # NULL without bias
    cdef floating *gb_hh = <floating *> d.gb_hh
    cdef floating *chunks = <floating *> d.x_chunks
    cdef bint blas = _use_blas(d, WEIGHT_GRADIENT)
    cdef Rows x_rows = Rows(b=d.x, ldb=I, h0=NULL, bs=NULL, of=NULL, T=0, reverse=False)
    # the hidden state entering each step: the output of the step before, or h0
    cdef Rows h_rows = Rows(b=d.out, ldb=d.ldo, h0=d.h0, bs=bs, of=of, T=T, reverse=reverse)

    # gw_ih (GH, I) += dgates.T (GH, N) @ x (N, I);  gb_ih += dgates.sum(0), and gb_hh too
    # (the GRU's n columns of gb_hh come from dhn instead)
    _gemm_tn_accumulate(blas, GH, I, N, gates, GH, &x_rows, chunks, <floating *> d.gw_ih, gb_ih,
                        gb_hh, 2 * H if cell == GRU else GH, nt)
    if cell == GRU:
        # gw_hh[:2H] (2H, P) += dgates[:, :2H].T @ hprev;  gw_hh[2H:] (H, P) += dhn.T @ hprev
        _gemm_tn_accumulate(blas, 2 * H, P, N, gates, GH, &h_rows, chunks, <floating *> d.gw_hh,
                            NULL, NULL, 0, nt)
        # gb_hh[2H:] += dhn.sum(0)
        _gemm_tn_accumulate(blas, H, P, N, hnb, H, &h_rows, chunks,
                            <floating *> d.gw_hh + 2 * H * P,
                            gb_hh + 2 * H if gb_hh != NULL else NULL, NULL, 0, nt)
    else:
        # gw_hh (GH, P) += dgates.T (GH, N) @ hprev (N, P)
        _gemm_tn_accumulate(blas, GH, P, N, gates, GH, &h_rows, chunks, <floating *> d.gw_hh,
                            NULL, NULL, 0, nt)
    if cell == LSTM and d.w_hr_panels != NULL:
        _projection_weight_grad(blas, N, H, P, <floating *> d.dhtot, <floating *> d.m, chunks,
                                <floating *> d.gw_hr, nt)


# ---------------------------------------------------------------------------------------
# Python entry points. Every array is checked here (type, dtype, C order, size), so that
# whatever the caller passes, the nogil code only touches memory it owns.


cdef void _row_blocks(intp T, const intp *bs, intp ndir, int num_threads, intp align,
                      intp *nblocks, intp *bounds) noexcept nogil:
    """Cut the batch rows of each direction into nblocks[0] blocks [bounds[b], bounds[b+1]),
    enough for ndir * nblocks tasks to fill num_threads threads, each block at least
    MIN_BLOCK_ROWS rows and holding about the same number of packed rows (rows are sorted by
    length, so equal row counts would load the first block most), and starting at multiples
    of `align` (empty blocks allowed). Every row's arithmetic is the same whichever block runs
    it, so the result does not depend on the blocks."""
    cdef intp B = bs[0], n = (num_threads + ndir - 1) // ndir, total = 0, done = 0, r, t, blk
    if n > B // MIN_BLOCK_ROWS:
        n = B // MIN_BLOCK_ROWS
    n = 1 if n < 1 else (MAX_BLOCKS if n > MAX_BLOCKS else n)
    nblocks[0] = n
    for t in range(T):
        total += bs[t]
    bounds[0] = 0
    blk = 1
    t = T
    for r in range(B):
        while t > 0 and bs[t - 1] <= r:  # row r is t steps long
            t -= 1
        done += t
        if blk < n and done * n >= blk * total:
            bounds[blk] = (r + 1) // align * align
            blk += 1
    while blk <= n:
        bounds[blk] = B
        blk += 1


cpdef bint shares_time_loop(int cell, intp B, intp ndir, intp H, intp P, bint projection,
                            int num_threads) noexcept nogil:
    """Whether the time loops run on a team of threads split by hidden units (_team_forward,
    _team_backward): one direction whose B rows are too few to split into row blocks,
    several threads, no projection, and steps big enough to pay for two barriers."""
    return (ndir == 1 and B < SMALL_BATCH and num_threads > 1 and not projection
            and P * NUM_GATES[cell] * H >= MIN_TEAM_WORK)


cdef void _forward_task(int typenum, int cell, bint training, intp k, intp r0, intp r1, intp T,
                        const intp *bs, const intp *of, intp I, intp H, intp P, void *out,
                        intp ld, Dir *dirs) noexcept nogil:
    """Rows [r0, r1) of direction k (1 runs in reverse)."""
    if typenum == cnp.NPY_FLOAT32:
        _recur_forward[float](cell, training, k == 1, T, bs, of, r0, r1, I, H, P,
                              <float *> out + k * P, ld, &dirs[k])
    else:
        _recur_forward[double](cell, training, k == 1, T, bs, of, r0, r1, I, H, P,
                               <double *> out + k * P, ld, &dirs[k])


cdef void _backward_task(int typenum, int cell, intp k, intp r0, intp r1, intp T, const intp *bs,
                         const intp *of, intp H, intp P, void *dout, intp ld,
                         Dir *dirs) noexcept nogil:
    if typenum == cnp.NPY_FLOAT32:
        _recur_backward[float](cell, k == 1, T, bs, of, r0, r1, H, P,
                               <float *> dout + k * P if dout != NULL else NULL, ld, &dirs[k])
    else:
        _recur_backward[double](cell, k == 1, T, bs, of, r0, r1, H, P,
                                <double *> dout + k * P if dout != NULL else NULL, ld, &dirs[k])


cdef void _run_tasks(bint forward, int typenum, int cell, bint training, intp ndir, intp T,
                     const intp *bs, const intp *of, intp I, intp H, intp P, void *buf, intp ld,
                     Dir *dirs, int num_threads) noexcept nogil:
    """Run every (direction, row block) task of the time loop, on parallel threads when there
    are several tasks."""
    cdef intp nblocks, ntasks
    cdef intp[MAX_BLOCKS + 1] bounds
    cdef rnnx_barrier barrier
    _row_blocks(T, bs, ndir, num_threads,
                BLAS_ROWS if _use_blas(&dirs[0], STEP_PRODUCT) else 1,
                &nblocks, bounds)
    ntasks = ndir * nblocks
    cdef int threads = num_threads if num_threads < ntasks else <int> ntasks
    cdef TasksJob job
    job.forward, job.typenum, job.cell, job.training, job.T, job.bs, job.of = (
        forward, typenum, cell, training, T, bs, of)
    job.inputs, job.H, job.P, job.buf, job.ld, job.dirs = I, H, P, buf, ld, dirs
    job.nblocks, job.ntasks, job.bounds, job.barrier = nblocks, ntasks, bounds, NULL
    if (shares_time_loop(cell, bs[0], ndir, H, P, dirs[0].w_hr_panels != NULL, num_threads)
            and rnnx_team_allowed()):
        # too few rows for the threads: they share the time loop, split by hidden units
        rnnx_barrier_init(&barrier)
        job.barrier = &barrier
        rnnx_pool_run(num_threads, _team_job, &job)
        rnnx_team_review(&barrier, T)
        return
    # one thread: no job for the pool at all (nor in a forked child)
    rnnx_pool_run(threads, _tasks_job, &job)


cdef struct TasksJob:
    # _run_tasks's arguments, for its members (_team_job, _tasks_job)
    bint forward, training
    int typenum, cell
    intp T, inputs, H, P, ld, nblocks, ntasks     # inputs: I (complex.h makes I a macro)
    const intp *bs
    const intp *of
    const intp *bounds
    void *buf
    Dir *dirs
    rnnx_barrier *barrier


cdef void _team_job(void *ctx) noexcept nogil:
    """A member of the team sharing the time loop of one direction."""
    cdef TasksJob *j = <TasksJob *> ctx
    if j.forward and j.typenum == cnp.NPY_FLOAT32:
        _team_forward(j.cell, j.training, j.T, j.bs, j.of, j.inputs, j.H, j.P, <float *> j.buf, j.ld,
                      j.dirs, j.barrier)
    elif j.forward:
        _team_forward(j.cell, j.training, j.T, j.bs, j.of, j.inputs, j.H, j.P, <double *> j.buf,
                      j.ld, j.dirs, j.barrier)
    elif j.typenum == cnp.NPY_FLOAT32:
        _team_backward(j.cell, j.T, j.bs, j.of, j.H, j.P, <float *> j.buf, j.ld, j.dirs,
                       j.barrier)
    else:
        _team_backward(j.cell, j.T, j.bs, j.of, j.H, j.P, <double *> j.buf, j.ld, j.dirs,
                       j.barrier)


cdef void _tasks_job(void *ctx) noexcept nogil:
    """This member's share of the (direction, row block) tasks (a contiguous range)."""
    cdef TasksJob *j = <TasksJob *> ctx
    cdef int me = rnnx_team_member(), size = rnnx_team_size()
    cdef intp task
    for task in range(me * j.ntasks // size, (me + 1) * j.ntasks // size):
        _task(j.forward, j.typenum, j.cell, j.training, task, j.nblocks, j.bounds, j.T, j.bs,
              j.of, j.inputs, j.H, j.P, j.buf, j.ld, j.dirs)


cdef inline void _task(bint forward, int typenum, int cell, bint training, intp task,
                       intp nblocks, const intp *bounds, intp T, const intp *bs, const intp *of,
                       intp I, intp H, intp P, void *buf, intp ld, Dir *dirs) noexcept nogil:
    """Task `task` of _run_tasks: direction task // nblocks, row block task % nblocks."""
    cdef intp k = task // nblocks, blk = task % nblocks
    if forward:
        _forward_task(typenum, cell, training, k, bounds[blk], bounds[blk + 1], T, bs, of, I,
                      H, P, buf, ld, dirs)
    else:
        _backward_task(typenum, cell, k, bounds[blk], bounds[blk + 1], T, bs, of, H, P, buf,
                       ld, dirs)


def busy_threads():
    """Kernel threads that running calls hold, process-wide (team.h's budget)."""
    return rnnx_busy_threads


def claim_threads(int want):
    """Take up to `want` kernel threads from the budget of one per core (at least 1); return
    them with release_threads. What every kernel call does around its work."""
    return rnnx_claim_threads(want)


def release_threads(int n):
    rnnx_release_threads(n)


cdef void *_ptr(object a, int typenum, intp need, str name, bint out=False) except? NULL:
    """Data pointer of a C-contiguous array of `typenum` holding at least `need` items,
    writeable if the kernel writes into it (`out`)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if out and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: expected a writeable array, got a read-only one")
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name}: expected dtype {cnp.PyArray_DescrFromType(typenum)}, got {arr.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: expected a C-contiguous array")
    if cnp.PyArray_SIZE(arr) < need:
        raise ValueError(f"{name}: expected at least {need} elements, got {cnp.PyArray_SIZE(arr)}")
    return cnp.PyArray_DATA(arr)


cdef void *_optional_ptr(object a, int typenum, intp need, str name, bint out=False) except? NULL:
    if a is None:
        return NULL
    return _ptr(a, typenum, need, name, out)


cdef _check_packing(object batch_sizes, object offsets, intp *T, intp *B, intp *N):
    """Validates batch_sizes (T,) non-increasing positive and offsets = [0, cumsum]."""
    _ptr(batch_sizes, cnp.NPY_INTP, 0, "batch_sizes")
    T[0] = cnp.PyArray_SIZE(<cnp.ndarray> batch_sizes)
    _ptr(offsets, cnp.NPY_INTP, T[0] + 1, "offsets")
    cdef const intp *bs = <intp *> cnp.PyArray_DATA(<cnp.ndarray> batch_sizes)
    cdef const intp *of = <intp *> cnp.PyArray_DATA(<cnp.ndarray> offsets)
    cdef intp t
    if T[0] < 1:
        raise ValueError("expected at least one time step")
    B[0] = bs[0]
    if of[0] != 0:
        raise ValueError("offsets must start at 0")
    for t in range(T[0]):
        if bs[t] < 1 or bs[t] > B[0] or (t > 0 and bs[t] > bs[t - 1]):
            raise ValueError("batch_sizes must be positive and non-increasing")
        if of[t + 1] != of[t] + bs[t]:
            raise ValueError("offsets must be the running sum of batch_sizes")
    N[0] = of[T[0]]


cdef int _float_type(object x) except -1:
    """NPY_FLOAT32 or NPY_FLOAT64 for a 2-d float array x; TypeError/ValueError otherwise."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"x: expected a numpy array, got {type(x).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray> x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError("x must be a float32 or float64 numpy array")
    if (<cnp.ndarray> x).ndim != 2:
        raise ValueError("x must be 2-d (packed rows, features)")
    return typenum


cdef void _pack_transposed(intp k, intp n, const floating *w, intp ldw,
                           floating *out) noexcept nogil:
    """out (ceil(n / W), k, W) = w.T in column panels, w (n, k) with row stride ldw:
    out[j, p, q] = w[j * W + q, p], zeros past row n of w. Each panel's k * W block (8 KiB at
    k = 128) stays in L1 while w's rows stream through it."""
    cdef intp W = _panel_width(out), j, p, q, rows
    cdef floating *o
    cdef const floating *src
    for j in range((n + W - 1) // W):
        o = out + j * k * W
        rows = min(W, n - j * W)
        for q in range(rows):
            src = w + (j * W + q) * ldw
            for p in range(k):
                o[p * W + q] = src[p]
        for q in range(rows, W):
            for p in range(k):
                o[p * W + q] = 0


def pack_panels(const floating[:, :] b, floating[:, :, ::1] out):
    """out (ceil(n / w), k, w) = b (k, n, any strides) in the step GEMM's column panels of
    w = 64 bytes (microgemm.h): out[j, p, q] = b[p, j * w + q], zeros past column n."""
    cdef intp k = b.shape[0], n = b.shape[1], w = 64 // sizeof(floating)
    if out.shape[0] != (n + w - 1) // w or out.shape[1] != k or out.shape[2] != w:
        raise ValueError(f"out must have shape {((n + w - 1) // w, k, w)}, got "
                         f"{(out.shape[0], out.shape[1], out.shape[2])}")
    if k == 0 or n == 0:
        return
    # b = w.T of a row-major w (the forward's weights)
    cdef bint transposed = (b.strides[0] == sizeof(floating) and b.strides[1] != sizeof(floating)
                            and b.strides[1] % sizeof(floating) == 0)
    with nogil:
        if transposed:
            _pack_transposed(k, n, &b[0, 0], b.strides[1] // sizeof(floating), &out[0, 0, 0])
        else:
            _pack_strided(b, out)


def refresh_panels(const floating[:, ::1] w, floating[:, ::1] packed_from,
                   floating[:, :, ::1] panels, bint force=False):
    """Keep panels = pack_panels(w.T) between calls: w (n, k) is compared byte for byte with
    packed_from, the copy of w the panels were packed from, and only when they differ (or
    `force`) is w copied there and packed again. Returns whether it packed. The comparison
    reads w and the copy once, a fraction of packing (a strided transposition)."""
    cdef intp n = w.shape[0], k = w.shape[1], width = 64 // sizeof(floating)
    if packed_from.shape[0] != n or packed_from.shape[1] != k:
        raise ValueError(f"packed_from must have shape {(n, k)}, got "
                         f"{(packed_from.shape[0], packed_from.shape[1])}")
    if panels.shape[0] != (n + width - 1) // width or panels.shape[1] != k or panels.shape[2] != width:
        raise ValueError(f"panels must have shape {((n + width - 1) // width, k, width)}, got "
                         f"{(panels.shape[0], panels.shape[1], panels.shape[2])}")
    if n == 0 or k == 0:
        return False
    cdef size_t nbytes = n * k * sizeof(floating)
    cdef bint changed
    with nogil:
        changed = force or memcmp(&w[0, 0], &packed_from[0, 0], nbytes) != 0
        if changed:
            memcpy(&packed_from[0, 0], &w[0, 0], nbytes)
            _pack_transposed(k, n, &w[0, 0], k, &panels[0, 0, 0])
    return changed


cdef extern from "fingerprint.h":
    void rnnx_fingerprint(const unsigned char *p, size_t n, uint32_t *lanes) noexcept nogil


def fingerprint(a):
    """64 bytes that identify the bytes of array a (fingerprint.h): any change of one element
    changes them, and so does, but for a chance of about 2^-32, any other change (a
    permutation of the elements included). Reads a at about memory speed, without the GIL."""
    cdef const unsigned char[::1] data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    cdef uint32_t[16] lanes
    cdef size_t n = data.shape[0]
    with nogil:
        rnnx_fingerprint(&data[0] if n else NULL, n, lanes)
    return (<char *> lanes)[:sizeof(lanes)]


cdef void _pack_strided(const floating[:, :] b, floating[:, :, ::1] out) noexcept nogil:
    """pack_panels for any other strides (b's rows contiguous: one copy per panel row)."""
    cdef intp k = b.shape[0], n = b.shape[1], w = out.shape[2], j, p, q, cols
    cdef bint rows_contiguous = b.strides[1] == sizeof(floating)
    for j in range(out.shape[0]):
        cols = min(w, n - j * w)
        for p in range(k):
            if rows_contiguous:
                memcpy(&out[j, p, 0], &b[p, j * w], cols * sizeof(floating))
            else:
                for q in range(cols):
                    out[j, p, q] = b[p, j * w + q]
            for q in range(cols, w):
                out[j, p, q] = 0


def forward_layer(int cell, bint training, object x, object batch_sizes, object offsets,
                  list directions, object out, intp hidden_size, int num_threads=1):
    """Run one layer (one or two directions) forward over a packed sequence.

    x: (N, I) layer input; out: (N, D * P) layer output, direction d in columns d*P:(d+1)*P.
    directions: per direction a dict of the Dir fields' arrays (see Dir); the second one,
    if any, runs in reverse. `h` (B, P) and `c` (B, H) hold the initial states on entry and
    the final ones on return. Training mode fills h0, cbuf, c0, hn and m for backward.
    Runs on up to num_threads threads, fewer when other calls hold the cores (team.h).
    """
    cdef intp T, B, N, H = hidden_size, I, P, ndir = len(directions), k
    _check_packing(batch_sizes, offsets, &T, &B, &N)
    if cell < 0 or cell > 3:
        raise ValueError(f"unknown cell kind {cell}")
    if ndir < 1 or ndir > 2:
        raise ValueError("one or two directions expected")
    cdef int typenum = _float_type(x)
    if not cnp.PyArray_Check(out) or (<cnp.ndarray> out).ndim != 2:
        raise ValueError("out must be a 2-d numpy array")
    I = x.shape[1]
    P = out.shape[1] // ndir
    if x.shape[0] != N or out.shape[0] != N or out.shape[1] != ndir * P:
        raise ValueError("x and out must have one row per packed step")
    cdef bint proj = cell == LSTM and directions[0].get("w_hr_panels") is not None
    if not proj and P != H:
        raise ValueError("out has the wrong number of columns")
    cdef void *xp = _ptr(x, typenum, N * I, "x")
    cdef void *op = _ptr(out, typenum, N * ndir * P, "out", True)
    cdef Dir[2] dirs
    for k in range(ndir):
        _fill_dir(&dirs[k], directions[k], typenum, cell, training, proj, False, N, B, I, H, P,
                  num_threads)
    cdef const intp *bs = <intp *> cnp.PyArray_DATA(<cnp.ndarray> batch_sizes)
    cdef const intp *of = <intp *> cnp.PyArray_DATA(<cnp.ndarray> offsets)
    with nogil:
        num_threads = rnnx_claim_threads(num_threads)
        for k in range(ndir):
            dirs[k].x = xp
            if typenum == cnp.NPY_FLOAT32:
                _project_inputs[float](cell, B, N, I, H, <float *> xp, &dirs[k], num_threads)
            else:
                _project_inputs[double](cell, B, N, I, H, <double *> xp, &dirs[k], num_threads)
        _run_tasks(True, typenum, cell, training, ndir, T, bs, of, I, H, P, op, ndir * P, dirs,
                   num_threads)
        rnnx_release_threads(num_threads)


def backward_layer(int cell, object x, object out, object batch_sizes, object offsets,
                   list directions, object grad_out, object grad_x, intp hidden_size,
                   int num_threads=1):
    """Back-propagate one layer run by forward_layer in training mode.

    x and out: that forward's input (N, I) and output (N, D * P), unchanged since (backward
    reads the hidden state entering each step in out). grad_out: (N, D * P) gradient of the
    layer output, or None; grad_x: (N, I) output (overwritten), or None when the input
    gradient is not wanted. Per direction, `h`/`c` hold dh_n/dc_n on entry and dh0/dc0 on
    return, `gates` and `hn` are consumed, and the parameter gradients are accumulated into
    gw_ih, gw_hh, gb_ih, gb_hh, gw_hr.
    """
    cdef intp T, B, N, H = hidden_size, I, P, ndir = len(directions), GH, k
    _check_packing(batch_sizes, offsets, &T, &B, &N)
    if cell < 0 or cell > 3:
        raise ValueError(f"unknown cell kind {cell}")
    if ndir < 1 or ndir > 2:
        raise ValueError("one or two directions expected")
    GH = NUM_GATES[cell] * H
    cdef int typenum = _float_type(x)
    if x.shape[0] != N:
        raise ValueError("x must have one row per packed step")
    I = x.shape[1]
    cdef bint proj = cell == LSTM and directions[0].get("w_hr_panels") is not None
    P = directions[0]["h"].shape[1]
    if not proj and P != H:
        raise ValueError("h has the wrong number of columns")
    cdef intp ld = ndir * P
    cdef bint blas
    cdef void *xp = _ptr(x, typenum, N * I, "x")
    cdef char *op = <char *> _ptr(out, typenum, N * ld, "out")
    if out.shape != (N, ld):
        raise ValueError(f"out: expected the layer output, shape {(N, ld)}, got {out.shape}")
    cdef void *gop = _optional_ptr(grad_out, typenum, N * ld, "grad_out")
    cdef void *gxp = _optional_ptr(grad_x, typenum, N * I, "grad_x", True)
    cdef Dir[2] dirs
    for k in range(ndir):
        _fill_dir(&dirs[k], directions[k], typenum, cell, True, proj, True, N, B, I, H, P,
                  num_threads)
        dirs[k].x = xp
        dirs[k].out = op + k * P * cnp.PyArray_ITEMSIZE(<cnp.ndarray> out)
        dirs[k].ldo = ld
    cdef const intp *bs = <intp *> cnp.PyArray_DATA(<cnp.ndarray> batch_sizes)
    cdef const intp *of = <intp *> cnp.PyArray_DATA(<cnp.ndarray> offsets)
    with nogil:
        num_threads = rnnx_claim_threads(num_threads)
        _run_tasks(False, typenum, cell, True, ndir, T, bs, of, I, H, P, gop, ld, dirs,
                   num_threads)
        for k in range(ndir):
            if typenum == cnp.NPY_FLOAT32:
                _weight_grads(cell, T, bs, of, k == 1, N, I, H, P, <float *> dirs[k].gates,
                              &dirs[k], num_threads)
            else:
                _weight_grads(cell, T, bs, of, k == 1, N, I, H, P, <double *> dirs[k].gates,
                              &dirs[k], num_threads)
        if gxp != NULL:
            for k in range(ndir):
                # grad_x (N, I) (+)= dgates_k (N, GH) @ w_ih_k (GH, I)
                blas = _use_blas(&dirs[k], SEQUENCE_PRODUCT)
                if typenum == cnp.NPY_FLOAT32:
                    _parallel_step_gemm[float](blas, N, I, GH, <float *> dirs[k].gates, GH,
                                               <float *> dirs[k].w_ih_panels,
                                               <float *> dirs[k].w_ih, I, False, k > 0,
                                               <float *> gxp, I, num_threads)
                else:
                    _parallel_step_gemm[double](blas, N, I, GH, <double *> dirs[k].gates, GH,
                                                <double *> dirs[k].w_ih_panels,
                                                <double *> dirs[k].w_ih, I, False, k > 0,
                                                <double *> gxp, I, num_threads)
        rnnx_release_threads(num_threads)


cdef inline intp _round_up(intp n, intp multiple):
    return (n + multiple - 1) // multiple * multiple


cdef _fill_dir(Dir *d, dict a, int typenum, int cell, bint training, bint proj, bint backward,
               intp N, intp B, intp I, intp H, intp P, int num_threads):
    """Checks one direction's arrays and stores their data pointers in d."""
    cdef intp GH = NUM_GATES[cell] * H
    cdef bint lstm = cell == LSTM, gru = cell == GRU
    # The B operands of the step GEMMs in zero-padded panels of pw = 64 bytes of columns:
    # w_hh.T (P, GH) and w_ih.T (I, GH) forward, w_hh (GH, P) and w_ih (GH, I) backward.
    cdef intp pw = 16 if typenum == cnp.NPY_FLOAT32 else 8
    d.w_hh_panels = _ptr(a["w_hh_panels"], typenum, _round_up(P, pw) * GH if backward else
                         _round_up(GH, pw) * P, "w_hh_panels")
    d.w_ih_panels = _ptr(a["w_ih_panels"], typenum, _round_up(I, pw) * GH if backward else
                         _round_up(GH, pw) * I, "w_ih_panels")
    d.w_ih = _ptr(a["w_ih"], typenum, GH * I, "w_ih")
    d.w_hh = _ptr(a["w_hh"], typenum, GH * P, "w_hh")
    d.gemm_backend = _gemm_backend
    d.w_hr = _ptr(a["w_hr"], typenum, P * H, "w_hr") if proj else NULL
    d.w_hr_panels = (_ptr(a["w_hr_panels"], typenum, _round_up(H, pw) * P if backward else
                          _round_up(P, pw) * H, "w_hr_panels") if proj else NULL)
    d.b_ih = NULL if backward else _ptr(a["b_ih"], typenum, GH, "b_ih")
    d.b_hh = NULL if backward else _ptr(a["b_hh"], typenum, GH, "b_hh")
    d.b_sum = NULL if backward else _ptr(a["b_sum"], typenum, GH, "b_sum")
    d.h = _ptr(a["h"], typenum, B * P, "h", True)
    d.c = _ptr(a["c"], typenum, B * H, "c", True) if lstm else NULL
    d.x = NULL
    cdef bint per_step = not backward and projects_per_step(cell, B, I, P, H, 64 // pw)
    d.xs = _ptr(a["xs"], typenum, B * GH, "xs") if per_step else NULL
    d.gates = _ptr(a["gates"], typenum, N * GH, "gates") if training or not per_step else NULL
    d.hg = _ptr(a["hg"], typenum, B * GH, "hg")
    d.h0 = _ptr(a["h0"], typenum, B * P, "h0") if training else NULL
    d.out = NULL
    d.ldo = 0
    d.cbuf = _ptr(a["cbuf"], typenum, N * H, "cbuf") if training and lstm else NULL
    d.c0 = _ptr(a["c0"], typenum, B * H, "c0") if training and lstm else NULL
    d.hn = _ptr(a["hn"], typenum, N * H, "hn") if training and gru else NULL
    d.m = _ptr(a["m"], typenum, (N if training else B) * H, "m") if proj else NULL
    d.dhtot = _ptr(a["dhtot"], typenum, N * P, "dhtot") if backward and proj else NULL
    d.dm = _ptr(a["dm"], typenum, B * H, "dm") if backward and proj else NULL
    d.gw_ih = d.gw_hh = d.gb_ih = d.gb_hh = d.gw_hr = NULL
    d.x_chunks = NULL
    if backward:
        d.x_chunks = _ptr(a["x_chunks"], typenum,
                          x_chunks_size(max(I, H), 64 // pw, num_threads),
                          "x_chunks")
        d.gw_ih = _ptr(a["gw_ih"], typenum, GH * I, "gw_ih", True)
        d.gw_hh = _ptr(a["gw_hh"], typenum, GH * P, "gw_hh", True)
        d.gw_hr = _ptr(a["gw_hr"], typenum, P * H, "gw_hr", True) if proj else NULL
        if a.get("gb_ih") is not None:
            d.gb_ih = _ptr(a["gb_ih"], typenum, GH, "gb_ih", True)
            d.gb_hh = _ptr(a["gb_hh"], typenum, GH, "gb_hh", True)

