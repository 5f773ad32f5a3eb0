#!/usr/bin/env bash
# Runs every test: the CMocka binaries in BUILD/tests (except test_mpi_*, which the MPI
# scripts launch under mpirun) and the integration scripts tests/*.sh (exit 0 = pass,
# 77 = skipped, anything else = fail). Ends with "N passed, N failed, N skipped" where N
# counts CMocka test cases plus scripts. Usage: scripts/run_tests.sh [BUILD]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export QT_BUILD=$BUILD
if [ "${QT_SANITIZE:-0}" = 1 ]; then
    # Open MPI and OpenBLAS keep process-lifetime allocations: leaks are not ours to fix.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
passed=0 failed=0 skipped=0
failures=()
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    case "$name" in test_mpi_*|*.o|*.d) continue ;; esac
    echo "== $name"
    "$t" >"$log/out" 2>&1
    rc=$?
    cat "$log/out"
    p=$(grep -Eo '^\[  PASSED  \] [0-9]+' "$log/out" | awk '{s+=$4} END {print s+0}')
    f=$(grep -Eo '^\[  FAILED  \] [0-9]+' "$log/out" | awk '{s+=$4} END {print s+0}')
    s=$(grep -Eo '^\[  SKIPPED \] [0-9]+' "$log/out" | awk '{s+=$4} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    if [ $rc -ne 0 ]; then failures+=("$name"); fi
done
for t in tests/*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    bash "$t"
    rc=$?
    if [ $rc -eq 0 ]; then passed=$((passed + 1)); echo "ok: $name"
    elif [ $rc -eq 77 ]; then skipped=$((skipped + 1)); echo "skipped: $name"
    else failed=$((failed + 1)); failures+=("$name"); echo "FAILED: $name (exit $rc)"; fi
done
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
