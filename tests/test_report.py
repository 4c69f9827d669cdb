"""Reports over seeds (IQM, stratified-bootstrap CIs) and aggregated learning curves, on synthetic runs."""
import builtins
import csv
import json
import os

import numpy as np
import pytest
import scipy.stats

from memrl import report
from memrl.config import preset
from helpers import assert_one_error_line, cli

rliable = pytest.importorskip("rliable", reason="the report extra is not installed: pip install 'memrl[report]'")


def write_run(directory, seed, returns, probes=None, steps=None, elapsed=None, **config_changes):
    """A run directory with config.json and one evaluation record per entry of ``returns``."""
    os.makedirs(directory, exist_ok=True)
    config = preset("memory-chapter").replace(**config_changes).to_dict()
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"seed": seed, "config": config}, f)
    steps = steps or [1000 * i for i in range(len(returns))]
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        for i, (step, value) in enumerate(zip(steps, returns)):
            record = {"step": step, "elapsed_s": (elapsed or 10.0) * (i + 1) / len(returns),
                      "mean_return": value, "std_return": 1.0}
            if probes is not None:
                record.update(probe_correct=probes[i], probe_total=10)
            f.write(json.dumps(record) + "\n")
    return str(directory)


def make_sweep(root):
    """Two settings of three seeds in a sweep's layout, and a run that has not evaluated yet."""
    finals = {0.9: [-300.0, -250.0, -400.0], 0.99: [-100.0, -150.0, -120.0]}
    for gamma, values in finals.items():
        for seed, final in enumerate(values, start=1):
            write_run(root / f"gamma={gamma}" / f"seed-{seed}", seed, [-900.0, final - 50 * seed, final],
                      probes=[1, 5, seed + 6], elapsed=20.0 + seed, gamma=gamma, threads=seed % 2 + 1)
    os.makedirs(root / "_tune" / "x" / "seed-1")  # Tune's records are not runs
    (root / "_tune" / "x" / "seed-1" / "config.json").write_text("{}")
    (root / "_tune" / "x" / "seed-1" / "metrics.jsonl").write_text("{}")
    pending = root / "gamma=0.5" / "seed-1"
    pending.mkdir(parents=True)
    (pending / "config.json").write_text(json.dumps({"seed": 1, "config": preset("memory-chapter").to_dict()}))
    (pending / "metrics.jsonl").write_text("")
    return finals


def test_runs_are_grouped_by_configuration_apart_from_the_seed(tmp_path):
    make_sweep(tmp_path)
    warnings = []
    runs = report.find_runs([str(tmp_path)], warn=warnings.append)
    assert len(runs) == 6
    assert warnings == [f"memrl: warning: {tmp_path / 'gamma=0.5' / 'seed-1'}: no evaluation recorded yet, left out"]
    groups = report.group_runs(runs)
    assert [g.label for g in groups] == ["gamma=0.9", "gamma=0.99"]
    assert [[r.seed for r in g.runs] for g in groups] == [[1, 2, 3], [1, 2, 3]]  # threads differ within each

    # Runs of two settings side by side in one folder: labelled by the fields that differ.
    mixed = tmp_path / "mixed"
    write_run(mixed / "a", 1, [0.0], gamma=0.5)
    write_run(mixed / "b", 1, [0.0], gamma=0.6, batch_size=8)
    write_run(mixed / "c", 2, [0.0], gamma=0.6, batch_size=8)
    groups = report.group_runs(report.find_runs([str(mixed)]))
    assert [g.label for g in groups] == ["batch_size=4,gamma=0.5", "batch_size=8,gamma=0.6"]
    # One setting: its folder's name.
    assert [g.label for g in report.group_runs(report.find_runs([str(tmp_path / "gamma=0.9")]))] == ["gamma=0.9"]


def test_summary_values(tmp_path):
    finals = make_sweep(tmp_path)
    rows = report.summarize(report.group_runs(report.find_runs([str(tmp_path)])), reps=500)
    for row, gamma in zip(rows, (0.9, 0.99)):
        values = finals[gamma]
        assert row["setting"] == f"gamma={gamma}" and row["runs"] == 3 and row["seeds"] == "1 2 3"
        assert (row["steps_min"], row["steps_max"]) == (2000, 2000)
        # Three runs: trim_mean(0.25) cuts int(0.75) = 0 runs from each end, the IQM is the mean.
        assert row["final_return"] == pytest.approx(np.mean(values), rel=1e-12)
        assert row["best_return"] == pytest.approx(np.mean(values), rel=1e-12)  # the last is the best here
        assert row["probe_accuracy"] == pytest.approx(np.mean([0.7, 0.8, 0.9]), rel=1e-12)
        assert min(values) <= row["final_return_ci_low"] <= row["final_return"] <= row["final_return_ci_high"] \
            <= max(values)
        assert row["wall_time_s_mean"] == pytest.approx(22.0) and row["wall_time_s_min"] == 21.0
        assert row["wall_time_s_max"] == 23.0


def test_iqm_trims_a_quarter_at_each_end(tmp_path):
    values = [-10.0, -5.0, 0.0, 1.0, 2.0, 3.0, 50.0, 100.0]
    for seed, value in enumerate(values):
        write_run(tmp_path / f"seed-{seed}", seed, [value - 1.0, value])
    (row,) = report.summarize(report.group_runs(report.find_runs([str(tmp_path)])), reps=200)
    assert row["final_return"] == pytest.approx(np.mean([0.0, 1.0, 2.0, 3.0]), rel=1e-12)
    assert row["final_return"] == pytest.approx(scipy.stats.trim_mean(values, 0.25), rel=1e-12)
    assert row["probe_accuracy"] is None


def test_intervals_are_deterministic_and_leave_numpys_random_state_alone():
    values = np.random.default_rng(3).normal(size=(9, 2))
    np.random.seed(123)
    before = np.random.get_state()
    first = report.interval_estimates(values, reps=300)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    np.random.seed(7)
    second = report.interval_estimates(values, reps=300)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(first[0], scipy.stats.trim_mean(values, 0.25, axis=0), rtol=1e-12)
    assert np.all(first[1] <= first[0]) and np.all(first[0] <= first[2])
    same = report.interval_estimates(np.full((5, 1), 2.5), reps=100)
    assert [float(x[0]) for x in same] == [2.5, 2.5, 2.5]


def test_interval_width_matches_the_normal_theory_for_the_mean():
    """400 runs from N(0, 1): the 95% bootstrap interval of the mean is about mean +- 1.96 / sqrt(400)."""
    values = np.random.default_rng(0).normal(size=(400, 1))
    estimate, low, high = report.interval_estimates(values, statistic="mean", reps=2000)
    half_width = 1.96 * values.std() / np.sqrt(400)
    assert estimate[0] == pytest.approx(values.mean(), rel=1e-12)
    assert (high[0] - low[0]) / 2 == pytest.approx(half_width, rel=0.1)
    assert (low[0] + high[0]) / 2 == pytest.approx(values.mean(), abs=0.2 * half_width)


def test_interval_estimates_refuse_bad_input():
    for values, fragment in ((np.zeros((0, 1)), "at least one of each"), (np.zeros(3), "shape"),
                             (np.array([[np.nan]]), "finite")):
        with pytest.raises(ValueError, match=fragment):
            report.interval_estimates(values)
    with pytest.raises(ValueError, match="statistic: expected one of"):
        report.interval_estimates(np.zeros((2, 1)), statistic="median")
    with pytest.raises(ValueError, match="reps: expected a positive integer"):
        report.interval_estimates(np.zeros((2, 1)), reps=0)


def test_report_command_prints_and_writes_markdown_and_csv(tmp_path):
    make_sweep(tmp_path / "sweep")

    def run(*args):
        return cli("report", *args)

    out = run(str(tmp_path / "sweep"), "-o", str(tmp_path / "out" / "table.md"), "--reps", "300")
    assert out.returncode == 0, out.stderr
    assert "no evaluation recorded yet, left out" in out.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert out.stdout == table + f"wrote {tmp_path / 'out' / 'table.md'}\n"
    lines = table.splitlines()
    assert lines[0] == ("| setting | runs | seeds | steps | final return IQM [95% CI] | best return IQM [95% CI] | "
                        "probe accuracy IQM [95% CI] | wall time per run (s): mean [min, max] |")
    assert lines[2].startswith("| gamma=0.9 | 3 | 1 2 3 | 2000 | -316.7 [")
    assert lines[2].endswith("| 0.8 [0.7, 0.9] | 22.0 [21.0, 23.0] |")
    assert len(lines) == 4
    again = run(str(tmp_path / "sweep"), "-o", str(tmp_path / "table.csv"), "--reps", "300")
    assert again.stdout.splitlines()[:4] == lines  # the same numbers every time
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [r["setting"] for r in rows] == ["gamma=0.9", "gamma=0.99"]
    assert float(rows[1]["final_return"]) == pytest.approx(-370 / 3, rel=1e-12)
    assert rows[0]["probe_accuracy_ci_high"] and float(rows[0]["wall_time_s_mean"]) == 22.0

    for args, fragment in (([str(tmp_path / "nope")], "no such directory"),
                           ([str(tmp_path / "out")], "no run directory"),
                           ([str(tmp_path / "sweep"), "-o", "x.txt"], "-o: expected a file name ending in .md or .csv")):
        bad = run(*args)
        assert_one_error_line(bad, fragment)


@pytest.mark.parametrize("error", [ImportError("No module named 'rliable'"),
                                   TypeError("deprecate_kwarg() missing 1 required positional argument")])
def test_missing_or_broken_rliable_gives_the_install_hint(tmp_path, monkeypatch, error):
    real_import = builtins.__import__

    def no_rliable(name, *args, **kwargs):
        if name.startswith("rliable"):
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rliable)
    write_run(tmp_path / "seed-1", 1, [0.0])
    with pytest.raises(ImportError, match=r"pip install 'memrl\[report\]'"):
        report.report([str(tmp_path)])


# -- aggregated learning curves (memrl.plot --aggregate) ----------------------------------------------

def test_plot_settings_draws_one_line_and_band_per_setting(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from memrl import plot

    make_sweep(tmp_path)
    # A fourth run of gamma=0.99 without the step-1000 evaluation: the curve keeps 0 and 2000 only.
    write_run(tmp_path / "gamma=0.99" / "seed-4", 4, [-800.0, -90.0], probes=[2, 9], steps=[0, 2000],
              gamma=0.99)
    saved = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.setdefault("figure", self))
    plot.plot_settings([str(tmp_path)], str(tmp_path / "curve.png"), reps=300)
    by_steps, by_time, probe = saved["figure"].axes
    assert [line.get_label() for line in by_steps.get_lines()] == ["gamma=0.9 (3 runs)", "gamma=0.99 (4 runs)"]
    first, second = by_steps.get_lines()
    assert list(first.get_xdata()) == [0, 1000, 2000] and list(second.get_xdata()) == [0, 2000]
    curves = plot.setting_curves([str(tmp_path)], reps=300)
    np.testing.assert_array_equal(first.get_ydata(), curves[0]["returns"][0])
    finals = np.array([[-300.0], [-250.0], [-400.0]])
    assert curves[0]["returns"][0][-1] == pytest.approx(finals.mean(), rel=1e-12)
    # Four runs at step 2000 (-100, -150, -120, -90): the IQM is the mean of the middle two.
    assert curves[1]["returns"][0][-1] == pytest.approx(-110.0, rel=1e-12)
    bands = by_steps.collections
    assert len(bands) == 2
    vertices = bands[0].get_paths()[0].vertices
    low, high = curves[0]["returns"][1], curves[0]["returns"][2]
    assert set(map(tuple, vertices)) >= {(s, v) for s, v in zip([0, 1000, 2000], low)} | \
        {(s, v) for s, v in zip([0, 1000, 2000], high)}
    assert [line.get_label() for line in probe.get_lines()] == ["gamma=0.9 (3 runs)", "gamma=0.99 (4 runs)"]
    np.testing.assert_allclose(probe.get_lines()[0].get_ydata(), [0.1, 0.5, 0.8], rtol=1e-12)
    assert len(by_time.get_lines()) == 2


def test_plot_command_with_aggregate_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    make_sweep(tmp_path / "sweep")
    out = cli("plot", str(tmp_path / "sweep"), "--aggregate", "--statistic", "mean", "--reps", "200", "-o",
              str(tmp_path / "curve.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without --aggregate a folder is not a run directory: the per-run plot is unchanged.
    out = cli("plot", str(tmp_path / "sweep"), "-o", str(tmp_path / "x.png"))
    assert_one_error_line(out, "metrics.jsonl: no such file")
