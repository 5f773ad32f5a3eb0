/* speech.c — the sequence network behind arch = lstm: stacked LSTM(P) layers (each one
 * direction, or a forward/reverse pair whose outputs are concatenated), a linear layer
 * applied to every frame, and the masked softmax cross-entropy over frames. The QSGD
 * paper's AN4 network (papers.md §1.10) is 3 x LSTMP(1024 cells, 512 projection,
 * peepholes) on 363 inputs with 132 outputs: 13,634,692 parameters.
 *
 * Arena layout, in backward order like the convnets': the classifier (fc) at offset 0,
 * then layer L-1 down to layer 0; within a bidirectional layer the reverse direction
 * first. Each sub-layer's parameters are one qt_lstm block (lstm.h), exposed as spans
 * w_x, w_h, b, w_peep, w_proj (the 2-D ones go through the codecs like conv weights).
 *
 * Truncated BPTT: forward(carry = true) starts the forward direction of each layer from
 * the states the previous chunk ended with; gradients do not flow across chunks. A reverse
 * direction cannot see the future beyond its chunk and always starts from zeros.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "nn/lstm.h"
#include "nn/model_priv.h"

#define MAX_SUB 32 /* layers x directions */

struct speech_net {
    int n_sub, dirs, in_dim, out_dim; /* out_dim: width of the top layer's output */
    qt_lstm sub[MAX_SUB];             /* layer l, direction d at [l * dirs + d] */
    size_t sub_off[MAX_SUB];
    qt_linear fc;
    size_t fc_off;
    /* Buffers for up to max_t frames of max_n sequences. */
    int max_t, max_n;
    float *y[MAX_SUB];                /* per layer: [T][N][dirs * R] */
    float *dy[MAX_SUB];
    float *ws[MAX_SUB];
    float *h[MAX_SUB], *c[MAX_SUB];   /* carried states [N][R], [N][H] */
    float *dscratch;                  /* [T][N][width] for the second direction's dx */
    float *logits, *probs;            /* [T*N][K] */
    int32_t *labels;                  /* [T*N], padding mapped to 0 */
    float *mask;                      /* [T*N] */
    /* The last forward's chunk, for backward. */
    const float *x;
    int32_t *lengths;
    int t, n;
    bool trained;
};

static int layer_in(const speech_net *s, const qt_model_opts *o, int l)
{
    return l == 0 ? s->in_dim : s->dirs * (o->proj ? o->proj : o->hidden);
}

int speech_build(qt_model *m)
{
    const qt_model_opts *o = &m->opts;
    if (o->layers < 1 || o->hidden < 1 || o->proj < 0 || o->in_channels < 1)
        return qt_fail("lstm: layers, hidden and inputs must be positive (got %d, %d, %d)", o->layers, o->hidden,
                       o->in_channels);
    int dirs = o->bidirectional ? 2 : 1;
    if (o->layers * dirs > MAX_SUB) return qt_fail("lstm: at most %d layers", MAX_SUB / dirs);
    speech_net *s = qt_calloc(1, sizeof *s);
    m->speech = s;
    s->dirs = dirs;
    s->in_dim = o->in_channels;
    s->n_sub = o->layers * dirs;
    int r = o->proj ? o->proj : o->hidden;
    s->out_dim = dirs * r;
    s->fc.in = s->out_dim;
    s->fc.out = o->classes;
    /* Layout in backward order: fc, then the top layer down; reverse direction first. */
    size_t off = 0;
    int ws2[2] = {o->classes, s->out_dim}, bs[1] = {o->classes};
    s->fc_off = off;
    model_add_span(m, "fc.weight", off, (size_t)o->classes * s->out_dim, 2, ws2, true);
    off += (size_t)o->classes * s->out_dim;
    model_add_span(m, "fc.bias", off, (size_t)o->classes, 1, bs, false);
    off += (size_t)o->classes;
    for (int l = o->layers - 1; l >= 0; l--) {
        for (int d = dirs - 1; d >= 0; d--) {
            qt_lstm *q = &s->sub[l * dirs + d];
            q->in = layer_in(s, o, l);
            q->hidden = o->hidden;
            q->proj = o->proj;
            q->peephole = o->peephole;
            q->reverse = d == 1;
            q->out_stride = dirs * r; /* the directions write the halves of one row */
            s->sub_off[l * dirs + d] = off;
            char name[48];
            const char *dn = d ? "_reverse" : "";
            int H = o->hidden, F = q->in;
            int sx[2] = {4 * H, F}, sh[2] = {4 * H, r}, sb[1] = {4 * H}, sp[2] = {3, H}, sj[2] = {o->proj, H};
            snprintf(name, sizeof name, "lstm.%d%s.w_x", l, dn);
            model_add_span(m, name, off, (size_t)4 * H * F, 2, sx, true);
            off += (size_t)4 * H * F;
            snprintf(name, sizeof name, "lstm.%d%s.w_h", l, dn);
            model_add_span(m, name, off, (size_t)4 * H * r, 2, sh, true);
            off += (size_t)4 * H * r;
            snprintf(name, sizeof name, "lstm.%d%s.b", l, dn);
            model_add_span(m, name, off, (size_t)4 * H, 1, sb, false);
            off += (size_t)4 * H;
            if (o->peephole) {
                snprintf(name, sizeof name, "lstm.%d%s.w_peep", l, dn);
                model_add_span(m, name, off, (size_t)3 * H, 2, sp, false);
                off += (size_t)3 * H;
            }
            if (o->proj) {
                snprintf(name, sizeof name, "lstm.%d%s.w_proj", l, dn);
                model_add_span(m, name, off, (size_t)o->proj * H, 2, sj, true);
                off += (size_t)o->proj * H;
            }
            QT_ASSERT(off - s->sub_off[l * dirs + d] == qt_lstm_param_count(F, H, o->proj, o->peephole));
        }
    }
    m->n_params = off;
    m->n_buffers = 0;
    return 0;
}

void speech_destroy(speech_net *s)
{
    if (!s) return;
    for (int i = 0; i < MAX_SUB; i++) {
        qt_free_aligned(s->y[i]);
        qt_free_aligned(s->dy[i]);
        qt_free_aligned(s->ws[i]);
        qt_free_aligned(s->h[i]);
        qt_free_aligned(s->c[i]);
    }
    qt_free_aligned(s->dscratch);
    qt_free_aligned(s->logits);
    qt_free_aligned(s->probs);
    qt_free_aligned(s->mask);
    free(s->labels);
    free(s->lengths);
    free(s);
}

void speech_alloc(qt_model *m, int max_batch)
{
    speech_net *s = m->speech;
    const qt_model_opts *o = &m->opts;
    QT_ASSERT(o->max_frames > 0);
    s->max_t = o->max_frames;
    s->max_n = max_batch;
    size_t rows = (size_t)s->max_t * (size_t)s->max_n;
    int layers = o->layers;
    for (int l = 0; l < layers; l++) {
        s->y[l] = qt_aligned_alloc(rows * (size_t)s->out_dim * sizeof(float));
        s->dy[l] = qt_aligned_alloc(rows * (size_t)s->out_dim * sizeof(float));
    }
    size_t widest = (size_t)QT_MAX(s->in_dim, s->out_dim);
    s->dscratch = qt_aligned_alloc(rows * widest * sizeof(float));
    for (int i = 0; i < s->n_sub; i++) {
        qt_lstm *q = &s->sub[i];
        qt_lstm_bind(q, m->params + s->sub_off[i], m->grads + s->sub_off[i]);
        s->ws[i] = qt_aligned_alloc(qt_lstm_workspace_floats(q, s->max_t, s->max_n) * sizeof(float));
        s->h[i] = qt_aligned_alloc((size_t)s->max_n * (size_t)qt_lstm_out(q) * sizeof(float));
        s->c[i] = qt_aligned_alloc((size_t)s->max_n * (size_t)o->hidden * sizeof(float));
    }
    s->fc.w = m->params + s->fc_off;
    s->fc.dw = m->grads + s->fc_off;
    s->fc.b = s->fc.w + (size_t)s->fc.out * s->fc.in;
    s->fc.db = s->fc.dw + (size_t)s->fc.out * s->fc.in;
    s->logits = qt_aligned_alloc(rows * (size_t)o->classes * sizeof(float));
    s->probs = qt_aligned_alloc(rows * (size_t)o->classes * sizeof(float));
    s->mask = qt_aligned_alloc(rows * sizeof(float));
    s->labels = qt_calloc(rows, sizeof(int32_t));
    s->lengths = qt_calloc((size_t)s->max_n, sizeof(int32_t));
}

/* PyTorch's nn.LSTM initialisation, U(+-1/sqrt(hidden)) for every LSTM parameter, and
 * nn.Linear's default for the classifier; from Philox(seed, QT_RNG_INIT) by arena index. */
void speech_init(qt_model *m, uint64_t seed)
{
    speech_net *s = m->speech;
    qt_philox_key key = qt_philox_make_key(seed, QT_RNG_INIT);
    double lstm_bound = 1.0 / sqrt((double)m->opts.hidden), fc_bound = 1.0 / sqrt((double)s->fc.in);
    for (size_t i = 0; i < m->n_params; i++) {
        double u = (double)qt_philox_u32(key, i, 1, 0) / 4294967296.0;
        double bound = i < s->fc_off + (size_t)s->fc.out * (s->fc.in + 1) ? fc_bound : lstm_bound;
        m->params[i] = (float)((2.0 * u - 1.0) * bound);
    }
}

float qt_model_forward_seq(qt_model *m, const float *x, const int32_t *lengths, const int32_t *y,
                           const float *mask, int t, int n, bool train, bool carry, int64_t *correct,
                           int64_t *frames)
{
    speech_net *s = m->speech;
    QT_ASSERT(s && m->params && t > 0 && t <= s->max_t && n > 0 && n <= s->max_n);
    const qt_model_opts *o = &m->opts;
    memcpy(s->lengths, lengths, (size_t)n * sizeof(int32_t));
    const float *in = x;
    for (int l = 0; l < o->layers; l++) {
        for (int d = 0; d < s->dirs; d++) {
            int i = l * s->dirs + d;
            qt_lstm *q = &s->sub[i];
            bool keep = carry && !q->reverse;
            qt_lstm_data dd = {.t = t, .n = n, .lengths = s->lengths, .x = in,
                               .y = s->y[l] + (size_t)d * qt_lstm_out(q),
                               .h0 = keep ? s->h[i] : NULL, .c0 = keep ? s->c[i] : NULL,
                               .h_final = s->h[i], .c_final = s->c[i], .ws = s->ws[i]};
            qt_lstm_forward(q, &dd);
        }
        in = s->y[l];
    }
    size_t rows = (size_t)t * (size_t)n;
    qt_linear_forward(&s->fc, in, s->logits, (int)rows);
    int64_t real = 0;
    for (size_t r = 0; r < rows; r++) {
        s->mask[r] = mask[r] > 0 ? 1.0f : 0.0f;
        s->labels[r] = mask[r] > 0 ? y[r] : 0; /* padding labels (-1) never index */
        real += mask[r] > 0;
    }
    float loss = real ? qt_softmax_xent_forward(s->logits, s->labels, s->mask, o->label_smoothing, s->probs,
                                                (int)rows, o->classes)
                      : 0.0f;
    if (correct) *correct = real ? qt_topk_correct(s->logits, s->labels, s->mask, (int)rows, o->classes, 1) : 0;
    if (frames) *frames = real;
    s->x = x;
    s->t = t;
    s->n = n;
    s->trained = train;
    return loss;
}

void speech_backward(qt_model *m, qt_grad_ready_fn ready, void *ctx)
{
    speech_net *s = m->speech;
    const qt_model_opts *o = &m->opts;
    QT_ASSERT(s->trained && s->t > 0);
    int t = s->t, n = s->n;
    size_t rows = (size_t)t * (size_t)n;
    float *top_dy = s->dy[o->layers - 1];
    bool any = false;
    for (size_t r = 0; r < rows && !any; r++) any = s->mask[r] > 0;
    if (any)
        qt_softmax_xent_backward(s->probs, s->labels, s->mask, o->label_smoothing, s->logits, (int)rows, o->classes);
    else
        memset(s->logits, 0, rows * (size_t)o->classes * sizeof(float)); /* an empty chunk: zero gradient */
    qt_linear_backward(&s->fc, s->y[o->layers - 1], s->logits, top_dy, (int)rows);
    if (ready) ready(ctx, s->fc_off + (size_t)s->fc.out * (s->fc.in + 1));
    for (int l = o->layers - 1; l >= 0; l--) {
        const float *in = l ? s->y[l - 1] : s->x;
        float *dx = l ? s->dy[l - 1] : NULL;
        int width = l ? s->out_dim : s->in_dim;
        for (int d = s->dirs - 1; d >= 0; d--) {
            int i = l * s->dirs + d;
            qt_lstm *q = &s->sub[i];
            /* The reverse direction (d = 1) runs first and writes dx; the forward one then
             * writes into scratch and is added (both read the same input). */
            float *target = (dx && d == 0 && s->dirs == 2) ? s->dscratch : dx;
            qt_lstm_data dd = {.t = t, .n = n, .lengths = s->lengths, .x = in,
                               .y = s->y[l] + (size_t)d * qt_lstm_out(q),
                               .dy = s->dy[l] + (size_t)d * qt_lstm_out(q), .dx = target, .ws = s->ws[i]};
            qt_lstm_backward(q, &dd);
            if (target == s->dscratch) qt_add_inplace(dx, s->dscratch, rows * (size_t)width);
            if (ready) ready(ctx, s->sub_off[i] + qt_lstm_param_count(q->in, q->hidden, q->proj, q->peephole));
        }
    }
    s->trained = false;
}

uint64_t speech_flops_per_frame(const qt_model *m)
{
    const speech_net *s = m->speech;
    uint64_t f = 2ull * (uint64_t)s->fc.in * (uint64_t)s->fc.out;
    for (int i = 0; i < s->n_sub; i++) {
        const qt_lstm *q = &s->sub[i];
        uint64_t r = (uint64_t)qt_lstm_out(q), h = (uint64_t)q->hidden;
        f += 2ull * 4 * h * ((uint64_t)q->in + r) + 2ull * (uint64_t)q->proj * h;
    }
    return f;
}

void speech_print(const qt_model *m, int batch)
{
    const speech_net *s = m->speech;
    printf("%-28s %-14s %-22s %12s %14s\n", "layer", "kind", "output (per frame)", "params", "MFLOPs/frame");
    for (int i = 0; i < s->n_sub; i++) {
        const qt_lstm *q = &s->sub[i];
        char name[32], kind[32], shape[32];
        snprintf(name, sizeof name, "lstm.%d%s", i / s->dirs, q->reverse ? "_reverse" : "");
        snprintf(kind, sizeof kind, "lstm%s%s", q->proj ? "p" : "", q->peephole ? "+peep" : "");
        snprintf(shape, sizeof shape, "%d x %d", batch, qt_lstm_out(q));
        size_t p = qt_lstm_param_count(q->in, q->hidden, q->proj, q->peephole);
        double mf = 2e-6 * (4.0 * q->hidden * (q->in + qt_lstm_out(q)) + (double)q->proj * q->hidden);
        printf("%-28s %-14s %-22s %12zu %14.2f\n", name, kind, shape, p, mf);
    }
    char shape[32];
    snprintf(shape, sizeof shape, "%d x %d", batch, s->fc.out);
    printf("%-28s %-14s %-22s %12zu %14.2f\n", "fc", "linear", shape, (size_t)s->fc.out * (s->fc.in + 1),
           2e-6 * s->fc.in * s->fc.out);
    printf("params: %zu\n", m->n_params);
    printf("flops_per_frame: %llu\n", (unsigned long long)speech_flops_per_frame(m));
}
