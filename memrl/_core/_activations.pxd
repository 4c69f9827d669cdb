"""Elementwise activations shared by the dense, GRU and head kernels (inline, nogil).

Codes (also exported to Python by ``memrl._core._dense``):
IDENTITY 0, RELU 1, TANH 2, SIGMOID 3, FAST_TANH 4, FAST_SIGMOID 5.

``fast_tanh`` is RLtools' Pade approximation ``x (27 + x^2) / (27 + 9 x^2)`` on x clamped to
[-3, 3]; its derivative here is the exact derivative of that function,
``(x^2 - 9)^2 / (9 (3 + x^2)^2)`` inside (-3, 3) and 0 outside, so finite differences agree.
``fast_sigmoid(x) = 0.5 fast_tanh(x / 2) + 0.5``.

In float32, ``tanh`` (and ``sigmoid(x) = 0.5 + 0.5 tanh(x / 2)``) is a branch-free rational
minimax approximation on [-9, 9] (the polynomial pair Eigen uses for float tanh): at most 3.5e-7
from the true value, against 6e-8 for libm's ``tanhf``, but it vectorises, where a libm call costs
about 18 ns an element. Derivatives are taken as ``1 - t^2`` and ``s (1 - s)`` from the outputs.
float64 uses libm, so finite-difference checks see exact functions.

Loops over arrays go through ``activate_array`` / ``activate_grad_array``, which branch on the
activation once and run a plain loop the compiler vectorises.
"""
from cython cimport floating
from libc.math cimport exp, tanh

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_TANH = 2
    ACT_SIGMOID = 3
    ACT_FAST_TANH = 4
    ACT_FAST_SIGMOID = 5


cdef inline floating fast_tanh(floating x) noexcept nogil:
    x = x if x < <floating>3 else <floating>3
    x = x if x > <floating>-3 else <floating>-3
    cdef floating x2 = x * x
    return x * (<floating>27 + x2) / (<floating>27 + <floating>9 * x2)


cdef extern from "_activations.h" nogil:
    float memrl_fast_tanh_grad_f(float x)
    double memrl_fast_tanh_grad_d(double x)


cdef inline floating fast_tanh_grad(floating x) noexcept nogil:
    """Exact derivative of ``fast_tanh`` at the pre-activation x (0 outside (-3, 3)); the formula
    is in _activations.h, which the C kernels (_gru_gates.h) share."""
    if floating is float:
        return memrl_fast_tanh_grad_f(x)
    else:
        return memrl_fast_tanh_grad_d(x)


cdef inline float tanh_rational(float x) noexcept nogil:
    # Every literal is cast to float: a bare literal is a C double and would turn the whole
    # evaluation into double arithmetic, which does not vectorise as well.
    x = x if x < <float>9.0 else <float>9.0
    x = x if x > <float>-9.0 else <float>-9.0
    cdef float x2 = x * x
    cdef float p = x2 * <float>-2.76076847742355e-16 + <float>2.00018790482477e-13
    p = x2 * p + <float>-8.60467152213735e-11
    p = x2 * p + <float>5.12229709037114e-08
    p = x2 * p + <float>1.48572235717979e-05
    p = x2 * p + <float>6.37261928875436e-04
    p = x2 * p + <float>4.89352455891786e-03
    cdef float q = x2 * <float>1.19825839466702e-06 + <float>1.18534705686654e-04
    q = x2 * q + <float>2.26843463243900e-03
    q = x2 * q + <float>4.89352518554385e-03
    return x * p / q


cdef inline floating exact_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanh_rational(x)
    else:
        return tanh(x)


cdef inline floating sigmoid(floating x) noexcept nogil:
    if floating is float:
        return <float>0.5 + <float>0.5 * tanh_rational(<float>0.5 * x)
    else:
        return 1 / (1 + exp(-x))


cdef inline void activate_array(int act, Py_ssize_t n, const floating* pre, floating* out) noexcept nogil:
    """out[i] = act(pre[i]); the branch on ``act`` is outside the loops."""
    cdef Py_ssize_t i
    if act == ACT_IDENTITY:
        if out != pre:
            for i in range(n):
                out[i] = pre[i]
    elif act == ACT_RELU:
        for i in range(n):  # NaN passes through (NaN < 0 is false), as in max(x, 0) elsewhere
            out[i] = <floating>0 if pre[i] < 0 else pre[i]
    elif act == ACT_TANH:
        for i in range(n):
            out[i] = exact_tanh(pre[i])
    elif act == ACT_SIGMOID:
        for i in range(n):
            out[i] = sigmoid(pre[i])
    elif act == ACT_FAST_TANH:
        for i in range(n):
            out[i] = fast_tanh(pre[i])
    else:
        for i in range(n):
            out[i] = <floating>0.5 * fast_tanh(<floating>0.5 * pre[i]) + <floating>0.5


cdef inline void activate_grad_array(int act, Py_ssize_t n, const floating* pre, const floating* post,
                                     const floating* dy, floating* dpre) noexcept nogil:
    """dpre[i] = dy[i] * act'(pre[i]) (from the outputs for tanh and sigmoid)."""
    cdef Py_ssize_t i
    cdef floating g
    if act == ACT_IDENTITY:
        for i in range(n):
            dpre[i] = dy[i]
    elif act == ACT_RELU:
        for i in range(n):
            g = dy[i]  # loaded unconditionally so the select vectorises
            dpre[i] = g if pre[i] > 0 else <floating>0
    elif act == ACT_TANH:
        for i in range(n):
            dpre[i] = dy[i] * (<floating>1 - post[i] * post[i])
    elif act == ACT_SIGMOID:
        for i in range(n):
            dpre[i] = dy[i] * post[i] * (<floating>1 - post[i])
    elif act == ACT_FAST_TANH:
        for i in range(n):
            dpre[i] = dy[i] * fast_tanh_grad(pre[i])
    else:
        for i in range(n):
            dpre[i] = dy[i] * <floating>0.25 * fast_tanh_grad(<floating>0.5 * pre[i])
