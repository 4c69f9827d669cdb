"""Whole-state checkpoints: exact resume in a fresh process, survival of a killed run, policy file."""
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memrl.checkpoint import CheckpointManager, load_checkpoint
from memrl.loop import Trainer, train
from memrl.policy import Policy
from helpers import SHORT_RUN, assert_one_error_line, cli, records, set_args, short_run

# A short memory-task run (helpers.SHORT_RUN) on a 1000-transition ring.
SETTINGS = set_args({**SHORT_RUN, "replay_capacity": 1000})


def config(total_steps):
    return short_run(total_steps, replay_capacity=1000)


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    """Training 2N steps equals training N, saving, loading in a new process, and training N more."""
    straight = train(config(600), seed=5, log_dir=str(tmp_path / "straight"), print_fn=None)
    first = cli("train", "memory-chapter", "--seed", "5", "--steps", "300", "--log-dir", str(tmp_path / "split"),
                "--set", "checkpoint_interval=300", *SETTINGS)
    assert first.returncode == 0, first.stderr
    second = cli("train", "--resume", str(tmp_path / "split"), "--steps", "600", "--quiet")
    assert second.returncode == 0, second.stderr
    arrays, meta = load_checkpoint(CheckpointManager(str(tmp_path / "split" / "checkpoints")).latest())
    assert meta["step_count"] == 600
    for name, net in straight.trainer.agent.networks().items():
        np.testing.assert_array_equal(arrays[f"{name}/params"], net.params, err_msg=name)
        np.testing.assert_array_equal(arrays[f"{name}/adam_v"], net.adam_v, err_msg=name)
    np.testing.assert_array_equal(arrays["replay/observation"], straight.trainer.buffer.observation)
    assert records(tmp_path / "split") == records(tmp_path / "straight")



def test_a_run_with_learning_rate_schedules_resumes_bit_identically(tmp_path):
    """The scheduled rates are a function of the step: a run split at a checkpoint in the middle of
    the decay trains as the straight run; both end at the final rates; the schedule changes the run."""
    decay = {f"{name}.{key}": value for name in ("actor_optimizer", "critic_optimizer", "alpha_optimizer")
             for key, value in (("final_lr", 1e-5), ("decay_steps", 500))}
    straight = train(config(600).replace(**decay), seed=5, log_dir=str(tmp_path / "straight"), print_fn=None)
    first = cli("train", "memory-chapter", "--seed", "5", "--steps", "300", "--log-dir", str(tmp_path / "split"),
                "--set", "checkpoint_interval=300", *SETTINGS, *set_args(decay))
    assert first.returncode == 0, first.stderr
    second = cli("train", "--resume", str(tmp_path / "split"), "--steps", "600", "--quiet")
    assert second.returncode == 0, second.stderr
    arrays, _ = load_checkpoint(CheckpointManager(str(tmp_path / "split" / "checkpoints")).latest())
    for name, net in straight.trainer.agent.networks().items():
        np.testing.assert_array_equal(arrays[f"{name}/params"], net.params, err_msg=name)
    assert records(tmp_path / "split") == records(tmp_path / "straight")
    rates = [(r["step"], r["actor_lr"], r["critic_lr"], r["alpha_lr"]) for r in records(tmp_path / "straight")]
    assert rates[0] == (0, 1e-4, 1e-3, 1e-3) and rates[-1] == (600, 1e-5, 1e-5, 1e-5)
    assert math.isclose(rates[1][1], 1e-4 * 0.6 + 1e-5 * 0.4, rel_tol=1e-12)  # step 200 of 500
    agent = straight.trainer.agent
    assert [opt.lr for _, opt in agent._scheduled] == [1e-5] * 3 and agent.log_alpha.lr == 1e-5
    constant = train(config(600), seed=5, print_fn=None).trainer.agent
    assert not np.array_equal(constant.actor.params, agent.actor.params)


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "memrl", "train", "memory-chapter", "--seed", "2",
                                 "--steps", "100000", "--log-dir", str(run), "--quiet",
                                 "--set", "checkpoint_interval=20", *SETTINGS],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not (run / "checkpoints").exists() or not CheckpointManager(str(run / "checkpoints")).paths():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = CheckpointManager(str(run / "checkpoints")).latest()
        assert latest is not None
        Trainer.load(latest)  # loads and rebuilds the whole state
    reached = load_checkpoint(CheckpointManager(str(run / "checkpoints")).latest())[1]["step_count"]
    done = cli("train", "--resume", str(run), "--steps", str(reached + 300), "--quiet")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(CheckpointManager(str(run / "checkpoints")).latest())[1]["step_count"] == reached + 300


def test_mismatched_checkpoint_is_refused(tmp_path):
    trainer = Trainer(config(300), seed=0)
    path = str(tmp_path / "c.npz")
    trainer.save(path)
    other = Trainer(config(300).replace(actor_hidden_dim=8), seed=0)
    arrays, meta = load_checkpoint(path)
    with pytest.raises(ValueError, match=r"architecture does not match .*architecture.networks.actor\[0\].out_dim: "
                                         r"expected 8, found 16"):
        other.load_state_dict(arrays, meta)


def test_exported_policy_acts_like_the_trained_actor(tmp_path):
    result = train(config(400), seed=1, log_dir=str(tmp_path), print_fn=None)
    policy = Policy.load(str(tmp_path / "policy.npz"))
    agent = result.trainer.agent
    rng = np.random.default_rng(0)
    obs = (rng.random((500, 3, 1)) < 0.3).astype(np.float32)
    state = agent.actor.initial_state(3)
    policy.reset(3)
    for t in range(500):
        want = agent.act(np.ascontiguousarray(obs[t]), state, None, None).copy()
        np.testing.assert_allclose(policy.act(obs[t]), want, atol=1e-5)


def test_cli_resume_without_checkpoints_is_one_line(tmp_path):
    assert_one_error_line(cli("train", "--resume", str(tmp_path)), f"resume: '{tmp_path}' holds no checkpoints/ folder")


def test_td3_policy_exports_and_acts_deterministically(tmp_path):
    result = train(config(300).replace(algorithm="td3"), seed=1, log_dir=str(tmp_path), print_fn=None)
    policy = Policy.load(str(tmp_path / "policy.npz"))
    agent = result.trainer.agent
    obs = np.ones((2, 1), np.float32)
    state = agent.actor.initial_state(2)
    policy.reset(2)
    for _ in range(20):
        np.testing.assert_allclose(policy.act(obs), agent.act(obs, state, None, None), atol=1e-5)
    with pytest.raises(ValueError, match="deterministic"):
        policy.act(obs, noise=np.zeros((2, 1)))
