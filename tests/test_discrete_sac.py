"""Discrete SAC: the categorical head's kernels, and the compiled updates' float64 gradients
against finite differences of the losses written out here from the formulas
(``memrl/discrete_sac.py``; Christodoulou 2019), with explicit loops over windows and joint actions.

Only the network forwards (tested elsewhere) are shared with the code under test; softmaxes,
joint distributions, expectations, targets and masks are recomputed here in NumPy.
"""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl import testing
from memrl._core import _categorical
from memrl.config import Config
from memrl.discrete_sac import DiscreteSAC
from memrl.replay import ReplayBuffer, SamplingConfig, SequenceSampler


# ---------------------------------------------------------------------------------------------
# The categorical head
# ---------------------------------------------------------------------------------------------

def log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max()
    return z - m - math.log(np.exp(z - m).sum())


def joint_distribution(logits, nvec):
    """[(joint index, indices, log pi)] of one row, component 0 most significant."""
    blocks = np.split(np.asarray(logits, np.float64), np.cumsum(nvec)[:-1])
    logps = [log_softmax(b) for b in blocks]
    out = []
    for j, a in enumerate(itertools.product(*[range(n) for n in nvec])):
        assert j == np.ravel_multi_index(a, nvec)
        out.append((j, a, sum(lp[i] for lp, i in zip(logps, a))))
    return out


nvecs = st.one_of(st.lists(st.integers(1, 5), min_size=1, max_size=1),
                  st.lists(st.integers(1, 4), min_size=2, max_size=3))


@settings(max_examples=30, deadline=None)
@given(nvec=nvecs, N=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_categorical_forward_is_the_product_of_softmaxes(nvec, N, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (N, sum(nvec)))
    logp, jlogp, jp = _categorical.forward(z, nvec)
    for n in range(N):
        blocks = np.split(z[n], np.cumsum(nvec)[:-1])
        np.testing.assert_allclose(logp[n], np.concatenate([log_softmax(b) for b in blocks]), rtol=1e-12, atol=1e-12)
        for j, _, lp in joint_distribution(z[n], nvec):
            assert jlogp[n, j] == pytest.approx(lp, rel=1e-12, abs=1e-12)
            assert jp[n, j] == pytest.approx(math.exp(lp), rel=1e-12, abs=1e-15)
        assert jp[n].sum() == pytest.approx(1.0, rel=1e-12)
    # float32 follows float64
    logp32, jlogp32, jp32 = _categorical.forward(z.astype(np.float32), nvec)
    np.testing.assert_allclose(jp32, jp, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(nvec=nvecs, N=st.integers(1, 3), seed=st.integers(0, 2**31), c=st.sampled_from([0.0, 0.7]))
def test_categorical_backward_matches_finite_differences(nvec, N, seed, c):
    """Row loss sum_a pi(a) (m(a) + c log pi(a)): the entropy-like term is differentiated too."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (N, sum(nvec)))
    m = rng.normal(0, 1, (N, math.prod(nvec)))

    def loss(zz):
        _, jlogp, jp = _categorical.forward(zz.reshape(N, -1), nvec)
        return float((jp * (m + c * jlogp)).sum())

    logp, jlogp, jp = _categorical.forward(z, nvec)
    dz = _categorical.backward(logp, jp, np.ascontiguousarray(m + c * jlogp), nvec)
    numeric = testing.numerical_gradient(loss, z.copy().reshape(-1)).reshape(N, -1)
    testing.assert_gradient_close(dz, numeric, rtol=1e-7, atol=1e-9, name="dz")


def test_categorical_act_argmax_and_inverse_cdf_sampling():
    from scipy.stats import norm

    nvec = [3, 2]
    z = np.array([[0.0, 2.0, 2.0, -1.0, 1.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(_categorical.act(z, nvec), [[1, 1], [0, 0]])  # first maximum
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((20000, 2))
    zs = np.repeat(z[:1], 20000, axis=0)
    samples = _categorical.act(zs, nvec, noise)
    for k, (lo, hi) in enumerate(((0, 3), (3, 5))):
        p = np.exp(log_softmax(z[0, lo:hi]))
        # exactly the inverse CDF at Phi(noise)
        expected = np.minimum((norm.cdf(noise[:, k])[:, None] >= np.cumsum(p)[None, :]).sum(1), len(p) - 1)
        np.testing.assert_array_equal(samples[:, k], expected)
        freq = np.bincount(samples[:, k].astype(int), minlength=len(p)) / len(samples)
        np.testing.assert_allclose(freq, p, atol=0.015)


def test_categorical_checks_shapes():
    with pytest.raises(ValueError, match="z: expected 5 columns"):
        _categorical.forward(np.zeros((2, 4)), [3, 2])
    with pytest.raises(ValueError, match="nvec: expected"):
        _categorical.forward(np.zeros((2, 4)), [4, 0])


# ---------------------------------------------------------------------------------------------
# The updates against the written-out losses
# ---------------------------------------------------------------------------------------------

def tiny_config(**changes):
    base = Config(environment="gymnasium:CartPole-v1", environment_kwargs={}, sequence_length=6, batch_size=3,
                  actor_hidden_dim=3, critic_hidden_dim=3, gamma=0.9, total_steps=100, replay_capacity=100,
                  gru_gates="exact")
    return base.replace(**changes)


def filled_batch(cfg, nvec, O, seed):
    """A batch sampled from random episodes: random observations, random valid indices, random
    terminations."""
    rng = np.random.default_rng(seed)
    K = len(nvec)
    buffer = ReplayBuffer(100, O, K, max_episode_length=7)
    obs = rng.normal(size=O).astype(np.float32)
    t = 0
    for _ in range(40):
        action = np.array([rng.integers(n) for n in nvec], np.float32)
        next_obs = rng.normal(size=O).astype(np.float32)
        t += 1
        terminated = bool(rng.random() < 0.1)
        end = terminated or t == 7
        buffer.add(0, obs, action, float(rng.normal()), next_obs, terminated, end)
        if end:
            obs, t = rng.normal(size=O).astype(np.float32), 0
        else:
            obs = next_obs
    sampler = SequenceSampler(buffer, cfg.sequence_length, cfg.batch_size, cfg.sampling)
    return sampler.sample(rng)


def bind(agent, batch):
    critic_noise = np.zeros(agent.noise_shape(batch, target=True), agent.dtype)
    actor_noise = np.zeros(agent.noise_shape(batch, target=False), agent.dtype)
    agent.bind([batch, batch], [critic_noise, critic_noise], batch, actor_noise)


def distributions(agent, obs, reset):
    """(T, B) lists of the joint distribution [(j, a, log pi)] from the actor's logits."""
    T, B = obs.shape[:2]
    logits = agent.actor.forward(np.ascontiguousarray(obs, np.float64), reset).copy()
    return [[joint_distribution(logits[t, b], agent.action_nvec) for b in range(B)] for t in range(T)]


def loss_steps(cfg, batch):
    L, B = batch.sequence_length, batch.batch_size
    if cfg.every_step_losses:
        return [(t, b) for t in range(L) for b in range(B) if not batch.padding[t, b]]
    return [(t, b) for t in range(L) for b in range(B) if batch.final[t, b]]


def spec_critic_loss(agent, i, batch):
    """1/(2n) sum_{loss steps} (Q_i(h_t)[a_t] - y_t)^2 with
    y_t = r_t + gamma (1 - term_t) sum_a pi(a|h') [min_j Q'_j(h', a) - alpha log pi(a|h')] (+ alpha H_t
    for the current-step bonus), h' the target window's next slot."""
    cfg = agent.config
    d = batch.target_offset
    obs_t = batch.target_observations.astype(np.float64)
    dist = distributions(agent, obs_t, batch.target_window_reset)
    q1 = agent.target_critics[0].forward(obs_t, batch.target_window_reset).copy()
    q2 = agent.target_critics[1].forward(obs_t, batch.target_window_reset).copy()
    q = agent.critics[i].forward(batch.current_observations.astype(np.float64), batch.reset).copy()
    alpha = agent.alpha
    total, steps = 0.0, loss_steps(cfg, batch)
    for t, b in steps:
        s = t + d
        value = sum(math.exp(lp) * (min(q1[s, b, j], q2[s, b, j])
                                    - (alpha * lp if cfg.entropy_bonus and cfg.entropy_bonus_next_step else 0.0))
                    for j, _, lp in dist[s][b])
        keep = 1.0 if cfg.ignore_termination else 1.0 - float(batch.terminated[t, b])
        y = float(batch.rewards[t, b]) + cfg.gamma * keep * value
        if cfg.entropy_bonus and not cfg.entropy_bonus_next_step:
            y += alpha * -sum(math.exp(lp) * lp for _, _, lp in dist[t][b])
        a = np.ravel_multi_index(tuple(int(x) for x in batch.actions[t, b]), agent.action_nvec)
        total += (q[t, b, a] - y) ** 2
    return total / (2 * len(steps))


def spec_actor_loss(agent, batch):
    """(1/n) sum_{loss steps} sum_a pi(a|h) [-min_j Q_j(h, a)] + alpha mean_E sum_a pi log pi, and H."""
    cfg = agent.config
    L, B = batch.sequence_length, batch.batch_size
    obs = batch.current_observations.astype(np.float64)
    dist = distributions(agent, obs, batch.reset)
    q1 = agent.critics[0].forward(obs, batch.reset).copy()
    q2 = agent.critics[1].forward(obs, batch.reset).copy()
    steps = loss_steps(cfg, batch)
    q_term = -sum(math.exp(lp) * min(q1[t, b, j], q2[t, b, j]) for t, b in steps for j, _, lp in dist[t][b])
    entropy_steps = [(t, b) for t in range(L) for b in range(B)] if cfg.actor_entropy_positions == "all" else steps
    neg_entropy = sum(math.exp(lp) * lp for t, b in entropy_steps for _, _, lp in dist[t][b]) / len(entropy_steps)
    return q_term / len(steps) + agent.alpha * neg_entropy, -neg_entropy


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6),
    "nvec": st.sampled_from([[2], [3], [2, 3], [1, 2, 2]]),
    "O": st.integers(1, 3),
    "gates": st.sampled_from(["exact", "fast"]),
    "next_step": st.booleans(),
    "include_first": st.booleans(),
    "positions": st.sampled_from(["all", "final"]),
    "every_step": st.booleans(),
    "entropy_bonus": st.booleans(),
    "ignore_termination": st.booleans(),
    "alpha": st.sampled_from([0.3, 1.0]),
    "L": st.integers(1, 6),
    "B": st.integers(1, 3),
})


def make_agent(c):
    include_first = c["include_first"] or not c["next_step"]
    cfg = tiny_config(gru_gates=c["gates"], entropy_bonus_next_step=c["next_step"], alpha=c["alpha"],
                      actor_entropy_positions=c["positions"], every_step_losses=c["every_step"],
                      entropy_bonus=c["entropy_bonus"], ignore_termination=c["ignore_termination"],
                      sequence_length=c["L"], batch_size=c["B"],
                      sampling=SamplingConfig(include_first_step_in_targets=include_first))
    agent = DiscreteSAC(cfg, c["O"], c["nvec"], seed=c["seed"], dtype=np.float64)
    for target in agent.target_critics:  # so the test sees which network is used where
        target.params += np.random.default_rng(c["seed"]).normal(0, 0.1, target.size)
    return cfg, agent


def assert_gradient_of_spec(net, grads, loss, spec, name):
    assert math.isclose(loss, spec(), rel_tol=1e-10, abs_tol=1e-12)
    params = net.params.copy()

    def f(p):
        net.params[:] = p
        return spec()

    numeric = testing.numerical_gradient(f, params.copy())
    net.params[:] = params
    testing.assert_gradient_close(grads, numeric, rtol=1e-6, atol=1e-8, name=name)


@settings(max_examples=12)
@given(cases)
def test_critic_gradient_matches_finite_differences_of_the_stated_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["nvec"], c["O"], c["seed"])
    bind(agent, batch)
    for i in range(2):
        loss = agent.critic_gradient(i)
        assert_gradient_of_spec(agent.critics[i], agent.critics[i].grads.copy(), loss,
                                lambda i=i: spec_critic_loss(agent, i, batch), f"critic {i}")


@settings(max_examples=12)
@given(cases)
def test_actor_gradient_matches_finite_differences_of_the_stated_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["nvec"], c["O"], c["seed"])
    bind(agent, batch)
    loss, alpha_gradient = agent.actor_gradient()
    _, entropy = spec_actor_loss(agent, batch)
    # the temperature's loss alpha (H - target): its gradient in log alpha
    assert alpha_gradient == pytest.approx(agent.alpha * (entropy - agent.target_entropy), rel=1e-10, abs=1e-12)
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss, lambda: spec_actor_loss(agent, batch)[0],
                            "actor")


def test_float32_updates_follow_float64():
    c = dict(seed=4, nvec=[2, 3], O=2, gates="fast", next_step=True, include_first=False, positions="all",
             every_step=True, entropy_bonus=True, ignore_termination=False, alpha=0.5, L=5, B=3)
    cfg, agent64 = make_agent(c)
    agent32 = DiscreteSAC(cfg, 2, [2, 3], seed=4)
    for mine, theirs in zip(agent32.networks().values(), agent64.networks().values()):
        mine.params[:] = theirs.params
    batch = filled_batch(cfg, [2, 3], 2, 4)
    bind(agent64, batch)
    bind(agent32, batch)
    for i in range(2):
        assert agent32.critic_gradient(i) == pytest.approx(agent64.critic_gradient(i), rel=1e-5)
        np.testing.assert_allclose(agent32.critics[i].grads, agent64.critics[i].grads, rtol=1e-3, atol=1e-5)
    l32, g32 = agent32.actor_gradient()
    l64, g64 = agent64.actor_gradient()
    assert l32 == pytest.approx(l64, rel=1e-5) and g32 == pytest.approx(g64, rel=1e-5)
    np.testing.assert_allclose(agent32.actor.grads, agent64.actor.grads, rtol=1e-3, atol=1e-5)


def test_updates_change_parameters_and_alpha_moves_towards_the_target():
    cfg = tiny_config(alpha=0.5)
    agent = DiscreteSAC(cfg, 2, [3], seed=0)
    batch = filled_batch(cfg, [3], 2, 0)
    bind(agent, batch)
    before = {name: net.params.copy() for name, net in agent.networks().items()}
    agent.update_critics(update_targets=True)
    agent.update_actor()
    for name, net in agent.networks().items():
        assert not np.array_equal(net.params, before[name]), name
    # a uniform-ish initial policy has entropy near log 3 > 0.7 log 3: alpha falls
    assert agent.alpha < 0.5


def test_default_target_entropy_is_the_ratio_of_log_joint_actions():
    agent = DiscreteSAC(tiny_config(), 2, [2, 3], seed=0)
    assert agent.target_entropy == pytest.approx(0.7 * math.log(6))
    assert DiscreteSAC(tiny_config(target_entropy_ratio=0.98), 2, [4], seed=0).target_entropy == \
        pytest.approx(0.98 * math.log(4))


def test_refusals():
    with pytest.raises(ValueError, match="at most 1024"):
        DiscreteSAC(tiny_config(), 2, [40, 40], seed=0)
    with pytest.raises(ValueError, match="rltools_alpha_gradient"):
        DiscreteSAC(tiny_config(rltools_alpha_gradient=True), 2, [2], seed=0)


def test_acting_samples_and_argmax():
    cfg = tiny_config(sequence_length=4)
    agent = DiscreteSAC(cfg, 2, [2, 3], seed=1)
    state = agent.actor.initial_state(5)
    obs = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    greedy = agent.act(obs, state, np.ones(5, np.uint8)).copy()
    state2 = agent.actor.initial_state(5)
    logits = agent.actor.step(obs, state2, np.ones(5, np.uint8))
    np.testing.assert_array_equal(greedy, _categorical.act(np.ascontiguousarray(logits), [2, 3]))
    state3 = agent.actor.initial_state(5)
    noise = np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32)
    sampled = agent.act(obs, state3, np.ones(5, np.uint8), noise)
    np.testing.assert_array_equal(sampled, _categorical.act(np.ascontiguousarray(logits), [2, 3], noise))
    assert set(np.unique(sampled[:, 1])) <= {0.0, 1.0, 2.0}


def test_random_actions_are_uniform_indices():
    agent = DiscreteSAC(tiny_config(), 2, [2, 5], seed=0)
    u = np.random.default_rng(0).random((4000, 2))
    out = np.zeros((4000, 2), np.float32)
    agent.random_actions(u.copy(), out)
    np.testing.assert_array_equal(out, np.floor(u * [2, 5]))
    assert np.bincount(out[:, 1].astype(int)).min() > 700
