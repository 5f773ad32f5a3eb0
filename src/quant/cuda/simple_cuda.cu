/* simple_cuda.cu — GPU encoders of the codecs without levels: none / fp16 / bf16
 * (float16.c) and 1-bit SGD with error feedback (onebit.c), byte for byte.
 *
 * Floats: one element per thread and iteration, tile of 2048 per block; the integer
 * conversions of float16.c (NaN -> canonical quiet NaN, IEEE rounding, exact subnormals).
 * Onebit: ob_lanes computes each bucket's two means with onebit.c's binary64 lane sums
 * (16 threads per bucket, one lane each, summed in index order, then the 8-4-2-1 tree) and
 * writes them to the stream and to scratch; ob_bits then owns aligned groups of 8
 * elements (one byte of bits per thread) and updates the residual in place, each element
 * read and written by the same block.
 */
#include "quant/cuda/codec_cuda_internal.h"

struct fl_enc {
    enum { PHASES = 1 };
    struct Shared {
        int unused;
    };
    const float *g;
    uint8_t *out;
    uint32_t n;
    int method;
    qtc_header hdr;

    QTC_HD void phase(int, Shared &, qtc_thr t) const
    {
        if (t.block == 0 && t.tid < QT_CODEC_HEADER_BYTES) out[t.tid] = hdr.b[t.tid];
        uint8_t *pay = out + QT_CODEC_HEADER_BYTES;
        const uint64_t e0 = (uint64_t)t.block * QTC_TILE;
        for (uint32_t j = t.tid; j < QTC_TILE; j += QTC_THREADS) {
            const uint64_t i = e0 + j;
            if (i >= n) break;
            const float x = g[i];
            if (method == QT_CODEC_NONE)
                qtc_st_u32(pay + 4 * i, qtc_bits(x));
            else if (method == QT_CODEC_FP16)
                qtc_st_u16(pay + 2 * i, qtc_f32_to_f16(x));
            else
                qtc_st_u16(pay + 2 * i, qtc_f32_to_bf16(x));
        }
    }
};

int qtc_float_encode(const qtc_exec &ex, const qt_wire *w, const float *g, uint8_t *out)
{
    fl_enc k;
    memset(&k, 0, sizeof k);
    k.g = g;
    k.out = out;
    k.n = (uint32_t)w->n;
    k.method = w->method;
    qt_wire_put_header(w, 0, k.hdr.b);
    uint64_t grid = (w->n + QTC_TILE - 1) / QTC_TILE;
    return qtc_launch(ex, k, grid ? grid : 1);
}

/* NaN means: a mean is NaN when its part holds a NaN x (x = g + h, NaN counts as
 * negative). The CPU's binary64 sums propagate the NaN payload (x86: the first NaN
 * operand wins: within a lane the first NaN in index order, across lanes the tree's
 * left operand), where the GPU's adds return their canonical NaN. So each lane also
 * records its first NaN x, the tree picks lanes as the CPU's does, and a NaN mean takes
 * that NaN's bits, quieted (float -> double -> float keeps the payload). */
QTC_HD uint32_t ob_pick_nan(uint32_t left, uint32_t right)
{
    return qtc_isnan_bits(left) ? left : right;
}

/* Bucket k = 16*block + tid/16; lane tid%16 sums x >= 0 and x < 0 of its lane. */
struct ob_lanes {
    enum { PHASES = 2 };
    struct Shared {
        double sp[QTC_THREADS], sn[QTC_THREADS];
        uint32_t cp[QTC_THREADS], nan[QTC_THREADS];
    };
    const float *g, *h;
    uint32_t *means; /* scratch: bits of (positive mean, negative mean) per bucket */
    uint8_t *out;
    uint32_t n, d, nb;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const uint32_t k = t.block * (QTC_THREADS / QTC_LANES) + t.tid / QTC_LANES;
        const uint32_t lane = t.tid % QTC_LANES;
        if (k >= nb) return;
        const uint64_t b0 = (uint64_t)k * d;
        const uint32_t blen = (uint32_t)(n - b0 < d ? n - b0 : d);
        if (ph == 0) {
            double sp = 0.0, sn = 0.0;
            uint32_t cp = 0, nan = 0;
            for (uint32_t j = lane; j < blen; j += QTC_LANES) {
                const float x = h ? qf_add_x86(g[b0 + j], h[b0 + j]) : g[b0 + j];
                const bool pos = x >= 0.0f;
                sp = qd_add(sp, pos ? (double)x : 0.0);
                sn = qd_add(sn, pos ? 0.0 : (double)x);
                cp += pos;
                nan = ob_pick_nan(nan, qtc_bits(x));
            }
            sh.sp[t.tid] = sp;
            sh.sn[t.tid] = sn;
            sh.cp[t.tid] = cp;
            sh.nan[t.tid] = nan;
            return;
        }
        if (lane != 0) return;
        double sp[QTC_LANES], sn[QTC_LANES];
        uint32_t cp = 0, nan[QTC_LANES];
        for (int l = 0; l < QTC_LANES; l++) {
            sp[l] = sh.sp[t.tid + l];
            sn[l] = sh.sn[t.tid + l];
            cp += sh.cp[t.tid + l];
            nan[l] = sh.nan[t.tid + l];
        }
        for (int w = QTC_LANES / 2; w >= 1; w /= 2)
            for (int l = 0; l < w; l++) {
                sp[l] = qd_add(sp[l], sp[l + w]);
                sn[l] = qd_add(sn[l], sn[l + w]);
                nan[l] = ob_pick_nan(nan[l], nan[l + w]);
            }
        const uint32_t cn = blen - cp;
        const float mp = cp ? qd_to_f(qd_div(sp[0], (double)cp)) : 0.0f;
        const float mn = cn ? qd_to_f(qd_div(sn[0], (double)cn)) : 0.0f;
        /* only the negative part can hold a NaN (NaN >= 0 is false) */
        const uint32_t up = qtc_bits(mp);
        const uint32_t un = qtc_isnan_bits(qtc_bits(mn)) ? nan[0] | 0x00400000u : qtc_bits(mn);
        means[2 * (uint64_t)k] = up;
        means[2 * (uint64_t)k + 1] = un;
        uint8_t *pair = out + QT_CODEC_HEADER_BYTES + 8 * (uint64_t)k;
        qtc_st_u32(pair, up);
        qtc_st_u32(pair + 4, un);
    }
};

struct ob_bits {
    enum { PHASES = 3 };
    struct Shared {
        float g[QTC_TILE_PAD], h[QTC_TILE_PAD]; /* element j at QTC_PAD(j) */
    };
    const float *g;
    float *h;
    const uint32_t *means;
    uint8_t *out;
    uint32_t n, d, nb;
    qt_fastdiv fd;
    qtc_header hdr;

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        const qtc_tile tl = qtc_tile_of(t.block, QTC_TILE, n, d, fd);
        if (ph == 0) {
            if (t.block == 0 && t.tid < QT_CODEC_HEADER_BYTES) out[t.tid] = hdr.b[t.tid];
            for (uint32_t j = t.tid; j < tl.len; j += QTC_THREADS) {
                sh.g[QTC_PAD(j)] = g[tl.e0 + j];
                if (h) sh.h[QTC_PAD(j)] = h[tl.e0 + j];
            }
        } else if (ph == 1) {
            const uint32_t l0 = 8 * t.tid;
            if (l0 >= tl.len) return;
            const uint32_t cnt = tl.len - l0 < 8 ? tl.len - l0 : 8;
            unsigned byte = 0;
            for (uint32_t jj = 0; jj < cnt; jj++) {
                const uint32_t l = l0 + jj, lp = QTC_PAD(l);
                const float x = h ? qf_add_x86(sh.g[lp], sh.h[lp]) : sh.g[lp];
                const bool pos = x >= 0.0f;
                byte |= (unsigned)pos << jj;
                if (h) { /* the residual feeds the next step's means: x86 NaNs here too */
                    const uint64_t k = tl.kf + qtc_local_bucket(tl, l);
                    sh.h[lp] = qf_sub_x86(x, qtc_float(means[2 * k + (pos ? 0 : 1)]));
                }
            }
            out[QT_CODEC_HEADER_BYTES + 8 * (uint64_t)nb + (tl.e0 + l0) / 8] = (uint8_t)byte;
        } else if (h) {
            for (uint32_t j = t.tid; j < tl.len; j += QTC_THREADS) h[tl.e0 + j] = sh.h[QTC_PAD(j)];
        }
    }
};

size_t qtc_onebit_scratch_bytes(const qt_wire *w) { return 8 * w->nb; }

int qtc_onebit_encode(const qtc_exec &ex, const qt_wire *w, const float *g, float *residual,
                      uint8_t *out, void *scratch)
{
    const uint32_t n = (uint32_t)w->n, d = (uint32_t)w->d, nb = (uint32_t)w->nb;
    uint32_t *means = (uint32_t *)scratch;
    ob_lanes kl = {g, residual, means, out, n, d, nb};
    const unsigned per = QTC_THREADS / QTC_LANES;
    if (qtc_launch(ex, kl, (w->nb + per - 1) / per)) return -1;
    ob_bits kb;
    memset(&kb, 0, sizeof kb);
    kb.g = g;
    kb.h = residual;
    kb.means = means;
    kb.out = out;
    kb.n = n;
    kb.d = d;
    kb.nb = nb;
    kb.fd = qt_fastdiv_make(d);
    qt_wire_put_header(w, 0, kb.hdr.b);
    uint64_t grid = (w->n + QTC_TILE - 1) / QTC_TILE;
    return qtc_launch(ex, kb, grid ? grid : 1);
}
