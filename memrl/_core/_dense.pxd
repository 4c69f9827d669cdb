from cython cimport floating

cdef void dense_fwd(int N, int I, int O, const floating* x, const floating* W, const floating* b,
                    floating* pre, floating* y, int act) noexcept nogil
cdef void dense_bwd(int N, int I, int O, const floating* x, const floating* W,
                    const floating* pre, const floating* y, const floating* dy,
                    floating* dW, floating* db, floating* dx, floating* dpre, int act) noexcept nogil
