"""LSTM, GRU and RNN sequence modules with torch.nn's arguments, shapes and parameters.

Every layer and direction runs in the fused Cython kernel (rnnx._kernels._recurrent) over
a packed sequence: step t holds the first batch_sizes[t] rows of a length-sorted batch.
A padded batch of full-length sequences packs for free (x.reshape(T * B, I)); a padded
batch with `lengths`, or a PackedSequence, is gathered once, so the work scales with the
sum of the lengths.
"""
import numbers
import os
import threading
import warnings

import numpy as np

from .. import _random, _threads
from .._kernels._recurrent import (PANELS, SAVED, SCRATCH, Cell, DirectionBuffers, LayerPlan,
                                   backward_layer, forward_layer, num_gates, pack_panels,
                                   panels_shape, refresh_panels, weights_fit_cache)
from ..utils.rnn import (PackedSequence, check_batch_sizes, check_packed_indices,
                         packing_of_lengths)
from .._workspace import POOL
from .module import (MODIFIED_IN_PLACE, Module, Parameter, Record, as_float_array,
                     check_dtype, check_grad_shape, fingerprint)

_PANEL_CACHE_LOCK = threading.Lock()


def immutable(a):
    """Whether array a's memory belongs to a bytes object (as freeze makes the weights):
    numpy will not make such an array, or any view of it, writeable."""
    while isinstance(a, np.ndarray):
        a = a.base
    return isinstance(a, bytes)


def cached_panels(cache, name, w):
    """panels(w.T) for an inference call, kept in `cache` (a dict of the module's) between
    calls and packed again only when w's bytes changed since (refresh_panels compares them
    with the copy it packed from). Concurrent calls share the panels: the lock keeps a repack
    from racing another call's check. An immutable w (a frozen module's, see freeze) needs
    no check: the panels packed from it stay valid while it is the same array."""
    frozen = immutable(w)
    entry = cache.get(name)
    if frozen and entry is not None and entry[0] is w:
        return entry[1]
    with _PANEL_CACHE_LOCK:
        if frozen:
            packed = panels_buffer(w.shape[1], w.shape[0], w.dtype, pooled=False)
            pack_panels(w.T, packed)
            cache[name] = (w, packed)
            return packed
        entry = cache.get(name)
        # a new entry also when the last one was packed from an immutable w (no copy of
        # its own), or from w itself (a deep copy of such an entry)
        fresh = (entry is None or entry[0] is w or not entry[0].flags.writeable
                 or entry[0].shape != w.shape or entry[0].dtype != w.dtype)
        if fresh:
            entry = cache[name] = (np.empty_like(w), panels_buffer(w.shape[1], w.shape[0],
                                                                   w.dtype, pooled=False))
        refresh_panels(w, entry[0], entry[1], fresh)
    return entry[1]


def run_forward(plan, x, weights, states, zero_bias, out, caches=None):
    """One layer forward through the kernels, the one way there for sequences and cells.

    plan: its LayerPlan; x (N, I) its packed input, out (N, D * P) its output; per direction
    weights: (w_ih, w_hh, b_ih, b_hh, w_hr) Parameters, None where absent, and states: (h, c)
    holding the initial state and receiving the final one; caches: per direction a dict in
    which an inference call keeps the packed weights (cached_panels), or None. Returns, for a
    training plan, per direction the DirectionBuffers that its backward reads (run_backward).
    """
    dirs = [direction_buffers(plan, weights[d], *states[d], zero_bias,
                              None if caches is None else caches[d]) for d in range(plan.ndir)]
    forward_layer(plan, x, dirs, out)
    if plan.training:
        return [keep_for_backward(bufs) for bufs in dirs]
    for bufs in dirs:
        release_buffers(bufs)
    return None


def run_backward(plan, x, out, saved, weights, grad_states, grad_out, grad_x):
    """Back-propagate one layer run by run_forward (which returned `saved`): grad_states per
    direction (dh, dc) hold the gradients of the final state and receive those of the initial
    one; grad_out (N, D * P) or None; grad_x (N, I) is written, unless None. Parameter
    gradients accumulate into .grad."""
    x_chunks = POOL.take(plan.shapes(True)["x_chunks"], plan.dtype)   # shared by directions
    for d in range(plan.ndir):
        attach_gradients(saved[d], plan, weights[d], *grad_states[d], x_chunks)
    backward_layer(plan, x, out, saved, grad_out, grad_x)
    for bufs in saved:
        release_buffers(bufs)
    POOL.give(x_chunks)


def take_buffers(bufs, shapes, names, dtype):
    """Pool arrays for the buffers `names` that the layout `shapes` has, into bufs."""
    for name in names:
        shape = shapes.get(name)
        if shape is not None:
            setattr(bufs, name, POOL.take(shape, dtype))


def direction_buffers(plan, weights, h, c, zero_bias, cache=None):
    """The kernel's DirectionBuffers of one layer direction for a forward `plan`.

    weights: (w_ih, w_hh, b_ih, b_hh, w_hr) Parameters, None where absent; h (B, P) and
    c (B, H) hold the initial state and receive the final one. Scratch comes from the pool,
    shaped by plan.shapes; release_buffers gives it back. cache: for an inference call, a
    dict in which the module keeps this direction's packed weights between calls
    (cached_panels), used when they fit in cache (weights_fit_cache; bigger ones pack in a
    small fraction of a call's time).
    """
    _threads.pin_kernel_blas()
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    cached = cache is not None and weights_fit_cache(plan.cell, plan.input_size, plan.state_size, plan.hidden_size,
                                                     plan.itemsize)

    def pack(name, w):
        return cached_panels(cache, name, w) if cached else panels(w.T)
    bufs = DirectionBuffers()
    bufs.w_ih, bufs.w_hh = w_ih.data, w_hh.data
    bufs.w_hh_panels, bufs.w_ih_panels = pack("w_hh", w_hh.data), pack("w_ih", w_ih.data)
    bufs.b_ih = zero_bias if b_ih is None else b_ih.data
    bufs.b_hh = zero_bias if b_hh is None else b_hh.data
    if w_hr is not None:
        bufs.w_hr, bufs.w_hr_panels = w_hr.data, pack("w_hr", w_hr.data)
    bufs.cached_panels = cached
    bufs.h, bufs.c = h, c
    take_buffers(bufs, plan.shapes(False), SCRATCH + SAVED, plan.dtype)
    return bufs


def release_buffers(bufs):
    """Give a direction's scratch back to the pool (after the call that used it); a
    module's cached panels stay the module's."""
    names = SCRATCH + SAVED + (() if bufs.cached_panels else PANELS)
    POOL.give(*(getattr(bufs, name) for name in names), *bufs.frozen_grads)
    for name in names:
        setattr(bufs, name, None)
    bufs.frozen_grads = []


def grad_target(p, bufs):
    """The array the kernel accumulates p's gradient into: p.grad (allocated if None), or for
    a frozen p (requires_grad=False) zeroed pool scratch, listed in bufs.frozen_grads for
    release_buffers to discard."""
    target = p._grad_target()
    if target is None:
        target = POOL.take(p.data.shape, p.data.dtype)
        target.fill(0)
        bufs.frozen_grads.append(target)
    return target


def keep_for_backward(bufs):
    """What backward reads of a training forward's direction (SAVED), as new DirectionBuffers;
    the rest of bufs' scratch goes back to the pool: a pending record holds nothing else."""
    saved = DirectionBuffers()
    for name in SAVED:
        setattr(saved, name, getattr(bufs, name))
        setattr(bufs, name, None)
    release_buffers(bufs)
    return saved


def panels_buffer(k, n, dtype, pooled=True):
    """A (ceil(n / width), k, width) array (from the pool unless pooled=False) for a (k, n)
    matrix in the kernels' column panels of width = 64 bytes (microgemm.h), the padding of
    its last panel zeroed."""
    shape = panels_shape(k, n, dtype.itemsize)
    width = shape[2]
    out = POOL.take(shape, dtype) if pooled else np.empty(shape, dtype)
    if n % width:
        out[-1, :, n % width:] = 0
    return out


def panels(b):
    """b (k, n) as the kernels' step GEMM reads it (microgemm.h): column panels of 64 bytes
    (16 float32 or 8 float64), the last one zero-padded; shape (ceil(n / width), k, width).
    The array comes from the pool."""
    out = panels_buffer(*b.shape, b.dtype)
    pack_panels(b, out)
    return out


def attach_gradients(bufs, plan, weights, dh, dc, x_chunks):
    """Turn a forward's saved DirectionBuffers (keep_for_backward) into the kernel's backward
    ones for `plan`, in place: dh (B, P), dc (B, H) the state gradients; x_chunks: scratch
    shared by the directions of a layer."""
    _threads.pin_kernel_blas()
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    bufs.h, bufs.c = dh, dc
    bufs.w_ih, bufs.w_hh = w_ih.data, w_hh.data
    bufs.gw_ih, bufs.gw_hh = grad_target(w_ih, bufs), grad_target(w_hh, bufs)
    bufs.w_hh_panels, bufs.w_ih_panels = panels(w_hh.data), panels(w_ih.data)
    bufs.x_chunks = x_chunks
    bufs.gb_ih = None if b_ih is None else grad_target(b_ih, bufs)
    bufs.gb_hh = None if b_hh is None else grad_target(b_hh, bufs)
    if w_hr is not None:
        bufs.w_hr, bufs.gw_hr = w_hr.data, grad_target(w_hr, bufs)
        bufs.w_hr_panels = panels(w_hr.data)
    take_buffers(bufs, plan.shapes(True), SCRATCH, plan.dtype)


def guard(what, a):
    """(what, a, fingerprint of a): an array that the caller holds too and that backward
    will read in place (a sequence module's input and output), for check_guards."""
    return what, a, fingerprint(a)


def check_guards(module, guards):
    """RuntimeError, as PyTorch's for a saved tensor modified in place, if an array that
    backward reads in place changed since its forward (guard)."""
    for what, a, fp in guards:
        if fingerprint(a) != fp:
            raise RuntimeError(
                f"{MODIFIED_IN_PLACE}: the {what} of this {type(module).__name__} forward changed "
                f"before its backward, which reads it in place (as PyTorch saves it); change it "
                f"after backward, or clear_records() and run forward again")


def check_int_sizes(**sizes):
    """TypeError unless every value is an int (bool excluded), as torch's messages say."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")


def physical_memory():
    """Bytes of RAM of this machine (2**40 where it cannot be found)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2 ** 40


def check_parameter_bytes(name, mode, I, H, L, bias, D, proj_size, dtype):
    """ValueError before allocating anything if the parameters alone would not fit in this
    machine's memory (numpy refuses one array too big to address; a huge num_layers would
    make many arrays instead, for minutes, until memory runs out)."""
    G, P = num_gates(mode), proj_size or H
    per_direction = G * H * (P + 2 * bias) + P * H * (proj_size > 0)
    need = dtype.itemsize * D * (G * H * I + per_direction
                                 + (L - 1) * (G * H * D * P + per_direction))
    if need > physical_memory():
        raise ValueError(f"{name}: these sizes need {need / 2 ** 30:.3g} GiB of parameters, more "
                         f"than this machine's {physical_memory() / 2 ** 30:.3g} GiB of memory")


def reset_uniform(module):
    """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), in parameter order
    (PyTorch's default initialisation of recurrent layers and cells)."""
    stdv = 1.0 / np.sqrt(module.hidden_size)
    rng = _random.default_generator()
    for p in module.parameters():
        p.data[...] = rng.uniform(-stdv, stdv, p.data.shape)


class _Batch:
    """A batch in the kernels' packed layout plus what it takes to restore the caller's form."""

    __slots__ = ("data", "batch_sizes", "offsets", "sorted_indices", "unsorted_indices",
                 "rows", "form", "T", "B", "batch_first", "unbatched")

    def __init__(self, data, batch_sizes, offsets, sorted_indices, unsorted_indices, rows,
                 form, T, B, batch_first=False, unbatched=False):
        self.data, self.batch_sizes, self.offsets = data, batch_sizes, offsets
        self.sorted_indices, self.unsorted_indices, self.rows = sorted_indices, unsorted_indices, rows
        self.form, self.T, self.B = form, T, B
        self.batch_first, self.unbatched = batch_first, unbatched

    def pack(self, padded):
        """(T, B, F) time-major padded array -> (N, F) packed rows."""
        if self.rows is None:
            return np.ascontiguousarray(padded).reshape(self.T * self.B, -1)
        t_idx, b_idx = self.rows
        return padded[t_idx, b_idx]

    def unpack(self, packed):
        """(N, F) packed rows -> (T, B, F) time-major padded array, zeros past each end."""
        if self.rows is None:
            return packed.reshape(self.T, self.B, -1)
        out = np.zeros((self.T, self.B, packed.shape[1]), packed.dtype)
        t_idx, b_idx = self.rows
        out[t_idx, b_idx] = packed
        return out

    def to_caller(self, packed):
        """Packed rows (the output, or the input gradient) -> the caller's form (PackedSequence,
        padded with zeros past each end, batch_first, unbatched)."""
        if self.form == "packed":
            return PackedSequence(packed, self.batch_sizes, self.sorted_indices,
                                  self.unsorted_indices)
        out = self.unpack(packed)
        if self.unbatched:
            return out[:, 0]
        return out.transpose(1, 0, 2) if self.batch_first else out

    def from_caller(self, module, grad, width, dtype):
        """Gradient in the caller's output form -> (N, width) packed rows (None stays None)."""
        if grad is None:
            return None
        if self.form == "packed":
            data = grad.data if isinstance(grad, PackedSequence) else grad
            data = as_float_array(data, dtype, "grad_output")
            check_grad_shape(module, "grad_output (packed data)", data.shape,
                             (self.data.shape[0], width))
            return np.ascontiguousarray(data)
        grad = as_float_array(grad, dtype, "grad_output")
        expected = ((self.T, width) if self.unbatched else
                    (self.B, self.T, width) if self.batch_first else (self.T, self.B, width))
        check_grad_shape(module, "grad_output", grad.shape, expected)
        if self.unbatched:
            grad = grad[:, None]
        elif self.batch_first:
            grad = grad.transpose(1, 0, 2)
        return np.ascontiguousarray(self.pack(grad))


class RNNBase(Module):
    """Shared machinery of LSTM, GRU and RNN: parameters, checks, packing, kernels."""

    accepts_lengths = True  # forward(x, hx, lengths=...); a PackedSequence too

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32):
        super().__init__()
        check_int_sizes(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                        proj_size=proj_size)
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != Cell.LSTM:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        check_parameter_bytes(type(self).__name__, mode, input_size, hidden_size, num_layers,
                              bias, 2 if bidirectional else 1, proj_size, check_dtype(dtype))
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bool(bidirectional), int(proj_size)
        self.dtype = check_dtype(dtype)
        self.num_directions = 2 if bidirectional else 1
        gate_size = num_gates(mode) * hidden_size
        real_hidden = proj_size or hidden_size
        self._zero_bias = np.zeros(gate_size, self.dtype)
        self._panel_cache = {}  # per (layer, direction): packed weights kept for inference
        self._weight_names = []  # per layer, per direction: names of (w_ih, w_hh, b_ih, ...)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * self.num_directions
            per_dir = []
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for name, shape in shapes:
                    setattr(self, name + suffix, Parameter(np.zeros(shape, self.dtype)))
                kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                per_dir.append(tuple(k + suffix if k + suffix in self._parameters else None
                                     for k in kinds))
            self._weight_names.append(per_dir)
        self.reset_parameters()
        self._expect_parameters()
        self._backward_reads = tuple(name for name in self._parameters
                                     if name.startswith("weight_"))

    def reset_parameters(self):
        reset_uniform(self)

    def layer_weights(self):
        """Per layer, per direction: the (w_ih, w_hh, b_ih, b_hh, w_hr) Parameters, None where
        absent, looked up by name (a Parameter assigned in place of one is the one used). The
        same form as the cells' layer_weights()."""
        get = self._parameters.get
        return [[tuple(None if n is None else get(n) for n in names) for names in per_dir]
                for per_dir in self._weight_names]

    @property
    def all_weights(self):
        """Per layer and direction, [weight_ih, weight_hh, (bias_ih, bias_hh), (weight_hr)]
        Parameters, as torch's all_weights."""
        return [[p for p in weights if p is not None] for per_dir in self.layer_weights()
                for weights in per_dir]

    def flatten_parameters(self):
        """A no-op, as torch's on CPU: the weights are always contiguous arrays here."""

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype}"
        return s

    # -- input handling ------------------------------------------------------------------
    @property
    def _state_size(self):
        return self.proj_size or self.hidden_size

    def _make_batch(self, input, lengths):
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when the input is a PackedSequence")
            data = as_float_array(input.data, self.dtype, "input")
            if data.ndim != 2:
                raise ValueError(f"PackedSequence: expected data (sum(batch_sizes), input_size), "
                                 f"got shape {data.shape}")
            bs = check_batch_sizes(input.batch_sizes, data)  # a copy: the record keeps it
            if data.shape[1] != self.input_size:
                raise ValueError(f"input.size(-1) must be equal to input_size. Expected "
                                 f"{self.input_size}, got {data.shape[1]}")
            sorted_idx, unsorted_idx = check_packed_indices(input.sorted_indices,
                                                            input.unsorted_indices, int(bs[0]))
            offsets = np.zeros(bs.size + 1, np.intp)
            np.cumsum(bs, out=offsets[1:])
            return _Batch(np.ascontiguousarray(data), bs, offsets, sorted_idx, unsorted_idx,
                          None, "packed", bs.size, int(bs[0]))
        x = as_float_array(input, self.dtype, "input")
        if x.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.ndim}D input instead")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {x.shape[-1]}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B = x.shape[0], x.shape[1]
        if T == 0 or B == 0:
            raise ValueError(f"{name}: expected a non-empty sequence batch, got {T} time steps "
                             f"and batch size {B}")
        if lengths is None:
            bs = np.full(T, B, np.intp)
            offsets = np.arange(T + 1, dtype=np.intp) * B
            return _Batch(np.ascontiguousarray(x).reshape(T * B, -1), bs, offsets, None, None,
                          None, "padded", T, B, self.batch_first, unbatched)
        bs, offsets, sorted_idx, unsorted_idx, rows = packing_of_lengths(lengths, T, B)
        batch = _Batch(None, bs, offsets, sorted_idx, unsorted_idx, rows, "padded", T, B,
                       self.batch_first, unbatched)
        batch.data = np.ascontiguousarray(batch.pack(x))
        return batch

    def _initial_state(self, hx, batch, what, width):
        """hx (L*D, B, width) in the caller's batch order -> a fresh sorted-order copy."""
        LD = self.num_layers * self.num_directions
        B = batch.B
        if hx is None:
            return np.zeros((LD, B, width), self.dtype)
        hx = as_float_array(hx, self.dtype, what)
        if batch.unbatched:
            if hx.ndim != 2:
                raise ValueError(f"For unbatched 2-D input, {what} should also be 2-D but got "
                                 f"{hx.ndim}-D tensor")
            hx = hx[:, None]
        elif hx.ndim != 3:
            raise ValueError(f"For batched 3-D input, {what} should also be 3-D but got "
                             f"{hx.ndim}-D tensor")
        if hx.shape != (LD, B, width):
            expected = (LD, width) if batch.unbatched else (LD, B, width)
            got = hx.shape[::2] if batch.unbatched else hx.shape
            raise ValueError(f"Expected {what} size {expected}, got {tuple(got)}")
        if batch.sorted_indices is not None:
            return np.ascontiguousarray(hx[:, batch.sorted_indices])
        return np.array(hx, order="C", copy=True)

    def _final_state(self, state, batch):
        """Sorted-order (L*D, B, width) state -> caller's batch order (and unbatched form)."""
        if batch.unsorted_indices is not None:
            state = state[:, batch.unsorted_indices]
        return state[:, 0] if batch.unbatched else state

    def _split_hx(self, hx):
        """(h0, c0) for LSTM, (h0, None) otherwise."""
        if self.mode != Cell.LSTM:
            return hx, None
        if hx is None:
            return None, None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("LSTM expects hx as a tuple (h_0, c_0)")
        return hx[0], hx[1]

    # -- forward / backward -----------------------------------------------------------------
    def forward(self, input, hx=None, lengths=None):
        """out, h_n = rnn(x, h0)  (LSTM: out, (h_n, c_n) = lstm(x, (h0, c0))).

        x: (T, B, I), (B, T, I) when batch_first, (T, I) unbatched, or a PackedSequence.
        lengths: optional (B,) ints in [1, T], the valid length of each padded sequence.
        out: (T, B, D * P) (P = proj_size or hidden_size), zeros past each sequence's end;
        h_n: (L * D, B, P); c_n: (L * D, B, H).
        """
        self._check_parameters()
        h0, c0 = self._split_hx(hx)
        batch = self._make_batch(input, lengths)
        H, P, D = self.hidden_size, self._state_size, self.num_directions
        lstm = self.mode == Cell.LSTM
        h_n = self._initial_state(h0, batch, "hx" if not lstm else "h_0", P)
        c_n = self._initial_state(c0, batch, "c_0", H) if lstm else None
        recording = self._recording
        threads = _threads.get_num_threads()
        N = batch.data.shape[0]
        layer_in = batch.data
        layers = []
        last = self.num_layers - 1
        weights = self.layer_weights()
        for layer in range(self.num_layers):
            plan = LayerPlan(self.mode, recording, batch.batch_sizes, batch.offsets,
                             layer_in.shape[1], H, P, D, self.dtype, threads)
            states = [(h_n[layer * D + d], None if c_n is None else c_n[layer * D + d])
                      for d in range(D)]
            # Outputs between layers are scratch; the last one goes to the caller.
            shape = (N, D * P)
            out = np.empty(shape, self.dtype) if layer == last else POOL.take(shape, self.dtype)
            saved = run_forward(plan, layer_in, weights[layer], states, self._zero_bias, out,
                                self._inference_caches(recording, layer))
            mask, next_in = None, out
            if self.training and self.dropout > 0 and layer < last:
                # the next layer's input; out itself stays, for this layer's backward
                mask = dropout_mask(out.shape, self.dropout, self.dtype)
                next_in = np.multiply(out, mask, out=POOL.take(shape, self.dtype))
            if recording:
                layers.append((layer_in, out, saved, mask))
            else:
                if layer > 0:
                    POOL.give(layer_in)
                if mask is not None:
                    POOL.give(out)
            layer_in = next_in
        if recording:
            # the batch, per layer (input, output, direction dicts, dropout mask), the
            # fingerprints of the weights and guards of the caller's arrays that backward reads
            # (its input and output, read in place rather than copied)
            self._push_record(Record(batch=batch, layers=layers, has_c=lstm,
                                     weights=self._fingerprint_weights(self._backward_reads),
                                     guards=self._guards(input, batch, layer_in)))
        output = batch.to_caller(layer_in)
        h_out = self._final_state(h_n, batch)
        if lstm:
            return output, (h_out, self._final_state(c_n, batch))
        return output, h_out

    @staticmethod
    def _guards(input, batch, out):
        """Guards (see guard) of the arrays a training forward shares with its caller and
        backward reads in place: the packed input when it is the caller's memory, and the
        output when the caller receives it as it is (not unpacked into padded form)."""
        source = input.data if isinstance(input, PackedSequence) else input
        guards = []
        if np.may_share_memory(batch.data, source):
            guards.append(guard("input", batch.data))
        if batch.rows is None:
            guards.append(guard("output", out))
        return tuple(guards)

    def _inference_caches(self, recording, layer):
        """Per direction of a layer, the dict in which an inference call keeps its packed
        weights for the next (cached_panels); None for a training call (its weights change
        at every step)."""
        if recording:
            return None
        return [self._panel_cache.setdefault((layer, d), {}) for d in range(self.num_directions)]

    def backward(self, grad_output=None, grad_hx=None, *, input_grad=True):
        """grad_x, grad_h0 = rnn.backward(grad_out, grad_h_n)
        (LSTM: grad_x, (grad_h0, grad_c0) = lstm.backward(grad_out, (grad_h_n, grad_c_n))).

        Consumes the most recent forward record; either gradient may be None (zeros).
        Parameter gradients accumulate into each parameter's .grad. input_grad=False skips
        the first layer's input gradient (dX = dgates @ W_ih) and returns None for grad_x.
        """
        rec = self._peek_record()
        batch = rec.batch
        H, P, D = self.hidden_size, self._state_size, self.num_directions
        gh, gc = self._split_hx(grad_hx)
        dh = self._initial_state(gh, batch, "grad_h_n", P)
        dc = self._initial_state(gc, batch, "grad_c_n", H) if rec.has_c else None
        grad = batch.from_caller(self, grad_output, D * P, self.dtype)
        self._check_parameters()
        self._check_unmodified(rec.weights)
        check_guards(self, rec.guards)
        self._check_gradients()
        self._pop_record()
        threads = _threads.get_num_threads()
        weights = self.layer_weights()
        for layer in reversed(range(self.num_layers)):
            layer_in, out, saved, _ = rec.layers[layer]
            plan = LayerPlan(self.mode, True, batch.batch_sizes, batch.offsets,
                             layer_in.shape[1], H, P, D, self.dtype, threads)
            grad_states = [(dh[layer * D + d], None if dc is None else dc[layer * D + d])
                           for d in range(D)]
            # Gradients between layers are scratch; the input gradient goes to the caller.
            if layer > 0:
                grad_in = POOL.take(layer_in.shape, self.dtype)
            else:
                grad_in = np.empty(layer_in.shape, self.dtype) if input_grad else None
            run_backward(plan, layer_in, out, saved, weights[layer], grad_states, grad, grad_in)
            if layer < self.num_layers - 1:
                POOL.give(grad)         # from the layer above, not the caller's grad_output
                POOL.give(out)          # scratch: the input of the layer above (or its source)
            if layer > 0:
                mask = rec.layers[layer - 1][3]
                if mask is not None:
                    POOL.give(layer_in)     # the output of the layer below, dropped out
                    grad_in *= mask
            grad = grad_in
        grad_x = batch.to_caller(grad) if input_grad else None
        grad_h0 = self._final_state(dh, batch)
        if rec.has_c:
            return grad_x, (grad_h0, self._final_state(dc, batch))
        return grad_x, grad_h0


def dropout_mask(shape, p, dtype):
    """Inverted-dropout mask: 0 with probability p, else 1/(1-p) (all zeros when p == 1)."""
    keep = _random.default_generator().random(shape) >= p
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    return keep.astype(dtype) * dtype.type(scale)


class LSTM(RNNBase):
    """Multi-layer LSTM, PyTorch's torch.nn.LSTM (gates i, f, g, o; optional proj_size)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32):
        super().__init__(Cell.LSTM, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype)


class GRU(RNNBase):
    """Multi-layer GRU, PyTorch's torch.nn.GRU (gates r, z, n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, proj_size=0):
        super().__init__(Cell.GRU, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype)


class RNN(RNNBase):
    """Multi-layer Elman RNN with tanh or relu, PyTorch's torch.nn.RNN."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 proj_size=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        mode = Cell.RNN_TANH if nonlinearity == "tanh" else Cell.RNN_RELU
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype)
        self.nonlinearity = nonlinearity
