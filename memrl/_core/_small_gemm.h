/* Register-blocked float32 products for the GRU's per-time-step recurrent matrix products.
 *
 * memrl_small_sgemm_nn computes, row-major,
 *     C (M, N)  = A (M, K) @ B (K, N)        (accumulate == 0)
 *     C (M, N) += A (M, K) @ B (K, N)        (accumulate != 0)
 * and returns 1, or returns 0 without touching C when the product is not one it handles; the
 * caller then calls BLAS. It handles the small products that run once per time step inside the
 * GRU's loops (the chapter's (4, 16) @ (16, 48) and (4, 48) @ (48, 16)), where BLAS's call overhead
 * and its blocking cost more than the arithmetic: M = 4 or 8, 16 <= N <= 64 with N a multiple
 * of 16, 1 <= K <= 64 (bench/bench_matmul.py times both routes). Only compiled in for x86-64-v3
 * (AVX2 + FMA, memrl/_core/_x86_64_v3/); the baseline build always returns 0.
 *
 * Rounding: OpenBLAS picks its sgemm kernel by CPU, and its kernels sum k in different orders,
 * so the kernels here compute either order and _gru.pyx picks, when it loads, the one that gives
 * this machine's OpenBLAS bits (small_kernel_order; tests/test_isa.py checks the x86-64-v3 path
 * against the baseline path, which calls OpenBLAS):
 *   MEMRL_SG_ONE_CHAIN: every element of A @ B is one chain of fused multiply-adds over k in
 *     increasing order (s = a0 * b0; s = fma(ak, bk, s)), then C + s when accumulating. OpenBLAS's
 *     AVX-512 sgemm kernels (seen on an AVX-512 Intel Xeon).
 *   MEMRL_SG_PAIRED_CHAINS: two chains from zero, even k and odd k, over each whole group of 8 k;
 *     the K % 8 last k on the even chain; s = even + odd, then C + s. OpenBLAS's Haswell kernel,
 *     which CPUs with AVX2 but no AVX-512 get (seen on an AMD Zen 3 EPYC); found by comparing
 *     candidate orders with its bits over every K in [1, 64].
 * Where neither matches, the time loop calls BLAS. No allocation; reentrant.
 */
#ifndef MEMRL_SMALL_GEMM_H
#define MEMRL_SMALL_GEMM_H

/* The summation orders the kernels compute (the last argument of memrl_small_sgemm_nn). */
#define MEMRL_SG_ONE_CHAIN 1
#define MEMRL_SG_PAIRED_CHAINS 2

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

/* The paired-chains order of OpenBLAS's Haswell sgemm kernel, 4 rows by one vector of 8 columns:
 * over each whole group of 8 k, even k go to one chain and odd k to another; the K % 8 last k go
 * to the even chain; the element is the even chain plus the odd one (both start from zero). Two
 * accumulators per element, so one vector wide keeps the 8 chains in registers. */
static inline void memrl_sg_block_paired_4x1(int K, const float* A, int lda, const float* B, int ldb,
                                              int accumulate, float* C, int ldc) {
    const float *a0 = A, *a1 = A + (size_t)lda, *a2 = A + 2 * (size_t)lda, *a3 = A + 3 * (size_t)lda;
    __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0, b, c;
    int k, whole = K - K % 8;
    for (k = 0; k < whole; k += 2) {
        b = _mm256_loadu_ps(B + (size_t)k * ldb);
        c = _mm256_loadu_ps(B + (size_t)(k + 1) * ldb);
        e0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k), b, e0); o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k + 1), c, o0);
        e1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + k), b, e1); o1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + k + 1), c, o1);
        e2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + k), b, e2); o2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + k + 1), c, o2);
        e3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + k), b, e3); o3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + k + 1), c, o3);
    }
    for (; k < K; k++) {
        b = _mm256_loadu_ps(B + (size_t)k * ldb);
        e0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k), b, e0);
        e1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + k), b, e1);
        e2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + k), b, e2);
        e3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + k), b, e3);
    }
    e0 = _mm256_add_ps(e0, o0); e1 = _mm256_add_ps(e1, o1); e2 = _mm256_add_ps(e2, o2); e3 = _mm256_add_ps(e3, o3);
    if (accumulate) {
        e0 = _mm256_add_ps(_mm256_loadu_ps(C), e0);
        e1 = _mm256_add_ps(_mm256_loadu_ps(C + (size_t)ldc), e1);
        e2 = _mm256_add_ps(_mm256_loadu_ps(C + 2 * (size_t)ldc), e2);
        e3 = _mm256_add_ps(_mm256_loadu_ps(C + 3 * (size_t)ldc), e3);
    }
    _mm256_storeu_ps(C, e0); _mm256_storeu_ps(C + (size_t)ldc, e1);
    _mm256_storeu_ps(C + 2 * (size_t)ldc, e2); _mm256_storeu_ps(C + 3 * (size_t)ldc, e3);
}

static inline int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                                       int ldb, int accumulate, float* C, int ldc, int order) {
    int i, j;
    if (!memrl_small_sgemm_handles(M, N, K) || (order != MEMRL_SG_ONE_CHAIN && order != MEMRL_SG_PAIRED_CHAINS))
        return 0;
    for (i = 0; i < M; i += 4) {
        const float* a = A + (size_t)i * lda;
        float* c = C + (size_t)i * ldc;
        if (order == MEMRL_SG_PAIRED_CHAINS)
            for (j = 0; j < N; j += 8) memrl_sg_block_paired_4x1(K, a, lda, B + j, ldb, accumulate, c + j, ldc);
        else if (N % 24 == 0) /* 48 columns: 2 x 24; 16, 32, 64: n x 16 */
            for (j = 0; j < N; j += 24) memrl_sg_block_4x3(K, a, lda, B + j, ldb, accumulate, c + j, ldc);
        else
            for (j = 0; j < N; j += 16) memrl_sg_block_4x2(K, a, lda, B + j, ldb, accumulate, c + j, ldc);
    }
    return 1;
}

#else /* the baseline build: BLAS computes every product */

static inline int memrl_small_sgemm_handles(int M, int N, int K) {
    (void)M; (void)N; (void)K;
    return 0;
}

static inline int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                                       int ldb, int accumulate, float* C, int ldc, int order) {
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)accumulate;
    (void)C; (void)ldc; (void)order;
    return 0;
}

#endif
#endif /* MEMRL_SMALL_GEMM_H */
