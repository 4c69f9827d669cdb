"""Bad inputs raise ValueError/TypeError naming the argument, the expected and the actual value."""
import numpy as np
import pytest

from memrl.nn import Dense, GRU, Sequential, TanhGaussianHead
from memrl.optim import AdamConfig


@pytest.fixture
def model():
    return Sequential([Dense(2, 4, "tanh"), GRU(4, 3)], seed=0)


def test_wrong_dtype(model):
    with pytest.raises(TypeError, match=r"x: expected dtype float32, got float64"):
        model.forward(np.zeros((3, 2, 2)))


def test_wrong_shape(model):
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, \*, 2\), got \(3, 2, 5\)"):
        model.forward(np.zeros((3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape"):
        model.forward(np.zeros((3, 2), np.float32))


def test_not_an_array(model):
    with pytest.raises(TypeError, match=r"x: expected a numpy.ndarray, got list"):
        model.forward([[[0.0, 0.0]]])


def test_non_contiguous(model):
    x = np.zeros((3, 4, 2), np.float32)[:, ::2]
    with pytest.raises(ValueError, match=r"x: expected a C-contiguous array"):
        model.forward(x)


def test_nan_input_is_reported(model):
    x = np.zeros((3, 2, 2), np.float32)
    x[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"x: expected finite values, got nan at index \(1, 0, 1\)"):
        model.forward(x)
    before = model.params.copy()
    np.testing.assert_array_equal(model.params, before)


def test_reset_mask_checks(model):
    x = np.zeros((3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"reset: expected shape \(3, 2\), got \(2, 3\)"):
        model.forward(x, np.zeros((2, 3), bool))
    with pytest.raises(TypeError, match=r"reset: expected dtype bool or uint8, got float32"):
        model.forward(x, np.zeros((3, 2), np.float32))


def test_h0_checks(model):
    x = np.zeros((3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"h0: expected 1 initial states"):
        model.forward(x, None, [None, None])
    with pytest.raises(ValueError, match=r"h0\[0\]: expected shape \(2, 3\)"):
        model.forward(x, None, [np.zeros((2, 4), np.float32)])


def test_step_checks(model):
    state = model.initial_state(2)
    with pytest.raises(ValueError, match=r"state: expected 1 arrays"):
        model.step(np.zeros((2, 2), np.float32), state + state)
    with pytest.raises(ValueError, match=r"state\[0\]: expected shape \(2, 3\)"):
        model.step(np.zeros((2, 2), np.float32), [np.zeros((3, 3), np.float32)])


def test_layer_and_model_construction_errors():
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        Dense(2, 3, "swish")
    with pytest.raises(ValueError, match=r"gates: expected one of"):
        GRU(2, 3, "approx")
    with pytest.raises(ValueError, match=r"hidden_dim: expected an integer >= 1, got 0"):
        GRU(2, 0)
    with pytest.raises(TypeError, match=r"out_dim: expected an integer"):
        Dense(2, 1.5)
    with pytest.raises(ValueError, match=r"layers\[1\]: expected in_dim 4 \(output of layers\[0\]\), got 3"):
        Sequential([Dense(2, 4), GRU(3, 3)])
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got int32"):
        Sequential([Dense(2, 4)], dtype=np.int32)


def test_head_checks():
    head = TanhGaussianHead(2)
    with pytest.raises(ValueError, match=r"pre: expected shape \(\*, 4\)"):
        head.forward(np.zeros((3, 3), np.float32), None)
    with pytest.raises(ValueError, match=r"eps: expected shape \(3, 2\)"):
        head.forward(np.zeros((3, 4), np.float32), np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"log_std_min, log_std_max"):
        TanhGaussianHead(1, log_std_min=2, log_std_max=-2)


def test_adam_config_rejects_nan():
    with pytest.raises(ValueError, match=r"optimizer.eps: expected a finite number"):
        AdamConfig(eps=float("nan"))
