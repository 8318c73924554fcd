"""Thread count used by rnnx kernels (parallel directions and batch work).

`set_num_threads(n)` / `get_num_threads()`; the default is every core this process may run on.
Results do not depend on the thread count: parallel work is split so that every number is
computed by the same operations in the same order whatever the number of threads.
"""
import os

def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
