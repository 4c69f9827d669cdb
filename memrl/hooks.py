"""The loop's steps around ``Trainer.step()``: evaluation, checkpoints, progress, policy export.

``memrl.loop.train`` composes them (as RLtools composes its loop steps): before each
``Trainer.step()`` every loop step's ``before_step`` runs, after it every ``after_step``, and
once the trainer is done every ``finish``, in the order given. Each decides for itself when it
has work (its interval). A ``Clock`` shared by them tells the run's wall time and its training
time (evaluations excluded).

* :class:`Evaluate`: every ``interval`` steps, before that step's training, and after the last
  step: the deterministic policy's return (and the memory task's count probe), printed, kept,
  appended to ``metrics.jsonl`` and passed to each ``hook(trainer, record)``;
* :class:`Checkpoint`: every ``interval`` steps and at the last step, the whole training state;
* :class:`Report`: every ``interval`` steps and at the end, ``progress(trainer, seconds, record)``;
* :class:`ExportPolicy`: at the end, ``policy.npz``.
"""
from __future__ import annotations

import json
import resource
import time
from typing import Callable, Sequence

Hook = Callable[["object", dict], None]
"""``hook(trainer, record)``, called after every evaluation."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Clock:
    """Wall time since the run began (continuing a resumed run's) and the part spent evaluating."""

    def __init__(self, elapsed: float = 0.0, evaluating: float = 0.0):
        self.start = time.perf_counter() - elapsed
        self.evaluating = evaluating

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def training(self) -> float:
        return self.elapsed() - self.evaluating


class LoopStep:
    """One concern of a training run, called around ``Trainer.step()`` (all methods optional)."""

    def before_step(self, trainer) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def finish(self, trainer) -> None:
        pass


class Evaluate(LoopStep):
    """Evaluations every ``interval`` steps (before that step's training) and after the last step.

    Each record holds ``step``, ``elapsed_s``, ``train_elapsed_s``, ``mean_return``,
    ``std_return``, ``mean_length``, ``std_length``, ``alpha``, ``peak_rss_mb``, the training
    metrics since the previous record (``critic_loss``, ``actor_loss``,
    ``train_episode_return``) and, on the memory task, ``probe_correct`` and ``probe_total``.
    ``records`` starts with a resumed run's earlier records; ``metrics_file`` (open for writing)
    gets each record as a JSON line, flushed at once.
    """

    def __init__(self, interval: int, clock: Clock, *, records: list | None = None, metrics_file=None,
                 hooks: Sequence[Hook] = (), print_fn: Callable[[str], None] | None = print):
        self.interval, self.clock = interval, clock
        self.records = records if records is not None else []
        self.metrics_file, self.hooks, self.print_fn = metrics_file, list(hooks), print_fn
        if metrics_file is not None:
            for record in self.records:
                metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

    @property
    def last(self) -> dict | None:
        return self.records[-1] if self.records else None

    def before_step(self, trainer) -> None:
        if trainer.step_count % self.interval == 0:
            self.evaluate(trainer)

    def finish(self, trainer) -> None:
        if not (self.records and self.records[-1]["step"] == trainer.step_count):
            self.evaluate(trainer)

    def evaluate(self, trainer) -> dict:
        started = time.perf_counter()
        result = trainer.evaluate()
        self.clock.evaluating += time.perf_counter() - started
        record = {"step": trainer.step_count, "elapsed_s": round(self.clock.elapsed(), 3),
                  "train_elapsed_s": round(self.clock.training(), 3),
                  "mean_return": result["mean_return"], "std_return": result["std_return"],
                  "mean_length": result["mean_length"], "std_length": result["std_length"],
                  "alpha": trainer.agent.alpha, "peak_rss_mb": peak_rss_mb(), **trainer.metrics.take()}
        lines = result.pop("probe_lines", None)
        record.update(trainer.learning_rates())
        if "probe_correct" in result:
            record.update(probe_correct=result["probe_correct"], probe_total=result["probe_total"])
        if self.print_fn is not None:
            for line in lines or ():
                self.print_fn(line)
            self.print_fn(f"Step: {trainer.step_count}/{trainer.config.total_steps} Mean return: "
                          f"{record['mean_return']:.6g} Mean episode length: {record['mean_length']:.6g}")
        self.records.append(record)
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
        for hook in self.hooks:
            hook(trainer, record)
        return record


class Checkpoint(LoopStep):
    """The whole training state every ``interval`` steps and at the last step (after that step,
    before the final evaluation, like every checkpoint: so extending a finished run repeats that
    evaluation exactly where a longer run would make it). The meta also holds ``clock``'s wall and
    evaluation seconds so far (``"clock"``), from which a resumed run's clock goes on."""

    def __init__(self, manager, interval: int, clock: Clock):
        self.manager, self.interval, self.clock = manager, interval, clock

    def after_step(self, trainer) -> None:
        if trainer.step_count % self.interval == 0 or trainer.done:
            from memrl.state import training_state

            arrays, meta = training_state(trainer)
            meta["clock"] = {"elapsed_s": self.clock.elapsed(), "evaluating_s": self.clock.evaluating}
            self.manager.save(trainer.step_count, arrays, meta)


class Report(LoopStep):
    """``progress(trainer, training_seconds, last_record)`` every ``interval`` steps and at the end."""

    def __init__(self, progress: Callable, interval: int, clock: Clock, evaluations: Evaluate):
        self.progress, self.interval, self.clock, self.evaluations = progress, interval, clock, evaluations

    def after_step(self, trainer) -> None:
        if trainer.step_count % self.interval == 0:
            self.progress(trainer, self.clock.training(), self.evaluations.last)

    def finish(self, trainer) -> None:
        self.progress(trainer, self.clock.training(), self.evaluations.last)


class ExportPolicy(LoopStep):
    """At the end, the actor as a policy file (``memrl.policy``, runnable with NumPy alone)."""

    def __init__(self, path: str, seed: int):
        self.path, self.seed = path, seed

    def finish(self, trainer) -> None:
        from memrl.policy import export_policy

        cfg = trainer.config
        export_policy(self.path, trainer.agent.actor, action_dim=trainer.action_dim, log_std_min=cfg.log_std_min,
                      log_std_max=cfg.log_std_max, memory_reset_interval=cfg.memory_reset_interval,
                      environment=trainer.environment_spec(),
                      meta={"step": trainer.step_count, "seed": self.seed, "algorithm": cfg.algorithm})
