"""Training loop: determinism, schedule, configuration errors, CLI (learning: tests/test_learning.py)."""
import json

import numpy as np
import pytest

from memrl.__main__ import main
from memrl.config import PRESETS, Config, preset
from memrl.loop import Trainer, train
from helpers import small_task, without_timing


def test_same_seed_same_run_bit_for_bit(tmp_path):
    cfg = small_task(total_steps=1300, evaluation_interval=650, n_warmup_steps_actor=1100)
    runs = []
    for name in ("a", "b"):
        r = train(cfg, seed=7, log_dir=str(tmp_path / name), print_fn=None)
        params = [net.params.copy() for net in r.trainer.agent.networks().values()]
        runs.append((params, r.trainer.agent.alpha, (tmp_path / name / "metrics.jsonl").read_text()))
    (pa, aa, ma), (pb, ab, mb) = runs
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    assert aa == ab
    assert [without_timing(json.loads(line)) for line in ma.splitlines()] == [
        without_timing(json.loads(line)) for line in mb.splitlines()]
    other = train(cfg, seed=8, print_fn=None)
    assert not np.array_equal(other.trainer.agent.actor.params, pa[0])


def test_schedule_counts_updates_and_warmup():
    cfg = small_task(total_steps=60, n_warmup_steps=20, n_warmup_steps_critic=30, n_warmup_steps_actor=40,
                     actor_training_interval=4, sequence_length=4, batch_size=2, critic_target_update_interval=3)
    trainer = Trainer(cfg, seed=0)
    calls = {"critics": 0, "actor": 0, "targets": 0}
    agent = trainer.agent
    update_critics, update_actor, update_targets = agent.update_critics, agent.update_actor, agent.update_targets

    def critics(update):
        calls["critics"] += 1
        calls["targets"] += bool(update)
        return update_critics(update)

    def actor():
        calls["actor"] += 1
        return update_actor()

    def targets():
        calls["targets"] += 1
        return update_targets()

    agent.update_critics, agent.update_actor, agent.update_targets = critics, actor, targets
    actor_before = agent.actor.params.copy()
    while not trainer.step():
        if trainer.step_count == 40:
            np.testing.assert_array_equal(agent.actor.params, actor_before)
    # critics every step from 30 (each call trains both), targets every third step from 30,
    # the actor every fourth step from 40
    assert calls == {"critics": 30, "actor": 5, "targets": 10}
    # the actor took over at step 20 on a fresh episode: the transition before it ended an episode
    assert trainer.buffer.episode_end[0, 19] == 1


def test_memory_reset_interval_wipes_rollout_state():
    cfg = small_task(total_steps=30, n_warmup_steps=0, n_warmup_steps_critic=100, n_warmup_steps_actor=100,
                     memory_reset_interval=5, evaluation_interval=1000)
    trainer = Trainer(cfg, seed=0)
    seen = []
    compiled = trainer._acting  # the compiled acting step reads (and clears) the trainer's reset flags

    class Spy:
        def run(self):
            seen.append(int(trainer.memory_reset[0]))
            return compiled.run()

    trainer._acting = Spy()
    for _ in range(12):
        trainer.step()
    assert seen == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0"),
    ({"sequence_length": 500, "replay_capacity": 100}, "sequence_length: expected at most the replay capacity"),
    ({"gamma": 1.5}, "gamma: expected a value <= 1.0"),
    ({"actor_activation": "swish"}, "actor_activation: expected one of"),
    ({"tau": float("nan")}, "tau: expected a finite number"),
    ({"threads": 3}, "threads: expected 1 or 2"),
    ({"gru_layers": 0}, "gru_layers: expected an integer >= 1, got 0"),
    ({"gru_layers": 3}, "gru_layers: expected at most 2 (the networks' 4 layers less the input and output layers)"),
    ({"sequence_length": 1, "gru_layers": 1}, "gru_layers: expected None for feed-forward networks"),
    ({"environment": "cartpole"}, "environment: expected one of"),
    # replayed histories only: the losses of earlier steps would use re-sampled actions that never happened
    ({"mask_non_terminal": False}, "mask_non_terminal: expected True"),
    # a current-step bonus needs the current step in the target window, recurrent or not
    ({"entropy_bonus_next_step": False, "sampling": {"include_first_step_in_targets": False}},
     "entropy_bonus_next_step: False"),
    ({"sequence_length": 1, "actor_num_layers": 3, "critic_num_layers": 3, "entropy_bonus_next_step": False,
      "sampling": {"include_first_step_in_targets": False}}, "entropy_bonus_next_step: False"),
])
def test_invalid_configurations_raise_before_anything_runs(changes, message):
    cfg = preset("memory-chapter").replace(**changes)
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        Trainer(cfg, seed=0)


def test_unknown_keys_and_bad_probabilities_raise():
    with pytest.raises(ValueError, match="unknown key"):
        Config.from_dict({"batchsize": 4})
    with pytest.raises(ValueError, match="sampling: unknown key"):
        Config.from_dict({"sampling": {"nominal": 0.5}})
    with pytest.raises(ValueError, match="nominal_sequence_length_probability"):
        Config.from_dict({"sampling": {"nominal_sequence_length_probability": 1.5}})
    with pytest.raises(ValueError, match="seed"):
        Trainer(small_task(), seed=-1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_survives_a_dict_round_trip(name):
    cfg = preset(name)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # a partial update of the environment settings keeps the others
    updated = Config.from_dict({"environment_kwargs": {"episode_step_limit": 7}}, base=cfg)
    assert updated.environment_kwargs == {**cfg.environment_kwargs, "episode_step_limit": 7}


def test_chapter_preset_has_the_chapters_values():
    cfg = preset("memory-chapter")
    assert (cfg.sequence_length, cfg.batch_size, cfg.gamma, cfg.total_steps) == (50, 4, 0.0, 200000)
    assert cfg.capacity == 200001  # every transition kept, the ring never wraps
    assert (cfg.n_warmup_steps, cfg.n_warmup_steps_critic, cfg.n_warmup_steps_actor) == (1000, 1000, 10000)
    assert (cfg.critic_training_interval, cfg.actor_training_interval, cfg.target_entropy, cfg.alpha) == (1, 2, -4.0, 1.0)
    assert (cfg.actor_optimizer.lr, cfg.critic_optimizer.lr, cfg.alpha_optimizer.lr) == (1e-4, 1e-3, 1e-3)
    assert cfg.actor_optimizer.eps == 1e-7 and not cfg.shared_batch and cfg.mask_non_terminal
    for opt in (cfg.actor_optimizer, cfg.critic_optimizer, cfg.alpha_optimizer):  # RLtools' EPSILON_SQRT
        assert (opt.beta1, opt.beta2, opt.eps, opt.v_hat_floor) == (0.9, 0.999, 1e-7, 1e-7)
    s = cfg.sampling
    assert (s.include_first_step_in_targets, s.always_sample_from_initial_state, s.random_seq_length,
            s.enable_nominal_sequence_length_probability, s.nominal_sequence_length_probability) == (
        True, False, True, True, 0.5)
    assert cfg.environment_kwargs["horizon"] == 10 and cfg.environment_kwargs["episode_step_limit"] == 2000


def test_cli_runs_and_writes_metrics(tmp_path, capsys):
    code = main(["train", "memory-chapter", "--seed", "1", "--steps", "300", "--log-dir", str(tmp_path),
                 "--set", "evaluation_interval=150", "--set", "n_evaluation_episodes=1",
                 "--set", "environment_kwargs.episode_step_limit=50", "--set", "n_warmup_steps=100",
                 "--set", "n_warmup_steps_critic=100", "--set", "n_warmup_steps_actor=200"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Step: 0/300 Mean return:" in out and "Count " in out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 150, 300]
    for key in ("step", "elapsed_s", "mean_return", "std_return", "probe_correct", "probe_total"):
        assert key in records[0]
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1


@pytest.mark.parametrize("argv, fragment", [
    (["train", "nope"], "preset: expected one of"),
    (["train", "memory-chapter", "--set", "gamma=2"], "gamma: expected a value <= 1.0"),
    (["train", "memory-chapter", "--set", "batchsize=3"], "unknown key"),
    (["train", "memory-chapter", "--log-dir", "/proc/memrl-cannot-write"], "memrl: error:"),
])
def test_cli_mistakes_print_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


@pytest.mark.parametrize("changes", [
    {},
    {"shared_batch": True},
    {"entropy_bonus_next_step": True, "gamma": 0.9, "sampling": {"include_first_step_in_targets": False}},
    {"actor_entropy_positions": "final", "gru_gates": "exact", "rltools_critic_backward_ignores_resets": True},
    {"adaptive_alpha": False, "rltools_alpha_gradient": True},
    {"critic_training_interval": 2, "critic_target_update_interval": 3},
    {"algorithm": "td3", "critic_target_update_interval": 2, "actor_training_interval": 2},
    {"algorithm": "td3", "ignore_termination": True},
])
def test_one_thread_and_two_give_the_same_run_bit_for_bit(changes):
    """Every setting computes the same numbers whichever thread runs which half of a pair."""
    base = Config.from_dict(changes, base=preset("memory-chapter").replace(
        total_steps=300, n_warmup_steps=100, n_warmup_steps_critic=100, n_warmup_steps_actor=150,
        environment_kwargs={"horizon": 10, "input_probability": None, "episode_step_limit": 120,
                            "mode": "count_input"}))
    runs = []
    for threads in (1, 2):
        trainer = Trainer(base.replace(threads=threads), seed=3)
        while not trainer.step():
            pass
        runs.append(trainer)
    reference = runs[0].agent.networks()
    for name, net in runs[1].agent.networks().items():
        np.testing.assert_array_equal(net.params, reference[name].params, err_msg=name)
        np.testing.assert_array_equal(net.adam_v, reference[name].adam_v, err_msg=name)
    assert runs[1].agent.alpha == runs[0].agent.alpha


def test_vectorised_collection_keeps_one_stream_per_environment():
    cfg = small_task(n_environments=3, total_steps=260, n_warmup_steps_actor=230, evaluation_interval=1000,
                     environment_kwargs={"horizon": 3, "input_probability": 0.5, "episode_step_limit": 40})
    trainer = Trainer(cfg, seed=0)
    calls = []
    compiled = trainer._acting  # the compiled policy step, bound to the trainer's (N, O) observations

    class Spy:
        def run(self):
            calls.append(trainer.observations.shape)
            return compiled.run()

    trainer._acting = Spy()
    while not trainer.step():
        pass
    assert set(calls) == {(3, 1)}  # one batched actor step for all environments per loop step
    buf = trainer.buffer
    for s in range(3):
        assert buf.size(s) == 260
        start = 0
        for i in range(260):
            assert buf.episode_start[s, i] == start, (s, i)
            if buf.episode_end[s, i]:
                start = i + 1
            elif i + 1 < 260:
                assert buf.next_observation[s, i, 0] == buf.observation[s, i + 1, 0]
    assert not np.array_equal(buf.observation[0, :260], buf.observation[1, :260])


def test_cli_trains_on_a_gymnasium_environment(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    code = main(["train", "pendulum-td3", "--env", "gymnasium:Pendulum-v1", "--steps", "300", "--seed", "3",
                 "--log-dir", str(tmp_path), "--set", "evaluation_interval=300", "--set", "n_evaluation_episodes=2",
                 "--set", "batch_size=16", "--quiet"])
    assert code == 0
    capsys.readouterr()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000000000300.npz"]  # the final one
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 300] and records[0]["mean_length"] == 200
    assert (tmp_path / "policy.npz").exists()


@pytest.mark.parametrize("num_layers, gru_layers, kinds", [
    (3, None, ["Dense", "GRU", "Dense"]),
    (4, None, ["Dense", "GRU", "GRU", "Dense"]),  # the chapter's stacks (RLtools)
    (5, None, ["Dense", "GRU", "GRU", "Dense", "Dense"]),
    (4, 1, ["Dense", "GRU", "Dense", "Dense"]),  # a GRU with an MLP head (pomdp-baselines)
    (5, 1, ["Dense", "GRU", "Dense", "Dense", "Dense"]),
    (5, 3, ["Dense", "GRU", "GRU", "GRU", "Dense"]),
])
def test_gru_layers_sets_the_recurrent_networks_stacks(num_layers, gru_layers, kinds):
    cfg = preset("memory-chapter").replace(actor_num_layers=num_layers, critic_num_layers=num_layers,
                                           gru_layers=gru_layers)
    agent = Trainer(cfg, seed=0).agent
    for net in agent.networks().values():
        assert [type(layer).__name__ for layer in net.layers] == kinds


@pytest.mark.parametrize("changes, keys", [
    (dict(), ["actor_lr", "alpha_lr", "critic_lr"]),
    (dict(adaptive_alpha=False), ["actor_lr", "critic_lr"]),
    (dict(algorithm="td3", actor_training_interval=2, critic_target_update_interval=2), ["actor_lr", "critic_lr"]),
])
def test_records_carry_the_scheduled_rates_of_the_optimizers_in_use(changes, keys):
    """``Trainer.learning_rates``: each scheduled optimizer's rate at the current step; the
    temperature's only where one is learned; nothing without schedules."""
    decay = {f"{name}.{key}": value for name in ("actor_optimizer", "critic_optimizer", "alpha_optimizer")
             for key, value in (("final_lr", 0.0), ("decay_steps", 1000))}
    trainer = Trainer(small_task(**changes, **decay), seed=1)
    assert sorted(trainer.learning_rates()) == keys
    trainer.step_count = 250
    assert trainer.learning_rates()["critic_lr"] == trainer.config.critic_optimizer.lr * 0.75
    assert Trainer(small_task(**changes), seed=1).learning_rates() == {}
