"""The memory chapter's training loop, timed phase by phase (no evaluations).

    python bench/bench_chapter.py [--steps 20000] [--seed 1] [--threads 2] [--reference] [--smoke]

Prints steps/s in each phase of the chapter's schedule (random warm-up, critics only, critics +
actor), milliseconds per critic update and per actor update, the share of wall time spent inside
compiled calls (updates, acting, batch gathering) against Python, total wall time and peak
resident memory. ``--reference`` runs the NumPy reference updates instead of the fused kernels
(the same numbers, bit for bit, only slower) for a before/after comparison in one run.
"""
import argparse
import resource
import sys
import time

import _common

from memrl.config import preset
from memrl.loop import Trainer


class Timer:
    """Wraps a callable and accumulates its wall time and call count."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2))
    parser.add_argument("--reference", action="store_true", help="NumPy reference updates instead of the kernels")
    parser.add_argument("--smoke", action="store_true", help="a tiny run for CI")
    args = parser.parse_args(argv)
    cfg = preset("memory-chapter").replace(total_steps=args.steps, fused=not args.reference, threads=args.threads)
    if args.smoke:
        cfg = cfg.replace(total_steps=400, n_warmup_steps=100, n_warmup_steps_critic=100, n_warmup_steps_actor=200,
                          environment_kwargs={**cfg.environment_kwargs, "episode_step_limit": 150})
    trainer = Trainer(cfg, seed=args.seed)
    agent = trainer.agent
    timers = {}
    for name in (("update_critics_fused", "update_actor_fused") if cfg.fused else ("update_critic", "update_actor")):
        timers[name] = Timer(getattr(agent, name))
        setattr(agent, name, timers[name])
    timers["act"] = Timer(agent.act)
    agent.act = timers["act"]
    for i, sampler in enumerate(trainer.samplers):
        timers[f"sample{i}"] = Timer(sampler._gatherer.gather)
        sampler._gatherer = type("G", (), {"gather": timers[f"sample{i}"]})()

    phases = [("random warm-up", min(cfg.n_warmup_steps, cfg.total_steps)),
              ("critics only", min(cfg.n_warmup_steps_actor, cfg.total_steps)),
              ("critics + actor", cfg.total_steps)]
    print(f"# {_common.machine()}; {'reference (NumPy)' if args.reference else 'fused kernels'}, "
          f"{args.threads} thread(s) for the critic updates, seed {args.seed}")
    print(f"{'phase':<16} {'steps':>7} {'seconds':>8} {'steps/s':>9}")
    start = time.perf_counter()
    for name, end in phases:
        t0, s0 = time.perf_counter(), trainer.step_count
        while trainer.step_count < end:
            trainer.step()
        dt = time.perf_counter() - t0
        n = trainer.step_count - s0
        if n:
            print(f"{name:<16} {n:>7} {dt:>8.2f} {n / dt:>9.0f}")
    wall = time.perf_counter() - start
    critic = timers.get("update_critics_fused") or timers.get("update_critic")
    actor = timers.get("update_actor_fused") or timers.get("update_actor")
    critic_updates = critic.calls * (2 if cfg.fused else 1)
    compiled = sum(t.seconds for t in timers.values())
    print(f"critic update: {1e3 * critic.seconds / max(critic_updates, 1):.3f} ms each "
          f"({critic_updates} updates{', two at a time' if cfg.fused and args.threads == 2 else ''})")
    print(f"actor update:  {1e3 * actor.seconds / max(actor.calls, 1):.3f} ms each ({actor.calls} updates)")
    print(f"acting:        {1e6 * timers['act'].seconds / max(timers['act'].calls, 1):.1f} us per step")
    print(f"time in compiled calls {100 * compiled / wall:.0f}%, in Python {100 * (1 - compiled / wall):.0f}%")
    print(f"total {wall:.2f} s for {trainer.step_count} steps ({trainer.step_count / wall:.0f} steps/s); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
