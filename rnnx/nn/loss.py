"""Loss modules mirroring torch.nn.CrossEntropyLoss and torch.nn.MSELoss.

`loss = loss_fn(input, target)` returns a numpy scalar ('mean', 'sum') or an array ('none');
`grad_input = loss_fn.backward(grad_loss=1.0)` returns d(grad_loss * loss)/d(input). The
scalar is a np.float32 / np.float64 (its subclass LossValue: arithmetic on it gives plain numpy
scalars) whose backward() raises, saying what to call instead (torch's `loss.backward()`).
Losses compute in the input's float dtype (dtype=None) or cast the input to `dtype`.
"""
import numpy as np

from .functional import log_softmax
from .linear import optional_dtype
from .module import Module, as_float_array, check_grad_shape

REDUCTIONS = ("none", "mean", "sum")


class LossValue:
    """What a reduced loss returns: a numpy float scalar with a backward() that explains why
    there is none (rnnx has no autograd: the loss value does not know the model)."""

    def backward(self, *args, **kwargs):
        raise RuntimeError(
            "rnnx has no autograd: the loss value cannot back-propagate (torch's "
            "loss.backward()). Call the loss module's backward, then the model's: "
            "grad = loss_fn.backward(); model.backward(grad, input_grad=False)")


class _Float32LossValue(np.float32, LossValue):  # numpy first: its dtype
    pass


class _Float64LossValue(np.float64, LossValue):
    pass


_LOSS_VALUE = {np.dtype(np.float32): _Float32LossValue, np.dtype(np.float64): _Float64LossValue}


class _Loss(Module):
    """Common reduction handling: checks `reduction`, scales the upstream gradient."""

    def __init__(self, reduction, dtype):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{reduction!r} is not a valid value for reduction; "
                             f"expected one of {', '.join(map(repr, REDUCTIONS))}")
        self.reduction = reduction
        self.dtype = optional_dtype(dtype)

    def _reduce(self, losses, denominator):
        """losses (per element) -> the returned loss; denominator is used for 'mean'."""
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total / denominator
        return _LOSS_VALUE[losses.dtype](total)

    def _upstream(self, grad_loss, loss_shape, denominator, dtype):
        """Per-element factor d(grad_loss * loss)/d(loss_i), broadcast to loss_shape."""
        g = as_float_array(1.0 if grad_loss is None else grad_loss, dtype, "grad_loss")
        expected = loss_shape if self.reduction == "none" else ()
        if g.shape != ():  # a scalar factor applies to every element
            check_grad_shape(self, "grad_loss", g.shape, expected)
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                g = g / dtype.type(denominator)
        return np.broadcast_to(g, loss_shape)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross entropy of logits (N, C), (C,) or (N, C, d1, ...) against integer class targets
    (N,), () or (N, d1, ...), or against class probabilities shaped like the logits.

    With logp = log_softmax(x) over the class axis, eps = label_smoothing and class weights w,
    every element is loss_i = -sum_c q_ic logp_ic with
      q_ic = (1 - eps) w_c [c = y_i] + eps w_c / C   (class targets; 0 where y_i = ignore_index)
      q_ic = w_c ((1 - eps) t_ic + eps / C)         (probability targets).
    'mean' divides the sum by sum_i w_{y_i} over non-ignored elements (class targets) or by the
    number of elements (probability targets), as PyTorch does. d loss_i / d x_i = softmax_i sum_c q_ic - q_i.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                 dtype=None):
        super().__init__(reduction, dtype)
        if weight is not None:
            weight = as_float_array(weight, self.dtype, "weight")
            if weight.ndim != 1:
                raise ValueError(f"weight must be 1-D (one value per class), got shape {weight.shape}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        self.weight = weight
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        x = as_float_array(input, self.dtype)
        target = np.asarray(target)
        if x.ndim == 0:
            raise ValueError("CrossEntropyLoss: input must have a class dimension, got a 0-d array")
        class_axis = 0 if x.ndim == 1 else 1
        C = x.shape[class_axis]
        w = np.ones(C, x.dtype) if self.weight is None else self.weight.astype(x.dtype, copy=False)
        if w.shape != (C,):
            raise ValueError(f"weight tensor should be defined either for all {C} classes or no "
                             f"classes but got weight tensor of shape: {w.shape}")
        x2 = np.moveaxis(x, class_axis, -1).reshape(-1, C)
        loss_shape = x.shape[:class_axis] + x.shape[class_axis + 1:]
        if target.dtype.kind == "f" and target.shape == x.shape:
            t = np.moveaxis(target.astype(x.dtype), class_axis, -1).reshape(-1, C)
            q = w * ((1.0 - self.label_smoothing) * t + self.label_smoothing / C)
            denominator = x2.shape[0]
        else:
            q, denominator = self._class_target_weights(target, x.shape, loss_shape, w)
        logp = log_softmax(x2, 1)
        losses = -np.einsum("ij,ij->i", q, logp).reshape(loss_shape)
        self._push_record((q, logp, x.shape, class_axis, loss_shape, denominator))
        return self._reduce(losses, denominator)

    def _class_target_weights(self, target, input_shape, loss_shape, w):
        """The matrix q (M, C) for integer targets and the 'mean' denominator sum_i w_{y_i}."""
        if target.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: expected integer class targets (or float class "
                            f"probabilities of the input's shape {input_shape}), got dtype "
                            f"{target.dtype} and shape {target.shape}")
        if target.shape != loss_shape:
            raise ValueError(f"CrossEntropyLoss: expected target of shape {loss_shape} for input "
                             f"of shape {input_shape}, got {target.shape}")
        C = w.shape[0]
        y = target.reshape(-1).astype(np.int64)
        valid = y != self.ignore_index
        bad = valid & ((y < 0) | (y >= C))
        if bad.any():
            raise ValueError(f"Target {y[bad][0]} is out of bounds: class targets must lie in "
                             f"[0, {C}) or equal ignore_index={self.ignore_index}")
        rows = np.flatnonzero(valid)
        eps = self.label_smoothing
        q = np.zeros((y.size, C), w.dtype)
        q[rows] = w * (eps / C)
        q[rows, y[rows]] += (1.0 - eps) * w[y[rows]]
        return q, w[y[rows]].sum(dtype=np.float64)

    def backward(self, grad_loss=None):
        q, logp, input_shape, class_axis, loss_shape, denominator = self._peek_record()
        s = self._upstream(grad_loss, loss_shape, denominator, q.dtype).reshape(-1, 1)
        self._pop_record()
        s = np.where(q.any(axis=1, keepdims=True), s, 0)  # ignored rows: 0 even if 'mean' is 0/0
        g = (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * s
        g = g.reshape(loss_shape + (input_shape[class_axis],))
        return np.ascontiguousarray(np.moveaxis(g, -1, class_axis))

    def extra_repr(self):
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class MSELoss(_Loss):
    """Squared error (x - t)^2 per element of input x and target t (same shape); the gradient
    is 2 (x - t) times the upstream factor ('mean' divides by the number of elements)."""

    def __init__(self, reduction="mean", dtype=None):
        super().__init__(reduction, dtype)

    def forward(self, input, target):
        x = as_float_array(input, self.dtype)
        t = as_float_array(target, x.dtype, "target")
        if x.shape != t.shape:
            raise ValueError(f"MSELoss: input shape {x.shape} and target shape {t.shape} differ")
        diff = x - t
        self._push_record(diff)
        return self._reduce(diff * diff, diff.size)

    def backward(self, grad_loss=None):
        diff = self._peek_record()
        upstream = self._upstream(grad_loss, diff.shape, diff.size, diff.dtype)
        self._pop_record()
        return 2 * diff * upstream
