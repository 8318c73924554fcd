"""Adagrad, as torch.optim.Adagrad (torch's single-tensor update, dense gradients)."""
import numpy as np

from .optimizer import Optimizer, buffer, check_torch_flags, l2_penalised, step_count


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), with torch's options. For each parameter, at step t:

        g = -grad if maximize else grad;  g += weight_decay * p
        sum += g^2                          (sum starts at initial_accumulator_value)
        p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps)

    State per parameter, created with the optimizer (and by add_param_group) as in torch:
    'step' (int) and 'sum'. foreach, differentiable, fused: see check_torch_flags.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        self.check_hyperparameters(defaults)
        super().__init__(params, defaults)

    NONNEGATIVE_STATE = ("sum",)

    @staticmethod
    def check_hyperparameters(group):
        for name, what in (("lr", "learning rate"), ("lr_decay", "lr_decay value"),
                           ("weight_decay", "weight_decay value"),
                           ("initial_accumulator_value", "initial_accumulator_value value"),
                           ("eps", "epsilon value")):
            if not 0.0 <= group[name]:
                raise ValueError(f"Invalid {what}: {group[name]}")
        check_torch_flags(group["foreach"], differentiable=group["differentiable"],
                          fused=group["fused"])

    def add_param_group(self, param_group):
        """As Optimizer.add_param_group; the new parameters' state starts at step 0 with
        sum = initial_accumulator_value."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self.state[p] = {"step": 0}
            buffer(self.state[p], "sum", p, group["initial_accumulator_value"])

    def _update(self, p, grad, group):
        state = self.state.setdefault(p, {})
        step = step_count(state)
        lr, lr_decay, eps = float(group["lr"]), float(group["lr_decay"]), float(group["eps"])
        grad = l2_penalised(grad, p, float(group["weight_decay"]))
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = buffer(state, "sum", p, group["initial_accumulator_value"])
        state_sum += grad * grad
        std = np.sqrt(state_sum)
        std += eps
        update = -clr * grad
        update /= std
        p.data += update
