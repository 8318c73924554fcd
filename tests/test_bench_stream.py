"""Smoke test of bench/stream.py: a --quick run ends well and reports every library."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
PEERS = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx")}


def installed(lib):
    return all(importlib.util.find_spec(name) for name in PEERS.get(lib, (lib,)))


def test_quick_stream_bench(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "stream.py"), "--quick",
                           "--rounds", "3", "--budget", "1", "--out", str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "stream.json") as f:
        data = json.load(f)
    assert data["quick"] and len(data["results"]) == 1
    case = data["results"][0]
    assert (case["threads"], case["layers"], case["hidden"], case["batch"]) == (1, 2, 128, 1)
    libs = case["libs"]
    expected = {"rnnx-stream", "rnnx-call", "floor"} | {lib for lib in PEERS if installed(lib)}
    assert expected <= set(libs) and not any("error" in libs[lib] for lib in expected), libs
    assert libs["floor"]["gb_per_s"] > 0
    for lib in expected - {"floor"}:
        row = libs[lib]
        assert row["calls"] >= 3 and 0 < row["p50_us"] <= row["p99_us"] and row["gb_per_s"] > 0
        assert row["max_abs_diff"] <= 1e-5, (lib, row)   # the same model everywhere
    assert libs["rnnx-call"]["max_abs_diff"] == 0.0             # rnnx's two ways: bitwise
    assert case["targets"]["floor_us"] > 0
    assert "**Quick run (smoke test)" in proc.stdout and "| 1 | 2x128 | 1 |" in proc.stdout
