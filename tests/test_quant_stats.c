/* test_quant_stats.c — the statistical and size guarantees of the papers, measured:
 * unbiasedness of Q_s (z-scores and a chi-square over many seeds), Lemma 3.1's variance
 * bound, Corollary 3.3's Elias length at s = sqrt(d), Huffman within 1 bit per symbol of
 * the empirical entropy, and error feedback that loses nothing (ecq with alpha = beta = 1,
 * onebit, topk). Bounds are stated from the variance, not tuned to pass. */
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "test_quant_util.h"

/* Scale m of each bucket as quantizer.h defines it (max or l2). */
static void bucket_scales(const qt_codec_params *p, const float *x, size_t n, size_t d, float *m)
{
    for (size_t b0 = 0, k = 0; b0 < n; b0 += d, k++) {
        size_t len = n - b0 < d ? n - b0 : d;
        double sq[16] = {0};
        float mx = 0.0f;
        for (size_t j = 0; j < len; j++) {
            sq[j % 16] += (double)x[b0 + j] * (double)x[b0 + j];
            mx = fabsf(x[b0 + j]) > mx ? fabsf(x[b0 + j]) : mx;
        }
        m[k] = p->norm == QT_NORM_L2 && p->method != QT_CODEC_TERNGRAD
                   ? (float)sqrt(tq_lane_total(sq)) : mx;
    }
}

/* Per element: Q(x_i) = unit * (l + B), B ~ Bernoulli(p), so Var = unit^2 p (1 - p). */
static double element_variance(float x, float m, int s)
{
    if (m == 0.0f) return 0.0;
    double t = (double)(fabsf(x) / m * (float)s);
    double pr = t - floor(t), unit = (double)m / s;
    return unit * unit * pr * (1.0 - pr);
}

/* Over K draws (steps), z_i = (mean_i - x_i) / (sd_i / sqrt K) must satisfy |z_i| <= 6
 * (normal tail 2e-9 per element) and sum z_i^2, a chi-square with `dof` degrees of
 * freedom, must lie within dof +- 6 sqrt(2 dof): a bias of the whole vector, or a
 * variance other than p(1-p), moves it out. Elements with p = 0 must be exact. */
static void check_unbiased(qt_codec_params p, size_t n, int k_draws)
{
    int s = p.method == QT_CODEC_TERNGRAD ? 1 : p.levels;
    size_t d = (size_t)p.bucket;
    float *x = calloc(n, 4), *v = malloc(n * 4), *m = malloc((n / d + 1) * 4);
    double *sum = calloc(n, sizeof *sum);
    tq_gaussian(x, n, 31, 1.0f);
    bucket_scales(&p, x, n, d, m);
    for (int t = 0; t < k_draws; t++) {
        assert_int_equal(qt_codec_quantize(&p, x, NULL, n, (uint32_t)t, 1, 0, v), 0);
        for (size_t i = 0; i < n; i++) sum[i] += v[i];
    }
    double chi2 = 0.0, zmax = 0.0;
    size_t dof = 0;
    for (size_t i = 0; i < n; i++) {
        double mean = sum[i] / k_draws, var = element_variance(x[i], m[i / d], s);
        if (var < 1e-12 * (double)m[i / d] * m[i / d]) {
            assert_true(fabs(mean - x[i]) <= 1e-5 * m[i / d]);
            continue;
        }
        double z = (mean - x[i]) / sqrt(var / k_draws);
        chi2 += z * z;
        zmax = fabs(z) > zmax ? fabs(z) : zmax;
        dof++;
    }
    print_message("unbiased %s/%s s=%d d=%zu: %zu elements, max|z| %.2f, chi2/dof %.3f\n",
                  qt_codec_method_name(p.method), qt_codec_norm_name(p.norm), s, d, dof, zmax,
                  chi2 / (double)dof);
    assert_true(dof > n / 2);
    assert_true(zmax <= 6.0);
    assert_true(fabs(chi2 - (double)dof) <= 6.0 * sqrt(2.0 * (double)dof));
    free(x), free(v), free(m), free(sum);
}

static void test_unbiased(void **state)
{
    (void)state;
    qt_codec_params p;
    qt_codec_params_default(&p, QT_CODEC_QSGD);
    p.levels = 1, p.bucket = 512, p.seed = 1;
    check_unbiased(p, 1024, 1000);
    p.levels = 2, p.norm = QT_NORM_L2, p.seed = 2;
    check_unbiased(p, 1024, 1000);
    p.levels = 7, p.bucket = 128, p.norm = QT_NORM_MAX, p.encoding = QT_ENC_HUFFMAN;
    check_unbiased(p, 1024, 1000);
    qt_codec_params_default(&p, QT_CODEC_TERNGRAD);
    p.encoding = QT_ENC_ELIAS;
    check_unbiased(p, 1024, 1000);
}

/* Lemma 3.1 (ii) per bucket: E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2 (l2 norm).
 * Checked on the exact expectation sum_i unit^2 p_i (1 - p_i), and on the measured mean
 * over K draws, which must agree with that expectation within 6 standard errors. A flat
 * vector (|v_i| equal) comes close to the bound at s = 1. */
static void test_variance_bound(void **state)
{
    (void)state;
    const size_t d = 256, nb = 4, n = d * nb;
    const int levels[] = {1, 4, 16};
    const int k_draws = 300;
    float *x = malloc(n * 4), *v = malloc(n * 4), m[4];
    double *tot = malloc(k_draws * nb * sizeof *tot);
    for (int flat = 0; flat < 2; flat++)
        for (size_t l = 0; l < 3; l++) {
            qt_codec_params p;
            qt_codec_params_default(&p, QT_CODEC_QSGD);
            p.norm = QT_NORM_L2, p.levels = levels[l], p.bucket = (int)d, p.seed = 5;
            tq_gaussian(x, n, 40 + l, 1.0f);
            if (flat)
                for (size_t i = 0; i < n; i++) x[i] = x[i] < 0 ? -0.5f : 0.5f;
            bucket_scales(&p, x, n, d, m);
            for (int t = 0; t < k_draws; t++) {
                assert_int_equal(qt_codec_quantize(&p, x, NULL, n, (uint32_t)t, 0, 0, v), 0);
                for (size_t k = 0; k < nb; k++) {
                    double e = 0;
                    for (size_t j = k * d; j < (k + 1) * d; j++)
                        e += ((double)v[j] - x[j]) * ((double)v[j] - x[j]);
                    tot[t * nb + k] = e;
                }
            }
            for (size_t k = 0; k < nb; k++) {
                double norm2 = (double)m[k] * m[k], s = levels[l], expect = 0;
                for (size_t j = k * d; j < (k + 1) * d; j++)
                    expect += element_variance(x[j], m[k], levels[l]);
                double mean = 0, var = 0;
                for (int t = 0; t < k_draws; t++) mean += tot[t * nb + k] / k_draws;
                for (int t = 0; t < k_draws; t++)
                    var += (tot[t * nb + k] - mean) * (tot[t * nb + k] - mean) / (k_draws - 1);
                double se = sqrt(var / k_draws);
                double bound = fmin((double)d / (s * s), sqrt((double)d) / s) * norm2;
                if (k == 0)
                    print_message("variance %s s=%d: E %.4f measured %.4f (se %.4f) bound %.4f\n",
                                  flat ? "flat" : "gauss", levels[l], expect, mean, se, bound);
                assert_true(expect <= bound);
                assert_true(fabs(mean - expect) <= 6.0 * se + 1e-9 * norm2);
                assert_true(mean <= bound + 6.0 * se);
            }
        }
    free(x), free(v), free(tot);
}

/* Corollary 3.3: at s = sqrt(d) the Elias stream costs at most 2.8 d + 32 bits per
 * bucket on average (the 16-byte message header excluded). */
static void test_elias_size(void **state)
{
    (void)state;
    const size_t ds[] = {256, 1024};
    for (size_t t = 0; t < 2; t++) {
        size_t d = ds[t], nb = 64, n = d * nb;
        qt_codec_params p;
        qt_codec_params_default(&p, QT_CODEC_QSGD);
        p.norm = QT_NORM_L2, p.encoding = QT_ENC_ELIAS, p.bucket = (int)d;
        p.levels = (int)lround(sqrt((double)d));
        float *x = malloc(n * 4);
        tq_gaussian(x, n, 50 + t, 1.0f);
        size_t bytes;
        int rc;
        uint8_t *buf = tq_encode(&p, x, NULL, n, 0, 0, 0, &bytes, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(buf[4] & 2, 0); /* a real Elias stream, no fallback */
        double per_bucket = 8.0 * (double)(bytes - QT_CODEC_HEADER_BYTES) / (double)nb;
        print_message("elias d=%zu s=%d: %.1f bits per bucket, bound 2.8d+32 = %.1f\n", d,
                      p.levels, per_bucket, 2.8 * (double)d + 32);
        assert_true(per_bucket <= 2.8 * (double)d + 32.0);
        free(x), free(buf);
    }
}

/* Huffman code bits (table and padding excluded) <= n (H + 1), H the empirical entropy of
 * the levels in bits per element: a canonical code within 1 bit of the entropy. */
static void test_huffman_entropy(void **state)
{
    (void)state;
    const int levels[] = {1, 2, 7, 127};
    const size_t n = 20000;
    float *x = malloc(n * 4);
    int *q = malloc(n * sizeof *q);
    tq_gaussian(x, n, 60, 1.0f);
    for (int nm = 0; nm < 2; nm++)
        for (size_t l = 0; l < 4; l++) {
            qt_codec_params p;
            qt_codec_params_default(&p, QT_CODEC_QSGD);
            p.norm = (qt_codec_norm)nm, p.levels = levels[l], p.encoding = QT_ENC_HUFFMAN;
            p.bucket = levels[l] == 1 ? 128 : 512;
            tq_ref_levels(&p, x, NULL, n, 0, 0, 0, NULL, q);
            int s = levels[l];
            double *cnt = calloc((size_t)(2 * s + 1), sizeof *cnt), h = 0;
            for (size_t i = 0; i < n; i++) cnt[q[i] + s] += 1;
            for (int c = 0; c < 2 * s + 1; c++)
                if (cnt[c] > 0) h -= cnt[c] / n * log2(cnt[c] / n);
            size_t bytes;
            int rc;
            uint8_t *buf = tq_encode(&p, x, NULL, n, 0, 0, 0, &bytes, &rc);
            assert_int_equal(rc, 0);
            assert_int_equal(buf[4] & 2, 0);
            /* table: 1 bit per symbol of the alphabet + 4 bits per used symbol */
            int a = 2 * s + 1, g = 1, alpha = a;
            while (alpha * a <= 256) alpha *= a, g++;
            size_t nb = (n + (size_t)p.bucket - 1) / (size_t)p.bucket;
            const uint8_t *st = buf + QT_CODEC_HEADER_BYTES + 4 * nb;
            size_t used = 0, bit = 0;
            for (int sym = 0; sym < alpha; sym++) {
                int on = (st[bit / 8] >> (7 - bit % 8)) & 1;
                bit += on ? 5 : 1;
                used += (size_t)on;
            }
            double code_bits = 8.0 * (double)(bytes - QT_CODEC_HEADER_BYTES - 4 * nb) - (double)bit;
            print_message("huffman %s s=%d g=%d: %.4f bits/element, entropy %.4f, table %zu bits\n",
                          qt_codec_norm_name(p.norm), s, g, code_bits / n, h, bit);
            assert_true(code_bits - 7.0 <= (double)n * (h + 1.0));
            assert_true(used > 0);
            free(cnt), free(buf);
        }
    free(x), free(q);
}

/* Error feedback conserves the signal: sum_t sent_t + h_T == sum_t g_t. Each step's
 * residual update rounds at most twice (x = g + h, then h' = x - v or h + (g - v)), each
 * by at most eps/2 of its result; the tolerance accumulates exactly those terms. */
static void check_conservation(qt_codec_params p, size_t n, int steps)
{
    float *g = malloc(n * 4), *h = calloc(n, 4), *sent = malloc(n * 4);
    double *sum_g = calloc(n, sizeof(double)), *sum_sent = calloc(n, sizeof(double));
    double *tol = calloc(n, sizeof(double));
    const double eps = FLT_EPSILON / 2;
    for (int t = 0; t < steps; t++) {
        tq_gaussian(g, n, 1000 + (uint64_t)t, 1.0f + 0.1f * (float)t);
        float *h_before = malloc(n * 4);
        memcpy(h_before, h, n * 4);
        assert_int_equal(qt_codec_quantize(&p, g, h, n, (uint32_t)t, 2, 0, sent), 0);
        for (size_t i = 0; i < n; i++) {
            sum_g[i] += g[i];
            sum_sent[i] += sent[i];
            double x = (double)g[i] + h_before[i];
            tol[i] += eps * (fabs(x) + fabs((double)g[i] - sent[i]) + fabs((double)h[i]));
        }
        free(h_before);
    }
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(sum_sent[i] + h[i] - sum_g[i]);
        worst = err > worst ? err : worst;
        if (err > tol[i] * 1.0001 + 1e-30) bad++;
    }
    print_message("conservation %s: %d steps, worst |sum sent + h - sum g| %.3g\n",
                  qt_codec_method_name(p.method), steps, worst);
    assert_int_equal(bad, 0);
    free(g), free(h), free(sent), free(sum_g), free(sum_sent), free(tol);
}

static void test_error_feedback(void **state)
{
    (void)state;
    qt_codec_params p;
    qt_codec_params_default(&p, QT_CODEC_ECQ);
    p.alpha = 1.0f, p.beta = 1.0f, p.levels = 1, p.bucket = 128;
    check_conservation(p, 3000, 30);
    /* (with l2 and s = 1 the compressor's variance exceeds ||x||^2 and plain error
     * feedback grows without bound: a property of the method, not of the codec) */
    p.encoding = QT_ENC_HUFFMAN, p.levels = 7;
    check_conservation(p, 3000, 30);
    qt_codec_params_default(&p, QT_CODEC_ONEBIT);
    check_conservation(p, 3000, 30);
    qt_codec_params_default(&p, QT_CODEC_TOPK);
    check_conservation(p, 3000, 30);
    p.encoding = QT_ENC_ELIAS, p.topk_ratio = 0.1f;
    check_conservation(p, 3000, 30);
}

/* ECQ's residual recursion with beta < 1: h_{t+1} = beta h_t + (g_t - sent_t), checked
 * step by step against its definition (as written, float by float). */
static void test_ecq_decay(void **state)
{
    (void)state;
    const size_t n = 1000;
    qt_codec_params p;
    qt_codec_params_default(&p, QT_CODEC_ECQ);
    p.alpha = 0.7f, p.beta = 0.8f;
    float *g = malloc(n * 4), *h = calloc(n, 4), *h_prev = malloc(n * 4), *sent = malloc(n * 4);
    for (int t = 0; t < 5; t++) {
        tq_gaussian(g, n, 2000 + (uint64_t)t, 1.0f);
        memcpy(h_prev, h, n * 4);
        assert_int_equal(qt_codec_quantize(&p, g, h, n, (uint32_t)t, 0, 0, sent), 0);
        for (size_t i = 0; i < n; i++) {
            float want = p.beta * h_prev[i] + (g[i] - sent[i]);
            assert_true(tq_bits(h[i]) == tq_bits(want));
        }
    }
    free(g), free(h), free(h_prev), free(sent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unbiased),
        cmocka_unit_test(test_variance_bound),
        cmocka_unit_test(test_elias_size),
        cmocka_unit_test(test_huffman_entropy),
        cmocka_unit_test(test_error_feedback),
        cmocka_unit_test(test_ecq_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
