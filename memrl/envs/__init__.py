"""Environments with a Gymnasium-style API (``reset`` / ``step``), a registry to make them by name,
and a configuration's environment: ``build_environment(config, seed)`` (memrl's own or
``"gymnasium:<id>"``, with one-line errors for a wrong name or keyword) and
``environment_spec(config, env)`` (what an exported policy records of it)."""
from __future__ import annotations

import inspect
import json
import re
from typing import Any, Callable

import numpy as np

from memrl.envs.memory import MemoryEnv
from memrl.envs.pendulum import PendulumEnv

ENVIRONMENTS: dict[str, Callable[..., Any]] = {"memory": MemoryEnv, "pendulum": PendulumEnv}


def make(name: str, **kwargs: Any) -> Any:
    """Build the environment registered as ``name`` with ``kwargs`` (e.g. ``make("memory", horizon=10)``)."""
    try:
        factory = ENVIRONMENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"name: expected one of {sorted(ENVIRONMENTS)}, got {name!r}") from None
    return factory(**kwargs)


def build_environment(config, seed: int):
    """``config``'s environment, seeded. A mistake in the environment's name or keywords raises a
    one-line ValueError naming it (Gymnasium's own errors and a keyword the environment does not
    take included); a missing optional dependency raises ImportError."""
    try:
        from memrl.envs.gym import make_env

        return make_env(config.environment, **config.environment_kwargs, seed=seed)
    except TypeError as exc:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match is None:
            raise
        accepted = _accepted_keywords(config.environment)
        hint = f" (accepted: {', '.join(accepted)})" if accepted else ""
        raise ValueError(f"environment_kwargs: {config.environment!r} takes no keyword {match.group(1)!r}{hint}") \
            from None
    except ImportError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("gymnasium"):
            raise
        raise ValueError(f"environment: {config.environment!r}: {exc}") from None


def _accepted_keywords(name: str) -> list[str]:
    factory = ENVIRONMENTS.get(name)
    if factory is None:
        return []
    return [p for p in inspect.signature(factory).parameters if p != "seed"]


def environment_spec(config, env) -> dict:
    """What an exported policy records of its environment: ``name`` and ``kwargs`` (as in the
    config), ``observation_shape``, and the action space in the environment's units
    (``action_shape``, ``action_dtype``, ``action_low``, ``action_high``, flattened). memrl's agents
    act in [-1, 1]; an action ``a`` means ``clip(offset + scale * clip(a, -1, 1), low, high)`` with
    ``offset = (high + low) / 2`` and ``scale = (high - low) / 2`` (the Gymnasium adapter's map)."""
    spec = {"name": config.environment, "kwargs": json.loads(json.dumps(config.environment_kwargs))}
    gym_env = getattr(env, "env", None)  # memrl.envs.gym.GymnasiumEnv wraps a gymnasium.Env
    if gym_env is not None and hasattr(gym_env, "action_space"):
        space = gym_env.action_space
        spec.update(observation_shape=list(gym_env.observation_space.shape), action_shape=list(space.shape),
                    action_dtype=np.dtype(space.dtype).name,
                    action_low=np.asarray(space.low, np.float64).reshape(-1).tolist(),
                    action_high=np.asarray(space.high, np.float64).reshape(-1).tolist())
    else:
        spec.update(observation_shape=[int(env.observation_dim)], action_shape=[int(env.action_dim)],
                    action_dtype="float32",
                    action_low=np.asarray(env.action_low, np.float64).reshape(-1).tolist(),
                    action_high=np.asarray(env.action_high, np.float64).reshape(-1).tolist())
    return spec


# Gymnasium interoperability (``GymnasiumEnv``, ``make_env``, ``register_environments``) lives in
# ``memrl.envs.gym``; it needs the optional ``gymnasium`` dependency only when used. ``import memrl``
# registers these environments with Gymnasium when it is installed ("memrl/Memory-v0", ...).
__all__ = ["ENVIRONMENTS", "MemoryEnv", "PendulumEnv", "build_environment", "environment_spec", "make"]
