"""Recurrent SAC on replayed sequences (RLtools' memory chapter, internals sections 3.2-3.4).

Networks (``build_network``): the actor maps observations to [mean | log-std] through
Dense -> GRU -> GRU -> Dense and a tanh-Gaussian head; each of the twin critics maps
[observation, action] to Q through its own stack. There is no target actor; target critics are
Polyak averages.

Critic i, on its batch (windows of L slots plus a padding slot, see ``memrl.replay``):

    a'_s, log pi'_s = actor(target window, target resets, noise)        every target slot s
    a'_s <- replayed action at every slot that is not a padding slot     (mask_non_terminal)
    q'_s = min_j target_critic_j([o_s, a'_s])
    y_t  = r_t + gamma (1 - terminated_t) (q'_{t+d} [- alpha log pi'_{t+d}])   next-step bonus
    y_t  = r_t + gamma (1 - terminated_t) q'_{t+d} - alpha log pi'_t           current-step bonus
    L_Q  = 1 / (2 N_f) sum_{t final} (Q_i([o_t, a_t]) - y_t)^2

where d = 1 when the target window includes the first step (else 0) and N_f counts the
segment-final steps, the only steps with a loss (``mask_non_terminal``). The actor:

    a_t, log pi_t = actor(window, resets, noise);  a_t <- replayed action where t is not final
    L_pi = -(1 / N_f) sum_{t final} min_j Q_j([o_t, a_t]) + alpha * mean_{t in E} log pi_t

with E all window steps (RLtools) or only the final ones (``actor_entropy_positions``). The
gradient of the min flows through the smaller critic per sample. Alpha follows
``d/d log(alpha) = mean_E(-log pi_t - target_entropy)`` (descent lowers alpha while the entropy
is above target). Every loss and gradient is checked for finiteness; a non-finite one raises
:class:`TrainingDiverged` and the update that found it changes no parameter.
"""
from __future__ import annotations

import math

import numpy as np

from memrl._core import _sac
from memrl.config import Config
from memrl.nn import GRU, AdamConfig, Dense, Sequential, TanhGaussianHead


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN or infinite; the failing update left every parameter as it was."""


def build_network(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, activation: str,
                  gates: str, recurrent: bool, *, seed: int, dtype=np.float32) -> Sequential:
    """RLtools' layer stacks. Recurrent: 3 = Dense-GRU-Dense, 4 = Dense-GRU-GRU-Dense,
    n > 4 adds n - 4 hidden Dense layers after the GRUs. Feed-forward: n Dense layers."""
    H = hidden_dim
    layers = [Dense(in_dim, H, activation)]
    if recurrent:
        n_gru = 1 if num_layers == 3 else 2
        layers += [GRU(H, H, gates) for _ in range(n_gru)]
        layers += [Dense(H, H, activation) for _ in range(num_layers - 2 - n_gru)]
    else:
        layers += [Dense(H, H, activation) for _ in range(num_layers - 2)]
    layers.append(Dense(H, out_dim, "identity"))
    return Sequential(layers, dtype=dtype, seed=seed)


class LogAlpha:
    """The entropy temperature as a learned log-parameter with its own Adam state."""

    def __init__(self, alpha: float, optimizer: AdamConfig):
        self.params = np.array([math.log(alpha)], np.float64)
        self.grads = np.zeros(1, np.float64)
        self.adam_m = np.zeros(1, np.float64)
        self.adam_v = np.zeros(1, np.float64)
        self.adam_t = 0
        self.optimizer = optimizer

    @property
    def value(self) -> float:
        return math.exp(self.params[0])

    def step(self, grad: float) -> None:
        self.grads[0] = grad
        self.adam_t += 1
        self.optimizer.apply(self.params, self.grads, self.adam_m, self.adam_v, self.adam_t)


class ReplayAgent:
    """What SAC and TD3 share: buffers, batch views, and the critic loss on a sequence batch.

    Subclasses set ``config``, ``dtype``, ``action_dim``, ``critics``, ``target_critics`` and
    define ``critic_targets(batch, noise) -> y (L, B)``.
    """

    def _buf(self, key, shape, dtype=None):
        buf = self._buffers.get((key, shape))
        if buf is None:
            buf = self._buffers[(key, shape)] = np.zeros(shape, self.dtype if dtype is None else dtype)
        return buf

    def _cast(self, array):
        """Batches are float32; a float64 agent (gradient tests) works on float64 copies."""
        return array if array.dtype == self.dtype else np.ascontiguousarray(array, self.dtype)

    def noise_shape(self, batch, target: bool) -> tuple[int, int]:
        """Rows of Gaussian noise an update needs: target window (critic) or window (actor)."""
        T = batch.target_observations.shape[0] if target else batch.sequence_length
        return (T * batch.batch_size, self.action_dim)

    def _q_input(self, key, observations, actions):
        T, B, O = observations.shape
        x = self._buf(key, (T, B, O + self.action_dim))
        x[:, :, :O] = observations
        x[:, :, O:] = actions
        return x

    def _loss_mask(self, batch):
        """Steps with a loss: segment-final steps, or every non-padding step without masking."""
        if self.config.mask_non_terminal:
            return batch.final
        valid = self._buf("valid", batch.final.shape, np.uint8)
        np.subtract(1, batch.next_final[:batch.sequence_length], out=valid)
        return valid

    def _target_values(self, batch, obs_t, next_action):
        """min of the target critics (Lt, B) on the target window; replayed actions except at padding slots."""
        if self.config.mask_non_terminal:
            next_action = np.where(batch.target_final[:, :, None].astype(bool), next_action, batch.target_actions)
        x = self._q_input("target_q_input", obs_t, next_action)
        q1 = self.target_critics[0].forward(x, batch.target_reset, check=False)
        q2 = self.target_critics[1].forward(x, batch.target_reset, check=False)
        return np.minimum(q1[:, :, 0], q2[:, :, 0])

    def critic_loss_and_grad(self, i: int, batch, noise: np.ndarray) -> float:
        """Forward and backward of critic i's loss on ``batch`` into its ``grads`` (zeroed first)."""
        y = self.critic_targets(batch, noise)
        L, B = batch.sequence_length, batch.batch_size
        critic = self.critics[i]
        x = self._q_input("q_input", batch.current_observations, batch.current_actions)
        q = critic.forward(x, batch.reset, check=False)[:, :, 0]
        mask = self._loss_mask(batch)
        n = int(mask.sum())
        diff = (q - y) * mask
        loss = 0.5 * float(np.dot(diff.ravel(), diff.ravel())) / n
        if not math.isfinite(loss):
            raise TrainingDiverged(f"critic_{i}: loss is {loss}")
        dq = self._buf("dq", (L, B, 1))
        np.multiply(diff, self.dtype.type(1.0 / n), out=dq[:, :, 0])
        critic.zero_grad()
        critic.backward(dq, need_dx=False, check=False)
        return loss

    def update_critic(self, i: int, batch, noise: np.ndarray) -> float:
        """One Adam step of critic i; returns its loss."""
        loss = self.critic_loss_and_grad(i, batch, noise)
        critic = self.critics[i]
        _check_finite(critic.grads, f"critic_{i} gradient")
        critic.adam_step(self.config.critic_optimizer)
        return loss

    def update_targets(self) -> None:
        for target, critic in zip(self.target_critics, self.critics):
            target.polyak_from(critic, self.config.tau)

    # -- fused updates (the fast path) ---------------------------------------------------------

    def fuse(self, critic_batches, critic_noise, actor_batch, actor_noise, threads: int = 2) -> None:
        """Bind the compiled updates to the trainer's (reused) batch and noise arrays.

        Afterwards ``update_critics_fused`` and ``update_actor_fused`` run the same updates as
        ``update_critic``/``update_actor`` in C: the two critic updates of a step on ``threads``
        threads (their results do not depend on it), the actor's in one call. float32 only.
        """
        if self.dtype != np.float32:
            raise TypeError(f"fuse: the compiled updates are float32, this agent is {self.dtype.name}")
        O, A, cfg = self.observation_dim, self.action_dim, self.config
        batch = critic_batches[0]
        L, B = batch.sequence_length, batch.batch_size
        Lt = batch.target_observations.shape[0]
        policy = self.target_policy()
        self._fused_critics = []
        for i in range(2):
            own = i == 0  # the first update uses the models' cached workspaces, the second its own
            policy_plan = policy.plan(Lt, B) if own else policy.new_workspace(Lt, B).plan
            target_plans = [t.plan(Lt, B) if own else t.new_workspace(Lt, B).plan for t in self.target_critics]
            self._fused_critics.append(_sac.CriticUpdate(
                cfg, critic_batches[i], critic_noise[i], policy_plan, target_plans, self.critics[i].plan(L, B),
                self.critics[i], self.target_critics[i], O, A))
        self._fused_actor = _sac.ActorUpdate(cfg, actor_batch, actor_noise, self.actor.plan(L, B),
                                             [c.plan(L, B) for c in self.critics], self.actor,
                                             getattr(self, "target_entropy", 0.0), O, A, int(threads),
                                             getattr(self, "target_actor", None))
        self._threads = int(threads)
        self._actor_batch = actor_batch

    def acting(self, observations: np.ndarray, state: list[np.ndarray], reset: np.ndarray, noise: np.ndarray,
               actions: np.ndarray) -> "_sac.Acting":
        """A compiled ``act`` bound to these arrays: ``run()`` writes the exploring actions for
        ``observations`` into ``actions``, advancing ``state`` and clearing ``reset`` (float32)."""
        if self.dtype != np.float32:
            raise TypeError(f"acting: the compiled step is float32, this agent is {self.dtype.name}")
        plan = self.actor.step_workspace(observations.shape[0], state).plan
        return _sac.Acting(plan, observations, reset, noise, actions, self.config)

    def target_policy(self) -> Sequential:
        """The network whose actions the critic targets use (SAC: the actor; TD3: the target actor)."""
        return self.actor

    def update_critics_fused(self, update_targets: bool = False) -> tuple[float, float]:
        """Both critic updates on their bound batches and noise, then (``update_targets``) the
        targets' Polyak step, as ``update_targets()`` would do it; returns the two losses.

        If either loss or gradient is non-finite, no parameter changes and TrainingDiverged is raised.
        """
        c0, c1 = self.critics
        alpha = 0.0 if self.alpha is None else self.alpha  # TD3 has no entropy term
        s0, l0, s1, l1 = _sac.run_critic_updates(self._fused_critics[0], self._fused_critics[1], alpha,
                                                 c0.adam_t + 1, c1.adam_t + 1, self._threads,
                                                 bool(update_targets), self.config.tau)
        for i, (status, loss) in enumerate(((s0, l0), (s1, l1))):
            if status == 1:
                raise TrainingDiverged(f"critic_{i}: loss is {loss}")
            if status == 2:
                raise TrainingDiverged(f"critic_{i} gradient has non-finite entries")
        c0.adam_t += 1
        c1.adam_t += 1
        return l0, l1


class SAC(ReplayAgent):
    """Actor, twin critics, target critics and alpha, with the chapter's updates."""

    def __init__(self, config: Config, observation_dim: int, action_dim: int, seed: int, *, dtype=np.float32):
        cfg = self.config = config
        self.observation_dim, self.action_dim = O, A = observation_dim, action_dim
        self.dtype = np.dtype(dtype)
        seeds = np.random.SeedSequence(seed).generate_state(3)
        net = dict(gates=cfg.gru_gates, recurrent=cfg.recurrent, dtype=self.dtype)
        self.actor = build_network(O, 2 * A, cfg.actor_hidden_dim, cfg.actor_num_layers, cfg.actor_activation,
                                   seed=int(seeds[0]), **net)
        self.critics = [build_network(O + A, 1, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                      cfg.critic_activation, seed=int(s), **net) for s in seeds[1:]]
        self.target_critics = [build_network(O + A, 1, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                             cfg.critic_activation, seed=None, **net) for _ in self.critics]
        for target, critic in zip(self.target_critics, self.critics):
            target.copy_from(critic)
        self.head = TanhGaussianHead(A, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max, dtype=self.dtype)
        self.log_alpha = LogAlpha(cfg.alpha, cfg.alpha_optimizer)
        self.target_entropy = float(-A if cfg.target_entropy is None else cfg.target_entropy)
        self._buffers: dict[tuple, dict] = {}

    # -- helpers -------------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return self.log_alpha.value

    def networks(self) -> dict[str, Sequential]:
        return {"actor": self.actor, "critic_0": self.critics[0], "critic_1": self.critics[1],
                "target_critic_0": self.target_critics[0], "target_critic_1": self.target_critics[1]}

    # -- critic --------------------------------------------------------------------------------

    def critic_targets(self, batch, noise: np.ndarray) -> np.ndarray:
        """Bellman targets y (L, B) for every current slot (only loss steps are used)."""
        cfg = self.config
        L, B, A = batch.sequence_length, batch.batch_size, self.action_dim
        obs_t = self._cast(batch.target_observations)
        Lt = obs_t.shape[0]
        pre = self.actor.forward(obs_t, batch.target_reset, check=False)
        next_action, next_logp = self.head.forward(pre.reshape(Lt * B, 2 * A), noise, check=False)
        q_next = self._target_values(batch, obs_t, next_action.reshape(Lt, B, A))
        d = batch.target_offset
        logp = next_logp.reshape(Lt, B)
        alpha = self.dtype.type(self.alpha)
        bootstrap = q_next[d:d + L]
        if cfg.entropy_bonus and cfg.entropy_bonus_next_step:
            bootstrap = bootstrap - alpha * logp[d:d + L]
        keep = 1.0 if cfg.ignore_termination else (1.0 - batch.terminated)
        y = batch.rewards + self.dtype.type(cfg.gamma) * keep * bootstrap
        if cfg.entropy_bonus and not cfg.entropy_bonus_next_step:
            y = y - alpha * logp[:L]  # the current step's history sits at target slot t when d == 1
        return y.astype(self.dtype, copy=False)

    # -- actor and alpha ------------------------------------------------------------------------

    def actor_loss_and_grad(self, batch, noise: np.ndarray) -> tuple[float, float]:
        """Actor loss gradient into ``actor.grads`` (zeroed first); returns (loss, alpha gradient)."""
        cfg = self.config
        L, B, A, O = batch.sequence_length, batch.batch_size, self.action_dim, self.observation_dim
        obs = self._cast(batch.current_observations)
        pre = self.actor.forward(obs, batch.reset, check=False)
        action, logp = self.head.forward(pre.reshape(L * B, 2 * A), noise, check=False)
        mask = self._loss_mask(batch)
        n = int(mask.sum())
        action = action.reshape(L, B, A)
        if cfg.mask_non_terminal:
            action_in = np.where(mask[:, :, None].astype(bool), action, batch.current_actions)
        else:
            action_in = action
        x = self._q_input("q_input", obs, action_in)
        q1 = self.critics[0].forward(x, batch.reset, check=False)[:, :, 0].copy()
        q2 = self.critics[1].forward(x, batch.reset, check=False)[:, :, 0]
        first = q1 < q2  # RLtools: critic 1 where Q1 < Q2, else critic 2
        q_min = np.where(first, q1, q2)
        alpha = self.alpha
        logp2 = logp.reshape(L, B)
        if cfg.actor_entropy_positions == "all":
            entropy_weight = np.full((L, B), alpha / (L * B), self.dtype)
            mean_logp = float(logp2.mean(dtype=np.float64))
            mean_entropy_gap = -mean_logp - self.target_entropy
        else:
            entropy_weight = (mask * (alpha / n)).astype(self.dtype)
            mean_logp = float((logp2 * mask).sum(dtype=np.float64)) / n
            mean_entropy_gap = -mean_logp - self.target_entropy
        loss = -float((q_min * mask).sum()) / n + alpha * mean_logp
        if not math.isfinite(loss):
            raise TrainingDiverged(f"actor: loss is {loss}")
        da = self._buf("da", (L, B, A))
        da[...] = 0
        ignore = cfg.rltools_critic_backward_ignores_resets
        for critic, chosen in ((self.critics[0], first), (self.critics[1], ~first)):
            dq = self._buf("dq_actor", (L, B, 1))
            np.multiply(mask * chosen, self.dtype.type(-1.0 / n), out=dq[:, :, 0], casting="unsafe")
            dx = critic.backward(dq, need_dx=True, check=False, ignore_resets=ignore)
            da += dx[:, :, O:]
        if cfg.mask_non_terminal:
            da *= mask[:, :, None]
        dpre = self.head.backward(da.reshape(L * B, A), entropy_weight.reshape(L * B), check=False)
        self.actor.zero_grad()
        self.actor.backward(dpre.reshape(L, B, 2 * A), need_dx=False, check=False)
        return loss, mean_entropy_gap

    def update_actor(self, batch, noise: np.ndarray) -> float:
        """One Adam step of the actor, then of alpha (if adaptive); returns the actor loss."""
        loss, entropy_gap = self.actor_loss_and_grad(batch, noise)
        _check_finite(self.actor.grads, "actor gradient")
        self.actor.adam_step(self.config.actor_optimizer)
        if self.config.adaptive_alpha:
            if not math.isfinite(entropy_gap):
                raise TrainingDiverged(f"alpha: gradient is {entropy_gap}")
            self.log_alpha.step(self.alpha_gradient(entropy_gap, batch))
        return loss

    def alpha_gradient(self, entropy_gap: float, batch) -> float:
        """d/d log(alpha) from the actor batch's mean entropy gap ``-mean_E log pi - target_entropy``:
        the gap itself (SAC), or RLtools' ``alpha * |E| * gap / N_r`` with N_r the number of reset
        flags in the batch (``rltools_alpha_gradient``)."""
        if not self.config.rltools_alpha_gradient:
            return entropy_gap
        L, B = batch.sequence_length, batch.batch_size
        positions = L * B if self.config.actor_entropy_positions == "all" else int(batch.final.sum())
        return self.alpha * positions * entropy_gap / int(batch.reset.sum())

    # -- fused updates (the fast path) ---------------------------------------------------------

    def update_actor_fused(self) -> float:
        """The actor update (then alpha's) on the bound batch and noise; returns the actor loss."""
        status, loss, entropy_gap = self._fused_actor.run(self.alpha, self.actor.adam_t + 1)
        if status == 1:
            raise TrainingDiverged(f"actor: loss is {loss}")
        if status == 2:
            raise TrainingDiverged("actor gradient has non-finite entries")
        self.actor.adam_t += 1
        if self.config.adaptive_alpha:
            self.log_alpha.step(self.alpha_gradient(entropy_gap, self._actor_batch))
        return loss

    # -- acting --------------------------------------------------------------------------------

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """Actions (N, A) = tanh(mean) from actor outputs (N, 2A)."""
        action, _ = self.head.forward(np.ascontiguousarray(pre, self.dtype), None, check=False)
        return action

    def act(self, observations: np.ndarray, state: list[np.ndarray], reset: np.ndarray | None,
            noise: np.ndarray | None) -> np.ndarray:
        """Actions (N, A) for observations (N, O), advancing the carried GRU ``state``.

        ``noise`` (N, A) standard normal samples a stochastic action; None acts deterministically
        (``tanh(mean)``).
        """
        pre = self.actor.step(observations, state, reset, check=False)
        action, _ = self.head.forward(pre, noise, check=False)
        return action


def _check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        raise TrainingDiverged(f"{what} has non-finite entries")
