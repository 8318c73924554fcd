"""Reductions over time of a sequence batch that respect each sequence's length.

LastTimeStep, MeanOverTime and MaxOverTime read a recurrent layer's (out, state) (they use
out and give the state no gradient) or a plain array of steps, e.g. an Embedding's output.
The steps are (T, B, F), (B, T, F) when batch_first, unbatched (T, F), or a PackedSequence
(each sequence's own length). With lengths= (B,) ints in [1, T] (what the recurrent layer
was given; a Sequential passes its lengths= on), only the first lengths[b] steps of sequence
b count, as PyTorch users write with a mask:

    mask = torch.arange(T)[:, None] < lengths[None, :]            # (T, B), time-major
    mean = (out * mask[..., None]).sum(0) / lengths[:, None]      # MeanOverTime
    max  = out.masked_fill(~mask[..., None], -inf).amax(0)        # MaxOverTime
    last = out[lengths - 1, torch.arange(B)]                      # LastTimeStep

Each returns (B, F) ((F,) unbatched) in the input's float dtype; backward(grad) returns the
gradient of the steps in the caller's form (padded with zeros past each end, or a
PackedSequence), as (grad_out, None) when the input was (out, state).
"""
import numpy as np

from ..utils.rnn import PackedSequence, check_batch_sizes, check_lengths, check_packed_indices
from .module import Module, check_grad_shape


class _Steps:
    """Where a batch of steps came from, to return a (T, B, F) time-major gradient in the
    caller's form: batch_first / unbatched padded arrays, or the packed rows (t, b)."""

    __slots__ = ("batch_first", "unbatched", "packed", "rows", "was_tuple")

    def __init__(self, batch_first, unbatched, packed, rows, was_tuple):
        self.batch_first, self.unbatched = batch_first, unbatched
        self.packed, self.rows, self.was_tuple = packed, rows, was_tuple

    def to_caller(self, grad):
        """(T, B, F) time-major gradient -> the caller's form of the steps."""
        if self.packed is not None:
            p = self.packed
            grad = PackedSequence(grad[self.rows], p.batch_sizes, p.sorted_indices,
                                  p.unsorted_indices)
        elif self.unbatched:
            grad = grad[:, 0]
        elif self.batch_first:
            grad = grad.transpose(1, 0, 2)
        return (grad, None) if self.was_tuple else grad


def _time_major(inputs, lengths, batch_first, who):
    """(steps (T, B, F) time-major, lengths (B,) int64, _Steps) from an over-time module's
    input: (out, state) or out; out padded (lengths optional) or a PackedSequence."""
    was_tuple = isinstance(inputs, tuple) and not isinstance(inputs, PackedSequence)
    if was_tuple:
        if len(inputs) != 2:
            raise TypeError(f"{who} expects a recurrent layer's output (out, h_n) or "
                            f"(out, (h_n, c_n)), or the steps alone, got a tuple of "
                            f"{len(inputs)} items")
        inputs = inputs[0]
    if isinstance(inputs, PackedSequence):
        if lengths is not None:
            raise ValueError(f"{who}: lengths must be None when the input is a PackedSequence "
                             f"(it holds each sequence's length)")
        data = _float_steps(inputs.data, who, 2, "the packed data (sum(lengths), F)")
        batch_sizes = check_batch_sizes(inputs.batch_sizes, data)
        T, B = batch_sizes.size, int(batch_sizes[0])
        order, _ = check_packed_indices(inputs.sorted_indices, inputs.unsorted_indices, B)
        order = np.arange(B) if order is None else order
        t_idx = np.repeat(np.arange(T), batch_sizes)
        starts = np.repeat(np.cumsum(batch_sizes) - batch_sizes, batch_sizes)
        rows = (t_idx, order[np.arange(data.shape[0]) - starts])
        steps = np.zeros((T, B, data.shape[1]), data.dtype)
        steps[rows] = data
        lengths = np.bincount(rows[1], minlength=B).astype(np.int64)
        return steps, lengths, _Steps(False, False, inputs, rows, was_tuple)
    x = _float_steps(inputs, who, (2, 3), "(T, B, F), (B, T, F) if batch_first, or (T, F)")
    unbatched = x.ndim == 2
    x = x[:, None] if unbatched else x.transpose(1, 0, 2) if batch_first else x
    T, B = x.shape[:2]
    if T == 0:
        raise ValueError(f"{who}: expected at least one time step, got shape {np.shape(inputs)}")
    if lengths is None:
        lengths = np.full(B, T, np.int64)
    elif unbatched:
        raise ValueError(f"{who}: lengths is for a batch; an unbatched (T, F) input has no "
                         f"padding (give its valid steps only)")
    else:
        lengths = check_lengths(lengths, T, B)
    return x, lengths, _Steps(batch_first, unbatched, None, None, was_tuple)


def _float_steps(value, who, ndims, expected):
    x = np.asarray(value)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: expected floating-point steps, got dtype {x.dtype}")
    ndims = (ndims,) if isinstance(ndims, int) else ndims
    if x.ndim not in ndims:
        raise ValueError(f"{who}: expected steps of shape {expected}, got shape {x.shape}")
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)


class _OverTime(Module):
    """Reduces the time axis over each sequence's valid steps; see the module docstring.
    Subclasses give _reduce(steps, lengths) -> (y (B, F), what backward needs) and
    _grad(grad_y, saved, shape) -> the (T, B, F) time-major gradient of the steps."""

    accepts_lengths = True  # a Sequential passes its lengths= on

    def __init__(self, batch_first=False):
        super().__init__()
        self.batch_first = bool(batch_first)

    def forward(self, inputs, lengths=None):
        who = type(self).__name__
        steps, lengths, origin = _time_major(inputs, lengths, self.batch_first, who)
        y, saved = self._reduce(steps, lengths)
        self._push_record((origin, saved, steps.shape, steps.dtype))
        return y[0] if origin.unbatched else y

    def backward(self, grad, *, input_grad=True):
        origin, saved, shape, dtype = self._peek_record()
        out_shape = shape[2:] if origin.unbatched else shape[1:]
        check_grad_shape(self, "grad", np.shape(grad), out_shape)
        self._pop_record()
        if not input_grad:
            return (None, None) if origin.was_tuple else None
        grad = np.asarray(grad, dtype).reshape(shape[1:])
        return origin.to_caller(self._grad(grad, saved, shape))

    def extra_repr(self):
        return "batch_first=True" if self.batch_first else ""


def _valid(lengths, T):
    """(T, B, 1) bool: step t is within sequence b."""
    return (np.arange(T)[:, None] < lengths[None, :])[..., None]


class MeanOverTime(_OverTime):
    """y_b = sum_{t < lengths[b]} out[t, b] / lengths[b]; grad_out[t, b] = grad_b / lengths[b]
    for t < lengths[b], 0 past the end."""

    def _reduce(self, steps, lengths):
        valid = _valid(lengths, steps.shape[0])
        scale = (1.0 / lengths).astype(steps.dtype)[:, None]
        return np.where(valid, steps, 0).sum(axis=0) * scale, (valid, scale)

    def _grad(self, grad, saved, shape):
        valid, scale = saved
        return np.where(valid, grad * scale, 0).astype(grad.dtype, copy=False)


class MaxOverTime(_OverTime):
    """y_b = max_{t < lengths[b]} out[t, b] per feature; the gradient goes to the step holding
    the maximum (the first one on a tie, as torch.max(dim)'s indices), 0 elsewhere."""

    def _reduce(self, steps, lengths):
        masked = np.where(_valid(lengths, steps.shape[0]), steps, -np.inf)
        where = masked.argmax(axis=0)[None]
        return np.take_along_axis(steps, where, axis=0)[0], where

    def _grad(self, grad, where, shape):
        out = np.zeros(shape, grad.dtype)
        np.put_along_axis(out, where, grad[None], axis=0)
        return out


class LastTimeStep(_OverTime):
    """The step out[lengths[b] - 1, b] of each sequence (out[-1] without lengths;
    out[:, -1] if batch_first): where a forward direction ends. After a bidirectional layer
    its second half is the backward direction after one step only: LastHidden gives both
    directions' final states."""

    def _reduce(self, steps, lengths):
        where = (lengths - 1, np.arange(steps.shape[1]))
        return steps[where], where

    def _grad(self, grad, where, shape):
        out = np.zeros(shape, grad.dtype)
        out[where] = grad
        return out

    def extra_repr(self):
        return f"batch_first={self.batch_first}"
