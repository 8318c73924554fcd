"""Truncated BPTT: chunked training equals torch's detach-per-chunk pattern."""
import numpy as np
import pytest

import rnnx
from rnnx.utils import time_chunks


def test_time_chunks_split_and_errors():
    x = np.arange(7 * 2).reshape(7, 2)
    chunks = list(time_chunks(x, 3))
    assert [c.shape[0] for c in chunks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    xb = np.zeros((2, 7, 3))
    assert [c.shape[1] for c in time_chunks(xb, 4, batch_first=True)] == [4, 3]
    with pytest.raises(ValueError, match="chunk_len"):
        list(time_chunks(x, 0))


def test_single_chunk_equals_full_bptt():
    lstm = rnnx.LSTM(3, 4, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    out, _ = lstm(x)
    g = np.ones_like(out)
    lstm.backward(g, None)
    full = [p.grad.copy() for p in lstm.parameters()]
    lstm.zero_grad()
    for chunk in time_chunks(x, 6):
        out, _ = lstm(chunk)
        lstm.backward(np.ones_like(out), None)
    for a, p in zip(full, lstm.parameters()):
        np.testing.assert_array_equal(a, p.grad)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_tbptt_matches_torch_detach(name):
    torch = pytest.importorskip("torch")
    T, B, I, H, K = 10, 3, 4, 5, 4
    tm = getattr(torch.nn, name)(I, H, num_layers=2).double()
    m = getattr(rnnx, name)(I, H, num_layers=2, dtype=np.float64)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    w = rng.standard_normal((T, B, H))

    state_t = None
    for xc, wc in zip(time_chunks(x, K), time_chunks(w, K)):
        out_t, state_t = tm(torch.tensor(xc), state_t)
        (out_t * torch.tensor(wc)).sum().backward()
        state_t = tuple(s.detach() for s in state_t) if name == "LSTM" else state_t.detach()

    state = None
    for xc, wc in zip(time_chunks(x, K), time_chunks(w, K)):
        out, state = m(xc, state)
        m.backward(wc, None)
    for k, p in tm.named_parameters():
        np.testing.assert_allclose(getattr(m, k).grad, p.grad.numpy(), rtol=1e-10, atol=1e-12)
