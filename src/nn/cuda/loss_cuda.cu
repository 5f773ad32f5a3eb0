/* loss_cuda.cu — softmax cross-entropy (label smoothing, row mask) and the top-k counter on
 * the GPU, as nn/softmax_xent.c, fp32 [n][k].
 *
 * Forward: one block per row (max, then sum of exp(z - max) and of (z - max) in double, as
 * the CPU); per-row losses go to scratch and one block adds them in a fixed tree order and
 * writes the mean over rows with mask > 0 to a device float: deterministic, and no host
 * synchronisation in the step. Backward: one block counts the rows with mask > 0, then one
 * block per row writes mask*(p - target)/count. Top-k: one warp per row; integer atomics
 * (order-free) add the correct rows.
 * A label outside [0, k) would make the CPU read out of bounds; here its row's loss and
 * gradient are NaN, which the trainer's NaN check reports.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

#define XENT_THREADS 256

/* Block-wide reductions (blockDim.x == XENT_THREADS); every thread gets the result. */
__device__ float block_max(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = sh[0];
    for (int w = 1; w < XENT_THREADS / 32; w++) r = fmaxf(r, sh[w]);
    __syncthreads();
    return r;
}

__device__ double block_sum(double v, double *sh)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double r = 0.0;
    for (int w = 0; w < XENT_THREADS / 32; w++) r += sh[w];
    __syncthreads();
    return r;
}

/* Row blockIdx.x: probs and the row's weighted loss (0 when its mask is 0). */
__global__ void __launch_bounds__(XENT_THREADS)
xent_forward_rows(const float *logits, const int32_t *labels, const float *mask, float smoothing, float *probs, int k,
                  double *row_loss)
{
    __shared__ float shf[XENT_THREADS / 32];
    __shared__ double shd[XENT_THREADS / 32];
    const int i = blockIdx.x;
    const float *z = logits + (size_t)i * k;
    float *p = probs + (size_t)i * k;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < k; j += XENT_THREADS) m = fmaxf(m, z[j]);
    m = block_max(m, shf);
    double s = 0.0, sz = 0.0;
    for (int j = threadIdx.x; j < k; j += XENT_THREADS) {
        const float e = expf(z[j] - m);
        p[j] = e;
        s += e;
        sz += z[j] - m;
    }
    s = block_sum(s, shd);
    sz = block_sum(sz, shd);
    const float inv = (float)(1.0 / s);
    for (int j = threadIdx.x; j < k; j += XENT_THREADS) p[j] *= inv; /* this thread's own writes */
    if (threadIdx.x == 0) {
        const float wt = mask ? mask[i] : 1.0f;
        const int y = labels[i];
        double loss = 0.0;
        if (wt != 0.0f) {
            if (y < 0 || y >= k) {
                loss = (double)NAN;
            } else {
                const double lse = log(s);
                const double logp_label = (double)(z[y] - m) - lse, mean_logp = sz / k - lse;
                loss = wt * -((1.0 - smoothing) * logp_label + smoothing * mean_logp);
            }
        }
        row_loss[i] = loss;
    }
}

/* *loss = sum(row_loss) / (rows with mask > 0), 0 when there are none. One block. */
__global__ void __launch_bounds__(XENT_THREADS) xent_forward_mean(const double *row_loss, const float *mask, int n, float *loss)
{
    __shared__ double sh[XENT_THREADS / 32];
    double s = 0.0, c = 0.0;
    for (int i = threadIdx.x; i < n; i += XENT_THREADS) {
        s += row_loss[i];
        c += mask ? (mask[i] > 0.0f ? 1.0 : 0.0) : 1.0;
    }
    s = block_sum(s, sh);
    c = block_sum(c, sh);
    if (threadIdx.x == 0) *loss = c > 0.0 ? (float)(s / c) : 0.0f;
}

__global__ void __launch_bounds__(XENT_THREADS) xent_count(const float *mask, int n, int *count)
{
    __shared__ double sh[XENT_THREADS / 32];
    double c = 0.0;
    for (int i = threadIdx.x; i < n; i += XENT_THREADS) c += mask[i] > 0.0f ? 1.0 : 0.0;
    c = block_sum(c, sh);
    if (threadIdx.x == 0) *count = (int)c;
}

__global__ void __launch_bounds__(XENT_THREADS)
xent_backward_rows(const float *probs, const int32_t *labels, const float *mask, float smoothing, float *dlogits,
                   int k, const int *count_dev, int count_all)
{
    const int i = blockIdx.x;
    const int count = count_dev ? *count_dev : count_all;
    const float wt = (mask ? mask[i] : 1.0f) / (float)(count ? count : 1);
    const float off = smoothing / (float)k, on = 1.0f - smoothing + off;
    const int y = labels[i];
    const bool bad = y < 0 || y >= k;
    const float *p = probs + (size_t)i * k;
    float *d = dlogits + (size_t)i * k;
    for (int j = threadIdx.x; j < k; j += XENT_THREADS)
        d[j] = bad ? NAN : wt * (p[j] - (j == y ? on : off));
}

/* One warp per row; *correct must be zero on entry. */
__global__ void topk_rows(const float *logits, const int32_t *labels, const float *mask, int n, int k, int topk,
                          int32_t *correct)
{
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = (gridDim.x * blockDim.x) >> 5;
    for (int i = warp; i < n; i += warps) {
        const int y = labels[i];
        if ((mask && !(mask[i] > 0.0f)) || y < 0 || y >= k) continue; /* uniform across the warp */
        const float *z = logits + (size_t)i * k;
        const float zy = z[y];
        int rank = 0;
        for (int j = lane; j < k; j += 32) rank += z[j] > zy || (z[j] == zy && j < y);
        for (int o = 16; o > 0; o >>= 1) rank += __shfl_xor_sync(0xffffffffu, rank, o);
        if (lane == 0 && rank < topk) atomicAdd(correct, 1);
    }
}

extern "C" int qt_cuda_softmax_xent_forward(qt_cuda_ctx *ctx, const float *logits, const int32_t *labels,
                                            const float *mask, float smoothing, float *probs, int n, int k,
                                            float *loss)
{
    QT_ASSERT(n >= 0 && k > 0 && (size_t)n * k <= QT_CUDA_MAX_ELEMS);
    if (n == 0) {
        CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), ctx->stream));
        return 0;
    }
    void *scratch = NULL;
    if (qt_cuda_scratch(ctx, (size_t)n * sizeof(double), &scratch)) return -1;
    double *row_loss = (double *)scratch;
    xent_forward_rows<<<n, XENT_THREADS, 0, ctx->stream>>>(logits, labels, mask, smoothing, probs, k, row_loss);
    QT_CUDA_LAUNCH_CHECK();
    xent_forward_mean<<<1, XENT_THREADS, 0, ctx->stream>>>(row_loss, mask, n, loss);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_softmax_xent_backward(qt_cuda_ctx *ctx, const float *probs, const int32_t *labels,
                                             const float *mask, float smoothing, float *dlogits, int n, int k)
{
    QT_ASSERT(n >= 0 && k > 0 && (size_t)n * k <= QT_CUDA_MAX_ELEMS);
    if (n == 0) return 0;
    int *count = NULL;
    if (mask) {
        void *scratch = NULL;
        if (qt_cuda_scratch(ctx, sizeof(int), &scratch)) return -1;
        count = (int *)scratch;
        xent_count<<<1, XENT_THREADS, 0, ctx->stream>>>(mask, n, count);
        QT_CUDA_LAUNCH_CHECK();
    }
    xent_backward_rows<<<n, XENT_THREADS, 0, ctx->stream>>>(probs, labels, mask, smoothing, dlogits, k, count, n);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_topk_correct(qt_cuda_ctx *ctx, const float *logits, const int32_t *labels, const float *mask,
                                    int n, int k, int topk, int32_t *correct)
{
    QT_ASSERT(n >= 0 && k > 0);
    CUDA_CHECK(cudaMemsetAsync(correct, 0, sizeof(int32_t), ctx->stream));
    if (n == 0) return 0;
    topk_rows<<<qt_cuda_blocks(ctx, (size_t)n * 32, 256), 256, 0, ctx->stream>>>(logits, labels, mask, n, k, topk,
                                                                                  correct);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}
