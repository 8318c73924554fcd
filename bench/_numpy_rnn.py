"""Plain NumPy LSTM/GRU/RNN over a batch: the peer "what you would write in NumPy".

The step math is rnnx._reference's cell functions (lstm_cell, gru_cell, rnn_cell), run on
whole batches in column layout (features x batch). Sequences are sorted by length so that
step t updates the first bs[t] columns only. Backward is batched back-propagation through
time written here: the recurrent part step by step, then the weight and input gradients
as one GEMM each over all steps.
"""
import importlib.util
import os

import numpy as np


def _load_reference():
    """rnnx/_reference.py (NumPy only) loaded by path, without importing the rnnx package:
    the NumPy peer's worker must not load rnnx's kernels or change what they change."""
    package = importlib.util.find_spec("rnnx")  # finds, does not import, a top-level package
    path = os.path.join(os.path.dirname(package.origin), "_reference.py")
    spec = importlib.util.spec_from_file_location("_rnnx_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

NUM_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _resize(state, n):
    """Columns [:n] of a (F, m) state, zero-padded on the right when n > m."""
    m = state.shape[1]
    if n <= m:
        return state[:, :n]
    return np.concatenate([state, np.zeros((state.shape[0], n - m), state.dtype)], axis=1)


def _cell_forward(cell, x, h, c, w):
    w_ih, w_hh, b_ih, b_hh = w
    if cell == "LSTM":
        return ref.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    if cell == "GRU":
        h, cache = ref.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    else:
        h, cache = ref.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return h, None, cache


def _cell_backward(cell, cache, dh, dc, w_hh):
    """Batched cell backward: (dgi, dgh, dh_prev, dc_prev); dgi/dgh are the pre-activation
    gradients of the input/recurrent projections (identical except for GRU)."""
    if cell == "LSTM":
        i, f, g, o, tanh_c = cache["i"], cache["f"], cache["g"], cache["o"], cache["tanh_c"]
        do = dh * tanh_c
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        da = np.concatenate([dc * g * i * (1 - i), dc * cache["c"] * f * (1 - f),
                             dc * i * (1 - g * g), do * o * (1 - o)])
        return da, da, w_hh.T @ da, dc * f
    if cell == "GRU":
        r, z, n, gh_n, h = cache["r"], cache["z"], cache["n"], cache["gh_n"], cache["h"]
        da_n = dh * (1 - z) * (1 - n * n)
        da_r = da_n * gh_n * r * (1 - r)
        da_z = dh * (h - n) * z * (1 - z)
        dgi = np.concatenate([da_r, da_z, da_n])
        dgh = np.concatenate([da_r, da_z, da_n * r])
        return dgi, dgh, dh * z + w_hh.T @ dgh, None
    h_new = cache["h_new"]
    da = dh * (1 - h_new * h_new)
    return da, da, w_hh.T @ da, None


class NumpyRNN:
    """Stacked (bi)directional tanh-RNN/LSTM/GRU with torch-named float32 weights."""

    def __init__(self, cell, weights, layers, bidirectional):
        self.cell, self.layers, self.D = cell, layers, 2 if bidirectional else 1
        self.weights = []
        for layer in range(layers):
            per_dir = []
            for d in range(self.D):
                names = [ref.param_name(k, layer, d)
                         for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                w_ih, w_hh, b_ih, b_hh = (weights[n] for n in names)
                per_dir.append((w_ih, w_hh, b_ih[:, None], b_hh[:, None]))
            self.weights.append(per_dir)
        self.H = self.weights[0][0][1].shape[1]

    def _batch_sizes(self, T, B, lengths):
        if lengths is None:
            return np.full(T, B), None
        order = np.argsort(-np.asarray(lengths), kind="stable")
        return (np.asarray(lengths)[order][None, :] > np.arange(T)[:, None]).sum(1), order

    def forward(self, x, lengths=None, keep=False):
        """out (T, B, D*H), zero past each length; with keep, also the backward's state."""
        T, B, _ = x.shape
        bs, order = self._batch_sizes(T, B, lengths)
        layer_in = x if order is None else x[:, order]
        H, D = self.H, self.D
        tape = []
        with np.errstate(over="ignore"):
            for layer in range(self.layers):
                out = np.zeros((T, B, D * H), x.dtype)
                caches = []
                for d in range(D):
                    w = self.weights[layer][d]
                    steps = range(T - 1, -1, -1) if d else range(T)
                    h = np.zeros((H, bs[steps[0]]), x.dtype)
                    c = h if self.cell == "LSTM" else None
                    dir_caches = []
                    for t in steps:
                        n = bs[t]
                        h, c, cache = _cell_forward(self.cell, layer_in[t, :n].T, _resize(h, n),
                                                    c if c is None else _resize(c, n), w)
                        out[t, :n, d * H:(d + 1) * H] = h.T
                        dir_caches.append((t, cache))
                    caches.append(dir_caches)
                tape.append((layer_in, caches))
                layer_in = out
        out = layer_in if order is None else layer_in[:, np.argsort(order)]
        return (out, (bs, order, tape)) if keep else out

    def backward(self, state, grad_out):
        """(grad_x, {name: grad}) of sum(out * grad_out) for the state forward(keep=True) kept."""
        bs, order, tape = state
        H, D, G = self.H, self.D, NUM_GATES[self.cell]
        grad = grad_out if order is None else grad_out[:, order]
        grads = {}
        for layer in reversed(range(self.layers)):
            layer_in, caches = tape[layer]
            T, B, I = layer_in.shape
            grad_in = np.zeros_like(layer_in)
            for d in range(D):
                w_ih, w_hh, _, _ = self.weights[layer][d]
                dgi_all = np.zeros((T, B, G * H), layer_in.dtype)
                dgh_all = dgi_all if self.cell != "GRU" else np.zeros_like(dgi_all)
                h_prev = np.zeros((T, B, H), layer_in.dtype)
                dh = dc = np.zeros((H, 0), layer_in.dtype)
                for t, cache in reversed(caches[d]):
                    n = bs[t]
                    dh = _resize(dh, n) + grad[t, :n, d * H:(d + 1) * H].T
                    dc = _resize(dc, n) if self.cell == "LSTM" else None
                    dgi, dgh, dh, dc = _cell_backward(self.cell, cache, dh, dc, w_hh)
                    dgi_all[t, :n] = dgi.T
                    if dgh is not dgi:
                        dgh_all[t, :n] = dgh.T
                    h_prev[t, :n] = cache["h"].T
                rows_i = dgi_all.reshape(T * B, G * H)
                rows_h = dgh_all.reshape(T * B, G * H)
                grad_in += (rows_i @ w_ih).reshape(T, B, I)
                for kind, value in (("weight_ih", rows_i.T @ layer_in.reshape(T * B, I)),
                                    ("weight_hh", rows_h.T @ h_prev.reshape(T * B, H)),
                                    ("bias_ih", rows_i.sum(0)), ("bias_hh", rows_h.sum(0))):
                    grads[ref.param_name(kind, layer, d)] = value
            grad = grad_in
        return (grad if order is None else grad[:, np.argsort(order)]), grads
