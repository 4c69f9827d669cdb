"""Gymnasium interop: the GymnasiumEnv adapter (rescaling, episode ends, seeding, errors), make_env,
and memrl's environments registered with Gymnasium (by ``import memrl``; check_env, gymnasium.make,
pickling)."""
import pickle
import warnings

import numpy as np
import pytest

from memrl.envs import MemoryEnv, PendulumEnv
from helpers import run_python


@pytest.fixture
def gym():
    return pytest.importorskip("gymnasium")


def test_memrl_envs_import_without_gymnasium():
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"  # makes `import gymnasium` fail
        "import memrl.envs, memrl.envs.gym as g\n"
        "env = g.make_env('pendulum', seed=0); env.reset(); env.step(0.0)\n"
        "try:\n"
        "    g.GymnasiumEnv('Pendulum-v1')\n"
        "except ImportError as e:\n"
        "    assert 'pip install' in str(e) and 'memrl[gym]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    out = run_python(code, timeout=60)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ small custom environments


def custom_env(gym, observation_space=None, action_space=None, terminate_at=None):
    """A counter env: observation = [step count], terminates after ``terminate_at`` steps if given."""
    Box = gym.spaces.Box

    class Counter(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self):
            self.observation_space = observation_space or Box(-np.inf, np.inf, (1,), np.float32)
            self.action_space = action_space or Box(-1.0, 1.0, (1,), np.float32)
            self.last_action = None

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.array([self.np_random.uniform()], np.float32), {"reset": True}

        def step(self, action):
            self.last_action = action
            self.t += 1
            done = terminate_at is not None and self.t >= terminate_at
            return np.array([self.t], np.float32), 1.0, done, False, {"t": self.t}

    return Counter()


# ------------------------------------------------------------------ GymnasiumEnv


def test_pendulum_v1_protocol_and_action_rescaling(gym):
    from memrl.envs.gym import GymnasiumEnv

    env = GymnasiumEnv("Pendulum-v1", seed=0)
    assert (env.observation_dim, env.action_dim, env.episode_step_limit) == (3, 1, 200)
    np.testing.assert_array_equal(env.observation_high, [1, 1, 8])
    np.testing.assert_array_equal(env.observation_low, [-1, -1, -8])
    np.testing.assert_array_equal(env.action_low, [-1])
    np.testing.assert_array_equal(env.action_high, [1])
    for a, torque in ((1.0, 2.0), (-1.0, -2.0), (0.0, 0.0), (0.5, 1.0), (7.0, 2.0), (-3.0, -2.0)):
        np.testing.assert_array_equal(env.env_action(np.array([a], np.float32)), [torque])
        assert env.env_action(a).dtype == np.float32
    # stepping: the adapter's a=1 is the raw env's u=2
    gym_env = gym.make("Pendulum-v1")
    obs, info = env.reset(seed=3)
    gym_obs, _ = gym_env.reset(seed=3)
    np.testing.assert_array_equal(obs, gym_obs)
    for a in (1.0, -1.0, 0.25, 5.0):
        obs, reward, terminated, truncated, _ = env.step(np.array([a], np.float32))
        gym_obs, gym_reward, *_ = gym_env.step(np.array([2 * min(max(a, -1), 1)], np.float32))
        np.testing.assert_array_equal(obs, gym_obs)
        assert obs.dtype == np.float32 and obs.shape == (3,)
        assert reward == float(gym_reward) and type(reward) is float
        assert terminated is False and truncated is False
    # same dynamics as memrl's PendulumEnv
    ours = PendulumEnv(seed=3)
    np.testing.assert_array_equal(ours.reset()[0], env.reset(seed=3)[0])


def test_asymmetric_multi_dimensional_action_bounds(gym):
    from memrl.envs.gym import GymnasiumEnv

    space = gym.spaces.Box(np.array([[0.0, -3.0], [10.0, -1.0]]), np.array([[1.0, 5.0], [20.0, 1.0]]), dtype=np.float64)
    inner = custom_env(gym, action_space=space)
    env = GymnasiumEnv(inner, episode_step_limit=10)
    assert env.action_dim == 4
    np.testing.assert_array_equal(env.env_action(-np.ones(4)), space.low)
    np.testing.assert_array_equal(env.env_action(np.ones(4)), space.high)
    np.testing.assert_array_equal(env.env_action(np.zeros(4)), (space.low + space.high) / 2)
    np.testing.assert_array_equal(env.env_action([-2, 2, 0.5, -0.5]), [[0.0, 5.0], [17.5, -0.5]])
    env.reset(seed=0)
    env.step(np.ones(4, np.float32))
    assert inner.last_action.shape == (2, 2) and inner.last_action.dtype == np.float64
    assert space.contains(inner.last_action)


def test_terminated_and_truncated_are_kept_apart(gym):
    from memrl.envs.gym import GymnasiumEnv

    # the env terminates at step 3; the adapter truncates at its limit of 5
    env = GymnasiumEnv(custom_env(gym, terminate_at=3), episode_step_limit=5)
    obs, info = env.reset(seed=0)
    assert info == {"reset": True}
    flags = [env.step(0.0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (True, False)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)
    env = GymnasiumEnv(custom_env(gym), episode_step_limit=5)
    env.reset()
    flags = [env.step(0.0)[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    # info passes through
    env.reset()
    assert env.step(0.0)[4] == {"t": 1}


def test_truncation_from_the_env_spec_time_limit(gym):
    from memrl.envs.gym import GymnasiumEnv

    env = GymnasiumEnv("MountainCarContinuous-v0", seed=0)
    assert env.episode_step_limit == 999
    env.reset()
    for t in range(999):
        _, _, terminated, truncated, _ = env.step(0.0)  # no push: never reaches the goal
        assert terminated is False and truncated is (t == 998)
    # an explicit limit overrides the spec's (passed to gymnasium.make as max_episode_steps)
    env = GymnasiumEnv("Pendulum-v1", episode_step_limit=3)
    assert env.episode_step_limit == 3 and env.env.spec.max_episode_steps == 3
    env.reset(seed=0)
    assert [env.step(0.0)[3] for _ in range(3)] == [False, False, True]
    env = GymnasiumEnv("Pendulum-v1", episode_step_limit=500)
    env.reset(seed=0)
    assert not any(env.step(0.0)[3] for _ in range(499))


def test_mountain_car_terminates_at_the_goal(gym):
    from memrl.envs.gym import GymnasiumEnv

    env = GymnasiumEnv("MountainCarContinuous-v0", seed=0)
    env.reset()
    env.env.unwrapped.state = np.array([0.449, 0.07])  # just short of the goal (0.45), moving right
    _, reward, terminated, truncated, _ = env.step(1.0)
    assert terminated is True and truncated is False and reward > 90  # the +100 goal bonus
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)


def test_seeding_reproducibility(gym):
    from memrl.envs.gym import GymnasiumEnv

    def episode_starts(env, seed=None):
        starts = [env.reset(seed=seed)[0]]
        for _ in range(3):
            starts.append(env.reset()[0])  # continues the env's generator
        return np.array(starts)

    a = episode_starts(GymnasiumEnv("Pendulum-v1", seed=5))
    b = episode_starts(GymnasiumEnv("Pendulum-v1", seed=5))
    c = episode_starts(GymnasiumEnv("Pendulum-v1", seed=6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(row) for row in a}) == 4  # resets without a seed do not restart the generator
    np.testing.assert_array_equal(episode_starts(GymnasiumEnv("Pendulum-v1", seed=99), seed=5), a)
    raw = gym.make("Pendulum-v1")
    np.testing.assert_array_equal(np.array([raw.reset(seed=5)[0]] + [raw.reset()[0] for _ in range(3)]), a)


def test_unsupported_spaces_raise_clear_errors(gym):
    from memrl.envs.gym import GymnasiumEnv

    Box, Discrete, Dict, MultiBinary, Tuple = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.Dict,
                                               gym.spaces.MultiBinary, gym.spaces.Tuple)
    cases = [
        ({"observation_space": Dict({"x": Box(-1, 1, (2,))})}, r"observation_space: .*Dict.*supports"),
        ({"observation_space": Tuple((Discrete(2), Dict({"x": Box(-1, 1, (2,))})))}, r"observation_space: .*Dict"),
        ({"action_space": MultiBinary(3)}, r"action_space: expected a Box, Discrete or MultiDiscrete .*MultiBinary"),
        ({"action_space": Dict({"a": Box(-1, 1, (1,))})}, r"action_space: .*Dict"),
        ({"action_space": Box(-np.inf, np.inf, (2,), np.float32)}, r"action_space: expected finite bounds.*unbounded"),
        ({"action_space": Box(0, np.inf, (1,), np.float32)}, r"unbounded"),
        ({"action_space": Box(0, 5, (1,), np.int64)}, r"floating-point Box"),
    ]
    for spaces, match in cases:
        with pytest.raises(ValueError, match=match):
            GymnasiumEnv(custom_env(gym, **spaces), episode_step_limit=10)


def test_other_errors(gym):
    from memrl.envs.gym import GymnasiumEnv

    with pytest.raises(ValueError, match="episode_step_limit: .*max_episode_steps"):
        GymnasiumEnv(custom_env(gym))  # an instance without a spec
    with pytest.raises(TypeError, match="env_or_id"):
        GymnasiumEnv(42)
    with pytest.raises(TypeError, match="make_kwargs"):
        GymnasiumEnv(custom_env(gym), episode_step_limit=5, g=9.81)
    with pytest.raises(ValueError, match="episode_step_limit"):
        GymnasiumEnv("Pendulum-v1", episode_step_limit=0)
    env = GymnasiumEnv("Pendulum-v1", g=9.81)  # make_kwargs reach gymnasium.make
    assert env.env.unwrapped.g == 9.81
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0.0)
    env.reset(seed=0)
    for action, error, match in [
        (np.array([np.nan]), ValueError, "finite"),
        (np.array([0.1, 0.2]), ValueError, r"shape \(1,\)"),
        (np.zeros((1, 1)), ValueError, "shape"),
        ("left", TypeError, "action"),
    ]:
        with pytest.raises(error, match=match):
            env.step(action)
    assert env.episode_step == 0
    with pytest.raises(NotImplementedError, match="checkpoint"):
        env.state_dict()
    with pytest.raises(NotImplementedError, match="checkpoint"):
        env.load_state_dict({})
    env.close()


def test_image_like_observations_are_flattened(gym):
    from memrl.envs.gym import GymnasiumEnv

    space = gym.spaces.Box(0, 255, (2, 3), np.uint8)

    class Image(gym.Env):
        observation_space = space
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.arange(6, dtype=np.uint8).reshape(2, 3), {}

        def step(self, action):
            return np.full((2, 3), 255, np.uint8), 0.0, False, False, {}

    env = GymnasiumEnv(Image(), episode_step_limit=2)
    assert env.observation_dim == 6
    np.testing.assert_array_equal(env.observation_high, np.full(6, 255, np.float32))
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (6,)
    np.testing.assert_array_equal(obs, np.arange(6))


def test_make_env(gym):
    from memrl.envs.gym import GymnasiumEnv, make_env

    env = make_env("gymnasium:Pendulum-v1", seed=1)
    assert isinstance(env, GymnasiumEnv) and env.name == "Pendulum-v1"
    assert isinstance(make_env("pendulum", observation="position_only"), PendulumEnv)
    assert isinstance(make_env("memory", horizon=4), MemoryEnv)
    registered = make_env("gymnasium:memrl/PendulumVelocity-v0", seed=2)  # registers on demand
    assert registered.observation_dim == 1 and registered.episode_step_limit == 200
    np.testing.assert_array_equal(registered.reset()[0],
                                  PendulumEnv(observation="velocity_only", seed=2).reset()[0])
    with pytest.raises(ValueError, match="name"):
        make_env("cartpole")


# ------------------------------------------------------------------ memrl environments in Gymnasium


MEMRL_IDS = ["memrl/Memory-v0", "memrl/Pendulum-v0", "memrl/PendulumPosition-v0", "memrl/PendulumVelocity-v0"]
POMDP_IDS = ["memrl/CartPole-P-v0", "memrl/CartPole-V-v0"]  # pomdp-baselines' masked CartPoles


def stdout_lines(code):
    """Run ``code`` in a fresh interpreter (import order matters below); returns its stdout lines."""
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_import_memrl_registers_the_ids(gym):
    code = (
        "import sys\n"
        "import memrl\n"
        "import gymnasium\n"
        "print(sorted(i for i in gymnasium.registry if i.startswith('memrl')))\n"
        "env = gymnasium.make('memrl/Memory-v0')\n"
        "print(type(env.unwrapped).__module__, type(env.unwrapped).__name__, env.spec.max_episode_steps)\n"
    )
    assert stdout_lines(code) == [str(sorted(MEMRL_IDS + POMDP_IDS)), "memrl.envs.gym MemrlGymnasiumEnv 2000"]


def test_register_envs_after_importing_gymnasium_first(gym):
    code = (
        "import gymnasium\n"
        "assert not [i for i in gymnasium.registry if i.startswith('memrl')]\n"
        "import memrl\n"
        "gymnasium.register_envs(memrl)\n"
        "env = gymnasium.make('memrl/PendulumVelocity-v0')\n"
        "print(env.reset(seed=2)[0].tolist())\n"
    )
    expected = PendulumEnv(observation="velocity_only", seed=2).reset()[0]
    assert stdout_lines(code) == [str(expected.tolist())]


def test_make_with_the_module_prefix_imports_memrl(gym):
    code = (
        "import sys, gymnasium\n"
        "assert 'memrl' not in sys.modules\n"
        "env = gymnasium.make('memrl:memrl/Pendulum-v0')\n"
        "print('memrl' in sys.modules, env.spec.id, env.spec.max_episode_steps, env.reset(seed=4)[0].tolist())\n"
    )
    expected = PendulumEnv(seed=4).reset()[0]
    assert stdout_lines(code) == [f"True memrl/Pendulum-v0 200 {expected.tolist()}"]


def test_import_memrl_without_gymnasium_installed_does_not_import_it():
    # The path finder, minus Gymnasium: as if it were not installed (whether or not it is).
    code = (
        "import importlib.machinery as m, sys\n"
        "class NotInstalled:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'gymnasium':\n"
        "            return None\n"
        "        return m.PathFinder.find_spec(name, path, target)\n"
        "    invalidate_caches = staticmethod(m.PathFinder.invalidate_caches)\n"
        "sys.meta_path[sys.meta_path.index(m.PathFinder)] = NotInstalled\n"
        "import memrl, memrl.envs.gym as g\n"
        "print('gymnasium' in sys.modules, memrl.envs.make('memory', seed=0).reset()[0].tolist())\n"
        "try:\n"
        "    g.register_environments()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert stdout_lines(code) == [
        f"False {MemoryEnv(seed=0).reset()[0].tolist()}",
        "memrl.envs.gym needs Gymnasium, an optional dependency: pip install 'memrl[gym]' (or pip install gymnasium)",
    ]


def test_register_environments_is_idempotent(gym):
    from memrl.envs.gym import GYMNASIUM_IDS, register_environments

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is overridden
        ids = register_environments()
        assert register_environments() == ids == list(GYMNASIUM_IDS) + POMDP_IDS
    assert all(i in gym.registry for i in ids)


@pytest.mark.parametrize("env_id", MEMRL_IDS)
def test_registered_environments_pass_check_env(gym, env_id):
    from gymnasium.utils.env_checker import check_env

    assert env_id in gym.registry  # by `import memrl` (at the top of this module)
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env reports problems as warnings too
        # check_env asks for the unwrapped environment (it warns when given wrappers) ...
        check_env(env.unwrapped)
        # ... and gymnasium.make's wrappers (the passive checker among them) stay quiet too
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
    env.close()


def test_registered_specs_round_trip_through_json(gym):
    from gymnasium.envs.registration import EnvSpec

    for env_id in MEMRL_IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "memrl.envs.gym:MemrlGymnasiumEnv"
        assert EnvSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("env_id", MEMRL_IDS)
def test_registered_environments_pickle_mid_episode(gym, env_id):
    env = gym.make(env_id)
    env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(6, 1)).astype(np.float32)
    for action in actions[:3]:
        env.step(action)
    copy = pickle.loads(pickle.dumps(env))
    assert type(copy.unwrapped) is type(env.unwrapped) and copy.spec == env.spec
    for action in actions[3:]:
        a, b = env.step(action), copy.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    np.testing.assert_array_equal(env.reset(seed=5)[0], copy.reset(seed=5)[0])


@pytest.mark.parametrize("env_id, memrl_env, limit", [
    ("memrl/Memory-v0", lambda seed: MemoryEnv(seed=seed), 2000),
    ("memrl/Pendulum-v0", lambda seed: PendulumEnv(seed=seed), 200),
    ("memrl/PendulumPosition-v0", lambda seed: PendulumEnv("position_only", seed=seed), 200),
    ("memrl/PendulumVelocity-v0", lambda seed: PendulumEnv("velocity_only", seed=seed), 200),
])
def test_gymnasium_make_runs_memrl_dynamics(gym, env_id, memrl_env, limit):
    env = gym.make(env_id)
    ours = memrl_env(0)
    assert env.spec.max_episode_steps == limit
    assert env.observation_space.shape == (ours.observation_dim,)
    np.testing.assert_array_equal(env.observation_space.high, ours.observation_high)
    np.testing.assert_array_equal(env.action_space.low, [-1.0])
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, ours.reset()[0])
    rng = np.random.default_rng(0)
    for t in range(limit):
        action = rng.uniform(-1, 1, size=1).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        our_obs, our_reward, our_terminated, our_truncated, _ = ours.step(action)
        np.testing.assert_array_equal(obs, our_obs)
        assert (reward, terminated, truncated) == (our_reward, our_terminated, our_truncated)
        assert truncated is (t == limit - 1)
    # make kwargs reach the memrl environment
    short = gym.make("memrl/Memory-v0", horizon=3, episode_step_limit=4)
    assert short.unwrapped.memrl_env.horizon == 3 and short.unwrapped.memrl_env.episode_step_limit == 4
