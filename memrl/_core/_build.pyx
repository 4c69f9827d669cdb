"""How the kernels next to this module were built (read through ``memrl._core``).

``DEBUG_BUILD`` is the C macro ``MEMRL_DEBUG_BUILD`` that setup.py defines for every kernel (1
with ``MEMRL_CYTHON_DEBUG=1``). ``BOUNDS_CHECKED`` and ``WRAPAROUND_CHECKED`` are measured: this
module's C, generated in the same cythonize run and with the same directives as the other
kernels', indexes a buffer one past its end and at -1, where the buffer is a slice of a longer
array, so the probe reads valid memory with the checks off and tells whether they are on. (It
uses Cython's buffer syntax, which the same directives govern, rather than typed memoryviews,
whose support code would make this module ten times longer to compile.)

``CPU_X86_64_V3``: whether this CPU (and its OS) runs x86-64-v3 code (AVX2, FMA, BMI1/2, F16C,
LZCNT, MOVBE), the instruction set of the kernels' variants in ``_x86_64_v3/`` (``memrl.isa``).
Asked through GCC's/Clang's ``__builtin_cpu_supports``, which reads CPUID and checks that the OS
saves the AVX registers; False off x86-64.
"""
from array import array

cdef extern from *:
    """
    #ifndef MEMRL_DEBUG_BUILD
    #error "memrl: setup.py defines MEMRL_DEBUG_BUILD for every kernel"
    #endif
    """
    const int MEMRL_DEBUG_BUILD

cdef extern from *:
    """
    static int memrl_cpu_x86_64_v3(void) {
    #if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
    #  if defined(__clang__) || __GNUC__ < 12
        return __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2")
            && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
            && __builtin_cpu_supports("bmi2");
    #  else
        return __builtin_cpu_supports("x86-64-v3");
    #  endif
    #else
        return 0;
    #endif
    }
    """
    int memrl_cpu_x86_64_v3() nogil


cdef tuple _probe_index_checks():
    # The buffer exports [1.0, 2.0] from inside [0.0, 1.0, 2.0, 3.0].
    cdef object[double, ndim=1, mode="c"] inner = memoryview(array("d", [0.0, 1.0, 2.0, 3.0]))[1:3]
    cdef Py_ssize_t past_end = 2, last = -1
    try:
        bounds = inner[past_end] != 3.0  # unchecked, this reads the array's 3.0
    except IndexError:
        bounds = True
    try:
        wraparound = inner[last] == 2.0  # unchecked, this reads the array's 0.0
    except IndexError:  # bounds checks without wraparound reject -1
        wraparound = False
    return bounds, wraparound


DEBUG_BUILD = MEMRL_DEBUG_BUILD != 0
BOUNDS_CHECKED, WRAPAROUND_CHECKED = _probe_index_checks()
CPU_X86_64_V3 = memrl_cpu_x86_64_v3() != 0
