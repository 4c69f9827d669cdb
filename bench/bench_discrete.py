"""Discrete SAC's speed: its compiled updates on a POPGym preset's networks, and the preset's loop
part by part.

    python bench/bench_discrete.py [--preset popgym-repeat-previous-easy] [--steps 3000]
                                   [--repeats 15] [--threads 1] [--smoke]

1. The compiled updates alone (float32, the preset's window of L x B, networks and environment;
   batches sampled from a replay filled by random play): microseconds per critic step (both
   critics, targets' Polyak step included) and per actor step, medians of ``--repeats``; beside
   them the continuous SAC's updates on the same windows and network sizes (one action input,
   one Q output) for scale.
2. The preset's training loop for ``--steps`` steps (``bench_training.time_run``, no evaluations):
   microseconds per step in the critic updates, the actor update, acting, the environment, the
   replay and the rest, and steps/s in each phase of the schedule.

The tables print with the machine and its 1-minute load: timings taken while other work runs are
not benchmarks. ``--smoke`` runs tiny sizes so the script cannot rot.
"""
import argparse
import sys

import _common
import numpy as np

from memrl.agent import make_agent
from memrl.config import preset
from memrl.envs import build_environment
from memrl.replay import ReplayBuffer, SequenceSampler
from memrl.sac import SAC


def filled_sampler(cfg, env, rng, n_steps):
    """A sampler over a replay of ``n_steps`` random transitions of ``env``."""
    buffer = ReplayBuffer(n_steps + 1, env.observation_dim, env.action_dim, max_episode_length=env.episode_step_limit)
    obs, _ = env.reset(seed=0)
    nvec = getattr(env, "action_nvec", None)
    for _ in range(n_steps):
        if nvec is None:
            action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        else:
            action = np.array([rng.integers(n) for n in nvec], np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(0, obs, action, reward, next_obs, terminated, terminated or truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return [SequenceSampler(buffer, cfg.sequence_length, cfg.batch_size, cfg.sampling) for _ in range(3)]


def time_updates(agent, samplers, rng, repeats):
    """Median seconds per critic step and per actor step of ``agent`` bound to these samplers."""
    batches = [s.sample(rng) for s in samplers]
    noise = [rng.standard_normal(agent.noise_shape(batches[0], target=True)).astype(np.float32) for _ in range(2)]
    actor_noise = rng.standard_normal(agent.noise_shape(batches[0], target=False)).astype(np.float32)
    agent.bind(batches[:2], noise, batches[2], actor_noise)
    critic = _common.median_time(lambda: agent.update_critics(True), repeats=repeats, inner=5)
    actor = _common.median_time(agent.update_actor, repeats=repeats, inner=5)
    return critic, actor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="popgym-repeat-previous-easy")
    parser.add_argument("--steps", type=int, default=3000, help="loop steps timed in part 2")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, choices=(1, 2))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args(argv)
    cfg = preset(args.preset).replace(threads=args.threads)
    if args.smoke:
        cfg = cfg.replace(sequence_length=4, batch_size=2, actor_hidden_dim=4, critic_hidden_dim=4,
                          n_warmup_steps=50, n_warmup_steps_critic=50, n_warmup_steps_actor=100)
        args.steps, args.repeats = 200, 3
    print(f"Machine: {_common.machine()}; load {_common.load()} at the start")
    print(f"Preset {args.preset}: {cfg.environment}, window {cfg.sequence_length} x {cfg.batch_size}, "
          f"{cfg.actor_hidden_dim} units, {cfg.actor_num_layers} layers, threads {cfg.threads}\n")

    # 1. the compiled updates alone
    rng = np.random.default_rng(0)
    env = build_environment(cfg, 0)
    samplers = filled_sampler(cfg, env, rng, max(5 * cfg.sequence_length, 2000 if not args.smoke else 200))
    agent = make_agent(cfg, env, 0)
    rows = []
    critic, actor = time_updates(agent, samplers, rng, args.repeats)
    name = type(agent).__name__
    shapes = f"O={agent.observation_dim}, actor out {agent.actor.out_dim}, critic out {agent.critics[0].out_dim}"
    rows.append([name, shapes, _common.fmt_time(critic), _common.fmt_time(actor)])
    if name == "DiscreteSAC":
        # continuous SAC on the same windows (one action column), for scale
        sac = SAC(cfg.replace(mask_non_terminal=True), env.observation_dim, 1, 0)
        for s in samplers:
            s.batch.actions[...] = 0  # any valid continuous action
        c2, a2 = time_updates(sac, samplers, rng, args.repeats)
        rows.append(["SAC (continuous, same sizes)", f"O={env.observation_dim}, actor out 2, critic in O+1, out 1",
                     _common.fmt_time(c2), _common.fmt_time(a2)])
    print(_common.markdown_table(["agent", "networks", "critic step (both critics)", "actor step"], rows))
    print()

    # 2. the loop, part by part
    import bench_training

    result = bench_training.time_run(cfg.replace(total_steps=args.steps), seed=1)
    per = result["per_step"]
    total = sum(per.values())
    table = [[part, f"{per.get(part, 0.0):.0f}"] for part in bench_training.PARTS] + [["total", f"{total:.0f}"]]
    print(_common.markdown_table([f"{args.preset}, {args.steps} steps", "us/step"], table))
    print()
    print(_common.markdown_table(["phase", "steps/s"],
                                 [[p, f"{r:.0f}"] for p, r in result["rates"].items()]))
    print(f"\nLoad {_common.load()} at the end.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
