"""Sweeps: every (seed, grid point) of a setting as a trial on Ray Tune, each an ordinary run directory.

``python -m memrl sweep PRESET --seeds 1-5 --grid gamma=0.9,0.99 --log-dir DIR`` plans one trial per
seed and grid point and runs them with Ray Tune (the optional extra ``pip install 'memrl[sweep]'``):
on an embedded local Ray by default, with as many trials at once as the machine has cores, or on a
running Ray cluster with ``--address``. Tune schedules the trials, retries failed ones
(``max_failures``) and, with ``--scheduler asha``, stops unpromising ones early; memrl only plans
the trials and runs each with :func:`memrl.loop.train`, the code path of ``memrl train``.

Layout (see :mod:`memrl.run` for a run directory)::

    DIR/gamma=0.9/seed-1/      config.json, metrics.jsonl, checkpoints/, policy.npz
    DIR/gamma=0.9/seed-2/      ...
    DIR/gamma=0.99/seed-1/     ...
    DIR/_tune/<start time>/    Tune's own records of each invocation (trial states, results)

A trial's directory is ``<point>/seed-<seed>`` with ``<point>`` the grid's ``key=value`` pairs
joined by commas in the order given (just ``seed-<seed>`` without a grid). Each trial's
configuration is the preset with ``--set`` changes, ``--steps``, its grid point and, unless
``threads`` is set explicitly, ``threads=1``; it asks Ray for ``threads`` CPUs, so trials never
oversubscribe the cores (memrl pins SciPy's BLAS to one thread anyway). Every evaluation record is
reported to Tune (``ray.tune.report``) with ``probe_accuracy`` and ``total_steps`` added and the
fields that are None left out.

Restarting. The run directories, not Tune's records, say what is done: a sweep that was killed
(or interrupted, or had trials fail) continues when the same command runs again. Each invocation
is a new Tune experiment over all the planned trials, and each trial looks at its directory:

* new (no run there): trains from step 0;
* unfinished (a checkpoint there): ``train(resume=True)`` continues from the newest checkpoint,
  bit for bit as if never interrupted (a run without any checkpoint yet starts over);
* finished (``policy.npz`` written and the last evaluation at ``total_steps``), or stopped early
  by the scheduler (``stopped-early.json`` written by the sweep): trains nothing, and reports the
  records of its ``metrics.jsonl`` to Tune at once, so every invocation's Tune results hold every
  trial's whole history and a scheduler rebuilds its rungs from them.

Results replayed from disk carry ``replayed=True``; the scheduler records them in its rungs but
stops no trial on them (the trial went past them before, or was stopped on them already). A
trial reports its last step's record only once ``train`` has returned and the run directory is
complete (a scheduler may end a trial at any report, and ASHA does at ``max_t``). A directory holding a run of another seed or
another configuration is refused before anything starts (only the fields a resumed run may change,
``memrl.loop.RESUME_CHANGEABLE``, may differ; a larger ``--steps`` extends finished trials). With a
scheduler, which trials it stops depends, as for ASHA in any asynchronous run, on the order in
which results arrive; each trial's numbers up to where it stopped are still those of the same run
made alone. On a cluster, memrl must be installed on every node and DIR must be a file system
every node sees at the same path (the trials write their run directories there).

Interrupting a sweep (Ctrl-C) lets Tune end it; the trials stop where they are and the same
command continues them. ``SweepResult.unfinished`` lists them (the CLI exits with status 130).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from memrl.config import Config
from memrl.checkpoint import CheckpointManager
from memrl.run import RunDirectory, RunDirectoryError, resume_config

INSTALL_HINT = "sweeps need Ray Tune: pip install 'memrl[sweep]' (or pip install 'ray[tune]')"
STOPPED = "stopped-early.json"
"""Written into a trial's run directory when the scheduler stopped it before ``total_steps``."""
TUNE_FOLDER = "_tune"
SCHEDULERS = ("asha",)
MODES = ("max", "min")
ALWAYS_REPORTED = ("mean_return", "std_return", "mean_length", "std_length", "alpha", "step")
"""Record fields every reported result holds (``probe_accuracy`` too on the memory task with probes)."""


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    """One run of a sweep: ``name`` is its run directory relative to the sweep's directory."""

    name: str
    seed: int
    point: dict = field(default_factory=dict)
    config: Config = field(default_factory=Config)


def parse_seeds(text: str) -> list[int]:
    """``"1-5"`` -> [1, 2, 3, 4, 5]; ``"1,3,7"`` and ``"0-2,9"`` too. Raises ValueError naming
    ``--seeds`` for anything else, a negative seed, an empty or reversed range, or a repeated seed."""
    seeds: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"--seeds: expected seeds like 1-5 or 1,3,7 (non-negative integers), got {text!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"--seeds: range {part.strip()!r} is empty (expected FIRST-LAST with FIRST <= LAST)")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds: seed(s) {repeated} given more than once in {text!r}")
    return seeds


def split_values(text: str) -> list[str]:
    """``"0.9,0.99"`` -> ["0.9", "0.99"]: splits at commas outside brackets, braces and quotes, so
    JSON lists and objects stay whole (``"[1,2],[3,4]"`` -> ["[1,2]", "[3,4]"])."""
    values, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_grid(items: list[str], parse_value: Callable[[str], object]) -> dict[str, list]:
    """``["gamma=0.9,0.99", "batch_size=4,8"]`` -> ``{"gamma": [0.9, 0.99], "batch_size": [4, 8]}``,
    each value read by ``parse_value`` (the CLI's ``--set`` rules). Raises ValueError naming
    ``--grid`` for a missing ``=``, an empty value, a repeated key or a repeated value."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--grid: expected KEY=VALUE1,VALUE2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"--grid: key {key!r} given more than once")
        texts = split_values(raw)
        if any(not t for t in texts):
            raise ValueError(f"--grid: empty value in {item!r}")
        values = [parse_value(t) for t in texts]
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError(f"--grid: repeated value in {item!r}")
        grid[key] = values
    return grid


def format_value(value) -> str:
    """A grid value as it appears in a trial's name: strings as they are, everything else as
    compact JSON (``0.9``, ``true``, ``null``, ``[1,2]``); path separators become ``_``."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.replace(os.sep, "_")


def point_name(point: dict) -> str:
    """``{"gamma": 0.9, "tau": 0.01}`` -> ``"gamma=0.9,tau=0.01"`` ("" for the empty point)."""
    return ",".join(f"{key}={format_value(value)}" for key, value in point.items())


def plan_trials(config: Config, seeds: list[int], grid: dict[str, list] | None = None,
                threads: int | None = 1) -> list[Trial]:
    """The trials of a sweep, grid points (the cartesian product of ``grid``'s values, first key
    slowest) times ``seeds``. Each configuration is ``config`` with the point's fields set (dotted
    keys as in ``Config.replace``) and ``threads`` (None keeps the configuration's), validated:
    a bad field or value raises ValueError/TypeError naming it before anything runs."""
    import itertools

    if not isinstance(config, Config):
        raise TypeError(f"config: expected a memrl.config.Config, got {type(config).__name__}")
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seeds: expected non-negative integers, got {seed!r}")
    grid = dict(grid or {})
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid: expected a non-empty list of values for {key!r}, got {values!r}")
    trials = []
    for combination in itertools.product(*grid.values()):
        point = dict(zip(grid, combination))
        changes = dict(point)
        if threads is not None:
            changes["threads"] = threads
        try:
            point_config = config.replace(**changes).validate()
        except (ValueError, TypeError) as error:
            where = f" (grid point {point_name(point)})" if point else ""
            raise type(error)(f"{error}{where}") from None
        prefix = point_name(point)
        for seed in seeds:
            name = f"{prefix}/seed-{seed}" if prefix else f"seed-{seed}"
            trials.append(Trial(name=name, seed=seed, point=point, config=point_config))
    return trials


# ---------------------------------------------------------------------------------------------
# A trial's run directory
# ---------------------------------------------------------------------------------------------

def run_state(run_dir: str, config: Config, seed: int) -> str:
    """What a trial has to do with its run directory: ``"new"`` (no run there), ``"resume"`` (an
    unfinished run with checkpoints), ``"restart"`` (an unfinished run without any checkpoint yet:
    it starts over), ``"finished"`` or ``"stopped"`` (stopped early by a scheduler). A run of
    another seed or configuration raises RunDirectoryError (a ValueError) naming the difference."""
    run = RunDirectory(run_dir)
    if not os.path.isdir(run.path) or not run.holds_run():
        return "new"
    try:
        with open(run.config_path) as f:
            saved = json.load(f)
        saved_config = Config.from_dict(saved["config"])
        saved_seed = int(saved["seed"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(f"{run.path!r} holds files of a run ({', '.join(run.artefacts())}) but no "
                                f"readable config.json ({error}); move it away or choose another --log-dir") from None
    if saved_seed != seed:
        raise RunDirectoryError(f"{run.path!r} holds a run with seed {saved_seed}, the sweep asks for seed {seed}")
    records = run.read_metrics()
    last_step = records[-1]["step"] if records else 0
    try:
        resume_config(saved_config, config, last_step)
    except RunDirectoryError as error:
        message = str(error).replace("--resume: ", "")
        raise RunDirectoryError(f"{run.path!r} holds a run of another configuration: {message}") from None
    if os.path.exists(os.path.join(run.path, STOPPED)):
        return "stopped"
    if os.path.exists(run.policy_path) and last_step == config.total_steps:
        return "finished"
    if os.path.isdir(run.checkpoints_path) and CheckpointManager(run.checkpoints_path).paths():
        return "resume"  # complete checkpoint files only (a killed write leaves a temporary file)
    return "restart"


def reported_metrics(record: dict, total_steps: int, replayed: bool) -> dict:
    """What a trial reports to Tune for one evaluation record: its numeric fields (None left out),
    ``probe_accuracy`` (memory task), ``total_steps`` and ``replayed``."""
    out = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if record.get("probe_total"):
        out["probe_accuracy"] = record["probe_correct"] / record["probe_total"]
    out["total_steps"] = total_steps
    out["replayed"] = replayed
    return out


class _Reporter:
    """The hook reporting each evaluation to Tune. Before the first one of a resumed run it replays
    the records the run kept from before its checkpoint (they are in metrics.jsonl by then). The
    last step's record is held back until ``finish()``, called once ``train`` has returned: a
    scheduler may stop the trial at any report (ASHA does at ``max_t``), and Tune then ends the
    trial's process, which must not happen before the run has written its policy."""

    def __init__(self, run_dir: str, total_steps: int, report: Callable[[dict], None], replay_first: bool):
        self.run = RunDirectory(run_dir)
        self.total_steps = total_steps
        self.report = report
        self.replay_first = replay_first
        self.held: dict | None = None

    def replay(self, below: float = float("inf")) -> None:
        for record in self.run.read_metrics():
            if record["step"] < below:
                self.report(reported_metrics(record, self.total_steps, replayed=True))

    def __call__(self, trainer, record: dict) -> None:
        if self.replay_first:
            self.replay_first = False
            self.replay(below=record["step"])
        metrics = reported_metrics(record, self.total_steps, replayed=False)
        if record["step"] >= self.total_steps:
            self.held = metrics
        else:
            self.report(metrics)

    def finish(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self.report(held)


def run_trial(params: dict) -> None:
    """The Tune trainable (a function of the trial's ``config``): runs one trial, see the module doc.
    ``params["trial"]`` holds ``seed``, ``config`` (a ``Config.to_dict()``), ``run_dir`` and
    ``tensorboard``."""
    from ray import tune

    from memrl.loop import train

    spec = params["trial"]
    config = Config.from_dict(spec["config"]).validate()
    seed, run_dir = int(spec["seed"]), spec["run_dir"]
    state = run_state(run_dir, config, seed)
    reporter = _Reporter(run_dir, config.total_steps, tune.report, replay_first=state == "resume")
    if state in ("finished", "stopped"):
        reporter.replay()
        return
    hooks: list = [reporter]
    board = None
    if spec.get("tensorboard"):
        from memrl.tensorboard import TensorBoardHook

        board = TensorBoardHook(run_dir)
        hooks.append(board)
    try:
        train(config, seed, log_dir=run_dir, resume=state == "resume", overwrite=state == "restart",
              print_fn=None, hooks=hooks)
    finally:
        if board is not None:
            board.close()
    reporter.finish()


def trial_resources(params: dict):
    """Ray resources of a trial: ``threads`` CPUs (Tune calls this with the trial's ``config``)."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([{"CPU": int(params["trial"]["config"]["threads"])}])


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the trials, their states when the sweep started (``"new"``,
    ``"resume"``, ``"restart"``, ``"finished"``, ``"stopped"``), Tune's ``ResultGrid`` (``results``;
    ``result.config["trial"]["name"]`` is the trial's name), the trials that failed (name ->
    message), the names of the trials whose run is neither finished nor stopped early at the end
    (failed, or the sweep was interrupted), the sweep directory and the wall time in seconds."""

    trials: list[Trial]
    states: dict[str, str]
    results: object
    failed: dict[str, str]
    unfinished: list[str]
    log_dir: str
    elapsed_s: float

    def run_dir(self, trial: Trial | str) -> str:
        name = trial.name if isinstance(trial, Trial) else trial
        return os.path.join(self.log_dir, name)


def _callback_class():
    from ray.tune import Callback

    class SweepCallback(Callback):
        """Prints one line per evaluation and marks trials the scheduler stopped early."""

        def __init__(self, run_dirs: dict[str, str], print_fn):
            self.run_dirs = run_dirs
            self.print_fn = print_fn
            self.failed: dict[str, str] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            name = trial.config["trial"]["name"]
            step, total = result.get("step"), result.get("total_steps")
            if result.get("done") and not result.get("replayed") and step is not None and total is not None \
                    and step < total:
                # A result marked done before the last step: the scheduler (or a stopper) stopped
                # the trial. Recorded so that a restarted sweep does not train it further.
                marker = os.path.join(self.run_dirs[name], STOPPED)
                tmp = marker + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"step": step, "total_steps": total, "metric_value": result.get("mean_return"),
                               "reason": "stopped by the sweep's scheduler"}, f)
                os.replace(tmp, marker)
                if self.print_fn is not None:
                    self.print_fn(f"{name}: stopped early by the scheduler at step {step}")
            if self.print_fn is None or result.get("replayed"):
                return
            line = f"{name}: step {step}/{total} mean return {result.get('mean_return', float('nan')):.6g}"
            if "probe_correct" in result:
                line += f", probe {result['probe_correct']}/{result['probe_total']}"
            self.print_fn(line)

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["trial"]["name"]
            error = trial.get_error() if hasattr(trial, "get_error") else None
            text = " ".join(str(error).split())[-300:] if error is not None else "see Tune's error file"
            self.failed[name] = text
            if self.print_fn is not None:
                self.print_fn(f"{name}: failed: {text}")

    return SweepCallback


def _asha_class():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class ReplayingASHAScheduler(ASHAScheduler):
        """Tune's ASHA, except that results replayed from disk (``replayed=True``) only fill its
        rungs: they never stop a trial. A trial's replayed records are ones it already went past
        without being stopped (or, for a trial stopped early, ones that led to its stop, which is
        already recorded), so the decisions made on them stand."""

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            return TrialScheduler.CONTINUE if result.get("replayed") else action

    return ReplayingASHAScheduler


def _experiment_name(folder: str) -> str:
    """A new folder name under ``folder`` for this invocation's Tune records: its start time."""
    base = time.strftime("%Y-%m-%d_%H-%M-%S")
    name, count = base, 1
    while os.path.exists(os.path.join(folder, name)):
        count += 1
        name = f"{base}-{count}"
    return name


def run_sweep(trials: list[Trial], log_dir: str | os.PathLike, *, address: str | None = None,
              num_cpus: int | None = None, scheduler: str | None = None, metric: str = "mean_return",
              mode: str = "max", grace_period: int | None = None, reduction_factor: float = 4,
              max_failures: int = 0, tensorboard: bool = False,
              print_fn: Callable[[str], None] | None = print) -> SweepResult:
    """Run ``trials`` (from :func:`plan_trials`) as a Ray Tune experiment; their run directories go
    under ``log_dir`` (see the module doc for the layout and for restarting).

    ``address``: a running Ray cluster (``ray.init(address=...)``, e.g. ``"auto"`` for the one
    ``ray start`` runs on this machine); None starts a new local Ray with ``num_cpus`` CPUs
    (default: all cores) for the sweep and stops it at the end (a Ray already initialised in
    this process is used as it is). ``scheduler="asha"`` stops trials early with Tune's
    ``ASHAScheduler`` on ``metric`` (``mode`` ``"max"`` or ``"min"``), with the environment step as
    its time (``max_t = total_steps``, ``grace_period`` steps, default the evaluation interval,
    and ``reduction_factor``). ``max_failures``: how often Tune retries a failed trial (each retry
    resumes from the trial's last checkpoint). ``tensorboard``: each trial also writes TensorBoard
    event files (:mod:`memrl.tensorboard`). ``print_fn`` gets a line per evaluation.

    Raises ImportError (Ray Tune missing), ValueError (bad arguments, a run directory holding
    another run) before anything starts. Failed trials do not raise: see ``SweepResult.failed``.
    """
    start = time.perf_counter()
    try:
        import ray
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    except ImportError as error:
        if getattr(error, "name", None) and error.name.split(".")[0] != "ray":
            raise  # Ray is there, but something it imports is not
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    if not trials:
        raise ValueError("trials: expected at least one trial, got none")
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ValueError("trials: two trials have the same name (and would share a run directory)")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"--scheduler: expected one of {list(SCHEDULERS)}, got {scheduler!r}")
    if mode not in MODES:
        raise ValueError(f"--mode: expected one of {list(MODES)}, got {mode!r}")
    reported = set(ALWAYS_REPORTED)
    if all(t.config.environment == "memory" and t.config.n_probes > 0 for t in trials):
        reported.add("probe_accuracy")
    if metric not in reported:
        raise ValueError(f"--metric: expected one of {sorted(reported)} (reported at every evaluation of every "
                         f"trial), got {metric!r}")
    if grace_period is not None and (isinstance(grace_period, bool) or not isinstance(grace_period, int)
                                     or grace_period < 1):
        raise ValueError(f"--grace-period: expected a positive number of steps, got {grace_period!r}")
    if not (isinstance(reduction_factor, (int, float)) and reduction_factor > 1):
        raise ValueError(f"--reduction-factor: expected a number > 1, got {reduction_factor!r}")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"--max-failures: expected a non-negative integer, got {max_failures!r}")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus: expected a positive integer, got {num_cpus!r}")
    if num_cpus is not None and address is not None:
        raise ValueError("--cpus: sets the local Ray's CPUs; a cluster (--address) has its own")
    if tensorboard:
        from memrl.tensorboard import TensorBoardHook

        TensorBoardHook(log_dir)  # raises the install hint now if tensorboardX is missing

    log_dir = os.path.abspath(os.fspath(log_dir))
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise ValueError(f"--log-dir: {log_dir!r} is a file, expected a directory")
    run_dirs = {t.name: os.path.join(log_dir, t.name) for t in trials}
    states = {t.name: run_state(run_dirs[t.name], t.config, t.seed) for t in trials}
    os.makedirs(log_dir, exist_ok=True)
    if print_fn is not None:
        counts = {s: list(states.values()).count(s) for s in ("new", "resume", "restart", "finished", "stopped")}
        done = counts["finished"] + counts["stopped"]
        print_fn(f"sweep: {len(trials)} trials in {log_dir}: {counts['new']} new, "
                 f"{counts['resume'] + counts['restart']} to continue, {done} already done")

    started_ray = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        else:
            # address="local": a new Ray for this sweep, even where `ray start` left a cluster that
            # ray.init() would otherwise join.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False, logging_level="WARNING")
        started_ray = True
    try:
        tune_scheduler = None
        if scheduler == "asha":
            total = max(t.config.total_steps for t in trials)
            grace = grace_period or min(t.config.evaluation_interval for t in trials)
            tune_scheduler = _asha_class()(time_attr="step", max_t=total, grace_period=min(grace, total),
                                           reduction_factor=reduction_factor)
        specs = [{"name": t.name, "seed": t.seed, "point": t.point, "config": t.config.to_dict(),
                  "run_dir": run_dirs[t.name], "tensorboard": bool(tensorboard)} for t in trials]
        callback = _callback_class()(run_dirs, print_fn)
        tune_config = tune.TuneConfig(
            scheduler=tune_scheduler, metric=metric if tune_scheduler is not None else None,
            mode=mode if tune_scheduler is not None else None,
            trial_name_creator=lambda trial: trial.config["trial"]["name"],
            trial_dirname_creator=lambda trial: trial.config["trial"]["name"].replace("/", "_"))
        run_config = tune.RunConfig(
            name=_experiment_name(os.path.join(log_dir, TUNE_FOLDER)), storage_path=os.path.join(log_dir, TUNE_FOLDER),
            callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=max_failures), verbose=0)
        tuner = tune.Tuner(tune.with_resources(run_trial, trial_resources),
                           param_space={"trial": tune.grid_search(specs)},
                           tune_config=tune_config, run_config=run_config)
        # Tune's own TensorBoard logger would write a second copy of every result under _tune/;
        # the run directories are where memrl's event files go (--tensorboard).
        previous = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        try:
            results = tuner.fit()
        finally:
            if previous is None:
                os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
            else:
                os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = previous
    finally:
        if started_ray:
            ray.shutdown()
    failed = dict(callback.failed)
    for result in results:
        if result.error is not None:
            name = result.config["trial"]["name"]
            failed.setdefault(name, " ".join(str(result.error).split())[-300:])
    # The run directories say what is done (an interrupted Tune run returns normally).
    unfinished = [t.name for t in trials
                  if run_state(run_dirs[t.name], t.config, t.seed) not in ("finished", "stopped")]
    return SweepResult(trials=trials, states=states, results=results, failed=failed, unfinished=unfinished,
                       log_dir=log_dir, elapsed_s=time.perf_counter() - start)
