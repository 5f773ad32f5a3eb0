/* model.h — networks built from the [model] section, and the arenas they own.
 *
 * A model is a straight-line program of ops (conv, bn, relu, pool, add, linear) over
 * activation slots, run forward in order and backward in reverse. Parameters, gradients
 * (and, owned by the trainer, residuals and optimizer state) are each ONE contiguous
 * arena with identical offsets, laid out in BACKWARD order: the classifier's weights sit
 * at offset 0, the stem convolution's at the end. So after backward of each op the grad
 * arena is final on [0, watermark) and the watermark only grows: the exchange engine
 * sends buckets from the front while backward works on the layers below.
 *
 * The model knows no MPI and no codec: backward reports the watermark through a callback.
 */
#ifndef QT_NN_MODEL_H
#define QT_NN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { QT_ARCH_RESNET = 0, QT_ARCH_ALEXNET, QT_ARCH_VGG, QT_ARCH_LSTM } qt_arch;
typedef enum { QT_VARIANT_CIFAR = 0, QT_VARIANT_IMAGENET } qt_variant;

typedef struct { /* [model] section */
    qt_arch arch;
    int depth;
    qt_variant variant;
    int classes;
    int in_channels, in_height, in_width; /* input shape; the trainer sets it from the data set */
    float label_smoothing;
    float bn_momentum, bn_eps;
    bool zero_init_residual; /* last BN of each residual branch starts at gamma 0 */
    float dropout;           /* alexnet/vgg classifier dropout probability */
    bool batchnorm;          /* resnet: false leaves the BatchNorm layers out (tests of
                                data-parallel equivalence, where batch statistics differ) */
    /* lstm (speech): stacked LSTM(P) over frames of in_channels inputs -> linear -> classes */
    int layers, hidden, proj;
    int inputs;              /* inputs per frame; 0 = the data set's (dim after context splicing) */
    bool peephole, bidirectional;
    int max_frames;          /* longest chunk forward will see (the trainer sets it) */
} qt_model_opts;

void qt_model_opts_default(qt_model_opts *o);

/* One parameter tensor in arena order. */
typedef struct {
    char name[48];
    size_t offset, count;
    int ndim;
    int shape[4];
    bool decay; /* false for BN and bias parameters */
} qt_param_span;

typedef struct qt_model qt_model;

/* Builds the layer program and the arena layout (no memory for data yet).
 * Errors (unsupported depth, ...) print one line and return < 0. */
int qt_model_create(const qt_model_opts *o, qt_model **out);
void qt_model_destroy(qt_model *m);

size_t qt_model_param_count(const qt_model *m);
size_t qt_model_buffer_count(const qt_model *m); /* BN running stats */
/* Forward multiply-adds x 2 per sample, counting convolutions and linear layers. */
uint64_t qt_model_flops_per_sample(const qt_model *m);
const qt_param_span *qt_model_spans(const qt_model *m, int *n);
/* Prints one line per op (name, output shape, params) and the totals (for --dry-run). */
void qt_model_print(const qt_model *m, int batch);

/* Allocates the param, grad and buffer arenas and the activations for batches up to
 * max_batch. Must be called before init/forward. */
void qt_model_alloc(qt_model *m, int max_batch);
float *qt_model_params(qt_model *m);
float *qt_model_grads(qt_model *m);
float *qt_model_buffers(qt_model *m);

/* Kaiming normal (fan_out) convs, BN gamma 1 beta 0, PyTorch's default for linear,
 * all from Philox(seed, QT_RNG_INIT) so the same seed gives the same model. */
void qt_model_init(qt_model *m, uint64_t seed);

/* Keys the dropout masks of the next forward/backward: masks are a pure function of
 * (seed, step, element), so a resumed run draws the same masks and backward recomputes
 * them instead of storing them. */
void qt_model_set_step(qt_model *m, uint64_t seed, uint32_t step);

/* train.debug_layers: print each op's mean |output| in forward and mean |gradient| of its
 * output in backward on stderr (to find where a NaN or an explosion starts). */
void qt_model_set_debug(qt_model *m, bool on);

/* Forward pass of n samples x [n][c][h][w] with labels; returns the mean loss.
 * train: BN uses batch statistics (and updates running stats) and activations are kept
 * for backward. correct1/correct5 (may be NULL) receive the top-1/top-5 hit counts. */
float qt_model_forward(qt_model *m, const float *x, const int32_t *labels, int n, bool train,
                       int *correct1, int *correct5);

/* Sequence models (arch = lstm): forward over a time-major padded chunk x [t][n][dim]
 * with per-sequence lengths, frame labels y [t][n] (-1 or anything on padding) and mask
 * [t][n] (1 = real frame). carry: start from the states the previous call ended with
 * (the next chunk of the same utterances, truncated BPTT); false: from zeros. Returns the
 * mean loss over real frames; *correct and *frames count real frames right and in all. */
float qt_model_forward_seq(qt_model *m, const float *x, const int32_t *lengths, const int32_t *y,
                           const float *mask, int t, int n, bool train, bool carry, int64_t *correct,
                           int64_t *frames);
bool qt_model_is_sequence(const qt_model *m);

typedef void (*qt_grad_ready_fn)(void *ctx, size_t watermark);
/* Backward of the last training forward; writes the whole grad arena. After each op with
 * parameters, calls ready(ctx, w): grads [0, w) are final. ready may be NULL. */
void qt_model_backward(qt_model *m, qt_grad_ready_fn ready, void *ctx);

/* Ops in forward order, for profiles (--profile) and debugging. */
int qt_model_n_ops(const qt_model *m);
typedef struct {
    const char *name, *kind;
    size_t param_offset, param_count; /* the op's parameters in the arenas */
    int out_c, out_h, out_w;          /* per-sample output shape */
    uint64_t flops_per_sample;        /* forward multiply-adds x 2 (conv, linear) */
    double t_forward, t_backward;     /* seconds of the op in the last forward/backward */
} qt_op_info;
void qt_model_op_info(const qt_model *m, int i, qt_op_info *info);

#endif
