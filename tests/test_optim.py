"""SGD, the learning-rate schedulers and gradient clipping against torch."""
import itertools

import numpy as np
import pytest

from rnnx.nn import Parameter
from rnnx.optim import SGD, lr_scheduler
from rnnx.utils import clip_grad_norm_, clip_grad_value_

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (2, 1, 3)]


def make_params(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def torch_twins(params):
    return [torch.tensor(p.data.copy(), requires_grad=True) for p in params]


def set_grads(params, twins, rng):
    for p, t in zip(params, twins):
        g = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad[...] = g
        t.grad = torch.from_numpy(g.copy())


def run_steps(opt, params, rng, steps):
    for _ in range(steps):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()


SGD_OPTIONS = [dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
               for m, d, wd, n, mx in itertools.product([0, 0.9], [0, 0.3], [0, 0.01],
                                                        [False, True], [False, True])
               if not (n and (m == 0 or d != 0))]


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_torch(options):
    params = make_params(0)
    twins = torch_twins(params)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.05}]
    opt = SGD(groups, lr=0.1, **options)
    ref = torch.optim.SGD([{"params": twins[:2]}, {"params": twins[2:], "lr": 0.05}], lr=0.1, **options)
    rng = np.random.default_rng(1)
    for _ in range(5):
        set_grads(params, twins, rng)
        opt.step()
        ref.step()
    for p, t in zip(params, twins):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert len(opt.state_dict()["state"]) == (3 if options["momentum"] else 0)


def test_sgd_float32_in_place_and_zero_grad():
    params = make_params(0, np.float32)
    data = [p.data for p in params]
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    run_steps(opt, params, np.random.default_rng(0), 2)
    assert all(p.data is d and p.dtype == np.float32 for p, d in zip(params, data))
    assert opt.state[params[0]]["momentum_buffer"].dtype == np.float32
    grads = [p.grad for p in params]
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(params, grads))
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_sgd_param_groups_like_torch():
    params = make_params(0)
    opt = SGD([{"params": params[:1], "momentum": 0.5}, {"params": params[1]}], lr=0.2)
    assert [g["params"] for g in opt.param_groups] == [params[:1], [params[1]]]
    assert opt.param_groups[0]["momentum"] == 0.5 and opt.param_groups[1]["momentum"] == 0
    assert all(g["lr"] == 0.2 for g in opt.param_groups)
    opt.add_param_group({"params": params[2:], "lr": 1.0})
    assert opt.param_groups[2]["lr"] == 1.0 and opt.param_groups[2]["nesterov"] is False
    assert "Parameter Group 2" in repr(opt)
    lr_scheduler.StepLR(opt, 3)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.2, 0.2, 1.0]
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0], [1], [2]]


def test_sgd_state_dict_resume_bit_for_bit():
    def make():
        params = make_params(0, np.float32)
        return params, SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.03}],
                           lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3)

    params, opt = make()
    rng = np.random.default_rng(2)
    run_steps(opt, params, rng, 3)
    saved_params = [p.data.copy() for p in params]
    saved_state = opt.state_dict()
    rng_state = rng.bit_generator.state
    run_steps(opt, params, rng, 2)

    params2, opt2 = make()
    opt2.load_state_dict(saved_state)
    for p, d in zip(params2, saved_params):
        p.data[...] = d
    rng.bit_generator.state = rng_state
    run_steps(opt2, params2, rng, 2)
    for p, q in zip(params, params2):
        assert (p.data == q.data).all()
    assert opt2.param_groups[1]["lr"] == 0.03 and opt2.param_groups[0]["dampening"] == 0.1
    # state_dict() copies: later steps do not change a saved state
    assert not np.array_equal(saved_state["state"][0]["momentum_buffer"],
                              opt.state[params[0]]["momentum_buffer"])


def test_sgd_errors():
    params = make_params(0)
    for kwargs, message in [(dict(lr=-0.1), "Invalid learning rate: -0.1"),
                            (dict(momentum=-0.5), "Invalid momentum value: -0.5"),
                            (dict(weight_decay=-1), "Invalid weight_decay value: -1"),
                            (dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
                            (dict(nesterov=True, momentum=0.9, dampening=0.1),
                             "Nesterov momentum requires a momentum and zero dampening"),
                            ]:
        with pytest.raises(ValueError, match=message):
            SGD(params, **kwargs)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([])
    with pytest.raises(TypeError, match="iterable of Parameters or dicts"):
        SGD(params[0])
    with pytest.raises(TypeError, match="ordered collections"):
        SGD([{"params": set(params)}])
    with pytest.raises(TypeError, match="can only optimize Parameters"):
        SGD([params[0], np.zeros(3)])
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": params[:2]}, {"params": params[1:]}])
    opt = SGD(params, momentum=0.9)
    run_steps(opt, params, np.random.default_rng(0), 1)
    state = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        SGD([{"params": params[:1]}, {"params": params[1:]}]).load_state_dict(state)
    with pytest.raises(ValueError, match="doesn't match the size"):
        SGD(params[:2]).load_state_dict(state)
    with pytest.raises(ValueError, match="has shape"):
        SGD(params[::-1], momentum=0.9).load_state_dict(state)


# -- schedulers ------------------------------------------------------------------------------
SCHEDULERS = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[5, 12, 12, 20], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
]


def two_group_optimizers():
    params = make_params(0)
    opt = SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1)
    twins = torch_twins(params)
    ref = torch.optim.SGD([{"params": twins[:1]}, {"params": twins[1:], "lr": 0.5}], lr=0.1)
    return opt, ref


@pytest.mark.parametrize("name,kwargs", SCHEDULERS)
def test_schedulers_match_torch_over_30_epochs(name, kwargs):
    opt, ref_opt = two_group_optimizers()
    sched = getattr(lr_scheduler, name)(opt, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(ref_opt, **kwargs)
    for epoch in range(30):
        assert sched.get_last_lr() == ref.get_last_lr(), epoch  # same formulas: exact
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        ref_opt.step()
        sched.step()
        ref.step()


@pytest.mark.parametrize("name,kwargs", SCHEDULERS)
def test_scheduler_state_dict_resume(name, kwargs):
    opt, _ = two_group_optimizers()
    sched = getattr(lr_scheduler, name)(opt, **kwargs)
    for _ in range(9):
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    expected = []
    for _ in range(6):
        sched.step()
        expected.append(sched.get_last_lr())
    opt2, _ = two_group_optimizers()
    sched2 = getattr(lr_scheduler, name)(opt2, **kwargs)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    resumed = []
    for _ in range(6):
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == expected


METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.89999, 0.96, 0.97, 0.98, 0.5, 0.6, 0.6, 0.6, 0.6,
           0.6, 0.6, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("kwargs", [
    dict(patience=2),
    dict(mode="max", patience=1, factor=0.5, cooldown=2),
    dict(patience=1, threshold=0.05, threshold_mode="abs", min_lr=[0.02, 0.1]),
    dict(mode="max", patience=0, threshold=0.01, threshold_mode="abs", eps=0.02),
    dict(patience=0, factor=0.5, min_lr=0.09),
])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    opt, ref_opt = two_group_optimizers()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **kwargs)
    for i, metric in enumerate(METRICS):
        sched.step(np.float64(metric))
        ref.step(metric)
        assert sched.get_last_lr() == ref.get_last_lr(), i
        assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter) == \
            (ref.best, ref.num_bad_epochs, ref.cooldown_counter)
    state = sched.state_dict()
    sched2 = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    sched2.load_state_dict(state)
    assert sched2.state_dict() == state


def test_scheduler_errors():
    opt, _ = two_group_optimizers()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), 3)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.ExponentialLR(opt, 0.9, last_epoch=4)
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown!"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode x is unknown!"):
        lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 3"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0, 0, 0])


# -- gradient clipping ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, float("inf"), "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    params = make_params(0, dtype)
    twins = torch_twins(params)
    set_grads(params, twins, np.random.default_rng(3))
    total = clip_grad_norm_(iter(params), max_norm, norm_type)
    ref_total = torch.nn.utils.clip_grad_norm_(twins, max_norm, norm_type)
    tol = dict(rtol=1e-6) if dtype == np.float32 else dict(rtol=1e-13)
    assert total.dtype == dtype
    np.testing.assert_allclose(total, ref_total.numpy(), **tol)
    for p, t in zip(params, twins):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), **tol)


def test_clip_grad_single_parameter_nonfinite_and_value():
    p = Parameter(np.array([3.0, 4.0]))
    p.grad[...] = [3.0, 4.0]
    assert clip_grad_norm_(p, 1.0) == 5.0
    np.testing.assert_allclose(p.grad, [3 / (5 + 1e-6), 4 / (5 + 1e-6)])
    p.grad[0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert np.isnan(clip_grad_norm_([p], 1.0))
    params = make_params(1)
    twins = torch_twins(params)
    set_grads(params, twins, np.random.default_rng(4))
    assert clip_grad_value_(params, 0.7) is None
    torch.nn.utils.clip_grad_value_(twins, 0.7)
    for q, t in zip(params, twins):
        np.testing.assert_array_equal(q.grad, t.grad.numpy())
