"""rnnx.distributed and DistributedDataParallel: the API in this process (a world of one rank,
MPI's singleton start), and jobs of two ranks launched with mpiexec (scripts in tests/mpi/)."""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rnnx
import rnnx.distributed as dist
from rnnx import nn
from rnnx.mnist import main as mnist_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi")
TIMEOUT = 120  # seconds: a hang fails the test instead of blocking the suite


def _find_mpiexec():
    """The mpiexec of the MPI that mpi4py uses: beside this Python (pip install mpich), else
    on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
needs_mpiexec = pytest.mark.skipif(
    not dist.is_available() or MPIEXEC is None,
    reason='mpi4py or mpiexec missing: pip install "rnnx[distributed]" (mpi4py and mpich)')


def mpiexec(*args, ranks=2, timeout=TIMEOUT):
    """Run `python args...` on `ranks` ranks with this worktree importable; the
    CompletedProcess (stdout and stderr as text) and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return done, time.perf_counter() - start


# -- without mpiexec --------------------------------------------------------------------------
def test_import_without_mpi4py():
    """Without mpi4py, import rnnx works, is_available() is False, init_process_group says what
    to install."""
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import rnnx, rnnx.distributed as d\n"
            "assert not d.is_available()\n"
            "try:\n    d.init_process_group()\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert 'pip install "rnnx[distributed]"' in done.stdout and "mpich" in done.stdout


def test_not_initialized():
    assert not dist.is_initialized()
    for call in (dist.get_rank, dist.get_world_size, dist.barrier):
        with pytest.raises(ValueError, match="has not been initialized"):
            call()
    with pytest.raises(ValueError, match="has not been initialized"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2))


@pytest.fixture
def group():
    """A process group of this process alone (MPI singleton); destroyed afterwards."""
    if not dist.is_available():
        pytest.skip('mpi4py is not installed: pip install "rnnx[distributed]"')
    threads = rnnx.get_num_threads()
    dist.init_process_group()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    rnnx.set_num_threads(threads)


def test_timeout_default_and_errors():
    """init_process_group(timeout=...): a timedelta or seconds, 30 minutes by default (torch's
    default_pg_timeout); anything else is refused before the group is set up."""
    assert dist.default_pg_timeout == datetime.timedelta(minutes=30)
    assert dist._timeout_seconds(dist.default_pg_timeout) == 1800.0
    assert dist._timeout_seconds(datetime.timedelta(milliseconds=1500)) == 1.5
    assert dist._timeout_seconds(3) == 3.0
    for bad, error, match in [(0, ValueError, "positive and finite, got 0"),
                              (-1.0, ValueError, "positive and finite, got -1.0"),
                              (float("nan"), ValueError, "positive and finite, got nan"),
                              (datetime.timedelta(0), ValueError, "positive and finite"),
                              ("60", TypeError, "timedelta or a number of seconds, got str"),
                              (True, TypeError, "got bool")]:
        with pytest.raises(error, match=match):
            dist.init_process_group(timeout=bad)
        assert not dist.is_initialized()


def test_timeout_is_the_groups(group):
    assert dist._group.timeout == 1800.0
    dist.destroy_process_group()
    dist.init_process_group(timeout=datetime.timedelta(seconds=7))
    assert dist._group.timeout == 7.0


def test_first_difference_names_the_first_field_that_differs():
    from rnnx.distributed._collective import first_difference, mismatch_message
    call = (("collective", "all_reduce"), ("shape", (4,)), ("dtype", "float32"), ("op", "sum"))
    other = (("collective", "all_reduce"), ("shape", (4,)), ("dtype", "int32"), ("op", "max"))
    assert first_difference([call, call, call]) is None
    assert first_difference([call, call, other]) == (2, "dtype", "float32", "int32")
    assert mismatch_message([call, other], 5, "the call") == (
        "the call differs across the ranks of the process group: dtype: 'float32' on rank 0, "
        "'int32' on rank 1")
    shorter = call[:2]
    assert repr(first_difference([call, shorter])) == "(1, 'dtype', 'float32', nothing)"
    assert first_difference([(("x", 25),), (("x", 25.0),)]) == (1, "x", 25, 25.0)  # as digested
    leaving = (("collective", "destroy_process_group"),)
    assert mismatch_message([call, leaving], 9, "the call") == (
        "the ranks are in different collectives (collective #9 of the process group): "
        "all_reduce(shape=(4,), dtype='float32', op='sum') on rank 0, destroy_process_group() "
        "on rank 1; rank 1 is leaving the group (destroy_process_group, or its process exits: "
        "sys.exit or the end of its script)")


def test_group_of_one(group):
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    assert sys.excepthook is dist._abort_on_uncaught_exception  # ends the job on an exception
    with pytest.raises(ValueError, match="twice"):
        dist.init_process_group()
    dist.barrier()
    dist.destroy_process_group()
    assert not dist.is_initialized() and sys.excepthook is not dist._abort_on_uncaught_exception
    dist.init_process_group()  # again after destroy


def test_backend_and_install_errors(monkeypatch):
    with pytest.raises(ValueError, match="'mpi' backend only, got 'nccl'"):
        dist.init_process_group("nccl")
    monkeypatch.setattr(dist, "is_available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install "rnnx\[distributed\]"'):
        dist.init_process_group()
    assert not dist.is_initialized()


def test_mnist_cli_without_mpi4py(monkeypatch, capsys):
    monkeypatch.setattr(dist, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        mnist_main(["--distributed", "--epochs", "1"])
    assert exc.value.code == 2
    assert 'pip install "rnnx[distributed]"' in capsys.readouterr().err


class _FakeHost:
    """The shared-memory communicator of a host whose ranks may run on `affinities`."""

    def __init__(self, affinities):
        self.affinities = affinities

    def allgather(self, own):
        return self.affinities

    def Get_size(self):
        return len(self.affinities)


@pytest.mark.parametrize("affinities, own, expected", [
    ([{0, 1}, {0, 1}], {0, 1}, 1),                  # 2 ranks on 2 cores, unbound
    ([{0}, {1}], {0}, 1),                           # bound to a core each
    ([set(range(8))] * 2, set(range(8)), 4),        # 2 ranks sharing 8 cores
    ([set(range(8))] * 3, set(range(8)), 2),        # 3 ranks on 8 cores
    ([{0, 1}] * 4, {0, 1}, 1),                      # more ranks than cores: at least 1
    ([set(range(8)), {0}], {0}, 1),                 # never more than this rank's own cores
])
def test_threads_are_the_hosts_cores_shared_by_its_ranks(monkeypatch, affinities, own, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: own)
    assert dist._host_share_of_cores(_FakeHost(affinities)) == expected


@pytest.mark.parametrize("op, expected", [("sum", [1.0, -2.0]), ("avg", [1.0, -2.0]),
                                          ("prod", [1.0, -2.0]), ("min", [1.0, -2.0]),
                                          ("max", [1.0, -2.0]), (dist.ReduceOp.SUM, [1.0, -2.0])])
def test_all_reduce_one_rank(group, op, expected):
    a = np.array([1.0, -2.0])
    assert dist.all_reduce(a, op=op) is None
    np.testing.assert_array_equal(a, expected)


def test_collective_errors(group):
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(np.zeros(2), op="mean")
    with pytest.raises(TypeError, match="'avg' needs a float array, got dtype int64"):
        dist.all_reduce(np.zeros(2, np.int64), op="avg")
    with pytest.raises(TypeError, match="expects a NumPy array, got list"):
        dist.all_reduce([1.0])
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        dist.all_reduce(np.zeros((3, 3))[:, 0])
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 1\), got 1"):
        dist.broadcast(np.zeros(2), src=1)
    with pytest.raises(ValueError, match="must have 1 items"):
        dist.all_gather_object([], 1)


def test_objects_and_broadcast_one_rank(group):
    gathered = [None]
    dist.all_gather_object(gathered, {"a": 1})
    assert gathered == [{"a": 1}]
    items = ["x", 2]
    dist.broadcast_object_list(items)
    assert items == ["x", 2]
    a = np.arange(3.0)
    dist.broadcast(a, src=0)
    np.testing.assert_array_equal(a, [0.0, 1.0, 2.0])


def _model(seed=0):
    rnnx.manual_seed(seed)
    return nn.Sequential(nn.GRU(3, 4, batch_first=True), nn.LastHidden(), nn.Linear(4, 2))


def test_ddp_one_rank_is_the_module(group):
    model, reference = _model(), _model()
    ddp = rnnx.DistributedDataParallel(model)
    assert ddp.module is model and rnnx.nn.parallel.DistributedDataParallel is type(ddp)
    assert list(ddp.state_dict()) == ["module." + k for k in model.state_dict()]
    assert ddp.parameters() == model.parameters()
    x = np.random.default_rng(0).standard_normal((5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(ddp(x), reference(x))
    g = np.ones((5, 2), np.float32)
    assert ddp.backward(g, input_grad=False) is None
    reference.backward(g, input_grad=False)
    with ddp.no_sync():
        assert not ddp.require_backward_grad_sync
    assert ddp.require_backward_grad_sync
    ddp.reduce_gradients()
    for p, q in zip(ddp.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_ddp_errors(group):
    with pytest.raises(TypeError, match="must be an rnnx Module, got list"):
        rnnx.DistributedDataParallel([])
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number, got 0"):
        rnnx.DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)


def test_ddp_refuses_embedding_max_norm(group):
    """Embedding(max_norm) renormalises the rows each rank looks up: refused at construction,
    and at the forward if max_norm was set since (on any world size alike)."""
    with pytest.raises(ValueError, match=r"does not support Embedding\(max_norm=...\): "
                                         r"submodule '0' has max_norm=1.0"):
        rnnx.DistributedDataParallel(nn.Sequential(nn.Embedding(10, 3, max_norm=1.0),
                                                   nn.Linear(3, 2)))
    embedding = nn.Embedding(10, 3)
    ddp = rnnx.DistributedDataParallel(embedding)
    ddp(np.array([1, 2]))
    embedding.max_norm = 2.0
    weight = embedding.weight.data.copy()
    with pytest.raises(ValueError, match="the module has max_norm=2.0"):
        ddp(np.array([1, 2]))
    np.testing.assert_array_equal(embedding.weight.data, weight)


def test_parameter_groups_follow_the_backward():
    """One group per Sequential child with parameters, last child first; a parameter shared
    by two children goes with the first; buckets split by size and dtype."""
    from rnnx.nn.parallel import _parameter_groups, _split
    first, last = nn.Linear(2, 2), nn.Linear(2, 2)
    last.weight = first.weight  # tied
    model = nn.Sequential(first, nn.LastTimeStep(), last)
    groups = _parameter_groups(model)
    assert [child for child, _ in groups] == [last, first]
    assert groups[0][1] == [last.bias] and groups[1][1] == [first.bias, first.weight]
    assert _parameter_groups(first) == [(None, [first.bias, first.weight])]
    a, b = nn.Parameter(np.zeros(4)), nn.Parameter(np.zeros(4))
    c = nn.Parameter(np.zeros(2, np.float32))
    assert _split([a, b, c], 64) == [[a, b], [c]]
    assert _split([a, b, c], 40) == [[a], [b], [c]]


def test_trainer_in_a_group_of_one_matches_a_plain_trainer(group):
    """The data-parallel code paths of the Trainer, with one rank: the same run exactly."""
    data = np.random.default_rng(1)
    x, y = data.standard_normal((23, 5, 3)), data.integers(0, 2, 23)
    histories, params = [], []
    for distributed in (False, True):
        if not distributed:
            dist.destroy_process_group()
        else:
            dist.init_process_group()
        model = _model(3).double()
        trainer = rnnx.Trainer(model, rnnx.SGD(model.parameters(), lr=0.5, momentum=0.9),
                               batch_size=6, eval_batch_size=7, stream=open(os.devnull, "w"))
        histories.append(trainer.fit(x, y, 2, eval_data=(x[:11], y[:11])))
        params.append([p.data.copy() for p in model.parameters()])
    strip = [[{k: v for k, v in h.items() if k != "train_seconds"} for h in hs] for hs in histories]
    assert strip[0] == strip[1]
    for a, b in zip(*params):
        np.testing.assert_array_equal(a, b)


def test_trainer_takes_a_wrapped_model(group):
    """Given a DistributedDataParallel, the Trainer trains through it and checkpoints the
    module inside (the keys of a single-process run)."""
    model = _model()
    ddp = rnnx.DistributedDataParallel(model)
    trainer = rnnx.Trainer(ddp, rnnx.SGD(ddp.parameters(), lr=0.1), batch_size=4)
    assert trainer.model is model and trainer._net is ddp
    assert list(trainer.state_dict()["model"]) == list(model.state_dict())


def test_trainer_batch_must_cover_the_ranks(group, monkeypatch):
    monkeypatch.setattr(dist._group, "size", 4)
    model = _model()
    with pytest.raises(ValueError, match="batch_size 3 is the global batch: it must be at least "
                                         "the world size 4"):
        rnnx.Trainer(model, rnnx.SGD(model.parameters(), lr=0.1), batch_size=3)


# -- two ranks under mpiexec --------------------------------------------------------------------
@needs_mpiexec
def test_ddp_matches_one_process_and_ranks_stay_identical():
    """LSTM/GRU/RNN, uni- and bidirectional, float32/64, 4 SGD steps: parameters equal to one
    process on the full batch (to float rounding) and bitwise equal across ranks; no_sync
    accumulation with small buckets; reduce_gradients on a rank without samples."""
    done, _ = mpiexec(os.path.join(SCRIPTS, "ddp_equivalence.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 0: OK" in done.stdout and "rank 1: OK" in done.stdout


@needs_mpiexec
def test_trainer_matches_one_process(tmp_path):
    """Uneven parts, a rank without a sample, split evaluation: the single-process run; files
    from rank 0 only."""
    done, _ = mpiexec(os.path.join(SCRIPTS, "trainer_equivalence.py"), str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(tmp_path)) == ["rank0.json", "rank0.npz", "single.json",
                                            "single.npz"]


@needs_mpiexec
@pytest.mark.parametrize("mode, shown", [
    ("raise", "RuntimeError: injected failure on rank 1"),
    ("kill", "signal 9"),
    ("model", "the module differs across the ranks of the process group: parameter #0 (name, "
              "shape, dtype, requires_grad): ('0.weight_ih_l0', (12, 3), 'float32', True) on rank "
              "0, ('0.weight_ih_l0', (15, 3), 'float32', True) on rank 1"),
    ("batch", "the Trainer's configuration differs across the ranks of the process group: "
              "batch_size: 4 on rank 0, 8 on rank 1"),
])
def test_a_failing_rank_ends_the_job(mode, shown):
    """An exception (with its traceback), a killed rank, or a configuration that differs
    across ranks ends the whole job with a non-zero exit, never a hang."""
    done, seconds = mpiexec(os.path.join(SCRIPTS, "failures.py"), mode, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert shown in output
    assert "which it should not have" not in output
    if mode == "raise":
        assert "Traceback (most recent call last)" in output and "on rank 1 of 2" in output
    assert seconds < 30, f"{seconds:.0f} s to end the job"


@needs_mpiexec
def test_mismatched_collectives_are_errors_on_every_rank():
    """Arguments that differ across ranks (DDP: requires_grad at and after construction,
    bucket_cap_mb; all_reduce: dtypes of equal and of different byte sizes, op; different
    collectives; broadcast src; broadcast_object_list length), and Embedding(max_norm) under
    DDP: a ValueError on every rank naming the first difference, before any data moves (the
    arrays and parameters are unchanged), and the group still works afterwards."""
    done, _ = mpiexec(os.path.join(SCRIPTS, "mismatches.py"), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {
        "requires_grad_at_construction": "DistributedDataParallel: the module differs across the "
        "ranks of the process group: parameter #0 (name, shape, dtype, requires_grad): "
        "('weight_ih_l0', (16, 4), 'float32', False) on rank 0, ('weight_ih_l0', (16, 4), "
        "'float32', True) on rank 1",
        "requires_grad_after_construction": "DistributedDataParallel: the gradient reduction "
        "differs across the ranks of the process group: requires_grad of weight_hh_l0: True on "
        "rank 0, False on rank 1",
        "bucket_cap_mb": "bucket_cap_mb: 25.0 on rank 0, 0.001 on rank 1",
        "embedding_max_norm": "does not support Embedding(max_norm=...): submodule '0' has "
        "max_norm=1.0",
        "dtype_of_the_same_size": "the call of all_reduce (collective #6) differs across the "
        "ranks of the process group: dtype: 'float32' on rank 0, 'int32' on rank 1",
        "dtype_of_another_size": "shape: (2,) on rank 0, (4,) on rank 1",
        "operation": "op: 'sum' on rank 0, 'max' on rank 1",
        "collective": "the ranks are in different collectives (collective #9 of the process "
        "group): all_reduce(shape=(4,), dtype='float64', op='sum') on rank 0, broadcast(shape="
        "(4,), dtype='float64', src=0) on rank 1",
        "broadcast_src": "src: 0 on rank 0, 1 on rank 1",
        "broadcast_object_list_length": "length: 1 on rank 0, 2 on rank 1",
    }
    for messages in json.loads(done.stdout):  # each rank's
        assert list(messages) == list(expected)
        for case, message in expected.items():
            assert message in messages[case], (case, messages[case])


JOB_TIMEOUT = 3  # seconds: the process group's timeout of the jobs below


@needs_mpiexec
@pytest.mark.parametrize("case, shown", [
    (["exit", "3"], ["rank 1 of 2 exits (sys.exit or the end of its script) while in the "
                     "process group: the ranks are in different collectives (collective #4 of "
                     "the process group): DistributedDataParallel gradient reduction(",
                     "destroy_process_group() on rank 1; rank 1 is leaving the group"]),
    (["exit", "0"], ["uncaught ValueError on rank 0 of 2",
                     "destroy_process_group() on rank 1; rank 1 is leaving the group"]),
    (["destroy", "0"], ["uncaught ValueError on rank",
                        "destroy_process_group() on rank 1; rank 1 is leaving the group"]),
    (["exit_while_busy", "0"], [
        f"rank 1 of 2 timed out after {JOB_TIMEOUT:.1f} s (the process group's timeout, "
        f"init_process_group(timeout=...)) waiting in destroy_process_group(), collective #4 of "
        f"the process group; ranks that never arrived: 0; ending the job (exit code 1)",
        "rank 0: no answer (busy outside rnnx.distributed's collectives, stuck, or gone)"]),
    (["backward_on_one_rank", "0"], [
        f"rank 0 of 2 timed out after {JOB_TIMEOUT:.1f} s (the process group's timeout, "
        f"init_process_group(timeout=...)) waiting in DistributedDataParallel gradient "
        f"reduction(",
        "collective #4 of the process group; ranks that never arrived: 1; ending the job",
        "rank 1: no answer"]),
])
def test_a_rank_that_leaves_or_never_arrives_ends_the_job(case, shown):
    """sys.exit(3) or sys.exit(0) or destroy_process_group on rank 1 while rank 0 goes on (it
    meets rank 0's next collective: an error on both), sys.exit on rank 1 while rank 0
    computes past the timeout, backward on rank 0 only: the job ends, non-zero, within about the timeout, with
    the collective waited in and the ranks that never arrived."""
    done, seconds = mpiexec(os.path.join(SCRIPTS, "hangs.py"), case[0], str(JOB_TIMEOUT),
                            case[1], timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for text in shown:
        assert text in output, output
    assert "which it should not have" not in output
    assert seconds < JOB_TIMEOUT + 30, f"{seconds:.0f} s to end the job"


MNIST_ARGS = ["--epochs", "1", "--limit-train", "200", "--limit-test", "100", "--hidden-size",
              "16", "--num-layers", "1", "--batch-size", "20"]


@pytest.fixture
def mnist_dir():
    for candidate in (os.environ.get("RNNX_DATA"),
                      os.path.join(ROOT, "..", "shared", "data", "mnist"),
                      "/work/shared/data/mnist"):
        if candidate and os.path.exists(os.path.join(candidate, "train-images-idx3-ubyte.gz")):
            return os.path.abspath(candidate)
    pytest.skip("MNIST data not found ($RNNX_DATA or ../shared/data/mnist)")


def _metrics(path):
    with open(path) as f:
        return json.load(f)["epochs"]


@needs_mpiexec
def test_mnist_cli_two_ranks_is_the_one_process_run(tmp_path, mnist_dir, capsys):
    """mpiexec -n 2 rnnx-mnist --distributed: the one-process run to float32 rounding, one
    report, and --resume continues the group's run."""
    args = MNIST_ARGS + ["--data-dir", mnist_dir]
    ck = str(tmp_path / "ck.npz")
    done, _ = mpiexec("-m", "rnnx.mnist", "--distributed", *args, "--checkpoint", ck,
                      "--metrics-json", str(tmp_path / "two.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1: test accuracy") == 1  # rank 0 reports
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # mpiexec binds no cores by default
    assert f"{threads} threads per rank, 2 ranks" in done.stderr
    done, _ = mpiexec("-m", "rnnx.mnist", "--distributed", *args, "--checkpoint", ck, "--resume",
                      "--epochs", "2", "--metrics-json", str(tmp_path / "two.json"))
    assert done.returncode == 0, done.stderr
    assert mnist_main(args + ["--epochs", "2", "--checkpoint", str(tmp_path / "one.npz"),
                              "--metrics-json", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    two, one = _metrics(tmp_path / "two.json"), _metrics(tmp_path / "one.json")
    assert len(two) == len(one) == 2
    for a, b in zip(two, one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.02  # 2 of 100 images


@needs_mpiexec
def test_mnist_cli_error_on_rank_0_only_ends_the_job(tmp_path, mnist_dir):
    """--resume reads the checkpoint on rank 0 (sent to the others): its usage error there
    ends every rank."""
    done, seconds = mpiexec("-m", "rnnx.mnist", "--distributed", *MNIST_ARGS, "--data-dir",
                            mnist_dir, "--resume", "--checkpoint", str(tmp_path / "none.npz"),
                            timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--resume: no checkpoint at" in done.stderr and "exits with code 2" in done.stderr
    assert seconds < 30


@needs_mpiexec
def test_mnist_cli_ctrl_c_stops_every_rank_at_one_step(tmp_path, mnist_dir):
    """Ctrl-C to mpiexec (forwarded to every rank): the ranks agree on the step to stop at,
    rank 0 saves the checkpoint, the job exits with 130; --resume finishes the run."""
    args = ["-m", "rnnx.mnist", "--distributed", "--data-dir", mnist_dir, "--epochs", "1",
            "--limit-train", "6000", "--limit-test", "100", "--hidden-size", "64",
            "--batch-size", "20", "--checkpoint", str(tmp_path / "ck.npz")]
    env = {**os.environ, "PYTHONPATH": ROOT}
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, *args], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in job.stderr:  # rank 0's progress: the first step is done
            if "step 1/300" in line:
                break
        job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 130, stderr
    assert "interrupted: checkpoint saved" in stderr and "exits with code 130" in stderr
    done, _ = mpiexec(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1: test accuracy") == 1
