"""rnnx.nn.functional, torch.nn.functional's place: forward-only functions, numpy in, numpy
out. rnnx has no autograd: nothing here records for a backward; to train, use the modules
(ReLU, Linear, Embedding, ...), whose backward these functions do not have."""
import numpy as np

from .activation import ReLU, Sigmoid, Tanh
from .module import as_float_array
from .sparse import Embedding

__all__ = ["relu", "tanh", "sigmoid", "softmax", "log_softmax", "linear", "embedding"]


def _forward_only(module, x):
    """module(x) recording nothing (eval mode)."""
    return module.eval()(x)


def relu(input):
    """max(x, 0) element-wise (float32/float64 kept; other floats become float32)."""
    return _forward_only(ReLU(), input)


def tanh(input):
    """tanh(x) element-wise."""
    return _forward_only(Tanh(), input)


def sigmoid(input):
    """1 / (1 + exp(-x)) element-wise, without overflow."""
    return _forward_only(Sigmoid(), input)


def log_softmax(input, dim):
    """x - logsumexp(x) along axis dim, computed from x - max(x) (no overflow)."""
    x = as_float_array(input)
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def softmax(input, dim):
    """exp(x) / sum(exp(x)) along axis dim: exp(log_softmax(x, dim))."""
    return np.exp(log_softmax(input, dim))


def linear(input, weight, bias=None):
    """x @ weight.T (+ bias): (..., in) -> (..., out), weight (out, in), bias (out,)."""
    x = as_float_array(input)
    w = as_float_array(weight, x.dtype, "weight")
    if w.ndim != 2 or x.shape[-1:] != w.shape[1:]:
        raise ValueError(f"linear: expected input (..., {w.shape[-1]}) for weight "
                         f"{w.shape} (out_features, in_features), got {x.shape}")
    y = x @ w.T
    return y if bias is None else y + as_float_array(bias, x.dtype, "bias")


def embedding(input, weight, padding_idx=None):
    """weight[input]: integer indices of any shape (...) -> (..., embedding_dim), each index
    checked to lie in [0, num_embeddings)."""
    return _forward_only(Embedding.from_pretrained(weight, padding_idx=padding_idx), input)
