/* test_model.c — ResNet construction (parameter counts equal torchvision's), the arena
 * layout contract (backward order, watermark), and whole-model gradients against
 * central differences. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/philox.h"
#include "core/qt.h"
#include "nn/model.h"
#include "nn/model_priv.h"

static qt_model *make(int variant, int depth, int classes, int c, int h, int w)
{
    qt_model_opts o;
    qt_model_opts_default(&o);
    o.variant = variant;
    o.depth = depth;
    o.classes = classes;
    o.in_channels = c;
    o.in_height = h;
    o.in_width = w;
    qt_model *m = NULL;
    assert_int_equal(qt_model_create(&o, &m), 0);
    return m;
}

static void test_param_counts(void **state)
{
    (void)state;
    /* torchvision's counts (resnet18..152) and the option-B CIFAR ResNets of
     * shared/bench/torch_baseline.py, computed with PyTorch. */
    static const struct { int variant, depth, classes; size_t params; } cases[] = {
        {QT_VARIANT_CIFAR, 8, 10, 78042},         {QT_VARIANT_CIFAR, 20, 10, 272474},
        {QT_VARIANT_CIFAR, 32, 10, 466906},       {QT_VARIANT_CIFAR, 56, 10, 855770},
        {QT_VARIANT_CIFAR, 110, 10, 1730714},     {QT_VARIANT_CIFAR, 20, 100, 278324},
        {QT_VARIANT_IMAGENET, 18, 1000, 11689512}, {QT_VARIANT_IMAGENET, 34, 1000, 21797672},
        {QT_VARIANT_IMAGENET, 50, 1000, 25557032}, {QT_VARIANT_IMAGENET, 101, 1000, 44549160},
        {QT_VARIANT_IMAGENET, 152, 1000, 60192808},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int hw = cases[i].variant == QT_VARIANT_CIFAR ? 32 : 224;
        qt_model *m = make(cases[i].variant, cases[i].depth, cases[i].classes, 3, hw, hw);
        if (qt_model_param_count(m) != cases[i].params)
            fail_msg("resnet%d variant %d: %zu params, expected %zu", cases[i].depth, cases[i].variant,
                     qt_model_param_count(m), cases[i].params);
        qt_model_destroy(m);
    }
    /* torchvision's AlexNet and VGGs (convolutions with biases). */
    static const struct { qt_arch arch; int depth; size_t params; } plain[] = {
        {QT_ARCH_ALEXNET, 0, 61100840}, {QT_ARCH_VGG, 11, 132863336}, {QT_ARCH_VGG, 13, 133047848},
        {QT_ARCH_VGG, 16, 138357544},   {QT_ARCH_VGG, 19, 143667240},
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        qt_model_opts o;
        qt_model_opts_default(&o);
        o.arch = plain[i].arch;
        o.depth = plain[i].depth;
        o.classes = 1000;
        o.in_height = o.in_width = 224;
        qt_model *pm = NULL;
        assert_int_equal(qt_model_create(&o, &pm), 0);
        if (qt_model_param_count(pm) != plain[i].params)
            fail_msg("arch %d depth %d: %zu params, expected %zu", plain[i].arch, plain[i].depth,
                     qt_model_param_count(pm), plain[i].params);
        qt_model_destroy(pm);
    }
    /* ResNet-50 forward FLOPs: torchvision's ~4.09 GMACs, i.e. ~8.2e9 (convs + fc). */
    qt_model *m = make(QT_VARIANT_IMAGENET, 50, 1000, 3, 224, 224);
    double gf = (double)qt_model_flops_per_sample(m) / 1e9;
    assert_true(gf > 8.1 && gf < 8.3);
    qt_model_destroy(m);
}

static void test_bad_depth(void **state)
{
    (void)state;
    qt_model_opts o;
    qt_model_opts_default(&o);
    o.depth = 21;
    qt_model *m = (qt_model *)1;
    assert_true(qt_model_create(&o, &m) < 0);
    assert_null(m);
    o.variant = QT_VARIANT_IMAGENET;
    o.depth = 20;
    assert_true(qt_model_create(&o, &m) < 0);
}

static void test_layout_backward_order(void **state)
{
    (void)state;
    qt_model *m = make(QT_VARIANT_IMAGENET, 18, 7, 3, 32, 32);
    int n;
    const qt_param_span *sp = qt_model_spans(m, &n);
    assert_true(n > 4);
    assert_string_equal(sp[0].name, "fc.weight");
    assert_string_equal(sp[1].name, "fc.bias");
    assert_string_equal(sp[n - 1].name, "conv1.weight");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(sp[i].offset, off); /* contiguous, no gaps, in order */
        size_t prod = 1;
        for (int d = 0; d < sp[i].ndim; d++) prod *= (size_t)sp[i].shape[d];
        assert_int_equal(prod, sp[i].count);
        assert_int_equal(sp[i].decay, sp[i].ndim > 1);
        off += sp[i].count;
    }
    assert_int_equal(off, qt_model_param_count(m));
    qt_model_destroy(m);
}

static void fill_input(float *x, int32_t *y, int n, int c, int h, int w, int classes, uint64_t seed)
{
    qt_philox_key k = qt_philox_make_key(seed, QT_RNG_TEST);
    size_t count = (size_t)n * c * h * w;
    for (size_t i = 0; i < count; i++) x[i] = 2.0f * qt_u32_to_unit(qt_philox_u32(k, i, 0, 0)) - 1.0f;
    for (int i = 0; i < n; i++) y[i] = (int32_t)(qt_philox_u32(k, i, 1, 0) % (uint32_t)classes);
}

/* The watermark contract: when ready(w) is called, grads [0, w) already hold their final
 * values; the watermark grows and ends at the parameter count. */
typedef struct {
    const float *grads;
    float *snapshot;
    size_t last, calls;
    int violations;
} wm_state;

static void on_ready(void *ctx, size_t w)
{
    wm_state *s = ctx;
    if (w < s->last) s->violations++;
    for (size_t i = s->last; i < w; i++) s->snapshot[i] = s->grads[i];
    s->last = w;
    s->calls++;
}

static void test_watermark(void **state)
{
    (void)state;
    const int n = 3, classes = 5;
    qt_model *m = make(QT_VARIANT_IMAGENET, 18, classes, 3, 32, 32);
    qt_model_alloc(m, n);
    qt_model_init(m, 7);
    size_t np = qt_model_param_count(m);
    float *x = malloc(sizeof(float) * n * 3 * 32 * 32);
    int32_t y[3];
    fill_input(x, y, n, 3, 32, 32, classes, 1);
    wm_state s = {.grads = qt_model_grads(m), .snapshot = calloc(np, sizeof(float))};
    memset(qt_model_grads(m), 0x7f, np * sizeof(float)); /* garbage: backward must overwrite all */
    qt_model_forward(m, x, y, n, true, NULL, NULL);
    qt_model_backward(m, on_ready, &s);
    assert_int_equal(s.violations, 0);
    assert_int_equal(s.last, np);
    assert_true(s.calls > 10);
    const float *g = qt_model_grads(m);
    for (size_t i = 0; i < np; i++)
        if (memcmp(&g[i], &s.snapshot[i], sizeof(float)) != 0 || !isfinite(g[i]))
            fail_msg("grad %zu changed after its watermark (%g then %g)", i, s.snapshot[i], g[i]);
    free(s.snapshot);
    free(x);
    qt_model_destroy(m);
}

/* Central differences of the mean loss against backward, for a sample of parameters of
 * every span. Tolerance: |a - b| <= 2e-3 + 3e-2 * max(|a|, |b|) (float32 forward, h=4e-3);
 * a point that fails is retried with h/4 to skip ReLU/max-pool kinks (Caffe's approach). */
static void gradcheck_model(qt_model *m, int n, int c, int h, int w, int classes, int span_stride, int points,
                            double span_share)
{
    qt_model_alloc(m, n);
    qt_model_init(m, 3);
    size_t np = qt_model_param_count(m);
    float *x = malloc(sizeof(float) * (size_t)n * c * h * w);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    fill_input(x, y, n, c, h, w, classes, 2);
    float *p = qt_model_params(m);
    /* Non-trivial BN affine parameters so their gradients are exercised. */
    int ns;
    const qt_param_span *sp = qt_model_spans(m, &ns);
    qt_philox_key k = qt_philox_make_key(11, QT_RNG_TEST);
    for (int i = 0; i < ns; i++)
        if (sp[i].ndim == 1)
            for (size_t j = 0; j < sp[i].count; j++)
                p[sp[i].offset + j] += 0.3f * (qt_u32_to_unit(qt_philox_u32(k, sp[i].offset + j, 0, 0)) - 0.5f);
    qt_model_forward(m, x, y, n, true, NULL, NULL);
    qt_model_backward(m, NULL, NULL);
    float *ana = malloc(np * sizeof(float));
    memcpy(ana, qt_model_grads(m), np * sizeof(float));
    int checked = 0, bad = 0;
    for (int i = 0; i < ns; i++) {
        if (i % span_stride != 0 || i >= (int)(span_share * ns + 0.5)) continue;
        for (int t = 0; t < points; t++) {
            size_t j = sp[i].offset + (size_t)qt_philox_u32(k, (uint64_t)i * 16 + t, 1, 0) % sp[i].count;
            float orig = p[j];
            double num = 0;
            bool ok = false;
            for (double hstep = 4e-3; hstep > 1e-4 && !ok; hstep /= 4) {
                p[j] = orig + (float)hstep;
                double lp = qt_model_forward(m, x, y, n, true, NULL, NULL);
                p[j] = orig - (float)hstep;
                double lm = qt_model_forward(m, x, y, n, true, NULL, NULL);
                p[j] = orig;
                num = (lp - lm) / (2 * hstep);
                ok = fabs(num - ana[j]) <= 2e-3 + 3e-2 * fmax(fabs(num), fabs((double)ana[j]));
            }
            checked++;
            if (!ok && bad++ < 10)
                print_error("%s[%zu]: backward %g, central difference %g\n", sp[i].name, j - sp[i].offset,
                            (double)ana[j], num);
        }
    }
    assert_true(checked >= 20);
    assert_int_equal(bad, 0);
    free(ana);
    free(x);
    free(y);
}

static void test_gradcheck_cifar(void **state)
{
    (void)state;
    qt_model *m = make(QT_VARIANT_CIFAR, 8, 4, 3, 8, 8);
    gradcheck_model(m, 3, 3, 8, 8, 4, 1, 4, 1.0);
    qt_model_destroy(m);
}

static void test_gradcheck_imagenet_bottleneck(void **state)
{
    (void)state;
    /* ResNet-50's bottlenecks and downsample shortcuts, checked on the back half of the
     * network (arena order = backward order, so the first half of the spans): the
     * parameters of the first stages sit under ~40 ReLUs and a max pool, whose kinks make
     * central differences unreliable for them (the layers themselves are checked one by
     * one in test_layers; the CIFAR test above checks every span of a whole net). At 64x64
     * the last stage is 2x2, so its BatchNorms see 8 values per channel (at 1x1 and batch
     * 2 they would normalise 2 values to +-1, a function too flat for differences). */
    qt_model *m = make(QT_VARIANT_IMAGENET, 50, 5, 3, 64, 64);
    gradcheck_model(m, 2, 3, 64, 64, 5, 3, 1, 0.5);
    qt_model_destroy(m);
}

/* A hand-built net with a biased conv, ReLU, dropout and max pool (the AlexNet/VGG op
 * kinds at toy size): gradients against central differences. With the step fixed, the
 * dropout mask is a fixed function, and backward must recompute exactly that mask. */
static void test_gradcheck_dropout_conv_bias(void **state)
{
    (void)state;
    qt_model_opts o;
    qt_model_opts_default(&o);
    o.classes = 3;
    qt_model *m = qt_calloc(1, sizeof *m);
    m->opts = o;
    int x = model_add_slot(m, 2, 6, 6);
    x = model_relu(m, "r1", model_conv_bias(m, "c1", x, 4, 3, 1, 1));
    x = model_maxpool(m, "p1", x, 2, 2, 0);
    x = model_dropout(m, "d1", x, 0.4f);
    m->logits = model_linear(m, "fc", x, 3);
    model_layout(m);
    qt_model_set_step(m, 9, 4);
    int ns;
    const qt_param_span *sp = qt_model_spans(m, &ns);
    assert_int_equal(ns, 4); /* fc.weight, fc.bias, c1.weight, c1.bias */
    assert_string_equal(sp[3].name, "c1.bias");
    gradcheck_model(m, 4, 2, 6, 6, 3, 1, 6, 1.0);
    qt_model_destroy(m);
}

/* The speech network (2 bidirectional LSTMP layers with peepholes, linear, masked
 * cross-entropy) against central differences, over padded sequences of different
 * lengths; then the truncated-BPTT path (carry) equals one whole pass in forward. */
static void test_gradcheck_speech(void **state)
{
    (void)state;
    const int T = 7, N = 3, F = 5, K = 4;
    qt_model_opts o;
    qt_model_opts_default(&o);
    o.arch = QT_ARCH_LSTM;
    o.in_channels = F;
    o.classes = K;
    o.layers = 2;
    o.hidden = 6;
    o.proj = 4;
    o.peephole = true;
    o.bidirectional = true;
    o.max_frames = T;
    qt_model *m = NULL;
    assert_int_equal(qt_model_create(&o, &m), 0);
    assert_true(qt_model_is_sequence(m));
    qt_model_alloc(m, N);
    qt_model_init(m, 3);
    size_t np = qt_model_param_count(m);
    for (size_t i = 0; i < np; i++) qt_model_params(m)[i] *= 2.0f; /* stronger signal into the lower layer */
    float x[7 * 3 * 5], mask[7 * 3];
    int32_t y[7 * 3], len[3] = {7, 4, 1};
    qt_philox_key k = qt_philox_make_key(21, QT_RNG_TEST);
    for (int i = 0; i < T * N * F; i++) x[i] = 2.0f * qt_u32_to_unit(qt_philox_u32(k, (uint64_t)i, 0, 0)) - 1.0f;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            mask[t * N + n] = t < len[n] ? 1.0f : 0.0f;
            y[t * N + n] = t < len[n] ? (int32_t)(qt_philox_u32(k, (uint64_t)(t * N + n), 1, 0) % K) : -1;
        }
    qt_model_forward_seq(m, x, len, y, mask, T, N, true, false, NULL, NULL);
    wm_state s = {.grads = qt_model_grads(m), .snapshot = calloc(np, sizeof(float))};
    qt_model_backward(m, on_ready, &s);
    assert_int_equal(s.violations, 0);
    assert_int_equal(s.last, np);
    float *ana = malloc(np * sizeof(float));
    memcpy(ana, qt_model_grads(m), np * sizeof(float));
    assert_memory_equal(ana, s.snapshot, np * sizeof(float)); /* final when announced */
    float *p = qt_model_params(m);
    int ns, bad = 0, checked = 0;
    const qt_param_span *sp = qt_model_spans(m, &ns);
    for (int i = 0; i < ns; i++)
        for (int t = 0; t < 3; t++) {
            size_t j = sp[i].offset + (size_t)qt_philox_u32(k, (uint64_t)i * 8 + t, 2, 0) % sp[i].count;
            float orig = p[j];
            double hstep = 1e-2; /* the net is smooth (no kinks): a wide step keeps float noise low */
            p[j] = orig + (float)hstep;
            double lp = qt_model_forward_seq(m, x, len, y, mask, T, N, true, false, NULL, NULL);
            p[j] = orig - (float)hstep;
            double lm = qt_model_forward_seq(m, x, len, y, mask, T, N, true, false, NULL, NULL);
            p[j] = orig;
            double num = (lp - lm) / (2 * hstep);
            checked++;
            /* Float forward noise ~ 1e-7 * loss / h ~ 1.5e-5; lower-layer gradients are ~1e-4. */
            if (fabs(num - ana[j]) > 3e-5 + 3e-2 * fmax(fabs(num), fabs((double)ana[j])) && bad++ < 10)
                print_error("%s[%zu]: backward %g, central difference %g\n", sp[i].name, j - sp[i].offset,
                            (double)ana[j], num);
        }
    assert_true(checked >= 40);
    assert_int_equal(bad, 0);
    free(ana);
    free(s.snapshot);
    qt_model_destroy(m);

    /* Unidirectional: chunks 4 + 3 with carried state give the same loss terms as one
     * pass over 7 frames (forward only; the reverse direction cannot be chunked). */
    o.bidirectional = false;
    assert_int_equal(qt_model_create(&o, &m), 0);
    qt_model_alloc(m, N);
    qt_model_init(m, 3);
    int64_t c_all = 0, f_all = 0, c1 = 0, f1 = 0, c2 = 0, f2 = 0;
    double whole = qt_model_forward_seq(m, x, len, y, mask, T, N, false, false, &c_all, &f_all);
    int32_t l1[3], l2[3];
    for (int n = 0; n < N; n++) {
        l1[n] = len[n] < 4 ? len[n] : 4;
        l2[n] = len[n] > 4 ? len[n] - 4 : 0;
    }
    double a = qt_model_forward_seq(m, x, l1, y, mask, 4, N, false, false, &c1, &f1);
    double b = qt_model_forward_seq(m, x + 4 * N * F, l2, y + 4 * N, mask + 4 * N, 3, N, false, true, &c2, &f2);
    assert_int_equal(f1 + f2, f_all);
    assert_int_equal(c1 + c2, c_all);
    assert_true(fabs((a * (double)f1 + b * (double)f2) / (double)f_all - whole) < 1e-5 * fabs(whole) + 1e-6);
    qt_model_destroy(m);
}

/* The model can fit a fixed small batch: plain SGD drives the loss well down. */
static void test_overfit_batch(void **state)
{
    (void)state;
    const int n = 8, classes = 4;
    qt_model *m = make(QT_VARIANT_CIFAR, 8, classes, 3, 8, 8);
    qt_model_alloc(m, n);
    qt_model_init(m, 5);
    float x[8 * 3 * 8 * 8];
    int32_t y[8];
    fill_input(x, y, n, 3, 8, 8, classes, 4);
    float first = 0, last = 0;
    size_t np = qt_model_param_count(m);
    for (int it = 0; it < 60; it++) {
        float l = qt_model_forward(m, x, y, n, true, NULL, NULL);
        if (it == 0) first = l;
        last = l;
        qt_model_backward(m, NULL, NULL);
        float *p = qt_model_params(m);
        const float *g = qt_model_grads(m);
        for (size_t i = 0; i < np; i++) p[i] -= 0.05f * g[i];
    }
    int c1 = 0;
    qt_model_forward(m, x, y, n, true, &c1, NULL);
    assert_true(last < 0.3f * first);
    assert_int_equal(c1, n);
    qt_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_bad_depth),
        cmocka_unit_test(test_layout_backward_order),
        cmocka_unit_test(test_watermark),
        cmocka_unit_test(test_gradcheck_cifar),
        cmocka_unit_test(test_gradcheck_imagenet_bottleneck),
        cmocka_unit_test(test_gradcheck_dropout_conv_bias),
        cmocka_unit_test(test_gradcheck_speech),
        cmocka_unit_test(test_overfit_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
