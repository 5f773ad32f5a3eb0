/* cuda_internal.h — what the .cu files of src/nn/cuda share and nobody else sees: the
 * context's fields, the scratch/workspace arenas, the cuDNN convolution-plan entry point,
 * the per-channel reduction used by BN and conv bias, element load/store by dtype.
 * C++ (nvcc) only.
 *
 * Arenas (both owned by the context, both used in stream order, see cuda_ctx.h):
 * - scratch: our own kernels' temporaries (staged bf16/KRSC weights, reduction partials,
 *   per-channel coefficients). A layer call takes it ONCE, for everything it needs, via
 *   qt_cuda_scratch(): a second call may move it.
 * - workspace: what cuDNN and cuBLASLt ask for. Growing it never touches scratch, so a
 *   conv can stage its weights in scratch and then let cuDNN size its workspace.
 */
#ifndef QT_NN_CUDA_INTERNAL_H
#define QT_NN_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn_graph.h>
#include <stdint.h>

extern "C" {
#include "core/qt.h"
#include "nn/layers.h"
#include "nn/optim.h"
}
#include "nn/cuda/cuda_check.h"
#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/fastdiv.h"

/* ---- convolution plans (cudnn_plan.cu) ---- */

typedef enum { QT_CONV_FWD = 0, QT_CONV_DGRAD = 1, QT_CONV_WGRAD = 2 } qt_conv_op;

/* Everything that selects a cuDNN execution plan. Zero the whole struct before filling it:
 * the cache compares keys bytewise. */
typedef struct {
    int32_t op;
    int32_t n, c_in, c_out, h, w, oh, ow, kh, kw, stride, pad;
    int32_t dtype;        /* qt_cuda_dtype of x, w and y */
    int32_t nhwc;         /* x and y NHWC (else NCHW) */
    int32_t krsc;         /* w [c_out][kh][kw][c_in] (else [c_out][c_in][kh][kw]) */
    int32_t align_x, align_w, align_y; /* byte alignment of the pointers, capped at 16 */
} qt_conv_key;

typedef struct qt_conv_plan qt_conv_plan; /* opaque, lives in the context's cache */

/* Runs the convolution `key->op` with alpha = 1, beta = 0 (the output is overwritten):
 *   FWD: y = conv(x, w);  DGRAD: x = conv_data_grad(w, y = dy);  WGRAD: w = conv_filter_grad(x, y = dy).
 * The first call for a key builds the heuristic's candidate plans, times them on these
 * buffers, and caches the fastest; later calls reuse it. */
int qt_cudnn_conv(qt_cuda_ctx *ctx, const qt_conv_key *key, void *x, void *w, void *y);
void qt_cudnn_plans_destroy(qt_cuda_ctx *ctx);

/* ---- matmul plans (linear_cuda.cu) ---- */
typedef struct qt_mm_plan qt_mm_plan;
void qt_lt_plans_destroy(qt_cuda_ctx *ctx);

struct qt_cuda_ctx {
    qt_cuda_opts opts;
    qt_cuda_precision prec;
    qt_cuda_dtype dtype;
    qt_cuda_layout layout;
    int device, sm_count;
    char name[256];
    cudaStream_t stream, side;
    cudaEvent_t ev_start, ev_stop;      /* autotune timing */
    cudnnHandle_t cudnn;
    cudnnBackendDescriptor_t devprop;   /* NULL when the library refused it */
    cublasLtHandle_t lt;
    void *scratch, *ws;
    size_t scratch_bytes, ws_bytes;
    qt_conv_plan **conv;                /* cache: n_conv entries, each malloc'd */
    int n_conv, cap_conv, conv_candidates;
    qt_mm_plan **mm;
    int n_mm, cap_mm;
};

/* Pointers to at least `bytes` of the scratch / workspace arena (grown if needed; 256-byte
 * aligned). Returns -1 with a message when growing is impossible (allocation failure, or
 * the stream is being captured). */
int qt_cuda_scratch(qt_cuda_ctx *ctx, size_t bytes, void **out);
int qt_cuda_workspace(qt_cuda_ctx *ctx, size_t bytes, void **out);
/* *capturing = whether the compute stream is being captured into a graph. */
int qt_cuda_capturing(qt_cuda_ctx *ctx, bool *capturing);

/* Carves `bytes` (rounded up to 256) off the front of *cursor and returns the old front. */
static inline void *qt_cuda_carve(char **cursor, size_t bytes)
{
    void *p = *cursor;
    *cursor += (bytes + 255) & ~(size_t)255;
    return p;
}
static inline size_t qt_cuda_round256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Largest power of two <= cap dividing the address (cap itself for NULL). */
static inline int qt_cuda_align_of(const void *p, int cap)
{
    uintptr_t a = (uintptr_t)p;
    int al = cap;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

/* Blocks for a grid-stride loop over `count` items with `threads` per block: enough to fill
 * the device several times over, never more than the items need. */
static inline unsigned qt_cuda_blocks(const qt_cuda_ctx *ctx, size_t count, int threads)
{
    size_t need = (count + (size_t)threads - 1) / (size_t)threads;
    size_t cap = (size_t)ctx->sm_count * 8;
    if (need > cap) need = cap;
    return need ? (unsigned)need : 1u;
}

/* Index arithmetic runs in 32 bits (fastdiv.h): every tensor stays below 2^31 elements. */
#define QT_CUDA_MAX_ELEMS ((size_t)INT32_MAX)

/* ---- element access by dtype ---- */
__device__ __forceinline__ float qt_ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float qt_ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void qt_st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void qt_st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

/* ---- per-channel reductions (bn_cuda.cu) ----
 * Sums over the n*hw elements of each channel of an activation in the context's layout,
 * in fixed-size chunks whose float partials are combined in double, in chunk order, by
 * one thread per channel: deterministic for a given shape and device. */
size_t qt_cuda_chansum_scratch_bytes(const qt_cuda_ctx *ctx, int n, int c, int hw);
/* out[ch] = sum of dy over channel ch (conv bias gradient). scratch: the bytes above. */
int qt_cuda_chansum(qt_cuda_ctx *ctx, const void *dy, int n, int c, int hw, float *out, void *scratch);
/* y[.., ch, ..] += b[ch] over an activation in the context's format (conv bias). */
int qt_cuda_add_channel_bias(qt_cuda_ctx *ctx, void *y, const float *b, int n, int c, int hw);

#endif
