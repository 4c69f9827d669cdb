"""Categorical heads (discrete SAC's policy output): forward, backward and acting, per batch row.

A row's logits ``z`` (C,) are K blocks ``[z_0 | z_1 | ... | z_{K-1}]``, block k of ``n_k`` columns
(``C = sum_k n_k``; ``nvec = (n_0, ..., n_{K-1})``): independent categoricals
``pi_k = softmax(z_k)`` (one for a ``Discrete`` action space, one per component of a
``MultiDiscrete`` one). A joint action ``a = (a_0, ..., a_{K-1})`` has the joint index
``j = ravel(a)`` (component 0 most significant, as ``numpy.ravel_multi_index(a, nvec)``), among
``J = prod_k n_k`` joint actions; ``pi(a) = prod_k pi_k(a_k)``, ``log pi(a) = sum_k log pi_k(a_k)``.

* ``categorical_fwd``: per-component log-probabilities (log-softmax with the max subtracted, in
  double), and every joint action's log-probability and probability.
* ``categorical_bwd``: for a row loss ``l = sum_a pi(a) g(a)`` whose ``g`` may contain
  ``c * log pi(a)`` (an entropy term), OVERWRITES ``dl/dz_k(c) = G_k(c) - pi_k(c) E`` with
  ``G_k(c) = sum_{a: a_k = c} pi(a) g(a)`` and ``E = sum_a pi(a) g(a)``. (``dpi(a)/dz_k(c) =
  pi(a) (1[a_k = c] - pi_k(c))``, and the ``log pi`` inside ``g`` contributes
  ``c sum_a pi(a) dlog pi(a)/dz = c d(sum_a pi(a))/dz = 0``, so ``g`` is held fixed.)
* ``categorical_act``: per component, the index ``argmax_c z_k(c)`` (the first maximum), or,
  given standard normal noise ``e`` (N, K), the inverse-CDF sample with the uniform
  ``u = Phi(e) = erfc(-e / sqrt 2) / 2``: the first c whose cumulative probability exceeds u.

Indices are written as floats (the replay's action rows). Kernels are ``noexcept nogil``, take
raw pointers and never allocate; float32 and float64 through ``floating``.
"""
from cython cimport floating
from libc.math cimport erfc, exp, log, sqrt

import numpy as np

cdef double INV_SQRT2 = 0.70710678118654752440


cdef inline void _next_joint(int K, const int* nvec, int* digit) noexcept nogil:
    """Advance the mixed-radix digits of a joint action to the next joint index (component 0
    most significant, the last one fastest), as ``ravel`` orders them."""
    cdef int m = K - 1
    while m >= 0:
        digit[m] += 1
        if digit[m] < nvec[m]:
            return
        digit[m] = 0
        m -= 1


cdef void categorical_fwd(int N, int K, const int* nvec, int C, int J, const floating* z, floating* logp,
                          floating* jlogp, floating* jp) noexcept nogil:
    """z (N, C) IN; logp (N, C), jlogp (N, J), jp (N, J) OUT (jlogp, jp may be NULL)."""
    cdef int n, k, c, o, j
    cdef int digit[64]
    cdef double mx, s, lse, v
    cdef const floating* zr
    cdef floating* lr
    for n in range(N):
        zr = z + <Py_ssize_t>n * C
        lr = logp + <Py_ssize_t>n * C
        o = 0
        for k in range(K):
            mx = zr[o]
            for c in range(1, nvec[k]):
                if zr[o + c] > mx:
                    mx = zr[o + c]
            s = 0
            for c in range(nvec[k]):
                s += exp(zr[o + c] - mx)
            lse = mx + log(s)
            for c in range(nvec[k]):
                lr[o + c] = <floating>(zr[o + c] - lse)
            o += nvec[k]
        if jlogp == NULL:
            continue
        # every joint action, its digits counted up with the last component fastest
        for k in range(K):
            digit[k] = 0
        for j in range(J):
            v = 0
            o = 0
            for k in range(K):
                v += lr[o + digit[k]]
                o += nvec[k]
            jlogp[<Py_ssize_t>n * J + j] = <floating>v
            jp[<Py_ssize_t>n * J + j] = <floating>exp(v)
            _next_joint(K, nvec, digit)


cdef void categorical_bwd(int N, int K, const int* nvec, int C, int J, const floating* logp, const floating* jp,
                          const floating* g, floating* dz) noexcept nogil:
    """logp (N, C), jp (N, J), g (N, J) IN; dz (N, C) OUT: d(sum_a pi(a) g(a))/dz per row."""
    cdef int n, k, c, o, j
    cdef int digit[64]
    cdef double e, w
    cdef const floating* gr
    cdef const floating* pr
    cdef floating* dr
    for n in range(N):
        gr = g + <Py_ssize_t>n * J
        pr = jp + <Py_ssize_t>n * J
        dr = dz + <Py_ssize_t>n * C
        for c in range(C):
            dr[c] = 0
        e = 0
        for k in range(K):
            digit[k] = 0
        for j in range(J):
            w = <double>pr[j] * gr[j]
            e += w
            o = 0
            for k in range(K):
                dr[o + digit[k]] += <floating>w
                o += nvec[k]
            _next_joint(K, nvec, digit)
        for c in range(C):
            dr[c] = <floating>(dr[c] - exp(<double>logp[<Py_ssize_t>n * C + c]) * e)


cdef void categorical_act(int N, int K, const int* nvec, int C, const floating* z, const floating* noise,
                          floating* actions) noexcept nogil:
    """z (N, C) IN, noise (N, K) IN or NULL (argmax); actions (N, K) OUT (indices as floats)."""
    cdef int n, k, c, o, best
    cdef double mx, s, u, cum
    cdef const floating* zr
    for n in range(N):
        zr = z + <Py_ssize_t>n * C
        o = 0
        for k in range(K):
            best = 0
            mx = zr[o]
            for c in range(1, nvec[k]):
                if zr[o + c] > mx:
                    mx = zr[o + c]
                    best = c
            if noise != NULL:
                s = 0
                for c in range(nvec[k]):
                    s += exp(zr[o + c] - mx)
                u = 0.5 * erfc(-noise[<Py_ssize_t>n * K + k] * INV_SQRT2) * s
                cum = 0
                best = nvec[k] - 1
                for c in range(nvec[k]):
                    cum += exp(zr[o + c] - mx)
                    if u < cum:
                        best = c
                        break
            actions[<Py_ssize_t>n * K + k] = <floating>best
            o += nvec[k]


# ---------------------------------------------------------------------------------------------
# Python wrappers (tests); shapes checked here, the kernels trust them
# ---------------------------------------------------------------------------------------------

MAX_COMPONENTS = 64
"""Most components a MultiDiscrete action may have (the kernels' digit counters)."""


cdef tuple _sizes(nvec):
    nvec = np.ascontiguousarray(nvec, np.int32)
    if nvec.ndim != 1 or not 1 <= nvec.shape[0] <= MAX_COMPONENTS or (nvec < 1).any():
        raise ValueError(f"nvec: expected 1 to {MAX_COMPONENTS} positive category counts, got {nvec.tolist()}")
    return nvec, int(nvec.shape[0]), int(nvec.sum()), int(np.prod(nvec.astype(np.int64)))


def forward(const floating[:, ::1] z, nvec):
    """Per-component log-probabilities (N, C), joint log-probabilities and probabilities (N, J)."""
    cdef int K, C, J
    nvec, K, C, J = _sizes(nvec)
    cdef const int[::1] nv = nvec
    cdef int N = z.shape[0]
    if z.shape[1] != C:
        raise ValueError(f"z: expected {C} columns (sum of nvec), got {z.shape[1]}")
    dtype = np.float64 if floating is double else np.float32
    logp, jlogp, jp = np.zeros((N, C), dtype), np.zeros((N, J), dtype), np.zeros((N, J), dtype)
    cdef floating[:, ::1] lv = logp, jlv = jlogp, jpv = jp
    if N > 0:
        with nogil:
            categorical_fwd(N, K, &nv[0], C, J, &z[0, 0], &lv[0, 0], &jlv[0, 0], &jpv[0, 0])
    return logp, jlogp, jp


def backward(const floating[:, ::1] logp, const floating[:, ::1] jp, const floating[:, ::1] g, nvec):
    """dz (N, C) of the row losses sum_a pi(a) g(a) (see the module doc)."""
    cdef int K, C, J
    nvec, K, C, J = _sizes(nvec)
    cdef const int[::1] nv = nvec
    cdef int N = jp.shape[0]
    for name, array, cols in (("logp", logp, C), ("jp", jp, J), ("g", g, J)):
        if array.shape[0] != N or array.shape[1] != cols:
            raise ValueError(f"{name}: expected shape ({N}, {cols}), got {tuple(array.shape)[:2]}")
    dz = np.zeros((N, C), np.float64 if floating is double else np.float32)
    cdef floating[:, ::1] dv = dz
    if N > 0:
        with nogil:
            categorical_bwd(N, K, &nv[0], C, J, &logp[0, 0], &jp[0, 0], &g[0, 0], &dv[0, 0])
    return dz


def act(const floating[:, ::1] z, nvec, const floating[:, ::1] noise=None):
    """Indices (N, K) as floats: argmax, or inverse-CDF samples from standard normal ``noise``."""
    cdef int K, C, J
    nvec, K, C, J = _sizes(nvec)
    cdef const int[::1] nv = nvec
    cdef int N = z.shape[0]
    if z.shape[1] != C:
        raise ValueError(f"z: expected {C} columns (sum of nvec), got {z.shape[1]}")
    if noise is not None and (noise.shape[0] != N or noise.shape[1] != K):
        raise ValueError(f"noise: expected shape ({N}, {K}), got {tuple(noise.shape)[:2]}")
    actions = np.zeros((N, K), np.float64 if floating is double else np.float32)
    cdef floating[:, ::1] av = actions
    cdef const floating* np_ = NULL if noise is None else &noise[0, 0]
    if N > 0:
        with nogil:
            categorical_act(N, K, &nv[0], C, &z[0, 0], np_, &av[0, 0])
    return actions
