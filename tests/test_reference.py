"""The NumPy oracle (rnnx._reference) on its own, then the kernels against it.

First the oracle is checked independently: hand-computed cells, its backward against
finite differences of its forward, its variable-length semantics against running each
sequence alone, and (when torch is installed) against torch. Then every module option is
run through the Cython kernels and compared with the oracle: outputs, final states and
all gradients, in float32 and float64, over many shapes (hypothesis) and a fixed grid.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnx
from helpers import assert_close
from rnnx import _reference as ref

TOL = {np.float32: 1e-5, np.float64: 1e-12}
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


# ---------------------------------------------------------------------------------------
# helpers

def random_params(mode, I, H, num_layers=1, bidirectional=False, bias=True, proj_size=0,
                  rng=None, scale=0.6):
    """A torch-named parameter dict with U(-scale, scale) entries."""
    rng = rng or np.random.default_rng(0)
    G = ref.NUM_GATES[ref._mode(mode, "tanh")[0]]
    P = proj_size or H
    D = 2 if bidirectional else 1
    params = {}
    for layer in range(num_layers):
        In = I if layer == 0 else D * P
        for d in range(D):
            shapes = {"weight_ih": (G * H, In), "weight_hh": (G * H, P)}
            if bias:
                shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
            if proj_size:
                shapes["weight_hr"] = (P, H)
            for kind, shape in shapes.items():
                params[ref.param_name(kind, layer, d)] = rng.uniform(-scale, scale, shape)
    return params


def make_module(mode, I, H, num_layers=1, bidirectional=False, bias=True, proj_size=0,
                batch_first=False, dtype=np.float64):
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, dtype=dtype)
    if mode == "LSTM":
        return rnnx.LSTM(I, H, proj_size=proj_size, **kw)
    if mode == "GRU":
        return rnnx.GRU(I, H, **kw)
    return rnnx.RNN(I, H, nonlinearity="relu" if mode == "RNN_RELU" else "tanh", **kw)




def compare_with_reference(mode, T, B, I, H, num_layers=1, bidirectional=False, bias=True,
                           proj_size=0, batch_first=False, unbatched=False, dtype=np.float64,
                           with_h0=True, lengths=None, with_grad_out=True, with_grad_h=True,
                           seed=0, param_scale=0.6):
    """Run the module (forward + backward) and the oracle on the same data and compare all."""
    rng = np.random.default_rng(seed)
    lstm = mode == "LSTM"
    m = make_module(mode, I, H, num_layers, bidirectional, bias, proj_size, batch_first, dtype)
    m.load_state_dict(random_params(mode, I, H, num_layers, bidirectional, bias, proj_size, rng,
                                    param_scale))
    params = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    D, P = (2 if bidirectional else 1), (proj_size or H)
    if unbatched:
        B = 1
    LD = num_layers * D
    # data in the module's dtype, so that both sides see exactly the same numbers
    x_tm = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((LD, B, P)).astype(dtype) if with_h0 else None
    c0 = rng.standard_normal((LD, B, H)).astype(dtype) if with_h0 and lstm else None
    go_tm = rng.standard_normal((T, B, D * P)).astype(dtype) if with_grad_out else None
    gh = rng.standard_normal((LD, B, P)).astype(dtype) if with_grad_h else None
    gc = rng.standard_normal((LD, B, H)).astype(dtype) if with_grad_h and lstm else None

    def caller(a):  # time-major (T, B, F) -> the module's input form
        if a is None:
            return None
        if unbatched:
            return a[:, 0]
        return a.transpose(1, 0, 2) if batch_first else a

    def state(a):
        return None if a is None else (a[:, 0] if unbatched else a)

    hx = (state(h0), state(c0)) if lstm and with_h0 else state(h0)
    out, hn = m(caller(x_tm), hx, lengths=lengths)
    grad_state = (state(gh), state(gc)) if lstm else state(gh)
    if lstm and gh is None:
        grad_state = None
    gx, gs = m.backward(caller(go_tm), grad_state)

    r_out, r_hn, r_cn = ref.forward(mode, params, x_tm, h0, c0, num_layers, bidirectional, lengths)
    r = ref.backward(mode, params, x_tm, h0, c0, num_layers, bidirectional, lengths,
                     grad_out=go_tm, grad_h_n=gh, grad_c_n=gc)
    tol = TOL[dtype]
    assert out.dtype == dtype and gx.dtype == dtype
    assert_close(out, caller(r_out), tol, "out")
    if lstm:
        assert_close(hn[0], state(r_hn), tol, "h_n")
        assert_close(hn[1], state(r_cn), tol, "c_n")
        assert_close(gs[0], state(r["h0"]), tol, "grad h0")
        assert_close(gs[1], state(r["c0"]), tol, "grad c0")
    else:
        assert_close(hn, state(r_hn), tol, "h_n")
        assert_close(gs, state(r["h0"]), tol, "grad h0")
    assert_close(gx, caller(r["x"]), tol, "grad x")
    names = [name for name, _ in m.named_parameters()]
    assert sorted(names) == sorted(params)
    for name, p in m.named_parameters():
        assert p.grad.dtype == dtype
        assert_close(p.grad, r[name], tol, f"grad {name}")


# ---------------------------------------------------------------------------------------
# the oracle on its own

def test_cells_by_hand():
    """Zero weights make every gate a known constant."""
    x, h, c = np.array([0.3, -0.2]), np.array([0.5, -1.0, 2.0]), np.array([1.0, -2.0, 0.5])
    H = 3
    z4 = np.zeros((4 * H, 2)), np.zeros((4 * H, H))
    h1, c1, _ = ref.lstm_cell(x, h, c, *z4)  # i = f = o = 1/2, g = 0
    np.testing.assert_allclose(c1, 0.5 * c)
    np.testing.assert_allclose(h1, 0.5 * np.tanh(0.5 * c))
    w_hr = np.array([[1.0, 2.0, 3.0]])
    h1p, _, _ = ref.lstm_cell(x, h[:1], c, np.zeros((4 * H, 2)), np.zeros((4 * H, 1)), w_hr=w_hr)
    np.testing.assert_allclose(h1p, w_hr @ (0.5 * np.tanh(0.5 * c)))
    h2, _ = ref.gru_cell(x, h, np.zeros((3 * H, 2)), np.zeros((3 * H, H)))  # r = z = 1/2, n = 0
    np.testing.assert_allclose(h2, 0.5 * h)
    b = np.array([-1.0, 0.5, 2.0])
    h3, _ = ref.rnn_cell(x, h, np.zeros((H, 2)), np.zeros((H, H)), b, np.zeros(H))
    np.testing.assert_allclose(h3, np.tanh(b))
    h4, _ = ref.rnn_cell(x, h, np.zeros((H, 2)), np.zeros((H, H)), b, b, "relu")
    np.testing.assert_allclose(h4, [0.0, 1.0, 4.0])


def test_lstm_cell_matches_formulas_with_weights():
    rng = np.random.default_rng(3)
    I, H = 3, 2
    w_ih, w_hh = rng.standard_normal((4 * H, I)), rng.standard_normal((4 * H, H))
    b_ih, b_hh = rng.standard_normal(4 * H), rng.standard_normal(4 * H)
    x, h, c = rng.standard_normal(I), rng.standard_normal(H), rng.standard_normal(H)
    a = w_ih @ x + b_ih + w_hh @ h + b_hh
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = sig(a[:H]), sig(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sig(a[3 * H:])
    h1, c1, _ = ref.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_allclose(c1, f * c + i * g, rtol=1e-14)
    np.testing.assert_allclose(h1, o * np.tanh(f * c + i * g), rtol=1e-14)


ORACLE_CASES = [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
    ("LSTM", dict(num_layers=1, bias=False)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN_TANH", dict(num_layers=2, bidirectional=True, bias=False)),
    ("RNN_RELU", dict(num_layers=2)),
]


@pytest.mark.parametrize("mode,kw", ORACLE_CASES)
def test_reference_backward_is_the_derivative_of_reference_forward(mode, kw):
    """Directional central differences of the oracle's loss vs <oracle gradient, direction>."""
    rng = np.random.default_rng(7)
    T, B, I, H = 4, 3, 2, 3
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    P = kw.get("proj_size", 0) or H
    params = random_params(mode, I, H, L, D == 2, kw.get("bias", True), kw.get("proj_size", 0), rng)
    lstm = mode == "LSTM"
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, P))
    c0 = rng.standard_normal((L * D, B, H)) if lstm else None
    lengths = [4, 2, 3]
    go = rng.standard_normal((T, B, D * P))
    gh = rng.standard_normal(h0.shape)
    gc = rng.standard_normal(c0.shape) if lstm else None

    def loss(p, x, h0, c0):
        out, hn, cn = ref.forward(mode, p, x, h0, c0, L, D == 2, lengths)
        total = np.sum(out * go) + np.sum(hn * gh)
        return total + (np.sum(cn * gc) if lstm else 0.0)

    g = ref.backward(mode, params, x, h0, c0, L, D == 2, lengths, grad_out=go, grad_h_n=gh,
                     grad_c_n=gc)
    eps = 1e-6
    for _ in range(3):
        vp = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        vx, vh = rng.standard_normal(x.shape), rng.standard_normal(h0.shape)
        vc = rng.standard_normal(c0.shape) if lstm else None

        def at(s):
            return loss({k: params[k] + s * vp[k] for k in params}, x + s * vx, h0 + s * vh,
                        None if c0 is None else c0 + s * vc)

        numeric = (at(eps) - at(-eps)) / (2 * eps)
        analytic = (sum(np.sum(g[k] * vp[k]) for k in params) + np.sum(g["x"] * vx)
                    + np.sum(g["h0"] * vh) + (np.sum(g["c0"] * vc) if lstm else 0.0))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic))


@pytest.mark.parametrize("mode", MODES)
def test_reference_lengths_equal_running_each_sequence_alone(mode):
    """With lengths, sequence b behaves exactly like the batch of one x[:lengths[b], b]."""
    rng = np.random.default_rng(11)
    T, B, I, H, L = 5, 4, 2, 3, 2
    params = random_params(mode, I, H, L, True, True, 2 if mode == "LSTM" else 0, rng)
    P = 2 if mode == "LSTM" else H
    lengths = [5, 2, 5, 1]
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((2 * L, B, P))
    c0 = rng.standard_normal((2 * L, B, H)) if mode == "LSTM" else None
    go = rng.standard_normal((T, B, 2 * P))
    out, hn, cn = ref.forward(mode, params, x, h0, c0, L, True, lengths)
    g = ref.backward(mode, params, x, h0, c0, L, True, lengths, grad_out=go)
    for b, n in enumerate(lengths):
        cb = None if c0 is None else c0[:, b:b + 1]
        o1, h1, c1 = ref.forward(mode, params, x[:n, b:b + 1], h0[:, b:b + 1], cb, L, True)
        np.testing.assert_array_equal(out[:n, b:b + 1], o1)
        np.testing.assert_array_equal(out[n:, b], 0.0)
        np.testing.assert_array_equal(hn[:, b:b + 1], h1)
        if c0 is not None:
            np.testing.assert_array_equal(cn[:, b:b + 1], c1)
        g1 = ref.backward(mode, params, x[:n, b:b + 1], h0[:, b:b + 1], cb, L, True,
                          grad_out=go[:n, b:b + 1])
        np.testing.assert_allclose(g["x"][:n, b:b + 1], g1["x"], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(g["x"][n:, b], 0.0)
        np.testing.assert_allclose(g["h0"][:, b:b + 1], g1["h0"], rtol=1e-13, atol=1e-15)


def test_reference_rejects_bad_arguments():
    params = random_params("GRU", 2, 3)
    with pytest.raises(ValueError, match="mode"):
        ref.forward("LSTMX", params, np.zeros((2, 1, 2)))
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.forward("RNN", random_params("RNN", 2, 3), np.zeros((2, 1, 2)), nonlinearity="gelu")
    with pytest.raises(ValueError, match="lengths"):
        ref.forward("GRU", params, np.zeros((2, 1, 2)), lengths=[3])
    with pytest.raises(ValueError, match=r"\(T, B, I\)"):
        ref.forward("GRU", params, np.zeros((2, 2)))


@pytest.mark.parametrize("mode,kw", ORACLE_CASES)
def test_reference_matches_torch(mode, kw):
    """The oracle agrees with torch to float64 rounding, lengths included (via packing)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 3, 2, 4
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
    tkw = dict(kw)
    if mode.startswith("RNN"):
        tkw["nonlinearity"] = mode[4:].lower()
    tm = cls(I, H, **tkw).double()
    params = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    P = kw.get("proj_size", 0) or H
    lstm = mode == "LSTM"
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, P))
    c0 = rng.standard_normal((L * D, B, H))
    lengths = [3, 5, 1]
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out_p, hn_t = tm(packed, (h0t, c0t) if lstm else h0t)
    out_t = pad_packed_sequence(out_p, total_length=T)[0]
    go = rng.standard_normal((T, B, D * P))
    gh = rng.standard_normal(h0.shape)
    gc = rng.standard_normal(c0.shape)
    loss = (out_t * torch.tensor(go)).sum() + ((hn_t[0] if lstm else hn_t) * torch.tensor(gh)).sum()
    if lstm:
        loss = loss + (hn_t[1] * torch.tensor(gc)).sum()
    loss.backward()
    out, hn, cn = ref.forward(mode, params, x, h0, c0 if lstm else None, L, D == 2, lengths)
    g = ref.backward(mode, params, x, h0, c0 if lstm else None, L, D == 2, lengths,
                     grad_out=go, grad_h_n=gh, grad_c_n=gc if lstm else None)
    tol = 1e-12
    assert_close(out, out_t.detach().numpy(), tol)
    assert_close(hn, (hn_t[0] if lstm else hn_t).detach().numpy(), tol)
    if lstm:
        assert_close(cn, hn_t[1].detach().numpy(), tol)
        assert_close(g["c0"], c0t.grad.numpy(), tol)
    assert_close(g["x"], xt.grad.numpy(), tol)
    assert_close(g["h0"], h0t.grad.numpy(), tol)
    for name, p in tm.named_parameters():
        assert_close(g[name], p.grad.numpy(), tol, name)


# ---------------------------------------------------------------------------------------
# kernels against the oracle: a fixed grid ...

GRID = [
    dict(),
    dict(num_layers=2),
    dict(num_layers=3, bidirectional=True),
    dict(bidirectional=True, bias=False),
    dict(num_layers=2, batch_first=True, with_h0=False),
    dict(unbatched=True, num_layers=2, bidirectional=True),
    dict(lengths=[3, 5, 5, 1, 3]),
    dict(lengths=[2, 5, 2, 4, 1], num_layers=2, bidirectional=True, batch_first=True),
    dict(lengths=[1, 1, 1, 1, 1], bidirectional=True),
    dict(with_grad_out=False),
    dict(with_grad_h=False, bidirectional=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", GRID, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_kernels_match_reference_grid(mode, options, dtype):
    compare_with_reference(mode, T=5, B=5, I=3, H=4, dtype=dtype, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("options", [
    dict(proj_size=2),
    dict(proj_size=1, num_layers=3, bidirectional=True),
    dict(proj_size=3, lengths=[4, 1, 5, 4], num_layers=2, bidirectional=True),
    dict(proj_size=2, unbatched=True, with_h0=False, bias=False),
    dict(proj_size=2, batch_first=True, with_grad_out=False, num_layers=2),
], ids=str)
def test_lstm_projection_matches_reference(options, dtype):
    compare_with_reference("LSTM", T=5, B=4, I=3, H=4, dtype=dtype, **options)


@pytest.mark.parametrize("mode", MODES)
def test_all_ones_shapes_match_reference(mode):
    for dtype in (np.float32, np.float64):
        compare_with_reference(mode, T=1, B=1, I=1, H=1, dtype=dtype)
        compare_with_reference(mode, T=1, B=1, I=1, H=1, dtype=dtype, num_layers=2,
                               bidirectional=True, lengths=[1])


# ... and many random shapes and options

@st.composite
def configs(draw):
    mode = draw(st.sampled_from(MODES))
    T = draw(st.integers(1, 5))
    B = draw(st.integers(1, 4))
    cfg = dict(mode=mode, T=T, B=B, I=draw(st.integers(1, 4)), H=draw(st.integers(1, 4)),
               num_layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
               bias=draw(st.booleans()), batch_first=draw(st.booleans()),
               dtype=draw(st.sampled_from([np.float32, np.float64])),
               with_h0=draw(st.booleans()), with_grad_out=draw(st.booleans()),
               with_grad_h=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))
    if mode == "LSTM" and cfg["H"] > 1 and draw(st.booleans()):
        cfg["proj_size"] = draw(st.integers(1, cfg["H"] - 1))
    form = draw(st.sampled_from(["padded", "unbatched", "lengths"]))
    if form == "unbatched":
        cfg["unbatched"] = True
    elif form == "lengths":
        # unsorted, duplicates likely, at least one sequence of full length T
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        lengths[draw(st.integers(0, B - 1))] = T
        cfg["lengths"] = lengths
    return cfg


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_kernels_match_reference_random(cfg):
    compare_with_reference(**cfg)


# ... and batches large enough for the kernels to split the rows into blocks (B >= 128)

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", [130, 333])
def test_kernels_match_reference_large_batch(mode, B, dtype):
    rng = np.random.default_rng(B)
    # many short sequences so that whole row blocks finish before others (sorted order)
    lengths = rng.integers(1, 4, B)
    lengths[rng.integers(0, B, 3)] = 4
    kw = dict(proj_size=1) if mode == "LSTM" else {}
    compare_with_reference(mode, T=4, B=B, I=2, H=2, bidirectional=True, lengths=lengths,
                           dtype=dtype, seed=B, **kw)
    compare_with_reference(mode, T=2, B=B, I=2, H=2, num_layers=2, batch_first=True,
                           dtype=dtype, seed=B + 1)


def test_kernels_match_reference_many_row_blocks():
    rng = np.random.default_rng(0)
    B = 600  # more rows than the largest number of blocks times 64
    lengths = rng.integers(1, 3, B)
    for mode in MODES:
        compare_with_reference(mode, T=2, B=B, I=1, H=2, bidirectional=True, lengths=lengths)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("I, B", [(3, 16), (2100, 16), (3, 5)],
                         ids=["projected-per-step", "projected-up-front", "small-batch-up-front"])
def test_both_input_projection_paths_match_reference(mode, I, B, dtype):
    """The forward projects each step's input inside the time loop when the weights fit in
    cache, and every step up front otherwise (I = 2100 with H = 64 is over the limit) and for
    a batch of fewer than 16 rows (on the micro-kernel, as its steps)."""
    from rnnx._kernels._recurrent import Cell, projects_per_step
    cell = {"LSTM": Cell.LSTM, "GRU": Cell.GRU}.get(mode, Cell.RNN_TANH)
    itemsize = np.dtype(dtype).itemsize
    assert projects_per_step(cell, B, I, 64, 64, itemsize) == (I == 3 and B == 16)
    lengths = np.random.default_rng(B).integers(1, 5, B)
    lengths[0] = 4
    # weights ~ U(-0.05, 0.05): sums over 2100 inputs stay in float32's tolerance
    compare_with_reference(mode, T=4, B=B, I=I, H=64, num_layers=2, bidirectional=True,
                           lengths=lengths, dtype=dtype, seed=I, param_scale=0.05)
    # inference takes the same arithmetic path: bitwise equal to the training forward
    m = make_module(mode, I, 64, 2, True, dtype=dtype)
    x = np.random.default_rng(1).standard_normal((4, B, I)).astype(dtype)
    trained = m(x, lengths=lengths)
    m.clear_records()
    m.eval()
    evaluated = m(x, lengths=lengths)
    np.testing.assert_array_equal(trained[0], evaluated[0])


@pytest.mark.parametrize("mode, H", [("LSTM", 96), ("GRU", 112), ("RNN_TANH", 192),
                                     ("RNN_RELU", 192)])
def test_thread_team_forward_matches_reference_and_one_thread(mode, H):
    """A batch too small for row blocks runs the forward on two threads split by hidden
    units (shares_time_loop): same numbers as the oracle, bitwise the same as one thread."""
    from rnnx._kernels._recurrent import Cell, shares_time_loop
    cell = {"LSTM": Cell.LSTM, "GRU": Cell.GRU}.get(mode, Cell.RNN_TANH)
    assert shares_time_loop(cell, 3, 1, H, H, False, 2)
    assert not shares_time_loop(cell, 3, 1, H, H, False, 1)
    assert not shares_time_loop(cell, 16, 1, H, H, False, 2)
    lengths = np.array([5, 2, 4])
    rnnx.set_num_threads(2)
    for dtype in (np.float64, np.float32):
        compare_with_reference(mode, T=5, B=3, I=5, H=H, num_layers=2, lengths=lengths,
                               dtype=dtype, param_scale=0.2)
    m = make_module(mode, 5, H, num_layers=2, dtype=np.float32)
    x = np.random.default_rng(2).standard_normal((5, 3, 5)).astype(np.float32)
    results = {}
    for threads in (1, 2):
        rnnx.set_num_threads(threads)
        m.train()
        out, _ = m(x, lengths=lengths)
        gx, _ = m.backward(np.ones_like(out))
        m.eval()
        results[threads] = (out, gx, m(x, lengths=lengths)[0])
    for one, two in zip(results[1], results[2]):
        np.testing.assert_array_equal(one, two)
