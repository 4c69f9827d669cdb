"""memrl against RLtools' native build on the memory chapter: wall time, peak memory, time to solve.

    python bench/bench_vs_rltools.py --rltools DIR [--seeds 1 2 3] [--steps 200000]
                                     [--solve-cap 80000] [--no-solve] [--log-root DIR]
    python bench/bench_vs_rltools.py --smoke

``DIR`` holds RLtools' ``chapter`` and ``time_to_solve`` programs, built by
``../shared/anchors/rltools-chapter/build.sh`` (``-O3 -ffast-math -march=native``, OpenBLAS; run here
with ``OPENBLAS_NUM_THREADS=1``, its fastest measured configuration). For each seed, in turn and
never at the same time:

* **whole run**: RLtools' ``chapter SEED`` (200000 steps) and ``python -m memrl train
  memory-chapter --seed SEED`` (memrl's default threads), each timed from process start to exit,
  with its own peak resident memory (``wait4``'s ``ru_maxrss``);
* **time to solve**: RLtools' ``time_to_solve SEED`` (100 count probes every 2000 steps, stops at the
  first evaluation with >= 90/100 correct) and memrl with the same probes
  (``--set evaluation_interval=2000 --set n_probes=100 --set n_evaluation_episodes=1``), stopped
  once its ``metrics.jsonl`` records >= 90/100; both timed from process start (start-up
  included) to the moment the solving evaluation is written (memrl: the file is polled every
  20 ms). A side that has not solved by ``--solve-cap`` steps is reported as unsolved.

The two sides alternate (RLtools first for odd seeds, memrl first for even ones) so drift in
the machine's speed falls on both. Ratios are memrl / RLtools (below 1: memrl is faster); the
summary gives medians over seeds and the spread of the per-seed ratios. The machine should be
otherwise idle: the load average before each run is printed.

``--smoke`` (CI, no C++ programs needed) runs only memrl's side with tiny step counts, so the
script's own plumbing is exercised.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import _common

SOLVED = 90  # of 100 probes, as RLtools' time_to_solve
PROBE_SETTINGS = ["--set", "evaluation_interval=2000", "--set", "n_probes=100", "--set", "n_evaluation_episodes=1",
                  "--set", "checkpoint_interval=null"]
SMOKE_SETTINGS = ["--set", "n_warmup_steps=50", "--set", "n_warmup_steps_critic=50",
                  "--set", "n_warmup_steps_actor=50", "--set", "evaluation_interval=100",
                  "--set", "n_evaluation_episodes=1", "--set", "n_probes=100"]


def _wait(proc):
    """Wait for ``proc``; returns (exit code, peak resident MB of that child)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def _exited(proc):
    """Whether ``proc`` has exited, without reaping it (so that ``_wait`` still gets its peak memory)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _child_env():
    env = dict(_common.CHILD_ENV)
    env["OPENBLAS_NUM_THREADS"] = "1"  # RLtools' fastest build runs OpenBLAS on one thread
    return env


def run_rltools(program, seed):
    """``program SEED`` to its exit: (wall s, peak MB, stdout)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen([program, str(seed)], stdout=out, stderr=subprocess.STDOUT, env=_child_env())
        code, peak = _wait(proc)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if code != 0:
        raise RuntimeError(f"{program} {seed}: exit status {code}\n{text[-2000:]}")
    return wall, peak, text


def rltools_solve(text, cap):
    """(step, seconds) of the first 'probe STEP CORRECT SECONDS' line with >= 90 correct, or None."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "probe" and int(parts[2]) >= SOLVED and int(parts[1]) <= cap:
            return int(parts[1]), float(parts[3])
    return None


def run_memrl(args, seed, log_dir, *, stop_when_solved=False):
    """``python -m memrl train ARGS --seed SEED --log-dir LOG_DIR``: (wall s, peak MB, solved), where
    solved is (step, seconds from process start) of the first evaluation with >= 90/100 probes, or
    None. With ``stop_when_solved`` the run is stopped (SIGTERM) as soon as that evaluation is written."""
    cmd = _common.train_command(args, seed=seed, log_dir=log_dir)
    metrics = os.path.join(log_dir, "metrics.jsonl")
    solved, seen = None, 0
    with tempfile.TemporaryFile(mode="w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_child_env(),
                                cwd=os.path.dirname(log_dir))
        while solved is None and not _exited(proc):
            time.sleep(0.02)
            solved, seen = _first_solved(metrics, seen)
            if solved is not None:
                solved = (solved, time.perf_counter() - t0)
        if solved is not None and stop_when_solved and not _exited(proc):
            proc.terminate()
        code, peak = _wait(proc)
        wall = time.perf_counter() - t0
        if solved is None:
            found, _ = _first_solved(metrics, 0)
            if found is not None:  # written just before the exit: its time is the end of the run
                solved = (found, wall)
        out.seek(0)
        text = out.read()
    if code != 0 and not (stop_when_solved and solved is not None):
        raise RuntimeError(f"{' '.join(cmd)}: exit status {code}\n{text[-2000:]}")
    return wall, peak, solved


def _first_solved(path, seen):
    """The step of the first complete record past line ``seen`` with probe_correct >= 90, and the
    number of complete lines read."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None, seen
    complete = lines[:-1]  # the last piece has no newline yet (or is empty)
    for line in complete[seen:]:
        record = json.loads(line)
        if record.get("probe_total") == 100 and record.get("probe_correct", 0) >= SOLVED:
            return record["step"], len(complete)
    return None, len(complete)


def ratio(a, b):
    return a / b if (a is not None and b) else None


def fmt(x, spec="{:.1f}"):
    return "-" if x is None else spec.format(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rltools", help="directory with RLtools' built 'chapter' and 'time_to_solve'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=200000, help="whole-run length (RLtools' is fixed at 200000)")
    parser.add_argument("--solve-cap", type=int, default=80000, help="time to solve: give up after this many steps")
    parser.add_argument("--no-solve", action="store_true", help="skip the time-to-solve comparison")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-run comparison")
    parser.add_argument("--log-root", help="keep memrl's run directories here (default: a temporary directory)")
    parser.add_argument("--smoke", action="store_true", help="memrl's side only, tiny runs (CI)")
    opts = parser.parse_args(argv)
    if not opts.smoke:
        if opts.rltools is None:
            parser.error("--rltools DIR is required (or --smoke)")
        for prog in ("chapter", "time_to_solve"):
            path = os.path.join(opts.rltools, prog)
            if not os.access(path, os.X_OK):
                parser.error(f"--rltools: {path} is not an executable (build it with "
                             "../shared/anchors/rltools-chapter/build.sh)")
        if opts.steps != 200000:
            parser.error("--steps: RLtools' chapter runs 200000 steps; compare like with like")
    root = os.path.abspath(opts.log_root) if opts.log_root else tempfile.mkdtemp(prefix="memrl-vs-rltools-")
    os.makedirs(root, exist_ok=True)
    print(f"machine: {_common.machine()}; memrl from {_common.child_memrl(root)}")
    print("RLtools: -O3 -ffast-math -march=native, OpenBLAS, OPENBLAS_NUM_THREADS=1; "
          "memrl: setup.py's flags (no -march=native), default threads, kernels' instruction set "
          f"{_common.child_isa(root)}")
    seeds = [1] if opts.smoke else opts.seeds
    whole, solve = [], []
    for seed in seeds:
        order = ("memrl",) if opts.smoke else ("rltools", "memrl") if seed % 2 else ("memrl", "rltools")
        if not opts.no_whole:
            row = {"seed": seed}
            for side in order:
                print(f"seed {seed} whole run, {side} (load {_common.load()})", flush=True)
                if side == "rltools" and not opts.smoke:
                    row["rlt_s"], row["rlt_mb"], _ = run_rltools(os.path.join(opts.rltools, "chapter"), seed)
                elif side == "memrl":
                    args = ["memory-chapter", "--steps", str(200 if opts.smoke else opts.steps)]
                    args += SMOKE_SETTINGS if opts.smoke else []
                    log_dir = os.path.join(root, f"whole-seed{seed}")
                    row["mem_s"], row["mem_mb"], _ = run_memrl(args + ["--overwrite"], seed, log_dir)
            whole.append(row)
        if not opts.no_solve:
            row = {"seed": seed}
            for side in order:
                print(f"seed {seed} time to solve, {side} (load {_common.load()})", flush=True)
                if side == "rltools" and not opts.smoke:
                    _, _, text = run_rltools(os.path.join(opts.rltools, "time_to_solve"), seed)
                    row["rlt"] = rltools_solve(text, opts.solve_cap)
                elif side == "memrl":
                    cap = 200 if opts.smoke else opts.solve_cap
                    args = ["memory-chapter", "--steps", str(cap), "--overwrite"] + PROBE_SETTINGS
                    args += SMOKE_SETTINGS if opts.smoke else []
                    log_dir = os.path.join(root, f"solve-seed{seed}")
                    _, _, row["mem"] = run_memrl(args, seed, log_dir, stop_when_solved=True)
            solve.append(row)
    print()
    if whole:
        rows = []
        for r in whole:
            rows.append([r["seed"], fmt(r.get("rlt_s")), fmt(r.get("rlt_mb"), "{:.0f}"), fmt(r.get("mem_s")),
                         fmt(r.get("mem_mb"), "{:.0f}"), fmt(ratio(r.get("mem_s"), r.get("rlt_s")), "{:.2f}x")])
        ratios = [ratio(r.get("mem_s"), r.get("rlt_s")) for r in whole]
        ratios = [x for x in ratios if x is not None]
        med = lambda key: statistics.median([r[key] for r in whole if key in r]) if any(key in r for r in whole) else None
        rows.append(["median", fmt(med("rlt_s")), fmt(med("rlt_mb"), "{:.0f}"), fmt(med("mem_s")),
                     fmt(med("mem_mb"), "{:.0f}"),
                     fmt(statistics.median(ratios) if ratios else None, "{:.2f}x")
                     + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")])
        print(f"Whole run, {200 if opts.smoke else opts.steps} steps:")
        print(_common.markdown_table(["seed", "RLtools s", "RLtools MB", "memrl s", "memrl MB", "memrl / RLtools"],
                                     rows))
        print()
    if solve:
        rows, ratios = [], []
        for r in solve:
            rlt, mem = r.get("rlt"), r.get("mem")
            q = ratio(mem[1], rlt[1]) if (mem and rlt) else None
            if q is not None:
                ratios.append(q)
            cell = lambda x: "not solved" if x is None else f"step {x[0]}, {x[1]:.1f} s"
            rows.append([r["seed"], "-" if opts.smoke else cell(rlt), cell(mem), fmt(q, "{:.2f}x")])
        if len(ratios) > 1:
            rows.append(["median", "", "", f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"])
        print(f"Time to solve (>= {SOLVED}/100 count probes, evaluated every 2000 steps, cap "
              f"{200 if opts.smoke else opts.solve_cap} steps):")
        print(_common.markdown_table(["seed", "RLtools", "memrl", "memrl / RLtools"], rows))
    if not opts.log_root:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
