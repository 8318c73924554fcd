"""Flatten, as torch.nn.Flatten."""
import math

import numpy as np

from .module import Module


class Flatten(Module):
    """Merges axes start_dim..end_dim (negative counts from the end) into one:
    (N, *dims, ...) -> (N, prod(dims), ...). backward reshapes the gradient back."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(d).__name__}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def _axis(self, dim, ndim):
        n = max(ndim, 1)  # a 0-d input flattens as if 1-d, as torch's
        if not -n <= dim < n:
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-n}, {n - 1}], but got {dim})")
        return dim % n

    def forward(self, input):
        x = np.asarray(input)
        start, end = self._axis(self.start_dim, x.ndim), self._axis(self.end_dim, x.ndim)
        if start > end:
            raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
        shape = x.shape or (1,)
        out_shape = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
        self._push_record((x.shape, out_shape))
        return x.reshape(out_shape)

    def backward(self, grad_output, *, input_grad=True):
        in_shape, out_shape = self._peek_record()
        grad = np.asarray(grad_output)
        if grad.shape != out_shape:
            raise ValueError(f"Flatten.backward: expected grad_output of shape {out_shape}, "
                             f"got {grad.shape}")
        self._pop_record()
        return grad.reshape(in_shape) if input_grad else None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
