"""Evaluation: deterministic-policy episodes, and the chapter's count probe on the memory task."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def evaluate(agent, make_env: Callable[[int], object], n_episodes: int, rng: np.random.Generator,
             *, memory_reset_interval: int | None = None) -> dict:
    """Run ``n_episodes`` episodes in lockstep with the deterministic policy (``tanh(mean)``).

    Each episode's environment is seeded from ``rng``. The GRU state starts from zeros and is
    kept through the episode, or wiped every ``memory_reset_interval`` steps (RLtools). Returns
    mean and std of the undiscounted return and of the episode length.
    """
    seeds = rng.integers(0, 2**31 - 1, size=n_episodes)
    environments = [make_env(int(s)) for s in seeds]
    O = environments[0].observation_dim
    obs = np.zeros((n_episodes, O), np.float32)
    for i, env in enumerate(environments):
        obs[i] = env.reset()[0]
    state = agent.actor.initial_state(n_episodes)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, np.int64)
    active = np.ones(n_episodes, bool)
    reset = np.ones(n_episodes, np.uint8)
    t = 0
    while active.any():
        if t > 0:
            reset[:] = 1 if (memory_reset_interval is not None and t % memory_reset_interval == 0) else 0
        actions = agent.act(obs, state, reset, None)
        for i in np.flatnonzero(active):
            next_obs, reward, terminated, truncated, _ = environments[i].step(actions[i])
            returns[i] += reward
            lengths[i] += 1
            if terminated or truncated:
                active[i] = False
            else:
                obs[i] = next_obs
        t += 1
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "mean_length": float(lengths.mean()), "std_length": float(lengths.std()),
            "returns": returns.tolist()}


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def probe_target(bits: np.ndarray, horizon: int, mode: str) -> int:
    """The count the agent should output after seeing ``bits`` (oldest first)."""
    window = bits[-horizon:]
    if mode == "count_input":
        return int(window.sum())
    ones = np.flatnonzero(bits[::-1][:horizon])
    return int(ones[0]) if ones.size else horizon


def count_probe(agent, env, n_probes: int, rng: np.random.Generator, length: int) -> dict:
    """The chapter's manual test: random 0/1 inputs of ``length`` steps from a zero state; correct
    when ``round(horizon * action)`` at the last step equals the count (deterministic policy)."""
    horizon, p, mode = env.horizon, env.input_probability, env.mode
    x = np.zeros((length, 1, 1), np.float32)
    correct, lines = 0, []
    for _ in range(n_probes):
        bits = (rng.random(length) < p).astype(np.int64)
        x[:, 0, 0] = bits
        pre = agent.actor.forward(x, check=False)
        action = agent.deterministic_action(np.ascontiguousarray(pre[-1]))
        prediction = float(action[0, 0]) * horizon
        target = probe_target(bits, horizon, mode)
        ok = _round_half_away(prediction) == target
        correct += ok
        lines.append(f"Count {target} policy prediction {prediction:.6g} {'✅' if ok else '❌'}")
    return {"correct": correct, "total": n_probes, "lines": lines}
