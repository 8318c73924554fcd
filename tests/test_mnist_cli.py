"""rnnx-mnist (rnnx.mnist.main): arguments, training, exact resume, Ctrl-C, divergence,
--eval-only, on a tiny fake MNIST; plus a smoke run on the real data when it is present."""
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnx
from rnnx import mnist, nn
from rnnx.train import Trainer

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_idx(path, array):
    """array (uint8) as a gzipped IDX file."""
    magic = 0x800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """96 training and 40 test images whose label is the bright row's third (0, 1 or 2)."""
    directory = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 40)):
        labels = rng.integers(0, 3, n)
        images = rng.integers(0, 60, (n, 28, 28))
        images[np.arange(n), labels * 9 + 4] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture
def run(fake_mnist, tmp_path, capsys):
    """run(*args) -> (exit code, stdout, stderr) of main() on the fake data with a tiny model;
    checkpoint and metrics in tmp_path unless given."""
    def run(*args):
        base = ["--data-dir", str(fake_mnist), "--hidden-size", "8", "--batch-size", "32",
                "--checkpoint", str(tmp_path / "run.npz"), "--metrics-json",
                str(tmp_path / "metrics.json")]
        code = mnist.main(base + [str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def metrics(tmp_path):
    return json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.parametrize("args, message", [
    (["--cell", "lstn"], "argument --cell: invalid choice: 'lstn'"),
    (["--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    (["--lr", "-0.5"], "argument --lr: must be >= 0.0, got -0.5"),
    (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["--clip", "0"], "argument --clip: must be > 0.0, got 0"),
    (["--resume", "--eval-only"], "argument --eval-only: not allowed with argument --resume"),
    (["--resume", "--no-checkpoint"], "--resume reads --checkpoint: it cannot be combined with "
                                      "--no-checkpoint"),
    (["--eval-only", "--checkpoint", "missing.npz"], "--eval-only: no checkpoint at missing.npz"),
])
def test_argument_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        mnist.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_reports_errors():
    proc = subprocess.run([sys.executable, "-m", "rnnx.mnist", "--cell", "foo"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'foo'" in proc.stderr
    assert proc.stderr.startswith("usage: rnnx-mnist")


def test_train_metrics_and_eval_only(run, tmp_path):
    code, out, err = run("--epochs", 2, "--lr", 0.5)
    assert code == 0
    assert "2-layer LSTM hidden 8, 96 training / 40 test images" in err
    data = metrics(tmp_path)
    assert data["config"] == {**mnist.RUN_DEFAULTS, "hidden_size": 8, "batch_size": 32, "lr": 0.5,
                              "epochs": 2, "threads": rnnx.get_num_threads()}
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]
    for entry in data["epochs"]:
        assert {"train_seconds", "train_loss", "test_loss", "test_accuracy"} <= set(entry)
        assert entry["train_seconds"] > 0 and 0 <= entry["test_accuracy"] <= 1
    last = data["epochs"][-1]
    total = data["epochs"][0]["train_seconds"] + last["train_seconds"]
    assert out.startswith(f"epoch 2: test accuracy {last['test_accuracy']:.4f}, test loss "
                          f"{last['test_loss']:.4f}; 2 epochs, {total:.1f} s of training steps "
                          f"in all; this session ")
    assert out.endswith(f" s (loading and evaluation included); checkpoint: "
                        f"{tmp_path / 'run.npz'}\n")

    code, out, _ = run("--eval-only")
    assert code == 0
    assert out == (f"{tmp_path / 'run.npz'} (epoch 2): test loss {last['test_loss']:.4f}, "
                   f"test accuracy {last['test_accuracy']:.4f} on 40 images\n")
    code, out, _ = run("--eval-only", "--limit-test", 10)
    assert code == 0 and out.endswith("on 10 images\n")
    code, _, err = run("--epochs", 1)
    assert code == 0 and "starting a new run over" in err and "(--resume continues it)" in err


def test_resume_continues_bitwise(run, tmp_path):
    assert run("--epochs", 2, "--cell", "gru", "--checkpoint", tmp_path / "straight.npz")[0] == 0
    straight = rnnx.load(tmp_path / "straight.npz")

    assert run("--epochs", 1, "--cell", "gru")[0] == 0
    assert rnnx.load(tmp_path / "run.npz")["epoch"] == 1
    code, _, err = run("--resume", "--epochs", 2, "--cell", "gru")
    assert code == 0 and "epoch 2/2: train loss" in err and "epoch 1/2" not in err
    resumed = rnnx.load(tmp_path / "run.npz")
    assert resumed["epoch"] == 2
    for name, value in straight["model"].items():
        assert resumed["model"][name].tobytes() == value.tobytes(), name
    assert [e["test_loss"] for e in metrics(tmp_path)["epochs"]] == \
        [e["test_loss"] for e in straight["history"]]


def test_resume_rejects_conflicting_settings(run, tmp_path, capsys):
    assert run("--epochs", 1, "--limit-train", 64)[0] == 0
    with pytest.raises(SystemExit) as exc:
        run("--resume", "--epochs", 2, "--num-layers", 3)
    assert exc.value.code == 2
    assert "--num-layers 3 conflicts with the checkpoint's 2" in capsys.readouterr().err
    assert run("--resume", "--epochs", 2, "--limit-train", 64, "--num-layers", 2)[0] == 0


def test_resume_rejects_a_foreign_checkpoint(run, tmp_path, capsys):
    rnnx.save({"epoch": 1}, tmp_path / "run.npz")
    with pytest.raises(SystemExit):
        run("--resume")
    assert "was not written by rnnx-mnist" in capsys.readouterr().err
    assert run("--epochs", 1)[0] == 0
    state = rnnx.load(tmp_path / "run.npz")
    rnnx.save({**state, "epoch": "one"}, tmp_path / "run.npz")
    with pytest.raises(SystemExit):
        run("--resume")
    assert "was not written by rnnx-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("sigint", [False, True], ids=["KeyboardInterrupt", "SIGINT"])
def test_ctrl_c_saves_a_checkpoint_and_exits_130(run, tmp_path, monkeypatch, sigint, fake_mnist):
    original = Trainer._train_step
    calls = []

    def step(self, *args):
        calls.append(1)
        if len(calls) == 5 and not sigint:  # raised before epoch 2, step 2
            raise KeyboardInterrupt
        result = original(self, *args)
        if len(calls) == 4 and sigint:  # a real Ctrl-C during epoch 2, step 1
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "_train_step", step)
    code, _, err = run("--epochs", 3)
    assert code == mnist.INTERRUPTED == 130 and len(calls) == 5 - sigint
    assert ("stopping after the current step" in err) == sigint
    assert f"interrupted: checkpoint saved to {tmp_path / 'run.npz'} (epoch 2, step 1/3)" in err
    checkpoint = tmp_path / "run.npz"
    assert (f"continue with: rnnx-mnist --resume --checkpoint {checkpoint} --epochs 3 --data-dir "
            f"{fake_mnist} --metrics-json {tmp_path / 'metrics.json'}\n") in err
    state = rnnx.load(tmp_path / "run.npz")
    assert (state["epoch"], state["step"]) == (1, 1)
    monkeypatch.undo()
    code, out, _ = run("--resume")  # to the saved run's 3 epochs, not the default 10
    assert code == 0 and out.startswith("epoch 3: ")
    assert [e["epoch"] for e in metrics(tmp_path)["epochs"]] == [1, 2, 3]


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(run, tmp_path, monkeypatch):
    original = nn.CrossEntropyLoss.forward
    calls = []

    def forward(self, *args):
        loss = original(self, *args)
        if self.training:
            calls.append(1)
            if len(calls) == 5:  # epoch 2, step 2
                return np.float32("nan")
        return loss

    monkeypatch.setattr(nn.CrossEntropyLoss, "forward", forward)
    code, out, err = run("--epochs", 3)
    assert code == 1 and out == ""
    assert ("rnnx-mnist: error: loss is nan at epoch 2, step 2/3: training stopped. The last "
            f"good checkpoint (end of epoch 1) is kept at {tmp_path / 'run.npz'}.") in err
    assert "A lower --lr or a --clip may help." in err
    assert rnnx.load(tmp_path / "run.npz")["epoch"] == 1
    assert len(metrics(tmp_path)["epochs"]) == 1


def test_resume_of_a_finished_run_says_how_to_extend_it(run, tmp_path):
    assert run("--epochs", 2)[0] == 0
    before = (tmp_path / "run.npz").read_bytes()
    for extra in ([], ["--epochs", 1], ["--epochs", 2]):
        code, out, err = run("--resume", *extra)
        assert code == 0 and out == ""
        assert (f"rnnx-mnist: the run in {tmp_path / 'run.npz'} is finished (epoch 2 of 2); to "
                f"train it further: rnnx-mnist --resume --checkpoint {tmp_path / 'run.npz'} "
                f"--epochs 3 (or more)") in err
    assert (tmp_path / "run.npz").read_bytes() == before
    code, out, _ = run("--resume", "--epochs", 3)
    assert code == 0 and out.startswith("epoch 3: ")


def test_eval_only_reads_no_training_file(run, fake_mnist, tmp_path, monkeypatch):
    assert run("--epochs", 1)[0] == 0
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (test_only / name).write_bytes((fake_mnist / name).read_bytes())

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr("urllib.request.OpenerDirector.open", no_network)
    code, out, err = run("--eval-only", "--data-dir", test_only)
    assert code == 0 and out.endswith("on 40 images\n"), err


@pytest.fixture
def no_training(monkeypatch):
    """Trainer.fit fails the test: the error must come before any training."""
    def fit(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(Trainer, "fit", fit)


@pytest.mark.parametrize("option", ["--checkpoint", "--metrics-json", "--plot"])
def test_unwritable_paths_are_refused_before_training(run, tmp_path, capsys, option, no_training):
    pytest.importorskip("matplotlib") if option == "--plot" else None
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "a-dir.png").mkdir()
    for path, reason in ((blocker / "out.png", f"{blocker} is not a directory"),
                         (tmp_path / "a-dir.png", "it is a directory")):
        with pytest.raises(SystemExit) as exc:
            run(option, path)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"rnnx-mnist: error: {option} {path}: cannot write there ({reason})" in err
        assert "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into a read-only directory")
def test_read_only_directory_is_refused_before_training(run, tmp_path, capsys, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            run("--checkpoint", locked / "run.npz")
    finally:
        locked.chmod(0o700)
    assert exc.value.code == 2
    assert (f"rnnx-mnist: error: --checkpoint {locked / 'run.npz'}: cannot write there "
            f"(Permission denied)") in capsys.readouterr().err


def test_plot_draws_the_learning_curves(run, tmp_path):
    pytest.importorskip("matplotlib")
    code, _, _ = run("--epochs", 2, "--plot", tmp_path / "plots" / "curves.png")
    assert code == 0
    assert (tmp_path / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(run, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(SystemExit) as exc:
        run("--plot", tmp_path / "curves.png")
    assert exc.value.code == 2
    assert ("rnnx-mnist: error: --plot needs matplotlib, which is not installed (pip install "
            "matplotlib)") in capsys.readouterr().err


def test_plot_rejects_unknown_formats(run, tmp_path, capsys, no_training):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as exc:
        run("--plot", tmp_path / "curves.txt")
    assert exc.value.code == 2
    assert "--plot " + str(tmp_path / "curves.txt") + ": expected a .png, .pdf or .svg" in \
        capsys.readouterr().err


@pytest.mark.parametrize("empty", ["train", "t10k"])
def test_empty_data_sets_are_an_error(tmp_path, capsys, empty, no_training):
    directory = tmp_path / "data"
    directory.mkdir()
    for prefix in ("train", "t10k"):
        n = 0 if prefix == empty else 4
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n))
    code = mnist.main(["--data-dir", str(directory), "--no-checkpoint"])
    err = capsys.readouterr().err
    name = "training" if empty == "train" else "test"
    assert code == 1 and f"rnnx-mnist: error: the MNIST {name} files hold no images" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--resume", "--eval-only"])
@pytest.mark.parametrize("damage", ["hidden_size", "cell", "weights", "optimizer", "batch_size",
                                    "lr"])
def test_inconsistent_checkpoints_are_usage_errors(run, tmp_path, capsys, flag, damage,
                                                   fake_mnist):
    assert run("--epochs", 1)[0] == 0
    state = rnnx.load(tmp_path / "run.npz")
    if damage == "hidden_size":
        state["config"]["hidden_size"] = 16
    elif damage == "cell":
        state["config"]["cell"] = "transformer"
    elif damage == "weights":
        state["model"]["0.weight_hh_l0"] = state["model"]["0.weight_hh_l0"][:, :3]
    elif damage in ("batch_size", "lr"):
        state["config"][damage] = -1
    else:
        state["optimizer"] = {"state": "nonsense"}
    rnnx.save(state, tmp_path / "run.npz")
    capsys.readouterr()
    args = [flag, "--epochs", "2", "--checkpoint", str(tmp_path / "run.npz"), "--data-dir",
            str(fake_mnist)]
    if flag == "--eval-only" and damage in ("optimizer", "batch_size", "lr"):
        assert mnist.main(args) == 0  # --eval-only reads the model alone
        return
    with pytest.raises(SystemExit) as exc:
        mnist.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (f"rnnx-mnist: error: {flag}: {tmp_path / 'run.npz'} does not match its own settings "
            f"(") in err, err
    assert "Traceback" not in err


def test_a_write_failing_during_training_is_an_error_line(run, tmp_path, capsys, monkeypatch):
    def save(obj, path):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr("rnnx.train.save", save)
    code, out, err = run("--epochs", 2)
    assert code == 1 and out == ""
    assert (f"rnnx-mnist: error: writing {tmp_path / 'run.npz'} failed: No space left on device"
            in err)


def test_export_onnx(run, tmp_path, monkeypatch, capsys):
    """--export-onnx: the trained (or --eval-only) classifier, whose logits ONNX Runtime
    reproduces; refused up front without the onnx package."""
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")
    pytest.importorskip("onnx", reason="--export-onnx needs the onnx package")
    x = mnist.prepare_images(np.random.default_rng(1).integers(0, 256, (3, 28, 28)))
    for args in (["--epochs", 1], ["--eval-only"]):
        path = tmp_path / "mnist.onnx"
        code, _, err = run(*args, "--export-onnx", path)
        assert code == 0 and f"model exported to {path}" in err
        state = rnnx.load(tmp_path / "run.npz")
        model = mnist.build_model(state["config"])
        model.load_state_dict(state["model"])
        model.eval()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"x": x})
        np.testing.assert_allclose(logits, model(x), rtol=1e-4, atol=2e-5)
        path.unlink()
    with pytest.raises(SystemExit):  # checked before training
        run("--epochs", 1, "--export-onnx", tmp_path)
    assert f"--export-onnx {tmp_path}: cannot write there" in capsys.readouterr().err
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit):
        run("--epochs", 1, "--export-onnx", tmp_path / "mnist.onnx")
    assert "--export-onnx needs the onnx package" in capsys.readouterr().err
    assert not (tmp_path / "mnist.onnx").exists()


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not found at {REAL_MNIST}")
def test_smoke_run_on_real_mnist(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rnnx.mnist", "--data-dir", str(REAL_MNIST), "--limit-train", "512",
         "--limit-test", "256", "--epochs", "1", "--hidden-size", "16", "--metrics-json",
         "m.json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "512 training / 256 test images" in proc.stderr
    assert proc.stdout.startswith("epoch 1: test accuracy ")
    assert (tmp_path / "checkpoints" / "mnist.npz").is_file()  # the default checkpoint
    (entry,) = json.loads((tmp_path / "m.json").read_text())["epochs"]
    assert 0 <= entry["test_accuracy"] <= 1 and entry["train_seconds"] > 0


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_optimizer_option_and_exact_resume(run, tmp_path, optimizer):
    straight = tmp_path / "straight.npz"
    assert run("--epochs", 2, "--optimizer", optimizer, "--checkpoint", straight)[0] == 0
    state = rnnx.load(straight)
    assert state["config"]["optimizer"] == optimizer and state["config"]["lr"] == 1e-3
    assert state["optimizer"]["state"][0]["step"] == 6  # 96 images in batches of 32, 2 epochs
    assert run("--epochs", 1, "--optimizer", optimizer)[0] == 0
    assert run("--resume", "--epochs", 2)[0] == 0  # the checkpoint's optimizer, not sgd
    resumed = rnnx.load(tmp_path / "run.npz")
    for name, value in state["model"].items():
        assert resumed["model"][name].tobytes() == value.tobytes(), name


def test_optimizer_option_errors_and_old_checkpoints(run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("--optimizer", "adam", "--momentum", 0.5)
    assert "--momentum is for --optimizer sgd, not adam" in capsys.readouterr().err
    assert run("--epochs", 1, "--optimizer", "rmsprop", "--lr", 0.01)[0] == 0
    assert rnnx.load(tmp_path / "run.npz")["config"]["lr"] == 0.01
    with pytest.raises(SystemExit):
        run("--resume", "--epochs", 2, "--optimizer", "sgd")
    assert "--optimizer sgd conflicts with the checkpoint's rmsprop" in capsys.readouterr().err
    # a checkpoint written before --optimizer existed is an SGD run
    assert run("--epochs", 1)[0] == 0
    state = rnnx.load(tmp_path / "run.npz")
    assert state["config"]["lr"] == 0.1
    del state["config"]["optimizer"]
    rnnx.save(state, tmp_path / "run.npz")
    assert run("--resume", "--epochs", 2)[0] == 0
    assert rnnx.load(tmp_path / "run.npz")["config"]["optimizer"] == "sgd"
    help_text = " ".join(mnist.build_parser().format_help().split())
    assert "(default: 0.1 for sgd, 1e-3 for adam, adamw and rmsprop)" in help_text


def test_explicit_data_dir_must_exist_unless_download(tmp_path, capsys, monkeypatch):
    """A typo in --data-dir is an error; --download creates it and downloads there; an
    existing --data-dir without the files does not download (the hint names --download)."""
    calls = []

    def fake_load(data_dir, download, train):
        calls.append((data_dir, download))
        raise FileNotFoundError(f"MNIST data not found in {data_dir}.")
    monkeypatch.setattr(mnist, "load_mnist", fake_load)
    missing = tmp_path / "mnsit"
    with pytest.raises(SystemExit) as exc:
        mnist.main(["--data-dir", str(missing), "--no-checkpoint"])
    assert exc.value.code == 2 and not calls
    assert (f"--data-dir {missing}: no such directory (to download MNIST there, add "
            f"--download)") in capsys.readouterr().err
    assert mnist.main(["--data-dir", str(missing), "--download", "--no-checkpoint"]) == 1
    assert calls == [(str(missing), True)]
    assert mnist.main(["--data-dir", str(tmp_path), "--no-checkpoint"]) == 1
    assert calls[-1] == (str(tmp_path), False)
    assert "Add --download to download the missing files" in capsys.readouterr().err
    monkeypatch.setenv("RNNX_DATA", str(tmp_path))
    assert mnist.main(["--no-checkpoint"]) == 1
    assert calls[-1] == (None, True)  # the default location: downloads as before


def test_one_epoch_wording_resume_line_and_step_losses(run, tmp_path, monkeypatch):
    drawn = []
    real_plot = mnist.plot_history

    def plot(history, path, step_losses, steps_per_epoch):
        drawn.append((len(history), list(step_losses), steps_per_epoch))
        real_plot(history, path, step_losses, steps_per_epoch)
    monkeypatch.setattr(mnist, "plot_history", plot)
    code, out, err = run("--epochs", 1)
    assert code == 0 and "; 1 epoch, " in out and "resuming" not in err
    code, out, err = run("--resume", "--epochs", 2,
                         *(["--plot", tmp_path / "curves.png"] if real_plot_available() else []))
    assert code == 0 and "; 2 epochs, " in out
    assert (f"rnnx-mnist: resuming from end of epoch 1 ({tmp_path / 'run.npz'}), training up "
            f"to epoch 2") in err
    state = rnnx.load(tmp_path / "run.npz")
    assert len(state["step_losses"]) == 6  # 96 images in batches of 32, 2 epochs
    if drawn:
        assert drawn == [(2, state["step_losses"], 3)]
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def real_plot_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("damage", ["smaller data set", "step past the epoch"])
def test_resume_that_cannot_continue_its_epoch_is_a_usage_error(run, tmp_path, capsys, damage):
    """A checkpoint taken mid-epoch resumed onto another number of samples, or whose step is
    past its epoch's end, used to end in a traceback (ValueError, ZeroDivisionError): an
    `rnnx-mnist: error:` line and exit code 2 instead."""
    assert run("--epochs", 1)[0] == 0
    state = rnnx.load(tmp_path / "run.npz")
    n = state["train_size"]
    if damage == "smaller data set":
        state.update(step=1, train_size=n + 212)
        expected = f"the interrupted epoch was over {n + 212} samples, got {n}"
    else:
        steps = -(-n // 32)
        state.update(step=steps + 5)
        expected = (f"the checkpoint's step {steps + 5} is past the end of its epoch ({steps} "
                    f"steps of 32 over {n} samples)")
    rnnx.save(state, tmp_path / "run.npz")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run("--resume", "--epochs", 2)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert f"rnnx-mnist: error: --resume: {tmp_path / 'run.npz'}: {expected}" in err
