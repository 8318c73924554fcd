"""Parity with PyTorch: rnnx.LSTM / GRU / RNN loaded from a torch module's state_dict.

Outputs, final states and ALL gradients (x, h0, c0, every parameter) in float32 and
float64, for every mode and option (layers, directions, bias, batch_first, unbatched,
proj_size, missing initial state), and for variable lengths three ways: torch's
pack_padded_sequence -> module -> pad_packed_sequence against rnnx's `lengths=`, against
an rnnx PackedSequence input, and against torch's own packed fields. Also parameter
names / shapes / order, default initialisation range and repr.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnx
from helpers import assert_close

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
              pytest.mark.usefixtures("one_kernel_thread")]

TOL = {np.float32: 1e-5, np.float64: 1e-12}
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}




@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    """torch's own thread pool only slows these tiny problems down (and competes with rnnx's)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def torch_module(mode, I, H, **kw):
    if mode == "LSTM":
        return torch.nn.LSTM(I, H, **kw)
    if mode == "GRU":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=mode[4:].lower(), **kw)


def rnnx_module(mode, I, H, dtype, **kw):
    if mode == "LSTM":
        return rnnx.LSTM(I, H, dtype=dtype, **kw)
    if mode == "GRU":
        return rnnx.GRU(I, H, dtype=dtype, **kw)
    return rnnx.RNN(I, H, nonlinearity=mode[4:].lower(), dtype=dtype, **kw)


def pair(mode, I, H, dtype, seed=0, **kw):
    """A torch module and an rnnx module holding the same parameters."""
    torch.manual_seed(seed)
    tm = torch_module(mode, I, H, **kw).to(TORCH_DTYPE[dtype])
    m = rnnx_module(mode, I, H, dtype, **kw)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, m




def make_data(m, T, B, unbatched, rng):
    """x in the module's input form and time-major-free state/gradient arrays."""
    dtype = m.dtype
    D = 2 if m.bidirectional else 1
    LD, H, P = m.num_layers * D, m.hidden_size, m.proj_size or m.hidden_size
    if unbatched:
        x = rng.standard_normal((T, m.input_size))
        hs, cs, os_ = (LD, P), (LD, H), (T, D * P)
    else:
        x = rng.standard_normal((B, T, m.input_size) if m.batch_first else (T, B, m.input_size))
        hs, cs, os_ = (LD, B, P), (LD, B, H), x.shape[:2] + (D * P,)
    arrays = dict(x=x, h0=rng.standard_normal(hs), c0=rng.standard_normal(cs),
                  go=rng.standard_normal(os_), gh=rng.standard_normal(hs), gc=rng.standard_normal(cs))
    return {k: v.astype(dtype) for k, v in arrays.items()}


def torch_forward_backward(tm, d, lstm, with_h0, lengths=None, T=None):
    """torch forward (packing when lengths are given) + backward of <go,out>+<gh,h_n>+<gc,c_n>."""
    tm.zero_grad(set_to_none=True)
    xt = torch.tensor(d["x"], requires_grad=True)
    h0t = torch.tensor(d["h0"], requires_grad=True)
    c0t = torch.tensor(d["c0"], requires_grad=True)
    hx = ((h0t, c0t) if lstm else h0t) if with_h0 else None
    if lengths is None:
        out, hn = tm(xt, hx)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=tm.batch_first,
                                      enforce_sorted=False)
        out_p, hn = tm(packed, hx)
        out, _ = pad_packed_sequence(out_p, batch_first=tm.batch_first, total_length=T)
    hn, cn = hn if lstm else (hn, None)
    loss = (out * torch.tensor(d["go"])).sum() + (hn * torch.tensor(d["gh"])).sum()
    if lstm:
        loss = loss + (cn * torch.tensor(d["gc"])).sum()
    loss.backward()
    res = dict(out=out.detach().numpy(), hn=hn.detach().numpy(), x=xt.grad.numpy(),
               params={k: p.grad.numpy() for k, p in tm.named_parameters()})
    if with_h0:
        res["h0"] = h0t.grad.numpy()
    if lstm:
        res["cn"] = cn.detach().numpy()
        if with_h0:
            res["c0"] = c0t.grad.numpy()
    return res


def rnnx_forward_backward(m, d, lstm, with_h0, lengths=None):
    m.zero_grad()
    hx = ((d["h0"], d["c0"]) if lstm else d["h0"]) if with_h0 else None
    out, hn = m(d["x"], hx, lengths=lengths)
    if lstm:
        gx, (gh0, gc0) = m.backward(d["go"], (d["gh"], d["gc"]))
        hn, cn = hn
    else:
        gx, gh0 = m.backward(d["go"], d["gh"])
        cn = gc0 = None
    return dict(out=out, hn=hn, cn=cn, x=gx, h0=gh0, c0=gc0,
                params={k: p.grad.copy() for k, p in m.named_parameters()})


def compare(ours, theirs, tol, lstm):
    for key in ("out", "hn", "x", "h0") + (("cn", "c0") if lstm else ()):
        if key in theirs:
            assert_close(ours[key], theirs[key], tol, key)
    assert list(ours["params"]) == list(theirs["params"])
    for name in theirs["params"]:
        assert_close(ours["params"][name], theirs["params"][name], tol, f"grad {name}")


# ---------------------------------------------------------------------------------------
# padded input

OPTIONS = [
    dict(),
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bidirectional=True, bias=False),
    dict(batch_first=True, bidirectional=True),
    dict(unbatched=True, num_layers=2, bidirectional=True),
    dict(unbatched=True, with_h0=False),
    dict(with_h0=False, num_layers=2),
]


def option_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "plain"


def run_parity(mode, dtype, options, T=5, B=3, I=3, H=4, seed=0):
    options = dict(options)
    unbatched = options.pop("unbatched", False)
    with_h0 = options.pop("with_h0", True)
    tm, m = pair(mode, I, H, dtype, seed=seed, **options)
    d = make_data(m, T, B, unbatched, np.random.default_rng(seed))
    lstm = mode == "LSTM"
    theirs = torch_forward_backward(tm, d, lstm, with_h0)
    ours = rnnx_forward_backward(m, d, lstm, with_h0)
    assert ours["out"].dtype == dtype
    compare(ours, theirs, TOL[dtype], lstm)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_parity(mode, options, dtype):
    run_parity(mode, dtype, options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("options", [
    dict(proj_size=2),
    dict(proj_size=1, num_layers=2, bidirectional=True),
    dict(proj_size=3, num_layers=3, bidirectional=True, bias=False, batch_first=True),
    dict(proj_size=2, unbatched=True, bidirectional=True),
    dict(proj_size=2, with_h0=False, num_layers=2),
], ids=option_id)
def test_parity_lstm_projection(options, dtype):
    run_parity("LSTM", dtype, options)


@pytest.mark.parametrize("mode", MODES)
def test_parity_larger_shapes(mode):
    """Sizes where BLAS blocking kicks in (both dtypes)."""
    for dtype in (np.float32, np.float64):
        run_parity(mode, dtype, dict(num_layers=2, bidirectional=True), T=7, B=9, I=17, H=33,
                   seed=3)


@pytest.mark.parametrize("mode", MODES)
def test_parity_size_one(mode):
    for dtype in (np.float32, np.float64):
        run_parity(mode, dtype, dict(), T=1, B=1, I=1, H=1)
        run_parity(mode, dtype, dict(num_layers=2, bidirectional=True), T=1, B=1, I=1, H=1)


# ---------------------------------------------------------------------------------------
# variable lengths: torch packing vs rnnx lengths= vs rnnx PackedSequence

LENGTH_OPTIONS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(batch_first=True, num_layers=2, bidirectional=True, bias=False),
    dict(with_h0=False, bidirectional=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", LENGTH_OPTIONS, ids=option_id)
def test_parity_lengths_and_packed(mode, options, dtype):
    options = dict(options)
    with_h0 = options.pop("with_h0", True)
    T, B = 6, 5
    lengths = [3, 6, 1, 3, 6]  # unsorted, duplicates, some == T
    if mode == "LSTM" and options.get("bidirectional"):
        options["proj_size"] = 2
    tm, m = pair(mode, 3, 4, dtype, seed=1, **options)
    lstm = mode == "LSTM"
    bf = m.batch_first
    d = make_data(m, T, B, False, np.random.default_rng(1))
    theirs = torch_forward_backward(tm, d, lstm, with_h0, lengths, T)
    tol = TOL[dtype]

    # 1. padded input + lengths=
    ours = rnnx_forward_backward(m, d, lstm, with_h0, lengths)
    compare(ours, theirs, tol, lstm)

    # 2. rnnx PackedSequence in, PackedSequence gradient in -> PackedSequence out / grad
    for make_packed in (
            lambda a: rnnx.pack_padded_sequence(a, lengths, batch_first=bf, enforce_sorted=False),
            lambda a: _torch_packed_as_rnnx(a, lengths, bf)):
        px, pgo = make_packed(d["x"]), make_packed(d["go"])
        m.zero_grad()
        hx = ((d["h0"], d["c0"]) if lstm else d["h0"]) if with_h0 else None
        out_p, hn = m(px, hx)
        assert isinstance(out_p, rnnx.PackedSequence)
        np.testing.assert_array_equal(out_p.batch_sizes, px.batch_sizes)
        np.testing.assert_array_equal(out_p.sorted_indices, px.sorted_indices)
        np.testing.assert_array_equal(out_p.unsorted_indices, px.unsorted_indices)
        gstate = (d["gh"], d["gc"]) if lstm else d["gh"]
        gx_p, gs = m.backward(pgo, gstate)
        assert isinstance(gx_p, rnnx.PackedSequence)
        np.testing.assert_array_equal(gx_p.batch_sizes, px.batch_sizes)
        out, lens = rnnx.pad_packed_sequence(out_p, batch_first=bf, total_length=T)
        np.testing.assert_array_equal(lens, lengths)
        gx, _ = rnnx.pad_packed_sequence(gx_p, batch_first=bf, total_length=T)
        hn, cn = hn if lstm else (hn, None)
        gh0, gc0 = gs if lstm else (gs, None)
        packed_res = dict(out=out, hn=hn, cn=cn, x=gx, h0=gh0, c0=gc0,
                          params={k: p.grad.copy() for k, p in m.named_parameters()})
        compare(packed_res, theirs, tol, lstm)
        # and identical to the lengths= path
        for key in ("out", "hn", "x", "h0"):
            np.testing.assert_array_equal(packed_res[key], ours[key])


def _torch_packed_as_rnnx(a, lengths, batch_first):
    tp = pack_padded_sequence(torch.from_numpy(a), torch.tensor(lengths), batch_first=batch_first,
                              enforce_sorted=False)
    return rnnx.PackedSequence(tp.data.numpy(), tp.batch_sizes.numpy(), tp.sorted_indices.numpy(),
                               tp.unsorted_indices.numpy())


@pytest.mark.parametrize("mode", MODES)
def test_parity_packed_output_data(mode):
    """rnnx's packed output data equals torch's packed output data row for row."""
    tm, m = pair(mode, 2, 3, np.float64, seed=2, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4, 2))
    lengths = [2, 5, 3, 4]  # distinct, so every packing order is unique
    tp = pack_padded_sequence(torch.from_numpy(x), torch.tensor(lengths), enforce_sorted=False)
    with torch.no_grad():
        t_out, _ = tm(tp)
    out, _ = m(rnnx.pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert_close(out.data, t_out.data.numpy(), 1e-12)
    np.testing.assert_array_equal(out.batch_sizes, t_out.batch_sizes.numpy())
    np.testing.assert_array_equal(out.sorted_indices, t_out.sorted_indices.numpy())
    np.testing.assert_array_equal(out.unsorted_indices, t_out.unsorted_indices.numpy())


@pytest.mark.parametrize("mode", MODES)
def test_parity_sorted_packed_input(mode):
    """enforce_sorted=True packing (no index permutation) also matches torch."""
    tm, m = pair(mode, 2, 3, np.float64, seed=4, bidirectional=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 2))
    lengths = [4, 2, 1]
    tp = pack_padded_sequence(torch.from_numpy(x), torch.tensor(lengths))
    with torch.no_grad():
        t_out, t_hn = tm(tp)
    out, hn = m(rnnx.pack_padded_sequence(x, lengths))
    assert out.sorted_indices is None
    assert_close(out.data, t_out.data.numpy(), 1e-12)
    hn = hn[0] if mode == "LSTM" else hn
    t_hn = t_hn[0] if mode == "LSTM" else t_hn
    assert_close(hn, t_hn.numpy(), 1e-12)


# ---------------------------------------------------------------------------------------
# parameters, init, repr, eval with dropout

CONFIGS = [
    dict(),
    dict(num_layers=3, bidirectional=True),
    dict(num_layers=2, bias=False, bidirectional=True),
]


@pytest.mark.parametrize("mode,kw", [(mode, kw) for mode in MODES for kw in CONFIGS]
                         + [("LSTM", dict(proj_size=2, num_layers=2, bidirectional=True)),
                            ("LSTM", dict(proj_size=1, bias=False))],
                         ids=lambda v: option_id(v) if isinstance(v, dict) else v)
def test_parameter_names_shapes_and_order(mode, kw):
    tm = torch_module(mode, 3, 5, **kw)
    for dtype in (np.float32, np.float64):
        m = rnnx_module(mode, 3, 5, dtype, **kw)
        assert list(m.state_dict()) == list(tm.state_dict())
        ours = [(n, p.shape) for n, p in m.named_parameters()]
        theirs = [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
        assert ours == theirs
        for (n, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
            assert getattr(m, n) is p
            assert p.dtype == dtype and p.grad.shape == tuple(tp.shape)
        assert [p.shape for p in m.parameters()] == [tuple(p.shape) for p in tm.parameters()]
        assert ([[p.shape for p in ps] for ps in m.all_weights]
                == [[tuple(p.shape) for p in ps] for ps in tm.all_weights])
        assert all(getattr(m, n) is p for ns, ps in zip(tm._all_weights, m.all_weights)
                   for n, p in zip(ns, ps))
        assert m.flatten_parameters() is None


@pytest.mark.parametrize("mode", MODES)
def test_default_init_within_torch_bounds(mode):
    H = 16
    m = rnnx_module(mode, 4, H, np.float64, num_layers=2, bidirectional=True)
    bound = 1.0 / np.sqrt(H)
    values = np.concatenate([p.data.ravel() for p in m.parameters()])
    assert np.all(np.abs(values) <= bound)
    # uniform over the whole range, like torch (not, e.g., a narrower or constant init)
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.1 * bound
    assert abs(values.std() - bound / np.sqrt(3)) < 0.1 * bound


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", CONFIGS + [dict(batch_first=True, dropout=0.5, num_layers=2)],
                         ids=option_id)
def test_repr_matches_torch(mode, kw):
    ours = repr(rnnx_module(mode, 3, 5, np.float32, **kw))
    assert ours == repr(torch_module(mode, 3, 5, **kw))


def test_repr_matches_torch_projection():
    assert repr(rnnx.LSTM(3, 5, proj_size=2)) == repr(torch.nn.LSTM(3, 5, proj_size=2))


@pytest.mark.parametrize("mode", MODES)
def test_eval_with_dropout_matches_torch(mode):
    tm, m = pair(mode, 3, 4, np.float64, seed=5, num_layers=3, bidirectional=True, dropout=0.5)
    tm.eval()
    m.eval()
    x = np.random.default_rng(5).standard_normal((5, 2, 3))
    with torch.no_grad():
        t_out, _ = tm(torch.from_numpy(x))
    out, _ = m(x)
    assert_close(out, t_out.numpy(), 1e-12)


# ---------------------------------------------------------------------------------------
# random shapes and options

@st.composite
def parity_configs(draw):
    mode = draw(st.sampled_from(MODES))
    H = draw(st.integers(1, 5))
    options = dict(num_layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
                   bias=draw(st.booleans()), batch_first=draw(st.booleans()))
    if mode == "LSTM" and H > 1 and draw(st.booleans()):
        options["proj_size"] = draw(st.integers(1, H - 1))
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    form = draw(st.sampled_from(["padded", "unbatched", "lengths"]))
    lengths = None
    if form == "lengths":
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        lengths[draw(st.integers(0, B - 1))] = T
    return dict(mode=mode, I=draw(st.integers(1, 4)), H=H, T=T, B=B, options=options,
                unbatched=form == "unbatched", lengths=lengths, with_h0=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 10000)))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(parity_configs())
def test_parity_random(cfg):
    tm, m = pair(cfg["mode"], cfg["I"], cfg["H"], cfg["dtype"], seed=cfg["seed"], **cfg["options"])
    d = make_data(m, cfg["T"], cfg["B"], cfg["unbatched"], np.random.default_rng(cfg["seed"]))
    lstm = cfg["mode"] == "LSTM"
    theirs = torch_forward_backward(tm, d, lstm, cfg["with_h0"], cfg["lengths"], cfg["T"])
    ours = rnnx_forward_backward(m, d, lstm, cfg["with_h0"], cfg["lengths"])
    compare(ours, theirs, TOL[cfg["dtype"]], lstm)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_parity_large_batch_with_lengths(mode, dtype):
    """B >= 128: the kernels split the rows into blocks; lengths make blocks end unevenly."""
    T, B = 5, 300
    options = dict(num_layers=2, bidirectional=True)
    if mode == "LSTM":
        options["proj_size"] = 2
    tm, m = pair(mode, 3, 4, dtype, seed=6, **options)
    d = make_data(m, T, B, False, np.random.default_rng(6))
    lengths = np.random.default_rng(7).integers(1, T + 1, B).tolist()
    lstm = mode == "LSTM"
    theirs = torch_forward_backward(tm, d, lstm, True, lengths, T)
    ours = rnnx_forward_backward(m, d, lstm, True, lengths)
    compare(ours, theirs, TOL[dtype], lstm)
    theirs = torch_forward_backward(tm, d, lstm, False)
    ours = rnnx_forward_backward(m, d, lstm, False)
    compare(ours, theirs, TOL[dtype], lstm)
