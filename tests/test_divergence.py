"""Non-finite losses and gradients stop training with a clear message and change nothing."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl._core import _update
from memrl.checkpoint import CheckpointManager
from memrl.config import preset
from memrl.loop import Trainer, train
from memrl.agent import TrainingDiverged
from helpers import cli

SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, np.float32("nan") * -1])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), where=st.integers(0, 10_000), bad=SPECIAL, seed=st.integers(0, 2**16))
def test_gradient_check_finds_any_non_finite_entry(n, where, bad, seed):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    extremes = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                         1e-45, -0.0], np.float32)
    x[: min(n, 5)] = extremes[: min(n, 5)]
    assert _update.all_finite(x)
    x[where % n] = bad
    assert not _update.all_finite(x)
    x64 = x.astype(np.float64)
    assert not _update.all_finite(x64)
    x64[where % n] = 1.0
    assert _update.all_finite(x64)


def _small_trainer(**changes):
    cfg = preset("pendulum-sac").replace(total_steps=400, n_warmup_steps=50, n_warmup_steps_critic=50,
                                         n_warmup_steps_actor=50, batch_size=16, **changes)
    trainer = Trainer(cfg, seed=2)
    for _ in range(80):
        trainer.step()
    return trainer


@pytest.mark.parametrize("network", ["critic_0", "critic_1", "target_critic_1"])
def test_nan_parameters_stop_training_and_the_step_changes_nothing(network):
    trainer = _small_trainer()
    nets = trainer.agent.networks()
    nets[network].params[3] = np.nan
    before = {name: net.params.copy() for name, net in nets.items()}
    with pytest.raises(TrainingDiverged, match=r"step 80: critic_\d: loss is nan"):
        trainer.step()
    # both critic gradients are checked before either Adam step
    for name, net in nets.items():
        np.testing.assert_array_equal(net.params, before[name], err_msg=name)


def test_nan_in_the_actor_is_reported():
    trainer = _small_trainer()
    trainer.agent.actor.params[:] = np.nan
    with pytest.raises(TrainingDiverged, match=r"step 80: "):
        trainer.step()


def test_divergence_keeps_the_checkpoints_already_written(tmp_path):
    cfg = preset("memory-chapter").replace(
        total_steps=200, n_warmup_steps=20, n_warmup_steps_critic=20, n_warmup_steps_actor=40, batch_size=4,
        evaluation_interval=60, n_evaluation_episodes=1, n_probes=0, checkpoint_interval=30,
        environment_kwargs={"horizon": 3, "input_probability": 0.5, "episode_step_limit": 30})

    def poison(trainer, record):
        if record["step"] == 120:
            trainer.agent.critics[0].params[:] = np.nan

    with pytest.raises(TrainingDiverged, match="step 120"):
        train(cfg, seed=1, log_dir=str(tmp_path), print_fn=None, hooks=[poison])
    _, arrays, meta = CheckpointManager(os.path.join(tmp_path, "checkpoints")).load_latest()
    assert meta["step_count"] == 120
    assert np.isfinite(arrays["critic_0/params"]).all()
    resumed = Trainer.load(CheckpointManager(os.path.join(tmp_path, "checkpoints")).latest())
    assert resumed.step_count == 120
    with open(tmp_path / "metrics.jsonl") as f:
        assert [int(line.split('"step": ')[1].split(",")[0]) for line in f] == [0, 60, 120]


def test_cli_exits_3_with_one_line_and_keeps_checkpoints(tmp_path):
    run = tmp_path / "run"
    out = cli("train", "pendulum-sac", "--steps", "400", "--log-dir", str(run), "--quiet",
              "--set", "n_warmup_steps=50", "--set", "n_warmup_steps_critic=50", "--set", "n_warmup_steps_actor=50",
              "--set", "checkpoint_interval=20", "--set", 'critic_optimizer={"lr": 1e30}')
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memrl: training diverged: step 5")
    trainer = Trainer.load(CheckpointManager(os.path.join(run, "checkpoints")).latest())
    assert trainer.step_count == 40
    assert all(np.isfinite(net.params).all() for net in trainer.agent.networks().values())
