"""Adam and Polyak kernels against their formulas on random buffers; the learning-rate schedule."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from memrl._core import _adam
from memrl.optim import AdamConfig
from helpers import adam_reference


@given(st.integers(1, 50), st.integers(1, 100), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([0.0, 1e-7]), st.sampled_from([0.0, 0.01]), st.sampled_from([0.0, 0.5]),
       st.sampled_from([1.0, 2.0]), st.integers(0, 10**6))
def test_adam_matches_formula(n, t, dtype, floor, wd, clip, f, seed):
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m = (rng.standard_normal(n) * 0.1).astype(dtype)
    v = (rng.random(n) * 0.1).astype(dtype)
    is_bias = (rng.random(n) < 0.3).astype(np.uint8)
    want = adam_reference(p, g, m, v, t, 1e-3, 0.9, 0.999, 1e-7, floor, wd, clip, is_bias, f)
    _adam.adam_step(p, g, m, v, t, 1e-3, 0.9, 0.999, 1e-7, floor, wd, clip, is_bias, f)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for got, w in zip((p, m, v), want):
        np.testing.assert_allclose(got, w, rtol=tol, atol=tol)


def test_rltools_floor_changes_small_second_moments():
    p = np.zeros(1)
    g = np.array([1e-6])
    m, v = np.zeros(1), np.zeros(1)
    _adam.adam_step(p, g, m, v, 1, 1.0, 0.9, 0.999, 1e-7, 1e-7)
    # v_hat = 1e-12 is floored at 1e-7: step = 1e-6 / (sqrt(1e-7) + 1e-7)
    np.testing.assert_allclose(p, -1e-6 / (np.sqrt(1e-7) + 1e-7), rtol=1e-12)


def test_polyak_matches_formula():
    rng = np.random.default_rng(0)
    target, source = rng.standard_normal(100), rng.standard_normal(100)
    want = 0.995 * target + 0.005 * source
    _adam.polyak(target, source, 0.005)
    np.testing.assert_allclose(target, want, rtol=1e-15)
    with pytest.raises(ValueError, match="tau"):
        _adam.polyak(target, source, 1.5)


def test_adam_config_presets_and_validation():
    assert AdamConfig.tensorflow().eps == 1e-7 and AdamConfig.pytorch().eps == 1e-8
    assert AdamConfig.rltools().v_hat_floor == 1e-7
    with pytest.raises(ValueError, match="optimizer.lr"):
        AdamConfig(lr=-1.0)
    with pytest.raises(ValueError, match="optimizer.beta1"):
        AdamConfig(beta1=1.0)


def test_linear_learning_rate_schedule():
    """``lr_at``: ``lr`` at step 0, ``final_lr`` from ``decay_steps`` on (exactly), linear between;
    a constant rate without ``final_lr``."""
    config = AdamConfig(lr=1e-3, final_lr=1e-4, decay_steps=20_000)
    assert config.scheduled and not AdamConfig().scheduled
    assert config.lr_at(0) == 1e-3
    assert config.lr_at(20_000) == 1e-4 and config.lr_at(50_000) == 1e-4
    assert math.isclose(config.lr_at(5_000), 1e-3 - 0.25 * 9e-4, rel_tol=1e-15)
    assert AdamConfig(lr=3e-4).lr_at(10**6) == 3e-4
    assert AdamConfig(lr=1e-3, final_lr=0.0, decay_steps=10).lr_at(10) == 0.0


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(decay_steps=100), "optimizer.decay_steps: only with a final_lr"),
    (dict(final_lr=1e-4), "optimizer.decay_steps: expected an integer >= 1"),
    (dict(final_lr=-1e-4, decay_steps=10), "optimizer.final_lr"),
    (dict(final_lr=float("nan"), decay_steps=10), "optimizer.final_lr"),
])
def test_learning_rate_schedule_validation(kwargs, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment):
        AdamConfig(**kwargs)


def test_engine_optimizer_learning_rate_is_settable_and_checked():
    from memrl._core import _update

    n = 3
    opt = _update.Optimizer(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), None, lr=1e-3, beta1=0.9,
                            beta2=0.999, eps=1e-7, v_hat_floor=0.0, weight_decay=0.0, clip=0.0, bias_lr_factor=1.0)
    assert opt.lr == 1e-3
    opt.lr = 2.5e-4
    assert opt.lr == 2.5e-4
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
            opt.lr = bad
    assert opt.lr == 2.5e-4
