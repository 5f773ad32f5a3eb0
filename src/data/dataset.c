/* dataset.c — option defaults, the format registry and the format-independent part of
 * qt_dataset (see data.h, dataset_impl.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "core/qt.h"
#include "data/dataset_impl.h"

void qt_data_opts_default(qt_data_opts *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->format, "cifar10");
    o->batch = 128;
    o->workers = 2;
    o->prefetch = 4;
    o->augment = true;
    o->crop_pad = 4;
    o->flip = true;
    /* CIFAR-10 training-set statistics (torchvision's usual constants). */
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f};
    const float std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(o->mean, mean, sizeof mean);
    memcpy(o->std, std, sizeof std);
    o->drop_last = true;
    o->on_error = QT_DATA_ON_ERROR_FAIL;
    o->limit = 0;
    o->image_size = 224;
    o->resize = 256;
    o->scale_min = 0.08f;
    o->context = 0;
}

void *qt_scratch_get(qt_data_scratch *s, int slot, size_t bytes)
{
    QT_ASSERT(slot >= 0 && slot < QT_SCRATCH_SLOTS);
    if (s->cap[slot] < bytes) {
        free(s->buf[slot]);
        s->buf[slot] = qt_malloc(bytes);
        s->cap[slot] = bytes;
    }
    return s->buf[slot];
}

void qt_scratch_free(qt_data_scratch *s)
{
    for (int i = 0; i < QT_SCRATCH_SLOTS; i++) {
        free(s->buf[i]);
        s->buf[i] = NULL;
        s->cap[i] = 0;
    }
    if (s->tj) tjDestroy(s->tj);
    s->tj = NULL;
}

int qt_data_read_file(const char *path, qt_data_scratch *s, int slot, uint8_t **buf, size_t *n,
                      char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_len, "%s: not a regular file", path);
        return -1;
    }
    size_t size = (size_t)st.st_size, got = 0;
    uint8_t *p = qt_scratch_get(s, slot, size + 1);
    while (got < size) {
        ssize_t r = read(fd, p + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            snprintf(err, err_len, "%s: read failed after %zu of %zu bytes: %s", path, got, size,
                     r < 0 ? strerror(errno) : "end of file");
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = p;
    *n = size;
    return 0;
}

void qt_data_resolve(const char *root, const char *name, char *out, size_t cap)
{
    struct stat st;
    if (name[0] == '/' || root[0] == '\0' || stat(name, &st) == 0) snprintf(out, cap, "%s", name);
    else snprintf(out, cap, "%s/%s", root, name);
}

int qt_dataset_init_lut(qt_dataset *d)
{
    for (int ch = 0; ch < 3; ch++) {
        if (!(d->opts.std[ch] > 0.0f))
            return qt_fail("[data] std[%d] = %g: must be > 0", ch, (double)d->opts.std[ch]);
        for (int v = 0; v < 256; v++)
            d->lut[ch][v] = ((float)v / 255.0f - d->opts.mean[ch]) / d->opts.std[ch];
    }
    return 0;
}

typedef int (*open_fn)(qt_dataset *d);
static const struct {
    const char *format;
    open_fn open;
} formats[] = {
    {"cifar10", qt_cifar_open},
    {"cifar100", qt_cifar_open},
    {"imagefolder", qt_imagefolder_open},
};

int qt_dataset_open(const qt_data_opts *o, bool train, qt_dataset **out)
{
    *out = NULL;
    open_fn open = NULL;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strcmp(o->format, formats[i].format) == 0) open = formats[i].open;
    if (!open) return qt_fail("[data] format = '%s': unknown (cifar10, cifar100, imagefolder; htk has "
                       "its own sequence API)", o->format);
    if (o->limit < 0) return qt_fail("[data] limit = %lld: must be >= 0", (long long)o->limit);
    qt_dataset *d = qt_calloc(1, sizeof *d);
    d->opts = *o;
    d->train = train;
    int rc = qt_dataset_init_lut(d);
    if (rc == 0) rc = open(d);
    if (rc < 0) {
        if (d->ops && d->ops->destroy) d->ops->destroy(d);
        free(d);
        return rc;
    }
    if (o->limit > 0 && o->limit < d->count) d->count = o->limit;
    *out = d;
    return 0;
}

int64_t qt_dataset_count(const qt_dataset *d) { return d->count; }
int qt_dataset_classes(const qt_dataset *d) { return d->classes; }

void qt_dataset_shape(const qt_dataset *d, int *c, int *h, int *w)
{
    *c = d->c;
    *h = d->h;
    *w = d->w;
}

int qt_dataset_read(const qt_dataset *d, int64_t i, bool augment, uint64_t seed, int64_t epoch,
                    float *x, int32_t *y)
{
    if (i < 0 || i >= d->count)
        return qt_fail("%s: item %lld out of range 0..%lld", d->opts.path, (long long)i,
                       (long long)d->count - 1);
    qt_data_scratch scratch = {0};
    qt_item_ctx ctx = {.augment = augment,
                       .key = qt_philox_make_key(seed, QT_RNG_DATA),
                       .epoch = (uint32_t)epoch,
                       .scratch = &scratch};
    int rc = d->ops->read(d, i, &ctx, x, y);
    qt_scratch_free(&scratch);
    if (rc < 0) return qt_fail("%s", ctx.err);
    return 0;
}

const uint8_t *qt_dataset_raw_pixels(const qt_dataset *d, int64_t i)
{
    if (i < 0 || i >= d->count || !d->ops->raw) return NULL;
    return d->ops->raw(d, i);
}

const char *qt_dataset_class_name(const qt_dataset *d, int k)
{
    if (k < 0 || k >= d->classes || !d->ops->class_name) return NULL;
    return d->ops->class_name(d, k);
}

int qt_dataset_write_class_list(const qt_dataset *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    for (int k = 0; k < d->classes; k++) {
        const char *name = qt_dataset_class_name(d, k);
        if (name) fprintf(f, "%d %s\n", k, name);
        else fprintf(f, "%d\n", k);
    }
    if (fclose(f) != 0) return qt_fail("%s: write failed", path);
    return 0;
}

void qt_dataset_destroy(qt_dataset *d)
{
    if (!d) return;
    if (d->ops && d->ops->destroy) d->ops->destroy(d);
    free(d);
}
