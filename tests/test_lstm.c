/* test_lstm.c — the CPU LSTM(P) layer (src/nn/lstm.h) against independent oracles:
 * - forward: a naive double-precision LSTM written from the formulas in lstm.h (per
 *   sequence, per frame, libm's exp/tanh), tolerance from the float error bound below;
 * - backward: central finite differences (tests/gradcheck.h states the tolerance) of
 *   L = sum(p . [y | h_final | c_final]) for every parameter group, x, h0 and c0, over
 *   variable lengths (unsorted, with a length-0 and a length-1 sequence), with and without
 *   projection and peepholes, in both directions, with a strided y;
 * - truncated BPTT: 12 frames in one chunk against chunks of 5 + 7 with the carried state
 *   (and gradients chained back through dh0/dc0 -> dh_final/dc_final of the first chunk);
 * - padding: y rows zero, dx rows zero, dy rows never read (NaN there), columns beyond R of
 *   a strided y untouched;
 * - the parameter-count formula on the AN4 stack (13,634,692).
 * Gradient, output and workspace buffers start as NaN, so a backward that accumulates
 * instead of overwriting, or a result read from uninitialised workspace, fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/philox.h"
#include "core/qt.h"
#include "gradcheck.h"
#include "nn/layers.h"
#include "nn/lstm.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t g_stream;

static int reset_stream(void **s)
{
    (void)s;
    g_stream = 0;
    return 0;
}

/* Exact sizes (qt_malloc, not the 64-byte-rounded qt_aligned_alloc) so ASan sees any overrun. */
static float *fbuf(size_t n) { return qt_malloc(sizeof(float) * (n ? n : 1)); }

static float *frand(size_t n, float lo, float hi)
{
    float *a = fbuf(n);
    qt_philox_key key = qt_philox_make_key(777, QT_RNG_TEST);
    uint32_t s = ++g_stream;
    for (size_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * qt_u32_to_unit(qt_philox_u32(key, i, s, 0));
    return a;
}

static float *ffill(size_t n, float v)
{
    float *a = fbuf(n);
    for (size_t i = 0; i < n; i++) a[i] = v;
    return a;
}

static float *fcopy(const float *src, size_t n)
{
    float *a = fbuf(n);
    memcpy(a, src, sizeof(float) * n);
    return a;
}

/* ---------------- one layer on one batch ---------------- */

typedef struct {
    qt_lstm l;
    int t, n, r, ys;
    int32_t len[8];
    size_t np;
    float *params, *grads, *x, *y, *h0, *c0, *hT, *cT, *ws;
    float *out; /* [T*N*R | N*R | N*H]: y (first R columns), h_final, c_final */
    size_t n_out;
} lstm_case;

static void case_init(lstm_case *c, int f, int h, int p, bool peep, bool rev, int stride_extra, int t,
                      int n, const int32_t *len, bool states)
{
    memset(c, 0, sizeof *c);
    c->l = (qt_lstm){.in = f, .hidden = h, .proj = p, .peephole = peep, .reverse = rev};
    c->t = t;
    c->n = n;
    c->r = qt_lstm_out(&c->l);
    c->ys = c->r + stride_extra;
    c->l.out_stride = stride_extra ? c->ys : 0;
    memcpy(c->len, len, sizeof(int32_t) * (size_t)n);
    c->np = qt_lstm_param_count(f, h, p, peep);
    c->params = frand(c->np, -0.4f, 0.4f);
    c->grads = ffill(c->np, NAN);
    qt_lstm_bind(&c->l, c->params, c->grads);
    c->x = frand((size_t)t * n * f, -1.0f, 1.0f);
    c->y = ffill((size_t)t * n * c->ys, 777.0f); /* sentinel: columns beyond R stay 777 */
    c->h0 = states ? frand((size_t)n * c->r, -0.5f, 0.5f) : NULL;
    c->c0 = states ? frand((size_t)n * h, -0.5f, 0.5f) : NULL;
    c->hT = ffill((size_t)n * c->r, NAN);
    c->cT = ffill((size_t)n * h, NAN);
    c->ws = ffill(qt_lstm_workspace_floats(&c->l, t, n), NAN);
    c->n_out = (size_t)t * n * c->r + (size_t)n * c->r + (size_t)n * h;
    c->out = ffill(c->n_out, NAN);
}

static void case_free(lstm_case *c)
{
    float *bufs[] = {c->params, c->grads, c->x, c->y, c->h0, c->c0, c->hT, c->cT, c->ws, c->out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) free(bufs[i]);
}

static qt_lstm_data case_data(const lstm_case *c)
{
    return (qt_lstm_data){.t = c->t, .n = c->n, .lengths = c->len, .x = c->x, .y = c->y, .h0 = c->h0,
                          .c0 = c->c0, .h_final = c->hT, .c_final = c->cT, .ws = c->ws};
}

static void case_forward(void *p)
{
    lstm_case *c = p;
    qt_lstm_data d = case_data(c);
    qt_lstm_forward(&c->l, &d);
    float *o = c->out;
    for (size_t m = 0; m < (size_t)c->t * c->n; m++, o += c->r)
        memcpy(o, c->y + m * c->ys, sizeof(float) * (size_t)c->r);
    memcpy(o, c->hT, sizeof(float) * (size_t)c->n * c->r);
    memcpy(o + (size_t)c->n * c->r, c->cT, sizeof(float) * (size_t)c->n * c->l.hidden);
}

/* ---------------- double-precision reference ---------------- */

static double sig(double v) { return 1.0 / (1.0 + exp(-v)); }

/* ref_out has the layout of c->out. */
static void ref_forward(const lstm_case *c, double *ref_out)
{
    const qt_lstm *l = &c->l;
    const int F = l->in, H = l->hidden, R = c->r, N = c->n;
    double *yref = ref_out, *hT = ref_out + (size_t)c->t * N * R, *cT = hT + (size_t)N * R;
    for (size_t i = 0; i < (size_t)c->t * N * R; i++) yref[i] = 0.0;
    double *h = calloc((size_t)R, sizeof(double)), *cc = calloc((size_t)H, sizeof(double)),
           *hh = calloc((size_t)H, sizeof(double)), *cn = calloc((size_t)H, sizeof(double));
    for (int n = 0; n < N; n++) {
        for (int r = 0; r < R; r++) h[r] = c->h0 ? c->h0[n * R + r] : 0.0;
        for (int j = 0; j < H; j++) cc[j] = c->c0 ? c->c0[n * H + j] : 0.0;
        for (int k = 0; k < c->len[n]; k++) {
            const int t = l->reverse ? c->len[n] - 1 - k : k;
            const float *x = c->x + ((size_t)t * N + n) * F;
            for (int j = 0; j < H; j++) {
                double a[4];
                for (int q = 0; q < 4; q++) {
                    const int row = q * H + j;
                    a[q] = l->b[row];
                    for (int i = 0; i < F; i++) a[q] += (double)l->w_x[row * F + i] * x[i];
                    for (int r = 0; r < R; r++) a[q] += (double)l->w_h[row * R + r] * h[r];
                }
                const double pi = l->peephole ? l->w_peep[j] : 0, pf = l->peephole ? l->w_peep[H + j] : 0,
                             po = l->peephole ? l->w_peep[2 * H + j] : 0;
                const double ig = sig(a[0] + pi * cc[j]), fg = sig(a[1] + pf * cc[j]), gg = tanh(a[2]);
                cn[j] = fg * cc[j] + ig * gg;
                hh[j] = sig(a[3] + po * cn[j]) * tanh(cn[j]);
            }
            for (int j = 0; j < H; j++) cc[j] = cn[j];
            for (int r = 0; r < R; r++) {
                double v = 0.0;
                if (l->proj > 0)
                    for (int j = 0; j < H; j++) v += (double)l->w_proj[r * H + j] * hh[j];
                else v = hh[r];
                h[r] = v;
                yref[((size_t)t * N + n) * R + r] = v;
            }
        }
        for (int r = 0; r < R; r++) hT[n * R + r] = h[r];
        for (int j = 0; j < H; j++) cT[n * H + j] = cc[j];
    }
    free(h);
    free(cc);
    free(hh);
    free(cn);
}

/* Float forward vs the double reference. Each pre-activation is a dot product of
 * F + R + 1 terms of magnitude <= S = 1 + 0.4 (F + R) (weights in +-0.4, inputs and states
 * in [-1, 1]), so its rounding error is <= (F + R + 1) u S; the squashing functions are
 * 1-Lipschitz and add a few ulp (u = FLT_EPSILON), the projection adds H terms, and the
 * error carried in the state grows at most additively per frame:
 *   |y - ref| <= frames * (F + R + H + 8) * u * S. */
static void check_forward(const lstm_case *c)
{
    const int F = c->l.in, R = c->r, H = c->l.hidden;
    double *ref = malloc(sizeof(double) * c->n_out);
    ref_forward(c, ref);
    const double per_frame = (F + R + H + 8) * FLT_EPSILON * (1.0 + 0.4 * (F + R));
    double worst = 0.0;
    int bad = 0;
    for (size_t i = 0; i < c->n_out; i++) {
        const double tol = (c->t + 1) * per_frame, diff = fabs((double)c->out[i] - ref[i]);
        worst = fmax(worst, diff);
        if (!(diff <= tol) && bad++ < 10)
            fprintf(stderr, "lstm forward out[%zu]: got %.9g want %.9g (tol %.3g)\n", i, c->out[i], ref[i], tol);
    }
    if (bad) fprintf(stderr, "lstm forward: %d mismatches, max diff %.3g\n", bad, worst);
    free(ref);
    assert_int_equal(bad, 0);
}

/* ---------------- gradient check ---------------- */

static void gradcheck_case(int f, int h, int p, bool peep, bool rev, int stride_extra)
{
    static const int32_t len[4] = {3, 5, 0, 1}; /* unsorted; a length-0 and a length-1 sequence */
    const int T = 5, N = 4;
    lstm_case c;
    case_init(&c, f, h, p, peep, rev, stride_extra, T, N, len, true);
    const int R = c.r;
    case_forward(&c);
    check_forward(&c);
    /* padding: y rows zero, columns beyond R untouched */
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++)
            for (int k = 0; k < c.ys; k++) {
                const float v = c.y[((size_t)t * N + n) * c.ys + k];
                if (k >= R) assert_true(v == 777.0f);
                else if (t >= len[n]) assert_true(v == 0.0f);
            }

    /* dL/dout = proj; dy gets NaN on padding rows and beyond R: they must not be read. */
    float *proj = frand(c.n_out, -1.0f, 1.0f);
    float *dy = ffill((size_t)T * N * c.ys, NAN);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++)
            if (t < len[n])
                memcpy(dy + ((size_t)t * N + n) * c.ys, proj + ((size_t)t * N + n) * R, sizeof(float) * (size_t)R);
    for (size_t i = 0; i < (size_t)T * N * R; i++) /* padding outputs are constant 0: no signal */
        if ((int)(i / R / N) >= len[(i / R) % N]) proj[i] = 0.0f;
    const float *dhT = proj + (size_t)T * N * R, *dcT = dhT + (size_t)N * R;
    float *dx = ffill((size_t)T * N * f, NAN), *dh0 = ffill((size_t)N * R, NAN), *dc0 = ffill((size_t)N * h, NAN);
    qt_lstm_data d = case_data(&c);
    d.dy = dy;
    d.dh_final = dhT;
    d.dc_final = dcT;
    d.dx = dx;
    d.dh0 = dh0;
    d.dc0 = dc0;
    qt_lstm_backward(&c.l, &d);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++)
            if (t >= len[n])
                for (int i = 0; i < f; i++) assert_true(dx[((size_t)t * N + n) * f + i] == 0.0f);
    /* a length-0 sequence passes its state and the state's gradient through unchanged */
    assert_memory_equal(c.hT + 2 * R, c.h0 + 2 * R, sizeof(float) * (size_t)R);
    assert_memory_equal(dh0 + 2 * R, dhT + 2 * R, sizeof(float) * (size_t)R);
    assert_memory_equal(dc0 + 2 * h, dcT + 2 * h, sizeof(float) * (size_t)h);

    /* dx, dh0, dc0 == NULL: the same weight gradients, bit for bit. */
    float *grads = fcopy(c.grads, c.np);
    for (size_t i = 0; i < c.np; i++) c.grads[i] = NAN;
    case_forward(&c);
    d.dx = d.dh0 = d.dc0 = NULL;
    qt_lstm_backward(&c.l, &d);
    assert_memory_equal(c.grads, grads, sizeof(float) * c.np);

    char name[96];
    snprintf(name, sizeof name, "lstm F%d H%d P%d%s%s", f, h, p, peep ? " peep" : "", rev ? " rev" : "");
    gc_problem prob = {case_forward, &c, c.out, proj, c.n_out, NULL};
    const qt_lstm *l = &c.l;
    const size_t nh = (size_t)h, nr = (size_t)R;
    struct {
        const char *what;
        float *var;
        const float *grad;
        size_t count;
    } vars[] = {
        {"w_x", l->w_x, grads, 4 * nh * f},
        {"w_h", l->w_h, grads + (l->w_h - c.params), 4 * nh * nr},
        {"b", l->b, grads + (l->b - c.params), 4 * nh},
        {"w_peep", l->w_peep, peep ? grads + (l->w_peep - c.params) : NULL, peep ? 3 * nh : 0},
        {"w_proj", l->w_proj, p ? grads + (l->w_proj - c.params) : NULL, p ? (size_t)p * nh : 0},
        {"x", c.x, dx, (size_t)T * N * f},
        {"h0", c.h0, dh0, (size_t)N * R},
        {"c0", c.c0, dc0, (size_t)N * h},
    };
    /* Caffe's step and tolerance, 64 evenly spread elements per variable (every element of
     * most). The analytic gradients above ran on 2 threads; the ~1000 forwards of the
     * finite differences run on one, since each 2-thread forward waits at a barrier per
     * frame and the cores are shared with other processes (10x slower when contended). */
    const gc_opts opts = {1e-2f, 1e-3, 64};
    qt_nn_set_threads(1);
    int bad = 0;
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++) {
        if (!vars[v].count) continue;
        char full[128];
        snprintf(full, sizeof full, "%s %s", name, vars[v].what);
        bad += gc_check(&prob, full, vars[v].var, vars[v].grad, vars[v].count, &opts);
    }
    qt_nn_set_threads(2);
    assert_int_equal(bad, 0);
    free(proj);
    free(dy);
    free(dx);
    free(dh0);
    free(dc0);
    free(grads);
    case_free(&c);
}

static void test_gradcheck_plain(void **s)
{
    (void)s;
    gradcheck_case(5, 6, 0, false, false, 0);
    gradcheck_case(5, 6, 0, false, true, 3);
}

static void test_gradcheck_peephole(void **s)
{
    (void)s;
    gradcheck_case(5, 6, 0, true, false, 2);
    gradcheck_case(5, 6, 0, true, true, 0);
}

static void test_gradcheck_projection(void **s)
{
    (void)s;
    gradcheck_case(5, 6, 4, false, false, 0);
    gradcheck_case(4, 7, 3, false, true, 1);
}

static void test_gradcheck_lstmp_peephole(void **s)
{
    (void)s;
    gradcheck_case(5, 6, 4, true, false, 4);
    gradcheck_case(3, 6, 8, true, true, 0); /* projection wider than the cells */
    gradcheck_case(3, 37, 19, true, false, 0); /* 16-aligned thread slices */
}

/* NULL initial states are zeros; NULL final states are not written. */
static void test_null_states(void **s)
{
    (void)s;
    static const int32_t len[3] = {4, 2, 0};
    lstm_case a, b;
    case_init(&a, 3, 5, 2, true, false, 0, 4, 3, len, false);
    case_init(&b, 3, 5, 2, true, false, 0, 4, 3, len, false);
    memcpy(b.params, a.params, sizeof(float) * a.np);
    memcpy(b.x, a.x, sizeof(float) * 4 * 3 * 3);
    b.h0 = ffill(3 * 2, 0.0f);
    b.c0 = ffill(3 * 5, 0.0f);
    case_forward(&a);
    case_forward(&b);
    assert_memory_equal(a.out, b.out, sizeof(float) * a.n_out);
    check_forward(&a);
    qt_lstm_data d = case_data(&a);
    d.h_final = d.c_final = NULL;
    qt_lstm_forward(&a.l, &d);
    assert_memory_equal(a.y, b.y, sizeof(float) * 4 * 3 * 2);
    case_free(&a);
    case_free(&b);
}

/* The vectorised sigmoid and tanh, through the layer: T = 1, one input, zero states,
 * weights that isolate them. Cell 0: i = sigma(30) = 1, g = tanh(x), o = sigma(0) = 1/2,
 * so y0 = tanh(tanh(x)) / 2; cell 1: i = o = sigma(x), g = tanh(30) = 1, so
 * y1 = sigma(x) tanh(sigma(x)). Pre-activations are exact (products with 0 and 1), each
 * function is within 2.5 u of the true value (u = 2^-24) and the compositions have
 * condition numbers <= 1, so |y - ref| <= 16 u |ref|: far below the forward tolerance
 * above, so this catches a wrong polynomial coefficient that the gradient check (which
 * differentiates the float functions themselves) cannot. */
static void test_nonlinearity_accuracy(void **s)
{
    (void)s;
    enum { N = 3001 };
    qt_lstm l = {.in = 1, .hidden = 2};
    const size_t np = qt_lstm_param_count(1, 2, 0, false);
    float *p = ffill(np, 0.0f), *x = fbuf(N), *y = ffill(2 * N, NAN), *ws = ffill(qt_lstm_workspace_floats(&l, 1, N), NAN);
    qt_lstm_bind(&l, p, NULL);
    l.w_x[2 * 2 + 0] = 1.0f; /* g of cell 0 */
    l.b[0 * 2 + 0] = 30.0f;  /* i of cell 0 */
    l.w_x[0 * 2 + 1] = 1.0f; /* i of cell 1 */
    l.w_x[3 * 2 + 1] = 1.0f; /* o of cell 1 */
    l.b[2 * 2 + 1] = 30.0f;  /* g of cell 1 */
    int32_t *len = qt_malloc(sizeof(int32_t) * N);
    for (int n = 0; n < N; n++) {
        x[n] = -15.0f + 30.0f * (float)n / (N - 1);
        len[n] = 1;
    }
    qt_lstm_data d = {.t = 1, .n = N, .lengths = len, .x = x, .y = y, .ws = ws};
    qt_lstm_forward(&l, &d);
    const double u = ldexp(1.0, -24);
    double worst = 0.0;
    for (int n = 0; n < N; n++) {
        const double v = x[n], sg = 1.0 / (1.0 + exp(-v));
        const double ref[2] = {0.5 * tanh(tanh(v)), sg * tanh(sg)};
        for (int k = 0; k < 2; k++) {
            const double diff = fabs((double)y[2 * n + k] - ref[k]);
            if (ref[k] != 0.0) worst = fmax(worst, diff / fabs(ref[k]) / u);
            if (!(diff <= 16 * u * fabs(ref[k]))) {
                fprintf(stderr, "lstm nonlinearity x=%.7g cell %d: got %.9g want %.9g\n", v, k, y[2 * n + k], ref[k]);
                fail();
            }
        }
    }
    fprintf(stderr, "lstm nonlinearities: max error %.2f u (bound 16 u)\n", worst);
    free(p); free(x); free(y); free(ws);
    free(len);
}

/* ---------------- truncated BPTT: one chunk == two chunks with the carried state ---------------- */

static double max_abs_diff(const float *a, const float *b, size_t n, bool *bit_equal)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    if (bit_equal) *bit_equal = *bit_equal && memcmp(a, b, sizeof(float) * n) == 0;
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static void chunk_case(int p, bool peep)
{
    enum { T = 12, N = 5, F = 7, H = 40, T1 = 5, T2 = T - T1 };
    static const int32_t len[N] = {12, 9, 5, 3, 0};
    lstm_case c;
    case_init(&c, F, H, p, peep, false, 0, T, N, len, true);
    const int R = c.r;
    const size_t nyr = (size_t)N * R, nc = (size_t)N * H;
    case_forward(&c);

    int32_t len1[N], len2[N];
    for (int n = 0; n < N; n++) {
        len1[n] = QT_MIN(len[n], T1);
        len2[n] = QT_MAX(0, QT_MIN(len[n] - T1, T2));
    }
    float *y = ffill((size_t)T * nyr, NAN), *hm = ffill(nyr, NAN), *cm = ffill(nc, NAN),
          *he = ffill(nyr, NAN), *ce = ffill(nc, NAN);
    float *ws1 = ffill(qt_lstm_workspace_floats(&c.l, T1, N), NAN),
          *ws2 = ffill(qt_lstm_workspace_floats(&c.l, T2, N), NAN);
    qt_lstm_data d1 = {.t = T1, .n = N, .lengths = len1, .x = c.x, .y = y, .h0 = c.h0, .c0 = c.c0,
                       .h_final = hm, .c_final = cm, .ws = ws1};
    qt_lstm_data d2 = {.t = T2, .n = N, .lengths = len2, .x = c.x + (size_t)T1 * N * F,
                       .y = y + (size_t)T1 * nyr, .h0 = hm, .c0 = cm, .h_final = he, .c_final = ce, .ws = ws2};
    qt_lstm_forward(&c.l, &d1);
    qt_lstm_forward(&c.l, &d2);
    bool same = true;
    double dy_ = max_abs_diff(y, c.y, (size_t)T * nyr, &same);
    double dh_ = max_abs_diff(he, c.hT, nyr, &same), dc_ = max_abs_diff(ce, c.cT, nc, &same);
    fprintf(stderr, "lstm chunks 5+7 vs 12 (P%d%s): forward max diff y %.3g h %.3g c %.3g (%s)\n", p,
            peep ? " peep" : "", dy_, dh_, dc_, same ? "bit-equal" : "not bit-equal");
    assert_true(dy_ <= 1e-6 && dh_ <= 1e-6 && dc_ <= 1e-6);

    /* Gradients: the full chunk, then chunk 2 and chunk 1 with chunk 2's dh0/dc0 as chunk
     * 1's dh_final/dc_final (full BPTT through the boundary), weight gradients summed. */
    float *dy = frand((size_t)T * nyr, -1.0f, 1.0f), *dhT = frand(nyr, -1.0f, 1.0f), *dcT = frand(nc, -1.0f, 1.0f);
    float *dx = ffill((size_t)T * N * F, NAN), *dh0 = ffill(nyr, NAN), *dc0 = ffill(nc, NAN);
    qt_lstm_data d = case_data(&c);
    d.dy = dy;
    d.dh_final = dhT;
    d.dc_final = dcT;
    d.dx = dx;
    d.dh0 = dh0;
    d.dc0 = dc0;
    qt_lstm_backward(&c.l, &d);
    float *gfull = fcopy(c.grads, c.np), *sum = ffill(c.np, 0.0f);
    float *dx2 = ffill((size_t)T * N * F, NAN), *dhm = ffill(nyr, NAN), *dcm = ffill(nc, NAN),
          *dh02 = ffill(nyr, NAN), *dc02 = ffill(nc, NAN);
    d2.dy = dy + (size_t)T1 * nyr;
    d2.dh_final = dhT;
    d2.dc_final = dcT;
    d2.dx = dx2 + (size_t)T1 * N * F;
    d2.dh0 = dhm;
    d2.dc0 = dcm;
    d1.dy = dy;
    d1.dh_final = dhm;
    d1.dc_final = dcm;
    d1.dx = dx2;
    d1.dh0 = dh02;
    d1.dc0 = dc02;
    qt_lstm_backward(&c.l, &d2);
    for (size_t i = 0; i < c.np; i++) sum[i] = c.grads[i];
    qt_lstm_backward(&c.l, &d1);
    for (size_t i = 0; i < c.np; i++) sum[i] += c.grads[i];
    /* The two runs differ in the order of the same T*N-term sums: tolerance
     * T*N * u * max|g| per tensor (u = FLT_EPSILON), with the max over the tensor. */
    struct {
        const char *what;
        const float *a, *b;
        size_t count;
    } cmp[] = {{"params", sum, gfull, c.np}, {"dx", dx2, dx, (size_t)T * N * F},
               {"dh0", dh02, dh0, nyr}, {"dc0", dc02, dc0, nc}};
    for (size_t k = 0; k < sizeof cmp / sizeof cmp[0]; k++) {
        const double diff = max_abs_diff(cmp[k].a, cmp[k].b, cmp[k].count, NULL);
        const double tol = (double)T * N * FLT_EPSILON * max_abs(cmp[k].b, cmp[k].count);
        if (!(diff <= tol)) fprintf(stderr, "lstm chunked grad %s: max diff %.3g > %.3g\n", cmp[k].what, diff, tol);
        assert_true(diff <= tol);
    }
    /* h_final/c_final may alias h0/c0 (the carried state updated in place). */
    qt_lstm_forward(&c.l, &d1);
    d2.h_final = hm;
    d2.c_final = cm;
    qt_lstm_forward(&c.l, &d2);
    assert_memory_equal(hm, he, sizeof(float) * nyr);
    assert_memory_equal(cm, ce, sizeof(float) * nc);
    float *bufs[] = {y, hm, cm, he, ce, ws1, ws2, dy, dhT, dcT, dx, dh0, dc0, gfull, sum, dx2, dhm, dcm, dh02, dc02};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    case_free(&c);
}

static void test_truncated_bptt(void **s)
{
    (void)s;
    chunk_case(0, false);
    chunk_case(24, true);
}

/* ---------------- parameter count and layout ---------------- */

static void test_param_count(void **s)
{
    (void)s;
    assert_int_equal(qt_lstm_param_count(2, 3, 0, false), 4 * 3 * (2 + 3 + 1));
    assert_int_equal(qt_lstm_param_count(2, 3, 2, true), 4 * 3 * (2 + 2 + 1) + 3 * 3 + 2 * 3);
    /* The AN4 recipe: 3 LSTMP layers (1024 cells, 512 projection, peepholes) on 363
     * inputs, then a 512 -> 132 linear layer. */
    const size_t first = qt_lstm_param_count(363, 1024, 512, true), next = qt_lstm_param_count(512, 1024, 512, true);
    assert_int_equal(first, 4115456);
    assert_int_equal(next, 4725760);
    assert_int_equal(first + 2 * next + 512 * 132 + 132, 13634692);

    /* bind tiles [0, count) in the documented order, without gaps or overlaps */
    qt_lstm l = {.in = 5, .hidden = 6, .proj = 4, .peephole = true};
    const size_t n = qt_lstm_param_count(5, 6, 4, true);
    float *p = fbuf(n), *g = fbuf(n);
    qt_lstm_bind(&l, p, g);
    assert_ptr_equal(l.w_x, p);
    assert_ptr_equal(l.w_h, p + 4 * 6 * 5);
    assert_ptr_equal(l.b, l.w_h + 4 * 6 * 4);
    assert_ptr_equal(l.w_peep, l.b + 4 * 6);
    assert_ptr_equal(l.w_proj, l.w_peep + 3 * 6);
    assert_ptr_equal(l.w_proj + 4 * 6, p + n);
    assert_ptr_equal(l.dw_proj, g + (l.w_proj - p));
    assert_ptr_equal(l.dw_x, g);
    qt_lstm m = {.in = 5, .hidden = 6, .proj = 0, .peephole = false};
    qt_lstm_bind(&m, p, NULL);
    assert_null(m.w_peep);
    assert_null(m.w_proj);
    assert_null(m.dw_h);
    assert_ptr_equal(m.b + 4 * 6, p + qt_lstm_param_count(5, 6, 0, false));
    free(p);
    free(g);
}

int main(void)
{
    qt_nn_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_param_count, reset_stream),
        cmocka_unit_test_setup(test_gradcheck_plain, reset_stream),
        cmocka_unit_test_setup(test_gradcheck_peephole, reset_stream),
        cmocka_unit_test_setup(test_gradcheck_projection, reset_stream),
        cmocka_unit_test_setup(test_gradcheck_lstmp_peephole, reset_stream),
        cmocka_unit_test_setup(test_null_states, reset_stream),
        cmocka_unit_test_setup(test_nonlinearity_accuracy, reset_stream),
        cmocka_unit_test_setup(test_truncated_bptt, reset_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
