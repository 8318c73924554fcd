"""rnnx.Stream: chunk by chunk == one call over the whole sequence, bit for bit; per-row
reset, state round trip, errors, no per-step allocation of its own, thread safety."""
import threading
import tracemalloc

import numpy as np
import pytest

import rnnx
from rnnx._kernels._recurrent import Cell, projects_per_step

RNG = np.random.default_rng(0)


def chunkings(T):
    """Ways to cut T steps: one step at a time, all at once, and uneven pieces."""
    uneven = [0, 1, 3, 4, T] if T > 4 else [0, T]
    return [list(range(T + 1)), [0, T], uneven]


def whole_and_chunked(model, x, cuts, batch_first=False, threads=(1, 1)):
    """model(x) at threads[0], and Stream's results over the chunks x[cuts[i]:cuts[i+1]]
    (time axis) at threads[1]."""
    rnnx.set_num_threads(threads[0])
    whole = model(x)
    rnnx.set_num_threads(threads[1])
    B = x.shape[0 if batch_first else 1]
    stream = rnnx.Stream(model, batch_size=B)
    pieces = [stream.step(x[:, a:b] if batch_first else x[a:b], copy=True)
              for a, b in zip(cuts[:-1], cuts[1:])]
    return whole, pieces, stream


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def assert_layer_matches(whole, pieces, batch_first):
    """The chunks' outputs concatenated, and the last chunk's state, equal the whole call's."""
    out, state = whole
    chunked = np.concatenate([p[0] for p in pieces], axis=1 if batch_first else 0)
    np.testing.assert_array_equal(chunked, out)
    for got, expected in zip(as_tuple(pieces[-1][1]), as_tuple(state), strict=True):
        np.testing.assert_array_equal(got, expected)


LAYERS = [
    # (constructor, kwargs)
    (rnnx.LSTM, {}), (rnnx.LSTM, {"proj_size": 3}), (rnnx.GRU, {}), (rnnx.RNN, {}),
    (rnnx.RNN, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("backend", ["microkernel", "auto"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_layers,batch_first", [(1, False), (3, True)])
@pytest.mark.parametrize("ctor,kwargs", LAYERS)
def test_chunked_equals_whole_bitwise(ctor, kwargs, num_layers, batch_first, dtype, backend):
    rnnx.set_gemm_backend(backend)
    rnnx.manual_seed(1)
    model = ctor(5, 7, num_layers=num_layers, batch_first=batch_first, dtype=dtype,
                 **kwargs).eval()
    T = 9
    for B, threads in ((1, (1, 2)), (3, (2, 1)), (20, (1, 2))):
        shape = (B, T, 5) if batch_first else (T, B, 5)
        x = RNG.standard_normal(shape).astype(dtype)
        for cuts in chunkings(T):
            whole, pieces, _ = whole_and_chunked(model, x, cuts, batch_first, threads)
            assert_layer_matches(whole, pieces, batch_first)


def big_layer(ctor):
    """A layer whose weights do not fit the kernels' 512 KiB L2 budget (I = H = 192)."""
    rnnx.manual_seed(2)
    return ctor(192, 192, num_layers=2).eval()


@pytest.mark.parametrize("ctor", [rnnx.LSTM, rnnx.GRU, rnnx.RNN])
@pytest.mark.parametrize("B", [1, 20])
def test_bigger_weights_bitwise_with_the_microkernel(ctor, B):
    rnnx.set_gemm_backend("microkernel")
    model = big_layer(ctor)
    x = RNG.standard_normal((6, B, 192)).astype(np.float32)
    for cuts in ([0, 1, 2, 3, 4, 5, 6], [0, 4, 6]):
        whole, pieces, _ = whole_and_chunked(model, x, cuts, threads=(1, 2))
        assert_layer_matches(whole, pieces, False)


def test_bigger_weights_small_batch_bitwise_under_auto():
    """B < 16: the input projection runs with the time loop's products, as step by step."""
    model = big_layer(rnnx.LSTM)
    x = RNG.standard_normal((6, 3, 192)).astype(np.float32)
    whole, pieces, _ = whole_and_chunked(model, x, [0, 1, 2, 6], threads=(2, 1))
    assert_layer_matches(whole, pieces, False)


def large_batch_big_weights_under_auto():
    """(whole, pieces) of the one case not yet bitwise: see the xfail below."""
    rnnx.set_gemm_backend("auto")
    model = big_layer(rnnx.LSTM)
    assert not projects_per_step(int(Cell.LSTM), 20, 192, 192, 192, 4)
    x = RNG.standard_normal((6, 20, 192)).astype(np.float32)
    whole, pieces, _ = whole_and_chunked(model, x, [0, 1, 2, 3, 4, 5, 6])
    return whole, pieces


def test_bigger_weights_large_batch_under_auto_agrees_to_rounding():
    (out, (h, c)), pieces = large_batch_big_weights_under_auto()
    np.testing.assert_allclose(np.concatenate([p[0] for p in pieces]), out, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(pieces[-1][1][1], c, rtol=1e-5, atol=1e-6)


@pytest.mark.xfail(reason="known: under the 'auto' GEMM backend, a batch of 16+ rows whose "
                   "weights exceed 512 KiB projects every step's input up front in one BLAS "
                   "call over T * B rows (projects_per_step is False, SEQUENCE_PRODUCT), whose "
                   "bits depend on T with OpenBLAS: a chunk's rows round differently from the "
                   "whole sequence's (~1 ulp). To be made strict when the kernel layer "
                   "projects in blocks that do not depend on T.")
def test_bigger_weights_large_batch_under_auto_bitwise():
    whole, pieces = large_batch_big_weights_under_auto()
    assert_layer_matches(whole, pieces, False)


@pytest.mark.parametrize("ctor", [rnnx.LSTMCell, rnnx.GRUCell, rnnx.RNNCell])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_steps_equal_the_cell_loop(ctor, dtype):
    rnnx.manual_seed(3)
    cell = ctor(4, 6, dtype=dtype).eval()
    xs = RNG.standard_normal((5, 3, 4)).astype(dtype)
    stream = rnnx.Stream(cell, batch_size=3)
    state = None
    for x in xs:
        state = cell(x, state)
        got = stream.step(x)
        for g, e in zip(as_tuple(got), as_tuple(state), strict=True):
            np.testing.assert_array_equal(g, e)
    assert np.shape(stream.state if ctor is not rnnx.LSTMCell else stream.state[1]) == (3, 6)


def test_sequential_with_per_step_modules_and_last_time_step():
    rnnx.manual_seed(4)
    model = rnnx.Sequential(rnnx.Embedding(11, 6), rnnx.Tanh(), rnnx.Dropout(0.5),
                            rnnx.LSTM(6, 8, num_layers=2, batch_first=True),
                            rnnx.LastTimeStep(batch_first=True), rnnx.ReLU(),
                            rnnx.Linear(8, 3)).eval()
    ids = RNG.integers(0, 11, (4, 10))
    stream = rnnx.Stream(model, batch_size=4)
    for t in range(10):
        y = stream.step(ids[:, t:t + 1])
        np.testing.assert_array_equal(y, model(ids[:, :t + 1]))


def test_a_linear_on_every_step_agrees_to_rounding():
    """A Linear before the recurrent layer runs on the chunk's T * B rows, the whole call's on
    all of them: NumPy's matrix product (OpenBLAS) rounds a row differently with the number of
    rows, so the results agree to rounding, not bit for bit (the recurrent layers and
    everything after a LastTimeStep / LastHidden, which sees B rows either way, are exact)."""
    rnnx.manual_seed(4)
    model = rnnx.Sequential(rnnx.Linear(40, 48), rnnx.GRU(48, 8), rnnx.LastHidden()).eval()
    x = RNG.standard_normal((10, 3, 40)).astype(np.float32)
    stream = rnnx.Stream(model, batch_size=3)
    for t in range(10):
        y = stream.step(x[t:t + 1])
    np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-6)


def test_sequential_last_hidden_on_a_frozen_model():
    rnnx.manual_seed(5)
    model = rnnx.freeze(rnnx.Sequential(rnnx.GRU(3, 5, num_layers=2), rnnx.LastHidden(),
                                        rnnx.Linear(5, 2)))
    x = RNG.standard_normal((7, 2, 3)).astype(np.float32)
    stream = rnnx.Stream(model, batch_size=2)
    for a, b in ((0, 3), (3, 4), (4, 7)):
        y = stream.step(x[a:b])
        np.testing.assert_array_equal(y, model(x[:b]))


def test_several_recurrent_modules_carry_a_state_each():
    rnnx.manual_seed(6)
    model = rnnx.Sequential(rnnx.LSTM(3, 4), rnnx.LastTimeStep(), rnnx.Linear(4, 3),
                            rnnx.GRUCell(3, 5)).eval()
    stream = rnnx.Stream(model, batch_size=2)
    x = RNG.standard_normal((1, 2, 3)).astype(np.float32)
    stream.step(x)
    (h, c), g = stream.state
    assert h.shape == c.shape == (1, 2, 4) and g.shape == (2, 5)


def test_reset_rows_leaves_the_other_streams_untouched():
    rnnx.manual_seed(7)
    model = rnnx.LSTM(3, 5, num_layers=2).eval()
    x = RNG.standard_normal((8, 4, 3)).astype(np.float32)
    for rows in (np.array([True, False, True, False]), [2, 0], np.array([-1])):
        stream = rnnx.Stream(model, batch_size=4)
        stream.step(x[:4])
        stream.reset(rows)
        out, _ = stream.step(x[4:])
        mask = np.zeros(4, bool)
        mask[np.asarray(rows)] = True
        fresh, _ = model(x[4:])
        continued, _ = model(x)
        np.testing.assert_array_equal(out[:, mask], fresh[:, mask])
        np.testing.assert_array_equal(out[:, ~mask], continued[4:, ~mask])
    stream.reset()
    assert not np.any(stream.state[0]) and not np.any(stream.state[1])


def test_reset_rejects_bad_rows():
    stream = rnnx.Stream(rnnx.GRU(2, 3).eval(), batch_size=3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        stream.reset(np.array([True, False]))
    with pytest.raises(IndexError, match=r"\[-3, 3\)"):
        stream.reset([3])
    with pytest.raises(TypeError, match="bool mask or integer"):
        stream.reset([0.5])


def test_state_round_trip_and_seeding():
    rnnx.manual_seed(8)
    model = rnnx.LSTM(3, 5, proj_size=2, num_layers=2).eval()
    x = RNG.standard_normal((6, 3, 3)).astype(np.float32)
    stream = rnnx.Stream(model, batch_size=3)
    stream.step(x[:2])
    saved = stream.state
    assert saved[0].shape == (2, 3, 2) and saved[1].shape == (2, 3, 5)
    first = stream.step(x[2:], copy=True)
    stream.state = saved
    np.testing.assert_array_equal(stream.step(x[2:])[0], first[0])
    # a seeded state gives what model(x, hx) gives
    other = rnnx.Stream(model, batch_size=3)
    other.state = saved
    out, (h, c) = other.step(x[2:])
    expected, (eh, ec) = model(x[2:], saved)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(h, eh)
    np.testing.assert_array_equal(c, ec)


def test_state_write_is_checked():
    stream = rnnx.Stream(rnnx.LSTM(3, 5, num_layers=2).eval(), batch_size=3)
    h = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"tuple \(h, c\)"):
        stream.state = h
    with pytest.raises(ValueError, match=r"must have shape \(2, 3, 5\), got \(1, 3, 5\)"):
        stream.state = (h[:1], h)
    with pytest.raises(TypeError, match="must be float32"):
        stream.state = (h, h.astype(np.float64))
    with pytest.raises(TypeError, match="float array"):
        stream.state = (h, [[0.0]])


def test_returned_state_is_a_read_only_view_unless_copied():
    stream = rnnx.Stream(rnnx.GRU(2, 3).eval(), batch_size=1)
    x = np.ones((1, 1, 2), np.float32)
    _, h = stream.step(x)
    kept = h.copy()
    assert not h.flags.writeable
    _, h_copy = stream.step(x, copy=True)
    assert h_copy.flags.writeable and not np.shares_memory(h_copy, h)
    assert not np.array_equal(h, kept)          # updated in place by the next step
    np.testing.assert_array_equal(h, h_copy)


def test_refusals():
    with pytest.raises(ValueError, match="bidirectional.*future"):
        rnnx.Stream(rnnx.LSTM(3, 4, bidirectional=True).eval(), batch_size=1)
    with pytest.raises(ValueError, match="training mode.*eval"):
        rnnx.Stream(rnnx.Sequential(rnnx.GRU(3, 4), rnnx.LastHidden()), batch_size=1)
    with pytest.raises(ValueError, match="MeanOverTime"):
        rnnx.Stream(rnnx.Sequential(rnnx.GRU(3, 4), rnnx.MeanOverTime()).eval(), batch_size=1)
    with pytest.raises(ValueError, match="no recurrent"):
        rnnx.Stream(rnnx.Linear(3, 4).eval(), batch_size=1)
    with pytest.raises(TypeError, match="batch_size should be of type int"):
        rnnx.Stream(rnnx.GRU(3, 4).eval(), batch_size=2.0)
    with pytest.raises(ValueError, match="at least 1"):
        rnnx.Stream(rnnx.GRU(3, 4).eval(), batch_size=0)
    with pytest.raises(TypeError, match="rnnx Module"):
        rnnx.Stream(object(), batch_size=1)


def test_step_checks_the_batch_and_the_mode():
    model = rnnx.GRU(3, 4, batch_first=True).eval()
    stream = rnnx.Stream(model, batch_size=2)
    with pytest.raises(ValueError, match="2 streams on axis 0.*got shape \\(3, 1, 3\\)"):
        stream.step(np.zeros((3, 1, 3), np.float32))
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        stream.step(np.zeros((2, 1, 3), np.float32))


def test_no_allocation_of_its_own_per_step():
    """After the first call, the stream's buffers and returned state views are the same
    objects at every step, and stepping leaves no memory behind. (The module call itself
    allocates its output and scratch per call: measured, not Stream's.) The warm-up is long:
    the interpreter's free lists (tuples) keep growing over the first ~2000 calls of a layer,
    then stay put."""
    model = rnnx.freeze(rnnx.LSTM(4, 8, num_layers=2))
    stream = rnnx.Stream(model, batch_size=2)
    x = RNG.standard_normal((1, 2, 4)).astype(np.float32)
    _, state = stream.step(x)
    buffers = [b for stage in stream._recurrent for b in stage.buffers]
    tracemalloc.start()
    try:
        for _ in range(3000):
            stream.step(x)
        before = tracemalloc.take_snapshot()
        for _ in range(200):
            _, again = stream.step(x)
            assert again is state
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096, [s for s in after.compare_to(before, "lineno")[:5]]
    ours = [s for s in after.compare_to(before, "lineno")
            if s.traceback[0].filename.endswith("stream.py") and s.size_diff > 0]
    assert not ours, ours
    assert [b for stage in stream._recurrent for b in stage.buffers] == buffers


class _Gate(rnnx.Identity):
    """An Identity that, when armed, waits inside the call until released."""

    def __init__(self):
        super().__init__()
        self.armed, self.entered, self.release = False, threading.Event(), threading.Event()

    def forward(self, x):
        if self.armed:
            self.entered.set()
            self.release.wait(10)
        return x


def test_two_threads_on_one_stream_get_an_error():
    gate = _Gate()
    model = rnnx.Sequential(gate, rnnx.GRU(2, 3)).eval()
    stream = rnnx.Stream(model, batch_size=1)
    x = np.ones((1, 1, 2), np.float32)
    gate.armed = True
    worker = threading.Thread(target=stream.step, args=(x,))
    worker.start()
    try:
        assert gate.entered.wait(10)
        with pytest.raises(RuntimeError, match="another thread is stepping this stream"):
            stream.step(x)
        with pytest.raises(RuntimeError, match="another thread"):
            stream.reset()
    finally:
        gate.release.set()
        worker.join()
    gate.armed = False
    stream.step(x)   # free again


def test_one_stream_per_thread():
    rnnx.manual_seed(9)
    model = rnnx.freeze(rnnx.LSTM(3, 6, num_layers=2))
    xs = [RNG.standard_normal((12, 2, 3)).astype(np.float32) for _ in range(3)]
    expected = [model(x)[0] for x in xs]
    results = [None] * 3

    def run(i):
        stream = rnnx.Stream(model, batch_size=2)
        results[i] = np.concatenate([stream.step(xs[i][t:t + 1], copy=True)[0]
                                     for t in range(12)])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
