"""python -m rnnx.charlm: a character-level LSTM language model of Python source.

Embedding -> LSTM -> Linear per step, trained by truncated BPTT (B = --batch parallel streams
over the training text, segments of --bptt characters, the state carried from one segment to
the next and cut there) on a fixed list of the standard library's own .py files (TRAIN_FILES,
read from sysconfig.get_paths()["stdlib"], so every Python installation has them; files a
version lacks are skipped and named). It reports bits per character on the held-out files
(HELD_OUT_FILES), then samples text one character at a time with rnnx.Stream and prints the
characters per second. bench/charlm_vs_torch.py trains a PyTorch model the same way.

    python -m rnnx.charlm                          # a few minutes on two cores
    python -m rnnx.charlm --steps 20 --hidden 64   # a quick look
"""
import argparse
import os
import sysconfig
import time

import numpy as np

from . import _random, nn, optim
from ._grad_mode import no_grad
from .stream import Stream
from .utils.clip_grad import clip_grad_norm_

TRAIN_FILES = (
    "argparse.py", "ast.py", "base64.py", "calendar.py", "configparser.py", "contextlib.py",
    "copy.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py", "functools.py",
    "gettext.py", "gzip.py", "inspect.py", "optparse.py", "pickle.py", "pprint.py",
    "random.py", "shutil.py", "socket.py", "statistics.py", "string.py", "subprocess.py",
    "tarfile.py", "tempfile.py", "textwrap.py", "threading.py", "tokenize.py",
    "traceback.py", "typing.py", "uuid.py", "warnings.py", "weakref.py",
)
HELD_OUT_FILES = ("bisect.py", "fractions.py", "heapq.py", "queue.py", "shlex.py")

# Characters: tab, newline and printable ASCII; anything else is one "other" symbol.
ALPHABET = "\t\n" + "".join(chr(c) for c in range(32, 127))
VOCAB = len(ALPHABET) + 1
_CODES = np.full(0x110000, len(ALPHABET), np.uint8)
_CODES[[ord(ch) for ch in ALPHABET]] = np.arange(len(ALPHABET))


def encode(text):
    """text -> (len(text),) int64 codes in [0, VOCAB)."""
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return _CODES[points].astype(np.int64)


def decode(codes):
    return "".join(ALPHABET[c] if c < len(ALPHABET) else "?" for c in codes)


def read_files(names, root=None):
    """(codes of the files' texts joined, names found, names missing) under the stdlib."""
    root = root or sysconfig.get_paths()["stdlib"]
    texts, found, missing = [], [], []
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
            found.append(name)
        else:
            missing.append(name)
    if not texts:
        raise FileNotFoundError(f"none of {', '.join(names)} found in {root}")
    return encode("\n".join(texts)), found, missing


def streams(codes, batch):
    """codes cut into `batch` contiguous streams: (L, batch), time-major."""
    length = codes.size // batch
    return np.ascontiguousarray(codes[:length * batch].reshape(batch, length).T)


def bptt_windows(data, bptt):
    """Endless truncated-BPTT windows over data (L, B): (x, y, restart) with x = data[t:t+bptt]
    and y the same steps one later; restart is True where the windows wrap to the start (the
    carried state must be dropped there)."""
    t = 0
    while True:
        restart = t + bptt + 1 > data.shape[0]
        if restart:
            t = 0
        yield data[t:t + bptt], data[t + 1:t + 1 + bptt], restart
        t += bptt


class CharLM(nn.Module):
    """logits (T, B, VOCAB) = head(lstm(embedding(ids (T, B)), state))."""

    def __init__(self, hidden_size, embedding_dim=32, num_layers=1):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers)
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embedding(ids), state)
        return self.head(out), state

    def backward(self, grad_logits):
        grad_out = self.head.backward(grad_logits)
        grad_x, _ = self.lstm.backward(grad_out, None)
        self.embedding.backward(grad_x, input_grad=False)

    def sampler(self):
        """The per-step model that Stream runs, a frozen copy: ids (1, B) -> next-character
        logits (B, V)."""
        return nn.freeze(nn.Sequential(self.embedding, self.lstm, nn.LastTimeStep(), self.head))


def bits_per_char(model, codes, bptt, batch=16):
    """Held-out bits per character: the model over `codes` as `batch` streams, state carried."""
    model.eval()
    data = streams(codes, batch)
    total, count, state = 0.0, 0, None
    with no_grad():
        for t in range(0, data.shape[0] - 1, bptt):
            x, y = data[t:t + bptt], data[t + 1:t + 1 + bptt]
            logits, state = model(x[:y.shape[0]], state)
            logits = logits.astype(np.float64)
            logits -= logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            total -= np.take_along_axis(logp, y[..., None], -1).sum()
            count += y.size
    return total / count / np.log(2)


def train(model, codes, *, steps, seconds, batch, bptt, lr, log=print, log_every=50):
    """Truncated BPTT with Adam and gradient clipping; stops after `steps` updates or
    `seconds`, whichever first. Returns (updates, seconds, last training loss in bits)."""
    model.train()
    data = streams(codes, batch)
    opt = optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    windows = bptt_windows(data, bptt)
    state, start, loss, done = None, time.perf_counter(), float("nan"), 0
    while done < steps and time.perf_counter() - start < seconds:
        x, y, restart = next(windows)
        logits, state = model(x, None if restart else state)
        state = tuple(s.copy() for s in state)
        loss = loss_fn(logits.reshape(-1, VOCAB), y.reshape(-1)) / np.log(2)
        opt.zero_grad()
        model.backward(loss_fn.backward().reshape(logits.shape))
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done += 1
        if log_every and done % log_every == 0:
            log(f"step {done}: train {loss:.3f} bits/char ({time.perf_counter() - start:.0f} s)")
    return done, time.perf_counter() - start, float(loss)


def sample(model, prompt, length, temperature, rng):
    """`length` characters after `prompt`, one step per Stream.step; (text, chars per second)."""
    stream = Stream(model.sampler(), batch_size=1)
    ids = encode(prompt)
    logits = None
    for c in ids:
        logits = stream.step(np.array([[c]]))
    chars = []
    start = time.perf_counter()
    for _ in range(length):
        z = logits[0].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        c = int(rng.choice(VOCAB, p=p / p.sum()))
        chars.append(c)
        logits = stream.step(np.array([[c]]))
    elapsed = time.perf_counter() - start
    return decode(chars), length / max(elapsed, 1e-9)


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parser():
    p = argparse.ArgumentParser(prog="python -m rnnx.charlm", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=_positive(int), default=3000, help="training updates (3000)")
    p.add_argument("--time", type=_positive(float), default=150.0,
                   help="training time budget in seconds (150); stops at the first limit")
    p.add_argument("--hidden", type=_positive(int), default=256, help="LSTM hidden size (256)")
    p.add_argument("--embedding", type=_positive(int), default=32, help="embedding size (32)")
    p.add_argument("--batch", type=_positive(int), default=32, help="training streams (32)")
    p.add_argument("--bptt", type=_positive(int), default=64, help="BPTT segment length (64)")
    p.add_argument("--lr", type=_positive(float), default=3e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-chars", type=_positive(int), default=100_000,
                   help="held-out characters scored (100000)")
    p.add_argument("--sample-chars", type=_positive(int), default=400)
    p.add_argument("--temperature", type=_positive(float), default=0.7)
    p.add_argument("--prompt", default="def ")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    _random.manual_seed(args.seed)
    codes, found, missing = read_files(TRAIN_FILES)
    held_out, _, missing_held_out = read_files(HELD_OUT_FILES)
    held_out = held_out[:args.eval_chars]
    for name in missing + missing_held_out:
        print(f"note: {name} is not in this Python's standard library; skipped")
    print(f"training text: {len(found)} files, {codes.size} characters; held out: "
          f"{held_out.size} characters")
    model = CharLM(args.hidden, args.embedding)
    steps, seconds, loss = train(model, codes, steps=args.steps, seconds=args.time,
                                 batch=args.batch, bptt=args.bptt, lr=args.lr)
    bpc = bits_per_char(model, held_out, args.bptt)
    print(f"trained {steps} steps in {seconds:.1f} s (last train loss {loss:.3f} bits/char); "
          f"held-out: {bpc:.3f} bits/char")
    text, rate = sample(model, args.prompt, args.sample_chars, args.temperature,
                        np.random.default_rng(args.seed))
    print(f"sample (temperature {args.temperature}, {rate:.0f} chars/s with rnnx.Stream):")
    print(args.prompt + text)
    return bpc


if __name__ == "__main__":
    main()
