"""rnnx.distributed: the process group of a data-parallel job over MPI (mpi4py), as in torch.

    mpiexec -n 2 python train.py          # every rank runs the same script

    import rnnx.distributed as dist
    dist.init_process_group()             # MPI_COMM_WORLD: get_rank(), get_world_size()
    dist.all_reduce(array, op="sum")      # in place, NumPy arrays

The group is MPI_COMM_WORLD of the MPI that mpi4py was built against (`pip install
"rnnx[distributed]"` brings mpi4py and MPICH; on a cluster, mpi4py built on the site's MPI).
init_process_group also

- sets the rnnx thread count of each rank to its share of the cores of its host (the cores
  the ranks on one host may run on, divided by their number; set_num_threads after it to
  choose otherwise), so that the ranks of a host do not oversubscribe it;
- installs a sys.excepthook that prints an uncaught exception's traceback and then ends the
  whole job with MPI_Abort (exit code 1, 130 for KeyboardInterrupt) instead of leaving the
  other ranks waiting forever in their next collective call (a rank killed by a signal ends
  the job through mpiexec);
- registers an exit handler: a process that exits (sys.exit, or the end of its script) while
  still in the group first leaves it as destroy_process_group does: a collective, so that a
  rank leaving while the others are in another collective is an error on every rank instead
  of a hang.

Every collective checks that every rank called the same collective with the same arguments
(shape, dtype, op, src...), as torch does under TORCH_DISTRIBUTED_DEBUG=DETAIL, and waits at
most the group's timeout (init_process_group(timeout=...), 30 minutes by default as torch's):
a mismatch is a ValueError on every rank naming the first difference; a rank that waits past
the timeout prints which collective it waits in and which ranks never arrived, and ends the
whole job (exit code 1). See _collective.

Importing rnnx never imports mpi4py; is_available() tells whether it is installed.

rnnx.nn.parallel.DistributedDataParallel and the Trainer's data parallelism (rnnx._data_parallel)
build on check_same, check_then_broadcast and BucketAverage: rnnx.distributed works on arrays
and plain values, and knows nothing of modules. rnnx.distributed.cli runs a command-line
program as the ranks of a job.
"""
import atexit
import datetime
import importlib.util
import math
import numbers
import os
import sys
import traceback
import zlib

import numpy as np

from .. import _threads
from ._collective import LEAVE, Collective, digest, report as _report

default_pg_timeout = datetime.timedelta(minutes=30)  # torch.distributed.default_pg_timeout

INSTALL_HINT = ('rnnx.distributed needs mpi4py and an MPI library: pip install "rnnx[distributed]" '
                '(or: pip install mpi4py mpich)')


class ReduceOp:
    """The reduction operations of all_reduce (their names as strings are accepted too)."""
    SUM, AVG, PRODUCT, MIN, MAX = "sum", "avg", "prod", "min", "max"


_group = None  # the _Group of init_process_group, None before it and after destroy
_exit_handler_registered = False


class _Group:
    """What init_process_group sets up: rnnx's communicators, the timeout, the count of
    collectives, and the hook it replaced."""

    def __init__(self, mpi, timeout):
        self.MPI, self.timeout = mpi, timeout
        self.world = mpi.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.seq = 0  # collectives called so far (the same count on every rank)
        self.waiting = None  # (Collective, since) while this rank waits in one
        self.sends = []  # pending point-to-point sends of the watchdog (see _collective)
        # every rank calls init_process_group: wait for them (with the timeout) before the
        # blocking MPI calls that create the communicators
        self.comm = self.control = self.world
        Collective(self, (("collective", "init_process_group"),)).checked()
        self.comm = self.world.Dup()  # rnnx's collectives, apart from the user's own MPI calls
        self.control = self.world.Dup()  # the watchdog's questions and answers
        self.local = self.world.Split_type(mpi.COMM_TYPE_SHARED)  # the ranks on this host
        self.previous_excepthook = sys.excepthook


def is_available():
    """Whether mpi4py is installed (rnnx.distributed can be used)."""
    return importlib.util.find_spec("mpi4py") is not None


def _import_mpi():
    if not is_available():
        raise ImportError(INSTALL_HINT)
    try:
        from mpi4py import MPI
    except ImportError as exc:  # mpi4py without a loadable MPI library
        raise ImportError(f"{INSTALL_HINT}; importing mpi4py.MPI failed: {exc}") from exc
    return MPI


def init_process_group(backend="mpi", *, timeout=None):
    """Join the job's process group, MPI_COMM_WORLD (a second call is an error, as in torch).

    timeout: a datetime.timedelta or a number of seconds (default default_pg_timeout, 30
    minutes, as torch's): how long a collective may wait for the other ranks before the job is
    ended (see the module docstring). Sets this rank's thread count to its share of its host's
    cores, installs the excepthook that ends the whole job on an uncaught exception and the
    exit handler."""
    global _group, _exit_handler_registered
    if backend not in (None, "mpi"):
        raise ValueError(f"rnnx.distributed supports the 'mpi' backend only, got {backend!r}")
    if _group is not None:
        raise ValueError("trying to initialize the default process group twice!")
    seconds = _timeout_seconds(default_pg_timeout if timeout is None else timeout)
    group = _Group(_import_mpi(), seconds)
    _threads.set_num_threads(_host_share_of_cores(group.local))
    sys.excepthook = _abort_on_uncaught_exception
    _group = group
    if not _exit_handler_registered:  # after mpi4py's import: runs before MPI_Finalize
        atexit.register(_leave_at_exit)
        _exit_handler_registered = True


def _timeout_seconds(timeout):
    """timeout (timedelta or seconds) as a positive finite number of seconds."""
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, numbers.Real) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(f"timeout must be a datetime.timedelta or a number of seconds, got "
                        f"{type(timeout).__name__}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeout must be positive and finite, got {timeout!r}")
    return seconds


def _leave_at_exit():
    """At the exit of a process still in a group of several ranks: destroy_process_group (the
    others leave too: the job ends normally), or, if they are in another collective, the
    error on every rank (here: reported, then the job ended), or the timeout."""
    group = _group
    if group is None or group.size == 1 or group.MPI.Is_finalized():
        return
    try:
        destroy_process_group()
    except ValueError as exc:
        abort(1, f"rank {group.rank} of {group.size} exits (sys.exit or the end of its script) "
                 f"while in the process group: {exc}; ending the job (exit code 1)")


def _host_share_of_cores(local):
    """Threads per rank: the cores that the ranks of this host may run on (the union of their
    affinity sets) divided by their number, at least 1 and at most this rank's own cores."""
    try:
        own = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        own = set(range(os.cpu_count() or 1))
    union = set().union(*local.allgather(own))
    return max(1, min(len(own), len(union) // local.Get_size()))


def _abort_on_uncaught_exception(exc_type, exc, tb):
    """sys.excepthook while the group is initialised: the traceback, then MPI_Abort of the job."""
    group = _group
    if group is None or group.size == 1:
        sys.__excepthook__(exc_type, exc, tb)
        return
    code = 130 if issubclass(exc_type, KeyboardInterrupt) else 1
    _report(f"uncaught {exc_type.__name__} on rank {group.rank} of {group.size}; ending the job "
            f"(exit code {code}):\n" + "".join(traceback.format_exception(exc_type, exc, tb)))
    group.world.Abort(code)


def abort(code=1, reason=None):
    """End every rank of the job now, with exit code `code` (MPI_Abort of MPI_COMM_WORLD);
    `reason` is printed first. Without a group of more than one rank, raises SystemExit(code)."""
    group = _group
    if reason is not None:
        _report(reason)
    if group is None or group.size == 1:
        raise SystemExit(code)
    group.world.Abort(code)


def is_initialized():
    """Whether init_process_group has been called (and destroy_process_group not since)."""
    return _group is not None


def _get_group():
    if _group is None:
        raise ValueError("Default process group has not been initialized, please make sure to "
                         "call init_process_group.")
    return _group


def get_rank():
    """This process's rank in the group, 0 .. world size - 1."""
    return _get_group().rank


def get_world_size():
    """Number of processes in the group."""
    return _get_group().size


def barrier():
    """Wait until every rank has called barrier()."""
    Collective(_get_group(), (("collective", "barrier"),)).checked()


def _check_array(array, what):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} expects a NumPy array, got {type(array).__name__}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{what} works in place: the array must be C-contiguous and writeable")


def _array_fields(array):
    return ("shape", array.shape), ("dtype", str(array.dtype))


def all_reduce(array, op=ReduceOp.SUM):
    """Reduce `array` over the ranks, in place: op is "sum", "avg" (the sum divided by the world
    size; float arrays only), "prod", "min" or "max". Every rank passes an array of the same
    shape and dtype, and the same op (checked: ValueError on every rank otherwise)."""
    group = _get_group()
    _check_array(array, "all_reduce")
    mpi_ops = {"sum": group.MPI.SUM, "avg": group.MPI.SUM, "prod": group.MPI.PROD,
               "min": group.MPI.MIN, "max": group.MPI.MAX}
    if op not in mpi_ops:
        raise ValueError(f"all_reduce: op must be one of {sorted(mpi_ops)}, got {op!r}")
    if op == "avg" and array.dtype.kind != "f":
        raise TypeError(f"all_reduce: op 'avg' needs a float array, got dtype {array.dtype}")
    if group.size == 1:
        return
    collective = Collective(group, (("collective", "all_reduce"), *_array_fields(array),
                                    ("op", str(op)))).checked()
    collective.wait([group.comm.Iallreduce(group.MPI.IN_PLACE, array, op=mpi_ops[op])])
    if op == "avg":
        np.divide(array, group.size, out=array)


def broadcast(array, src=0):
    """Copy rank src's `array` into every rank's (in place; the same shape, dtype and src on
    every rank, checked)."""
    group = _get_group()
    _check_array(array, "broadcast")
    _check_src(src, group)
    if group.size == 1:
        return
    collective = Collective(group, (("collective", "broadcast"), *_array_fields(array),
                                    ("src", int(src)))).checked()
    collective.wait([group.comm.Ibcast(array, root=src)])


def _check_src(src, group):
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < group.size:
        raise ValueError(f"src must be a rank in [0, {group.size}), got {src!r}")


def all_gather_object(object_list, obj):
    """object_list[r] = rank r's obj (picklable), on every rank (world-size items)."""
    group = _get_group()
    if len(object_list) != group.size:
        raise ValueError(f"all_gather_object: object_list must have {group.size} items (the "
                         f"world size), got {len(object_list)}")
    collective = Collective(group, (("collective", "all_gather_object"),)).checked()
    object_list[:] = collective.gather(obj) if group.size > 1 else [obj]


def broadcast_object_list(object_list, src=0):
    """Replace the items of every rank's object_list by rank src's (picklable objects; every
    rank's list has the same length, checked)."""
    group = _get_group()
    _check_src(src, group)
    if group.size == 1:
        return
    collective = Collective(group, (("collective", "broadcast_object_list"), ("src", int(src)),
                                    ("length", len(object_list)))).checked()
    object_list[:] = collective.gather(list(object_list) if group.rank == src else None)[src]


def destroy_process_group():
    """Leave the group, with every other rank (a collective: a rank leaving while the others
    are in another collective is a ValueError on every rank); restore sys.excepthook;
    init_process_group may be called again (MPI itself stays initialised until the process
    exits)."""
    global _group
    group = _get_group()
    Collective(group, (("collective", LEAVE),)).checked()
    if sys.excepthook is _abort_on_uncaught_exception:
        sys.excepthook = group.previous_excepthook
    for communicator in (group.local, group.comm, group.control):
        communicator.Free()
    _group = None


# -- the building blocks of rnnx.nn.parallel.DistributedDataParallel and the Trainer's data
# parallelism: rnnx.distributed knows arrays and plain values, not modules -----------------------

def check_same(what, value):
    """ValueError on every rank unless `value`, a dict of plain values, is the same on every
    rank (its repr; == names the difference): the message names `what`, the first key that
    differs and its values on rank 0 and on the first rank that differs. A collective of the
    group (its check only)."""
    Collective(_get_group(), (("collective", f"check of {what}"), *value.items()),
               what=what).checked()


def check_then_broadcast(descriptor, arrays, what):
    """A collective: ValueError on every rank unless every rank passed the same `descriptor`
    ((field, value) pairs, the first ("collective", name); the message names `what` and the
    first field that differs), then rank 0's `arrays` copied into every rank's, in place."""
    group = _get_group()
    collective = Collective(group, descriptor, what=what).checked()
    if group.size > 1:
        collective.wait([group.comm.Ibcast(array, root=0) for array in arrays])


class BucketAverage:
    """The average over the ranks of a fixed list of flat arrays (buckets), in place, each
    bucket's sum started on its own, non-blocking, so that it overlaps the computation of the
    others (DistributedDataParallel's gradient reduction).

    One reduction: begin(), then start(i) for buckets as they become final (and progress(),
    which lets MPI move the sums in flight on), then wait() for all the sums,
    make_identical(buckets) and divide(). Every rank reduces the same plan: `descriptor`,
    checked once per reduction before its first sum starts (a ValueError on every rank naming
    `what` and the first field that differs; its digest is computed once here)."""

    def __init__(self, buckets, descriptor, what):
        self.buckets = buckets
        self._descriptor, self._digest, self._what = descriptor, digest(descriptor), what
        self._requests = [None] * len(buckets)  # the sums in flight
        self._collective = None  # the reduction in progress

    def begin(self):
        """Start a reduction (and its check of the plan)."""
        self._collective = Collective(_get_group(), self._descriptor, what=self._what,
                                      digest_=self._digest)

    def start(self, index):
        """Start the sum of bucket `index` over the ranks (after the plan's check)."""
        group = self._collective.checked().group  # (once: afterwards a no-op)
        self._requests[index] = group.comm.Iallreduce(group.MPI.IN_PLACE, self.buckets[index])

    def progress(self):
        """Let MPI move the sums in flight on (it does so only inside MPI calls)."""
        for request in self._requests:
            if request is not None:
                request.Test()  # a completed request stays, as MPI_REQUEST_NULL

    def wait(self):
        """Start the remaining sums and wait for every one."""
        self._collective.checked()
        for index, request in enumerate(self._requests):
            if request is None:
                self.start(index)
        self._collective.wait(self._requests)
        self._requests = [None] * len(self.buckets)

    def make_identical(self, buckets):
        """Check that every rank holds the same sums in `buckets` (a CRC-32 of them all, its
        max and min over the ranks); if not, broadcast rank 0's. Returns whether they differed."""
        group = self._collective.group
        crc = 0
        for bucket in buckets:
            crc = zlib.crc32(bucket, crc)
        extremes = np.array([crc, -crc], np.int64)
        self._collective.wait([group.comm.Iallreduce(group.MPI.IN_PLACE, extremes,
                                                     op=group.MPI.MAX)])
        if extremes[0] == -extremes[1]:
            return False
        self._collective.wait([group.comm.Ibcast(bucket, root=0) for bucket in buckets])
        return True

    def divide(self):
        """Divide the sums by the world size (the averages), ending the reduction."""
        size = self._collective.group.size
        self._collective = None
        for bucket in self.buckets:
            np.divide(bucket, size, out=bucket)


__all__ = ["ReduceOp", "default_pg_timeout", "is_available", "init_process_group",
           "is_initialized", "get_rank", "get_world_size", "barrier", "all_reduce", "broadcast",
           "all_gather_object", "broadcast_object_list", "destroy_process_group", "abort"]
