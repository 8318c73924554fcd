"""RMSprop, as torch.optim.RMSprop (torch's single-tensor update)."""
import numpy as np

from .optimizer import Optimizer, buffer, check_torch_flags, l2_penalised, lerp_, step_count


class RMSprop(Optimizer):
    """RMSprop (Hinton), with torch's options. For each parameter:

        g = -grad if maximize else grad;  g += weight_decay * p
        v = alpha v + (1 - alpha) g^2
        avg = sqrt(v - g_avg^2) + eps with g_avg = alpha g_avg + (1 - alpha) g   if centered
        avg = sqrt(v) + eps                                                      otherwise
        buf = momentum buf + g / avg;  p -= lr buf          if momentum > 0
        p -= lr g / avg                                     otherwise

    State per parameter: 'step' (int), 'square_avg' (v), 'momentum_buffer' (momentum > 0),
    'grad_avg' (centered). foreach, capturable, differentiable: see check_torch_flags.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        self.check_hyperparameters(defaults)
        super().__init__(params, defaults)

    NONNEGATIVE_STATE = ("square_avg",)

    @staticmethod
    def check_hyperparameters(group):
        for name, what in (("lr", "learning rate"), ("eps", "epsilon value"),
                           ("momentum", "momentum value"), ("weight_decay", "weight_decay value"),
                           ("alpha", "alpha value")):
            if not 0.0 <= group[name]:
                raise ValueError(f"Invalid {what}: {group[name]}")
        check_torch_flags(group["foreach"], group["capturable"], group["differentiable"])

    def _update(self, p, grad, group):
        state = self.state.setdefault(p, {})
        step_count(state)
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        momentum = float(group["momentum"])
        grad = l2_penalised(grad, p, float(group["weight_decay"]))
        square_avg = buffer(state, "square_avg", p)
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = buffer(state, "grad_avg", p)
            lerp_(grad_avg, grad, 1 - alpha)
            avg = square_avg - grad_avg * grad_avg
            np.sqrt(avg, out=avg)
        else:
            avg = np.sqrt(square_avg)
        avg += eps
        if momentum > 0:
            buf = buffer(state, "momentum_buffer", p)
            buf *= momentum
            buf += grad / avg
            p.data += -lr * buf
        else:
            update = -lr * grad
            update /= avg
            p.data += update
