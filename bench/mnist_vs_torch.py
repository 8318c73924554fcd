"""rnnx vs PyTorch (CPU) on the rnnx-mnist default model: same architecture, initial weights,
data order and hyper-parameters, same thread count; prints each epoch's training time and
test accuracy side by side.

    python bench/mnist_vs_torch.py                          # 1 epoch on the full data
    python bench/mnist_vs_torch.py --limit-train 6400 --json bench/results/mnist.json
    python bench/mnist_vs_torch.py --seed 1                 # other initial weights and order
"""
import argparse
import sys
import time

# rnnx first: its default OMP_WAIT_POLICY=PASSIVE must be set before the one libgomp both
# libraries share is loaded (imported after torch, rnnx would share torch's spinning idle
# threads, which slow both down on a busy machine).
import rnnx
from rnnx.mnist import OPTIMIZERS, POSITIVE_INT, RUN_DEFAULTS, build_model, load_data
from rnnx.optim import SGD
from rnnx.train import Trainer, shuffle_generator, write_json_atomic

import torch  # noqa: E402  (after rnnx, see above)

TORCH_CELLS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


class TorchClassifier(torch.nn.Module):
    """The torch twin of rnnx.mnist.build_model: recurrent layers, the last layer's final
    hidden state (both directions' if bidirectional), Linear."""

    def __init__(self, config):
        super().__init__()
        self.bidirectional = config["bidirectional"]
        hidden = config["hidden_size"]
        self.rnn = TORCH_CELLS[config["cell"]](28, hidden, config["num_layers"], batch_first=True,
                                               bidirectional=self.bidirectional)
        self.fc = torch.nn.Linear(hidden * (2 if self.bidirectional else 1), 10)

    def forward(self, x):
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1])


def torch_twin(model, config):
    """A TorchClassifier holding the rnnx model's weights ('0.*' -> 'rnn.*', '2.*' -> 'fc.*')."""
    twin = TorchClassifier(config)
    prefixes = {"0": "rnn", "2": "fc"}
    state = {}
    for name, value in model.state_dict().items():
        index, rest = name.split(".", 1)
        state[f"{prefixes[index]}.{rest}"] = torch.from_numpy(value.copy())
    twin.load_state_dict(state)
    return twin


def run_rnnx(model, config, data, epochs):
    x, y, xt, yt = data
    trainer = Trainer(model, SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"]),
                      batch_size=config["batch_size"], clip=config["clip"], seed=config["seed"])
    return trainer.fit(x, y, epochs, eval_data=(xt, yt))


def run_torch(model, config, data, epochs):
    """The Trainer's loop in torch: same shuffling generator, batches and epoch timing."""
    x, y, xt, yt = (torch.from_numpy(a) for a in data)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    rng = shuffle_generator(config["seed"])
    bs = config["batch_size"]
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.from_numpy(rng.permutation(len(x)))
        model.train()
        loss_sum = 0.0
        start = time.perf_counter()
        for b in range(0, len(x), bs):
            idx = order[b:b + bs]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if config["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config["clip"])
            opt.step()
            loss_sum += loss.item() * len(idx)
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(xt[i:i + 1000]) for i in range(0, len(xt), 1000)])
        entry = {"epoch": epoch, "train_seconds": seconds, "train_loss": loss_sum / len(x),
                 "test_loss": torch.nn.functional.cross_entropy(logits, yt).item(),
                 "test_accuracy": (logits.argmax(1) == yt).double().mean().item()}
        print(f"torch epoch {epoch}/{epochs}: {seconds:.1f} s, test accuracy "
              f"{entry['test_accuracy']:.4f}", file=sys.stderr)
        history.append(entry)
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=POSITIVE_INT, default=1)
    parser.add_argument("--limit-train", type=POSITIVE_INT, metavar="N",
                        help="train on the first N training images (default: all 60,000)")
    parser.add_argument("--limit-test", type=POSITIVE_INT, metavar="N",
                        help="score on the first N test images (default: all 10,000)")
    parser.add_argument("--seed", type=int, default=RUN_DEFAULTS["seed"],
                        help="seed of the initial weights and the data order (default: "
                        "%(default)s)")
    parser.add_argument("--threads", type=POSITIVE_INT, default=rnnx.get_num_threads(),
                        help="threads of both libraries (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="MNIST directory (default: $RNNX_DATA, else ~/.cache/rnnx)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    rnnx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    config = {**RUN_DEFAULTS, "lr": OPTIMIZERS["sgd"][1], "seed": args.seed,
              "limit_train": args.limit_train,
              "limit_test": args.limit_test, "epochs": args.epochs, "threads": args.threads}
    data = load_data(args.data_dir, args.limit_train, args.limit_test)
    rnnx.manual_seed(config["seed"])
    model = build_model(config)
    twin = torch_twin(model, config)
    print(f"MNIST row by row, {config['num_layers']}-layer {config['cell'].upper()} hidden "
          f"{config['hidden_size']}, batch {config['batch_size']}, {len(data[1])} training / "
          f"{len(data[3])} test images, {args.threads} threads, torch {torch.__version__}")
    results = {"config": config, "rnnx": run_rnnx(model, config, data, args.epochs),
               "torch": run_torch(twin, config, data, args.epochs)}
    print(f"{'epoch':>5} {'rnnx s':>9} {'torch s':>9} {'rnnx/torch':>10} {'rnnx acc':>9} "
          f"{'torch acc':>9}")
    for ours, theirs in zip(results["rnnx"], results["torch"]):
        print(f"{ours['epoch']:>5} {ours['train_seconds']:>9.1f} {theirs['train_seconds']:>9.1f} "
              f"{ours['train_seconds'] / theirs['train_seconds']:>10.2f} "
              f"{ours['test_accuracy']:>9.4f} {theirs['test_accuracy']:>9.4f}")
    if args.json:
        write_json_atomic(results, args.json)


if __name__ == "__main__":
    main()
