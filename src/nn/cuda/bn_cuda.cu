/* bn_cuda.cu — batch normalisation (PyTorch semantics, as nn/batchnorm.c), with the fused
 * ReLU, and the per-channel reductions it shares with the conv bias.
 *
 * Why our kernels and not cuDNN: cuDNN 9 deprecates the legacy batch-norm calls
 * (cudnnBatchNormalizationForwardTraining, ...Backward); their graph-API replacement (the
 * NORM_FORWARD/BACKWARD operations) is served by few engines, with layout and type
 * restrictions. BN is memory-bound: the passes below read what cuDNN's would.
 *
 * Passes, for C channels of N = n*hw elements each:
 *   1. partial sums: the N elements of a channel are cut into `chunks` equal ranges; one
 *      block sums a (chunk, channel) [NCHW] or (chunk, 32 channels) [NHWC] tile in float
 *      and writes its partial to scratch;
 *   2. finalize: one thread per channel adds the partials in double in chunk order and
 *      derives the per-channel constants (as the CPU does, in double);
 *   3. apply: elementwise y = x*scale + shift (+ReLU) / dx = g*(dy' - mdy - (x-mean)*kx).
 * Statistics are shifted by the channel's first element (as the CPU) against the
 * cancellation of E[x^2] - E[x]^2. Chunk counts depend only on the shape and the SM count,
 * so results are reproducible run to run.
 * Scratch layout: [4*C floats of per-channel constants][2 * chunks * C float partials].
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

enum { RED_STATS = 0, RED_BWD = 1, RED_BWD_RELU = 2, RED_SUM = 3 };

#define RED_NCHW_THREADS 256
#define RED_NHWC_ROWS 8
#define RED_BLOCKS_PER_SM 4

typedef struct {
    uint32_t count, chunks, per_chunk; /* elements per channel, ranges, elements per range */
} red_plan;

static red_plan red_make(const qt_cuda_ctx *ctx, int n, int c, int hw)
{
    red_plan r;
    r.count = (uint32_t)((size_t)n * hw);
    const bool nhwc = ctx->layout == QT_CUDA_NHWC;
    const uint32_t groups = nhwc ? (uint32_t)((c + 31) / 32) : (uint32_t)c;
    const uint32_t min_range = nhwc ? 64u : 1024u; /* keep each block's loop long enough */
    uint32_t chunks = ((uint32_t)(RED_BLOCKS_PER_SM * ctx->sm_count) + groups - 1) / groups;
    const uint32_t most = (r.count + min_range - 1) / min_range;
    if (chunks > most) chunks = most;
    if (chunks < 1) chunks = 1;
    r.per_chunk = (r.count + chunks - 1) / chunks;
    r.chunks = (r.count + r.per_chunk - 1) / r.per_chunk; /* no empty range */
    return r;
}

size_t qt_cuda_chansum_scratch_bytes(const qt_cuda_ctx *ctx, int n, int c, int hw)
{
    const red_plan r = red_make(ctx, n, c, hw);
    return qt_cuda_round256(4 * (size_t)c * sizeof(float)) + qt_cuda_round256(2 * (size_t)r.chunks * c * sizeof(float));
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* Sums a and b over the block (blockDim.x a multiple of 32); thread 0 holds the result. */
__device__ __forceinline__ void block_sum2(float &a, float &b)
{
    __shared__ float sa[32], sb[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) sa[wid] = a, sb[wid] = b;
    __syncthreads();
    if (wid == 0) {
        a = warp_sum(lane < nw ? sa[lane] : 0.0f);
        b = warp_sum(lane < nw ? sb[lane] : 0.0f);
    }
}

/* The two summands of element idx: STATS (x-k, (x-k)^2) with k the shift; BWD (d, d*(x-k))
 * with k the mean and d = dy, masked by y > 0 for BWD_RELU; SUM (dy, -). */
template <int OP, typename T>
__device__ __forceinline__ void red_term(const T *x, const T *y, const T *dy, size_t idx, float k, float &a, float &b)
{
    if (OP == RED_STATS) {
        const float v = qt_ld(x, idx) - k;
        a += v;
        b += v * v;
    } else if (OP == RED_SUM) {
        a += qt_ld(dy, idx);
    } else {
        float d = qt_ld(dy, idx);
        if (OP == RED_BWD_RELU && !(qt_ld(y, idx) > 0.0f)) d = 0.0f;
        a += d;
        b += d * (qt_ld(x, idx) - k);
    }
}

/* NCHW: grid (chunks, C), one channel's range per block; part [2][chunks][C]. */
template <int OP, typename T>
__global__ void __launch_bounds__(RED_NCHW_THREADS)
red_nchw(const T *x, const T *y, const T *dy, const float *kvec, int c, uint32_t hw, qt_fastdiv fd_hw,
         uint32_t count, uint32_t per_chunk, float *part)
{
    const int ch = blockIdx.y;
    const uint32_t chunk = blockIdx.x, chunks = gridDim.x;
    const uint32_t q0 = chunk * per_chunk, q1 = min(count, q0 + per_chunk);
    const float k = OP == RED_STATS ? qt_ld(x, (size_t)ch * hw) : OP == RED_SUM ? 0.0f : kvec[ch];
    float a = 0.0f, b = 0.0f;
    for (uint32_t q = q0 + threadIdx.x; q < q1; q += blockDim.x) {
        const uint32_t i = qt_fastdiv_div(fd_hw, q);
        red_term<OP>(x, y, dy, ((size_t)i * c + ch) * hw + (q - i * hw), k, a, b);
    }
    block_sum2(a, b);
    if (threadIdx.x == 0) {
        part[(size_t)chunk * c + ch] = a;
        part[((size_t)chunks + chunk) * c + ch] = b;
    }
}

/* NHWC: block (32 channels, RED_NHWC_ROWS rows), grid (chunks, ceil(C/32)); loads are
 * coalesced across the 32 channels of a row. */
template <int OP, typename T>
__global__ void red_nhwc(const T *x, const T *y, const T *dy, const float *kvec, int c, uint32_t count,
                         uint32_t per_chunk, float *part)
{
    __shared__ float sa[RED_NHWC_ROWS][33], sb[RED_NHWC_ROWS][33];
    const int ch = blockIdx.y * 32 + threadIdx.x;
    const uint32_t chunk = blockIdx.x, chunks = gridDim.x;
    const uint32_t p0 = chunk * per_chunk, p1 = min(count, p0 + per_chunk);
    float a = 0.0f, b = 0.0f;
    if (ch < c) {
        const float k = OP == RED_STATS ? qt_ld(x, (size_t)ch) : OP == RED_SUM ? 0.0f : kvec[ch];
        for (uint32_t p = p0 + threadIdx.y; p < p1; p += RED_NHWC_ROWS)
            red_term<OP>(x, y, dy, (size_t)p * c + ch, k, a, b);
    }
    sa[threadIdx.y][threadIdx.x] = a;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float ta = 0.0f, tb = 0.0f;
        for (int r = 0; r < RED_NHWC_ROWS; r++) ta += sa[r][threadIdx.x], tb += sb[r][threadIdx.x];
        part[(size_t)chunk * c + ch] = ta;
        part[((size_t)chunks + chunk) * c + ch] = tb;
    }
}

template <int OP, typename T>
static int launch_red(qt_cuda_ctx *ctx, const red_plan *r, const void *x, const void *y, const void *dy,
                      const float *kvec, int c, int hw, float *part)
{
    if (ctx->layout == QT_CUDA_NHWC) {
        dim3 grid(r->chunks, (unsigned)((c + 31) / 32)), block(32, RED_NHWC_ROWS);
        red_nhwc<OP, T><<<grid, block, 0, ctx->stream>>>((const T *)x, (const T *)y, (const T *)dy, kvec, c, r->count,
                                                        r->per_chunk, part);
    } else {
        dim3 grid(r->chunks, (unsigned)c);
        red_nchw<OP, T><<<grid, RED_NCHW_THREADS, 0, ctx->stream>>>((const T *)x, (const T *)y, (const T *)dy, kvec,
                                                                    c, (uint32_t)hw, qt_fastdiv_make((uint32_t)hw),
                                                                    r->count, r->per_chunk, part);
    }
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

template <int OP>
static int red_dispatch(qt_cuda_ctx *ctx, const red_plan *r, const void *x, const void *y, const void *dy,
                        const float *kvec, int c, int hw, float *part)
{
    if (ctx->dtype == QT_CUDA_DT_BF16) return launch_red<OP, __nv_bfloat16>(ctx, r, x, y, dy, kvec, c, hw, part);
    return launch_red<OP, float>(ctx, r, x, y, dy, kvec, c, hw, part);
}

/* ---- finalize: one thread per channel ---- */

__device__ __forceinline__ void sum_parts(const float *part, int chunks, int c, int ch, double *s, double *ss)
{
    double a = 0.0, b = 0.0;
    for (int k = 0; k < chunks; k++) {
        a += part[(size_t)k * c + ch];
        b += part[((size_t)chunks + k) * c + ch];
    }
    *s = a;
    *ss = b;
}

/* Training: batch mean and biased variance; running stats with the unbiased variance;
 * coef = [scale][shift]. kx/kstride locate the shift (the channel's first element). */
template <typename T>
__global__ void bn_finalize_train(const float *part, int chunks, int c, double count, const T *x, size_t kstride,
                                  float eps, float momentum, const float *gamma, const float *beta, float *run_mean,
                                  float *run_var, float *save_mean, float *save_invstd, float *coef)
{
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s, ss;
    sum_parts(part, chunks, c, ch, &s, &ss);
    const float k = qt_ld(x, (size_t)ch * kstride);
    const double dm = s / count;
    double var = ss / count - dm * dm;
    if (var < 0.0) var = 0.0;
    const float mean = (float)(k + dm), invstd = (float)(1.0 / sqrt(var + eps));
    save_mean[ch] = mean;
    save_invstd[ch] = invstd;
    const double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
    run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * mean;
    run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * (float)unbiased;
    const float scale = gamma[ch] * invstd;
    coef[ch] = scale;
    coef[c + ch] = beta[ch] - mean * scale;
}

__global__ void bn_finalize_eval(int c, float eps, const float *gamma, const float *beta, const float *run_mean,
                                 const float *run_var, float *coef)
{
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const float mean = run_mean[ch], invstd = (float)(1.0 / sqrt((double)run_var[ch] + eps));
    const float scale = gamma[ch] * invstd;
    coef[ch] = scale;
    coef[c + ch] = beta[ch] - mean * scale;
}

/* dgamma, dbeta, and coef = [g = gamma*invstd][mdy][kx] for the dx pass. */
__global__ void bn_finalize_bwd(const float *part, int chunks, int c, double count, const float *gamma,
                                const float *save_invstd, float *dgamma, float *dbeta, float *coef)
{
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double sdy, sdyx;
    sum_parts(part, chunks, c, ch, &sdy, &sdyx);
    const float invstd = save_invstd[ch];
    dgamma[ch] = (float)(sdyx * invstd);
    dbeta[ch] = (float)sdy;
    coef[ch] = gamma[ch] * invstd;
    coef[c + ch] = (float)(sdy / count);
    coef[2 * c + ch] = (float)(sdyx * invstd * invstd / count);
}

__global__ void chansum_finalize(const float *part, int chunks, int c, float *out)
{
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s, unused;
    sum_parts(part, chunks, c, ch, &s, &unused);
    out[ch] = (float)s;
}

/* ---- apply: elementwise with the channel of each flat index ----
 * channel = (idx / inner) % c with inner = hw (NCHW) or 1 (NHWC). */
__device__ __forceinline__ uint32_t channel_of(uint32_t idx, qt_fastdiv fd_inner, qt_fastdiv fd_c)
{
    const uint32_t t = qt_fastdiv_div(fd_inner, idx);
    return qt_fastdiv_mod(fd_c, t, qt_fastdiv_div(fd_c, t));
}

template <typename T, bool RELU>
__global__ void bn_apply(const T *x, T *y, const float *coef, int c, uint32_t total, qt_fastdiv fd_inner,
                         qt_fastdiv fd_c)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const uint32_t ch = channel_of(idx, fd_inner, fd_c);
        float v = qt_ld(x, idx) * coef[ch] + coef[c + ch];
        if (RELU) v = v > 0.0f ? v : 0.0f;
        qt_st(y, idx, v);
    }
}

/* dx may alias dy: each element is read before it is written, by the same thread. */
template <typename T, bool RELU>
__global__ void bn_bwd_apply(const T *x, const T *y, const T *dy, T *dx, const float *mean, const float *coef, int c,
                             uint32_t total, qt_fastdiv fd_inner, qt_fastdiv fd_c)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const uint32_t ch = channel_of(idx, fd_inner, fd_c);
        float d = qt_ld(dy, idx);
        if (RELU && !(qt_ld(y, idx) > 0.0f)) d = 0.0f;
        qt_st(dx, idx, coef[ch] * (d - coef[c + ch] - (qt_ld(x, idx) - mean[ch]) * coef[2 * c + ch]));
    }
}

template <typename T>
__global__ void add_channel_bias(T *y, const float *b, uint32_t total, qt_fastdiv fd_inner, qt_fastdiv fd_c)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x)
        qt_st(y, idx, qt_ld(y, idx) + b[channel_of(idx, fd_inner, fd_c)]);
}

/* ---- host side ---- */

typedef struct {
    float *coef, *part;
    red_plan r;
    uint32_t total;
    qt_fastdiv fd_inner, fd_c;
    unsigned blocks, cblocks; /* elementwise grid, per-channel grid */
} bn_setup;

static int bn_prepare(qt_cuda_ctx *ctx, int n, int c, int hw, void *scratch, bn_setup *s)
{
    const size_t total = (size_t)n * c * hw;
    QT_ASSERT(n > 0 && c > 0 && hw > 0 && total <= QT_CUDA_MAX_ELEMS);
    if (!scratch && qt_cuda_scratch(ctx, qt_cuda_chansum_scratch_bytes(ctx, n, c, hw), &scratch)) return -1;
    char *cur = (char *)scratch;
    s->coef = (float *)qt_cuda_carve(&cur, 4 * (size_t)c * sizeof(float));
    s->part = (float *)cur;
    s->r = red_make(ctx, n, c, hw);
    s->total = (uint32_t)total;
    s->fd_inner = qt_fastdiv_make(ctx->layout == QT_CUDA_NHWC ? 1u : (uint32_t)hw);
    s->fd_c = qt_fastdiv_make((uint32_t)c);
    s->blocks = qt_cuda_blocks(ctx, total, 256);
    s->cblocks = (unsigned)((c + 127) / 128);
    return 0;
}

int qt_cuda_chansum(qt_cuda_ctx *ctx, const void *dy, int n, int c, int hw, float *out, void *scratch)
{
    bn_setup s;
    if (bn_prepare(ctx, n, c, hw, scratch, &s)) return -1;
    if (red_dispatch<RED_SUM>(ctx, &s.r, NULL, NULL, dy, NULL, c, hw, s.part)) return -1;
    chansum_finalize<<<s.cblocks, 128, 0, ctx->stream>>>(s.part, (int)s.r.chunks, c, out);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

int qt_cuda_add_channel_bias(qt_cuda_ctx *ctx, void *y, const float *b, int n, int c, int hw)
{
    const size_t total = (size_t)n * c * hw;
    QT_ASSERT(total <= QT_CUDA_MAX_ELEMS);
    const qt_fastdiv fi = qt_fastdiv_make(ctx->layout == QT_CUDA_NHWC ? 1u : (uint32_t)hw), fc = qt_fastdiv_make(c);
    const unsigned blocks = qt_cuda_blocks(ctx, total, 256);
    if (ctx->dtype == QT_CUDA_DT_BF16)
        add_channel_bias<<<blocks, 256, 0, ctx->stream>>>((__nv_bfloat16 *)y, b, (uint32_t)total, fi, fc);
    else
        add_channel_bias<<<blocks, 256, 0, ctx->stream>>>((float *)y, b, (uint32_t)total, fi, fc);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

template <typename T>
static void launch_bn_apply(qt_cuda_ctx *ctx, const bn_setup *s, const void *x, void *y, int c, bool relu)
{
    if (relu)
        bn_apply<T, true><<<s->blocks, 256, 0, ctx->stream>>>((const T *)x, (T *)y, s->coef, c, s->total, s->fd_inner,
                                                              s->fd_c);
    else
        bn_apply<T, false><<<s->blocks, 256, 0, ctx->stream>>>((const T *)x, (T *)y, s->coef, c, s->total,
                                                               s->fd_inner, s->fd_c);
}

extern "C" int qt_cuda_bn_forward(qt_cuda_ctx *ctx, qt_bn *l, const void *x, void *y, int n, int hw, bool training,
                                  bool relu)
{
    const int c = l->c;
    bn_setup s;
    if (bn_prepare(ctx, n, c, hw, NULL, &s)) return -1;
    const bool bf16 = ctx->dtype == QT_CUDA_DT_BF16;
    if (training) {
        if (red_dispatch<RED_STATS>(ctx, &s.r, x, NULL, NULL, NULL, c, hw, s.part)) return -1;
        const size_t kstride = ctx->layout == QT_CUDA_NHWC ? 1 : (size_t)hw;
        const double count = (double)s.r.count;
        if (bf16)
            bn_finalize_train<<<s.cblocks, 128, 0, ctx->stream>>>(
                s.part, (int)s.r.chunks, c, count, (const __nv_bfloat16 *)x, kstride, l->eps, l->momentum, l->gamma,
                l->beta, l->running_mean, l->running_var, l->save_mean, l->save_invstd, s.coef);
        else
            bn_finalize_train<<<s.cblocks, 128, 0, ctx->stream>>>(
                s.part, (int)s.r.chunks, c, count, (const float *)x, kstride, l->eps, l->momentum, l->gamma, l->beta,
                l->running_mean, l->running_var, l->save_mean, l->save_invstd, s.coef);
    } else {
        bn_finalize_eval<<<s.cblocks, 128, 0, ctx->stream>>>(c, l->eps, l->gamma, l->beta, l->running_mean,
                                                             l->running_var, s.coef);
    }
    QT_CUDA_LAUNCH_CHECK();
    if (bf16)
        launch_bn_apply<__nv_bfloat16>(ctx, &s, x, y, c, relu);
    else
        launch_bn_apply<float>(ctx, &s, x, y, c, relu);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

template <typename T>
static void launch_bn_bwd_apply(qt_cuda_ctx *ctx, const bn_setup *s, const qt_bn *l, const void *x, const void *y,
                                const void *dy, void *dx, bool relu)
{
    if (relu)
        bn_bwd_apply<T, true><<<s->blocks, 256, 0, ctx->stream>>>((const T *)x, (const T *)y, (const T *)dy, (T *)dx,
                                                                  l->save_mean, s->coef, l->c, s->total, s->fd_inner,
                                                                  s->fd_c);
    else
        bn_bwd_apply<T, false><<<s->blocks, 256, 0, ctx->stream>>>((const T *)x, (const T *)y, (const T *)dy, (T *)dx,
                                                                   l->save_mean, s->coef, l->c, s->total,
                                                                   s->fd_inner, s->fd_c);
}

extern "C" int qt_cuda_bn_backward(qt_cuda_ctx *ctx, const qt_bn *l, const void *x, const void *y, const void *dy,
                                   void *dx, int n, int hw, bool relu)
{
    const int c = l->c;
    bn_setup s;
    if (bn_prepare(ctx, n, c, hw, NULL, &s)) return -1;
    if (relu) {
        if (red_dispatch<RED_BWD_RELU>(ctx, &s.r, x, y, dy, l->save_mean, c, hw, s.part)) return -1;
    } else {
        if (red_dispatch<RED_BWD>(ctx, &s.r, x, NULL, dy, l->save_mean, c, hw, s.part)) return -1;
    }
    bn_finalize_bwd<<<s.cblocks, 128, 0, ctx->stream>>>(s.part, (int)s.r.chunks, c, (double)s.r.count, l->gamma,
                                                        l->save_invstd, l->dgamma, l->dbeta, s.coef);
    QT_CUDA_LAUNCH_CHECK();
    if (!dx) return 0;
    if (ctx->dtype == QT_CUDA_DT_BF16)
        launch_bn_bwd_apply<__nv_bfloat16>(ctx, &s, l, x, y, dy, dx, relu);
    else
        launch_bn_bwd_apply<float>(ctx, &s, l, x, y, dy, dx, relu);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}
