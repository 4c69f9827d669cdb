"""TD3 on the same replay, sequence sampling and loop as SAC (Fujimoto et al. 2018; RLtools'
internals section 5).

The actor is deterministic: ``a = tanh(actor(history))``, bounded like SAC's (RLtools' GRU TD3
emits unbounded linear actions and does not explore after warm-up; memrl bounds and explores).
The critic targets use the target actor's actions with clipped smoothing noise
(``target_policy_noise``, ``target_noise_clip``); every ``actor_training_interval`` steps (the
policy delay) the actor follows critic 1, and the target actor then moves by Polyak averaging,
as the target critics do every ``critic_target_update_interval`` steps. Rollouts add Gaussian
exploration noise (``exploration_noise``) and clip to [-1, 1]; evaluation acts without noise.
The updates' formulas are in ``memrl._core._update``.
"""
from __future__ import annotations

import numpy as np

from memrl._core import _dense
from memrl._core._update import Algorithm
from memrl.agent import Agent, build_network
from memrl.config import Config


class TD3(Agent):
    """Actor, target actor, twin critics and their targets, with TD3's updates."""

    algorithm = Algorithm.TD3
    actor_outputs_per_action = 1

    def __init__(self, config: Config, observation_dim: int, action_dim: int, seed: int, *, dtype=np.float32):
        super().__init__(config, observation_dim, action_dim, seed, dtype=dtype)
        cfg = config
        self.target_actor = build_network(observation_dim, action_dim, cfg.actor_hidden_dim, cfg.actor_num_layers,
                                          cfg.actor_activation, cfg.gru_gates, cfg.recurrent, seed=None,
                                          dtype=self.dtype, gru_layers=cfg.gru_layers)
        self.target_actor.copy_from(self.actor)

    def networks(self):
        return {"actor": self.actor, "target_actor": self.target_actor, **{
            k: v for k, v in super().networks().items() if k != "actor"}}

    def target_policy(self):
        return self.target_actor

    def target_actor_params(self) -> np.ndarray:
        return self.target_actor.params

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """Actions (N, A) = tanh(pre) from actor outputs (N, A), with the kernels' tanh."""
        pre = np.ascontiguousarray(pre, self.dtype)
        out = np.empty_like(pre)
        _dense.activation(_dense.TANH, pre.reshape(-1), out.reshape(-1))
        return out
