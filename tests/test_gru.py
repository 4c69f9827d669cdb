"""GRU kernels: finite differences, resets, packing, step mode, float32 vs float64."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from memrl import testing
from memrl.nn import GRU, Dense, Sequential
from gru_reference import gru_forward
from helpers import plain_loop_products

GATES = ["exact", "fast"]


def gru_model(I, H, gates, seed, dtype=np.float64, scale=1.0):
    model = Sequential([GRU(I, H, gates)], dtype=dtype, seed=seed)
    model.params *= scale
    return model


@st.composite
def gru_cases(draw):
    T, B, I, H = draw(testing.dims())
    x = draw(testing.float_arrays((T, B, I), -2, 2))
    h0 = draw(testing.float_arrays((B, H), -1, 1))
    dy = draw(testing.float_arrays((T, B, H), -1, 1))
    reset = draw(testing.reset_masks(T, B))
    return dict(T=T, B=B, I=I, H=H, x=x, h0=h0, dy=dy, reset=reset, seed=draw(st.integers(0, 2**31 - 1)),
                gates=draw(st.sampled_from(GATES)), scale=draw(st.sampled_from([0.5, 1.0, 3.0])))


@given(gru_cases())
def test_gru_backward_matches_finite_differences(c):
    model = gru_model(c["I"], c["H"], c["gates"], c["seed"], scale=c["scale"])
    errors = testing.check_model_gradients(model, c["x"], c["dy"], reset=c["reset"], h0=[c["h0"]],
                                           rtol=1e-6, atol=1e-8)
    assert set(errors) == {"0.W_ih", "0.W_hh", "0.b_ih", "0.b_hh", "x", "h0[0]"}


@given(gru_cases())
def test_gru_forward_matches_numpy_reference(c):
    model = gru_model(c["I"], c["H"], c["gates"], c["seed"], scale=c["scale"])
    p = model.named()
    got = model.forward(c["x"], c["reset"], [c["h0"]])
    want = gru_forward(c["x"], c["h0"], p["0.W_ih"], p["0.W_hh"], p["0.b_ih"], p["0.b_hh"], c["reset"], c["gates"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("gates", GATES)
def test_reset_blocks_gradient_to_previous_step(gates):
    """A loss only at and after a reset at step 3: dL/dx at steps 0..2 is exactly zero, and the
    parameter gradient is exactly that of a fresh run on steps 3.. (the steps before add nothing)."""
    model = gru_model(2, 3, gates, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 2))
    dy = np.zeros((6, 1, 3))
    dy[3:] = rng.standard_normal((3, 1, 3))
    reset = np.zeros((6, 1), bool)
    reset[3] = True
    with plain_loop_products():  # exact sums (see helpers.plain_loop_products)
        model.zero_grad()
        model.forward(x, reset)
        dx = model.backward(dy).copy()
        grads = model.grads.copy()
        model.zero_grad()
        model.forward(np.ascontiguousarray(x[3:]))
        dx_fresh = model.backward(np.ascontiguousarray(dy[3:])).copy()
    assert np.all(dx[:3] == 0.0) and np.all(np.abs(dx[3:]) > 0.0)
    np.testing.assert_array_equal(dx[3:], dx_fresh)
    np.testing.assert_array_equal(grads, model.grads)
    model.forward(x)  # without the reset, gradient reaches earlier steps
    dx = model.backward(dy)
    assert np.abs(dx[:3]).min() > 0.0


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.sampled_from(GATES), st.integers(0, 1000))
def test_packed_sequences_with_resets_equal_separate_runs_exactly(n_seq, length, H, gates, seed):
    """Segments concatenated along time with resets give exactly the separate results (float64)."""
    with plain_loop_products():
        check_packed_equals_separate(n_seq, length, H, gates, seed, exact=True)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.sampled_from(GATES), st.integers(0, 1000))
def test_packed_sequences_with_resets_equal_separate_runs_with_blas(n_seq, length, H, gates, seed):
    check_packed_equals_separate(n_seq, length, H, gates, seed, exact=False)


def check_packed_equals_separate(n_seq, length, H, gates, seed, exact):
    I, B = 2, 2
    rng = np.random.default_rng(seed)
    model = gru_model(I, H, gates, seed)
    segments = [rng.standard_normal((length + k, B, I)) for k in range(n_seq)]
    dys = [rng.standard_normal((s.shape[0], B, H)) for s in segments]
    separate_y, separate_dx, separate_grads = [], [], np.zeros(model.size)
    for s, d in zip(segments, dys):
        model.zero_grad()
        separate_y.append(model.forward(s).copy())
        separate_dx.append(model.backward(d).copy())
        separate_grads += model.grads
    x = np.concatenate(segments)
    reset = np.zeros(x.shape[:2], bool)
    start = 0
    for s in segments:
        reset[start] = True
        start += s.shape[0]
    model.zero_grad()
    y = model.forward(x, reset)
    dx = model.backward(np.concatenate(dys))
    if exact:
        np.testing.assert_array_equal(y, np.concatenate(separate_y))
        np.testing.assert_array_equal(dx, np.concatenate(separate_dx))
    else:
        np.testing.assert_allclose(y, np.concatenate(separate_y), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dx, np.concatenate(separate_dx), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(model.grads, separate_grads, rtol=1e-12, atol=1e-13)


@given(gru_cases(), st.booleans())
def test_step_mode_equals_full_sequence(c, with_h0):
    """A loop of step from a copy of h0, passing reset[t] (step 0 included), is forward."""
    model = Sequential([GRU(c["I"], c["H"], c["gates"]), GRU(c["H"], 3, c["gates"])], dtype=np.float64, seed=c["seed"])
    h0 = [c["h0"], np.linspace(-1, 1, 3 * c["B"]).reshape(c["B"], 3)] if with_h0 else None
    y = model.forward(c["x"], c["reset"], h0).copy()
    state = [h.copy() for h in h0] if with_h0 else model.initial_state(c["B"])
    for t in range(c["T"]):
        out = model.step(np.ascontiguousarray(c["x"][t]), state, np.ascontiguousarray(c["reset"][t]))
        np.testing.assert_allclose(out, y[t], rtol=0, atol=1e-12)


def test_reset_restarts_from_zero_not_from_h0_issue_case():
    """The reported case: Dense(2,6,tanh)-GRU(6,6)-Dense(6,1), T=8, B=1, random h0, reset[4].

    Before the fix forward restarted step 4 from h0 and step() from zeros (outputs differed by
    0.041 from step 4 on). Expected now: steps 4..7 are exactly a fresh episode on x[4:] (zero
    state), steps 0..3 are those of the run without the reset, and the step loop agrees.
    """
    model = Sequential([Dense(2, 6, "tanh"), GRU(6, 6), Dense(6, 1)], dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 2))
    h0 = [rng.standard_normal((1, 6))]
    reset = np.zeros((8, 1), bool)
    reset[4] = True
    y = model.forward(x, reset, h0).copy()
    no_reset = model.forward(x, None, h0).copy()
    fresh = model.forward(np.ascontiguousarray(x[4:])).copy()
    np.testing.assert_array_equal(y[:4], no_reset[:4])
    np.testing.assert_array_equal(y[4:], fresh)
    assert np.abs(y[4:] - no_reset[4:]).max() > 1e-3  # the reset does change something
    # Restarting from h0 (the old semantics) would give these; they must differ from y[4:].
    from_h0 = model.forward(np.ascontiguousarray(x[4:]), None, h0).copy()
    assert np.abs(y[4:] - from_h0).max() > 1e-3
    state = [h0[0].copy()]
    for t in range(8):
        out = model.step(np.ascontiguousarray(x[t]), state, np.ascontiguousarray(reset[t]))
        np.testing.assert_allclose(out, y[t], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gates", GATES)
def test_no_gradient_reaches_h0_through_a_later_reset(gates):
    """dy only after a reset at step 3 in every row: dL/dh0 is exactly zero (finite differences too)."""
    T, B, I, H = 6, 3, 2, 4
    model = gru_model(I, H, gates, 5)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    dy[:3] = 0.0
    reset = np.zeros((T, B), bool)
    reset[3] = True
    model.zero_grad()
    model.forward(x, reset, [h0])
    model.backward(dy)
    dh0 = model.initial_state_grads(T, B)[0]
    assert np.all(dh0 == 0.0), dh0
    errors = testing.check_model_gradients(model, x, dy, reset=reset, h0=[h0], atol=1e-9)
    assert errors["h0[0]"] <= 1e-9
    # Without the reset the same dy does reach h0.
    model.forward(x, None, [h0])
    model.backward(dy)
    assert np.abs(model.initial_state_grads(T, B)[0]).max() > 1e-3


@pytest.mark.parametrize("gates", GATES)
def test_reset_at_step_0_ignores_h0_and_gets_zero_gradient(gates):
    """Rows with reset[0] start from zeros whatever h0 holds; their dL/dh0 rows are exactly 0."""
    T, B, I, H = 5, 3, 2, 4
    model = gru_model(I, H, gates, 9)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    reset = np.zeros((T, B), bool)
    reset[0, 1] = True
    reset[3, 2] = True
    y = model.forward(x, reset, [h0]).copy()
    y_zero_row = model.forward(x, reset, [np.where(reset[0][:, None], 0.0, h0)]).copy()
    np.testing.assert_array_equal(y, y_zero_row)
    model.forward(x, reset, [h0])
    model.zero_grad()
    model.backward(dy)
    dh0 = model.initial_state_grads(T, B)[0].copy()
    assert np.all(dh0[1] == 0.0)
    assert np.abs(dh0[0]).min() > 0 and np.abs(dh0[2]).min() > 0
    testing.check_model_gradients(model, x, dy, reset=reset, h0=[h0], atol=1e-9)


@pytest.mark.parametrize("gates", GATES)
def test_float32_agrees_with_float64(gates):
    """float32 forward within 1e-5 and gradients within 1e-4 (relative to scale) of float64."""
    rng = np.random.default_rng(3)
    T, B, I, H = 50, 4, 16, 16
    m64 = Sequential([GRU(I, H, gates), GRU(H, H, gates)], dtype=np.float64, seed=1)
    m32 = Sequential([GRU(I, H, gates), GRU(H, H, gates)], dtype=np.float32, seed=None)
    m32.params[:] = m64.params
    x = rng.standard_normal((T, B, I))
    reset = rng.random((T, B)) < 0.1
    dy = rng.standard_normal((T, B, H))
    y64 = m64.forward(x, reset)
    y32 = m32.forward(x.astype(np.float32), reset)
    np.testing.assert_allclose(y32, y64, atol=1e-5)
    dx64 = m64.backward(dy)
    dx32 = m32.backward(dy.astype(np.float32))
    np.testing.assert_allclose(dx32, dx64, atol=1e-4 * np.abs(dx64).max())
    np.testing.assert_allclose(m32.grads, m64.grads, atol=1e-4 * np.abs(m64.grads).max())
