/* model.c — the op program behind qt_model: activation slots, arenas, forward and
 * backward (see model.h). Network builders (resnet.c) append ops through model_priv.h.
 *
 * Invariants: slot 0 is the input; an op's parameters occupy [p_off, p_off + p_count) of
 * every arena, and offsets decrease along the forward order (backward order = arena
 * order), so the watermark reported after an op's backward is p_off + p_count.
 */
#include "nn/model_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"

void qt_model_opts_default(qt_model_opts *o)
{
    memset(o, 0, sizeof *o);
    o->arch = QT_ARCH_RESNET;
    o->depth = 20;
    o->variant = QT_VARIANT_CIFAR;
    o->classes = 10;
    o->in_channels = 3;
    o->in_height = 32;
    o->in_width = 32;
    o->bn_momentum = 0.1f;
    o->bn_eps = 1e-5f;
    o->dropout = 0.5f;
    o->batchnorm = true;
    o->layers = 3;
    o->hidden = 1024;
    o->proj = 512;
    o->peephole = true;
    o->max_frames = 0;
}

int model_add_slot(qt_model *m, int c, int h, int w)
{
    if (m->n_slots == m->cap_slots) {
        m->cap_slots = m->cap_slots ? 2 * m->cap_slots : 64;
        m->slots = realloc(m->slots, (size_t)m->cap_slots * sizeof *m->slots);
        QT_ASSERT(m->slots);
    }
    model_slot *s = &m->slots[m->n_slots];
    memset(s, 0, sizeof *s);
    s->c = c;
    s->h = h;
    s->w = w;
    return m->n_slots++;
}

model_op *model_add_op(qt_model *m, model_op_kind kind, const char *name, int in, int out)
{
    if (m->n_ops == m->cap_ops) {
        m->cap_ops = m->cap_ops ? 2 * m->cap_ops : 64;
        m->ops = realloc(m->ops, (size_t)m->cap_ops * sizeof *m->ops);
        QT_ASSERT(m->ops);
    }
    model_op *op = &m->ops[m->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", name);
    op->in = in;
    op->in2 = -1;
    op->out = out;
    return op;
}

int model_conv(qt_model *m, const char *name, int in, int c_out, int k, int stride, int pad)
{
    const model_slot in_slot = m->slots[in], *s = &in_slot; /* a copy: adding a slot may move the array */
    qt_conv cv = {.c_in = s->c, .c_out = c_out, .kh = k, .kw = k, .stride = stride, .pad = pad};
    int oh, ow;
    qt_conv_out_hw(&cv, s->h, s->w, &oh, &ow);
    QT_ASSERT(oh > 0 && ow > 0);
    int out = model_add_slot(m, c_out, oh, ow);
    model_op *op = model_add_op(m, OP_CONV, name, in, out);
    op->conv = cv;
    op->p_count = (size_t)c_out * (size_t)s->c * (size_t)k * (size_t)k;
    return out;
}

int model_conv_bias(qt_model *m, const char *name, int in, int c_out, int k, int stride, int pad)
{
    int out = model_conv(m, name, in, c_out, k, stride, pad);
    model_op *op = &m->ops[m->n_ops - 1];
    op->p_count += (size_t)c_out;
    op->conv.b = op->conv.db = (float *)op; /* marks "has bias" until model_alloc points it at the arena */
    return out;
}

int model_dropout(qt_model *m, const char *name, int in, float p)
{
    model_op *op = model_add_op(m, OP_DROPOUT, name, in, in); /* in place; the mask is recomputed */
    op->drop_p = p;
    return in;
}

void qt_model_set_debug(qt_model *m, bool on) { m->debug = on; }

void qt_model_set_step(qt_model *m, uint64_t seed, uint32_t step)
{
    m->rng_seed = seed;
    m->rng_step = step;
}

int model_bn(qt_model *m, const char *name, int in)
{
    if (!m->opts.batchnorm) return in; /* [model] batchnorm = false */
    const model_slot in_slot = m->slots[in], *s = &in_slot; /* a copy: adding a slot may move the array */
    int out = model_add_slot(m, s->c, s->h, s->w);
    model_op *op = model_add_op(m, OP_BN, name, in, out);
    op->bn.c = s->c;
    op->bn.eps = m->opts.bn_eps;
    op->bn.momentum = m->opts.bn_momentum;
    op->p_count = 2 * (size_t)s->c;
    op->b_count = 2 * (size_t)s->c;
    return out;
}

int model_relu(qt_model *m, const char *name, int in)
{
    /* BN then ReLU on its output: one fused pass each way (bit-identical to the two). */
    bool fuse = m->n_ops > 0 && m->ops[m->n_ops - 1].kind == OP_BN && m->ops[m->n_ops - 1].out == in;
    if (fuse) m->ops[m->n_ops - 1].fused_relu = true;
    model_op *op = model_add_op(m, OP_RELU, name, in, in); /* in place: backward needs only the output */
    op->fused_relu = fuse;
    return in;
}

int model_add(qt_model *m, const char *name, int a, int b)
{
    QT_ASSERT(m->slots[a].c == m->slots[b].c && m->slots[a].h == m->slots[b].h &&
              m->slots[a].w == m->slots[b].w);
    model_op *op = model_add_op(m, OP_ADD, name, a, a); /* in place into a */
    op->in2 = b;
    return a;
}

int model_maxpool(qt_model *m, const char *name, int in, int k, int stride, int pad)
{
    const model_slot in_slot = m->slots[in], *s = &in_slot; /* a copy: adding a slot may move the array */
    qt_maxpool p = {.k = k, .stride = stride, .pad = pad};
    int oh, ow;
    qt_maxpool_out_hw(&p, s->h, s->w, &oh, &ow);
    int out = model_add_slot(m, s->c, oh, ow);
    model_op *op = model_add_op(m, OP_MAXPOOL, name, in, out);
    op->pool = p;
    return out;
}

int model_gap(qt_model *m, const char *name, int in)
{
    int out = model_add_slot(m, m->slots[in].c, 1, 1);
    model_add_op(m, OP_GAP, name, in, out);
    return out;
}

int model_linear(qt_model *m, const char *name, int in, int n_out)
{
    const model_slot in_slot = m->slots[in], *s = &in_slot; /* a copy: adding a slot may move the array */
    int out = model_add_slot(m, n_out, 1, 1);
    model_op *op = model_add_op(m, OP_LINEAR, name, in, out);
    op->fc.in = s->c * s->h * s->w;
    op->fc.out = n_out;
    op->p_count = (size_t)n_out * (size_t)op->fc.in + (size_t)n_out;
    return out;
}

void model_add_span(qt_model *m, const char *name, size_t off, size_t count, int ndim, const int *shape,
                    bool decay)
{
    if (m->n_spans == m->cap_spans) {
        m->cap_spans = m->cap_spans ? 2 * m->cap_spans : 64;
        m->spans = realloc(m->spans, (size_t)m->cap_spans * sizeof *m->spans);
        QT_ASSERT(m->spans);
    }
    qt_param_span *sp = &m->spans[m->n_spans++];
    memset(sp, 0, sizeof *sp);
    snprintf(sp->name, sizeof sp->name, "%s", name);
    sp->offset = off;
    sp->count = count;
    sp->ndim = ndim;
    for (int i = 0; i < ndim; i++) sp->shape[i] = shape[i];
    sp->decay = decay;
}

static void add_span(qt_model *m, const char *op_name, const char *suffix, size_t off, size_t count, int ndim,
                     const int *shape, bool decay)
{
    char name[sizeof m->spans[0].name];
    snprintf(name, sizeof name, "%s.%s", op_name, suffix);
    model_add_span(m, name, off, count, ndim, shape, decay);
}

/* Assigns arena offsets in backward order and records the spans. */
void model_layout(qt_model *m)
{
    size_t off = 0, boff = 0;
    for (int i = m->n_ops - 1; i >= 0; i--) {
        model_op *op = &m->ops[i];
        op->p_off = off;
        op->b_off = boff;
        switch (op->kind) {
        case OP_LINEAR: {
            int ws[2] = {op->fc.out, op->fc.in}, bs[1] = {op->fc.out};
            add_span(m, op->name, "weight", off, (size_t)op->fc.out * op->fc.in, 2, ws, true);
            add_span(m, op->name, "bias", off + (size_t)op->fc.out * op->fc.in, (size_t)op->fc.out, 1, bs,
                     false);
            break;
        }
        case OP_BN: {
            int bs[1] = {op->bn.c};
            add_span(m, op->name, "weight", off, (size_t)op->bn.c, 1, bs, false);
            add_span(m, op->name, "bias", off + (size_t)op->bn.c, (size_t)op->bn.c, 1, bs, false);
            break;
        }
        case OP_CONV: {
            int ws[4] = {op->conv.c_out, op->conv.c_in, op->conv.kh, op->conv.kw}, bs[1] = {op->conv.c_out};
            size_t wc = (size_t)op->conv.c_out * op->conv.c_in * op->conv.kh * op->conv.kw;
            add_span(m, op->name, "weight", off, wc, 4, ws, true);
            if (op->conv.b) add_span(m, op->name, "bias", off + wc, (size_t)op->conv.c_out, 1, bs, false);
            break;
        }
        default: break;
        }
        off += op->p_count;
        boff += op->b_count;
    }
    m->n_params = off;
    m->n_buffers = boff;
}

int qt_model_create(const qt_model_opts *o, qt_model **out)
{
    *out = NULL;
    if (o->classes < 1) return qt_fail("model: classes must be at least 1 (got %d)", o->classes);
    qt_model *m = qt_calloc(1, sizeof *m);
    m->opts = *o;
    int rc = -1;
    switch (o->arch) {
    case QT_ARCH_RESNET: rc = resnet_build(m); break;
    case QT_ARCH_ALEXNET: rc = alexnet_build(m); break;
    case QT_ARCH_VGG: rc = vgg_build(m); break;
    case QT_ARCH_LSTM: rc = speech_build(m); break;
    }
    if (rc < 0) {
        qt_model_destroy(m);
        return rc;
    }
    if (!m->speech) model_layout(m);
    *out = m;
    return 0;
}

void qt_model_destroy(qt_model *m)
{
    if (!m) return;
    speech_destroy(m->speech);
    for (int i = 0; i < m->n_slots; i++) {
        if (i > 0) qt_free_aligned(m->slots[i].data);
        qt_free_aligned(m->slots[i].grad);
    }
    for (int i = 0; i < m->n_ops; i++) {
        free(m->ops[i].argmax);
        free(m->ops[i].bn.save_mean);
        free(m->ops[i].bn.save_invstd);
    }
    qt_free_aligned(m->params);
    qt_free_aligned(m->grads);
    qt_free_aligned(m->buffers);
    qt_free_aligned(m->ws);
    qt_free_aligned(m->scratch);
    qt_free_aligned(m->probs);
    free(m->labels_copy);
    free(m->slots);
    free(m->ops);
    free(m->spans);
    free(m);
}

size_t qt_model_param_count(const qt_model *m) { return m->n_params; }
size_t qt_model_buffer_count(const qt_model *m) { return m->n_buffers; }
const qt_param_span *qt_model_spans(const qt_model *m, int *n)
{
    *n = m->n_spans;
    return m->spans;
}
float *qt_model_params(qt_model *m) { return m->params; }
float *qt_model_grads(qt_model *m) { return m->grads; }
float *qt_model_buffers(qt_model *m) { return m->buffers; }
int qt_model_n_ops(const qt_model *m) { return m->n_ops; }

static size_t slot_elems(const model_slot *s) { return (size_t)s->c * (size_t)s->h * (size_t)s->w; }

bool qt_model_is_sequence(const qt_model *m) { return m->speech != NULL; }

uint64_t qt_model_flops_per_sample(const qt_model *m)
{
    if (m->speech) return speech_flops_per_frame(m);
    uint64_t f = 0;
    for (int i = 0; i < m->n_ops; i++) {
        const model_op *op = &m->ops[i];
        if (op->kind == OP_CONV)
            f += 2ull * op->conv.c_in * op->conv.kh * op->conv.kw * slot_elems(&m->slots[op->out]);
        else if (op->kind == OP_LINEAR)
            f += 2ull * (uint64_t)op->fc.in * (uint64_t)op->fc.out;
    }
    return f;
}

static const char *kind_name(model_op_kind k)
{
    static const char *names[] = {"conv", "bn", "relu", "maxpool", "avgpool", "linear", "add", "dropout"};
    return names[k];
}

void qt_model_op_info(const qt_model *m, int i, qt_op_info *info)
{
    QT_ASSERT(i >= 0 && i < m->n_ops);
    const model_op *op = &m->ops[i];
    const model_slot *s = &m->slots[op->out];
    info->name = op->name;
    info->kind = kind_name(op->kind);
    info->param_offset = op->p_off;
    info->param_count = op->p_count;
    info->out_c = s->c;
    info->out_h = s->h;
    info->out_w = s->w;
    info->flops_per_sample = 0;
    if (op->kind == OP_CONV)
        info->flops_per_sample = 2ull * op->conv.c_in * op->conv.kh * op->conv.kw * slot_elems(s);
    else if (op->kind == OP_LINEAR)
        info->flops_per_sample = 2ull * (uint64_t)op->fc.in * (uint64_t)op->fc.out;
    info->t_forward = op->t_fwd;
    info->t_backward = op->t_bwd;
}

void qt_model_print(const qt_model *m, int batch)
{
    if (m->speech) {
        speech_print(m, batch);
        return;
    }
    printf("%-28s %-14s %-22s %12s %14s\n", "layer", "kind", "output", "params", "MFLOPs/sample");
    for (int i = 0; i < m->n_ops; i++) {
        const model_op *op = &m->ops[i];
        const model_slot *s = &m->slots[op->out];
        char shape[48];
        snprintf(shape, sizeof shape, "%d x %d x %d x %d", batch, s->c, s->h, s->w);
        double mf = 0;
        if (op->kind == OP_CONV)
            mf = 2e-6 * op->conv.c_in * op->conv.kh * op->conv.kw * (double)slot_elems(s);
        else if (op->kind == OP_LINEAR)
            mf = 2e-6 * (double)op->fc.in * op->fc.out;
        char extra[48] = "";
        if (op->kind == OP_CONV)
            snprintf(extra, sizeof extra, " %dx%d/%d", op->conv.kh, op->conv.kw, op->conv.stride);
        char kind[64];
        snprintf(kind, sizeof kind, "%s%s", kind_name(op->kind), extra);
        printf("%-28s %-14s %-22s %12zu %14.2f\n", op->name, kind, shape, op->p_count, mf);
    }
    size_t bytes = m->n_params * sizeof(float);
    printf("arenas: params %.2f MB, grads %.2f MB, buffers %zu floats\n", bytes / 1e6, bytes / 1e6, m->n_buffers);
    printf("params: %zu\n", m->n_params);
    printf("flops_per_sample: %llu\n", (unsigned long long)qt_model_flops_per_sample(m));
}

void qt_model_alloc(qt_model *m, int max_batch)
{
    QT_ASSERT(max_batch > 0 && !m->params);
    m->max_batch = max_batch;
    m->params = qt_aligned_alloc(m->n_params * sizeof(float));
    m->grads = qt_aligned_alloc(m->n_params * sizeof(float));
    m->buffers = qt_aligned_alloc((m->n_buffers ? m->n_buffers : 1) * sizeof(float));
    if (m->speech) {
        speech_alloc(m, max_batch);
        return;
    }
    size_t ws = 0, biggest = 0;
    for (int i = 0; i < m->n_slots; i++) {
        size_t e = slot_elems(&m->slots[i]) * (size_t)max_batch;
        if (i > 0) m->slots[i].data = qt_aligned_alloc(e * sizeof(float));
        m->slots[i].grad = qt_aligned_alloc(e * sizeof(float));
        if (e > biggest) biggest = e;
    }
    for (int i = 0; i < m->n_ops; i++) {
        model_op *op = &m->ops[i];
        const model_slot *in = &m->slots[op->in];
        float *p = m->params + op->p_off, *g = m->grads + op->p_off;
        switch (op->kind) {
        case OP_CONV: {
            size_t wc = (size_t)op->conv.c_out * op->conv.c_in * op->conv.kh * op->conv.kw;
            op->conv.w = p;
            op->conv.dw = g;
            if (op->conv.b) {
                op->conv.b = p + wc;
                op->conv.db = g + wc;
            }
            size_t need = qt_conv_workspace_floats(&op->conv, max_batch, in->h, in->w);
            if (need > ws) ws = need;
            break;
        }
        case OP_BN:
            op->bn.gamma = p;
            op->bn.beta = p + op->bn.c;
            op->bn.dgamma = g;
            op->bn.dbeta = g + op->bn.c;
            op->bn.running_mean = m->buffers + op->b_off;
            op->bn.running_var = m->buffers + op->b_off + op->bn.c;
            op->bn.save_mean = qt_calloc((size_t)op->bn.c, sizeof(float));
            op->bn.save_invstd = qt_calloc((size_t)op->bn.c, sizeof(float));
            break;
        case OP_LINEAR:
            op->fc.w = p;
            op->fc.dw = g;
            op->fc.b = p + (size_t)op->fc.out * op->fc.in;
            op->fc.db = g + (size_t)op->fc.out * op->fc.in;
            break;
        case OP_MAXPOOL:
            op->argmax = qt_calloc(slot_elems(&m->slots[op->out]) * (size_t)max_batch, sizeof(int32_t));
            break;
        default: break;
        }
    }
    m->ws = qt_aligned_alloc((ws ? ws : 1) * sizeof(float));
    m->scratch = qt_aligned_alloc(biggest * sizeof(float));
    m->probs = qt_aligned_alloc((size_t)max_batch * (size_t)m->opts.classes * sizeof(float));
    m->labels_copy = qt_calloc((size_t)max_batch, sizeof(int32_t));
}

/* Standard normal from two uniforms of one Philox block (Box-Muller, in double). */
static double gauss_at(qt_philox_key key, uint64_t index)
{
    uint32_t r[4];
    qt_philox_block(key, index >> 1, 0, 0, r);
    int lane = (int)(index & 1) * 2;
    double u1 = ((double)r[lane] + 1.0) / 4294967296.0; /* (0, 1] */
    double u2 = (double)r[lane + 1] / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double uniform_at(qt_philox_key key, uint64_t index)
{
    return (double)qt_philox_u32(key, index, 1, 0) / 4294967296.0;
}

void qt_model_init(qt_model *m, uint64_t seed)
{
    if (m->speech) {
        speech_init(m, seed);
        return;
    }
    qt_philox_key key = qt_philox_make_key(seed, QT_RNG_INIT);
    memset(m->buffers, 0, m->n_buffers * sizeof(float));
    for (int i = 0; i < m->n_ops; i++) {
        model_op *op = &m->ops[i];
        float *p = m->params + op->p_off;
        switch (op->kind) {
        case OP_CONV: {
            /* Kaiming normal, fan_out mode, ReLU gain (torchvision's ResNet init). */
            double fan_out = (double)op->conv.c_out * op->conv.kh * op->conv.kw;
            double std = sqrt(2.0 / fan_out);
            size_t wc = (size_t)op->conv.c_out * op->conv.c_in * op->conv.kh * op->conv.kw;
            for (size_t k = 0; k < wc; k++) p[k] = (float)(std * gauss_at(key, op->p_off + k));
            for (size_t k = wc; k < op->p_count; k++) p[k] = 0.0f; /* conv bias (vgg, alexnet) */
            break;
        }
        case OP_BN:
            for (int c = 0; c < op->bn.c; c++) {
                op->bn.gamma[c] = op->zero_gamma ? 0.0f : 1.0f;
                op->bn.beta[c] = 0.0f;
                op->bn.running_var[c] = 1.0f;
            }
            break;
        case OP_LINEAR: {
            /* PyTorch's nn.Linear default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)),
             * bias U(+-1/sqrt(fan_in)). */
            double bound = 1.0 / sqrt((double)op->fc.in);
            for (size_t k = 0; k < op->p_count; k++)
                p[k] = (float)((2.0 * uniform_at(key, op->p_off + k) - 1.0) * bound);
            break;
        }
        default: break;
        }
    }
}
