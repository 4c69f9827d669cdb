"""Property-testing helpers: a float64 finite-difference checker and Hypothesis strategies.

Use them to check your own compositions of memrl layers::

    from hypothesis import given
    from memrl import testing
    from memrl.nn import Dense, GRU, Sequential

    @given(testing.sequence_problems(in_dim=3, out_dim=2))
    def test_my_stack(problem):
        model = Sequential([Dense(3, 5, "relu"), GRU(5, 4), Dense(4, 2)], dtype="float64", seed=problem.seed)
        testing.check_model_gradients(model, problem.x, problem.dy, reset=problem.reset)

The checker never reports a correct gradient as wrong because a kink (ReLU at 0, a clip)
falls inside its finite-difference stencil: an entry that disagrees with the first stencil is
re-examined with smaller and one-sided stencils, and only reported if none of them agrees at two
consecutive step sizes (see :func:`check_gradient` for why this cannot pass a wrong gradient).

The strategies need ``hypothesis`` (``pip install memrl[test]``); the checker needs only NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from memrl._core import ACTIVATIONS

__all__ = [
    "STENCILS", "numerical_gradient", "assert_gradient_close", "check_gradient", "model_loss",
    "check_model_gradients",
    "SequenceProblem", "dims", "float_arrays", "reset_masks", "sequence_problems", "layer_stacks",
]


# Finite-difference stencils for f'(x): sum_k w_k f(x + o_k h) / (12 h), all fourth order.
# central (Fornberg 1988, Table 1) and the one-sided forward/backward five-point formulas.
STENCILS = {
    "central": ((2, 1, -1, -2), (-1.0, 8.0, -8.0, 1.0)),
    "forward": ((0, 1, 2, 3, 4), (-25.0, 48.0, -36.0, 16.0, -3.0)),
    "backward": ((0, -1, -2, -3, -4), (25.0, -48.0, 36.0, -16.0, 3.0)),
}
# Rounding allowed per evaluation of the loss in a retry, in units of eps64 times the loss's scale.
NOISE_ULPS = 16.0
EPS64 = float(np.finfo(np.float64).eps)


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, *, eps: float = 1e-4,
                       stencil: str = "central") -> np.ndarray:
    """d f / d x by a fourth-order stencil, entry by entry (x is float64, perturbed in place, restored).

    ``stencil`` "central" (points x +- eps, x +- 2 eps) or "forward"/"backward" (x, x +- eps, ...,
    x +- 4 eps; they see only one side of x). Truncation error is O(eps^4), round-off
    O(1e-16 |f| / eps): about 1e-12 at eps = 1e-4 for the central stencil. Raises TypeError if x
    is not a float64 array, ValueError for an unknown stencil.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(f"x: expected a float64 numpy.ndarray, got {getattr(x, 'dtype', type(x).__name__)}")
    if stencil not in STENCILS:
        raise ValueError(f"stencil: expected one of {sorted(STENCILS)}, got {stencil!r}")
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        gflat[i] = _stencil(f, x, flat, i, eps, stencil)[0]
    return grad


def _stencil(f, x, flat, i, h, stencil):
    """(derivative estimate, max |f| seen) at flat[i] with step h; flat[i] is restored."""
    orig = flat[i]
    offsets, weights = STENCILS[stencil]
    total, biggest = 0.0, 0.0
    try:
        for o, w in zip(offsets, weights):
            flat[i] = orig + o * h
            v = float(f(x))
            total += w * v
            biggest = max(biggest, abs(v))
    finally:
        flat[i] = orig
    return total / (12.0 * h), biggest


def assert_gradient_close(analytic: np.ndarray, numeric: np.ndarray, *, rtol: float = 1e-6,
                          atol: float = 1e-7, name: str = "gradient") -> None:
    """Raise AssertionError naming ``name`` and the worst entry if |a - n| > atol + rtol |n|.

    A single comparison: use :func:`check_gradient` for functions that may have kinks.
    """
    analytic = np.asarray(analytic, np.float64)
    numeric = np.asarray(numeric, np.float64)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"{name}: shape {analytic.shape} != finite-difference shape {numeric.shape}")
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if err.size and err.max() > 0:
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(err)), err.shape))
        raise AssertionError(f"{name}: analytic {analytic[i]!r} vs finite difference {numeric[i]!r} at index {i} "
                             f"(max abs diff {np.abs(analytic - numeric).max():.3e}, atol {atol}, rtol {rtol})")


def check_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, analytic: np.ndarray, *,
                   name: str = "gradient", rtol: float = 1e-6, atol: float = 1e-7, eps: float = 1e-4,
                   refinements: int = 3, scale: float | None = None) -> float:
    """Check ``analytic`` = d f / d x (float64 x, same shape) against finite differences, kinks allowed.

    Every entry is first compared with the central stencil at ``eps``: it passes if
    |a - n| <= atol + rtol |n|. An entry that disagrees is re-examined before it is reported,
    because a kink of f (ReLU at 0, a clip) within 2 eps of x makes that stencil wrong, not the
    gradient. (``fast_tanh``'s clamp at +-3 is a kink of its third derivative only, f' and f''
    vanish there from inside, so it moves the stencil by about 1e-11: harmless.) The entry passes if, for one stencil family
    (central at eps/10, eps/100, ...; forward or backward one-sided at eps, eps/10, ...; down to
    eps / 10**refinements, 1e-7 by default), the estimates at TWO consecutive step sizes h and
    h/10 both agree with it, within atol + rtol |n| + the round-off bound
    (sum |w_k| / 12) * NOISE_ULPS * eps64 * scale / h of that stencil (``scale``: the loss's
    magnitude, e.g. the sum of |terms|; default the largest |f| the stencil evaluated; the
    rounding measured on GRU stacks was under 1% of this bound).

    Why this cannot pass a wrong gradient: where f is smooth along the entry's coordinate on
    [x - 4h, x + 4h] every stencil converges to the true derivative (error O(h^4) + round-off
    O(1/h)), so a wrong analytic value disagrees with all of them. With a kink at distance d from
    x, the central stencils with 2h < d and the one-sided stencil pointing away from the kink
    (any h) still see a smooth function and give the true derivative, which again a wrong value
    misses; the only stencils that can land near a wrong value are those straddling the kink,
    whose estimates mix the two slopes in proportions that change with d/h, so they do not give
    the same wrong value at h and at h/10 (this is why two consecutive step sizes are required).
    Exactly on a kink the derivative does not exist; the analytic value then passes if it equals
    a one-sided derivative (the kernels take ReLU's left one, 0 at 0), which the matching
    one-sided family computes exactly, or the central stencils' value there (the mean of the two
    slopes for a ReLU): both are valid subgradients. What is not covered: kinks on BOTH sides of
    x closer than 4h at every retried step size (both within about 4e-6 of x, in units of that
    entry, at the defaults): for data drawn from a continuous distribution that needs two
    pre-activations that close to their kinks at once.

    Returns the largest |analytic - accepted estimate|; raises AssertionError naming ``name``,
    the entry's index, the analytic value and the estimates, and TypeError/ValueError for bad
    arguments.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(f"x: expected a float64 numpy.ndarray, got {getattr(x, 'dtype', type(x).__name__)}")
    analytic = np.asarray(analytic, np.float64)
    if analytic.shape != x.shape:
        raise ValueError(f"analytic: expected shape {x.shape} (that of x), got {analytic.shape}")
    numeric = numerical_gradient(f, x, eps=eps)
    return _check_entries(f, x, np.arange(x.size), analytic.reshape(-1), numeric.reshape(-1), x.shape, name,
                          rtol=rtol, atol=atol, eps=eps, refinements=refinements, scale=scale)


def _check_entries(f, x, positions, analytic, numeric, shape, name, *, rtol, atol, eps, refinements, scale):
    """The comparison of :func:`check_gradient` for flat entries ``positions`` of x (see there)."""
    if isinstance(refinements, bool) or not isinstance(refinements, int) or refinements < 1:
        raise ValueError(f"refinements: expected an integer >= 1, got {refinements!r}")
    if not (isinstance(eps, (int, float)) and eps > 0 and np.isfinite(eps)):
        raise ValueError(f"eps: expected a finite number > 0, got {eps!r}")
    diff = np.abs(analytic - numeric)
    worst = float(diff.max()) if diff.size else 0.0
    bad = np.flatnonzero(diff > atol + rtol * np.abs(numeric))
    if bad.size == 0:
        return worst
    flat = x.reshape(-1)
    steps = [eps / 10 ** k for k in range(refinements + 1)]
    worst = float(np.delete(diff, bad).max()) if bad.size < diff.size else 0.0
    for j in bad:
        a = float(analytic[j])
        tried = {}
        accepted = None
        for family in ("central", "forward", "backward"):
            family_steps = steps[1:] if family == "central" else steps
            weight = sum(abs(w) for w in STENCILS[family][1]) / 12.0
            agreed_before = False
            for h in family_steps:
                estimate, biggest = _stencil(f, x, flat, int(positions[j]), h, family)
                tried[(family, h)] = estimate
                noise = NOISE_ULPS * EPS64 * max(biggest, scale or 0.0)
                agrees = abs(a - estimate) <= atol + rtol * abs(estimate) + weight * noise / h
                if agrees and agreed_before:
                    accepted = estimate
                    break
                agreed_before = agrees
            if accepted is not None:
                break
        if accepted is None:
            index = tuple(int(k) for k in np.unravel_index(int(j), shape))
            others = ", ".join(f"{fam} h={h:.0e}: {v:.10g}" for (fam, h), v in tried.items())
            raise AssertionError(
                f"{name}: analytic {a!r} vs finite difference {float(numeric[j])!r} at index {index} "
                f"(atol {atol}, rtol {rtol}); no two consecutive smaller or one-sided stencils agree "
                f"with the analytic value either: {others}")
        worst = max(worst, abs(a - accepted))
    return worst


def model_loss(model, x, dy, reset=None, h0=None) -> float:
    """The scalar ``sum(forward(x) * dy)`` whose gradient ``backward(dy)`` computes."""
    return float(np.sum(model.forward(x, reset, h0) * dy))


def check_model_gradients(model, x, dy, *, reset=None, h0=None, rtol: float = 1e-6, atol: float = 1e-7,
                          eps: float = 1e-4, refinements: int = 3) -> dict[str, float]:
    """Compare a float64 model's backward (parameters, input, initial states) to finite differences.

    The loss is ``sum(forward(x, reset, h0) * dy)`` and each quantity is checked as in
    :func:`check_gradient` (kinks of ReLU and ``fast_tanh`` near the point are handled, a
    wrong entry is still reported with its name and index). ``x`` (T, B, in_dim), ``dy``
    (T, B, out_dim), ``reset`` (T, B) bool or None, ``h0`` one (B, H) array or None per GRU.
    Returns the largest |analytic - accepted estimate| per checked quantity ("0.W", ...,
    "x", "h0[k]"); raises AssertionError on a mismatch, TypeError for a float32 model.
    """
    if model.dtype != np.float64:
        raise TypeError(f"model: expected a float64 model for gradient checks, got {model.dtype.name}")
    x = np.array(x, np.float64)
    dy = np.ascontiguousarray(dy, np.float64)
    h0 = None if h0 is None else [None if h is None else np.array(h, np.float64) for h in h0]
    model.zero_grad()
    scale = float(np.sum(np.abs(model.forward(x, reset, h0) * dy)))  # round-off scale of the loss
    dx = model.backward(dy).copy()
    T, B = x.shape[:2]
    dh0 = [g.copy() for g in model.initial_state_grads(T, B)]
    grads = model.grads.copy()
    errors = {}
    options = dict(rtol=rtol, atol=atol, eps=eps, refinements=refinements, scale=scale)

    def loss_params(p):
        return model_loss(model, x, dy, reset, h0)

    saved = model.params.copy()
    try:
        num = numerical_gradient(loss_params, model.params, eps=eps)
        for s in model.slots:
            name = f"{s.layer}.{s.name}"
            span = slice(s.offset, s.offset + s.size)
            errors[name] = _check_entries(loss_params, model.params, np.arange(s.offset, s.offset + s.size),
                                          grads[span], num[span], s.shape, f"params[{name}]", **options)
    finally:
        model.params[:] = saved

    def loss_x(v):
        return model_loss(model, v, dy, reset, h0)

    errors["x"] = check_gradient(loss_x, x, dx, name="x", **options)
    if h0 is not None:
        for k, h in enumerate(h0):
            if h is None:
                continue

            def loss_h(v, k=k):
                states = list(h0)
                states[k] = v
                return model_loss(model, x, dy, reset, states)

            errors[f"h0[{k}]"] = check_gradient(loss_h, h, dh0[k], name=f"h0[{k}]", **options)
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
    """Strategy for (T, B) bool reset masks: ``reset[t, b]`` starts a new episode (zero state) at step t.

    Without ``h0`` step 0 starts from zeros whatever the mask says; with ``h0``, ``reset[0, b]``
    decides whether row b starts from ``h0[b]`` (False) or from zeros (True).
    """
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
                 activations=ACTIVATIONS,
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
