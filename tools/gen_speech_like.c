/* gen_speech_like — writes a small speech-like HTK/MLF data set whose frame labels need
 * memory (for tests and configs/quickstart_speech.ini).
 *
 *   gen_speech_like OUTDIR [--train N] [--test M] [--features F] [--classes K] [--seed S]
 *
 * Defaults: --train 400 --test 100 --features 40 --classes 4 --seed 1. Writes
 * OUTDIR/train.scp, test.scp, feats/{tr,te}NNNNNN.htk, labels.mlf and labels.list (K + 1 classes:
 * sil, ev0..ev<K-1>); read it with data.format = htk, scp = train.scp, val_scp =
 * test.scp, mlf = labels.mlf, labels = labels.list. What the utterances hold is
 * described in src/data/gen_speech_like.c. Output is a pure function of the arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "data/data.h"

static int parse_i64(const char *flag, const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || end == s)
        return qt_fail("gen_speech_like: %s '%s': not an integer", flag, s);
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_speech_like OUTDIR [--train N] [--test M] [--features F] [--classes K] "
               "[--seed S]\n");
}

int main(int argc, char **argv)
{
    qt_gen_speech_opts g = {.n_train = 400, .n_test = 100, .seed = 1, .features = 40, .classes = 4};
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (dir) {
                usage(stderr);
                return 2;
            }
            dir = a;
            continue;
        }
        if (i + 1 >= argc) {
            qt_fail("gen_speech_like: %s needs a value", a);
            return 2;
        }
        const char *v = argv[++i];
        int64_t n = 0;
        int rc = 0;
        if (!strcmp(a, "--train")) rc = parse_i64(a, v, &g.n_train);
        else if (!strcmp(a, "--test")) rc = parse_i64(a, v, &g.n_test);
        else if (!strcmp(a, "--seed")) { rc = parse_i64(a, v, &n); g.seed = (uint64_t)n; }
        else if (!strcmp(a, "--features")) { rc = parse_i64(a, v, &n); g.features = (int)QT_MAX(QT_MIN(n, 1000000), -1); }
        else if (!strcmp(a, "--classes")) { rc = parse_i64(a, v, &n); g.classes = (int)QT_MAX(QT_MIN(n, 1000000), -1); }
        else {
            qt_fail("gen_speech_like: unknown option %s", a);
            usage(stderr);
            return 2;
        }
        if (rc < 0) return 2;
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    if (qt_gen_speech_like(dir, &g) < 0) return 1;
    fprintf(stderr, "gen_speech_like: wrote %lld train + %lld test utterances, %d features, %d event "
                    "classes + sil, to %s\n",
            (long long)g.n_train, (long long)g.n_test, g.features, g.classes, dir);
    return 0;
}
