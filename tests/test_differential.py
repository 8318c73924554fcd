"""Property-based differential tests: the kernels against the NumPy oracle (rnnx._reference)
over random configurations, on one and two threads.

test_reference.py's random test covers small batches on one thread; these add what the
thread count changes (row blocks from 16 rows, the thread team for one direction of few
rows and wide steps), PackedSequence input with unsorted lengths, and the cells. Forward
outputs, final states and every gradient (input, initial states, each parameter) are
compared. Bounded: a few dozen examples each, derandomized so CI runs the same ones.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rnnx
from helpers import assert_close
from rnnx import _reference as ref
from test_reference import MODES, TOL, compare_with_reference, make_module, random_params

BOUNDED = settings(max_examples=100, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


def on_threads(threads, fn, *args, **kwargs):
    saved = rnnx.get_num_threads()
    rnnx.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        rnnx.set_num_threads(saved)


# hidden sizes whose steps reach the kernels' MIN_TEAM_WORK (P * gates * H >= 32768)
TEAM_H = {"LSTM": 96, "GRU": 112, "RNN_TANH": 184}


@st.composite
def layer_configs(draw):
    """Sequence-module configurations that exercise the kernels' parallel paths."""
    mode = draw(st.sampled_from(MODES))
    kind = draw(st.sampled_from(["small batch", "row blocks", "team-sized steps"]))
    team = kind == "team-sized steps" and mode != "RNN_RELU"
    T = draw(st.integers(1, 5))
    if team:  # one direction, few rows, steps wide enough for the thread team
        B, H, L, D = draw(st.integers(1, 6)), TEAM_H[mode], 1, False
    else:
        B = draw(st.integers(16, 40) if kind == "row blocks" else st.integers(1, 4))
        H, L, D = draw(st.integers(1, 5)), draw(st.integers(1, 2)), draw(st.booleans())
    cfg = dict(mode=mode, T=T, B=B, I=draw(st.integers(1, 5)), H=H, num_layers=L,
               bidirectional=D, bias=draw(st.booleans()), batch_first=draw(st.booleans()),
               dtype=draw(st.sampled_from([np.float32, np.float64])),
               with_h0=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))
    if mode == "LSTM" and not team and H > 1 and draw(st.booleans()):
        cfg["proj_size"] = draw(st.integers(1, H - 1))
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        lengths[draw(st.integers(0, B - 1))] = T
        cfg["lengths"] = lengths
    return cfg, draw(st.sampled_from([1, 2]))


@BOUNDED
@given(layer_configs())
def test_layers_match_reference_on_one_and_two_threads(cfg_threads):
    cfg, threads = cfg_threads
    event(f"threads={threads}, " + ("team-sized steps" if cfg["H"] > 50 else
                                    "row blocks" if cfg["B"] >= 16 else "small batch"))
    on_threads(threads, compare_with_reference, param_scale=0.6 if cfg["H"] < 50 else 0.1,
               **cfg)


@st.composite
def packed_configs(draw):
    mode = draw(st.sampled_from(MODES))
    T, B = draw(st.integers(1, 5)), draw(st.one_of(st.integers(1, 5), st.integers(16, 24)))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    lengths[draw(st.integers(0, B - 1))] = T
    H = draw(st.integers(1, 4))
    proj = draw(st.integers(0, H - 1)) if mode == "LSTM" else 0
    return dict(mode=mode, T=T, B=B, I=draw(st.integers(1, 4)), H=H, proj_size=proj,
                num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                bias=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])),
                lengths=lengths, threads=draw(st.sampled_from([1, 2])),
                seed=draw(st.integers(0, 2 ** 16)))


@settings(BOUNDED, max_examples=25)
@given(packed_configs())
def test_packed_input_matches_reference(cfg):
    on_threads(cfg.pop("threads"), _compare_packed, **cfg)


def _compare_packed(mode, T, B, I, H, proj_size, num_layers, bidirectional, bias, dtype, lengths,
                    seed):
    """A PackedSequence of unsorted lengths, with h0 (c0) and gradients of every output."""
    rng = np.random.default_rng(seed)
    lstm, D, P = mode == "LSTM", 2 if bidirectional else 1, proj_size or H
    m = make_module(mode, I, H, num_layers, bidirectional, bias, proj_size, dtype=dtype)
    m.load_state_dict(random_params(mode, I, H, num_layers, bidirectional, bias, proj_size, rng))
    params = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((num_layers * D, B, P)).astype(dtype)
    c0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype) if lstm else None
    go = rng.standard_normal((T, B, D * P)).astype(dtype)
    gh = rng.standard_normal(h0.shape).astype(dtype)
    gc = rng.standard_normal(c0.shape).astype(dtype) if lstm else None
    mask = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    go *= mask[..., None]  # the packed gradient has no rows past each end

    packed = rnnx.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, hn = m(packed, (h0, c0) if lstm else h0)
    grad_packed = rnnx.pack_padded_sequence(go, lengths, enforce_sorted=False)
    gx, gs = m.backward(grad_packed, (gh, gc) if lstm else gh)
    out_padded, _ = rnnx.pad_packed_sequence(out, total_length=T)
    gx_padded, _ = rnnx.pad_packed_sequence(gx, total_length=T)

    r_out, r_hn, r_cn = ref.forward(mode, params, x, h0, c0, num_layers, bidirectional, lengths)
    r = ref.backward(mode, params, x, h0, c0, num_layers, bidirectional, lengths, grad_out=go,
                     grad_h_n=gh, grad_c_n=gc)
    tol = TOL[dtype]
    assert_close(out_padded, r_out, tol, "out")
    assert_close(gx_padded, r["x"], tol, "grad x")
    assert_close(hn[0] if lstm else hn, r_hn, tol, "h_n")
    assert_close(gs[0] if lstm else gs, r["h0"], tol, "grad h0")
    if lstm:
        assert_close(hn[1], r_cn, tol, "c_n")
        assert_close(gs[1], r["c0"], tol, "grad c0")
    for name, p in m.named_parameters():
        assert_close(p.grad, r[name], tol, f"grad {name}")


CELLS = {"LSTM": rnnx.LSTMCell, "GRU": rnnx.GRUCell, "RNN_TANH": rnnx.RNNCell,
         "RNN_RELU": lambda I, H, **kw: rnnx.RNNCell(I, H, nonlinearity="relu", **kw)}


@settings(BOUNDED, max_examples=30)
@given(mode=st.sampled_from(MODES), B=st.integers(0, 20), I=st.integers(1, 5),
       H=st.integers(1, 5), bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       steps=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_cells_match_reference(mode, B, I, H, bias, dtype, steps, seed):
    """A cell run over `steps` steps in a Python loop and back-propagated step by step is the
    oracle's one-layer network over the sequence (B = 0: one unbatched sequence)."""
    rng = np.random.default_rng(seed)
    lstm = mode == "LSTM"
    cell = CELLS[mode](I, H, bias=bias, dtype=dtype)
    params = random_params(mode, I, H, bias=bias, rng=rng)
    cell.load_state_dict({k[:-3]: v for k, v in params.items()})  # weight_ih_l0 -> weight_ih
    Bn = max(B, 1)
    x = rng.standard_normal((steps, Bn, I)).astype(dtype)
    h0 = rng.standard_normal((1, Bn, H)).astype(dtype)
    c0 = rng.standard_normal((1, Bn, H)).astype(dtype) if lstm else None
    go = rng.standard_normal((steps, Bn, H)).astype(dtype)
    gc = rng.standard_normal((1, Bn, H)).astype(dtype) if lstm else None

    def shaped(a):
        return a if B else a[0]
    h, c = shaped(h0[0]), None if c0 is None else shaped(c0[0])
    outs = []
    for t in range(steps):
        if lstm:
            h, c = cell(shaped(x[t]), (h, c))
        else:
            h = cell(shaped(x[t]), h)
        outs.append(h)
    dh, dc = np.zeros_like(h), None if c0 is None else shaped(gc[0])
    gx = [None] * steps
    for t in reversed(range(steps)):
        dh = dh + shaped(go[t])
        if lstm:
            gx[t], (dh, dc) = cell.backward((dh, dc))
        else:
            gx[t], dh = cell.backward(dh)
    r_out, r_hn, r_cn = ref.forward(mode, params, x, h0, c0)
    r = ref.backward(mode, params, x, h0, c0, grad_out=go, grad_c_n=gc)
    tol = TOL[dtype]
    assert_close(np.stack(outs), r_out if B else r_out[:, 0], tol, "h")
    assert_close(np.stack(gx), r["x"] if B else r["x"][:, 0], tol, "grad x")
    assert_close(dh, shaped(r["h0"][0]), tol, "grad h0")
    if lstm:
        assert_close(c, shaped(r_cn[0]), tol, "c")
        assert_close(dc, shaped(r["c0"][0]), tol, "grad c0")
    for name, p in cell.named_parameters():
        assert_close(p.grad, r[name + "_l0"], tol, f"grad {name}")
