"""rnnx: fast CPU recurrent networks with a torch.nn-compatible API (numpy + scipy only)."""
import os as _os

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): rnnx's
# parallel regions are coarse, and spinning threads steal the cores of a busy machine.
# Read by the OpenMP runtime when the kernels load it, so it must come first.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from ._random import manual_seed, get_rng_state, set_rng_state
from .nn import (Module, Parameter, LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear, Dropout,
                 CrossEntropyLoss, MSELoss, Sequential, LastHidden, LastTimeStep)
from .optim import SGD
from .utils.clip_grad import clip_grad_norm_, clip_grad_value_
from .utils.rnn import (PackedSequence, pack_padded_sequence, pad_packed_sequence,
                        pack_sequence, pad_sequence)
from ._threads import get_num_threads, set_num_threads
from ._config import show_config
from ._backend import get_gemm_backend, set_gemm_backend
from .serialization import save, load
from .train import Trainer
from . import nn, optim, utils

__version__ = "0.1.0"
