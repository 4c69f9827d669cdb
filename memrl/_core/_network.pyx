"""Whole-network forward and backward in one call.

A ``SequencePlan`` binds, once, a network's layers, its parameter and gradient views and the
workspace of one (T, B) shape to raw pointers. Each ``forward``/``backward`` then crosses from
Python into C once, instead of once per layer: handling a kernel's dozen buffer arguments costs
a few microseconds, as much as a whole GRU time step of the chapter's networks. The same plan is
used from C by the fused SAC updates (``memrl._core._sac``).

Layer semantics are those of ``memrl._core._dense`` and ``memrl._core._gru``; the plan only
chains them: layer i reads layer i-1's output buffer, backward passes dx down the stack.
Nothing is allocated per call and the GIL is released.
"""
from cython cimport floating
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from memrl._core._dense cimport dense_fwd, dense_bwd
from memrl._core._gru cimport gru_fwd, gru_bwd, gru_step_fwd


cdef size_t addr(arr) except? 0:
    """Address of a C-contiguous NumPy array's data (callers keep the arrays alive)."""
    if arr is None:
        return 0
    if not arr.flags.c_contiguous:
        raise ValueError("plan buffers must be C-contiguous")
    return <size_t>arr.__array_interface__["data"][0]


cdef int _bind_layer(NetPlan* net, int i, dict spec) except -1:
    """Kind, sizes and parameter (and, if given, gradient) pointers of layer i, shared by both plans."""
    cdef LayerPlan* lp = &net.layers[i]
    p, g = spec["params"], spec.get("grads")
    lp.in_dim = spec["in_dim"]
    lp.out_dim = spec["out_dim"]
    lp.code = spec["code"]
    lp.kind = 0 if spec["kind"] == "dense" else 1
    names = ("W", "b", None, None) if lp.kind == 0 else ("W_ih", "b_ih", "W_hh", "b_hh")
    lp.W = <void*>addr(p[names[0]])
    lp.b = <void*>addr(p[names[1]])
    if g is not None:
        lp.dW = <void*>addr(g[names[0]])
        lp.db = <void*>addr(g[names[1]])
    if lp.kind == 1:
        lp.W_hh = <void*>addr(p["W_hh"])
        lp.b_hh = <void*>addr(p["b_hh"])
        if g is not None:
            lp.dW_hh = <void*>addr(g["W_hh"])
            lp.db_hh = <void*>addr(g["b_hh"])
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
    """Forward/backward of a Dense/GRU stack for one (T, B), over preallocated buffers.

    ``layers``: list of dicts from ``memrl.nn`` layers: ``kind`` ("dense"/"gru"), ``in_dim``,
    ``out_dim``, ``code`` (activation or gate mode), ``params``/``grads`` (name -> view) and
    ``ws`` (name -> workspace array). ``x`` is the (T*B, in_dim) input copy buffer.
    """

    def __cinit__(self, list layers, x, int T, int B, bint is_double):
        cdef int n = len(layers), i
        _alloc_layers(&self.net, n, T, B)
        self.is_double = is_double
        self._keep = [layers, x]
        self.net.x = <void*>addr(x)
        self.net.in_dim = layers[0]["in_dim"]
        self.net.out_dim = layers[n - 1]["out_dim"]
        for i in range(n):
            spec = layers[i]
            _bind_layer(&self.net, i, spec)
            ws = spec["ws"]
            lp = &self.net.layers[i]
            if lp.kind == 0:
                lp.pre = <void*>addr(ws["pre"])
                lp.y = <void*>addr(ws["y"])
                lp.dpre = <void*>addr(ws["dpre"])
                lp.dx = <void*>addr(ws["dx"])
                lp.out = lp.y
            else:
                lp.h = <void*>addr(ws["h"])
                lp.preact = <void*>addr(ws["preact"])
                lp.gates = <void*>addr(ws["gates"])
                lp.hn = <void*>addr(ws["hn"])
                lp.h_prev = <void*>addr(ws["h_prev"])
                lp.W_hh_T = <void*>addr(ws["W_hh_T"])
                lp.gh = <void*>addr(ws["gh"])
                lp.G = <void*>addr(ws["G"])
                lp.Gh = <void*>addr(ws["Gh"])
                lp.carry = <void*>addr(ws["carry"])
                lp.dhp = <void*>addr(ws["dhp"])
                lp.dx = <void*>addr(ws["dx"])
                lp.dh0 = <void*>addr(ws["dh0"])
                lp.h0 = <void*>addr(ws["zeros"])
                lp.h0_default = lp.h0
                lp.h_prev_cont = <void*>addr(ws["h_prev_continuous"])
                lp.out = lp.h
        for i in range(n):
            self.net.layers[i].x = self.net.x if i == 0 else self.net.layers[i - 1].out

    def __dealloc__(self):
        free(self.net.layers)

    def set_initial_states(self, list states):
        """Point each GRU at an initial state (B, H) array, or None for zeros (kept alive here).

        The state is the one before step 0 only: a row whose reset flag is set (at any step,
        step 0 included) enters that step from zeros (``memrl._core._gru``).
        """
        cdef int i, k = 0
        self._keep_h0 = list(states)
        for i in range(self.net.n_layers):
            if self.net.layers[i].kind == 1:
                state = states[k] if k < len(states) else None
                self.net.layers[i].h0 = self.net.layers[i].h0_default if state is None else <void*>addr(state)
                k += 1

    def forward(self, x, reset):
        """x: (T, B, in_dim) array of the plan's dtype (copied in); reset: (T, B) uint8 or None."""
        cdef size_t xa = addr(x)
        cdef size_t ra = addr(reset)
        with nogil:
            memcpy(self.net.x, <void*>xa, self.net.T * self.net.B * self.net.in_dim * (8 if self.is_double else 4))
            self.net.reset = <const unsigned char*>ra
            if self.is_double:
                plan_forward[double](&self.net)
            else:
                plan_forward[float](&self.net)

    def backward(self, dy, bint need_dx, bint ignore_resets=False):
        """dy: (T, B, out_dim); accumulates parameter gradients; dx lands in layer 0's ``dx``."""
        cdef size_t da = addr(dy)
        with nogil:
            if self.is_double:
                plan_backward[double](&self.net, <double*>da, need_dx, ignore_resets)
            else:
                plan_backward[float](&self.net, <float*>da, need_dx, ignore_resets)


cdef void plan_forward(NetPlan* plan, floating* dummy=NULL) noexcept nogil:
    cdef int i, N = plan.T * plan.B
    cdef LayerPlan* lp
    for i in range(plan.n_layers):
        lp = &plan.layers[i]
        if lp.kind == 0:
            dense_fwd(N, lp.in_dim, lp.out_dim, <floating*>lp.x, <floating*>lp.W, <floating*>lp.b,
                      <floating*>lp.pre, <floating*>lp.y, lp.code)
        else:
            gru_fwd(plan.T, plan.B, lp.in_dim, lp.out_dim, <floating*>lp.x, <floating*>lp.h0, plan.reset,
                    <floating*>lp.W, <floating*>lp.W_hh, <floating*>lp.b, <floating*>lp.b_hh,
                    <floating*>lp.h, <floating*>lp.preact, <floating*>lp.gates, <floating*>lp.hn,
                    <floating*>lp.h_prev, <floating*>lp.W_hh_T, <floating*>lp.gh, lp.code)


cdef void plan_backward(NetPlan* plan, floating* dy, bint need_dx, bint ignore_resets,
                        bint param_grads=True) noexcept nogil:
    cdef int i, N = plan.T * plan.B, H, b
    cdef LayerPlan* lp
    cdef floating* g = dy
    cdef floating* dx
    cdef floating* hp
    cdef const unsigned char* reset
    for i in range(plan.n_layers - 1, -1, -1):
        lp = &plan.layers[i]
        dx = <floating*>lp.dx if (i > 0 or need_dx) else NULL
        if lp.kind == 0:
            dense_bwd(N, lp.in_dim, lp.out_dim, <floating*>lp.x, <floating*>lp.W, <floating*>lp.pre,
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
            gru_bwd(plan.T, plan.B, lp.in_dim, H, <floating*>lp.x, reset, <floating*>lp.W,
                    <floating*>lp.W_hh, <floating*>lp.preact, <floating*>lp.gates, <floating*>lp.hn, hp, g,
                    <floating*>lp.dW, <floating*>lp.dW_hh if param_grads else NULL, <floating*>lp.db,
                    <floating*>lp.db_hh, dx,
                    <floating*>lp.dh0, <floating*>lp.G, <floating*>lp.Gh, <floating*>lp.carry,
                    <floating*>lp.dhp, lp.code)
        g = dx


cdef class StepPlan:
    """One step of a Dense/GRU stack for a batch of carried states (acting), in one call.

    ``layers`` as for SequencePlan, with step workspaces (dense: ``pre``, ``y``; gru: ``gx``,
    ``gh``) and ``states``: one (B, H) array per GRU, advanced in place.
    """

    def __cinit__(self, list layers, list states, int B, bint is_double):
        cdef int n = len(layers), i, k = 0
        _alloc_layers(&self.net, n, 1, B)
        self.is_double = is_double
        self._keep = [layers, states]
        self.net.in_dim = layers[0]["in_dim"]
        self.net.out_dim = layers[n - 1]["out_dim"]
        for i in range(n):
            spec = {**layers[i], "grads": None}
            _bind_layer(&self.net, i, spec)
            ws = spec["ws"]
            lp = &self.net.layers[i]
            if lp.kind == 0:
                lp.pre = <void*>addr(ws["pre"])
                lp.y = <void*>addr(ws["y"])
                lp.out = lp.y
            else:
                lp.preact = <void*>addr(ws["gx"])
                lp.gh = <void*>addr(ws["gh"])
                lp.h = <void*>addr(states[k])
                lp.out = lp.h
                k += 1

    def __dealloc__(self):
        free(self.net.layers)

    def step(self, x, reset):
        """x: (B, in_dim) of the plan's dtype; reset: (B,) uint8 or None (rows restart from zeros)."""
        cdef size_t xa = addr(x)
        cdef size_t ra = addr(reset)
        with nogil:
            if self.is_double:
                plan_step[double](&self.net, <double*>xa, <const unsigned char*>ra)
            else:
                plan_step[float](&self.net, <float*>xa, <const unsigned char*>ra)


cdef void plan_step(NetPlan* plan, floating* x, const unsigned char* reset) noexcept nogil:
    cdef int i
    cdef LayerPlan* lp
    cdef floating* inp = x
    for i in range(plan.n_layers):
        lp = &plan.layers[i]
        if lp.kind == 0:
            dense_fwd(plan.B, lp.in_dim, lp.out_dim, inp, <floating*>lp.W, <floating*>lp.b,
                      <floating*>lp.pre, <floating*>lp.y, lp.code)
        else:
            gru_step_fwd(plan.B, lp.in_dim, lp.out_dim, inp, <floating*>lp.h, reset, <floating*>lp.W,
                         <floating*>lp.W_hh, <floating*>lp.b, <floating*>lp.b_hh, <floating*>lp.preact,
                         <floating*>lp.gh, lp.code)
        inp = <floating*>lp.out
