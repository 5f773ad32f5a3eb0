/* topk_cuda.cu — top-k with error feedback (topk.c) on the GPU, with the index coding on
 * the host: the same bytes and residual as the CPU.
 *
 * Encode: x = g + h (x86 NaN rule, codec_cuda_internal.h), keys = bits of |x|.
 *   1. topk.c's radix select, 3 passes (10 + 11 + 10 bits): tk_hist (block histograms of
 *      the keys under the current prefix, added into a global one) and tk_pick (one thread
 *      walks the bins from the top exactly as select_threshold does) -> threshold t and
 *      take_eq, the number of keys equal to t that are taken (the first ones in index
 *      order). All state stays on the device.
 *   2. tk_count: keys > t and == t per tile; tk_scan (one thread, in tile order): equal
 *      keys and selected elements before each tile.
 *   3. tk_select: per tile, scans of its threads' counts give each selected element its
 *      rank j: value j = x into the stream, idx[j] = i into scratch, residual h = 0 where
 *      sent and x elsewhere.
 *   4. the host copies idx[0..k) (k = ratio * n: 1% by default, not the n floats), writes
 *      the gaps as LEB128 varints or Elias omega codes (one sequential stream: each code's
 *      position depends on every earlier one) and copies them behind the values. The call
 *      therefore synchronises the stream.
 * Decode: the host copies the stream, parses and checks the index codes as topk.c does
 * (same errors in the same order), uploads idx[k]; tk_scatter adds f * value into out at
 * the k distinct indices. On any error nothing is added.
 */
#include "quant/cuda/codec_cuda_internal.h"

extern "C" {
#include "quant/topk_index.h"
}

enum { TK_BINS = 2048 };

typedef struct {
    uint32_t prefix, pmask, need, pad;
    uint32_t hist[TK_BINS];
} tk_state;

static const int tk_shift[3] = {21, 10, 0};
static const int tk_width[3] = {10, 11, 10};

QTC_HD float tk_x(const float *g, const float *h, uint64_t i)
{
    return h ? qf_add_x86(g[i], h[i]) : g[i];
}

struct tk_hist {
    enum { PHASES = 3 };
    struct Shared {
        uint32_t hist[TK_BINS];
    };
    const float *g, *h;
    tk_state *st;
    uint32_t n, shift, dmask;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        if (ph == 0) {
            for (uint32_t j = t.tid; j < TK_BINS; j += QTC_THREADS) sh.hist[j] = 0;
        } else if (ph == 1) {
            const uint64_t e0 = (uint64_t)t.block * QTC_TILE;
            const uint32_t prefix = st->prefix, pmask = st->pmask;
            for (uint32_t j = t.tid; j < QTC_TILE && e0 + j < n; j += QTC_THREADS) {
                const uint32_t key = qtc_bits(tk_x(g, h, e0 + j)) & 0x7fffffffu;
                if ((key & pmask) == prefix) qtc_atomic_add(&sh.hist[(key >> shift) & dmask], 1);
            }
        } else {
            for (uint32_t j = t.tid; j <= dmask; j += QTC_THREADS)
                if (sh.hist[j]) qtc_atomic_add(&st->hist[j], sh.hist[j]);
        }
    }
};

/* select_threshold's digit choice for one pass (one thread), then a cleared histogram. */
struct tk_pick {
    enum { PHASES = 2 };
    struct Shared {
        int unused;
    };
    tk_state *st;
    uint32_t k, shift, dmask;
    int first;

    QTC_HD void phase(int ph, Shared &, qtc_thr t) const
    {
        if (ph == 0) {
            if (t.tid != 0) return;
            const uint64_t need = first ? k : st->need;
            uint64_t above = 0;
            uint32_t dig = dmask;
            for (;; dig--) {
                if (above + st->hist[dig] >= need || dig == 0) break;
                above += st->hist[dig];
            }
            st->need = (uint32_t)(need - above);
            st->prefix |= dig << shift;
            st->pmask |= dmask << shift;
        } else {
            for (uint32_t j = t.tid; j < TK_BINS; j += QTC_THREADS) st->hist[j] = 0;
        }
    }
};

/* Keys == t and > t per tile (t = st->prefix after the last pass). */
struct tk_count {
    enum { PHASES = 3 };
    struct Shared {
        uint32_t eq, gt;
    };
    const float *g, *h;
    const tk_state *st;
    uint32_t n;
    uint32_t *cnt_eq, *cnt_gt;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        if (ph == 0) {
            if (t.tid == 0) sh.eq = sh.gt = 0;
        } else if (ph == 1) {
            const uint64_t e0 = (uint64_t)t.block * QTC_TILE;
            const uint32_t thr = st->prefix;
            uint32_t eq = 0, gt = 0;
            for (uint32_t j = t.tid; j < QTC_TILE && e0 + j < n; j += QTC_THREADS) {
                const uint32_t key = qtc_bits(tk_x(g, h, e0 + j)) & 0x7fffffffu;
                eq += key == thr;
                gt += key > thr;
            }
            if (eq) qtc_atomic_add(&sh.eq, eq);
            if (gt) qtc_atomic_add(&sh.gt, gt);
        } else if (t.tid == 0) {
            cnt_eq[t.block] = sh.eq;
            cnt_gt[t.block] = sh.gt;
        }
    }
};

/* Exclusive prefix counts over tiles, in tile order (one thread: tiles = n / 2048). */
struct tk_scan {
    enum { PHASES = 1 };
    struct Shared {
        int unused;
    };
    const tk_state *st;
    const uint32_t *cnt_eq, *cnt_gt;
    uint32_t *eq_before, *sel_before;
    uint32_t tiles;

    QTC_HD void phase(int, Shared &, qtc_thr t) const
    {
        if (t.tid != 0) return;
        const uint64_t take = st->need;
        uint64_t eb = 0, sb = 0;
        for (uint32_t b = 0; b < tiles; b++) {
            eq_before[b] = (uint32_t)eb;
            sel_before[b] = (uint32_t)sb;
            const uint64_t left = take > eb ? take - eb : 0;
            sb += cnt_gt[b] + (left < cnt_eq[b] ? left : cnt_eq[b]);
            eb += cnt_eq[b];
        }
    }
};

/* Thread t owns elements [8t, 8t + 8) of the tile: counts, block scans, then writes. */
struct tk_select {
    enum { PHASES = 6 };
    struct Shared {
        float x[QTC_TILE_PAD]; /* element j at QTC_PAD(j) */
        uint32_t ceq[QTC_THREADS], csel[QTC_THREADS];
    };
    const float *g;
    float *h;
    const tk_state *st;
    const uint32_t *eq_before, *sel_before;
    uint32_t *idx;
    uint8_t *out;
    uint32_t n, k;
    qtc_header hdr;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const uint64_t e0 = (uint64_t)t.block * QTC_TILE;
        const uint64_t rest = e0 < n ? n - e0 : 0;
        const uint32_t len = (uint32_t)(rest < (uint64_t)QTC_TILE ? rest : (uint64_t)QTC_TILE);
        const uint32_t thr = st->prefix, take = st->need, l0 = 8 * t.tid;
        const uint32_t cnt = l0 < len ? (len - l0 < 8 ? len - l0 : 8) : 0;
        switch (ph) {
        case 0:
            if (t.block == 0 && t.tid < QT_CODEC_HEADER_BYTES) out[t.tid] = hdr.b[t.tid];
            if (t.block == 0 && t.tid == 0) qtc_st_u32(out + QT_CODEC_HEADER_BYTES, k);
            for (uint32_t j = t.tid; j < len; j += QTC_THREADS) sh.x[QTC_PAD(j)] = tk_x(g, h, e0 + j);
            break;
        case 1: {
            uint32_t eq = 0;
            for (uint32_t jj = 0; jj < cnt; jj++) eq += (qtc_bits(sh.x[QTC_PAD(l0 + jj)]) & 0x7fffffffu) == thr;
            sh.ceq[t.tid] = eq;
            break;
        }
        case 2:
        case 4: { /* exclusive scan of ceq (phase 2) or csel (phase 4), one thread */
            if (t.tid != 0) break;
            uint32_t *c = ph == 2 ? sh.ceq : sh.csel, run = 0;
            for (int j = 0; j < QTC_THREADS; j++) {
                const uint32_t v = c[j];
                c[j] = run;
                run += v;
            }
            break;
        }
        case 3: {
            uint32_t rank = eq_before[t.block] + sh.ceq[t.tid], sel = 0;
            for (uint32_t jj = 0; jj < cnt; jj++) {
                const uint32_t key = qtc_bits(sh.x[QTC_PAD(l0 + jj)]) & 0x7fffffffu;
                sel += key > thr || (key == thr && rank < take);
                rank += key == thr;
            }
            sh.csel[t.tid] = sel;
            break;
        }
        default: {
            uint32_t rank = eq_before[t.block] + sh.ceq[t.tid];
            uint32_t j = sel_before[t.block] + sh.csel[t.tid];
            uint8_t *vals = out + QT_CODEC_HEADER_BYTES + 4;
            for (uint32_t jj = 0; jj < cnt; jj++) {
                const float x = sh.x[QTC_PAD(l0 + jj)];
                const uint32_t key = qtc_bits(x) & 0x7fffffffu;
                const bool s = key > thr || (key == thr && rank < take);
                rank += key == thr;
                const uint64_t i = e0 + l0 + jj;
                if (h) h[i] = s ? 0.0f : x;
                if (!s) continue;
                qtc_st_u32(vals + 4 * (uint64_t)j, qtc_bits(x));
                idx[j] = (uint32_t)i;
                j++;
            }
            break;
        }
        }
    }
};

struct tk_scatter {
    enum { PHASES = 1 };
    struct Shared {
        int unused;
    };
    const uint32_t *idx;
    const uint8_t *vals;
    float *out;
    uint32_t k;
    float f;

    QTC_HD void phase(int, Shared &, qtc_thr t) const
    {
        const uint64_t j0 = (uint64_t)t.block * QTC_TILE;
        for (uint32_t jj = t.tid; jj < QTC_TILE && j0 + jj < k; jj += QTC_THREADS) {
            const uint64_t j = j0 + jj;
            const uint32_t i = idx[j];
            out[i] = qf_add(out[i], qf_mul(f, qtc_ld_f32(vals + 4 * j)));
        }
    }
};

/* ---- scratch: state, four per-tile arrays, idx[k] ---- */

static uint64_t tk_tiles(const qt_wire *w) { return (w->n + QTC_TILE - 1) / QTC_TILE; }

size_t qtc_topk_scratch_bytes(const qt_wire *w)
{
    return sizeof(tk_state) + 16 * tk_tiles(w) + 4 * w->k;
}

/* idx[k] and the index codes; at least the header and k that an empty slice sends */
size_t qtc_topk_host_bytes(const qt_wire *w)
{
    return 4 * w->k + qt_topk_max_payload_bytes(w) + QT_CODEC_HEADER_BYTES;
}

static int tk_copy(const qtc_exec &ex, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (!bytes) return 0;
    if (ex.emu) {
        memcpy(dst, src, bytes);
        return 0;
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, ex.stream));
    return 0;
}

static int tk_sync(const qtc_exec &ex)
{
    if (!ex.emu) CUDA_CHECK(cudaStreamSynchronize(ex.stream));
    return 0;
}

/* The index stream of idx[0..k) (topk_index.h, as topk.c writes it); its bytes, or
 * (size_t)-1 when it does not fit in cap. */
static size_t tk_code_indices(const qt_wire *w, const uint32_t *idx, uint8_t *buf, size_t cap)
{
    qt_topk_iw iw;
    qt_topk_iw_init(&iw, w, buf, cap);
    for (size_t j = 0; j < w->k; j++)
        if (qt_topk_iw_put(&iw, idx[j]) != 0) return (size_t)-1;
    size_t ib;
    return qt_topk_iw_finish(&iw, &ib) != 0 ? (size_t)-1 : ib;
}

int qtc_topk_encode(const qtc_exec &ex, const qt_wire *w, const float *g, float *residual,
                    uint8_t *out, size_t cap, void *scratch, void *host, size_t *out_bytes)
{
    const size_t k = w->k, pcap = cap - QT_CODEC_HEADER_BYTES; /* cap >= 16: checked */
    if (pcap < 4 + 4 * k) return QT_CODEC_ENOSPC;
    const uint64_t tiles = tk_tiles(w);
    tk_state *st = (tk_state *)scratch;
    uint32_t *cnt_eq = (uint32_t *)(st + 1), *cnt_gt = cnt_eq + tiles, *eq_before = cnt_gt + tiles;
    uint32_t *sel_before = eq_before + tiles, *idx = sel_before + tiles;
    const uint32_t n = (uint32_t)w->n;
    if (k > 0) {
        if (qtc_memset(ex, st, 0, sizeof *st)) return -1;
        for (int pass = 0; pass < 3; pass++) {
            const uint32_t shift = (uint32_t)tk_shift[pass], dmask = (1u << tk_width[pass]) - 1;
            tk_hist kh = {g, residual, st, n, shift, dmask};
            if (qtc_launch(ex, kh, tiles)) return -1;
            tk_pick kp = {st, (uint32_t)k, shift, dmask, pass == 0};
            if (qtc_launch(ex, kp, 1)) return -1;
        }
        tk_count kc = {g, residual, st, n, cnt_eq, cnt_gt};
        if (qtc_launch(ex, kc, tiles)) return -1;
        tk_scan ks = {st, cnt_eq, cnt_gt, eq_before, sel_before, (uint32_t)tiles};
        if (qtc_launch(ex, ks, 1)) return -1;
    }
    tk_select sel;
    memset(&sel, 0, sizeof sel);
    sel.g = g;
    sel.h = residual;
    sel.st = st;
    sel.eq_before = eq_before;
    sel.sel_before = sel_before;
    sel.idx = idx;
    sel.out = out;
    sel.n = n;
    sel.k = (uint32_t)k;
    qt_wire_put_header(w, 0, sel.hdr.b);
    if (k == 0) { /* n == 0: the header and k = 0 only */
        uint8_t head[QT_CODEC_HEADER_BYTES + 4];
        memcpy(head, sel.hdr.b, QT_CODEC_HEADER_BYTES);
        memset(head + QT_CODEC_HEADER_BYTES, 0, 4);
        memcpy(host, head, sizeof head);
        if (tk_copy(ex, out, host, sizeof head, cudaMemcpyHostToDevice) || tk_sync(ex)) return -1;
        *out_bytes = sizeof head;
        return 0;
    }
    if (qtc_launch(ex, sel, tiles)) return -1;
    uint32_t *hidx = (uint32_t *)host;
    uint8_t *hbytes = (uint8_t *)(hidx + k);
    if (tk_copy(ex, hidx, idx, 4 * k, cudaMemcpyDeviceToHost) || tk_sync(ex)) return -1;
    const size_t ib = tk_code_indices(w, hidx, hbytes, pcap - 4 - 4 * k);
    if (ib == (size_t)-1) return QT_CODEC_ENOSPC;
    if (tk_copy(ex, out + QT_CODEC_HEADER_BYTES + 4 + 4 * k, hbytes, ib, cudaMemcpyHostToDevice) || tk_sync(ex))
        return -1;
    *out_bytes = QT_CODEC_HEADER_BYTES + 4 + 4 * k + ib;
    return 0;
}

/* topk.c's decoder without the adds: the same checks in the same order; idx[0..k). */
static int tk_parse(const qt_wire *w, const uint8_t *in, size_t len, uint32_t *idx)
{
    unsigned extra = 0;
    int rc = qt_wire_check_header(w, in, len, &extra);
    if (rc != QT_CODEC_OK) return rc;
    const uint8_t *payload = in + QT_CODEC_HEADER_BYTES;
    len -= QT_CODEC_HEADER_BYTES;
    const size_t k = w->k;
    if (len < 4) return QT_CODEC_ETRUNC;
    if (qt_load_u32(payload) != k) return QT_CODEC_ECORRUPT;
    if (len - 4 < 4 * k) return QT_CODEC_ETRUNC;
    qt_topk_ir ir;
    qt_topk_ir_init(&ir, w, payload + 4 + 4 * k, len - 4 - 4 * k);
    for (size_t j = 0; j < k; j++) {
        uint64_t i;
        const int r = qt_topk_ir_next(&ir, &i);
        if (r != 0) return r;
        idx[j] = (uint32_t)i;
    }
    return qt_topk_ir_finish(&ir);
}

size_t qtc_topk_decode_host_bytes(const qt_wire *w, const size_t *len, int count)
{
    size_t most = 0;
    for (int r = 0; r < count; r++) most = len[r] > most ? len[r] : most;
    return 4 * w->k + most;
}

int qtc_topk_decode(const qtc_exec &ex, const qt_wire *w, int count, const uint8_t *const *in,
                    const size_t *len, float f, bool zero_first, float *out, int *hstatus,
                    void *scratch, void *host)
{
    if (zero_first && qtc_memset(ex, out, 0, w->n * sizeof(float))) return -1;
    uint32_t *didx = (uint32_t *)scratch, *hidx = (uint32_t *)host;
    uint8_t *hin = (uint8_t *)(hidx + w->k);
    for (int r = 0; r < count; r++) {
        /* stream order: the previous stream's upload and scatter were issued before this
         * copy, so the staging and idx scratch are free once it has landed */
        if (tk_copy(ex, hin, in[r], len[r], cudaMemcpyDeviceToHost) || tk_sync(ex)) return -1;
        hstatus[r] = tk_parse(w, hin, len[r], hidx);
        if (hstatus[r] != QT_CODEC_OK) return 0;
        if (w->k == 0) continue;
        if (tk_copy(ex, didx, hidx, 4 * w->k, cudaMemcpyHostToDevice)) return -1;
        tk_scatter ksc = {didx, in[r] + QT_CODEC_HEADER_BYTES + 4, out, (uint32_t)w->k, f};
        if (qtc_launch(ex, ksc, (w->k + QTC_TILE - 1) / QTC_TILE)) return -1;
    }
    return tk_sync(ex); /* the staging is reused by the next call */
}
