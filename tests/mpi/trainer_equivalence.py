"""Run under mpiexec -n 2 by tests/test_distributed.py: a data-parallel Trainer against a
Trainer in one process, on 21 samples in global batches of 5 (parts of 3 and 2, and a last
batch of 1 sample that leaves rank 1 without one), float64; evaluation split across ranks;
files written by rank 0 only (argv[1]: a directory)."""
import os
import sys

import numpy as np

import rnnx
import rnnx.distributed as dist
from rnnx import nn

out_dir = sys.argv[1]
data = np.random.default_rng(0)
x, y = data.standard_normal((21, 4, 3)), data.integers(0, 3, 21)
x_test, y_test = data.standard_normal((9, 4, 3)), data.integers(0, 3, 9)


def run(tag):
    rnnx.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 5, batch_first=True, bidirectional=True),
                          nn.LastHidden(True), nn.Linear(10, 3)).double()
    trainer = rnnx.Trainer(model, rnnx.SGD(model.parameters(), lr=0.3, momentum=0.9),
                           batch_size=5, eval_batch_size=4, clip=1.0, stream=sys.stdout,
                           checkpoint=os.path.join(out_dir, f"{tag}.npz"),
                           metrics_json=os.path.join(out_dir, f"{tag}.json"))
    return model, trainer.fit(x, y, epochs=3, eval_data=(x_test, y_test))


reference, expected = run("single")  # before the group exists: one process, whole batches
dist.init_process_group()
rank = dist.get_rank()
model, history = run(f"rank{rank}")
failures = []
for got, want in zip(history, expected):
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        if not np.isclose(got[key], want[key], rtol=1e-10, atol=1e-12):
            failures.append(f"epoch {want['epoch']} {key}: {got[key]} != {want[key]}")
for (name, p), q in zip(model.named_parameters(), reference.parameters()):
    if not np.allclose(p.data, q.data, rtol=1e-9, atol=1e-12):
        failures.append(f"{name}: max diff {np.abs(p.data - q.data).max()}")
flat = np.concatenate([p.data.ravel() for p in model.parameters()])
everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, flat)
if not all(np.array_equal(e.view(np.uint8), flat.view(np.uint8)) for e in everyone):
    failures.append("parameters differ across ranks")
print(f"rank {rank}: {'OK' if not failures else failures}", flush=True)
sys.exit(1 if failures else 0)
