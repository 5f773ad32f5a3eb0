/* layers_cuda.h — the CUDA twins of nn/layers.h and of the SGD/Adam step of nn/optim.h.
 *
 * Same contract as the CPU layers (layers.h), with these differences:
 * - Every pointer is device memory. The layer structs are the CPU ones (qt_conv, qt_bn,
 *   qt_maxpool, qt_linear): their w/dw/b/db/gamma/... point into the DEVICE arenas, fp32.
 * - Activations and their gradients (`void *`) are in the context's format: element type
 *   qt_cuda_ctx_dtype() (fp32 or bf16) and layout qt_cuda_ctx_layout() (NCHW or NHWC).
 *   Exceptions, always fp32 row-major: the output of global average pooling and its
 *   gradient ([n][c]), linear layers' inputs and outputs ([n][features]), logits,
 *   probabilities and their gradients ([n][k]).
 * - Calls are asynchronous on the context's compute stream and return 0, or -1 after
 *   printing one line (a CUDA/cuDNN/cuBLAS error, an arena that cannot grow, no cuDNN
 *   engine for a shape, or a plan needed during graph capture). Scalars that the CPU
 *   layers return (loss, correct count) are written to device memory instead, so a step
 *   never waits for the GPU; read them when logging.
 * - Same semantics: backward OVERWRITES parameter gradients and dx; dx == NULL skips the
 *   input gradient; the same in-place aliasing is allowed (relu y == x and dx == dy,
 *   add y == a or b, bn dx == dy).
 * - Results are deterministic for a given shape, device and context options (fixed-order
 *   reductions, no atomics on floats, nondeterministic cuDNN engines excluded by default).
 *   They are not bitwise equal to the CPU's: see tests/test_cuda_layers.c for the
 *   tolerance each precision is held to.
 */
#ifndef QT_NN_CUDA_LAYERS_CUDA_H
#define QT_NN_CUDA_LAYERS_CUDA_H

#include "nn/cuda/cuda_ctx.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "nn/layers.h"
#include "nn/optim.h"

/* ---- format conversion ----
 * dst = src converted between element types and layouts, for n images of c channels of hw
 * pixels: the input batch (fp32 NCHW from the loader) into the context's format, and back
 * for inspection. Rounding to bf16 is round-to-nearest-even. src and dst must not overlap. */
int qt_cuda_convert(qt_cuda_ctx *ctx, const void *src, qt_cuda_dtype src_type, qt_cuda_layout src_layout,
                    void *dst, qt_cuda_dtype dst_type, qt_cuda_layout dst_layout, int n, int c, int hw);

/* ---- convolution (cuDNN; plan chosen by timing on the first call of each shape) ----
 * x: [n][c_in][h][w] -> y: [n][c_out][oh][ow] (oh, ow as qt_conv_out_hw). In bf16 the fp32
 * weights are cast per call into scratch (KRSC for NHWC), and the weight gradient is
 * computed in bf16 and widened into dw (fp32, [c_out][c_in][kh][kw]). */
int qt_cuda_conv_forward(qt_cuda_ctx *ctx, const qt_conv *c, const void *x, void *y, int n, int h, int w);
/* Writes dw (and db), and dx unless NULL. */
int qt_cuda_conv_backward(qt_cuda_ctx *ctx, const qt_conv *c, const void *x, const void *dy, void *dx, int n,
                          int h, int w);

/* ---- batch normalisation (PyTorch semantics, as qt_bn_forward) ----
 * Statistics in fp32/double whatever the activation type; gamma, beta, running and saved
 * statistics are fp32 device vectors. relu: fused y = max(bn(x), 0) and its backward from
 * the output y (y is ignored when !relu and may be NULL). */
int qt_cuda_bn_forward(qt_cuda_ctx *ctx, qt_bn *l, const void *x, void *y, int n, int hw, bool training,
                       bool relu);
int qt_cuda_bn_backward(qt_cuda_ctx *ctx, const qt_bn *l, const void *x, const void *y, const void *dy, void *dx,
                        int n, int hw, bool relu);

/* ---- elementwise (count elements of the activation type) ---- */
int qt_cuda_relu_forward(qt_cuda_ctx *ctx, const void *x, void *y, size_t count);
int qt_cuda_relu_backward(qt_cuda_ctx *ctx, const void *y, const void *dy, void *dx, size_t count);
int qt_cuda_add_forward(qt_cuda_ctx *ctx, const void *a, const void *b, void *y, size_t count);
int qt_cuda_add_inplace(qt_cuda_ctx *ctx, void *dst, const void *src, size_t count);

/* ---- pooling ----
 * Max pool as qt_maxpool_forward (padded cells never win, ties to the first cell in
 * row-major order, NaN wins); argmax (int32, laid out like y) holds the winner's index
 * iy*w + ix within its plane. Backward gathers, per input cell, the dy of the windows it
 * won in row-major window order: the CPU's scatter order, without atomics. */
int qt_cuda_maxpool_forward(qt_cuda_ctx *ctx, const qt_maxpool *p, const void *x, void *y, int32_t *argmax, int n,
                            int c, int h, int w);
int qt_cuda_maxpool_backward(qt_cuda_ctx *ctx, const qt_maxpool *p, const void *dy, const int32_t *argmax,
                             void *dx, int n, int c, int h, int w);
/* Global average pool: x (activation format, [n][c][hw]) -> y fp32 [n][c]. */
int qt_cuda_gap_forward(qt_cuda_ctx *ctx, const void *x, float *y, int n, int c, int hw);
int qt_cuda_gap_backward(qt_cuda_ctx *ctx, const float *dy, void *dx, int n, int c, int hw);

/* ---- fully connected (cuBLASLt): y[n][out] = x[n][in] . W^T + b, fp32 in and out; the
 * precision picks the compute type (fp32: CUBLAS_COMPUTE_32F, tf32: _FAST_TF32, bf16:
 * _FAST_16BF). Bias and its gradient by our kernels (db summed in double, fixed order). */
int qt_cuda_linear_forward(qt_cuda_ctx *ctx, const qt_linear *l, const float *x, float *y, int n);
int qt_cuda_linear_backward(qt_cuda_ctx *ctx, const qt_linear *l, const float *x, const float *dy, float *dx,
                            int n);

/* ---- softmax cross-entropy (as qt_softmax_xent_forward/backward), fp32 [n][k] ----
 * labels int32 [n] in [0, k) (a row with a label outside gets a NaN loss and NaN
 * gradient instead of reading out of bounds); mask NULL or fp32 [n]. forward writes probs
 * and *loss (device float: mean over rows with mask > 0, 0 when there are none). */
int qt_cuda_softmax_xent_forward(qt_cuda_ctx *ctx, const float *logits, const int32_t *labels, const float *mask,
                                 float smoothing, float *probs, int n, int k, float *loss);
int qt_cuda_softmax_xent_backward(qt_cuda_ctx *ctx, const float *probs, const int32_t *labels, const float *mask,
                                  float smoothing, float *dlogits, int n, int k);
/* *correct (device int32, overwritten) = rows with mask > 0 whose label is among the
 * top-`topk` logits (ties: lower index first), as qt_topk_correct. */
int qt_cuda_topk_correct(qt_cuda_ctx *ctx, const float *logits, const int32_t *labels, const float *mask, int n,
                         int k, int topk, int32_t *correct);

/* ---- optimizer: one fused launch over every param group of the arena ----
 * Same update as qt_optim_step (SGD with or without momentum, Nesterov, Adam; weight decay
 * only on groups with decay), written with round-to-nearest intrinsics in the CPU's
 * operation order, so no multiply-add is contracted and each element matches the CPU's
 * fp32 result. lr and the step count live in device memory, so a captured CUDA graph
 * replays with the values of the latest qt_cuda_optim_set_lr (called outside the capture). */
typedef struct qt_cuda_optim qt_cuda_optim;
/* Copies the groups into a device tile table; o and the group layout are fixed for the
 * object's life (o->kind, momentum, nesterov, weight_decay, betas, eps). */
int qt_cuda_optim_create(qt_cuda_ctx *ctx, const qt_optim_opts *o, const qt_param_group *groups, int n_groups,
                         size_t n_total, qt_cuda_optim **out);
void qt_cuda_optim_destroy(qt_cuda_optim *op);
/* Sets the learning rate and the 1-based step t (Adam's bias corrections) of the next steps. */
int qt_cuda_optim_set_lr(qt_cuda_optim *op, float lr, int64_t t);
/* params, grads: the arenas (n_total floats); state: qt_optim_state_floats(o, n_total) floats,
 * zeroed before the first step (NULL when that is 0). */
int qt_cuda_optim_step(qt_cuda_optim *op, float *params, const float *grads, float *state);

/* As qt_clip_grad_norm on grads[0..n) (device): writes the l2 norm before clipping to *norm
 * (device float; NULL = not wanted) and, when max_norm > 0 and the norm exceeds it,
 * multiplies the gradients by max_norm / (norm + 1e-6), all without waiting for the GPU. */
int qt_cuda_clip_grad_norm(qt_cuda_ctx *ctx, float *grads, size_t n, float max_norm, float *norm);

#ifdef __cplusplus
}
#endif

#endif
