"""Aggregate results over seeds: interquartile means with stratified-bootstrap confidence intervals.

``python -m memrl report DIR [DIR ...] [-o table.md|table.csv]`` finds the run directories in the
given folders (a run directory holds ``config.json`` and ``metrics.jsonl``; folders are searched
recursively, Tune's ``_tune`` records and hidden folders skipped), groups them by their
configuration apart from the seed (and from ``IGNORED_FIELDS``, which do not change what a run
computes), and prints one row per setting:

* ``final return``: the last evaluation's mean return of each run;
* ``best return``: each run's best evaluation;
* ``probe accuracy``: the last evaluation's count-probe accuracy (memory task);
* each as the interquartile mean (IQM: the mean of the middle 50% of runs, SciPy's
  ``trim_mean(x, 0.25)``, which is the plain mean below 4 runs) with a 95% percentile confidence
  interval from the stratified bootstrap over runs of ``rliable`` (Agarwal et al., "Deep
  Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021), ``reps``
  resamples (default 2000) drawn from a fixed seed, so the same runs give the same table;
* the wall time per run (``elapsed_s`` of its last evaluation, evaluations included): mean, min, max.

Settings are labelled by the folder their runs share (``gamma=0.9`` for a sweep's
``DIR/gamma=0.9/seed-*``) when that tells the settings apart, else by the configuration fields in
which they differ. ``rliable`` is the optional extra ``pip install 'memrl[report]'``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

INSTALL_HINT = ("reports need rliable: pip install 'memrl[report]' (or pip install rliable 'pandas<3'; "
                "rliable 1.2 imports arch, which fails under pandas 3)")
IGNORED_FIELDS = ("threads", "checkpoint_interval", "keep_checkpoints")
"""Configuration fields that do not change a run's numbers (thread count, checkpoint schedule)."""
STATISTICS = ("iqm", "mean")
BOOTSTRAP_SEED = 0
SKIPPED_FOLDERS = ("_tune",)


class ReportError(ValueError):
    """No run directories found, or a run directory that cannot be read."""


@dataclass
class Run:
    """One run directory: its path, seed, configuration (a dict) and evaluation records."""

    path: str
    seed: int
    config: dict
    records: list


@dataclass
class Setting:
    """Runs sharing a configuration apart from the seed; ``label`` names the setting in tables."""

    config: dict
    runs: list = field(default_factory=list)
    label: str = ""


# ---------------------------------------------------------------------------------------------
# Finding and grouping runs
# ---------------------------------------------------------------------------------------------

def read_run(path: str) -> Run:
    """The run directory ``path``; ReportError if its config.json or metrics.jsonl is unreadable."""
    from memrl.run import RunDirectory

    run = RunDirectory(path)
    try:
        with open(run.config_path) as f:
            saved = json.load(f)
        seed, config = int(saved["seed"]), dict(saved["config"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReportError(f"{run.config_path}: not a run's config.json ({error})") from None
    return Run(path=run.path, seed=seed, config=config, records=run.read_metrics())


def find_runs(paths: list[str], warn=None) -> list[Run]:
    """The run directories among ``paths`` and below them (sorted by path within each argument).
    Runs without any evaluation yet are left out (``warn`` gets a line for each). Raises
    ReportError for a path that does not exist or holds no run with evaluations."""
    if not paths:
        raise ReportError("runs: expected at least one run directory or folder, got none")
    runs: list[Run] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.isdir(path):
            raise ReportError(f"{path}: no such directory")
        found = []
        for folder, subfolders, files in os.walk(path):
            if "config.json" in files and "metrics.jsonl" in files:
                found.append(folder)
                subfolders[:] = []  # a run directory holds no further runs
                continue
            subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS and not d.startswith("."))
        if not found:
            raise ReportError(f"{path}: no run directory (config.json and metrics.jsonl) in it or below it")
        for folder in sorted(found):
            key = os.path.realpath(folder)
            if key in seen:
                continue
            seen.add(key)
            run = read_run(folder)
            if not run.records:
                if warn is not None:
                    warn(f"memrl: warning: {folder}: no evaluation recorded yet, left out")
                continue
            runs.append(run)
    if not runs:
        raise ReportError(f"{', '.join(paths)}: no run with an evaluation recorded yet")
    return runs


def _setting_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in IGNORED_FIELDS}, sort_keys=True)


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def group_runs(runs: list[Run]) -> list[Setting]:
    """Runs grouped by configuration apart from the seed and ``IGNORED_FIELDS``, in order of first
    appearance, each group labelled (see the module doc)."""
    settings: dict[str, Setting] = {}
    for run in runs:
        key = _setting_key(run.config)
        if key not in settings:
            settings[key] = Setting(config={k: v for k, v in run.config.items() if k not in IGNORED_FIELDS})
        settings[key].runs.append(run)
    groups = list(settings.values())
    _label(groups)
    return groups


def _label(groups: list[Setting]) -> None:
    parents = [os.path.commonpath([os.path.dirname(os.path.abspath(r.path)) for r in g.runs]) for g in groups]
    if len(groups) == 1:
        groups[0].label = os.path.basename(parents[0]) or parents[0]
        return
    root = os.path.commonpath(parents)
    relative = [os.path.relpath(p, root) for p in parents]
    if len(set(relative)) == len(groups) and "." not in relative:
        for group, label in zip(groups, relative):
            group.label = label
        return
    flats = [_flatten(g.config) for g in groups]
    keys = sorted(set().union(*flats))
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    for group, flat in zip(groups, flats):
        parts = [f"{k}={_value_text(flat.get(k))}" for k in differing]
        group.label = ",".join(parts[:4]) + (f",... ({len(parts) - 4} more)" if len(parts) > 4 else "")


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def _rliable():
    try:
        from rliable import library
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    except Exception as error:  # rliable 1.2 under pandas 3: a TypeError from arch's import
        raise ImportError(f"rliable is installed but fails to import ({type(error).__name__}: {error}); "
                          f"{INSTALL_HINT}") from error
    return library


def aggregate(values: np.ndarray, statistic: str = "iqm") -> np.ndarray:
    """``statistic`` over runs (axis 0) of ``values`` (runs, columns): the IQM (SciPy's
    ``trim_mean(values, 0.25, axis=0)``, rliable's ``aggregate_iqm`` per column) or the mean."""
    import scipy.stats

    if statistic == "iqm":
        return np.asarray(scipy.stats.trim_mean(values, 0.25, axis=0), np.float64)
    if statistic == "mean":
        return np.mean(values, axis=0)
    raise ValueError(f"statistic: expected one of {list(STATISTICS)}, got {statistic!r}")


def interval_estimates(values, statistic: str = "iqm", reps: int = 2000, confidence: float = 0.95,
                       seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimates and percentile confidence intervals of ``statistic`` for each column of
    ``values`` (runs, columns), float64: ``(estimate, low, high)``, each (columns,).

    Uses rliable's ``get_interval_estimates`` (a stratified bootstrap: runs resampled with
    replacement within each column, ``reps`` times). rliable 1.2 draws its resamples from NumPy's
    global random state; it is seeded with ``seed`` for the call and restored afterwards, so the
    result depends only on the arguments. Raises ValueError for an empty or non-finite ``values``,
    ImportError (install hint) without rliable."""
    library = _rliable()
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"values: expected a (runs, columns) array with at least one of each, got shape "
                         f"{values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values: expected finite numbers, got NaN or infinity")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps: expected a positive integer, got {reps!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number between 0 and 1, got {confidence!r}")
    aggregate(values[:1], statistic)  # checks the statistic's name
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = library.get_interval_estimates(
            {"x": values}, lambda x: aggregate(x, statistic), reps=reps, confidence_interval_size=confidence)
    finally:
        np.random.set_state(saved)
    low, high = np.asarray(intervals["x"], np.float64)
    return np.asarray(points["x"], np.float64), low, high


COLUMNS = (("final_return", "final return"), ("best_return", "best return"), ("probe_accuracy", "probe accuracy"))


def summarize(groups: list[Setting], reps: int = 2000, statistic: str = "iqm") -> list[dict]:
    """One row per setting: ``setting``, ``runs``, ``seeds``, ``steps_min``/``steps_max`` (the last
    evaluated step), for each of ``final_return``, ``best_return`` and ``probe_accuracy`` (None
    when a run has no probe) ``<name>``, ``<name>_ci_low``, ``<name>_ci_high``, and
    ``wall_time_s_mean``/``_min``/``_max``."""
    rows = []
    for group in groups:
        finals = [r.records[-1] for r in group.runs]
        columns = {"final_return": [f["mean_return"] for f in finals],
                   "best_return": [max(rec["mean_return"] for rec in r.records) for r in group.runs]}
        if all(f.get("probe_total") for f in finals):
            columns["probe_accuracy"] = [f["probe_correct"] / f["probe_total"] for f in finals]
        names = list(columns)
        estimate, low, high = interval_estimates(np.array([columns[n] for n in names]).T, statistic, reps)
        steps = [f["step"] for f in finals]
        walls = [f["elapsed_s"] for f in finals if "elapsed_s" in f]
        row = {"setting": group.label, "runs": len(group.runs),
               "seeds": " ".join(str(s) for s in sorted(r.seed for r in group.runs)),
               "steps_min": min(steps), "steps_max": max(steps)}
        for name, _ in COLUMNS:
            i = names.index(name) if name in names else None
            row[name] = None if i is None else float(estimate[i])
            row[f"{name}_ci_low"] = None if i is None else float(low[i])
            row[f"{name}_ci_high"] = None if i is None else float(high[i])
        row["wall_time_s_mean"] = float(np.mean(walls)) if walls else None
        row["wall_time_s_min"] = float(min(walls)) if walls else None
        row["wall_time_s_max"] = float(max(walls)) if walls else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def markdown(rows: list[dict], statistic: str = "iqm") -> str:
    """The rows as a Markdown table (numbers to 4 significant digits)."""
    name = "IQM" if statistic == "iqm" else "mean"
    show_probe = any(r["probe_accuracy"] is not None for r in rows)
    header = ["setting", "runs", "seeds", "steps"]
    header += [f"{label} {name} [95% CI]" for key, label in COLUMNS if key != "probe_accuracy" or show_probe]
    header.append("wall time per run (s): mean [min, max]")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        steps = str(r["steps_max"]) if r["steps_min"] == r["steps_max"] else f"{r['steps_min']}-{r['steps_max']}"
        cells = [r["setting"], str(r["runs"]), r["seeds"], steps]
        for key, _ in COLUMNS:
            if key == "probe_accuracy" and not show_probe:
                continue
            if r[key] is None:
                cells.append("-")
            else:
                cells.append(f"{_number(r[key])} [{_number(r[key + '_ci_low'])}, {_number(r[key + '_ci_high'])}]")
        if r["wall_time_s_mean"] is None:
            cells.append("-")
        else:
            cells.append(f"{r['wall_time_s_mean']:.1f} [{r['wall_time_s_min']:.1f}, {r['wall_time_s_max']:.1f}]")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV, one column per field of :func:`summarize` at full precision."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def report(paths: list[str], output: str | None = None, reps: int = 2000, statistic: str = "iqm",
           warn=None) -> str:
    """The Markdown table of the runs under ``paths``; with ``output`` also written there as CSV
    (``.csv``) or Markdown (``.md``). Raises ReportError, ValueError (bad ``output`` extension),
    ImportError (rliable missing)."""
    extension = None
    if output is not None:
        extension = os.path.splitext(output)[1].lower()
        if extension not in (".md", ".csv"):
            raise ValueError(f"-o: expected a file name ending in .md or .csv, got {output!r}")
    _rliable()
    rows = summarize(group_runs(find_runs(list(paths), warn=warn)), reps=reps, statistic=statistic)
    table = markdown(rows, statistic)
    if output is not None:
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        with open(output, "w", encoding="utf-8") as f:
            f.write(to_csv(rows) if extension == ".csv" else table)
    return table


def warn_stderr(line: str) -> None:
    print(line, file=sys.stderr)
