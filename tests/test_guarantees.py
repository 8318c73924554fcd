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
