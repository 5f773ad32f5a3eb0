#!/usr/bin/env bash
# Time per exchange of a ResNet-50-sized gradient (25.6M floats, tools/exchangebench.c) on
# 2 and 4 ranks through scripts/mpirun.sh: the peer (one blocking MPI_Allreduce), then the
# engine with none/allreduce, qsgd/allgather, qsgd/rsag and ecq/rsag; nccl-tests-style
# table with bytes moved and #wrong (elements outside the codec's error bound around the
# exact average). Runs in about 2 minutes on a 2-core machine. Exit 1 if any #wrong.
# Usage: scripts/bench_exchange.sh [extra exchangebench args, e.g. --iters 10]
#        (QT_BUILD=build dir, default build; QT_BENCH_RANKS="2 4")
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
RANKS=${QT_BENCH_RANKS:-2 4}
[ -x "$BUILD/tools/exchangebench" ] || make --no-print-directory "$BUILD/tools/exchangebench" >/dev/null
echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(mpirun --version | head -1)"
rc=0
for np in $RANKS; do
    timeout 600 scripts/mpirun.sh -np "$np" "$BUILD/tools/exchangebench" --iters 3 "$@" || rc=1
done
exit $rc
