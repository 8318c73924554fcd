"""rnnx-mnist: the row-by-row MNIST classifier, trained and scored from the command line.

Each 28x28 image is a sequence of 28 rows of 28 pixels, normalised as (x/255 - 0.5)/0.5 in
float32; a recurrent network reads the rows and a Linear layer classifies the last layer's
final hidden state (both directions' when bidirectional). LSTM forget gates start with bias 1.

    python -m rnnx.mnist                                  # 10 epochs -> checkpoints/mnist.npz
    python -m rnnx.mnist --epochs 1 --limit-train 6000    # a quick run on 6,000 images
    python -m rnnx.mnist --optimizer adam                 # Adam, lr 1e-3 (see --help)
    python -m rnnx.mnist --resume                         # continue the checkpointed run
    python -m rnnx.mnist --resume --epochs 12             # ... and extend it to 12 epochs
    python -m rnnx.mnist --eval-only                      # score the checkpoint
    python -m rnnx.mnist --eval-only --export-onnx mnist.onnx  # ... and export it to ONNX
    python -m rnnx.mnist --plot curves.png                # also draw the learning curves
    python -m rnnx.mnist --data-dir data --download       # MNIST files into ./data
    mpiexec -n 2 python -m rnnx.mnist --distributed       # data-parallel over 2 MPI ranks
"""
import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
import time

import numpy as np

from . import get_num_threads, load, manual_seed, nn, set_num_threads
from .datasets.mnist import load_mnist
from .distributed import cli as distributed_cli
from .optim import SGD, Adam, AdamW, RMSprop
from .train import Trainer, TrainingDiverged, evaluate

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
MODEL_KEYS = ("cell", "hidden_size", "num_layers", "bidirectional")
# Settings that define a run: a resumed run keeps the checkpoint's values.
RUN_DEFAULTS = {"cell": "lstm", "hidden_size": 128, "num_layers": 2, "bidirectional": False,
                "batch_size": 128, "optimizer": "sgd", "lr": None, "momentum": 0.9, "clip": None,
                "seed": 0, "limit_train": None, "limit_test": None}
# --optimizer: the class and its default lr (lr None above); SGD also takes --momentum, the
# others keep torch's defaults. A checkpoint without the key is an SGD run.
OPTIMIZERS = {"sgd": (SGD, 0.1), "adam": (Adam, 1e-3), "adamw": (AdamW, 1e-3),
              "rmsprop": (RMSprop, 1e-3)}
DEFAULT_EPOCHS = 10
DEFAULT_CHECKPOINT = os.path.join("checkpoints", "mnist.npz")
INTERRUPTED = 130  # exit code after Ctrl-C, as a shell reports SIGINT


def prepare_images(images):
    """uint8 images (N, 28, 28) -> float32 (x/255 - 0.5)/0.5, one row per time step."""
    x = images.astype(np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)


def load_data(data_dir=None, limit_train=None, limit_test=None, train=True, download=None):
    """(x_train, y_train, x_test, y_test): the first limit_train / limit_test images (all if
    None) of MNIST from data_dir (None: $RNNX_DATA or ~/.cache/rnnx). Missing files are
    downloaded if download, which by default is for the default location only.
    train=False: the training files are not read (nor downloaded); None in their place."""
    if download is None:
        download = data_dir is None
    train_x, train_y, test_x, test_y = load_mnist(data_dir, download=download, train=train)
    if train:
        train_x, train_y = prepare_images(train_x[:limit_train]), train_y[:limit_train]
    return train_x, train_y, prepare_images(test_x[:limit_test]), test_y[:limit_test]


def build_model(config):
    """Sequential(cell(28, hidden, layers, batch_first), LastHidden, Linear(hidden*D, 10)),
    initialised as in torch except that an LSTM's forget gates start open: bias_ih's forget
    slice is 1 (total forget bias 1 + U(-1/sqrt(H), 1/sqrt(H))), which makes the first epoch
    learn much faster (86-89% instead of 58-72% test accuracy after the first 20,000 images,
    with seeds 0 and 1)."""
    hidden, bidirectional = config["hidden_size"], config["bidirectional"]
    rnn = CELLS[config["cell"]](28, hidden, config["num_layers"], batch_first=True,
                                bidirectional=bidirectional)
    if config["cell"] == "lstm":
        for name, p in rnn.named_parameters():
            if name.startswith("bias_ih"):
                p.data[hidden:2 * hidden] = 1.0  # gates i, f, g, o
    return nn.Sequential(rnn, nn.LastHidden(bidirectional),
                         nn.Linear(hidden * (2 if bidirectional else 1), 10))


def build_optimizer(config, params):
    """The config's optimizer (OPTIMIZERS) with its lr, and its momentum for SGD."""
    cls = OPTIMIZERS[config["optimizer"]][0]
    extra = {"momentum": config["momentum"]} if cls is SGD else {}
    return cls(params, lr=config["lr"], **extra)


def _number(kind, minimum, inclusive):
    """argparse type: a number of `kind` above (or at, if inclusive) minimum."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


POSITIVE_INT = _number(int, 1, True)
POSITIVE_FLOAT = _number(float, 0.0, False)
NON_NEGATIVE_FLOAT = _number(float, 0.0, True)


def build_parser():
    """The argument parser of rnnx-mnist."""
    parser = argparse.ArgumentParser(
        prog="rnnx-mnist", description="Train (or score) a recurrent classifier reading MNIST "
        "images row by row: 28 steps of 28 pixels normalised to [-1, 1], a classifier on the last "
        "layer's final hidden state (LSTM forget-gate bias starting at 1), SGD with momentum "
        "(or --optimizer adam, adamw, rmsprop), "
        "evaluation on the test images and a checkpoint after every epoch, a checkpoint on "
        "Ctrl-C (exit code 130). Quick run: --epochs 1 --limit-train 6000.")

    def run_option(key, help, **kwargs):
        """A run setting: default None here, filled from RUN_DEFAULTS or the checkpoint."""
        default = {"bidirectional": "off", "clip": "none", "limit_train": "all",
                   "limit_test": "all", "lr": "0.1 for sgd, 1e-3 for adam, adamw and rmsprop",
                   }.get(key, RUN_DEFAULTS[key])
        parser.add_argument("--" + key.replace("_", "-"), dest=key, default=None,
                            help=f"{help} (default: {default})", **kwargs)

    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory of the MNIST files, which must exist unless --download "
                        "is given (default: $RNNX_DATA, else ~/.cache/rnnx; missing files are "
                        "downloaded there)")
    parser.add_argument("--download", action="store_true",
                        help="download the MNIST files missing from --data-dir (created if "
                        "needed); always done for the default location")
    parser.add_argument("--epochs", type=POSITIVE_INT, metavar="N",
                        help=f"total number of epochs of the run (default: {DEFAULT_EPOCHS}); with "
                        "--resume, the epoch to train up to (default: the saved run's)")
    run_option("batch_size", "mini-batch size", type=POSITIVE_INT, metavar="N")
    run_option("hidden_size", "hidden units per layer and direction", type=POSITIVE_INT,
               metavar="N")
    run_option("num_layers", "stacked recurrent layers", type=POSITIVE_INT, metavar="N")
    run_option("cell", "recurrent cell", choices=sorted(CELLS))
    run_option("bidirectional", "bidirectional layers", action="store_true")
    run_option("optimizer", "optimizer, as torch.optim's with its default settings",
               choices=sorted(OPTIMIZERS))
    run_option("lr", "learning rate", type=NON_NEGATIVE_FLOAT)
    run_option("momentum", "SGD momentum (--optimizer sgd only)", type=NON_NEGATIVE_FLOAT)
    run_option("clip", "clip the gradient norm to this value", type=POSITIVE_FLOAT,
               metavar="MAX_NORM")
    run_option("seed", "seed of the initialisation and of the shuffling",
               type=_number(int, 0, True))
    run_option("limit_train", "train on the first N training images only, for quick runs",
               type=POSITIVE_INT, metavar="N")
    run_option("limit_test", "evaluate on the first N test images only", type=POSITIVE_INT,
               metavar="N")
    parser.add_argument("--threads", type=POSITIVE_INT, metavar="N",
                        help="threads of the rnnx kernels and BLAS (default: every core available)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="PATH",
                        help="checkpoint written atomically after every epoch and on Ctrl-C, "
                        "read by --resume and --eval-only; its directory is created "
                        "(default: %(default)s)")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="write no checkpoint")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run saved in --checkpoint exactly where it stopped, "
                      "with its settings")
    mode.add_argument("--eval-only", action="store_true",
                      help="score the --checkpoint model on the test images and exit")
    parser.add_argument("--metrics-json", metavar="PATH",
                        help="write {config, epochs: [{epoch, train_seconds, train_loss, "
                        "test_loss, test_accuracy, ...}]} here after every training epoch")
    parser.add_argument("--export-onnx", metavar="PATH",
                        help="after training (or --eval-only), write the model to this ONNX "
                        "file: input x (batch, 28, 28) float32, output logits (batch, 10); "
                        "needs the onnx package")
    parser.add_argument("--plot", metavar="PATH",
                        help="draw the learning curves (the training loss of every step, train "
                        "and test loss and accuracy by epoch) into this image (.png, .pdf, "
                        ".svg) at the end; needs matplotlib")
    parser.add_argument("--distributed", action="store_true",
                        help="run as one rank of a data-parallel job started by mpiexec (needs "
                        "rnnx[distributed]): --batch-size is the global batch, split across the "
                        "ranks; rank 0 reports and writes the files; each rank uses its share "
                        "of its host's cores unless --threads is given")
    return parser


def _load_checkpoint(parser, args):
    """The checkpoint read by --resume / --eval-only; a usage error if it cannot be read."""
    flag = "--resume" if args.resume else "--eval-only"
    if args.no_checkpoint:
        parser.error(f"{flag} reads --checkpoint: it cannot be combined with --no-checkpoint")
    try:
        state = load(args.checkpoint)
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            state["config"].setdefault("optimizer", "sgd")
    except FileNotFoundError:
        parser.error(f"{flag}: no checkpoint at {args.checkpoint}")
    except ValueError as exc:
        parser.error(f"{flag}: {exc}")
    if not (isinstance(state, dict) and isinstance(state.get("config"), dict)
            and all(key in state["config"] for key in RUN_DEFAULTS)
            and {"model", "epoch", "step"} <= set(state)
            and all(isinstance(value, int) and not isinstance(value, bool) for value in
                    (state["epoch"], state["step"], state["config"].get("epochs", 1)))):
        parser.error(f"{flag}: {args.checkpoint} was not written by rnnx-mnist")
    return state


def _run_config(parser, args, state):
    """The run settings: explicit options over RUN_DEFAULTS, or the checkpoint's, which
    explicit options must not contradict (model settings only for --eval-only)."""
    given = {key: getattr(args, key) for key in RUN_DEFAULTS if getattr(args, key) is not None}
    if state is None:
        config = {**RUN_DEFAULTS, **given}
    else:
        config = {key: state["config"][key] for key in RUN_DEFAULTS}
        fixed = MODEL_KEYS if args.eval_only else RUN_DEFAULTS
        for key in fixed:
            if key in given and given[key] != config[key]:
                parser.error(f"--{key.replace('_', '-')} {given[key]} conflicts with the "
                             f"checkpoint's {config[key]} ({args.checkpoint})")
        if args.eval_only:
            config["limit_test"] = given.get("limit_test")
    if config["optimizer"] != "sgd" and "momentum" in given:
        parser.error(f"--momentum is for --optimizer sgd, not {config['optimizer']}")
    if config["lr"] is None:
        config["lr"] = OPTIMIZERS[config["optimizer"]][1]
    epochs = args.epochs
    if epochs is None:
        epochs = DEFAULT_EPOCHS if state is None else state["config"].get("epochs", DEFAULT_EPOCHS)
    return {**config, "epochs": epochs, "threads": get_num_threads()}


def _check_writable(parser, option, path):
    """A usage error unless a file can be written at path (its directory is created): checked
    before training, so that no epoch is lost to a path that cannot be written."""
    if path is None:
        return
    try:
        if os.path.isdir(path):
            raise IsADirectoryError("it is a directory")
        directory = existing = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise NotADirectoryError(f"{existing} is not a directory")
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".rnnx-mnist-probe-")
        os.close(fd)
        os.unlink(probe)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError("permission denied")
    except OSError as exc:
        parser.error(f"{option} {path}: cannot write there ({exc.strerror or exc})")


def _check_plotting(parser, args):
    """--plot needs matplotlib: a usage error (before training) if it is missing."""
    if args.plot is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    if os.path.splitext(args.plot)[1].lower() not in (".png", ".pdf", ".svg"):
        parser.error(f"--plot {args.plot}: expected a .png, .pdf or .svg file name")


def main(argv=None):
    """Entry point of `rnnx-mnist` / `python -m rnnx.mnist`; returns the exit code."""
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.distributed:
        return distributed_cli.run(parser, lambda: _main(parser, args, started))
    return _main(parser, args, started)


def _main(parser, args, started):
    """main() after the arguments are parsed (and the process group set up)."""
    if args.data_dir is not None and not args.download and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir}: no such directory (to download MNIST there, "
                     f"add --download)")
    if args.export_onnx:
        if importlib.util.find_spec("onnx") is None:
            parser.error("--export-onnx needs the onnx package (pip install onnx)")
        _check_writable(parser, "--export-onnx", args.export_onnx)
    state = None
    if args.resume or args.eval_only:  # read by rank 0, sent to every rank
        state = distributed_cli.on_rank_0(lambda: _load_checkpoint(parser, args))
    if args.threads is not None:
        set_num_threads(args.threads)
    config = _run_config(parser, args, state)
    if args.resume and state["epoch"] >= config["epochs"]:
        print(f"rnnx-mnist: the run in {args.checkpoint} is finished (epoch {state['epoch']} "
              f"of {state['config'].get('epochs', state['epoch'])}); to train it further: "
              f"rnnx-mnist --resume --checkpoint {shlex.quote(args.checkpoint)} --epochs "
              f"{state['epoch'] + 1} (or more)", file=sys.stderr)
        return 0
    if not args.eval_only:
        _check_plotting(parser, args)
        for option in ("checkpoint", "metrics_json", "plot"):
            if option != "checkpoint" or not args.no_checkpoint:
                _check_writable(parser, "--" + option.replace("_", "-"), getattr(args, option))
    manual_seed(config["seed"])
    try:
        model = build_model(config)
        if args.eval_only:
            model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError) as exc:
        _inconsistent(parser, args, config, exc)
    download = args.download or args.data_dir is None
    try:
        data = load_data(args.data_dir, config["limit_train"], config["limit_test"],
                         train=not args.eval_only, download=download)
    except (OSError, ValueError) as exc:
        hint = ("\nAdd --download to download the missing files into --data-dir."
                if isinstance(exc, FileNotFoundError) and not download else "")
        print(f"rnnx-mnist: error: {exc}{hint}", file=sys.stderr)
        return 1
    for name, labels in (("training", data[1]), ("test", data[3])):
        if labels is not None and len(labels) == 0:
            print(f"rnnx-mnist: error: the MNIST {name} files hold no images", file=sys.stderr)
            return 1
    code = (_eval_only(args, model, state, data[2:]) if args.eval_only
            else _train(parser, args, config, model, state, data, started))
    if code == 0 and args.export_onnx and distributed_cli.is_main_process():
        from . import onnx  # imports the onnx package: only when asked
        onnx.export(model, data[2][:1], args.export_onnx, output_names=["logits"])
        print(f"rnnx-mnist: model exported to {args.export_onnx}", file=sys.stderr)
    return code


def _eval_only(args, model, state, test):
    """--eval-only: print the checkpoint model's test loss and accuracy."""
    loss, accuracy = evaluate(model, nn.CrossEntropyLoss(), *test)
    print(f"{args.checkpoint} (epoch {state['epoch']}): test loss {loss:.4f}, "
          f"test accuracy {accuracy:.4f} on {len(test[1])} images")
    return 0


def _inconsistent(parser, args, config, exc):
    """The usage error for a checkpoint whose contents contradict its own settings."""
    flag = "--resume" if args.resume else "--eval-only"
    parser.error(f"{flag}: {args.checkpoint} does not match its own settings ({config['cell']}, "
                 f"hidden {config['hidden_size']}, {config['num_layers']} layers): "
                 f"{type(exc).__name__}: {exc}")


def _resume_command(args, config):
    """The command line that continues this run (every option it needs, quoted for a shell)."""
    words = ["rnnx-mnist", "--resume", "--checkpoint", args.checkpoint,
             "--epochs", str(config["epochs"])]
    for option in ("data_dir", "threads", "metrics_json", "plot"):
        if getattr(args, option) is not None:
            words += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    return " ".join(shlex.quote(word) for word in words)


def _train(parser, args, config, model, state, data, started):
    """Train (or resume) up to the run's epochs; the exit code (130 after Ctrl-C, 1 if diverged
    or a file cannot be written)."""
    x_train, y_train, x_test, y_test = data
    epochs = config["epochs"]
    checkpoint = None if args.no_checkpoint else args.checkpoint
    try:
        trainer = Trainer(model, build_optimizer(config, model.parameters()),
                          batch_size=config["batch_size"], clip=config["clip"],
                          seed=config["seed"], checkpoint=checkpoint,
                          metrics_json=args.metrics_json, config=config)
        if state is not None:
            trainer.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        _inconsistent(parser, args, config, exc)
    try:
        trainer.check_resume(len(y_train))
    except ValueError as exc:
        parser.error(f"--resume: {args.checkpoint}: {exc}")
    main_process = distributed_cli.is_main_process()  # reports and writes for the job
    if state is None and checkpoint is not None and os.path.exists(checkpoint) and main_process:
        print(f"rnnx-mnist: starting a new run over {checkpoint} (--resume continues it)",
              file=sys.stderr)
    if state is not None and main_process:
        print(f"rnnx-mnist: resuming from {trainer._where()} ({args.checkpoint}), training up "
              f"to epoch {epochs}", file=sys.stderr)
    if main_process:
        print(f"rnnx-mnist: {config['num_layers']}-layer {config['cell'].upper()} "
              f"{'bidirectional ' if config['bidirectional'] else ''}"
              f"hidden {config['hidden_size']}, {len(y_train)} training / {len(y_test)} test "
              f"images, {config['threads']} threads{_ranks_text()}", file=sys.stderr)
    code = 0
    try:
        trainer.fit(x_train, y_train, epochs, eval_data=(x_test, y_test))
    except KeyboardInterrupt:
        if checkpoint is not None and main_process:
            print(f"rnnx-mnist: interrupted; continue with: {_resume_command(args, config)}",
                  file=sys.stderr)
        code = INTERRUPTED
    except TrainingDiverged as exc:
        print(f"rnnx-mnist: error: {exc}\nA lower --lr or a --clip may help.", file=sys.stderr)
        code = 1
    except OSError as exc:
        code = _write_failed(exc)
    if args.plot is not None and trainer.history and main_process:
        try:
            plot_history(trainer.history, args.plot, trainer.step_losses,
                         -(-len(y_train) // config["batch_size"]))
        except OSError as exc:
            code = code or _write_failed(exc)
    if code == 0:
        last, seconds = trainer.history[-1], time.perf_counter() - started
        train_seconds = sum(entry["train_seconds"] for entry in trainer.history)
        print(f"epoch {last['epoch']}: test accuracy {last['test_accuracy']:.4f}, test loss "
              f"{last['test_loss']:.4f}; {_plural(last['epoch'], 'epoch')}, "
              f"{_fmt_seconds(train_seconds)} "
              f"of training steps in all; this session {_fmt_seconds(seconds)} (loading and "
              f"evaluation included); checkpoint: {checkpoint or 'none (--no-checkpoint)'}")
    return code


def _write_failed(exc):
    """Report an OSError of a write as an error line; the exit code 1."""
    print(f"rnnx-mnist: error: writing {exc.filename or 'a file'} failed: {exc.strerror or exc}",
          file=sys.stderr)
    return 1


def _plural(count, noun):
    """'1 epoch', '2 epochs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt_seconds(seconds):
    """'42.0 s', '3 min 05 s' or '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


LEGEND = {"train": "train (mean over the epoch)", "test": "test (after the epoch)",
          "step": "train (each step)"}


def plot_history(history, path, step_losses=(), steps_per_epoch=None):
    """Learning curves into path: the training loss of every step (step k of the run at
    epoch k / steps_per_epoch) and train and test loss by epoch (left), accuracy by epoch
    (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [entry["epoch"] for entry in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True,
                                          sharex=True)  # epochs from 0 on both
    if len(step_losses) and steps_per_epoch:
        at = np.arange(1, len(step_losses) + 1) / steps_per_epoch
        loss_ax.plot(at, step_losses, "-", linewidth=0.8, alpha=0.5, color="tab:gray",
                     label=LEGEND["step"])
    for ax, key, title in ((loss_ax, "loss", "cross-entropy loss"),
                           (acc_ax, "accuracy", "accuracy (%)")):
        scale = 100 if key == "accuracy" else 1
        for split, style in (("train", "o-"), ("test", "s-")):
            values = [entry[f"{split}_{key}"] for entry in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v * scale for v in values], style,
                        label=LEGEND[split])
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ranks_text():
    """' per rank, 2 ranks' in a data-parallel run, else ''."""
    if not distributed_cli.is_initialized():
        return ""
    return f" per rank, {distributed_cli.get_world_size()} ranks"


if __name__ == "__main__":
    sys.exit(main())
