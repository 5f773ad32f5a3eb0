/* exchange.c — the engine: creation, the communication thread and the step protocol
 * (exchange.h). The collectives live in allreduce.c, allgather.c and rsag.c; the plan in
 * plan.c; message framing in frame.c.
 *
 * The communication thread owns every MPI call made during a step. Its loop: start the
 * next bucket once the watermark has passed its end (encode + post), test the in-flight
 * requests (Open MPI progresses nonblocking collectives only inside MPI calls), advance
 * buckets whose phase completed (post the next phase, or decode into the arena), and when
 * there is nothing to do either yield (requests pending: keep polling) or sleep on the
 * condition variable until ready()/finish() moves the watermark or a simulated link
 * delay expires. Buckets are started in plan order on every rank; each bucket has its own
 * communicator, so its later phases may be posted in whatever order completions arrive
 * on each rank without mismatching collectives across ranks.
 */
#include "dist/exchange_internal.h"

#include "core/qt.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void qt_dist_opts_default(qt_dist_opts *o)
{
    memset(o, 0, sizeof *o);
    o->bucket_kb = 1024;
    o->overlap = true;
    o->collective = QT_COLL_ALLREDUCE;
    qt_codec_params_default(&o->codec, QT_CODEC_NONE);
    o->min_size = 10000;
    o->warmup_steps = 0;
    o->timeout_s = 600;
}

const char *qt_collective_name(qt_collective c)
{
    switch (c) {
    case QT_COLL_ALLREDUCE: return "allreduce";
    case QT_COLL_ALLGATHER: return "allgather";
    case QT_COLL_RSAG: return "rsag";
    }
    return "?";
}

/* ---- progress, shared with the collectives ------------------------------------------ */

void qt_bucket_posted(qt_exchange *ex, qt_bucket *b, bool data)
{
    b->in_flight = true;
    b->req_done = false;
    b->not_before = 0;
    if (data && ex->opts.debug_delay_ms > 0) {
        /* One simulated link: collectives occupy it one after another. */
        double t0 = QT_MAX(qt_now(), ex->link_free_at);
        b->not_before = ex->link_free_at = t0 + ex->opts.debug_delay_ms * 1e-3;
    }
}

/* One MPI_Testsome over every in-flight request: a single pass of Open MPI's progress
 * engine (MPI_Test per request would run it once per bucket). */
void qt_exchange_poll(qt_exchange *ex)
{
    int n = 0;
    for (int i = 0; i < ex->n_buckets; i++) {
        qt_bucket *b = &ex->buckets[i];
        if (!b->in_flight || b->req_done) continue;
        ex->poll_reqs[n] = b->req;
        ex->poll_ids[n++] = i;
    }
    if (n == 0) return;
    int n_done = 0;
    MPI_CHECK(MPI_Testsome(n, ex->poll_reqs, &n_done, ex->poll_done, MPI_STATUSES_IGNORE));
    for (int k = 0; k < n_done && n_done != MPI_UNDEFINED; k++) {
        qt_bucket *b = &ex->buckets[ex->poll_ids[ex->poll_done[k]]];
        b->req = MPI_REQUEST_NULL;
        b->req_done = true;
    }
}

static size_t effective_watermark(qt_exchange *ex)
{
    if (atomic_load(&ex->finish_req)) return ex->n_total;
    return ex->opts.overlap ? atomic_load(&ex->watermark) : 0;
}

static int start_bucket(qt_exchange *ex, qt_bucket *b)
{
    b->phase = 0;
    b->done = b->nonfinite = false;
    b->own_len = 0;
    ex->st.n_buckets++;
    if (!b->coded || ex->warmup) b->mode = QT_MODE_FP32;
    else if (ex->opts.collective == QT_COLL_ALLREDUCE) b->mode = QT_MODE_FP16;
    else b->mode = ex->opts.collective == QT_COLL_ALLGATHER ? QT_MODE_ALLGATHER : QT_MODE_RSAG;
    switch (b->mode) {
    case QT_MODE_FP32:
    case QT_MODE_FP16: return qt_allreduce_start(ex, b);
    case QT_MODE_ALLGATHER: ex->st.n_buckets_coded++; return qt_allgather_start(ex, b);
    case QT_MODE_RSAG: ex->st.n_buckets_coded++; return qt_rsag_start(ex, b);
    }
    return -1;
}

static int advance_bucket(qt_exchange *ex, qt_bucket *b)
{
    b->in_flight = false;
    switch (b->mode) {
    case QT_MODE_FP32:
    case QT_MODE_FP16: return qt_allreduce_advance(ex, b);
    case QT_MODE_ALLGATHER: return qt_allgather_advance(ex, b);
    case QT_MODE_RSAG: return qt_rsag_advance(ex, b);
    }
    return -1;
}

/* Nothing to start or advance: keep polling if MPI has work in flight, else sleep until
 * the watermark moves, finish() is called or the earliest simulated delay expires. */
static void idle_wait(qt_exchange *ex, int lo, int hi, size_t wm)
{
    double wake = INFINITY;
    for (int i = lo; i < hi; i++) {
        const qt_bucket *b = &ex->buckets[i];
        if (b->done) continue;
        if (b->in_flight && !b->req_done) {
            /* Progress happens only inside MPI calls, so poll again: at once for a while
             * (yielding to a compute thread on this core), then with short sleeps so a
             * long transfer does not take a core from backward. */
            if (ex->idle_polls++ < ex->spin_polls) {
                sched_yield();
            } else {
                struct timespec ts = {0, ex->poll_sleep_ns};
                nanosleep(&ts, NULL);
            }
            return;
        }
        if (b->req_done) wake = QT_MIN(wake, b->not_before);
    }
    pthread_mutex_lock(&ex->mu);
    while (!ex->quit && effective_watermark(ex) == wm) {
        if (wake == INFINITY) {
            pthread_cond_wait(&ex->cv, &ex->mu);
            continue;
        }
        if (qt_now() >= wake) break;
        struct timespec ts = {(time_t)wake, (long)((wake - floor(wake)) * 1e9)};
        pthread_cond_timedwait(&ex->cv, &ex->mu, &ts);
    }
    pthread_mutex_unlock(&ex->mu);
}

static void run_step(qt_exchange *ex)
{
    int nb = ex->n_buckets, next = 0, lo = 0, n_done = 0;
    while (n_done < nb) {
        bool did = false;
        size_t wm = effective_watermark(ex);
        if (next < nb && ex->buckets[next].end <= wm) {
            if (start_bucket(ex, &ex->buckets[next]) < 0)
                qt_world_abort(ex->w, 1, "gradient exchange failed (see the line above)");
            next++;
            did = true;
        }
        qt_exchange_poll(ex);
        double now = qt_now();
        for (int i = lo; i < next; i++) {
            qt_bucket *b = &ex->buckets[i];
            if (b->done || !b->in_flight || !b->req_done || now < b->not_before) continue;
            if (advance_bucket(ex, b) < 0)
                qt_world_abort(ex->w, 1, "gradient exchange failed (see the line above)");
            did = true;
            if (b->done) n_done++;
        }
        while (lo < next && ex->buckets[lo].done) lo++;
        if (did) ex->idle_polls = 0;
        else idle_wait(ex, lo, next, wm);
    }
    /* Agree on NaN/Inf: every rank learns how many ranks saw one, so all skip or none. */
    int bad = ex->local_bad, n_bad = 0;
    MPI_CHECK(MPI_Allreduce(&bad, &n_bad, 1, MPI_INT, MPI_SUM, ex->w->comm));
    ex->st.n_nonfinite_ranks = n_bad;
    ex->st.t_step_comm = qt_now() - ex->t_begin;
}

static void *comm_main(void *arg)
{
    qt_exchange *ex = arg;
    pthread_mutex_lock(&ex->mu);
    for (;;) {
        while (!ex->step_active && !ex->quit) pthread_cond_wait(&ex->cv, &ex->mu);
        if (ex->quit) break;
        pthread_mutex_unlock(&ex->mu);
        run_step(ex);
        pthread_mutex_lock(&ex->mu);
        ex->step_active = false;
        ex->step_done = true;
        pthread_cond_broadcast(&ex->cv);
    }
    pthread_mutex_unlock(&ex->mu);
    return NULL;
}

/* ---- creation ----------------------------------------------------------------------- */

static int check_opts(const qt_dist_opts *o, const float *residuals, bool *has_residual)
{
    *has_residual = false;
    if (o->bucket_kb < 1) return qt_fail("[dist] bucket_kb = %d: must be >= 1", o->bucket_kb);
    if ((int)o->collective < 0 || o->collective > QT_COLL_RSAG)
        return qt_fail("[dist] collective = %d: unknown", (int)o->collective);
    if (o->min_size < 0 || o->warmup_steps < 0 || !(o->debug_delay_ms >= 0) ||
        !(o->timeout_s >= 0))
        return qt_fail("[quant] min_size, warmup_steps and [dist] debug_delay_ms, timeout_s "
                       "must be >= 0");
    const char *problem = qt_codec_params_problem(&o->codec);
    if (problem) return qt_fail("[quant] settings rejected by the codec: %s", problem);
    qt_codec_method m = o->codec.method;
    if (o->collective == QT_COLL_ALLREDUCE && m != QT_CODEC_NONE && m != QT_CODEC_FP16)
        return qt_fail("[dist] collective = allreduce sums raw values, so [quant] method must be "
                       "none or fp16: use collective = allgather or rsag for a quantizing codec");
    *has_residual = o->collective != QT_COLL_ALLREDUCE && qt_codec_has_residual(&o->codec);
    if (*has_residual && !residuals)
        return qt_fail("exchange: the codec keeps error feedback but no residual arena was given");
    return 0;
}

static bool size_is_deterministic(const qt_codec_params *p)
{
    switch (p->method) {
    case QT_CODEC_NONE:
    case QT_CODEC_FP16:
    case QT_CODEC_BF16: return true;
    case QT_CODEC_QSGD:
    case QT_CODEC_ECQ: return p->encoding == QT_ENC_FIXED;
    default: return false; /* unknown: exchange sizes, it is always correct */
    }
}

static uint64_t fbits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* A canonical description of the plan and settings (no struct padding), for the check
 * that every rank built the same plan. ok = 0 stands for a failed plan. */
static int check_plan_same(qt_exchange *ex, bool ok)
{
    const qt_dist_opts *o = &ex->opts;
    const qt_codec_params *c = &o->codec;
    size_t n = 32 + (ok ? 4 * (size_t)ex->n_buckets + 3 * (size_t)ex->n_segs : 0), k = 0;
    uint64_t *v = qt_calloc(n, sizeof *v);
    uint64_t head[] = {ok, ex->n_total, (uint64_t)o->bucket_kb, o->overlap, o->collective,
                       (uint64_t)o->min_size, (uint64_t)o->warmup_steps, o->fp16_allreduce,
                       fbits(o->debug_delay_ms), c->method, c->encoding, c->norm,
                       (uint64_t)c->levels, (uint64_t)c->bucket, fbits(c->alpha),
                       fbits(c->beta), fbits(c->topk_ratio), fbits(c->clip_sigma), c->seed,
                       (uint64_t)ex->n_buckets, (uint64_t)ex->n_segs};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) v[k++] = head[i];
    for (int i = 0; ok && i < ex->n_buckets; i++) {
        const qt_bucket *b = &ex->buckets[i];
        v[k++] = b->coded;
        v[k++] = b->end;
        v[k++] = b->count;
        v[k++] = (uint64_t)b->n_chunks;
    }
    for (int i = 0; ok && i < ex->n_segs; i++) {
        v[k++] = ex->segs[i].offset;
        v[k++] = ex->segs[i].count;
        v[k++] = ex->n_codecs ? (uint64_t)ex->codecs[ex->segs[i].codec].bucket : 0;
    }
    int rc = qt_world_check_same(ex->w, v, k * sizeof *v,
                                 "gradient exchange plan (model layout, [dist] and [quant] settings)");
    free(v);
    return rc;
}

static void free_engine(qt_exchange *ex)
{
    if (ex->thread_started) {
        pthread_mutex_lock(&ex->mu);
        ex->quit = true;
        pthread_cond_broadcast(&ex->cv);
        pthread_mutex_unlock(&ex->mu);
        pthread_join(ex->thread, NULL);
        pthread_mutex_destroy(&ex->mu);
        pthread_cond_destroy(&ex->cv);
    }
    for (int i = 0; i < ex->n_buckets; i++)
        if (ex->buckets[i].comm != MPI_COMM_NULL) MPI_Comm_free(&ex->buckets[i].comm);
    if (ex->unit8 != MPI_DATATYPE_NULL) MPI_Type_free(&ex->unit8);
    qt_allreduce_op_free(ex);
    qt_plan_free(ex);
    qt_free_aligned(ex->zeros);
    qt_free_aligned(ex->scratch_res);
    qt_free_aligned(ex->res_backup);
    qt_free_aligned(ex->res2);
    qt_free_aligned(ex->res2_backup);
    free(ex->poll_reqs);
    free(ex->poll_ids);
    free(ex);
}

int qt_exchange_create(qt_world *w, const qt_dist_opts *o, const qt_span *spans, int n_spans,
                       float *grads, float *residuals, size_t n_total, qt_exchange **out)
{
    *out = NULL;
    qt_exchange *ex = qt_calloc(1, sizeof *ex);
    ex->w = w;
    ex->rank = w->rank;
    ex->size = w->size;
    ex->opts = *o;
    ex->n_total = n_total;
    ex->grads = grads;
    ex->res = residuals;
    ex->unit8 = MPI_DATATYPE_NULL;
    ex->half_sum = MPI_OP_NULL;
    if (o->collective == QT_COLL_ALLREDUCE && o->codec.method == QT_CODEC_FP16)
        ex->opts.fp16_allreduce = true; /* method fp16 + allreduce is the fp16 baseline */
    /* Every rank reaches check_plan_same, even after a local failure, so that no rank is
     * left waiting in a collective the others skipped. */
    int rc = check_opts(&ex->opts, residuals, &ex->has_residual);
    if (rc == 0) {
        ex->var_size = !size_is_deterministic(&ex->opts.codec);
        rc = qt_plan_build(ex, spans, n_spans);
    }
    if (check_plan_same(ex, rc == 0) != 0 || rc != 0) {
        free_engine(ex);
        return -1;
    }
    MPI_CHECK(MPI_Type_contiguous(8, MPI_BYTE, &ex->unit8));
    MPI_CHECK(MPI_Type_commit(&ex->unit8));
    if (qt_allreduce_op_create(ex) < 0) {
        free_engine(ex);
        return -1;
    }
    /* Polling policy (measured in tools/exchangebench.c, see poll_policy's comment);
     * QT_EXCHANGE_POLL="SPINS,SLEEP_US" overrides it for experiments. */
    ex->spin_polls = QT_POLL_SPINS;
    ex->poll_sleep_ns = QT_POLL_SLEEP_US * 1000L;
    const char *env = getenv("QT_EXCHANGE_POLL");
    int spins = 0, sleep_us = 0;
    if (env && sscanf(env, "%d,%d", &spins, &sleep_us) == 2 && spins >= 0 && sleep_us >= 0) {
        ex->spin_polls = spins;
        ex->poll_sleep_ns = sleep_us * 1000L;
    }
    ex->poll_reqs = qt_malloc(sizeof *ex->poll_reqs * (size_t)QT_MAX(ex->n_buckets, 1));
    ex->poll_ids = qt_malloc(sizeof(int) * 2 * (size_t)QT_MAX(ex->n_buckets, 1));
    ex->poll_done = ex->poll_ids + QT_MAX(ex->n_buckets, 1);
    bool any_coded = false;
    for (int i = 0; i < ex->n_buckets; i++) {
        MPI_CHECK(MPI_Comm_dup(w->comm, &ex->buckets[i].comm));
        MPI_CHECK(MPI_Comm_set_errhandler(ex->buckets[i].comm, MPI_ERRORS_RETURN));
        any_coded |= ex->buckets[i].coded;
    }
    if (any_coded && ex->opts.collective != QT_COLL_ALLREDUCE) {
        ex->zeros = qt_aligned_alloc(ex->max_seg * sizeof(float));
        if (ex->has_residual) {
            ex->scratch_res = qt_aligned_alloc(ex->max_seg * sizeof(float));
            ex->res_backup = qt_aligned_alloc(n_total * sizeof(float));
            ex->res2 = qt_aligned_alloc(QT_MAX(ex->n_res2, (size_t)1) * sizeof(float));
            ex->res2_backup = qt_aligned_alloc(QT_MAX(ex->n_res2, (size_t)1) * sizeof(float));
        }
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* idle_wait's deadlines use qt_now */
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&ex->watermark, 0);
    atomic_init(&ex->finish_req, false);
    if (pthread_create(&ex->thread, NULL, comm_main, ex) != 0) {
        pthread_mutex_destroy(&ex->mu);
        pthread_cond_destroy(&ex->cv);
        free_engine(ex);
        return qt_fail("exchange: cannot start the communication thread");
    }
    ex->thread_started = true;
    *out = ex;
    return 0;
}

void qt_exchange_destroy(qt_exchange *ex)
{
    if (!ex) return;
    QT_ASSERT(!ex->step_active);
    free_engine(ex);
}

/* ---- the step protocol -------------------------------------------------------------- */

void qt_exchange_begin_step(qt_exchange *ex, uint32_t step)
{
    pthread_mutex_lock(&ex->mu);
    QT_ASSERT(!ex->step_active); /* finish() of the previous step was not called */
    memset(&ex->st, 0, sizeof ex->st);
    ex->step = step;
    ex->warmup = (int64_t)step < (int64_t)ex->opts.warmup_steps;
    ex->st.warmup = ex->warmup;
    ex->local_bad = 0;
    ex->t_begin = qt_now();
    ex->link_free_at = 0;
    atomic_store(&ex->watermark, 0);
    atomic_store(&ex->finish_req, false);
    ex->step_done = false;
    ex->step_active = true;
    pthread_cond_broadcast(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
}

void qt_exchange_ready(qt_exchange *ex, size_t watermark)
{
    size_t cur = atomic_load(&ex->watermark);
    while (watermark > cur && !atomic_compare_exchange_weak(&ex->watermark, &cur, watermark)) {
    }
    if (watermark <= cur) return;
    pthread_mutex_lock(&ex->mu);
    pthread_cond_broadcast(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
}

/* Skipped step: put back every residual slice this step's encoders touched. */
static void restore_residuals(qt_exchange *ex)
{
    for (int i = 0; i < ex->n_buckets; i++) {
        qt_bucket *b = &ex->buckets[i];
        if (b->mode != QT_MODE_ALLGATHER && b->mode != QT_MODE_RSAG) continue;
        qt_chunk whole = {b->first_seg, b->n_segs, b->count, 0};
        qt_chunk_backup(ex, &whole, ex->res_backup, ex->res, false);
        if (b->mode == QT_MODE_RSAG) {
            const qt_chunk *own = &ex->chunks[b->first_chunk + ex->rank];
            qt_chunk_backup(ex, own, ex->res2_backup + b->res2_offset, ex->res2 + b->res2_offset,
                            true);
        }
    }
}

int qt_exchange_finish(qt_exchange *ex, qt_exchange_stats *st)
{
    double t0 = qt_now();
    pthread_mutex_lock(&ex->mu);
    QT_ASSERT(ex->step_active || ex->step_done); /* begin_step() was not called */
    atomic_store(&ex->finish_req, true);
    pthread_cond_broadcast(&ex->cv);
    double deadline = ex->opts.timeout_s > 0 ? t0 + ex->opts.timeout_s : INFINITY;
    while (!ex->step_done) {
        if (deadline == INFINITY) {
            pthread_cond_wait(&ex->cv, &ex->mu);
            continue;
        }
        if (qt_now() >= deadline) {
            char why[160];
            snprintf(why, sizeof why, "the gradient exchange of step %u is not complete after "
                     "%g s (dist.timeout_s): a peer rank is stuck", ex->step, ex->opts.timeout_s);
            qt_world_abort(ex->w, 1, why); /* legal while the comm thread is in MPI */
        }
        struct timespec ts = {(time_t)deadline, (long)((deadline - floor(deadline)) * 1e9)};
        pthread_cond_timedwait(&ex->cv, &ex->mu, &ts);
    }
    pthread_mutex_unlock(&ex->mu);
    bool skip = ex->st.n_nonfinite_ranks > 0;
    if (skip) {
        if (ex->has_residual) restore_residuals(ex);
        ex->skipped_total++;
    }
    ex->st.skipped = skip;
    ex->st.compression_ratio =
        ex->st.bytes_payload ? (double)ex->st.bytes_fp32 / (double)ex->st.bytes_payload : 1.0;
    ex->st.t_comm_exposed = qt_now() - t0;
    if (st) *st = ex->st;
    return skip ? 1 : 0;
}

float *qt_exchange_residual2(qt_exchange *ex, size_t *n)
{
    *n = ex->res2 ? ex->n_res2 : 0;
    return *n ? ex->res2 : NULL;
}

int qt_exchange_skipped_steps(const qt_exchange *ex) { return ex->skipped_total; }
