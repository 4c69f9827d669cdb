"""Learning-curve plots from synthetic metrics.jsonl files."""
import builtins
import json
import os

import pytest

from memrl import plot


def write_run(directory, n=5, probe=True, seed=0):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        for i in range(n):
            record = {"step": 20000 * i, "elapsed_s": 30.0 * i + seed, "mean_return": -500.0 + 40 * i + seed,
                      "std_return": 10.0, "mean_length": 2000, "alpha": 0.1}
            if probe:
                record.update(probe_correct=min(i + seed, 10), probe_total=10)
            f.write(json.dumps(record) + "\n")
        f.write("\n")  # a trailing blank line is fine
    return str(directory)


def test_plot_runs_writes_a_png_with_one_line_per_run(tmp_path):
    pytest.importorskip("matplotlib")
    runs = [write_run(tmp_path / "seed1"), write_run(tmp_path / "seed2", seed=2),
            write_run(tmp_path / "no-probe", probe=False)]
    output = tmp_path / "curve.png"
    plot.plot_runs(runs, str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 10_000


def test_plot_draws_the_three_panels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.setdefault("figure", self))
    runs = [write_run(tmp_path / "seed1"), write_run(tmp_path / "seed2", seed=2),
            write_run(tmp_path / "no-probe", probe=False)]
    plot.plot_runs(runs, str(tmp_path / "curve.png"))
    by_steps, by_time, probe = saved["figure"].axes
    assert [line.get_label() for line in by_steps.get_lines()] == ["seed1", "seed2", "no-probe"]
    assert list(by_steps.get_lines()[1].get_xdata()) == [0, 20000, 40000, 60000, 80000]
    assert list(by_time.get_lines()[1].get_xdata()) == [2.0, 32.0, 62.0, 92.0, 122.0]
    assert [line.get_label() for line in probe.get_lines()] == ["seed1", "seed2"]
    assert list(probe.get_lines()[1].get_ydata()) == [0.2, 0.3, 0.4, 0.5, 0.6]


def test_runs_without_probe_results_get_no_probe_panel(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.setdefault("figure", self))
    runs = [write_run(tmp_path / "cartpole-seed1", probe=False), write_run(tmp_path / "cartpole-seed2", probe=False)]
    plot.plot_runs(runs, str(tmp_path / "curve.png"))
    by_steps, by_time = saved["figure"].axes
    assert by_steps.get_title() == "Return vs steps" and by_time.get_title() == "Return vs wall time"
    assert [line.get_label() for line in by_time.get_lines()] == ["cartpole-seed1", "cartpole-seed2"]


def test_main_succeeds_and_reports_bad_inputs_in_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    good = write_run(tmp_path / "good")
    assert plot.main([good, "-o", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").exists()
    capsys.readouterr()

    missing = tmp_path / "missing"
    assert plot.main([good, str(missing), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl: no such file" in err and "missing" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert plot.main([str(empty), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl: empty" in err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"step": 0, "elapsed_s": 1, "mean_return": 0, "std_return": 0}\n{"step": \n')
    assert plot.main([str(broken), "-o", str(tmp_path / "x.png")]) == 2
    assert "metrics.jsonl:2: invalid JSON" in capsys.readouterr().err

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metrics.jsonl").write_text('{"step": 0}\n')
    assert plot.main([str(partial), "-o", str(tmp_path / "x.png")]) == 2
    assert "metrics.jsonl:1: missing keys ['elapsed_s', 'mean_return', 'std_return']" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()

    assert plot.main([good]) == 2  # argparse usage error: -o is required
    assert "-o/--output" in capsys.readouterr().err


def test_missing_matplotlib_gives_the_install_hint(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    run = write_run(tmp_path / "run")
    with pytest.raises(ImportError, match=r"pip install 'memrl\[plot\]'"):
        plot.plot_runs([run], str(tmp_path / "curve.png"))
