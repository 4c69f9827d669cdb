"""TensorBoard event files written by --tensorboard equal metrics.jsonl, as TensorBoard reads them."""
import json
import os
import struct

import numpy as np
import pytest

pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed: pip install 'memrl[tensorboard]'")

from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: E402
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData  # noqa: E402
from tensorboardX.record_writer import masked_crc32c  # noqa: E402

from memrl import tensorboard  # noqa: E402
from memrl.config import preset  # noqa: E402
from helpers import SHORT_RUN, cli, set_args  # noqa: E402

# A short memory-task run (helpers.SHORT_RUN), three probes, a checkpoint at every evaluation.
SMALL = set_args({**SHORT_RUN, "n_probes": 3, "checkpoint_interval": 200})


def read_event_file(path):
    """Every Event of one file, with both CRCs of every record checked (the TFRecord framing)."""
    data = open(path, "rb").read()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body)
        event = Event()
        event.ParseFromString(body)
        events.append(event)
        pos += 16 + length
    assert pos == len(data)
    return events


def read_run(run):
    """What TensorBoard shows of a run directory: its event files in name order, each SessionLog.START
    dropping the events seen before at or after its step. Returns ({tag: {step: value}}, hparams
    plugin contents by kind)."""
    names = sorted(n for n in os.listdir(run) if n.startswith("events.out.tfevents."))
    assert names, f"no event file in {run}"
    kept = []
    for name in names:
        for event in read_event_file(os.path.join(run, name)):
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                kept = [e for e in kept if e.step < event.step]
            kept.append(event)
    values, plugin = {}, {}
    for event in kept:
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData()
                data.ParseFromString(value.metadata.plugin_data.content)
                plugin.setdefault(data.WhichOneof("data"), []).append(data)
            elif value.HasField("simple_value"):
                steps = values.setdefault(value.tag, {})
                assert event.step not in steps, f"{value.tag} twice at step {event.step}"
                steps[event.step] = value.simple_value
    return values, plugin


def expected_scalars(run):
    """metrics.jsonl as {tag: {step: float32 value}} (TensorBoard keeps scalars as float32)."""
    expected = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key == "step" or value is None:
                continue
            expected.setdefault(tensorboard.tag(key), {})[record["step"]] = float(np.float32(value))
        if record.get("probe_total"):
            expected.setdefault("eval/probe_accuracy", {})[record["step"]] = float(
                np.float32(record["probe_correct"] / record["probe_total"]))
    return expected


def test_train_tensorboard_events_equal_metrics_and_hold_the_configuration(tmp_path):
    run = tmp_path / "run"
    out = cli("train", "memory-chapter", "--seed", "3", "--steps", "400", "--log-dir", str(run), "--quiet",
              "--tensorboard", *SMALL, "--set", "gamma=0.25")
    assert out.returncode == 0, out.stderr
    values, plugin = read_run(run)
    expected = expected_scalars(run)
    assert values == expected
    assert sorted(expected["eval/mean_return"]) == [0, 200, 400]
    assert {"eval/probe_accuracy", "train/critic_loss", "train/alpha", "time/elapsed_s"} <= set(values)
    assert "train/actor_loss" in values and 0 not in values["train/actor_loss"]  # None before the actor trains
    (start,) = plugin["session_start_info"]
    hparams = start.session_start_info.hparams
    assert hparams["seed"].number_value == 3
    assert hparams["gamma"].number_value == 0.25
    assert hparams["environment"].string_value == "memory"
    assert hparams["environment_kwargs.episode_step_limit"].number_value == 150
    assert hparams["sampling.random_seq_length"].bool_value is True
    assert hparams["target_entropy"].number_value == -4.0
    assert hparams["memory_reset_interval"].string_value == "None"
    (experiment,) = plugin["experiment"]
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["eval/mean_return", "eval/probe_accuracy"]
    assert len(experiment.experiment.hparam_infos) == len(tensorboard.hyperparameters(
        preset("memory-chapter").to_dict(), seed=3))
    assert len(plugin["session_end_info"]) == 1


def test_a_resumed_run_shows_each_record_once(tmp_path):
    """A 300-step run extended to 600 drops its step-300 evaluation (metrics.jsonl keeps 0, 200,
    400, 600); the event files show exactly those, and only the newest file remains."""
    run = tmp_path / "run"
    assert cli("train", "memory-chapter", "--seed", "1", "--steps", "300", "--log-dir", str(run), "--quiet",
               "--tensorboard", *SMALL).returncode == 0
    first = sorted(os.listdir(run))
    assert sorted(read_run(run)[0]["eval/mean_return"]) == [0, 200, 300]
    out = cli("train", "--resume", str(run), "--steps", "600", "--quiet", "--tensorboard")
    assert out.returncode == 0, out.stderr
    values, plugin = read_run(run)
    assert values == expected_scalars(run)
    assert sorted(values["eval/mean_return"]) == [0, 200, 400, 600]
    files = [n for n in os.listdir(run) if n.startswith("events.out.tfevents.")]
    assert len(files) == 1 and files[0] not in first
    assert len(plugin["session_start_info"]) == 1


def test_tensorboard_reads_the_events(tmp_path):
    """TensorBoard's own reader (EventAccumulator) sees the scalars and the hyperparameters."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (only its reader is used here)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert cli("train", "pendulum-sac", "--steps", "400", "--log-dir", str(run), "--quiet", "--tensorboard",
               "--set", "evaluation_interval=200", "--set", "n_evaluation_episodes=2").returncode == 0
    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    expected = expected_scalars(run)
    assert set(accumulator.Tags()["scalars"]) == set(expected)
    for name, by_step in expected.items():
        assert {e.step: e.value for e in accumulator.Scalars(name)} == pytest.approx(by_step, rel=0, abs=0)
    assert "_hparams_/session_start_info" in accumulator.summary_metadata


def test_hyperparameters_and_scalars_of_a_record():
    flat = tensorboard.hyperparameters({"a": 1, "b": {"c": None, "d": [1, 2]}, "e": "x", "f": True, "g": {}}, seed=4)
    assert flat == {"a": 1, "b.c": "None", "b.d": "[1, 2]", "e": "x", "f": True, "g": "{}", "seed": 4}
    record = {"step": 10, "mean_return": -1.5, "critic_loss": None, "probe_correct": 2, "probe_total": 4,
              "note": "text", "alpha": 0.5}
    assert tensorboard.scalars(record) == {"eval/mean_return": -1.5, "eval/probe_correct": 2.0,
                                           "eval/probe_total": 4.0, "eval/probe_accuracy": 0.5, "train/alpha": 0.5}


def test_tensorboard_flag_needs_a_run_directory(tmp_path):
    out = cli("train", "pendulum-sac", "--steps", "10", "--tensorboard", "--quiet")
    assert out.returncode == 2
    assert out.stderr.strip() == ("memrl: error: --tensorboard: needs --log-dir DIR (the event files go into the "
                                  "run directory)")
