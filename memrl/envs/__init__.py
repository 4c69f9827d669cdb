"""Environments with a Gymnasium-style API (``reset`` / ``step``), and a registry to make them by name."""
from __future__ import annotations

from typing import Any, Callable

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


# Gymnasium interoperability (``GymnasiumEnv``, ``make_env``, ``register_environments``) lives in
# ``memrl.envs.gym``; it needs the optional ``gymnasium`` dependency only when used. ``import memrl``
# registers these environments with Gymnasium when it is installed ("memrl/Memory-v0", ...).
__all__ = ["ENVIRONMENTS", "MemoryEnv", "PendulumEnv", "make"]
