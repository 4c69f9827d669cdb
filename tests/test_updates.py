"""The compiled updates and the acting step, one stage per test, so that a failure names the kernel.

memrl/_core/_update.pyx runs each update whole; these tests stop it after each stage and compare
that stage alone with NumPy, in float64, on small agents bound to a replayed memory-task batch
(tests/helpers.py: ``tiny_config``, ``filled_batch``, the losses written out from the formulas):

    critic targets y        CriticUpdate.targets after ``critic_gradient``      spec_*_targets
    critic loss             ``critic_gradient``'s value                          1/(2 N_f) sum_final (Q - y)^2
    critic gradient         critics[i].grads                                     backprop of dL/dQ; finite differences
    critic Adam step        parameters and moments after ``update_critics``      NumPy Adam (AdamConfig, v_hat floor)
    target critics          after ``update_critics(update_targets)``            (1 - tau) target + tau critic
    SAC actor loss, grad    ``actor_gradient``                                   spec loss; finite differences
    alpha gradient          ``actor_gradient``'s second value; LogAlpha's step   mean_E(-log pi) - H, RLtools' form
    actor Adam step         after ``update_actor``                               NumPy Adam
    TD3 actor, target actor ``actor_gradient``, ``update_actor``                 finite differences; Polyak
    acting                  ``agent.act`` / ``agent.acting``                     tanh-Gaussian sample, tanh, TD3's clip

The whole-update oracle (every setting at once, float32) is tests/test_update_oracle.py; the
finite-difference properties over drawn settings are in tests/test_sac.py and tests/test_td3.py.
"""
import dataclasses
import math

import numpy as np
import pytest

from memrl.optim import AdamConfig
from memrl.replay import SamplingConfig
from memrl.sac import SAC
from memrl.td3 import TD3
from helpers import (adam_config_step, assert_gradient_of_spec, bind, filled_batch, spec_sac_actor_loss,
                     spec_sac_critic_loss, spec_sac_targets, spec_td3_actor_loss, spec_td3_critic_loss,
                     spec_td3_targets, tanh_gaussian, tiny_config)

VALUE_RTOL = 1e-12   # float64 kernels against float64 NumPy: the same operations, other orders
STEP_RTOL, STEP_ATOL = 1e-13, 1e-16  # Adam: the kernel multiplies by 1 / (1 - b^t), NumPy divides

# Critic settings drawn apart: SAC with the current step's and the next step's entropy bonus
# (the latter without slot 0 in the target window), SAC without the bonus and with terminations
# ignored, and TD3 with smoothing noise that the clip bounds.
CRITIC_CASES = {
    "sac-current-step-bonus": dict(algorithm="sac", alpha=0.7),
    "sac-next-step-bonus": dict(algorithm="sac", alpha=0.7, entropy_bonus_next_step=True,
                                sampling=SamplingConfig(include_first_step_in_targets=False)),
    "sac-no-bonus-ignore-termination": dict(algorithm="sac", entropy_bonus=False, ignore_termination=True),
    "td3": dict(algorithm="td3", target_policy_noise=0.3, target_noise_clip=0.4),
}


def make(seed=3, batch_seed=None, **changes):
    """A float64 agent of ``tiny_config(**changes)`` whose target networks are moved away from their
    sources (so a test sees which network is used where), bound to a replayed batch with random
    noise; returns (agent, batch, critic noise, actor noise)."""
    cfg = tiny_config(tau=0.25, **changes)
    agent = (SAC if cfg.algorithm == "sac" else TD3)(cfg, 1, 1, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, net in agent.networks().items():
        if name.startswith("target"):
            net.params += rng.normal(0, 0.1, net.size)
    batch = filled_batch(cfg, seed if batch_seed is None else batch_seed)
    assert batch.final.sum() > batch.batch_size, "the batch must hold several segments"
    critic_noise = rng.standard_normal(agent.noise_shape(batch, target=True)) * 2
    actor_noise = rng.standard_normal(agent.noise_shape(batch, target=False))
    bind(agent, batch, critic_noise, actor_noise)
    return agent, batch, critic_noise, actor_noise


def spec_targets(agent, batch, noise):
    return (spec_sac_targets if isinstance(agent, SAC) else spec_td3_targets)(agent, batch, noise)


def critic_values(agent, i, batch):
    """Q_i([o_t, a_t]) (L, B) on the replayed window, through the network's own forward."""
    x = np.concatenate([batch.current_observations, batch.current_actions], axis=2).astype(np.float64)
    return agent.critics[i].forward(x, batch.reset)[:, :, 0].copy()


# -- critic: targets, loss, gradient ---------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CRITIC_CASES))
def test_critic_targets(case):
    """y at every current slot (not only the loss's final steps) from the target networks."""
    agent, batch, critic_noise, _ = make(**CRITIC_CASES[case])
    want = spec_targets(agent, batch, critic_noise)
    for i in range(2):
        agent.critic_gradient(i)
        got = agent._critic_updates[i].targets
        assert got.shape == (batch.sequence_length, batch.batch_size)
        np.testing.assert_allclose(got, want, rtol=VALUE_RTOL, atol=1e-13, err_msg=f"critic {i}")
    assert np.abs(want).max() > 0.1


@pytest.mark.parametrize("case", sorted(CRITIC_CASES))
def test_critic_loss(case):
    """L_Q = 1/(2 N_f) sum over segment-final steps of (Q_i - y)^2; other steps do not count."""
    agent, batch, critic_noise, _ = make(**CRITIC_CASES[case])
    y = spec_targets(agent, batch, critic_noise)
    final = batch.final.astype(bool)
    for i in range(2):
        q = critic_values(agent, i, batch)
        want = 0.5 * np.sum((q - y)[final] ** 2) / final.sum()
        assert math.isclose(agent.critic_gradient(i), want, rel_tol=VALUE_RTOL), i
        everywhere = 0.5 * np.mean((q - y) ** 2)
        assert not math.isclose(want, everywhere, rel_tol=1e-6)  # the mask matters on this batch


@pytest.mark.parametrize("case", sorted(CRITIC_CASES))
def test_critic_parameter_gradient(case):
    """The gradient is the critic's backprop of dL/dQ = (Q - y) / N_f at final steps (0 elsewhere),
    overwriting (not adding to) the gradient buffer."""
    agent, batch, critic_noise, _ = make(**CRITIC_CASES[case])
    y = spec_targets(agent, batch, critic_noise)
    final = batch.final.astype(bool)
    for i in range(2):
        critic = agent.critics[i]
        critic.grads[:] = 1e3  # stale values must not survive
        agent.critic_gradient(i)
        got = critic.grads.copy()
        q = critic_values(agent, i, batch)
        dq = np.where(final, q - y, 0.0) / final.sum()
        critic.zero_grad()
        critic.backward(dq[:, :, None].copy())
        np.testing.assert_allclose(got, critic.grads, rtol=1e-11, atol=1e-14, err_msg=f"critic {i}")


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_critic_gradient_matches_finite_differences(algorithm):
    """One fixed case per algorithm (the drawn ones are in test_sac.py and test_td3.py)."""
    case = CRITIC_CASES["sac-current-step-bonus" if algorithm == "sac" else "td3"]
    agent, batch, critic_noise, _ = make(**case, critic_num_layers=3)
    spec = spec_sac_critic_loss if algorithm == "sac" else spec_td3_critic_loss
    loss = agent.critic_gradient(0)
    assert_gradient_of_spec(agent.critics[0], agent.critics[0].grads.copy(), loss,
                            lambda: spec(agent, 0, batch, critic_noise), "critic 0")


# -- critic: Adam step and target critics ----------------------------------------------------------

OPTIMIZERS = {
    "rltools": AdamConfig.rltools(lr=1e-3),
    "floor-active": AdamConfig(lr=1e-2, v_hat_floor=1e-4),  # most |g| here are below 1e-2
    "decay-bias-lr-clip": AdamConfig(lr=3e-3, weight_decay=0.05, bias_lr_factor=2.0, clip=0.02),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_critic_adam_step(optimizer):
    """Two ``update_critics`` calls: each critic's parameters and moments follow one NumPy Adam step
    (memrl.optim.AdamConfig's formula, step counts 1 then 2) from the gradient ``critic_gradient``
    reports, which the update writes again; targets stay put without ``update_targets``."""
    config = OPTIMIZERS[optimizer]
    agent, batch, _, _ = make(critic_optimizer=config)
    targets = [t.params.copy() for t in agent.target_critics]
    floored = 0
    for t in (1, 2):
        before = [(c.params.copy(), c.adam_m.copy(), c.adam_v.copy()) for c in agent.critics]
        grads = []
        for i in range(2):
            agent.critic_gradient(i)
            grads.append(agent.critics[i].grads.copy())
        agent.update_critics(update_targets=False)
        for i, critic in enumerate(agent.critics):
            assert critic.adam_t == t
            np.testing.assert_array_equal(critic.grads, grads[i])
            params, m, v = before[i]
            want_p, want_m, want_v = adam_config_step(config, params, grads[i], m, v, t, critic.is_bias)
            np.testing.assert_allclose(critic.adam_m, want_m, rtol=STEP_RTOL, atol=0, err_msg=f"critic {i} m, t={t}")
            np.testing.assert_allclose(critic.adam_v, want_v, rtol=STEP_RTOL, atol=0, err_msg=f"critic {i} v, t={t}")
            np.testing.assert_allclose(critic.params, want_p, rtol=STEP_RTOL, atol=STEP_ATOL,
                                       err_msg=f"critic {i} params, t={t}")
            assert np.abs(critic.params - params).max() > 1e-5  # the step moved something
            floored += int(np.sum(want_v / (1 - config.beta2 ** t) < config.v_hat_floor))
    if optimizer == "floor-active":
        assert floored > 0, "the example must put some second moments under the floor"
    for target, before in zip(agent.target_critics, targets):
        np.testing.assert_array_equal(target.params, before)


def test_target_critics_polyak_step():
    """With ``update_targets`` each target critic moves to (1 - tau) target + tau critic, with the
    critic's parameters after its Adam step; the critics' own step is unchanged by it."""
    agent, batch, _, _ = make()
    twin, _, _, _ = make()
    tau = agent.config.tau
    before = [t.params.copy() for t in agent.target_critics]
    agent.update_critics(update_targets=True)
    twin.update_critics(update_targets=False)
    for i, (target, critic) in enumerate(zip(agent.target_critics, agent.critics)):
        np.testing.assert_array_equal(critic.params, twin.critics[i].params)
        np.testing.assert_allclose(target.params, (1 - tau) * before[i] + tau * critic.params, rtol=1e-15,
                                   atol=1e-17, err_msg=f"target critic {i}")
        assert np.abs(target.params - before[i]).max() > 1e-3


# -- SAC actor and temperature ----------------------------------------------------------------------

@pytest.mark.parametrize("positions", ["all", "final"])
def test_sac_actor_loss(positions):
    agent, batch, _, actor_noise = make(actor_entropy_positions=positions, alpha=0.6)
    loss, _ = agent.actor_gradient()
    assert math.isclose(loss, spec_sac_actor_loss(agent, batch, actor_noise), rel_tol=VALUE_RTOL)


@pytest.mark.parametrize("positions", ["all", "final"])
def test_sac_actor_gradient(positions):
    agent, batch, _, actor_noise = make(actor_entropy_positions=positions, alpha=0.6, actor_num_layers=3)
    loss, _ = agent.actor_gradient()
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss,
                            lambda: spec_sac_actor_loss(agent, batch, actor_noise), "actor")


def _log_pi(agent, batch, noise):
    """log pi (L, B) of the replayed window's sampled actions, with the NumPy head."""
    L, B = batch.sequence_length, batch.batch_size
    pre = agent.actor.forward(batch.current_observations.astype(np.float64), batch.reset).reshape(L * B, 2)
    cfg = agent.config
    return tanh_gaussian(pre, noise, cfg.log_std_min, cfg.log_std_max)[1].reshape(L, B)


@pytest.mark.parametrize("positions", ["all", "final"])
def test_alpha_gradient(positions):
    """d L / d log(alpha) = mean_E(-log pi) - target_entropy (E: every window step or the final ones)."""
    agent, batch, _, actor_noise = make(actor_entropy_positions=positions, alpha=0.6, target_entropy=-0.3)
    logp = _log_pi(agent, batch, actor_noise)
    E = np.ones(logp.shape, bool) if positions == "all" else batch.final.astype(bool)
    _, got = agent.actor_gradient()
    assert math.isclose(got, -logp[E].mean() - (-0.3), rel_tol=VALUE_RTOL)


@pytest.mark.parametrize("positions", ["all", "final"])
def test_rltools_alpha_gradient(positions):
    """RLtools' form: alpha |E| (mean_E(-log pi) - target_entropy) / N_resets, N_resets the reset
    flags of the window (slot 0, segment starts and padding slots)."""
    agent, batch, _, actor_noise = make(actor_entropy_positions=positions, alpha=0.6, target_entropy=-0.3,
                                        rltools_alpha_gradient=True)
    logp = _log_pi(agent, batch, actor_noise)
    E = np.ones(logp.shape, bool) if positions == "all" else batch.final.astype(bool)
    n_resets = int(batch.reset.sum())
    assert n_resets > batch.batch_size
    _, got = agent.actor_gradient()
    assert math.isclose(got, 0.6 * E.sum() * (-logp[E].mean() + 0.3) / n_resets, rel_tol=VALUE_RTOL)


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_actor_adam_step_and_temperature_step(algorithm):
    """``update_actor``: the actor takes one NumPy Adam step (actor_optimizer) from the gradient
    ``actor_gradient`` reports; SAC's log(alpha) one Adam step (alpha_optimizer, float64) from the
    alpha gradient. The critics do not move."""
    agent, batch, _, _ = make(algorithm=algorithm, alpha=0.6, actor_optimizer=AdamConfig(lr=1e-2, v_hat_floor=1e-6))
    critics = [c.params.copy() for c in agent.critics]
    _, alpha_gradient = agent.actor_gradient()
    grads = agent.actor.grads.copy()
    params, m, v = agent.actor.params.copy(), agent.actor.adam_m.copy(), agent.actor.adam_v.copy()
    agent.update_actor()
    want, _, _ = adam_config_step(agent.config.actor_optimizer, params, grads, m, v, 1, agent.actor.is_bias)
    np.testing.assert_allclose(agent.actor.params, want, rtol=STEP_RTOL, atol=STEP_ATOL)
    assert agent.actor.adam_t == 1
    for critic, before in zip(agent.critics, critics):
        np.testing.assert_array_equal(critic.params, before)
    if algorithm == "sac":
        log_alpha, _, _ = adam_config_step(agent.config.alpha_optimizer, np.array([math.log(0.6)]),
                                           np.array([alpha_gradient]), np.zeros(1), np.zeros(1), 1)
        assert math.isclose(agent.alpha, math.exp(log_alpha[0]), rel_tol=1e-15)
        assert (agent.alpha < 0.6) == (alpha_gradient > 0)



@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_scheduled_learning_rates_reach_every_optimizer(algorithm):
    """``set_learning_rates(step)``: the next critic, actor and temperature steps are Adam steps at
    each optimizer's ``lr_at(step)`` (AdamConfig's linear schedule), not at its starting ``lr``."""
    def scheduled(lr):
        return AdamConfig(lr=lr, final_lr=lr / 10, decay_steps=100, v_hat_floor=1e-6)
    agent, batch, _, _ = make(algorithm=algorithm, alpha=0.6, critic_optimizer=scheduled(1e-2),
                              actor_optimizer=scheduled(2e-2), alpha_optimizer=scheduled(3e-2))
    cfg = agent.config
    agent.set_learning_rates(40)

    def at_step_40(config):
        assert config.lr_at(40) == config.lr * 0.6 + config.final_lr * 0.4
        return dataclasses.replace(config, lr=config.lr_at(40), final_lr=None, decay_steps=0)

    before = [(c.params.copy(), c.adam_m.copy(), c.adam_v.copy()) for c in agent.critics]
    grads = []
    for i in range(2):
        agent.critic_gradient(i)
        grads.append(agent.critics[i].grads.copy())
    agent.update_critics()
    for critic, (params, m, v), g in zip(agent.critics, before, grads):
        want, _, _ = adam_config_step(at_step_40(cfg.critic_optimizer), params, g, m, v, 1, critic.is_bias)
        np.testing.assert_allclose(critic.params, want, rtol=STEP_RTOL, atol=STEP_ATOL)
        unscheduled, _, _ = adam_config_step(cfg.critic_optimizer, params, g, m, v, 1, critic.is_bias)
        assert np.abs(unscheduled - want).max() > 1e-4  # the two rates give visibly different steps
    _, alpha_gradient = agent.actor_gradient()
    grads = agent.actor.grads.copy()
    params, m, v = agent.actor.params.copy(), agent.actor.adam_m.copy(), agent.actor.adam_v.copy()
    agent.update_actor()
    want, _, _ = adam_config_step(at_step_40(cfg.actor_optimizer), params, grads, m, v, 1, agent.actor.is_bias)
    np.testing.assert_allclose(agent.actor.params, want, rtol=STEP_RTOL, atol=STEP_ATOL)
    if algorithm == "sac":
        log_alpha, _, _ = adam_config_step(at_step_40(cfg.alpha_optimizer), np.array([math.log(0.6)]),
                                           np.array([alpha_gradient]), np.zeros(1), np.zeros(1), 1)
        assert math.isclose(agent.alpha, math.exp(log_alpha[0]), rel_tol=1e-15)
    agent.set_learning_rates(250)  # past decay_steps: the final rates
    assert [opt.lr for _, opt in agent._scheduled] == [1e-3, 1e-3, 2e-3]


# -- TD3 actor and target actor ---------------------------------------------------------------------

def test_td3_actor_gradient():
    agent, batch, _, _ = make(**CRITIC_CASES["td3"], actor_num_layers=3)
    loss, alpha_gradient = agent.actor_gradient()
    assert alpha_gradient == 0.0
    assert_gradient_of_spec(agent.actor, agent.actor.grads.copy(), loss, lambda: spec_td3_actor_loss(agent, batch),
                            "actor")


def test_td3_target_actor_polyak_step():
    """After the actor's Adam step the target actor moves to (1 - tau) target + tau actor."""
    agent, batch, _, _ = make(**CRITIC_CASES["td3"])
    tau = agent.config.tau
    before = agent.target_actor.params.copy()
    agent.update_actor()
    np.testing.assert_allclose(agent.target_actor.params, (1 - tau) * before + tau * agent.actor.params,
                               rtol=1e-15, atol=1e-17)
    assert np.abs(agent.target_actor.params - before).max() > 1e-3


# -- acting --------------------------------------------------------------------------------------

def acting_agent(algorithm, dtype, **changes):
    cfg = tiny_config(algorithm=algorithm, **changes)
    return (SAC if algorithm == "sac" else TD3)(cfg, 2, 2, seed=4, dtype=dtype)


def actor_outputs(agent, observations, reset, h0):
    """The actor's outputs (T, N, outputs) for observations (T, N, O) from states h0, in float64."""
    actor64 = agent.actor if agent.dtype == np.float64 else _float64_copy(agent.actor)
    return actor64.forward(np.asarray(observations, np.float64), reset, [np.asarray(h, np.float64) for h in h0]).copy()


def _float64_copy(net):
    from memrl.nn import Sequential
    copy = Sequential.from_config(net.config(), dtype=np.float64, seed=None)
    copy.params[:] = net.params
    return copy


def acting_inputs(agent, T=2, N=5):
    rng = np.random.default_rng(9)
    obs = rng.standard_normal((T, N, 2)).astype(agent.dtype)
    h0 = [rng.standard_normal(h.shape).astype(agent.dtype) for h in agent.actor.initial_state(N)]
    reset = np.zeros((T, N), np.uint8)
    reset[0, 1] = reset[1, 3] = 1  # row 1 starts an episode at step 0, row 3 at step 1
    noise = (rng.standard_normal((T, N, 2)) * 1.5).astype(agent.dtype)
    return obs, h0, reset, noise


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sac_acting_samples_and_deterministic_actions(dtype):
    """Exploring: tanh(mu + exp(clip(l)) eps); deterministic: tanh(mu); over two steps from carried
    states with episode starts (zero state) in some rows; the state advances in place."""
    agent = acting_agent("sac", dtype, log_std_min=-0.2, log_std_max=0.1)
    obs, h0, reset, noise = acting_inputs(agent)
    pre = actor_outputs(agent, obs, reset, h0)
    lo, hi = agent.config.log_std_min, agent.config.log_std_max
    assert np.any(pre[..., 2:] < lo) or np.any(pre[..., 2:] > hi), "the example must exercise the log-std clip"
    tol = dict(rtol=0, atol=1e-12 if dtype == np.float64 else 2e-6)
    for explore in (True, False):
        state = [h.copy() for h in h0]
        for t in range(2):
            got = agent.act(obs[t], state, reset[t], noise[t] if explore else None)
            want, _ = tanh_gaussian(pre[t], noise[t] if explore else None, lo, hi)
            np.testing.assert_allclose(got, want, err_msg=f"explore={explore}, step {t}", **tol)
    assert not np.array_equal(state[0], h0[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_td3_acting_clips_exploration(dtype):
    """Exploring: clip(tanh(pre) + exploration_noise * eps, -1, 1), the clip active in some entries;
    deterministic: tanh(pre)."""
    agent = acting_agent("td3", dtype, exploration_noise=0.8)
    obs, h0, reset, noise = acting_inputs(agent)
    pre = actor_outputs(agent, obs, reset, h0)
    tol = dict(rtol=0, atol=1e-12 if dtype == np.float64 else 2e-6)
    clipped = 0
    for explore in (True, False):
        state = [h.copy() for h in h0]
        for t in range(2):
            got = agent.act(obs[t], state, reset[t], noise[t] if explore else None)
            raw = np.tanh(pre[t]) + (0.8 * noise[t] if explore else 0.0)
            clipped += int(np.sum(np.abs(raw) > 1))
            np.testing.assert_allclose(got, np.clip(raw, -1, 1), err_msg=f"explore={explore}, step {t}", **tol)
    assert clipped > 0, "the example must exercise the clip"


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_bound_acting_writes_actions_advances_state_and_clears_resets(algorithm):
    """``agent.acting`` bound to the caller's arrays: ``run()`` returns True, writes the exploring
    actions into the bound array, advances the states in place and clears the reset flags."""
    agent = acting_agent(algorithm, np.float64)
    obs, h0, reset, noise = acting_inputs(agent)
    pre = actor_outputs(agent, obs, reset, h0)
    observations, flags = obs[0].copy(), reset[0].copy()
    eps, actions = noise[0].copy(), np.zeros((5, 2))
    state = [h.copy() for h in h0]
    step = agent.acting(observations, state, flags, eps, actions)
    assert step.run() is True
    np.testing.assert_array_equal(flags, np.zeros(5, np.uint8))
    if algorithm == "sac":
        want = tanh_gaussian(pre[0], noise[0], agent.config.log_std_min, agent.config.log_std_max)[0]
    else:
        want = np.clip(np.tanh(pre[0]) + agent.config.exploration_noise * noise[0], -1, 1)
    np.testing.assert_allclose(actions, want, rtol=0, atol=1e-12)
    observations[...], flags[...], eps[...] = obs[1], reset[1], noise[1]
    assert step.run(explore=False) is True
    deterministic = np.tanh(pre[1][:, :2])
    np.testing.assert_allclose(actions, deterministic, rtol=0, atol=1e-12)
