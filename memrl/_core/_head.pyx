"""Tanh-Gaussian sample-and-squash head (SAC's policy output), forward and backward.

Input ``pre`` (N, 2A): columns [0, A) are the mean mu, [A, 2A) the log-std l. With noise
``eps`` (N, A) supplied by the caller (None = deterministic, eps = 0):

    lc = clamp(l, log_std_min, log_std_max), sigma = exp(lc), u = mu + sigma * eps, a = tanh(u)
    log pi = sum_i [ -0.5 ln(2 pi) - lc_i - eps_i^2 / 2 - ln(1 - a_i^2 + 1e-6) ]

Backward takes dL/da (N, A) and dL/dlogpi (N,) (per-sample weights; either may be None) and
OVERWRITES dL/dpre (N, 2A). It is the exact gradient of the formulas above with eps held fixed
(the reparameterisation), including the 1e-6 inside the log; the log-std gradient is zero where
the clamp is active (outside [min, max]). ``1 - a^2`` is computed as ``sech(u)^2`` in double
precision, which keeps ``log pi`` and its gradient accurate where ``|a|`` is close to 1.
"""
from cython cimport floating
from libc.math cimport cosh, exp, log, tanh

cdef double HALF_LOG_2PI = 0.91893853320467274178
LOG_PROB_EPSILON = 1e-6


cdef void head_fwd(int N, int A, const floating* pre, const floating* eps, floating* a,
                   floating* logp, double lo, double hi) noexcept nogil:
    cdef int n, i
    cdef double mu, l, sigma, e, act, lp, sech
    for n in range(N):
        lp = 0
        for i in range(A):
            mu = pre[n * 2 * A + i]
            l = pre[n * 2 * A + A + i]
            if l < lo:
                l = lo
            if l > hi:
                l = hi
            sigma = exp(l)
            e = 0 if eps == NULL else eps[n * A + i]
            act = tanh(mu + sigma * e)
            a[n * A + i] = <floating>act
            # 1 - tanh(u)^2 as sech(u)^2: no cancellation where |a| is close to 1
            sech = 1.0 / cosh(mu + sigma * e)
            lp += -HALF_LOG_2PI - l - 0.5 * e * e - log(sech * sech + 1e-6)
        logp[n] = <floating>lp


cdef void head_bwd(int N, int A, const floating* pre, const floating* eps, const floating* a,
                   const floating* da, const floating* dlogp, floating* dpre,
                   double lo, double hi) noexcept nogil:
    cdef int n, i
    cdef double l, lc, sigma, e, act, one_m_a2, du, wl, dlc, sech
    for n in range(N):
        wl = 0 if dlogp == NULL else dlogp[n]
        for i in range(A):
            l = pre[n * 2 * A + A + i]
            lc = lo if l < lo else (hi if l > hi else l)
            e = 0 if eps == NULL else eps[n * A + i]
            act = tanh(pre[n * 2 * A + i] + exp(lc) * e)
            sech = 1.0 / cosh(pre[n * 2 * A + i] + exp(lc) * e)
            one_m_a2 = sech * sech
            du = 0 if da == NULL else da[n * A + i] * one_m_a2
            # d/du of -ln(1 - tanh(u)^2 + 1e-6) = 2 a (1 - a^2) / (1 - a^2 + 1e-6)
            du += wl * 2 * act * one_m_a2 / (one_m_a2 + 1e-6)
            dpre[n * 2 * A + i] = <floating>du
            if l < lo or l > hi:
                dpre[n * 2 * A + A + i] = 0
            else:
                sigma = exp(l)
                dlc = du * sigma * e - wl
                dpre[n * 2 * A + A + i] = <floating>dlc


cdef _check_shapes(pre, eps, int N, int A):
    if pre.shape[1] % 2 != 0:
        raise ValueError(f"pre: expected an even number of columns (mean and log-std), got {pre.shape[1]}")
    if eps is not None and (eps.shape[0] != N or eps.shape[1] != A):
        raise ValueError(f"eps: expected shape ({N}, {A}), got {tuple(eps.shape)[:2]}")


def forward(const floating[:, ::1] pre, const floating[:, ::1] eps, floating[:, ::1] a,
            floating[::1] logp, double log_std_min=-20.0, double log_std_max=2.0):
    """Write actions a (N, A) and log-probabilities logp (N,)."""
    cdef int N = pre.shape[0], A = pre.shape[1] // 2
    _check_shapes(pre, eps, N, A)
    if a.shape[0] != N or a.shape[1] != A:
        raise ValueError(f"a: expected shape ({N}, {A}), got {tuple(a.shape)[:2]}")
    if logp.shape[0] != N:
        raise ValueError(f"logp: expected shape ({N},), got ({logp.shape[0]},)")
    if N == 0:
        return
    if A == 0:
        logp[:] = 0
        return
    cdef const floating* ep = NULL if eps is None else &eps[0, 0]
    with nogil:
        head_fwd(N, A, &pre[0, 0], ep, &a[0, 0], &logp[0], log_std_min, log_std_max)


def backward(const floating[:, ::1] pre, const floating[:, ::1] eps, const floating[:, ::1] a,
             const floating[:, ::1] da, const floating[::1] dlogp, floating[:, ::1] dpre,
             double log_std_min=-20.0, double log_std_max=2.0):
    """Write dL/dpre (N, 2A) from dL/da (N, A) and dL/dlogp (N,) (either may be None)."""
    cdef int N = pre.shape[0], A = pre.shape[1] // 2
    _check_shapes(pre, eps, N, A)
    if a.shape[0] != N or a.shape[1] != A:
        raise ValueError(f"a: expected shape ({N}, {A}), got {tuple(a.shape)[:2]}")
    if da is not None and (da.shape[0] != N or da.shape[1] != A):
        raise ValueError(f"da: expected shape ({N}, {A}), got {tuple(da.shape)[:2]}")
    if dlogp is not None and dlogp.shape[0] != N:
        raise ValueError(f"dlogp: expected shape ({N},), got ({dlogp.shape[0]},)")
    if dpre.shape[0] != N or dpre.shape[1] != 2 * A:
        raise ValueError(f"dpre: expected shape ({N}, {2 * A}), got {tuple(dpre.shape)[:2]}")
    if N == 0 or A == 0:
        return
    cdef const floating* ep = NULL if eps is None else &eps[0, 0]
    cdef const floating* dap = NULL if da is None else &da[0, 0]
    cdef const floating* dlp = NULL if dlogp is None else &dlogp[0]
    with nogil:
        head_bwd(N, A, &pre[0, 0], ep, &a[0, 0], dap, dlp, &dpre[0, 0], log_std_min, log_std_max)
