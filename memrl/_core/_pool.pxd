ctypedef void (*task)(void*) noexcept nogil

cdef void run_pair(task f0, void* a0, task f1, void* a1, int threads) noexcept nogil
