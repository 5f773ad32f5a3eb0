/* test_layers.c — the CPU layers against two oracles:
 * - forward: naive double-precision references (direct convolution loops, BN statistics
 *   and running-stat updates by hand, softmax/log-sum-exp), with tolerances from the
 *   float error bound of each reduction: |y - ref| <= len * eps32 * sum|terms|;
 * - backward: central finite differences of L = sum(proj * y) for a random projection
 *   (tests/gradcheck.h states the tolerance), for every input and parameter gradient.
 * Gradient buffers are filled with NaN before each backward, so a backward that
 * accumulates instead of overwriting, or leaves an element unwritten, fails.
 * Buffers are allocated with their exact size so ASan (SAN=1) sees any overrun,
 * including of the conv workspace.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/philox.h"
#include "core/qt.h"
#include "gradcheck.h"
#include "nn/layers.h"

#include <cblas.h>
#include <float.h>
#include <omp.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Philox step of the next fill; reset before each test so a test's data does not depend
 * on which tests ran (or failed) before it. */
static uint32_t g_stream;

static int reset_stream(void **s)
{
    (void)s;
    g_stream = 0;
    return 0;
}

/* Every test buffer is owned by the running test and freed by its teardown (a failing
 * assertion leaves the test early). */
static void *g_owned[256];
static int g_n_owned;

static void *owned(size_t bytes)
{
    QT_ASSERT(g_n_owned < (int)(sizeof g_owned / sizeof g_owned[0]));
    return g_owned[g_n_owned++] = qt_malloc(bytes ? bytes : 1);
}

static int free_owned(void **s)
{
    (void)s;
    while (g_n_owned > 0) free(g_owned[--g_n_owned]);
    return 0;
}

static float *fbuf(size_t n) { return owned(sizeof(float) * n); }

/* Uniform in [lo, hi), a fresh Philox stream per call. */
static float *frand(size_t n, float lo, float hi)
{
    float *a = fbuf(n);
    qt_philox_key key = qt_philox_make_key(1234, QT_RNG_TEST);
    uint32_t s = ++g_stream;
    for (size_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * qt_u32_to_unit(qt_philox_u32(key, i, s, 0));
    return a;
}

static float *fnan(size_t n)
{
    float *a = fbuf(n);
    for (size_t i = 0; i < n; i++) a[i] = NAN;
    return a;
}

static float *fcopy(const float *src, size_t n)
{
    float *a = fbuf(n);
    memcpy(a, src, sizeof(float) * n);
    return a;
}

/* |got - ref| <= len * eps32 * scale: the float error bound of a len-term reduction whose
 * terms have absolute sum `scale`. */
static void expect_close(const char *what, size_t i, double got, double ref, double len, double scale)
{
    double tol = len * FLT_EPSILON * scale + DBL_MIN;
    if (!(fabs(got - ref) <= tol)) {
        fprintf(stderr, "%s[%zu]: got %.9g want %.9g (tol %.3g)\n", what, i, got, ref, tol);
        fail();
    }
}

/* ---------------- convolution ---------------- */

typedef struct {
    qt_conv c;
    int n, h, w, oh, ow;
    float *x, *y, *ws;
} conv_case;

static void conv_fwd(void *p)
{
    conv_case *t = p;
    qt_conv_forward(&t->c, t->x, t->y, t->n, t->h, t->w, t->ws);
}

/* Direct convolution in double; checks every output against the dot-product bound. */
static void conv_check_forward(const conv_case *t)
{
    const qt_conv *c = &t->c;
    const double len = (double)c->c_in * c->kh * c->kw + 2;
    for (int i = 0; i < t->n; i++)
        for (int co = 0; co < c->c_out; co++)
            for (int oy = 0; oy < t->oh; oy++)
                for (int ox = 0; ox < t->ow; ox++) {
                    double s = c->b ? c->b[co] : 0.0, mag = fabs(s);
                    for (int ci = 0; ci < c->c_in; ci++)
                        for (int a = 0; a < c->kh; a++)
                            for (int b = 0; b < c->kw; b++) {
                                int iy = oy * c->stride - c->pad + a, ix = ox * c->stride - c->pad + b;
                                if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w) continue;
                                double term = (double)c->w[((co * c->c_in + ci) * c->kh + a) * c->kw + b] *
                                              t->x[((size_t)(i * c->c_in + ci) * t->h + iy) * t->w + ix];
                                s += term;
                                mag += fabs(term);
                            }
                    size_t o = (((size_t)i * c->c_out + co) * t->oh + oy) * t->ow + ox;
                    expect_close("conv y", o, t->y[o], s, len, mag);
                }
}

static void conv_run(int c_in, int c_out, int k_h, int k_w, int stride, int pad, bool bias, int n,
                     int h, int w)
{
    conv_case t = {.c = {c_in, c_out, k_h, k_w, stride, pad, NULL, NULL, NULL, NULL}, .n = n, .h = h, .w = w};
    qt_conv_out_hw(&t.c, h, w, &t.oh, &t.ow);
    size_t nw = (size_t)c_out * c_in * k_h * k_w, nx = (size_t)n * c_in * h * w,
           ny = (size_t)n * c_out * t.oh * t.ow;
    float bound = 1.0f / sqrtf((float)(c_in * k_h * k_w));
    t.c.w = frand(nw, -bound, bound);
    t.c.dw = fnan(nw);
    if (bias) {
        t.c.b = frand((size_t)c_out, -0.5f, 0.5f);
        t.c.db = fnan((size_t)c_out);
    }
    t.x = frand(nx, -1.0f, 1.0f);
    t.y = fnan(ny);
    t.ws = fnan(qt_conv_workspace_floats(&t.c, n, h, w));
    float *dx = fnan(nx), *proj = frand(ny, -1.0f, 1.0f);

    conv_fwd(&t);
    conv_check_forward(&t);
    qt_conv_backward(&t.c, t.x, proj, dx, n, h, w, t.ws);
    float *dw = fcopy(t.c.dw, nw), *db = bias ? fcopy(t.c.db, (size_t)c_out) : NULL;
    /* dx == NULL computes the same weight gradient, bit for bit. */
    for (size_t i = 0; i < nw; i++) t.c.dw[i] = NAN;
    qt_conv_backward(&t.c, t.x, proj, NULL, n, h, w, t.ws);
    assert_memory_equal(t.c.dw, dw, nw * sizeof(float));

    gc_problem p = {conv_fwd, &t, t.y, proj, ny, NULL};
    char name[96];
    snprintf(name, sizeof name, "conv%dx%d s%d p%d %s x", k_h, k_w, stride, pad, bias ? "bias" : "");
    assert_int_equal(gc_check(&p, name, t.x, dx, nx, NULL), 0);
    assert_int_equal(gc_check(&p, "conv w", t.c.w, dw, nw, NULL), 0);
    if (bias) assert_int_equal(gc_check(&p, "conv b", t.c.b, db, (size_t)c_out, NULL), 0);
}

static void test_conv_3x3_s1(void **s)
{
    (void)s;
    conv_run(3, 4, 3, 3, 1, 1, false, 2, 6, 5);
    conv_run(2, 3, 3, 3, 1, 0, true, 2, 5, 5); /* valid convolution */
}
static void test_conv_3x3_s2(void **s)
{
    (void)s;
    conv_run(3, 4, 3, 3, 2, 1, false, 2, 7, 6);
    conv_run(2, 3, 3, 3, 2, 1, true, 3, 8, 8);
}
static void test_conv_1x1(void **s)
{
    (void)s;
    conv_run(3, 5, 1, 1, 2, 0, false, 2, 6, 6); /* ResNet option-B shortcut */
    conv_run(4, 3, 1, 1, 1, 0, true, 3, 5, 4);  /* pointwise: x is the column matrix */
    conv_run(2, 3, 1, 1, 1, 1, false, 2, 3, 3); /* stride 1, pad > k-1: col2im path */
}
static void test_conv_7x7_s2_p3(void **s)
{
    (void)s;
    conv_run(2, 3, 7, 7, 2, 3, false, 2, 11, 10);
}
static void test_conv_odd_shapes(void **s)
{
    (void)s;
    conv_run(2, 3, 3, 2, 1, 1, true, 2, 5, 6);  /* non-square kernel: pads (1, 0) in backward */
    conv_run(2, 2, 2, 2, 2, 0, false, 5, 4, 4); /* 5 images: 3 and 2 per thread */
    conv_run(3, 2, 3, 3, 3, 1, true, 2, 7, 7);  /* stride 3 */
    conv_run(2, 3, 3, 3, 1, 1, true, 7, 24, 24); /* 7 one-image chunks: several per thread */
    conv_run(2, 3, 3, 3, 2, 1, false, 7, 48, 48); /* the same through col2im */
}

/* Layers with more than 15625 weights take conv.c's other path: chunks of several images,
 * one product per chunk, results reordered to NCHW. */
static void test_conv_large_layers(void **s)
{
    (void)s;
    conv_run(32, 64, 3, 3, 1, 1, true, 3, 6, 6);   /* chunks of 2 and 1 images */
    conv_run(16, 32, 3, 3, 1, 1, false, 2, 8, 8);  /* small path, 16x16 transpose tiles */
    conv_run(32, 64, 3, 3, 2, 1, false, 5, 7, 7);  /* col2im path, chunks of 3 and 2 */
    conv_run(128, 128, 1, 1, 1, 0, false, 3, 4, 4); /* pointwise, copied into columns */
}

/* The other threading modes: one OpenMP thread, and OpenBLAS threads (a caller that did
 * not use qt_nn_set_threads: chunks then run one after another). */
static void test_conv_thread_modes(void **s)
{
    (void)s;
    qt_nn_set_threads(1);
    conv_run(3, 4, 3, 3, 1, 1, true, 3, 6, 6);
    openblas_set_num_threads(2);
    omp_set_num_threads(2);
    conv_run(3, 4, 3, 3, 2, 1, true, 3, 6, 6);
    conv_run(32, 64, 3, 3, 1, 1, false, 3, 6, 6);
    qt_nn_set_threads(2);
}

/* ---------------- batch normalisation ---------------- */

typedef struct {
    qt_bn l;
    int n, hw;
    float *x, *y;
} bn_case;

static void bn_fwd(void *p)
{
    bn_case *t = p;
    qt_bn_forward(&t->l, t->x, t->y, t->n, t->hw, true);
}

static bn_case bn_make(int c, int n, int hw, float lo, float hi)
{
    bn_case t = {.n = n, .hw = hw};
    t.l.c = c;
    t.l.eps = 1e-5f;
    t.l.momentum = 0.1f;
    t.l.gamma = frand((size_t)c, 0.5f, 1.5f);
    t.l.beta = frand((size_t)c, -0.5f, 0.5f);
    t.l.dgamma = fnan((size_t)c);
    t.l.dbeta = fnan((size_t)c);
    t.l.running_mean = frand((size_t)c, -0.2f, 0.2f);
    t.l.running_var = frand((size_t)c, 0.5f, 1.5f);
    t.l.save_mean = fnan((size_t)c);
    t.l.save_invstd = fnan((size_t)c);
    t.x = frand((size_t)n * c * hw, lo, hi);
    t.y = fnan((size_t)n * c * hw);
    return t;
}

/* Training forward against two-pass double statistics, the PyTorch running update and
 * the normalised output; then eval forward against the running statistics. */
static void bn_check_forward(float lo, float hi)
{
    const int c = 3, n = 4, hw = 10, cnt = n * hw;
    bn_case t = bn_make(c, n, hw, lo, hi);
    float *rm0 = fcopy(t.l.running_mean, c), *rv0 = fcopy(t.l.running_var, c);
    qt_bn_forward(&t.l, t.x, t.y, n, hw, true);
    for (int ch = 0; ch < c; ch++) {
        double mean = 0.0, var = 0.0, mag = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) mean += t.x[(i * c + ch) * hw + j], mag += fabs(t.x[(i * c + ch) * hw + j]);
        mean /= cnt;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) var += pow(t.x[(i * c + ch) * hw + j] - mean, 2);
        double unbiased = var / (cnt - 1);
        var /= cnt;
        double invstd = 1.0 / sqrt(var + 1e-5);
        /* the mean's error is relative to mean|x|; invstd's to invstd (via var) */
        expect_close("bn save_mean", ch, t.l.save_mean[ch], mean, cnt, mag / cnt);
        expect_close("bn save_invstd", ch, t.l.save_invstd[ch], invstd, cnt, invstd * (1 + mag / cnt * sqrt(invstd)));
        expect_close("bn running_mean", ch, t.l.running_mean[ch], 0.9 * rm0[ch] + 0.1 * mean, cnt, fabs(rm0[ch]) + mag / cnt);
        expect_close("bn running_var", ch, t.l.running_var[ch], 0.9 * rv0[ch] + 0.1 * unbiased, cnt, rv0[ch] + unbiased * (1 + mag / cnt));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t o = (size_t)(i * c + ch) * hw + j;
                double want = (t.x[o] - mean) * invstd * t.l.gamma[ch] + t.l.beta[ch];
                expect_close("bn y", o, t.y[o], want, cnt, fabs(t.x[o] - mean) * invstd + 1 + mag / cnt * invstd);
            }
    }
    qt_bn_forward(&t.l, t.x, t.y, n, hw, false);
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < n * hw; i++) {
            size_t o = (size_t)((i / hw) * c + ch) * hw + i % hw;
            double is = 1.0 / sqrt(t.l.running_var[ch] + 1e-5);
            double want = (t.x[o] - t.l.running_mean[ch]) * is * t.l.gamma[ch] + t.l.beta[ch];
            expect_close("bn eval y", o, t.y[o], want, 8, (fabs(t.x[o]) + fabs(t.l.running_mean[ch])) * is + 1);
        }
}

static void test_bn_forward(void **s)
{
    (void)s;
    bn_check_forward(-1.0f, 3.0f);
    bn_check_forward(999.0f, 1001.0f); /* |mean| >> std: the variance must not cancel */
}

static void bn_gradcheck(int c, int n, int hw)
{
    bn_case t = bn_make(c, n, hw, -1.0f, 2.0f);
    size_t nx = (size_t)n * c * hw;
    float *proj = frand(nx, -1.0f, 1.0f), *dx = fnan(nx);
    bn_fwd(&t);
    qt_bn_backward(&t.l, t.x, proj, dx, n, hw);
    float *dg = fcopy(t.l.dgamma, c), *db = fcopy(t.l.dbeta, c);
    /* dx == NULL: same parameter gradients */
    for (int i = 0; i < c; i++) t.l.dgamma[i] = t.l.dbeta[i] = NAN;
    qt_bn_backward(&t.l, t.x, proj, NULL, n, hw);
    assert_memory_equal(t.l.dgamma, dg, c * sizeof(float));
    assert_memory_equal(t.l.dbeta, db, c * sizeof(float));
    gc_problem p = {bn_fwd, &t, t.y, proj, nx, NULL};
    gc_opts o = gc_default_opts;
    o.step = 1e-3f; /* BN is curved in x: keep the h^2 truncation term small */
    assert_int_equal(gc_check(&p, "bn x", t.x, dx, nx, &o), 0);
    assert_int_equal(gc_check(&p, "bn gamma", t.l.gamma, dg, c, NULL), 0);
    assert_int_equal(gc_check(&p, "bn beta", t.l.beta, db, c, NULL), 0);
    /* in place: dx == dy */
    float *inplace = fcopy(proj, nx);
    qt_bn_backward(&t.l, t.x, inplace, inplace, n, hw);
    assert_memory_equal(inplace, dx, nx * sizeof(float));
}

/* The fused BN+ReLU must equal BN then ReLU bit for bit, both ways. */
static void test_bn_relu_fused(void **s)
{
    (void)s;
    const int c = 3, n = 4, hw = 7;
    const size_t nx = (size_t)n * c * hw;
    bn_case a = bn_make(c, n, hw, -1.0f, 1.0f), b = bn_make(c, n, hw, -1.0f, 1.0f);
    memcpy(b.x, a.x, nx * sizeof(float));
    memcpy(b.l.gamma, a.l.gamma, c * sizeof(float));
    memcpy(b.l.beta, a.l.beta, c * sizeof(float));
    memcpy(b.l.running_mean, a.l.running_mean, c * sizeof(float));
    memcpy(b.l.running_var, a.l.running_var, c * sizeof(float));
    qt_bn_forward(&a.l, a.x, a.y, n, hw, true);
    qt_relu_forward(a.y, a.y, nx);
    qt_bn_relu_forward(&b.l, b.x, b.y, n, hw, true);
    assert_memory_equal(a.y, b.y, nx * sizeof(float));
    assert_memory_equal(a.l.running_var, b.l.running_var, c * sizeof(float));
    float *dy = frand(nx, -1, 1), *da = fcopy(dy, nx), *db = fcopy(dy, nx);
    qt_relu_backward(a.y, da, da, nx);
    qt_bn_backward(&a.l, a.x, da, da, n, hw);
    qt_bn_relu_backward(&b.l, b.x, b.y, db, db, n, hw); /* in place */
    assert_memory_equal(da, db, nx * sizeof(float));
    assert_memory_equal(a.l.dgamma, b.l.dgamma, c * sizeof(float));
    assert_memory_equal(a.l.dbeta, b.l.dbeta, c * sizeof(float));
    int zeros = 0;
    for (size_t i = 0; i < nx; i++) zeros += b.y[i] == 0.0f;
    assert_true(zeros > 0 && zeros < (int)nx); /* the mask was exercised */
}

static void test_bn_gradcheck(void **s)
{
    (void)s;
    bn_gradcheck(3, 4, 6);
    bn_gradcheck(2, 1, 9); /* one image: statistics over pixels only */
}

/* ---------------- ReLU, add ---------------- */

typedef struct {
    size_t n;
    float *x, *y;
} relu_case;

static void relu_fwd(void *p)
{
    relu_case *t = p;
    qt_relu_forward(t->x, t->y, t->n);
}

static bool relu_kink(void *ctx, const float *var, size_t i, float h)
{
    (void)ctx;
    return fabsf(var[i]) <= h;
}

static void test_relu(void **s)
{
    (void)s;
    relu_case t = {1001, frand(1001, -1.0f, 1.0f), fnan(1001)};
    t.x[0] = 0.0f;
    t.x[1] = 0.005f; /* within h of the kink: skipped by the checker */
    relu_fwd(&t);
    for (size_t i = 0; i < t.n; i++) assert_true(t.y[i] == (t.x[i] > 0 ? t.x[i] : 0.0f));
    float *proj = frand(t.n, -1.0f, 1.0f), *dx = fnan(t.n);
    qt_relu_backward(t.y, proj, dx, t.n);
    assert_true(dx[0] == 0.0f); /* subgradient 0 at 0 */
    gc_problem p = {relu_fwd, &t, t.y, proj, t.n, relu_kink};
    assert_int_equal(gc_check(&p, "relu x", t.x, dx, t.n, NULL), 0);
    /* in place forward and backward */
    float *y2 = fcopy(t.x, t.n), *d2 = fcopy(proj, t.n);
    qt_relu_forward(y2, y2, t.n);
    qt_relu_backward(y2, d2, d2, t.n);
    assert_memory_equal(y2, t.y, t.n * sizeof(float));
    assert_memory_equal(d2, dx, t.n * sizeof(float));
}

static void test_add(void **s)
{
    (void)s;
    size_t n = 777;
    float *a = frand(n, -1, 1), *b = frand(n, -1, 1), *y = fnan(n);
    qt_add_forward(a, b, y, n);
    for (size_t i = 0; i < n; i++) assert_true(y[i] == a[i] + b[i]);
    float *a2 = fcopy(a, n);
    qt_add_forward(a2, b, a2, n); /* y aliases a */
    assert_memory_equal(a2, y, n * sizeof(float));
    qt_add_inplace(a, b, n);
    assert_memory_equal(a, y, n * sizeof(float));
}

/* ---------------- pooling ---------------- */

typedef struct {
    qt_maxpool p;
    int n, c, h, w;
    float *x, *y;
    int32_t *arg;
} pool_case;

static void pool_fwd(void *q)
{
    pool_case *t = q;
    qt_maxpool_forward(&t->p, t->x, t->y, t->arg, t->n, t->c, t->h, t->w);
}

/* Perturbing x[i] by h changes a max only if another value of a window holding x[i]
 * lies within 2h: inputs are a permutation of well-spaced values, so none does; the
 * predicate is the generic test anyway. */
static bool pool_kink(void *ctx, const float *var, size_t i, float h)
{
    pool_case *t = ctx;
    size_t plane = (size_t)t->h * t->w, base = i - i % plane;
    int iy = (int)(i % plane) / t->w, ix = (int)(i % plane) % t->w;
    for (int y = iy - t->p.k + 1; y < iy + t->p.k; y++)
        for (int x = ix - t->p.k + 1; x < ix + t->p.k; x++)
            if (y >= 0 && y < t->h && x >= 0 && x < t->w && (y != iy || x != ix) &&
                fabsf(var[base + (size_t)y * t->w + x] - var[i]) <= 2 * h)
                return true;
    return false;
}

static void pool_run(int k, int stride, int pad, int n, int c, int h, int w)
{
    pool_case t = {{k, stride, pad}, n, c, h, w, NULL, NULL, NULL};
    int oh, ow;
    qt_maxpool_out_hw(&t.p, h, w, &oh, &ow);
    size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * oh * ow;
    t.x = fbuf(nx);
    for (size_t i = 0; i < nx; i++) t.x[i] = 0.05f * (float)((i * 7919) % nx) - 3.0f; /* distinct, spaced 0.05 */
    t.y = fnan(ny);
    t.arg = owned(ny * sizeof(int32_t));
    pool_fwd(&t);
    for (size_t pl = 0; pl < (size_t)n * c; pl++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float best = -INFINITY;
                int at = -1;
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++) {
                        int iy = oy * stride - pad + a, ix = ox * stride - pad + b;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        float v = t.x[pl * h * w + iy * w + ix];
                        if (v > best) best = v, at = iy * w + ix;
                    }
                size_t o = pl * oh * ow + oy * ow + ox;
                assert_true(t.y[o] == best);
                assert_int_equal(t.arg[o], at);
            }
    float *proj = frand(ny, -1, 1), *dx = fnan(nx);
    qt_maxpool_backward(&t.p, proj, t.arg, dx, n, c, h, w);
    gc_problem p = {pool_fwd, &t, t.y, proj, ny, pool_kink};
    assert_int_equal(gc_check(&p, "maxpool x", t.x, dx, nx, NULL), 0);
}

static void test_maxpool(void **s)
{
    (void)s;
    /* ties go to the first cell in row-major order; a NaN wins */
    qt_maxpool p = {2, 2, 0};
    float x[8] = {1, 2, 2, 0, NAN, 1, 5, 5}, y[2];
    int32_t arg[2];
    qt_maxpool_forward(&p, x, y, arg, 1, 2, 2, 2);
    assert_true(y[0] == 2.0f && arg[0] == 1);
    assert_true(isnan(y[1]) && arg[1] == 0);
    pool_run(3, 2, 1, 2, 3, 7, 8); /* ImageNet stem pool; windows overlap */
    pool_run(2, 2, 0, 1, 2, 6, 6);
}

typedef struct {
    int n, c, hw;
    float *x, *y;
} gap_case;

static void gap_fwd(void *p)
{
    gap_case *t = p;
    qt_gap_forward(t->x, t->y, t->n, t->c, t->hw);
}

static void test_gap(void **s)
{
    (void)s;
    gap_case t = {3, 4, 25, NULL, NULL};
    size_t nx = 3 * 4 * 25, ny = 12;
    t.x = frand(nx, -1, 2);
    t.y = fnan(ny);
    gap_fwd(&t);
    for (size_t pl = 0; pl < ny; pl++) {
        double m = 0, mag = 0;
        for (int j = 0; j < 25; j++) m += t.x[pl * 25 + j], mag += fabs(t.x[pl * 25 + j]);
        expect_close("gap y", pl, t.y[pl], m / 25, 27, mag / 25);
    }
    float *proj = frand(ny, -1, 1), *dx = fnan(nx);
    qt_gap_backward(proj, dx, 3, 4, 25);
    gc_problem p = {gap_fwd, &t, t.y, proj, ny, NULL};
    assert_int_equal(gc_check(&p, "gap x", t.x, dx, nx, NULL), 0);
}

/* ---------------- linear ---------------- */

typedef struct {
    qt_linear l;
    int n;
    float *x, *y;
} fc_case;

static void fc_fwd(void *p)
{
    fc_case *t = p;
    qt_linear_forward(&t->l, t->x, t->y, t->n);
}

static void fc_run(bool bias)
{
    fc_case t = {{7, 5, NULL, NULL, NULL, NULL}, 6, NULL, NULL};
    size_t nw = 35, nx = 42, ny = 30;
    t.l.w = frand(nw, -0.5f, 0.5f);
    t.l.dw = fnan(nw);
    if (bias) {
        t.l.b = frand(5, -0.5f, 0.5f);
        t.l.db = fnan(5);
    }
    t.x = frand(nx, -1, 1);
    t.y = fnan(ny);
    fc_fwd(&t);
    for (int i = 0; i < 6; i++)
        for (int o = 0; o < 5; o++) {
            double sm = bias ? t.l.b[o] : 0, mag = fabs(sm);
            for (int j = 0; j < 7; j++) sm += (double)t.x[i * 7 + j] * t.l.w[o * 7 + j], mag += fabs(t.x[i * 7 + j] * t.l.w[o * 7 + j]);
            expect_close("linear y", (size_t)(i * 5 + o), t.y[i * 5 + o], sm, 9, mag);
        }
    float *proj = frand(ny, -1, 1), *dx = fnan(nx);
    qt_linear_backward(&t.l, t.x, proj, dx, 6);
    float *dw = fcopy(t.l.dw, nw), *db = bias ? fcopy(t.l.db, 5) : NULL;
    qt_linear_backward(&t.l, t.x, proj, NULL, 6);
    assert_memory_equal(t.l.dw, dw, nw * sizeof(float));
    gc_problem p = {fc_fwd, &t, t.y, proj, ny, NULL};
    assert_int_equal(gc_check(&p, "linear x", t.x, dx, nx, NULL), 0);
    assert_int_equal(gc_check(&p, "linear w", t.l.w, dw, nw, NULL), 0);
    if (bias) assert_int_equal(gc_check(&p, "linear b", t.l.b, db, 5, NULL), 0);
}

static void test_linear(void **s)
{
    (void)s;
    fc_run(true);
    fc_run(false);
}

/* ---------------- softmax cross-entropy ---------------- */

typedef struct {
    int n, k;
    float smoothing, loss;
    float *logits, *probs, *mask;
    int32_t *labels;
} xent_case;

static void xent_fwd(void *p)
{
    xent_case *t = p;
    t->loss = qt_softmax_xent_forward(t->logits, t->labels, t->mask, t->smoothing, t->probs, t->n, t->k);
}

/* Double reference: returns the masked mean loss, writes probabilities. */
static double xent_ref(const xent_case *t, double *probs)
{
    double total = 0;
    int count = 0;
    for (int i = 0; i < t->n; i++) {
        const float *z = t->logits + i * t->k;
        double m = z[0], s = 0, sum_logp = 0;
        for (int j = 1; j < t->k; j++) m = fmax(m, z[j]);
        for (int j = 0; j < t->k; j++) s += exp(z[j] - m);
        for (int j = 0; j < t->k; j++) probs[i * t->k + j] = exp(z[j] - m) / s, sum_logp += z[j] - m - log(s);
        double wt = t->mask ? t->mask[i] : 1.0;
        if (wt > 0) count++;
        double logp_y = z[t->labels[i]] - m - log(s);
        total += wt * -((1 - t->smoothing) * logp_y + t->smoothing * sum_logp / t->k);
    }
    return count ? total / count : 0.0;
}

static void xent_run(float smoothing, bool masked, float scale)
{
    xent_case t = {5, 7, smoothing, 0, NULL, NULL, NULL, NULL};
    size_t nz = 35;
    t.logits = frand(nz, -3 * scale, 3 * scale);
    t.probs = fnan(nz);
    t.labels = owned(5 * sizeof(int32_t));
    for (int i = 0; i < 5; i++) t.labels[i] = (i * 3 + 1) % 7;
    if (masked) {
        t.mask = fbuf(5);
        for (int i = 0; i < 5; i++) t.mask[i] = i == 2 ? 0.0f : 1.0f;
    }
    double *pr = owned(nz * sizeof(double));
    xent_fwd(&t);
    double want = xent_ref(&t, pr);
    assert_true(isfinite(t.loss));
    /* log-sum-exp over k terms of magnitude |z - max| */
    expect_close("xent loss", 0, t.loss, want, 2 * t.k, fabs(want) + 6 * scale + 1);
    for (size_t j = 0; j < nz; j++) expect_close("xent prob", j, t.probs[j], pr[j], 2 * t.k, pr[j] + 1e-30);
    float *d = fnan(nz), one = 1.0f;
    qt_softmax_xent_backward(t.probs, t.labels, t.mask, smoothing, d, 5, 7);
    if (masked)
        for (int j = 0; j < 7; j++) assert_true(d[2 * 7 + j] == 0.0f);
    gc_problem p = {xent_fwd, &t, &t.loss, &one, 1, NULL};
    gc_opts o = gc_default_opts;
    o.step = 1e-2f * scale;
    assert_int_equal(gc_check(&p, "xent logits", t.logits, d, nz, &o), 0);
}

static void test_softmax_xent(void **s)
{
    (void)s;
    xent_run(0.0f, false, 1.0f);
    xent_run(0.1f, true, 1.0f);
    xent_run(0.2f, true, 300.0f); /* logits in the hundreds: exp must not overflow */
    /* all rows masked out: loss 0, gradient 0 */
    float z[6] = {1, 2, 3, 4, 5, 6}, pr[6], d[6], mask[2] = {0, 0};
    int32_t lab[2] = {0, 1};
    assert_true(qt_softmax_xent_forward(z, lab, mask, 0.1f, pr, 2, 3) == 0.0f);
    qt_softmax_xent_backward(pr, lab, mask, 0.1f, d, 2, 3);
    for (int j = 0; j < 6; j++) assert_true(d[j] == 0.0f);
}

static void test_topk(void **s)
{
    (void)s;
    const float z[4 * 4] = {0.1f, 0.9f, 0.3f, 0.2f,  /* label 1: top-1 */
                            0.5f, 0.5f, 0.1f, 0.0f,  /* label 1: tie with 0, 0 wins: top-2 */
                            0.0f, 0.1f, 0.2f, 0.3f,  /* label 0: last, top-4 */
                            0.4f, 0.3f, 0.2f, 0.1f}; /* label 0: top-1 but masked out */
    const int32_t lab[4] = {1, 1, 0, 0};
    const float mask[4] = {1, 1, 1, 0};
    assert_int_equal(qt_topk_correct(z, lab, mask, 4, 4, 1), 1);
    assert_int_equal(qt_topk_correct(z, lab, mask, 4, 4, 2), 2);
    assert_int_equal(qt_topk_correct(z, lab, mask, 4, 4, 3), 2);
    assert_int_equal(qt_topk_correct(z, lab, mask, 4, 4, 4), 3);
    assert_int_equal(qt_topk_correct(z, lab, NULL, 4, 4, 1), 2);
}

/* The checker itself must catch a wrong gradient (and stop reporting after 10). */
static void test_gradcheck_catches_errors(void **s)
{
    (void)s;
    gap_case t = {1, 30, 4, frand(120, -1, 1), fnan(30)};
    float *proj = frand(30, -1, 1), *dx = fnan(120);
    qt_gap_backward(proj, dx, 1, 30, 4);
    gc_problem p = {gap_fwd, &t, t.y, proj, 30, NULL};
    dx[5] *= 1.01f; /* 1% off on one element */
    assert_int_equal(gc_check(&p, "gap x (one wrong, expected)", t.x, dx, 120, NULL), 1);
    for (int i = 0; i < 120; i++) dx[i] = -dx[i];
    assert_int_equal(gc_check(&p, "gap x (all wrong, expected)", t.x, dx, 120, NULL), 10);
}

int main(void)
{
    qt_nn_set_threads(2);
#define T(f) cmocka_unit_test_setup_teardown(f, reset_stream, free_owned)
    const struct CMUnitTest tests[] = {
        T(test_conv_3x3_s1), T(test_conv_3x3_s2),
        T(test_conv_1x1), T(test_conv_7x7_s2_p3),
        T(test_conv_odd_shapes), T(test_conv_large_layers),
        T(test_conv_thread_modes),
        T(test_bn_forward), T(test_bn_gradcheck),
        T(test_bn_relu_fused), T(test_relu),
        T(test_add), T(test_maxpool),
        T(test_gap), T(test_linear),
        T(test_softmax_xent), T(test_topk),
        T(test_gradcheck_catches_errors),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
