"""The README's commands and Python snippets, run top to bottom as a new user would type them.

Every fenced ``bash`` and ``python`` block of README.md is extracted and executed in document
order in one scratch directory, so the README cannot drift from what memrl does. Training
commands run with a small ``--steps`` (and ``--steps`` is added where a command relies on the
preset's length); ``pip install`` and ``pytest`` lines are what this test suite already is;
benchmark scripts run in their ``--smoke`` mode. Python blocks run in one namespace; a block
that defines Hypothesis tests (``test_*`` functions) has them called.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SMALL_STEPS = "1200"
SKIPPED = ("pip ", "pytest", "HYPOTHESIS_PROFILE=", "MEMRL_CYTHON_DEBUG=", "git ", "cd ")
OPTIONAL = {"gymnasium:": "gymnasium", "plot ": "matplotlib", "sweep ": "ray", "report ": "rliable",
            "--tensorboard": "tensorboardX", "popgym": "popgym"}


def blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number) of every fenced block, in order."""
    found = []
    for match in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.S | re.M):
        found.append((match.group(1), match.group(2), text[:match.start()].count("\n") + 1))
    return found


def commands(code: str) -> list[str]:
    """The commands of a bash block: one per line (comments dropped), split at ``&&`` and ``;``."""
    out = []
    for line in code.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        for part in re.split(r"\s*(?:&&|;)\s*", line):
            if part:
                out.append(part)
    return out


def adapt(command: str) -> list[str] | None:
    """The argv to run for a README command, or None when the test suite itself stands for it."""
    if command.startswith(SKIPPED):
        return None
    argv = shlex.split(command)
    if argv[0] == "python" and argv[1:3] == ["-m", "memrl"] and len(argv) > 3 and argv[3] in ("train", "sweep"):
        if "--steps" in argv:
            argv[argv.index("--steps") + 1] = SMALL_STEPS
        elif "--resume" not in argv:
            argv += ["--steps", SMALL_STEPS]
    if argv[0] == "python" and len(argv) > 1 and argv[1].startswith("bench/"):
        # the smoke mode; bench_learning keeps its table and run directories (--smoke seeds --log-root DIR)
        rest = argv[2:] if argv[1].endswith("bench_learning.py") else []
        argv = ["python", os.path.join(ROOT, argv[1]), "--smoke", *rest]
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    return argv


def _missing_extra(text: str) -> str | None:
    import importlib.util

    for marker, module in OPTIONAL.items():
        if marker in text and importlib.util.find_spec(module) is None:
            return module
    return None


def test_every_readme_block_runs_top_to_bottom(tmp_path):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = blocks(text)
    assert found, "README.md has no code blocks"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    namespace: dict = {"__name__": "readme"}
    ran = 0
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        for language, code, line in found:
            missing = _missing_extra(code)
            if missing:
                pytest.skip(f"README line {line} needs the optional {missing!r}")
            if language == "bash":
                for command in commands(code):
                    argv = adapt(command)
                    if argv is None:
                        continue
                    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
                    assert out.returncode == 0, f"README line {line}: {command}\n{out.stdout[-2000:]}\n{out.stderr}"
                    ran += 1
            elif language == "python":
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
                for name, value in list(namespace.items()):
                    if name.startswith("test_") and callable(value):
                        value()
                        del namespace[name]
                ran += 1
    finally:
        os.chdir(old)
    assert ran >= 5
