/* test_cuda_codecs.c — the GPU codecs (src/quant/cuda) against the CPU codecs (src/quant):
 *   encode: the same stream bytes (memcmp), the same size and the same residual (bitwise)
 *           for every codec and encoding, n around bucket and group edges, several
 *           (seed, step, rank, elem_offset), outputs at odd addresses, inputs with zeros,
 *           -0, subnormals, NaN/Inf buckets and l2 norms that overflow to Inf;
 *   decode: decode_add, decode_sum (with and without zeroing) and decode_average of
 *           N = 1, 3, 40 streams equal, bitwise, to the CPU's zero + decode_add loop;
 *   errors: truncations, trailing bytes, every header field, bad codes and padding bits,
 *           random bit flips: the same return code as qt_codec_decode_add, out untouched
 *           on header/length errors; EINVAL/ENOSPC from sizes alone.
 * Each check runs on two backends: "emulated" (the kernels' code run on the host,
 * qt_cuda_codec_create_emulated: always, it checks indexing, packing and arithmetic) and
 * "gpu" (real kernels, skipped with a message when no device is usable). Guard bytes
 * around every output catch writes outside the stream.
 *
 * Without QT_HAVE_CUDA the binary reports one skipped test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#ifdef QT_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "nn/cuda/cuda_ctx.h"
#include "quant/cuda/codec_cuda.h"
#include "test_quant_util.h"

typedef struct {
    const char *name;
    bool gpu;
} backend;

static const backend g_backends[] = {{"emulated", false}, {"gpu", true}};
static bool g_have_gpu;
static const char *g_no_gpu_why;
static cudaStream_t g_stream;

/* The test's backend (its cmocka state); the GPU variants skip without a device. */
static const backend *backend_of(void **state)
{
    const backend *b = (const backend *)*state;
    if (b->gpu && !g_have_gpu) {
        printf("  skipped: no usable CUDA device (%s)\n", g_no_gpu_why);
        skip();
    }
    return b;
}

/* ---- memory on a backend: device memory for the GPU, host memory for the emulation ---- */

static void *be_alloc(const backend *b, size_t bytes, int fill)
{
    void *p = NULL;
    if (!bytes) bytes = 1;
    if (b->gpu) {
        assert_int_equal(cudaMalloc(&p, bytes), cudaSuccess);
        assert_int_equal(cudaMemset(p, fill, bytes), cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    } else {
        p = malloc(bytes);
        memset(p, fill, bytes);
    }
    return p;
}

static void be_free(const backend *b, void *p)
{
    if (b->gpu)
        cudaFree(p);
    else
        free(p);
}

static void be_put(const backend *b, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    if (!b->gpu) {
        memcpy(dst, src, bytes);
        return;
    }
    assert_int_equal(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_stream), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(g_stream), cudaSuccess);
}

static void be_get(const backend *b, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    if (!b->gpu) {
        memcpy(dst, src, bytes);
        return;
    }
    assert_int_equal(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_stream), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(g_stream), cudaSuccess);
}

static qt_cuda_codec *be_codec(const backend *b, const qt_codec_params *p)
{
    qt_cuda_codec *c = NULL;
    int rc = b->gpu ? qt_cuda_codec_create(p, &c) : qt_cuda_codec_create_emulated(p, &c);
    assert_int_equal(rc, 0);
    return c;
}

/* ---- configurations ---- */

typedef struct {
    const char *name;
    qt_codec_method m;
    qt_codec_encoding e;
    qt_codec_norm nm;
    int levels, bucket;
    float alpha, beta, ratio, clip;
    bool residual; /* pass a residual (codecs with error feedback) */
} cfg;

static const cfg g_cfgs[] = {
    {"qsgd 4b max d512", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 7, 512, 0, 0, 0, 0, false},
    {"qsgd 2b max d128", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 1, 128, 0, 0, 0, 0, false},
    {"qsgd 3b max d100", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 3, 100, 0, 0, 0, 0, false},
    {"qsgd 3b max d7", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 2, 7, 0, 0, 0, 0, false},
    {"qsgd 4b max d1", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 5, 1, 0, 0, 0, 0, false},
    {"qsgd 4b max d333", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 4, 333, 0, 0, 0, 0, false},
    {"qsgd 8b max d3000", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 127, 3000, 0, 0, 0, 0, false},
    {"qsgd 16b max d0", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 32767, 0, 0, 0, 0, 0, false},
    {"qsgd 10b max d2048", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_MAX, 300, 2048, 0, 0, 0, 0, false},
    {"qsgd 4b l2 d512", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_L2, 7, 512, 0, 0, 0, 0, false},
    {"qsgd 5b l2 d0", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_L2, 15, 0, 0, 0, 0, 0, false},
    {"qsgd 3b l2 d37", QT_CODEC_QSGD, QT_ENC_FIXED, QT_NORM_L2, 3, 37, 0, 0, 0, 0, false},
    {"ecq 4b max d512", QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_MAX, 7, 512, 1.0f, 0.8f, 0, 0, true},
    {"ecq 2b max d100 a.5", QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_MAX, 1, 100, 0.5f, 0.9f, 0, 0, true},
    {"ecq 4b max d3000", QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_MAX, 7, 3000, 1.0f, 0.8f, 0, 0, true},
    {"ecq 4b l2 d256", QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_L2, 7, 256, 0.7f, 1.0f, 0, 0, true},
    {"ecq no residual", QT_CODEC_ECQ, QT_ENC_FIXED, QT_NORM_MAX, 7, 512, 1.0f, 0.8f, 0, 0, false},
    {"terngrad d128", QT_CODEC_TERNGRAD, QT_ENC_FIXED, QT_NORM_MAX, 1, 128, 0, 0, 0, 0, false},
    {"terngrad clip d128", QT_CODEC_TERNGRAD, QT_ENC_FIXED, QT_NORM_MAX, 1, 128, 0, 0, 0, 2.5f, false},
    {"terngrad clip d0", QT_CODEC_TERNGRAD, QT_ENC_FIXED, QT_NORM_MAX, 1, 0, 0, 0, 0, 1.0f, false},
    {"none", QT_CODEC_NONE, QT_ENC_FIXED, QT_NORM_MAX, 0, 0, 0, 0, 0, 0, false},
    {"fp16", QT_CODEC_FP16, QT_ENC_FIXED, QT_NORM_MAX, 0, 0, 0, 0, 0, 0, false},
    {"bf16", QT_CODEC_BF16, QT_ENC_FIXED, QT_NORM_MAX, 0, 0, 0, 0, 0, 0, false},
    {"onebit d512", QT_CODEC_ONEBIT, QT_ENC_FIXED, QT_NORM_MAX, 0, 512, 0, 0, 0, 0, true},
    {"onebit d100", QT_CODEC_ONEBIT, QT_ENC_FIXED, QT_NORM_MAX, 0, 100, 0, 0, 0, 0, true},
    {"onebit d0", QT_CODEC_ONEBIT, QT_ENC_FIXED, QT_NORM_MAX, 0, 0, 0, 0, 0, 0, true},
    {"onebit no residual", QT_CODEC_ONEBIT, QT_ENC_FIXED, QT_NORM_MAX, 0, 3, 0, 0, 0, 0, false},
    /* host path */
    {"topk varint", QT_CODEC_TOPK, QT_ENC_FIXED, QT_NORM_MAX, 0, 0, 0, 0, 0.05f, 0, true},
    {"topk elias", QT_CODEC_TOPK, QT_ENC_ELIAS, QT_NORM_MAX, 0, 0, 0, 0, 0.3f, 0, true},
    {"qsgd elias", QT_CODEC_QSGD, QT_ENC_ELIAS, QT_NORM_L2, 7, 100, 0, 0, 0, 0, false},
    {"ecq huffman", QT_CODEC_ECQ, QT_ENC_HUFFMAN, QT_NORM_MAX, 2, 128, 1.0f, 0.8f, 0, 0, true},
};
enum { NCFG = sizeof g_cfgs / sizeof g_cfgs[0] };

static qt_codec_params params_of(const cfg *c, uint64_t seed)
{
    qt_codec_params p;
    qt_codec_params_default(&p, c->m);
    p.encoding = c->e;
    p.norm = c->nm;
    if (c->levels) p.levels = c->levels;
    p.bucket = c->bucket;
    if (c->m == QT_CODEC_ECQ) p.alpha = c->alpha, p.beta = c->beta;
    if (c->ratio > 0) p.topk_ratio = c->ratio;
    p.clip_sigma = c->clip;
    p.seed = seed;
    assert_int_equal(qt_codec_params_check(&p), 0);
    return p;
}

/* Gradients: pattern 0 gaussian; 1 plus a zero bucket, -0, subnormals, ties of |x|;
 * 2 plus NaN, Inf and near-FLT_MAX values (l2 norms overflow to Inf); 3 with negative
 * NaNs instead. Onebit's bytes match for any NaN payload as long as one bucket's NaNs
 * share it (simple_cuda.cu explains why several payloads depend on the CPU compiler). */
static float *make_grad(size_t n, uint64_t seed, int pattern)
{
    float *g = malloc((n ? n : 1) * sizeof *g);
    tq_gaussian(g, n, seed, 1.0f);
    if (pattern >= 1 && n > 20) {
        for (size_t i = n / 3; i < n / 3 + 600 && i < n; i++) g[i] = 0.0f;
        g[1] = -0.0f;
        g[2] = 1e-40f;
        g[3] = -3e-39f;
        g[4] = -g[5];
        g[7] = 1e-30f;
    }
    if (pattern >= 2 && n > 40) {
        g[n - 1] = NAN;
        g[n / 2] = INFINITY;
        g[11] = 3e38f;
        g[12] = -3.3e38f;
        g[n - 5] = 6.5e4f; /* fp16 overflow edge */
    }
    if (pattern >= 3 && n > 40) { /* x86's default NaN, twice, instead of C's NAN */
        const uint32_t neg = 0xffc00000u;
        memcpy(&g[n - 1], &neg, 4);
        memcpy(&g[n / 4], &neg, 4);
    }
    return g;
}

/* Floats equal bit for bit, or both NaN: a GPU operation returns the canonical NaN
 * 0x7fffffff where x86 propagates an input's payload (or its default NaN 0xffc00000), so
 * sums and residuals holding NaN agree in being NaN only. Stream bytes never hold such a
 * NaN (scales and means are written as 0x7fc00000), so streams are compared exactly. */
static bool same_floats(const float *a, const float *b, size_t n, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (tq_bits(a[i]) != tq_bits(b[i]) && !(isnan(a[i]) && isnan(b[i]))) {
            if (at) *at = i;
            return false;
        }
    return true;
}

static void dump_diff(const char *what, const uint8_t *got, const uint8_t *want, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        if (got[i] != want[i]) {
            printf("    %s: first difference at byte %zu of %zu: got %02x want %02x\n", what, i, bytes,
                   got[i], want[i]);
            return;
        }
}

/* ---- encode ---- */

typedef struct {
    size_t n;
    uint64_t seed, off;
    uint32_t step, rank;
    int pattern, out_off;
} enc_case;

/* One encode on backend b against the CPU; returns false (after printing) on a mismatch. */
static bool encode_once(const backend *b, const cfg *c, const enc_case *e)
{
    const qt_codec_params p = params_of(c, e->seed);
    const size_t n = e->n, cap = qt_codec_max_bytes(&p, n), fb = n * sizeof(float);
    const bool res = c->residual && qt_codec_has_residual(&p);
    float *g = make_grad(n, e->seed + 17, e->pattern);
    float *h = malloc(fb ? fb : 1), *h_cpu = malloc(fb ? fb : 1), *h_got = malloc(fb ? fb : 1);
    tq_gaussian(h, n, e->seed + 29, 0.3f);
    memcpy(h_cpu, h, fb);
    uint8_t *want = malloc(cap), *got = malloc(cap + 64);
    size_t want_bytes = 0, got_bytes = 0;
    int rc_cpu = qt_codec_encode(&p, g, res ? h_cpu : NULL, n, e->step, e->rank, e->off, want, cap, &want_bytes);
    assert_int_equal(rc_cpu, 0);

    qt_cuda_codec *cc = be_codec(b, &p);
    float *dg = be_alloc(b, fb, 0), *dh = be_alloc(b, fb, 0);
    uint8_t *dout = be_alloc(b, cap + 64, 0xEE);
    be_put(b, dg, g, fb);
    be_put(b, dh, h, fb);
    int rc = qt_cuda_codec_encode(cc, g_stream, dg, res ? dh : NULL, n, e->step, e->rank, e->off,
                                  dout + e->out_off, cap, &got_bytes);
    bool ok = rc == 0 && got_bytes == want_bytes;
    if (ok) {
        be_get(b, got, dout, cap + 64);
        be_get(b, h_got, dh, fb);
        ok = memcmp(got + e->out_off, want, want_bytes) == 0;
        if (!ok) dump_diff("stream", got + e->out_off, want, want_bytes);
        /* the kernels write exactly the stream; the host path (the CPU codec) may use all
         * of cap as scratch */
        const size_t end = e->out_off + (qt_cuda_codec_on_gpu(cc) ? want_bytes : cap);
        for (size_t i = 0; i < cap + 64; i++)
            if ((i < (size_t)e->out_off || i >= end) && got[i] != 0xEE) {
                printf("    write outside the stream at byte %zu\n", i);
                ok = false;
                break;
            }
        size_t at = 0;
        if (res && !same_floats(h_got, h_cpu, n, &at)) {
            printf("    residual [%zu]: got %.9g (%08x) want %.9g (%08x)\n", at, h_got[at], tq_bits(h_got[at]),
                   h_cpu[at], tq_bits(h_cpu[at]));
            ok = false;
        }
        if (!res && memcmp(h_got, h, fb) != 0) {
            printf("    residual changed although none was passed\n");
            ok = false;
        }
    }
    if (!ok)
        printf("  FAILED %s [%s] n=%zu seed=%llu step=%u rank=%u off=%llu pattern=%d out+%d: rc %d "
               "bytes %zu (cpu %zu)\n",
               b->name, c->name, n, (unsigned long long)e->seed, e->step, e->rank,
               (unsigned long long)e->off, e->pattern, e->out_off, rc, got_bytes, want_bytes);
    be_free(b, dg), be_free(b, dh), be_free(b, dout);
    qt_cuda_codec_destroy(cc);
    free(g), free(h), free(h_cpu), free(h_got), free(want), free(got);
    return ok;
}

static const size_t g_sizes[] = {0, 1, 7, 8, 9, 100, 511, 512, 513, 2047, 2048, 2049, 3001, 6000, 20000};
enum { NSIZES = sizeof g_sizes / sizeof g_sizes[0] };

static void test_encode_matches_cpu(void **state)
{
    const backend *b = backend_of(state);
    int failures = 0, runs = 0;
    {
        for (int ci = 0; ci < NCFG; ci++) {
            for (int si = 0; si < NSIZES; si++) {
                /* two (seed, step, rank, offset, pattern, alignment) cases per size */
                for (int v = 0; v < 2; v++) {
                    const uint32_t r = tq_rand(1000 + ci, si * 2 + v);
                    enc_case e = {g_sizes[si], 5 + r % 1000, (uint64_t)(r >> 8) % 5000 + (v ? (1ull << 33) : 0),
                                  r % 7, (r >> 4) % 5, (int)((r >> 12) % 4), v ? (int)(r >> 20) % 4 : 0};
                    if (v == 0) e.off = 0;
                    runs++;
                    if (!encode_once(b, &g_cfgs[ci], &e) && ++failures > 10) fail();
                }
            }
        }
        printf("  %s: %d encodes equal to the CPU's\n", b->name, runs - failures);
    }
    assert_int_equal(failures, 0);
}

/* ---- decode ---- */

/* count CPU streams of n elements (ranks 0..count-1), exact-size host buffers. */
static uint8_t **cpu_streams(const qt_codec_params *p, size_t n, int count, int pattern, size_t *len)
{
    uint8_t **s = malloc((size_t)count * sizeof *s);
    float *h = calloc(n ? n : 1, sizeof(float));
    for (int r = 0; r < count; r++) {
        float *g = make_grad(n, 300 + (uint64_t)r, pattern);
        int rc;
        s[r] = tq_encode(p, g, qt_codec_has_residual(p) ? h : NULL, n, 9, (uint32_t)r, 64, &len[r], &rc);
        assert_int_equal(rc, 0);
        free(g);
    }
    free(h);
    return s;
}

/* Device copies of the streams, each in an allocation of exactly its length. */
static uint8_t **be_streams(const backend *b, uint8_t **s, const size_t *len, int count)
{
    uint8_t **d = malloc((size_t)count * sizeof *d);
    for (int r = 0; r < count; r++) {
        d[r] = be_alloc(b, len[r], 0);
        be_put(b, d[r], s[r], len[r]);
    }
    return d;
}

static float *start_out(size_t n, uint64_t seed)
{
    float *o = malloc((n ? n : 1) * sizeof *o);
    tq_gaussian(o, n, seed, 2.0f);
    for (size_t i = 0; i < n; i += 5) o[i] = (i / 5) % 2 ? -0.0f : 0.0f; /* sign of zero sums */
    return o;
}

/* mode 0: decode_add (count 1, scale 0.37); 1: decode_sum without zeroing (scale -1.5);
 * 2: decode_average. */
static bool decode_once(const backend *b, const cfg *c, size_t n, int count, int mode, int pattern)
{
    const qt_codec_params p = params_of(c, 77);
    size_t *len = malloc((size_t)count * sizeof *len);
    uint8_t **s = cpu_streams(&p, n, count, pattern, len);
    const size_t fb = n * sizeof(float);
    float *want = start_out(n, 5 + (uint64_t)count), *got = malloc(fb + 64);
    float *start = malloc(fb ? fb : 1);
    memcpy(start, want, fb);
    const float scale = mode == 0 ? 0.37f : mode == 1 ? -1.5f : 1.0f / (float)count;
    if (mode == 2) memset(want, 0, fb);
    for (int r = 0; r < count; r++) assert_int_equal(qt_codec_decode_add(&p, s[r], len[r], n, scale, want), 0);

    qt_cuda_codec *cc = be_codec(b, &p);
    uint8_t **ds = be_streams(b, s, len, count);
    float *dout = be_alloc(b, fb + 64, 0xEE);
    be_put(b, dout, start, fb);
    int rc;
    if (mode == 0)
        rc = qt_cuda_codec_decode_add(cc, g_stream, ds[0], len[0], n, scale, dout, NULL);
    else if (mode == 1)
        rc = qt_cuda_codec_decode_sum(cc, g_stream, count, (const uint8_t *const *)ds, len, n, scale, false, dout, NULL);
    else
        rc = qt_cuda_codec_decode_average(cc, g_stream, count, (const uint8_t *const *)ds, len, n, dout, NULL);
    be_get(b, got, dout, fb + 64);
    bool ok = rc == 0 && same_floats(got, want, n, NULL);
    for (size_t i = 0; i < 64; i++) ok &= ((uint8_t *)got)[fb + i] == 0xEE;
    if (!ok) {
        printf("  FAILED %s decode [%s] n=%zu streams=%d mode=%d pattern=%d: rc %d\n", b->name, c->name, n,
               count, mode, pattern, rc);
        for (size_t i = 0, shown = 0; i < n && shown < 5; i++)
            if (tq_bits(got[i]) != tq_bits(want[i]) && !(isnan(got[i]) && isnan(want[i])))
                printf("    [%zu] got %.9g want %.9g\n", i, got[i], want[i]), shown++;
    }
    for (int r = 0; r < count; r++) be_free(b, ds[r]), free(s[r]);
    be_free(b, dout);
    qt_cuda_codec_destroy(cc);
    free(ds), free(s), free(len), free(want), free(got), free(start);
    return ok;
}

static void test_decode_matches_cpu(void **state)
{
    const backend *b = backend_of(state);
    static const size_t sizes[] = {0, 1, 9, 513, 2049, 6000};
    int failures = 0;
    {
        for (int ci = 0; ci < NCFG; ci++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                const size_t n = sizes[si];
                const int pattern = (int)(si % 4);
                if (!decode_once(b, &g_cfgs[ci], n, 1, 0, pattern)) failures++;
                if (!decode_once(b, &g_cfgs[ci], n, 3, 1, pattern)) failures++;
                if (!decode_once(b, &g_cfgs[ci], n, 3, 2, pattern)) failures++;
                if (n == 2049 && !decode_once(b, &g_cfgs[ci], n, 40, 2, 0)) failures++;
                if (failures > 10) fail();
            }
        printf("  %s: decode checked\n", b->name);
    }
    assert_int_equal(failures, 0);
}

/* ---- malformed input ---- */

/* CPU and backend decode_add of one (possibly corrupt) stream: the same code; for a header
 * or length error out must be untouched, for success the same sums. Also the
 * asynchronous form (device status word) must report the same code. */
static bool malformed_once(const backend *b, const qt_codec_params *p, const char *what,
                           const uint8_t *in, size_t len, size_t n, bool hdr)
{
    const size_t fb = n * sizeof(float);
    float *want = start_out(n, 3), *got = malloc(fb ? fb : 1), *start = malloc(fb ? fb : 1);
    memcpy(start, want, fb);
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, in, len);
    const int rc_cpu = qt_codec_decode_add(p, copy, len, n, 1.0f, want);
    free(copy);

    qt_cuda_codec *cc = be_codec(b, p);
    uint8_t *din = be_alloc(b, len, 0);
    be_put(b, din, in, len);
    float *dout = be_alloc(b, fb, 0);
    be_put(b, dout, start, fb);
    const int rc = qt_cuda_codec_decode_add(cc, g_stream, din, len, n, 1.0f, dout, NULL);
    be_get(b, got, dout, fb);
    bool ok = rc == rc_cpu;
    if (rc_cpu == 0 || !qt_cuda_codec_on_gpu(cc)) ok &= same_floats(got, want, n, NULL); /* host path: CPU code */
    if (hdr) ok &= rc_cpu != 0 && memcmp(got, start, fb) == 0 && memcmp(want, start, fb) == 0;
    /* the asynchronous form: status in a device word */
    int *dst = be_alloc(b, sizeof(int), 0x55), st = 1;
    be_put(b, dout, start, fb);
    ok &= qt_cuda_codec_decode_add(cc, g_stream, din, len, n, 1.0f, dout, dst) == 0;
    be_get(b, &st, dst, sizeof st);
    ok &= st == rc_cpu;
    if (!ok)
        printf("  FAILED %s malformed [%s m=%d e=%d n=%zu len=%zu]: rc %d async %d, cpu %d\n", b->name, what,
               p->method, p->encoding, n, len, rc, st, rc_cpu);
    be_free(b, din), be_free(b, dout), be_free(b, dst);
    qt_cuda_codec_destroy(cc);
    free(want), free(got), free(start);
    return ok;
}

static void test_malformed_like_cpu(void **state)
{
    const backend *b = backend_of(state);
    int failures = 0;
    {
        for (int ci = 0; ci < NCFG; ci++) {
            const qt_codec_params p = params_of(&g_cfgs[ci], 5);
            const size_t n = g_cfgs[ci].bucket == 3 ? 13 : 1001; /* n*b and n not multiples of 8 */
            size_t len;
            uint8_t **s = cpu_streams(&p, n, 1, 0, &len);
            uint8_t *bad = malloc(len + 8);
            const bool host = g_cfgs[ci].m == QT_CODEC_TOPK || g_cfgs[ci].e != QT_ENC_FIXED;
            /* hdr: a header or length error, found before out is touched */
#define TRY(what, l, hdr)                                                                \
    do {                                                                                 \
        if (!malformed_once(b, &p, what, bad, l, n, hdr)) failures++;                    \
        memcpy(bad, s[0], len);                                                          \
    } while (0)
            memcpy(bad, s[0], len);
            bad[len] = 0;
            TRY("valid", len, false);
            TRY("empty", 0, true);
            TRY("15 bytes", 15, true);
            TRY("header only", 16, !host);
            TRY("one byte short", len - 1, !host);
            TRY("one byte extra", len + 1, !host);
            for (int j = 0; j < QT_CODEC_HEADER_BYTES; j++) {
                bad[j] ^= j == 4 ? 0x02 : 0x10; /* byte 4: the fallback flag */
                TRY("header byte", len, !host || j != 4);
            }
            bad[4] ^= 0x04;
            TRY("unknown flag", len, true);
            if (!host && len > 16) {
                memset(bad + 16, 0xFF, len - 16); /* codes 2^b - 1 > 2s where 2s+1 < 2^b */
                TRY("all ones payload", len, false);
                bad[len - 1] |= 0x80; /* padding bits (when n*b % 8) */
                TRY("padding", len, false);
            }
            for (int k = 0; k < 24; k++) { /* random bit flips in the payload */
                if (len <= 16) break;
                uint32_t r = tq_rand(77 + ci, k);
                bad[16 + r % (len - 16)] ^= (uint8_t)(1u << ((r >> 20) % 8));
                TRY("bit flip", len, false);
            }
#undef TRY
            free(bad), free(s[0]), free(s);
            if (failures > 10) fail();
        }
        printf("  %s: malformed streams checked\n", b->name);
    }
    assert_int_equal(failures, 0);
}

/* ---- sizes and arguments ---- */

static void test_arguments(void **state)
{
    const backend *b = backend_of(state);
    {
        const qt_codec_params p = params_of(&g_cfgs[12], 1); /* ecq */
        const size_t n = 1000, cap = qt_codec_max_bytes(&p, n);
        qt_cuda_codec *cc = be_codec(b, &p);
        float *g = make_grad(n, 4, 0), *h = malloc(n * 4), *h2 = malloc(n * 4);
        tq_gaussian(h, n, 5, 1.0f);
        float *dg = be_alloc(b, n * 4, 0), *dh = be_alloc(b, n * 4, 0);
        uint8_t *dout = be_alloc(b, cap, 0);
        be_put(b, dg, g, n * 4);
        be_put(b, dh, h, n * 4);
        size_t bytes = 0;
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, dg, dh, n, 0, 0, 0, dout, cap - 1, &bytes),
                         QT_CODEC_ENOSPC);
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, dg, dh, n, 0, 0, 0, dout, 15, &bytes), QT_CODEC_ENOSPC);
        be_get(b, h2, dh, n * 4);
        assert_memory_equal(h, h2, n * 4); /* untouched */
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, dg, dh, n, 0, 0, 0, NULL, cap, &bytes), QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, NULL, dh, n, 0, 0, 0, dout, cap, &bytes), QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, dg, dh, (size_t)UINT32_MAX + 1, 0, 0, 0, dout, cap, &bytes),
                         QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_decode_add(cc, g_stream, dout, 100, n, 1.0f, NULL, NULL), QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_decode_add(cc, g_stream, NULL, 100, n, 1.0f, dg, NULL), QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_decode_average(cc, g_stream, 0, NULL, NULL, n, dg, NULL), QT_CODEC_EINVAL);
        assert_int_equal(qt_cuda_codec_decode_sum(cc, g_stream, -1, NULL, NULL, n, 1.0f, true, dg, NULL),
                         QT_CODEC_EINVAL);
        /* zero streams with zeroing: out becomes +0 */
        assert_int_equal(qt_cuda_codec_decode_sum(cc, g_stream, 0, NULL, NULL, n, 1.0f, true, dg, NULL), 0);
        be_get(b, h2, dg, n * 4);
        for (size_t i = 0; i < n; i++) assert_int_equal(tq_bits(h2[i]), 0);
        qt_codec_params bad = p;
        bad.levels = 0;
        qt_cuda_codec *none = NULL;
        assert_int_equal(qt_cuda_codec_create(&bad, &none), QT_CODEC_EINVAL);
        assert_null(none);
        assert_true(qt_cuda_codec_on_gpu(cc));
        be_free(b, dg), be_free(b, dh), be_free(b, dout);
        free(g), free(h), free(h2);
        qt_cuda_codec_destroy(cc);
    }
}

/* ---- a large slice on the GPU: many waves of blocks, the warp shortcuts the emulation
 * does not take, and (for information) the time per call ---- */

/* Median time in ms of 5 runs of `call` on g_stream (GPU only); call may use the run index i. */
#define MEDIAN5_MS(out, call)                                                           \
    do {                                                                                \
        double t_[5];                                                                   \
        cudaEvent_t a_, b_;                                                             \
        cudaEventCreate(&a_), cudaEventCreate(&b_);                                     \
        for (int i = 0; i < 5; i++) {                                                   \
            float ms_ = 0.0f;                                                           \
            cudaEventRecord(a_, g_stream);                                              \
            (void)(call);                                                               \
            cudaEventRecord(b_, g_stream);                                              \
            cudaEventSynchronize(b_);                                                   \
            cudaEventElapsedTime(&ms_, a_, b_);                                         \
            t_[i] = ms_;                                                                \
            for (int j = i; j > 0 && t_[j] < t_[j - 1]; j--) {                          \
                double s_ = t_[j]; t_[j] = t_[j - 1]; t_[j - 1] = s_;                   \
            }                                                                           \
        }                                                                               \
        cudaEventDestroy(a_), cudaEventDestroy(b_);                                     \
        (out) = t_[2];                                                                  \
    } while (0)

static void test_large_slice(void **state)
{
    const backend *b = backend_of(state);
    const size_t n = ((size_t)1 << 24) + 3, fb = n * sizeof(float);
    static const int which[] = {0, 12}; /* qsgd and ecq, 4 bits, bucket 512 */
    for (int w = 0; w < 2; w++) {
        const cfg *c = &g_cfgs[which[w]];
        const qt_codec_params p = params_of(c, 11);
        const size_t cap = qt_codec_max_bytes(&p, n);
        float *g = make_grad(n, 21, 1), *h = malloc(fb), *h_got = malloc(fb);
        tq_gaussian(h, n, 22, 0.3f);
        qt_cuda_codec *cc = be_codec(b, &p);
        float *dg = be_alloc(b, fb, 0), *dh = be_alloc(b, fb, 0), *dsum = be_alloc(b, fb, 0);
        uint8_t *dout = be_alloc(b, cap, 0);
        be_put(b, dg, g, fb);
        be_put(b, dh, h, fb);
        uint8_t *want = malloc(cap), *got = malloc(cap);
        size_t want_bytes = 0, got_bytes = 0;
        const bool res = c->residual;
        assert_int_equal(qt_codec_encode(&p, g, res ? h : NULL, n, 3, 1, 4096, want, cap, &want_bytes), 0);
        assert_int_equal(qt_cuda_codec_encode(cc, g_stream, dg, res ? dh : NULL, n, 3, 1, 4096, dout, cap, &got_bytes), 0);
        be_get(b, got, dout, cap);
        be_get(b, h_got, dh, fb);
        assert_int_equal(got_bytes, want_bytes);
        assert_memory_equal(got, want, want_bytes);
        if (res) assert_true(same_floats(h_got, h, n, NULL));
        /* decode_average of 4 copies of the stream against the CPU */
        const uint8_t *ins[4] = {dout, dout, dout, dout};
        const size_t lens[4] = {got_bytes, got_bytes, got_bytes, got_bytes};
        float *sum = calloc(n, sizeof(float)), *sum_got = malloc(fb);
        for (int r = 0; r < 4; r++) assert_int_equal(qt_codec_decode_add(&p, want, want_bytes, n, 0.25f, sum), 0);
        assert_int_equal(qt_cuda_codec_decode_average(cc, g_stream, 4, ins, lens, n, dsum, NULL), 0);
        be_get(b, sum_got, dsum, fb);
        assert_true(same_floats(sum_got, sum, n, NULL));
        if (b->gpu) { /* timing, for information */
            int *dst = be_alloc(b, 4 * sizeof(int), 0);
            double enc, dec;
            MEDIAN5_MS(enc, qt_cuda_codec_encode(cc, g_stream, dg, res ? dh : NULL, n, 4 + i, 1, 4096, dout, cap, &got_bytes));
            MEDIAN5_MS(dec, qt_cuda_codec_decode_average(cc, g_stream, 4, ins, lens, n, dsum, dst));
            printf("  %s n=%zu: encode %.3f ms (%.0f GB/s of fp32 input), decode_average of 4 %.3f ms\n", c->name, n,
                   enc, (double)fb / (enc * 1e6), dec);
            be_free(b, dst);
        }
        be_free(b, dg), be_free(b, dh), be_free(b, dsum), be_free(b, dout);
        qt_cuda_codec_destroy(cc);
        free(g), free(h), free(h_got), free(want), free(got), free(sum), free(sum_got);
    }
}

int main(void)
{
    const char *why = NULL;
    if (qt_cuda_device_count(&why) > 0 && cudaSetDevice(0) == cudaSuccess &&
        cudaStreamCreate(&g_stream) == cudaSuccess) {
        g_have_gpu = true;
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) printf("test_cuda_codecs: device %s\n", prop.name);
    } else {
        (void)cudaGetLastError();
        g_no_gpu_why = why ? why : "stream creation failed";
        printf("test_cuda_codecs: GPU tests skipped: no usable CUDA device (%s); the emulated "
               "kernels still run\n", g_no_gpu_why);
    }
    void *emu = (void *)&g_backends[0], *gpu = (void *)&g_backends[1];
    const struct CMUnitTest tests[] = {
        {"encode_matches_cpu/emulated", test_encode_matches_cpu, NULL, NULL, emu},
        {"decode_matches_cpu/emulated", test_decode_matches_cpu, NULL, NULL, emu},
        {"malformed_like_cpu/emulated", test_malformed_like_cpu, NULL, NULL, emu},
        {"arguments/emulated", test_arguments, NULL, NULL, emu},
        {"encode_matches_cpu/gpu", test_encode_matches_cpu, NULL, NULL, gpu},
        {"decode_matches_cpu/gpu", test_decode_matches_cpu, NULL, NULL, gpu},
        {"malformed_like_cpu/gpu", test_malformed_like_cpu, NULL, NULL, gpu},
        {"arguments/gpu", test_arguments, NULL, NULL, gpu},
        {"large_slice/gpu", test_large_slice, NULL, NULL, gpu}};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (g_have_gpu) cudaStreamDestroy(g_stream);
    return rc;
}

#else /* !QT_HAVE_CUDA */

static void test_cuda_codecs_skipped(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    printf("test_cuda_codecs: skipped: built without CUDA\n");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cuda_codecs_skipped)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
