"""Whole-network forward, backward and single step in one call.

A ``SequencePlan`` binds, once, a Dense/GRU stack's parameter and gradient buffers and a
workspace of one (T, B) shape, which it allocates itself, to raw pointers. Each
``forward``/``backward`` then crosses from Python into C once, instead of once per layer: handling
a kernel's dozen buffer arguments costs a few microseconds, as much as a whole GRU time step of the
chapter's networks. The updates (``memrl._core._update``) run the same plans from C. A
``StepPlan`` is the one-step version for acting, advancing carried states.

Inputs are typed: the layer table (n, 4) int32 ``[kind, in_dim, out_dim, code]`` (kind
``LayerKind``; code the activation of a dense layer or the gate mode of a GRU), the offsets
(n, 4) int64 of each layer's parameters ``[W | W_ih, b | b_ih, W_hh, b_hh]`` in the model's flat
buffers (-1 where a dense layer has none), and those flat float32 or float64 buffers. The
workspace buffers are named once, in ``LayerPlan``.

Layer semantics are those of ``memrl._core._dense`` and ``memrl._core._gru``; the plan only
chains them: layer i reads layer i-1's output buffer, backward passes dx down the stack. Nothing
is allocated per call and the GIL is released.
"""
from cython cimport floating
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

import numpy as np

from memrl._core._buffers cimport data_pointer as _data
from memrl._core._dense cimport dense_fwd, dense_bwd
from memrl._core._gru cimport gru_fwd, gru_bwd, gru_step_fwd

LAYER_COLUMNS = ("kind", "in_dim", "out_dim", "code")
PARAMETER_COLUMNS = ("W", "b", "W_hh", "b_hh")


cdef class _Buffers:
    """NumPy arrays a plan allocates and keeps alive, handing out their data pointers."""
    cdef list arrays
    cdef object dtype
    cdef object last

    def __cinit__(self, bint is_double):
        self.arrays = []
        self.dtype = np.float64 if is_double else np.float32

    cdef void* new(self, Py_ssize_t rows, Py_ssize_t cols) except NULL:
        """A zeroed (rows, cols) array (at least one element), kept (also as ``last``); returns
        its data pointer."""
        array = np.zeros((max(rows, 1), max(cols, 1)), self.dtype)
        self.arrays.append(array)
        self.last = array
        return _data(array)


cdef int _check_tables(layers, offsets, params, grads) except -1:
    if layers.dtype != np.int32 or layers.ndim != 2 or layers.shape[1] != 4 or layers.shape[0] < 1:
        raise ValueError(f"layers: expected an (n, 4) int32 table {LAYER_COLUMNS}, got {layers.dtype} {layers.shape}")
    if offsets.dtype != np.int64 or offsets.shape != layers.shape:
        raise ValueError(f"offsets: expected an {layers.shape} int64 table {PARAMETER_COLUMNS}, "
                         f"got {offsets.dtype} {offsets.shape}")
    for name, buffer in (("params", params), ("grads", grads)):
        if buffer is None:
            continue
        if buffer.dtype not in (np.float32, np.float64) or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise ValueError(f"{name}: expected a contiguous 1-D float32 or float64 buffer, got {buffer.dtype} "
                             f"{buffer.shape}")
        if buffer.dtype != params.dtype or buffer.shape != params.shape:
            raise ValueError(f"{name}: expected {params.dtype} {params.shape} like params")
    return 0


cdef int _bind_parameters(NetPlan* net, int i, layers, offsets, params, grads) except -1:
    """Kind, sizes and parameter (and, with ``grads``, gradient) pointers of layer i."""
    cdef LayerPlan* lp = &net.layers[i]
    cdef char* p = <char*>_data(params)
    cdef char* g = NULL if grads is None else <char*>_data(grads)
    cdef Py_ssize_t size = params.dtype.itemsize
    kind, lp.in_dim, lp.out_dim, lp.code = (int(v) for v in layers[i])
    if kind not in (DENSE, GRU):
        raise ValueError(f"layers[{i}].kind: expected {int(DENSE)} (dense) or {int(GRU)} (GRU), got {kind}")
    lp.kind = <LayerKind>kind
    cdef Py_ssize_t W = offsets[i, 0], b = offsets[i, 1], W_hh = offsets[i, 2], b_hh = offsets[i, 3]
    cdef Py_ssize_t I = lp.in_dim, O = lp.out_dim, G = 3 * lp.out_dim
    # each parameter's (offset, size): it must lie inside the flat buffer
    extents = [(W, O * I), (b, O)] if kind == DENSE else [(W, G * I), (b, G), (W_hh, G * O), (b_hh, G)]
    for offset, count in extents:
        if offset < 0 or offset + count > params.shape[0]:
            raise ValueError(f"offsets[{i}]: expected {len(extents)} parameter blocks inside params of "
                             f"{params.shape[0]} values, got offsets {[e[0] for e in extents]}")
    lp.W, lp.b = p + W * size, p + b * size
    if g != NULL:
        lp.dW, lp.db = g + W * size, g + b * size
    if kind == GRU:
        lp.W_hh, lp.b_hh = p + W_hh * size, p + b_hh * size
        if g != NULL:
            lp.dW_hh, lp.db_hh = g + W_hh * size, g + b_hh * size
    return 0


cdef int _alloc_layers(NetPlan* net, int n, int T, int B) except -1:
    net.n_layers = n
    net.T = T
    net.B = B
    net.reset = NULL
    net.layers = <LayerPlan*>calloc(n, sizeof(LayerPlan))
    if net.layers == NULL:
        raise MemoryError()
    return 0


cdef class SequencePlan:
    """Forward/backward of a Dense/GRU stack for one (T, B), over a workspace of its own.

    ``layers`` (n, 4) int32, ``offsets`` (n, 4) int64 (see the module doc), ``params`` and
    ``grads`` the model's flat buffers (one dtype). ``output`` (T, B, out_dim) and
    ``input_grad`` (T, B, in_dim) are the plan's arrays (overwritten by the next call);
    ``initial_state_grads`` one (B, H) array per GRU.
    """

    def __cinit__(self, int T, int B, layers, offsets, params, grads):
        cdef int n = layers.shape[0], i, N = T * B, H
        cdef LayerPlan* lp
        _check_tables(layers, offsets, params, grads)
        if T < 1 or B < 1:
            raise ValueError(f"T, B: expected positive sizes, got {T}, {B}")
        _alloc_layers(&self.net, n, T, B)
        self.is_double = params.dtype == np.float64
        cdef _Buffers ws = _Buffers(self.is_double)
        self._keep = [layers, offsets, params, grads, ws]
        self.net.in_dim = layers[0, 1]
        self.net.out_dim = layers[n - 1, 2]
        self._input = np.zeros(max(N * self.net.in_dim, 1), params.dtype)
        self.initial_state_grads = []
        outputs, input_grads = [], []
        for i in range(n):
            _bind_parameters(&self.net, i, layers, offsets, params, grads)
            lp = &self.net.layers[i]
            if i > 0 and lp.in_dim != self.net.layers[i - 1].out_dim:
                raise ValueError(f"layers[{i}].in_dim: expected {self.net.layers[i - 1].out_dim}, got {lp.in_dim}")
            lp.dx = ws.new(N, lp.in_dim)
            input_grads.append(ws.last)
            if lp.kind == DENSE:
                lp.pre = ws.new(N, lp.out_dim)
                lp.y = lp.pre if lp.code == 0 else ws.new(N, lp.out_dim)  # identity: y is pre
                outputs.append(ws.last)  # y, or pre itself for the identity
                lp.dpre = ws.new(N, lp.out_dim)
                lp.out = lp.y
            else:
                H = lp.out_dim
                lp.h = ws.new(N, H)
                outputs.append(ws.last)
                lp.preact = ws.new(N, 3 * H)
                lp.gates = ws.new(N, 3 * H)
                lp.hn = ws.new(N, H)
                lp.h_prev = ws.new(N, H)
                lp.W_hh_T = ws.new(H, 3 * H)
                lp.gh = ws.new(B, 3 * H)
                lp.G = ws.new(N, 3 * H)
                lp.Gh = ws.new(N, 3 * H)
                lp.carry = ws.new(B, H)
                lp.dhp = ws.new(B, H)
                lp.dh0 = ws.new(B, H)
                self.initial_state_grads.append(ws.last)
                lp.zeros = ws.new(B, H)
                lp.h0 = lp.zeros
                lp.h_prev_cont = ws.new(N, H)
                lp.out = lp.h
        for i in range(1, n):
            self.net.layers[i].x = self.net.layers[i - 1].out
        self.output = outputs[n - 1].reshape(T, B, self.net.out_dim)
        self.input_grad = input_grads[0].reshape(-1)[:N * self.net.in_dim].reshape(T, B, self.net.in_dim)

    def __dealloc__(self):
        free(self.net.layers)

    def set_initial_states(self, list states):
        """Point each GRU at an initial state (B, H) array of the plan's dtype, or None for zeros
        (the arrays are kept alive here; shapes are checked by the caller, memrl.nn)."""
        cdef int i, k = 0
        self._keep_h0 = list(states)
        for i in range(self.net.n_layers):
            if self.net.layers[i].kind == GRU:
                state = states[k] if k < len(states) else None
                self.net.layers[i].h0 = self.net.layers[i].zeros if state is None else _data(state)
                k += 1

    def forward(self, x, reset):
        """x: (T, B, in_dim) of the plan's dtype, copied in (backward reads the copy);
        reset: (T, B) uint8 or None."""
        cdef const unsigned char[:, ::1] r
        cdef const float[:, :, ::1] xf
        cdef const double[:, :, ::1] xd
        cdef void* inp = _data(self._input)
        cdef Py_ssize_t n = self.net.T * self.net.B * self.net.in_dim
        self.net.reset = NULL
        if reset is not None:
            r = reset
            self.net.reset = &r[0, 0]
        self._reset = reset  # backward reads the mask again: keep it alive
        if self.is_double:
            xd = x
            with nogil:
                if n > 0:
                    memcpy(inp, &xd[0, 0, 0], n * sizeof(double))
                plan_forward[double](&self.net, <const double*>inp)
        else:
            xf = x
            with nogil:
                if n > 0:
                    memcpy(inp, &xf[0, 0, 0], n * sizeof(float))
                plan_forward[float](&self.net, <const float*>inp)

    def backward(self, dy, bint need_dx, bint ignore_resets=False):
        """dy: (T, B, out_dim) of the plan's dtype; accumulates parameter gradients; dx lands in
        ``input_grad``."""
        cdef const float[:, :, ::1] gf
        cdef const double[:, :, ::1] gd
        if self.is_double:
            gd = dy
            with nogil:
                plan_backward[double](&self.net, &gd[0, 0, 0], need_dx, ignore_resets)
        else:
            gf = dy
            with nogil:
                plan_backward[float](&self.net, &gf[0, 0, 0], need_dx, ignore_resets)


cdef void plan_forward(NetPlan* plan, const floating* x) noexcept nogil:
    """Run every layer on x (T*B, in_dim), which backward reads again (keep it unchanged)."""
    cdef int i, N = plan.T * plan.B
    cdef LayerPlan* lp
    plan.layers[0].x = x
    for i in range(plan.n_layers):
        lp = &plan.layers[i]
        if lp.kind == DENSE:
            dense_fwd(N, lp.in_dim, lp.out_dim, <const floating*>lp.x, <floating*>lp.W, <floating*>lp.b,
                      <floating*>lp.pre, <floating*>lp.y, lp.code)
        else:
            gru_fwd(plan.T, plan.B, lp.in_dim, lp.out_dim, <const floating*>lp.x, <floating*>lp.h0, plan.reset,
                    <floating*>lp.W, <floating*>lp.W_hh, <floating*>lp.b, <floating*>lp.b_hh,
                    <floating*>lp.h, <floating*>lp.preact, <floating*>lp.gates, <floating*>lp.hn,
                    <floating*>lp.h_prev, <floating*>lp.W_hh_T, <floating*>lp.gh, lp.code)


cdef void plan_backward(NetPlan* plan, const floating* dy, bint need_dx, bint ignore_resets,
                        bint param_grads=True) noexcept nogil:
    """Backpropagate dy (T*B, out_dim) through the last forward; ACCUMULATES parameter gradients
    (unless ``param_grads`` is False: input gradients only), OVERWRITES layer 0's dx when
    ``need_dx``. ``ignore_resets``: RLtools' quirk, as if the window were one sequence."""
    cdef int i, N = plan.T * plan.B, H
    cdef LayerPlan* lp
    cdef const floating* g = dy
    cdef floating* dx
    cdef floating* hp
    cdef const unsigned char* reset
    for i in range(plan.n_layers - 1, -1, -1):
        lp = &plan.layers[i]
        dx = <floating*>lp.dx if (i > 0 or need_dx) else NULL
        if lp.kind == DENSE:
            dense_bwd(N, lp.in_dim, lp.out_dim, <const floating*>lp.x, <floating*>lp.W, <floating*>lp.pre,
                      <floating*>lp.y, g, <floating*>lp.dW if param_grads else NULL, <floating*>lp.db, dx,
                      <floating*>lp.dpre, lp.code)
        else:
            H = lp.out_dim
            hp = <floating*>lp.h_prev
            reset = plan.reset
            if ignore_resets and reset != NULL:
                # RLtools' quirk: backpropagate as if the window were one continuous sequence.
                hp = <floating*>lp.h_prev_cont
                memcpy(hp, lp.h_prev, plan.B * H * sizeof(floating))
                if plan.T > 1:
                    memcpy(hp + plan.B * H, lp.h, (plan.T - 1) * plan.B * H * sizeof(floating))
                reset = NULL
            gru_bwd(plan.T, plan.B, lp.in_dim, H, <const floating*>lp.x, reset, <floating*>lp.W,
                    <floating*>lp.W_hh, <floating*>lp.preact, <floating*>lp.gates, <floating*>lp.hn, hp, g,
                    <floating*>lp.dW, <floating*>lp.dW_hh if param_grads else NULL, <floating*>lp.db,
                    <floating*>lp.db_hh, dx,
                    <floating*>lp.dh0, <floating*>lp.G, <floating*>lp.Gh, <floating*>lp.carry,
                    <floating*>lp.dhp, lp.code)
        g = dx


cdef class StepPlan:
    """One step of a Dense/GRU stack for a batch of carried states (acting), in one call.

    ``layers``, ``offsets`` and ``params`` as for SequencePlan; ``states``: one (B, H) array of
    the params' dtype per GRU, advanced in place. ``output`` (B, out_dim) is the last layer's
    output (the last GRU's state if the stack ends with one).
    """

    def __cinit__(self, int B, layers, offsets, params, list states):
        cdef int n = layers.shape[0], i, k = 0
        cdef LayerPlan* lp
        _check_tables(layers, offsets, params, None)
        if B < 1:
            raise ValueError(f"B: expected a positive batch size, got {B}")
        _alloc_layers(&self.net, n, 1, B)
        self.is_double = params.dtype == np.float64
        cdef _Buffers ws = _Buffers(self.is_double)
        self._keep = [layers, offsets, params, states, ws]
        self.net.in_dim = layers[0, 1]
        self.net.out_dim = layers[n - 1, 2]
        n_gru = int((layers[:, 0] == GRU).sum())
        if len(states) != n_gru:
            raise ValueError(f"states: expected {n_gru} arrays (one per GRU), got {len(states)}")
        output = None
        for i in range(n):
            _bind_parameters(&self.net, i, layers, offsets, params, None)
            lp = &self.net.layers[i]
            if lp.kind == DENSE:
                lp.pre = ws.new(B, lp.out_dim)
                lp.y = lp.pre if lp.code == 0 else ws.new(B, lp.out_dim)
                lp.out = lp.y
                output = ws.last
            else:
                state = states[k]
                if state.dtype != params.dtype or state.shape != (B, lp.out_dim) or not state.flags.c_contiguous:
                    raise ValueError(f"states[{k}]: expected a C-contiguous {params.dtype} array of shape "
                                     f"{(B, lp.out_dim)}, got {state.dtype} {state.shape}")
                lp.preact = ws.new(B, 3 * lp.out_dim)
                lp.gh = ws.new(B, 3 * lp.out_dim)
                lp.h = _data(state)
                lp.out = lp.h
                output = state
                k += 1
        self.output = output

    def __dealloc__(self):
        free(self.net.layers)

    def step(self, x, reset):
        """x: (B, in_dim) of the plan's dtype; reset: (B,) uint8 or None (rows restart from zeros)."""
        cdef const unsigned char[::1] r
        cdef const unsigned char* rp = NULL
        cdef const float[:, ::1] xf
        cdef const double[:, ::1] xd
        if reset is not None:
            r = reset
            rp = &r[0]
        if self.is_double:
            xd = x
            with nogil:
                plan_step[double](&self.net, &xd[0, 0], rp)
        else:
            xf = x
            with nogil:
                plan_step[float](&self.net, &xf[0, 0], rp)


cdef void plan_step(NetPlan* plan, const floating* x, const unsigned char* reset) noexcept nogil:
    cdef int i
    cdef LayerPlan* lp
    cdef const floating* inp = x
    for i in range(plan.n_layers):
        lp = &plan.layers[i]
        if lp.kind == DENSE:
            dense_fwd(plan.B, lp.in_dim, lp.out_dim, inp, <floating*>lp.W, <floating*>lp.b,
                      <floating*>lp.pre, <floating*>lp.y, lp.code)
        else:
            gru_step_fwd(plan.B, lp.in_dim, lp.out_dim, inp, <floating*>lp.h, reset, <floating*>lp.W,
                         <floating*>lp.W_hh, <floating*>lp.b, <floating*>lp.b_hh, <floating*>lp.preact,
                         <floating*>lp.gh, lp.code)
        inp = <const floating*>lp.out
