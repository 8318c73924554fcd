"""The benchmark matrix: cases, their shapes (full and --quick), inputs, weights and FLOPs."""
from dataclasses import dataclass

import numpy as np

CELLS = ("LSTM", "GRU", "RNN")
PHASES = ("train", "infer")
NUM_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class Shape:
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def D(self):
        return 2 if self.bidirectional else 1


@dataclass(frozen=True)
class Case:
    """A named shape; kind "uneven" / "denormal" adds a baseline variant (full lengths / x*1)."""
    name: str
    full: Shape
    quick: Shape
    kind: str = "plain"
    about: str = ""


CASES = {c.name: c for c in (
    Case("tiny", Shape(50, 16, 10, 20), Shape(10, 4, 10, 20), about="hidden 20"),
    Case("mnist", Shape(28, 128, 28, 128, 2), Shape(28, 16, 28, 32, 2),
         about="MNIST rows: T 28, B 128, I 28, H 128, 2 layers"),
    Case("medium", Shape(32, 32, 128, 256, 2, True), Shape(8, 8, 16, 32, 2, True),
         about="T 32, B 32, I 128, H 256, 2 layers, bidirectional"),
    Case("large", Shape(100, 64, 512, 512), Shape(10, 8, 64, 64),
         about="T 100, B 64, I 512, H 512"),
    Case("long", Shape(1000, 16, 32, 64), Shape(100, 4, 8, 16),
         about="T 1000, B 16, I 32, H 64"),
    Case("deepbench", Shape(25, 16, 1024, 1024), Shape(5, 16, 64, 64),
         about="DeepBench inference: T 25, B 16, I 1024, H 1024"),
    Case("batch1", Shape(100, 1, 128, 256), Shape(10, 1, 16, 32),
         about="latency: T 100, B 1, I 128, H 256"),
    Case("mnist1", Shape(28, 1, 28, 128, 2), Shape(28, 1, 28, 32, 2),
         about="latency of a stack: the MNIST model at batch 1"),
    Case("uneven", Shape(100, 64, 64, 128), Shape(12, 8, 8, 16), kind="uneven",
         about="T 100, B 64, I 64, H 128, lengths spread over 1..T"),
    Case("denormal", Shape(28, 128, 28, 128, 2), Shape(28, 16, 28, 32, 2), kind="denormal",
         about="mnist with inputs x*50"),
)}


@dataclass(frozen=True)
class Variant:
    """What one timed run feeds a model: input scale and per-sequence lengths (None: all T)."""
    name: str
    scale: float = 1.0
    uneven: bool = False


def variants(case):
    """The timed variants of a case: its main one first, then its baseline (if any)."""
    if case.kind == "uneven":
        return [Variant("main", uneven=True), Variant("full lengths")]
    if case.kind == "denormal":
        return [Variant("main", scale=50.0), Variant("x*1")]
    return [Variant("main")]


def make_weights(cell, shape, seed=0):
    """torch-named float32 weights, drawn as PyTorch and rnnx initialise them (every weight
    and bias U(-1/sqrt(H), 1/sqrt(H))) with NumPy alone, so that a worker process that times
    another library never imports rnnx."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(shape.H)
    GH = NUM_GATES[cell] * shape.H
    weights = {}
    for layer in range(shape.layers):
        inputs = shape.I if layer == 0 else shape.D * shape.H
        for suffix in ("", "_reverse")[:shape.D]:
            for name, dims in (("weight_ih", (GH, inputs)), ("weight_hh", (GH, shape.H)),
                               ("bias_ih", (GH,)), ("bias_hh", (GH,))):
                weights[f"{name}_l{layer}{suffix}"] = rng.uniform(
                    -bound, bound, dims).astype(np.float32)
    return weights


def make_inputs(shape, variant, seed=1):
    """(x (T, B, I), grad_out (T, B, D*H), lengths (B,) int64 or None), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    x *= np.float32(variant.scale)
    grad_out = rng.standard_normal((shape.T, shape.B, shape.D * shape.H)).astype(np.float32)
    lengths = None
    if variant.uneven:
        lengths = rng.permutation(np.linspace(1, shape.T, shape.B).round().astype(np.int64))
    return x, grad_out, lengths


def forward_flops(cell, shape, lengths):
    """GEMM FLOPs of one forward pass: sum over layers and directions of 2*N*G*H*(I_l + H).

    N = sum(lengths) (T*B for full lengths), G = gates (4, 3, 1), I_l = I for layer 0 and
    D*H above. Elementwise gate math is not counted.
    """
    N = shape.T * shape.B if lengths is None else int(np.sum(lengths))
    G, H, D = NUM_GATES[cell], shape.H, shape.D
    return sum(2 * N * G * H * ((shape.I if layer == 0 else D * H) + H) * D
               for layer in range(shape.layers))


def flops(cell, shape, lengths, phase):
    """FLOPs of one timed call: the forward's, three times that for a training step."""
    return forward_flops(cell, shape, lengths) * (3 if phase == "train" else 1)


def weight_bytes(cell, shape, itemsize=4):
    """Weight bytes one call must read when each step streams the recurrent weights (the
    small-batch bound): T * (recurrent weights) + the input weights once."""
    G, H, D = NUM_GATES[cell], shape.H, shape.D
    recurrent = shape.layers * D * G * H * H
    inputs = sum(D * G * H * (shape.I if layer == 0 else D * H) for layer in range(shape.layers))
    return itemsize * (shape.T * recurrent + inputs)


def recurrent_bytes(cell, shape, itemsize=4):
    """Bytes of all the recurrent weights: the set streamed at every step."""
    return itemsize * shape.layers * shape.D * NUM_GATES[cell] * shape.H * shape.H
