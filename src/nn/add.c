/* add.c — residual addition. Backward of y = a + b hands dy to both inputs; the model
 * accumulates the shortcut's gradient into the main branch's with qt_add_inplace. */
#include "nn/layers.h"

void qt_add_forward(const float *a, const float *b, float *y, size_t count)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void qt_add_inplace(float *dst, const float *src, size_t count)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < count; i++) dst[i] += src[i];
}
