"""Command line: ``python -m memrl train memory-chapter --seed 1 --steps 200000 --log-dir runs/s1``.

Subcommands: ``train`` (a preset, or ``--resume`` a run directory), ``presets`` (list them, or
show one), ``export`` (a policy file from a run's checkpoint), ``evaluate`` (a checkpoint's
deterministic policy on N seeded episodes), ``plot`` (learning curves),
``sweep`` (seeds x settings on Ray Tune) and ``report`` (IQM and confidence intervals per setting).
Mistakes (an unknown preset, a bad value, an environment that does not exist or cannot be used, a
run directory that already holds a run, a missing optional extra) print one ``memrl: error:``
line and exit with status 2, leaving no new run directory behind; a run that diverges (non-finite
loss) exits with status 3 after its metrics are saved; an interrupted run exits with 130.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from memrl import __version__
from memrl.config import PRESET_DOCS, PRESETS, Config, preset

BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
NONES = ("none", "null")
VALUE_HELP = ("values are JSON (numbers, strings, lists); booleans may be written true/false, yes/no or on/off "
              "in any case, and null/none means None")


def _parse_value(raw: str):
    low = raw.strip().lower()
    if low in BOOLEANS:
        return BOOLEANS[low]
    if low in NONES:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=true"]`` -> ``{"a.b": 1, "c": True}`` (see ``VALUE_HELP``)."""
    changes: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        changes[key.strip()] = _parse_value(raw)
    return changes


def requested_changes(args) -> dict:
    """The configuration changes a train or sweep command asks for: ``--set``, ``--env``,
    ``--algorithm`` and ``--steps``, as keyword arguments of ``Config.replace``."""
    changes = parse_overrides(args.overrides)
    if args.env is not None:
        changes.update(environment=args.env, environment_kwargs={})
    if args.algorithm is not None:
        changes["algorithm"] = args.algorithm
    if args.steps is not None:
        changes["total_steps"] = args.steps
    return changes


def new_run_config(args) -> Config:
    """The configuration a new ``train PRESET ...`` run trains: the preset with the command's
    changes (``requested_changes``), validated. Raises ValueError without a preset name."""
    if args.preset is None:
        raise ValueError("preset: expected a preset name (or --resume DIR); "
                         f"one of {', '.join(sorted(PRESETS))}")
    return preset(args.preset).replace(**requested_changes(args)).validate()


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``key=value`` pairs (``a.b=v`` sets a nested field) applied to ``config``, as ``Config.replace``."""
    return config.replace(**parse_overrides(overrides))


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------

class ProgressReport:
    """Progress of a training run: a live tqdm bar on a terminal (if tqdm is installed), else a
    plain line every ``log_every`` steps. Rates and ETAs count training time only (evaluations
    excluded) and only steps after the critics' warm-up, whose random steps are much faster."""

    def __init__(self, log_every: int, quiet: bool):
        self.quiet = quiet
        self.log_every = log_every
        self.bar = None
        self.interval = max(1, log_every)
        self._history: list[tuple[int, float]] = []
        if quiet or not sys.stdout.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:  # optional extra: pip install 'memrl[progress]'
            return
        self._tqdm = tqdm
        self.interval = 200

    def print(self, line: str) -> None:
        """Evaluation and probe lines: above the bar on a terminal."""
        if self.quiet:
            if line.startswith(("Total time", "memrl: warning")):
                print(line, flush=True)
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def _rate(self, step: int, seconds: float, warmup: int) -> float | None:
        """Steps per second over the last few reports, from the end of the warm-up on."""
        if step <= warmup:
            self._history.clear()
            return None
        self._history.append((step, seconds))
        del self._history[:-10]
        (s0, t0), (s1, t1) = self._history[0], self._history[-1]
        return (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else None

    def __call__(self, trainer, seconds: float, record: dict | None) -> None:
        if self.quiet:
            return
        step, total = trainer.step_count, trainer.config.total_steps
        rate = self._rate(step, seconds, trainer.config.n_warmup_steps_critic)
        speed = "warm-up" if step <= trainer.config.n_warmup_steps_critic else (
            f"{rate:.0f} steps/s" if rate else "measuring")
        eta = f"ETA {(total - step) / rate:.0f} s" if rate else "ETA -"
        last = ""
        if record is not None:
            last = f"eval @{record['step']}: {record['mean_return']:.1f}"
            if "probe_correct" in record:
                last += f", probe {record['probe_correct']}/{record['probe_total']}"
        if getattr(self, "_tqdm", None) is not None:
            if self.bar is None:
                self.bar = self._tqdm(total=total, unit="step", dynamic_ncols=True, leave=True,
                                      bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
            self.bar.set_postfix_str(", ".join(p for p in (speed, eta if rate else "", last) if p), refresh=False)
            self.bar.update(step - self.bar.n)
            if step >= total:
                self.bar.close()
                self.bar = None
            return
        parts = [f"step {step}/{total}", speed, f"{seconds:.0f} s training"]
        if rate:
            parts.append(eta)
        if last:
            parts.append("last " + last)
        print(" | ".join(parts), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------

LOG_DIR_HELP = ("make DIR a run directory: config.json (seed and configuration), metrics.jsonl (one JSON "
                "object per evaluation), checkpoints/ (the whole training state every checkpoint_interval "
                "steps and at the end) and, when the run finishes, policy.npz (the actor, runnable with NumPy "
                "alone). A directory that already holds a run is refused: --resume it or --overwrite it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m memrl",
        description="memrl: memory-based deep RL (recurrent SAC and TD3 on replayed sequences) on the CPU.",
        epilog="Start with: python -m memrl train memory-chapter --log-dir runs/s1 "
               "(python -m memrl COMMAND --help for each command).")
    parser.add_argument("--version", action="version", version=f"memrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train a preset (or continue a run with --resume)",
        description="Train a preset. " + VALUE_HELP + ".",
        epilog="Examples: python -m memrl train memory-chapter --seed 2 --log-dir runs/s2; "
               "python -m memrl train pendulum-sac --env gymnasium:Pendulum-v1 --set gamma=0.98; "
               "python -m memrl train --resume runs/s2 --steps 400000")
    train.add_argument("preset", nargs="?", default=None,
                       help=f"one of: {', '.join(sorted(PRESETS))} (optional with --resume; "
                            f"'python -m memrl presets NAME' shows one)")
    train.add_argument("--seed", type=int, default=None, help="the run's seed (default 0; with --resume: the run's)")
    train.add_argument("--steps", type=int, default=None,
                       help="total environment steps (default: the preset's; with --resume: the run's, or a new "
                            "total that extends a finished run)")
    train.add_argument("--log-dir", default=None, metavar="DIR", help=LOG_DIR_HELP)
    train.add_argument("--overwrite", action="store_true",
                       help="clear the run already in --log-dir (its config, metrics, checkpoints and policy) first")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="change a configuration field, e.g. --set gamma=0.9 --set sampling.random_seq_length=false "
                            "(repeatable; 'presets NAME' lists the fields)")
    train.add_argument("--env", default=None, metavar="NAME",
                       help="train on another environment: 'memory', 'pendulum' or 'gymnasium:<id>' "
                            "(e.g. gymnasium:Pendulum-v1; needs pip install 'memrl[gym]')")
    train.add_argument("--algorithm", choices=("sac", "td3"), default=None, help="override the preset's algorithm")
    train.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR from its newest checkpoint, bit for bit; only --steps and "
                            "--set of threads, evaluation and checkpoint settings may change")
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.add_argument("--log-every", type=int, default=10_000, metavar="STEPS",
                       help="progress line interval when output is not a terminal (default 10000)")
    add_tensorboard_argument(train)

    presets = sub.add_parser("presets", help="list the presets, or show one's source and settings")
    presets.add_argument("name", nargs="?", default=None, help="show this preset's summary, source and settings")
    presets.add_argument("--json", action="store_true", help="with NAME: print the settings only, as JSON")

    export = sub.add_parser("export", help="write a policy file from a run directory or a training checkpoint")
    export.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run directory (its newest loadable checkpoint is used) or a checkpoint file")
    export.add_argument("-o", "--output", required=True, metavar="POLICY", help="file to write (e.g. policy.npz)")

    evaluate = sub.add_parser(
        "evaluate", help="run a checkpoint's deterministic policy on seeded episodes",
        description="Evaluate the actor of a run directory's newest checkpoint (or of a checkpoint file) as the "
                    "training loop does: deterministic actions, the run's own environment and settings, episodes "
                    "seeded from --seed (not from the run's evaluation stream, which stays as it was).",
        epilog="Example: python -m memrl evaluate runs/pendulum-v --episodes 100")
    evaluate.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                          help="a run directory (its newest loadable checkpoint is used) or a checkpoint file")
    evaluate.add_argument("--episodes", type=int, default=100, help="number of episodes (default 100)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the episodes' environment seeds (default 0); the same seed gives the same "
                               "episodes and, for the same checkpoint, the same returns")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object (step, seed, episodes, mean/std/standard error of the "
                               "return, the returns) instead of the summary line")

    plot = sub.add_parser("plot", help="draw learning curves of run directories (pip install 'memrl[plot]')")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="image to write; the format follows the extension (.png, .pdf, .svg)")
    from memrl.plot import add_aggregate_arguments

    add_aggregate_arguments(plot)
    add_sweep_parser(sub)
    add_report_parser(sub)
    return parser


def _error(message) -> int:
    """Print ``message`` as one line, ``memrl: error: ...``; returns the exit status 2. A closed
    output pipe (an ``OSError`` the commands catch) is no mistake to report: it is raised again for
    ``console_main``."""
    if isinstance(message, BrokenPipeError):
        raise message
    text = " ".join(str(message).split())  # one line, whatever the exception held
    print(f"memrl: error: {text}", file=sys.stderr)
    return 2


def _train(args) -> int:
    from memrl.checkpoint import CheckpointError
    from memrl.loop import train
    from memrl.run import RESUME_CHANGEABLE, RunDirectory, RunDirectoryError
    from memrl.sac import TrainingDiverged

    if args.steps is not None and args.steps < 1:
        return _error(f"--steps: expected a positive integer, got {args.steps}")
    if args.seed is not None and args.seed < 0:
        return _error(f"--seed: expected a non-negative integer, got {args.seed}")
    if args.log_every < 1:
        return _error(f"--log-every: expected a positive integer, got {args.log_every}")
    report = ProgressReport(args.log_every, args.quiet)
    try:
        changes = requested_changes(args)
        if args.resume is not None:
            if args.log_dir not in (None, args.resume):
                raise ValueError("--log-dir: must be omitted or equal to --resume DIR")
            if args.overwrite:
                raise ValueError("--overwrite: cannot be combined with --resume")
            _, _, meta = RunDirectory(args.resume).latest_checkpoint()
            saved = Config.from_dict(meta["config"])
            base = preset(args.preset) if args.preset is not None else saved
            # A preset name only asserts what the run is: its own length, evaluation and checkpoint
            # settings change the run only when given explicitly (--steps, --set).
            keep = {k: getattr(saved, k) for k in RESUME_CHANGEABLE if k not in changes}
            config = base.replace(**changes).replace(**keep)
            log_dir, resume = args.resume, True
        else:
            config = new_run_config(args)
            log_dir, resume = args.log_dir, False
        hooks = tensorboard_hooks(args, log_dir)
        train(config, seed=args.seed, log_dir=log_dir, resume=resume, overwrite=args.overwrite,
              print_fn=report.print, progress=report, progress_interval=report.interval, hooks=hooks)
        close_hooks(hooks)
    except TrainingDiverged as exc:
        report.close()
        print(f"memrl: training diverged: {exc} (checkpoints already written are intact)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        report.close()
        print("memrl: interrupted (continue with --resume DIR from the last checkpoint)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, CheckpointError, RunDirectoryError) as exc:
        report.close()
        return _error(exc)
    report.close()
    return 0


def _presets(args) -> int:
    if args.name is None and args.json:
        return _error("--json: needs a preset NAME")
    if args.name is None:
        width = max(map(len, PRESETS))
        for name in sorted(PRESETS):
            summary = PRESET_DOCS[name].split("\n")[0]
            print(f"{name:<{width}}  {summary}")
        print("\n'python -m memrl presets NAME' shows a preset's source and settings.")
        return 0
    try:
        config = preset(args.name)
    except ValueError as exc:
        return _error(exc)
    if not args.json:
        for paragraph in PRESET_DOCS[args.name].split("\n"):
            print(textwrap.fill(paragraph, 100, break_on_hyphens=False))
        print()
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def _export(args) -> int:
    from memrl.checkpoint import CheckpointError
    from memrl.policy import export_from_checkpoint
    from memrl.run import RunDirectoryError

    try:
        meta = export_from_checkpoint(args.source, args.output)
    except (ValueError, OSError, CheckpointError, RunDirectoryError) as exc:
        return _error(exc)
    print(f"wrote {args.output} (actor at step {meta['step_count']}, seed {meta['seed']})")
    return 0


def _evaluate(args) -> int:
    import math

    import numpy as np

    from memrl.checkpoint import CheckpointError
    from memrl.loop import Trainer
    from memrl.run import RunDirectoryError

    if args.episodes < 1:
        return _error(f"--episodes: expected a positive integer, got {args.episodes}")
    if args.seed < 0:
        return _error(f"--seed: expected a non-negative integer, got {args.seed}")
    try:
        trainer = Trainer.load(args.source)
        result = trainer.evaluate(args.episodes, np.random.default_rng(args.seed))
    except (ValueError, OSError, CheckpointError, RunDirectoryError) as exc:
        return _error(exc)
    returns = np.asarray(result["returns"])
    summary = {"source": args.source, "step": trainer.step_count, "run_seed": trainer.seed, "seed": args.seed,
               "episodes": args.episodes, "mean_return": result["mean_return"], "std_return": result["std_return"],
               "standard_error": float(returns.std(ddof=1) / math.sqrt(returns.size)) if returns.size > 1 else None,
               "median_return": float(np.median(returns)), "mean_length": result["mean_length"],
               **{k: result[k] for k in ("probe_correct", "probe_total") if k in result},
               "returns": result["returns"]}
    if args.json:
        print(json.dumps(summary))
        return 0
    se = "" if summary["standard_error"] is None else f" +- {summary['standard_error']:.1f} (standard error)"
    probe = f", probe {result['probe_correct']}/{result['probe_total']}" if "probe_total" in result else ""
    print(f"{args.source}: step {trainer.step_count} (run seed {trainer.seed}): mean return "
          f"{summary['mean_return']:.1f}{se}, median {summary['median_return']:.1f}, std {summary['std_return']:.1f}, "
          f"mean length {summary['mean_length']:.1f} over {args.episodes} episodes (seed {args.seed}){probe}")
    return 0


# ---------------------------------------------------------------------------------------------
# TensorBoard, sweeps and reports (memrl.tensorboard, memrl.sweep, memrl.report)
# ---------------------------------------------------------------------------------------------

def add_tensorboard_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write every evaluation (and the configuration as hyperparameters) as TensorBoard "
                             "event files in the run directory: tensorboard --logdir DIR (pip install "
                             "'memrl[tensorboard]')")


def tensorboard_hooks(args, log_dir: str | None) -> list:
    """``[TensorBoardHook(log_dir)]`` with ``--tensorboard``, else []; ValueError without a run directory."""
    if not getattr(args, "tensorboard", False):
        return []
    if log_dir is None:
        raise ValueError("--tensorboard: needs --log-dir DIR (the event files go into the run directory)")
    from memrl.tensorboard import TensorBoardHook

    return [TensorBoardHook(log_dir)]


def close_hooks(hooks: list) -> None:
    for hook in hooks:
        close = getattr(hook, "close", None)
        if close is not None:
            close()


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="run seeds x settings as trials on Ray Tune, each a run directory (pip install 'memrl[sweep]')",
        description="Run a preset for every seed and grid point as trials on Ray Tune (an embedded local Ray with "
                    "one trial per core, each on one thread, or a running cluster with --address). Each trial is "
                    "an ordinary run directory DIR/<key=value,...>/seed-<seed> trained as 'memrl train' trains it. "
                    "Run the same command again to continue a killed or interrupted sweep: unfinished trials "
                    "resume from their last checkpoints bit for bit, finished ones are not rerun. " + VALUE_HELP + ".",
        epilog="Example: python -m memrl sweep memory-chapter --seeds 1-5 --grid gamma=0.9,0.99 --log-dir "
               "sweeps/gamma, then python -m memrl report sweeps/gamma. Exit status 1 if a trial failed, 130 if "
               "the sweep was interrupted before every trial finished.")
    sweep.add_argument("preset", help=f"one of: {', '.join(sorted(PRESETS))}")
    sweep.add_argument("--seeds", required=True, metavar="SEEDS", help="seeds, e.g. 1-5, 1,3,7 or 0-2,9")
    sweep.add_argument("--log-dir", required=True, metavar="DIR",
                       help="the sweep's directory: one run directory per trial, and Tune's records in DIR/_tune")
    sweep.add_argument("--steps", type=int, default=None, help="total environment steps of every trial")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="values to sweep over, e.g. --grid gamma=0.9,0.99 (repeatable: the trials are the "
                            "cartesian product, times the seeds)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="change a configuration field of every trial (repeatable), as for train")
    sweep.add_argument("--env", default=None, metavar="NAME", help="train on another environment, as for train")
    sweep.add_argument("--algorithm", choices=("sac", "td3"), default=None, help="override the preset's algorithm")
    sweep.add_argument("--address", default=None, metavar="ADDR",
                       help="a running Ray cluster (as for ray.init(address=...), e.g. auto or 10.0.0.1:6379); DIR "
                            "must then be on a file system every node sees at the same path. Default: a local Ray")
    sweep.add_argument("--cpus", type=int, default=None, metavar="N",
                       help="CPUs of the local Ray (default: all cores); each trial takes 'threads' of them (1)")
    sweep.add_argument("--scheduler", choices=("asha",), default=None,
                       help="stop unpromising trials early with Tune's ASHA scheduler on --metric")
    sweep.add_argument("--metric", default="mean_return",
                       help="the scheduler's metric: a field of every evaluation record, e.g. mean_return (default) "
                            "or probe_accuracy (memory task)")
    sweep.add_argument("--mode", choices=("max", "min"), default="max", help="maximise (default) or minimise --metric")
    sweep.add_argument("--grace-period", type=int, default=None, metavar="STEPS",
                       help="ASHA: steps before a trial can be stopped (default: the evaluation interval)")
    sweep.add_argument("--reduction-factor", type=float, default=4, metavar="RF", help="ASHA: reduction factor (default 4)")
    sweep.add_argument("--max-failures", type=int, default=0, metavar="N",
                       help="retry a failed trial up to N times, resuming from its last checkpoint (default 0)")
    add_tensorboard_argument(sweep)
    sweep.add_argument("--quiet", action="store_true", help="print only the summary")


def _sweep(args) -> int:
    from memrl.run import RunDirectoryError
    from memrl.sweep import parse_grid, parse_seeds, plan_trials, run_sweep

    if args.steps is not None and args.steps < 1:
        return _error(f"--steps: expected a positive integer, got {args.steps}")
    if args.cpus is not None and args.cpus < 1:
        return _error(f"--cpus: expected a positive integer, got {args.cpus}")
    try:
        seeds = parse_seeds(args.seeds)
        changes = requested_changes(args)
        grid = parse_grid(args.grid, _parse_value)
        threads = None if "threads" in changes or "threads" in grid else 1
        trials = plan_trials(preset(args.preset).replace(**changes), seeds, grid, threads=threads)
        print_fn = None if args.quiet else (lambda line: print(line, flush=True))
        result = run_sweep(trials, args.log_dir, address=args.address, num_cpus=args.cpus, scheduler=args.scheduler,
                           metric=args.metric, mode=args.mode, grace_period=args.grace_period,
                           reduction_factor=args.reduction_factor, max_failures=args.max_failures,
                           tensorboard=args.tensorboard, print_fn=print_fn)
    except KeyboardInterrupt:
        print("memrl: sweep interrupted (run the same command again to continue it)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RunDirectoryError) as exc:
        return _error(exc)
    states = list(result.states.values())
    started = {"new": states.count("new"), "continued": states.count("resume") + states.count("restart"),
               "already done": states.count("finished") + states.count("stopped")}
    print(f"sweep: {len(result.trials)} trials in {result.elapsed_s:.1f} s "
          f"({', '.join(f'{n} {what}' for what, n in started.items())}); run directories in {result.log_dir}")
    for name, message in sorted(result.failed.items()):
        print(f"memrl: trial {name} failed: {message}", file=sys.stderr)
    if result.failed:
        print(f"memrl: {len(result.failed)} trial(s) failed; run the same command again to retry them "
              f"(from their last checkpoints)", file=sys.stderr)
        return 1
    if result.unfinished:
        print(f"memrl: sweep interrupted with {len(result.unfinished)} trial(s) unfinished; run the same command "
              f"again to continue them from their last checkpoints", file=sys.stderr)
        return 130
    print(f"summary: python -m memrl report {args.log_dir}")
    return 0


def add_report_parser(sub) -> None:
    report = sub.add_parser(
        "report", help="a table per setting over seeds: IQM and 95%% bootstrap CIs (pip install 'memrl[report]')",
        description="Group the run directories found in the given folders by configuration apart from the seed and "
                    "print, per setting, the final and best evaluation return (and the count-probe accuracy on the "
                    "memory task) as interquartile means with 95% stratified-bootstrap confidence intervals "
                    "(rliable, fixed seed), and the wall time per run.")
    report.add_argument("runs", nargs="+", metavar="DIR", help="run directories, or folders holding them (a sweep's)")
    report.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="also write the table: .md (Markdown) or .csv (every number at full precision)")
    report.add_argument("--statistic", choices=("iqm", "mean"), default="iqm",
                        help="interquartile mean (default) or mean over runs")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")


def _report(args) -> int:
    from memrl.report import report, warn_stderr

    try:
        table = report(args.runs, args.output, reps=args.reps, statistic=args.statistic, warn=warn_stderr)
    except (ValueError, OSError, ImportError) as exc:
        return _error(exc)
    print(table, end="")
    if args.output is not None:
        print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plot":
        from memrl.plot import main as plot_main

        return plot_main([*args.runs, "-o", args.output, *(["--aggregate"] if args.aggregate else []),
                          "--statistic", args.statistic, "--reps", str(args.reps)])
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(args)
    if args.command == "presets":
        return _presets(args)
    if args.command == "export":
        return _export(args)
    if args.command == "evaluate":
        return _evaluate(args)
    return _train(args)


def console_main() -> int:
    """``main()`` as the entry point of ``python -m memrl`` and the ``memrl`` script: a reader that
    closes the pipe early (``presets | head``) ends the command quietly with status 141, as for a
    POSIX tool stopped by SIGPIPE, instead of a traceback."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141


if __name__ == "__main__":
    sys.exit(console_main())
