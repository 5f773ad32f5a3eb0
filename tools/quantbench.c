/* quantbench — size, error and speed of every gradient codec (src/quant) on this CPU.
 *
 *   ./quantbench [--n N] [--input FILE.f32] [--threads T] [--reps R] [--only METHOD]
 *                [--cpu-time]
 *
 * Input: N(0,1) floats (Philox, fixed seed; default n = 16M), or a raw little-endian
 * float32 gradient dump (--input; --n then keeps its first N values). For each codec and
 * encoding it prints bits/element (exact encoded size incl. the 16-byte header), the ratio
 * against fp32, the relative l2 error ||decode(encode(x)) - x|| / ||x|| of one step (error
 * feedback codecs start from a zero residual), and encode and decode_add throughput in GB/s
 * of fp32 input (4n bytes / best time of R runs). --threads T splits the slice into T
 * pieces (at multiples of 64 elements and of the bucket) encoded/decoded in parallel.
 * --cpu-time (one thread only) times with the thread's CPU clock instead of the wall
 * clock: on a machine shared with other jobs it leaves out the time spent waiting for a
 * core (it still includes cache and memory contention).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/philox.h"
#include "core/qt.h"
#include "quant/codec.h"

typedef struct {
    qt_codec_method method;
    qt_codec_encoding enc;
    qt_codec_norm norm;
    int bits, bucket;
    float topk_ratio, clip;
} bench_case;

static void usage(void)
{
    fprintf(stderr, "usage: quantbench [--n N] [--input FILE.f32] [--threads T] [--reps R] "
                    "[--only METHOD] [--cpu-time]\n");
}

/* Wall clock, or this thread's CPU clock (--cpu-time). */
static double bench_clock(bool cpu)
{
    if (!cpu) return qt_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int read_input(const char *path, size_t limit, float **x, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return qt_fail("%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return qt_fail("%s: cannot seek", path);
    }
    long size = ftell(f);
    rewind(f);
    if (size < 4 || size % 4 != 0) {
        fclose(f);
        return qt_fail("%s: size %ld is not a positive multiple of 4 (raw float32)", path, size);
    }
    size_t cnt = (size_t)size / 4;
    if (limit && limit < cnt) cnt = limit;
    *x = qt_aligned_alloc(cnt * sizeof(float));
    size_t got = fread(*x, sizeof(float), cnt, f);
    fclose(f);
    if (got != cnt) return qt_fail("%s: short read (%zu of %zu floats)", path, got, cnt);
    *n = cnt;
    return 0;
}

static void gaussian(float *x, size_t n)
{
    qt_philox_key key = qt_philox_make_key(12345, QT_RNG_TEST);
    for (size_t i = 0; i < n; i += 2) {
        uint32_t r[4];
        qt_philox_block(key, i / 2, 0, 0, r);
        double u1 = ((double)r[0] + 1.0) / 4294967296.0, u2 = (double)r[1] / 4294967296.0;
        double rad = sqrt(-2.0 * log(u1));
        x[i] = (float)(rad * cos(6.283185307179586 * u2));
        if (i + 1 < n) x[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
    }
}

/* Slices for T threads: boundaries at multiples of 64 and of the bucket. */
static size_t slice_begin(const qt_codec_params *p, size_t n, int t, int nt)
{
    size_t unit = 64;
    if (p->bucket > 0) {
        size_t b = (size_t)p->bucket, a = unit, c = b;
        while (c) { /* lcm(64, bucket) */
            size_t r = a % c;
            a = c;
            c = r;
        }
        unit = 64 / a * b;
    }
    size_t per = (n / (size_t)nt + unit - 1) / unit * unit;
    size_t b = per * (size_t)t;
    return b < n ? b : n;
}

static int run_case(const bench_case *bc, const float *x, size_t n, int nt, int reps, bool cpu)
{
    qt_codec_params p;
    qt_codec_params_default(&p, bc->method);
    p.encoding = bc->enc;
    p.norm = bc->norm;
    if (bc->bits) p.levels = qt_codec_levels_from_bits(bc->bits);
    if (bc->bucket) p.bucket = bc->bucket;
    if (bc->topk_ratio > 0) p.topk_ratio = bc->topk_ratio;
    p.clip_sigma = bc->clip;
    p.seed = 42;
    const char *why = qt_codec_params_problem(&p);
    if (why) return qt_fail("quantbench: %s: %s", qt_codec_method_name(p.method), why);

    size_t off[65], cap[64], outoff[65];
    outoff[0] = 0;
    for (int t = 0; t <= nt; t++) off[t] = slice_begin(&p, n, t, nt);
    off[nt] = n;
    for (int t = 0; t < nt; t++) {
        cap[t] = qt_codec_max_bytes(&p, off[t + 1] - off[t]);
        outoff[t + 1] = outoff[t] + cap[t];
    }
    uint8_t *buf = qt_aligned_alloc(outoff[nt]);
    float *res = qt_codec_has_residual(&p) ? qt_aligned_alloc(n * sizeof(float)) : NULL;
    float *out = qt_aligned_alloc(n * sizeof(float));
    size_t got[64] = {0};
    double t_enc = 1e30, t_dec = 1e30;
    int rc = 0;
    for (int r = 0; r < reps && rc == 0; r++) {
        if (res) memset(res, 0, n * sizeof(float));
        double t0 = bench_clock(cpu);
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(| : rc)
        for (int t = 0; t < nt; t++)
            rc |= -qt_codec_encode(&p, x + off[t], res ? res + off[t] : NULL, off[t + 1] - off[t],
                                   0, 0, off[t], buf + outoff[t], cap[t], &got[t]);
        double dt = bench_clock(cpu) - t0;
        if (dt < t_enc) t_enc = dt;
    }
    if (rc) {
        qt_free_aligned(buf), qt_free_aligned(res), qt_free_aligned(out);
        return qt_fail("quantbench: %s encode failed", qt_codec_method_name(p.method));
    }
    for (int r = 0; r < reps && rc == 0; r++) {
        memset(out, 0, n * sizeof(float));
        double t0 = bench_clock(cpu);
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(| : rc)
        for (int t = 0; t < nt; t++)
            rc |= -qt_codec_decode_add(&p, buf + outoff[t], got[t], off[t + 1] - off[t], 1.0f,
                                       out + off[t]);
        double dt = bench_clock(cpu) - t0;
        if (dt < t_dec) t_dec = dt;
    }
    if (rc) {
        qt_free_aligned(buf), qt_free_aligned(res), qt_free_aligned(out);
        return qt_fail("quantbench: %s decode failed", qt_codec_method_name(p.method));
    }
    double err = 0, ref = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)out[i] - (double)x[i];
        err += d * d;
        ref += (double)x[i] * (double)x[i];
    }
    for (int t = 0; t < nt; t++) total += got[t];
    double bpe = 8.0 * (double)total / (double)n, gb = 4.0 * (double)n / 1e9;
    char bits[16] = "-", bucket[16] = "-", enc[16] = "-";
    bool levels = p.method == QT_CODEC_QSGD || p.method == QT_CODEC_ECQ;
    if (levels) snprintf(bits, sizeof bits, "%d", qt_codec_bits_from_levels(p.levels));
    if (p.method == QT_CODEC_TERNGRAD) snprintf(bits, sizeof bits, "2");
    if (p.method == QT_CODEC_ONEBIT) snprintf(bits, sizeof bits, "1");
    if (p.method == QT_CODEC_TOPK) snprintf(bits, sizeof bits, "k=%g", (double)p.topk_ratio);
    if (levels || p.method == QT_CODEC_TERNGRAD || p.method == QT_CODEC_ONEBIT)
        snprintf(bucket, sizeof bucket, "%d", p.bucket);
    if (levels || p.method == QT_CODEC_TERNGRAD || p.method == QT_CODEC_TOPK)
        snprintf(enc, sizeof enc, "%s", p.method == QT_CODEC_TOPK && p.encoding == QT_ENC_FIXED
                                            ? "varint" : qt_codec_encoding_name(p.encoding));
    char name[32];
    snprintf(name, sizeof name, "%s%s%s", qt_codec_method_name(p.method),
             levels ? "/" : (p.clip_sigma > 0 ? "/clip" : ""),
             levels ? qt_codec_norm_name(p.norm) : "");
    if (p.clip_sigma > 0) snprintf(name, sizeof name, "terngrad/c%.1f", (double)p.clip_sigma);
    printf("%-14s %-8s %-6s %-6s %9.4f %8.2f %10.4f %9.3f %9.3f\n", name, enc, bits, bucket, bpe,
           32.0 / bpe, sqrt(err / (ref > 0 ? ref : 1)), gb / t_enc, gb / t_dec);
    fflush(stdout);
    qt_free_aligned(buf);
    qt_free_aligned(res);
    qt_free_aligned(out);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 16u << 20;
    const char *input = NULL, *only = NULL;
    int nt = 1, reps = 3;
    bool n_given = false, cpu = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--n") && has) {
            n = strtoull(argv[++i], NULL, 10);
            n_given = true;
        } else if (!strcmp(a, "--input") && has) {
            input = argv[++i];
        } else if (!strcmp(a, "--threads") && has) {
            nt = atoi(argv[++i]);
        } else if (!strcmp(a, "--reps") && has) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(a, "--only") && has) {
            only = argv[++i];
        } else if (!strcmp(a, "--cpu-time")) {
            cpu = true;
        } else {
            usage();
            return a[0] == '-' && a[1] == 'h' ? 0 : 2;
        }
    }
    if (nt < 1 || nt > 64 || reps < 1 || (n_given && n == 0) || n > UINT32_MAX ||
        (cpu && nt != 1)) {
        usage();
        return 2;
    }
    float *x = NULL;
    if (input) {
        if (read_input(input, n_given ? n : 0, &x, &n) != 0) return 1;
    } else {
        x = qt_aligned_alloc(n * sizeof(float));
        gaussian(x, n);
    }
    printf("quantbench: n = %zu floats (%s), %d thread%s, best of %d, %s time\n", n,
           input ? input : "N(0,1)", nt, nt == 1 ? "" : "s", reps, cpu ? "thread CPU" : "wall");
    printf("%-14s %-8s %-6s %-6s %9s %8s %10s %9s %9s\n", "codec", "encoding", "bits", "bucket",
           "bits/elem", "ratio", "rel_l2_err", "enc_GB/s", "dec_GB/s");
    const qt_codec_encoding all_enc[3] = {QT_ENC_FIXED, QT_ENC_ELIAS, QT_ENC_HUFFMAN};
    bench_case cases[64];
    int nc = 0;
    cases[nc++] = (bench_case){QT_CODEC_NONE, 0, 0, 0, 0, 0, 0};
    cases[nc++] = (bench_case){QT_CODEC_FP16, 0, 0, 0, 0, 0, 0};
    cases[nc++] = (bench_case){QT_CODEC_BF16, 0, 0, 0, 0, 0, 0};
    const int qbits[3] = {2, 4, 8}, qbucket[3] = {128, 512, 512};
    for (int nm = 0; nm < 2; nm++)
        for (int b = 0; b < 3; b++)
            for (int e = 0; e < 3; e++)
                cases[nc++] = (bench_case){QT_CODEC_QSGD, all_enc[e], (qt_codec_norm)nm,
                                           qbits[b], qbucket[b], 0, 0};
    for (int nm = 0; nm < 2; nm++)
        for (int b = 0; b < 2; b++)
            for (int e = 0; e < 3; e += 2)
                cases[nc++] = (bench_case){QT_CODEC_ECQ, all_enc[e], (qt_codec_norm)nm, qbits[b],
                                           qbucket[b], 0, 0};
    cases[nc++] = (bench_case){QT_CODEC_ONEBIT, 0, 0, 0, 512, 0, 0};
    cases[nc++] = (bench_case){QT_CODEC_TERNGRAD, QT_ENC_FIXED, 0, 0, 128, 0, 0};
    cases[nc++] = (bench_case){QT_CODEC_TERNGRAD, QT_ENC_FIXED, 0, 0, 128, 0, 2.5f};
    cases[nc++] = (bench_case){QT_CODEC_TOPK, QT_ENC_FIXED, 0, 0, 0, 0.01f, 0};
    cases[nc++] = (bench_case){QT_CODEC_TOPK, QT_ENC_ELIAS, 0, 0, 0, 0.01f, 0};
    int failed = 0;
    for (int c = 0; c < nc; c++) {
        if (only && strcmp(only, qt_codec_method_name(cases[c].method)) != 0) continue;
        if (run_case(&cases[c], x, n, nt, reps, cpu) != 0) failed = 1;
    }
    qt_free_aligned(x);
    return failed;
}
