/* ring.c — worker threads filling a ring of payloads ahead of the consumer (see ring.h). */
#include "data/ring.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/qt.h"

typedef enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD } slot_state;

typedef struct {
    void *payload;
    slot_state state;
    int64_t seq;
    int rc;
    char err[3200]; /* the fill's failure reason */
} ring_slot;

struct qt_ring {
    qt_ring_fill_fn fill;
    void *ctx;
    ring_slot *slots;
    int n_slots;
    pthread_t *threads;
    int n_threads;

    pthread_mutex_t mu;     /* guards everything below */
    pthread_cond_t cv_work; /* workers: a slot may be claimable, or stop */
    pthread_cond_t cv_done; /* consumer and seek: a slot finished filling */
    int64_t claim_seq, consume_seq;
    bool started, paused, stop;
    int filling;
    double t_start, wait_s, busy_s;
    int64_t items_done;
};

void qt_data_permutation(qt_philox_key key, int64_t epoch, int64_t n, int64_t *p)
{
    qt_data_permutation_stream(key, epoch, 0, n, p);
}

void qt_data_permutation_stream(qt_philox_key key, int64_t epoch, uint32_t stream, int64_t n,
                                int64_t *p)
{
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t r[4];
        qt_philox_block(key, (uint64_t)i, (uint32_t)epoch, stream, r);
        /* 64-bit modulo: bias < n / 2^64, nil for any real data set. */
        uint64_t u = ((uint64_t)r[0] << 32) | r[1];
        int64_t j = (int64_t)(u % (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static bool claimable(const qt_ring *r)
{
    return r->started && !r->paused && r->claim_seq < r->consume_seq + r->n_slots &&
           r->slots[r->claim_seq % r->n_slots].state == SLOT_FREE;
}

static void *worker_main(void *arg)
{
    qt_ring *r = arg;
    qt_data_scratch scratch = {0};
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stop && !claimable(r)) pthread_cond_wait(&r->cv_work, &r->mu);
        if (r->stop) break;
        int64_t seq = r->claim_seq++;
        ring_slot *sl = &r->slots[seq % r->n_slots];
        sl->state = SLOT_FILLING;
        sl->seq = seq;
        r->filling++;
        pthread_mutex_unlock(&r->mu);
        double t0 = qt_now();
        sl->err[0] = '\0';
        int64_t items = r->fill(r->ctx, sl->payload, seq, &scratch, sl->err, sizeof sl->err);
        double t1 = qt_now();
        pthread_mutex_lock(&r->mu);
        sl->rc = items < 0 ? -1 : 0;
        sl->state = SLOT_READY;
        r->filling--;
        r->busy_s += t1 - t0;
        if (items > 0) r->items_done += items;
        pthread_cond_broadcast(&r->cv_done);
        pthread_cond_broadcast(&r->cv_work);
    }
    pthread_mutex_unlock(&r->mu);
    qt_scratch_free(&scratch);
    return NULL;
}

int qt_ring_create(int n_slots, int n_workers, qt_ring_fill_fn fill, void *ctx, void **payloads,
                   qt_ring **out)
{
    QT_ASSERT(n_slots >= 1 && n_workers >= 1);
    qt_ring *r = qt_calloc(1, sizeof *r);
    r->fill = fill;
    r->ctx = ctx;
    r->n_slots = n_slots;
    r->slots = qt_calloc((size_t)n_slots, sizeof *r->slots);
    for (int i = 0; i < n_slots; i++) {
        r->slots[i].payload = payloads[i];
        r->slots[i].seq = -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv_work, NULL);
    pthread_cond_init(&r->cv_done, NULL);
    r->threads = qt_calloc((size_t)n_workers, sizeof(pthread_t));
    for (int i = 0; i < n_workers; i++) {
        if (pthread_create(&r->threads[i], NULL, worker_main, r) != 0) {
            qt_ring_destroy(r);
            return qt_fail("data loader: cannot start worker thread %d", i);
        }
        r->n_threads = i + 1;
    }
    *out = r;
    return 0;
}

static void start_locked(qt_ring *r)
{
    if (!r->started) {
        r->started = true;
        r->t_start = qt_now();
    }
}

void qt_ring_seek(qt_ring *r, int64_t seq)
{
    pthread_mutex_lock(&r->mu);
    r->paused = true;
    while (r->filling > 0) pthread_cond_wait(&r->cv_done, &r->mu);
    for (int i = 0; i < r->n_slots; i++) {
        QT_ASSERT(r->slots[i].state != SLOT_HELD); /* the caller releases before seeking */
        r->slots[i].state = SLOT_FREE;
        r->slots[i].seq = -1;
    }
    r->claim_seq = r->consume_seq = seq;
    r->paused = false;
    start_locked(r);
    pthread_cond_broadcast(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
}

int qt_ring_next(qt_ring *r, void **payload)
{
    pthread_mutex_lock(&r->mu);
    if (!r->started) {
        start_locked(r);
        pthread_cond_broadcast(&r->cv_work);
    }
    int64_t s = r->consume_seq;
    ring_slot *sl = &r->slots[s % r->n_slots];
    /* Holding n_slots payloads and asking for another would wait forever. */
    QT_ASSERT(sl->state != SLOT_HELD);
    double t0 = qt_now();
    while (!(sl->seq == s && sl->state == SLOT_READY)) pthread_cond_wait(&r->cv_done, &r->mu);
    r->wait_s += qt_now() - t0;
    r->consume_seq++;
    sl->state = SLOT_HELD;
    int rc = sl->rc;
    pthread_cond_broadcast(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    *payload = sl->payload;
    if (rc < 0) qt_fail("%s", sl->err);
    return rc;
}

int qt_ring_seek_step(qt_ring *r, int64_t steps, int64_t epoch, int64_t step, const char *who)
{
    if (epoch < 0 || epoch > UINT32_MAX || step < 0 || step >= steps)
        return qt_fail("%s: cannot seek to epoch %lld step %lld (%lld steps per epoch)", who, (long long)epoch,
                       (long long)step, (long long)steps);
    qt_ring_seek(r, epoch * steps + step);
    return 0;
}

int qt_ring_next_step(qt_ring *r, int64_t steps, int rank, const char *who, void **payload)
{
    *payload = NULL;
    if (steps < 1) return qt_fail("%s: rank %d has no batches", who, rank);
    int rc = qt_ring_next(r, payload);
    return rc < 0 ? rc : 0;
}

void qt_ring_release(qt_ring *r, void *payload)
{
    pthread_mutex_lock(&r->mu);
    bool found = false;
    for (int i = 0; i < r->n_slots; i++) {
        if (r->slots[i].payload == payload) {
            QT_ASSERT(r->slots[i].state == SLOT_HELD);
            r->slots[i].state = SLOT_FREE;
            found = true;
        }
    }
    QT_ASSERT(found);
    pthread_cond_broadcast(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
}

/* The stats readers lock the mutex of a const ring: the lock is not part of its value. */
static pthread_mutex_t *stats_lock(const qt_ring *r) { return (pthread_mutex_t *)&r->mu; }

double qt_ring_wait_seconds(const qt_ring *r)
{
    pthread_mutex_lock(stats_lock(r));
    double w = r->wait_s;
    pthread_mutex_unlock(stats_lock(r));
    return w;
}

double qt_ring_items_per_second(const qt_ring *r)
{
    pthread_mutex_lock(stats_lock(r));
    double t = r->started ? qt_now() - r->t_start : 0.0;
    double v = t > 0.0 ? (double)r->items_done / t : 0.0;
    pthread_mutex_unlock(stats_lock(r));
    return v;
}

double qt_ring_capacity_items_per_second(const qt_ring *r)
{
    pthread_mutex_lock(stats_lock(r));
    double v = r->busy_s > 0.0 ? (double)r->items_done / r->busy_s * r->n_threads : 0.0;
    pthread_mutex_unlock(stats_lock(r));
    return v;
}

void qt_ring_destroy(qt_ring *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_threads; i++) pthread_join(r->threads[i], NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv_work);
    pthread_cond_destroy(&r->cv_done);
    free(r->threads);
    free(r->slots);
    free(r);
}
