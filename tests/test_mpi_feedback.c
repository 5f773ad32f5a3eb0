/* test_mpi_feedback.c — the engine's state across steps and its refusals, under mpirun
 * (tests/mpi_exchange.sh): error feedback through both residuals, NaN/Inf skipping with
 * residuals restored, and create() failing on every rank alike for a layout mismatch or
 * bad options.
 *
 * Error-feedback oracle (ECQ with alpha = beta = 1, i.e. e <- (g + e) - Q(g + e)): with
 * the same gradient g every step, sum_t Q_t = T g - e_T, and |e| <= G/(s-1) for
 * G = max |g| (the residual obeys |e| < (G + |e|)/s). So the average of T exchanged
 * results is within G/((s-1)T) of mean(g) for allgather; rsag adds the owner's second
 * residual, bounded by A/(s-1) with A = G s/(s-1): the bound shrinks as 1/T, which a
 * wrong residual slice (or none) would not.
 */
#include "test_mpi_common.h"

#include "dist/exchange_internal.h"

static qt_dist_opts ecq_opts(qt_collective c)
{
    qt_dist_opts o = make_opts(c, QT_CODEC_ECQ);
    o.codec.alpha = 1.0f;
    o.codec.beta = 1.0f;
    return o;
}

static void check_error_feedback(qt_world *w, qt_collective coll)
{
    enum { T = 12 };
    model m;
    model_init(&m);
    qt_dist_opts o = ecq_opts(coll);
    size_t n = m.n_total;
    float *g = qt_aligned_alloc(n * sizeof(float));
    float *res = qt_aligned_alloc(n * sizeof(float));
    double *acc = qt_calloc(n, sizeof(double)), *mean = qt_malloc(n * sizeof(double));
    double *tol = qt_malloc(n * sizeof(double));
    qt_exchange *ex = NULL;
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, res, n, &ex) == 0);
    bool ok = true;
    for (uint32_t t = 0; t < T; t++) {
        fill_grads(&m, g, w->rank, 0); /* the same gradient every step */
        qt_exchange_begin_step(ex, t);  /* fresh random rounding every step */
        qt_exchange_ready(ex, n);
        ok &= qt_exchange_finish(ex, NULL) == 0;
        for (size_t i = 0; i < n; i++) acc[i] += g[i];
        assert_int_equal(qt_world_check_same(w, g, n * sizeof(float), "averaged grads"), 0);
    }
    reference(&m, &o, w->size, 0, mean, tol);
    double s = o.codec.levels;
    for (int sp = 0; sp < m.n_spans; sp++) {
        const qt_span *span = &m.spans[sp];
        if (!span_coded(&o, span)) continue;
        double big = 0;
        for (int r = 0; r < w->size; r++)
            for (size_t i = 0; i < span->count; i++)
                big = fmax(big, fabs(tm_grad(SEED, 0, r, span->offset + i, m.amp[sp])));
        double bound = big / (s - 1);
        if (coll == QT_COLL_RSAG) bound += big * s / ((s - 1) * (s - 1));
        for (size_t i = 0; i < span->count; i++)
            tol[span->offset + i] = bound / T + T * 4 * FLT_EPSILON * big;
    }
    float *avg = qt_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) avg[i] = (float)(acc[i] / T);
    ok &= tm_compare("error feedback: average of T steps", w->rank, avg, mean, tol, n) == 0;
    /* Both residuals are in use: the first everywhere coded, the second on the owner. */
    double res_norm = 0;
    for (size_t i = 0; i < n; i++) res_norm += fabs(res[i]);
    ok &= res_norm > 0;
    size_t n2 = 0;
    float *r2 = qt_exchange_residual2(ex, &n2);
    if (coll == QT_COLL_RSAG) {
        double r2_norm = 0;
        for (size_t i = 0; i < n2; i++) r2_norm += fabs(r2[i]);
        /* One rank: the "average" is its own quantized chunk, already on the grid of the
         * same scale, so re-encoding it is exact and the second residual stays 0. */
        ok &= n2 > 0 && (w->size == 1 ? r2_norm == 0 : r2_norm > 0);
    } else {
        ok &= n2 == 0 && r2 == NULL;
    }
    TM_ASSERT_ALL(w, ok);
    qt_exchange_destroy(ex);
    free(avg);
    free(acc);
    free(mean);
    free(tol);
    qt_free_aligned(g);
    qt_free_aligned(res);
}

static void test_error_feedback_allgather(void **state)
{
    check_error_feedback(*state, QT_COLL_ALLGATHER);
}

static void test_error_feedback_rsag(void **state) { check_error_feedback(*state, QT_COLL_RSAG); }

/* A NaN on the last rank at step 1: every rank returns 1 and reports one bad rank, the
 * residual arenas are bit-for-bit as before step 1, and step 2 runs normally. */
static void check_nan_skip(qt_world *w, qt_dist_opts o, size_t bad_index, float bad_value)
{
    model m;
    model_init(&m);
    size_t n = m.n_total;
    float *g = qt_aligned_alloc(n * sizeof(float));
    float *res = qt_aligned_alloc(n * sizeof(float));
    float *res_copy = qt_aligned_alloc(n * sizeof(float));
    qt_exchange *ex = NULL;
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, res, n, &ex) == 0);
    qt_exchange_stats st;
    bool ok = run_step(ex, &m, g, w->rank, 0, &st) == 0 && !st.skipped;
    memcpy(res_copy, res, n * sizeof(float));
    size_t n2 = 0;
    float *r2 = qt_exchange_residual2(ex, &n2);
    float *r2_copy = qt_malloc((n2 ? n2 : 1) * sizeof(float));
    if (n2) memcpy(r2_copy, r2, n2 * sizeof(float));

    fill_grads(&m, g, w->rank, 1);
    if (w->rank == w->size - 1) g[bad_index] = bad_value;
    qt_exchange_begin_step(ex, 1);
    qt_exchange_ready(ex, n);
    int rc = qt_exchange_finish(ex, &st);
    ok &= rc == 1 && st.skipped && st.n_nonfinite_ranks == 1;
    ok &= memcmp(res, res_copy, n * sizeof(float)) == 0;
    ok &= n2 == 0 || memcmp(r2, r2_copy, n2 * sizeof(float)) == 0;
    ok &= qt_exchange_skipped_steps(ex) == 1;
    if (!ok) fprintf(stderr, "[rank %d] nan step: rc %d, skipped %d, bad ranks %d\n", w->rank, rc,
                     st.skipped, st.n_nonfinite_ranks);

    ok &= run_step(ex, &m, g, w->rank, 2, &st) == 0 && !st.skipped && st.n_nonfinite_ranks == 0;
    TM_ASSERT_ALL(w, ok);
    assert_int_equal(qt_world_check_same(w, g, n * sizeof(float), "averaged grads"), 0);
    qt_exchange_destroy(ex);
    free(r2_copy);
    qt_free_aligned(g);
    qt_free_aligned(res);
    qt_free_aligned(res_copy);
}

static void test_nan_skips_everywhere(void **state)
{
    qt_world *w = *state;
    /* Index 30000: inside the 73728-element conv, a coded tensor. */
    check_nan_skip(w, ecq_opts(QT_COLL_RSAG), 30000, NAN);
    check_nan_skip(w, ecq_opts(QT_COLL_ALLGATHER), 30000, -INFINITY);
}

static void test_nan_skips_fp32(void **state)
{
    qt_dist_opts o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE);
    check_nan_skip(*state, o, 5, INFINITY); /* the fc bias */
    o.overlap = false;
    check_nan_skip(*state, o, 20000, NAN);
}

/* The last rank's model has one tensor of a different size: create fails on all ranks
 * with the same verdict (and the message names the rank). */
static void test_layout_mismatch_fails_everywhere(void **state)
{
    qt_world *w = *state;
    if (w->size == 1) skip();
    model m;
    model_init(&m);
    float *g = qt_aligned_alloc(m.n_total * sizeof(float));
    qt_dist_opts o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE);
    if (w->rank == 0) fprintf(stderr, "test_layout_mismatch: the error lines below are expected\n");
    if (w->rank == w->size - 1) m.spans[3].count -= 1;
    qt_exchange *ex = NULL;
    int rc = qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex);
    TM_ASSERT_ALL(w, rc < 0 && ex == NULL);
    /* Same layout, different bucket size on rank 0. */
    model_init(&m);
    if (w->rank == 0) o.bucket_kb = 32;
    rc = qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex);
    TM_ASSERT_ALL(w, rc < 0 && ex == NULL);
    qt_free_aligned(g);
}

/* Refusals are deterministic, so every rank refuses (no rank left in a collective). */
static void test_bad_options(void **state)
{
    qt_world *w = *state;
    model m;
    model_init(&m);
    float *g = qt_aligned_alloc(m.n_total * sizeof(float));
    qt_exchange *ex = NULL;
    if (w->rank == 0) fprintf(stderr, "test_bad_options: the error lines below are expected\n");
    qt_dist_opts o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE);
    o.bucket_kb = 0;
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex) < 0);
    o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE);
    m.spans[2].offset -= 1; /* overlaps the previous span */
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex) < 0);
    model_init(&m);
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total - 1, &ex) < 0);
    o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_QSGD); /* cannot sum quantized bytes */
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex) < 0);
    o = ecq_opts(QT_COLL_RSAG); /* error feedback without a residual arena */
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex) < 0);
    TM_ASSERT_ALL(w, ex == NULL);
    qt_free_aligned(g);
}

int main(int argc, char **argv)
{
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_error_feedback_allgather, w),
        cmocka_unit_test_prestate(test_error_feedback_rsag, w),
        cmocka_unit_test_prestate(test_nan_skips_everywhere, w),
        cmocka_unit_test_prestate(test_nan_skips_fp32, w),
        cmocka_unit_test_prestate(test_layout_mismatch_fails_everywhere, w),
        cmocka_unit_test_prestate(test_bad_options, w),
    };
    int failed = cmocka_run_group_tests_name("mpi_feedback", tests, NULL, NULL);
    qt_world_destroy(w);
    return failed ? 1 : 0;
}
