"""Reuse of the kernels' large scratch arrays between calls.

A training step allocates tens of megabytes of scratch (gate buffers, saved states, packed
weights). Arrays that size are mapped fresh by the allocator on every call, so each call
pays for page faults and for the kernel zeroing every page -- about a sixth of a step.
`take` hands out a view of the requested shape and dtype into a released buffer big enough
for it; `give` returns scratch that nothing references any more. Only arrays created by
`take` and never handed to the caller may be given back.

Buffers are matched by capacity, not by shape: batches of new lengths every step (a new
number of packed rows each time) reuse the same buffers instead of filling the pool with one
set per shape. A buffer serves requests of half its size up to its size; a request that none
fits gets a new buffer a little bigger than asked (up to 1/8), replacing the biggest free
buffer that was too small for it, so the pool follows the workload instead of growing.
"""
import math
import threading

import numpy as np

# Arrays smaller than this come from the allocator's own free lists cheaply.
_MIN_BYTES = 1 << 16


def _capacity(nbytes):
    """nbytes rounded up to a multiple of an eighth of its leading power of two."""
    step = max(1, 1 << (int(nbytes).bit_length() - 4))
    return -(-nbytes // step) * step


class BufferPool:
    """A free list of scratch buffers matched by capacity, bounded by max_bytes in total."""

    def __init__(self, max_bytes=1 << 30):
        self.max_bytes = max_bytes
        self._free = []         # buffers (C-contiguous arrays owning their memory)
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape, dtype):
        """An uninitialised C-contiguous array (a view into a reused buffer when one fits)."""
        dtype = np.dtype(dtype)
        need = math.prod(shape) * dtype.itemsize
        if need < _MIN_BYTES:
            return np.empty(shape, dtype)
        shape = tuple(shape)
        with self._lock:
            fits = [b for b in self._free if need <= b.nbytes <= 2 * need]
            if fits:
                buf = self._remove(min(fits, key=lambda b: b.nbytes))
            else:
                # the workload outgrew a free buffer: the new one replaces it
                small = [b for b in self._free if b.nbytes < need]
                if small:
                    self._remove(max(small, key=lambda b: b.nbytes))
                buf = None
        if buf is None:
            buf = np.empty(_capacity(need), np.uint8)
        return buf.reshape(-1).view(np.uint8)[:need].view(dtype).reshape(shape)

    def _remove(self, buf):
        """Take buf off the free list (lock held); returns it."""
        self._free = [b for b in self._free if b is not buf]
        self._bytes -= buf.nbytes
        return buf

    def give(self, *arrays):
        """Return scratch arrays (None is skipped) for reuse."""
        with self._lock:
            for arr in arrays:
                if arr is None or arr.nbytes < _MIN_BYTES:
                    continue
                buf = arr if arr.base is None else arr.base
                if (not isinstance(buf, np.ndarray) or not buf.flags.owndata
                        or not buf.flags.c_contiguous
                        or any(b is buf for b in self._free)
                        or self._bytes + buf.nbytes > self.max_bytes):
                    continue
                self._free.append(buf)
                self._bytes += buf.nbytes

    def clear(self):
        """Drop every free buffer."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = BufferPool()
