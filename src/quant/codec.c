/* codec.c — the public codec API (codec.h): names, defaults and checks of the settings,
 * the stream header (wire.h), sizes, and dispatch to one file per codec.
 * Invariant: every stream is header + payload; encode reports its exact size, which
 * never exceeds qt_codec_max_bytes(); decode_add accepts exactly that size.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "quant/bitio.h"
#include "quant/quantizer.h"

static const char *const method_names[QT_CODEC_COUNT] = {
    "none", "fp16", "bf16", "qsgd", "ecq", "onebit", "terngrad", "topk"};
static const char *const encoding_names[QT_ENC_COUNT] = {"fixed", "elias", "huffman"};
static const char *const norm_names[2] = {"max", "l2"};

const char *qt_codec_method_name(qt_codec_method m)
{
    return (unsigned)m < QT_CODEC_COUNT ? method_names[m] : "?";
}
const char *qt_codec_encoding_name(qt_codec_encoding e)
{
    return (unsigned)e < QT_ENC_COUNT ? encoding_names[e] : "?";
}
const char *qt_codec_norm_name(qt_codec_norm nm)
{
    return (unsigned)nm < 2 ? norm_names[nm] : "?";
}

static int find_name(const char *const *names, int count, const char *name)
{
    for (int i = 0; name && i < count; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int qt_codec_method_from_name(const char *name, qt_codec_method *m)
{
    int i = find_name(method_names, QT_CODEC_COUNT, name);
    if (i < 0) return QT_CODEC_EINVAL;
    *m = (qt_codec_method)i;
    return QT_CODEC_OK;
}
int qt_codec_encoding_from_name(const char *name, qt_codec_encoding *e)
{
    int i = find_name(encoding_names, QT_ENC_COUNT, name);
    if (i < 0) return QT_CODEC_EINVAL;
    *e = (qt_codec_encoding)i;
    return QT_CODEC_OK;
}
int qt_codec_norm_from_name(const char *name, qt_codec_norm *nm)
{
    int i = find_name(norm_names, 2, name);
    if (i < 0) return QT_CODEC_EINVAL;
    *nm = (qt_codec_norm)i;
    return QT_CODEC_OK;
}

int qt_codec_levels_from_bits(int bits)
{
    return bits >= 2 && bits <= 16 ? (1 << (bits - 1)) - 1 : -1;
}

int qt_codec_bits_from_levels(int levels)
{
    if (levels < 1) return -1;
    int b = 0;
    while ((1L << b) < 2L * levels + 1) b++;
    return b;
}

const char *qt_codec_strerror(int err)
{
    switch (err) {
    case QT_CODEC_OK: return "ok";
    case QT_CODEC_EINVAL: return "invalid codec parameters";
    case QT_CODEC_ENOSPC: return "output buffer too small";
    case QT_CODEC_ETRUNC: return "stream truncated";
    case QT_CODEC_ECORRUPT: return "stream corrupt or encoded with other settings";
    default: return "unknown codec error";
    }
}

void qt_codec_params_default(qt_codec_params *p, qt_codec_method m)
{
    memset(p, 0, sizeof *p);
    p->method = m;
    p->encoding = QT_ENC_FIXED;
    p->norm = QT_NORM_MAX;
    p->levels = 7;  /* 4 bits */
    p->bucket = 512;
    p->alpha = 1.0f; /* ecq: papers.md, the third-party defaults */
    p->beta = 0.8f;
    p->topk_ratio = 0.01f;
    p->clip_sigma = 0.0f;
    if (m == QT_CODEC_TERNGRAD) {
        p->levels = 1;
        p->bucket = 128; /* papers.md: bucket 128 for b <= 2 */
    }
}

static bool is_level_method(qt_codec_method m)
{
    return m == QT_CODEC_QSGD || m == QT_CODEC_ECQ || m == QT_CODEC_TERNGRAD;
}

const char *qt_codec_params_problem(const qt_codec_params *p)
{
    if (!p) return "no parameters";
    if ((unsigned)p->method >= QT_CODEC_COUNT) return "unknown method";
    qt_codec_method m = p->method;
    bool quantizes = m == QT_CODEC_QSGD || m == QT_CODEC_ECQ;
    if (is_level_method(m) || m == QT_CODEC_TOPK) {
        if ((unsigned)p->encoding >= QT_ENC_COUNT) return "unknown encoding";
        if (m == QT_CODEC_TOPK && p->encoding == QT_ENC_HUFFMAN)
            return "topk codes its indices with fixed (varint) or elias, not huffman";
    }
    if (quantizes) {
        if (p->norm != QT_NORM_MAX && p->norm != QT_NORM_L2) return "unknown norm";
        if (p->levels < 1 || p->levels > QT_CODEC_MAX_LEVELS)
            return "levels must be in [1, 32767] (bits in [2, 16])";
        if (p->encoding == QT_ENC_HUFFMAN && p->levels > QT_CODEC_MAX_HUFFMAN_LEVELS)
            return "huffman needs levels <= 127 (bits <= 8)";
    }
    if ((is_level_method(m) || m == QT_CODEC_ONEBIT) && p->bucket < 0)
        return "bucket must be >= 0 (0 = the whole slice)";
    if (m == QT_CODEC_ECQ) {
        if (!isfinite(p->alpha)) return "alpha must be finite";
        if (!(p->beta >= 0.0f && p->beta <= 1.0f)) return "beta must be in [0, 1]";
    }
    if (m == QT_CODEC_TOPK && !(p->topk_ratio > 0.0f && p->topk_ratio <= 1.0f))
        return "topk_ratio must be in (0, 1]";
    if (m == QT_CODEC_TERNGRAD && !(p->clip_sigma >= 0.0f && isfinite(p->clip_sigma)))
        return "clip_sigma must be >= 0 (0 = no clipping)";
    return NULL;
}

int qt_codec_params_check(const qt_codec_params *p)
{
    return qt_codec_params_problem(p) ? QT_CODEC_EINVAL : QT_CODEC_OK;
}

int qt_codec_has_residual(const qt_codec_params *p)
{
    return p->method == QT_CODEC_ECQ || p->method == QT_CODEC_ONEBIT ||
           p->method == QT_CODEC_TOPK;
}

static size_t topk_count(float ratio, size_t n)
{
    if (n == 0) return 0;
    double k = ceil((double)ratio * (double)n);
    if (k < 1.0) return 1;
    if (k > (double)n) return n;
    return (size_t)k;
}

int qt_wire_resolve(const qt_codec_params *p, size_t n, qt_wire *w)
{
    if (qt_codec_params_problem(p) || n > UINT32_MAX) return QT_CODEC_EINVAL;
    memset(w, 0, sizeof *w);
    qt_codec_method m = p->method;
    w->method = m;
    w->enc = is_level_method(m) || m == QT_CODEC_TOPK ? p->encoding : QT_ENC_FIXED;
    w->norm = m == QT_CODEC_QSGD || m == QT_CODEC_ECQ ? p->norm : QT_NORM_MAX;
    w->s = m == QT_CODEC_TERNGRAD ? 1 : (m == QT_CODEC_QSGD || m == QT_CODEC_ECQ ? p->levels : 0);
    w->b = w->s ? qt_codec_bits_from_levels(w->s) : (m == QT_CODEC_ONEBIT ? 1 : 0);
    w->n = n;
    if (is_level_method(m) || m == QT_CODEC_ONEBIT) {
        w->bucket = (uint32_t)p->bucket;
        w->d = p->bucket == 0 || (size_t)p->bucket > n ? n : (size_t)p->bucket;
        if (w->d == 0) w->d = 1;
        w->nb = (n + w->d - 1) / w->d;
    }
    if (m == QT_CODEC_TOPK) w->k = topk_count(p->topk_ratio, n);
    return QT_CODEC_OK;
}

void qt_wire_put_header(const qt_wire *w, unsigned extra_flags, uint8_t *out)
{
    out[0] = QT_WIRE_MAGIC;
    out[1] = QT_WIRE_VERSION;
    out[2] = (uint8_t)w->method;
    out[3] = (uint8_t)w->enc;
    out[4] = (uint8_t)((w->norm == QT_NORM_L2 ? QT_WIRE_FLAG_L2 : 0) | extra_flags);
    out[5] = 0;
    out[6] = (uint8_t)w->s;
    out[7] = (uint8_t)(w->s >> 8);
    qt_store_u32(out + 8, w->bucket);
    qt_store_u32(out + 12, (uint32_t)w->n);
}

int qt_wire_check_header(const qt_wire *w, const uint8_t *in, size_t len, unsigned *extra_flags)
{
    if (len < QT_CODEC_HEADER_BYTES) return QT_CODEC_ETRUNC;
    uint8_t want[QT_CODEC_HEADER_BYTES];
    qt_wire_put_header(w, 0, want);
    unsigned extra = in[4] & QT_WIRE_FLAG_FALLBACK;
    bool fallback_ok = is_level_method(w->method) && w->enc != QT_ENC_FIXED;
    if (extra && !fallback_ok) return QT_CODEC_ECORRUPT;
    if (in[4] != (want[4] | extra)) return QT_CODEC_ECORRUPT;
    if (memcmp(in, want, 4) != 0 || memcmp(in + 5, want + 5, QT_CODEC_HEADER_BYTES - 5) != 0)
        return QT_CODEC_ECORRUPT;
    *extra_flags = extra;
    return QT_CODEC_OK;
}

static size_t payload_max(const qt_wire *w)
{
    switch (w->method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16: return qt_float_payload_bytes(w);
    case QT_CODEC_ONEBIT: return qt_onebit_payload_bytes(w);
    case QT_CODEC_TOPK: return qt_topk_max_payload_bytes(w);
    default: return qt_levels_fixed_bytes(w); /* elias/huffman fall back to it */
    }
}

size_t qt_codec_max_bytes(const qt_codec_params *p, size_t n)
{
    qt_wire w;
    if (qt_wire_resolve(p, n, &w) != QT_CODEC_OK) return 0;
    return QT_CODEC_HEADER_BYTES + payload_max(&w);
}

double qt_codec_nominal_bits(const qt_codec_params *p)
{
    enum { N = 1 << 20 }; /* a large slice: per-element costs, header negligible */
    qt_wire w;
    if (qt_wire_resolve(p, N, &w) != QT_CODEC_OK) return 0.0;
    return 8.0 * (double)payload_max(&w) / (double)N;
}

int qt_codec_encode(const qt_codec_params *p, const float *g, float *residual, size_t n,
                    uint32_t step, uint32_t rank, uint64_t elem_offset, uint8_t *out,
                    size_t cap, size_t *out_bytes)
{
    qt_wire w;
    if (qt_wire_resolve(p, n, &w) != QT_CODEC_OK || !out_bytes || !out || (n && !g))
        return QT_CODEC_EINVAL;
    if (cap < QT_CODEC_HEADER_BYTES) return QT_CODEC_ENOSPC;
    uint8_t *payload = out + QT_CODEC_HEADER_BYTES;
    size_t pcap = cap - QT_CODEC_HEADER_BYTES, pbytes = 0;
    unsigned extra = 0;
    int rc = QT_CODEC_OK;
    switch (w.method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16:
        pbytes = qt_float_payload_bytes(&w);
        if (pcap < pbytes) return QT_CODEC_ENOSPC;
        qt_float_encode(&w, g, payload);
        break;
    case QT_CODEC_ONEBIT:
        pbytes = qt_onebit_payload_bytes(&w);
        if (pcap < pbytes) return QT_CODEC_ENOSPC;
        qt_onebit_encode(&w, g, residual, payload);
        break;
    case QT_CODEC_TOPK: rc = qt_topk_encode(&w, g, residual, payload, pcap, &pbytes); break;
    default: {
        if (n == 0) break; /* empty payload for every encoding */
        qt_quantizer qz;
        qt_quantizer_init(&qz, p, &w, g, residual, step, rank, elem_offset);
        rc = qt_levels_encode(&w, &qz, payload, pcap, &pbytes, &extra);
        break;
    }
    }
    if (rc != QT_CODEC_OK) return rc;
    qt_wire_put_header(&w, extra, out);
    *out_bytes = QT_CODEC_HEADER_BYTES + pbytes;
    return QT_CODEC_OK;
}

int qt_codec_decode_add(const qt_codec_params *p, const uint8_t *in, size_t len, size_t n,
                        float scale, float *out)
{
    qt_wire w;
    if (qt_wire_resolve(p, n, &w) != QT_CODEC_OK || (len && !in) || (n && !out))
        return QT_CODEC_EINVAL;
    unsigned extra = 0;
    int rc = qt_wire_check_header(&w, in, len, &extra);
    if (rc != QT_CODEC_OK) return rc;
    const uint8_t *payload = in + QT_CODEC_HEADER_BYTES;
    size_t plen = len - QT_CODEC_HEADER_BYTES;
    size_t want;
    switch (w.method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16:
        want = qt_float_payload_bytes(&w);
        if (plen != want) return plen < want ? QT_CODEC_ETRUNC : QT_CODEC_ECORRUPT;
        qt_float_decode(&w, payload, scale, out);
        return QT_CODEC_OK;
    case QT_CODEC_ONEBIT:
        want = qt_onebit_payload_bytes(&w);
        if (plen != want) return plen < want ? QT_CODEC_ETRUNC : QT_CODEC_ECORRUPT;
        return qt_onebit_decode(&w, payload, scale, out);
    case QT_CODEC_TOPK: return qt_topk_decode(&w, payload, plen, scale, out);
    default:
        if (n == 0) return plen == 0 ? QT_CODEC_OK : QT_CODEC_ECORRUPT;
        return qt_levels_decode(&w, extra, payload, plen, scale, out);
    }
}

int qt_codec_quantize(const qt_codec_params *p, const float *g, float *residual, size_t n,
                      uint32_t step, uint32_t rank, uint64_t elem_offset, float *values)
{
    size_t cap = qt_codec_max_bytes(p, n), got = 0;
    if (cap == 0 || (n && !values)) return QT_CODEC_EINVAL;
    uint8_t *buf = qt_malloc(cap);
    int rc = qt_codec_encode(p, g, residual, n, step, rank, elem_offset, buf, cap, &got);
    if (rc == QT_CODEC_OK) {
        if (n) memset(values, 0, n * sizeof *values);
        rc = qt_codec_decode_add(p, buf, got, n, 1.0f, values);
    }
    free(buf);
    return rc;
}
