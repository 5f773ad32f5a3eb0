/* fuzz_decode.c — libFuzzer target for qt_codec_decode_add over every codec and encoding.
 *
 * Input: [config index][n low][n high][mode] then the stream bytes. mode bit 0 puts the
 * header a real encoder would write for (config, n) in front of the bytes (else they must
 * bring their own, which random bytes almost never do), bit 1 sets its fallback flag,
 * bit 2 adds LANE_N to n (the four-lane entropy streams start at 65536 elements).
 * The stream is copied to an exact-size buffer and decoded into exactly n floats, so ASan
 * sees any out-of-bounds access; an error code other than ETRUNC/ECORRUPT aborts.
 *
 * Built with -DQT_FUZZ_MAKE_CORPUS instead, main(dir) writes a seed corpus of valid
 * streams (one per config and size) for scripts/fuzz.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/codec.h"
#include "quant/wire.h"

typedef struct {
    qt_codec_method m;
    qt_codec_encoding e;
    qt_codec_norm nm;
    int levels, bucket;
} fuzz_cfg;

static const fuzz_cfg cfgs[] = {
    {QT_CODEC_NONE, 0, 0, 0, 0},
    {QT_CODEC_FP16, 0, 0, 0, 0},
    {QT_CODEC_BF16, 0, 0, 0, 0},
    {QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 1, 128},
    {QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_L2, 300, 100},
    {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 7, 512},
    {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_MAX, 127, 64},
    {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 1, 0},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 1, 128},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_L2, 2, 100},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 7, 512},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 127, 0},
    {QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_MAX, 7, 512},
    {QT_CODEC_ONEBIT, 0, 0, 0, 100},
    {QT_CODEC_TERNGRAD, QT_ENC_FIXED, 0, 1, 128},
    {QT_CODEC_TOPK, QT_ENC_FIXED, 0, 0, 0},
    {QT_CODEC_TOPK, QT_ENC_ELIAS, 0, 0, 0},
};
enum { NCFG = sizeof cfgs / sizeof cfgs[0], MAX_N = 4096, LANE_N = 65536 };

static qt_codec_params params_of(const fuzz_cfg *c)
{
    qt_codec_params p;
    qt_codec_params_default(&p, c->m);
    p.encoding = c->e;
    p.norm = c->nm;
    if (c->levels) p.levels = c->levels;
    p.bucket = c->bucket;
    p.topk_ratio = 0.03f;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    const fuzz_cfg *c = &cfgs[data[0] % NCFG];
    unsigned mode = data[3];
    size_t n = ((size_t)data[1] | (size_t)data[2] << 8) % (MAX_N + 1) + ((mode & 4) ? LANE_N : 0);
    qt_codec_params p = params_of(c);
    size_t body = size - 4, len = body + ((mode & 1) ? QT_CODEC_HEADER_BYTES : 0);
    uint8_t *in = malloc(len ? len : 1);
    if (mode & 1) {
        qt_wire w;
        if (qt_wire_resolve(&p, n, &w) != 0) abort();
        qt_wire_put_header(&w, (mode & 2) ? QT_WIRE_FLAG_FALLBACK : 0, in);
    }
    memcpy(in + len - body, data + 4, body);
    float *out = calloc(n ? n : 1, sizeof *out);
    int rc = qt_codec_decode_add(&p, in, len, n, 1.0f, out);
    if (rc != QT_CODEC_OK && rc != QT_CODEC_ETRUNC && rc != QT_CODEC_ECORRUPT) abort();
    free(in);
    free(out);
    return 0;
}

#ifdef QT_FUZZ_MAKE_CORPUS
#include <math.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const size_t ns[] = {1, 7, 64, 300, 2049, LANE_N + 1000};
    float *g = malloc((LANE_N + MAX_N) * sizeof *g);
    for (size_t i = 0; i < LANE_N + MAX_N; i++) g[i] = (float)sin(0.37 * (double)i) * (float)(i % 7);
    for (int c = 0; c < NCFG; c++)
        for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
            qt_codec_params p = params_of(&cfgs[c]);
            size_t n = ns[t], cap = qt_codec_max_bytes(&p, n), got;
            uint8_t *buf = malloc(cap + 4);
            if (qt_codec_encode(&p, g, NULL, n, 0, 0, 0, buf + 4, cap, &got) != 0) return 1;
            /* stored without the header (mode 1: the target puts it back) */
            size_t nl = n % LANE_N; /* n = LANE_N + nl for mode bit 2 */
            buf[0] = (uint8_t)c, buf[1] = (uint8_t)nl, buf[2] = (uint8_t)(nl >> 8);
            buf[3] = (uint8_t)(1 | (buf[4 + 4] & QT_WIRE_FLAG_FALLBACK) | (n >= LANE_N ? 4 : 0));
            memmove(buf + 4, buf + 4 + QT_CODEC_HEADER_BYTES, got - QT_CODEC_HEADER_BYTES);
            char path[4096];
            snprintf(path, sizeof path, "%s/seed-%02d-%zu", argv[1], c, n);
            FILE *f = fopen(path, "wb");
            size_t want = got + 4 - QT_CODEC_HEADER_BYTES;
            if (!f || fwrite(buf, 1, want, f) != want) return 1;
            fclose(f);
            free(buf);
        }
    free(g);
    return 0;
}
#endif
