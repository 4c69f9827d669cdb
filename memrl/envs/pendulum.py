"""Pendulum swing-up (RLtools' ``rl/environments/pendulum``, Gymnasium's ``Pendulum-v1``), with
partially observable variants.

State: angle ``theta`` (0 = upright) and angular velocity ``theta_dot``. Constants g=10, m=1,
l=1, dt=0.05, max_speed=8, max_torque=2. Each step, with the action ``a`` normalised to [-1, 1]:

* torque ``u = 2 * clip(a, -1, 1)``;
* reward on the state *before* the transition:
  ``-(angle_normalize(theta)^2 + 0.1 * theta_dot^2 + 0.001 * u^2)``;
* ``theta_dot' = clip(theta_dot + (3 g / (2 l) * sin(theta) + 3 / (m l^2) * u) * dt, -8, 8)``,
  ``theta' = theta + theta_dot' * dt``.

Episodes start from ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``, never terminate and are
truncated after ``episode_step_limit`` steps (200).

Observations (float32):

* ``observation="full"``: ``[cos theta, sin theta, theta_dot]`` (Markov);
* ``observation="position_only"``: ``[cos theta, sin theta]`` (velocity must be inferred from
  consecutive observations: a POMDP that needs memory);
* ``observation="velocity_only"``: ``[theta_dot]`` (the angle must be integrated: a POMDP).

Parity: the dynamics, the reward and the initial-state distribution are Gymnasium's Pendulum-v1
with the action scaled by ``max_torque`` (for the same seed, ``reset`` even draws the same initial
state as Gymnasium's ``reset(seed=...)``). RLtools differs only in charging the control cost on the
*unclipped* action; this environment clips first, as Gymnasium does (identical for actions in
[-1, 1], e.g. any tanh policy).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from memrl._checks import check_int, check_seed
from memrl.envs.memory import _action_value

OBSERVATIONS = ("full", "position_only", "velocity_only")

GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0

# Precomputed factors of the velocity update.
_GRAVITY_FACTOR = 3.0 * GRAVITY / (2.0 * LENGTH)
_TORQUE_FACTOR = 3.0 / (MASS * LENGTH**2)
_TWO_PI = 2.0 * math.pi


def _read_only(values: list[float]) -> npt.NDArray[np.float32]:
    array = np.array(values, dtype=np.float32)
    array.flags.writeable = False
    return array


_OBSERVATION_HIGH = {
    "full": [1.0, 1.0, MAX_SPEED],
    "position_only": [1.0, 1.0],
    "velocity_only": [MAX_SPEED],
}


def angle_normalize(theta: float) -> float:
    """``theta`` wrapped into [-pi, pi) (Gymnasium's ``angle_normalize``)."""
    return ((theta + math.pi) % _TWO_PI) - math.pi


class PendulumEnv:
    """Swing a pendulum up and keep it upright, observing all or part of its state.

    ``observation`` selects the observed components (``"full"``, ``"position_only"``,
    ``"velocity_only"``, see the module docstring). ``seed`` seeds the environment's own PCG64
    generator; ``reset(seed=...)`` reseeds it. Each observation is a new float32 array of shape
    ``(observation_dim,)``.
    """

    action_dim = 1
    action_low = _read_only([-1.0])
    action_high = _read_only([1.0])

    def __init__(
        self,
        observation: str = "full",
        episode_step_limit: int = 200,
        seed: int | None = None,
    ) -> None:
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation: expected one of {OBSERVATIONS}, got {observation!r}")
        self.observation = observation
        self._observe_position = observation != "velocity_only"
        self._observe_velocity = observation != "position_only"
        high = _OBSERVATION_HIGH[observation]
        self.observation_dim = len(high)
        self.observation_low = _read_only([-h for h in high])
        self.observation_high = _read_only(high)
        self.episode_step_limit = check_int("episode_step_limit", episode_step_limit, 1)
        self._rng = np.random.Generator(np.random.PCG64(check_seed("seed", seed)))
        self._theta = 0.0
        self._theta_dot = 0.0
        self._episode_step = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int | None = None) -> tuple[npt.NDArray[np.float32], dict]:
        """Start an episode from ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``. Returns ``(obs, {})``."""
        seed = check_seed("seed", seed)
        if seed is not None:
            self._rng = np.random.Generator(np.random.PCG64(seed))
        # Same draws, in the same order, as Gymnasium's ``np_random.uniform([-pi, -1], [pi, 1])``.
        self._theta = float(self._rng.uniform(-math.pi, math.pi))
        self._theta_dot = float(self._rng.uniform(-1.0, 1.0))
        self._episode_step = 0
        self._needs_reset = False
        return self._observe(), {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict]:
        """Apply torque ``2 * clip(action, -1, 1)`` for one ``dt``.

        ``action`` is a real number or an array of shape (1,). Returns
        ``(obs, reward, terminated, truncated, info)``; ``terminated`` is always False,
        ``truncated`` becomes True on the ``episode_step_limit``-th step of the episode.
        """
        if self._needs_reset:
            raise RuntimeError(
                "step: the episode is over (or was never started); call reset() before step()"
            )
        value = _action_value(action)
        u = MAX_TORQUE * (-1.0 if value < -1.0 else (1.0 if value > 1.0 else value))
        theta = self._theta
        theta_dot = self._theta_dot
        wrapped = ((theta + math.pi) % _TWO_PI) - math.pi
        reward = -(wrapped * wrapped + 0.1 * theta_dot * theta_dot + 0.001 * u * u)

        theta_dot = theta_dot + (_GRAVITY_FACTOR * math.sin(theta) + _TORQUE_FACTOR * u) * DT
        if theta_dot > MAX_SPEED:
            theta_dot = MAX_SPEED
        elif theta_dot < -MAX_SPEED:
            theta_dot = -MAX_SPEED
        self._theta = theta + theta_dot * DT
        self._theta_dot = theta_dot

        self._episode_step += 1
        truncated = self._episode_step >= self.episode_step_limit
        self._needs_reset = truncated
        return self._observe(), reward, False, truncated, {}

    def _observe(self) -> npt.NDArray[np.float32]:
        if not self._observe_position:
            return np.array((self._theta_dot,), dtype=np.float32)
        if not self._observe_velocity:
            return np.array((math.cos(self._theta), math.sin(self._theta)), dtype=np.float32)
        return np.array((math.cos(self._theta), math.sin(self._theta), self._theta_dot), dtype=np.float32)

    # ------------------------------------------------------------------ inspection, checkpoints
    @property
    def episode_step(self) -> int:
        """Steps taken in the current episode."""
        return self._episode_step

    @property
    def state(self) -> tuple[float, float]:
        """The physical state ``(theta, theta_dot)`` (theta unwrapped, as integrated)."""
        return self._theta, self._theta_dot

    def set_state(self, theta: float, theta_dot: float) -> npt.NDArray[np.float32]:
        """Put the pendulum at ``(theta, theta_dot)`` within the current episode; returns its observation.

        ``theta_dot`` must lie in [-8, 8] (the dynamics never leave that range).
        """
        theta = float(theta)
        theta_dot = float(theta_dot)
        if not math.isfinite(theta):
            raise ValueError(f"theta: expected a finite number, got {theta}")
        if not -MAX_SPEED <= theta_dot <= MAX_SPEED:  # also rejects NaN
            raise ValueError(f"theta_dot: expected a number in [-{MAX_SPEED}, {MAX_SPEED}], got {theta_dot}")
        self._theta = theta
        self._theta_dot = theta_dot
        return self._observe()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this environment bit-for-bit (configuration included)."""
        return {
            "observation": self.observation,
            "episode_step_limit": self.episode_step_limit,
            "theta": self._theta,
            "theta_dot": self._theta_dot,
            "episode_step": self._episode_step,
            "needs_reset": self._needs_reset,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the configuration must match this environment's."""
        for key in ("observation", "episode_step_limit"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state[{key!r}]: expected {getattr(self, key)!r}, got {state[key]!r}")
        theta = float(state["theta"])
        theta_dot = float(state["theta_dot"])
        if not math.isfinite(theta):
            raise ValueError(f"state['theta']: expected a finite number, got {theta}")
        if not -MAX_SPEED <= theta_dot <= MAX_SPEED:
            raise ValueError(f"state['theta_dot']: expected a number in [-{MAX_SPEED}, {MAX_SPEED}], got {theta_dot}")
        episode_step = int(state["episode_step"])
        if episode_step < 0:
            raise ValueError(f"state['episode_step']: expected a non-negative integer, got {episode_step}")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng_state"]

        self._theta = theta
        self._theta_dot = theta_dot
        self._episode_step = episode_step
        self._needs_reset = bool(state["needs_reset"])
        self._rng = rng

    def __repr__(self) -> str:
        return f"PendulumEnv(observation={self.observation!r}, episode_step_limit={self.episode_step_limit})"
