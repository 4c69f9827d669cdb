"""Every POPGym environment (``pip install 'memrl[popgym]'``) constructs and trains a few hundred
steps through ``gymnasium:popgym-<Name>-v0``, as ``--env`` sets it, with tiny networks: discrete
SAC for Discrete and MultiDiscrete actions, SAC for the pendulums; observations Box, Discrete,
MultiDiscrete and Tuples of them. Skipped without POPGym."""
import subprocess
import sys

import numpy as np
import pytest

from helpers import set_args

popgym = pytest.importorskip("popgym")
gym = pytest.importorskip("gymnasium")

POPGYM_IDS = sorted(k for k in gym.registry if k.startswith("popgym-"))


def test_the_registry_is_popgyms_48_environments():
    assert len(POPGYM_IDS) == 48


STEPS, WARMUP = 300, 100
"""Each environment runs STEPS steps: WARMUP random ones, then one update of the critics and the actor a step."""


@pytest.mark.parametrize("env_id", POPGYM_IDS)
def test_every_popgym_environment_trains(env_id):
    from memrl.__main__ import build_parser, new_run_config
    from memrl.loop import Trainer

    raw = gym.make(env_id)
    discrete = not isinstance(raw.action_space, gym.spaces.Box)
    # a SAC preset: discrete SAC for discrete actions (losses at every step), SAC for the pendulums
    name = "popgym-repeat-previous-easy" if discrete else "popgym-position-only-pendulum-easy"
    # the configuration `python -m memrl train NAME --env gymnasium:<id> ...` runs, tiny networks
    args = build_parser().parse_args(
        ["train", name, "--env", f"gymnasium:{env_id}", "--steps", str(STEPS)]
        + set_args({"n_warmup_steps": WARMUP, "n_warmup_steps_critic": WARMUP, "n_warmup_steps_actor": WARMUP,
                    "sequence_length": 4, "batch_size": 2, "actor_hidden_dim": 4, "critic_hidden_dim": 4,
                    "threads": 1, "n_evaluation_episodes": 1}))
    cfg = new_run_config(args)
    assert cfg.environment == f"gymnasium:{env_id}" and cfg.total_steps == STEPS
    trainer = Trainer(cfg, 0)
    assert (type(trainer.agent).__name__ == "DiscreteSAC") == discrete
    while not trainer.step():
        pass
    assert trainer.step_count == STEPS
    agent = trainer.agent
    assert [c.adam_t for c in agent.critics] == [STEPS - WARMUP] * 2 and agent.actor.adam_t == STEPS - WARMUP
    assert np.isfinite(agent.actor.params).all()
    stored = trainer.buffer.action[0, :STEPS]
    if discrete:
        assert (stored == np.floor(stored)).all() and (stored >= 0).all()
        assert (stored < np.array(trainer.agent.action_nvec)).all()


def test_popgym_through_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "memrl", "train", "popgym-repeat-first-easy", "--env",
                          "gymnasium:popgym-MineSweeperEasy-v0", "--steps", "150", "--set", "n_warmup_steps=50",
                          "--set", "n_warmup_steps_critic=50", "--set", "n_warmup_steps_actor=50", "--set",
                          "sequence_length=4", "--set", "batch_size=2", "--set", "threads=1", "--log-dir",
                          str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    from memrl.policy import Policy

    policy = Policy.load(tmp_path / "run" / "policy.npz")
    assert policy.action_nvec == [4, 4]
    env = gym.make("popgym-MineSweeperEasy-v0")
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert env.action_space.contains(action)
