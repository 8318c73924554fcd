"""rnnx.nn: layers, losses and containers mirroring torch.nn."""
from .module import Module, Parameter
from .rnn import LSTM, GRU, RNN
