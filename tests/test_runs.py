"""Runs that keep their word: final checkpoints, resume and extend, one run per directory,
Gymnasium runs that survive a kill, kills at random moments, policies from any run in the
environment's units."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memrl.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from memrl.config import preset
from memrl.loop import train
from memrl.policy import Policy
from helpers import SHORT_RUN, assert_one_error_line, cli, records, set_args, short_run

# A short memory-task run (helpers.SHORT_RUN) with three probes, on the command line and in Python.
SMALL = set_args({**SHORT_RUN, "n_probes": 3})


def small(total_steps, **changes):
    return short_run(total_steps, n_probes=3, **changes)


def latest(run):
    return load_checkpoint(CheckpointManager(str(run / "checkpoints")).latest())


def assert_same_policy(a, b):
    pa, ma = load_checkpoint(a)
    pb, mb = load_checkpoint(b)
    assert sorted(pa) == sorted(pb)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)
    assert ma["layers"] == mb["layers"] and ma["environment"] == mb["environment"]


# -- 1. resume and extend ------------------------------------------------------------------------

def test_a_finished_run_has_a_final_checkpoint_and_extends_bit_for_bit(tmp_path):
    """A 300-step run (default checkpoint_interval 20000) ends with a step-300 checkpoint; extended
    with --resume --steps 600 it equals a 600-step run made straight: metrics at every step both
    have, checkpoint and policy."""
    short, straight = tmp_path / "short", tmp_path / "straight"
    out = cli("train", "memory-chapter", "--seed", "4", "--steps", "300", "--log-dir", str(short), "--quiet", *SMALL)
    assert out.returncode == 0, out.stderr
    assert [p.name for p in (short / "checkpoints").iterdir()] == ["step_000000000300.npz"]
    out = cli("train", "--resume", str(short), "--steps", "600", "--quiet")
    assert out.returncode == 0, out.stderr
    train(small(600), seed=4, log_dir=str(straight), print_fn=None)
    assert records(short) == records(straight)
    assert [r["step"] for r in records(short)] == [0, 200, 400, 600]
    (a, meta_a), (b, meta_b) = latest(short), latest(straight)
    assert meta_a["step_count"] == meta_b["step_count"] == 600
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert_same_policy(short / "policy.npz", straight / "policy.npz")
    assert json.loads((short / "config.json").read_text())["config"]["total_steps"] == 600


def test_a_resumed_runs_clock_goes_on_from_its_checkpoint(tmp_path):
    """The checkpoint holds the run's wall and evaluation seconds when it was written; a resumed
    run's clock goes on from them, so the time spent training between the last evaluation kept and
    the checkpoint still counts (it used to restart from that evaluation's record)."""
    run = tmp_path / "run"

    def timed_records():
        return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}

    train(small(300), seed=4, log_dir=str(run), print_fn=None)
    before = timed_records()
    _, meta = latest(run)
    saved = meta["clock"]
    assert before[200]["elapsed_s"] < saved["elapsed_s"] <= before[300]["elapsed_s"]
    assert 0 < saved["evaluating_s"] < saved["elapsed_s"]
    train(small(600), log_dir=str(run), resume=True, print_fn=None)
    after = timed_records()
    assert after[200] == before[200] and 300 not in after  # kept; 300 is no evaluation step of 600
    assert after[400]["elapsed_s"] > saved["elapsed_s"]  # evaluation step of the 600-step run
    assert after[400]["train_elapsed_s"] > saved["elapsed_s"] - saved["evaluating_s"]
    assert after[600]["elapsed_s"] > after[400]["elapsed_s"]


def test_resume_without_steps_continues_to_the_saved_runs_length(tmp_path):
    """pendulum-sac --steps 400 stopped after its step-200 checkpoint resumes towards 400 (not the
    preset's 20000), with or without the preset's name, and ends as the uninterrupted run did."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    args = ["--seed", "2", "--steps", "400", "--set", "checkpoint_interval=200", "--set", "evaluation_interval=100",
            "--set", "n_evaluation_episodes=2", "--quiet"]
    for directory in (run, whole):
        out = cli("train", "pendulum-sac", "--log-dir", str(directory), *args)
        assert out.returncode == 0, out.stderr
    # make `run` look killed right after its step-200 checkpoint
    os.remove(run / "checkpoints" / "step_000000000400.npz")
    os.remove(run / "policy.npz")
    kept = (run / "metrics.jsonl").read_text().splitlines()[:2]
    (run / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    for command in (["train", "--resume", str(run)], ["train", "pendulum-sac", "--resume", str(run)]):
        out = cli(*command, "--quiet")
        assert out.returncode == 0, out.stderr
        assert latest(run)[1]["step_count"] == 400
        assert json.loads((run / "config.json").read_text())["config"]["total_steps"] == 400
        assert records(run) == records(whole)
        assert_same_policy(run / "policy.npz", whole / "policy.npz")
        os.remove(run / "checkpoints" / "step_000000000400.npz")


@pytest.mark.parametrize("extra, fragment", [
    (["--algorithm", "td3"], "algorithm: the run has 'sac', requested 'td3'"),
    (["--env", "gymnasium:MountainCarContinuous-v0"], "environment: the run has 'pendulum'"),
    (["--set", "gamma=0.5"], "gamma: the run has 0.99, requested 0.5"),
    (["--seed", "5"], "seed: the run in"),
    (["memory-chapter"], "cannot change"),
    (["--set", "sampling.random_seq_length=true"], "sampling.random_seq_length"),
    (["--steps", "100"], "total_steps: the run is already at step 200"),
    (["--overwrite"], "--overwrite: cannot be combined with --resume"),
])
def test_resume_refuses_settings_that_would_change_the_run(tmp_path, extra, fragment):
    run = tmp_path / "run"
    out = cli("train", "pendulum-sac", "--seed", "1", "--steps", "200", "--log-dir", str(run), "--quiet",
              "--set", "evaluation_interval=200", "--set", "n_evaluation_episodes=1")
    assert out.returncode == 0, out.stderr
    before = sorted(os.listdir(run)), (run / "metrics.jsonl").read_text()
    preset_name = [extra.pop(0)] if extra[0] == "memory-chapter" else []
    assert_one_error_line(cli("train", *preset_name, "--resume", str(run), *extra), fragment)
    assert (sorted(os.listdir(run)), (run / "metrics.jsonl").read_text()) == before


def test_resume_applies_the_settings_that_may_change(tmp_path):
    run = tmp_path / "run"
    out = cli("train", "pendulum-sac", "--seed", "1", "--steps", "200", "--log-dir", str(run), "--quiet",
              "--set", "evaluation_interval=200", "--set", "n_evaluation_episodes=1")
    assert out.returncode == 0, out.stderr
    out = cli("train", "--resume", str(run), "--steps", "300", "--set", "threads=1", "--set", "evaluation_interval=50",
              "--set", "n_evaluation_episodes=2", "--set", "checkpoint_interval=50", "--quiet")
    assert out.returncode == 0, out.stderr
    saved = json.loads((run / "config.json").read_text())["config"]
    assert (saved["threads"], saved["evaluation_interval"], saved["total_steps"]) == (1, 50, 300)
    assert [r["step"] for r in records(run)] == [0, 200, 250, 300]
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step_000000000300.npz"


# -- 2. one run per directory ---------------------------------------------------------------------

def test_a_directory_holds_one_run(tmp_path):
    run = tmp_path / "x"
    out = cli("train", "pendulum-sac", "--steps", "200", "--log-dir", str(run), "--quiet",
              "--set", "checkpoint_interval=100", "--set", "evaluation_interval=200", "--set", "n_evaluation_episodes=1")
    assert out.returncode == 0, out.stderr
    (run / "notes.txt").write_text("mine")
    before = {name: (run / name).read_bytes() for name in ("config.json", "metrics.jsonl", "policy.npz")}
    out = cli("train", "memory-chapter", "--steps", "300", "--log-dir", str(run), "--quiet", *SMALL)
    assert_one_error_line(out, "already holds a run")
    assert {name: (run / name).read_bytes() for name in before} == before
    out = cli("train", "memory-chapter", "--steps", "300", "--log-dir", str(run), "--quiet", "--overwrite", *SMALL)
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "config.json").read_text())["config"]["environment"] == "memory"
    assert [r["step"] for r in records(run)] == [0, 200, 300]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000000300.npz"]
    assert (run / "notes.txt").read_text() == "mine"  # --overwrite clears only the run's own files


# -- 3. Gymnasium runs survive a kill --------------------------------------------------------------

def _checkpoint_steps(run) -> set:
    folder = run / "checkpoints"
    return {p.name for p in folder.iterdir() if p.suffix == ".npz"} if folder.is_dir() else set()


def _wait_for_checkpoint(proc, run, step, deadline=120):
    end = time.time() + deadline
    path = run / "checkpoints" / f"step_{step:012d}.npz"
    while not path.exists():
        assert time.time() < end and proc.poll() is None, "no checkpoint in time"
        time.sleep(0.02)


def test_a_killed_gymnasium_run_resumes_from_its_checkpoint(tmp_path):
    pytest.importorskip("gymnasium")
    run = tmp_path / "gym"
    args = ["train", "pendulum-sac", "--env", "gymnasium:Pendulum-v1", "--seed", "3", "--steps", "1500",
            "--log-dir", str(run), "--quiet", "--set", "checkpoint_interval=250", "--set", "evaluation_interval=500",
            "--set", "n_evaluation_episodes=1"]
    proc = subprocess.Popen([sys.executable, "-m", "memrl", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(proc, run, 250)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reached = latest(run)[1]["step_count"]
    assert reached % 250 == 0 and reached < 1500
    arrays, meta = latest(run)
    assert meta["environments_checkpointed"] is False
    again = tmp_path / "again"  # a copy of the run as the kill left it
    os.makedirs(again / "checkpoints")
    src = run / "checkpoints" / f"step_{reached:012d}.npz"
    (again / "checkpoints" / src.name).write_bytes(src.read_bytes())
    out = cli("train", "--resume", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    final, meta = latest(run)
    assert meta["step_count"] == 1500
    # the interrupted episode ended (as truncated, not terminated) with the transition before the resume
    assert final["replay/episode_end"][0, reached - 1] == 1 and final["replay/terminated"][0, reached - 1] == 0
    steps = [r["step"] for r in records(run)]
    assert steps == [0, 500, 1000, 1500]
    # resuming from the same checkpoint twice gives the same continuation
    out = cli("train", "--resume", str(again), "--quiet")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(latest(again)[0]["actor/params"], final["actor/params"])


# -- 7. kills at random moments ---------------------------------------------------------------------

def test_kills_at_random_moments_change_nothing(tmp_path):
    """SIGKILL at random moments (during updates, checkpoint writes, between steps), resuming each
    time, until the run finishes: metrics, checkpoint and policy equal an uninterrupted run's."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    args = ["--seed", "6", "--steps", "3000", "--set", "checkpoint_interval=40", *SMALL]
    out = cli("train", "memory-chapter", "--log-dir", str(whole), "--quiet", *args)
    assert out.returncode == 0, out.stderr
    rng = np.random.default_rng(11)
    kills = 0
    for attempt in range(12):
        have_checkpoint = (run / "checkpoints").is_dir() and CheckpointManager(str(run / "checkpoints")).paths()
        command = (["train", "--resume", str(run), "--quiet"] if have_checkpoint else
                   ["train", "memory-chapter", "--log-dir", str(run), "--overwrite", "--quiet", *args])
        before = _checkpoint_steps(run)
        proc = subprocess.Popen([sys.executable, "-m", "memrl", *command], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if kills < 4:
            # kill once a random number of new checkpoints exist, a random moment later: inside an
            # update, a checkpoint write or between steps (the run is never killed before it saved)
            wanted = int(rng.integers(1, 4))
            deadline = time.time() + 120
            while proc.poll() is None and len(_checkpoint_steps(run) - before) < wanted:
                assert time.time() < deadline, "no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        proc.wait(timeout=300)
        assert proc.returncode == 0, proc.stderr.read()
        break
    else:
        pytest.fail("the run never finished")
    assert kills >= 2, "the run finished before being killed twice: lengthen it"
    assert records(run) == records(whole)
    (a, _), (b, _) = latest(run), latest(whole)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert_same_policy(run / "policy.npz", whole / "policy.npz")


# -- 4. policies from any run, in the environment's units -----------------------------------------

def test_export_from_a_run_directory_or_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(small(300, checkpoint_interval=100), seed=1, log_dir=str(run), print_fn=None)
    os.remove(run / "policy.npz")
    out = cli("export", str(run), "-o", str(tmp_path / "from-dir.npz"))
    assert out.returncode == 0 and "step 300" in out.stdout, out.stderr
    first = sorted((run / "checkpoints").iterdir())[0]
    out = cli("export", str(first), "-o", str(tmp_path / "from-file.npz"))
    assert out.returncode == 0 and "step 100" in out.stdout, out.stderr
    arrays, _ = load_checkpoint(first)
    policy = Policy.load(tmp_path / "from-file.npz")
    flat = np.concatenate([policy.params[k].reshape(-1) for k in policy.params])
    assert np.array_equal(np.sort(flat), np.sort(arrays["actor/params"]))
    assert_one_error_line(cli("export", str(tmp_path / "nothing"), "-o", str(tmp_path / "p.npz")), "no such file")
    with pytest.raises(CheckpointError, match=r"a training checkpoint, expected a policy file; export its actor with: "
                                              r"python -m memrl export .* -o policy.npz"):
        Policy.load(first)
    with pytest.raises(CheckpointError, match=r"a directory, expected a policy file; .*python -m memrl export"):
        Policy.load(run)


def test_evaluate_a_run_directory_or_a_checkpoint(tmp_path):
    """`memrl evaluate` gets exactly what the trained agent gets on the same seeded episodes (so a
    checkpoint restores the policy bit for bit), from a run directory (newest checkpoint) or a file,
    and leaves the run's own evaluation stream where it was."""
    run = tmp_path / "run"
    trainer = train(small(300, checkpoint_interval=100), seed=1, log_dir=str(run), print_fn=None).trainer
    before = trainer.rng_eval.bit_generator.state
    expected = trainer.evaluate(5, np.random.default_rng(7))
    assert trainer.rng_eval.bit_generator.state == before
    out = cli("evaluate", str(run), "--episodes", "5", "--seed", "7", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["returns"] == expected["returns"] and len(got["returns"]) == 5
    assert (got["step"], got["run_seed"], got["seed"], got["episodes"]) == (300, 1, 7, 5)
    assert got["mean_return"] == pytest.approx(np.mean(expected["returns"]))
    assert got["standard_error"] == pytest.approx(np.std(expected["returns"], ddof=1) / np.sqrt(5))
    assert (got["probe_correct"], got["probe_total"]) == (expected["probe_correct"], expected["probe_total"])
    other = json.loads(cli("evaluate", str(run), "--episodes", "5", "--seed", "8", "--json").stdout)
    assert other["returns"] != got["returns"]  # other seeds, other episodes
    first = sorted((run / "checkpoints").iterdir())[0]
    out = cli("evaluate", str(first), "--episodes", "2")
    assert out.returncode == 0 and "step 100 (run seed 1)" in out.stdout and "over 2 episodes" in out.stdout
    assert_one_error_line(cli("evaluate", str(run), "--episodes", "0"), "--episodes: expected a positive integer")
    assert_one_error_line(cli("evaluate", str(tmp_path / "nothing")), "no such file")
    with pytest.raises(ValueError, match="n_episodes: expected a positive integer"):
        trainer.evaluate(0)


def test_exported_policy_gets_the_training_evaluation_return_on_gymnasium(tmp_path):
    """A policy trained on Gymnasium's Pendulum-v1 (torque in [-2, 2]) and exported acts in torque
    units: run on gymnasium.make for whole episodes it gets the training code's evaluation return."""
    gymnasium = pytest.importorskip("gymnasium")
    from memrl.evaluation import evaluate
    from memrl.loop import build_environment

    result = train(preset("pendulum-sac").replace(environment="gymnasium:Pendulum-v1", environment_kwargs={},
                                                   total_steps=2500, evaluation_interval=2500,
                                                   n_evaluation_episodes=1),
                   seed=1, log_dir=str(tmp_path), print_fn=None)
    trainer = result.trainer
    seeds = np.random.default_rng(5).integers(0, 2**31 - 1, size=3)
    expected = evaluate(trainer.agent, lambda s: build_environment(trainer.config, s), 3,
                        np.random.default_rng(5))["returns"]
    policy = Policy.load(tmp_path / "policy.npz")
    assert policy.environment["action_low"] == [-2.0] and policy.environment["action_high"] == [2.0]
    returns, biggest = [], 0.0
    for seed in seeds:
        env = gymnasium.make("Pendulum-v1")
        obs, _ = env.reset(seed=int(seed))
        policy.reset(1)
        total, done = 0.0, False
        while not done:
            action = policy.act(obs)
            assert action.shape == (1,) and action.dtype == np.float32 and -2 <= action[0] <= 2
            biggest = max(biggest, abs(float(action[0])))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    np.testing.assert_allclose(returns, expected, rtol=1e-3)
    assert biggest > 1.0  # torques beyond the normalised range: the environment's units
