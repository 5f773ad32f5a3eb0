/* test_data_imagefolder.c — the image-folder data set and its loader on a generated
 * tree: class discovery and order, the class list, a flat val folder with a label file,
 * start-up errors, exact centre-crop geometry and normalisation on a patterned PNG,
 * a reproducible augmented stream independent of the worker count, and every bad-input
 * case (truncated JPEG, corrupt PNG, non-image, unreadable file) under on_error=fail and
 * on_error=skip. */
#include "test_data_imgutil.h"

#include <sys/stat.h>

#include "data/data.h"
#include "data/image.h"

enum { S = 32 }; /* image_size used throughout */

static void write_png_rgb(const char *path, int w, int h, unsigned seed)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)((i * 2654435761u + seed * 97u) >> 24);
    membuf m = png_encode(w, h, 8, PNG_COLOR_TYPE_RGB, rgb, (size_t)w * 3, NULL, 0, NULL, 0, false);
    membuf_save(&m, path, m.n);
    free(m.data);
    free(rgb);
}

static void write_jpeg(const char *path, int w, int h, size_t keep_fraction_pct)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    smooth_rgb(w, h, rgb);
    membuf m = jpeg_encode(w, h, 3, rgb, 90);
    membuf_save(&m, path, m.n * keep_fraction_pct / 100);
    free(m.data);
    free(rgb);
}

static void mkdirf(const char *fmt, const char *root)
{
    char p[600];
    snprintf(p, sizeof p, fmt, root);
    assert_int_equal(mkdir(p, 0755), 0);
}

/* root/train/{cat,dog,eel}: 3 + 2 + 3 files, PNG and JPEG, one PNG named .jpg, plus a
 * hidden file and a hidden folder that must be ignored; root/val flat + labels. */
static char *make_tree(void)
{
    char *t = tdir_create();
    char p[600];
    mkdirf("%s/train", t);
    mkdirf("%s/train/cat", t);
    mkdirf("%s/train/dog", t);
    mkdirf("%s/train/eel", t);
    mkdirf("%s/train/.git", t);
    mkdirf("%s/val", t);
    snprintf(p, sizeof p, "%s/train/cat/a.png", t), write_png_rgb(p, 48, 40, 1);
    snprintf(p, sizeof p, "%s/train/cat/b.jpg", t), write_jpeg(p, 64, 48, 100);
    snprintf(p, sizeof p, "%s/train/cat/c.jpg", t), write_png_rgb(p, 40, 56, 2); /* PNG inside */
    snprintf(p, sizeof p, "%s/train/cat/.DS_Store", t), text_save(p, "junk");
    snprintf(p, sizeof p, "%s/train/dog/x.jpeg", t), write_jpeg(p, 80, 60, 100);
    snprintf(p, sizeof p, "%s/train/dog/y.png", t), write_png_rgb(p, 36, 36, 3);
    snprintf(p, sizeof p, "%s/train/eel/e1.png", t), write_png_rgb(p, 50, 45, 4);
    snprintf(p, sizeof p, "%s/train/eel/e2.jpg", t), write_jpeg(p, 100, 70, 100);
    snprintf(p, sizeof p, "%s/train/eel/e3.png", t), write_png_rgb(p, 33, 60, 5);
    snprintf(p, sizeof p, "%s/val/v1.png", t), write_png_rgb(p, 40, 40, 6);
    snprintf(p, sizeof p, "%s/val/v2.jpg", t), write_jpeg(p, 48, 48, 100);
    snprintf(p, sizeof p, "%s/val/v3.png", t), write_png_rgb(p, 44, 40, 7);
    snprintf(p, sizeof p, "%s/val_labels.txt", t);
    text_save(p, "# filename class\nv1.png dog\n\nv2.jpg 2\r\nv3.png cat\n");
    return t;
}

static qt_data_opts opts_for(const char *root)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.format, sizeof o.format, "imagefolder");
    snprintf(o.path, sizeof o.path, "%s", root);
    o.image_size = S;
    o.resize = 40;
    o.batch = 3;
    o.workers = 2;
    o.prefetch = 2;
    return o;
}

static void expect_open_error(const qt_data_opts *o, bool train, const char *needle)
{
    qt_dataset *d = NULL;
    stderr_capture cap = capture_begin();
    int rc = qt_dataset_open(o, train, &d);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_one_line_with(msg, "error: ", needle, NULL);
    free(msg);
}

static void test_classes_items_and_class_list(void **state)
{
    (void)state;
    char *t = make_tree();
    qt_data_opts o = opts_for(t);
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 8);
    assert_int_equal(qt_dataset_classes(d), 3);
    int c, h, w;
    qt_dataset_shape(d, &c, &h, &w);
    assert_true(c == 3 && h == S && w == S);
    assert_string_equal(qt_dataset_class_name(d, 0), "cat");
    assert_string_equal(qt_dataset_class_name(d, 2), "eel");
    assert_null(qt_dataset_class_name(d, 3));
    char p[600];
    snprintf(p, sizeof p, "%s/classes.txt", t);
    assert_int_equal(qt_dataset_write_class_list(d, p), 0);
    char text[64] = "";
    file_read_at(p, 0, text, sizeof text - 1);
    assert_string_equal(text, "0 cat\n1 dog\n2 eel\n");
    /* Items class by class, files sorted: labels 0 0 0 1 1 2 2 2. */
    static float x[3 * S * S];
    const int want[8] = {0, 0, 0, 1, 1, 2, 2, 2};
    for (int i = 0; i < 8; i++) {
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, false, 0, 0, x, &y), 0);
        assert_int_equal(y, want[i]);
    }
    qt_dataset_destroy(d);
    /* limit spreads evenly: 3 of 8 -> items 1, 4, 6 -> one per class. */
    o.limit = 3;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 3);
    for (int i = 0; i < 3; i++) {
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, false, 0, 0, x, &y), 0);
        assert_int_equal(y, i);
    }
    qt_dataset_destroy(d);
    tdir_remove(t);
}

static void test_val_flat_with_labels(void **state)
{
    (void)state;
    char *t = make_tree();
    qt_data_opts o = opts_for(t);
    snprintf(o.val_labels, sizeof o.val_labels, "val_labels.txt"); /* relative to path */
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, false, &d), 0);
    assert_int_equal(qt_dataset_count(d), 3);
    assert_int_equal(qt_dataset_classes(d), 3);
    static float x[3 * S * S];
    const int want[3] = {1, 2, 0};
    for (int i = 0; i < 3; i++) {
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, false, 0, 0, x, &y), 0);
        assert_int_equal(y, want[i]);
    }
    qt_dataset_destroy(d);
    char p[600], want_msg[700];
    snprintf(p, sizeof p, "%s/val_labels.txt", t);
    text_save(p, "v1.png dog\nv2.jpg wolf\n");
    snprintf(want_msg, sizeof want_msg, "%s:2: class 'wolf' is neither a class folder name nor an index 0..2", p);
    expect_open_error(&o, false, want_msg);
    text_save(p, "v1.png\n");
    snprintf(want_msg, sizeof want_msg, "%s:1: expected 'filename class'", p);
    expect_open_error(&o, false, want_msg);
    tdir_remove(t);
}

static void test_startup_errors(void **state)
{
    (void)state;
    qt_data_opts o = opts_for("/nonexistent/imagenet");
    expect_open_error(&o, true, "/nonexistent/imagenet: not a folder");
    char *t = tdir_create();
    char p[600];
    snprintf(p, sizeof p, "%s/train", t);
    assert_int_equal(mkdir(p, 0755), 0);
    o = opts_for(t);
    char want[700];
    snprintf(want, sizeof want, "%s/train: no class folders", t);
    expect_open_error(&o, true, want);
    snprintf(p, sizeof p, "%s/train/empty", t);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(want, sizeof want, "%s/train: no image files", t);
    expect_open_error(&o, true, want);
    snprintf(want, sizeof want, "%s/val: not a folder", t);
    expect_open_error(&o, false, want);
    o.resize = 16;
    expect_open_error(&o, true, "resize = 16: must be >= image_size (32)");
    tdir_remove(t);
}

/* 48x40 PNG, resize 40 = the shorter side: scale 1, the 32x32 crop starts at (8, 4) and
 * the output is the normalised source pixels exactly. */
static void test_centre_crop_exact(void **state)
{
    (void)state;
    char *t = make_tree();
    qt_data_opts o = opts_for(t);
    o.mean[0] = 0.1f, o.mean[1] = 0.5f, o.mean[2] = 0.9f;
    o.std[0] = 0.2f, o.std[1] = 0.3f, o.std[2] = 0.4f;
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    static float x[3 * S * S];
    int32_t y;
    assert_int_equal(qt_dataset_read(d, 0, false, 0, 0, x, &y), 0); /* cat/a.png */
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < S; r++)
            for (int q = 0; q < S; q++) {
                int i = ((r + 4) * 48 + (q + 8)) * 3 + c;
                uint8_t v = (uint8_t)((i * 2654435761u + 1 * 97u) >> 24);
                double ref = (v / 255.0 - o.mean[c]) / o.std[c];
                assert_float_equal(x[(c * S + r) * S + q], ref, 1e-5);
            }
    qt_dataset_destroy(d);
    tdir_remove(t);
}

static void test_augmented_stream_reproducible(void **state)
{
    (void)state;
    char *t = make_tree();
    qt_data_opts o = opts_for(t);
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    enum { STEPS = 6, N = 3 * 3 * S * S };
    static float got[2][STEPS][N];
    static int64_t items[2][STEPS][3];
    for (int run = 0; run < 2; run++) {
        o.workers = run ? 3 : 1;
        o.prefetch = run ? 4 : 1;
        qt_loader *l = NULL;
        assert_int_equal(qt_loader_create(d, &o, true, 0, 1, 21, &l), 0);
        assert_int_equal(qt_loader_steps_per_epoch(l), 2); /* 8 items, batch 3, drop_last */
        for (int k = 0; k < STEPS; k++) {
            qt_batch *b;
            assert_int_equal(qt_loader_next(l, &b), 0);
            memcpy(got[run][k], b->x, sizeof got[run][k]);
            memcpy(items[run][k], b->items, sizeof items[run][k]);
            qt_loader_release(l, b);
        }
        qt_loader_destroy(l);
    }
    assert_memory_equal(got[0], got[1], sizeof got[0]);
    assert_memory_equal(items[0], items[1], sizeof items[0]);
    static float x[3 * S * S], x2[3 * S * S];
    int32_t y;
    assert_int_equal(qt_dataset_read(d, items[0][3][1], true, 21, 1, x, &y), 0);
    assert_memory_equal(x, got[0][3] + 3 * S * S, sizeof x);
    assert_int_equal(qt_dataset_read(d, items[0][3][1], true, 21, 2, x2, &y), 0);
    assert_memory_not_equal(x, x2, sizeof x);
    qt_dataset_destroy(d);
    tdir_remove(t);
}

/* Four bad files in a 6-item eval folder: a truncated JPEG, a PNG with a damaged chunk,
 * a text file, a dangling link. fail: the loader returns an error naming the file; skip:
 * every batch is full of good items and the skips are counted. */
static void test_bad_inputs_fail_and_skip(void **state)
{
    (void)state;
    char *t = make_tree();
    char p[600], q[600];
    snprintf(p, sizeof p, "%s/train/dog/bad1.jpg", t), write_jpeg(p, 64, 64, 60);
    snprintf(p, sizeof p, "%s/train/dog/bad2.png", t), write_png_rgb(p, 30, 30, 8);
    file_poke(p, 50, 0xEE);
    snprintf(p, sizeof p, "%s/train/dog/bad3.png", t), text_save(p, "not an image\n");
    snprintf(p, sizeof p, "%s/train/dog/bad4.png", t);
    snprintf(q, sizeof q, "%s/train/dog/gone.png", t);
    assert_int_equal(symlink(q, p), 0);
    qt_data_opts o = opts_for(t);
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 12); /* dog: bad1..bad4, x.jpeg, y.png */
    const char *why[4] = {"corrupt JPEG", "corrupt PNG", "not a PNG or JPEG file", "cannot open"};
    static float x[3 * S * S];
    for (int k = 0; k < 4; k++) {
        int32_t y;
        stderr_capture cap = capture_begin();
        int rc = qt_dataset_read(d, 3 + k, false, 0, 0, x, &y);
        char *msg = capture_end(cap);
        assert_true(rc < 0);
        snprintf(p, sizeof p, "train/dog/bad%d.", k + 1);
        assert_one_line_with(msg, "error: ", p, why[k], NULL);
        free(msg);
    }
    /* fail: batch 1 of the eval order (items 3..5) contains bad1. */
    qt_loader *l = NULL;
    assert_int_equal(qt_loader_create(d, &o, false, 0, 1, 1, &l), 0);
    qt_batch *b;
    assert_int_equal(qt_loader_next(l, &b), 0);
    qt_loader_release(l, b);
    stderr_capture cap = capture_begin();
    int rc = qt_loader_next(l, &b);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_one_line_with(msg, "error: ", "bad1.jpg: corrupt JPEG", NULL);
    free(msg);
    qt_loader_release(l, b);
    qt_loader_destroy(l);
    /* skip: eval leaves items 3..6 out; each good item comes exactly once. */
    o.on_error = QT_DATA_ON_ERROR_SKIP;
    assert_int_equal(qt_loader_create(d, &o, false, 0, 1, 1, &l), 0);
    cap = capture_begin();
    int64_t seen = 0;
    for (int64_t k = 0; k < qt_loader_steps_per_epoch(l); k++) {
        assert_int_equal(qt_loader_next(l, &b), 0);
        for (int j = 0; j < b->n; j++) {
            assert_false(b->items[j] >= 3 && b->items[j] <= 6);
            assert_int_equal(b->items[j], seen < 3 ? seen : seen + 4);
            seen++;
        }
        qt_loader_release(l, b);
    }
    assert_int_equal(qt_loader_skipped(l), 4);
    qt_loader_destroy(l);
    msg = capture_end(cap);
    assert_non_null(strstr(msg, "warning: "));
    assert_non_null(strstr(msg, "bad2.png: corrupt PNG"));
    assert_non_null(strstr(msg, "4 unreadable items skipped"));
    free(msg);
    assert_int_equal(seen, 8);
    /* skip in training: batches keep their size; a bad item becomes the next good one. */
    o.batch = 4;
    assert_int_equal(qt_loader_create(d, &o, true, 0, 1, 1, &l), 0);
    cap = capture_begin();
    for (int64_t k = 0; k < 3; k++) {
        assert_int_equal(qt_loader_next(l, &b), 0);
        assert_int_equal(b->n, 4);
        for (int j = 0; j < 4; j++) assert_false(b->items[j] >= 3 && b->items[j] <= 6);
        qt_loader_release(l, b);
    }
    assert_int_equal(qt_loader_skipped(l), 4);
    qt_loader_destroy(l);
    free(capture_end(cap));
    qt_dataset_destroy(d);
    tdir_remove(t);
}

/* Enough long file names to make the name pool grow several times while class names
 * are being joined to file names (a moved pool must not be read through a stale pointer). */
static void test_many_long_names(void **state)
{
    (void)state;
    char *t = tdir_create();
    char p[900], name[200];
    memset(name, 'n', 150);
    name[150] = '\0';
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/class_%d_with_a_longer_name", t, k);
        assert_int_equal(mkdir(p, 0755), 0);
        for (int i = 0; i < 60; i++) {
            snprintf(p, sizeof p, "%s/class_%d_with_a_longer_name/%03d%s.png", t, k, i, name);
            write_png_rgb(p, 8 + i % 5, 9, (unsigned)(k * 100 + i));
        }
    }
    qt_data_opts o = opts_for(t); /* no train/ folder: the root holds the classes */
    o.image_size = 8;
    o.resize = 8;
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_count(d), 120);
    static float x[3 * 8 * 8];
    for (int i = 0; i < 120; i += 7) {
        int32_t y;
        assert_int_equal(qt_dataset_read(d, i, false, 0, 0, x, &y), 0);
        assert_int_equal(y, i / 60);
    }
    qt_dataset_destroy(d);
    tdir_remove(t);
}

/* The generator's image-folder layout holds the same pictures as its CIFAR layout: at
 * side 32 a PNG item decodes to exactly the CIFAR record's pixels, in the class folder
 * of the record's label; the tree opens as a 10-class imagefolder with every item. */
static void test_generated_imagefolder_matches_cifar(void **state)
{
    (void)state;
    char *a = tdir_create(), *b = tdir_create();
    qt_gen_opts g = {.n_train = 50, .n_test = 10, .seed = 5, .classes = 10, .noise = 24};
    assert_int_equal(qt_gen_cifar_like(a, &g), 0);
    g.imagefolder_size = 32;
    assert_int_equal(qt_gen_cifar_like(b, &g), 0);
    char p[700];
    uint8_t rec[3073];
    qt_data_scratch s = {0};
    for (int i = 4; i < 10; i += 5) { /* items 4 and 9 are PNGs, in data_batch_1 */
        snprintf(p, sizeof p, "%s/data_batch_1.bin", a);
        assert_int_equal(file_read_at(p, (long)i * 3073, rec, sizeof rec), (long)sizeof rec);
        snprintf(p, sizeof p, "%s/train/class_%02d/%06d.png", b, rec[0], i);
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        static uint8_t buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        qt_image im;
        char err[256];
        assert_int_equal(qt_image_decode(buf, n, 1.0, &s, 1, &im, err, sizeof err), 0);
        assert_true(im.w == 32 && im.h == 32);
        for (int k = 0; k < 1024; k++)
            for (int c = 0; c < 3; c++) assert_int_equal(im.rgb[3 * k + c], rec[1 + c * 1024 + k]);
    }
    qt_scratch_free(&s);
    qt_data_opts o = opts_for(b);
    qt_dataset *d = NULL;
    assert_int_equal(qt_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_dataset_classes(d), 10);
    assert_int_equal(qt_dataset_count(d), 50);
    qt_dataset_destroy(d);
    assert_int_equal(qt_dataset_open(&o, false, &d), 0);
    assert_int_equal(qt_dataset_count(d), 10);
    qt_dataset_destroy(d);
    tdir_remove(a);
    tdir_remove(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes_items_and_class_list),
        cmocka_unit_test(test_val_flat_with_labels),
        cmocka_unit_test(test_startup_errors),
        cmocka_unit_test(test_centre_crop_exact),
        cmocka_unit_test(test_augmented_stream_reproducible),
        cmocka_unit_test(test_bad_inputs_fail_and_skip),
        cmocka_unit_test(test_many_long_names),
        cmocka_unit_test(test_generated_imagefolder_matches_cifar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
