"""Start-up costs of rnnx beside PyTorch's: `import` time and the first call's time.

Each measurement runs in a fresh Python process (nothing imported or cached before it):
the time of `import rnnx` (`import torch`), then of building the MNIST model (LSTM, input 28,
hidden 128, 2 layers) and running its first inference call on a (28, 128, 28) batch, then of
a second call (steady state, for comparison). The first call includes whatever a library
does lazily (rnnx: nothing is compiled at run time; its kernels are built at install).
Medians over --repeat processes, as a Markdown table on stdout.

    python bench/startup.py [--repeat 5] [--libs rnnx,torch]
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in the child: prints {"import": s, "first": s, "second": s}.
CHILD = {
    "rnnx": """
import time
t0 = time.perf_counter()
import rnnx
t1 = time.perf_counter()
import numpy as np
x = np.random.default_rng(0).standard_normal((28, 128, 28)).astype(np.float32)
t2 = time.perf_counter()
m = rnnx.LSTM(28, 128, num_layers=2).eval()
m(x)
t3 = time.perf_counter()
m(x)
t4 = time.perf_counter()
""",
    "torch": """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import numpy as np
x = torch.from_numpy(np.random.default_rng(0).standard_normal((28, 128, 28)).astype(np.float32))
t2 = time.perf_counter()
m = torch.nn.LSTM(28, 128, num_layers=2).eval()
with torch.inference_mode():
    m(x)
t3 = time.perf_counter()
with torch.inference_mode():
    m(x)
t4 = time.perf_counter()
""",
}
REPORT = """
import json
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "second": t4 - t3}))
"""


def measure(lib):
    """One fresh process: {"import", "first", "second"} seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", CHILD[lib] + REPORT], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{lib}: the start-up probe failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results):
    """Markdown table of the medians, milliseconds."""
    lines = ["| library | `import` (ms) | model + first call (ms) | second call (ms) |",
             "| --- | --- | --- | --- |"]
    for lib, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}
        lines.append(f"| {lib} | {med['import']:.0f} | {med['first']:.1f} | "
                     f"{med['second']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per library")
    parser.add_argument("--libs", default="rnnx,torch",
                        help="subset of rnnx,torch (torch skipped when not installed)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    unknown = sorted(set(libs) - set(CHILD))
    if unknown:
        parser.error(f"unknown libraries {unknown}; expected a subset of {sorted(CHILD)}")
    results, skipped = {}, []
    for lib in libs:
        if lib != "rnnx" and importlib.util.find_spec(lib) is None:
            skipped.append(lib)
            continue
        # interleaved with the other libraries' processes, round by round
        results[lib] = []
    for _ in range(args.repeat):
        for lib in results:
            results[lib].append(measure(lib))
    print(f"Start-up, medians of {args.repeat} fresh processes each (MNIST model: LSTM 28 -> "
          "128, 2 layers, inference on (28, 128, 28)):\n")
    print(table(results))
    if skipped:
        print(f"\nNot installed, skipped: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
