"""rnnx vs PyTorch (CPU) on the rnnx-mnist default model: same architecture, initial weights,
data order and hyper-parameters, same thread count; each library trains in a process of its
own (with its own defaults), launches alternating, and each epoch's training time is the
median over the rounds.

    python bench/mnist_vs_torch.py                          # 1 epoch on the full data, 3 rounds
    python bench/mnist_vs_torch.py --limit-train 6400 --rounds 5 --json bench/results/mnist.json
    python bench/mnist_vs_torch.py --seed 1                 # other initial weights and order

This process prepares the data, the initial weights and every epoch's order once (rnnx's
`build_model`, `load_data` and the Trainer's shuffling generator) into a temporary directory;
`--worker rnnx|torch` processes read them from there, so that the PyTorch worker imports
neither rnnx nor its data code (each worker reports which of the two it had imported).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_classifier(config):
    """The torch twin of rnnx.mnist.build_model: recurrent layers, the last layer's final
    hidden state (both directions' if bidirectional), Linear."""
    import torch
    cells = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}

    class TorchClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bidirectional = config["bidirectional"]
            hidden = config["hidden_size"]
            self.rnn = cells[config["cell"]](28, hidden, config["num_layers"], batch_first=True,
                                             bidirectional=self.bidirectional)
            self.fc = torch.nn.Linear(hidden * (2 if self.bidirectional else 1), 10)

        def forward(self, x):
            _, h = self.rnn(x)
            h = h[0] if isinstance(h, tuple) else h
            return self.fc(torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1])
    return TorchClassifier()


def torch_state(weights):
    """rnnx Sequential names ('0.*' recurrent, '2.*' Linear) -> TorchClassifier's."""
    import torch
    prefixes = {"0": "rnn", "2": "fc"}
    return {f"{prefixes[name.split('.', 1)[0]]}.{name.split('.', 1)[1]}":
            torch.from_numpy(np.array(value)) for name, value in weights.items()}


def run_rnnx(config, data, weights, orders):
    import rnnx
    from rnnx.mnist import build_model
    from rnnx.optim import SGD
    from rnnx.train import Trainer, shuffle_generator
    rnnx.set_num_threads(config["threads"])
    model = build_model(config)
    model.load_state_dict(weights)
    trainer = Trainer(model, SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"]),
                      batch_size=config["batch_size"], clip=config["clip"], seed=config["seed"])
    # the Trainer draws its orders (the same as the prepared ones) from this generator
    assert trainer.rng.bit_generator.state == \
        shuffle_generator(config["seed"]).bit_generator.state, "the Trainer's shuffling changed"
    return trainer.fit(data["x"], data["y"], config["epochs"], eval_data=(data["xt"], data["yt"]))


def run_torch(config, data, weights, orders):
    """The Trainer's loop in torch: the prepared orders, batches and epoch timing."""
    import torch
    torch.set_num_threads(config["threads"])
    model = torch_classifier(config)
    model.load_state_dict(torch_state(weights))
    x, y, xt, yt = (torch.from_numpy(data[k]) for k in ("x", "y", "xt", "yt"))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    bs = config["batch_size"]
    history = []
    for epoch in range(1, config["epochs"] + 1):
        order = torch.from_numpy(orders[epoch - 1])
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
        history.append({"epoch": epoch, "train_seconds": seconds, "train_loss": loss_sum / len(x),
                        "test_loss": torch.nn.functional.cross_entropy(logits, yt).item(),
                        "test_accuracy": (logits.argmax(1) == yt).double().mean().item()})
    return history


def worker(lib, prep, out):
    """Train in this process (a worker of its own) and write the history and what it imported."""
    with open(os.path.join(prep, "config.json")) as f:
        config = json.load(f)
    with np.load(os.path.join(prep, "data.npz")) as f:
        data = dict(f)
    with np.load(os.path.join(prep, "weights.npz")) as f:
        weights = dict(f)
    orders = np.load(os.path.join(prep, "orders.npy"))
    history = {"rnnx": run_rnnx, "torch": run_torch}[lib](config, data, weights, orders)
    with open(out, "w") as f:
        json.dump({"history": history,
                   "imported": {m: m in sys.modules for m in ("rnnx", "torch")}}, f)


def prepare(args, prep):
    """Data, initial weights, epoch orders and config into `prep`; returns the config."""
    import rnnx
    from rnnx.mnist import OPTIMIZERS, RUN_DEFAULTS, build_model, load_data
    from rnnx.train import shuffle_generator
    config = {**RUN_DEFAULTS, "lr": OPTIMIZERS["sgd"][1], "seed": args.seed,
              "limit_train": args.limit_train, "limit_test": args.limit_test,
              "epochs": args.epochs, "threads": args.threads}
    x, y, xt, yt = load_data(args.data_dir, args.limit_train, args.limit_test)
    rnnx.manual_seed(config["seed"])
    model = build_model(config)
    rng = shuffle_generator(config["seed"])
    orders = np.stack([rng.permutation(len(x)) for _ in range(args.epochs)])
    np.savez(os.path.join(prep, "data.npz"), x=x, y=y, xt=xt, yt=yt)
    np.savez(os.path.join(prep, "weights.npz"), **model.state_dict())
    np.save(os.path.join(prep, "orders.npy"), orders)
    with open(os.path.join(prep, "config.json"), "w") as f:
        json.dump(config, f)
    return config, len(y), len(yt)


def main(argv=None):
    from rnnx.mnist import POSITIVE_INT, RUN_DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=POSITIVE_INT, default=1)
    parser.add_argument("--rounds", type=POSITIVE_INT, default=3,
                        help="launches of each library, alternating (default 3)")
    parser.add_argument("--limit-train", type=POSITIVE_INT, metavar="N",
                        help="train on the first N training images (default: all 60,000)")
    parser.add_argument("--limit-test", type=POSITIVE_INT, metavar="N",
                        help="score on the first N test images (default: all 10,000)")
    parser.add_argument("--seed", type=int, default=RUN_DEFAULTS["seed"],
                        help="seed of the initial weights and the data order (default: "
                        "%(default)s)")
    parser.add_argument("--threads", type=POSITIVE_INT, default=len(os.sched_getaffinity(0)),
                        help="threads of both libraries (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="MNIST directory (default: $RNNX_DATA, else ~/.cache/rnnx)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as prep:
        config, n_train, n_test = prepare(args, prep)
        print(f"MNIST row by row, {config['num_layers']}-layer {config['cell'].upper()} hidden "
              f"{config['hidden_size']}, batch {config['batch_size']}, {n_train} training / "
              f"{n_test} test images, {args.threads} threads; each library in a process of "
              f"its own, {args.rounds} rounds alternating")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        runs = {"rnnx": [], "torch": []}
        imported = {}
        load_start = os.getloadavg()[0]
        for r in range(args.rounds):
            for lib in (("rnnx", "torch") if r % 2 == 0 else ("torch", "rnnx")):
                out = os.path.join(prep, f"{lib}.json")
                subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", lib, prep,
                                out], env=env, check=True)
                with open(out) as f:
                    result = json.load(f)
                runs[lib].append(result["history"])
                imported[lib] = [m for m, yes in result["imported"].items() if yes]
                print(f"round {r + 1} {lib}: " + ", ".join(
                    f"epoch {e['epoch']} {e['train_seconds']:.1f} s" for e in result["history"]),
                    file=sys.stderr)
    medians = {lib: [statistics.median(run[e]["train_seconds"] for run in runs[lib])
                     for e in range(args.epochs)] for lib in runs}
    print(f"workers imported: rnnx worker {', '.join(imported['rnnx'])}; torch worker "
          f"{', '.join(imported['torch'])}. 1-minute load average {load_start:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end.")
    print(f"{'epoch':>5} {'rnnx s':>9} {'torch s':>9} {'rnnx/torch':>10} {'rnnx acc':>9} "
          f"{'torch acc':>9}   (seconds: medians over {args.rounds} rounds)")
    for e in range(args.epochs):
        print(f"{e + 1:>5} {medians['rnnx'][e]:>9.1f} {medians['torch'][e]:>9.1f} "
              f"{medians['rnnx'][e] / medians['torch'][e]:>10.2f} "
              f"{runs['rnnx'][0][e]['test_accuracy']:>9.4f} "
              f"{runs['torch'][0][e]['test_accuracy']:>9.4f}")
    if args.json:
        from rnnx.train import write_json_atomic
        write_json_atomic({"config": config, "rounds": args.rounds, "runs": runs,
                           "imported": imported,
                           "rnnx": [dict(runs["rnnx"][0][e], train_seconds=medians["rnnx"][e])
                                    for e in range(args.epochs)],
                           "torch": [dict(runs["torch"][0][e], train_seconds=medians["torch"][e])
                                     for e in range(args.epochs)]}, args.json)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5])
    else:
        main()
