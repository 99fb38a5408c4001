/* The machine's fp32 arithmetic limit: AVX2 fused multiply-adds on every core, GFLOP/s.
 *
 * Ten independent accumulators per thread hide the FMA latency (4-5 cycles at 2 FMAs per
 * cycle), so the loop runs at the FMA units' throughput; each FMA on 8 lanes is 16 FLOPs.
 * Build and run: gcc -O3 -mavx2 -mfma -fopenmp fma_peak.c -o fma_peak && ./fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define ACCUMULATORS 10
#define ITERATIONS 200000000L

int main(void) {
    double best = 0;
    for (int trial = 0; trial < 3; trial++) {
        float sink = 0;
        double start = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        {
            __m256 acc[ACCUMULATORS];
            const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
            for (int k = 0; k < ACCUMULATORS; k++) acc[k] = _mm256_set1_ps((float)k);
            for (long i = 0; i < ITERATIONS / ACCUMULATORS; i++)
                for (int k = 0; k < ACCUMULATORS; k++) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
            float lanes[8];
            for (int k = 1; k < ACCUMULATORS; k++) acc[0] = _mm256_add_ps(acc[0], acc[k]);
            _mm256_storeu_ps(lanes, acc[0]);
            sink += lanes[0];  /* keeps the loop from being optimized away */
        }
        double seconds = omp_get_wtime() - start;
        double gflops = omp_get_max_threads() * (double)ITERATIONS * 16 / seconds / 1e9;
        if (gflops > best) best = gflops;
        if (sink == 12345.f) printf(" ");
    }
    printf("%d threads: %.1f GFLOP/s\n", omp_get_max_threads(), best);
    printf("peak_gflops=%.1f\n", best);
    return 0;
}
