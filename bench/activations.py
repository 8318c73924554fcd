"""Accuracy of the gate activations: rnnx's kernels beside PyTorch's and ONNX Runtime's.

The recurrent kernels compute sigmoid and tanh themselves (rnnx/_kernels/vmath.h); this
script measures them through the public API, on a dense grid of float32 inputs, against
float64 references, and does the same for torch.sigmoid / torch.tanh and for ONNX Runtime's
Sigmoid and Tanh operators (each when installed). Errors are in units in the last place of
the float32 result (ulp: relative, so a sigmoid of 1e-8 counts its own digits) and absolute.

    python bench/activations.py [--points 4000001]

rnnx's functions reach the kernels through one-unit cells:
  tanh(x)    = RNNCell(1, 1) with weight_ih = 1, everything else 0
  sigmoid(x) = LSTMCell(1, 1) whose output gate alone sees x (weight_ih = [0, 0, 0, 1]),
               with g = tanh(0) = 0, f = sigmoid(b) = 1 for a large bias b and c = 20, so
               that h' = o * tanh(f * c + i * g) = sigmoid(x) * tanh(20) = sigmoid(x) * 1.
"""
import argparse
import importlib.util

import numpy as np

import rnnx


def _zero_cell(cls, dtype):
    cell = cls(1, 1, dtype=dtype).eval()
    state = {name: np.zeros_like(value) for name, value in cell.state_dict().items()}
    return cell, state


def gate_tanh(x):
    """The kernels' tanh of a 1-D float32 or float64 array."""
    cell, state = _zero_cell(rnnx.RNNCell, x.dtype)
    state["weight_ih"][:] = 1
    cell.load_state_dict(state)
    return cell(x[:, None])[:, 0]


def gate_sigmoid(x):
    """The kernels' sigmoid of a 1-D float32 or float64 array of finite values (a weight of
    0 times an infinite x would make the other gates NaN)."""
    cell, state = _zero_cell(rnnx.LSTMCell, x.dtype)
    state["weight_ih"][3] = 1
    state["bias_ih"][1] = np.finfo(x.dtype).maxexp * 0.7      # f = sigmoid of it: 1
    cell.load_state_dict(state)
    h, _ = cell(x[:, None], (np.zeros((x.size, 1), x.dtype), np.full((x.size, 1), 20, x.dtype)))
    return h[:, 0]


def ulp_errors(got, exact, dtype):
    """|got - exact| in ulp of `exact` rounded to dtype (an ulp of the smallest normal below it)."""
    rounded = np.abs(exact.astype(dtype))
    spacing = np.spacing(np.maximum(rounded, np.finfo(dtype).tiny)).astype(exact.dtype)
    return np.abs(got.astype(exact.dtype) - exact) / spacing


def grid(points):
    """float32 inputs: evenly over [-87, 20] (sigmoid's float32 results are normal above -87),
    and logarithmically over 1e-8 .. 10 on both sides of 0."""
    logs = np.float32(10.0) ** np.linspace(-8, 1, points // 10, dtype=np.float32)
    return np.concatenate([np.linspace(-87, 20, points, dtype=np.float32), logs, -logs])


def _onnxruntime(op):
    import onnxruntime
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], op,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def implementations():
    """{library: {"sigmoid": f, "tanh": f}} for rnnx and each installed peer."""
    found = {"rnnx": {"sigmoid": gate_sigmoid, "tanh": gate_tanh}}
    if importlib.util.find_spec("torch"):
        import torch
        found["PyTorch"] = {name: (lambda f: lambda x: f(torch.from_numpy(x)).numpy())(f)
                            for name, f in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh))}
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        found["ONNX Runtime"] = {"sigmoid": _onnxruntime("Sigmoid"), "tanh": _onnxruntime("Tanh")}
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=4_000_001, help="inputs on [-87, 20]")
    args = parser.parse_args(argv)
    x = grid(args.points)
    x64 = x.astype(np.float64)
    exact = {"sigmoid": 1 / (1 + np.exp(-x64)), "tanh": np.tanh(x64)}
    print(f"float32, {x.size} inputs on [-87, 20] and +-[1e-8, 10]; float64 references\n")
    print("| library | sigmoid: max ulp (at x) | sigmoid: max abs | tanh: max ulp (at x) "
          "| tanh: max abs |")
    print("|:---|---:|---:|---:|---:|")
    for lib, funcs in implementations().items():
        cells = []
        for name in ("sigmoid", "tanh"):
            got = np.asarray(funcs[name](x))
            ulps = ulp_errors(got, exact[name], np.float32)
            worst = int(np.argmax(ulps))
            cells += [f"{ulps[worst]:.3g} ({x[worst]:.3g})",
                      f"{np.abs(got - exact[name]).max():.2g}"]
        print(f"| {lib} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
