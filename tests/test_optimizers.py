"""Adam, AdamW, RMSprop, Adagrad and the LambdaLR / LinearLR / OneCycleLR schedulers against
torch, step by step; exact resumption from state_dict(); argument errors."""
import itertools
import re

import numpy as np
import pytest

import rnnx
from rnnx.nn import Parameter
from rnnx.optim import SGD, Adagrad, Adam, AdamW, RMSprop, lr_scheduler

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (2, 1, 3), (4,)]
STEPS = 150


class FreezableParameter(Parameter):
    """A Parameter that takes a requires_grad attribute whatever Parameter's slots are."""


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [FreezableParameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def groups_of(params, group_options):
    """Three param groups: params[:2] with the defaults, params[2:3] and params[3:] with the
    group_options (one dict per group)."""
    return [{"params": params[:2]}, {"params": params[2:3], **group_options[0]},
            {"params": params[3:], **group_options[1]}]


def twins(params):
    return [torch.tensor(p.data.copy(), requires_grad=True) for p in params]


def random_grads(params, torch_params, rng):
    for p, t in zip(params, torch_params):
        g = rng.standard_normal(p.shape).astype(p.dtype) * rng.uniform(0.1, 3)
        p.grad = g
        t.grad = torch.from_numpy(g.copy())


def ids(options):
    return "-".join(f"{k}={v}" for k, v in options.items()) or "defaults"


ADAM_OPTIONS = [dict(lr=0.01, weight_decay=wd, amsgrad=ams, maximize=mx,
                     decoupled_weight_decay=dec)
                for wd, ams, mx, dec in itertools.product([0, 0.05], [False, True],
                                                          [False, True], [False, True])]
ADAMW_OPTIONS = [dict(lr=0.01, amsgrad=ams, maximize=mx) for ams in (False, True)
                 for mx in (False, True)] + [dict(lr=0.02, weight_decay=0), dict(foreach=False)]
RMSPROP_OPTIONS = [dict(lr=0.01, weight_decay=wd, momentum=m, centered=c, maximize=mx)
                   for wd, m, c, mx in itertools.product([0, 0.05], [0, 0.9], [False, True],
                                                         [False, True])]
RMSPROP_OPTIONS += [dict(alpha=0.5, eps=1e-3), dict(alpha=0.3, centered=True)]
ADAGRAD_OPTIONS = [dict(lr=0.1, lr_decay=ld, weight_decay=wd, initial_accumulator_value=iv,
                        maximize=mx)
                   for ld, wd, iv, mx in itertools.product([0, 0.01], [0, 0.05], [0, 0.3],
                                                           [False, True])]
ADAGRAD_OPTIONS += [dict(eps=1e-2)]
CASES = ([(Adam, o) for o in ADAM_OPTIONS] + [(AdamW, o) for o in ADAMW_OPTIONS]
         + [(RMSprop, o) for o in RMSPROP_OPTIONS] + [(Adagrad, o) for o in ADAGRAD_OPTIONS])
# per-group overrides of the hyper-parameters (second and third group)
GROUP_OPTIONS = {
    Adam: [{"lr": 0.003, "betas": (0.8, 0.99)}, {"eps": 1e-4, "weight_decay": 0.2}],
    AdamW: [{"lr": 0.003, "betas": (0.5, 0.9)}, {"amsgrad": True, "weight_decay": 0.1}],
    RMSprop: [{"lr": 0.003, "alpha": 0.9}, {"momentum": 0.5, "centered": True}],
    Adagrad: [{"lr": 0.03, "lr_decay": 0.1}, {"eps": 1e-4, "weight_decay": 0.2}],
}


def run_against_torch(cls, options, dtype, steps=STEPS):
    params = make_params(dtype)
    ref_params = twins(params)
    group_options = GROUP_OPTIONS[cls]
    opt = cls(groups_of(params, group_options), **options)
    ref = getattr(torch.optim, cls.__name__)(groups_of(ref_params, group_options), **options)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        random_grads(params, ref_params, rng)
        opt.step()
        ref.step()
    return params, ref_params, opt, ref


@pytest.mark.parametrize("cls,options", CASES, ids=[f"{c.__name__}-{ids(o)}" for c, o in CASES])
def test_matches_torch_float64(cls, options):
    params, ref_params, opt, ref = run_against_torch(cls, options, np.float64)
    for p, t in zip(params, ref_params):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)
    # the state too: same names, same step counts, same moments
    for p, t in zip(params, ref_params):
        state, ref_state = opt.state[p], ref.state[t]
        assert set(state) == set(ref_state)
        assert state["step"] == ref_state["step"].item() == STEPS
        for name in set(state) - {"step"}:
            np.testing.assert_allclose(state[name], ref_state[name].numpy(), rtol=1e-11,
                                       atol=1e-13, err_msg=name)


@pytest.mark.parametrize("cls,options", [(Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                                         (AdamW, dict(lr=0.01, maximize=True)),
                                         (RMSprop, dict(momentum=0.9, centered=True)),
                                         (Adagrad, dict(lr_decay=0.01, weight_decay=0.1))],
                         ids=lambda v: v.__name__ if isinstance(v, type) else ids(v))
def test_matches_torch_float32(cls, options):
    params, ref_params, opt, _ = run_against_torch(cls, options, np.float32)
    for p, t in zip(params, ref_params):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values()
               if isinstance(v, np.ndarray))


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop, Adagrad])
def test_parameters_without_gradient_or_frozen_are_skipped(cls):
    params = make_params(np.float64)
    ref_params = twins(params)
    options = dict(lr=0.1, weight_decay=0.1) | ({"momentum": 0.9} if cls is SGD else {})
    opt = cls(params, **options)
    ref = getattr(torch.optim, cls.__name__)(ref_params, **options)
    rng = np.random.default_rng(2)
    before = [p.data.copy() for p in params]
    for step in range(6):
        random_grads(params, ref_params, rng)
        params[1].grad = None                 # no gradient: skipped (torch: grad None)
        ref_params[1].grad = None
        params[3].requires_grad = step >= 3   # frozen for three steps, then trained
        if step < 3:
            ref_params[3].grad = None
        opt.step()
        ref.step()
    assert (params[1].data == before[1]).all()
    for p, t in zip(params, ref_params):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)
    if cls is not Adagrad:  # Adagrad's state starts with the optimizer, as in torch
        assert params[1] not in opt.state


def make_optimizer(cls, options, dtype=np.float32):
    params = make_params(dtype)
    return params, cls(groups_of(params, GROUP_OPTIONS[cls]), **options)


def run_steps(opt, params, rng, steps):
    for _ in range(steps):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()


@pytest.mark.parametrize("cls,options", [(Adam, dict(amsgrad=True, weight_decay=0.1)),
                                         (AdamW, dict(maximize=True)),
                                         (RMSprop, dict(momentum=0.9, centered=True)),
                                         (Adagrad, dict(lr_decay=0.01, weight_decay=0.1))],
                         ids=lambda v: v.__name__ if isinstance(v, type) else ids(v))
def test_state_dict_resumes_bit_for_bit(cls, options, tmp_path):
    params, opt = make_optimizer(cls, options)
    rng = np.random.default_rng(3)
    run_steps(opt, params, rng, 7)
    saved_params = [p.data.copy() for p in params]
    rnnx.save(opt.state_dict(), tmp_path / "opt.npz")
    rng_state = rng.bit_generator.state
    run_steps(opt, params, rng, 20)

    params2, opt2 = make_optimizer(cls, options)
    opt2.load_state_dict(rnnx.load(tmp_path / "opt.npz"))
    for p, saved in zip(params2, saved_params):
        p.data[...] = saved
    rng.bit_generator.state = rng_state
    run_steps(opt2, params2, rng, 20)
    for p, q in zip(params, params2):
        assert (p.data == q.data).all()
    for p, q in zip(params, params2):
        assert opt.state[p]["step"] == opt2.state[q]["step"] == 27
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    state = opt2.state_dict()
    assert state["param_groups"] == opt.state_dict()["param_groups"]
    assert isinstance(state["state"][0]["step"], int)


def test_state_dict_layout_as_torch():
    params = make_params(np.float64)
    ref_params = twins(params)
    opt = Adam(params, amsgrad=True)
    ref = torch.optim.Adam(ref_params, amsgrad=True)
    random_grads(params, ref_params, np.random.default_rng(0))
    opt.step()
    ref.step()
    state, ref_state = opt.state_dict(), ref.state_dict()
    assert state["param_groups"] == ref_state["param_groups"]
    assert set(state["state"]) == set(ref_state["state"])
    assert set(state["state"][0]) == set(ref_state["state"][0])
    # a state dict from torch, converted to numpy, loads
    converted = {"param_groups": ref_state["param_groups"],
                 "state": {k: {name: v.numpy() for name, v in s.items()}
                           for k, s in ref_state["state"].items()}}
    opt2 = Adam(make_params(np.float64), amsgrad=True)
    opt2.load_state_dict(converted)
    assert opt2.state[opt2.param_groups[0]["params"][0]]["step"] == 1.0


def test_adamw_is_decoupled_adam_and_stays_so_after_loading():
    params = make_params(np.float64)
    opt = AdamW(params)
    assert opt.defaults["weight_decay"] == 1e-2 and opt.defaults["decoupled_weight_decay"]
    state = Adam(make_params(np.float64)).state_dict()
    opt.load_state_dict(state)
    assert all(g["decoupled_weight_decay"] for g in opt.param_groups)


def _corrupt(state, where, value):
    """A deep copy of an optimizer state_dict with one entry replaced."""
    import copy
    state = copy.deepcopy(state)
    kind, key = where
    if kind == "group":
        state["param_groups"][0][key] = value
    else:
        state["state"][0][key] = value(state["state"][0][key]) if callable(value) else value
    return state


def negative_first(a):
    a = a.copy()
    a.flat[0] = -1.0
    return a


def nan_first(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


@pytest.mark.parametrize("cls, where, value, message", [
    (Adam, ("state", "step"), "abc", "'step' of parameter 0 must be an integer >= 0"),
    (Adam, ("state", "step"), -3, "'step' of parameter 0 must be an integer >= 0"),
    (Adam, ("state", "step"), 2.5, "'step' of parameter 0 must be an integer >= 0"),
    (Adam, ("state", "step"), True, "'step' of parameter 0 must be an integer >= 0"),
    (Adam, ("group", "lr"), float("nan"), "group 0: Invalid learning rate: nan"),
    (Adam, ("group", "lr"), -1.0, "group 0: Invalid learning rate: -1.0"),
    (Adam, ("group", "lr"), "abc", "group 0: "),
    (Adam, ("group", "betas"), (5.0, 0.9), "Invalid beta parameter at index 0: 5.0"),
    (Adam, ("group", "eps"), -1e-8, "Invalid epsilon value"),
    (Adam, ("state", "exp_avg_sq"), negative_first, "'exp_avg_sq' of parameter 0 must be >= 0"),
    (Adam, ("state", "exp_avg_sq"), nan_first, "'exp_avg_sq' of parameter 0 must be >= 0"),
    (Adam, ("state", "exp_avg"), lambda a: a.astype(complex), "expected a real numeric array"),
    (RMSprop, ("state", "square_avg"), negative_first, "'square_avg' of parameter 0 must be"),
    (RMSprop, ("group", "alpha"), -0.5, "Invalid alpha value"),
    (Adagrad, ("state", "sum"), negative_first, "'sum' of parameter 0 must be >= 0"),
    (Adagrad, ("group", "lr_decay"), -1.0, "Invalid lr_decay value"),
    (SGD, ("group", "lr"), float("nan"), "Invalid learning rate: nan"),
    (SGD, ("group", "nesterov"), True, "Nesterov momentum requires a momentum"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_load_state_dict_validates_as_the_constructor_before_changing_anything(
        cls, where, value, message):
    if cls is SGD:
        params = make_params(np.float32)
        opt = SGD(params, lr=0.1)
    else:
        params, opt = make_optimizer(cls, {"momentum": 0.9} if cls is RMSprop else {})
    run_steps(opt, params, np.random.default_rng(0), 2)
    before = opt.state_dict()
    bad = _corrupt(before, where, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for k in before["state"]:
        for name, v in before["state"][k].items():
            np.testing.assert_array_equal(after["state"][k][name], v)


def test_sgd_constructor_refuses_a_nan_learning_rate():
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        SGD(make_params(np.float32), lr=float("nan"))


def test_adagrad_state_starts_with_the_optimizer():
    params = make_params(np.float64)
    opt = Adagrad(params[:2], initial_accumulator_value=0.5)
    assert all(opt.state[p]["step"] == 0 and (opt.state[p]["sum"] == 0.5).all()
               for p in params[:2])
    opt.add_param_group({"params": params[2:], "initial_accumulator_value": 2.0})
    assert (opt.state[params[3]]["sum"] == 2.0).all()
    assert len(opt.state_dict()["state"]) == 4


def test_closure_and_exports():
    params = make_params(np.float64)
    opt = rnnx.Adam(params)
    assert opt.step(lambda: 3.5) == 3.5
    assert (rnnx.AdamW, rnnx.RMSprop, rnnx.Adagrad) == (AdamW, RMSprop, Adagrad)
    assert "Parameter Group 0" in repr(opt) and "amsgrad: False" in repr(opt)


@pytest.mark.parametrize("cls,kwargs,error,message", [
    (Adam, dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (Adam, dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (Adam, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (Adam, dict(betas=(0, 0.999)), ValueError, "betas must be either both floats or both Tensors"),
    (AdamW, dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1: 1.5"),
    (Adam, dict(fused=True, foreach=True), RuntimeError, "`fused` and `foreach` cannot be"),
    (Adam, dict(fused=True, differentiable=True), RuntimeError,
     "`fused` does not support `differentiable`"),
    (Adam, dict(capturable=True), ValueError, "capturable=True is not supported"),
    (AdamW, dict(differentiable=True), ValueError, "differentiable=True is not supported"),
    (RMSprop, dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (RMSprop, dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    (RMSprop, dict(momentum=-0.9), ValueError, "Invalid momentum value: -0.9"),
    (RMSprop, dict(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (RMSprop, dict(alpha=-0.5), ValueError, "Invalid alpha value: -0.5"),
    (RMSprop, dict(capturable=True), ValueError, "capturable=True is not supported"),
    (Adagrad, dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (Adagrad, dict(lr_decay=-0.1), ValueError, "Invalid lr_decay value: -0.1"),
    (Adagrad, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (Adagrad, dict(initial_accumulator_value=-1.0), ValueError,
     "Invalid initial_accumulator_value value: -1.0"),
    (Adagrad, dict(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    (Adagrad, dict(differentiable=True), ValueError, "differentiable=True is not supported"),
    (SGD, dict(fused=True, foreach=True), RuntimeError, "`fused` and `foreach` cannot be"),
])
def test_errors_as_torch(cls, kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(make_params(np.float64), **kwargs)
    if "Invalid" in message or "betas must" in message or "`" in message:
        with pytest.raises(error, match=message):  # torch says the same
            getattr(torch.optim, cls.__name__)(twins(make_params(np.float64)), **kwargs)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, RMSprop, Adagrad])
def test_torch_switches_accepted(cls):
    """foreach / fused (where torch has them) are accepted with any value and kept."""
    flags = dict(foreach=True) if cls is RMSprop else dict(foreach=False, fused=True)
    params = make_params(np.float64)
    opt = cls(params, lr=0.1, **flags)
    run_steps(opt, params, np.random.default_rng(0), 2)
    assert all(opt.param_groups[0][k] == v for k, v in flags.items())


# -- schedulers -------------------------------------------------------------------------------
def scheduler_pair(cls=SGD, **options):
    """(rnnx optimizer, torch optimizer) with two groups, lr 0.1 and 0.5."""
    params = make_params(np.float64)
    ref_params = twins(params)
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1, **options)
    ref = getattr(torch.optim, cls.__name__)(
        [{"params": ref_params[:1]}, {"params": ref_params[1:], "lr": 0.5}], lr=0.1, **options)
    return opt, ref


class Warmup:
    """A callable object: LambdaLR saves its __dict__."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.epochs)


SCHEDULERS = [
    ("LambdaLR", dict(lr_lambda=lambda e: 0.95 ** e), 40),
    ("LambdaLR", dict(lr_lambda=[lambda e: 1 / (1 + e), Warmup(6)]), 40),
    ("LinearLR", dict(), 40),
    ("LinearLR", dict(start_factor=0.05, total_iters=12), 40),
    ("LinearLR", dict(start_factor=0.9, end_factor=0.1, total_iters=7), 40),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=60), 59),
    ("OneCycleLR", dict(max_lr=[0.2, 2.0], epochs=6, steps_per_epoch=9, pct_start=0.4,
                        anneal_strategy="linear", base_momentum=[0.8, 0.7],
                        max_momentum=0.99), 53),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=41, three_phase=True, div_factor=10.0,
                        final_div_factor=100.0), 40),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=30, cycle_momentum=False), 29),
]


@pytest.mark.parametrize("cls", [SGD, Adam])
@pytest.mark.parametrize("name,kwargs,steps", SCHEDULERS)
def test_schedulers_match_torch(name, kwargs, steps, cls):
    opt, ref_opt = scheduler_pair(cls, **({"momentum": 0.9} if cls is SGD else {}))
    sched = getattr(lr_scheduler, name)(opt, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(ref_opt, **kwargs)
    for step in range(steps):
        assert sched.get_last_lr() == ref.get_last_lr(), step  # same formulas: exact
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        key = "momentum" if cls is SGD else "betas"
        assert [g[key] for g in opt.param_groups] == [g[key] for g in ref_opt.param_groups]
        ref_opt.step()
        sched.step()
        ref.step()


@pytest.mark.parametrize("name,kwargs,steps", SCHEDULERS)
def test_scheduler_state_dict_resume(name, kwargs, steps, tmp_path):
    def make():
        opt, _ = scheduler_pair(SGD, momentum=0.9)
        return opt, getattr(lr_scheduler, name)(opt, **kwargs)

    opt, sched = make()
    for _ in range(steps // 2):
        sched.step()
    rnnx.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.npz")
    expected = []
    for _ in range(steps - steps // 2):
        sched.step()
        expected.append((sched.get_last_lr(), [g["momentum"] for g in opt.param_groups]))
    opt2, sched2 = make()
    saved = rnnx.load(tmp_path / "s.npz")
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    resumed = []
    for _ in range(steps - steps // 2):
        sched2.step()
        resumed.append((sched2.get_last_lr(), [g["momentum"] for g in opt2.param_groups]))
    assert resumed == expected


def test_lambda_lr_saves_callable_objects_only():
    opt, _ = scheduler_pair()
    warmup = Warmup(6)
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, warmup])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"epochs": 6}]
    assert sched.lr_lambdas[1] is warmup  # state_dict() leaves the scheduler as it was
    state["lr_lambdas"][1] = {"epochs": 3}
    other = Warmup(6)
    sched2 = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, other])
    sched2.load_state_dict(state)
    assert other.epochs == 3 and "lr_lambdas" in state


def test_one_cycle_lr_stepping_past_the_end():
    opt, ref_opt = scheduler_pair(momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1.0, total_steps=5)
    for _ in range(5):
        ref_opt.step()
        sched.step()
        ref.step()
    for scheduler in (sched, ref):
        with pytest.raises(ValueError, match="Tried to step 6 times. The specified number of "
                                             "total steps is 5"):
            scheduler.step()


@pytest.mark.parametrize("name,kwargs,message", [
    ("LambdaLR", dict(lr_lambda=[lambda e: 1.0]), "Expected 2 lr_lambdas, but got 1"),
    ("LinearLR", dict(start_factor=0), "Starting multiplicative factor expected to be greater "
                                       "than 0 and less or equal to 1."),
    ("LinearLR", dict(start_factor=1.5), "Starting multiplicative factor"),
    ("LinearLR", dict(end_factor=-0.1), "Ending multiplicative factor expected to be between 0 "
                                        "and 1."),
    ("OneCycleLR", dict(max_lr=1.0), "You must define either total_steps OR (epochs AND "
                                     "steps_per_epoch)"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=0), "Expected positive integer total_steps, "
                                                    "but got 0"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=10.0), "Expected positive integer total_steps"),
    ("OneCycleLR", dict(max_lr=1.0, epochs=0, steps_per_epoch=3),
     "Expected positive integer epochs, but got 0"),
    ("OneCycleLR", dict(max_lr=1.0, epochs=2, steps_per_epoch=-3),
     "Expected positive integer steps_per_epoch, but got -3"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=10, pct_start=1.5),
     "Expected float between 0 and 1 pct_start, but got 1.5"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=10, pct_start=1),
     "Expected float between 0 and 1 pct_start, but got 1"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=10, anneal_strategy="exp"),
     "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
    ("OneCycleLR", dict(max_lr=[1.0, 2.0, 3.0], total_steps=10),
     "max_lr must have the same length as optimizer.param_groups. max_lr has 3 values, "
     "param_groups has 2."),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=10, base_momentum=[0.8]),
     "base_momentum must have the same length as optimizer.param_groups"),
])
def test_scheduler_errors_as_torch(name, kwargs, message):
    opt, ref_opt = scheduler_pair(momentum=0.9)
    for module, optimizer in ((lr_scheduler, opt), (torch.optim.lr_scheduler, ref_opt)):
        with pytest.raises(ValueError) as exc:
            getattr(module, name)(optimizer, **kwargs)
        assert message in str(exc.value)


def test_one_cycle_lr_needs_momentum_or_betas():
    opt, ref_opt = scheduler_pair(Adagrad)
    message = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
    for module, optimizer in ((lr_scheduler, opt), (torch.optim.lr_scheduler, ref_opt)):
        with pytest.raises(ValueError, match=message):
            module.OneCycleLR(optimizer, max_lr=1.0, total_steps=10)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False)
    assert sched.get_last_lr() == pytest.approx([0.04, 0.04], rel=1e-15, abs=0)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.OneCycleLR(object(), max_lr=1.0, total_steps=10)


@pytest.mark.parametrize("cls", [Adam, RMSprop, Adagrad])
def test_one_element_parameter_state_round_trip(cls):
    """'step' is told from the moments by its name, not by its shape."""
    p = FreezableParameter(np.array([0.5]))
    t = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    opt, ref = cls([p], lr=0.1), getattr(torch.optim, cls.__name__)([t], lr=0.1)
    for g in (0.3, -1.2, 0.7):
        p.grad, t.grad = np.array([g]), torch.tensor([g], dtype=torch.float64)
        opt.step()
        ref.step()
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-14)
    opt2 = cls([FreezableParameter(np.array([0.5]))], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    (state,) = opt2.state.values()
    assert state["step"] == 3
    assert all(isinstance(v, np.ndarray) and v.shape == (1,) for k, v in state.items()
               if k != "step")
