/* The kernels' C headers on their own, on any architecture the compiler targets: vmath.h's
 * exp, sigmoid and tanh against libm, gates.h's LSTM and GRU rows against the formulas of
 * its header comment computed in double, microgemm.h's products against a plain triple
 * loop (every tile shape), team.h's pool, barrier and thread budget on real threads.
 * Built with the kernels' flags of one level and run by run_checks.py (natively, or for
 * aarch64 under qemu-user). Prints one line per failure and "ok" or "FAIL" at the end. */
#define _GNU_SOURCE   /* team.h's CPU_COUNT, as Python.h defines it for the kernels */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "microgemm.h"
#include "gates.h"
#include "team.h"

static int failures = 0;

static void fail(const char *what, double x, double got, double want) {
    if (failures++ < 20) printf("%s at %.9g: got %.17g, want %.17g\n", what, x, got, want);
}

/* |got - want| in units of the last place of `want` in a format with `digits` mantissa bits. */
static double ulps(double got, double want, int digits) {
    if (got == want) return 0;
    int e;
    frexp(want, &e);
    return fabs(got - want) / ldexp(1.0, e - digits);
}

/* -- vmath.h --------------------------------------------------------------------------- */
static void check_vmath(void) {
    double worst[6] = {0};
    for (int i = 0; i <= 200000; i++) {
        double x = -20.0 + 40.0 * i / 200000.0;
        float xf = (float)x;
        double e[6] = {
            ulps(rnnx_expf(xf), exp((double)xf), 24), ulps(rnnx_sigmoidf(xf),
            1.0 / (1.0 + exp(-(double)xf)), 24), ulps(rnnx_tanhf(xf), tanh((double)xf), 24),
            ulps(rnnx_exp(x), (double)expl((long double)x), 53),
            ulps(rnnx_sigmoid(x), (double)(1.0L / (1.0L + expl(-(long double)x))), 53),
            ulps(rnnx_tanh(x), (double)tanhl((long double)x), 53)};
        for (int f = 0; f < 6; f++) if (e[f] > worst[f]) worst[f] = e[f];
    }
    /* The kernels' activations are held to 2.5 (sigmoid) and 1.5 (tanh) ulp in
       tests/test_gate_activations.py; exp itself to 2 ulp here. */
    const double bound[6] = {2, 2.5, 1.5, 2, 2.5, 1.5};
    const char *name[6] = {"expf", "sigmoidf", "tanhf", "exp", "sigmoid", "tanh"};
    for (int f = 0; f < 6; f++)
        if (!(worst[f] <= bound[f])) fail(name[f], 0, worst[f], bound[f]);   /* in ulp */
    if (getenv("RNNX_SHOW_ULPS"))
        for (int f = 0; f < 6; f++) printf("%s: %.2f ulp\n", name[f], worst[f]);
    /* Extremes: saturation without overflow, NaN propagated. */
    if (!(rnnx_sigmoidf(-200.0f) >= 0 && rnnx_sigmoidf(-200.0f) < 1e-37f))
        fail("sigmoidf(-200)", -200, rnnx_sigmoidf(-200.0f), 0);
    if (rnnx_sigmoidf(200.0f) != 1.0f) fail("sigmoidf(200)", 200, rnnx_sigmoidf(200.0f), 1);
    if (rnnx_tanhf(INFINITY) != 1.0f || rnnx_tanhf(-INFINITY) != -1.0f)
        fail("tanhf(inf)", INFINITY, rnnx_tanhf(INFINITY), 1);
    if (rnnx_tanh(-1e300) != -1.0) fail("tanh(-1e300)", -1e300, rnnx_tanh(-1e300), -1);
    if (!isnan(rnnx_tanhf(NAN)) || !isnan(rnnx_sigmoidf(NAN)) || !isnan(rnnx_tanh(NAN))
        || !isnan(rnnx_sigmoid(NAN)))
        fail("NaN in, NaN out", NAN, 0, NAN);
    float a[5] = {-3, -0.5f, 0, 0.5f, 3}, b[5];
    double ad[5] = {-3, -0.5, 0, 0.5, 3};
    memcpy(b, a, sizeof a);
    rnnx_tanh_f(a, 5);
    rnnx_tanh_d(ad, 5);
    for (int i = 0; i < 5; i++) {
        if (a[i] != rnnx_tanhf(b[i])) fail("rnnx_tanh_f", b[i], a[i], rnnx_tanhf(b[i]));
        if (ad[i] != rnnx_tanh(b[i])) fail("rnnx_tanh_d", b[i], ad[i], rnnx_tanh(b[i]));
    }
}

/* -- gates.h --------------------------------------------------------------------------- */
static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }
static double rnd(void) { return 4.0 * rand() / RAND_MAX - 2.0; }

#define H 37
#define N 29        /* a thread's share of the units: the rows start inside the gate blocks */
#define OFF 5

static void close_to(const char *what, int j, double got, double want, double tol) {
    if (!(fabs(got - want) <= tol * (1 + fabs(want)))) fail(what, j, got, want);
}

#define CHECK_LSTM(T, S, TOL)                                                                 \
static void check_lstm_##S(void) {                                                            \
    T x[4 * H], hr[4 * H], b[4 * H], g[4 * H], c[H], m[H], c0[H], cn[H], dm[H], dc[H], g2[4 * H]; \
    for (int j = 0; j < 4 * H; j++) { x[j] = (T)rnd(); hr[j] = (T)rnd(); b[j] = (T)rnd(); }   \
    for (int j = 0; j < H; j++) { c[j] = c0[j] = (T)rnd(); dm[j] = (T)rnd(); dc[j] = (T)rnd(); } \
    T dc0[H];                                                                                 \
    memcpy(dc0, dc, sizeof dc);                                                               \
    rnnx_lstm_forward_row_##S(N, H, x + OFF, hr + OFF, b + OFF, g + OFF, c + OFF, m + OFF);   \
    for (int j = OFF; j < OFF + N; j++) {                                                     \
        double gi = sig((double)x[j] + hr[j] + b[j]);                                         \
        double gf = sig((double)x[H + j] + hr[H + j] + b[H + j]);                             \
        double gg = tanh((double)x[2 * H + j] + hr[2 * H + j] + b[2 * H + j]);                \
        double go = sig((double)x[3 * H + j] + hr[3 * H + j] + b[3 * H + j]);                 \
        double cnew = gf * c0[j] + gi * gg;                                                   \
        close_to("lstm forward: i", j, g[j], gi, TOL);                                        \
        close_to("lstm forward: g", j, g[2 * H + j], gg, TOL);                                \
        close_to("lstm forward: c'", j, c[j], cnew, TOL);                                     \
        close_to("lstm forward: m", j, m[j], go * tanh(cnew), TOL);                           \
        cn[j] = c[j];                                                                         \
    }                                                                                         \
    memcpy(g2, g, sizeof g);                                                                  \
    rnnx_lstm_backward_row_##S(N, H, g + OFF, cn + OFF, c0 + OFF, dm + OFF, dc + OFF);        \
    for (int j = OFF; j < OFF + N; j++) {                                                     \
        double gi = g2[j], gf = g2[H + j], gg = g2[2 * H + j], go = g2[3 * H + j];            \
        double tc = tanh((double)cn[j]), dct = dc0[j] + dm[j] * go * (1 - tc * tc);           \
        close_to("lstm backward: dc", j, dc[j], dct * gf, TOL);                               \
        close_to("lstm backward: di", j, g[j], dct * gg * gi * (1 - gi), TOL);                \
        close_to("lstm backward: df", j, g[H + j], dct * c0[j] * gf * (1 - gf), TOL);         \
        close_to("lstm backward: dg", j, g[2 * H + j], dct * gi * (1 - gg * gg), TOL);        \
        close_to("lstm backward: do", j, g[3 * H + j], dm[j] * tc * go * (1 - go), TOL);      \
    }                                                                                         \
}

#define CHECK_GRU(T, S, TOL)                                                                  \
static void check_gru_##S(void) {                                                             \
    T x[3 * H], hr[3 * H], b[3 * H], bhn[H], g[3 * H], hn[H], h[H], h0[H], dgh[3 * H], dh[H]; \
    for (int j = 0; j < 3 * H; j++) { x[j] = (T)rnd(); hr[j] = (T)rnd(); b[j] = (T)rnd(); }   \
    for (int j = 0; j < H; j++) { bhn[j] = (T)rnd(); h[j] = h0[j] = (T)rnd(); dh[j] = (T)rnd(); } \
    T dh0[H], g2[3 * H], hn2[H];                                                              \
    memcpy(dh0, dh, sizeof dh);                                                               \
    rnnx_gru_forward_row_##S(N, H, x + OFF, hr + OFF, b + OFF, bhn + OFF, g + OFF, hn + OFF,  \
                             h + OFF);                                                        \
    for (int j = OFF; j < OFF + N; j++) {                                                     \
        double gr = sig((double)x[j] + hr[j] + b[j]);                                         \
        double gz = sig((double)x[H + j] + hr[H + j] + b[H + j]);                             \
        double hnv = (double)hr[2 * H + j] + bhn[j];                                          \
        double gn = tanh((double)x[2 * H + j] + b[2 * H + j] + gr * hnv);                     \
        close_to("gru forward: r", j, g[j], gr, TOL);                                         \
        close_to("gru forward: z", j, g[H + j], gz, TOL);                                     \
        close_to("gru forward: n", j, g[2 * H + j], gn, TOL);                                 \
        close_to("gru forward: hn", j, hn[j], hnv, TOL);                                      \
        close_to("gru forward: h'", j, h[j], gn + gz * (h0[j] - gn), TOL);                    \
    }                                                                                         \
    memcpy(g2, g, sizeof g);                                                                  \
    memcpy(hn2, hn, sizeof hn);                                                               \
    rnnx_gru_backward_row_##S(N, H, g + OFF, hn + OFF, h0 + OFF, dgh + OFF, dh + OFF);        \
    for (int j = OFF; j < OFF + N; j++) {                                                     \
        double gr = g2[j], gz = g2[H + j], gn = g2[2 * H + j], d = dh0[j];                    \
        double dn = d * (1 - gz) * (1 - gn * gn), dr = dn * hn2[j] * gr * (1 - gr);           \
        double dz = d * (h0[j] - gn) * gz * (1 - gz);                                         \
        close_to("gru backward: dr", j, g[j], dr, TOL);                                       \
        close_to("gru backward: dz", j, g[H + j], dz, TOL);                                   \
        close_to("gru backward: dn", j, g[2 * H + j], dn, TOL);                               \
        close_to("gru backward: hn", j, hn[j], dn * gr, TOL);                                 \
        close_to("gru backward: dgh", j, dgh[2 * H + j], dn * gr, TOL);                       \
        close_to("gru backward: dh", j, dh[j], d * gz, TOL);                                  \
    }                                                                                         \
}

CHECK_LSTM(float, f, 2e-6)
CHECK_LSTM(double, d, 1e-14)
CHECK_GRU(float, f, 2e-6)
CHECK_GRU(double, d, 1e-14)

/* -- microgemm.h ------------------------------------------------------------------------ */
/* C (m, n) [+]= A (m, kk) @ B[k0:k0 + kk] with B (k, n) packed in panels of w columns
   (microgemm.h), A row-major or stored transposed, against a triple loop in double. */
#define CHECK_GEMM(T, S, GEMM, W2, TOL)                                                       \
static void check_gemm_##S(int m, int n, int k, int k0, int kk, int transposed, int acc) {   \
    int np = (n + W2 - 1) / W2;                                                               \
    T *A = malloc(sizeof(T) * m * kk), *B = malloc(sizeof(T) * k * n);                        \
    T *Bp = calloc((size_t)np * k * W2, sizeof(T)), *C = malloc(sizeof(T) * m * n);           \
    double *want = malloc(sizeof(double) * m * n);                                            \
    for (int i = 0; i < m * kk; i++) A[i] = (T)rnd();                                         \
    for (int i = 0; i < k * n; i++) B[i] = (T)rnd();                                          \
    for (int i = 0; i < m * n; i++) C[i] = (T)rnd();                                          \
    for (int p = 0; p < k; p++) for (int j = 0; j < n; j++)                                   \
        Bp[((size_t)(j / W2) * k + p) * W2 + j % W2] = B[p * n + j];                          \
    ptrdiff_t ars = transposed ? 1 : kk, aps = transposed ? m : 1;                            \
    for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {                                 \
        double s = acc ? C[i * n + j] : 0;                                                    \
        for (int p = 0; p < kk; p++) s += (double)A[i * ars + p * aps] * B[(k0 + p) * n + j]; \
        want[i * n + j] = s;                                                                  \
    }                                                                                         \
    GEMM(m, n, kk, A, ars, aps, Bp + (ptrdiff_t)k0 * W2, (ptrdiff_t)k * W2, acc, C, n);       \
    for (int i = 0; i < m * n; i++)                                                           \
        if (!(fabs(C[i] - want[i]) <= TOL * (kk + 1))) {                                      \
            char what[96];                                                                    \
            snprintf(what, sizeof what, #GEMM " m=%d n=%d k=%d transposed=%d accumulate=%d, " \
                     "element", m, n, kk, transposed, acc);                                   \
            fail(what, i, C[i], want[i]);                                                     \
            break;                                                                            \
        }                                                                                     \
    free(A); free(B); free(Bp); free(C); free(want);                                          \
}

CHECK_GEMM(float, f, rnnx_sgemm_nn, 16, 1e-5)
CHECK_GEMM(double, d, rnnx_dgemm_nn, 8, 1e-13)

static void check_gemms(void) {
    const int ms[] = {1, 3, 4, 5, 6, 7, 10, 13, 200}, ns[] = {1, 8, 16, 17, 40, 64, 100, 129};
    const int ks[] = {1, 5, 28};
    for (int a = 0; a < 9; a++) for (int b = 0; b < 8; b++) for (int c = 0; c < 3; c++)
        for (int t = 0; t < 2; t++) for (int acc = 0; acc < 2; acc++) {
            int k = ks[c], part = k / 2 + 1 < k ? k / 2 + 1 : k;
            check_gemm_f(ms[a], ns[b], k, 0, k, t, acc);
            check_gemm_d(ms[a], ns[b], k, 0, k, t, acc);
            check_gemm_f(ms[a], ns[b], k, k - part, part, t, acc);   /* rows of a taller B */
            check_gemm_d(ms[a], ns[b], k, k - part, part, t, acc);
        }
}

/* -- team.h ----------------------------------------------------------------------------- */
enum { TEAM_THREADS = 3, TEAM_ROUNDS = 2000 };
static int team_seen[TEAM_THREADS], team_wrong = 0, team_size_seen = 0;
static rnnx_barrier team_barrier;

/* A pool job: each member writes the round number, meets the others, checks that every
   member's number is this round's, and meets them again before the next write. */
static void team_rounds(void *unused) {
    (void)unused;
    int size = rnnx_team_size(), me = rnnx_team_member(), sense = 0, wrong = 0;
    if (me == 0) team_size_seen = size;
    rnnx_barrier_join(&team_barrier, size);
    for (int round = 1; round <= TEAM_ROUNDS; round++) {
        __atomic_store_n(&team_seen[me], round, __ATOMIC_RELAXED);
        rnnx_barrier_wait(&team_barrier, &sense);   /* every member has written ... */
        for (int t = 0; t < size; t++)              /* ... so all see this round */
            wrong += __atomic_load_n(&team_seen[t], __ATOMIC_RELAXED) != round;
        rnnx_barrier_wait(&team_barrier, &sense);   /* nobody writes before all have read */
    }
    __atomic_add_fetch(&team_wrong, wrong, __ATOMIC_RELAXED);
}

static void check_team(void) {
    int cores = rnnx_cores();
    int got = rnnx_claim_threads(cores + 8);
    if (got != cores) fail("claim more than the cores", cores + 8, got, cores);
    int more = rnnx_claim_threads(3);          /* the budget is spent: at least one anyway */
    if (more != 1) fail("claim from a spent budget", 3, more, 1);
    rnnx_release_threads(got + more);
    if (rnnx_busy_threads != 0) fail("release", 0, rnnx_busy_threads, 0);
    /* the pool: a job on 3 threads whose members meet at the barrier 2 x ROUNDS times */
    rnnx_barrier_init(&team_barrier);
    rnnx_pool_run(TEAM_THREADS, team_rounds, NULL);
    if (team_size_seen != rnnx_pool_grow(TEAM_THREADS))
        fail("pool: team size", TEAM_THREADS, team_size_seen, rnnx_pool_grow(TEAM_THREADS));
    if (team_wrong) fail("barrier: members that saw another round", 0, team_wrong, 0);
}

int main(void) {
    srand(1);
    check_vmath();
    check_lstm_f(); check_lstm_d(); check_gru_f(); check_gru_d();
    check_gemms();
    check_team();
    printf(failures ? "FAIL\n" : "ok\n");
    return failures != 0;
}
