/* batchnorm.c — batch normalisation over [n][c][hw] (fp32), PyTorch semantics.
 *
 * Training: normalise with the batch mean and the BIASED batch variance; update
 *   running_mean = (1-m)*running_mean + m*mean
 *   running_var  = (1-m)*running_var  + m*var*N/(N-1)      (unbiased, N = n*hw)
 * and keep mean and 1/sqrt(var+eps) in save_mean/save_invstd for backward.
 * Eval: normalise with the running statistics.
 *
 * qt_bn_relu_forward/backward fuse the ReLU that follows most BNs into the same passes
 * (one read and write of the activation fewer each way) and give bit-identical results
 * to the separate calls.
 *
 * Invariants: one thread owns each channel (statistics, normalisation and gradient sums),
 * so results do not depend on the thread schedule. Sums run in float over one image's
 * plane (vectorised with `omp simd`) and in double across images. The variance is taken
 * about a shift (the channel's first value) to avoid the cancellation of E[x^2]-E[x]^2
 * when |mean| >> std, while reading x only once for the statistics.
 */
#include "nn/layers.h"

#include <math.h>

/* Shifted sums of one channel: s = sum(x - k), ss = sum((x - k)^2). */
static void bn_channel_sums(const float *x, int n, int c, int hw, int ch, float k, double *s,
                            double *ss)
{
    double a = 0.0, b = 0.0;
    for (int i = 0; i < n; i++) {
        const float *row = x + ((size_t)i * c + ch) * hw;
        float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
        for (int j = 0; j < hw; j++) {
            const float d = row[j] - k;
            s1 += d;
            s2 += d * d;
        }
        a += s1;
        b += s2;
    }
    *s = a;
    *ss = b;
}

/* y = x*scale + shift over one channel, then max(y, 0) when relu. */
static void bn_channel_affine(const float *x, float *y, int n, int c, int hw, int ch, float scale,
                              float shift, bool relu)
{
    for (int i = 0; i < n; i++) {
        const size_t o = ((size_t)i * c + ch) * hw;
        if (relu) {
#pragma omp simd
            for (int j = 0; j < hw; j++) {
                const float v = x[o + j] * scale + shift;
                y[o + j] = v > 0.0f ? v : 0.0f;
            }
        } else {
#pragma omp simd
            for (int j = 0; j < hw; j++) y[o + j] = x[o + j] * scale + shift;
        }
    }
}

static void bn_forward(qt_bn *l, const float *x, float *y, int n, int hw, bool training, bool relu)
{
    const int c = l->c;
    const double count = (double)n * hw;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float mean, invstd;
        if (training) {
            const float k = x[(size_t)ch * hw];
            double s, ss;
            bn_channel_sums(x, n, c, hw, ch, k, &s, &ss);
            const double dm = s / count;
            double var = ss / count - dm * dm;
            if (var < 0.0) var = 0.0;
            mean = (float)(k + dm);
            invstd = (float)(1.0 / sqrt(var + l->eps));
            l->save_mean[ch] = mean;
            l->save_invstd[ch] = invstd;
            const double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
            l->running_mean[ch] = (1.0f - l->momentum) * l->running_mean[ch] + l->momentum * mean;
            l->running_var[ch] =
                (1.0f - l->momentum) * l->running_var[ch] + l->momentum * (float)unbiased;
        } else {
            mean = l->running_mean[ch];
            invstd = (float)(1.0 / sqrt((double)l->running_var[ch] + l->eps));
        }
        const float scale = l->gamma[ch] * invstd;
        bn_channel_affine(x, y, n, c, hw, ch, scale, l->beta[ch] - mean * scale, relu);
    }
}

void qt_bn_forward(qt_bn *l, const float *x, float *y, int n, int hw, bool training)
{
    bn_forward(l, x, y, n, hw, training, false);
}

void qt_bn_relu_forward(qt_bn *l, const float *x, float *y, int n, int hw, bool training)
{
    bn_forward(l, x, y, n, hw, training, true);
}

/* The gradient reaching BN: dy, or dy masked by the ReLU output y > 0 when y != NULL. */
#define BN_DY(o) (y ? (y[o] > 0.0f ? dy[o] : 0.0f) : dy[o])

/* dx may alias dy: each channel reads all of its dy before writing dx. */
static void bn_backward(const qt_bn *l, const float *x, const float *y, const float *dy, float *dx,
                        int n, int hw)
{
    const int c = l->c;
    const double count = (double)n * hw;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const float mean = l->save_mean[ch], invstd = l->save_invstd[ch];
        double sdy = 0.0, sdyx = 0.0; /* sum dy, sum dy*(x-mean) */
        for (int i = 0; i < n; i++) {
            const size_t o = ((size_t)i * c + ch) * hw;
            float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
            for (int j = 0; j < hw; j++) {
                const float d = BN_DY(o + j);
                a += d;
                b += d * (x[o + j] - mean);
            }
            sdy += a;
            sdyx += b;
        }
        const float dgamma = (float)(sdyx * invstd);
        l->dgamma[ch] = dgamma;
        l->dbeta[ch] = (float)sdy;
        if (!dx) continue;
        /* dx = gamma*invstd * (dy - mean(dy) - xhat*mean(dy*xhat)) */
        const float g = l->gamma[ch] * invstd;
        const float mdy = (float)(sdy / count);
        const float kx = (float)(sdyx * invstd * invstd / count); /* per unit of (x-mean) */
        for (int i = 0; i < n; i++) {
            const size_t o = ((size_t)i * c + ch) * hw;
#pragma omp simd
            for (int j = 0; j < hw; j++) dx[o + j] = g * (BN_DY(o + j) - mdy - (x[o + j] - mean) * kx);
        }
    }
}

void qt_bn_backward(const qt_bn *l, const float *x, const float *dy, float *dx, int n, int hw)
{
    bn_backward(l, x, NULL, dy, dx, n, hw);
}

void qt_bn_relu_backward(const qt_bn *l, const float *x, const float *y, const float *dy, float *dx,
                         int n, int hw)
{
    bn_backward(l, x, y, dy, dx, n, hw);
}
