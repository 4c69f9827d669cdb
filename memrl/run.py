"""A run directory: what one training run writes to disk, and the rules for reusing one.

``--log-dir DIR`` (``train(..., log_dir=DIR)``) makes ``DIR`` a run directory holding exactly one run:

* ``config.json``: ``{"seed": ..., "config": {...}}``, the run's whole configuration;
* ``metrics.jsonl``: one JSON object per evaluation (flushed as it is written);
* ``checkpoints/step_<step>.npz``: the whole training state every ``checkpoint_interval`` steps
  and at the last step (the newest ``keep_checkpoints`` kept; :mod:`memrl.checkpoint`);
* ``policy.npz``: the trained actor, runnable with NumPy alone (written when the run finishes;
  ``python -m memrl export`` makes one from any checkpoint);
* with ``--tensorboard``, ``events.out.tfevents.*.memrl``: the records as TensorBoard events.

Training into a directory that already holds a run is refused (:class:`RunDirectoryError`):
continue it with ``resume``, or clear it with ``overwrite`` (which removes only the files above).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memrl.config import Config

from memrl.checkpoint import CheckpointError, CheckpointManager, first_difference, load_checkpoint

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
POLICY = "policy.npz"
ARTEFACTS = (CONFIG, METRICS, CHECKPOINTS, POLICY)
TENSORBOARD_PREFIX, TENSORBOARD_SUFFIX = "events.out.tfevents.", ".memrl"  # memrl.tensorboard's event files


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked (it holds another run, or no run to continue)."""


class RunDirectory:
    """The files of one run under ``path`` (nothing is created until a method writes)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.config_path = os.path.join(self.path, CONFIG)
        self.metrics_path = os.path.join(self.path, METRICS)
        self.checkpoints_path = os.path.join(self.path, CHECKPOINTS)
        self.policy_path = os.path.join(self.path, POLICY)

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    def artefacts(self) -> list[str]:
        """The run files present (names from ``ARTEFACTS`` and memrl's TensorBoard event files; an
        empty checkpoints folder does not count)."""
        found = []
        for name in ARTEFACTS:
            full = os.path.join(self.path, name)
            if name == CHECKPOINTS:
                if os.path.isdir(full) and os.listdir(full):
                    found.append(name)
            elif os.path.exists(full):
                found.append(name)
        if os.path.isdir(self.path):
            found += sorted(n for n in os.listdir(self.path) if n.startswith(TENSORBOARD_PREFIX)
                            and n.endswith(TENSORBOARD_SUFFIX))
        return found

    def holds_run(self) -> bool:
        return bool(self.artefacts())

    def prepare_new(self, overwrite: bool = False) -> None:
        """Make the directory ready for a new run: refuse one that holds a run unless ``overwrite``,
        in which case the run's files (only those) are removed. Raises RunDirectoryError, OSError."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirectoryError(f"log_dir: {self.path!r} is a file, expected a directory")
        present = self.artefacts() if os.path.isdir(self.path) else []
        if present and not overwrite:
            raise RunDirectoryError(
                f"log_dir: {self.path!r} already holds a run ({', '.join(present)}); continue it with "
                f"--resume {self.path} (resume=True) or clear it with --overwrite (overwrite=True)")
        for name in present:
            full = os.path.join(self.path, name)
            if os.path.isdir(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
        os.makedirs(self.path, exist_ok=True)
        probe = os.path.join(self.path, ".memrl-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)

    def checkpoints(self, keep: int) -> CheckpointManager:
        return CheckpointManager(self.checkpoints_path, keep=keep)

    def latest_checkpoint(self) -> tuple[str, dict, dict]:
        """``(path, arrays, meta)`` of the newest loadable checkpoint; RunDirectoryError if none."""
        if not os.path.isdir(self.checkpoints_path):
            raise RunDirectoryError(f"resume: {self.path!r} holds no checkpoints/ folder (not a run directory, "
                                    f"or a run made with checkpoint_interval=None)")
        found = CheckpointManager(self.checkpoints_path).load_latest()
        if found is None:
            raise RunDirectoryError(f"resume: no loadable checkpoint in {self.checkpoints_path!r}")
        return found

    def write_config(self, seed: int, config_dict: dict) -> None:
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"seed": seed, "config": config_dict}, f, indent=2)
        os.replace(tmp, self.config_path)

    def read_metrics(self) -> list[dict]:
        """The evaluation records written so far (a torn last line, from a kill, is dropped)."""
        if not os.path.exists(self.metrics_path):
            return []
        records = []
        with open(self.metrics_path) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return records


RESUME_CHANGEABLE = ("total_steps", "threads", "evaluation_interval", "n_evaluation_episodes", "n_probes",
                     "probe_sequence_length", "checkpoint_interval", "keep_checkpoints")
"""Fields a resumed run may change: its length, its thread count, and what it evaluates and saves
(evaluations and probes draw from their own random streams, so training is unaffected)."""


def resume_config(saved: Config, requested: Config, step: int) -> Config:
    """The configuration a run resumed at ``step`` continues with: ``saved``, with the fields of
    ``RESUME_CHANGEABLE`` taken from ``requested``. Any other difference raises RunDirectoryError
    naming the field (a resumed run must go on computing what it computed)."""
    theirs, mine = _jsonable(saved.to_dict()), _jsonable(requested.to_dict())
    for key in theirs:
        if key in RESUME_CHANGEABLE:
            continue
        difference = first_difference(theirs[key], mine.get(key), key, dotted=True)
        if difference:
            where, has, wants = difference
            raise RunDirectoryError(f"--resume: cannot change {where}: the run has {has!r}, requested {wants!r}"
                                    f" (only {', '.join(RESUME_CHANGEABLE)} can change; start a new run directory "
                                    f"for anything else)")
    if requested.total_steps < step:
        raise RunDirectoryError(f"total_steps: the run is already at step {step}, got {requested.total_steps}")
    return saved.replace(**{key: getattr(requested, key) for key in RESUME_CHANGEABLE}).validate()


def _jsonable(value):
    return json.loads(json.dumps(value))


def find_checkpoint(source: str | os.PathLike) -> tuple[str, dict, dict]:
    """``(path, arrays, meta)`` of a training checkpoint: the file ``source``, or the newest loadable
    checkpoint of the run directory ``source``. Raises RunDirectoryError / CheckpointError."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return RunDirectory(source).latest_checkpoint()
    if not os.path.exists(source):
        raise RunDirectoryError(f"{source!r}: no such file or run directory")
    arrays, meta = load_checkpoint(source)
    missing = [key for key in ("config", "seed", "architecture") if key not in meta]
    if missing:
        raise CheckpointError(f"{source}: not a training checkpoint (no {' or '.join(missing)})")
    return source, arrays, meta
