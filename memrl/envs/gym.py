"""Gymnasium interoperability (optional: ``pip install memrl[gym]``).

Two directions:

* :class:`GymnasiumEnv` adapts a Gymnasium environment with a ``Box`` observation space and a
  bounded ``Box`` action space to memrl's environment protocol (flat float32 observations,
  actions normalised to [-1, 1], ``terminated`` and ``truncated`` kept apart), so memrl's agents
  can train on it. :func:`make_env` builds one from a name such as ``"gymnasium:Pendulum-v1"``.
* memrl's own environments are registered with Gymnasium as ``"memrl/Memory-v0"``,
  ``"memrl/Pendulum-v0"``, ``"memrl/PendulumPosition-v0"`` and ``"memrl/PendulumVelocity-v0"``
  (each a :class:`MemrlGymnasiumEnv`), so ``gymnasium.make`` and Gymnasium tooling accept them.
  As with other third-party environment packages, ``import memrl`` registers them when
  Gymnasium is installed (``gymnasium.register_envs(memrl)`` documents that import), and
  ``gymnasium.make("memrl:memrl/Memory-v0")`` imports memrl itself;
  :func:`register_environments` does the same explicitly.

Gymnasium is imported lazily: importing this module does not need it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from memrl._checks import check_int, check_seed

GYMNASIUM_PREFIX = "gymnasium:"

# Gymnasium id -> (memrl environment name, keyword arguments, max_episode_steps).
GYMNASIUM_IDS: dict[str, tuple[str, dict[str, Any], int]] = {
    "memrl/Memory-v0": ("memory", {}, 2000),
    "memrl/Pendulum-v0": ("pendulum", {"observation": "full"}, 200),
    "memrl/PendulumPosition-v0": ("pendulum", {"observation": "position_only"}, 200),
    "memrl/PendulumVelocity-v0": ("pendulum", {"observation": "velocity_only"}, 200),
}

_SUPPORTED = (
    "memrl supports a gymnasium.spaces.Box observation space (flattened to float32) and a "
    "floating-point gymnasium.spaces.Box action space with finite bounds"
)


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise ImportError(
            "memrl.envs.gym needs Gymnasium, an optional dependency: pip install 'memrl[gym]' "
            "(or pip install gymnasium)"
        ) from None
    return gymnasium


# ---------------------------------------------------------------------------------------------
# Gymnasium environment -> memrl protocol


class GymnasiumEnv:
    """A Gymnasium environment seen through memrl's environment protocol.

    ``env_or_id`` is a Gymnasium id (made with ``gymnasium.make(env_or_id, **make_kwargs)``) or an
    existing ``gymnasium.Env``. The observation space must be a ``Box`` (observations are
    flattened to float32 arrays of shape ``(observation_dim,)``); the action space a
    floating-point ``Box`` with finite bounds. Actions are given in [-1, 1]: each is clipped to
    [-1, 1], then mapped affinely onto ``[action_space.low, action_space.high]``; the attributes
    ``action_low`` / ``action_high`` are therefore -1 and 1, and ``observation_low`` /
    ``observation_high`` the flattened bounds of the observation space (possibly infinite).

    ``episode_step_limit`` defaults to the env spec's ``max_episode_steps``; given explicitly, it
    is passed to ``gymnasium.make`` as ``max_episode_steps`` (for an id) and the adapter truncates
    episodes at that many steps itself too. ``seed`` seeds the first ``reset()``;
    ``reset(seed=s)`` reseeds through ``env.reset(seed=s)``, a later ``reset()`` without a seed
    continues the environment's generator. Gymnasium environments cannot be checkpointed in
    general: ``state_dict`` raises ``NotImplementedError``.
    """

    def __init__(
        self,
        env_or_id: Any,
        *,
        episode_step_limit: int | None = None,
        seed: int | None = None,
        **make_kwargs: Any,
    ) -> None:
        gymnasium = _gymnasium()
        if episode_step_limit is not None:
            episode_step_limit = check_int("episode_step_limit", episode_step_limit, 1)
        self._pending_seed = check_seed("seed", seed)
        if isinstance(env_or_id, str):
            if env_or_id in GYMNASIUM_IDS:
                register_environments()
            if episode_step_limit is not None:
                make_kwargs.setdefault("max_episode_steps", episode_step_limit)
            env = gymnasium.make(env_or_id, **make_kwargs)
        elif isinstance(env_or_id, gymnasium.Env):
            if make_kwargs:
                raise TypeError(
                    f"make_kwargs: only accepted with a Gymnasium id, got an environment instance "
                    f"and {sorted(make_kwargs)}"
                )
            env = env_or_id
        else:
            raise TypeError(
                f"env_or_id: expected a Gymnasium id (str) or a gymnasium.Env, got {env_or_id!r}"
            )
        self.env = env
        self.name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__

        observation_space, action_space = env.observation_space, env.action_space
        Box = gymnasium.spaces.Box
        if not isinstance(observation_space, Box):
            raise ValueError(
                f"observation_space: expected a gymnasium.spaces.Box, got {observation_space} "
                f"({type(observation_space).__name__}) in {self.name}; {_SUPPORTED}"
            )
        if not isinstance(action_space, Box):
            raise ValueError(
                f"action_space: expected a gymnasium.spaces.Box, got {action_space} "
                f"({type(action_space).__name__}) in {self.name}; {_SUPPORTED}"
            )
        if not np.issubdtype(action_space.dtype, np.floating):
            raise ValueError(
                f"action_space: expected a floating-point Box, got dtype {action_space.dtype} "
                f"({action_space}) in {self.name}; {_SUPPORTED}"
            )
        low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(
                f"action_space: expected finite bounds, got an unbounded Box {action_space} in "
                f"{self.name}; {_SUPPORTED}"
            )

        self.observation_dim = int(math.prod(observation_space.shape))
        self.action_dim = int(math.prod(action_space.shape))
        self.observation_low = np.asarray(observation_space.low, dtype=np.float32).reshape(-1).copy()
        self.observation_high = np.asarray(observation_space.high, dtype=np.float32).reshape(-1).copy()
        self.action_low = np.full((self.action_dim,), -1.0, dtype=np.float32)
        self.action_high = np.full((self.action_dim,), 1.0, dtype=np.float32)
        for array in (self.observation_low, self.observation_high, self.action_low, self.action_high):
            array.flags.writeable = False
        self._action_shape = action_space.shape
        self._action_dtype = action_space.dtype
        self._env_action_low = low
        self._env_action_high = high
        self._action_scale = (high - low) / 2.0
        self._action_offset = (high + low) / 2.0
        self._action_bounds = (low.tolist(), high.tolist(), self._action_scale.tolist(), self._action_offset.tolist())

        if episode_step_limit is None:
            spec_limit = env.spec.max_episode_steps if env.spec is not None else None
            if spec_limit is None:
                raise ValueError(
                    f"episode_step_limit: {self.name} declares no max_episode_steps "
                    "(env.spec.max_episode_steps is None); pass episode_step_limit=N"
                )
            episode_step_limit = check_int("env.spec.max_episode_steps", spec_limit, 1)
        self.episode_step_limit = episode_step_limit
        self._episode_step = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int | None = None) -> tuple[npt.NDArray[np.float32], dict]:
        """Start an episode (``env.reset(seed=...)``). Returns ``(obs, info)``."""
        seed = check_seed("seed", seed)
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        obs, info = self.env.reset(seed=seed)
        self._episode_step = 0
        self._needs_reset = False
        return self._flatten(obs), info

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict]:
        """Clip ``action`` (shape ``(action_dim,)``) to [-1, 1], rescale it to the env's bounds, step.

        Returns ``(obs, reward, terminated, truncated, info)`` with the env's ``terminated`` and
        its ``truncated`` (or True once ``episode_step_limit`` steps were taken).
        """
        if self._needs_reset:
            raise RuntimeError(
                "step: the episode is over (or was never started); call reset() before step()"
            )
        obs, reward, terminated, truncated, info = self.env.step(self.env_action(action))
        self._episode_step += 1
        terminated = bool(terminated)
        truncated = bool(truncated) or self._episode_step >= self.episode_step_limit
        self._needs_reset = terminated or truncated
        return self._flatten(obs), float(reward), terminated, truncated, info

    def env_action(self, action: Any) -> np.ndarray:
        """The action the wrapped env receives for the normalised ``action`` (checked, clipped, rescaled)."""
        try:
            value = action if isinstance(action, np.ndarray) and action.dtype.kind == "f" \
                else np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"action: expected real numbers of shape ({self.action_dim},), got {action!r}") from None
        if value.shape != (self.action_dim,) and not (self.action_dim == 1 and value.shape == ()):
            raise ValueError(f"action: expected shape ({self.action_dim},), got shape {value.shape}")
        # Per entry in Python floats (float64, the same operations NumPy would do): for the few
        # entries of an action this is several times cheaper than a chain of ufunc calls.
        out = []
        for v, lo, hi, scale, offset in zip(value.reshape(-1).tolist(), *self._action_bounds):
            if not math.isfinite(v):
                raise ValueError(f"action: expected finite numbers, got {value.reshape(-1).tolist()}")
            v = offset + scale * (-1.0 if v < -1.0 else (1.0 if v > 1.0 else v))
            out.append(lo if v < lo else (hi if v > hi else v))
        return np.array(out, dtype=self._action_dtype).reshape(self._action_shape)

    def _flatten(self, obs: Any) -> npt.NDArray[np.float32]:
        return np.array(obs, dtype=np.float32).reshape(-1)

    # ------------------------------------------------------------------ inspection, checkpoints
    @property
    def episode_step(self) -> int:
        """Steps taken in the current episode."""
        return self._episode_step

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(
            f"state_dict: Gymnasium environments cannot be checkpointed in general ({self.name}); "
            "recreate the environment and reset it instead"
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(
            f"load_state_dict: Gymnasium environments cannot be checkpointed in general ({self.name})"
        )

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"GymnasiumEnv({self.name!r}, episode_step_limit={self.episode_step_limit})"


def make_env(name: str, **kwargs: Any) -> Any:
    """``"gymnasium:<id>"`` -> ``GymnasiumEnv(<id>, **kwargs)``; any other name -> ``memrl.envs.make``."""
    if isinstance(name, str) and name.startswith(GYMNASIUM_PREFIX):
        return GymnasiumEnv(name[len(GYMNASIUM_PREFIX):], **kwargs)
    from memrl.envs import make

    return make(name, **kwargs)


# ---------------------------------------------------------------------------------------------
# memrl environment -> Gymnasium


def register_environments() -> list[str]:
    """Register memrl's environments with Gymnasium (idempotent); returns their ids.

    Afterwards ``gymnasium.make("memrl/Pendulum-v0")`` builds a :class:`MemrlGymnasiumEnv`
    (keyword arguments of ``make`` go to the memrl environment, e.g. ``horizon=5``).
    """
    gymnasium = _gymnasium()
    for env_id, (name, kwargs, max_episode_steps) in GYMNASIUM_IDS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point=f"{__name__}:MemrlGymnasiumEnv",
            max_episode_steps=max_episode_steps,
            kwargs={"name": name, **kwargs},
        )
    return list(GYMNASIUM_IDS)


def _register_on_import() -> None:
    """``import memrl`` calls this when Gymnasium is installed: register, or skip if it won't import."""
    try:
        register_environments()
    except ImportError:  # installed but broken (e.g. a missing dependency): memrl works without it
        pass


def _build_gymnasium_env_class() -> type:
    gymnasium = _gymnasium()

    class MemrlGymnasiumEnv(gymnasium.Env):
        """A memrl environment (``memrl.envs.make(name, **kwargs)``) as a ``gymnasium.Env``.

        Observation and action spaces are float32 ``Box``es with the environment's declared
        bounds; ``reset(seed=s)`` seeds both Gymnasium's ``np_random`` and the memrl environment.
        The memrl environment truncates its own episodes at its ``episode_step_limit``.
        """

        metadata = {"render_modes": [], "render_fps": 20}

        def __init__(self, name: str, render_mode: str | None = None, **kwargs: Any) -> None:
            if render_mode is not None:
                raise ValueError(f"render_mode: expected None (memrl environments do not render), got {render_mode!r}")
            from memrl.envs import make

            self.render_mode = None
            self.memrl_env = make(name, **kwargs)
            env = self.memrl_env
            self.observation_space = gymnasium.spaces.Box(
                low=env.observation_low, high=env.observation_high, dtype=np.float32
            )
            self.action_space = gymnasium.spaces.Box(low=env.action_low, high=env.action_high, dtype=np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            super().reset(seed=seed)
            obs, info = self.memrl_env.reset(seed=seed)
            return np.array(obs, dtype=np.float32), dict(info)

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
            obs, reward, terminated, truncated, info = self.memrl_env.step(action)
            return np.array(obs, dtype=np.float32), float(reward), bool(terminated), bool(truncated), dict(info)

        def render(self) -> None:
            return None

    # Found by pickle (and Gymnasium's entry point) as memrl.envs.gym.MemrlGymnasiumEnv.
    MemrlGymnasiumEnv.__module__ = __name__
    MemrlGymnasiumEnv.__qualname__ = "MemrlGymnasiumEnv"
    return MemrlGymnasiumEnv


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # ``MemrlGymnasiumEnv`` subclasses ``gymnasium.Env``, so it is built on first access only.
    if name == "MemrlGymnasiumEnv":
        if name not in _LAZY:
            _LAZY[name] = _build_gymnasium_env_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ``MemrlGymnasiumEnv`` is left out so that ``from memrl.envs.gym import *`` does not import Gymnasium.
__all__ = ["GYMNASIUM_IDS", "GymnasiumEnv", "make_env", "register_environments"]
