"""Tanh-Gaussian head: formula, deterministic mode, exact gradient, clamp."""
import numpy as np
from hypothesis import assume, given, strategies as st

from memrl import testing
from memrl.nn import TanhGaussianHead
from helpers import tanh_gaussian


@st.composite
def head_cases(draw):
    N = draw(st.integers(1, 5))
    A = draw(st.integers(1, 3))
    pre = draw(testing.float_arrays((N, 2 * A), -2.5, 2.5))
    eps = draw(st.one_of(st.none(), testing.float_arrays((N, A), -2, 2)))
    da = draw(testing.float_arrays((N, A)))
    dlogp = draw(testing.float_arrays((N,)))
    return pre, eps, da, dlogp


@given(head_cases())
def test_head_forward_matches_formula(case):
    pre, eps, _, _ = case
    head = TanhGaussianHead(pre.shape[1] // 2, dtype=np.float64)
    a, logp = head.forward(pre, eps)
    ra, rlogp = tanh_gaussian(pre, eps, -20.0, 2.0)
    np.testing.assert_allclose(a, ra, rtol=1e-13, atol=1e-14)
    # cosh and exp differ from NumPy's by an ulp or so; ln(sech(u)^2 + 1e-6) passes that on (rtol 1e-9 is loose)
    np.testing.assert_allclose(logp, rlogp, rtol=1e-9, atol=1e-9)


@given(head_cases())
def test_head_backward_matches_finite_differences(case):
    pre, eps, da, dlogp = case
    A = pre.shape[1] // 2
    assume(np.all(np.abs(pre[:, A:] - 2.0) > 1e-3))  # not on the clamp's kink
    head = TanhGaussianHead(A, dtype=np.float64)
    head.forward(pre, eps)
    dpre = head.backward(da, dlogp).copy()

    def loss(p):
        a, logp = head.forward(p, eps)
        return float((a * da).sum() + (logp * dlogp).sum())

    numeric = testing.numerical_gradient(loss, pre.copy(), eps=1e-5)
    testing.assert_gradient_close(dpre, numeric, rtol=1e-6, atol=1e-7, name="dpre")


def test_log_std_gradient_is_zero_where_clamped():
    head = TanhGaussianHead(1, dtype=np.float64)
    pre = np.array([[0.1, 3.0], [0.1, -25.0], [0.1, 0.0]])
    eps = np.array([[0.5], [0.5], [0.5]])
    head.forward(pre, eps)
    dpre = head.backward(np.ones((3, 1)), np.ones(3))
    assert dpre[0, 1] == 0 and dpre[1, 1] == 0 and dpre[2, 1] != 0


def test_deterministic_mode_is_tanh_of_mean():
    head = TanhGaussianHead(2, dtype=np.float32)
    pre = np.array([[0.3, -0.7, 1.0, 5.0]], np.float32)
    a, _ = head.forward(pre, None)
    np.testing.assert_allclose(a, np.tanh(pre[:, :2]), rtol=1e-6)
