/* test_data_cifar.c — the CIFAR-10/100 readers on generated files, the refusals of
 * truncated files and bad labels (exact one-line messages), the generator's layout and
 * determinism, and the crop/flip augmentation's geometry. */
#include "test_data_common.h"

#include <math.h>

#include "data/augment.h"
#include "data/data.h"
#include "data/dataset_impl.h"

enum { N_TRAIN = 600, N_TEST = 100, REC10 = 3073, REC100 = 3074 };

static char *gen10(const char *sub)
{
    char *t = tdir_create();
    char dir[512];
    snprintf(dir, sizeof dir, "%s%s", t, sub);
    qt_gen_opts g = {.n_train = N_TRAIN, .n_test = N_TEST, .seed = 7, .classes = 10, .noise = 24};
    assert_int_equal(qt_gen_cifar_like(dir, &g), 0);
    return t;
}

static qt_data_opts opts_for(const char *dir, const char *format)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.path, sizeof o.path, "%s", dir);
    snprintf(o.format, sizeof o.format, "%s", format);
    return o;
}

/* Item i of the train split: file i / 120, record i % 120 (600 items over 5 files). */
static void read_record10(const char *dir, bool train, int64_t i, uint8_t rec[REC10])
{
    char path[600];
    int64_t per = N_TRAIN / 5;
    if (train) snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, (int)(i / per) + 1);
    else snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    long off = (long)((train ? i % per : i) * REC10);
    assert_int_equal(file_read_at(path, off, rec, REC10), REC10);
}

/* Pixel bytes -> normalised floats, computed independently of the module in double. */
static void test_reader_round_trip(void **state)
{
    (void)state;
    char *t = gen10("");
    for (int train = 0; train <= 1; train++) {
        qt_data_opts o = opts_for(t, "cifar10");
        qt_dataset *d = NULL;
        assert_int_equal(qt_dataset_open(&o, train, &d), 0);
        assert_int_equal(qt_dataset_count(d), train ? N_TRAIN : N_TEST);
        assert_int_equal(qt_dataset_classes(d), 10);
        int c, h, w;
        qt_dataset_shape(d, &c, &h, &w);
        assert_true(c == 3 && h == 32 && w == 32);
        float x[3072];
        int seen[10] = {0};
        for (int64_t i = 0; i < qt_dataset_count(d); i += train ? 3 : 1) {
            uint8_t rec[REC10];
            read_record10(t, train, i, rec);
            int32_t y = -1;
            assert_int_equal(qt_dataset_read(d, i, false, 1, 0, x, &y), 0);
            assert_int_equal(y, rec[0]);
            seen[y]++;
            assert_memory_equal(qt_dataset_raw_pixels(d, i), rec + 1, 3072);
            for (int k = 0; k < 3072; k++) {
                int ch = k / 1024;
                double ref = ((double)rec[1 + k] / 255.0 - o.mean[ch]) / o.std[ch];
                if (fabs(x[k] - ref) > 1e-5 + 1e-6 * fabs(ref))
                    fail_msg("item %lld pixel %d: %g vs %g", (long long)i, k, x[k], ref);
            }
        }
        /* Labels drawn uniformly: every class present in the sample. */
        for (int k = 0; k < 10; k++) assert_true(seen[k] > 0);
        qt_dataset_destroy(d);
    }
    tdir_remove(t);
}

static void test_limit_and_parent_folder(void **state)
{
    (void)state;
    char *t = gen10("/cifar-10-batches-bin");
    qt_data_opts o = opts_for(t, "cifar10"); /* the parent of cifar-10-batches-bin */
    o.limit = 50;
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 50);
    assert_null(qt_dataset_raw_pixels(d, 50));
    qt_dataset_destroy(d);
    tdir_remove(t);
}

static void expect_open_error(const qt_data_opts *o, bool train, const char *a, const char *b)
{
    qt_dataset *d = (qt_dataset *)0x1;
    stderr_capture cap = capture_begin();
    int rc = qt_dataset_open(o, train, &d);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_null(d);
    assert_one_line_with(msg, "error: ", a, b, NULL);
    free(msg);
}

static void test_truncated_refused(void **state)
{
    (void)state;
    char *t = gen10("");
    char path[600], want[700];
    snprintf(path, sizeof path, "%s/data_batch_3.bin", t);
    file_truncate_by(path, 1);
    qt_data_opts o = opts_for(t, "cifar10");
    snprintf(want, sizeof want, "%s: truncated: %d bytes is not a multiple of 3073", path,
             (N_TRAIN / 5) * REC10 - 1);
    expect_open_error(&o, true, want, "");
    /* The test split does not read data_batch_3.bin and still opens. */
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, false, &d), 0);
    qt_dataset_destroy(d);
    tdir_remove(t);
}

static void test_bad_label_and_missing_file_refused(void **state)
{
    (void)state;
    char *t = gen10("");
    char path[600], want[700];
    snprintf(path, sizeof path, "%s/test_batch.bin", t);
    file_poke(path, 17L * REC10, 10);
    qt_data_opts o = opts_for(t, "cifar10");
    snprintf(want, sizeof want, "%s: record 17: label 10 out of range 0..9", path);
    expect_open_error(&o, false, want, "");

    snprintf(path, sizeof path, "%s/data_batch_5.bin", t);
    assert_int_equal(remove(path), 0);
    snprintf(want, sizeof want, "%s: missing", path);
    expect_open_error(&o, true, want, "");

    qt_data_opts bad = opts_for("/nonexistent/qt", "cifar10");
    expect_open_error(&bad, true, "/nonexistent/qt: not a folder", "");
    bad = opts_for(t, "svhn");
    expect_open_error(&bad, true, "format = 'svhn'", "unknown");
    tdir_remove(t);
}

static void test_cifar100(void **state)
{
    (void)state;
    char *t = tdir_create();
    qt_gen_opts g = {.n_train = 200, .n_test = 40, .seed = 3, .classes = 40, .noise = 10};
    assert_int_equal(qt_gen_cifar_like(t, &g), 0);
    qt_data_opts o = opts_for(t, "cifar100");
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 200);
    assert_int_equal(qt_dataset_classes(d), 100);
    char path[600], want[700];
    snprintf(path, sizeof path, "%s/train.bin", t);
    float x[3072];
    for (int64_t i = 0; i < 200; i += 13) {
        uint8_t rec[REC100];
        assert_int_equal(file_read_at(path, (long)(i * REC100), rec, REC100), REC100);
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, false, 0, 0, x, &y), 0);
        assert_int_equal(y, rec[1]);            /* the fine label */
        assert_int_equal(rec[0], rec[1] / 5);   /* the generator's coarse label */
        assert_memory_equal(qt_dataset_raw_pixels(d, i), rec + 2, 3072);
    }
    qt_dataset_destroy(d);

    file_poke(path, 5L * REC100 + 1, 100);
    /* Record 5's coarse label is whatever the generator wrote: check around it. */
    snprintf(want, sizeof want, "%s: record 5: labels (coarse ", path);
    expect_open_error(&o, true, want, "fine 100) out of range");
    snprintf(path, sizeof path, "%s/test.bin", t);
    file_truncate_by(path, REC100 + 3);
    snprintf(want, sizeof want, "%s: truncated: %d bytes is not a multiple of 3074", path,
             40 * REC100 - REC100 - 3);
    expect_open_error(&o, false, want, "");
    tdir_remove(t);
}

/* Same arguments -> identical bytes; another seed -> different images. */
static void test_generator_deterministic(void **state)
{
    (void)state;
    char *a = tdir_create(), *b = tdir_create(), *c = tdir_create();
    qt_gen_opts g = {.n_train = 50, .n_test = 10, .seed = 11, .classes = 10, .noise = 24};
    assert_int_equal(qt_gen_cifar_like(a, &g), 0);
    assert_int_equal(qt_gen_cifar_like(b, &g), 0);
    g.seed = 12;
    assert_int_equal(qt_gen_cifar_like(c, &g), 0);
    char pa[600], pb[600], pc[600];
    snprintf(pa, sizeof pa, "%s/data_batch_2.bin", a);
    snprintf(pb, sizeof pb, "%s/data_batch_2.bin", b);
    snprintf(pc, sizeof pc, "%s/data_batch_2.bin", c);
    static uint8_t ba[10 * REC10], bb[10 * REC10], bc[10 * REC10];
    assert_int_equal(file_read_at(pa, 0, ba, sizeof ba), sizeof ba);
    assert_int_equal(file_read_at(pb, 0, bb, sizeof bb), sizeof bb);
    assert_int_equal(file_read_at(pc, 0, bc, sizeof bc), sizeof bc);
    assert_memory_equal(ba, bb, sizeof ba);
    assert_memory_not_equal(ba, bc, sizeof ba);
    tdir_remove(a);
    tdir_remove(b);
    tdir_remove(c);
}

/* The primitive against hand-derived positions; a flip of a flip is the identity. */
static void test_crop_flip_geometry(void **state)
{
    (void)state;
    enum { C = 2, H = 5, W = 6 };
    uint8_t src[C * H * W], back[C * H * W];
    float lut[3][256], out[C * H * W], out2[C * H * W];
    for (int k = 0; k < C * H * W; k++) src[k] = (uint8_t)(k + 1); /* never 0 */
    for (int ch = 0; ch < 3; ch++)
        for (int v = 0; v < 256; v++) lut[ch][v] = (float)v;
    /* dy=-2, dx=+1, no flip: out(y,x) = src(y-2, x+1) or 0. */
    qt_aug_crop_flip_u8(src, C, H, W, -2, 1, false, (const float(*)[256])lut, out);
    assert_true(out[0] == 0.0f);                                   /* (0,0) <- row -2 */
    assert_true(out[2 * W + 0] == (float)src[0 * W + 1]);          /* (2,0) <- (0,1) */
    assert_true(out[H * W + 4 * W + 4] == (float)src[H * W + 2 * W + 5]); /* ch1 (4,4)<-(2,5) */
    assert_true(out[3 * W + 5] == 0.0f);                           /* (3,5) <- col 6 */
    /* flip only: out(y,x) = src(y, W-1-x). */
    qt_aug_crop_flip_u8(src, C, H, W, 0, 0, true, (const float(*)[256])lut, out);
    assert_true(out[1 * W + 0] == (float)src[1 * W + 5]);
    for (int k = 0; k < C * H * W; k++) back[k] = (uint8_t)out[k];
    qt_aug_crop_flip_u8(back, C, H, W, 0, 0, true, (const float(*)[256])lut, out2);
    for (int k = 0; k < C * H * W; k++) assert_true(out2[k] == (float)src[k]);
    /* crop then flip (torchvision order): out(y,x) = src(y+dy, W-1-x+dx). */
    qt_aug_crop_flip_u8(src, C, H, W, 1, -1, true, (const float(*)[256])lut, out);
    assert_true(out[0 * W + 0] == (float)src[1 * W + 4]);
    assert_true(out[0 * W + 5] == 0.0f);
}

/* Every augmented training item is one of the (2*pad+1)^2 x 2 crops/flips of its raw
 * pixels; all offsets and both flips occur; the draw is a function of (seed, epoch, item). */
static void test_augmented_items_are_crops(void **state)
{
    (void)state;
    char *t = gen10("");
    qt_data_opts o = opts_for(t, "cifar10");
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    static float x[3072], x2[3072], cand[3072];
    int hits[9][9][2] = {{{0}}};
    int differ_by_epoch = 0;
    for (int64_t i = 0; i < 300; i++) {
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, true, 5, 2, x, &y), 0);
        assert_int_equal(qt_dataset_read(d, i, true, 5, 2, x2, &y), 0);
        assert_memory_equal(x, x2, sizeof x);
        assert_int_equal(qt_dataset_read(d, i, true, 5, 3, x2, &y), 0);
        differ_by_epoch += memcmp(x, x2, sizeof x) != 0;
        int found = 0;
        for (int dy = -4; dy <= 4 && !found; dy++)
            for (int dx = -4; dx <= 4 && !found; dx++)
                for (int f = 0; f <= 1 && !found; f++) {
                    qt_aug_crop_flip_u8(qt_dataset_raw_pixels(d, i), 3, 32, 32, dy, dx, f,
                                        (const float(*)[256])d->lut, cand);
                    if (memcmp(cand, x, sizeof x) == 0) {
                        hits[dy + 4][dx + 4][f]++;
                        found = 1;
                    }
                }
        if (!found) fail_msg("item %lld: augmented image is no crop/flip of the raw one", (long long)i);
    }
    int offsets_seen = 0, flips = 0;
    for (int a = 0; a < 9; a++)
        for (int b = 0; b < 9; b++) {
            offsets_seen += (hits[a][b][0] + hits[a][b][1]) > 0;
            flips += hits[a][b][1];
        }
    assert_true(offsets_seen >= 70); /* 81 cells, 300 draws: ~79 expected */
    assert_in_range(flips, 110, 190); /* binomial(300, 1/2): mean 150, sd 8.7 */
    assert_true(differ_by_epoch > 250);
    qt_dataset_destroy(d);
    tdir_remove(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_round_trip),
        cmocka_unit_test(test_limit_and_parent_folder),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_bad_label_and_missing_file_refused),
        cmocka_unit_test(test_cifar100),
        cmocka_unit_test(test_generator_deterministic),
        cmocka_unit_test(test_crop_flip_geometry),
        cmocka_unit_test(test_augmented_items_are_crops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
