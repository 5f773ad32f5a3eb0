/* config.c — the configuration table and its INI reader (see config.h).
 *
 * One row per key: the row's default is parsed by the same code as user values, so the
 * defaults, the range checks, --set and the generated reference cannot drift apart.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/qt.h"

enum { T_INT, T_I64, T_U64, T_FLOAT, T_BOOL, T_STR, T_ENUM, T_FLOAT3, T_INTLIST, T_DOUBLE };

typedef struct {
    const char *section, *key;
    int type;
    size_t off;        /* offset of the value in qt_config */
    size_t aux;        /* T_STR: capacity; T_INTLIST: offset of the count (int) */
    double min, max;   /* numeric range (inclusive) */
    const char *def;   /* default, as it would be written in the file */
    const char *choices; /* T_ENUM / T_STR: "a|b|c" (enum value = position) */
    bool hashed;       /* changes the computation: part of the config hash */
    const char *help;
} cfg_entry;

#define OFF(f) offsetof(qt_config, f)
#define CAP(f) sizeof(((qt_config *)0)->f)

static const cfg_entry k_table[] = {
    /* [model] */
    {"model", "arch", T_ENUM, OFF(model.arch), 0, 0, 0, "resnet", "resnet|alexnet|vgg|lstm", true,
     "network family (alexnet and vgg: torchvision's, 224x224 input; lstm: speech, data.format = htk)"},
    {"model", "depth", T_INT, OFF(model.depth), 0, 8, 1202, "20", NULL, true,
     "ResNet depth: cifar 6n+2 (20, 32, 44, 56, 110, ...), imagenet 18, 34, 50, 101, 152; VGG 11, 13, 16, 19"},
    {"model", "variant", T_ENUM, OFF(model.variant), 0, 0, 0, "cifar", "cifar|imagenet", true,
     "cifar: 3x3 stem, 16/32/64 channels; imagenet: 7x7 stem + max pool, torchvision layout"},
    {"model", "classes", T_INT, OFF(model.classes), 0, 0, 1000000, "0", NULL, true,
     "output classes; 0 = take the data set's"},
    {"model", "label_smoothing", T_FLOAT, OFF(model.label_smoothing), 0, 0, 0.999, "0", NULL, true,
     "cross-entropy label smoothing (PyTorch semantics)"},
    {"model", "bn_momentum", T_FLOAT, OFF(model.bn_momentum), 0, 0, 1, "0.1", NULL, true,
     "BatchNorm running-statistics momentum (PyTorch convention)"},
    {"model", "bn_eps", T_FLOAT, OFF(model.bn_eps), 0, 1e-12, 1, "1e-5", NULL, true, "BatchNorm epsilon"},
    {"model", "dropout", T_FLOAT, OFF(model.dropout), 0, 0, 0.99, "0.5", NULL, true,
     "dropout probability of the alexnet/vgg classifier"},
    {"model", "batchnorm", T_BOOL, OFF(model.batchnorm), 0, 0, 0, "true", NULL, true,
     "resnet: false leaves out the BatchNorm layers (equivalence tests of data parallelism)"},
    {"model", "inputs", T_INT, OFF(model.inputs), 0, 0, 1 << 20, "0", NULL, true,
     "lstm: inputs per frame (0 = the data set's: features x (2 context + 1)); --dry-run needs it"},
    {"model", "layers", T_INT, OFF(model.layers), 0, 1, 16, "3", NULL, true, "lstm: stacked LSTM layers"},
    {"model", "hidden", T_INT, OFF(model.hidden), 0, 1, 65536, "1024", NULL, true, "lstm: cells per layer"},
    {"model", "proj", T_INT, OFF(model.proj), 0, 0, 65536, "512", NULL, true,
     "lstm: LSTMP projection width (0 = none)"},
    {"model", "peephole", T_BOOL, OFF(model.peephole), 0, 0, 0, "true", NULL, true,
     "lstm: peephole connections (diagonal w_ci, w_cf, w_co)"},
    {"model", "bidirectional", T_BOOL, OFF(model.bidirectional), 0, 0, 0, "false", NULL, true,
     "lstm: a reverse-direction layer beside each forward one, outputs concatenated"},
    {"model", "zero_init_residual", T_BOOL, OFF(model.zero_init_residual), 0, 0, 0, "false", NULL, true,
     "start the last BN of each residual branch at gamma = 0"},
    /* [data] */
    {"data", "format", T_STR, OFF(data.format), CAP(data.format), 0, 0, "cifar10",
     "cifar10|cifar100|imagefolder|htk", true, "data set format"},
    {"data", "path", T_STR, OFF(data.path), CAP(data.path), 0, 0, "data/cifar-10-batches-bin", NULL, false,
     "folder holding the data set (relative paths are taken from the working directory)"},
    {"data", "batch", T_INT, OFF(data.batch), 0, 1, 65536, "128", NULL, true, "batch size per rank"},
    {"data", "workers", T_INT, OFF(data.workers), 0, 1, 256, "2", NULL, false, "loader threads"},
    {"data", "prefetch", T_INT, OFF(data.prefetch), 0, 1, 1024, "4", NULL, false, "batches prepared ahead"},
    {"data", "augment", T_BOOL, OFF(data.augment), 0, 0, 0, "true", NULL, true,
     "training augmentation (CIFAR: random crop with padding + flip)"},
    {"data", "crop_pad", T_INT, OFF(data.crop_pad), 0, 0, 64, "4", NULL, true, "zero padding of the random crop"},
    {"data", "flip", T_BOOL, OFF(data.flip), 0, 0, 0, "true", NULL, true, "random horizontal flip"},
    {"data", "mean", T_FLOAT3, OFF(data.mean), 0, -1e6, 1e6, "0.4914, 0.4822, 0.4465", NULL, true,
     "per-channel mean (of pixels scaled to [0,1])"},
    {"data", "std", T_FLOAT3, OFF(data.std), 0, 1e-6, 1e6, "0.2470, 0.2435, 0.2616", NULL, true,
     "per-channel standard deviation"},
    {"data", "drop_last", T_BOOL, OFF(data.drop_last), 0, 0, 0, "true", NULL, true,
     "drop the last partial training batch"},
    {"data", "on_error", T_ENUM, OFF(data.on_error), 0, 0, 0, "fail", "fail|skip", false,
     "unreadable item: stop with its name, or skip it and count it"},
    {"data", "limit", T_I64, OFF(data.limit), 0, 0, 1e15, "0", NULL, true,
     "use only N items (0 = all; imagefolder spreads them over the classes)"},
    {"data", "image_size", T_INT, OFF(data.image_size), 0, 8, 4096, "224", NULL, true,
     "imagefolder: side of the training and evaluation crops"},
    {"data", "resize", T_INT, OFF(data.resize), 0, 8, 8192, "256", NULL, true,
     "imagefolder evaluation: shorter side resized to this, then a centre crop of image_size"},
    {"data", "scale_min", T_FLOAT, OFF(data.scale_min), 0, 0.001, 1, "0.08", NULL, true,
     "imagefolder training: random-resized-crop area lower bound (torchvision's 0.08)"},
    {"data", "val_path", T_STR, OFF(data.val_path), CAP(data.val_path), 0, 0, "", NULL, false,
     "imagefolder evaluation folder (empty = PATH/val)"},
    {"data", "val_labels", T_STR, OFF(data.val_labels), CAP(data.val_labels), 0, 0, "", NULL, false,
     "imagefolder: 'filename class' lines for a flat val_path (empty = class folders)"},
    {"data", "scp", T_STR, OFF(data.scp), CAP(data.scp), 0, 0, "", NULL, false,
     "htk: training list, one feature file per line"},
    {"data", "val_scp", T_STR, OFF(data.val_scp), CAP(data.val_scp), 0, 0, "", NULL, false,
     "htk: evaluation list"},
    {"data", "mlf", T_STR, OFF(data.mlf), CAP(data.mlf), 0, 0, "", NULL, false,
     "htk: master label file with the frame labels of both lists"},
    {"data", "labels", T_STR, OFF(data.labels), CAP(data.labels), 0, 0, "", NULL, false,
     "htk: label list, one name per line (line k = class k)"},
    {"data", "norm", T_STR, OFF(data.norm), CAP(data.norm), 0, 0, "", NULL, false,
     "htk: file with per-feature means (line 1) and stds (line 2); empty = from the training list"},
    {"data", "context", T_INT, OFF(data.context), 0, 0, 64, "0", NULL, true,
     "htk: frames spliced on each side of a frame (5 gives the AN4 recipe's 11-frame window)"},
    /* [optim] */
    {"optim", "name", T_ENUM, OFF(optim.kind), 0, 0, 0, "sgd", "sgd|adam", true, "optimizer"},
    {"optim", "lr", T_FLOAT, OFF(optim.lr), 0, 0, 1e4, "0.1", NULL, true, "base learning rate"},
    {"optim", "momentum", T_FLOAT, OFF(optim.momentum), 0, 0, 1, "0.9", NULL, true, "SGD momentum"},
    {"optim", "nesterov", T_BOOL, OFF(optim.nesterov), 0, 0, 0, "false", NULL, true, "Nesterov momentum"},
    {"optim", "weight_decay", T_FLOAT, OFF(optim.weight_decay), 0, 0, 1, "1e-4", NULL, true,
     "L2 weight decay added to the gradient (PyTorch semantics)"},
    {"optim", "no_decay_bn", T_BOOL, OFF(optim.no_decay_bn), 0, 0, 0, "false", NULL, true,
     "no weight decay on BatchNorm and bias parameters"},
    {"optim", "beta1", T_FLOAT, OFF(optim.beta1), 0, 0, 1, "0.9", NULL, true, "Adam beta1"},
    {"optim", "beta2", T_FLOAT, OFF(optim.beta2), 0, 0, 1, "0.999", NULL, true, "Adam beta2"},
    {"optim", "eps", T_FLOAT, OFF(optim.eps), 0, 0, 1, "1e-8", NULL, true, "Adam epsilon"},
    {"optim", "schedule", T_ENUM, OFF(optim.schedule), 0, 0, 0, "constant", "constant|step|multistep|cosine",
     true, "learning-rate schedule"},
    {"optim", "gamma", T_FLOAT, OFF(optim.gamma), 0, 0, 1, "0.1", NULL, true, "step/multistep LR factor"},
    {"optim", "step_epochs", T_INT, OFF(optim.step_epochs), 0, 1, 100000, "30", NULL, true,
     "step schedule: multiply by gamma every this many epochs"},
    {"optim", "milestones", T_INTLIST, OFF(optim.milestones), OFF(optim.n_milestones), 0, 1e9, "", NULL, true,
     "multistep schedule: epochs at which the LR is multiplied by gamma (comma-separated)"},
    {"optim", "warmup_epochs", T_FLOAT, OFF(optim.warmup_epochs), 0, 0, 1e4, "0", NULL, true,
     "linear warm-up length in epochs"},
    {"optim", "min_lr", T_FLOAT, OFF(optim.min_lr), 0, 0, 1e4, "0", NULL, true, "cosine schedule floor"},
    {"optim", "clip_norm", T_FLOAT, OFF(optim.clip_norm), 0, 0, 1e9, "0", NULL, true,
     "clip gradients to this global l2 norm (0 = off)"},
    /* [quant] */
    {"quant", "method", T_ENUM, OFF(dist.codec.method), 0, 0, 0, "none",
     "none|fp16|bf16|qsgd|ecq|onebit|terngrad|topk", true, "gradient codec"},
    {"quant", "bits", T_INT, OFF(quant_bits), 0, 2, 16, "4", NULL, true,
     "qsgd/ecq wire bits per element including the sign: s = 2^(bits-1)-1 levels per sign"},
    {"quant", "levels", T_INT, OFF(dist.codec.levels), 0, 0, 65535, "0", NULL, true,
     "non-zero levels per sign s (0 = from bits)"},
    {"quant", "bucket", T_INT, OFF(dist.codec.bucket), 0, 0, 1 << 24, "0", NULL, true,
     "elements per quantization bucket (0 = 128 for bits <= 2, else 512)"},
    {"quant", "norm", T_ENUM, OFF(dist.codec.norm), 0, 0, 0, "max", "max|l2", true,
     "bucket scale: max (as the QSGD experiments) or l2 (the theory)"},
    {"quant", "encoding", T_ENUM, OFF(dist.codec.encoding), 0, 0, 0, "fixed", "fixed|elias|huffman", true,
     "level encoding: fixed-width packing, Elias omega stream, canonical Huffman"},
    {"quant", "alpha", T_FLOAT, OFF(dist.codec.alpha), 0, 0, 10, "1.0", NULL, true,
     "ECQ-SGD compensation coefficient"},
    {"quant", "beta", T_FLOAT, OFF(dist.codec.beta), 0, 0, 1, "0.8", NULL, true, "ECQ-SGD error decay"},
    {"quant", "topk", T_FLOAT, OFF(dist.codec.topk_ratio), 0, 1e-6, 1, "0.01", NULL, true,
     "top-k: fraction of elements sent"},
    {"quant", "clip", T_FLOAT, OFF(dist.codec.clip_sigma), 0, 0, 100, "0", NULL, true,
     "TernGrad: clip gradients at clip * sigma (0 = off; the paper used 2.5)"},
    {"quant", "min_size", T_INT, OFF(dist.min_size), 0, 0, 1 << 30, "10000", NULL, true,
     "tensors with fewer elements (and all 1-D tensors) are sent in fp32"},
    {"quant", "warmup_steps", T_INT, OFF(dist.warmup_steps), 0, 0, 1 << 30, "0", NULL, true,
     "full-precision steps before quantizing"},
    /* [dist] */
    {"dist", "collective", T_ENUM, OFF(dist.collective), 0, 0, 0, "allgather", "allreduce|allgather|rsag", true,
     "allreduce (fp32/fp16 only), allgather (QSGD's), rsag (reduce-scatter + all-gather)"},
    {"dist", "bucket_kb", T_INT, OFF(dist.bucket_kb), 0, 1, 1 << 20, "4096", NULL, true,
     "gradient bucket size for the exchange, in KiB of fp32"},
    {"dist", "overlap", T_BOOL, OFF(dist.overlap), 0, 0, 0, "true", NULL, false,
     "exchange buckets while backward runs (false: after backward, for comparison)"},
    {"dist", "fp16_allreduce", T_BOOL, OFF(dist.fp16_allreduce), 0, 0, 0, "false", NULL, true,
     "allreduce in fp16 (baseline)"},
    {"dist", "timeout_s", T_DOUBLE, OFF(dist.timeout_s), 0, 0, 1e6, "600", NULL, false,
     "a rank waiting longer than this for a step's exchange aborts the job (a stuck peer); 0 = never"},
    {"dist", "debug_delay_ms", T_DOUBLE, OFF(dist.debug_delay_ms), 0, 0, 1e5, "0", NULL, false,
     "artificial delay per collective (tests of overlap)"},
    /* [train] */
    {"train", "epochs", T_INT, OFF(train.epochs), 0, 1, 1000000, "1", NULL, true, "epochs to train"},
    {"train", "max_steps", T_I64, OFF(train.max_steps), 0, 0, 1e15, "0", NULL, false,
     "stop after this many steps in total (0 = all epochs)"},
    {"train", "seed", T_U64, OFF(train.seed), 0, 0, 1.8e19, "1", NULL, true,
     "seed of initialisation, data order, augmentation and stochastic rounding"},
    {"train", "threads", T_INT, OFF(train.threads), 0, 0, 1024, "0", NULL, false,
     "CPU threads per rank (0 = cores / local ranks)"},
    {"train", "device", T_STR, OFF(train.device), CAP(train.device), 0, 0, "cpu", "cpu|cuda", true,
     "compute device"},
    {"train", "log", T_STR, OFF(train.log), CAP(train.log), 0, 0, "", NULL, false,
     "metrics file, one JSON object per line (empty = none)"},
    {"train", "checkpoint", T_STR, OFF(train.checkpoint), CAP(train.checkpoint), 0, 0, "", NULL, false,
     "checkpoint folder (empty = no checkpoints)"},
    {"train", "checkpoint_every", T_INT, OFF(train.checkpoint_every), 0, 0, 1 << 30, "0", NULL, false,
     "steps between checkpoints (0 = at the end of each epoch)"},
    {"train", "keep_checkpoints", T_INT, OFF(train.keep_checkpoints), 0, 1, 100000, "3", NULL, false,
     "checkpoints kept in the folder (older ones are deleted)"},
    {"train", "print_every", T_INT, OFF(train.print_every), 0, 1, 1 << 30, "20", NULL, false,
     "steps between progress lines"},
    {"train", "eval", T_BOOL, OFF(train.eval), 0, 0, 0, "true", NULL, false, "evaluate after each epoch"},
    {"train", "eval_limit", T_I64, OFF(train.eval_limit), 0, 0, 1e15, "0", NULL, false,
     "evaluate on the first N test items only (0 = all)"},
    {"train", "bptt", T_INT, OFF(train.bptt), 0, 0, 1 << 20, "0", NULL, true,
     "speech: truncated BPTT chunk in frames, state carried across chunks (0 = whole utterances)"},
    {"train", "debug_layers", T_BOOL, OFF(train.debug_layers), 0, 0, 0, "false", NULL, false,
     "print per-layer mean |x| and |dx| each step (to find where a NaN starts)"},
};
#define N_ENTRIES ((int)(sizeof k_table / sizeof k_table[0]))

static const cfg_entry *find_entry(const char *section, const char *key)
{
    for (int i = 0; i < N_ENTRIES; i++)
        if (strcmp(k_table[i].section, section) == 0 && strcmp(k_table[i].key, key) == 0)
            return &k_table[i];
    return NULL;
}

static bool section_exists(const char *section)
{
    for (int i = 0; i < N_ENTRIES; i++)
        if (strcmp(k_table[i].section, section) == 0) return true;
    return false;
}

/* Index of `v` in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *v)
{
    int idx = 0;
    const char *p = choices;
    size_t vlen = strlen(v);
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncasecmp(p, v, len) == 0) return idx;
        idx++;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = 0;
    size_t k = 0;
    while (s[k] == ' ' || s[k] == '\t') k++;
    if (k) memmove(s, s + k, n - k + 1);
}

static bool parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(d)) return false;
    *out = d;
    return true;
}

static bool parse_integer(const char *v, double *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (end == v || *end || errno) {
        /* Allow an exact float spelling such as 1e4. */
        double d;
        if (!parse_double(v, &d) || d != floor(d)) return false;
        *out = d;
        return true;
    }
    *out = (double)x;
    return true;
}

/* Parses `value` into the entry's field. On failure writes the reason to err. */
static bool apply(qt_config *c, const cfg_entry *e, const char *value_in, char *err, size_t errcap)
{
    char value[1100];
    if (strlen(value_in) >= sizeof value) {
        snprintf(err, errcap, "value is too long");
        return false;
    }
    strcpy(value, value_in);
    trim(value);
    char *base = (char *)c + e->off;
    double d;
    switch (e->type) {
    case T_INT:
    case T_I64:
    case T_U64:
        if (!parse_integer(value, &d)) {
            snprintf(err, errcap, "must be an integer");
            return false;
        }
        if (d < e->min || d > e->max) {
            snprintf(err, errcap, "must be between %.15g and %.15g", e->min, e->max);
            return false;
        }
        if (e->type == T_INT) *(int *)base = (int)d;
        else if (e->type == T_I64) *(int64_t *)base = (int64_t)d;
        else *(uint64_t *)base = strtoull(value, NULL, 0);
        return true;
    case T_FLOAT:
    case T_DOUBLE:
        if (!parse_double(value, &d)) {
            snprintf(err, errcap, "must be a number");
            return false;
        }
        if (d < e->min || d > e->max) {
            snprintf(err, errcap, "must be between %g and %g", e->min, e->max);
            return false;
        }
        if (e->type == T_FLOAT) *(float *)base = (float)d;
        else *(double *)base = d;
        return true;
    case T_BOOL:
        if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcmp(value, "1") ||
            !strcasecmp(value, "on"))
            *(bool *)base = true;
        else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcmp(value, "0") ||
                 !strcasecmp(value, "off"))
            *(bool *)base = false;
        else {
            snprintf(err, errcap, "must be true or false");
            return false;
        }
        return true;
    case T_STR:
        if (strlen(value) >= e->aux) {
            snprintf(err, errcap, "must be shorter than %zu characters", e->aux);
            return false;
        }
        if (e->choices && choice_index(e->choices, value) < 0) {
            snprintf(err, errcap, "must be one of %s", e->choices);
            return false;
        }
        strcpy(base, value);
        return true;
    case T_ENUM: {
        int idx = choice_index(e->choices, value);
        if (idx < 0) {
            snprintf(err, errcap, "must be one of %s", e->choices);
            return false;
        }
        *(int *)base = idx;
        return true;
    }
    case T_FLOAT3:
    case T_INTLIST: {
        int cap = e->type == T_FLOAT3 ? 3 : 16, n = 0;
        double vals[16];
        char *save = NULL;
        for (char *tok = strtok_r(value, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
            bool ok = e->type == T_FLOAT3 ? parse_double(tok, &d) : parse_integer(tok, &d);
            if (!ok || n >= cap || d < e->min || d > e->max) {
                snprintf(err, errcap, "must be %s%s", e->type == T_FLOAT3 ? "3 numbers" : "at most 16 integers",
                         e->type == T_INTLIST ? " in increasing order, separated by commas" : "");
                return false;
            }
            if (e->type == T_INTLIST && n > 0 && d <= vals[n - 1]) {
                snprintf(err, errcap, "must be increasing");
                return false;
            }
            vals[n++] = d;
        }
        if (e->type == T_FLOAT3) {
            if (n != 3) {
                snprintf(err, errcap, "must be 3 numbers separated by commas");
                return false;
            }
            for (int i = 0; i < 3; i++) ((float *)base)[i] = (float)vals[i];
        } else {
            for (int i = 0; i < n; i++) ((int *)base)[i] = (int)vals[i];
            *(int *)((char *)c + e->aux) = n;
        }
        return true;
    }
    }
    snprintf(err, errcap, "unsupported type");
    return false;
}

void qt_config_default(qt_config *c)
{
    memset(c, 0, sizeof *c);
    qt_model_opts_default(&c->model);
    qt_data_opts_default(&c->data);
    qt_optim_opts_default(&c->optim);
    qt_dist_opts_default(&c->dist);
    qt_codec_params_default(&c->dist.codec, QT_CODEC_NONE);
    char err[256];
    for (int i = 0; i < N_ENTRIES; i++)
        if (!apply(c, &k_table[i], k_table[i].def, err, sizeof err))
            qt_panic(__FILE__, __LINE__, "default of [%s] %s: %s", k_table[i].section, k_table[i].key, err);
}

typedef struct {
    qt_config *cfg;
    FILE *f;
    int line;
    bool failed;
    int fail_line;
    char msg[1400];
    bool seen[sizeof k_table / sizeof k_table[0]];
} parse_state;

/* inih reader: one line per call, so counting calls gives the line number. */
static char *count_lines_reader(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    char *r = fgets(str, num, ps->f);
    if (r) ps->line++;
    return r;
}

/* Keeps the first error; qt_config_load prints it, or inih's syntax error if that came
 * first (inih reports a syntax error only when the whole file has been read). */
static void record(parse_state *ps, const char *fmt, ...) QT_PRINTF(2, 3);
static void record(parse_state *ps, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->msg, sizeof ps->msg, fmt, ap);
    va_end(ap);
    ps->fail_line = ps->line;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->failed) return 1;
    const char *path = ps->cfg->path;
    if (!section[0]) {
        record(ps, "%s:%d: key '%s' is outside any section", path, ps->line, name);
        ps->failed = true;
        return 1;
    }
    if (!section_exists(section)) {
        record(ps, "%s:%d: unknown section [%s] (sections: model, data, optim, quant, dist, train)", path,
                ps->line, section);
        ps->failed = true;
        return 1;
    }
    const cfg_entry *e = find_entry(section, name);
    if (!e) {
        record(ps, "%s:%d: [%s] unknown key '%s' (see configs/README.md)", path, ps->line, section, name);
        ps->failed = true;
        return 1;
    }
    int idx = (int)(e - k_table);
    if (ps->seen[idx]) {
        record(ps, "%s:%d: [%s] %s is set twice", path, ps->line, section, name);
        ps->failed = true;
        return 1;
    }
    ps->seen[idx] = true;
    char err[256];
    if (!apply(ps->cfg, e, value, err, sizeof err)) {
        record(ps, "%s:%d: [%s] %s = '%s': %s", path, ps->line, section, name, value, err);
        ps->failed = true;
    }
    return 1;
}

int qt_config_load(qt_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return qt_fail("%s: cannot open config: %s", path, strerror(errno));
    snprintf(c->path, sizeof c->path, "%s", path);
    parse_state *ps = qt_calloc(1, sizeof *ps);
    ps->cfg = c;
    ps->f = f;
    int rc = ini_parse_stream(count_lines_reader, ps, on_key, ps);
    fclose(f);
    bool failed = ps->failed;
    int fail_line = ps->fail_line;
    char msg[sizeof ps->msg];
    memcpy(msg, ps->msg, sizeof msg);
    free(ps);
    if (rc > 0 && (!failed || rc <= fail_line))
        return qt_fail("%s:%d: syntax error (expected [section] or key = value)", path, rc);
    if (failed) return qt_fail("%s", msg);
    if (rc < 0) return qt_fail("%s: cannot read config", path);
    return 0;
}

int qt_config_set(qt_config *c, const char *assignment)
{
    const char *dot = strchr(assignment, '.');
    const char *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq)
        return qt_fail("--set %s: expected section.key=value", assignment);
    char section[64], key[64];
    size_t sl = (size_t)(dot - assignment), kl = (size_t)(eq - dot - 1);
    if (sl >= sizeof section || kl >= sizeof key) return qt_fail("--set %s: name too long", assignment);
    memcpy(section, assignment, sl);
    section[sl] = 0;
    memcpy(key, dot + 1, kl);
    key[kl] = 0;
    const cfg_entry *e = find_entry(section, key);
    if (!e) return qt_fail("--set %s: unknown key [%s] %s (see configs/README.md)", assignment, section, key);
    char err[256];
    if (!apply(c, e, eq + 1, err, sizeof err))
        return qt_fail("--set %s: [%s] %s = '%s': %s", assignment, section, key, eq + 1, err);
    return 0;
}

int qt_config_finish(qt_config *c)
{
    const char *p = c->path[0] ? c->path : "config";
    qt_codec_params *q = &c->dist.codec;
    if (q->levels == 0) q->levels = (1 << (c->quant_bits - 1)) - 1;
    if (q->bucket == 0) q->bucket = c->quant_bits <= 2 ? 128 : 512;
    q->seed = c->train.seed;
    if (c->dist.collective == QT_COLL_ALLREDUCE && q->method != QT_CODEC_NONE && q->method != QT_CODEC_FP16)
        return qt_fail("%s: [dist] collective = allreduce needs [quant] method = none or fp16 (an MPI "
                       "reduction cannot add encoded bytes); use allgather or rsag", p);
    if (q->method == QT_CODEC_FP16 && c->dist.collective == QT_COLL_ALLREDUCE) c->dist.fp16_allreduce = true;
    bool resnet = c->model.arch == QT_ARCH_RESNET;
    if (c->model.arch == QT_ARCH_VGG && c->model.depth != 11 && c->model.depth != 13 && c->model.depth != 16 &&
        c->model.depth != 19)
        return qt_fail("%s: [model] depth = %d: vgg has 11, 13, 16 or 19", p, c->model.depth);
    if (resnet && c->model.variant == QT_VARIANT_CIFAR && (c->model.depth - 2) % 6 != 0)
        return qt_fail("%s: [model] depth = %d: the cifar variant needs 6n+2 (20, 32, 44, 56, 110)", p,
                       c->model.depth);
    if (resnet && c->model.variant == QT_VARIANT_IMAGENET && c->model.depth != 18 && c->model.depth != 34 &&
        c->model.depth != 50 && c->model.depth != 101 && c->model.depth != 152)
        return qt_fail("%s: [model] depth = %d: the imagenet variant has 18, 34, 50, 101 or 152", p,
                       c->model.depth);
    bool htk = strcmp(c->data.format, "htk") == 0;
    if (c->model.arch == QT_ARCH_LSTM && !htk)
        return qt_fail("%s: [model] arch = lstm needs [data] format = htk (speech features)", p);
    if (htk && c->model.arch != QT_ARCH_LSTM)
        return qt_fail("%s: [data] format = htk needs [model] arch = lstm", p);
    if (c->optim.schedule == QT_LR_MULTISTEP && c->optim.n_milestones == 0)
        return qt_fail("%s: [optim] schedule = multistep needs milestones = e1, e2, ...", p);
    if (strcmp(c->train.device, "cuda") == 0)
        return qt_fail("%s: [train] device = cuda: this build has no CUDA backend (build with nvcc and "
                       "cuDNN present)", p);
    return qt_codec_params_check(q) == 0 ? 0 : qt_fail("%s: [quant] settings are not valid for this codec", p);
}

static void value_text(const qt_config *c, const cfg_entry *e, char *buf, size_t cap)
{
    const char *base = (const char *)c + e->off;
    switch (e->type) {
    case T_INT: snprintf(buf, cap, "%d", *(const int *)base); break;
    case T_I64: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)base); break;
    case T_U64: snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)base); break;
    case T_FLOAT: snprintf(buf, cap, "%.9g", (double)*(const float *)base); break;
    case T_DOUBLE: snprintf(buf, cap, "%.17g", *(const double *)base); break;
    case T_BOOL: snprintf(buf, cap, "%s", *(const bool *)base ? "true" : "false"); break;
    case T_STR: snprintf(buf, cap, "%s", base); break;
    case T_ENUM: {
        int idx = *(const int *)base, k = 0;
        const char *s = e->choices;
        while (k < idx && (s = strchr(s, '|')) != NULL) { s++; k++; }
        size_t len = s ? strcspn(s, "|") : 0;
        snprintf(buf, cap, "%.*s", (int)len, s ? s : "");
        break;
    }
    case T_FLOAT3: {
        const float *v = (const float *)base;
        snprintf(buf, cap, "%.9g, %.9g, %.9g", (double)v[0], (double)v[1], (double)v[2]);
        break;
    }
    case T_INTLIST: {
        int n = *(const int *)((const char *)c + e->aux);
        size_t used = 0;
        buf[0] = 0;
        for (int i = 0; i < n && used < cap; i++)
            used += (size_t)snprintf(buf + used, cap - used, "%s%d", i ? ", " : "", ((const int *)base)[i]);
        break;
    }
    }
}

uint64_t qt_config_hash(const qt_config *c)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over "section.key=value\n" of hashed keys */
    char buf[1200];
    for (int i = 0; i < N_ENTRIES; i++) {
        if (!k_table[i].hashed) continue;
        char val[1100];
        value_text(c, &k_table[i], val, sizeof val);
        int n = snprintf(buf, sizeof buf, "%s.%s=%s\n", k_table[i].section, k_table[i].key, val);
        for (int k = 0; k < n && k < (int)sizeof buf; k++) {
            h ^= (unsigned char)buf[k];
            h *= 1099511628211ull;
        }
    }
    return h;
}

void qt_config_dump(const qt_config *c, FILE *f)
{
    const char *cur = "";
    for (int i = 0; i < N_ENTRIES; i++) {
        if (strcmp(cur, k_table[i].section) != 0) {
            cur = k_table[i].section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", cur);
        }
        char val[1100];
        value_text(c, &k_table[i], val, sizeof val);
        fprintf(f, "%s = %s\n", k_table[i].key, val);
    }
}

void qt_config_reference(FILE *f)
{
    static const char *type_names[] = {"int", "int", "int", "float", "bool", "string", "choice",
                                       "3 floats", "int list", "float"};
    const char *cur = "";
    for (int i = 0; i < N_ENTRIES; i++) {
        const cfg_entry *e = &k_table[i];
        if (strcmp(cur, e->section) != 0) {
            cur = e->section;
            fprintf(f, "\n## [%s]\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n", cur);
        }
        char range[128] = "";
        if (e->choices) snprintf(range, sizeof range, "%s", e->choices);
        else if (e->type == T_INT || e->type == T_I64 || e->type == T_U64 || e->type == T_FLOAT || e->type == T_DOUBLE ||
                 e->type == T_FLOAT3 || e->type == T_INTLIST)
            snprintf(range, sizeof range, "%.15g .. %.15g", e->min, e->max);
        char rangecol[160];
        snprintf(rangecol, sizeof rangecol, "%s", range);
        for (char *p = rangecol; *p; p++)
            if (*p == '|') *p = '/';
        fprintf(f, "| `%s` | %s | `%s` | %s | %s |\n", e->key, type_names[e->type], e->def[0] ? e->def : "\"\"",
                rangecol, e->help);
    }
}
