"""python -m rnnx.charlm on a tiny budget: it trains, scores held-out text and samples."""
import os
import re
import subprocess
import sys

import numpy as np

import rnnx
from rnnx import charlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def test_encode_decode_round_trip():
    text = "def f(x):\n\treturn x + 1  # ok\n"
    codes = charlm.encode(text)
    assert codes.max() < charlm.VOCAB and charlm.decode(codes) == text
    assert charlm.decode(charlm.encode("é")) == "?"


def test_streams_are_contiguous_pieces():
    data = charlm.streams(np.arange(10), 3)
    np.testing.assert_array_equal(data.T, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])


def test_sampler_stream_matches_the_model():
    """Stream over the sampler gives the next-character logits of the text so far, step after
    step: bitwise those of the sampler called on it, to rounding the model's own (its head
    runs on every step at once, and a matrix product's bits depend on its row count)."""
    rnnx.manual_seed(0)
    model = charlm.CharLM(16, 8).eval()
    ids = charlm.encode("import os\n")[:, None]
    logits, _ = model(ids)
    sampler = model.sampler()
    stream = rnnx.Stream(sampler, batch_size=1)
    for t in range(ids.shape[0]):
        got = stream.step(ids[t:t + 1])
        np.testing.assert_array_equal(got, sampler(ids[:t + 1]))
        np.testing.assert_allclose(got, logits[t], rtol=1e-5, atol=1e-6)


def test_cli_tiny_budget():
    proc = subprocess.run([sys.executable, "-m", "rnnx.charlm", "--steps", "3", "--hidden", "16",
                           "--batch", "4", "--bptt", "16", "--eval-chars", "2000",
                           "--sample-chars", "20"],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bpc = float(re.search(r"held-out: ([0-9.]+) bits/char", proc.stdout).group(1))
    assert 0 < bpc < 8       # untrained: about log2(VOCAB) = 6.6
    assert re.search(r"[0-9]+ chars/s with rnnx.Stream", proc.stdout)
    assert "trained 3 steps" in proc.stdout
