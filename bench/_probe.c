/* The machine's limits, compiled by bench/machine.py at bench time (cc -O2 -march=native
 * -fopenmp):
 *
 *   _probe fma THREADS SECONDS        peak float32 FMA rate: GFLOP/s
 *   _probe matvec THREADS KIB SECONDS  y = W x over a float32 W of KIB KiB: GB/s of W read
 *
 * fma: each thread runs 12 independent chains of 8-wide (AVX2) or 16-wide (AVX-512F) fused
 * multiply-adds, enough to cover the FMA latency on every unit; 2 FLOPs per lane. matvec:
 * W (rows x 512, row-major) is split into row blocks, one per thread, each first touched by
 * its thread; the product is repeated for SECONDS and the rate is the bytes of W read per
 * second (x and y are small beside it). Prints one JSON object.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define CHAINS 12
#if defined(__AVX512F__)
#define LANES 16
typedef __m512 vec;
#define VSET(v) _mm512_set1_ps(v)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSUM(a) _mm512_reduce_add_ps(a)
#elif defined(__AVX2__) && defined(__FMA__)
#define LANES 8
typedef __m256 vec;
#define VSET(v) _mm256_set1_ps(v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VADD(a, b) _mm256_add_ps(a, b)
static float VSUM(__m256 a) {
    float t[8];
    _mm256_storeu_ps(t, a);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define LANES 1
typedef float vec;
#define VSET(v) (v)
#define VFMA(a, b, c) __builtin_fmaf(a, b, c)
#define VLOAD(p) (*(p))
#define VADD(a, b) ((a) + (b))
#define VSUM(a) (a)
#endif

/* Iterations of CHAINS FMAs per thread within `seconds` (checked every 2^20 iterations). */
static void fma_peak(int threads, double seconds, float scale) {
    double start = now(), elapsed = 0;
    long total = 0;
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink, total)
    {
        vec a[CHAINS], x = VSET(scale), y = VSET(1e-7f * scale);
        for (int k = 0; k < CHAINS; k++) a[k] = VSET((float)k * scale);
        long iters = 0;
        while (now() - start < seconds) {
            for (long i = 0; i < (1L << 20); i++) {
#pragma GCC unroll 12
                for (int k = 0; k < CHAINS; k++) a[k] = VFMA(a[k], x, y);
            }
            iters += 1L << 20;
        }
        for (int k = 0; k < CHAINS; k++) sink += VSUM(a[k]);
        total += iters;
    }
    elapsed = now() - start;
    printf("{\"probe\": \"fma\", \"threads\": %d, \"lanes\": %d, \"gflops\": %.3f, \"sink\": %g}\n",
           threads, LANES, 2.0 * LANES * CHAINS * (double)total / elapsed / 1e9, sink);
}

/* w[:n] . x[:n], n a multiple of 4 * LANES. */
static float dot(const float *w, const float *x, long n) {
    vec s0 = VSET(0.f), s1 = VSET(0.f), s2 = VSET(0.f), s3 = VSET(0.f);
    for (long j = 0; j < n; j += 4 * LANES) {
        s0 = VFMA(VLOAD(w + j), VLOAD(x + j), s0);
        s1 = VFMA(VLOAD(w + j + LANES), VLOAD(x + j + LANES), s1);
        s2 = VFMA(VLOAD(w + j + 2 * LANES), VLOAD(x + j + 2 * LANES), s2);
        s3 = VFMA(VLOAD(w + j + 3 * LANES), VLOAD(x + j + 3 * LANES), s3);
    }
    return VSUM(VADD(VADD(s0, s1), VADD(s2, s3)));
}

/* Each thread repeats the product of its row block for `seconds`, without meeting the others
 * (a barrier per product would time the barrier at small sizes); the rate is the sum of the
 * threads' rates. */
static void matvec(int threads, long kib, double seconds) {
    const long cols = 512;
    long rows = kib * 1024 / (cols * (long)sizeof(float));
    if (rows < threads) rows = threads;
    float *w = aligned_alloc(64, rows * cols * sizeof(float));
    float *x = aligned_alloc(64, cols * sizeof(float));
    float *y = aligned_alloc(64, rows * sizeof(float));
    if (!w || !x || !y) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (long j = 0; j < cols; j++) x[j] = 1.0f / (j + 1);
    double rate = 0;
#pragma omp parallel num_threads(threads) reduction(+ : rate)
    {
        int me = omp_get_thread_num(), size = omp_get_num_threads();
        long r0 = rows * me / size, r1 = rows * (me + 1) / size, reps = 0;
        for (long r = r0; r < r1; r++) {
            for (long j = 0; j < cols; j++) w[r * cols + j] = (float)((r + j) % 7) * 0.1f;
            y[r] = dot(w + r * cols, x, cols);  /* first touch and warm-up */
        }
#pragma omp barrier
        double start = now(), elapsed;
        do {
            for (long r = r0; r < r1; r++) y[r] += dot(w + r * cols, x, cols);
            reps++;
        } while ((elapsed = now() - start) < seconds);
        rate = (double)reps * (r1 - r0) * cols * sizeof(float) / elapsed;
    }
    double check = 0;
    for (long r = 0; r < rows; r++) check += y[r];
    printf("{\"probe\": \"matvec\", \"threads\": %d, \"kib\": %ld, \"gbs\": %.3f, "
           "\"check\": %g}\n", threads, kib, rate / 1e9, check);
    free(w); free(x); free(y);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "fma")) {
        volatile float scale = 0.999999f;  /* not a constant the compiler could fold */
        fma_peak(atoi(argv[2]), atof(argv[3]), scale);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "matvec")) {
        matvec(atoi(argv[2]), atol(argv[3]), atof(argv[4]));
        return 0;
    }
    fprintf(stderr, "usage: %s fma THREADS SECONDS | matvec THREADS KIB SECONDS\n", argv[0]);
    return 2;
}
