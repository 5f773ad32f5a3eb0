/* layers.h — the CPU layers (fp32, NCHW), forward and backward of each in one file
 * (conv.c, batchnorm.c, relu.c, pool.c, linear.c, add.c, softmax_xent.c).
 *
 * Contract shared by every layer:
 * - Layers are plain structs of settings plus views into the arenas: `w`/`dw` point into
 *   the param and grad arenas, which the model owns. Activations and scratch are passed
 *   in by the caller (the model owns them); a layer allocates nothing per step.
 * - backward OVERWRITES parameter gradients (dw, db, dgamma, dbeta) and dx; it never
 *   accumulates. dx == NULL means the input gradient is not needed (first layer).
 * - Functions never fail: shapes are the model's invariants, checked when it is built.
 * - Threads: C loops use OpenMP; convolutions split the batch over the OpenMP threads,
 *   each calling a single-threaded OpenBLAS sgemm (2x faster than OpenBLAS's own
 *   threads on ResNet-20 shapes, see conv.c). Call qt_nn_set_threads(n) once at start-up,
 *   BEFORE sizing workspaces (qt_conv_workspace_floats reserves one slot per OpenMP
 *   thread). Results are bit-reproducible for a fixed thread count.
 */
#ifndef QT_NN_LAYERS_H
#define QT_NN_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the layers' threads: n OpenMP threads, OpenBLAS single-threaded. Process-wide. */
void qt_nn_set_threads(int n);

/* ---- convolution (im2col + sgemm), any kernel, stride, padding ---- */
typedef struct {
    int c_in, c_out, kh, kw, stride, pad; /* same stride and padding in both dimensions */
    float *w, *dw;                        /* [c_out][c_in][kh][kw] */
    float *b, *db;                        /* [c_out], NULL when the conv has no bias */
} qt_conv;

void qt_conv_out_hw(const qt_conv *c, int h, int w, int *oh, int *ow);
/* Scratch floats forward/backward need for a batch of n images of h x w. */
size_t qt_conv_workspace_floats(const qt_conv *c, int n, int h, int w);
/* x: [n][c_in][h][w] -> y: [n][c_out][oh][ow]. */
void qt_conv_forward(const qt_conv *c, const float *x, float *y, int n, int h, int w, float *ws);
/* Writes dw (and db), and dx unless NULL. */
void qt_conv_backward(const qt_conv *c, const float *x, const float *dy, float *dx, int n, int h,
                      int w, float *ws);

/* ---- batch normalisation (PyTorch semantics) ---- */
typedef struct {
    int c;
    float eps;      /* 1e-5 */
    float momentum; /* 0.1: running = (1-m)*running + m*batch; running_var uses the unbiased batch variance */
    float *gamma, *beta, *dgamma, *dbeta; /* params/grads [c] */
    float *running_mean, *running_var;    /* buffers [c] (checkpointed, not exchanged) */
    float *save_mean, *save_invstd;       /* scratch [c] written by forward(training) for backward */
} qt_bn;

/* x, y: [n][c][hw]. training: batch statistics (and running update); else running stats. */
void qt_bn_forward(qt_bn *l, const float *x, float *y, int n, int hw, bool training);
/* Uses save_mean/save_invstd from the training forward of the same x. dx may alias dy. */
void qt_bn_backward(const qt_bn *l, const float *x, const float *dy, float *dx, int n, int hw);
/* Fused y = relu(bn(x)) and its backward from the output y and dy =
 * dL/dy: bit-identical to qt_bn_forward + qt_relu_forward and to qt_relu_backward +
 * qt_bn_backward, one pass over the activation fewer each way. dx may alias dy. */
void qt_bn_relu_forward(qt_bn *l, const float *x, float *y, int n, int hw, bool training);
void qt_bn_relu_backward(const qt_bn *l, const float *x, const float *y, const float *dy, float *dx,
                         int n, int hw);

/* ---- ReLU (in place allowed: y == x, dx == dy) ---- */
void qt_relu_forward(const float *x, float *y, size_t count);
/* Uses the forward OUTPUT y: dx = dy * (y > 0). */
void qt_relu_backward(const float *y, const float *dy, float *dx, size_t count);

/* ---- max pool (k x k, stride, pad; padded cells never win) ---- */
typedef struct {
    int k, stride, pad;
} qt_maxpool;
void qt_maxpool_out_hw(const qt_maxpool *p, int h, int w, int *oh, int *ow);
/* x: [n][c][h][w] -> y: [n][c][oh][ow]; argmax[n*c*oh*ow] records the input index (within the plane) of each max. */
void qt_maxpool_forward(const qt_maxpool *p, const float *x, float *y, int32_t *argmax, int n, int c,
                        int h, int w);
void qt_maxpool_backward(const qt_maxpool *p, const float *dy, const int32_t *argmax, float *dx, int n,
                         int c, int h, int w);

/* ---- global average pool: [n][c][hw] -> [n][c] ---- */
void qt_gap_forward(const float *x, float *y, int n, int c, int hw);
void qt_gap_backward(const float *dy, float *dx, int n, int c, int hw);

/* ---- fully connected: y = x W^T + b ---- */
typedef struct {
    int in, out;
    float *w, *dw; /* [out][in] */
    float *b, *db; /* [out], NULL when no bias */
} qt_linear;
void qt_linear_forward(const qt_linear *l, const float *x, float *y, int n);
void qt_linear_backward(const qt_linear *l, const float *x, const float *dy, float *dx, int n);

/* ---- residual add: y = a + b (y may alias a or b); backward: both inputs get dy ---- */
void qt_add_forward(const float *a, const float *b, float *y, size_t count);
/* dst += src (accumulating the shortcut's gradient into the main branch's). */
void qt_add_inplace(float *dst, const float *src, size_t count);

/* ---- softmax cross-entropy over n rows of k logits ----
 * labels[i] in [0,k); mask (NULL = all ones) weights rows (padded frames get 0).
 * Label smoothing eps: target = (1-eps)*onehot + eps/k (PyTorch semantics).
 * forward returns the mean loss over rows with mask > 0 and writes the softmax to probs
 * [n][k]; backward writes dlogits = mask*(probs - target)/count. */
float qt_softmax_xent_forward(const float *logits, const int32_t *labels, const float *mask,
                              float smoothing, float *probs, int n, int k);
void qt_softmax_xent_backward(const float *probs, const int32_t *labels, const float *mask,
                              float smoothing, float *dlogits, int n, int k);
/* Counts rows (mask > 0) whose label is among the top-`topk` logits (ties: lower index first). */
int qt_topk_correct(const float *logits, const int32_t *labels, const float *mask, int n, int k,
                    int topk);

#endif
