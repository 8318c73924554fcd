"""A timing worker: `python _worker.py LIBS THREADS SHARED [PREIMPORT]` hosts the libraries LIBS
(comma-separated) at THREADS threads and answers requests from bench/_harness.py, one JSON
object per line on stdin, one reply per line on the pipe that was its stdout.

run.py's default ("separate" mode) starts one worker per library, so that each library runs
in a process of its own with its own defaults: only its thread count is set, and only that
library is imported (the reply to "info" lists which of rnnx, torch, onnxruntime, jax were in
sys.modules, so the report can show that no other worker imported rnnx). SHARED = 1 is the
in-process mode: one worker hosts every library, as the harness used to.

Requests ("op"):
- build: lib, cell, case, phase, variant, quick, outputs (a .npz path): build the runner of
  that library for the case, write its outputs for the agreement check, run `warmup` untimed
  calls, and more up to WARMUP_SECONDS; reply the fastest call's seconds.
- time: lib, variant, calls: run `calls` timed calls (garbage collector off); reply seconds.
- clear: drop the runners. info: modules and environment.
"""
import gc
import json
import os
import sys
import time
import traceback

import numpy as np

import _cases
import _peers

WARMUP_SECONDS = 0.05
WATCHED = ("rnnx", "torch", "onnxruntime", "jax")
ENV_NOTED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "XLA_FLAGS")


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Host:
    def __init__(self, libs, threads, shared):
        self.libs, self.threads, self.shared = libs, threads, shared
        self.runners = {}
        _peers.configure_threads(threads, libs)

    def build(self, req):
        case = _cases.CASES[req["case"]]
        shape = case.quick if req["quick"] else case.full
        variant = next(v for v in _cases.variants(case) if v.name == req["variant"])
        x, grad_out, lengths = _cases.make_inputs(shape, variant)
        runner = _peers.build(req["lib"], req["cell"], shape,
                              _cases.make_weights(req["cell"], shape), x, grad_out, lengths,
                              req["phase"], self.threads, quiet_threads=self.shared)
        np.savez(req["outputs"], **runner.outputs())
        # warm-up: `warmup` calls and at least WARMUP_SECONDS; the fastest sets the turn length
        times, start = [], time.perf_counter()
        while len(times) < req["warmup"] or (time.perf_counter() - start < WARMUP_SECONDS
                                             and len(times) < 100):
            times.append(_seconds(runner.step))
        self.runners[req["lib"], req["variant"]] = runner
        return {"call_s": min(times)}

    def time(self, req):
        step = self.runners[req["lib"], req["variant"]].step
        gc.collect()
        gc.disable()
        try:
            return {"times": [_seconds(step) for _ in range(req["calls"])]}
        finally:
            gc.enable()

    def clear(self, req):
        self.runners.clear()
        gc.collect()
        return {}

    def info(self, req):
        return {"libs": self.libs, "threads": self.threads, "pid": os.getpid(),
                "imported": {m: m in sys.modules for m in WATCHED},
                "env": {k: os.environ[k] for k in ENV_NOTED if k in os.environ}}


def main(libs, threads, shared, preimport=""):
    # the replies get the stdout pipe to themselves: anything a library prints goes to stderr
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for module in filter(None, preimport.split(",")):  # bench/import_effect.py
        __import__(module)
    host = Host(libs.split(","), int(threads), shared == "1")
    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = getattr(host, req["op"])(req)
        except Exception as exc:  # a library that fails on a case is reported, not fatal
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
