"""Learning curves of training runs: return vs steps, return vs wall time, probe accuracy vs steps.

Reads ``<run-dir>/metrics.jsonl`` (one JSON object per evaluation, written by
``python -m memrl train ... --log-dir <run-dir>``) and draws one line per run, labelled with
the run directory's name. matplotlib is an optional extra: ``pip install 'memrl[plot]'``.

    python -m memrl.plot runs/chapter-seed1 runs/chapter-seed2 -o curve.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

REQUIRED_KEYS = ("step", "elapsed_s", "mean_return", "std_return")
INSTALL_HINT = "plotting needs matplotlib: pip install 'memrl[plot]' (or pip install matplotlib)"


class MetricsError(ValueError):
    """A metrics.jsonl file is missing, empty or malformed."""


def read_metrics(run_dir: str) -> list[dict]:
    """The evaluation records of one run, in file order (blank lines skipped)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise MetricsError(f"{path}: no such file (is {run_dir!r} a run directory written with --log-dir?)")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MetricsError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise MetricsError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in REQUIRED_KEYS if k not in record]
            if missing:
                raise MetricsError(f"{path}:{number}: missing keys {missing}")
            records.append(record)
    if not records:
        raise MetricsError(f"{path}: empty (no evaluation recorded yet)")
    return records


def run_label(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))


def run_labels(run_dirs: list[str]) -> list[str]:
    """The shortest path suffixes that tell the runs apart: ``expA/seed-1`` and ``expB/seed-1``
    for those two directories, ``seed-1`` and ``seed-2`` for these."""
    parts = [os.path.normpath(os.path.abspath(d)).split(os.sep) for d in run_dirs]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or all(depth >= len(p) for p in parts):
            return labels
        depth += 1


FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpg", ".jpeg": "jpg"}


def plot_runs(run_dirs: list[str], output: str) -> None:
    """Draw the three panels for ``run_dirs`` and save them at ``output``, in the format its
    extension names (``.png``, ``.pdf``, ``.svg``, ``.jpg``); missing folders are created."""
    if not run_dirs:
        raise ValueError("run_dirs: expected at least one run directory, got none")
    extension = os.path.splitext(output)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"output: expected a file name ending in one of {sorted(FORMATS)}, got {output!r}")
    runs = list(zip(run_labels(run_dirs), [read_metrics(d) for d in run_dirs]))  # fail on bad input first
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error

    # A Figure on the Agg canvas directly, not pyplot: no global backend switch, no GUI.
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    by_steps, by_time, probe = figure.subplots(1, 3)
    any_probe = False
    for label, records in runs:
        steps = [r["step"] for r in records]
        mean = [r["mean_return"] for r in records]
        std = [r["std_return"] for r in records]
        line, = by_steps.plot(steps, mean, marker=".", label=label)
        by_steps.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              color=line.get_color(), alpha=0.15, linewidth=0)
        by_time.plot([r["elapsed_s"] for r in records], mean, marker=".", color=line.get_color(), label=label)
        with_probe = [r for r in records if r.get("probe_total")]
        if with_probe:
            any_probe = True
            probe.plot([r["step"] for r in with_probe],
                       [r.get("probe_correct", math.nan) / r["probe_total"] for r in with_probe],
                       marker=".", color=line.get_color(), label=label)
    by_steps.set(xlabel="environment steps", ylabel="mean return (± std)", title="Return vs steps")
    by_time.set(xlabel="wall time (s)", ylabel="mean return", title="Return vs wall time")
    probe.set(xlabel="environment steps", ylabel="probe accuracy", title="Count probe accuracy", ylim=(-0.05, 1.05))
    if not any_probe:
        probe.text(0.5, 0.5, "no probe data", ha="center", va="center", transform=probe.transAxes)
    for axes in (by_steps, by_time, probe):
        axes.grid(alpha=0.3)
    for axes in (by_steps, probe):  # 200000 -> "200k": long tick labels would overlap
        axes.xaxis.set_major_formatter(FuncFormatter(_thousands))
    by_steps.legend(fontsize="small")
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(output, format=FORMATS[extension], dpi=120)


def _thousands(value, _position=None) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``<run-dir> [<run-dir> ...] -o curve.png``; errors are one line, exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m memrl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="run-dir", help="directory holding metrics.jsonl")
    parser.add_argument("-o", "--output", required=True, help="image to write (.png, .pdf, .svg or .jpg)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (already printed by argparse) and --help
        return int(exit_.code or 0)
    try:
        plot_runs(args.run_dirs, args.output)
    except (MetricsError, ValueError, ImportError, OSError) as error:
        print(f"memrl: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
