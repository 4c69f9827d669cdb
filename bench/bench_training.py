"""A preset's training loop, timed phase by phase and part by part (no evaluations).

    python bench/bench_training.py [--preset memory-chapter] [--env ENV] [--steps N] [--seed 1]
                                   [--threads 2] [--repeats 1] [--no-reference] [--smoke]

Runs the loop with the compiled updates and then, as the baseline measured in the same run, with
the NumPy reference updates (the same numbers, bit for bit, only slower), and prints for each:
steps/s in each phase of the schedule (random warm-up, critics only, critics + actor), the time
per step spent in the critic updates, the actor update, acting, the environment, the replay
(adding and sampling) and the rest (Python glue), and the speed-up of the compiled loop. With
``--repeats R`` each is run R times and medians are printed. ``--env gymnasium:Pendulum-v1``
times the feed-forward presets on Gymnasium's own Pendulum. A fixed matrix product timed before and
after shows whether the machine's speed drifted during the run.
"""
import argparse
import resource
import statistics
import sys
import time

import _common

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


def time_run(cfg, seed):
    """One run of ``cfg``; returns per-phase steps/s and per-part microseconds per step."""
    trainer = Trainer(cfg, seed=seed)
    agent = trainer.agent
    parts = {}

    def patch(owner, name, part):
        timed = Timed(getattr(owner, name))
        setattr(owner, name, timed)
        parts.setdefault(part, []).append(timed)

    fused = trainer.fused
    for name in (("update_critics_fused", "update_targets") if fused else ("update_critic", "update_targets")):
        patch(agent, name, "critic updates")
    patch(agent, "update_actor_fused" if fused else "update_actor", "actor update")
    if trainer._acting is not None:
        trainer._acting = _TimedActing(trainer._acting)
        parts["acting"] = [trainer._acting.run]
    patch(agent, "act", "acting")
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


def median_of(runs, get):
    values = [get(r) for r in runs]
    return statistics.median(values)


def report(label, runs):
    print(f"\n## {label} (median of {len(runs)})")
    print(f"{'phase':<18} {'steps/s':>9}")
    for phase in runs[0]["rates"]:
        print(f"{phase:<18} {median_of(runs, lambda r: r['rates'][phase]):>9.0f}")
    print(f"{'part':<20} {'us/step':>8}")
    for part in runs[0]["per_step"]:
        print(f"{part:<20} {median_of(runs, lambda r: r['per_step'][part]):>8.1f}")
    wall = median_of(runs, lambda r: r["wall"])
    print(f"total {wall:.2f} s")
    return wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="memory-chapter")
    parser.add_argument("--env", default=None, help="e.g. gymnasium:Pendulum-v1 (default: the preset's)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy reference baseline")
    parser.add_argument("--smoke", action="store_true", help="a tiny run for CI")
    args = parser.parse_args(argv)
    cfg = preset(args.preset).replace(total_steps=args.steps, threads=args.threads)
    if args.env is not None:
        cfg = cfg.replace(environment=args.env, environment_kwargs={})
    if args.smoke:
        cfg = cfg.replace(total_steps=400, n_warmup_steps=100, n_warmup_steps_critic=100, n_warmup_steps_actor=200)
        if cfg.environment == "memory":
            cfg = cfg.replace(environment_kwargs={**cfg.environment_kwargs, "episode_step_limit": 150})
    print(f"# {_common.machine()}; preset {args.preset}, environment {cfg.environment}, {cfg.total_steps} steps, "
          f"{args.threads} thread(s), seed {args.seed}")
    probe_start = machine_probe()
    fused = report("compiled updates", [time_run(cfg, args.seed) for _ in range(args.repeats)])
    if not args.no_reference:
        reference = report("NumPy reference updates (baseline)",
                           [time_run(cfg.replace(fused=False), args.seed) for _ in range(args.repeats)])
        print(f"\nspeed-up of the compiled loop over the reference: {reference / fused:.2f}x")
    print(f"machine probe (100x64 @ 64x64 sgemm): {probe_start:.2f} us before, {machine_probe():.2f} us after")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
