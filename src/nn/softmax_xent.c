/* softmax_xent.c — softmax cross-entropy with label smoothing and a row mask, and the
 * top-k accuracy counter.
 *
 * Per row i with target t = (1-eps)*onehot(label) + eps/k (PyTorch's label_smoothing):
 *   loss_i = -sum_j t_j * log softmax(z)_j,  log softmax(z)_j = z_j - max - log(sum exp(z - max))
 * (stable: exponents are <= 0). The returned loss is sum(mask_i * loss_i) / count and the
 * gradient mask_i * (p_i - t) / count, where count = number of rows with mask > 0.
 */
#include "nn/layers.h"

#include <math.h>

static int xent_count(const float *mask, int n)
{
    if (!mask) return n;
    int count = 0;
    for (int i = 0; i < n; i++) count += mask[i] > 0.0f;
    return count;
}

float qt_softmax_xent_forward(const float *logits, const int32_t *labels, const float *mask,
                              float smoothing, float *probs, int n, int k)
{
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        float m = z[0];
        for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
        double s = 0.0, sum_z = 0.0;
        for (int j = 0; j < k; j++) {
            p[j] = expf(z[j] - m);
            s += p[j];
            sum_z += z[j] - m;
        }
        const float inv = (float)(1.0 / s);
        for (int j = 0; j < k; j++) p[j] *= inv;
        const float wt = mask ? mask[i] : 1.0f;
        if (wt == 0.0f) continue;
        const double lse = log(s);
        const double logp_label = (double)(z[labels[i]] - m) - lse;
        const double mean_logp = sum_z / k - lse;
        total += wt * -((1.0 - smoothing) * logp_label + smoothing * mean_logp);
    }
    const int count = xent_count(mask, n);
    return count ? (float)(total / count) : 0.0f;
}

void qt_softmax_xent_backward(const float *probs, const int32_t *labels, const float *mask,
                              float smoothing, float *dlogits, int n, int k)
{
    const int count = xent_count(mask, n);
    const float off = smoothing / (float)k, on = 1.0f - smoothing + off;
    for (int i = 0; i < n; i++) {
        const float wt = (mask ? mask[i] : 1.0f) / (float)(count ? count : 1);
        const float *p = probs + (size_t)i * k;
        float *d = dlogits + (size_t)i * k;
        for (int j = 0; j < k; j++) d[j] = wt * (p[j] - off);
        d[labels[i]] = wt * (p[labels[i]] - on);
    }
}

int qt_topk_correct(const float *logits, const int32_t *labels, const float *mask, int n, int k,
                    int topk)
{
    int correct = 0;
    for (int i = 0; i < n; i++) {
        if (mask && !(mask[i] > 0.0f)) continue;
        const float *z = logits + (size_t)i * k;
        const int y = labels[i];
        int rank = 0; /* logits ranked before the label's */
        for (int j = 0; j < k; j++) rank += z[j] > z[y] || (z[j] == z[y] && j < y);
        correct += rank < topk;
    }
    return correct;
}
