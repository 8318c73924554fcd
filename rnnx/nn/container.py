"""Sequential container and the adapters that connect recurrent layers to feed-forward ones.

Gradient convention: a module whose forward returns a tuple takes its output gradient in the
same structure, unpacked as positional arguments (`rnn.backward(grad_out, grad_h_n)`,
`lstm.backward(grad_out, (grad_h_n, grad_c_n))`); a None gradient means zeros.
"""
import operator
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from .module import Module, accepts_input_grad, check_grad_shape


class _ModuleSequence(Module):
    """A module whose children, in order, are its items: len() and iteration over them."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(_ModuleSequence):
    """Chains modules: forward(x) = m_k(...m_1(x)); backward(*grad) runs their backward in reverse.

    Children are named '0', '1', ... (or by the keys of a single OrderedDict argument), so
    parameter names match torch ('0.weight_ih_l0', '2.weight'). Each training-mode forward
    pushes one record; backward pops it (LIFO).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named = modules[0].items()
        else:
            named = ((str(i), m) for i, m in enumerate(modules))
        for name, module in named:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: {name} is not a Module, got {type(module).__name__}")
            setattr(self, name, module)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[idx]

    def forward(self, x, **kwargs):
        """x -> output of the last module; records which inputs/outputs were tuples.

        Keyword arguments go to the first module, e.g. `model(x, lengths=lengths)` for a
        padded batch whose first module is a recurrent layer.
        """
        tuple_flags = []
        for i, module in enumerate(self):
            y = module(x, **kwargs) if i == 0 else module(x)
            tuple_flags.append((isinstance(x, tuple), isinstance(y, tuple)))
            x = y
        self._push_record(tuple_flags)
        return x

    def backward(self, *grad, input_grad=True):
        """grad has the structure of the forward output (one array, or the tuple's items);
        returns the gradient w.r.t. the forward input. input_grad=False: it is not wanted;
        the first module skips computing it if its backward takes input_grad (None is then
        returned)."""
        steps = self.backward_steps(*grad, input_grad=input_grad)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def backward_steps(self, *grad, input_grad=True):
        """backward() one child at a time: a generator that yields each child (last to first)
        once its backward has run, and returns the gradient w.r.t. the forward input (e.g. for
        DistributedDataParallel to reduce a child's gradients while the earlier ones run)."""
        tuple_flags = self._pop_record()
        g = grad if tuple_flags and tuple_flags[-1][1] else grad[0]
        first = len(tuple_flags) - 1
        for i, (module, (input_was_tuple, output_was_tuple)) in enumerate(
                zip(reversed(self), reversed(tuple_flags))):
            skip = i == first and not input_grad and accepts_input_grad(module)
            kwargs = {"input_grad": False} if skip else {}
            g = module.backward(*g, **kwargs) if output_was_tuple else module.backward(g, **kwargs)
            if isinstance(g, tuple) and not input_was_tuple:
                g = g[0]  # a recurrent layer fed a single array also returns its state gradient
            yield module
        return g


class ModuleList(_ModuleSequence):
    """Holds modules in a list, registered as children '0', '1', ... (parameter names
    '0.weight', '1.bias_ih_l0', as torch's): indexing, slicing (a new ModuleList), len, iter,
    append, extend, insert, pop, del, +, +=. It has no forward/backward of its own: the
    module holding it calls its items (and their backward, in reverse order)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _set_list(self, modules):
        """Register `modules` as the children '0', '1', ... (TypeError for a non-Module)."""
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"{type(m).__module__}.{type(m).__name__} is not a Module subclass")
        self._modules.clear()
        self._modules.update((str(i), m) for i, m in enumerate(modules))

    def _index(self, idx):
        idx = operator.index(idx)
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range")
        return idx % len(self)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self)[idx])
        return self._modules[str(self._index(idx))]

    def __setitem__(self, idx, module):
        modules = list(self)
        modules[self._index(idx)] = module
        self._set_list(modules)

    def __delitem__(self, idx):
        modules = list(self)
        del modules[idx if isinstance(idx, slice) else self._index(idx)]
        self._set_list(modules)

    def append(self, module):
        """Add module at the end; returns self."""
        self._set_list(list(self) + [module])
        return self

    def extend(self, modules):
        """Add the modules of an iterable at the end; returns self."""
        if not isinstance(modules, Iterable):
            raise TypeError(f"ModuleList.extend should be called with an iterable, but got "
                            f"{type(modules).__name__}")
        self._set_list(list(self) + list(modules))
        return self

    def insert(self, index, module):
        """Insert module before index (as list.insert)."""
        modules = list(self)
        modules.insert(operator.index(index), module)
        self._set_list(modules)

    def pop(self, idx=-1):
        """Remove and return the module at idx (the last by default)."""
        module = self[idx]
        del self[idx]
        return module

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return type(self)(list(self) + list(other))


def _unpack_recurrent_output(inputs, who):
    """(out, state) from a recurrent layer's output tuple; TypeError otherwise."""
    if not (isinstance(inputs, tuple) and len(inputs) == 2):
        raise TypeError(f"{who} expects a recurrent layer's output (out, h_n) or "
                        f"(out, (h_n, c_n)), got {type(inputs).__name__}")
    return inputs


class LastHidden(Module):
    """The last layer's final hidden state from (out, h_n) or (out, (h_n, c_n)).

    h_n: (num_layers * num_directions, B, H) or unbatched (num_layers * num_directions, H).
    Returns h_n[-1] of shape (B, H), or [h_n[-2], h_n[-1]] concatenated on the feature axis
    (B, 2H) when bidirectional. backward(grad) returns (None, grad_h_n) for the GRU/RNN form and
    (None, (grad_h_n, None)) for the LSTM form, grad_h_n being zero except the rows used.
    """

    def __init__(self, bidirectional=False):
        super().__init__()
        self.bidirectional = bool(bidirectional)

    def forward(self, inputs):
        _, state = _unpack_recurrent_output(inputs, "LastHidden")
        is_lstm = isinstance(state, tuple)
        h_n = np.asarray(state[0] if is_lstm else state)
        rows = 2 if self.bidirectional else 1
        if h_n.ndim not in (2, 3) or h_n.shape[0] < rows or h_n.shape[0] % rows:
            raise ValueError(f"LastHidden(bidirectional={self.bidirectional}): h_n must have shape "
                             f"(num_layers*num_directions, [B,] H), got {h_n.shape}")
        self._push_record((h_n.shape, h_n.dtype, is_lstm))
        return np.concatenate(list(h_n[-rows:]), axis=-1) if rows == 2 else h_n[-1]

    def backward(self, grad):
        shape, dtype, is_lstm = self._peek_record()
        rows = 2 if self.bidirectional else 1
        check_grad_shape(self, "grad", np.shape(grad), shape[1:-1] + (rows * shape[-1],))
        grad = np.asarray(grad, dtype=dtype)
        self._pop_record()
        grad_h_n = np.zeros(shape, dtype)
        grad_h_n[-rows:] = np.stack(np.split(grad, rows, axis=-1))
        return (None, (grad_h_n, None)) if is_lstm else (None, grad_h_n)

    def extra_repr(self):
        return f"bidirectional={self.bidirectional}" if self.bidirectional else ""


class LastTimeStep(Module):
    """The last time step out[-1] (out[:, -1] if batch_first) of a recurrent layer's (out, state).

    out: (T, B, F) or (B, T, F) if batch_first, or unbatched (T, F). backward(grad) returns
    (grad_out, None) with grad_out zero except at the last time step.
    """

    def __init__(self, batch_first=False):
        super().__init__()
        self.batch_first = bool(batch_first)

    def _time_index(self, ndim):
        return (slice(None), -1) if self.batch_first and ndim == 3 else (-1,)

    def forward(self, inputs):
        out, _ = _unpack_recurrent_output(inputs, "LastTimeStep")
        out = np.asarray(out)
        if out.ndim not in (2, 3):
            raise ValueError(f"LastTimeStep: out must be (T, [B,] F), got shape {out.shape}")
        self._push_record((out.shape, out.dtype))
        return out[self._time_index(out.ndim)]

    def backward(self, grad):
        shape, dtype = self._peek_record()
        grad_out = np.zeros(shape, dtype)
        idx = self._time_index(len(shape))
        check_grad_shape(self, "grad", np.shape(grad), grad_out[idx].shape)
        self._pop_record()
        grad_out[idx] = grad
        return grad_out, None

    def extra_repr(self):
        return f"batch_first={self.batch_first}"
