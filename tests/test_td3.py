"""TD3 updates: gradients equal float64 finite differences of the stated losses (written out in
tests/helpers.py); exploration."""
import numpy as np
from hypothesis import given, settings, strategies as st

from memrl.replay import SamplingConfig
from memrl.td3 import TD3
from helpers import assert_gradient_of_spec, bind, filled_batch, spec_td3_actor_loss, spec_td3_critic_loss, tiny_config

cases = st.fixed_dictionaries({"seed": st.integers(0, 10**6), "gates": st.sampled_from(["exact", "fast"]),
                               "include_first": st.booleans()})


def make_agent(c):
    cfg = tiny_config(algorithm="td3", gru_gates=c["gates"], target_policy_noise=0.3, target_noise_clip=0.4,
                      sampling=SamplingConfig(include_first_step_in_targets=c["include_first"]))
    agent = TD3(cfg, 1, 1, seed=c["seed"], dtype=np.float64)
    rng = np.random.default_rng(c["seed"])
    for target in agent.target_critics + [agent.target_actor]:
        target.params += rng.normal(0, 0.1, target.size)
    return cfg, agent


@settings(max_examples=8)
@given(cases)
def test_td3_critic_gradient_matches_finite_differences(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    noise = np.random.default_rng(c["seed"]).standard_normal(agent.noise_shape(batch, target=True)) * 2
    bind(agent, batch, critic_noise=noise)
    for i in range(2):
        loss = agent.critic_gradient(i)
        assert_gradient_of_spec(agent.critics[i], agent.critics[i].grads.copy(), loss,
                                lambda i=i: spec_td3_critic_loss(agent, i, batch, noise), f"critic {i}")


@settings(max_examples=8)
@given(cases)
def test_td3_actor_gradient_matches_finite_differences(c):
    cfg, agent = make_agent(c)
    batch = filled_batch(cfg, c["seed"])
    bind(agent, batch)
    loss, _ = agent.actor_gradient()
    grads = agent.actor.grads.copy()
    assert_gradient_of_spec(agent.actor, grads, loss, lambda: spec_td3_actor_loss(agent, batch), "actor")
    # only critic 1 drives the actor (the helper restored the actor's parameters)
    agent.critics[1].params[:] = 0
    agent.actor_gradient()
    np.testing.assert_array_equal(agent.actor.grads, grads)


def test_td3_actor_update_moves_the_target_actor_and_explores_within_bounds():
    cfg, agent = make_agent(dict(seed=0, gates="fast", include_first=True))
    batch = filled_batch(cfg, 0)
    before = agent.target_actor.params.copy()
    bind(agent, batch)
    agent.update_actor()
    np.testing.assert_allclose(agent.target_actor.params, (1 - cfg.tau) * before + cfg.tau * agent.actor.params)
    obs = np.ones((3, 1))
    state = agent.actor.initial_state(3)
    clean = agent.act(obs, state, np.ones(3, np.uint8), None).copy()
    state = agent.actor.initial_state(3)
    noisy = agent.act(obs, state, np.ones(3, np.uint8), np.full((3, 1), 50.0))
    assert np.all(noisy == 1.0) and np.all(np.abs(clean) < 1)
