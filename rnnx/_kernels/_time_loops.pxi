# The time loops of one layer direction, forward and backward, their gate loops, and the
# whole-sequence weight-gradient GEMMs; _run_tasks spreads them over the threads.

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


cdef inline void _tanh(floating *a, intp n) noexcept nogil:
    """a[:n] = tanh(a[:n]), vectorized."""
    if floating is float:
        rnnx_tanh_f(a, n)
    else:
        rnnx_tanh_d(a, n)


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
        _parallel_step_gemm(_use_blas(d.gemm_backend, STEP_PRODUCT if B < SMALL_BATCH else
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
    cdef bint blas = _use_blas(d.gemm_backend, STEP_PRODUCT)
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
    cdef bint blas = _use_blas(d.gemm_backend, STEP_PRODUCT)
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
    cdef bint blas = _use_blas(d.gemm_backend, STEP_PRODUCT)
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
    cdef bint blas = _use_blas(d.gemm_backend, STEP_PRODUCT)
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
    cdef bint blas = _use_blas(d.gemm_backend, WEIGHT_GRADIENT)
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


cdef void _run_tasks(bint forward, int cell, bint training, intp ndir, intp T, const intp *bs,
                     const intp *of, intp I, intp H, intp P, floating *buf, intp ld, Dir *dirs,
                     int num_threads) noexcept nogil:
    """Run every (direction, row block) task of the time loop, on the pool's threads when
    there are several tasks. buf: the layer output (forward) or its gradient (backward, or
    NULL), ld apart, direction k in columns k*P:(k+1)*P."""
    cdef intp nblocks, ntasks
    cdef intp[MAX_BLOCKS + 1] bounds
    cdef rnnx_barrier barrier
    _row_blocks(T, bs, ndir, num_threads,
                BLAS_ROWS if _use_blas(dirs[0].gemm_backend, STEP_PRODUCT) else 1,
                &nblocks, bounds)
    ntasks = ndir * nblocks
    cdef int threads = num_threads if num_threads < ntasks else <int> ntasks
    cdef TasksJob job
    job.forward, job.is_float, job.cell, job.training, job.T, job.bs, job.of = (
        forward, floating is float, cell, training, T, bs, of)
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
    bint forward, training, is_float
    int cell
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
    if j.is_float:
        _team_member[float](j, <float *> j.buf)
    else:
        _team_member[double](j, <double *> j.buf)


cdef void _team_member(TasksJob *j, floating *buf) noexcept nogil:
    if j.forward:
        _team_forward(j.cell, j.training, j.T, j.bs, j.of, j.inputs, j.H, j.P, buf, j.ld,
                      j.dirs, j.barrier)
    else:
        _team_backward(j.cell, j.T, j.bs, j.of, j.H, j.P, buf, j.ld, j.dirs, j.barrier)


cdef void _tasks_job(void *ctx) noexcept nogil:
    """This member's share of the (direction, row block) tasks (a contiguous range)."""
    cdef TasksJob *j = <TasksJob *> ctx
    if j.is_float:
        _tasks_member[float](j, <float *> j.buf)
    else:
        _tasks_member[double](j, <double *> j.buf)


cdef void _tasks_member(TasksJob *j, floating *buf) noexcept nogil:
    cdef int me = rnnx_team_member(), size = rnnx_team_size()
    cdef intp task
    for task in range(me * j.ntasks // size, (me + 1) * j.ntasks // size):
        _task(j.forward, j.cell, j.training, task, j.nblocks, j.bounds, j.T, j.bs, j.of,
              j.inputs, j.H, j.P, buf, j.ld, j.dirs)


cdef inline void _task(bint forward, int cell, bint training, intp task, intp nblocks,
                       const intp *bounds, intp T, const intp *bs, const intp *of, intp I,
                       intp H, intp P, floating *buf, intp ld, Dir *dirs) noexcept nogil:
    """Task `task` of _run_tasks: direction k = task // nblocks (1 runs in reverse), row block
    task % nblocks."""
    cdef intp k = task // nblocks, blk = task % nblocks
    if forward:
        _recur_forward(cell, training, k == 1, T, bs, of, bounds[blk], bounds[blk + 1], I, H,
                       P, buf + k * P, ld, &dirs[k])
    else:
        _recur_backward(cell, k == 1, T, bs, of, bounds[blk], bounds[blk + 1], H, P,
                        buf + k * P if buf != NULL else NULL, ld, &dirs[k])
