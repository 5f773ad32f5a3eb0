/* seqloader.c — length-bucketed, padded, masked batches of utterances through the
 * prefetch ring (see data.h for the batching rules, ring.h for the threading).
 *
 * An epoch's plan (which utterances form each global batch, in which order) is a pure
 * function of (seed, epoch, data set): workers compute it on demand, cache the last
 * two, and copy out the utterance list of the batch they fill.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "data/dataset_impl.h"
#include "data/ring.h"

enum {
    POOL_BATCHES = 50,            /* utterances sorted together: batch x 50 */
    PLAN_CACHE = 2,
};
/* Not in the enum: a constant above INT_MAX makes GCC 13 (C23 enums) give the whole
 * enumeration an unsigned type, and `int k < PLAN_CACHE` then fails -Werror=sign-compare. */
#define BATCH_ORDER_STREAM 0xFFFFFF00u

typedef struct {
    qt_seq_batch b;               /* first member: a qt_seq_batch * is a slot pointer */
    size_t cap_x, cap_ty;         /* floats in x, entries in mask / y */
} seq_slot;

typedef struct {
    int64_t epoch;                /* -1 = empty */
    int64_t *order;               /* [n] utterances, batch after batch */
    int64_t *start;               /* [n_batches] first position in order, shuffled */
    int32_t *count;               /* [n_batches] */
} epoch_plan;

struct qt_seq_loader {
    qt_seq_dataset *d;
    qt_data_opts o;
    bool train;
    int rank, world;
    qt_philox_key key;
    int64_t n;                    /* utterances */
    int64_t n_batches;            /* global batches per epoch */
    int64_t steps;
    seq_slot *slots;
    qt_ring *ring;
    pthread_mutex_t mu;           /* guards plans and skipped */
    epoch_plan plans[PLAN_CACHE];
    int evict;
    int64_t skipped;
};

typedef struct {
    const qt_seq_dataset *d;
    const int64_t *idx;
} by_length_ctx;

/* Length, then the original position: a stable order that does not depend on qsort. */
static int cmp_length(const void *a, const void *b, void *arg)
{
    const by_length_ctx *c = arg;
    int64_t i = c->idx[*(const int64_t *)a], j = c->idx[*(const int64_t *)b];
    int li = qt_seq_dataset_length(c->d, i), lj = qt_seq_dataset_length(c->d, j);
    if (li != lj) return li < lj ? -1 : 1;
    return *(const int64_t *)a < *(const int64_t *)b ? -1 : (*(const int64_t *)a > *(const int64_t *)b);
}

/* Sorts order[lo..hi) by utterance length, stably. */
static void sort_by_length(const qt_seq_dataset *d, int64_t *order, int64_t lo, int64_t hi)
{
    int64_t m = hi - lo;
    int64_t *pos = qt_malloc((size_t)m * sizeof *pos), *tmp = qt_malloc((size_t)m * sizeof *tmp);
    for (int64_t k = 0; k < m; k++) pos[k] = k;
    by_length_ctx c = {d, order + lo};
    qsort_r(pos, (size_t)m, sizeof *pos, cmp_length, &c);
    for (int64_t k = 0; k < m; k++) tmp[k] = order[lo + pos[k]];
    memcpy(order + lo, tmp, (size_t)m * sizeof *tmp);
    free(pos);
    free(tmp);
}

/* Batches (start, count) of `batch` over order[0..n), each pool of `pool` sorted; with
 * drop_last, partial batches are left out. Returns the count. */
static int64_t cut_batches(const qt_seq_dataset *d, int64_t *order, int64_t n, int batch, int64_t pool,
                           bool drop_last, int64_t *start, int32_t *count)
{
    int64_t nb = 0;
    for (int64_t lo = 0; lo < n; lo += pool) {
        int64_t hi = QT_MIN(lo + pool, n);
        sort_by_length(d, order, lo, hi);
        for (int64_t b = lo; b < hi; b += batch) {
            int32_t c = (int32_t)QT_MIN((int64_t)batch, hi - b);
            if (drop_last && c < batch) continue;
            if (start) start[nb] = b, count[nb] = c;
            nb++;
        }
    }
    return nb;
}

static void build_plan(qt_seq_loader *l, int64_t epoch, epoch_plan *p)
{
    if (!p->order) {
        p->order = qt_malloc((size_t)l->n * sizeof *p->order);
        p->start = qt_malloc((size_t)l->n_batches * sizeof *p->start);
        p->count = qt_malloc((size_t)l->n_batches * sizeof *p->count);
    }
    int batch = l->o.batch;
    if (l->train) {
        qt_data_permutation(l->key, epoch, l->n, p->order);
        int64_t *s = qt_malloc((size_t)l->n_batches * sizeof *s), *perm = qt_malloc((size_t)l->n_batches * sizeof *perm);
        int32_t *c = qt_malloc((size_t)l->n_batches * sizeof *c);
        int64_t nb = cut_batches(l->d, p->order, l->n, batch, (int64_t)batch * POOL_BATCHES, l->o.drop_last, s, c);
        QT_ASSERT(nb == l->n_batches);
        qt_data_permutation_stream(l->key, epoch, BATCH_ORDER_STREAM, nb, perm);
        for (int64_t k = 0; k < nb; k++) {
            p->start[k] = s[perm[k]];
            p->count[k] = c[perm[k]];
        }
        free(s);
        free(perm);
        free(c);
    } else {
        for (int64_t i = 0; i < l->n; i++) p->order[i] = i;
        int64_t nb = cut_batches(l->d, p->order, l->n, batch, l->n, false, p->start, p->count);
        QT_ASSERT(nb == l->n_batches);
    }
    p->epoch = epoch;
}

/* The utterances of global batch g of `epoch` into items; returns their count. */
static int plan_batch(qt_seq_loader *l, int64_t epoch, int64_t g, int64_t *items)
{
    pthread_mutex_lock(&l->mu);
    epoch_plan *p = NULL;
    for (int k = 0; k < PLAN_CACHE; k++)
        if (l->plans[k].epoch == epoch) p = &l->plans[k];
    if (!p) {
        p = &l->plans[l->evict];
        l->evict = (l->evict + 1) % PLAN_CACHE;
        build_plan(l, l->train ? epoch : 0, p);
        p->epoch = epoch;
    }
    int c = p->count[g];
    memcpy(items, p->order + p->start[g], (size_t)c * sizeof *items);
    pthread_mutex_unlock(&l->mu);
    return c;
}

static void grow(seq_slot *s, int n, int t, int dim)
{
    size_t need_x = (size_t)t * n * dim, need_ty = (size_t)t * n;
    if (need_x > s->cap_x) {
        qt_free_aligned(s->b.x);
        s->cap_x = need_x + need_x / 4;
        s->b.x = qt_aligned_alloc(s->cap_x * sizeof(float));
    }
    if (need_ty > s->cap_ty) {
        free(s->b.mask);
        free(s->b.y);
        s->cap_ty = need_ty + need_ty / 4;
        s->b.mask = qt_malloc(s->cap_ty * sizeof(float));
        s->b.y = qt_malloc(s->cap_ty * sizeof(int32_t));
    }
}

static int64_t fill_seq(void *ctx, void *payload, int64_t seq, qt_data_scratch *scratch, char *err,
                        size_t err_len)
{
    qt_seq_loader *l = ctx;
    seq_slot *s = payload;
    qt_seq_batch *b = &s->b;
    int64_t epoch = seq / l->steps, step = seq % l->steps;
    int64_t g = (step * l->world + l->rank) % l->n_batches;
    b->epoch = epoch;
    b->index = step;
    int n = plan_batch(l, epoch, g, b->items);
    int dim = qt_seq_dataset_dim(l->d), t = 0;
    for (int j = 0; j < n; j++) t = QT_MAX(t, qt_seq_dataset_length(l->d, b->items[j]));
    grow(s, n, t, dim);
    b->n = n;
    b->t = t;
    b->dim = dim;
    memset(b->x, 0, (size_t)t * n * dim * sizeof(float));
    for (size_t k = 0; k < (size_t)t * n; k++) {
        b->mask[k] = 0.0f;
        b->y[k] = -1;
    }
    /* Read each utterance into column j; a failed one (skip) is dropped by moving the
     * following ones left, which keeps the batch a function of its sequence number. */
    int out = 0;
    int64_t frames = 0;
    for (int j = 0; j < n; j++) {
        int64_t item = b->items[j];
        int len = qt_seq_dataset_length(l->d, item);
        int rc = qt_seq_read_strided(l->d, item, b->x + (size_t)out * dim, (size_t)n * dim,
                                     b->y + out, (size_t)n, scratch, err, err_len);
        if (rc < 0) {
            if (l->o.on_error != QT_DATA_ON_ERROR_SKIP) return -1;
            pthread_mutex_lock(&l->mu);
            if (++l->skipped <= 20) qt_warn("%s (skipped)", err);
            pthread_mutex_unlock(&l->mu);
            for (int tt = 0; tt < t; tt++) { /* undo a partial write */
                memset(b->x + ((size_t)tt * n + out) * dim, 0, (size_t)dim * sizeof(float));
                b->y[(size_t)tt * n + out] = -1;
            }
            continue;
        }
        for (int tt = 0; tt < len; tt++) b->mask[(size_t)tt * n + out] = 1.0f;
        b->lengths[out] = len;
        b->items[out] = item;
        frames += len;
        out++;
    }
    if (out != n) {
        /* on_error = skip dropped some: re-pack [t][n] to [t][out] to match b->n. */
        for (int tt = 0; tt < t; tt++) {
            memmove(b->x + (size_t)tt * out * dim, b->x + (size_t)tt * n * dim, (size_t)out * dim * sizeof(float));
            memmove(b->mask + (size_t)tt * out, b->mask + (size_t)tt * n, (size_t)out * sizeof(float));
            memmove(b->y + (size_t)tt * out, b->y + (size_t)tt * n, (size_t)out * sizeof(int32_t));
        }
    }
    b->n = out;
    b->frames = frames;
    return frames;
}

int qt_seq_loader_create(qt_seq_dataset *d, const qt_data_opts *o, bool train, int rank,
                         int world, uint64_t seed, qt_seq_loader **out)
{
    *out = NULL;
    if (o->batch < 1) return qt_fail("[data] batch = %d: must be >= 1", o->batch);
    if (o->workers < 1 || o->workers > 256)
        return qt_fail("[data] workers = %d: must be between 1 and 256", o->workers);
    if (o->prefetch < 1 || o->prefetch > 1024)
        return qt_fail("[data] prefetch = %d: must be between 1 and 1024", o->prefetch);
    QT_ASSERT(world >= 1 && rank >= 0 && rank < world);
    qt_seq_loader *l = qt_calloc(1, sizeof *l);
    l->d = d;
    l->o = *o;
    l->train = train;
    l->rank = rank;
    l->world = world;
    l->key = qt_philox_make_key(seed, QT_RNG_DATA);
    l->n = qt_seq_dataset_count(d);
    pthread_mutex_init(&l->mu, NULL);
    for (int k = 0; k < PLAN_CACHE; k++) l->plans[k].epoch = -1;
    /* The batch count depends only on the pool sizes, not on the lengths. */
    int64_t pool = train ? (int64_t)o->batch * POOL_BATCHES : l->n, nb = 0;
    for (int64_t lo = 0; lo < l->n; lo += pool) {
        int64_t m = QT_MIN(pool, l->n - lo);
        nb += (train && o->drop_last) ? m / o->batch : (m + o->batch - 1) / o->batch;
    }
    l->n_batches = nb;
    if (train) l->steps = o->drop_last ? nb / world : (nb + world - 1) / world;
    else l->steps = nb > rank ? (nb - rank + world - 1) / world : 0;
    if (train && l->steps < 1) {
        qt_seq_loader_destroy(l);
        return qt_fail("%s: %lld utterances make %lld batches of %d, fewer than the %d ranks",
                       o->scp, (long long)l->n, (long long)nb, o->batch, world);
    }
    l->slots = qt_calloc((size_t)o->prefetch, sizeof *l->slots);
    void **payloads = qt_calloc((size_t)o->prefetch, sizeof(void *));
    for (int i = 0; i < o->prefetch; i++) {
        l->slots[i].b.lengths = qt_calloc((size_t)o->batch, sizeof(int32_t));
        l->slots[i].b.items = qt_calloc((size_t)o->batch, sizeof(int64_t));
        payloads[i] = &l->slots[i];
    }
    int rc = qt_ring_create(o->prefetch, o->workers, fill_seq, l, payloads, &l->ring);
    free(payloads);
    if (rc < 0) {
        qt_seq_loader_destroy(l);
        return rc;
    }
    *out = l;
    return 0;
}

int64_t qt_seq_loader_steps_per_epoch(const qt_seq_loader *l) { return l->steps; }

int qt_seq_loader_seek(qt_seq_loader *l, int64_t epoch, int64_t step)
{
    return qt_ring_seek_step(l->ring, l->steps, epoch, step, "speech loader");
}

int qt_seq_loader_next(qt_seq_loader *l, qt_seq_batch **out)
{
    void *p = NULL;
    int rc = qt_ring_next_step(l->ring, l->steps, l->rank, "speech loader", &p);
    *out = p;
    return rc;
}

void qt_seq_loader_release(qt_seq_loader *l, qt_seq_batch *b)
{
    if (b) qt_ring_release(l->ring, b);
}

double qt_seq_loader_wait_seconds(const qt_seq_loader *l) { return qt_ring_wait_seconds(l->ring); }
double qt_seq_loader_frames_per_second(const qt_seq_loader *l) { return qt_ring_items_per_second(l->ring); }
double qt_seq_loader_capacity_frames_per_second(const qt_seq_loader *l)
{
    return qt_ring_capacity_items_per_second(l->ring);
}

int64_t qt_seq_loader_skipped(const qt_seq_loader *l)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&l->mu; /* the lock is not the value */
    pthread_mutex_lock(mu);
    int64_t s = l->skipped;
    pthread_mutex_unlock(mu);
    return s;
}

void qt_seq_loader_destroy(qt_seq_loader *l)
{
    if (!l) return;
    qt_ring_destroy(l->ring);
    if (l->skipped > 0) qt_warn("speech loader: %lld unreadable utterances skipped", (long long)l->skipped);
    for (int i = 0; l->slots && i < l->o.prefetch; i++) {
        qt_free_aligned(l->slots[i].b.x);
        free(l->slots[i].b.mask);
        free(l->slots[i].b.y);
        free(l->slots[i].b.lengths);
        free(l->slots[i].b.items);
    }
    for (int k = 0; k < PLAN_CACHE; k++) {
        free(l->plans[k].order);
        free(l->plans[k].start);
        free(l->plans[k].count);
    }
    pthread_mutex_destroy(&l->mu);
    free(l->slots);
    free(l);
}
