"""rnnx.set_gemm_backend: "blas" (scipy.linalg.cython_blas) and "microkernel" compute the same
layers up to rounding, each bitwise the same for any thread count; the switch and RNNX_GEMM."""
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnx

from helpers import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["auto", "blas", "microkernel"]


def test_default_is_auto_and_switch_round_trips():
    assert os.environ.get("RNNX_GEMM") or rnnx.get_gemm_backend() == "auto"
    for backend in BACKENDS:
        rnnx.set_gemm_backend(backend)
        assert rnnx.get_gemm_backend() == backend


@pytest.mark.parametrize("bad, error, match", [
    ("BLAS", ValueError, "one of 'auto', 'blas', 'microkernel', got 'BLAS'"),
    ("mkl", ValueError, "got 'mkl'"),
    (1, TypeError, "backend must be a str, got int"),
    (None, TypeError, "got NoneType"),
])
def test_bad_backend(bad, error, match):
    with pytest.raises(error, match=match):
        rnnx.set_gemm_backend(bad)


def _import_with(value):
    env = {**os.environ, "PYTHONPATH": ROOT, "RNNX_GEMM": value}
    return subprocess.run([sys.executable, "-c", "import rnnx; print(rnnx.get_gemm_backend())"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_environment_variable():
    res = _import_with("blas")
    assert res.returncode == 0 and res.stdout.split() == ["blas"], res.stderr
    res = _import_with("cublas")
    assert res.returncode != 0
    assert "RNNX_GEMM='cublas': expected 'auto', 'blas' or 'microkernel'" in res.stderr


def _layers(dtype):
    """(module, batch, lengths): row blocks (with lengths), a team of threads (batch 2),
    two directions, a projection, inputs projected up front (big weights)."""
    rnnx.manual_seed(3)
    B = 70
    lengths = np.arange(B) % 6 + 1
    return [
        (rnnx.LSTM(5, 40, num_layers=2, bidirectional=True, dtype=dtype), B, lengths),
        (rnnx.LSTM(5, 24, proj_size=9, dtype=dtype), B, lengths),
        (rnnx.GRU(5, 110, dtype=dtype), 2, None),
        (rnnx.LSTM(5, 100, dtype=dtype), 3, None),
        (rnnx.GRU(5, 33, bidirectional=True, dtype=dtype), B, None),
        (rnnx.RNN(300, 260, dtype=dtype), 40, None),
    ]


def _run(module, B, lengths, dtype):
    r = np.random.default_rng(0)
    x = r.standard_normal((6, B, module.input_size)).astype(dtype)
    P = getattr(module, "proj_size", 0) or module.hidden_size
    go = r.standard_normal((6, B, P * (2 if module.bidirectional else 1))).astype(dtype)
    module.zero_grad()
    out, _ = module(x, lengths=lengths)
    gx, _ = module.backward(go)
    return [out, gx] + [p.grad.copy() for p in module.parameters()]


def _results(backend, threads, dtype):
    rnnx.set_gemm_backend(backend)
    rnnx.set_num_threads(threads)
    return [_run(m, B, lengths, dtype) for m, B, lengths in _layers(dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["blas", "auto"])
def test_backend_is_bitwise_thread_independent(backend, dtype):
    one = _results(backend, 1, dtype)
    for threads in (2, 3, 4):
        other = _results(backend, threads, dtype)
        for layer, (a, b) in enumerate(zip(one, other)):
            for i, (u, v) in enumerate(zip(a, b)):
                assert np.array_equal(u, v), (backend, threads, layer, i)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_and_microkernel_agree(dtype):
    blas = _results("blas", 2, dtype)
    micro = _results("microkernel", 2, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for layer, (a, b) in enumerate(zip(blas, micro)):
        for i, (u, v) in enumerate(zip(a, b)):
            assert_close(u, v, tol, f"layer {layer} result {i}")
