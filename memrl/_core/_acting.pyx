"""The policy's step while acting (rollouts and evaluation): one call, no GIL.

Bound once to the caller's arrays: observations (N, O), reset flags (N,) (those rows start a new
episode from the zero state; the flags are cleared after the step), standard normal noise (N, A)
and the actions (N, A) it writes:

* SAC, exploring: the tanh-Gaussian sample ``tanh(mean + exp(clip(log_std)) * noise)``;
  deterministic: ``tanh(mean)`` (``memrl._core._head``);
* TD3, exploring: ``clip(tanh(actor) + exploration_noise * noise, -1, 1)`` (Fujimoto et al. 2018);
  deterministic: ``tanh(actor)``;
* discrete SAC (actions (N, K): one category index per component, as floats), exploring: each
  component's index sampled from its softmax by the inverse CDF at ``Phi(noise)`` (the standard
  normal noise mapped to a uniform); deterministic: the argmax (``memrl._core._categorical``).

``run`` returns whether every action is finite. float32 (training) or float64 (tests).
"""
from cython cimport floating
from libc.string cimport memset

import numpy as np

from memrl._core._buffers cimport data_pointer as _data
from memrl._core._network cimport NetPlan, StepPlan, plan_step
from memrl._core._head cimport head_fwd
from memrl._core._categorical cimport categorical_act
from memrl._core._activations cimport exact_tanh
from memrl._core._update cimport Algorithm, DISCRETE_SAC, SAC, TD3
from memrl._core._finite cimport all_finite


cdef struct ActingCtx:
    NetPlan* plan
    bint is_double
    Algorithm algorithm
    int N, A
    const void* observations        # IN (N, O)
    unsigned char* reset            # INOUT (N,): cleared after the step
    const void* noise               # IN (N, A)
    void* actions                   # OUT (N, A)
    void* logp                      # (N,) (SAC's head writes it)
    double log_std_min, log_std_max, exploration_noise
    int K, C                        # discrete SAC: components and logits
    const int* nvec                 # (K,) categories per component


cdef bint _act(ActingCtx* c, const floating* obs, bint explore) noexcept nogil:
    cdef Py_ssize_t k, n = c.N * c.A
    cdef floating* actions = <floating*>c.actions
    cdef const floating* noise = <const floating*>c.noise if explore else NULL
    cdef const floating* pre
    cdef floating sigma = <floating>c.exploration_noise, v
    plan_step[floating](c.plan, obs, c.reset)
    memset(c.reset, 0, c.N)
    pre = <const floating*>c.plan.layers[c.plan.n_layers - 1].out
    if c.algorithm == DISCRETE_SAC:
        categorical_act[floating](c.N, c.K, c.nvec, c.C, pre, noise, actions)
    elif c.algorithm == TD3:
        for k in range(n):
            v = exact_tanh(pre[k])
            actions[k] = v if noise == NULL else _clip(v + sigma * noise[k], <floating>-1, <floating>1)
    else:
        head_fwd[floating](c.N, c.A, pre, noise, actions, <floating*>c.logp, c.log_std_min, c.log_std_max)
    return all_finite(actions, n)


cdef inline floating _clip(floating x, floating lo, floating hi) noexcept nogil:
    x = lo if x < lo else x
    return hi if x > hi else x


cdef class Acting:
    """A policy step bound to a step plan (``memrl.nn.Sequential.step_plan``) and the caller's
    arrays; ``algorithm`` is ``memrl._core._update.Algorithm``'s SAC, TD3 or DISCRETE_SAC (which
    needs ``action_nvec``, the categories of each of the actions' K components)."""
    cdef ActingCtx ctx
    cdef object _keep

    def __init__(self, StepPlan plan, observations, reset, noise, actions, *, int algorithm, double log_std_min,
                 double log_std_max, double exploration_noise, action_nvec=None):
        cdef const unsigned char[::1] flags = reset
        cdef const int[::1] nv
        N, A = actions.shape
        dtype = np.float64 if plan.is_double else np.float32
        O = plan.net.in_dim
        for name, array, shape, kind in (("observations", observations, (N, O), dtype), ("reset", reset, (N,), np.uint8),
                                         ("noise", noise, (N, A), dtype), ("actions", actions, (N, A), dtype)):
            if array.shape != shape or array.dtype != kind or not array.flags.c_contiguous:
                raise ValueError(f"{name}: expected a C-contiguous {np.dtype(kind).name} array of shape {shape}, "
                                 f"got {array.dtype} {array.shape}")
        if algorithm not in (SAC, TD3, DISCRETE_SAC):
            raise ValueError(f"algorithm: expected SAC ({int(SAC)}), TD3 ({int(TD3)}) or DISCRETE_SAC "
                             f"({int(DISCRETE_SAC)}), got {algorithm}")
        if (algorithm == DISCRETE_SAC) != (action_nvec is not None):
            raise ValueError("action_nvec: expected the categories per component for discrete SAC (only)")
        nvec = None
        if algorithm == DISCRETE_SAC:
            nvec = np.array(action_nvec, np.int32)
            if nvec.shape != (A,) or (nvec < 1).any():
                raise ValueError(f"action_nvec: expected {A} positive category counts (one per action column), "
                                 f"got {list(action_nvec)}")
            nv = nvec
            self.ctx.nvec = &nv[0]
            self.ctx.K, self.ctx.C = A, int(nvec.sum())
        outputs = A if algorithm == TD3 else (int(nvec.sum()) if nvec is not None else 2 * A)
        if plan.net.B != N or plan.net.out_dim != outputs:
            raise ValueError(f"plan: expected a step plan for {N} rows with {outputs} outputs, "
                             f"got {plan.net.B} rows and {plan.net.out_dim}")
        logp = np.zeros(N, dtype)
        self._keep = (plan, observations, reset, noise, actions, logp, nvec)
        self.ctx.plan = &plan.net
        self.ctx.is_double = plan.is_double
        self.ctx.algorithm = <Algorithm>algorithm
        self.ctx.N, self.ctx.A = N, A
        self.ctx.observations = _data(observations)
        self.ctx.reset = <unsigned char*>&flags[0]
        self.ctx.noise = _data(noise)
        self.ctx.actions = _data(actions)
        self.ctx.logp = _data(logp)
        self.ctx.log_std_min, self.ctx.log_std_max = log_std_min, log_std_max
        self.ctx.exploration_noise = exploration_noise

    def run(self, bint explore=True):
        """Actions for the bound observations into the bound array (the exploring policy, or the
        deterministic one); returns whether all are finite."""
        cdef bint ok
        with nogil:
            if self.ctx.is_double:
                ok = _act(&self.ctx, <const double*>self.ctx.observations, explore)
            else:
                ok = _act(&self.ctx, <const float*>self.ctx.observations, explore)
        return ok
