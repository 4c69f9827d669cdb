"""Shared benchmark helpers: thread pinning, timing by median, machine description, Markdown
tables, and running ``python -m memrl train`` as a child process with its wall time and peak memory."""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# Child processes (run_children) get the environment as it was, not the pinning below: a training
# run pins its own BLAS, and its threads must behave as they would for the user.
CHILD_ENV = dict(os.environ)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def median_time(fn, *, repeats: int, inner: int = 1, warmup: int = 3) -> float:
    """Median over ``repeats`` of the mean seconds per call over ``inner`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load() -> str:
    """The 1-minute load average (how busy the machine was), or '?' where it cannot be read."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def fmt_time(seconds: float) -> str:
    """A duration with three significant digits in ns, us, ms or s (e.g. '17 ns', '1.00 us', '7.20 ms')."""
    for unit, scale in (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3)):
        if seconds < 1000 * scale:
            value = seconds / scale
            return f"{value:.0f} {unit}" if unit == "ns" else f"{_three_digits(value)} {unit}"
    return f"{_three_digits(seconds)} s"


def _three_digits(x: float) -> str:
    """Three significant digits, trailing zeros kept (1.00, 58.4, 509)."""
    return f"{x:#.3g}".rstrip(".")


def fmt_ratio(r: float) -> str:
    """A speed ratio as the README writes it: '54x', '1.49x'."""
    return f"{r:.0f}x" if r >= 10 else f"{r:.2f}x"


def markdown_table(header, rows) -> str:
    """A GitHub Markdown table (ready to paste into the README)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def train_command(args, *, seed=None, log_dir=None) -> list:
    """``python -m memrl train ARGS [--seed S] [--log-dir DIR] --quiet`` as an argument list."""
    cmd = [sys.executable, "-m", "memrl", "train", *args]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if log_dir is not None:
        cmd += ["--log-dir", log_dir]
    return cmd + ["--quiet"]


def child_memrl(cwd: str) -> str:
    """Where ``python -m memrl`` run in ``cwd`` (as run_children runs it) imports memrl from."""
    out = subprocess.run([sys.executable, "-c", "import memrl; print(memrl.__file__)"], cwd=cwd, env=CHILD_ENV,
                         capture_output=True, text=True, check=True)
    return os.path.dirname(out.stdout.strip())


def child_isa(cwd: str) -> str:
    """The kernels' instruction-set path (``memrl.isa``) a ``python -m memrl`` run in ``cwd`` gets."""
    code = "import memrl.isa; print(memrl.isa.selected())"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=CHILD_ENV, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def run_children(commands, cwd: str) -> list:
    """Start every command at once in ``cwd`` (stdout and stderr captured) and wait for all of them.

    ``python -m`` puts its working directory first on the module path, so ``cwd`` should not be a
    source checkout other than the one meant to be measured (the benchmarks use their scratch
    directory).

    Returns one dict per command, in order: ``wall_s`` (from start to its exit), ``peak_rss_mb``
    (the child's own maximum resident set, from ``wait4``), ``returncode``, ``output``. Raises
    RuntimeError naming the command if a child fails."""
    import tempfile
    children = []
    for cmd in commands:
        out = tempfile.TemporaryFile(mode="w+")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=CHILD_ENV, cwd=cwd)
        children.append({"cmd": cmd, "proc": proc, "out": out, "t0": t0})
    by_pid = {c["proc"].pid: c for c in children}
    while any(c["proc"].returncode is None for c in children):
        pid, status, usage = os.wait4(-1, 0)
        child = by_pid.get(pid)
        if child is None:
            continue
        child["wall_s"] = time.perf_counter() - child["t0"]
        child["proc"].returncode = os.waitstatus_to_exitcode(status)
        # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
        child["peak_rss_mb"] = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    results = []
    for c in children:
        c["out"].seek(0)
        output = c["out"].read()
        c["out"].close()
        if c["proc"].returncode != 0:
            raise RuntimeError(f"{' '.join(c['cmd'])}: exit status {c['proc'].returncode}\n{output}")
        results.append({"wall_s": c["wall_s"], "peak_rss_mb": c["peak_rss_mb"],
                        "returncode": c["proc"].returncode, "output": output})
    return results


def read_metrics(log_dir: str) -> list:
    """The evaluation records of a run directory's metrics.jsonl, in order."""
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
