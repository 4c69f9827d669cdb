"""The README's whole-loop table: a preset's training loop timed part by part (no evaluations).

    python bench/bench_training.py [--run PRESET[@ENV] ...] [--steps 20000] [--repeats 1] [--seed 1]
                                   [--threads 2] [--no-reference] [--smoke]

For each run (default: the README's ``memory-chapter`` and ``pendulum-sac@gymnasium:Pendulum-v1``,
i.e. the preset on Gymnasium's own Pendulum) runs the loop with the compiled updates and then, as
the baseline measured in the same process, with the same updates written in NumPy over memrl's
networks (``numpy_updates.py``: the same numbers to float32 rounding), and prints one Markdown table with a column for each: the time per
step spent in the critic updates, the actor update, acting, the environment, the replay (adding
and sampling) and the rest (Python glue), the total, the speed-up of the compiled loop, and a
fixed matrix product timed before and after the column's runs (if the two differ, the machine's
speed drifted meanwhile). A second table gives steps/s in each phase of the schedule (random
warm-up, critics only, critics + actor). With ``--repeats R`` each is run R times and medians are
printed.
"""
import argparse
import resource
import statistics
import sys
import time

import _common
import numpy_updates

from memrl.config import preset
from memrl.loop import Trainer


class Timed:
    """Accumulates the wall time and calls of a callable it stands in for."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


class _TimedActing:
    """Stands in for the trainer's compiled acting step (a C object whose methods cannot be patched)."""

    def __init__(self, acting):
        self.run = Timed(acting.run)


def time_run(cfg, seed, numpy_baseline=False):
    """One run of ``cfg`` (with the NumPy updates if ``numpy_baseline``); returns per-phase
    steps/s and per-part microseconds per step."""
    trainer = Trainer(cfg, seed=seed)
    if numpy_baseline:
        numpy_updates.install(trainer)
    agent = trainer.agent
    parts = {}

    def patch(owner, name, part):
        timed = Timed(getattr(owner, name))
        setattr(owner, name, timed)
        parts.setdefault(part, []).append(timed)

    for name in ("update_critics", "update_targets"):
        patch(agent, name, "critic updates")
    patch(agent, "update_actor", "actor update")
    trainer._acting = _TimedActing(trainer._acting)
    parts["acting"] = [trainer._acting.run]
    for env in trainer.envs:
        patch(env, "step", "environment")
        patch(env, "reset", "environment")
    patch(trainer.buffer, "add", "replay")
    for sampler in trainer.samplers:
        patch(sampler, "sample", "replay")

    phases = [("random warm-up", min(cfg.n_warmup_steps, cfg.total_steps)),
              ("critics only", min(cfg.n_warmup_steps_actor, cfg.total_steps)),
              ("critics + actor", cfg.total_steps)]
    rates = {}
    start = time.perf_counter()
    for name, end in phases:
        t0, s0 = time.perf_counter(), trainer.step_count
        while trainer.step_count < end:
            trainer.step()
        if trainer.step_count > s0:
            rates[name] = (trainer.step_count - s0) / (time.perf_counter() - t0)
    wall = time.perf_counter() - start
    per_step = {part: 1e6 * sum(t.seconds for t in timers) / trainer.step_count for part, timers in parts.items()}
    per_step["rest (Python glue)"] = 1e6 * wall / trainer.step_count - sum(per_step.values())
    return {"wall": wall, "rates": rates, "per_step": per_step}


def machine_probe() -> float:
    """Microseconds per 100x64 @ 64x64 float32 product through memrl's BLAS seam (median): the
    same fixed work at the start and the end shows how much the machine's speed drifted."""
    import numpy as np
    from memrl._core import _blas
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((100, 64), np.float32), rng.standard_normal((64, 64), np.float32)
    out = np.zeros((100, 64), np.float32)
    return 1e6 * _common.median_time(lambda: _blas.repeat(a, b, out, n=200), repeats=15) / 200


PARTS = ["critic updates", "actor update", "acting", "environment", "replay", "rest (Python glue)"]
PHASES = ["random warm-up", "critics only", "critics + actor"]


def median_of(runs, get):
    return statistics.median(get(r) for r in runs)


def column(cfg, seed, repeats, numpy_baseline=False):
    """Median per-part us/step, wall time and phase rates of ``repeats`` runs of ``cfg``, with
    the machine probe before and after."""
    before = machine_probe()
    runs = [time_run(cfg, seed, numpy_baseline) for _ in range(repeats)]
    after = machine_probe()
    return {"per_step": {p: median_of(runs, lambda r: r["per_step"].get(p, 0.0)) for p in PARTS},
            "wall": median_of(runs, lambda r: r["wall"]),
            "rates": {p: median_of(runs, lambda r: r["rates"][p]) for p in PHASES if p in runs[0]["rates"]},
            "probe": (before, after)}


def parse_run(text):
    """'PRESET' or 'PRESET@ENV' -> (preset, env or None, column title)."""
    name, _, env = text.partition("@")
    if not name or (_ and not env):
        raise ValueError(f"--run: expected PRESET or PRESET@ENV, got {text!r}")
    if not env:
        return name, None, name
    title = f"{name} on Gymnasium" if env.startswith("gymnasium:") else f"{name} on {env}"
    return name, env, title


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=None, metavar="PRESET[@ENV]",
                        help="a preset, optionally on another environment (repeatable; default: memory-chapter "
                             "and pendulum-sac@gymnasium:Pendulum-v1)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy baseline")
    parser.add_argument("--smoke", action="store_true", help="tiny runs for CI")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats: expected positive integers")
    if args.smoke:
        runs = args.run or ["memory-chapter", "pendulum-sac@pendulum"]
    else:
        runs = args.run or ["memory-chapter", "pendulum-sac@gymnasium:Pendulum-v1"]
    try:
        runs = [parse_run(r) for r in runs]
    except ValueError as exc:
        parser.error(str(exc))
    print(f"# {_common.machine()}; load average {_common.load()}; {args.steps if not args.smoke else 400} steps, "
          f"{args.threads} thread(s), seed {args.seed}, median of {args.repeats}")
    titles, columns, speedups, replay_batches = [], [], [], set()
    for name, env, title in runs:
        cfg = preset(name).replace(total_steps=args.steps, threads=args.threads)
        if env is not None:
            cfg = cfg.replace(environment=env, environment_kwargs={})
        if args.smoke:
            cfg = cfg.replace(total_steps=400, n_warmup_steps=100, n_warmup_steps_critic=100, n_warmup_steps_actor=200)
            if cfg.environment == "memory":
                cfg = cfg.replace(environment_kwargs={**cfg.environment_kwargs, "episode_step_limit": 150})
        replay_batches.add(1 if cfg.shared_batch else 3)
        compiled = column(cfg, args.seed, args.repeats)
        titles.append(f"{title}, compiled")
        columns.append(compiled)
        speedups.append(None)
        if not args.no_reference:
            reference = column(cfg, args.seed, args.repeats, numpy_baseline=True)
            titles.append(f"{title}, NumPy")
            columns.append(reference)
            speedups[-1] = reference["wall"] / compiled["wall"]
            speedups.append(None)
    batches = f"{replay_batches.pop()} batches" if len(replay_batches) == 1 else "batches"
    labels = {"critic updates": "critic updates (both)", "replay": f"replay (add + {batches})"}
    rows = [[labels.get(part, part)] + [f"{c['per_step'][part]:.1f}" for c in columns] for part in PARTS]
    rows.append(["total"] + [f"{c['wall']:.2f} s" for c in columns])
    if not args.no_reference:
        rows.append(["speed-up"] + [_common.fmt_ratio(s) if s else "" for s in speedups])
    rows.append(["machine probe before / after (us)"] + [f"{c['probe'][0]:.2f} / {c['probe'][1]:.2f}" for c in columns])
    print(_common.markdown_table(["per step (us)"] + titles, rows))
    print()
    rates = [[phase] + [f"{c['rates'][phase]:.0f}" if phase in c["rates"] else "" for c in columns] for phase in PHASES]
    print(_common.markdown_table(["steps/s"] + titles, rates))
    print(f"# machine probe: one 100x64 @ 64x64 float32 product through memrl's BLAS seam (median); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
