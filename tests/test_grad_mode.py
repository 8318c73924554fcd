"""no_grad / enable_grad / set_grad_enabled, Parameter as an array, requires_grad, zero_grad
(set_to_none), dtype names, load_state_dict messages, save(Module), a Module without backward."""
import threading

import numpy as np
import pytest

import rnnx
from rnnx import (GRU, LSTM, SGD, CrossEntropyLoss, Dropout, Embedding, Linear, Parameter,
                  Sequential, LastHidden, clip_grad_norm_, enable_grad, is_grad_enabled,
                  no_grad, set_grad_enabled)
from rnnx.nn.module import check_dtype


# -- grad mode ---------------------------------------------------------------------------

def test_context_managers_nest_and_restore():
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        with enable_grad():
            assert is_grad_enabled()
            with set_grad_enabled(False):
                assert not is_grad_enabled()
            assert is_grad_enabled()
        assert not is_grad_enabled()
        with no_grad():
            assert not is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("restored on error")
    assert is_grad_enabled()


def test_set_grad_enabled_as_a_call():
    set_grad_enabled(False)
    try:
        assert not is_grad_enabled()
    finally:
        set_grad_enabled(True)
    assert is_grad_enabled()
    with pytest.raises(TypeError, match="expects a bool"):
        set_grad_enabled(0)


def test_decorators():
    @no_grad()
    def called():
        return is_grad_enabled()

    @no_grad
    def bare(x):
        """doc"""
        return x, is_grad_enabled()

    @set_grad_enabled(False)
    def off():
        return is_grad_enabled()

    assert is_grad_enabled()  # making the set_grad_enabled decorator left the mode alone

    @enable_grad()
    def on():
        return is_grad_enabled()

    assert called() is False and bare(3) == (3, False) and bare.__doc__ == "doc"
    assert bare.__name__ == "bare" and off() is False and is_grad_enabled()
    with no_grad():
        assert on() is True and not is_grad_enabled()
    with pytest.raises(TypeError, match="decorates a function"):
        no_grad()(3)


def test_generator_decorator_runs_each_step_in_the_mode():
    @no_grad()
    def gen():
        received = yield is_grad_enabled()
        yield received, is_grad_enabled()
        return "done"

    g = gen()
    assert next(g) is False and is_grad_enabled()
    assert g.send("x") == ("x", False) and is_grad_enabled()
    with pytest.raises(StopIteration) as stop:
        next(g)
    assert stop.value.value == "done"


def test_mode_is_per_thread():
    seen = {}

    def worker():
        seen["start"] = is_grad_enabled()
        with no_grad():
            barrier.wait()
            barrier.wait()

    barrier = threading.Barrier(2)
    t = threading.Thread(target=worker)
    t.start()
    barrier.wait()  # the worker is inside no_grad: this thread is not
    assert is_grad_enabled()
    model = Linear(2, 2)
    model(np.zeros((1, 2)))
    barrier.wait()
    t.join()
    assert seen["start"] is True and len(model._records) == 1
    with no_grad():
        other = {}
        t = threading.Thread(target=lambda: other.setdefault("mode", is_grad_enabled()))
        t.start()
        t.join()
    assert other["mode"] is True  # a new thread starts enabled, as torch's


def make_models():
    rnnx.manual_seed(0)
    return [LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True), GRU(3, 4),
            rnnx.LSTMCell(3, 4), rnnx.GRUCell(3, 4), Linear(3, 2), Dropout(0.3),
            Embedding(5, 3), CrossEntropyLoss(),
            Sequential(LSTM(3, 4, batch_first=True), LastHidden(), Linear(4, 2)),
            rnnx.ReLU(), rnnx.Tanh(), rnnx.Sigmoid(), rnnx.Identity(), rnnx.Flatten()]


def call(m, rng):
    if isinstance(m, Embedding):
        return m(np.array([[1, 2]]))
    if isinstance(m, CrossEntropyLoss):
        return m(rng.standard_normal((2, 3)), np.array([0, 2]))
    if isinstance(m, (rnnx.LSTMCell, rnnx.GRUCell, Linear)):
        return m(rng.standard_normal((2, 3)).astype(np.float32))
    return m(rng.standard_normal((2, 5, 3)).astype(np.float32))


def test_modules_record_nothing_under_no_grad_in_training_mode():
    rng = np.random.default_rng(0)
    for m in make_models():
        assert m.training
        with no_grad():
            call(m, rng)
        assert not any(sub._records for sub in m.modules()), type(m).__name__
        call(m, rng)
        assert m._records, type(m).__name__  # outside it, training mode records again
        m.clear_records()


def test_no_grad_keeps_training_behaviour_dropout_included():
    """Under no_grad a training-mode forward still applies dropout (as torch's): the output
    is the same as a recording forward from the same seed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    m = LSTM(3, 5, num_layers=3, dropout=0.5, batch_first=True)
    for layer in (m, Dropout(0.4)):
        rnnx.manual_seed(7)
        with no_grad():
            quiet = layer(x)
        rnnx.manual_seed(7)
        loud = layer(x)
        layer.clear_records()
        np.testing.assert_array_equal(quiet[0] if isinstance(quiet, tuple) else quiet,
                                      loud[0] if isinstance(loud, tuple) else loud)
    rnnx.manual_seed(7)
    ev = m.eval()(x)[0]
    assert not np.array_equal(ev, loud[0])


def test_backward_after_no_grad_forward_says_no_record():
    m = GRU(2, 3)
    with no_grad():
        out, _ = m(np.zeros((2, 1, 2), np.float32))
    with pytest.raises(RuntimeError, match="without a pending forward"):
        m.backward(np.ones_like(out))


def test_trainer_evaluation_runs_under_no_grad():
    modes = []

    class Probe(rnnx.nn.Module):
        def forward(self, x):
            modes.append((is_grad_enabled(), self.training))
            return x

        def backward(self, g, *, input_grad=True):
            return g

    model = Sequential(Linear(2, 3), Probe())
    trainer = rnnx.Trainer(model, SGD(model.parameters(), lr=0.1), batch_size=4,
                           stream=open("/dev/null", "w"))
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    trainer.fit(x, y, epochs=1, eval_data=(x, y))
    assert modes[:2] == [(True, True), (True, True)] and modes[2:] == [(False, False)]
    assert is_grad_enabled()


# -- Parameter as an array ----------------------------------------------------------------

def test_parameter_array_protocol():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    p = Parameter(data)
    assert p.shape == (2, 3) and p.ndim == 2 and p.dtype == np.float32
    assert p.numel() == 6 and p.size() == (2, 3) and p.size(1) == 3 and p.size(-2) == 2
    assert np.asarray(p) is p.data  # no copy, like torch's .numpy()
    assert np.linalg.norm(p) == pytest.approx(np.sqrt(55))
    assert np.array(p, copy=True) is not p.data
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="needs a copy"):
        np.array(p, dtype=np.float64, copy=False)
    assert (p.data + np.asarray(p) == 2 * data).all()
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of "
                                         r"\[-2, 1\], but got 2\)"):
        p.size(2)
    with pytest.raises(TypeError, match="must be int"):
        p.size(1.0)
    scalar = Parameter(np.float64(3.0))
    assert scalar.size() == () and scalar.numel() == 1
    with pytest.raises(IndexError, match="no dimensions"):
        scalar.size(0)


def test_parameter_size_matches_torch():
    torch = pytest.importorskip("torch")
    t = torch.nn.Parameter(torch.zeros(4, 5, 6))
    p = Parameter(np.zeros((4, 5, 6)))
    assert p.size() == tuple(t.size()) and p.numel() == t.numel() and p.ndim == t.ndim
    assert all(p.size(d) == t.size(d) for d in range(-3, 3))
    assert p.requires_grad is t.requires_grad is True


# -- requires_grad -------------------------------------------------------------------------

def test_requires_grad_flags():
    p = Parameter(np.zeros(2))
    assert p.requires_grad and p.requires_grad_(False) is p and not p.requires_grad
    assert "requires_grad=False" in repr(p)
    assert not Parameter(np.zeros(2), requires_grad=False).requires_grad
    with pytest.raises(TypeError, match="requires_grad must be a bool"):
        p.requires_grad = 1
    m = LSTM(2, 3)
    assert m.requires_grad_(False) is m and not any(q.requires_grad for q in m.parameters())
    m.requires_grad_()
    assert all(q.requires_grad for q in m.parameters())


@pytest.mark.parametrize("frozen", [("weight_ih_l0",), ("bias_hh_l1_reverse", "weight_hr_l0"),
                                    ("weight_hh_l1",)])
def test_frozen_parameters_in_a_real_lstm_backward(frozen):
    """Frozen parameters get no gradient; every other gradient and the input gradient are
    exactly those of the unfrozen model."""
    rng = np.random.default_rng(3)
    kw = dict(num_layers=2, bidirectional=True, proj_size=2, dtype=np.float64)
    rnnx.manual_seed(0)
    free = LSTM(3, 4, **kw)
    rnnx.manual_seed(0)
    part = LSTM(3, 4, **kw)
    for name in frozen:
        getattr(part, name).requires_grad = False
    x, go = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 4))
    part.zero_grad()
    results = []
    for m in (free, part):
        out, _ = m(x)
        results.append(m.backward(go)[0])
    np.testing.assert_array_equal(results[0], results[1])
    for name, p in part.named_parameters():
        if name in frozen:
            assert p.grad is None, name
        else:
            np.testing.assert_array_equal(p.grad, getattr(free, name).grad, err_msg=name)


def test_frozen_parameters_match_torch_and_sgd_skips_them():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    m = LSTM(3, 4, dtype=np.float64)
    tm = torch.nn.LSTM(3, 4, dtype=torch.float64)
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    for model in (m, tm):
        model.weight_hh_l0.requires_grad_(False)
        model.bias_ih_l0.requires_grad = False
    x, go = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 4))
    xt = torch.from_numpy(x).requires_grad_()
    out, _ = tm(xt)
    out.backward(torch.from_numpy(go))
    m.zero_grad()
    m(x)
    gx, _ = m.backward(go)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
        if tp.grad is None:
            assert p.grad is None, name
        else:
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12)
    frozen = m.weight_hh_l0.data.copy()
    opt = SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    m.weight_hh_l0.grad = np.ones_like(frozen)  # even a stale gradient does not move it
    opt.step()
    np.testing.assert_array_equal(m.weight_hh_l0.data, frozen)
    assert m.weight_hh_l0 not in opt.state


def test_frozen_linear_and_cell():
    rng = np.random.default_rng(5)
    lin = Linear(3, 2, dtype=np.float64).requires_grad_(False)
    lin.zero_grad()
    lin(rng.standard_normal((4, 3)))
    gx = lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(gx, np.ones((4, 2)) @ lin.weight.data)
    assert lin.weight.grad is None and lin.bias.grad is None
    cell = rnnx.GRUCell(3, 2, dtype=np.float64)
    cell.bias_ih.requires_grad = False
    cell.zero_grad()
    h = cell(rng.standard_normal((4, 3)))
    cell.backward(np.ones_like(h))
    assert cell.bias_ih.grad is None and cell.bias_hh.grad.any()


# -- zero_grad(set_to_none) --------------------------------------------------------------

def test_zero_grad_set_to_none_everywhere():
    rng = np.random.default_rng(6)
    m = Sequential(LSTM(3, 4, batch_first=True), LastHidden(), Linear(4, 2))
    opt = SGD(m.parameters(), lr=0.1)
    x, y = rng.standard_normal((3, 5, 3)), np.array([0, 1, 1])
    loss_fn = CrossEntropyLoss()

    def step():
        loss_fn(m(x), y)
        m.backward(loss_fn.backward())
        return [p.grad.copy() for p in m.parameters()]

    first = step()
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert clip_grad_norm_(m.parameters(), 1.0) == 0.0  # None grads are skipped
    before = [p.data.copy() for p in m.parameters()]
    opt.step()  # no gradients: nothing moves (as torch)
    assert all(np.array_equal(p.data, b) for p, b in zip(m.parameters(), before))
    again = step()  # the next backward allocates fresh gradients
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    kept = [p.grad for p in m.parameters()]
    m.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(m.parameters(), kept))
    m.zero_grad()
    m.double()  # casting with None grads
    assert all(p.grad is None and p.dtype == np.float64 for p in m.parameters())
    p = Parameter(np.ones(2))
    p.zero_grad()
    assert p.grad is None
    p.accumulate_grad(np.array([1.0, 2.0]))
    p.accumulate_grad(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(p.grad, [2.0, 4.0])


def test_zero_grad_defaults_match_torch():
    torch = pytest.importorskip("torch")
    import inspect
    for ours, theirs in ((rnnx.nn.Module.zero_grad, torch.nn.Module.zero_grad),
                         (rnnx.optim.SGD.zero_grad, torch.optim.SGD.zero_grad)):
        assert (inspect.signature(ours).parameters["set_to_none"].default
                == inspect.signature(theirs).parameters["set_to_none"].default is True)


# -- dtype names ------------------------------------------------------------------------

@pytest.mark.parametrize("given, want", [(np.float32, np.float32), ("float32", np.float32),
                                         ("float64", np.float64), ("double", np.float64),
                                         ("float", np.float64), (float, np.float64),
                                         (np.dtype("<f4"), np.float32),
                                         ("torch.float32", np.float32)])
def test_dtype_names(given, want):
    assert check_dtype(given) == want
    assert Linear(2, 2, dtype=given).weight.dtype == want


def test_torch_dtypes_without_importing_torch():
    class FakeTorchDtype:  # what check_dtype sees: only str(dtype)
        def __init__(self, name):
            self.name = name

        def __str__(self):
            return f"torch.{self.name}"

    assert check_dtype(FakeTorchDtype("float64")) == np.float64
    with pytest.raises(TypeError, match="float32 or float64, got torch.float16"):
        check_dtype(FakeTorchDtype("float16"))
    for bad in ("float16", "int32", "complex64", object()):
        with pytest.raises(TypeError, match="float32 or float64"):
            check_dtype(bad)


def test_real_torch_dtypes():
    torch = pytest.importorskip("torch")
    assert LSTM(2, 3, dtype=torch.float64).weight_ih_l0.dtype == np.float64
    assert GRU(2, 3, dtype=torch.float).weight_ih_l0.dtype == np.float32
    assert Embedding(3, 2, dtype=torch.double).weight.dtype == np.float64
    assert Linear(2, 2).to(torch.float64).weight.dtype == np.float64
    with pytest.raises(TypeError, match="got torch.bfloat16"):
        Linear(2, 2, dtype=torch.bfloat16)


# -- state dicts, save, messages -------------------------------------------------------

def test_load_state_dict_messages_match_torch():
    torch = pytest.importorskip("torch")
    sd = {"weight": np.zeros((3, 2), np.float32), "foo": np.zeros(1), "bar": np.zeros(1)}
    with pytest.raises(RuntimeError) as ours:
        Linear(2, 3).load_state_dict(sd)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.Linear(2, 3).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert str(ours.value) == str(theirs.value)
    result = Linear(2, 3).load_state_dict(sd, strict=False)
    ref = torch.nn.Linear(2, 3).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()},
                                                strict=False)
    assert result == (["bias"], ["foo", "bar"]) and repr(result) == repr(ref).replace("_Inc", "Inc")
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["foo", "bar"]
    full = Linear(2, 3).load_state_dict(Linear(2, 3).state_dict())
    assert repr(full) == repr(ref.__class__([], [])) == "<All keys matched successfully>"


def test_save_a_module_saves_its_state_dict(tmp_path):
    m = Sequential(LSTM(2, 3), LastHidden(), Linear(3, 2))
    rnnx.save(m, tmp_path / "m.npz")
    loaded = rnnx.load(tmp_path / "m.npz")
    assert list(loaded) == list(m.state_dict())
    twin = Sequential(LSTM(2, 3), LastHidden(), Linear(3, 2))
    twin.load_state_dict(loaded)
    for a, b in zip(twin.parameters(), m.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_module_without_backward_says_what_to_write():
    class Doubler(rnnx.nn.Module):
        def forward(self, x):
            return 2 * x

    m = Doubler()
    assert (m(np.ones(2)) == 2).all()
    with pytest.raises(NotImplementedError, match=r"Module \[Doubler\] has no backward.*"
                                                  r"def backward\(self, grad_output, \*, "
                                                  r"input_grad=True\).*help\(rnnx\.Module\) "
                                                  r"and the README's \"Custom modules\""):
        m.backward(np.ones(2))
    with pytest.raises(NotImplementedError, match=r'Module \[Module\] is missing the required '
                                                  r'"forward" function'):
        rnnx.nn.Module()(1)
