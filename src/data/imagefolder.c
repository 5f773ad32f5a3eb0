/* imagefolder.c — ImageNet-style folders of PNG/JPEG files (data.format = imagefolder).
 *
 * Layout: ROOT/train/<class>/<file> (or ROOT/<class>/<file> when ROOT has no train/);
 * eval: val_path (default ROOT/val) with the same class folders, or flat with a
 * val_labels file of "filename class" lines. Classes are the train folder's sorted
 * sub-folder names (hidden ones skipped), so the index is the same for both splits and
 * for every run; items are each class's files sorted by name, class by class.
 *
 * Invariants after open: at least one class and one item; every item has a label in
 * range. Files are only listed at open (1.28M opens would take minutes); each is read
 * and decoded when the loader asks for it, and a bad one is reported then.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/qt.h"
#include "data/augment.h"
#include "data/dataset_impl.h"
#include "data/image.h"

typedef struct {
    char dir[1100];       /* the folder item paths are relative to */
    char *pool;           /* NUL-terminated strings: class names, then item paths */
    size_t pool_len, pool_cap;
    size_t *class_off;    /* [n_classes] offsets into pool */
    int n_classes;
    size_t *item_off;     /* [n] offsets into pool, relative to dir */
    int32_t *label;       /* [n] */
    int64_t n, cap;
} imgf_impl;

static size_t pool_add(imgf_impl *m, const char *a, const char *b)
{
    size_t la = strlen(a), lb = b ? strlen(b) + 1 : 0, need = la + lb + 1;
    if (m->pool_len + need > m->pool_cap) {
        m->pool_cap = QT_MAX(m->pool_cap * 2, m->pool_len + need + 4096);
        char *p = qt_malloc(m->pool_cap);
        if (m->pool) memcpy(p, m->pool, m->pool_len);
        free(m->pool);
        m->pool = p;
    }
    size_t off = m->pool_len;
    memcpy(m->pool + off, a, la);
    if (b) {
        m->pool[off + la] = '/';
        memcpy(m->pool + off + la + 1, b, lb - 1);
    }
    m->pool[off + need - 1] = '\0';
    m->pool_len += need;
    return off;
}

static void item_add(imgf_impl *m, size_t off, int32_t label)
{
    if (m->n == m->cap) {
        m->cap = QT_MAX(m->cap * 2, 1024);
        size_t *o = qt_malloc((size_t)m->cap * sizeof *o);
        int32_t *l = qt_malloc((size_t)m->cap * sizeof *l);
        if (m->n) {
            memcpy(o, m->item_off, (size_t)m->n * sizeof *o);
            memcpy(l, m->label, (size_t)m->n * sizeof *l);
        }
        free(m->item_off);
        free(m->label);
        m->item_off = o;
        m->label = l;
    }
    m->item_off[m->n] = off;
    m->label[m->n] = label;
    m->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sorted names of the non-hidden sub-folders (dirs=true) or other entries of `path`.
 * Returns the count (names malloc'd, caller frees) or negative (message printed). */
static int list_dir(const char *path, bool dirs, char ***out)
{
    DIR *dp = opendir(path);
    if (!dp) return qt_fail("%s: cannot list: %s", path, strerror(errno));
    int n = 0, cap = 0;
    char **names = NULL;
    for (struct dirent *e; (e = readdir(dp)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        bool d = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            char full[2400];
            snprintf(full, sizeof full, "%s/%s", path, e->d_name);
            d = is_dir(full);
        }
        if (d != dirs) continue;
        if (n == cap) {
            cap = QT_MAX(cap * 2, 64);
            char **nn = qt_malloc((size_t)cap * sizeof *nn);
            if (n) memcpy(nn, names, (size_t)n * sizeof *nn);
            free(names);
            names = nn;
        }
        names[n++] = strdup(e->d_name);
        QT_ASSERT(names[n - 1]);
    }
    closedir(dp);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    return n;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Adds every file of every class folder under m->dir. */
static int add_class_folders(imgf_impl *m)
{
    for (int k = 0; k < m->n_classes; k++) {
        /* A copy: pool_add may move the pool this name lives in. */
        char cls[1024];
        snprintf(cls, sizeof cls, "%s", m->pool + m->class_off[k]);
        char sub[2400];
        snprintf(sub, sizeof sub, "%s/%s", m->dir, cls);
        if (!is_dir(sub)) return qt_fail("%s: missing class folder (classes come from the train folder)", sub);
        char **files = NULL;
        int nf = list_dir(sub, false, &files);
        if (nf < 0) return nf;
        for (int i = 0; i < nf; i++) item_add(m, pool_add(m, cls, files[i]), k);
        free_names(files, nf);
    }
    return 0;
}

static int class_index(const imgf_impl *m, const char *name)
{
    int lo = 0, hi = m->n_classes - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, m->pool + m->class_off[mid]);
        if (c == 0) return mid;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

/* "filename class" lines; blank lines and '#' comments skipped. */
static int add_labelled_files(imgf_impl *m, const char *labels_path)
{
    FILE *f = fopen(labels_path, "r");
    if (!f) return qt_fail("%s: cannot open: %s", labels_path, strerror(errno));
    char line[4096];
    int ln = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        ln++;
        char name[2048], cls[1024], extra[8];
        char *p = line + strspn(line, " \t\r\n");
        if (*p == '\0' || *p == '#') continue;
        int got = sscanf(p, "%2047s %1023s %7s", name, cls, extra);
        if (got != 2) {
            rc = qt_fail("%s:%d: expected 'filename class'", labels_path, ln);
            break;
        }
        int k = class_index(m, cls);
        if (k < 0) {
            char *end = NULL;
            long v = strtol(cls, &end, 10);
            if (end && *end == '\0' && v >= 0 && v < m->n_classes) k = (int)v;
        }
        if (k < 0)
            rc = qt_fail("%s:%d: class '%s' is neither a class folder name nor an index 0..%d",
                         labels_path, ln, cls, m->n_classes - 1);
        else item_add(m, pool_add(m, name, NULL), k);
    }
    fclose(f);
    return rc;
}

/* Keeps `limit` items spread evenly over the list (the middle of each of `limit` equal
 * strides), so every class stays represented. */
static void apply_limit(imgf_impl *m, int64_t limit)
{
    if (limit <= 0 || limit >= m->n) return;
    for (int64_t k = 0; k < limit; k++) {
        int64_t i = (2 * k + 1) * m->n / (2 * limit); /* increasing, i >= k: safe in place */
        m->item_off[k] = m->item_off[i];
        m->label[k] = m->label[i];
    }
    m->n = limit;
}

static int imgf_read(const qt_dataset *d, int64_t i, qt_item_ctx *ctx, float *x, int32_t *y)
{
    const imgf_impl *m = d->impl;
    const qt_data_opts *o = &d->opts;
    char path[2400];
    snprintf(path, sizeof path, "%s/%s", m->dir, m->pool + m->item_off[i]);
    *y = m->label[i];
    uint8_t *buf;
    size_t n;
    if (qt_data_read_file(path, ctx->scratch, 0, &buf, &n, ctx->err, sizeof ctx->err) < 0) return -1;
    char why[400];
    int w = 0, h = 0;
    /* JPEG: the header gives the size, so the crop (drawn on full-size coordinates, hence
     * independent of decoding) can pick the DCT scale. PNG has no scaled decode. */
    if (qt_image_probe(buf, n, &w, &h, ctx->scratch, why, sizeof why) < 0) goto bad;
    double bx, by, bw, bh;
    bool flip = false;
    int s = o->image_size;
    if (ctx->augment) {
        int ix, iy, iw, ih;
        qt_aug_random_resized_crop(ctx->key, i, ctx->epoch, w, h, o->scale_min, 1.0, 3.0 / 4.0,
                                   4.0 / 3.0, &ix, &iy, &iw, &ih);
        bx = ix, by = iy, bw = iw, bh = ih;
        flip = o->flip && qt_aug_draw_flip(ctx->key, i, ctx->epoch);
    } else {
        qt_aug_center_box(w, h, o->resize, s, &bx, &by, &bw, &bh);
    }
    qt_image im;
    if (qt_image_decode(buf, n, QT_MAX(s / bw, s / bh), ctx->scratch, 1, &im, why, sizeof why) < 0)
        goto bad;
    double fx = (double)im.w / w, fy = (double)im.h / h;
    qt_image_resample(im.rgb, im.w, im.h, bx * fx, by * fy, bw * fx, bh * fy, s, s, flip, o->mean,
                      o->std, ctx->scratch, 3, x);
    return 0;
bad:
    snprintf(ctx->err, sizeof ctx->err, "%s: %s", path, why);
    return -1;
}

static const char *imgf_class_name(const qt_dataset *d, int k)
{
    const imgf_impl *m = d->impl;
    return m->pool + m->class_off[k];
}

static void imgf_destroy(qt_dataset *d)
{
    imgf_impl *m = d->impl;
    if (!m) return;
    free(m->pool);
    free(m->class_off);
    free(m->item_off);
    free(m->label);
    free(m);
    d->impl = NULL;
}

static const qt_dataset_ops imgf_ops = {
    .format = "imagefolder",
    .read = imgf_read,
    .raw = NULL,
    .class_name = imgf_class_name,
    .destroy = imgf_destroy,
};

int qt_imagefolder_open(qt_dataset *d)
{
    const qt_data_opts *o = &d->opts;
    if (o->image_size < 8 || o->image_size > 4096)
        return qt_fail("[data] image_size = %d: must be between 8 and 4096", o->image_size);
    if (o->resize < o->image_size)
        return qt_fail("[data] resize = %d: must be >= image_size (%d)", o->resize, o->image_size);
    if (!(o->scale_min > 0.0f && o->scale_min <= 1.0f))
        return qt_fail("[data] scale_min = %g: must be in (0, 1]", (double)o->scale_min);
    if (o->path[0] == '\0') return qt_fail("[data] path is empty: set it to the image folder root");
    if (!is_dir(o->path)) return qt_fail("%s: not a folder (expected ROOT/train/<class>/...)", o->path);

    imgf_impl *m = qt_calloc(1, sizeof *m);
    d->impl = m;
    d->ops = &imgf_ops;
    char train_dir[1100];
    snprintf(train_dir, sizeof train_dir, "%s/train", o->path);
    if (!is_dir(train_dir)) snprintf(train_dir, sizeof train_dir, "%s", o->path);
    char **classes = NULL;
    int nc = list_dir(train_dir, true, &classes);
    if (nc < 0) return nc;
    if (nc == 0) {
        free(classes);
        return qt_fail("%s: no class folders", train_dir);
    }
    m->class_off = qt_malloc((size_t)nc * sizeof *m->class_off);
    for (int k = 0; k < nc; k++) m->class_off[k] = pool_add(m, classes[k], NULL);
    m->n_classes = nc;
    free_names(classes, nc);

    int rc;
    if (d->train) {
        snprintf(m->dir, sizeof m->dir, "%s", train_dir);
        rc = add_class_folders(m);
    } else {
        if (o->val_path[0]) qt_data_resolve(o->path, o->val_path, m->dir, sizeof m->dir);
        else snprintf(m->dir, sizeof m->dir, "%s/val", o->path);
        if (!is_dir(m->dir)) return qt_fail("%s: not a folder (the evaluation images)", m->dir);
        if (o->val_labels[0]) {
            char lp[1100];
            qt_data_resolve(o->path, o->val_labels, lp, sizeof lp);
            rc = add_labelled_files(m, lp);
        } else {
            rc = add_class_folders(m);
        }
    }
    if (rc < 0) return rc;
    if (m->n == 0) return qt_fail("%s: no image files", m->dir);
    apply_limit(m, o->limit);
    d->count = m->n;
    d->classes = nc;
    d->c = 3;
    d->h = o->image_size;
    d->w = o->image_size;
    return 0;
}
