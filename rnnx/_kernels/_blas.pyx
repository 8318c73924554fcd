# Row-major GEMM over scipy's Fortran BLAS, for float and double.
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm

# Rows of C per block in pgemm (a block is one single-threaded BLAS call).
DEF ROWS_PER_BLOCK = 128
DEF MAX_BLOCKS = 64


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
               const floating *a, int lda, const floating *b, int ldb, floating beta,
               floating *c, int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is (m, k): A is (m, k) with row stride lda, or (k, m) when trans_a.
    op(B) is (k, n): B is (k, n) with row stride ldb, or (n, k) when trans_b.
    Row-major C is column-major C^T = op(B)^T op(A)^T, so B goes first.
    """
    if m <= 0 or n <= 0:
        return
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if k <= 0:
        # Nothing to multiply: C = beta * C (BLAS would do the same, but k=0 trips some builds).
        _scale(m, n, beta, c, ldc)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda, &beta, c, &ldc)


cdef void _scale(int m, int n, floating beta, floating *c, int ldc) noexcept nogil:
    cdef int i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]


cdef void pgemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                const floating *a, int lda, const floating *b, int ldb, floating beta,
                floating *c, int ldc, int num_threads) noexcept nogil:
    """gemm() split into blocks of rows of C that run on up to num_threads threads.

    The blocks depend on m alone, never on the thread count, and each is one call of a
    single-threaded BLAS: the result is bitwise the same for any num_threads (a threaded
    BLAS call is not: its partition of the work follows its thread count).
    """
    cdef int blocks = m // ROWS_PER_BLOCK, i, r0, r1
    if blocks > MAX_BLOCKS:
        blocks = MAX_BLOCKS
    if blocks <= 1 or num_threads <= 1:
        blocks = blocks if blocks > 1 else 1
        for i in range(blocks):
            r0 = i * m // blocks
            r1 = (i + 1) * m // blocks
            gemm(trans_a, trans_b, r1 - r0, n, k, alpha, a + (r0 if trans_a else r0 * lda), lda,
                 b, ldb, beta, c + r0 * ldc, ldc)
        return
    for i in prange(blocks, num_threads=num_threads, schedule="static"):
        r0 = i * m // blocks
        r1 = (i + 1) * m // blocks
        gemm(trans_a, trans_b, r1 - r0, n, k, alpha, a + (r0 if trans_a else r0 * lda), lda,
             b, ldb, beta, c + r0 * ldc, ldc)
