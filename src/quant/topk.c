/* topk.c — top-k sparsification with error feedback (Strom 2015; Lin et al. 2018 without
 * DGC's momentum tricks).
 *
 * x = g + h (h the residual; absent counts as 0), k = ceil(topk_ratio * n) clamped to
 * [1, n]. Sent: the k elements of largest |x|, ties broken by the lower index ("largest"
 * compares the bit patterns of |x|, so NaN counts as larger than Inf: a bad gradient is
 * sent, not hidden). Residual: h = 0 where sent, h = x elsewhere, so sent + h == g + h_old.
 * Selection is a 3-pass radix select over the 31-bit keys (10 + 11 + 10 bits), then one
 * pass in index order: a deterministic rule a CUDA twin can reproduce.
 * Payload: u32 k, f32 values[k] (index order), then the indices, ascending, as gaps:
 *   fixed encoding: LEB128 varints of idx[0] and idx[j] - idx[j-1] - 1 (canonical: no
 *                   zero continuation byte), byte aligned;
 *   elias encoding: an MSB-first stream of omega(idx[0] + 1), omega(idx[j] - idx[j-1]),
 *                   zero bits to a byte.
 */
#include "core/qt.h"
#include "quant/bitio.h"
#include "quant/wire.h"

static inline uint32_t key_of(const float *g, const float *h, size_t i)
{
    float x = h ? g[i] + h[i] : g[i];
    return qt_f32_bits(x) & 0x7fffffffu;
}

size_t qt_topk_max_payload_bytes(const qt_wire *w)
{
    size_t idx = w->enc == QT_ENC_ELIAS
                     ? (w->k * (size_t)qt_omega_len((uint64_t)w->n + 1) + 7) / 8
                     : 5 * w->k;
    return 4 + 4 * w->k + idx;
}

/* The k-th largest key T and how many elements equal to T are taken. */
static void select_threshold(const float *g, const float *h, size_t n, size_t k, uint32_t *t,
                             size_t *take_eq)
{
    static const int shift[3] = {21, 10, 0};
    static const uint32_t width[3] = {10, 11, 10};
    uint32_t prefix = 0, pmask = 0;
    size_t need = k;
    uint32_t hist[2048];
    for (int pass = 0; pass < 3; pass++) {
        const uint32_t dmask = (1u << width[pass]) - 1;
        memset(hist, 0, sizeof hist);
        for (size_t i = 0; i < n; i++) {
            uint32_t key = key_of(g, h, i);
            if ((key & pmask) == prefix) hist[(key >> shift[pass]) & dmask]++;
        }
        size_t above = 0;
        uint32_t dig = dmask;
        for (;; dig--) { /* the digit where the count from the top reaches `need` */
            if (above + hist[dig] >= need || dig == 0) break;
            above += hist[dig];
        }
        need -= above;
        prefix |= dig << shift[pass];
        pmask |= dmask << shift[pass];
    }
    *t = prefix;
    *take_eq = need;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

int qt_topk_encode(const qt_wire *w, const float *g, float *residual, uint8_t *payload,
                   size_t cap, size_t *payload_bytes)
{
    const size_t n = w->n, k = w->k;
    if (cap < 4 + 4 * k) return QT_CODEC_ENOSPC;
    qt_store_u32(payload, (uint32_t)k);
    uint8_t *vals = payload + 4, *idx = payload + 4 + 4 * k;
    const size_t idx_cap = cap - 4 - 4 * k;
    uint32_t t = 0;
    size_t take_eq = 0;
    if (k > 0) select_threshold(g, residual, n, k, &t, &take_eq);
    qt_bitwriter bw;
    qt_bw_init(&bw, idx, idx_cap);
    size_t j = 0, ib = 0;
    uint64_t last = 0; /* elias: 1-based position of the previous index; varint: next index */
    for (size_t i = 0; i < n && k > 0; i++) {
        float x = residual ? g[i] + residual[i] : g[i];
        uint32_t key = qt_f32_bits(x) & 0x7fffffffu;
        bool sel = key > t || (key == t && take_eq > 0);
        if (key == t && sel) take_eq--;
        if (residual) residual[i] = sel ? 0.0f : x;
        if (!sel) continue;
        qt_store_f32(vals + 4 * j, x);
        j++;
        if (w->enc == QT_ENC_ELIAS) {
            uint64_t c;
            int l = qt_omega_code((uint64_t)i + 1 - last, &c);
            qt_bw_put_long(&bw, c, l);
            last = (uint64_t)i + 1;
        } else {
            uint8_t tmp[5];
            size_t vb = put_varint(tmp, (uint64_t)i - last);
            if (idx_cap - ib < vb) return QT_CODEC_ENOSPC;
            memcpy(idx + ib, tmp, vb);
            ib += vb;
            last = (uint64_t)i + 1;
        }
    }
    QT_ASSERT(j == k);
    if (w->enc == QT_ENC_ELIAS) {
        ib = qt_bw_finish(&bw);
        if (bw.over) return QT_CODEC_ENOSPC;
    }
    *payload_bytes = 4 + 4 * k + ib;
    return QT_CODEC_OK;
}

int qt_topk_decode(const qt_wire *w, const uint8_t *payload, size_t len, float f, float *out)
{
    const size_t n = w->n, k = w->k;
    if (len < 4) return QT_CODEC_ETRUNC;
    if (qt_load_u32(payload) != k) return QT_CODEC_ECORRUPT;
    if (len - 4 < 4 * k) return QT_CODEC_ETRUNC;
    const uint8_t *vals = payload + 4, *idx = payload + 4 + 4 * k;
    const size_t ilen = len - 4 - 4 * k;
    if (w->enc == QT_ENC_ELIAS) {
        qt_bitreader br;
        qt_br_init(&br, idx, ilen);
        uint64_t last = 0;
        for (size_t j = 0; j < k; j++) {
            uint64_t gap;
            if (qt_br_omega(&br, &gap) != 0) return QT_CODEC_ECORRUPT;
            if (br.phantom && qt_br_used(&br) > 8 * (uint64_t)ilen) return QT_CODEC_ETRUNC;
            uint64_t pos = last + gap;
            if (pos > n) return QT_CODEC_ECORRUPT;
            out[pos - 1] += f * qt_load_f32(vals + 4 * j);
            last = pos;
        }
        return qt_br_finish(&br, ilen);
    }
    size_t p = 0;
    uint64_t next = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t v = 0;
        int sh = 0;
        for (;;) {
            if (p >= ilen) return QT_CODEC_ETRUNC;
            uint8_t byte = idx[p++];
            if (sh == 35 || (sh == 28 && byte > 0x0f)) return QT_CODEC_ECORRUPT;
            v |= (uint64_t)(byte & 0x7f) << sh;
            sh += 7;
            if (!(byte & 0x80)) {
                if (byte == 0 && sh > 7) return QT_CODEC_ECORRUPT; /* overlong */
                break;
            }
        }
        uint64_t i = next + v;
        if (i >= n) return QT_CODEC_ECORRUPT;
        out[i] += f * qt_load_f32(vals + 4 * j);
        next = i + 1;
    }
    return p == ilen ? QT_CODEC_OK : QT_CODEC_ECORRUPT;
}
