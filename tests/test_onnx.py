"""rnnx.onnx.export: every supported configuration run by ONNX Runtime gives rnnx's eval
outputs (float32, rtol 1e-4 / atol 2e-5) at the example's shape and at other batch sizes and
lengths; lengths; names, opsets, static axes; refusals leave no file."""
import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="rnnx.onnx needs the onnx package (extra [onnx])")
ort = pytest.importorskip("onnxruntime", reason="checking exported models needs onnxruntime")

from rnnx import nn  # noqa: E402
from rnnx.onnx import DEFAULT_OPSET, export  # noqa: E402

RTOL, ATOL = 1e-4, 2e-5
ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def flatten(result):
    if isinstance(result, tuple):
        return [a for item in result for a in flatten(item)]
    return [np.asarray(result)]


def exported(model, example, tmp_path, **kwargs):
    """Export, check, and open an ONNX Runtime session on the file."""
    path = tmp_path / "model.onnx"
    proto = export(model, example, path, **kwargs)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_runs_like(session, model, args, lengths=None):
    """ORT on the flattened (args, lengths) equals rnnx's eval model(*args, lengths=...)."""
    model.eval()
    want = flatten(model(*args) if lengths is None else model(*args, lengths=lengths))
    feeds = flatten(tuple(a for a in args if a is not None))
    if lengths is not None:
        feeds.append(np.asarray(lengths, np.int64))
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, feeds)))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def state(model, B, unbatched=False):
    """Random (h0[, c0]) for a recurrent layer or cell (hx in the call's form)."""
    lead = (model.num_layers * model.num_directions,) if hasattr(model, "num_layers") else ()
    shape = lead + (() if unbatched else (B,)) + (model.hidden_size,)
    if isinstance(model, (nn.LSTM, nn.LSTMCell)):
        return randn(*shape), randn(*shape)
    return randn(*shape)


def recurrent(kind, *args, **kwargs):
    if kind == "rnn_relu":
        return nn.RNN(*args, nonlinearity="relu", **kwargs)
    return {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}[kind](*args, **kwargs)


KINDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
# (T, B) of the example, then of the other runs: batch 1, one time step, both larger.
SHAPES = [(5, 3), (4, 1), (1, 2), (1, 1), (9, 6)]


def x_of(T, B, I, batch_first):
    return randn(B, T, I) if batch_first else randn(T, B, I)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers, bidirectional, batch_first, bias",
                         list(itertools.product([1, 2], [False, True], [False, True],
                                                [True, False])))
def test_recurrent_layer(kind, num_layers, bidirectional, batch_first, bias, tmp_path):
    model = recurrent(kind, 3, 4, num_layers, bias=bias, batch_first=batch_first,
                      bidirectional=bidirectional)
    runs = [(x_of(T, B, 3, batch_first), state(model, B)) for T, B in SHAPES]
    session = exported(model, runs[0], tmp_path)
    assert [i.name for i in session.get_inputs()] == (["x", "h0", "c0"] if kind == "lstm"
                                                     else ["x", "h0"])
    assert [o.name for o in session.get_outputs()] == (["output", "h_n", "c_n"]
                                                      if kind == "lstm" else ["output", "h_n"])
    for args in runs:
        assert_runs_like(session, model, args)


@pytest.mark.parametrize("num_layers, bidirectional, batch_first, bias",
                         list(itertools.product([1, 2], [False, True], [False, True],
                                                [True, False])))
def test_lstm_with_projection(num_layers, bidirectional, batch_first, bias, tmp_path):
    """proj_size: a Scan per layer and direction (ONNX's LSTM has no projection)."""
    model = nn.LSTM(3, 5, num_layers, bias=bias, batch_first=batch_first,
                    bidirectional=bidirectional, proj_size=2)
    runs = [(x_of(T, B, 3, batch_first), state(model, B)) for T, B in SHAPES]
    runs = [(x, (h0[..., :2], c0)) for x, (h0, c0) in runs]  # h0 (L*D, B, proj_size)
    session = exported(model, runs[0], tmp_path)
    for args in runs:
        assert_runs_like(session, model, args)
    session = exported(model, runs[0][0], tmp_path, with_lengths=True)
    for T, lengths in [(6, [6, 2, 5, 1]), (1, [1, 1])]:
        x, (h0, c0) = x_of(T, len(lengths), 3, batch_first), state(model, len(lengths))
        assert_runs_like(session, model, (x, (h0[..., :2], c0)), lengths)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_with_projection_in_sequential_and_unbatched(bidirectional, tmp_path):
    """Without h0 and c0 (zero states), and with unbatched input."""
    model = nn.Sequential(nn.LSTM(3, 5, 2, bidirectional=bidirectional, proj_size=3),
                          nn.LastHidden(bidirectional), nn.Linear(6 if bidirectional else 3, 2))
    session = exported(model, randn(5, 4, 3), tmp_path, with_lengths=True)
    assert_runs_like(session, model, (randn(7, 3, 3),), [7, 1, 4])
    session = exported(model, randn(5, 3), tmp_path)
    assert_runs_like(session, model, (randn(2, 3),))


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_lstm_with_projection_opsets(opset, tmp_path):
    model = nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2)
    x, (h0, c0) = randn(4, 2, 3), state(model, 2)
    session = exported(model, x, tmp_path, opset_version=opset, with_lengths=True)
    assert_runs_like(session, model, (x, (h0[..., :2], c0)), [2, 4])


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_layer_unbatched(kind, tmp_path):
    model = recurrent(kind, 3, 4, 2, bidirectional=True)
    runs = [(randn(T, 3), state(model, 1, unbatched=True)) for T in (5, 1, 8)]
    session = exported(model, runs[0][0], tmp_path)  # example x alone: h0 is still an input
    for args in runs:
        assert_runs_like(session, model, args)
    session = exported(model, runs[0][0], tmp_path, with_lengths=True)
    assert_runs_like(session, model, (randn(6, 3), runs[0][1]), [4])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers, bidirectional, batch_first",
                         [(1, False, False), (1, True, True), (2, True, False), (3, False, True)])
def test_recurrent_layer_with_lengths(kind, num_layers, bidirectional, batch_first, tmp_path):
    model = recurrent(kind, 3, 4, num_layers, batch_first=batch_first,
                      bidirectional=bidirectional)
    session = exported(model, x_of(6, 4, 3, batch_first), tmp_path, with_lengths=True)
    assert session.get_inputs()[-1].name == "lengths"
    for T, lengths in [(6, [6, 2, 5, 1]), (3, [1]), (1, [1, 1]), (7, [3, 7, 7])]:
        B = len(lengths)
        assert_runs_like(session, model, (x_of(T, B, 3, batch_first), state(model, B)), lengths)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_cell(kind, bias, tmp_path):
    nonlinearity = {"rnn_relu": {"nonlinearity": "relu"}}.get(kind, {})
    cls = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}.get(kind, nn.RNNCell)
    model = cls(3, 5, bias=bias, **nonlinearity)
    runs = [(randn(B, 3), state(model, B)) for B in (4, 1, 7)]
    session = exported(model, runs[0], tmp_path)
    assert [o.name for o in session.get_outputs()] == (["h1", "c1"] if kind == "lstm"
                                                      else ["h1"])
    for args in runs:
        assert_runs_like(session, model, args)
    unbatched = exported(model, (randn(3), state(model, 1, unbatched=True)), tmp_path)
    assert_runs_like(unbatched, model, (randn(3), state(model, 1, unbatched=True)))


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear(shape, bias, dtype, tmp_path):
    model = nn.Linear(3, 2, bias=bias, dtype=dtype)
    session = exported(model, randn(*shape, dtype=dtype), tmp_path)
    assert_runs_like(session, model, (randn(*shape, dtype=dtype),))
    if len(shape) > 1:  # the leading axis is dynamic
        assert_runs_like(session, model, (randn(1, *shape[1:], dtype=dtype),))


def test_dropout_is_identity(tmp_path):
    model = nn.Dropout(0.5)  # training mode: exported as eval, and left in training mode
    session = exported(model, randn(4, 3), tmp_path)
    assert model.training
    assert_runs_like(session, model, (randn(2, 3),))


CLASSIFIERS = {
    "lstm_last_hidden": lambda: nn.Sequential(nn.LSTM(3, 5, 2, batch_first=True),
                                              nn.LastHidden(), nn.Dropout(0.3),
                                              nn.Linear(5, 4)),
    "bigru_last_hidden": lambda: nn.Sequential(nn.GRU(3, 5, 2, bidirectional=True),
                                               nn.LastHidden(bidirectional=True),
                                               nn.Linear(10, 4)),
    "birnn_last_time_step": lambda: nn.Sequential(
        nn.RNN(3, 5, batch_first=True, bidirectional=True, nonlinearity="relu"),
        nn.LastTimeStep(batch_first=True), nn.Linear(10, 4)),
    "lstm_last_time_step": lambda: nn.Sequential(nn.LSTM(3, 5, bias=False), nn.LastTimeStep(),
                                                 nn.Linear(5, 4, bias=False)),
    "nested": lambda: nn.Sequential(nn.Sequential(nn.GRU(3, 5), nn.LastHidden()),
                                    nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 4))),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_sequential(name, tmp_path):
    model = CLASSIFIERS[name]()
    batch_first = getattr(model[0], "batch_first", False)
    runs = [x_of(T, B, 3, batch_first) for T, B in SHAPES]
    session = exported(model, runs[0], tmp_path)
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    for x in runs:
        assert_runs_like(session, model, (x,))


@pytest.mark.parametrize("name", sorted(set(CLASSIFIERS) - {"nested"}))
def test_sequential_with_lengths(name, tmp_path):
    model = CLASSIFIERS[name]()
    batch_first = model[0].batch_first
    session = exported(model, x_of(6, 4, 3, batch_first), tmp_path, with_lengths=True)
    for T, lengths in [(6, [6, 2, 5, 1]), (3, [1]), (7, [3, 7, 7])]:
        assert_runs_like(session, model, (x_of(T, len(lengths), 3, batch_first),), lengths)


def test_sequential_outputs_of_recurrent_layer_and_cell(tmp_path):
    model = nn.Sequential(nn.LSTM(3, 4, 2))
    session = exported(model, randn(5, 2, 3), tmp_path)
    assert [o.name for o in session.get_outputs()] == ["output", "h_n", "c_n"]
    assert_runs_like(session, model, (randn(3, 1, 3),))
    model = nn.Sequential(nn.GRUCell(3, 4), nn.Linear(4, 2))
    session = exported(model, randn(5, 3), tmp_path)
    assert_runs_like(session, model, (randn(2, 3),))


def test_names_opsets_and_static_axes(tmp_path):
    model = nn.GRU(3, 4, batch_first=True)
    x, h0 = randn(2, 5, 3), randn(1, 2, 4)
    for opset in (13, DEFAULT_OPSET, 21):
        session = exported(model, (x, h0), tmp_path, opset_version=opset,
                           input_names=["seq", "state"], output_names=["y", "state_out"])
        assert [i.name for i in session.get_inputs()] == ["seq", "state"]
        assert [o.name for o in session.get_outputs()] == ["y", "state_out"]
        assert session.get_inputs()[0].shape == ["batch", "time", 3]
        assert_runs_like(session, model, (randn(1, 2, 3), randn(1, 1, 4)))
    proto = onnx.load(tmp_path / "model.onnx")
    assert proto.opset_import[0].version == 21
    session = exported(model, (x, h0), tmp_path, dynamic_axes=False)
    assert session.get_inputs()[0].shape == [2, 5, 3]
    assert_runs_like(session, model, (x, h0))
    with pytest.raises(Exception):  # ORT refuses other shapes
        session.run(None, {"x": randn(1, 5, 3), "h0": randn(1, 1, 4)})


def test_output_that_is_an_input_or_repeated(tmp_path):
    model = nn.Sequential(nn.Dropout())
    session = exported(model, randn(2, 3), tmp_path, input_names=["a"], output_names=["b"])
    assert_runs_like(session, model, (randn(4, 3),))
    model = nn.Sequential()
    assert_runs_like(exported(model, randn(2, 3), tmp_path), model, (randn(1, 3),))


def test_mnist_classifier_round_trip(tmp_path):
    """The CLI's model: exported, run by ORT, same logits."""
    from rnnx.mnist import RUN_DEFAULTS, build_model
    for cell, bidirectional in (("lstm", False), ("gru", True)):
        model = build_model({**RUN_DEFAULTS, "cell": cell, "hidden_size": 8,
                             "bidirectional": bidirectional})
        session = exported(model, randn(1, 28, 28), tmp_path)
        assert_runs_like(session, model, (randn(5, 28, 28),))


# -- refusals ---------------------------------------------------------------------------------
class Custom(nn.Module):
    def forward(self, x):
        return x


class ReversingGRU(nn.GRU):
    def forward(self, input, hx=None, lengths=None):
        return super().forward(input[::-1], hx, lengths)


class InitOnlyLSTM(nn.LSTM):
    """A subclass that keeps LSTM's forward: exported as an LSTM."""


@pytest.mark.parametrize("model, example, error, match", [
    (nn.Sequential(nn.Linear(3, 3), Custom()), randn(2, 3), TypeError,
     r"cannot export model\.1 \(Custom\)"),
    (ReversingGRU(3, 4), randn(5, 2, 3), TypeError, r"cannot export model \(ReversingGRU\)"),
    (nn.LSTM(3, 4, dtype=np.float64), randn(5, 2, 3), ValueError, "float32 only"),
    (nn.Sequential(nn.GRUCell(3, 4), nn.Linear(4, 2, dtype=np.float64)), randn(2, 3),
     ValueError, "mixes parameter dtypes"),
    (nn.LSTM(3, 4), randn(5, 2, 2), ValueError, "input_size"),  # rnnx's own check
    (nn.Sequential(nn.LastHidden()), randn(2, 3), TypeError, "recurrent layer's output"),
])
def test_refused_without_a_file(model, example, error, match, tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(error, match=match):
        export(model, example, path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"with_lengths": True, "model": nn.Sequential(nn.Linear(3, 3))}, ValueError,
     "with_lengths=True needs a module that takes lengths .* got a Sequential starting with "
     "Linear"),
    ({"with_lengths": True, "model": nn.GRUCell(3, 3)}, ValueError, "got GRUCell"),
    ({"opset_version": 12}, ValueError, "opset_version must be an int from 13"),
    ({"opset_version": "17"}, ValueError, "opset_version"),
    ({"dynamic_axes": {"x": [0]}}, TypeError, "dynamic_axes must be True or False"),
    ({"input_names": ["x"]}, ValueError, r"input_names must be a list of 2 .*\(for x, h0\)"),
    ({"input_names": ["x", "x"]}, ValueError, "distinct"),
    ({"output_names": ["a", "b", "c"]}, ValueError, r"for output, h_n\)"),
    ({"model": "not a model"}, TypeError, "model must be an rnnx Module, got str"),
])
def test_bad_arguments(kwargs, error, match, tmp_path):
    model = kwargs.pop("model", nn.GRU(3, 3))
    with pytest.raises(error, match=match):
        export(model, randn(2, 3) if isinstance(model, (nn.GRUCell, nn.Sequential))
               else randn(4, 2, 3), tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_path_checks_and_existing_file_untouched(tmp_path):
    with pytest.raises(TypeError, match="f must be a file path"):
        export(nn.GRU(3, 3), randn(4, 2, 3), open(os.devnull, "wb"))
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(TypeError):
        export(nn.Sequential(Custom()), randn(5, 2, 3), path)
    assert path.read_bytes() == b"previous"
    with pytest.raises(FileNotFoundError):
        export(nn.GRU(3, 3), randn(4, 2, 3), tmp_path / "missing" / "model.onnx")
    assert os.listdir(tmp_path) == ["model.onnx"]
    export(nn.GRU(3, 3), randn(4, 2, 3), str(path))  # replaced whole
    onnx.checker.check_model(str(path), full_check=True)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export(nn.GRU(3, 3), randn(4, 2, 3), tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_subclass_keeping_forward_is_exported(tmp_path):
    model = InitOnlyLSTM(3, 4)
    session = exported(model, randn(5, 2, 3), tmp_path)
    assert_runs_like(session, model, (randn(2, 1, 3), state(model, 1)))


def test_import_rnnx_does_not_import_onnx():
    """rnnx imports without onnx; rnnx.onnx imports it on first use, with a clear error
    when it is missing."""
    code = ("import sys, rnnx\n"
            "assert 'onnx' not in sys.modules and 'rnnx.onnx' not in sys.modules\n"
            "sys.modules['onnx'] = None  # as if not installed\n"
            "try:\n    rnnx.onnx\nexcept ImportError as e:\n    print(e)\n"
            "del sys.modules['onnx']\n"
            "rnnx.onnx.export\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert "rnnx.onnx needs the onnx package: pip install onnx" in out


# -- text models: Embedding, activations, reductions over time --------------------------------
def tokens_of(T, B, batch_first, vocab=11):
    shape = (B, T) if batch_first else (T, B)
    return RNG.integers(0, vocab, size=shape).astype(np.int64)


TEXT_MODELS = {
    "bigru_last_hidden": lambda: nn.Sequential(
        nn.Embedding(11, 4, padding_idx=0), nn.GRU(4, 5, 2, batch_first=True, bidirectional=True),
        nn.LastHidden(), nn.Linear(10, 3)),
    "bigru_mean": lambda: nn.Sequential(
        nn.Embedding(11, 4), nn.GRU(4, 5, batch_first=True, bidirectional=True),
        nn.MeanOverTime(batch_first=True), nn.Tanh(), nn.Linear(10, 3)),
    "lstm_max": lambda: nn.Sequential(
        nn.Embedding(11, 4), nn.Dropout(0.2), nn.LSTM(4, 5), nn.MaxOverTime(), nn.ReLU(),
        nn.Linear(5, 3), nn.Sigmoid()),
    "lstm_last_time_step": lambda: nn.Sequential(
        nn.Embedding(11, 4), nn.LSTM(4, 5, batch_first=True, bidirectional=True),
        nn.LastTimeStep(batch_first=True), nn.Identity(), nn.Linear(10, 3)),
    "bag_of_embeddings_mean": lambda: nn.Sequential(  # no recurrent layer: float64 too
        nn.Embedding(11, 4, dtype=np.float64), nn.MeanOverTime(batch_first=True),
        nn.Linear(4, 3, dtype=np.float64)),
    "bag_of_embeddings_max": lambda: nn.Sequential(
        nn.Embedding(11, 4), nn.MaxOverTime(), nn.Linear(4, 3)),
}


def _batch_first(model):
    return next(m.batch_first for m in model.modules() if hasattr(m, "batch_first"))


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_text_models(name, with_lengths, tmp_path):
    model = TEXT_MODELS[name]()
    batch_first = _batch_first(model)
    session = exported(model, tokens_of(6, 4, batch_first), tmp_path, with_lengths=with_lengths)
    assert session.get_inputs()[0].type == "tensor(int64)"
    for T, lengths in [(6, [6, 2, 5, 1]), (3, [1]), (7, [3, 7, 7])]:
        tokens = tokens_of(T, len(lengths), batch_first)
        assert_runs_like(session, model, (tokens,), lengths if with_lengths else None)


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_over_time_at_other_opsets(opset, tmp_path):
    """The Reduce operators take their axes as an attribute before opset 18, an input after."""
    for pool in (nn.MeanOverTime, nn.MaxOverTime):
        model = nn.Sequential(nn.GRU(3, 4), pool(), nn.Linear(4, 2))
        for with_lengths in (False, True):
            session = exported(model, randn(5, 3, 3), tmp_path, opset_version=opset,
                               with_lengths=with_lengths)
            assert_runs_like(session, model, (randn(4, 2, 3),), [4, 2] if with_lengths else None)


def test_embedding_activations_alone(tmp_path):
    model = nn.Sequential(nn.Embedding(7, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU())
    session = exported(model, np.array([[1, 2], [3, 6]]), tmp_path)
    assert_runs_like(session, model, (np.array([[0, 6, 5]]),))
    with pytest.raises(ValueError, match=r"model\.0: Embedding\(max_norm=...\)"):
        export(nn.Sequential(nn.Embedding(7, 3, max_norm=1.0)), np.array([1]), tmp_path / "m")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and symlinks")
def test_export_writes_files_as_save_does(tmp_path):
    """Mode 0666 & ~umask (not mkstemp's 0600), and a symlink at the destination followed,
    its target replaced, as rnnx.save does."""
    saved = os.umask(0o022)
    try:
        path = tmp_path / "model.onnx"
        export(nn.GRU(3, 3), randn(4, 2, 3), path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        target = tmp_path / "runs" / "real.onnx"
        target.parent.mkdir()
        link = tmp_path / "latest.onnx"
        link.symlink_to(target)
        export(nn.GRU(3, 3), randn(4, 2, 3), link)
        assert link.is_symlink() and os.readlink(link) == str(target)
        assert onnx.load(target).graph.node
        assert sorted(os.listdir(tmp_path)) == ["latest.onnx", "model.onnx", "runs"]
        assert os.listdir(target.parent) == ["real.onnx"]
    finally:
        os.umask(saved)
