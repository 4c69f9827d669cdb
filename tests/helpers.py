"""Helpers shared by the test modules: import them as ``from helpers import ...`` (pytest puts
tests/ on sys.path). Test modules import from here, never from one another.

Sections: running memrl in a subprocess and checking its one error line; run directories (metrics
without timing fields) and short runs of the memory task; small agents, replayed batches and the
updates' losses written out from their formulas (SAC, TD3); NumPy references (tanh-Gaussian head,
Adam, Polyak); routing every matrix product through the plain loops.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys

import numpy as np

from memrl import testing
from memrl.config import Config, preset
from memrl.envs import MemoryEnv
from memrl.nn import TanhGaussianHead
from memrl.optim import AdamConfig
from memrl.replay import ReplayBuffer, SequenceSampler

# ================================================================================================
# Subprocesses
# ================================================================================================


def cli(*args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m memrl *args`` in a fresh interpreter, output captured as text."""
    return subprocess.run([sys.executable, "-m", "memrl", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def run_python(code: str, *, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh interpreter, output captured as text."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


def assert_one_error_line(out: subprocess.CompletedProcess, fragment: str) -> None:
    """The command exited with status 2 and printed exactly one stderr line, ``memrl: error: ...``
    holding ``fragment``."""
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memrl: error:") and fragment in lines[0], out.stderr


# ================================================================================================
# Run directories and short runs
# ================================================================================================

TIMING = ("elapsed_s", "train_elapsed_s", "peak_rss_mb")
"""The fields of a metrics record that measure time or memory (they differ between equal runs)."""


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def records(run) -> list[dict]:
    """A run directory's metrics.jsonl (``run`` a directory, or the file itself), timing fields removed."""
    path = os.fspath(run)
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    with open(path) as f:
        return [without_timing(json.loads(line)) for line in f.read().splitlines()]


SHORT_RUN = {"environment_kwargs.episode_step_limit": 150, "n_warmup_steps": 100, "n_warmup_steps_critic": 100,
             "n_warmup_steps_actor": 200, "evaluation_interval": 200, "n_evaluation_episodes": 1,
             "sequence_length": 20}
"""A short memory-task run: 150-step episodes, warm-ups of 100/100/200 steps, windows of 20,
one evaluation episode every 200 steps (the chapter preset otherwise)."""


def set_args(settings: dict) -> list[str]:
    """The command line's ``--set KEY=VALUE`` arguments for these settings."""
    return [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]


def short_run(total_steps: int, **changes) -> Config:
    """The memory-chapter preset with ``SHORT_RUN`` and ``changes`` applied: the configuration
    that ``--steps total_steps`` with ``set_args({**SHORT_RUN, **changes})`` gives on the command line."""
    return preset("memory-chapter").replace(total_steps=total_steps, **{**SHORT_RUN, **changes})


def export_discrete_actor(path, *, history: bool):
    """A small discrete SAC agent for Box (3,) observations and MultiDiscrete([3, 4]) actions (with
    ``history``, the previous action and reward as inputs too: 3 + 7 + 1 of them), its actor
    exported to ``path`` with that environment record. Returns the agent."""
    from gymnasium import spaces

    from memrl.discrete_sac import DiscreteSAC
    from memrl.policy import export_policy
    from memrl.spaces import describe_action_space

    agent = DiscreteSAC(Config(sequence_length=4, actor_hidden_dim=5, critic_hidden_dim=5),
                        3 + (7 + 1 if history else 0), [3, 4], seed=0)
    spec = {"name": "x", "kwargs": {}, "observation_shape": [3], "observation_space": [{"kind": "box", "shape": [3]}],
            "action_space": describe_action_space(spaces.MultiDiscrete([3, 4])),
            "history_inputs": {"previous_action": history, "previous_reward": history}}
    export_policy(path, agent.actor, action_dim=2, environment=spec)
    return agent


def small_task(**changes) -> Config:
    """The memory task at horizon 3 (bits with probability 0.5, 100-step episodes), 4000 steps:
    enough for SAC to learn to count (tests/test_learning.py), and the base of the loop's tests."""
    cfg = Config(environment_kwargs={"horizon": 3, "input_probability": 0.5, "episode_step_limit": 100},
                 total_steps=4000, n_warmup_steps=200, n_warmup_steps_critic=200, n_warmup_steps_actor=1000,
                 sequence_length=10, batch_size=8, target_entropy=-1.0, actor_training_interval=1,
                 actor_optimizer=AdamConfig(lr=1e-3), evaluation_interval=2000, n_evaluation_episodes=4, n_probes=20)
    return cfg.replace(**changes)


# ================================================================================================
# Small agents on replayed memory-task batches
# ================================================================================================

def tiny_config(**changes) -> Config:
    """Windows of 6, batches of 3, hidden size 3, gamma 0.9, exact gates: small enough for finite differences."""
    base = Config(sequence_length=6, batch_size=3, actor_hidden_dim=3, critic_hidden_dim=3, gamma=0.9,
                  total_steps=100, replay_capacity=100, gru_gates="exact")
    return base.replace(**changes)


def filled_batch(cfg: Config, seed: int):
    """A batch sampled (``cfg``'s sampling, window and batch size) from 40 replayed memory-task
    transitions (horizon 3, 7-step episodes) with random actions and random terminations (p 0.1)."""
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


def head(agent) -> TanhGaussianHead:
    """The agent's tanh-Gaussian head (its log-std bounds and dtype)."""
    cfg = agent.config
    return TanhGaussianHead(agent.action_dim, log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max,
                            dtype=agent.dtype)


def bind(agent, batch, critic_noise=None, actor_noise=None) -> None:
    """The agent's compiled updates bound to this batch (both critics and the actor) and noise
    (zeros where None), in the agent's dtype (float64 agents get copies of the batch)."""
    critic_noise = np.zeros(agent.noise_shape(batch, target=True)) if critic_noise is None else critic_noise
    actor_noise = np.zeros(agent.noise_shape(batch, target=False)) if actor_noise is None else actor_noise
    critic_noise = np.ascontiguousarray(critic_noise, agent.dtype)
    actor_noise = np.ascontiguousarray(actor_noise, agent.dtype)
    agent.bind([batch, batch], [critic_noise, critic_noise], batch, actor_noise)


def assert_gradient_of_spec(net, grads, loss, spec, name) -> None:
    """``loss`` equals ``spec()`` and ``grads`` equal its finite differences over ``net``'s parameters."""
    assert math.isclose(loss, spec(), rel_tol=1e-10, abs_tol=1e-12), (loss, spec())
    params = net.params.copy()

    def f(p):
        net.params[:] = p
        return spec()

    numeric = testing.numerical_gradient(f, params.copy())
    net.params[:] = params
    testing.assert_gradient_close(grads, numeric, rtol=1e-6, atol=1e-8, name=name)


# -- the updates' losses, written from the formulas (memrl/_core/_update.pyx; internals 3.3, 3.4, 5)
# with explicit loops over the window, for one-dimensional observations and actions. Only the
# network forwards and the head (tested on their own) are shared with the kernels.

def _bellman_targets(agent, batch, q1, q2, next_logp):
    """y (L, B) at every current slot from the target critics' values q1, q2 (Lt, B) and log pi
    of the next actions (Lt, B) (None: no entropy term)."""
    cfg = agent.config
    L, B = batch.sequence_length, batch.batch_size
    d = batch.target_offset
    bonus = next_logp is not None and cfg.entropy_bonus
    y = np.zeros((L, B))
    for t in range(L):
        for b in range(B):
            boot = min(q1[t + d, b], q2[t + d, b])
            if bonus and cfg.entropy_bonus_next_step:
                boot -= agent.alpha * next_logp[t + d, b]
            keep = 1.0 if cfg.ignore_termination else 1.0 - float(batch.terminated[t, b])
            y[t, b] = float(batch.rewards[t, b]) + cfg.gamma * keep * boot
            if bonus and not cfg.entropy_bonus_next_step:
                y[t, b] -= agent.alpha * next_logp[t, b]
    return y


def _target_values(agent, batch, next_a):
    """min-able target critic values (Lt, B) on [o, a]: ``next_a`` (Lt, B) at padding slots, the
    replayed action elsewhere."""
    obs_t = batch.target_observations.astype(np.float64)
    Lt, B = obs_t.shape[:2]
    x = np.zeros((Lt, B, 2))
    for s in range(Lt):
        for b in range(B):
            x[s, b, 0] = obs_t[s, b, 0]
            x[s, b, 1] = next_a[s, b] if batch.target_window_padding[s, b] else batch.target_actions[s, b, 0]
    q1 = agent.target_critics[0].forward(x, batch.target_window_reset)[:, :, 0].copy()
    q2 = agent.target_critics[1].forward(x, batch.target_window_reset)[:, :, 0].copy()
    return q1, q2


def _critic_loss(agent, i, batch, y):
    """1/(2 N_f) sum_{t final} (Q_i(o_t, a_t) - y_t)^2."""
    L, B = batch.sequence_length, batch.batch_size
    xq = np.concatenate([batch.current_observations, batch.current_actions], axis=2).astype(np.float64)
    q = agent.critics[i].forward(xq, batch.reset)[:, :, 0]
    total, n = 0.0, 0
    for t in range(L):
        for b in range(B):
            if batch.final[t, b]:
                total += (q[t, b] - y[t, b]) ** 2
                n += 1
    return total / (2 * n)


def spec_sac_targets(agent, batch, noise):
    """SAC's Bellman targets y (L, B) at every current slot: the actor's sampled next actions
    (noise rows (Lt * B, 1)) at padding slots, min of the target critics, entropy bonus."""
    obs_t = batch.target_observations.astype(np.float64)
    Lt, B = obs_t.shape[:2]
    pre = agent.actor.forward(obs_t, batch.target_window_reset).reshape(Lt * B, 2).copy()
    next_a, next_logp = (v.copy() for v in head(agent).forward(pre, noise))
    next_a, next_logp = next_a.reshape(Lt, B), next_logp.reshape(Lt, B)
    q1, q2 = _target_values(agent, batch, next_a)
    return _bellman_targets(agent, batch, q1, q2, next_logp)


def spec_sac_critic_loss(agent, i, batch, noise):
    """1/(2 N_f) sum_final (Q_i(o_t, a_t) - y_t)^2, y from the target nets (written from the spec)."""
    return _critic_loss(agent, i, batch, spec_sac_targets(agent, batch, noise))


def spec_sac_actor_loss(agent, batch, noise):
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


def spec_td3_targets(agent, batch, noise):
    """TD3's Bellman targets y (L, B) at every current slot: the target actor's smoothed actions
    clip(tanh(pre) + clip(sigma eps, -c, c), -1, 1) at padding slots, min of the target critics."""
    cfg = agent.config
    obs_t = batch.target_observations.astype(np.float64)
    Lt, B = obs_t.shape[:2]
    pre = agent.target_actor.forward(obs_t, batch.target_window_reset)[:, :, 0].copy()
    next_a = np.zeros((Lt, B))
    for s in range(Lt):
        for b in range(B):
            smoothed = math.tanh(pre[s, b]) + min(max(cfg.target_policy_noise * noise[s * B + b, 0],
                                                      -cfg.target_noise_clip), cfg.target_noise_clip)
            next_a[s, b] = min(max(smoothed, -1.0), 1.0)
    q1, q2 = _target_values(agent, batch, next_a)
    return _bellman_targets(agent, batch, q1, q2, None)


def spec_td3_critic_loss(agent, i, batch, noise):
    return _critic_loss(agent, i, batch, spec_td3_targets(agent, batch, noise))


def spec_td3_actor_loss(agent, batch):
    """-(1/N_f) sum_final Q_1(o_t, tanh(actor)_t)."""
    L, B = batch.sequence_length, batch.batch_size
    obs = batch.current_observations.astype(np.float64)
    pre = agent.actor.forward(obs, batch.reset)[:, :, 0].copy()
    x = np.zeros((L, B, 2))
    for t in range(L):
        for b in range(B):
            x[t, b, 0] = obs[t, b, 0]
            x[t, b, 1] = math.tanh(pre[t, b]) if batch.final[t, b] else batch.current_actions[t, b, 0]
    q1 = agent.critics[0].forward(x, batch.reset)[:, :, 0]
    finals = [(t, b) for t in range(L) for b in range(B) if batch.final[t, b]]
    return -sum(q1[t, b] for t, b in finals) / len(finals)


# ================================================================================================
# NumPy references
# ================================================================================================

def tanh_gaussian(pre, eps, lo, hi):
    """SAC's head (internals 2.3) for rows pre (N, 2A) and noise eps (N, A) (None: zeros, the
    deterministic action): actions tanh(mu + exp(clip(l, lo, hi)) eps) and log pi."""
    A = pre.shape[1] // 2
    eps = np.zeros((pre.shape[0], A)) if eps is None else eps
    mean, log_std = pre[:, :A], np.clip(pre[:, A:], lo, hi)
    u = mean + np.exp(log_std) * eps
    one_minus_a2 = 1.0 / np.cosh(u) ** 2  # = 1 - tanh(u)^2 without cancellation near |a| = 1
    logp = np.sum(-0.5 * math.log(2 * math.pi) - log_std - 0.5 * eps ** 2 - np.log(one_minus_a2 + 1e-6), axis=1)
    return np.tanh(u), logp


def adam_reference(p, g, m, v, t, lr, b1, b2, eps, floor=0.0, wd=0.0, clip=0.0, is_bias=None, f=1.0):
    """One Adam step (memrl.optim's formula) in float64: returns (params, m, v)."""
    p, g, m, v = (a.astype(np.float64).copy() for a in (p, g, m, v))
    if clip > 0:
        g = np.clip(g, -clip, clip)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mh = m / (1 - b1 ** t)
    vh = np.maximum(v / (1 - b2 ** t), floor)
    step = mh / (np.sqrt(vh) + eps)
    bias = np.zeros(p.shape, bool) if is_bias is None else is_bias.astype(bool)
    new = np.where(bias, p - lr * f * step, p - lr * step - lr * wd * p)
    return new, m, v


def adam_config_step(config: AdamConfig, p, g, m, v, t, is_bias=None):
    """``adam_reference`` with an AdamConfig's settings (``is_bias`` used only if it masks biases)."""
    return adam_reference(p, g, m, v, t, config.lr, config.beta1, config.beta2, config.eps, config.v_hat_floor,
                          config.weight_decay, config.clip, is_bias if config.masks_biases else None,
                          config.bias_lr_factor)


# ================================================================================================
# Matrix products
# ================================================================================================

@contextlib.contextmanager
def plain_loop_products():
    """Route every product through the plain loops, whose rows never depend on other rows.

    OpenBLAS may round the last bit of a row differently depending on how many rows a product
    has (its row blocking), so exact equality of packed and separate runs is a property of the
    algorithm checked with the loops; with BLAS it holds to about 1e-16.
    """
    from memrl._core import _blas

    old = _blas.set_small_gemm_max_work(2**62)
    try:
        yield
    finally:
        _blas.set_small_gemm_max_work(old)
