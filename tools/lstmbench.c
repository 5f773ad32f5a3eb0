/* lstmbench — times one training step of a stacked LSTM speech model on random data: the
 * work torch_cpu_baseline.py's "lstm2x256-T100" times for PyTorch (nn.LSTM(40, 256, 2),
 * Linear(256, 40), cross-entropy over all T*N frames, SGD momentum 0.9, weight decay 1e-4).
 *
 *   lstmbench [--threads 2] [--iters 10] [--batch 32] [--frames 100] [--features 40]
 *             [--hidden 256] [--layers 2] [--proj 0] [--peephole 0] [--classes 40]
 *
 * A step: forward of every LSTM layer, linear, softmax cross-entropy (inline), backward
 * in reverse, SGD momentum update of the one parameter arena. Prints one JSON line with
 * the median ms per step after 2 warm-up steps (PyTorch's script takes the median too),
 * the minimum, and the median forward and backward times.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/qt.h"
#include "nn/layers.h"
#include "nn/lstm.h"

typedef struct {
    int threads, iters, batch, frames, features, hidden, layers, proj, peephole, classes;
} bench_opts;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill_uniform(float *a, size_t n, float bound, uint32_t step)
{
    qt_philox_key key = qt_philox_make_key(42, QT_RNG_TEST);
    for (size_t i = 0; i < n; i++) a[i] = bound * (2.0f * qt_u32_to_unit(qt_philox_u32(key, i, step, 0)) - 1.0f);
}

/* Mean softmax cross-entropy over rows of k logits; writes dlogits = (softmax - onehot) / rows. */
static double xent(const float *z, const int32_t *labels, float *dz, int rows, int k)
{
    double loss = 0.0;
#pragma omp parallel for reduction(+ : loss) schedule(static)
    for (int i = 0; i < rows; i++) {
        const float *zr = z + (size_t)i * k;
        float *dr = dz + (size_t)i * k;
        float m = zr[0];
        for (int c = 1; c < k; c++) m = zr[c] > m ? zr[c] : m;
        double s = 0.0;
        for (int c = 0; c < k; c++) s += exp((double)(zr[c] - m));
        loss += log(s) + m - zr[labels[i]];
        for (int c = 0; c < k; c++) dr[c] = (float)(exp((double)(zr[c] - m)) / s / rows);
        dr[labels[i]] -= 1.0f / (float)rows;
    }
    return loss / rows;
}

static int parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){2, 10, 32, 100, 40, 256, 2, 0, 0, 40};
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i];
        int *dst = !strcmp(k, "--threads")    ? &o->threads
                   : !strcmp(k, "--iters")    ? &o->iters
                   : !strcmp(k, "--batch")    ? &o->batch
                   : !strcmp(k, "--frames")   ? &o->frames
                   : !strcmp(k, "--features") ? &o->features
                   : !strcmp(k, "--hidden")   ? &o->hidden
                   : !strcmp(k, "--layers")   ? &o->layers
                   : !strcmp(k, "--proj")     ? &o->proj
                   : !strcmp(k, "--peephole") ? &o->peephole
                   : !strcmp(k, "--classes")  ? &o->classes
                                              : NULL;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "error: lstmbench: unknown option or missing value: %s\n", k);
            return -1;
        }
        *dst = atoi(argv[i + 1]);
    }
    if (o->threads < 1 || o->iters < 1 || o->batch < 1 || o->frames < 1 || o->features < 1 ||
        o->hidden < 1 || o->layers < 1 || o->layers > 16 || o->proj < 0 || o->classes < 2) {
        fprintf(stderr, "error: lstmbench: sizes must be positive (layers <= 16, proj >= 0)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse(argc, argv, &o) < 0) return 2;
    qt_nn_set_threads(o.threads);
    const int T = o.frames, N = o.batch, L = o.layers, C = o.classes, TN = T * N;

    /* One arena for all parameters (grads and momentum alike), LSTM layers then linear. */
    qt_lstm lstm[16];
    size_t off[17], total = 0, max_ws = 0, max_act = 0;
    for (int i = 0; i < L; i++) {
        lstm[i] = (qt_lstm){.in = i ? qt_lstm_out(&lstm[i - 1]) : o.features, .hidden = o.hidden,
                            .proj = o.proj, .peephole = o.peephole != 0};
        off[i] = total;
        total += qt_lstm_param_count(lstm[i].in, o.hidden, o.proj, o.peephole != 0);
        const size_t ws = qt_lstm_workspace_floats(&lstm[i], T, N);
        max_ws = ws > max_ws ? ws : max_ws;
    }
    const int R = qt_lstm_out(&lstm[L - 1]);
    off[L] = total;
    total += (size_t)C * R + C;
    float *params = qt_aligned_alloc(sizeof(float) * total), *grads = qt_aligned_alloc(sizeof(float) * total),
          *mom = qt_aligned_alloc(sizeof(float) * total);
    for (int i = 0; i < L; i++) {
        qt_lstm_bind(&lstm[i], params + off[i], grads + off[i]);
        fill_uniform(params + off[i], off[i + 1] - off[i], 1.0f / sqrtf((float)o.hidden), (uint32_t)i + 1);
    }
    qt_linear fc = {R, C, params + off[L], grads + off[L], params + off[L] + (size_t)C * R,
                    grads + off[L] + (size_t)C * R};
    fill_uniform(fc.w, (size_t)C * R + C, 1.0f / sqrtf((float)R), 100);

    /* Activations: x, each layer's output (kept for backward), two gradient buffers. */
    max_act = (size_t)TN * (size_t)(o.features > R ? o.features : R);
    if ((size_t)TN * o.hidden > max_act) max_act = (size_t)TN * o.hidden;
    float *x = qt_aligned_alloc(sizeof(float) * (size_t)TN * o.features);
    float *ys[16], *ws[16];
    for (int i = 0; i < L; i++) {
        ys[i] = qt_aligned_alloc(sizeof(float) * (size_t)TN * qt_lstm_out(&lstm[i]));
        ws[i] = qt_aligned_alloc(sizeof(float) * max_ws);
    }
    float *ga = qt_aligned_alloc(sizeof(float) * max_act), *gb = qt_aligned_alloc(sizeof(float) * max_act);
    float *logits = qt_aligned_alloc(sizeof(float) * (size_t)TN * C), *dlogits = qt_aligned_alloc(sizeof(float) * (size_t)TN * C);
    int32_t *labels = qt_malloc(sizeof(int32_t) * (size_t)TN), *len = qt_malloc(sizeof(int32_t) * (size_t)N);
    fill_uniform(x, (size_t)TN * o.features, 1.0f, 200);
    qt_philox_key key = qt_philox_make_key(7, QT_RNG_TEST);
    for (int i = 0; i < TN; i++) labels[i] = (int32_t)(qt_philox_u32(key, (uint64_t)i, 0, 0) % (uint32_t)C);
    for (int n = 0; n < N; n++) len[n] = T;

    const int warm = 2, steps = warm + o.iters;
    double *t_step = qt_malloc(sizeof(double) * steps), *t_fwd = qt_malloc(sizeof(double) * steps),
           *t_bwd = qt_malloc(sizeof(double) * steps);
    double loss = 0.0;
    for (int it = 0; it < steps; it++) {
        const double t0 = qt_now();
        for (int i = 0; i < L; i++) {
            qt_lstm_data d = {.t = T, .n = N, .lengths = len, .x = i ? ys[i - 1] : x, .y = ys[i], .ws = ws[i]};
            qt_lstm_forward(&lstm[i], &d);
        }
        qt_linear_forward(&fc, ys[L - 1], logits, TN);
        loss = xent(logits, labels, dlogits, TN, C);
        const double t1 = qt_now();
        qt_linear_backward(&fc, ys[L - 1], dlogits, ga, TN);
        for (int i = L - 1; i >= 0; i--) {
            qt_lstm_data d = {.t = T, .n = N, .lengths = len, .x = i ? ys[i - 1] : x, .y = ys[i],
                              .dy = ga, .dx = i ? gb : NULL, .ws = ws[i]};
            qt_lstm_backward(&lstm[i], &d);
            float *tmp = ga;
            ga = gb;
            gb = tmp;
        }
        const double t2 = qt_now();
        const float lr = 0.1f, momentum = 0.9f, decay = 1e-4f;
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < total; k++) {
            const float g = grads[k] + decay * params[k];
            mom[k] = it ? momentum * mom[k] + g : g;
            params[k] -= lr * mom[k];
        }
        const double t3 = qt_now();
        t_step[it] = t3 - t0;
        t_fwd[it] = t1 - t0;
        t_bwd[it] = t2 - t1;
    }
    double tmin = t_step[warm];
    for (int i = warm; i < steps; i++) tmin = t_step[i] < tmin ? t_step[i] : tmin;
    char name[96];
    int k = snprintf(name, sizeof name, "lstm%dx%d", L, o.hidden);
    if (o.proj) k += snprintf(name + k, sizeof name - (size_t)k, "p%d", o.proj);
    if (o.peephole) k += snprintf(name + k, sizeof name - (size_t)k, "peep");
    snprintf(name + k, sizeof name - (size_t)k, "-T%d", T);
    printf("{\"model\": \"%s\", \"batch\": %d, \"threads\": %d, \"ms_per_step\": %.2f, \"min_ms\": %.2f, "
           "\"fwd_ms\": %.2f, \"bwd_ms\": %.2f, \"params\": %zu, \"loss\": %.4f}\n",
           name, N, o.threads, 1e3 * median(t_step + warm, o.iters), 1e3 * tmin,
           1e3 * median(t_fwd + warm, o.iters), 1e3 * median(t_bwd + warm, o.iters), total, loss);
    for (int i = 0; i < L; i++) {
        qt_free_aligned(ys[i]);
        qt_free_aligned(ws[i]);
    }
    qt_free_aligned(params); qt_free_aligned(grads); qt_free_aligned(mom); qt_free_aligned(x);
    qt_free_aligned(ga); qt_free_aligned(gb); qt_free_aligned(logits); qt_free_aligned(dlogits);
    free(labels); free(len); free(t_step); free(t_fwd); free(t_bwd);
    return 0;
}
