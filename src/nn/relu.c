/* relu.c — ReLU, y = max(x, 0). In place is allowed (y == x, dx == dy): every element
 * is read before it is written at the same index. */
#include "nn/layers.h"

void qt_relu_forward(const float *x, float *y, size_t count)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where the forward output was positive (the subgradient at 0 is 0, as PyTorch). */
void qt_relu_backward(const float *y, const float *dy, float *dx, size_t count)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
