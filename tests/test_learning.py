"""Learning: training reaches a threshold (a return, a probe score, a loss), kept apart from the unit tests.

Every test here is marked ``slow`` (registered in pyproject.toml). The default ``pytest -q`` runs
them, as CI does; skip them while iterating with

    pytest -q -m "not slow"

and run only them with ``pytest -q -m slow``. A learning test never stands in for a gradient
check (a model can learn with a wrong gradient): the gradients are checked against finite
differences in test_gru.py, test_models.py, test_sac.py, test_td3.py and test_updates.py.
"""
import numpy as np
import pytest

from memrl.config import preset
from memrl.loop import train
from memrl.nn import Dense, GRU, Sequential
from memrl.optim import AdamConfig
from helpers import small_task

pytestmark = pytest.mark.slow


def test_policy_learns_to_count():
    """Horizon 3: random actions score about -350 per 100 steps and get ~1/4 probes right."""
    result = train(small_task(), seed=0, print_fn=None)
    first, last = result.evaluations[0], result.evaluations[-1]
    assert last["step"] == 4000
    assert last["probe_correct"] >= 18, result.evaluations
    assert last["mean_return"] > -120 > first["mean_return"], result.evaluations


def test_feed_forward_sac_learns_pendulum():
    """Random actions score about -1200 per episode; a few thousand steps of SAC do far better."""
    cfg = preset("pendulum-sac").replace(total_steps=5000, evaluation_interval=5000, n_evaluation_episodes=5)
    result = train(cfg, seed=1, print_fn=None)
    first, last = result.evaluations[0], result.evaluations[-1]
    assert last["mean_return"] > -600 and last["mean_return"] > first["mean_return"] + 300, result.evaluations


def test_model_adam_step_lowers_a_quadratic_loss():
    """50 Adam steps (lr 1e-2) of a Dense-GRU-Dense stack bring a squared error below a tenth of its start."""
    model = Sequential([Dense(3, 8, "tanh"), GRU(8, 4), Dense(4, 1)], dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4, 3)).astype(np.float32)
    target = np.ones((10, 4, 1), np.float32)
    opt = AdamConfig(lr=1e-2)
    losses = []
    for _ in range(50):
        y = model.forward(x)
        losses.append(float(((y - target) ** 2).mean()))
        model.zero_grad()
        model.backward((2 * (y - target) / y.size).astype(np.float32))
        model.adam_step(opt)
    assert losses[-1] < 0.1 * losses[0]
