"""Run under mpiexec -n 2 by tests/test_distributed.py: the ranks call collectives, or build a
DistributedDataParallel, with arguments that differ across ranks. Each case must raise, on
every rank, a ValueError naming the first difference, and leave the group usable. Rank 0
prints, as JSON, each rank's {case: its message, or "no error"}."""
import json

import numpy as np

import rnnx
import rnnx.distributed as dist
from rnnx import nn

dist.init_process_group(timeout=20)
rank = dist.get_rank()


def lstm():
    rnnx.manual_seed(0)
    return nn.LSTM(4, 4)


def requires_grad_at_construction():
    model = lstm()
    (model.weight_ih_l0 if rank == 0 else model.weight_hh_l0).requires_grad = False
    nn.parallel.DistributedDataParallel(model)


def requires_grad_after_construction():
    model = lstm()
    ddp = nn.parallel.DistributedDataParallel(model)
    (model.weight_ih_l0 if rank == 0 else model.weight_hh_l0).requires_grad = False
    before = [p.data.copy() for p in model.parameters()]
    out, _ = ddp(np.ones((3, 2, 4), np.float32))
    try:
        ddp.backward(np.ones_like(out))
    finally:
        assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


def bucket_cap_mb():
    nn.parallel.DistributedDataParallel(lstm(), bucket_cap_mb=25 if rank == 0 else 0.001)


def embedding_max_norm():
    model = nn.Sequential(nn.Embedding(10, 3, max_norm=1.0), nn.Linear(3, 2))
    nn.parallel.DistributedDataParallel(model)


def reduce_arrays(array, op="sum"):
    """all_reduce of `array`, which must come back unchanged (the check runs first)."""
    original = array.copy()
    try:
        dist.all_reduce(array, op=op)
    finally:
        assert np.array_equal(array, original), array


def dtype_of_the_same_size():
    reduce_arrays(np.arange(4, dtype=np.float32 if rank == 0 else np.int32))


def dtype_of_another_size():
    reduce_arrays(np.arange(2.0) if rank == 0 else np.arange(4, dtype=np.float32))


def operation():
    reduce_arrays(np.arange(4.0), op="sum" if rank == 0 else "max")


def collective():
    if rank == 0:
        reduce_arrays(np.arange(4.0))
    else:
        dist.broadcast(np.arange(4.0))


def broadcast_src():
    dist.broadcast(np.arange(4.0), src=rank)


def broadcast_object_list_length():
    dist.broadcast_object_list([1] * (rank + 1))


messages = {}
for case in (requires_grad_at_construction, requires_grad_after_construction, bucket_cap_mb,
             embedding_max_norm, dtype_of_the_same_size, dtype_of_another_size, operation,
             collective, broadcast_src, broadcast_object_list_length):
    try:
        case()
    except ValueError as exc:
        messages[case.__name__] = str(exc)
    else:
        messages[case.__name__] = "no error"

total = np.ones(3)
dist.all_reduce(total)  # the group still works
assert np.array_equal(total, [2.0, 2.0, 2.0]), total
everyone = [None, None]
dist.all_gather_object(everyone, messages)
if rank == 0:
    print(json.dumps(everyone), flush=True)
