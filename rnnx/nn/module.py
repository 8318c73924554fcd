"""Module and Parameter: the small object model every rnnx layer is built on.

A Module holds Parameters (arrays with a gradient) and child Modules, registered by
attribute assignment as in torch.nn. Layers run forward with `module(x)` and backward with
`module.backward(grad)`: each forward call in training mode pushes a record of what its
backward needs, each backward call pops the most recent one (last in, first out), so a
module applied several times is back-propagated by calling backward in reverse order.
Eval mode, or any mode inside `rnnx.no_grad()`, records nothing. A record lives no longer than
the output it belongs to, as PyTorch's graph: a training-mode call returns its arrays as views
of their own, held weakly, and when none of a module's pending records has an output still
referenced, its next training-mode call drops them all (a loop of forwards whose outputs are
discarded runs in bounded memory; a forward followed by its backward, or a cell run step
after step from its last output, keeps its records). A module holding more than
RECORDS_WARNING_THRESHOLD pending records warns (RecordsWarning); a backward whose gradient
does not have the shape of the output of the forward it is paired with raises. One module is
trained by one thread at a time: a training-mode call or a backward entered while another
thread is inside one of them on the same module raises RuntimeError.
rnnx's layers take `backward(..., input_grad=False)` when the gradient with respect to their
input is not wanted (their input is data, as for the first layer of a model): they skip
computing it and return None in its place.
"""
import contextlib
import copy
import functools
import inspect
import threading
import types
import warnings
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

from .._grad_mode import is_grad_enabled
from .._kernels._fingerprint import fingerprint

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# PyTorch's words for a saved array changed before its backward (the checks of fingerprints)
MODIFIED_IN_PLACE = ("one of the variables needed for gradient computation has been modified "
                     "by an inplace operation")
RECORDS_WARNING_THRESHOLD = 64


class Record(types.SimpleNamespace):
    """What a training-mode forward leaves for its backward (as the ctx of a torch.autograd
    Function), in named fields: Record(x=..., weights=...), read as record.x or, as a
    namedtuple's, by position in the order given (record[0]; x, weights = record). Pushed with
    Module._push_record, taken back by the backward with _peek_record / _pop_record."""

    def __getitem__(self, index):
        return tuple(vars(self).values())[index]

    def __iter__(self):
        return iter(vars(self).values())

    def __len__(self):
        return len(vars(self))


class RecordsWarning(RuntimeWarning):
    """A module holds more pending forward records than RECORDS_WARNING_THRESHOLD: forwards
    in training mode whose backward never comes (each keeps its activations)."""


def check_dtype(dtype):
    """The module dtype as np.dtype; float32 or float64 only. Takes numpy dtypes and types,
    numpy's names ("float32", "float64", "double"; "float" is numpy's float64) and torch's
    dtypes (torch.float32 / torch.float64, recognised by name: torch is not imported)."""
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
        if name not in ("float32", "float64"):
            raise TypeError(f"dtype must be float32 or float64, got torch.{name}")
        return np.dtype(name)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_float_array(x, dtype=None, what="input"):
    """`x` as an ndarray of `dtype`, a module's float dtype (None: x's own dtype if float32 or
    float64, else float32); TypeError for input that is not real floating point (int, bool,
    complex, strings, objects)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array (float32 or float64), got dtype "
                        f"{x.dtype}")
    if dtype is None:
        dtype = x.dtype if x.dtype in FLOAT_DTYPES else np.float32
    return x.astype(dtype, copy=False)


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """load_state_dict's result, as torch's."""

    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


def accepts_input_grad(module):
    """Whether module.backward takes input_grad= (rnnx's layers do; a Module of one's own may
    not, and is then always asked for its input gradient)."""
    try:
        return "input_grad" in inspect.signature(module.backward).parameters
    except (TypeError, ValueError):
        return False


def check_grad_shape(module, what, got, expected):
    """ValueError unless a gradient's shape `got` is `expected`, the shape of the output of
    the forward call whose record the backward consumes."""
    if tuple(got) != tuple(expected):
        raise ValueError(f"{type(module).__name__}.backward: expected {what} of shape "
                         f"{tuple(expected)}, got {tuple(got)} (a gradient must have the shape of "
                         f"the output of the forward call it back-propagates: the most recent "
                         f"one still pending)")


def grad_buffer(name, p):
    """p.grad as the array backward accumulates into: a writeable C-contiguous array of
    p.data's shape and dtype (a zeroed one when p.grad is None); ValueError/TypeError naming
    the parameter otherwise, before any kernel writes into it."""
    g, data = p.grad, p.data
    if g is None:
        g = p.grad = np.zeros(data.shape, data.dtype)
        return g
    if not isinstance(g, np.ndarray):
        raise TypeError(f"{name}.grad: expected a numpy array, got {type(g).__name__}")
    if g.shape != data.shape or g.dtype != data.dtype:
        raise ValueError(f"{name}.grad: expected an array of shape {data.shape} and dtype "
                         f"{data.dtype} (the parameter's), got shape {g.shape} and dtype {g.dtype}")
    if not g.flags.writeable:
        raise ValueError(f"{name}.grad is read-only: backward accumulates into it; give the "
                         f"parameter a writeable gradient (e.g. p.grad = np.zeros_like(p.data))")
    if not g.flags.c_contiguous:
        raise ValueError(f"{name}.grad: expected a C-contiguous array")
    return g


def _mismatch(data, shape, dtype):
    """What is wrong with a parameter's data, for _check_parameters' message."""
    if data.shape != shape:
        return f"expected {shape}, got {data.shape}"
    return f"expected dtype {dtype} (the module's), got {data.dtype}"


class Parameter:
    """A trainable array `data` with its accumulated gradient `grad` (same shape and dtype).

    As torch.nn.Parameter where it makes sense for an array: shape, ndim, dtype, numel(),
    size(dim=None), np.asarray(p) (a view of data), requires_grad. grad starts as zeros and
    is None after zero_grad() (set_to_none=True, torch's default) until a backward
    accumulates into it again. requires_grad=False freezes the parameter: backward adds
    nothing to its grad and the optimizers leave it unchanged. An array assigned to data that
    is not C-contiguous (a transposed or strided view) is stored as a C-contiguous copy, as
    the kernels read it; anything else is stored as given and checked at the next forward.
    """

    __slots__ = ("_data", "grad", "_requires_grad")

    def __init__(self, data, requires_grad=True):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = requires_grad

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)  # keeps 0-d
        self._data = value

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be a bool, got {type(value).__name__}")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad in place; returns self."""
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    def numel(self):
        """The number of elements (an int)."""
        return int(self.data.size)

    def size(self, dim=None):
        """The shape tuple, or the length of axis `dim` (negative counts from the end), as
        torch's Tensor.size()."""
        if dim is None:
            return self.data.shape
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"size(): argument 'dim' must be int, not {type(dim).__name__}")
        nd = self.data.ndim
        if nd == 0:
            raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
        if not -nd <= dim < nd:
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-nd}, {nd - 1}], but got {dim})")
        return self.data.shape[dim]

    def __array__(self, dtype=None, copy=None):
        """np.asarray(p): the data itself (no copy) unless a dtype conversion or copy=True
        asks for one; copy=False with a conversion raises ValueError (numpy 2's protocol)."""
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data.copy() if copy else self.data
        if copy is False:
            raise ValueError(f"converting a {self.data.dtype} parameter to {np.dtype(dtype)} "
                             "needs a copy, but copy=False")
        return self.data.astype(dtype)

    def _grad_target(self):
        """The array backward accumulates this parameter's gradient into (zeros allocated
        when grad is None), or None when it is frozen (requires_grad=False)."""
        if not self._requires_grad:
            return None
        if self.grad is None:
            self.grad = np.zeros_like(self.data)
        return self.grad

    def accumulate_grad(self, grad):
        """grad += the given gradient (allocated if None); nothing when frozen. For the
        backward of a Module of one's own."""
        target = self._grad_target()
        if target is not None:
            target += grad

    def zero_grad(self, set_to_none=True):
        """Drop the gradient (grad = None), or fill it with zeros if set_to_none=False."""
        if set_to_none:
            self.grad = None
        elif self.grad is not None:
            self.grad.fill(0)

    def __repr__(self):
        frozen = "" if self._requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


def freeze(module):
    """A copy of `module` for inference only, whose weights can no longer change, as
    torch.jit.freeze or an ONNX Runtime session gives: in eval mode, every parameter a
    read-only copy that cannot be made writeable again (an in-place edit raises) and has no
    gradient, so that recurrent layers pack their weights once, at the first call, instead
    of checking at every call that they have not changed (rnn.cached_panels). A parameter
    given a new array is checked again. The module itself is left as it was; train() on the
    copy raises."""
    if not isinstance(module, Module):
        raise TypeError(f"freeze expects an rnnx Module, got {type(module).__name__}")
    frozen = copy.deepcopy(module)
    frozen.eval()
    frozen.clear_records()
    for m in frozen.modules():
        object.__setattr__(m, "_frozen", True)
        m._make_parameters_immutable()
    return frozen


# the arrays training-mode calls returned and that are still referenced: id -> weak reference
_OUTPUTS = {}
# per thread, the training-mode calls under way (outermost first), each with the records
# pushed during it (by the module or any module it calls)
_CALLS = threading.local()


def _forget_output(ref):
    _OUTPUTS.pop(ref.key, None)


class _OutputRef(weakref.ref):
    __slots__ = ("key",)


def _tracked(array, inputs):
    """A weak reference to an array a training-mode call returns: to `array` itself if an
    inner call returned it already (a Sequential returns its last child's output) or if it
    is one of the call's arguments (Identity, ReLU(inplace=True)), else to a new view of it,
    which only the caller holds (a record may hold the array itself). Returns (the array to
    return, its weak reference)."""
    ref = _OUTPUTS.get(id(array))
    if ref is not None and ref() is array:
        return array, ref
    if any(array is arg for arg in inputs):
        return array, weakref.ref(array)
    view = array.view()
    ref = _OutputRef(view, _forget_output)
    ref.key = id(view)
    _OUTPUTS[ref.key] = ref
    return view, ref


def _track_outputs(result, inputs, refs):
    """result with its arrays (in tuples, lists and named tuples such as PackedSequence)
    replaced by tracked ones (see _tracked), their weak references appended to refs."""
    if isinstance(result, np.ndarray):
        result, ref = _tracked(result, inputs)
        refs.append(ref)
        return result
    if isinstance(result, (tuple, list)):
        items = [_track_outputs(item, inputs, refs) for item in result]
        if isinstance(result, list):
            return items
        return type(result)._make(items) if hasattr(result, "_make") else tuple(items)
    return result


def _exclusive(method):
    """method (a Module's forward call or backward) run holding the module's guard: entered
    while another thread is inside a guarded call of the same module, it raises."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        with self._guarded(method.__name__):
            return method(self, *args, **kwargs)
    return guarded


class Module:
    """Base class of every rnnx layer, loss and container, and of a model of one's own.

    rnnx has no autograd: a module of one's own writes forward and backward. Assign
    Parameters and child Modules as attributes in __init__ (after super().__init__()), as in
    torch.nn; forward saves what backward needs with self._push_record(...) (kept in training
    mode outside no_grad() only); backward(grad_output) takes it back with self._pop_record()
    (last in, first out), calls the children's backward in reverse order, adds parameter
    gradients with p.accumulate_grad(g), and returns the gradient of forward's input (None
    for integer input, or when called with input_grad=False):

        class Scale(rnnx.Module):                       # y = x * w, w of shape (F,)
            def __init__(self, features):
                super().__init__()
                self.w = rnnx.Parameter(np.ones(features, np.float32))

            def forward(self, x):
                self._push_record(x)
                return x * self.w.data

            def backward(self, grad_y, *, input_grad=True):
                x = self._pop_record()
                self.w.accumulate_grad((grad_y * x).reshape(-1, x.shape[-1]).sum(0))
                return grad_y * self.w.data if input_grad else None

    README.md, "Custom modules", has a whole text classifier (Embedding -> bidirectional GRU
    -> MeanOverTime -> Linear). Two class attributes tell a Sequential what a module takes:
    accepts_lengths (forward(x, lengths=...) and PackedSequence input: recurrent layers, the
    over-time reductions) and acts_per_position (each position of the leading axes is
    computed on its own, so a PackedSequence's data can go through it: Embedding, Linear,
    Dropout, the activations).
    """

    accepts_lengths = False
    acts_per_position = False

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_records", [])
        object.__setattr__(self, "_record_outputs", [])  # per record: its outputs' weak refs
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_frozen", False)
        object.__setattr__(self, "_guard", threading.RLock())

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:
            cls.backward = _exclusive(cls.__dict__["backward"])

    def __getstate__(self):
        """For copy and pickle: no lock, and pending records' outputs unknown (kept)."""
        state = dict(self.__dict__)
        del state["_guard"]
        state["_record_outputs"] = [[] for _ in self._records]
        return state

    def __setstate__(self, state):
        """A frozen module's copy is frozen too: its parameters immutable again (a copy of an
        immutable array is writeable)."""
        self.__dict__.update(state)
        object.__setattr__(self, "_guard", threading.RLock())
        if self._frozen:
            self._make_parameters_immutable()

    def _make_parameters_immutable(self):
        for p in self._parameters.values():
            # backed by an immutable bytes object: numpy refuses to make it (or any view of
            # it) writeable again, so it cannot change while it is the parameter's data
            p.data = np.frombuffer(p.data.tobytes(), p.data.dtype).reshape(p.data.shape)
            p.grad = None
            p.requires_grad = False

    @contextlib.contextmanager
    def _guarded(self, what):
        """Hold the module's guard for one call; RuntimeError if another thread holds it
        (re-entry from the same thread, e.g. super().backward(), is allowed)."""
        if not self._guard.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self).__name__}.{what}() called while another thread is inside a "
                f"training-mode forward or a backward of the same module: a module in training "
                f"mode must not be used by two threads at once (its records and gradients are "
                f"shared); give each thread its own copy (copy.deepcopy) and combine gradients")
        try:
            yield
        finally:
            self._guard.release()

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("call Module.__init__() before assigning attributes")
        # a Parameter (Module) replacing one keeps its place in the order, as in torch
        if not isinstance(value, Parameter):
            params.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("_parameters", ()):
            return d["_parameters"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    # -- traversal -----------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def apply(self, fn):
        """fn(m) for every child module (recursively), then fn(self); returns self (as torch's,
        e.g. for a custom initialisation)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def named_parameters(self, prefix="", recurse=True):
        """(name, Parameter) pairs in registration order, children after own parameters."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, p in mod._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse=True):
        return [p for _, p in self.named_parameters(recurse=recurse)]

    # -- modes and gradients -------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (records for backward, dropout active); returns self."""
        if mode and self._frozen:
            raise RuntimeError(f"{type(self).__name__} is frozen (rnnx.freeze): it runs inference "
                               "only; train the module it was frozen from")
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: no records, no dropout; returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Every parameter's grad set to None (torch's default) or, with set_to_none=False,
        to zeros."""
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad of every parameter (False freezes them); returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def clear_records(self):
        """Drop every pending forward record of this module and its children (e.g. after a
        forward whose backward is skipped)."""
        for m in self.modules():
            m._records.clear()
            m._record_outputs.clear()

    # -- checks of what forward reads and backward writes ------------------------------------
    def _expect_parameters(self):
        """Cache the parameters' current shapes as the ones forward requires (layers call it at
        the end of __init__); _check_parameters compares against them."""
        object.__setattr__(self, "_parameter_shapes",
                           tuple((name, p.data.shape) for name, p in self._parameters.items()))

    def _check_parameters(self):
        """ValueError/TypeError naming the first parameter whose data is not an array of its
        expected shape and the module's dtype (a transposed or resized .data); Parameter
        stores any array it is given C-contiguous."""
        params, dtype = self._parameters, self.dtype
        for name, shape in self._parameter_shapes:
            p = params.get(name)
            data = getattr(p, "data", None)
            if not isinstance(data, np.ndarray):
                raise TypeError(f"{type(self).__name__}.{name}: expected a Parameter holding a "
                                f"numpy array, got {type(data if p is not None else p).__name__}")
            if data.shape != shape or data.dtype != dtype:
                raise ValueError(f"{type(self).__name__}.{name}: "
                                 + _mismatch(data, shape, dtype))

    def _check_gradients(self):
        """grad_buffer() of every own parameter that takes a gradient (frozen ones,
        requires_grad=False, get none): all checked before backward writes any."""
        for name, p in self._parameters.items():
            if p.requires_grad:
                grad_buffer(f"{type(self).__name__}.{name}", p)

    def _fingerprint_weights(self, names):
        """(name, fingerprint) of the named parameters, which backward reads: taken by forward
        in training mode, compared by _check_unmodified."""
        params = self._parameters
        return tuple((name, fingerprint(params[name].data)) for name in names)

    def _check_unmodified(self, fingerprints):
        """RuntimeError if a parameter that backward reads changed since its forward."""
        params = self._parameters
        for name, fp in fingerprints:
            if fingerprint(params[name].data) != fp:
                raise RuntimeError(
                    f"{MODIFIED_IN_PLACE}: {type(self).__name__}.{name} changed between the "
                    f"forward call and this backward (e.g. an optimizer step before backward); "
                    f"call backward before changing the weights, or clear_records() and run "
                    f"forward again")

    # -- dtype and device ------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        """module.to(np.float64), .to("cpu"), .to("cpu", np.float64), as torch's: casts every
        parameter (and its gradient) and every float array attribute of every submodule to
        dtype, and the modules' own dtype, in place; returns self. The device can only be the
        CPU. Build the optimizer after a cast: its state keeps the dtype it was made with."""
        for arg in args:
            if isinstance(arg, str) or type(arg).__name__ == "device":
                device = arg
            else:
                dtype = arg
        if device is not None and str(device) != "cpu":
            raise ValueError(f"rnnx runs on the CPU only, got device {device!r}")
        if dtype is None:
            return self
        dt = check_dtype(dtype)
        if any(m._records for m in self.modules()):
            raise RuntimeError("cannot change the dtype with forward records pending: call "
                               "backward() or clear_records() first")
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dt, copy=False)
                if p.grad is not None:
                    p.grad = p.grad.astype(dt, copy=False)
            for name, value in list(vars(m).items()):
                if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    object.__setattr__(m, name, value.astype(dt, copy=False))
            if getattr(m, "dtype", None) is not None:
                m.dtype = dt
        return self

    def float(self):
        """to(np.float32)."""
        return self.to(np.float32)

    def double(self):
        """to(np.float64)."""
        return self.to(np.float64)

    # -- state ----------------------------------------------------------------------
    def state_dict(self):
        """name -> copy of the parameter array, PyTorch's names and layouts."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters; every key and shape is checked before any change.

        Arrays of another float dtype are cast to the parameter's dtype. Missing or unexpected
        keys raise RuntimeError listing them (as torch's), unless strict=False. Returns the
        named tuple (missing_keys, unexpected_keys).
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            errors = [f"{what} key(s) in state_dict: " + ", ".join(f'"{k}"' for k in keys) + ". "
                      for what, keys in (("Missing", missing), ("Unexpected", unexpected)) if keys]
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        staged = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.dtype.kind not in "fiu" or value.dtype.kind == "c":
                raise TypeError(f"{name}: expected a real numeric array, got dtype {value.dtype}")
            if value.shape != p.data.shape:
                raise ValueError(f"size mismatch for {name}: copying a param with shape "
                                 f"{value.shape}, the shape in current model is {p.data.shape}")
            staged.append((p, value))
        for p, value in staged:
            p.data[...] = value
        return IncompatibleKeys(missing, unexpected)

    # -- forward / backward records ---------------------------------------------------
    @property
    def _recording(self):
        """Whether a forward call records what backward needs: in training mode, outside
        no_grad(). The one place that decides it."""
        return self.training and is_grad_enabled()

    def _push_record(self, record):
        if self._recording:
            records = self._records
            records.append(record)
            outputs = []  # filled when the calls under way return (empty: unknown, kept)
            self._record_outputs.append(outputs)
            calls = getattr(_CALLS, "stack", None)
            if calls:
                calls[-1].append(outputs)
            if len(records) == RECORDS_WARNING_THRESHOLD + 1:
                warnings.warn(
                    f"{type(self).__name__} holds {len(records)} forward records waiting for "
                    f"backward(): every forward in training mode keeps what its backward needs "
                    f"until a backward() call consumes it. For forwards without backward use "
                    f"model.eval() or `with rnnx.no_grad():`; drop pending records with "
                    f"model.clear_records()", RecordsWarning, stacklevel=4)

    def _peek_record(self):
        """The most recent forward record, left in place (backward validates its gradient
        against it first, so that a rejected gradient does not consume the record)."""
        if not self._records:
            raise RuntimeError(f"{type(self).__name__}.backward() called without a pending forward "
                               "call in training mode (each backward consumes one forward record)")
        return self._records[-1]

    def _pop_record(self):
        """Remove and return the most recent forward record."""
        record = self._peek_record()
        self._records.pop()
        if self._record_outputs:
            self._record_outputs.pop()
        return record

    def _drop_unreferenced_records(self):
        """Drop every pending record if none has an output still referenced: neither the
        output of the call that pushed it nor that of any call it was made in (a Sequential's,
        a model's of one's own). Records whose outputs are unknown (pushed by a forward()
        called directly) count as referenced."""
        outputs = self._record_outputs
        if len(outputs) != len(self._records):  # _records edited directly: outputs unknown
            outputs[:] = [[] for _ in self._records]
        if outputs and all(refs and all(ref() is None for ref in refs) for refs in outputs):
            self._records.clear()
            outputs.clear()

    def __call__(self, *args, **kwargs):
        """forward(*args, **kwargs); in training mode (records kept), under the module's
        thread guard, after dropping pending records no output refers to, and with the
        returned arrays tracked (see the module docstring)."""
        if not self._recording:
            return self.forward(*args, **kwargs)
        with self._guarded("forward"):
            self._drop_unreferenced_records()
            calls = getattr(_CALLS, "stack", None)
            if calls is None:
                calls = _CALLS.stack = []
            pushed = []
            calls.append(pushed)
            try:
                result = self.forward(*args, **kwargs)
            finally:
                calls.pop()
            if pushed:
                refs = []
                result = _track_outputs(result, args, refs)
                for outputs in pushed:
                    outputs.extend(refs)
                if calls:
                    calls[-1].extend(pushed)
            return result

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  '"forward" function')

    def backward(self, *args, **kwargs):
        raise NotImplementedError(
            f"Module [{type(self).__name__}] has no backward. rnnx has no autograd: write "
            "`def backward(self, grad_output, *, input_grad=True)` returning the gradient of "
            "the forward input (None when input_grad is False), with forward saving what it "
            "needs by self._push_record(...) and backward taking it back by self._pop_record(), "
            "and parameter gradients added by p.accumulate_grad(g); see help(rnnx.Module) and "
            "the README's \"Custom modules\" section for a whole example")

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")
