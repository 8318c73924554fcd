"""Thread count of rnnx: its own kernel threads and the BLAS pool under them.

`set_num_threads(n)` / `get_num_threads()`; the default is every core this process may run
on. The kernels run the two directions of a bidirectional layer on two threads, each with a
single-threaded BLAS (`single_threaded_blas()`), so that OpenMP and BLAS threads never
oversubscribe the cores. Results do not depend on the thread count: work is split so that
every number is computed by the same operations in the same order.
"""
import contextlib
import ctypes
import os

import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, so that it can be found)


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _find_openblas_setter():
    """ctypes setter of the thread count of the OpenBLAS that scipy loaded, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas", "scipy_openblas64_", "openblas64_"):
            setter = getattr(lib, prefix + "_set_num_threads", None) or \
                getattr(lib, prefix + "set_num_threads", None)
            if setter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                return setter
    return None


_blas_setter = _find_openblas_setter()
_num_threads = _available_cores()


def _set_blas_threads(n):
    if _blas_setter is not None:
        _blas_setter(n)


def get_num_threads():
    """Number of threads rnnx uses (its kernels and BLAS)."""
    return _num_threads


def set_num_threads(n):
    """Use n >= 1 threads in rnnx kernels and in the BLAS under them."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    _num_threads = n
    _set_blas_threads(n)


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread inside the block (the kernel parallelises above it)."""
    _set_blas_threads(1)
    try:
        yield
    finally:
        _set_blas_threads(_num_threads)


_set_blas_threads(_num_threads)
