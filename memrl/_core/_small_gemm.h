/* Register-blocked float32 products for the GRU's per-time-step recurrent matrix products.
 *
 * memrl_small_sgemm_nn computes, row-major,
 *     C (M, N)  = A (M, K) @ B (K, N)        (accumulate == 0)
 *     C (M, N) += A (M, K) @ B (K, N)        (accumulate != 0)
 * and returns 1, or returns 0 without touching C when the product is not one it handles; the
 * caller then calls BLAS. It handles the products that run once per time step inside the GRU's
 * loops (the state times W_hh^T forward, the gate gradients times W_hh backward), where BLAS's call
 * overhead and its packing of the weight matrix at every step cost more than the arithmetic
 * (bench/bench_matmul.py times both routes): whole blocks of 4 rows and of 16 columns, up to the
 * limits below. Only compiled in for x86-64-v3 (AVX2 + FMA, memrl/_core/_x86_64_v3/); the baseline
 * build always returns 0.
 *
 * Rounding: OpenBLAS picks its sgemm kernel by CPU, and its kernels sum over k in different
 * orders, so the kernels here compute either of two orders, and _gru.pyx picks, when it loads, the
 * one that gives this machine's OpenBLAS bits (small_kernel_order; tests/test_isa.py checks the
 * x86-64-v3 path against the baseline path, which calls OpenBLAS):
 *   MEMRL_SG_ONE_CHAIN (up to (8, 64) @ (64, 64)): every element of A @ B is one chain of fused
 *     multiply-adds over k in increasing order (s = a0 * b0; s = fma(ak, bk, s)), then C + s when
 *     accumulating. OpenBLAS's AVX-512 sgemm kernels (seen on an AVX-512 Intel Xeon).
 *   MEMRL_SG_HASWELL (up to (32, 256) @ (256, 256)): OpenBLAS's Haswell kernel, which CPUs with
 *     AVX2 but no AVX-512 get (seen on an AMD Zen 3 EPYC). Each element is either one chain from
 *     zero or paired chains: two chains from zero, even k and odd k, over each whole group of 8 k,
 *     the K % 8 last k on the even chain, and the two added; then C + s. Which elements are paired
 *     follows the kernel's blocking (memrl_sg_haswell, below). Found by comparing candidate orders
 *     with its bits (K 1-64, 1-32 rows) and reading its sgemm_kernel_8x4_haswell_2.c and level-3
 *     driver; within these limits OpenBLAS splits neither K nor the columns (its Haswell sgemm
 *     blocks are 320), and on one thread it does not split the product at all.
 * Where neither matches, the time loop calls BLAS. C must not overlap A or B. No allocation;
 * reentrant.
 */
#ifndef MEMRL_SMALL_GEMM_H
#define MEMRL_SMALL_GEMM_H

/* The summation orders the kernels compute (the last argument of memrl_small_sgemm_nn). */
#define MEMRL_SG_ONE_CHAIN 1
#define MEMRL_SG_HASWELL 2

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

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

/* The largest products each order takes (rows, columns, depth); whole blocks of 4 rows and of 16
 * columns only (a row on its own would run one dependency chain per vector, slower than BLAS). */
#define MEMRL_SG_ONE_CHAIN_MAX_M 8
#define MEMRL_SG_ONE_CHAIN_MAX_N 64
#define MEMRL_SG_ONE_CHAIN_MAX_K 64
#define MEMRL_SG_HASWELL_MAX_M 32
#define MEMRL_SG_HASWELL_MAX_N 256
#define MEMRL_SG_HASWELL_MAX_K 256

/* Whether memrl_small_sgemm_nn computes an (M, K) @ (K, N) product in summation ``order``. */
static inline int memrl_small_sgemm_handles(int M, int N, int K, int order) {
    int max_m, max_n, max_k;
    if (order == MEMRL_SG_ONE_CHAIN) {
        max_m = MEMRL_SG_ONE_CHAIN_MAX_M; max_n = MEMRL_SG_ONE_CHAIN_MAX_N; max_k = MEMRL_SG_ONE_CHAIN_MAX_K;
    } else if (order == MEMRL_SG_HASWELL) {
        max_m = MEMRL_SG_HASWELL_MAX_M; max_n = MEMRL_SG_HASWELL_MAX_N; max_k = MEMRL_SG_HASWELL_MAX_K;
    } else {
        return 0;
    }
    return M >= 4 && M <= max_m && M % 4 == 0 && N >= 16 && N <= max_n && N % 16 == 0 && K >= 1 && K <= max_k;
}

/* Paired chains, R (4 or 6) rows by one vector of 8 columns: over each whole group of 8 k, even k
 * go to one chain and odd k to another; the K % 8 last k go to the even chain; the element is the
 * even chain plus the odd one, both from zero (OpenBLAS's KERNEL_k2m8n4 and KERNEL_*_k2m8n6). */
static inline void memrl_sg_paired(const int R, int K, const float* A, int lda, const float* B, int ldb,
                                   int accumulate, float* C, int ldc) {
    __m256 e[6], o[6], b, c;
    int r, k, whole = K - K % 8;
#pragma GCC unroll 6
    for (r = 0; r < R; r++) e[r] = o[r] = _mm256_setzero_ps();
    for (k = 0; k < whole; k += 2) {
        b = _mm256_loadu_ps(B + (size_t)k * ldb);
        c = _mm256_loadu_ps(B + (size_t)(k + 1) * ldb);
#pragma GCC unroll 6
        for (r = 0; r < R; r++) {
            e[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + (size_t)r * lda + k), b, e[r]);
            o[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + (size_t)r * lda + k + 1), c, o[r]);
        }
    }
    for (; k < K; k++) {
        b = _mm256_loadu_ps(B + (size_t)k * ldb);
#pragma GCC unroll 6
        for (r = 0; r < R; r++) e[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + (size_t)r * lda + k), b, e[r]);
    }
#pragma GCC unroll 6
    for (r = 0; r < R; r++) {
        b = _mm256_add_ps(e[r], o[r]);
        if (accumulate) b = _mm256_add_ps(_mm256_loadu_ps(C + (size_t)r * ldc), b);
        _mm256_storeu_ps(C + (size_t)r * ldc, b);
    }
}

/* One chain from zero, 6 rows by two vectors (16 columns): OpenBLAS's KERNEL_*_k2m16n6. */
static inline void memrl_sg_chain_6x2(int K, const float* A, int lda, const float* B, int ldb, int accumulate,
                                      float* C, int ldc) {
    __m256 s[6][2], b0, b1, x;
    int r, k;
#pragma GCC unroll 6
    for (r = 0; r < 6; r++) s[r][0] = s[r][1] = _mm256_setzero_ps();
    for (k = 0; k < K; k++) {
        b0 = _mm256_loadu_ps(B + (size_t)k * ldb);
        b1 = _mm256_loadu_ps(B + (size_t)k * ldb + 8);
#pragma GCC unroll 6
        for (r = 0; r < 6; r++) {
            x = _mm256_broadcast_ss(A + (size_t)r * lda + k);
            s[r][0] = _mm256_fmadd_ps(x, b0, s[r][0]);
            s[r][1] = _mm256_fmadd_ps(x, b1, s[r][1]);
        }
    }
#pragma GCC unroll 6
    for (r = 0; r < 6; r++) {
        if (accumulate) {
            s[r][0] = _mm256_add_ps(_mm256_loadu_ps(C + (size_t)r * ldc), s[r][0]);
            s[r][1] = _mm256_add_ps(_mm256_loadu_ps(C + (size_t)r * ldc + 8), s[r][1]);
        }
        _mm256_storeu_ps(C + (size_t)r * ldc, s[r][0]);
        _mm256_storeu_ps(C + (size_t)r * ldc + 8, s[r][1]);
    }
}

/* Six rows of a block of 12 (OpenBLAS's n = 12 pass), columns from ``first`` on in 16-column one-chain
 * blocks and 8 paired columns left at the end. */
static inline void memrl_sg_haswell_half(int first, int N, int K, const float* A, int lda, const float* B,
                                         int ldb, int accumulate, float* C, int ldc) {
    int j;
    for (j = first; j + 16 <= N; j += 16) memrl_sg_chain_6x2(K, A, lda, B + j, ldb, accumulate, C + j, ldc);
    if (j < N) memrl_sg_paired(6, K, A, lda, B + j, ldb, accumulate, C + j, ldc);
}

/* The Haswell order: OpenBLAS's sgemm_kernel_8x4_haswell_2 as its level-3 driver calls it. Rows go
 * in blocks of 12 while 12 are left, then of 4. In a block of 12, rows 0-5 take columns 0-7 paired
 * and then 16-column one-chain blocks from column 8; rows 6-11 take 16-column one-chain blocks from
 * column 0; in each half, 8 columns left at the end are paired. Blocks of 4 rows are paired. */
static inline void memrl_sg_haswell(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                                    int accumulate, float* C, int ldc) {
    int i = 0, j;
    for (; M - i >= 12; i += 12) {
        const float* a = A + (size_t)i * lda;
        float* c = C + (size_t)i * ldc;
        memrl_sg_paired(6, K, a, lda, B, ldb, accumulate, c, ldc);
        memrl_sg_haswell_half(8, N, K, a, lda, B, ldb, accumulate, c, ldc);
        memrl_sg_haswell_half(0, N, K, a + 6 * (size_t)lda, lda, B, ldb, accumulate, c + 6 * (size_t)ldc, ldc);
    }
    for (; i < M; i += 4)
        for (j = 0; j < N; j += 8)
            memrl_sg_paired(4, K, A + (size_t)i * lda, lda, B + j, ldb, accumulate, C + (size_t)i * ldc + j, ldc);
}

static inline int memrl_small_sgemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                                       int ldb, int accumulate, float* C, int ldc, int order) {
    int i, j;
    if (!memrl_small_sgemm_handles(M, N, K, order))
        return 0;
    if (order == MEMRL_SG_HASWELL) {
        memrl_sg_haswell(M, N, K, A, lda, B, ldb, accumulate, C, ldc);
        return 1;
    }
    for (i = 0; i < M; i += 4) {
        const float* a = A + (size_t)i * lda;
        float* c = C + (size_t)i * ldc;
        if (N % 24 == 0) /* 48 columns: 2 x 24; 16, 32, 64: n x 16 */
            for (j = 0; j < N; j += 24) memrl_sg_block_4x3(K, a, lda, B + j, ldb, accumulate, c + j, ldc);
        else
            for (j = 0; j < N; j += 16) memrl_sg_block_4x2(K, a, lda, B + j, ldb, accumulate, c + j, ldc);
    }
    return 1;
}

#else /* the baseline build: BLAS computes every product */

static inline int memrl_small_sgemm_handles(int M, int N, int K, int order) {
    (void)M; (void)N; (void)K; (void)order;
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
