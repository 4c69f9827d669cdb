"""Parity with torch.nn.GRU (float64): forward, input, initial-state and parameter gradients."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl import testing
from memrl.nn import GRU, Sequential

torch = pytest.importorskip("torch")


@settings(max_examples=15)
@given(testing.dims(max_T=8, max_B=4, max_I=6, max_H=6), st.integers(0, 2**31 - 1), st.data())
def test_gru_matches_torch(shape, seed, data):
    T, B, I, H = shape
    model = Sequential([GRU(I, H)], dtype=np.float64, seed=seed)
    x = data.draw(testing.float_arrays((T, B, I), -2, 2))
    h0 = data.draw(testing.float_arrays((B, H)))
    dy = data.draw(testing.float_arrays((T, B, H)))
    ref = torch.nn.GRU(I, H).double()
    p = model.named()
    with torch.no_grad():
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            tname = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}[name]
            getattr(ref, tname).copy_(torch.from_numpy(p[f"0.{name}"]))
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    ty, _ = ref(tx, th0)
    (ty * torch.from_numpy(dy)).sum().backward()

    y = model.forward(x, None, [h0])
    model.zero_grad()
    dx = model.backward(dy)
    dh0 = model.initial_state_grads(T, B)[0]
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dh0, th0.grad.numpy()[0], rtol=0, atol=1e-10)
    g = model.named("grads")
    for name, tname in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                        ("b_hh", "bias_hh_l0")):
        np.testing.assert_allclose(g[f"0.{name}"], getattr(ref, tname).grad.numpy(), rtol=0, atol=1e-10,
                                   err_msg=name)


@settings(max_examples=15)
@given(testing.dims(max_T=8, max_B=3, max_I=5, max_H=5), st.integers(0, 2**31 - 1), st.data())
def test_gru_with_resets_matches_torch_run_episode_by_episode(shape, seed, data):
    """Resets split each row into episodes; torch runs them one by one: the first from h0, every
    later one from zeros (a new episode), and dL/dh0 comes only from the first."""
    T, B, I, H = shape
    model = Sequential([GRU(I, H)], dtype=np.float64, seed=seed)
    x = data.draw(testing.float_arrays((T, B, I), -2, 2))
    h0 = data.draw(testing.float_arrays((B, H)))
    dy = data.draw(testing.float_arrays((T, B, H)))
    reset = data.draw(testing.reset_masks(T, B))
    ref = torch.nn.GRU(I, H).double()
    p = model.named()
    with torch.no_grad():
        for name, tname in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                            ("b_hh", "bias_hh_l0")):
            getattr(ref, tname).copy_(torch.from_numpy(p[f"0.{name}"]))
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    rows = []
    for b in range(B):
        starts = [0] + [t for t in range(1, T) if reset[t, b]] + [T]
        pieces = []
        for k, (s, e) in enumerate(zip(starts, starts[1:])):
            if k == 0 and not reset[0, b]:
                start_state = th0[b][None, None]
            else:
                start_state = torch.zeros(1, 1, H, dtype=torch.float64)
            out, _ = ref(tx[s:e, b:b + 1], start_state)
            pieces.append(out)
        rows.append(torch.cat(pieces))
    want = torch.cat(rows, dim=1)
    (want * torch.from_numpy(dy)).sum().backward()

    y = model.forward(x, reset, [h0])
    model.zero_grad()
    dx = model.backward(dy)
    dh0 = model.initial_state_grads(T, B)[0]
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
    want_dh0 = np.zeros((B, H)) if th0.grad is None else th0.grad.numpy()  # None: no row used h0
    np.testing.assert_allclose(dh0, want_dh0, rtol=0, atol=1e-10)
    assert np.all(dh0[reset[0]] == 0.0)
    g = model.named("grads")
    for name, tname in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                        ("b_hh", "bias_hh_l0")):
        np.testing.assert_allclose(g[f"0.{name}"], getattr(ref, tname).grad.numpy(), rtol=0, atol=1e-10,
                                   err_msg=name)
