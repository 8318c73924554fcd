"""The kernels' results, bit for bit, against hashes recorded from an earlier build.

A fixed set of models (every cell kind, the three cells, stacked, bidirectional, proj_size,
lengths and PackedSequence, inference and training, float32 and float64, a small batch that
runs on a team of threads and a big one split into row blocks) is run forward and backward at
every kernel level this CPU runs (RNNX_CPU_LEVEL, a subprocess per level), every GEMM backend
and 1 and 2 threads; the sha256 of every output and gradient must equal the one in
data/kernel_hashes.json. A rewrite of the kernel layer that keeps the arithmetic must keep
these bits. Rounding depends on the machine (the BLAS and its CPU kernels, the compiler), so
the hashes hold for the machine they were recorded on (its signature is in the file); another
one skips. Record them again, from a build you trust, with
    python tests/test_kernel_fingerprints.py --write
"""
import hashlib
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data", "kernel_hashes.json")
BACKENDS = ("auto", "blas", "microkernel")
THREADS = (1, 2)


def machine_signature():
    """What the recorded bits depend on besides the kernels: the CPU, and scipy's BLAS."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)
    from threadpoolctl import threadpool_info
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    blas = sorted(f"{lib['internal_api']} {lib['version']} {lib.get('architecture')}"
                  for lib in threadpool_info() if lib["user_api"] == "blas")
    return {"machine": platform.machine(), "cpu": cpu, "blas": blas}


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _sequence_cases(rnnx):
    """(name, make module, T, B, lengths, packed): the sequence layers' cases."""
    cases = []
    kinds = [("LSTM", lambda **k: rnnx.LSTM(**k)), ("GRU", lambda **k: rnnx.GRU(**k)),
             ("RNN_TANH", lambda **k: rnnx.RNN(nonlinearity="tanh", **k)),
             ("RNN_RELU", lambda **k: rnnx.RNN(nonlinearity="relu", **k))]
    for kind, make in kinds:
        # stacked and bidirectional, small batch; big batch with lengths (row blocks)
        cases.append((f"{kind}-stacked-bi-B3", make, dict(input_size=5, hidden_size=20,
                      num_layers=2, bidirectional=True), 7, 3, None, False))
        cases.append((f"{kind}-B40-lengths", make, dict(input_size=6, hidden_size=24), 6, 40,
                      "lengths", False))
        cases.append((f"{kind}-bi-B20-packed", make, dict(input_size=4, hidden_size=17,
                      bidirectional=True), 5, 20, "packed", False))
        # a small batch with steps big enough for a team of threads (and weights too big
        # for L2: inputs projected up front)
        cases.append((f"{kind}-team-B4", make, dict(input_size=8, hidden_size=192), 4, 4, None,
                      False))
    cases.append(("LSTM-proj-stacked-bi", kinds[0][1], dict(input_size=5, hidden_size=21,
                  proj_size=7, num_layers=2, bidirectional=True), 6, 18, "lengths", False))
    cases.append(("LSTM-proj-B2", kinds[0][1], dict(input_size=3, hidden_size=40, proj_size=9),
                  5, 2, None, False))
    cases.append(("GRU-bias-free-batch-first", lambda **k: rnnx.GRU(bias=False,
                  batch_first=True, **k), dict(input_size=5, hidden_size=33), 4, 9, None, False))
    return cases


def _run_sequence(rnnx, make, sizes, T, B, lengths, dtype, rng):
    from rnnx.utils.rnn import pack_padded_sequence
    m = make(dtype=dtype, **sizes)
    I = sizes["input_size"]
    batch_first = getattr(m, "batch_first", False)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    lens = None
    if lengths is not None:
        lens = np.maximum(1, T - np.arange(B) % T)
    digests = []
    with rnnx.no_grad():     # inference: cached panels, no records
        out = m(x if lengths is None else x, lengths=lens) if lengths == "lengths" else (
            m(pack_padded_sequence(x, lens, enforce_sorted=False)) if lengths == "packed"
            else m(x))
    digests.append(_digest(*_flatten(out)))
    inp = pack_padded_sequence(x, lens, enforce_sorted=False) if lengths == "packed" else x
    out = m(inp, lengths=lens) if lengths == "lengths" else m(inp)
    flat = _flatten(out)
    grads = [rng.standard_normal(np.shape(a)).astype(dtype) for a in flat]
    y, state = out
    gy = grads[0]
    if lengths == "packed":
        gy = type(y)(gy, y.batch_sizes, y.sorted_indices, y.unsorted_indices)
    gstate = (grads[1], grads[2]) if isinstance(state, tuple) else grads[1]
    gx, gh = m.backward(gy, gstate)
    digests.append(_digest(*flat, *_flatten((gx, gh)),
                           *(p.grad for p in m.parameters())))
    return digests


def _flatten(value):
    from rnnx.utils.rnn import PackedSequence
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _flatten(v)]
    return [value]


def _run_cell(rnnx, kind, dtype, rng, B):
    make = {"LSTMCell": rnnx.LSTMCell, "GRUCell": rnnx.GRUCell, "RNNCell": rnnx.RNNCell}[kind]
    I, H, T = 7, 30, 4
    cell = make(I, H, dtype=dtype)
    xs = rng.standard_normal((T, B, I)).astype(dtype)
    state = None
    outs = []
    with rnnx.no_grad():
        s = None
        for t in range(T):
            s = cell(xs[t], s)
            outs.extend(_flatten(s))
    for t in range(T):
        state = cell(xs[t], state)
        outs.extend(np.copy(a) for a in _flatten(state))
    g = [rng.standard_normal(np.shape(a)).astype(dtype) for a in _flatten(state)]
    grad = tuple(g) if kind == "LSTMCell" else g[0]
    for t in reversed(range(T)):
        gx, gstate = cell.backward(grad)
        outs.append(gx)
        grad = gstate
        outs.extend(_flatten(gstate))
    return [_digest(*outs, *(p.grad for p in cell.parameters()))]


def compute_hashes():
    """{"threads=N": {case: [sha256, ...]}} at this process's level and backend."""
    import rnnx
    result = {}
    for threads in THREADS:
        rnnx.set_num_threads(threads)
        hashes = {}
        for dtype in (np.float32, np.float64):
            dt = np.dtype(dtype).name
            for name, make, sizes, T, B, lengths, _ in _sequence_cases(rnnx):
                rnnx.manual_seed(11)
                rng = np.random.default_rng(5)
                hashes[f"{name}-{dt}"] = _run_sequence(rnnx, make, sizes, T, B, lengths, dtype,
                                                       rng)
            for kind in ("LSTMCell", "GRUCell", "RNNCell"):
                for B in (3, 20):
                    rnnx.manual_seed(12)
                    rng = np.random.default_rng(6)
                    hashes[f"{kind}-B{B}-{dt}"] = _run_cell(rnnx, kind, dtype, rng, B)
        result[f"threads={threads}"] = hashes
    return result


def runnable_levels():
    from rnnx._kernels import _recurrent
    from rnnx._kernels._cpu import supported_levels
    return [lv for lv in _recurrent.compiled_levels()
            if lv in supported_levels() or lv == "local"]


def hashes_at(level, backend):
    """compute_hashes() in a fresh process at kernel level `level` and GEMM backend `backend`."""
    env = {**os.environ, "PYTHONPATH": ROOT, "RNNX_CPU_LEVEL": level, "RNNX_GEMM": backend}
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--print"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _recorded():
    with open(DATA) as f:
        return json.load(f)


def _levels_to_check():
    try:
        return runnable_levels()
    except Exception:       # noqa: BLE001  (no build: the collection error says it better)
        return []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", _levels_to_check())
def test_bits_equal_the_recorded_ones(level, backend):
    recorded = _recorded()
    if recorded["signature"] != machine_signature():
        pytest.skip("hashes recorded on another machine or BLAS: "
                    f"{recorded['signature']} vs {machine_signature()}")
    if level not in recorded["hashes"]:
        pytest.skip(f"no hashes recorded at level {level}")
    expected = recorded["hashes"][level][backend]
    got = hashes_at(level, backend)
    assert got.keys() == expected.keys()
    for threads in expected:
        assert got[threads].keys() == expected[threads].keys()
        changed = [case for case in expected[threads]
                   if got[threads][case] != expected[threads][case]]
        assert not changed, f"{level}, {backend}, {threads}: bits changed in {changed}"


def test_the_hashes_tell_results_apart():
    """The cases are not degenerate: different cases give different bits."""
    table = _recorded()["hashes"]
    per_level = next(iter(table.values()))["microkernel"]["threads=1"]
    digests = [d for case in per_level.values() for d in case]
    assert len(set(digests)) == len(digests)


def main():
    if sys.argv[1:] == ["--print"]:
        json.dump(compute_hashes(), sys.stdout)
    elif sys.argv[1:] == ["--write"]:
        table = {level: {backend: hashes_at(level, backend) for backend in BACKENDS}
                 for level in runnable_levels()}
        os.makedirs(os.path.dirname(DATA), exist_ok=True)
        with open(DATA, "w") as f:
            json.dump({"signature": machine_signature(), "hashes": table}, f, indent=1,
                      sort_keys=True)
            f.write("\n")
    else:
        sys.exit("usage: test_kernel_fingerprints.py --print | --write")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
