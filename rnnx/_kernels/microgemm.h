/* Small row-major GEMM for the per-step recurrent products: C = A @ B (+ C).
 *
 * The time loop multiplies a few dozen to a few hundred rows of state by the same weight
 * matrix at every step. A general BLAS call re-packs both operands each time, which costs
 * as much as the arithmetic at these sizes; here B is packed once per layer call into
 * panels of 64 bytes (RNNX_PANEL_BYTES: 2W columns, W = 8 floats or 4 doubles per vector),
 * panel jp holding rows p = 0..k-1 of columns [2W jp, 2W jp + 2W) back to back, so that a
 * panel streams through the cache without the set conflicts of a power-of-two row stride.
 * A tile of R rows of A times NP panels keeps its R * 2NP accumulators in registers
 * (microgemm_tiles.h): 6 rows x 1 panel (the shape of the usual Haswell micro-kernel),
 * 4 x 1 for leftover rows, 1 x 4 for the last rows one by one. The last panel is
 * zero-padded; only the valid columns of C are written. With the kernels' -march flag the
 * vectors are AVX2/FMA (or AVX-512) registers; without it the compiler splits them into what
 * the target has. Every element of C is one dot product summed in k order, so the result
 * does not depend on how rows are split over threads, nor on the tiling.
 */
#ifndef RNNX_MICROGEMM_H
#define RNNX_MICROGEMM_H
#include <stddef.h>
#include <string.h>

typedef float rnnx_v8f __attribute__((vector_size(32)));
typedef double rnnx_v4d __attribute__((vector_size(32)));

#define RNNX_T double
#define RNNX_V rnnx_v4d
#define RNNX_W 4
#define RNNX_FN(name) rnnx_d##name
#include "microgemm_tiles.h"
#undef RNNX_T
#undef RNNX_V
#undef RNNX_W
#undef RNNX_FN

#if defined(__AVX512F__) && !defined(RNNX_NO_AVX512)
#include "microgemm512.h"      /* rnnx_sgemm_nn on 512-bit registers, the same results */
#else
#define RNNX_T float
#define RNNX_V rnnx_v8f
#define RNNX_W 8
#define RNNX_FN(name) rnnx_s##name
#include "microgemm_tiles.h"
#undef RNNX_T
#undef RNNX_V
#undef RNNX_W
#undef RNNX_FN
#endif

#endif
