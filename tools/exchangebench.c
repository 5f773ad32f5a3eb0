/* exchangebench — time per gradient exchange of a ResNet-50-sized gradient, under mpirun
 * (scripts/bench_exchange.sh runs it on 2 and 4 ranks).
 *
 *   mpirun -np N exchangebench [--iters I] [--warmup W] [--bucket-kb K] [--cases LIST]
 *                              [--compute-ms C] [--no-check]
 *
 * The arena is ResNet-50's (torchvision, 25,557,032 floats, 161 tensors: conv weights with
 * their receptive-field rows, BatchNorm and fc bias in fp32 by the policy), in backward
 * order. Each rank's gradient is a fixed Philox draw (uniform, per-tensor amplitude, plus
 * a rank offset). A case is METHOD/COLLECTIVE (default none/allreduce, qsgd/allgather,
 * qsgd/rsag, ecq/rsag; codec defaults: 4 bits, bucket 512, max norm, fixed packing).
 * One exchange = begin_step, ready(everything), finish: the whole gradient at once, so
 * nothing overlaps and the time is encode + communication + decode. --compute-ms C runs
 * C ms (calibrated alone) of single-threaded arithmetic on the main thread between
 * ready() and finish(), as backward would: then time is the whole step, comp(ms) how long
 * that compute really took beside the communication thread (the interference), and
 * exposed the wait in finish().
 *
 * Columns, in the style of nccl-tests: size (fp32 MB of the gradient), time (ms, mean
 * over iterations of the slowest rank; min: the best iteration, since this machine is
 * shared), algbw = fp32 bytes / time, busbw = bytes this
 * rank put on the wire / time (for allreduce that is nccl-tests' algbw x 2(n-1)/n; for
 * the compressed collectives it is the link rate actually needed), sent/rank (MB, from
 * the engine's accounting), ratio (fp32 bytes / encoded bytes), encode / decode (ms on
 * the slowest rank), #wrong: elements of the last result outside the bound the codec
 * guarantees around the exact average (fp32: (n+1) eps max|g|; qsgd: one level per
 * quantization; ecq: the error-feedback residuals' bound), computed from every rank's
 * gradient. Ends with an OK / FAILED line; exit 1 if any #wrong.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "dist/exchange.h"
#include "dist/world.h"
#include "quant/codec.h"

enum { MAX_SPANS = 256 };
static const uint64_t SEED = 20251125;

typedef struct {
    qt_span spans[MAX_SPANS];
    float amp[MAX_SPANS];
    int n;
    size_t total;
} layout;

static void add(layout *l, size_t count, int ndim, size_t row)
{
    QT_ASSERT(l->n < MAX_SPANS);
    /* Amplitudes vary by tensor so that codec scales differ (BN small, fc large). */
    float amp = ndim == 1 ? 0.01f : 0.1f / sqrtf((float)(row ? row : 1)) * 8.0f;
    l->spans[l->n] = (qt_span){l->total, count, ndim, row};
    l->amp[l->n++] = amp;
    l->total += count;
}

static void conv_bn(layout *l, size_t cin, size_t cout, size_t k)
{
    add(l, cout * cin * k * k, 4, cin * k * k);
    add(l, cout, 1, 0);
    add(l, cout, 1, 0);
}

/* torchvision resnet50 in forward order, then reversed into backward (arena) order. */
static void resnet50(layout *out)
{
    layout f = {0};
    conv_bn(&f, 3, 64, 7);
    const int blocks[4] = {3, 4, 6, 3};
    size_t in = 64;
    for (int s = 0; s < 4; s++) {
        size_t planes = (size_t)64 << s;
        for (int b = 0; b < blocks[s]; b++) {
            conv_bn(&f, in, planes, 1);
            conv_bn(&f, planes, planes, 3);
            conv_bn(&f, planes, planes * 4, 1);
            if (b == 0) conv_bn(&f, in, planes * 4, 1); /* downsample */
            in = planes * 4;
        }
    }
    add(&f, 1000 * 2048, 2, 2048);
    add(&f, 1000, 1, 0);
    memset(out, 0, sizeof *out);
    for (int i = f.n - 1; i >= 0; i--) {
        add(out, f.spans[i].count, f.spans[i].ndim, f.spans[i].row);
        out->amp[out->n - 1] = f.amp[i];
    }
}

/* A dependent chain of float operations: `n` rounds of known cost, not optimised away. */
static float burn(long n, float seed)
{
    float x = seed;
    for (long i = 0; i < n; i++) x = x * 0.999999f + 1e-7f;
    return x;
}

/* Rounds of burn() per millisecond on this rank, alone. */
static double burn_rate(void)
{
    long n = 1 << 20;
    for (;;) {
        double t0 = qt_now();
        volatile float sink = burn(n, 1.0f);
        (void)sink;
        double dt = qt_now() - t0;
        if (dt > 0.05) return (double)n / (dt * 1e3);
        n *= 2;
    }
}

static float grad_of(int rank, size_t i, float amp)
{
    qt_philox_key key = qt_philox_make_key(SEED, QT_RNG_TEST);
    float u = qt_u32_to_unit(qt_philox_u32(key, i, 0, (uint32_t)rank));
    return (2.0f * u - 1.0f) * amp + 0.001f * (float)(rank + 1);
}

static void fill(const layout *l, int rank, float *g)
{
    for (int s = 0; s < l->n; s++)
        for (size_t i = 0; i < l->spans[s].count; i++)
            g[l->spans[s].offset + i] = grad_of(rank, l->spans[s].offset + i, l->amp[s]);
}

typedef struct {
    qt_codec_method method;
    qt_collective coll;
    bool peer; /* mpi/allreduce: one blocking MPI_Allreduce of the whole arena, no engine */
} bench_case;

static int parse_cases(const char *list, bench_case *cases, int max)
{
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *slash = strchr(tok, '/');
        if (!slash || n == max) return qt_fail("--cases: '%s': want METHOD/COLLECTIVE", tok);
        *slash = 0;
        cases[n].peer = !strcmp(tok, "mpi") && !strcmp(slash + 1, "allreduce");
        if (cases[n].peer) {
            cases[n].method = QT_CODEC_NONE;
            cases[n].coll = QT_COLL_ALLREDUCE;
            n++;
            continue;
        }
        if (qt_codec_method_from_name(tok, &cases[n].method) != 0)
            return qt_fail("--cases: unknown method '%s'", tok);
        const char *c = slash + 1;
        if (!strcmp(c, "allreduce")) cases[n].coll = QT_COLL_ALLREDUCE;
        else if (!strcmp(c, "allgather")) cases[n].coll = QT_COLL_ALLGATHER;
        else if (!strcmp(c, "rsag")) cases[n].coll = QT_COLL_RSAG;
        else return qt_fail("--cases: unknown collective '%s'", c);
        n++;
    }
    return n;
}

/* Elements of g outside the bound around the exact average mean[]. */
static size_t count_wrong(const layout *l, const qt_dist_opts *o, int size, const float *g,
                          const float *mean, const float *span_max)
{
    size_t wrong = 0;
    double s = o->codec.levels > 0 ? o->codec.levels : 1;
    bool ef = qt_codec_has_residual(&o->codec);
    bool rsag = o->collective == QT_COLL_RSAG;
    for (int k = 0; k < l->n; k++) {
        const qt_span *sp = &l->spans[k];
        double big = span_max[k], tol = (size + 2) * FLT_EPSILON * big;
        bool coded = o->collective != QT_COLL_ALLREDUCE && sp->ndim > 1 &&
                     sp->count >= (size_t)o->min_size && o->codec.method != QT_CODEC_NONE;
        if (coded && !ef) tol += (rsag ? 2 + 1 / s : 1) * big / s;
        /* EF: out - mean = mean(h_before - h_after) per quantization, |h| <= M/(s-1). */
        if (coded && ef) tol += 2 * big / (s - 1) + (rsag ? 2 * big * s / ((s - 1) * (s - 1)) : 0);
        for (size_t i = sp->offset; i < sp->offset + sp->count; i++)
            if (!(fabs((double)g[i] - (double)mean[i]) <= tol)) wrong++;
    }
    return wrong;
}

/* The peer: blocking in-place MPI_Allreduce (Open MPI's tuned algorithms) and 1/N. */
static void peer_allreduce(qt_world *w, float *g, size_t n, qt_exchange_stats *st)
{
    double t0 = qt_now();
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, w->comm));
    double t1 = qt_now();
    float inv = 1.0f / (float)w->size;
    for (size_t i = 0; i < n; i++) g[i] *= inv;
    memset(st, 0, sizeof *st);
    st->bytes_fp32 = st->bytes_payload = 4 * n;
    st->bytes_sent = (uint64_t)(2.0 * (w->size - 1) / w->size * 4.0 * (double)n);
    st->compression_ratio = 1;
    st->t_decode = qt_now() - t1;
    (void)t0;
}

int main(int argc, char **argv)
{
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    int iters = 5, warmup = 1, bucket_kb = 4096;
    double compute_ms = 0;
    bool check = true;
    const char *list = "mpi/allreduce,none/allreduce,qsgd/allgather,qsgd/rsag,ecq/rsag";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bucket-kb") && i + 1 < argc) bucket_kb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cases") && i + 1 < argc) list = argv[++i];
        else if (!strcmp(argv[i], "--compute-ms") && i + 1 < argc) compute_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-check")) check = false;
        else {
            if (w->rank == 0)
                fprintf(stderr, "usage: exchangebench [--iters I] [--warmup W] [--bucket-kb K] "
                                "[--cases METHOD/COLL,...] [--compute-ms C] [--no-check]\n");
            qt_world_destroy(w);
            return 2;
        }
    }
    bench_case cases[16];
    int n_cases = parse_cases(list, cases, 16);
    if (n_cases <= 0 || iters < 1 || warmup < 0) {
        qt_world_destroy(w);
        return 2;
    }
    long burn_n = compute_ms > 0 ? (long)(burn_rate() * compute_ms) : 0;
    layout l;
    resnet50(&l);
    size_t n = l.total;
    float *src = qt_aligned_alloc(n * sizeof(float));
    float *g = qt_aligned_alloc(n * sizeof(float));
    float *res = qt_aligned_alloc(n * sizeof(float));
    float *mean = check ? qt_aligned_alloc(n * sizeof(float)) : NULL;
    float span_max[MAX_SPANS] = {0};
    fill(&l, w->rank, src);
    if (check) { /* the exact average: every rank's gradient is known everywhere */
        double *acc = qt_calloc(n, sizeof(double));
        for (int r = 0; r < w->size; r++)
            for (int k = 0; k < l.n; k++)
                for (size_t i = l.spans[k].offset; i < l.spans[k].offset + l.spans[k].count; i++) {
                    float v = grad_of(r, i, l.amp[k]);
                    acc[i] += v;
                    span_max[k] = fmaxf(span_max[k], fabsf(v));
                }
        for (size_t i = 0; i < n; i++) mean[i] = (float)(acc[i] / w->size);
        free(acc);
    }
    if (w->rank == 0) {
        printf("# exchangebench: ResNet-50 gradient, %zu floats in %d tensors, %d ranks, "
               "bucket %d KiB, %d iterations after %d warm-up", n, l.n, w->size, bucket_kb,
               iters, warmup);
        if (compute_ms > 0) printf(", %.0f ms of compute beside each exchange", compute_ms);
        printf("\n");
        printf("# %5s %-6s %-10s %9s %9s %8s %8s %8s %10s %7s %8s %8s %7s%s\n", "ranks", "method",
               "collective", "size(MB)", "time(ms)", "min(ms)", "algbw", "busbw", "sent/rank",
               "ratio", "enc(ms)", "dec(ms)", "#wrong",
               compute_ms > 0 ? "  comp(ms) exposed(ms)" : "");
        printf("# %5s %-6s %-10s %9s %9s %8s %8s %8s %10s %7s %8s %8s %7s\n", "", "", "", "", "",
               "", "(GB/s)", "(GB/s)", "(MB)", "", "", "", "");
    }
    size_t total_wrong = 0;
    double sum_busbw = 0;
    for (int c = 0; c < n_cases; c++) {
        qt_dist_opts o;
        qt_dist_opts_default(&o);
        o.bucket_kb = bucket_kb;
        o.collective = cases[c].coll;
        qt_codec_params_default(&o.codec, cases[c].method);
        o.codec.seed = SEED;
        memset(res, 0, n * sizeof(float));
        qt_exchange *ex = NULL;
        if (!cases[c].peer && qt_exchange_create(w, &o, l.spans, l.n, g, res, n, &ex) != 0) {
            qt_world_destroy(w);
            return 1;
        }
        double t_sum = 0, t_min = INFINITY, enc = 0, dec = 0, comp = 0, exposed = 0;
        qt_exchange_stats st = {0};
        for (int it = 0; it < warmup + iters; it++) {
            memcpy(g, src, n * sizeof(float));
            MPI_CHECK(MPI_Barrier(w->comm));
            double t0 = qt_now(), t_comp = 0;
            if (cases[c].peer) {
                volatile float sink = burn(burn_n, (float)it); /* no overlap possible */
                (void)sink;
                t_comp = qt_now() - t0;
                peer_allreduce(w, g, n, &st);
            } else {
                qt_exchange_begin_step(ex, (uint32_t)it);
                qt_exchange_ready(ex, n);
                volatile float sink = burn(burn_n, (float)it);
                (void)sink;
                t_comp = qt_now() - t0;
                if (qt_exchange_finish(ex, &st) != 0) qt_world_abort(w, 1, "exchange failed");
            }
            double t[5] = {qt_now() - t0, st.t_encode, st.t_decode, t_comp, st.t_comm_exposed};
            MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t, 5, MPI_DOUBLE, MPI_MAX, w->comm));
            if (it >= warmup) {
                t_sum += t[0];
                t_min = fmin(t_min, t[0]);
                enc += t[1];
                dec += t[2];
                comp += t[3];
                exposed += t[4];
            }
        }
        double time = t_sum / iters;
        unsigned long long wrong = check ? count_wrong(&l, &o, w->size, g, mean, span_max) : 0;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, w->comm));
        double sent = (double)st.bytes_sent;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &sent, 1, MPI_DOUBLE, MPI_MAX, w->comm));
        total_wrong += wrong;
        double algbw = (double)st.bytes_fp32 / time * 1e-9, busbw = sent / time * 1e-9;
        sum_busbw += busbw;
        if (w->rank == 0) {
            char wrong_s[24];
            snprintf(wrong_s, sizeof wrong_s, check ? "%llu" : "n/a", wrong);
            printf("  %5d %-6s %-10s %9.1f %9.1f %8.1f %8.2f %8.2f %10.2f %7.2f %8.1f %8.1f %7s",
                   w->size, cases[c].peer ? "mpi" : qt_codec_method_name(cases[c].method),
                   qt_collective_name(cases[c].coll), 4e-6 * (double)n, 1e3 * time,
                   1e3 * t_min, algbw, busbw, sent * 1e-6, st.compression_ratio,
                   1e3 * enc / iters, 1e3 * dec / iters, wrong_s);
            if (compute_ms > 0) printf(" %8.1f %8.1f", 1e3 * comp / iters, 1e3 * exposed / iters);
            printf("\n");
            fflush(stdout);
        }
        qt_exchange_destroy(ex);
    }
    if (w->rank == 0) {
        printf("# Out of bounds values : %zu %s\n", total_wrong, total_wrong ? "FAILED" : "OK");
        printf("# Avg bus bandwidth    : %.3f GB/s\n", sum_busbw / n_cases);
    }
    qt_free_aligned(src);
    qt_free_aligned(g);
    qt_free_aligned(res);
    qt_free_aligned(mean);
    qt_world_destroy(w);
    return total_wrong ? 1 : 0;
}
