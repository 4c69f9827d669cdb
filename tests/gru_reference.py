"""Plain NumPy GRU forward (an oracle independent of the Cython kernels)."""
import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def fast_tanh(v):
    v = np.clip(v, -3.0, 3.0)
    return v * (27 + v * v) / (27 + 9 * v * v)


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh, reset=None, gates="exact"):
    """x (T, B, I), h0 (B, H) -> h (T, B, H).

    h0 is the state before step 0; a row with reset[t, b] enters step t from zeros (t = 0 too).
    """
    T = x.shape[0]
    H = W_hh.shape[1]
    sig = sigmoid if gates == "exact" else (lambda v: 0.5 * fast_tanh(0.5 * v) + 0.5)
    tanh = np.tanh if gates == "exact" else fast_tanh
    out = []
    h = h0
    for t in range(T):
        if reset is not None:
            h = np.where(reset[t][:, None].astype(bool), 0.0, h)
        gi = x[t] @ W_ih.T + b_ih
        gh = h @ W_hh.T + b_hh
        r = sig(gi[:, :H] + gh[:, :H])
        z = sig(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)
