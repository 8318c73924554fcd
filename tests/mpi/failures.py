"""Run under mpiexec -n 2 by tests/test_distributed.py: one rank fails in the middle of
data-parallel training (argv[1]: 'raise' or 'kill'), or the ranks' configurations differ at
start-up ('model', 'batch'). Every case must end the whole job quickly with a non-zero exit."""
import os
import signal
import sys

import numpy as np

import rnnx
import rnnx.distributed as dist
from rnnx import nn

mode = sys.argv[1]
dist.init_process_group()
rank = dist.get_rank()
hidden = 5 if mode == "model" and rank == 1 else 4
model = nn.Sequential(nn.GRU(3, hidden, batch_first=True), nn.LastHidden(), nn.Linear(hidden, 2))
trainer = rnnx.Trainer(model, rnnx.SGD(model.parameters(), lr=0.1),
                       batch_size=8 if mode == "batch" and rank == 1 else 4)


class Failing(nn.CrossEntropyLoss):
    """Fails on rank 1 at the third step, after the other rank is inside its collectives."""
    calls = 0

    def forward(self, out, y):
        Failing.calls += 1
        if rank == 1 and Failing.calls == 3:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure on rank 1")
        return super().forward(out, y)


trainer.loss_fn = Failing()
data = np.random.default_rng(0)
trainer.fit(data.standard_normal((64, 6, 3)), data.integers(0, 2, 64), epochs=100)
print(f"rank {rank}: training finished, which it should not have", flush=True)
