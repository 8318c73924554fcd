"""Streaming inference latency: one time step per call, state carried, p50 / p99 per step.

    python bench/stream.py                 # the issue's table: 1 and 2 threads, B = 1, 16, 64
    python bench/stream.py --quick         # smoke run: 2 x 128, B = 1, 1 thread, few rounds
    python bench/stream.py --shapes 3x960 --batches 1 --threads 1

Model: an LSTM of L layers x H hidden (input size H) and a 32-wide Linear head on the last
step, float32, the same weights everywhere. Per call, each library takes x (1, B, H) and the
state and gives y (B, 32) and the new state:
  rnnx-stream  rnnx.Stream(freeze(Sequential(LSTM, LastTimeStep, Linear)), B).step(x)
  rnnx-call    out, hx = lstm(x, hx); y = head(out[-1])   (frozen modules)
  torch        the same under torch.inference_mode()
  onnxruntime  a session of rnnx.onnx.export(lstm) plus the head (Gather + Gemm), h/c fed back
  floor        not a library: the read rate (GB/s) of a float32 matrix-vector product over a
               matrix of the weights' bytes (bench/_probe.c through machine.py; NumPy's
               product without a C compiler); floor = weight bytes / that rate
Each library runs in a worker process of its own (_harness.worker_env: threads and CPU set
before import); _harness.alternate gives them turns of back-to-back calls in rounds, the
order rotated every round, waiting for the last worker's threads to go idle before the next
turn. p50 / p99 over every timed call.
Writes --out/stream.json and prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402
import machine  # noqa: E402

HEAD = 32
LIBS = ("rnnx-stream", "rnnx-call", "torch", "onnxruntime", "floor")
FULL_SHAPES = ("2x128", "3x256", "3x480", "6x320", "3x960")


def shape_of(text):
    layers, hidden = (int(v) for v in text.lower().split("x"))
    return layers, hidden


def weight_bytes(layers, hidden):
    """float32 bytes read per step: every LSTM layer's W_ih, W_hh (I = H) and the head."""
    return 4 * (layers * 4 * hidden * 2 * hidden + hidden * HEAD)


# -- worker side -----------------------------------------------------------------------------
def make_model(layers, hidden, seed=0):
    import rnnx
    rnnx.manual_seed(seed)
    return rnnx.LSTM(hidden, hidden, num_layers=layers), rnnx.Linear(hidden, HEAD)


def build(lib, layers, hidden, batch, workdir):
    """A step function x (1, B, H) -> y (B, HEAD), the state carried inside; and reset()."""
    import rnnx
    lstm, head = make_model(layers, hidden)
    if lib == "rnnx-stream":
        stream = rnnx.Stream(rnnx.freeze(rnnx.Sequential(lstm, rnnx.LastTimeStep(), head)),
                             batch_size=batch)
        return stream.step, stream.reset
    if lib == "rnnx-call":
        lstm, head = rnnx.freeze(lstm), rnnx.freeze(head)
        state = {}

        def step(x):
            out, state["hx"] = lstm(x, state.get("hx"))
            return head(out[-1])
        return step, state.clear
    if lib == "torch":
        import torch
        t_lstm = torch.nn.LSTM(hidden, hidden, num_layers=layers)
        t_head = torch.nn.Linear(hidden, HEAD)
        t_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
        t_head.load_state_dict({k: torch.from_numpy(v) for k, v in head.state_dict().items()})
        t_lstm.eval(), t_head.eval()
        state = {}

        def step(x):
            with torch.inference_mode():
                out, state["hx"] = t_lstm(torch.from_numpy(x), state.get("hx"))
                return t_head(out[-1]).numpy()
        return step, state.clear
    if lib == "onnxruntime":
        return onnx_session(lstm, head, layers, hidden, batch, workdir)
    raise ValueError(lib)


def onnx_session(lstm, head, layers, hidden, batch, workdir):
    import onnx
    import onnxruntime as ort
    import rnnx
    from onnx import helper, numpy_helper
    path = os.path.join(workdir, f"lstm_{layers}x{hidden}_{os.getpid()}.onnx")
    x = np.zeros((1, batch, hidden), np.float32)
    h = np.zeros((layers, batch, hidden), np.float32)
    rnnx.onnx.export(lstm.eval(), (x, (h, h)), path)
    model = onnx.load(path)
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.array(-1, np.int64), "last_step"),
                          numpy_helper.from_array(head.weight.data, "head_w"),
                          numpy_helper.from_array(head.bias.data, "head_b")])
    g.node.extend([helper.make_node("Gather", ["output", "last_step"], ["last"], axis=0),
                   helper.make_node("Gemm", ["last", "head_w", "head_b"], ["y"], transB=1)])
    g.output.insert(0, helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                     [batch, HEAD]))
    onnx.save(model, path)
    options = ort.SessionOptions()
    threads = int(os.environ["OMP_NUM_THREADS"])
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    zeros = np.zeros((layers, batch, hidden), np.float32)
    state = {"h0": zeros, "c0": zeros}
    names = ["y", "h_n", "c_n"]

    def step(x):
        y, state["h0"], state["c0"] = session.run(names, {"x": x, **state})
        return y

    def reset():
        state.update(h0=zeros, c0=zeros)
    return step, reset


def matvec_rate(nbytes):
    """A step timing a float32 matrix-vector product over a square matrix of ~nbytes (the
    floor without a C compiler), and the bytes it reads."""
    n = max(64, int((nbytes / 4) ** 0.5))
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    v = np.ones(n, np.float32)

    def step(_x):
        return a @ v
    return step, 4 * n * n


def worker(lib, layers, hidden, batch, workdir):
    """Serve _harness requests on stdin/stdout: {"op": "time", "calls": n} -> {"times": [n
    per-call seconds]}; first, a hello line with the outputs of three steps (the check)."""
    import rnnx
    threads = int(os.environ["OMP_NUM_THREADS"])
    rnnx.set_num_threads(threads)
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((8, 1, batch, hidden)).astype(np.float32)
    if lib == "numpy-matvec":
        step, read = matvec_rate(weight_bytes(layers, hidden))
        check = None
    else:
        step, reset = build(lib, layers, hidden, batch, workdir)
        check = [np.array(step(x)).tolist() for x in inputs[:3]]
        reset()
        read = weight_bytes(layers, hidden)
    print(json.dumps({"check": check, "bytes": read}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        times = []
        for i in range(request["calls"]):
            x = inputs[i % 8]
            t0 = time.perf_counter()
            step(x)
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times}), flush=True)


# -- parent side -----------------------------------------------------------------------------
class StreamWorker(_harness.Worker):
    """A worker process of this script for one library (the harness's settle and request)."""

    def __init__(self, lib, shape, batch, threads, cores, workdir):
        env, cpus = _harness.worker_env(threads, cores, False)
        layers, hidden = shape
        self.libs = [lib]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", lib, f"{layers}x{hidden}",
             str(batch), workdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, preexec_fn=cpus and (lambda: os.sched_setaffinity(0, cpus)))
        hello = self.proc.stdout.readline()
        if not hello:
            raise RuntimeError(f"{lib} worker failed (exit {self.proc.wait()})")
        self.hello = json.loads(hello)


def floor_rate(probe, nbytes, threads, seconds):
    """GB/s of bench/_probe.c's matrix-vector product over nbytes of float32 (best of 3)."""
    kib = max(1, nbytes // 1024)
    return max(machine._probe(probe, "matvec", threads, kib, seconds)["gbs"] for _ in range(3))


def run_case(shape, batch, threads, libs, rounds, budget, cores, probe, workdir, log):
    workers, rows = {}, {}
    timed = [lib for lib in libs if lib != "floor" or probe is None]
    try:
        for lib in timed:
            name = "numpy-matvec" if lib == "floor" else lib
            try:
                workers[lib] = StreamWorker(name, shape, batch, threads, cores, workdir)
            except Exception as exc:     # a library missing or failing is reported, not fatal
                rows[lib] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                log(f"  {lib}: {rows[lib]['error']}")
        turns = []
        for lib, w in workers.items():
            warm = w.request("time", calls=3)["times"]
            turns.append((lib, w, {}, float(np.median(warm))))
        timings = _harness.alternate(turns, rounds, budget)
        reference = workers["rnnx-stream"].hello["check"] if "rnnx-stream" in workers else None
        for lib, w in workers.items():
            t = np.array(timings[lib]["all"]) * 1e6
            p50 = float(np.percentile(t, 50))
            row = rows[lib] = {"p50_us": p50, "p99_us": float(np.percentile(t, 99)),
                               "calls": int(t.size), "gb_per_s": w.hello["bytes"] / (p50 * 1e3)}
            if w.hello["check"] is not None and reference is not None:
                row["max_abs_diff"] = float(np.max(np.abs(np.array(w.hello["check"]) -
                                                          np.array(reference))))
    finally:
        for w in workers.values():
            w.close()
    if "floor" in libs and probe is not None:
        rows["floor"] = {"gb_per_s": floor_rate(probe, weight_bytes(*shape), threads, 0.2),
                         "probe": "bench/_probe.c matvec"}
    return rows


def judge(row_set, layers, hidden):
    """The issue's targets for rnnx-stream at B = 1 (None where a figure is missing)."""
    ours, ort, floor = (row_set.get(k, {}) for k in ("rnnx-stream", "onnxruntime", "floor"))
    if "p50_us" not in ours:
        return {}
    floor_us = weight_bytes(layers, hidden) / (floor["gb_per_s"] * 1e3) if "gb_per_s" in floor \
        else None
    target = max(x for x in (0.5 * ort.get("p50_us", 0), 1.15 * (floor_us or 0)))
    return {"floor_us": floor_us, "target_p50_us": float(target) or None,
            "p50_met": bool(ours["p50_us"] <= target) if target else None,
            "p99_met": bool(ours["p99_us"] <= 2 * ours["p50_us"])}


def table(results):
    libs = [lib for lib in LIBS if lib != "floor"]
    lines = ["| threads | L x H | B | " + " | ".join(f"{lib} p50 / p99 µs" for lib in libs)
             + " | floor µs (GB/s) | rnnx-stream GB/s | target p50 µs | met |",
             "|" + "---|" * (len(libs) + 7)]
    for r in results:
        cells = []
        for lib in libs:
            row = r["libs"].get(lib, {})
            cells.append(f"{row['p50_us']:.0f} / {row['p99_us']:.0f}" if "p50_us" in row
                         else "–")
        floor = r["libs"].get("floor", {})
        j = r.get("targets", {})
        ours = r["libs"].get("rnnx-stream", {})
        floor_text = (f"{j['floor_us']:.0f} ({floor['gb_per_s']:.1f})"
                      if j.get("floor_us") else "–")
        met = "–" if j.get("p50_met") is None else (
            f"p50 {'yes' if j['p50_met'] else 'no'}, p99 {'yes' if j['p99_met'] else 'no'}")
        lines.append(f"| {r['threads']} | {r['layers']}x{r['hidden']} | {r['batch']} | "
                     + " | ".join(cells) + f" | {floor_text} | "
                     f"{ours.get('gb_per_s', 0):.1f} | "
                     f"{j['target_p50_us']:.0f} | {met} |" if j.get("target_p50_us") else
                     f"| {r['threads']} | {r['layers']}x{r['hidden']} | {r['batch']} | "
                     + " | ".join(cells) + f" | {floor_text} | – | – | – |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2x128, B = 1, 1 thread")
    p.add_argument("--shapes", default=",".join(FULL_SHAPES), help="LxH list")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--libs", default=",".join(LIBS))
    p.add_argument("--rounds", type=int, help="timed rounds per case (30; --quick 4)")
    p.add_argument("--budget", type=float,
                   help="seconds of rounds per case, never below 3 rounds (20; --quick 2)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.batches, args.threads = "2x128", "1", "1"
    for name, full, quick in (("rounds", 30, 4), ("budget", 20.0, 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv=None):
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    libs = [lib for lib in args.libs.split(",") if lib]
    unknown = set(libs) - set(LIBS)
    if unknown:
        raise SystemExit(f"--libs: unknown {sorted(unknown)}; choose from {', '.join(LIBS)}")
    results = []
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as workdir:
        probe, how = machine.compile_probe(workdir)
        if probe is None:
            log(f"floor: {how}; NumPy's matrix-vector product instead")
        for threads in (int(t) for t in args.threads.split(",")):
            for text in args.shapes.split(","):
                layers, hidden = shape_of(text)
                for batch in (int(b) for b in args.batches.split(",")):
                    log(f"threads {threads}, {layers}x{hidden}, B = {batch}")
                    rows = run_case((layers, hidden), batch, threads, libs, args.rounds,
                                    args.budget, cores, probe, workdir, log)
                    r = {"threads": threads, "layers": layers, "hidden": hidden,
                         "batch": batch, "weight_bytes": weight_bytes(layers, hidden),
                         "libs": rows}
                    r["targets"] = judge(rows, layers, hidden)
                    results.append(r)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "stream.json"), "w") as f:
        json.dump({"quick": args.quick, "results": results}, f, indent=1)
    md = table(results)
    if args.quick:
        md = "**Quick run (smoke test): few rounds, not a measurement.**\n\n" + md
    print(md)
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        lib, shape, batch, workdir = sys.argv[2:6]
        worker(lib, *shape_of(shape), int(batch), workdir)
    else:
        main()
