/* A fingerprint of an array's bytes, for the checks that what backward reads did not change
 * since its forward (weights, and the input and output a sequence module reads in place).
 *
 * Each 4-byte word w_i (the last one zero-padded) goes through murmur3's 32-bit finaliser,
 * a bijection, after an XOR with i * 0x9E3779B9 (its position), and is added to lane i % 16.
 * So changing one word always changes its lane's sum, a permutation of words changes the
 * sums but for a chance of about 2^-32 per lane, and the 16 lanes' loop is SIMD (gcc and
 * clang turn the inner loop into vector multiplies). It reads memory about as fast as memcmp.
 */
#ifndef RNNX_FINGERPRINT_H
#define RNNX_FINGERPRINT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RNNX_FINGERPRINT_LANES 16

static inline uint32_t rnnx_fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

static void rnnx_fingerprint(const unsigned char *p, size_t n,
                             uint32_t lanes[RNNX_FINGERPRINT_LANES]) {
    uint32_t acc[RNNX_FINGERPRINT_LANES] = {0};
    size_t words = n / 4, i = 0;
    for (; i + RNNX_FINGERPRINT_LANES <= words; i += RNNX_FINGERPRINT_LANES) {
        for (int l = 0; l < RNNX_FINGERPRINT_LANES; l++) {
            uint32_t w;
            memcpy(&w, p + 4 * (i + l), 4);
            acc[l] += rnnx_fmix32(w ^ ((uint32_t)(i + l) * 0x9E3779B9u));
        }
    }
    for (; i <= words; i++) {   /* the remaining words, then the zero-padded trailing bytes */
        uint32_t w = 0;
        size_t take = i < words ? 4 : n % 4;
        if (take == 0)
            break;
        memcpy(&w, p + 4 * i, take);
        acc[i % RNNX_FINGERPRINT_LANES] += rnnx_fmix32(w ^ ((uint32_t)i * 0x9E3779B9u));
    }
    memcpy(lanes, acc, sizeof acc);
}
#endif
