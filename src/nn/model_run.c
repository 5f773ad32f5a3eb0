/* model_run.c — forward and backward over the op program (see model.h, model_priv.h).
 *
 * Gradients into a slot that several ops read (a block input feeds the residual branch
 * and the shortcut) are accumulated: the first op to reach the slot in backward writes
 * it, later ones write into scratch and add.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "nn/model_priv.h"

static size_t slot_elems(const model_slot *s) { return (size_t)s->c * (size_t)s->h * (size_t)s->w; }

/* train.debug_layers: one line per op with the mean |value| of a buffer (NaN shows as nan). */
static void debug_line(const char *what, const model_op *op, const float *v, size_t count)
{
    double s = 0;
    for (size_t i = 0; i < count; i++) s += fabs((double)v[i]);
    fprintf(stderr, "debug: %-8s %-28s mean|.| %.6g\n", what, op->name, count ? s / (double)count : 0.0);
}

/* Inverted dropout, in place: y = x * keep / (1 - p), keep drawn from Philox keyed by
 * (seed, step) and the element's index in the batch; backward recomputes the same mask. */
static void dropout_apply(const qt_model *m, int op_index, float p, float *x, size_t count)
{
    qt_philox_key key = qt_philox_make_key(m->rng_seed, QT_RNG_DROPOUT);
    const float scale = 1.0f / (1.0f - p);
    /* The op index separates the masks of different dropout layers. */
    #pragma omp parallel for schedule(static)
    for (size_t b = 0; b < (count + 3) / 4; b++) {
        uint32_t r[4];
        qt_philox_block(key, b, m->rng_step, (uint32_t)op_index, r);
        for (size_t k = 4 * b; k < 4 * b + 4 && k < count; k++)
            x[k] = qt_u32_to_unit(r[k - 4 * b]) < p ? 0.0f : x[k] * scale;
    }
}

float qt_model_forward(qt_model *m, const float *x, const int32_t *labels, int n, bool train, int *correct1,
                       int *correct5)
{
    QT_ASSERT(m->params && n > 0 && n <= m->max_batch && !m->speech);
    m->slots[0].data = (float *)x; /* read only: no op writes slot 0 */
    for (int i = 0; i < m->n_ops; i++) {
        model_op *op = &m->ops[i];
        double t0 = qt_now();
        model_slot *in = &m->slots[op->in], *out = &m->slots[op->out];
        switch (op->kind) {
        case OP_CONV: qt_conv_forward(&op->conv, in->data, out->data, n, in->h, in->w, m->ws); break;
        case OP_BN:
            if (op->fused_relu) qt_bn_relu_forward(&op->bn, in->data, out->data, n, in->h * in->w, train);
            else qt_bn_forward(&op->bn, in->data, out->data, n, in->h * in->w, train);
            break;
        case OP_RELU:
            if (!op->fused_relu) qt_relu_forward(in->data, out->data, slot_elems(in) * (size_t)n);
            break;
        case OP_MAXPOOL:
            qt_maxpool_forward(&op->pool, in->data, out->data, op->argmax, n, in->c, in->h, in->w);
            break;
        case OP_GAP: qt_gap_forward(in->data, out->data, n, in->c, in->h * in->w); break;
        case OP_LINEAR: qt_linear_forward(&op->fc, in->data, out->data, n); break;
        case OP_ADD:
            qt_add_forward(in->data, m->slots[op->in2].data, out->data, slot_elems(in) * (size_t)n);
            break;
        case OP_DROPOUT:
            if (train && op->drop_p > 0) dropout_apply(m, i, op->drop_p, out->data, slot_elems(out) * (size_t)n);
            break;
        }
        op->t_fwd = qt_now() - t0;
        if (m->debug) debug_line("forward", op, out->data, slot_elems(out) * (size_t)n);
    }
    const float *logits = m->slots[m->logits].data;
    int k = m->opts.classes;
    memcpy(m->labels_copy, labels, (size_t)n * sizeof(int32_t));
    float loss = qt_softmax_xent_forward(logits, labels, NULL, m->opts.label_smoothing, m->probs, n, k);
    if (correct1) *correct1 = qt_topk_correct(logits, labels, NULL, n, k, 1);
    if (correct5) *correct5 = k >= 5 ? qt_topk_correct(logits, labels, NULL, n, k, 5) : 0;
    m->last_n = n;
    m->last_train = train;
    return loss;
}

/* Destination for an op's input gradient: the slot's grad if nothing wrote it yet this
 * pass, else scratch (the caller then adds scratch into the slot). */
static float *dx_target(qt_model *m, int slot, bool *accumulate)
{
    model_slot *s = &m->slots[slot];
    *accumulate = s->grad_valid;
    s->grad_valid = true;
    return *accumulate ? m->scratch : s->grad;
}

static void dx_finish(qt_model *m, int slot, bool accumulate, int n)
{
    if (accumulate) qt_add_inplace(m->slots[slot].grad, m->scratch, slot_elems(&m->slots[slot]) * (size_t)n);
}

void qt_model_backward(qt_model *m, qt_grad_ready_fn ready, void *ctx)
{
    if (m->speech) {
        speech_backward(m, ready, ctx);
        return;
    }
    QT_ASSERT(m->last_train && m->last_n > 0);
    int n = m->last_n;
    for (int i = 0; i < m->n_slots; i++) m->slots[i].grad_valid = false;
    model_slot *ls = &m->slots[m->logits];
    qt_softmax_xent_backward(m->probs, m->labels_copy, NULL, m->opts.label_smoothing, ls->grad, n,
                             m->opts.classes);
    ls->grad_valid = true;
    for (int i = m->n_ops - 1; i >= 0; i--) {
        model_op *op = &m->ops[i];
        double t0 = qt_now();
        model_slot *in = &m->slots[op->in], *out = &m->slots[op->out];
        bool need_dx = op->in != 0, acc = false;
        float *dx = NULL;
        /* In-place ops (relu, add into its first input) keep the slot's gradient where it is. */
        if (need_dx && op->in != op->out) dx = dx_target(m, op->in, &acc);
        switch (op->kind) {
        case OP_CONV:
            qt_conv_backward(&op->conv, in->data, out->grad, dx, n, in->h, in->w, m->ws);
            break;
        case OP_BN:
            if (op->fused_relu)
                qt_bn_relu_backward(&op->bn, in->data, out->data, out->grad, dx, n, in->h * in->w);
            else
                qt_bn_backward(&op->bn, in->data, out->grad, dx, n, in->h * in->w);
            break;
        case OP_RELU:
            if (!op->fused_relu) qt_relu_backward(out->data, out->grad, out->grad, slot_elems(out) * (size_t)n);
            break;
        case OP_MAXPOOL:
            qt_maxpool_backward(&op->pool, out->grad, op->argmax, dx, n, in->c, in->h, in->w);
            break;
        case OP_GAP: qt_gap_backward(out->grad, dx, n, in->c, in->h * in->w); break;
        case OP_LINEAR: qt_linear_backward(&op->fc, in->data, out->grad, dx, n); break;
        case OP_DROPOUT:
            if (op->drop_p > 0) dropout_apply(m, i, op->drop_p, out->grad, slot_elems(out) * (size_t)n);
            break;
        case OP_ADD: {
            /* out aliases in: in's gradient is already out->grad; the other input gets a copy. */
            bool acc2;
            size_t cnt = slot_elems(out) * (size_t)n;
            float *d2 = dx_target(m, op->in2, &acc2);
            memcpy(d2, out->grad, cnt * sizeof(float));
            dx_finish(m, op->in2, acc2, n);
            break;
        }
        }
        if (dx) dx_finish(m, op->in, acc, n);
        op->t_bwd = qt_now() - t0;
        if (m->debug) debug_line("backward", op, out->grad, slot_elems(out) * (size_t)n);
        if (ready && op->p_count) ready(ctx, op->p_off + op->p_count);
    }
}
