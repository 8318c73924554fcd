"""Inference calls keep a layer's packed weights between calls (rnn.cached_panels): they must
never serve weights that changed, never be handed out as pool scratch, and never be shared
wrongly between threads. Every check compares with a training-mode forward, which packs
afresh each call (`==`: the same arithmetic)."""
import concurrent.futures

import numpy as np
import pytest

import rnnx
from rnnx._kernels._recurrent import refresh_panels
from rnnx.nn.rnn import panels


def arrays(outputs):
    """The arrays of out, h_n or of out, (h_n, c_n), in order."""
    if isinstance(outputs, tuple):
        return [a for item in outputs for a in arrays(item)]
    return [outputs]


def assert_outputs_equal(got, expected):
    """out, h_n (or out, (h_n, c_n)) equal bit for bit."""
    got, expected = arrays(got), arrays(expected)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def fresh_forward(m, x, **kw):
    """m's output from a training-mode forward (packs every weight anew), record dropped."""
    m.train()
    out = m(x, **kw)
    m.clear_records()
    m.eval()
    return out


@pytest.mark.parametrize("cls, kw", [(rnnx.LSTM, {}), (rnnx.GRU, {}), (rnnx.RNN, {}),
                                     (rnnx.LSTM, {"proj_size": 8}),
                                     (rnnx.GRU, {"bidirectional": True})])
@pytest.mark.parametrize("B", [1, 20])
def test_inference_sees_every_change_of_the_weights(cls, kw, B):
    rng = np.random.default_rng(0)
    m = cls(5, 16, num_layers=2, **kw).eval()
    x = rng.standard_normal((6, B, 5)).astype(np.float32)
    m(x)                                               # packs and caches
    changes = [
        lambda p: p.data.__setitem__((0, 0), p.data[0, 0] + 1e-3),   # one element
        lambda p: p.data.__setitem__((-1, -1), -p.data[-1, -1]),     # the last one
        lambda p: p.data.__imul__(0.5),                              # all (optimizer step)
        lambda p: p.data.__setitem__(Ellipsis, p.data[::-1].copy()),  # a permutation
    ]
    for name in ("weight_hh_l0", "weight_ih_l1"):
        for change in changes:
            change(getattr(m, name))
            got = m(x)
            np.testing.assert_array_equal(got[0], fresh_forward(m, x)[0])


def test_signed_zero_and_replaced_arrays_are_noticed():
    """The comparison is of bytes: -0.0 for 0.0 is a change (1 / w differs), and so is a new
    array of another dtype (after .to(float64)) or assigned as the parameter's data."""
    m = rnnx.RNN(3, 16).eval()
    x = np.ones((2, 1, 3), np.float32)
    m(x)
    w = m.weight_ih_l0
    w.data[0, 0] = 0.0
    m(x)
    w.data[0, 0] = -0.0
    entry = m._panel_cache[0, 0]["w_ih"]
    assert refresh_panels(w.data, *entry)              # packed again
    assert np.signbit(entry[0][0, 0])
    m.weight_hh_l0.data = np.full((16, 16), 0.01, np.float32)
    np.testing.assert_array_equal(m(x)[0], fresh_forward(m, x)[0])
    m.to(np.float64)
    x64 = x.astype(np.float64)
    got = m(x64)
    assert got[0].dtype == np.float64
    np.testing.assert_array_equal(got[0], fresh_forward(m, x64)[0])


def test_cached_panels_are_never_pool_scratch():
    """Training calls between inference calls take and give back pool scratch; were a cached
    panel array given to the pool, those calls would overwrite it."""
    rng = np.random.default_rng(1)
    m = rnnx.LSTM(4, 32, num_layers=2)
    x = rng.standard_normal((7, 3, 4)).astype(np.float32)
    m.eval()
    expected = m(x)[0]
    cache = [a for layer in m._panel_cache.values() for entry in layer.values() for a in entry]
    for _ in range(3):
        m.train()
        out, _ = m(x)
        m.backward(np.ones_like(out))
        m.eval()
        np.testing.assert_array_equal(m(x)[0], expected)
    still = [a for layer in m._panel_cache.values() for entry in layer.values() for a in entry]
    assert all(a is b for a, b in zip(cache, still))
    from rnnx._workspace import POOL
    pooled = {id(b) for b in POOL._free}
    assert not any(id(a) in pooled or id(a.base) in pooled for a in still)


def test_big_weights_are_not_cached():
    """Only weights that fit in cache are kept (a bounded copy); bigger ones pack per call."""
    m = rnnx.LSTM(600, 256).eval()    # (600 + 256) * 1024 * 4 bytes > 512 KiB
    m(np.ones((2, 1, 600), np.float32))
    assert m._panel_cache == {(0, 0): {}}
    small = rnnx.LSTM(8, 32).eval()
    small(np.ones((2, 1, 8), np.float32))
    assert set(small._panel_cache[0, 0]) == {"w_ih", "w_hh"}


def test_concurrent_inference_calls_share_the_cache():
    rng = np.random.default_rng(2)
    m = rnnx.GRU(6, 48, num_layers=2).eval()
    xs = [rng.standard_normal((5, b, 6)).astype(np.float32) for b in (1, 2, 17, 1, 3, 9)] * 4
    expected = [fresh_forward(m, x)[0] for x in xs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: m(x)[0], xs))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_refresh_panels_packs_as_panels_and_only_on_change(dtype):
    w = np.random.default_rng(3).standard_normal((37, 11)).astype(dtype)
    copy, out = np.empty_like(w), np.empty_like(panels(w.T))
    assert refresh_panels(w, copy, out, True)
    np.testing.assert_array_equal(out, panels(w.T))
    assert not refresh_panels(w, copy, out)
    w[36, 10] += 1
    assert refresh_panels(w, copy, out)
    np.testing.assert_array_equal(out, panels(w.T))
    np.testing.assert_array_equal(copy, w)


def test_refresh_panels_rejects_mismatched_arrays():
    w = np.zeros((20, 5), np.float32)
    with pytest.raises(ValueError, match="packed_from must have shape"):
        refresh_panels(w, np.zeros((5, 20), np.float32), np.zeros((2, 5, 16), np.float32))
    with pytest.raises(ValueError, match="panels must have shape"):
        refresh_panels(w, np.zeros((20, 5), np.float32), np.zeros((1, 5, 16), np.float32))
    with pytest.raises(ValueError, match="dtype|Buffer"):
        refresh_panels(w, np.zeros((20, 5), np.float64), np.zeros((2, 5, 16), np.float32))
    with pytest.raises(ValueError):
        refresh_panels(w[:, ::2], np.zeros((20, 3), np.float32), np.zeros((2, 3, 16), np.float32))


@pytest.mark.parametrize("cls, kw", [(rnnx.LSTM, {}), (rnnx.GRU, {"bidirectional": True}),
                                     (rnnx.RNN, {"nonlinearity": "relu"}),
                                     (rnnx.LSTM, {"proj_size": 8})])
def test_freeze_gives_the_same_numbers_and_leaves_the_module_alone(cls, kw):
    rng = np.random.default_rng(4)
    m = cls(5, 16, num_layers=2, **kw)
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    frozen = rnnx.freeze(m)
    assert m.training and not frozen.training
    for name, p in m.named_parameters():
        q = dict(frozen.named_parameters())[name]
        assert p.data.flags.writeable and not q.data.flags.writeable
        assert q.grad is None and not q.requires_grad
        np.testing.assert_array_equal(p.data, q.data)
    m.eval()
    for _ in range(2):                    # packs at the first call, reuses at the second
        assert_outputs_equal(frozen(x), m(x))
    entry = frozen._panel_cache[0, 0]["w_hh"]
    assert entry[0] is frozen.weight_hh_l0.data   # packed from the weights themselves


def test_frozen_weights_cannot_change_and_the_copy_does_not_train():
    frozen = rnnx.freeze(rnnx.Sequential(rnnx.GRU(4, 8), rnnx.LastHidden(), rnnx.Linear(8, 3)))
    with pytest.raises(ValueError, match="read-only"):
        frozen[0].weight_hh_l0.data[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        frozen.load_state_dict({k: np.zeros_like(v) for k, v in frozen.state_dict().items()})
    with pytest.raises(RuntimeError, match="frozen"):
        frozen.train()
    with pytest.raises(RuntimeError, match="frozen"):
        frozen[0].train()
    frozen.eval()                           # still allowed
    assert frozen(np.ones((3, 2, 4), np.float32)).shape == (2, 3)
    with pytest.raises(TypeError, match="rnnx Module"):
        rnnx.freeze(np.zeros(3))


def test_frozen_weights_stay_immutable_and_new_arrays_are_checked():
    """numpy refuses to make a frozen weight writeable again; a parameter given a new array is
    no longer trusted, and its changes are seen."""
    m = rnnx.LSTM(3, 16).eval()
    frozen = rnnx.freeze(m)
    x = np.ones((4, 1, 3), np.float32)
    frozen(x)
    with pytest.raises(ValueError):
        frozen.weight_hh_l0.data.flags.writeable = True
    with pytest.raises(ValueError):
        frozen.weight_hh_l0.data[:].flags.writeable = True
    new = np.array(frozen.weight_ih_l0.data)            # a writeable copy, then edited
    frozen.weight_ih_l0.data = new
    frozen(x)
    new[0, 0] += 0.25
    m.weight_ih_l0.data[0, 0] += 0.25
    assert_outputs_equal(frozen(x), m(x))
    frozen.to(np.float64)
    m.to(np.float64)
    assert_outputs_equal(frozen(x.astype(np.float64)), m(x.astype(np.float64)))


def test_a_frozen_copy_given_a_writeable_array_is_checked_again():
    """copy.deepcopy of a frozen module is frozen (read-only weights); a parameter given a
    writeable array is compared at every call."""
    import copy
    frozen = rnnx.freeze(rnnx.GRU(3, 16))
    x = np.ones((4, 1, 3), np.float32)
    frozen(x)
    clone = copy.deepcopy(frozen)
    assert not clone.weight_hh_l0.data.flags.writeable
    clone.weight_hh_l0.data = clone.weight_hh_l0.data.copy()
    clone.weight_hh_l0.data[0, 0] += 0.5
    reference = rnnx.GRU(3, 16)
    reference.load_state_dict(clone.state_dict())
    reference.eval()
    assert_outputs_equal(clone(x), reference(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_panels_takes_any_strides(dtype):
    """The transposed weights (the forward's case) take a fast path; reversed, strided,
    Fortran-ordered and one-row operands pack as the definition says."""
    from rnnx._kernels._recurrent import pack_panels
    w = np.random.default_rng(5).standard_normal((37, 11)).astype(dtype)
    width = 64 // np.dtype(dtype).itemsize
    for b in (w.T, w[::-1].T, w[:, ::-1].T, w[::2].T, w.T[:, 3:], np.asfortranarray(w).T,
              w[:, :1].T, w):
        k, n = b.shape
        out = np.full((-(-n // width), k, width), np.nan, dtype)
        pack_panels(b, out)
        expected = np.zeros_like(out)
        for j in range(n):
            expected[j // width, :, j % width] = b[:, j]
        np.testing.assert_array_equal(out, expected)
