"""Whole models: multi-layer stacks against finite differences; flat buffers and views."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from memrl import testing
from memrl.nn import Dense, GRU, Sequential, TanhGaussianHead


@given(st.data())
def test_random_stacks_match_finite_differences(data):
    problem = data.draw(testing.sequence_problems(max_T=5, max_B=3, max_dim=5))
    layers = data.draw(testing.layer_stacks(problem.x.shape[2], max_layers=4, max_dim=5))  # relu too
    model = Sequential(layers, dtype=np.float64, seed=problem.seed)
    dy = data.draw(testing.float_arrays((problem.T, problem.B, model.out_dim)))
    h0 = [data.draw(testing.float_arrays((problem.B, model.layers[i].hidden_dim))) for i in model.recurrent]
    testing.check_model_gradients(model, problem.x, dy, reset=problem.reset, h0=h0)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 10**6), st.data())
def test_chapter_actor_with_head_matches_finite_differences(T, B, seed, data):
    """Dense -> GRU -> GRU -> Dense -> tanh-Gaussian, gradient of a*da + logp*dlogp."""
    model = Sequential([Dense(1, 4, "tanh"), GRU(4, 4, "fast"), GRU(4, 4, "fast"), Dense(4, 2)],
                       dtype=np.float64, seed=seed)
    head = TanhGaussianHead(1, dtype=np.float64)
    x = data.draw(testing.float_arrays((T, B, 1), 0, 1))
    eps = data.draw(testing.float_arrays((T * B, 1), -2, 2))
    da = data.draw(testing.float_arrays((T * B, 1)))
    dlogp = data.draw(testing.float_arrays((T * B,)))
    reset = data.draw(testing.reset_masks(T, B))

    def loss(params):
        model.params[:] = params
        pre = model.forward(x, reset).reshape(T * B, 2)
        a, logp = head.forward(np.ascontiguousarray(pre), eps)
        return float((a * da).sum() + (logp * dlogp).sum())

    params = model.params.copy()
    pre = model.forward(x, reset).reshape(T * B, 2)
    head.forward(np.ascontiguousarray(pre), eps)
    dpre = head.backward(da, dlogp)
    model.zero_grad()
    model.backward(dpre.reshape(T, B, 2).copy())
    # The log-std clip at [-20, 2] is a kink; check_gradient handles one inside the stencil.
    testing.check_gradient(loss, params.copy(), model.grads.copy(), name="actor params")


def test_parameters_are_views_of_one_buffer():
    model = Sequential([Dense(2, 3, "relu"), GRU(3, 4), Dense(4, 1)], seed=0)
    for which in ("params", "grads", "adam_m", "adam_v"):
        for name, view in model.named(which).items():
            assert np.shares_memory(view, getattr(model, which)), (which, name)
    assert model.size == 3 * 2 + 3 + 3 * 4 * 3 + 3 * 4 * 4 + 2 * 12 + 4 + 1
    assert model.params.flags.c_contiguous and model.params.dtype == np.float32


def test_initialisation_is_deterministic_and_pytorch_scaled():
    a = Sequential([Dense(4, 16, "tanh"), GRU(16, 16)], seed=7)
    b = Sequential([Dense(4, 16, "tanh"), GRU(16, 16)], seed=7)
    c = Sequential([Dense(4, 16, "tanh"), GRU(16, 16)], seed=8)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    p = a.named()
    assert np.abs(p["0.W"]).max() <= 0.5 and np.abs(p["1.W_hh"]).max() <= 0.25
    assert np.abs(p["1.W_hh"]).max() > 0.2


def test_workspaces_are_reused_and_parameters_never_reallocated():
    model = Sequential([Dense(1, 4, "tanh"), GRU(4, 4)], seed=0)
    params = model.params
    x = np.zeros((5, 2, 1), np.float32)
    y1 = model.forward(x)
    y2 = model.forward(x)
    assert y1 is y2 or np.shares_memory(y1, y2)
    model.forward(np.zeros((7, 3, 1), np.float32))
    assert model.params is params


def test_backward_without_forward_raises():
    model = Sequential([GRU(2, 2)], seed=0)
    with pytest.raises(RuntimeError, match="no forward"):
        model.backward(np.zeros((3, 1, 2), np.float32))


# ---------------------------------------------------------------------------------------------
# One semantics for recurrent state: forward(x, reset, h0) == a loop of step == the NumPy Policy
# ---------------------------------------------------------------------------------------------

@st.composite
def stacks_with_state(draw):
    problem = draw(testing.sequence_problems(max_T=7, max_B=3, max_dim=5, scale=2.0))
    layers = draw(testing.layer_stacks(problem.x.shape[2], max_layers=4, max_dim=5))
    model = Sequential(layers, dtype=np.float64, seed=problem.seed)
    h0 = [draw(testing.float_arrays((problem.B, model.layers[i].hidden_dim), -2, 2)) for i in model.recurrent]
    return model, problem, h0


@given(stacks_with_state())
def test_forward_with_h0_and_resets_equals_a_loop_of_step(case):
    model, p, h0 = case
    y = model.forward(p.x, p.reset, h0).copy()
    state = [h.copy() for h in h0]
    for t in range(p.T):
        out = model.step(np.ascontiguousarray(p.x[t]), state, np.ascontiguousarray(p.reset[t]))
        np.testing.assert_allclose(out, y[t], rtol=0, atol=1e-12, err_msg=f"step {t}")


@given(stacks_with_state())
def test_numpy_policy_with_reset_rows_equals_forward(case):
    """memrl.policy.Policy from a copy of h0, reset_rows(reset[t]) before each act, is forward."""
    from memrl.policy import Policy

    model, p, h0 = case
    y = model.forward(p.x, p.reset, h0).copy()
    policy = Policy(model.config(), {k: v.copy() for k, v in model.named().items()}, action_dim=model.out_dim)
    policy.reset(p.B)
    for state, h in zip(policy.state, h0):
        state[...] = h
    for t in range(p.T):
        policy.reset_rows(p.reset[t].copy())
        action = policy.act(p.x[t])
        np.testing.assert_allclose(action, np.tanh(y[t]), rtol=0, atol=1e-12, err_msg=f"step {t}")


@given(stacks_with_state(), st.data())
def test_random_stacks_with_h0_and_resets_match_finite_differences(case, data):
    """Gradients w.r.t. parameters, x and every h0 with resets inside the window; rows that reset
    at step 0 get exactly zero dL/dh0."""
    model, p, h0 = case
    dy = data.draw(testing.float_arrays((p.T, p.B, model.out_dim)))
    testing.check_model_gradients(model, p.x, dy, reset=p.reset, h0=h0)
    model.zero_grad()
    model.forward(p.x, p.reset, h0)
    model.backward(dy)
    for k, dh in enumerate(model.initial_state_grads(p.T, p.B)):
        assert np.all(dh[p.reset[0]] == 0.0), (k, dh)


@pytest.mark.parametrize("gates", ["exact", "fast"])
def test_no_gradient_crosses_a_reset_in_a_stack(gates):
    """Dense-GRU-GRU-Dense, row b restarting at step r_b = 0, 2, 5 (row 3 never), dy non-zero only
    from r_b on: dL/dx at every earlier step of a row, and every GRU's dL/dh0 for the rows that
    restart, are exactly zero (finite differences agree); backpropagating across the resets
    (RLtools' quirk, ``ignore_resets``) makes them non-zero."""
    T, B = 7, 4
    restart = [0, 2, 5, None]
    model = Sequential([Dense(3, 5, "tanh"), GRU(5, 4, gates), GRU(4, 4, gates), Dense(4, 2)], dtype=np.float64,
                       seed=11)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((T, B, 3))
    h0 = [rng.standard_normal((B, 4)), rng.standard_normal((B, 4))]
    dy = rng.standard_normal((T, B, 2))
    reset = np.zeros((T, B), bool)
    for b, r in enumerate(restart):
        if r is not None:
            reset[r, b] = True
            dy[:r, b] = 0.0
    model.zero_grad()
    model.forward(x, reset, h0)
    dx = model.backward(dy).copy()
    dh0 = [g.copy() for g in model.initial_state_grads(T, B)]
    for b, r in enumerate(restart):
        if r is None:
            assert np.abs(dx[:, b]).min() > 0 and all(np.abs(g[b]).min() > 0 for g in dh0), b
            continue
        assert np.all(dx[:r, b] == 0.0), (b, dx[:r, b])
        assert np.abs(dx[r:, b]).min() > 0, b
        for k, g in enumerate(dh0):
            assert np.all(g[b] == 0.0), (b, k, g[b])
    errors = testing.check_model_gradients(model, x, dy, reset=reset, h0=h0, atol=1e-9)
    assert errors["x"] <= 1e-9 and errors["h0[0]"] <= 1e-9 and errors["h0[1]"] <= 1e-9, errors
    model.forward(x, reset, h0)
    crossing = model.backward(dy, ignore_resets=True)
    for b in (1, 2):
        assert np.abs(crossing[:restart[b], b]).max() > 1e-3, b
