"""A new user's first hour at the command line and in Python: one clear line per mistake, help
that says what is needed, a progress line that stays one line, plots, and the Python API."""
import json
import os
import pty
import re
import select
import subprocess
import sys

import numpy as np
import pytest

from memrl.__main__ import build_parser, parse_overrides
from memrl.config import PRESET_DOCS, preset
from memrl.loop import Trainer
from helpers import assert_one_error_line, cli


def blocked(tmp_path, module):
    """An environment in which importing ``module`` fails as if it were not installed."""
    fake = tmp_path / "blocked" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    path = os.pathsep.join([str(tmp_path / "blocked"), os.getcwd(), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


MISTAKES = [
    (["train", "pendulum-sac", "--env", "gymnasium:pendulum-v1"], "Environment `pendulum` doesn't exist"),
    (["train", "pendulum-td3", "--env", "gymnasium:CartPole-v1"], "algorithm: 'td3' needs a continuous (Box) action space"),
    (["train", "memory-chapter", "--set", "environment_kwargs.horizn=5"],
     "environment_kwargs: 'memory' takes no keyword 'horizn' (accepted: horizon, input_probability"),
    (["train", "nope"], "preset: expected one of"),
    (["train"], "preset: expected a preset name"),
    (["train", "memory-chapter", "--set", "gamma=2"], "gamma: expected a value <= 1.0"),
    (["train", "memory-chapter", "--set", "batchsize=3"], "unknown key(s) ['batchsize']"),
    (["train", "memory-chapter", "--set", "gamma"], "--set: expected KEY=VALUE"),
    (["train", "memory-chapter", "--set", "mask_non_terminal=false"], "mask_non_terminal: expected True"),
    (["train", "memory-chapter", "--steps", "0"], "--steps: expected a positive integer"),
    (["train", "memory-chapter", "--seed", "-1"], "--seed: expected a non-negative integer"),
    (["presets", "nope"], "preset: expected one of"),
    (["presets", "--json"], "--json: needs a preset NAME"),
]


@pytest.mark.parametrize("argv, fragment", MISTAKES)
def test_mistakes_print_one_line_exit_2_and_leave_no_run_directory(tmp_path, argv, fragment):
    if any("gymnasium" in a for a in argv):
        pytest.importorskip("gymnasium")
    run = tmp_path / "run"
    out = cli(*argv, *(["--log-dir", str(run)] if argv[0] == "train" else []))
    assert_one_error_line(out, fragment)
    assert "Traceback" not in out.stderr + out.stdout
    assert not run.exists()


def test_a_missing_optional_extra_is_one_line(tmp_path):
    out = cli("train", "pendulum-sac", "--env", "gymnasium:Pendulum-v1", "--log-dir", str(tmp_path / "run"),
              env=blocked(tmp_path, "gymnasium"))
    assert_one_error_line(out, "pip install 'memrl[gym]'")
    assert not (tmp_path / "run").exists()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text(json.dumps({"step": 0, "elapsed_s": 0, "mean_return": -1,
                                                              "std_return": 0}) + "\n")
    out = cli("plot", str(tmp_path / "r"), "-o", str(tmp_path / "c.png"), env=blocked(tmp_path, "matplotlib"))
    assert_one_error_line(out, "pip install 'memrl[plot]'")


def test_an_unwritable_log_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    out = cli("train", "pendulum-sac", "--log-dir", str(tmp_path / "file"))
    assert_one_error_line(out, "is a file, expected a directory")


def test_help_says_what_a_user_needs():
    text = build_parser().format_help()
    assert "--version" in text
    train_help = " ".join(cli("train", "--help").stdout.split())
    for needed in ("default 0", "config.json", "metrics.jsonl", "checkpoints/", "policy.npz", "--overwrite",
                   "true/false, yes/no or on/off", "null/none", "--resume"):
        assert needed in train_help, needed
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"memrl \d+\.\d+\.\d+\S*", version.stdout.strip())


def test_presets_lists_all_and_shows_one():
    listing = cli("presets")
    assert listing.returncode == 0
    for name, doc in PRESET_DOCS.items():  # every preset, with the first line of its docstring
        summary = doc.split("\n")[0]
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(summary)}$", listing.stdout, re.M), name
    one = cli("presets", "pendulum-td3", "--json")
    shown = json.loads(one.stdout)
    assert shown == preset("pendulum-td3").to_dict()
    described = cli("presets", "pendulum-p-sac")
    doc, _, settings = described.stdout.partition("\n\n")
    assert doc.startswith("Recurrent SAC on Pendulum observing the angle only") and "Source: Ni et al. 2022" in doc
    assert json.loads(settings) == preset("pendulum-p-sac").to_dict()


@pytest.mark.parametrize("argv", [["presets", "memory-chapter"],
                                  ["train", "memory-chapter", "--steps", "300", "--log-every", "100"]])
def test_a_reader_closing_the_pipe_ends_the_command_quietly(tmp_path, argv):
    """``python -m memrl presets | head -1`` (or ``train``): no traceback, no error line, status 141
    (as for a tool stopped by SIGPIPE)."""
    if argv[0] == "train":
        argv = [*argv, "--log-dir", str(tmp_path / "run")]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        out = subprocess.run([sys.executable, "-u", "-m", "memrl", *argv], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert out.returncode == 141, out.stderr
    assert "Traceback" not in out.stderr and "error" not in out.stderr, out.stderr


@pytest.mark.parametrize("raw, value", [
    ("true", True), ("True", True), ("YES", True), ("on", True), ("false", False), ("No", False), ("OFF", False),
    ("null", None), ("None", None), ("3", 3), ("0.5", 0.5), ("[1, 2]", [1, 2]), ("fast", "fast"),
])
def test_set_values_are_parsed_as_documented(raw, value):
    assert parse_overrides([f"key={raw}"]) == {"key": value}


def _run_in_a_terminal(args, columns=80, timeout=240):
    """Run the CLI on a pseudo-terminal of ``columns`` columns; returns everything it wrote."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = dict(os.environ, COLUMNS=str(columns), TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "memrl", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output in time")
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal_fits_and_stays_one_line(tmp_path):
    pytest.importorskip("tqdm")
    code, text = _run_in_a_terminal(["train", "memory-chapter", "--steps", "1500", "--log-dir", str(tmp_path / "r"),
                                     "--set", "evaluation_interval=500", "--set", "n_evaluation_episodes=1",
                                     "--set", "environment_kwargs.episode_step_limit=100",
                                     "--set", "n_warmup_steps_critic=1000"])
    assert code == 0, text
    text = text.replace("\r\n", "\n")  # the terminal's newline
    # what is left on screen: carriage returns overwrite the bar in place
    screen = [line.rsplit("\r", 1)[-1] for line in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).split("\n")]
    frames = [frame for line in text.split("\n") for frame in line.split("\r") if frame.strip()]
    assert all(len(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f)) <= 80 for f in frames), [f for f in frames if len(f) > 80]
    evaluations = [line for line in screen if line.startswith("Step: ")]
    assert [line.split()[1] for line in evaluations] == ["0/1500", "500/1500", "1000/1500", "1500/1500"]
    assert all(line.endswith("Mean episode length: 100") for line in evaluations), evaluations
    bars = [f for f in frames if "/1500 [" in f]
    assert bars and not any("ETA 0 s" in f for f in bars if "warm-up" in f)
    assert any("warm-up" in f for f in bars)


def test_progress_in_a_log_is_plain_lines(tmp_path):
    out = cli("train", "pendulum-sac", "--steps", "600", "--log-every", "200", "--log-dir", str(tmp_path / "r"),
              "--set", "evaluation_interval=600", "--set", "n_evaluation_episodes=1")
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout
    progress = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["200/600", "400/600", "600/600", "600/600"][:len(progress)]
    assert progress[0].split(" | ")[1] in ("measuring", "warm-up") or "steps/s" in progress[0]


def test_plot_writes_the_format_of_its_extension_into_new_folders(tmp_path):
    pytest.importorskip("matplotlib")
    from memrl.plot import run_labels

    runs = []
    for exp in ("expA", "expB"):
        run = tmp_path / exp / "seed-1"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "elapsed_s": s / 10, "mean_return": -s,
                                                               "std_return": 1.0}) + "\n" for s in (0, 10, 20)))
        runs.append(str(run))
    assert run_labels(runs) == ["expA/seed-1", "expB/seed-1"]
    assert run_labels([runs[0], str(tmp_path / "expA" / "seed-2")]) == ["seed-1", "seed-2"]
    for name, magic in (("curve.pdf", b"%PDF"), ("curve.png", b"\x89PNG"), ("curve.svg", b"<?xml")):
        target = tmp_path / "new" / "folder" / name
        out = cli("plot", *runs, "-o", str(target))
        assert out.returncode == 0, out.stderr
        assert target.read_bytes().startswith(magic)
    out = cli("plot", *runs, "-o", str(tmp_path / "curve.bmp"))
    assert_one_error_line(out, "expected a file name ending in one of")


# -- Python API ----------------------------------------------------------------------------------

def test_trainer_and_train_accept_a_preset_name():
    trainer = Trainer("memory-chapter", seed=1)
    assert trainer.config == preset("memory-chapter")
    with pytest.raises(ValueError, match="preset: expected one of"):
        Trainer("memory-chapterr")
    with pytest.raises(TypeError, match="config: expected a memrl.config.Config or a preset name, got dict"):
        Trainer({"gamma": 0.9})


def test_config_replace_changes_nested_fields_like_set():
    base = preset("memory-chapter")
    a = base.replace(sampling={"random_seq_length": False}, critic_optimizer={"lr": 3e-4})
    b = base.replace(**{"sampling.random_seq_length": False, "critic_optimizer.lr": 3e-4})
    from memrl.__main__ import apply_overrides

    c = apply_overrides(base, ["sampling.random_seq_length=false", "critic_optimizer.lr=3e-4"])
    assert a == b == c
    assert a.sampling.random_seq_length is False and a.sampling.nominal_sequence_length_probability == 0.5
    assert a.critic_optimizer.lr == 3e-4 and a.critic_optimizer.v_hat_floor == 1e-7
    assert base.sampling.random_seq_length is True  # the original is untouched
    assert base.replace(environment_kwargs={"horizon": 5}).environment_kwargs == {**base.environment_kwargs,
                                                                                 "horizon": 5}
    with pytest.raises(ValueError, match=r"sampling: unknown key\(s\) \['random'\]"):
        base.replace(sampling={"random": True})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gama'\]"):
        base.replace(gama=0.5)
    steps = Trainer(base.replace(total_steps=300, sampling={"random_seq_length": False}), seed=0)
    assert steps.samplers[0].config.random_seq_length is False


def test_readme_python_api_example_runs():
    config = preset("pendulum-sac").replace(total_steps=300, evaluation_interval=300, n_evaluation_episodes=1)
    trainer = Trainer(config, seed=1)
    while not trainer.step():
        pass
    assert trainer.step_count == 300 and np.isfinite(trainer.evaluate()["mean_return"])
