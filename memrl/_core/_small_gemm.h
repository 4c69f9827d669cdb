/* Register-blocked float32 products for the GRU's per-time-step recurrent matrix products.
 *
 * memrl_small_sgemm_nn computes, row-major,
 *     C (M, N)  = A (M, K) @ B (K, N)        (accumulate == 0)
 *     C (M, N) += A (M, K) @ B (K, N)        (accumulate != 0)
 * and returns 1, or returns 0 without touching C when the product is not one it handles; the
 * caller then calls BLAS. It handles the small products that run once per time step inside the
 * GRU's loops (the chapter's (4, 16) @ (16, 48) and (4, 48) @ (48, 16)), where BLAS's call overhead
 * and its AVX-512 blocking cost more than the arithmetic: M = 4 or 8,
 * 16 <= N <= 64 with N a multiple of 16, 1 <= K <= 64 (bench/bench_matmul.py times both routes). Only compiled in for
 * x86-64-v3 (AVX2 + FMA, memrl/_core/_x86_64_v3/); the baseline build always returns 0.
 *
 * Rounding: every element of A @ B is one chain of fused multiply-adds over k in increasing order,
 * starting from the first product (s = a0 * b0; s = fma(ak, bk, s)), and then C + s when
 * accumulating. That is what OpenBLAS's AVX-512 sgemm kernels compute for these shapes; its Haswell
 * kernel (CPUs without AVX-512) rounds differently. _gru.pyx compares the two routes when it loads
 * (small_kernel_matches_blas) and uses these kernels only where the bits agree, so both paths give
 * the same bits (checked by tests/test_isa.py against the baseline path, which calls
 * OpenBLAS). No allocation; reentrant.
 */
#ifndef MEMRL_SMALL_GEMM_H
#define MEMRL_SMALL_GEMM_H

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define MEMRL_SG_MAX_M 8
#define MEMRL_SG_MAX_N 64
#define MEMRL_SG_MAX_K 64

/* Blocks of 4 rows by V = 3 or 2 vectors of 8 columns, written out so that the 4 * V accumulators
 * stay in registers (at most 12 of AVX2's 16); both run in tests/test_isa.py against OpenBLAS. */
static inline void memrl_sg_block_4x3(int K, const float* A, int lda, const float* B, int ldb,
                                        int accumulate, float* C, int ldc) {
    __m256 b0 = _mm256_loadu_ps(B + 0), b1 = _mm256_loadu_ps(B + 8), b2 = _mm256_loadu_ps(B + 16), x;
    x = _mm256_broadcast_ss(A + 0 * (size_t)lda);
    __m256 s00 = _mm256_mul_ps(x, b0), s01 = _mm256_mul_ps(x, b1), s02 = _mm256_mul_ps(x, b2);
    x = _mm256_broadcast_ss(A + 1 * (size_t)lda);
    __m256 s10 = _mm256_mul_ps(x, b0), s11 = _mm256_mul_ps(x, b1), s12 = _mm256_mul_ps(x, b2);
    x = _mm256_broadcast_ss(A + 2 * (size_t)lda);
    __m256 s20 = _mm256_mul_ps(x, b0), s21 = _mm256_mul_ps(x, b1), s22 = _mm256_mul_ps(x, b2);
    x = _mm256_broadcast_ss(A + 3 * (size_t)lda);
    __m256 s30 = _mm256_mul_ps(x, b0), s31 = _mm256_mul_ps(x, b1), s32 = _mm256_mul_ps(x, b2);
    for (int k = 1; k < K; k++) {
        const float* b = B + (size_t)k * ldb;
        b0 = _mm256_loadu_ps(b + 0); b1 = _mm256_loadu_ps(b + 8); b2 = _mm256_loadu_ps(b + 16);
        x = _mm256_broadcast_ss(A + 0 * (size_t)lda + k);
        s00 = _mm256_fmadd_ps(x, b0, s00); s01 = _mm256_fmadd_ps(x, b1, s01); s02 = _mm256_fmadd_ps(x, b2, s02);
        x = _mm256_broadcast_ss(A + 1 * (size_t)lda + k);
        s10 = _mm256_fmadd_ps(x, b0, s10); s11 = _mm256_fmadd_ps(x, b1, s11); s12 = _mm256_fmadd_ps(x, b2, s12);
        x = _mm256_broadcast_ss(A + 2 * (size_t)lda + k);
        s20 = _mm256_fmadd_ps(x, b0, s20); s21 = _mm256_fmadd_ps(x, b1, s21); s22 = _mm256_fmadd_ps(x, b2, s22);
        x = _mm256_broadcast_ss(A + 3 * (size_t)lda + k);
        s30 = _mm256_fmadd_ps(x, b0, s30); s31 = _mm256_fmadd_ps(x, b1, s31); s32 = _mm256_fmadd_ps(x, b2, s32);
    }
    if (accumulate) {
        s00 = _mm256_add_ps(_mm256_loadu_ps(C + 0 * (size_t)ldc + 0), s00); s01 = _mm256_add_ps(_mm256_loadu_ps(C + 0 * (size_t)ldc + 8), s01); s02 = _mm256_add_ps(_mm256_loadu_ps(C + 0 * (size_t)ldc + 16), s02);
        s10 = _mm256_add_ps(_mm256_loadu_ps(C + 1 * (size_t)ldc + 0), s10); s11 = _mm256_add_ps(_mm256_loadu_ps(C + 1 * (size_t)ldc + 8), s11); s12 = _mm256_add_ps(_mm256_loadu_ps(C + 1 * (size_t)ldc + 16), s12);
        s20 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc + 0), s20); s21 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc + 8), s21); s22 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc + 16), s22);
        s30 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc + 0), s30); s31 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc + 8), s31); s32 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc + 16), s32);
    }
    _mm256_storeu_ps(C + 0 * (size_t)ldc + 0, s00); _mm256_storeu_ps(C + 0 * (size_t)ldc + 8, s01); _mm256_storeu_ps(C + 0 * (size_t)ldc + 16, s02);
    _mm256_storeu_ps(C + 1 * (size_t)ldc + 0, s10); _mm256_storeu_ps(C + 1 * (size_t)ldc + 8, s11); _mm256_storeu_ps(C + 1 * (size_t)ldc + 16, s12);
    _mm256_storeu_ps(C + 2 * (size_t)ldc + 0, s20); _mm256_storeu_ps(C + 2 * (size_t)ldc + 8, s21); _mm256_storeu_ps(C + 2 * (size_t)ldc + 16, s22);
    _mm256_storeu_ps(C + 3 * (size_t)ldc + 0, s30); _mm256_storeu_ps(C + 3 * (size_t)ldc + 8, s31); _mm256_storeu_ps(C + 3 * (size_t)ldc + 16, s32);
}

static inline void memrl_sg_block_4x2(int K, const float* A, int lda, const float* B, int ldb,
                                        int accumulate, float* C, int ldc) {
    __m256 b0 = _mm256_loadu_ps(B + 0), b1 = _mm256_loadu_ps(B + 8), x;
    x = _mm256_broadcast_ss(A + 0 * (size_t)lda);
    __m256 s00 = _mm256_mul_ps(x, b0), s01 = _mm256_mul_ps(x, b1);
    x = _mm256_broadcast_ss(A + 1 * (size_t)lda);
    __m256 s10 = _mm256_mul_ps(x, b0), s11 = _mm256_mul_ps(x, b1);
    x = _mm256_broadcast_ss(A + 2 * (size_t)lda);
    __m256 s20 = _mm256_mul_ps(x, b0), s21 = _mm256_mul_ps(x, b1);
    x = _mm256_broadcast_ss(A + 3 * (size_t)lda);
    __m256 s30 = _mm256_mul_ps(x, b0), s31 = _mm256_mul_ps(x, b1);
    for (int k = 1; k < K; k++) {
        const float* b = B + (size_t)k * ldb;
        b0 = _mm256_loadu_ps(b + 0); b1 = _mm256_loadu_ps(b + 8);
        x = _mm256_broadcast_ss(A + 0 * (size_t)lda + k);
        s00 = _mm256_fmadd_ps(x, b0, s00); s01 = _mm256_fmadd_ps(x, b1, s01);
        x = _mm256_broadcast_ss(A + 1 * (size_t)lda + k);
        s10 = _mm256_fmadd_ps(x, b0, s10); s11 = _mm256_fmadd_ps(x, b1, s11);
        x = _mm256_broadcast_ss(A + 2 * (size_t)lda + k);
        s20 = _mm256_fmadd_ps(x, b0, s20); s21 = _mm256_fmadd_ps(x, b1, s21);
        x = _mm256_broadcast_ss(A + 3 * (size_t)lda + k);
        s30 = _mm256_fmadd_ps(x, b0, s30); s31 = _mm256_fmadd_ps(x, b1, s31);
    }
    if (accumulate) {
        s00 = _mm256_add_ps(_mm256_loadu_ps(C + 0 * (size_t)ldc + 0), s00); s01 = _mm256_add_ps(_mm256_loadu_ps(C + 0 * (size_t)ldc + 8), s01);
        s10 = _mm256_add_ps(_mm256_loadu_ps(C + 1 * (size_t)ldc + 0), s10); s11 = _mm256_add_ps(_mm256_loadu_ps(C + 1 * (size_t)ldc + 8), s11);
        s20 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc + 0), s20); s21 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc + 8), s21);
        s30 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc + 0), s30); s31 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc + 8), s31);
    }
    _mm256_storeu_ps(C + 0 * (size_t)ldc + 0, s00); _mm256_storeu_ps(C + 0 * (size_t)ldc + 8, s01);
    _mm256_storeu_ps(C + 1 * (size_t)ldc + 0, s10); _mm256_storeu_ps(C + 1 * (size_t)ldc + 8, s11);
    _mm256_storeu_ps(C + 2 * (size_t)ldc + 0, s20); _mm256_storeu_ps(C + 2 * (size_t)ldc + 8, s21);
    _mm256_storeu_ps(C + 3 * (size_t)ldc + 0, s30); _mm256_storeu_ps(C + 3 * (size_t)ldc + 8, s31);
}

/* Whether memrl_small_sgemm_nn computes an (M, K) @ (K, N) product: whole blocks of 4 rows only
 * (a row on its own would run one dependency chain per vector, slower than BLAS for long K). */
static inline int memrl_small_sgemm_handles(int M, int N, int K) {
    return M >= 4 && M <= MEMRL_SG_MAX_M && M % 4 == 0 && N >= 16 && N <= MEMRL_SG_MAX_N && N % 16 == 0 &&
           K >= 1 && K <= MEMRL_SG_MAX_K;
}

static inline int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                                       int ldb, int accumulate, float* C, int ldc) {
    int i, j;
    if (!memrl_small_sgemm_handles(M, N, K))
        return 0;
    for (i = 0; i < M; i += 4)
        for (j = 0; j < N; j += N % 24 == 0 ? 24 : 16) { /* 48 columns: 2 x 24; 16, 32, 64: n x 16 */
            if (N % 24 == 0) memrl_sg_block_4x3(K, A + (size_t)i * lda, lda, B + j, ldb, accumulate, C + (size_t)i * ldc + j, ldc);
            else memrl_sg_block_4x2(K, A + (size_t)i * lda, lda, B + j, ldb, accumulate, C + (size_t)i * ldc + j, ldc);
        }
    return 1;
}

#else /* the baseline build: BLAS computes every product */

static inline int memrl_small_sgemm_handles(int M, int N, int K) {
    (void)M; (void)N; (void)K;
    return 0;
}

static inline int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                                       int ldb, int accumulate, float* C, int ldc) {
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)accumulate;
    (void)C; (void)ldc;
    return 0;
}

#endif
#endif /* MEMRL_SMALL_GEMM_H */
