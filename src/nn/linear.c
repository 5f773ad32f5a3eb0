/* linear.c — fully connected layer y[n][out] = x[n][in] . W[out][in]^T + b, via sgemm. */
#include "nn/layers.h"

#include <cblas.h>

void qt_linear_forward(const qt_linear *l, const float *x, float *y, int n)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, l->out, l->in, 1.0f, x, l->in, l->w,
                l->in, 0.0f, y, l->out);
    if (!l->b) return;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < l->out; o++) y[(size_t)i * l->out + o] += l->b[o];
}

void qt_linear_backward(const qt_linear *l, const float *x, const float *dy, float *dx, int n)
{
    /* dW[out][in] = dy^T . x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, n, 1.0f, dy, l->out, x,
                l->in, 0.0f, l->dw, l->in);
    if (l->db) {
        for (int o = 0; o < l->out; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dy[(size_t)i * l->out + o];
            l->db[o] = (float)s;
        }
    }
    /* dx[n][in] = dy . W */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, l->in, l->out, 1.0f, dy, l->out,
                    l->w, l->in, 0.0f, dx, l->in);
}
