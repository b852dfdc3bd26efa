/* x [M, K] @ W^T for an int8 weight W [N, K] with one scale per output row, on AVX-512 VNNI.
 *
 * Each row of x is quantized to 16 bits (x ~= sx * xi, xi in [-32767, 32767], sx = max|x| / 32767),
 * stored offset by 32768 as two unsigned bytes (hi, lo), so that one VPDPBUSD (u8 x s8, four products
 * summed into each int32 lane) takes 64 weights per byte plane:
 *   xi . w = 256 * (hi . w) + (lo . w) - 32768 * sum(w)       (exact, in int64)
 *   out[m, n] = (xi . w) * sx[m] * scale[n]
 * The weights are read once per call (4 rows at a time, 2 rows of x each), so decode (1-2 rows) streams
 * them at close to memory bandwidth: the float path (widen, convert, FMA per 16 weights) does not.
 * 16-bit activations err by at most sx / 2 per element: ~3e-5 of the product, far below a bf16 or
 * fp16 activation's own rounding, which is why only those dtypes are sent here.
 *
 * Built at first use by model/native.py with -mavx512f -mavx512bw -mavx512vnni -fopenmp; threads come
 * from the caller (torch's count), on the OpenMP runtime torch itself uses.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define ROWS_PER_BLOCK 4 /* weight rows per pass over K */
#define CHUNK 64         /* weights per VPDPBUSD */
#define PREFETCH 1024 /* bytes ahead in each weight row: ~1.3x the bandwidth of the hardware prefetcher alone */

enum { DTYPE_FLOAT32 = 0, DTYPE_BFLOAT16 = 1 };

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float load_x(const void *x, int dtype, int64_t i) {
    return dtype == DTYPE_BFLOAT16 ? bf16_to_f32(((const uint16_t *)x)[i]) : ((const float *)x)[i];
}

/* x row -> planes hi, lo [k_padded] (padding: xi = 0); returns sx, NaN when the row holds an inf or NaN */
static float quantize_row(const void *x, int dtype, int64_t offset, int K, int k_padded, uint8_t *hi, uint8_t *lo) {
    float peak = 0.0f;
    int finite = 1;
    for (int k = 0; k < K; k++) {
        const float value = load_x(x, dtype, offset + k);
        finite &= isfinite(value) != 0;
        peak = fmaxf(peak, fabsf(value));
    }
    if (!finite) peak = 0.0f;
    float sx = peak > 0.0f ? peak / 32767.0f : 1.0f;
    float inverse = 1.0f / sx;
    for (int k = 0; k < k_padded; k++) {
        int32_t xi = 0;
        if (k < K) {
            float q = nearbyintf(load_x(x, dtype, offset + k) * inverse);
            xi = q > 32767.0f ? 32767 : q < -32767.0f ? -32767 : (int32_t)q;
        }
        uint32_t u = (uint32_t)(xi + 32768);
        hi[k] = (uint8_t)(u >> 8);
        lo[k] = (uint8_t)(u & 255u);
    }
    return finite ? sx : NAN; /* the product with a non-finite input is not finite either */
}

static inline int64_t lanes_sum(__m512i v) { /* 16 int32 lanes summed in int64: no overflow for any K */
    __m512i low = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    __m512i high = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    return _mm512_reduce_add_epi64(_mm512_add_epi64(low, high));
}

/* One pass over `rows` (<= ROWS_PER_BLOCK) weight rows for PAIR (1 or 2) rows of x:
 * dots[i][j] = xi[m0 + i] . w[j] + 32768 * sum(w[j]). Inlined with constant rows and PAIR. */
#define DOT_STEP(wv)                                                          \
    for (int j = 0; j < rows; j++) {                                          \
        const __m512i weights = (wv);                                         \
        high[0][j] = _mm512_dpbusd_epi32(high[0][j], h0, weights);            \
        low[0][j] = _mm512_dpbusd_epi32(low[0][j], l0, weights);              \
        if (PAIR == 2) {                                                      \
            high[1][j] = _mm512_dpbusd_epi32(high[1][j], h1, weights);        \
            low[1][j] = _mm512_dpbusd_epi32(low[1][j], l1, weights);          \
        }                                                                     \
    }
#define LOAD_PLANES(k)                                                        \
    const __m512i h0 = _mm512_loadu_si512(hi0 + (k)), l0 = _mm512_loadu_si512(lo0 + (k)); \
    const __m512i h1 = PAIR == 2 ? _mm512_loadu_si512(hi1 + (k)) : h0;        \
    const __m512i l1 = PAIR == 2 ? _mm512_loadu_si512(lo1 + (k)) : l0;

static inline __attribute__((always_inline)) void pass(const uint8_t *planes, int m0, const int PAIR, int K,
                                                       int k_padded, const int8_t *w, const int rows, int64_t *dots) {
    const uint8_t *hi0 = planes + (int64_t)m0 * 2 * k_padded, *lo0 = hi0 + k_padded;
    const uint8_t *hi1 = lo0 + k_padded, *lo1 = hi1 + k_padded;
    __m512i high[2][ROWS_PER_BLOCK], low[2][ROWS_PER_BLOCK];
    for (int j = 0; j < ROWS_PER_BLOCK; j++) high[0][j] = low[0][j] = high[1][j] = low[1][j] = _mm512_setzero_si512();
    const int full = K / CHUNK * CHUNK;
    for (int k = 0; k < full; k += CHUNK) {
        LOAD_PLANES(k)
        for (int j = 0; j < rows; j++) _mm_prefetch((const char *)(w + (int64_t)j * K + k + PREFETCH), _MM_HINT_T0);
        DOT_STEP(_mm512_loadu_si512(w + (int64_t)j * K + k))
    }
    if (full < K) { /* the last, partial chunk: weights past K read as 0 */
        const __mmask64 tail = ~0ULL >> (CHUNK - K % CHUNK);
        LOAD_PLANES(full)
        DOT_STEP(_mm512_maskz_loadu_epi8(tail, w + (int64_t)j * K + full))
    }
    for (int i = 0; i < PAIR; i++)
        for (int j = 0; j < rows; j++)
            dots[(m0 + i) * ROWS_PER_BLOCK + j] = 256 * lanes_sum(high[i][j]) + lanes_sum(low[i][j]);
}

/* dots[m][j] for every row m of x and weight rows 0..rows-1 */
static inline __attribute__((always_inline)) void block(const uint8_t *planes, int M, int K, int k_padded,
                                                        const int8_t *w, const int rows, int64_t *dots) {
    int m0 = 0;
    for (; m0 + 2 <= M; m0 += 2) pass(planes, m0, 2, K, k_padded, w, rows, dots);
    if (m0 < M) pass(planes, m0, 1, K, k_padded, w, rows, dots);
}

/* out [M, N] (dtype) = x [M, K] (dtype) @ (w [N, K] * scale [N, 1])^T; rowsum [N] = sum of each w row.
 * Returns 0, or -1 when out of memory. */
int loopcoder_int8_vnni_mm(const void *x, int dtype, int M, int K, const int8_t *w, const float *scale,
                           const int32_t *rowsum, void *out, int N, int threads) {
    const int k_padded = (K + CHUNK - 1) / CHUNK * CHUNK;
    uint8_t *planes = aligned_alloc(64, (size_t)M * 2 * k_padded);
    float *sx = malloc(sizeof(float) * (size_t)M);
    int64_t *all_dots = malloc(sizeof(int64_t) * (size_t)M * ROWS_PER_BLOCK * (threads > 0 ? threads : 1));
    if (!planes || !sx || !all_dots) {
        free(planes), free(sx), free(all_dots);
        return -1;
    }
    for (int m = 0; m < M; m++) {
        uint8_t *hi = planes + (int64_t)m * 2 * k_padded;
        sx[m] = quantize_row(x, dtype, (int64_t)m * K, K, k_padded, hi, hi + k_padded);
    }
    const int blocks = (N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        const int thread = omp_get_thread_num(), count = omp_get_num_threads();
        const int per = (blocks + count - 1) / count;
        const int first = thread * per, last = first + per < blocks ? first + per : blocks;
        int64_t *dots = all_dots + (int64_t)thread * M * ROWS_PER_BLOCK;
        for (int b = first; b < last; b++) {
            const int n = b * ROWS_PER_BLOCK, rows = N - n < ROWS_PER_BLOCK ? N - n : ROWS_PER_BLOCK;
            if (rows == ROWS_PER_BLOCK)
                block(planes, M, K, k_padded, w + (int64_t)n * K, ROWS_PER_BLOCK, dots);
            else
                block(planes, M, K, k_padded, w + (int64_t)n * K, rows, dots);
            for (int m = 0; m < M; m++)
                for (int j = 0; j < rows; j++) {
                    const int64_t exact = dots[m * ROWS_PER_BLOCK + j] - 32768 * (int64_t)rowsum[n + j];
                    const float value = (float)exact * sx[m] * scale[n + j];
                    const int64_t at = (int64_t)m * N + n + j;
                    if (dtype == DTYPE_BFLOAT16)
                        ((uint16_t *)out)[at] = f32_to_bf16(value);
                    else
                        ((float *)out)[at] = value;
                }
        }
    }
    free(planes), free(sx), free(all_dots);
    return 0;
}

/* sums [N] = each row of w [N, K] summed (the correction term above), with no temporary buffer */
void loopcoder_int8_row_sums(const int8_t *w, int N, int K, int32_t *sums) {
    for (int n = 0; n < N; n++) {
        const int8_t *row = w + (int64_t)n * K;
        int32_t total = 0;
        for (int k = 0; k < K; k++) total += row[k];
        sums[n] = total;
    }
}
