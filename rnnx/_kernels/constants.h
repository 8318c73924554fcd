/* Every constant of the kernel layer, in one place. _layout.pxd declares them for the Cython
 * modules and _layout.pyx exports them to Python (rnnx.nn, the reference, bench).
 */
#ifndef RNNX_CONSTANTS_H
#define RNNX_CONSTANTS_H

/* Cell kinds (rnnx._kernels._layout.Cell) and their number of gates. */
enum { RNNX_RNN_TANH = 0, RNNX_RNN_RELU = 1, RNNX_LSTM = 2, RNNX_GRU = 3 };
static const int rnnx_num_gates[4] = {1, 1, 4, 3};

/* Bytes per column panel of a packed B operand (microgemm.h): 16 floats or 8 doubles. */
#define RNNX_PANEL_BYTES 64
/* L2 bytes that a direction's input and recurrent weights must fit in to be projected step
 * by step and kept packed between inference calls. */
#define RNNX_L2_BYTES (512 * 1024)

/* Row blocks of the time loop: at most MAX_BLOCKS per direction, each of at least
 * MIN_BLOCK_ROWS rows. A batch of fewer than SMALL_BATCH rows (two row blocks) runs its time
 * loop on a team split by hidden units, and projects its inputs up front. */
#define RNNX_MAX_BLOCKS 64
#define RNNX_MIN_BLOCK_ROWS 8
#define RNNX_SMALL_BATCH (2 * RNNX_MIN_BLOCK_ROWS)
/* Multiply-adds per row and step worth a team's two barriers. */
#define RNNX_MIN_TEAM_WORK 32768

/* Rows of k per packed chunk in the weight-gradient GEMMs, and rows of C per block there. */
#define RNNX_K_CHUNK 256
#define RNNX_WEIGHT_GRAD_ROWS 128
/* Rows of C per block of the whole-sequence GEMMs (and per cache block of the micro-GEMM). */
#define RNNX_SEQUENCE_ROWS 192

/* With the BLAS backend the time loop's products are cut into tiles of BLAS_ROWS x BLAS_COLS
 * at fixed places (row blocks start at multiples of BLAS_ROWS, team shares at multiples of
 * BLAS_COLS): OpenBLAS's bits depend on a call's m and n, so every call must be the same
 * whatever the thread count. */
#define RNNX_BLAS_ROWS 32
#define RNNX_BLAS_COLS 64

#endif
