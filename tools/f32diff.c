/* f32diff — compares two raw float32 files (./train --dump-params) element by element.
 *
 *   f32diff A B [--tol T]
 *
 * Prints the count, whether they are bit-identical, the largest absolute difference and
 * that difference relative to max|A|. With --tol, exits 1 when the relative figure
 * exceeds T (or the sizes differ); without it, exits 1 unless bit-identical. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"

static float *load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        qt_fail("%s: cannot open", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (bytes < 0 || bytes % 4) {
        fclose(f);
        qt_fail("%s: size %ld is not a multiple of 4", path, bytes);
        return NULL;
    }
    *n = (size_t)bytes / 4;
    float *v = qt_malloc((size_t)bytes + 4);
    if (fread(v, 4, *n, f) != *n) {
        fclose(f);
        free(v);
        qt_fail("%s: short read", path);
        return NULL;
    }
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 5 && !strcmp(argv[3], "--tol"))) {
        fprintf(stderr, "usage: f32diff A B [--tol T]\n");
        return 2;
    }
    size_t na, nb;
    float *a = load(argv[1], &na), *b = load(argv[2], &nb);
    if (!a || !b) return 2;
    if (na != nb) {
        printf("sizes differ: %zu vs %zu floats\n", na, nb);
        return 1;
    }
    double max_abs = 0, max_a = 0;
    size_t at = 0;
    int same = memcmp(a, b, na * 4) == 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= max_abs)) { /* also catches NaN */
            max_abs = isnan(d) ? INFINITY : d;
            at = i;
        }
        if (fabs(a[i]) > max_a) max_a = fabs(a[i]);
    }
    double rel = max_a > 0 ? max_abs / max_a : max_abs;
    printf("n=%zu identical=%s max_abs=%.3e (at %zu: %.9g vs %.9g) rel_to_max=%.3e\n", na, same ? "yes" : "no",
           max_abs, at, (double)a[at], (double)b[at], rel);
    int rc = argc == 5 ? !(rel <= atof(argv[4])) : !same;
    free(a);
    free(b);
    return rc;
}
