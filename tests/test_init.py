"""rnnx.nn.init: the laws, fans and gains of torch.nn.init, on Parameters and arrays."""
import math

import numpy as np
import pytest

import rnnx
from rnnx.nn import Parameter, init

GAINS = [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("selu", None),
         ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0)]


@pytest.mark.parametrize("nonlinearity,param", GAINS)
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param))


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("softplus")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape", [(3, 5), (4, 3, 2, 2), (1, 7)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    assert init._calculate_fan_in_and_fan_out(np.zeros(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


def test_laws_bounds_and_moments():
    rnnx.manual_seed(0)
    w = Parameter(np.zeros((400, 300), np.float32))
    assert init.xavier_uniform_(w, gain=2.0) is w
    bound = 2.0 * math.sqrt(6.0 / 700)
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.data).max() <= math.sqrt(6.0 / 400)
    init.kaiming_normal_(w, nonlinearity="relu")
    assert w.data.std() == pytest.approx(math.sqrt(2.0 / 300), rel=0.02)
    init.xavier_normal_(w)
    assert w.data.std() == pytest.approx(math.sqrt(2.0 / 700), rel=0.02)
    init.normal_(w, 1.0, 0.5)
    assert w.data.mean() == pytest.approx(1.0, abs=0.01)
    init.uniform_(w, -3, -2)
    assert w.data.min() >= -3 and w.data.max() <= -2
    b = np.empty(5)
    assert init.constant_(b, 0.25) is b and (b == 0.25).all()
    assert (init.ones_(b) == 1).all() and (init.zeros_(b) == 0).all()
    assert w.data.dtype == np.float32


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 2), (5, 5)])
def test_orthogonal(shape):
    rnnx.manual_seed(1)
    a = init.orthogonal_(np.zeros(shape), gain=3.0)
    q = a.reshape(shape[0], -1) / 3.0
    small = min(q.shape)
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)


def test_seeded_and_checked():
    outs = []
    for _ in range(2):
        rnnx.manual_seed(7)
        outs.append(init.orthogonal_(np.zeros((4, 4))).copy())
        outs.append(init.xavier_uniform_(np.zeros((3, 2))).copy())
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(np.zeros(3))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(np.zeros((2, 2)), mode="fan_avg")
    with pytest.raises(TypeError, match="Parameter or a float numpy array"):
        init.zeros_(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="Parameter or a float numpy array"):
        init.zeros_([0.0, 1.0])


def test_orthogonal_recurrent_weights_in_a_model():
    """The usual porting pattern: orthogonal W_hh per gate, zero biases."""
    rnnx.manual_seed(0)
    lstm = rnnx.LSTM(3, 4)
    for name, p in lstm.named_parameters():
        if name.startswith("weight_hh"):
            for k in range(4):
                init.orthogonal_(p.data[4 * k:4 * (k + 1)])
        elif name.startswith("bias"):
            init.zeros_(p)
    w = lstm.weight_hh_l0.data[:4].astype(np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-6)
    assert not lstm.bias_ih_l0.data.any()
    out, _ = lstm(np.ones((2, 1, 3), np.float32))
    assert np.isfinite(out).all()
