/* pool_cuda.cu — max pooling and global average pooling on the GPU (as nn/pool.c).
 *
 * Max pool forward: one thread per output cell scans its window exactly as the CPU does
 * (padded cells never win, ties keep the first cell in row-major order, a NaN wins and
 * ends the scan), so y and argmax are bitwise the CPU's. Backward gathers instead of
 * scattering: one thread per input cell adds the dy of every window whose argmax is that
 * cell, in row-major window order from 0.0f: the same additions in the same order as the
 * CPU's scatter, without atomics, so dx is bitwise the CPU's too (before bf16 rounding).
 * Global average pooling: fp32 sums per (image, channel), one warp per plane in NCHW, one
 * thread per (image, channel) with loads coalesced across channels in NHWC.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

/* Pool geometry and the divisors of the flat output/input index. */
typedef struct {
    int c, h, w, oh, ow, k, s, pad;
    bool nhwc;
    qt_fastdiv fd_c, fd_w, fd_h, fd_ow, fd_oh;
} pool_geom;

/* Coordinates of flat index idx of a [n][c][rows][cols] tensor in the layout. */
__device__ __forceinline__ void coords(uint32_t idx, bool nhwc, int c, qt_fastdiv fd_c, qt_fastdiv fd_cols,
                                       qt_fastdiv fd_rows, uint32_t *i, uint32_t *ch, uint32_t *row, uint32_t *col)
{
    uint32_t t;
    if (nhwc) {
        t = qt_fastdiv_div(fd_c, idx);
        *ch = qt_fastdiv_mod(fd_c, idx, t);
        const uint32_t u = qt_fastdiv_div(fd_cols, t);
        *col = qt_fastdiv_mod(fd_cols, t, u);
        *i = qt_fastdiv_div(fd_rows, u);
        *row = qt_fastdiv_mod(fd_rows, u, *i);
    } else {
        t = qt_fastdiv_div(fd_cols, idx);
        *col = qt_fastdiv_mod(fd_cols, idx, t);
        const uint32_t u = qt_fastdiv_div(fd_rows, t);
        *row = qt_fastdiv_mod(fd_rows, t, u);
        *i = qt_fastdiv_div(fd_c, u);
        *ch = qt_fastdiv_mod(fd_c, u, *i);
    }
    (void)c;
}

/* Offset of (i, ch, row, col) in a [n][c][rows][cols] tensor. */
__device__ __forceinline__ size_t offset_of(bool nhwc, int c, int rows, int cols, uint32_t i, uint32_t ch,
                                            uint32_t row, uint32_t col)
{
    return nhwc ? (((size_t)i * rows + row) * cols + col) * c + ch : (((size_t)i * c + ch) * rows + row) * cols + col;
}

template <typename T>
__global__ void maxpool_fwd(const T *x, T *y, int32_t *argmax, pool_geom g, uint32_t total)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        uint32_t i, ch, oy, ox;
        coords(idx, g.nhwc, g.c, g.fd_c, g.fd_ow, g.fd_oh, &i, &ch, &oy, &ox);
        const int y0 = max((int)oy * g.s - g.pad, 0), y1 = min((int)oy * g.s - g.pad + g.k, g.h);
        const int x0 = max((int)ox * g.s - g.pad, 0), x1 = min((int)ox * g.s - g.pad + g.k, g.w);
        const size_t base = offset_of(g.nhwc, g.c, g.h, g.w, i, ch, 0, 0);
        const size_t cs = g.nhwc ? (size_t)g.c : 1; /* distance between neighbouring cells */
        float best = -INFINITY;
        int32_t at = y0 * g.w + x0;
        bool nan = false;
        for (int iy = y0; iy < y1 && !nan; iy++)
            for (int ix = x0; ix < x1; ix++) {
                const float v = qt_ld(x, base + (size_t)(iy * g.w + ix) * cs);
                if (v > best || isnan(v)) {
                    best = v;
                    at = iy * g.w + ix;
                    if (isnan(v)) {
                        nan = true;
                        break;
                    }
                }
            }
        qt_st(y, idx, best);
        argmax[idx] = at;
    }
}

/* [lo, hi]: windows (along one axis) that contain input position p; empty when lo > hi. */
__device__ __forceinline__ void windows_of(int p, int pad, int k, int s, int out, int *lo, int *hi)
{
    const int t = p + pad - k + 1; /* first window start that still reaches p */
    *lo = t <= 0 ? 0 : (t + s - 1) / s;
    *hi = min((p + pad) / s, out - 1);
}

template <typename T>
__global__ void maxpool_bwd(const T *dy, const int32_t *argmax, T *dx, pool_geom g, uint32_t total)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        uint32_t i, ch, iy, ix;
        coords(idx, g.nhwc, g.c, g.fd_c, g.fd_w, g.fd_h, &i, &ch, &iy, &ix);
        int oy0, oy1, ox0, ox1;
        windows_of((int)iy, g.pad, g.k, g.s, g.oh, &oy0, &oy1);
        windows_of((int)ix, g.pad, g.k, g.s, g.ow, &ox0, &ox1);
        const int32_t me = (int32_t)(iy * g.w + ix);
        float sum = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) {
                const size_t o = offset_of(g.nhwc, g.c, g.oh, g.ow, i, ch, (uint32_t)oy, (uint32_t)ox);
                if (argmax[o] == me) sum += qt_ld(dy, o);
            }
        qt_st(dx, idx, sum);
    }
}

static pool_geom pool_make(const qt_cuda_ctx *ctx, const qt_maxpool *p, int c, int h, int w)
{
    pool_geom g;
    g.c = c, g.h = h, g.w = w, g.k = p->k, g.s = p->stride, g.pad = p->pad;
    g.oh = (h + 2 * p->pad - p->k) / p->stride + 1;
    g.ow = (w + 2 * p->pad - p->k) / p->stride + 1;
    g.nhwc = ctx->layout == QT_CUDA_NHWC;
    g.fd_c = qt_fastdiv_make((uint32_t)c);
    g.fd_w = qt_fastdiv_make((uint32_t)w);
    g.fd_h = qt_fastdiv_make((uint32_t)h);
    g.fd_ow = qt_fastdiv_make((uint32_t)g.ow);
    g.fd_oh = qt_fastdiv_make((uint32_t)g.oh);
    return g;
}

extern "C" int qt_cuda_maxpool_forward(qt_cuda_ctx *ctx, const qt_maxpool *p, const void *x, void *y,
                                       int32_t *argmax, int n, int c, int h, int w)
{
    const pool_geom g = pool_make(ctx, p, c, h, w);
    const size_t total = (size_t)n * c * g.oh * g.ow;
    QT_ASSERT(g.oh > 0 && g.ow > 0 && p->pad < p->k && (size_t)n * c * h * w <= QT_CUDA_MAX_ELEMS);
    const unsigned blocks = qt_cuda_blocks(ctx, total, 256);
    if (ctx->dtype == QT_CUDA_DT_BF16)
        maxpool_fwd<<<blocks, 256, 0, ctx->stream>>>((const __nv_bfloat16 *)x, (__nv_bfloat16 *)y, argmax, g,
                                                     (uint32_t)total);
    else
        maxpool_fwd<<<blocks, 256, 0, ctx->stream>>>((const float *)x, (float *)y, argmax, g, (uint32_t)total);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_maxpool_backward(qt_cuda_ctx *ctx, const qt_maxpool *p, const void *dy, const int32_t *argmax,
                                        void *dx, int n, int c, int h, int w)
{
    const pool_geom g = pool_make(ctx, p, c, h, w);
    const size_t total = (size_t)n * c * h * w;
    QT_ASSERT(g.oh > 0 && g.ow > 0 && total <= QT_CUDA_MAX_ELEMS);
    const unsigned blocks = qt_cuda_blocks(ctx, total, 256);
    if (ctx->dtype == QT_CUDA_DT_BF16)
        maxpool_bwd<<<blocks, 256, 0, ctx->stream>>>((const __nv_bfloat16 *)dy, argmax, (__nv_bfloat16 *)dx, g,
                                                     (uint32_t)total);
    else
        maxpool_bwd<<<blocks, 256, 0, ctx->stream>>>((const float *)dy, argmax, (float *)dx, g, (uint32_t)total);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

/* ---- global average pooling ---- */

/* NCHW: one warp per plane (contiguous hw values). */
template <typename T>
__global__ void gap_fwd_nchw(const T *x, float *y, uint32_t planes, int hw, float inv)
{
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = (gridDim.x * blockDim.x) >> 5;
    for (uint32_t pl = warp; pl < planes; pl += warps) {
        const size_t base = (size_t)pl * hw;
        float s = 0.0f;
        for (int j = (int)lane; j < hw; j += 32) s += qt_ld(x, base + j);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) y[pl] = s * inv;
    }
}

/* NHWC: one thread per (image, channel); neighbouring threads read neighbouring channels. */
template <typename T>
__global__ void gap_fwd_nhwc(const T *x, float *y, uint32_t planes, int c, qt_fastdiv fd_c, int hw, float inv)
{
    for (uint32_t pl = blockIdx.x * blockDim.x + threadIdx.x; pl < planes; pl += gridDim.x * blockDim.x) {
        const uint32_t i = qt_fastdiv_div(fd_c, pl), ch = qt_fastdiv_mod(fd_c, pl, i);
        const size_t base = (size_t)i * hw * c + ch;
        float s = 0.0f;
        for (int j = 0; j < hw; j++) s += qt_ld(x, base + (size_t)j * c);
        y[pl] = s * inv;
    }
}

/* dx = dy[plane] / hw, plane = i*c + ch of each element. */
template <typename T>
__global__ void gap_bwd(const float *dy, T *dx, uint32_t total, bool nhwc, int c, int hw, qt_fastdiv fd_c,
                        qt_fastdiv fd_hw, qt_fastdiv fd_chw, float inv)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        uint32_t pl;
        if (nhwc) {
            const uint32_t i = qt_fastdiv_div(fd_chw, idx);
            const uint32_t ch = qt_fastdiv_mod(fd_c, idx, qt_fastdiv_div(fd_c, idx));
            pl = i * (uint32_t)c + ch;
        } else {
            pl = qt_fastdiv_div(fd_hw, idx);
        }
        qt_st(dx, idx, dy[pl] * inv);
    }
    (void)hw;
}

extern "C" int qt_cuda_gap_forward(qt_cuda_ctx *ctx, const void *x, float *y, int n, int c, int hw)
{
    const size_t planes = (size_t)n * c;
    QT_ASSERT(planes * hw <= QT_CUDA_MAX_ELEMS && hw > 0);
    const float inv = 1.0f / (float)hw;
    const bool bf16 = ctx->dtype == QT_CUDA_DT_BF16;
    if (ctx->layout == QT_CUDA_NHWC) {
        const unsigned blocks = qt_cuda_blocks(ctx, planes, 256);
        const qt_fastdiv fc = qt_fastdiv_make((uint32_t)c);
        if (bf16)
            gap_fwd_nhwc<<<blocks, 256, 0, ctx->stream>>>((const __nv_bfloat16 *)x, y, (uint32_t)planes, c, fc, hw, inv);
        else
            gap_fwd_nhwc<<<blocks, 256, 0, ctx->stream>>>((const float *)x, y, (uint32_t)planes, c, fc, hw, inv);
    } else {
        const unsigned blocks = qt_cuda_blocks(ctx, planes * 32, 256);
        if (bf16)
            gap_fwd_nchw<<<blocks, 256, 0, ctx->stream>>>((const __nv_bfloat16 *)x, y, (uint32_t)planes, hw, inv);
        else
            gap_fwd_nchw<<<blocks, 256, 0, ctx->stream>>>((const float *)x, y, (uint32_t)planes, hw, inv);
    }
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int qt_cuda_gap_backward(qt_cuda_ctx *ctx, const float *dy, void *dx, int n, int c, int hw)
{
    const size_t total = (size_t)n * c * hw;
    QT_ASSERT(total <= QT_CUDA_MAX_ELEMS && hw > 0);
    const float inv = 1.0f / (float)hw;
    const bool nhwc = ctx->layout == QT_CUDA_NHWC;
    const qt_fastdiv fc = qt_fastdiv_make((uint32_t)c), fhw = qt_fastdiv_make((uint32_t)hw),
                     fchw = qt_fastdiv_make((uint32_t)(c * hw));
    const unsigned blocks = qt_cuda_blocks(ctx, total, 256);
    if (ctx->dtype == QT_CUDA_DT_BF16)
        gap_bwd<<<blocks, 256, 0, ctx->stream>>>(dy, (__nv_bfloat16 *)dx, (uint32_t)total, nhwc, c, hw, fc, fhw, fchw,
                                                 inv);
    else
        gap_bwd<<<blocks, 256, 0, ctx->stream>>>(dy, (float *)dx, (uint32_t)total, nhwc, c, hw, fc, fhw, fchw, inv);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}
