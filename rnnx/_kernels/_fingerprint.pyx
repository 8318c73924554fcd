# Fingerprints of arrays (fingerprint.h), compiled once: the checks that what backward reads
# did not change since its forward.
from libc.stdint cimport uint32_t
import numpy as np

cdef extern from "fingerprint.h":
    void rnnx_fingerprint(const unsigned char *p, size_t n, uint32_t *lanes) noexcept nogil


def fingerprint(a):
    """64 bytes that identify the bytes of array a (fingerprint.h): any change of one element
    changes them, and so does, but for a chance of about 2^-32, any other change (a
    permutation of the elements included). Reads a at about memory speed, without the GIL."""
    cdef const unsigned char[::1] data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    cdef uint32_t[16] lanes
    cdef size_t n = data.shape[0]
    with nogil:
        rnnx_fingerprint(&data[0] if n else NULL, n, lanes)
    return (<char *> lanes)[:sizeof(lanes)]
