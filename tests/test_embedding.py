"""Embedding: forward, backward, padding_idx, max_norm, scale_grad_by_freq, from_pretrained,
against torch.nn.Embedding and finite differences; error paths."""
import numpy as np
import pytest

import rnnx
from rnnx import Embedding

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
CASES = [dict(), dict(padding_idx=3), dict(padding_idx=-2), dict(scale_grad_by_freq=True),
         dict(padding_idx=0, scale_grad_by_freq=True), dict(max_norm=1.0),
         dict(max_norm=0.5, norm_type=1.0, padding_idx=4), dict(max_norm=1.5, norm_type=np.inf)]


def indices(rng, shape, n=7):
    idx = rng.integers(0, n, shape)
    idx.flat[:3] = 3  # repeated rows (and a padding row for padding_idx=3)
    return idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", CASES,
                         ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "plain")
def test_matches_torch(kwargs, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    emb = Embedding(7, 5, dtype=dtype, **kwargs)
    ref = torch.nn.Embedding(7, 5, dtype=getattr(torch, np.dtype(dtype).name), **kwargs)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(emb.weight.data.copy()))
    for shape in [(4, 6), (3,), (2, 3, 2), ()]:
        idx = indices(rng, shape)
        grad = rng.standard_normal(shape + (5,)).astype(dtype)
        out = emb(idx)
        tout = ref(torch.from_numpy(idx))
        tout.backward(torch.from_numpy(grad))
        assert emb.backward(grad) is None
        assert out.dtype == dtype and out.shape == shape + (5,)
        np.testing.assert_allclose(out, tout.detach().numpy(), **TOL[dtype])
        np.testing.assert_allclose(emb.weight.data, ref.weight.detach().numpy(), **TOL[dtype])
        np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy(), **TOL[dtype])
    if dtype == np.float32:
        assert repr(emb) == repr(ref)


def test_init_and_padding_row():
    rnnx.manual_seed(0)
    emb = Embedding(400, 50, padding_idx=-1)
    w = emb.weight.data
    assert emb.padding_idx == 399 and w.dtype == np.float32 and w.shape == (400, 50)
    np.testing.assert_array_equal(w[399], 0.0)
    assert abs(w[:399].mean()) < 0.02 and abs(w[:399].std() - 1) < 0.02  # N(0, 1)
    rnnx.manual_seed(0)
    np.testing.assert_array_equal(Embedding(400, 50, padding_idx=-1).weight.data, w)
    assert Embedding(3, 2, dtype="float64").weight.dtype == np.float64


def test_backward_touches_only_looked_up_rows_and_accumulates():
    rng = np.random.default_rng(1)
    emb = Embedding(10, 3, padding_idx=2, dtype=np.float64)
    idx = np.array([[1, 2, 1], [5, 1, 2]])
    g = rng.standard_normal((2, 3, 3))
    emb(idx)
    emb.backward(g)
    want = np.zeros((10, 3))
    want[1] = g[0, 0] + g[0, 2] + g[1, 1]
    want[5] = g[1, 0]
    np.testing.assert_allclose(emb.weight.grad, want, rtol=1e-15)
    emb(idx)
    emb.backward(g)
    np.testing.assert_allclose(emb.weight.grad, 2 * want, rtol=1e-15)
    emb.zero_grad()
    emb(np.array([2, 2]))  # padding rows only: nothing accumulated, grad allocated all zero
    emb.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(emb.weight.grad, 0.0)


def test_finite_differences_scale_grad_by_freq():
    rng = np.random.default_rng(2)
    emb = Embedding(6, 4, scale_grad_by_freq=True, padding_idx=0, dtype=np.float64)
    idx = np.array([[1, 1, 0], [4, 1, 3]])
    g = rng.standard_normal((2, 3, 4))
    emb(idx)
    emb.backward(g)
    # d(sum g * emb(idx)) / dw by central differences, divided by each row's count in the
    # batch: what scale_grad_by_freq accumulates.
    emb.eval()
    w = emb.weight.data
    eps = 1e-6
    counts = np.bincount(idx.ravel(), minlength=6)
    numeric = np.zeros_like(w)
    for i in range(6):
        for j in range(4):
            old = w[i, j]
            w[i, j] = old + eps
            up = (g * emb(idx)).sum()
            w[i, j] = old - eps
            down = (g * emb(idx)).sum()
            w[i, j] = old
            numeric[i, j] = (up - down) / (2 * eps) / max(counts[i], 1)
    numeric[0] = 0  # padding_idx
    np.testing.assert_allclose(emb.weight.grad, numeric, rtol=1e-7, atol=1e-9)


def test_max_norm_renormalises_in_place_in_every_mode():
    emb = Embedding(5, 3, max_norm=1.0, dtype=np.float64)
    emb.weight.data[...] = np.arange(15.0).reshape(5, 3)
    with rnnx.no_grad():
        out = emb.eval()(np.array([2, 2, 0]))
    norms = np.linalg.norm(emb.weight.data, axis=1)
    np.testing.assert_allclose(norms[[0, 2]], 1.0, rtol=1e-6)
    untouched = [1, 3, 4]
    np.testing.assert_array_equal(emb.weight.data[untouched],
                                  np.arange(15.0).reshape(5, 3)[untouched])
    np.testing.assert_array_equal(out[0], emb.weight.data[2])
    small = Embedding(2, 2, max_norm=10.0, _weight=np.ones((2, 2)))
    small(np.array([0, 1]))
    np.testing.assert_array_equal(small.weight.data, 1.0)  # norms below max_norm: unchanged


@pytest.mark.parametrize("max_norm", [-1.0, -0.0 - 1e-300, float("nan"), "nan"])
def test_max_norm_negative_or_nan_is_refused(max_norm):
    """A negative max_norm used to flip the looked-up rows' signs in place, a NaN one to do
    nothing; both are refused at construction (0 and inf are valid)."""
    with pytest.raises(ValueError, match="max_norm must be a non-negative number or None"):
        Embedding(5, 3, max_norm=max_norm)
    with pytest.raises(ValueError, match="max_norm must be a non-negative number"):
        Embedding.from_pretrained(np.ones((2, 2)), max_norm=max_norm)
    assert Embedding(2, 2, max_norm=0).max_norm == 0.0
    assert Embedding(2, 2, max_norm=np.inf).max_norm == np.inf


def test_from_pretrained():
    w = np.arange(12.0).reshape(4, 3)
    emb = Embedding.from_pretrained(w)
    assert emb.weight.data is w or np.shares_memory(emb.weight.data, w)  # shared, as torch's
    assert not emb.weight.requires_grad and emb.weight.dtype == np.float64
    np.testing.assert_array_equal(emb(np.array([3, 0])), w[[3, 0]])
    emb.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(emb.weight.grad, 0.0)  # frozen: nothing accumulated
    trainable = Embedding.from_pretrained(w.astype(np.float32), freeze=False, padding_idx=1)
    assert trainable.weight.requires_grad and trainable.weight.dtype == np.float32
    np.testing.assert_array_equal(trainable.weight.data[1], [3, 4, 5])  # padding row kept
    with pytest.raises(ValueError, match="2-dimensional"):
        Embedding.from_pretrained(np.zeros(3))


def test_from_pretrained_matches_torch():
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(3).standard_normal((6, 2)).astype(np.float32)
    emb = Embedding.from_pretrained(w.copy(), freeze=False, padding_idx=2, max_norm=1.0)
    ref = torch.nn.Embedding.from_pretrained(torch.from_numpy(w.copy()), freeze=False,
                                             padding_idx=2, max_norm=1.0)
    idx = np.array([[0, 2, 5], [5, 1, 2]])
    out, tout = emb(idx), ref(torch.from_numpy(idx))
    tout.sum().backward()
    emb.backward(np.ones_like(out))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy())
    assert repr(emb) == repr(ref)


def test_in_a_model_with_lstm():
    rnnx.manual_seed(0)
    rng = np.random.default_rng(4)
    model = rnnx.Sequential(Embedding(20, 4, padding_idx=0), rnnx.LSTM(4, 5, batch_first=True),
                            rnnx.LastHidden(), rnnx.Linear(5, 3))
    loss_fn = rnnx.CrossEntropyLoss()
    opt = rnnx.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x = rng.integers(1, 20, (8, 6))
    y = x[:, -1] % 3  # learnable from the last token
    losses = []
    for _ in range(40):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), y)))
        assert model.backward(loss_fn.backward(), input_grad=False) is None
        opt.step()
    assert losses[-1] < losses[0] / 10
    assert list(model.state_dict())[0] == "0.weight"
    np.testing.assert_array_equal(model[0].weight.data[0], 0.0)  # the padding row never moves


@pytest.mark.parametrize("bad, error, match", [
    (np.array([0.0, 1.0]), TypeError, "integer indices"),
    (np.array([True, False]), TypeError, "integer indices"),
    (np.array([0, 5]), IndexError, r"index 5 is out of range.*\[0, 4\]"),
    (np.array([[-1, 0]]), IndexError, r"index -1 is out of range"),
    (np.array([7], np.uint64), IndexError, "index 7"),
])
def test_bad_indices(bad, error, match):
    emb = Embedding(5, 2)
    with pytest.raises(error, match=match):
        emb(bad)
    assert not emb._records


def test_bad_arguments_and_gradients():
    with pytest.raises(ValueError, match="Padding_idx must be within num_embeddings"):
        Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match="Padding_idx must be within num_embeddings"):
        Embedding(5, 2, padding_idx=-6)
    with pytest.raises(TypeError, match="padding_idx must be an int"):
        Embedding(5, 2, padding_idx=1.0)
    with pytest.raises(ValueError, match="num_embeddings must be a non-negative int"):
        Embedding(-1, 2)
    with pytest.raises(NotImplementedError, match="sparse"):
        Embedding(5, 2, sparse=True)
    with pytest.raises(ValueError, match="Shape of weight does not match"):
        Embedding(5, 2, _weight=np.zeros((2, 5)))
    with pytest.raises(TypeError, match="float32 or float64"):
        Embedding(5, 2, dtype=np.int64)
    emb = Embedding(5, 2)
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 2\), got \(2, 3\)"):
        emb.backward(np.zeros((2, 3)))
    emb.backward(np.zeros((2, 2)))  # the record survived the rejected gradient
    with pytest.raises(RuntimeError, match="without a pending forward"):
        emb.backward(np.zeros((2, 2)))
