/* quantizer.c — QSGD's stochastic quantizer Q_s (qsgd, ecq, terngrad): bucket scales,
 * levels from Philox words, the ecq residual update, and the shared dequantize-and-add.
 * The exact arithmetic is specified in quantizer.h; the loops below are shaped (fixed
 * 16-lane and 64-element blocks, no data-dependent branches) so GCC vectorizes them.
 */
#include "quant/quantizer.h"

#include <math.h>

#include "core/qt.h"

void qt_quantizer_init(qt_quantizer *qz, const qt_codec_params *p, const qt_wire *w,
                       const float *g, float *residual, uint32_t step, uint32_t rank,
                       uint64_t off)
{
    memset(qz, 0, sizeof *qz);
    qz->w = w;
    qz->g = g;
    qz->ecq = w->method == QT_CODEC_ECQ;
    qz->terngrad = w->method == QT_CODEC_TERNGRAD;
    qz->h = qz->ecq ? residual : NULL;
    qz->alpha = p->alpha;
    qz->beta = p->beta;
    qz->clip_sigma = qz->terngrad ? p->clip_sigma : 0.0f;
    qz->key = qt_philox_make_key(p->seed, QT_RNG_CODEC);
    qz->step = step;
    qz->rank = rank;
    qz->off = off;
}

#if defined(__AVX512F__)
#include <immintrin.h>
/* hi and lo 32-bit halves of m * c for 16 lanes: vpmuludq on the even and odd lanes. */
static inline void mulhilo16(__m512i m, __m512i c, __m512i *hi, __m512i *lo)
{
    __m512i pe = _mm512_mul_epu32(c, m);
    __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
    *lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline void mulhilo8(__m256i m, __m256i c, __m256i *hi, __m256i *lo)
{
    __m256i pe = _mm256_mul_epu32(c, m);
    __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}
#endif

void qt_philox_window(qt_philox_key key, uint64_t block0, uint32_t step, uint32_t rank,
                      uint32_t out[64])
{
    /* 16 independent Philox blocks as four lane arrays, so each round is a handful of
     * vector instructions (GCC does not vectorize the 32x32->64 products by itself: the
     * plain loop below measured 7 cycles/element against ~1 with intrinsics). Same
     * rounds as philox.h; tests compare every lane with qt_philox_block. */
    uint32_t c0[16], c1[16], c2[16], c3[16];
    for (int j = 0; j < 16; j++) {
        uint64_t b = block0 + (uint64_t)j;
        c0[j] = (uint32_t)b;
        c1[j] = (uint32_t)(b >> 32);
        c2[j] = step;
        c3[j] = rank;
    }
    uint32_t k0 = key.k[0], k1 = key.k[1];
#if defined(__AVX512F__)
    __m512i x0 = _mm512_loadu_si512(c0), x1 = _mm512_loadu_si512(c1);
    __m512i x2 = _mm512_loadu_si512(c2), x3 = _mm512_loadu_si512(c3);
    const __m512i m0 = _mm512_set1_epi64(0xD2511F53), m1 = _mm512_set1_epi64(0xCD9E8D57);
    for (int r = 0; r < 10; r++) {
        __m512i hi0, lo0, hi1, lo1;
        mulhilo16(m0, x0, &hi0, &lo0);
        mulhilo16(m1, x2, &hi1, &lo1);
        x0 = _mm512_xor_si512(_mm512_xor_si512(hi1, x1), _mm512_set1_epi32((int)k0));
        x2 = _mm512_xor_si512(_mm512_xor_si512(hi0, x3), _mm512_set1_epi32((int)k1));
        x1 = lo1;
        x3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    _mm512_storeu_si512(c0, x0);
    _mm512_storeu_si512(c1, x1);
    _mm512_storeu_si512(c2, x2);
    _mm512_storeu_si512(c3, x3);
#elif defined(__AVX2__)
    const __m256i m0 = _mm256_set1_epi64x(0xD2511F53), m1 = _mm256_set1_epi64x(0xCD9E8D57);
    for (int h = 0; h < 16; h += 8) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(c0 + h));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(c1 + h));
        __m256i x2 = _mm256_loadu_si256((const __m256i *)(c2 + h));
        __m256i x3 = _mm256_loadu_si256((const __m256i *)(c3 + h));
        uint32_t kk0 = k0, kk1 = k1;
        for (int r = 0; r < 10; r++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(m0, x0, &hi0, &lo0);
            mulhilo8(m1, x2, &hi1, &lo1);
            x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32((int)kk0));
            x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)kk1));
            x1 = lo1;
            x3 = lo0;
            kk0 += 0x9E3779B9u;
            kk1 += 0xBB67AE85u;
        }
        _mm256_storeu_si256((__m256i *)(c0 + h), x0);
        _mm256_storeu_si256((__m256i *)(c1 + h), x1);
        _mm256_storeu_si256((__m256i *)(c2 + h), x2);
        _mm256_storeu_si256((__m256i *)(c3 + h), x3);
    }
#else
    for (int r = 0; r < 10; r++) {
        for (int j = 0; j < 16; j++) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[j];
            uint64_t p1 = (uint64_t)0xCD9E8D57u * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
#endif
    for (int j = 0; j < 16; j++) {
        out[4 * j + 0] = c0[j];
        out[4 * j + 1] = c1[j];
        out[4 * j + 2] = c2[j];
        out[4 * j + 3] = c3[j];
    }
}

/* The quantizer's input x for elements [i, i+cnt), cnt <= 64 (ecq: g + alpha*h). */
static void load_x(const qt_quantizer *qz, size_t i, size_t cnt, float *x)
{
    const float *g = qz->g + i;
    if (qz->ecq && qz->h) {
        const float *h = qz->h + i;
        const float alpha = qz->alpha;
        for (size_t j = 0; j < cnt; j++) x[j] = g[j] + alpha * h[j];
    } else {
        for (size_t j = 0; j < cnt; j++) x[j] = g[j];
    }
}

/* Binary64 lane sums as quantizer.h specifies: element j of the bucket goes to lane
 * j % 16 in index order (callers pass chunks that start at multiples of 16). */
static void lane_add_sq(double acc[16], const float *x, size_t cnt)
{
    size_t j = 0;
    for (; j + 16 <= cnt; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += (double)x[j + l] * (double)x[j + l];
    for (int l = 0; j + (size_t)l < cnt; l++) acc[l] += (double)x[j + l] * (double)x[j + l];
}

static void lane_add(double acc[16], const float *x, size_t cnt)
{
    size_t j = 0;
    for (; j + 16 <= cnt; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += (double)x[j + l];
    for (int l = 0; j + (size_t)l < cnt; l++) acc[l] += (double)x[j + l];
}

static double lane_total(double acc[16])
{
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

float qt_quant_scale(const qt_quantizer *qz, size_t i0, size_t len)
{
    const bool l2 = qz->w->norm == QT_NORM_L2;
    float x[64];
    uint32_t mx = 0; /* max of the bit patterns of |x|: orders floats, sees NaN/Inf */
    double sq[16] = {0}, sum[16] = {0};
    for (size_t c = 0; c < len; c += 64) {
        size_t cnt = QT_MIN((size_t)64, len - c);
        load_x(qz, i0 + c, cnt, x);
        for (size_t j = 0; j < cnt; j++) {
            uint32_t a = qt_f32_bits(x[j]) & 0x7fffffffu;
            mx = a > mx ? a : mx;
        }
        if (l2 || qz->clip_sigma > 0.0f) lane_add_sq(sq, x, cnt);
        if (qz->clip_sigma > 0.0f) lane_add(sum, x, cnt);
    }
    float m;
    if (mx >= 0x7f800000u)
        m = qt_bits_f32(0x7fc00000u);
    else if (l2)
        m = (float)sqrt(lane_total(sq));
    else
        m = qt_bits_f32(mx);
    if (qz->clip_sigma > 0.0f && len > 0) {
        double mean = lane_total(sum) / (double)len;
        double var = lane_total(sq) / (double)len - mean * mean;
        double sigma = sqrt(var > 0.0 ? var : 0.0);
        float c = sigma > 0.0 ? (float)((double)qz->clip_sigma * sigma) : INFINITY;
        if (c < m) m = c; /* a NaN m stays NaN */
    }
    return m;
}

void qt_quant_range(const qt_quantizer *qz, size_t i0, size_t len, float m, bool update,
                    int16_t *q)
{
    const int s = qz->w->s;
    const float sf = (float)s;
    const size_t end = i0 + len;
    uint32_t r[64];
    float x[64];
    for (size_t i = i0; i < end;) {
        /* The 64-element window of arena indices that holds element i: one Philox call
         * serves every element of the bucket inside that window. */
        uint64_t e = qz->off + i;
        uint64_t win = e & ~(uint64_t)63;
        size_t base = (size_t)(e - win);
        size_t cnt = QT_MIN((size_t)64 - base, end - i);
        int16_t *qo = q + (i - i0);
        load_x(qz, i, cnt, x);
        if (m == 0.0f) {
            for (size_t j = 0; j < cnt; j++) qo[j] = 0;
        } else {
            qt_philox_window(qz->key, win >> 2, qz->step, qz->rank, r);
            if (qz->terngrad)
                for (size_t j = 0; j < cnt; j++) {
                    float a = fabsf(x[j]);
                    x[j] = copysignf(a < m ? a : m, x[j]); /* = min(|g|, c), see .h */
                }
            const uint32_t *rw = r + base;
            for (size_t j = 0; j < cnt; j++) {
                float xv = x[j];
                float a = fabsf(xv) / m;
                float t = a * sf;
                t = t < sf ? t : sf;
                int l = (int)t;
                float p = t - (float)l;
                float u = (float)(rw[j] >> 8) * 0x1p-24f;
                int lev = l + (u < p);
                qo[j] = (int16_t)(xv < 0.0f ? -lev : lev);
            }
        }
        if (update) qt_quant_residual(qz, i, cnt, m, qo);
        i += cnt;
    }
}

void qt_quant_residual(const qt_quantizer *qz, size_t i0, size_t len, float m, const int16_t *q)
{
    if (!qz->ecq || !qz->h) return;
    const float unit = m / (float)qz->w->s, beta = qz->beta;
    const float *g = qz->g + i0;
    float *h = qz->h + i0;
    for (size_t j = 0; j < len; j++) {
        float v = (float)q[j] * unit;
        h[j] = beta * h[j] + (g[j] - v);
    }
}

void qt_levels_add(const qt_wire *w, const uint8_t *scales, const int16_t *q, size_t i0,
                   size_t len, float f, float *out)
{
    const float sf = (float)w->s;
    const size_t end = i0 + len;
    for (size_t i = i0; i < end;) {
        size_t k = i / w->d;
        size_t bend = QT_MIN((k + 1) * w->d, end);
        const float unit = qt_load_f32(scales + 4 * k) / sf;
        const int16_t *qq = q + (i - i0);
        float *o = out + i;
        for (size_t j = 0; j < bend - i; j++) o[j] += f * ((float)qq[j] * unit);
        i = bend;
    }
}
