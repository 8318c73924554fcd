"""Smoke tests of bench/run.py: a --quick run ends well and writes the expected report."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
# The scripts import the rnnx of this tree, whichever rnnx is installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
PEERS = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx"), "jax": ("jax",),
         "numpy": ("numpy",)}


def installed(lib):
    return all(importlib.util.find_spec(name) for name in PEERS.get(lib, (lib,)))


def run_bench(out, *flags):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick",
                           "--out", str(out), *flags],
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "latest.json") as f:
        return json.load(f), proc.stdout


def test_quick_tiny_run_writes_report(tmp_path):
    data, printed = run_bench(tmp_path, "--cases", "tiny", "--no-memory")
    assert set(data) >= {"meta", "machine", "peak_gflops", "results", "memory"}
    assert data["memory"] == []
    threads = data["meta"]["threads"]
    assert data["meta"]["mode"] == "separate"
    assert set(data["peak_gflops"]) == {str(t) for t in threads}
    assert all(v > 0 for v in data["peak_gflops"].values())
    assert all(v > 0 for v in data["machine"]["sgemm_gflops"].values())
    # one worker per library (rnnx's variants share one); only rnnx's imported rnnx
    for worker in data["meta"]["workers"]:
        hosts_rnnx = any(lib.startswith("rnnx") for lib in worker["libs"])
        assert hosts_rnnx == all(lib.startswith("rnnx") for lib in worker["libs"])
        assert worker["imported"]["rnnx"] == hosts_rnnx, worker
        assert not worker["imported"]["torch"] or worker["libs"] == ["torch"], worker
    results = data["results"]
    errors = [r for r in results if "error" in r]
    assert not errors, errors
    disagree = [r for r in results if r.get("agrees") is False]
    assert not disagree, disagree
    timed = {(r["cell"], r["phase"], r["lib"]) for r in results}
    for cell in ("LSTM", "GRU", "RNN"):
        for phase in ("train", "infer"):
            assert (cell, phase, "rnnx") in timed
            assert ((cell, phase, "rnnx-frozen") in timed) == (phase == "infer")
            for lib in PEERS:
                expected = installed(lib) and not (lib == "onnxruntime" and phase == "train")
                assert ((cell, phase, lib) in timed) == expected, (cell, phase, lib)
    for r in results:
        assert set(r) >= {"threads", "cell", "case", "phase", "variant", "lib", "gflop",
                          "median_ms", "min_ms", "times_ms", "gflops", "pct_peak", "vs_torch"}
        if r["lib"] == "rnnx":
            assert r["vs_best"] > 0 and r["best_peer"] in PEERS
        if r["phase"] == "infer":  # tiny's batch is 4: weight-streaming figures
            assert r["weight_gbs"] > 0 and r["bandwidth_gbs"] > 0
        assert r["median_ms"] > 0 and r["gflops"] > 0 and len(r["times_ms"]) >= 3
        if installed("torch"):
            assert r["vs_torch"] > 0
    md = (tmp_path / "latest.md").read_text()
    assert md in printed and "| cell | case | phase | GFLOP | rnnx |" in md
    assert "rnnx / best" in md and "FMA peak GFLOP/s" in md
    assert md.count("**Quick run (smoke test):**") == 2  # the time table and the details
    assert (tmp_path / "latest.png").exists() == (installed("matplotlib") and installed("torch"))


def test_without_peers_and_with_variants(tmp_path):
    """Only rnnx + NumPy: no PyTorch ratios, no chart; the uneven case times its baseline."""
    data, _ = run_bench(tmp_path, "--cases", "uneven", "--cells", "GRU", "--phases", "infer",
                        "--libs", "rnnx,numpy", "--no-memory", "--threads", "1", "--no-machine")
    rows = {(r["variant"], r["lib"]): r for r in data["results"]}
    assert set(rows) == {(v, lib) for v in ("main", "full lengths") for lib in ("rnnx", "numpy")}
    assert rows["main", "rnnx"]["vs_base"] > 0 and rows["main", "rnnx"]["vs_torch"] is None
    assert rows["main", "numpy"]["agrees"]
    assert "chart" in data["meta"]["skipped"]
    assert data["machine"] is None and rows["main", "rnnx"]["pct_peak"] is None
    assert not (tmp_path / "latest.png").exists()
    # quick shapes are too small for the uneven-length ratios: left out, and said so
    md = (tmp_path / "latest.md").read_text()
    assert "Uneven lengths" not in md and "uneven-length" in md
    sys.path.insert(0, BENCH)
    try:
        import _report
        full = _report.markdown({**data, "meta": {**data["meta"], "quick": False}})
    finally:
        sys.path.remove(BENCH)
    assert "### Uneven lengths" in full and "Quick run" not in full


def test_quick_run_skips_the_memory_probes(tmp_path):
    data, printed = run_bench(tmp_path, "--cases", "tiny", "--cells", "RNN", "--phases", "train",
                              "--libs", "rnnx", "--threads", "1")
    assert data["memory"] == [] and "too small" in data["meta"]["skipped"]["memory"]
    assert "Peak memory" not in printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_probe():
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "_memory.py"), "rnnx", "1", "1",
                           "LSTM", "mnist"], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.splitlines()[-1])
    assert row["lib"] == "rnnx" and row["case"] == "mnist" and row["peak_mb"] >= 0


REAL_MNIST = os.path.join(os.path.dirname(os.path.dirname(BENCH)), "shared", "data", "mnist")


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason=f"real MNIST not found at {REAL_MNIST}")
def test_mnist_vs_torch(tmp_path):
    """Both libraries train the same model for an epoch of 256 images and score it on 500."""
    pytest.importorskip("torch")
    out = tmp_path / "mnist.json"
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "mnist_vs_torch.py"),
                           "--data-dir", REAL_MNIST, "--limit-train", "256", "--limit-test", "500",
                           "--seed", "3",
                           "--json", str(out)], env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rnnx s" in proc.stdout and "torch acc" in proc.stdout
    assert "rnnx/torch" in proc.stdout  # the ratio the way round of the README's table
    data = json.loads(out.read_text())
    assert data["config"]["seed"] == 3 and data["config"]["limit_train"] == 256
    assert data["config"]["limit_test"] == 500
    for lib in ("rnnx", "torch"):
        (epoch,) = data[lib]
        assert epoch["train_seconds"] > 0 and 0 <= epoch["test_accuracy"] <= 1


def test_shared_mode_is_labelled(tmp_path):
    """--mode shared: every library in one worker process, and the report says so."""
    data, printed = run_bench(tmp_path, "--cases", "tiny", "--cells", "RNN", "--phases", "infer",
                              "--libs", "rnnx,numpy", "--no-memory", "--threads", "1",
                              "--mode", "shared", "--no-machine")
    (worker,) = data["meta"]["workers"]
    assert worker["libs"] == ["rnnx", "numpy"] and data["meta"]["mode"] == "shared"
    assert "in-process mode" in printed
