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
#include "quant/topk_index.h"

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
    qt_topk_iw iw;
    qt_topk_iw_init(&iw, w, idx, idx_cap);
    size_t j = 0, ib = 0;
    for (size_t i = 0; i < n && k > 0; i++) {
        float x = residual ? g[i] + residual[i] : g[i];
        uint32_t key = qt_f32_bits(x) & 0x7fffffffu;
        bool sel = key > t || (key == t && take_eq > 0);
        if (key == t && sel) take_eq--;
        if (residual) residual[i] = sel ? 0.0f : x;
        if (!sel) continue;
        qt_store_f32(vals + 4 * j, x);
        j++;
        if (qt_topk_iw_put(&iw, i) != 0) return QT_CODEC_ENOSPC;
    }
    QT_ASSERT(j == k);
    if (qt_topk_iw_finish(&iw, &ib) != 0) return QT_CODEC_ENOSPC;
    *payload_bytes = 4 + 4 * k + ib;
    return QT_CODEC_OK;
}

int qt_topk_decode(const qt_wire *w, const uint8_t *payload, size_t len, float f, float *out)
{
    const size_t k = w->k;
    if (len < 4) return QT_CODEC_ETRUNC;
    if (qt_load_u32(payload) != k) return QT_CODEC_ECORRUPT;
    if (len - 4 < 4 * k) return QT_CODEC_ETRUNC;
    const uint8_t *vals = payload + 4;
    qt_topk_ir ir;
    qt_topk_ir_init(&ir, w, payload + 4 + 4 * k, len - 4 - 4 * k);
    for (size_t j = 0; j < k; j++) {
        uint64_t i;
        int rc = qt_topk_ir_next(&ir, &i);
        if (rc != 0) return rc;
        out[i] += f * qt_load_f32(vals + 4 * j);
    }
    return qt_topk_ir_finish(&ir);
}
