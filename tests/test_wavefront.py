"""The wavefront forward of a unidirectional stack at inference (_kernels/_wavefront.pxi):
when it is chosen, and bitwise the same results as the layer-by-layer path, for every cell,
dtype, thread count, batch size, lengths and initial state."""
import numpy as np
import pytest

import rnnx
import rnnx.nn.rnn as rnn_module
from rnnx._kernels._recurrent import Cell, forward_layer, forward_stack, uses_wavefront

CELLS = [(rnnx.LSTM, {}), (rnnx.GRU, {}), (rnnx.RNN, {}), (rnnx.RNN, {"nonlinearity": "relu"})]
CELL_IDS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


@pytest.fixture
def restore_threads():
    saved = rnnx.get_num_threads()
    yield
    rnnx.set_num_threads(saved)


@pytest.fixture(autouse=True)
def restore_gemm_backend():
    """Every test starts on the default backend ("auto", whatever RNNX_GEMM says: the
    module never runs the wavefront under "blas") and gets back the one it found."""
    saved = rnnx.get_gemm_backend()
    rnnx.set_gemm_backend("auto")
    yield
    rnnx.set_gemm_backend(saved)


def test_uses_wavefront_only_for_small_batch_unidirectional_stacks_at_inference():
    args = dict(cell=Cell.LSTM, B=1, num_layers=2, ndir=1, training=False, I=28, H=128, P=128,
                itemsize=4, num_threads=2)
    rnnx.set_gemm_backend("blas")      # every product through BLAS: the steps are not the
    assert not uses_wavefront(**args)  # micro-kernel's, so no wavefront
    rnnx.set_gemm_backend("microkernel")
    assert uses_wavefront(**args)
    rnnx.set_gemm_backend("auto")
    assert uses_wavefront(**args)
    assert uses_wavefront(**{**args, "B": 15, "num_layers": 5, "num_threads": 4})
    assert uses_wavefront(**{**args, "cell": Cell.GRU, "H": 112, "P": 112})
    assert not uses_wavefront(**{**args, "cell": Cell.GRU, "H": 96, "P": 96})
    for change in ({"num_threads": 1}, {"num_layers": 1}, {"ndir": 2}, {"training": True},
                   {"B": 16}, {"P": 64}, {"I": 4096}, {"H": 512}, {"cell": Cell.RNN_TANH},
                   {"H": 64, "P": 64}):
        assert not uses_wavefront(**{**args, **change}), change


def _outputs(m, x, lengths, hx):
    out, state = m(x, hx, lengths=lengths)
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def _run(m, x, lengths, hx, threads, wavefront):
    """m's outputs with the wavefront forced on or off."""
    rnnx.set_num_threads(threads)
    chosen = rnn_module.uses_wavefront
    rnn_module.uses_wavefront = (lambda *a: True) if wavefront else (lambda *a: False)
    try:
        return _outputs(m, x, lengths, hx)
    finally:
        rnn_module.uses_wavefront = chosen


@pytest.mark.parametrize("cls, kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B", [1, 5, 40])
def test_wavefront_bitwise_equal_to_layer_by_layer(cls, kw, dtype, B, restore_threads):
    """Any thread count (layer groups, and row blocks at B = 40), 2 and 3 layers, full and
    uneven lengths, with and without an initial state: the same bits as the per-layer path
    on one thread."""
    rng = np.random.default_rng(B)
    T, I, H = 9, 7, 24
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    for L in (2, 3):
        m = cls(I, H, num_layers=L, dtype=dtype, **kw).eval()
        h0 = rng.standard_normal((L, B, H)).astype(dtype)
        hx = (h0, rng.standard_normal((L, B, H)).astype(dtype)) if cls is rnnx.LSTM else h0
        for ln, state in ((None, None), (lengths, hx)):
            expected = _run(m, x, ln, state, 1, wavefront=False)
            for threads in (1, 2, 3, 4):
                got = _run(m, x, ln, state, threads, wavefront=True)
                for a, b in zip(got, expected):
                    np.testing.assert_array_equal(a, b)


def test_wavefront_is_what_eval_runs_and_matches_training_forward(restore_threads):
    """Chosen by the module at inference (batch 2, H = 96, two threads): the same bits as the
    training forward, which runs layer by layer; unbatched and batch_first inputs too."""
    rnnx.set_num_threads(2)
    calls = []
    original = rnn_module.forward_stack

    def spy(*args):
        calls.append(args[0])
        return original(*args)

    m = rnnx.LSTM(6, 96, num_layers=3, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 8, 6)).astype(np.float32)
    trained = _outputs(m, x, None, None)
    m.clear_records()
    m.eval()
    rnn_module.forward_stack = spy
    try:
        evaluated = _outputs(m, x, None, None)
        single = _outputs(m, x[1], None, None)
    finally:
        rnn_module.forward_stack = original
    assert calls == [int(Cell.LSTM)] * 2
    for a, b in zip(trained, evaluated):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(single[0], evaluated[0][1])


def _stack_args(L=2, I=4, dtype=np.float32):
    """forward_stack's arguments for a small GRU stack, built as the module builds them."""
    m = rnnx.GRU(I, 8, num_layers=L, dtype=dtype).eval()
    T, B, N = 3, 2, 6
    x = np.zeros((N, I), dtype)
    h = np.zeros((L, B, 8), dtype)
    dirs = [rnn_module.direction_buffers(Cell.GRU, m._weights[l][0], h[l], None, False, N, 8,
                                         m._zero_bias) for l in range(L)]
    for bufs in dirs:
        bufs["gates"] = np.zeros((N, 24), dtype)
    outs = [np.zeros((N, 8), dtype) for _ in range(L)]
    return [int(Cell.GRU), x, np.full(T, B, np.intp), np.arange(T + 1, dtype=np.intp) * B,
            dirs, outs, 8, 2]


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.__setitem__(5, a[5][:1]), ValueError, "one output array per layer"),
    (lambda a: a.__setitem__(0, 7), ValueError, "unknown cell kind"),
    (lambda a: a.__setitem__(1, a[1].astype(np.int32)), TypeError, "float32 or float64"),
    (lambda a: a.__setitem__(1, a[1][:4]), ValueError, "one row per packed step"),
    (lambda a: a[5].__setitem__(1, np.zeros((6, 8), np.float64)), TypeError, r"outs\[1\]"),
    (lambda a: a[4][0].__setitem__("w_hr", np.zeros((4, 8), np.float32)), ValueError,
     "projections"),
])
def test_forward_stack_rejects_bad_arguments(change, error, match):
    args = _stack_args()
    forward_stack(*args)  # the unchanged arguments run
    args = _stack_args()
    change(args)
    with pytest.raises(error, match=match):
        forward_stack(*args)


def test_forward_stack_needs_gates_scratch_and_takes_big_weights():
    """Every layer needs its (N, G*H) gates scratch; weights too big for the step-by-step
    projection work too (each layer projects its input a chunk of steps at a time), although
    the module does not choose the wavefront for them. The wavefront runs every product on
    the micro-kernel, so it matches the layer path with the micro-kernel backend (under
    "auto" the layer path would project such inputs up front through BLAS)."""
    rnnx.set_gemm_backend("microkernel")
    args = _stack_args()
    args[4][1]["gates"] = None
    with pytest.raises(TypeError, match="gates of layer 1"):
        forward_stack(*args)
    assert not uses_wavefront(Cell.GRU, 2, 2, 1, False, 6000, 8, 8, 4, 2)
    rnnx.manual_seed(5)
    args = _stack_args(I=6000)
    rng = np.random.default_rng(0)
    args[1][...] = rng.standard_normal(args[1].shape)
    forward_stack(*args)
    out, h = args[5][1].copy(), [d["h"].copy() for d in args[4]]
    rnnx.manual_seed(5)     # the same weights
    expected = _stack_args(I=6000)
    expected[1][...] = args[1]
    layer_in = expected[1]
    for layer, (bufs, layer_out) in enumerate(zip(expected[4], expected[5])):
        forward_layer(int(Cell.GRU), False, layer_in, expected[2], expected[3], [bufs],
                      layer_out, 8, 1)
        layer_in = layer_out
    np.testing.assert_array_equal(out, expected[5][1])
    for got, bufs in zip(h, expected[4]):
        np.testing.assert_array_equal(got, bufs["h"])
