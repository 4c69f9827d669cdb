"""SAC updates: the compiled updates' gradients (float64) equal finite differences of the stated losses.

The losses are written here from the formulas (internals 3.3 and 3.4) with explicit loops over
the window, independently of the kernels; only the network forwards and the head (tested
elsewhere) are shared.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl import testing
from memrl.config import Config
from memrl.envs import MemoryEnv
from memrl.replay import ReplayBuffer, SamplingConfig, SequenceSampler
from memrl.nn import TanhGaussianHead
from memrl.sac import SAC


def tiny_config(**changes):
    base = Config(sequence_length=6, batch_size=3, actor_hidden_dim=3, critic_hidden_dim=3, gamma=0.9,
                  total_steps=100, replay_capacity=100, gru_gates="exact")
    return base.replace(**changes)


def filled_batch(cfg, seed):
    """A batch sampled from replayed memory-environment episodes with random actions."""
    rng = np.random.default_rng(seed)
    env = MemoryEnv(horizon=3, episode_step_limit=7, seed=seed)
    buffer = ReplayBuffer(100, 1, 1, max_episode_length=7)
    obs, _ = env.reset()
    for _ in range(40):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        terminated = bool(rng.random() < 0.1)  # exercise the termination mask too
        buffer.add(0, obs, action, reward, next_obs, terminated, truncated or terminated)
        obs = env.reset()[0] if (truncated or terminated) else next_obs
    sampler = SequenceSampler(buffer, cfg.sequence_length, cfg.batch_size, cfg.sampling)
    return sampler.sample(rng)


def head(agent):
    cfg = agent.config
    return TanhGaussianHead(agent.action_dim, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max,
                            dtype=agent.dtype)


def bind(agent, batch, critic_noise=None, actor_noise=None):
    """The agent's compiled updates bound to (float64 copies of) this batch and noise."""
    critic_noise = np.zeros(agent.noise_shape(batch, target=True)) if critic_noise is None else critic_noise
    actor_noise = np.zeros(agent.noise_shape(batch, target=False)) if actor_noise is None else actor_noise
    critic_noise = np.ascontiguousarray(critic_noise, agent.dtype)
    actor_noise = np.ascontiguousarray(actor_noise, agent.dtype)
    agent.bind([batch, batch], [critic_noise, critic_noise], batch, actor_noise)


def spec_critic_loss(agent, i, batch, noise):
    """1/(2 N_f) sum_final (Q_i(o_t, a_t) - y_t)^2, y from the target nets (written from the spec)."""
    cfg = agent.config
    L, B = batch.sequence_length, batch.batch_size
    d = batch.target_offset
    obs_t = batch.target_observations.astype(np.float64)
    Lt = obs_t.shape[0]
    pre = agent.actor.forward(obs_t, batch.target_window_reset).reshape(Lt * B, 2).copy()
    next_a, next_logp = (v.copy() for v in head(agent).forward(pre, noise))
    next_a, next_logp = next_a.reshape(Lt, B), next_logp.reshape(Lt, B)
    x = np.zeros((Lt, B, 2))
    for s in range(Lt):
        for b in range(B):
            x[s, b, 0] = obs_t[s, b, 0]
            padding = batch.target_window_padding[s, b]
            x[s, b, 1] = next_a[s, b] if padding else batch.target_actions[s, b, 0]
    q1 = agent.target_critics[0].forward(x, batch.target_window_reset)[:, :, 0].copy()
    q2 = agent.target_critics[1].forward(x, batch.target_window_reset)[:, :, 0].copy()
    alpha = agent.alpha
    xq = np.concatenate([batch.current_observations, batch.current_actions], axis=2).astype(np.float64)
    q = agent.critics[i].forward(xq, batch.reset)[:, :, 0]
    total, n = 0.0, 0
    for t in range(L):
        for b in range(B):
            if not batch.final[t, b]:
                continue
            boot = min(q1[t + d, b], q2[t + d, b])
            if cfg.entropy_bonus_next_step:
                boot -= alpha * next_logp[t + d, b]
            y = float(batch.rewards[t, b]) + cfg.gamma * (1.0 - float(batch.terminated[t, b])) * boot
            if not cfg.entropy_bonus_next_step:
                y -= alpha * next_logp[t, b]
            total += (q[t, b] - y) ** 2
            n += 1
    return total / (2 * n)


def spec_actor_loss(agent, batch, noise):
    """-(1/N_f) sum_final min_j Q_j(o_t, a~_t) + alpha mean_E log pi_t (E: all steps or final)."""
    cfg = agent.config
    L, B = batch.sequence_length, batch.batch_size
    obs = batch.current_observations.astype(np.float64)
    pre = agent.actor.forward(obs, batch.reset).reshape(L * B, 2).copy()
    a, logp = (v.copy() for v in head(agent).forward(pre, noise))
    a, logp = a.reshape(L, B), logp.reshape(L, B)
    x = np.zeros((L, B, 2))
    for t in range(L):
        for b in range(B):
            x[t, b, 0] = obs[t, b, 0]
            x[t, b, 1] = a[t, b] if batch.final[t, b] else batch.current_actions[t, b, 0]
    q1 = agent.critics[0].forward(x, batch.reset)[:, :, 0].copy()
    q2 = agent.critics[1].forward(x, batch.reset)[:, :, 0].copy()
    finals = [(t, b) for t in range(L) for b in range(B) if batch.final[t, b]]
    q_term = -sum(min(q1[t, b], q2[t, b]) for t, b in finals) / len(finals)
    if cfg.actor_entropy_positions == "all":
        ent = logp.mean()
    else:
        ent = sum(logp[t, b] for t, b in finals) / len(finals)
    return q_term + agent.alpha * ent


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6),
    "gates": st.sampled_from(["exact", "fast"]),
    "next_step": st.booleans(),
    "include_first": st.booleans(),
    "positions": st.sampled_from(["all", "final"]),
    "alpha": st.sampled_from([0.3, 1.0]),
})


def make_agent(c):
    include_first = c["include_first"] or not c["next_step"]
    cfg = tiny_config(gru_gates=c["gates"], entropy_bonus_next_step=c["next_step"], alpha=c["alpha"],
                      actor_entropy_positions=c["positions"],
                      sampling=SamplingConfig(include_first_step_in_targets=include_first))
    agent = SAC(cfg, 1, 1, seed=c["seed"], dtype=np.float64)
    # Move the targets away from the critics so the test sees which network is used where.
    for target in agent.target_critics:
        target.params += np.random.default_rng(c["seed"]).normal(0, 0.1, target.size)
    return cfg, agent


def assert_gradient_of_spec(net, grads, loss, spec, name):
    """``loss`` equals ``spec()`` and ``grads`` equal its finite differences over ``net``'s parameters."""
    assert math.isclose(loss, spec(), rel_tol=1e-10, abs_tol=1e-12)
    params = net.params.copy()

    def f(p):
        net.params[:] = p
        return spec()

    numeric = testing.numerical_gradient(f, params.copy())
    net.params[:] = params
    testing.assert_gradient_close(grads, numeric, rtol=1e-6, atol=1e-8, name=name)


@settings(max_examples=10)
@given(cases)
def test_critic_gradient_matches_finite_differences_of_the_stated_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    noise = np.random.default_rng(c["seed"]).standard_normal(agent.noise_shape(batch, target=True))
    bind(agent, batch, critic_noise=noise)
    for i in range(2):
        loss = agent.critic_gradient(i)
        assert_gradient_of_spec(agent.critics[i], agent.critics[i].grads.copy(), loss,
                                lambda i=i: spec_critic_loss(agent, i, batch, noise), f"critic {i}")


@settings(max_examples=10)
@given(cases)
def test_actor_gradient_matches_finite_differences_of_the_stated_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    noise = np.random.default_rng(c["seed"] + 1).standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, actor_noise=noise)
    loss, _ = agent.actor_gradient()
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss, lambda: spec_actor_loss(agent, batch, noise),
                            "actor")


def test_alpha_gradient_is_the_entropy_gap():
    cfg, agent = make_agent(dict(seed=3, gates="exact", next_step=False, include_first=True,
                                 positions="all", alpha=0.5))
    batch = filled_batch(cfg, 3)
    noise = np.random.default_rng(0).standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, actor_noise=noise)
    _, gap = agent.actor_gradient()
    L, B = batch.sequence_length, batch.batch_size
    pre = agent.actor.forward(batch.current_observations.astype(np.float64), batch.reset).reshape(L * B, 2)
    _, logp = head(agent).forward(np.ascontiguousarray(pre), noise)
    assert math.isclose(gap, -logp.mean() - agent.target_entropy, rel_tol=1e-12)
    before = agent.alpha
    agent.log_alpha.step(gap)
    assert (agent.alpha < before) == (gap > 0)


def test_frozen_alpha_stays_fixed():
    cfg = tiny_config(adaptive_alpha=False, alpha=0.7)
    agent = SAC(cfg, 1, 1, seed=0)
    batch = filled_batch(cfg, 0)
    noise = np.random.default_rng(0).standard_normal(agent.noise_shape(batch, target=False)).astype(np.float32)
    bind(agent, batch, actor_noise=noise)
    for _ in range(3):
        agent.update_actor()
    assert agent.alpha == pytest.approx(0.7, rel=1e-12)


def test_rltools_quirk_switch_changes_the_actor_gradient_only_through_resets():
    c = dict(seed=5, gates="fast", next_step=False, include_first=True, positions="all", alpha=1.0)
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, 5)
    assert batch.reset[1:].any(), "the batch must contain resets inside windows"
    noise = np.random.default_rng(0).standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, actor_noise=noise)
    agent.actor_gradient()
    correct = agent.actor.grads.copy()
    quirk = SAC(cfg.replace(rltools_critic_backward_ignores_resets=True), 1, 1, seed=c["seed"], dtype=np.float64)
    for mine, theirs in zip(quirk.networks().values(), agent.networks().values()):
        mine.params[:] = theirs.params
    bind(quirk, batch, actor_noise=noise)
    quirk.actor_gradient()
    quirky = quirk.actor.grads.copy()
    assert not np.allclose(correct, quirky)


def test_targets_follow_polyak_formula():
    cfg = tiny_config(tau=0.25)
    agent = SAC(cfg, 1, 1, seed=0, dtype=np.float64)
    agent.critics[0].params += 1.0
    before = agent.target_critics[0].params.copy()
    agent.update_targets()
    np.testing.assert_allclose(agent.target_critics[0].params, 0.75 * before + 0.25 * agent.critics[0].params)
