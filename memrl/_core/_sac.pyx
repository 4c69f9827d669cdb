"""Fused SAC updates: one call runs a whole critic (or actor) update without the GIL.

The Python reference in ``memrl/sac.py`` states the losses and is checked against finite
differences; these kernels compute the same updates (float32) from the same buffers, bound once:
the sampler's batch arrays, the noise arrays, and the network plans (``_network``). Because a
critic's gradient touches only its own workspaces and gradients (the actor and target critics
are read-only), the two critic gradients of a step run on two threads at once with results
independent of timing; the Adam steps and the targets' Polyak step follow once both are known to
be finite (``run_critic_updates``). ``Acting`` is the rollout's policy step in one call.

Status codes returned by the run functions: 0 ok, 1 non-finite loss, 2 non-finite gradient.
"""
cimport cython
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite
from libc.string cimport memcpy, memset

from memrl._core._network cimport NetPlan, SequencePlan, StepPlan, addr as _addr, plan_backward, plan_forward, plan_step
from memrl._core._head cimport head_bwd, head_fwd
from memrl._core._adam cimport adam_kernel, polyak_kernel
from memrl._core._activations cimport exact_tanh


cdef struct AdamRef:
    float* params
    float* grads
    float* m
    float* v
    Py_ssize_t n
    const unsigned char* is_bias
    double lr, b1, b2, eps, floor, wd, clip, bias_lr_factor
    long t


cdef struct BatchRef:
    int L, B, O, A, first          # first: 0 when target windows include slot 0, else 1
    const float* obs               # (L+1, B, O)
    const float* act               # (L+1, B, A)
    const float* rew               # (L, B)
    const float* term              # (L, B)
    const unsigned char* reset     # (L, B)
    const unsigned char* final     # (L, B)
    const unsigned char* next_reset  # (L+1, B)
    const unsigned char* next_final  # (L+1, B)


cdef struct CriticCtx:
    BatchRef batch
    NetPlan* actor
    NetPlan* target0
    NetPlan* target1
    NetPlan* critic
    AdamRef adam
    float* target_params           # this critic's target (Polyak-averaged after the update)
    const float* noise             # (Lt*B, A)
    float* next_a                  # (Lt*B, A)
    float* next_logp               # (Lt*B,)
    float* y                       # (L*B,)
    float* dq                      # (L*B,)
    double gamma, lo, hi, alpha
    bint bonus, next_step, ignore_termination, mask_non_terminal
    bint td3                       # next actions: smoothed tanh(target actor) instead of the head
    float smoothing_sigma, smoothing_clip
    double loss
    int status


cdef struct ActorCtx:
    BatchRef batch
    NetPlan* actor
    NetPlan* critic0
    NetPlan* critic1
    AdamRef adam
    const float* noise             # (L*B, A)
    float* a                       # (L*B, A)
    float* logp                    # (L*B,)
    float* dq0                     # (L*B,)
    float* dq1                     # (L*B,)
    float* da                      # (L*B, A)
    float* weight                  # (L*B,) entropy weights
    float* dpre                    # (L*B, 2A) gradient at the actor's output
    double lo, hi, alpha, target_entropy
    bint entropy_all, mask_non_terminal, ignore_resets
    int threads                    # 2: the two critics' passes run on two threads
    bint td3                       # TD3: deterministic tanh actor through critic 1, then its target
    float* target_params           # TD3: the target actor (Polyak-averaged after the step)
    double tau
    double loss, entropy_gap
    int status


cdef inline float* _out(NetPlan* p) noexcept nogil:
    return <float*>p.layers[p.n_layers - 1].out


cdef inline float* _dx(NetPlan* p) noexcept nogil:
    return <float*>p.layers[0].dx


cdef inline bint _loss_step(BatchRef* b, bint mask_non_terminal, int k) noexcept nogil:
    """Steps with a loss: segment-final steps, or every non-padding step without masking."""
    if mask_non_terminal:
        return b.final[k] != 0
    return b.next_final[k] == 0


cdef inline bint _all_finite(const float* x, Py_ssize_t n) noexcept nogil:
    # A float is NaN or infinite exactly when its exponent bits are all set. An integer max over
    # the masked bit patterns vectorises (a float accumulation would be a serial chain).
    cdef Py_ssize_t i
    cdef unsigned int bits, top = 0
    for i in range(n):
        memcpy(&bits, &x[i], 4)
        bits = bits & 0x7f800000u
        top = bits if bits > top else top
    return top != 0x7f800000u


cdef void _q_input(int n, int O, int A, const float* obs, const float* fresh, const float* replayed,
                   const unsigned char* use_fresh, float* x) noexcept nogil:
    """Critic input rows x (n, O + A) = [obs, action]: the ``fresh`` action where ``use_fresh`` is
    set (every row if it is NULL), the ``replayed`` one elsewhere (every row if ``fresh`` is NULL)."""
    cdef int k, OA = O + A
    cdef const float* a
    for k in range(n):
        memcpy(x + k * OA, obs + k * O, O * sizeof(float))
        a = replayed if fresh == NULL or (use_fresh != NULL and not use_fresh[k]) else fresh
        memcpy(x + k * OA + O, a + k * A, A * sizeof(float))


cdef inline void _adam(AdamRef* r) noexcept nogil:
    adam_kernel[float](r.n, r.params, r.grads, r.m, r.v, r.lr, r.b1, r.b2, r.eps, r.floor, r.wd, r.clip,
                       r.is_bias, r.bias_lr_factor, r.t)


cdef void critic_gradient(CriticCtx* c) noexcept nogil:
    """Loss and gradient into the critic's grads; sets status (parameters untouched)."""
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, first = b.first
    cdef int Lt = L + 1 - first, d = 1 - first, OA = O + A
    cdef int bb, t, k, kd, n = 0
    cdef float* tx
    cdef float* q1
    cdef float* q2
    cdef float* q
    cdef float* cx
    cdef float qn, boot, keep, yv, diff
    cdef float alpha = <float>c.alpha, gamma = <float>c.gamma, inv_n
    cdef double loss = 0
    # 1. next actions on the target window: SAC's current actor, sampled (with log-probabilities),
    #    or TD3's target actor with clipped smoothing noise
    memcpy(c.actor.x, b.obs + first * B * O, Lt * B * O * sizeof(float))
    c.actor.reset = b.next_reset + first * B
    plan_forward[float](c.actor)
    if c.td3:
        _smoothed_actions(Lt * B * A, _out(c.actor), c.noise, c.smoothing_sigma, c.smoothing_clip, c.next_a)
    else:
        head_fwd[float](Lt * B, A, _out(c.actor), c.noise, c.next_a, c.next_logp, c.lo, c.hi)
    # 2. target critics on [observation, action]; replayed actions except at padding slots
    tx = <float*>c.target0.x
    _q_input(Lt * B, O, A, b.obs + first * B * O, c.next_a, b.act + first * B * A,
             (b.next_final + first * B) if c.mask_non_terminal else NULL, tx)
    memcpy(c.target1.x, tx, Lt * B * OA * sizeof(float))
    c.target0.reset = b.next_reset + first * B
    c.target1.reset = c.target0.reset
    plan_forward[float](c.target0)
    plan_forward[float](c.target1)
    q1 = _out(c.target0)
    q2 = _out(c.target1)
    # 3. Bellman targets for every current slot
    for t in range(L):
        for bb in range(B):
            k = t * B + bb
            kd = (t + d) * B + bb
            qn = q1[kd] if q1[kd] < q2[kd] else q2[kd]
            boot = qn
            if c.bonus and c.next_step:
                boot = boot - alpha * c.next_logp[kd]
            keep = 1 if c.ignore_termination else 1 - b.term[k]
            yv = b.rew[k] + (gamma * keep) * boot
            if c.bonus and not c.next_step:
                yv = yv - alpha * c.next_logp[k]
            c.y[k] = yv
    # 4. the critic on the replayed window
    cx = <float*>c.critic.x
    _q_input(L * B, O, A, b.obs, NULL, b.act, NULL, cx)
    c.critic.reset = b.reset
    plan_forward[float](c.critic)
    q = _out(c.critic)
    for k in range(L * B):
        n += _loss_step(b, c.mask_non_terminal, k)
    inv_n = <float>(1.0 / n)
    for k in range(L * B):
        diff = (q[k] - c.y[k]) * (<float>_loss_step(b, c.mask_non_terminal, k))
        loss += <double>diff * diff
        c.dq[k] = diff * inv_n
    c.loss = 0.5 * loss / n
    if not isfinite(c.loss):
        c.status = 1
        return
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.critic, c.dq, False, False)
    c.status = 0 if _all_finite(c.adam.grads, c.adam.n) else 2


cdef inline float _clip(float x, float lo, float hi) noexcept nogil:
    x = lo if x < lo else x
    return hi if x > hi else x


cdef void _smoothed_actions(Py_ssize_t n, const float* pre, const float* noise, float sigma, float clip,
                            float* out) noexcept nogil:
    """TD3's target actions clip(tanh(pre) + clip(sigma eps, -c, c), -1, 1), in float32."""
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = _clip(exact_tanh(pre[k]) + _clip(sigma * noise[k], -clip, clip), -1, 1)


cdef void td3_actor_run(ActorCtx* c) noexcept nogil:
    """TD3's actor step: a = tanh(actor), L = -(1/N_f) sum_final Q_1([o, a]), then the target actor."""
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, OA = O + A, N = L * B
    cdef int k, i, n = 0
    cdef float* pre
    cdef float* x0
    cdef float* q1
    cdef float* dx
    cdef float neg_inv_n, t
    cdef double qsum = 0
    memcpy(c.actor.x, b.obs, N * O * sizeof(float))
    c.actor.reset = b.reset
    plan_forward[float](c.actor)
    pre = _out(c.actor)
    for k in range(N * A):
        c.a[k] = exact_tanh(pre[k])
    for k in range(N):
        n += _loss_step(b, c.mask_non_terminal, k)
    x0 = <float*>c.critic0.x
    _q_input(N, O, A, b.obs, c.a, b.act, b.final if c.mask_non_terminal else NULL, x0)
    c.critic0.reset = b.reset
    plan_forward[float](c.critic0)
    q1 = _out(c.critic0)
    neg_inv_n = <float>(-1.0 / n)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            qsum += q1[k]
            c.dq0[k] = neg_inv_n
        else:
            c.dq0[k] = 0
    c.loss = -qsum / n
    c.entropy_gap = 0
    if not isfinite(c.loss):
        c.status = 1
        return
    plan_backward[float](c.critic0, c.dq0, True, c.ignore_resets, False)
    dx = _dx(c.critic0)
    for k in range(N):
        for i in range(A):
            if c.mask_non_terminal and not b.final[k]:
                c.dpre[k * A + i] = 0
            else:
                t = c.a[k * A + i]
                c.dpre[k * A + i] = dx[k * OA + O + i] * (<float>1 - t * t)
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.actor, c.dpre, False, False)
    if not _all_finite(c.adam.grads, c.adam.n):
        c.status = 2
        return
    _adam(&c.adam)
    polyak_kernel[float](c.adam.n, c.target_params, c.adam.params, c.tau)
    c.status = 0


cdef void _both_forward(NetPlan* p0, NetPlan* p1, int threads) noexcept nogil:
    cdef int i
    if threads > 1:
        for i in prange(2, num_threads=2, schedule="static", chunksize=1):
            plan_forward[float](p0 if i == 0 else p1)
    else:
        plan_forward[float](p0)
        plan_forward[float](p1)


cdef void _both_backward_input(NetPlan* p0, NetPlan* p1, float* dq0, float* dq1, bint ignore_resets,
                               int threads) noexcept nogil:
    cdef int i
    if threads > 1:
        for i in prange(2, num_threads=2, schedule="static", chunksize=1):
            plan_backward[float](p0 if i == 0 else p1, dq0 if i == 0 else dq1, True, ignore_resets, False)
    else:
        plan_backward[float](p0, dq0, True, ignore_resets, False)
        plan_backward[float](p1, dq1, True, ignore_resets, False)


cdef void actor_run(ActorCtx* c) noexcept nogil:
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, OA = O + A, N = L * B
    cdef int k, i, n = 0
    cdef float* x0
    cdef float* q1
    cdef float* q2
    cdef float* dx
    cdef float* dx1
    cdef float alpha = <float>c.alpha, w_all, neg_inv_n, qmin
    cdef double qsum = 0, lsum = 0, mean_logp
    # 1. actions and log-probabilities on the replayed window
    memcpy(c.actor.x, b.obs, N * O * sizeof(float))
    c.actor.reset = b.reset
    plan_forward[float](c.actor)
    head_fwd[float](N, A, _out(c.actor), c.noise, c.a, c.logp, c.lo, c.hi)
    for k in range(N):
        n += _loss_step(b, c.mask_non_terminal, k)
    # 2. both critics on [observation, action]: the new action at loss steps, else the replayed one
    x0 = <float*>c.critic0.x
    _q_input(N, O, A, b.obs, c.a, b.act, b.final if c.mask_non_terminal else NULL, x0)
    memcpy(c.critic1.x, x0, N * OA * sizeof(float))
    c.critic0.reset = b.reset
    c.critic1.reset = b.reset
    _both_forward(c.critic0, c.critic1, c.threads)
    q1 = _out(c.critic0)
    q2 = _out(c.critic1)
    # 3. loss: -(1/N_f) sum_final min(Q1, Q2) + alpha * mean_E log pi
    w_all = <float>(c.alpha / N)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            qmin = q1[k] if q1[k] < q2[k] else q2[k]
            qsum += qmin
            if not c.entropy_all:
                lsum += c.logp[k]
        if c.entropy_all:
            lsum += c.logp[k]
            c.weight[k] = w_all
        else:
            c.weight[k] = <float>(c.alpha / n) if _loss_step(b, c.mask_non_terminal, k) else 0
    mean_logp = lsum / (N if c.entropy_all else n)
    c.loss = -qsum / n + c.alpha * mean_logp
    c.entropy_gap = -mean_logp - c.target_entropy
    if not isfinite(c.loss) or not isfinite(c.entropy_gap):
        c.status = 1
        return
    # 4. dL/da through the smaller critic, per sample, at loss steps
    neg_inv_n = <float>(-1.0 / n)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            c.dq0[k] = neg_inv_n if q1[k] < q2[k] else 0
            c.dq1[k] = 0 if q1[k] < q2[k] else neg_inv_n
        else:
            c.dq0[k] = 0
            c.dq1[k] = 0
    _both_backward_input(c.critic0, c.critic1, c.dq0, c.dq1, c.ignore_resets, c.threads)
    dx = _dx(c.critic0)
    dx1 = _dx(c.critic1)
    for k in range(N):
        for i in range(A):
            c.da[k * A + i] = (<float>0 + dx[k * OA + O + i]) + dx1[k * OA + O + i]
    if c.mask_non_terminal:
        for k in range(N):
            if not b.final[k]:
                for i in range(A):
                    c.da[k * A + i] = 0
    # 5. through the head and the actor
    head_bwd[float](N, A, _out(c.actor), c.noise, c.a, c.da, c.weight, c.dpre, c.lo, c.hi)
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.actor, c.dpre, False, False)
    if not _all_finite(c.adam.grads, c.adam.n):
        c.status = 2
        return
    _adam(&c.adam)
    c.status = 0


cdef void _bind_batch(BatchRef* r, batch, int O, int A) except *:
    r.L = batch.sequence_length
    r.B = batch.batch_size
    r.O = O
    r.A = A
    r.first = 0 if batch.include_first_step_in_targets else 1
    r.obs = <const float*>_addr(batch.observations)
    r.act = <const float*>_addr(batch.actions)
    r.rew = <const float*>_addr(batch.rewards)
    r.term = <const float*>_addr(batch.terminated)
    r.reset = <const unsigned char*>_addr(batch.reset)
    r.final = <const unsigned char*>_addr(batch.final)
    r.next_reset = <const unsigned char*>_addr(batch.next_reset)
    r.next_final = <const unsigned char*>_addr(batch.next_final)


cdef void _bind_adam(AdamRef* r, model, opt) except *:
    r.params = <float*>_addr(model.params)
    r.grads = <float*>_addr(model.grads)
    r.m = <float*>_addr(model.adam_m)
    r.v = <float*>_addr(model.adam_v)
    r.n = model.size
    use_mask = opt.bias_lr_factor != 1.0 or opt.weight_decay != 0.0
    r.is_bias = <const unsigned char*>_addr(model.is_bias) if use_mask else NULL
    r.lr, r.b1, r.b2, r.eps = opt.lr, opt.beta1, opt.beta2, opt.eps
    r.floor, r.wd, r.clip, r.bias_lr_factor = opt.v_hat_floor, opt.weight_decay, opt.clip, opt.bias_lr_factor
    r.t = 0


cdef class CriticUpdate:
    """A fused critic update bound to one critic, its batch, noise and private workspaces; the
    next actions come from ``actor_plan`` (SAC: the actor; TD3: the target actor)."""
    cdef CriticCtx ctx
    cdef object _keep

    def __init__(self, config, batch, noise, actor_plan: SequencePlan, target_plans, critic_plan: SequencePlan,
                 critic, target, int observation_dim, int action_dim):
        cdef SequencePlan t0 = target_plans[0], t1 = target_plans[1]
        import numpy as np
        L, B = batch.sequence_length, batch.batch_size
        Lt = L + (1 if batch.include_first_step_in_targets else 0)
        bufs = {"next_a": np.zeros((Lt * B, action_dim), np.float32), "next_logp": np.zeros(Lt * B, np.float32),
                "y": np.zeros(L * B, np.float32), "dq": np.zeros(L * B, np.float32)}
        if noise.shape != (Lt * B, action_dim) or noise.dtype != np.float32:
            raise ValueError(f"noise: expected float32 of shape {(Lt * B, action_dim)}, got {noise.dtype} {noise.shape}")
        if target.size != critic.size:
            raise ValueError(f"target: expected {critic.size} parameters like the critic, got {target.size}")
        self._keep = [batch, noise, actor_plan, t0, t1, critic_plan, critic, target, bufs]
        _bind_batch(&self.ctx.batch, batch, observation_dim, action_dim)
        self.ctx.actor = &actor_plan.net
        self.ctx.target0 = &t0.net
        self.ctx.target1 = &t1.net
        self.ctx.critic = &critic_plan.net
        _bind_adam(&self.ctx.adam, critic, config.critic_optimizer)
        self.ctx.target_params = <float*>_addr(target.params)
        self.ctx.noise = <const float*>_addr(noise)
        self.ctx.next_a = <float*>_addr(bufs["next_a"])
        self.ctx.next_logp = <float*>_addr(bufs["next_logp"])
        self.ctx.y = <float*>_addr(bufs["y"])
        self.ctx.dq = <float*>_addr(bufs["dq"])
        self.ctx.gamma = config.gamma
        self.ctx.lo = config.log_std_min
        self.ctx.hi = config.log_std_max
        self.ctx.td3 = config.algorithm == "td3"
        self.ctx.bonus = config.entropy_bonus and not self.ctx.td3  # TD3 has no entropy term
        self.ctx.next_step = config.entropy_bonus_next_step
        self.ctx.ignore_termination = config.ignore_termination
        self.ctx.mask_non_terminal = config.mask_non_terminal
        self.ctx.smoothing_sigma = config.target_policy_noise
        self.ctx.smoothing_clip = config.target_noise_clip

    @property
    def loss(self):
        return self.ctx.loss

    @property
    def status(self):
        return self.ctx.status

    @property
    def targets(self):
        """A copy of the last run's Bellman targets y, (L, B) float32, for every current slot
        (only the loss steps enter the loss; read-only, for tests)."""
        return self._keep[8]["y"].reshape(self.ctx.batch.L, self.ctx.batch.B).copy()


cdef class ActorUpdate:
    """A fused actor update bound to the actor, both critics (TD3: critic 1 and the target actor),
    its batch and noise."""
    cdef ActorCtx ctx
    cdef object _keep

    def __init__(self, config, batch, noise, actor_plan: SequencePlan, critic_plans, actor, double target_entropy,
                 int observation_dim, int action_dim, int threads=1, target_actor=None):
        cdef SequencePlan c0 = critic_plans[0], c1 = critic_plans[1]
        import numpy as np
        L, B = batch.sequence_length, batch.batch_size
        N = L * B
        if noise.shape != (N, action_dim) or noise.dtype != np.float32:
            raise ValueError(f"noise: expected float32 of shape {(N, action_dim)}, got {noise.dtype} {noise.shape}")
        bufs = {name: np.zeros(shape, np.float32) for name, shape in
                (("a", (N, action_dim)), ("logp", N), ("dq0", N), ("dq1", N), ("da", (N, action_dim)), ("weight", N),
                 ("dpre", (N, 2 * action_dim)))}
        self._keep = [batch, noise, actor_plan, c0, c1, actor, bufs]
        _bind_batch(&self.ctx.batch, batch, observation_dim, action_dim)
        self.ctx.actor = &actor_plan.net
        self.ctx.critic0 = &c0.net
        self.ctx.critic1 = &c1.net
        _bind_adam(&self.ctx.adam, actor, config.actor_optimizer)
        self.ctx.noise = <const float*>_addr(noise)
        self.ctx.a = <float*>_addr(bufs["a"])
        self.ctx.logp = <float*>_addr(bufs["logp"])
        self.ctx.dq0 = <float*>_addr(bufs["dq0"])
        self.ctx.dq1 = <float*>_addr(bufs["dq1"])
        self.ctx.da = <float*>_addr(bufs["da"])
        self.ctx.weight = <float*>_addr(bufs["weight"])
        self.ctx.dpre = <float*>_addr(bufs["dpre"])
        self.ctx.lo = config.log_std_min
        self.ctx.hi = config.log_std_max
        self.ctx.target_entropy = target_entropy
        self.ctx.entropy_all = config.actor_entropy_positions == "all"
        self.ctx.mask_non_terminal = config.mask_non_terminal
        self.ctx.ignore_resets = config.rltools_critic_backward_ignores_resets
        self.ctx.threads = threads
        self.ctx.td3 = config.algorithm == "td3"
        if self.ctx.td3:
            if target_actor is None or target_actor.size != actor.size:
                raise ValueError("target_actor: TD3 needs the target actor (same architecture as the actor)")
            self._keep.append(target_actor)
            self.ctx.target_params = <float*>_addr(target_actor.params)
            self.ctx.tau = config.tau

    def run(self, double alpha, long adam_t):
        """One actor update; returns (status, loss, entropy gap)."""
        self.ctx.alpha = alpha
        self.ctx.adam.t = adam_t
        with nogil:
            if self.ctx.td3:
                td3_actor_run(&self.ctx)
            else:
                actor_run(&self.ctx)
        return self.ctx.status, self.ctx.loss, self.ctx.entropy_gap


def run_critic_updates(CriticUpdate c0, CriticUpdate c1, double alpha, long t0, long t1, int n_threads,
                       bint update_targets=False, double tau=0.0):
    """Both critic updates (each its own batch and noise), on ``n_threads`` (1 or 2) threads.

    Both gradients are computed and checked first; only if both are finite do the Adam steps
    run (and, with ``update_targets``, the Polyak averaging of each target critic towards its
    critic), so a failed step changes no parameter. Returns (status0, loss0, status1, loss1).
    """
    cdef CriticCtx* ctx[2]
    cdef int i
    cdef bint ok
    ctx[0] = &c0.ctx
    ctx[1] = &c1.ctx
    c0.ctx.alpha = alpha
    c1.ctx.alpha = alpha
    c0.ctx.adam.t = t0
    c1.ctx.adam.t = t1
    if n_threads > 1:
        with nogil, parallel(num_threads=2):
            # The target critics are read by both gradients, so they change only after both
            # (the implicit barrier at the end of the first loop).
            for i in prange(2, schedule="static", chunksize=1):
                critic_gradient(ctx[i])
            for i in prange(2, schedule="static", chunksize=1):
                if ctx[0].status == 0 and ctx[1].status == 0:
                    _critic_apply(ctx[i], update_targets, tau)
    else:
        with nogil:
            critic_gradient(ctx[0])
            critic_gradient(ctx[1])
            if ctx[0].status == 0 and ctx[1].status == 0:
                _critic_apply(ctx[0], update_targets, tau)
                _critic_apply(ctx[1], update_targets, tau)
    return c0.ctx.status, c0.ctx.loss, c1.ctx.status, c1.ctx.loss


cdef void _critic_apply(CriticCtx* c, bint update_target, double tau) noexcept nogil:
    _adam(&c.adam)
    if update_target:
        polyak_kernel[float](c.adam.n, c.target_params, c.adam.params, tau)


cdef class Acting:
    """The rollout's policy step in one call: the actor's step plan, the policy's output, the reset flags.

    Bound to the trainer's arrays: observations (N, O), reset flags (N,) (rows restart from zero
    state, then are cleared), standard normal noise (N, A) and the actions (N, A) it writes: SAC's
    sampled tanh-Gaussian actions, or TD3's clip(tanh(actor) + exploration_noise * noise, -1, 1).
    """
    cdef NetPlan* plan
    cdef const float* obs
    cdef unsigned char* reset
    cdef const float* noise
    cdef float* actions
    cdef float* logp
    cdef int N, A
    cdef bint td3
    cdef double lo, hi
    cdef float exploration_noise
    cdef object _keep

    def __init__(self, StepPlan plan, observations, reset, noise, actions, config):
        import numpy as np
        N, A = actions.shape
        O = plan.net.in_dim
        for name, arr, shape, dtype in (("observations", observations, (N, O), np.float32),
                                        ("reset", reset, (N,), np.uint8), ("noise", noise, (N, A), np.float32),
                                        ("actions", actions, (N, A), np.float32)):
            if arr.shape != shape or arr.dtype != dtype or not arr.flags.c_contiguous:
                raise ValueError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array of shape {shape}, "
                                 f"got {arr.dtype} {arr.shape}")
        self.td3 = config.algorithm == "td3"
        outputs = A if self.td3 else 2 * A
        if plan.is_double or plan.net.B != N or plan.net.out_dim != outputs:
            raise ValueError(f"plan: expected a float32 step plan for {N} rows with {outputs} outputs")
        logp = np.zeros(N, np.float32)
        self._keep = [plan, observations, reset, noise, actions, logp]
        self.plan = &plan.net
        self.obs = <const float*>_addr(observations)
        self.reset = <unsigned char*>_addr(reset)
        self.noise = <const float*>_addr(noise)
        self.actions = <float*>_addr(actions)
        self.logp = <float*>_addr(logp)
        self.N, self.A, self.lo, self.hi = N, A, config.log_std_min, config.log_std_max
        self.exploration_noise = config.exploration_noise

    def run(self):
        """Actions for the bound observations into the bound array; returns whether all are finite."""
        cdef bint ok
        cdef Py_ssize_t k
        cdef const float* pre
        with nogil:
            plan_step[float](self.plan, <float*>self.obs, self.reset)
            memset(self.reset, 0, self.N)
            pre = _out(self.plan)
            if self.td3:
                for k in range(self.N * self.A):
                    self.actions[k] = _clip(exact_tanh(pre[k]) + self.exploration_noise * self.noise[k], -1, 1)
            else:
                head_fwd[float](self.N, self.A, pre, self.noise, self.actions, self.logp, self.lo, self.hi)
            ok = _all_finite(self.actions, self.N * self.A)
        return ok


def all_finite(const float[::1] x):
    """Whether a float32 vector has no NaN or infinite entry (the kernels' gradient check)."""
    if x.shape[0] == 0:
        return True
    with nogil:
        ok = _all_finite(&x[0], x.shape[0])
    return ok
