"""Importing rnnx leaves other libraries alone: the environment is untouched and no OpenMP
runtime is loaded (rnnx's kernel threads are its own pool, team.h), so PyTorch or anything else
in the process keeps its own OpenMP settings. (Speed: bench/import_effect.py.)"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, os, sys
before = dict(os.environ)
import numpy as np
import rnnx
rnnx.set_num_threads(2)
model = rnnx.LSTM(8, 32, num_layers=2)
for batch in (1, 40):  # the team path (batch 1) and the row-block tasks
    model(np.ones((5, batch, 8), np.float32))
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
print(json.dumps({"changed": sorted(k for k in set(before) | set(os.environ)
                                    if before.get(k) != os.environ.get(k)),
                  "libgomp": "libgomp" in maps, "linux": sys.platform.startswith("linux")}))
"""


def run_probe(env):
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    result = run_probe(env)
    assert result["changed"] == []      # no OMP_WAIT_POLICY (nor anything else) set


def test_user_setting_is_kept():
    result = run_probe({**os.environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert result["changed"] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_kernels_load_no_openmp_runtime():
    """A libgomp loaded by rnnx would be the one PyTorch's libgomp.so.1 (same soname) binds
    to, with whatever settings it was loaded with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    assert run_probe(env)["libgomp"] is False
