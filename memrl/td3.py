"""TD3 on the same replay, sequence sampling and loop as SAC (internals section 5).

The actor is deterministic: ``a = tanh(actor(history))``, bounded like SAC's (RLtools' GRU TD3
emits unbounded linear actions and does not explore after warm-up; memrl bounds and explores).
Critic i, on its batch:

    a'_s = clip(tanh(target_actor(target window)) + clip(sigma eps_s, -c, c), -1, 1)   smoothing
    a'_s <- replayed action at every slot that is not a padding slot                   (mask_non_terminal)
    y_t  = r_t + gamma (1 - terminated_t) min_j target_critic_j([o, a'])_{t+d}
    L_Q  = 1 / (2 N_f) sum_{t final} (Q_i([o_t, a_t]) - y_t)^2

and every ``actor_training_interval`` steps (the policy delay) the actor follows critic 1:

    L_pi = -(1 / N_f) sum_{t final} Q_1([o_t, tanh(actor)_t])   (replayed actions elsewhere)

after which the target actor moves by Polyak averaging, as the target critics do every
``critic_target_update_interval`` steps. Rollouts add Gaussian exploration noise
(``exploration_noise``) and clip to [-1, 1]; evaluation acts without noise. The methods here are
the reference; ``fuse`` binds compiled updates (``memrl/_core/_sac.pyx``) that give the same
numbers bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from memrl._core import _dense
from memrl.config import Config
from memrl.sac import ReplayAgent, TrainingDiverged, _check_finite, build_network


def _tanh(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """tanh as memrl's kernels compute it (in float32 the vectorised rational approximation, at
    most 3.5e-7 off), so that the compiled updates reproduce these bit for bit."""
    _dense.activation(_dense.TANH, x.reshape(-1), out.reshape(-1))
    return out


class TD3(ReplayAgent):
    """Actor, target actor, twin critics and their targets, with TD3's updates."""

    alpha = None  # no entropy temperature

    def __init__(self, config: Config, observation_dim: int, action_dim: int, seed: int, *, dtype=np.float32):
        cfg = self.config = config
        self.observation_dim, self.action_dim = O, A = observation_dim, action_dim
        self.dtype = np.dtype(dtype)
        seeds = np.random.SeedSequence(seed).generate_state(3)
        net = dict(gates=cfg.gru_gates, recurrent=cfg.recurrent, dtype=self.dtype)
        self.actor = build_network(O, A, cfg.actor_hidden_dim, cfg.actor_num_layers, cfg.actor_activation,
                                   seed=int(seeds[0]), **net)
        self.target_actor = build_network(O, A, cfg.actor_hidden_dim, cfg.actor_num_layers, cfg.actor_activation,
                                          seed=None, **net)
        self.target_actor.copy_from(self.actor)
        self.critics = [build_network(O + A, 1, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                      cfg.critic_activation, seed=int(s), **net) for s in seeds[1:]]
        self.target_critics = [build_network(O + A, 1, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                             cfg.critic_activation, seed=None, **net) for _ in self.critics]
        for target, critic in zip(self.target_critics, self.critics):
            target.copy_from(critic)
        self._buffers: dict[tuple, np.ndarray] = {}

    def networks(self):
        return {"actor": self.actor, "target_actor": self.target_actor, "critic_0": self.critics[0],
                "critic_1": self.critics[1], "target_critic_0": self.target_critics[0],
                "target_critic_1": self.target_critics[1]}

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """Actions (N, A) from actor outputs (N, A)."""
        pre = np.ascontiguousarray(pre, self.dtype)
        return _tanh(pre, np.empty_like(pre))

    def target_policy(self):
        return self.target_actor

    # -- critics ---------------------------------------------------------------------------------

    def critic_targets(self, batch, noise: np.ndarray) -> np.ndarray:
        cfg = self.config
        L, B, A = batch.sequence_length, batch.batch_size, self.action_dim
        obs_t = self._cast(batch.target_observations)
        Lt = obs_t.shape[0]
        pre = self.target_actor.forward(obs_t, batch.target_reset, check=False)
        smoothing = np.clip(cfg.target_policy_noise * noise.reshape(Lt, B, A), -cfg.target_noise_clip,
                            cfg.target_noise_clip)
        next_action = np.clip(_tanh(pre, self._buf("target_tanh", pre.shape)) + smoothing, -1.0, 1.0)
        d = batch.target_offset
        bootstrap = self._target_values(batch, obs_t, next_action)[d:d + L]
        keep = 1.0 if cfg.ignore_termination else (1.0 - batch.terminated)
        return (batch.rewards + self.dtype.type(cfg.gamma) * keep * bootstrap).astype(self.dtype, copy=False)

    # -- actor -----------------------------------------------------------------------------------

    def actor_loss_and_grad(self, batch) -> float:
        cfg = self.config
        L, B, O = batch.sequence_length, batch.batch_size, self.observation_dim
        obs = self._cast(batch.current_observations)
        pre = self.actor.forward(obs, batch.reset, check=False)
        action = _tanh(pre, self._buf("action", pre.shape))
        mask = self._loss_mask(batch)
        n = int(mask.sum())
        action_in = np.where(mask[:, :, None].astype(bool), action, batch.current_actions) \
            if cfg.mask_non_terminal else action
        x = self._q_input("q_input", obs, action_in)
        q1 = self.critics[0].forward(x, batch.reset, check=False)[:, :, 0]
        loss = -float((q1 * mask).sum(dtype=np.float64)) / n
        if not math.isfinite(loss):
            raise TrainingDiverged(f"actor: loss is {loss}")
        dq = self._buf("dq_actor", (L, B, 1))
        np.multiply(mask, self.dtype.type(-1.0 / n), out=dq[:, :, 0], casting="unsafe")
        dx = self.critics[0].backward(dq, need_dx=True, check=False,
                                      ignore_resets=cfg.rltools_critic_backward_ignores_resets)
        da = dx[:, :, O:] * mask[:, :, None] if cfg.mask_non_terminal else dx[:, :, O:]
        dpre = np.ascontiguousarray(da * (1.0 - action * action), dtype=self.dtype)
        self.actor.zero_grad()
        self.actor.backward(dpre, need_dx=False, check=False)
        return loss

    def update_actor(self, batch, noise: np.ndarray | None = None) -> float:
        """One Adam step of the actor (the policy delay is the loop's actor interval), then its target."""
        loss = self.actor_loss_and_grad(batch)
        _check_finite(self.actor.grads, "actor gradient")
        self.actor.adam_step(self.config.actor_optimizer)
        self.target_actor.polyak_from(self.actor, self.config.tau)
        return loss

    def update_actor_fused(self) -> float:
        """The compiled actor update and target-actor step on the bound batch; returns the actor loss."""
        status, loss, _ = self._fused_actor.run(0.0, self.actor.adam_t + 1)
        if status == 1:
            raise TrainingDiverged(f"actor: loss is {loss}")
        if status == 2:
            raise TrainingDiverged("actor gradient has non-finite entries")
        self.actor.adam_t += 1
        return loss

    # -- acting ----------------------------------------------------------------------------------

    def act(self, observations, state, reset, noise):
        """tanh(actor) for (N, O) observations; with ``noise`` (N, A) standard normal, explore."""
        pre = self.actor.step(observations, state, reset, check=False)
        action = _tanh(pre, self._buf("act_tanh", pre.shape))
        if noise is not None:
            action = np.clip(action + self.config.exploration_noise * noise, -1.0, 1.0)
        return action.astype(self.dtype, copy=False)
