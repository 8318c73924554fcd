"""rnnx.optim: optimizers and learning-rate schedulers mirroring torch.optim."""
from . import lr_scheduler
from .sgd import SGD, Optimizer

__all__ = ["Optimizer", "SGD", "lr_scheduler"]
