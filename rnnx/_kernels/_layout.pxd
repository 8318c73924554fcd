# The kernel layer's constants (constants.h), cell kinds, GEMM backends and the layout of a
# layer call's buffers: the one source of every shape, for the kernels and for Python.
cimport numpy as cnp

ctypedef cnp.intp_t intp

cdef extern from "constants.h":
    enum:
        PANEL_BYTES "RNNX_PANEL_BYTES"
        L2_BYTES "RNNX_L2_BYTES"
        MAX_BLOCKS "RNNX_MAX_BLOCKS"
        MIN_BLOCK_ROWS "RNNX_MIN_BLOCK_ROWS"
        SMALL_BATCH "RNNX_SMALL_BATCH"
        MIN_TEAM_WORK "RNNX_MIN_TEAM_WORK"
        K_CHUNK "RNNX_K_CHUNK"
        WEIGHT_GRAD_ROWS "RNNX_WEIGHT_GRAD_ROWS"
        SEQUENCE_ROWS "RNNX_SEQUENCE_ROWS"
        BLAS_ROWS "RNNX_BLAS_ROWS"
        BLAS_COLS "RNNX_BLAS_COLS"
    const int NUM_GATES "rnnx_num_gates"[4]

cpdef enum Cell:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3

# GEMM backends: AUTO picks per kind of product; the others run every product through the
# micro-kernel (microgemm.h) or through BLAS (scipy.linalg.cython_blas).
cpdef enum GemmBackend:
    GEMM_AUTO = 0
    GEMM_BLAS = 1
    GEMM_MICROKERNEL = 2


cdef inline intp panel_width(intp itemsize) noexcept nogil:
    """Columns per panel of a packed B operand."""
    return PANEL_BYTES // itemsize


cpdef tuple panels_shape(intp k, intp n, intp itemsize)
cpdef intp x_chunks_size(intp I, intp itemsize, int num_threads) noexcept nogil
cpdef bint weights_fit_cache(int cell, intp I, intp P, intp H, intp itemsize) noexcept nogil
cpdef bint projects_per_step(int cell, intp B, intp I, intp P, intp H,
                             intp itemsize) noexcept nogil
cpdef bint shares_time_loop(int cell, intp B, intp ndir, intp H, intp P, bint projection,
                            int num_threads) noexcept nogil


cdef class LayerPlan:
    # One layer call, made once by the caller (rnnx.nn) and read by the kernels: its sizes,
    # dtype, cell kind and mode, and the packing of its sequence.
    cdef readonly int cell, num_threads, typenum
    cdef readonly bint training, projection, per_step
    cdef readonly intp steps, batch, rows, input_size, hidden_size, state_size, gate_size
    cdef readonly intp ndir, itemsize
    cdef readonly object dtype, batch_sizes, offsets
    cdef const intp *bs
    cdef const intp *of
    cdef dict _forward_shapes, _backward_shapes    # shapes(), made on first use
    cdef _check_packing(self, batch_sizes, offsets)
    cpdef dict shapes(self, bint backward)
    cdef dict _layout(self, bint backward)


cdef class DirectionBuffers:
    # The arrays of one layer direction, as named in LayerPlan.shapes (None where unused).
    cdef public object w_ih, w_hh, b_ih, b_hh, w_hr, w_ih_panels, w_hh_panels, w_hr_panels
    cdef public object h, c, b_sum, xs, gates, hg, h0, cbuf, c0, hn, m, dhtot, dm, x_chunks
    cdef public object gw_ih, gw_hh, gb_ih, gb_hh, gw_hr
    # bookkeeping of the caller: the panels are a module's cached ones; gradient targets of
    # frozen parameters (scratch)
    cdef public bint cached_panels
    cdef public list frozen_grads
