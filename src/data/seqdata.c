/* seqdata.c — the HTK speech data set (data.format = htk): an SCP list of feature files
 * or archive ranges, frame labels from an MLF through a label list, per-feature
 * normalisation, context splicing (see data.h).
 *
 * Invariants after open: every kept utterance's file header agreed with the file size
 * and its range, all share one feature count and frame period, and its MLF entry labels
 * every frame; so a read can only fail if a file changes under us.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/qt.h"
#include "data/dataset_impl.h"
#include "data/htk.h"

typedef struct {
    char *path;                 /* resolved physical file */
    int64_t offset;             /* byte offset of the first frame */
    int32_t frames;
    const qt_mlf_entry *entry;  /* its labels */
} utterance;

struct qt_seq_dataset {
    qt_data_opts opts;
    char mlf_path[1100];
    qt_label_list labels;
    qt_mlf mlf;
    utterance *utts;
    int64_t n, frames, skipped;
    int feat, dim, context;
    int32_t period;
    float *mean, *std;          /* [feat] */
};

/* Reads a whole text file (NUL-terminated) into *text; message printed on failure. */
static int slurp(const char *path, char **text, size_t *n)
{
    qt_data_scratch s = {0};
    uint8_t *buf;
    char err[3072];
    if (qt_data_read_file(path, &s, 0, &buf, n, err, sizeof err) < 0) {
        qt_scratch_free(&s);
        return qt_fail("%s", err);
    }
    buf[*n] = '\0'; /* qt_data_read_file leaves one spare byte */
    *text = (char *)buf;
    s.buf[0] = NULL; /* ownership moves to the caller */
    qt_scratch_free(&s);
    return 0;
}

static int check_header(qt_seq_dataset *d, const qt_scp_entry *e, const char *path, utterance *u,
                        char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    uint8_t hb[QT_HTK_HEADER_BYTES];
    ssize_t got = pread(fd, hb, sizeof hb, 0);
    close(fd);
    qt_htk_header h;
    if (qt_htk_parse_header(hb, got > 0 ? (size_t)got : 0, (uint64_t)st.st_size, path, &h, err,
                            err_len) < 0)
        return -1;
    if (e->first >= 0 && e->last >= h.n_samples) {
        snprintf(err, err_len, "%s: range [%lld,%lld] is past its %d frames", path,
                 (long long)e->first, (long long)e->last, h.n_samples);
        return -1;
    }
    int feat = h.samp_size / 4;
    if (d->feat == 0) {
        d->feat = feat;
        d->period = h.samp_period;
    } else if (feat != d->feat || h.samp_period != d->period) {
        snprintf(err, err_len, "%s: %d features every %d x 100ns, but the first file has %d every %d",
                 path, feat, h.samp_period, d->feat, d->period);
        return -1;
    }
    int64_t first = e->first >= 0 ? e->first : 0;
    u->frames = (int32_t)(e->first >= 0 ? e->last - e->first + 1 : h.n_samples);
    u->offset = QT_HTK_HEADER_BYTES + first * h.samp_size;
    return 0;
}

/* Builds the utterance list of one SCP (train or eval). */
static int scan_list(qt_seq_dataset *d, const char *scp_name)
{
    const qt_data_opts *o = &d->opts;
    char scp_path[1100];
    qt_data_resolve(o->path, scp_name, scp_path, sizeof scp_path);
    char *text = NULL;
    size_t n = 0;
    if (slurp(scp_path, &text, &n) < 0) return -1;
    qt_scp scp;
    char err[3072];
    int rc = qt_scp_parse(text, n, scp_path, &scp, err, sizeof err);
    free(text);
    if (rc < 0) return qt_fail("%s", err);
    d->utts = qt_calloc((size_t)scp.n, sizeof *d->utts);
    int32_t *y = NULL;
    size_t y_cap = 0;
    for (int64_t i = 0; i < scp.n; i++) {
        const qt_scp_entry *e = &scp.entries[i];
        char path[1100];
        qt_data_resolve(o->path, e->path, path, sizeof path);
        utterance *u = &d->utts[d->n];
        rc = check_header(d, e, path, u, err, sizeof err);
        if (rc == 0) {
            u->entry = qt_mlf_find(&d->mlf, e->key);
            if (!u->entry) {
                snprintf(err, sizeof err, "%s: no entry for '%s' in %s", path, e->key, d->mlf_path);
                rc = -1;
            }
        }
        if (rc == 0) {
            if ((size_t)u->frames > y_cap) {
                free(y);
                y_cap = (size_t)u->frames;
                y = qt_malloc(y_cap * sizeof *y);
            }
            rc = qt_mlf_frame_labels(&d->mlf, u->entry, d->mlf_path, u->frames, d->period, y, err,
                                     sizeof err);
        }
        if (rc < 0) {
            if (o->on_error != QT_DATA_ON_ERROR_SKIP) {
                free(y);
                qt_scp_free(&scp);
                return qt_fail("%s", err);
            }
            if (++d->skipped <= 20) qt_warn("%s (skipped)", err);
            continue;
        }
        u->path = strdup(path);
        QT_ASSERT(u->path);
        d->frames += u->frames;
        d->n++;
        if (o->limit > 0 && d->n >= o->limit) break;
    }
    free(y);
    qt_scp_free(&scp);
    if (d->skipped > 0)
        qt_warn("%s: %lld utterances skipped (on_error = skip)", scp_path, (long long)d->skipped);
    if (d->n == 0) return qt_fail("%s: no usable utterances", scp_path);
    return 0;
}

/* Raw frames of utterance i (host floats, [frames][feat]) into buf; reason in err. */
static int read_raw(const qt_seq_dataset *d, int64_t i, float *buf, uint8_t *tmp, char *err,
                    size_t err_len)
{
    const utterance *u = &d->utts[i];
    size_t bytes = (size_t)u->frames * (size_t)d->feat * 4;
    int fd = open(u->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "%s: cannot open: %s", u->path, strerror(errno));
        return -1;
    }
    size_t got = 0;
    while (got < bytes) {
        ssize_t r = pread(fd, tmp + got, bytes - got, u->offset + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != bytes) {
        snprintf(err, err_len, "%s: file shorter than at open (%zu of %zu bytes read)", u->path, got, bytes);
        return -1;
    }
    qt_htk_decode_floats(tmp, (int64_t)u->frames * d->feat, buf);
    return 0;
}

/* Per-feature mean and std over every frame of d's utterances (double sums). A feature
 * with (almost) no variance keeps std 1 rather than blowing up. */
static int compute_norm(const qt_seq_dataset *src, float *mean, float *std)
{
    int F = src->feat;
    double *s1 = qt_calloc((size_t)F, sizeof(double)), *s2 = qt_calloc((size_t)F, sizeof(double));
    int32_t max_frames = 0;
    for (int64_t i = 0; i < src->n; i++) max_frames = QT_MAX(max_frames, src->utts[i].frames);
    float *buf = qt_malloc((size_t)max_frames * F * sizeof(float));
    uint8_t *tmp = qt_malloc((size_t)max_frames * F * 4);
    char err[3072];
    int rc = 0;
    for (int64_t i = 0; i < src->n && rc == 0; i++) {
        if (read_raw(src, i, buf, tmp, err, sizeof err) < 0) {
            rc = qt_fail("%s", err);
            break;
        }
        for (int64_t t = 0; t < src->utts[i].frames; t++)
            for (int f = 0; f < F; f++) {
                double v = buf[t * F + f];
                s1[f] += v;
                s2[f] += v * v;
            }
    }
    for (int f = 0; f < F && rc == 0; f++) {
        double m = s1[f] / (double)src->frames, var = s2[f] / (double)src->frames - m * m;
        mean[f] = (float)m;
        std[f] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
    free(s1);
    free(s2);
    free(buf);
    free(tmp);
    return rc;
}

/* data.norm: line 1 = F means, line 2 = F stds (all > 0). */
static int read_norm(qt_seq_dataset *d, const char *name)
{
    char path[1100];
    qt_data_resolve(d->opts.path, name, path, sizeof path);
    char *text = NULL;
    size_t n = 0;
    if (slurp(path, &text, &n) < 0) return -1;
    char *p = text;
    int rc = 0;
    for (int row = 0; row < 2 && rc == 0; row++) {
        float *dst = row ? d->std : d->mean;
        char *eol = strchr(p, '\n');
        if (eol) *eol = '\0';
        for (int f = 0; f < d->feat && rc == 0; f++) {
            char *end;
            dst[f] = strtof(p, &end);
            if (end == p || (row && !(dst[f] > 0.0f)))
                rc = qt_fail("%s:%d: expected %d %s", path, row + 1, d->feat,
                             row ? "positive standard deviations" : "means");
            p = end;
        }
        p += strspn(p, " \t\r");
        if (rc == 0 && *p) rc = qt_fail("%s:%d: more than %d values", path, row + 1, d->feat);
        p = eol ? eol + 1 : p;
    }
    free(text);
    return rc;
}

static int open_inputs(qt_seq_dataset *d)
{
    const qt_data_opts *o = &d->opts;
    if (!o->mlf[0] || !o->labels[0]) return qt_fail("[data] format = htk needs mlf = and labels =");
    char path[1100], err[3072];
    char *text = NULL;
    size_t n = 0;
    qt_data_resolve(o->path, o->labels, path, sizeof path);
    if (slurp(path, &text, &n) < 0) return -1;
    int rc = qt_label_list_parse(text, n, path, &d->labels, err, sizeof err);
    free(text);
    if (rc < 0) return qt_fail("%s", err);
    qt_data_resolve(o->path, o->mlf, d->mlf_path, sizeof d->mlf_path);
    if (slurp(d->mlf_path, &text, &n) < 0) return -1;
    rc = qt_mlf_parse(text, n, d->mlf_path, &d->labels, &d->mlf, err, sizeof err);
    free(text);
    if (rc < 0) return qt_fail("%s", err);
    return 0;
}

int qt_seq_dataset_open(const qt_data_opts *o, bool train, qt_seq_dataset **out)
{
    *out = NULL;
    if (o->context < 0 || o->context > 64)
        return qt_fail("[data] context = %d: must be between 0 and 64", o->context);
    const char *list = train ? o->scp : o->val_scp;
    if (!list[0]) return qt_fail("[data] format = htk needs %s = (an SCP list)", train ? "scp" : "val_scp");
    qt_seq_dataset *d = qt_calloc(1, sizeof *d);
    d->opts = *o;
    d->context = o->context;
    int rc = open_inputs(d);
    if (rc == 0) rc = scan_list(d, list);
    if (rc == 0) {
        d->dim = d->feat * (2 * d->context + 1);
        d->mean = qt_calloc((size_t)d->feat, sizeof(float));
        d->std = qt_calloc((size_t)d->feat, sizeof(float));
        if (o->norm[0]) {
            rc = read_norm(d, o->norm);
        } else if (train) {
            rc = compute_norm(d, d->mean, d->std);
        } else {
            qt_data_opts to = *o;
            to.limit = 0;
            qt_seq_dataset *tr = NULL;
            rc = qt_seq_dataset_open(&to, true, &tr);
            if (rc == 0 && tr->feat != d->feat)
                rc = qt_fail("%s: %d features per frame, the training list has %d", o->val_scp, d->feat, tr->feat);
            if (rc == 0) {
                memcpy(d->mean, tr->mean, (size_t)d->feat * sizeof(float));
                memcpy(d->std, tr->std, (size_t)d->feat * sizeof(float));
            }
            qt_seq_dataset_destroy(tr);
        }
    }
    if (rc < 0) {
        qt_seq_dataset_destroy(d);
        return rc;
    }
    *out = d;
    return 0;
}

int64_t qt_seq_dataset_count(const qt_seq_dataset *d) { return d->n; }
int64_t qt_seq_dataset_frames(const qt_seq_dataset *d) { return d->frames; }
int qt_seq_dataset_length(const qt_seq_dataset *d, int64_t i) { return d->utts[i].frames; }
int qt_seq_dataset_dim(const qt_seq_dataset *d) { return d->dim; }
int qt_seq_dataset_features(const qt_seq_dataset *d) { return d->feat; }
int qt_seq_dataset_classes(const qt_seq_dataset *d) { return d->labels.n; }
int64_t qt_seq_dataset_skipped(const qt_seq_dataset *d) { return d->skipped; }

const char *qt_seq_dataset_class_name(const qt_seq_dataset *d, int k)
{
    return k >= 0 && k < d->labels.n ? d->labels.names[k] : NULL;
}

void qt_seq_dataset_norm(const qt_seq_dataset *d, const float **mean, const float **std)
{
    *mean = d->mean;
    *std = d->std;
}

int qt_seq_dataset_write_norm(const qt_seq_dataset *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    for (int row = 0; row < 2; row++)
        for (int k = 0; k < d->feat; k++)
            fprintf(f, "%.9g%c", (double)(row ? d->std : d->mean)[k], k + 1 < d->feat ? ' ' : '\n');
    if (fclose(f) != 0) return qt_fail("%s: write failed", path);
    return 0;
}

/* Utterance i into x with `stride` floats between frames (dim per frame: the batch
 * layout [t][n][dim] passes n*dim) and labels into y with `ystride`. */
int qt_seq_read_strided(const qt_seq_dataset *d, int64_t i, float *x, size_t stride, int32_t *y,
                        size_t ystride, qt_data_scratch *s, char *err, size_t err_len)
{
    const utterance *u = &d->utts[i];
    int T = u->frames, F = d->feat, c = d->context;
    float *raw = qt_scratch_get(s, 1, (size_t)T * F * sizeof(float));
    uint8_t *tmp = qt_scratch_get(s, 0, (size_t)T * F * 4);
    if (read_raw(d, i, raw, tmp, err, err_len) < 0) return -1;
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) raw[t * F + f] = (raw[t * F + f] - d->mean[f]) / d->std[f];
    for (int t = 0; t < T; t++) {
        float *dst = x + (size_t)t * stride;
        for (int k = -c; k <= c; k++) {
            int src = QT_MIN(QT_MAX(t + k, 0), T - 1);
            memcpy(dst + (size_t)(k + c) * F, raw + (size_t)src * F, (size_t)F * sizeof(float));
        }
    }
    int32_t *lab = qt_scratch_get(s, 2, (size_t)T * sizeof(int32_t));
    if (qt_mlf_frame_labels(&d->mlf, u->entry, d->mlf_path, T, d->period, lab, err, err_len) < 0)
        return -1;
    for (int t = 0; t < T; t++) y[(size_t)t * ystride] = lab[t];
    return 0;
}

int qt_seq_dataset_read(const qt_seq_dataset *d, int64_t i, float *x, int32_t *y)
{
    if (i < 0 || i >= d->n)
        return qt_fail("htk: utterance %lld out of range 0..%lld", (long long)i, (long long)d->n - 1);
    qt_data_scratch s = {0};
    char err[3072];
    int rc = qt_seq_read_strided(d, i, x, (size_t)d->dim, y, 1, &s, err, sizeof err);
    qt_scratch_free(&s);
    return rc < 0 ? qt_fail("%s", err) : 0;
}

void qt_seq_dataset_destroy(qt_seq_dataset *d)
{
    if (!d) return;
    for (int64_t i = 0; i < d->n; i++) free(d->utts[i].path);
    free(d->utts);
    qt_mlf_free(&d->mlf);
    qt_label_list_free(&d->labels);
    free(d->mean);
    free(d->std);
    free(d);
}
