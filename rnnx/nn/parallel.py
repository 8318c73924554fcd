"""DistributedDataParallel: data-parallel training over the ranks of rnnx.distributed (MPI).

    dist.init_process_group()
    ddp = DistributedDataParallel(model)      # every rank starts from rank 0's parameters
    out = ddp(x_local)                        # this rank's share of the global batch
    loss = loss_fn(out, y_local)              # the local mean
    ddp.backward(loss_fn.backward())          # p.grad = average over ranks = grad of the global mean
    optimizer.step()                          # identical on every rank

Gradients are reduced in flat buckets: one per child of a Sequential (children of more than
bucket_cap_mb, or of mixed dtypes, get several), in the order their backward runs. A bucket's
reduction starts, non-blocking, as soon as its child's backward is done, while the backward of
the children before it runs. Each parameter's .grad is a view into its bucket, so the reduced
average lands in place.

Bitwise identical parameters on every rank: MPI does not promise that an allreduce of floats
gives every rank the same bits (the standard only recommends it). Each bucket is therefore
reduced as reduce-scatter + allgather (what bandwidth-optimal allreduce algorithms do inside):
every element of the sum is computed, and divided by the world size, on one rank only, and the
allgather copies those bits to every rank. Identical gradients, parameters and (deterministic)
optimizer steps then keep every rank identical for any number of steps.
"""
import contextlib

import numpy as np

from .. import distributed
from .container import Sequential
from .module import Module


class _Bucket:
    """Flat gradient buffer of some parameters of one dtype (their .grad become views into it),
    padded to a multiple of the world size for the reduce-scatter."""

    def __init__(self, params, world_size):
        n = sum(p.data.size for p in params)
        self.params = params
        self.flat = np.zeros(-(-n // world_size) * world_size, params[0].data.dtype)
        self.chunk = np.empty(self.flat.size // world_size, self.flat.dtype)
        offset = 0
        for p in params:
            view = self.flat[offset:offset + p.data.size].reshape(p.data.shape)
            view[...] = p.grad
            p.grad = view
            offset += p.data.size
        self.scatter = self.gather = None  # the requests in flight

    def is_current(self):
        """Whether every parameter's .grad is still this bucket's view (not replaced, e.g. by
        Module.to or an assignment)."""
        return all(p.grad.base is self.flat and p.grad.dtype == p.data.dtype for p in self.params)


class DistributedDataParallel(Module):
    """Data-parallel wrapper of `module` over the process group (rnnx.distributed), as torch's.

    At construction: checks that every rank's module has the same parameter names, shapes and
    dtypes (ValueError otherwise) and copies rank 0's parameters to every rank. ddp(x) calls the
    module. ddp.backward(*grad, **kwargs) runs module.backward(*grad, **kwargs) and leaves in
    every p.grad the average of p.grad over the ranks (in the no_sync() context: the local
    gradient, accumulated, reduced by the first backward after it). With each rank's loss the
    mean over its own equally sized share of the global batch, that average is the gradient of
    the global batch's mean loss. state_dict() keys start with "module." as in torch.

    bucket_cap_mb: largest size of a gradient bucket in MiB (torch's default, 25).
    """

    def __init__(self, module, bucket_cap_mb=25):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be an rnnx Module, got "
                            f"{type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        comm = distributed._communicator()
        self.module = module
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self.world_size = comm.Get_size()
        _check_same_parameters(comm, module)
        for p in module.parameters():
            comm.Bcast(p.data, root=0)
        # Two communicators of their own, so that the reduce-scatters and the allgathers each
        # start in the same order on every rank whenever each one completes.
        self._scatter_comm, self._gather_comm = comm.Dup(), comm.Dup()
        self._groups = _parameter_groups(module)
        self._group_of_child = {id(child): i for i, (child, _) in enumerate(self._groups)
                                if child is not None}
        self._buckets = None  # built by the first reduction: [[_Bucket, ...] per group]

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, *grad, **kwargs):
        """module.backward(*grad, **kwargs), then the gradients averaged over the ranks (with
        the reduction of a Sequential's children overlapping the backward of earlier ones);
        returns what the module's backward returns."""
        if not self.require_backward_grad_sync or self.world_size == 1:
            return self.module.backward(*grad, **kwargs)
        buckets = self._current_buckets()
        if not isinstance(self.module, Sequential):
            result = self.module.backward(*grad, **kwargs)
        else:
            steps = self.module.backward_steps(*grad, **kwargs)
            while True:
                try:
                    child = next(steps)
                except StopIteration as done:
                    result = done.value
                    break
                group = self._group_of_child.get(id(child))
                for bucket in () if group is None else buckets[group]:
                    self._start(bucket)
                self._progress(buckets)
        self._finish(buckets)
        return result

    def reduce_gradients(self):
        """The reduction that backward() ends with, on its own: for a rank that has no samples
        in a step (its zero gradients take part in the average; every rank must reduce)."""
        if self.world_size > 1:
            self._finish(self._current_buckets())

    @contextlib.contextmanager
    def no_sync(self):
        """Context manager: backward() inside it does not reduce, gradients accumulate locally
        (gradient accumulation); the first backward() after it reduces the accumulated sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- buckets -----------------------------------------------------------------------------
    def _current_buckets(self):
        """The buckets, (re)built if a parameter's .grad is no longer its bucket view."""
        if self._buckets is None or not all(b.is_current() for bs in self._buckets for b in bs):
            cap = int(self.bucket_cap_mb * 2 ** 20)
            self._buckets = [[_Bucket(ps, self.world_size) for ps in _split(params, cap)]
                             for _, params in self._groups]
        return self._buckets

    def _start(self, bucket):
        bucket.scatter = self._scatter_comm.Ireduce_scatter_block(bucket.flat, bucket.chunk)

    def _gather(self, bucket):
        """After the reduce-scatter: this rank's chunk averaged into place, then the allgather."""
        rank = self._gather_comm.Get_rank()
        size = bucket.chunk.size
        np.divide(bucket.chunk, self.world_size, out=bucket.flat[rank * size:(rank + 1) * size])
        bucket.scatter = None
        bucket.gather = self._gather_comm.Iallgather(distributed._mpi().IN_PLACE, bucket.flat)

    def _progress(self, buckets):
        """Start the allgather of every bucket whose reduce-scatter is done, in bucket order."""
        for bucket in (b for bs in buckets for b in bs):
            if bucket.gather is not None:
                continue
            if bucket.scatter is None or not bucket.scatter.Test():
                return
            self._gather(bucket)

    def _finish(self, buckets):
        """Start the remaining buckets, wait for every reduction; p.grad holds the averages."""
        for bucket in (b for bs in buckets for b in bs):
            if bucket.scatter is None and bucket.gather is None:
                self._start(bucket)
        for bucket in (b for bs in buckets for b in bs):
            if bucket.gather is None:
                bucket.scatter.Wait()
                self._gather(bucket)
        for bucket in (b for bs in buckets for b in bs):
            bucket.gather.Wait()
            bucket.gather = None

    def extra_repr(self):
        return f"world_size={self.world_size}"


def _parameter_groups(module):
    """[(child or None, [Parameter, ...])] in the order their gradients become final: for a
    Sequential, one group per child with parameters, last child first (a parameter shared by
    several children goes with the first of them, whose backward runs last), then the
    Sequential's own parameters (child None); otherwise one group of every parameter. Within a
    group, parameters in reverse registration order (as their backward produces them)."""
    if not isinstance(module, Sequential):
        return [(None, module.parameters()[::-1])]
    seen, groups = set(), []
    for child in module.children():
        params = [p for p in child.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append((child, params[::-1]))
    own = [p for p in module.parameters() if id(p) not in seen]
    groups.reverse()
    return groups + ([(None, own[::-1])] if own else [])


def _split(params, cap_bytes):
    """params cut into runs of one dtype of at most cap_bytes each (a larger parameter alone)."""
    runs, run, size = [], [], 0
    for p in params:
        if run and (p.data.dtype != run[0].data.dtype or size + p.data.nbytes > cap_bytes):
            runs.append(run)
            run, size = [], 0
        run.append(p)
        size += p.data.nbytes
    return runs + ([run] if run else [])


def _check_same_parameters(comm, module):
    """ValueError on every rank unless every rank's module has the same parameters (names,
    shapes, dtypes), naming the first difference."""
    mine = [(name, p.data.shape, str(p.data.dtype)) for name, p in module.named_parameters()]
    everyone = comm.allgather(mine)
    for rank, theirs in enumerate(everyone[1:], 1):
        if theirs == everyone[0]:
            continue
        for i in range(max(len(theirs), len(everyone[0]))):
            a = everyone[0][i] if i < len(everyone[0]) else "nothing"
            b = theirs[i] if i < len(theirs) else "nothing"
            if a != b:
                raise ValueError(
                    f"DistributedDataParallel: the model differs across ranks: parameter #{i} "
                    f"(name, shape, dtype) is {a} on rank 0 and {b} on rank {rank}")
