"""Linear (affine) layer and Dropout, mirroring torch.nn.Linear / torch.nn.Dropout."""
import math
import warnings

import numpy as np

from .._random import default_generator
from .module import Module, Parameter, as_float_array, check_dtype, check_grad_shape


def optional_dtype(dtype):
    """dtype of a module without parameters: None (follow the input) or float32/float64."""
    return None if dtype is None else check_dtype(dtype)


class Linear(Module):
    """y = x @ weight.T + bias for x of shape (..., in_features) -> y of shape (..., out_features).

    weight (out_features, in_features) and bias (out_features,) are drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) like PyTorch's default initialisation.
    backward(grad_y) returns grad_x and accumulates weight.grad = sum grad_y^T x, bias.grad = sum grad_y.
    """

    acts_per_position = True

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"{name} must be a non-negative int, got {n!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.dtype = check_dtype(dtype)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        if in_features * out_features == 0:
            warnings.warn("Initializing zero-element tensors is a no-op")  # as torch's
        rng = default_generator()
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(self.dtype))
        self.bias = (Parameter(rng.uniform(-bound, bound, out_features).astype(self.dtype))
                     if bias else None)
        self._expect_parameters()

    def forward(self, x):
        self._check_parameters()
        x = as_float_array(x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input of shape (..., {self.in_features}), "
                             f"got shape {x.shape}")
        lead = x.shape[:-1]
        # rows given explicitly: reshape(-1, 0) is ambiguous for in_features = 0
        x2 = x.reshape(math.prod(lead), self.in_features)
        y = x2 @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        if self._recording:  # the record owns its input: a caller refilling x cannot change it
            self._push_record((x2.copy(), lead, self._fingerprint_weights(("weight",))))
        return y.reshape(lead + (self.out_features,))

    def backward(self, grad_y, *, input_grad=True):
        """Accumulates weight.grad and bias.grad; returns grad_x (None if not input_grad)."""
        x2, lead, weights = self._peek_record()
        grad_y = as_float_array(grad_y, self.dtype, "grad_y")
        check_grad_shape(self, "grad_y", grad_y.shape, lead + (self.out_features,))
        self._check_parameters()
        self._check_unmodified(weights)
        self._check_gradients()
        self._pop_record()
        g2 = grad_y.reshape(x2.shape[0], self.out_features)
        if self.weight.requires_grad:
            self.weight.accumulate_grad(g2.T @ x2)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate_grad(g2.sum(axis=0))
        if not input_grad:
            return None
        return (g2 @ self.weight.data).reshape(lead + (self.in_features,))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout: in training y = x * mask / (1 - p), mask ~ Bernoulli(1 - p) from the
    global generator (p = 1 gives zeros); identity in eval mode. backward multiplies by the same
    scaled mask. dtype=None keeps the input's float dtype; float32/float64 casts to it."""

    acts_per_position = True

    def __init__(self, p=0.5, dtype=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.dtype = optional_dtype(dtype)

    def forward(self, x):
        x = as_float_array(x, self.dtype)
        if not self.training or self.p == 0.0:
            self._push_record(x.shape)
            return x
        keep = default_generator().random(x.shape, dtype=x.dtype) >= self.p
        scale = x.dtype.type(0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p))
        mask = keep * scale
        self._push_record(mask)
        return x * mask

    def backward(self, grad_y, *, input_grad=True):
        mask = self._peek_record()  # the mask, or the output's shape when there is none
        is_mask = isinstance(mask, np.ndarray)
        grad_y = as_float_array(grad_y, mask.dtype if is_mask else self.dtype, "grad_y")
        check_grad_shape(self, "grad_y", grad_y.shape, mask.shape if is_mask else mask)
        if is_mask:
            grad_y = grad_y * mask
        self._pop_record()
        return grad_y if input_grad else None

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    """y = x, returned as is (any object, e.g. a recurrent layer's (out, h_n) tuple);
    backward returns its gradient(s) unchanged. Arguments are accepted and ignored, as torch's."""

    acts_per_position = True

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        self._push_record(None)
        return input

    def backward(self, *grad, input_grad=True):
        """grad in the structure of the forward output (one array, or a tuple's items)."""
        self._pop_record()
        if not input_grad:
            return None
        return grad[0] if len(grad) == 1 else grad
