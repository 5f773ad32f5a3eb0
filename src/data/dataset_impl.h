/* dataset_impl.h — what a data set format implements (private to src/data and tests).
 *
 * A format fills a qt_dataset (count, shape, classes) and an ops table whose `read`
 * turns item i into normalised floats. `read` must be a pure function of (data set,
 * item, augment, key, epoch) — never of the calling thread or of earlier calls — so the
 * loader's output does not depend on worker timing. It writes a one-line reason into
 * ctx->err instead of printing, so the loader can choose between failing and skipping.
 */
#ifndef QT_DATA_DATASET_IMPL_H
#define QT_DATA_DATASET_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "core/philox.h"
#include "data/data.h"

/* Per-thread growable buffers and decoder handles (one per worker; never shared).
 * Slots by convention: 0 file bytes, 1 decoded pixels, 2 and 3 resampler/decoder work. */
enum { QT_SCRATCH_SLOTS = 4 };
typedef struct {
    void *buf[QT_SCRATCH_SLOTS];
    size_t cap[QT_SCRATCH_SLOTS];
    void *tj;                /* TurboJPEG decompressor, created on first use */
} qt_data_scratch;

/* Returns slot `slot` of s grown to at least `bytes` (contents not preserved). */
void *qt_scratch_get(qt_data_scratch *s, int slot, size_t bytes);
void qt_scratch_free(qt_data_scratch *s);

typedef struct {
    bool augment;            /* apply training augmentation */
    qt_philox_key key;       /* qt_philox_make_key(seed, QT_RNG_DATA) */
    uint32_t epoch;
    qt_data_scratch *scratch;
    char err[3072];          /* filled by read on failure: "PATH: reason" */
} qt_item_ctx;

typedef struct {
    const char *format;
    /* Item i -> x [c][h][w] normalised, *y label. 0 or negative with ctx->err set. */
    int (*read)(const qt_dataset *d, int64_t i, qt_item_ctx *ctx, float *x, int32_t *y);
    /* Raw u8 pixels of item i, or NULL (formats that decode on the fly). */
    const uint8_t *(*raw)(const qt_dataset *d, int64_t i);
    /* Name of class k, or NULL (optional: may be NULL). */
    const char *(*class_name)(const qt_dataset *d, int k);
    void (*destroy)(qt_dataset *d);
} qt_dataset_ops;

struct qt_dataset {
    const qt_dataset_ops *ops;
    qt_data_opts opts;       /* copy of the options the set was opened with */
    bool train;
    int64_t count;
    int classes, c, h, w;
    float lut[3][256];       /* u8 pixel value -> (v/255 - mean[c]) / std[c] */
    void *impl;              /* the format's own state */
};

/* Reads a whole file into scratch slot `slot` (*buf, *n). 0, or negative with err set to
 * "PATH: reason". */
int qt_data_read_file(const char *path, qt_data_scratch *s, int slot, uint8_t **buf, size_t *n,
                      char *err, size_t err_len);

/* A configured file name: as given when absolute or present from the working directory,
 * else joined to `root` (the data set folder). Never fails; the caller checks existence. */
void qt_data_resolve(const char *root, const char *name, char *out, size_t cap);

/* Fills d->lut from d->opts.mean/std; returns negative (message) for a std <= 0. */
int qt_dataset_init_lut(qt_dataset *d);

/* Sequence data (seqdata.c -> seqloader.c): utterance i into x with `stride` floats
 * between frames and labels into y with `ystride` between frames (the batch layout
 * [t][n][dim] passes n*dim and n). Uses scratch slots 0..2. 0 or negative (err set). */
int qt_seq_read_strided(const qt_seq_dataset *d, int64_t i, float *x, size_t stride, int32_t *y,
                        size_t ystride, qt_data_scratch *s, char *err, size_t err_len);

/* Format constructors (fill *d's fields and impl; d->opts, d->train already set). */
int qt_cifar_open(qt_dataset *d);
int qt_imagefolder_open(qt_dataset *d);

#endif
