"""The kernels' own sigmoid and tanh (vmath.h), reached through one-unit cells
(bench/activations.py): within 2.5 and 1.5 ulp of the exact values over a dense grid, in
float32 and float64, at every instruction-set level (.ci/run runs this file at each), and
right at the extremes."""
import importlib.util
import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
_spec = importlib.util.spec_from_file_location("bench_activations",
                                               os.path.join(BENCH, "activations.py"))
activations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(activations)

MAX_ULP = {"sigmoid": 2.5, "tanh": 1.5}
FUNCS = {"sigmoid": activations.gate_sigmoid, "tanh": activations.gate_tanh}


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_float32_within_a_few_ulp(name):
    x = activations.grid(200_001)
    x64 = x.astype(np.float64)
    exact = 1 / (1 + np.exp(-x64)) if name == "sigmoid" else np.tanh(x64)
    got = FUNCS[name](x)
    assert got.dtype == np.float32
    assert activations.ulp_errors(got, exact, np.float32).max() <= MAX_ULP[name]


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant,
                    reason="needs a long double wider than double for the reference")
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_float64_within_a_few_ulp(name):
    x = np.concatenate([np.linspace(-700, 30, 200_001), 10.0 ** np.linspace(-12, 1, 20_001),
                        -10.0 ** np.linspace(-12, 1, 20_001)])
    xl = x.astype(np.longdouble)
    exact = 1 / (1 + np.exp(-xl)) if name == "sigmoid" else np.tanh(xl)
    got = FUNCS[name](x)
    assert got.dtype == np.float64
    assert activations.ulp_errors(got, exact, np.float64).max() <= MAX_ULP[name]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extremes_and_nan(dtype):
    t = activations.gate_tanh(np.array([np.inf, -np.inf, 1e30, -1e30, 30, np.nan], dtype))
    np.testing.assert_array_equal(t[:5], [1, -1, 1, -1, 1])
    assert np.isnan(t[5])
    s = activations.gate_sigmoid(np.array([1e30, 100, 40, -1e30, -800], dtype))
    np.testing.assert_array_equal(s[:3], [1, 1, 1])
    assert np.all((s[3:] >= 0) & (s[3:] <= np.finfo(dtype).tiny))


def test_accuracy_table(capsys):
    activations.main(["--points", "2001"])
    out = capsys.readouterr().out
    assert "| library | sigmoid: max ulp (at x) |" in out
    assert "\n| rnnx | " in out
