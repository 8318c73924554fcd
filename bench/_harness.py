"""The timing harness: worker processes (_worker.py), rounds alternating between them, medians.

Every case is timed in rounds. A round gives each (library, variant) one turn, in an order
rotated by one each round; a turn is `calls` back-to-back calls in that library's worker
(enough calls for about TURN_SECONDS, at least 1), and its figure is their median. The
reported time is the median over rounds of the turns' figures. Before a turn in another
worker, the harness waits until the previous worker has gone idle (its threads used less than
SETTLE_BUSY of a core over the last SETTLE_WINDOW seconds; Linux, else a fixed pause), so
that threads still spinning after their library's last call (OpenMP's default, ONNX
Runtime's) do not take the cores from the next library.
"""
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TURN_SECONDS = 0.05
MAX_CALLS = 200
SETTLE_WINDOW = 0.005
SETTLE_BUSY = 0.05
SETTLE_MAX = 2.0


def worker_env(threads, cores, shared):
    """Environment and CPU set of a worker at `threads` threads: the thread-count variables,
    and nothing else in separate mode. The in-process mode (`shared`) also makes OpenBLAS's
    idle threads sleep at once, since they would spin into the next library's turn."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if shared:
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if threads == 1:  # JAX reads its thread settings once, at import
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    cpus = set(cores[:threads]) if threads < len(cores) else None
    return env, cpus


class Worker:
    """A _worker.py process hosting `libs` at `threads` threads; request() sends one request
    and returns its reply. `env`: variables to set (None: unset) on top of worker_env's;
    `preimport`: modules the worker imports before its libraries."""

    def __init__(self, libs, threads, cores, shared=False, env=None, preimport=()):
        base_env, cpus = worker_env(threads, cores, shared)
        self.libs = list(libs)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_worker.py"), ",".join(libs), str(threads),
             "1" if shared else "0", ",".join(preimport)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={k: v for k, v in {**base_env, **(env or {})}.items() if v is not None},
            preexec_fn=cpus and (lambda: os.sched_setaffinity(0, cpus)))

    def request(self, op, **fields):
        self.proc.stdin.write(json.dumps(dict(fields, op=op)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {','.join(self.libs)} exited "
                               f"(code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def cpu_seconds(self):
        """CPU time of all the worker's threads (Linux schedstat, ns resolution), or None."""
        total = 0
        try:
            task_dir = f"/proc/{self.proc.pid}/task"
            for tid in os.listdir(task_dir):
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return total / 1e9

    def settle(self):
        """Wait until this worker's threads are idle (see the module docstring); seconds."""
        start = time.perf_counter()
        before = self.cpu_seconds()
        if before is None:
            time.sleep(0.05)
            return 0.05
        while time.perf_counter() - start < SETTLE_MAX:
            time.sleep(SETTLE_WINDOW)
            after = self.cpu_seconds()
            if after - before < SETTLE_BUSY * SETTLE_WINDOW:
                break
            before = after
        return time.perf_counter() - start

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def calls_per_turn(call_seconds):
    return max(1, min(MAX_CALLS, int(TURN_SECONDS / max(call_seconds, 1e-9))))


def alternate(turns, repeat, budget):
    """Time `turns` [(key, worker, request fields, seconds per call)] in rounds; returns
    {key: {"rounds": [median seconds of each turn], "calls": n, "all": [every call]}}.

    Rounds: `repeat`, cut (to no fewer than 3) so that they fit in about `budget` seconds
    (None: no cut), judged by the warm-up call times."""
    plan = [(key, worker, fields, calls_per_turn(call_s)) for key, worker, fields, call_s in turns]
    round_s = sum(calls * call_s for (_, _, _, calls), (*_, call_s) in zip(plan, turns))
    rounds = repeat if budget is None else max(3, min(repeat, int(budget / max(round_s, 1e-9))))
    out = {key: {"rounds": [], "calls": calls, "all": []} for key, _, _, calls in plan}
    previous = None
    for r in range(rounds):
        k = r % len(plan)
        for key, worker, fields, calls in plan[k:] + plan[:k]:
            if previous is not None and previous is not worker:
                previous.settle()
            times = worker.request("time", calls=calls, **fields)["times"]
            previous = worker
            out[key]["rounds"].append(statistics.median(times))
            out[key]["all"] += times
    return out
