/* elias.c — QSGD's Elias stream of the levels (the paper's §3.2 encoding, bucketed).
 *
 * After the scale array (fixed.c), one MSB-first bit stream for the whole message: for
 * each element with a non-zero level, in index order,
 *     omega(gap)  sign bit (1 = negative)  omega(|level|)
 * where positions count from 1 and gap = position - previous position (the first gap is
 * the first position itself); then a terminating omega(n + 1 - last position), the gap
 * that lands one past the end; then zero bits to a byte. Zeros are never sent. The
 * bucket of an element follows from its position, so the stream carries no per-bucket
 * markers (the paper's 32-bit norm per vector is the scale array).
 */
#include <stdlib.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "core/qt.h"
#include "quant/quantizer.h"

/* Writes one non-zero level v that lies `gap` positions after the previous one. */
static void put_level_slow(qt_bitwriter *bw, uint64_t gap, int v)
{
    uint64_t gc, lc;
    int gl = qt_omega_code(gap, &gc);
    int ll = qt_omega_code((uint64_t)(v < 0 ? -v : v), &lc);
    qt_bw_put_long(bw, gc, gl);
    qt_bw_put(bw, v < 0, 1);
    qt_bw_put_long(bw, lc, ll);
}

/* Small-value tables: the code of "gap 1, sign, level" for each level in [-tab, tab]
 * (ll: its length), omega codes of gaps < 256. A code is then gap code << (ll - 1) | lc,
 * at most 14 + 15 bits. */
enum { LTAB = 255, GTAB = 256 };

void qt_elias_enc_init(qt_elias_enc *e, const qt_wire *w)
{
    const int tab = QT_MIN(w->s, (int)LTAB);
    e->tab = tab;
    e->last = 0;
    e->bits = 0;
    for (int v = -tab; v <= tab; v++) {
        uint64_t c = 0;
        int l = v ? qt_omega_code((uint64_t)(v < 0 ? -v : v), &c) : 0;
        e->lc[v + tab] = v ? (uint32_t)(((uint64_t)(v < 0) << l) | c) : 0;
        e->ll[v + tab] = (uint8_t)(v ? l + 2 : 1); /* "0" gap + sign + level */
    }
    for (int g = 1; g < GTAB; g++) {
        uint64_t c;
        e->gl[g] = (uint8_t)qt_omega_code((uint64_t)g, &c);
        e->gc[g] = (uint32_t)c;
    }
    e->gl[0] = 1;
    e->gc[0] = 0;
}

/* Bit j set iff q[j] != 0, for cnt <= 64 levels. */
static inline uint64_t nonzero_mask(const int16_t *q, size_t cnt)
{
#if defined(__AVX512BW__)
    if (cnt == 64) {
        __m512i a = _mm512_loadu_si512(q), b = _mm512_loadu_si512(q + 32);
        return (uint64_t)_mm512_test_epi16_mask(a, a) |
               (uint64_t)_mm512_test_epi16_mask(b, b) << 32;
    }
#endif
    uint64_t m = 0;
    for (size_t j = 0; j < cnt; j++) m |= (uint64_t)(q[j] != 0) << j;
    return m;
}

/* Both passes walk the non-zeros of 64-level blocks through a bit mask: zeros cost
 * nothing and no branch depends on whether a level is zero. */
void qt_elias_count(qt_elias_enc *e, const int16_t *q, size_t i0, size_t len)
{
    const int tab = e->tab;
    uint64_t last = e->last, bits = 0;
    for (size_t base = 0; base < len; base += 64) {
        uint64_t mask = nonzero_mask(q + base, QT_MIN((size_t)64, len - base));
        while (mask) {
            size_t j = base + (size_t)__builtin_ctzll(mask);
            mask &= mask - 1;
            int v = q[j];
            uint64_t pos = i0 + j + 1, gap = pos - last;
            last = pos;
            if (gap < GTAB && v <= tab && v >= -tab)
                bits += (uint64_t)e->gl[gap] + e->ll[v + tab] - 1;
            else
                bits += (uint64_t)qt_omega_len(gap) + 1 +
                        (uint64_t)qt_omega_len((uint64_t)(v < 0 ? -v : v));
        }
    }
    e->last = last;
    e->bits += bits;
}

uint64_t qt_elias_total_bits(const qt_elias_enc *e, const qt_wire *w)
{
    return e->bits + (uint64_t)qt_omega_len((uint64_t)w->n + 1 - e->last);
}

void qt_elias_write(qt_elias_enc *e, qt_bitwriter *bw, const int16_t *q, size_t i0, size_t len)
{
    const int tab = e->tab;
    uint64_t last = e->last;
    for (size_t base = 0; base < len; base += 64) {
        uint64_t mask = nonzero_mask(q + base, QT_MIN((size_t)64, len - base));
        while (mask) {
            size_t j = base + (size_t)__builtin_ctzll(mask);
            mask &= mask - 1;
            int v = q[j];
            uint64_t pos = i0 + j + 1, gap = pos - last;
            last = pos;
            if (gap >= GTAB || v > tab || v < -tab) {
                put_level_slow(bw, gap, v);
                continue;
            }
            int l1 = e->ll[v + tab];
            qt_bw_put(bw, ((uint64_t)e->gc[gap] << (l1 - 1)) | e->lc[v + tab],
                      e->gl[gap] + l1 - 1);
        }
    }
    e->last = last;
}

void qt_elias_finish(qt_elias_enc *e, qt_bitwriter *bw, const qt_wire *w)
{
    uint64_t tc;
    int tl = qt_omega_code((uint64_t)w->n + 1 - e->last, &tc);
    qt_bw_put_long(bw, tc, tl);
}

/* Decoding table over the next DTB bits: every "gap, sign, level" triple whose codes
 * fit in DTB bits, as length | sign << 6 | level << 7 | gap << 16 (the length in the low
 * six bits: the bit buffer's shift, on the critical path, takes the entry as it is;
 * bits 6..14 index the signed level's float in elev); 0 = decode slowly. Used for every
 * s: wider levels are rare where Elias pays (8-bit levels with l2 scales) and take the
 * slow path. Built by enumerating the triples (cheap enough for small messages). */
enum { DTB = 12 };

static void dec_table_init(uint32_t *lut, int s)
{
    memset(lut, 0, sizeof(uint32_t) << DTB);
    for (uint64_t g = 1; qt_omega_len(g) <= DTB - 2; g++) {
        uint64_t gc;
        int gl = qt_omega_code(g, &gc);
        for (uint64_t a = 1; a <= (uint64_t)s && gl + 1 + qt_omega_len(a) <= DTB; a++) {
            uint64_t lc;
            int ll = qt_omega_code(a, &lc);
            int total = gl + 1 + ll;
            for (uint64_t sign = 0; sign < 2; sign++) {
                uint64_t code = (gc << (1 + ll)) | (sign << ll) | lc;
                uint32_t lo = (uint32_t)(code << (DTB - total)), span = 1u << (DTB - total);
                uint32_t e = (uint32_t)total | (uint32_t)sign << 6 | (uint32_t)a << 7 |
                             (uint32_t)g << 16;
                for (uint32_t j = 0; j < span; j++) lut[lo + j] = e;
            }
        }
    }
}

/* Omega table over the next OTB bits: omega(v) for v <= 255 as v | length << 9 (0 = not
 * in the table). Replaces the omega loop's mispredicted branches for long gaps (sparse
 * levels) and wide levels (8-bit); built only for messages large enough to repay its
 * 16K entries. */
enum { OTB = 14, OTAB_MIN_N = 1 << 15 };

static void omega_table_init(uint16_t *lut)
{
    memset(lut, 0, sizeof(uint16_t) << OTB);
    for (uint64_t v = 1; v <= 255; v++) {
        uint64_t c;
        int l = qt_omega_code(v, &c);
        uint32_t lo = (uint32_t)(c << (OTB - l)), span = 1u << (OTB - l);
        for (uint32_t j = 0; j < span; j++) lut[lo + j] = (uint16_t)(v | (uint64_t)l << 9);
    }
}

/* One omega code through the table when it is there and covers the code. Needs
 * OTB buffered bits (the slow path refills for itself). */
static inline int read_omega(qt_bitreader *br, const uint16_t *olut, uint64_t *v)
{
    if (!(br->buf >> 63)) {
        qt_br_skip(br, 1);
        *v = 1;
        return 0;
    }
    uint32_t e = olut ? olut[qt_br_peek(br, OTB)] : 0;
    if (e) {
        qt_br_skip(br, (int)(e >> 9));
        *v = e & 511;
        return 0;
    }
    return qt_br_omega(br, v);
}

int qt_elias_decode_levels(const qt_wire *w, const uint8_t *scales, const uint8_t *stream,
                           size_t len, float f, float *out)
{
    const uint64_t n = w->n, s = (uint64_t)w->s;
    const float sf = (float)w->s;
    uint32_t lut[1 << DTB];
    dec_table_init(lut, w->s);
    uint16_t *olut = NULL;
    if (n >= OTAB_MIN_N) {
        olut = qt_malloc(sizeof(uint16_t) << OTB);
        omega_table_init(olut);
    }
    qt_bitreader br;
    qt_br_init(&br, stream, len);
    uint64_t last = 0;
    /* The current bucket ends at bend (positions only grow, so a new bucket is the first
     * element at or past it). */
    size_t bend = 0;
    /* elev[sign | level << 1]: the signed level (a sign branch would mispredict half
     * the time). */
    float elev[512];
    for (int v = 0; v < 256; v++) {
        elev[2 * v] = (float)v;
        elev[2 * v + 1] = -(float)v;
    }
    float unit = 0.0f;
    int rc = QT_CODEC_OK;
    for (;;) {
        {
            qt_br_refill(&br);
            /* Up to four table triples per refill (each <= 12 of >= 56 bits). Not once
             * the reader has passed the end (zeros would decode as triples). */
            int t = 0;
            for (; t < 4 && !br.phantom; t++) {
                uint32_t e = lut[qt_br_peek(&br, DTB)];
                uint64_t pos = last + (e >> 16);
                if (!e || pos > n) break; /* slow code, or the terminator */
                qt_br_skip(&br, (int)(e & 63));
                size_t i = (size_t)(pos - 1);
                if (i >= bend) {
                    size_t k = i / w->d;
                    bend = (k + 1) * w->d;
                    unit = qt_load_f32(scales + 4 * k) / sf;
                }
                out[i] += f * (elev[(e >> 6) & 511] * unit);
                last = pos;
            }
            if (t == 4) continue;
        }
        uint64_t gap, a;
        qt_br_refill(&br); /* one refill serves gap, sign and level from the tables */
        if (read_omega(&br, olut, &gap) != 0) {
            rc = QT_CODEC_ECORRUPT;
            break;
        }
        uint64_t pos = last + gap;
        if (pos == n + 1) break;
        if (pos > n) {
            rc = QT_CODEC_ECORRUPT;
            break;
        }
        if (br.cnt < OTB + 1) qt_br_refill(&br);
        unsigned sign = (unsigned)qt_br_peek(&br, 1);
        qt_br_skip(&br, 1);
        if (read_omega(&br, olut, &a) != 0 || a > s) {
            rc = QT_CODEC_ECORRUPT;
            break;
        }
        /* Past the end of the bytes the reader feeds zeros: stop at the first element. */
        if (br.phantom && qt_br_used(&br) > 8 * (uint64_t)len) {
            rc = QT_CODEC_ETRUNC;
            break;
        }
        size_t i = (size_t)(pos - 1);
        if (i >= bend) {
            size_t k = i / w->d;
            bend = (k + 1) * w->d;
            unit = qt_load_f32(scales + 4 * k) / sf;
        }
        float qv = qt_bits_f32(qt_f32_bits((float)a) ^ (uint32_t)sign << 31);
        out[i] += f * (qv * unit);
        last = pos;
    }
    free(olut);
    return rc != QT_CODEC_OK ? rc : qt_br_finish(&br, len);
}
