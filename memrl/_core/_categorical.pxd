from cython cimport floating

cdef void categorical_fwd(int N, int K, const int* nvec, int C, int J, const floating* z, floating* logp,
                          floating* jlogp, floating* jp) noexcept nogil
cdef void categorical_bwd(int N, int K, const int* nvec, int C, int J, const floating* logp, const floating* jp,
                          const floating* g, floating* dz) noexcept nogil
cdef void categorical_act(int N, int K, const int* nvec, int C, const floating* z, const floating* noise,
                          floating* actions) noexcept nogil
