/* world.h — the MPI job as qtrain sees it: rank, size, one communicator, the abort path
 * and the start-up consistency checks (issue 4, "Faults").
 *
 * Threading (decided here, see world.c for the measurements and reasons): MPI is
 * initialised with MPI_THREAD_MULTIPLE. During a step every data-path MPI call is made
 * by the exchange engine's communication thread (exchange.c); outside a step the
 * trainer's main thread makes its own calls (broadcast, checks, metric reductions). The
 * only call that may come from either thread at any moment is MPI_Abort (the abort path),
 * which is why SERIALIZED is not enough.
 *
 * Errors: the world's communicators use MPI_ERRORS_RETURN, so a failing call returns to
 * MPI_CHECK, which names the rank, file:line, the call's text and MPI's error string, then
 * takes the abort path: MPI_Abort tears down every rank of the job within seconds.
 */
#ifndef QT_DIST_WORLD_H
#define QT_DIST_WORLD_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct qt_world {
    int rank, size;
    MPI_Comm comm;    /* a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN */
    int thread_level; /* what MPI_Init_thread provided */
    bool owns_mpi;    /* we called MPI_Init_thread, so destroy calls MPI_Finalize */
} qt_world;

/* Initialises MPI (unless the caller already did) with MPI_THREAD_MULTIPLE, sets
 * MPI_ERRORS_RETURN, sets the log rank. Fails (one line) if MPI cannot give at least
 * MPI_THREAD_SERIALIZED. *out is owned by the caller: qt_world_destroy. */
int qt_world_create(int *argc, char ***argv, qt_world **out);
/* Frees the communicator and, if create initialised MPI, finalises it. NULL is a no-op. */
void qt_world_destroy(qt_world *w);

/* The abort path: prints "[rank R] error: aborting the job: <reason>" and calls
 * MPI_Abort(code), which makes every rank exit within seconds. Callable from any thread,
 * also when MPI is not (or no longer) initialised (then it exits the process). */
_Noreturn void qt_world_abort(const qt_world *w, int code, const char *reason);

/* What MPI_CHECK calls on failure: prints rank, file:line, the call and MPI's error
 * string, then takes the abort path. */
_Noreturn void qt_mpi_check_failed(int rc, const char *call, const char *file, int line);

/* Evaluates `call` once; anything but MPI_SUCCESS goes to the abort path. */
#define MPI_CHECK(call)                                                           \
    do {                                                                          \
        int qt_mpi_rc_ = (call);                                                  \
        if (qt_mpi_rc_ != MPI_SUCCESS)                                            \
            qt_mpi_check_failed(qt_mpi_rc_, #call, __FILE__, __LINE__);           \
    } while (0)

/* Collective. Compares a hash of bytes[0..len) (length included) with rank 0's. Returns
 * 0 when every rank holds the same bytes; otherwise EVERY rank prints
 * "error: rank R's <what> differs from rank 0's" (R = the lowest differing rank) and
 * returns -1, so all ranks can leave cleanly with the same decision. */
int qt_world_check_same(qt_world *w, const void *bytes, size_t len, const char *what);

/* Collective. Copies rank 0's buf[0..n) to every rank (initial parameters). Any n. */
int qt_world_bcast_floats(qt_world *w, float *buf, size_t n);

/* Collective. In-place sum over ranks of v[0..n) (metrics: loss, correct counts, ...). */
int qt_world_allreduce_sum(qt_world *w, double *v, int n);

/* A 64-bit hash of bytes (not cryptographic): what check_same compares. */
unsigned long long qt_world_hash(const void *bytes, size_t len);

#endif
