/* loader.c — the batch loader for image-like data sets: which items make batch
 * (epoch, step) on this rank, and filling batch buffers through the prefetch ring
 * (ring.c). Batch s = epoch * steps_per_epoch + step is a pure function of (data set,
 * options, seed, rank, world, s).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "data/dataset_impl.h"
#include "data/ring.h"

enum { PERM_CACHE = 2 };

struct qt_loader {
    qt_dataset *d;
    qt_data_opts o;
    bool train, augment;
    int rank, world;
    qt_philox_key key;
    int64_t n_items;                 /* data set count */
    int64_t steps;                   /* per epoch, this rank */
    int64_t shard_begin, shard_end;  /* eval: this rank's items */
    size_t item_floats;
    qt_batch *batches;               /* the ring's payloads */
    int n_batches;
    qt_ring *ring;

    pthread_mutex_t perm_mu;         /* guards the permutation cache and `skipped` */
    int64_t perm_epoch[PERM_CACHE];
    int64_t *perm[PERM_CACHE];
    int perm_evict;
    int64_t skipped;                 /* distinct unreadable items found (on_error=skip) */
    uint8_t *bad;                    /* [n_items] 1 = known unreadable; NULL unless skip */
};

/* Copies positions pos[k] (k < n, each < n_items) of epoch's permutation to items[k]. */
static void permuted_items(qt_loader *l, int64_t epoch, const int64_t *pos, int n, int64_t *items)
{
    pthread_mutex_lock(&l->perm_mu);
    int e = -1;
    for (int k = 0; k < PERM_CACHE; k++)
        if (l->perm[k] && l->perm_epoch[k] == epoch) e = k;
    if (e < 0) {
        e = l->perm_evict;
        l->perm_evict = (l->perm_evict + 1) % PERM_CACHE;
        if (!l->perm[e]) l->perm[e] = qt_malloc((size_t)l->n_items * sizeof(int64_t));
        qt_data_permutation(l->key, epoch, l->n_items, l->perm[e]);
        l->perm_epoch[e] = epoch;
    }
    for (int k = 0; k < n; k++) items[k] = l->perm[e][pos[k]];
    pthread_mutex_unlock(&l->perm_mu);
}

/* Reads one item; on failure records it as bad (first time: a warning when skipping). */
static int read_item(qt_loader *l, int64_t item, qt_item_ctx *ctx, float *x, int32_t *y)
{
    if (l->bad && l->bad[item]) return -1; /* known bad: failing again is the same answer */
    int rc = l->d->ops->read(l->d, item, ctx, x, y);
    if (rc < 0 && l->bad) {
        pthread_mutex_lock(&l->perm_mu);
        if (!l->bad[item]) {
            l->bad[item] = 1;
            if (++l->skipped <= 20) qt_warn("%s (skipped)", ctx->err);
        }
        pthread_mutex_unlock(&l->perm_mu);
    }
    return rc;
}

/* Fills batch `seq`; returns the items read or negative (reason in err). */
static int64_t fill_batch(void *ctx_, void *payload, int64_t seq, qt_data_scratch *scratch,
                          char *err, size_t err_len)
{
    qt_loader *l = ctx_;
    qt_batch *b = payload;
    int64_t epoch = seq / l->steps, step = seq % l->steps;
    int batch = l->o.batch;
    b->epoch = epoch;
    b->index = step;
    if (l->train) {
        int64_t *pos = qt_malloc((size_t)batch * sizeof(int64_t));
        for (int k = 0; k < batch; k++)
            pos[k] = ((step * l->world + l->rank) * (int64_t)batch + k) % l->n_items;
        permuted_items(l, epoch, pos, batch, b->items);
        free(pos);
        b->n = batch;
    } else {
        int64_t first = l->shard_begin + step * batch;
        b->n = (int)QT_MIN((int64_t)batch, l->shard_end - first);
        for (int k = 0; k < b->n; k++) b->items[k] = first + k;
    }
    qt_item_ctx ctx = {.augment = l->augment, .key = l->key, .epoch = (uint32_t)epoch,
                       .scratch = scratch};
    int out = 0;
    for (int k = 0; k < b->n; k++) {
        float *x = b->x + (size_t)out * l->item_floats;
        int64_t item = b->items[k];
        int rc = read_item(l, item, &ctx, x, &b->y[out]);
        if (rc < 0 && l->o.on_error != QT_DATA_ON_ERROR_SKIP) {
            snprintf(err, err_len, "%s", ctx.err);
            return -1;
        }
        if (rc < 0 && !l->train) continue; /* eval: leave it out, the batch gets shorter */
        /* train: substitute the next readable item, a deterministic choice, so the batch
         * stays a pure function of its sequence number and keeps its size. */
        for (int64_t tries = 1; rc < 0 && tries < l->n_items; tries++) {
            item = (item + 1) % l->n_items;
            rc = read_item(l, item, &ctx, x, &b->y[out]);
        }
        if (rc < 0) {
            snprintf(err, err_len, "%s: no readable item left", l->o.path);
            return -1;
        }
        b->items[out++] = item;
    }
    b->n = out;
    return b->n;
}

int qt_loader_create(qt_dataset *d, const qt_data_opts *o, bool train, int rank, int world,
                     uint64_t seed, qt_loader **out)
{
    *out = NULL;
    if (o->batch < 1) return qt_fail("[data] batch = %d: must be >= 1", o->batch);
    if (o->workers < 1 || o->workers > 256)
        return qt_fail("[data] workers = %d: must be between 1 and 256", o->workers);
    if (o->prefetch < 1 || o->prefetch > 1024)
        return qt_fail("[data] prefetch = %d: must be between 1 and 1024", o->prefetch);
    QT_ASSERT(world >= 1 && rank >= 0 && rank < world);
    int64_t n = qt_dataset_count(d), global = (int64_t)o->batch * world;
    int64_t steps, shard_begin = 0, shard_end = 0;
    if (train) {
        steps = o->drop_last ? n / global : (n + global - 1) / global;
        if (steps < 1)
            return qt_fail("%s: %lld items are fewer than one global batch (%d x %d ranks)",
                           o->path, (long long)n, o->batch, world);
    } else {
        shard_begin = n * rank / world;
        shard_end = n * (rank + 1) / world;
        steps = (shard_end - shard_begin + o->batch - 1) / o->batch;
    }

    qt_loader *l = qt_calloc(1, sizeof *l);
    l->d = d;
    l->o = *o;
    l->train = train;
    l->augment = train && o->augment;
    l->rank = rank;
    l->world = world;
    l->key = qt_philox_make_key(seed, QT_RNG_DATA);
    l->n_items = n;
    l->steps = steps;
    l->shard_begin = shard_begin;
    l->shard_end = shard_end;
    l->item_floats = (size_t)d->c * d->h * d->w;
    l->n_batches = o->prefetch;
    l->batches = qt_calloc((size_t)l->n_batches, sizeof *l->batches);
    void **payloads = qt_calloc((size_t)l->n_batches, sizeof(void *));
    for (int i = 0; i < l->n_batches; i++) {
        qt_batch *b = &l->batches[i];
        b->x = qt_aligned_alloc((size_t)o->batch * l->item_floats * sizeof(float));
        b->y = qt_calloc((size_t)o->batch, sizeof(int32_t));
        b->items = qt_calloc((size_t)o->batch, sizeof(int64_t));
        payloads[i] = b;
    }
    if (o->on_error == QT_DATA_ON_ERROR_SKIP) l->bad = qt_calloc((size_t)n, 1);
    pthread_mutex_init(&l->perm_mu, NULL);
    int rc = qt_ring_create(l->n_batches, o->workers, fill_batch, l, payloads, &l->ring);
    free(payloads);
    if (rc < 0) {
        qt_loader_destroy(l);
        return rc;
    }
    *out = l;
    return 0;
}

int64_t qt_loader_steps_per_epoch(const qt_loader *l) { return l->steps; }

int qt_loader_seek(qt_loader *l, int64_t epoch, int64_t step)
{
    return qt_ring_seek_step(l->ring, l->steps, epoch, step, "data loader");
}

int qt_loader_next(qt_loader *l, qt_batch **out)
{
    void *p = NULL;
    int rc = qt_ring_next_step(l->ring, l->steps, l->rank, "data loader", &p);
    *out = p;
    return rc;
}

void qt_loader_release(qt_loader *l, qt_batch *b)
{
    if (b) qt_ring_release(l->ring, b);
}

double qt_loader_wait_seconds(const qt_loader *l) { return qt_ring_wait_seconds(l->ring); }
double qt_loader_items_per_second(const qt_loader *l) { return qt_ring_items_per_second(l->ring); }
double qt_loader_capacity_items_per_second(const qt_loader *l)
{
    return qt_ring_capacity_items_per_second(l->ring);
}

int64_t qt_loader_skipped(const qt_loader *l)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&l->perm_mu; /* the lock is not the value */
    pthread_mutex_lock(mu);
    int64_t s = l->skipped;
    pthread_mutex_unlock(mu);
    return s;
}

void qt_loader_destroy(qt_loader *l)
{
    if (!l) return;
    qt_ring_destroy(l->ring); /* joins the workers first */
    if (l->skipped > 0)
        qt_warn("%s: %lld unreadable items skipped (the first 20 are named above)", l->o.path,
                (long long)l->skipped);
    for (int i = 0; i < l->n_batches; i++) {
        qt_free_aligned(l->batches[i].x);
        free(l->batches[i].y);
        free(l->batches[i].items);
    }
    for (int k = 0; k < PERM_CACHE; k++) free(l->perm[k]);
    free(l->bad);
    pthread_mutex_destroy(&l->perm_mu);
    free(l->batches);
    free(l);
}
