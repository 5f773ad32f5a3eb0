/* test_mpi_faults.c — processes that fail, for tests/mpi_faults.sh, which checks that
 * every rank exits (non-zero, within seconds, no hang) and what they print.
 * Not a CMocka suite: each fault ends the job, so one run is one case.
 *
 * Usage: test_mpi_faults MODE, MODE one of
 *   mismatch     the last rank's config differs: qt_world_check_same fails on every
 *                rank, each prints the error and exits 3 after MPI_Finalize (clean exit);
 *   exit         the last rank calls exit(7) in the middle of a step (others wait in
 *                finish());
 *   abort        the last rank calls abort() mid-step (SIGABRT);
 *   kill         the last rank sends itself SIGKILL mid-step;
 *   world_abort  the last rank takes the abort path: qt_world_abort(w, 5, reason);
 *   mpi_error    the last rank makes an MPI call that fails (bad destination rank):
 *                MPI_CHECK names the call, file:line and MPI's error string, aborts;
 *   hang         the last rank stops mid-step without dying (sleeps 60 s): the others'
 *                finish() passes dist.timeout_s (2 s here) and takes the abort path.
 *   ok           no fault: 6 steps, exit 0 (the script's control case).
 */
#include "core/qt.h"
#include "dist/exchange.h"
#include "dist/world.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { N_SPANS = 4, SPAN = 40000 };

static void fault(qt_world *w, const char *mode)
{
    if (!strcmp(mode, "exit")) exit(7);
    if (!strcmp(mode, "abort")) abort();
    if (!strcmp(mode, "kill")) raise(SIGKILL);
    if (!strcmp(mode, "world_abort")) qt_world_abort(w, 5, "simulated fault on the last rank");
    if (!strcmp(mode, "hang")) sleep(60);
    if (!strcmp(mode, "mpi_error")) {
        int x = 0;
        MPI_CHECK(MPI_Send(&x, 1, MPI_INT, w->size + 7, 0, w->comm));
    }
}

static int run_steps(qt_world *w, const char *mode)
{
    qt_span spans[N_SPANS];
    for (int k = 0; k < N_SPANS; k++) spans[k] = (qt_span){(size_t)k * SPAN, SPAN, 2, 0};
    size_t n = (size_t)N_SPANS * SPAN;
    float *g = qt_aligned_alloc(n * sizeof(float));
    qt_dist_opts o;
    qt_dist_opts_default(&o);
    o.bucket_kb = SPAN * 4 / 1024;
    o.timeout_s = 2;
    qt_exchange *ex = NULL;
    if (qt_exchange_create(w, &o, spans, N_SPANS, g, NULL, n, &ex) != 0) return 1;
    for (uint32_t step = 0; step < 6; step++) {
        for (size_t i = 0; i < n; i++) g[i] = (float)w->rank;
        qt_exchange_begin_step(ex, step);
        for (int k = 0; k < N_SPANS; k++) {
            qt_exchange_ready(ex, (size_t)(k + 1) * SPAN);
            if (step == 3 && k == 1 && w->rank == w->size - 1) fault(w, mode);
        }
        if (qt_exchange_finish(ex, NULL) != 0) return 1;
        float want = (float)(w->size - 1) / 2.0f;
        if (g[0] != want || g[n - 1] != want) {
            qt_fail("step %u: got %g, want %g", step, (double)g[0], (double)want);
            return 1;
        }
    }
    qt_exchange_destroy(ex);
    qt_free_aligned(g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s mismatch|exit|abort|kill|world_abort|mpi_error|hang|ok\n", argv[0]);
        return 2;
    }
    qt_world *w = NULL;
    if (qt_world_create(&argc, &argv, &w) != 0) return 1;
    int rc = 0;
    if (!strcmp(argv[1], "mismatch")) {
        char cfg[64];
        snprintf(cfg, sizeof cfg, "[data] batch = %d", w->rank == w->size - 1 ? 33 : 32);
        if (qt_world_check_same(w, cfg, strlen(cfg), "config") != 0) rc = 3;
    } else {
        rc = run_steps(w, argv[1]);
    }
    qt_world_destroy(w);
    return rc;
}
