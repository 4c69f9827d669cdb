from cython cimport floating
from libc.string cimport memcpy


cdef inline bint all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether none of x[0:n] is NaN or infinite. A value is either exactly when its exponent
    bits are all set; an integer max over the masked bit patterns vectorises (a float
    accumulation would be a serial chain)."""
    cdef Py_ssize_t i
    cdef unsigned int bits, top = 0
    cdef unsigned long long bits64, top64 = 0
    if floating is float:
        for i in range(n):
            memcpy(&bits, &x[i], 4)
            bits = bits & 0x7f800000u
            top = bits if bits > top else top
        return top != 0x7f800000u
    else:
        for i in range(n):
            memcpy(&bits64, &x[i], 8)
            bits64 = bits64 & 0x7ff0000000000000ULL
            top64 = bits64 if bits64 > top64 else top64
        return top64 != 0x7ff0000000000000ULL
