# Fused LSTM / GRU / RNN layer kernels, forward and backward through time: the source of the
# per-level modules _recurrent_<level>, which setup.py generates at build time (each a
# one-line .pyx that includes this file) and compiles with that level's -march flags.
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
#
# The pieces, each one thing: _gemm.pxi (every matrix product, BLAS or micro-kernel),
# _packing.pxi (weights into the micro-kernel's panels), _time_loops.pxi (the time loops,
# gates and weight gradients), _layer.pxi (the Python entry points and their checks). The
# constants, cell kinds and buffer layout are _layout's, compiled once.
cimport numpy as cnp
from libc.string cimport memcmp, memcpy
import numpy as np

from ._blas cimport floating, gemm
from ._layout cimport (intp, Cell, RNN_TANH, RNN_RELU, LSTM, GRU, GemmBackend, GEMM_AUTO,
                       GEMM_BLAS, GEMM_MICROKERNEL, NUM_GATES, MAX_BLOCKS, MIN_BLOCK_ROWS,
                       SMALL_BATCH, K_CHUNK, WEIGHT_GRAD_ROWS, SEQUENCE_ROWS, BLAS_ROWS,
                       BLAS_COLS, panel_width, x_chunks_size, weights_fit_cache,
                       projects_per_step, shares_time_loop, LayerPlan, DirectionBuffers)
from ._layout import panels_shape

cnp.import_array()

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
    #ifndef RNNX_BUILD_FLAGS
    #define RNNX_BUILD_FLAGS ""
    #endif
    """
    unsigned int rnnx_flush_denormals() noexcept nogil
    void rnnx_restore_fp_mode(unsigned int) noexcept nogil
    const char *RNNX_BUILD_FLAGS

# The instruction-set flags this module was compiled with (setup.py's LEVELS).
BUILD_FLAGS = (<bytes> RNNX_BUILD_FLAGS).decode()

# The kernels' own pool of threads and its teams (team.h), for every piece.
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


include "_gemm.pxi"
include "_packing.pxi"
include "_time_loops.pxi"
include "_layer.pxi"
