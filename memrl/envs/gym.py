"""Gymnasium interoperability (optional: ``pip install memrl[gym]``).

Two directions:

* :class:`GymnasiumEnv` adapts a Gymnasium environment to memrl's environment protocol (flat
  float32 observations, ``terminated`` and ``truncated`` kept apart), so memrl's agents can train
  on it: observations ``Box``, ``Discrete``, ``MultiDiscrete`` or ``Tuple``s of them (encoded by
  ``memrl.spaces``: flattened, one-hot), actions a bounded ``Box`` (normalised to [-1, 1]) or
  ``Discrete`` / ``MultiDiscrete`` (category indices, for discrete SAC). :func:`make_env` builds
  one from a name such as ``"gymnasium:Pendulum-v1"``.
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

# pomdp-baselines' classic POMDPs on Gymnasium (Ni et al. 2022, envs/pomdp/__init__.py): a
# Gymnasium environment with only some observation entries kept. Id -> (base id, kept entries,
# max_episode_steps). CartPole-v1's observation is [x, x_dot, theta, theta_dot]: "P" keeps the
# positions (x, theta), "V" the velocities (x_dot, theta_dot). (pomdp-baselines masked
# CartPole-v0, 200 steps; these mask Gymnasium's CartPole-v1, 500 steps.)
POMDP_IDS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "memrl/CartPole-P-v0": ("CartPole-v1", (0, 2), 500),
    "memrl/CartPole-V-v0": ("CartPole-v1", (1, 3), 500),
}

# Where an environment that declares no max_episode_steps says how long its episodes last
# (POPGym's environments: ``max_episode_length``; Concentration: ``episode_length``; HigherLower
# ends when its deck of ``deck_size`` cards is dealt).
EPISODE_LENGTH_ATTRIBUTES = ("max_episode_length", "episode_length", "deck_size")


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
    existing ``gymnasium.Env``. Observations are encoded by ``memrl.spaces`` into float32 arrays
    of shape ``(observation_dim,)`` (Box flattened, Discrete and MultiDiscrete one-hot, Tuples
    concatenated); ``observation_low`` / ``observation_high`` are the encoded bounds (possibly
    infinite). Actions:

    * a floating-point ``Box`` with finite bounds: actions are given in [-1, 1], clipped, then
      mapped affinely onto ``[action_space.low, action_space.high]``; ``action_low`` /
      ``action_high`` are -1 and 1, ``action_nvec`` is None;
    * ``Discrete`` or ``MultiDiscrete``: actions are ``action_dim`` category indices (floats
      holding integers), ``action_nvec`` the categories per component, ``action_low`` 0 and
      ``action_high`` ``nvec - 1``; the environment gets ``start + index`` in its own shape.

    Any other space raises ``memrl.spaces.UnsupportedSpace`` (a ValueError) naming it.

    ``episode_step_limit`` defaults to the env spec's ``max_episode_steps`` (or, for environments
    that declare none, such as POPGym's, the first of ``EPISODE_LENGTH_ATTRIBUTES`` the
    unwrapped environment has); given explicitly, it is passed to ``gymnasium.make`` as
    ``max_episode_steps`` (for an id) and the adapter truncates episodes at that many steps
    itself too. ``seed`` seeds the first ``reset()``; ``reset(seed=s)`` reseeds through
    ``env.reset(seed=s)``, a later ``reset()`` without a seed continues the environment's
    generator. Gymnasium environments cannot be checkpointed in general: ``state_dict`` raises
    ``NotImplementedError``.
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
        from memrl.spaces import ActionDecoder, ObservationEncoder, describe_action_space

        if episode_step_limit is not None:
            episode_step_limit = check_int("episode_step_limit", episode_step_limit, 1)
        self._pending_seed = check_seed("seed", seed)
        if isinstance(env_or_id, str):
            if env_or_id in GYMNASIUM_IDS or env_or_id in POMDP_IDS:
                register_environments()
            if env_or_id.startswith("popgym-"):
                _import_popgym()
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

        where = f" in {self.name}"
        self.observation_encoder = ObservationEncoder.for_space(env.observation_space, where)
        self.action_space_description = describe_action_space(env.action_space, where)
        self.action_decoder = ActionDecoder(self.action_space_description)

        self.observation_dim = self.observation_encoder.size
        self.action_dim = self.action_decoder.action_dim
        self.observation_low = self.observation_encoder.low.copy()
        self.observation_high = self.observation_encoder.high.copy()
        if self.action_decoder.discrete:
            self.action_nvec = list(self.action_decoder.nvec)
            self.action_low = np.zeros((self.action_dim,), dtype=np.float32)
            self.action_high = np.array(self.action_nvec, dtype=np.float32) - 1
        else:
            self.action_nvec = None
            self.action_low = np.full((self.action_dim,), -1.0, dtype=np.float32)
            self.action_high = np.full((self.action_dim,), 1.0, dtype=np.float32)
        for array in (self.observation_low, self.observation_high, self.action_low, self.action_high):
            array.flags.writeable = False

        if episode_step_limit is None:
            spec_limit = env.spec.max_episode_steps if env.spec is not None else None
            for attribute in EPISODE_LENGTH_ATTRIBUTES:
                if spec_limit is None and isinstance(getattr(env.unwrapped, attribute, None), int):
                    spec_limit = getattr(env.unwrapped, attribute)
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

    def env_action(self, action: Any) -> Any:
        """The action the wrapped env receives for the agent's ``action`` (``memrl.spaces.ActionDecoder``:
        checked, then clipped and rescaled, or category indices offset by the space's start)."""
        return self.action_decoder.decode(action)

    def _flatten(self, obs: Any) -> npt.NDArray[np.float32]:
        return self.observation_encoder.encode(obs)

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
    for env_id, (base, kept, max_episode_steps) in POMDP_IDS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(id=env_id, entry_point=f"{__name__}:make_masked", max_episode_steps=max_episode_steps,
                           kwargs={"base": base, "kept": list(kept)})
    return list(GYMNASIUM_IDS) + list(POMDP_IDS)


def make_masked(base: str, kept: list[int], render_mode: str | None = None, **kwargs: Any) -> Any:
    """``gymnasium.make(base, **kwargs)`` observing only the entries ``kept`` of its flat Box
    observation (pomdp-baselines' ``POMDPWrapper``): a ``gymnasium.ObservationWrapper`` whose
    observation space is the Box of those entries."""
    gymnasium = _gymnasium()
    env = gymnasium.make(base, render_mode=render_mode, **kwargs)
    space = env.observation_space
    if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"base: expected an environment with a flat Box observation space, got {space} in {base}")
    kept = [check_int(f"kept[{i}]", k, 0) for i, k in enumerate(kept)]
    if not kept or max(kept) >= space.shape[0]:
        raise ValueError(f"kept: expected entries of the {space.shape[0]} observed in {base}, got {kept}")
    if "MaskedObservation" not in _LAZY:
        class MaskedObservation(gymnasium.ObservationWrapper):
            """Keeps the entries ``kept`` of a flat Box observation (pomdp-baselines' POMDP wrapper)."""

            def __init__(self, env, kept):
                super().__init__(env)
                self.kept = np.array(kept, np.int64)
                inner = env.observation_space
                self.observation_space = gymnasium.spaces.Box(inner.low[self.kept], inner.high[self.kept],
                                                              dtype=inner.dtype)

            def observation(self, observation):
                return np.asarray(observation)[self.kept]

        MaskedObservation.__module__ = __name__
        _LAZY["MaskedObservation"] = MaskedObservation
    return _LAZY["MaskedObservation"](env, kept)


def _import_popgym() -> None:
    """POPGym registers its environments ("popgym-<Name>-v0") when imported (optional extra)."""
    try:
        import popgym  # noqa: F401
    except ImportError:
        raise ImportError("POPGym environments need POPGym, an optional dependency: pip install 'memrl[popgym]' "
                          "(or pip install popgym)") from None


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
__all__ = ["GYMNASIUM_IDS", "POMDP_IDS", "GymnasiumEnv", "make_env", "make_masked", "register_environments"]
