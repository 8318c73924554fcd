"""Linear, Dropout, CrossEntropyLoss and MSELoss: parity with torch, finite differences, errors."""
import itertools

import numpy as np
import pytest

import rnnx
from rnnx.nn import CrossEntropyLoss, Dropout, Linear, MSELoss

torch = pytest.importorskip("torch")

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def numeric_grad(f, x, h=1e-6):
    """Central finite differences of the scalar f() w.r.t. the array x (modified in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


# -- Linear -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 5), (5,), (2, 3, 5)])
def test_linear_matches_torch(dtype, bias, shape):
    rng = np.random.default_rng(0)
    lin = Linear(5, 3, bias=bias, dtype=dtype)
    ref = torch.nn.Linear(5, 3, bias=bias, dtype=TORCH_DTYPE[dtype])
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape[:-1] + (3,)).astype(dtype)
    y = lin(x)
    grad_x = lin.backward(g)
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(g))
    assert y.dtype == dtype and grad_x.dtype == dtype and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), **TOL[dtype])
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad.numpy(), **TOL[dtype])
    if bias:
        np.testing.assert_allclose(lin.bias.grad, ref.bias.grad.numpy(), **TOL[dtype])
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in ref.named_parameters()]


def test_linear_init_uses_global_generator_and_torch_bounds():
    rnnx.manual_seed(3)
    a = Linear(400, 50)
    rnnx.manual_seed(3)
    b = Linear(400, 50)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    bound = 1 / np.sqrt(400)
    w = a.weight.data
    assert w.dtype == np.float32 and w.shape == (50, 400) and a.bias.shape == (50,)
    assert np.abs(w).max() <= bound and np.abs(a.bias.data).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound  # uniform on [-bound, bound]
    assert a.bias.data.std() > 0.3 * bound  # the bias is drawn too, not zeros


def test_linear_finite_differences_float64():
    rng = np.random.default_rng(1)
    lin = Linear(4, 3, dtype=np.float64)
    x = rng.standard_normal((2, 3, 4))
    r = rng.standard_normal((2, 3, 3))

    def f():
        lin.eval()
        return float((lin(x) * r).sum())

    lin.train()
    lin(x)
    grad_x = lin.backward(r)
    np.testing.assert_allclose(grad_x, numeric_grad(f, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(lin.weight.grad, numeric_grad(f, lin.weight.data), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(lin.bias.grad, numeric_grad(f, lin.bias.data), rtol=1e-7, atol=1e-8)


def test_linear_records_are_lifo_and_grads_accumulate():
    rng = np.random.default_rng(2)
    lin = Linear(3, 2, dtype=np.float64)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    g1, g2 = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    outputs = lin(x1), lin(x2)  # noqa: F841 - kept: a record lives as long as its output
    np.testing.assert_allclose(lin.backward(g2), g2 @ lin.weight.data)
    np.testing.assert_allclose(lin.backward(g1), g1 @ lin.weight.data)
    np.testing.assert_allclose(lin.weight.grad, g1.T @ x1 + g2.T @ x2)
    np.testing.assert_allclose(lin.bias.grad, g1.sum(0) + g2.sum(0))
    with pytest.raises(RuntimeError, match="without a pending forward"):
        lin.backward(g1)
    lin.eval()
    lin(x1)
    assert lin._records == []


def test_linear_casts_float_input_and_rejects_others():
    lin = Linear(3, 2)
    assert lin(np.ones((2, 3), np.float64)).dtype == np.float32
    assert lin(np.ones(3, np.float16)).dtype == np.float32
    for bad in (np.ones((2, 3), np.int64), np.ones((2, 3), np.complex64),
                np.array([[1.0, 2.0, None]], dtype=object), np.ones((2, 3), bool)):
        with pytest.raises(TypeError, match="floating-point"):
            lin(bad)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 3\), got shape \(2, 4\)"):
        lin(np.ones((2, 4)))
    with pytest.raises(ValueError, match="expected input"):
        lin(np.float32(1.0))
    lin(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected grad_y of shape \(2, 2\), got \(2, 3\)"):
        lin.backward(np.ones((2, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        Linear(3, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="in_features"):
        Linear(-1, 2)


# -- Dropout -----------------------------------------------------------------------------
def test_dropout_statistics_and_backward_mask():
    rnnx.manual_seed(0)
    drop = Dropout(0.3)
    x = np.ones((200, 500), np.float32)
    y = drop(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.005
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01
    g = np.full(x.shape, 2.0, np.float32)
    np.testing.assert_array_equal(drop.backward(g), 2 * y)
    assert drop.extra_repr() == "p=0.3"


def test_dropout_reproducible_eval_identity_and_extremes():
    x = np.random.default_rng(0).standard_normal((8, 9)).astype(np.float32)
    rnnx.manual_seed(5)
    a = Dropout(0.5)(x)
    rnnx.manual_seed(5)
    np.testing.assert_array_equal(a, Dropout(0.5)(x))
    drop = Dropout(0.5).eval()
    np.testing.assert_array_equal(drop(x), x)
    assert drop._records == []
    for p, expected in ((0.0, x), (1.0, np.zeros_like(x))):
        drop = Dropout(p)
        np.testing.assert_array_equal(drop(x), expected)
        np.testing.assert_array_equal(drop.backward(np.ones_like(x)), np.ones_like(x) * (p == 0))
    assert Dropout(0.5, dtype=np.float64)(x).dtype == np.float64
    assert Dropout(0.5)(x.astype(np.float64)).dtype == np.float64  # default: follow the input
    assert Dropout(0.5)(x.astype(np.float16)).dtype == np.float32
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
            Dropout(p)
    with pytest.raises(TypeError):
        Dropout()(np.ones(3, np.int32))


# -- CrossEntropyLoss -----------------------------------------------------------------------
def torch_ce(logits, target, upstream=None, **kw):
    xt = torch.from_numpy(logits).requires_grad_()
    if "weight" in kw and kw["weight"] is not None:
        kw["weight"] = torch.from_numpy(kw["weight"])
    loss = torch.nn.CrossEntropyLoss(**kw)(xt, torch.from_numpy(target))
    loss.backward(None if upstream is None else torch.from_numpy(np.asarray(upstream)))
    return loss.detach().numpy(), xt.grad.numpy()


def check_ce(logits, target, dtype, upstream=None, **kw):
    loss_fn = CrossEntropyLoss(**kw, dtype=dtype)
    loss = loss_fn(logits, target)
    if upstream is None and kw.get("reduction") == "none":
        upstream = np.linspace(-1, 2, np.size(loss)).reshape(np.shape(loss)).astype(dtype)
    grad = loss_fn.backward(upstream)
    ref_loss, ref_grad = torch_ce(logits, target, upstream, **kw)
    assert np.shape(loss) == ref_loss.shape and grad.shape == logits.shape and grad.dtype == dtype
    np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction,weighted,ignore,smoothing",
                         list(itertools.product(["mean", "sum", "none"], [False, True],
                                                [False, True], [0.0, 0.25])))
def test_cross_entropy_matches_torch(dtype, reduction, weighted, ignore, smoothing):
    rng = np.random.default_rng(4)
    C = 5
    logits = (3 * rng.standard_normal((7, C))).astype(dtype)
    target = rng.integers(0, C, 7)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    if ignore:
        target[[1, 4]] = 2
        kw["ignore_index"] = 2
    upstream = rng.standard_normal(7).astype(dtype) if reduction == "none" else dtype(0.7)
    check_ce(logits, target, dtype, upstream, **kw)
    if reduction != "none":
        check_ce(logits, target, dtype, **kw)  # default upstream gradient 1


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_unbatched_spatial_and_probability_targets(reduction):
    rng = np.random.default_rng(5)
    w = rng.uniform(0.5, 1.5, 4)
    kw = dict(reduction=reduction, weight=w, label_smoothing=0.1)
    check_ce(rng.standard_normal(4), np.array(3), np.float64, **kw)
    spatial_target = rng.integers(0, 4, (3, 2, 5))
    spatial_target[0, 1, 2] = -100
    check_ce(rng.standard_normal((3, 4, 2, 5)), spatial_target, np.float64, **kw)
    probs = rng.dirichlet(np.ones(4), 6)
    check_ce(rng.standard_normal((6, 4)), probs, np.float64, **kw)
    check_ce(rng.standard_normal((6, 4, 3)), np.moveaxis(rng.dirichlet(np.ones(4), (6, 3)), -1, 1),
             np.float64, **kw)


def test_cross_entropy_stable_and_all_ignored():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 1e4, 0.0]])
    check_ce(logits, np.array([0, 2]), np.float64)
    loss_fn = CrossEntropyLoss(dtype=np.float64)
    target = np.array([-100, -100])
    assert np.isnan(loss_fn(logits, target))
    np.testing.assert_array_equal(loss_fn.backward(), np.zeros_like(logits))  # torch: zeros too
    assert np.isnan(torch_ce(logits, target)[0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_finite_differences(reduction):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((4, 3, 2))
    target = np.array([[0, 2], [1, 1], [2, 0], [1, -100]])
    upstream = rng.standard_normal((4, 2)) if reduction == "none" else 1.3
    loss_fn = CrossEntropyLoss(weight=np.array([0.5, 2.0, 1.0]), reduction=reduction,
                               label_smoothing=0.3, dtype=np.float64)

    def f():
        return float((loss_fn.eval()(logits, target) * upstream).sum())

    loss_fn.train()(logits, target)
    grad = loss_fn.backward(upstream)
    np.testing.assert_allclose(grad, numeric_grad(f, logits), rtol=1e-6, atol=1e-9)


def test_cross_entropy_errors():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction; expected one of "
                                         "'none', 'mean', 'sum'"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="Target 4 is out of bounds"):
        CrossEntropyLoss()(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="Target -1 is out of bounds"):
        CrossEntropyLoss()(logits, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integer class targets"):
        CrossEntropyLoss()(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer class targets"):
        CrossEntropyLoss()(logits, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"expected target of shape \(3,\) .* got \(4,\)"):
        CrossEntropyLoss()(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="for all 4 classes"):
        CrossEntropyLoss(weight=np.ones(3))(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(TypeError, match="floating-point"):
        CrossEntropyLoss()(np.zeros((3, 4), np.int64), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="class dimension"):
        CrossEntropyLoss()(np.float32(1.0), np.array(0))
    loss_fn = CrossEntropyLoss(reduction="none")
    loss_fn(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected grad_loss of shape \(3,\), got \(2,\)"):
        loss_fn.backward(np.ones(2))
    loss_fn.backward()  # the rejected gradient did not consume the forward record
    with pytest.raises(RuntimeError, match="without a pending forward"):
        loss_fn.backward()


def test_losses_follow_input_dtype_unless_given():
    x64, t = np.zeros((2, 3)), np.array([0, 1])
    for loss_fn, target in ((CrossEntropyLoss(), t), (MSELoss(), x64.astype(np.float32))):
        assert loss_fn(x64, target).dtype == np.float64 and loss_fn.backward().dtype == np.float64
    ce = CrossEntropyLoss(weight=np.ones(3), dtype=np.float32)
    assert ce(x64, t).dtype == np.float32 and ce.backward().dtype == np.float32


# -- MSELoss -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(dtype, reduction):
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal((2, 3, 4)).astype(dtype)
    upstream = rng.standard_normal(x.shape).astype(dtype) if reduction == "none" else dtype(0.5)
    loss_fn = MSELoss(reduction, dtype=dtype)
    loss = loss_fn(x, t)
    grad = loss_fn.backward(upstream)
    xt = torch.from_numpy(x).requires_grad_()
    ref = torch.nn.MSELoss(reduction=reduction)(xt, torch.from_numpy(t))
    ref.backward(torch.from_numpy(np.asarray(upstream)))
    np.testing.assert_allclose(loss, ref.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad, xt.grad.numpy(), **TOL[dtype])


def test_mse_finite_differences_and_errors():
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    loss_fn = MSELoss(dtype=np.float64)
    loss_fn(x, t)
    np.testing.assert_allclose(loss_fn.backward(), numeric_grad(lambda: float(loss_fn.eval()(x, t)), x),
                               rtol=1e-7)
    with pytest.raises(ValueError, match=r"input shape \(3, 2\) and target shape \(2, 3\) differ"):
        MSELoss()(x, t.T)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        MSELoss("elementwise_mean")
    with pytest.raises(TypeError, match="target must be a floating-point"):
        MSELoss()(x, t.astype(int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_value_backward_says_what_to_call(dtype):
    """torch's `loss.backward()`: the value is the dtype's numpy scalar, whose backward
    names the two calls that back-propagate in rnnx."""
    for loss_fn, args in ((CrossEntropyLoss(), (np.zeros((2, 3), dtype), [0, 1])),
                          (MSELoss(reduction="sum"), (np.zeros(3, dtype), np.ones(3, dtype)))):
        loss = loss_fn(*args)
        assert isinstance(loss, dtype) and loss.dtype == dtype
        assert type(loss * 2) is dtype and repr(loss) == repr(dtype(loss))
        with pytest.raises(RuntimeError, match=r"no autograd.*grad = loss_fn\.backward\(\); "
                                               r"model\.backward\(grad, input_grad=False\)"):
            loss.backward()
