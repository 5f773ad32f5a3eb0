/* cuda_ctx.h — one GPU per rank: the device, its streams, the cuDNN and cuBLASLt handles,
 * the scratch and library-workspace arenas, and the caches of cuDNN execution plans and
 * cuBLASLt matmul plans. Every CUDA layer call (layers_cuda.h) takes the context.
 *
 * Precision (train.precision):
 *   fp32  activations fp32; convolutions and matmuls on fp32 units (no TF32 tensor-core,
 *         FFT or Winograd engines): the accuracy reference.
 *   tf32  activations fp32; convolutions and matmuls may round their inputs to TF32.
 *   bf16  activations bf16; convolutions and matmuls in bf16 with fp32 accumulation.
 * In every mode parameters, gradients and optimizer state stay fp32 in their arenas (the
 * master weights): a bf16 convolution casts its weights per call into scratch and casts
 * its weight gradient back into the fp32 grad arena.
 * Layout: NHWC for bf16 (what cuDNN's tensor-core engines are fastest at), NCHW otherwise;
 * opts.layout overrides (the tests run fp32 in NHWC to check the NHWC indexing exactly).
 * Linear layers, the loss and everything after global average pooling stay fp32 [n][k].
 *
 * Invariants:
 * - All work of a context is issued on its compute stream, in order; the scratch and
 *   workspace arenas are therefore reused by every call without further synchronisation.
 * - The arenas grow (synchronising the stream, then reallocating) when a call needs more,
 *   and cuDNN plans are built (timed) on the first call of each shape: run one eager step
 *   before capturing a CUDA graph. A call that would grow an arena or build a plan while
 *   the stream is capturing fails with a message instead.
 * - The context is bound to one device; a thread other than the creator calls
 *   qt_cuda_ctx_bind() before using it.
 */
#ifndef QT_NN_CUDA_CTX_H
#define QT_NN_CUDA_CTX_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QT_CUDA_FP32 = 0, QT_CUDA_TF32 = 1, QT_CUDA_BF16 = 2 } qt_cuda_precision;
typedef enum { QT_CUDA_LAYOUT_AUTO = 0, QT_CUDA_NCHW = 1, QT_CUDA_NHWC = 2 } qt_cuda_layout;
/* Element type of activations (and their gradients) in device memory. */
typedef enum { QT_CUDA_DT_F32 = 0, QT_CUDA_DT_BF16 = 1 } qt_cuda_dtype;

typedef struct {
    qt_cuda_precision precision; /* default fp32 */
    qt_cuda_layout layout;       /* default AUTO: NHWC for bf16, NCHW otherwise */
    bool deterministic;          /* default true: no engine cuDNN marks nondeterministic */
    size_t workspace_limit;      /* bytes one cuDNN or cuBLASLt call may use; default 256 MiB */
    int autotune_candidates;     /* engine configs timed per new conv shape; default 8, 1 = the
                                    heuristic's first that builds */
    bool verbose;                /* one info line per conv plan chosen */
} qt_cuda_opts;

typedef struct qt_cuda_ctx qt_cuda_ctx;

/* Counters for reports and tests. */
typedef struct {
    int conv_plans;         /* cuDNN execution plans cached (one per op and shape) */
    int conv_candidates;    /* engine configs built and timed while choosing them */
    int matmul_plans;       /* cuBLASLt plans cached */
    size_t scratch_bytes;   /* current size of the scratch arena */
    size_t workspace_bytes; /* current size of the library workspace arena */
} qt_cuda_stats;

void qt_cuda_opts_default(qt_cuda_opts *o);

/* GPUs this process sees; 0 when there are none or the driver or runtime is unusable, with
 * *why (if why != NULL) set to a static description ("no CUDA device" or the runtime's error
 * string). Prints nothing. */
int qt_cuda_device_count(const char **why);

/* Opens device rank % count (rank < 0: device 0) for the calling thread and creates the
 * streams, handles and empty caches. On failure prints one line and returns -1. */
int qt_cuda_ctx_create(const qt_cuda_opts *o, int rank, qt_cuda_ctx **out);
/* Waits for the streams, then frees everything; NULL is a no-op. */
void qt_cuda_ctx_destroy(qt_cuda_ctx *ctx);
/* Makes the context's device current on the calling thread. */
int qt_cuda_ctx_bind(const qt_cuda_ctx *ctx);
/* Waits for all work issued on the compute stream. */
int qt_cuda_ctx_sync(qt_cuda_ctx *ctx);

cudaStream_t qt_cuda_ctx_stream(const qt_cuda_ctx *ctx);      /* compute */
cudaStream_t qt_cuda_ctx_side_stream(const qt_cuda_ctx *ctx); /* codecs and transfers */
int qt_cuda_ctx_device(const qt_cuda_ctx *ctx);
const char *qt_cuda_ctx_device_name(const qt_cuda_ctx *ctx);
qt_cuda_precision qt_cuda_ctx_precision(const qt_cuda_ctx *ctx);
qt_cuda_dtype qt_cuda_ctx_dtype(const qt_cuda_ctx *ctx);   /* activations */
qt_cuda_layout qt_cuda_ctx_layout(const qt_cuda_ctx *ctx); /* NCHW or NHWC, never AUTO */
void qt_cuda_ctx_stats(const qt_cuda_ctx *ctx, qt_cuda_stats *s);
size_t qt_cuda_dtype_bytes(qt_cuda_dtype t);
const char *qt_cuda_precision_name(qt_cuda_precision p);

/* Checked device allocation: on failure prints "<what>: cannot allocate N bytes on the GPU"
 * and returns -1 (*p = NULL). qt_cuda_free(NULL) is a no-op. */
int qt_cuda_malloc(void **p, size_t bytes, const char *what);
void qt_cuda_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
