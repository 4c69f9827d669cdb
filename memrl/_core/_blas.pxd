from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
               const floating* A, int lda, const floating* B, int ldb,
               floating beta, floating* C, int ldc) noexcept nogil
cdef void gemm_small(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                     const floating* A, int lda, const floating* B, int ldb,
                     floating beta, floating* C, int ldc) noexcept nogil
cdef void gemm_blas(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                    const floating* A, int lda, const floating* B, int ldb,
                    floating beta, floating* C, int ldc) noexcept nogil
cdef bint routes_to_blas(long work) noexcept nogil
cdef bint blas_single_threaded(long work) noexcept nogil
