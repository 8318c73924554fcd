/* Vectorizable sigmoid and tanh over arrays, float and double.
 *
 * libm's expf/tanhf are scalar calls that no compiler vectorizes portably; these are
 * branch-free Cephes-style approximations (a few ulp) written so that gcc/clang at -O3
 * turn each loop into SIMD code. NaN propagates (comparisons keep NaN, clamps do not
 * replace it). exp(x) = 2^n * p(r), r = x - n ln2, with the exponent built by bit shifts.
 * Rounding by adding 1.5 * 2^k relies on strict IEEE evaluation: never build with -ffast-math.
 */
#ifndef RNNX_VMATH_H
#define RNNX_VMATH_H
#include <stdint.h>
#include <string.h>
#include <stddef.h>

static inline float rnnx_expf(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.3365447504f ? -87.3365447504f : x;
    /* n = round(x / ln2) by the 1.5 * 2^23 trick: its low mantissa bits then hold n. */
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    int32_t bits = (tbits - 0x4B400000 + 127) << 23;   /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double rnnx_exp(double x) {
    x = x > 709.0 ? 709.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double magic = 6755399441055744.0;   /* 1.5 * 2^52 */
    double t = x * 1.4426950408889634073599 + magic;
    double n = t - magic;
    x = x - n * 6.93145751953125e-1;
    x = x - n * 1.42860682030941723212e-6;
    double xx = x * x;
    double px = x * ((1.26177193074810590878e-4 * xx + 3.02994407707441961300e-2) * xx
                     + 9.99999999999999999910e-1);
    double qx = ((3.00198505138664455042e-6 * xx + 2.52448340349684104192e-3) * xx
                 + 2.27265548208155028766e-1) * xx + 2.00000000000000000009e0;
    double e = 1.0 + 2.0 * (px / (qx - px));
    int64_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    int64_t bits = (tbits - 0x4338000000000000LL + 1023) << 52;   /* 2^n */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/* tanh: odd polynomial near 0 (accurate relative error), 1 - 2/(exp(2|x|)+1) elsewhere. */
static inline float rnnx_tanhf(float x) {
    float ax = x < 0 ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (rnnx_expf(2.0f * ax) + 1.0f);
    big = x < 0 ? -big : big;
    return ax < 0.625f ? small : big;
}

static inline double rnnx_tanh(double x) {
    double ax = x < 0 ? -x : x;
    double z = x * x;
    double p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
               - 1.61468768441708447952e3;
    double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
               + 4.84406305325125486048e3;
    double small = x + x * z * p / q;
    double big = 1.0 - 2.0 / (rnnx_exp(2.0 * ax) + 1.0);
    big = x < 0 ? -big : big;
    return ax < 0.625 ? small : big;
}

static inline float rnnx_sigmoidf(float x) { return 1.0f / (1.0f + rnnx_expf(-x)); }
static inline double rnnx_sigmoid(double x) { return 1.0 / (1.0 + rnnx_exp(-x)); }

/* In-place array versions: a[i] = f(a[i]) for i < n. */
static void rnnx_tanh_f(float *a, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) a[i] = rnnx_tanhf(a[i]);
}
static void rnnx_tanh_d(double *a, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) a[i] = rnnx_tanh(a[i]);
}
#endif
