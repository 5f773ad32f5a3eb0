/* world.c — MPI start-up, the abort path and cross-rank consistency checks (world.h).
 *
 * Why MPI_THREAD_MULTIPLE rather than "one thread owns every MPI call": Open MPI 4.1's
 * ob1/vader has no asynchronous progress ("OMPI progress: no" in ompi_info), so a
 * nonblocking collective only advances inside MPI calls; the exchange therefore runs a
 * communication thread that polls MPI_Test while backward computes. Data-path calls are
 * all made by that thread during a step, and the main thread calls MPI only between steps
 * (hand-over through the engine's mutex), which by itself needs only
 * MPI_THREAD_SERIALIZED. But the abort path must work from whichever thread detects the
 * fault, at any time, including while the other thread sits in MPI_Test; that is only
 * legal under MPI_THREAD_MULTIPLE. With one thread in MPI at a time its locks are
 * uncontended, and Open MPI 4.1's ob1 + vader (shared memory) and tcp BTLs support it.
 * If the library offers only SERIALIZED we still run (with a warning).
 */
#include "dist/world.h"

#include "core/qt.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qt_world_create(int *argc, char ***argv, qt_world **out)
{
    *out = NULL;
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    bool owns = false;
    if (!inited) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            return qt_fail("MPI_Init_thread failed");
        owns = true;
    } else {
        MPI_Query_thread(&provided);
    }
    /* From here on no MPI call aborts by itself: MPI_CHECK reports and aborts. */
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    qt_world *w = qt_calloc(1, sizeof *w);
    w->owns_mpi = owns;
    w->thread_level = provided;
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &w->comm));
    MPI_CHECK(MPI_Comm_set_errhandler(w->comm, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(w->comm, &w->rank));
    MPI_CHECK(MPI_Comm_size(w->comm, &w->size));
    qt_log_set_rank(w->size > 1 ? w->rank : -1);
    if (provided < MPI_THREAD_SERIALIZED) {
        qt_fail("MPI provides thread level %d, qtrain needs MPI_THREAD_SERIALIZED or more "
                "(an Open MPI built with --enable-mpi-thread-multiple)", provided);
        qt_world_destroy(w);
        return -1;
    }
    if (provided < MPI_THREAD_MULTIPLE && w->rank == 0)
        qt_warn("MPI provides MPI_THREAD_SERIALIZED only: an abort raised on the compute "
                "thread while the communication thread is inside MPI is not guaranteed");
    *out = w;
    return 0;
}

void qt_world_destroy(qt_world *w)
{
    if (!w) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (w->comm != MPI_COMM_NULL) MPI_Comm_free(&w->comm);
        if (w->owns_mpi) MPI_Finalize();
    }
    free(w);
}

static _Noreturn void abort_job(int rank, int code, const char *reason)
{
    if (rank >= 0)
        fprintf(stderr, "[rank %d] error: aborting the job: %s\n", rank, reason);
    else
        fprintf(stderr, "error: aborting the job: %s\n", reason);
    fflush(stderr);
    fflush(stdout);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    /* MPI_Abort does not return; without MPI there is nothing else to tear down. */
    _Exit(code ? code : 1);
}

void qt_world_abort(const qt_world *w, int code, const char *reason)
{
    abort_job(w ? w->rank : qt_log_rank(), code, reason);
}

void qt_mpi_check_failed(int rc, const char *call, const char *file, int line)
{
    char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error code %d", rc);
    int rank = -1, inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char reason[1024 + MPI_MAX_ERROR_STRING];
    snprintf(reason, sizeof reason, "%s:%d: %s failed: %s", file, line, call, msg);
    abort_job(rank, 1, reason);
}

/* 8 bytes per round, two multiply-rotate lanes so the dependency chain is not the limit;
 * the length is mixed in so a prefix never matches the whole. */
unsigned long long qt_world_hash(const void *bytes, size_t len)
{
    const uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t a = 0x243F6A8885A308D3ull ^ (uint64_t)len, b = 0x13198A2E03707344ull;
    const unsigned char *p = bytes;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        uint64_t x, y;
        memcpy(&x, p + i, 8);
        memcpy(&y, p + i + 8, 8);
        a = (a ^ (x * k2)) * k1;
        a = (a << 29) | (a >> 35);
        b = (b ^ (y * k1)) * k2;
        b = (b << 31) | (b >> 33);
    }
    uint64_t tail = 0;
    if (i < len) memcpy(&tail, p + i, len - i < 8 ? len - i : 8);
    a ^= tail * k2;
    if (i + 8 < len) {
        uint64_t t2 = 0;
        memcpy(&t2, p + i + 8, len - i - 8);
        b ^= t2 * k1;
    }
    uint64_t h = a ^ (b * k1);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return (unsigned long long)h;
}

int qt_world_check_same(qt_world *w, const void *bytes, size_t len, const char *what)
{
    uint64_t mine = qt_world_hash(bytes, len);
    uint64_t *all = qt_malloc(sizeof(uint64_t) * (size_t)w->size);
    MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, w->comm));
    int first = -1, n_diff = 0;
    for (int r = 1; r < w->size; r++) {
        if (all[r] != all[0]) {
            if (first < 0) first = r;
            n_diff++;
        }
    }
    free(all);
    if (first < 0) return 0;
    if (n_diff > 1)
        return qt_fail("rank %d's %s differs from rank 0's (and %d more rank%s)", first, what,
                       n_diff - 1, n_diff > 2 ? "s" : "");
    return qt_fail("rank %d's %s differs from rank 0's", first, what);
}

int qt_world_bcast_floats(qt_world *w, float *buf, size_t n)
{
    const size_t max_chunk = (size_t)1 << 28; /* elements; keeps the int count positive */
    for (size_t off = 0; off < n; off += max_chunk) {
        int cnt = (int)QT_MIN(max_chunk, n - off);
        MPI_CHECK(MPI_Bcast(buf + off, cnt, MPI_FLOAT, 0, w->comm));
    }
    return 0;
}

int qt_world_allreduce_sum(qt_world *w, double *v, int n)
{
    if (n <= 0) return 0;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, w->comm));
    return 0;
}
