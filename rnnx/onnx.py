"""rnnx.onnx: export rnnx models to ONNX (needs the `onnx` package: pip install "rnnx[onnx]").

    rnnx.onnx.export(model, x, "model.onnx")

The graph computes the model's eval-mode forward with ONNX's own operators: a recurrent layer
becomes one ONNX LSTM/GRU/RNN node per layer (both directions in one node), a cell one such
node over a single time step; an LSTM with proj_size, which ONNX's LSTM cannot express, a
Scan over time of its step per layer and direction. Linear is a Gemm (MatMul + Add for input
that is not 2-D); Embedding a Gather of its table; ReLU, Tanh, Sigmoid their operators;
Dropout and Identity nothing; LastHidden a Gather (Slice, Transpose and Reshape when
bidirectional); LastTimeStep a Gather, MeanOverTime a ReduceMean and MaxOverTime a ReduceMax
over time, or with lengths a step mask (Where) and a ReduceSum / ReduceMax. Weights are
initializers with their gate blocks in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n ->
z,r,h with linear_before_reset=1 (torch's GRU applies r to the hidden matmul plus its bias).
batch_first is a Transpose on each side.
"""
import os

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:
    raise ImportError("rnnx.onnx needs the onnx package: pip install onnx (or the rnnx[onnx] "
                      "extra)") from exc

from ._files import atomic_write
from ._kernels._recurrent import Cell
from .nn import (GRU, LSTM, RNN, Dropout, Embedding, GRUCell, Identity, LastHidden, LastTimeStep,
                 Linear, LSTMCell, MaxOverTime, MeanOverTime, ReLU, RNNCell, Sequential, Sigmoid,
                 Tanh)
from .nn.cells import RNNCellBase
from .nn.rnn import RNNBase

__all__ = ["export", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 17  # run by ONNX Runtime 1.14 (2023) and later
MIN_OPSET = 13      # Squeeze / Unsqueeze take their axes as an input from opset 13 on

# ONNX operator of each cell type, and torch's gate blocks in ONNX's gate order.
_OPERATOR = {Cell.LSTM: ("LSTM", (0, 3, 1, 2)), Cell.GRU: ("GRU", (1, 0, 2)),
             Cell.RNN_TANH: ("RNN", (0,)), Cell.RNN_RELU: ("RNN", (0,))}
_SUPPORTED = (LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear, Dropout, Sequential,
              LastHidden, LastTimeStep, MeanOverTime, MaxOverTime, Embedding, ReLU, Tanh, Sigmoid,
              Identity)
_SUPPORTED_TEXT = ("LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear, Embedding, Dropout, "
                   "Identity, ReLU, Tanh, Sigmoid, and Sequential with LastHidden, LastTimeStep, "
                   "MeanOverTime and MaxOverTime")
_ACTIVATIONS = {ReLU: "Relu", Tanh: "Tanh", Sigmoid: "Sigmoid"}
_OVER_TIME = (LastTimeStep, MeanOverTime, MaxOverTime)
_ELEM_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class _Value:
    """A tensor of the graph: its name, its dims (ints, or "batch" / "time" when dynamic) and
    the name a graph output of it gets by default."""

    __slots__ = ("name", "dims", "label")

    def __init__(self, name, dims, label="output"):
        self.name, self.dims, self.label = name, tuple(dims), label


class _Builder:
    """Collects the nodes and initializers of one graph. Every tensor gets a fresh name
    starting with "/", apart from the graph's inputs and outputs, whose names are reserved."""

    def __init__(self, reserved, opset=DEFAULT_OPSET, elem=TensorProto.FLOAT):
        self.nodes, self.initializers = [], []
        self._taken = set(reserved)
        self.opset, self.elem = opset, elem  # the graph's float element type

    def fresh(self, hint):
        name, k = "/" + hint, 0
        while name in self._taken:
            k += 1
            name = f"/{hint}_{k}"
        self._taken.add(name)
        return name

    def subgraph(self):
        """A builder of a subgraph's nodes: same names in use, initializers in this graph."""
        sub = _Builder((), self.opset, self.elem)
        sub._taken, sub.initializers = self._taken, self.initializers
        return sub

    def const(self, array, hint):
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def ints(self, values, hint="axes"):
        return self.const(np.asarray(values, np.int64), hint)

    def op(self, op_type, inputs, hint, num_outputs=1, **attrs):
        """Appends a node; its output name (a list if num_outputs > 1). Empty input names
        stand for omitted optional inputs (trailing ones are dropped)."""
        inputs = list(inputs)
        while inputs and not inputs[-1]:
            inputs.pop()
        outputs = [self.fresh(f"{hint}_{k}" if num_outputs > 1 else hint)
                   for k in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.fresh(op_type),
                                           **attrs))
        return outputs if num_outputs > 1 else outputs[0]

    def reduce(self, op_type, x, axis, hint):
        """op_type (ReduceSum, ReduceMean, ReduceMax) of x over `axis`, the axis dropped: the
        axes an input from opset 18 on (ReduceSum: 13), an attribute before."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints([axis])], hint, keepdims=0)
        return self.op(op_type, [x], hint, axes=[axis], keepdims=0)


def export(model, example_input, f, *, input_names=None, output_names=None, opset_version=None,
           dynamic_axes=True, with_lengths=False):
    """Write `model`'s eval-mode forward to the ONNX file at path `f`; returns the ModelProto.

    model: LSTM, GRU, RNN (every option), LSTMCell, GRUCell, RNNCell, Linear, Embedding
    (without max_norm), Dropout, Identity, ReLU, Tanh, Sigmoid, or a Sequential of these with
    LastHidden, LastTimeStep, MeanOverTime and MaxOverTime; float32 (float64 only without
    recurrent layers: ONNX Runtime runs LSTM, GRU and RNN in float32 only).
    example_input: x, or the tuple of the call's positional arguments (x, hx); the model is
    run on it (eval mode), and it fixes the ranks and every size that is not dynamic.
    Graph inputs, in order: x (int64 token ids when the model starts with an Embedding); h0
    (and c0 for an LSTM) for a recurrent layer or cell (default names "x", "h0", "c0"); if
    with_lengths, "lengths" (B,) int64, the valid length of each sequence, for a model with a
    module that takes lengths (what `model(x, lengths=lengths)` computes: zeros past each
    end, final states at each end, reductions over the valid steps).
    Graph outputs: the call's outputs, flattened (default names "output", "h_n", "c_n"; "h1",
    "c1" for a cell).
    dynamic_axes: batch and time axes of any size (False: fixed to the example's).
    opset_version: default DEFAULT_OPSET, at least MIN_OPSET.
    The model passes onnx.checker.check_model(full_check=True) before it is written, as
    rnnx.save writes (rnnx._files.atomic_write): whole or not at all, onto a symlink's
    target, with mode 0666 & ~umask.
    """
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"f must be a file path (str or os.PathLike), got {type(f).__name__}")
    opset = _check_opset(opset_version)
    if not isinstance(dynamic_axes, bool):
        raise TypeError(f"dynamic_axes must be True or False, got {dynamic_axes!r}")
    dtype = _check_model(model)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    _run_example(model, args)
    leaf = _first_leaf(model)
    if with_lengths and not any(isinstance(m, (RNNBase, *_OVER_TIME)) for m in model.modules()):
        raise ValueError(f"with_lengths=True needs a module that takes lengths (LSTM, GRU, RNN, "
                         f"LastTimeStep, MeanOverTime, MaxOverTime), got "
                         f"{_describe(model, leaf)}")

    default_names = ["x"] + _state_names(model) + (["lengths"] if with_lengths else [])
    input_names = _check_names(input_names, default_names, "input_names")
    b = _Builder(input_names + (list(output_names) if isinstance(output_names, (list, tuple))
                                else []), opset, _ELEM_TYPE[dtype])
    inputs = _graph_inputs(model, leaf, np.shape(args[0]), dynamic_axes, input_names,
                           with_lengths)
    states, lengths = inputs[1:], None
    if with_lengths:
        states = inputs[1:-1]
        lengths = b.op("Cast", [inputs[-1].name], "sequence_lens", to=TensorProto.INT32)
    outputs = _flatten(_convert(b, model, inputs[0], states, lengths))
    out_names = _check_names(output_names, [v.label for v in outputs], "output_names")
    _name_outputs(b, outputs, out_names, {v.name for v in inputs})

    elem = b.elem
    graph_inputs = [helper.make_tensor_value_info(v.name, elem, v.dims) for v in inputs]
    if isinstance(leaf, Embedding):
        graph_inputs[0] = helper.make_tensor_value_info(inputs[0].name, TensorProto.INT64,
                                                        inputs[0].dims)
    if with_lengths:
        graph_inputs[-1] = helper.make_tensor_value_info(inputs[-1].name, TensorProto.INT64,
                                                         inputs[-1].dims)
    graph_outputs = [helper.make_tensor_value_info(name, elem, v.dims)
                     for name, v in zip(out_names, outputs)]
    graph = helper.make_graph(b.nodes, type(model).__name__, graph_inputs, graph_outputs,
                              b.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="rnnx",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    with atomic_write(f) as fh:
        fh.write(proto.SerializeToString())
    return proto


# -- checks ---------------------------------------------------------------------------------------
def _check_opset(opset_version):
    if opset_version is None:
        return DEFAULT_OPSET
    latest = onnx.defs.onnx_opset_version()
    if (isinstance(opset_version, bool) or not isinstance(opset_version, int)
            or not MIN_OPSET <= opset_version <= latest):
        raise ValueError(f"opset_version must be an int from {MIN_OPSET} to {latest} (the "
                         f"installed onnx's latest), got {opset_version!r}")
    return opset_version


def _check_model(model):
    """The model's float dtype; TypeError / ValueError naming what cannot be exported."""
    if not hasattr(model, "named_modules"):
        raise TypeError(f"model must be an rnnx Module, got {type(model).__name__}")
    recurrent = False
    for path, module in model.named_modules("model"):
        if not any(isinstance(module, cls) and type(module).forward is cls.forward
                   for cls in _SUPPORTED):
            raise TypeError(f"rnnx.onnx.export: cannot export {path} ({type(module).__name__}); "
                            f"supported are {_SUPPORTED_TEXT}")
        if isinstance(module, Embedding) and module.max_norm is not None:
            raise ValueError(f"rnnx.onnx.export: cannot export {path}: Embedding(max_norm=...) "
                             f"renormalises the rows it looks up at every call, which a Gather "
                             f"cannot; export a copy with max_norm=None")
        recurrent |= isinstance(module, (RNNBase, RNNCellBase))
    dtypes = {p.data.dtype for p in model.parameters()}
    if len(dtypes) > 1:
        raise ValueError(f"rnnx.onnx.export: the model mixes parameter dtypes "
                         f"{sorted(map(str, dtypes))}; convert it with model.float()")
    dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
    if recurrent and dtype != np.float32:
        raise ValueError(f"rnnx.onnx.export: the model is {dtype}, but ONNX Runtime runs LSTM, "
                         f"GRU and RNN in float32 only; export model.float() instead")
    return dtype


def _run_example(model, args):
    """model(*args) in eval mode (the training flags are restored): rnnx's own checks of the
    example input."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        model(*args)
    finally:
        for m, training in flags:
            object.__setattr__(m, "training", training)


def _first_leaf(model):
    """The module that reads the graph input x (None for an empty Sequential)."""
    while isinstance(model, Sequential):
        if not len(model):
            return None
        model = model[0]
    return model


def _describe(model, leaf):
    if leaf is model or leaf is None:
        return type(model).__name__
    return f"a {type(model).__name__} starting with {type(leaf).__name__}"


def _state_names(model):
    """The default names of the state inputs of a recurrent layer or cell (none otherwise)."""
    if not isinstance(model, (RNNBase, RNNCellBase)):
        return []
    return ["h0", "c0"] if model.mode == Cell.LSTM else ["h0"]


def _check_names(names, defaults, what):
    """The graph's input or output names: `names` (a list of distinct strings, one per
    tensor) or the defaults."""
    if names is None:
        return list(defaults)
    names = list(names) if isinstance(names, (list, tuple)) else names
    if (not isinstance(names, list) or len(names) != len(defaults)
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise ValueError(f"{what} must be a list of {len(defaults)} distinct non-empty strings "
                         f"(for {', '.join(defaults)}), got {names!r}")
    return names


def _sequence_axes(model):
    """("batch", "time") or ("time", "batch"): the batch_first of the model's first module
    that reads a sequence (recurrent layer or over-time reduction); None without one."""
    for m in model.modules():
        if isinstance(m, (RNNBase, *_OVER_TIME)):
            return ("batch", "time") if m.batch_first else ("time", "batch")
    return None


def _graph_inputs(model, leaf, x_shape, dynamic, names, with_lengths):
    """The graph inputs as _Values: x, then the states of a recurrent model, then lengths."""
    ndim = len(x_shape)
    sequence = _sequence_axes(model)
    # x is a sequence batch: read by a recurrent layer or reduction, or token ids before one
    sequence_rank = (3 if isinstance(leaf, (RNNBase, *_OVER_TIME)) else
                     2 if isinstance(leaf, Embedding) and sequence else None)
    if sequence_rank is not None:
        batched = ndim == sequence_rank
        axes = sequence if batched else ("time",)
    elif isinstance(leaf, Embedding):  # ids of any shape (B, ...), every axis dynamic
        batched = ndim >= 1
        axes = ("batch",) + tuple(f"axis_{k}" for k in range(1, ndim))
    else:  # a cell's x is (B, I) or (I,); Linear's and Dropout's (B, ..., F) or (F,)
        batched = ndim >= 2
        axes = ("batch",) if batched else ()
    x_dims = axes + tuple(x_shape[len(axes):]) if dynamic else tuple(x_shape)
    batch = (x_dims[axes.index("batch")] if "batch" in axes else 1)
    inputs = [_Value(names[0], x_dims)]
    if isinstance(model, (RNNBase, RNNCellBase)):
        lead = (model.num_layers * model.num_directions,) if isinstance(model, RNNBase) else ()
        mid = (batch,) if batched else ()
        states = names[1:1 + len(_state_names(model))]
        widths = (getattr(model, "_state_size", model.hidden_size), model.hidden_size)  # h, c
        inputs += [_Value(name, lead + mid + (width,)) for name, width in zip(states, widths)]
    if with_lengths:
        inputs.append(_Value(names[-1], (batch,)))
    return inputs


def _flatten(result):
    if isinstance(result, tuple):
        return [v for item in result for v in _flatten(item)]
    return [result]


def _name_outputs(b, outputs, names, input_names):
    """Give the graph outputs their names: rename the tensor where it is made, or add an
    Identity node (an output that is a graph input, or a tensor output twice)."""
    renamed = {}
    for value, name in zip(outputs, names):
        if value.name in input_names or value.name in renamed:
            b.nodes.append(helper.make_node("Identity", [renamed.get(value.name, value.name)],
                                            [name], name=b.fresh("Identity")))
        else:
            renamed[value.name] = name
    for node in b.nodes:
        for seq in (node.input, node.output):
            for i, n in enumerate(seq):
                if n in renamed:
                    seq[i] = renamed[n]


# -- converters -----------------------------------------------------------------------------------
def _convert(b, module, x, states=(), lengths=None):
    """The graph of module(x, *states[, lengths=...]): _Values in the structure rnnx returns."""
    if isinstance(module, Sequential):
        for child in module:
            x = _convert(b, child, x, (), lengths if child.accepts_lengths else None)
        return x
    if isinstance(module, RNNBase):
        return _recurrent(b, module, x, states, lengths)
    if isinstance(module, RNNCellBase):
        return _cell(b, module, x, states)
    if isinstance(module, Linear):
        return _linear(b, module, x)
    if isinstance(module, (Dropout, Identity)):
        return x
    if isinstance(module, Embedding):
        return _Value(b.op("Gather", [b.const(module.weight.data, "embedding"), x.name],
                           "embedded", axis=0), x.dims + (module.embedding_dim,))
    if type(module) in _ACTIVATIONS:
        return _Value(b.op(_ACTIVATIONS[type(module)], [x.name], "activation"), x.dims)
    if isinstance(module, LastHidden):
        return _last_hidden(b, module, x)
    return _over_time(b, module, x, lengths)


def _layer_node(b, module, weights, x, h0, c0, lengths):
    """One ONNX LSTM/GRU/RNN node over x (T, B, I) for the directions' weights
    [(w_ih, w_hh, b_ih, b_hh, w_hr), ...]; returns its outputs Y (T, D, B, H), Y_h (D, B, H)
    [and Y_c]."""
    op_type, order = _OPERATOR[module.mode]
    H = module.hidden_size

    def reorder(a):
        return np.concatenate([a[k * H:(k + 1) * H] for k in order])

    W = np.stack([reorder(w[0].data) for w in weights])
    R = np.stack([reorder(w[1].data) for w in weights])
    bias = ""
    if weights[0][2] is not None:
        bias = b.const(np.stack([np.concatenate([reorder(w[2].data), reorder(w[3].data)])
                                 for w in weights]), "B")
    attrs = {"hidden_size": H, "direction": "bidirectional" if len(weights) == 2 else "forward"}
    if op_type == "GRU":
        attrs["linear_before_reset"] = 1
    if op_type == "RNN":
        attrs["activations"] = ["Relu" if module.mode == Cell.RNN_RELU else "Tanh"] * len(weights)
    lstm = op_type == "LSTM"
    return b.op(op_type, [x, b.const(W, "W"), b.const(R, "R"), bias, lengths or "", h0 or "",
                          c0 or ""], op_type, num_outputs=3 if lstm else 2, **attrs)


def _recurrent(b, m, x, states, lengths):
    """(out, h_n) or (out, (h_n, c_n)) of an LSTM/GRU/RNN layer stack."""
    L, D, H, P = m.num_layers, m.num_directions, m.hidden_size, m._state_size
    lstm = m.mode == Cell.LSTM
    unbatched = len(x.dims) == 2
    if unbatched:
        T, B = x.dims[0], 1
        y = b.op("Unsqueeze", [x.name, b.ints([1])], "x_batched")
    elif m.batch_first:
        B, T = x.dims[:2]
        y = b.op("Transpose", [x.name], "x_time_major", perm=[1, 0, 2])
    else:
        T, B = x.dims[:2]
        y = x.name
    states = [b.op("Unsqueeze", [s.name, b.ints([1])], "state_batched") if unbatched else s.name
              for s in states]
    mask = None
    if m.proj_size:
        if not states:
            states = [_zero_state(b, y, L * D, width, m.dtype) for width in (P, H)]
        if lengths:
            mask = _step_mask(b, y, lengths)
    h_layers, c_layers = [], []
    for layer in range(L):
        init = [(b.op("Slice", [s, b.ints([layer * D]), b.ints([(layer + 1) * D]), b.ints([0])],
                      f"state_l{layer}") if L > 1 else s) for s in states]
        if m.proj_size:
            y, h_l, c_l = _projected_layer(b, m, m.layer_weights()[layer], y, init, mask, B)
        else:
            y, h_l, c_l = _operator_layer(b, m, m.layer_weights()[layer], y, init, lengths)
        h_layers.append(h_l)
        c_layers.append(c_l)

    def finish(parts, hint):
        s = b.op("Concat", parts, hint, axis=0) if L > 1 else parts[0]
        return b.op("Squeeze", [s, b.ints([1])], hint) if unbatched else s

    if unbatched:
        y = b.op("Squeeze", [y, b.ints([1])], "output")
    elif m.batch_first:
        y = b.op("Transpose", [y], "output", perm=[1, 0, 2])
    out_dims = (T,) if unbatched else (B, T) if m.batch_first else (T, B)
    state_dims = (L * D,) + (() if unbatched else (B,))
    out = _Value(y, out_dims + (D * P,), "output")
    h_n = _Value(finish(h_layers, "h_n"), state_dims + (P,), "h_n")
    if lstm:
        return out, (h_n, _Value(finish(c_layers, "c_n"), state_dims + (H,), "c_n"))
    return out, h_n


def _operator_layer(b, m, weights, x, init, lengths):
    """One layer as an ONNX LSTM/GRU/RNN node: (out (T, B, D*H), h_n (D, B, H), c_n or None)."""
    outs = _layer_node(b, m, weights, x, *(init + ["", ""])[:2], lengths)
    if len(weights) == 1:
        y = b.op("Squeeze", [outs[0], b.ints([1])], "out")
    else:  # (T, D, B, H) -> (T, B, D*H)
        y = b.op("Transpose", [outs[0]], "out", perm=[0, 2, 1, 3])
        y = b.op("Reshape", [y, b.ints([0, 0, len(weights) * m.hidden_size], "shape")], "out")
    return y, outs[1], outs[2] if len(outs) == 3 else None


def _zero_state(b, x, rows, width, dtype):
    """Zeros (rows, B, width) for x (T, B, F)."""
    batch = b.op("Slice", [b.op("Shape", [x], "shape"), b.ints([1]), b.ints([2])], "batch")
    shape = b.op("Concat", [b.ints([rows], "rows"), batch, b.ints([width], "width")], "shape",
                 axis=0)
    zero = helper.make_tensor("value", _ELEM_TYPE[np.dtype(dtype)], [1], [0])
    return b.op("ConstantOfShape", [shape], "zero_state", value=zero)


def _step_mask(b, x, lengths):
    """(T, B, 1) bool: whether step t is within sequence b (t < lengths[b]), for x (T, B, F)."""
    mask = b.op("Less", list(_steps_and_lengths(b, x, lengths)), "mask")
    return b.op("Unsqueeze", [mask, b.ints([2])], "mask")


def _projected_layer(b, m, weights, x, init, mask, batch):
    """One layer of an LSTM with proj_size, which ONNX's LSTM cannot express: a Scan over
    time per direction (reverse: scanning backwards) of _projected_step, after one MatMul for
    the input projection of every step. Returns (out (T, B, D*P), h_n (D, B, P), c_n (D, B, H));
    with lengths, `mask` keeps the state and zeroes the output past each sequence's end (the
    reverse direction thus starts at each end)."""
    ys, hs, cs = [], [], []
    for d, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(weights):
        xw = b.op("MatMul", [x, b.const(w_ih.data.T, "W_ih_t")], "xw")
        if b_ih is not None:
            xw = b.op("Add", [xw, b.const(b_ih.data + b_hh.data, "bias")], "xw")
        h0, c0 = (b.op("Gather", [s, b.ints(d, "index")], "state", axis=0) for s in init)
        scanned = [xw] + ([mask] if mask else [])
        body = _projected_step(b, w_hh.data, w_hr.data, batch, mask is not None)
        h_d, c_d, y_d = b.op("Scan", [h0, c0] + scanned, "scan", num_outputs=3, body=body,
                             num_scan_inputs=len(scanned),
                             scan_input_directions=[d] * len(scanned), scan_output_directions=[d])
        ys.append(y_d)
        hs.append(b.op("Unsqueeze", [h_d, b.ints([0])], "h_n"))
        cs.append(b.op("Unsqueeze", [c_d, b.ints([0])], "c_n"))
    if len(weights) == 1:
        return ys[0], hs[0], cs[0]
    return tuple(b.op("Concat", parts, hint, axis=axis)
                 for parts, hint, axis in ((ys, "out", 2), (hs, "h_n", 0), (cs, "c_n", 0)))


def _projected_step(b, w_hh, w_hr, batch, masked):
    """The Scan body of one LSTM step with projection (torch's gate order i, f, g, o):
    (h (B, P), c (B, H), xw_t (B, 4H) [, mask_t (B, 1)]) -> (h', c', y_t = h'), where
    c' = f*c + i*g, h' = (o * tanh(c')) @ W_hr^T; masked rows keep h and c and get y_t = 0.
    Its weights are initializers of the main graph (outer scope)."""
    sub = b.subgraph()
    H, P = w_hr.shape[1], w_hr.shape[0]
    elem = _ELEM_TYPE[w_hh.dtype]
    h, c, xw = sub.fresh("h_prev"), sub.fresh("c_prev"), sub.fresh("xw_t")
    inputs = [helper.make_tensor_value_info(name, elem, [batch, width])
              for name, width in ((h, P), (c, H), (xw, 4 * H))]
    gates = sub.op("Add", [xw, sub.op("MatMul", [h, b.const(w_hh.T, "W_hh_t")], "hw")], "gates")
    i, f, g, o = sub.op("Split", [gates, b.ints([H] * 4, "split")], "gate", num_outputs=4,
                        axis=1)
    i, f, o = (sub.op("Sigmoid", [v], "gate") for v in (i, f, o))
    g = sub.op("Tanh", [g], "gate")
    c_new = sub.op("Add", [sub.op("Mul", [f, c], "fc"), sub.op("Mul", [i, g], "ig")], "c")
    m = sub.op("Mul", [o, sub.op("Tanh", [c_new], "tanh_c")], "m")
    h_new = sub.op("MatMul", [m, b.const(w_hr.T, "W_hr_t")], "h")
    if masked:
        mask = sub.fresh("mask_t")
        inputs.append(helper.make_tensor_value_info(mask, TensorProto.BOOL, [batch, 1]))
        y = sub.op("Where", [mask, h_new, b.const(np.zeros((), w_hh.dtype), "zero")], "y")
        h_new = sub.op("Where", [mask, h_new, h], "h")
        c_new = sub.op("Where", [mask, c_new, c], "c")
    else:
        y = sub.op("Identity", [h_new], "y")
    outputs = [helper.make_tensor_value_info(name, elem, [batch, width])
               for name, width in ((h_new, P), (c_new, H), (y, P))]
    return helper.make_graph(sub.nodes, "lstm_projection_step", inputs, outputs)


def _cell(b, m, x, states):
    """h1 (GRUCell, RNNCell) or (h1, c1) (LSTMCell): the layer node over one time step."""
    axes = b.ints([0, 1] if len(x.dims) == 1 else [0])  # to (1, B, F)
    init = [b.op("Unsqueeze", [s.name, axes], "state_seq") for s in states]
    x_seq = b.op("Unsqueeze", [x.name, axes], "x_seq")
    outs = _layer_node(b, m, m.layer_weights()[0], x_seq, *(init + ["", ""])[:2], None)
    dims = x.dims[:-1] + (m.hidden_size,)
    h1 = _Value(b.op("Squeeze", [outs[1], axes], "h1"), dims, "h1")
    if m.mode == Cell.LSTM:
        return h1, _Value(b.op("Squeeze", [outs[2], axes], "c1"), dims, "c1")
    return h1


def _linear(b, m, x):
    """x @ weight.T + bias: Gemm for 2-D x, MatMul (+ Add) otherwise."""
    dims = x.dims[:-1] + (m.out_features,)
    bias = "" if m.bias is None else b.const(m.bias.data, "bias")
    if len(x.dims) == 2:
        return _Value(b.op("Gemm", [x.name, b.const(m.weight.data, "weight"), bias], "linear",
                           transB=1), dims)
    y = b.op("MatMul", [x.name, b.const(m.weight.data.T, "weight_t")], "linear")
    return _Value(b.op("Add", [y, bias], "linear") if bias else y, dims)


def _last_hidden(b, m, inputs):
    """h_n[-1], or h_n[-2] and h_n[-1] side by side on the feature axis (bidirectional: the
    layer output's features are twice h_n's, as LastHidden reads it)."""
    out, state = inputs
    h_n = state[0] if isinstance(state, tuple) else state
    rows, dims = h_n.dims[0], h_n.dims[1:]
    if out.dims[-1] == dims[-1]:
        return _Value(b.op("Gather", [h_n.name, b.ints(rows - 1, "index")], "last_hidden",
                           axis=0), dims)
    last2 = b.op("Slice", [h_n.name, b.ints([rows - 2]), b.ints([rows]), b.ints([0])],
                 "last_hidden")
    if len(dims) == 2:  # (2, B, H) -> (B, 2, H)
        last2 = b.op("Transpose", [last2], "last_hidden", perm=[1, 0, 2])
    shape = [0, 2 * dims[-1]] if len(dims) == 2 else [2 * dims[-1]]
    return _Value(b.op("Reshape", [last2, b.ints(shape, "shape")], "last_hidden"),
                  dims[:-1] + (2 * dims[-1],))


def _over_time(b, m, inputs, lengths):
    """LastTimeStep, MeanOverTime or MaxOverTime of the steps (out of (out, state), or the
    input itself) over time; with lengths (int32 (B,)), over each sequence's valid steps."""
    steps = inputs[0] if isinstance(inputs, tuple) else inputs
    axis = 1 if m.batch_first and len(steps.dims) == 3 else 0
    dims = steps.dims[:axis] + steps.dims[axis + 1:]
    if lengths is None:
        if isinstance(m, LastTimeStep):
            return _Value(b.op("Gather", [steps.name, b.ints(-1, "index")], "last_time_step",
                               axis=axis), dims)
        op_type = "ReduceMean" if isinstance(m, MeanOverTime) else "ReduceMax"
        return _Value(b.reduce(op_type, steps.name, axis, "pooled"), dims)
    x = steps.name
    if axis == 1:
        x = b.op("Transpose", [x], "steps_time_major", perm=[1, 0, 2])
    step, length = _steps_and_lengths(b, x, lengths)
    if isinstance(m, MaxOverTime):
        minus_inf = helper.make_tensor("value", b.elem, [1], [-np.inf])
        fill = b.op("ConstantOfShape", [b.ints([1], "shape")], "minus_inf", value=minus_inf)
        valid = b.op("Unsqueeze", [b.op("Less", [step, length], "valid"), b.ints([2])], "valid")
        return _Value(b.reduce("ReduceMax", b.op("Where", [valid, x, fill], "masked"), 0,
                               "pooled"), dims)
    zero = helper.make_tensor("value", b.elem, [1], [0])
    zero = b.op("ConstantOfShape", [b.ints([1], "shape")], "zero", value=zero)
    if isinstance(m, LastTimeStep):
        last = b.op("Sub", [length, b.ints([1], "one")], "last_step")
        chosen = b.op("Unsqueeze", [b.op("Equal", [step, last], "chosen"), b.ints([2])], "chosen")
        return _Value(b.reduce("ReduceSum", b.op("Where", [chosen, x, zero], "masked"), 0,
                               "last_time_step"), dims)
    valid = b.op("Unsqueeze", [b.op("Less", [step, length], "valid"), b.ints([2])], "valid")
    total = b.reduce("ReduceSum", b.op("Where", [valid, x, zero], "masked"), 0, "total")
    count = b.op("Cast", [b.op("Transpose", [length], "count", perm=[1, 0])], "count",
                 to=b.elem)  # (B, 1)
    return _Value(b.op("Div", [total, count], "pooled"), dims)


def _steps_and_lengths(b, x, lengths):
    """(step index (T, 1), lengths (1, B)), both int64, for time-major x (T, B, F)."""
    T = b.op("Gather", [b.op("Shape", [x], "shape"), b.ints(0, "index")], "T", axis=0)
    steps = b.op("Range", [b.ints(0, "start"), T, b.ints(1, "delta")], "steps")
    lens = b.op("Cast", [lengths], "lengths", to=TensorProto.INT64)
    return (b.op("Unsqueeze", [steps, b.ints([1])], "steps"),
            b.op("Unsqueeze", [lens, b.ints([0])], "lengths"))
