"""SGD (with momentum, Nesterov, weight decay), as torch.optim.SGD."""
from .optimizer import Optimizer, check_torch_flags, l2_penalised


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, exactly torch.optim.SGD's update:

        g = -grad if maximize else grad;  g += weight_decay * p
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf   (when momentum != 0)
        p -= lr * g

    foreach, differentiable, fused: see check_torch_flags.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused)
        self.check_hyperparameters(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def check_hyperparameters(group):
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["momentum"]:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        check_torch_flags(foreach=group["foreach"], differentiable=group["differentiable"],
                          fused=group["fused"])

    def _update(self, p, grad, group):
        momentum, dampening = group["momentum"], group["dampening"]
        g = l2_penalised(grad, p, group["weight_decay"])
        if momentum != 0:
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g
