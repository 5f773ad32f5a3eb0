/* test_data_loader.c — the threaded loader on generated CIFAR files: shards disjoint and
 * covering, batches independent of worker count and prefetch depth, seek/resume equal to
 * the uninterrupted stream, batches equal to items read one by one, eval order and the
 * partial last batch, option errors. */
#include "test_data_common.h"

#include "data/data.h"

enum { N_TRAIN = 600, N_TEST = 100, ITEM = 3072 };

typedef struct {
    char *dir;
    qt_dataset *train, *test;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tdir_create();
    qt_gen_opts g = {.n_train = N_TRAIN, .n_test = N_TEST, .seed = 9, .classes = 10, .noise = 24};
    if (qt_gen_cifar_like(f->dir, &g) != 0) return -1;
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.path, sizeof o.path, "%s", f->dir);
    if (qt_dataset_open(&o, true, &f->train) != 0) return -1;
    if (qt_dataset_open(&o, false, &f->test) != 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    qt_dataset_destroy(f->train);
    qt_dataset_destroy(f->test);
    tdir_remove(f->dir);
    free(f);
    return 0;
}

static qt_data_opts opts(const fixture *f, int batch, int workers, int prefetch)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.path, sizeof o.path, "%s", f->dir);
    o.batch = batch;
    o.workers = workers;
    o.prefetch = prefetch;
    return o;
}

/* A copy of `steps` consecutive batches (x, y, items, epoch, index) for comparisons. */
typedef struct {
    int n_steps, batch;
    float *x;
    int32_t *y;
    int64_t *items, *epoch, *index;
    int *n;
} stream;

static stream record(qt_loader *l, int steps, int batch)
{
    stream s = {.n_steps = steps, .batch = batch};
    s.x = calloc((size_t)steps * batch * ITEM, sizeof(float));
    s.y = calloc((size_t)steps * batch, sizeof(int32_t));
    s.items = calloc((size_t)steps * batch, sizeof(int64_t));
    s.epoch = calloc((size_t)steps, sizeof(int64_t));
    s.index = calloc((size_t)steps, sizeof(int64_t));
    s.n = calloc((size_t)steps, sizeof(int));
    for (int k = 0; k < steps; k++) {
        qt_batch *b = NULL;
        assert_int_equal(qt_loader_next(l, &b), 0);
        s.n[k] = b->n;
        s.epoch[k] = b->epoch;
        s.index[k] = b->index;
        memcpy(s.x + (size_t)k * batch * ITEM, b->x, (size_t)b->n * ITEM * sizeof(float));
        memcpy(s.y + (size_t)k * batch, b->y, (size_t)b->n * sizeof(int32_t));
        memcpy(s.items + (size_t)k * batch, b->items, (size_t)b->n * sizeof(int64_t));
        qt_loader_release(l, b);
    }
    return s;
}

/* Asserts steps [a0, a0+n) of a equal steps [b0, b0+n) of b, bit for bit. */
static void assert_streams_equal(const stream *a, int a0, const stream *b, int b0, int n)
{
    for (int k = 0; k < n; k++) {
        int i = a0 + k, j = b0 + k, bs = a->batch;
        assert_int_equal(a->n[i], b->n[j]);
        assert_int_equal(a->epoch[i], b->epoch[j]);
        assert_int_equal(a->index[i], b->index[j]);
        assert_memory_equal(a->items + (size_t)i * bs, b->items + (size_t)j * bs,
                            (size_t)a->n[i] * sizeof(int64_t));
        assert_memory_equal(a->y + (size_t)i * bs, b->y + (size_t)j * bs,
                            (size_t)a->n[i] * sizeof(int32_t));
        assert_memory_equal(a->x + (size_t)i * bs * ITEM, b->x + (size_t)j * bs * ITEM,
                            (size_t)a->n[i] * ITEM * sizeof(float));
    }
}

static void stream_free(stream *s)
{
    free(s->x);
    free(s->y);
    free(s->items);
    free(s->epoch);
    free(s->index);
    free(s->n);
}

/* Three ranks, drop_last: shards disjoint, 12 steps x 48 = 576 distinct items; without
 * drop_last 13 steps whose items cover all 600 (the last global batch wraps). */
static void test_shards_disjoint_and_cover(void **state)
{
    fixture *f = *state;
    for (int drop = 1; drop >= 0; drop--) {
        int count[N_TRAIN] = {0};
        int64_t steps = drop ? 12 : 13;
        for (int r = 0; r < 3; r++) {
            qt_data_opts o = opts(f, 16, 2, 3);
            o.drop_last = drop;
            qt_loader *l = NULL;
            assert_int_equal(qt_loader_create(f->train, &o, true, r, 3, 42, &l), 0);
            assert_int_equal(qt_loader_steps_per_epoch(l), steps);
            stream s = record(l, (int)steps, 16);
            for (int k = 0; k < steps * 16; k++) {
                assert_in_range(s.items[k], 0, N_TRAIN - 1);
                count[s.items[k]]++;
            }
            for (int k = 0; k < steps; k++) assert_int_equal(s.epoch[k], 0);
            stream_free(&s);
            qt_loader_destroy(l);
        }
        int distinct = 0, twice = 0;
        for (int i = 0; i < N_TRAIN; i++) {
            distinct += count[i] > 0;
            twice += count[i] > 1;
        }
        if (drop) {
            assert_int_equal(distinct, 576);
            assert_int_equal(twice, 0);
        } else {
            assert_int_equal(distinct, N_TRAIN);
            assert_int_equal(twice, 13 * 48 - N_TRAIN); /* the wrapped positions */
        }
    }
}

/* One rank over two epochs: each epoch is a permutation, the two differ, labels match. */
static void test_epochs_are_permutations(void **state)
{
    fixture *f = *state;
    qt_data_opts o = opts(f, 50, 2, 4);
    qt_loader *l = NULL;
    assert_int_equal(qt_loader_create(f->train, &o, true, 0, 1, 1, &l), 0);
    assert_int_equal(qt_loader_steps_per_epoch(l), 12);
    stream s = record(l, 24, 50);
    for (int e = 0; e < 2; e++) {
        int seen[N_TRAIN] = {0};
        for (int k = 0; k < N_TRAIN; k++) seen[s.items[e * N_TRAIN + k]]++;
        for (int i = 0; i < N_TRAIN; i++) assert_int_equal(seen[i], 1);
        assert_int_equal(s.epoch[e * 12], e);
        assert_int_equal(s.index[e * 12 + 11], 11);
    }
    assert_memory_not_equal(s.items, s.items + N_TRAIN, N_TRAIN * sizeof(int64_t));
    /* Each batch item equals the item read alone with the same (seed, epoch). */
    static float x[ITEM];
    for (int k = 0; k < 24 * 50; k += 37) {
        int32_t y;
        assert_int_equal(qt_dataset_read(f->train, s.items[k], true, 1, k / N_TRAIN, x, &y), 0);
        assert_int_equal(y, s.y[k]);
        assert_memory_equal(x, s.x + (size_t)k * ITEM, sizeof x);
    }
    stream_free(&s);
    qt_loader_destroy(l);
}

/* Worker count and prefetch depth change nothing; the seed changes the order. */
static void test_deterministic_across_workers(void **state)
{
    fixture *f = *state;
    const int cfg[3][2] = {{1, 1}, {3, 5}, {2, 2}};
    stream s[3];
    for (int c = 0; c < 3; c++) {
        qt_data_opts o = opts(f, 32, cfg[c][0], cfg[c][1]);
        qt_loader *l = NULL;
        assert_int_equal(qt_loader_create(f->train, &o, true, 1, 2, 77, &l), 0);
        s[c] = record(l, 20, 32); /* 9 steps per epoch: crosses two epoch boundaries */
        qt_loader_destroy(l);
    }
    assert_streams_equal(&s[0], 0, &s[1], 0, 20);
    assert_streams_equal(&s[0], 0, &s[2], 0, 20);
    qt_data_opts o = opts(f, 32, 2, 2);
    qt_loader *l = NULL;
    assert_int_equal(qt_loader_create(f->train, &o, true, 1, 2, 78, &l), 0);
    stream other = record(l, 1, 32);
    assert_memory_not_equal(other.items, s[0].items, 32 * sizeof(int64_t));
    stream_free(&other);
    qt_loader_destroy(l);
    for (int c = 0; c < 3; c++) stream_free(&s[c]);
}

/* seek(e, k) then next() reproduces the uninterrupted stream from e*steps + k, in a fresh
 * loader (resume) and in the same loader moving backwards. */
static void test_seek_resume(void **state)
{
    fixture *f = *state;
    qt_data_opts o = opts(f, 64, 2, 3);
    qt_loader *l = NULL;
    assert_int_equal(qt_loader_create(f->train, &o, true, 0, 1, 5, &l), 0);
    int steps = (int)qt_loader_steps_per_epoch(l);
    assert_int_equal(steps, 9);
    stream all = record(l, 3 * steps, 64);
    assert_int_equal(qt_loader_seek(l, 0, 4), 0);
    stream back = record(l, 6, 64);
    assert_streams_equal(&all, 4, &back, 0, 6);
    qt_loader_destroy(l);

    assert_int_equal(qt_loader_create(f->train, &o, true, 0, 1, 5, &l), 0);
    assert_int_equal(qt_loader_seek(l, 1, 7), 0);
    stream resumed = record(l, 10, 64);
    assert_streams_equal(&all, steps + 7, &resumed, 0, 10);
    stderr_capture cap = capture_begin();
    int rc = qt_loader_seek(l, 0, steps);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_one_line_with(msg, "error: ", "step 9", NULL);
    free(msg);
    qt_loader_destroy(l);
    stream_free(&all);
    stream_free(&back);
    stream_free(&resumed);
}

/* Holding several batches at once (up to prefetch) and releasing out of order. */
static void test_hold_several(void **state)
{
    fixture *f = *state;
    qt_data_opts o = opts(f, 20, 2, 3);
    qt_loader *ref = NULL, *l = NULL;
    assert_int_equal(qt_loader_create(f->train, &o, true, 0, 1, 3, &ref), 0);
    stream want = record(ref, 9, 20);
    qt_loader_destroy(ref);
    assert_int_equal(qt_loader_create(f->train, &o, true, 0, 1, 3, &l), 0);
    for (int k = 0; k < 9; k += 3) {
        qt_batch *b[3];
        for (int j = 0; j < 3; j++) assert_int_equal(qt_loader_next(l, &b[j]), 0);
        for (int j = 0; j < 3; j++)
            assert_memory_equal(b[j]->items, want.items + (size_t)(k + j) * 20, 20 * sizeof(int64_t));
        qt_loader_release(l, b[1]);
        qt_loader_release(l, b[2]);
        qt_loader_release(l, b[0]);
    }
    stream_free(&want);
    qt_loader_destroy(l);
}

/* Eval: fixed order, no augmentation, all items; shards contiguous; last batch partial. */
static void test_eval_order_and_partial_batch(void **state)
{
    fixture *f = *state;
    int next_item = 0;
    static float x[ITEM];
    for (int r = 0; r < 3; r++) {
        qt_data_opts o = opts(f, 16, 2, 2);
        qt_loader *l = NULL;
        assert_int_equal(qt_loader_create(f->test, &o, false, r, 3, 1, &l), 0);
        int shard = (int)(N_TEST * (r + 1) / 3 - N_TEST * r / 3); /* 33, 33, 34 */
        int steps = (shard + 15) / 16;
        assert_int_equal(qt_loader_steps_per_epoch(l), steps);
        for (int k = 0; k < steps; k++) {
            qt_batch *b = NULL;
            assert_int_equal(qt_loader_next(l, &b), 0);
            assert_int_equal(b->n, k < steps - 1 ? 16 : shard - 16 * (steps - 1));
            for (int j = 0; j < b->n; j++) {
                assert_int_equal(b->items[j], next_item);
                int32_t y;
                assert_int_equal(qt_dataset_read(f->test, next_item, false, 0, 0, x, &y), 0);
                assert_int_equal(y, b->y[j]);
                assert_memory_equal(x, b->x + (size_t)j * ITEM, sizeof x);
                next_item++;
            }
            qt_loader_release(l, b);
        }
        /* The next call starts the second epoch: same items again. */
        qt_batch *b = NULL;
        assert_int_equal(qt_loader_next(l, &b), 0);
        assert_int_equal(b->epoch, 1);
        assert_int_equal(b->items[0], N_TEST * r / 3);
        qt_loader_release(l, b);
        assert_true(qt_loader_wait_seconds(l) >= 0.0);
        assert_true(qt_loader_items_per_second(l) > 0.0);
        qt_loader_destroy(l);
    }
    assert_int_equal(next_item, N_TEST);
}

static void test_bad_options(void **state)
{
    fixture *f = *state;
    qt_loader *l = NULL;
    qt_data_opts o = opts(f, 0, 2, 2);
    stderr_capture cap = capture_begin();
    int rc = qt_loader_create(f->train, &o, true, 0, 1, 1, &l);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_null(l);
    assert_one_line_with(msg, "error: [data] batch = 0: must be >= 1", NULL);
    free(msg);
    o = opts(f, 128, 2, 2);
    cap = capture_begin();
    rc = qt_loader_create(f->train, &o, true, 0, 8, 1, &l); /* 600 < 128 x 8 */
    msg = capture_end(cap);
    assert_true(rc < 0);
    assert_one_line_with(msg, "600 items are fewer than one global batch (128 x 8 ranks)", NULL);
    free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shards_disjoint_and_cover),
        cmocka_unit_test(test_epochs_are_permutations),
        cmocka_unit_test(test_deterministic_across_workers),
        cmocka_unit_test(test_seek_resume),
        cmocka_unit_test(test_hold_several),
        cmocka_unit_test(test_eval_order_and_partial_batch),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
