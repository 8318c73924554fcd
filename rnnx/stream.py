"""rnnx.Stream: run a recurrent model chunk by chunk over B independent streams, its state
carried between calls.

    stream = rnnx.Stream(model, batch_size=B)
    y = stream.step(x)          # x: the next chunk (one or more steps) of all B streams

y is what model(x_1 ++ ... ++ x_k) would return for the steps of the last chunk x_k, bit for
bit (tests/test_stream.py): for a layer its (output, state) for those steps, after a
LastTimeStep / LastHidden the value after the last step fed so far. The model is run through
its public call (layer(x, hx), cell(x, h)), the state of every recurrent module fed back in;
each stage's `step` is the one place a dedicated single-step kernel path would go.
"""
import threading

import numpy as np

from .nn.cells import LSTMCell, RNNCellBase
from .nn.container import LastHidden, Sequential
from .nn.module import Module
from .nn.pooling import LastTimeStep
from .nn.rnn import LSTM, RNNBase


class _Recurrent:
    """A recurrent module and the state Stream carries for it, in PyTorch's layout: a layer's
    h (L, B, P) (and an LSTM's c (L, B, H)), a cell's h (B, H) (and an LSTMCell's c)."""

    def __init__(self, module, batch_size):
        self.module = module
        self.layer = layer = isinstance(module, RNNBase)
        dtype = module.dtype
        H = module.hidden_size
        if layer:
            L, P = module.num_layers, module.proj_size or H
            shapes = [(L, batch_size, P)] + ([(L, batch_size, H)] if isinstance(module, LSTM)
                                             else [])
        else:
            shapes = [(batch_size, H)] * (2 if isinstance(module, LSTMCell) else 1)
        self.batch_axis = 1 if layer else 0
        self.buffers = [np.zeros(shape, dtype) for shape in shapes]
        # what the module is given as hx: the buffers themselves (the module copies them)
        self.hx = tuple(self.buffers) if len(shapes) == 2 else self.buffers[0]
        # what the caller sees: read-only views of the buffers (updated in place at each step)
        views = [b.view() for b in self.buffers]
        for v in views:
            v.flags.writeable = False
        self.views = tuple(views) if len(views) == 2 else views[0]

    def step(self, x):
        """The module over chunk x from the carried state; the state advanced in place.
        Returns what the module returns, its state replaced by the read-only views."""
        y = self.module(x, self.hx)
        if self.layer:
            out, new = y
        else:
            out, new = None, y
        for buffer, value in zip(self.buffers, new if len(self.buffers) == 2 else (new,)):
            np.copyto(buffer, value)
        return self.views if out is None else (out, self.views)


class _PerStep:
    """A module called as it is (one that acts per position, or a LastTimeStep/LastHidden,
    which read the last step of the chunk: the last step fed so far)."""

    def __init__(self, module):
        self.module = module

    def step(self, x):
        return self.module(x)


class _LastStep:
    """A LastTimeStep: the chunk's last step is the last step fed so far (indexed directly,
    as LastTimeStep without lengths computes it)."""

    def __init__(self, module):
        self.time_axis = 1 if module.batch_first else 0

    def step(self, x):
        steps = x[0] if isinstance(x, tuple) else x
        return steps[:, -1] if self.time_axis else steps[-1]


def _stages(model, batch_size, name="model"):
    """The model as a list of stages (_Recurrent, _PerStep); ValueError/TypeError for a module
    Stream cannot run step by step."""
    if isinstance(model, Sequential):
        return [stage for i, child in enumerate(model)
                for stage in _stages(child, batch_size, f"{name}[{i}]")]
    what = f"{name} ({type(model).__name__})"
    if isinstance(model, RNNBase):
        if model.bidirectional:
            raise ValueError(f"Stream: {what} is bidirectional: its backward direction reads the "
                             f"sequence from its end, so no output can be given before the "
                             f"stream's future is known; stream a unidirectional layer")
        return [_Recurrent(model, batch_size)]
    if isinstance(model, RNNCellBase):
        return [_Recurrent(model, batch_size)]
    if type(model) is LastTimeStep:
        return [_LastStep(model)]
    if isinstance(model, LastHidden) or model.acts_per_position:
        return [_PerStep(model)]
    raise ValueError(f"Stream: {what} cannot run chunk by chunk: Stream takes recurrent layers "
                     f"and cells, modules that act per time step (Embedding, Linear, "
                     f"activations, Dropout, Identity), LastTimeStep and LastHidden, and "
                     f"Sequentials of these (over-time reductions such as MeanOverTime would "
                     f"need every earlier chunk)")


def _batch_axis(model, stages):
    """Where the B streams are in a chunk: a layer's batch axis (1 time-major, 0 batch_first)
    for the first recurrent module, 0 for a cell."""
    for stage in stages:
        if isinstance(stage, _Recurrent):
            module = stage.module
            return 0 if isinstance(module, RNNCellBase) or module.batch_first else 1
    raise ValueError(f"Stream: {type(model).__name__} holds no recurrent layer or cell: there "
                     f"is no state to carry")


class Stream:
    """B independent streams through a recurrent model, state carried between calls.

    model: an LSTM/GRU/RNN (any num_layers, proj_size, batch_first; not bidirectional), an
    LSTMCell/GRUCell/RNNCell, or a Sequential of those with per-step modules (Embedding,
    Linear, activations, Dropout, Identity) and LastTimeStep/LastHidden; in eval mode (or
    rnnx.freeze'd): a training-mode model is refused, as its calls would record for backward
    and draw dropout masks. batch_size: B, the number of streams, fixed.

    step(x): x is the next chunk of all B streams in the model's own layout (a layer's
    (T, B, I), (B, T, I) if batch_first; a cell's (B, I); token ids (T, B) before an
    Embedding); the result is what the model returns for these steps when called once on the
    whole sequence fed so far, at any thread count. Bit for bit for the recurrent layers and
    cells under the "microkernel" GEMM backend, and under "auto" (the default) unless B >= 16
    and a layer direction's weights exceed 512 KiB (its input projection then runs as one
    BLAS product over all T * B rows, whose rounding depends on T); likewise for the modules
    after a LastTimeStep / LastHidden, which see B rows either way. A Linear on every step
    (before the recurrent layer) runs on the chunk's rows, the whole call's on all rows: to
    rounding. The result's arrays may be buffers reused by the next step (the state is a
    read-only view of the stream's own, updated in place by the next step or a reset):
    step(x, copy=True) returns arrays of the caller's own.

    state: the carried state in PyTorch's layout: h, or (h, c) for an LSTM(Cell), of shape
    (num_layers, B, P) / (num_layers, B, H) for a layer, (B, H) for a cell; a tuple of these
    (one per recurrent module, in order) when the model holds several. Assigning it copies
    the given arrays in (checked shapes and dtypes). reset(rows) zeroes streams.

    One stream per thread runs concurrently; two threads stepping the same stream at once is
    an error (RuntimeError), not a wait.
    """

    def __init__(self, model, batch_size):
        if not isinstance(model, Module):
            raise TypeError(f"Stream expects an rnnx Module, got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size should be of type int, got: {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.batch_size = model, int(batch_size)
        self._modules = list(model.modules())
        self._check_eval()
        self._stages = _stages(model, self.batch_size)
        self._recurrent = [s for s in self._stages if isinstance(s, _Recurrent)]
        self._batch_axis = _batch_axis(model, self._stages)
        self._lock = threading.Lock()

    def _check_eval(self):
        for m in self._modules:
            if m.training:
                raise ValueError(f"Stream runs inference: {type(m).__name__} is in training mode "
                                 f"(its calls would record for backward and apply dropout); "
                                 f"call model.eval() or stream rnnx.freeze(model)")

    def step(self, x, copy=False):
        """The model's result for the next chunk x of every stream (see the class docstring);
        copy=True returns arrays of the caller's own instead of views of reused buffers."""
        self._acquire("step")
        try:
            self._check_eval()
            shape = np.shape(x)
            if len(shape) <= self._batch_axis or shape[self._batch_axis] != self.batch_size:
                raise ValueError(f"Stream.step: expected a chunk with the {self.batch_size} "
                                 f"streams on axis {self._batch_axis} (the model's layout), "
                                 f"got shape {shape}")
            for stage in self._stages:
                x = stage.step(x)
            return _copied(x) if copy else x     # under the lock: no step in between
        finally:
            self._lock.release()

    def reset(self, rows=None):
        """Zero the state of every stream (rows=None), or of the rows given: a bool mask of
        shape (B,) or integer indices in [-B, B). The other streams go on untouched."""
        index = slice(None) if rows is None else self._rows(rows)
        self._acquire("reset")
        try:
            for stage in self._recurrent:
                for buffer in stage.buffers:
                    if stage.batch_axis == 1:
                        buffer[:, index] = 0
                    else:
                        buffer[index] = 0
        finally:
            self._lock.release()

    def _rows(self, rows):
        B = self.batch_size
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (B,):
                raise ValueError(f"Stream.reset: a bool mask must have shape ({B},), got "
                                 f"{rows.shape}")
            return rows
        if rows.ndim > 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise TypeError(f"Stream.reset: rows must be a bool mask or integer indices, got "
                            f"{rows.dtype} of shape {rows.shape}")
        rows = rows.astype(np.intp).reshape(-1)
        if rows.size and (rows.min() < -B or rows.max() >= B):
            raise IndexError(f"Stream.reset: row indices must be in [{-B}, {B}), got "
                             f"{rows.min()}..{rows.max()}")
        return rows

    def _acquire(self, what):
        """Take the stream's lock for `what` without waiting: RuntimeError if a step of
        another thread holds it."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"Stream.{what}: another thread is stepping this stream; a "
                               f"stream carries one state, so its steps must come one after "
                               f"another (give each thread a Stream of its own)")

    @property
    def state(self):
        """The carried state (copies) in PyTorch's layout; see the class docstring."""
        states = [_copied(stage.views) for stage in self._recurrent]
        return states[0] if len(states) == 1 else tuple(states)

    @state.setter
    def state(self, value):
        values = (value,) if len(self._recurrent) == 1 else value
        if not isinstance(values, (tuple, list)) or len(values) != len(self._recurrent):
            raise ValueError(f"Stream.state: expected a tuple of {len(self._recurrent)} states "
                             f"(one per recurrent module), got {type(value).__name__}")
        checked = [_checked_state(stage, v, i) for i, (stage, v) in
                   enumerate(zip(self._recurrent, values))]
        self._acquire("state")
        try:
            for stage, arrays in zip(self._recurrent, checked):
                for buffer, array in zip(stage.buffers, arrays):
                    np.copyto(buffer, array)
        finally:
            self._lock.release()


def _checked_state(stage, value, index):
    """The arrays of one recurrent module's state, checked against its buffers."""
    who = f"state of {type(stage.module).__name__} (recurrent module {index})"
    names = ("h", "c") if len(stage.buffers) == 2 else ("h",)
    if len(names) == 2:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"Stream.state: the {who} is a tuple (h, c), got "
                             f"{type(value).__name__}")
    else:
        value = (value,)
    arrays = []
    for name, buffer, v in zip(names, stage.buffers, value):
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            got = v.dtype if isinstance(v, np.ndarray) else type(v).__name__
            raise TypeError(f"Stream.state: {name} of the {who} must be a float array "
                            f"({buffer.dtype}), got {got}")
        if v.dtype != buffer.dtype:
            raise TypeError(f"Stream.state: {name} of the {who} must be {buffer.dtype} (the "
                            f"model's dtype), got {v.dtype}")
        if v.shape != buffer.shape:
            raise ValueError(f"Stream.state: {name} of the {who} must have shape "
                             f"{buffer.shape}, got {v.shape}")
        arrays.append(v)
    return arrays


def _copied(value):
    """value with every array in it (nested tuples) copied."""
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return np.array(value) if isinstance(value, np.ndarray) else value
