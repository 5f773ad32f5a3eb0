/* test_quant_malformed.c — decode_add on bytes that are not a valid stream: every
 * truncation, trailing bytes, wrong n or settings, random bytes, random payloads behind
 * a valid header, single bit flips, and hand-made corruptions of each format. Input
 * copies are allocated at their exact length and outputs at exactly n floats, so under
 * SAN=1 any read or write out of bounds aborts the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "test_quant_util.h"

typedef struct {
    qt_codec_method m;
    qt_codec_encoding e;
    qt_codec_norm nm;
    int levels, bucket;
} cfg;

static const cfg cfgs[] = {
    {QT_CODEC_NONE, 0, 0, 0, 0},
    {QT_CODEC_FP16, 0, 0, 0, 0},
    {QT_CODEC_BF16, 0, 0, 0, 0},
    {QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 1, 128},
    {QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 300, 96},
    {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 7, 100},
    {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_MAX, 127, 512},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 7, 512},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_L2, 1, 64},
    {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 127, 0},
    {QT_CODEC_ECQ, QT_ENC_HUFFMAN, QT_NORM_L2, 2, 128},
    {QT_CODEC_ONEBIT, 0, 0, 0, 100},
    {QT_CODEC_TERNGRAD, QT_ENC_ELIAS, 0, 1, 128},
    {QT_CODEC_TOPK, QT_ENC_FIXED, 0, 0, 0},
    {QT_CODEC_TOPK, QT_ENC_ELIAS, 0, 0, 0},
};
enum { NCFG = sizeof cfgs / sizeof cfgs[0] };

static qt_codec_params params_of(const cfg *c)
{
    qt_codec_params p;
    qt_codec_params_default(&p, c->m);
    p.encoding = c->e;
    p.norm = c->nm;
    if (c->levels) p.levels = c->levels;
    p.bucket = c->bucket;
    p.topk_ratio = 0.05f;
    p.seed = 99;
    return p;
}

static uint8_t *valid_stream(const qt_codec_params *p, size_t n, size_t *len)
{
    float *g = malloc((n + 1) * 4);
    tq_gaussian(g, n, 8, 1.0f);
    int rc;
    uint8_t *buf = tq_encode(p, g, NULL, n, 0, 0, 0, len, &rc);
    assert_int_equal(rc, 0);
    free(g);
    return buf;
}

/* decode_add of an exact-size copy of in[0..len) into exactly n floats. */
static int decode_copy(const qt_codec_params *p, const uint8_t *in, size_t len, size_t n)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, in, len);
    float *out = calloc(n ? n : 1, sizeof(float));
    int rc = qt_codec_decode_add(p, copy, len, n, 1.0f, out);
    free(copy), free(out);
    assert_true(rc == QT_CODEC_OK || rc == QT_CODEC_ETRUNC || rc == QT_CODEC_ECORRUPT);
    return rc;
}

static void test_truncated_and_trailing(void **state)
{
    (void)state;
    const size_t ns[] = {1, 100, 1000};
    for (int c = 0; c < NCFG; c++)
        for (size_t t = 0; t < 3; t++) {
            qt_codec_params p = params_of(&cfgs[c]);
            size_t len;
            uint8_t *buf = valid_stream(&p, ns[t], &len);
            assert_int_equal(decode_copy(&p, buf, len, ns[t]), 0);
            for (size_t l = 0; l < len; l++)
                if (decode_copy(&p, buf, l, ns[t]) == QT_CODEC_OK)
                    fail_msg("cfg %d n=%zu: truncation to %zu of %zu bytes accepted", c, ns[t],
                             l, len);
            uint8_t *longer = malloc(len + 1);
            memcpy(longer, buf, len);
            longer[len] = 0;
            assert_true(decode_copy(&p, longer, len + 1, ns[t]) < 0);
            free(longer), free(buf);
        }
}

static void test_wrong_n_or_settings(void **state)
{
    (void)state;
    for (int c = 0; c < NCFG; c++) {
        qt_codec_params p = params_of(&cfgs[c]);
        size_t len, n = 300;
        uint8_t *buf = valid_stream(&p, n, &len);
        assert_int_equal(decode_copy(&p, buf, len, n - 1), QT_CODEC_ECORRUPT);
        assert_int_equal(decode_copy(&p, buf, len, n + 1), QT_CODEC_ECORRUPT);
        qt_codec_params q = p;
        q.method = (qt_codec_method)((p.method + 1) % QT_CODEC_COUNT);
        if (q.method == QT_CODEC_TOPK && q.encoding == QT_ENC_HUFFMAN) q.encoding = QT_ENC_FIXED;
        assert_int_equal(decode_copy(&q, buf, len, n), QT_CODEC_ECORRUPT);
        if (p.method == QT_CODEC_QSGD || p.method == QT_CODEC_ECQ) {
            q = p;
            q.levels = p.levels == 1 ? 2 : 1;
            assert_int_equal(decode_copy(&q, buf, len, n), QT_CODEC_ECORRUPT);
            q = p;
            q.bucket = p.bucket + 1;
            assert_int_equal(decode_copy(&q, buf, len, n), QT_CODEC_ECORRUPT);
            q = p;
            q.norm = (qt_codec_norm)!p.norm;
            assert_int_equal(decode_copy(&q, buf, len, n), QT_CODEC_ECORRUPT);
            q = p;
            q.encoding = (qt_codec_encoding)((p.encoding + 1) % QT_ENC_COUNT);
            if (q.levels <= QT_CODEC_MAX_HUFFMAN_LEVELS || q.encoding != QT_ENC_HUFFMAN)
                assert_int_equal(decode_copy(&q, buf, len, n), QT_CODEC_ECORRUPT);
        }
        free(buf);
    }
}

static void test_random_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < NCFG; c++) {
        qt_codec_params p = params_of(&cfgs[c]);
        for (uint64_t trial = 0; trial < 200; trial++) {
            size_t len = tq_rand(c, trial * 1000) % 700;
            uint8_t *b = malloc(len + 1);
            for (size_t i = 0; i < len; i++) b[i] = (uint8_t)tq_rand(c, trial * 1000 + 1 + i);
            assert_true(decode_copy(&p, b, len, 200) < 0); /* the header cannot match */
            free(b);
        }
    }
}

/* A valid header followed by random bytes of about the right length, and single bit
 * flips of valid streams: any outcome but a crash or an out-of-bounds access. */
static void test_random_payload_and_bit_flips(void **state)
{
    (void)state;
    for (int c = 0; c < NCFG; c++) {
        qt_codec_params p = params_of(&cfgs[c]);
        size_t n = 200, len;
        uint8_t *buf = valid_stream(&p, n, &len);
        int errors = 0;
        for (uint64_t trial = 0; trial < 300; trial++) {
            size_t l = QT_CODEC_HEADER_BYTES + tq_rand(100 + c, trial) % (2 * len);
            uint8_t *b = malloc(l);
            memcpy(b, buf, QT_CODEC_HEADER_BYTES);
            if (trial % 3 == 0) b[4] ^= 2; /* claim (or deny) the fallback layout */
            for (size_t i = QT_CODEC_HEADER_BYTES; i < l; i++)
                b[i] = (uint8_t)tq_rand(200 + c, trial * 4096 + i);
            errors += decode_copy(&p, b, l, n) != 0;
            free(b);
        }
        for (size_t bit = 8 * QT_CODEC_HEADER_BYTES; bit < 8 * len; bit++) {
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            errors += decode_copy(&p, buf, len, n) != 0;
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        assert_true(errors > 0); /* most random payloads are not valid streams */
        free(buf);
    }
}

/* Hand-made corruptions with a known verdict. */
static void test_specific_corruptions(void **state)
{
    (void)state;
    float g[64];
    tq_gaussian(g, 64, 3, 1.0f);
    qt_codec_params p;
    size_t len;
    int rc;
    uint8_t *b;
    /* fixed, s = 1: code 3 does not exist */
    qt_codec_params_default(&p, QT_CODEC_QSGD);
    p.levels = 1, p.bucket = 64;
    b = tq_encode(&p, g, NULL, 64, 0, 0, 0, &len, &rc);
    b[16 + 4] |= 3;
    assert_int_equal(decode_copy(&p, b, len, 64), QT_CODEC_ECORRUPT);
    free(b);
    /* fixed: a fallback flag is not allowed; unused bits of the last byte must be zero */
    b = tq_encode(&p, g, NULL, 63, 0, 0, 0, &len, &rc);
    b[len - 1] |= 0x80;
    assert_int_equal(decode_copy(&p, b, len, 63), QT_CODEC_ECORRUPT);
    b[len - 1] &= 0x7f;
    b[4] |= 2;
    assert_int_equal(decode_copy(&p, b, len, 63), QT_CODEC_ECORRUPT);
    free(b);
    /* elias: a first gap of n + 2 jumps past the end (omega(66) = 1 0 1 1000010 0) */
    p.encoding = QT_ENC_ELIAS;
    b = tq_encode(&p, g, NULL, 64, 0, 0, 0, &len, &rc);
    uint8_t *e = calloc(16 + 4 + 4, 1);
    memcpy(e, b, 20);
    e[20] = 0xB4, e[21] = 0x20; /* 10 110 1000010 0, then zeros */
    assert_int_equal(decode_copy(&p, e, 24, 64), QT_CODEC_ECORRUPT);
    free(e), free(b);
    /* huffman: an over-full code (every one of the 243 symbols with length 1) */
    p.encoding = QT_ENC_HUFFMAN;
    b = tq_encode(&p, g, NULL, 64, 0, 0, 0, &len, &rc);
    uint8_t *hf = calloc(20 + 200, 1);
    memcpy(hf, b, 20);
    for (int sym = 0; sym < 243; sym++) { /* "1" "0000" per symbol */
        size_t bit = 5 * (size_t)sym;
        hf[20 + bit / 8] |= (uint8_t)(0x80u >> (bit % 8));
    }
    assert_int_equal(decode_copy(&p, hf, 20 + 200, 64), QT_CODEC_ECORRUPT);
    free(hf), free(b);
    /* topk: k that is not ceil(ratio n); an index past n; an overlong varint */
    qt_codec_params_default(&p, QT_CODEC_TOPK);
    p.topk_ratio = 1.0f / 64;
    b = tq_encode(&p, g, NULL, 64, 0, 0, 0, &len, &rc);
    assert_int_equal(len, 16 + 4 + 4 + 1);
    b[16] = 2;
    assert_int_equal(decode_copy(&p, b, len, 64), QT_CODEC_ECORRUPT);
    b[16] = 1;
    b[24] = 64;
    assert_int_equal(decode_copy(&p, b, len, 64), QT_CODEC_ECORRUPT);
    uint8_t *ov = malloc(len + 1);
    memcpy(ov, b, len);
    ov[24] = 0x81, ov[25] = 0x00; /* 1 as two bytes */
    assert_int_equal(decode_copy(&p, ov, len + 1, 64), QT_CODEC_ECORRUPT);
    free(ov), free(b);
    /* onebit: padding bits after the last element */
    qt_codec_params_default(&p, QT_CODEC_ONEBIT);
    b = tq_encode(&p, g, NULL, 61, 0, 0, 0, &len, &rc);
    b[len - 1] |= 0x80;
    assert_int_equal(decode_copy(&p, b, len, 61), QT_CODEC_ECORRUPT);
    free(b);
    /* bad arguments */
    qt_codec_params_default(&p, QT_CODEC_QSGD);
    float out[4];
    assert_int_equal(qt_codec_decode_add(&p, NULL, 10, 4, 1.0f, out), QT_CODEC_EINVAL);
    assert_int_equal(qt_codec_decode_add(&p, (const uint8_t *)"Q", 1, 4, 1.0f, NULL),
                     QT_CODEC_EINVAL);
}

/* Four-lane entropy streams (n >= 65536, quantizer.h): the payload after the scales
 * starts with the byte lengths of lanes 0..2. Truncations anywhere (around every lane
 * boundary included), lane lengths that disagree with the lanes, and bit flips in each
 * lane are all caught or harmless. */
static void test_lanes(void **state)
{
    (void)state;
    const cfg lane_cfgs[] = {
        {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 7, 100},
        {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_MAX, 1, 128},
        {QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 127, 512}, /* dense: elias.c's windows */
        {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 7, 512},
        {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_L2, 1, 64},
        {QT_CODEC_QSGD, QT_ENC_HUFFMAN, QT_NORM_MAX, 127, 512},
    };
    const size_t n = 70001;
    for (size_t c = 0; c < sizeof lane_cfgs / sizeof lane_cfgs[0]; c++) {
        qt_codec_params p = params_of(&lane_cfgs[c]);
        size_t len;
        uint8_t *buf = valid_stream(&p, n, &len);
        assert_int_equal(buf[4] & 2, 0); /* an entropy stream, not the fallback */
        assert_int_equal(decode_copy(&p, buf, len, n), 0);
        const size_t d = (size_t)p.bucket, at = QT_CODEC_HEADER_BYTES + 4 * ((n + d - 1) / d);
        size_t lane_len[4], off = at + 12, cuts[64], nc = 0;
        for (int j = 0; j < 3; j++) {
            uint32_t v;
            memcpy(&v, buf + at + 4 * (size_t)j, 4);
            lane_len[j] = v;
            assert_true(v > 0 && off + v < len);
            for (int dlt = -1; dlt <= 1; dlt++) cuts[nc++] = off + (size_t)((ptrdiff_t)dlt);
            off += v;
        }
        lane_len[3] = len - off;
        for (int k = 0; k < 40; k++) cuts[nc++] = at + tq_rand(300 + c, (uint64_t)k) % (len - at);
        cuts[nc++] = at + 11, cuts[nc++] = len - 1;
        for (size_t k = 0; k < nc; k++)
            if (decode_copy(&p, buf, cuts[k], n) == QT_CODEC_OK)
                fail_msg("lane cfg %zu: truncation to %zu of %zu bytes accepted", c, cuts[k], len);
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, buf, len);
        longer[len] = 0;
        assert_true(decode_copy(&p, longer, len + 1, n) < 0);
        free(longer);
        /* lane lengths: one byte moved between lanes, past the end, zero */
        for (int j = 0; j < 3; j++) {
            const uint32_t moved[] = {(uint32_t)lane_len[j] + 1, (uint32_t)lane_len[j] - 1,
                                      (uint32_t)len, 0xffffffffu, 0};
            for (int t = 0; t < 5; t++) {
                uint8_t *b = malloc(len);
                memcpy(b, buf, len);
                memcpy(b + at + 4 * (size_t)j, &moved[t], 4);
                int rc = decode_copy(&p, b, len, n);
                if (rc == QT_CODEC_OK)
                    fail_msg("lane cfg %zu: lane %d length %u accepted", c, j, moved[t]);
                if (t == 2 || t == 3) assert_int_equal(rc, QT_CODEC_ETRUNC);
                free(b);
            }
        }
        /* tiny lanes (shorter than the interleaved loops' 8-byte loads; found by
         * make fuzz): lengths 0..3 each, random bytes */
        const uint32_t tiny[][3] = {{1, 1, 1}, {0, 0, 0}, {3, 2, 1}, {1, 0, 5}, {7, 7, 7}};
        for (size_t t = 0; t < sizeof tiny / sizeof tiny[0]; t++)
            for (size_t last = 0; last < 12; last += 5) {
                size_t l = at + 12 + tiny[t][0] + tiny[t][1] + tiny[t][2] + last;
                uint8_t *b = malloc(l);
                memcpy(b, buf, at);
                memcpy(b + at, tiny[t], 12);
                for (size_t i = at + 12; i < l; i++) b[i] = (uint8_t)tq_rand(500 + c, t * 64 + i);
                (void)decode_copy(&p, b, l, n);
                free(b);
            }
        /* every lane's bytes random (their lengths kept): any verdict but a crash */
        for (uint64_t t = 0; t < 4; t++) {
            uint8_t *b = malloc(len);
            memcpy(b, buf, at + 12);
            for (size_t i = at + 12; i < len; i++) b[i] = (uint8_t)tq_rand(600 + c + 16 * t, i);
            (void)decode_copy(&p, b, len, n);
            free(b);
        }
        /* bit flips spread over every lane: any verdict but a crash */
        for (uint64_t t = 0; t < 200; t++) {
            size_t bit = 8 * (at + 12) + tq_rand(400 + c, t) % (8 * (len - at - 12));
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            (void)decode_copy(&p, buf, len, n);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        free(buf);
    }
}

static void test_output_too_small(void **state)
{
    (void)state;
    for (int c = 0; c < NCFG; c++) {
        qt_codec_params p = params_of(&cfgs[c]);
        size_t n = 500, len, got;
        uint8_t *buf = valid_stream(&p, n, &len);
        float *g = malloc(n * 4);
        tq_gaussian(g, n, 8, 1.0f);
        const size_t caps[] = {0, 15, 16, len / 2, len - 1};
        for (size_t t = 0; t < 5; t++) {
            uint8_t *small = malloc(caps[t] + 1);
            assert_int_equal(qt_codec_encode(&p, g, NULL, n, 0, 0, 0, small, caps[t], &got),
                             QT_CODEC_ENOSPC);
            free(small);
        }
        free(buf), free(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_wrong_n_or_settings),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_random_payload_and_bit_flips),
        cmocka_unit_test(test_specific_corruptions),
        cmocka_unit_test(test_lanes),
        cmocka_unit_test(test_output_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
