"""Dense layer kernels: ``pre = x W^T + b``, ``y = act(pre)`` over N rows.

Layout (C-contiguous): x (N, I), W (O, I), b (O,), pre and y (N, O). Backward ACCUMULATES into
dW and db (callers zero them) and OVERWRITES dx. Nothing is allocated; the GIL is released.
"""
from cython cimport floating
from memrl._core._blas cimport gemm
from memrl._core._activations cimport activate_array, activate_grad_array

from memrl._core import ACTIVATIONS as _NAMES

ACTIVATIONS = {name: code for code, name in enumerate(_NAMES)}
"""Activation name -> code (the codes of ``_activations.pxd``)."""
IDENTITY, RELU, TANH, SIGMOID, FAST_TANH, FAST_SIGMOID = (ACTIVATIONS[n] for n in _NAMES)


cdef void dense_fwd(int N, int I, int O, const floating* x, const floating* W, const floating* b,
                    floating* pre, floating* y, int act) noexcept nogil:
    cdef int n, o
    cdef floating* p
    for n in range(N):
        p = pre + n * O
        for o in range(O):
            p[o] = b[o]
    gemm(False, True, N, O, I, <floating>1, x, I, W, I, <floating>1, pre, O)
    activate_array(act, N * O, pre, y)


cdef void dense_bwd(int N, int I, int O, const floating* x, const floating* W,
                    const floating* pre, const floating* y, const floating* dy,
                    floating* dW, floating* db, floating* dx, floating* dpre, int act) noexcept nogil:
    cdef int n, o
    cdef const floating* g = dy
    cdef const floating* row
    if act != 0:
        activate_grad_array(act, N * O, pre, y, dy, dpre)
        g = dpre
    if dW != NULL:  # NULL: input gradient only (e.g. a critic differentiated for the actor)
        for n in range(N):
            row = g + n * O
            for o in range(O):
                db[o] += row[o]
        gemm(True, False, O, I, N, <floating>1, g, O, x, I, <floating>1, dW, I)
    if dx != NULL:
        gemm(False, False, N, I, O, <floating>1, g, O, W, I, <floating>0, dx, I)


def forward(const floating[:, ::1] x, const floating[:, ::1] W, const floating[::1] b,
            floating[:, ::1] pre, floating[:, ::1] y, int act):
    """pre = x W^T + b; y = act(pre) (y may be pre for the identity)."""
    cdef int N = x.shape[0], I = x.shape[1], O = W.shape[0]
    if W.shape[1] != I or b.shape[0] != O or pre.shape[0] != N or pre.shape[1] != O \
            or y.shape[0] != N or y.shape[1] != O:
        raise ValueError(f"dense.forward: inconsistent shapes x {tuple(x.shape)[:2]}, "
                         f"W {tuple(W.shape)[:2]}, b {b.shape[0]}, pre {tuple(pre.shape)[:2]}, y {tuple(y.shape)[:2]}")
    if not 0 <= act <= 5:
        raise ValueError(f"act: expected an activation code 0..5, got {act}")
    if N == 0 or O == 0:
        return
    with nogil:  # with I == 0 the product adds nothing and x, W are never read
        dense_fwd(N, I, O, &x[0, 0] if I > 0 else NULL, &W[0, 0] if I > 0 else NULL, &b[0], &pre[0, 0],
                  &y[0, 0], act)


def backward(const floating[:, ::1] x, const floating[:, ::1] W, const floating[:, ::1] pre,
             const floating[:, ::1] y, const floating[:, ::1] dy, floating[:, ::1] dW,
             floating[::1] db, floating[:, ::1] dx, floating[:, ::1] dpre, int act):
    """Accumulate dW += dpre^T x, db += sum(dpre); overwrite dx = dpre W (dx may be None)."""
    cdef int N = x.shape[0], I = x.shape[1], O = W.shape[0]
    if dy.shape[0] != N or dy.shape[1] != O or dW.shape[0] != O or dW.shape[1] != I \
            or db.shape[0] != O or dpre.shape[0] != N or dpre.shape[1] != O \
            or pre.shape[0] != N or pre.shape[1] != O or y.shape[0] != N or y.shape[1] != O:
        raise ValueError("dense.backward: inconsistent shapes")
    if dx is not None and (dx.shape[0] != N or dx.shape[1] != I):
        raise ValueError(f"dx: expected shape ({N}, {I}), got {tuple(dx.shape)[:2]}")
    if N == 0 or O == 0:
        if dx is not None:
            dx[:, :] = 0
        return
    cdef floating* dx_ptr = NULL
    cdef int n, o
    if dx is not None and I > 0:
        dx_ptr = &dx[0, 0]
    if I == 0:  # only the bias has a gradient
        with nogil:
            activate_grad_array(act, N * O, &pre[0, 0], &y[0, 0], &dy[0, 0], &dpre[0, 0])
            for n in range(N):
                for o in range(O):
                    db[o] += dpre[n, o]
        return
    with nogil:
        dense_bwd(N, I, O, &x[0, 0], &W[0, 0], &pre[0, 0], &y[0, 0], &dy[0, 0],
                  &dW[0, 0], &db[0], dx_ptr, &dpre[0, 0], act)


def activation(int act, const floating[::1] x, floating[::1] out):
    """out = act(x), elementwise (for tests)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out: expected the shape of x")
    if x.shape[0]:
        activate_array(act, x.shape[0], &x[0], &out[0])


def activation_grad(int act, const floating[::1] x, floating[::1] out):
    """out = d act / dx at x, elementwise (for tests)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("out: expected the shape of x")
    if not x.shape[0]:
        return
    import numpy as np
    post = np.empty(x.shape[0], np.float64 if floating is double else np.float32)
    ones = np.ones_like(post)
    cdef floating[::1] post_mv = post, ones_mv = ones
    activate_array(act, x.shape[0], &x[0], &post_mv[0])
    activate_grad_array(act, x.shape[0], &x[0], &post_mv[0], &ones_mv[0], &out[0])
