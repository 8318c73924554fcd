"""rnnx.nn.utils, where PyTorch users look for torch.nn.utils: clip_grad_norm_,
clip_grad_value_ and, in rnnx.nn.utils.rnn, PackedSequence and the packing helpers. The same
functions as rnnx.utils (and rnnx.clip_grad_norm_, rnnx.pack_padded_sequence, ...)."""
from ...utils.clip_grad import clip_grad_norm_, clip_grad_value_
from . import rnn

__all__ = ["clip_grad_norm_", "clip_grad_value_", "rnn"]
