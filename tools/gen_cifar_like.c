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
        return qt_fail("gen_cifar_like: %s '%s': not an integer", flag, s);
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_cifar_like OUTDIR [--train N] [--test M] [--seed S] [--classes K] "
               "[--noise SIGMA] [--imagefolder SIDE]\n");
}

int main(int argc, char **argv)
{
    qt_gen_opts g = {.n_train = 10000, .n_test = 2000, .seed = 1, .classes = 10, .noise = 24.0f};
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
            qt_fail("gen_cifar_like: %s needs a value", a);
            return 2;
        }
        const char *v = argv[++i];
        int64_t n = 0;
        int rc = 0;
        if (!strcmp(a, "--train")) rc = parse_i64(a, v, &g.n_train);
        else if (!strcmp(a, "--test")) rc = parse_i64(a, v, &g.n_test);
        else if (!strcmp(a, "--seed")) { rc = parse_i64(a, v, &n); g.seed = (uint64_t)n; }
        else if (!strcmp(a, "--classes")) { rc = parse_i64(a, v, &n); g.classes = (int)QT_MAX(QT_MIN(n, 1000), -1); }
        else if (!strcmp(a, "--imagefolder")) { rc = parse_i64(a, v, &n); g.imagefolder_size = (int)QT_MAX(QT_MIN(n, 100000), -1); }
        else if (!strcmp(a, "--noise")) {
            char *end = NULL;
            g.noise = strtof(v, &end);
            if (!end || *end) rc = qt_fail("gen_cifar_like: --noise '%s': not a number", v);
        } else {
            qt_fail("gen_cifar_like: unknown option %s", a);
            usage(stderr);
            return 2;
        }
        if (rc < 0) return 2;
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    if (qt_gen_cifar_like(dir, &g) < 0) return 1;
    fprintf(stderr, "gen_cifar_like: wrote %lld train + %lld test images, %d classes, to %s\n",
            (long long)g.n_train, (long long)g.n_test, g.classes, dir);
    return 0;
}
