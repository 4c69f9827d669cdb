"""Several trainings at once: steps/s of one run alone and of two runs side by side.

    python bench/bench_concurrent.py [--preset pendulum-sac] [--steps 3000] [--repeats 3]
                                     [--threads default 1] [--set KEY=VALUE ...] [--smoke]

For each thread setting (``default``: the preset's ``threads``; a number: ``--set threads=N``)
runs ``python -m memrl train PRESET --steps N --log-dir DIR --quiet`` once alone and then twice at
once (two child processes started together), and prints each run's training speed: steps over
the training time the run itself records in its metrics.jsonl (``train_elapsed_s``: start-up and
evaluations excluded). With ``--repeats R`` every measurement is repeated R times and medians are
printed. Checkpoints are switched off (``--set checkpoint_interval=null``) so the disk does not
enter. On a 2-core machine, two runs at once should each keep about their one-thread speed: a run
whose threads wait for cores the other run holds falls far below it.
"""
import argparse
import os
import statistics
import sys
import tempfile

import _common


def steps_per_s(log_dir: str) -> float:
    last = _common.read_metrics(log_dir)[-1]
    return last["step"] / last["train_elapsed_s"]


def measure(args, extra, n_at_once: int, root: str, tag: str) -> list:
    """Steps/s of each of ``n_at_once`` runs started together."""
    dirs = [os.path.join(root, f"{tag}-{i}") for i in range(n_at_once)]
    cmds = [_common.train_command([args.preset, "--steps", str(args.steps), *extra], log_dir=d) for d in dirs]
    _common.run_children(cmds, cwd=root)
    return [steps_per_s(d) for d in dirs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pendulum-sac")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", nargs="+", default=["default", "1"],
                        help="thread settings to compare: 'default' or a number (default: default 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed on to every run")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, one repeat (CI)")
    args = parser.parse_args(argv)
    for t in args.threads:
        if t != "default" and not t.isdigit():
            parser.error(f"--threads: expected 'default' or a number, got {t!r}")
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats: expected positive integers")
    base = ["--set", "checkpoint_interval=null"]
    if args.smoke:
        args.steps, args.repeats = 300, 1
        base += ["--set", "n_warmup_steps=50", "--set", "n_warmup_steps_critic=50", "--set", "n_warmup_steps_actor=50",
                 "--set", "evaluation_interval=1000", "--set", "n_evaluation_episodes=1"]
    for item in args.overrides:
        base += ["--set", item]
    rows = []
    with tempfile.TemporaryDirectory(prefix="memrl-bench-") as root:
        print(f"# {_common.machine()}; load average {_common.load()} before; preset {args.preset}, {args.steps} "
              f"steps, median of {args.repeats}; memrl from {_common.child_memrl(root)}")
        # Repeats outermost, so that the settings are measured in turn and a change in the machine's
        # load over the benchmark falls on all of them alike.
        speeds = {setting: {"alone": [], "first": [], "second": []} for setting in args.threads}
        for r in range(args.repeats):
            for setting in args.threads:
                extra = base + ([] if setting == "default" else ["--set", f"threads={setting}"])
                speeds[setting]["alone"] += measure(args, extra, 1, root, f"{setting}-alone-{r}")
                a, b = measure(args, extra, 2, root, f"{setting}-pair-{r}")
                speeds[setting]["first"].append(a)
                speeds[setting]["second"].append(b)
        for setting in args.threads:
            m_alone, m_first, m_second = (statistics.median(speeds[setting][k]) for k in ("alone", "first", "second"))
            label = "default" if setting == "default" else f"threads={setting}"
            rows.append([label, f"{m_alone:.0f}", f"{m_first:.0f}", f"{m_second:.0f}",
                         f"{(m_first + m_second) / 2 / m_alone:.2f}"])
    print(_common.markdown_table(["threads", "alone (steps/s)", "two at once: run 1 (steps/s)",
                                  "two at once: run 2 (steps/s)", "two at once / alone"], rows))
    print(f"# load average {_common.load()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
