# The kernel layer's constants, cell kinds and layout decisions, compiled once (no ISA in
# them): what rnnx.nn allocates and what the kernels of every level read agree because both
# ask this module.
cimport numpy as cnp
import numpy as np

cnp.import_array()

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


cpdef tuple panels_shape(intp k, intp n, intp itemsize):
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


# The buffers of one layer direction by role (the names of LayerPlan.shapes and of
# DirectionBuffers' fields).
WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
PANELS = ("w_ih_panels", "w_hh_panels", "w_hr_panels")    # the weights packed (microgemm.h)
STATE = ("h", "c")                 # the running state (backward: its gradient)
SAVED = ("gates", "h0", "cbuf", "c0", "hn", "m")          # what a training forward keeps
SCRATCH = ("b_sum", "xs", "hg", "dhtot", "dm")            # what one call uses and drops
GRADS = ("gw_ih", "gw_hh", "gb_ih", "gb_hh", "gw_hr")     # accumulated into (+=)
BUFFERS = WEIGHTS + PANELS + STATE + SAVED + SCRATCH + ("x_chunks",) + GRADS


cdef class LayerPlan:
    """One call of the layer kernels (forward_layer, backward_layer): cell kind, mode, dtype,
    sizes (steps T, batch B, packed rows N, input_size I, hidden_size H, state_size P:
    proj_size or H, gate_size G * H, ndir directions) and the packing of the sequence
    (batch_sizes (T,), non-increasing, and offsets = [0, cumsum(batch_sizes)]), checked once
    here. shapes() is the layout: the one source of every buffer's shape."""

    def __init__(self, int cell, bint training, batch_sizes, offsets, intp input_size,
                 intp hidden_size, intp state_size, intp num_directions, dtype,
                 int num_threads=1):
        if cell < 0 or cell > 3:
            raise ValueError(f"unknown cell kind {cell}")
        if num_directions < 1 or num_directions > 2:
            raise ValueError("one or two directions expected")
        self.dtype = np.dtype(dtype)
        if self.dtype.num != cnp.NPY_FLOAT32 and self.dtype.num != cnp.NPY_FLOAT64:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        if cell != LSTM and state_size != hidden_size:
            raise ValueError(f"state_size: expected hidden_size ({hidden_size}) without an "
                             f"LSTM projection, got {state_size}")
        if input_size < 1 or hidden_size < 1 or not 0 < state_size <= hidden_size:
            raise ValueError(f"sizes: expected positive input_size and hidden_size and "
                             f"0 < state_size <= hidden_size, got {input_size}, "
                             f"{hidden_size}, {state_size}")
        if num_threads < 1:
            raise ValueError(f"num_threads: expected a positive number, got {num_threads}")
        self._check_packing(batch_sizes, offsets)
        self.cell, self.training, self.num_threads = cell, training, num_threads
        self.typenum = self.dtype.num
        self.itemsize = self.dtype.itemsize
        self.input_size, self.hidden_size, self.state_size = input_size, hidden_size, state_size
        self.ndir = num_directions
        self.gate_size = NUM_GATES[cell] * hidden_size
        self.projection = state_size != hidden_size
        self.per_step = projects_per_step(cell, self.batch, input_size, state_size, hidden_size,
                                          self.itemsize)

    cdef _check_packing(self, batch_sizes, offsets):
        for name, a in (("batch_sizes", batch_sizes), ("offsets", offsets)):
            if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(a) != cnp.NPY_INTP
                    or cnp.PyArray_NDIM(a) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
                raise TypeError(f"{name}: expected a 1-d C-contiguous intp array, got "
                                f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        cdef intp T = batch_sizes.shape[0], t
        if T < 1:
            raise ValueError("expected at least one time step")
        if offsets.shape[0] != T + 1:
            raise ValueError(f"offsets: expected {T + 1} entries, got {offsets.shape[0]}")
        self.batch_sizes, self.offsets = batch_sizes, offsets
        self.bs = <const intp *> cnp.PyArray_DATA(batch_sizes)
        self.of = <const intp *> cnp.PyArray_DATA(offsets)
        if self.of[0] != 0:
            raise ValueError("offsets must start at 0")
        for t in range(T):
            if self.bs[t] < 1 or self.bs[t] > self.bs[0] or (t > 0 and self.bs[t] > self.bs[t - 1]):
                raise ValueError("batch_sizes must be positive and non-increasing")
            if self.of[t + 1] != self.of[t] + self.bs[t]:
                raise ValueError("offsets must be the running sum of batch_sizes")
        self.steps, self.batch, self.rows = T, self.bs[0], self.of[T]

    cpdef dict shapes(self, bint backward):
        """{name: shape} of every buffer of one direction that this call's forward (or
        backward) reads or writes; a buffer not named is not used. Backward reads what a
        training forward of the same sizes saved (SAVED). The same dict at every call: do not
        change it."""
        if backward:
            if self._backward_shapes is None:
                self._backward_shapes = self._layout(True)
            return self._backward_shapes
        if self._forward_shapes is None:
            self._forward_shapes = self._layout(False)
        return self._forward_shapes

    cdef dict _layout(self, bint backward):
        cdef intp N = self.rows, B = self.batch, I = self.input_size, H = self.hidden_size
        cdef intp P = self.state_size, GH = self.gate_size
        cdef bint lstm = self.cell == LSTM, gru = self.cell == GRU
        cdef bint training = self.training or backward
        s = {"w_ih": (GH, I), "w_hh": (GH, P), "h": (B, P), "hg": (B, GH)}
        if backward:    # the B operands as they are: w_ih (GH, I), w_hh (GH, P), w_hr (P, H)
            s["w_ih_panels"] = panels_shape(GH, I, self.itemsize)
            s["w_hh_panels"] = panels_shape(GH, P, self.itemsize)
        else:           # transposed: w_ih.T (I, GH), w_hh.T (P, GH), w_hr.T (H, P)
            s["w_ih_panels"] = panels_shape(I, GH, self.itemsize)
            s["w_hh_panels"] = panels_shape(P, GH, self.itemsize)
            s.update(b_ih=(GH,), b_hh=(GH,), b_sum=(GH,))
            if self.per_step:
                s["xs"] = (B, GH)
        if lstm:
            s["c"] = (B, H)
        if training or not self.per_step:
            s["gates"] = (N, GH)
        if training:
            s["h0"] = (B, P)
            if lstm:
                s.update(cbuf=(N, H), c0=(B, H))
            if gru:
                s["hn"] = (N, H)
        if self.projection:
            s["w_hr"] = (P, H)
            s["w_hr_panels"] = panels_shape(P, H, self.itemsize) if backward else \
                panels_shape(H, P, self.itemsize)
            s["m"] = (N if training else B, H)
            if backward:
                s.update(dhtot=(N, P), dm=(B, H))
        if backward:
            s["x_chunks"] = (x_chunks_size(max(I, H), self.itemsize, self.num_threads),)
            s.update(gw_ih=(GH, I), gw_hh=(GH, P), gb_ih=(GH,), gb_hh=(GH,))
            if self.projection:
                s["gw_hr"] = (P, H)
        return s


cdef class DirectionBuffers:
    """The arrays of one layer direction, one field per name of LayerPlan.shapes (None where
    unused): what the kernels read and write for it. cached_panels: the panels are a module's
    (kept between inference calls); frozen_grads: scratch gradient targets of parameters
    that require no gradient."""

    def __init__(self):
        self.frozen_grads = []

    def __iter__(self):
        """The names of the buffers it holds (the fields that are not None), in BUFFERS order."""
        return iter([name for name in BUFFERS if getattr(self, name) is not None])
