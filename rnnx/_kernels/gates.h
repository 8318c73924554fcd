/* Fused per-row gate loops of the LSTM and the GRU, one pass over the H units of a batch row.
 * Each takes the n units j = 0..n-1 of pointers that may start inside the row (a thread's
 * share of the units); H stays the distance between gate blocks.
 *
 * LSTM forward, with x = W_ih x_t (this step's input projection) and hr = W_hh h:
 *   i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (x + (hr + b)) in blocks of H
 *   c' = f * c + i * g;   m = o * tanh(c')
 * g receives the activated gates (for the backward pass; at inference g is x itself). Backward, from dm = dL/dm and
 * dc = dL/dc' (updated in place to dL/dc), g holding the activated gates and c' = cn:
 *   tc = tanh(c');  dc~ = dc + dm * o * (1 - tc^2)
 *   dc <- dc~ * f;  g <- d(pre-activation) of i, f, g, o
 * GRU forward, with b = b_ih + b_hh for r, z and b_ih for n, bhn = b_hn:
 *   r, z = sigmoid(x + (hr + b));  hn = hr_n + bhn;  n = tanh(x_n + (b_n + r * hn))
 *   h' = n + z * (h - n)
 * g receives r, z, n and hn is saved for the backward pass. GRU backward, from dh = dL/dh'
 * (updated in place to the direct part z * dh of dL/dh) and hp = h:
 *   dn = dh (1 - z)(1 - n^2);  dr = dn hn r (1 - r);  dz = dh (hp - n) z (1 - z)
 *   g <- dr, dz, dn;  hn <- dn r;  dgh <- dr, dz, dn r  (the recurrent GEMM's operand)
 * Arrays are distinct (restrict) except in the forward rows at inference, where g is x and
 * the GRU's hn is hr's n block (each element j read, then written): ivdep keeps those loops
 * SIMD.
 */
#ifndef RNNX_GATES_H
#define RNNX_GATES_H
#include "vmath.h"

#define RNNX_DEFINE_LSTM_ROWS(SUFFIX, T, SIG, TANH)                                           \
static void rnnx_lstm_forward_row_##SUFFIX(ptrdiff_t n, ptrdiff_t H, const T *x,              \
                                           const T *restrict hr, const T *restrict b, T *g,   \
                                           T *restrict c, T *restrict m) {                    \
    _Pragma("GCC ivdep")                                                                      \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
        T gi = SIG(x[j] + (hr[j] + b[j]));                                                    \
        T gf = SIG(x[H + j] + (hr[H + j] + b[H + j]));                                        \
        T gg = TANH(x[2 * H + j] + (hr[2 * H + j] + b[2 * H + j]));                           \
        T go = SIG(x[3 * H + j] + (hr[3 * H + j] + b[3 * H + j]));                            \
        T cn = gf * c[j] + gi * gg;                                                           \
        g[j] = gi; g[H + j] = gf; g[2 * H + j] = gg; g[3 * H + j] = go;                       \
        c[j] = cn;                                                                            \
        m[j] = go * TANH(cn);                                                                 \
    }                                                                                         \
}                                                                                             \
static void rnnx_lstm_backward_row_##SUFFIX(ptrdiff_t n, ptrdiff_t H, T *restrict g,          \
                                            const T *restrict cn, const T *restrict cp,       \
                                            const T *restrict dm, T *restrict dc) {           \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
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

#define RNNX_DEFINE_GRU_ROWS(SUFFIX, T, SIG, TANH)                                            \
static void rnnx_gru_forward_row_##SUFFIX(ptrdiff_t n, ptrdiff_t H, const T *x, const T *hr,  \
                                          const T *restrict b, const T *restrict bhn, T *g,   \
                                          T *hn, T *restrict h) {                             \
    _Pragma("GCC ivdep")                                                                      \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
        T gr = SIG(x[j] + (hr[j] + b[j]));                                                    \
        T gz = SIG(x[H + j] + (hr[H + j] + b[H + j]));                                        \
        T hnv = hr[2 * H + j] + bhn[j];                                                       \
        T gn = TANH(x[2 * H + j] + (b[2 * H + j] + gr * hnv));                                \
        g[j] = gr; g[H + j] = gz; g[2 * H + j] = gn;                                          \
        hn[j] = hnv;                                                                          \
        h[j] = gn + gz * (h[j] - gn);                                                         \
    }                                                                                         \
}                                                                                             \
static void rnnx_gru_backward_row_##SUFFIX(ptrdiff_t n, ptrdiff_t H, T *restrict g,           \
                                           T *restrict hn, const T *restrict hp,              \
                                           T *restrict dgh, T *restrict dh) {                 \
    _Pragma("GCC ivdep")                                                                      \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
        T gr = g[j], gz = g[H + j], gn = g[2 * H + j], dhv = dh[j];                           \
        T dn = dhv * (1 - gz) * (1 - gn * gn);                                                \
        T dr = dn * hn[j] * gr * (1 - gr);                                                    \
        T dz = dhv * (hp[j] - gn) * gz * (1 - gz);                                            \
        g[j] = dr; g[H + j] = dz; g[2 * H + j] = dn;                                          \
        hn[j] = dn * gr;                                                                      \
        dgh[j] = dr; dgh[H + j] = dz; dgh[2 * H + j] = dn * gr;                               \
        dh[j] = dhv * gz;                                                                     \
    }                                                                                         \
}

RNNX_DEFINE_LSTM_ROWS(f, float, rnnx_sigmoidf, rnnx_tanhf)
RNNX_DEFINE_LSTM_ROWS(d, double, rnnx_sigmoid, rnnx_tanh)
RNNX_DEFINE_GRU_ROWS(f, float, rnnx_sigmoidf, rnnx_tanhf)
RNNX_DEFINE_GRU_ROWS(d, double, rnnx_sigmoid, rnnx_tanh)

#endif
