"""rnnx: fast CPU recurrent networks with a torch.nn-compatible API (numpy + scipy only)."""
from ._random import manual_seed, get_rng_state, set_rng_state
from .nn.module import Module, Parameter

__version__ = "0.1.0"
