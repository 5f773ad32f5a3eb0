#!/usr/bin/env bash
# Loader throughput table (issue 5): JPEG and PNG ~256x256 sources to 224x224 training
# tensors with 1 and 2 workers, and HTK frames/s. Builds tools/bench_loader in BUILD
# (default build) and runs it on generated files under BUILD/bench_loader.
# Usage: scripts/bench_loader.sh [BUILD] [bench_loader options]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true
make --no-print-directory BUILD="$BUILD" MODULES="core data" "$BUILD/tools/bench_loader" >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$BUILD/tools/bench_loader" --dir "$BUILD/bench_loader" "$@"
