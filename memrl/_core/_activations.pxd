"""Elementwise activations shared by the dense, GRU and head kernels (inline, nogil).

Codes (also exported to Python by ``memrl._core._dense``):
IDENTITY 0, RELU 1, TANH 2, SIGMOID 3, FAST_TANH 4, FAST_SIGMOID 5.

``fast_tanh`` is RLtools' Pade approximation ``x (27 + x^2) / (27 + 9 x^2)`` on x clamped to
[-3, 3]; its derivative here is the exact derivative of that function,
``(x^2 - 9)^2 / (9 (3 + x^2)^2)`` inside (-3, 3) and 0 outside, so finite differences agree.
``fast_sigmoid(x) = 0.5 fast_tanh(x / 2) + 0.5``.
"""
from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_TANH = 2
    ACT_SIGMOID = 3
    ACT_FAST_TANH = 4
    ACT_FAST_SIGMOID = 5


cdef inline floating fast_tanh(floating x) noexcept nogil:
    if x > 3:
        x = 3
    if x < -3:
        x = -3
    cdef floating x2 = x * x
    return x * (27 + x2) / (27 + 9 * x2)


cdef inline floating fast_tanh_grad(floating x) noexcept nogil:
    """Exact derivative of ``fast_tanh`` at the pre-activation x."""
    if x >= 3 or x <= -3:
        return 0
    cdef floating x2 = x * x
    cdef floating num = x2 - 9
    cdef floating den = 3 + x2
    return (num * num) / (9 * den * den)


cdef inline floating sigmoid(floating x) noexcept nogil:
    if floating is float:
        return 1 / (1 + expf(-x))
    else:
        return 1 / (1 + exp(-x))


cdef inline floating exact_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating activate(int act, floating x) noexcept nogil:
    if act == ACT_IDENTITY:
        return x
    if act == ACT_RELU:
        return x if x > 0 else 0
    if act == ACT_TANH:
        return exact_tanh(x)
    if act == ACT_SIGMOID:
        return sigmoid(x)
    if act == ACT_FAST_TANH:
        return fast_tanh(x)
    return 0.5 * fast_tanh(0.5 * x) + 0.5


cdef inline floating activate_grad(int act, floating pre, floating post) noexcept nogil:
    """d act / d pre, from the pre-activation and the activation's output."""
    if act == ACT_IDENTITY:
        return 1
    if act == ACT_RELU:
        return 1 if pre > 0 else 0
    if act == ACT_TANH:
        return 1 - post * post
    if act == ACT_SIGMOID:
        return post * (1 - post)
    if act == ACT_FAST_TANH:
        return fast_tanh_grad(pre)
    return 0.25 * fast_tanh_grad(0.5 * pre)
