"""The memory environment of RLtools' memory chapter: report a statistic of recent 0/1 inputs.

Each step the agent observes one bit (1 with probability ``input_probability``) and must output a
number in [-1, 1] that summarises the last ``horizon`` bits it has seen, including the current one:

* ``mode="count_input"`` (the chapter): the number of ones among the last ``horizon`` bits,
  divided by ``horizon``;
* ``mode="count_steps_since_last_input"``: the number of steps since the most recent one
  (0 if the current bit is a one, ``horizon`` if there is no one in the window), divided by
  ``horizon``.

The reward is ``-10 * |clip(action, -1, 1) - target|``, computed on the state *before* the
transition (the state whose newest bit the agent just observed); then the window shifts by one
and a new bit is drawn. Episodes never terminate; they are truncated after
``episode_step_limit`` steps.

Parity with RLtools (``include/rl_tools/rl/environments/memory``): for ``horizon=10`` and
``mode="count_input"`` the dynamics and reward are identical. RLtools divides the count by a
hard-coded 10 and ignores its ``mode``; here the divisor is ``horizon`` (so the optimal action
always lies in [0, 1]) and both modes are implemented.

The API follows Gymnasium (``reset`` / ``step`` with ``terminated`` and ``truncated``) without
depending on it.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from memrl._checks import check_int, check_seed

MODES = ("count_input", "count_steps_since_last_input")
REWARD_SCALE = 10.0


def _read_only(value: float) -> npt.NDArray[np.float32]:
    array = np.full((1,), value, dtype=np.float32)
    array.flags.writeable = False
    return array


# The only two observations there are. ``step`` hands out these shared read-only arrays instead of
# allocating a new one per step; writing into an observation raises instead of corrupting them.
_OBSERVATION_OF_BIT = (_read_only(0.0), _read_only(1.0))


def _action_value(action: Any) -> float:
    """The scalar in ``action`` (a real number or an array of shape (1,)), checked finite."""
    if isinstance(action, (float, int)) and not isinstance(action, bool):
        value = float(action)
    elif isinstance(action, np.ndarray):
        if action.shape != (1,) and action.shape != ():
            raise ValueError(f"action: expected a scalar or shape (1,), got shape {action.shape}")
        if action.dtype.kind not in "fiu":
            raise TypeError(f"action: expected a real number, got dtype {action.dtype}")
        value = float(action.item())
    elif isinstance(action, numbers.Real) and not isinstance(action, bool):
        value = float(action)  # NumPy scalars and other real number types
    elif isinstance(action, (list, tuple)):
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"action: expected a real number or an array of shape (1,), got {action!r}") from None
        if array.shape != (1,) and array.shape != ():
            raise ValueError(f"action: expected a scalar or shape (1,), got shape {array.shape}")
        value = float(array.item())
    else:
        raise TypeError(f"action: expected a real number or an array of shape (1,), got {action!r}")
    if not math.isfinite(value):
        raise ValueError(f"action: expected a finite number, got {value}")
    return value


class MemoryEnv:
    """Observe a stream of bits; act with a summary of the last ``horizon`` of them.

    ``input_probability=None`` picks RLtools' default: 0.5 if ``horizon <= 4`` else
    ``2 / horizon``. ``seed`` seeds the environment's own PCG64 generator; ``reset(seed=...)``
    reseeds it. Observations are shared read-only float32 arrays of shape (1,).
    """

    observation_dim = 1
    action_dim = 1
    observation_low = _read_only(0.0)
    observation_high = _read_only(1.0)
    action_low = _read_only(-1.0)
    action_high = _read_only(1.0)

    def __init__(
        self,
        horizon: int = 10,
        input_probability: float | None = None,
        episode_step_limit: int = 2000,
        mode: str = "count_input",
        seed: int | None = None,
    ) -> None:
        self.horizon = check_int("horizon", horizon, 1)
        if input_probability is None:
            input_probability = 0.5 if self.horizon <= 4 else 2.0 / self.horizon
        if isinstance(input_probability, bool) or not isinstance(input_probability, numbers.Real):
            raise TypeError(f"input_probability: expected a number in [0, 1] or None, got {input_probability!r}")
        if not 0.0 <= float(input_probability) <= 1.0:  # also rejects NaN
            raise ValueError(f"input_probability: expected a number in [0, 1], got {input_probability}")
        self.input_probability = float(input_probability)
        self.episode_step_limit = check_int("episode_step_limit", episode_step_limit, 1)
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self._count_steps_since_last_input = mode == "count_steps_since_last_input"
        self._rng = np.random.Generator(np.random.PCG64(check_seed("seed", seed)))

        # History as a ring: ``_history[_newest]`` is the bit the agent observes now, the slot
        # after it (mod horizon) the oldest. ``_ones`` counts ones in the window and
        # ``_steps_since_one`` is the distance to the newest one, capped at ``horizon``.
        self._history = [0] * self.horizon
        self._newest = self.horizon - 1
        self._ones = 0
        self._steps_since_one = self.horizon
        self._episode_step = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int | None = None) -> tuple[npt.NDArray[np.float32], dict]:
        """Start an episode: a window of zeros whose newest bit is then drawn. Returns ``(obs, {})``."""
        seed = check_seed("seed", seed)
        if seed is not None:
            self._rng = np.random.Generator(np.random.PCG64(seed))
        self._history = [0] * self.horizon
        self._newest = self.horizon - 1
        bit = 1 if self._rng.random() < self.input_probability else 0
        self._history[self._newest] = bit
        self._ones = bit
        self._steps_since_one = 0 if bit else self.horizon
        self._episode_step = 0
        self._needs_reset = False
        return _OBSERVATION_OF_BIT[bit], {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict]:
        """Score ``action`` against the current window, then shift in a new bit.

        Returns ``(obs, reward, terminated, truncated, info)``; ``terminated`` is always False,
        ``truncated`` becomes True on the ``episode_step_limit``-th step of the episode.
        """
        if self._needs_reset:
            raise RuntimeError(
                "step: the episode is over (or was never started); call reset() before step()"
            )
        value = _action_value(action)
        clipped = -1.0 if value < -1.0 else (1.0 if value > 1.0 else value)
        reward = -REWARD_SCALE * abs(clipped - self.target())

        # Shift: the oldest slot becomes the newest.
        horizon = self.horizon
        newest = self._newest + 1
        if newest == horizon:
            newest = 0
        self._ones -= self._history[newest]
        bit = 1 if self._rng.random() < self.input_probability else 0
        self._history[newest] = bit
        self._newest = newest
        self._ones += bit
        if bit:
            self._steps_since_one = 0
        elif self._steps_since_one < horizon:
            self._steps_since_one += 1

        self._episode_step += 1
        truncated = self._episode_step >= self.episode_step_limit
        self._needs_reset = truncated
        return _OBSERVATION_OF_BIT[bit], reward, False, truncated, {}

    def target(self) -> float:
        """The optimal action for the current window (what ``step`` scores against), in [0, 1]."""
        if self._count_steps_since_last_input:
            return self._steps_since_one / self.horizon
        return self._ones / self.horizon

    # ------------------------------------------------------------------ inspection, checkpoints
    @property
    def episode_step(self) -> int:
        """Steps taken in the current episode."""
        return self._episode_step

    def history(self) -> npt.NDArray[np.uint8]:
        """The window of bits, oldest first (a copy)."""
        start = self._newest + 1
        return np.array(self._history[start:] + self._history[:start], dtype=np.uint8)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this environment bit-for-bit (configuration included)."""
        return {
            "horizon": self.horizon,
            "input_probability": self.input_probability,
            "episode_step_limit": self.episode_step_limit,
            "mode": self.mode,
            "history": np.array(self._history, dtype=np.uint8),
            "position": self._newest,
            "episode_step": self._episode_step,
            "needs_reset": self._needs_reset,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the configuration must match this environment's."""
        for key in ("horizon", "input_probability", "episode_step_limit", "mode"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state[{key!r}]: expected {getattr(self, key)!r}, got {state[key]!r}")
        history = np.asarray(state["history"])
        if history.shape != (self.horizon,) or not np.isin(history, (0, 1)).all():
            raise ValueError(f"state['history']: expected {self.horizon} bits, got {history!r}")
        position = int(state["position"])
        if not 0 <= position < self.horizon:
            raise ValueError(f"state['position']: expected an integer in [0, {self.horizon}), got {position}")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng_state"]

        self._history = [int(bit) for bit in history]
        self._newest = position
        self._ones = sum(self._history)
        self._steps_since_one = self.horizon
        for distance in range(self.horizon):
            if self._history[(position - distance) % self.horizon]:
                self._steps_since_one = distance
                break
        self._episode_step = int(state["episode_step"])
        self._needs_reset = bool(state["needs_reset"])
        self._rng = rng

    def __repr__(self) -> str:
        return (
            f"MemoryEnv(horizon={self.horizon}, input_probability={self.input_probability}, "
            f"episode_step_limit={self.episode_step_limit}, mode={self.mode!r})"
        )
