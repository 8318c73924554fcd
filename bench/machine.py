"""The machine's limits: peak float32 FMA rate, NumPy's sgemm, and the read bandwidth of a
float32 matrix-vector product from L2 / L3 / memory, at 1 and N threads.

    python bench/machine.py                    # threads 1 and all cores, a Markdown table
    python bench/machine.py --threads 1,2 --json bench/results/machine.json

FMA and matrix-vector probes are bench/_probe.c, compiled here (`cc -O2 -march=native
-fopenmp`, $CC if set); without a C compiler they are skipped and said so. Every figure is the
best of --repeat runs (a busy moment only lowers a run). bench/run.py runs this script once, in
a process of its own, and reports each case's GFLOP/s against the FMA peak and, for inference
at batch <= 16, the weight bytes read per second against the matrix-vector bandwidth.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MATVEC_KIB = (256, 1024, 4096, 16384, 65536)  # L2, L2/L3 edge, L3, L3, memory (on most CPUs)


def compile_probe(directory):
    """Path of the compiled _probe.c, or (None, why) when it does not compile."""
    exe = os.path.join(directory, "probe")
    cc = shlex.split(os.environ.get("CC", "cc"))
    for flags in (["-O2", "-march=native", "-fopenmp"], ["-O2", "-fopenmp"]):
        try:
            proc = subprocess.run(cc + flags + [os.path.join(HERE, "_probe.c"), "-o", exe],
                                  capture_output=True, text=True)
        except OSError as exc:
            return None, f"no C compiler ({exc})"
        if proc.returncode == 0:
            return exe, " ".join(cc + flags)
    return None, "the C compiler failed: " + proc.stderr[-500:]


def _probe(exe, *args):
    out = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def sgemm_gflops(threads, n, repeat):
    """NumPy float32 n^3 matmul at `threads` BLAS threads (threadpoolctl), in a fresh process
    so that BLAS's idle threads do not outlive the measurement."""
    code = f"""
import time, numpy as np
try:
    from threadpoolctl import threadpool_limits
    threadpool_limits({threads})
except ImportError:
    pass
rng = np.random.default_rng(0)
a, b = (rng.standard_normal(({n}, {n})).astype(np.float32) for _ in range(2))
a @ b
best = float("inf")
for _ in range({repeat}):
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(2 * {n} ** 3 / best / 1e9)
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


def measure(threads_list, repeat=3, seconds=0.3, sgemm_n=2048):
    """{"fma_gflops": {t: ...}, "sgemm_gflops": {t: ...}, "matvec_gbs": {t: {kib: ...}},
    "compiler": ..., "notes": [...]}; thread counts as strings (JSON keys)."""
    result = {"fma_gflops": {}, "sgemm_gflops": {}, "matvec_gbs": {}, "sgemm_n": sgemm_n,
              "repeat": repeat, "seconds": seconds, "notes": []}
    with tempfile.TemporaryDirectory() as tmp:
        exe, how = compile_probe(tmp)
        result["compiler"] = how
        if exe is None:
            result["notes"].append(f"FMA and matrix-vector probes skipped: {how}")
        for t in threads_list:
            key = str(t)
            if exe is not None:
                result["fma_gflops"][key] = max(_probe(exe, "fma", t, seconds)["gflops"]
                                                for _ in range(repeat))
                result["matvec_gbs"][key] = {
                    str(kib): max(_probe(exe, "matvec", t, kib, seconds)["gbs"]
                                  for _ in range(repeat)) for kib in MATVEC_KIB}
            result["sgemm_gflops"][key] = sgemm_gflops(t, sgemm_n, repeat)
    return result


def markdown(result):
    threads = list(result["sgemm_gflops"])
    lines = [f"Machine limits, best of {result['repeat']} runs of {result['seconds']} s each "
             f"(`bench/machine.py`, probes compiled with `{result['compiler']}`):", "",
             "| threads | FMA peak GFLOP/s | NumPy sgemm GFLOP/s ("
             f"{result['sgemm_n']}³) | " + " | ".join(
                 f"matvec {_size(kib)} GB/s" for kib in MATVEC_KIB) + " |",
             "|---:|---:|---:|" + "---:|" * len(MATVEC_KIB)]
    for t in threads:
        fma = result["fma_gflops"].get(t)
        mv = result["matvec_gbs"].get(t, {})
        lines.append(f"| {t} | {fma:.1f} | " if fma else f"| {t} | – | ")
        lines[-1] += f"{result['sgemm_gflops'][t]:.1f} | " + " | ".join(
            f"{mv[str(kib)]:.1f}" if str(kib) in mv else "–" for kib in MATVEC_KIB) + " |"
    return "\n".join(lines + [""] + [f"- {n}" for n in result["notes"]])


def _size(kib):
    return f"{kib // 1024} MiB" if kib >= 1024 else f"{kib} KiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default=None, help="thread counts (default: 1 and all cores)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.3, help="per probe run (default 0.3)")
    p.add_argument("--sgemm-n", type=int, default=2048)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = ([int(s) for s in args.threads.split(",")] if args.threads
               else sorted({1, cores}))
    start = time.perf_counter()
    result = measure(threads, args.repeat, args.seconds, args.sgemm_n)
    result["load_avg"] = os.getloadavg()[0]
    print(markdown(result))
    print(f"({time.perf_counter() - start:.0f} s; 1-minute load average "
          f"{result['load_avg']:.2f})", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
