"""What README's "Guarantees" section states: fork safety, concurrent callers, bounded scratch.

The checks that need a fresh process (fork, resident memory) run a script in a subprocess
with the worktree's rnnx on its path and a timeout, so a hang fails the test instead of
stalling the suite.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import rnnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(code, timeout=120):
    """Run `code` in a fresh Python with this rnnx and return its stdout; the test fails if
    it fails or is still running after `timeout` s (then its whole process group, forked
    children included, is killed)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running after {timeout} s (hung)")
    assert proc.returncode == 0, err
    return out


# ---------------------------------------------------------------------------------------
# fork

FORK_SCRIPT = """
    import multiprocessing as mp
    import numpy as np
    import rnnx

    def work(i):
        rnnx.manual_seed(0)
        out = []
        for B in (1, 64):    # batch 1: a team split by hidden units; 64: row blocks
            m = rnnx.nn.LSTM(28, 256, bidirectional=B == 64)
            y, _ = m(np.ones((20, B, 28), np.float32))
            m.backward(np.ones_like(y))
            out.append(float(y.sum()))
        return rnnx.get_num_threads(), out

    if __name__ == "__main__":
        rnnx.set_num_threads(2)
        parent = work(0)
        with mp.get_context("fork").Pool(2) as pool:
            children = pool.map(work, range(2))
        assert parent[0] == 2 and rnnx.get_num_threads() == 2
        for threads, out in children:
            assert threads == 1 and out == parent[1], (children, parent)
        print("ok")
"""


def test_forked_child_runs_kernels_on_one_thread(tmp_path):
    """A fork Pool after 2-thread kernel calls (team and row blocks) does not hang: children
    run on one thread, with results equal to the parent's."""
    script = tmp_path / "fork_pool.py"
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    assert run_script(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')",
                      timeout=60).strip() == "ok"


def test_forked_child_refuses_more_threads():
    """In a forked child, set_num_threads(n > 1) raises instead of hanging later; 1 is fine."""
    out = run_script("""
        import os, rnnx
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                rnnx.set_num_threads(2)
                code = 3
            except RuntimeError as e:
                code = 0 if "forked process" in str(e) and "spawn" in str(e) else 4
            rnnx.set_num_threads(1)
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), rnnx.get_num_threads() >= 1)
    """, timeout=60)
    assert out.split() == ["0", "True"]


# ---------------------------------------------------------------------------------------
# bounded scratch

def test_pool_matches_buffers_by_capacity():
    """A released buffer serves any later request from half its size up to its size, in
    any shape and dtype; the view is C-contiguous and of the requested shape and dtype."""
    from rnnx._workspace import BufferPool
    pool = BufferPool()
    a = pool.take((100, 1000), np.float32)
    pool.give(a)
    b = pool.take((30, 1000), np.float64)       # 240 kB of a 400 kB buffer
    assert b.shape == (30, 1000) and b.dtype == np.float64 and b.flags.c_contiguous
    assert np.shares_memory(a, b)
    b[...] = 1.5
    pool.give(b)
    c = pool.take((10, 1000), np.float32)       # 40 kB: less than half, a buffer of its own
    assert not np.shares_memory(b, c)
    pool.give(c)
    pool.give(pool.take((20, 1000), np.float64))  # 160 kB: a new buffer replaces c's
    assert len(pool._free) == 2
    d = pool.take((27, 1000), np.float64)       # 216 kB: best fit, the 400 kB one
    assert np.shares_memory(d, a)


def test_pool_replaces_outgrown_buffers_and_stays_bounded():
    """A request no free buffer holds gets a new buffer that replaces the biggest smaller
    one; a buffer given twice is kept once; the total never passes max_bytes; small arrays
    are not kept."""
    from rnnx._workspace import BufferPool
    pool = BufferPool(max_bytes=1 << 20)
    small, mid = pool.take((100_000,), np.uint8), pool.take((300_000,), np.uint8)
    pool.give(small, mid)
    bigger = pool.take((500_000,), np.uint8)    # replaces the 300 kB buffer
    assert [b is small.base for b in pool._free] == [True]
    pool.give(bigger, bigger)
    assert len(pool._free) == 2 and 500_000 <= bigger.base.nbytes <= 500_000 * 9 // 8
    pool.give(pool.take((600_000,), np.uint8))  # would pass 1 MiB: dropped
    assert pool._bytes == sum(b.nbytes for b in pool._free) <= 1 << 20
    pool.give(np.empty(1000))
    assert len(pool._free) == 2
    pool.clear()
    assert pool._free == [] and pool._bytes == 0


RSS_SCRIPT = """
    import os, sys
    import numpy as np
    import rnnx

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rnnx.manual_seed(0)
    m = rnnx.nn.LSTM(64, 256, num_layers=2)
    r = np.random.default_rng(0)
    T, B = 50, 32
    x = r.standard_normal((T, B, 64)).astype(np.float32)
    go = np.ones((T, B, 256), np.float32)
    for step in range(30):
        lengths = r.integers(1, T + 1, B) if {vary} else np.full(B, T)
        lengths[0] = T
        out, _ = m(x, lengths=lengths)
        m.backward(go)
    print(rss_mb())
"""


def test_resident_memory_with_new_lengths_every_batch_stays_at_fixed_lengths_level():
    """30 training steps of LSTM(64, 256, 2 layers), new `lengths` each batch: resident
    memory at most 1.2x that of the same steps at fixed lengths (the scratch pool once kept
    a set of buffers per shape, up to 1 GiB)."""
    fixed = float(run_script(RSS_SCRIPT.format(vary=False)))
    varying = float(run_script(RSS_SCRIPT.format(vary=True)))
    assert varying <= 1.2 * fixed, (varying, fixed)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_pending_training_forward_holds_only_what_backward_reads(mode):
    """A training forward without backward keeps, per layer and direction, the gate values,
    the initial hidden state (and the LSTM's cell states, the GRU's W_hn h), and the layer's
    input and output: no forward-only scratch (packed weights, per-step buffers)."""
    m = getattr(rnnx.nn, mode)(5, 8, num_layers=2, bidirectional=True)
    m(np.ones((4, 3, 5), np.float32))
    (rec,) = m._records
    expected = {"LSTM": {"gates", "h0", "cbuf", "c0"}, "GRU": {"gates", "h0", "hn"},
                "RNN": {"gates", "h0"}}[mode]
    for layer_in, out, dirs, mask in rec.layers:
        assert mask is None and [set(d) for d in dirs] == [expected, expected]
    m.clear_records()
    cell = getattr(rnnx.nn, mode + "Cell")(5, 8)
    cell(np.ones((3, 5), np.float32))
    (rec,) = cell._records
    assert set(rec[2]) == expected


def resident_bytes():
    """This process's resident set size, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_forwards_whose_outputs_are_discarded_run_in_bounded_memory():
    """A record lives no longer than its output: 2,000 training-mode calls whose outputs are
    discarded keep at most one pending record per module and a flat RSS (each call's record
    is ~0.4 MB: 800 MB if they piled up; the slack allowed is 64 MB)."""
    x = np.ones((50, 16, 32), np.float32)
    lstm = rnnx.LSTM(32, 64)
    model = rnnx.Sequential(rnnx.GRU(32, 64), rnnx.LastTimeStep(), rnnx.Linear(64, 10))
    cell = rnnx.LSTMCell(32, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rnnx.RecordsWarning)
        for _ in range(50):  # warm up: the scratch pool, the allocator
            lstm(x), model(x), cell(x[0])
        before = resident_bytes()
        for _ in range(2000):
            lstm(x)
            model(x)
            cell(x[0])
        grown = resident_bytes() - before
    assert all(len(m._records) <= 1 for m in (lstm, cell, *model.modules()))
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.0f} MB"


def test_records_live_as_long_as_the_outputs_they_belong_to():
    """Kept outputs keep their records, also when the output reaching the caller is computed
    by numpy from a layer's (the record is then tied to the output of the call it was made
    in); a cell run step after step from its last output keeps every step's record."""
    class Model(rnnx.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnnx.LSTM(3, 4, dtype=np.float64)
            self.head = rnnx.Linear(4, 2, dtype=np.float64)

        def forward(self, x):
            return self.head(np.tanh(self.lstm(x)[0][-1]))

    model = Model()
    outputs = [model(np.full((5, 2, 3), v)) for v in (0.1, 0.2, 0.3)]
    assert len(model.lstm._records) == 3 and len(model.head._records) == 3
    del outputs[0]
    model(np.ones((5, 2, 3)))  # the first output is gone, the others are not: nothing dropped
    assert len(model.lstm._records) == 4
    del outputs[:]
    model(np.ones((5, 2, 3)))  # none is referenced any more: dropped, the new one kept
    assert len(model.lstm._records) == 1 and len(model.head._records) == 1
    model.clear_records()
    cell = rnnx.GRUCell(3, 4)
    h = None
    for t in range(5):
        h = cell(np.ones((2, 3), np.float32), h)
    assert len(cell._records) == 5


# ---------------------------------------------------------------------------------------
# concurrent callers (the kernels release the GIL) and more threads than cores

def _concurrently(fns):
    """Run the callables on as many Python threads at once; their results in order."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        results[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("threads", [2, 16])
def test_concurrent_callers_get_the_results_of_sequential_calls(threads):
    """Four Python threads at once: two training modules (forward + backward each), and one
    module in eval mode shared by two threads; batch 1 (a thread team per call) and 40 rows
    (row blocks); kernel threads 2 or 16 (more than the cores: the calls share a budget of
    one thread per core). Every result bitwise equal to the same call alone on one thread."""
    rnnx.manual_seed(3)
    train = [rnnx.nn.LSTM(28, 256), rnnx.nn.GRU(28, 256, bidirectional=True)]
    shared = rnnx.nn.LSTM(28, 256, proj_size=64)
    shared.eval()
    r = np.random.default_rng(3)
    xs = [r.standard_normal((30, B, 28)).astype(np.float32) for B in (1, 40, 1, 40)]

    def trained(m, x):
        def call():
            m.zero_grad()
            out, _ = m(x)
            m.backward(np.ones_like(out))
            return [out] + [p.grad.copy() for p in m.parameters()]
        return call

    def evaluated(x):
        return lambda: [shared(x)[0]]

    calls = [trained(train[0], xs[0]), trained(train[1], xs[1]), evaluated(xs[2]),
             evaluated(xs[3])]
    rnnx.set_num_threads(1)
    alone = [call() for call in calls]
    rnnx.set_num_threads(threads)
    for _ in range(3):
        together = _concurrently(calls)
        for a, b in zip(alone, together):
            assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_kernel_thread_budget_is_one_per_core_and_returned():
    """Calls take kernel threads from a budget of one per core this process may use (at least
    one each, even when it is spent), and give them all back."""
    from rnnx._kernels import _recurrent as K
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert K.busy_threads() == 0
    first = K.claim_threads(16)
    assert first == min(16, cores) and K.busy_threads() == first
    second = K.claim_threads(2)
    assert second == max(1, min(2, cores - first))
    K.release_threads(first)
    K.release_threads(second)
    assert K.busy_threads() == 0
    test_concurrent_callers_get_the_results_of_sequential_calls(16)
    assert K.busy_threads() == 0


def test_kernel_blas_stays_single_threaded_after_threadpool_limits():
    """threadpoolctl.threadpool_limits(n) over every pool raises scipy's BLAS too, which the
    kernels call inside their own threads: the next layer call puts it back on one thread
    (and the results are the same)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from rnnx import _threads
    m = rnnx.LSTM(8, 16, num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((5, 3, 8)).astype(np.float32)
    before, _ = m(x)
    m.backward(np.ones_like(before))
    with threadpoolctl.threadpool_limits(2):
        out, _ = m(x)
        assert all(lib.num_threads == 1 for lib in _threads._scipy_blas.lib_controllers)
        m.backward(np.ones_like(out))
    np.testing.assert_array_equal(before, out)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_module_trained_by_two_threads_at_once_raises(where):
    """While one thread is inside a training-mode forward or a backward of a module, a second
    thread's training-mode call or backward of it raises RuntimeError (they used to lose
    gradient silently); eval-mode calls from several threads stay allowed."""
    entered, release = threading.Event(), threading.Event()
    main = threading.current_thread()

    class Held(rnnx.LSTM):
        def forward(self, *args, **kwargs):
            if where == "forward" and threading.current_thread() is not main:
                entered.set()
                release.wait()
            return super().forward(*args, **kwargs)

        def backward(self, *args, **kwargs):
            if where == "backward" and threading.current_thread() is not main:
                entered.set()
                release.wait()
            return super().backward(*args, **kwargs)

    m = Held(3, 4, bidirectional=True)
    x = np.ones((5, 2, 3), np.float32)
    kept = m(x) if where == "backward" else None  # noqa: F841
    worker = threading.Thread(target=(lambda: m(x)) if where == "forward" else
                              (lambda: m.backward(np.ones((5, 2, 8), np.float32))))
    worker.start()
    entered.wait()
    try:
        with pytest.raises(RuntimeError, match="must not be used by two threads at once"):
            m(x)
        with pytest.raises(RuntimeError, match=r"Held.backward\(\) called while another thread"):
            m.backward(np.ones((5, 2, 8), np.float32))
        with rnnx.no_grad():
            m(x)  # records nothing: allowed
    finally:
        release.set()
        worker.join()
    assert len(m._records) == (1 if where == "forward" else 0)  # the worker's call only
    m.clear_records()


def test_copies_of_a_frozen_module_stay_frozen():
    """deepcopy and a pickle round trip of an rnnx.freeze'd module give a frozen module whose
    weights are immutable (they used to come back writeable while _frozen stayed True)."""
    import copy
    import pickle
    frozen = rnnx.freeze(rnnx.Sequential(rnnx.LSTM(3, 4), rnnx.LastTimeStep(), rnnx.Linear(4, 2)))
    x = np.ones((5, 2, 3), np.float32)
    for clone in (copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        assert all(m._frozen for m in clone.modules())
        for name, p in clone.named_parameters():
            assert not p.data.flags.writeable and p.grad is None and not p.requires_grad, name
            with pytest.raises(ValueError):
                p.data.setflags(write=True)
        with pytest.raises(RuntimeError, match="frozen"):
            clone.train()
        np.testing.assert_array_equal(clone(x), frozen(x))
    plain = pickle.loads(pickle.dumps(rnnx.LSTM(3, 4)))
    assert plain.weight_ih_l0.data.flags.writeable and not plain._frozen
