/* fixed.c — the payload of the level codecs (qsgd, ecq, terngrad) and its fixed packing.
 *
 * Payload: scales f32[nb] (bucket k's m), then the level codes.
 *   fixed:   element i's code q + s (0..2s) in bits [i*b, i*b + b) of the code bytes,
 *            least significant bit first (bit j of the stream is bit j%8 of byte j/8);
 *            b = ceil(log2(2s+1)). Exactly 4*nb + ceil(n*b/8) bytes: b + 32/d bits per
 *            element plus the 16-byte header.
 *   elias, huffman: an MSB-first bit stream (elias.c, huffman.c). When that stream would
 *            be longer than the fixed codes, the encoder writes the fixed codes instead
 *            and sets the header's fallback flag, so max_bytes is the fixed size for all
 *            three encodings.
 * Eight codes always fill exactly b bytes, so aligned groups of 8 are packed and
 * unpacked as one little-endian word; only the message's last partial group (encoder,
 * which packs chunks starting at multiples of 8) and group-misaligned bucket edges
 * (decoder, which walks buckets) go bit by bit.
 */
#include <stdlib.h>

#include "core/qt.h"
#include "quant/quantizer.h"

size_t qt_levels_fixed_bytes(const qt_wire *w) { return 4 * w->nb + qt_packed_bytes(w->n, w->b); }

/* ---- packing ---- */

static void put_code(uint8_t *codes, size_t i, int b, uint32_t c)
{
    size_t bit = i * (size_t)b;
    uint8_t *p = codes + bit / 8;
    uint32_t v = c << (bit % 8);
    int nbytes = (int)((bit % 8 + (size_t)b + 7) / 8);
    for (int j = 0; j < nbytes; j++) p[j] |= (uint8_t)(v >> (8 * j));
}

static uint32_t get_code(const uint8_t *codes, size_t i, int b)
{
    size_t bit = i * (size_t)b;
    const uint8_t *p = codes + bit / 8;
    int nbytes = (int)((bit % 8 + (size_t)b + 7) / 8);
    uint32_t v = 0;
    for (int j = 0; j < nbytes; j++) v |= (uint32_t)p[j] << (8 * j);
    return (v >> (bit % 8)) & ((1u << b) - 1);
}

/* Aligned groups of 8 codes, B a compile-time constant after inlining. */
static inline __attribute__((always_inline)) size_t
pack_groups(const int16_t *q, size_t i, size_t end, size_t i0, int s, int B, uint8_t *codes)
{
    for (; i + 8 <= end; i += 8) {
        const int16_t *qq = q + (i - i0);
        if (B <= 8) {
            uint64_t w = 0;
            for (int j = 0; j < 8; j++) w |= (uint64_t)(uint32_t)(qq[j] + s) << (j * B);
            memcpy(codes + (i / 8) * (size_t)B, &w, (size_t)B);
        } else {
            unsigned __int128 w = 0;
            for (int j = 0; j < 8; j++)
                w |= (unsigned __int128)(uint32_t)(qq[j] + s) << (j * B);
            memcpy(codes + (i / 8) * (size_t)B, &w, (size_t)B);
        }
    }
    return i;
}

/* Packs q[0..len) as the codes of elements [i0, i0+len). Bytes that a head or tail
 * shares with other elements must be zero beforehand (see zero_tail). */
static void pack_range(const qt_wire *w, const int16_t *q, size_t i0, size_t len,
                       uint8_t *codes)
{
    const int s = w->s, b = w->b;
    size_t i = i0, end = i0 + len;
    for (; i < end && (i & 7); i++) put_code(codes, i, b, (uint32_t)(q[i - i0] + s));
    switch (b) {
    case 1: i = pack_groups(q, i, end, i0, s, 1, codes); break;
    case 2: i = pack_groups(q, i, end, i0, s, 2, codes); break;
    case 3: i = pack_groups(q, i, end, i0, s, 3, codes); break;
    case 4: i = pack_groups(q, i, end, i0, s, 4, codes); break;
    case 5: i = pack_groups(q, i, end, i0, s, 5, codes); break;
    case 6: i = pack_groups(q, i, end, i0, s, 6, codes); break;
    case 7: i = pack_groups(q, i, end, i0, s, 7, codes); break;
    case 8: i = pack_groups(q, i, end, i0, s, 8, codes); break;
    default: /* 9..16 bits (levels up to 32767) */
        if (b > 8 && b <= 16) i = pack_groups(q, i, end, i0, s, b, codes);
        break;
    }
    for (; i < end; i++) put_code(codes, i, b, (uint32_t)(q[i - i0] + s));
}

/* Zeroes the bytes of the last partial group of 8 codes, which put_code ORs into (the
 * encoder's chunks start at multiples of 8, so no other group is packed bit by bit). */
static void zero_tail(const qt_wire *w, uint8_t *codes)
{
    size_t total = qt_packed_bytes(w->n, w->b), from = (w->n / 8) * (size_t)w->b;
    memset(codes + from, 0, total - from);
}

/* ---- unpacking ---- */

static inline __attribute__((always_inline)) size_t
unpack_groups(const uint8_t *codes, size_t i, size_t end, int s, int B, float unit, float f,
              float *out, uint32_t *maxc)
{
    const uint32_t mask = (1u << B) - 1;
    uint32_t mc = *maxc;
    for (; i + 64 <= end; i += 64) {
        int32_t c[64];
        const uint8_t *src = codes + (i / 8) * (size_t)B;
        for (int g = 0; g < 8; g++) {
            uint64_t wv = 0;
            memcpy(&wv, src + g * B, (size_t)B);
            for (int j = 0; j < 8; j++) c[8 * g + j] = (int32_t)((wv >> (j * B)) & mask);
        }
        float *o = out + i;
        for (int j = 0; j < 64; j++) {
            uint32_t cj = (uint32_t)c[j];
            mc = cj > mc ? cj : mc;
            o[j] += f * ((float)(c[j] - s) * unit);
        }
    }
    for (; i + 8 <= end; i += 8) {
        uint64_t wv = 0;
        memcpy(&wv, codes + (i / 8) * (size_t)B, (size_t)B);
        for (int j = 0; j < 8; j++) {
            uint32_t cj = (uint32_t)((wv >> (j * B)) & mask);
            mc = cj > mc ? cj : mc;
            out[i + j] += f * ((float)((int32_t)cj - s) * unit);
        }
    }
    *maxc = mc;
    return i;
}

static int fixed_decode(const qt_wire *w, const uint8_t *payload, float f, float *out)
{
    const int s = w->s, b = w->b;
    const float sf = (float)s;
    const uint8_t *codes = payload + 4 * w->nb;
    uint32_t maxc = 0;
    for (size_t k = 0; k < w->nb; k++) {
        size_t i = k * w->d, end = QT_MIN(i + w->d, w->n);
        const float unit = qt_load_f32(payload + 4 * k) / sf;
        for (; i < end && (i & 7); i++) {
            uint32_t c = get_code(codes, i, b);
            maxc = c > maxc ? c : maxc;
            out[i] += f * ((float)((int32_t)c - s) * unit);
        }
        switch (b) {
        case 1: i = unpack_groups(codes, i, end, s, 1, unit, f, out, &maxc); break;
        case 2: i = unpack_groups(codes, i, end, s, 2, unit, f, out, &maxc); break;
        case 3: i = unpack_groups(codes, i, end, s, 3, unit, f, out, &maxc); break;
        case 4: i = unpack_groups(codes, i, end, s, 4, unit, f, out, &maxc); break;
        case 5: i = unpack_groups(codes, i, end, s, 5, unit, f, out, &maxc); break;
        case 6: i = unpack_groups(codes, i, end, s, 6, unit, f, out, &maxc); break;
        case 7: i = unpack_groups(codes, i, end, s, 7, unit, f, out, &maxc); break;
        case 8: i = unpack_groups(codes, i, end, s, 8, unit, f, out, &maxc); break;
        default: break; /* wider codes: element by element below */
        }
        for (; i < end; i++) {
            uint32_t c = get_code(codes, i, b);
            maxc = c > maxc ? c : maxc;
            out[i] += f * ((float)((int32_t)c - s) * unit);
        }
    }
    if (maxc > 2u * (uint32_t)s) return QT_CODEC_ECORRUPT;
    /* The unused high bits of the last byte must be zero (one valid stream per message). */
    size_t used = w->n * (size_t)b;
    if (used % 8 && (codes[used / 8] >> (used % 8)) != 0) return QT_CODEC_ECORRUPT;
    return QT_CODEC_OK;
}

/* ---- the level codecs' entry points ---- */

/* Chunks of the message, a multiple of 8 and of every huffman group size. Up to
 * KEEP_BYTES the entropy coders keep the first pass's levels (one byte each for s <= 127,
 * which every huffman code and the usual elias settings have, else two; 8 MB at most:
 * glibc then reuses the pages instead of faulting in fresh ones per call); longer
 * messages quantize again instead (measured: the page faults of a 32 MB buffer per call
 * cost more than the second quantization). */
enum { CHUNK = 3840, KEEP_BYTES = 1 << 23 };
_Static_assert(QT_LANE_ALIGN % CHUNK == 0 && CHUNK % 8 == 0 && CHUNK % 15 == 0, "chunks");

/* Levels of elements [c0, c1) into q. store: compute each bucket's scale when the chunk
 * reaches its first element and store it in the payload; else read it back from there. */
static void quant_chunk(const qt_wire *w, const qt_quantizer *qz, uint8_t *payload,
                        size_t c0, size_t c1, bool store, bool update, int16_t *q)
{
    for (size_t i = c0; i < c1;) {
        size_t k = i / w->d, b0 = k * w->d, bend = QT_MIN(b0 + w->d, w->n);
        float m;
        if (store && i == b0) {
            m = qt_quant_scale(qz, b0, bend - b0);
            qt_store_f32(payload + 4 * k, m);
        } else {
            m = qt_load_f32(payload + 4 * k);
        }
        size_t e = QT_MIN(bend, c1);
        qt_quant_range(qz, i, e - i, m, update, q + (i - c0));
        i = e;
    }
}

/* The ecq residual update of elements [c0, c1) from kept levels q. */
static void residual_chunk(const qt_wire *w, const qt_quantizer *qz, const uint8_t *payload,
                           size_t c0, size_t c1, const int16_t *q)
{
    for (size_t i = c0; i < c1;) {
        size_t k = i / w->d, e = QT_MIN(QT_MIN((k + 1) * w->d, w->n), c1);
        qt_quant_residual(qz, i, e - i, qt_load_f32(payload + 4 * k), q + (i - c0));
        i = e;
    }
}

/* Levels of elements [c0, c1) into / out of the kept array (lvb bytes per level). */
static void keep_levels(void *kept, size_t lvb, size_t c0, size_t c1, const int16_t *q)
{
    if (lvb == 2) {
        memcpy((int16_t *)kept + c0, q, (c1 - c0) * sizeof *q);
        return;
    }
    int8_t *k = (int8_t *)kept + c0;
    for (size_t i = 0; i < c1 - c0; i++) k[i] = (int8_t)q[i];
}

static void kept_levels(const void *kept, size_t lvb, size_t c0, size_t c1, int16_t *q)
{
    if (lvb == 2) {
        memcpy(q, (const int16_t *)kept + c0, (c1 - c0) * sizeof *q);
        return;
    }
    const int8_t *k = (const int8_t *)kept + c0;
    for (size_t i = 0; i < c1 - c0; i++) q[i] = k[i];
}

int qt_levels_encode(const qt_wire *w, const qt_quantizer *qz, uint8_t *payload, size_t cap,
                     size_t *payload_bytes, unsigned *extra_flags)
{
    const size_t n = w->n, sbytes = 4 * w->nb, fixed_codes = qt_packed_bytes(n, w->b);
    *extra_flags = 0;
    if (cap < sbytes) return QT_CODEC_ENOSPC;
    uint8_t *codes = payload + sbytes;
    const size_t avail = cap - sbytes;
    int16_t q[CHUNK];
    if (w->enc == QT_ENC_FIXED) { /* one pass: scales, levels, residual, codes */
        if (avail < fixed_codes) return QT_CODEC_ENOSPC;
        zero_tail(w, codes);
        for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
            size_t c1 = QT_MIN(c0 + CHUNK, n);
            quant_chunk(w, qz, payload, c0, c1, true, true, q);
            pack_range(w, q, c0, c1 - c0, codes);
        }
        *payload_bytes = sbytes + fixed_codes;
        return QT_CODEC_OK;
    }
    /* Entropy codes: a first pass measures the exact stream (scales stored, residual
     * untouched); the second takes the kept levels (or, past KEEP_BYTES, quantizes again:
     * the levels are a pure function of g, h and the key), updates the residual and
     * writes the stream, or fixed codes when the stream would be longer. Both passes go
     * lane by lane (quantizer.h); chunks never straddle lanes. */
    const bool elias = w->enc == QT_ENC_ELIAS;
    size_t ls[QT_LANES + 1];
    const int nl = qt_lane_starts(n, ls);
    qt_elias_enc ee;
    qt_huffman_enc he;
    if (elias)
        qt_elias_enc_init(&ee, w);
    else
        qt_huffman_enc_init(&he, w);
    uint64_t lane_bits[QT_LANES];
    const size_t lvb = w->s <= 127 ? 1 : 2; /* bytes per kept level */
    void *kept = n * lvb <= KEEP_BYTES ? qt_malloc(n * lvb) : NULL;
    for (int j = 0; j < nl; j++) {
        if (elias) qt_elias_lane_begin(&ee, ls[j]);
        for (size_t c0 = ls[j]; c0 < ls[j + 1]; c0 += CHUNK) {
            size_t c1 = QT_MIN(c0 + CHUNK, ls[j + 1]);
            quant_chunk(w, qz, payload, c0, c1, true, false, q);
            if (kept) keep_levels(kept, lvb, c0, c1, q);
            if (elias)
                qt_elias_count(&ee, q, c0, c1 - c0);
            else
                qt_huffman_count(&he, j, q, c1 - c0);
        }
        if (elias) lane_bits[j] = qt_elias_lane_bits(&ee, ls[j + 1]);
    }
    if (!elias) {
        uint64_t table = qt_huffman_build(&he);
        for (int j = 0; j < nl; j++) lane_bits[j] = (j ? 0 : table) + qt_huffman_lane_bits(&he, j);
    }
    size_t lane_bytes[QT_LANES], stream = 4 * (size_t)(nl - 1);
    for (int j = 0; j < nl; j++) stream += lane_bytes[j] = (size_t)((lane_bits[j] + 7) / 8);
    bool fallback = stream > fixed_codes;
    size_t need = fallback ? fixed_codes : stream;
    if (avail < need) {
        free(kept);
        return QT_CODEC_ENOSPC;
    }
    if (fallback) zero_tail(w, codes);
    uint8_t *lane_at = codes + 4 * (size_t)(nl - 1);
    for (int j = 0; j < nl; j++) {
        qt_bitwriter bw;
        if (!fallback) {
            if (j < nl - 1) qt_store_u32(codes + 4 * (size_t)j, (uint32_t)lane_bytes[j]);
            qt_bw_init(&bw, lane_at, lane_bytes[j]);
            if (elias)
                qt_elias_lane_begin(&ee, ls[j]);
            else if (j == 0)
                qt_huffman_write_table(&he, &bw);
        }
        for (size_t c0 = ls[j]; c0 < ls[j + 1]; c0 += CHUNK) {
            size_t c1 = QT_MIN(c0 + CHUNK, ls[j + 1]);
            int16_t *lev = q;
            if (kept) {
                kept_levels(kept, lvb, c0, c1, lev);
                residual_chunk(w, qz, payload, c0, c1, lev);
            } else {
                quant_chunk(w, qz, payload, c0, c1, false, true, lev);
            }
            if (fallback)
                pack_range(w, lev, c0, c1 - c0, codes);
            else if (elias)
                qt_elias_write(&ee, &bw, lev, c0, c1 - c0);
            else
                qt_huffman_write(&he, &bw, lev, c1 - c0);
        }
        if (!fallback) {
            if (elias) qt_elias_lane_finish(&ee, &bw, ls[j + 1]);
            QT_ASSERT(qt_bw_finish(&bw) == lane_bytes[j] && !bw.over);
            lane_at += lane_bytes[j];
        }
    }
    free(kept);
    *extra_flags = fallback ? QT_WIRE_FLAG_FALLBACK : 0;
    *payload_bytes = sbytes + need;
    return QT_CODEC_OK;
}

int qt_levels_decode(const qt_wire *w, unsigned extra_flags, const uint8_t *payload,
                     size_t len, float scale, float *out)
{
    const size_t sbytes = 4 * w->nb;
    if (len < sbytes) return QT_CODEC_ETRUNC;
    if (w->enc == QT_ENC_FIXED || (extra_flags & QT_WIRE_FLAG_FALLBACK)) {
        size_t want = sbytes + qt_packed_bytes(w->n, w->b);
        if (len < want) return QT_CODEC_ETRUNC;
        if (len > want) return QT_CODEC_ECORRUPT;
        return fixed_decode(w, payload, scale, out);
    }
    /* The lanes' byte lengths, all checked against len before out is touched (a lane
     * that is too short for its codes reads as truncated in its decoder). */
    size_t ls[QT_LANES + 1];
    const int nl = qt_lane_starts(w->n, ls);
    const uint8_t *p = payload + sbytes;
    size_t rest = len - sbytes;
    if (rest < 4 * (size_t)(nl - 1)) return QT_CODEC_ETRUNC;
    qt_lane lanes[QT_LANES];
    const uint8_t *at = p + 4 * (size_t)(nl - 1);
    rest -= 4 * (size_t)(nl - 1);
    for (int j = 0; j < nl; j++) {
        size_t lb = j < nl - 1 ? qt_load_u32(p + 4 * (size_t)j) : rest;
        if (lb > rest) return QT_CODEC_ETRUNC;
        lanes[j] = (qt_lane){at, lb, ls[j], ls[j + 1]};
        at += lb;
        rest -= lb;
    }
    if (w->enc == QT_ENC_ELIAS) return qt_elias_decode_levels(w, payload, lanes, nl, scale, out);
    return qt_huffman_decode_levels(w, payload, lanes, nl, scale, out);
}
