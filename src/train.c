/* train.c — the trainer: config, model, loaders, exchange, loop { forward, backward,
 * wait, step, log, checkpoint }. Reads top to bottom (llm.c style).
 *
 *   ./train --config FILE [--set section.key=value ...] [--dry-run] [--resume] [--help]
 *   mpirun -np N ./train --config FILE     (one replica per rank, data sharded by rank)
 *
 * Everything mutable lives in one `trainer` struct owned by main(). Only main() exits.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include "checkpoint.h"
#include "config.h"
#include "core/qt.h"
#include "data/data.h"
#include "dist/exchange.h"
#include "dist/world.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "nn/optim.h"

typedef struct {
    qt_config cfg;
    qt_world *world;
    int rank, size;
    qt_model *model;
    size_t n_params;
    qt_dataset *train_set, *test_set;
    qt_loader *train_loader, *test_loader;
    qt_seq_dataset *seq_train, *seq_test; /* speech (data.format = htk) instead of the above */
    qt_seq_loader *seq_train_loader, *seq_test_loader;
    int32_t *chunk_lengths;               /* speech: lengths within the current chunk [batch] */
    float *zero_mask;                     /* speech: an all-padding chunk's mask [batch] */
    qt_param_group *groups;
    int n_groups;
    float *opt_state;
    size_t n_opt_state;
    float *residuals; /* error-feedback arena (same layout as params), NULL if the codec has none */
    qt_exchange *ex;
    int64_t steps_per_epoch, step, epoch, cursor; /* cursor = step within the epoch */
    int64_t updates;    /* optimizer updates (= steps, except truncated-BPTT speech chunks) */
    int64_t start_step; /* step at start-up (after --resume), for the ETA */
    int64_t skipped_steps;
    double sum_bytes_sent, sum_bytes_fp32, sum_bytes_payload, sum_exposed, sum_encode, sum_decode, sum_step;
    int64_t n_summary;
    FILE *metrics;
    const char *profile_path; /* --profile: per-layer times written at the end */
    double *prof_fwd, *prof_bwd, prof_optim, prof_step;
    int64_t prof_steps;
    double t_start;
} trainer;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: train --config FILE [--set section.key=value ...] [--dry-run] [--resume]\n"
            "             [--profile FILE] [--help] [--help-config]\n"
            "  --config FILE    INI file with [model] [data] [optim] [quant] [dist] [train] (configs/)\n"
            "  --set S.K=V      override one key (repeatable), e.g. --set quant.method=qsgd\n"
            "  --dry-run        build the model, print its layers, params and FLOPs, and exit\n"
            "  --resume         continue from the newest checkpoint in [train] checkpoint\n"
            "  --profile FILE   write per-layer forward/backward times and gradient bytes (JSON)\n"
            "  --dump-params F  at the end, write the parameters as raw float32 (rank r > 0: F.r<r>)\n"
            "  --help-config    print every config key with its default and range\n"
            "run on N ranks: mpirun -np N ./train --config FILE (scripts/mpirun.sh sets root/container options)\n");
}

/* ---- setup -------------------------------------------------------------------------- */

/* Speech: HTK features + MLF labels, batches of padded utterances. */
static int open_speech(trainer *t)
{
    qt_config *c = &t->cfg;
    if (qt_seq_dataset_open(&c->data, true, &t->seq_train) < 0) return -1;
    if (c->train.eval && c->data.val_scp[0] && qt_seq_dataset_open(&c->data, false, &t->seq_test) < 0) return -1;
    c->model.in_channels = qt_seq_dataset_dim(t->seq_train);
    if (c->model.inputs && c->model.inputs != c->model.in_channels)
        return qt_fail("%s: [model] inputs = %d but the data gives %d per frame (features x (2 context + 1))",
                       c->path, c->model.inputs, c->model.in_channels);
    int classes = qt_seq_dataset_classes(t->seq_train);
    if (c->model.classes == 0) c->model.classes = classes;
    else if (c->model.classes < classes)
        return qt_fail("%s: [model] classes = %d but %s lists %d labels", c->path, c->model.classes, c->data.labels,
                       classes);
    /* The network's buffers cover the longest chunk it will see. */
    int longest = 1;
    for (int k = 0; k < 2; k++) {
        const qt_seq_dataset *d = k ? t->seq_test : t->seq_train;
        for (int64_t i = 0; d && i < qt_seq_dataset_count(d); i++) longest = QT_MAX(longest, qt_seq_dataset_length(d, i));
    }
    c->model.max_frames = c->train.bptt > 0 ? QT_MIN(c->train.bptt, longest) : longest;
    if (qt_seq_loader_create(t->seq_train, &c->data, true, t->rank, t->size, c->train.seed, &t->seq_train_loader) < 0)
        return -1;
    if (t->seq_test &&
        qt_seq_loader_create(t->seq_test, &c->data, false, t->rank, t->size, c->train.seed, &t->seq_test_loader) < 0)
        return -1;
    t->steps_per_epoch = qt_seq_loader_steps_per_epoch(t->seq_train_loader);
    if (t->steps_per_epoch < 1)
        return qt_fail("%s: %lld utterances are fewer than one global batch (%d x %d ranks)", c->data.scp,
                       (long long)qt_seq_dataset_count(t->seq_train), c->data.batch, t->size);
    t->chunk_lengths = qt_calloc((size_t)c->data.batch, sizeof(int32_t));
    t->zero_mask = qt_calloc((size_t)c->data.batch, sizeof(float));
    return 0;
}

static int open_data(trainer *t)
{
    qt_config *c = &t->cfg;
    if (c->model.arch == QT_ARCH_LSTM) return open_speech(t);
    if (qt_dataset_open(&c->data, true, &t->train_set) < 0) return -1;
    qt_data_opts eval_opts = c->data;
    eval_opts.limit = c->train.eval_limit;
    if (c->train.eval && qt_dataset_open(&eval_opts, false, &t->test_set) < 0) return -1;
    int ch, h, w;
    qt_dataset_shape(t->train_set, &ch, &h, &w);
    c->model.in_channels = ch;
    c->model.in_height = h;
    c->model.in_width = w;
    int classes = qt_dataset_classes(t->train_set);
    if (c->model.classes == 0) c->model.classes = classes;
    else if (c->model.classes < classes)
        return qt_fail("%s: [model] classes = %d but the data set has %d classes", c->path, c->model.classes,
                       classes);
    if (qt_loader_create(t->train_set, &c->data, true, t->rank, t->size, c->train.seed, &t->train_loader) < 0)
        return -1;
    if (t->test_set &&
        qt_loader_create(t->test_set, &eval_opts, false, t->rank, t->size, c->train.seed, &t->test_loader) < 0)
        return -1;
    t->steps_per_epoch = qt_loader_steps_per_epoch(t->train_loader);
    if (t->steps_per_epoch < 1)
        return qt_fail("%s: %lld training items are fewer than one global batch (%d x %d ranks)", c->data.path,
                       (long long)qt_dataset_count(t->train_set), c->data.batch, t->size);
    return 0;
}

static void build_groups(trainer *t)
{
    int n;
    const qt_param_span *sp = qt_model_spans(t->model, &n);
    t->groups = qt_calloc((size_t)n, sizeof *t->groups);
    for (int i = 0; i < n; i++) {
        t->groups[i].offset = sp[i].offset;
        t->groups[i].count = sp[i].count;
        t->groups[i].decay = t->cfg.optim.no_decay_bn ? sp[i].decay : true;
    }
    t->n_groups = n;
}

static int setup_exchange(trainer *t)
{
    int n;
    const qt_param_span *sp = qt_model_spans(t->model, &n);
    qt_span *spans = qt_calloc((size_t)n, sizeof *spans);
    for (int i = 0; i < n; i++) {
        spans[i].offset = sp[i].offset;
        spans[i].count = sp[i].count;
        spans[i].ndim = sp[i].ndim;
        /* A receptive field (conv: c_in x kh x kw; linear: one input row) stays in one
         * codec bucket where the engine can arrange it (QSGD's reshaping). */
        spans[i].row = sp[i].ndim > 1 ? sp[i].count / (size_t)sp[i].shape[0] : 0;
    }
    if (qt_codec_has_residual(&t->cfg.dist.codec))
        t->residuals = qt_aligned_alloc(t->n_params * sizeof(float));
    int rc = qt_exchange_create(t->world, &t->cfg.dist, spans, n, qt_model_grads(t->model), t->residuals,
                                t->n_params, &t->ex);
    free(spans);
    return rc;
}

/* ---- checkpoints -------------------------------------------------------------------- */

/* Rank 0 writes the main file (params, BN buffers, optimizer state, its residuals);
 * every other rank with error-feedback state writes its own -r<rank> file beside it. */
static int ckpt_state_sections(trainer *t, qt_ckpt_section *sec, bool main_file)
{
    int n = 0;
    if (main_file) {
        sec[n++] = (qt_ckpt_section){"params", qt_model_params(t->model), t->n_params * sizeof(float)};
        sec[n++] = (qt_ckpt_section){"buffers", qt_model_buffers(t->model),
                                     qt_model_buffer_count(t->model) * sizeof(float)};
        sec[n++] = (qt_ckpt_section){"optim", t->opt_state, t->n_opt_state * sizeof(float)};
    }
    bool own = main_file ? t->rank == 0 : t->rank != 0;
    if (own && t->residuals)
        sec[n++] = (qt_ckpt_section){"residuals", t->residuals, t->n_params * sizeof(float)};
    size_t n2 = 0;
    float *r2 = t->ex ? qt_exchange_residual2(t->ex, &n2) : NULL;
    if (own && r2 && n2) sec[n++] = (qt_ckpt_section){"residuals2", r2, n2 * sizeof(float)};
    return n;
}

static int save_checkpoint(trainer *t)
{
    const char *dir = t->cfg.train.checkpoint;
    if (!dir[0]) return 0;
    qt_ckpt_meta meta = {.config_hash = qt_config_hash(&t->cfg), .world = t->size, .rank = t->rank,
                         .step = t->step, .epoch = t->epoch, .cursor = t->cursor,
                         .rng = {(uint64_t)t->updates}}; /* RNG streams are keyed by the update count */
    qt_ckpt_section sec[5];
    char path[1200];
    if (qt_ckpt_mkdir(dir) < 0) return -1;
    /* The main file is the commit record: per-rank files first, a barrier, then rank 0
     * writes the main file, so a main file never exists without its rank files. The
     * condition is the same on every rank (codec settings are checked equal). */
    size_t n2 = 0;
    bool per_rank = t->size > 1 && (t->residuals || (t->ex && qt_exchange_residual2(t->ex, &n2) && n2));
    if (per_rank) {
        int n = ckpt_state_sections(t, sec, false);
        if (t->rank != 0 && n > 0 &&
            (qt_ckpt_path(path, sizeof path, dir, t->step, t->rank) < 0 || qt_ckpt_write(path, &meta, sec, n) < 0))
            return -1;
        MPI_CHECK(MPI_Barrier(t->world->comm));
    }
    if (t->rank == 0) {
        int n = ckpt_state_sections(t, sec, true);
        if (qt_ckpt_path(path, sizeof path, dir, t->step, -1) < 0 || qt_ckpt_write(path, &meta, sec, n) < 0)
            return -1;
        qt_ckpt_prune(dir, t->cfg.train.keep_checkpoints);
    }
    return 0;
}

static int check_meta(const trainer *t, const char *path, const qt_ckpt_meta *m)
{
    if (m->config_hash != qt_config_hash(&t->cfg))
        return qt_fail("%s: written by a run with a different configuration (hash %016llx, this run %016llx)",
                       path, (unsigned long long)m->config_hash, (unsigned long long)qt_config_hash(&t->cfg));
    if (m->world != t->size) return qt_fail("%s: written by %d ranks, this run has %d", path, m->world, t->size);
    return 0;
}

/* Every rank reads the main file (parameters, optimizer state); ranks other than 0
 * also read their own residual file. */
static int load_checkpoint(trainer *t)
{
    const char *dir = t->cfg.train.checkpoint;
    if (!dir[0]) return qt_fail("%s: --resume needs [train] checkpoint = DIR", t->cfg.path);
    char path[1200];
    int64_t step = 0;
    int rc = qt_ckpt_latest(dir, path, sizeof path, &step);
    if (rc < 0) return -1;
    if (rc == 1) return qt_fail("%s: --resume: no checkpoint in this folder", dir);
    qt_ckpt_meta meta;
    qt_ckpt_section sec[5];
    int n = ckpt_state_sections(t, sec, true);
    if (qt_ckpt_read(path, &meta, sec, n) < 0 || check_meta(t, path, &meta) < 0) return -1;
    n = ckpt_state_sections(t, sec, false);
    if (n > 0) {
        char rpath[1200];
        qt_ckpt_meta rm;
        if (qt_ckpt_path(rpath, sizeof rpath, dir, step, t->rank) < 0 || qt_ckpt_read(rpath, &rm, sec, n) < 0 ||
            check_meta(t, rpath, &rm) < 0)
            return -1;
        if (rm.step != meta.step) return qt_fail("%s: step %lld, the main file has %lld", rpath,
                                                 (long long)rm.step, (long long)meta.step);
    }
    t->step = meta.step;
    t->epoch = meta.epoch;
    t->cursor = meta.cursor;
    t->updates = (int64_t)meta.rng[0];
    qt_info("resumed from %s: epoch %lld, step %lld", path, (long long)t->epoch + 1, (long long)t->step);
    return 0;
}

/* ---- profile (--profile FILE): what scripts/scaling_model.py simulates ---------- */

/* Adds the last step's per-op times; the first two steps (allocation, caches) are left out. */
static void profile_accumulate(trainer *t, double t_step, double t_rest)
{
    if (t->step < 2) return;
    int n = qt_model_n_ops(t->model);
    if (!t->prof_fwd) {
        t->prof_fwd = qt_calloc((size_t)n, sizeof(double));
        t->prof_bwd = qt_calloc((size_t)n, sizeof(double));
    }
    for (int i = 0; i < n; i++) {
        qt_op_info info;
        qt_model_op_info(t->model, i, &info);
        t->prof_fwd[i] += info.t_forward;
        t->prof_bwd[i] += info.t_backward;
    }
    t->prof_optim += t_rest;
    t->prof_step += t_step;
    t->prof_steps++;
}

/* Per-layer forward/backward seconds (mean per step) and gradient bytes, in forward
 * order, with the step time measured on this machine. */
static int profile_write(trainer *t)
{
    if (!t->profile_path || t->rank != 0) return 0;
    if (t->prof_steps == 0) return qt_fail("%s: --profile needs at least 3 steps", t->profile_path);
    FILE *f = fopen(t->profile_path, "w");
    if (!f) return qt_fail("%s: cannot write profile: %s", t->profile_path, strerror(errno));
    double k = 1.0 / (double)t->prof_steps;
    const qt_config *c = &t->cfg;
    fprintf(f, "{\"config\": \"%s\", \"arch\": \"%s\", \"depth\": %d, \"batch\": %d, \"ranks\": %d, "
               "\"threads\": %d, \"device\": \"%s\", \"steps\": %lld, \"params\": %zu,\n"
               " \"t_step\": %.6e, \"t_other\": %.6e,\n \"layers\": [\n",
            c->path,
            c->model.arch == QT_ARCH_ALEXNET ? "alexnet" : c->model.arch == QT_ARCH_VGG ? "vgg"
            : c->model.arch == QT_ARCH_LSTM ? "lstm" : c->model.variant == QT_VARIANT_CIFAR ? "resnet-cifar" : "resnet-imagenet",
            c->model.depth,
            c->data.batch, t->size, omp_get_max_threads(), c->train.device, (long long)t->prof_steps,
            t->n_params, t->prof_step * k, t->prof_optim * k);
    int n = qt_model_n_ops(t->model);
    for (int i = 0; i < n; i++) {
        qt_op_info info;
        qt_model_op_info(t->model, i, &info);
        fprintf(f, "  {\"name\": \"%s\", \"kind\": \"%s\", \"params\": %zu, \"param_offset\": %zu, "
                   "\"grad_bytes\": %zu, \"t_forward\": %.6e, \"t_backward\": %.6e}%s\n",
                info.name, info.kind, info.param_count, info.param_offset, info.param_count * sizeof(float),
                t->prof_fwd[i] * k, t->prof_bwd[i] * k, i + 1 < n ? "," : "");
    }
    fprintf(f, " ]}\n");
    if (fclose(f) != 0) return qt_fail("%s: write failed", t->profile_path);
    qt_info("profile: %s (%d layers, mean of %lld steps)", t->profile_path, n, (long long)t->prof_steps);
    return 0;
}

/* ---- the loop ----------------------------------------------------------------------- */

static void on_grads_ready(void *ctx, size_t watermark) { qt_exchange_ready((qt_exchange *)ctx, watermark); }

/* Ranks' BatchNorm running statistics drift apart (each sees its own shard): evaluate
 * with their average, as synchronised BN statistics would give. */
static int average_buffers(trainer *t)
{
    size_t n = qt_model_buffer_count(t->model);
    if (t->size == 1 || n == 0) return 0;
    float *b = qt_model_buffers(t->model);
    double *tmp = qt_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) tmp[i] = b[i];
    int rc = qt_world_allreduce_sum(t->world, tmp, (int)n);
    for (size_t i = 0; rc == 0 && i < n; i++) b[i] = (float)(tmp[i] / t->size);
    free(tmp);
    return rc;
}

static int evaluate(trainer *t, double *loss_out, double *top1, double *top5)
{
    double loss = 0, c1 = 0, c5 = 0, count = 0;
    if (average_buffers(t) < 0) return -1;
    if (qt_loader_seek(t->test_loader, 0, 0) < 0) return -1;
    int64_t steps = qt_loader_steps_per_epoch(t->test_loader);
    for (int64_t s = 0; s < steps; s++) {
        qt_batch *b;
        if (qt_loader_next(t->test_loader, &b) < 0) return -1;
        int k1 = 0, k5 = 0;
        float l = qt_model_forward(t->model, b->x, b->y, b->n, false, &k1, &k5);
        loss += (double)l * b->n;
        c1 += k1;
        c5 += k5;
        count += b->n;
        qt_loader_release(t->test_loader, b);
    }
    double sums[4] = {loss, c1, c5, count};
    if (qt_world_allreduce_sum(t->world, sums, 4) < 0) return -1;
    *loss_out = sums[3] > 0 ? sums[0] / sums[3] : 0;
    *top1 = sums[3] > 0 ? sums[1] / sums[3] : 0;
    *top5 = sums[3] > 0 ? sums[2] / sums[3] : 0;
    return 0;
}

static void progress(trainer *t, float loss, float lr, double rate, double acc, const char *unit)
{
    int64_t total = t->steps_per_epoch * t->cfg.train.epochs;
    if (t->cfg.train.max_steps && t->cfg.train.max_steps < total) total = t->cfg.train.max_steps;
    double elapsed = qt_now() - t->t_start;
    /* ETA from the average step time so far (speech batches vary in frames). */
    int64_t done = t->step - t->start_step;
    double eta = done > 0 ? elapsed / (double)done * (double)(total - t->step) : 0;
    fprintf(stderr, "epoch %lld step %lld/%lld  loss %.4f  acc %.3f  lr %.4g  %.0f %s  eta %.0fs\n",
            (long long)t->epoch + 1, (long long)t->step, (long long)total, loss, acc, lr, rate, unit, eta);
}

/* What one training step did (a step = one batch; with truncated BPTT a speech batch
 * makes several optimizer updates, one per chunk). */
typedef struct {
    double loss_sum, correct, count; /* count: images, or real frames */
    double t_data, t_compute;
    qt_exchange_stats st;            /* summed over the step's updates */
    int updates, skipped;
} step_result;

/* Waits for the exchange, then clips and applies the averaged gradient (or skips the
 * update on every rank when some rank's gradient was not finite). */
static int exchange_and_update(trainer *t, float lr, step_result *r)
{
    qt_config *c = &t->cfg;
    qt_exchange_stats st;
    int skip = qt_exchange_finish(t->ex, &st);
    if (skip < 0) return -1;
    float *params = qt_model_params(t->model), *grads = qt_model_grads(t->model);
    if (skip) {
        t->skipped_steps++;
        r->skipped++;
        qt_warn("step %lld: non-finite gradient on some rank: update skipped on all ranks (%lld so far)",
                (long long)t->step, (long long)t->skipped_steps);
    } else {
        if (c->optim.clip_norm > 0) qt_clip_grad_norm(grads, t->n_params, c->optim.clip_norm);
        qt_optim_step(&c->optim, lr, t->updates + 1, t->groups, t->n_groups, params, grads, t->opt_state,
                      t->n_params);
    }
    r->st.bytes_sent += st.bytes_sent;
    r->st.bytes_payload += st.bytes_payload;
    r->st.bytes_fp32 += st.bytes_fp32;
    r->st.t_encode += st.t_encode;
    r->st.t_decode += st.t_decode;
    r->st.t_comm_exposed += st.t_comm_exposed;
    r->st.compression_ratio = r->st.bytes_payload ? (double)r->st.bytes_fp32 / (double)r->st.bytes_payload : 1.0;
    r->updates++;
    t->updates++;
    return 0;
}

static int step_images(trainer *t, float lr, step_result *r)
{
    double t0 = qt_now();
    qt_batch *b;
    if (qt_loader_next(t->train_loader, &b) < 0) return -1;
    r->t_data = qt_now() - t0;
    qt_model_set_step(t->model, t->cfg.train.seed, (uint32_t)t->updates);
    qt_exchange_begin_step(t->ex, (uint32_t)t->updates);
    double tc = qt_now();
    int correct = 0;
    float loss = qt_model_forward(t->model, b->x, b->y, b->n, true, &correct, NULL);
    qt_model_backward(t->model, on_grads_ready, t->ex);
    r->t_compute = qt_now() - tc;
    r->loss_sum = (double)loss * b->n;
    r->correct = correct;
    r->count = b->n;
    qt_loader_release(t->train_loader, b);
    return exchange_and_update(t, lr, r);
}

/* Chunk k of a speech batch: frames [k*len, (k+1)*len) with lengths clamped to it. A
 * rank whose batch is shorter than another rank's runs empty chunks (no real frames,
 * zero gradient) so that every rank makes the same number of exchanges. */
static void speech_chunk(trainer *t, const qt_seq_batch *b, int k, int len, const float **x, const int32_t **y,
                         const float **mask, int *t_chunk)
{
    int start = k * len;
    if (start >= b->t) {
        memset(t->chunk_lengths, 0, (size_t)b->n * sizeof(int32_t));
        *x = b->x;
        *y = b->y;
        *mask = t->zero_mask;
        *t_chunk = 1;
        return;
    }
    int tc = QT_MIN(len, b->t - start);
    for (int i = 0; i < b->n; i++) t->chunk_lengths[i] = QT_MAX(0, QT_MIN(b->lengths[i] - start, tc));
    *x = b->x + (size_t)start * b->n * b->dim;
    *y = b->y + (size_t)start * b->n;
    *mask = b->mask + (size_t)start * b->n;
    *t_chunk = tc;
}

static int speech_chunks(trainer *t, const qt_seq_batch *b, int *len)
{
    int bptt = t->cfg.train.bptt;
    *len = bptt > 0 ? bptt : b->t;
    int chunks = (b->t + *len - 1) / *len;
    if (bptt > 0 && t->size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &chunks, 1, MPI_INT, MPI_MAX, t->world->comm));
    return chunks;
}

static int step_speech(trainer *t, float lr, step_result *r)
{
    double t0 = qt_now();
    qt_seq_batch *b;
    if (qt_seq_loader_next(t->seq_train_loader, &b) < 0) return -1;
    r->t_data = qt_now() - t0;
    int len, chunks = speech_chunks(t, b, &len);
    for (int k = 0; k < chunks; k++) {
        const float *x, *mask;
        const int32_t *y;
        int tc;
        speech_chunk(t, b, k, len, &x, &y, &mask, &tc);
        qt_exchange_begin_step(t->ex, (uint32_t)t->updates);
        double tb = qt_now();
        int64_t correct = 0, frames = 0;
        float loss = qt_model_forward_seq(t->model, x, t->chunk_lengths, y, mask, tc, b->n, true, k > 0, &correct,
                                          &frames);
        qt_model_backward(t->model, on_grads_ready, t->ex);
        r->t_compute += qt_now() - tb;
        r->loss_sum += (double)loss * (double)frames;
        r->correct += (double)correct;
        r->count += (double)frames;
        if (exchange_and_update(t, lr, r) < 0) return -1;
    }
    qt_seq_loader_release(t->seq_train_loader, b);
    return 0;
}

static int evaluate_speech(trainer *t, double *loss_out, double *acc)
{
    if (qt_seq_loader_seek(t->seq_test_loader, 0, 0) < 0) return -1;
    int64_t steps = qt_seq_loader_steps_per_epoch(t->seq_test_loader);
    double sums[3] = {0, 0, 0}; /* loss x frames, correct, frames */
    for (int64_t s = 0; s < steps; s++) {
        qt_seq_batch *b;
        if (qt_seq_loader_next(t->seq_test_loader, &b) < 0) return -1;
        int len = t->cfg.train.bptt > 0 ? t->cfg.train.bptt : b->t;
        for (int k = 0; k * len < b->t; k++) {
            const float *x, *mask;
            const int32_t *y;
            int tc;
            speech_chunk(t, b, k, len, &x, &y, &mask, &tc);
            int64_t correct = 0, frames = 0;
            float l = qt_model_forward_seq(t->model, x, t->chunk_lengths, y, mask, tc, b->n, false, k > 0, &correct,
                                           &frames);
            sums[0] += (double)l * (double)frames;
            sums[1] += (double)correct;
            sums[2] += (double)frames;
        }
        qt_seq_loader_release(t->seq_test_loader, b);
    }
    if (qt_world_allreduce_sum(t->world, sums, 3) < 0) return -1;
    *loss_out = sums[2] > 0 ? sums[0] / sums[2] : 0;
    *acc = sums[2] > 0 ? sums[1] / sums[2] : 0;
    return 0;
}

static int evaluate_and_log(trainer *t)
{
    const qt_config *c = &t->cfg;
    double l, a1 = 0, a5 = 0;
    if (t->seq_test_loader) {
        if (evaluate_speech(t, &l, &a1) < 0) return -1;
        if (t->rank == 0)
            fprintf(stderr, "epoch %lld eval: loss %.4f  frame accuracy %.4f  frame error rate %.4f\n",
                    (long long)t->epoch, l, a1, 1 - a1);
        if (t->metrics)
            fprintf(t->metrics, "{\"eval\": true, \"epoch\": %lld, \"step\": %lld, \"loss\": %.6f, "
                                "\"top1\": %.5f, \"frame_acc\": %.5f, \"fer\": %.5f}\n",
                    (long long)t->epoch, (long long)t->step, l, a1, a1, 1 - a1);
        return 0;
    }
    if (!t->test_loader) return 0;
    if (evaluate(t, &l, &a1, &a5) < 0) return -1;
    if (t->rank == 0) {
        fprintf(stderr, "epoch %lld eval: loss %.4f  top1 %.4f", (long long)t->epoch, l, a1);
        if (c->model.classes >= 5) fprintf(stderr, "  top5 %.4f", a5);
        fprintf(stderr, "\n");
    }
    if (t->metrics)
        fprintf(t->metrics, "{\"eval\": true, \"epoch\": %lld, \"step\": %lld, \"loss\": %.6f, "
                            "\"top1\": %.5f, \"top5\": %.5f}\n",
                (long long)t->epoch, (long long)t->step, l, a1, a5);
    return 0;
}

static int train_loop(trainer *t)
{
    qt_config *c = &t->cfg;
    bool speech = t->seq_train_loader != NULL;
    if (speech ? qt_seq_loader_seek(t->seq_train_loader, t->epoch, t->cursor) < 0
               : qt_loader_seek(t->train_loader, t->epoch, t->cursor) < 0)
        return -1;
    double win_t0 = qt_now(), win_count = 0, win_loss = 0, win_correct = 0;
    bool stop = false;
    while (t->epoch < c->train.epochs && !stop) {
        while (t->cursor < t->steps_per_epoch) {
            if (c->train.max_steps && t->step >= c->train.max_steps) {
                stop = true;
                break;
            }
            double t0 = qt_now();
            float lr = qt_lr_at(&c->optim, t->step, t->steps_per_epoch, c->train.epochs);
            step_result r;
            memset(&r, 0, sizeof r);
            if ((speech ? step_speech(t, lr, &r) : step_images(t, lr, &r)) < 0) return -1;
            double t_step = qt_now() - t0;
            if (t->profile_path) profile_accumulate(t, t_step, t_step - r.t_compute - r.t_data - r.st.t_comm_exposed);
            t->sum_bytes_sent += (double)r.st.bytes_sent;
            t->sum_bytes_fp32 += (double)r.st.bytes_fp32;
            t->sum_bytes_payload += (double)r.st.bytes_payload;
            t->sum_exposed += r.st.t_comm_exposed;
            t->sum_encode += r.st.t_encode;
            t->sum_decode += r.st.t_decode;
            t->sum_step += t_step;
            t->n_summary++;
            t->step++;
            t->cursor++;
            double count = r.count > 0 ? r.count : 1;
            win_count += r.count * t->size; /* every rank processes about as much */
            win_loss += r.loss_sum;
            win_correct += r.correct;
            if (t->metrics)
                fprintf(t->metrics,
                        "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.6f, \"acc\": %.4f, \"lr\": %.6g, "
                        "\"%s\": %.1f, \"bytes_sent\": %llu, \"compression_ratio\": %.3f, "
                        "\"t_step\": %.6f, \"t_data\": %.6f, \"t_compute\": %.6f, \"t_encode\": %.6f, "
                        "\"t_decode\": %.6f, \"t_comm_exposed\": %.6f, \"updates\": %d, \"skipped\": %d}\n",
                        (long long)t->step, (long long)t->epoch, r.loss_sum / count, r.correct / count, lr,
                        speech ? "frames_per_s" : "images_per_s", r.count * t->size / t_step,
                        (unsigned long long)r.st.bytes_sent, r.st.compression_ratio, t_step, r.t_data, r.t_compute,
                        r.st.t_encode, r.st.t_decode, r.st.t_comm_exposed, r.updates, r.skipped);
            if (t->rank == 0 && (t->step % c->train.print_every == 0 || t->cursor == t->steps_per_epoch)) {
                double local = win_count / t->size > 0 ? win_count / t->size : 1;
                progress(t, (float)(win_loss / local), lr, win_count / (qt_now() - win_t0), win_correct / local,
                         speech ? "frames/s" : "img/s");
                win_t0 = qt_now();
                win_count = win_loss = win_correct = 0;
            }
            if (c->train.checkpoint_every && t->step % c->train.checkpoint_every == 0 && save_checkpoint(t) < 0)
                return -1;
        }
        if (stop) break;
        t->epoch++;
        t->cursor = 0;
        if (c->train.eval && evaluate_and_log(t) < 0) return -1;
        if (t->metrics) fflush(t->metrics);
        if (!c->train.checkpoint_every && save_checkpoint(t) < 0) return -1;
    }
    if (stop && save_checkpoint(t) < 0) return -1;
    return 0;
}

/* Raw float32 parameters of this rank (tests compare ranks and runs with them). */
static int dump_params(trainer *t, const char *path)
{
    char p[1100];
    if (t->rank == 0) snprintf(p, sizeof p, "%s", path);
    else snprintf(p, sizeof p, "%s.r%d", path, t->rank);
    FILE *f = fopen(p, "wb");
    if (!f) return qt_fail("%s: cannot write parameters: %s", p, strerror(errno));
    size_t w = fwrite(qt_model_params(t->model), sizeof(float), t->n_params, f);
    if (fclose(f) != 0 || w != t->n_params) return qt_fail("%s: write failed", p);
    return 0;
}

/* ---- main --------------------------------------------------------------------------- */

typedef struct {
    const char *config;
    const char *sets[64];
    int n_sets;
    const char *profile, *dump_params;
    bool dry_run, resume, help, help_config;
} cli_args;

static int parse_args(int argc, char **argv, cli_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--config") && i + 1 < argc) a->config = argv[++i];
        else if (!strncmp(s, "--config=", 9)) a->config = s + 9;
        else if (!strcmp(s, "--set") && i + 1 < argc) {
            if (a->n_sets == 64) return qt_fail("too many --set options (64 at most)");
            a->sets[a->n_sets++] = argv[++i];
        } else if (!strcmp(s, "--dry-run")) a->dry_run = true;
        else if (!strcmp(s, "--profile") && i + 1 < argc) a->profile = argv[++i];
        else if (!strcmp(s, "--dump-params") && i + 1 < argc) a->dump_params = argv[++i];
        else if (!strcmp(s, "--resume")) a->resume = true;
        else if (!strcmp(s, "--help") || !strcmp(s, "-h")) a->help = true;
        else if (!strcmp(s, "--help-config")) a->help_config = true;
        else return qt_fail("unknown argument '%s' (see --help)", s);
    }
    if (!a->help && !a->help_config && !a->config) return qt_fail("missing --config FILE (see --help)");
    return 0;
}

static void set_threads(trainer *t)
{
    int n = t->cfg.train.threads;
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        /* Ranks on this machine share its cores (Open MPI tells the local rank count). */
        const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        int local = ls ? atoi(ls) : 1;
        n = (int)(cores / (local > 0 ? local : 1));
        if (n < 1) n = 1;
    }
    qt_nn_set_threads(n); /* before the model sizes its per-thread workspaces */
}

static int run(trainer *t, const cli_args *a)
{
    qt_config *c = &t->cfg;
    int rc = 0;
    if (open_data(t) < 0) return -1;
    if (qt_model_create(&c->model, &t->model) < 0) return -1;
    t->n_params = qt_model_param_count(t->model);
    /* Every rank must run the same computation: compare config and layout with rank 0. */
    uint64_t h = qt_config_hash(c);
    if (qt_world_check_same(t->world, &h, sizeof h, "configuration") < 0) return -1;
    int n_spans;
    const qt_param_span *sp = qt_model_spans(t->model, &n_spans);
    if (qt_world_check_same(t->world, sp, (size_t)n_spans * sizeof *sp, "model layout") < 0) return -1;
    qt_model_alloc(t->model, c->data.batch);
    qt_model_set_debug(t->model, c->train.debug_layers && t->rank == 0);
    qt_model_init(t->model, c->train.seed);
    build_groups(t);
    t->n_opt_state = qt_optim_state_floats(&c->optim, t->n_params);
    t->opt_state = qt_aligned_alloc((t->n_opt_state ? t->n_opt_state : 1) * sizeof(float));
    if (setup_exchange(t) < 0) return -1;
    if (a->resume && load_checkpoint(t) < 0) return -1;
    /* Rank 0's parameters and BN statistics are everyone's starting point. */
    if (qt_world_bcast_floats(t->world, qt_model_params(t->model), t->n_params) < 0) return -1;
    if (qt_world_bcast_floats(t->world, qt_model_buffers(t->model), qt_model_buffer_count(t->model)) < 0)
        return -1;
    if (t->rank == 0 && c->train.log[0]) {
        char dir[sizeof c->train.log];
        snprintf(dir, sizeof dir, "%s", c->train.log);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = 0;
            if (qt_ckpt_mkdir(dir) < 0) return -1;
        }
        t->metrics = fopen(c->train.log, a->resume ? "a" : "w");
        if (!t->metrics) return qt_fail("%s: cannot open metrics log: %s", c->train.log, strerror(errno));
    }
    static const char *arch_names[] = {"resnet", "alexnet", "vgg", "lstm"};
    qt_info("qtrain: %s%d (%s), %zu params, %d rank%s x batch %d, %lld steps/epoch, codec %s",
            arch_names[c->model.arch], c->model.arch == QT_ARCH_ALEXNET ? 0 : c->model.arch == QT_ARCH_LSTM ? c->model.layers : c->model.depth,
            c->model.arch == QT_ARCH_LSTM ? "speech" : c->model.variant == QT_VARIANT_CIFAR ? "cifar" : "imagenet", t->n_params, t->size,
            t->size > 1 ? "s" : "", c->data.batch, (long long)t->steps_per_epoch,
            qt_codec_method_name(c->dist.codec.method));
    t->t_start = qt_now();
    t->profile_path = a->profile;
    t->start_step = t->step;
    rc = train_loop(t);
    if (rc == 0) rc = profile_write(t);
    if (rc == 0 && a->dump_params) rc = dump_params(t, a->dump_params);
    if (rc == 0 && t->rank == 0) {
        double secs = qt_now() - t->t_start;
        double n = t->n_summary ? (double)t->n_summary : 1.0;
        qt_info("done: %lld steps in %.1f s (%.1f ms/step), %lld skipped; exchange per step: %.3f MB sent, "
                "compression %.2fx, encode %.2f ms, decode %.2f ms, exposed communication %.2f ms (%.1f%% of the step)",
                (long long)t->step, secs, 1e3 * t->sum_step / n, (long long)t->skipped_steps,
                t->sum_bytes_sent / n / 1e6,
                t->sum_bytes_payload > 0 ? t->sum_bytes_fp32 / t->sum_bytes_payload : 1.0, 1e3 * t->sum_encode / n,
                1e3 * t->sum_decode / n, 1e3 * t->sum_exposed / n,
                t->sum_step > 0 ? 100.0 * t->sum_exposed / t->sum_step : 0.0);
    }
    return rc;
}

static void destroy(trainer *t)
{
    if (t->metrics) fclose(t->metrics);
    qt_exchange_destroy(t->ex);
    qt_loader_destroy(t->train_loader);
    qt_loader_destroy(t->test_loader);
    qt_dataset_destroy(t->train_set);
    qt_dataset_destroy(t->test_set);
    qt_seq_loader_destroy(t->seq_train_loader);
    qt_seq_loader_destroy(t->seq_test_loader);
    qt_seq_dataset_destroy(t->seq_train);
    qt_seq_dataset_destroy(t->seq_test);
    free(t->chunk_lengths);
    free(t->zero_mask);
    qt_model_destroy(t->model);
    qt_free_aligned(t->opt_state);
    qt_free_aligned(t->residuals);
    free(t->groups);
    free(t->prof_fwd);
    free(t->prof_bwd);
}

static int dry_run(qt_config *c)
{
    /* No data needed: the input shape comes from the config (imagenet 224, cifar 32). */
    if (c->model.classes == 0)
        c->model.classes = c->model.variant == QT_VARIANT_IMAGENET || c->model.arch != QT_ARCH_RESNET ? 1000 : 10;
    if (c->model.variant == QT_VARIANT_IMAGENET || c->model.arch != QT_ARCH_RESNET)
        c->model.in_height = c->model.in_width = 224;
    if (c->model.arch == QT_ARCH_LSTM) {
        if (c->model.inputs == 0) return qt_fail("%s: --dry-run of an lstm needs [model] inputs", c->path);
        c->model.in_channels = c->model.inputs;
    }
    qt_model *m;
    if (qt_model_create(&c->model, &m) < 0) return -1;
    qt_model_print(m, c->data.batch);
    qt_model_destroy(m);
    return 0;
}

int main(int argc, char **argv)
{
    cli_args a;
    if (parse_args(argc, argv, &a) < 0) return 2;
    if (a.help) {
        usage(stdout);
        return 0;
    }
    trainer *t = qt_calloc(1, sizeof *t);
    qt_config_default(&t->cfg);
    if (a.help_config) {
        qt_config_reference(stdout);
        free(t);
        return 0;
    }
    int rc = qt_config_load(&t->cfg, a.config);
    for (int i = 0; rc == 0 && i < a.n_sets; i++) rc = qt_config_set(&t->cfg, a.sets[i]);
    if (rc == 0) rc = qt_config_finish(&t->cfg);
    if (rc == 0 && a.dry_run) rc = dry_run(&t->cfg);
    if (rc < 0 || a.dry_run) {
        free(t);
        return rc < 0 ? 1 : 0;
    }
    if (qt_world_create(&argc, &argv, &t->world) < 0) {
        free(t);
        return 1;
    }
    t->rank = t->world->rank;
    t->size = t->world->size;
    set_threads(t);
    rc = run(t, &a);
    if (rc < 0 && t->size > 1) qt_world_abort(t->world, 1, "see the error above"); /* every rank exits within seconds */
    destroy(t);
    qt_world_destroy(t->world);
    free(t);
    return rc < 0 ? 1 : 0;
}
