"""Misuse that must be loud: pending records, mismatched gradients, parameters whose data or
gradient arrays were replaced, weights changed between forward and backward, callers refilling
their buffers (which a sequence module reads in place, a cell or Linear copies), PackedSequence
indices that are not permutations, empty Linear layers."""
import copy
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import rnnx
from rnnx import nn
from rnnx.nn.module import RECORDS_WARNING_THRESHOLD

F32 = np.float32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------
# pending records


def test_records_warning_once_per_threshold_crossing():
    lstm = rnnx.LSTM(3, 4)
    x = np.zeros((2, 1, 3), F32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [lstm(x) for _ in range(RECORDS_WARNING_THRESHOLD)]  # kept: so are records
        assert not caught
        outputs.append(lstm(x))
        assert len(caught) == 1 and issubclass(caught[0].category, rnnx.RecordsWarning)
        assert issubclass(rnnx.RecordsWarning, RuntimeWarning)
        message = str(caught[0].message)
        for advice in ("eval()", "no_grad()", "clear_records()", "65 forward records"):
            assert advice in message
        outputs.append(lstm(x))
        assert len(caught) == 1               # once per crossing, not once per forward
        lstm.backward(None)
        lstm.backward(None)                   # back to the threshold ...
        outputs.append(lstm(x))
        assert len(caught) == 2               # ... and over it again: a new crossing
        lstm.clear_records()
        outputs += [lstm(x) for _ in range(RECORDS_WARNING_THRESHOLD)]
        assert len(caught) == 2


def test_no_records_warning_in_eval_mode():
    lin = rnnx.Linear(2, 2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2 * RECORDS_WARNING_THRESHOLD):
            lin(np.zeros((1, 2), F32))


def test_clear_records_is_recursive():
    model = rnnx.Sequential(rnnx.GRU(3, 4), rnnx.LastHidden(), rnnx.Linear(4, 2))
    model(np.zeros((2, 1, 3), F32))
    assert all(m._records for m in model.modules())
    model.clear_records()
    assert not any(m._records for m in model.modules())
    with pytest.raises(RuntimeError, match="without a pending forward"):
        model[2].backward(np.zeros((1, 2), F32))


def _pair(module, x_a, x_b, grad_a, expected, got):
    """forward A, forward B, then a backward shaped for A: ValueError naming both shapes,
    the record of B not consumed."""
    outputs = module(x_a), module(x_b)  # kept: a record lives as long as its output  # noqa: F841
    pattern = rf"expected .* of shape {re_shape(expected)}, got {re_shape(got)}"
    with pytest.raises(ValueError, match=pattern):
        module.backward(*grad_a)
    assert len(module._records) == 2


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("make", [lambda: rnnx.LSTM(3, 4), lambda: rnnx.GRU(3, 4),
                                  lambda: rnnx.RNN(3, 4, batch_first=True)],
                         ids=["LSTM", "GRU", "RNN"])
def test_backward_for_an_earlier_forward_is_refused_recurrent(make):
    m = make()
    x_a, x_b = np.zeros((5, 2, 3), F32), np.zeros((3, 2, 3), F32)
    _pair(m, x_a, x_b, (np.zeros((5, 2, 4), F32),), (3, 2, 4), (5, 2, 4))


def test_backward_for_an_earlier_forward_is_refused_other_layers():
    _pair(rnnx.Linear(3, 2), np.zeros((5, 3), F32), np.zeros((4, 3), F32),
          (np.zeros((5, 2), F32),), (4, 2), (5, 2))
    for p in (0.0, 0.5):
        _pair(rnnx.Dropout(p), np.zeros((5, 3), F32), np.zeros((4, 3), F32),
              (np.zeros((5, 3), F32),), (4, 3), (5, 3))
    _pair(rnnx.LSTMCell(3, 4), np.zeros((5, 3), F32), np.zeros((4, 3), F32),
          ((np.zeros((5, 4), F32), None),), (4, 4), (5, 4))
    _pair(rnnx.GRUCell(3, 4), np.zeros((5, 3), F32), np.zeros((4, 3), F32),
          (np.zeros((5, 4), F32),), (4, 4), (5, 4))
    state = np.zeros((1, 5, 4), F32), np.zeros((1, 4, 4), F32)
    _pair(rnnx.LastHidden(False), (None, state[0]), (None, state[1]), (np.zeros((5, 4), F32),),
          (4, 4), (5, 4))
    _pair(rnnx.LastTimeStep(), (np.zeros((2, 5, 4), F32), None),
          (np.zeros((2, 4, 4), F32), None), (np.zeros((5, 4), F32),), (4, 4), (5, 4))
    loss = rnnx.MSELoss(reduction="none")
    loss(np.zeros(5, F32), np.zeros(5, F32))
    loss(np.zeros(4, F32), np.zeros(4, F32))
    with pytest.raises(ValueError, match=r"expected grad_loss of shape \(4,\), got \(5,\)"):
        loss.backward(np.ones(5, F32))


# ---------------------------------------------------------------------------------------
# parameters and gradients


def test_read_only_grad_is_refused_before_any_write():
    m = rnnx.LSTM(3, 4, num_layers=2)
    m(np.ones((2, 2, 3), F32))
    m.weight_ih_l0.grad.setflags(write=False)
    before = {n: p.grad.copy() for n, p in m.named_parameters()}
    with pytest.raises(ValueError, match=r"LSTM.weight_ih_l0.grad is read-only"):
        m.backward(np.ones((2, 2, 4), F32))
    for n, p in m.named_parameters():     # layer 1 ran first in backward: nothing written
        np.testing.assert_array_equal(p.grad, before[n])
    assert len(m._records) == 1


@pytest.mark.parametrize("bad, match", [
    (lambda g: g.astype(np.float64), r"dtype float32 .* got shape \(16, 3\) and dtype float64"),
    (lambda g: np.zeros((3, 16), F32), r"expected an array of shape \(16, 3\)"),
    (lambda g: np.zeros((3, 16), F32).T, "C-contiguous"),
    (lambda g: [[0.0] * 3] * 16, "expected a numpy array, got list"),
], ids=["dtype", "shape", "strided", "list"])
def test_bad_grad_arrays_are_refused(bad, match):
    for m, x, name in ((rnnx.LSTM(3, 4), np.ones((2, 2, 3), F32), "weight_ih_l0"),
                       (rnnx.LSTMCell(3, 4), np.ones((2, 3), F32), "weight_ih")):
        m(x)
        p = getattr(m, name)
        p.grad = bad(p.grad)
        with pytest.raises((ValueError, TypeError), match=match):
            m.backward(None)


def test_linear_grad_checks():
    lin = rnnx.Linear(3, 2)
    lin(np.ones((4, 3), F32))
    lin.bias.grad = np.zeros(3, F32)
    with pytest.raises(ValueError, match=r"Linear.bias.grad: expected an array of shape \(2,\)"):
        lin.backward(np.ones((4, 2), F32))
    lin.bias.grad = None                   # None: backward allocates it
    lin.backward(np.ones((4, 2), F32))
    np.testing.assert_allclose(lin.bias.grad, [4, 4])


def test_read_only_memmap_grad_does_not_crash(tmp_path):
    """A read-only memmap .grad used to SIGSEGV in the kernels' GEMM store: run in a child."""
    code = textwrap.dedent(f"""
        import numpy as np, rnnx
        m = rnnx.LSTM(3, 4)
        m(np.ones((2, 2, 3), np.float32))
        path = {str(tmp_path / "g.bin")!r}
        np.zeros((16, 4), np.float32).tofile(path)
        m.weight_hh_l0.grad = np.memmap(path, np.float32, "r", shape=(16, 4))
        try:
            m.backward(np.ones((2, 2, 4), np.float32))
        except ValueError as e:
            print("refused:", e)
    """)
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused: LSTM.weight_hh_l0.grad is read-only" in out.stdout


def test_kernel_refuses_read_only_outputs():
    from rnnx._kernels._recurrent import Cell, DirectionBuffers, LayerPlan, forward_layer
    x = np.ones((2, 3), F32)
    out = np.zeros((2, 4), F32)
    out.setflags(write=False)
    plan = LayerPlan(Cell.RNN_TANH, False, np.array([2], np.intp), np.array([0, 2], np.intp),
                     3, 4, 4, 1, F32)
    with pytest.raises(ValueError, match="out: expected a writeable array"):
        forward_layer(plan, x, [DirectionBuffers()], out)


@pytest.mark.parametrize("out, error, match", [
    (np.zeros((2, 5), F32), ValueError, r"out: expected the layer output, shape \(2, 4\), "
                                        r"got \(2, 5\)"),
    (np.zeros((4, 2), F32), ValueError, r"out: expected the layer output, shape \(2, 4\), "
                                        r"got \(4, 2\)"),
    (np.zeros((2, 4), np.float64), TypeError, "out: expected dtype float32, got float64"),
    ([[0.0] * 4] * 2, TypeError, "out: expected a numpy array, got list"),
])
def test_kernel_backward_checks_the_layer_output(out, error, match):
    from rnnx._kernels._recurrent import Cell, DirectionBuffers, LayerPlan, backward_layer
    x = np.ones((2, 3), F32)
    plan = LayerPlan(Cell.RNN_TANH, True, np.array([2], np.intp), np.array([0, 2], np.intp),
                     3, 4, 4, 1, F32)
    with pytest.raises(error, match=match):
        backward_layer(plan, x, out, [DirectionBuffers()], None, None)


@pytest.mark.parametrize("make, x, name, replace, match", [
    (lambda: rnnx.LSTM(3, 4), np.ones((2, 1, 3), F32), "weight_ih_l0", lambda d: d.T.copy(),
     r"LSTM.weight_ih_l0: expected \(16, 3\), got \(3, 16\)"),
    (lambda: rnnx.LSTM(3, 4), np.ones((2, 1, 3), F32), "weight_ih_l0", lambda d: d.T,
     r"LSTM.weight_ih_l0: expected \(16, 3\), got \(3, 16\)"),
    (lambda: rnnx.GRU(3, 4, bidirectional=True), np.ones((2, 1, 3), F32), "bias_hh_l0_reverse",
     lambda d: np.zeros(13, F32), r"GRU.bias_hh_l0_reverse: expected \(12,\), got \(13,\)"),
    (lambda: rnnx.LSTM(3, 4, proj_size=2), np.ones((2, 1, 3), F32), "weight_hr_l0",
     lambda d: d.astype(np.float64), "weight_hr_l0: expected dtype float32 .* got float64"),
    (lambda: rnnx.GRUCell(3, 4), np.ones((2, 3), F32), "weight_hh",
     lambda d: np.zeros((12, 5), F32), r"GRUCell.weight_hh: expected \(12, 4\), got \(12, 5\)"),
    (lambda: rnnx.Linear(3, 2), np.ones((2, 3), F32), "weight",
     lambda d: d.T.copy(), r"Linear.weight: expected \(2, 3\), got \(3, 2\)"),
    (lambda: rnnx.Linear(3, 2), np.ones((2, 3), F32), "bias",
     lambda d: [1.0, 2.0], "Linear.bias: expected a Parameter holding a numpy array, got list"),
], ids=["transposed", "transposed-view", "long-bias", "dtype", "cell", "linear", "list"])
def test_replaced_parameter_data_is_named_at_forward(make, x, name, replace, match):
    m = make()
    p = getattr(m, name)
    p.data = replace(p.data)
    for mode in (True, False):
        m.train(mode)
        with pytest.raises((ValueError, TypeError), match=match):
            m(x)


@pytest.mark.parametrize("view", [
    lambda d: np.asfortranarray(d),
    lambda d: np.repeat(d, 2, axis=0)[::2],
    lambda d: np.ascontiguousarray(d.T).T,
], ids=["fortran", "strided", "transposed-back"])
def test_non_contiguous_view_of_the_right_shape_is_copied_into_data(view):
    """As PyTorch accepts p.data = a non-contiguous tensor of the right shape, rnnx stores the
    view as a C-contiguous copy (the kernels read C order): the results are those of the
    values assigned."""
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(F32)
    m = rnnx.RNN(3, 4)
    reference = copy.deepcopy(m)
    values = np.ones((4, 4), F32) + np.eye(4, dtype=F32)
    m.weight_hh_l0.data = view(values)
    reference.weight_hh_l0.data = values.copy()
    assert m.weight_hh_l0.data.flags.c_contiguous
    np.testing.assert_array_equal(m.weight_hh_l0.data, values)
    for mode in (True, False):
        np.testing.assert_array_equal(m.train(mode)(x)[0], reference.train(mode)(x)[0])


def _all_read_only(m):
    for p in m.parameters():
        p.data.setflags(write=False)


@pytest.mark.parametrize("make, x", [
    (lambda: rnnx.LSTM(3, 8, num_layers=2, bidirectional=True, proj_size=4),
     np.ones((4, 2, 3), F32)),
    (lambda: rnnx.GRU(3, 8, batch_first=True), np.ones((2, 4, 3), F32)),
    (lambda: rnnx.RNN(3, 8, nonlinearity="relu", dtype=np.float64), np.ones((4, 2, 3))),
    (lambda: rnnx.LSTMCell(3, 8), np.ones((2, 3), F32)),
    (lambda: rnnx.GRUCell(3, 8), np.ones((2, 3), F32)),
    (lambda: rnnx.Linear(3, 8), np.ones((2, 3), F32)),
], ids=["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "Linear"])
def test_read_only_data_works_for_inference_and_training(make, x):
    rnnx.manual_seed(1)
    m = make()
    ref = m.eval()(x)
    m.train().backward(*_grads_like(m(x)))
    ref_grads = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    _all_read_only(m)
    for a, b in zip(_flat(ref), _flat(m.eval()(x))):
        np.testing.assert_array_equal(a, b)
    m.train().backward(*_grads_like(m(x)))
    for p, g in zip(m.parameters(), ref_grads):
        np.testing.assert_array_equal(p.grad, g)


def _flat(y):
    if isinstance(y, tuple):
        return [a for item in y for a in _flat(item)]
    return [y]


def _grads_like(y):
    """Ones for the output of m(x) in the structure its backward takes."""
    if isinstance(y, tuple) and isinstance(y[1], tuple):     # LSTM: out, (h, c)
        return np.ones_like(y[0]), None
    if isinstance(y, tuple) and len(y) == 2 and y[0].ndim == 3:  # GRU/RNN: out, h
        return np.ones_like(y[0]), None
    if isinstance(y, tuple):                                  # LSTMCell: (h, c)
        return ((np.ones_like(y[0]), None),)
    return (np.ones_like(y),)


# ---------------------------------------------------------------------------------------
# weights changed between forward and backward


@pytest.mark.parametrize("make, x", [
    (lambda: rnnx.LSTM(3, 4, proj_size=2), np.ones((3, 2, 3), F32)),
    (lambda: rnnx.GRU(3, 4, num_layers=2), np.ones((3, 2, 3), F32)),
    (lambda: rnnx.RNNCell(3, 4), np.ones((2, 3), F32)),
    (lambda: rnnx.Linear(3, 4), np.ones((2, 3), F32)),
], ids=["LSTM", "GRU", "RNNCell", "Linear"])
@pytest.mark.parametrize("change", ["optimizer", "element", "load_state_dict", "assign"])
def test_weights_changed_before_backward_raise(make, x, change):
    m = make()
    y = m(x)
    names = [n for n, _ in m.named_parameters() if n.startswith("weight")]
    if change == "optimizer":
        for p in m.parameters():
            p.grad[...] = 1
        rnnx.SGD(m.parameters(), lr=0.1).step()
    elif change == "element":
        getattr(m, names[-1]).data[0, 0] += 1
    elif change == "load_state_dict":
        state = m.state_dict()
        state[names[0]] = state[names[0]] * 2
        m.load_state_dict(state)
    else:
        p = getattr(m, names[0])
        p.data = p.data + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        m.backward(*_grads_like(y))
    m.clear_records()
    m.backward(*_grads_like(m(x)))          # a forward with the new weights: fine


def test_weights_rewritten_with_the_same_values_are_fine():
    m = rnnx.LSTM(3, 4)
    y = m(np.ones((3, 2, 3), F32))
    m.weight_hh_l0.data = m.weight_hh_l0.data.copy()
    m.weight_ih_l0.data[...] = m.weight_ih_l0.data
    m.backward(np.ones_like(y[0]))


def test_biases_changed_before_backward_are_not_an_error():
    """As torch: backward does not read the biases, so changing them is not detected."""
    m = rnnx.Linear(3, 4)
    y = m(np.ones((2, 3), F32))
    m.bias.data += 1
    m.backward(np.ones_like(y))


# ---------------------------------------------------------------------------------------
# records own what backward needs


def _grads_after_refill(make, x, forward, backward):
    """Parameter gradients when the caller refills its input buffer between forward and
    backward, and when it does not: they must agree."""
    results = []
    for refill in (False, True):
        rnnx.manual_seed(3)
        m = make()
        buf = x.copy()
        y = forward(m, buf)
        if refill:
            buf[...] = 7.0
        backward(m, y)
        results.append([p.grad.copy() for p in m.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_cell_input_refilled_before_backward():
    x = rng().standard_normal((2, 3)).astype(F32)
    _grads_after_refill(lambda: rnnx.LSTMCell(3, 4), x, lambda m, b: m(b),
                        lambda m, y: m.backward((np.ones_like(y[0]), None)))
    _grads_after_refill(lambda: rnnx.GRUCell(3, 4), x[0], lambda m, b: m(b),
                        lambda m, y: m.backward(np.ones_like(y)))


def test_linear_input_refilled_before_backward():
    x = rng().standard_normal((2, 5, 3)).astype(F32)
    _grads_after_refill(lambda: rnnx.Linear(3, 4), x, lambda m, b: m(b),
                        lambda m, y: m.backward(np.ones_like(y)))


# ---------------------------------------------------------------------------------------
# sequence modules read the caller's input and output in place: changing them raises


def _sequence_forward(buf, form):
    """A GRU's training forward over buf (4, 3, 3), or (4, 3) unbatched, given in `form`;
    (module, output)."""
    rnnx.manual_seed(3)
    m = rnnx.GRU(3, 4, num_layers=2)
    if form == "packed":
        return m, m(rnnx.PackedSequence(buf.reshape(12, 3), np.array([3, 3, 3, 3])))[0].data
    return m, m(buf, lengths=[4, 4, 4] if form == "full lengths" else None)[0]


CHANGES = {
    "refill": lambda a: a.fill(7.0),
    "element": lambda a: a.__setitem__((-1,) * a.ndim, a[(-1,) * a.ndim] + 1),
    "rows swapped": lambda a: a.__setitem__(slice(0, 2), a[1::-1].copy()),
}


@pytest.mark.parametrize("form", ["padded", "packed", "full lengths", "unbatched"])
@pytest.mark.parametrize("what", ["input", "output"])
@pytest.mark.parametrize("change", CHANGES)
def test_sequence_input_or_output_changed_before_backward_raise(form, what, change):
    """As PyTorch's saved tensors: backward reads them, so a change (a permutation of rows
    included) raises, naming which one; after clear_records a new forward works."""
    buf = rng().standard_normal((4, 3) if form == "unbatched" else (4, 3, 3)).astype(F32)
    m, y = _sequence_forward(buf, form)
    CHANGES[change](buf if what == "input" else y)
    with pytest.raises(RuntimeError, match=f"modified by an inplace operation: the {what} of"):
        m.backward(np.ones_like(y))
    m.clear_records()
    m, y = _sequence_forward(buf, form)
    m.backward(np.ones_like(y))


def _grads_after_change(forward, change):
    """Parameter gradients of a GRU forward whose input and output the caller changes after
    forward (the ones backward does not read: copies), and those without the change."""
    results = []
    for changed in (False, True):
        buf = rng().standard_normal((3, 4, 3)).astype(F32)
        rnnx.manual_seed(3)
        m = rnnx.GRU(3, 4, num_layers=2, batch_first=True)
        y = forward(m, buf)
        if changed:
            change(buf, y)
        m.backward(np.ones_like(y))
        results.append([p.grad.copy() for p in m.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_sequence_copies_changed_before_backward_are_fine():
    """What the module copied (a batch_first input, made time-major; an input gathered and
    an output unpacked for uneven lengths) is not the caller's to change."""
    _grads_after_change(lambda m, b: m(b)[0], lambda b, y: b.fill(7.0))
    _grads_after_change(lambda m, b: m(b, lengths=[4, 2, 3])[0],
                        lambda b, y: (b.fill(7.0), y.fill(7.0)))


def test_fingerprint_sees_every_change():
    from rnnx._kernels._recurrent import fingerprint
    a = rng().standard_normal(1001).astype(F32)
    fp = fingerprint(a)
    assert len(fp) == 64 and fingerprint(a.copy()) == fp and fingerprint(a[::-1][::-1]) == fp
    for i in (0, 17, 1000):                         # one bit anywhere
        b = a.copy()
        b.view(np.uint32)[i] ^= 1
        assert fingerprint(b) != fp
    b = a.copy()
    b[[3, 700]] = b[[700, 3]]                       # a swap: a plain sum would not see it
    assert fingerprint(b) != fp
    c = np.ones(2000, F32)
    c[:1000] = 2.0                                  # "nice" values, halves swapped
    assert fingerprint(c) != fingerprint(np.roll(c, 1000))
    raw = np.arange(7, dtype=np.uint8)              # trailing bytes past the last word
    assert fingerprint(raw) != fingerprint(np.arange(1, 8, dtype=np.uint8))
    assert fingerprint(raw[:6]) != fingerprint(raw)
    assert fingerprint(np.zeros(0, F32)) == fingerprint(np.zeros(0, F32))
    m = np.arange(12.0).reshape(3, 4)
    assert fingerprint(m.T) == fingerprint(np.ascontiguousarray(m.T))


# ---------------------------------------------------------------------------------------
# PackedSequence indices


def _packed(sorted_indices, unsorted_indices=None, B=3):
    data = np.ones((2 * B, 2), F32)
    seq = rnnx.PackedSequence(data, np.array([B, B]))
    return seq._replace(sorted_indices=sorted_indices, unsorted_indices=unsorted_indices)


@pytest.mark.parametrize("sorted_indices, unsorted_indices, error, match", [
    (np.array([0, 0, 1]), None, ValueError, r"sorted_indices must be a permutation of range\(3\)"),
    (np.array([0, 1, 3]), None, ValueError, "permutation"),
    (np.array([-1, 0, 1]), None, ValueError, "permutation"),
    (np.array([0, 1]), None, ValueError, r"must have shape \(3,\)"),
    (np.array([[0, 1, 2]]), None, ValueError, r"must have shape \(3,\)"),
    (np.array([0.0, 1.0, 2.0]), None, TypeError, "must be integers"),
    (np.array([2, 0, 1]), np.array([2, 0, 1]), ValueError, "inverse permutation"),
    (np.array([2, 0, 1]), np.array([1, 1, 0]), ValueError, "unsorted_indices must be a perm"),
    (None, np.array([0, 1, 2]), ValueError, "unsorted_indices given without sorted_indices"),
])
def test_packed_sequence_bad_indices_rejected(sorted_indices, unsorted_indices, error, match):
    seq = _packed(sorted_indices, unsorted_indices)
    with pytest.raises(error, match=match):
        rnnx.GRU(2, 3)(seq)
    with pytest.raises(error, match=match):
        rnnx.pad_packed_sequence(seq)


def test_packed_sequence_good_indices_accepted():
    seq = _packed(np.array([2, 0, 1]), np.array([1, 2, 0]))
    out, h = rnnx.GRU(2, 3)(seq, np.zeros((1, 3, 3), F32))
    assert h.shape == (1, 3, 3)
    padded, lengths = rnnx.pad_packed_sequence(seq)
    assert padded.shape == (2, 3, 2) and list(lengths) == [2, 2, 2]


# ---------------------------------------------------------------------------------------
# empty Linear layers


@pytest.mark.parametrize("i, o", [(0, 5), (5, 0), (0, 0)])
def test_linear_with_zero_features_runs(i, o):
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        lin = rnnx.Linear(i, o)
    np.testing.assert_array_equal(lin.bias.data, np.zeros(o, F32))  # bound 1/sqrt(0) -> 0
    lin.bias.data[...] = np.arange(o)
    x = np.ones((2, 4, i), F32)
    y = lin(x)
    assert y.shape == (2, 4, o)
    np.testing.assert_array_equal(y, np.broadcast_to(np.arange(o, dtype=F32), (2, 4, o)))
    gx = lin.backward(np.ones((2, 4, o), F32))
    assert gx.shape == (2, 4, i)
    np.testing.assert_array_equal(lin.bias.grad, np.full(o, 8, F32))


def test_linear_zero_features_matches_torch():
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning):
        t = torch.nn.Linear(0, 5)
    with pytest.warns(UserWarning):
        lin = rnnx.Linear(0, 5)
    lin.bias.data[...] = t.bias.detach().numpy()
    np.testing.assert_array_equal(lin(np.zeros((3, 0), F32)),
                                  t(torch.zeros(3, 0)).detach().numpy())


def test_parameter_assigned_to_a_recurrent_layer_is_used():
    """lstm.weight_hh_l0 = Parameter(...) (torch allows it): forward and backward use the new
    one, not the one the constructor made."""
    rnnx.manual_seed(0)
    a, b = rnnx.GRU(3, 4, num_layers=2), rnnx.GRU(3, 4, num_layers=2)
    x = rng().standard_normal((3, 2, 3)).astype(F32)
    for name in ("weight_hh_l1", "bias_ih_l0"):
        setattr(a, name, nn.Parameter(getattr(b, name).data.copy()))
    b.load_state_dict(a.state_dict())
    out_a, out_b = a(x)[0], b(x)[0]
    np.testing.assert_array_equal(out_a, out_b)
    a.backward(np.ones_like(out_a))
    b.backward(np.ones_like(out_b))
    assert list(a.state_dict()) == list(b.state_dict())  # replaced in place, as in torch
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert a.all_weights[1][1] is a.weight_hh_l1
