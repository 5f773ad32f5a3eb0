/* data.h — qtrain's data module: data sets (know their item count and how to read item i)
 * and the threaded loader (decodes, augments and normalises whole batches ahead of the
 * training step, each rank reading its shard of one shared permutation per epoch).
 *
 * Promises:
 * - Batches are a pure function of (data set, options, seed, rank, world, epoch, step):
 *   the number of worker threads, their timing and where a run was resumed change nothing.
 * - Randomness comes from Philox (core/philox.h), key = (seed, QT_RNG_DATA). Counter
 *   words {block, step, rank} are used as {item or position, epoch, sub-stream}:
 *   sub-stream 0 = the epoch's permutation (block = position), sub-stream 1 + j = the
 *   j-th block of augmentation draws of item `block` in that epoch.
 * - A user-facing error (missing or truncated file, bad label) prints ONE line naming the
 *   file, through qt_fail(), and the call returns a negative value.
 * - This module knows no layers and no MPI: sharding takes rank and world as numbers.
 */
#ifndef QT_DATA_DATA_H
#define QT_DATA_DATA_H

#include <stdbool.h>
#include <stdint.h>

enum { QT_DATA_ON_ERROR_FAIL = 0, QT_DATA_ON_ERROR_SKIP = 1 };

typedef struct {              /* the [data] config section; the config module fills it */
    char format[16];          /* "cifar10" | "cifar100" | "imagefolder" | "htk" */
    char path[1024];          /* folder holding the data set's files (see each format) */
    int batch;                /* items (images, utterances) per batch, per rank */
    int workers;              /* loader threads (>= 1), default 2 */
    int prefetch;             /* batch buffers in the ring (>= 1), default 4 */
    bool augment;             /* train only: cifar random crop + flip; imagefolder random-
                                 resized-crop + flip; htk: nothing */
    int crop_pad;             /* cifar: zero padding of the random crop (4) */
    bool flip;                /* true: horizontal flip with probability 1/2 */
    float mean[3], std[3];    /* per-channel normalisation, in [0,1] pixel units */
    bool drop_last;           /* train: drop the last partial global batch (else wrap) */
    int on_error;             /* QT_DATA_ON_ERROR_FAIL | QT_DATA_ON_ERROR_SKIP */
    int64_t limit;            /* 0 = all items; else only N (cifar, htk: the first N;
                                 imagefolder: N spread evenly so every class appears) */

    /* imagefolder: PATH/train/<class>/<file> (or PATH/<class>/<file> when there is no
     * train/ folder) and PATH/val (class folders, or flat with val_labels). */
    int image_size;           /* output side of training and eval crops (224) */
    int resize;               /* eval: shorter side resized to this, then centre crop (256) */
    float scale_min;          /* train: random-resized-crop area fraction lower bound (0.08);
                                 upper bound 1, aspect ratio 3/4..4/3 as torchvision */
    char val_path[1024];      /* eval folder; "" = PATH/val */
    char val_labels[1024];    /* "" = val_path has class folders; else a file of
                                 "filename class" lines (class: folder name or index) for a
                                 flat val_path */

    /* htk (speech): file names are taken as given, then relative to PATH. */
    char scp[1024];           /* training list: one feature file per line */
    char val_scp[1024];       /* eval list */
    char mlf[1024];           /* master label file with frame-level labels for both lists */
    char labels[1024];        /* label list: one label name per line, line k = class k */
    char norm[1024];          /* "" = per-feature mean/std from the training list; else a file
                                 with the F means on line 1 and the F stds on line 2 */
    int context;              /* frames of context spliced on each side (0): F*(2c+1) inputs */
} qt_data_opts;

/* Defaults: cifar10, batch 128, workers 2, prefetch 4, augment on, pad 4, flip on,
 * CIFAR-10 mean (0.4914, 0.4822, 0.4465) / std (0.2470, 0.2435, 0.2616), drop_last on,
 * on_error fail, no limit, empty path; image_size 224, resize 256, scale_min 0.08;
 * context 0, all other file names empty. */
void qt_data_opts_default(qt_data_opts *o);

/* ---- data sets ---------------------------------------------------------------------- */
typedef struct qt_dataset qt_dataset;

/* Opens the train (train=true) or test split of o->format under o->path and validates
 * every file (sizes, labels) so that later reads cannot fail on those grounds.
 * CIFAR-10: data_batch_1..5.bin (train) or test_batch.bin, each a sequence of 3073-byte
 * records (label byte 0..9, then 1024 R, 1024 G, 1024 B bytes, rows top to bottom).
 * CIFAR-100: train.bin or test.bin, 3074-byte records (coarse label 0..19, fine label
 * 0..99, pixels); the fine label is used. `path` may also be the parent of
 * cifar-10-batches-bin/ or cifar-100-binary/. Files are mapped read-only once.
 * imagefolder: classes = sorted sub-folder names of the train folder (hidden entries
 * skipped), items = their files sorted by name, class by class; the image type is read
 * from the content. Files are decoded when read, so a corrupt image is found then (the
 * loader fails or skips it per on_error); a missing root or no class folders fail here.
 * The item shape is 3 x image_size x image_size. */
int qt_dataset_open(const qt_data_opts *o, bool train, qt_dataset **out);
int64_t qt_dataset_count(const qt_dataset *d);   /* items, after o->limit */
int qt_dataset_classes(const qt_dataset *d);
/* Shape of one item as the loader delivers it (c, h, w). */
void qt_dataset_shape(const qt_dataset *d, int *c, int *h, int *w);
/* Reads item i (0 <= i < count) as normalised floats [c][h][w] into x and its label into
 * *y. augment=true applies the training augmentation drawn for (seed, epoch, i) exactly
 * as the loader does; false gives the plain item. Returns 0 or negative (message
 * printed). Thread-safe. */
int qt_dataset_read(const qt_dataset *d, int64_t i, bool augment, uint64_t seed, int64_t epoch,
                    float *x, int32_t *y);
/* Raw 8-bit pixels [c][h][w] of item i where the format stores them (CIFAR); NULL for
 * formats that decode on the fly. For tests and tools. */
const uint8_t *qt_dataset_raw_pixels(const qt_dataset *d, int64_t i);
/* Name of class k (imagefolder: its folder name), or NULL where the format has none. */
const char *qt_dataset_class_name(const qt_dataset *d, int k);
/* Writes "index name" lines, one per class, so a run records the class index it trained
 * with (imagefolder). Returns 0 or negative (message printed). */
int qt_dataset_write_class_list(const qt_dataset *d, const char *path);
void qt_dataset_destroy(qt_dataset *d);

/* ---- loader ------------------------------------------------------------------------- */
typedef struct {
    int n;             /* items in this batch (== batch except a final eval batch, or an
                          eval batch that left out unreadable items) */
    float *x;          /* [n][c][h][w] normalised fp32 */
    int32_t *y;        /* [n] class labels */
    int64_t *items;    /* [n] data set indices the items came from (diagnostics, tests) */
    int64_t epoch;     /* epoch this batch belongs to */
    int64_t index;     /* step within the epoch, 0 .. steps_per_epoch-1 */
} qt_batch;

typedef struct qt_loader qt_loader;

/* Starts o->workers threads filling a ring of o->prefetch batch buffers for `d` (which
 * must outlive the loader). train=true: each epoch draws one permutation of all items
 * from `seed` (identical on every rank); step k of rank r takes permutation positions
 * [(k*world + r)*batch, +batch), so ranks' shards are disjoint and together cover the
 * epoch's global batches; steps_per_epoch = floor(count / (batch*world)) with
 * drop_last, else the ceiling, with the last global batch completed by wrapping to the
 * start of the permutation (every rank keeps equal, full batches). Augmentation per
 * (seed, epoch, item) when o->augment. train=false: fixed order, no augmentation, rank r
 * reads items [r*count/world, (r+1)*count/world) in order, all of them; the last batch
 * may be partial and ranks may differ by one step. Workers start on the first seek/next.
 * Returns 0 or negative (bad options; message printed). */
int qt_loader_create(qt_dataset *d, const qt_data_opts *o, bool train, int rank, int world,
                     uint64_t seed, qt_loader **out);
int64_t qt_loader_steps_per_epoch(const qt_loader *l);
/* Positions the loader so that the next batch is step `step` of epoch `epoch` (start and
 * resume). Batches already handed out must have been released. Returns 0 or negative
 * when step is out of range. */
int qt_loader_seek(qt_loader *l, int64_t epoch, int64_t step);
/* Blocks until the next batch is ready and hands it out; returns 0, or negative on a
 * read error (one line naming the file printed here, when the bad batch is reached). Batches come in order; after the last step
 * of an epoch the next call starts the next epoch. The caller may hold up to
 * o->prefetch batches at once and must give each back with qt_loader_release. */
int qt_loader_next(qt_loader *l, qt_batch **out);
void qt_loader_release(qt_loader *l, qt_batch *b);
/* Seconds the caller spent blocked in qt_loader_next since creation. */
double qt_loader_wait_seconds(const qt_loader *l);
/* Items decoded per second of wall time since the workers started. */
double qt_loader_items_per_second(const qt_loader *l);
/* Items decoded per second of worker busy time times the worker count: what the
 * workers could deliver if never throttled by a full ring (benchmarks). */
double qt_loader_capacity_items_per_second(const qt_loader *l);
/* Distinct unreadable items found so far (on_error=skip). A training batch replaces a
 * bad item by the next readable one in data set order (batch size kept); an eval batch
 * leaves it out (n shrinks). Each is named once in a warning (the first 20), and
 * destroy prints the total. */
int64_t qt_loader_skipped(const qt_loader *l);
void qt_loader_destroy(qt_loader *l);

/* ---- speech features (format = htk): utterances in time-major padded batches -------- */
/* An utterance is a run of HTK feature frames (from a whole file, or an archive range
 * "logical=archive[first,last]" in the SCP) with one class per frame from the MLF.
 * What the model sees per frame: the F stored features normalised per feature
 * ((v - mean) / std, stats from the training list unless data.norm is given), with
 * `context` frames on each side spliced in (edges repeat the first/last frame), so
 * dim = F * (2 * context + 1). */
typedef struct qt_seq_dataset qt_seq_dataset;

/* Opens the training list (o->scp) or the eval list (o->val_scp) with o->mlf and
 * o->labels, reading every header and checking each utterance against its file size
 * and its MLF entry (all frames labelled). A bad utterance (unreadable file, header that
 * disagrees with the file size, unsupported parameter kind, no MLF entry, labels that do
 * not cover the frames) fails the open with one line naming it, or with on_error=skip is
 * left out, counted and named in a warning. The eval list computes its normalisation
 * from the training list (o->scp) unless o->norm is set. 0 or negative. */
int qt_seq_dataset_open(const qt_data_opts *o, bool train, qt_seq_dataset **out);
int64_t qt_seq_dataset_count(const qt_seq_dataset *d);          /* utterances */
int64_t qt_seq_dataset_frames(const qt_seq_dataset *d);         /* frames, all utterances */
int qt_seq_dataset_length(const qt_seq_dataset *d, int64_t i);  /* frames of utterance i */
int qt_seq_dataset_dim(const qt_seq_dataset *d);                /* inputs per frame */
int qt_seq_dataset_features(const qt_seq_dataset *d);           /* F stored per frame */
int qt_seq_dataset_classes(const qt_seq_dataset *d);            /* labels in the list */
const char *qt_seq_dataset_class_name(const qt_seq_dataset *d, int k);
int64_t qt_seq_dataset_skipped(const qt_seq_dataset *d);        /* left out at open */
/* The per-feature normalisation in use: F means and F standard deviations. */
void qt_seq_dataset_norm(const qt_seq_dataset *d, const float **mean, const float **std);
/* Writes the normalisation as data.norm reads it (line 1: F means, line 2: F stds). */
int qt_seq_dataset_write_norm(const qt_seq_dataset *d, const char *path);
/* Utterance i: x [len][dim] normalised and spliced, y [len] frame classes. 0 or
 * negative (message printed). Thread-safe. */
int qt_seq_dataset_read(const qt_seq_dataset *d, int64_t i, float *x, int32_t *y);
void qt_seq_dataset_destroy(qt_seq_dataset *d);

typedef struct {
    int n;             /* utterances */
    int t;             /* frames of the longest one: the padded length */
    int dim;           /* inputs per frame */
    float *x;          /* [t][n][dim], zero on padding */
    float *mask;       /* [t][n]: 1 for a real frame, 0 for padding (loss and accuracy
                          must weight by it) */
    int32_t *y;        /* [t][n] frame classes, -1 on padding */
    int32_t *lengths;  /* [n] */
    int64_t *items;    /* [n] utterance indices */
    int64_t frames;    /* real frames: sum of lengths */
    int64_t epoch, index;
} qt_seq_batch;

typedef struct qt_seq_loader qt_seq_loader;

/* Batches utterances of similar length. train=true: per epoch, a permutation of all
 * utterances from (seed, epoch) is cut into pools of 50 batches; each pool is sorted by
 * length and cut into batches of o->batch; the batch order is then shuffled (a second
 * stream of the same seed). Rank r takes batches r, r + world, ...; steps per epoch =
 * floor(batches / world) (with drop_last partial batches are dropped first), else the
 * ceiling with wrap-around. train=false: utterances sorted by length (stable), batches
 * of o->batch in that order, rank r takes r, r + world, ...: every utterance once.
 * Batches are a pure function of (seed, rank, world, epoch, step), whatever the worker
 * count. An utterance that fails to read later (file changed) fails the batch, or with
 * on_error=skip is left out of it. */
int qt_seq_loader_create(qt_seq_dataset *d, const qt_data_opts *o, bool train, int rank,
                         int world, uint64_t seed, qt_seq_loader **out);
int64_t qt_seq_loader_steps_per_epoch(const qt_seq_loader *l);
int qt_seq_loader_seek(qt_seq_loader *l, int64_t epoch, int64_t step);
/* As qt_loader_next / qt_loader_release. */
int qt_seq_loader_next(qt_seq_loader *l, qt_seq_batch **out);
void qt_seq_loader_release(qt_seq_loader *l, qt_seq_batch *b);
double qt_seq_loader_wait_seconds(const qt_seq_loader *l);
/* Real (unpadded) frames decoded per second of wall time since the workers started,
 * and per worker-busy second times the worker count (capacity). */
double qt_seq_loader_frames_per_second(const qt_seq_loader *l);
double qt_seq_loader_capacity_frames_per_second(const qt_seq_loader *l);
int64_t qt_seq_loader_skipped(const qt_seq_loader *l);
void qt_seq_loader_destroy(qt_seq_loader *l);

/* ---- generated CIFAR-like data (tests, quickstart) ---------------------------------- */
typedef struct {
    int64_t n_train, n_test;
    uint64_t seed;
    int classes;              /* <= 10: CIFAR-10 layout; 11..100: CIFAR-100 layout */
    float noise;              /* per-pixel Gaussian noise sigma in 0..255 units (24) */
    int imagefolder_size;     /* 0: CIFAR binary files; > 0: ImageNet layout instead,
                                 dir/{train,val}/class_KK/NNNNNN.{jpg,png} of this side
                                 (JPEG quality 92, every 5th image PNG) */
} qt_gen_opts;
/* Writes a small learnable data set in the exact CIFAR-10 (or CIFAR-100) binary layout
 * (or an image folder tree) into folder `dir` (created if missing). See
 * gen_cifar_like.c for what the images are. Returns 0 or negative (message printed). */
int qt_gen_cifar_like(const char *dir, const qt_gen_opts *g);

/* ---- generated speech-like data (tests, quickstart_speech) -------------------------- */
typedef struct {
    int64_t n_train, n_test;  /* utterances per list (>= 1 each; CLI: 400, 100) */
    uint64_t seed;
    int features;             /* F stored per frame (CLI: 40), F >= classes */
    int classes;              /* K event kinds (CLI: 4); the label list has K + 1 names:
                                 "sil" then "ev0" .. "ev<K-1>" */
} qt_gen_speech_opts;
/* Writes a small speech-like HTK/MLF data set whose frame labels need memory into folder
 * `dir` (created if missing): train.scp, test.scp, feats/{tr,te}NNNNNN.htk, labels.mlf,
 * labels.list (see gen_speech_like.c). Open it with data.format = htk, path = dir,
 * scp = train.scp, val_scp = test.scp, mlf = labels.mlf, labels = labels.list.
 * Output is a pure function of *g. Returns 0 or negative (message printed). */
int qt_gen_speech_like(const char *dir, const qt_gen_speech_opts *g);

/* What utterance `index` of list `split` (0 train, 1 test) holds: its length and its
 * event bursts (start frame, frames, kind 0..K-1, in time order). Frame t's class is
 * 1 + kind of the last burst with start <= t, or 0 (sil) before the first. */
enum { QT_GEN_SPEECH_MAX_EVENTS = 16 };
typedef struct {
    int frames;
    int n_events;
    int start[QT_GEN_SPEECH_MAX_EVENTS], length[QT_GEN_SPEECH_MAX_EVENTS],
        kind[QT_GEN_SPEECH_MAX_EVENTS];
} qt_gen_speech_plan;
void qt_gen_speech_describe(const qt_gen_speech_opts *g, int split, int64_t index,
                            qt_gen_speech_plan *p);

#endif
