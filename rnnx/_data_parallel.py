"""The Trainer's data-parallel side (rnnx.train.Trainer calls these when the group is set up).

Each global batch (the trainer's batch_size, drawn from the same seeded permutation on every
rank) is cut into world-size contiguous parts as equal as possible (np.array_split); each rank
trains on its part through DistributedDataParallel. A rank's loss gradient is weighted by
(its samples * world size / global batch), so that the average over ranks is exactly the
gradient of the global batch's mean loss even when the parts differ by a sample (the last batch
of an epoch). A rank left without a sample (a batch smaller than the world size) runs one
stand-in sample with weight 0. Losses, correct counts and the Ctrl-C stop request are summed
over the ranks once per step, before backward, so that every rank takes the same decisions
(divergence, stopping) at the same step. Evaluation is split the same way and its sums reduced.
"""
import numpy as np

from .distributed import all_reduce, barrier, check_same, get_rank, get_world_size, is_initialized
from .nn.parallel import DistributedDataParallel


def data_parallel(model, optimizer, settings):
    """A DataParallel for a Trainer of `model` if the process group is initialised, else None.
    settings: the trainer's plain-valued settings, which must agree across ranks."""
    if not is_initialized():
        return None
    return DataParallel(model, optimizer, settings)


class DataParallel:
    """Per-step sharding, weighting and agreement of a data-parallel Trainer."""

    def __init__(self, model, optimizer, settings):
        self.rank, self.size = get_rank(), get_world_size()
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        check_same("the Trainer's configuration",
                   {**settings, "optimizer": type(optimizer).__name__, "param_groups": repr(hyper)})
        if settings["batch_size"] < self.size:
            raise ValueError(f"batch_size {settings['batch_size']} is the global batch: it must "
                             f"be at least the world size {self.size}")
        self.net = model if isinstance(model, DistributedDataParallel) else \
            DistributedDataParallel(model)
        self.is_main = self.rank == 0
        self._local_n = self._global_n = 0

    def shard(self, idx):
        """This rank's part of the global batch `idx` (a stand-in sample if it has none)."""
        part = np.array_split(idx, self.size)[self.rank]
        self._local_n, self._global_n = len(part), len(idx)
        return part if len(part) else idx[:1]

    def agree(self, loss, correct, stop_requested):
        """(global mean loss, global correct count, whether any rank asked to stop), from this
        rank's mean loss and correct count on its part."""
        counted = self._local_n > 0
        sums = np.array([loss * self._local_n if counted else 0.0, correct if counted else 0,
                         float(stop_requested)])
        all_reduce(sums)
        return sums[0] / self._global_n, int(round(sums[1])), bool(sums[2])

    def weight(self, grad):
        """The loss gradient of this rank's part, weighted as the global mean needs."""
        factor = self._local_n * self.size / self._global_n
        return grad if factor == 1 else grad * grad.dtype.type(factor)

    def evaluate(self, evaluate, model, loss_fn, x, y, batch_size, lengths):
        """evaluate() (rnnx.train's) of this rank's contiguous part of (x, y), the sums reduced:
        (mean loss, accuracy or None) of the whole set, the same on every rank."""
        bounds = np.linspace(0, len(x), self.size + 1).round().astype(int)
        rows = slice(bounds[self.rank], bounds[self.rank + 1])
        n = rows.stop - rows.start
        loss, accuracy = (evaluate(model, loss_fn, x[rows], y[rows], batch_size,
                                   lengths=None if lengths is None else lengths[rows])
                          if n else (0.0, None))
        sums = np.array([loss * n, (accuracy or 0.0) * n])
        all_reduce(sums)
        classification = np.asarray(y).dtype.kind in "iu"
        return sums[0] / len(x), (round(sums[1]) / len(x) if classification else None)

    def barrier(self):
        barrier()
