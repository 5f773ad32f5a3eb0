/* layerbench.c — times forward and backward of every layer shape in one ResNet-20
 * (CIFAR, 32x32) training step and adds them up, weighted by how often each shape occurs,
 * into an estimated step time (layers only: no optimizer, no data loading, no model
 * bookkeeping).
 *
 * Usage: layerbench [threads=2] [batch=128] [rounds=15]
 * Every round times each case once; a case's time is its minimum over the rounds. Rounds
 * interleave the cases, so a burst of load from another process on this shared machine
 * spoils one sample of every case instead of all samples of one case.
 */
#include "core/philox.h"
#include "core/qt.h"
#include "nn/layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *alloc_filled(size_t n, uint32_t step)
{
    float *a = qt_aligned_alloc(sizeof(float) * (n ? n : 1));
    qt_philox_key key = qt_philox_make_key(42, QT_RNG_TEST);
    for (size_t i = 0; i < n; i++) a[i] = 2.0f * qt_u32_to_unit(qt_philox_u32(key, i, step, 0)) - 1.0f;
    return a;
}

enum { CASE_CONV, CASE_BN_RELU, CASE_ADD, CASE_BN_RELU_FUSED };

typedef struct {
    char name[48];
    int kind, count, n, h;
    bool need_dx;
    qt_conv conv;
    qt_bn bn;
    size_t elems;
    float *x, *y, *dx, *dy, *ws, *params;
    double fwd, bwd;
} bench_case;

static void case_conv(bench_case *b, const char *name, int c_in, int c_out, int k, int stride,
                      int pad, int h, int count, bool need_dx, int n)
{
    snprintf(b->name, sizeof b->name, "%s", name);
    b->kind = CASE_CONV;
    b->count = count;
    b->n = n;
    b->h = h;
    b->need_dx = need_dx;
    b->conv = (qt_conv){c_in, c_out, k, k, stride, pad, NULL, NULL, NULL, NULL};
    int oh, ow;
    qt_conv_out_hw(&b->conv, h, h, &oh, &ow);
    size_t nw = (size_t)c_out * c_in * k * k, nx = (size_t)n * c_in * h * h, ny = (size_t)n * c_out * oh * ow;
    b->conv.w = alloc_filled(nw, 1);
    b->conv.dw = alloc_filled(nw, 2);
    b->x = alloc_filled(nx, 3);
    b->dx = alloc_filled(nx, 4);
    b->y = alloc_filled(ny, 5);
    b->dy = alloc_filled(ny, 6);
    b->ws = alloc_filled(qt_conv_workspace_floats(&b->conv, n, h, h), 7);
}

/* BN (training) followed by ReLU, as in every ResNet block. */
static void case_bn_relu(bench_case *b, int c, int hw, int count, int n, bool fused)
{
    snprintf(b->name, sizeof b->name, "bn+relu%s %d @%d", fused ? " fused" : "", c, hw);
    b->kind = fused ? CASE_BN_RELU_FUSED : CASE_BN_RELU;
    b->count = count;
    b->n = n;
    b->h = hw;
    b->elems = (size_t)n * c * hw;
    float *p = b->params = alloc_filled((size_t)8 * c, 8);
    for (int i = 0; i < c; i++) p[5 * c + i] = 1.0f; /* running_var */
    b->bn = (qt_bn){c, 1e-5f, 0.1f, p, p + c, p + 2 * c, p + 3 * c, p + 4 * c, p + 5 * c, p + 6 * c, p + 7 * c};
    b->x = alloc_filled(b->elems, 9);
    b->y = alloc_filled(b->elems, 10);
    b->dy = alloc_filled(b->elems, 11);
    b->dx = alloc_filled(b->elems, 12);
}

static void case_add(bench_case *b, int c, int hw, int count, int n)
{
    snprintf(b->name, sizeof b->name, "add %d @%d", c, hw);
    b->kind = CASE_ADD;
    b->count = count;
    b->elems = (size_t)n * c * hw;
    b->x = alloc_filled(b->elems, 13);
    b->y = alloc_filled(b->elems, 14);
}

static void case_run(bench_case *b)
{
    double t0 = qt_now(), t1 = t0, t2 = t0;
    switch (b->kind) {
    case CASE_CONV:
        qt_conv_forward(&b->conv, b->x, b->y, b->n, b->h, b->h, b->ws);
        t1 = qt_now();
        qt_conv_backward(&b->conv, b->x, b->dy, b->need_dx ? b->dx : NULL, b->n, b->h, b->h, b->ws);
        t2 = qt_now();
        break;
    case CASE_BN_RELU:
        qt_bn_forward(&b->bn, b->x, b->y, b->n, b->h, true);
        qt_relu_forward(b->y, b->y, b->elems);
        t1 = qt_now();
        qt_relu_backward(b->y, b->dy, b->dx, b->elems);
        qt_bn_backward(&b->bn, b->x, b->dx, b->dx, b->n, b->h);
        t2 = qt_now();
        break;
    case CASE_BN_RELU_FUSED:
        qt_bn_relu_forward(&b->bn, b->x, b->y, b->n, b->h, true);
        t1 = qt_now();
        qt_bn_relu_backward(&b->bn, b->x, b->y, b->dy, b->dx, b->n, b->h);
        t2 = qt_now();
        break;
    case CASE_ADD:
        qt_add_forward(b->x, b->y, b->x, b->elems);
        t1 = qt_now();
        qt_add_inplace(b->x, b->y, b->elems);
        t2 = qt_now();
        break;
    }
    if (t1 - t0 < b->fwd) b->fwd = t1 - t0;
    if (t2 - t1 < b->bwd) b->bwd = t2 - t1;
}

static void case_free(bench_case *b)
{
    qt_free_aligned(b->conv.w);
    qt_free_aligned(b->conv.dw);
    qt_free_aligned(b->params);
    qt_free_aligned(b->x);
    qt_free_aligned(b->y);
    qt_free_aligned(b->dx);
    qt_free_aligned(b->dy);
    qt_free_aligned(b->ws);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int n = argc > 2 ? atoi(argv[2]) : 128;
    int rounds = argc > 3 ? atoi(argv[3]) : 15;
    if (threads < 1 || n < 1 || rounds < 1) {
        fprintf(stderr, "usage: layerbench [threads>=1] [batch>=1] [rounds>=1]\n");
        return 2;
    }
    qt_nn_set_threads(threads);
    bench_case cs[24];
    memset(cs, 0, sizeof cs);
    int m = 0;
    case_conv(&cs[m++], "conv 3->16 3x3 s1 @32", 3, 16, 3, 1, 1, 32, 1, false, n); /* stem: no dx */
    case_conv(&cs[m++], "conv 16->16 3x3 s1 @32", 16, 16, 3, 1, 1, 32, 6, true, n);
    case_conv(&cs[m++], "conv 16->32 3x3 s2 @32", 16, 32, 3, 2, 1, 32, 1, true, n);
    case_conv(&cs[m++], "conv 16->32 1x1 s2 @32", 16, 32, 1, 2, 0, 32, 1, true, n);
    case_conv(&cs[m++], "conv 32->32 3x3 s1 @16", 32, 32, 3, 1, 1, 16, 5, true, n);
    case_conv(&cs[m++], "conv 32->64 3x3 s2 @16", 32, 64, 3, 2, 1, 16, 1, true, n);
    case_conv(&cs[m++], "conv 32->64 1x1 s2 @16", 32, 64, 1, 2, 0, 16, 1, true, n);
    case_conv(&cs[m++], "conv 64->64 3x3 s1 @8", 64, 64, 3, 1, 1, 8, 5, true, n);
    /* 19 BN layers, 7 per resolution (stem or shortcut included), each counted as BN+ReLU
     * (the shortcut BN has no ReLU of its own: a slight overestimate). 9 residual adds. */
    const int bn_c[3] = {16, 32, 64}, bn_hw[3] = {1024, 256, 64};
    for (int i = 0; i < 3; i++) case_bn_relu(&cs[m++], bn_c[i], bn_hw[i], 7, n, false);
    for (int i = 0; i < 3; i++) case_bn_relu(&cs[m++], bn_c[i], bn_hw[i], 7, n, true);
    for (int i = 0; i < 3; i++) case_add(&cs[m++], bn_c[i], bn_hw[i], 3, n);
    for (int i = 0; i < m; i++) cs[i].fwd = cs[i].bwd = 1e9;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < m; i++) case_run(&cs[i]);

    printf("layerbench: resnet20 cifar shapes, batch %d, %d threads, min of %d rounds\n", n, threads, rounds);
    printf("%-28s %5s %9s %9s %9s\n", "layer", "count", "fwd_ms", "bwd_ms", "total_ms");
    double sums[4] = {0, 0, 0, 0};
    for (int i = 0; i < m; i++) {
        double total = cs[i].count * (cs[i].fwd + cs[i].bwd);
        sums[cs[i].kind] += total;
        printf("%-28s %5d %9.3f %9.3f %9.3f\n", cs[i].name, cs[i].count, 1e3 * cs[i].fwd, 1e3 * cs[i].bwd, 1e3 * total);
        case_free(&cs[i]);
    }
    printf("conv %.1f ms, bn+relu %.1f ms (fused %.1f ms), add %.1f ms\n", 1e3 * sums[CASE_CONV],
           1e3 * sums[CASE_BN_RELU], 1e3 * sums[CASE_BN_RELU_FUSED], 1e3 * sums[CASE_ADD]);
    printf("estimated layer time per step: %.1f ms (%.1f ms with fused bn+relu)\n",
           1e3 * (sums[CASE_CONV] + sums[CASE_BN_RELU] + sums[CASE_ADD]),
           1e3 * (sums[CASE_CONV] + sums[CASE_BN_RELU_FUSED] + sums[CASE_ADD]));
    return 0;
}
