"""memrl.spaces (observation encoders, action decoders), the Gymnasium adapter's discrete spaces,
the history inputs (rollout, replay, sampling and the exported policy agree on them), the masked
CartPoles, and how the action space picks (or refuses) the agent."""
import json

import numpy as np
import pytest

from memrl.config import preset
from memrl.spaces import ActionDecoder, ObservationEncoder, describe_action_space, describe_observation_space
from helpers import export_discrete_actor

gym = pytest.importorskip("gymnasium")
spaces = gym.spaces


def test_observation_encoder_one_hot_and_concatenation():
    space = spaces.Tuple((spaces.Discrete(3, start=-1), spaces.MultiDiscrete([2, 3]),
                          spaces.Box(-2, 2, (2, 1), np.float32), spaces.Tuple((spaces.Discrete(2),))))
    enc = ObservationEncoder.for_space(space)
    assert enc.size == 3 + 5 + 2 + 2
    x = enc.encode((1, np.array([1, 0]), np.array([[0.5], [-1.5]], np.float32), (1,)))
    np.testing.assert_array_equal(x, [0, 0, 1, 0, 1, 1, 0, 0, 0.5, -1.5, 0, 1])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(enc.low, [0] * 8 + [-2, -2] + [0, 0])
    np.testing.assert_array_equal(enc.high, [1] * 8 + [2, 2] + [1, 1])
    # the JSON description alone encodes the same way (what a policy file keeps)
    again = ObservationEncoder(json.loads(json.dumps(describe_observation_space(space))))
    np.testing.assert_array_equal(again.encode((1, [1, 0], [[0.5], [-1.5]], (1,))), x)
    with pytest.raises(ValueError, match=r"expected an integer in \[-1, 2\)"):
        enc.encode((2, [1, 0], [[0.5], [-1.5]], (1,)))
    with pytest.raises(ValueError, match="tuple of 4 parts"):
        enc.encode((1, [1, 0]))


def test_action_decoder_discrete_and_multi_discrete():
    d = ActionDecoder(describe_action_space(spaces.Discrete(4, start=2)))
    assert d.discrete and d.nvec == [4] and d.action_dim == 1
    assert d.decode(np.array([3.0])) == 5 and isinstance(d.decode([0.0]), np.int64)
    m = ActionDecoder(describe_action_space(spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]))))
    assert m.nvec == [2, 3, 4, 5] and m.action_dim == 4
    np.testing.assert_array_equal(m.decode([1, 2, 3, 4]), [[1, 2], [3, 4]])
    for bad in ([2, 0, 0, 0], [0.5, 0, 0, 0], [np.nan, 0, 0, 0]):
        with pytest.raises(ValueError, match="category indices"):
            m.decode(bad)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        m.decode([1, 2])


def test_gymnasium_cartpole_takes_indices():
    from memrl.envs.gym import GymnasiumEnv

    env = GymnasiumEnv("CartPole-v1", seed=0)
    assert env.action_nvec == [2] and env.action_dim == 1 and env.observation_dim == 4
    env.reset()
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0], np.float32))
    assert reward == 1.0 and obs.shape == (4,)
    with pytest.raises(ValueError, match="category indices"):
        env.step(np.array([2.0]))


@pytest.mark.parametrize("variant, kept", [("P", [0, 2]), ("V", [1, 3])])
def test_masked_cartpole_keeps_positions_or_velocities(variant, kept):
    from memrl.envs.gym import GymnasiumEnv

    env = GymnasiumEnv(f"memrl/CartPole-{variant}-v0", seed=3)
    raw = gym.make("CartPole-v1")
    assert env.observation_dim == 2 and env.episode_step_limit == 500
    np.testing.assert_array_equal(env.reset()[0], raw.reset(seed=3)[0][kept])
    for a in (0, 1, 1, 0):
        np.testing.assert_array_equal(env.step(np.array([a], np.float32))[0], raw.step(a)[0][kept])


def test_td3_on_discrete_actions_and_unmasked_histories_are_refused():
    from memrl.loop import Trainer

    with pytest.raises(ValueError, match="'td3' needs a continuous .* discrete actions .* SAC preset"):
        Trainer(preset("pendulum-td3").replace(environment="gymnasium:CartPole-v1", environment_kwargs={}), 0)
    with pytest.raises(ValueError, match="mask_non_terminal: expected True"):
        preset("memory-chapter").replace(mask_non_terminal=False).validate()


def small(name, **changes):
    return preset(name).replace(total_steps=300, n_warmup_steps=60, n_warmup_steps_critic=60,
                                n_warmup_steps_actor=60, sequence_length=8, batch_size=4, actor_hidden_dim=8,
                                critic_hidden_dim=8, threads=1, evaluation_interval=1000, **changes)


def test_any_sac_preset_on_a_discrete_environment_trains_discrete_sac():
    from memrl.discrete_sac import DiscreteSAC
    from memrl.loop import Trainer

    cfg = preset("memory-chapter").replace(environment="gymnasium:CartPole-v1", environment_kwargs={},
                                           total_steps=200, n_warmup_steps=50, n_warmup_steps_critic=50,
                                           n_warmup_steps_actor=100, threads=1)
    t = Trainer(cfg, 0)
    assert isinstance(t.agent, DiscreteSAC)
    while not t.step():
        pass
    actions = t.buffer.action[0, :200, 0]
    assert set(np.unique(actions)) == {0.0, 1.0}  # warm-up and actor: indices only


def test_history_inputs_agree_in_rollout_replay_and_sampling():
    """Every stored observation's history part is the previous stored action (one-hot) and reward
    of its episode, zero at an episode's first step; a transition's next observation carries its
    own action and reward; sampled windows hold the same rows."""
    from memrl.loop import Trainer

    t = Trainer(small("cartpole-p-sac"), 1)
    while not t.step():
        pass
    buf = t.buffer
    n = buf.size(0)
    obs, act, rew, nxt = buf.observation[0, :n], buf.action[0, :n], buf.reward[0, :n], buf.next_observation[0, :n]
    assert obs.shape[1] == 2 + 2 + 1
    for i in range(n):
        np.testing.assert_array_equal(nxt[i, 2:4], np.eye(2)[int(act[i, 0])])
        assert nxt[i, 4] == np.float32(rew[i])
        if buf.episode_start[0, i] == i:
            assert not obs[i, 2:].any()
        else:
            np.testing.assert_array_equal(obs[i], nxt[i - 1])
    batch = t.samplers[0].sample(np.random.default_rng(0))
    for t_, b in zip(*np.nonzero(~batch.padding[:-1].astype(bool))):
        np.testing.assert_array_equal(batch.observations[t_, b], obs[batch.transition_index[t_, b]])


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_exported_policy_with_history_inputs_acts_as_training(tmp_path, kind):
    """The NumPy policy file, fed raw observations and rewards, takes the agent's deterministic
    actions on the wrapper's observations, through resets, in the environment's units: the
    category for discrete SAC (CartPole-V), the torque in [-2, 2] for continuous SAC (Gymnasium's
    Pendulum-v1, whose previous-action input is the agent's action in [-1, 1])."""
    from memrl.envs import build_environment
    from memrl.loop import train
    from memrl.policy import Policy

    if kind == "discrete":
        cfg = small("cartpole-v-sac")
    else:
        cfg = small("pendulum-p-sac", environment="gymnasium:Pendulum-v1", environment_kwargs={})
    result = train(cfg, 2, log_dir=str(tmp_path / "run"), print_fn=None)
    agent = result.trainer.agent
    policy = Policy.load(tmp_path / "run" / "policy.npz")
    assert policy.previous_action_input and policy.previous_reward_input
    assert policy.discrete == (kind == "discrete")
    if kind == "discrete":
        assert policy.action_nvec == [2]
    env = build_environment(cfg, 7)  # the wrapper: what the agent saw in training
    raw = env.env  # the Gymnasium adapter's raw observations, as a user has them
    state = agent.actor.initial_state(1)
    obs, _ = env.reset(seed=7)
    reward, steps, torques = None, 0, []
    policy.reset(1)
    for _ in range(3):
        done = False
        reset = np.ones(1, np.uint8)
        while not done:
            mine = agent.act(obs[None], state, reset).copy()
            reset[:] = 0
            raw_obs = obs[:raw.observation_dim]
            theirs = policy.act(raw_obs, reward=reward)
            if kind == "discrete":
                assert int(theirs) == int(mine[0, 0])
            else:
                expected = raw.env_action(mine[0])
                np.testing.assert_allclose(expected, 2 * mine[0], rtol=1e-6)  # Pendulum-v1: [-2, 2]
                assert theirs.shape == (1,) and theirs.dtype == np.float32
                np.testing.assert_allclose(theirs, expected, rtol=0, atol=1e-5)
                torques.append(float(expected[0]))
            obs, reward, terminated, truncated, _ = env.step(mine[0])
            done = terminated or truncated
            steps += 1
        obs, _ = env.reset()
        policy.reset_rows(np.ones(1, bool))
        reward = None
    assert steps > 20
    if kind == "continuous":  # torques, twice the agent's action: the two units differ here
        assert max(abs(t) for t in torques) > 0.1
    with pytest.raises(ValueError, match="reward: expected the reward"):
        policy.act(obs[:raw.observation_dim])
        policy.act(obs[:raw.observation_dim])


def test_exported_policy_samples_like_the_rollout(tmp_path):
    from memrl.policy import Policy

    agent = export_discrete_actor(tmp_path / "p.npz", history=False)
    policy = Policy.load(tmp_path / "p.npz")
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 3)).astype(np.float32)
    noise = rng.standard_normal((6, 2)).astype(np.float32)
    state = agent.actor.initial_state(6)
    expected = agent.act(obs, state, np.ones(6, np.uint8), noise).copy()
    got = policy.act(obs, noise, normalized=True)
    np.testing.assert_array_equal(got, expected)
    policy.reset(6)
    np.testing.assert_array_equal(policy.act(obs, noise), expected.astype(np.int64))


def test_environment_spec_records_spaces_and_history():
    from memrl.envs import build_environment, environment_spec

    cfg = small("cartpole-p-sac")
    spec = environment_spec(cfg, build_environment(cfg, 0))
    assert spec["observation_space"] == [{"kind": "box", "shape": [2]}]
    assert spec["action_space"]["kind"] == "discrete" and spec["action_space"]["nvec"] == [2]
    assert spec["history_inputs"] == {"previous_action": True, "previous_reward": True}
    assert json.loads(json.dumps(spec)) == spec


def test_discrete_checkpoints_resume_alike_and_export(tmp_path):
    """A discrete SAC trainer's checkpoint (history inputs on) loads into trainers that continue
    identically, and its actor exports to a policy file."""
    from memrl.loop import Trainer
    from memrl.policy import Policy, export_from_checkpoint

    t = Trainer(small("cartpole-p-sac"), 4)
    for _ in range(120):
        t.step()
    t.save(str(tmp_path / "ckpt.npz"))
    a, b = Trainer.load(str(tmp_path / "ckpt.npz")), Trainer.load(str(tmp_path / "ckpt.npz"))
    for _ in range(60):
        a.step()
        b.step()
    for name, net in a.agent.networks().items():
        np.testing.assert_array_equal(net.params, b.agent.networks()[name].params, name)
    assert a.agent.alpha == b.agent.alpha
    export_from_checkpoint(str(tmp_path / "ckpt.npz"), str(tmp_path / "p.npz"))
    policy = Policy.load(tmp_path / "p.npz")
    assert policy.discrete and policy.previous_action_input and policy.observation_dim == 5
    assert int(policy.act(np.zeros(2, np.float32))) in (0, 1)
