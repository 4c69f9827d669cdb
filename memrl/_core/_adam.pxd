from cython cimport floating

cdef void adam_kernel(Py_ssize_t n, floating* p, const floating* g, floating* m, floating* v,
                      double lr, double b1, double b2, double eps, double floor, double wd,
                      double clip, const unsigned char* is_bias, double bias_lr_factor,
                      long t) noexcept nogil

cdef void polyak_kernel(Py_ssize_t n, floating* target, const floating* source, double tau) noexcept nogil
