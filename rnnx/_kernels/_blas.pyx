# Row-major GEMM over scipy's Fortran BLAS, for float and double.
from scipy.linalg.cython_blas cimport sgemm, dgemm


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

