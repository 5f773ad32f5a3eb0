/* bitio.h — internal to src/quant: MSB-first bit streams (the Elias and Huffman payloads
 * and topk's Elias indices) and Elias omega codes.
 *
 * Bit order: the first bit of a stream is bit 7 of its first byte; a stream ends padded
 * with zero bits to a whole byte. The writer never writes past its limit (it records the
 * overflow instead); the reader never reads past its end (it feeds zero bits and counts
 * them), so a decoder checks bits_used() against the length once, at the end or at a
 * bucket boundary, instead of on every read.
 *
 * Elias omega (Elias 1975, QSGD's "recursive coding") of k >= 1: "0" for 1; otherwise
 * the code of (bit length of k) - 1, then k in binary, then the final "0".
 * 1 -> 0, 2 -> 100, 3 -> 110, 4 -> 101000, 7 -> 101110, 8 -> 1110000.
 */
#ifndef QT_QUANT_BITIO_H
#define QT_QUANT_BITIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quant/codec.h"

typedef struct {
    uint8_t *start, *p, *end;
    uint64_t acc; /* pending bits, left-aligned: the first pending bit is bit 63 */
    int cnt;      /* pending bits, 0..7 between calls */
    bool over;    /* the stream did not fit before `end` */
} qt_bitwriter;

static inline void qt_bw_init(qt_bitwriter *w, uint8_t *buf, size_t cap)
{
    w->start = w->p = buf;
    w->end = buf + cap;
    w->acc = 0;
    w->cnt = 0;
    w->over = false;
}

/* qt_bw_put where at least 8 bytes are left before the end (qt_bw_put's common case;
 * the hot loops check once per block of codes and call this directly); len in 0..32. */
static inline void qt_bw_put_fast(qt_bitwriter *w, uint64_t bits, int len)
{
    w->cnt += len;
    w->acc |= bits << ((64 - w->cnt) & 63);
    uint64_t v = __builtin_bswap64(w->acc);
    memcpy(w->p, &v, 8);
    int nbytes = w->cnt >> 3;
    w->p += nbytes;
    w->acc <<= 8 * nbytes;
    w->cnt &= 7;
}

/* Appends the low `len` bits of `bits` (len in 0..32, bits < 2^len), MSB first. Stores
 * 8 bytes every time and advances by the whole bytes (branch-free: a flush test would
 * mispredict every few codes); within 8 bytes of the end it stores byte by byte. */
static inline void qt_bw_put(qt_bitwriter *w, uint64_t bits, int len)
{
    if (w->end - w->p >= 8) {
        qt_bw_put_fast(w, bits, len);
        return;
    }
    w->cnt += len;
    w->acc |= bits << ((64 - w->cnt) & 63); /* cnt == 0 only with len == 0, bits == 0 */
    int nbytes = w->cnt >> 3;
    for (int i = 0; i < nbytes; i++) {
        if (w->p < w->end)
            *w->p++ = (uint8_t)(w->acc >> (56 - 8 * i));
        else
            w->over = true;
    }
    w->acc <<= 8 * nbytes; /* nbytes <= 4: cnt was <= 7 + 32 */
    w->cnt &= 7;
}

/* Like qt_bw_put for len in 0..64. */
static inline void qt_bw_put_long(qt_bitwriter *w, uint64_t bits, int len)
{
    if (len > 32) {
        qt_bw_put(w, bits >> 32, len - 32);
        qt_bw_put(w, bits & 0xffffffffu, 32);
    } else {
        qt_bw_put(w, bits, len);
    }
}

/* Writes the pending bits padded with zeros; returns the stream's bytes (sets over if
 * they did not fit). */
static inline size_t qt_bw_finish(qt_bitwriter *w)
{
    if (w->cnt > 0) {
        if (w->p < w->end)
            *w->p++ = (uint8_t)(w->acc >> 56);
        else
            w->over = true;
        w->acc = 0;
        w->cnt = 0;
    }
    return (size_t)(w->p - w->start);
}

/* The lanes of the decoders' interleaved marker loops (elias.c's window loop, huffman.c's
 * one-symbol loop): a lane is the byte p its bits were loaded from and the bits f, MSB
 * first, with a marker bit below the valid ones. Each code's shift moves the marker up, so
 * the bits taken since the load are ctz(f): no position is updated per code. */

/* A lane at bit position bp from base: p there, f only the marker (nothing loaded). */
static inline __attribute__((always_inline)) uint64_t qt_mk_start(const uint8_t *base,
                                                                  uint64_t bp,
                                                                  const uint8_t **p)
{
    *p = base + bp / 8;
    return 1ull << (bp % 8);
}

/* The lane's bit position from base. */
static inline __attribute__((always_inline)) uint64_t qt_mk_pos(const uint8_t *base,
                                                                const uint8_t *p, uint64_t f)
{
    return 8 * (uint64_t)(p - base) + (uint64_t)__builtin_ctzll(f);
}

/* The lane loaded at its position: p moves to that byte (at most 7 on when at most 56 + 7
 * bits were taken; 8 bytes must be readable there) and f holds at least 57 valid bits. */
static inline __attribute__((always_inline)) uint64_t qt_mk_next(const uint8_t **p, uint64_t f)
{
    const uint64_t c = (uint64_t)__builtin_ctzll(f);
    uint64_t x;
    *p += c >> 3;
    memcpy(&x, *p, 8);
    return (__builtin_bswap64(x) | 1) << (c & 7);
}

/* The lane loaded at bit position at from base. */
static inline __attribute__((always_inline)) uint64_t qt_mk_at(const uint8_t *base, uint64_t at,
                                                               const uint8_t **p)
{
    uint64_t x;
    *p = base + at / 8;
    memcpy(&x, *p, 8);
    return (__builtin_bswap64(x) | 1) << (at % 8);
}

/* Omega code of k (1 <= k < 2^40): returns the length, the code in the low bits. */
static inline int qt_omega_code(uint64_t k, uint64_t *code)
{
    uint64_t c = 0;
    int len = 1;
    while (k > 1) {
        int nb = 64 - __builtin_clzll(k);
        c |= k << len;
        len += nb;
        k = (uint64_t)(nb - 1);
    }
    *code = c;
    return len;
}

static inline int qt_omega_len(uint64_t k)
{
    uint64_t c;
    return qt_omega_code(k, &c);
}

typedef struct {
    const uint8_t *start, *p, *end;
    uint64_t buf;    /* the top `cnt` bits are the next stream bits */
    int cnt;
    size_t phantom;  /* zero bytes fed after `end` */
} qt_bitreader;

static inline void qt_br_init(qt_bitreader *r, const uint8_t *buf, size_t len)
{
    r->start = r->p = buf;
    r->end = buf + len;
    r->buf = 0;
    r->cnt = 0;
    r->phantom = 0;
}

/* Ensures at least 56 bits are buffered (zeros past the end). */
static inline void qt_br_refill(qt_bitreader *r)
{
    if (r->end - r->p >= 8) {
        /* Branch-free refill, valid for any cnt < 64 (no test on cnt: that branch would
         * mispredict every few symbols): OR in 8 big-endian bytes, advance by the whole
         * bytes that fit; a partial byte's bits are re-ORed (same values) next time. */
        uint64_t v;
        memcpy(&v, r->p, 8);
        v = __builtin_bswap64(v);
        r->buf |= v >> r->cnt;
        r->p += (63 - r->cnt) >> 3;
        r->cnt |= 56;
    } else {
        while (r->cnt <= 56) {
            uint64_t byte = 0;
            if (r->p < r->end)
                byte = *r->p++;
            else
                r->phantom++;
            r->buf |= byte << (56 - r->cnt);
            r->cnt += 8;
        }
    }
}

/* The next n bits (1..56) without consuming them; call qt_br_refill first. */
static inline uint64_t qt_br_peek(const qt_bitreader *r, int n) { return r->buf >> (64 - n); }

static inline void qt_br_skip(qt_bitreader *r, int n)
{
    r->buf <<= n;
    r->cnt -= n;
}

/* Reads n bits (1..56). */
static inline uint64_t qt_br_get(qt_bitreader *r, int n)
{
    qt_br_refill(r);
    uint64_t v = qt_br_peek(r, n);
    qt_br_skip(r, n);
    return v;
}

/* Bits consumed so far (those past the end included). */
static inline uint64_t qt_br_used(const qt_bitreader *r)
{
    return 8 * ((uint64_t)(r->p - r->start) + r->phantom) - (uint64_t)r->cnt;
}

/* Reads one omega code into *k; -1 if it encodes a value >= 2^41 (not a stream of ours). */
static inline int qt_br_omega(qt_bitreader *r, uint64_t *k)
{
    uint64_t v = 1;
    for (;;) {
        qt_br_refill(r);
        if (!(r->buf >> 63)) {
            qt_br_skip(r, 1);
            *k = v;
            return 0;
        }
        if (v >= 40) return -1;
        int len = (int)v + 1;
        v = qt_br_peek(r, len);
        qt_br_skip(r, len);
    }
}

/* After the last symbol: the stream must end exactly at the length's last byte, with
 * zero padding. 0, QT_CODEC_ETRUNC (read past the end) or QT_CODEC_ECORRUPT. */
static inline int qt_br_finish(qt_bitreader *r, size_t len)
{
    uint64_t used = qt_br_used(r);
    if (used > 8 * (uint64_t)len) return QT_CODEC_ETRUNC;
    if ((used + 7) / 8 != len) return QT_CODEC_ECORRUPT; /* trailing bytes */
    int pad = (int)(8 * len - used);
    if (pad > 0) {
        qt_br_refill(r);
        if (qt_br_peek(r, pad) != 0) return QT_CODEC_ECORRUPT;
    }
    return 0;
}

#endif
