"""Data-parallel training step of the rnnx-mnist model (2-layer LSTM, hidden 128, global batch
128 of 28x28 float32 images, SGD with momentum) on 1 rank vs N ranks under mpiexec: the step
time, and the share of it spent reducing gradients.

    python bench/distributed.py                    # 1 rank (all cores) vs 2 ranks (their share)
    python bench/distributed.py --ranks 1,2,4 --rounds 9 --json bench/results/distributed.json

Each world size runs as `mpiexec -n N python bench/distributed.py --worker`. A round is
`--steps` training steps after a barrier; the job's time is the slowest rank's. Rounds with
gradient reduction (ddp.backward) alternate with rounds without (under ddp.no_sync(), the same
work minus the communication), so that a busy machine disturbs both alike. Reported (medians):
the step time with reduction and without; the reduction alone (ddp.reduce_gradients() after a
barrier: the communication itself) and its share of the step; and the time backward waits for
the reductions after its last child (communication not overlapped, plus waiting for a slower
rank).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    """One rank: time the rounds, print the job's result as JSON from rank 0."""
    sys.path.insert(0, ROOT)
    import rnnx
    import rnnx.distributed as dist
    from rnnx.mnist import RUN_DEFAULTS, build_model

    dist.init_process_group()
    if args.threads:
        rnnx.set_num_threads(args.threads)
    rank, world = dist.get_rank(), dist.get_world_size()
    rnnx.manual_seed(0)
    ddp = rnnx.DistributedDataParallel(build_model(RUN_DEFAULTS))
    waited = [0.0]
    finish = ddp._finish

    def timed_finish(buckets):
        t0 = time.perf_counter()
        finish(buckets)
        waited[0] += time.perf_counter() - t0

    ddp._finish = timed_finish
    data = np.random.default_rng(rank)
    local = args.batch // world
    x = data.standard_normal((local, 28, 28)).astype(np.float32)
    y = data.integers(0, 10, local)
    optimizer = rnnx.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    loss_fn = rnnx.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        loss_fn(ddp(x), y)
        ddp.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()

    def round_seconds(sync):
        dist.barrier()
        t0 = time.perf_counter()
        if sync:
            for _ in range(args.steps):
                step()
        else:
            with ddp.no_sync():
                for _ in range(args.steps):
                    step()
        seconds = np.array([(time.perf_counter() - t0) / args.steps])
        dist.all_reduce(seconds, op="max")
        return float(seconds[0])

    def reduce_seconds():
        """The reduction alone (every rank ready, after a barrier): its communication cost."""
        total = 0.0
        for _ in range(args.steps):
            dist.barrier()
            t0 = time.perf_counter()
            ddp.reduce_gradients()
            total += time.perf_counter() - t0
        seconds = np.array([total / args.steps])
        dist.all_reduce(seconds, op="max")
        return float(seconds[0])

    for sync in (True, False):  # warm-up
        round_seconds(sync)
    sync_times, nosync_times, waits, reduces = [], [], [], []
    for _ in range(args.rounds):
        waited[0] = 0.0
        sync_times.append(round_seconds(True))
        wait = np.array([waited[0] / args.steps])
        dist.all_reduce(wait, op="max")
        waits.append(float(wait[0]))
        nosync_times.append(round_seconds(False))
        reduces.append(reduce_seconds())
    if rank == 0:
        numel = sum(p.data.size for p in ddp.parameters())
        print(json.dumps({
            "ranks": world, "threads_per_rank": rnnx.get_num_threads(), "global_batch": args.batch,
            "parameters": numel, "buckets": len([b for bs in ddp._buckets or [] for b in bs]),
            "step_ms": 1e3 * statistics.median(sync_times),
            "no_sync_step_ms": 1e3 * statistics.median(nosync_times),
            "reduce_wait_ms": 1e3 * statistics.median(waits),
            "reduce_only_ms": 1e3 * statistics.median(reduces),
            "step_ms_rounds": [1e3 * t for t in sync_times],
            "no_sync_step_ms_rounds": [1e3 * t for t in nosync_times],
        }), flush=True)


def launch(ranks, args):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.access(mpiexec, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit('bench/distributed.py: mpiexec not found: pip install "rnnx[distributed]"')
    command = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
               "--batch", str(args.batch), "--steps", str(args.steps), "--rounds",
               str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench/distributed.py: {ranks} ranks failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2", help="world sizes to time (default: 1,2)")
    parser.add_argument("--batch", type=int, default=128, help="global batch (default: 128)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round (default: 10)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--threads", type=int,
                        help="threads per rank (default: each rank's share of the cores)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = [launch(int(n), args) for n in args.ranks.split(",")]
    base = results[0]["step_ms"]
    print(f"rnnx-mnist model, global batch {args.batch}, median of {args.rounds} rounds of "
          f"{args.steps} steps")
    print("| ranks | threads/rank | step ms | vs first | no-sync step ms | reduction alone ms "
          "(share of step) | backward's wait ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['ranks']} | {r['threads_per_rank']} | {r['step_ms']:.1f} | "
              f"{r['step_ms'] / base:.2f}x | {r['no_sync_step_ms']:.1f} | "
              f"{r['reduce_only_ms']:.2f} ({r['reduce_only_ms'] / r['step_ms']:.1%}) | "
              f"{r['reduce_wait_ms']:.2f} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
