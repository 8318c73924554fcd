/* rnnx_sgemm_nn on 512-bit registers (included by microgemm.h when the target has AVX-512F).
 *
 * The same operands and layout as microgemm.h's kernels: B in column panels of 16 floats,
 * which here is one 512-bit register per panel row. A tile of R rows of A times NP panels
 * keeps R * NP accumulators in registers: 6 rows x 4 panels (24 of the 32 registers, 10
 * loads per 24 FMAs) for blocks of rows, and 1-2 rows x 8 panels for the last rows and for
 * batch 1 (8 independent chains hide the FMA latency). Every element of C is still one dot
 * product summed in k order from zero (c += a * b, contracted to an FMA as in microgemm.h),
 * then added to C when accumulating: bitwise the result of the 256-bit kernels, whatever the
 * tiling.
 */
#ifndef RNNX_MICROGEMM512_H
#define RNNX_MICROGEMM512_H
#include <stddef.h>
#include <string.h>

typedef float rnnx_v16f __attribute__((vector_size(64)));

/* Store the first nj (<= 16) columns of v at p, adding to p when asked. */
static inline __attribute__((always_inline)) void rnnx_s512_store(float *p, rnnx_v16f v,
                                                                  ptrdiff_t nj, int accumulate) {
    if (nj == 16) {
        if (accumulate) { rnnx_v16f old; memcpy(&old, p, sizeof old); v += old; }
        memcpy(p, &v, sizeof v);
        return;
    }
    float row[16];
    memcpy(row, &v, sizeof v);
    for (ptrdiff_t q = 0; q < nj; q++) p[q] = accumulate ? p[q] + row[q] : row[q];
}

/* C[:R, :] (+)= A[:R, :k] @ (NP panels from B0); the last panel has min(nlast, 16) columns.
   R and NP are constants at every call, so the loops unroll into registers. */
static inline __attribute__((always_inline)) void rnnx_s512_tile(
        const int R, const int NP, ptrdiff_t k, const float *A, ptrdiff_t ars, ptrdiff_t aps,
        const float *B0, ptrdiff_t panel_stride, ptrdiff_t nlast, int accumulate, float *C,
        ptrdiff_t ldc) {
    rnnx_v16f acc[6][8];
    nlast = nlast < 16 ? nlast : 16;    /* nlast: columns from the last panel's start */
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NP; q++) acc[r][q] = (rnnx_v16f){0};
    for (ptrdiff_t p = 0; p < k; p++) {
        rnnx_v16f b[8];
        for (int q = 0; q < NP; q++) memcpy(&b[q], B0 + q * panel_stride + 16 * p, sizeof b[q]);
        for (int r = 0; r < R; r++) {
            float av = A[r * ars + p * aps];
            for (int q = 0; q < NP; q++) acc[r][q] += av * b[q];
        }
    }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NP; q++)
            rnnx_s512_store(C + r * ldc + 16 * q, acc[r][q], q == NP - 1 ? nlast : 16,
                            accumulate);
}

#define RNNX_S512_TILE(R, NP) rnnx_s512_tile(R, NP, k, a, ars, aps, b0, panel_stride, nlast, \
                                             accumulate, c, ldc)

/* A tile of R (1..6) rows by np panels (1..4, or 1..8 when R <= 2). */
static void rnnx_s512_dispatch(int R, int np, ptrdiff_t k, const float *a, ptrdiff_t ars,
                               ptrdiff_t aps, const float *b0, ptrdiff_t panel_stride,
                               ptrdiff_t nlast, int accumulate, float *c, ptrdiff_t ldc) {
    switch (R * 16 + np) {
    case 0x61: RNNX_S512_TILE(6, 1); break;
    case 0x62: RNNX_S512_TILE(6, 2); break;
    case 0x63: RNNX_S512_TILE(6, 3); break;
    case 0x64: RNNX_S512_TILE(6, 4); break;
    case 0x51: RNNX_S512_TILE(5, 1); break;
    case 0x52: RNNX_S512_TILE(5, 2); break;
    case 0x53: RNNX_S512_TILE(5, 3); break;
    case 0x54: RNNX_S512_TILE(5, 4); break;
    case 0x41: RNNX_S512_TILE(4, 1); break;
    case 0x42: RNNX_S512_TILE(4, 2); break;
    case 0x43: RNNX_S512_TILE(4, 3); break;
    case 0x44: RNNX_S512_TILE(4, 4); break;
    case 0x31: RNNX_S512_TILE(3, 1); break;
    case 0x32: RNNX_S512_TILE(3, 2); break;
    case 0x33: RNNX_S512_TILE(3, 3); break;
    case 0x34: RNNX_S512_TILE(3, 4); break;
    case 0x21: RNNX_S512_TILE(2, 1); break;
    case 0x22: RNNX_S512_TILE(2, 2); break;
    case 0x23: RNNX_S512_TILE(2, 3); break;
    case 0x24: RNNX_S512_TILE(2, 4); break;
    case 0x25: RNNX_S512_TILE(2, 5); break;
    case 0x26: RNNX_S512_TILE(2, 6); break;
    case 0x27: RNNX_S512_TILE(2, 7); break;
    case 0x28: RNNX_S512_TILE(2, 8); break;
    case 0x11: RNNX_S512_TILE(1, 1); break;
    case 0x12: RNNX_S512_TILE(1, 2); break;
    case 0x13: RNNX_S512_TILE(1, 3); break;
    case 0x14: RNNX_S512_TILE(1, 4); break;
    case 0x15: RNNX_S512_TILE(1, 5); break;
    case 0x16: RNNX_S512_TILE(1, 6); break;
    case 0x17: RNNX_S512_TILE(1, 7); break;
    case 0x18: RNNX_S512_TILE(1, 8); break;
    }
}
#undef RNNX_S512_TILE

/* C (m, n) = A (m, k) @ B (k, n) [+ C]: the contract of microgemm.h's rnnx_sgemm_nn. Rows of
   A in blocks of 192 kept in cache while each group of 4 panels sweeps the block's 6-row
   tiles; the block's last 1-5 rows (and batch 1) in one tile per panel group, of 8 panels
   when 1-2 rows. */
static void rnnx_sgemm_nn(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *A, ptrdiff_t ars,
                          ptrdiff_t aps, const float *Bp, ptrdiff_t panel_stride, int accumulate,
                          float *C, ptrdiff_t ldc) {
    ptrdiff_t npan = (n + 15) / 16, i0, i1, i, full, jp;
    for (i0 = 0; i0 < m; i0 = i1) {
        i1 = m - i0 > 192 ? i0 + 192 : m;
        full = i0 + (i1 - i0) / 6 * 6;
        for (jp = 0; jp < npan; jp += 4) {
            int np = npan - jp < 4 ? (int)(npan - jp) : 4;
            for (i = i0; i < full; i += 6)
                rnnx_s512_dispatch(6, np, k, A + i * ars, ars, aps, Bp + jp * panel_stride,
                                   panel_stride, n - (jp + np - 1) * 16, accumulate,
                                   C + i * ldc + jp * 16, ldc);
        }
        if (full < i1) {
            int R = (int)(i1 - full), group = R <= 2 ? 8 : 4;
            for (jp = 0; jp < npan; jp += group) {
                int np = npan - jp < group ? (int)(npan - jp) : group;
                rnnx_s512_dispatch(R, np, k, A + full * ars, ars, aps, Bp + jp * panel_stride,
                                   panel_stride, n - (jp + np - 1) * 16, accumulate,
                                   C + full * ldc + jp * 16, ldc);
            }
        }
    }
}

#endif
