#!/usr/bin/env bash
# `make quickstart`: generates the CIFAR-like data set (once), then trains
# configs/quickstart.ini on 2 MPI ranks with 4-bit QSGD. Extra arguments go to ./train,
# e.g. scripts/quickstart.sh --set quant.method=none
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
if [ ! -f data/quickstart/test_batch.bin ]; then
    "$BUILD/tools/gen_cifar_like" data/quickstart --train 10000 --test 2000 --seed 1 --classes 10
fi
mkdir -p runs
rm -rf runs/quickstart runs/quickstart.jsonl
exec scripts/mpirun.sh -np 2 ./train --config configs/quickstart.ini "$@"
