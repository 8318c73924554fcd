/* The tile functions and the driver of microgemm.h for one element type, written once and
 * included by microgemm.h once per type (a C template): before including, define
 * RNNX_T (the element type), RNNX_V (a 32-byte vector of them), RNNX_W (elements per vector)
 * and RNNX_FN(name) (the type's name for `name`). A panel of B is 2 vectors wide.
 */
#define T RNNX_T
#define V RNNX_V
#define W RNNX_W

/* Store the first nj (<= 2W) columns of a row of one panel, the vectors v[0], v[1], at p,
 * adding to p when asked. */
static inline __attribute__((always_inline)) void RNNX_FN(store)(T *p, const V *v, ptrdiff_t nj,
                                                                 int accumulate) {
    if (nj == 2 * W) {
        V v0 = v[0], v1 = v[1], c0, c1;
        if (accumulate) {
            memcpy(&c0, p, sizeof c0);
            memcpy(&c1, p + W, sizeof c1);
            v0 += c0;
            v1 += c1;
        }
        memcpy(p, &v0, sizeof v0);
        memcpy(p + W, &v1, sizeof v1);
        return;
    }
    T row[2 * W];
    memcpy(row, v, sizeof row);
    for (ptrdiff_t q = 0; q < nj; q++) p[q] = accumulate ? p[q] + row[q] : row[q];
}

/* C[:R, :] (+)= A[:R, :k] @ (NP panels from B0, panel_stride apart); the last panel has
 * min(nlast, 2W) columns. R and NP are constants at every call, so the loops unroll into
 * R * 2NP accumulator registers. */
static inline __attribute__((always_inline)) void RNNX_FN(tile)(
        const int R, const int NP, ptrdiff_t k, const T *A, ptrdiff_t ars, ptrdiff_t aps,
        const T *B0, ptrdiff_t panel_stride, ptrdiff_t nlast, int accumulate, T *C,
        ptrdiff_t ldc) {
    V acc[6][8];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < 2 * NP; q++) acc[r][q] = (V){0};
    for (ptrdiff_t p = 0; p < k; p++) {
        V b[8];
        for (int q = 0; q < NP; q++)
            memcpy(&b[2 * q], B0 + q * panel_stride + 2 * W * p, 2 * sizeof b[0]);
        for (int r = 0; r < R; r++) {
            T av = A[r * ars + p * aps];
            for (int q = 0; q < 2 * NP; q++) acc[r][q] += av * b[q];
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NP; q++)
            RNNX_FN(store)(C + r * ldc + 2 * W * q, &acc[r][2 * q],
                           q < NP - 1 ? 2 * W : nlast < 2 * W ? nlast : 2 * W, accumulate);
}

/* C (m, n) = A (m, k) @ B (k, n) [+ C when accumulate]; A[i, p] = A[i * ars + p * aps]
 * (row-major A: ars = lda, aps = 1; A stored transposed: ars = 1, aps = lda); ldc: row
 * stride of C; Bp: B in ceil(n / 2W) zero-padded panels that start panel_stride elements
 * apart (k * 2W for a whole B; more when B is rows [k0, k0 + k) of a taller one).
 * Rows of A in blocks of 192 that stay in cache while each panel sweeps the block's 6-row
 * tiles; 4 of the last rows in 4-row tiles; the rest (batch 1 above all) one row at a time,
 * over 4 panels at once while a fourth panel starts before n (8 independent accumulators
 * hide the FMA latency), then panel by panel. */
static void RNNX_FN(gemm_nn)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A, ptrdiff_t ars,
                             ptrdiff_t aps, const T *Bp, ptrdiff_t panel_stride, int accumulate,
                             T *C, ptrdiff_t ldc) {
    ptrdiff_t i, i0, i1, j;
    for (i0 = 0; i0 < m; i0 = i1) {
        i1 = m - i0 > 192 ? i0 + 192 : m;
        for (j = 0; j < n; j += 2 * W)
            for (i = i0; i + 6 <= i1; i += 6)
                RNNX_FN(tile)(6, 1, k, A + i * ars, ars, aps, Bp + j / (2 * W) * panel_stride,
                              panel_stride, n - j, accumulate, C + i * ldc + j, ldc);
        i = i0 + (i1 - i0) / 6 * 6;
        if (i1 - i >= 4) {
            for (j = 0; j < n; j += 2 * W)
                RNNX_FN(tile)(4, 1, k, A + i * ars, ars, aps, Bp + j / (2 * W) * panel_stride,
                              panel_stride, n - j, accumulate, C + i * ldc + j, ldc);
            i += 4;
        }
        for (; i < i1; i++) {
            for (j = 0; j + 6 * W < n; j += 8 * W)
                RNNX_FN(tile)(1, 4, k, A + i * ars, ars, aps, Bp + j / (2 * W) * panel_stride,
                              panel_stride, n - j - 6 * W, accumulate, C + i * ldc + j, ldc);
            for (; j < n; j += 2 * W)
                RNNX_FN(tile)(1, 1, k, A + i * ars, ars, aps, Bp + j / (2 * W) * panel_stride,
                              panel_stride, n - j, accumulate, C + i * ldc + j, ldc);
        }
    }
}

#undef T
#undef V
#undef W
