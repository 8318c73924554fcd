"""The Optimizer base class (param groups, per-parameter state, state_dict) and the checks
and helpers its subclasses share, as torch.optim.Optimizer."""
import numbers

import numpy as np

from ..nn.module import Parameter


def check_torch_flags(foreach=None, capturable=False, differentiable=False, fused=None):
    """torch's implementation switches. foreach and fused choose among torch's kernels, which
    compute the same update: any value is accepted and kept in the param groups, and rnnx runs
    its one implementation. capturable (CUDA graphs) and differentiable (autograd through the
    step) have no meaning without a GPU or autograd: only False is accepted."""
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if capturable:
        raise ValueError("capturable=True is not supported: it is for CUDA graph capture, and "
                         "rnnx runs on the CPU (leave it False)")
    if differentiable:
        raise ValueError("differentiable=True is not supported: rnnx has no autograd to "
                         "differentiate through the optimizer step (leave it False)")


def l2_penalised(grad, p, weight_decay):
    """grad + weight_decay * p (a new array; grad itself when weight_decay is 0)."""
    return grad + weight_decay * p.data if weight_decay != 0 else grad


def lerp_(start, end, weight):
    """start += weight * (end - start) in place, in torch.lerp's two forms (the one for
    weight >= 0.5 is exact at weight 1)."""
    diff = end - start
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        np.subtract(end, diff, out=start)


def step_count(state):
    """Increment and return state['step'] (0 when the state is new)."""
    state["step"] = state.get("step", 0) + 1
    return state["step"]


def buffer(state, name, p, fill=0.0):
    """state[name], created as an array like p.data filled with `fill` if missing."""
    if name not in state:
        state[name] = np.full_like(p.data, fill)
    return state[name]


class Optimizer:
    """Holds `param_groups` (dicts with 'params' and hyper-parameters, missing ones taken from
    `defaults`) and `state` (Parameter -> dict of arrays, and the int 'step' of optimizers that
    count steps). Subclasses implement _update(p, grad, group), called by step() for every
    parameter that has a gradient (p.grad not None) and requires one, and
    check_hyperparameters(group), the constructor's checks, which load_state_dict applies to
    the groups it loads; NONNEGATIVE_STATE names the state arrays that must be >= 0."""

    NONNEGATIVE_STATE = ()

    @staticmethod
    def check_hyperparameters(group):
        """ValueError (as torch's constructor) unless the hyper-parameters are valid."""

    def __init__(self, params, defaults):
        if isinstance(params, Parameter):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Parameters or dicts, but got Parameter")
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Append a group {'params': Parameter or list of Parameters, **hyper-parameters}."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        group["params"] = [params] if isinstance(params, Parameter) else list(params)
        for p in group["params"]:
            if not isinstance(p, Parameter):
                raise TypeError("optimizer can only optimize Parameters, but one of the params "
                                f"is {type(p).__name__}")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        ids = {id(p) for p in group["params"]}
        if any(id(p) in ids for g in self.param_groups for p in g["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (None, torch's default), or zero it with
        set_to_none=False."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad(set_to_none)

    def state_dict(self):
        """{'state': {index: {name: array copy}}, 'param_groups': [{hyper-params, 'params': [index]}]}
        with parameters numbered in group order, as in torch; plain types and numpy arrays only."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by state_dict(); state arrays are copied and
        cast to their parameter's dtype, 'step' counts become Python numbers.
        Everything is validated before anything changes: each group's hyper-parameters as the
        constructor checks them, each 'step' an integer >= 0, each state array real, of its
        parameter's shape, and >= 0 where the update takes its square root (NONNEGATIVE_STATE)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        for i, saved in enumerate(saved_groups):
            try:
                self.check_hyperparameters({**self.defaults, **saved})
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"loaded state dict: parameter group {i}: {exc}") from None
        id_map = {saved: p for g, s in zip(self.param_groups, saved_groups)
                  for saved, p in zip(s["params"], g["params"])}
        new_state = {}
        for key, values in state_dict["state"].items():
            if key not in id_map:
                raise ValueError(f"loaded state dict has state for unknown parameter index {key}")
            p = id_map[key]
            new_state[p] = {}
            for name, value in values.items():
                if name == "step":  # a count, whatever the parameter's shape
                    new_state[p][name] = _check_step(value, key)
                    continue
                array = np.asarray(value)
                if array.dtype.kind not in "fiu":
                    raise ValueError(f"state {name!r} of parameter {key}: expected a real "
                                     f"numeric array, got dtype {array.dtype}")
                value = np.array(array, dtype=p.dtype)
                if value.shape != p.shape:
                    raise ValueError(f"state {name!r} of parameter {key} has shape {value.shape}, "
                                     f"the parameter has shape {p.shape}")
                if name in self.NONNEGATIVE_STATE and not (value >= 0).all():
                    raise ValueError(f"state {name!r} of parameter {key} must be >= 0 (a running "
                                     f"mean of squares), got {value[~(value >= 0)].flat[0]}")
                new_state[p][name] = value
        self.state = new_state
        self.param_groups = [{**{k: v for k, v in s.items() if k != "params"}, "params": g["params"]}
                             for g, s in zip(self.param_groups, saved_groups)]

    def step(self, closure=None):
        """One update of every parameter that has a gradient and requires one (others are
        skipped, as in torch); returns closure() if given (called first)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not getattr(p, "requires_grad", True):
                    continue
                self._update(p, -p.grad if group.get("maximize") else p.grad, group)
        return loss

    def _update(self, p, grad, group):
        """Update p.data in place from grad (already negated when maximizing)."""
        raise NotImplementedError

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"


def _check_step(value, key):
    """A loaded 'step' as an int: an integer >= 0 (an integral float, as torch saves it, too)."""
    step = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Real) \
            or not float(step).is_integer() or step < 0:
        raise ValueError(f"state 'step' of parameter {key} must be an integer >= 0, got {value!r}")
    return int(step)
