#!/usr/bin/env bash
# Faults under mpirun (tests/test_mpi_faults.c): a config mismatch, and a rank that exits,
# aborts, is killed, takes the abort path, hits an MPI error or stops responding mid-step.
# Every case must end the whole job with a non-zero status within LIMIT seconds (timeout
# 60 is the hard stop: reaching it means a hang) and print the expected line.
# Exit 0 pass, 77 skip, 1 fail.
# Usage: QT_BUILD=build tests/mpi_faults.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
BIN=$BUILD/tests/test_mpi_faults
LIMIT=${QT_FAULT_LIMIT_S:-20}
command -v mpirun >/dev/null || { echo "skipped: mpirun not found"; exit 77; }
[ -x "$BIN" ] || { echo "error: $BIN is not built"; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail=0

# case NP MODE WANT_RC(any|0|N) GREP_PATTERN [MIN_COUNT]
run_case() {
    local np=$1 mode=$2 want=$3 pattern=$4 min_count=${5:-1}
    local start ms rc count
    start=$(date +%s%N)
    timeout 60 scripts/mpirun.sh -np "$np" "$BIN" "$mode" >"$out" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - start) / 1000000))
    count=$(grep -c -E -- "$pattern" "$out")
    local verdict=ok why=""
    if [ $rc -eq 124 ]; then verdict=FAILED; why="hung (killed by timeout 60)"
    elif [ "$want" = 0 ] && [ $rc -ne 0 ]; then verdict=FAILED; why="exit $rc, want 0"
    elif [ "$want" != 0 ] && [ $rc -eq 0 ]; then verdict=FAILED; why="exit 0, want non-zero"
    elif [ "$want" != any ] && [ "$want" != 0 ] && [ $rc -ne "$want" ]; then verdict=FAILED; why="exit $rc, want $want"
    elif [ "$ms" -gt $((LIMIT * 1000)) ]; then verdict=FAILED; why="took ${ms} ms > ${LIMIT} s"
    elif [ "$count" -lt "$min_count" ]; then verdict=FAILED; why="$count lines match '$pattern', want >= $min_count"
    fi
    printf '%s: -np %d %-12s exit %3d in %6d ms %s\n' "$verdict" "$np" "$mode" "$rc" "$ms" "$why"
    if [ $verdict != ok ]; then fail=1; sed 's/^/    | /' "$out" | head -40; fi
}

for np in 2 4; do
    run_case "$np" ok 0 '.' 0
    run_case "$np" mismatch 3 "error: rank $((np - 1))'s config differs from rank 0's" "$np"
    run_case "$np" exit any '.' 0
    run_case "$np" abort any '.' 0
    run_case "$np" kill any '.' 0
    run_case "$np" world_abort 5 "\[rank $((np - 1))\] error: aborting the job: simulated fault on the last rank"
    run_case "$np" mpi_error any "\[rank $((np - 1))\] error: aborting the job: tests/test_mpi_faults.c:[0-9]+: MPI_Send\(.*\) failed: .*rank"
    run_case "$np" hang any "error: aborting the job: the gradient exchange of step 3 is not complete after 2 s"
done
exit $fail
