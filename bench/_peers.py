"""The libraries under test, each behind one adapter: rnnx, PyTorch, ONNX Runtime, JAX, NumPy.
"rnnx-blas" is rnnx with every product through BLAS (rnnx.set_gemm_backend("blas")), timed
beside rnnx's default ("auto") so that the choice of backend stays justified by numbers;
"rnnx-frozen" is rnnx.freeze(model) at inference, whose weights are constants as those of an
ONNX Runtime session are.

An adapter's build(cell, shape, weights, x, grad_out, lengths, phase, threads) returns a
Runner: `step()` is the timed call (inference: forward; train: forward + backward giving
the gradients of sum(out * grad_out) with respect to the weights and the input) and
`outputs()` runs it once more, untimed, returning numpy arrays for the agreement check:
"out" (T, B, D*H), zero past each length, plus for training "grad_x" and "grad_weight_hh_l0".
Every peer import happens inside its adapter, so missing peers are just unavailable.
"""
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

LIBS = ("rnnx", "rnnx-frozen", "rnnx-blas", "torch", "onnxruntime", "jax", "numpy")
LABELS = {"rnnx": "rnnx", "rnnx-frozen": "rnnx (frozen)", "rnnx-blas": "rnnx (BLAS)",
          "torch": "PyTorch",
          "onnxruntime": "ONNX Runtime", "jax": "JAX", "numpy": "NumPy"}
INFER_ONLY = {"onnxruntime", "rnnx-frozen"}


def available(lib):
    """Whether the library (and what its adapter needs) can be imported."""
    needs = {"onnxruntime": ("onnxruntime", "onnx"), "rnnx-blas": ("rnnx",),
             "rnnx-frozen": ("rnnx",)}.get(lib, (lib,))
    return all(importlib.util.find_spec(name) is not None for name in needs)


def version(dist):
    """Installed version of a distribution, None when it is absent (nothing is imported)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Runner:
    step: Callable[[], object]
    outputs: Callable[[], dict]


def configure_threads(threads, libs):
    """Set the thread count of the hosted libraries' own pools, and nothing else (ONNX
    Runtime: per session in build; JAX: before import, see run.py). Only libraries in `libs`
    are imported."""
    if any(lib.startswith("rnnx") for lib in libs):
        import rnnx
        rnnx.set_num_threads(threads)  # its kernels, and NumPy's BLAS
    elif "numpy" in libs and available("threadpoolctl"):
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)  # NumPy's BLAS (the NumPy peer)
    if "torch" in libs:
        import torch
        torch.set_num_threads(threads)


def build(lib, cell, shape, weights, x, grad_out, lengths, phase, threads, quiet_threads=False):
    """The Runner of `lib` on one case. quiet_threads (the in-process mode): peers whose
    idle threads spin by default (ONNX Runtime) are told to sleep, since they would take the
    cores from the library timed next in the same process."""
    builder = _BUILDERS[lib]
    if lib == "onnxruntime":
        return builder(cell, shape, weights, x, grad_out, lengths, phase, threads,
                       quiet_threads)
    return builder(cell, shape, weights, x, grad_out, lengths, phase, threads)


def _rnnx(cell, shape, weights, x, grad_out, lengths, phase, threads, backend="auto",
          frozen=False):
    import rnnx
    model = getattr(rnnx, cell)(shape.I, shape.H, num_layers=shape.layers,
                                bidirectional=shape.bidirectional)
    model.load_state_dict(weights)
    if phase == "infer":
        model = rnnx.freeze(model) if frozen else model.eval()

        def step():
            rnnx.set_gemm_backend(backend)  # the backend is global; rnnx-blas runs between
            return model(x, lengths=lengths)[0]
        return Runner(step, lambda: {"out": step()})

    def step():
        rnnx.set_gemm_backend(backend)
        out, _ = model(x, lengths=lengths)
        return out, model.backward(grad_out)[0]

    def outputs():
        model.zero_grad()
        out, gx = step()
        return {"out": out, "grad_x": gx, "grad_weight_hh_l0": model.weight_hh_l0.grad.copy()}
    return Runner(step, outputs)


def _torch(cell, shape, weights, x, grad_out, lengths, phase, threads):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    model = getattr(torch.nn, cell)(shape.I, shape.H, num_layers=shape.layers,
                                    bidirectional=shape.bidirectional)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    xt, gt = torch.from_numpy(x), torch.from_numpy(grad_out)
    lt = None if lengths is None else torch.from_numpy(lengths)

    def forward(inp):
        if lt is None:
            return model(inp)[0]
        packed = pack_padded_sequence(inp, lt, enforce_sorted=False)
        return pad_packed_sequence(model(packed)[0], total_length=shape.T)[0]

    if phase == "infer":
        model.eval()

        def step():
            with torch.inference_mode():
                return forward(xt)
        return Runner(step, lambda: {"out": step().numpy()})
    xt.requires_grad_(True)

    def step():
        xt.grad = None
        out = forward(xt)
        out.backward(gt)
        return out

    def outputs():
        model.zero_grad()
        out = step()
        return {"out": out.detach().numpy(), "grad_x": xt.grad.numpy(),
                "grad_weight_hh_l0": model.weight_hh_l0.grad.numpy().copy()}
    return Runner(step, outputs)


def onnx_model(cell, shape, weights, with_lengths):
    """An ONNX graph of the stacked network: inputs x (T, B, I) [, lengths (B,) int32],
    output out (T, B, D*H). Gates are reordered from torch's to ONNX's (LSTM i,f,g,o ->
    i,o,f,c; GRU r,z,n -> z,r,h with linear_before_reset=1); B = concat(b_ih, b_hh)."""
    from onnx import TensorProto, helper, numpy_helper
    order = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}[cell]
    H, D = shape.H, shape.D

    def gates(w):
        return w.reshape(len(order), H, -1)[order].reshape(w.shape)

    nodes, inits = [], []
    layer_in = "x"
    for layer in range(shape.layers):
        sfx = [f"_l{layer}", f"_l{layer}_reverse"][:D]
        stack = {k: np.stack([gates(weights[k + s]) for s in sfx])
                 for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        for name, value in zip(names, (stack["weight_ih"], stack["weight_hh"],
                                       np.concatenate([stack["bias_ih"], stack["bias_hh"]], 1))):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if cell == "GRU":
            attrs["linear_before_reset"] = 1
        if cell == "RNN":
            attrs["activations"] = ["Tanh"] * D
        inputs = [layer_in] + names + (["lengths"] if with_lengths else [])
        nodes.append(helper.make_node(cell, inputs, [f"Y{layer}"], **attrs))
        # Y (T, D, B, H) -> (T, B, D*H)
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"],
                                      perm=[0, 2, 1, 3]))
        layer_in = "out" if layer == shape.layers - 1 else f"X{layer + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt{layer}", "shape3"], [layer_in]))
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape3"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape.T, shape.B, shape.I])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [shape.B]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                             [shape.T, shape.B, D * H])]
    graph = helper.make_graph(nodes, f"{cell.lower()}_bench", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _onnxruntime(cell, shape, weights, x, grad_out, lengths, phase, threads,
                 quiet_threads=False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if quiet_threads:
        # ORT's pool threads spin after each call by default, taking the cores from the
        # library timed next in the same process
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = onnx_model(cell, shape, weights, lengths is not None)
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"x": x}
    if lengths is not None:
        feed["lengths"] = lengths.astype(np.int32)
    step = lambda: session.run(None, feed)[0]  # noqa: E731
    return Runner(step, lambda: {"out": step()})


def _jax(cell, shape, weights, x, grad_out, lengths, phase, threads):
    import jax
    import _jax_rnn
    params = _jax_rnn.params_of(weights, shape.layers, shape.D)
    xj, gj = jax.device_put(x), jax.device_put(grad_out)
    mask, rev = _jax_rnn.masks(shape.T, lengths)
    if phase == "infer":
        fn = _jax_rnn.compile_infer(cell)
        step = lambda: fn(params, xj, mask, rev).block_until_ready()  # noqa: E731
        return Runner(step, lambda: {"out": np.asarray(step())})
    fn = _jax_rnn.compile_train(cell)
    step = lambda: jax.block_until_ready(fn(params, xj, gj, mask, rev))  # noqa: E731

    def outputs():
        (_, out), (dparams, dx) = step()
        return {"out": np.asarray(out), "grad_x": np.asarray(dx),
                "grad_weight_hh_l0": np.asarray(dparams[0][0][1])}
    return Runner(step, outputs)


def _numpy(cell, shape, weights, x, grad_out, lengths, phase, threads):
    from _numpy_rnn import NumpyRNN
    model = NumpyRNN(cell, weights, shape.layers, shape.bidirectional)
    if phase == "infer":
        step = lambda: model.forward(x, lengths)  # noqa: E731
        return Runner(step, lambda: {"out": step()})

    def step():
        out, state = model.forward(x, lengths, keep=True)
        return out, model.backward(state, grad_out)

    def outputs():
        out, (gx, grads) = step()
        return {"out": out, "grad_x": gx, "grad_weight_hh_l0": grads["weight_hh_l0"]}
    return Runner(step, outputs)


def _rnnx_blas(*args):
    return _rnnx(*args, backend="blas")


def _rnnx_frozen(*args):
    return _rnnx(*args, frozen=True)


_BUILDERS = {"rnnx": _rnnx, "rnnx-frozen": _rnnx_frozen, "rnnx-blas": _rnnx_blas,
             "torch": _torch, "onnxruntime": _onnxruntime, "jax": _jax, "numpy": _numpy}


def max_rel_err(got, ref):
    """max over arrays of max|got - ref| / max|ref| (arrays the two share)."""
    errs = [float(np.max(np.abs(got[k] - ref[k])) / max(float(np.max(np.abs(ref[k]))), 1e-30))
            for k in ref if k in got]
    return max(errs)
