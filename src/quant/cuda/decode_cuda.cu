/* decode_cuda.cu — GPU decode-and-add of the fixed-layout streams (none, fp16, bf16,
 * qsgd/ecq/terngrad with fixed packing, onebit) for one or many received streams:
 *     out[i] = (zero_first ? 0 : out[i]) + f*v_0[i] + f*v_1[i] + ... + f*v_{N-1}[i]
 * added left to right, each term computed as the CPU's decode_add computes it, so the
 * result is bitwise the CPU's loop "zero the slice, then decode_add stream 0, 1, ...".
 * One thread per element (coalesced reads of out, the codes of neighbouring elements
 * share bytes), reading out once and writing it once however many streams there are.
 *
 * Malformed input, the CPU's rules and codes: phase 0 checks every stream's header and
 * payload length (header first, as qt_codec_decode_add) before anything is read past
 * them; if any fails, no block touches out and status[r] holds the stream's code. Payload
 * errors (a code above 2s, non-zero padding bits) are found while adding, as on the CPU:
 * status[r] = QT_CODEC_ECORRUPT and out holds a partial sum to discard. Reads stay inside
 * [in[r], in[r] + len[r]): element i's code bytes lie inside the checked length.
 */
#include "quant/cuda/codec_cuda_internal.h"

struct fx_dec {
    enum { PHASES = 2 };
    struct Shared {
        int bad;
    };
    const uint8_t *in[QTC_MAX_STREAMS];
    uint64_t len[QTC_MAX_STREAMS];
    int count;
    int *status;
    float *out;
    uint32_t n, d, nb;
    qt_fastdiv fd;
    int method, s, b;
    float sf, f;
    bool zero_first;
    qtc_header want;
    uint64_t plen;  /* payload bytes */
    uint64_t codes; /* offset of the codes / bits inside the payload */

    QTC_HD bool levels() const
    {
        return method == QT_CODEC_QSGD || method == QT_CODEC_ECQ || method == QT_CODEC_TERNGRAD;
    }

    /* Header, length, then (block 0) the padding bits of the last byte. */
    QTC_HD void check(Shared &sh, qtc_thr t) const
    {
        int bad = 0;
        for (int r = 0; r < count; r++) {
            unsigned extra = 0;
            int rc = qtc_check_header(in[r], len[r], want, false, &extra);
            if (rc == QT_CODEC_OK) {
                const uint64_t p = len[r] - QT_CODEC_HEADER_BYTES;
                rc = p == plen ? QT_CODEC_OK : p < plen ? QT_CODEC_ETRUNC : QT_CODEC_ECORRUPT;
            }
            if (rc != QT_CODEC_OK) {
                bad = 1;
                if (t.block == 0) qtc_set_error(&status[r], rc);
                continue;
            }
            if (t.block != 0 || n == 0) continue;
            const uint8_t *c = in[r] + QT_CODEC_HEADER_BYTES + codes;
            const uint64_t used = levels() ? (uint64_t)n * (uint64_t)b : method == QT_CODEC_ONEBIT ? n : 0;
            if (used % 8 && (c[used / 8] >> (used % 8)) != 0) qtc_set_error(&status[r], QT_CODEC_ECORRUPT);
        }
        sh.bad = bad;
    }

    /* f * v of element i (tile element j) of stream r, as the CPU decoder computes it. */
    QTC_HD float term(int r, uint32_t i, const qtc_tile &tl, uint32_t j) const
    {
        const uint8_t *pay = in[r] + QT_CODEC_HEADER_BYTES;
        switch (method) {
        case QT_CODEC_NONE: return qf_mul(f, qtc_ld_f32(pay + 4 * (uint64_t)i));
        case QT_CODEC_FP16: return qf_mul(f, qtc_f16_to_f32(qtc_ld_u16(pay + 2 * (uint64_t)i)));
        case QT_CODEC_BF16: return qf_mul(f, qtc_bf16_to_f32(qtc_ld_u16(pay + 2 * (uint64_t)i)));
        case QT_CODEC_ONEBIT: {
            const uint64_t k = tl.kf + qtc_local_bucket(tl, j);
            const unsigned bit = (pay[codes + i / 8] >> (i % 8)) & 1u;
            return qf_mul(f, qtc_ld_f32(pay + 8 * k + (bit ? 0 : 4)));
        }
        default: {
            const uint64_t k = tl.kf + qtc_local_bucket(tl, j);
            const float unit = qf_div(qtc_ld_f32(pay + 4 * k), sf);
            const uint32_t c = qtc_get_code(pay + codes, i, b);
            if (c > 2u * (uint32_t)s) qtc_set_error(&status[r], QT_CODEC_ECORRUPT);
            return qf_mul(f, qf_mul((float)((int)c - s), unit));
        }
        }
    }

    QTC_HD void phase(int ph, Shared &sh, qtc_thr t) const
    {
        if (ph == 0) {
            if (t.tid == 0) check(sh, t);
            return;
        }
        if (sh.bad) return;
        const qtc_tile tl = qtc_tile_of(t.block, QTC_TILE, n, d, fd);
        for (uint32_t j = t.tid; j < tl.len; j += QTC_THREADS) {
            const uint32_t i = tl.e0 + j;
            float acc = zero_first ? 0.0f : out[i];
            for (int r = 0; r < count; r++) acc = qf_add(acc, term(r, i, tl, j));
            out[i] = acc;
        }
    }
};

int qtc_fixed_decode(const qtc_exec &ex, const qt_wire *w, int count, const uint8_t *const *in,
                     const size_t *len, float f, bool zero_first, float *out, int *status)
{
    QT_ASSERT(count >= 1 && count <= QTC_MAX_STREAMS);
    fx_dec k;
    memset(&k, 0, sizeof k);
    for (int r = 0; r < count; r++) {
        k.in[r] = in[r];
        k.len[r] = len[r];
    }
    k.count = count;
    k.status = status;
    k.out = out;
    k.n = (uint32_t)w->n;
    k.method = w->method;
    const bool levels = k.levels();
    k.d = (uint32_t)(w->d ? w->d : 1);
    k.nb = (uint32_t)w->nb;
    k.fd = qt_fastdiv_make(k.d);
    k.s = w->s;
    k.b = w->b;
    k.sf = (float)w->s;
    k.f = f;
    k.zero_first = zero_first;
    qt_wire_put_header(w, 0, k.want.b);
    switch (w->method) {
    case QT_CODEC_NONE: k.plen = 4 * w->n; break;
    case QT_CODEC_FP16:
    case QT_CODEC_BF16: k.plen = 2 * w->n; break;
    case QT_CODEC_ONEBIT:
        k.codes = 8 * w->nb;
        k.plen = k.codes + (w->n + 7) / 8;
        break;
    default:
        QT_ASSERT(levels && w->enc == QT_ENC_FIXED);
        k.codes = 4 * w->nb;
        k.plen = k.codes + qt_packed_bytes(w->n, w->b);
        break;
    }
    uint64_t grid = (w->n + QTC_TILE - 1) / QTC_TILE;
    return qtc_launch(ex, k, grid ? grid : 1);
}
