/* augment.h — geometric augmentation and normalisation primitives shared by the formats
 * (private to src/data and tests). Every random choice is drawn by qt_aug_draw from
 * (key, item, epoch, block j), so an item's augmentation is reproducible in any thread.
 */
#ifndef QT_DATA_AUGMENT_H
#define QT_DATA_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/philox.h"

/* Four random words for augmentation block j (0, 1, ...) of `item` in `epoch`: Philox
 * counter {item, epoch, 1 + j} (sub-stream 0 is the permutation, see data.h). */
static inline void qt_aug_draw(qt_philox_key key, int64_t item, uint32_t epoch, uint32_t j,
                               uint32_t out[4])
{
    qt_philox_block(key, (uint64_t)item, epoch, 1u + j, out);
}

/* Crop-with-zero-padding + optional horizontal flip + normalisation of an 8-bit image
 * src [c][h][w] into dst [c][h][w] (same size), in torchvision's order (pad, crop, flip):
 *   dst(ch, y, x) = lut[ch][ src(ch, y + dy, xs + dx) ]   with xs = flip ? w-1-x : x,
 * and lut[ch][0] (a zero pixel, normalised) where the source position is outside.
 * dy, dx in [-pad, pad] are the crop offsets relative to the unpadded image. */
void qt_aug_crop_flip_u8(const uint8_t *src, int c, int h, int w, int dy, int dx, bool flip,
                         const float (*lut)[256], float *dst);

/* Draws the CIFAR-style crop offsets (uniform in [-pad, pad]) and flip (probability 1/2
 * when `flip` is allowed) of `item` in `epoch` from augmentation block 0. */
void qt_aug_draw_crop_flip(qt_philox_key key, int64_t item, uint32_t epoch, int pad, bool flip,
                           int *dy, int *dx, bool *do_flip);

/* torchvision's RandomResizedCrop.get_params on a w x h image, drawn for (item, epoch):
 * up to 10 attempts (augmentation block k for attempt k: scale, log-ratio, top, left)
 * of area fraction U(scale_min, scale_max) and aspect ratio exp(U(log ratio_min, log
 * ratio_max)), rounded to whole pixels, accepted when it fits; else the centre crop
 * with the ratio clamped to [ratio_min, ratio_max]. Box: left x, top y, width, height. */
void qt_aug_random_resized_crop(qt_philox_key key, int64_t item, uint32_t epoch, int w, int h,
                                double scale_min, double scale_max, double ratio_min,
                                double ratio_max, int *bx, int *by, int *bw, int *bh);

/* Horizontal flip with probability 1/2 from augmentation block 10 (after the crop's). */
bool qt_aug_draw_flip(qt_philox_key key, int64_t item, uint32_t epoch);

/* The evaluation box: the centre crop of side `crop` after resizing the shorter side to
 * `resize`, in the w x h image's own coordinates (side crop * min(w,h) / resize). */
void qt_aug_center_box(int w, int h, int resize, int crop, double *bx, double *by, double *bw,
                       double *bh);

#endif
