/* pool.c — max pooling (k x k, stride, padding) and global average pooling, NCHW fp32.
 *
 * Max pool: padded cells never win (a window is the intersection with the image; the
 * model keeps pad < k so it is never empty). Ties go to the first cell in row-major
 * order, a NaN wins (as PyTorch, so a NaN propagates). argmax stores the winning input
 * index within its plane; backward scatters dy there. One thread owns each (image,
 * channel) plane, so overlapping windows accumulate in a fixed order.
 */
#include "nn/layers.h"

#include "core/qt.h"

#include <math.h>
#include <string.h>

void qt_maxpool_out_hw(const qt_maxpool *p, int h, int w, int *oh, int *ow)
{
    *oh = (h + 2 * p->pad - p->k) / p->stride + 1;
    *ow = (w + 2 * p->pad - p->k) / p->stride + 1;
}

void qt_maxpool_forward(const qt_maxpool *p, const float *x, float *y, int32_t *argmax, int n, int c,
                        int h, int w)
{
    int oh, ow;
    qt_maxpool_out_hw(p, h, w, &oh, &ow);
    const size_t planes = (size_t)n * c;
#pragma omp parallel for schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *src = x + pl * h * w;
        float *dst = y + pl * oh * ow;
        int32_t *arg = argmax + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const int y0 = QT_MAX(oy * p->stride - p->pad, 0);
            const int y1 = QT_MIN(oy * p->stride - p->pad + p->k, h);
            for (int ox = 0; ox < ow; ox++) {
                const int x0 = QT_MAX(ox * p->stride - p->pad, 0);
                const int x1 = QT_MIN(ox * p->stride - p->pad + p->k, w);
                float best = -INFINITY;
                int32_t at = y0 * w + x0;
                for (int iy = y0; iy < y1; iy++) {
                    for (int ix = x0; ix < x1; ix++) {
                        const float v = src[iy * w + ix];
                        if (v > best || isnan(v)) {
                            best = v;
                            at = iy * w + ix;
                            if (isnan(v)) goto done;
                        }
                    }
                }
            done:
                dst[oy * ow + ox] = best;
                arg[oy * ow + ox] = at;
            }
        }
    }
}

void qt_maxpool_backward(const qt_maxpool *p, const float *dy, const int32_t *argmax, float *dx, int n,
                         int c, int h, int w)
{
    int oh, ow;
    qt_maxpool_out_hw(p, h, w, &oh, &ow);
    const size_t planes = (size_t)n * c, out = (size_t)oh * ow;
#pragma omp parallel for schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        float *d = dx + pl * h * w;
        memset(d, 0, sizeof(float) * (size_t)h * w);
        for (size_t j = 0; j < out; j++) d[argmax[pl * out + j]] += dy[pl * out + j];
    }
}

void qt_gap_forward(const float *x, float *y, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *src = x + pl * hw;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < hw; j++) s += src[j];
        y[pl] = s * inv;
    }
}

void qt_gap_backward(const float *dy, float *dx, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    const float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static)
    for (size_t pl = 0; pl < planes; pl++) {
        const float g = dy[pl] * inv;
        float *d = dx + pl * hw;
        for (int j = 0; j < hw; j++) d[j] = g;
    }
}
