/* wire.h — internal to src/quant: the stream header every codec writes, the resolved
 * parameters of one encode/decode call, byte helpers, and the entry points each codec
 * file provides to codec.c. Not part of the public contract (codec.h is).
 *
 * Stream header (QT_CODEC_HEADER_BYTES = 16, little-endian):
 *   [0] 'Q'  [1] version (2: elias and huffman payloads of 64K+ elements in four lanes,
 *       quantizer.h; version 1 had one stream)  [2] method  [3] encoding (FIXED for methods
 *       without a choice)
 *   [4] flags: bit0 = l2 norm, bit1 = payload fell back to fixed packing (elias/huffman
 *       streams that would have been longer than fixed packing); other bits zero
 *   [5] 0    [6..7] levels s (0 where unused)   [8..11] bucket as configured (0 = the
 *   whole message is one bucket; 0 where unused)   [12..15] n (elements)
 * decode_add rebuilds the header its own params and n imply and compares it byte for byte
 * (only the fallback bit may differ), so a stream for other settings is rejected before
 * any payload byte is read.
 *
 * Float evaluation rule (shared with the CUDA twins, which must emit the same bytes):
 * every float expression in src/quant is evaluated as written, one IEEE-754 binary32 (or
 * binary64 where noted) round-to-nearest operation at a time, with no FMA contraction.
 * GCC guarantees that in ISO C mode (-std=c11 implies -ffp-contract=off; the #error below
 * refuses a GNU-mode build), clang through the STDC pragma. CUDA twins must use
 * __fmul_rn/__fadd_rn/__fdiv_rn (or -fmad=false) and IEEE division.
 */
#ifndef QT_QUANT_WIRE_H
#define QT_QUANT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/philox.h"
#include "quant/codec.h"

#if defined(__GNUC__) && !defined(__clang__) && !defined(__STRICT_ANSI__)
#error "src/quant must be compiled in ISO C mode (-std=c11): GCC then does no FMA contraction"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "src/quant writes little-endian streams with memcpy: port the byte helpers first"
#endif

#define QT_WIRE_MAGIC 0x51u /* 'Q' */
#define QT_WIRE_VERSION 2u
#define QT_WIRE_FLAG_L2 0x01u
#define QT_WIRE_FLAG_FALLBACK 0x02u

/* One call's parameters, resolved against n: what the header and payload depend on. */
typedef struct {
    qt_codec_method method;
    qt_codec_encoding enc; /* canonical: FIXED where the method has no choice */
    qt_codec_norm norm;    /* canonical: MAX where the method has no choice */
    int s;                 /* levels (qsgd/ecq: p->levels, terngrad: 1, others 0) */
    int b;                 /* bits of one fixed code, ceil(log2(2s+1)) (1 for onebit) */
    uint32_t bucket;       /* as configured (written to the header) */
    size_t n;              /* elements */
    size_t d;              /* effective bucket: bucket, or n when bucket is 0 or > n */
    size_t nb;             /* buckets: ceil(n / d), 0 when n == 0 */
    size_t k;              /* topk: elements sent */
} qt_wire;

/* Fills w from p and n; QT_CODEC_EINVAL if p is unusable or n does not fit the header. */
int qt_wire_resolve(const qt_codec_params *p, size_t n, qt_wire *w);
/* Writes the 16-byte header for w with extra flag bits (QT_WIRE_FLAG_FALLBACK or 0). */
void qt_wire_put_header(const qt_wire *w, unsigned extra_flags, uint8_t *out);
/* Checks in[0..16) against w; on success stores the extra flag bits in *extra_flags. */
int qt_wire_check_header(const qt_wire *w, const uint8_t *in, size_t len, unsigned *extra_flags);

static inline float qt_load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}
static inline void qt_store_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }
static inline uint32_t qt_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void qt_store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t qt_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float qt_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* Bytes of n codes of b bits packed back to back. */
static inline size_t qt_packed_bytes(size_t n, int b) { return (n * (size_t)b + 7) / 8; }

/* ---- Per-codec entry points (payload = the bytes after the header) ---- */

/* float16.c: none, fp16, bf16 */
size_t qt_float_payload_bytes(const qt_wire *w);
void qt_float_encode(const qt_wire *w, const float *g, uint8_t *payload);
void qt_float_decode(const qt_wire *w, const uint8_t *payload, float scale, float *out);
uint16_t qt_f32_to_f16(float x);
float qt_f16_to_f32(uint16_t h);
uint16_t qt_f32_to_bf16(float x);
float qt_bf16_to_f32(uint16_t h);

/* fixed.c, elias.c, huffman.c: the level codecs (qsgd, ecq, terngrad). The quantizer
 * arguments are bundled in qt_quantizer (quantizer.h). */
struct qt_quantizer;
size_t qt_levels_fixed_bytes(const qt_wire *w); /* scales + packed codes */
int qt_levels_encode(const qt_wire *w, const struct qt_quantizer *qz, uint8_t *payload,
                     size_t cap, size_t *payload_bytes, unsigned *extra_flags);
int qt_levels_decode(const qt_wire *w, unsigned extra_flags, const uint8_t *payload,
                     size_t len, float scale, float *out);

/* onebit.c */
size_t qt_onebit_payload_bytes(const qt_wire *w);
void qt_onebit_encode(const qt_wire *w, const float *g, float *residual, uint8_t *payload);
int qt_onebit_decode(const qt_wire *w, const uint8_t *payload, float scale, float *out);

/* topk.c */
size_t qt_topk_max_payload_bytes(const qt_wire *w);
int qt_topk_encode(const qt_wire *w, const float *g, float *residual, uint8_t *payload,
                   size_t cap, size_t *payload_bytes);
int qt_topk_decode(const qt_wire *w, const uint8_t *payload, size_t len, float scale,
                   float *out);

#endif
