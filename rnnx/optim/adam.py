"""Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW (torch's single-tensor update)."""
import numpy as np

from .optimizer import Optimizer, buffer, check_torch_flags, l2_penalised, lerp_, step_count


class Adam(Optimizer):
    """Adam (Kingma & Ba), with torch's options. For each parameter, at step t:

        g = -grad if maximize else grad
        p *= 1 - lr * weight_decay                  if decoupled_weight_decay (AdamW)
        g += weight_decay * p                       otherwise (L2 penalty)
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        v_max = max(v_max, v) and v_hat = v_max if amsgrad else v
        p -= lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)

    State per parameter: 'step' (int), 'exp_avg' (m), 'exp_avg_sq' (v), 'max_exp_avg_sq' (v_max,
    amsgrad only). foreach, capturable, differentiable, fused: see check_torch_flags.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        self.check_hyperparameters(defaults)
        super().__init__(params, defaults)

    NONNEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq")

    @staticmethod
    def check_hyperparameters(group):
        lr, eps, betas, weight_decay = (group[k] for k in ("lr", "eps", "betas", "weight_decay"))
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise ValueError("betas must be either both floats or both Tensors")
        check_torch_flags(group["foreach"], group["capturable"], group["differentiable"],
                          group["fused"])

    def _update(self, p, grad, group):
        state = self.state.setdefault(p, {})
        step = step_count(state)
        lr, weight_decay, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if group["decoupled_weight_decay"]:
            if weight_decay != 0:
                p.data *= 1 - lr * weight_decay
        else:
            grad = l2_penalised(grad, p, weight_decay)
        exp_avg, exp_avg_sq = buffer(state, "exp_avg", p), buffer(state, "exp_avg_sq", p)
        lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            max_exp_avg_sq = buffer(state, "max_exp_avg_sq", p)
            exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        step_size = lr / (1 - beta1 ** step)
        denom = np.sqrt(exp_avg_sq)
        denom /= (1 - beta2 ** step) ** 0.5
        denom += eps
        update = -step_size * exp_avg
        update /= denom
        p.data += update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch.optim.AdamW: Adam with
    decoupled_weight_decay=True, weight_decay 1e-2 by default."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        """As Optimizer.load_state_dict; decoupled_weight_decay stays True, as in torch."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
