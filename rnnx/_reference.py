"""A plain NumPy oracle for LSTM, GRU and RNN: written for clarity, not for speed.

This module is the test suite's ground truth. It is deliberately independent of the
Cython kernels and of rnnx.nn.rnn: every sequence of the batch is run on its own, one
time step at a time, with Python loops, and the backward pass is explicit
back-propagation through time with hand-derived gradients of each cell. Everything is
computed in float64 (inputs of other float dtypes are cast up).

Notation (PyTorch's, for one sample; x is the step input, h and c the previous states,
sigma the logistic function, * the elementwise product, W_i* rows of weight_ih, W_h*
rows of weight_hh, b_i*/b_h* pieces of bias_ih/bias_hh, all biases zero when absent):

LSTM (gates i, f, g, o stacked in that order in weight_ih / weight_hh):
    i = sigma(W_ii x + b_ii + W_hi h + b_hi)
    f = sigma(W_if x + b_if + W_hf h + b_hf)
    g = tanh (W_ig x + b_ig + W_hg h + b_hg)
    o = sigma(W_io x + b_io + W_ho h + b_ho)
    c' = f * c + i * g
    m  = o * tanh(c')
    h' = m,  or with a projection (proj_size > 0):  h' = W_hr m

GRU (gates r, z, n):
    r  = sigma(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigma(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh (W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

RNN:
    h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu

Stacking: layer 0 reads x; layer l > 0 reads the concatenated outputs [forward, reverse]
of layer l - 1. With bidirectional=True the reverse direction reads the sequence from
its end. Final states are ordered layer-major: h_n[l * D + d].

Variable lengths: sequence b covers steps 0 .. lengths[b] - 1 only. Its forward direction
starts from h0 at step 0 and stops after step lengths[b] - 1; its reverse direction starts
from h0 at step lengths[b] - 1 and ends at step 0. Outputs past lengths[b] are zero and
h_n / c_n are the states after each sequence's own last processed step.

Parameters are passed as a dict in torch's naming ("weight_ih_l0", "bias_hh_l1_reverse",
"weight_hr_l0", ...). Biases are optional (absent keys mean bias=False); proj_size is
implied by the presence of "weight_hr_l0".
"""
import numpy as np

MODES = ("LSTM", "GRU", "RNN", "RNN_TANH", "RNN_RELU")
# NumPy only (bench loads this file without the rnnx package): the kernels' NUM_GATES_BY_NAME
# (rnnx._kernels._layout), which tests/test_gemm_twins.py checks it equals.
NUM_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def sigmoid(a):
    """1 / (1 + exp(-a)), the logistic function."""
    return 1.0 / (1.0 + np.exp(-a))


# ---------------------------------------------------------------------------------------
# One step of each cell. x: (I,), h: (P,), c: (H,); weights as in torch (W_ih (G*H, I),
# W_hh (G*H, P), b_ih / b_hh (G*H,) or None, W_hr (P, H) or None). Each returns the new
# state(s) and a `cache` dict holding what the matching *_cell_backward needs.

def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One LSTM step: (h', c', cache).

    a = W_ih x + b_ih + W_hh h + b_hh, split into (a_i, a_f, a_g, a_o);
    i, f, o = sigma(a_i), sigma(a_f), sigma(a_o); g = tanh(a_g);
    c' = f * c + i * g; m = o * tanh(c'); h' = m, or W_hr m with a projection.
    """
    H = w_ih.shape[0] // 4
    a = w_ih @ x + w_hh @ h
    if b_ih is not None:
        a = a + b_ih + b_hh
    i = sigmoid(a[0:H])
    f = sigmoid(a[H:2 * H])
    g = np.tanh(a[2 * H:3 * H])
    o = sigmoid(a[3 * H:4 * H])
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    m = o * tanh_c
    h_new = m if w_hr is None else w_hr @ m
    cache = dict(x=x, h=h, c=c, i=i, f=f, g=g, o=o, tanh_c=tanh_c, m=m)
    return h_new, c_new, cache


def lstm_cell_backward(cache, dh_new, dc_new, w_ih, w_hh, w_hr=None):
    """Gradients of one LSTM step given dL/dh' and dL/dc'.

    dm = W_hr^T dh' (or dh' without projection), dW_hr = dh' m^T
    do = dm * tanh(c');  dc = dc' + dm * o * (1 - tanh(c')^2)   (total gradient of c')
    di = dc * g;  df = dc * c;  dg = dc * i;  dc_prev = dc * f
    pre-activations: da_i = di i(1-i), da_f = df f(1-f), da_g = dg (1-g^2), da_o = do o(1-o)
    da = [da_i, da_f, da_g, da_o]:  dW_ih = da x^T, dW_hh = da h^T, db_ih = db_hh = da,
    dx = W_ih^T da, dh_prev = W_hh^T da.
    Returns (dx, dh_prev, dc_prev, grads) with grads keys w_ih, w_hh, b_ih, b_hh, w_hr.
    """
    i, f, g, o, tanh_c = cache["i"], cache["f"], cache["g"], cache["o"], cache["tanh_c"]
    grads = {}
    if w_hr is None:
        dm = dh_new
    else:
        dm = w_hr.T @ dh_new
        grads["w_hr"] = np.outer(dh_new, cache["m"])
    do = dm * tanh_c
    dc = dc_new + dm * o * (1.0 - tanh_c ** 2)
    di = dc * g
    df = dc * cache["c"]
    dg = dc * i
    dc_prev = dc * f
    da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g ** 2),
                         do * o * (1.0 - o)])
    grads["w_ih"] = np.outer(da, cache["x"])
    grads["w_hh"] = np.outer(da, cache["h"])
    grads["b_ih"] = da
    grads["b_hh"] = da
    return w_ih.T @ da, w_hh.T @ da, dc_prev, grads


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step: (h', cache).

    gi = W_ih x + b_ih = (gi_r, gi_z, gi_n);  gh = W_hh h + b_hh = (gh_r, gh_z, gh_n);
    r = sigma(gi_r + gh_r); z = sigma(gi_z + gh_z); n = tanh(gi_n + r * gh_n);
    h' = (1 - z) * n + z * h.
    """
    H = w_ih.shape[0] // 3
    gi = w_ih @ x
    gh = w_hh @ h
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    r = sigmoid(gi[0:H] + gh[0:H])
    z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
    gh_n = gh[2 * H:3 * H]
    n = np.tanh(gi[2 * H:3 * H] + r * gh_n)
    h_new = (1.0 - z) * n + z * h
    cache = dict(x=x, h=h, r=r, z=z, n=n, gh_n=gh_n)
    return h_new, cache


def gru_cell_backward(cache, dh_new, w_ih, w_hh):
    """Gradients of one GRU step given dL/dh'.

    dn = dh' (1 - z);  dz = dh' (h - n);  direct path dh_prev = dh' z
    da_n = dn (1 - n^2) (gradient of n's pre-activation gi_n + r * gh_n)
    dr = da_n * gh_n;  dgh_n = da_n * r
    da_r = dr r(1-r);  da_z = dz z(1-z)
    dgi = [da_r, da_z, da_n] -> dW_ih = dgi x^T, db_ih = dgi, dx = W_ih^T dgi
    dgh = [da_r, da_z, dgh_n] -> dW_hh = dgh h^T, db_hh = dgh, dh_prev += W_hh^T dgh
    Returns (dx, dh_prev, grads) with grads keys w_ih, w_hh, b_ih, b_hh.
    """
    r, z, n, gh_n, h = cache["r"], cache["z"], cache["n"], cache["gh_n"], cache["h"]
    dn = dh_new * (1.0 - z)
    dz = dh_new * (h - n)
    da_n = dn * (1.0 - n ** 2)
    dr = da_n * gh_n
    dgh_n = da_n * r
    da_r = dr * r * (1.0 - r)
    da_z = dz * z * (1.0 - z)
    dgi = np.concatenate([da_r, da_z, da_n])
    dgh = np.concatenate([da_r, da_z, dgh_n])
    grads = dict(w_ih=np.outer(dgi, cache["x"]), w_hh=np.outer(dgh, h), b_ih=dgi, b_hh=dgh)
    dh_prev = dh_new * z + w_hh.T @ dgh
    return w_ih.T @ dgi, dh_prev, grads


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman RNN step: (h', cache) with h' = act(W_ih x + b_ih + W_hh h + b_hh)."""
    a = w_ih @ x + w_hh @ h
    if b_ih is not None:
        a = a + b_ih + b_hh
    if nonlinearity == "tanh":
        h_new = np.tanh(a)
    elif nonlinearity == "relu":
        h_new = np.maximum(a, 0.0)
    else:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}")
    return h_new, dict(x=x, h=h, a=a, h_new=h_new, nonlinearity=nonlinearity)


def rnn_cell_backward(cache, dh_new, w_ih, w_hh):
    """Gradients of one RNN step given dL/dh'.

    da = dh' (1 - h'^2) for tanh, dh' [a > 0] for relu;
    dW_ih = da x^T, dW_hh = da h^T, db_ih = db_hh = da, dx = W_ih^T da, dh_prev = W_hh^T da.
    Returns (dx, dh_prev, grads) with grads keys w_ih, w_hh, b_ih, b_hh.
    """
    if cache["nonlinearity"] == "tanh":
        da = dh_new * (1.0 - cache["h_new"] ** 2)
    else:
        da = dh_new * (cache["a"] > 0)
    grads = dict(w_ih=np.outer(da, cache["x"]), w_hh=np.outer(da, cache["h"]), b_ih=da, b_hh=da)
    return w_ih.T @ da, w_hh.T @ da, grads


# ---------------------------------------------------------------------------------------
# Whole networks.

def _mode(mode, nonlinearity):
    """Normalise (mode, nonlinearity): 'RNN_TANH' -> ('RNN', 'tanh') and so on."""
    mode = mode.upper()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "RNN_TANH":
        return "RNN", "tanh"
    if mode == "RNN_RELU":
        return "RNN", "relu"
    if mode == "RNN" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}")
    return mode, nonlinearity


def param_name(kind, layer, direction):
    """torch's parameter name, e.g. param_name('weight_ih', 1, 1) == 'weight_ih_l1_reverse'."""
    return f"{kind}_l{layer}" + ("_reverse" if direction == 1 else "")


def _weights(params, layer, direction):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer direction as float64 (None when absent)."""
    out = []
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
        value = params.get(param_name(kind, layer, direction))
        out.append(None if value is None else np.asarray(value, dtype=np.float64))
    return tuple(out)


def sizes(mode, params, num_layers=1, bidirectional=False):
    """(hidden_size H, state size P = proj_size or H, number of directions D)."""
    mode, _ = _mode(mode, "tanh")
    H = np.shape(params["weight_ih_l0"])[0] // NUM_GATES[mode]
    P = np.shape(params["weight_hr_l0"])[0] if "weight_hr_l0" in params else H
    return H, P, 2 if bidirectional else 1


def _steps(length, reverse):
    """Time steps one direction visits for a sequence of this length, in visiting order."""
    return list(range(length - 1, -1, -1)) if reverse else list(range(length))


def _prepare(mode, params, x, h0, c0, num_layers, bidirectional, lengths, nonlinearity):
    mode, nonlinearity = _mode(mode, nonlinearity)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError("the reference takes time-major batched input x of shape (T, B, I)")
    T, B, _ = x.shape
    H, P, D = sizes(mode, params, num_layers, bidirectional)
    h0 = np.zeros((num_layers * D, B, P)) if h0 is None else np.asarray(h0, dtype=np.float64)
    if mode == "LSTM":
        c0 = np.zeros((num_layers * D, B, H)) if c0 is None else np.asarray(c0, dtype=np.float64)
    else:
        c0 = None
    if lengths is None:
        lengths = [T] * B
    lengths = [int(n) for n in lengths]
    if len(lengths) != B or any(n < 1 or n > T for n in lengths):
        raise ValueError("lengths must hold B values in [1, T]")
    return mode, nonlinearity, x, h0, c0, lengths, (T, B, H, P, D)


def _run(mode, params, x, h0, c0, num_layers, bidirectional, lengths, nonlinearity):
    """Forward pass keeping every cell cache: (out, h_n, c_n, caches, layer_inputs)."""
    mode, nonlinearity, x, h0, c0, lengths, (T, B, H, P, D) = _prepare(
        mode, params, x, h0, c0, num_layers, bidirectional, lengths, nonlinearity)
    h_n = np.zeros_like(h0)
    c_n = None if c0 is None else np.zeros_like(c0)
    caches = {}  # (layer, direction, t, b) -> cell cache
    layer_inputs = []
    layer_in = x
    for layer in range(num_layers):
        layer_inputs.append(layer_in)
        out = np.zeros((T, B, D * P))
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh, w_hr = _weights(params, layer, d)
            k = layer * D + d
            for b in range(B):
                h = h0[k, b]
                c = None if c0 is None else c0[k, b]
                for t in _steps(lengths[b], reverse=d == 1):
                    if mode == "LSTM":
                        h, c, cache = lstm_cell(layer_in[t, b], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
                    elif mode == "GRU":
                        h, cache = gru_cell(layer_in[t, b], h, w_ih, w_hh, b_ih, b_hh)
                    else:
                        h, cache = rnn_cell(layer_in[t, b], h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
                    caches[layer, d, t, b] = cache
                    out[t, b, d * P:(d + 1) * P] = h
                h_n[k, b] = h
                if c_n is not None:
                    c_n[k, b] = c
        layer_in = out
    return layer_in, h_n, c_n, caches, layer_inputs


def forward(mode, params, x, h0=None, c0=None, num_layers=1, bidirectional=False,
            lengths=None, nonlinearity="tanh"):
    """Run the network: (out, h_n, c_n), c_n None unless mode == 'LSTM'.

    mode: 'LSTM', 'GRU', 'RNN' (with nonlinearity 'tanh' or 'relu'), 'RNN_TANH' or 'RNN_RELU'.
    x: (T, B, I) time-major; h0: (L*D, B, P) or None (zeros); c0: (L*D, B, H) or None;
    lengths: B ints in [1, T] or None (all T).
    out: (T, B, D*P), zero past each sequence's end; h_n: (L*D, B, P); c_n: (L*D, B, H).
    """
    out, h_n, c_n, _, _ = _run(mode, params, x, h0, c0, num_layers, bidirectional, lengths,
                               nonlinearity)
    return out, h_n, c_n


def backward(mode, params, x, h0=None, c0=None, num_layers=1, bidirectional=False,
             lengths=None, nonlinearity="tanh", grad_out=None, grad_h_n=None, grad_c_n=None):
    """Back-propagation through time of L = <grad_out, out> + <grad_h_n, h_n> + <grad_c_n, c_n>.

    Arguments as forward() plus the gradients of the outputs (None means zero). The forward
    pass is rerun keeping each cell's cache; then layer by layer from the top, each direction
    of each sequence is walked backwards over the steps it visited: the hidden-state
    gradient starts at grad_h_n (and grad_c_n), picks up grad_out of each step's output,
    goes through the cell's backward, and what is left when the first visited step is done
    is the gradient of h0 (c0). The input gradients of both directions add up and become
    grad_out of the layer below.

    Returns a dict: 'x' (T, B, I), 'h0', 'c0' (None unless LSTM) and one entry per
    parameter name of `params`, all float64.
    """
    mode, nonlinearity, x, h0, c0, lengths, (T, B, H, P, D) = _prepare(
        mode, params, x, h0, c0, num_layers, bidirectional, lengths, nonlinearity)
    _, _, _, caches, layer_inputs = _run(mode, params, x, h0, c0, num_layers, bidirectional,
                                         lengths, nonlinearity)
    grad_out = np.zeros((T, B, D * P)) if grad_out is None else np.asarray(grad_out, np.float64)
    grad_h_n = np.zeros_like(h0) if grad_h_n is None else np.asarray(grad_h_n, np.float64)
    if c0 is not None:
        grad_c_n = np.zeros_like(c0) if grad_c_n is None else np.asarray(grad_c_n, np.float64)
    grads = {name: np.zeros(np.shape(value)) for name, value in params.items()}
    grad_h0 = np.zeros_like(h0)
    grad_c0 = None if c0 is None else np.zeros_like(c0)
    key = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
           "w_hr": "weight_hr"}
    for layer in reversed(range(num_layers)):
        layer_in = layer_inputs[layer]
        grad_in = np.zeros_like(layer_in)
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh, w_hr = _weights(params, layer, d)
            k = layer * D + d
            for b in range(B):
                dh = grad_h_n[k, b].copy()
                dc = None if c0 is None else grad_c_n[k, b].copy()
                for t in reversed(_steps(lengths[b], reverse=d == 1)):
                    dh = dh + grad_out[t, b, d * P:(d + 1) * P]
                    cache = caches[layer, d, t, b]
                    if mode == "LSTM":
                        dx, dh, dc, g = lstm_cell_backward(cache, dh, dc, w_ih, w_hh, w_hr)
                    elif mode == "GRU":
                        dx, dh, g = gru_cell_backward(cache, dh, w_ih, w_hh)
                    else:
                        dx, dh, g = rnn_cell_backward(cache, dh, w_ih, w_hh)
                    grad_in[t, b] += dx
                    for short, value in g.items():
                        name = param_name(key[short], layer, d)
                        if name in grads:  # bias grads are dropped when bias=False
                            grads[name] += value
                grad_h0[k, b] = dh
                if grad_c0 is not None:
                    grad_c0[k, b] = dc
        grad_out = grad_in
    grads["x"] = grad_out
    grads["h0"] = grad_h0
    grads["c0"] = grad_c0
    return grads
