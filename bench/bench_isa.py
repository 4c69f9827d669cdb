"""The instruction-set paths of the kernels (``memrl.isa``) against each other: time per step and bits.

    python bench/bench_isa.py [--run PRESET:STEPS ...] [--rounds 3] [--seed 1] [--smoke]

Runs ``python -m memrl train PRESET --steps STEPS`` once per path this machine runs (``MEMRL_ISA``
= baseline, x86-64-v3), the paths alternating within each of ``--rounds`` rounds, and prints a
Markdown table: each path's training seconds per round (the loop without start-up and evaluations:
the last record's train_elapsed_s), their median, the ratio to the baseline's median measured in the same run, and
whether the run's metrics (everything but timings and memory) and exported policy are the same
bits as the baseline's. Defaults: ``memory-chapter:20000`` (the chapter's 16 units, critics and
actor training from step 10000) and ``pendulum-v-sac:1400`` (the POMDP presets' 64 units over
64 x 16 windows; 400 updates after 1000 random steps). Run it with nothing else busy on the machine.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile

import _common

from memrl import isa as memrl_isa

DEFAULT_RUNS = ["memory-chapter:20000", "pendulum-v-sac:1400"]
_TIMING_KEYS = re.compile(r"elapsed|_s$|rss")


def results_digest(log_dir: str) -> str:
    """A digest of what the run computed: its metrics without timings and memory, and its policy."""
    rows = [{k: v for k, v in r.items() if not _TIMING_KEYS.search(k)} for r in _common.read_metrics(log_dir)]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    with open(os.path.join(log_dir, "policy.npz"), "rb") as f:
        digest.update(f.read())
    return digest.hexdigest()[:12]


def train_seconds(log_dir: str) -> float:
    """The loop's seconds (evaluations and start-up excluded): the last record's train_elapsed_s."""
    return float(_common.read_metrics(log_dir)[-1]["train_elapsed_s"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", help="PRESET:STEPS (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="one short round (CI)")
    opts = parser.parse_args(argv)
    runs = opts.run or DEFAULT_RUNS
    extra = []
    if opts.smoke:
        runs, opts.rounds = ["memory-chapter:300"], 1
        extra = ["--set", "n_warmup_steps=50", "--set", "n_warmup_steps_critic=50", "--set", "n_warmup_steps_actor=100"]
    paths = [p for p in memrl_isa.ISAS if p == "baseline" or
             (memrl_isa.variant_file(p, "_gru") is not None and memrl_isa.cpu_supports(p))]
    print(f"machine: {_common.machine()}; paths this machine runs: {', '.join(paths)}")
    scratch = tempfile.mkdtemp(prefix="memrl-bench-isa-")
    print(f"memrl from {_common.child_memrl(scratch)}")
    rows = []
    for spec in runs:
        name, _, steps = spec.partition(":")
        times = {p: [] for p in paths}
        digests = {p: set() for p in paths}
        for round_ in range(opts.rounds):
            for path in paths:
                log_dir = os.path.join(scratch, f"{name}-{path}")
                cmd = _common.train_command([name, "--steps", steps or "20000", "--overwrite",
                                             "--set", "evaluation_interval=100000", *extra],
                                            seed=opts.seed, log_dir=log_dir)
                env_before = _common.CHILD_ENV.get("MEMRL_ISA")
                _common.CHILD_ENV["MEMRL_ISA"] = path
                try:
                    print(f"{name} round {round_ + 1}, {path} (load {_common.load()})", flush=True)
                    _common.run_children([cmd], scratch)
                finally:
                    if env_before is None:
                        _common.CHILD_ENV.pop("MEMRL_ISA")
                    else:
                        _common.CHILD_ENV["MEMRL_ISA"] = env_before
                times[path].append(train_seconds(log_dir))
                digests[path].add(results_digest(log_dir))
        base = statistics.median(times["baseline"])
        for path in paths:
            med = statistics.median(times[path])
            same = digests[path] == digests["baseline"] and len(digests[path]) == 1
            rows.append([name, steps, path, " / ".join(f"{t:.2f}" for t in times[path]), f"{med:.2f}",
                         _common.fmt_ratio(med / base), "yes" if same else "NO"])
    shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(_common.markdown_table(["preset", "steps", "path", "training s per round", "median s", "/ baseline",
                                  "same bits as baseline"], rows))
    if any(row[-1] == "NO" for row in rows):
        raise SystemExit("bench_isa: a path computed different results from the baseline")


if __name__ == "__main__":
    main()
