"""Gradient clipping in place on Parameter.grad, as torch.nn.utils.clip_grad_norm_/_value_."""
import numpy as np


def _grads(parameters):
    """The gradients of `parameters`: one parameter (anything with a .grad, as an
    rnnx.nn.Parameter) or an iterable of them; those that are None are skipped."""
    if hasattr(parameters, "grad"):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients by min(1, max_norm / (total_norm + 1e-6)), where total_norm is the
    norm_type-norm of the per-parameter gradient norms (norm_type may be inf: max |g|).

    parameters: a Parameter or an iterable of them (grads that are None are skipped). Returns total_norm (a numpy scalar of the
    gradients' dtype); a non-finite total with error_if_nonfinite=True raises RuntimeError.
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return np.float32(0.0)
    dtype = np.result_type(*grads)
    norms = np.array([np.linalg.norm(g.ravel(), norm_type) for g in grads], dtype)
    total_norm = dtype.type(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    clip_coef = min(float(max_norm / (total_norm + dtype.type(1e-6))), 1.0)
    for g in grads:
        g *= clip_coef
    return total_norm


def clip_grad_value_(parameters, clip_value):
    """Clip every gradient element to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
