"""Instruction-set dispatch: the level chosen at import, RNNX_CPU_LEVEL, and the kernels of
every level this machine runs (each forced in a subprocess) against the default level."""
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnx
from rnnx._kernels import _recurrent
from rnnx._kernels._cpu import supported_levels
from rnnx._kernels._recurrent import choose_level

from helpers import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a subprocess at one level: forward + backward of a few layers (row blocks, a team
# of threads, projection, lengths) at 1, 2 and 3 threads, which must agree bitwise; saves
# the results of 1 thread to the .npz named by argv[1].
SCRIPT = r"""
import sys
import numpy as np
import rnnx
from rnnx._kernels import _recurrent

def case(name, make, B, lengths, dtype):
    rnnx.manual_seed(0)
    m = make(dtype)
    P = getattr(m, "proj_size", 0) or m.hidden_size
    r = np.random.default_rng(1)
    x = r.standard_normal((5, B, 3)).astype(dtype)
    go = r.standard_normal((5, B, P * (2 if m.bidirectional else 1))).astype(dtype)
    out, _ = m(x, lengths=lengths)
    m.backward(go)
    return {f"{name}/out": out, **{f"{name}/{k}": p.grad for k, p in m.named_parameters()}}

def collect():
    res = {}
    for dtype in (np.float32, np.float64):
        t = np.dtype(dtype).name
        res.update(case(f"lstm_proj_{t}", lambda d: rnnx.LSTM(3, 20, proj_size=7, dtype=d,
                        bidirectional=True), 40, np.arange(40) % 5 + 1, dtype))
        res.update(case(f"gru_{t}", lambda d: rnnx.GRU(3, 200, dtype=d), 1, None, dtype))
        res.update(case(f"rnn_{t}", lambda d: rnnx.RNN(3, 24, num_layers=2, dtype=d),
                        64, None, dtype))
    return res

print(_recurrent.level)
runs = []
for n in (1, 2, 3):
    rnnx.set_num_threads(n)
    runs.append(collect())
for other in runs[1:]:
    for k in runs[0]:
        assert np.array_equal(runs[0][k], other[k]), k
np.savez(sys.argv[1], **runs[0])
"""


def run_at_level(level, path, **env):
    env = {**os.environ, "PYTHONPATH": ROOT, "RNNX_CPU_LEVEL": level, **env}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_default_level_is_the_best_built_one_the_cpu_runs():
    built = _recurrent.compiled_levels()
    assert built and _recurrent.level in built
    if "local" not in built and not os.environ.get("RNNX_CPU_LEVEL"):
        assert _recurrent.level == [lv for lv in built if lv in supported_levels()][-1]
    assert rnnx.nn.rnn.forward_layer.__module__ == f"rnnx._kernels._recurrent_{_recurrent.level}"


def test_supported_levels_are_a_prefix_of_the_levels():
    levels = supported_levels()
    assert levels == _recurrent.LEVELS[:len(levels)]


@pytest.mark.parametrize("requested, compiled, supported, want", [
    ("", ("baseline", "avx2", "avx512"), ("baseline", "avx2", "avx512"), "avx512"),
    ("", ("baseline", "avx2", "avx512"), ("baseline", "avx2"), "avx2"),
    ("", ("baseline", "avx2"), ("baseline", "avx2", "avx512"), "avx2"),
    ("baseline", ("baseline", "avx2", "avx512"), ("baseline", "avx2", "avx512"), "baseline"),
    ("", ("local",), (), "local"),
    ("local", ("local",), ("baseline",), "local"),
])
def test_choose_level(requested, compiled, supported, want):
    assert choose_level(requested, compiled, supported) == want


@pytest.mark.parametrize("requested, compiled, supported, error, match", [
    ("avx1024", ("baseline",), ("baseline",), ValueError, "expected one of baseline, avx2"),
    ("AVX2", ("baseline", "avx2"), ("baseline", "avx2"), ValueError, "'AVX2'"),
    ("avx512", ("baseline", "avx2", "avx512"), ("baseline", "avx2"), RuntimeError,
     "this CPU does not support it .it runs: baseline, avx2"),
    ("avx2", ("local",), ("baseline", "avx2"), RuntimeError, "no such kernels .built: local"),
    ("", ("baseline", "avx2"), (), RuntimeError, "no kernels for this CPU"),
])
def test_choose_level_errors(requested, compiled, supported, error, match):
    with pytest.raises(error, match=match):
        choose_level(requested, compiled, supported)


def test_bad_level_in_the_environment_fails_the_import_clearly(tmp_path):
    res = run_at_level("sse9", tmp_path / "r.npz")
    assert res.returncode != 0
    assert "RNNX_CPU_LEVEL='sse9': expected one of baseline, avx2, avx512" in res.stderr


@pytest.fixture(scope="module")
def default_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("levels") / "default.npz"
    res = run_at_level("", path)
    assert res.returncode == 0, res.stderr
    return dict(np.load(path))


@pytest.mark.parametrize("level", [lv for lv in _recurrent.LEVELS
                                   if lv in _recurrent.compiled_levels()
                                   and (lv in supported_levels() or lv == "local")])
def test_every_level_runs_bitwise_thread_independent_and_agrees(level, default_results,
                                                                tmp_path):
    """Each level the machine runs, forced: bitwise the same at 1, 2 and 3 threads, and the
    same as the default level up to rounding."""
    res = run_at_level(level, tmp_path / "r.npz")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [level]
    got = np.load(tmp_path / "r.npz")
    assert set(got.files) == set(default_results)
    for k, want in default_results.items():
        assert got[k].dtype == want.dtype
        assert_close(got[k], want, 1e-4 if want.dtype == np.float32 else 1e-10, k)
