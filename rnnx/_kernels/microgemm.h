/* Small row-major GEMM for the per-step recurrent products: C = A @ B (+ C).
 *
 * The time loop multiplies a few dozen to a few hundred rows of state by the same weight
 * matrix at every step. A general BLAS call re-packs both operands each time, which costs
 * as much as the arithmetic at these sizes; here B is packed once per layer call into
 * panels of 2W columns (W = 8 floats or 4 doubles per vector), panel jp holding rows
 * p = 0..k-1 of columns [2W jp, 2W jp + 2W) back to back, so that a panel streams through
 * the cache without the set conflicts of a power-of-two row stride. Each block of 6 rows of
 * A keeps 12 vector accumulators in registers (the shape of the usual Haswell micro-kernel);
 * 4 leftover rows take 8, and the last rows go one at a time over four panels.
 * The last panel is zero-padded; only the valid columns of C are written. With the
 * kernels' -march flag the vectors are AVX2/FMA (or AVX-512) registers; without it the
 * compiler splits them into what the target has. Every element of C is one dot product
 * summed in k order, so the result does not depend on how rows are split over threads.
 */
#ifndef RNNX_MICROGEMM_H
#define RNNX_MICROGEMM_H
#include <stddef.h>
#include <string.h>

typedef float rnnx_v8f __attribute__((vector_size(32)));
typedef double rnnx_v4d __attribute__((vector_size(32)));

/* The vectors travel by pointer or through this macro, never as a function's argument or
 * result: below AVX (the x86-64 baseline level, other architectures) a 32-byte vector has no
 * fixed calling convention (gcc's -Wpsabi). Reads one vector of type V from p, any alignment. */
#define RNNX_VLOAD(V, p) __extension__ ({ V v_; memcpy(&v_, (p), sizeof v_); v_; })

#define RNNX_DEFINE_GEMM_NN(NAME, T, V, W)                                                    \
/* Store the first nj (<= 2W) columns of the row (*r0, *r1) at p, adding to p when asked. */  \
static inline void NAME##_store(T *p, const V *r0, const V *r1, ptrdiff_t nj,                 \
                                int accumulate) {                                             \
    V v0 = *r0, v1 = *r1;                                                                     \
    if (nj == 2 * W) {                                                                        \
        if (accumulate) { v0 += RNNX_VLOAD(V, p); v1 += RNNX_VLOAD(V, p + W); }               \
        memcpy(p, &v0, sizeof v0);                                                            \
        memcpy(p + W, &v1, sizeof v1);                                                        \
        return;                                                                               \
    }                                                                                         \
    T row[2 * W];                                                                             \
    memcpy(row, &v0, sizeof v0);                                                              \
    memcpy(row + W, &v1, sizeof v1);                                                          \
    for (ptrdiff_t q = 0; q < nj; q++) p[q] = accumulate ? p[q] + row[q] : row[q];            \
}                                                                                             \
/* One row of C (n columns) = a (k, strided by aps) @ B [+ C]: four panels at a time, so      \
   that eight independent accumulators hide the FMA latency (batch 1 is this row alone). */   \
static void NAME##_row(ptrdiff_t n, ptrdiff_t k, const T *a, ptrdiff_t aps, const T *Bp,      \
                       ptrdiff_t panel_stride, int accumulate, T *c) {                        \
    ptrdiff_t j, p;                                                                           \
    for (j = 0; j + 6 * W < n; j += 8 * W) {           /* a fourth panel starts before n */   \
        const T *b0 = Bp + j / (2 * W) * panel_stride, *b1 = b0 + panel_stride,               \
                *b2 = b1 + panel_stride, *b3 = b2 + panel_stride;                             \
        V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0},        \
          c31 = {0};                                                                          \
        for (p = 0; p < k; p++) {                                                             \
            T av = a[p * aps];                                                                \
            ptrdiff_t q = 2 * W * p;                                                          \
            c00 += av * RNNX_VLOAD(V, b0 + q); c01 += av * RNNX_VLOAD(V, b0 + q + W);         \
            c10 += av * RNNX_VLOAD(V, b1 + q); c11 += av * RNNX_VLOAD(V, b1 + q + W);         \
            c20 += av * RNNX_VLOAD(V, b2 + q); c21 += av * RNNX_VLOAD(V, b2 + q + W);         \
            c30 += av * RNNX_VLOAD(V, b3 + q); c31 += av * RNNX_VLOAD(V, b3 + q + W);         \
        }                                                                                     \
        NAME##_store(c + j, &c00, &c01, 2 * W, accumulate);                                   \
        NAME##_store(c + j + 2 * W, &c10, &c11, 2 * W, accumulate);                           \
        NAME##_store(c + j + 4 * W, &c20, &c21, 2 * W, accumulate);                           \
        NAME##_store(c + j + 6 * W, &c30, &c31, n - j - 6 * W < 2 * W ? n - j - 6 * W : 2 * W, \
                     accumulate);                                                             \
    }                                                                                         \
    for (; j < n; j += 2 * W) {                                                               \
        const T *b0 = Bp + j / (2 * W) * panel_stride;                                        \
        V c00 = {0}, c01 = {0};                                                               \
        for (p = 0; p < k; p++) {                                                             \
            T av = a[p * aps];                                                                \
            c00 += av * RNNX_VLOAD(V, b0 + 2 * W * p);                                        \
            c01 += av * RNNX_VLOAD(V, b0 + 2 * W * p + W);                                    \
        }                                                                                     \
        NAME##_store(c + j, &c00, &c01, n - j < 2 * W ? n - j : 2 * W, accumulate);           \
    }                                                                                         \
}                                                                                             \
/* C (m, n) = A (m, k) @ B (k, n) [+ C when accumulate]; A[i, p] = A[i * ars + p * aps]       \
   (row-major A: ars = lda, aps = 1; A stored transposed: ars = 1, aps = lda); ldc: row       \
   stride of C; Bp: B in ceil(n / 2W) zero-padded panels (see above) that start panel_stride  \
   elements apart (k * 2W for a whole B; more when B is rows [k0, k0 + k) of a taller one). */ \
static void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A, ptrdiff_t ars,            \
                 ptrdiff_t aps, const T *Bp, ptrdiff_t panel_stride, int accumulate, T *C,    \
                 ptrdiff_t ldc) {                                                             \
    ptrdiff_t i, j, p, i0, i1;                                                                \
    for (i0 = 0; i0 < m; i0 = i1) {      /* blocks of 192 rows of A stay in cache over j */   \
    i1 = m - i0 > 192 ? i0 + 192 : m;                                                         \
    for (j = 0; j < n; j += 2 * W) {                                                          \
        const T *panel = Bp + j / (2 * W) * panel_stride;                                     \
        ptrdiff_t nj = n - j < 2 * W ? n - j : 2 * W;                                         \
        for (i = i0; i + 6 <= i1; i += 6) {                                                   \
            const T *a0 = A + i * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars,        \
                    *a4 = a3 + ars, *a5 = a4 + ars;                                           \
            V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0},               \
              c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};               \
            for (p = 0; p < k; p++) {                                                         \
                V b0 = RNNX_VLOAD(V, panel + 2 * W * p);                                      \
                V b1 = RNNX_VLOAD(V, panel + 2 * W * p + W);                                  \
                ptrdiff_t q = p * aps;                                                        \
                c00 += a0[q] * b0; c01 += a0[q] * b1;                                         \
                c10 += a1[q] * b0; c11 += a1[q] * b1;                                         \
                c20 += a2[q] * b0; c21 += a2[q] * b1;                                         \
                c30 += a3[q] * b0; c31 += a3[q] * b1;                                         \
                c40 += a4[q] * b0; c41 += a4[q] * b1;                                         \
                c50 += a5[q] * b0; c51 += a5[q] * b1;                                         \
            }                                                                                 \
            T *c = C + i * ldc + j;                                                           \
            NAME##_store(c, &c00, &c01, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c10, &c11, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c20, &c21, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c30, &c31, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c40, &c41, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c50, &c51, nj, accumulate);                                      \
        }                                                                                     \
    }                                                                                         \
    i = i0 + (i1 - i0) / 6 * 6;                                                               \
    if (i1 - i >= 4) {                  /* 4 of the last rows: 8 accumulators per panel */    \
        for (j = 0; j < n; j += 2 * W) {                                                      \
            const T *panel = Bp + j / (2 * W) * panel_stride;                                 \
            ptrdiff_t nj = n - j < 2 * W ? n - j : 2 * W;                                     \
            const T *a0 = A + i * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars;        \
            V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0},               \
              c30 = {0}, c31 = {0};                                                           \
            for (p = 0; p < k; p++) {                                                         \
                V b0 = RNNX_VLOAD(V, panel + 2 * W * p);                                      \
                V b1 = RNNX_VLOAD(V, panel + 2 * W * p + W);                                  \
                ptrdiff_t q = p * aps;                                                        \
                c00 += a0[q] * b0; c01 += a0[q] * b1;                                         \
                c10 += a1[q] * b0; c11 += a1[q] * b1;                                         \
                c20 += a2[q] * b0; c21 += a2[q] * b1;                                         \
                c30 += a3[q] * b0; c31 += a3[q] * b1;                                         \
            }                                                                                 \
            T *c = C + i * ldc + j;                                                           \
            NAME##_store(c, &c00, &c01, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c10, &c11, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c20, &c21, nj, accumulate); c += ldc;                            \
            NAME##_store(c, &c30, &c31, nj, accumulate);                                      \
        }                                                                                     \
        i += 4;                                                                               \
    }                                                                                         \
    for (; i < i1; i++)                 /* the rest one by one */                             \
        NAME##_row(n, k, A + i * ars, aps, Bp, panel_stride, accumulate, C + i * ldc);        \
    }                                                                                         \
}

#if defined(__AVX512F__) && !defined(RNNX_NO_AVX512)
#include "microgemm512.h"      /* rnnx_sgemm_nn on 512-bit registers, the same results */
#else
RNNX_DEFINE_GEMM_NN(rnnx_sgemm_nn, float, rnnx_v8f, 8)
#endif
RNNX_DEFINE_GEMM_NN(rnnx_dgemm_nn, double, rnnx_v4d, 4)

#endif
