/* microgemm512.h's rnnx_sgemm_nn against microgemm.h's 256-bit kernel: bitwise the same C
 * for every shape class (6-row tiles, 1-5 leftover rows, partial last panel, accumulate,
 * A row-major or transposed, panels of a taller B). Prints "skip" without AVX-512F, else one
 * line per mismatch and "ok" or "FAIL" at the end. Built and run by test_microgemm512.py. */
#include <stdio.h>
#include <stdlib.h>
#define RNNX_NO_AVX512
#include "microgemm.h"
#ifndef __AVX512F__
int main(void) { printf("skip\n"); return 0; }
#else
#undef RNNX_MICROGEMM512_H
#define rnnx_sgemm_nn new_sgemm
#include "microgemm512.h"

static int compare(int m, int n, int k, int kk, int transposed, int acc) {
    int np = (n + 15) / 16, bad = 0;
    float *A = malloc(sizeof(float) * m * k), *B = malloc(sizeof(float) * np * k * 16);
    float *C1 = malloc(sizeof(float) * m * n), *C2 = malloc(sizeof(float) * m * n);
    for (int i = 0; i < m * k; i++) A[i] = rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < np * k * 16; i++) B[i] = rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < m * n; i++) C1[i] = C2[i] = rand() / (float)RAND_MAX;
    /* kk rows of B from a k-row panel layout; A (m, kk) row-major or stored (kk, m) */
    ptrdiff_t ars = transposed ? 1 : kk, aps = transposed ? m : 1;
    rnnx_sgemm_nn(m, n, kk, A, ars, aps, B, (ptrdiff_t)k * 16, acc, C1, n);
    new_sgemm(m, n, kk, A, ars, aps, B, (ptrdiff_t)k * 16, acc, C2, n);
    for (int i = 0; i < m * n; i++) bad += C1[i] != C2[i];
    if (bad)
        printf("m=%d n=%d k=%d transposed=%d accumulate=%d: %d differ\n", m, n, kk, transposed,
               acc, bad);
    free(A); free(B); free(C1); free(C2);
    return bad;
}

int main(void) {
    int ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 64, 128, 197, 400};
    int ns[] = {1, 16, 20, 64, 100, 112, 129, 512};
    int ks[] = {1, 7, 28, 156};
    int bad = 0;
    srand(1);
    for (int a = 0; a < 14; a++) for (int b = 0; b < 8; b++) for (int c = 0; c < 4; c++)
        for (int t = 0; t < 2; t++) for (int acc = 0; acc < 2; acc++) {
            bad += compare(ms[a], ns[b], ks[c], ks[c], t, acc);
            bad += compare(ms[a], ns[b], ks[c], ks[c] / 2 + 1 > ks[c] ? ks[c] : ks[c] / 2 + 1,
                           t, acc);
        }
    printf(bad ? "FAIL\n" : "ok\n");
    return bad != 0;
}
#endif
