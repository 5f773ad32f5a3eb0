/* test_mpi_common.h — helpers shared by the MPI CMocka tests (tests/test_mpi_*.c).
 *
 * Every rank runs the same CMocka group. An assertion that fails on one rank only would
 * leave the others in a collective of the next test, so checks are made collective:
 * each rank computes a local verdict, prints its own mismatches (index, both values, max
 * difference, at most 10 lines), then all ranks assert on the AND of the verdicts.
 */
#ifndef QT_TEST_MPI_COMMON_H
#define QT_TEST_MPI_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka after the headers it needs */
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "dist/exchange.h"
#include "dist/world.h"

/* true on every rank iff ok on every rank. */
static inline bool tm_all(qt_world *w, bool ok)
{
    int mine = ok ? 1 : 0, all = 0;
    MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, w->comm));
    return all == 1;
}

#define TM_ASSERT_ALL(w, ok) assert_true(tm_all((w), (ok)))

/* Synthetic gradient of rank r at arena index i and step: uniform in [-amp, amp] plus a
 * rank-dependent offset, so the average differs from every rank's own values. */
static inline float tm_grad(uint64_t seed, uint32_t step, int r, size_t i, float amp)
{
    qt_philox_key key = qt_philox_make_key(seed, QT_RNG_TEST);
    float u = qt_u32_to_unit(qt_philox_u32(key, i, step, (uint32_t)r));
    return (2.0f * u - 1.0f) * amp + 0.05f * (float)(r + 1);
}

/* Compares got[i] with ref[i] within tol[i]; prints up to 10 mismatches with the rank,
 * index and both values, and the max difference. Returns the number of mismatches. */
static inline size_t tm_compare(const char *what, int rank, const float *got, const double *ref,
                         const double *tol, size_t n)
{
    size_t bad = 0;
    double max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol[i])) {
            if (bad < 10)
                fprintf(stderr, "[rank %d] %s: index %zu: got %.9g, want %.9g (tol %.3g)\n", rank,
                        what, i, (double)got[i], ref[i], tol[i]);
            bad++;
        }
        if (d > max_diff || d != d) max_diff = d;
    }
    if (bad)
        fprintf(stderr, "[rank %d] %s: %zu of %zu elements outside tolerance, max diff %.3g\n",
                rank, what, bad, n, max_diff);
    return bad;
}

/* ---- a model layout and its oracle, for the exchange tests ---- */

enum { MAX_SPANS = 16 };

/* A small CNN-like layout in backward order: fc first, conv1 last. */
static const struct __attribute__((unused)) {
    size_t count;
    int ndim;
    size_t row;
    float amp;
} LAYOUT[] __attribute__((unused)) = {
    {10, 1, 0, 0.5f},           /* fc bias: fp32 (1-D) */
    {10 * 2048, 2, 2048, 1.0f}, /* fc weight: coded, rows of 2048 -> d' = 512 */
    {128, 1, 0, 0.2f},          /* bn gamma */
    {128, 1, 0, 0.2f},          /* bn beta */
    {128 * 64 * 9, 4, 576, 0.3f}, /* conv: coded, rows of 576 -> d' = 288 */
    {64, 1, 0, 0.2f},
    {64, 1, 0, 0.2f},
    {64 * 32 * 9, 4, 288, 2.0f}, /* conv: coded, d' = 288 */
    {32 * 16 * 9, 4, 144, 0.7f}, /* 4608 < min_size: fp32 */
    {50000, 2, 0, 0.1f},         /* row unknown: flat codec buckets */
    {16 * 3 * 9, 4, 27, 1.0f},   /* conv1, 432 elements: fp32 */
};
enum { N_LAYOUT = sizeof LAYOUT / sizeof LAYOUT[0] };
static const uint64_t SEED __attribute__((unused)) = 1234;

typedef struct {
    qt_span spans[MAX_SPANS];
    float amp[MAX_SPANS];
    int n_spans;
    size_t n_total;
} model;

static inline void model_init(model *m)
{
    size_t off = 0;
    m->n_spans = N_LAYOUT;
    for (int i = 0; i < N_LAYOUT; i++) {
        m->spans[i] = (qt_span){off, LAYOUT[i].count, LAYOUT[i].ndim, LAYOUT[i].row};
        m->amp[i] = LAYOUT[i].amp;
        off += LAYOUT[i].count;
    }
    m->n_total = off;
}

static inline void fill_grads(const model *m, float *g, int rank, uint32_t step)
{
    for (int s = 0; s < m->n_spans; s++)
        for (size_t i = 0; i < m->spans[s].count; i++) {
            size_t k = m->spans[s].offset + i;
            g[k] = tm_grad(SEED, step, rank, k, m->amp[s]);
        }
}

static inline bool span_coded(const qt_dist_opts *o, const qt_span *s)
{
    if (o->collective == QT_COLL_ALLREDUCE && !o->fp16_allreduce) return false;
    return s->ndim > 1 && s->count >= (size_t)o->min_size;
}

/* mean[k] over ranks of step `step`'s gradients and the tolerance tol[k] of the path
 * element k takes; `quant_phases` = 0 for fp32 codecs. */
static inline void reference(const model *m, const qt_dist_opts *o, int N, uint32_t step, double *mean,
                      double *tol)
{
    int quant_phases = 0;
    if (o->codec.method != QT_CODEC_NONE && o->collective != QT_COLL_ALLREDUCE)
        quant_phases = o->collective == QT_COLL_RSAG ? 2 : 1;
    double s = o->codec.levels > 0 ? o->codec.levels : 1;
    for (int sp = 0; sp < m->n_spans; sp++) {
        const qt_span *span = &m->spans[sp];
        double big = 0;
        for (size_t i = 0; i < span->count; i++) {
            size_t k = span->offset + i;
            double sum = 0, sum_abs = 0;
            for (int r = 0; r < N; r++) {
                double g = tm_grad(SEED, step, r, k, m->amp[sp]);
                sum += g;
                sum_abs += fabs(g);
                big = fmax(big, fabs(g));
            }
            mean[k] = sum / N;
            bool coded = span_coded(o, span) && (int64_t)step >= o->warmup_steps;
            double eps = coded && o->fp16_allreduce ? 0x1p-11 : FLT_EPSILON;
            tol[k] = (N + 1) * eps * sum_abs / N + 1e-30;
            if (coded && o->fp16_allreduce) tol[k] += 0x1p-24;
        }
        if (quant_phases && span_coded(o, span) && (int64_t)step >= o->warmup_steps)
            for (size_t i = 0; i < span->count; i++)
                tol[span->offset + i] = (quant_phases + 1.0 / s) * big / s +
                                        (N + 2) * FLT_EPSILON * big;
    }
}

/* One step: fills this rank's gradients, a simulated backward announcing each span,
 * finish. Returns finish's result. */
static inline int run_step(qt_exchange *ex, const model *m, float *g, int rank, uint32_t step,
                    qt_exchange_stats *st)
{
    fill_grads(m, g, rank, step);
    qt_exchange_begin_step(ex, step);
    for (int s = 0; s < m->n_spans; s++)
        qt_exchange_ready(ex, m->spans[s].offset + m->spans[s].count);
    return qt_exchange_finish(ex, st);
}

static inline qt_dist_opts make_opts(qt_collective c, qt_codec_method method)
{
    qt_dist_opts o;
    qt_dist_opts_default(&o);
    o.bucket_kb = 64;
    o.collective = c;
    qt_codec_params_default(&o.codec, method);
    o.codec.seed = SEED;
    if (method == QT_CODEC_QSGD || method == QT_CODEC_ECQ) o.codec.norm = QT_NORM_MAX;
    return o;
}

#endif
