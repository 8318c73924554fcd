"""JAX LSTM/GRU/tanh-RNN: the input projection as one matmul, the recurrence as lax.scan.

Uneven lengths are masked (every sequence runs all T steps; state and output are frozen /
zeroed past its length); the reverse direction reads each sequence backwards from its own
end through a gather. Training is jax.value_and_grad of sum(out * grad_out) over the
weights and the input, jit-compiled with the forward.
"""
import jax
import jax.numpy as jnp
import numpy as np


def _step(cell, w_hh, b_hh):
    """scan body: carry (h, c), input (xw_t [, mask_t]) -> new carry, output h_t."""
    H = w_hh.shape[1]

    def step(carry, inp):
        h, c = carry
        xw, mask = inp if isinstance(inp, tuple) else (inp, None)
        hw = h @ w_hh.T + b_hh
        if cell == "LSTM":
            a = xw + hw
            i, f, o = (jax.nn.sigmoid(a[:, k * H:(k + 1) * H]) for k in (0, 1, 3))
            c_new = f * c + i * jnp.tanh(a[:, 2 * H:3 * H])
            h_new = o * jnp.tanh(c_new)
        elif cell == "GRU":
            r = jax.nn.sigmoid(xw[:, :H] + hw[:, :H])
            z = jax.nn.sigmoid(xw[:, H:2 * H] + hw[:, H:2 * H])
            n = jnp.tanh(xw[:, 2 * H:] + r * hw[:, 2 * H:])
            h_new, c_new = (1 - z) * n + z * h, c
        else:
            h_new, c_new = jnp.tanh(xw + hw), c
        if mask is None:
            return (h_new, c_new), h_new
        h_new, c_new = jnp.where(mask, h_new, h), jnp.where(mask, c_new, c)
        return (h_new, c_new), jnp.where(mask, h_new, 0)

    return step


def forward(cell, params, x, mask=None, rev_idx=None):
    """out (T, B, D*H). params: per layer, per direction (w_ih, w_hh, b_ih, b_hh);
    mask (T, B, 1) bool and rev_idx (T, B, 1) per-sequence reversal indices, or None."""
    B = x.shape[1]
    layer_in = x
    for layer in params:
        outs = []
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(layer):
            seq = layer_in
            if d:
                seq = jnp.flip(seq, 0) if rev_idx is None else \
                    jnp.take_along_axis(seq, rev_idx, axis=0)
            xw = seq @ w_ih.T + b_ih
            H = w_hh.shape[1]
            zeros = jnp.zeros((B, H), x.dtype)
            _, out = jax.lax.scan(_step(cell, w_hh, b_hh), (zeros, zeros),
                                  xw if mask is None else (xw, mask))
            if d:
                out = jnp.flip(out, 0) if rev_idx is None else \
                    jnp.take_along_axis(out, rev_idx, axis=0)
            outs.append(out)
        layer_in = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
    return layer_in


def masks(T, lengths):
    """(mask, rev_idx) for per-sequence lengths, both (T, B, 1); (None, None) without."""
    if lengths is None:
        return None, None
    t = np.arange(T)[:, None]
    lengths = np.asarray(lengths)[None, :]
    rev = np.where(t < lengths, lengths - 1 - t, t)
    return jnp.asarray((t < lengths)[..., None]), jnp.asarray(rev[..., None])


def params_of(weights, layers, D):
    """torch-named weights -> nested params tuple on the default device."""
    sfx = ("", "_reverse")
    return tuple(tuple(tuple(jnp.asarray(weights[f"{k}_l{layer}{sfx[d]}"])
                             for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for d in range(D)) for layer in range(layers))


def compile_infer(cell):
    """jit forward: f(params, x, mask, rev_idx) -> out."""
    return jax.jit(lambda p, x, m, r: forward(cell, p, x, m, r))


def compile_train(cell):
    """jit training step: f(params, x, grad_out, mask, rev_idx) -> ((loss, out), (dparams, dx))."""
    def loss(p, x, g, m, r):
        out = forward(cell, p, x, m, r)
        return jnp.sum(out * g), out
    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    return jax.jit(grad)
