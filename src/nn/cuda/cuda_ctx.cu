/* cuda_ctx.cu — the per-rank GPU context (see cuda_ctx.h): device choice, streams, library
 * handles, the two arenas, teardown. */
#include "nn/cuda/cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QT_CUDA_DEFAULT_WS_LIMIT ((size_t)256 << 20)
#define QT_CUDA_ARENA_MIN ((size_t)1 << 20)

extern "C" void qt_cuda_opts_default(qt_cuda_opts *o)
{
    memset(o, 0, sizeof *o);
    o->precision = QT_CUDA_FP32;
    o->layout = QT_CUDA_LAYOUT_AUTO;
    o->deterministic = true;
    o->workspace_limit = QT_CUDA_DEFAULT_WS_LIMIT;
    o->autotune_candidates = 8;
    o->verbose = false;
}

extern "C" const char *qt_cuda_precision_name(qt_cuda_precision p)
{
    switch (p) {
    case QT_CUDA_FP32: return "fp32";
    case QT_CUDA_TF32: return "tf32";
    case QT_CUDA_BF16: return "bf16";
    }
    return "?";
}

extern "C" size_t qt_cuda_dtype_bytes(qt_cuda_dtype t) { return t == QT_CUDA_DT_BF16 ? 2 : 4; }

extern "C" int qt_cuda_device_count(const char **why)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        (void)cudaGetLastError(); /* clear it: the caller treats this as "no GPU" */
        return 0;
    }
    if (n <= 0 && why) *why = "no CUDA device";
    return n > 0 ? n : 0;
}

extern "C" int qt_cuda_malloc(void **p, size_t bytes, const char *what)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return qt_fail("%s: cannot allocate %zu bytes on the GPU (%s)", what, bytes,
                       cudaGetErrorString(e));
    }
    return 0;
}

extern "C" void qt_cuda_free(void *p)
{
    if (p) (void)cudaFree(p);
}

/* The device-properties descriptor replaces the handle attributes cuDNN 9 deprecated on
 * operation graphs and execution plans. Optional: when the library refuses it, plans are
 * built for the current device. */
static void make_devprop(qt_cuda_ctx *ctx)
{
    cudnnBackendDescriptor_t d = NULL;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, 1, &ctx->cudnn) ==
            CUDNN_STATUS_SUCCESS &&
        cudnnBackendFinalize(d) == CUDNN_STATUS_SUCCESS) {
        ctx->devprop = d;
        return;
    }
    if (d) cudnnBackendDestroyDescriptor(d);
    ctx->devprop = NULL;
    if (ctx->opts.verbose) qt_info("cuda: cuDNN device-properties descriptor unavailable; using the current device");
}

extern "C" int qt_cuda_ctx_create(const qt_cuda_opts *o, int rank, qt_cuda_ctx **out)
{
    *out = NULL;
    const char *why = NULL;
    int count = qt_cuda_device_count(&why);
    if (count == 0) return qt_fail("cuda: no usable GPU (%s)", why ? why : "unknown");
    qt_cuda_ctx *ctx = (qt_cuda_ctx *)qt_calloc(1, sizeof *ctx);
    ctx->opts = *o;
    if (ctx->opts.workspace_limit == 0) ctx->opts.workspace_limit = QT_CUDA_DEFAULT_WS_LIMIT;
    if (ctx->opts.autotune_candidates < 1) ctx->opts.autotune_candidates = 1;
    ctx->prec = o->precision;
    ctx->dtype = o->precision == QT_CUDA_BF16 ? QT_CUDA_DT_BF16 : QT_CUDA_DT_F32;
    ctx->layout = o->layout != QT_CUDA_LAYOUT_AUTO ? o->layout
                  : o->precision == QT_CUDA_BF16   ? QT_CUDA_NHWC
                                                   : QT_CUDA_NCHW;
    ctx->device = (rank < 0 ? 0 : rank) % count;
    cudaDeviceProp prop;
    CUDA_CHECK_GOTO(cudaSetDevice(ctx->device), fail);
    CUDA_CHECK_GOTO(cudaGetDeviceProperties(&prop, ctx->device), fail);
    ctx->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    snprintf(ctx->name, sizeof ctx->name, "%s", prop.name);
    CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), fail);
    CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&ctx->side, cudaStreamNonBlocking), fail);
    CUDA_CHECK_GOTO(cudaEventCreate(&ctx->ev_start), fail);
    CUDA_CHECK_GOTO(cudaEventCreate(&ctx->ev_stop), fail);
    CUDNN_CHECK_GOTO(cudnnCreate(&ctx->cudnn), fail);
    CUDNN_CHECK_GOTO(cudnnSetStream(ctx->cudnn, ctx->stream), fail);
    CUBLAS_CHECK_GOTO(cublasLtCreate(&ctx->lt), fail);
    make_devprop(ctx);
    *out = ctx;
    return 0;
fail:
    qt_cuda_ctx_destroy(ctx);
    return -1;
}

extern "C" void qt_cuda_ctx_destroy(qt_cuda_ctx *ctx)
{
    if (!ctx) return;
    (void)cudaSetDevice(ctx->device);
    if (ctx->stream) (void)cudaStreamSynchronize(ctx->stream);
    if (ctx->side) (void)cudaStreamSynchronize(ctx->side);
    qt_cudnn_plans_destroy(ctx);
    qt_lt_plans_destroy(ctx);
    if (ctx->devprop) cudnnBackendDestroyDescriptor(ctx->devprop);
    if (ctx->lt) cublasLtDestroy(ctx->lt);
    if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
    qt_cuda_free(ctx->scratch);
    qt_cuda_free(ctx->ws);
    if (ctx->ev_start) cudaEventDestroy(ctx->ev_start);
    if (ctx->ev_stop) cudaEventDestroy(ctx->ev_stop);
    if (ctx->side) cudaStreamDestroy(ctx->side);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
}

extern "C" int qt_cuda_ctx_bind(const qt_cuda_ctx *ctx)
{
    CUDA_CHECK(cudaSetDevice(ctx->device));
    return 0;
}

extern "C" int qt_cuda_ctx_sync(qt_cuda_ctx *ctx)
{
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return 0;
}

extern "C" cudaStream_t qt_cuda_ctx_stream(const qt_cuda_ctx *ctx) { return ctx->stream; }
extern "C" cudaStream_t qt_cuda_ctx_side_stream(const qt_cuda_ctx *ctx) { return ctx->side; }
extern "C" int qt_cuda_ctx_device(const qt_cuda_ctx *ctx) { return ctx->device; }
extern "C" const char *qt_cuda_ctx_device_name(const qt_cuda_ctx *ctx) { return ctx->name; }
extern "C" qt_cuda_precision qt_cuda_ctx_precision(const qt_cuda_ctx *ctx) { return ctx->prec; }
extern "C" qt_cuda_dtype qt_cuda_ctx_dtype(const qt_cuda_ctx *ctx) { return ctx->dtype; }
extern "C" qt_cuda_layout qt_cuda_ctx_layout(const qt_cuda_ctx *ctx) { return ctx->layout; }

extern "C" void qt_cuda_ctx_stats(const qt_cuda_ctx *ctx, qt_cuda_stats *s)
{
    memset(s, 0, sizeof *s);
    s->conv_plans = ctx->n_conv;
    s->conv_candidates = ctx->conv_candidates;
    s->matmul_plans = ctx->n_mm;
    s->scratch_bytes = ctx->scratch_bytes;
    s->workspace_bytes = ctx->ws_bytes;
}

int qt_cuda_capturing(qt_cuda_ctx *ctx, bool *capturing)
{
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(ctx->stream, &st));
    *capturing = st != cudaStreamCaptureStatusNone;
    return 0;
}

/* Grows an arena to at least `bytes` (1.5x steps, 1 MiB minimum, so a warm-up step settles
 * it after a few calls). Earlier work may still read the old buffer: wait for the stream
 * before freeing it. */
static int arena_get(qt_cuda_ctx *ctx, void **base, size_t *size, size_t bytes, const char *what,
                     void **out)
{
    if (bytes > *size) {
        bool capturing;
        if (qt_cuda_capturing(ctx, &capturing)) return -1;
        if (capturing)
            return qt_fail("cuda: the %s arena must grow from %zu to %zu bytes during CUDA graph "
                           "capture: run one step without capture first", what, *size, bytes);
        size_t grow = *size + *size / 2;
        size_t want = bytes > grow ? bytes : grow;
        if (want < QT_CUDA_ARENA_MIN) want = QT_CUDA_ARENA_MIN;
        want = qt_cuda_round256(want);
        CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
        qt_cuda_free(*base);
        *base = NULL;
        *size = 0;
        if (qt_cuda_malloc(base, want, what)) return -1;
        *size = want;
    }
    *out = *base;
    return 0;
}

int qt_cuda_scratch(qt_cuda_ctx *ctx, size_t bytes, void **out)
{
    return arena_get(ctx, &ctx->scratch, &ctx->scratch_bytes, bytes, "cuda scratch", out);
}

int qt_cuda_workspace(qt_cuda_ctx *ctx, size_t bytes, void **out)
{
    return arena_get(ctx, &ctx->ws, &ctx->ws_bytes, bytes, "cuda workspace", out);
}
