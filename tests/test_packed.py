"""rnnx's packing helpers: self-consistency, and equality with torch.nn.utils.rnn.

PackedSequence, pack_padded_sequence, pad_packed_sequence, pack_sequence, pad_sequence:
data, batch_sizes, sorted / unsorted indices, padded output, lengths, padding_value,
total_length, batch_first, enforce_sorted and its error message.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnx


@pytest.fixture(scope="module")
def tr():
    """torch.nn.utils.rnn (the test is skipped when torch is not installed)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import rnn
    return torch, rnn


def assert_packed_equal(ours, theirs):
    """An rnnx PackedSequence equals a torch one field by field (None where torch has None)."""
    np.testing.assert_array_equal(ours.data, theirs.data.numpy())
    assert ours.data.dtype == theirs.data.numpy().dtype
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    assert ours.batch_sizes.dtype == np.int64
    for a, b in ((ours.sorted_indices, theirs.sorted_indices),
                 (ours.unsorted_indices, theirs.unsorted_indices)):
        if b is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, b.numpy())


# ---------------------------------------------------------------------------------------
# without torch

def test_pack_padded_sequence_by_hand():
    T, B = 4, 3
    x = np.arange(T * B, dtype=np.float64).reshape(T, B, 1) + 100  # x[t, b] = 100 + 3t + b
    p = rnnx.pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False)
    np.testing.assert_array_equal(p.sorted_indices, [1, 0, 2])
    np.testing.assert_array_equal(p.unsorted_indices, [1, 0, 2])
    np.testing.assert_array_equal(p.batch_sizes, [3, 2, 1, 1])
    np.testing.assert_array_equal(p.data[:, 0], [101, 100, 102, 104, 103, 107, 110])
    padded, lengths = rnnx.pad_packed_sequence(p, padding_value=-1.0)
    np.testing.assert_array_equal(lengths, [2, 4, 1])
    assert lengths.dtype == np.int64
    want = x.copy()
    want[2:, 0] = -1
    want[1:, 2] = -1
    np.testing.assert_array_equal(padded, want)


def test_packed_sequence_fills_unsorted_indices():
    p = rnnx.PackedSequence(np.zeros((3, 1)), [2, 1], sorted_indices=[1, 0])
    np.testing.assert_array_equal(p.unsorted_indices, [1, 0])
    assert p.batch_sizes.dtype == np.int64
    q = rnnx.PackedSequence(np.zeros((3, 1)), [2, 1])
    assert q.sorted_indices is None and q.unsorted_indices is None
    perm = np.array([3, 0, 4, 1, 2])
    r = rnnx.PackedSequence(np.zeros((5, 1)), [5], sorted_indices=perm)
    np.testing.assert_array_equal(perm[r.unsorted_indices], np.arange(5))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_pack_pad_round_trip(data):
    T = data.draw(st.integers(1, 6))
    B = data.draw(st.integers(1, 5))
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    trailing = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    batch_first = data.draw(st.booleans())
    enforce_sorted = data.draw(st.booleans())
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    shape = ((B, T) if batch_first else (T, B)) + trailing
    x = rng.standard_normal(shape).astype(np.float32)
    p = rnnx.pack_padded_sequence(x, lengths, batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    assert p.data.shape == (sum(lengths),) + trailing
    assert p.data.dtype == np.float32
    assert p.batch_sizes.size == max(lengths)
    assert np.all(np.diff(p.batch_sizes) <= 0) and p.batch_sizes.sum() == sum(lengths)
    padded, lens = rnnx.pad_packed_sequence(p, batch_first=batch_first, total_length=T,
                                            padding_value=7.0)
    np.testing.assert_array_equal(lens, lengths)
    assert padded.shape == x.shape
    for b, n in enumerate(lengths):
        seq_x = x[b] if batch_first else x[:, b]
        seq_p = padded[b] if batch_first else padded[:, b]
        np.testing.assert_array_equal(seq_p[:n], seq_x[:n])
        np.testing.assert_array_equal(seq_p[n:], 7.0)
    if not enforce_sorted:  # stable order: longest first, ties by original index
        si = p.sorted_indices
        key = [(-lengths[i], i) for i in si]
        assert key == sorted(key)
    # pack_sequence of the pieces gives the same packing
    seqs = [(x[b] if batch_first else x[:, b])[:n] for b, n in enumerate(lengths)]
    q = rnnx.pack_sequence(seqs, enforce_sorted=enforce_sorted)
    np.testing.assert_array_equal(q.data, p.data)
    np.testing.assert_array_equal(q.batch_sizes, p.batch_sizes)


def test_helper_errors():
    x = np.zeros((3, 2, 1))
    with pytest.raises(ValueError, match="must be sorted in decreasing order"):
        rnnx.pack_padded_sequence(x, [1, 3])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 3\]"):
        rnnx.pack_padded_sequence(x, [4, 1], enforce_sorted=False)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 3\]"):
        rnnx.pack_padded_sequence(x, [3, 0])
    with pytest.raises(ValueError, match="lengths must be integers"):
        rnnx.pack_padded_sequence(x, [2.5, 1])
    with pytest.raises(ValueError, match="one entry per batch element"):
        rnnx.pack_padded_sequence(x, [3, 2, 1])
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        rnnx.pack_padded_sequence(np.zeros(3), [3])
    p = rnnx.pack_padded_sequence(x, [3, 2])
    with pytest.raises(ValueError, match="total_length=2"):
        rnnx.pad_packed_sequence(p, total_length=2)
    with pytest.raises(ValueError, match="empty list"):
        rnnx.pad_sequence([])
    with pytest.raises(ValueError, match="trailing dimensions"):
        rnnx.pad_sequence([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="padding_side"):
        rnnx.pad_sequence([np.zeros(2)], padding_side="middle")


# ---------------------------------------------------------------------------------------
# against torch

@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_pack_pad_match_torch(tr, data):
    torch, R = tr
    T = data.draw(st.integers(1, 6))
    B = data.draw(st.integers(1, 6))
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    trailing = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    batch_first = data.draw(st.booleans())
    enforce_sorted = data.draw(st.booleans())
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64]))
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    x = (rng.standard_normal(((B, T) if batch_first else (T, B)) + trailing) * 10).astype(dtype)
    p = rnnx.pack_padded_sequence(x, lengths, batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    tp = R.pack_padded_sequence(torch.from_numpy(x), torch.tensor(lengths),
                                batch_first=batch_first, enforce_sorted=enforce_sorted)
    np.testing.assert_array_equal(p.batch_sizes, tp.batch_sizes.numpy())
    if enforce_sorted or len(set(lengths)) == len(lengths):
        assert_packed_equal(p, tp)
    # (with tied lengths torch's unstable sort may order ties differently; the padded
    # results agree all the same)
    total = data.draw(st.sampled_from([None, T, T + 2]))
    pad_value = data.draw(st.sampled_from([0.0, -1.0, 3.5]))
    for out_bf in (False, True):
        padded, lens = rnnx.pad_packed_sequence(p, batch_first=out_bf, padding_value=pad_value,
                                                total_length=total)
        tpadded, tlens = R.pad_packed_sequence(tp, batch_first=out_bf, padding_value=pad_value,
                                               total_length=total)
        np.testing.assert_array_equal(padded, tpadded.numpy())
        assert padded.dtype == tpadded.numpy().dtype
        np.testing.assert_array_equal(lens, tlens.numpy())
        assert lens.dtype == tlens.numpy().dtype


def test_pack_padded_sequence_unsorted_matches_torch(tr):
    torch, R = tr
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3))
    lengths = [3, 5, 1, 4]
    tp = R.pack_padded_sequence(torch.from_numpy(x), torch.tensor(lengths), enforce_sorted=False)
    assert_packed_equal(rnnx.pack_padded_sequence(x, lengths, enforce_sorted=False), tp)
    # lengths may be given as a torch tensor, a numpy array, a list or a tuple
    for L in (torch.tensor(lengths), np.array(lengths), tuple(lengths)):
        assert_packed_equal(rnnx.pack_padded_sequence(x, L, enforce_sorted=False), tp)


def test_enforce_sorted_error_message_matches_torch(tr):
    torch, R = tr
    x = np.zeros((3, 2, 1), np.float32)
    with pytest.raises(RuntimeError) as theirs:
        R.pack_padded_sequence(torch.from_numpy(x), torch.tensor([1, 3]))
    with pytest.raises(ValueError) as ours:
        rnnx.pack_padded_sequence(x, [1, 3])
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(RuntimeError):
        R.pack_sequence([torch.zeros(1), torch.zeros(3)])
    with pytest.raises(ValueError) as ours_seq:
        rnnx.pack_sequence([np.zeros(1), np.zeros(3)])
    assert str(ours_seq.value) == str(theirs.value)


def test_total_length_error_message_matches_torch(tr):
    torch, R = tr
    x = np.zeros((4, 2, 1), np.float32)
    tp = R.pack_padded_sequence(torch.from_numpy(x), torch.tensor([4, 2]))
    with pytest.raises(ValueError) as theirs:
        R.pad_packed_sequence(tp, total_length=3)
    with pytest.raises(ValueError) as ours:
        rnnx.pad_packed_sequence(rnnx.pack_padded_sequence(x, [4, 2]), total_length=3)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_sequence_matches_torch(tr, enforce_sorted):
    torch, R = tr
    rng = np.random.default_rng(1)
    lens = [5, 3, 3, 1] if enforce_sorted else [2, 5, 1, 4]
    seqs = [rng.standard_normal((n, 2)).astype(np.float32) for n in lens]
    tp = R.pack_sequence([torch.from_numpy(s) for s in seqs], enforce_sorted=enforce_sorted)
    assert_packed_equal(rnnx.pack_sequence(seqs, enforce_sorted=enforce_sorted), tp)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("padding_value", [0.0, -2.0])
def test_pad_sequence_matches_torch(tr, batch_first, padding_side, padding_value):
    torch, R = tr
    rng = np.random.default_rng(2)
    for trailing in ((), (3,), (2, 2)):
        seqs = [rng.standard_normal((n,) + trailing) for n in (3, 5, 1, 5)]
        ours = rnnx.pad_sequence(seqs, batch_first=batch_first, padding_value=padding_value,
                                 padding_side=padding_side)
        theirs = R.pad_sequence([torch.from_numpy(s) for s in seqs], batch_first=batch_first,
                                padding_value=padding_value, padding_side=padding_side)
        np.testing.assert_array_equal(ours, theirs.numpy())
        assert ours.dtype == theirs.numpy().dtype


def test_torch_packed_sequence_fields_work_as_rnnx_input(tr):
    """A torch PackedSequence converted field by field is a valid rnnx PackedSequence."""
    torch, R = tr
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 2))
    tp = R.pack_padded_sequence(torch.from_numpy(x), torch.tensor([2, 4, 3]), enforce_sorted=False)
    p = rnnx.PackedSequence(tp.data.numpy(), tp.batch_sizes.numpy(), tp.sorted_indices.numpy(),
                            tp.unsorted_indices.numpy())
    padded, lens = rnnx.pad_packed_sequence(p)
    tpadded, tlens = R.pad_packed_sequence(tp)
    np.testing.assert_array_equal(padded, tpadded.numpy())
    np.testing.assert_array_equal(lens, tlens.numpy())
