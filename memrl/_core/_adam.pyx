"""Adam over one flat parameter buffer, and Polyak averaging of one flat buffer into another.

Update at step t (t >= 1, counted by the caller), elementwise:

    g <- clip(g, -c, c)                       (if clip > 0)
    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t) ;  v_hat = v / (1 - b2^t) ;  v_hat <- max(v_hat, floor)  (RLtools; floor > 0)
    p <- p - lr * f * m_hat / (sqrt(v_hat) + eps) - lr * wd * p * [weight]

``f`` is ``bias_lr_factor`` on entries where ``is_bias`` is set (else 1); weight decay is
decoupled (AdamW) and applies only where ``is_bias`` is not set (everywhere if it is None).
One pass over memory, GIL released, nothing allocated.
"""
from cython cimport floating
from libc.math cimport INFINITY, sqrt, pow


cdef void adam_kernel(Py_ssize_t n, floating* p, const floating* g, floating* m, floating* v,
                      double lr, double b1, double b2, double eps, double floor, double wd,
                      double clip, const unsigned char* is_bias, double bias_lr_factor,
                      long t) noexcept nogil:
    # Branch-free loop body (selects, not jumps) so the compiler vectorises it, in the buffers'
    # own precision throughout.
    cdef Py_ssize_t i
    cdef double c1 = 1.0 / (1.0 - pow(b1, <double>t))
    cdef double c2 = 1.0 / (1.0 - pow(b2, <double>t))
    cdef floating gi, mi, vi, mh, vh, step, pi, fb1 = b1, fb2 = b2
    cdef floating one_m_b1 = 1 - b1, one_m_b2 = 1 - b2
    cdef floating fc1 = c1, fc2 = c2, flr = lr, feps = eps, ffloor = floor
    cdef floating hi = clip if clip > 0 else INFINITY
    cdef floating lo = -hi
    cdef floating fwd = lr * wd, flr_bias = lr * bias_lr_factor, rate, decay
    for i in range(n):
        gi = g[i]
        gi = hi if gi > hi else gi
        gi = lo if gi < lo else gi
        mi = fb1 * m[i] + one_m_b1 * gi
        vi = fb2 * v[i] + one_m_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        mh = mi * fc1
        vh = vi * fc2
        vh = ffloor if vh < ffloor else vh
        step = mh / (<floating>sqrt(vh) + feps)  # float32 sqrt and division for float32
        pi = p[i]
        if is_bias == NULL:
            p[i] = pi - flr * step - fwd * pi
        else:
            rate = flr_bias if is_bias[i] else flr
            decay = 0 if is_bias[i] else fwd
            p[i] = pi - rate * step - decay * pi


def adam_step(floating[::1] params, const floating[::1] grads, floating[::1] m, floating[::1] v,
              long t, double lr, double beta1=0.9, double beta2=0.999, double eps=1e-7,
              double v_hat_floor=0.0, double weight_decay=0.0, double clip=0.0,
              const unsigned char[::1] is_bias=None, double bias_lr_factor=1.0):
    """One Adam step at step count t (>= 1) over flat buffers, in place."""
    cdef Py_ssize_t n = params.shape[0]
    for name, arr in (("grads", grads), ("m", m), ("v", v)):
        if arr.shape[0] != n:
            raise ValueError(f"{name}: expected shape ({n},), got ({arr.shape[0]},)")
    if is_bias is not None and is_bias.shape[0] != n:
        raise ValueError(f"is_bias: expected shape ({n},), got ({is_bias.shape[0]},)")
    if t < 1:
        raise ValueError(f"t: expected a step count >= 1, got {t}")
    if n == 0:
        return
    cdef const unsigned char* bp = NULL if is_bias is None else &is_bias[0]
    with nogil:
        adam_kernel(n, &params[0], &grads[0], &m[0], &v[0], lr, beta1, beta2, eps, v_hat_floor,
                    weight_decay, clip, bp, bias_lr_factor, t)


cdef void polyak_kernel(Py_ssize_t n, floating* target, const floating* source, double tau) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating keep = 1 - tau, take = tau
    for i in range(n):
        target[i] = keep * target[i] + take * source[i]


def polyak(floating[::1] target, const floating[::1] source, double tau):
    """target <- (1 - tau) * target + tau * source, in place."""
    cdef Py_ssize_t n = target.shape[0]
    if source.shape[0] != n:
        raise ValueError(f"source: expected shape ({n},), got ({source.shape[0]},)")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau: expected a value in [0, 1], got {tau}")
    if n == 0:
        return
    with nogil:
        polyak_kernel(n, &target[0], &source[0], tau)
