"""Exported policies act exactly like the training code's step(), with NumPy alone."""
import os
import textwrap

import numpy as np
import pytest

from memrl.checkpoint import CheckpointError, save_checkpoint
from memrl.nn import GRU, Dense, Sequential, TanhGaussianHead
from memrl.policy import Policy, export_policy
from helpers import export_discrete_actor, run_python

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chapter_actor(gates="fast", seed=3, dtype=np.float32):
    return Sequential([Dense(1, 16, "tanh"), GRU(16, 16, gates), GRU(16, 16, gates), Dense(16, 2)],
                      seed=seed, dtype=dtype)


def every_activation_mlp(seed=4):
    return Sequential([Dense(3, 12, "relu"), Dense(12, 12, "tanh"), Dense(12, 12, "sigmoid"),
                       Dense(12, 12, "fast_tanh"), Dense(12, 12, "fast_sigmoid"), Dense(12, 4, "identity")],
                      seed=seed)


def training_actions(actor, observations, resets, action_dim):
    """Deterministic actions of the training code: Sequential.step, then tanh(mean)."""
    T, B, _ = observations.shape
    state = actor.initial_state(B)
    actions = np.zeros((T, B, action_dim), actor.dtype)
    for t in range(T):
        pre = actor.step(np.ascontiguousarray(observations[t]), state, np.ascontiguousarray(resets[t]))
        actions[t] = np.tanh(pre[:, :action_dim])
    return actions


def policy_actions(policy, observations, resets):
    T, B, _ = observations.shape
    policy.reset(B)
    out = []
    for t in range(T):
        if resets[t].any():
            policy.reset_rows(resets[t])
        out.append(policy.act(observations[t]))
    return np.stack(out)


def random_episode_data(rng, T, B, O, dtype=np.float32):
    observations = (2 * rng.standard_normal((T, B, O))).astype(dtype)
    observations[:, 0] = rng.integers(0, 2, (T, O))  # one row of 0/1 inputs as in the memory task
    resets = rng.random((T, B)) < 0.02
    resets[0] = False
    return observations, resets


@pytest.mark.parametrize("gates", ["fast", "exact"])
def test_recurrent_policy_matches_training_step_over_300_steps(tmp_path, gates):
    actor = chapter_actor(gates)
    path = tmp_path / "policy.npz"
    export_policy(path, actor, action_dim=1, meta={"step": 200000})
    policy = Policy.load(path)
    assert policy.meta == {"step": 200000} and policy.dtype == np.float32
    observations, resets = random_episode_data(np.random.default_rng(0), 300, 3, 1)
    assert resets[1:].any(axis=0).sum() >= 1
    expected = training_actions(actor, observations, resets, 1)
    got = policy_actions(policy, observations, resets)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_mlp_policy_with_every_activation_matches_training_step(tmp_path):
    actor = every_activation_mlp()
    export_policy(tmp_path / "mlp.npz", actor, action_dim=2)
    policy = Policy.load(tmp_path / "mlp.npz")
    observations, resets = random_episode_data(np.random.default_rng(1), 50, 5, 3)
    np.testing.assert_allclose(policy_actions(policy, observations, resets),
                               training_actions(actor, observations, resets, 2), rtol=0, atol=1e-6)


def test_float64_policy_computes_in_float64(tmp_path):
    actor = chapter_actor("exact", dtype=np.float64)
    export_policy(tmp_path / "p64.npz", actor, action_dim=1)
    policy = Policy.load(tmp_path / "p64.npz")
    observations, resets = random_episode_data(np.random.default_rng(2), 100, 2, 1, np.float64)
    got = policy_actions(policy, observations, resets)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, training_actions(actor, observations, resets, 1), rtol=0, atol=1e-12)


def test_memory_reset_interval_wipes_each_row_every_n_calls_since_its_reset(tmp_path):
    actor = chapter_actor("fast")
    interval = 7
    export_policy(tmp_path / "p.npz", actor, action_dim=1, memory_reset_interval=interval)
    policy = Policy.load(tmp_path / "p.npz")
    rng = np.random.default_rng(5)
    T, B = 60, 3
    observations, episode_ends = random_episode_data(rng, T, B, 1)
    # The training loop's rule (memrl/loop.py): wipe when episode_step % interval == 0.
    episode_step = np.zeros(B, np.int64)
    wipes = np.zeros((T, B), bool)
    for t in range(T):
        episode_step[episode_ends[t]] = 0
        wipes[t] = episode_ends[t] | (episode_step % interval == 0)
        episode_step += 1
    expected = training_actions(actor, observations, wipes, 1)
    np.testing.assert_allclose(policy_actions(policy, observations, episode_ends), expected, rtol=0, atol=1e-5)
    # Without the interval the states would differ: the test can tell the two apart.
    no_wipes = training_actions(actor, observations, episode_ends, 1)
    assert np.abs(no_wipes - expected).max() > 1e-4


def test_single_observation_and_noise_match_the_training_head(tmp_path):
    actor = Sequential([Dense(3, 8, "tanh"), GRU(8, 8), Dense(8, 4)], seed=7)
    export_policy(tmp_path / "p.npz", actor, action_dim=2, log_std_min=-5, log_std_max=0.5)
    policy = Policy.load(tmp_path / "p.npz")
    rng = np.random.default_rng(3)
    head = TanhGaussianHead(2, log_std_min=-5, log_std_max=0.5)
    state = actor.initial_state(1)
    for _ in range(10):
        obs = rng.standard_normal(3).astype(np.float32)
        eps = rng.standard_normal((1, 2)).astype(np.float32)
        pre = actor.step(obs[None, :], state)
        expected, _ = head.forward(np.ascontiguousarray(pre), eps)
        got = policy.act(obs, noise=eps[0])
        assert got.shape == (2,)
        np.testing.assert_allclose(got, expected[0], rtol=0, atol=1e-5)


def test_policy_file_holds_the_architecture(tmp_path):
    actor = chapter_actor()
    export_policy(tmp_path / "p.npz", actor, action_dim=1, memory_reset_interval=50)
    policy = Policy.load(tmp_path / "p.npz")
    assert policy.layers == actor.config()
    assert policy.observation_dim == 1 and policy.action_dim == 1 and policy.memory_reset_interval == 50
    for name, value in actor.named().items():
        np.testing.assert_array_equal(policy.params[name], value)


def test_bad_observations_and_batches_raise_clear_errors(tmp_path):
    export_policy(tmp_path / "p.npz", chapter_actor(), action_dim=1)
    policy = Policy.load(tmp_path / "p.npz")
    with pytest.raises(ValueError, match=r"observation: expected shape \(1,\) or \(B, 1\), got \(2, 3\)"):
        policy.act(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"observation: expected finite values, got nan at index \(1, 0\)"):
        policy.act(np.array([[0.0], [np.nan]]))
    assert policy.batch_size is None  # failed calls change nothing
    policy.act(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"expected batch size 2 \(the current episodes\), got 4; call reset\(4\)"):
        policy.act(np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"mask: expected a bool array of shape \(2,\), got int64 \(3,\)"):
        policy.reset_rows(np.array([1, 0, 1]))
    with pytest.raises(ValueError, match=r"noise: expected shape \(2, 1\)"):
        policy.act(np.zeros((2, 1)), noise=np.zeros(2))
    with pytest.raises(ValueError, match="observation: expected numbers, got dtype <U1"):
        policy.act(np.array([["a"], ["b"]]))
    policy.reset(4)
    assert policy.act(np.zeros((4, 1), np.float64)).shape == (4, 1)


def test_export_checks_the_actor(tmp_path):
    with pytest.raises(ValueError, match=r"actor: expected output dim action_dim = 3 .* 2 \* action_dim = 6 .*got 2"):
        export_policy(tmp_path / "p.npz", chapter_actor(), action_dim=3)
    with pytest.raises(ValueError, match="memory_reset_interval: expected an integer >= 1, got 0"):
        export_policy(tmp_path / "p.npz", chapter_actor(), action_dim=1, memory_reset_interval=0)
    assert not os.listdir(tmp_path)


def test_loading_something_else_is_refused(tmp_path):
    save_checkpoint(tmp_path / "trainer.npz", {"x": np.zeros(3)}, {"step": 5})
    with pytest.raises(CheckpointError, match=r"meta\['kind'\]: expected 'memrl-policy', found no such key"):
        Policy.load(tmp_path / "trainer.npz")
    actor = chapter_actor()
    params = {k: np.array(v) for k, v in actor.named().items()}
    params["1.W_hh"] = params["1.W_hh"][:, :8].copy()
    meta = {"kind": "memrl-policy", "policy_version": 1, "layers": actor.config(), "observation_dim": 1,
            "action_dim": 1, "log_std_min": -20.0, "log_std_max": 2.0, "memory_reset_interval": None, "user": {}}
    save_checkpoint(tmp_path / "bad.npz", params, meta)
    with pytest.raises(CheckpointError, match=r"params\['1.W_hh'\]: expected shape \(48, 16\), got \(48, 8\)"):
        Policy.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_policy_runs_without_the_compiled_core(tmp_path, kind):
    """A policy file loads and acts with NumPy alone: neither memrl's compiled core, memrl.nn nor
    SciPy is imported."""
    path = tmp_path / "policy.npz"
    if kind == "continuous":
        export_policy(path, chapter_actor(), action_dim=1)
        shape, dtype, obs_dim = (2, 1), "float32", 1
    else:
        pytest.importorskip("gymnasium")  # the environment record describes a Gymnasium space
        export_discrete_actor(path, history=True)
        shape, dtype, obs_dim = (2, 2), "int64", 3
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from memrl.policy import Policy
        policy = Policy.load({str(path)!r})
        policy.reset(2)
        reward = None
        noise = np.random.default_rng(0).standard_normal((5, *{shape!r}), dtype=np.float32)
        for i in range(5):  # deterministic, then sampled (a discrete policy's inverse CDF uses erfc)
            history = {{}} if reward is None else {{"reward": reward}}
            action = policy.act(np.ones((2, {obs_dim}), np.float32), noise[i] if i % 2 else None, **history)
            reward = np.ones(2) if policy.previous_reward_input else None
        policy.reset_rows(np.array([True, False]))
        assert action.shape == {shape!r} and action.dtype == np.{dtype}, (action.shape, action.dtype)
        loaded = sorted(m for m in sys.modules if m.startswith(("memrl._core", "scipy")) or m == "memrl.nn")
        assert not loaded, loaded
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = run_python(code, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
