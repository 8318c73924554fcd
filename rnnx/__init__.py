"""rnnx: fast CPU recurrent networks with a torch.nn-compatible API (numpy + scipy only)."""
from ._random import manual_seed, get_rng_state, set_rng_state
from .nn import (Module, Parameter, LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear, Dropout,
                 CrossEntropyLoss, MSELoss, Sequential, LastHidden, LastTimeStep)
from .optim import SGD
from .utils.clip_grad import clip_grad_norm_, clip_grad_value_
from .utils.rnn import (PackedSequence, pack_padded_sequence, pad_packed_sequence,
                        pack_sequence, pad_sequence)
from ._threads import get_num_threads, set_num_threads
from .serialization import save, load
from . import nn, optim, utils

__version__ = "0.1.0"
