/* The machine's fp32 arithmetic limit: fused multiply-adds on every core, GFLOP/s.
 *
 * Ten independent accumulators per thread hide the FMA latency (4-5 cycles at 2 FMAs per
 * cycle), so the loop runs at the FMA units' throughput. Built with -mavx512f it uses 512-bit
 * FMAs (16 lanes, 32 FLOPs each), else AVX2's (8 lanes, 16 FLOPs).
 * Build and run: gcc -O3 -mavx2 -mfma -fopenmp fma_peak.c -o fma_peak && ./fma_peak
 *            or: gcc -O3 -mavx512f -mfma -fopenmp fma_peak.c -o fma_peak && ./fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define ACCUMULATORS 10
#define ITERATIONS 200000000L

#ifdef __AVX512F__
#define LANES 16
#define VECTOR __m512
#define SET1 _mm512_set1_ps
#define FMADD _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define STORE _mm512_storeu_ps
#else
#define LANES 8
#define VECTOR __m256
#define SET1 _mm256_set1_ps
#define FMADD _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define STORE _mm256_storeu_ps
#endif

int main(void) {
    double best = 0;
    for (int trial = 0; trial < 3; trial++) {
        float sink = 0;
        double start = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            VECTOR acc[ACCUMULATORS];
            const VECTOR a = SET1(0.999999f), b = SET1(1e-7f);
            for (int k = 0; k < ACCUMULATORS; k++) acc[k] = SET1((float)k);
            for (long i = 0; i < ITERATIONS / ACCUMULATORS; i++)
                for (int k = 0; k < ACCUMULATORS; k++) acc[k] = FMADD(acc[k], a, b);
            float lanes[LANES];
            for (int k = 1; k < ACCUMULATORS; k++) acc[0] = ADD(acc[0], acc[k]);
            STORE(lanes, acc[0]);
            sink += lanes[0];  /* keeps the loop from being optimized away */
        }
        double seconds = omp_get_wtime() - start;
        double gflops = omp_get_max_threads() * (double)ITERATIONS * LANES * 2 / seconds / 1e9;
        if (gflops > best) best = gflops;
        if (sink == 12345.f) printf(" ");
    }
    printf("%d threads, %d-lane FMAs: %.1f GFLOP/s\n", omp_get_max_threads(), LANES, best);
    printf("peak_gflops=%.1f\n", best);
    return 0;
}
