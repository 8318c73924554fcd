"""Single-step cells: LSTMCell, GRUCell, RNNCell, as torch.nn's.

A cell step is the sequence kernel run over one time step (T = 1), so cells share every
gate equation and gradient with LSTM/GRU/RNN. Running a cell over T steps in a Python loop
and calling backward T times in reverse order gives exactly the BPTT gradients.
"""
import numpy as np

from .._kernels._recurrent import Cell, LayerPlan, num_gates
from .module import Module, Parameter, Record, as_float_array, check_dtype, check_grad_shape
from .rnn import check_int_sizes, reset_uniform, run_backward, run_forward

_ONE_STEP_OFFSETS = {}


class RNNCellBase(Module):
    """Parameters weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,)."""

    def __init__(self, mode, input_size, hidden_size, bias=True, dtype=np.float32):
        super().__init__()
        check_int_sizes(input_size=input_size, hidden_size=hidden_size)
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        self.mode = mode
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        self.dtype = check_dtype(dtype)
        gate_size = num_gates(mode) * hidden_size
        self.weight_ih = Parameter(np.zeros((gate_size, input_size), self.dtype))
        self.weight_hh = Parameter(np.zeros((gate_size, hidden_size), self.dtype))
        if bias:
            self.bias_ih = Parameter(np.zeros(gate_size, self.dtype))
            self.bias_hh = Parameter(np.zeros(gate_size, self.dtype))
        self._zero_bias = np.zeros(gate_size, self.dtype)
        self.reset_parameters()
        self._expect_parameters()

    def reset_parameters(self):
        reset_uniform(self)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _weights(self):
        """The one direction's (w_ih, w_hh, b_ih, b_hh, w_hr=None) Parameters, None where absent."""
        return (self.weight_ih, self.weight_hh, self._parameters.get("bias_ih"),
                self._parameters.get("bias_hh"), None)

    def layer_weights(self):
        """[[(w_ih, w_hh, b_ih, b_hh, None)]]: one layer of one direction, the form of
        RNNBase.layer_weights()."""
        return [[self._weights()]]

    def _check_input(self, input):
        self._check_parameters()
        name = type(self).__name__
        x = as_float_array(input, self.dtype, "input")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D input instead")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has inconsistent input_size: got {x.shape[-1]} expected "
                             f"{self.input_size}")
        if x.ndim == 2 and x.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty batch, got batch size 0")
        return x

    def _check_state(self, state, x, what):
        """state (B, H) (or (H,) for unbatched x) as a fresh C-contiguous (B, H) array."""
        B = x.shape[0] if x.ndim == 2 else 1
        if state is None:
            return np.zeros((B, self.hidden_size), self.dtype)
        s = as_float_array(state, self.dtype, what)
        if s.ndim != x.ndim:
            raise ValueError(f"{type(self).__name__}: Expected {what} to be {x.ndim}D, got "
                             f"{s.ndim}D instead")
        if s.shape[-1] != self.hidden_size:
            raise ValueError(f"{what} has inconsistent hidden_size: got {s.shape[-1]}, expected "
                             f"{self.hidden_size}")
        if x.ndim == 2 and s.shape[0] != B:
            raise ValueError(f"Input batch size {B} doesn't match {what} batch size {s.shape[0]}")
        return np.array(s.reshape(B, self.hidden_size), order="C", copy=True)

    def _state_grad(self, grad, x, what):
        """The gradient of the new h (or c): the shape of the state this forward returned."""
        if grad is not None:
            expected = (x.shape[0], self.hidden_size) if x.ndim == 2 else (self.hidden_size,)
            check_grad_shape(self, what, np.shape(grad), expected)
        return self._check_state(grad, x, what)

    def _step(self, x, h, c):
        """One kernel step; h (B, H) and c become the new state. Returns the record."""
        unbatched = x.ndim == 1
        # a training record keeps its own copy of the (small) input: the caller refilling
        # its buffer before backward does not change the gradients
        x2 = x.reshape(-1, self.input_size)
        x2 = np.array(x2, order="C", copy=True) if self._recording else np.ascontiguousarray(x2)
        B = x2.shape[0]
        recording = self._recording
        out = np.empty((B, self.hidden_size), self.dtype)
        saved = run_forward(self._plan(B, recording), x2, [self._weights()], [(h, c)],
                            self._zero_bias, out)
        if recording:
            self._push_record(Record(x=x2, out=out, bufs=saved[0], unbatched=unbatched,
                                     weights=self._fingerprint_weights(("weight_ih", "weight_hh"))))

    def _plan(self, B, training):
        """The LayerPlan of one step of B rows (one thread: a step is too small to share)."""
        return LayerPlan(self.mode, training, *_one_step_packing(B), self.input_size,
                         self.hidden_size, self.hidden_size, 1, self.dtype)

    def _backward_step(self, grad_h, grad_c, input_grad):
        x2, out, saved, unbatched, weights = self._peek_record()
        B = x2.shape[0]
        shape_x = x2[0] if unbatched else x2
        dh = self._state_grad(grad_h, shape_x, "grad_h")
        dc = self._state_grad(grad_c, shape_x, "grad_c") if self.mode == Cell.LSTM else None
        self._check_parameters()
        self._check_unmodified(weights)
        self._check_gradients()
        self._pop_record()
        grad_x = np.empty_like(x2) if input_grad else None
        run_backward(self._plan(B, True), x2, out, [saved], [self._weights()], [(dh, dc)], None,
                     grad_x)
        if unbatched:
            return (None if grad_x is None else grad_x[0]), dh[0], (None if dc is None else dc[0])
        return grad_x, dh, dc


def _one_step_packing(B):
    """batch_sizes [B] and offsets [0, B] of a single step (cached: cells are called often)."""
    packing = _ONE_STEP_OFFSETS.get(B)
    if packing is None:
        packing = (np.array([B], np.intp), np.array([0, B], np.intp))
        _ONE_STEP_OFFSETS[B] = packing
    return packing


class LSTMCell(RNNCellBase):
    """h1, c1 = cell(x, (h, c)): one LSTM step (gates i, f, g, o)."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32):
        super().__init__(Cell.LSTM, input_size, hidden_size, bias, dtype)

    def forward(self, input, hx=None):
        """x (B, I) or (I,); hx = (h, c) each (B, H) or (H,), None for zeros."""
        x = self._check_input(input)
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell expects hx as a tuple (h_0, c_0)")
        h0, c0 = (None, None) if hx is None else hx
        h = self._check_state(h0, x, "hx")
        c = self._check_state(c0, x, "cx")
        self._step(x, h, c)
        return (h[0], c[0]) if x.ndim == 1 else (h, c)

    def backward(self, grad, *, input_grad=True):
        """grad_x, (grad_h, grad_c) = cell.backward((grad_h1, grad_c1)); either may be None.
        input_grad=False: grad_x is not computed (None)."""
        if grad is not None and (not isinstance(grad, (tuple, list)) or len(grad) != 2):
            raise TypeError("LSTMCell.backward expects (grad_h1, grad_c1)")
        gh, gc = (None, None) if grad is None else grad
        grad_x, dh, dc = self._backward_step(gh, gc, input_grad)
        return grad_x, (dh, dc)


class _HiddenStateCell(RNNCellBase):
    """A cell whose whole state is h: h1 = cell(x, h), grad_x, grad_h = cell.backward(grad_h1)."""

    def forward(self, input, hx=None):
        """x (B, I) or (I,); h (B, H) or (H,), None for zeros."""
        x = self._check_input(input)
        h = self._check_state(hx, x, "hx")
        self._step(x, h, None)
        return h[0] if x.ndim == 1 else h

    def backward(self, grad_h1, *, input_grad=True):
        """grad_x, grad_h = cell.backward(grad_h1); input_grad=False: grad_x is None."""
        grad_x, dh, _ = self._backward_step(grad_h1, None, input_grad)
        return grad_x, dh


class GRUCell(_HiddenStateCell):
    """h1 = cell(x, h): one GRU step (gates r, z, n)."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32):
        super().__init__(Cell.GRU, input_size, hidden_size, bias, dtype)


class RNNCell(_HiddenStateCell):
    """h1 = cell(x, h) = tanh or relu(W_ih x + b_ih + W_hh h + b_hh)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=np.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        mode = Cell.RNN_TANH if nonlinearity == "tanh" else Cell.RNN_RELU
        super().__init__(mode, input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity
