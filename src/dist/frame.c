/* frame.c — chunk messages: each segment's codec payload behind an 8-byte header
 * {u32 payload bytes, u32 elements}, padded to 8 bytes (exchange_internal.h).
 *
 * The header costs 8 bytes per segment (a segment is at least a whole tensor or a piece
 * of bucket_kb, so < 0.1% at the defaults) and buys two things: variable-length codecs
 * (Elias, top-k) can be concatenated and decoded without a side table, and a receiver
 * detects a sender that disagrees on the plan instead of decoding garbage.
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

#include <string.h>

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

size_t qt_frame_max(const qt_exchange *ex, const qt_chunk *c)
{
    size_t total = 0;
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        total += 8 + pad8(qt_codec_max_bytes(&ex->codecs[s->codec], s->count));
    }
    return total;
}

int qt_frame_encode(qt_exchange *ex, const qt_chunk *c, const float *g, float *r, bool packed,
                    bool zero, uint32_t rank_key, uint8_t *out, size_t cap, size_t *len)
{
    size_t pos = 0, loc = 0;
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        size_t at = packed ? loc : s->offset;
        const float *gp = zero ? ex->zeros : g + at;
        float *rp = NULL;
        if (ex->has_residual) {
            /* A NaN/Inf bucket sends zeros and leaves the real residual untouched. */
            if (zero) memset(ex->scratch_res, 0, s->count * sizeof(float));
            rp = zero ? ex->scratch_res : r + at;
        }
        QT_ASSERT(pos + 8 <= cap);
        size_t n_bytes = 0;
        int rc = qt_codec_encode(&ex->codecs[s->codec], gp, rp, s->count, ex->step, rank_key,
                                 s->offset, out + pos + 8, cap - pos - 8, &n_bytes);
        if (rc != 0)
            return qt_fail("exchange: encoding %zu elements at arena offset %zu: %s", s->count,
                           s->offset, qt_codec_strerror(rc));
        uint32_t hdr[2] = {(uint32_t)n_bytes, (uint32_t)s->count};
        memcpy(out + pos, hdr, sizeof hdr);
        size_t padded = pad8(n_bytes);
        QT_ASSERT(pos + 8 + padded <= cap);
        memset(out + pos + 8 + n_bytes, 0, padded - n_bytes);
        pos += 8 + padded;
        loc += s->count;
        qt_exchange_poll(ex); /* keep earlier buckets' transfers moving */
    }
    *len = pos;
    return 0;
}

int qt_frame_decode_add(qt_exchange *ex, const qt_chunk *c, const uint8_t *in, size_t len,
                        float scale, float *base, bool packed)
{
    size_t pos = 0, loc = 0;
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        uint32_t hdr[2];
        if (pos + 8 > len)
            return qt_fail("exchange: message of %zu bytes ends before segment %d of %d", len,
                           k, c->n_segs);
        memcpy(hdr, in + pos, sizeof hdr);
        if (hdr[1] != s->count || pos + 8 + pad8(hdr[0]) > len)
            return qt_fail("exchange: segment at arena offset %zu: message says %u elements in "
                           "%u bytes, expected %zu elements within %zu bytes (ranks disagree "
                           "on the plan or the codec)", s->offset, hdr[1], hdr[0], s->count,
                           len - pos - 8);
        size_t at = packed ? loc : s->offset;
        int rc = qt_codec_decode_add(&ex->codecs[s->codec], in + pos + 8, hdr[0], s->count,
                                     scale, base + at);
        if (rc != 0)
            return qt_fail("exchange: decoding %zu elements at arena offset %zu: %s", s->count,
                           s->offset, qt_codec_strerror(rc));
        pos += 8 + pad8(hdr[0]);
        loc += s->count;
    }
    if (pos != len)
        return qt_fail("exchange: message of %zu bytes has %zu trailing bytes", len, len - pos);
    return 0;
}

/* Integer test of the exponent field: an OR reduction vectorises, a float one would not
 * (no -ffast-math), and NaN/Inf compare in no useful way as floats. */
bool qt_all_finite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad == 0;
}

bool qt_chunk_finite(const qt_exchange *ex, const qt_chunk *c)
{
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        if (!qt_all_finite(ex->grads + s->offset, s->count)) return false;
    }
    return true;
}

void qt_chunk_zero(const qt_exchange *ex, const qt_chunk *c)
{
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        memset(ex->grads + s->offset, 0, s->count * sizeof(float));
    }
}

void qt_chunk_backup(const qt_exchange *ex, const qt_chunk *c, const float *src, float *dst,
                     bool packed)
{
    size_t loc = 0;
    for (int k = 0; k < c->n_segs; k++) {
        const qt_seg *s = &ex->segs[c->first_seg + k];
        size_t at = packed ? loc : s->offset;
        memcpy(dst + at, src + at, s->count * sizeof(float));
        loc += s->count;
    }
}
