"""TensorBoard event files for a run: a hook for ``memrl.loop.train(hooks=[...])``.

``TensorBoardHook(run_dir)`` writes every evaluation record that ``train`` passes to its hooks
(the same record it appends to ``metrics.jsonl``) as TensorBoard scalars in ``run_dir`` itself, so
``tensorboard --logdir DIR`` shows each run under its run directory's path (``gamma=0.9/seed-3``
for a sweep's trial). Tags group the record's fields: ``eval/`` for the evaluation
(``mean_return``, ``std_return``, ``mean_length``, ``std_length``, ``probe_correct``,
``probe_total`` and ``probe_accuracy = probe_correct / probe_total`` on the memory task),
``train/`` for training (``critic_loss``, ``actor_loss``, ``alpha``, ``train_episode_return``)
and ``time/`` for ``elapsed_s``, ``train_elapsed_s`` and ``peak_rss_mb``; the global step is the
record's environment ``step``. Fields that are None (no update yet) are left out. Values are
stored as TensorBoard's scalars store them, float32 (``Summary.Value.simple_value``).

The configuration and seed are written once as hyperparameters (TensorBoard's HParams plugin:
nested fields as dotted names, lists and dicts as JSON text, None as ``"None"``), with
``eval/mean_return`` (and ``eval/probe_accuracy`` on the memory task) as the session's metrics;
the session is marked finished when the record of the last step arrives.

Each training process appends its own event file. Its first record also writes, before it,
the records that ``metrics.jsonl`` already holds (those a resumed run kept from before its
checkpoint, with their wall times set back by their ``elapsed_s``), after the event that makes
TensorBoard drop every earlier event of the directory (tensorboardX's ``purge_step`` at step 0).
Once that file is on disk, the event files earlier memrl processes left in the directory are
removed (the new one holds all they held), so every TensorBoard version sees each record once;
the purge event covers a crash between the two. The event files always show exactly
``metrics.jsonl``: a resumed run's repeated evaluations appear once, and a run started over with
``--overwrite`` replaces the old run's events. Needs
the optional extra ``pip install 'memrl[tensorboard]'`` (tensorboardX).
"""
from __future__ import annotations

import json
import math
import os
import time

INSTALL_HINT = "--tensorboard needs tensorboardX: pip install 'memrl[tensorboard]' (or pip install tensorboardX)"

SUFFIX = ".memrl"
"""Event files written here end with this (``events.out.tfevents.<time>.<host>.<ns>.memrl``)."""

GROUPS = {
    "mean_return": "eval", "std_return": "eval", "mean_length": "eval", "std_length": "eval",
    "probe_correct": "eval", "probe_total": "eval", "probe_accuracy": "eval",
    "critic_loss": "train", "actor_loss": "train", "alpha": "train", "train_episode_return": "train",
    "actor_lr": "train", "critic_lr": "train", "alpha_lr": "train",
    "elapsed_s": "time", "train_elapsed_s": "time", "peak_rss_mb": "time",
}
"""Tag group of each record field; a field not listed goes to ``other/``."""


def tag(field: str) -> str:
    """The TensorBoard tag of a metrics.jsonl field: ``"mean_return"`` -> ``"eval/mean_return"``."""
    return f"{GROUPS.get(field, 'other')}/{field}"


def scalars(record: dict) -> dict[str, float]:
    """``{tag: value}`` for the numeric fields of one evaluation record (``step`` is the x axis,
    not a scalar; None and non-numeric fields are left out), plus ``eval/probe_accuracy`` when the
    record holds a probe."""
    out = {}
    for field, value in record.items():
        if field == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[tag(field)] = float(value)
    if record.get("probe_total"):
        out[tag("probe_accuracy")] = record["probe_correct"] / record["probe_total"]
    return out


def hyperparameters(config: dict, seed: int | None = None) -> dict:
    """A flat ``{name: bool | int | float | str}`` of a configuration dict (``Config.to_dict()``):
    nested dicts become dotted names, None becomes ``"None"``, lists become JSON text; ``seed``
    is added when given."""
    flat: dict = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), item)
        elif value is None:
            flat[prefix] = "None"
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    visit("", config)
    if seed is not None:
        flat["seed"] = int(seed)
    return flat


def _event_files(folder: str) -> list[str]:
    """Names of the event files memrl wrote in ``folder``."""
    return sorted(n for n in os.listdir(folder) if n.startswith("events.out.tfevents.") and n.endswith(SUFFIX))


class TensorBoardHook:
    """``hook(trainer, record)`` for :func:`memrl.loop.train`: writes ``record`` to TensorBoard
    event files in ``run_dir`` (see the module doc). The file is opened at the first record and
    flushed to disk after every record; ``close()`` (or ``with``) ends it.

    Raises ImportError with the install hint when tensorboardX is missing (at construction, so a
    command fails before training), ValueError if ``run_dir`` is not a string or path.
    """

    def __init__(self, run_dir: str | os.PathLike):
        if not isinstance(run_dir, (str, os.PathLike)):
            raise ValueError(f"run_dir: expected a directory path, got {type(run_dir).__name__}")
        try:
            import tensorboardX  # noqa: F401
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        self.run_dir = os.fspath(run_dir)
        self.writer = None
        self._stale: list[str] = []

    def _open(self, trainer) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import hparams

        os.makedirs(self.run_dir, exist_ok=True)
        self._stale = _event_files(self.run_dir)
        # EventsWriter writes and fsyncs in the calling thread (SummaryWriter queues events for a
        # background thread, so its flush() may return before a record is on disk). The suffix
        # keeps two files of the same second (a quick resume) from sharing a name; TensorBoard
        # reads a directory's files in name order, which stays their time order.
        self.writer = EventsWriter(os.path.join(self.run_dir, "events"), f".{time.time_ns()}{SUFFIX}")
        # What tensorboardX's purge_step writes: TensorBoard drops the events at or after this
        # step that it read before (from the directory's earlier files).
        self.writer.write_event(Event(wall_time=time.time(), step=0, session_log=SessionLog(status=SessionLog.START)))
        config = trainer.config
        metrics = {tag("mean_return"): math.nan}
        if config.environment == "memory" and config.n_probes > 0:
            metrics[tag("probe_accuracy")] = math.nan
        experiment, session_start, self._session_end = hparams(hyperparameters(config.to_dict(), trainer.seed),
                                                               metrics)
        self._write(experiment, 0)
        self._write(session_start, 0)

    def _write(self, summary, step: int, wall_time: float | None = None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.writer.write_event(Event(wall_time=time.time() if wall_time is None else wall_time, step=step,
                                      summary=summary))

    def _write_record(self, record: dict, wall_time: float | None = None) -> None:
        from tensorboardX.summary import scalar

        step = int(record["step"])
        for name, value in scalars(record).items():
            self._write(scalar(name, value), step, wall_time)

    def __call__(self, trainer, record: dict) -> None:
        from memrl.run import RunDirectory

        if self.writer is None:
            self._open(trainer)
            now = time.time()
            for earlier in RunDirectory(self.run_dir).read_metrics():
                if earlier["step"] < record["step"]:
                    back = record.get("elapsed_s", 0.0) - earlier.get("elapsed_s", 0.0)
                    self._write_record(earlier, now - back)
        self._write_record(record)
        if record["step"] >= trainer.config.total_steps:
            self._write(self._session_end, int(record["step"]))
        self.writer.flush()  # to disk (fsync) before training goes on
        for name in self._stale:  # the new file holds all they held
            try:
                os.remove(os.path.join(self.run_dir, name))
            except FileNotFoundError:
                pass
        self._stale = []

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "TensorBoardHook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
