"""The benchmark's baseline: SAC's and TD3's updates written in NumPy over memrl's networks.

``install(trainer)`` replaces the trainer's compiled updates (``memrl._core._update``) by these:
the same losses (``memrl._core._update``'s module doc), computed with NumPy array operations
between whole-network forward and backward calls (``memrl.nn.Sequential``), one critic after the
other. It is what the compiled updates would cost as Python glue over compiled networks; the
numbers agree with the compiled updates to float32 rounding, not bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from memrl._core import _dense
from memrl.agent import TrainingDiverged
from memrl.nn import TanhGaussianHead


class NumpyUpdates:
    """The updates of ``trainer.agent`` on the trainer's batches and noise arrays, in NumPy."""

    def __init__(self, trainer):
        self.trainer, self.agent, self.config = trainer, trainer.agent, trainer.config
        cfg = self.config
        self.sac = cfg.algorithm == "sac"
        self.head = TanhGaussianHead(trainer.action_dim, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max)
        self.buffers: dict = {}

    def _buf(self, key, shape):
        buf = self.buffers.get((key, shape))
        if buf is None:
            buf = self.buffers[(key, shape)] = np.zeros(shape, np.float32)
        return buf

    def _batches(self):
        t = self.trainer
        if self.config.shared_batch:
            return [t.samplers[0].batch] * 2, [t.critic_noise[0]] * 2, t.samplers[0].batch
        return [s.batch for s in t.samplers[:2]], t.critic_noise, t.samplers[2].batch

    def _q_input(self, key, observations, actions):
        T, B, O = observations.shape
        x = self._buf(key, (T, B, O + actions.shape[2]))
        x[:, :, :O] = observations
        x[:, :, O:] = actions
        return x

    def _tanh(self, x):
        out = np.empty_like(x)
        _dense.activation(_dense.TANH, x.reshape(-1), out.reshape(-1))
        return out

    def critic_targets(self, batch, noise):
        cfg, agent = self.config, self.agent
        L, B, A = batch.sequence_length, batch.batch_size, self.trainer.action_dim
        obs_t = batch.target_observations
        Lt = obs_t.shape[0]
        policy = agent.target_policy()
        pre = policy.forward(obs_t, batch.target_window_reset, check=False)
        if self.sac:
            next_action, logp = self.head.forward(pre.reshape(Lt * B, 2 * A), noise, check=False)
            next_action, logp = next_action.reshape(Lt, B, A), logp.reshape(Lt, B)
        else:
            smoothing = np.clip(cfg.target_policy_noise * noise.reshape(Lt, B, A), -cfg.target_noise_clip,
                                cfg.target_noise_clip)
            next_action, logp = np.clip(self._tanh(pre) + smoothing, -1.0, 1.0), None
        next_action = np.where(batch.target_window_padding[:, :, None].astype(bool), next_action,
                               batch.target_actions)
        x = self._q_input("target_q_input", obs_t, next_action.astype(np.float32))
        q1 = agent.target_critics[0].forward(x, batch.target_window_reset, check=False)[:, :, 0].copy()
        q2 = agent.target_critics[1].forward(x, batch.target_window_reset, check=False)[:, :, 0]
        d = batch.target_offset
        bootstrap = np.minimum(q1, q2)[d:d + L]
        bonus = self.sac and cfg.entropy_bonus
        alpha = np.float32(agent.alpha or 0.0)
        if bonus and cfg.entropy_bonus_next_step:
            bootstrap = bootstrap - alpha * logp[d:d + L]
        keep = 1.0 if cfg.ignore_termination else (1.0 - batch.terminated)
        y = batch.rewards + np.float32(cfg.gamma) * keep * bootstrap
        if bonus and not cfg.entropy_bonus_next_step:
            y = y - alpha * logp[:L]
        return y.astype(np.float32)

    def critic_gradient(self, i, batch, noise):
        critic = self.agent.critics[i]
        y = self.critic_targets(batch, noise)
        L, B = batch.sequence_length, batch.batch_size
        x = self._q_input("q_input", batch.current_observations, batch.current_actions)
        q = critic.forward(x, batch.reset, check=False)[:, :, 0]
        n = int(batch.final.sum())
        diff = (q - y) * batch.final
        loss = 0.5 * float(np.dot(diff.ravel(), diff.ravel())) / n
        dq = self._buf("dq", (L, B, 1))
        np.multiply(diff, np.float32(1.0 / n), out=dq[:, :, 0])
        critic.zero_grad()
        critic.backward(dq, need_dx=False, check=False)
        if not math.isfinite(loss) or not np.isfinite(critic.grads).all():
            raise TrainingDiverged(f"critic_{i}: non-finite loss or gradient")
        return loss

    def update_critics(self, update_targets=False):
        batches, noises, _ = self._batches()
        agent = self.agent
        losses = [self.critic_gradient(i, batches[i], noises[i]) for i in range(2)]
        for critic in agent.critics:
            critic.adam_step(self.config.critic_optimizer)
        if update_targets:
            agent.update_targets()
        return losses

    def update_actor(self):
        cfg, agent = self.config, self.agent
        _, _, batch = self._batches()
        noise = self.trainer.actor_noise
        L, B, A, O = batch.sequence_length, batch.batch_size, self.trainer.action_dim, self.trainer.observation_dim
        obs = batch.current_observations
        pre = agent.actor.forward(obs, batch.reset, check=False)
        mask = batch.final.astype(bool)
        n = int(mask.sum())
        if self.sac:
            action, logp = self.head.forward(pre.reshape(L * B, 2 * A), noise, check=False)
            action = action.reshape(L, B, A)
        else:
            action = self._tanh(pre)
        x = self._q_input("q_input", obs, np.where(mask[:, :, None], action, batch.current_actions))
        q1 = agent.critics[0].forward(x, batch.reset, check=False)[:, :, 0].copy()
        ignore = cfg.rltools_critic_backward_ignores_resets
        da = np.zeros((L, B, A), np.float32)
        if self.sac:
            q2 = agent.critics[1].forward(x, batch.reset, check=False)[:, :, 0]
            first = q1 < q2
            loss = -float(np.where(first, q1, q2)[mask].sum()) / n
            logp2 = logp.reshape(L, B)
            if cfg.actor_entropy_positions == "all":
                weight = np.full((L, B), agent.alpha / (L * B), np.float32)
                mean_logp = float(logp2.mean(dtype=np.float64))
            else:
                weight = (mask * (agent.alpha / n)).astype(np.float32)
                mean_logp = float(logp2[mask].sum(dtype=np.float64)) / n
            loss += agent.alpha * mean_logp
            for critic, chosen in ((agent.critics[0], first), (agent.critics[1], ~first)):
                dq = (mask * chosen * np.float32(-1.0 / n)).astype(np.float32)[:, :, None]
                da += critic.backward(np.ascontiguousarray(dq), need_dx=True, check=False, ignore_resets=ignore)[:, :, O:]
            da *= mask[:, :, None]
            dpre = self.head.backward(da.reshape(L * B, A), weight.reshape(L * B), check=False).reshape(L, B, 2 * A)
        else:
            loss = -float(q1[mask].sum(dtype=np.float64)) / n
            dq = (mask * np.float32(-1.0 / n)).astype(np.float32)[:, :, None]
            dx = agent.critics[0].backward(np.ascontiguousarray(dq), need_dx=True, check=False, ignore_resets=ignore)
            dpre = np.ascontiguousarray(dx[:, :, O:] * mask[:, :, None] * (1.0 - action * action), np.float32)
        agent.actor.zero_grad()
        agent.actor.backward(np.ascontiguousarray(dpre), need_dx=False, check=False)
        if not math.isfinite(loss) or not np.isfinite(agent.actor.grads).all():
            raise TrainingDiverged("actor: non-finite loss or gradient")
        agent.actor.adam_step(cfg.actor_optimizer)
        if self.sac:
            if cfg.adaptive_alpha:
                agent.log_alpha.step(-mean_logp - agent.target_entropy)
        else:
            agent.target_actor.polyak_from(agent.actor, cfg.tau)
        return loss


def install(trainer) -> NumpyUpdates:
    """Make ``trainer`` run its updates with the NumPy baseline."""
    updates = NumpyUpdates(trainer)
    trainer.agent.update_critics = updates.update_critics
    trainer.agent.update_actor = updates.update_actor
    return updates
