"""rnnx.LSTM / GRU / RNN: finite-difference gradients and module behaviour.

Gradients: central differences in float64 of a random linear functional of out, h_n
(and c_n) w.r.t. every entry of x, h0, c0 and every parameter, for every module and
option (layers, directions, bias, batch_first, unbatched, lengths, PackedSequence,
proj_size, seeded dropout).
Behaviour: LIFO records, eval mode, dropout, seeding, state dicts, memory layouts,
dtypes, thread-count independence, variable-length invariants.
"""
import numpy as np
import pytest

import rnnx
from rnnx import _reference as ref

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def make(mode, I, H, dtype=np.float64, **kw):
    if mode == "LSTM":
        return rnnx.LSTM(I, H, dtype=dtype, **kw)
    if mode == "GRU":
        return rnnx.GRU(I, H, dtype=dtype, **kw)
    return rnnx.RNN(I, H, nonlinearity="relu" if mode == "RNN_RELU" else "tanh", dtype=dtype, **kw)


def is_lstm(m):
    return isinstance(m, rnnx.LSTM)


def state_shapes(m, B, unbatched=False):
    LD = m.num_layers * (2 if m.bidirectional else 1)
    P = m.proj_size or m.hidden_size
    if unbatched:
        return (LD, P), (LD, m.hidden_size)
    return (LD, B, P), (LD, B, m.hidden_size)


def run(m, x, hx=None, lengths=None, go=None, gh=None, gc=None):
    """forward + backward; returns (out, h_n, c_n, grad_x, grad_h0, grad_c0, param grads)."""
    m.zero_grad()
    out, hn = m(x, hx, lengths=lengths)
    if is_lstm(m):
        hn, cn = hn
        gx, (gh0, gc0) = m.backward(go, (gh, gc))
    else:
        cn = gc0 = None
        gx, gh0 = m.backward(go, gh)
    grads = {name: p.grad.copy() for name, p in m.named_parameters()}
    return out, hn, cn, gx, gh0, gc0, grads


def data(out):
    return out.data if isinstance(out, rnnx.PackedSequence) else out


# ---------------------------------------------------------------------------------------
# finite differences

def finite_difference_check(m, x, h0=None, c0=None, lengths=None, seed=None, rng=None,
                            eps=1e-6):
    """Every gradient of L = <go, out> + <gh, h_n> + <gc, c_n> against central differences.

    x may be a PackedSequence. With `seed`, rnnx is reseeded before every forward so that
    dropout draws the same mask each time (the loss is then a smooth function).
    """
    rng = rng or np.random.default_rng(0)
    lstm = is_lstm(m)
    packed = isinstance(x, rnnx.PackedSequence)
    xd = x.data if packed else x

    def wrap(xd_):
        if not packed:
            return xd_
        return rnnx.PackedSequence(xd_, x.batch_sizes, x.sorted_indices, x.unsorted_indices)

    def forward(xd_, h0_, c0_):
        if seed is not None:
            rnnx.manual_seed(seed)
        hx = (h0_, c0_) if lstm and (h0_ is not None or c0_ is not None) else h0_
        out, hn = m(wrap(xd_), hx, lengths=lengths)
        m.clear_records()
        return data(out), (hn if lstm else (hn, None))

    out, (hn, cn) = forward(xd, h0, c0)
    go = rng.standard_normal(out.shape)
    gh = rng.standard_normal(hn.shape)
    gc = rng.standard_normal(cn.shape) if lstm else None

    def loss(xd_, h0_, c0_):
        out, (hn, cn) = forward(xd_, h0_, c0_)
        total = np.sum(out * go) + np.sum(hn * gh)
        return total + (np.sum(cn * gc) if lstm else 0.0)

    # analytic
    m.zero_grad()
    if seed is not None:
        rnnx.manual_seed(seed)
    hx = (h0, c0) if lstm and (h0 is not None or c0 is not None) else h0
    m(x, hx, lengths=lengths)
    grad_out = (rnnx.PackedSequence(go, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
                if packed else go)
    if lstm:
        gx, (gh0, gc0) = m.backward(grad_out, (gh, gc))
    else:
        gx, gh0 = m.backward(grad_out, gh)
        gc0 = None
    if packed:
        assert isinstance(gx, rnnx.PackedSequence)
        gx = gx.data

    def numeric(array, call):
        g = np.zeros(array.shape)
        for idx in np.ndindex(array.shape):
            old = array[idx]
            array[idx] = old + eps
            up = call()
            array[idx] = old - eps
            down = call()
            array[idx] = old
            g[idx] = (up - down) / (2 * eps)
        return g

    def check(analytic, num, what):
        np.testing.assert_allclose(analytic, num, rtol=1e-6, atol=1e-7, err_msg=what)

    xd = np.array(xd, dtype=np.float64)
    check(gx, numeric(xd, lambda: loss(xd, h0, c0)), "grad x")
    if h0 is not None:
        h0 = np.array(h0, dtype=np.float64)
        check(gh0, numeric(h0, lambda: loss(xd, h0, c0)), "grad h0")
    if c0 is not None:
        c0 = np.array(c0, dtype=np.float64)
        check(gc0, numeric(c0, lambda: loss(xd, h0, c0)), "grad c0")
    for name, p in m.named_parameters():
        check(p.grad, numeric(p.data, lambda: loss(xd, h0, c0)), f"grad {name}")


FD_CASES = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(bias=False, batch_first=True),
    dict(unbatched=True, bidirectional=True),
    dict(lengths=[3, 1, 2], num_layers=2, bidirectional=True),
    dict(lengths=[2, 3, 2], batch_first=True, no_state=True),
    dict(packed=True, bidirectional=True),
]


def fd_case(mode, case, I=2, H=2, T=3, B=3, **extra):
    case = dict(case)
    unbatched = case.pop("unbatched", False)
    lengths = case.pop("lengths", None)
    no_state = case.pop("no_state", False)
    packed = case.pop("packed", False)
    case.update(extra)
    rng = np.random.default_rng(42)
    rnnx.manual_seed(42)  # the weights too: a pre-activation within eps of ReLU's kink fails
    m = make(mode, I, H, **case)
    if mode == "RNN_RELU":  # keep pre-activations away from the kink at 0
        for p in m.parameters():
            p.data += 0.1 * np.sign(p.data)
    hs, cs = state_shapes(m, B, unbatched)
    if unbatched:
        x = rng.standard_normal((T, I))
    elif case.get("batch_first"):
        x = rng.standard_normal((B, T, I))
    else:
        x = rng.standard_normal((T, B, I))
    if packed:
        x = rnnx.pack_padded_sequence(x, [2, 3, 1], enforce_sorted=False)
    h0 = None if no_state else rng.standard_normal(hs)
    c0 = rng.standard_normal(cs) if mode == "LSTM" and not no_state else None
    return m, x, h0, c0, lengths


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", FD_CASES, ids=str)
def test_finite_differences(mode, case):
    m, x, h0, c0, lengths = fd_case(mode, case)
    finite_difference_check(m, x, h0, c0, lengths)


@pytest.mark.parametrize("case", [
    dict(),
    dict(num_layers=2, bidirectional=True, lengths=[1, 3, 2]),
    dict(unbatched=True, num_layers=2),
    dict(packed=True, bidirectional=True, bias=False),
], ids=str)
@pytest.mark.parametrize("proj_size", [1, 2])
def test_finite_differences_lstm_projection(case, proj_size):
    m, x, h0, c0, lengths = fd_case("LSTM", case, H=3, proj_size=proj_size)
    finite_difference_check(m, x, h0, c0, lengths)


@pytest.mark.parametrize("mode", MODES)
def test_finite_differences_with_seeded_dropout(mode):
    """Reseeding before each forward freezes the dropout mask; gradients must then be exact."""
    kw = dict(proj_size=1) if mode == "LSTM" else {}
    m, x, h0, c0, _ = fd_case(mode, dict(num_layers=3, bidirectional=True, dropout=0.5),
                              H=2, **kw)
    finite_difference_check(m, x, h0, c0, lengths=[3, 1, 2], seed=1234)


# ---------------------------------------------------------------------------------------
# records: LIFO order, eval mode

@pytest.mark.parametrize("mode", MODES)
def test_lifo_records_sum_of_separate_gradients(mode):
    rng = np.random.default_rng(0)
    m = make(mode, 3, 4, num_layers=2, bidirectional=True)
    hs, cs = state_shapes(m, 2)
    x1, x2 = rng.standard_normal((5, 2, 3)), rng.standard_normal((3, 2, 3))
    g1, g2 = rng.standard_normal((5, 2, 8)), rng.standard_normal((3, 2, 8))
    gh1, gh2 = rng.standard_normal(hs), rng.standard_normal(hs)
    gc = rng.standard_normal(cs)
    sep1 = run(m, x1, go=g1, gh=gh1, gc=gc if mode == "LSTM" else None)
    sep2 = run(m, x2, lengths=[2, 3], go=g2, gh=gh2)
    m.zero_grad()
    outputs = m(x1), m(x2, lengths=[2, 3])  # noqa: F841 - kept: records live as long as outputs
    if mode == "LSTM":
        gx2, _ = m.backward(g2, (gh2, None))
        gx1, _ = m.backward(g1, (gh1, gc))
    else:
        gx2, _ = m.backward(g2, gh2)
        gx1, _ = m.backward(g1, gh1)
    np.testing.assert_array_equal(gx1, sep1[3])
    np.testing.assert_array_equal(gx2, sep2[3])
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, sep1[6][name] + sep2[6][name], rtol=1e-13, atol=1e-14)
    with pytest.raises(RuntimeError, match="pending forward"):
        m.backward(g1)


@pytest.mark.parametrize("mode", MODES)
def test_chunked_sequence_with_carried_state_equals_one_run(mode):
    """Truncated-BPTT style: two calls chained through (h, c) equal one call on the whole."""
    rng = np.random.default_rng(1)
    m = make(mode, 2, 3, num_layers=2)
    x = rng.standard_normal((6, 2, 2))
    go = rng.standard_normal((6, 2, 3))
    whole = run(m, x, go=go)
    m.zero_grad()
    lstm = mode == "LSTM"
    out_a, st_a = m(x[:4])
    out_b, st_b = m(x[4:], st_a)
    np.testing.assert_allclose(np.concatenate([out_a, out_b]), whole[0], rtol=1e-14, atol=1e-15)
    gx_b, gst = m.backward(go[4:])
    gx_a, _ = m.backward(go[:4], gst)
    np.testing.assert_allclose(np.concatenate([gx_a, gx_b]), whole[3], rtol=1e-12, atol=1e-14)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, whole[6][name], rtol=1e-12, atol=1e-14)
    if lstm:
        np.testing.assert_allclose(st_b[1], whole[2], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_eval_mode_records_nothing(mode):
    rng = np.random.default_rng(2)
    m = make(mode, 2, 3, num_layers=2, bidirectional=True, proj_size=2) if mode == "LSTM" \
        else make(mode, 2, 3, num_layers=2, bidirectional=True)
    x = rng.standard_normal((4, 3, 2))
    out_train, hn_train = m(x, lengths=[4, 2, 3])
    m.clear_records()
    m.eval()
    assert not m.training
    out_eval, hn_eval = m(x, lengths=[4, 2, 3])
    with pytest.raises(RuntimeError, match="pending forward"):
        m.backward(np.ones_like(out_eval))
    # same numbers in both modes (dropout = 0)
    np.testing.assert_array_equal(out_eval, out_train)
    if mode == "LSTM":
        np.testing.assert_array_equal(hn_eval[0], hn_train[0])
        np.testing.assert_array_equal(hn_eval[1], hn_train[1])
    else:
        np.testing.assert_array_equal(hn_eval, hn_train)
    # an eval forward between a training forward and its backward does not disturb it
    m.train()
    ref_grads = run(m, x, go=np.ones_like(out_eval))
    m.zero_grad()
    m(x)
    m.eval()
    m(rng.standard_normal((2, 3, 2)))
    m.train()
    gx, _ = m.backward(np.ones_like(out_eval))
    np.testing.assert_array_equal(gx, ref_grads[3])


def test_backward_without_any_forward_raises():
    m = rnnx.GRU(2, 3)
    with pytest.raises(RuntimeError, match="pending forward"):
        m.backward(np.zeros((1, 1, 3), np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_backward_with_no_gradients_gives_zeros(mode):
    m = make(mode, 2, 3, bidirectional=True)
    x = np.random.default_rng(3).standard_normal((3, 2, 2))
    res = run(m, x)
    np.testing.assert_array_equal(res[3], 0.0)
    np.testing.assert_array_equal(res[4], 0.0)
    for g in res[6].values():
        np.testing.assert_array_equal(g, 0.0)


def test_parameter_gradients_accumulate_and_zero_grad_clears():
    rng = np.random.default_rng(4)
    m = rnnx.LSTM(2, 3, num_layers=2, dtype=np.float64)
    x, go = rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 3))
    once = run(m, x, go=go)[6]
    m(x)
    m.backward(go)  # second accumulation on top of the first
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-13, atol=1e-15)
    m.zero_grad(set_to_none=False)
    for p in m.parameters():
        np.testing.assert_array_equal(p.grad, 0.0)
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    run(m, x, go=go)  # the next backward allocates fresh gradients
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, once[name], rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------
# dropout and seeding

@pytest.mark.parametrize("mode", MODES)
def test_dropout_only_in_training_and_reproducible(mode):
    rng = np.random.default_rng(5)
    m = make(mode, 3, 4, num_layers=3, bidirectional=True, dropout=0.5)
    plain = make(mode, 3, 4, num_layers=3, bidirectional=True)
    plain.load_state_dict(m.state_dict())
    x = rng.standard_normal((5, 2, 3))
    rnnx.manual_seed(7)
    a, _ = m(x)
    rnnx.manual_seed(7)
    b, _ = m(x)
    assert np.array_equal(a, b)  # same seed, identical output
    rnnx.manual_seed(8)
    c, _ = m(x)
    assert not np.array_equal(a, c)
    m.clear_records()
    m.eval()
    e, _ = m(x)
    p, _ = plain(x)
    plain.clear_records()
    np.testing.assert_array_equal(e, p)  # eval: no dropout
    assert not np.allclose(a, e)
    # dropout = 0 in training equals eval
    plain.eval()
    pe, _ = plain(x)
    np.testing.assert_array_equal(pe, p)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_matches_manual_mask(mode):
    """2 layers with dropout == layer 0, times the mask rnnx draws, then layer 1 (reference).

    The mask is reproduced from the global rnnx generator: after manual_seed(s) the first
    draw is random((T*B, D*P)) >= p, scaled by 1/(1-p), rows in time-major (t, b) order.
    """
    rng = np.random.default_rng(6)
    T, B, I, H, p_drop = 4, 3, 2, 3, 0.4
    m = make(mode, I, H, num_layers=2, bidirectional=True, dropout=p_drop)
    D, P = 2, H
    params = m.state_dict()
    x = rng.standard_normal((T, B, I))
    go = rng.standard_normal((T, B, D * P))
    lstm = mode == "LSTM"
    rnnx.manual_seed(99)
    out, hn = m(x)
    if lstm:
        gx, (gh0, gc0) = m.backward(go, None)
    else:
        gx, gh0 = m.backward(go, None)
    rnnx.manual_seed(99)
    keep = rnnx._random.default_generator().random((T * B, D * P)) >= p_drop
    mask = (keep / (1 - p_drop)).reshape(T, B, D * P)
    p0 = {k: v for k, v in params.items() if "_l0" in k}
    p1 = {k.replace("_l1", "_l0"): v for k, v in params.items() if "_l1" in k}
    o0, h0_, c0_ = ref.forward(mode, p0, x, num_layers=1, bidirectional=True)
    o1, h1_, c1_ = ref.forward(mode, p1, o0 * mask, num_layers=1, bidirectional=True)
    np.testing.assert_allclose(out, o1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose((hn[0] if lstm else hn)[2:], h1_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose((hn[0] if lstm else hn)[:2], h0_, rtol=1e-12, atol=1e-14)
    if lstm:
        np.testing.assert_allclose(hn[1][:2], c0_, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hn[1][2:], c1_, rtol=1e-12, atol=1e-14)
    g1 = ref.backward(mode, p1, o0 * mask, num_layers=1, bidirectional=True, grad_out=go)
    g0 = ref.backward(mode, p0, x, num_layers=1, bidirectional=True, grad_out=g1["x"] * mask)
    np.testing.assert_allclose(gx, g0["x"], rtol=1e-12, atol=1e-14)
    for name, prm in m.named_parameters():
        want = g0[name] if "_l0" in name else g1[name.replace("_l1", "_l0")]
        np.testing.assert_allclose(prm.grad, want, rtol=1e-12, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(gh0[:2], g0["h0"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gh0[2:], g1["h0"], rtol=1e-12, atol=1e-14)
    if lstm:
        np.testing.assert_allclose(gc0[:2], g0["c0"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gc0[2:], g1["c0"], rtol=1e-12, atol=1e-14)


def test_dropout_one_zeroes_the_layer_inputs():
    rng = np.random.default_rng(7)
    m = rnnx.GRU(2, 3, num_layers=2, dropout=1.0, dtype=np.float64)
    top = rnnx.GRU(3, 3, dtype=np.float64)
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in m.state_dict().items() if "_l1" in k})
    x = rng.standard_normal((4, 2, 2))
    out, _ = m(x)
    want, _ = top(np.zeros((4, 2, 3)))
    np.testing.assert_array_equal(out, want)
    gx, _ = m.backward(np.ones_like(out))
    np.testing.assert_array_equal(gx, 0.0)
    np.testing.assert_array_equal(m.weight_ih_l0.grad, 0.0)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        rnnx.LSTM(2, 3, dropout=0.2)


@pytest.mark.parametrize("mode", MODES)
def test_manual_seed_gives_identical_init(mode):
    kw = dict(num_layers=3, bidirectional=True)
    if mode == "LSTM":
        kw["proj_size"] = 2
    for dtype in (np.float32, np.float64):
        rnnx.manual_seed(2024)
        a = make(mode, 3, 4, dtype=dtype, **kw).state_dict()
        rnnx.manual_seed(2024)
        b = make(mode, 3, 4, dtype=dtype, **kw).state_dict()
        assert list(a) == list(b)
        for k in a:
            assert a[k].dtype == dtype
            assert np.array_equal(a[k], b[k]), k
        rnnx.manual_seed(2025)
        c = make(mode, 3, 4, dtype=dtype, **kw).state_dict()
        assert not np.array_equal(a["weight_hh_l2_reverse"], c["weight_hh_l2_reverse"])


@pytest.mark.parametrize("mode", MODES)
def test_default_init_range(mode):
    H = 9
    rnnx.manual_seed(0)  # seeded: an unlucky draw could leave a 9-value bias below bound / 2
    m = make(mode, 5, H, num_layers=2, bidirectional=True)
    bound = 1 / np.sqrt(H)
    for name, p in m.named_parameters():
        assert np.all(np.abs(p.data) <= bound), name
        assert np.abs(p.data).max() > 0.5 * bound, name
        np.testing.assert_array_equal(p.grad, 0.0)


# ---------------------------------------------------------------------------------------
# state dicts

def test_state_dict_is_a_copy_and_round_trips():
    rng = np.random.default_rng(8)
    a = rnnx.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64)
    b = rnnx.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64)
    sd = a.state_dict()
    sd["weight_ih_l0"][...] = 0
    assert not np.all(a.weight_ih_l0.data == 0)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((4, 2, 3))
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_load_state_dict_checks_everything_before_changing_anything():
    m = rnnx.GRU(2, 3, num_layers=2, bidirectional=True, dtype=np.float64)
    before = m.state_dict()
    sd = {k: np.full(v.shape, 0.25) for k, v in before.items()}
    last = list(sd)[-1]
    sd[last] = np.zeros((1, 2))
    with pytest.raises(ValueError, match=f"size mismatch for {last}"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    sd[last] = np.zeros(before[last].shape)
    extra = dict(sd, weight_hr_l0=np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match='Unexpected key.*"weight_hr_l0"'):
        m.load_state_dict(extra)
    missing = dict(sd)
    del missing["bias_hh_l1_reverse"]
    with pytest.raises(RuntimeError, match='Missing key.*"bias_hh_l1_reverse"'):
        m.load_state_dict(missing)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # non-strict: loads what matches, reports the rest
    miss, unexp = m.load_state_dict(dict(missing, extra_key=np.zeros(1)), strict=False)
    assert miss == ["bias_hh_l1_reverse"] and unexp == ["extra_key"]
    np.testing.assert_array_equal(m.weight_ih_l0.data, 0.25)
    np.testing.assert_array_equal(m.bias_hh_l1_reverse.data, before["bias_hh_l1_reverse"])


def test_load_state_dict_casts_dtype():
    m = rnnx.RNN(2, 3)  # float32
    sd = {k: v.astype(np.float64) + 0.1 for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, sd[k].astype(np.float32))


# ---------------------------------------------------------------------------------------
# memory layouts and dtypes

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_non_contiguous_and_fortran_inputs(mode, batch_first):
    rng = np.random.default_rng(9)
    m = make(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    lstm = mode == "LSTM"
    hs, cs = state_shapes(m, 3)
    shape = (3, 5, 3) if batch_first else (5, 3, 3)
    x = rng.standard_normal(shape)
    h0, c0 = rng.standard_normal(hs), rng.standard_normal(cs)
    go = rng.standard_normal(shape[:2] + (8,))
    gh, gc = rng.standard_normal(hs), rng.standard_normal(cs)
    lengths = [5, 2, 4]

    def go_(x, h0, c0, go, gh, gc):
        return run(m, x, (h0, c0) if lstm else h0, lengths, go, gh, gc if lstm else None)

    base = go_(x, h0, c0, go, gh, gc)

    def strided(a):  # same values, every other element of a bigger buffer
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        big[..., ::2] = a
        return big[..., ::2]

    def transposed(a):  # same values, memory order reversed
        return np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0)

    for f in (strided, np.asfortranarray, transposed):
        other = go_(f(x), f(h0), f(c0), f(go), f(gh), f(gc))
        assert not f(x).flags.c_contiguous
        for u, v in zip(base[:6], other[:6]):
            if u is not None:
                np.testing.assert_array_equal(u, v)
        for k in base[6]:
            np.testing.assert_array_equal(base[6][k], other[6][k])


@pytest.mark.parametrize("mode", MODES)
def test_other_float_dtypes_are_cast(mode):
    rng = np.random.default_rng(10)
    m32 = make(mode, 2, 3, dtype=np.float32, bidirectional=True)
    x16 = rng.standard_normal((4, 2, 2)).astype(np.float16)
    hs, cs = state_shapes(m32, 2)
    h16 = rng.standard_normal(hs).astype(np.float16)
    hx16 = (h16, np.zeros(cs, np.float16)) if mode == "LSTM" else h16
    hx32 = (h16.astype(np.float32), np.zeros(cs, np.float32)) if mode == "LSTM" else h16.astype(np.float32)
    out16, _ = m32(x16, hx16)
    go16 = np.ones(out16.shape, np.float16)
    g16, _ = m32.backward(go16)
    out32, _ = m32(x16.astype(np.float32), hx32)
    g32, _ = m32.backward(go16.astype(np.float32))
    assert out16.dtype == np.float32 and g16.dtype == np.float32
    np.testing.assert_array_equal(out16, out32)
    np.testing.assert_array_equal(g16, g32)
    # float32 data into a float64 module is computed in float64
    m64 = make(mode, 2, 3, dtype=np.float64)
    x32 = x16.astype(np.float32)
    a, _ = m64(x32)
    b, _ = m64(x32.astype(np.float64))
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    m64.clear_records()


@pytest.mark.parametrize("mode", MODES)
def test_results_do_not_depend_on_thread_count(mode):
    """Bitwise identical forward and backward with 1 and 2 threads (bidirectional)."""
    kw = dict(proj_size=3) if mode == "LSTM" else {}
    mods = [make(mode, 3, 5, dtype=dt, num_layers=2, bidirectional=True, **kw)
            for dt in (np.float64, np.float32)]
    mods[1].load_state_dict(mods[0].state_dict())
    lstm = mode == "LSTM"

    def collect():
        res = []
        for mod in mods:
            dt = mod.dtype
            for B in (4, 200):  # 200 rows: the kernels split the batch into row blocks
                hs, cs = state_shapes(mod, B)
                r = np.random.default_rng(12)
                x = r.standard_normal((6, B, 3)).astype(dt)
                h0, c0 = r.standard_normal(hs).astype(dt), r.standard_normal(cs).astype(dt)
                go = r.standard_normal((6, B, 2 * (mod.proj_size or 5))).astype(dt)
                gh = r.standard_normal(hs).astype(dt)
                lengths = r.integers(1, 7, B)
                lengths[0] = 6
                for lens in (None, lengths):
                    res.append(run(mod, x, (h0, c0) if lstm else h0, lens, go, gh))
        return res

    saved = rnnx.get_num_threads()
    try:
        rnnx.set_num_threads(1)
        one = collect()
        rnnx.set_num_threads(2)
        assert rnnx.get_num_threads() == 2
        two = collect()
    finally:
        rnnx.set_num_threads(saved)
    assert rnnx.get_num_threads() == saved
    for a, b in zip(one, two):
        for u, v in zip(a[:6], b[:6]):
            if u is not None:
                assert u.dtype == v.dtype and np.array_equal(u, v)
        for k in a[6]:
            assert np.array_equal(a[6][k], b[6][k]), k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_projected_lstm_does_not_depend_on_thread_count(dtype, bidirectional):
    """LSTM with proj_size: outputs and every gradient bitwise the same for 1 to 5 threads, at
    the batch sizes where the projection's products once took their bits from BLAS's row
    blocking (16 .. 100 rows, with and without lengths; T = 300 > one K_CHUNK of steps)."""
    m = make("LSTM", 7, 40, dtype=dtype, proj_size=9, num_layers=2,
             bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    results = {}
    for B in (16, 17, 31, 40, 64, 100):
        r = np.random.default_rng(B)
        T = 300 if B == 17 else 5
        x = r.standard_normal((T, B, 7)).astype(dtype)
        go = r.standard_normal((T, B, D * 9)).astype(dtype)
        lengths = r.integers(1, T + 1, B)
        lengths[0] = T
        for lens in (None, lengths):
            for threads in range(1, 6):
                rnnx.set_num_threads(threads)
                results.setdefault((B, lens is None), []).append(run(m, x, None, lens, go))
    for runs in results.values():
        one = runs[0]
        for other in runs[1:]:
            for u, v in zip(one[:6], other[:6]):
                if u is not None:
                    assert np.array_equal(u, v)
            for k in one[6]:
                assert np.array_equal(one[6][k], other[6][k]), k


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B, skewed", [(300, False), (16, True)])
def test_unidirectional_row_blocks_do_not_change_results(mode, B, skewed):
    """One direction: the parallel tasks are row blocks only, cut by the thread count and
    balanced by packed rows (skewed: one long sequence among length-1 ones)."""
    m = make(mode, 2, 3, dtype=np.float32, num_layers=2)
    r = np.random.default_rng(13)
    x = r.standard_normal((4, B, 2)).astype(np.float32)
    go = r.standard_normal((4, B, 3)).astype(np.float32)
    lengths = np.ones(B, dtype=np.int64) if skewed else r.integers(1, 5, B)
    lengths[7] = 4
    saved = rnnx.get_num_threads()
    try:
        rnnx.set_num_threads(1)
        one = run(m, x, None, lengths, go)
        rnnx.set_num_threads(2)
        two = run(m, x, None, lengths, go)
    finally:
        rnnx.set_num_threads(saved)
    for u, v in zip(one[:6], two[:6]):
        if u is not None:
            assert np.array_equal(u, v)
    for k in one[6]:
        assert np.array_equal(one[6][k], two[6][k]), k


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_backward_without_input_grad(mode, bidirectional):
    """input_grad=False: grad_x is None; every other gradient is bitwise the same."""
    m = make(mode, 3, 4, dtype=np.float32, num_layers=2, bidirectional=bidirectional)
    r = np.random.default_rng(14)
    x = r.standard_normal((5, 7, 3)).astype(np.float32)
    lengths = r.integers(1, 6, 7)
    go = r.standard_normal((5, 7, 8 if bidirectional else 4)).astype(np.float32)
    hs, cs = state_shapes(m, 7)
    gh = r.standard_normal(hs).astype(np.float32)
    full = run(m, x, None, lengths, go, gh)
    m.zero_grad()
    m(x, lengths=lengths)
    if is_lstm(m):
        gx, (gh0, gc0) = m.backward(go, (gh, None), input_grad=False)
    else:
        gc0 = None
        gx, gh0 = m.backward(go, gh, input_grad=False)
    assert gx is None and full[3] is not None
    assert np.array_equal(gh0, full[4])
    if gc0 is not None:
        assert np.array_equal(gc0, full[5])
    for name, p in m.named_parameters():
        assert np.array_equal(p.grad, full[6][name]), name


def test_set_num_threads_rejects_bad_values():
    for bad in (0, -1, np.int64(0)):
        with pytest.raises(ValueError, match="positive integer"):
            rnnx.set_num_threads(bad)
    for bad in (1.5, True, np.bool_(True), "2", None):
        with pytest.raises(TypeError, match="expects an int"):
            rnnx.set_num_threads(bad)
    for huge in (rnnx._threads.max_num_threads() + 1, 2**31, 10**6):
        with pytest.raises(ValueError, match="more than the .* allowed"):
            rnnx.set_num_threads(huge)


def test_set_num_threads_accepts_any_integral():
    saved = rnnx.get_num_threads()
    try:
        rnnx.set_num_threads(np.int64(2))
        assert rnnx.get_num_threads() == 2 and type(rnnx.get_num_threads()) is int
        rnnx.set_num_threads(rnnx._threads.max_num_threads())
    finally:
        rnnx.set_num_threads(saved)


# ---------------------------------------------------------------------------------------
# variable lengths and packed input

@pytest.mark.parametrize("mode", MODES)
def test_lengths_invariants(mode):
    rng = np.random.default_rng(13)
    T, B, H = 6, 4, 3
    m = make(mode, 2, H, bidirectional=True)
    lengths = np.array([4, 6, 1, 4])
    x = rng.standard_normal((T, B, 2))
    go = rng.standard_normal((T, B, 2 * H))
    out, hn, cn, gx, *_ = run(m, x, lengths=lengths, go=go)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(out[n:, b], 0.0)
        np.testing.assert_array_equal(gx[n:, b], 0.0)
        np.testing.assert_array_equal(hn[0, b], out[n - 1, b, :H])  # forward ends at n - 1
        np.testing.assert_array_equal(hn[1, b], out[0, b, H:])  # reverse ends at 0
    # padding content is irrelevant
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 1e3
    res2 = run(m, x2, lengths=lengths, go=go)
    np.testing.assert_array_equal(res2[0], out)
    # full lengths equal no lengths, in any integer form
    full = run(m, x, go=go)
    for L in ([T] * B, np.full(B, T, np.int32), tuple([T] * B), np.full(B, float(T))):
        other = run(m, x, lengths=L, go=go)
        np.testing.assert_array_equal(other[0], full[0])
        np.testing.assert_array_equal(other[3], full[3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_input_equals_lengths(mode, batch_first):
    rng = np.random.default_rng(14)
    T, B = 5, 4
    m = make(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    lstm = mode == "LSTM"
    hs, cs = state_shapes(m, B)
    lengths = [3, 5, 1, 3]
    x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3))
    h0, c0 = rng.standard_normal(hs), rng.standard_normal(cs)
    go = rng.standard_normal(x.shape[:2] + (8,))
    gh = rng.standard_normal(hs)
    hx = (h0, c0) if lstm else h0
    padded = run(m, x, hx, lengths, go, gh)
    packed_x = rnnx.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    packed_go = rnnx.pack_padded_sequence(go, lengths, batch_first=batch_first, enforce_sorted=False)
    res = run(m, packed_x, hx, None, packed_go, gh)
    assert isinstance(res[0], rnnx.PackedSequence) and isinstance(res[3], rnnx.PackedSequence)
    np.testing.assert_array_equal(res[0].batch_sizes, packed_x.batch_sizes)
    np.testing.assert_array_equal(res[0].sorted_indices, packed_x.sorted_indices)
    out, lens = rnnx.pad_packed_sequence(res[0], batch_first=batch_first, total_length=T)
    np.testing.assert_array_equal(lens, lengths)
    np.testing.assert_array_equal(out, padded[0])
    gx, _ = rnnx.pad_packed_sequence(res[3], batch_first=batch_first, total_length=T)
    np.testing.assert_array_equal(gx, padded[3])
    for u, v in zip(padded[1:3] + padded[4:6], res[1:3] + res[4:6]):
        if u is not None:
            np.testing.assert_array_equal(u, v)
    for k in padded[6]:
        np.testing.assert_array_equal(padded[6][k], res[6][k])
    # a bare array is accepted as the packed gradient too
    m.zero_grad()
    m(packed_x, hx)
    gx2, _ = m.backward(packed_go.data, (gh, None) if lstm else gh)
    np.testing.assert_array_equal(gx2.data, res[3].data)


def test_repr():
    assert repr(rnnx.LSTM(2, 3)) == "LSTM(2, 3)"
    assert repr(rnnx.GRU(2, 3, num_layers=2, bias=False, batch_first=True, bidirectional=True)) \
        == "GRU(2, 3, num_layers=2, bias=False, batch_first=True, bidirectional=True)"
    assert repr(rnnx.RNN(2, 3, nonlinearity="relu")) == "RNN(2, 3)"  # as torch
    assert "proj_size=2" in repr(rnnx.LSTM(2, 3, proj_size=2))
    assert "float64" in repr(rnnx.LSTM(2, 3, dtype=np.float64))


def test_set_num_threads_governs_numpy_blas():
    """NumPy's own BLAS follows rnnx.set_num_threads up to the core
    count; scipy's (the kernels') stays at 1."""
    from threadpoolctl import ThreadpoolController
    from rnnx import _threads
    scipy_paths = {lib.filepath for lib in _threads._scipy_blas.lib_controllers}
    numpy_paths = {lib.filepath for lib in _threads._numpy_blas.lib_controllers}
    assert scipy_paths and not scipy_paths & numpy_paths

    def threads(paths):
        return {lib["num_threads"] for lib in ThreadpoolController().info()
                if lib["filepath"] in paths}

    saved = rnnx.get_num_threads()
    try:
        for n in (1, 2, 3, 64):    # at most one thread per core
            rnnx.set_num_threads(n)
            assert threads(scipy_paths) == {1}
            if numpy_paths:
                assert threads(numpy_paths) == {min(n, _threads._available_cores())}
    finally:
        rnnx.set_num_threads(saved)
