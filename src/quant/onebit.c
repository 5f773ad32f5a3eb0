/* onebit.c — 1-bit SGD with error feedback (Seide et al. 2014; CNTK's 1-bit quantizer
 * with the threshold at 0).
 *
 * x = g + h (h the residual; absent counts as 0). Per bucket, x >= 0 is the positive
 * part (so -0 is positive and NaN negative); its reconstruction value is the mean of the
 * positive part, likewise for the negative part (0 for an empty part). Means are binary64
 * sums in the quantizer's lane order (element j of the bucket into lane j % 16, lanes
 * combined as a tree), divided by the count, rounded to float. Then h = x - v.
 * Payload: f32 pairs (positive mean, negative mean) per bucket, then one bit per element
 * (1 = positive), least significant bit first, zero padding: 8*nb + ceil(n/8) bytes.
 */
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/qt.h"
#include "quant/wire.h"

size_t qt_onebit_payload_bytes(const qt_wire *w) { return 8 * w->nb + (w->n + 7) / 8; }

static void bucket_means(const float *g, const float *h, size_t len, float *mp, float *mn)
{
    double sp[16] = {0}, sn[16] = {0};
    size_t cp = 0;
    for (size_t c = 0; c < len; c += 16) {
        size_t cnt = QT_MIN((size_t)16, len - c);
        for (size_t l = 0; l < cnt; l++) {
            float x = h ? g[c + l] + h[c + l] : g[c + l];
            bool pos = x >= 0.0f;
            sp[l] += pos ? (double)x : 0.0;
            sn[l] += pos ? 0.0 : (double)x;
            cp += pos;
        }
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) {
            sp[l] += sp[l + w];
            sn[l] += sn[l + w];
        }
    size_t cn = len - cp;
    *mp = cp ? (float)(sp[0] / (double)cp) : 0.0f;
    *mn = cn ? (float)(sn[0] / (double)cn) : 0.0f;
}

void qt_onebit_encode(const qt_wire *w, const float *g, float *residual, uint8_t *payload)
{
    uint8_t *bits = payload + 8 * w->nb;
    memset(bits, 0, (w->n + 7) / 8);
    for (size_t k = 0; k < w->nb; k++) {
        size_t b0 = k * w->d, len = QT_MIN(w->d, w->n - b0);
        const float *gb = g + b0;
        float *hb = residual ? residual + b0 : NULL;
        float mp, mn;
        bucket_means(gb, hb, len, &mp, &mn);
        qt_store_f32(payload + 8 * k, mp);
        qt_store_f32(payload + 8 * k + 4, mn);
        size_t j = 0;
        /* whole bytes where the bucket covers them (a byte per 8 elements, no
         * read-modify-write chain), bit by bit at misaligned bucket edges */
        for (; j < len && (b0 + j) % 8; j++) {
            float x = hb ? gb[j] + hb[j] : gb[j];
            bits[(b0 + j) / 8] |= (uint8_t)((x >= 0.0f) << ((b0 + j) % 8));
            if (hb) hb[j] = x - (x >= 0.0f ? mp : mn);
        }
        for (; j + 8 <= len; j += 8) {
            unsigned byte = 0;
            for (int l = 0; l < 8; l++) {
                float x = hb ? gb[j + l] + hb[j + l] : gb[j + l];
                byte |= (unsigned)(x >= 0.0f) << l;
                if (hb) hb[j + l] = x - (x >= 0.0f ? mp : mn);
            }
            bits[(b0 + j) / 8] = (uint8_t)byte;
        }
        for (; j < len; j++) {
            float x = hb ? gb[j] + hb[j] : gb[j];
            bits[(b0 + j) / 8] |= (uint8_t)((x >= 0.0f) << ((b0 + j) % 8));
            if (hb) hb[j] = x - (x >= 0.0f ? mp : mn);
        }
    }
}

int qt_onebit_decode(const qt_wire *w, const uint8_t *payload, float f, float *out)
{
    const uint8_t *bits = payload + 8 * w->nb;
    for (size_t k = 0; k < w->nb; k++) {
        size_t b0 = k * w->d, end = QT_MIN(b0 + w->d, w->n);
        /* f * v is one of two products: computed once, the same float either way */
        const float fp = f * qt_load_f32(payload + 8 * k);
        const float fn = f * qt_load_f32(payload + 8 * k + 4);
        size_t i = b0;
        for (; i < end && i % 8; i++) out[i] += (bits[i / 8] >> (i % 8)) & 1 ? fp : fn;
#if defined(__AVX512F__)
        /* two bytes are a 16-lane blend mask (GCC does not vectorize the select) */
        const __m512 vp16 = _mm512_set1_ps(fp), vn16 = _mm512_set1_ps(fn);
        for (; i + 16 <= end; i += 16) {
            uint16_t m;
            memcpy(&m, bits + i / 8, 2);
            __m512 v = _mm512_mask_blend_ps(m, vn16, vp16);
            _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(out + i), v));
        }
#endif
        for (; i < end; i++) out[i] += (bits[i / 8] >> (i % 8)) & 1 ? fp : fn;
    }
    if (w->n % 8 && (bits[w->n / 8] >> (w->n % 8)) != 0) return QT_CODEC_ECORRUPT;
    return QT_CODEC_OK;
}
