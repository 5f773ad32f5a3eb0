/* cifar.c — CIFAR-10 / CIFAR-100 binary files exactly as distributed.
 *
 * CIFAR-10 (cifar-10-batches-bin/): data_batch_1.bin .. data_batch_5.bin (train) and
 * test_batch.bin, each a run of 3073-byte records: one label byte (0..9), then 3072
 * pixel bytes: the 1024 R values, 1024 G, 1024 B, each plane 32 rows of 32, top first.
 * CIFAR-100 (cifar-100-binary/): train.bin, test.bin; 3074-byte records: coarse label
 * (0..19), fine label (0..99), then the pixels. We train on the fine label.
 *
 * Invariants after qt_cifar_open: every file is mapped read-only, its size is a whole
 * number of records and every label is in range, so reads cannot fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/qt.h"
#include "data/augment.h"
#include "data/dataset_impl.h"

enum { CIFAR_PIXELS = 3072, CIFAR_MAX_FILES = 5 };

typedef struct {
    const uint8_t *map;
    size_t bytes;
    int64_t n;
} cifar_file;

typedef struct {
    cifar_file files[CIFAR_MAX_FILES];
    int n_files;
    int64_t first[CIFAR_MAX_FILES + 1]; /* first item of each file; first[n_files] = total */
    int record;                         /* 3073 or 3074 */
    int label_offset;                   /* 0 or 1: the byte we train on */
} cifar_impl;

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Maps one file and checks its size and labels. */
static int cifar_map(cifar_impl *c, cifar_file *f, const char *path, bool cifar100)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qt_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return qt_fail("%s: cannot stat: %s", path, strerror(e));
    }
    size_t bytes = (size_t)st.st_size;
    if (bytes % (size_t)c->record != 0) {
        close(fd);
        return qt_fail("%s: truncated: %zu bytes is not a multiple of %d", path, bytes, c->record);
    }
    f->n = (int64_t)(bytes / (size_t)c->record);
    f->bytes = bytes;
    f->map = NULL;
    if (bytes > 0) {
        void *m = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return qt_fail("%s: cannot map: %s", path, strerror(e));
        }
        f->map = m;
    }
    close(fd);
    for (int64_t i = 0; i < f->n; i++) {
        const uint8_t *r = f->map + i * c->record;
        if (cifar100 && (r[0] >= 20 || r[1] >= 100))
            return qt_fail("%s: record %lld: labels (coarse %d, fine %d) out of range 0..19, 0..99",
                           path, (long long)i, r[0], r[1]);
        if (!cifar100 && r[0] >= 10)
            return qt_fail("%s: record %lld: label %d out of range 0..9", path, (long long)i, r[0]);
    }
    return 0;
}

static const uint8_t *cifar_record(const qt_dataset *d, int64_t i)
{
    const cifar_impl *c = d->impl;
    int k = 0;
    while (i >= c->first[k + 1]) k++;
    return c->files[k].map + (i - c->first[k]) * c->record;
}

static const uint8_t *cifar_raw(const qt_dataset *d, int64_t i)
{
    const cifar_impl *c = d->impl;
    return cifar_record(d, i) + c->label_offset + 1;
}

static int cifar_read(const qt_dataset *d, int64_t i, qt_item_ctx *ctx, float *x, int32_t *y)
{
    const cifar_impl *c = d->impl;
    const uint8_t *r = cifar_record(d, i);
    *y = r[c->label_offset];
    int dy = 0, dx = 0;
    bool flip = false;
    if (ctx->augment)
        qt_aug_draw_crop_flip(ctx->key, i, ctx->epoch, d->opts.crop_pad, d->opts.flip, &dy, &dx,
                              &flip);
    qt_aug_crop_flip_u8(r + c->label_offset + 1, 3, 32, 32, dy, dx, flip,
                        (const float(*)[256])d->lut, x);
    return 0;
}

static void cifar_destroy(qt_dataset *d)
{
    cifar_impl *c = d->impl;
    if (!c) return;
    for (int k = 0; k < CIFAR_MAX_FILES; k++)
        if (c->files[k].map) munmap((void *)c->files[k].map, c->files[k].bytes);
    free(c);
    d->impl = NULL;
}

static const qt_dataset_ops cifar_ops = {
    .format = "cifar",
    .read = cifar_read,
    .raw = cifar_raw,
    .destroy = cifar_destroy,
};

int qt_cifar_open(qt_dataset *d)
{
    const qt_data_opts *o = &d->opts;
    bool cifar100 = strcmp(o->format, "cifar100") == 0;
    const char *train10[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                             "data_batch_4.bin", "data_batch_5.bin"};
    const char *test10[] = {"test_batch.bin"};
    const char *train100[] = {"train.bin"};
    const char *test100[] = {"test.bin"};
    const char **names = cifar100 ? (d->train ? train100 : test100) : (d->train ? train10 : test10);
    int n_names = (!cifar100 && d->train) ? 5 : 1;
    const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";

    if (o->crop_pad < 0 || o->crop_pad > 32)
        return qt_fail("[data] crop_pad = %d: must be between 0 and 32", o->crop_pad);
    struct stat st;
    if (o->path[0] == '\0') return qt_fail("[data] path is empty: set it to the %s folder", sub);
    if (stat(o->path, &st) != 0 || !S_ISDIR(st.st_mode))
        return qt_fail("%s: not a folder (expected the %s folder)", o->path, sub);

    /* The folder holding the files, or its parent as unpacked from the tarball. */
    char dir[1200], path[1300];
    snprintf(dir, sizeof dir, "%s", o->path);
    snprintf(path, sizeof path, "%s/%s", dir, names[0]);
    if (!file_exists(path)) {
        char alt[1300];
        snprintf(alt, sizeof alt, "%s/%s/%s", o->path, sub, names[0]);
        if (!file_exists(alt)) return qt_fail("%s: missing (not a %s folder)", path, sub);
        snprintf(dir, sizeof dir, "%s/%s", o->path, sub);
    }

    cifar_impl *c = qt_calloc(1, sizeof *c);
    d->impl = c;
    d->ops = &cifar_ops;
    c->record = cifar100 ? 3074 : 3073;
    c->label_offset = cifar100 ? 1 : 0;
    c->n_files = n_names;
    for (int k = 0; k < n_names; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        if (!file_exists(path)) return qt_fail("%s: missing", path);
        int rc = cifar_map(c, &c->files[k], path, cifar100);
        if (rc < 0) return rc;
        c->first[k + 1] = c->first[k] + c->files[k].n;
    }
    d->count = c->first[n_names];
    if (d->count == 0) return qt_fail("%s: no records in %s", dir, names[0]);
    d->classes = cifar100 ? 100 : 10;
    d->c = 3;
    d->h = 32;
    d->w = 32;
    return 0;
}
