/* A fingerprint of an array's bytes, for the checks that what backward reads did not change
 * since its forward (weights, and the input and output a sequence module reads in place).
 *
 * Each 4-byte word w_i (the last one zero-padded) goes through murmur3's 32-bit finaliser,
 * a bijection, after an XOR with i * 0x9E3779B9 (its position), and is added to lane i % 16.
 * So changing one word always changes its lane's sum, a permutation of words changes the
 * sums but for a chance of about 2^-32 per lane, and the 16 lanes live in SIMD registers.
 * It reads memory about as fast as memcmp.
 */
#ifndef RNNX_FINGERPRINT_H
#define RNNX_FINGERPRINT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RNNX_FINGERPRINT_LANES 16
#define RNNX_GOLDEN 0x9E3779B9u

/* RNNX_FP_WIDTH lanes of 32 bits in one SIMD register (GCC/clang vector extension): 8 with
 * AVX2, else 4 (SSE, NEON). */
#ifdef __AVX2__
#define RNNX_FP_WIDTH 8
#else
#define RNNX_FP_WIDTH 4
#endif
typedef uint32_t rnnx_u32v __attribute__((vector_size(4 * RNNX_FP_WIDTH)));

static inline rnnx_u32v rnnx_fmix32v(rnnx_u32v x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

/* The same for one word (the last few words of an array): lane 0 of a vector. */
static inline uint32_t rnnx_fmix32(uint32_t x) {
    rnnx_u32v v = {x};
    return rnnx_fmix32v(v)[0];
}

static void rnnx_fingerprint(const unsigned char *p, size_t n,
                             uint32_t lanes[RNNX_FINGERPRINT_LANES]) {
    /* lane l in acc[l / RNNX_FP_WIDTH]; key: each lane's word index times RNNX_GOLDEN */
    enum { VECTORS = RNNX_FINGERPRINT_LANES / RNNX_FP_WIDTH };
    rnnx_u32v acc[VECTORS], key, w;
    size_t words = n / 4, i = 0;   /* whole words */
    for (int l = 0; l < RNNX_FP_WIDTH; l++)
        key[l] = (uint32_t)l * RNNX_GOLDEN;
    memset(acc, 0, sizeof acc);
    for (; i + RNNX_FINGERPRINT_LANES <= words; i += RNNX_FINGERPRINT_LANES) {
        for (int a = 0; a < VECTORS; a++) {
            memcpy(&w, p + 4 * i + sizeof w * a, sizeof w);
            acc[a] += rnnx_fmix32v(w ^ key);
            key += RNNX_FP_WIDTH * RNNX_GOLDEN;
        }
    }
    memcpy(lanes, acc, sizeof acc);
    for (; 4 * i < n; i++) {    /* the remaining words, the last one zero-padded */
        uint32_t v = 0;
        memcpy(&v, p + 4 * i, n - 4 * i < 4 ? n - 4 * i : 4);
        lanes[i % RNNX_FINGERPRINT_LANES] += rnnx_fmix32(v ^ ((uint32_t)i * RNNX_GOLDEN));
    }
}
#endif
