"""Learning curves of training runs: return vs steps, return vs wall time, probe accuracy vs steps
(the last panel only when some run has count-probe results, as the memory task's runs do).

Reads ``<run-dir>/metrics.jsonl`` (one JSON object per evaluation, written by
``python -m memrl train ... --log-dir <run-dir>``) and draws one line per run, labelled with
the run directory's name. matplotlib is an optional extra: ``pip install 'memrl[plot]'``.

    python -m memrl.plot runs/chapter-seed1 runs/chapter-seed2 -o curve.png

With ``--aggregate`` (:func:`plot_settings`) the runs are grouped into settings as by ``memrl
report`` (same configuration apart from the seed; arguments may also be folders holding run
directories, such as a sweep's) and each setting is drawn as one line, the IQM (or mean) over its
runs at every evaluation step that all of them reached, with a shaded 95% stratified-bootstrap
confidence band (rliable; ``pip install 'memrl[report]'``).

    python -m memrl.plot --aggregate sweeps/gamma -o curve.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

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
    """Draw the panels for ``run_dirs`` and save them at ``output``, in the format its extension
    names (``.png``, ``.pdf``, ``.svg``, ``.jpg``); missing folders are created."""
    if not run_dirs:
        raise ValueError("run_dirs: expected at least one run directory, got none")
    extension = _check_output(output)
    runs = list(zip(run_labels(run_dirs), [read_metrics(d) for d in run_dirs]))  # fail on bad input first

    figure, (by_steps, by_time, probe) = _figure(any(r.get("probe_total") for _, rs in runs for r in rs))
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
            probe.plot([r["step"] for r in with_probe],
                       [r.get("probe_correct", math.nan) / r["probe_total"] for r in with_probe],
                       marker=".", color=line.get_color(), label=label)
    by_steps.set(xlabel="environment steps", ylabel="mean return (± std)", title="Return vs steps")
    by_time.set(xlabel="wall time (s)", ylabel="mean return", title="Return vs wall time")
    _finish(figure, (by_steps, by_time, probe), output, extension)


def _figure(with_probe: bool):
    """A Figure and its panels (by steps, by wall time, and the probe's or None), on the Agg canvas
    directly (not pyplot: no global backend switch, no GUI); ImportError with the install hint
    without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    figure = Figure(figsize=(15 if with_probe else 10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    panels = list(figure.subplots(1, 3 if with_probe else 2))
    return figure, tuple(panels) if with_probe else (*panels, None)


def _finish(figure, axes, output: str, extension: str) -> None:
    from matplotlib.ticker import FuncFormatter

    by_steps, by_time, probe = axes
    panels = [by_steps, by_time] if probe is None else [by_steps, by_time, probe]
    if probe is not None:
        probe.set(xlabel="environment steps", ylabel="probe accuracy", title="Count probe accuracy",
                  ylim=(-0.05, 1.05))
    for panel in panels:
        panel.grid(alpha=0.3)
        if panel is not by_time:  # 200000 -> "200k": long tick labels would overlap
            panel.xaxis.set_major_formatter(FuncFormatter(_thousands))
    by_steps.legend(fontsize="small")
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(output, format=FORMATS[extension], dpi=120)


def _check_output(output: str) -> str:
    extension = os.path.splitext(output)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"output: expected a file name ending in one of {sorted(FORMATS)}, got {output!r}")
    return extension


def setting_curves(paths: list[str], statistic: str = "iqm", reps: int = 2000) -> list[dict]:
    """The aggregated curves of :func:`plot_settings`, one dict per setting: ``label``, ``runs``,
    ``steps`` (the evaluation steps every run of the setting reached), ``elapsed`` (``statistic``
    of the runs' wall times at those steps), ``returns`` and ``probe`` (each ``(estimate, low,
    high)`` arrays over ``steps`` from :func:`memrl.report.interval_estimates`; ``probe`` None
    unless every record has a probe). Raises ReportError for no runs, ImportError without rliable."""
    from memrl.report import aggregate, find_runs, group_runs, interval_estimates

    curves = []
    for group in group_runs(find_runs(list(paths), warn=lambda line: print(line, file=sys.stderr))):
        by_step = [{r["step"]: r for r in run.records} for run in group.runs]
        steps = sorted(set.intersection(*(set(records) for records in by_step)))

        def matrix(value):
            return np.array([[value(records[s]) for s in steps] for records in by_step], np.float64)

        returns = interval_estimates(matrix(lambda r: r["mean_return"]), statistic, reps)
        elapsed = aggregate(matrix(lambda r: r.get("elapsed_s", math.nan)), statistic)
        probe = None
        if all(records[s].get("probe_total") for records in by_step for s in steps):
            probe = interval_estimates(matrix(lambda r: r["probe_correct"] / r["probe_total"]), statistic, reps)
        curves.append({"label": group.label, "runs": len(group.runs), "steps": steps, "elapsed": elapsed,
                       "returns": returns, "probe": probe})
    return curves


def plot_settings(paths: list[str], output: str, statistic: str = "iqm", reps: int = 2000) -> None:
    """Draw the panels with one line per setting (``statistic``, ``"iqm"`` or ``"mean"``,
    over its runs) and a shaded 95% bootstrap confidence band (see the module doc); ``paths`` are
    run directories or folders holding them. Raises ValueError (bad output name, bad statistic),
    ReportError (no runs), ImportError (matplotlib or rliable missing), OSError."""
    if not paths:
        raise ValueError("paths: expected at least one run directory or folder, got none")
    extension = _check_output(output)
    curves = setting_curves(paths, statistic, reps)  # fail on bad input first
    figure, (by_steps, by_time, probe) = _figure(any(curve["probe"] is not None for curve in curves))
    name = "IQM" if statistic == "iqm" else "mean"
    for curve in curves:
        steps, (estimate, low, high) = curve["steps"], curve["returns"]
        label = f"{curve['label']} ({curve['runs']} runs)"
        line, = by_steps.plot(steps, estimate, marker=".", label=label)
        by_steps.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        by_time.plot(curve["elapsed"], estimate, marker=".", color=line.get_color(), label=label)
        by_time.fill_between(curve["elapsed"], low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if curve["probe"] is not None:
            p_estimate, p_low, p_high = curve["probe"]
            probe.plot(steps, p_estimate, marker=".", color=line.get_color(), label=label)
            probe.fill_between(steps, p_low, p_high, color=line.get_color(), alpha=0.2, linewidth=0)
    by_steps.set(xlabel="environment steps", ylabel=f"mean return ({name} over runs, 95% CI)",
                 title="Return vs steps")
    by_time.set(xlabel=f"wall time (s, {name} over runs)", ylabel=f"mean return ({name}, 95% CI)",
                title="Return vs wall time")
    _finish(figure, (by_steps, by_time, probe), output, extension)


def _thousands(value, _position=None) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--aggregate`` options (shared with ``python -m memrl plot``)."""
    parser.add_argument("--aggregate", action="store_true",
                        help="one line per setting (runs with the same configuration apart from the seed; folders "
                             "holding run directories are searched) with a shaded 95%% bootstrap confidence band "
                             "(needs pip install 'memrl[report]')")
    parser.add_argument("--statistic", choices=STATISTIC_CHOICES, default="iqm",
                        help="with --aggregate: interquartile mean (default) or mean over runs")
    parser.add_argument("--reps", type=int, default=2000, help="with --aggregate: bootstrap resamples (default 2000)")


STATISTIC_CHOICES = ("iqm", "mean")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``<run-dir> [<run-dir> ...] -o curve.png``; errors are one line, exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m memrl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="run-dir", help="directory holding metrics.jsonl")
    parser.add_argument("-o", "--output", required=True, help="image to write (.png, .pdf, .svg or .jpg)")
    add_aggregate_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (already printed by argparse) and --help
        return int(exit_.code or 0)
    try:
        if args.aggregate:
            plot_settings(args.run_dirs, args.output, statistic=args.statistic, reps=args.reps)
        else:
            plot_runs(args.run_dirs, args.output)
    except (MetricsError, ValueError, ImportError, OSError) as error:
        print(f"memrl: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
