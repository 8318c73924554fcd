"""Sequential and the recurrent adapters LastHidden / LastTimeStep."""
from collections import OrderedDict

import numpy as np
import pytest

import rnnx
from rnnx.nn import CrossEntropyLoss, Dropout, LastHidden, LastTimeStep, Linear, Module, Sequential


class FakeRecurrent(Module):
    """out = 2 x (T, B, F); h_n = stack of per-layer sums over time scaled by (layer + 1), shape (L, B, F);
    with lstm=True also c_n = 3 h_n. backward follows the recurrent convention."""

    def __init__(self, layers=2, lstm=False):
        super().__init__()
        self.layers, self.lstm = layers, lstm
        self.calls = []

    def forward(self, x):
        self._push_record(x.shape)
        h_n = np.stack([(k + 1) * x.sum(0) for k in range(self.layers)])
        return 2 * x, ((h_n, 3 * h_n) if self.lstm else h_n)

    def backward(self, grad_out=None, grad_state=None):
        shape = self._pop_record()
        self.calls.append((grad_out, grad_state))
        grad_h, grad_c = grad_state if self.lstm else (grad_state, None)
        grad_x = np.zeros(shape) if grad_out is None else 2 * grad_out
        for g, scale in ((grad_h, 1), (grad_c, 3)):
            if g is not None:
                grad_x = grad_x + scale * sum((k + 1) * g[k] for k in range(self.layers))
        return grad_x, (np.zeros(shape[1:]), None) if self.lstm else np.zeros(shape[1:])


def test_sequential_chains_forward_backward_and_names():
    rnnx.manual_seed(0)
    model = Sequential(Linear(4, 5, dtype=np.float64), Dropout(0.0), Linear(5, 3, dtype=np.float64))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(model) == 3 and model[-1] is model[2] and list(model) == [model[0], model[1], model[2]]
    assert isinstance(model[1:], Sequential) and list(model[1:]) == [model[1], model[2]]
    x = np.random.default_rng(0).standard_normal((6, 4))
    g = np.random.default_rng(1).standard_normal((6, 3))
    y = model(x)
    np.testing.assert_allclose(y, model[2].eval()(model[0].eval()(x)))
    model.train()
    grad_x = model.backward(g)
    np.testing.assert_allclose(grad_x, g @ model[2].weight.data @ model[0].weight.data)
    np.testing.assert_allclose(model[2].weight.grad, g.T @ model[0].eval()(x))
    named = Sequential(OrderedDict([("enc", Linear(2, 2)), ("dec", Linear(2, 1))]))
    assert [n for n, _ in named.named_parameters()][::2] == ["enc.weight", "dec.weight"]
    with pytest.raises(TypeError, match="not a Module"):
        Sequential(Linear(2, 2), np.zeros(2))


class Doubler(Module):
    """y = 2 x, with a backward that knows nothing of input_grad."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad


def test_sequential_input_grad_false_skips_the_first_module_input_gradient():
    rnnx.manual_seed(0)
    model = Sequential(Linear(4, 5, dtype=np.float64), Dropout(0.5), Linear(5, 3, dtype=np.float64))
    x = np.random.default_rng(0).standard_normal((6, 4))
    g = np.random.default_rng(1).standard_normal((6, 3))
    rnnx.manual_seed(1)
    model(x)
    grad_x = model.backward(g)
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    rnnx.manual_seed(1)
    model(x)
    assert model.backward(g, input_grad=False) is None
    for p, expected in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, expected)
    assert grad_x is not None
    # a first module of one's own, without input_grad, is asked for its gradient as usual
    custom = Sequential(Doubler(), Linear(4, 3, dtype=np.float64))
    custom(x)
    np.testing.assert_allclose(custom.backward(g, input_grad=False),
                               2 * g @ custom[1].weight.data)


def test_children_and_apply_walk_the_tree_as_torch():
    model = Sequential(rnnx.LSTM(2, 3), LastHidden(), Sequential(Linear(3, 3), Linear(3, 1)))
    assert [n for n, _ in model.named_children()] == ["0", "1", "2"]
    assert [m for _, m in model.named_children()] == list(model.children())
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == ["LSTM", "LastHidden", "Linear", "Linear", "Sequential", "Sequential"]

    def zero_linear_biases(m):
        if isinstance(m, Linear):
            m.bias.data[...] = 0

    model.apply(zero_linear_biases)
    assert not model[2][0].bias.data.any() and not model[2][1].bias.data.any()


def test_to_casts_every_module_like_a_model_built_in_that_dtype():
    rnnx.manual_seed(0)
    m32 = Sequential(rnnx.LSTM(3, 4, 2, batch_first=True), LastHidden(), Dropout(0.5),
                     Linear(4, 2))
    rnnx.manual_seed(0)
    m64 = Sequential(rnnx.LSTM(3, 4, 2, batch_first=True, dtype=np.float64), LastHidden(),
                     Dropout(0.5), Linear(4, 2, dtype=np.float64))
    m64.load_state_dict(m32.state_dict())
    loss = CrossEntropyLoss(weight=np.array([1.0, 2.0], np.float32))
    assert m32.to("cpu") is m32 and m32.to(dtype=None) is m32
    assert m32.to("cpu", np.float64) is m32 and loss.double() is loss
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m32.parameters())
    assert m32[0].dtype == np.float64 and m32[3].dtype == np.float64 and m32[2].dtype is None
    assert loss.weight.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 6, 3))
    y = np.array([0, 1, 1, 0, 1])
    for m in (m32, m64):
        m.eval()
    np.testing.assert_array_equal(m32(x), m64(x))
    m32.train()
    rnnx.manual_seed(1)
    loss(m32(x), y)
    m32.backward(loss.backward())
    assert all(p.grad.dtype == np.float64 for p in m32.parameters())
    assert m32.float()[0].weight_ih_l0.dtype == np.float32
    m32(x)
    with pytest.raises(RuntimeError, match="records pending"):
        m32.double()
    m32.clear_records()
    with pytest.raises(ValueError, match="CPU only"):
        m32.to("cuda")
    with pytest.raises(TypeError, match="float32 or float64"):
        m32.to(np.int32)


def test_sequential_records_are_lifo_and_eval_records_nothing():
    model = Sequential(Linear(3, 2, dtype=np.float64), Linear(2, 2, dtype=np.float64))
    x1, x2 = np.ones((1, 3)), np.full((1, 3), 2.0)
    outputs = model(x1), model(x2)  # noqa: F841 - kept: a record lives as long as its output
    g = np.array([[1.0, -1.0]])
    W = model[1].weight.data @ model[0].weight.data
    np.testing.assert_allclose(model.backward(g), g @ W)
    np.testing.assert_allclose(model.backward(g), g @ W)
    np.testing.assert_allclose(model[0].weight.grad, (model[1].weight.data.T @ g.T) @ (x1 + x2))
    model.eval()
    model(x1)
    assert all(not m._records for m in model.modules())
    with pytest.raises(RuntimeError, match="Sequential.backward"):
        model.backward(g)


@pytest.mark.parametrize("lstm", [False, True])
def test_sequential_recurrent_convention_with_last_hidden(lstm):
    rnnx.manual_seed(1)
    rnn = FakeRecurrent(layers=2, lstm=lstm)
    head = Linear(3, 2, dtype=np.float64)
    model = Sequential(rnn, LastHidden(), head)
    x = np.random.default_rng(2).standard_normal((4, 5, 3))  # (T, B, F)
    y = model(x)
    np.testing.assert_allclose(y, head.eval()(2 * x.sum(0)))  # last layer of h_n
    head.train()
    g = np.random.default_rng(3).standard_normal((5, 2))
    grad_x = model.backward(g)
    grad_out, grad_state = rnn.calls[-1]
    assert grad_out is None
    grad_h = grad_state[0] if lstm else grad_state
    if lstm:
        assert grad_state[1] is None
    assert grad_h.shape == (2, 5, 3) and not grad_h[0].any()
    np.testing.assert_allclose(grad_h[1], g @ head.weight.data)
    np.testing.assert_allclose(grad_x, np.broadcast_to(2 * g @ head.weight.data, x.shape))


def test_sequential_with_tuple_output_passes_gradient_structure():
    rnn = FakeRecurrent(layers=1)
    model = Sequential(rnn)
    x = np.ones((2, 1, 3))
    out, h_n = model(x)
    assert out.shape == (2, 1, 3) and h_n.shape == (1, 1, 3)
    grad_h = np.ones((1, 1, 3))
    grad_x = model.backward(None, grad_h)  # array input: only grad_x is passed back
    assert rnn.calls[-1][0] is None and rnn.calls[-1][1] is grad_h
    np.testing.assert_allclose(grad_x, np.ones((2, 1, 3)))
    seq_in_tuple = Sequential(LastTimeStep())  # input was a tuple: the tuple gradient is returned
    seq_in_tuple((np.ones((2, 1, 3)), None))
    assert seq_in_tuple.backward(np.ones((1, 3)))[1] is None


def test_last_hidden_bidirectional_unbatched_and_errors():
    h_n = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)  # 2 layers x 2 directions
    adapter = LastHidden(bidirectional=True)
    out = adapter((None, h_n))
    np.testing.assert_array_equal(out, np.concatenate([h_n[2], h_n[3]], axis=-1))
    g = np.arange(12.0).reshape(2, 6)
    none, grad_h = adapter.backward(g)
    assert none is None and grad_h.dtype == np.float32 and not grad_h[:2].any()
    np.testing.assert_array_equal(grad_h[2], g[:, :3])
    np.testing.assert_array_equal(grad_h[3], g[:, 3:])
    unbatched = LastHidden(bidirectional=True)
    np.testing.assert_array_equal(unbatched((None, h_n[:, 0])), np.concatenate([h_n[2, 0], h_n[3, 0]]))
    assert unbatched.backward(np.ones(6))[1].shape == (4, 3)
    with pytest.raises(TypeError, match="recurrent layer's output"):
        LastHidden()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="h_n must have shape"):
        LastHidden(bidirectional=True)((None, np.zeros((3, 2, 4))))
    adapter((None, h_n))
    with pytest.raises(ValueError, match=r"expected grad of shape \(2, 6\), got \(2, 3\)"):
        adapter.backward(np.zeros((2, 3)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_last_time_step(batch_first):
    out = np.random.default_rng(0).standard_normal((4, 5, 3))
    adapter = LastTimeStep(batch_first=batch_first)
    y = adapter((out, None))
    np.testing.assert_array_equal(y, out[:, -1] if batch_first else out[-1])
    g = np.ones((4, 3)) if batch_first else np.ones((5, 3))
    grad_out, grad_state = adapter.backward(g)
    assert grad_state is None and grad_out.shape == out.shape and grad_out.sum() == g.sum()
    np.testing.assert_array_equal(grad_out[:, -1] if batch_first else grad_out[-1], g)
    np.testing.assert_array_equal(adapter((out[0], None)), out[0, -1])  # unbatched (T, F)
    with pytest.raises(ValueError, match="expected grad of shape"):
        adapter.backward(np.ones(2))


RECURRENT_CASES = [  # (rnnx class name, kwargs, adapter, head input width)
    ("LSTM", dict(num_layers=2), LastHidden, 16),
    ("GRU", dict(num_layers=2, bidirectional=True), lambda: LastHidden(bidirectional=True), 32),
    ("RNN", dict(batch_first=True), lambda: LastTimeStep(batch_first=True), 16),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs,adapter,width", RECURRENT_CASES)
def test_sequential_recurrent_model_matches_torch(dtype, name, kwargs, adapter, width):
    torch = pytest.importorskip("torch")
    if not hasattr(rnnx, name):
        pytest.skip(f"rnnx.{name} is not available")
    rnnx.manual_seed(0)
    model = Sequential(getattr(rnnx, name)(28, 16, dtype=dtype, **kwargs), adapter(),
                       Linear(width, 10, dtype=dtype))
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    rec = getattr(torch.nn, name)(28, 16, dtype=tdtype, **kwargs)
    lin = torch.nn.Linear(width, 10, dtype=tdtype)
    state = model.state_dict()
    rec.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("0.")})
    lin.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("2.")})

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 28) if kwargs.get("batch_first") else (7, 3, 28)).astype(dtype)
    target = rng.integers(0, 10, 3)
    loss_fn = CrossEntropyLoss(dtype=dtype)
    loss = loss_fn(model(x), target)
    grad_x = model.backward(loss_fn.backward())

    xt = torch.from_numpy(x).requires_grad_()
    out, state_t = rec(xt)
    if name == "RNN":
        feat = out[:, -1]
    else:
        h_n = state_t[0] if name == "LSTM" else state_t
        feat = torch.cat([h_n[-2], h_n[-1]], dim=-1) if kwargs.get("bidirectional") else h_n[-1]
    ref = torch.nn.functional.cross_entropy(lin(feat), torch.from_numpy(target))
    ref.backward()

    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, ref.item(), **tol)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), **tol)
    ref_grads = {f"0.{k}": p.grad for k, p in rec.named_parameters()}
    ref_grads.update({f"2.{k}": p.grad for k, p in lin.named_parameters()})
    for k, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, ref_grads[k].numpy(), err_msg=k, **tol)
