# The kernel layer's constants, cell kinds and layout decisions, compiled once (no ISA in
# them): what rnnx.nn allocates and what the kernels of every level read agree because both
# ask this module.

CONSTANTS = {
    "PANEL_BYTES": PANEL_BYTES, "L2_BYTES": L2_BYTES, "MAX_BLOCKS": MAX_BLOCKS,
    "MIN_BLOCK_ROWS": MIN_BLOCK_ROWS, "SMALL_BATCH": SMALL_BATCH,
    "MIN_TEAM_WORK": MIN_TEAM_WORK, "K_CHUNK": K_CHUNK, "WEIGHT_GRAD_ROWS": WEIGHT_GRAD_ROWS,
    "SEQUENCE_ROWS": SEQUENCE_ROWS, "BLAS_ROWS": BLAS_ROWS, "BLAS_COLS": BLAS_COLS,
}


def num_gates(cell):
    """Gates of a cell kind: 4 (LSTM), 3 (GRU), 1 (RNN_TANH, RNN_RELU)."""
    return NUM_GATES[<int> Cell(cell)]


# Gates per cell name, as the NumPy reference and bench name the cells.
NUM_GATES_BY_NAME = {"LSTM": NUM_GATES[<int> LSTM], "GRU": NUM_GATES[<int> GRU],
                     "RNN": NUM_GATES[<int> RNN_TANH]}


def panels_shape(intp k, intp n, intp itemsize):
    """Shape (ceil(n / width), k, width) of a (k, n) matrix packed in the kernels' column
    panels of width = PANEL_BYTES // itemsize columns (microgemm.h)."""
    cdef intp w = panel_width(itemsize)
    return ((n + w - 1) // w, k, w)


cpdef intp x_chunks_size(intp I, intp itemsize, int num_threads) noexcept nogil:
    """Elements of the x_chunks scratch that backward_layer needs for an input of I features:
    per thread, K_CHUNK rows of I features in whole panels."""
    cdef intp w = panel_width(itemsize)
    return num_threads * K_CHUNK * ((I + w - 1) // w) * w


cpdef bint weights_fit_cache(int cell, intp I, intp P, intp H, intp itemsize) noexcept nogil:
    """Whether a direction's input and recurrent weights fit together in L2 (L2_BYTES)."""
    return (I + P) * NUM_GATES[cell] * H * itemsize <= L2_BYTES


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


cpdef bint shares_time_loop(int cell, intp B, intp ndir, intp H, intp P, bint projection,
                            int num_threads) noexcept nogil:
    """Whether the time loops run on a team of threads split by hidden units (_team_forward,
    _team_backward): one direction whose B rows are too few to split into row blocks,
    several threads, no projection, and steps big enough to pay for two barriers."""
    return (ndir == 1 and B < SMALL_BATCH and num_threads > 1 and not projection
            and P * NUM_GATES[cell] * H >= MIN_TEAM_WORK)
