/* The GRU's gate gradients for one row of one time step (backward through time, _gru.pyx's gru_bwd).
 *
 * With gates r, z, n (post-activation, row g = [r | z | n]), pre-activations pa, hn = W_hn h + b_hn,
 * the state the step started from hp, and the gradient reaching this step's output
 * grad = dy + carry (carry: what flowed back from step t + 1):
 *     dn = grad (1 - z) tanh'(pa_n)        dr = dn hn sigma'(pa_r)        dz = grad (hp - n) sigma'(pa_z)
 *     G  = [dr | dz | dn]   (gradient of the input pre-activation  W_i x + b_i)
 *     Gh = [dr | dz | dn r] (gradient of the recurrent pre-activation W_h h + b_h)
 *     dhp = grad z          (the direct path to h_{t-1}; the caller adds Gh W_hh)
 * mode 0 (exact gates) takes the derivatives from the outputs: tanh' = 1 - n^2, sigma' = s (1 - s);
 * mode 1 (RLtools' fast gates) differentiates the Pade approximation at the pre-activations
 * (sigma(x) = tanh(x / 2) / 2 + 1 / 2, so sigma'(x) = tanh'(x / 2) / 4).
 *
 * Written once for float and double. The pointers are restrict-qualified (every buffer is a
 * different workspace), which lets the compiler vectorise the loop: without it GCC leaves it scalar
 * (too many pointers to version for aliasing), 5.6x slower at H = 16 (measured). The arithmetic is
 * the same, operation for operation, in either case.
 */
#ifndef MEMRL_GRU_GATES_H
#define MEMRL_GRU_GATES_H

#include <stddef.h>

#include "_activations.h"

#if defined(__GNUC__)
#define MEMRL_NOINLINE __attribute__((noinline))
#else
#define MEMRL_NOINLINE
#endif

/* Not inlined: inside gru_bwd the compiler loses the restrict qualifiers and runs the loop scalar. */
#define MEMRL_GRU_GATES_BWD(T, SUFFIX)                                                              \
    static MEMRL_NOINLINE void memrl_gru_gates_bwd_##SUFFIX(                                        \
        int H, int mode, const T* __restrict g, const T* __restrict pa, const T* __restrict hn,      \
        const T* __restrict hp, const T* __restrict dy, const T* __restrict carry,                   \
        T* __restrict G, T* __restrict Gh, T* __restrict dhp) {                                      \
        int j;                                                                                      \
        if (mode == 0) {                                                                            \
            for (j = 0; j < H; j++) {                                                               \
                T r = g[j], z = g[H + j], n = g[2 * H + j];                                         \
                T grad = dy[j] + carry[j];                                                          \
                T dn = grad * ((T)1 - z) * ((T)1 - n * n);                                          \
                T dr = dn * hn[j] * r * ((T)1 - r);                                                 \
                T dz = grad * (hp[j] - n) * z * ((T)1 - z);                                         \
                G[j] = dr; G[H + j] = dz; G[2 * H + j] = dn;                                        \
                Gh[j] = dr; Gh[H + j] = dz; Gh[2 * H + j] = dn * r;                                 \
                dhp[j] = grad * z;                                                                  \
            }                                                                                       \
        } else {                                                                                    \
            for (j = 0; j < H; j++) {                                                               \
                T r = g[j], z = g[H + j], n = g[2 * H + j];                                         \
                T grad = dy[j] + carry[j];                                                          \
                T dn = grad * ((T)1 - z) * memrl_fast_tanh_grad_##SUFFIX(pa[2 * H + j]);            \
                T dr = dn * hn[j] * (T)0.25 * memrl_fast_tanh_grad_##SUFFIX((T)0.5 * pa[j]);        \
                T dz = grad * (hp[j] - n) * (T)0.25 * memrl_fast_tanh_grad_##SUFFIX((T)0.5 * pa[H + j]); \
                G[j] = dr; G[H + j] = dz; G[2 * H + j] = dn;                                        \
                Gh[j] = dr; Gh[H + j] = dz; Gh[2 * H + j] = dn * r;                                 \
                dhp[j] = grad * z;                                                                  \
            }                                                                                       \
        }                                                                                           \
    }

MEMRL_GRU_GATES_BWD(float, f)
MEMRL_GRU_GATES_BWD(double, d)

/* sums (n) += the rows of X (rows, n): the bias gradients, accumulated row by row in order
 * (each element's additions in the same order as a scalar loop over the rows). */
#define MEMRL_ADD_ROWS(T, SUFFIX)                                                                   \
    static MEMRL_NOINLINE void memrl_add_rows_##SUFFIX(int rows, int n, const T* __restrict X,      \
                                                        T* __restrict sums) {                       \
        int k, j;                                                                                   \
        for (k = 0; k < rows; k++)                                                                  \
            for (j = 0; j < n; j++) sums[j] += X[(size_t)k * n + j];                                \
    }

MEMRL_ADD_ROWS(float, f)
MEMRL_ADD_ROWS(double, d)

#endif /* MEMRL_GRU_GATES_H */
