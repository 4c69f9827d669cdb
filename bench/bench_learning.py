"""The README's results tables: whole training runs, one at a time, with their wall time and peak memory.

    python bench/bench_learning.py seeds [--preset memory-chapter] [--seeds 1 2 3] [--steps 200000]
                                         [--probe-from 100000] [--returns-at 180000 200000]
                                         [--env ENV] [--set KEY=VALUE ...] [--log-root DIR]
    python bench/bench_learning.py commands [--run "ARGS [# note]" ...] [--seeds 1 2 3] [--log-root DIR]
    python bench/bench_learning.py --smoke

Each run is ``python -m memrl train PRESET --seed S --log-dir DIR ... --quiet`` in a child
process, started only when the previous one has ended (so runs never share the cores); its wall
time is measured around the whole command (start-up included) and its peak resident memory is
the child's own maximum resident set size (``wait4``), as ``/usr/bin/time -v`` reports them. The
tables are built from the runs' ``metrics.jsonl``:

* ``seeds``: one row per seed: the count probe's score at every evaluation from ``--probe-from``
  on (memory task only), the mean evaluation return at each step of ``--returns-at``, wall time
  and peak memory (the README's chapter table);
* ``commands``: one row per ``--run`` (the arguments after ``train``; a note after ``#`` is shown
  in brackets), one column per seed with the last evaluation's mean return and the wall time (the
  README's table of other presets).

The run directories are kept (``--log-root``, default a new temporary directory, printed) so that
``python -m memrl plot`` can draw them.
"""
import argparse
import os
import shlex
import shutil
import sys
import tempfile

import _common

README_COMMANDS = [
    "pendulum-sac --env gymnasium:Pendulum-v1 --set evaluation_interval=20000",
    "pendulum-td3 --env gymnasium:Pendulum-v1 --set evaluation_interval=20000",
    "pendulum-sac --set evaluation_interval=20000 --set checkpoint_interval=null  # memrl's Pendulum",
]
SMOKE_SETTINGS = ["--set", "n_warmup_steps=50", "--set", "n_warmup_steps_critic=50", "--set", "n_warmup_steps_actor=50",
                  "--set", "evaluation_interval=100", "--set", "n_evaluation_episodes=1"]


def run_one(args, seed, log_dir):
    """One training run (alone); returns (wall s, peak MB, metrics records)."""
    result = _common.run_children([_common.train_command(args, seed=seed, log_dir=log_dir)],
                                  cwd=os.path.dirname(log_dir))[0]
    return result["wall_s"], result["peak_rss_mb"], _common.read_metrics(log_dir)


def record_at(records, step, option):
    for r in records:
        if r["step"] == step:
            return r
    raise ValueError(f"{option}: no evaluation at step {step} (evaluated at {[r['step'] for r in records]})")


def seeds_table(opts, log_root):
    args = [opts.preset, "--steps", str(opts.steps)]
    if opts.env is not None:
        args += ["--env", opts.env]
    for item in opts.overrides:
        args += ["--set", item]
    print(f"# python -m memrl train {' '.join(shlex.quote(a) for a in args)} --seed S --log-dir DIR --quiet")
    rows, with_probe = [], False
    for seed in opts.seeds:
        wall, peak, records = run_one(args, seed, os.path.join(log_root, f"{opts.preset}-seed{seed}"))
        probes = [r for r in records if r["step"] >= opts.probe_from and "probe_correct" in r]
        with_probe = with_probe or bool(probes)
        probe = (", ".join(str(r["probe_correct"]) for r in probes) + f" /{probes[0]['probe_total']}") if probes else "-"
        returns = [f"{record_at(records, s, '--returns-at')['mean_return']:.0f}" for s in opts.returns_at]
        rows.append([str(seed), probe, *returns, f"{wall:.1f} s", f"{peak:.1f} MB"])
    header = ["seed", f"probe from {opts.probe_from} on", *(f"return at {s}" for s in opts.returns_at),
              "wall time", "peak memory"]
    if not with_probe:
        header.pop(1)
        rows = [row[:1] + row[2:] for row in rows]
    print(_common.markdown_table(header, rows))


def commands_table(opts, log_root):
    rows = []
    for i, run in enumerate(opts.runs):
        text, _, note = run.partition("#")
        args = shlex.split(text)
        if not args:
            raise ValueError(f"--run: expected the arguments after 'train', got {run!r}")
        if opts.steps is not None:
            args += ["--steps", str(opts.steps)]
        cells = []
        for seed in opts.seeds:
            wall, _, records = run_one(args, seed, os.path.join(log_root, f"run{i + 1}-seed{seed}"))
            cells.append(f"{records[-1]['mean_return']:.1f}, {wall:.2f} s")
        label = f"`{' '.join(args)}`" + (f" ({note.strip()})" if note.strip() else "")
        rows.append([label, *cells])
    print(_common.markdown_table(["command", *(f"seed {s}" for s in opts.seeds)], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="both tables from tiny runs (CI)")
    sub = parser.add_subparsers(dest="command")
    for name in ("seeds", "commands"):
        p = sub.add_parser(name)
        p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
        p.add_argument("--log-root", default=None, help="where the run directories go (default: a new temporary one)")
        if name == "seeds":
            p.add_argument("--preset", default="memory-chapter")
            p.add_argument("--steps", type=int, default=200_000)
            p.add_argument("--probe-from", type=int, default=100_000)
            p.add_argument("--returns-at", type=int, nargs="+", default=[180_000, 200_000])
            p.add_argument("--env", default=None)
            p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        else:
            p.add_argument("--run", dest="runs", action="append", default=None, metavar="ARGS",
                           help="arguments after 'train', with an optional '# note' (repeatable; default: "
                                "the README's three)")
            p.add_argument("--steps", type=int, default=None, help="added to every run")
    opts = parser.parse_args(argv)
    keep = False
    if opts.smoke:
        # Tiny runs of both tables, or of the one named (`--smoke seeds --log-root DIR` keeps its
        # run directories in DIR, named as a full run names them: the README's test runs it so).
        keep = opts.command is not None and opts.log_root is not None
        root = os.path.abspath(opts.log_root) if keep else tempfile.mkdtemp(prefix="memrl-learning-smoke-")
        sets = [x for item in SMOKE_SETTINGS[1::2] + ["environment_kwargs.episode_step_limit=100"]
                for x in ("--set", item)]
        seeds = parser.parse_args(["seeds", "--seeds", "1", "2", "3", "--steps", "200", "--probe-from", "100",
                                   "--returns-at", "100", "200", *sets])
        commands = parser.parse_args(["commands", "--seeds", "1", "2", "--steps", "200",
                                      "--run", "pendulum-sac " + " ".join(SMOKE_SETTINGS) + " # memrl's Pendulum"])
        todo = [(seeds_table, seeds), (commands_table, commands)]
        if opts.command is not None:
            todo = [todo[0] if opts.command == "seeds" else todo[1]]
    elif opts.command is None:
        parser.error("expected 'seeds', 'commands' or --smoke")
    else:
        root = os.path.abspath(opts.log_root or tempfile.mkdtemp(prefix="memrl-learning-"))
        if opts.command == "commands" and opts.runs is None:
            opts.runs = README_COMMANDS
        todo = [(seeds_table if opts.command == "seeds" else commands_table, opts)]
    for _, o in todo:
        if any(s < 0 for s in o.seeds) or (o.steps is not None and o.steps < 1):
            parser.error("--seeds: expected non-negative integers; --steps: a positive integer")
    os.makedirs(root, exist_ok=True)
    print(f"# {_common.machine()}; load average {_common.load()} at start; runs one at a time in {root}; "
          f"memrl from {_common.child_memrl(root)}")
    try:
        for table, o in todo:
            table(o, root)
            print()
    except (ValueError, RuntimeError) as exc:
        print(f"bench_learning: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if opts.smoke and not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"# load average {_common.load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
