"""DistributedDataParallel: data-parallel training over the ranks of rnnx.distributed (MPI).

    dist.init_process_group()
    ddp = DistributedDataParallel(model)      # every rank starts from rank 0's parameters
    out = ddp(x_local)                        # this rank's share of the global batch
    loss = loss_fn(out, y_local)              # the local mean
    ddp.backward(loss_fn.backward())          # p.grad: the average over ranks, the global mean's
    optimizer.step()                          # identical on every rank

Gradients are reduced in flat buckets: one per child of a Sequential (children of more than
bucket_cap_mb, or of mixed dtypes, get several), in the order their backward runs. A bucket's
reduction starts, non-blocking, as soon as its child's backward is done, while the backward of
the children before it runs. Each parameter's .grad is a view into its bucket, so the reduced
average lands in place (a .grad of None becomes its view, zeroed; frozen parameters,
requires_grad=False, are left out).

Everything that must agree across ranks is checked: at construction, every parameter's name,
shape, dtype and requires_grad and bucket_cap_mb; at every reduction, the bucket plan (each
trainable parameter, the buckets' dtypes and sizes: requires_grad may have changed since).
A difference is a ValueError on every rank naming the first one (see rnnx.distributed). The
waits are bounded by the process group's timeout. Embedding(max_norm=...) is refused: it
renormalises, in place, the rows that each rank's own batch looks up, so the ranks'
parameters would drift apart.

Bitwise identical parameters on every rank: the MPI standard only recommends that a reduction
give every rank the same bits. (MPICH's algorithms do, and with two ranks a float sum a + b
cannot differ; a reduce-scatter + allgather would guarantee it by construction, but MPICH's
non-blocking reduce-scatter measured 1-3 ms against 0.17 ms for Iallreduce on the MNIST model's
0.8 MB of gradients.) So each bucket is reduced with Iallreduce, and then every rank checks
that it holds the same sums: a CRC-32 of all buckets, compared over the ranks by one small
allreduce (its max and min must agree); if they differ, rank 0's sums are broadcast to every
rank (counted in `identity_repairs`). The sums are then divided by the world size on every
rank alike. Identical gradients, parameters and (deterministic) optimizer steps keep every rank
identical for any number of steps.
"""
import contextlib

import numpy as np

from ..distributed import BucketAverage, check_then_broadcast, get_world_size
from .container import Sequential
from .module import Module
from .sparse import Embedding


class _Bucket:
    """Flat gradient buffer of some parameters of one dtype, with a view for each."""

    def __init__(self, params):
        self.params = params
        self.flat = np.zeros(sum(p.data.size for p in params), params[0].data.dtype)
        bounds = np.cumsum([0] + [p.data.size for p in params])
        self.views = [self.flat[a:b].reshape(p.data.shape)
                      for p, a, b in zip(params, bounds[:-1], bounds[1:])]

    def attach(self):
        """Make every parameter's .grad its view, holding the gradient it had (zeros for None),
        so that backward accumulates into the bucket."""
        for p, view in zip(self.params, self.views):
            if p.grad is view:
                continue
            if p.grad is None:
                view.fill(0)
            else:
                view[...] = p.grad
            p.grad = view


class DistributedDataParallel(Module):
    """Data-parallel wrapper of `module` over the process group (rnnx.distributed), as torch's.

    At construction: checks that every rank's module has the same parameter names, shapes,
    dtypes and requires_grad, and the same bucket_cap_mb (ValueError on every rank otherwise,
    naming the first difference), and copies rank 0's parameters to every rank. A module with
    an Embedding(max_norm=...) is refused (ValueError; see the module docstring). ddp(x) calls
    the module. ddp.backward(*grad, **kwargs) runs module.backward(*grad, **kwargs) and leaves
    in every p.grad the average of p.grad over the ranks (in the no_sync() context: the local
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
        self._embeddings = [(name, m) for name, m in module.named_modules()
                            if isinstance(m, Embedding)]
        _refuse_max_norm(self._embeddings)
        self.world_size = get_world_size()
        self.module = module
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self._names = {id(p): name for name, p in module.named_parameters()}
        check_then_broadcast((
            ("collective", "DistributedDataParallel"),
            *((f"parameter #{i} (name, shape, dtype, requires_grad)",
               (name, p.data.shape, str(p.data.dtype), p.requires_grad))
              for i, (name, p) in enumerate(module.named_parameters())),
            ("bucket_cap_mb", float(bucket_cap_mb))), [p.data for p in module.parameters()],
            what="DistributedDataParallel: the module")
        self.identity_repairs = 0  # reductions whose sums differed across ranks (see above)
        self._groups = _parameter_groups(module)
        self._group_of_child = {id(child): i for i, (child, _) in enumerate(self._groups)
                                if child is not None}
        self._buckets = None  # built by the first reduction: [[_Bucket, ...] per group]
        self._layout = None  # the parameters' (dtype, requires_grad) they were built for
        self._average = None  # the BucketAverage of those buckets
        self._first_bucket = None  # per group, the index of its first bucket in _average

    def forward(self, *args, **kwargs):
        _refuse_max_norm(self._embeddings)  # (max_norm may have been set since)
        return self.module(*args, **kwargs)

    def backward(self, *grad, **kwargs):
        """module.backward(*grad, **kwargs), then the gradients averaged over the ranks (with
        the reduction of a Sequential's children overlapping the backward of earlier ones);
        returns what the module's backward returns."""
        if not self.require_backward_grad_sync or self.world_size == 1:
            return self.module.backward(*grad, **kwargs)
        self._begin_reduction()
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
                if group is not None:
                    first = self._first_bucket[group]
                    for index in range(first, first + len(self._buckets[group])):
                        self._average.start(index)
                self._average.progress()
        self._finish()
        return result

    def reduce_gradients(self):
        """The reduction that backward() ends with, on its own: for a rank that has no samples
        in a step (its zero gradients take part in the average; every rank must reduce)."""
        if self.world_size > 1:
            self._begin_reduction()
            self._finish()

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
    def _begin_reduction(self):
        """The buckets of the trainable parameters (rebuilt, with their BucketAverage, when a
        dtype or requires_grad has changed), every .grad attached to its view; begins the
        reduction, whose check that every rank has the same plan is waited for before the
        first bucket's sum starts."""
        layout = [(p.data.dtype, p.requires_grad) for _, ps in self._groups for p in ps]
        if self._buckets is None or layout != self._layout:
            cap = int(self.bucket_cap_mb * 2 ** 20)
            self._buckets = [[_Bucket(run) for run in
                              _split([p for p in params if p.requires_grad], cap)]
                             for _, params in self._groups]
            self._layout = layout
            self._first_bucket = np.cumsum([0] + [len(bs) for bs in self._buckets]).tolist()
            flat = [b for bs in self._buckets for b in bs]
            descriptor = (("collective", "DistributedDataParallel gradient reduction"),
                          *((f"requires_grad of {self._names[id(p)]}", p.requires_grad)
                            for _, ps in self._groups for p in ps),
                          ("buckets (dtype, size)", tuple((str(b.flat.dtype), b.flat.size)
                                                          for b in flat)))
            self._average = BucketAverage([b.flat for b in flat], descriptor,
                                          what="DistributedDataParallel: the gradient reduction")
        for bucket in (b for bs in self._buckets for b in bs):
            bucket.attach()
        self._average.begin()

    def _finish(self):
        """Start the remaining buckets' sums, wait for every one, make them identical on every
        rank and divide them by the world size: p.grad holds the averages."""
        self._average.wait()
        self._make_identical([b for bs in self._buckets for b in bs])
        self._average.divide()

    def _make_identical(self, buckets):
        """Make the sums in `buckets` identical on every rank (see BucketAverage.make_identical);
        a difference repaired is counted in identity_repairs."""
        if self._average.make_identical([bucket.flat for bucket in buckets]):
            self.identity_repairs += 1

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


def _refuse_max_norm(embeddings):
    """ValueError if one of the (name, Embedding) has a max_norm (see the module docstring)."""
    for name, child in embeddings:
        if child.max_norm is not None:
            raise ValueError(
                f"DistributedDataParallel does not support Embedding(max_norm=...): "
                f"{f'submodule {name!r}' if name else 'the module'} has max_norm="
                f"{child.max_norm}, which renormalises in "
                f"place the rows that each rank's own batch looks up, so the ranks' parameters "
                f"would drift apart; set max_norm=None (e.g. renormalise the rows of the whole "
                f"table after each optimizer step, on every rank alike)")
