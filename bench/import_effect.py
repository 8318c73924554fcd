"""Does one library's presence or setting change another's speed? Two worker processes that
differ in one thing time the same cases, turns alternating (bench/_harness.py), medians.

    python bench/import_effect.py                  # PyTorch alone vs after `import rnnx`
    python bench/import_effect.py --compare policy --lib rnnx   # rnnx: OpenMP default vs
                                                                # OMP_WAIT_POLICY=PASSIVE
    python bench/import_effect.py --compare tree --other /work/main --lib rnnx
                                            # this tree's rnnx vs another build's
    python bench/import_effect.py --cases mnist,mnist1 --cells LSTM --rounds 9 --launches 3

--compare import: worker A hosts --lib (default torch) alone; worker B imports rnnx first, then
the same library. --compare policy: worker A has OMP_WAIT_POLICY unset, B has it =PASSIVE.
--compare tree: B imports from the source tree --other (PYTHONPATH), A as this process does.
Each launch starts a fresh pair; the ratio B / A is reported per case, with the median over
launches. A ratio near 1 (within the launches' spread) means no effect.
"""
import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _harness  # noqa: E402

COMPARISONS = {
    "import": ("alone", "after import rnnx", {}, ("rnnx",)),
    "policy": ("OMP_WAIT_POLICY unset", "OMP_WAIT_POLICY=PASSIVE",
               {"OMP_WAIT_POLICY": "PASSIVE"}, ()),
    "tree": ("this tree", "the --other tree", {}, ()),
}


def one_launch(args, cores, tmp):
    """{(cell, case, phase): (median seconds in A, in B)} for one fresh pair of workers."""
    _, _, env_b, preimport_b = COMPARISONS[args.compare]
    if args.compare == "tree":
        env_b = {"PYTHONPATH": os.path.abspath(args.other)}
    a = _harness.Worker([args.lib], args.threads, cores, env={"OMP_WAIT_POLICY": None})
    b = _harness.Worker([args.lib], args.threads, cores,
                        env={"OMP_WAIT_POLICY": None, **env_b}, preimport=preimport_b)
    result, infos = {}, []
    try:
        for cell in args.cells:
            for name in args.cases:
                for phase in args.phases:
                    fields = dict(lib=args.lib, variant="main")
                    turns = []
                    for label, worker in (("A", a), ("B", b)):
                        reply = worker.request(
                            "build", cell=cell, case=name, phase=phase, quick=args.quick,
                            warmup=1, outputs=os.path.join(tmp, f"{label}.npz"), **fields)
                        if "error" in reply:
                            sys.exit(f"{args.lib} failed on {cell} {name} {phase}: "
                                     f"{reply['error']}")
                        turns.append((label, worker, fields, reply["call_s"]))
                    timed = _harness.alternate(turns, args.rounds, budget=None)
                    result[cell, name, phase] = tuple(
                        statistics.median(timed[label]["rounds"]) for label in "AB")
                    for w in (a, b):
                        w.request("clear")
        infos = [a.request("info"), b.request("info")]
    finally:
        a.close()
        b.close()
    return result, infos


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare", choices=list(COMPARISONS), default="import")
    p.add_argument("--lib", default="torch", help="the library timed (default torch)")
    p.add_argument("--other", help="--compare tree: the other source tree (a directory)")
    p.add_argument("--cells", default="LSTM", type=lambda s: s.split(","))
    p.add_argument("--cases", default="mnist,mnist1", type=lambda s: s.split(","),
                   help="default mnist,mnist1: training at batch 128, inference at batch 1")
    p.add_argument("--phases", default="train,infer", type=lambda s: s.split(","))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--rounds", type=int, default=7, help="alternating turns per launch")
    p.add_argument("--launches", type=int, default=3, help="fresh pairs of workers")
    p.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    args = p.parse_args(argv)
    label_a, label_b, _, _ = COMPARISONS[args.compare]
    cores = sorted(os.sched_getaffinity(0))
    launches, infos = [], []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.launches):
            result, info = one_launch(args, cores, tmp)
            launches.append(result)
            infos += info
            print(f"launch {n + 1}: " + "; ".join(
                f"{' '.join(k)} {1e3 * ta:.3g} / {1e3 * tb:.3g} ms"
                for k, (ta, tb) in result.items()), file=sys.stderr)
    print(f"{args.lib} at {args.threads} threads: A = {label_a}, B = {label_b}; each a worker "
          f"process of its own, {args.rounds} alternating turns per launch, {args.launches} "
          f"launches; 1-minute load average {load_start:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end{' (quick shapes)' if args.quick else ''}.")
    for info in infos[:2]:
        print("- worker imported: " + ", ".join(m for m, yes in info["imported"].items() if yes)
              + "; env " + ", ".join(f"{k}={v}" for k, v in info["env"].items()))
    print()
    print("| case | A ms (median of launches) | B ms | B / A per launch | B / A median |")
    print("|:---|---:|---:|:---|---:|")
    for key in launches[0]:
        ratios = [r[key][1] / r[key][0] for r in launches]
        print(f"| {' '.join(key)} | {1e3 * statistics.median(r[key][0] for r in launches):.3g} "
              f"| {1e3 * statistics.median(r[key][1] for r in launches):.3g} | "
              + ", ".join(f"{x:.2f}" for x in ratios) + f" | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
