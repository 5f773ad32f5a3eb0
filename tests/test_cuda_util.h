/* test_cuda_util.h — helpers of tests/test_cuda_layers.c (only built with QT_HAVE_CUDA):
 * host-side bf16 rounding and NCHW <-> NHWC conversion (independent of the GPU kernels they
 * check), device buffers owned by the running test, and the comparisons with their
 * tolerance formula.
 *
 * Tolerance of a GPU result against the CPU layer fed the SAME stored inputs (in bf16 the
 * test rounds inputs to bf16 first and gives the rounded values to both), as a relative
 * l2 error ||gpu - cpu|| / ||cpu||:
 *   tol = 4 * sqrt(L) * 2^-24  +  hops * u
 * - L: the longest reduction behind one output element. Two fp32 summations of L terms in
 *   different orders differ by about 0.6 sqrt(L) 2^-24 relative (rms, random-walk model of
 *   the rounding errors): the first term leaves a ~7x margin. For L = 576 (3x3x64) it is
 *   5.8e-6, inside the 1e-5 for fp32.
 * - hops: roundings the GPU applies that the CPU does not: an operand rounded to TF32 (u =
 *   2^-11, 11 significant bits) or bf16 (u = 2^-8, 8 bits) inside a convolution or matmul,
 *   or an output stored as bf16. Each perturbs the result by at most u relative, about
 *   u/sqrt(3) rms; summing the bounds linearly keeps a margin of ~2-3x. A tf32 conv (two
 *   operands) gets ~1e-3, a bf16 conv (weights rounded, output stored) ~7.8e-3: the
 *   issue's "tf32 ~1e-3, bf16 ~1e-2".
 * Operations that do the same float operations in the same order as the CPU (relu, add,
 * max pool, conversions, average-pool backward, top-k) are checked for exact equality.
 */
#ifndef QT_TESTS_CUDA_UTIL_H
#define QT_TESTS_CUDA_UTIL_H

#include "core/philox.h"
#include "core/qt.h"
#include "nn/cuda/cuda_ctx.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U_FP32 5.9604644775390625e-08 /* 2^-24 */
#define U_TF32 4.8828125e-04          /* 2^-11 */
#define U_BF16 3.90625e-03            /* 2^-8 */

static double tol_of(double reduction_len, double hops, double u)
{
    return 4.0 * sqrt(reduction_len) * U_FP32 + hops * u;
}

/* ---- host bf16 (round to nearest even; NaN stays NaN) ---- */
static uint16_t h_f2bf(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

static float h_bf2f(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static void h_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = h_bf2f(h_f2bf(x[i]));
}

/* Flat index of (i, ch, j) in [n][c][hw] stored NCHW or NHWC. */
static size_t h_at(bool nhwc, int c, int hw, size_t i, size_t ch, size_t j)
{
    return nhwc ? (i * hw + j) * c + ch : (i * c + ch) * hw + j;
}

/* fp32 NCHW -> bytes in (dtype, layout); out holds n*c*hw elements of the dtype. */
static void h_pack(const float *nchw, int n, int c, int hw, qt_cuda_dtype dt, bool nhwc, void *out)
{
    for (size_t i = 0; i < (size_t)n; i++)
        for (size_t ch = 0; ch < (size_t)c; ch++)
            for (size_t j = 0; j < (size_t)hw; j++) {
                float v = nchw[(i * c + ch) * hw + j];
                size_t o = h_at(nhwc, c, hw, i, ch, j);
                if (dt == QT_CUDA_DT_BF16)
                    ((uint16_t *)out)[o] = h_f2bf(v);
                else
                    ((float *)out)[o] = v;
            }
}

static void h_unpack(const void *in, int n, int c, int hw, qt_cuda_dtype dt, bool nhwc, float *nchw)
{
    for (size_t i = 0; i < (size_t)n; i++)
        for (size_t ch = 0; ch < (size_t)c; ch++)
            for (size_t j = 0; j < (size_t)hw; j++) {
                size_t o = h_at(nhwc, c, hw, i, ch, j);
                nchw[(i * c + ch) * hw + j] =
                    dt == QT_CUDA_DT_BF16 ? h_bf2f(((const uint16_t *)in)[o]) : ((const float *)in)[o];
            }
}

/* ---- memory owned by the running test (freed by its teardown, even after a failure) ----
 * Room for a whole test's buffers: test_conv's shape sweep takes more than 256 host ones
 * (it aborted there on the first real GPU run). */
enum { OWNED_MAX = 4096 };
static void *g_host[OWNED_MAX], *g_dev[OWNED_MAX];
static int g_n_host, g_n_dev;

static void *hbuf(size_t bytes)
{
    QT_ASSERT(g_n_host < OWNED_MAX);
    return g_host[g_n_host++] = qt_malloc(bytes ? bytes : 1);
}

static float *hf(size_t n) { return (float *)hbuf(n * sizeof(float)); }

/* Device buffer filled with 0xFF bytes: NaN as fp32 and bf16, -1 as int32, so an output
 * element a kernel forgets to write fails the comparison. */
static void *dbuf(size_t bytes)
{
    QT_ASSERT(g_n_dev < OWNED_MAX);
    void *p = NULL;
    if (qt_cuda_malloc(&p, bytes ? bytes : 1, "test buffer")) abort();
    if (cudaMemset(p, 0xFF, bytes ? bytes : 1) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) abort();
    return g_dev[g_n_dev++] = p;
}

static int free_owned(void **state)
{
    (void)state;
    while (g_n_host > 0) free(g_host[--g_n_host]);
    (void)cudaDeviceSynchronize();
    while (g_n_dev > 0) qt_cuda_free(g_dev[--g_n_dev]);
    return 0;
}

/* Copies on the context's stream (a plain cudaMemcpy from pageable memory may return
 * before the data lands, and the stream does not wait for the legacy stream). */
static void upload(qt_cuda_ctx *ctx, void *dev, const void *host, size_t bytes)
{
    if (cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, qt_cuda_ctx_stream(ctx)) != cudaSuccess ||
        cudaStreamSynchronize(qt_cuda_ctx_stream(ctx)) != cudaSuccess)
        abort();
}

static void download(qt_cuda_ctx *ctx, void *host, const void *dev, size_t bytes)
{
    cudaError_t e = cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, qt_cuda_ctx_stream(ctx));
    if (e == cudaSuccess) e = cudaStreamSynchronize(qt_cuda_ctx_stream(ctx));
    if (e != cudaSuccess) {
        fprintf(stderr, "download: %s\n", cudaGetErrorString(e));
        abort();
    }
}

/* Activation [n][c][hw] given as fp32 NCHW on the host -> a device buffer in the context's
 * format. In bf16 the host values are rounded IN PLACE first, so the CPU reference sees
 * exactly what the GPU stores. */
static void *dev_act(qt_cuda_ctx *ctx, float *nchw, int n, int c, int hw)
{
    const qt_cuda_dtype dt = qt_cuda_ctx_dtype(ctx);
    const size_t count = (size_t)n * c * hw, bytes = count * qt_cuda_dtype_bytes(dt);
    if (dt == QT_CUDA_DT_BF16) h_round_bf16(nchw, count);
    void *staging = hbuf(bytes), *d = dbuf(bytes);
    h_pack(nchw, n, c, hw, dt, qt_cuda_ctx_layout(ctx) == QT_CUDA_NHWC, staging);
    upload(ctx, d, staging, bytes);
    return d;
}

/* A device activation in the context's format -> fp32 NCHW on the host. */
static float *host_act(qt_cuda_ctx *ctx, const void *d, int n, int c, int hw)
{
    const qt_cuda_dtype dt = qt_cuda_ctx_dtype(ctx);
    const size_t count = (size_t)n * c * hw, bytes = count * qt_cuda_dtype_bytes(dt);
    void *staging = hbuf(bytes);
    float *out = hf(count);
    download(ctx, staging, d, bytes);
    h_unpack(staging, n, c, hw, dt, qt_cuda_ctx_layout(ctx) == QT_CUDA_NHWC, out);
    return out;
}

static float *dev_f32(qt_cuda_ctx *ctx, const float *host, size_t n)
{
    float *d = (float *)dbuf(n * sizeof(float));
    upload(ctx, d, host, n * sizeof(float));
    return d;
}

static float *host_f32(qt_cuda_ctx *ctx, const float *d, size_t n)
{
    float *h = hf(n);
    download(ctx, h, d, n * sizeof(float));
    return h;
}

/* Uniform in [lo, hi), a fresh Philox stream per call (the stream counter is reset per test). */
static uint32_t g_stream;

static float *frand(size_t n, float lo, float hi)
{
    float *a = hf(n);
    qt_philox_key key = qt_philox_make_key(4321, QT_RNG_TEST);
    uint32_t s = ++g_stream;
    for (size_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * qt_u32_to_unit(qt_philox_u32(key, i, s, 0));
    return a;
}

static float *fcopy(const float *src, size_t n)
{
    float *a = hf(n);
    memcpy(a, src, n * sizeof(float));
    return a;
}

/* ---- comparisons ---- */

static bool same_float(float a, float b) { return a == b || (isnan(a) && isnan(b)); }

/* ||got - ref|| / ||ref|| <= tol; NaN never passes. Prints one line per check; on failure
 * up to 10 elements whose error exceeds tol * rms(ref), and the largest difference. */
static bool check_rel(const char *what, const char *mode, const float *got, const float *ref, size_t n, double tol)
{
    double num = 0.0, den = 0.0, worst = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (!(fabs(d) <= worst)) worst = fabs(d), worst_i = i;
    }
    double err = den > 0.0 ? sqrt(num / den) : sqrt(num);
    bool ok = err <= tol;
    printf("  %-26s %-10s rel_l2 %.2e  tol %.2e%s\n", what, mode, err, tol, ok ? "" : "  FAILED");
    if (ok) return true;
    double rms = sqrt(den / (n ? n : 1));
    int shown = 0;
    for (size_t i = 0; i < n && shown < 10; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= tol * rms)) {
            printf("    [%zu] got %.9g want %.9g\n", i, got[i], ref[i]);
            shown++;
        }
    }
    printf("    max |diff| %.3g at [%zu]\n", worst, worst_i);
    return false;
}

/* Bitwise equality (NaN equals NaN). */
static bool check_exact(const char *what, const char *mode, const float *got, const float *ref, size_t n)
{
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (same_float(got[i], ref[i])) continue;
        if (bad < 10) printf("    [%zu] got %.9g want %.9g\n", i, got[i], ref[i]);
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst)) worst = d;
        bad++;
    }
    printf("  %-26s %-10s %s", what, mode, bad ? "" : "exact\n");
    if (bad) printf("%zu of %zu differ, max |diff| %.3g  FAILED\n", bad, n, worst);
    return bad == 0;
}

#endif
