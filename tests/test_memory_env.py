"""MemoryEnv: reward and target against a recomputation from the observed bits, seeding, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl.envs import ENVIRONMENTS, MemoryEnv, make


def expected_target(observed_bits: list[int], horizon: int, mode: str) -> float:
    """Target from the bits observed so far this episode (the window starts as zeros)."""
    window = ([0] * horizon + observed_bits)[-horizon:]
    if mode == "count_input":
        return sum(window) / horizon
    ones_at = [distance for distance, bit in enumerate(reversed(window)) if bit]
    return (ones_at[0] if ones_at else horizon) / horizon


@settings(max_examples=40, deadline=None)
@given(
    horizon=st.integers(1, 12),
    input_probability=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    mode=st.sampled_from(["count_input", "count_steps_since_last_input"]),
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=40),
)
def test_reward_matches_recomputation_from_observed_bits(horizon, input_probability, mode, seed, actions):
    env = MemoryEnv(horizon=horizon, input_probability=input_probability, mode=mode, seed=seed)
    obs, info = env.reset()
    assert obs.shape == (1,) and obs.dtype == np.float32 and info == {}
    observed = [int(obs[0])]
    for action in actions:
        target = expected_target(observed, horizon, mode)
        assert env.target() == pytest.approx(target, abs=1e-12)
        obs, reward, terminated, truncated, _ = env.step(np.array([action], dtype=np.float32))
        clipped = min(max(float(np.float32(action)), -1.0), 1.0)
        assert reward == pytest.approx(-10.0 * abs(clipped - target), abs=1e-9)
        assert terminated is False and truncated is False
        assert obs[0] in (0.0, 1.0)
        observed.append(int(obs[0]))
    assert list(env.history()) == ([0] * horizon + observed)[-horizon:]


def test_chapter_defaults_and_reward_at_horizon_10():
    env = MemoryEnv(seed=3)
    assert (env.horizon, env.input_probability, env.episode_step_limit, env.mode) == (10, 0.2, 2000, "count_input")
    assert MemoryEnv(horizon=4).input_probability == 0.5
    env.reset()
    count = int(env.history().sum())
    # RLtools: r = -10 * |clamp(a, -1, 1) - count / 10|
    _, reward, *_ = env.step(0.95)
    assert reward == pytest.approx(-10 * abs(0.95 - count / 10))


def test_input_probability_is_respected():
    env = MemoryEnv(horizon=10, input_probability=0.2, episode_step_limit=20000, seed=0)
    env.reset()
    bits = [env.step(0.0)[0][0] for _ in range(10000)]
    assert abs(np.mean(bits) - 0.2) < 0.015  # about 4 standard deviations


def test_same_seed_same_episode_and_reset_seed_reseeds():
    def rollout(env, seed=None):
        obs, _ = env.reset(seed=seed)
        out = [float(obs[0])]
        for action in np.linspace(-1, 1, 50):
            obs, reward, *_ = env.step(action)
            out += [float(obs[0]), reward]
        return out

    a, b = MemoryEnv(seed=7), MemoryEnv(seed=7)
    assert rollout(a) == rollout(b)
    assert rollout(a) == rollout(b)  # continuing RNG streams stay in lockstep
    assert rollout(a, seed=11) == rollout(MemoryEnv(seed=0), seed=11)
    assert rollout(MemoryEnv(seed=1)) != rollout(MemoryEnv(seed=2))


def test_truncates_at_step_limit_and_refuses_to_continue():
    env = MemoryEnv(episode_step_limit=5, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)  # never reset
    env.reset()
    flags = [env.step(0.0)[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]
    assert env.episode_step == 5
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)
    env.reset()
    assert env.episode_step == 0 and env.step(0.0)[3] is False


@pytest.mark.parametrize("action", [0.3, np.float32(0.3), np.array([0.3]), np.array(0.3), [0.3], 1])
def test_accepts_scalars_and_shape_1_arrays(action):
    env = MemoryEnv(seed=0)
    env.reset()
    env.step(action)


@pytest.mark.parametrize(
    "action, error",
    [(float("nan"), ValueError), (np.inf, ValueError), (np.array([np.nan], np.float32), ValueError),
     (np.zeros(2), ValueError), (np.zeros((1, 1)), ValueError), ([0.1, 0.2], ValueError),
     ("a", TypeError), (None, TypeError)],
)
def test_bad_actions_raise_naming_action(action, error):
    env = MemoryEnv(seed=0)
    env.reset()
    with pytest.raises(error, match="action"):
        env.step(action)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"horizon": 0}, ValueError, "horizon"),
        ({"horizon": 2.5}, TypeError, "horizon"),
        ({"horizon": True}, TypeError, "horizon"),
        ({"input_probability": 1.5}, ValueError, "input_probability"),
        ({"input_probability": -0.1}, ValueError, "input_probability"),
        ({"input_probability": float("nan")}, ValueError, "input_probability"),
        ({"input_probability": "0.5"}, TypeError, "input_probability"),
        ({"episode_step_limit": 0}, ValueError, "episode_step_limit"),
        ({"mode": "count"}, ValueError, "mode"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
    ],
)
def test_bad_constructor_arguments_raise_naming_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        MemoryEnv(**kwargs)


def test_observations_are_read_only():
    env = MemoryEnv(seed=0)
    obs, _ = env.reset()
    with pytest.raises(ValueError):
        obs[0] = 5.0


@pytest.mark.parametrize("mode", ["count_input", "count_steps_since_last_input"])
def test_state_dict_round_trip_continues_identically(mode):
    env = MemoryEnv(horizon=6, episode_step_limit=100, mode=mode, seed=5)
    env.reset()
    for _ in range(17):
        env.step(0.1)
    state = env.state_dict()
    clone = MemoryEnv(horizon=6, episode_step_limit=100, mode=mode, seed=999)
    clone.load_state_dict(state)
    assert clone.target() == env.target() and clone.episode_step == 17
    for action in np.linspace(-1, 1, 30):
        assert clone.step(action)[:4] == env.step(action)[:4]
    with pytest.raises(ValueError, match="horizon"):
        MemoryEnv(horizon=7).load_state_dict(state)


def test_make_registry():
    env = make("memory", horizon=5, seed=1)
    assert isinstance(env, MemoryEnv) and env.horizon == 5
    assert ENVIRONMENTS["memory"] is MemoryEnv
    with pytest.raises(ValueError, match="memory"):
        make("cartpole")


def test_bounds_and_dims():
    env = MemoryEnv()
    assert (env.observation_dim, env.action_dim) == (1, 1)
    for array, value in ((env.observation_low, 0), (env.observation_high, 1),
                         (env.action_low, -1), (env.action_high, 1)):
        assert array.dtype == np.float32 and array.shape == (1,) and array[0] == value
    assert env.episode_step_limit == 2000
