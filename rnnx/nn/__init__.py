"""rnnx.nn: layers, losses and containers mirroring torch.nn."""
from .module import Module, Parameter, freeze
from .module import RecordsWarning
from .rnn import LSTM, GRU, RNN
from .cells import LSTMCell, GRUCell, RNNCell
from .linear import Linear, Dropout, Identity
from .activation import ReLU, Tanh, Sigmoid
from .flatten import Flatten
from .sparse import Embedding
from .loss import CrossEntropyLoss, MSELoss
from .container import Sequential, ModuleList, LastHidden
from .pooling import LastTimeStep, MeanOverTime, MaxOverTime
from . import functional, init, utils
from . import parallel
