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

from memrl.envs.history import HistoryInputs
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
    """``config``'s environment, seeded, with its history inputs (``previous_action_input``,
    ``previous_reward_input``: :class:`memrl.envs.history.HistoryInputs`). A mistake in the
    environment's name or keywords raises a one-line ValueError naming it (Gymnasium's own errors
    and a keyword the environment does not take included), so does a space memrl cannot use
    (``memrl.spaces.UnsupportedSpace``); a missing optional dependency raises ImportError."""
    env = _make_environment(config, seed)
    previous_action = getattr(config, "previous_action_input", False)
    previous_reward = getattr(config, "previous_reward_input", False)
    if previous_action or previous_reward:
        env = HistoryInputs(env, previous_action=previous_action, previous_reward=previous_reward)
    return env


def _make_environment(config, seed: int):
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
    """What an exported policy records of its environment (``memrl.policy``):

    * ``name`` and ``kwargs`` (as in the config);
    * ``observation_space``: the observation's parts as ``memrl.spaces`` describes them (how to
      encode a raw observation), ``observation_shape`` (a single Box's or Discrete's shape, else
      None);
    * ``action_space``: the action space's description (``memrl.spaces``), and for Box actions
      also ``action_shape``, ``action_dtype``, ``action_low``, ``action_high`` (flattened; what
      version-2 policy files recorded). memrl's continuous agents act in [-1, 1]; an action ``a``
      means ``clip(offset + scale * clip(a, -1, 1), low, high)`` with ``offset = (high + low) / 2``
      and ``scale = (high - low) / 2`` (the Gymnasium adapter's map); discrete agents emit
      category indices, offset by the space's ``start``;
    * ``history_inputs``: ``{"previous_action": bool, "previous_reward": bool}``
      (``memrl.envs.history``).
    """
    spec = {"name": config.environment, "kwargs": json.loads(json.dumps(config.environment_kwargs))}
    history = isinstance(env, HistoryInputs)
    inner = env.env if history else env
    encoder = getattr(inner, "observation_encoder", None)  # memrl.envs.gym.GymnasiumEnv
    if encoder is not None:
        parts, action = encoder.parts, inner.action_space_description
        single = len(parts) == 1 and parts[0]["kind"] in ("box", "discrete")
        shape = (parts[0]["shape"] if parts[0]["kind"] == "box" else []) if single else None
    else:
        parts = [{"kind": "box", "shape": [int(inner.observation_dim)]}]
        shape = [int(inner.observation_dim)]
        action = {"kind": "box", "shape": [int(inner.action_dim)], "dtype": "float32",
                  "low": np.asarray(inner.action_low, np.float64).reshape(-1).tolist(),
                  "high": np.asarray(inner.action_high, np.float64).reshape(-1).tolist()}
    spec.update(observation_shape=shape, observation_space=parts, action_space=action,
                history_inputs={"previous_action": bool(history and env.previous_action),
                                "previous_reward": bool(history and env.previous_reward)})
    if action["kind"] == "box":
        spec.update(action_shape=action["shape"], action_dtype=action["dtype"], action_low=action["low"],
                    action_high=action["high"])
    return spec


# Gymnasium interoperability (``GymnasiumEnv``, ``make_env``, ``register_environments``) lives in
# ``memrl.envs.gym``; it needs the optional ``gymnasium`` dependency only when used. ``import memrl``
# registers these environments with Gymnasium when it is installed ("memrl/Memory-v0", ...).
__all__ = ["ENVIRONMENTS", "HistoryInputs", "MemoryEnv", "PendulumEnv", "build_environment", "environment_spec",
           "make"]
