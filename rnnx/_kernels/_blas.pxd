# Row-major BLAS for the kernels, over scipy.linalg.cython_blas (float32 and float64).
ctypedef fused floating:
    float
    double

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
               const floating *a, int lda, const floating *b, int ldb, floating beta,
               floating *c, int ldc) noexcept nogil
