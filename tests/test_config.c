/* test_config.c — the config table: defaults, parsing, every error names file:line,
 * --set overrides, derived values, the hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char g_path[64];

static const char *write_ini(const char *text)
{
    snprintf(g_path, sizeof g_path, "/tmp/qt_test_config_%d.ini", (int)getpid());
    FILE *f = fopen(g_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return g_path;
}

/* Loads `text`, capturing stderr; returns the loader's result and the message. */
static int load_capture(qt_config *c, const char *text, char *msg, size_t cap)
{
    const char *path = write_ini(text);
    fflush(stderr);
    char errpath[80];
    snprintf(errpath, sizeof errpath, "/tmp/qt_test_config_%d.err", (int)getpid());
    FILE *saved = fdopen(dup(fileno(stderr)), "w");
    assert_non_null(freopen(errpath, "w", stderr));
    qt_config_default(c);
    int rc = qt_config_load(c, path);
    if (rc == 0) rc = qt_config_finish(c);
    fflush(stderr);
    dup2(fileno(saved), fileno(stderr));
    fclose(saved);
    FILE *e = fopen(errpath, "r");
    size_t n = e ? fread(msg, 1, cap - 1, e) : 0;
    msg[n] = 0;
    if (e) fclose(e);
    unlink(errpath);
    unlink(path);
    return rc;
}

static void test_defaults_and_values(void **state)
{
    (void)state;
    qt_config c;
    char msg[512];
    assert_int_equal(load_capture(&c,
                                  "; comment\n[model]\ndepth = 56\n[data]\nbatch = 64\nmean = 0.5, 0.25, 0.125\n"
                                  "[optim]\nschedule = multistep\nmilestones = 82, 123\nnesterov = true\n"
                                  "[quant]\nmethod = qsgd\nbits = 2\n[train]\nseed = 42\n",
                                  msg, sizeof msg),
                     0);
    assert_int_equal(c.model.depth, 56);
    assert_int_equal(c.data.batch, 64);
    assert_true(c.data.mean[1] == 0.25f && c.data.mean[2] == 0.125f);
    assert_int_equal(c.optim.schedule, QT_LR_MULTISTEP);
    assert_int_equal(c.optim.n_milestones, 2);
    assert_int_equal(c.optim.milestones[1], 123);
    assert_true(c.optim.nesterov);
    assert_int_equal(c.dist.codec.method, QT_CODEC_QSGD);
    /* papers.md conventions: b = 2 -> s = 1 level per sign, bucket 128. */
    assert_int_equal(c.dist.codec.levels, 1);
    assert_int_equal(c.dist.codec.bucket, 128);
    assert_int_equal(c.dist.codec.seed, 42);
    /* Untouched keys keep their documented defaults. */
    assert_int_equal(c.dist.min_size, 10000);
    assert_true(c.optim.lr == 0.1f);
    assert_int_equal(c.model.variant, QT_VARIANT_CIFAR);
}

static void expect_error(const char *text, const char *needle)
{
    qt_config c;
    char msg[1024];
    int rc = load_capture(&c, text, msg, sizeof msg);
    if (rc >= 0) fail_msg("accepted: %s", text);
    if (!strstr(msg, needle)) fail_msg("message '%s' lacks '%s'", msg, needle);
    /* One line, starting with error: and naming the file. */
    assert_non_null(strstr(msg, "error: "));
    assert_non_null(strstr(msg, "/tmp/qt_test_config_"));
    assert_true(strchr(msg, '\n') == msg + strlen(msg) - 1);
}

static void test_errors_name_file_and_line(void **state)
{
    (void)state;
    expect_error("[model]\ndepth = 20\ndepht = 3\n", ".ini:3: [model] unknown key 'depht'");
    expect_error("[model]\n\n[nosuch]\nx = 1\n", ".ini:4: unknown section [nosuch]");
    expect_error("depth = 20\n", ".ini:1: key 'depth' is outside any section");
    expect_error("[model]\ndepth = 20\ndepth = 32\n", ".ini:3: [model] depth is set twice");
    expect_error("[data]\nbatch = 0\n", ".ini:2: [data] batch = '0': must be between 1 and 65536");
    expect_error("[data]\nbatch = twelve\n", ".ini:2: [data] batch = 'twelve': must be an integer");
    expect_error("[optim]\nlr = fast\n", "[optim] lr = 'fast': must be a number");
    expect_error("[quant]\nmethod = qsdg\n", "must be one of none|fp16|bf16|qsgd|ecq|onebit|terngrad|topk");
    expect_error("[train]\neval = maybe\n", "must be true or false");
    expect_error("[data]\nmean = 1, 2\n", "must be 3 numbers");
    expect_error("[optim]\nmilestones = 5, 3\n", "must be increasing");
    expect_error("[model\ndepth = 20\n", ".ini:1: syntax error");
    expect_error("[model]\ndepth = 21\n", "cifar variant needs 6n+2");
    expect_error("[optim]\nschedule = multistep\n", "needs milestones");
    expect_error("[quant]\nmethod = qsgd\n[dist]\ncollective = allreduce\n", "collective = allreduce needs");
}

static void test_missing_file(void **state)
{
    (void)state;
    qt_config c;
    qt_config_default(&c);
    assert_true(qt_config_load(&c, "/nonexistent/dir/x.ini") < 0);
}

static void test_set_overrides(void **state)
{
    (void)state;
    qt_config c;
    qt_config_default(&c);
    assert_int_equal(qt_config_set(&c, "quant.method=ecq"), 0);
    assert_int_equal(qt_config_set(&c, "quant.bits=8"), 0);
    assert_int_equal(qt_config_set(&c, "train.log=runs/x.jsonl"), 0);
    assert_int_equal(qt_config_finish(&c), 0);
    assert_int_equal(c.dist.codec.method, QT_CODEC_ECQ);
    assert_int_equal(c.dist.codec.levels, 127);
    assert_int_equal(c.dist.codec.bucket, 512);
    assert_string_equal(c.train.log, "runs/x.jsonl");
    /* Double-typed keys land as doubles (a float write would garble them). */
    assert_int_equal(qt_config_set(&c, "dist.timeout_s=12.5"), 0);
    assert_int_equal(qt_config_set(&c, "dist.debug_delay_ms=0.25"), 0);
    assert_true(c.dist.timeout_s == 12.5 && c.dist.debug_delay_ms == 0.25);
    assert_int_equal(qt_config_set(&c, "quant.alpha=0.5"), 0);
    assert_int_equal(qt_config_set(&c, "data.scale_min=0.25"), 0);
    assert_true(c.dist.codec.alpha == 0.5f && c.data.scale_min == 0.25f);
    assert_true(qt_config_set(&c, "quant.bits=40") < 0);
    assert_true(qt_config_set(&c, "quant.nosuch=1") < 0);
    assert_true(qt_config_set(&c, "noequals") < 0);
}

static void test_hash(void **state)
{
    (void)state;
    qt_config a, b;
    qt_config_default(&a);
    qt_config_default(&b);
    assert_true(qt_config_hash(&a) == qt_config_hash(&b));
    /* Paths, logging and threads do not change the computation... */
    assert_int_equal(qt_config_set(&b, "train.log=elsewhere.jsonl"), 0);
    assert_int_equal(qt_config_set(&b, "train.threads=7"), 0);
    assert_true(qt_config_hash(&a) == qt_config_hash(&b));
    /* ...the learning rate and the codec do. */
    assert_int_equal(qt_config_set(&b, "optim.lr=0.2"), 0);
    assert_true(qt_config_hash(&a) != qt_config_hash(&b));
}

static void test_reference_lists_every_section(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    qt_config_reference(f);
    fclose(f);
    const char *sections[] = {"[model]", "[data]", "[optim]", "[quant]", "[dist]", "[train]"};
    for (int i = 0; i < 6; i++) assert_non_null(strstr(buf, sections[i]));
    assert_non_null(strstr(buf, "| `bucket_kb` |"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_values),  cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_missing_file),         cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_hash),                 cmocka_unit_test(test_reference_lists_every_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
