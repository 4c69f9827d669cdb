"""Every-step losses of the continuous agents (``every_step_losses``): the compiled float64
gradients of SAC's and TD3's critic and actor losses equal finite differences of the losses
written out here, where the Q-value of a fresh action at step t is computed the plain way: the
critic run over the window with the replayed actions at every step before t and the fresh action
at t, read at t (one forward per step). The engine computes it as a one-step branch off the
replayed pass's state; nothing of that is shared here.
"""

import numpy as np
from hypothesis import given, settings, strategies as st

from memrl.config import Config
from memrl.envs import MemoryEnv
from memrl.nn import TanhGaussianHead
from memrl.replay import ReplayBuffer, SamplingConfig, SequenceSampler
from memrl.sac import SAC
from memrl.td3 import TD3
from test_discrete_sac import assert_gradient_of_spec


def filled_batch(cfg, seed):
    rng = np.random.default_rng(seed)
    env = MemoryEnv(horizon=3, episode_step_limit=7, seed=seed)
    buffer = ReplayBuffer(100, 1, 1, max_episode_length=7)
    obs, _ = env.reset()
    for _ in range(40):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        terminated = bool(rng.random() < 0.1)
        buffer.add(0, obs, action, reward, next_obs, terminated, truncated or terminated)
        obs = env.reset()[0] if (truncated or terminated) else next_obs
    return SequenceSampler(buffer, cfg.sequence_length, cfg.batch_size, cfg.sampling).sample(rng)


def q_with_fresh_action_at(net, obs, actions, reset, t, b, fresh):
    """Q at step t of column b: replayed actions before t, ``fresh`` at t (the plain way)."""
    x = np.concatenate([obs, actions], axis=2).astype(np.float64)[:t + 1, b:b + 1].copy()
    x[t, 0, obs.shape[2]:] = fresh
    return float(net.forward(x, np.ascontiguousarray(reset[:t + 1, b:b + 1]))[t, 0, 0])


def next_actions(agent, obs_t, reset_t, noise):
    cfg = agent.config
    Lt, B = obs_t.shape[:2]
    if isinstance(agent, TD3):
        pre = agent.target_actor.forward(obs_t, reset_t).reshape(Lt * B, 1)
        eps = np.clip(cfg.target_policy_noise * noise, -cfg.target_noise_clip, cfg.target_noise_clip)
        return np.clip(np.tanh(pre) + eps, -1, 1).reshape(Lt, B), np.zeros((Lt, B))
    pre = agent.actor.forward(obs_t, reset_t).reshape(Lt * B, 2).copy()
    head = TanhGaussianHead(1, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max, dtype=np.float64)
    a, logp = head.forward(pre, noise)
    return a.reshape(Lt, B).copy(), logp.reshape(Lt, B).copy()


def steps(batch):
    L, B = batch.sequence_length, batch.batch_size
    return [(t, b) for t in range(L) for b in range(B) if not batch.padding[t, b]]


def spec_critic_loss(agent, i, batch, noise):
    cfg = agent.config
    d = batch.target_offset
    obs_t = batch.target_observations.astype(np.float64)
    a_next, logp_next = next_actions(agent, obs_t, batch.target_window_reset, noise)
    q = agent.critics[i].forward(np.concatenate([batch.current_observations, batch.current_actions], axis=2)
                                 .astype(np.float64), batch.reset)[:, :, 0].copy()
    sac = isinstance(agent, SAC)
    total, loss_steps = 0.0, steps(batch)
    for t, b in loss_steps:
        s = t + d
        q_next = min(q_with_fresh_action_at(net, obs_t, batch.target_actions, batch.target_window_reset, s, b,
                                            a_next[s, b]) for net in agent.target_critics)
        boot = q_next - (agent.alpha * logp_next[s, b] if sac and cfg.entropy_bonus and cfg.entropy_bonus_next_step
                         else 0.0)
        y = float(batch.rewards[t, b]) + cfg.gamma * (1.0 - float(batch.terminated[t, b])) * boot
        if sac and cfg.entropy_bonus and not cfg.entropy_bonus_next_step:
            y -= agent.alpha * logp_next[t, b]
        total += (q[t, b] - y) ** 2
    return total / (2 * len(loss_steps))


def spec_actor_loss(agent, batch, noise):
    cfg = agent.config
    L, B = batch.sequence_length, batch.batch_size
    obs = batch.current_observations.astype(np.float64)
    if isinstance(agent, TD3):
        a = np.tanh(agent.actor.forward(obs, batch.reset)[:, :, 0]).copy()
        logp = np.zeros((L, B))
        critics = agent.critics[:1]
    else:
        pre = agent.actor.forward(obs, batch.reset).reshape(L * B, 2).copy()
        head = TanhGaussianHead(1, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max, dtype=np.float64)
        a, logp = (v.reshape(L, B).copy() for v in head.forward(pre, noise))
        critics = agent.critics
    loss_steps = steps(batch)
    q_term = -sum(min(q_with_fresh_action_at(net, obs, batch.current_actions, batch.reset, t, b, a[t, b])
                      for net in critics) for t, b in loss_steps) / len(loss_steps)
    if isinstance(agent, TD3):
        return q_term
    entropy = logp.mean() if cfg.actor_entropy_positions == "all" else \
        sum(logp[t, b] for t, b in loss_steps) / len(loss_steps)
    return q_term + agent.alpha * entropy


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6),
    "algorithm": st.sampled_from(["sac", "td3"]),
    "gates": st.sampled_from(["exact", "fast"]),
    "next_step": st.booleans(),
    "include_first": st.booleans(),
    "positions": st.sampled_from(["all", "final"]),
    "layers": st.sampled_from([3, 4]),
    "L": st.integers(1, 6),
    "B": st.integers(1, 3),
})


def make_agent(c):
    include_first = c["include_first"] or not c["next_step"]
    cfg = Config(algorithm=c["algorithm"], sequence_length=c["L"], batch_size=c["B"], actor_hidden_dim=3,
                 critic_hidden_dim=3, gamma=0.9, total_steps=100, replay_capacity=100, gru_gates=c["gates"],
                 entropy_bonus_next_step=c["next_step"], alpha=0.4, actor_entropy_positions=c["positions"],
                 every_step_losses=True, target_policy_noise=0.3, target_noise_clip=0.4,
                 actor_num_layers=c["layers"] if c["L"] > 1 else 3, critic_num_layers=c["layers"] if c["L"] > 1 else 3,
                 sampling=SamplingConfig(include_first_step_in_targets=include_first)).validate()
    agent = (SAC if c["algorithm"] == "sac" else TD3)(cfg, 1, 1, seed=c["seed"], dtype=np.float64)
    rng = np.random.default_rng(c["seed"])
    for name, net in agent.networks().items():
        if name.startswith("target"):
            net.params += rng.normal(0, 0.1, net.size)
    return cfg, agent


def bind(agent, batch, critic_noise, actor_noise):
    agent.bind([batch, batch], [critic_noise, critic_noise], batch, actor_noise)


@settings(max_examples=10, deadline=None)
@given(cases)
def test_every_step_critic_gradients_match_the_written_out_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    rng = np.random.default_rng(c["seed"] + 2)
    noise = rng.standard_normal(agent.noise_shape(batch, target=True))
    bind(agent, batch, noise, rng.standard_normal(agent.noise_shape(batch, target=False)))
    for i in range(2):
        loss = agent.critic_gradient(i)
        assert_gradient_of_spec(agent.critics[i], agent.critics[i].grads.copy(), loss,
                                lambda i=i: spec_critic_loss(agent, i, batch, noise), f"critic {i}")


@settings(max_examples=10, deadline=None)
@given(cases)
def test_every_step_actor_gradient_matches_the_written_out_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    rng = np.random.default_rng(c["seed"] + 3)
    noise = rng.standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, rng.standard_normal(agent.noise_shape(batch, target=True)), noise)
    loss, _ = agent.actor_gradient()
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss, lambda: spec_actor_loss(agent, batch, noise),
                            "actor")


def test_at_final_steps_every_step_losses_reproduce_the_masked_targets():
    """The branch at a final step is the masked pass's fresh-action step: the targets agree there."""
    c = dict(seed=3, algorithm="sac", gates="fast", next_step=True, include_first=True, positions="all", layers=4,
             L=6, B=3)
    cfg, every = make_agent(c)
    masked = SAC(cfg.replace(every_step_losses=False), 1, 1, seed=3, dtype=np.float64)
    for mine, theirs in zip(masked.networks().values(), every.networks().values()):
        mine.params[:] = theirs.params
    batch = filled_batch(cfg, 3)
    noise = np.random.default_rng(0).standard_normal(every.noise_shape(batch, target=True))
    actor_noise = np.zeros(every.noise_shape(batch, target=False))
    bind(every, batch, noise, actor_noise)
    bind(masked, batch, noise, actor_noise)
    every.critic_gradient(0)
    masked.critic_gradient(0)
    final = batch.final.astype(bool)
    np.testing.assert_allclose(every._critic_updates[0].targets[final], masked._critic_updates[0].targets[final],
                               rtol=1e-12, atol=1e-12)
    assert (~final & ~batch.padding[:-1].astype(bool)).any()  # and there are more loss steps than finals


def test_the_quirk_is_refused_with_every_step_losses():
    import pytest

    with pytest.raises(ValueError, match="every_step_losses"):
        Config(every_step_losses=True, rltools_critic_backward_ignores_resets=True).validate()
