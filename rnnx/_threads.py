"""Thread count of rnnx: its own kernel threads and the BLAS pools under and beside them.

`set_num_threads(n)` / `get_num_threads()`; the default is every core this process may run
on. The kernels split their work into blocks (independent (direction, batch rows) time loops
or a team split by hidden units; row blocks of the whole-sequence GEMMs) and run them on
OpenMP threads, each block a single-threaded BLAS call. The BLAS that scipy loaded (the one
the kernels call) is therefore kept at one thread, so OpenMP and BLAS threads never
oversubscribe the cores, and every element is computed the same way whatever the thread
count. NumPy's own OpenBLAS (behind `Linear` and any matmul between rnnx calls, never run
inside a kernel) follows n (at most one thread per core), when it is a library of its own.

GNU OpenMP (libgomp) is not fork-safe: a child forked after the parent's kernels ran
parallel regions hangs in its first one. A forked child (multiprocessing's default on Linux)
is therefore put on one kernel thread, which enters no parallel region, and may not raise it.
"""
import ctypes
import os

import scipy
import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, so that it can be found)


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _openblas_setter(path):
    """ctypes function setting the thread count of the OpenBLAS at `path`, or None."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads",
                 "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"):
        setter = getattr(lib, name, None)
        if setter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            return setter
    return None


def _find_openblas_setters():
    """(scipy's, numpy's) OpenBLAS thread-count setters; None where not found, and None for
    numpy's when it shares scipy's library (which must stay at one thread).

    scipy's (bundled beside scipy, or the system's) is the one scipy.linalg.cython_blas calls;
    numpy's wheel brings its own in numpy.libs.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None, None
    root = os.path.dirname(os.path.dirname(scipy.__file__))
    numpy_libs = os.path.join(root, "numpy.libs")
    ours = sorted((p for p in paths if not p.startswith(numpy_libs)),
                  key=lambda p: not p.startswith(os.path.join(root, "scipy")))
    theirs = sorted(p for p in paths if p.startswith(numpy_libs))
    scipy_setter = next(filter(None, map(_openblas_setter, ours)), None)
    numpy_setter = next(filter(None, map(_openblas_setter, theirs)), None)
    return scipy_setter, numpy_setter


_blas_setter, _numpy_blas_setter = _find_openblas_setters()
_num_threads = _available_cores()
_forked = False     # in a process forked from one that had imported rnnx


def get_num_threads():
    """Number of threads rnnx kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use n >= 1 threads in rnnx kernels and in NumPy's BLAS (n = 1 in a forked child)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    if _forked and n > 1:
        raise RuntimeError(
            f"rnnx.set_num_threads({n}) in a forked process: the OpenMP runtime does not "
            "survive fork, so rnnx runs on one thread here; start worker processes with "
            "multiprocessing's 'spawn' or 'forkserver' method to use more")
    _num_threads = n
    if _numpy_blas_setter is not None:
        _numpy_blas_setter(min(n, _available_cores()))   # more would only oversubscribe


def _after_fork_in_child():
    global _num_threads, _forked
    _num_threads, _forked = 1, True


if _blas_setter is not None:
    _blas_setter(1)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
