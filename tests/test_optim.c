/* test_optim.c — optimizer updates against hand-computed values and a double-precision
 * transcription of torch.optim's formulas (written from the formulas, not from our
 * output), LR schedules at their boundary steps, gradient clipping, option checks, and
 * the threaded span split against a serial loop (bit-exact). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "nn/optim.h"

/* |got - ref| <= atol + rtol*|ref| with rtol = 4 * ops * FLT_EPSILON: each fp32 operation
 * in the chain that produced `got` may add half an ulp of relative error; the 4 leaves
 * room for cancellation in differences like p - lr*d. */
static void check_close(const float *got, const double *ref, int n, int ops, const char *what)
{
    double rtol = 4.0 * ops * FLT_EPSILON, atol = 1e-7;
    int bad = 0;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        worst = fmax(worst, err);
        if (!(err <= atol + rtol * fabs(ref[i])) && bad++ < 10)
            fprintf(stderr, "%s[%d]: got %.9g want %.9g\n", what, i, (double)got[i], ref[i]);
    }
    if (bad) fprintf(stderr, "%s: %d mismatches, max |diff| %.3g\n", what, bad, worst);
    assert_int_equal(bad, 0);
}

static qt_optim_opts sgd_opts(float lr, float mom, float wd, bool nesterov)
{
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    o.lr = lr;
    o.momentum = mom;
    o.weight_decay = wd;
    o.nesterov = nesterov;
    return o;
}

/* ---- literal hand computations (lr 0.1, momentum 0.9, p = 1, g = 1 twice) ---- */
static void test_sgd_literal(void **state)
{
    (void)state;
    qt_param_group all = {0, 1, true};
    float g = 1.0f;

    /* plain momentum: step 1 buf = 1, p = 1 - 0.1 = 0.9; step 2 buf = 0.9 + 1 = 1.9,
     * p = 0.9 - 0.19 = 0.71 */
    qt_optim_opts o = sgd_opts(0.1f, 0.9f, 0.0f, false);
    float p = 1.0f, buf = 0.0f;
    qt_optim_step(&o, o.lr, 1, &all, 1, &p, &g, &buf, 1);
    assert_float_equal(buf, 1.0f, 1e-7);
    assert_float_equal(p, 0.9f, 1e-7);
    qt_optim_step(&o, o.lr, 2, &all, 1, &p, &g, &buf, 1);
    assert_float_equal(buf, 1.9f, 1e-6);
    assert_float_equal(p, 0.71f, 1e-6);

    /* Nesterov: step 1 buf = 1, d = 1 + 0.9 = 1.9, p = 0.81; step 2 buf = 1.9,
     * d = 1 + 0.9*1.9 = 2.71, p = 0.81 - 0.271 = 0.539 */
    o = sgd_opts(0.1f, 0.9f, 0.0f, true);
    p = 1.0f;
    buf = 0.0f;
    qt_optim_step(&o, o.lr, 1, &all, 1, &p, &g, &buf, 1);
    assert_float_equal(p, 0.81f, 1e-6);
    qt_optim_step(&o, o.lr, 2, &all, 1, &p, &g, &buf, 1);
    assert_float_equal(buf, 1.9f, 1e-6);
    assert_float_equal(p, 0.539f, 1e-6);

    /* weight decay 0.1 with a zero gradient: d = 0.1*2 = 0.2, p = 2 - 0.1*0.2 = 1.98;
     * the same parameter in a no-decay group does not move. */
    o = sgd_opts(0.1f, 0.9f, 0.1f, false);
    float pp[2] = {2.0f, 2.0f}, gg[2] = {0.0f, 0.0f}, bb[2] = {0.0f, 0.0f};
    qt_param_group groups[2] = {{0, 1, true}, {1, 1, false}};
    qt_optim_step(&o, o.lr, 1, groups, 2, pp, gg, bb, 2);
    assert_float_equal(pp[0], 1.98f, 1e-6);
    assert_float_equal(bb[0], 0.2f, 1e-7);
    assert_true(pp[1] == 2.0f && bb[1] == 0.0f);

    /* no momentum: no state at all, p = 1 - 0.5*(3 + 0.01*1) = -0.505 */
    o = sgd_opts(0.5f, 0.0f, 0.01f, false);
    assert_int_equal(qt_optim_state_floats(&o, 7), 0);
    p = 1.0f;
    g = 3.0f;
    qt_optim_step(&o, o.lr, 1, &all, 1, &p, &g, NULL, 1);
    assert_float_equal(p, -0.505f, 1e-6);
}

/* torch.optim.SGD transcribed in double, with its explicit first-step rule buf = d. */
static void ref_sgd(double *p, double *buf, const double *g, int n, int t, double lr, double mom,
                    double wd, bool nesterov, const bool *decay)
{
    for (int i = 0; i < n; i++) {
        double d = g[i] + (decay[i] ? wd * p[i] : 0.0);
        if (mom != 0.0) {
            buf[i] = t == 1 ? d : mom * buf[i] + d;
            d = nesterov ? d + mom * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

static double grad_at(int t, int i) { return sin(1.3 * t + 0.7 * i) * (1.0 + 0.25 * i); }

/* Five elements in three groups (decay, no decay, decay), element 4 in no group (frozen);
 * four steps with changing gradients and a changing lr, plain momentum and Nesterov. */
static void run_sgd_case(bool nesterov)
{
    enum { N = 5, STEPS = 4 };
    qt_optim_opts o = sgd_opts(0.05f, 0.9f, 5e-3f, nesterov);
    qt_param_group groups[3] = {{0, 2, true}, {2, 1, false}, {3, 1, true}};
    bool decay[N] = {true, true, false, true, false};
    const double p0[N] = {0.5, -1.25, 2.0, 0.125, 3.0};
    float p[N], g[N], buf[N] = {0};
    double rp[N], rbuf[N] = {0}, rg[N];
    for (int i = 0; i < N; i++) p[i] = (float)(rp[i] = p0[i]);
    for (int t = 1; t <= STEPS; t++) {
        double lr = 0.05 * (1.0 - 0.2 * (t - 1));
        for (int i = 0; i < N; i++) g[i] = (float)(rg[i] = (float)grad_at(t, i));
        qt_optim_step(&o, (float)lr, t, groups, 3, p, g, buf, N);
        ref_sgd(rp, rbuf, rg, N - 1, t, (float)lr, (float)o.momentum, (float)o.weight_decay,
                nesterov, decay);
        check_close(p, rp, N - 1, 8 * t, nesterov ? "nesterov p" : "sgd p");
        check_close(buf, rbuf, N - 1, 6 * t, nesterov ? "nesterov buf" : "sgd buf");
        assert_true(p[N - 1] == 3.0f && buf[N - 1] == 0.0f); /* outside every group */
    }
}

static void test_sgd_momentum(void **state)
{
    (void)state;
    run_sgd_case(false);
}

static void test_sgd_nesterov(void **state)
{
    (void)state;
    run_sgd_case(true);
}

/* torch.optim.Adam (amsgrad=False, L2 weight decay added to the gradient) in double. */
static void test_adam(void **state)
{
    (void)state;
    enum { N = 4, STEPS = 3 };
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    o.kind = QT_OPT_ADAM;
    o.lr = 1e-2f;
    o.weight_decay = 1e-2f;
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    assert_int_equal(qt_optim_state_floats(&o, N), 2 * N);
    qt_param_group groups[2] = {{0, 3, true}, {3, 1, false}};
    const double p0[N] = {1.0, -0.5, 0.25, 2.0};
    float p[N], g[N], st[2 * N] = {0};
    double rp[N], m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++) p[i] = (float)(rp[i] = p0[i]);
    double b1 = o.beta1, b2 = o.beta2, eps = o.eps, wd = o.weight_decay, lr = o.lr;
    for (int t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)grad_at(t, i);
        qt_optim_step(&o, o.lr, t, groups, 2, p, g, st, N);
        for (int i = 0; i < N; i++) {
            double gi = g[i] + (i < 3 ? wd * rp[i] : 0.0);
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            double mhat = m[i] / (1 - pow(b1, t)), vhat = v[i] / (1 - pow(b2, t));
            rp[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        check_close(p, rp, N, 16 * t, "adam p");
        check_close(st, m, N, 8 * t, "adam m");
        check_close(st + N, v, N, 8 * t, "adam v");
    }
    /* First step by hand: m^ = g, v^ = g^2, so p moves by lr * g / (|g| + eps) ~ lr. */
    float q = 1.0f, gq = 2.0f, sq[2] = {0};
    qt_param_group one = {0, 1, false};
    qt_optim_step(&o, o.lr, 1, &one, 1, &q, &gq, sq, 1);
    assert_float_equal(q, 0.99f, 1e-6);
}

/* Many groups with odd boundaries over > 1 thread must equal a serial fp32 loop with the
 * same operation order, bit for bit (the split only changes who computes what). */
static void test_threaded_split_matches_serial(void **state)
{
    (void)state;
    const size_t n = 300001;
    float *p = qt_malloc(n * sizeof *p), *g = qt_malloc(n * sizeof *g);
    float *b = qt_calloc(n, sizeof *b), *sp = qt_malloc(n * sizeof *sp), *sb = qt_calloc(n, sizeof *sb);
    for (size_t i = 0; i < n; i++) {
        sp[i] = p[i] = (float)sin(0.001 * (double)i);
        g[i] = (float)cos(0.003 * (double)i);
    }
    qt_param_group groups[5] = {{0, 17, true}, {17, 3, false}, {20, 150000, true},
                                {150020, 1, false}, {150021, n - 150021, true}};
    qt_optim_opts o = sgd_opts(0.1f, 0.9f, 1e-4f, true);
    int saved = omp_get_max_threads();
    omp_set_num_threads(3);
    for (int t = 1; t <= 2; t++) qt_optim_step(&o, 0.1f, t, groups, 5, p, g, b, n);
    omp_set_num_threads(saved);
    for (int t = 1; t <= 2; t++)
        for (int k = 0; k < 5; k++)
            for (size_t i = groups[k].offset; i < groups[k].offset + groups[k].count; i++) {
                float d = g[i] + (groups[k].decay ? 1e-4f : 0.0f) * sp[i];
                float bb = 0.9f * sb[i] + d;
                sb[i] = bb;
                sp[i] -= 0.1f * (d + 0.9f * bb);
            }
    assert_memory_equal(p, sp, n * sizeof *p);
    assert_memory_equal(b, sb, n * sizeof *b);
    free(p), free(g), free(b), free(sp), free(sb);
}

static void test_lr_warmup_and_constant(void **state)
{
    (void)state;
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    o.lr = 0.4f;
    assert_float_equal(qt_lr_at(&o, 0, 10, 3), 0.4f, 0);
    assert_float_equal(qt_lr_at(&o, 29, 10, 3), 0.4f, 0);
    o.warmup_epochs = 0.5f; /* 5 steps: 0.08, 0.16, ..., 0.4 at step 4 */
    assert_float_equal(qt_lr_at(&o, 0, 10, 3), 0.08f, 1e-7);
    assert_float_equal(qt_lr_at(&o, 1, 10, 3), 0.16f, 1e-7);
    assert_float_equal(qt_lr_at(&o, 3, 10, 3), 0.32f, 1e-7);
    assert_float_equal(qt_lr_at(&o, 4, 10, 3), 0.4f, 0);
    assert_float_equal(qt_lr_at(&o, 5, 10, 3), 0.4f, 0);
    o.warmup_epochs = 2.0f; /* warm-up multiplies the schedule: step drop at epoch 1 */
    o.schedule = QT_LR_STEP;
    o.step_epochs = 1;
    o.gamma = 0.5f;
    assert_float_equal(qt_lr_at(&o, 9, 10, 3), 0.4f * 10.0f / 20.0f, 1e-7);
    assert_float_equal(qt_lr_at(&o, 10, 10, 3), 0.2f * 11.0f / 20.0f, 1e-7);
    assert_float_equal(qt_lr_at(&o, 20, 10, 3), 0.1f, 1e-7);
}

static void test_lr_step_and_multistep(void **state)
{
    (void)state;
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    o.lr = 0.1f;
    o.schedule = QT_LR_STEP;
    o.step_epochs = 30;
    o.gamma = 0.1f;
    const int64_t spe = 391; /* CIFAR-10 at batch 128 */
    assert_float_equal(qt_lr_at(&o, 30 * spe - 1, spe, 90), 0.1f, 0);
    assert_float_equal(qt_lr_at(&o, 30 * spe, spe, 90), 0.01f, 1e-9);
    assert_float_equal(qt_lr_at(&o, 60 * spe - 1, spe, 90), 0.01f, 1e-9);
    assert_float_equal(qt_lr_at(&o, 60 * spe, spe, 90), 0.001f, 1e-10);

    o.schedule = QT_LR_MULTISTEP;
    o.n_milestones = 2;
    o.milestones[0] = 100;
    o.milestones[1] = 150;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), 0);
    assert_float_equal(qt_lr_at(&o, 0, spe, 200), 0.1f, 0);
    assert_float_equal(qt_lr_at(&o, 100 * spe - 1, spe, 200), 0.1f, 0);
    assert_float_equal(qt_lr_at(&o, 100 * spe, spe, 200), 0.01f, 1e-9);
    assert_float_equal(qt_lr_at(&o, 150 * spe - 1, spe, 200), 0.01f, 1e-9);
    assert_float_equal(qt_lr_at(&o, 150 * spe, spe, 200), 0.001f, 1e-10);
    assert_float_equal(qt_lr_at(&o, 200 * spe - 1, spe, 200), 0.001f, 1e-10);
}

static void test_lr_cosine(void **state)
{
    (void)state;
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    o.lr = 0.1f;
    o.min_lr = 0.001f;
    o.schedule = QT_LR_COSINE;
    const int64_t spe = 50, T = 50 * 4;
    assert_float_equal(qt_lr_at(&o, 0, spe, 4), 0.1f, 0);
    assert_float_equal(qt_lr_at(&o, T / 2, spe, 4), (0.1 + 0.001) / 2, 1e-8);
    /* a quarter of the way: min + (lr - min) * (1 + cos(pi/4)) / 2 */
    assert_float_equal(qt_lr_at(&o, T / 4, spe, 4), 0.001 + 0.099 * (1 + sqrt(0.5)) / 2, 1e-8);
    float last = qt_lr_at(&o, T - 1, spe, 4);
    assert_true(last > 0.001f && last < 0.00101f);
    assert_float_equal(qt_lr_at(&o, T, spe, 4), 0.001f, 0);
    assert_float_equal(qt_lr_at(&o, T + 7, spe, 4), 0.001f, 0);
    /* smooth per step: strictly decreasing over the run */
    for (int64_t s = 1; s < T; s++) assert_true(qt_lr_at(&o, s, spe, 4) < qt_lr_at(&o, s - 1, spe, 4));
}

static void test_clip_grad_norm(void **state)
{
    (void)state;
    float g[2] = {3.0f, 4.0f};
    assert_float_equal(qt_clip_grad_norm(g, 2, 0.0f), 5.0f, 0); /* off: norm only */
    assert_true(g[0] == 3.0f && g[1] == 4.0f);
    assert_float_equal(qt_clip_grad_norm(g, 2, 10.0f), 5.0f, 0); /* below: untouched */
    assert_true(g[0] == 3.0f && g[1] == 4.0f);
    assert_float_equal(qt_clip_grad_norm(g, 2, 1.0f), 5.0f, 0);
    assert_float_equal(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    assert_float_equal(g[1], 4.0 / (5.0 + 1e-6), 1e-7);

    /* many blocks, over threads: norm of n halves is sqrt(n)/2 */
    const size_t n = 1000003;
    float *big = qt_malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) big[i] = (i % 2) ? 0.5f : -0.5f;
    float norm = qt_clip_grad_norm(big, n, 100.0f);
    assert_float_equal(norm, 0.5 * sqrt((double)n), 1e-6 * norm);
    double c = 100.0 / (0.5 * sqrt((double)n) + 1e-6);
    assert_float_equal(big[0], -0.5 * c, 1e-6);
    assert_float_equal(big[n - 1], -0.5 * c, 1e-6);
    free(big);
    assert_float_equal(qt_clip_grad_norm(NULL, 0, 1.0f), 0.0f, 0);
}

static void test_opts_check(void **state)
{
    (void)state;
    qt_optim_opts o;
    qt_optim_opts_default(&o);
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), 0);
    o.nesterov = true;
    o.momentum = 0.0f;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), -1);
    qt_optim_opts_default(&o);
    o.schedule = QT_LR_MULTISTEP;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), -1); /* no milestones */
    o.n_milestones = 2;
    o.milestones[0] = 5;
    o.milestones[1] = 5;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), -1);
    qt_optim_opts_default(&o);
    o.min_lr = 1.0f;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), -1);
    qt_optim_opts_default(&o);
    o.lr = NAN;
    assert_int_equal(qt_optim_opts_check(&o, "t.ini"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_literal),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_threaded_split_matches_serial),
        cmocka_unit_test(test_lr_warmup_and_constant),
        cmocka_unit_test(test_lr_step_and_multistep),
        cmocka_unit_test(test_lr_cosine),
        cmocka_unit_test(test_clip_grad_norm),
        cmocka_unit_test(test_opts_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
