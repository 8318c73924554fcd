"""One forward and backward step of LSTM (with a projection), GRU and RNN, float32 and float64,
with the installed rnnx at the kernel level named by argv[1] (set RNNX_CPU_LEVEL to it), on 2
threads, against the NumPy reference that ships with the package. Run as a plain script, far
from the source tree: nothing but the installed package is imported."""
import sys

import numpy as np

import rnnx
from rnnx import _reference
from rnnx._kernels import _recurrent

level = sys.argv[1]
if _recurrent.level != level:
    sys.exit(f"RNNX_CPU_LEVEL={level}: the kernels loaded are {_recurrent.level!r}")
rnnx.set_num_threads(2)
rng = np.random.default_rng(0)
T, B, I, H = 6, 20, 5, 24      # 20 rows: blocks of rows on 2 threads
layers = {"LSTM": lambda dtype: rnnx.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=7,
                                          dtype=dtype),
          "GRU": lambda dtype: rnnx.GRU(I, H, num_layers=2, bidirectional=True, dtype=dtype),
          "RNN": lambda dtype: rnnx.RNN(I, H, num_layers=2, bidirectional=True, dtype=dtype)}
for mode, make in layers.items():
    for dtype, tol in ((np.float32, 2e-4), (np.float64, 1e-10)):
        rnnx.manual_seed(1)
        layer = make(dtype)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        lengths = rng.integers(1, T + 1, B)
        out, _ = layer(x, lengths=lengths)
        grad_out = rng.standard_normal(out.shape).astype(dtype)
        grad_x, _ = layer.backward(grad_out, None)
        params = {name: p.data.astype(np.float64) for name, p in layer.named_parameters()}
        ref_out, _, _ = _reference.forward(mode, params, x.astype(np.float64), num_layers=2,
                                           bidirectional=True, lengths=lengths)
        ref = _reference.backward(mode, params, x.astype(np.float64), num_layers=2,
                                  bidirectional=True, lengths=lengths, grad_out=grad_out)
        checks = [("output", out, ref_out), ("input gradient", grad_x, ref["x"])]
        checks += [(name, p.grad, ref[name]) for name, p in layer.named_parameters()]
        for what, got, want in checks:
            err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
            if not err < tol:
                sys.exit(f"{level} {mode} {np.dtype(dtype).name}: {what} is off by {err:.3g}")
print(f"{level}: LSTM, GRU, RNN forward + backward match the reference (float32, float64)")
