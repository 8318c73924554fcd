"""rnnx.Trainer on synthetic sequences: learning, exact resume, Ctrl-C, divergence, metrics,
progress output."""
import io
import json
import os
import signal

import numpy as np
import pytest

import rnnx
from rnnx import nn
from rnnx.optim import SGD, lr_scheduler
from rnnx.train import Trainer, TrainingDiverged, evaluate, shuffle_generator

T, F, C = 6, 3, 3


def make_data(n, seed=0):
    """Sequences (n, T, F); the class is which third of [-1, 1] the last step's feature 0 is in."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, T, F)).astype(np.float32)
    y = np.digitize(x[:, -1, 0], [-1 / 3, 1 / 3]).astype(np.int64)
    return x, y


def make_trainer(tmp_path=None, dropout=0.0, scheduler=False, model_seed=0, **kwargs):
    """A tiny 2-layer LSTM classifier (drawn after rnnx.manual_seed(model_seed)) and its Trainer."""
    rnnx.manual_seed(model_seed)
    model = nn.Sequential(nn.LSTM(F, 8, 2, batch_first=True, dropout=dropout), nn.LastHidden(),
                          nn.Dropout(dropout), nn.Linear(8, C))
    opt = SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5) if scheduler else None
    options = dict(batch_size=32, seed=1, stream=io.StringIO(), scheduler=sched)
    if tmp_path is not None:
        options.update(checkpoint=str(tmp_path / "ckpt" / "run.npz"),
                       metrics_json=str(tmp_path / "metrics.json"))
    options.update(kwargs)
    return Trainer(model, opt, **options)


def params(trainer):
    return {name: p.data.copy() for name, p in trainer.model.named_parameters()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        assert a[name].tobytes() == b[name].tobytes(), name


def without_times(history):
    return [{k: v for k, v in h.items() if k != "train_seconds"} for h in history]


def resumed(tmp_path, **kwargs):
    """A trainer built from a different global seed, restored from the checkpoint in tmp_path."""
    trainer = make_trainer(tmp_path, model_seed=123, **kwargs)
    trainer.load_state_dict(rnnx.load(trainer.checkpoint))
    return trainer


def before_steps(monkeypatch, action, call=None):
    """Run action(xb, yb, batch, steps) before the `call`-th training step (1-based), or before
    every step if call is None; returns the list counting the steps started."""
    original = Trainer._train_step
    calls = []

    def step(self, *args):
        calls.append(1)
        if call is None or len(calls) == call:
            action(*args)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", step)
    return calls


def interrupt(*_):
    raise KeyboardInterrupt


def test_fit_learns_and_records_history():
    x, y = make_data(384)
    xt, yt = make_data(128, seed=1)
    trainer = make_trainer()
    history = trainer.fit(x, y, 6, eval_data=(xt, yt))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6] and trainer.epoch == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.7  # chance is about 1/3
    assert all(h["train_seconds"] > 0 for h in history)
    final = (history[-1]["test_loss"], history[-1]["test_accuracy"])
    again = evaluate(trainer.model, nn.CrossEntropyLoss(), xt, yt, batch_size=7)
    assert final == pytest.approx(again)
    assert trainer.model.training and all(not m._records for m in trainer.model.modules())


def test_trainer_skips_the_input_gradient_when_the_model_can():
    calls = []

    class Recording(nn.Sequential):
        def backward(self, *grad, input_grad=True):
            calls.append(input_grad)
            return super().backward(*grad, input_grad=input_grad)

    class Plain(nn.Sequential):
        def backward(self, *grad):
            calls.append("plain")
            return super().backward(*grad)

    x, y = make_data(64)
    for cls in (Recording, Plain):
        model = cls(nn.LSTM(F, 8, batch_first=True), nn.LastHidden(), nn.Linear(8, C))
        Trainer(model, SGD(model.parameters(), lr=0.1), batch_size=32,
                stream=io.StringIO()).fit(x, y, 1)
    assert calls == [False, False, "plain", "plain"]


def test_shuffling_is_seeded_and_covers_every_sample(monkeypatch):
    x, y = make_data(70)
    seen = []
    before_steps(monkeypatch, lambda xb, *_: seen.append(xb[:, 0, 0].copy()))
    make_trainer(batch_size=32).fit(x, y, 2)
    assert [len(b) for b in seen] == [32, 32, 6] * 2
    rng = shuffle_generator(1)
    for epoch in range(2):
        order = rng.permutation(70)
        np.testing.assert_array_equal(np.concatenate(seen[3 * epoch:3 * epoch + 3]), x[order, 0, 0])


def test_regression_reports_no_accuracy():
    x, _ = make_data(64)
    target = x.sum(axis=(1, 2))[:, None] / 10
    rnnx.manual_seed(0)
    model = nn.Sequential(nn.GRU(F, 4, batch_first=True), nn.LastHidden(), nn.Linear(4, 1))
    trainer = Trainer(model, SGD(model.parameters(), lr=0.05), nn.MSELoss(), batch_size=16,
                      stream=io.StringIO())
    (entry,) = trainer.fit(x, target, 1, eval_data=(x, target))
    assert entry["train_accuracy"] is None and entry["test_accuracy"] is None
    assert "acc" not in trainer.progress.stream.getvalue()


def test_resume_after_one_epoch_is_bitwise_identical(tmp_path):
    x, y = make_data(160)
    xt, yt = make_data(64, seed=1)
    options = dict(dropout=0.3, scheduler=True, clip=0.5)
    straight = make_trainer(**options)
    straight.fit(x, y, 2, eval_data=(xt, yt))
    rng_after = rnnx.get_rng_state()
    assert [h["lr"] for h in straight.history] == [0.5, 0.25]

    make_trainer(tmp_path, **options).fit(x, y, 1, eval_data=(xt, yt))
    assert rnnx.load(tmp_path / "ckpt" / "run.npz")["epoch"] == 1
    trainer = resumed(tmp_path, **options)
    trainer.fit(x, y, 2, eval_data=(xt, yt))
    assert_bitwise_equal(params(trainer), params(straight))
    assert without_times(trainer.history) == without_times(straight.history)
    assert rnnx.get_rng_state() == rng_after and trainer.epoch == 2


def test_keyboard_interrupt_mid_epoch_saves_and_resumes_exactly(tmp_path, monkeypatch):
    x, y = make_data(160)  # 5 steps per epoch
    straight = make_trainer(dropout=0.3)
    straight.fit(x, y, 2)

    before_steps(monkeypatch, interrupt, call=8)  # epoch 2, before step 3
    trainer = make_trainer(tmp_path, dropout=0.3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, 2)
    assert "interrupted: checkpoint saved" in trainer.progress.stream.getvalue()
    assert all(not m._records for m in trainer.model.modules())
    state = rnnx.load(trainer.checkpoint)
    assert (state["epoch"], state["step"]) == (1, 2)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="interrupted epoch was over 160 samples"):
        resumed(tmp_path).fit(x[:100], y[:100], 2)

    trainer = resumed(tmp_path, dropout=0.3)
    trainer.fit(x, y, 2)
    assert_bitwise_equal(params(trainer), params(straight))
    assert without_times(trainer.history) == without_times(straight.history)


def test_sigint_stops_after_the_current_step(tmp_path, monkeypatch):
    x, y = make_data(160)
    calls = before_steps(monkeypatch, lambda *_: os.kill(os.getpid(), signal.SIGINT), call=2)
    trainer = make_trainer(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, 1)
    assert len(calls) == 2 and signal.getsignal(signal.SIGINT) is before
    state = rnnx.load(trainer.checkpoint)
    assert (state["epoch"], state["step"]) == (0, 2)
    assert "stopping after the current step" in trainer.progress.stream.getvalue()


def test_second_sigint_interrupts_at_once(tmp_path, monkeypatch):
    x, y = make_data(160)

    def ctrl_c_twice(*_):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    before_steps(monkeypatch, ctrl_c_twice, call=2)
    trainer = make_trainer(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, 1)
    state = rnnx.load(trainer.checkpoint)
    assert (state["epoch"], state["step"]) == (0, 1)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    x, y = make_data(96)
    trainer = make_trainer(tmp_path)
    trainer.fit(x, y, 1)
    checkpoint = open(trainer.checkpoint, "rb").read()
    bad_x = x.copy()
    bad_x[40, 2, 1] = np.nan
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step \d/3: training "
                       r"stopped. The last good checkpoint \(end of epoch 1\) is kept at "
                       r".*run.npz"):
        trainer.fit(bad_x, y, 2)
    assert open(trainer.checkpoint, "rb").read() == checkpoint
    assert len(json.load(open(tmp_path / "metrics.json"))["epochs"]) == 1
    assert all(not m._records for m in trainer.model.modules()) and trainer.epoch == 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_huge_learning_rate_diverges_without_checkpoint(tmp_path):
    x, y = make_data(96)
    trainer = make_trainer(tmp_path)
    trainer.optimizer.param_groups[0]["lr"] = 1e38
    with pytest.raises(TrainingDiverged, match=r"loss is (inf|nan) at epoch 1, .* No checkpoint "
                       r"was written to .*run.npz"):
        trainer.fit(x, y, 3)
    assert not os.path.exists(trainer.checkpoint)


def test_metrics_json_written_after_every_epoch(tmp_path):
    x, y = make_data(64)
    config = {"hidden_size": 8, "note": "unit test"}
    trainer = make_trainer(tmp_path, config=config)
    for epochs in (1, 2):
        trainer.fit(x, y, epochs, eval_data=(x[:40], y[:40]))
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["config"] == config and len(metrics["epochs"]) == epochs
    for i, entry in enumerate(metrics["epochs"], 1):
        assert set(entry) == {"epoch", "train_seconds", "train_loss", "train_accuracy",
                              "test_loss", "test_accuracy", "lr"}
        assert entry["epoch"] == i and entry["train_seconds"] > 0
        assert entry["test_accuracy"] in [k / 40 for k in range(41)]  # a fraction of 40
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "metrics.json"]
    assert os.listdir(tmp_path / "ckpt") == ["run.npz"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_when_not_a_terminal():
    x, y = make_data(96)
    trainer = make_trainer(log_interval=0)
    trainer.fit(x, y, 2, eval_data=(x[:32], y[:32]))
    out = trainer.progress.stream.getvalue()
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 2 * (3 + 1)
    assert lines[0].startswith("epoch 1/2 step 1/3 loss ")
    for line in lines[:3]:
        assert " acc " in line and " samples/s eta " in line
    assert lines[3].startswith("epoch 1/2: train loss ") and "; test loss " in lines[3]


def test_progress_default_interval_prints_one_line_per_epoch_start():
    x, y = make_data(96)
    trainer = make_trainer()
    trainer.fit(x, y, 1)
    assert trainer.progress.stream.getvalue().splitlines()[0].startswith("epoch 1/1 step 1/3 ")


def test_progress_bar_on_a_terminal():
    x, y = make_data(96)
    trainer = make_trainer(stream=FakeTerminal())
    trainer.fit(x, y, 1)
    out = trainer.progress.stream.getvalue()
    assert out.startswith("\repoch 1/1 [") and "3/3 loss " in out and " samples/s" in out
    assert "[========================] 3/3" in out
    assert out.endswith("\nepoch 1/1: train loss " + out.rsplit("epoch 1/1: train loss ", 1)[1])


def test_fit_rejects_mismatched_data():
    x, y = make_data(10)
    with pytest.raises(ValueError, match="same positive number of samples"):
        make_trainer().fit(x, y[:5], 1)


def test_empty_evaluation_set_is_refused_before_training():
    """An empty eval set used to end the first epoch in ZeroDivisionError: a ValueError
    before any step, from fit and from evaluate."""
    x, y = make_data(10)
    trainer = make_trainer()
    before = [p.data.copy() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match="fit: eval_data: x and y must hold the same positive "
                                         "number of samples, got 0 and 0"):
        trainer.fit(x, y, 1, eval_data=(x[:0], y[:0]))
    assert trainer.step == 0 and trainer.epoch == 0
    assert all((p.data == b).all() for p, b in zip(trainer.model.parameters(), before))
    with pytest.raises(ValueError, match="evaluate: x and y must hold the same positive"):
        evaluate(trainer.model, trainer.loss_fn, x[:0], y[:0])


def make_padded_data(n, seed=0):
    """Padded sequences (n, T, F) of lengths 1..T, garbage past each end; the class is which
    third of [-1, 1] feature 0 of each sequence's own last step is in."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, T, F)).astype(np.float32)
    lengths = rng.integers(1, T + 1, n)
    y = np.digitize(x[np.arange(n), lengths - 1, 0], [-1 / 3, 1 / 3]).astype(np.int64)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 7.0   # padding must not matter
    return x, y, lengths


def test_fit_on_padded_batches_with_lengths():
    """The trainer passes each batch's lengths to the model; the classifier reads the state at
    each sequence's own last step, so it learns the task and ignores the padding."""
    x, y, lengths = make_padded_data(384)
    xt, yt, lt = make_padded_data(128, seed=1)
    trainer = make_trainer()
    history = trainer.fit(x, y, 6, eval_data=(xt, yt, lt), lengths=lengths)
    assert history[-1]["test_accuracy"] > 0.7
    xt_other = xt.copy()
    xt_other[np.arange(T)[None, :] >= lt[:, None]] = -3.0
    assert trainer.evaluate(xt, yt, lt) == trainer.evaluate(xt_other, yt, lt)
    with pytest.raises(ValueError, match="one length per sample"):
        trainer.fit(x, y, 7, lengths=lengths[:-1])


def test_write_json_atomic_follows_symlinks_and_cleans_up(tmp_path, monkeypatch):
    from rnnx.train import write_json_atomic
    target = tmp_path / "runs" / "metrics.json"
    target.parent.mkdir()
    link = tmp_path / "metrics.json"
    link.symlink_to(target)
    write_json_atomic({"a": 1}, link)
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}

    def replace(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic({"a": 2}, link)
    monkeypatch.undo()
    assert sorted(os.listdir(target.parent)) == ["metrics.json"]
    assert json.loads(target.read_text()) == {"a": 1}
