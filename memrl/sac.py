"""Recurrent SAC on replayed sequences (Haarnoja et al. 2018; RLtools' memory chapter, internals
sections 2.3 and 3.2-3.4).

The actor maps observations to [mean | log-std] (N, 2A) through its stack and a tanh-Gaussian
head (``memrl._core._head``): ``a = tanh(mean + exp(clip(log_std)) eps)``. There is no target
actor: the critic targets use the current actor's sampled next actions, and their entropy bonus
(current or next step). The updates' formulas are in ``memrl._core._update``.

The temperature is learned as log(alpha) with its own Adam state, stepped after every actor
update (if ``adaptive_alpha``) with the gradient ``mean(-log pi) - target_entropy`` (or RLtools',
``rltools_alpha_gradient``): descent lowers alpha while the entropy is above its target.
"""
from __future__ import annotations

import math

import numpy as np

from memrl._core._head import forward as head_forward
from memrl._core._update import Algorithm
from memrl.agent import Agent, TrainingDiverged
from memrl.config import Config
from memrl.optim import AdamConfig

__all__ = ["SAC", "LogAlpha", "LearnedTemperature", "TrainingDiverged"]


class LogAlpha:
    """The entropy temperature as a learned log-parameter with its own Adam state (float64)."""

    def __init__(self, alpha: float, optimizer: AdamConfig):
        self.params = np.array([math.log(alpha)], np.float64)
        self.grads = np.zeros(1, np.float64)
        self.adam_m = np.zeros(1, np.float64)
        self.adam_v = np.zeros(1, np.float64)
        self.adam_t = 0
        self.optimizer = optimizer
        self.lr = optimizer.lr
        """The learning rate of the next step (``Agent.set_learning_rates`` sets it)."""

    @property
    def value(self) -> float:
        return math.exp(self.params[0])

    def step(self, grad: float) -> None:
        """One Adam step on log(alpha) with the gradient ``grad``; TrainingDiverged if it is not finite."""
        if not math.isfinite(grad):
            raise TrainingDiverged(f"alpha: gradient is {grad}")
        self.grads[0] = grad
        self.adam_t += 1
        self.optimizer.apply(self.params, self.grads, self.adam_m, self.adam_v, self.adam_t, lr=self.lr)


class LearnedTemperature:
    """The temperature the SAC agents (continuous and discrete) learn: ``self.log_alpha``, a
    ``LogAlpha`` the subclass creates, stepped after each actor update with the gradient the
    engine returns (frozen with ``adaptive_alpha=False``)."""

    log_alpha: LogAlpha

    @property
    def alpha(self) -> float:
        return self.log_alpha.value

    def set_learning_rates(self, step: int) -> None:
        """As ``Agent.set_learning_rates``, and the temperature's (``alpha_optimizer``)."""
        super().set_learning_rates(step)
        self.log_alpha.lr = self.config.alpha_optimizer.lr_at(step)

    def _after_actor_update(self, alpha_gradient: float) -> None:
        if self.config.adaptive_alpha:
            self.log_alpha.step(alpha_gradient)


class SAC(LearnedTemperature, Agent):
    """Actor, twin critics, target critics and the temperature, with SAC's updates."""

    algorithm = Algorithm.SAC
    actor_outputs_per_action = 2

    def __init__(self, config: Config, observation_dim: int, action_dim: int, seed: int, *, dtype=np.float32):
        super().__init__(config, observation_dim, action_dim, seed, dtype=dtype)
        self.log_alpha = LogAlpha(config.alpha, config.alpha_optimizer)

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """Actions (N, A) = tanh(mean) from actor outputs (N, 2A)."""
        pre = np.ascontiguousarray(pre, self.dtype)
        actions = np.empty((pre.shape[0], self.action_dim), self.dtype)
        head_forward(pre, None, actions, np.empty(pre.shape[0], self.dtype), self.config.log_std_min,
                     self.config.log_std_max)
        return actions
