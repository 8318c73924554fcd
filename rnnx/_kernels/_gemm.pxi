# Every matrix product of the kernels, through one interface: BLAS (scipy.linalg.cython_blas,
# _blas.pyx) or the register-blocked micro-kernel (microgemm.h) reading B in column panels.
# The backend is global (set_gemm_backend); AUTO picks per kind of product (_use_blas).

cdef int _gemm_backend = GEMM_AUTO


def set_gemm_backend(int backend):
    """Use GemmBackend `backend` in the calls that follow."""
    global _gemm_backend
    if backend not in (GEMM_AUTO, GEMM_BLAS, GEMM_MICROKERNEL):
        raise ValueError(f"unknown GEMM backend {backend}")
    _gemm_backend = backend


def get_gemm_backend():
    """The GemmBackend in use (as an int)."""
    return _gemm_backend

# Kinds of product, for the AUTO backend: the time loop's per-step products, the
# whole-sequence input projection and input gradient, the weight gradients.
cdef enum Product:
    STEP_PRODUCT
    SEQUENCE_PRODUCT
    WEIGHT_GRADIENT


cdef extern from "microgemm.h":
    void rnnx_sgemm_nn(intp m, intp n, intp k, const float *a, intp ars, intp aps,
                       const float *bp, intp panel_stride, int accumulate, float *c,
                       intp ldc) noexcept nogil
    void rnnx_dgemm_nn(intp m, intp n, intp k, const double *a, intp ars, intp aps,
                       const double *bp, intp panel_stride, int accumulate, double *c,
                       intp ldc) noexcept nogil

# Columns per panel of a packed B operand (_layout.panel_width) of this dtype.
cdef inline intp _panel_width(floating *unused) noexcept nogil:
    return panel_width(sizeof(floating))


cdef inline void _panel_gemm(intp m, intp n, intp k, const floating *a, intp ars, intp aps,
                             const floating *bp, intp panel_stride, bint accumulate, floating *c,
                             intp ldc) noexcept nogil:
    if floating is float:
        rnnx_sgemm_nn(m, n, k, a, ars, aps, bp, panel_stride, accumulate, c, ldc)
    else:
        rnnx_dgemm_nn(m, n, k, a, ars, aps, bp, panel_stride, accumulate, c, ldc)


cdef bint _use_blas(int backend, Product kind) noexcept nogil:
    """Whether products of this kind run through BLAS under GemmBackend `backend`. AUTO, from
    measurements (README, "Portable builds and GEMM backends"): the time loop's products (a
    few rows per step, the weights packed once per call) through the micro-kernel, the
    whole-sequence ones (thousands of rows, or a long k) through BLAS. The time loop's choice
    is one for all its products, forward and backward: the row blocks and team shares follow
    it (BLAS_ROWS, BLAS_COLS)."""
    if backend != GEMM_AUTO:
        return backend == GEMM_BLAS
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
    cdef intp i, j, ti, tj
    if not blas:
        _panel_gemm(m, n, k, a, lda, 1, bp, k * _panel_width(c), accumulate, c, ldc)
        return
    for ti in range((m + BLAS_ROWS - 1) // BLAS_ROWS):
        i = ti * BLAS_ROWS
        for tj in range((n + BLAS_COLS - 1) // BLAS_COLS):
            j = tj * BLAS_COLS
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
    cdef intp w = _panel_width(c), blocks = (m + WEIGHT_GRAD_ROWS - 1) // WEIGHT_GRAD_ROWS
    cdef intp chunks_of_k = (k + K_CHUNK - 1) // K_CHUNK, kb, k0, kc
    cdef intp chunk = K_CHUNK * ((n + w - 1) // w) * w
    if num_threads <= 1 or blocks <= 1:
        for kb in range(chunks_of_k):
            k0 = kb * K_CHUNK
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
    cdef intp kb, k0, kc
    for kb in range((j.k + K_CHUNK - 1) // K_CHUNK):
        k0 = kb * K_CHUNK
        kc = min(K_CHUNK, j.k - k0)
        _chunk_blocks(j.blas, me, size, j.blocks, j.m, j.n, kc, a + k0 * j.lda, j.lda,
                      _pack_chunk(j.blas, j.rows, k0, kc, j.n, buf), <floating *> j.c,
                      <floating *> j.acc, <floating *> j.acc2, j.n2)


cdef void _parallel_step_gemm(bint blas, intp m, intp n, intp k, const floating *a, intp lda,
                              const floating *bp, const floating *b, intp ldb, bint trans_b,
                              bint accumulate, floating *c, intp ldc,
                              int num_threads) noexcept nogil:
    """A whole-sequence C (m, n) (+)= A (m, k) @ B (k, n) (see _product) over blocks of rows
    of C on up to num_threads threads. Every element is the same dot product whichever block
    computes it, so the result is independent of threads; BLAS always runs block by block."""
    cdef intp blocks = (m + SEQUENCE_ROWS - 1) // SEQUENCE_ROWS, panel_stride = k * _panel_width(c)
    if not blas and (num_threads <= 1 or blocks <= 1):
        _panel_gemm(m, n, k, a, lda, 1, bp, panel_stride, accumulate, c, ldc)
        return
    cdef StepJob job
    job.blas, job.is_float, job.m, job.n, job.k, job.a = blas, floating is float, m, n, k, a
    job.lda, job.bp, job.b, job.ldb, job.trans_b = lda, bp, b, ldb, trans_b
    job.accumulate, job.c, job.ldc, job.blocks, job.panel_stride = (accumulate, c, ldc, blocks,
                                                                    panel_stride)
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


