/* model_priv.h — qt_model internals shared by model.c, model_run.c and the network
 * builders (resnet.c). Not part of the public API. */
#ifndef QT_NN_MODEL_PRIV_H
#define QT_NN_MODEL_PRIV_H

#include "nn/layers.h"
#include "nn/model.h"

typedef enum { OP_CONV, OP_BN, OP_RELU, OP_MAXPOOL, OP_GAP, OP_LINEAR, OP_ADD, OP_DROPOUT } model_op_kind;

typedef struct {
    int c, h, w;      /* per-sample shape */
    float *data;      /* [max_batch][c][h][w]; slot 0 points at the caller's input */
    float *grad;      /* same size */
    bool grad_valid;  /* backward: grad holds a value this pass (else the next writer overwrites) */
} model_slot;

typedef struct {
    model_op_kind kind;
    char name[40];
    int in, in2, out;     /* slots; in2 only for add */
    size_t p_off, p_count; /* parameter range in the arenas */
    size_t b_off, b_count; /* buffer range (BN running stats) */
    bool zero_gamma;       /* BN: zero_init_residual target */
    bool fused_relu;       /* BN: the next op is an in-place ReLU on its output, run fused;
                              RELU: done by the BN before it (skipped) */
    qt_conv conv;
    qt_bn bn;
    qt_maxpool pool;
    qt_linear fc;
    int32_t *argmax;
    float drop_p;          /* dropout probability */
    double t_fwd, t_bwd;   /* seconds in the last step */
} model_op;

typedef struct speech_net speech_net;

struct qt_model {
    qt_model_opts opts;
    speech_net *speech;    /* arch = lstm: the sequence network (speech.c); no ops/slots */
    model_slot *slots;
    int n_slots, cap_slots;
    model_op *ops;
    int n_ops, cap_ops;
    qt_param_span *spans;
    int n_spans, cap_spans;
    int logits;            /* slot of the classifier output */
    size_t n_params, n_buffers;
    int max_batch;
    float *params, *grads, *buffers;
    float *ws;             /* conv workspace */
    float *scratch;        /* one activation: gradients that must be accumulated */
    float *probs;          /* softmax output [max_batch][classes] */
    int32_t *labels_copy;
    int last_n;            /* batch of the last training forward */
    bool debug;            /* qt_model_set_debug */
    uint64_t rng_seed;     /* dropout key (qt_model_set_step) */
    uint32_t rng_step;
    bool last_train;
};

int model_add_slot(qt_model *m, int c, int h, int w);
model_op *model_add_op(qt_model *m, model_op_kind kind, const char *name, int in, int out);
int model_conv(qt_model *m, const char *name, int in, int c_out, int k, int stride, int pad);
int model_conv_bias(qt_model *m, const char *name, int in, int c_out, int k, int stride, int pad);
int model_dropout(qt_model *m, const char *name, int in, float p);
int model_bn(qt_model *m, const char *name, int in);
int model_relu(qt_model *m, const char *name, int in);
int model_add(qt_model *m, const char *name, int a, int b);
int model_maxpool(qt_model *m, const char *name, int in, int k, int stride, int pad);
int model_gap(qt_model *m, const char *name, int in);
int model_linear(qt_model *m, const char *name, int in, int n_out);
/* After all ops are added: arena offsets (backward order) and spans. */
void model_layout(qt_model *m);

/* Builders: append the network's ops to an empty model. */
int resnet_build(qt_model *m);
int alexnet_build(qt_model *m);
int vgg_build(qt_model *m);

/* Sequence network (speech.c): builds its layout and spans, owns its buffers. */
int speech_build(qt_model *m);
void speech_alloc(qt_model *m, int max_batch);
void speech_init(qt_model *m, uint64_t seed);
void speech_backward(qt_model *m, qt_grad_ready_fn ready, void *ctx);
void speech_print(const qt_model *m, int batch);
uint64_t speech_flops_per_frame(const qt_model *m);
void speech_destroy(speech_net *s);
/* Appends a parameter span (model.c). */
void model_add_span(qt_model *m, const char *name, size_t off, size_t count, int ndim, const int *shape,
                    bool decay);

#endif
