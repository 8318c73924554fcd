"""Thread count of rnnx: its own kernel threads and the BLAS pools under and beside them.

`set_num_threads(n)` / `get_num_threads()`; the default is every core this process may run
on. The kernels split their work into blocks (independent (direction, batch rows) time loops
or a team split by hidden units; row blocks of the whole-sequence GEMMs) and run them on
rnnx's own pool of threads (rnnx/_kernels/team.h; no OpenMP runtime, whose settings would be
shared with every other library in the process), each block a single-threaded BLAS call. The
BLAS that scipy loaded (the one the kernels call) is therefore kept at one thread, so kernel
and BLAS threads never
oversubscribe the cores, and every element is computed the same way whatever the thread
count. NumPy's own BLAS (behind `Linear` and any matmul between rnnx calls, never run
inside a kernel) follows n, when it is a library of its own. threadpoolctl finds and sets
both pools (OpenBLAS, MKL, BLIS; any platform).

Threads do not survive fork: a forked child (multiprocessing's default on Linux) has none of
the parent's pool. It is put on one kernel thread, which runs every job itself, and may not
raise it.
"""
import numbers
import os

import numpy as np

import scipy
import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, so that it can be found)
from threadpoolctl import ThreadpoolController


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _blas_pools(controller):
    """(scipy's, numpy's) BLAS pools as ThreadpoolControllers (threadpoolctl): numpy's are
    the libraries its wheel brings in numpy.libs (or inside numpy/), scipy's -- the one
    scipy.linalg.cython_blas calls -- the others; when every BLAS is numpy's, scipy shares it
    and numpy has none of its own (it must then stay at one thread too)."""
    blas = controller.select(user_api="blas")
    root = os.path.dirname(os.path.dirname(scipy.__file__))
    numpy_dirs = (os.path.join(root, "numpy.libs") + os.sep, os.path.join(root, "numpy") + os.sep)
    numpy_paths = [lib.filepath for lib in blas.lib_controllers
                   if lib.filepath.startswith(numpy_dirs)]
    scipy_paths = [lib.filepath for lib in blas.lib_controllers
                   if lib.filepath not in numpy_paths]
    if not scipy_paths:
        scipy_paths, numpy_paths = numpy_paths, []
    return blas.select(filepath=scipy_paths), blas.select(filepath=numpy_paths)


_scipy_blas, _numpy_blas = _blas_pools(ThreadpoolController())
_num_threads = _available_cores()
_forked = False     # in a process forked from one that had imported rnnx


def get_num_threads():
    """Number of threads rnnx kernels use."""
    return _num_threads


def max_num_threads():
    """The most threads set_num_threads accepts: 4 per available core, at least 64 (each
    thread gets its own kernel scratch, so an absurd count would only exhaust memory)."""
    return max(64, 4 * _available_cores())


def set_num_threads(n):
    """Use n threads in rnnx kernels and in NumPy's BLAS: an integer (any numbers.Integral,
    e.g. np.int64; not bool) in [1, max_num_threads()]; n = 1 in a forked child."""
    global _num_threads
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads expects an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads expects a positive integer, got {n}")
    cap = max_num_threads()
    if n > cap:
        raise ValueError(f"set_num_threads: {n} threads is more than the {cap} allowed "
                         f"(4 per available core, at least 64)")
    if _forked and n > 1:
        raise RuntimeError(
            f"rnnx.set_num_threads({n}) in a forked process: kernel threads do not "
            "survive fork, so rnnx runs on one thread here; start worker processes with "
            "multiprocessing's 'spawn' or 'forkserver' method to use more")
    n = int(n)
    _num_threads = n
    _numpy_blas.limit(limits=min(n, _available_cores()))   # more would only oversubscribe


def pin_kernel_blas():
    """Put scipy's BLAS (the one the kernels call, inside their own threads) back on one
    thread if something raised it, e.g. threadpoolctl.threadpool_limits(n) over every pool:
    each kernel thread would otherwise start n BLAS threads (measured: bidirectional LSTM
    training 2x slower on 2 cores). About a microsecond when nothing changed."""
    for lib in _scipy_blas.lib_controllers:
        if lib.num_threads != 1:
            lib.set_num_threads(1)


def _after_fork_in_child():
    global _num_threads, _forked
    _num_threads, _forked = 1, True


_scipy_blas.limit(limits=1)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
