/* test_mpi_overlap.c — communication overlaps backward (tests/mpi_exchange.sh).
 *
 * A simulated backward of L layers sleeps `layer_ms` per layer and announces each layer's
 * gradients; every collective occupies a simulated link for `delay_ms` (debug_delay_ms).
 * Sequential (overlap = false): step ~ L*layer + K*delay (K = collectives, after
 * backward). Overlapped: the link works while backward computes, step ~
 * max(L*layer, K*delay) + delay. With L = 8, layer = 15 ms and K*delay = 120 ms that is
 * about 240 ms against 135 ms; the test asserts a ratio below 0.8 (same run, slowest rank)
 * and that finish() waited less than half as long (t_comm_exposed).
 */
#include "test_mpi_common.h"

#include "dist/exchange_internal.h"

#include <time.h>

enum { LAYERS = 8, LAYER_ELEMS = 32768 };

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

typedef struct {
    double t_step, t_exposed;
} timing;

/* One step with a simulated backward; the slowest rank's times. */
static timing timed_step(qt_world *w, qt_exchange *ex, float *g, uint32_t step, double layer_ms)
{
    for (size_t i = 0; i < (size_t)LAYERS * LAYER_ELEMS; i++) g[i] = (float)(i % 7) - 3.0f;
    MPI_CHECK(MPI_Barrier(w->comm));
    double t0 = qt_now();
    qt_exchange_begin_step(ex, step);
    for (int k = 0; k < LAYERS; k++) {
        sleep_ms(layer_ms);
        qt_exchange_ready(ex, (size_t)(k + 1) * LAYER_ELEMS);
    }
    qt_exchange_stats st;
    assert_int_equal(qt_exchange_finish(ex, &st), 0);
    double t[2] = {qt_now() - t0, st.t_comm_exposed};
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t, 2, MPI_DOUBLE, MPI_MAX, w->comm));
    return (timing){t[0], t[1]};
}

/* Best of two steps (the machine is shared) with overlap on and off. */
static void check_overlap(qt_world *w, qt_collective coll, qt_codec_method method, int phases)
{
    const double layer_ms = 15, delay_ms = 15.0 / phases;
    qt_span spans[LAYERS];
    for (int k = 0; k < LAYERS; k++)
        spans[k] = (qt_span){(size_t)k * LAYER_ELEMS, LAYER_ELEMS, 2, 0};
    size_t n = (size_t)LAYERS * LAYER_ELEMS;
    float *g = qt_aligned_alloc(n * sizeof(float));
    float *res = qt_aligned_alloc(n * sizeof(float));
    timing best[2];
    for (int mode = 0; mode < 2; mode++) {
        qt_dist_opts o = make_opts(coll, method);
        o.bucket_kb = LAYER_ELEMS * 4 / 1024; /* one bucket per layer */
        o.overlap = mode == 1;
        o.debug_delay_ms = delay_ms;
        qt_exchange *ex = NULL;
        TM_ASSERT_ALL(w, qt_exchange_create(w, &o, spans, LAYERS, g, res, n, &ex) == 0);
        TM_ASSERT_ALL(w, ex->n_buckets == LAYERS);
        best[mode] = (timing){1e9, 1e9};
        for (uint32_t step = 0; step < 2; step++) {
            timing t = timed_step(w, ex, g, step, layer_ms);
            if (t.t_step < best[mode].t_step) best[mode] = t;
        }
        qt_exchange_destroy(ex);
    }
    double ratio = best[1].t_step / best[0].t_step;
    if (w->rank == 0)
        fprintf(stderr, "overlap %s/%s: step %.1f ms sequential, %.1f ms overlapped (ratio %.2f); "
                "exposed communication %.1f ms -> %.1f ms\n", qt_collective_name(coll),
                qt_codec_method_name(method), 1e3 * best[0].t_step, 1e3 * best[1].t_step, ratio,
                1e3 * best[0].t_exposed, 1e3 * best[1].t_exposed);
    /* The floor: sequential cannot beat backward + all the delays. */
    assert_true(best[0].t_step >= 1e-3 * (LAYERS * layer_ms + LAYERS * phases * delay_ms) * 0.98);
    assert_true(ratio < 0.8);
    assert_true(best[1].t_exposed < 0.5 * best[0].t_exposed);
    qt_free_aligned(g);
    qt_free_aligned(res);
}

static void test_overlap_allreduce(void **state)
{
    check_overlap(*state, QT_COLL_ALLREDUCE, QT_CODEC_NONE, 1);
}

static void test_overlap_rsag_qsgd(void **state)
{
    check_overlap(*state, QT_COLL_RSAG, QT_CODEC_QSGD, 2);
}

int main(int argc, char **argv)
{
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_overlap_allreduce, w),
        cmocka_unit_test_prestate(test_overlap_rsag_qsgd, w),
    };
    int failed = cmocka_run_group_tests_name("mpi_overlap", tests, NULL, NULL);
    qt_world_destroy(w);
    return failed ? 1 : 0;
}
