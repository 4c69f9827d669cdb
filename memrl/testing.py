"""Property-testing helpers: a float64 finite-difference checker and Hypothesis strategies.

Use them to check your own compositions of memrl layers::

    from hypothesis import given
    from memrl import testing
    from memrl.nn import Dense, GRU, Sequential

    @given(testing.sequence_problems(in_dim=3, out_dim=2))
    def test_my_stack(problem):
        model = Sequential([Dense(3, 5, "relu"), GRU(5, 4), Dense(4, 2)], dtype="float64", seed=problem.seed)
        testing.check_model_gradients(model, problem.x, problem.dy, reset=problem.reset)

The strategies need ``hypothesis`` (``pip install memrl[test]``); the checker needs only NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "numerical_gradient", "assert_gradient_close", "model_loss", "check_model_gradients",
    "SequenceProblem", "dims", "float_arrays", "reset_masks", "sequence_problems", "layer_stacks",
]


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, *, eps: float = 1e-4) -> np.ndarray:
    """d f / d x by the fourth-order central stencil, entry by entry (x is float64, restored after).

    Truncation error is O(eps^4) and round-off O(1e-16 / eps): about 1e-12 at eps = 1e-4.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(f"x: expected a float64 numpy.ndarray, got {getattr(x, 'dtype', type(x).__name__)}")
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        vals = []
        for d in (2 * eps, eps, -eps, -2 * eps):
            flat[i] = orig + d
            vals.append(float(f(x)))
        flat[i] = orig
        gflat[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * eps)
    return grad


def assert_gradient_close(analytic: np.ndarray, numeric: np.ndarray, *, rtol: float = 1e-6,
                          atol: float = 1e-7, name: str = "gradient") -> None:
    """Raise AssertionError naming ``name`` and the worst entry if |a - n| > atol + rtol |n|."""
    analytic = np.asarray(analytic, np.float64)
    numeric = np.asarray(numeric, np.float64)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"{name}: shape {analytic.shape} != finite-difference shape {numeric.shape}")
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if err.size and err.max() > 0:
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(err)), err.shape))
        raise AssertionError(f"{name}: analytic {analytic[i]!r} vs finite difference {numeric[i]!r} at index {i} "
                             f"(max abs diff {np.abs(analytic - numeric).max():.3e}, atol {atol}, rtol {rtol})")


def model_loss(model, x, dy, reset=None, h0=None) -> float:
    """The scalar ``sum(forward(x) * dy)`` whose gradient ``backward(dy)`` computes."""
    return float(np.sum(model.forward(x, reset, h0) * dy))


def check_model_gradients(model, x, dy, *, reset=None, h0=None, rtol: float = 1e-6, atol: float = 1e-7,
                          eps: float = 1e-4) -> dict[str, float]:
    """Compare a float64 model's backward (parameters, input, initial states) to finite differences.

    Returns the max absolute error per checked quantity; raises AssertionError on a mismatch.
    """
    if model.dtype != np.float64:
        raise TypeError(f"model: expected a float64 model for gradient checks, got {model.dtype.name}")
    x = np.array(x, np.float64)
    dy = np.ascontiguousarray(dy, np.float64)
    h0 = None if h0 is None else [None if h is None else np.array(h, np.float64) for h in h0]
    model.zero_grad()
    model.forward(x, reset, h0)
    dx = model.backward(dy).copy()
    T, B = x.shape[:2]
    dh0 = [g.copy() for g in model.initial_state_grads(T, B)]
    grads = model.grads.copy()
    errors = {}

    def loss_params(p):
        return model_loss(model, x, dy, reset, h0)

    saved = model.params.copy()
    num = numerical_gradient(loss_params, model.params, eps=eps)
    model.params[:] = saved
    for name, view in model.named("params").items():
        s = next(sl for sl in model.slots if f"{sl.layer}.{sl.name}" == name)
        a = grads[s.offset:s.offset + s.size]
        n = num[s.offset:s.offset + s.size]
        assert_gradient_close(a, n, rtol=rtol, atol=atol, name=f"params[{name}]")
        errors[name] = float(np.abs(a - n).max()) if a.size else 0.0
    num_x = numerical_gradient(lambda v: model_loss(model, v, dy, reset, h0), x, eps=eps)
    assert_gradient_close(dx, num_x, rtol=rtol, atol=atol, name="x")
    errors["x"] = float(np.abs(dx - num_x).max()) if dx.size else 0.0
    if h0 is not None:
        for k, h in enumerate(h0):
            if h is None:
                continue

            def loss_h(v, k=k):
                states = list(h0)
                states[k] = v
                return model_loss(model, x, dy, reset, states)

            num_h = numerical_gradient(loss_h, h, eps=eps)
            assert_gradient_close(dh0[k], num_h, rtol=rtol, atol=atol, name=f"h0[{k}]")
            errors[f"h0[{k}]"] = float(np.abs(dh0[k] - num_h).max())
    return errors


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------------

def _st():
    try:
        from hypothesis import strategies as st
        from hypothesis.extra import numpy as hnp
    except ImportError as exc:  # pragma: no cover - exercised only without the test extra
        raise ImportError("memrl.testing strategies need hypothesis: pip install 'memrl[test]'") from exc
    return st, hnp


@dataclass
class SequenceProblem:
    """A drawn test case: input x (T, B, I), upstream gradient dy (T, B, O), resets (T, B), seed."""

    x: np.ndarray
    dy: np.ndarray
    reset: np.ndarray
    seed: int

    @property
    def T(self) -> int:
        return self.x.shape[0]

    @property
    def B(self) -> int:
        return self.x.shape[1]


def dims(max_T: int = 6, max_B: int = 4, max_I: int = 6, max_H: int = 6):
    """Strategy for (T, B, I, H) in [1, max] each."""
    st, _ = _st()
    return st.tuples(st.integers(1, max_T), st.integers(1, max_B), st.integers(1, max_I), st.integers(1, max_H))


def float_arrays(shape, lo: float = -1.0, hi: float = 1.0, dtype=np.float64):
    """Strategy for arrays of finite floats in [lo, hi]."""
    st, hnp = _st()
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return hnp.arrays(dtype, shape, elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=width))


def reset_masks(T: int, B: int):
    """Strategy for (T, B) bool reset masks (step 0 is a reset whatever the mask says)."""
    _, hnp = _st()
    return hnp.arrays(np.bool_, (T, B))


def sequence_problems(in_dim: int | None = None, out_dim: int | None = None, *, max_T: int = 6,
                      max_B: int = 4, max_dim: int = 6, scale: float = 1.0):
    """Strategy for :class:`SequenceProblem` with optional fixed input/output widths."""
    st, _ = _st()

    @st.composite
    def build(draw):
        T = draw(st.integers(1, max_T))
        B = draw(st.integers(1, max_B))
        I = in_dim if in_dim is not None else draw(st.integers(1, max_dim))
        O = out_dim if out_dim is not None else draw(st.integers(1, max_dim))
        x = draw(float_arrays((T, B, I), -scale, scale))
        dy = draw(float_arrays((T, B, O), -1.0, 1.0))
        reset = draw(reset_masks(T, B))
        seed = draw(st.integers(0, 2**31 - 1))
        return SequenceProblem(x, dy, reset, seed)

    return build()


def layer_stacks(in_dim: int, *, max_layers: int = 4, max_dim: int = 6,
                 activations=("identity", "relu", "tanh", "sigmoid", "fast_tanh", "fast_sigmoid"),
                 gates=("exact", "fast")):
    """Strategy for lists of Dense/GRU layers chained from ``in_dim`` (at least one GRU)."""
    st, _ = _st()
    from memrl.nn import GRU, Dense

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_layers))
        kinds = draw(st.lists(st.sampled_from(["dense", "gru"]), min_size=n, max_size=n))
        if "gru" not in kinds:
            kinds[draw(st.integers(0, n - 1))] = "gru"
        layers, width = [], in_dim
        for kind in kinds:
            out = draw(st.integers(1, max_dim))
            if kind == "dense":
                layers.append(Dense(width, out, draw(st.sampled_from(list(activations)))))
            else:
                layers.append(GRU(width, out, draw(st.sampled_from(list(gates)))))
            width = out
        return layers

    return build()
