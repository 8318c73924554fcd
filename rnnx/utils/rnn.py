"""Variable-length batches: PackedSequence and PyTorch's packing helpers.

A PackedSequence holds the steps of a length-sorted batch back to back: step t contributes
the first batch_sizes[t] sequences (longest first), so `data` has sum(lengths) rows and no
padding. `sorted_indices[i]` is the original batch index of sorted position i and
`unsorted_indices` its inverse (both None when the batch was already sorted).
"""
from collections import namedtuple

import numpy as np

_ENFORCE_SORTED_MESSAGE = (
    "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can "
    "pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this "
    "requirement if you do not need ONNX exportability.")


class PackedSequence(namedtuple("PackedSequence",
                                ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """(data (sum(lengths), *), batch_sizes (T,), sorted_indices, unsorted_indices)."""

    def __new__(cls, data, batch_sizes, sorted_indices=None, unsorted_indices=None):
        batch_sizes = np.asarray(batch_sizes, dtype=np.int64)
        if sorted_indices is not None:
            sorted_indices = np.asarray(sorted_indices, dtype=np.int64)
            if unsorted_indices is None:
                unsorted_indices = invert_permutation(sorted_indices)
        if unsorted_indices is not None:
            unsorted_indices = np.asarray(unsorted_indices, dtype=np.int64)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)


def invert_permutation(permutation):
    """The inverse permutation: out[permutation[i]] = i."""
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size, dtype=permutation.dtype)
    return inverse


def check_batch_sizes(batch_sizes, data):
    """A PackedSequence's batch_sizes as a (T,) intp array: T >= 1 positive, non-increasing
    counts summing to data's number of rows; ValueError/TypeError otherwise."""
    bs = np.asarray(batch_sizes)
    if bs.dtype.kind not in "iu":
        raise TypeError(f"PackedSequence: batch_sizes must be integers, got dtype {bs.dtype}")
    if bs.ndim != 1 or bs.size == 0:
        raise ValueError(f"PackedSequence: batch_sizes must be a non-empty 1-D array, got shape "
                         f"{bs.shape}")
    bs = bs.astype(np.intp)
    if bs[-1] < 1 or np.any(np.diff(bs) > 0):
        raise ValueError(f"PackedSequence: batch_sizes must be positive and non-increasing, got "
                         f"{bs[:8].tolist()}{' ...' if bs.size > 8 else ''}")
    if data.ndim < 1 or data.shape[0] != bs.sum():
        raise ValueError(f"PackedSequence: data must have sum(batch_sizes) = {bs.sum()} rows, "
                         f"got shape {data.shape}")
    return bs


def check_packed_indices(sorted_indices, unsorted_indices, B):
    """A PackedSequence's (sorted_indices, unsorted_indices) checked against its batch size B:
    None and None, or two (B,) integer arrays, permutations of range(B) and inverses of each
    other (unsorted_indices None is computed). Returns them as intp arrays of their own (a
    record may keep them); TypeError/ValueError otherwise."""
    if sorted_indices is None:
        if unsorted_indices is not None:
            raise ValueError("PackedSequence: unsorted_indices given without sorted_indices")
        return None, None
    sorted_indices = _check_permutation(sorted_indices, B, "sorted_indices")
    if unsorted_indices is None:
        return sorted_indices, invert_permutation(sorted_indices)
    unsorted_indices = _check_permutation(unsorted_indices, B, "unsorted_indices")
    if not np.array_equal(sorted_indices[unsorted_indices], np.arange(B)):
        raise ValueError("PackedSequence: unsorted_indices must be the inverse permutation of "
                         "sorted_indices")
    return sorted_indices, unsorted_indices


def _check_permutation(indices, B, what):
    arr = np.asarray(indices)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"PackedSequence: {what} must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"PackedSequence: {what} must have shape ({B},) (the batch size, "
                         f"batch_sizes[0]), got {arr.shape}")
    arr = arr.astype(np.intp)  # a copy
    if B and (arr.min() < 0 or arr.max() >= B or np.bincount(arr, minlength=B).max() != 1):
        raise ValueError(f"PackedSequence: {what} must be a permutation of range({B}), got "
                         f"{arr[:8].tolist()}{' ...' if B > 8 else ''}")
    return arr


def check_lengths(lengths, T, B):
    """lengths as a (B,) int64 array with every value in [1, T]; ValueError otherwise."""
    arr = np.asarray(lengths)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got {arr.dtype} values {arr.ravel()[:8].tolist()}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have one entry per batch element: expected shape ({B},), "
                         f"got {arr.shape}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 1) | (arr > T)]
    if bad.size:
        raise ValueError(f"lengths must be in [1, {T}] (the number of time steps), "
                         f"got {bad[0]}")
    return arr


def packing_of_lengths(lengths, T, B):
    """How a padded (T, B, *) batch with these lengths packs.

    Returns (batch_sizes (T',), offsets (T'+1,), sorted_indices, unsorted_indices, rows):
    T' = max(lengths); rows = (t_idx, b_idx) with packed row k = padded[t_idx[k], b_idx[k]].
    sorted/unsorted indices and rows are None when every sequence has length T.
    """
    lengths = check_lengths(lengths, T, B)
    if np.all(lengths == T):
        return (np.full(T, B, np.intp), np.arange(T + 1, dtype=np.intp) * B, None, None, None)
    sorted_indices = np.argsort(-lengths, kind="stable")
    return _packing(lengths, sorted_indices)


def _packing(lengths, sorted_indices):
    T = int(lengths.max())
    counts = np.bincount(lengths, minlength=T + 1)
    batch_sizes = (lengths.size - np.cumsum(counts)[:T]).astype(np.intp)
    offsets = np.zeros(T + 1, np.intp)
    np.cumsum(batch_sizes, out=offsets[1:])
    N = int(offsets[-1])
    t_idx = np.repeat(np.arange(T, dtype=np.intp), batch_sizes)
    position = np.arange(N, dtype=np.intp) - np.repeat(offsets[:-1], batch_sizes)
    b_idx = sorted_indices[position]
    return (batch_sizes, offsets, sorted_indices, invert_permutation(sorted_indices),
            (t_idx, b_idx))


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded (T, B, *) batch ((B, T, *) when batch_first) of the given lengths."""
    padded = np.asarray(input)
    if padded.ndim < 2:
        raise ValueError(f"expected a padded batch with at least 2 dimensions, got {padded.ndim}")
    if batch_first:
        padded = np.swapaxes(padded, 0, 1)
    T, B = padded.shape[:2]
    lengths = check_lengths(lengths, T, B)
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise ValueError(_ENFORCE_SORTED_MESSAGE)
        sorted_indices = np.arange(B)
    else:
        sorted_indices = np.argsort(-lengths, kind="stable")
    batch_sizes, _, _, _, (t_idx, b_idx) = _packing(lengths, sorted_indices)
    return PackedSequence(np.ascontiguousarray(padded[t_idx, b_idx]), batch_sizes,
                          None if enforce_sorted else sorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Inverse of pack_padded_sequence: (padded (T, B, *), lengths (B,) int64, original order)."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"pad_packed_sequence expects a PackedSequence, got "
                        f"{type(sequence).__name__}")
    data = np.asarray(sequence.data)
    batch_sizes = check_batch_sizes(sequence.batch_sizes, data)
    B, max_len = int(batch_sizes[0]), batch_sizes.size
    if total_length is None:
        total_length = max_len
    elif total_length < max_len:
        raise ValueError("Expected total_length to be at least the length of the longest "
                         f"sequence in input, but got total_length={total_length} and max "
                         f"sequence length being {max_len}")
    # lengths_sorted[i] = number of steps in which sorted position i is present
    lengths_sorted = (batch_sizes[None, :] > np.arange(B)[:, None]).sum(axis=1)
    sorted_indices, _ = check_packed_indices(sequence.sorted_indices,
                                             sequence.unsorted_indices, B)
    if sorted_indices is None:
        sorted_indices = np.arange(B)
    offsets = np.zeros(max_len + 1, np.intp)
    np.cumsum(batch_sizes, out=offsets[1:])
    t_idx = np.repeat(np.arange(max_len), batch_sizes)
    position = np.arange(data.shape[0]) - np.repeat(offsets[:-1], batch_sizes)
    padded = np.full((total_length, B) + data.shape[1:], padding_value, dtype=data.dtype)
    padded[t_idx, sorted_indices[position]] = data
    lengths = np.empty(B, np.int64)
    lengths[sorted_indices] = lengths_sorted
    if batch_first:
        padded = np.ascontiguousarray(np.swapaxes(padded, 0, 1))
    return padded, lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences of shape (L_i, *) into (max L, B, *) ((B, max L, *) when batch_first)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("received an empty list of sequences")
    trailing = seqs[0].shape[1:]
    if any(s.shape[1:] != trailing for s in seqs):
        raise ValueError("all sequences must have the same trailing dimensions")
    max_len = max(s.shape[0] for s in seqs)
    out = np.full((len(seqs), max_len) + trailing, padding_value,
                  dtype=np.result_type(*[s.dtype for s in seqs]))
    for i, s in enumerate(seqs):
        if padding_side == "right":
            out[i, :s.shape[0]] = s
        else:
            out[i, max_len - s.shape[0]:] = s
    return out if batch_first else np.ascontiguousarray(np.swapaxes(out, 0, 1))


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of (L_i, *) sequences (longest first unless enforce_sorted=False)."""
    lengths = [np.asarray(s).shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)
