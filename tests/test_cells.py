"""Cells: torch parity, exact BPTT over a Python loop, finite differences, error paths."""
import numpy as np
import pytest

import rnnx

CELLS = [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {"nonlinearity": "tanh"}),
         ("RNNCell", {"nonlinearity": "relu"})]


def make_pair(name, kw, I, H, bias=True):
    torch = pytest.importorskip("torch")
    tcell = getattr(torch.nn, name)(I, H, bias=bias, **kw).double()
    cell = getattr(rnnx, name)(I, H, bias=bias, dtype=np.float64, **kw)
    cell.load_state_dict({k: v.detach().numpy() for k, v in tcell.state_dict().items()})
    return cell, tcell


@pytest.mark.parametrize("name,kw", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_cell_loop_matches_torch_bptt(name, kw, bias, batched):
    """T cell steps in a loop, backward T times in reverse: exact BPTT grads as torch."""
    torch = pytest.importorskip("torch")
    T, B, I, H = 4, 3, 5, 6
    cell, tcell = make_pair(name, kw, I, H, bias)
    assert [k for k, _ in cell.named_parameters()] == list(tcell.state_dict())
    rng = np.random.default_rng(0)
    shape = (B,) if batched else ()
    xs = rng.standard_normal((T,) + shape + (I,))
    h0 = rng.standard_normal(shape + (H,))
    c0 = rng.standard_normal(shape + (H,))
    gouts = rng.standard_normal((T,) + shape + (H,))
    lstm = name == "LSTMCell"

    xt = torch.tensor(xs, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    state_t = (h0t, c0t) if lstm else h0t
    state = (h0, c0) if lstm else h0
    loss = 0
    for t in range(T):
        state_t = tcell(xt[t], state_t)
        state = cell(xs[t], state)
        ht = state_t[0] if lstm else state_t
        h = state[0] if lstm else state
        np.testing.assert_allclose(h, ht.detach().numpy(), rtol=1e-12, atol=1e-12)
        loss = loss + (ht * torch.tensor(gouts[t])).sum()
    loss.backward()

    grad_x = np.zeros_like(xs)
    carry = (None, None) if lstm else None
    for t in reversed(range(T)):
        if lstm:
            gh = gouts[t] if carry[0] is None else gouts[t] + carry[0]
            grad_x[t], carry = cell.backward((gh, carry[1]))
        else:
            gh = gouts[t] if carry is None else gouts[t] + carry
            grad_x[t], carry = cell.backward(gh)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    grad_h0 = carry[0] if lstm else carry
    np.testing.assert_allclose(grad_h0, h0t.grad.numpy(), rtol=1e-10, atol=1e-12)
    if lstm:
        np.testing.assert_allclose(carry[1], c0t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, p in tcell.named_parameters():
        np.testing.assert_allclose(getattr(cell, k).grad, p.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kw", CELLS)
def test_cell_equals_one_step_sequence_module(name, kw):
    """A cell step equals the matching sequence module run for one step, float32 too."""
    I, H, B = 4, 5, 3
    cell = getattr(rnnx, name)(I, H, **kw)
    seq_name = name.replace("Cell", "")
    seq = getattr(rnnx, seq_name)(I, H, **kw)
    seq.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    if name == "LSTMCell":
        c = rng.standard_normal((B, H)).astype(np.float32)
        h1, c1 = cell(x, (h, c))
        _, (hn, cn) = seq(x[None], (h[None], c[None]))
        np.testing.assert_array_equal(c1, cn[0])
    else:
        h1 = cell(x, h)
        _, hn = seq(x[None], h[None])
    np.testing.assert_array_equal(h1, hn[0])


@pytest.mark.parametrize("name,kw", CELLS)
def test_cell_finite_differences(name, kw):
    I, H, B = 3, 4, 2
    rnnx.manual_seed(2)  # fixed weights: a ReLU pre-activation within eps of 0 would fail
    cell = getattr(rnnx, name)(I, H, dtype=np.float64, **kw)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, I))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H))
    wh, wc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    lstm = name == "LSTMCell"

    def objective():
        cell.eval()
        out = cell(x, (h, c) if lstm else h)
        cell.train()
        return float((out[0] * wh).sum() + (out[1] * wc).sum()) if lstm else float((out * wh).sum())

    cell.zero_grad()
    cell(x, (h, c) if lstm else h)
    gx, gs = cell.backward((wh, wc) if lstm else wh)
    eps = 1e-6
    targets = [(x, gx), (h, gs[0] if lstm else gs)] + ([(c, gs[1])] if lstm else [])
    targets += [(p.data, p.grad) for p in cell.parameters()]
    for arr, grad in targets:
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = objective()
            arr[idx] = old - eps
            down = objective()
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kw", CELLS)
def test_cell_backward_without_input_grad(name, kw):
    """input_grad=False: grad_x is None, the state and parameter gradients are unchanged."""
    rnnx.manual_seed(0)
    cell = getattr(rnnx.nn, name)(3, 4, **kw)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    grad = (g, g) if name == "LSTMCell" else g
    results = []
    for input_grad in (True, False):
        cell.zero_grad()
        cell(x)
        gx, gstate = cell.backward(grad, input_grad=input_grad)
        results.append((gx, gstate, [p.grad.copy() for p in cell.parameters()]))
    (gx1, s1, p1), (gx2, s2, p2) = results
    assert gx1 is not None and gx2 is None
    for a, b in zip(s1, s2) if name == "LSTMCell" else [(s1, s2)]:
        np.testing.assert_array_equal(a, b)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
    cell(x[0])
    gx, _ = cell.backward((g[0], None) if name == "LSTMCell" else g[0], input_grad=False)
    assert gx is None


def test_cell_errors():
    cell = rnnx.LSTMCell(4, 5)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="inconsistent input_size: got 3 expected 4"):
        cell(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="inconsistent hidden_size: got 4, expected 5"):
        cell(np.zeros((2, 4)), (np.zeros((2, 4)), np.zeros((2, 5))))
    with pytest.raises(ValueError, match="Input batch size 2 doesn't match hx batch size 3"):
        cell(np.zeros((2, 4)), (np.zeros((3, 5)), np.zeros((3, 5))))
    with pytest.raises(ValueError, match="Expected hx to be 2D, got 1D"):
        cell(np.zeros((2, 4)), (np.zeros(5), np.zeros(5)))
    with pytest.raises(TypeError, match="tuple"):
        cell(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(TypeError, match="floating-point"):
        cell(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="floating-point"):
        cell(np.zeros((2, 4), np.complex64))
    with pytest.raises(ValueError, match="non-empty"):
        cell(np.zeros((0, 4), np.float32))
    with pytest.raises(RuntimeError, match="without a pending forward"):
        cell.backward((np.zeros((2, 5)), None))
    cell(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected grad_h of shape \(2, 5\), got \(2, 3\)"):
        cell.backward((np.zeros((2, 3)), None))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        rnnx.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        rnnx.GRUCell(3, 0)
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        rnnx.GRUCell(3, 2.5)
    with pytest.raises(TypeError, match="dtype"):
        rnnx.GRUCell(3, 2, dtype=np.int32)
    gru = rnnx.GRUCell(3, 4)
    gru.eval()
    gru(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError):
        gru.backward(np.zeros((2, 4), np.float32))


def test_cell_loop_over_padded_batch_matches_lengths():
    """The padded-batch pattern for cells: a finished sequence keeps its state
    (h = where(alive, h_new, h)), and backward routes the gradient the same way. It gives
    the sequence module's results with lengths= exactly (up to float rounding)."""
    T, B, I, H = 5, 3, 4, 6
    lengths = np.array([4, 2, 5])
    lstm = rnnx.LSTM(I, H, dtype=np.float64)
    cell = rnnx.LSTMCell(I, H, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    gh_n, gc_n = rng.standard_normal((B, H)), rng.standard_normal((B, H))

    _, (h_n, c_n) = lstm(x, lengths=lengths)
    gx_ref, _ = lstm.backward(None, (gh_n[None], gc_n[None]))

    h = c = np.zeros((B, H))
    alive = [(t < lengths)[:, None] for t in range(T)]
    for t in range(T):
        h1, c1 = cell(x[t], (h, c))
        h, c = np.where(alive[t], h1, h), np.where(alive[t], c1, c)
    np.testing.assert_allclose(h, h_n[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, c_n[0], rtol=1e-12, atol=1e-14)

    gh, gc = gh_n, gc_n
    gx = np.zeros_like(x)
    for t in reversed(range(T)):
        gx[t], (dh, dc) = cell.backward((gh * alive[t], gc * alive[t]))
        gh, gc = dh + gh * ~alive[t], dc + gc * ~alive[t]
        gx[t] *= alive[t]
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-12)
    for name, p in cell.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(lstm, name + "_l0").grad, rtol=1e-10,
                                   atol=1e-12)
