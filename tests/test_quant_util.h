/* test_quant_util.h — shared by the tests/test_quant_*.c binaries: test data, and
 * reference implementations of the codecs written straight from their specifications
 * (src/quant/quantizer.h, onebit.c, topk.c), one element at a time with
 * qt_philox_u32, so the vectorized, chunked library code has an independent oracle.
 * These references are also the contract the CUDA twins must meet.
 */
#ifndef TEST_QUANT_UTIL_H
#define TEST_QUANT_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "quant/codec.h"

static inline uint32_t tq_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* N(0, sigma^2) floats from Philox (stream `seed`), Box-Muller. */
static inline void tq_gaussian(float *x, size_t n, uint64_t seed, float sigma)
{
    qt_philox_key key = qt_philox_make_key(seed, QT_RNG_TEST);
    for (size_t i = 0; i < n; i++) {
        uint32_t r[4];
        qt_philox_block(key, i, 7, 0, r);
        double u1 = ((double)r[0] + 1.0) / 4294967296.0, u2 = (double)r[1] / 4294967296.0;
        x[i] = sigma * (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* Uniform u32 from Philox for test decisions (random bytes, lengths). */
static inline uint32_t tq_rand(uint64_t seed, uint64_t i)
{
    return qt_philox_u32(qt_philox_make_key(seed, QT_RNG_TEST), i, 11, 3);
}

static inline double tq_lane_total(double acc[16])
{
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* Reference of qsgd/ecq/terngrad (quantizer.h): values[i] = v, optional residual update
 * (h: in and out; may be NULL), levels[i] = q (may be NULL). */
static inline void tq_ref_levels(const qt_codec_params *p, const float *g, float *h, size_t n,
                                 uint32_t step, uint32_t rank, uint64_t off, float *values,
                                 int *levels)
{
    const bool ecq = p->method == QT_CODEC_ECQ, tern = p->method == QT_CODEC_TERNGRAD;
    const int s = tern ? 1 : p->levels;
    const float sf = (float)s;
    const bool l2 = !tern && p->norm == QT_NORM_L2;
    size_t d = p->bucket == 0 || (size_t)p->bucket > n ? n : (size_t)p->bucket;
    qt_philox_key key = qt_philox_make_key(p->seed, QT_RNG_CODEC);
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = ecq && h ? g[i] + p->alpha * h[i] : g[i];
    for (size_t b0 = 0; b0 < n; b0 += d) {
        size_t len = n - b0 < d ? n - b0 : d;
        float m = 0.0f;
        bool bad = false;
        double sq[16] = {0}, sum[16] = {0};
        for (size_t j = 0; j < len; j++) {
            float a = fabsf(x[b0 + j]);
            if (!isfinite(a)) bad = true;
            if (a > m) m = a;
            sq[j % 16] += (double)x[b0 + j] * (double)x[b0 + j];
            sum[j % 16] += (double)x[b0 + j];
        }
        double ssq = tq_lane_total(sq), s1 = tq_lane_total(sum);
        if (l2) m = (float)sqrt(ssq);
        float clip = INFINITY;
        if (tern && p->clip_sigma > 0) {
            double mean = s1 / (double)len, var = ssq / (double)len - mean * mean;
            double sigma = sqrt(var > 0 ? var : 0);
            if (sigma > 0) clip = (float)((double)p->clip_sigma * sigma);
            if (clip < m) m = clip;
        }
        if (bad) m = NAN;
        float unit = m / sf;
        for (size_t j = 0; j < len; j++) {
            size_t i = b0 + j;
            int q = 0;
            if (m != 0.0f) {
                float ax = fabsf(x[i]);
                if (tern && !(ax < clip)) ax = clip;
                float a = ax / m;
                float t = a * sf;
                if (!(t < sf)) t = sf;
                int l = (int)t;
                float pr = t - (float)l;
                uint32_t r = qt_philox_u32(key, off + i, step, rank);
                float u = (float)(r >> 8) * 0x1p-24f;
                q = l + (u < pr ? 1 : 0);
                if (x[i] < 0.0f) q = -q;
            }
            float v = (float)q * unit;
            if (values) values[i] = v;
            if (levels) levels[i] = q;
            if (ecq && h) h[i] = p->beta * h[i] + (g[i] - v);
        }
    }
    free(x);
}

/* Reference of onebit (onebit.c). */
static inline void tq_ref_onebit(const qt_codec_params *p, const float *g, float *h, size_t n,
                                 float *values)
{
    size_t d = p->bucket == 0 || (size_t)p->bucket > n ? n : (size_t)p->bucket;
    for (size_t b0 = 0; b0 < n; b0 += d) {
        size_t len = n - b0 < d ? n - b0 : d, cp = 0;
        double sp[16] = {0}, sn[16] = {0};
        for (size_t j = 0; j < len; j++) {
            float x = h ? g[b0 + j] + h[b0 + j] : g[b0 + j];
            if (x >= 0.0f) {
                sp[j % 16] += x;
                cp++;
            } else {
                sn[j % 16] += x;
            }
        }
        double tp = tq_lane_total(sp), tn = tq_lane_total(sn);
        float mp = cp ? (float)(tp / (double)cp) : 0.0f;
        float mn = len - cp ? (float)(tn / (double)(len - cp)) : 0.0f;
        for (size_t j = 0; j < len; j++) {
            float x = h ? g[b0 + j] + h[b0 + j] : g[b0 + j];
            float v = x >= 0.0f ? mp : mn;
            values[b0 + j] = v;
            if (h) h[b0 + j] = x - v;
        }
    }
}

/* Reference of topk (topk.c): k largest |x|, ties to the lower index, by sorting. */
typedef struct {
    uint32_t key;
    size_t i;
} tq_keyed;

static inline int tq_keyed_cmp(const void *pa, const void *pb)
{
    const tq_keyed *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return a->i < b->i ? -1 : (a->i > b->i);
}

static inline void tq_ref_topk(const qt_codec_params *p, const float *g, float *h, size_t n,
                               float *values)
{
    size_t k = (size_t)ceil((double)p->topk_ratio * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    tq_keyed *ks = malloc((n ? n : 1) * sizeof *ks);
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = h ? g[i] + h[i] : g[i];
        ks[i] = (tq_keyed){tq_bits(x[i]) & 0x7fffffffu, i};
    }
    qsort(ks, n, sizeof *ks, tq_keyed_cmp);
    for (size_t i = 0; i < n; i++) values[i] = 0.0f;
    for (size_t j = 0; j < k && j < n; j++) values[ks[j].i] = x[ks[j].i];
    if (h) {
        for (size_t i = 0; i < n; i++) h[i] = x[i];
        for (size_t j = 0; j < k && j < n; j++) h[ks[j].i] = 0.0f;
    }
    free(ks);
    free(x);
}

/* Encodes into a malloc'd buffer of exactly max_bytes; returns it, size in *bytes. */
static inline uint8_t *tq_encode(const qt_codec_params *p, const float *g, float *h, size_t n,
                                 uint32_t step, uint32_t rank, uint64_t off, size_t *bytes,
                                 int *rc)
{
    size_t cap = qt_codec_max_bytes(p, n);
    uint8_t *buf = malloc(cap ? cap : 1);
    *rc = qt_codec_encode(p, g, h, n, step, rank, off, buf, cap, bytes);
    return buf;
}

#endif
