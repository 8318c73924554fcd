"""ReLU, Tanh, Sigmoid, Identity, Flatten and ModuleList, against torch where it has them."""
import numpy as np
import pytest

import rnnx
from rnnx import Flatten, Identity, Linear, ModuleList, ReLU, Sequential, Sigmoid, Tanh

TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-14, atol=1e-15)}
# (1 - y^2) near |y| = 1 loses the digits in which float32 tanh values may differ by an ulp
ACTIVATIONS = ["ReLU", "Tanh", "Sigmoid"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 5).astype(dtype)
    x[0, 0, :3] = [0.0, -0.0, 40.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    m = getattr(rnnx, name)()
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = getattr(torch.nn, name)()(xt)
    yt.backward(torch.from_numpy(g))
    y = m(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL[dtype])
    gx = m.backward(g)
    assert gx.dtype == dtype
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOL[dtype])
    assert repr(m) == repr(getattr(torch.nn, name)())


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_finite_differences(name):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    x[np.abs(x) < 1e-3] = 0.5  # away from ReLU's kink
    g = rng.standard_normal(x.shape)
    m = getattr(rnnx, name)()
    m(x)
    got = m.backward(g)
    eps = 1e-6
    m.eval()
    numeric = (g * (m(x + eps) - m(x - eps))).reshape(x.shape) / (2 * eps)
    np.testing.assert_allclose(got, numeric, rtol=1e-7, atol=1e-9)


def test_relu_inplace_nan_and_sigmoid_extremes():
    x = np.array([-1.0, 2.0, np.nan])
    relu = ReLU(inplace=True)
    y = relu(x)
    assert y is x and np.isnan(x[2]) and x[0] == 0.0
    assert repr(relu) == "ReLU(inplace=True)"
    np.testing.assert_array_equal(relu.backward(np.ones(3)), [0.0, 1.0, 1.0])  # as torch
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(Sigmoid()(np.array([-1000.0, 1000.0])), [0.0, 1.0])
    assert Tanh()(np.array([1, 2], np.float16)).dtype == np.float32


@pytest.mark.parametrize("cls", [ReLU, Tanh, Sigmoid, Flatten])
def test_elementwise_errors_and_records(cls):
    m = cls()
    with pytest.raises(RuntimeError, match="without a pending forward"):
        m.backward(np.zeros((2, 3)))
    m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3\), got \(3, 2\)"):
        m.backward(np.zeros((3, 2)))
    assert len(m._records) == 1  # a rejected gradient leaves the record
    assert m.backward(np.zeros(m(np.zeros((2, 3))).shape), input_grad=False) is None
    m.clear_records()
    m.eval()(np.zeros((2, 3)))
    assert not m._records
    if cls is not Flatten:
        with pytest.raises(TypeError, match="floating-point"):
            m(np.array([1, 2]))


@pytest.mark.parametrize("shape, start, end", [((2, 3, 4), 1, -1), ((2, 3, 4), 0, 1),
                                               ((2, 3, 4, 5), 1, 2), ((5,), 0, -1), ((), 0, -1),
                                               ((2, 3), -1, -1)])
def test_flatten_matches_torch(shape, start, end):
    torch = pytest.importorskip("torch")
    x = np.arange(float(np.prod(shape))).reshape(shape)
    ref = torch.nn.Flatten(start, end)(torch.from_numpy(x))
    m = Flatten(start, end)
    y = m(x)
    np.testing.assert_array_equal(y, ref.numpy())
    g = np.arange(y.size, dtype=np.float64).reshape(y.shape)
    np.testing.assert_array_equal(m.backward(g), g.reshape(shape))
    assert repr(m) == repr(torch.nn.Flatten(start, end))


def test_flatten_errors():
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of "
                                         r"\[-1, 0\], but got 1\)"):
        Flatten()(np.zeros(3))
    with pytest.raises(ValueError, match="start_dim cannot come after end_dim"):
        Flatten(2, 1)(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="start_dim must be an int"):
        Flatten(1.0)


def test_identity_passes_anything_through_sequential():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 3))
    rnnx.manual_seed(0)
    f64 = dict(dtype=np.float64)
    plain = Sequential(rnnx.GRU(3, 4, **f64), rnnx.LastHidden(), Linear(4, 2, **f64))
    rnnx.manual_seed(0)
    ident = Sequential(rnnx.GRU(3, 4, **f64), Identity(54, unused=True), rnnx.LastHidden(),
                       Identity(), Linear(4, 2, **f64))
    g = rng.standard_normal((2, 2))
    np.testing.assert_array_equal(plain(x), ident(x))
    np.testing.assert_array_equal(plain.backward(g), ident.backward(g))
    for p, q in zip(plain.parameters(), ident.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    m = Identity()
    obj = object()
    assert m(obj) is obj and m.backward(obj) is obj
    m(1)
    assert m.backward(1, input_grad=False) is None


def test_module_list_registration_and_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    ours = ModuleList([Linear(2, 3), ReLU()])
    ours.append(rnnx.LSTM(3, 4)).extend([Tanh(), Linear(4, 1)])
    ours.insert(1, Identity())
    theirs = torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.ReLU()])
    theirs.append(torch.nn.LSTM(3, 4)).extend([torch.nn.Tanh(), torch.nn.Linear(4, 1)])
    theirs.insert(1, torch.nn.Identity())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert repr(ours).splitlines()[:3] == repr(theirs).splitlines()[:3]
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(ours[-1].weight.data, theirs[-1].weight.detach().numpy())


def test_module_list_operations():
    a, b, c, d = Linear(1, 1), ReLU(), Tanh(), Linear(1, 2)
    ml = ModuleList([a, b])
    assert len(ml) == 2 and list(ml) == [a, b] and ml[-1] is b and ml[0] is a
    ml += [c]
    assert list(ml) == [a, b, c]
    ml[1] = d
    assert list(ml) == [a, d, c] and ml.parameters() == a.parameters() + d.parameters()
    sub = ml[1:]
    assert isinstance(sub, ModuleList) and list(sub) == [d, c]
    del ml[0]
    assert list(ml) == [d, c] and list(ml._modules) == ["0", "1"]
    assert list(ml.state_dict()) == ["0.weight", "0.bias"]
    assert ml.pop() is c and list(ml) == [d]
    both = ml + ModuleList([b])
    assert list(both) == [d, b] and list(ml) == [d]
    ml.insert(0, b)
    assert list(ml) == [b, d]
    assert len(ModuleList()) == 0
    with pytest.raises(IndexError, match="index 2 is out of range"):
        ml[2]
    with pytest.raises(IndexError, match="index -3 is out of range"):
        ml[-3] = a
    with pytest.raises(TypeError, match="is not a Module subclass"):
        ml.append(np.zeros(2))
    with pytest.raises(TypeError, match="is not a Module subclass"):
        ModuleList([a, 3])
    with pytest.raises(TypeError, match="should be called with an iterable"):
        ml.extend(a)
    assert list(ml) == [b, d]  # the failed calls changed nothing
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        ml(np.zeros(1))


def test_module_list_in_a_custom_module_trains():
    class Stack(rnnx.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = ModuleList([Linear(3, 8), Tanh(), Linear(8, 2)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

        def backward(self, g, *, input_grad=True):
            for layer in reversed(self.layers):
                g = layer.backward(g)
            return g

    rng = np.random.default_rng(3)
    model = Stack()
    assert list(model.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                        "layers.2.bias"]
    x = rng.standard_normal((16, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    loss_fn, opt = rnnx.CrossEntropyLoss(), rnnx.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), y)))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < losses[0] * 0.5
