"""SAC updates: the compiled updates' gradients (float64) equal finite differences of the stated losses.

The losses are written from the formulas (internals 3.3 and 3.4) with explicit loops over the
window, independently of the kernels, in tests/helpers.py; only the network forwards and the head
(tested elsewhere) are shared.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl.replay import SamplingConfig
from memrl.sac import SAC
from helpers import (assert_gradient_of_spec, bind, filled_batch, head, spec_sac_actor_loss, spec_sac_critic_loss,
                     tiny_config)

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
                                lambda i=i: spec_sac_critic_loss(agent, i, batch, noise), f"critic {i}")


@settings(max_examples=10)
@given(cases)
def test_actor_gradient_matches_finite_differences_of_the_stated_loss(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    noise = np.random.default_rng(c["seed"] + 1).standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, actor_noise=noise)
    loss, _ = agent.actor_gradient()
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss,
                            lambda: spec_sac_actor_loss(agent, batch, noise), "actor")


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


@pytest.mark.parametrize("batch_size, seed, internal_resets", [(1, 0, False), (1, 1, True), (3, 5, True)])
def test_rltools_quirk_switch_changes_the_actor_gradient_only_through_resets(batch_size, seed, internal_resets):
    """RLtools' reset-ignoring critic backward: on a window without resets after slot 0 the actor's
    gradient is bit for bit the correct one; with resets inside the window it differs."""
    c = dict(seed=5, gates="fast", next_step=False, include_first=True, positions="all", alpha=1.0)
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg.replace(batch_size=batch_size), seed)
    assert bool(batch.reset[1:].any()) == internal_resets
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
    assert np.abs(correct).max() > 1e-3
    if internal_resets:
        # far above float64 rounding (7.5e-4 and more on these batches)
        assert np.abs(quirky - correct).max() > 1e-6 * np.abs(correct).max()
    else:
        np.testing.assert_array_equal(quirky, correct)


def test_targets_follow_polyak_formula():
    cfg = tiny_config(tau=0.25)
    agent = SAC(cfg, 1, 1, seed=0, dtype=np.float64)
    agent.critics[0].params += 1.0
    before = agent.target_critics[0].params.copy()
    agent.update_targets()
    np.testing.assert_allclose(agent.target_critics[0].params, 0.75 * before + 0.25 * agent.critics[0].params)
