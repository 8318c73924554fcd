# The micro-kernel's column panels (microgemm.h): weights packed once per call, or kept
# packed between inference calls (refresh_panels).

cdef void _pack_transposed(intp k, intp n, const floating *w, intp ldw,
                           floating *out) noexcept nogil:
    """out (ceil(n / W), k, W) = w.T in column panels, w (n, k) with row stride ldw:
    out[j, p, q] = w[j * W + q, p], zeros past row n of w. Each panel's k * W block (8 KiB at
    k = 128) stays in L1 while w's rows stream through it."""
    cdef intp W = _panel_width(out), j, p, q, rows
    cdef floating *o
    cdef const floating *src
    for j in range((n + W - 1) // W):
        o = out + j * k * W
        rows = min(W, n - j * W)
        for q in range(rows):
            src = w + (j * W + q) * ldw
            for p in range(k):
                o[p * W + q] = src[p]
        for q in range(rows, W):
            for p in range(k):
                o[p * W + q] = 0


def pack_panels(const floating[:, :] b, floating[:, :, ::1] out):
    """out (ceil(n / w), k, w) = b (k, n, any strides) in the step GEMM's column panels of
    PANEL_BYTES (microgemm.h): out[j, p, q] = b[p, j * w + q], zeros past column n."""
    cdef intp k = b.shape[0], n = b.shape[1], w = panel_width(sizeof(floating))
    if out.shape[0] != (n + w - 1) // w or out.shape[1] != k or out.shape[2] != w:
        raise ValueError(f"out must have shape {((n + w - 1) // w, k, w)}, got "
                         f"{(out.shape[0], out.shape[1], out.shape[2])}")
    if k == 0 or n == 0:
        return
    # b = w.T of a row-major w (the forward's weights)
    cdef bint transposed = (b.strides[0] == sizeof(floating) and b.strides[1] != sizeof(floating)
                            and b.strides[1] % sizeof(floating) == 0)
    with nogil:
        if transposed:
            _pack_transposed(k, n, &b[0, 0], b.strides[1] // sizeof(floating), &out[0, 0, 0])
        else:
            _pack_strided(b, out)


def refresh_panels(const floating[:, ::1] w, floating[:, ::1] packed_from,
                   floating[:, :, ::1] panels, bint force=False):
    """Keep panels = pack_panels(w.T) between calls: w (n, k) is compared byte for byte with
    packed_from, the copy of w the panels were packed from, and only when they differ (or
    `force`) is w copied there and packed again. Returns whether it packed. The comparison
    reads w and the copy once, a fraction of packing (a strided transposition)."""
    cdef intp n = w.shape[0], k = w.shape[1], width = panel_width(sizeof(floating))
    if packed_from.shape[0] != n or packed_from.shape[1] != k:
        raise ValueError(f"packed_from must have shape {(n, k)}, got "
                         f"{(packed_from.shape[0], packed_from.shape[1])}")
    if panels.shape[0] != (n + width - 1) // width or panels.shape[1] != k or panels.shape[2] != width:
        raise ValueError(f"panels must have shape {((n + width - 1) // width, k, width)}, got "
                         f"{(panels.shape[0], panels.shape[1], panels.shape[2])}")
    if n == 0 or k == 0:
        return False
    cdef size_t nbytes = n * k * sizeof(floating)
    cdef bint changed
    with nogil:
        changed = force or memcmp(&w[0, 0], &packed_from[0, 0], nbytes) != 0
        if changed:
            memcpy(&packed_from[0, 0], &w[0, 0], nbytes)
            _pack_transposed(k, n, &w[0, 0], k, &panels[0, 0, 0])
    return changed

cdef void _pack_strided(const floating[:, :] b, floating[:, :, ::1] out) noexcept nogil:
    """pack_panels for any other strides (b's rows contiguous: one copy per panel row)."""
    cdef intp k = b.shape[0], n = b.shape[1], w = out.shape[2], j, p, q, cols
    cdef bint rows_contiguous = b.strides[1] == sizeof(floating)
    for j in range(out.shape[0]):
        cols = min(w, n - j * w)
        for p in range(k):
            if rows_contiguous:
                memcpy(&out[j, p, 0], &b[p, j * w], cols * sizeof(floating))
            else:
                for q in range(cols):
                    out[j, p, q] = b[p, j * w + q]
            for q in range(cols, w):
                out[j, p, q] = 0

