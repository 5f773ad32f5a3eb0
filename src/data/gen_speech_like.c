/* gen_speech_like.c — a small speech-like data set in the exact HTK/MLF formats the
 * htk reader takes (seqdata.c), whose frame labels need memory: a model that sees one
 * frame, or a window of +-5 frames, cannot label most frames; a recurrent one can.
 *
 * What an utterance is (frame period 10 ms, F features per frame, K event kinds):
 * - Length T uniform in 60..200 frames.
 * - Event bursts: the first starts at a frame uniform in 10..40, each next one 15..50
 *   frames after the previous start; a burst lasts 2 or 3 frames, has a kind 0..K-1
 *   (uniform, independent of the previous ones) and is only placed if it fits in T.
 * - Labels: frame t's class is 1 + kind of the last burst that started at or before t,
 *   class 0 ("sil") before the first burst. So a label holds for 15..50 frames while
 *   only its first 2..3 frames carry evidence of it: about 40% of the frames at best can
 *   be labelled from a +-5 frame window (tests/test_data_speechgen.c measures it).
 * - Features: x[t][f] = env[f] + gain + n[t][f] (+ the burst), where env[f] =
 *   2 cos(pi f / F) is a fixed spectral tilt, gain is uniform in -1..1 per utterance,
 *   and n is AR(1) noise along time (rho 0.5, unit variance per frame). A burst of kind
 *   k adds 4 x s (s uniform in 0.7..1.3 per frame) to band k: the features f with
 *   floor(f K / F) == k (F >= K keeps every band non-empty). Nothing but the bursts
 *   depends on the labels, so frame-level evidence is the bursts alone.
 *
 * Files (all written fresh; a feature file of an earlier, larger run is left alone):
 *   dir/train.scp, dir/test.scp   one feature file per line, relative to dir
 *   dir/feats/trNNNNNN.htk, teNNNNNN.htk
 *                                 HTK: 12-byte big-endian header (frames, period 100000,
 *                                 4 F bytes per frame, parameter kind USER = 9), then
 *                                 big-endian float32 frames
 *   dir/labels.mlf                "#!MLF!#"; per utterance its quoted pattern (a star,
 *                                 then /NAME.lab), "start end label" runs in 100 ns
 *                                 units (adjacent frames of one class form one run), ".".
 *   dir/labels.list               "sil", "ev0" .. "ev<K-1>": line k = class k
 *
 * Everything is a pure function of (seed, split, utterance index, F, K): Philox key
 * (seed, QT_RNG_TEST), counter {block, index, split}; words 0..63 are the plan (length,
 * bursts), 64..127 the gain and burst strengths, blocks 32.. the noise (4 normals per
 * block, frame-major). The plan does not depend on F.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/philox.h"
#include "core/qt.h"
#include "data/data.h"

#define SPEECH_PI 3.14159265358979323846

enum {
    MIN_FRAMES = 60, MAX_FRAMES = 200,
    FIRST_LO = 10, FIRST_HI = 40,    /* first burst start */
    GAP_LO = 15, GAP_HI = 50,        /* start-to-start distance of bursts */
    BURST_LO = 2, BURST_HI = 3,      /* frames per burst */
    PERIOD = 100000,                 /* 10 ms in 100 ns units */
    PARM_USER = 9,
    WORD_GAIN = 64, WORD_SCALE = 65, /* nuisance words; plan words stay below 64 */
    NOISE_BLOCK = 32,
    MAX_FEATURES = 4096, MAX_CLASSES = 100
};
static const float BURST_AMPLITUDE = 4.0f, AR_RHO = 0.5f;
static const int64_t MAX_UTTERANCES = 1000000; /* six-digit file names */

static uint32_t word(qt_philox_key key, int split, int64_t index, uint64_t w)
{
    return qt_philox_u32(key, w, (uint32_t)index, (uint32_t)split);
}

/* Uniform integer in lo..hi from one 32-bit word (multiply-shift: no modulo bias
 * worth noting at these ranges). */
static int uniform_int(uint32_t x, int lo, int hi)
{
    return lo + (int)(((uint64_t)x * (uint64_t)(hi - lo + 1)) >> 32);
}

void qt_gen_speech_describe(const qt_gen_speech_opts *g, int split, int64_t index,
                            qt_gen_speech_plan *p)
{
    qt_philox_key key = qt_philox_make_key(g->seed, QT_RNG_TEST);
    memset(p, 0, sizeof *p);
    p->frames = uniform_int(word(key, split, index, 0), MIN_FRAMES, MAX_FRAMES);
    int s = uniform_int(word(key, split, index, 1), FIRST_LO, FIRST_HI);
    for (int j = 0;; j++) {
        uint64_t w = 2 + 3 * (uint64_t)j;
        int len = uniform_int(word(key, split, index, w), BURST_LO, BURST_HI);
        if (s + len > p->frames) break;
        /* 10 + 13 x 15 > 200: at most 13 bursts fit; the plan reads words 0..41 < 64. */
        QT_ASSERT(j < QT_GEN_SPEECH_MAX_EVENTS);
        p->start[j] = s;
        p->length[j] = len;
        p->kind[j] = uniform_int(word(key, split, index, w + 1), 0, g->classes - 1);
        p->n_events = j + 1;
        s += uniform_int(word(key, split, index, w + 2), GAP_LO, GAP_HI);
    }
}

/* Frames of one utterance into x [T][F] (host floats). */
static void render(const qt_gen_speech_opts *g, int split, int64_t index, const qt_gen_speech_plan *p,
                   float *x, float *ar)
{
    const int F = g->features, K = g->classes, T = p->frames;
    qt_philox_key key = qt_philox_make_key(g->seed, QT_RNG_TEST);
    float gain = 2.0f * qt_u32_to_unit(word(key, split, index, WORD_GAIN)) - 1.0f;
    float innov = sqrtf(1.0f - AR_RHO * AR_RHO);
    uint32_t w[4];
    float z[4];
    for (int64_t n = 0; n < (int64_t)T * F; n++) {
        int lane = (int)(n & 3);
        if (lane == 0) {
            qt_philox_block(key, NOISE_BLOCK + (uint64_t)(n >> 2), (uint32_t)index, (uint32_t)split, w);
            /* Box-Muller: words (0,1) and (2,3) each give two standard normals. */
            for (int h = 0; h < 2; h++) {
                float r = sqrtf(-2.0f * logf(qt_u32_to_unit(w[2 * h]) + 1.0f / 33554432.0f));
                float a = (float)(2.0 * SPEECH_PI) * qt_u32_to_unit(w[2 * h + 1]);
                z[2 * h] = r * cosf(a);
                z[2 * h + 1] = r * sinf(a);
            }
        }
        int t = (int)(n / F), f = (int)(n % F);
        ar[f] = t == 0 ? z[lane] : AR_RHO * ar[f] + innov * z[lane];
        x[n] = 2.0f * cosf((float)SPEECH_PI * (float)f / (float)F) + gain + ar[f];
    }
    for (int j = 0; j < p->n_events; j++) {
        int band_lo = (p->kind[j] * F + K - 1) / K, band_hi = ((p->kind[j] + 1) * F + K - 1) / K;
        for (int b = 0; b < p->length[j]; b++) {
            uint32_t sw = word(key, split, index, WORD_SCALE + 4 * (uint64_t)j + (uint64_t)b);
            float add = BURST_AMPLITUDE * (0.7f + 0.6f * qt_u32_to_unit(sw));
            float *row = x + (size_t)(p->start[j] + b) * F;
            for (int f = band_lo; f < band_hi; f++) row[f] += add;
        }
    }
}

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8), b[3] = (uint8_t)v;
}

/* Writes one HTK file: header, then the frames as big-endian float32. */
static int write_htk(const char *path, const float *x, int frames, int F, uint8_t *buf)
{
    put_be32(buf, (uint32_t)frames);
    put_be32(buf + 4, PERIOD);
    uint16_t size = (uint16_t)(4 * F), kind = PARM_USER;
    buf[8] = (uint8_t)(size >> 8), buf[9] = (uint8_t)size;
    buf[10] = (uint8_t)(kind >> 8), buf[11] = (uint8_t)kind;
    size_t n = (size_t)frames * (size_t)F;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        put_be32(buf + 12 + 4 * i, u);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return qt_fail("%s: cannot create: %s", path, strerror(errno));
    size_t bytes = 12 + 4 * n;
    bool ok = fwrite(buf, 1, bytes, f) == bytes;
    if (fclose(f) != 0 || !ok) return qt_fail("%s: write failed", path);
    return 0;
}

/* The MLF entry of one utterance: runs of equal classes (a burst of the same kind as
 * the one before extends the run). */
static void write_mlf_entry(FILE *mlf, const char *name, const qt_gen_speech_plan *p)
{
    fprintf(mlf, "\"*/%s.lab\"\n", name);
    int run_start = 0, run_class = 0;
    for (int j = 0; j <= p->n_events; j++) {
        int at = j < p->n_events ? p->start[j] : p->frames;
        int cls = j < p->n_events ? 1 + p->kind[j] : -1;
        if (cls == run_class) continue;
        if (at > run_start) {
            if (run_class == 0) fprintf(mlf, "%lld %lld sil\n", (long long)run_start * PERIOD, (long long)at * PERIOD);
            else fprintf(mlf, "%lld %lld ev%d\n", (long long)run_start * PERIOD, (long long)at * PERIOD, run_class - 1);
        }
        run_start = at;
        run_class = cls;
    }
    fputs(".\n", mlf);
}

static int mkdir_one(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qt_fail("%s: cannot create folder: %s", dir, strerror(errno));
    return 0;
}

static int mkdir_p(const char *dir)
{
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int rc = mkdir_one(tmp);
        *p = '/';
        if (rc < 0) return rc;
    }
    return mkdir_one(tmp);
}

static FILE *create_text(const char *dir, const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) qt_fail("%s: cannot create: %s", path, strerror(errno));
    return f;
}

static int close_text(FILE *f, const char *path)
{
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) return qt_fail("%s: write failed", path);
    return 0;
}

/* Writes the utterances of one list: feature files, SCP lines, MLF entries. */
static int write_list(const char *dir, const qt_gen_speech_opts *g, int split, FILE *mlf)
{
    static const char *prefix[2] = {"tr", "te"};
    char scp_path[1300], path[1400], name[32];
    FILE *scp = create_text(dir, split ? "test.scp" : "train.scp", scp_path, sizeof scp_path);
    if (!scp) return -1;
    const int F = g->features;
    float *x = qt_malloc((size_t)MAX_FRAMES * F * sizeof(float));
    float *ar = qt_malloc((size_t)F * sizeof(float));
    uint8_t *buf = qt_malloc(12 + (size_t)MAX_FRAMES * F * 4);
    int64_t n = split ? g->n_test : g->n_train;
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        qt_gen_speech_plan p;
        qt_gen_speech_describe(g, split, i, &p);
        render(g, split, i, &p, x, ar);
        snprintf(name, sizeof name, "%s%06lld", prefix[split], (long long)i);
        snprintf(path, sizeof path, "%s/feats/%s.htk", dir, name);
        rc = write_htk(path, x, p.frames, F, buf);
        fprintf(scp, "feats/%s.htk\n", name);
        write_mlf_entry(mlf, name, &p);
    }
    free(x);
    free(ar);
    free(buf);
    int rc2 = close_text(scp, scp_path);
    return rc < 0 ? rc : rc2;
}

int qt_gen_speech_like(const char *dir, const qt_gen_speech_opts *g)
{
    if (g->classes < 1 || g->classes > MAX_CLASSES)
        return qt_fail("gen_speech_like: --classes %d: must be between 1 and %d", g->classes, MAX_CLASSES);
    if (g->features < g->classes || g->features > MAX_FEATURES)
        return qt_fail("gen_speech_like: --features %d: must be between --classes (%d) and %d",
                       g->features, g->classes, MAX_FEATURES);
    if (g->n_train < 1 || g->n_test < 1 || g->n_train > MAX_UTTERANCES || g->n_test > MAX_UTTERANCES)
        return qt_fail("gen_speech_like: utterance counts must be between 1 and %lld",
                       (long long)MAX_UTTERANCES);
    if (strlen(dir) > 1000) return qt_fail("%.60s...: folder name too long", dir);
    char path[1300];
    snprintf(path, sizeof path, "%s/feats", dir);
    int rc = mkdir_p(path);
    if (rc < 0) return rc;

    char list_path[1300];
    FILE *f = create_text(dir, "labels.list", list_path, sizeof list_path);
    if (!f) return -1;
    fputs("sil\n", f);
    for (int k = 0; k < g->classes; k++) fprintf(f, "ev%d\n", k);
    if ((rc = close_text(f, list_path)) < 0) return rc;

    char mlf_path[1300];
    FILE *mlf = create_text(dir, "labels.mlf", mlf_path, sizeof mlf_path);
    if (!mlf) return -1;
    fputs("#!MLF!#\n", mlf);
    rc = write_list(dir, g, 0, mlf);
    if (rc == 0) rc = write_list(dir, g, 1, mlf);
    int rc2 = close_text(mlf, mlf_path);
    return rc < 0 ? rc : rc2;
}
