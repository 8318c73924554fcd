"""rnnx.nn.functional (forward-only, against torch.nn.functional) and rnnx.nn.utils, where
PyTorch users look for them."""
import numpy as np
import pytest

import rnnx
import rnnx.nn.functional as F


def test_nn_utils_are_rnnx_utils():
    from rnnx.nn.utils import clip_grad_norm_, clip_grad_value_
    from rnnx.nn.utils.rnn import (PackedSequence, pack_padded_sequence, pack_sequence,
                                   pad_packed_sequence, pad_sequence)
    assert clip_grad_norm_ is rnnx.utils.clip_grad_norm_ is rnnx.nn.utils.clip_grad_norm_
    assert clip_grad_value_ is rnnx.clip_grad_value_
    assert (PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence,
            pad_sequence) == (rnnx.PackedSequence, rnnx.pack_padded_sequence,
                              rnnx.pack_sequence, rnnx.pad_packed_sequence, rnnx.pad_sequence)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 30).astype(dtype)
    w, b = rng.standard_normal((2, 5)).astype(dtype), rng.standard_normal(2).astype(dtype)
    t = torch.from_numpy
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for ours, theirs in ((F.relu(x), tf.relu(t(x))), (F.tanh(x), torch.tanh(t(x))),
                         (F.sigmoid(x), torch.sigmoid(t(x))),
                         (F.softmax(x, 1), tf.softmax(t(x), 1)),
                         (F.log_softmax(x, -1), tf.log_softmax(t(x), -1)),
                         (F.linear(x, w, b), tf.linear(t(x), t(w), t(b))),
                         (F.linear(x, w), tf.linear(t(x), t(w)))):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs.numpy(), **tol)
    table = rng.standard_normal((6, 3)).astype(dtype)
    ids = np.array([[0, 5], [2, 2]])
    np.testing.assert_array_equal(F.embedding(ids, table), tf.embedding(t(ids), t(table)))


def test_functional_errors_and_no_records():
    with pytest.raises(ValueError, match=r"linear: expected input \(\.\.\., 5\)"):
        F.linear(np.zeros((2, 4)), np.zeros((3, 5)))
    with pytest.raises(IndexError, match="out of range"):
        F.embedding([7], np.zeros((3, 2)))
    relu = rnnx.ReLU()
    assert F.relu(np.ones(3)).tolist() == [1, 1, 1] and not relu._records
