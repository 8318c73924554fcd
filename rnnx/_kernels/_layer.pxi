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


cdef void *_array(object a, str name, tuple shape, int typenum, bint out=False) except? NULL:
    """Data pointer of a C-contiguous array of `typenum` and exactly `shape` (_ptr)."""
    cdef intp size = 1, n
    for n in shape:
        size *= n
    cdef void *p = _ptr(a, typenum, size, name, out)
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return p


cdef void *_buffer(dict shapes, DirectionBuffers bufs, str name, int typenum, bint out=False,
                   bint optional=False) except? NULL:
    """Data pointer of field `name` of bufs, checked against its shape in the layout; NULL
    when the layout has no such buffer (or it is `optional` and None)."""
    shape = shapes.get(name)
    if shape is None:
        return NULL
    a = getattr(bufs, name)
    if optional and a is None:
        return NULL
    return _array(a, name, shape, typenum, out)


cdef _fill_dir(Dir *d, LayerPlan plan, DirectionBuffers a, dict shapes, bint backward):
    """Checks one direction's arrays against the layout (plan.shapes) and stores their data
    pointers in d."""
    cdef int t = plan.typenum
    d.w_ih_panels = _buffer(shapes, a, "w_ih_panels", t)
    d.w_hh_panels = _buffer(shapes, a, "w_hh_panels", t)
    d.w_hr_panels = _buffer(shapes, a, "w_hr_panels", t)
    d.w_ih = _buffer(shapes, a, "w_ih", t)
    d.w_hh = _buffer(shapes, a, "w_hh", t)
    d.w_hr = _buffer(shapes, a, "w_hr", t)
    d.gemm_backend = _gemm_backend
    d.b_ih = _buffer(shapes, a, "b_ih", t)
    d.b_hh = _buffer(shapes, a, "b_hh", t)
    d.b_sum = _buffer(shapes, a, "b_sum", t, True)
    d.h = _buffer(shapes, a, "h", t, True)
    d.c = _buffer(shapes, a, "c", t, True)
    d.x = NULL
    d.xs = _buffer(shapes, a, "xs", t, True)
    d.gates = _buffer(shapes, a, "gates", t, True)
    d.hg = _buffer(shapes, a, "hg", t, True)
    d.h0 = _buffer(shapes, a, "h0", t, True)
    d.out = NULL
    d.ldo = 0
    d.cbuf = _buffer(shapes, a, "cbuf", t, True)
    d.c0 = _buffer(shapes, a, "c0", t, True)
    d.hn = _buffer(shapes, a, "hn", t, True)
    d.m = _buffer(shapes, a, "m", t, True)
    d.dhtot = _buffer(shapes, a, "dhtot", t, True)
    d.dm = _buffer(shapes, a, "dm", t, True)
    d.x_chunks = _buffer(shapes, a, "x_chunks", t, True)
    d.gw_ih = _buffer(shapes, a, "gw_ih", t, True)
    d.gw_hh = _buffer(shapes, a, "gw_hh", t, True)
    d.gw_hr = _buffer(shapes, a, "gw_hr", t, True)
    d.gb_ih = _buffer(shapes, a, "gb_ih", t, True, True)     # None without bias
    d.gb_hh = _buffer(shapes, a, "gb_hh", t, True, True)


cdef _fill_dirs(Dir *dirs, LayerPlan plan, list directions, bint backward):
    if len(directions) != plan.ndir:
        raise ValueError(f"directions: expected {plan.ndir}, got {len(directions)}")
    shapes = plan.shapes(backward)
    for k in range(plan.ndir):
        if not isinstance(directions[k], DirectionBuffers):
            raise TypeError(f"directions: expected DirectionBuffers, got "
                            f"{type(directions[k]).__name__}")
        _fill_dir(&dirs[k], plan, directions[k], shapes, backward)


def forward_layer(LayerPlan plan not None, object x, list directions, object out):
    """Run one layer (one or two directions) forward over a packed sequence.

    x: (N, I) layer input; out: (N, D * P) layer output, direction d in columns d*P:(d+1)*P.
    directions: per direction its DirectionBuffers, shaped as plan.shapes(False) says; the
    second one, if any, runs in reverse. `h` (B, P) and `c` (B, H) hold the initial states
    on entry and the final ones on return. Training mode fills h0, cbuf, c0, hn and m for
    backward. Runs on up to plan.num_threads threads, fewer when other calls hold the cores
    (team.h).
    """
    cdef void *xp = _array(x, "x", (plan.rows, plan.input_size), plan.typenum)
    cdef void *op = _array(out, "out", (plan.rows, plan.ndir * plan.state_size), plan.typenum, True)
    cdef Dir[2] dirs
    _fill_dirs(dirs, plan, directions, False)
    with nogil:
        if plan.itemsize == 4:
            _forward_layer[float](plan, <float *> xp, <float *> op, dirs)
        else:
            _forward_layer[double](plan, <double *> xp, <double *> op, dirs)


cdef void _forward_layer(LayerPlan plan, const floating *x, floating *out,
                         Dir *dirs) noexcept nogil:
    cdef int num_threads = rnnx_claim_threads(plan.num_threads)
    cdef intp k
    for k in range(plan.ndir):
        dirs[k].x = <void *> x
        _project_inputs(plan.cell, plan.batch, plan.rows, plan.input_size, plan.hidden_size, x, &dirs[k], num_threads)
    _run_tasks(True, plan.cell, plan.training, plan.ndir, plan.steps, plan.bs, plan.of, plan.input_size,
               plan.hidden_size, plan.state_size, out, plan.ndir * plan.state_size, dirs, num_threads)
    rnnx_release_threads(num_threads)


def backward_layer(LayerPlan plan not None, object x, object out, list directions,
                   object grad_out, object grad_x):
    """Back-propagate one layer run by forward_layer in training mode (plan: the same sizes).

    x and out: that forward's input (N, I) and output (N, D * P), unchanged since (backward
    reads the hidden state entering each step in out). grad_out: (N, D * P) gradient of the
    layer output, or None; grad_x: (N, I) output (overwritten), or None when the input
    gradient is not wanted. directions: per direction its DirectionBuffers, shaped as
    plan.shapes(True) says: `h`/`c` hold dh_n/dc_n on entry and dh0/dc0 on return, `gates`
    and `hn` are consumed, and the parameter gradients are accumulated into gw_ih, gw_hh,
    gb_ih, gb_hh, gw_hr.
    """
    cdef intp N = plan.rows, ld = plan.ndir * plan.state_size, k
    cdef int t = plan.typenum
    cdef void *xp = _array(x, "x", (N, plan.input_size), t)
    if not cnp.PyArray_Check(out):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    cdef char *op = <char *> _ptr(out, t, 0, "out")
    if out.shape != (N, ld):
        raise ValueError(f"out: expected the layer output, shape {(N, ld)}, got {out.shape}")
    cdef void *gop = NULL if grad_out is None else _array(grad_out, "grad_out", (N, ld), t)
    cdef void *gxp = NULL if grad_x is None else _array(grad_x, "grad_x", (N, plan.input_size), t, True)
    cdef Dir[2] dirs
    _fill_dirs(dirs, plan, directions, True)
    for k in range(plan.ndir):
        dirs[k].x = xp
        dirs[k].out = op + k * plan.state_size * plan.itemsize
        dirs[k].ldo = ld
    with nogil:
        if plan.itemsize == 4:
            _backward_layer[float](plan, <float *> gop, <float *> gxp, dirs)
        else:
            _backward_layer[double](plan, <double *> gop, <double *> gxp, dirs)


cdef void _backward_layer(LayerPlan plan, floating *grad_out, floating *grad_x,
                          Dir *dirs) noexcept nogil:
    cdef int num_threads = rnnx_claim_threads(plan.num_threads)
    cdef intp k, N = plan.rows, I = plan.input_size, GH = plan.gate_size
    _run_tasks(False, plan.cell, True, plan.ndir, plan.steps, plan.bs, plan.of, I, plan.hidden_size, plan.state_size,
               grad_out, plan.ndir * plan.state_size, dirs, num_threads)
    for k in range(plan.ndir):
        _weight_grads(plan.cell, plan.steps, plan.bs, plan.of, k == 1, N, I, plan.hidden_size, plan.state_size,
                      <floating *> dirs[k].gates, &dirs[k], num_threads)
    if grad_x != NULL:
        for k in range(plan.ndir):
            # grad_x (N, I) (+)= dgates_k (N, GH) @ w_ih_k (GH, I)
            _parallel_step_gemm(_use_blas(dirs[k].gemm_backend, SEQUENCE_PRODUCT), N, I, GH,
                                <floating *> dirs[k].gates, GH, <floating *> dirs[k].w_ih_panels,
                                <floating *> dirs[k].w_ih, I, False, k > 0, grad_x, I,
                                num_threads)
    rnnx_release_threads(num_threads)


# The three kinds of product (_gemm.pxi) as Python functions, for their tests: each against
# its NumPy twin (tests/test_gemm_twins.py). The kernels call the cdef functions directly.

def _panels_of(const floating[:, :] b):
    """b (k, n) in the micro-kernel's column panels (_pack_strided), a new array."""
    out = np.zeros(panels_shape(b.shape[0], b.shape[1], sizeof(floating)),
                   np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] view = out
    _pack_strided(b, view)
    return out


cdef _check_product(intp m, intp n, intp k, tuple c_shape, str what):
    if m < 1 or n < 1 or k < 1:
        raise ValueError(f"{what}: expected positive sizes, got m={m}, n={n}, k={k}")
    if c_shape != (m, n):
        raise ValueError(f"{what}: expected c of shape {(m, n)}, got {c_shape}")


def step_product(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                 int backend, bint accumulate=False):
    """c (m, n) (+)= a (m, k) @ b (k, n) as the time loop computes it (_step_gemm), through
    what GemmBackend `backend` chooses for the time loop's products.
    NumPy twin: c[...] = (c if accumulate else 0) + a @ b."""
    cdef intp m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k:
        raise ValueError(f"step_product: a is {(m, k)}, b is {(b.shape[0], n)}")
    _check_product(m, n, k, (c.shape[0], c.shape[1]), "step_product")
    cdef const floating[:, :, ::1] bp = _panels_of(b)
    with nogil:
        _step_gemm(_use_blas(backend, STEP_PRODUCT), m, n, k, &a[0, 0], k, &bp[0, 0, 0],
                   &b[0, 0], n, False, accumulate, &c[0, 0], n)


def sequence_product(const floating[:, ::1] a, const floating[:, ::1] w, floating[:, ::1] c,
                     int backend, bint transposed, bint accumulate=False, int num_threads=1):
    """c (m, n) (+)= a (m, k) @ B, B = w.T (w (n, k): the input projection) or w (w (k, n):
    the input gradient), as the whole-sequence products compute it (_parallel_step_gemm, in
    blocks of rows over up to num_threads threads), through what GemmBackend `backend`
    chooses for them. NumPy twin: c[...] = (c if accumulate else 0) + a @ (w.T or w)."""
    cdef intp m = a.shape[0], k = a.shape[1], n = w.shape[0] if transposed else w.shape[1]
    if (w.shape[1] if transposed else w.shape[0]) != k:
        raise ValueError(f"sequence_product: a is {(m, k)}, w is {(w.shape[0], w.shape[1])}")
    _check_product(m, n, k, (c.shape[0], c.shape[1]), "sequence_product")
    cdef const floating[:, :, ::1] bp = _panels_of(w.T) if transposed else _panels_of(w)
    with nogil:
        num_threads = rnnx_claim_threads(num_threads)
        _parallel_step_gemm(_use_blas(backend, SEQUENCE_PRODUCT), m, n, k, &a[0, 0], k,
                            &bp[0, 0, 0], &w[0, 0], w.shape[1], transposed, accumulate,
                            &c[0, 0], n, num_threads)
        rnnx_release_threads(num_threads)


def weight_gradient(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                    floating[::1] acc, int backend, int num_threads=1):
    """c (m, n) += a.T @ b and acc (m,) += a.sum(0), for a (k, m), b (k, n), as the weight
    gradients compute them (_gemm_tn_accumulate: chunks of K_CHUNK rows of k, blocks of rows
    of c over up to num_threads threads), through what GemmBackend `backend` chooses for
    them. NumPy twin: c += a.T @ b; acc += a.sum(0)."""
    cdef intp k = a.shape[0], m = a.shape[1], n = b.shape[1]
    if b.shape[0] != k or acc.shape[0] != m:
        raise ValueError(f"weight_gradient: a is {(k, m)}, b is {(b.shape[0], n)}, acc is "
                         f"{(acc.shape[0],)}")
    _check_product(m, n, k, (c.shape[0], c.shape[1]), "weight_gradient")
    cdef floating[::1] chunks = np.empty(x_chunks_size(n, sizeof(floating), num_threads),
                                         np.float32 if floating is float else np.float64)
    cdef Rows rows = Rows(b=&b[0, 0], ldb=n, h0=NULL, bs=NULL, of=NULL, T=0, reverse=False)
    with nogil:
        num_threads = rnnx_claim_threads(num_threads)
        _gemm_tn_accumulate(_use_blas(backend, WEIGHT_GRADIENT), m, n, k, &a[0, 0], m, &rows,
                            &chunks[0], &c[0, 0], &acc[0], NULL, 0, num_threads)
        rnnx_release_threads(num_threads)
