"""Benchmark rnnx against PyTorch, ONNX Runtime, JAX and plain NumPy (each when installed).

    python bench/run.py                      # full matrix, all cores
    python bench/run.py --quick              # smoke run, small shapes, < 1 min
    python bench/run.py --threads 1,2 --cases mnist,large --cells LSTM --phases train

Each library runs in a worker process of its own (bench/_worker.py), with its own defaults
and the same thread count; rounds alternate between the workers (bench/_harness.py);
`--mode shared` times them all in one process instead. Writes bench/results/latest.json,
latest.md (also printed) and latest.png; see bench/README.md for what the columns mean and
how the machine's limits (bench/machine.py) and memory are measured.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _cases  # noqa: E402
import _harness  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402

QUICK_CASES = ["tiny", "uneven"]
AGREE_TOL = 1e-3  # max |peer - rnnx| / max |rnnx| over out, grad_x, grad_weight_hh_l0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


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
    p.add_argument("--mode", choices=("separate", "shared"), default="separate",
                   help="separate (default): each library in a worker process of its own, "
                        "turns alternating between processes; shared: every library in one "
                        "process, as the harness once did (labelled in the report)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no-machine", action="store_true",
                   help="skip bench/machine.py (FMA peak, matrix-vector bandwidth): no "
                        "%% of peak nor bandwidth limit in the report")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    args = p.parse_args(argv)
    args.cases = args.cases or (QUICK_CASES if args.quick else list(_cases.CASES))
    args.repeat = args.repeat or (3 if args.quick else 7)
    args.budget = args.budget if args.budget is not None else (2.0 if args.quick else 20.0)
    return args


def worker_groups(libs, shared):
    """The libraries of each worker process: in separate mode one per library (rnnx's
    variants share rnnx's worker), in shared mode all in one."""
    if shared:
        return [libs]
    groups = {}
    for lib in libs:
        groups.setdefault("rnnx" if lib.startswith("rnnx") else lib, []).append(lib)
    return list(groups.values())


def run_case(cfg, workers, cell, case, phase, threads, tmp):
    """Build, check and time every library on every variant of one case; result dicts."""
    shape = case.quick if cfg["quick"] else case.full
    turns, rows, outputs = [], {}, {}
    for variant in _cases.variants(case):
        _, _, lengths = _cases.make_inputs(shape, variant)
        gflop = _cases.flops(cell, shape, lengths, phase) / 1e9
        for worker in workers:
            for lib in worker.libs:
                if phase == "train" and lib in _peers.INFER_ONLY:
                    continue
                row = dict(threads=threads, cell=cell, case=case.name, phase=phase,
                           variant=variant.name, lib=lib, gflop=gflop,
                           batch=shape.B, weight_gb=_cases.weight_bytes(cell, shape) / 1e9,
                           recurrent_kib=_cases.recurrent_bytes(cell, shape) / 1024)
                rows[lib, variant.name] = row
                path = os.path.join(tmp, f"{lib}-{variant.name}.npz".replace(" ", "_"))
                fields = dict(lib=lib, variant=variant.name)
                reply = worker.request("build", cell=cell, case=case.name, phase=phase,
                                       quick=cfg["quick"], warmup=cfg["warmup"], outputs=path,
                                       **fields)
                if "error" in reply:
                    row["error"] = reply["error"]
                    log(f"  {lib} failed on {cell} {case.name} {phase} {variant.name}: "
                        f"{reply['error']}")
                    continue
                with np.load(path) as f:
                    outputs[lib, variant.name] = dict(f)
                turns.append(((lib, variant.name), worker, fields, reply["call_s"]))
    for (lib, variant), out in outputs.items():
        reference = outputs.get(("rnnx", variant))
        if lib != "rnnx" and reference is not None:
            rows[lib, variant]["max_rel_err"] = _peers.max_rel_err(out, reference)
            rows[lib, variant]["agrees"] = rows[lib, variant]["max_rel_err"] <= AGREE_TOL
    timed = _harness.alternate(turns, cfg["repeat"], cfg["budget"])
    for key, t in timed.items():
        rows[key].update(median_ms=1e3 * statistics.median(t["rounds"]),
                         min_ms=1e3 * min(t["all"]), calls_per_round=t["calls"],
                         times_ms=[1e3 * s for s in t["rounds"]])
    for worker in workers:
        worker.request("clear")
    log(f"{cell:4} {case.name:8} {phase:5} " + "  ".join(
        f"{lib} {row['median_ms']:.3g}" for (lib, v), row in rows.items()
        if v == "main" and "median_ms" in row) + "  (ms)")
    return list(rows.values())


def run_threads(cfg, threads, cores):
    """Every case at one thread count: the workers, their results and what they imported."""
    workers = [_harness.Worker(group, threads, cores, cfg["shared"])
               for group in worker_groups(cfg["libs"], cfg["shared"])]
    if threads > len(cores):
        log(f"warning: {threads} threads on {len(cores)} cores")
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for cell in cfg["cells"]:
                for name in cfg["cases"]:
                    for phase in cfg["phases"]:
                        results += run_case(cfg, workers, cell, _cases.CASES[name], phase,
                                            threads, tmp)
        infos = [w.request("info") for w in workers]
    finally:
        for w in workers:
            w.close()
    return results, infos


def run_machine(args):
    """bench/machine.py in a process of its own (its BLAS threads must not outlive it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "machine.json")
        flags = ["--repeat", "1", "--seconds", "0.1", "--sgemm-n", "1024"] if args.quick else []
        subprocess.run([sys.executable, os.path.join(HERE, "machine.py"), "--threads",
                        ",".join(map(str, args.threads)), "--json", path, *flags],
                       check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
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
    machine = None if args.no_machine else run_machine(args)
    cfg = dict(cells=args.cells, cases=args.cases, phases=args.phases, libs=libs,
               quick=args.quick, repeat=args.repeat, warmup=args.warmup, budget=args.budget,
               shared=args.mode == "shared")
    results, workers = [], []
    for t in args.threads:
        rows, infos = run_threads(cfg, t, cores)
        results += rows
        workers += infos
    peaks, peak_source = _report.peaks(machine, args.threads)
    _report.derive(results, peaks, machine)
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
                 "mode": args.mode, "repeat": args.repeat, "warmup": args.warmup,
                 "budget_s": args.budget, "turn_s": _harness.TURN_SECONDS,
                 "skipped": skipped,
                 "load_avg": {"start": load_start, "end": os.getloadavg()[0]},
                 "workers": workers,
                 "shapes": {name: vars(c.quick if args.quick else c.full)
                            for name, c in _cases.CASES.items() if name in args.cases},
                 "flops": "forward = sum over layers and directions of 2*N*G*H*(I_l + H), "
                          "N = sum(lengths), G = 4/3/1 gates; training = 3 * forward",
                 "peak_source": peak_source},
        "machine": machine,
        "peak_gflops": {str(t): p for t, p in peaks.items()},
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
