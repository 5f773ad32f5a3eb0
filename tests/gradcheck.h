/* gradcheck.h — a generic finite-difference gradient checker for the layer tests (Caffe's
 * GradientChecker, adapted to fp32 layers).
 *
 * A problem is a forward function that recomputes an output vector y (n_out floats) from
 * the current inputs and parameters, and a fixed projection p: the checked scalar is
 *   L = sum_j p_j * y_j            (accumulated in double)
 * so dL/dy = p is what the test feeds to the layer's backward (a random projection makes
 * every output matter, unlike sum(y), whose gradient through BN is identically zero).
 *
 * For each checked element v_i of a variable (input or parameter) the checker takes
 * central differences with step h (default 1e-2, Caffe's):
 *   numeric = (L(v_i + h) - L(v_i - h)) / (h+ + h-)
 * where h+/h- are the steps actually representable in float. It passes when
 *   |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)
 *   rtol = 1e-3   (truncation error h^2/6 |L'''| of central differences and the float
 *                  rounding of the analytic gradient)
 *   atol = 32 * u * M / (h+ + h-),  u = 2^-24 (fp32 unit roundoff),
 *          M = sum_j |p_j| * max(|y+_j|, |y-_j|) over the outputs the perturbation changed
 *   (the float rounding of each changed output, of order u|y_j| times a small factor for
 *   its reduction, propagated through the difference quotient; outputs the perturbation
 *   does not touch are bitwise equal in both evaluations and cancel exactly).
 * Kinks (ReLU at 0, max-pool near-ties) are skipped through an optional predicate.
 * A mismatch prints the variable, index, both values and the allowed difference; the
 * report stops after 10 mismatches and ends with the max |difference| seen.
 * Large variables are sampled: at most max_checks evenly spread indices, first and last
 * included.
 */
#ifndef QT_TESTS_GRADCHECK_H
#define QT_TESTS_GRADCHECK_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void (*forward)(void *ctx); /* recomputes out from the current variables */
    void *ctx;
    const float *out; /* written by forward */
    const float *proj;
    size_t n_out;
    /* true when perturbing var[i] by +-h may cross a kink: the element is skipped. */
    bool (*near_kink)(void *ctx, const float *var, size_t i, float h);
} gc_problem;

typedef struct {
    float step;        /* h, default 1e-2 */
    double rtol;       /* default 1e-3 */
    size_t max_checks; /* default 256 */
} gc_opts;

static const gc_opts gc_default_opts = {1e-2f, 1e-3, 256};

static double gc_loss(const gc_problem *p, float *copy)
{
    p->forward(p->ctx);
    memcpy(copy, p->out, p->n_out * sizeof(float));
    double l = 0.0;
    for (size_t j = 0; j < p->n_out; j++) l += (double)p->proj[j] * (double)p->out[j];
    return l;
}

/* Checks `grad` (the analytic dL/dvar, n elements) against central differences of the
 * problem's L. var is perturbed, then restored and the output recomputed. Returns the
 * number of mismatches. */
static int gc_check(const gc_problem *p, const char *name, float *var, const float *grad, size_t n,
                    const gc_opts *o)
{
    if (!o) o = &gc_default_opts;
    const double u = ldexp(1.0, -24);
    float *yp = malloc(p->n_out * sizeof(float)), *ym = malloc(p->n_out * sizeof(float));
    if (!yp || !ym) {
        fprintf(stderr, "gradcheck: out of memory\n");
        free(yp);
        free(ym);
        return 1;
    }
    size_t checks = n < o->max_checks ? n : o->max_checks;
    int bad = 0, skipped = 0;
    double max_diff = 0.0;
    for (size_t c = 0; c < checks; c++) {
        size_t i = checks > 1 ? (size_t)((double)c * (double)(n - 1) / (double)(checks - 1) + 0.5) : 0;
        if (p->near_kink && p->near_kink(p->ctx, var, i, o->step)) {
            skipped++;
            continue;
        }
        const float v = var[i];
        const float vp = v + o->step, vm = v - o->step;
        var[i] = vp;
        const double lp = gc_loss(p, yp);
        var[i] = vm;
        const double lm = gc_loss(p, ym);
        var[i] = v;
        const double span = (double)vp - (double)vm;
        const double numeric = (lp - lm) / span;
        double m = 0.0;
        for (size_t j = 0; j < p->n_out; j++)
            if (yp[j] != ym[j]) m += fabs((double)p->proj[j]) * fmax(fabs((double)yp[j]), fabs((double)ym[j]));
        const double analytic = grad[i];
        const double allowed = 32.0 * u * m / span + o->rtol * fmax(fabs(analytic), fabs(numeric));
        const double diff = fabs(analytic - numeric);
        if (diff > max_diff || isnan(diff)) max_diff = isnan(diff) ? INFINITY : diff;
        if (!(diff <= allowed)) {
            if (bad < 10)
                fprintf(stderr, "gradcheck %s[%zu]: analytic %.7g numeric %.7g diff %.3g allowed %.3g\n",
                        name, i, analytic, numeric, diff, allowed);
            if (++bad == 10) {
                fprintf(stderr, "gradcheck %s: stopping after 10 mismatches\n", name);
                break;
            }
        }
    }
    p->forward(p->ctx); /* leave out consistent with the restored variables */
    if (bad)
        fprintf(stderr, "gradcheck %s: %d mismatches, max |diff| %.3g (%d kinks skipped)\n", name,
                bad, max_diff, skipped);
    free(yp);
    free(ym);
    return bad;
}

#endif
