/* conv_cuda.cu — convolution layer on the GPU (cuDNN through cudnn_plan.cu) and the
 * format conversion kernel it shares with the input pipeline.
 *
 * Weights stay fp32 [c_out][c_in][kh][kw] in the param arena (the master copy). When the
 * activations are bf16 or NHWC, each call "stages" them into scratch in the activation
 * type and, for NHWC, in [c_out][kh][kw][c_in] (KRSC), the filter layout cuDNN's NHWC
 * tensor-core engines expect; the weight gradient is computed in that staged form and
 * widened back into dw. Staging costs one pass over the weights per call, small next to
 * the activations (ResNet-50: 25M weights vs ~3G activation elements per b128 step), and
 * means no bf16 shadow copy can go stale after an optimizer step. KCRS <-> KRSC is the
 * NCHW <-> NHWC conversion with n = c_out, c = c_in, hw = kh*kw.
 */
#include "nn/cuda/cuda_internal.h"
#include "nn/cuda/layers_cuda.h"

#include <string.h>

/* dst[idx] = src[(i, ch, j)] where (i, ch, j) are the coordinates of dst's flat index idx. */
template <typename S, typename D>
__global__ void convert_kernel(const S *__restrict__ src, bool src_nhwc, D *__restrict__ dst, bool dst_nhwc,
                               uint32_t total, uint32_t c, uint32_t hw, qt_fastdiv fd_c, qt_fastdiv fd_hw)
{
    for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        uint32_t i, ch, j;
        if (dst_nhwc) {
            const uint32_t p = qt_fastdiv_div(fd_c, idx); /* i*hw + j */
            ch = qt_fastdiv_mod(fd_c, idx, p);
            i = qt_fastdiv_div(fd_hw, p);
            j = qt_fastdiv_mod(fd_hw, p, i);
        } else {
            const uint32_t plane = qt_fastdiv_div(fd_hw, idx); /* i*c + ch */
            j = qt_fastdiv_mod(fd_hw, idx, plane);
            i = qt_fastdiv_div(fd_c, plane);
            ch = qt_fastdiv_mod(fd_c, plane, i);
        }
        const size_t s = src_nhwc ? ((size_t)i * hw + j) * c + ch : ((size_t)i * c + ch) * hw + j;
        qt_st(dst, idx, qt_ld(src, s));
    }
}

template <typename S, typename D>
static void launch_convert(qt_cuda_ctx *ctx, const void *src, bool sn, void *dst, bool dn, uint32_t total,
                           uint32_t c, uint32_t hw)
{
    convert_kernel<S, D><<<qt_cuda_blocks(ctx, total, 256), 256, 0, ctx->stream>>>(
        (const S *)src, sn, (D *)dst, dn, total, c, hw, qt_fastdiv_make(c), qt_fastdiv_make(hw));
}

extern "C" int qt_cuda_convert(qt_cuda_ctx *ctx, const void *src, qt_cuda_dtype st, qt_cuda_layout sl, void *dst,
                               qt_cuda_dtype dt, qt_cuda_layout dl, int n, int c, int hw)
{
    const size_t total = (size_t)n * c * hw;
    QT_ASSERT(n >= 0 && c > 0 && hw > 0 && total <= QT_CUDA_MAX_ELEMS);
    QT_ASSERT(sl != QT_CUDA_LAYOUT_AUTO && dl != QT_CUDA_LAYOUT_AUTO);
    if (total == 0) return 0;
    const bool sn = sl == QT_CUDA_NHWC, dn = dl == QT_CUDA_NHWC;
    if (st == dt && (sn == dn || c == 1 || hw == 1)) { /* same bytes */
        CUDA_CHECK(cudaMemcpyAsync(dst, src, total * qt_cuda_dtype_bytes(st), cudaMemcpyDeviceToDevice, ctx->stream));
        return 0;
    }
    const uint32_t t = (uint32_t)total, uc = (uint32_t)c, uh = (uint32_t)hw;
    if (st == QT_CUDA_DT_F32 && dt == QT_CUDA_DT_F32)
        launch_convert<float, float>(ctx, src, sn, dst, dn, t, uc, uh);
    else if (st == QT_CUDA_DT_F32)
        launch_convert<float, __nv_bfloat16>(ctx, src, sn, dst, dn, t, uc, uh);
    else if (dt == QT_CUDA_DT_F32)
        launch_convert<__nv_bfloat16, float>(ctx, src, sn, dst, dn, t, uc, uh);
    else
        launch_convert<__nv_bfloat16, __nv_bfloat16>(ctx, src, sn, dst, dn, t, uc, uh);
    QT_CUDA_LAUNCH_CHECK();
    return 0;
}

/* ---- convolution ---- */

static void conv_out(const qt_conv *c, int h, int w, int *oh, int *ow)
{
    *oh = (h + 2 * c->pad - c->kh) / c->stride + 1;
    *ow = (w + 2 * c->pad - c->kw) / c->stride + 1;
}

/* Whether the weights must be cast or reordered for cuDNN (see the file header). */
static bool conv_stages(const qt_cuda_ctx *ctx) { return ctx->dtype != QT_CUDA_DT_F32 || ctx->layout == QT_CUDA_NHWC; }

static void conv_key(const qt_cuda_ctx *ctx, const qt_conv *c, int op, int n, int h, int w, const void *x,
                     const void *wt, const void *y, qt_conv_key *k)
{
    memset(k, 0, sizeof *k);
    k->op = op;
    k->n = n, k->c_in = c->c_in, k->c_out = c->c_out, k->h = h, k->w = w;
    conv_out(c, h, w, &k->oh, &k->ow);
    k->kh = c->kh, k->kw = c->kw, k->stride = c->stride, k->pad = c->pad;
    k->dtype = ctx->dtype;
    k->nhwc = ctx->layout == QT_CUDA_NHWC;
    k->krsc = k->nhwc;
    k->align_x = qt_cuda_align_of(x, 16);
    k->align_w = qt_cuda_align_of(wt, 16);
    k->align_y = qt_cuda_align_of(y, 16);
}

static void conv_check_shape(const qt_conv *c, int n, int h, int w)
{
    int oh, ow;
    conv_out(c, h, w, &oh, &ow);
    QT_ASSERT(n > 0 && oh > 0 && ow > 0);
    QT_ASSERT((size_t)n * c->c_in * h * w <= QT_CUDA_MAX_ELEMS);
    QT_ASSERT((size_t)n * c->c_out * oh * ow <= QT_CUDA_MAX_ELEMS);
}

static size_t conv_weights(const qt_conv *c) { return (size_t)c->c_out * c->c_in * c->kh * c->kw; }

/* Staged weights: fp32 KCRS -> activation type, KRSC when NHWC. */
static int conv_stage_weights(qt_cuda_ctx *ctx, const qt_conv *c, void *dst)
{
    return qt_cuda_convert(ctx, c->w, QT_CUDA_DT_F32, QT_CUDA_NCHW, dst, ctx->dtype, ctx->layout, c->c_out, c->c_in,
                           c->kh * c->kw);
}

extern "C" int qt_cuda_conv_forward(qt_cuda_ctx *ctx, const qt_conv *c, const void *x, void *y, int n, int h, int w)
{
    conv_check_shape(c, n, h, w);
    void *wt = c->w;
    if (conv_stages(ctx)) {
        if (qt_cuda_scratch(ctx, conv_weights(c) * qt_cuda_dtype_bytes(ctx->dtype), &wt)) return -1;
        if (conv_stage_weights(ctx, c, wt)) return -1;
    }
    qt_conv_key k;
    conv_key(ctx, c, QT_CONV_FWD, n, h, w, x, wt, y, &k);
    if (qt_cudnn_conv(ctx, &k, (void *)x, wt, y)) return -1;
    if (c->b && qt_cuda_add_channel_bias(ctx, y, c->b, n, c->c_out, k.oh * k.ow)) return -1;
    return 0;
}

extern "C" int qt_cuda_conv_backward(qt_cuda_ctx *ctx, const qt_conv *c, const void *x, const void *dy, void *dx,
                                     int n, int h, int w)
{
    conv_check_shape(c, n, h, w);
    int oh, ow;
    conv_out(c, h, w, &oh, &ow);
    const bool stage = conv_stages(ctx);
    const size_t wbytes = qt_cuda_round256(conv_weights(c) * qt_cuda_dtype_bytes(ctx->dtype));
    const size_t red = c->db ? qt_cuda_chansum_scratch_bytes(ctx, n, c->c_out, oh * ow) : 0;
    void *base = NULL;
    if (qt_cuda_scratch(ctx, (stage ? 2 * wbytes : 0) + red, &base)) return -1;
    char *cur = (char *)base;
    void *w_stage = stage ? qt_cuda_carve(&cur, wbytes) : NULL;
    void *dw_stage = stage ? qt_cuda_carve(&cur, wbytes) : NULL;
    void *red_scratch = c->db ? (void *)cur : NULL;

    if (c->db && qt_cuda_chansum(ctx, dy, n, c->c_out, oh * ow, c->db, red_scratch)) return -1;

    qt_conv_key k;
    void *dwt = stage ? dw_stage : (void *)c->dw;
    conv_key(ctx, c, QT_CONV_WGRAD, n, h, w, x, dwt, dy, &k);
    if (qt_cudnn_conv(ctx, &k, (void *)x, dwt, (void *)dy)) return -1;
    if (stage && qt_cuda_convert(ctx, dw_stage, ctx->dtype, ctx->layout, c->dw, QT_CUDA_DT_F32, QT_CUDA_NCHW,
                                 c->c_out, c->c_in, c->kh * c->kw))
        return -1;

    if (!dx) return 0;
    void *wt = c->w;
    if (stage) {
        if (conv_stage_weights(ctx, c, w_stage)) return -1;
        wt = w_stage;
    }
    conv_key(ctx, c, QT_CONV_DGRAD, n, h, w, dx, wt, dy, &k);
    return qt_cudnn_conv(ctx, &k, dx, wt, (void *)dy);
}
