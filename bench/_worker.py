"""Times every selected case at one thread count: `python _worker.py CONFIG.json OUT.json`.

run.py starts one worker per thread count, with the CPU affinity and environment (XLA_FLAGS,
OMP/OPENBLAS/MKL_NUM_THREADS) already set, because JAX reads its thread settings once, at
import. Within a worker the libraries are interleaved: each round times every (library,
variant) of a case once, in an order rotated by one each round, so that drift and noise
hit all of them alike; the reported figure is the median over the rounds.
"""
import gc
import json
import os
import sys
import time

import numpy as np

import _cases
import _peers

AGREE_TOL = 1e-3  # max |peer - rnnx| / max |rnnx| over out, grad_x, grad_weight_hh_l0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sgemm_peak(n, reps):
    """Best float32 n x n x n NumPy matmul rate in GFLOP/s (BLAS at the configured threads).

    Measured before and after the cases; the sgemm peak is the better of the two."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(items, warmup, repeat, budget):
    """Interleaved rounds over items [(key, step)]; returns {key: [seconds per round]}.

    The number of timed rounds is `repeat`, cut (to no fewer than 3) so that the rounds
    fit in about `budget` seconds, judged by the last warm-up round.
    """
    round_time = 0.0
    for _ in range(warmup):
        round_time = sum(_time(step) for _, step in items)
    reps = max(3, min(repeat, int(budget / max(round_time, 1e-9))))
    times = {key: [] for key, _ in items}
    gc.collect()
    gc.disable()
    try:
        for r in range(reps):
            k = r % len(items)
            for key, step in items[k:] + items[:k]:
                times[key].append(_time(step))
    finally:
        gc.enable()
    return times


def run_case(cfg, cell, case, phase, threads):
    """Build, check and time every library on every variant of one case; result dicts."""
    shape = case.quick if cfg["quick"] else case.full
    weights = _cases.make_weights(cell, shape)
    libs = [lib for lib in cfg["libs"] if not (phase == "train" and lib in _peers.INFER_ONLY)]
    items, rows = [], {}
    for variant in _cases.variants(case):
        x, grad_out, lengths = _cases.make_inputs(shape, variant)
        gflop = _cases.flops(cell, shape, lengths, phase) / 1e9
        reference = None
        for lib in libs:
            row = dict(threads=threads, cell=cell, case=case.name, phase=phase,
                       variant=variant.name, lib=lib, gflop=gflop)
            rows[lib, variant.name] = row
            try:
                runner = _peers.build(lib, cell, shape, weights, x, grad_out, lengths, phase,
                                      threads)
                outputs = runner.outputs()
                if lib == "rnnx":
                    reference = outputs
                elif reference is not None:
                    row["max_rel_err"] = _peers.max_rel_err(outputs, reference)
                    row["agrees"] = row["max_rel_err"] <= AGREE_TOL
                items.append(((lib, variant.name), runner.step))
            except Exception as exc:  # a peer that fails on a case is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                log(f"  {lib} failed on {cell} {case.name} {phase} {variant.name}: {row['error']}")
    times = measure(items, cfg["warmup"], cfg["repeat"], cfg["budget"])
    for key, ts in times.items():
        rows[key].update(median_ms=1e3 * float(np.median(ts)), min_ms=1e3 * min(ts),
                         times_ms=[1e3 * t for t in ts])
    log(f"{cell:4} {case.name:8} {phase:5} " + "  ".join(
        f"{lib} {row['median_ms']:.3g}" for (lib, v), row in rows.items()
        if v == "main" and "median_ms" in row) + "  (ms)")
    return list(rows.values())


def main(config_path, out_path):
    with open(config_path) as f:
        cfg = json.load(f)
    threads = cfg["threads"]
    _peers.configure_threads(threads, cfg["libs"])
    n, reps = (1024, 3) if cfg["quick"] else (2048, 5)
    first = sgemm_peak(n, reps)
    log(f"threads={threads}: sgemm {first:.1f} GFLOP/s (NumPy float32 {n}^3 matmul)")
    results = []
    for cell in cfg["cells"]:
        for name in cfg["cases"]:
            for phase in cfg["phases"]:
                results += run_case(cfg, cell, _cases.CASES[name], phase, threads)
    last = sgemm_peak(n, reps)
    log(f"threads={threads}: sgemm {last:.1f} GFLOP/s after the cases")
    with open(out_path, "w") as f:
        json.dump({"threads": threads, "sgemm_peak_gflops": max(first, last), "sgemm_n": n,
                   "env": {k: os.environ[k] for k in cfg["env_noted"] if k in os.environ},
                   "results": results}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
