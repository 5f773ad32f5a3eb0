/* test_quant_codecs.c — bit-exact round trips of every codec against the reference
 * implementations (test_quant_util.h), agreement of the three level encodings, exact
 * sizes, the fixed-packing size formula, max_bytes as a true bound (with streams built
 * to be worst cases), the fp16/bf16 roundings, and the name/bits helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "quant/wire.h"
#include "test_quant_util.h"

/* Bitwise float array comparison with a readable report (index, both values). */
static void expect_same(const float *got, const float *want, size_t n, const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (tq_bits(got[i]) != tq_bits(want[i]) && !(isnan(got[i]) && isnan(want[i]))) {
            if (bad < 10)
                print_error("%s: [%zu] got %.9g want %.9g\n", what, i, (double)got[i],
                            (double)want[i]);
            bad++;
        }
    if (bad) fail_msg("%s: %zu of %zu values differ", what, bad, n);
}

/* Value comparison (== semantics: +0 equals -0, NaN equals NaN) for accumulations:
 * a zero level may leave out[i] as it was or add +0 to it, which differ only for -0. */
static void expect_equal(const float *got, const float *want, size_t n, const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == want[i]) && !(isnan(got[i]) && isnan(want[i]))) {
            if (bad < 10)
                print_error("%s: [%zu] got %.9g want %.9g\n", what, i, (double)got[i],
                            (double)want[i]);
            bad++;
        }
    if (bad) fail_msg("%s: %zu of %zu values differ", what, bad, n);
}

typedef struct {
    size_t n;
    int bucket;
    uint64_t off;
} shape;

/* Shapes that exercise partial buckets, buckets that split groups of 8 codes,
 * unaligned arena offsets (Philox windows straddling buckets), whole-slice buckets, and
 * the four-lane entropy streams (n >= 65536: lanes of 19200 elements, so buckets of 500
 * straddle the lane starts, and a short last lane). */
static const shape shapes[] = {
    {1000, 128, 0}, {1000, 100, 3}, {77, 512, 61}, {4096, 0, 64}, {1, 128, 5}, {515, 24, 130},
    {70001, 500, 7},
};

static void check_levels_codec(qt_codec_method m, qt_codec_norm norm, int levels)
{
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const size_t n = shapes[sh].n;
        float *g = malloc(n * sizeof *g), *want = malloc(n * sizeof *want);
        float *h0 = malloc(n * sizeof *h0), *href = malloc(n * sizeof *href);
        float *dec[QT_ENC_COUNT];
        tq_gaussian(g, n, 100 + sh, 1.0f);
        tq_gaussian(h0, n, 200 + sh, 0.3f);
        if (n > 10) g[3] = 0.0f, g[4] = -0.0f; /* signed zeros */
        for (int e = 0; e < QT_ENC_COUNT; e++) {
            qt_codec_params p;
            qt_codec_params_default(&p, m);
            p.norm = norm;
            p.levels = levels;
            p.bucket = shapes[sh].bucket;
            p.encoding = (qt_codec_encoding)e;
            p.seed = 0xabcdef12345ull;
            p.beta = 0.75f;
            p.alpha = 0.5f;
            if (m == QT_CODEC_TERNGRAD) p.clip_sigma = sh % 2 ? 2.5f : 0.0f;
            if (e == QT_ENC_HUFFMAN && levels > QT_CODEC_MAX_HUFFMAN_LEVELS) {
                dec[e] = NULL;
                continue;
            }
            assert_int_equal(qt_codec_params_check(&p), 0);
            memcpy(href, h0, n * sizeof *h0);
            tq_ref_levels(&p, g, href, n, 17, 3, shapes[sh].off, want, NULL);
            float *h = malloc(n * sizeof *h);
            memcpy(h, h0, n * sizeof *h0);
            size_t bytes;
            int rc;
            uint8_t *buf = tq_encode(&p, g, h, n, 17, 3, shapes[sh].off, &bytes, &rc);
            assert_int_equal(rc, 0);
            assert_true(bytes <= qt_codec_max_bytes(&p, n));
            dec[e] = calloc(n, sizeof(float));
            assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, dec[e]), 0);
            char what[96];
            snprintf(what, sizeof what, "%s/%s/%s s=%d n=%zu d=%d", qt_codec_method_name(m),
                     qt_codec_encoding_name(p.encoding), qt_codec_norm_name(norm), levels, n,
                     p.bucket);
            expect_same(dec[e], want, n, what);
            if (m == QT_CODEC_ECQ) expect_same(h, href, n, "ecq residual");
            /* decode_add accumulates: out + f * v, as written */
            float *acc = malloc(n * sizeof *acc), *acc_want = malloc(n * sizeof *acc);
            for (size_t i = 0; i < n; i++) acc[i] = acc_want[i] = g[i];
            for (size_t i = 0; i < n; i++) acc_want[i] += 0.25f * want[i];
            assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 0.25f, acc), 0);
            expect_equal(acc, acc_want, n, "decode_add scale 0.25");
            if (e == QT_ENC_FIXED) { /* b + 32/d bits per element, 16 header bytes */
                size_t d = p.bucket == 0 || (size_t)p.bucket > n ? n : (size_t)p.bucket;
                size_t nb = (n + d - 1) / d, b = (size_t)qt_codec_bits_from_levels(levels);
                if (m == QT_CODEC_TERNGRAD) b = 2;
                assert_int_equal(bytes, QT_CODEC_HEADER_BYTES + 4 * nb + (n * b + 7) / 8);
                assert_int_equal(bytes, qt_codec_max_bytes(&p, n));
            }
            free(acc), free(acc_want), free(h), free(buf);
        }
        for (int e = 1; e < QT_ENC_COUNT; e++)
            if (dec[e]) expect_same(dec[e], dec[0], n, "encodings agree");
        for (int e = 0; e < QT_ENC_COUNT; e++) free(dec[e]);
        free(g), free(want), free(h0), free(href);
    }
}

static void test_qsgd_round_trip(void **state)
{
    (void)state;
    const int levels[] = {1, 2, 7, 127, 300};
    for (int nm = 0; nm < 2; nm++)
        for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++)
            check_levels_codec(QT_CODEC_QSGD, (qt_codec_norm)nm, levels[l]);
}

static void test_ecq_round_trip(void **state)
{
    (void)state;
    for (int nm = 0; nm < 2; nm++) {
        check_levels_codec(QT_CODEC_ECQ, (qt_codec_norm)nm, 1);
        check_levels_codec(QT_CODEC_ECQ, (qt_codec_norm)nm, 7);
    }
}

static void test_terngrad_round_trip(void **state)
{
    (void)state;
    check_levels_codec(QT_CODEC_TERNGRAD, QT_NORM_MAX, 1);
}

/* The fixed layout by hand: s = 1, d = 4, values chosen so no rounding is random. */
static void test_fixed_layout_by_hand(void **state)
{
    (void)state;
    qt_codec_params p;
    qt_codec_params_default(&p, QT_CODEC_QSGD);
    p.levels = 1;
    p.bucket = 4;
    const float g[8] = {2.0f, -2.0f, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    uint8_t out[64];
    size_t bytes;
    assert_int_equal(qt_codec_encode(&p, g, NULL, 8, 0, 0, 0, out, sizeof out, &bytes), 0);
    assert_int_equal(bytes, 16 + 8 + 2);
    const uint8_t hdr[16] = {'Q', 2, QT_CODEC_QSGD, QT_ENC_FIXED, 0, 0, 1, 0, /* s = 1 */
                             4, 0, 0, 0, /* bucket */ 8, 0, 0, 0 /* n */};
    assert_memory_equal(out, hdr, 16);
    float s0, s1;
    memcpy(&s0, out + 16, 4);
    memcpy(&s1, out + 20, 4);
    assert_true(s0 == 2.0f && s1 == 0.0f);
    /* codes q+1 at 2 bits each, LSB first: 2, 0, 1, (1 with probability 1/2) | 1 1 1 1 */
    assert_int_equal(out[24] & 0x3f, 2 | 0 << 2 | 1 << 4);
    assert_int_equal(out[25], 0x55);
}

static void test_onebit_round_trip(void **state)
{
    (void)state;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const size_t n = shapes[sh].n;
        qt_codec_params p;
        qt_codec_params_default(&p, QT_CODEC_ONEBIT);
        p.bucket = shapes[sh].bucket;
        float *g = malloc(n * 4), *h = malloc(n * 4), *href = malloc(n * 4);
        float *want = malloc(n * 4), *got = calloc(n, 4);
        tq_gaussian(g, n, 300 + sh, 1.0f);
        tq_gaussian(h, n, 400 + sh, 0.5f);
        memcpy(href, h, n * 4);
        tq_ref_onebit(&p, g, href, n, want);
        size_t bytes;
        int rc;
        uint8_t *buf = tq_encode(&p, g, h, n, 0, 0, 0, &bytes, &rc);
        assert_int_equal(rc, 0);
        size_t d = p.bucket == 0 || (size_t)p.bucket > n ? n : (size_t)p.bucket;
        assert_int_equal(bytes, 16 + 8 * ((n + d - 1) / d) + (n + 7) / 8);
        assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, got), 0);
        expect_same(got, want, n, "onebit values");
        expect_same(h, href, n, "onebit residual");
        free(g), free(h), free(href), free(want), free(got), free(buf);
    }
}

static void test_topk_round_trip(void **state)
{
    (void)state;
    const float ratios[] = {0.01f, 0.1f, 0.5f, 1.0f, 1e-6f};
    for (int e = 0; e < 2; e++)
        for (size_t r = 0; r < 5; r++)
            for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
                const size_t n = shapes[sh].n;
                qt_codec_params p;
                qt_codec_params_default(&p, QT_CODEC_TOPK);
                p.encoding = (qt_codec_encoding)e;
                p.topk_ratio = ratios[r];
                float *g = malloc(n * 4), *h = malloc(n * 4), *href = malloc(n * 4);
                float *want = malloc(n * 4), *got = calloc(n, 4);
                tq_gaussian(g, n, 500 + sh, 1.0f);
                tq_gaussian(h, n, 600 + sh, 0.5f);
                for (size_t i = 0; i + 7 < n; i += 7) g[i] = 1.0f, h[i] = 0.5f; /* ties */
                memcpy(href, h, n * 4);
                tq_ref_topk(&p, g, href, n, want);
                size_t bytes;
                int rc;
                uint8_t *buf = tq_encode(&p, g, h, n, 0, 0, 0, &bytes, &rc);
                assert_int_equal(rc, 0);
                assert_true(bytes <= qt_codec_max_bytes(&p, n));
                assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, got), 0);
                expect_same(got, want, n, "topk values");
                expect_same(h, href, n, "topk residual");
                free(g), free(h), free(href), free(want), free(got), free(buf);
            }
}

/* A non-finite element makes its whole bucket decode to NaN (never silently finite). */
static void test_nonfinite_propagates(void **state)
{
    (void)state;
    const qt_codec_method ms[] = {QT_CODEC_QSGD, QT_CODEC_TERNGRAD, QT_CODEC_ECQ};
    for (size_t mi = 0; mi < 3; mi++)
        for (int e = 0; e < QT_ENC_COUNT; e++) {
            qt_codec_params p;
            qt_codec_params_default(&p, ms[mi]);
            p.bucket = 64;
            p.encoding = (qt_codec_encoding)e;
            float g[256], out[256] = {0};
            tq_gaussian(g, 256, 9, 1.0f);
            g[70] = e == 1 ? INFINITY : NAN;
            size_t bytes;
            int rc;
            uint8_t *buf = tq_encode(&p, g, NULL, 256, 0, 0, 0, &bytes, &rc);
            assert_int_equal(rc, 0);
            assert_int_equal(qt_codec_decode_add(&p, buf, bytes, 256, 1.0f, out), 0);
            for (size_t i = 0; i < 256; i++) assert_true((i >= 64 && i < 128) == !!isnan(out[i]));
            free(buf);
        }
}

/* Streams built to be the worst case for the entropy coders: they fall back to fixed
 * packing (header flag) and stay within max_bytes; decoding still matches. */
static void test_worst_case_fallback(void **state)
{
    (void)state;
    const size_t n = 4096;
    float *g = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    for (int e = 1; e < QT_ENC_COUNT; e++) {
        qt_codec_params p;
        qt_codec_params_default(&p, QT_CODEC_QSGD);
        p.encoding = (qt_codec_encoding)e;
        p.levels = 127;
        /* elias: every level +-s (all omega codes long); huffman: uniform levels */
        for (size_t i = 0; i < n; i++)
            g[i] = e == 1 ? (i % 3 ? 1.0f : -1.0f)
                          : (float)((int)(tq_rand(5, i) % 255) - 127) / 127.0f;
        if (e == 2) g[0] = 1.0f;
        tq_ref_levels(&p, g, NULL, n, 0, 0, 0, want, NULL);
        size_t bytes;
        int rc;
        uint8_t *buf = tq_encode(&p, g, NULL, n, 0, 0, 0, &bytes, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(buf[4] & 2, 2); /* fallback flag */
        assert_int_equal(bytes, qt_codec_max_bytes(&p, n));
        memset(got, 0, n * 4);
        assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, got), 0);
        expect_same(got, want, n, "fallback");
        /* one byte less capacity than needed: ENOSPC, not a longer stream */
        uint8_t *small = malloc(bytes - 1);
        assert_int_equal(qt_codec_encode(&p, g, NULL, n, 0, 0, 0, small, bytes - 1, &bytes),
                         QT_CODEC_ENOSPC);
        free(small), free(buf);
    }
    free(g), free(want), free(got);
}

/* Large messages: with s <= 127 the entropy coders keep the first pass's levels as one
 * byte each up to 8 MB (2^22 + 1000 elements: kept); wider levels take two bytes, so the
 * same message with s = 300 takes the second path (quantize again). Either way: the same
 * values and ecq residual as fixed packing. */
static void test_large_message_paths(void **state)
{
    (void)state;
    const size_t n = (1u << 22) + 1000;
    float *g = malloc(n * 4), *h0 = malloc(n * 4), *h = malloc(n * 4), *hf = malloc(n * 4);
    float *ref = calloc(n, 4), *got = malloc(n * 4);
    tq_gaussian(g, n, 900, 1.0f);
    for (size_t i = 0; i < n; i++) h0[i] = 0.25f * g[(i * 7919) % n];
    const int wide[] = {1, 300};
    for (int t = 0; t < 2; t++)
        for (int e = 0; e < QT_ENC_COUNT; e++) {
            if (wide[t] > QT_CODEC_MAX_HUFFMAN_LEVELS && e == QT_ENC_HUFFMAN) continue;
            qt_codec_params p;
            qt_codec_params_default(&p, QT_CODEC_ECQ);
            /* s = 300 with one l2 bucket: sparse levels, so a real elias stream */
            p.levels = wide[t], p.bucket = t ? 0 : 128, p.norm = QT_NORM_L2;
            p.encoding = (qt_codec_encoding)e;
            memcpy(e == 0 ? hf : h, h0, n * 4);
            size_t bytes;
            int rc;
            uint8_t *buf = tq_encode(&p, g, e == 0 ? hf : h, n, 3, 1, 64, &bytes, &rc);
            assert_int_equal(rc, 0);
            if (e == 0) {
                memset(ref, 0, n * 4);
                assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, ref), 0);
            } else {
                assert_int_equal(buf[4] & 2, 0); /* an entropy stream, not the fallback */
                memset(got, 0, n * 4);
                assert_int_equal(qt_codec_decode_add(&p, buf, bytes, n, 1.0f, got), 0);
                expect_same(got, ref, n, "large message values");
                expect_same(h, hf, n, "large message residual");
            }
            free(buf);
        }
    free(g), free(h0), free(h), free(hf), free(ref), free(got);
    /* the decoders' tables for large messages (elias omega table, huffman pairs) */
    const size_t m = 300000;
    float *x = malloc(m * 4), *fixed = malloc(m * 4), *other = malloc(m * 4);
    tq_gaussian(x, m, 901, 1.0f);
    const int lv[] = {1, 7, 127};
    for (int nm = 0; nm < 2; nm++)
        for (int l = 0; l < 3; l++)
            for (int e = 0; e < QT_ENC_COUNT; e++) {
                qt_codec_params p;
                qt_codec_params_default(&p, QT_CODEC_QSGD);
                p.levels = lv[l], p.norm = (qt_codec_norm)nm, p.encoding = (qt_codec_encoding)e;
                assert_int_equal(qt_codec_quantize(&p, x, NULL, m, 0, 0, 0, e ? other : fixed), 0);
                if (e) expect_same(other, fixed, m, "large message tables");
            }
    free(x), free(fixed), free(other);
}

/* Dense elias streams (elias.c's windows) with runs of zero levels: gaps past the
 * decoder's table, past a window (2048 elements) and past a lane (19200 here) take its
 * slow path mid-window; the values still equal fixed packing's. */
static void test_elias_dense_gaps(void **state)
{
    (void)state;
    const size_t n = 70001;
    const size_t runs[][2] = {{100, 16}, {3000, 40}, {19000, 2100}, {21000, 5000}, {40000, 25000}};
    float *x = malloc(n * 4), *fixed = malloc(n * 4), *elias = malloc(n * 4);
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        tq_gaussian(x, n, 950 + r, 1.0f);
        for (size_t k = 0; k <= r; k++) /* this run and the earlier ones */
            memset(x + runs[k][0], 0, runs[k][1] * 4);
        qt_codec_params p;
        qt_codec_params_default(&p, QT_CODEC_QSGD);
        p.levels = 127, p.norm = QT_NORM_L2, p.bucket = 500;
        assert_int_equal(qt_codec_quantize(&p, x, NULL, n, 0, 0, 0, fixed), 0);
        p.encoding = QT_ENC_ELIAS;
        assert_int_equal(qt_codec_quantize(&p, x, NULL, n, 0, 0, 0, elias), 0);
        expect_same(elias, fixed, n, "dense elias with zero runs");
    }
    free(x), free(fixed), free(elias);
}

/* Encoded size == reported size <= max_bytes for every codec over sizes and seeds;
 * and capacity of exactly the reported size suffices. */
static void test_sizes_and_capacity(void **state)
{
    (void)state;
    for (int m = 0; m < QT_CODEC_COUNT; m++)
        for (int e = 0; e < QT_ENC_COUNT; e++) {
            if (m == QT_CODEC_TOPK && e == QT_ENC_HUFFMAN) continue;
            const size_t ns[] = {0, 1, 9, 640, 3001};
            for (size_t t = 0; t < 5; t++) {
                size_t n = ns[t];
                qt_codec_params p;
                qt_codec_params_default(&p, (qt_codec_method)m);
                p.encoding = (qt_codec_encoding)e;
                p.norm = (qt_codec_norm)(t % 2);
                float *g = malloc((n + 1) * 4), *h = calloc(n + 1, 4);
                tq_gaussian(g, n, 700 + t, 2.0f);
                size_t bytes, again;
                int rc;
                uint8_t *buf = tq_encode(&p, g, h, n, 1, 0, 0, &bytes, &rc);
                assert_int_equal(rc, 0);
                assert_true(bytes >= QT_CODEC_HEADER_BYTES && bytes <= qt_codec_max_bytes(&p, n));
                uint8_t *exact = malloc(bytes);
                memset(h, 0, (n + 1) * 4);
                assert_int_equal(qt_codec_encode(&p, g, h, n, 1, 0, 0, exact, bytes, &again), 0);
                assert_int_equal(again, bytes);
                assert_memory_equal(exact, buf, bytes);
                float *out = calloc(n + 1, 4);
                assert_int_equal(qt_codec_decode_add(&p, exact, bytes, n, 1.0f, out), 0);
                free(g), free(h), free(buf), free(exact), free(out);
            }
        }
}

/* bf16 by definition: the nearer of the two bf16 neighbours, ties to the even one; above
 * the largest bf16 the upper neighbour is Inf, which IEEE rounds as if it were 2^128. */
static uint16_t ref_bf16(float x)
{
    uint32_t u = tq_bits(x);
    if (isnan(x)) return 0x7fc0;
    if (isinf(x)) return (uint16_t)(u >> 16);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    float flo, fhi;
    memcpy(&flo, &lo, 4);
    memcpy(&fhi, &hi, 4);
    double ax = fabs((double)x), vl = fabs((double)flo);
    double vh = isinf(fhi) ? ldexp(1.0, 128) : fabs((double)fhi);
    double dl = ax - vl, dh = vh - ax;
    if (dl < dh || (dl == dh && !((lo >> 16) & 1))) return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

static void test_half_conversions(void **state)
{
    (void)state;
    struct { float x; uint16_t h; } f16[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65520.0f, 0x7c00},
        {65519.99f, 0x7bff}, {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x1.8p-24f, 0x0002},
        {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02}, {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400}, {0x1.ff8p-15f, 0x03ff}, {0x1.ffcp-15f, 0x0400},
        {-0.0f, 0x8000}, {NAN, 0x7e00},
    };
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++)
        assert_int_equal(qt_f32_to_f16(f16[i].x), f16[i].h);
    /* every finite half converts to float and back unchanged */
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN */
        assert_int_equal(qt_f32_to_f16(qt_f16_to_f32((uint16_t)h)), h);
    }
#if defined(__FLT16_MAX__)
    /* random float bit patterns against the compiler's IEEE conversion */
    for (uint32_t i = 0; i < 200000; i++) {
        uint32_t u = tq_rand(77, i);
        if (i % 2) u = (u & 0x8fffffffu) | 0x30000000u; /* dense near the half range */
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x)) continue;
        _Float16 r = (_Float16)x;
        uint16_t want;
        memcpy(&want, &r, 2);
        assert_int_equal(qt_f32_to_f16(x), want);
    }
#endif
    for (uint32_t i = 0; i < 200000; i++) {
        uint32_t u = tq_rand(78, i);
        if (i < 16) u = 0x7f7f8000u + i * 0x1000u; /* around bf16 max and overflow */
        float x;
        memcpy(&x, &u, 4);
        assert_int_equal(qt_f32_to_bf16(x), ref_bf16(x));
    }
}

static void test_names_and_bits(void **state)
{
    (void)state;
    for (int m = 0; m < QT_CODEC_COUNT; m++) {
        qt_codec_method back;
        const char *name = qt_codec_method_name((qt_codec_method)m);
        assert_int_equal(qt_codec_method_from_name(name, &back), 0);
        assert_int_equal(back, m);
    }
    qt_codec_method mm;
    qt_codec_encoding ee;
    qt_codec_norm nn;
    assert_int_equal(qt_codec_method_from_name("qsgd2", &mm), QT_CODEC_EINVAL);
    assert_int_equal(qt_codec_encoding_from_name("huffman", &ee), 0);
    assert_int_equal(ee, QT_ENC_HUFFMAN);
    assert_int_equal(qt_codec_norm_from_name("l2", &nn), 0);
    assert_int_equal(nn, QT_NORM_L2);
    assert_int_equal(qt_codec_levels_from_bits(2), 1);
    assert_int_equal(qt_codec_levels_from_bits(4), 7);
    assert_int_equal(qt_codec_levels_from_bits(8), 127);
    assert_int_equal(qt_codec_levels_from_bits(1), -1);
    for (int b = 2; b <= 16; b++)
        assert_int_equal(qt_codec_bits_from_levels(qt_codec_levels_from_bits(b)), b);
    assert_int_equal(qt_codec_bits_from_levels(2), 3);
    qt_codec_params p;
    qt_codec_params_default(&p, QT_CODEC_QSGD);
    assert_true(fabs(qt_codec_nominal_bits(&p) - (4.0 + 32.0 / 512)) < 1e-9);
    p.levels = 0;
    assert_int_equal(qt_codec_params_check(&p), QT_CODEC_EINVAL);
    p.levels = 200;
    p.encoding = QT_ENC_HUFFMAN;
    assert_non_null(qt_codec_params_problem(&p));
    qt_codec_params_default(&p, QT_CODEC_ECQ);
    p.beta = 1.5f;
    assert_int_equal(qt_codec_params_check(&p), QT_CODEC_EINVAL);
    qt_codec_params_default(&p, QT_CODEC_TOPK);
    p.topk_ratio = 0.0f;
    assert_int_equal(qt_codec_params_check(&p), QT_CODEC_EINVAL);
    float g[4] = {0};
    uint8_t out[64];
    size_t bytes;
    assert_int_equal(qt_codec_encode(&p, g, NULL, 4, 0, 0, 0, out, 64, &bytes), QT_CODEC_EINVAL);
    assert_true(qt_codec_has_residual(&(qt_codec_params){.method = QT_CODEC_ONEBIT}));
    assert_false(qt_codec_has_residual(&(qt_codec_params){.method = QT_CODEC_QSGD}));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qsgd_round_trip),
        cmocka_unit_test(test_ecq_round_trip),
        cmocka_unit_test(test_terngrad_round_trip),
        cmocka_unit_test(test_fixed_layout_by_hand),
        cmocka_unit_test(test_onebit_round_trip),
        cmocka_unit_test(test_topk_round_trip),
        cmocka_unit_test(test_nonfinite_propagates),
        cmocka_unit_test(test_worst_case_fallback),
        cmocka_unit_test(test_large_message_paths),
        cmocka_unit_test(test_sizes_and_capacity),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_elias_dense_gaps),
        cmocka_unit_test(test_names_and_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
