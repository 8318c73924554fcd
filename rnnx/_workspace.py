"""Reuse of the kernels' large scratch arrays between calls.

A training step allocates tens of megabytes of scratch (gate buffers, saved states, packed
weights). Arrays that size are mapped fresh by the allocator on every call, so each call
pays for page faults and for the kernel zeroing every page -- about a sixth of a step.
`take` hands out a released array of the same shape and dtype when there is one; `give`
returns scratch that nothing references any more. Only arrays created by `take` and never
handed to the caller may be given back.
"""
import threading

import numpy as np

# Arrays smaller than this come from the allocator's own free lists cheaply.
_MIN_BYTES = 1 << 16


class BufferPool:
    """A free list of scratch arrays per (shape, dtype), bounded by max_bytes in total."""

    def __init__(self, max_bytes=1 << 30):
        self.max_bytes = max_bytes
        self._free = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape, dtype):
        """An uninitialised C-contiguous array (reused when one is free)."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            arrays = self._free.get(key)
            if arrays:
                arr = arrays.pop()
                self._bytes -= arr.nbytes
                return arr
        return np.empty(key[0], key[1])

    def give(self, *arrays):
        """Return scratch arrays (None is skipped) for reuse."""
        with self._lock:
            for arr in arrays:
                if arr is None or arr.nbytes < _MIN_BYTES:
                    continue
                if self._bytes + arr.nbytes > self.max_bytes:
                    continue
                self._free.setdefault((arr.shape, arr.dtype), []).append(arr)
                self._bytes += arr.nbytes

    def clear(self):
        """Drop every free array."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = BufferPool()
