/* quantizer.h — internal to src/quant: QSGD's stochastic quantizer Q_s, shared by qsgd,
 * ecq (with error compensation) and terngrad (s = 1, max norm, optional clipping).
 *
 * The exact definition (the CUDA twin must reproduce it bit for bit; see wire.h for the
 * float evaluation rule). For a message g[0..n) at arena offset `off`, bucket k covers
 * elements [k*d, min((k+1)*d, n)). Per element the input is
 *   qsgd:      x = g[i]
 *   ecq:       x = g[i] + alpha*h[i]        (h the residual; absent h counts as 0)
 *   terngrad:  x = g[i], magnitude clipped to m (below)
 * Bucket scale m (a float):
 *   max: the largest |x| (compared as the bit patterns of |x|, so any NaN or Inf is seen)
 *   l2:  sqrt of sum x^2 accumulated in binary64: element j of the bucket (j from the
 *        bucket start) adds (double)x*(double)x into lane j % 16, in index order; then
 *        lanes combine as a tree, lane[i] += lane[i+w] for w = 8, 4, 2, 1; m = (float)sqrt
 *   terngrad: c = (float)(clip_sigma * sigma) with sigma = sqrt(max(0, SS/m' - (S/m')^2))
 *        from binary64 sums S, SS of g (same lanes and tree, m' the bucket length); no
 *        clipping when clip_sigma == 0 or sigma == 0; m = min(max |g|, c). Clipping |g|
 *        to m is clipping it to c: min(|g|, c) == min(|g|, m) as every |g| <= max |g|.
 *   If the bucket holds a NaN or an Inf, m = NaN (0x7fc00000): every decoded value of
 *   that bucket is then NaN, so a bad gradient cannot vanish silently.
 * Level of element i (s = levels, r = Philox word of arena index off + i, keyed
 * qt_philox_make_key(seed, QT_RNG_CODEC), counter (block, step, rank) as philox.h says):
 *   if m == 0: q = 0; else
 *   a = |x| / m;  t = a * (float)s;  if !(t < s) t = s;   (also catches NaN)
 *   l = (int)t;   p = t - (float)l;  u = qt_u32_to_unit(r) = (float)(r >> 8) * 2^-24;
 *   |q| = l + (u < p);   q = x < 0 ? -|q| : |q|         (terngrad: |x| -> min(|g|, m))
 * Dequantized value: v = (float)q * unit with unit = m / (float)s.
 * ECQ residual update: h[i] = beta*h[i] + (g[i] - v), two products/sums as written.
 */
#ifndef QT_QUANT_QUANTIZER_H
#define QT_QUANT_QUANTIZER_H

#include "quant/wire.h"

typedef struct qt_quantizer {
    const qt_wire *w;
    const float *g;
    float *h;           /* ecq residual, NULL for none */
    float alpha, beta;  /* ecq */
    float clip_sigma;   /* terngrad, 0 = off */
    bool ecq, terngrad;
    qt_philox_key key;
    uint32_t step, rank;
    uint64_t off;       /* arena index of g[0] */
} qt_quantizer;

void qt_quantizer_init(qt_quantizer *qz, const qt_codec_params *p, const qt_wire *w,
                       const float *g, float *residual, uint32_t step, uint32_t rank,
                       uint64_t off);

/* Scale m of the bucket [i0, i0+len) (for terngrad after clipping). */
float qt_quant_scale(const qt_quantizer *qz, size_t i0, size_t len);

/* Levels q[0..len) of elements [i0, i0+len), all inside one bucket of scale m. Updates
 * the ecq residual of those elements when `update` (a first pass that only measures the
 * stream passes false: the levels are a pure function of g, h and the key). */
void qt_quant_range(const qt_quantizer *qz, size_t i0, size_t len, float m, bool update,
                    int16_t *q);

/* The ecq residual update of elements [i0, i0+len) (one bucket, scale m) from their
 * levels q: what qt_quant_range does when `update`. No-op for other methods. */
void qt_quant_residual(const qt_quantizer *qz, size_t i0, size_t len, float m, const int16_t *q);

/* The 64 Philox words of arena indices [4*block0, 4*block0 + 64) for (step, rank):
 * out[4j + lane] = lane `lane` of block block0 + j. Vectorized; equals qt_philox_block. */
void qt_philox_window(qt_philox_key key, uint64_t block0, uint32_t step, uint32_t rank,
                      uint32_t out[64]);

/* Adds the dequantized levels q[0..len) of elements [i0, i0+len) to out (scaled by f):
 * out[i0+j] += f * ((float)q[j] * unit_k). scales: the payload's f32 scale array. */
void qt_levels_add(const qt_wire *w, const uint8_t *scales, const int16_t *q, size_t i0,
                   size_t len, float f, float *out);

/* The entropy-coded level streams (elias.c, huffman.c), encoded in two passes over the
 * levels in chunks (fixed.c): `count` measures the exact stream length, then, unless it
 * is longer than fixed packing, `write` emits it. Chunks come in index order; huffman
 * chunks start at multiples of its group size. decode: adds the levels to out, with the
 * scale array of the payload.
 *
 * Lanes: a message of at least QT_LANES_MIN_N elements is coded as QT_LANES independent
 * streams over consecutive element ranges, lane j holding elements [start[j], start[j+1])
 * (qt_lane_starts), so that a decoder interleaves them: decoding one stream is a serial
 * chain of table lookups, each waiting for the previous code's length, and four chains
 * keep a core busy where one leaves it idle most of the time. Smaller messages are one
 * lane. Each lane is a whole stream of its own (elias: gaps count from the lane's start
 * and it ends with its own terminator; huffman: one code for the message, its table at
 * the start of lane 0), padded to a byte. Payload after the scales: the byte lengths of
 * lanes 0..L-2 as u32 little-endian, then the lanes' bytes in order (the last lane's
 * length is what remains). Lane starts are multiples of QT_LANE_ALIGN: a multiple of 8
 * (fixed packing's groups, for the fallback), of every huffman group size (1, 2, 3, 5) and
 * of the encoder's chunk, so no group or chunk straddles two lanes. */
#include "quant/bitio.h"

enum { QT_LANES = 4, QT_LANES_MIN_N = 1 << 16, QT_LANE_ALIGN = 3840 };

/* Lane starts of an n-element message: start[0] = 0 < start[1] < ... < start[L] = n with
 * L = 1 or QT_LANES (returned); for n >= QT_LANES_MIN_N every lane holds elements. */
static inline int qt_lane_starts(size_t n, size_t start[QT_LANES + 1])
{
    if (n < QT_LANES_MIN_N) {
        start[0] = 0;
        start[1] = n;
        return 1;
    }
    size_t per = (n + QT_LANES - 1) / QT_LANES;
    per = (per + QT_LANE_ALIGN - 1) / QT_LANE_ALIGN * QT_LANE_ALIGN;
    for (int j = 0; j < QT_LANES; j++) start[j] = (size_t)j * per;
    start[QT_LANES] = n;
    return QT_LANES;
}

/* One lane of a stream as the decoders see it. */
typedef struct {
    const uint8_t *bytes;
    size_t len;        /* bytes */
    size_t i0, i1;     /* its elements [i0, i1) */
} qt_lane;

typedef struct {
    int s, tab;     /* levels; those with table codes: |v| <= tab */
    uint64_t last;  /* 1-based position of the last non-zero so far (lane start before) */
    uint64_t bits;  /* the lane's stream bits so far (count pass) */
    uint32_t lc[2 * 255 + 1], gc[256];
    uint8_t ll[2 * 255 + 1], gl[256];
    uint32_t llz[2 * 255 + 1]; /* ll, but 0 for level 0 (summed over whole blocks) */
} qt_elias_enc;
void qt_elias_enc_init(qt_elias_enc *e, const qt_wire *w);
/* Starts the lane whose first element is i0 (both passes). */
void qt_elias_lane_begin(qt_elias_enc *e, size_t i0);
void qt_elias_count(qt_elias_enc *e, const int16_t *q, size_t i0, size_t len);
/* Bits of the lane counted so far plus its terminator; the lane ends before element i1. */
uint64_t qt_elias_lane_bits(const qt_elias_enc *e, size_t i1);
void qt_elias_write(qt_elias_enc *e, qt_bitwriter *bw, const int16_t *q, size_t i0, size_t len);
/* Writes the lane's terminator (the lane ends before element i1). */
void qt_elias_lane_finish(qt_elias_enc *e, qt_bitwriter *bw, size_t i1);
int qt_elias_decode_levels(const qt_wire *w, const uint8_t *scales, const qt_lane *lanes,
                           int nlanes, float f, float *out);

typedef struct {
    int s, a, g, m;  /* levels, 2s+1, group size, alphabet a^g */
    uint64_t count[256];                 /* the message's symbol counts */
    uint32_t lane_count[QT_LANES][256];  /* per lane (a lane has < 2^32 symbols) */
    uint8_t len[256];
    uint32_t code[256];
} qt_huffman_enc;
void qt_huffman_enc_init(qt_huffman_enc *h, const qt_wire *w);
void qt_huffman_count(qt_huffman_enc *h, int lane, const int16_t *q, size_t len);
/* Builds the code from the counts; returns the table's bits (written at lane 0's start). */
uint64_t qt_huffman_build(qt_huffman_enc *h);
uint64_t qt_huffman_lane_bits(const qt_huffman_enc *h, int lane); /* its codes' bits */
void qt_huffman_write_table(const qt_huffman_enc *h, qt_bitwriter *bw);
void qt_huffman_write(const qt_huffman_enc *h, qt_bitwriter *bw, const int16_t *q, size_t len);
int qt_huffman_decode_levels(const qt_wire *w, const uint8_t *scales, const qt_lane *lanes,
                             int nlanes, float f, float *out);
/* Huffman symbols group g levels; returns g and the alphabet size A^g (huffman.c). */
int qt_huffman_group(int s, int *alphabet);
/* Code lengths (1..16, 0 = unused) of m <= 256 symbols with these counts, built as
 * huffman.c specifies (deterministic: a CUDA encoder reuses it for identical bytes). */
void qt_huffman_lengths(const uint64_t *count, int m, uint8_t *len);

#endif
