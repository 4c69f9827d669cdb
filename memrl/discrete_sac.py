"""Recurrent SAC for discrete actions (Christodoulou 2019, "Soft Actor-Critic for Discrete Action
Settings", arXiv:1910.07207), as pomdp-baselines runs it with recurrent networks (Ni et al. 2022,
``policies/rl/sacd.py``), on memrl's replay, sequence sampling, masks and loop.

Actions: a Gymnasium ``Discrete(n)`` space is one categorical over n actions; a
``MultiDiscrete(nvec)`` space has K independent categoricals, one per component
(``pi(a|h) = prod_k pi_k(a_k|h)``, log-probabilities summed). The replay stores an action as its K
category indices, as float32 (``memrl.spaces``).

Networks (the same stacks as SAC's, ``memrl.agent.build_network``):

* the actor maps the history's observations to C = sum_k n_k logits (one softmax per component;
  ``memrl._core._categorical``);
* each critic (and its Polyak target) maps the observations alone, no action input, to one
  Q-value per *joint* action: J = prod_k n_k outputs, the joint index ``ravel(a)`` (component 0
  most significant). For a ``Discrete`` space that is Christodoulou's critic; for a
  ``MultiDiscrete`` one it keeps the twin minimum and the targets exact over the product
  distribution (a per-component factorisation would not: the minimum of two sums is not a sum).
  Spaces with more than ``memrl._core._update.MAX_JOINT_ACTIONS`` joint actions are refused.

Losses (``memrl._core._update``, the one engine; every expectation over actions exact, no
sampling), at the segment-final steps as for the continuous agents, or at every step of every
segment with ``every_step_losses`` (no critic input depends on a fresh action; replayed actions
reach the networks only through the history inputs):

    V(h')  = sum_a pi(a|h') [min_j Qtarg_j(h', a) - alpha log pi(a|h')]        (next-step bonus)
    y_t    = r_t + gamma (1 - terminated_t) V(h_{t+1})
             (``entropy_bonus_next_step=False``, the chapter's current-step bonus, takes the
             expectation of -alpha log pi(a_t|h_t), i.e. y_t += alpha H(pi(.|h_t)), outside the
             discount; ``entropy_bonus=False`` drops the bonus)
    L_Q    = 1 / (2 n) sum_t (Q_i(h_t)[a_t] - y_t)^2                           (a_t: the replayed action)
    L_pi   = (1/n) sum_t sum_a pi(a|h_t) [-min_j Q_j(h_t, a)] + alpha mean_E sum_a pi(a|h) log pi(a|h)
             (E: every window step with ``actor_entropy_positions="all"``, else the loss steps)
    J(alpha) = alpha (H - target_entropy),  H = mean_E H(pi(.|h))              (Christodoulou eq. 11)

log(alpha) is stepped with dJ/dlog(alpha) = alpha (H - target_entropy), as pomdp-baselines'
``update_others`` does (memrl's continuous SAC steps log(alpha) with ``H - target``, the
Stable-Baselines3 form). The default target entropy is ``target_entropy_ratio * log|A|`` with
``|A| = J`` the number of joint actions and ratio 0.7, pomdp-baselines' choice for its discrete
POMDPs (``configs/pomdp/cartpole/v/rnn.yml``: ``target_entropy: 0.7``, "the ratio:
target_entropy = ratio * log(|A|)"); Christodoulou used 0.98.

Rollouts sample each component by the inverse CDF of its softmax at ``Phi(noise)`` (the loop's
standard normal action noise); evaluation and exported policies take the argmax. The warm-up's
random actions are uniform over each component's categories.
"""
from __future__ import annotations

import math

import numpy as np

from memrl._core._categorical import act as categorical_act
from memrl._core._update import MAX_JOINT_ACTIONS, Algorithm
from memrl.agent import Agent
from memrl.config import Config
from memrl.sac import LearnedTemperature, LogAlpha

__all__ = ["DiscreteSAC"]


class DiscreteSAC(LearnedTemperature, Agent):
    """Actor (categorical logits), twin critics (one Q per joint action) and their targets, and
    the temperature, with discrete SAC's updates (module doc).

    ``action_nvec``: categories per action component (``[n]`` for ``Discrete(n)``); the agent's
    actions are rows of ``len(action_nvec)`` category indices (floats).
    """

    algorithm = Algorithm.DISCRETE_SAC

    def __init__(self, config: Config, observation_dim: int, action_nvec, seed: int, *, dtype=np.float32):
        nvec = [int(n) for n in action_nvec]
        if not nvec or any(n < 1 for n in nvec):
            raise ValueError(f"action_nvec: expected positive category counts, got {list(action_nvec)}")
        joint = math.prod(nvec)
        if joint > MAX_JOINT_ACTIONS:
            raise ValueError(f"action_nvec: discrete SAC's critics output one Q-value per joint action, at most "
                             f"{MAX_JOINT_ACTIONS}; {nvec} has {joint}")
        for name in ("rltools_alpha_gradient", "rltools_critic_backward_ignores_resets"):
            if getattr(config, name):
                raise ValueError(f"{name}: an RLtools quirk of continuous SAC; discrete SAC does not take it")
        self.action_nvec = nvec
        self.n_joint_actions = joint
        super().__init__(config, observation_dim, len(nvec), seed, dtype=dtype)
        self.log_alpha = LogAlpha(config.alpha, config.alpha_optimizer)

    def actor_outputs(self) -> int:
        return sum(self.action_nvec)

    def critic_dims(self) -> tuple[int, int]:
        return self.observation_dim, self.n_joint_actions

    def default_target_entropy(self) -> float:
        """``target_entropy_ratio * log(J)`` (module doc)."""
        return float(self.config.target_entropy_ratio * math.log(self.n_joint_actions))

    def _settings(self, **extra):
        return super()._settings(action_nvec=self.action_nvec, **extra)

    def _acting_extra(self) -> dict:
        return {"action_nvec": self.action_nvec}

    def noise_shape(self, batch, target: bool) -> tuple[int, int]:
        """The updates draw no noise (their expectations are exact): one row keeps the loop's
        noise arrays as for the other agents."""
        return (1, self.action_dim)

    def random_actions(self, uniforms: np.ndarray, out: np.ndarray) -> None:
        """Uniform category indices ``floor(u * n_k)`` (N, K) from uniforms (N, K) in [0, 1)."""
        np.multiply(uniforms, np.asarray(self.action_nvec, np.float64), out=uniforms)
        np.floor(uniforms, out=uniforms)
        np.minimum(uniforms, np.asarray(self.action_nvec, np.float64) - 1, out=uniforms)
        out[...] = uniforms

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """The argmax indices (N, K) from actor logits (N, C)."""
        return categorical_act(np.ascontiguousarray(pre, self.dtype), np.asarray(self.action_nvec, np.int32))
