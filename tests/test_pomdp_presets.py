"""The POMDP presets (pomdp-baselines' Pendulum-P/V and CartPole-P/V, POPGym's Easy tasks): listed
with a summary, built as their sources say, and each trains a few steps at tiny sizes."""
import importlib.util

import pytest

from memrl.config import PRESET_DOCS, PRESETS, preset

POMDP = ["pendulum-p-sac", "pendulum-p-td3", "pendulum-v-sac", "pendulum-v-td3", "cartpole-p-sac", "cartpole-v-sac"]
POPGYM = ["popgym-repeat-previous-easy", "popgym-repeat-first-easy", "popgym-position-only-cartpole-easy",
          "popgym-velocity-only-cartpole-easy", "popgym-position-only-pendulum-easy", "popgym-multiarmed-bandit-easy"]


def test_every_preset_has_a_summary_and_a_source():
    assert set(PRESET_DOCS) == set(PRESETS)
    for name, doc in PRESET_DOCS.items():
        summary, source = doc.split("\n")
        assert summary.endswith(".") and source.startswith("Source: ") and source.endswith("."), name


@pytest.mark.parametrize("name", POMDP + POPGYM)
def test_pomdp_presets_follow_their_sources(name):
    cfg = preset(name).validate()
    # pomdp-baselines' rnn configs: gamma 0.9, tau 0.005, lr 3e-4, one update per step, history inputs;
    # the pendulum presets take the feed-forward presets' gamma 0.99 and lr 1e-3, and 100 evaluation episodes;
    # the CartPole presets gamma 0.99 (500-step episodes)
    pendulum = name.startswith("pendulum-")
    assert cfg.gamma == (0.99 if pendulum or name.startswith("cartpole-") else 0.9)
    assert cfg.tau == 0.005 and cfg.recurrent
    assert cfg.sequence_length == 64 and cfg.batch_size == (32 if name.startswith("pendulum-") and
                                                            name.endswith("-sac") else 16)
    assert cfg.previous_action_input and cfg.previous_reward_input
    lr = 1e-3 if pendulum else 3e-4
    assert cfg.critic_optimizer.lr == cfg.actor_optimizer.lr == cfg.alpha_optimizer.lr == lr
    assert cfg.n_evaluation_episodes == (100 if pendulum else 10)
    assert cfg.critic_training_interval == 1
    assert cfg.mask_non_terminal and cfg.every_step_losses  # masked histories, losses at every step
    assert cfg.algorithm == ("td3" if name.endswith("td3") else "sac")


@pytest.mark.parametrize("name", POMDP + POPGYM)
def test_pomdp_presets_train(name):
    pytest.importorskip("gymnasium")
    if name.startswith("popgym") and importlib.util.find_spec("popgym") is None:
        pytest.skip("POPGym is not installed (pip install 'memrl[popgym]')")
    from memrl.loop import Trainer

    cfg = preset(name).replace(total_steps=60, n_warmup_steps=20, n_warmup_steps_critic=20, n_warmup_steps_actor=20,
                               sequence_length=4, batch_size=2, actor_hidden_dim=4, critic_hidden_dim=4, threads=1)
    trainer = Trainer(cfg, 0)
    while not trainer.step():
        pass
    assert trainer.agent.actor.adam_t > 0
    record = trainer.evaluate()
    assert record["mean_length"] > 0
