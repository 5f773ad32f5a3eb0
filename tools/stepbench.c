/* stepbench — times one training step (forward, backward, SGD momentum update) of a
 * model on random data, the same work torch_cpu_baseline.py times for PyTorch.
 *
 *   stepbench --depth 20 --variant cifar --batch 128 --threads 2 [--iters 10] [--size 32]
 *
 * Prints one JSON line with the median ms per step (after 2 warm-up steps).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "core/philox.h"
#include "core/qt.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "nn/optim.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int depth = 20, batch = 128, threads = 2, iters = 10, size = 32, classes = 10;
    qt_variant variant = QT_VARIANT_CIFAR;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--depth")) depth = atoi(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--threads")) threads = atoi(v);
        else if (!strcmp(k, "--iters")) iters = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--classes")) classes = atoi(v);
        else if (!strcmp(k, "--variant")) variant = strcmp(v, "imagenet") == 0 ? QT_VARIANT_IMAGENET : QT_VARIANT_CIFAR;
        else {
            fprintf(stderr, "error: stepbench: unknown option %s\n", k);
            return 2;
        }
    }
    if (iters < 1 || batch < 1 || threads < 1) {
        fprintf(stderr, "error: stepbench: iters, batch and threads must be positive\n");
        return 2;
    }
    qt_nn_set_threads(threads);
    qt_model_opts mo;
    qt_model_opts_default(&mo);
    mo.depth = depth;
    mo.variant = variant;
    mo.classes = classes;
    mo.in_height = mo.in_width = size;
    qt_model *m;
    if (qt_model_create(&mo, &m) < 0) return 1;
    qt_model_alloc(m, batch);
    qt_model_init(m, 1);
    size_t np = qt_model_param_count(m), nx = (size_t)batch * 3 * size * size;
    float *x = qt_aligned_alloc(nx * sizeof(float));
    int32_t *y = qt_calloc((size_t)batch, sizeof(int32_t));
    qt_philox_key key = qt_philox_make_key(1, QT_RNG_TEST);
    for (size_t i = 0; i < nx; i++) x[i] = 2.0f * qt_u32_to_unit(qt_philox_u32(key, i, 0, 0)) - 1.0f;
    for (int i = 0; i < batch; i++) y[i] = (int32_t)(qt_philox_u32(key, (uint64_t)i, 1, 0) % (uint32_t)classes);
    qt_optim_opts oo;
    qt_optim_opts_default(&oo);
    oo.lr = 0.1f;
    oo.momentum = 0.9f;
    oo.weight_decay = 1e-4f;
    qt_param_group g = {0, np, true};
    float *state = qt_aligned_alloc(qt_optim_state_floats(&oo, np) * sizeof(float) + 64);
    double *ts = qt_calloc((size_t)iters, sizeof(double));
    for (int it = -2; it < iters; it++) {
        double t0 = qt_now();
        qt_model_forward(m, x, y, batch, true, NULL, NULL);
        qt_model_backward(m, NULL, NULL);
        qt_optim_step(&oo, oo.lr, it + 3, &g, 1, qt_model_params(m), qt_model_grads(m), state, np);
        if (it >= 0) ts[it] = qt_now() - t0;
    }
    qsort(ts, (size_t)iters, sizeof(double), cmp_double);
    printf("{\"model\": \"resnet%d-%s\", \"batch\": %d, \"threads\": %d, \"ms_per_step\": %.2f, \"min_ms\": %.2f}\n",
           depth, variant == QT_VARIANT_CIFAR ? "cifar" : "imagenet", batch, threads, 1e3 * ts[iters / 2],
           1e3 * ts[0]);
    free(ts);
    qt_free_aligned(state);
    qt_free_aligned(x);
    free(y);
    qt_model_destroy(m);
    return 0;
}
