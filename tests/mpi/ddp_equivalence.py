"""Run under mpiexec -n 2 by tests/test_distributed.py: DistributedDataParallel against one
process on the full batch, and bitwise identical parameters on every rank (also when the MPI
delivers sums that differ across ranks)."""
import contextlib
import copy
import sys

import numpy as np

import rnnx
import rnnx.distributed as dist
from rnnx import nn

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
STEPS, BATCH, T, FEATURES = 4, 8, 5, 3


def build(cell, bidirectional, dtype, seed):
    rnnx.manual_seed(seed)
    d = 2 if bidirectional else 1
    model = nn.Sequential(getattr(nn, cell)(FEATURES, 6, 2, batch_first=True,
                                            bidirectional=bidirectional),
                          nn.LastHidden(bidirectional), nn.Linear(6 * d, 4))
    return model.to(dtype)


def train(model, backward, xs, ys):
    """STEPS of SGD with momentum on (xs[s], ys[s])."""
    opt = rnnx.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for s in range(STEPS):
        out = model(xs[s])
        loss_fn(out, ys[s])
        backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    return model


failures = []
half = slice(rank * BATCH // world, (rank + 1) * BATCH // world)  # this rank's rows


def check_close(what, model, reference, tol):
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if not np.allclose(p.data, q.data, rtol=tol, atol=tol):
            failures.append(f"{what} {name}: max diff {np.abs(p.data - q.data).max()}")


for cell in ("LSTM", "GRU", "RNN"):
    for bidirectional in (False, True):
        for dtype in (np.float32, np.float64):
            data = np.random.default_rng(7)
            xs = data.standard_normal((STEPS, BATCH, T, FEATURES)).astype(dtype)
            ys = data.integers(0, 4, (STEPS, BATCH))
            reference = build(cell, bidirectional, dtype, seed=1)
            ddp = nn.parallel.DistributedDataParallel(
                build(cell, bidirectional, dtype, seed=1 + 100 * rank))  # rank 0's params win
            train(reference, reference.backward, xs, ys)
            train(ddp, ddp.backward, xs[:, half], ys[:, half])
            check_close(f"{cell} bidirectional={bidirectional} {dtype.__name__}", ddp.module,
                        reference, 1e-4 if dtype == np.float32 else 1e-10)
            flat = np.concatenate([p.data.ravel() for p in ddp.parameters()])
            everyone = [None] * world
            dist.all_gather_object(everyone, flat)
            if not all(np.array_equal(e.view(np.uint8), flat.view(np.uint8)) for e in everyone):
                failures.append(f"{cell} {bidirectional} {dtype.__name__}: ranks differ")


# A frozen child (requires_grad=False) is left out of the buckets.
data = np.random.default_rng(8)
xs, ys = data.standard_normal((STEPS, BATCH, T, FEATURES)), data.integers(0, 4, (STEPS, BATCH))
reference, local = build("GRU", True, np.float64, seed=4), build("GRU", True, np.float64, seed=4)
for model in (reference, local):
    model[0].requires_grad_(False)
ddp = nn.parallel.DistributedDataParallel(local)
train(reference, reference.backward, xs, ys)
train(ddp, ddp.backward, xs[:, half], ys[:, half])
check_close("frozen recurrent layer", ddp.module, reference, 1e-10)
if sum(b.flat.size for bs in ddp._buckets for b in bs) != 6 * 2 * 4 + 4:
    failures.append("frozen parameters in the buckets")

# no_sync: gradient accumulation over two micro-batches, reduced by the second backward; tiny
# buckets (several per child).
data = np.random.default_rng(3)
xs = data.standard_normal((2, STEPS, BATCH, T, FEATURES))
ys = data.integers(0, 4, (2, STEPS, BATCH))
reference = build("LSTM", False, np.float64, seed=2)
ddp = nn.parallel.DistributedDataParallel(build("LSTM", False, np.float64, seed=2 + rank),
                                          bucket_cap_mb=0.0005)
for model, rows, sync in ((reference, slice(None), None), (ddp, half, ddp.no_sync)):
    opt = rnnx.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for s in range(STEPS):
        for micro in range(2):
            with (sync() if sync is not None and micro == 0 else contextlib.nullcontext()):
                loss_fn(model(xs[micro, s, rows]), ys[micro, s, rows])
                model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
check_close("no_sync", ddp.module, reference, 1e-10)

# A module that is not a Sequential (one bucket set, reduced after its backward), and
# reduce_gradients() on its own: rank 1 contributes zeros.
rnnx.manual_seed(5)
gru = nn.GRU(FEATURES, 4)
ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(gru))
x = np.random.default_rng(4).standard_normal((T, BATCH, FEATURES))
out, h = gru(x)
gru.backward(np.ones_like(out), None)
if rank == 0:
    out, h = ddp(x)
    ddp.backward(np.ones_like(out), None)
else:
    ddp.reduce_gradients()
for (name, p), q in zip(ddp.module.named_parameters(), gru.parameters()):
    if not np.allclose(p.grad, q.grad / world, rtol=1e-12, atol=1e-14):
        failures.append(f"reduce_gradients {name}")

# Sums that differ across ranks (as an MPI might deliver) are detected and replaced by rank 0's.
ddp = nn.parallel.DistributedDataParallel(build("GRU", False, np.float32, seed=6))
make_identical = ddp._make_identical


def perturbed(buckets):
    if rank == 1:
        buckets[-1].flat[0] = np.nextafter(buckets[-1].flat[0], np.float32(1))
    make_identical(buckets)


ddp._make_identical = perturbed
x = np.random.default_rng(6).standard_normal((BATCH, T, FEATURES)).astype(np.float32)
loss_fn = nn.CrossEntropyLoss()
loss_fn(ddp(x), np.arange(BATCH) % 4)
ddp.backward(loss_fn.backward())
grads = np.concatenate([p.grad.ravel() for p in ddp.parameters()])
everyone = [None] * world
dist.all_gather_object(everyone, grads)
if ddp.identity_repairs != 1 or not all(np.array_equal(e, grads) for e in everyone):
    failures.append(f"identity repair: {ddp.identity_repairs} repairs")
ddp._make_identical = make_identical
ddp.zero_grad()
loss_fn(ddp(x), np.arange(BATCH) % 4)
ddp.backward(loss_fn.backward())
if ddp.identity_repairs != 1:
    failures.append("a repair without a difference")

print(f"rank {rank}: {'OK' if not failures else failures}", flush=True)
sys.exit(1 if failures else 0)
