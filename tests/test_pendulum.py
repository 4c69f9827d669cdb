"""PendulumEnv: step-for-step parity with Gymnasium's Pendulum-v1, observation variants, episodes,
seeding, checkpoints and errors."""
import math

import numpy as np
import pytest

from memrl.envs import ENVIRONMENTS, PendulumEnv, make
from memrl.envs.pendulum import OBSERVATIONS, angle_normalize


def reference_step(theta, theta_dot, action):
    """The written-out dynamics (float64) for a normalised action."""
    u = 2.0 * min(max(action, -1.0), 1.0)
    reward = -(angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2)
    new_theta_dot = min(max(theta_dot + (3 * 10.0 / 2 * math.sin(theta) + 3.0 * u) * 0.05, -8.0), 8.0)
    return theta + new_theta_dot * 0.05, new_theta_dot, reward


def full_obs(theta, theta_dot):
    return np.array([math.cos(theta), math.sin(theta), theta_dot], dtype=np.float32)


# ------------------------------------------------------------------ parity with Gymnasium


def test_step_matches_gymnasium_pendulum_v1_from_random_states():
    gymnasium = pytest.importorskip("gymnasium")
    gym_env = gymnasium.make("Pendulum-v1").unwrapped
    gym_env.reset(seed=0)
    env = PendulumEnv(seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    for i in range(3000):
        theta = rng.uniform(-12.0, 12.0)  # several turns either way: angle_normalize matters
        theta_dot = rng.uniform(-8.0, 8.0) if i % 10 else rng.choice([-8.0, 8.0])
        # float32 actions as a policy emits them, a third of them out of [-1, 1]
        action = np.float32(rng.uniform(-1.0, 1.0) if i % 3 else rng.uniform(-4.0, 4.0))
        gym_env.state = np.array([theta, theta_dot])
        env.set_state(theta, theta_dot)
        gym_obs, gym_reward, gym_terminated, gym_truncated, _ = gym_env.step(np.array([2 * action], np.float32))
        obs, reward, terminated, truncated, _ = env.step(np.array([action], np.float32))
        np.testing.assert_allclose(obs, gym_obs, rtol=0, atol=1e-5)
        assert reward == pytest.approx(float(gym_reward), rel=1e-6, abs=1e-9)
        # Gymnasium forms 3*u in float32 (a rounding of at most ~2e-8 in the new state)
        np.testing.assert_allclose(env.state, gym_env.state, rtol=1e-12, atol=1e-7)
        assert terminated is False and gym_terminated is False and gym_truncated is False
        assert truncated is False or env.episode_step == env.episode_step_limit
        if truncated:
            env.reset()


def test_reset_and_trajectory_match_gymnasium_for_the_same_seed():
    gymnasium = pytest.importorskip("gymnasium")
    for seed in (0, 1, 12345):
        gym_env = gymnasium.make("Pendulum-v1")
        env = PendulumEnv(seed=seed)
        gym_obs, _ = gym_env.reset(seed=seed)
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs, gym_obs)  # same draws from the same generator
        rng = np.random.default_rng(seed)
        for t in range(200):
            action = np.float32(rng.uniform(-1.2, 1.2))
            gym_obs, gym_reward, gym_terminated, gym_truncated, _ = gym_env.step(np.array([2 * action], np.float32))
            obs, reward, terminated, truncated, _ = env.step(action)
            # Gymnasium forms 3*u in float32: the states drift apart by float32 rounding only
            np.testing.assert_allclose(obs, gym_obs, rtol=0, atol=1e-4)
            assert reward == pytest.approx(float(gym_reward), rel=1e-4, abs=1e-6)
            assert (terminated, truncated) == (gym_terminated, gym_truncated) == (False, t == 199)


# ------------------------------------------------------------------ dynamics without Gymnasium


@pytest.mark.parametrize("theta, theta_dot, action", [
    (0.0, 0.0, 0.0), (math.pi, 0.0, 1.0), (3 * math.pi + 0.1, -7.9, -1.0), (-5.0, 8.0, 3.0),
    (0.3, -8.0, -2.5), (1e-9, 7.99, 0.5), (-math.pi, 1.0, -0.999),
])
def test_step_matches_written_out_dynamics(theta, theta_dot, action):
    env = PendulumEnv()
    env.reset(seed=0)
    env.set_state(theta, theta_dot)
    obs, reward, terminated, truncated, info = env.step(action)
    new_theta, new_theta_dot, expected_reward = reference_step(theta, theta_dot, action)
    assert env.state == pytest.approx((new_theta, new_theta_dot), rel=1e-15, abs=1e-15)
    assert reward == pytest.approx(expected_reward, rel=1e-15)
    np.testing.assert_array_equal(obs, full_obs(new_theta, new_theta_dot))
    assert (terminated, truncated, info) == (False, False, {})
    assert type(reward) is float


def test_angle_normalize_wraps_into_minus_pi_pi():
    for theta in np.linspace(-20, 20, 101):
        wrapped = angle_normalize(float(theta))
        assert -math.pi <= wrapped < math.pi
        assert math.isclose(math.cos(wrapped), math.cos(theta), abs_tol=1e-12)
        assert math.isclose(math.sin(wrapped), math.sin(theta), abs_tol=1e-12)


def test_initial_state_distribution():
    env = PendulumEnv(seed=7)
    states = []
    for _ in range(2000):
        env.reset()
        states.append(env.state)
    theta, theta_dot = np.array(states).T
    assert theta.min() >= -math.pi and theta.max() < math.pi
    assert theta_dot.min() >= -1.0 and theta_dot.max() < 1.0
    assert abs(theta.mean()) < 0.15 and abs(theta_dot.mean()) < 0.05  # about 4 standard errors
    assert theta.std() == pytest.approx(2 * math.pi / math.sqrt(12), rel=0.05)


# ------------------------------------------------------------------ observations and bounds


@pytest.mark.parametrize("observation, components", [
    ("full", lambda th, thd: [math.cos(th), math.sin(th), thd]),
    ("position_only", lambda th, thd: [math.cos(th), math.sin(th)]),
    ("velocity_only", lambda th, thd: [thd]),
])
def test_observation_variants_expose_exactly_their_components(observation, components):
    env = PendulumEnv(observation=observation, seed=3)
    dim = len(components(0.0, 0.0))
    assert env.observation_dim == dim and env.action_dim == 1
    obs, _ = env.reset()
    rng = np.random.default_rng(1)
    for _ in range(300):
        expected = np.array(components(*env.state), dtype=np.float32)
        assert obs.shape == (dim,) and obs.dtype == np.float32
        np.testing.assert_array_equal(obs, expected)
        assert (obs >= env.observation_low).all() and (obs <= env.observation_high).all()
        obs, _, _, truncated, _ = env.step(rng.uniform(-1, 1))
        if truncated:
            obs, _ = env.reset()


def test_declared_bounds():
    high = {"full": [1, 1, 8], "position_only": [1, 1], "velocity_only": [8]}
    for observation in OBSERVATIONS:
        env = PendulumEnv(observation=observation)
        for array in (env.observation_low, env.observation_high, env.action_low, env.action_high):
            assert array.dtype == np.float32 and array.ndim == 1 and not array.flags.writeable
        np.testing.assert_array_equal(env.observation_high, high[observation])
        np.testing.assert_array_equal(env.observation_low, [-h for h in high[observation]])
        np.testing.assert_array_equal(env.action_low, [-1.0])
        np.testing.assert_array_equal(env.action_high, [1.0])


def test_velocity_saturates_at_max_speed():
    env = PendulumEnv(observation="velocity_only", episode_step_limit=1000, seed=0)
    env.reset()
    env.set_state(0.5, 7.9)
    speeds = []
    for _ in range(1000):
        obs, *_ = env.step(1.0)  # full torque in the direction of motion spins it up
        assert -8.0 <= env.state[1] <= 8.0 and obs[0] == np.float32(env.state[1])
        speeds.append(env.state[1])
    assert max(speeds) == 8.0


# ------------------------------------------------------------------ episodes, seeding, checkpoints


def test_truncated_at_the_step_limit_and_never_terminated():
    env = PendulumEnv(episode_step_limit=5, seed=0)
    for _ in range(2):
        env.reset()
        flags = [env.step(1.0)[2:4] for _ in range(5)]
        assert flags == [(False, False)] * 4 + [(False, True)]
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0.0)
    assert PendulumEnv().episode_step_limit == 200
    with pytest.raises(RuntimeError, match="reset"):
        PendulumEnv().step(0.0)


def rollout(env, n, seed=None):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for t in range(n):
        obs, reward, _, truncated, _ = env.step(math.sin(t))
        out.append(np.append(obs, reward))
        if truncated:
            out.append(env.reset()[0])
    return np.concatenate(out)


def test_determinism_per_seed():
    a = rollout(PendulumEnv(seed=11, episode_step_limit=30), 100)
    b = rollout(PendulumEnv(seed=11, episode_step_limit=30), 100)
    c = rollout(PendulumEnv(seed=12, episode_step_limit=30), 100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # reset(seed=...) reseeds whatever the constructor seed was
    np.testing.assert_array_equal(rollout(PendulumEnv(seed=99, episode_step_limit=30), 100, seed=11), a)


def test_state_dict_round_trip_continues_identically():
    env = PendulumEnv(observation="position_only", episode_step_limit=40, seed=5)
    rollout(env, 57)  # mid-episode
    state = env.state_dict()
    expected = rollout_continue(env, 100)
    clone = PendulumEnv(observation="position_only", episode_step_limit=40, seed=123)
    clone.load_state_dict(state)
    np.testing.assert_array_equal(rollout_continue(clone, 100), expected)
    with pytest.raises(ValueError, match="observation"):
        PendulumEnv(observation="full", episode_step_limit=40).load_state_dict(state)
    with pytest.raises(ValueError, match="episode_step_limit"):
        PendulumEnv(observation="position_only").load_state_dict(state)


def rollout_continue(env, n):
    """Continue without resetting first (resets at episode ends draw from the restored generator)."""
    out = []
    for t in range(n):
        obs, reward, _, truncated, _ = env.step(math.cos(t))
        out.append(np.append(obs, [reward, env.episode_step]))
        if truncated:
            out.append(env.reset()[0])
    return np.concatenate(out)


def test_state_dict_of_a_finished_episode_requires_reset():
    env = PendulumEnv(episode_step_limit=2, seed=0)
    env.reset()
    env.step(0.0), env.step(0.0)
    clone = PendulumEnv(episode_step_limit=2)
    clone.load_state_dict(env.state_dict())
    with pytest.raises(RuntimeError, match="reset"):
        clone.step(0.0)


# ------------------------------------------------------------------ errors and registry


@pytest.mark.parametrize("action, error, match", [
    (float("nan"), ValueError, "finite"),
    (np.array([np.inf], np.float32), ValueError, "finite"),
    (np.array([0.1, 0.2]), ValueError, "shape"),
    (np.zeros((1, 1)), ValueError, "shape"),
    ([0.1, 0.2], ValueError, "shape"),
    ("0.5", TypeError, "action"),
    (None, TypeError, "action"),
])
def test_bad_actions_raise(action, error, match):
    env = PendulumEnv(seed=0)
    env.reset()
    state = env.state
    with pytest.raises(error, match=match):
        env.step(action)
    assert env.state == state and env.episode_step == 0


def test_accepted_action_forms_agree():
    results = []
    for action in (0.25, np.float32(0.25), np.array(0.25), np.array([0.25], np.float32), [0.25], (0.25,)):
        env = PendulumEnv(seed=4)
        env.reset()
        results.append(env.step(action)[1])
    assert len(set(results)) == 1
    integer, real = PendulumEnv(seed=4), PendulumEnv(seed=4)
    integer.reset(), real.reset()
    assert integer.step(1)[1] == real.step(1.0)[1]  # integers are accepted


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="observation"):
        PendulumEnv(observation="angle")
    with pytest.raises(ValueError, match="episode_step_limit"):
        PendulumEnv(episode_step_limit=0)
    with pytest.raises(TypeError, match="episode_step_limit"):
        PendulumEnv(episode_step_limit=2.5)
    with pytest.raises(ValueError, match="seed"):
        PendulumEnv(seed=-1)
    with pytest.raises(ValueError, match="theta_dot"):
        PendulumEnv().set_state(0.0, 9.0)
    with pytest.raises(ValueError, match="theta"):
        PendulumEnv().set_state(float("nan"), 0.0)


def test_registered_and_made_by_name():
    assert ENVIRONMENTS["pendulum"] is PendulumEnv
    env = make("pendulum", observation="velocity_only", episode_step_limit=10, seed=0)
    assert isinstance(env, PendulumEnv) and env.observation_dim == 1 and env.episode_step_limit == 10
    assert "velocity_only" in repr(env)
