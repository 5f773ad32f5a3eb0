/* augment.c — crop/flip/normalise primitives (see augment.h). */
#include "data/augment.h"

#include <math.h>

void qt_aug_crop_flip_u8(const uint8_t *src, int c, int h, int w, int dy, int dx, bool flip,
                         const float (*lut)[256], float *dst)
{
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *s = src + (int64_t)ch * h * w;
        float *d = dst + (int64_t)ch * h * w;
        const float *t = lut[ch];
        for (int y = 0; y < h; y++) {
            int sy = y + dy;
            float *drow = d + (int64_t)y * w;
            if (sy < 0 || sy >= h) {
                for (int x = 0; x < w; x++) drow[x] = t[0];
                continue;
            }
            const uint8_t *srow = s + (int64_t)sy * w;
            for (int x = 0; x < w; x++) {
                int sx = (flip ? w - 1 - x : x) + dx;
                drow[x] = (sx < 0 || sx >= w) ? t[0] : t[srow[sx]];
            }
        }
    }
}

void qt_aug_draw_crop_flip(qt_philox_key key, int64_t item, uint32_t epoch, int pad, bool flip,
                           int *dy, int *dx, bool *do_flip)
{
    uint32_t r[4];
    qt_aug_draw(key, item, epoch, 0, r);
    uint32_t span = (uint32_t)(2 * pad + 1);
    /* Modulo bias is < span / 2^32: irrelevant for spans of a few pixels. */
    *dy = (int)(r[0] % span) - pad;
    *dx = (int)(r[1] % span) - pad;
    *do_flip = flip && (r[2] >> 31);
}

void qt_aug_random_resized_crop(qt_philox_key key, int64_t item, uint32_t epoch, int w, int h,
                                double scale_min, double scale_max, double ratio_min,
                                double ratio_max, int *bx, int *by, int *bw, int *bh)
{
    double area = (double)w * h, log_lo = log(ratio_min), log_hi = log(ratio_max);
    for (uint32_t attempt = 0; attempt < 10; attempt++) {
        uint32_t r[4];
        qt_aug_draw(key, item, epoch, attempt, r);
        double target = area * (scale_min + (scale_max - scale_min) * qt_u32_to_unit(r[0]));
        double aspect = exp(log_lo + (log_hi - log_lo) * qt_u32_to_unit(r[1]));
        int cw = (int)lround(sqrt(target * aspect)), ch = (int)lround(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            *by = (int)(r[2] % (uint32_t)(h - ch + 1));
            *bx = (int)(r[3] % (uint32_t)(w - cw + 1));
            *bw = cw;
            *bh = ch;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < ratio_min) ch = (int)lround(w / ratio_min);
    else if (in_ratio > ratio_max) cw = (int)lround(h * ratio_max);
    *bw = cw;
    *bh = ch;
    *by = (h - ch) / 2;
    *bx = (w - cw) / 2;
}

bool qt_aug_draw_flip(qt_philox_key key, int64_t item, uint32_t epoch)
{
    uint32_t r[4];
    qt_aug_draw(key, item, epoch, 10, r);
    return r[0] >> 31;
}

void qt_aug_center_box(int w, int h, int resize, int crop, double *bx, double *by, double *bw,
                       double *bh)
{
    double side = (double)crop * (w < h ? w : h) / resize;
    *bw = side;
    *bh = side;
    *bx = (w - side) / 2.0;
    *by = (h - side) / 2.0;
}
