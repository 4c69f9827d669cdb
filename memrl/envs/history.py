"""History inputs: the previous action and the previous reward appended to each observation.

Some POMDPs cannot be solved from observations alone (a bandit's only signal is its reward; a
velocity-only pendulum's angle follows from the velocities and the torques applied), so
recurrent agents commonly see ``[o_t, a_{t-1}, r_{t-1}]`` (pomdp-baselines, Ni et al. 2022,
``policies/models/recurrent_critic.py``; AMAGO, Grigsby et al. 2024). Here the environment does
it: :class:`HistoryInputs` wraps any memrl-protocol environment and returns

    [o_t, encode(a_{t-1}), r_{t-1}]          (either extra part optional)

with ``encode`` the one-hot vector of each component's index for discrete actions, or the action
clipped to the environment's bounds (memrl's agents act in [-1, 1]) for continuous ones
(``memrl.spaces.encode_previous_action``); both extras are zero right after a reset. The replay,
the sequence sampler and the updates then need nothing new: an observation carries its history
inputs, and a transition's next observation carries its own action and reward. An exported
policy appends them itself (``memrl.policy.Policy.act(obs, reward=...)``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from memrl.spaces import action_encoding_size, encode_previous_action


class HistoryInputs:
    """``env`` (memrl's environment protocol) with the previous action and/or reward appended to
    its observations (module doc). Everything else (action space, episode limit, checkpoints)
    is the wrapped environment's: the wrapper keeps no state of its own, since each observation
    it returns is built from the step that produced it."""

    def __init__(self, env: Any, *, previous_action: bool, previous_reward: bool):
        if not (previous_action or previous_reward):
            raise ValueError("previous_action, previous_reward: expected at least one history input")
        self.env = env
        self.previous_action, self.previous_reward = bool(previous_action), bool(previous_reward)
        self.action_nvec = getattr(env, "action_nvec", None)
        self.action_dim = env.action_dim
        self.action_low, self.action_high = env.action_low, env.action_high
        self.inner_observation_dim = env.observation_dim
        self.action_size = action_encoding_size(self.action_nvec, env.action_dim) if previous_action else 0
        self.observation_dim = env.observation_dim + self.action_size + int(previous_reward)
        low, high = [np.asarray(env.observation_low, np.float32)], [np.asarray(env.observation_high, np.float32)]
        if previous_action:
            if self.action_nvec is None:
                low.append(np.asarray(env.action_low, np.float32))
                high.append(np.asarray(env.action_high, np.float32))
            else:
                low.append(np.zeros(self.action_size, np.float32))
                high.append(np.ones(self.action_size, np.float32))
        if previous_reward:
            low.append(np.full(1, -np.inf, np.float32))
            high.append(np.full(1, np.inf, np.float32))
        self.observation_low, self.observation_high = np.concatenate(low), np.concatenate(high)
        for array in (self.observation_low, self.observation_high):
            array.flags.writeable = False
        self.episode_step_limit = env.episode_step_limit

    def _augment(self, obs, action, reward) -> np.ndarray:
        out = np.zeros(self.observation_dim, np.float32)
        O = self.inner_observation_dim
        out[:O] = obs
        if action is not None:
            if self.previous_action:
                encode_previous_action(np.asarray(action, np.float32), self.action_nvec, self.action_low,
                                       self.action_high, out[O:O + self.action_size])
            if self.previous_reward:
                out[-1] = reward
        return out

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        return self._augment(obs, None, 0.0), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._augment(obs, action, reward), reward, terminated, truncated, info

    def __getattr__(self, name: str) -> Any:
        # everything else (episode_step, state_dict, close, horizon, ...) is the wrapped env's
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def __repr__(self) -> str:
        return (f"HistoryInputs({self.env!r}, previous_action={self.previous_action}, "
                f"previous_reward={self.previous_reward})")
