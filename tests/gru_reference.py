"""Plain NumPy GRU over a sequence (an oracle independent of the Cython kernels).

The step is the exported policy's NumPy ``memrl.policy.gru_step`` (the one NumPy GRU step in the
project); this loop adds the sequence and the reset semantics.
"""
import numpy as np

from memrl.policy import gru_step


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh, reset=None, gates="exact"):
    """x (T, B, I), h0 (B, H) -> h (T, B, H).

    h0 is the state before step 0; a row with reset[t, b] enters step t from zeros (t = 0 too).
    """
    out = []
    h = h0
    for t in range(x.shape[0]):
        if reset is not None:
            h = np.where(reset[t][:, None].astype(bool), 0.0, h)
        h = gru_step(x[t], h, W_ih, W_hh, b_ih, b_hh, gates=gates)
        out.append(h)
    return np.stack(out)
