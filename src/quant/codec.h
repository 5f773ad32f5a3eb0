/* codec.h — gradient codecs over contiguous float slices (DESIGN.md, `codec`).
 *
 * A codec turns a slice of the gradient arena into bytes (encode) and adds the decoded
 * values into a float buffer (decode_add). Codecs with error feedback (ecq, onebit,
 * topk) read and update a residual slice of the same length (a slice of the residual
 * arena). Stochastic rounding draws from Philox keyed by (seed, step, rank, element
 * index), where the element index is `elem_offset + i` (the slice's offset in the arena),
 * so the CPU and CUDA encoders emit the same bytes for the same inputs.
 *
 * The public API below is the contract src/dist is written against: extend it, but do
 * not change these signatures. src/quant depends only on src/core.
 */
#ifndef QT_QUANT_CODEC_H
#define QT_QUANT_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    QT_CODEC_NONE = 0, /* fp32 pass-through */
    QT_CODEC_FP16,
    QT_CODEC_BF16,
    QT_CODEC_QSGD,
    QT_CODEC_ECQ,
    QT_CODEC_ONEBIT,
    QT_CODEC_TERNGRAD,
    QT_CODEC_TOPK,
    QT_CODEC_COUNT
} qt_codec_method;

typedef enum { QT_ENC_FIXED = 0, QT_ENC_ELIAS, QT_ENC_HUFFMAN, QT_ENC_COUNT } qt_codec_encoding;
typedef enum { QT_NORM_MAX = 0, QT_NORM_L2 } qt_codec_norm;

/* Settings of one codec ([quant] section; papers.md has the conventions). */
typedef struct {
    qt_codec_method method;
    qt_codec_encoding encoding; /* qsgd, ecq */
    qt_codec_norm norm;         /* qsgd, ecq */
    int levels;                 /* s: non-zero levels per sign (qsgd, ecq); from bits: 2^(b-1)-1 */
    int bucket;                 /* d: elements per bucket (qsgd, ecq, onebit, terngrad) */
    float alpha, beta;          /* ecq compensation and decay */
    float topk_ratio;           /* topk: fraction of elements sent, (0, 1] */
    float clip_sigma;           /* terngrad: clip at c*sigma, 0 = off */
    uint64_t seed;              /* stochastic rounding seed (run seed) */
} qt_codec_params;

/* Error codes (negative). */
enum {
    QT_CODEC_OK = 0,
    QT_CODEC_EINVAL = -1,    /* bad parameters */
    QT_CODEC_ENOSPC = -2,    /* output capacity too small */
    QT_CODEC_ETRUNC = -3,    /* input ends early */
    QT_CODEC_ECORRUPT = -4   /* input bytes are not a valid stream */
};
const char *qt_codec_strerror(int err);

/* Fills defaults (as papers.md: qsgd 4 bits, bucket 512, max norm, fixed encoding).
 * ecq: the same plus alpha 1.0, beta 0.8; terngrad: s = 1, bucket 128, no clipping;
 * onebit: bucket 512; topk: ratio 0.01, varint indices; seed 0. */
void qt_codec_params_default(qt_codec_params *p, qt_codec_method m);
/* 0 if the params are usable, else QT_CODEC_EINVAL (qt_codec_params_problem says why). */
int qt_codec_params_check(const qt_codec_params *p);
/* True if the codec keeps a residual (error feedback): ecq, onebit, topk. */
int qt_codec_has_residual(const qt_codec_params *p);

/* Upper bound on encode's output size for n elements (0 for unusable params). Exact for
 * the fixed-size layouts; elias and huffman streams that would be longer fall back to
 * fixed packing, so their bound is the fixed size; topk assumes the longest index codes. */
size_t qt_codec_max_bytes(const qt_codec_params *p, size_t n);

/* Encodes g[0..n) into out (capacity cap). residual: n floats, read and updated for
 * codecs with error feedback, ignored (may be NULL) otherwise; NULL for ecq/onebit/topk
 * means no error feedback (a zero residual, nothing stored). step and rank key the RNG;
 * elem_offset is the slice's first element index in the arena. On success writes the
 * exact size to *out_bytes and returns 0. With cap >= qt_codec_max_bytes(p, n) it never
 * returns QT_CODEC_ENOSPC; after a failed encode the residual may be partly updated.
 * The bytes are a pure function of (p, g, residual, n, step, rank, elem_offset): the
 * CUDA encoder must emit the same (arithmetic rules in src/quant/quantizer.h). */
int qt_codec_encode(const qt_codec_params *p, const float *g, float *residual, size_t n,
                    uint32_t step, uint32_t rank, uint64_t elem_offset,
                    uint8_t *out, size_t cap, size_t *out_bytes);

/* Decodes bytes (exactly `len` of them) holding n elements and does out[i] += scale * v[i].
 * Malformed or truncated input returns an error and never reads past in[len) or writes
 * past out[n). On an error detected inside the payload (an invalid code, a stream that
 * ends early) out[0..n) may already hold part of the sum: discard it. Header and length
 * errors are found before out is touched. Sparse decoders skip elements whose value is 0
 * (out[i] unchanged rather than out[i] + 0: they differ only for out[i] == -0). */
int qt_codec_decode_add(const qt_codec_params *p, const uint8_t *in, size_t len, size_t n,
                        float scale, float *out);

/* ---- Additions beyond the first contract (helpers for config, tests, tools) ---- */

/* Every stream starts with this many header bytes (magic, version, method, encoding,
 * flags, levels, bucket, n: see src/quant/wire.h). decode_add rejects a header that does
 * not match its own params and n. */
#define QT_CODEC_HEADER_BYTES 16
/* Largest levels (s) for the fixed and elias encodings; huffman allows s <= 127. */
#define QT_CODEC_MAX_LEVELS 32767
#define QT_CODEC_MAX_HUFFMAN_LEVELS 127

/* Names as written in config files: none fp16 bf16 qsgd ecq onebit terngrad topk;
 * fixed elias huffman; max l2. *_from_name returns 0, or QT_CODEC_EINVAL for an unknown
 * name (the caller prints the error with the file:line it knows). */
const char *qt_codec_method_name(qt_codec_method m);
const char *qt_codec_encoding_name(qt_codec_encoding e);
const char *qt_codec_norm_name(qt_codec_norm nm);
int qt_codec_method_from_name(const char *name, qt_codec_method *m);
int qt_codec_encoding_from_name(const char *name, qt_codec_encoding *e);
int qt_codec_norm_from_name(const char *name, qt_codec_norm *nm);

/* quant.bits <-> quant.levels (papers.md): s = 2^(b-1) - 1 for b in [2, 16] (else -1);
 * b = ceil(log2(2s + 1)) for s >= 1 (else -1). */
int qt_codec_levels_from_bits(int bits);
int qt_codec_bits_from_levels(int levels);

/* NULL when p is usable, else a short reason ("levels must be in [1, 32767]") for the
 * config layer's error line. qt_codec_params_check() is this as an error code. */
const char *qt_codec_params_problem(const qt_codec_params *p);

/* Nominal payload bits per element of the fixed-size layouts, header excluded:
 * qsgd/ecq/terngrad fixed b + 32/d, onebit 1 + 64/d, fp16/bf16 16, none 32; for the
 * data-dependent ones (elias, huffman, topk) the worst case that max_bytes assumes. */
double qt_codec_nominal_bits(const qt_codec_params *p);

/* Convenience for tools and tests: encodes g into a scratch buffer and decodes it, so
 * values[i] = v[i], the values decode_add would add with scale 1 (values is overwritten,
 * not accumulated). Updates residual exactly as encode does. */
int qt_codec_quantize(const qt_codec_params *p, const float *g, float *residual, size_t n,
                      uint32_t step, uint32_t rank, uint64_t elem_offset, float *values);

#endif
