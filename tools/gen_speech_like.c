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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "data/data.h"
#include "gen_args.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_speech_like OUTDIR [--train N] [--test M] [--features F] [--classes K] "
               "[--seed S]\n");
}

/* One option into the generator's settings (gen_args.h). */
static int option(const char *a, const char *v, void *ctx)
{
    qt_gen_speech_opts *g = ctx;
    const char *t = "gen_speech_like";
    int64_t n = 0;
    int rc = gen_arg_common(t, a, v, &g->n_train, &g->n_test, &g->seed);
    if (rc <= 0) return rc;
    rc = 0;
    if (!strcmp(a, "--features")) { rc = gen_arg_i64(t, a, v, &n); g->features = (int)QT_MAX(QT_MIN(n, 1000000), -1); }
    else if (!strcmp(a, "--classes")) { rc = gen_arg_i64(t, a, v, &n); g->classes = (int)QT_MAX(QT_MIN(n, 1000000), -1); }
    else return 1;
    return rc;
}

int main(int argc, char **argv)
{
    qt_gen_speech_opts g = {.n_train = 400, .n_test = 100, .seed = 1, .features = 40, .classes = 4};
    const char *dir;
    int rc = gen_args(argc, argv, "gen_speech_like", usage, option, &g, &dir);
    if (rc >= 0) return rc;
    if (qt_gen_speech_like(dir, &g) < 0) return 1;
    fprintf(stderr, "gen_speech_like: wrote %lld train + %lld test utterances, %d features, %d event "
                    "classes + sil, to %s\n",
            (long long)g.n_train, (long long)g.n_test, g.features, g.classes, dir);
    return 0;
}
