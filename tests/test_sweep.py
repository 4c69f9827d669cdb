"""Sweeps: planning, trial states, and real sweeps on a local Ray (one uninterrupted 2-trial sweep shared
by the checks, and one killed with SIGKILL and restarted), equal to the same runs made one by one."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memrl.checkpoint import CheckpointManager, load_checkpoint
from memrl.config import preset
from memrl.loop import train
from memrl.run import RunDirectory, RunDirectoryError
from memrl.sweep import (STOPPED, format_value, parse_grid, parse_seeds, plan_trials, point_name,
                         reported_metrics, run_state, split_values)
from helpers import SHORT_RUN, assert_one_error_line, cli, records, set_args, short_run

# A short memory-task run (helpers.SHORT_RUN, three probes), 3000 steps, evaluated and checkpointed
# every 500 steps: about a second or three of training per trial.
SMALL = set_args({**SHORT_RUN, "evaluation_interval": 500, "n_probes": 3, "checkpoint_interval": 500})
STEPS = 3000
SWEEP = ["memory-chapter", "--seeds", "1-2", "--steps", str(STEPS), "--grid", "gamma=0.5", *SMALL]
NAMES = ["gamma=0.5/seed-1", "gamma=0.5/seed-2"]


def small(total_steps=STEPS, every=500, **changes):
    """The sweep's configuration (``every``: evaluation and checkpoint interval), on one thread."""
    return short_run(total_steps, evaluation_interval=every, n_probes=3, checkpoint_interval=every, threads=1,
                     **changes)


def final_checkpoint(run):
    arrays, meta = load_checkpoint(CheckpointManager(os.path.join(run, "checkpoints")).latest())
    return arrays, meta


def assert_same_run(a, b):
    """Two run directories computed the same: metrics without timing, the final checkpoint's arrays
    and step, and the exported policy's arrays."""
    assert records(a) == records(b), (a, b)
    (arrays_a, meta_a), (arrays_b, meta_b) = final_checkpoint(a), final_checkpoint(b)
    assert meta_a["step_count"] == meta_b["step_count"] == STEPS
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=f"{a}: {name}")
    policy_a, _ = load_checkpoint(os.path.join(a, "policy.npz"))
    policy_b, _ = load_checkpoint(os.path.join(b, "policy.npz"))
    for name in policy_a:
        np.testing.assert_array_equal(policy_a[name], policy_b[name], err_msg=f"{a}: policy {name}")


def tune_results(log_dir):
    """Tune's records of each invocation: [{trial name: [result, ...]}], oldest invocation first."""
    invocations = []
    for experiment in sorted(glob.glob(os.path.join(log_dir, "_tune", "*"))):
        trials = {}
        for result_file in glob.glob(os.path.join(experiment, "*", "result.json")):
            results = [json.loads(line) for line in open(result_file).read().splitlines() if line.strip()]
            if results:
                trials[results[0]["config"]["trial"]["name"]] = results
        invocations.append(trials)
    return invocations


# -- planning (no Ray) -----------------------------------------------------------------------------

def test_parse_seeds():
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1,3,7") == [1, 3, 7]
    assert parse_seeds("0-2, 9") == [0, 1, 2, 9]
    assert parse_seeds("4") == [4]
    for bad, fragment in (("a", "expected seeds like"), ("-1", "expected seeds like"), ("3-1", "is empty"),
                          ("1-3,2", "more than once"), ("", "expected seeds like")):
        with pytest.raises(ValueError, match=fragment):
            parse_seeds(bad)


def test_parse_grid_and_names():
    from memrl.__main__ import _parse_value

    assert split_values('0.9,0.99') == ["0.9", "0.99"]
    assert split_values('[1,2],[3,4]') == ["[1,2]", "[3,4]"]
    assert split_values('{"a":1,"b":2},"x,y"') == ['{"a":1,"b":2}', '"x,y"']
    grid = parse_grid(["gamma=0.9,0.99", "sampling.random_seq_length=true,off", "environment_kwargs.x=a,null"],
                      _parse_value)
    assert grid == {"gamma": [0.9, 0.99], "sampling.random_seq_length": [True, False],
                    "environment_kwargs.x": ["a", None]}
    for bad, fragment in (("gamma", "expected KEY=VALUE1"), ("gamma=0.9,", "empty value"),
                          ("gamma=1,1", "repeated value")):
        with pytest.raises(ValueError, match=fragment):
            parse_grid([bad], _parse_value)
    with pytest.raises(ValueError, match="more than once"):
        parse_grid(["gamma=1", "gamma=2"], _parse_value)
    assert point_name({"gamma": 0.9, "sampling.random_seq_length": False, "environment": "gymnasium:Pendulum-v1",
                       "x": [1, 2], "y": None}) == \
        "gamma=0.9,sampling.random_seq_length=false,environment=gymnasium:Pendulum-v1,x=[1,2],y=null"
    assert format_value("a/b") == "a_b"


def test_plan_trials_names_configs_and_threads():
    base = preset("pendulum-sac").replace(total_steps=500)
    trials = plan_trials(base, [3, 1], {"gamma": [0.9, 0.99], "sampling.random_seq_length": [False, True]})
    assert [t.name for t in trials] == [
        f"gamma={g},sampling.random_seq_length={r}/seed-{s}"
        for g in ("0.9", "0.99") for r in ("false", "true") for s in (3, 1)]
    t = trials[3]
    assert (t.seed, t.point) == (1, {"gamma": 0.9, "sampling.random_seq_length": True})
    assert t.config == base.replace(gamma=0.9, threads=1, **{"sampling.random_seq_length": True})
    assert [t.name for t in plan_trials(base, [2])] == ["seed-2"]
    assert plan_trials(base.replace(threads=2), [2], threads=None)[0].config.threads == 2
    with pytest.raises(ValueError, match=r"gamma: expected a value <= 1.0, got 1.5 \(grid point gamma=1.5\)"):
        plan_trials(base, [1], {"gamma": [0.5, 1.5]})
    with pytest.raises(ValueError, match="unknown key"):
        plan_trials(base, [1], {"gama": [0.5]})
    with pytest.raises(ValueError, match="seeds: expected at least one seed"):
        plan_trials(base, [])


def test_sweep_cli_mistakes_are_one_line_and_leave_nothing(tmp_path):
    log_dir = tmp_path / "sweep"
    for args, fragment in ((["--seeds", "x"], "--seeds: expected seeds like"),
                           (["--seeds", "1", "--grid", "gamma=2"], "gamma: expected a value <= 1.0"),
                           (["--seeds", "1", "--set", "nope=1"], "unknown key"),
                           (["--seeds", "1", "--metric", "nope"], "--metric: expected one of"),
                           (["--seeds", "1", "--steps", "0"], "--steps: expected a positive integer"),
                           (["--seeds", "1", "--cpus", "1", "--address", "auto"], "--cpus: sets the local Ray")):
        out = cli("sweep", "pendulum-sac", "--log-dir", str(log_dir), *args)
        assert_one_error_line(out, fragment)
        assert not log_dir.exists()


# -- a trial's directory (no Ray) ------------------------------------------------------------------

def test_run_state_of_a_trial_directory(tmp_path):
    config = small(400, every=200)
    run = str(tmp_path / "run")
    assert run_state(run, config, 1) == "new"
    train(config, 1, log_dir=run, print_fn=None)
    assert run_state(run, config, 1) == "finished"
    assert run_state(run, config.replace(total_steps=600), 1) == "resume"  # a longer sweep extends it
    assert run_state(run, config.replace(threads=2, n_evaluation_episodes=3), 1) == "finished"
    with pytest.raises(RunDirectoryError, match="seed 1, the sweep asks for seed 2"):
        run_state(run, config, 2)
    with pytest.raises(RunDirectoryError, match="another configuration: cannot change gamma"):
        run_state(run, config.replace(gamma=0.5), 1)
    with pytest.raises(RunDirectoryError, match="already at step 400"):
        run_state(run, config.replace(total_steps=200), 1)
    os.remove(os.path.join(run, "policy.npz"))
    assert run_state(run, config, 1) == "resume"
    with open(os.path.join(run, STOPPED), "w") as f:
        json.dump({"step": 200}, f)
    assert run_state(run, config, 1) == "stopped"
    no_checkpoints = str(tmp_path / "early")
    train(config.replace(checkpoint_interval=None), 1, log_dir=no_checkpoints, print_fn=None)
    os.remove(os.path.join(no_checkpoints, "policy.npz"))
    assert run_state(no_checkpoints, config.replace(checkpoint_interval=None), 1) == "restart"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirectoryError, match="no readable config.json"):
        run_state(str(foreign), config, 1)


def test_reported_metrics():
    record = {"step": 500, "mean_return": -3.0, "critic_loss": None, "probe_correct": 2, "probe_total": 4,
              "alpha": 0.5}
    assert reported_metrics(record, 1000, replayed=True) == {
        "step": 500, "mean_return": -3.0, "probe_correct": 2, "probe_total": 4, "alpha": 0.5,
        "probe_accuracy": 0.5, "total_steps": 1000, "replayed": True}


# -- with Ray --------------------------------------------------------------------------------------

ray_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None,
    reason="Ray Tune is not installed (the sweep extra: pip install 'memrl[sweep]')")


@ray_missing
def test_a_trial_replays_finished_and_stopped_runs_and_resumes_unfinished_ones(tmp_path, monkeypatch):
    """run_trial (the trainable) in this process with Tune's report replaced: a finished run reports
    its records without training; a stopped one its records; a killed one resumes and reports the
    kept records (replayed) before the new ones, equal to a run made straight."""
    import ray.tune

    from memrl.sweep import run_trial

    reported, finished_first = [], []

    def report(metrics):
        reported.append(metrics)
        if metrics["step"] == metrics["total_steps"] and not metrics["replayed"]:
            # A scheduler may end the trial at this report: the run must be complete by then.
            finished_first.append(os.path.exists(os.path.join(run, "policy.npz")))

    monkeypatch.setattr(ray.tune, "report", report)
    config = small(600, every=200)
    straight, run = str(tmp_path / "straight"), str(tmp_path / "run")
    train(config, 2, log_dir=straight, print_fn=None)
    params = {"trial": {"name": "seed-2", "seed": 2, "point": {}, "config": config.to_dict(), "run_dir": run,
                        "tensorboard": False}}
    train(config.replace(total_steps=400), 2, log_dir=run, print_fn=None)  # stands for a run killed at 400
    os.remove(os.path.join(run, "policy.npz"))
    run_trial(params)
    assert records(run) == records(straight)
    assert [(m["step"], m["replayed"]) for m in reported] == [(0, True), (200, True), (400, False), (600, False)]
    assert all(m["total_steps"] == 600 for m in reported)
    assert finished_first == [True]
    assert [m["mean_return"] for m in reported] == [r["mean_return"] for r in records(straight)]

    reported.clear()
    mtime = os.path.getmtime(os.path.join(run, "metrics.jsonl"))
    run_trial(params)
    assert [(m["step"], m["replayed"]) for m in reported] == [(s, True) for s in (0, 200, 400, 600)]
    assert os.path.getmtime(os.path.join(run, "metrics.jsonl")) == mtime

    reported.clear()
    stopped = str(tmp_path / "stopped")
    train(config.replace(total_steps=400), 2, log_dir=stopped, print_fn=None)
    with open(os.path.join(stopped, STOPPED), "w") as f:
        json.dump({"step": 400}, f)
    run_trial({"trial": {**params["trial"], "run_dir": stopped}})
    assert [(m["step"], m["replayed"]) for m in reported] == [(0, True), (200, True), (400, True)]
    assert final_checkpoint(stopped)[1]["step_count"] == 400


@ray_missing
def test_the_callback_marks_trials_the_scheduler_stopped(tmp_path):
    from memrl.sweep import _callback_class

    class FakeTrial:
        config = {"trial": {"name": "a/seed-1"}}

    run = tmp_path / "a" / "seed-1"
    run.mkdir(parents=True)
    lines = []
    callback = _callback_class()({"a/seed-1": str(run)}, lines.append)
    callback.on_trial_result(0, [], FakeTrial(), {"step": 500, "total_steps": 1500, "mean_return": -2.0,
                                                  "probe_correct": 1, "probe_total": 3})
    callback.on_trial_result(0, [], FakeTrial(), {"step": 0, "total_steps": 1500, "mean_return": -9.0,
                                                  "replayed": True})
    assert not (run / STOPPED).exists()
    callback.on_trial_result(0, [], FakeTrial(), {"step": 1500, "total_steps": 1500, "mean_return": -1.0,
                                                  "done": True})
    assert not (run / STOPPED).exists()  # finished, not stopped
    callback.on_trial_result(0, [], FakeTrial(), {"step": 1000, "total_steps": 1500, "mean_return": -1.5,
                                                  "done": True})
    assert json.loads((run / STOPPED).read_text())["step"] == 1000
    assert lines == ["a/seed-1: step 500/1500 mean return -2, probe 1/3",
                     "a/seed-1: step 1500/1500 mean return -1",
                     "a/seed-1: stopped early by the scheduler at step 1000",
                     "a/seed-1: step 1000/1500 mean return -1.5"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One 2-trial sweep on a local Ray through the CLI (with --tensorboard), shared by the checks."""
    pytest.importorskip("ray", reason="Ray Tune is not installed (the sweep extra: pip install 'memrl[sweep]')")
    log_dir = tmp_path_factory.mktemp("sweeps") / "uninterrupted"
    start = time.perf_counter()
    out = cli("sweep", *SWEEP, "--log-dir", str(log_dir), "--tensorboard")
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stdout + out.stderr
    return log_dir, out, seconds


@ray_missing
def test_a_sweep_makes_run_directories_equal_to_runs_made_one_by_one(uninterrupted, tmp_path):
    log_dir, out, seconds = uninterrupted
    print(f"2-trial sweep: {seconds:.1f} s")
    assert "sweep: 2 trials in" in out.stdout and "2 new, 0 to continue, 0 already done" in out.stdout
    assert f"gamma=0.5/seed-1: step {STEPS}/{STEPS} mean return" in out.stdout
    assert sorted(os.listdir(log_dir)) == ["_tune", "gamma=0.5"]
    assert sorted(os.listdir(log_dir / "gamma=0.5")) == ["seed-1", "seed-2"]
    for seed, name in zip((1, 2), NAMES):
        run = log_dir / name
        assert {"config.json", "metrics.jsonl", "checkpoints", "policy.npz"} <= set(os.listdir(run))
        saved = json.loads((run / "config.json").read_text())
        assert saved["seed"] == seed and saved["config"]["threads"] == 1 and saved["config"]["gamma"] == 0.5
        alone = tmp_path / f"alone-{seed}"
        result = cli("train", "memory-chapter", "--seed", str(seed), "--steps", str(STEPS), "--set", "gamma=0.5",
                     *SMALL, "--log-dir", str(alone), "--quiet")
        assert result.returncode == 0, result.stderr
        assert_same_run(str(run), str(alone))
        assert [r["step"] for r in records(run)] == list(range(0, STEPS + 1, 500))
        assert any(n.startswith("events.out.tfevents.") for n in os.listdir(run))


@ray_missing
def test_tune_holds_every_evaluation_of_every_trial(uninterrupted):
    log_dir, _, _ = uninterrupted
    (trials,) = tune_results(log_dir)
    assert sorted(trials) == NAMES
    for name, results in trials.items():
        expected = [json.loads(line) for line in (log_dir / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in results] == [e["step"] for e in expected]
        for result, record in zip(results, expected):
            assert result["replayed"] is False and result["total_steps"] == STEPS
            for key in ("mean_return", "std_return", "alpha", "probe_correct", "elapsed_s"):
                assert result[key] == record[key], (name, key)
            assert result["probe_accuracy"] == record["probe_correct"] / record["probe_total"]


@ray_missing
def test_report_of_the_sweep(uninterrupted, tmp_path):
    pytest.importorskip("rliable", reason="the report extra is not installed: pip install 'memrl[report]'")
    log_dir, _, _ = uninterrupted
    out = cli("report", str(log_dir), "-o", str(tmp_path / "table.csv"))
    assert out.returncode == 0, out.stderr
    finals = [json.loads((log_dir / n / "metrics.jsonl").read_text().splitlines()[-1]) for n in NAMES]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| setting | runs | seeds | steps | final return IQM [95% CI]")
    assert lines[2].startswith(f"| gamma=0.5 | 2 | 1 2 | {STEPS} |")
    import csv

    (row,) = list(csv.DictReader(open(tmp_path / "table.csv")))
    returns = sorted(f["mean_return"] for f in finals)
    # Two runs: the IQM is their mean, and the bootstrap's 2.5% and 97.5% points are the two runs.
    assert float(row["final_return"]) == pytest.approx(sum(returns) / 2, rel=1e-12)
    assert (float(row["final_return_ci_low"]), float(row["final_return_ci_high"])) == tuple(returns)
    accuracy = sorted(f["probe_correct"] / f["probe_total"] for f in finals)
    assert float(row["probe_accuracy"]) == pytest.approx(sum(accuracy) / 2, rel=1e-12)
    assert float(row["wall_time_s_max"]) == max(f["elapsed_s"] for f in finals)


def _session_processes(leader):
    """Processes of the session ``leader`` started (the sweep and its Ray processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == leader and fields[0] != "Z":  # zombies are dead already
            found.append(int(entry))
    return found


def _kill_session(leader):
    """SIGKILL every process of the session, as a machine or job scheduler ends a job, and wait
    until none is left."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        processes = _session_processes(leader)
        if not processes:
            return
        for pid in processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"processes of session {leader} still alive: {_session_processes(leader)}")


@ray_missing
def test_a_killed_sweep_restarted_with_the_same_command_equals_an_uninterrupted_one(uninterrupted, tmp_path):
    """SIGKILL the sweep (driver, Ray and trial processes) once a trial has a checkpoint, run the same
    command again: the unfinished trials resume from their checkpoints, finished ones are not rerun,
    and every run directory equals the uninterrupted sweep's bit for bit."""
    reference, _, _ = uninterrupted
    log_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "memrl", "sweep", *SWEEP, "--log-dir", str(log_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not glob.glob(str(log_dir / "gamma=0.5" / "seed-*" / "checkpoints" / "step_*.npz")):
            assert process.poll() is None, "the sweep ended before any checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        _kill_session(process.pid)
        process.wait()
    unfinished = [n for n in NAMES if not (log_dir / n / "policy.npz").exists()]
    assert unfinished, "both trials finished before the kill"
    resumed_from = {}  # the step each unfinished trial continues from (0: it starts over)
    for name in unfinished:
        latest = CheckpointManager(str(log_dir / name / "checkpoints")).latest() \
            if (log_dir / name / "checkpoints").is_dir() else None
        resumed_from[name] = load_checkpoint(latest)[1]["step_count"] if latest else 0
    # A trial the kill caught before it wrote anything (on a loaded machine the second one may not
    # have started) counts as new; the others continue. Counted before the restart writes them.
    new = [n for n in unfinished if not RunDirectory(str(log_dir / n)).holds_run()]
    out = cli("sweep", *SWEEP, "--log-dir", str(log_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    done_before = len(NAMES) - len(unfinished)
    assert (f"{len(new)} new, {len(unfinished) - len(new)} to continue, {done_before} already done"
            in out.stdout)
    for name in NAMES:
        assert_same_run(str(log_dir / name), str(reference / name))
    trials = tune_results(log_dir)[-1]  # the restart's Tune records: every trial's whole history
    for name in NAMES:
        steps = [r["step"] for r in trials[name]]
        assert steps == list(range(0, STEPS + 1, 500))
        replayed = [r["replayed"] for r in trials[name]]
        assert replayed == [name not in unfinished or step < resumed_from[name] for step in steps], name


@ray_missing
def test_replayed_results_fill_ashas_rungs_but_stop_nothing():
    from ray.tune.schedulers import TrialScheduler

    from memrl.sweep import _asha_class

    class FakeTrial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    scheduler = _asha_class()(time_attr="step", metric="mean_return", mode="max", max_t=800, grace_period=100,
                              reduction_factor=2)
    trials = [FakeTrial(str(i)) for i in range(5)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)

    def result(trial, value, replayed, step=100):
        return scheduler.on_trial_result(None, trial, {"step": step, "mean_return": value, "replayed": replayed})

    assert result(trials[0], 10.0, False) == TrialScheduler.CONTINUE
    assert result(trials[1], 5.0, True) == TrialScheduler.CONTINUE  # below the cutoff 10, but replayed
    assert result(trials[2], 1.0, False) == TrialScheduler.STOP
    # The rung holds 10, 5 and 1 (cutoff: their median 5); without the replayed 5 it would be 5.5.
    assert result(trials[3], 5.2, False) == TrialScheduler.CONTINUE
    assert result(trials[4], 9.0, True, step=800) == TrialScheduler.CONTINUE  # max_t: ASHA's STOP, replayed


@ray_missing
def test_an_asha_sweep_stops_trials_consistently_and_a_rerun_changes_nothing(tmp_path):
    """Trials stopped early end at the step of their last record, marked, without a policy; the others
    finish with their policy (ASHA stops every trial at max_t, after the run is complete)."""
    log_dir = tmp_path / "asha"
    command = ["sweep", "pendulum-sac", "--seeds", "1-4", "--steps", "1000", "--set", "evaluation_interval=250",
               "--set", "n_evaluation_episodes=2", "--set", "checkpoint_interval=250", "--log-dir", str(log_dir),
               "--scheduler", "asha", "--grace-period", "250", "--reduction-factor", "2", "--quiet"]
    out = cli(*command)
    assert out.returncode == 0, out.stdout + out.stderr
    (trials,) = tune_results(log_dir)
    contents = {}
    for seed in range(1, 5):
        run = log_dir / f"seed-{seed}"
        steps = [r["step"] for r in records(run)]
        assert [r["step"] for r in trials[f"seed-{seed}"]] == steps
        if (run / STOPPED).exists():
            stop = json.loads((run / STOPPED).read_text())["step"]
            assert stop == steps[-1] < 1000 and not (run / "policy.npz").exists()
            assert trials[f"seed-{seed}"][-1]["done"] is True
        else:
            assert steps[-1] == 1000 and (run / "policy.npz").exists()
        contents[seed] = (run / "metrics.jsonl").read_text(), sorted(os.listdir(run))
    out = cli(*command)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(0 new, 0 continued, 4 already done)" in out.stdout
    for seed in range(1, 5):
        run = log_dir / f"seed-{seed}"
        assert contents[seed] == ((run / "metrics.jsonl").read_text(), sorted(os.listdir(run)))
    assert all(r["replayed"] for results in tune_results(log_dir)[-1].values() for r in results)
