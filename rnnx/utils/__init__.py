"""rnnx.utils: gradient clipping, truncated BPTT and variable-length sequence helpers."""
from .clip_grad import clip_grad_norm_, clip_grad_value_
from .tbptt import time_chunks

__all__ = ["clip_grad_norm_", "clip_grad_value_", "time_chunks"]
