/* image.h — decoding PNG (libpng) and JPEG (TurboJPEG) from memory to 8-bit RGB, and
 * the antialiased box resampler that turns a crop of it into a normalised tensor
 * (private to src/data, tests and fuzz targets).
 *
 * Decoders take the whole file in memory, decide the type by content (magic bytes, never
 * the file name), and report failures as one line in `err` (no printing): the loader
 * decides whether a bad file fails the run or is skipped.
 */
#ifndef QT_DATA_IMAGE_H
#define QT_DATA_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset_impl.h"

typedef enum { QT_IMAGE_UNKNOWN = 0, QT_IMAGE_PNG, QT_IMAGE_JPEG } qt_image_type;

/* Largest decoded image we accept (pixels): 8192 x 8192. Larger is refused as corrupt,
 * which also bounds what a hostile file can make us allocate. */
#define QT_IMAGE_MAX_PIXELS ((int64_t)1 << 26)

typedef struct {
    int w, h;          /* decoded size (after any DCT downscaling) */
    int full_w, full_h;/* size stored in the file */
    uint8_t *rgb;      /* [h][w][3], in a scratch slot of the caller */
} qt_image;

/* PNG signature or JPEG SOI marker at the start of buf. */
qt_image_type qt_image_sniff(const uint8_t *buf, size_t n);

/* Reads only the header: the stored width and height. 0 or negative (err set). */
int qt_image_probe(const uint8_t *buf, size_t n, int *w, int *h, qt_data_scratch *s, char *err,
                   size_t err_len);

/* Decodes to RGB8 into scratch slot `slot`. PNG: 1/2/4/8/16-bit, gray, gray+alpha,
 * palette, RGB, RGBA, interlaced; 16-bit is scaled to 8 with rounding (v*255+32895)>>16,
 * alpha is dropped (as PIL's convert("RGB")), gray is replicated, a palette is expanded
 * and its tRNS ignored. JPEG: YCbCr, gray, RGB; CMYK/YCCK converted assuming Adobe's
 * inverted CMYK (R = C*K/255); decoded at the smallest libjpeg-turbo scale factor
 * (k/8) that is >= min_scale, so a large photo destined for 224x224 is decoded at a
 * fraction of its size. Any decoder warning (e.g. a truncated JPEG) is an error.
 * Returns 0 or negative (err set). */
int qt_image_decode(const uint8_t *buf, size_t n, double min_scale, qt_data_scratch *s, int slot,
                    qt_image *out, char *err, size_t err_len);

/* Resamples the box (bx, by, bw, bh) of an RGB8 image (in its pixel coordinates, may be
 * fractional) to ow x oh with a triangle (bilinear) filter widened by the downscale
 * factor (antialiasing, as PIL's BILINEAR resize), optionally mirrored left-right, and
 * normalises: dst[c][y][x] = (v/255 - mean[c]) / std[c], dst is [3][oh][ow]. Taps
 * outside the image are dropped and the weights renormalised (edge clamping as PIL).
 * Uses scratch slots `slot` (filter taps) and 2 (row buffer): not the image's slot. */
void qt_image_resample(const uint8_t *rgb, int w, int h, double bx, double by, double bw,
                       double bh, int ow, int oh, bool flip, const float mean[3],
                       const float std[3], qt_data_scratch *s, int slot, float *dst);

#endif
