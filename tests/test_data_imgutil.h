/* test_data_imgutil.h — writing test images: PNGs through libpng (any colour type, bit
 * depth, palette, interlacing) and JPEGs through TurboJPEG, into memory or files. */
#ifndef QT_TEST_DATA_IMGUTIL_H
#define QT_TEST_DATA_IMGUTIL_H

#include <math.h>
#include <png.h>
#include <turbojpeg.h>

#include "test_data_common.h"

typedef struct {
    uint8_t *data;
    size_t n, cap;
} membuf;

static void membuf_write(png_structp png, png_bytep p, png_size_t len)
{
    membuf *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        m->cap = (m->n + len) * 2;
        m->data = realloc(m->data, m->cap);
    }
    memcpy(m->data + m->n, p, len);
    m->n += len;
}

static void membuf_flush(png_structp png) { (void)png; }

/* Encodes rows of `rowbytes` bytes (16-bit samples big-endian, as PNG stores them). */
static inline membuf png_encode(int w, int h, int depth, int color, const uint8_t *pixels,
                                size_t rowbytes, const png_color *palette, int n_palette,
                                const uint8_t *trns, int n_trns, bool interlace)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng write failed");
    png_set_write_fn(png, &m, membuf_write, membuf_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n_palette);
    if (trns) png_set_tRNS(png, info, trns, n_trns, NULL);
    png_write_info(png, info);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * rowbytes);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return m;
}

/* RGB8 [h][w][3] or gray [h][w] (components 1) -> JPEG at `quality`, 4:4:4 or gray. */
static inline membuf jpeg_encode(int w, int h, int components, const uint8_t *pixels, int quality)
{
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    unsigned char *out = NULL;
    unsigned long size = 0;
    int pf = components == 1 ? TJPF_GRAY : TJPF_RGB;
    int samp = components == 1 ? TJSAMP_GRAY : TJSAMP_444;
    if (tjCompress2(tj, pixels, w, 0, h, pf, &out, &size, samp, quality, TJFLAG_ACCURATEDCT) != 0)
        fail_msg("tjCompress2: %s", tjGetErrorStr2(tj));
    membuf m = {.data = malloc(size), .n = size, .cap = size};
    memcpy(m.data, out, size);
    tjFree(out);
    tjDestroy(tj);
    return m;
}

static inline void membuf_save(const membuf *m, const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(m->data, 1, n, f), n);
    fclose(f);
}

/* A smooth colour test image: every channel a different slow gradient plus a ripple. */
static inline void smooth_rgb(int w, int h, uint8_t *rgb)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(40 + 170 * x / (w - 1));
            p[1] = (uint8_t)(30 + 190 * y / (h - 1));
            p[2] = (uint8_t)(128 + 60 * sin(x * 0.15) * cos(y * 0.11));
        }
}

#endif
