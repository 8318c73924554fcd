"""MeanOverTime, MaxOverTime and LastTimeStep over each sequence's valid steps, lengths= and
PackedSequence through a Sequential, and the text classifier Embedding -> bidirectional GRU ->
pooling -> Linear, against PyTorch's masked equivalents and finite differences."""
import numpy as np
import pytest

import rnnx
from rnnx import (GRU, Embedding, LastHidden, LastTimeStep, Linear, MaxOverTime, MeanOverTime,
                  Sequential)
from rnnx.utils.rnn import pack_padded_sequence

POOLS = [MeanOverTime, MaxOverTime, LastTimeStep]
LENGTHS = np.array([3, 5, 1, 4])


def _steps(dtype, batch_first, T=5, B=4, F=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, T, F) if batch_first else (T, B, F)
    return rng.standard_normal(shape).astype(dtype)


def _torch_pool(torch, cls, x, lengths, batch_first):
    """PyTorch's masked form of the reduction of x (a leaf tensor)."""
    steps = x.transpose(0, 1) if batch_first else x
    T, B = steps.shape[:2]
    lens = torch.as_tensor(lengths)
    mask = (torch.arange(T)[:, None] < lens[None, :])[..., None]
    if cls is MeanOverTime:
        return (steps * mask).sum(0) / lens[:, None].to(x.dtype)
    if cls is MaxOverTime:
        return steps.masked_fill(~mask, float("-inf")).amax(0)
    return steps[lens - 1, torch.arange(B)]


@pytest.mark.parametrize("cls", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pooling_matches_torch_masked(cls, dtype, batch_first):
    torch = pytest.importorskip("torch")
    x = _steps(dtype, batch_first)
    pool = cls(batch_first=batch_first)
    y = pool((x, None), lengths=LENGTHS)
    assert y.dtype == dtype and y.shape == (4, 3)
    tx = torch.tensor(x, requires_grad=True)
    ty = _torch_pool(torch, cls, tx, LENGTHS, batch_first)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    ty.backward(torch.tensor(g))
    grad_x, grad_state = pool.backward(g)
    assert grad_state is None and grad_x.dtype == dtype
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("cls", POOLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_pooling_gradient_matches_finite_differences(cls, batch_first):
    x = _steps(np.float64, batch_first, seed=2)
    w = np.random.default_rng(3).standard_normal((4, 3))
    pool = cls(batch_first=batch_first)
    pool(x, lengths=LENGTHS)
    grad = pool.backward(w)          # d sum(w * pool(x)) / dx; the steps alone in, alone out
    numeric = np.zeros_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        with rnnx.no_grad():
            numeric[i] = (np.sum(w * pool(up, lengths=LENGTHS))
                          - np.sum(w * pool(down, lengths=LENGTHS))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    padded = np.arange(x.shape[1 if batch_first else 0])[:, None] >= LENGTHS[None, :]
    padded = padded.T if batch_first else padded
    assert not grad[padded].any()    # no gradient past each end


@pytest.mark.parametrize("cls", POOLS)
def test_pooling_packed_equals_padded_with_lengths(cls):
    x = _steps(np.float32, True)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    pool = cls()
    y = pool(packed)
    np.testing.assert_array_equal(y, cls(batch_first=True)(x, lengths=LENGTHS))
    g = np.ones_like(y)
    grad = pool.backward(g)
    assert isinstance(grad, rnnx.PackedSequence)
    np.testing.assert_array_equal(grad.batch_sizes, packed.batch_sizes)
    expected = cls(batch_first=True)
    expected(x, lengths=LENGTHS)
    want = pack_padded_sequence(expected.backward(g), LENGTHS, batch_first=True,
                                enforce_sorted=False)
    np.testing.assert_array_equal(grad.data, want.data)
    with pytest.raises(ValueError, match="lengths must be None when the input is a Packed"):
        pool(packed, lengths=LENGTHS)


def test_pooling_unbatched_and_without_lengths():
    x = _steps(np.float64, False)
    np.testing.assert_allclose(MeanOverTime()(x), x.mean(0))
    np.testing.assert_allclose(MaxOverTime()(x), x.max(0))
    np.testing.assert_array_equal(LastTimeStep()(x), x[-1])
    pool = MeanOverTime()
    np.testing.assert_allclose(pool(x[:, 0]), x[:, 0].mean(0))     # unbatched (T, F)
    np.testing.assert_allclose(pool.backward(np.ones(3)), np.full((5, 3), 0.2))
    with pytest.raises(ValueError, match="unbatched"):
        pool(x[:, 0], lengths=[2])
    pool(x, lengths=LENGTHS)
    with pytest.raises(ValueError, match=r"expected grad of shape \(4, 3\), got \(3,\)"):
        pool.backward(np.ones(3))
    assert pool.backward(np.ones((4, 3)), input_grad=False) is None
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\]"):
        MaxOverTime()(x, lengths=[1, 2, 6, 1])
    with pytest.raises(TypeError, match="floating-point"):
        MeanOverTime()(np.zeros((2, 3, 4), int))


# -- lengths= and PackedSequence through a Sequential ---------------------------------------
V, E, H, C = 20, 6, 5, 3


def text_classifier(pool, dtype=np.float32, seed=0):
    rnnx.manual_seed(seed)
    return Sequential(Embedding(V, E, padding_idx=0, dtype=dtype),
                      GRU(E, H, num_layers=2, batch_first=True, bidirectional=True, dtype=dtype),
                      pool, Linear(2 * H, C, dtype=dtype))


def _tokens(lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, V, size=(len(lengths), T))
    tokens[np.arange(T)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return tokens


@pytest.mark.parametrize("pool", ["last_hidden", "mean", "max"])
def test_text_classifier_with_lengths_matches_torch(pool):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    adapter = {"last_hidden": LastHidden(), "mean": MeanOverTime(batch_first=True),
               "max": MaxOverTime(batch_first=True)}[pool]
    model = text_classifier(adapter, np.float64)
    tokens = _tokens(LENGTHS, 6)
    logits = model(tokens, lengths=LENGTHS)
    g = np.random.default_rng(4).standard_normal(logits.shape)
    assert model.backward(g, input_grad=False) is None

    emb, gru, lin = nn.Embedding(V, E, padding_idx=0), nn.GRU(E, H, 2, batch_first=True,
                                                            bidirectional=True), nn.Linear(2 * H, C)
    for tm, m in ((emb, model[0]), (gru, model[1]), (lin, model[3])):
        tm.double().load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    lens = torch.as_tensor(LENGTHS)
    packed = nn.utils.rnn.pack_padded_sequence(emb(torch.from_numpy(tokens)), lens,
                                               batch_first=True, enforce_sorted=False)
    out, h_n = gru(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=6)
    if pool == "last_hidden":
        features = torch.cat([h_n[-2], h_n[-1]], 1)
    else:
        features = _torch_pool(torch, type(adapter), out, LENGTHS, True)
    t_logits = lin(features)
    t_logits.backward(torch.from_numpy(g))
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), tm in zip(model.named_parameters(),
                             [*emb.parameters(), *gru.parameters(), *lin.parameters()]):
        np.testing.assert_allclose(p.grad, tm.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_packed_sequence_flows_through_sequential():
    padded_model = text_classifier(MeanOverTime(batch_first=True))
    packed_model = text_classifier(MeanOverTime())
    tokens = _tokens(LENGTHS, 6)
    packed = pack_padded_sequence(tokens, LENGTHS, batch_first=True, enforce_sorted=False)
    a = padded_model(tokens, lengths=LENGTHS)
    b = packed_model(packed)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    g = np.ones_like(a)
    padded_model.backward(g, input_grad=False)
    packed_model.backward(g, input_grad=False)
    for (name, p), q in zip(padded_model.named_parameters(), packed_model.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6, err_msg=name)


def test_sequential_lengths_errors():
    with pytest.raises(TypeError, match="none of its modules takes it.*accepts_lengths = True"):
        Sequential(Linear(3, 2), rnnx.ReLU())(np.zeros((2, 3), np.float32), lengths=[1, 1])

    class Reverse(rnnx.Module):  # neither accepts_lengths nor acts_per_position
        def forward(self, x):
            return x[::-1]

    packed = pack_padded_sequence(np.ones((3, 2, 4), np.float32), [3, 2])
    with pytest.raises(TypeError, match=r"module 1 \(Reverse\) cannot take a PackedSequence"):
        Sequential(Linear(4, 4), Reverse())(packed)  # Linear: applied to the packed data
    with pytest.raises(TypeError, match=r"module 0 \(Reverse\) cannot take a PackedSequence"):
        Sequential(Reverse(), rnnx.GRU(4, 4))(packed)


def test_last_hidden_never_returns_half_of_a_bidirectional_state():
    gru = GRU(4, 3, num_layers=2, bidirectional=True)
    out, h_n = gru(np.ones((5, 2, 4), np.float32))
    np.testing.assert_array_equal(LastHidden()((out, h_n)), np.concatenate([h_n[2], h_n[3]], 1))
    with pytest.raises(ValueError, match=r"LastHidden\(bidirectional=False\) after a "
                                         r"bidirectional layer: use LastHidden\(\)"):
        LastHidden(bidirectional=False)((out, h_n))
    uni_out, uni_h = GRU(4, 3, num_layers=2)(np.ones((5, 2, 4), np.float32))
    np.testing.assert_array_equal(LastHidden()((uni_out, uni_h)), uni_h[-1])
    with pytest.raises(ValueError, match="after a unidirectional layer"):
        LastHidden(bidirectional=True)((uni_out, uni_h))
    with pytest.raises(ValueError, match="bidirectional=True/False"):
        LastHidden()((None, h_n))
    # the first model: Linear(2 * H, C) fits what LastHidden() gives
    model = Sequential(Embedding(10, 4), GRU(4, 3, bidirectional=True), LastHidden(),
                       Linear(6, 2))
    assert model(np.ones((5, 2), int), lengths=[5, 2]).shape == (2, 2)


def test_text_classifier_learns_from_tokens_far_from_the_end():
    """The label is the first token's class; sequences are 12-24 tokens long (padded to 24):
    a plain Sequential trained with lengths= must carry it across the whole sequence."""
    rng = np.random.default_rng(0)
    N, T, vocab = 384, 24, 12
    lengths = rng.integers(12, T + 1, size=N)
    tokens = rng.integers(3, vocab, size=(N, T))
    labels = rng.integers(0, 2, size=N)
    tokens[:, 0] = labels + 1                      # token 1 or 2 at the start decides
    tokens[np.arange(T)[None, :] >= lengths[:, None]] = 0
    rnnx.manual_seed(0)
    model = Sequential(Embedding(vocab, 8, padding_idx=0),
                       GRU(8, 12, batch_first=True, bidirectional=True), LastHidden(),
                       Linear(24, 2))
    trainer = rnnx.Trainer(model, rnnx.Adam(model.parameters(), lr=0.03), batch_size=32,
                           stream=open("/dev/null", "w"), seed=0)
    history = trainer.fit(tokens[:256], labels[:256], 4, lengths=lengths[:256],
                          eval_data=(tokens[256:], labels[256:], lengths[256:]))
    assert history[-1]["test_accuracy"] >= 0.95, history
