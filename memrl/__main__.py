"""Command line: ``python -m memrl train memory-chapter --seed 1 --steps 200000 --log-dir runs/s1``.

Mistakes (unknown preset, bad value, unwritable log directory) print one line and exit with
status 2; a run that diverges (non-finite loss) exits with status 3 after its metrics are saved.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from memrl.config import PRESETS, Config, preset
from memrl.sac import TrainingDiverged


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        low = raw.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return raw


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``key=value`` pairs (JSON values; ``a.b=v`` sets a nested field) applied to ``config``."""
    changes: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        parts = key.split(".")
        target = changes
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set: {key!r} sets a field inside a non-nested value")
        target[parts[-1]] = value
    return Config.from_dict(changes, base=config)


def _progress_printer(log_every: int, quiet: bool):
    """A live progress line on a terminal; plain periodic lines in logs."""
    if quiet:
        return None
    tty = sys.stdout.isatty()
    last = {"step": None, "time": None}

    def show(trainer, elapsed, record):
        step, total = trainer.step_count, trainer.config.total_steps
        rate = step / elapsed if elapsed > 0 else 0.0
        if last["step"] is not None and elapsed > last["time"]:
            rate = (step - last["step"]) / (elapsed - last["time"])
        last.update(step=step, time=elapsed)
        eta = (total - step) / rate if rate > 0 else float("inf")
        tail = ""
        if record is not None:
            tail = f" | last eval @{record['step']}: return {record['mean_return']:.1f}"
            if "probe_correct" in record:
                tail += f", probe {record['probe_correct']}/{record['probe_total']}"
        line = f"step {step}/{total} | {rate:.0f} steps/s | elapsed {elapsed:.0f} s | ETA {eta:.0f} s{tail}"
        if tty:
            end = "\n" if step >= total else ""
            print("\r" + line.ljust(110), end=end, flush=True)
        else:
            print(line, flush=True)

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memrl", description="Memory-based deep RL (recurrent SAC) on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a preset")
    train.add_argument("preset", nargs="?", default=None,
                       help=f"one of: {', '.join(sorted(PRESETS))} (optional with --resume)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="total steps (default: the preset's)")
    train.add_argument("--log-dir", default=None, help="write config.json and metrics.jsonl here")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set memory_reset_interval=50 (repeatable)")
    train.add_argument("--env", default=None, metavar="NAME",
                       help="train on another environment: 'memory', 'pendulum' or 'gymnasium:<id>' "
                            "(e.g. gymnasium:Pendulum-v1; needs pip install 'memrl[gym]')")
    train.add_argument("--algorithm", choices=("sac", "td3"), default=None, help="override the preset's algorithm")
    train.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR from its newest checkpoint (bit for bit)")
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.add_argument("--log-every", type=int, default=10_000, metavar="STEPS",
                       help="progress line interval when output is not a terminal (default 10000)")
    sub.add_parser("presets", help="list the presets and their settings")
    plot = sub.add_parser("plot", help="draw learning curves of run directories")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("-o", "--output", required=True, metavar="PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plot":
        from memrl.plot import main as plot_main

        return plot_main([*args.runs, "-o", args.output])
    if args.command == "presets":
        for name in sorted(PRESETS):
            print(name)
            print(json.dumps(PRESETS[name].to_dict(), indent=2))
        return 0
    try:
        if args.preset is None and args.resume is None:
            raise ValueError("preset: expected a preset name (or --resume DIR)")
        if args.resume is not None:
            if args.log_dir not in (None, args.resume):
                raise ValueError("--log-dir: must be omitted or equal to --resume DIR")
            args.log_dir = args.resume
            if not os.path.isdir(os.path.join(args.resume, "checkpoints")):
                raise ValueError(f"--resume: no checkpoints directory in {args.resume!r}")
        config = preset(args.preset or "memory-chapter")
        if args.steps is not None:
            config = config.replace(total_steps=args.steps)
        if args.env is not None:
            config = config.replace(environment=args.env, environment_kwargs={})
        if args.algorithm is not None:
            config = config.replace(algorithm=args.algorithm)
        config = apply_overrides(config, args.overrides).validate()
        if args.seed < 0:
            raise ValueError(f"--seed: expected a non-negative integer, got {args.seed}")
        if args.log_dir is not None:
            os.makedirs(args.log_dir, exist_ok=True)
            probe = os.path.join(args.log_dir, ".write-test")
            with open(probe, "w"):
                pass
            os.remove(probe)
    except (ValueError, TypeError, OSError) as exc:
        print(f"memrl: error: {exc}", file=sys.stderr)
        return 2
    from memrl.checkpoint import CheckpointError
    from memrl.loop import train

    try:
        quiet_print = lambda line: print(line) if line.startswith(("Total time", "memrl: warning")) else None  # noqa: E731
        train(config, seed=args.seed, log_dir=args.log_dir, print_fn=quiet_print if args.quiet else print,
              resume=args.resume is not None, progress=_progress_printer(args.log_every, args.quiet),
              progress_interval=200 if sys.stdout.isatty() else max(1, args.log_every))
    except TrainingDiverged as exc:
        print(f"memrl: training diverged: {exc} (checkpoints already written are intact)", file=sys.stderr)
        return 3
    except CheckpointError as exc:
        print(f"memrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memrl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
