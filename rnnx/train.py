"""Trainer: seeded mini-batch training of an rnnx model with evaluation, progress and checkpoints.

    trainer = Trainer(model, SGD(model.parameters(), lr=0.1, momentum=0.9), batch_size=128,
                      checkpoint="run.npz", metrics_json="metrics.json")
    history = trainer.fit(x_train, y_train, epochs=10, eval_data=(x_test, y_test))

Samples are indexed on the first axis of x and y (use batch_first=True recurrent layers for
(N, T, F) sequences). A checkpoint holds everything the run depends on (model, optimizer,
scheduler, the rnnx RNG, the trainer's shuffle RNG, position, metrics, config), so that
`trainer.load_state_dict(rnnx.load(path))` followed by `fit` continues bitwise as if the run
had never stopped, including from the middle of an epoch (Ctrl-C).
"""
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from . import _random
from ._data_parallel import data_parallel
from ._files import atomic_write
from ._grad_mode import no_grad
from .distributed.cli import NullStream
from .nn.loss import CrossEntropyLoss
from .nn.module import accepts_input_grad
from .optim.lr_scheduler import ReduceLROnPlateau
from .serialization import save
from .utils.clip_grad import clip_grad_norm_


class TrainingDiverged(RuntimeError):
    """Raised by Trainer.fit when the loss becomes nan or infinite."""


def shuffle_generator(seed):
    """The trainer's shuffling Generator for `seed` (a stream independent of rnnx.manual_seed);
    each epoch draws `generator.permutation(n)`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(1,))))


def check_samples(x, y, what):
    """ValueError unless x and y hold the same positive number of samples."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what}: x and y must hold the same positive number of samples, got "
                         f"{len(x)} and {len(y)}")


@no_grad()
def evaluate(model, loss_fn, x, y, batch_size=1000, before_batch=None, lengths=None):
    """(mean loss, accuracy) of model on (x, y) in eval mode under no_grad(), in batches
    (nothing is recorded, even by a module of one's own); accuracy (the fraction
    of argmax(output) == y) is None unless y holds integer class labels. Modes are restored.
    before_batch (optional) is called before each batch. lengths (optional, one per sample):
    the valid length of each padded sequence, passed on as model(xb, lengths=...)."""
    check_samples(x, y, "evaluate")
    modes = [(m, m.training) for m in (model, loss_fn)]
    model.eval()
    loss_fn.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, len(x), batch_size):
            if before_batch is not None:
                before_batch()
            rows = slice(start, start + batch_size)
            out = _forward(model, x[rows], None if lengths is None else lengths[rows])
            yb = y[rows]
            loss_sum += float(loss_fn(out, yb)) * len(yb)
            correct += _count_correct(out, yb)
    finally:
        for m, mode in modes:
            m.train(mode)
    return loss_sum / len(x), (correct / len(x) if _is_classification(y) else None)


def _forward(model, xb, lengths):
    """model(xb), with lengths= for padded sequences."""
    return model(xb) if lengths is None else model(xb, lengths=lengths)


def _is_classification(y):
    return np.asarray(y).dtype.kind in "iu"


def _count_correct(out, y):
    return int((np.argmax(out, axis=-1) == y).sum()) if _is_classification(y) else 0


def _json_default(obj):
    """json.dump's fallback: numpy scalars as Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(obj, path):
    """Write obj as JSON to path (its directory is created; onto a symlink: to its target),
    whole or not at all (rnnx._files.atomic_write, as rnnx.save)."""
    path = os.path.realpath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))


class Progress:
    """Training progress on `stream`: a bar redrawn in place on a terminal, else a plain line
    every `interval` seconds (logs, CI)."""

    def __init__(self, stream, interval=30.0):
        self.stream = stream
        self.interval = interval
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._bar_open = False
        self._last = -math.inf

    def update(self, epoch, epochs, step, steps, loss, accuracy, seen, seconds):
        """Report the running metrics of an epoch after `step` of `steps` batches."""
        now = time.perf_counter()
        final_bar = self.tty and step == steps
        if now - self._last < (0.1 if self.tty else self.interval) and not final_bar:
            return
        self._last = now
        rate = seen / seconds if seconds > 0 else 0.0
        eta = (steps - step) * seconds / step if step else 0.0
        stats = f"loss {loss:.4f}{_fmt_acc(accuracy)} {rate:,.0f} samples/s eta {_fmt_time(eta)}"
        if self.tty:
            filled = 24 * step // steps
            self.stream.write(f"\repoch {epoch}/{epochs} [{'=' * filled:<24}] {step}/{steps} "
                              f"{stats}\x1b[K")
            self._bar_open = True
        else:
            self.stream.write(f"epoch {epoch}/{epochs} step {step}/{steps} {stats}\n")
        self.stream.flush()

    def message(self, text):
        """A line of its own (after the bar, if one is drawn)."""
        self.stream.write(("\n" if self._bar_open else "") + text + "\n")
        self.stream.flush()
        self._bar_open = False
        self._last = -math.inf


def _fmt_acc(accuracy):
    return "" if accuracy is None else f" acc {accuracy:.2%}"


def _fmt_time(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class Trainer:
    """Mini-batch training of `model` (a Module with forward and backward, e.g.
    Sequential(LSTM(..., batch_first=True), LastHidden(), Linear(...))) with `optimizer`.

    Each epoch visits the training samples in an order drawn from the trainer's own Generator
    (`shuffle_generator(seed)`), in batches of `batch_size` (the last may be smaller): zero the
    gradients, forward, loss_fn (default CrossEntropyLoss), backward, clip_grad_norm_ to `clip`
    (if given), optimizer step. After the epoch: evaluation on eval_data (eval mode, batches of
    eval_batch_size), a history entry, scheduler.step() (ReduceLROnPlateau gets the test loss,
    else the train loss), the checkpoint (if `checkpoint` is a path) and the metrics file
    {"config": config, "epochs": history} (if `metrics_json` is a path), both atomic.

    Ctrl-C stops after the current step and saves a checkpoint (a second Ctrl-C interrupts at
    once); any KeyboardInterrupt saves one and is re-raised. A non-finite loss raises
    TrainingDiverged before the step is applied, keeping the last good checkpoint.

    Data-parallel when rnnx.distributed is initialised (e.g. under `mpiexec -n 4`): batch_size is
    the global batch, split across the ranks, which train the model wrapped in
    DistributedDataParallel (see rnnx._data_parallel); evaluation is split and reduced; the
    settings must agree across ranks (ValueError otherwise); only rank 0 reports progress and
    writes the checkpoint and metrics; a Ctrl-C stops every rank at the same step.

    config: plain values (str, int, float, bool, None) stored in checkpoints and metrics.
    Progress goes to `stream` (default sys.stderr): see Progress for `log_interval`.
    """

    def __init__(self, model, optimizer, loss_fn=None, *, batch_size=128, eval_batch_size=1000,
                 scheduler=None, clip=None, seed=0, checkpoint=None, metrics_json=None,
                 config=None, stream=None, log_interval=30.0):
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be positive")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loss_fn = CrossEntropyLoss() if loss_fn is None else loss_fn
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.clip, self.checkpoint, self.metrics_json = clip, checkpoint, metrics_json
        self.config = dict(config or {})
        # data-parallel when rnnx.distributed is initialised (see rnnx._data_parallel)
        self._group = data_parallel(model, optimizer, {
            "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
            "clip": clip, "seed": seed})
        self._net = model if self._group is None else self._group.net
        if self._group is not None:
            self.model = self._net.module
            stream = stream if self._group.is_main else NullStream()
        self.progress = Progress(sys.stderr if stream is None else stream, log_interval)
        self.rng = shuffle_generator(seed)
        # the input is data: its gradient is not wanted (skipped if the model can)
        self._backward_options = {"input_grad": False} if accepts_input_grad(self.model) else {}
        self.epoch = 0     # completed epochs
        self.step = 0      # completed batches of the epoch in progress
        self.history = []  # one dict per completed epoch
        self.step_losses = []  # the loss of every training step of the run, in order
        self._running = _new_running()
        self._epoch_start_state = self.rng.bit_generator.state
        self._train_size = None
        self._saved_at = None  # position of the last checkpoint written or loaded
        self._stop_requested = self._stop_agreed = False  # agreed: by every rank
        self._busy = False  # inside an update that a KeyboardInterrupt would leave half done

    # -- state --------------------------------------------------------------------------
    def state_dict(self):
        """The checkpoint: every piece of state the continuation of the run depends on."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": _random.get_rng_state(),
            "shuffle_rng": json.dumps(self._epoch_start_state),
            "epoch": self.epoch, "step": self.step, "train_size": self._train_size,
            "running": dict(self._running), "history": [dict(h) for h in self.history],
            "step_losses": list(self.step_losses),
            "config": self.config,
        }

    def load_state_dict(self, state):
        """Restore a state_dict() (e.g. rnnx.load(checkpoint)); the config is left to the caller."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (self.scheduler is None) != (state["scheduler"] is None):
            raise ValueError("the checkpoint and the trainer disagree on having an lr scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        _random.set_rng_state(state["rng"])
        self._epoch_start_state = json.loads(str(state["shuffle_rng"]))
        self.rng.bit_generator.state = self._epoch_start_state
        self.epoch, self.step, self._train_size = state["epoch"], state["step"], state["train_size"]
        self._running = dict(state["running"])
        self.history = [dict(h) for h in state["history"]]
        self.step_losses = list(state.get("step_losses", ()))  # older checkpoints: none
        self._saved_at = self._where()

    def save_checkpoint(self):
        """Write state_dict() to the checkpoint path (atomically); no-op without a path."""
        if self.checkpoint is not None:
            if self._group is None or self._group.is_main:
                os.makedirs(os.path.dirname(os.path.abspath(self.checkpoint)), exist_ok=True)
                save(self.state_dict(), self.checkpoint)
            self._saved_at = self._where()
            if self._group is not None:
                self._group.barrier()  # written before any rank goes on (or exits)

    # -- training -------------------------------------------------------------------------
    def evaluate(self, x, y, lengths=None):
        """(mean loss, accuracy) on (x, y); see evaluate(). A Ctrl-C during fit stops it
        between batches (between evaluations when data-parallel)."""
        if self._group is not None:
            return self._group.evaluate(evaluate, self.model, self.loss_fn, x, y,
                                        self.eval_batch_size, lengths)
        return evaluate(self.model, self.loss_fn, x, y, self.eval_batch_size, self._check_stop,
                        lengths)

    def fit(self, x, y, epochs, eval_data=None, lengths=None):
        """Train until `epochs` epochs are complete (counting those of a restored checkpoint);
        returns the history, one dict per epoch: epoch, train_seconds (the epoch's training
        steps alone), train_loss, train_accuracy, test_loss, test_accuracy, lr. Every
        step's loss is appended to step_losses (kept in checkpoints).

        Padded sequences: lengths (one per sample) goes to the model as
        model(xb, lengths=...) with each batch; eval_data may then be (x, y, lengths)."""
        check_samples(x, y, "fit")
        if eval_data is not None:
            check_samples(eval_data[0], eval_data[1], "fit: eval_data")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (len(x),):
                raise ValueError(f"lengths must hold one length per sample: expected shape "
                                 f"({len(x)},), got {lengths.shape}")
        self.check_resume(len(x))
        self._train_size = len(x)
        self._stop_requested = self._stop_agreed = self._busy = False
        with self._deferred_sigint():
            try:
                while self.epoch < epochs:
                    self._run_epoch(x, y, lengths, epochs, eval_data)
            except KeyboardInterrupt:
                self._on_interrupt()
                raise
        return self.history

    def check_resume(self, n_samples):
        """ValueError unless a restored run stopped mid-epoch can go on over n_samples samples:
        the same number as its interrupted epoch, whose steps it has not all run past."""
        if not self.step:
            return
        if self._train_size != n_samples:
            raise ValueError(f"the interrupted epoch was over {self._train_size} samples, "
                             f"got {n_samples}")
        steps = -(-n_samples // self.batch_size)
        if self.step > steps:
            raise ValueError(f"the checkpoint's step {self.step} is past the end of its epoch "
                             f"({steps} steps of {self.batch_size} over {n_samples} samples)")

    def _run_epoch(self, x, y, lengths, epochs, eval_data):
        steps = -(-len(x) // self.batch_size)
        self._epoch_start_state = self.rng.bit_generator.state
        order = self.rng.permutation(len(x))
        run = self._running
        for b in range(self.step, steps):
            self._check_stop()
            t0 = time.perf_counter()
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            mine = idx if self._group is None else self._group.shard(idx)
            loss, correct = self._train_step(x[mine], y[mine], b, steps,
                                             None if lengths is None else lengths[mine])
            self.step_losses.append(loss)
            run["loss_sum"] += loss * len(idx)
            run["correct"] += correct
            run["seen"] += len(idx)
            run["seconds"] += time.perf_counter() - t0
            self.step = b + 1
            self.progress.update(self.epoch + 1, epochs, self.step, steps,
                                 run["loss_sum"] / run["seen"], self._accuracy(y, run),
                                 run["seen"], run["seconds"])
        test_loss, test_acc = None, None
        if eval_data is not None:
            test_loss, test_acc = self.evaluate(*eval_data)
        self._finish_epoch(y, test_loss, test_acc, epochs)

    def _train_step(self, xb, yb, b, steps, lengths=None):
        """One optimisation step; returns (loss, number of correct predictions)."""
        self.optimizer.zero_grad()
        try:
            out = _forward(self._net, xb, lengths)
            loss, correct = float(self.loss_fn(out, yb)), _count_correct(out, yb)
            if self._group is not None:  # the whole batch's, on every rank
                loss, correct, self._stop_agreed = self._group.agree(loss, correct,
                                                                     self._stop_requested)
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss} at epoch {self.epoch + 1}, step "
                                       f"{b + 1}/{steps}: training stopped. {self._kept()}")
            grad = self.loss_fn.backward()
            if self._group is not None:
                grad = self._group.weight(grad)
            self._net.backward(grad, **self._backward_options)
        except BaseException:
            self.model.clear_records()
            self.loss_fn.clear_records()
            raise
        self._busy = True
        if self.clip is not None:
            clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self._busy = False
        return loss, correct

    def _finish_epoch(self, y, test_loss, test_acc, epochs):
        run = self._running
        entry = {"epoch": self.epoch + 1, "train_seconds": run["seconds"],
                 "train_loss": run["loss_sum"] / run["seen"],
                 "train_accuracy": self._accuracy(y, run),
                 "test_loss": test_loss, "test_accuracy": test_acc,
                 "lr": self.optimizer.param_groups[0]["lr"]}
        bad = [name for name, p in self.model.named_parameters() if not np.isfinite(p.data).all()]
        if bad:
            raise TrainingDiverged(f"non-finite parameters after epoch {self.epoch + 1} "
                                   f"({', '.join(bad)}): training stopped. {self._kept()}")
        self._busy = True
        self.history.append(entry)
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(entry["train_loss"] if test_loss is None else test_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.epoch += 1
        self.step = 0
        self._running = _new_running()
        self._epoch_start_state = self.rng.bit_generator.state
        self._busy = False
        self.save_checkpoint()
        if self.metrics_json is not None and (self._group is None or self._group.is_main):
            write_json_atomic({"config": self.config, "epochs": self.history}, self.metrics_json)
        test = "" if test_loss is None else f"; test loss {test_loss:.4f}{_fmt_acc(test_acc)}"
        self.progress.message(
            f"epoch {self.epoch}/{epochs}: train loss {entry['train_loss']:.4f}"
            f"{_fmt_acc(entry['train_accuracy'])} in {entry['train_seconds']:.1f} s "
            f"({run['seen'] / max(run['seconds'], 1e-9):,.0f} samples/s){test}")

    @staticmethod
    def _accuracy(y, run):
        return run["correct"] / run["seen"] if _is_classification(y) else None

    # -- stopping -----------------------------------------------------------------------------
    def _where(self):
        """The run's position, e.g. 'end of epoch 2' or 'epoch 3, step 40/469'."""
        if self.step:
            steps = -(-self._train_size // self.batch_size)
            return f"epoch {self.epoch + 1}, step {self.step}/{steps}"
        return f"end of epoch {self.epoch}" if self.epoch else "start of training"

    def _kept(self):
        """What the stopped run leaves behind on disk."""
        if self.checkpoint is None:
            return "No checkpoint path was given."
        if self._saved_at is None:
            return f"No checkpoint was written to {self.checkpoint}."
        return f"The last good checkpoint ({self._saved_at}) is kept at {self.checkpoint}."

    def _check_stop(self):
        if self._stop_agreed if self._group is not None else self._stop_requested:
            raise KeyboardInterrupt

    def _on_interrupt(self):
        if self._busy:
            self.progress.message(f"interrupted during an update: checkpoint not written. "
                                  f"{self._kept()}")
        elif self.checkpoint is not None:
            self.save_checkpoint()
            self.progress.message(f"interrupted: checkpoint saved to {self.checkpoint} "
                                  f"({self._saved_at})")
        else:
            self.progress.message("interrupted (no checkpoint path given)")

    @contextlib.contextmanager
    def _deferred_sigint(self):
        """In the main thread, a first SIGINT only requests a stop at the next step boundary."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum, frame):
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.progress.message("stopping after the current step (Ctrl-C again to abort at once)")


def _new_running():
    """Running sums of the epoch in progress."""
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
