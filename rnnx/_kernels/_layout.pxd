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


cpdef intp x_chunks_size(intp I, intp itemsize, int num_threads) noexcept nogil
cpdef bint weights_fit_cache(int cell, intp I, intp P, intp H, intp itemsize) noexcept nogil
cpdef bint projects_per_step(int cell, intp B, intp I, intp P, intp H,
                             intp itemsize) noexcept nogil
cpdef bint shares_time_loop(int cell, intp B, intp ndir, intp H, intp P, bint projection,
                            int num_threads) noexcept nogil
