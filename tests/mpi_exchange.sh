#!/usr/bin/env bash
# The MPI CMocka suites of src/dist (world, exchange, feedback, overlap), each on 1, 2 and
# 4 ranks through scripts/mpirun.sh, each run bounded by `timeout 60` so a hang fails
# instead of blocking CI. Exit 0 pass, 77 skip (no mpirun), 1 fail.
# Usage: QT_BUILD=build tests/mpi_exchange.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
command -v mpirun >/dev/null || { echo "skipped: mpirun not found"; exit 77; }
fail=0
for bin in test_mpi_world test_mpi_exchange test_mpi_feedback test_mpi_overlap; do
    if [ ! -x "$BUILD/tests/$bin" ]; then
        echo "error: $BUILD/tests/$bin is not built"; fail=1; continue
    fi
    for np in 1 2 4; do
        echo "== $bin -np $np"
        start=$(date +%s%N)
        timeout 60 scripts/mpirun.sh -np "$np" "$BUILD/tests/$bin"
        rc=$?
        ms=$((($(date +%s%N) - start) / 1000000))
        if [ $rc -ne 0 ]; then
            [ $rc -eq 124 ] && why=", timed out after 60 s" || why=""
            echo "FAILED: $bin -np $np (exit $rc$why)"; fail=1
        else
            echo "ok: $bin -np $np ($ms ms)"
        fi
    done
done
exit $fail
