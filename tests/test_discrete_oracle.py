"""An independent per-segment oracle for the compiled discrete SAC updates (as
tests/test_update_oracle.py is for SAC and TD3, whose replay, window reading, sampling-rule checks
and finite differences it reuses).

For every drawn configuration (window length 1..6, batch 1..3, every ``sampling`` flag, shared
batch, losses at final or at every step, entropy bonus and its step, termination handling, gamma,
alpha and its adaptation, the entropy positions, the target-entropy ratio, Discrete or
MultiDiscrete actions, network shapes, activations, gate mode, tau, threads) the test runs ONE
compiled float32 critic step (both critics) and ONE actor step on batches sampled from a replay
buffer of identifiable transitions with random category indices, and recomputes in float64, per
segment from a zero state on batch size 1, from the raw transitions:

* the Bellman targets at every loss step: ``r + gamma (1 - term) sum_a pi(a|h') [min_j Q'_j(h', a)
  - alpha log pi(a|h')]`` over the joint actions (component 0 most significant), or with the
  current-step bonus ``+ alpha H(pi(.|h_t))``; the critic's Q of the replayed joint action; the
  critic losses and their gradients (finite differences along random directions);
* the actor's loss ``(1/n) sum sum_a pi [-min_j Q_j] + alpha mean_E sum_a pi log pi`` (E: every
  window slot, padding slots as one-step histories, or the loss steps), the temperature's
  gradient ``alpha (H - target)`` with ``target = ratio * log J``, the actor's gradient, and the
  targets' Polyak steps.

Tolerances are the SAC/TD3 oracle's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memrl.config import Config
from memrl.replay import SamplingConfig, SequenceSampler
from test_update_oracle import (OBS_ID, Nets64, Replay, assert_gradient, assert_value, check_batch_masks,
                                check_sampling_rules, finite_differences, read_window)


def run_compiled_discrete(cfg, O, nvec, critic_batches, actor_batch, *, seed, update_targets):
    """The only code here that calls the engine: a float32 DiscreteSAC bound to these batches (as
    memrl.loop.Trainer binds it), one critic step and one actor step."""
    from memrl.discrete_sac import DiscreteSAC

    agent = DiscreteSAC(cfg, O, nvec, seed)
    nets = agent.networks()
    rng = np.random.default_rng(seed)
    for name, net in nets.items():
        if name.startswith("target"):
            net.params += rng.normal(0.0, 0.1, net.size).astype(np.float32)

    def snapshot():
        return {name: (net.config(), net.params.copy()) for name, net in nets.items()}

    noise = [np.zeros(agent.noise_shape(b, target=True), np.float32) for b in critic_batches]
    agent.bind(critic_batches, noise, actor_batch, np.zeros(agent.noise_shape(actor_batch, target=False), np.float32))
    out = {"before_critics": snapshot(), "alpha": agent.alpha, "target_entropy": agent.target_entropy}
    out["critic_losses"] = agent.update_critics(update_targets)
    out["targets"] = [update.targets for update in agent._critic_updates]
    out["critic_grads"] = [critic.grads.copy() for critic in agent.critics]
    out["before_actor"] = snapshot()
    alpha_gradients = []
    step = agent.log_alpha.step
    agent.log_alpha.step = lambda grad: (alpha_gradients.append(grad), step(grad))[1]
    out["actor_loss"] = agent.update_actor()
    out["actor_grad"] = agent.actor.grads.copy()
    out["alpha_gradients"] = alpha_gradients
    out["alpha_after"] = agent.alpha
    out["after"] = snapshot()
    return out


def with_indices(replay, nvec, rng):
    """Give every transition random category indices (in the raw log and in the ring)."""
    for log in replay.streams:
        for tr in log:
            tr.action = np.array([rng.integers(n) for n in nvec], np.float32)
            replay.buffer.action[tr.stream, replay.ring_index(tr)] = tr.action


def distribution(logits, nvec):
    """[(joint index, log pi)] of one row (logits (C,)), component 0 most significant."""
    blocks = np.split(np.asarray(logits, np.float64), np.cumsum(nvec)[:-1])
    logps = []
    for z in blocks:
        m = z.max()
        logps.append(z - m - math.log(np.exp(z - m).sum()))
    return [(j, sum(lp[i] for lp, i in zip(logps, a)))
            for j, a in enumerate(itertools.product(*[range(n) for n in nvec]))]


def loss_slots(cfg, seg):
    return seg.slots if cfg.every_step_losses else [seg.slots[-1]]


def oracle_critic(cfg, nets, windows, nvec, critic):
    first = 0 if cfg.sampling.include_first_step_in_targets else 1
    alpha = cfg.alpha
    y, q = {}, {}
    for w in windows:
        for seg in w.segments:
            hist = [s for s in seg.slots + [seg.pad] if s >= first]
            obs = w.obs[hist]
            logits = nets.run("actor", obs)
            q1, q2 = nets.run("target_critic_0", obs), nets.run("target_critic_1", obs)
            q_online = nets.run(critic, w.obs[seg.slots])
            for t, tr in zip(seg.slots, seg.transitions):
                if t not in loss_slots(cfg, seg):
                    continue
                n = hist.index(t + 1)
                value = 0.0
                for j, lp in distribution(logits[n], nvec):
                    value += math.exp(lp) * min(q1[n, j], q2[n, j])
                    if cfg.entropy_bonus and cfg.entropy_bonus_next_step:
                        value -= math.exp(lp) * alpha * lp
                keep = 1.0 if cfg.ignore_termination else 1.0 - float(tr.terminated)
                target = float(tr.reward) + cfg.gamma * keep * value
                if cfg.entropy_bonus and not cfg.entropy_bonus_next_step:
                    target += alpha * -sum(math.exp(lp) * lp for _, lp in distribution(logits[hist.index(t)], nvec))
                y[(t, w.b)] = target
                a = np.ravel_multi_index(tuple(int(v) for v in tr.action), nvec)
                q[(t, w.b)] = q_online[seg.slots.index(t), a]
    loss = sum((q[k] - y[k]) ** 2 for k in y) / (2 * len(y))
    return y, q, loss


def oracle_actor(cfg, nets, windows, nvec, L, B):
    """(loss, entropy H over the entropy positions)."""
    q_terms, entropies_all, entropies_loss = [], {}, []
    for w in windows:
        for seg in w.segments:
            obs = w.obs[seg.slots]
            logits = nets.run("actor", obs)
            q1, q2 = nets.run("critic_0", obs), nets.run("critic_1", obs)
            for i, t in enumerate(seg.slots):
                dist = distribution(logits[i], nvec)
                h = -sum(math.exp(lp) * lp for _, lp in dist)
                entropies_all[(t, w.b)] = h
                if t in loss_slots(cfg, seg):
                    q_terms.append(sum(math.exp(lp) * min(q1[i, j], q2[i, j]) for j, lp in dist))
                    entropies_loss.append(h)
        for pad in w.pads:  # padding slots inside the window: one-step histories
            if pad < L:
                dist = distribution(nets.run("actor", w.obs[[pad]])[0], nvec)
                entropies_all[(pad, w.b)] = -sum(math.exp(lp) * lp for _, lp in dist)
    assert len(entropies_all) == L * B
    entropy = (sum(entropies_all.values()) / (L * B) if cfg.actor_entropy_positions == "all"
               else sum(entropies_loss) / len(entropies_loss))
    return -sum(q_terms) / len(q_terms) - cfg.alpha * entropy, entropy


@dataclass
class Case:
    config: Config
    seed: int
    n_streams: int
    max_len: int
    capacity: int
    counts: list
    O: int
    nvec: list
    update_targets: bool


def run_case(case: Case):
    cfg = case.config.validate()
    L, B, O, nvec = cfg.sequence_length, cfg.batch_size, case.O, case.nvec
    rng = np.random.default_rng(case.seed)
    replay = Replay(rng, case.n_streams, case.capacity, case.max_len, O, len(nvec), case.counts)
    with_indices(replay, nvec, rng)
    samplers = [SequenceSampler(replay.buffer, L, B, cfg.sampling) for _ in range(1 if cfg.shared_batch else 3)]
    batches, windows = [], []
    for sampler in samplers:
        batch = sampler.sample(rng)
        rows = [read_window(batch, b, replay, L) for b in range(B)]
        for w in rows:
            check_sampling_rules(w, replay, cfg.sampling, L, sampler.uniforms[w.b])
        check_batch_masks(batch, rows, replay, L)
        batches.append(batch)
        windows.append(rows)
    shared = cfg.shared_batch
    critic_batches = [batches[0]] * 2 if shared else batches[:2]
    critic_windows = [windows[0]] * 2 if shared else windows[:2]
    actor_windows = windows[0 if shared else 2]
    run = run_compiled_discrete(cfg, O, nvec, critic_batches, batches[0 if shared else 2], seed=case.seed,
                                update_targets=case.update_targets)
    fd_rng = np.random.default_rng(case.seed + 1)
    J = math.prod(nvec)
    assert run["target_entropy"] == pytest.approx(cfg.target_entropy_ratio * math.log(J), rel=1e-12, abs=1e-15)

    nets = Nets64(run["before_critics"])
    for i in range(2):
        y, q, loss = oracle_critic(cfg, nets, critic_windows[i], nvec, f"critic_{i}")
        for (t, b), value in y.items():
            assert_value(float(run["targets"][i][t, b]), value, f"critic {i}: y[{t}, {b}]")
        assert_value(run["critic_losses"][i], loss, f"critic {i}: loss")

        def critic_loss(i=i, y=y):  # the targets y are constants of the critic's loss
            q_now = _q_now(cfg, nets, critic_windows[i], nvec, f"critic_{i}")
            return sum((q_now[k] - y[k]) ** 2 for k in y) / (2 * len(y))

        assert_gradient(run["critic_grads"][i], finite_differences(critic_loss, nets.params(f"critic_{i}"), fd_rng),
                        f"critic {i}: gradient")
    before, middle = run["before_critics"], run["before_actor"]
    for i in range(2):
        target_before, target_after = before[f"target_critic_{i}"][1], middle[f"target_critic_{i}"][1]
        if case.update_targets:
            np.testing.assert_allclose(target_after, (1 - cfg.tau) * target_before.astype(np.float64)
                                       + cfg.tau * middle[f"critic_{i}"][1], rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(target_after, target_before)

    nets = Nets64(run["before_actor"])
    loss, entropy = oracle_actor(cfg, nets, actor_windows, nvec, L, B)
    assert_value(run["actor_loss"], loss, "actor loss")
    gap = entropy - run["target_entropy"]
    if cfg.adaptive_alpha:
        assert len(run["alpha_gradients"]) == 1
        assert_value(run["alpha_gradients"][0], cfg.alpha * gap, "alpha gradient")
        if abs(gap) > 1e-3:
            assert (run["alpha_after"] < cfg.alpha) == (gap > 0), "alpha moved against its gradient"
    else:
        assert run["alpha_gradients"] == [] and run["alpha_after"] == pytest.approx(cfg.alpha, rel=1e-12)
    derivatives = finite_differences(lambda: oracle_actor(cfg, nets, actor_windows, nvec, L, B)[0],
                                     nets.params("actor"), fd_rng)
    assert_gradient(run["actor_grad"], derivatives, "actor gradient")
    # the actor step moved neither critic nor target
    for name in ("critic_0", "critic_1", "target_critic_0", "target_critic_1"):
        np.testing.assert_array_equal(run["after"][name][1], middle[name][1])
    return run


def _q_now(cfg, nets, windows, nvec, critic):
    """The critic's Q of the replayed joint action at every loss step, per segment from zero."""
    out = {}
    for w in windows:
        for seg in w.segments:
            q = nets.run(critic, w.obs[seg.slots])
            for i, (t, tr) in enumerate(zip(seg.slots, seg.transitions)):
                if t in loss_slots(cfg, seg):
                    out[(t, w.b)] = q[i, np.ravel_multi_index(tuple(int(v) for v in tr.action), nvec)]
    return out


@st.composite
def cases(draw):
    L = draw(st.integers(1, 6))
    recurrent = L > 1
    max_len = draw(st.integers(1, 6))
    capacity = draw(st.integers(max(L, max_len + 1), max(L, max_len + 1) + 12))
    n_streams = draw(st.integers(1, 2))
    include_first = draw(st.booleans())
    sampling = SamplingConfig(
        include_first_step_in_targets=include_first,
        always_sample_from_initial_state=draw(st.booleans()),
        random_seq_length=draw(st.booleans()),
        enable_nominal_sequence_length_probability=draw(st.booleans()),
        nominal_sequence_length_probability=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)))
    layers = (3, 5) if recurrent else (2, 3)
    n_actor, n_critic = draw(st.integers(*layers)), draw(st.integers(*layers))
    # None: RLtools' stacks; else that many GRUs with Dense layers after them (e.g. an MLP head)
    gru_layers = draw(st.none() | st.integers(1, min(n_actor, n_critic) - 2)) if recurrent else None
    entropy_bonus = draw(st.booleans())
    config = Config(
        algorithm="sac", environment="gymnasium:CartPole-v1", environment_kwargs={}, sequence_length=L,
        batch_size=draw(st.integers(1, 3)), sampling=sampling, shared_batch=draw(st.booleans()),
        every_step_losses=draw(st.booleans()), entropy_bonus=entropy_bonus,
        entropy_bonus_next_step=draw(st.booleans()) if include_first else True,
        ignore_termination=draw(st.booleans()), gamma=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        alpha=draw(st.sampled_from([0.05, 0.5, 1.7])), adaptive_alpha=draw(st.booleans()),
        target_entropy_ratio=draw(st.sampled_from([0.0, 0.7, 0.98])),
        actor_entropy_positions=draw(st.sampled_from(["all", "final"])),
        actor_hidden_dim=draw(st.integers(2, 4)), critic_hidden_dim=draw(st.integers(2, 4)),
        actor_num_layers=n_actor, critic_num_layers=n_critic, gru_layers=gru_layers,
        actor_activation=draw(st.sampled_from(["tanh", "fast_tanh", "sigmoid", "relu"])),
        critic_activation=draw(st.sampled_from(["tanh", "fast_tanh", "sigmoid", "relu"])),
        gru_gates=draw(st.sampled_from(["exact", "fast"])), threads=draw(st.sampled_from([1, 2])),
        tau=draw(st.sampled_from([0.005, 0.25])), total_steps=1000, replay_capacity=capacity)
    counts = [draw(st.integers(1, 2 * capacity + 3)) for _ in range(n_streams)]
    nvec = draw(st.sampled_from([[2], [3], [5], [2, 3], [3, 1, 2]]))
    return Case(config, draw(st.integers(0, 2**31 - 1)), n_streams, max_len, capacity, counts,
                O=OBS_ID + draw(st.integers(0, 2)), nvec=nvec, update_targets=draw(st.booleans()))


@settings(max_examples=5 * settings().max_examples, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_discrete_updates_compute_what_the_documentation_says(case):
    run_case(case)


def test_an_explicit_multi_discrete_case_with_every_step_losses():
    cfg = Config(algorithm="sac", environment="gymnasium:CartPole-v1", environment_kwargs={}, sequence_length=5,
                 batch_size=3, every_step_losses=True, gamma=0.9, alpha=0.5, actor_hidden_dim=3,
                 critic_hidden_dim=3, total_steps=1000, replay_capacity=30,
                 sampling=SamplingConfig(random_seq_length=True, nominal_sequence_length_probability=0.5))
    run = run_case(Case(cfg, 11, 2, 4, 30, [40, 25], O=OBS_ID + 1, nvec=[2, 3], update_targets=True))
    assert all(np.isfinite(run["critic_losses"]))
