"""Thread count of rnnx: its own kernel threads and the BLAS pool under them.

`set_num_threads(n)` / `get_num_threads()`; the default is every core this process may run
on. The kernels split their work into fixed blocks (independent (direction, batch rows) time
loops; row blocks of the whole-sequence GEMMs) and run them on OpenMP threads, each block a
single-threaded BLAS call. The BLAS that scipy loaded (the one the kernels call, not numpy's)
is therefore kept at one thread, so OpenMP and BLAS threads never oversubscribe the cores and
results do not depend on the thread count: the blocks follow the shapes alone.
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


def _find_openblas_setter():
    """ctypes function setting the thread count of the OpenBLAS that scipy loaded, or None.

    numpy may load an OpenBLAS of its own; scipy's (bundled beside scipy, or the system's)
    is the one scipy.linalg.cython_blas calls, so it is tried first and numpy's never.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    scipy_root = os.path.dirname(os.path.dirname(scipy.__file__))
    numpy_libs = os.path.join(scipy_root, "numpy.libs")
    paths = sorted((p for p in paths if not p.startswith(numpy_libs)),
                   key=lambda p: not p.startswith(os.path.join(scipy_root, "scipy")))
    for path in paths:
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


def get_num_threads():
    """Number of threads rnnx kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use n >= 1 threads in rnnx kernels."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    _num_threads = n


if _blas_setter is not None:
    _blas_setter(1)
