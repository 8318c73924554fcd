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
  other ranks waiting forever in their next collective call. (A rank killed by a signal ends
  the job through mpiexec. A rank that calls sys.exit(code) on its own is not covered, as
  Python runs no hook for it: call abort(code) there instead, or run the script as `python -m
  mpi4py script.py`, which also aborts on SystemExit. rnnx-mnist --distributed handles it.)

Importing rnnx never imports mpi4py; is_available() tells whether it is installed.
"""
import importlib.util
import os
import sys
import time
import traceback

import numpy as np

from .. import _threads

# How long a message written just before MPI_Abort is given to reach mpiexec (see _report).
_ABORT_GRACE_SECONDS = 0.5

INSTALL_HINT = ('rnnx.distributed needs mpi4py and an MPI library: pip install "rnnx[distributed]" '
                '(or: pip install mpi4py mpich)')


class ReduceOp:
    """The reduction operations of all_reduce (their names as strings are accepted too)."""
    SUM, AVG, PRODUCT, MIN, MAX = "sum", "avg", "prod", "min", "max"


_group = None  # the _Group of init_process_group, None before it and after destroy


class _Group:
    """What init_process_group sets up: the communicator and the hook it replaced."""

    def __init__(self, mpi):
        self.MPI = mpi
        self.comm = mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local = self.comm.Split_type(mpi.COMM_TYPE_SHARED)  # the ranks on this host
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


def init_process_group(backend="mpi"):
    """Join the job's process group, MPI_COMM_WORLD (a second call is an error, as in torch).

    Sets this rank's thread count to its share of its host's cores and installs the excepthook
    that ends the whole job on an uncaught exception (see the module docstring)."""
    global _group
    if backend not in (None, "mpi"):
        raise ValueError(f"rnnx.distributed supports the 'mpi' backend only, got {backend!r}")
    if _group is not None:
        raise ValueError("trying to initialize the default process group twice!")
    group = _Group(_import_mpi())
    _threads.set_num_threads(_host_share_of_cores(group.local))
    sys.excepthook = _abort_on_uncaught_exception
    _group = group


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
    group.comm.Abort(code)


def _report(text):
    """Write a message to stderr now (before an abort), and give mpiexec's I/O forwarding a
    moment to pass it on: MPI_Abort kills the ranks and their proxies at once, and a message
    still in a proxy's pipe is lost (seen when two ranks abort together on a busy machine)."""
    sys.stderr.write(f"rnnx.distributed: {text.rstrip()}\n")
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_SECONDS)


def abort(code=1, reason=None):
    """End every rank of the job now, with exit code `code` (MPI_Abort of MPI_COMM_WORLD);
    `reason` is printed first. Without a group of more than one rank, raises SystemExit(code)."""
    group = _group
    if reason is not None:
        _report(reason)
    if group is None or group.size == 1:
        raise SystemExit(code)
    group.comm.Abort(code)


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
    _get_group().comm.Barrier()


def _check_array(array, what):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} expects a NumPy array, got {type(array).__name__}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{what} works in place: the array must be C-contiguous and writeable")


def all_reduce(array, op=ReduceOp.SUM):
    """Reduce `array` over the ranks, in place: op is "sum", "avg" (the sum divided by the world
    size; float arrays only), "prod", "min" or "max". Every rank passes an array of the same
    shape and dtype."""
    group = _get_group()
    _check_array(array, "all_reduce")
    mpi_ops = {"sum": group.MPI.SUM, "avg": group.MPI.SUM, "prod": group.MPI.PROD,
               "min": group.MPI.MIN, "max": group.MPI.MAX}
    if op not in mpi_ops:
        raise ValueError(f"all_reduce: op must be one of {sorted(mpi_ops)}, got {op!r}")
    if op == "avg" and array.dtype.kind != "f":
        raise TypeError(f"all_reduce: op 'avg' needs a float array, got dtype {array.dtype}")
    group.comm.Allreduce(group.MPI.IN_PLACE, array, op=mpi_ops[op])
    if op == "avg":
        np.divide(array, group.size, out=array)


def broadcast(array, src=0):
    """Copy rank src's `array` into every rank's (in place; same shape and dtype everywhere)."""
    group = _get_group()
    _check_array(array, "broadcast")
    _check_src(src, group)
    group.comm.Bcast(array, root=src)


def _check_src(src, group):
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < group.size:
        raise ValueError(f"src must be a rank in [0, {group.size}), got {src!r}")


def all_gather_object(object_list, obj):
    """object_list[r] = rank r's obj (picklable), on every rank (world-size items)."""
    group = _get_group()
    if len(object_list) != group.size:
        raise ValueError(f"all_gather_object: object_list must have {group.size} items (the "
                         f"world size), got {len(object_list)}")
    object_list[:] = group.comm.allgather(obj)


def broadcast_object_list(object_list, src=0):
    """Replace the items of every rank's object_list by rank src's (picklable objects)."""
    group = _get_group()
    _check_src(src, group)
    received = group.comm.bcast(list(object_list) if group.rank == src else None, root=src)
    if len(received) != len(object_list):
        raise ValueError(f"broadcast_object_list: rank {src} sent {len(received)} objects, this "
                         f"rank's list has {len(object_list)}")
    object_list[:] = received


def destroy_process_group():
    """Leave the group: restore sys.excepthook; init_process_group may be called again (MPI
    itself stays initialised until the process exits)."""
    global _group
    group = _get_group()
    if sys.excepthook is _abort_on_uncaught_exception:
        sys.excepthook = group.previous_excepthook
    group.local.Free()
    _group = None


def _mpi():
    """The mpi4py.MPI module of the group."""
    return _get_group().MPI


def _communicator():
    """The group's MPI communicator (for rnnx's own collectives, e.g. DistributedDataParallel)."""
    return _get_group().comm


def _check_same(what, value):
    """ValueError on every rank unless `value` (picklable, compared with ==; a dict of plain
    values, or a plain value) is the same on every rank; the message names `what`, the first
    rank that differs from rank 0 and (for a dict) the keys that differ."""
    group = _get_group()
    values = group.comm.allgather(value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if not differ:
        return
    r = differ[0]
    if isinstance(value, dict):  # name the keys that differ
        keys = [k for k in values[0] if values[0][k] != values[r].get(k)]
        shown = "; ".join(f"{k}: {values[0][k]!r} on rank 0, {values[r].get(k)!r} on rank {r}"
                          for k in keys)
    else:
        shown = f"{values[0]!r} on rank 0, {values[r]!r} on rank {r}"
    raise ValueError(f"{what} differs across the ranks of the process group: {shown}")


__all__ = ["ReduceOp", "is_available", "init_process_group", "is_initialized", "get_rank",
           "get_world_size", "barrier", "all_reduce", "broadcast", "all_gather_object",
           "broadcast_object_list", "destroy_process_group", "abort"]
