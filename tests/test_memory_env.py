"""MemoryEnv: hand-computed episodes in both modes, reward and target against a recomputation from the
observed bits, seeding, truncation, errors."""
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
    assert MemoryEnv(horizon=4).input_probability == 0.5 and MemoryEnv(horizon=5).input_probability == 0.4
    # seed 3's first uniforms: 0.0856, 0.2368 (bits 1, 0 at p = 0.2)
    obs, _ = env.reset()
    assert obs.tolist() == [1.0] and env.history().tolist() == [0] * 9 + [1]
    # RLtools: r = -10 * |clamp(a, -1, 1) - count / 10|, count = 1
    obs, reward, *_ = env.step(0.95)
    assert obs.tolist() == [0.0] and reward == pytest.approx(-8.5, abs=1e-12)
    _, reward, *_ = env.step(-3.0)  # clipped to -1; the window still holds one 1
    assert reward == pytest.approx(-11.0, abs=1e-12)


# Seed 1, horizon 3, p = 0.5: the bits are b0 = 0 (drawn by reset), then b1..b6 = 0, 1, 0, 1, 1, 0
# (one uniform per reset and per step, bit = u < p). Step k scores the window that ends with
# b_{k-1} (oldest first), then draws b_k:
#   step       1        2        3        4        5        6
#   window   0 0 0    0 0 0    0 0 1    0 1 0    1 0 1    0 1 1
#   count      0        0       1/3      1/3      2/3      2/3
#   since     3/3      3/3       0       1/3       0        0      (steps since the newest 1; 3 if none)
#   action    0.5      -2       1.5       0       0.25     2/3     (clipped: -1 and 1)
HAND_BITS = [0, 0, 1, 0, 1, 1, 0]
HAND_ACTIONS = [0.5, -2.0, 1.5, 0.0, 0.25, 2 / 3]
HAND_REWARDS = {
    "count_input": [-5.0, -10.0, -20 / 3, -10 / 3, -25 / 6, 0.0],
    "count_steps_since_last_input": [-5.0, -20.0, -10.0, -10 / 3, -2.5, -20 / 3],
}
HAND_TARGET_AFTER = {"count_input": 2 / 3, "count_steps_since_last_input": 1 / 3}  # window 1 1 0


@pytest.mark.parametrize("mode", sorted(HAND_REWARDS))
def test_a_hand_computed_episode(mode):
    """Observations, rewards -10 |clip(a) - target|, flags and the truncation at step 6, written out."""
    uniforms = np.random.Generator(np.random.PCG64(1)).random(7)
    assert (uniforms < 0.5).astype(int).tolist() == HAND_BITS
    env = MemoryEnv(horizon=3, input_probability=0.5, episode_step_limit=6, mode=mode, seed=1)
    obs, info = env.reset()
    assert obs.tolist() == [HAND_BITS[0]] and info == {}
    for k, (action, want) in enumerate(zip(HAND_ACTIONS, HAND_REWARDS[mode]), start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.tolist() == [HAND_BITS[k]], k
        assert reward == pytest.approx(want, abs=1e-12), k
        assert (terminated, truncated, info, env.episode_step) == (False, k == 6, {}, k), k
    assert env.history().tolist() == [1, 1, 0]
    assert env.target() == pytest.approx(HAND_TARGET_AFTER[mode], abs=1e-15)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)


@pytest.mark.parametrize("p, mode, rewards", [
    # p = 1: windows 0001, 0011, 0111, 1111, 1111 (horizon 4)
    (1.0, "count_input", [0.0, 0.0, 0.0, 0.0, -20.0]),
    (1.0, "count_steps_since_last_input", [-2.5, -5.0, -7.5, -10.0, -10.0]),
    # p = 0: the window stays 0000: count 0, no 1 seen (target 4/4)
    (0.0, "count_input", [-2.5, -5.0, -7.5, -10.0, -10.0]),
    (0.0, "count_steps_since_last_input", [-7.5, -5.0, -2.5, 0.0, -20.0]),
])
def test_certain_bits_give_written_out_rewards(p, mode, rewards):
    env = MemoryEnv(horizon=4, input_probability=p, episode_step_limit=5, mode=mode, seed=0)
    assert env.reset()[0].tolist() == [p]
    got = [env.step(action)[1] for action in (0.25, 0.5, 0.75, 1.0, -1.0)]
    np.testing.assert_allclose(got, rewards, rtol=0, atol=1e-12)
    assert env.history().tolist() == [int(p)] * 4


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


@pytest.mark.parametrize("action, reward", [
    (0.3, -3.0), (np.float32(0.3), -10 * float(np.float32(0.3))), (np.array([0.3]), -3.0), (np.array(0.3), -3.0),
    ([0.3], -3.0), ((0.3,), -3.0), (1, -10.0), (np.int64(-4), -10.0), (np.array([2], np.int32), -10.0),
])
def test_accepts_scalars_and_shape_1_arrays(action, reward):
    """Seed 0's first bit is 0 (u = 0.637 >= 0.2): the target is 0, the reward -10 |clip(a)|."""
    env = MemoryEnv(seed=0)
    assert env.reset()[0].tolist() == [0.0]
    assert env.step(action)[1] == pytest.approx(reward, abs=1e-12)


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
    with pytest.raises(ValueError, match="read-only"):
        obs[0] = 5.0
    assert env.step(0.0)[0].tolist() in ([0.0], [1.0])  # the shared arrays kept their values
    assert MemoryEnv.observation_low.tolist() == [0.0] and MemoryEnv.observation_high.tolist() == [1.0]


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
    assert isinstance(env, MemoryEnv) and env.horizon == 5 and env.input_probability == 0.4
    same = MemoryEnv(horizon=5, seed=1)
    assert env.reset()[0].tolist() == same.reset()[0].tolist()
    assert [env.step(0.2)[:2] for _ in range(20)] == [same.step(0.2)[:2] for _ in range(20)]
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
