/* optim_cuda.cu — the optimizer step over the whole param arena in one launch (see
 * qt_cuda_optim_step in layers_cuda.h; semantics of qt_optim_step in nn/optim.c).
 *
 * The param groups are cut once, at creation, into tiles of at most QT_OPT_TILE elements
 * (offset, length, decay) uploaded to the device; one block updates one tile. So ~500
 * BatchNorm/bias groups cost no extra launches, and no thread searches for its group.
 * Memory-bound: SGD with momentum reads p, g, buf and writes p, buf (20 bytes/element).
 *
 * Bitwise agreement with the CPU: each expression is written with __fadd_rn/__fmul_rn/
 * __fdiv_rn/__fsqrt_rn in the CPU's evaluation order, which stops nvcc from contracting
 * a*b + c into one fused multiply-add (the CPU build, ISO C11, does not contract either).
 * lr, Adam's step size and sqrt(bias2) are read from device memory that
 * qt_cuda_optim_set_lr writes with a one-thread kernel, so a captured graph sees new
 * values on replay.
 *
 * Gradient clipping: squares summed in double over the CPU's fixed 32768-float blocks,
 * block sums added in block order by one thread, the factor computed and applied on the
 * device: no host round trip, same result for any launch geometry.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

#include <math.h>
#include <stdlib.h>

#define QT_OPT_TILE 16384
#define QT_OPT_THREADS 256

typedef struct {
    uint64_t offset;
    uint32_t len, decay;
} opt_tile;

enum { OPT_PLAIN = 0, OPT_MOMENTUM = 1, OPT_NESTEROV = 2, OPT_ADAM = 3 };

struct qt_cuda_optim {
    qt_cuda_ctx *ctx;
    qt_optim_opts o;
    size_t n_total;
    int kind;
    opt_tile *tiles; /* device */
    int n_tiles;
    float *scalars; /* device: lr, step_size, bias2_sqrt */
};

typedef struct {
    float wd, momentum, b1c, beta2, b2c, eps;
} opt_consts;

template <int KIND>
__global__ void __launch_bounds__(QT_OPT_THREADS)
optim_tiles(const opt_tile *tiles, const float *scalars, opt_consts k, float *params, const float *grads, float *s0,
            float *s1)
{
    const opt_tile t = tiles[blockIdx.x];
    const float lr = scalars[0], step_size = scalars[1], bias2_sqrt = scalars[2];
    const float wd = t.decay ? k.wd : 0.0f;
    for (uint32_t j = threadIdx.x; j < t.len; j += QT_OPT_THREADS) {
        const size_t i = t.offset + j;
        const float p = params[i], g = grads[i];
        const float d = __fadd_rn(g, __fmul_rn(wd, p)); /* g + wd*p */
        if (KIND == OPT_PLAIN) {
            params[i] = __fsub_rn(p, __fmul_rn(lr, d));
        } else if (KIND == OPT_MOMENTUM) {
            const float b = __fadd_rn(__fmul_rn(k.momentum, s0[i]), d);
            s0[i] = b;
            params[i] = __fsub_rn(p, __fmul_rn(lr, b));
        } else if (KIND == OPT_NESTEROV) {
            const float b = __fadd_rn(__fmul_rn(k.momentum, s0[i]), d);
            s0[i] = b;
            params[i] = __fsub_rn(p, __fmul_rn(lr, __fadd_rn(d, __fmul_rn(k.momentum, b))));
        } else {
            const float m = __fadd_rn(s0[i], __fmul_rn(k.b1c, __fsub_rn(d, s0[i])));
            const float v = __fadd_rn(__fmul_rn(s1[i], k.beta2), __fmul_rn(__fmul_rn(k.b2c, d), d));
            s0[i] = m;
            s1[i] = v;
            const float root = __fsqrt_rn(v);
            params[i] = __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(m, __fadd_rn(__fdiv_rn(root, bias2_sqrt), k.eps))));
        }
    }
}

__global__ void optim_set_scalars(float *scalars, float lr, float step_size, float bias2_sqrt)
{
    scalars[0] = lr;
    scalars[1] = step_size;
    scalars[2] = bias2_sqrt;
}

extern "C" void qt_cuda_optim_destroy(qt_cuda_optim *op)
{
    if (!op) return;
    (void)cudaStreamSynchronize(op->ctx->stream);
    qt_cuda_free(op->tiles);
    qt_cuda_free(op->scalars);
    free(op);
}

extern "C" int qt_cuda_optim_create(qt_cuda_ctx *ctx, const qt_optim_opts *o, const qt_param_group *groups,
                                    int n_groups, size_t n_total, qt_cuda_optim **out)
{
    *out = NULL;
    size_t n_tiles = 0;
    for (int g = 0; g < n_groups; g++) {
        QT_ASSERT(groups[g].offset <= n_total && groups[g].count <= n_total - groups[g].offset);
        n_tiles += (groups[g].count + QT_OPT_TILE - 1) / QT_OPT_TILE;
    }
    QT_ASSERT(n_tiles <= (size_t)INT32_MAX);
    qt_cuda_optim *op = (qt_cuda_optim *)qt_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->o = *o;
    op->n_total = n_total;
    op->kind = o->kind == QT_OPT_ADAM ? OPT_ADAM
               : o->momentum <= 0.0f  ? OPT_PLAIN
               : o->nesterov          ? OPT_NESTEROV
                                      : OPT_MOMENTUM;
    op->n_tiles = (int)n_tiles;
    opt_tile *host = (opt_tile *)qt_malloc((n_tiles ? n_tiles : 1) * sizeof *host);
    size_t t = 0;
    for (int g = 0; g < n_groups; g++)
        for (size_t at = 0; at < groups[g].count; at += QT_OPT_TILE) {
            const size_t len = groups[g].count - at < QT_OPT_TILE ? groups[g].count - at : QT_OPT_TILE;
            host[t].offset = groups[g].offset + at;
            host[t].len = (uint32_t)len;
            host[t].decay = groups[g].decay ? 1u : 0u;
            t++;
        }
    int rc = -1;
    if (qt_cuda_malloc((void **)&op->tiles, (n_tiles ? n_tiles : 1) * sizeof *host, "optimizer tiles") ||
        qt_cuda_malloc((void **)&op->scalars, 4 * sizeof(float), "optimizer scalars"))
        goto done;
    CUDA_CHECK_GOTO(cudaMemcpyAsync(op->tiles, host, n_tiles * sizeof *host, cudaMemcpyHostToDevice, ctx->stream), done);
    CUDA_CHECK_GOTO(cudaMemsetAsync(op->scalars, 0, 4 * sizeof(float), ctx->stream), done);
    CUDA_CHECK_GOTO(cudaStreamSynchronize(ctx->stream), done); /* `host` is freed below */
    rc = 0;
done:
    free(host);
    if (rc) {
        qt_cuda_optim_destroy(op);
        return -1;
    }
    *out = op;
    return 0;
}

extern "C" int qt_cuda_optim_set_lr(qt_cuda_optim *op, float lr, int64_t t)
{
    float step_size = lr, bias2_sqrt = 1.0f;
    if (op->o.kind == QT_OPT_ADAM) { /* as qt_optim_step */
        QT_ASSERT(t >= 1);
        const double bias1 = 1.0 - pow(op->o.beta1, (double)t), bias2 = 1.0 - pow(op->o.beta2, (double)t);
        step_size = (float)(lr / bias1);
        bias2_sqrt = (float)sqrt(bias2);
    }
    optim_set_scalars<<<1, 1, 0, op->ctx->stream>>>(op->scalars, lr, step_size, bias2_sqrt);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_optim_step(qt_cuda_optim *op, float *params, const float *grads, float *state)
{
    if (op->n_tiles == 0) return 0;
    const qt_optim_opts *o = &op->o;
    opt_consts k;
    k.wd = o->weight_decay;
    k.momentum = o->momentum;
    k.b1c = 1.0f - o->beta1;
    k.beta2 = o->beta2;
    k.b2c = 1.0f - o->beta2;
    k.eps = o->eps;
    float *s0 = state, *s1 = op->kind == OPT_ADAM ? state + op->n_total : NULL;
    QT_ASSERT(op->kind == OPT_PLAIN || state);
    cudaStream_t st = op->ctx->stream;
    const unsigned blocks = (unsigned)op->n_tiles;
    switch (op->kind) {
    case OPT_PLAIN: optim_tiles<OPT_PLAIN><<<blocks, QT_OPT_THREADS, 0, st>>>(op->tiles, op->scalars, k, params, grads, s0, s1); break;
    case OPT_MOMENTUM: optim_tiles<OPT_MOMENTUM><<<blocks, QT_OPT_THREADS, 0, st>>>(op->tiles, op->scalars, k, params, grads, s0, s1); break;
    case OPT_NESTEROV: optim_tiles<OPT_NESTEROV><<<blocks, QT_OPT_THREADS, 0, st>>>(op->tiles, op->scalars, k, params, grads, s0, s1); break;
    default: optim_tiles<OPT_ADAM><<<blocks, QT_OPT_THREADS, 0, st>>>(op->tiles, op->scalars, k, params, grads, s0, s1); break;
    }
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

/* ---- global-norm gradient clipping (qt_clip_grad_norm) ---- */

#define QT_CLIP_BLOCK 32768 /* = QT_OPTIM_NORM_BLOCK of optim.c */
#define QT_CLIP_THREADS 256

__global__ void __launch_bounds__(QT_CLIP_THREADS) clip_partial(const float *g, size_t n, double *partial)
{
    __shared__ double sh[QT_CLIP_THREADS / 32];
    const size_t lo = (size_t)blockIdx.x * QT_CLIP_BLOCK;
    const size_t hi = n - lo < QT_CLIP_BLOCK ? n : lo + QT_CLIP_BLOCK;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += QT_CLIP_THREADS) s += (double)g[i] * (double)g[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < QT_CLIP_THREADS / 32; w++) t += sh[w];
        partial[blockIdx.x] = t;
    }
}

/* One thread: norm = sqrt(sum of the partials in block order); factor = clip ? c : 1. */
__global__ void clip_finish(const double *partial, unsigned blocks, float max_norm, float *norm, float *factor)
{
    double sum = 0.0;
    for (unsigned b = 0; b < blocks; b++) sum += partial[b];
    const double nrm = sqrt(sum);
    if (norm) *norm = (float)nrm;
    float f = 1.0f;
    if (max_norm > 0.0f) {
        const double c = (double)max_norm / (nrm + 1e-6);
        if (c < 1.0) f = (float)c;
    }
    *factor = f;
}

__global__ void clip_scale(float *g, size_t n, const float *factor)
{
    const float f = *factor;
    if (f == 1.0f) return; /* no clipping: leave the gradients untouched */
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        g[i] *= f;
}

extern "C" int qt_cuda_clip_grad_norm(qt_cuda_ctx *ctx, float *grads, size_t n, float max_norm, float *norm)
{
    const size_t blocks = (n + QT_CLIP_BLOCK - 1) / QT_CLIP_BLOCK;
    QT_ASSERT(blocks <= (size_t)INT32_MAX);
    void *scratch = NULL;
    if (qt_cuda_scratch(ctx, qt_cuda_round256((blocks ? blocks : 1) * sizeof(double)) + sizeof(float), &scratch))
        return -1;
    char *cur = (char *)scratch;
    double *partial = (double *)qt_cuda_carve(&cur, (blocks ? blocks : 1) * sizeof(double));
    float *factor = (float *)cur;
    if (blocks) {
        clip_partial<<<(unsigned)blocks, QT_CLIP_THREADS, 0, ctx->stream>>>(grads, n, partial);
        QT_CUDA_LAUNCH_CHECK();
    }
    clip_finish<<<1, 1, 0, ctx->stream>>>(partial, (unsigned)blocks, max_norm, norm, factor);
    QT_CUDA_LAUNCH_CHECK();
    if (max_norm > 0.0f && n) {
        clip_scale<<<qt_cuda_blocks(ctx, n, 256), 256, 0, ctx->stream>>>(grads, n, factor);
        QT_CUDA_LAUNCH_CHECK();
    }
    return 0;
}
