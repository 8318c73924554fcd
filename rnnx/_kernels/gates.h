/* Fused per-row gate loops of the LSTM, one pass over the H units of a batch row.
 *
 * Forward, with x the projected input plus biases already in g and hr = W_hh h:
 *   i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (g + (hr + b)) in blocks of H
 *   c' = f * c + i * g;   m = o * tanh(c')
 * g keeps the activated gates for the backward pass. Backward, from dm = dL/dm and
 * dc = dL/dc' (updated in place to dL/dc), g holding the activated gates and c' = cn:
 *   tc = tanh(c');  dc~ = dc + dm * o * (1 - tc^2)
 *   dc <- dc~ * f;  g <- d(pre-activation) of i, f, g, o
 * Every array is distinct (restrict), so each loop compiles to SIMD code.
 */
#ifndef RNNX_GATES_H
#define RNNX_GATES_H
#include "vmath.h"

#define RNNX_DEFINE_LSTM_ROWS(SUFFIX, T, SIG, TANH)                                           \
static void rnnx_lstm_forward_row_##SUFFIX(ptrdiff_t H, T *restrict g, const T *restrict hr,  \
                                           const T *restrict b, T *restrict c,                \
                                           T *restrict m) {                                   \
    for (ptrdiff_t j = 0; j < H; j++) {                                                       \
        T gi = SIG(g[j] + (hr[j] + b[j]));                                                    \
        T gf = SIG(g[H + j] + (hr[H + j] + b[H + j]));                                        \
        T gg = TANH(g[2 * H + j] + (hr[2 * H + j] + b[2 * H + j]));                           \
        T go = SIG(g[3 * H + j] + (hr[3 * H + j] + b[3 * H + j]));                            \
        T cn = gf * c[j] + gi * gg;                                                           \
        g[j] = gi; g[H + j] = gf; g[2 * H + j] = gg; g[3 * H + j] = go;                       \
        c[j] = cn;                                                                            \
        m[j] = go * TANH(cn);                                                                 \
    }                                                                                         \
}                                                                                             \
static void rnnx_lstm_backward_row_##SUFFIX(ptrdiff_t H, T *restrict g, const T *restrict cn, \
                                            const T *restrict cp, const T *restrict dm,       \
                                            T *restrict dc) {                                 \
    for (ptrdiff_t j = 0; j < H; j++) {                                                       \
        T gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j];                     \
        T tc = TANH(cn[j]);                                                                   \
        T dct = dc[j] + dm[j] * go * (1 - tc * tc);                                           \
        dc[j] = dct * gf;                                                                     \
        g[j] = dct * gg * gi * (1 - gi);                                                      \
        g[H + j] = dct * cp[j] * gf * (1 - gf);                                               \
        g[2 * H + j] = dct * gi * (1 - gg * gg);                                              \
        g[3 * H + j] = dm[j] * tc * go * (1 - go);                                            \
    }                                                                                         \
}

RNNX_DEFINE_LSTM_ROWS(f, float, rnnx_sigmoidf, rnnx_tanhf)
RNNX_DEFINE_LSTM_ROWS(d, double, rnnx_sigmoid, rnnx_tanh)

#endif
