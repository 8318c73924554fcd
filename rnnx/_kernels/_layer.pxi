# The Python entry points of the kernels. Every array is checked here (type, dtype, C order,
# size), so that whatever the caller passes, the nogil code only touches memory it owns.

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
                blas = _use_blas(dirs[k].gemm_backend, SEQUENCE_PRODUCT)
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
    # The B operands of the step GEMMs in zero-padded panels of pw columns (PANEL_BYTES):
    # w_hh.T (P, GH) and w_ih.T (I, GH) forward, w_hh (GH, P) and w_ih (GH, I) backward.
    cdef intp itemsize = 4 if typenum == cnp.NPY_FLOAT32 else 8, pw = panel_width(itemsize)
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
    cdef bint per_step = not backward and projects_per_step(cell, B, I, P, H, itemsize)
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
                          x_chunks_size(max(I, H), itemsize, num_threads),
                          "x_chunks")
        d.gw_ih = _ptr(a["gw_ih"], typenum, GH * I, "gw_ih", True)
        d.gw_hh = _ptr(a["gw_hh"], typenum, GH * P, "gw_hh", True)
        d.gw_hr = _ptr(a["gw_hr"], typenum, P * H, "gw_hr", True) if proj else NULL
        if a.get("gb_ih") is not None:
            d.gb_ih = _ptr(a["gb_ih"], typenum, GH, "gb_ih", True)
            d.gb_hh = _ptr(a["gb_hh"], typenum, GH, "gb_hh", True)

