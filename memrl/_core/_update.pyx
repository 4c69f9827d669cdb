"""The updates of SAC, TD3 and discrete SAC on replayed windows: the one implementation memrl trains with.

Each update runs whole, without the GIL, over buffers bound once: the sampler's window arrays
(``Window``), the noise arrays, the network plans (``memrl._core._network``) and the flat
parameter, gradient and Adam buffers (``Optimizer``). Everything is typed on the way in: the
settings are one struct built in one place (``Settings``), arrays arrive as typed memoryviews,
and no kernel reads a Python object. The same code runs in float32 (training) and float64 (the
tests' finite-difference checks of the written-out losses, tests/test_updates.py).

Critic i, on its window of L slots plus one (segments, each followed by a padding slot holding
its final next observation; ``memrl.replay``), d = 1 if the target window includes slot 0 else 0:

    a'_s, log pi'_s = policy(target window)       SAC: the actor, sampled with the bound noise;
                                                 TD3: clip(tanh(target actor) + clip(sigma eps, -c, c), -1, 1)
    a'_s <- replayed action at every slot that is not a padding slot
    q'_s = min_j target_critic_j([o_s, a'_s])
    y_t  = r_t + gamma (1 - terminated_t) (q'_{t+d} [- alpha log pi'_{t+d}])   next-step bonus
    y_t  = r_t + gamma (1 - terminated_t) q'_{t+d} - alpha log pi'_t           current-step bonus
    L_Q  = 1 / (2 N_f) sum_{t final} (Q_i([o_t, a_t]) - y_t)^2

(losses only at the N_f segment-final steps). The two critics' gradients run as a pair on two
threads (``memrl._core._pool``); only when both are finite do their Adam steps and the target
critics' Polyak steps run, as a second pair, so a failed step changes no parameter.

The actor, on its window (replayed actions at every step that is not final):

    SAC: L_pi = -(1 / N_f) sum_{t final} min_j Q_j([o_t, a_t]) + alpha * mean_{t in E} log pi_t
         (E: every window step, as RLtools, or the final ones); the gradient of the min flows
         through the smaller critic per sample. Returns the temperature's gradient
         d/d log(alpha) = mean_E(-log pi) - target_entropy, or RLtools'
         alpha * |E| * (mean_E(-log pi) - target_entropy) / N_resets.
    TD3: L_pi = -(1 / N_f) sum_{t final} Q_1([o_t, tanh(actor)_t]), then the target actor's Polyak step.

Every-step losses (``Settings(every_step=True)``, ``Config.every_step_losses``): the losses above
are taken at every step of every segment (every current slot that is not a padding slot; N_f
counts them) instead of at the final steps only. The histories stay masked, built on replayed
actions: the Q-value of a fresh action a at step t is a one-step *branch* of the critic, the
critic's step on [o_t, a] from the state its pass over the replayed window started step t from
(``_bind_branch``: a (T=1, B=rows) plan of the same network whose GRUs start from the window
pass's per-step states). The critic targets read the target critics' branches on the next actions
at every target slot, the actor the critics' branches on its new actions; at a final step the
branch is exactly the masked pass's fresh-action step.

Discrete SAC (``Algorithm.DISCRETE_SAC``, Christodoulou 2019; ``memrl.discrete_sac``): the window's
actions are K category indices (floats); the actor outputs C = sum(nvec) logits (K softmaxes,
``memrl._core._categorical``), each critic J = prod(nvec) Q-values of the joint actions from the
observations alone. With pi the joint distribution (every expectation exact, no noise):

    V_s  = sum_a pi_s(a) [min_j Qtarg_j,s(a) - alpha log pi_s(a)]      (bonus with the next-step form)
    y_t  = r_t + gamma (1 - terminated_t) V_{t+d}   [+ alpha H(pi_t) for the current-step form]
    L_Q  = 1 / (2 N_f) sum_{t} (Q_i,t(a_t) - y_t)^2                      (a_t the replayed joint action)
    L_pi = (1/N_f) sum_t sum_a pi_t(a) [-min_j Q_j,t(a)] + alpha mean_E sum_a pi(a) log pi(a)
    alpha's gradient in log alpha: alpha (H - target_entropy)          (Christodoulou eq. 11)

at the final steps or, with ``every_step``, every step (no critic input depends on a fresh action).

Sources: Haarnoja et al. 2018 (SAC), Fujimoto et al. 2018 (TD3), Christodoulou 2019 (discrete SAC),
RLtools' memory chapter (internals sections 2.3, 3.2-3.4, 5), pomdp-baselines (Ni et al. 2022:
losses at every step of replayed sequences).
"""
from cython cimport floating
from libc.math cimport isfinite
from libc.string cimport memcpy, memset

import numpy as np

from memrl._core._buffers cimport data_pointer as _data
from memrl._core._network cimport GRU, NetPlan, SequencePlan, plan_backward, plan_forward
from memrl._core._head cimport head_bwd, head_fwd
from memrl._core._categorical cimport categorical_bwd, categorical_fwd
from memrl._core._categorical import MAX_COMPONENTS
from memrl._core._adam cimport adam_kernel, polyak_kernel
from memrl._core._activations cimport exact_tanh
from memrl._core._pool cimport run_pair
from memrl._core._finite cimport all_finite as _all_finite


MAX_JOINT_ACTIONS = 1024
"""Most joint actions (product of a MultiDiscrete space's category counts) discrete SAC takes:
its critics output one Q-value per joint action."""


# ---------------------------------------------------------------------------------------------
# Inputs, typed once
# ---------------------------------------------------------------------------------------------

cdef struct UpdateSettings:
    Algorithm algorithm
    double gamma, tau
    double log_std_min, log_std_max
    double target_entropy
    double target_policy_noise, target_noise_clip
    bint entropy_bonus, entropy_bonus_next_step, ignore_termination
    bint actor_entropy_all              # the actor's entropy term over every window step
    bint critic_backward_ignores_resets # RLtools' quirk in the actor update
    bint rltools_alpha_gradient
    int threads
    # discrete SAC: the action's categorical components (``memrl._core._categorical``)
    int K                               # components (the replay's action columns)
    int C                               # logits: sum of nvec
    int J                               # joint actions: product of nvec (the critics' outputs)
    const int* nvec                     # (K,) categories per component
    bint every_step                     # losses at every step of a segment, not only the final ones


cdef class Settings:
    """The settings every update reads, checked and typed once (``memrl.agent`` builds it from
    the configuration)."""
    cdef UpdateSettings s
    cdef readonly object action_nvec

    def __init__(self, *, int algorithm, double gamma, double tau, double log_std_min, double log_std_max,
                 double target_entropy, double target_policy_noise, double target_noise_clip, bint entropy_bonus,
                 bint entropy_bonus_next_step, bint ignore_termination, bint actor_entropy_all,
                 bint critic_backward_ignores_resets, bint rltools_alpha_gradient, int threads,
                 action_nvec=None, bint every_step=False):
        cdef const int[::1] nv
        if algorithm not in (SAC, TD3, DISCRETE_SAC):
            raise ValueError(f"algorithm: expected {int(SAC)} (SAC), {int(TD3)} (TD3) or {int(DISCRETE_SAC)} "
                             f"(discrete SAC), got {algorithm}")
        if (algorithm == DISCRETE_SAC) != (action_nvec is not None):
            raise ValueError("action_nvec: expected the categories per component for discrete SAC (only)")
        if every_step and critic_backward_ignores_resets:
            raise ValueError("every_step: RLtools' reset-ignoring critic backward is defined for final-step losses only")
        self.s.nvec = NULL
        self.s.K = self.s.C = self.s.J = 0
        if action_nvec is not None:
            self.action_nvec = np.array(action_nvec, np.int32)
            if (self.action_nvec.ndim != 1 or not 1 <= self.action_nvec.shape[0] <= MAX_COMPONENTS
                    or (self.action_nvec < 1).any() or np.prod(self.action_nvec.astype(np.int64)) > MAX_JOINT_ACTIONS):
                raise ValueError(f"action_nvec: expected 1 to {MAX_COMPONENTS} positive category counts with at most "
                                 f"{MAX_JOINT_ACTIONS} joint actions, got {list(action_nvec)}")
            nv = self.action_nvec
            self.s.nvec = &nv[0]
            self.s.K = self.action_nvec.shape[0]
            self.s.C = int(self.action_nvec.sum())
            self.s.J = int(np.prod(self.action_nvec.astype(np.int64)))
        self.s.every_step = every_step
        if threads not in (1, 2):
            raise ValueError(f"threads: expected 1 or 2, got {threads}")
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min, log_std_max: expected min < max, got {log_std_min}, {log_std_max}")
        self.s.algorithm = <Algorithm>algorithm
        self.s.gamma, self.s.tau = gamma, tau
        self.s.log_std_min, self.s.log_std_max = log_std_min, log_std_max
        self.s.target_entropy = target_entropy
        self.s.target_policy_noise, self.s.target_noise_clip = target_policy_noise, target_noise_clip
        self.s.entropy_bonus = entropy_bonus and algorithm != TD3  # TD3 has no entropy term
        self.s.entropy_bonus_next_step = entropy_bonus_next_step
        self.s.ignore_termination = ignore_termination
        self.s.actor_entropy_all = actor_entropy_all
        self.s.critic_backward_ignores_resets = critic_backward_ignores_resets
        self.s.rltools_alpha_gradient = rltools_alpha_gradient
        self.s.threads = threads


cdef struct WindowView:
    int L, B, O, A
    int first                       # 0 when the target window includes slot 0, else 1
    const void* observations        # IN (L+1, B, O)
    const void* actions             # IN (L+1, B, A)
    const void* rewards             # IN (L, B)
    const void* terminated          # IN (L, B)
    const unsigned char* reset      # IN (L, B): online nets restart here (segment starts, padding slots)
    const unsigned char* final      # IN (L, B): a segment's final step (losses)
    const unsigned char* target_reset  # IN (L+1, B): target nets restart here (segment starts)
    const unsigned char* padding    # IN (L+1, B): padding slots (fresh next actions)


cdef class Window:
    """A sequence batch's arrays (``memrl.replay.SequenceBatch``, or float64 copies), bound once;
    the updates read whatever the sampler last wrote into them."""
    cdef WindowView v
    cdef readonly bint is_double
    cdef object _keep

    def __init__(self, observations, actions, rewards, terminated, const unsigned char[:, ::1] reset,
                 const unsigned char[:, ::1] final, const unsigned char[:, ::1] target_reset,
                 const unsigned char[:, ::1] padding, bint include_first_step_in_targets):
        L, B = reset.shape[0], reset.shape[1]
        dtype = observations.dtype
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"observations: expected float32 or float64, got {dtype}")
        O, A = observations.shape[2], actions.shape[2]
        for name, array, shape in (("observations", observations, (L + 1, B, O)), ("actions", actions, (L + 1, B, A)),
                                   ("rewards", rewards, (L, B)), ("terminated", terminated, (L, B))):
            if array.dtype != dtype or array.shape != shape or not array.flags.c_contiguous:
                raise ValueError(f"{name}: expected a C-contiguous {dtype} array of shape {shape}, "
                                 f"got {array.dtype} {array.shape}")
        for name, mask, shape in (("final", final, (L, B)), ("target_reset", target_reset, (L + 1, B)),
                                  ("padding", padding, (L + 1, B))):
            if (mask.shape[0], mask.shape[1]) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {(mask.shape[0], mask.shape[1])}")
        self.is_double = dtype == np.float64
        self._keep = (observations, actions, rewards, terminated, reset, final, target_reset, padding)
        self.v.L, self.v.B, self.v.O, self.v.A = L, B, O, A
        self.v.first = 0 if include_first_step_in_targets else 1
        self.v.observations = _data(observations)
        self.v.actions = _data(actions)
        self.v.rewards = _data(rewards)
        self.v.terminated = _data(terminated)
        self.v.reset = &reset[0, 0]
        self.v.final = &final[0, 0]
        self.v.target_reset = &target_reset[0, 0]
        self.v.padding = &padding[0, 0]


cdef struct AdamView:
    void* params                    # INOUT (n,)
    void* grads                     # OUT (n,): the update writes its gradient here
    void* m                         # INOUT (n,)
    void* v                         # INOUT (n,)
    Py_ssize_t n
    const unsigned char* is_bias    # IN (n,) or NULL when no setting treats biases apart
    double lr, b1, b2, eps, floor, wd, clip, bias_lr_factor
    long t                          # the step count of the next step (set per call)


cdef class Optimizer:
    """A network's flat parameter, gradient and Adam moment buffers with its Adam settings
    (``memrl.optim.AdamConfig``'s fields, passed one by one)."""
    cdef AdamView a
    cdef readonly bint is_double
    cdef object _keep

    def __init__(self, params, grads, m, v, is_bias, *, double lr, double beta1, double beta2, double eps,
                 double v_hat_floor, double weight_decay, double clip, double bias_lr_factor):
        cdef const unsigned char[::1] bias
        dtype = params.dtype
        n = params.shape[0]
        for name, array in (("params", params), ("grads", grads), ("m", m), ("v", v)):
            if array.dtype != dtype or array.shape != (n,) or not array.flags.c_contiguous:
                raise ValueError(f"{name}: expected a contiguous {dtype} vector of {n}, got {array.dtype} {array.shape}")
        self.is_double = dtype == np.float64
        self._keep = (params, grads, m, v, is_bias)
        self.a.params, self.a.grads, self.a.m, self.a.v = _data(params), _data(grads), _data(m), _data(v)
        self.a.n = n
        self.a.is_bias = NULL
        if is_bias is not None:
            bias = is_bias
            if bias.shape[0] != n:
                raise ValueError(f"is_bias: expected {n} flags, got {bias.shape[0]}")
            self.a.is_bias = &bias[0]
        self.a.lr, self.a.b1, self.a.b2, self.a.eps = lr, beta1, beta2, eps
        self.a.floor, self.a.wd, self.a.clip, self.a.bias_lr_factor = v_hat_floor, weight_decay, clip, bias_lr_factor

    @property
    def lr(self) -> float:
        """The learning rate of the next step (settable between updates: learning-rate schedules)."""
        return self.a.lr

    @lr.setter
    def lr(self, double value):
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"lr: expected a finite number >= 0, got {value}")
        self.a.lr = value


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

cdef inline void* _output(NetPlan* p) noexcept nogil:
    """The network's output buffer (T*B, out_dim) after plan_forward."""
    return p.layers[p.n_layers - 1].out


cdef inline void* _input_grad(NetPlan* p) noexcept nogil:
    """dL/dx (T*B, in_dim) after plan_backward with need_dx."""
    return p.layers[0].dx


cdef void _q_input(int n, int O, int A, const floating* obs, const floating* fresh, const floating* replayed,
                   const unsigned char* use_fresh, floating* x) noexcept nogil:
    """Critic input rows x (n, O + A) = [obs, action] (OUT): the ``fresh`` action where
    ``use_fresh`` is set (every row if it is NULL), the ``replayed`` one elsewhere (every row if
    ``fresh`` is NULL)."""
    cdef int k, OA = O + A
    cdef const floating* a
    for k in range(n):
        memcpy(x + k * OA, obs + k * O, O * sizeof(floating))
        a = replayed if fresh == NULL or (use_fresh != NULL and not use_fresh[k]) else fresh
        memcpy(x + k * OA + O, a + k * A, A * sizeof(floating))


cdef inline void _adam_step(AdamView* r, floating* params) noexcept nogil:
    """One Adam step of ``params`` (INOUT: ``r.params``, typed) from r's gradients and moments."""
    adam_kernel[floating](r.n, params, <const floating*>r.grads, <floating*>r.m, <floating*>r.v,
                          r.lr, r.b1, r.b2, r.eps, r.floor, r.wd, r.clip, r.is_bias, r.bias_lr_factor, r.t)


cdef inline floating _clip(floating x, floating lo, floating hi) noexcept nogil:
    x = lo if x < lo else x
    return hi if x > hi else x


cdef struct _Forward:
    NetPlan* plan
    const void* x
    bint is_double


cdef void _forward_task(void* args) noexcept nogil:
    cdef _Forward* f = <_Forward*>args
    if f.is_double:
        plan_forward[double](f.plan, <const double*>f.x)
    else:
        plan_forward[float](f.plan, <const float*>f.x)


cdef struct _InputBackward:
    NetPlan* plan
    const void* dy
    bint ignore_resets
    bint is_double


cdef void _input_backward_task(void* args) noexcept nogil:
    cdef _InputBackward* a = <_InputBackward*>args
    if a.is_double:
        plan_backward[double](a.plan, <const double*>a.dy, True, a.ignore_resets, False)
    else:
        plan_backward[float](a.plan, <const float*>a.dy, True, a.ignore_resets, False)


# ---------------------------------------------------------------------------------------------
# Critic update
# ---------------------------------------------------------------------------------------------

cdef struct CriticCtx:
    UpdateSettings* settings
    WindowView* window
    AdamView* adam
    bint is_double
    NetPlan* policy                 # SAC: the actor; TD3: the target actor (target window)
    NetPlan* target0                # target critics (target window)
    NetPlan* target1
    NetPlan* critic                 # this critic (window)
    void* target_params             # INOUT: this critic's target, Polyak-averaged after the step
    const void* noise               # IN (Lt*B, A)
    void* next_a                    # (Lt*B, A)
    void* next_logp                 # (Lt*B,)
    void* x_target                  # (Lt*B, O+A) target critics' input rows
    void* x_critic                  # (L*B, O+A) the critic's input rows
    void* y                         # OUT (L*B,) Bellman targets
    void* dq                        # (L*B,) dL/dQ (discrete SAC: (L*B, J))
    # discrete SAC (target window): the policy's per-component and joint log-probabilities, the
    # joint probabilities, and per slot E_pi[min_j Q'_j - alpha log pi] and the entropy H(pi)
    void* cat_logp                  # (Lt*B, C)
    void* joint_logp                # (Lt*B, J)
    void* joint_p                   # (Lt*B, J)
    void* value                     # (Lt*B,)
    void* entropy                   # (Lt*B,)
    # every-step losses (continuous): the target critics' one-step branches off their window pass
    NetPlan* branch0                # (T=1, B=Lt*B), GRU initial states = target0's per-step states
    NetPlan* branch1
    void* x_branch                  # (Lt*B, O+A) [observation, fresh action] rows
    double alpha
    bint update_target
    double loss
    Status status


cdef inline int _joint_index(const floating* a, int K, const int* nvec) noexcept nogil:
    """The joint index ravel(a) of a replayed action row (K indices as floats), each index
    clamped into its component's range (the replay holds valid indices; the clamp keeps a
    corrupted row from reading outside the Q-values)."""
    cdef int k, i, j = 0
    for k in range(K):
        i = <int>a[k]
        i = 0 if i < 0 else (nvec[k] - 1 if i >= nvec[k] else i)
        j = j * nvec[k] + i
    return j


cdef inline bint _loss_step(WindowView* w, UpdateSettings* s, int k) noexcept nogil:
    """Whether current slot row k (t * B + b) carries a loss: a segment's final step, or with
    ``every_step`` any step of a segment (every current slot that is not a padding slot)."""
    return w.padding[k] == 0 if s.every_step else w.final[k] != 0


cdef void _discrete_critic_gradient(CriticCtx* c, const floating* obs) noexcept nogil:
    """Discrete SAC's critic loss and gradient (Christodoulou 2019, eq. 2-3 with the expectation
    over next actions taken exactly): sets status, parameters untouched."""
    cdef UpdateSettings* s = c.settings
    cdef WindowView* w = c.window
    cdef int L = w.L, B = w.B, O = w.O, K = s.K, C = s.C, J = s.J, first = w.first
    cdef int Lt = L + 1 - first, d = 1 - first
    cdef int bb, t, k, kd, a, n = 0
    cdef const floating* act = <const floating*>w.actions
    cdef const floating* rew = <const floating*>w.rewards
    cdef const floating* term = <const floating*>w.terminated
    cdef floating* jlogp = <floating*>c.joint_logp
    cdef floating* jp = <floating*>c.joint_p
    cdef floating* value = <floating*>c.value
    cdef floating* entropy = <floating*>c.entropy
    cdef floating* y = <floating*>c.y
    cdef floating* dq = <floating*>c.dq
    cdef const floating* q1
    cdef const floating* q2
    cdef const floating* q
    cdef floating alpha = <floating>c.alpha, gamma = <floating>s.gamma, keep, yv, diff, inv_n
    cdef double v, h, qm
    cdef double loss = 0
    cdef const floating* obs_t = obs + first * B * O
    # 1. the policy's distribution on the target window
    c.policy.reset = w.target_reset + first * B
    plan_forward[floating](c.policy, obs_t)
    categorical_fwd[floating](Lt * B, K, s.nvec, C, J, <const floating*>_output(c.policy), <floating*>c.cat_logp,
                              jlogp, jp)
    # 2. target critics on the target window's observations (no action input)
    c.target0.reset = w.target_reset + first * B
    c.target1.reset = c.target0.reset
    plan_forward[floating](c.target0, obs_t)
    plan_forward[floating](c.target1, obs_t)
    q1 = <const floating*>_output(c.target0)
    q2 = <const floating*>_output(c.target1)
    # 3. per target slot: V = sum_a pi(a) [min_j Q'_j(a) - alpha log pi(a)] (the bonus only with the
    #    next-step entropy bonus) and H = -sum_a pi(a) log pi(a)
    for k in range(Lt * B):
        v = 0
        h = 0
        for a in range(J):
            qm = q1[k * J + a] if q1[k * J + a] < q2[k * J + a] else q2[k * J + a]
            v += <double>jp[k * J + a] * qm
            h -= <double>jp[k * J + a] * jlogp[k * J + a]
        if s.entropy_bonus and s.entropy_bonus_next_step:
            v += c.alpha * h
        value[k] = <floating>v
        entropy[k] = <floating>h
    # 4. Bellman targets for every current slot; the current-step bonus is its expectation alpha H
    for t in range(L):
        for bb in range(B):
            k = t * B + bb
            kd = (t + d) * B + bb
            keep = 1 if s.ignore_termination else 1 - term[k]
            yv = rew[k] + (gamma * keep) * value[kd]
            if s.entropy_bonus and not s.entropy_bonus_next_step:
                yv = yv + alpha * entropy[k]
            y[k] = yv
    # 5. the critic on the window: Q of the replayed (joint) action at the loss steps
    c.critic.reset = w.reset
    plan_forward[floating](c.critic, obs)
    q = <const floating*>_output(c.critic)
    for k in range(L * B):
        n += _loss_step(w, s, k)
    inv_n = <floating>(1.0 / n)
    memset(dq, 0, <Py_ssize_t>L * B * J * sizeof(floating))
    for k in range(L * B):
        if not _loss_step(w, s, k):
            continue
        a = _joint_index(act + <Py_ssize_t>k * K, K, s.nvec)
        diff = q[k * J + a] - y[k]
        loss += <double>diff * diff
        dq[k * J + a] = diff * inv_n
    c.loss = 0.5 * loss / n
    if not isfinite(c.loss):
        c.status = NONFINITE_LOSS
        return
    memset(c.adam.grads, 0, c.adam.n * sizeof(floating))
    plan_backward[floating](c.critic, dq, False, False)
    c.status = OK if _all_finite(<const floating*>c.adam.grads, c.adam.n) else NONFINITE_GRADIENT


cdef void _critic_gradient(CriticCtx* c, const floating* obs) noexcept nogil:
    """Loss and gradient into the critic's grads; sets status (parameters untouched)."""
    cdef UpdateSettings* s = c.settings
    cdef WindowView* w = c.window
    cdef int L = w.L, B = w.B, O = w.O, A = w.A, first = w.first
    cdef int Lt = L + 1 - first, d = 1 - first
    cdef int bb, t, k, kd, n = 0
    cdef const floating* act = <const floating*>w.actions
    cdef const floating* rew = <const floating*>w.rewards
    cdef const floating* term = <const floating*>w.terminated
    cdef floating* next_a = <floating*>c.next_a
    cdef floating* next_logp = <floating*>c.next_logp
    cdef floating* y = <floating*>c.y
    cdef floating* dq = <floating*>c.dq
    cdef floating* xt = <floating*>c.x_target
    cdef floating* xc = <floating*>c.x_critic
    cdef floating* q1
    cdef floating* q2
    cdef floating* q
    cdef floating qn, boot, keep, yv, diff, inv_n
    cdef floating alpha = <floating>c.alpha, gamma = <floating>s.gamma
    cdef floating sigma = <floating>s.target_policy_noise, noise_clip = <floating>s.target_noise_clip
    cdef const floating* noise = <const floating*>c.noise
    cdef const floating* pre
    cdef double loss = 0
    # 1. next actions on the target window
    c.policy.reset = w.target_reset + first * B
    plan_forward[floating](c.policy, obs + first * B * O)
    pre = <floating*>_output(c.policy)
    if s.algorithm == TD3:
        for k in range(Lt * B * A):
            next_a[k] = _clip(exact_tanh(pre[k]) + _clip(sigma * noise[k], -noise_clip, noise_clip),
                              <floating>-1, <floating>1)
    else:
        head_fwd[floating](Lt * B, A, pre, noise, next_a, next_logp, s.log_std_min, s.log_std_max)
    c.target0.reset = w.target_reset + first * B
    c.target1.reset = c.target0.reset
    if s.every_step:
        # 2'. the target critics' histories on replayed actions at every slot, then, from each
        #     slot's starting state, one step on [observation, fresh action] (the branches)
        _q_input(Lt * B, O, A, obs + first * B * O, <const floating*>NULL, act + first * B * A, NULL, xt)
        plan_forward[floating](c.target0, xt)
        plan_forward[floating](c.target1, xt)
        _q_input(Lt * B, O, A, obs + first * B * O, next_a, act + first * B * A, NULL, <floating*>c.x_branch)
        plan_forward[floating](c.branch0, <const floating*>c.x_branch)
        plan_forward[floating](c.branch1, <const floating*>c.x_branch)
        q1 = <floating*>_output(c.branch0)
        q2 = <floating*>_output(c.branch1)
    else:
        # 2. target critics on [observation, action]: replayed actions except at padding slots
        _q_input(Lt * B, O, A, obs + first * B * O, next_a, act + first * B * A, w.padding + first * B, xt)
        plan_forward[floating](c.target0, xt)
        plan_forward[floating](c.target1, xt)
        q1 = <floating*>_output(c.target0)
        q2 = <floating*>_output(c.target1)
    # 3. Bellman targets for every current slot
    for t in range(L):
        for bb in range(B):
            k = t * B + bb
            kd = (t + d) * B + bb
            qn = q1[kd] if q1[kd] < q2[kd] else q2[kd]
            boot = qn
            if s.entropy_bonus and s.entropy_bonus_next_step:
                boot = boot - alpha * next_logp[kd]
            keep = 1 if s.ignore_termination else 1 - term[k]
            yv = rew[k] + (gamma * keep) * boot
            if s.entropy_bonus and not s.entropy_bonus_next_step:
                yv = yv - alpha * next_logp[k]
            y[k] = yv
    # 4. the critic on the replayed window; the loss at segment-final steps (or every step)
    _q_input(L * B, O, A, obs, <const floating*>NULL, act, NULL, xc)
    c.critic.reset = w.reset
    plan_forward[floating](c.critic, xc)
    q = <floating*>_output(c.critic)
    for k in range(L * B):
        n += _loss_step(w, s, k)
    inv_n = <floating>(1.0 / n)
    for k in range(L * B):
        diff = (q[k] - y[k]) * (<floating>_loss_step(w, s, k))
        loss += <double>diff * diff
        dq[k] = diff * inv_n
    c.loss = 0.5 * loss / n
    if not isfinite(c.loss):
        c.status = NONFINITE_LOSS
        return
    memset(c.adam.grads, 0, c.adam.n * sizeof(floating))
    plan_backward[floating](c.critic, dq, False, False)
    c.status = OK if _all_finite(<const floating*>c.adam.grads, c.adam.n) else NONFINITE_GRADIENT


cdef void _critic_gradient_task(void* ctx) noexcept nogil:
    cdef CriticCtx* c = <CriticCtx*>ctx
    if c.settings.algorithm == DISCRETE_SAC:
        if c.is_double:
            _discrete_critic_gradient(c, <const double*>c.window.observations)
        else:
            _discrete_critic_gradient(c, <const float*>c.window.observations)
    elif c.is_double:
        _critic_gradient(c, <const double*>c.window.observations)
    else:
        _critic_gradient(c, <const float*>c.window.observations)


cdef void _critic_apply(CriticCtx* c, floating* params) noexcept nogil:
    """The Adam step, then (update_target) the target's Polyak step towards the critic."""
    _adam_step(c.adam, params)
    if c.update_target:
        polyak_kernel[floating](c.adam.n, <floating*>c.target_params, params, c.settings.tau)


cdef void _critic_apply_task(void* ctx) noexcept nogil:
    cdef CriticCtx* c = <CriticCtx*>ctx
    if c.is_double:
        _critic_apply(c, <double*>c.adam.params)
    else:
        _critic_apply(c, <float*>c.adam.params)


cdef class CriticUpdate:
    """One critic's update bound to its window, noise, plans (each with a workspace of its own:
    the two critic updates of a step run at once) and buffers."""
    cdef CriticCtx ctx
    cdef object _keep
    cdef object _y

    def __init__(self, Settings settings, Window window, noise, SequencePlan policy, SequencePlan target0,
                 SequencePlan target1, SequencePlan critic, Optimizer optimizer, target_params,
                 SequencePlan branch0=None, SequencePlan branch1=None):
        cdef WindowView* w = &window.v
        cdef int Lt = w.L + 1 - w.first, B = w.B, A = w.A, OA = w.O + w.A
        cdef int C = settings.s.C, J = settings.s.J
        cdef bint discrete = settings.s.algorithm == DISCRETE_SAC
        cdef bint branches = settings.s.every_step and not discrete
        dtype = np.float64 if window.is_double else np.float32
        _check_precision(window.is_double, (policy.is_double, target0.is_double, target1.is_double,
                                            critic.is_double, optimizer.is_double))
        if discrete:
            _check_discrete(settings, window, (("policy", policy, C), ("target0", target0, J),
                                               ("target1", target1, J), ("critic", critic, J)))
        else:
            _check_array("noise", noise, dtype, (Lt * B, A))
        _check_array("target_params", target_params, dtype, (optimizer.a.n,))
        if discrete:  # no noise, no action rows: the distribution's buffers instead
            shapes = ((1, 1), 1, (1, 1), (1, 1), w.L * B, (w.L * B, J), (Lt * B, C), (Lt * B, J), (Lt * B, J),
                      Lt * B, Lt * B)
        else:
            shapes = ((Lt * B, A), Lt * B, (Lt * B, OA), (w.L * B, OA), w.L * B, w.L * B, 1, 1, 1, 1, 1)
        bufs = [np.zeros(shape, dtype) for shape in shapes]
        bufs.append(np.zeros(((Lt * B) if branches else 1, OA if branches else 1), dtype))
        self._keep = [settings, window, noise, policy, target0, target1, critic, optimizer, target_params, bufs,
                      branch0, branch1]
        self._y = bufs[4]
        self.ctx.branch0 = self.ctx.branch1 = NULL
        self.ctx.x_branch = _data(bufs[11])
        if branches:
            _bind_branch("branch0", branch0, target0, Lt * B, window.is_double)
            _bind_branch("branch1", branch1, target1, Lt * B, window.is_double)
            self.ctx.branch0 = &branch0.net
            self.ctx.branch1 = &branch1.net
        self.ctx.settings = &settings.s
        self.ctx.window = w
        self.ctx.adam = &optimizer.a
        self.ctx.is_double = window.is_double
        self.ctx.policy = &policy.net
        self.ctx.target0 = &target0.net
        self.ctx.target1 = &target1.net
        self.ctx.critic = &critic.net
        self.ctx.target_params = _data(target_params)
        self.ctx.noise = NULL if discrete else _data(noise)
        self.ctx.next_a = _data(bufs[0])
        self.ctx.next_logp = _data(bufs[1])
        self.ctx.x_target = _data(bufs[2])
        self.ctx.x_critic = _data(bufs[3])
        self.ctx.y = _data(bufs[4])
        self.ctx.dq = _data(bufs[5])
        self.ctx.cat_logp = _data(bufs[6])
        self.ctx.joint_logp = _data(bufs[7])
        self.ctx.joint_p = _data(bufs[8])
        self.ctx.value = _data(bufs[9])
        self.ctx.entropy = _data(bufs[10])

    @property
    def loss(self):
        return self.ctx.loss

    @property
    def status(self):
        return Status(self.ctx.status)

    @property
    def targets(self):
        """A copy of the last run's Bellman targets y (L, B) for every current slot (only the
        final steps enter the loss)."""
        return self._y.reshape(self.ctx.window.L, self.ctx.window.B).copy()

    def gradient(self, double alpha):
        """Only the loss and its gradient (into the critic's gradient buffer), nothing applied;
        returns (status, loss). For tests."""
        self.ctx.alpha = alpha
        with nogil:
            _critic_gradient_task(&self.ctx)
        return Status(self.ctx.status), self.ctx.loss


def run_critic_updates(CriticUpdate c0, CriticUpdate c1, double alpha, long t0, long t1, bint update_targets):
    """Both critic updates (each its own window and noise): both gradients as a pair, then, only
    if both are finite, both Adam steps (step counts ``t0``, ``t1``) and, with
    ``update_targets``, each target critic's Polyak step, as a second pair (two threads with
    ``settings.threads`` 2; the results do not depend on it). Returns (status0, loss0, status1,
    loss1), statuses as ``Status`` values (ints)."""
    cdef CriticCtx* ctx[2]
    cdef int threads = c0.ctx.settings.threads
    ctx[0] = &c0.ctx
    ctx[1] = &c1.ctx
    for c, t in ((c0, t0), (c1, t1)):
        (<CriticUpdate>c).ctx.alpha = alpha
        (<CriticUpdate>c).ctx.adam.t = t
        (<CriticUpdate>c).ctx.update_target = update_targets
    with nogil:
        # The target critics are read by both gradients, so they change only after both.
        run_pair(_critic_gradient_task, ctx[0], _critic_gradient_task, ctx[1], threads)
        if ctx[0].status == OK and ctx[1].status == OK:
            run_pair(_critic_apply_task, ctx[0], _critic_apply_task, ctx[1], threads)
    return <int>c0.ctx.status, c0.ctx.loss, <int>c1.ctx.status, c1.ctx.loss


# ---------------------------------------------------------------------------------------------
# Actor update
# ---------------------------------------------------------------------------------------------

cdef struct ActorCtx:
    UpdateSettings* settings
    WindowView* window
    AdamView* adam
    bint is_double
    NetPlan* actor
    NetPlan* critic0
    NetPlan* critic1                # SAC only
    void* target_params             # TD3: INOUT the target actor, Polyak-averaged after the step
    const void* noise               # IN (L*B, A) (SAC)
    void* a                         # (L*B, A) fresh actions
    void* logp                      # (L*B,)
    void* x_critic                  # (L*B, O+A) critic input rows
    void* dq0                       # (L*B,)
    void* dq1
    void* da                        # (L*B, A)
    void* weight                    # (L*B,) entropy weights
    void* dpre                      # (L*B, 2A) (TD3: (L*B, A); discrete SAC: (L*B, C)) gradient at the actor's output
    void* cat_logp                  # discrete SAC: (L*B, C) per-component log-probabilities
    void* joint_logp                # (L*B, J)
    void* joint_p                   # (L*B, J)
    void* g                         # (L*B, J) each row's loss per joint action (categorical_bwd)
    # every-step losses (continuous): the critics' one-step branches off their window pass
    NetPlan* branch0                # (T=1, B=L*B), GRU initial states = critic0's per-step states
    NetPlan* branch1
    void* x_branch                  # (L*B, O+A) [observation, fresh action] rows
    double alpha
    bint apply                      # False: gradient only (tests)
    double loss, entropy_gap, alpha_gradient
    Status status


cdef void _sac_actor(ActorCtx* c, const floating* obs) noexcept nogil:
    cdef UpdateSettings* s = c.settings
    cdef WindowView* w = c.window
    cdef int L = w.L, B = w.B, O = w.O, A = w.A, OA = O + A, N = L * B
    cdef int k, i, n = 0, n_resets = 0
    cdef const floating* act = <const floating*>w.actions
    cdef const floating* noise = <const floating*>c.noise
    cdef floating* a = <floating*>c.a
    cdef floating* logp = <floating*>c.logp
    cdef floating* xc = <floating*>c.x_critic
    cdef floating* dq0 = <floating*>c.dq0
    cdef floating* dq1 = <floating*>c.dq1
    cdef floating* da = <floating*>c.da
    cdef floating* weight = <floating*>c.weight
    cdef floating* dpre = <floating*>c.dpre
    cdef floating* q1
    cdef floating* q2
    cdef floating* dx
    cdef floating* dx1
    cdef floating w_all, neg_inv_n, qmin
    cdef double qsum = 0, lsum = 0, mean_logp, positions
    cdef _Forward f0, f1
    cdef _InputBackward b0, b1
    # 1. actions and log-probabilities on the replayed window
    c.actor.reset = w.reset
    plan_forward[floating](c.actor, obs)
    head_fwd[floating](N, A, <floating*>_output(c.actor), noise, a, logp, s.log_std_min, s.log_std_max)
    for k in range(N):
        n += _loss_step(w, s, k)
        n_resets += w.reset[k] != 0
    c.critic0.reset = w.reset
    c.critic1.reset = w.reset
    if s.every_step:
        # 2'. both critics' histories on the replayed actions, then one step from each step's
        #     starting state on [observation, new action] (the branches)
        _q_input(N, O, A, obs, <const floating*>NULL, act, NULL, xc)
        f0.plan, f0.x, f0.is_double = c.critic0, xc, c.is_double
        f1.plan, f1.x, f1.is_double = c.critic1, xc, c.is_double
        run_pair(_forward_task, &f0, _forward_task, &f1, s.threads)
        _q_input(N, O, A, obs, a, act, NULL, <floating*>c.x_branch)
        f0.plan, f0.x = c.branch0, c.x_branch
        f1.plan, f1.x = c.branch1, c.x_branch
        run_pair(_forward_task, &f0, _forward_task, &f1, s.threads)
        q1 = <floating*>_output(c.branch0)
        q2 = <floating*>_output(c.branch1)
    else:
        # 2. both critics on [observation, action]: the new action at final steps, else the replayed one
        _q_input(N, O, A, obs, a, act, w.final, xc)
        f0.plan, f0.x, f0.is_double = c.critic0, xc, c.is_double
        f1.plan, f1.x, f1.is_double = c.critic1, xc, c.is_double
        run_pair(_forward_task, &f0, _forward_task, &f1, s.threads)
        q1 = <floating*>_output(c.critic0)
        q2 = <floating*>_output(c.critic1)
    # 3. loss: -(1/N_f) sum_final min(Q1, Q2) + alpha * mean_E log pi
    w_all = <floating>(c.alpha / N)
    for k in range(N):
        if _loss_step(w, s, k):
            qmin = q1[k] if q1[k] < q2[k] else q2[k]
            qsum += qmin
            if not s.actor_entropy_all:
                lsum += logp[k]
        if s.actor_entropy_all:
            lsum += logp[k]
            weight[k] = w_all
        else:
            weight[k] = <floating>(c.alpha / n) if _loss_step(w, s, k) else 0
    positions = N if s.actor_entropy_all else n
    mean_logp = lsum / positions
    c.loss = -qsum / n + c.alpha * mean_logp
    c.entropy_gap = -mean_logp - s.target_entropy
    c.alpha_gradient = (c.alpha * positions * c.entropy_gap / n_resets) if s.rltools_alpha_gradient \
        else c.entropy_gap
    if not isfinite(c.loss) or not isfinite(c.entropy_gap):
        c.status = NONFINITE_LOSS
        return
    # 4. dL/da through the smaller critic, per sample, at final steps (every step: through the branches)
    neg_inv_n = <floating>(-1.0 / n)
    for k in range(N):
        if _loss_step(w, s, k):
            dq0[k] = neg_inv_n if q1[k] < q2[k] else 0
            dq1[k] = 0 if q1[k] < q2[k] else neg_inv_n
        else:
            dq0[k] = 0
            dq1[k] = 0
    b0.plan = c.branch0 if s.every_step else c.critic0
    b1.plan = c.branch1 if s.every_step else c.critic1
    b0.dy, b0.ignore_resets, b0.is_double = dq0, s.critic_backward_ignores_resets, c.is_double
    b1.dy, b1.ignore_resets, b1.is_double = dq1, s.critic_backward_ignores_resets, c.is_double
    run_pair(_input_backward_task, &b0, _input_backward_task, &b1, s.threads)
    dx = <floating*>_input_grad(b0.plan)
    dx1 = <floating*>_input_grad(b1.plan)
    for k in range(N):
        for i in range(A):
            da[k * A + i] = (<floating>0 + dx[k * OA + O + i]) + dx1[k * OA + O + i]
    for k in range(N):
        if not _loss_step(w, s, k):
            for i in range(A):
                da[k * A + i] = 0
    # 5. through the head and the actor
    head_bwd[floating](N, A, <floating*>_output(c.actor), noise, a, da, weight, dpre, s.log_std_min, s.log_std_max)
    memset(c.adam.grads, 0, c.adam.n * sizeof(floating))
    plan_backward[floating](c.actor, dpre, False, False)
    if not _all_finite(<const floating*>c.adam.grads, c.adam.n):
        c.status = NONFINITE_GRADIENT
        return
    if c.apply:
        _adam_step(c.adam, <floating*>c.adam.params)
    c.status = OK


cdef void _td3_actor(ActorCtx* c, const floating* obs) noexcept nogil:
    cdef UpdateSettings* s = c.settings
    cdef WindowView* w = c.window
    cdef int L = w.L, B = w.B, O = w.O, A = w.A, OA = O + A, N = L * B
    cdef int k, i, n = 0
    cdef const floating* act = <const floating*>w.actions
    cdef floating* a = <floating*>c.a
    cdef floating* xc = <floating*>c.x_critic
    cdef floating* dq0 = <floating*>c.dq0
    cdef floating* dpre = <floating*>c.dpre
    cdef const floating* pre
    cdef floating* q1
    cdef floating* dx
    cdef floating neg_inv_n, t
    cdef double qsum = 0
    cdef NetPlan* q_plan
    c.actor.reset = w.reset
    plan_forward[floating](c.actor, obs)
    pre = <floating*>_output(c.actor)
    for k in range(N * A):
        a[k] = exact_tanh(pre[k])
    for k in range(N):
        n += _loss_step(w, s, k)
    c.critic0.reset = w.reset
    if s.every_step:  # critic 1's history on replayed actions, then its one-step branch on the new ones
        _q_input(N, O, A, obs, <const floating*>NULL, act, NULL, xc)
        plan_forward[floating](c.critic0, xc)
        _q_input(N, O, A, obs, a, act, NULL, <floating*>c.x_branch)
        plan_forward[floating](c.branch0, <const floating*>c.x_branch)
        q_plan = c.branch0
    else:
        _q_input(N, O, A, obs, a, act, w.final, xc)
        plan_forward[floating](c.critic0, xc)
        q_plan = c.critic0
    q1 = <floating*>_output(q_plan)
    neg_inv_n = <floating>(-1.0 / n)
    for k in range(N):
        if _loss_step(w, s, k):
            qsum += q1[k]
            dq0[k] = neg_inv_n
        else:
            dq0[k] = 0
    c.loss = -qsum / n
    c.entropy_gap = 0
    c.alpha_gradient = 0
    if not isfinite(c.loss):
        c.status = NONFINITE_LOSS
        return
    plan_backward[floating](q_plan, dq0, True, s.critic_backward_ignores_resets, False)
    dx = <floating*>_input_grad(q_plan)
    for k in range(N):
        for i in range(A):
            if not _loss_step(w, s, k):
                dpre[k * A + i] = 0
            else:
                t = a[k * A + i]
                dpre[k * A + i] = dx[k * OA + O + i] * (<floating>1 - t * t)
    memset(c.adam.grads, 0, c.adam.n * sizeof(floating))
    plan_backward[floating](c.actor, dpre, False, False)
    if not _all_finite(<const floating*>c.adam.grads, c.adam.n):
        c.status = NONFINITE_GRADIENT
        return
    if c.apply:
        _adam_step(c.adam, <floating*>c.adam.params)
        polyak_kernel[floating](c.adam.n, <floating*>c.target_params, <const floating*>c.adam.params, s.tau)
    c.status = OK


cdef void _discrete_actor(ActorCtx* c, const floating* obs) noexcept nogil:
    """Discrete SAC's actor loss (Christodoulou 2019, eq. 12, the expectation over actions taken
    exactly) and its gradient; the critics take no action, so none is backpropagated through."""
    cdef UpdateSettings* s = c.settings
    cdef WindowView* w = c.window
    cdef int L = w.L, B = w.B, K = s.K, C = s.C, J = s.J, N = L * B
    cdef int k, a, n = 0, n_entropy = 0
    cdef floating* jlogp = <floating*>c.joint_logp
    cdef floating* jp = <floating*>c.joint_p
    cdef floating* g = <floating*>c.g
    cdef const floating* q1
    cdef const floating* q2
    cdef floating wq, we, qm
    cdef bint loss_step, entropy_step
    cdef double qsum = 0, lsum = 0, mean_logp
    cdef _Forward f0, f1
    # 1. the policy's distribution on the window
    c.actor.reset = w.reset
    plan_forward[floating](c.actor, obs)
    categorical_fwd[floating](N, K, s.nvec, C, J, <const floating*>_output(c.actor), <floating*>c.cat_logp, jlogp, jp)
    # 2. both critics on the window's observations (a pair of tasks)
    c.critic0.reset = w.reset
    c.critic1.reset = w.reset
    f0.plan, f0.x, f0.is_double = c.critic0, obs, c.is_double
    f1.plan, f1.x, f1.is_double = c.critic1, obs, c.is_double
    run_pair(_forward_task, &f0, _forward_task, &f1, s.threads)
    q1 = <const floating*>_output(c.critic0)
    q2 = <const floating*>_output(c.critic1)
    # 3. L = -(1/n) sum_{loss steps} sum_a pi(a) min_j Q_j(a) + alpha mean_E sum_a pi(a) log pi(a)
    for k in range(N):
        n += _loss_step(w, s, k)
    n_entropy = N if s.actor_entropy_all else n
    wq = <floating>(1.0 / n)
    we = <floating>(c.alpha / n_entropy)
    for k in range(N):
        loss_step = _loss_step(w, s, k)
        entropy_step = s.actor_entropy_all or loss_step
        for a in range(J):
            qm = q1[k * J + a] if q1[k * J + a] < q2[k * J + a] else q2[k * J + a]
            g[k * J + a] = 0
            if loss_step:
                qsum += <double>jp[k * J + a] * qm
                g[k * J + a] = -wq * qm
            if entropy_step:
                lsum += <double>jp[k * J + a] * jlogp[k * J + a]
                g[k * J + a] += we * jlogp[k * J + a]
    mean_logp = lsum / n_entropy
    c.loss = -qsum / n + c.alpha * mean_logp
    # the temperature's loss alpha (H - target) (Christodoulou eq. 11): its gradient in log alpha
    c.entropy_gap = -mean_logp - s.target_entropy
    c.alpha_gradient = c.alpha * c.entropy_gap
    if not isfinite(c.loss) or not isfinite(c.entropy_gap):
        c.status = NONFINITE_LOSS
        return
    # 4. through the categorical head and the actor
    categorical_bwd[floating](N, K, s.nvec, C, J, <const floating*>c.cat_logp, jp, g, <floating*>c.dpre)
    memset(c.adam.grads, 0, c.adam.n * sizeof(floating))
    plan_backward[floating](c.actor, <const floating*>c.dpre, False, False)
    if not _all_finite(<const floating*>c.adam.grads, c.adam.n):
        c.status = NONFINITE_GRADIENT
        return
    if c.apply:
        _adam_step(c.adam, <floating*>c.adam.params)
    c.status = OK


cdef void _actor_run(ActorCtx* c) noexcept nogil:
    if c.settings.algorithm == DISCRETE_SAC:
        if c.is_double:
            _discrete_actor(c, <const double*>c.window.observations)
        else:
            _discrete_actor(c, <const float*>c.window.observations)
    elif c.settings.algorithm == TD3:
        if c.is_double:
            _td3_actor(c, <const double*>c.window.observations)
        else:
            _td3_actor(c, <const float*>c.window.observations)
    elif c.is_double:
        _sac_actor(c, <const double*>c.window.observations)
    else:
        _sac_actor(c, <const float*>c.window.observations)


cdef class ActorUpdate:
    """The actor's update bound to its window, noise, plans and buffers: SAC's through both
    critics, or TD3's through critic 1 followed by the target actor's Polyak step
    (``target_params``, required for TD3)."""
    cdef ActorCtx ctx
    cdef object _keep

    def __init__(self, Settings settings, Window window, noise, SequencePlan actor, SequencePlan critic0,
                 SequencePlan critic1, Optimizer optimizer, target_params=None, SequencePlan branch0=None,
                 SequencePlan branch1=None):
        cdef WindowView* w = &window.v
        cdef int N = w.L * w.B, A = w.A, OA = w.O + w.A
        cdef int C = settings.s.C, J = settings.s.J
        cdef bint td3 = settings.s.algorithm == TD3
        cdef bint discrete = settings.s.algorithm == DISCRETE_SAC
        dtype = np.float64 if window.is_double else np.float32
        _check_precision(window.is_double, (actor.is_double, critic0.is_double, critic1.is_double,
                                            optimizer.is_double))
        if discrete:
            _check_discrete(settings, window, (("actor", actor, C), ("critic0", critic0, J), ("critic1", critic1, J)))
        else:
            _check_array("noise", noise, dtype, (N, A))
        if td3:
            if target_params is None:
                raise ValueError("target_params: TD3 needs the target actor's parameters")
            _check_array("target_params", target_params, dtype, (optimizer.a.n,))
        if discrete:
            shapes = (1, 1, 1, 1, 1, 1, 1, (N, C), (N, C), (N, J), (N, J), (N, J))
        else:
            shapes = ((N, A), N, (N, OA), N, N, (N, A), N, (N, A if td3 else 2 * A), 1, 1, 1, 1)
        bufs = [np.zeros(shape, dtype) for shape in shapes]
        branches = settings.s.every_step and not discrete
        bufs.append(np.zeros((N if branches else 1, OA if branches else 1), dtype))
        self._keep = [settings, window, noise, actor, critic0, critic1, optimizer, target_params, bufs, branch0,
                      branch1]
        self.ctx.branch0 = self.ctx.branch1 = NULL
        self.ctx.x_branch = _data(bufs[12])
        if branches:
            _bind_branch("branch0", branch0, critic0, N, window.is_double)
            self.ctx.branch0 = &branch0.net
            if not td3:
                _bind_branch("branch1", branch1, critic1, N, window.is_double)
                self.ctx.branch1 = &branch1.net
        self.ctx.settings = &settings.s
        self.ctx.window = w
        self.ctx.adam = &optimizer.a
        self.ctx.is_double = window.is_double
        self.ctx.actor = &actor.net
        self.ctx.critic0 = &critic0.net
        self.ctx.critic1 = &critic1.net
        self.ctx.target_params = _data(target_params) if td3 else NULL
        self.ctx.noise = NULL if discrete else _data(noise)
        self.ctx.a = _data(bufs[0])
        self.ctx.logp = _data(bufs[1])
        self.ctx.x_critic = _data(bufs[2])
        self.ctx.dq0 = _data(bufs[3])
        self.ctx.dq1 = _data(bufs[4])
        self.ctx.da = _data(bufs[5])
        self.ctx.weight = _data(bufs[6])
        self.ctx.dpre = _data(bufs[7])
        self.ctx.cat_logp = _data(bufs[8])
        self.ctx.joint_logp = _data(bufs[9])
        self.ctx.joint_p = _data(bufs[10])
        self.ctx.g = _data(bufs[11])

    def run(self, double alpha, long adam_t):
        """One update (Adam step count ``adam_t``); returns (status, loss, alpha gradient), the
        status a ``Status`` value (an int)."""
        self.ctx.alpha = alpha
        self.ctx.adam.t = adam_t
        self.ctx.apply = True
        with nogil:
            _actor_run(&self.ctx)
        return <int>self.ctx.status, self.ctx.loss, self.ctx.alpha_gradient

    def gradient(self, double alpha):
        """Only the loss and the actor's gradient (into its gradient buffer), nothing applied;
        returns (status, loss, alpha gradient). For tests."""
        self.ctx.alpha = alpha
        self.ctx.apply = False
        with nogil:
            _actor_run(&self.ctx)
        return Status(self.ctx.status), self.ctx.loss, self.ctx.alpha_gradient


cdef int _bind_branch(str name, SequencePlan branch, SequencePlan trunk, int rows, bint is_double) except -1:
    """Point a one-step plan (T=1, B=rows) of the same network as ``trunk`` (T*B = rows) at the
    trunk's per-step starting states: each GRU of the branch starts row k from the state the
    trunk's GRU started step k from (after its resets), so the branch's output at row k is the
    trunk's at k with the input replaced."""
    cdef int i
    if branch is None:
        raise ValueError(f"{name}: every-step losses need the one-step branch plans of the critics")
    if branch.is_double != is_double or branch.net.T != 1 or branch.net.B != rows \
            or trunk.net.T * trunk.net.B != rows or branch.net.n_layers != trunk.net.n_layers:
        raise ValueError(f"{name}: expected a one-step plan of {rows} rows of the same network as its trunk")
    for i in range(branch.net.n_layers):
        if (branch.net.layers[i].kind != trunk.net.layers[i].kind or branch.net.layers[i].W != trunk.net.layers[i].W
                or branch.net.layers[i].out_dim != trunk.net.layers[i].out_dim):
            raise ValueError(f"{name}: layer {i} differs from its trunk's (the same network's parameters expected)")
        if branch.net.layers[i].kind == GRU:
            branch.net.layers[i].h0 = trunk.net.layers[i].h_prev
    branch.net.reset = NULL
    return 0


cdef int _check_discrete(Settings settings, Window window, tuple plans) except -1:
    """Discrete SAC's window holds K action indices per row; its networks read observations and
    output C logits (the actor) or J Q-values (the critics)."""
    if window.v.A != settings.s.K:
        raise ValueError(f"actions: expected {settings.s.K} index columns (one per action component), "
                         f"got {window.v.A}")
    for name, plan, outputs in plans:
        if (<SequencePlan>plan).net.in_dim != window.v.O or (<SequencePlan>plan).net.out_dim != outputs:
            raise ValueError(f"{name}: expected a network from {window.v.O} observation inputs to {outputs} outputs, "
                             f"got {(<SequencePlan>plan).net.in_dim} to {(<SequencePlan>plan).net.out_dim}")
    return 0


cdef int _check_precision(bint is_double, tuple others) except -1:
    if any(bool(o) != bool(is_double) for o in others):
        raise ValueError("plans and optimizer: expected the window's precision "
                         f"({'float64' if is_double else 'float32'}) throughout")
    return 0


cdef int _check_array(str name, array, dtype, tuple shape) except -1:
    if not hasattr(array, "dtype") or array.dtype != dtype or array.shape != shape or not array.flags.c_contiguous:
        got = f"{array.dtype} {array.shape}" if hasattr(array, "dtype") else type(array).__name__
        raise ValueError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array of shape {shape}, got {got}")
    return 0


def all_finite(x):
    """Whether a float32 or float64 vector has no NaN or infinite entry (the updates' check)."""
    cdef const float[::1] f
    cdef const double[::1] d
    cdef bint ok
    if x.shape[0] == 0:
        return True
    if x.dtype == np.float64:
        d = x
        with nogil:
            ok = _all_finite(&d[0], d.shape[0])
    else:
        f = x
        with nogil:
            ok = _all_finite(&f[0], f.shape[0])
    return ok
