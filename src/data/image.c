/* image.c — PNG and JPEG decoding from memory to RGB8, and the antialiased resampler
 * (see image.h). */
#include "data/image.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <turbojpeg.h>

#include "core/qt.h"

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

qt_image_type qt_image_sniff(const uint8_t *buf, size_t n)
{
    if (n >= 8 && memcmp(buf, png_magic, 8) == 0) return QT_IMAGE_PNG;
    if (n >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return QT_IMAGE_JPEG;
    return QT_IMAGE_UNKNOWN;
}

/* ---- PNG ---------------------------------------------------------------------------- */

/* Everything the libpng callbacks touch, behind one pointer that setjmp cannot clobber. */
typedef struct {
    const uint8_t *buf;
    size_t n, off;
    char *err;
    size_t err_len;
} png_source;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_source *src = png_get_error_ptr(png);
    snprintf(src->err, src->err_len, "corrupt PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign (gamma, iCCP profile noise): the pixels are still right */
}

static void png_read_memory(png_structp png, png_bytep out, png_size_t len)
{
    png_source *src = png_get_io_ptr(png);
    if (len > src->n - src->off) png_error(png, "truncated file");
    memcpy(out, src->buf + src->off, len);
    src->off += len;
}

/* Header-only (probe) when rgb_out is NULL. */
static int png_decode(const uint8_t *buf, size_t n, qt_data_scratch *s, int slot, qt_image *out,
                      char *err, size_t err_len, bool header_only)
{
    png_source src = {.buf = buf, .n = n, .off = 0, .err = err, .err_len = err_len};
    png_source *volatile psrc = &src;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, psrc, png_on_error, png_on_warning);
    if (!png) {
        snprintf(err, err_len, "libpng: cannot create a reader");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(err, err_len, "libpng: cannot create a reader");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) { /* png_on_error has written err */
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, psrc, png_read_memory);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((int64_t)w * h > QT_IMAGE_MAX_PIXELS || w == 0 || h == 0)
        png_error(png, "image size out of range");
    out->w = out->full_w = (int)w;
    out->h = out->full_h = (int)h;
    out->rgb = NULL;
    if (header_only) {
        png_destroy_read_struct(&png, &info, NULL);
        return 0;
    }
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    /* Expanding a palette also turns its tRNS chunk into an alpha channel: drop both. */
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) png_error(png, "unexpected row layout");
    uint8_t *rgb = qt_scratch_get(s, slot, (size_t)w * h * 3);
    png_bytep *rows = qt_scratch_get(s, 3, (size_t)h * sizeof(png_bytep));
    for (png_uint_32 y = 0; y < h; y++) rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    out->rgb = rgb;
    return 0;
}

/* ---- JPEG --------------------------------------------------------------------------- */

static tjhandle tj_handle(qt_data_scratch *s)
{
    if (!s->tj) s->tj = tjInitDecompress();
    return s->tj;
}

static int jpeg_fail(tjhandle tj, char *err, size_t err_len)
{
    snprintf(err, err_len, "corrupt JPEG: %s", tjGetErrorStr2(tj));
    return -1;
}

static int jpeg_decode(const uint8_t *buf, size_t n, double min_scale, qt_data_scratch *s, int slot,
                       qt_image *out, char *err, size_t err_len, bool header_only)
{
    tjhandle tj = tj_handle(s);
    if (!tj) {
        snprintf(err, err_len, "TurboJPEG: cannot create a decompressor");
        return -1;
    }
    /* A header cut short can "succeed" without setting the outputs: start from 0. */
    int w = 0, h = 0, subsamp = -1, colorspace = -1;
    if (tjDecompressHeader3(tj, buf, (unsigned long)n, &w, &h, &subsamp, &colorspace) != 0)
        return jpeg_fail(tj, err, err_len);
    out->full_w = w;
    out->full_h = h;
    out->rgb = NULL;
    if (w <= 0 || h <= 0) {
        snprintf(err, err_len, "corrupt JPEG: no complete header (truncated?)");
        return -1;
    }
    /* The smallest scale factor <= 1 that is still >= min_scale (factors come largest
     * first from libjpeg-turbo: 2/1 ... 1/8). */
    int n_factors = 0;
    tjscalingfactor *f = tjGetScalingFactors(&n_factors), best = {1, 1};
    for (int i = 0; f && i < n_factors; i++) {
        double v = (double)f[i].num / f[i].denom;
        if (v <= 1.0 && v >= min_scale && v < (double)best.num / best.denom) best = f[i];
    }
    int sw = TJSCALED(w, best), sh = TJSCALED(h, best);
    out->w = sw;
    out->h = sh;
    if ((int64_t)sw * sh > QT_IMAGE_MAX_PIXELS) {
        snprintf(err, err_len, "image too large: %dx%d", w, h);
        return -1;
    }
    if (header_only) return 0;
    bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
    size_t px = (size_t)sw * sh;
    /* LIMITSCANS: refuse progressive files with absurd scan counts (a DoS vector);
     * STOPONWARNING: a truncated or damaged file is an error, not a grey-filled image. */
    int flags = TJFLAG_LIMITSCANS | TJFLAG_STOPONWARNING;
    uint8_t *rgb = qt_scratch_get(s, slot, px * 3);
    if (!cmyk) {
        if (tjDecompress2(tj, buf, (unsigned long)n, rgb, sw, 0, sh, TJPF_RGB, flags) != 0)
            return jpeg_fail(tj, err, err_len);
    } else {
        uint8_t *k4 = qt_scratch_get(s, 3, px * 4);
        if (tjDecompress2(tj, buf, (unsigned long)n, k4, sw, 0, sh, TJPF_CMYK, flags) != 0)
            return jpeg_fail(tj, err, err_len);
        for (size_t i = 0; i < px; i++) {
            unsigned k = k4[4 * i + 3];
            for (int c = 0; c < 3; c++) rgb[3 * i + c] = (uint8_t)((k4[4 * i + c] * k + 127) / 255);
        }
    }
    out->rgb = rgb;
    return 0;
}

/* ---- dispatch ----------------------------------------------------------------------- */

int qt_image_probe(const uint8_t *buf, size_t n, int *w, int *h, qt_data_scratch *s, char *err,
                   size_t err_len)
{
    qt_image im = {0};
    int rc;
    switch (qt_image_sniff(buf, n)) {
    case QT_IMAGE_PNG: rc = png_decode(buf, n, s, 1, &im, err, err_len, true); break;
    case QT_IMAGE_JPEG: rc = jpeg_decode(buf, n, 1.0, s, 1, &im, err, err_len, true); break;
    default:
        snprintf(err, err_len, "not a PNG or JPEG file (by content, %zu bytes)", n);
        return -1;
    }
    *w = im.full_w;
    *h = im.full_h;
    return rc;
}

int qt_image_decode(const uint8_t *buf, size_t n, double min_scale, qt_data_scratch *s, int slot,
                    qt_image *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    switch (qt_image_sniff(buf, n)) {
    case QT_IMAGE_PNG: return png_decode(buf, n, s, slot, out, err, err_len, false);
    case QT_IMAGE_JPEG: return jpeg_decode(buf, n, min_scale, s, slot, out, err, err_len, false);
    default:
        snprintf(err, err_len, "not a PNG or JPEG file (by content, %zu bytes)", n);
        return -1;
    }
}

/* ---- resampling --------------------------------------------------------------------- */

/* Filter taps of one axis: for output o, source indices first[o] .. first[o]+count[o]-1
 * with weights w[o*max_taps + k], summing to 1. */
typedef struct {
    int *first, *count;
    float *w;
    int max_taps;
} taps;

static size_t taps_bytes(int n_out, int max_taps)
{
    return (size_t)n_out * (2 * sizeof(int) + (size_t)max_taps * sizeof(float));
}

static int max_taps_for(double scale) { return (int)ceil(QT_MAX(scale, 1.0)) * 2 + 2; }

static void make_taps(taps *t, void *mem, int n_out, double start, double scale, int n_src)
{
    double support = QT_MAX(scale, 1.0); /* triangle radius in source pixels */
    t->max_taps = max_taps_for(scale);
    t->first = mem;
    t->count = t->first + n_out;
    t->w = (float *)(t->count + n_out);
    for (int o = 0; o < n_out; o++) {
        double centre = start + (o + 0.5) * scale; /* in source pixel-edge coordinates */
        int lo = (int)floor(centre - support), hi = (int)ceil(centre + support);
        lo = QT_MAX(lo, 0);
        hi = QT_MIN(hi, n_src);
        double sum = 0;
        int k = 0;
        float *w = t->w + (size_t)o * t->max_taps;
        for (int i = lo; i < hi && k < t->max_taps; i++) {
            double d = fabs((i + 0.5 - centre) / support);
            double v = d < 1.0 ? 1.0 - d : 0.0;
            w[k++] = (float)v;
            sum += v;
        }
        if (sum <= 0.0) { /* box entirely outside the image: take the nearest pixel */
            lo = QT_MIN(QT_MAX((int)floor(centre), 0), n_src - 1);
            w[0] = 1.0f;
            k = 1;
            sum = 1.0;
        }
        for (int j = 0; j < k; j++) w[j] = (float)(w[j] / sum);
        t->first[o] = lo;
        t->count[o] = k;
    }
}

void qt_image_resample(const uint8_t *rgb, int w, int h, double bx, double by, double bw,
                       double bh, int ow, int oh, bool flip, const float mean[3],
                       const float std[3], qt_data_scratch *s, int slot, float *dst)
{
    double sx = bw / ow, sy = bh / oh;
    size_t bx_bytes = taps_bytes(ow, max_taps_for(sx)), by_bytes = taps_bytes(oh, max_taps_for(sy));
    char *mem = qt_scratch_get(s, slot, bx_bytes + by_bytes);
    taps tx, ty;
    make_taps(&tx, mem, ow, bx, sx, w);
    make_taps(&ty, mem + bx_bytes, oh, by, sy, h);
    /* Rows of the source the vertical filter will touch. */
    int row_lo = h, row_hi = 0;
    for (int o = 0; o < oh; o++) {
        row_lo = QT_MIN(row_lo, ty.first[o]);
        row_hi = QT_MAX(row_hi, ty.first[o] + ty.count[o]);
    }
    /* Horizontal pass: tmp[row - row_lo][x][c] for the touched rows (scratch slot 2). */
    float *tmp = qt_scratch_get(s, 2, (size_t)(row_hi - row_lo) * ow * 3 * sizeof(float));
    for (int r = row_lo; r < row_hi; r++) {
        const uint8_t *src = rgb + (size_t)r * w * 3;
        float *trow = tmp + (size_t)(r - row_lo) * ow * 3;
        for (int o = 0; o < ow; o++) {
            const float *wt = tx.w + (size_t)o * tx.max_taps;
            const uint8_t *p = src + (size_t)tx.first[o] * 3;
            float a0 = 0, a1 = 0, a2 = 0;
            for (int k = 0; k < tx.count[o]; k++, p += 3) {
                a0 += wt[k] * p[0];
                a1 += wt[k] * p[1];
                a2 += wt[k] * p[2];
            }
            int x = flip ? ow - 1 - o : o;
            trow[3 * x] = a0;
            trow[3 * x + 1] = a1;
            trow[3 * x + 2] = a2;
        }
    }
    /* Vertical pass and normalisation: (v/255 - mean)/std = v*a + b. */
    float a[3], b[3];
    for (int c = 0; c < 3; c++) {
        a[c] = 1.0f / (255.0f * std[c]);
        b[c] = -mean[c] / std[c];
    }
    for (int o = 0; o < oh; o++) {
        const float *wt = ty.w + (size_t)o * ty.max_taps;
        for (int x = 0; x < ow; x++) {
            float acc[3] = {0, 0, 0};
            for (int k = 0; k < ty.count[o]; k++) {
                const float *p = tmp + ((size_t)(ty.first[o] + k - row_lo) * ow + x) * 3;
                acc[0] += wt[k] * p[0];
                acc[1] += wt[k] * p[1];
                acc[2] += wt[k] * p[2];
            }
            for (int c = 0; c < 3; c++) dst[((size_t)c * oh + o) * ow + x] = acc[c] * a[c] + b[c];
        }
    }
}
