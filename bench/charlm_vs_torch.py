"""rnnx.charlm beside PyTorch: the same character LM, data, initial weights and training.

    python bench/charlm_vs_torch.py                     # charlm's defaults (a few minutes each)
    python bench/charlm_vs_torch.py --steps 100 --hidden 64

Both train Embedding -> LSTM -> Linear from the same initial weights (rnnx's, loaded into
torch) on the same streams of rnnx.charlm.TRAIN_FILES: truncated BPTT over --bptt characters,
Adam (--lr), gradients clipped to norm 1, for --steps updates (or --time seconds, whichever
first; give --steps alone for the same number of updates). Prints held-out bits per character
(the same held-out characters, scored the same way) and the training time of each.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rnnx  # noqa: E402
from rnnx import charlm  # noqa: E402


def torch_model(model):
    """A torch module with `model`'s (rnnx CharLM) weights; forward(ids, state) as CharLM's."""
    import torch

    class TorchCharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(charlm.VOCAB, model.embedding.embedding_dim)
            self.lstm = torch.nn.LSTM(model.lstm.input_size, model.lstm.hidden_size,
                                      num_layers=model.lstm.num_layers)
            self.head = torch.nn.Linear(model.lstm.hidden_size, charlm.VOCAB)

        def forward(self, ids, state=None):
            out, state = self.lstm(self.embedding(ids), state)
            return self.head(out), state

    t = TorchCharLM()
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return t


def train_torch(model, codes, *, steps, seconds, batch, bptt, lr):
    """charlm.train's loop in PyTorch; returns (updates, seconds)."""
    import torch
    data = torch.from_numpy(charlm.streams(codes, batch))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    windows = charlm.bptt_windows(data, bptt)
    state, done, start = None, 0, time.perf_counter()
    while done < steps and time.perf_counter() - start < seconds:
        x, y, restart = next(windows)
        logits, state = model(x, None if restart else state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, charlm.VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done += 1
    return done, time.perf_counter() - start


def torch_bits_per_char(model, codes, bptt, batch=16):
    import torch
    data = torch.from_numpy(charlm.streams(codes, batch))
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.inference_mode():
        for t in range(0, data.shape[0] - 1, bptt):
            y = data[t + 1:t + 1 + bptt]
            logits, state = model(data[t:t + y.shape[0]], state)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, charlm.VOCAB).double(), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return total / count / np.log(2)


def main(argv=None):
    import torch
    args = charlm.parser().parse_args(argv)
    threads = rnnx.get_num_threads()
    torch.set_num_threads(threads)
    rnnx.manual_seed(args.seed)
    torch.manual_seed(args.seed)
    codes, _, _ = charlm.read_files(charlm.TRAIN_FILES)
    held_out = charlm.read_files(charlm.HELD_OUT_FILES)[0][:args.eval_chars]
    model = charlm.CharLM(args.hidden, args.embedding)
    reference = torch_model(model)       # the same initial weights
    common = dict(steps=args.steps, seconds=args.time, batch=args.batch, bptt=args.bptt,
                  lr=args.lr)
    steps, seconds, _ = charlm.train(model, codes, log_every=0, **common)
    bpc = charlm.bits_per_char(model, held_out, args.bptt)
    t_steps, t_seconds = train_torch(reference, codes, **common)
    t_bpc = torch_bits_per_char(reference, held_out, args.bptt)
    print(f"char LM, LSTM hidden {args.hidden}, embedding {args.embedding}, batch {args.batch} "
          f"x bptt {args.bptt}, {threads} thread(s), {held_out.size} held-out characters\n")
    print("| library | updates | train s | s / update | held-out bits/char |")
    print("|---|---|---|---|---|")
    for name, n, s, b in (("rnnx", steps, seconds, bpc), ("PyTorch", t_steps, t_seconds, t_bpc)):
        print(f"| {name} | {n} | {s:.1f} | {s / max(n, 1):.3f} | {b:.3f} |")


if __name__ == "__main__":
    main()
