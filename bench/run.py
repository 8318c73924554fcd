"""Benchmark rnnx against PyTorch, ONNX Runtime, JAX and plain NumPy (each when installed).

    python bench/run.py                      # full matrix, all cores
    python bench/run.py --quick              # smoke run, small shapes, < 1 min
    python bench/run.py --threads 1,2 --cases mnist,large --cells LSTM --phases train

Writes bench/results/latest.json, latest.md (also printed) and latest.png; see
bench/README.md for what the columns mean and how memory and the sgemm peak are measured.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _cases  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402

QUICK_CASES = ["tiny", "uneven"]
ENV_NOTED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "XLA_FLAGS")  # as the workers saw them


def _cores():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _list(choices):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items
    return parse


def _threads(text):
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints like 1,2; got {text!r}")
    return sorted(set(values))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=_list(list(_cases.CASES)), default=None,
                   help="comma-separated subset of: " + ", ".join(_cases.CASES)
                        + f" (default: all; --quick: {','.join(QUICK_CASES)})")
    p.add_argument("--cells", type=_list(_cases.CELLS), default=list(_cases.CELLS),
                   help="subset of LSTM,GRU,RNN (default: all)")
    p.add_argument("--phases", type=_list(_cases.PHASES), default=list(_cases.PHASES),
                   help="subset of train,infer (default: both)")
    p.add_argument("--libs", type=_list(_peers.LIBS), default=list(_peers.LIBS),
                   help="libraries to time (those not installed are skipped)")
    p.add_argument("--threads", type=_threads, default=[len(_cores())],
                   help="thread counts, e.g. 1,2 (default: all cores, %(default)s)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed rounds per case (default 7; --quick: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed rounds per case before --repeat is cut, to no fewer "
                        "than 3 rounds (default 20; --quick: 2)")
    p.add_argument("--quick", action="store_true",
                   help=f"small shapes, 3 rounds, cases {','.join(QUICK_CASES)} unless --cases")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    args = p.parse_args(argv)
    args.cases = args.cases or (QUICK_CASES if args.quick else list(_cases.CASES))
    args.repeat = args.repeat or (3 if args.quick else 7)
    args.budget = args.budget if args.budget is not None else (2.0 if args.quick else 20.0)
    return args


def worker_env(threads, cores):
    """Environment and CPU set of the worker for `threads` (see README: Threads)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # OpenBLAS's idle threads (NumPy's matmuls) spin for about 2^28 cycles by default, taking
    # the cores from whichever library is timed next; 2^4 makes them sleep at once, as the
    # OpenMP (PASSIVE) and ONNX Runtime threads do.
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    cpus = set(cores[:threads]) if threads < len(cores) else None
    return env, cpus


def run_worker(cfg, threads, cores, tmp):
    cfg = dict(cfg, threads=threads)
    config_path = os.path.join(tmp, f"config{threads}.json")
    out_path = os.path.join(tmp, f"out{threads}.json")
    with open(config_path, "w") as f:
        json.dump(cfg, f)
    env, cpus = worker_env(threads, cores)
    if threads > len(cores):
        print(f"warning: {threads} threads on {len(cores)} cores", file=sys.stderr)
    subprocess.run([sys.executable, os.path.join(HERE, "_worker.py"), config_path, out_path],
                   env=env, check=True, preexec_fn=cpus and (lambda: os.sched_setaffinity(0, cpus)))
    with open(out_path) as f:
        return json.load(f)


def run_memory(args, threads, cores):
    """Peak memory of rnnx's and PyTorch's training steps: a fresh process per library and
    case (libraries keep freed memory in caches of their own), as many at once as cores."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    jobs = [(lib, cell, name) for lib in ("rnnx", "torch")
            if lib in args.libs and _peers.available(lib)
            for cell in args.cells for name in args.cases
            if _cases.CASES[name].kind != "denormal"]  # denormal: same shapes as mnist

    def probe(job):
        return job, subprocess.run([sys.executable, os.path.join(HERE, "_memory.py"), job[0],
                                    "1" if args.quick else "0", str(threads), *job[1:]],
                                   env=env, capture_output=True, text=True)

    rows = []
    with concurrent.futures.ThreadPoolExecutor(len(cores)) as pool:
        for (lib, cell, name), proc in pool.map(probe, jobs):
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                print(f"memory probe {lib} {cell} {name} failed:\n{proc.stderr[-2000:]}",
                      file=sys.stderr)
                continue
            rows.append(json.loads(lines[-1]))
            print(f"memory {cell:4} {name:8} {lib:5} {rows[-1]['peak_mb']:.1f} MB",
                  file=sys.stderr)
    return rows


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    args = parse_args(argv)
    cores = _cores()
    skipped = {lib: "not installed" for lib in args.libs if not _peers.available(lib)}
    libs = [lib for lib in args.libs if lib not in skipped]
    if "rnnx" not in libs:
        sys.exit("rnnx must be importable")
    load_start = os.getloadavg()[0]
    cfg = dict(cells=args.cells, cases=args.cases, phases=args.phases, libs=libs,
               quick=args.quick, repeat=args.repeat, warmup=args.warmup, budget=args.budget,
               env_noted=ENV_NOTED)
    with tempfile.TemporaryDirectory() as tmp:
        workers = [run_worker(cfg, t, cores, tmp) for t in args.threads]
    peaks = {w["threads"]: w["sgemm_peak_gflops"] for w in workers}
    results = [r for w in workers for r in w["results"]]
    _report.derive(results, peaks)
    memory = []
    if not args.no_memory and "train" in args.phases:
        if args.quick:
            skipped["memory"] = "quick run: its shapes are too small for peak memory to mean " \
                                "anything (run without --quick)"
        elif sys.platform.startswith("linux"):
            memory = run_memory(args, max(args.threads), cores)
        else:
            skipped["memory"] = "peak-memory probes read /proc (Linux only)"
    versions = {lib: _peers.version(lib) for lib in ("rnnx", "numpy", "scipy", "torch",
                                                     "onnxruntime", "onnx", "jax")}
    data = {
        "meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "argv": sys.argv[1:] if argv is None else argv, "cpu": cpu_name(),
                 "cores": len(cores), "python": platform.python_version(),
                 "versions": versions, "threads": args.threads, "quick": args.quick,
                 "repeat": args.repeat, "warmup": args.warmup, "budget_s": args.budget,
                 "sgemm_n": workers[0]["sgemm_n"], "skipped": skipped,
                 "load_avg": {"start": load_start, "end": os.getloadavg()[0]},
                 "env": {f"threads={w['threads']}": w["env"] for w in workers},
                 "shapes": {name: vars(c.quick if args.quick else c.full)
                            for name, c in _cases.CASES.items() if name in args.cases},
                 "flops": "forward = sum over layers and directions of 2*N*G*H*(I_l + H), "
                          "N = sum(lengths), G = 4/3/1 gates; training = 3 * forward"},
        "sgemm_peak_gflops": {str(t): p for t, p in peaks.items()},
        "results": results,
        "memory": memory,
    }
    os.makedirs(args.out, exist_ok=True)
    if not args.no_plot:
        if not _peers.available("matplotlib"):
            skipped["chart"] = "matplotlib not installed (pip install matplotlib)"
        elif not any(r.get("vs_torch") for r in results):
            skipped["chart"] = "needs PyTorch timings (the chart is relative to PyTorch)"
        else:
            _report.plot(data, os.path.join(args.out, "latest.png"))
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(data, f, indent=1)
    text = _report.markdown(data)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
