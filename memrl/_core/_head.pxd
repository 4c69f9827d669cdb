from cython cimport floating

cdef void head_fwd(int N, int A, const floating* pre, const floating* eps, floating* a,
                   floating* logp, double lo, double hi) noexcept nogil
cdef void head_bwd(int N, int A, const floating* pre, const floating* eps, const floating* a,
                   const floating* da, const floating* dlogp, floating* dpre,
                   double lo, double hi) noexcept nogil
