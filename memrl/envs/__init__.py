"""Environments with a Gymnasium-style API (``reset`` / ``step``), and a registry to make them by name."""
from __future__ import annotations

from typing import Any, Callable

from memrl.envs.memory import MemoryEnv

ENVIRONMENTS: dict[str, Callable[..., Any]] = {"memory": MemoryEnv}


def make(name: str, **kwargs: Any) -> Any:
    """Build the environment registered as ``name`` with ``kwargs`` (e.g. ``make("memory", horizon=10)``)."""
    try:
        factory = ENVIRONMENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"name: expected one of {sorted(ENVIRONMENTS)}, got {name!r}") from None
    return factory(**kwargs)


__all__ = ["ENVIRONMENTS", "MemoryEnv", "make"]
