"""Run under mpiexec -n 2 by tests/test_distributed.py with argv[1] a case and argv[2] the
process group's timeout in seconds: rank 1 leaves (sys.exit, destroy_process_group), or skips a collective while rank
0 waits in it. Every case must end the whole job, non-zero, within about the timeout, with a
message naming the collective and the ranks that never arrived (or the rank that left)."""
import sys
import time

import numpy as np

import rnnx
import rnnx.distributed as dist
from rnnx import nn

case, timeout = sys.argv[1], float(sys.argv[2])
dist.init_process_group(timeout=timeout)
rank = dist.get_rank()
rnnx.manual_seed(0)
ddp = nn.parallel.DistributedDataParallel(
    nn.Sequential(nn.GRU(3, 4, batch_first=True), nn.LastHidden(), nn.Linear(4, 2)))
loss_fn = nn.CrossEntropyLoss()
x, y = np.ones((2, 5, 3), np.float32), np.array([0, 1])


def step(backward=True):
    loss_fn(ddp(x), y)
    if backward:
        ddp.backward(loss_fn.backward(), input_grad=False)


step()  # every rank in the group, one step done
if case == "exit" and rank == 1:
    sys.exit(int(sys.argv[3]))  # while rank 0 goes on
if case == "destroy" and rank == 1:
    dist.destroy_process_group()  # while rank 0 goes on
    time.sleep(120)
if case == "exit_while_busy":
    if rank == 1:
        sys.exit(0)
    time.sleep(120)  # rank 0 computing for longer than the timeout
if case == "backward_on_one_rank":
    step(backward=rank == 0)
    if rank == 1:
        time.sleep(120)  # computing, or stuck, outside the group's collectives
step()
print(f"rank {rank}: finished, which it should not have", flush=True)
