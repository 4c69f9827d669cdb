"""Dense layers and activations: finite differences, formulas, exact fast_tanh derivative."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from memrl import testing
from memrl._core import _dense
from memrl.nn import ACTIVATIONS, Dense, Sequential

KINKED = {"relu"}


@given(st.sampled_from(sorted(ACTIVATIONS)), testing.sequence_problems(), st.integers(1, 6), st.data())
def test_dense_backward_matches_finite_differences(act, problem, out_dim, data):
    I = problem.x.shape[2]
    model = Sequential([Dense(I, out_dim, act)], dtype=np.float64, seed=problem.seed)
    dy = data.draw(testing.float_arrays((problem.T, problem.B, out_dim)))
    if act in KINKED:  # finite differences are meaningless within eps of the kink
        pre = problem.x @ model.named()["0.W"].T + model.named()["0.b"]
        assume(np.abs(pre).min() > 1e-3)
    testing.check_model_gradients(model, problem.x, dy)


def test_activation_formulas():
    x = np.linspace(-8, 8, 2001)
    out = np.empty_like(x)
    expect = {
        "identity": x, "relu": np.maximum(x, 0), "tanh": np.tanh(x), "sigmoid": 1 / (1 + np.exp(-x)),
        "fast_tanh": (lambda c: c * (27 + c * c) / (27 + 9 * c * c))(np.clip(x, -3, 3)),
    }
    expect["fast_sigmoid"] = 0.5 * expect["fast_tanh"].copy() * 0 + 0.5 * (
        lambda c: c * (27 + c * c) / (27 + 9 * c * c))(np.clip(x / 2, -3, 3)) + 0.5
    for name, want in expect.items():
        _dense.activation(ACTIVATIONS[name], x, out)
        np.testing.assert_allclose(out, want, rtol=1e-15, atol=1e-15, err_msg=name)


def test_fast_tanh_properties():
    x = np.array([-10, -3, -1.5707, 0.0, 1.5707, 3.0, 10])
    out = np.empty_like(x)
    _dense.activation(ACTIVATIONS["fast_tanh"], x, out)
    assert out[0] == -1 and out[-1] == 1 and out[1] == -1 and out[5] == 1 and out[3] == 0
    assert abs(out[4] - np.tanh(x[4])) < 0.025  # RLtools' stated max error ~0.024


@pytest.mark.parametrize("name", ["fast_tanh", "fast_sigmoid", "tanh", "sigmoid", "identity"])
def test_activation_derivative_is_exact_derivative(name):
    """The backward uses the derivative of the function actually computed (central differences)."""
    x = np.linspace(-7.9, 7.9, 1581)
    x = x[np.abs(np.abs(x) - 3) > 1e-3]
    x = x[np.abs(np.abs(x) - 6) > 1e-3]
    grad = np.empty_like(x)
    _dense.activation_grad(ACTIVATIONS[name], x, grad)
    f = lambda v: (_dense.activation(ACTIVATIONS[name], v, out := np.empty_like(v)), out)[1]  # noqa: E731
    eps = 1e-6
    numeric = (f(x + eps) - f(x - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_fast_tanh_derivative_closed_form():
    x = np.linspace(-2.9, 2.9, 59)
    grad = np.empty_like(x)
    _dense.activation_grad(ACTIVATIONS["fast_tanh"], x, grad)
    np.testing.assert_allclose(grad, (x * x - 9) ** 2 / (9 * (3 + x * x) ** 2), rtol=1e-14)
    outside = np.array([-5.0, -3.0, 3.0, 5.0])
    _dense.activation_grad(ACTIVATIONS["fast_tanh"], outside, g := np.empty(4))
    assert np.all(g == 0)
