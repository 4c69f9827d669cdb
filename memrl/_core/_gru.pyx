"""GRU kernels: whole-sequence forward, backward through time, and a single step.

PyTorch-compatible parameters: W_ih (3H, I), W_hh (3H, H), b_ih (3H,), b_hh (3H,), gate order
[r | z | n]:

    r = sigma(W_ir x + b_ir + W_hr h + b_hr)      z = sigma(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h

Time-major buffers, C-contiguous: x (T, B, I), outputs h (T, B, H). Recurrent state has one
meaning everywhere (whole sequence, single step, the NumPy ``memrl.policy.Policy``): a reset
means "a new episode starts here", so where ``reset[t, b]`` is nonzero sample b enters step t
from the ZERO state, for every t including 0. ``h0`` (B, H) is the state before step 0 only:
sample b enters step 0 from ``h0[b]`` unless ``reset[0, b]``, and a later reset never restarts
from it. In backward no gradient crosses a reset: at a reset at t > 0 the gradient reaching
h_{t-1} from step t is dropped (the zero state is a constant), and ``dh0[b]`` receives the
gradient of step 0's starting state only if ``reset[0, b]`` is zero (else it is exactly zero).

Cache written by forward and read by backward (all preallocated by the caller):
preact (T, B, 3H) gate pre-activations, gates (T, B, 3H) post-activations, hn (T, B, H)
``W_hn h + b_hn``, h_prev (T, B, H) the state each step started from. The input projection
``x W_ih^T`` and, in backward, ``dW_ih``, ``dW_hh`` and ``dx`` are single products over all
T*B rows; only ``h W_hh^T`` (forward) and ``dG W_hh`` (backward) run inside the time loop, where
the x86-64-v3 build computes the small ones (the chapter's) with the register-blocked kernels of
_small_gemm.h where they give OpenBLAS's bits (``small_kernel_in_use``; tests/test_isa.py).

gate_mode 0: exact sigmoid/tanh. gate_mode 1: RLtools' fast (Pade) sigmoid/tanh, with the
exact derivative of the approximation. Backward ACCUMULATES parameter gradients, OVERWRITES
dx and dh0. No allocation, no Python objects, GIL released.
"""
from cython cimport floating
from libc.string cimport memcpy, memset
from memrl._core._blas cimport blas_single_threaded, gemm, gemm_blas, routes_to_blas
from memrl._core._activations cimport sigmoid, exact_tanh, fast_tanh

import numpy as np

from memrl._core import GATE_MODES as _MODES

EXACT, FAST = (_MODES.index(n) for n in ("exact", "fast"))


cdef extern from "_gru_gates.h" nogil:
    void memrl_gru_gates_bwd_f(int H, int mode, const float* g, const float* pa, const float* hn,
                               const float* hp, const float* dy, const float* carry, float* G,
                               float* Gh, float* dhp)
    void memrl_gru_gates_bwd_d(int H, int mode, const double* g, const double* pa, const double* hn,
                               const double* hp, const double* dy, const double* carry, double* G,
                               double* Gh, double* dhp)
    void memrl_add_rows_f(int rows, int n, const float* X, float* sums)
    void memrl_add_rows_d(int rows, int n, const double* X, double* sums)


cdef extern from "_small_gemm.h" nogil:
    int MEMRL_SG_ONE_CHAIN
    int MEMRL_SG_HASWELL
    int memrl_small_sgemm_handles(int M, int N, int K, int order)
    int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                             int accumulate, float* C, int ldc, int order)


# The summation orders of _small_gemm.h, by the name small_kernel_order() reports.
_ORDERS = {"one chain": MEMRL_SG_ONE_CHAIN, "haswell": MEMRL_SG_HASWELL}
# The shapes the load-time check compares: every row count the kernels take (each blocking of the
# haswell order: 4s; 12; 12 + 4s; 12 + 12 + 4s), 1, 3, 4 and 16 blocks of 16 columns, and depths
# around every unrolling boundary (every K % 8) up to the limits.
_CHECK_M = (4, 8, 12, 16, 20, 24, 28, 32)
_CHECK_N = (16, 48, 64, 256)
_CHECK_K = (1, 2, 3, 5, 6, 7, 8, 9, 14, 15, 16, 17, 31, 32, 48, 63, 64, 100, 192, 256)


def _order_matches_blas(int order):
    """Whether _small_gemm.h's kernels in summation ``order`` give OpenBLAS's sgemm bits on the
    shapes of ``_CHECK_M``, ``_CHECK_N`` and ``_CHECK_K`` they take, with and without accumulation."""
    cdef float[:, ::1] A, B, want, got
    cdef int M, N, K, acc
    rng = np.random.default_rng(0)
    if not memrl_small_sgemm_handles(4, 16, 1, order):
        return False
    for M in _CHECK_M:
        for N in _CHECK_N:
            for K in _CHECK_K:
                if not memrl_small_sgemm_handles(M, N, K, order):
                    continue
                for acc in (0, 1):
                    A, B = (rng.normal(0, 2, shape).astype(np.float32) for shape in ((M, K), (K, N)))
                    want = rng.normal(0, 2, (M, N)).astype(np.float32)
                    got = np.array(want)
                    gemm_blas(False, False, M, N, K, <float>1, &A[0, 0], K, &B[0, 0], N, <float>acc,
                              &want[0, 0], N)
                    memrl_small_sgemm_nn(M, N, K, &A[0, 0], K, &B[0, 0], N, acc, &got[0, 0], N, order)
                    if np.asarray(got).tobytes() != np.asarray(want).tobytes():
                        return False
    return True


def _matching_order():
    """The name of the first order in ``_ORDERS`` whose kernels give OpenBLAS's bits on one thread
    (the time loop leaves products OpenBLAS would split across threads to OpenBLAS), or None."""
    from memrl import blas
    threads = blas.blas_threads_set()
    if threads != 1:
        blas.set_num_threads(1)
    try:
        for name, order in _ORDERS.items():
            if _order_matches_blas(order):
                return name
        return None
    finally:
        if threads != 1:
            blas.set_num_threads(threads)


# The kernels run only in an order that reproduces OpenBLAS's bits, so every instruction-set path
# of memrl computes the same run (tests/test_isa.py); elsewhere the time loop calls BLAS.
_KERNEL_ORDER_NAME = _matching_order()
cdef int _KERNEL_ORDER = _ORDERS[_KERNEL_ORDER_NAME] if _KERNEL_ORDER_NAME is not None else 0


def small_kernel_order():
    """The summation order in which _small_gemm.h's kernels give this machine's OpenBLAS bits,
    which the GRU's time loops use: "one chain" (OpenBLAS's AVX-512 sgemm kernels; up to
    (8, 64) @ (64, 64)), "haswell" (its Haswell kernel, which CPUs with AVX2 but no AVX-512 get,
    e.g. AMD Zen 3; up to (32, 256) @ (256, 256)), or None (neither, and then the time loops call
    BLAS; always None on the baseline path, which has no kernels).

    OpenBLAS picks its sgemm kernel by CPU, and its kernels sum k in different orders; the header
    of _small_gemm.h defines both. When this module loads it compares each order with OpenBLAS bit
    for bit on every blocking the kernels take (``_order_matches_blas``, about 0.1 s); this returns
    what it found.
    """
    return _KERNEL_ORDER_NAME


def small_kernel_in_use():
    """Whether the GRU's time loops use the register-blocked kernels of _small_gemm.h (the
    x86-64-v3 path, where ``small_kernel_order()`` is not None)."""
    return _KERNEL_ORDER != 0


cdef inline bint _kernel_takes(int M, int N, int K) noexcept nogil:
    """Whether the time loop computes this float32 product with _small_gemm.h's kernels: an order
    matched OpenBLAS at load, the product is past the plain loops' size, OpenBLAS would compute it
    on one thread, and the kernels take its shape."""
    cdef long work = <long>M * N * K
    return (_KERNEL_ORDER != 0 and routes_to_blas(work) and blas_single_threaded(work)
            and memrl_small_sgemm_handles(M, N, K, _KERNEL_ORDER))


cdef inline void _step_product(int M, int N, int K, const floating* A, const floating* B,
                               bint accumulate, floating* C) noexcept nogil:
    """C (M, N) = A (M, K) @ B (K, N), or += when accumulating: the product inside the time loop.

    On the x86-64-v3 path, in the summation order that gives OpenBLAS's bits
    (``small_kernel_order``), the register-blocked kernels of _small_gemm.h take the shapes in
    their range (the chapter's, the POMDP presets' on the haswell order) that OpenBLAS would
    compute on one thread (all of them unless memrl.blas.set_num_threads set more than one);
    everything else, and the baseline path, calls gemm.
    """
    if floating is float:
        if _kernel_takes(M, N, K):
            memrl_small_sgemm_nn(M, N, K, A, K, B, N, accumulate, C, N, _KERNEL_ORDER)
            return
    gemm(False, False, M, N, K, <floating>1, A, K, B, N, <floating>(1 if accumulate else 0), C, N)


cdef inline void _gates_rz(int n, floating* pre, floating* post, int mode) noexcept nogil:
    cdef int j
    if mode == 0:
        for j in range(n):
            post[j] = sigmoid(pre[j])
    else:
        for j in range(n):
            post[j] = <floating>0.5 * fast_tanh(<floating>0.5 * pre[j]) + <floating>0.5


cdef inline void _gate_n(int n, floating* pre, floating* post, int mode) noexcept nogil:
    cdef int j
    if mode == 0:
        for j in range(n):
            post[j] = exact_tanh(pre[j])
    else:
        for j in range(n):
            post[j] = fast_tanh(pre[j])


cdef void gru_fwd(int T, int B, int I, int H, const floating* x, const floating* h0,
                  const unsigned char* reset, const floating* W_ih, const floating* W_hh,
                  const floating* b_ih, const floating* b_hh, floating* h,
                  floating* preact, floating* gates, floating* hn, floating* h_prev,
                  floating* W_hh_T, floating* gh, int mode) noexcept nogil:
    cdef int H3 = 3 * H, t, b, j, k
    cdef int TB = T * B
    cdef floating* pa
    cdef floating* g
    cdef floating* ghb
    cdef floating* hnb
    cdef floating* hp
    cdef floating* ho
    cdef const floating* src
    cdef floating z
    # Input projection for every step at once: preact = x W_ih^T + b_ih.
    for k in range(TB):
        memcpy(preact + k * H3, b_ih, H3 * sizeof(floating))
    if I > 0:
        gemm(False, True, TB, H3, I, <floating>1, x, I, W_ih, I, <floating>1, preact, H3)
    for j in range(H3):
        for k in range(H):
            W_hh_T[k * H3 + j] = W_hh[j * H + k]
    for t in range(T):
        hp = h_prev + t * B * H
        for b in range(B):
            if reset != NULL and reset[t * B + b]:
                memset(hp + b * H, 0, H * sizeof(floating))
            else:
                src = h0 + b * H if t == 0 else h + ((t - 1) * B + b) * H
                memcpy(hp + b * H, src, H * sizeof(floating))
        _step_product(B, H3, H, hp, W_hh_T, False, gh)
        for b in range(B):
            k = t * B + b
            pa = preact + k * H3
            g = gates + k * H3
            ghb = gh + b * H3
            hnb = hn + k * H
            ho = h + k * H
            for j in range(2 * H):
                pa[j] += ghb[j] + b_hh[j]
            _gates_rz(2 * H, pa, g, mode)
            for j in range(H):
                hnb[j] = ghb[2 * H + j] + b_hh[2 * H + j]
                pa[2 * H + j] += g[j] * hnb[j]
            _gate_n(H, pa + 2 * H, g + 2 * H, mode)
            for j in range(H):
                z = g[H + j]
                ho[j] = (<floating>1 - z) * g[2 * H + j] + z * hp[b * H + j]


cdef void gru_bwd(int T, int B, int I, int H, const floating* x, const unsigned char* reset,
                  const floating* W_ih, const floating* W_hh, const floating* preact,
                  const floating* gates, const floating* hn, const floating* h_prev,
                  const floating* dy, floating* dW_ih, floating* dW_hh, floating* db_ih,
                  floating* db_hh, floating* dx, floating* dh0, floating* G, floating* Gh,
                  floating* carry, floating* dhp, int mode) noexcept nogil:
    cdef int H3 = 3 * H, t, b, j, k
    cdef int TB = T * B
    cdef const floating* g
    cdef const floating* pa
    cdef const floating* hnb
    cdef const floating* hpb
    cdef const floating* dyb
    cdef floating* Gb
    cdef floating* Ghb
    cdef floating* cb
    cdef floating* db
    memset(carry, 0, B * H * sizeof(floating))
    if dh0 != NULL:
        memset(dh0, 0, B * H * sizeof(floating))
    for t in range(T - 1, -1, -1):
        for b in range(B):
            k = t * B + b
            g = gates + k * H3
            pa = preact + k * H3
            hnb = hn + k * H
            hpb = h_prev + k * H
            dyb = dy + k * H
            Gb = G + k * H3
            Ghb = Gh + k * H3
            cb = carry + b * H
            db = dhp + b * H
            if floating is float:
                memrl_gru_gates_bwd_f(H, mode, g, pa, hnb, hpb, dyb, cb, Gb, Ghb, db)
            else:
                memrl_gru_gates_bwd_d(H, mode, g, pa, hnb, hpb, dyb, cb, Gb, Ghb, db)
        _step_product(B, H, H3, Gh + t * B * H3, W_hh, True, dhp)
        for b in range(B):
            if reset != NULL and reset[t * B + b]:
                # Step t started from the constant zero state: nothing flows further back.
                memset(carry + b * H, 0, H * sizeof(floating))
            elif t == 0:
                if dh0 != NULL:
                    memcpy(dh0 + b * H, dhp + b * H, H * sizeof(floating))
            else:
                memcpy(carry + b * H, dhp + b * H, H * sizeof(floating))
    # Parameter gradients and dx: one product each over all T*B rows (dW_hh == NULL: dx only).
    if dW_hh != NULL:
        if floating is float:
            memrl_add_rows_f(TB, H3, G, db_ih)
            memrl_add_rows_f(TB, H3, Gh, db_hh)
        else:
            memrl_add_rows_d(TB, H3, G, db_ih)
            memrl_add_rows_d(TB, H3, Gh, db_hh)
        if I > 0:
            gemm(True, False, H3, I, TB, <floating>1, G, H3, x, I, <floating>1, dW_ih, I)
        gemm(True, False, H3, H, TB, <floating>1, Gh, H3, h_prev, H, <floating>1, dW_hh, H)
    if dx != NULL and I > 0:
        gemm(False, False, TB, I, H3, <floating>1, G, H3, W_ih, I, <floating>0, dx, I)


cdef void gru_step_fwd(int B, int I, int H, const floating* x, floating* h,
                       const unsigned char* reset, const floating* W_ih, const floating* W_hh,
                       const floating* b_ih, const floating* b_hh, floating* gx, floating* gh,
                       int mode) noexcept nogil:
    """Advance carried states h (B, H) by one step; rows with reset[b] restart from zeros.

    The same semantics as ``gru_fwd`` at one step t with h0 = h: a loop of this over t, starting
    from a copy of h0 and passing reset[t], computes gru_fwd's outputs.
    """
    cdef int H3 = 3 * H, b, j
    cdef floating* gxb
    cdef floating* ghb
    cdef floating* hb
    cdef floating z
    for b in range(B):
        if reset != NULL and reset[b]:
            memset(h + b * H, 0, H * sizeof(floating))
        memcpy(gx + b * H3, b_ih, H3 * sizeof(floating))
        memcpy(gh + b * H3, b_hh, H3 * sizeof(floating))
    if I > 0:
        gemm(False, True, B, H3, I, <floating>1, x, I, W_ih, I, <floating>1, gx, H3)
    gemm(False, True, B, H3, H, <floating>1, h, H, W_hh, H, <floating>1, gh, H3)
    for b in range(B):
        gxb = gx + b * H3
        ghb = gh + b * H3
        hb = h + b * H
        for j in range(2 * H):
            gxb[j] += ghb[j]
        _gates_rz(2 * H, gxb, gxb, mode)
        for j in range(H):
            gxb[2 * H + j] += gxb[j] * ghb[2 * H + j]
        _gate_n(H, gxb + 2 * H, gxb + 2 * H, mode)
        for j in range(H):
            z = gxb[H + j]
            hb[j] = (<floating>1 - z) * gxb[2 * H + j] + z * hb[j]


cdef inline void _check(str name, tuple got, tuple expected) except *:
    if got != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {got}")


def forward(const floating[:, :, ::1] x, const floating[:, ::1] h0, const unsigned char[:, ::1] reset,
            const floating[:, ::1] W_ih, const floating[:, ::1] W_hh, const floating[::1] b_ih,
            const floating[::1] b_hh, floating[:, :, ::1] h, floating[:, :, ::1] preact,
            floating[:, :, ::1] gates, floating[:, :, ::1] hn, floating[:, :, ::1] h_prev,
            floating[:, ::1] W_hh_T, floating[:, ::1] gh, int mode):
    """Run the whole sequence; writes h and the cache (see the module docstring).

    ``h0`` (B, H): the state before step 0; rows with ``reset[t, b]`` enter step t from zeros.
    """
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    _check("h0", (h0.shape[0], h0.shape[1]), (B, H))
    _check("W_ih", (W_ih.shape[0], W_ih.shape[1]), (3 * H, I))
    _check("W_hh", (W_hh.shape[0], W_hh.shape[1]), (3 * H, H))
    _check("b_ih", (b_ih.shape[0],), (3 * H,))
    _check("b_hh", (b_hh.shape[0],), (3 * H,))
    _check("h", (h.shape[0], h.shape[1], h.shape[2]), (T, B, H))
    _check("preact", (preact.shape[0], preact.shape[1], preact.shape[2]), (T, B, 3 * H))
    _check("gates", (gates.shape[0], gates.shape[1], gates.shape[2]), (T, B, 3 * H))
    _check("hn", (hn.shape[0], hn.shape[1], hn.shape[2]), (T, B, H))
    _check("h_prev", (h_prev.shape[0], h_prev.shape[1], h_prev.shape[2]), (T, B, H))
    _check("W_hh_T", (W_hh_T.shape[0], W_hh_T.shape[1]), (H, 3 * H))
    _check("gh", (gh.shape[0], gh.shape[1]), (B, 3 * H))
    if reset is not None:
        _check("reset", (reset.shape[0], reset.shape[1]), (T, B))
    if mode not in (0, 1):
        raise ValueError(f"mode: expected 0 (exact) or 1 (fast), got {mode}")
    if T == 0 or B == 0 or H == 0:
        return
    cdef const unsigned char* rp = NULL if reset is None else &reset[0, 0]
    cdef const floating* xp = &x[0, 0, 0] if I > 0 else NULL
    cdef const floating* wp = &W_ih[0, 0] if I > 0 else NULL
    with nogil:
        gru_fwd(T, B, I, H, xp, &h0[0, 0], rp, wp, &W_hh[0, 0], &b_ih[0], &b_hh[0],
                &h[0, 0, 0], &preact[0, 0, 0], &gates[0, 0, 0], &hn[0, 0, 0], &h_prev[0, 0, 0],
                &W_hh_T[0, 0], &gh[0, 0], mode)


def _check_workspaces(workspaces, inputs):
    """Refuse a workspace that overlaps another workspace or an input (by name)."""
    import numpy as np
    arrays = {name: np.asarray(a) for name, a in {**workspaces, **inputs}.items()}
    names = list(arrays)
    for i, name in enumerate(names[:len(workspaces)]):
        for other in names[i + 1:]:
            if np.may_share_memory(arrays[name], arrays[other]):
                raise ValueError(f"{name}: expected a workspace of its own, got memory shared with {other}")


def backward(const floating[:, :, ::1] x, const unsigned char[:, ::1] reset,
             const floating[:, ::1] W_ih, const floating[:, ::1] W_hh,
             const floating[:, :, ::1] preact, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] hn, const floating[:, :, ::1] h_prev,
             const floating[:, :, ::1] dy, floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
             floating[::1] db_ih, floating[::1] db_hh, floating[:, :, ::1] dx,
             floating[:, ::1] dh0, floating[:, :, ::1] G, floating[:, :, ::1] Gh,
             floating[:, ::1] carry, floating[:, ::1] dhp, int mode):
    """Backpropagate dy (T, B, H) through time: accumulate parameter grads, write dx and dh0.

    dx and dh0 may be None. G, Gh (T, B, 3H) and carry, dhp (B, H) are workspaces: each its own
    memory, shared with no other argument (ValueError otherwise; the kernels' pointers are
    restrict-qualified).
    """
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = W_hh.shape[1]
    _check_workspaces({"G": G, "Gh": Gh, "carry": carry, "dhp": dhp},
                      {"preact": preact, "gates": gates, "hn": hn, "h_prev": h_prev, "dy": dy})
    _check("W_ih", (W_ih.shape[0], W_ih.shape[1]), (3 * H, I))
    _check("W_hh", (W_hh.shape[0], W_hh.shape[1]), (3 * H, H))
    for name, arr, width in (("preact", preact, 3 * H), ("gates", gates, 3 * H), ("hn", hn, H),
                             ("h_prev", h_prev, H), ("dy", dy, H), ("G", G, 3 * H), ("Gh", Gh, 3 * H)):
        _check(name, tuple(arr.shape[:3]), (T, B, width))
    _check("dW_ih", (dW_ih.shape[0], dW_ih.shape[1]), (3 * H, I))
    _check("dW_hh", (dW_hh.shape[0], dW_hh.shape[1]), (3 * H, H))
    _check("db_ih", (db_ih.shape[0],), (3 * H,))
    _check("db_hh", (db_hh.shape[0],), (3 * H,))
    _check("carry", (carry.shape[0], carry.shape[1]), (B, H))
    _check("dhp", (dhp.shape[0], dhp.shape[1]), (B, H))
    if dx is not None:
        _check("dx", (dx.shape[0], dx.shape[1], dx.shape[2]), (T, B, I))
    if dh0 is not None:
        _check("dh0", (dh0.shape[0], dh0.shape[1]), (B, H))
    if reset is not None:
        _check("reset", (reset.shape[0], reset.shape[1]), (T, B))
    if mode not in (0, 1):
        raise ValueError(f"mode: expected 0 (exact) or 1 (fast), got {mode}")
    if T == 0 or B == 0 or H == 0:
        if dh0 is not None:
            dh0[:, :] = 0
        if dx is not None:
            dx[:, :, :] = 0
        return
    cdef const unsigned char* rp = NULL if reset is None else &reset[0, 0]
    cdef floating* dxp = NULL if (dx is None or I == 0) else &dx[0, 0, 0]
    cdef floating* dh0p = NULL if dh0 is None else &dh0[0, 0]
    cdef const floating* xp = &x[0, 0, 0] if I > 0 else NULL
    cdef const floating* wp = &W_ih[0, 0] if I > 0 else NULL
    cdef floating* dwp = &dW_ih[0, 0] if I > 0 else NULL
    with nogil:
        gru_bwd(T, B, I, H, xp, rp, wp, &W_hh[0, 0], &preact[0, 0, 0], &gates[0, 0, 0],
                &hn[0, 0, 0], &h_prev[0, 0, 0], &dy[0, 0, 0], dwp, &dW_hh[0, 0],
                &db_ih[0], &db_hh[0], dxp, dh0p, &G[0, 0, 0], &Gh[0, 0, 0], &carry[0, 0],
                &dhp[0, 0], mode)


def step(const floating[:, ::1] x, floating[:, ::1] h, const unsigned char[::1] reset,
         const floating[:, ::1] W_ih, const floating[:, ::1] W_hh, const floating[::1] b_ih,
         const floating[::1] b_hh, floating[:, ::1] gx, floating[:, ::1] gh, int mode):
    """Advance h (B, H) in place by one step of input x (B, I); reset rows restart from zero."""
    cdef int B = x.shape[0], I = x.shape[1], H = h.shape[1]
    _check("h", (h.shape[0], h.shape[1]), (B, H))
    _check("W_ih", (W_ih.shape[0], W_ih.shape[1]), (3 * H, I))
    _check("W_hh", (W_hh.shape[0], W_hh.shape[1]), (3 * H, H))
    _check("b_ih", (b_ih.shape[0],), (3 * H,))
    _check("b_hh", (b_hh.shape[0],), (3 * H,))
    _check("gx", (gx.shape[0], gx.shape[1]), (B, 3 * H))
    _check("gh", (gh.shape[0], gh.shape[1]), (B, 3 * H))
    if reset is not None:
        _check("reset", (reset.shape[0],), (B,))
    if mode not in (0, 1):
        raise ValueError(f"mode: expected 0 (exact) or 1 (fast), got {mode}")
    if B == 0 or H == 0:
        return
    cdef const unsigned char* rp = NULL if reset is None else &reset[0]
    cdef const floating* xp = &x[0, 0] if I > 0 else NULL
    cdef const floating* wp = &W_ih[0, 0] if I > 0 else NULL
    with nogil:
        gru_step_fwd(B, I, H, xp, &h[0, 0], rp, wp, &W_hh[0, 0], &b_ih[0], &b_hh[0],
                     &gx[0, 0], &gh[0, 0], mode)



def step_product(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] out, *,
                 bint accumulate=False, long repeats=1):
    """out = A @ B (out += A @ B with ``accumulate``), float32, computed as the time loops do.

    A (M, K), B (K, N), out (M, N), all float32 and C-contiguous; the product runs ``repeats``
    times inside C without the GIL (benchmarks: bench/bench_matmul.py). Returns True when the
    register-blocked kernel of _small_gemm.h computed it (the x86-64-v3 path where
    ``small_kernel_in_use()``, for the shapes it takes), False when gemm did. Raises ValueError on
    mismatched or empty shapes or ``repeats`` < 1.
    """
    cdef int M = out.shape[0], N = out.shape[1], K = A.shape[1]
    cdef long r
    if A.shape[0] != M or B.shape[0] != K or B.shape[1] != N:
        raise ValueError(f"A, B, out: expected shapes (M, K), (K, N), (M, N), got ({A.shape[0]}, {A.shape[1]}), "
                         f"({B.shape[0]}, {B.shape[1]}), ({out.shape[0]}, {out.shape[1]})")
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"A, B, out: expected non-empty products, got M={M}, N={N}, K={K}")
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    with nogil:
        for r in range(repeats):
            _step_product(M, N, K, &A[0, 0], &B[0, 0], accumulate, &out[0, 0])
    return bool(_kernel_takes(M, N, K))


def small_kernel_product(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] out, str order, *,
                         bint accumulate=False):
    """out = A @ B (out += A @ B with ``accumulate``) by _small_gemm.h's kernels in the summation
    ``order`` named ("one chain" or "haswell"; the header defines both), regardless of which order
    this machine's OpenBLAS uses (tests/test_isa.py checks each against its written-out definition).

    A (M, K), B (K, N), out (M, N), float32, C-contiguous. Returns True when the kernels computed
    it, False (``out`` untouched) where they do not take it: the baseline path, which has no
    kernels, or a shape outside their range. Raises ValueError on an unknown ``order`` or
    mismatched shapes.
    """
    if order not in _ORDERS:
        raise ValueError(f"order: expected one of {sorted(_ORDERS)}, got {order!r}")
    cdef int M = out.shape[0], N = out.shape[1], K = A.shape[1], code = _ORDERS[order], done
    if A.shape[0] != M or B.shape[0] != K or B.shape[1] != N:
        raise ValueError(f"A, B, out: expected shapes (M, K), (K, N), (M, N), got ({A.shape[0]}, {A.shape[1]}), "
                         f"({B.shape[0]}, {B.shape[1]}), ({out.shape[0]}, {out.shape[1]})")
    with nogil:
        done = memrl_small_sgemm_nn(M, N, K, &A[0, 0], K, &B[0, 0], N, accumulate, &out[0, 0], N, code)
    return bool(done)
