/* bench_loader — data loader throughput on this machine (scripts/bench_loader.sh).
 *
 *   bench_loader [--images N] [--batches B] [--dir DIR]
 *
 * Writes N JPEG (quality 90, 4:2:0) and N PNG images of about 256x256 (sizes vary
 * 224..320 so crops and scales vary) into DIR/imagefolder/{train/c0..c3}, and an HTK
 * set of 400 utterances x 100..500 frames x 40 features; then times the training
 * pipelines (JPEG/PNG: decode + random-resized-crop 224 + flip + normalise; HTK: read +
 * normalise + splice context 5 + pad/mask) with 1 and 2 workers, the consumer doing no
 * work, and prints one table row per case (items/s over wall time).
 */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#include "core/philox.h"
#include "core/qt.h"
#include "data/data.h"

static int mkdir_ok(const char *p)
{
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return qt_fail("%s: cannot create: %s", p, strerror(errno));
    return 0;
}

/* A photo-like picture: smooth colour fields, edges, and noise (JPEG sizes near real ones). */
static void picture(uint8_t *rgb, int w, int h, uint32_t seed)
{
    qt_philox_key k = qt_philox_make_key(seed, QT_RNG_TEST);
    uint32_t r[4];
    qt_philox_block(k, 0, 0, 0, r);
    double fx = 0.01 + (r[0] % 100) * 0.0005, fy = 0.01 + (r[1] % 100) * 0.0005;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t n[4];
            qt_philox_block(k, (uint64_t)y * w + x, 1, 0, n);
            double base = 128 + 90 * sin(x * fx * 6.28 + y * 0.02) * cos(y * fy * 6.28);
            int edge = ((x / 37 + y / 23) & 1) ? 30 : -30;
            for (int c = 0; c < 3; c++) {
                double v = base + edge * (c - 1) + (double)(n[c] % 41) - 20;
                rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
}

static int write_png(const char *path, const uint8_t *rgb, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return qt_fail("%s: cannot create", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        fclose(f);
        return qt_fail("%s: libpng write failed", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    return 0;
}

static int write_jpeg(tjhandle tj, const char *path, const uint8_t *rgb, int w, int h)
{
    unsigned char *out = NULL;
    unsigned long n = 0;
    if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &out, &n, TJSAMP_420, 90, 0) != 0)
        return qt_fail("%s: %s", path, tjGetErrorStr2(tj));
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(out, 1, n, f) != n) {
        if (f) fclose(f);
        tjFree(out);
        return qt_fail("%s: write failed", path);
    }
    fclose(f);
    tjFree(out);
    return 0;
}

static int make_images(const char *root, const char *kind, int n)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", root, kind);
    if (mkdir_ok(p) < 0) return -1;
    snprintf(p, sizeof p, "%s/%s/train", root, kind);
    if (mkdir_ok(p) < 0) return -1;
    tjhandle tj = tjInitCompress();
    uint8_t *rgb = qt_malloc(320 * 320 * 3);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        snprintf(p, sizeof p, "%s/%s/train/c%d", root, kind, i % 4);
        if (i < 4 && mkdir_ok(p) < 0) rc = -1;
        int w = 224 + (i * 37) % 97, h = 224 + (i * 53) % 97;
        picture(rgb, w, h, (uint32_t)i);
        snprintf(p, sizeof p, "%s/%s/train/c%d/%05d.%s", root, kind, i % 4, i, kind);
        if (rc == 0) rc = strcmp(kind, "png") == 0 ? write_png(p, rgb, w, h) : write_jpeg(tj, p, rgb, w, h);
    }
    free(rgb);
    tjDestroy(tj);
    return rc;
}

static int make_htk(const char *root, int n_utt, int feat)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/htk", root);
    if (mkdir_ok(p) < 0) return -1;
    snprintf(p, sizeof p, "%s/htk/train.scp", root);
    FILE *scp = fopen(p, "w");
    snprintf(p, sizeof p, "%s/htk/all.mlf", root);
    FILE *mlf = fopen(p, "w");
    snprintf(p, sizeof p, "%s/htk/labels.txt", root);
    FILE *lab = fopen(p, "w");
    if (!scp || !mlf || !lab) return qt_fail("%s/htk: cannot write the list files", root);
    for (int k = 0; k < 40; k++) fprintf(lab, "s%d\n", k);
    fprintf(mlf, "#!MLF!#\n");
    uint8_t *buf = qt_malloc((size_t)500 * feat * 4 + 12);
    for (int u = 0; u < n_utt; u++) {
        int T = 100 + (u * 7919) % 401;
        uint32_t hdr[3] = {(uint32_t)T, 100000u, ((uint32_t)(feat * 4) << 16) | 6u};
        for (int i = 0; i < 3; i++)
            for (int b = 0; b < 4; b++) buf[4 * i + b] = (uint8_t)(hdr[i] >> (24 - 8 * b));
        for (int i = 0; i < T * feat; i++) {
            float v = (float)sin(u + i * 0.37);
            uint32_t x;
            memcpy(&x, &v, 4);
            for (int b = 0; b < 4; b++) buf[12 + 4 * i + b] = (uint8_t)(x >> (24 - 8 * b));
        }
        snprintf(p, sizeof p, "%s/htk/u%04d.fb", root, u);
        FILE *f = fopen(p, "wb");
        if (!f || fwrite(buf, 1, 12 + (size_t)T * feat * 4, f) != 12 + (size_t)T * feat * 4) return qt_fail("%s: write failed", p);
        fclose(f);
        fprintf(scp, "u%04d.fb\n", u);
        fprintf(mlf, "\"*/u%04d.lab\"\n", u);
        for (int s = 0; s < T; s += 10)
            fprintf(mlf, "%d %d s%d\n", s * 100000, QT_MIN(s + 10, T) * 100000, (s / 10) % 40);
        fprintf(mlf, ".\n");
    }
    free(buf);
    fclose(scp);
    fclose(mlf);
    fclose(lab);
    return 0;
}

static double time_images(const char *root, const char *kind, int workers, int batches)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.format, sizeof o.format, "imagefolder");
    snprintf(o.path, sizeof o.path, "%s/%s", root, kind);
    o.batch = 32;
    o.workers = workers;
    o.prefetch = 2 * workers + 2;
    qt_dataset *d = NULL;
    qt_loader *l = NULL;
    if (qt_dataset_open(&o, true, &d) < 0 || qt_loader_create(d, &o, true, 0, 1, 1, &l) < 0) return -1;
    double t0 = qt_now();
    for (int k = 0; k < batches; k++) {
        qt_batch *b;
        if (qt_loader_next(l, &b) < 0) return -1;
        qt_loader_release(l, b);
    }
    double rate = (double)batches * o.batch / (qt_now() - t0);
    qt_loader_destroy(l);
    qt_dataset_destroy(d);
    return rate;
}

static double time_htk(const char *root, int workers, int batches)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.format, sizeof o.format, "htk");
    snprintf(o.path, sizeof o.path, "%s/htk", root);
    snprintf(o.scp, sizeof o.scp, "train.scp");
    snprintf(o.mlf, sizeof o.mlf, "all.mlf");
    snprintf(o.labels, sizeof o.labels, "labels.txt");
    o.batch = 16;
    o.context = 5;
    o.workers = workers;
    o.prefetch = 2 * workers + 2;
    qt_seq_dataset *d = NULL;
    qt_seq_loader *l = NULL;
    if (qt_seq_dataset_open(&o, true, &d) < 0 || qt_seq_loader_create(d, &o, true, 0, 1, 1, &l) < 0) return -1;
    double t0 = qt_now();
    int64_t frames = 0;
    for (int k = 0; k < batches; k++) {
        qt_seq_batch *b;
        if (qt_seq_loader_next(l, &b) < 0) return -1;
        frames += b->frames;
        qt_seq_loader_release(l, b);
    }
    double rate = (double)frames / (qt_now() - t0);
    qt_seq_loader_destroy(l);
    qt_seq_dataset_destroy(d);
    return rate;
}

int main(int argc, char **argv)
{
    int n = 512, batches = 16;
    const char *dir = "build/bench_loader";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--images")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches")) batches = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_loader [--images N] [--batches B] [--dir DIR]\n");
            return 2;
        }
    }
    if (n < 64 || batches < 1 || batches * 32 > n * 8) {
        fprintf(stderr, "bench_loader: need --images >= 64 and --batches <= images/4\n");
        return 2;
    }
    if (mkdir_ok(dir) < 0) return 1;
    fprintf(stderr, "bench_loader: writing %d JPEG + %d PNG images and 400 HTK utterances to %s\n", n, n, dir);
    if (make_images(dir, "jpg", n) < 0 || make_images(dir, "png", n) < 0 || make_htk(dir, 400, 40) < 0) return 1;
    printf("| source | pipeline | workers | throughput |\n|---|---|---|---|\n");
    for (int k = 0; k < 2; k++) {
        const char *kind = k ? "png" : "jpg";
        for (int w = 1; w <= 2; w++) {
            time_images(dir, kind, w, 2); /* warm the page cache */
            double r = time_images(dir, kind, w, batches);
            if (r < 0) return 1;
            printf("| %s ~256x256 (224-320) | decode + RRC 224 + flip + norm | %d | %.0f images/s |\n",
                   k ? "PNG" : "JPEG q90", w, r);
            fflush(stdout);
        }
    }
    for (int w = 1; w <= 2; w++) {
        double r = time_htk(dir, w, 25);
        if (r < 0) return 1;
        printf("| HTK 40 feats, 100-500 frames | read + norm + context 5 + pad, batch 16 | %d | %.0f frames/s |\n", w, r);
    }
    return 0;
}
