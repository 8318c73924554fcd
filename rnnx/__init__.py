"""rnnx: fast CPU recurrent networks with a torch.nn-compatible API (numpy + scipy only)."""
from ._random import manual_seed, get_rng_state, set_rng_state
from .nn import (Module, Parameter, LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear, Dropout,
                 CrossEntropyLoss, MSELoss, Sequential, LastHidden, LastTimeStep,
                 MeanOverTime, MaxOverTime)
from .nn import Embedding, ModuleList, ReLU, Tanh, Sigmoid, Identity, Flatten
from .nn import freeze
from .optim import SGD
from .optim import Adam, AdamW, RMSprop, Adagrad
from .nn import RecordsWarning
from .utils.clip_grad import clip_grad_norm_, clip_grad_value_
from .utils.rnn import (PackedSequence, pack_padded_sequence, pad_packed_sequence,
                        pack_sequence, pad_sequence)
from ._threads import get_num_threads, set_num_threads
from ._config import show_config
from ._backend import get_gemm_backend, set_gemm_backend
from .serialization import save, load
from .train import Trainer
from .nn.parallel import DistributedDataParallel
from .stream import Stream
from ._grad_mode import no_grad, enable_grad, set_grad_enabled, is_grad_enabled
from . import nn, optim, utils, distributed
from ._version import __version__


def __getattr__(name):
    """rnnx.onnx is imported on first use: it needs the optional onnx package."""
    if name == "onnx":
        import importlib
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
