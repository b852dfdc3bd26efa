/* x [M, K] @ W^T for a dense float32 or bfloat16 weight W [N, K] and few rows of x (decode, draft checks).
 *
 * Each pass reads 4 weight rows once and multiplies them by up to 4 rows of x (16 accumulators), so the
 * first pass streams the weights from memory and the passes for further rows of x find them in L1.
 * torch's CPU GEMMs do not: MKL's float32 product costs 2.2x a 1-row one at 4 rows and 3x at 8, and
 * oneDNN's bfloat16 path reads bf16 weights at about 2/3 of the bandwidth float32 gets.
 *   float32: one FMA per 16 weights and row of x, float32 accumulation (what MKL does).
 *   bfloat16: VDPBF16PS, 32 weights per instruction: exact bf16 products summed in float32 (it flushes
 *   denormal inputs and results to zero, as AMX does); the result is returned in float32 and rounded
 *   to bfloat16 by the caller.
 * Each weight row is software-prefetched PREFETCH bytes ahead of its loads.
 *
 * Built at first use by model/native.py with -mavx512f -mavx512bw -mavx512bf16 -fopenmp; threads come
 * from the caller (torch's count), on the OpenMP runtime torch itself uses.
 */
#include <immintrin.h>
#include <stdint.h>
#include <omp.h>

#define ROWS_PER_BLOCK 4 /* weight rows per pass over K */
#define X_PER_PASS 4     /* rows of x per pass */
#define PREFETCH 512     /* bytes ahead in each weight row */

/* One pass: out[m0 + i, n + j] = x[m0 + i] . w[j] for i < X, j < rows; X and rows constant when inlined. */
#define PASS(NAME, T, VEC, STEP, LOAD, MASKED_LOAD, MULTIPLY_ADD)                                      \
    static inline __attribute__((always_inline)) void NAME(const T *x, int m0, const int X, int K, const T *w, \
                                                           const int rows, float *out, int N, int n) {         \
        __m512 acc[X_PER_PASS][ROWS_PER_BLOCK];                                                                \
        for (int i = 0; i < X_PER_PASS; i++)                                                                   \
            for (int j = 0; j < ROWS_PER_BLOCK; j++) acc[i][j] = _mm512_setzero_ps();                          \
        const int full = K / STEP * STEP;                                                                      \
        for (int k = 0; k < full; k += STEP) {                                                                 \
            VEC a[X_PER_PASS];                                                                                 \
            for (int i = 0; i < X; i++) a[i] = LOAD(x + (int64_t)(m0 + i) * K + k);                            \
            for (int j = 0; j < rows; j++) {                                                                   \
                _mm_prefetch((const char *)(w + (int64_t)j * K + k) + PREFETCH, _MM_HINT_T0);                  \
                const VEC weights = LOAD(w + (int64_t)j * K + k);                                              \
                for (int i = 0; i < X; i++) acc[i][j] = MULTIPLY_ADD(acc[i][j], a[i], weights);                \
            }                                                                                                  \
        }                                                                                                      \
        if (full < K) { /* the last, partial step: elements past K read as 0 */                                \
            VEC a[X_PER_PASS];                                                                                 \
            for (int i = 0; i < X; i++) a[i] = MASKED_LOAD(K - full, x + (int64_t)(m0 + i) * K + full);        \
            for (int j = 0; j < rows; j++) {                                                                   \
                const VEC weights = MASKED_LOAD(K - full, w + (int64_t)j * K + full);                          \
                for (int i = 0; i < X; i++) acc[i][j] = MULTIPLY_ADD(acc[i][j], a[i], weights);                \
            }                                                                                                  \
        }                                                                                                      \
        for (int i = 0; i < X; i++)                                                                            \
            for (int j = 0; j < rows; j++) out[(int64_t)(m0 + i) * N + n + j] = _mm512_reduce_add_ps(acc[i][j]); \
    }

#define LOAD_F32(p) _mm512_loadu_ps(p)
#define MASKED_F32(count, p) _mm512_maskz_loadu_ps((__mmask16)((1u << (count)) - 1u), p)
#define FMA_F32(acc, a, w) _mm512_fmadd_ps(a, w, acc)
#define LOAD_BF16(p) ((__m512bh)_mm512_loadu_si512(p))
#define MASKED_BF16(count, p) ((__m512bh)_mm512_maskz_loadu_epi16((__mmask32)((1ull << (count)) - 1u), p))
#define DOT_BF16(acc, a, w) _mm512_dpbf16_ps(acc, a, w)

PASS(pass_f32, float, __m512, 16, LOAD_F32, MASKED_F32, FMA_F32)
PASS(pass_bf16, uint16_t, __m512bh, 32, LOAD_BF16, MASKED_BF16, DOT_BF16)

/* Every row of x against weight rows n..n+rows-1, X_PER_PASS rows of x at a time. */
#define BLOCK(NAME, PASS_FN, T)                                                                                \
    static inline __attribute__((always_inline)) void NAME(const T *x, int M, int K, const T *w, const int rows, \
                                                           float *out, int N, int n) {                         \
        int m0 = 0;                                                                                            \
        for (; m0 + X_PER_PASS <= M; m0 += X_PER_PASS) PASS_FN(x, m0, X_PER_PASS, K, w, rows, out, N, n);      \
        switch (M - m0) {                                                                                      \
        case 3: PASS_FN(x, m0, 3, K, w, rows, out, N, n); break;                                               \
        case 2: PASS_FN(x, m0, 2, K, w, rows, out, N, n); break;                                               \
        case 1: PASS_FN(x, m0, 1, K, w, rows, out, N, n); break;                                               \
        }                                                                                                      \
    }

BLOCK(block_f32, pass_f32, float)
BLOCK(block_bf16, pass_bf16, uint16_t)

/* out [M, N] float32 = x [M, K] @ w [N, K]^T, both float32 or both bfloat16; weight rows split over threads */
#define MATMUL(NAME, BLOCK_FN, T)                                                                              \
    void NAME(const T *x, int M, int K, const T *w, int N, float *out, int threads) {                          \
        const int blocks = (N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;                                          \
        _Pragma("omp parallel num_threads(threads > 0 ? threads : 1)") {                                       \
            const int thread = omp_get_thread_num(), count = omp_get_num_threads();                            \
            const int per = (blocks + count - 1) / count;                                                      \
            const int first = thread * per, last = first + per < blocks ? first + per : blocks;                \
            for (int b = first; b < last; b++) {                                                               \
                const int n = b * ROWS_PER_BLOCK, rows = N - n < ROWS_PER_BLOCK ? N - n : ROWS_PER_BLOCK;      \
                if (rows == ROWS_PER_BLOCK)                                                                    \
                    BLOCK_FN(x, M, K, w + (int64_t)n * K, ROWS_PER_BLOCK, out, N, n);                          \
                else                                                                                           \
                    BLOCK_FN(x, M, K, w + (int64_t)n * K, rows, out, N, n);                                    \
            }                                                                                                  \
        }                                                                                                      \
    }

MATMUL(loopcoder_dense_mm_f32, block_f32, float)
MATMUL(loopcoder_dense_mm_bf16, block_bf16, uint16_t)
