#!/usr/bin/env bash
# The speech quickstart: generates the HTK/MLF set (once), then trains
# configs/quickstart_speech.ini (a 2-layer LSTM) on 2 MPI ranks with 4-bit QSGD.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
if [ ! -f data/quickstart_speech/labels.mlf ]; then
    "$BUILD/tools/gen_speech_like" data/quickstart_speech --train 400 --test 100 --seed 1
fi
mkdir -p runs
rm -rf runs/quickstart_speech runs/quickstart_speech.jsonl
exec scripts/mpirun.sh -np 2 ./train --config configs/quickstart_speech.ini "$@"
