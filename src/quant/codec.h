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

/* Fills defaults (as papers.md: qsgd 4 bits, bucket 512, max norm, fixed encoding). */
void qt_codec_params_default(qt_codec_params *p, qt_codec_method m);
/* 0 if the params are usable, else QT_CODEC_EINVAL. */
int qt_codec_params_check(const qt_codec_params *p);
/* True if the codec keeps a residual (error feedback): ecq, onebit, topk. */
int qt_codec_has_residual(const qt_codec_params *p);

/* Upper bound on encode's output size for n elements. */
size_t qt_codec_max_bytes(const qt_codec_params *p, size_t n);

/* Encodes g[0..n) into out (capacity cap). residual: n floats, read and updated for
 * codecs with error feedback, ignored (may be NULL) otherwise. step and rank key the RNG;
 * elem_offset is the slice's first element index in the arena. On success writes the
 * exact size to *out_bytes and returns 0. */
int qt_codec_encode(const qt_codec_params *p, const float *g, float *residual, size_t n,
                    uint32_t step, uint32_t rank, uint64_t elem_offset,
                    uint8_t *out, size_t cap, size_t *out_bytes);

/* Decodes bytes (exactly `len` of them) holding n elements and does out[i] += scale * v[i].
 * Malformed or truncated input returns an error and never reads past in[len) or writes
 * past out[n). */
int qt_codec_decode_add(const qt_codec_params *p, const uint8_t *in, size_t len, size_t n,
                        float scale, float *out);

#endif
