/* test_data_htk.c — HTK speech data: the header, SCP, label-list and MLF parsers (edge
 * cases and every refusal), the data set (normalisation against an independent double
 * computation, context splicing, archive ranges, eval stats from the training list, bad
 * utterances under fail and skip), and the sequence loader (padding masks, length
 * bucketing, shards across ranks, reproducibility, seek). Fixtures are written here. */
#include "test_data_common.h"

#include <math.h>
#include <sys/stat.h>

#include "data/data.h"
#include "data/htk.h"

enum { F = 4, PERIOD = 100000 };

/* Value of feature f of frame t of utterance u: distinct everywhere, not normalised. */
static float feat_value(int u, int t, int f) { return (float)(u * 3.5 + t * 0.25 + f * f - 2.0); }

static void write_htk(const char *path, int u, int frames, int feat, int kind, long extra_bytes)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t h[12];
    uint32_t ns = (uint32_t)frames, sp = PERIOD;
    uint16_t ss = (uint16_t)(feat * 4), pk = (uint16_t)kind;
    for (int i = 0; i < 4; i++) h[i] = (uint8_t)(ns >> (24 - 8 * i)), h[4 + i] = (uint8_t)(sp >> (24 - 8 * i));
    h[8] = (uint8_t)(ss >> 8), h[9] = (uint8_t)ss, h[10] = (uint8_t)(pk >> 8), h[11] = (uint8_t)pk;
    fwrite(h, 1, 12, f);
    for (int t = 0; t < frames; t++)
        for (int k = 0; k < feat; k++) {
            float v = feat_value(u, t, k);
            uint32_t b;
            memcpy(&b, &v, 4);
            uint8_t be[4] = {(uint8_t)(b >> 24), (uint8_t)(b >> 16), (uint8_t)(b >> 8), (uint8_t)b};
            fwrite(be, 1, 4, f);
        }
    for (long i = 0; i < extra_bytes; i++) fputc(0, f);
    fclose(f);
}

/* Label of frame t of utterance u in the fixtures: 3 segments per utterance. */
static int frame_label(int u, int t, int frames)
{
    int a = frames / 3, b = 2 * frames / 3;
    return t < a ? 0 : t < b ? 1 + u % 3 : 0;
}

/* Writes the MLF entry of utterance u ("*" + "/uN.lab"), times in 100 ns. */
static void mlf_entry(FILE *f, int u, int frames)
{
    static const char *names[] = {"sil", "a", "b", "c"};
    int a = frames / 3, b = 2 * frames / 3;
    fprintf(f, "\"*/u%d.lab\"\n", u);
    if (a > 0) fprintf(f, "0 %d sil\n", a * PERIOD);
    fprintf(f, "%d %d %s -12.5 word\n", a * PERIOD, b * PERIOD, names[1 + u % 3]);
    fprintf(f, "%d %d sil\n.\n", b * PERIOD, frames * PERIOD);
}

typedef struct {
    char *dir;
    int n_train, n_val;
    int lengths[256];
} htk_fixture;

/* train: u0..u(n-1) with the given lengths; val: the next n_val utterances. */
static htk_fixture make_htk(int n_train, int n_val, const int *lengths)
{
    htk_fixture fx = {.dir = tdir_create(), .n_train = n_train, .n_val = n_val};
    char p[700];
    snprintf(p, sizeof p, "%s/feats", fx.dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/labels.txt", fx.dir);
    text_save(p, "sil\na\nb\n\nc\n");
    snprintf(p, sizeof p, "%s/all.mlf", fx.dir);
    FILE *mlf = fopen(p, "w");
    fputs("#!MLF!#\n", mlf);
    FILE *lists[2];
    snprintf(p, sizeof p, "%s/train.scp", fx.dir);
    lists[0] = fopen(p, "w");
    snprintf(p, sizeof p, "%s/val.scp", fx.dir);
    lists[1] = fopen(p, "w");
    for (int u = 0; u < n_train + n_val; u++) {
        fx.lengths[u] = lengths[u];
        snprintf(p, sizeof p, "%s/feats/u%d.mfc", fx.dir, u);
        write_htk(p, u, lengths[u], F, 6 /* MFCC */, 0);
        mlf_entry(mlf, u, lengths[u]);
        fprintf(lists[u >= n_train], "feats/u%d.mfc\n", u);
    }
    fclose(mlf);
    fclose(lists[0]);
    fclose(lists[1]);
    return fx;
}

static qt_data_opts htk_opts(const htk_fixture *fx)
{
    qt_data_opts o;
    qt_data_opts_default(&o);
    snprintf(o.format, sizeof o.format, "htk");
    snprintf(o.path, sizeof o.path, "%s", fx->dir);
    snprintf(o.scp, sizeof o.scp, "train.scp");
    snprintf(o.val_scp, sizeof o.val_scp, "val.scp");
    snprintf(o.mlf, sizeof o.mlf, "all.mlf");
    snprintf(o.labels, sizeof o.labels, "labels.txt");
    o.batch = 4;
    o.workers = 2;
    o.prefetch = 3;
    return o;
}

/* ---- parsers ----------------------------------------------------------------------- */

static void test_header(void **state)
{
    (void)state;
    uint8_t h[12] = {0, 0, 0, 10, 0, 1, 0x86, 0xA0, 0, 16, 0, 6}; /* 10 frames, 10 ms, 16 B, MFCC */
    qt_htk_header hd;
    char err[512];
    assert_int_equal(qt_htk_parse_header(h, 12, 12 + 160, "f", &hd, err, sizeof err), 0);
    assert_true(hd.n_samples == 10 && hd.samp_period == 100000 && hd.samp_size == 16 && hd.parm_kind == 6);
    assert_true(qt_htk_parse_header(h, 12, 12 + 150, "f.mfc", &hd, err, sizeof err) < 0);
    assert_string_equal(err, "f.mfc: header says 10 frames x 16 bytes (172 bytes with the header) but "
                             "the file has 162 bytes");
    h[10] = 0x04, h[11] = 0x06; /* MFCC_C */
    assert_true(qt_htk_parse_header(h, 12, 172, "f", &hd, err, sizeof err) < 0);
    assert_non_null(strstr(err, "compressed (_C)"));
    h[10] = 0x10, h[11] = 0x06; /* MFCC_K */
    assert_true(qt_htk_parse_header(h, 12, 172, "f", &hd, err, sizeof err) < 0);
    assert_non_null(strstr(err, "CRC (_K)"));
    h[10] = 0, h[11] = 0; /* WAVEFORM */
    assert_true(qt_htk_parse_header(h, 12, 172, "f", &hd, err, sizeof err) < 0);
    assert_non_null(strstr(err, "not a float feature kind"));
    h[11] = 6, h[9] = 15; /* 15 bytes per frame */
    assert_true(qt_htk_parse_header(h, 12, 12 + 150, "f", &hd, err, sizeof err) < 0);
    assert_non_null(strstr(err, "not a positive multiple of 4"));
    assert_true(qt_htk_parse_header(h, 7, 7, "f", &hd, err, sizeof err) < 0);
    assert_string_equal(err, "f: 7 bytes: too short for an HTK header");
    const uint8_t be[8] = {0x3F, 0x80, 0, 0, 0xC0, 0x20, 0, 0}; /* 1.0, -2.5 */
    float v[2];
    qt_htk_decode_floats(be, 2, v);
    assert_true(v[0] == 1.0f && v[1] == -2.5f);
}

static void test_label_list_and_scp(void **state)
{
    (void)state;
    qt_label_list l;
    char err[512];
    const char *txt = "sil\r\nah\n\n  b  \nzz\n";
    assert_int_equal(qt_label_list_parse(txt, strlen(txt), "L", &l, err, sizeof err), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(qt_label_list_find(&l, "sil"), 0);
    assert_int_equal(qt_label_list_find(&l, "b"), 2);
    assert_int_equal(qt_label_list_find(&l, "zz"), 3);
    assert_int_equal(qt_label_list_find(&l, "q"), -1);
    qt_label_list_free(&l);
    assert_true(qt_label_list_parse("a\nb\na\n", 6, "L", &l, err, sizeof err) < 0);
    assert_string_equal(err, "L: label 'a' listed twice");
    assert_true(qt_label_list_parse("a b\n", 4, "L", &l, err, sizeof err) < 0);
    assert_string_equal(err, "L:1: a label name must be one word");
    assert_true(qt_label_list_parse("\n\n", 2, "L", &l, err, sizeof err) < 0);

    qt_scp s;
    txt = "data/x1.mfc\n\nlog/name2.lab=arch/a.htk[3,9]\r\nz.mfc=p/q.htk\n";
    assert_int_equal(qt_scp_parse(txt, strlen(txt), "S", &s, err, sizeof err), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.entries[0].key, "x1");
    assert_string_equal(s.entries[0].path, "data/x1.mfc");
    assert_true(s.entries[0].first == -1);
    assert_string_equal(s.entries[1].key, "name2");
    assert_string_equal(s.entries[1].path, "arch/a.htk");
    assert_true(s.entries[1].first == 3 && s.entries[1].last == 9);
    assert_string_equal(s.entries[2].key, "z");
    qt_scp_free(&s);
    txt = "ok.mfc\nbad=a.htk[9,3]\n";
    assert_true(qt_scp_parse(txt, strlen(txt), "S", &s, err, sizeof err) < 0);
    assert_string_equal(err, "S:2: bad frame range: expected file[first,last]");
}

static qt_label_list labels4(void)
{
    qt_label_list l;
    char err[256];
    assert_int_equal(qt_label_list_parse("sil\na\nb\nc\n", 10, "L", &l, err, sizeof err), 0);
    return l;
}

static void expect_mlf_error(const char *txt, const char *want)
{
    qt_label_list l = labels4();
    qt_mlf m;
    char err[512];
    assert_true(qt_mlf_parse(txt, strlen(txt), "M", &l, &m, err, sizeof err) < 0);
    if (strcmp(err, want) != 0) fail_msg("got '%s', want '%s'", err, want);
    qt_label_list_free(&l);
}

static void test_mlf_parse_and_frame_labels(void **state)
{
    (void)state;
    qt_label_list l = labels4();
    /* CRLF, blank lines, a directory pattern, extra fields, a zero-length segment. */
    const char *txt = "#!MLF!#\r\n\"*/b2.lab\"\r\n0 300000 sil\r\n300000 300000 a\r\n"
                      "300000 700000 b -3.2 WORD\r\n.\r\n\n\"data/set/a1.rec\"\n0 200000 c\n"
                      "200000 500000 sil\n.\n";
    qt_mlf m;
    char err[512];
    assert_int_equal(qt_mlf_parse(txt, strlen(txt), "M", &l, &m, err, sizeof err), 0);
    assert_int_equal(m.n_entries, 2);
    const qt_mlf_entry *e = qt_mlf_find(&m, "b2");
    assert_non_null(e);
    assert_null(qt_mlf_find(&m, "b3"));
    int32_t y[8];
    assert_int_equal(qt_mlf_frame_labels(&m, e, "M", 7, PERIOD, y, err, sizeof err), 0);
    const int32_t want[7] = {0, 0, 0, 2, 2, 2, 2};
    assert_memory_equal(y, want, sizeof want);
    /* Clipping: 7 frames of labels on 6 frames (1 over) is fine; 4 over is not. */
    assert_int_equal(qt_mlf_frame_labels(&m, e, "M", 6, PERIOD, y, err, sizeof err), 0);
    assert_true(qt_mlf_frame_labels(&m, e, "M", 3, PERIOD, y, err, sizeof err) < 0);
    assert_string_equal(err, "M: entry 'b2' (line 2): segment 3 ends at frame 7, past the 3 frames");
    assert_true(qt_mlf_frame_labels(&m, e, "M", 9, PERIOD, y, err, sizeof err) < 0);
    assert_string_equal(err, "M: entry 'b2' (line 2): frames 7..8 have no label");
    e = qt_mlf_find(&m, "a1");
    assert_int_equal(qt_mlf_frame_labels(&m, e, "M", 5, PERIOD, y, err, sizeof err), 0);
    assert_true(y[0] == 3 && y[1] == 3 && y[2] == 0 && y[4] == 0);
    qt_mlf_free(&m);
    /* Gaps and overlaps between segments. */
    txt = "#!MLF!#\n\"g.lab\"\n0 200000 a\n300000 500000 b\n.\n\"o.lab\"\n0 300000 a\n200000 500000 b\n.\n";
    assert_int_equal(qt_mlf_parse(txt, strlen(txt), "M", &l, &m, err, sizeof err), 0);
    assert_true(qt_mlf_frame_labels(&m, qt_mlf_find(&m, "g"), "M", 5, PERIOD, y, err, sizeof err) < 0);
    assert_string_equal(err, "M: entry 'g' (line 2): segment 2 leaves a gap: starts at frame 3, expected 2");
    assert_true(qt_mlf_frame_labels(&m, qt_mlf_find(&m, "o"), "M", 5, PERIOD, y, err, sizeof err) < 0);
    assert_string_equal(err, "M: entry 'o' (line 6): segment 2 overlaps: starts at frame 2, expected 3");
    qt_mlf_free(&m);
    qt_label_list_free(&l);

    expect_mlf_error("\"x.lab\"\n.\n", "M:1: not an MLF: the first line must be #!MLF!#");
    expect_mlf_error("", "M:0: empty file: expected #!MLF!#");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\n0 10 a\n", "M:3: the entry at line 2 has no '.' terminator");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\n0 10 dh\n.\n", "M:3: label not in the label list: 'dh'");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\nsil\n.\n",
                     "M:3: expected 'start end label' (frame labels need times), got 'sil'");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\n10 5 a\n.\n", "M:3: times must satisfy 0 <= start <= end <= 10^15");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\n0 9223372036854775807 a\n.\n",
                     "M:3: times must satisfy 0 <= start <= end <= 10^15");
    expect_mlf_error("#!MLF!#\n\"*/x.lab\" -> dir\n", "M:2: label file redirection (-> / =>) is not supported: '\"*/x.lab\" -> dir'");
    expect_mlf_error("#!MLF!#\nx.lab\n", "M:2: expected a quoted label file name, got 'x.lab'");
    expect_mlf_error("#!MLF!#\n\"a/x.lab\"\n0 1 a\n.\n\"b/x.lab\"\n0 1 a\n.\n", "M:5: duplicate entry for 'x'");
    expect_mlf_error("#!MLF!#\n\"x.lab\"\n0 1 a\n///\n0 1 b\n.\n",
                     "M:4: alternative transcriptions (///) are not supported");
}

/* ---- data set ---------------------------------------------------------------------- */

static void ref_norm(const htk_fixture *fx, double mean[F], double std[F])
{
    double s1[F] = {0}, s2[F] = {0};
    long n = 0;
    for (int u = 0; u < fx->n_train; u++)
        for (int t = 0; t < fx->lengths[u]; t++, n++)
            for (int f = 0; f < F; f++) {
                s1[f] += feat_value(u, t, f);
                s2[f] += (double)feat_value(u, t, f) * feat_value(u, t, f);
            }
    for (int f = 0; f < F; f++) {
        mean[f] = s1[f] / n;
        std[f] = sqrt(s2[f] / n - mean[f] * mean[f]);
    }
}

static void test_dataset_norm_context_labels(void **state)
{
    (void)state;
    const int lengths[7] = {7, 3, 12, 5, 9, 6, 4};
    htk_fixture fx = make_htk(5, 2, lengths);
    qt_data_opts o = htk_opts(&fx);
    o.context = 1;
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    assert_int_equal(qt_seq_dataset_count(d), 5);
    assert_int_equal(qt_seq_dataset_frames(d), 36);
    assert_int_equal(qt_seq_dataset_features(d), F);
    assert_int_equal(qt_seq_dataset_dim(d), 3 * F);
    assert_int_equal(qt_seq_dataset_classes(d), 4);
    assert_string_equal(qt_seq_dataset_class_name(d, 3), "c");
    double mean[F], std[F];
    ref_norm(&fx, mean, std);
    const float *m, *s;
    qt_seq_dataset_norm(d, &m, &s);
    for (int f = 0; f < F; f++) {
        assert_float_equal(m[f], mean[f], 1e-5 * (1 + fabs(mean[f])));
        assert_float_equal(s[f], std[f], 1e-5 * std[f]);
    }
    float x[12 * 3 * F];
    int32_t y[12];
    for (int u = 0; u < 5; u++) {
        int T = lengths[u];
        assert_int_equal(qt_seq_dataset_length(d, u), T);
        assert_int_equal(qt_seq_dataset_read(d, u, x, y), 0);
        for (int t = 0; t < T; t++) {
            assert_int_equal(y[t], frame_label(u, t, T));
            for (int k = -1; k <= 1; k++) {
                int src = t + k < 0 ? 0 : t + k >= T ? T - 1 : t + k; /* edges repeat */
                for (int f = 0; f < F; f++) {
                    double ref = (feat_value(u, src, f) - mean[f]) / std[f];
                    assert_float_equal(x[t * 3 * F + (k + 1) * F + f], ref, 1e-4);
                }
            }
        }
    }
    /* The normalisation round-trips through data.norm; eval uses the training stats. */
    char p[700];
    snprintf(p, sizeof p, "%s/norm.txt", fx.dir);
    assert_int_equal(qt_seq_dataset_write_norm(d, p), 0);
    qt_seq_dataset *v = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, false, &v), 0);
    assert_int_equal(qt_seq_dataset_count(v), 2);
    const float *vm, *vs;
    qt_seq_dataset_norm(v, &vm, &vs);
    assert_memory_equal(vm, m, F * sizeof(float));
    assert_memory_equal(vs, s, F * sizeof(float));
    qt_seq_dataset_destroy(v);
    snprintf(o.norm, sizeof o.norm, "norm.txt");
    assert_int_equal(qt_seq_dataset_open(&o, false, &v), 0);
    qt_seq_dataset_norm(v, &vm, &vs);
    for (int f = 0; f < F; f++) {
        assert_float_equal(vm[f], m[f], 1e-6 * (1 + fabs(m[f])));
        assert_float_equal(vs[f], s[f], 1e-6 * s[f]);
    }
    qt_seq_dataset_destroy(v);
    qt_seq_dataset_destroy(d);
    tdir_remove(fx.dir);
}

/* "logical=archive[first,last]": frames first..last of one big file. */
static void test_archive_ranges(void **state)
{
    (void)state;
    const int lengths[2] = {20, 5};
    htk_fixture fx = make_htk(2, 0, lengths);
    char p[700];
    snprintf(p, sizeof p, "%s/arch.scp", fx.dir);
    text_save(p, "set/u0.mfc=feats/u0.mfc[0,6]\nu1.mfc=feats/u0.mfc[7,19]\nu2=feats/u0.mfc[3,40]\n");
    snprintf(p, sizeof p, "%s/all.mlf", fx.dir);
    text_save(p, "#!MLF!#\n\"u0.lab\"\n0 700000 a\n.\n\"u1.lab\"\n0 1300000 b\n.\n\"u2.lab\"\n0 1 a\n.\n");
    qt_data_opts o = htk_opts(&fx);
    snprintf(o.scp, sizeof o.scp, "arch.scp");
    stderr_capture cap = capture_begin();
    qt_seq_dataset *d = NULL;
    int rc = qt_seq_dataset_open(&o, true, &d);
    char *msg = capture_end(cap);
    assert_true(rc < 0);
    assert_one_line_with(msg, "feats/u0.mfc: range [3,40] is past its 20 frames", NULL);
    free(msg);
    o.on_error = QT_DATA_ON_ERROR_SKIP;
    cap = capture_begin();
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    free(capture_end(cap));
    assert_int_equal(qt_seq_dataset_count(d), 2);
    assert_int_equal(qt_seq_dataset_skipped(d), 1);
    assert_int_equal(qt_seq_dataset_length(d, 1), 13);
    const float *m, *s;
    qt_seq_dataset_norm(d, &m, &s);
    float x[13 * F];
    int32_t y[13];
    assert_int_equal(qt_seq_dataset_read(d, 1, x, y), 0);
    for (int t = 0; t < 13; t++) {
        assert_int_equal(y[t], 2);
        for (int f = 0; f < F; f++)
            assert_float_equal(x[t * F + f], (feat_value(0, 7 + t, f) - m[f]) / s[f], 1e-5);
    }
    qt_seq_dataset_destroy(d);
    tdir_remove(fx.dir);
}

/* Each bad utterance fails the open naming it; with skip it is left out and counted. */
static void test_bad_utterances(void **state)
{
    (void)state;
    const int lengths[6] = {6, 6, 6, 6, 6, 6};
    htk_fixture fx = make_htk(6, 0, lengths);
    char p[700];
    struct {
        const char *file, *needle;
    } cases[4] = {
        {"u1.mfc", "header says 6 frames x 16 bytes (108 bytes with the header) but the file has 111 bytes"},
        {"u2.mfc", "parameter kind 02006 has the compressed (_C)"},
        {"u3.mfc", "cannot open"},
        {"u4.mfc", "no entry for 'u4' in"},
    };
    snprintf(p, sizeof p, "%s/feats/u1.mfc", fx.dir), write_htk(p, 1, 6, F, 6, 3);
    snprintf(p, sizeof p, "%s/feats/u2.mfc", fx.dir), write_htk(p, 2, 6, F, 6 | 02000, 0);
    snprintf(p, sizeof p, "%s/feats/u3.mfc", fx.dir), assert_int_equal(remove(p), 0);
    /* Drop u4's MLF entry and cut u5's labels short (frames 4..5 unlabelled). */
    snprintf(p, sizeof p, "%s/all.mlf", fx.dir);
    FILE *f = fopen(p, "w");
    fputs("#!MLF!#\n", f);
    for (int u = 0; u < 4; u++) mlf_entry(f, u, 6);
    fputs("\"*/u5.lab\"\n0 400000 a\n.\n", f);
    fclose(f);
    qt_data_opts o = htk_opts(&fx);
    for (int c = 0; c < 5; c++) {
        stderr_capture cap = capture_begin();
        qt_seq_dataset *d = NULL;
        int rc = qt_seq_dataset_open(&o, true, &d);
        char *msg = capture_end(cap);
        assert_true(rc < 0);
        if (c < 4) {
            char want[100];
            snprintf(want, sizeof want, "feats/%s: ", cases[c].file);
            assert_one_line_with(msg, "error: ", want, cases[c].needle, NULL);
        } else {
            assert_one_line_with(msg, "error: ", "entry 'u5' (line 22): frames 4..5 have no label", NULL);
        }
        free(msg);
        /* Repair the case just seen by removing it from the list; the next one fails. */
        snprintf(p, sizeof p, "%s/train.scp", fx.dir);
        char list[256] = "feats/u0.mfc\n";
        for (int u = c + 2; u < 6; u++) snprintf(list + strlen(list), sizeof list - strlen(list), "feats/u%d.mfc\n", u);
        text_save(p, list);
    }
    /* Skip: the full list opens with u0 alone, the five bad ones counted. */
    snprintf(p, sizeof p, "%s/train.scp", fx.dir);
    text_save(p, "feats/u0.mfc\nfeats/u1.mfc\nfeats/u2.mfc\nfeats/u3.mfc\nfeats/u4.mfc\nfeats/u5.mfc\n");
    o.on_error = QT_DATA_ON_ERROR_SKIP;
    stderr_capture cap = capture_begin();
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    char *msg = capture_end(cap);
    assert_non_null(strstr(msg, "5 utterances skipped"));
    free(msg);
    assert_int_equal(qt_seq_dataset_count(d), 1);
    assert_int_equal(qt_seq_dataset_skipped(d), 5);
    qt_seq_dataset_destroy(d);
    tdir_remove(fx.dir);
}

/* ---- loader ------------------------------------------------------------------------ */

static void check_batch(const qt_seq_dataset *d, const qt_seq_batch *b)
{
    int dim = qt_seq_dataset_dim(d);
    static float x[256 * 64];
    static int32_t y[256];
    int64_t frames = 0;
    int tmax = 0;
    for (int j = 0; j < b->n; j++) {
        int len = qt_seq_dataset_length(d, b->items[j]);
        assert_int_equal(b->lengths[j], len);
        tmax = len > tmax ? len : tmax;
        frames += len;
        assert_int_equal(qt_seq_dataset_read(d, b->items[j], x, y), 0);
        for (int t = 0; t < b->t; t++) {
            size_t at = (size_t)t * b->n + j;
            if (t < len) {
                assert_true(b->mask[at] == 1.0f);
                assert_int_equal(b->y[at], y[t]);
                assert_memory_equal(b->x + at * dim, x + (size_t)t * dim, (size_t)dim * sizeof(float));
            } else {
                assert_true(b->mask[at] == 0.0f);
                assert_int_equal(b->y[at], -1);
                for (int k = 0; k < dim; k++) assert_true(b->x[at * dim + k] == 0.0f);
            }
        }
    }
    assert_int_equal(b->t, tmax);
    assert_int_equal(b->frames, frames);
}

static void test_loader_padding_buckets_shards(void **state)
{
    (void)state;
    enum { N = 120 };
    int lengths[N + 10];
    for (int u = 0; u < N + 10; u++) lengths[u] = 10 + (int)((u * 2654435761u) >> 7) % 91; /* 10..100 */
    htk_fixture fx = make_htk(N, 10, lengths);
    qt_data_opts o = htk_opts(&fx);
    o.batch = 6; /* pools of 300 > 120: one pool per epoch, 20 batches */
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    int count[N] = {0};
    double eff = 0;
    for (int r = 0; r < 2; r++) {
        qt_seq_loader *l = NULL;
        assert_int_equal(qt_seq_loader_create(d, &o, true, r, 2, 13, &l), 0);
        assert_int_equal(qt_seq_loader_steps_per_epoch(l), 10);
        for (int k = 0; k < 10; k++) {
            qt_seq_batch *b;
            assert_int_equal(qt_seq_loader_next(l, &b), 0);
            assert_int_equal(b->n, 6);
            check_batch(d, b);
            eff += (double)b->frames / ((double)b->t * b->n);
            for (int j = 0; j < b->n; j++) count[b->items[j]]++;
            qt_seq_loader_release(l, b);
        }
        assert_true(qt_seq_loader_frames_per_second(l) > 0);
        qt_seq_loader_destroy(l);
    }
    for (int u = 0; u < N; u++) assert_int_equal(count[u], 1); /* disjoint and covering */
    /* Sorted pools: batches of near-equal lengths (random batching of 10..100 would give
     * about 0.65). */
    assert_true(eff / 20 > 0.9);
    qt_seq_dataset_destroy(d);

    /* Eval: sorted by length, every utterance once across 3 ranks, last batch partial. */
    assert_int_equal(qt_seq_dataset_open(&o, false, &d), 0);
    int seen[10] = {0}, last_max = 0;
    for (int r = 0; r < 3; r++) {
        qt_seq_loader *l = NULL;
        assert_int_equal(qt_seq_loader_create(d, &o, false, r, 3, 13, &l), 0);
        assert_int_equal(qt_seq_loader_steps_per_epoch(l), r == 0 ? 1 : r == 1 ? 1 : 0);
        for (int64_t k = 0; k < qt_seq_loader_steps_per_epoch(l); k++) {
            qt_seq_batch *b;
            assert_int_equal(qt_seq_loader_next(l, &b), 0);
            assert_int_equal(b->n, r == 0 ? 6 : 4);
            check_batch(d, b);
            for (int j = 0; j < b->n; j++) {
                seen[b->items[j]]++;
                if (r == 1) assert_true(b->lengths[j] >= last_max); /* batch 1 after batch 0 */
                if (r == 0) last_max = b->lengths[j] > last_max ? b->lengths[j] : last_max;
            }
            qt_seq_loader_release(l, b);
        }
        qt_seq_loader_destroy(l);
    }
    for (int u = 0; u < 10; u++) assert_int_equal(seen[u], 1);
    qt_seq_dataset_destroy(d);
    tdir_remove(fx.dir);
}

static void test_loader_reproducible_and_seek(void **state)
{
    (void)state;
    enum { N = 40 };
    int lengths[N];
    for (int u = 0; u < N; u++) lengths[u] = 5 + (u * 7919) % 23;
    htk_fixture fx = make_htk(N, 0, lengths);
    qt_data_opts o = htk_opts(&fx);
    o.batch = 3;
    o.context = 2;
    qt_seq_dataset *d = NULL;
    assert_int_equal(qt_seq_dataset_open(&o, true, &d), 0);
    enum { STEPS = 30 };
    static int64_t items[3][STEPS][3];
    static float first_x[3][STEPS];
    for (int run = 0; run < 3; run++) {
        o.workers = run == 1 ? 3 : 1;
        o.prefetch = run == 1 ? 5 : 1;
        qt_seq_loader *l = NULL;
        assert_int_equal(qt_seq_loader_create(d, &o, true, 0, 1, 77, &l), 0);
        assert_int_equal(qt_seq_loader_steps_per_epoch(l), 13); /* 40 / 3, drop_last */
        int from = run == 2 ? 17 : 0;
        if (run == 2) assert_int_equal(qt_seq_loader_seek(l, 1, 4), 0);
        for (int k = from; k < STEPS; k++) {
            qt_seq_batch *b;
            assert_int_equal(qt_seq_loader_next(l, &b), 0);
            assert_int_equal(b->epoch, k / 13);
            assert_int_equal(b->index, k % 13);
            memcpy(items[run][k], b->items, sizeof items[run][k]);
            first_x[run][k] = b->x[b->dim * 2 + 1];
            qt_seq_loader_release(l, b);
        }
        qt_seq_loader_destroy(l);
    }
    assert_memory_equal(items[0], items[1], sizeof items[0]);
    assert_memory_equal(first_x[0], first_x[1], sizeof first_x[0]);
    assert_memory_equal(items[0][17], items[2][17], sizeof(int64_t) * 3 * (STEPS - 17));
    assert_memory_equal(&first_x[0][17], &first_x[2][17], sizeof(float) * (STEPS - 17));
    /* Epochs differ. */
    assert_memory_not_equal(items[0][0], items[0][13], sizeof(int64_t) * 3 * 13);
    qt_seq_dataset_destroy(d);
    tdir_remove(fx.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_label_list_and_scp),
        cmocka_unit_test(test_mlf_parse_and_frame_labels),
        cmocka_unit_test(test_dataset_norm_context_labels),
        cmocka_unit_test(test_archive_ranges),
        cmocka_unit_test(test_bad_utterances),
        cmocka_unit_test(test_loader_padding_buckets_shards),
        cmocka_unit_test(test_loader_reproducible_and_seek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
