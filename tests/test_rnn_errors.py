"""Error paths of LSTM / GRU / RNN: every bad argument raises a clear Python exception.

Each case asserts the exception type and a fragment of its message; none may crash the
process, and a failed call must leave the module usable.
"""
import numpy as np
import pytest

import rnnx

F32 = np.float32


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def lstm(**kw):
    return rnnx.LSTM(3, 4, **kw)


def all_modules(**kw):
    return [rnnx.LSTM(3, 4, **kw), rnnx.GRU(3, 4, **kw), rnnx.RNN(3, 4, **kw),
            rnnx.RNN(3, 4, nonlinearity="relu", **kw)]


def module_ids():
    return ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


@pytest.fixture(params=range(4), ids=module_ids())
def module(request):
    return all_modules()[request.param]


def hx_for(m, h0, c0=None):
    if isinstance(m, rnnx.LSTM):
        return (h0, np.zeros((1, 2, 4), F32) if c0 is None else c0)
    return h0


# ---------------------------------------------------------------------------------------
# input

@pytest.mark.parametrize("shape,fragment", [
    ((3,), "got 1D input"),
    ((2, 2, 2, 3), "got 4D input"),
    ((), "got 0D input"),
])
def test_wrong_ndim(module, shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        module(np.zeros(shape, F32))


@pytest.mark.parametrize("shape", [(2, 2, 5), (2, 5), (2, 2, 1)])
def test_wrong_feature_size(module, shape):
    with pytest.raises(ValueError, match="Expected 3, got"):
        module(np.zeros(shape, F32))


def test_wrong_feature_size_batch_first():
    m = rnnx.GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="input_size"):
        m(np.zeros((2, 3, 4), F32))


@pytest.mark.parametrize("x,fragment", [
    (np.zeros((2, 2, 3), np.complex128), "complex128"),
    (np.zeros((2, 2, 3), np.complex64), "complex64"),
    (np.zeros((2, 2, 3), np.int64), "int64"),
    (np.zeros((2, 2, 3), np.int32), "int32"),
    (np.zeros((2, 2, 3), bool), "bool"),
    (np.zeros((2, 2, 3), object), "object"),
    (np.full((2, 2, 3), "a"), "floating-point"),
    ("abc", "floating-point"),
    ([[["a", "b", "c"]]], "floating-point"),
], ids=["complex128", "complex64", "int64", "int32", "bool", "object", "str-array", "str",
        "str-list"])
def test_non_float_input(module, x, fragment):
    with pytest.raises(TypeError, match=fragment):
        module(x)


@pytest.mark.parametrize("shape,fragment", [
    ((0, 2, 3), "0 time steps"),
    ((2, 0, 3), "batch size 0"),
    ((0, 3), "0 time steps"),
])
def test_empty_sequence(module, shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        module(np.zeros(shape, F32))


def test_empty_sequence_batch_first():
    m = rnnx.LSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="non-empty"):
        m(np.zeros((2, 0, 3), F32))
    with pytest.raises(ValueError, match="non-empty"):
        m(np.zeros((0, 2, 3), F32))


# ---------------------------------------------------------------------------------------
# initial states

def test_h0_wrong_shape(module):
    x = np.zeros((2, 2, 3), F32)
    name = "h_0" if isinstance(module, rnnx.LSTM) else "hx"
    for bad in [(1, 3, 4), (2, 2, 4), (1, 2, 5)]:
        with pytest.raises(ValueError, match=rf"Expected {name} size \(1, 2, 4\)"):
            module(x, hx_for(module, np.zeros(bad, F32)))


def test_h0_wrong_ndim_batched(module):
    with pytest.raises(ValueError, match="For batched 3-D input, .* should also be 3-D but got 2-D"):
        module(np.zeros((2, 2, 3), F32), hx_for(module, np.zeros((1, 4), F32)))


def test_h0_wrong_ndim_unbatched(module):
    c0 = np.zeros((1, 4), F32)
    with pytest.raises(ValueError, match="For unbatched 2-D input, .* should also be 2-D but got 3-D"):
        module(np.zeros((2, 3), F32), hx_for(module, np.zeros((1, 1, 4), F32), c0))


def test_h0_wrong_shape_unbatched(module):
    c0 = np.zeros((1, 4), F32)
    with pytest.raises(ValueError, match=r"size \(1, 4\), got \(1, 5\)"):
        module(np.zeros((2, 3), F32), hx_for(module, np.zeros((1, 5), F32), c0))


def test_h0_wrong_shape_with_proj_size():
    m = rnnx.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"Expected h_0 size \(1, 2, 2\), got \(1, 2, 4\)"):
        m(np.zeros((2, 2, 3), F32), (np.zeros((1, 2, 4), F32), np.zeros((1, 2, 4), F32)))
    with pytest.raises(ValueError, match=r"Expected c_0 size \(1, 2, 4\), got \(1, 2, 2\)"):
        m(np.zeros((2, 2, 3), F32), (np.zeros((1, 2, 2), F32), np.zeros((1, 2, 2), F32)))


def test_h0_non_float(module):
    with pytest.raises(TypeError, match="floating-point"):
        module(np.zeros((2, 2, 3), F32), hx_for(module, np.zeros((1, 2, 4), np.int64)))
    with pytest.raises(TypeError, match="complex"):
        module(np.zeros((2, 2, 3), F32), hx_for(module, np.zeros((1, 2, 4), complex)))


@pytest.mark.parametrize("hx", [np.zeros((1, 2, 4), F32), [np.zeros((1, 2, 4), F32)],
                                (np.zeros((1, 2, 4), F32),) * 3, "hc"],
                         ids=["array", "list-of-1", "tuple-of-3", "str"])
def test_lstm_hx_not_a_pair(hx):
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm()(np.zeros((2, 2, 3), F32), hx)


def test_c0_wrong_shape():
    m = lstm()
    h0 = np.zeros((1, 2, 4), F32)
    with pytest.raises(ValueError, match=r"Expected c_0 size \(1, 2, 4\), got \(1, 2, 3\)"):
        m(np.zeros((2, 2, 3), F32), (h0, np.zeros((1, 2, 3), F32)))
    with pytest.raises(ValueError, match="c_0 should also be 3-D"):
        m(np.zeros((2, 2, 3), F32), (h0, np.zeros((2, 4), F32)))
    with pytest.raises(TypeError, match="c_0 must be a floating-point"):
        m(np.zeros((2, 2, 3), F32), (h0, np.zeros((1, 2, 4), np.complex64)))


def test_multilayer_bidirectional_h0_shape():
    m = rnnx.GRU(3, 4, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"Expected hx size \(4, 2, 4\), got \(2, 2, 4\)"):
        m(np.zeros((2, 2, 3), F32), np.zeros((2, 2, 4), F32))


# ---------------------------------------------------------------------------------------
# lengths

@pytest.mark.parametrize("lengths,fragment", [
    ([2], r"expected shape \(3,\), got \(1,\)"),
    ([2, 2, 2, 2], r"expected shape \(3,\), got \(4,\)"),
    ([[2, 2, 2]], r"got \(1, 3\)"),
    (2, r"got \(\)"),
    ([2, 0, 1], r"lengths must be in \[1, 4\].*got 0"),
    ([2, -1, 1], "got -1"),
    ([5, 2, 1], "got 5"),
    ([2.5, 2, 1], "lengths must be integers"),
    ([np.nan, 2, 1], "lengths must be integers"),
    ([np.inf, 2, 1], "lengths must be integers"),
    (["a", "b", "c"], "lengths must be integers"),
    ([True, True, True], "lengths must be integers"),
    ([1 + 1j, 2, 1], "lengths must be integers"),
])
def test_bad_lengths(module, lengths, fragment):
    with pytest.raises(ValueError, match=fragment):
        module(np.zeros((4, 3, 3), F32), lengths=lengths)
    assert not module._records  # nothing recorded by a failed forward


def test_bad_lengths_batch_first_and_unbatched():
    m = rnnx.GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 4\]"):
        m(np.zeros((3, 4, 3), F32), lengths=[4, 4, 5])
    with pytest.raises(ValueError, match=r"expected shape \(1,\)"):
        m(np.zeros((4, 3), F32), lengths=[4, 4])


def test_lengths_with_packed_input():
    m = rnnx.GRU(3, 4)
    packed = rnnx.pack_padded_sequence(np.zeros((4, 2, 3), F32), [4, 2])
    with pytest.raises(ValueError, match="lengths must be None"):
        m(packed, lengths=[4, 2])


def test_packed_input_wrong_feature_size():
    m = rnnx.GRU(3, 4)
    packed = rnnx.pack_padded_sequence(np.zeros((4, 2, 5), F32), [4, 2])
    with pytest.raises(ValueError, match="Expected 3, got 5"):
        m(packed)
    with pytest.raises(TypeError, match="floating-point"):
        m(rnnx.PackedSequence(np.zeros((6, 3), np.int64), [2, 2, 1, 1]))
    with pytest.raises(ValueError, match="PackedSequence"):
        m(rnnx.PackedSequence(np.zeros((5, 3), F32), [2, 2, 1, 1]))


# ---------------------------------------------------------------------------------------
# constructor

@pytest.mark.parametrize("kw,exc,fragment", [
    (dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    (dict(hidden_size=-2), ValueError, "hidden_size must be greater than zero"),
    (dict(input_size=0), ValueError, "input_size must be greater than zero"),
    (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    (dict(dropout=1.5), ValueError, "dropout should be a number in range"),
    (dict(dropout=-0.1), ValueError, "dropout should be a number in range"),
    (dict(dropout=float("nan")), ValueError, "dropout should be a number in range"),
    (dict(dropout="0.5"), ValueError, "dropout should be a number in range"),
    (dict(hidden_size=2.0), TypeError, "hidden_size should be of type int, got: float"),
    (dict(input_size="3"), TypeError, "input_size should be of type int, got: str"),
    (dict(num_layers=1.5), TypeError, "num_layers should be of type int"),
    (dict(hidden_size=True), TypeError, "hidden_size should be of type int, got: bool"),
    (dict(hidden_size=None), TypeError, "hidden_size should be of type int"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64, got int32"),
    (dict(dtype=np.complex64), TypeError, "dtype must be float32 or float64, got complex64"),
    (dict(dtype=np.float16), TypeError, "dtype must be float32 or float64, got float16"),
    (dict(dtype="banana"), TypeError, "dtype must be float32 or float64"),
    (dict(dtype=object), TypeError, "dtype must be float32 or float64"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
@pytest.mark.parametrize("cls", [rnnx.LSTM, rnnx.GRU, rnnx.RNN])
def test_bad_constructor_args(cls, kw, exc, fragment):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    with pytest.raises(exc, match=fragment):
        cls(**args)


@pytest.mark.parametrize("proj_size,exc,fragment", [
    (-1, ValueError, "proj_size should be a positive integer or zero"),
    (4, ValueError, "proj_size has to be smaller than hidden_size"),
    (7, ValueError, "proj_size has to be smaller than hidden_size"),
    (1.0, TypeError, "proj_size should be of type int"),
])
def test_bad_proj_size(proj_size, exc, fragment):
    with pytest.raises(exc, match=fragment):
        rnnx.LSTM(3, 4, proj_size=proj_size)


@pytest.mark.parametrize("cls", [rnnx.GRU, rnnx.RNN])
def test_proj_size_only_for_lstm(cls):
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, "
                                         "not RNN or GRU"):
        cls(3, 4, proj_size=2)


@pytest.mark.parametrize("nonlinearity", ["gelu", "TANH", None, 1])
def test_bad_nonlinearity(nonlinearity):
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        rnnx.RNN(3, 4, nonlinearity=nonlinearity)


# ---------------------------------------------------------------------------------------
# backward

def test_backward_without_pending_forward(module):
    with pytest.raises(RuntimeError, match="without a pending forward"):
        module.backward(np.zeros((2, 2, 4), F32))
    module(np.zeros((2, 2, 3), F32))
    module.backward(np.zeros((2, 2, 4), F32))
    with pytest.raises(RuntimeError, match="without a pending forward"):
        module.backward(np.zeros((2, 2, 4), F32))


def test_backward_after_eval_forward(module):
    module.eval()
    module(np.zeros((2, 2, 3), F32))
    with pytest.raises(RuntimeError, match="without a pending forward"):
        module.backward(None)


@pytest.mark.parametrize("kw,x_shape,bad", [
    (dict(), (2, 2, 3), (2, 2, 5)),
    (dict(), (2, 2, 3), (2, 3, 4)),
    (dict(), (2, 2, 3), (2, 2)),
    (dict(batch_first=True), (2, 5, 3), (5, 2, 4)),
    (dict(bidirectional=True), (2, 2, 3), (2, 2, 4)),
    (dict(), (2, 3), (2, 1, 4)),
], ids=["features", "batch", "ndim", "batch_first", "bidirectional", "unbatched"])
def test_backward_grad_output_wrong_shape(kw, x_shape, bad):
    m = rnnx.GRU(3, 4, **kw)
    m(np.zeros(x_shape, F32))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(.*\), got"):
        m.backward(np.zeros(bad, F32))


def test_backward_grad_output_wrong_shape_packed():
    m = rnnx.LSTM(3, 4)
    packed = rnnx.pack_padded_sequence(np.zeros((4, 2, 3), F32), [4, 2])
    m(packed)
    with pytest.raises(ValueError, match=r"expected grad_output \(packed data\) of shape \(6, 4\)"):
        m.backward(np.zeros((8, 4), F32))


def test_backward_grad_output_bad_dtype(module):
    module(np.zeros((2, 2, 3), F32))
    with pytest.raises(TypeError, match="grad_output must be a floating-point"):
        module.backward(np.zeros((2, 2, 4), np.complex64))


def test_backward_grad_state_wrong_shape(module):
    module(np.zeros((2, 2, 3), F32))
    bad = np.zeros((1, 3, 4), F32)
    with pytest.raises(ValueError, match=r"Expected grad_h_n size \(1, 2, 4\), got \(1, 3, 4\)"):
        module.backward(None, (bad, None) if isinstance(module, rnnx.LSTM) else bad)


def test_lstm_backward_grad_c_wrong_shape_and_not_a_pair():
    m = lstm()
    m(np.zeros((2, 2, 3), F32))
    with pytest.raises(ValueError, match="grad_c_n size"):
        m.backward(None, (None, np.zeros((1, 2, 5), F32)))
    m(np.zeros((2, 2, 3), F32))
    with pytest.raises(TypeError, match="tuple"):
        m.backward(None, np.zeros((1, 2, 4), F32))


@pytest.mark.parametrize("bad_call", ["grad_output", "grad_h_n"])
def test_failed_backward_keeps_the_forward_record(bad_call):
    """A backward that raises on a bad gradient must not consume the forward record.

    Otherwise the corrected retry either finds no record, or silently back-propagates
    through an *earlier* forward call whose record happens to be next on the stack.
    """
    rng = np.random.default_rng(0)
    m = rnnx.GRU(3, 4, dtype=np.float64)
    x1, x2 = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 2, 3))
    go = rng.standard_normal((2, 2, 4))
    m(x2)
    want, _ = m.backward(go)
    m.zero_grad()
    m(x1)
    m(x2)
    with pytest.raises(ValueError):
        if bad_call == "grad_output":
            m.backward(np.zeros((2, 2, 5)))
        else:
            m.backward(go, np.zeros((1, 3, 4)))
    got, _ = m.backward(go)  # must still be the gradient through the x2 call
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# state dicts

def test_load_state_dict_missing_key(module):
    sd = module.state_dict()
    del sd["weight_hh_l0"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "weight_hh_l0". '):
        module.load_state_dict(sd)


def test_load_state_dict_unexpected_key(module):
    sd = module.state_dict()
    sd["weight_ih_l1"] = np.zeros((4, 4), F32)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "weight_ih_l1". '):
        module.load_state_dict(sd)


def test_load_state_dict_wrong_shape(module):
    before = module.state_dict()
    sd = {k: v + 1 for k, v in before.items()}
    sd["weight_ih_l0"] = sd["weight_ih_l0"].T
    with pytest.raises(ValueError, match="size mismatch for weight_ih_l0"):
        module.load_state_dict(sd)
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_bad_dtype(module):
    sd = module.state_dict()
    sd["bias_ih_l0"] = sd["bias_ih_l0"].astype(np.complex64)
    with pytest.raises(TypeError, match="bias_ih_l0: expected a real numeric array"):
        module.load_state_dict(sd)


def test_modules_still_work_after_errors(module):
    """After every kind of failure above, the same module runs normally."""
    for call in (lambda: module(np.zeros((2, 2, 5), F32)),
                 lambda: module(np.zeros((2, 2, 3), F32), lengths=[0, 1]),
                 lambda: module(np.zeros((0, 2, 3), F32))):
        with pytest.raises(ValueError):
            call()
    out, _ = module(np.ones((2, 2, 3), F32))
    gx, _ = module.backward(np.ones_like(out))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(gx))
    assert not module._records
