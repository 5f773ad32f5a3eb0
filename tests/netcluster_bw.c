/* netcluster_bw.c — MPI point-to-point throughput between rank 0 and rank 1, for
 * tests/netcluster.sh (compiled there with mpicc; not part of the Makefile's build).
 *
 *   netcluster_bw MBYTES [REPS]
 *
 * Rank 0 sends MBYTES MiB to rank 1 in 1 MiB messages, REPS times (default 1), and rank 1
 * answers each repetition with one byte; rank 0 prints
 *   bw: bytes=B seconds=T mbit_s=R
 * for the best repetition (R = 8 B / T / 1e6). Other ranks only take part in the barrier.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2 || size < 2) {
        if (rank == 0) fprintf(stderr, "usage: netcluster_bw MBYTES [REPS] (2+ ranks)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const int chunk = argc > 3 ? atoi(argv[3]) << 10 : 1 << 20; /* KiB per message */
    int mbytes = atoi(argv[1]), reps = argc > 2 ? atoi(argv[2]) : 1;
    char *buf = malloc(chunk);
    memset(buf, 7, chunk);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        char ack = 0;
        if (rank == 0) {
            for (int i = 0; i < mbytes * (1 << 20) / chunk; i++) MPI_Send(buf, chunk, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(&ack, 1, MPI_CHAR, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (rank == 1) {
            for (int i = 0; i < mbytes * (1 << 20) / chunk; i++) MPI_Recv(buf, chunk, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(&ack, 1, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
        }
        double dt = MPI_Wtime() - t0;
        if (dt < best) best = dt;
    }
    if (rank == 0) {
        double bytes = (double)mbytes * (1 << 20);
        printf("bw: bytes=%.0f seconds=%.6f mbit_s=%.3f\n", bytes, best, 8.0 * bytes / best / 1e6);
    }
    free(buf);
    MPI_Finalize();
    return 0;
}
