"""Embedding: a lookup table of vectors indexed by integers, as torch.nn.Embedding."""
import numbers

import numpy as np
import scipy.sparse

from . import init
from .module import Module, Parameter, as_float_array, check_dtype


def _check_index(value, num_embeddings):
    """padding_idx in [-num_embeddings, num_embeddings) as a non-negative int (or None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"padding_idx must be an int or None, got {type(value).__name__}")
    if not -num_embeddings <= value < num_embeddings:
        raise ValueError(f"Padding_idx must be within num_embeddings: expected an int in "
                         f"[{-num_embeddings}, {num_embeddings - 1}], got {value}")
    return int(value) % num_embeddings


def _check_max_norm(value):
    """max_norm as a float >= 0 (inf: no renormalisation), or None; a negative max_norm would
    flip the looked-up rows' signs, a NaN one silently do nothing: ValueError for both."""
    if value is None:
        return None
    max_norm = float(value)
    if not max_norm >= 0:
        raise ValueError(f"max_norm must be a non-negative number or None, got {value!r}")
    return max_norm


class Embedding(Module):
    """out = weight[input]: input, integer indices of any shape (...), gives (..., embedding_dim).

    weight (num_embeddings, embedding_dim) ~ N(0, 1), the padding_idx row zeroed; that row gets
    no gradient (it stays a fixed padding vector). max_norm: every forward first rescales, in
    place, each looked-up row whose norm_type-norm exceeds max_norm to norm max_norm (as
    torch, scale = max_norm / (norm + 1e-7)). backward(grad_out) adds grad_out's rows into the
    rows of weight.grad they were looked up from (only those rows are touched), each divided by
    its index's count in the batch if scale_grad_by_freq; it returns None (indices have no
    gradient). dtype: float32 for a new table, the given weight's float dtype for _weight /
    from_pretrained unless dtype= is given. sparse=True (sparse gradients) is not supported.
    """

    acts_per_position = True

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, dtype=None):
        super().__init__()
        for name, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"{name} must be a non-negative int, got {n!r}")
        if sparse:
            raise NotImplementedError("Embedding(sparse=True): rnnx has no sparse gradients; "
                                      "with sparse=False only the rows looked up are updated "
                                      "in weight.grad")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = _check_index(padding_idx, self.num_embeddings)
        self.max_norm = _check_max_norm(max_norm)
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = False
        if _weight is None:
            self.dtype = check_dtype(np.float32 if dtype is None else dtype)
            self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), self.dtype),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            w = as_float_array(_weight, None if dtype is None else check_dtype(dtype), "_weight")
            if w.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Shape of weight does not match num_embeddings and "
                                 f"embedding_dim: expected ({self.num_embeddings}, "
                                 f"{self.embedding_dim}), got {w.shape}")
            self.dtype = w.dtype
            self.weight = Parameter(w, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is `embeddings` (2-D; shared, not copied, when it is a
        C-contiguous float32/float64 array), frozen (requires_grad=False) if freeze."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape "
                             f"{embeddings.shape}")
        return cls(embeddings.shape[0], embeddings.shape[1], padding_idx=padding_idx,
                   max_norm=max_norm, norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq,
                   sparse=sparse, _weight=embeddings, _freeze=freeze)

    def reset_parameters(self):
        """weight ~ N(0, 1) from rnnx's generator; the padding_idx row zeroed."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def _indices(self, input):
        """input as a flat intp array of indices checked to lie in [0, num_embeddings)."""
        idx = np.asarray(input)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: input must hold integer indices, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            bad = idx[(idx < 0) | (idx >= self.num_embeddings)].flat[0]
            raise IndexError(f"Embedding: index {bad} is out of range: indices must lie in "
                             f"[0, {self.num_embeddings - 1}] (num_embeddings="
                             f"{self.num_embeddings})")
        return idx.astype(np.intp, copy=False).reshape(-1)

    def _renorm(self, flat):
        """Rows of weight looked up by flat whose norm exceeds max_norm scaled to it, in place."""
        rows = np.unique(flat)
        w = self.weight.data
        norms = np.linalg.norm(w[rows], ord=self.norm_type, axis=1).astype(np.float64)
        big = norms > self.max_norm
        if big.any():
            scale = self.max_norm / (norms[big] + 1e-7)
            w[rows[big]] *= scale.astype(w.dtype)[:, None]

    def forward(self, input):
        shape = np.shape(input)
        flat = self._indices(input)
        if self.max_norm is not None:
            self._renorm(flat)
        self._push_record((flat, shape))
        return self.weight.data[flat].reshape(shape + (self.embedding_dim,))

    def backward(self, grad_output, *, input_grad=True):
        """weight.grad[i] += sum of the grad_output rows looked up from row i (scaled by
        1/count(i) if scale_grad_by_freq; none for padding_idx). Returns None."""
        flat, shape = self._peek_record()
        grad = as_float_array(grad_output, self.dtype, "grad_output")
        expected = shape + (self.embedding_dim,)
        if grad.shape != expected:
            raise ValueError(f"Embedding.backward: expected grad_output of shape {expected}, "
                             f"got {grad.shape}")
        self._pop_record()
        target = self.weight._grad_target()
        if target is not None and flat.size:
            self._accumulate(target, flat, grad.reshape(-1, self.embedding_dim))
        return None

    def _accumulate(self, target, flat, grad):
        """target[i] += sum over k with flat[k] == i (padding_idx excluded) of s_k grad[k],
        s_k = 1 / count(flat[k]) with scale_grad_by_freq, else 1: a sparse (rows, N) matrix
        times grad, each row summed in input order, only the rows that occur written."""
        rows, which, counts = np.unique(flat, return_inverse=True, return_counts=True)
        scale = 1.0 / counts[which] if self.scale_grad_by_freq else np.ones(flat.size)
        cols = np.arange(flat.size)
        if self.padding_idx is not None:  # its row of the matrix stays empty: += 0
            keep = flat != self.padding_idx
            which, cols, scale = which[keep], cols[keep], scale[keep]
        gather = scipy.sparse.csr_matrix((scale.astype(self.dtype), (which, cols)),
                                         shape=(rows.size, flat.size))
        target[rows] += gather @ grad

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype}"
        return s
