/* Scalar activation formulas that C kernels (_gru_gates.h) and the Cython kernels (through
 * _activations.pxd) share, written once here for float and double.
 *
 * memrl_fast_tanh_grad: the exact derivative of RLtools' Pade tanh x (27 + x^2) / (27 + 9 x^2) on x
 * clamped to [-3, 3], i.e. (x^2 - 9)^2 / (9 (3 + x^2)^2) inside (-3, 3) and 0 outside.
 */
#ifndef MEMRL_ACTIVATIONS_H
#define MEMRL_ACTIVATIONS_H

#define MEMRL_FAST_TANH_GRAD(T, SUFFIX)                                        \
    static inline T memrl_fast_tanh_grad_##SUFFIX(T x) {                       \
        x = x < (T)3 ? x : (T)3;                                               \
        x = x > (T)-3 ? x : (T)-3;                                             \
        T x2 = x * x;                                                          \
        T num = x2 - (T)9;                                                     \
        T den = (T)3 + x2;                                                     \
        return (num * num) / ((T)9 * den * den);                               \
    }

MEMRL_FAST_TANH_GRAD(float, f)
MEMRL_FAST_TANH_GRAD(double, d)

#endif /* MEMRL_ACTIVATIONS_H */
