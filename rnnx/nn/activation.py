"""Element-wise activations ReLU, Tanh, Sigmoid, as torch.nn's, with backward.

Each keeps the input's float dtype (float32 or float64; other float dtypes become float32)
and records its output y, from which backward computes the input gradient as torch does:
ReLU grad * [y > 0], Tanh grad * (1 - y^2), Sigmoid grad * (1 - y) * y.
"""
import numpy as np
from scipy.special import expit

from .module import Module, as_float_array


class _Activation(Module):
    """y = f(x) element-wise; backward(grad_y) returns grad_x (None if not input_grad)."""

    acts_per_position = True

    def _function(self, x):
        raise NotImplementedError

    def _derivative(self, grad, y):
        """grad_x from grad_y and the forward output y."""
        raise NotImplementedError

    def forward(self, input):
        y = self._function(as_float_array(input))
        self._push_record(y)
        return y

    def backward(self, grad_output, *, input_grad=True):
        y = self._peek_record()
        grad = as_float_array(grad_output, y.dtype, "grad_output")
        if grad.shape != y.shape:
            raise ValueError(f"{type(self).__name__}.backward: expected grad_output of shape "
                             f"{y.shape}, got {grad.shape}")
        self._pop_record()
        return self._derivative(grad, y) if input_grad else None


class ReLU(_Activation):
    """max(x, 0). inplace=True writes the result into the input array when it is already a
    float32/float64 ndarray (as torch's, the caller's array then holds the output)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def _function(self, x):
        return np.maximum(x, 0, out=x if self.inplace else None)

    def _derivative(self, grad, y):
        return np.where(y <= 0, grad.dtype.type(0), grad)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Tanh(_Activation):
    """tanh(x)."""

    def _function(self, x):
        return np.tanh(x)

    def _derivative(self, grad, y):
        return grad * (1 - y * y)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), without overflow for large |x|."""

    def _function(self, x):
        return expit(x)

    def _derivative(self, grad, y):
        return grad * (1 - y) * y
