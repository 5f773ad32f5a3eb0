/* test_mpi_exchange.c — the gradient exchange under mpirun (tests/mpi_exchange.sh runs it
 * on 1, 2 and 4 ranks).
 *
 * Oracle: every rank can compute every rank's synthetic gradient (tm_grad), so each rank
 * computes the exact average in double and checks the engine's result against it:
 *   fp32 paths: |got - mean| <= (N+1) eps32 mean|g| (N-1 additions and one scaling);
 *   fp16 allreduce: the same with eps16 = 2^-11;
 *   quantizing codecs (max norm, s levels): each quantization errs by less than one
 *   level m/s, m <= the tensor's largest |g| over ranks M; allgather quantizes once,
 *   rsag twice (the re-encoded average is at most M(1 + 1/s)), so the bound is
 *   (1 or 2 + 1/s) M/s plus fp32 rounding.
 * And all ranks must hold bit-identical gradients (qt_world_check_same on the arena).
 */
#include "test_mpi_common.h"

#include "dist/exchange_internal.h"

/* Runs n_steps steps of a fresh engine and checks each against the oracle and for
 * bit-identity across ranks. */
static void check_exchange(qt_world *w, qt_dist_opts o, int n_steps)
{
    model m;
    model_init(&m);
    float *g = qt_aligned_alloc(m.n_total * sizeof(float));
    float *res = qt_aligned_alloc(m.n_total * sizeof(float));
    double *mean = qt_malloc(m.n_total * sizeof(double));
    double *tol = qt_malloc(m.n_total * sizeof(double));
    qt_exchange *ex = NULL;
    int rc = qt_exchange_create(w, &o, m.spans, m.n_spans, g, res, m.n_total, &ex);
    TM_ASSERT_ALL(w, rc == 0);
    bool ok = true;
    for (int step = 0; step < n_steps; step++) {
        qt_exchange_stats st;
        int frc = run_step(ex, &m, g, w->rank, (uint32_t)step, &st);
        reference(&m, &o, w->size, (uint32_t)step, mean, tol);
        char what[96];
        snprintf(what, sizeof what, "%s/method %d step %d", qt_collective_name(o.collective),
                 (int)o.codec.method, step);
        ok &= frc == 0 && !st.skipped && st.n_buckets > 0;
        ok &= tm_compare(what, w->rank, g, mean, tol, m.n_total) == 0;
        ok &= st.warmup == (step < o.warmup_steps);
        if (w->size > 1) ok &= st.bytes_sent > 0;
        ok &= st.bytes_fp32 == 4 * m.n_total;
        if (o.codec.method == QT_CODEC_QSGD && !st.warmup && o.collective != QT_COLL_ALLREDUCE)
            ok &= st.compression_ratio > 3.0 && st.n_buckets_coded > 0;
        TM_ASSERT_ALL(w, ok);
        assert_int_equal(qt_world_check_same(w, g, m.n_total * sizeof(float), "averaged grads"), 0);
    }
    qt_exchange_destroy(ex);
    free(mean);
    free(tol);
    qt_free_aligned(g);
    qt_free_aligned(res);
}


/* The plan's invariants, read from the engine's internals: segments cover every span
 * element once; a bucket holds one class; buckets are ordered by end; coded segments
 * start on codec-bucket boundaries of their tensor with d' chosen from the row length;
 * rsag chunks are balanced to within one codec bucket. */
static void test_plan_layout(void **state)
{
    qt_world *w = *state;
    model m;
    model_init(&m);
    float *g = qt_aligned_alloc(m.n_total * sizeof(float));
    qt_dist_opts o = make_opts(QT_COLL_RSAG, QT_CODEC_QSGD);
    qt_exchange *ex = NULL;
    TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, NULL, m.n_total, &ex) == 0);
    unsigned char *seen = qt_calloc(m.n_total, 1);
    int *span_of = qt_malloc(m.n_total * sizeof(int));
    for (int s = 0; s < m.n_spans; s++)
        for (size_t i = 0; i < m.spans[s].count; i++) span_of[m.spans[s].offset + i] = s;
    const size_t want_d[N_LAYOUT] = {0, 512, 0, 0, 288, 0, 0, 288, 0, 512, 0};
    bool ok = ex->n_buckets > 2;
    size_t prev_end = 0;
    for (int i = 0; i < ex->n_buckets; i++) {
        const qt_bucket *b = &ex->buckets[i];
        ok &= b->end > prev_end;
        prev_end = b->end;
        size_t max_end = 0, sum = 0;
        for (int k = 0; k < b->n_segs; k++) {
            const qt_seg *sg = &ex->segs[b->first_seg + k];
            int sp = span_of[sg->offset];
            const qt_span *span = &m.spans[sp];
            ok &= span_coded(&o, span) == b->coded;
            ok &= sg->offset + sg->count <= span->offset + span->count;
            for (size_t e = sg->offset; e < sg->offset + sg->count; e++) seen[e]++;
            max_end = QT_MAX(max_end, sg->offset + sg->count);
            sum += sg->count;
            if (b->coded) {
                size_t d = (size_t)ex->codecs[sg->codec].bucket;
                ok &= d == want_d[sp];
                ok &= (sg->offset - span->offset) % d == 0;
            }
        }
        ok &= max_end == b->end && sum == b->count;
        ok &= b->n_chunks == (b->coded ? w->size : 1);
        size_t csum = 0;
        for (int j = 0; j < b->n_chunks; j++) {
            const qt_chunk *c = &ex->chunks[b->first_chunk + j];
            csum += c->count;
            if (b->coded) ok &= fabs((double)c->count - (double)b->count / w->size) <= 512;
        }
        ok &= csum == b->count;
    }
    for (size_t e = 0; e < m.n_total; e++) ok &= seen[e] == 1;
    TM_ASSERT_ALL(w, ok);
    qt_exchange_destroy(ex);
    free(seen);
    free(span_of);
    qt_free_aligned(g);
}

static void test_none_allreduce(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE), 2);
}

static void test_fp16_allreduce(void **state)
{
    qt_dist_opts o = make_opts(QT_COLL_ALLREDUCE, QT_CODEC_NONE);
    o.fp16_allreduce = true;
    check_exchange(*state, o, 2);
}

static void test_none_allgather(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_ALLGATHER, QT_CODEC_NONE), 2);
}

static void test_none_rsag(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_RSAG, QT_CODEC_NONE), 2);
}

static void test_qsgd_allgather(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_ALLGATHER, QT_CODEC_QSGD), 2);
}

static void test_qsgd_rsag(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_RSAG, QT_CODEC_QSGD), 2);
}

/* Elias streams have data-dependent lengths: exercises the size-exchange phases. */
static void test_qsgd_elias_rsag_allgather(void **state)
{
    qt_dist_opts o = make_opts(QT_COLL_RSAG, QT_CODEC_QSGD);
    o.codec.encoding = QT_ENC_ELIAS;
    check_exchange(*state, o, 2);
    o.collective = QT_COLL_ALLGATHER;
    check_exchange(*state, o, 1);
}

static void test_ecq_allgather(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_ALLGATHER, QT_CODEC_ECQ), 1);
}

static void test_ecq_rsag(void **state)
{
    check_exchange(*state, make_opts(QT_COLL_RSAG, QT_CODEC_ECQ), 1);
}

/* Step 0 is warm-up (fp32 tolerance), step 1 quantized. */
static void test_warmup(void **state)
{
    qt_dist_opts o = make_opts(QT_COLL_RSAG, QT_CODEC_QSGD);
    o.warmup_steps = 1;
    check_exchange(*state, o, 2);
}


/* The other codecs through both compressed collectives: every rank ends bit-identical,
 * finite, with fewer bytes than fp32; fp16 / bf16 also within their rounding of the mean
 * (half an ulp per rounding: 2^-11 / 2^-8 relative, once per quantization). topk's and
 * onebit's errors depend on the data, so for them identity is the check. */
static void test_other_codecs(void **state)
{
    qt_world *w = *state;
    const qt_codec_method methods[] = {QT_CODEC_FP16, QT_CODEC_BF16, QT_CODEC_ONEBIT,
                                       QT_CODEC_TERNGRAD, QT_CODEC_TOPK};
    const qt_collective colls[] = {QT_COLL_ALLGATHER, QT_COLL_RSAG};
    model m;
    model_init(&m);
    size_t n = m.n_total;
    float *g = qt_aligned_alloc(n * sizeof(float));
    float *res = qt_aligned_alloc(n * sizeof(float));
    double *mean = qt_malloc(n * sizeof(double)), *tol = qt_malloc(n * sizeof(double));
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (int ci = 0; ci < 2; ci++) {
            qt_dist_opts o = make_opts(colls[ci], methods[mi]);
            qt_exchange *ex = NULL;
            TM_ASSERT_ALL(w, qt_exchange_create(w, &o, m.spans, m.n_spans, g, res, n, &ex) == 0);
            qt_exchange_stats st;
            bool ok = run_step(ex, &m, g, w->rank, 0, &st) == 0;
            ok &= st.bytes_payload < st.bytes_fp32 && qt_all_finite(g, n);
            bool half = methods[mi] == QT_CODEC_FP16 || methods[mi] == QT_CODEC_BF16;
            if (half) {
                qt_dist_opts fp32 = o;
                fp32.codec.method = QT_CODEC_NONE;
                reference(&m, &fp32, w->size, 0, mean, tol);
                double rel = methods[mi] == QT_CODEC_FP16 ? 0x1p-11 : 0x1p-8;
                int phases = colls[ci] == QT_COLL_RSAG ? 2 : 1;
                for (int sp = 0; sp < m.n_spans; sp++) {
                    if (!span_coded(&o, &m.spans[sp])) continue;
                    double big = 0.05 * w->size + m.amp[sp]; /* max |g| of tm_grad */
                    for (size_t i = 0; i < m.spans[sp].count; i++)
                        tol[m.spans[sp].offset + i] += phases * rel * big * 1.01 + 0x1p-24;
                }
                char what[64];
                snprintf(what, sizeof what, "%s/%s", qt_codec_method_name(methods[mi]),
                         qt_collective_name(colls[ci]));
                ok &= tm_compare(what, w->rank, g, mean, tol, n) == 0;
            }
            if (!ok && w->rank == 0)
                fprintf(stderr, "%s/%s failed\n", qt_codec_method_name(methods[mi]),
                        qt_collective_name(colls[ci]));
            TM_ASSERT_ALL(w, ok);
            assert_int_equal(qt_world_check_same(w, g, n * sizeof(float), "averaged grads"), 0);
            qt_exchange_destroy(ex);
        }
    free(mean);
    free(tol);
    qt_free_aligned(g);
    qt_free_aligned(res);
}

int main(int argc, char **argv)
{
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_plan_layout, w),
        cmocka_unit_test_prestate(test_none_allreduce, w),
        cmocka_unit_test_prestate(test_fp16_allreduce, w),
        cmocka_unit_test_prestate(test_none_allgather, w),
        cmocka_unit_test_prestate(test_none_rsag, w),
        cmocka_unit_test_prestate(test_qsgd_allgather, w),
        cmocka_unit_test_prestate(test_qsgd_rsag, w),
        cmocka_unit_test_prestate(test_qsgd_elias_rsag_allgather, w),
        cmocka_unit_test_prestate(test_ecq_allgather, w),
        cmocka_unit_test_prestate(test_ecq_rsag, w),
        cmocka_unit_test_prestate(test_warmup, w),
        cmocka_unit_test_prestate(test_other_codecs, w),
    };
    int failed = cmocka_run_group_tests_name("mpi_exchange", tests, NULL, NULL);
    qt_world_destroy(w);
    return failed ? 1 : 0;
}
