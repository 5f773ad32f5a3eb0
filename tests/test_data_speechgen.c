/* test_data_speechgen.c — the generated speech-like HTK/MLF set (gen_speech_like.c):
 * it opens with the htk reader (counts, dims, classes, header bytes), its MLF labels are
 * what the plan says under this file's own reading of the rule, the same options give
 * the same bytes, bad options fail with one line, and the task needs memory: the best
 * possible +-5 frame window oracle stays below 0.5 frame accuracy while an oracle with
 * memory is exact, and a plain burst detector on the features the model sees reaches
 * ~1 with memory but < 0.5 with a window. */
#include "test_data_common.h"

#include <math.h>
#include <sys/stat.h>

#include "core/qt.h"
#include "data/data.h"

enum { F = 40, K = 4, N_TRAIN = 100, N_TEST = 25, W = 5, SLOTS = 2 * W + 1 };
static const uint64_t SEED = 7;

static qt_gen_speech_opts gen_opts(void)
{
    return (qt_gen_speech_opts){.n_train = N_TRAIN, .n_test = N_TEST, .seed = SEED, .features = F, .classes = K};
}

static qt_data_opts htk_opts(const char *dir, int context)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.format, sizeof o.format, "htk");
    snprintf(o.path, sizeof o.path, "%s", dir);
    snprintf(o.scp, sizeof o.scp, "train.scp");
    snprintf(o.val_scp, sizeof o.val_scp, "test.scp");
    snprintf(o.mlf, sizeof o.mlf, "labels.mlf");
    snprintf(o.labels, sizeof o.labels, "labels.list");
    o.context = context;
    return o;
}

/* The documented rule, written independently of the generator: 0 before the first
 * burst, then 1 + kind of the latest burst that has started. */
static void plan_labels(const qt_gen_speech_plan *p, int32_t *y)
{
    for (int t = 0; t < p->frames; t++) {
        y[t] = 0;
        for (int j = 0; j < p->n_events; j++)
            if (p->start[j] <= t) y[t] = 1 + p->kind[j];
    }
}

/* What a frame shows of the plan: burst frame (kind, position) or plain. */
static void plan_slots(const qt_gen_speech_plan *p, uint16_t *slot)
{
    for (int t = 0; t < p->frames; t++) slot[t] = 2;
    for (int j = 0; j < p->n_events; j++)
        for (int b = 0; b < p->length[j]; b++) slot[p->start[j] + b] = (uint16_t)(3 + 3 * p->kind[j] + b);
}

static int setup(void **state)
{
    char *dir = tdir_create();
    qt_gen_speech_opts g = gen_opts();
    if (qt_gen_speech_like(dir, &g) != 0) return -1;
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    tdir_remove(*state);
    return 0;
}

/* The reader accepts the set: counts, dims, classes, lengths, labels, shared norm. */
static void test_reader_opens_and_labels_match(void **state)
{
    const char *dir = *state;
    qt_gen_speech_opts g = gen_opts();
    for (int split = 0; split < 2; split++) {
        qt_data_opts o = htk_opts(dir, split ? 2 : 0);
        qt_seq_dataset *d = NULL;
        assert_int_equal(qt_seq_dataset_open(&o, split == 0, &d), 0);
        int64_t n = split ? N_TEST : N_TRAIN, frames = 0;
        assert_int_equal(qt_seq_dataset_count(d), n);
        assert_int_equal(qt_seq_dataset_features(d), F);
        assert_int_equal(qt_seq_dataset_dim(d), F * (split ? 5 : 1));
        assert_int_equal(qt_seq_dataset_classes(d), K + 1);
        assert_string_equal(qt_seq_dataset_class_name(d, 0), "sil");
        assert_string_equal(qt_seq_dataset_class_name(d, K), "ev3");
        assert_int_equal(qt_seq_dataset_skipped(d), 0);
        float *x = malloc(sizeof(float) * 200 * F * 5);
        int32_t y[200], want[200];
        for (int64_t i = 0; i < n; i++) {
            qt_gen_speech_plan p;
            qt_gen_speech_describe(&g, split, i, &p);
            assert_int_equal(qt_seq_dataset_length(d, i), p.frames);
            frames += p.frames;
            assert_int_equal(qt_seq_dataset_read(d, i, x, y), 0);
            plan_labels(&p, want);
            assert_memory_equal(y, want, sizeof(int32_t) * (size_t)p.frames);
        }
        assert_int_equal(qt_seq_dataset_frames(d), frames);
        free(x);
        qt_seq_dataset_destroy(d);
    }
    /* Raw header of one file: frames, 10 ms, 4F bytes per frame, USER. */
    qt_gen_speech_plan p;
    qt_gen_speech_describe(&g, 1, 3, &p);
    char path[700];
    snprintf(path, sizeof path, "%s/feats/te000003.htk", dir);
    uint8_t h[12];
    assert_int_equal(file_read_at(path, 0, h, 12), 12);
    uint8_t want[12] = {0, 0, 0, (uint8_t)p.frames, 0, 1, 0x86, 0xA0, 0, 4 * F, 0, 9};
    assert_memory_equal(h, want, 12);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 12 + 4 * F * p.frames);
}

static char *slurp(const char *dir, const char *name, long *n)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)*n + 1);
    assert_int_equal(fread(b, 1, (size_t)*n, f), (size_t)*n);
    b[*n] = '\0';
    fclose(f);
    return b;
}

static bool same_file(const char *a, const char *b, const char *name)
{
    long na, nb;
    char *x = slurp(a, name, &na), *y = slurp(b, name, &nb);
    bool same = na == nb && memcmp(x, y, (size_t)na) == 0;
    free(x);
    free(y);
    return same;
}

/* Same options -> identical bytes in every file; another seed -> other data; the plan
 * (hence the MLF) does not depend on F, and F need not be a multiple of K. */
static void test_deterministic(void **state)
{
    const char *a = *state;
    char *b = tdir_create(), *c = tdir_create(), *e = tdir_create();
    qt_gen_speech_opts g = gen_opts();
    assert_int_equal(qt_gen_speech_like(b, &g), 0);
    const char *names[] = {"train.scp", "test.scp", "labels.mlf", "labels.list"};
    for (int k = 0; k < 4; k++) assert_true(same_file(a, b, names[k]));
    char name[64];
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < (split ? N_TEST : N_TRAIN); i++) {
            snprintf(name, sizeof name, "feats/%s%06d.htk", split ? "te" : "tr", i);
            assert_true(same_file(a, b, name));
        }
    g.seed = SEED + 1;
    assert_int_equal(qt_gen_speech_like(c, &g), 0);
    assert_false(same_file(a, c, "labels.mlf"));
    assert_false(same_file(a, c, "feats/tr000000.htk"));
    g.seed = SEED;
    g.features = 13; /* bands of 4, 3, 3, 3 features */
    assert_int_equal(qt_gen_speech_like(e, &g), 0);
    assert_true(same_file(a, e, "labels.mlf"));
    assert_false(same_file(a, e, "feats/tr000000.htk"));
    qt_data_opts o = htk_opts(e, 0);
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, false, &d), 0);
    assert_int_equal(qt_seq_dataset_features(d), 13);
    assert_int_equal(qt_seq_dataset_count(d), N_TEST);
    qt_seq_dataset_destroy(d);
    tdir_remove(b);
    tdir_remove(c);
    tdir_remove(e);
}

typedef struct {
    uint16_t key[SLOTS];
    int16_t label;
} window_obs;

static int cmp_obs(const void *pa, const void *pb)
{
    const window_obs *a = pa, *b = pb;
    int c = memcmp(a->key, b->key, sizeof a->key);
    return c ? c : a->label - b->label;
}

/* The needs-memory property on the default-sized list (400 utterances, plans only).
 * Window oracle: frames grouped by everything a +-5 frame window can show of the plan
 * (burst kind and position per frame, utterance edges); within a group the best any
 * window model can do is the group's most frequent label (the features add only noise
 * independent of the labels), so sum(max count) / frames bounds every such model. */
static void test_needs_memory(void **state)
{
    (void)state;
    qt_gen_speech_opts g = {.n_train = 400, .n_test = 100, .seed = 1, .features = 40, .classes = 4};
    window_obs *obs = malloc(sizeof *obs * 400 * 200);
    int64_t n = 0, memory_right = 0, in_window = 0, counts[K + 1] = {0};
    int gaps_min = 1000, gaps_max = 0;
    for (int i = 0; i < 400; i++) {
        qt_gen_speech_plan p;
        qt_gen_speech_describe(&g, 0, i, &p);
        assert_true(p.frames >= 60 && p.frames <= 200);
        assert_true(p.n_events >= 1 && p.start[0] >= 10 && p.start[0] <= 40);
        for (int j = 0; j < p.n_events; j++) {
            assert_true(p.length[j] >= 2 && p.length[j] <= 3 && p.start[j] + p.length[j] <= p.frames);
            assert_true(p.kind[j] >= 0 && p.kind[j] < K);
            if (j > 0) {
                gaps_min = QT_MIN(gaps_min, p.start[j] - p.start[j - 1]);
                gaps_max = QT_MAX(gaps_max, p.start[j] - p.start[j - 1]);
            }
        }
        int32_t y[200];
        uint16_t slot[200];
        plan_labels(&p, y);
        plan_slots(&p, slot);
        int32_t held = 0; /* the memory oracle: reads frames in order, keeps the last onset */
        for (int t = 0; t < p.frames; t++) {
            if (slot[t] >= 3 && (slot[t] - 3) % 3 == 0) held = 1 + (slot[t] - 3) / 3;
            memory_right += held == y[t];
            counts[y[t]]++;
            window_obs *o = &obs[n++];
            for (int k = -W; k <= W; k++)
                o->key[k + W] = t + k < 0 ? 0 : t + k >= p.frames ? 1 : slot[t + k];
            o->label = (int16_t)y[t];
            int last = -1;
            for (int j = 0; j < p.n_events; j++)
                if (p.start[j] <= t) last = p.start[j];
            in_window += last >= 0 ? t - last <= W : t <= W;
        }
    }
    assert_int_equal(gaps_min, 15);
    assert_int_equal(gaps_max, 50);
    for (int c = 0; c <= K; c++) assert_true(counts[c] > n / 10); /* every class is common */
    qsort(obs, (size_t)n, sizeof *obs, cmp_obs);
    int64_t best = 0;
    for (int64_t a = 0; a < n;) {
        int64_t b = a, top = 0;
        while (b < n && memcmp(obs[b].key, obs[a].key, sizeof obs[a].key) == 0) {
            int64_t r = b;
            while (r < n && cmp_obs(&obs[r], &obs[b]) == 0) r++;
            top = QT_MAX(top, r - b);
            b = r;
        }
        best += top;
        a = b;
    }
    double window_acc = (double)best / (double)n, memory_acc = (double)memory_right / (double)n;
    printf("speechgen: %lld frames; sil %.3f; onset within +-%d frames %.3f; best window oracle %.3f; "
           "memory oracle %.3f\n", (long long)n, (double)counts[0] / (double)n, W,
           (double)in_window / (double)n, window_acc, memory_acc);
    assert_true(window_acc < 0.5);
    assert_true(memory_acc == 1.0);
    free(obs);
}

/* A burst detector on the normalised features the model sees (band contrast above a
 * threshold): holding its last detection labels ~every frame; looking back only W
 * frames (then guessing the commonest class of such frames) does not. */
static void test_detector_needs_memory(void **state)
{
    const char *dir = *state;
    qt_data_opts o = htk_opts(dir, 0);
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    float *x = malloc(sizeof(float) * 200 * F);
    int32_t y[200], seen[200];
    int64_t n = 0, memory_right = 0, window_right = 0, blind[K + 1] = {0}, blind_n = 0;
    for (int64_t i = 0; i < qt_seq_dataset_count(d); i++) {
        int T = qt_seq_dataset_length(d, i);
        assert_int_equal(qt_seq_dataset_read(d, i, x, y), 0);
        int32_t held = 0;
        for (int t = 0; t < T; t++) {
            const float *r = x + (size_t)t * F;
            double all = 0, best = -1e30;
            int best_k = -1;
            for (int f = 0; f < F; f++) all += r[f];
            for (int k = 0; k < K; k++) {
                double band = 0;
                for (int f = k * F / K; f < (k + 1) * F / K; f++) band += r[f];
                double contrast = band / (F / K) - all / F;
                if (contrast > best) best = contrast, best_k = k;
            }
            seen[t] = best > 0.9 ? 1 + best_k : 0;
            if (seen[t]) held = seen[t];
            memory_right += held == y[t];
            int32_t w = -1;
            for (int k = QT_MAX(t - W, 0); k <= t; k++)
                if (seen[k]) w = seen[k];
            if (w < 0 && t <= W) w = 0; /* the window reaches the start: still sil */
            if (w >= 0) window_right += w == y[t];
            else blind[y[t]]++, blind_n++;
            n++;
        }
    }
    int64_t top = 0;
    for (int c = 0; c <= K; c++) top = QT_MAX(top, blind[c]);
    double memory_acc = (double)memory_right / (double)n, window_acc = (double)(window_right + top) / (double)n;
    printf("speechgen: detector on %lld frames: with memory %.4f, last %d frames only %.3f "
           "(%.3f of frames show no burst)\n", (long long)n, memory_acc, W, window_acc, (double)blind_n / (double)n);
    assert_true(memory_acc > 0.99);
    assert_true(window_acc < 0.5);
    free(x);
    qt_seq_dataset_destroy(d);
}

static void expect_gen_error(const qt_gen_speech_opts *g, const char *dir, const char *needle)
{
    stderr_capture c = capture_begin();
    int rc = qt_gen_speech_like(dir, g);
    char *err = capture_end(c);
    assert_true(rc < 0);
    assert_one_line_with(err, needle, NULL);
    free(err);
}

static void test_bad_options(void **state)
{
    const char *dir = *state;
    char *t = tdir_create();
    qt_gen_speech_opts g = gen_opts();
    g.classes = 0;
    expect_gen_error(&g, t, "--classes 0: must be between 1 and 100");
    g = gen_opts();
    g.features = 3;
    expect_gen_error(&g, t, "--features 3: must be between --classes (4) and 4096");
    g = gen_opts();
    g.n_test = 0;
    expect_gen_error(&g, t, "utterance counts must be between 1 and");
    g = gen_opts();
    char blocked[800];
    snprintf(blocked, sizeof blocked, "%s/train.scp/sub", dir); /* a file as a folder */
    char want[820];
    snprintf(want, sizeof want, "%s/train.scp/sub: cannot create folder", dir);
    expect_gen_error(&g, blocked, want);
    tdir_remove(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_opens_and_labels_match),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_needs_memory),
        cmocka_unit_test(test_detector_needs_memory),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
