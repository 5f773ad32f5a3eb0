/* gen_cifar_like — writes a small learnable data set in the exact CIFAR binary layout.
 *
 *   gen_cifar_like OUTDIR [--train N] [--test M] [--seed S] [--classes K] [--noise SIGMA]
 *                  [--imagefolder SIDE]
 *
 * Defaults: --train 10000 --test 2000 --seed 1 --classes 10 --noise 24. K <= 10 writes
 * CIFAR-10's files (data_batch_1..5.bin, test_batch.bin; use data.format=cifar10), K in
 * 11..100 CIFAR-100's (train.bin, test.bin; data.format=cifar100). --imagefolder SIDE
 * writes the same images at SIDE x SIDE as OUTDIR/{train,val}/class_KK/NNNNNN.jpg or .png instead
 * (data.format=imagefolder). What the images show is described in
 * src/data/gen_cifar_like.c. Output is a pure function of the arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "data/data.h"
#include "gen_args.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_cifar_like OUTDIR [--train N] [--test M] [--seed S] [--classes K] "
               "[--noise SIGMA] [--imagefolder SIDE]\n");
}

/* One option into the generator's settings (gen_args.h). */
static int option(const char *a, const char *v, void *ctx)
{
    qt_gen_opts *g = ctx;
    const char *t = "gen_cifar_like";
    int64_t n = 0;
    int rc = gen_arg_common(t, a, v, &g->n_train, &g->n_test, &g->seed);
    if (rc <= 0) return rc;
    rc = 0;
    if (!strcmp(a, "--classes")) { rc = gen_arg_i64(t, a, v, &n); g->classes = (int)QT_MAX(QT_MIN(n, 1000), -1); }
    else if (!strcmp(a, "--imagefolder")) { rc = gen_arg_i64(t, a, v, &n); g->imagefolder_size = (int)QT_MAX(QT_MIN(n, 100000), -1); }
    else if (!strcmp(a, "--noise")) {
        char *end = NULL;
        g->noise = strtof(v, &end);
        if (!end || *end) rc = qt_fail("gen_cifar_like: --noise '%s': not a number", v);
    } else {
        return 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    qt_gen_opts g = {.n_train = 10000, .n_test = 2000, .seed = 1, .classes = 10, .noise = 24.0f};
    const char *dir;
    int rc = gen_args(argc, argv, "gen_cifar_like", usage, option, &g, &dir);
    if (rc >= 0) return rc;
    if (qt_gen_cifar_like(dir, &g) < 0) return 1;
    fprintf(stderr, "gen_cifar_like: wrote %lld train + %lld test images, %d classes, to %s\n",
            (long long)g.n_train, (long long)g.n_test, g.classes, dir);
    return 0;
}
