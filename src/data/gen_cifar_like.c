/* gen_cifar_like.c — a small, learnable, not-trivial data set written in the exact CIFAR
 * binary layout, for tests and the quickstart (no download, no numpy).
 *
 * What an image of class c is (32x32 RGB):
 * - Classes come in pairs (2k, 2k+1) that share a colour scheme (a foreground and a
 *   background colour) and a stripe frequency, and differ only in stripe orientation:
 *   class 2k+1 is class 2k's orientation turned by 35 degrees. Those pairs are the
 *   confusable ones; schemes 0 and 1 also have close colours, so four classes blur.
 * - The class pattern is a sinusoidal grating (orientation theta_c +- 10 degrees, period
 *   jittered +-15%, random phase = random shift) seen through a soft disc at a random
 *   centre with a random radius; outside the disc a weaker grating of a random
 *   orientation (a distractor) is drawn.
 * - Per image: contrast 0.35..1, brightness x0.7..1.3, per-channel colour jitter +-25,
 *   then Gaussian pixel noise (sigma g->noise, default 24), clamped to 0..255.
 * Colour alone identifies a pair at best, so a linear model on pixels stalls around the
 * pair level; a small CNN reads orientation inside the disc and climbs well above chance
 * within an epoch without reaching 100% at once.
 *
 * Layout: classes <= 10 writes CIFAR-10's data_batch_1..5.bin (train split evenly),
 * test_batch.bin and batches.meta.txt; classes 11..100 writes CIFAR-100's train.bin and
 * test.bin (coarse label = fine / 5). Labels are drawn uniformly at random. With
 * imagefolder_size = S > 0 the same images, drawn at S x S (geometry scaled by S/32),
 * go to an ImageNet-layout tree dir/{train,val}/class_KK/ as JPEG and PNG files.
 * Everything is a pure function of (seed, split, image index): Philox key (seed,
 * QT_RNG_TEST), counter {block, image, split}; blocks 0..1 are the image's parameters,
 * blocks 2.. its noise.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>
#include <turbojpeg.h>

#include "core/philox.h"
#include "core/qt.h"
#include "data/data.h"

#define GEN_PI 3.14159265358979323846

typedef struct {
    float fg[3], bg[3];
    float theta;   /* radians */
    float period;  /* pixels */
} class_template;

static class_template template_of(int c)
{
    /* Five colour schemes; 0 and 1 are deliberately close. Extra classes (> 10) cycle
     * through the schemes with other orientations and periods. */
    static const float fg[5][3] = {{200, 60, 50}, {215, 95, 70}, {60, 170, 70},
                                   {70, 90, 210}, {220, 200, 60}};
    static const float bg[5][3] = {{60, 40, 40}, {70, 50, 45}, {30, 60, 40},
                                   {30, 30, 80}, {90, 70, 30}};
    int pair = c / 2, scheme = pair % 5, round = pair / 5;
    class_template t;
    memcpy(t.fg, fg[scheme], sizeof t.fg);
    memcpy(t.bg, bg[scheme], sizeof t.bg);
    double base = (double)(pair * 37 % 180) + 13.0 * round;
    t.theta = (float)((base + (c % 2) * 35.0) * GEN_PI / 180.0);
    t.period = 5.0f + (float)((pair * 3 + round) % 5);
    return t;
}

static float unit(uint32_t x) { return qt_u32_to_unit(x); }

/* Renders image `idx` of split `split`, S x S, into pix [3][S][S] (planar, as CIFAR).
 * Geometry scales with S/32, so S = 32 is the CIFAR image. */
static void render(const qt_gen_opts *g, int split, int64_t idx, int S, uint8_t *pix, int *label)
{
    const float f = (float)S / 32.0f;
    qt_philox_key key = qt_philox_make_key(g->seed, QT_RNG_TEST);
    uint32_t p[8];
    qt_philox_block(key, 0, (uint32_t)idx, (uint32_t)split, p);
    qt_philox_block(key, 1, (uint32_t)idx, (uint32_t)split, p + 4);
    int c = (int)(p[0] % (uint32_t)g->classes);
    *label = c;
    class_template t = template_of(c);
    float theta = t.theta + (unit(p[1]) - 0.5f) * (float)(20.0 * GEN_PI / 180.0);
    float period = t.period * (0.85f + 0.3f * unit(p[2])) * f;
    float phase = unit(p[3]) * (float)(2.0 * GEN_PI);
    float cx = (8.0f + 16.0f * unit(p[4])) * f, cy = (8.0f + 16.0f * unit(p[5])) * f;
    float radius = (8.0f + 8.0f * unit(p[6])) * f;
    float contrast = 0.35f + 0.65f * unit(p[7]);
    uint32_t q[4];
    qt_philox_block(key, 2, (uint32_t)idx, (uint32_t)split, q);
    float dtheta = unit(q[0]) * (float)GEN_PI;
    float brightness = 0.7f + 0.6f * unit(q[1]);
    float jitter[3];
    for (int ch = 0; ch < 3; ch++) jitter[ch] = 50.0f * (unit(q[2] ^ (0x9E3779B9u * (uint32_t)ch)) - 0.5f);
    float ct = cosf(theta), st = sinf(theta), cd = cosf(dtheta), sd = sinf(dtheta);
    float k = (float)(2.0 * GEN_PI) / period;

    for (int y = 0; y < S; y++) {
        for (int x = 0; x < S; x++) {
            float r2 = ((float)x - cx) * ((float)x - cx) + ((float)y - cy) * ((float)y - cy);
            /* Soft disc: 1 inside, 0 outside, a 3-pixel ramp between. */
            float m = (radius - sqrtf(r2)) / (3.0f * f) + 0.5f;
            m = m < 0.0f ? 0.0f : (m > 1.0f ? 1.0f : m);
            float grating = sinf(k * ((float)x * ct + (float)y * st) + phase);
            float distract = 0.4f * sinf(k * 1.3f * ((float)x * cd + (float)y * sd) + phase);
            float s = 0.5f + 0.5f * contrast * (m * grating + (1.0f - m) * distract);
            int pi = y * S + x;
            uint32_t n[4];
            qt_philox_block(key, 3 + (uint64_t)pi, (uint32_t)idx, (uint32_t)split, n);
            /* Box-Muller: words 0,1 -> two standard normals, words 2,3 -> a third. */
            float r0 = sqrtf(-2.0f * logf(unit(n[0]) + 1.0f / 33554432.0f));
            float r1 = sqrtf(-2.0f * logf(unit(n[2]) + 1.0f / 33554432.0f));
            float a0 = (float)(2.0 * GEN_PI) * unit(n[1]), a1 = (float)(2.0 * GEN_PI) * unit(n[3]);
            float z[3] = {r0 * cosf(a0), r0 * sinf(a0), r1 * cosf(a1)};
            for (int ch = 0; ch < 3; ch++) {
                float v = (t.bg[ch] + (t.fg[ch] - t.bg[ch]) * s + jitter[ch]) * brightness;
                float zc = z[ch];
                v += g->noise * zc;
                v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
                pix[ch * S * S + pi] = (uint8_t)lrintf(v);
            }
        }
    }
}

static int mkdir_p(const char *dir)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
            return qt_fail("%s: cannot create folder: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        return qt_fail("%s: cannot create folder: %s", tmp, strerror(errno));
    return 0;
}

/* Writes images [first, first+n) of a split to dir/name. */
static int write_file(const char *dir, const char *name, const qt_gen_opts *g, int split,
                      int64_t first, int64_t n, bool cifar100)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    uint8_t rec[3074];
    int hdr = cifar100 ? 2 : 1;
    for (int64_t i = first; i < first + n; i++) {
        int label;
        render(g, split, i, 32, rec + hdr, &label);
        if (cifar100) {
            rec[0] = (uint8_t)(label / 5);
            rec[1] = (uint8_t)label;
        } else {
            rec[0] = (uint8_t)label;
        }
        if (fwrite(rec, 1, (size_t)(3072 + hdr), f) != (size_t)(3072 + hdr)) {
            fclose(f);
            return qt_fail("%s: write failed", path);
        }
    }
    if (fclose(f) != 0) return qt_fail("%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_png_file(const char *path, const uint8_t *rgb, int S)
{
    FILE *f = fopen(path, "wb");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        fclose(f);
        return qt_fail("%s: libpng write failed", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)S, (png_uint_32)S, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < S; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * S * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) return qt_fail("%s: write failed", path);
    return 0;
}

static int write_jpeg_file(tjhandle tj, const char *path, const uint8_t *rgb, int S)
{
    unsigned char *out = NULL;
    unsigned long n = 0;
    if (tjCompress2(tj, rgb, S, 0, S, TJPF_RGB, &out, &n, TJSAMP_420, 92, 0) != 0)
        return qt_fail("%s: TurboJPEG: %s", path, tjGetErrorStr2(tj));
    FILE *f = fopen(path, "wb");
    int rc = 0;
    if (!f) rc = qt_fail("%s: cannot create: %s", path, strerror(errno));
    else if (fwrite(out, 1, n, f) != n || fclose(f) != 0) rc = qt_fail("%s: write failed", path);
    tjFree(out);
    return rc;
}

/* dir/{train,val}/class_KK/NNNNNN.{jpg,png}: the same images as the CIFAR layout, drawn
 * at side S (every 5th one a PNG so both decoders are exercised). */
static int write_imagefolder(const char *dir, const qt_gen_opts *g)
{
    int S = g->imagefolder_size;
    uint8_t *planar = qt_malloc((size_t)3 * S * S), *rgb = qt_malloc((size_t)3 * S * S);
    tjhandle tj = tjInitCompress();
    int rc = tj ? 0 : qt_fail("gen_cifar_like: TurboJPEG: cannot create a compressor");
    char path[1400];
    for (int split = 0; split < 2 && rc == 0; split++) {
        const char *name = split ? "val" : "train";
        for (int c = 0; c < g->classes && rc == 0; c++) {
            snprintf(path, sizeof path, "%s/%s/class_%02d", dir, name, c);
            rc = mkdir_p(path);
        }
        int64_t n = split ? g->n_test : g->n_train;
        for (int64_t i = 0; i < n && rc == 0; i++) {
            int label;
            render(g, split, i, S, planar, &label);
            for (int p = 0; p < S * S; p++)
                for (int ch = 0; ch < 3; ch++) rgb[3 * p + ch] = planar[ch * S * S + p];
            bool png = i % 5 == 4;
            snprintf(path, sizeof path, "%s/%s/class_%02d/%06lld.%s", dir, name, label, (long long)i,
                     png ? "png" : "jpg");
            rc = png ? write_png_file(path, rgb, S) : write_jpeg_file(tj, path, rgb, S);
        }
    }
    if (tj) tjDestroy(tj);
    free(planar);
    free(rgb);
    return rc;
}

int qt_gen_cifar_like(const char *dir, const qt_gen_opts *g)
{
    if (g->classes < 2 || g->classes > 100)
        return qt_fail("gen_cifar_like: --classes %d: must be between 2 and 100", g->classes);
    if (g->n_train < 0 || g->n_test < 0 || g->n_train > (1 << 30) || g->n_test > (1 << 30))
        return qt_fail("gen_cifar_like: image counts must be between 0 and 2^30");
    if (!(g->noise >= 0.0f && g->noise <= 255.0f))
        return qt_fail("gen_cifar_like: --noise %g: must be between 0 and 255", (double)g->noise);
    if (g->imagefolder_size != 0 && (g->imagefolder_size < 16 || g->imagefolder_size > 1024))
        return qt_fail("gen_cifar_like: --imagefolder %d: side must be between 16 and 1024", g->imagefolder_size);
    int rc = mkdir_p(dir);
    if (rc < 0) return rc;
    if (g->imagefolder_size > 0) return write_imagefolder(dir, g);
    if (g->classes > 10) {
        rc = write_file(dir, "train.bin", g, 0, 0, g->n_train, true);
        if (rc == 0) rc = write_file(dir, "test.bin", g, 1, 0, g->n_test, true);
        return rc;
    }
    for (int b = 0; b < 5 && rc == 0; b++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", b + 1);
        int64_t first = g->n_train * b / 5, last = g->n_train * (b + 1) / 5;
        rc = write_file(dir, name, g, 0, first, last - first, false);
    }
    if (rc == 0) rc = write_file(dir, "test_batch.bin", g, 1, 0, g->n_test, false);
    if (rc < 0) return rc;
    char path[1300];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    for (int c = 0; c < 10; c++) fprintf(f, "pattern_%d\n", c);
    if (fclose(f) != 0) return qt_fail("%s: write failed", path);
    return 0;
}
