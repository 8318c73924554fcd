"""Sequential container and the adapters that connect recurrent layers to feed-forward ones.

Gradient convention: a module whose forward returns a tuple takes its output gradient in the
same structure, unpacked as positional arguments (`rnn.backward(grad_out, grad_h_n)`,
`lstm.backward(grad_out, (grad_h_n, grad_c_n))`); a None gradient means zeros.
"""
import operator
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from ..utils.rnn import PackedSequence
from .module import Module, Record, accepts_input_grad, check_grad_shape


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

    accepts_lengths = True

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

    def forward(self, x, lengths=None, **kwargs):
        """x -> output of the last module; records which inputs/outputs were tuples.

        lengths= (padded sequences of these lengths) goes to every child that declares
        accepts_lengths (recurrent layers, LastTimeStep, MeanOverTime, MaxOverTime, a nested
        Sequential), past the others (Embedding, Dropout, activations, Linear). A
        PackedSequence goes as it is to those children; a child that acts_per_position
        (Embedding, Dropout, activations, Linear, Identity) is applied to its data, the
        result packed alike. Other keyword arguments go to the first module.
        """
        if lengths is not None and not any(m.accepts_lengths for m in self):
            raise TypeError(f"Sequential got lengths=, but none of its modules takes it "
                            f"({', '.join(type(m).__name__ for m in self)}); a Module of "
                            f"one's own that does declares accepts_lengths = True")
        steps = []  # per child: whether its input and output were tuples, its packed input
        for i, (name, module) in enumerate(self._modules.items()):
            call_kwargs = dict(kwargs) if i == 0 else {}
            if lengths is not None and module.accepts_lengths:
                call_kwargs["lengths"] = lengths
            packed = isinstance(x, PackedSequence) and not module.accepts_lengths
            if packed:
                if not module.acts_per_position:
                    raise TypeError(f"Sequential: module {name} ({type(module).__name__}) "
                                    f"cannot take a PackedSequence: it declares neither "
                                    f"accepts_lengths nor acts_per_position")
                y = PackedSequence(module(x.data, **call_kwargs), x.batch_sizes,
                                   x.sorted_indices, x.unsorted_indices)
            else:
                y = module(x, **call_kwargs)
            steps.append(Record(input_was_tuple=_is_tuple(x), output_was_tuple=_is_tuple(y),
                                packed=x if packed else None))
            x = y
        self._push_record(Record(steps=steps))
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
        steps = self._pop_record().steps
        g = grad if steps and steps[-1].output_was_tuple else grad[0]
        first = len(steps) - 1
        for i, (module, step) in enumerate(zip(reversed(self), reversed(steps))):
            skip = i == first and not input_grad and accepts_input_grad(module)
            kwargs = {"input_grad": False} if skip else {}
            packed = step.packed
            if packed is not None:  # applied to the packed data: so is its backward
                g = module.backward(g.data if isinstance(g, PackedSequence) else g, **kwargs)
                if g is not None:
                    g = PackedSequence(g, packed.batch_sizes, packed.sorted_indices,
                                       packed.unsorted_indices)
            else:
                g = (module.backward(*g, **kwargs) if step.output_was_tuple
                     else module.backward(g, **kwargs))
            if isinstance(g, tuple) and not step.input_was_tuple:
                g = g[0]  # a recurrent layer fed a single array also returns its state gradient
            yield module
        return g


def _is_tuple(value):
    """Whether a module's input or output is a tuple of several values (a PackedSequence,
    a namedtuple, is one value)."""
    return isinstance(value, tuple) and not isinstance(value, PackedSequence)


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
    """The last layer's final hidden state from (out, h_n) or (out, (h_n, c_n)), as PyTorch
    users write h_n[-1], or torch.cat([h_n[-2], h_n[-1]], 1) after a bidirectional layer.

    h_n: (num_layers * D, B, H) or unbatched (num_layers * D, H), D = 2 directions when
    bidirectional. Returns h_n[-1] (B, H) when D = 1 and both directions' final states
    [h_n[-2], h_n[-1]] side by side (B, 2H) when D = 2: never one direction alone. D comes
    from the layer's output, whose features are D * H (D * proj_size); bidirectional=True or
    False states it, and a layer that disagrees raises ValueError. The final states are each
    sequence's at its own end with lengths= or a PackedSequence. backward(grad) returns
    (None, grad_h_n) for the GRU/RNN form and (None, (grad_h_n, None)) for the LSTM form,
    grad_h_n being zero except the rows used.
    """

    def __init__(self, bidirectional=None):
        super().__init__()
        self.bidirectional = None if bidirectional is None else bool(bidirectional)

    def forward(self, inputs):
        out, state = _unpack_recurrent_output(inputs, "LastHidden")
        is_lstm = isinstance(state, tuple)
        h_n = np.asarray(state[0] if is_lstm else state)
        rows = self._directions(out, h_n)
        if h_n.ndim not in (2, 3) or h_n.shape[0] < rows or h_n.shape[0] % rows:
            raise ValueError(f"LastHidden: h_n must have shape (num_layers*num_directions, "
                             f"[B,] H) with {rows} direction(s), got {h_n.shape}")
        self._push_record((h_n.shape, h_n.dtype, is_lstm, rows))
        return np.concatenate(list(h_n[-rows:]), axis=-1) if rows == 2 else h_n[-1]

    def _directions(self, out, h_n):
        """D: the layer output's features over h_n's (checked against bidirectional)."""
        if out is None:  # (None, h_n): no output to read D from
            if self.bidirectional is None:
                raise ValueError("LastHidden() reads the number of directions from the layer "
                                 "output, got None: give (out, h_n), or bidirectional=True/False")
            return 2 if self.bidirectional else 1
        out_shape = np.shape(out.data if isinstance(out, PackedSequence) else out)
        h_shape = np.shape(h_n)
        directions, rest = divmod(out_shape[-1], h_shape[-1]) if out_shape and h_shape else (0, 0)
        if rest or directions not in (1, 2):
            raise ValueError(f"LastHidden: a layer output of shape {out_shape} is not 1 or 2 "
                             f"directions of the features of h_n {h_shape}")
        if self.bidirectional is not None and self.bidirectional != (directions == 2):
            layer = "a bidirectional" if directions == 2 else "a unidirectional"
            raise ValueError(f"LastHidden(bidirectional={self.bidirectional}) after {layer} "
                             f"layer: use LastHidden() (or bidirectional={directions == 2}), "
                             f"which returns {'both directions' if directions == 2 else 'h_n[-1]'}")
        return directions

    def backward(self, grad):
        shape, dtype, is_lstm, rows = self._peek_record()
        check_grad_shape(self, "grad", np.shape(grad), shape[1:-1] + (rows * shape[-1],))
        grad = np.asarray(grad, dtype=dtype)
        self._pop_record()
        grad_h_n = np.zeros(shape, dtype)
        grad_h_n[-rows:] = np.stack(np.split(grad, rows, axis=-1))
        return (None, (grad_h_n, None)) if is_lstm else (None, grad_h_n)

    def extra_repr(self):
        return "" if self.bidirectional is None else f"bidirectional={self.bidirectional}"
