#!/usr/bin/env bash
# reproduce_qsgd.sh — QSGD's Table 1 beside qtrain: reports/qsgd_table1.md (+ qsgd_scaling.png)
# and the scaling model's check against netcluster runs: reports/scaling_validation.md.
#
#   scripts/reproduce_qsgd.sh [--work DIR] [--reports DIR] [--no-measure] [--no-validate]
#
# What runs (about 12-15 minutes on a 2-core machine; raw files in WORK, default
# runs/reproduce/qsgd):
#  1. ./quantbench (1M elements): codec bits/element and encode/decode speed on this CPU;
#  2. ./train --dry-run of every Table 1 network qtrain has (params, forward FLOPs);
#  3. ./train --profile, 1 rank, 5 steps at a small batch (ImageNet nets on a generated
#     8-image folder: resnet50 batch 2, resnet152 1, alexnet 4, vgg19 1; resnet110 16 on
#     generated CIFAR-format data): the per-layer times the modelled columns rescale (the
#     AN4 LSTM has no per-layer profile: modelled from its parameters and FLOPs only);
#  4. measured: scripts/compare.sh --netcluster, 2 ranks, fp32 vs 4-bit QSGD:
#     ResNet-110 (generated CIFAR data, batch 16/rank, 24 steps, 100mbit) and AlexNet
#     (generated 224px images, batch 4/rank, 6 steps, 1gbit);   [--no-measure skips]
#  5. validation: compare.sh --profile on the quickstart (ResNet-8) at 25mbit and 200mbit on
#     2 and 4 ranks (fp32, 4-bit QSGD, 30 steps each), and the model's prediction of each
#     run's step time from that run's per-layer profile;   [--no-validate skips]
#  6. scripts/reproduce_report.py writes the two reports.
# Needs root for the netcluster steps (skipped with a note otherwise) and Debian's python3
# with matplotlib (QT_DEPS_EXTRA=1 scripts/deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
here=scripts
PY=${QT_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
W=runs/reproduce/qsgd
R=reports
measure=1 validate=1
while [ $# -gt 0 ]; do
    case "$1" in
        --work) W=$2; shift 2 ;;
        --reports) R=$2; shift 2 ;;
        --no-measure) measure=0; shift ;;
        --no-validate) validate=0; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: reproduce_qsgd: unknown option '$1'" >&2; exit 2 ;;
    esac
done
BUILD=${QT_BUILD:-build}
TRAIN=${QT_TRAIN:-./train}
QB=${QT_QUANTBENCH:-./quantbench}
[ -x "$QB" ] || QB=$BUILD/tools/quantbench
GEN=$BUILD/tools/gen_cifar_like
for f in "$TRAIN" "$QB" "$GEN"; do
    [ -x "$f" ] || { echo "error: reproduce_qsgd: $f not built (make train quantbench $GEN)" >&2; exit 1; }
done
mkdir -p "$W"/{dryrun,prof,measured,validation} "$R"
log() { echo "reproduce_qsgd: $*" >&2; }
t_start=$(date +%s)
rm -f "$W/notes.md" "$W/validation_notes.md"
note() { echo "$*" >>"$W/notes.md"; }
can_net=1
[ "$(id -u)" = 0 ] && ip netns add qtnrprobe 2>/dev/null && ip netns del qtnrprobe || can_net=0

# Training binary snapshot: other builds may replace ./train while this runs.
bin=$(mktemp -d /tmp/qtrain-repro.XXXXXX)
trap 'rm -rf "$bin"' EXIT
cp "$TRAIN" "$bin/train"
export QT_TRAIN=$bin/train
T=$bin/train

# ---- 1. codec speeds ----------------------------------------------------------------------
log "quantbench"
"$QB" --n 1000000 --reps 3 >"$W/quantbench.txt"

# ---- 2. parameter counts and FLOPs -------------------------------------------------------------
declare -A CFG=([alexnet]=configs/alexnet.ini [resnet152]=configs/resnet152.ini [resnet50]=configs/resnet50.ini
                [resnet110]=configs/resnet110_cifar10.ini [vgg19]=configs/vgg19.ini [lstm]=configs/lstm_an4.ini)
for k in "${!CFG[@]}"; do
    rm -f "$W/dryrun/$k.txt"
    [ -f "${CFG[$k]}" ] || { log "$k: ${CFG[$k]} missing: row without a model"; continue; }
    "$T" --config "${CFG[$k]}" --dry-run >"$W/dryrun/$k.txt" 2>&1 || { log "$k: --dry-run failed"; rm -f "$W/dryrun/$k.txt"; }
done

# ---- 3. CPU profiles ----------------------------------------------------------------------------
D=$W/data
[ -f "$D/cifar/data_batch_1.bin" ] || "$GEN" "$D/cifar" --train 1024 --test 256 --seed 7 >/dev/null 2>&1
if [ ! -d "$D/imagenet/val" ]; then
    "$PY" - "$D/imagenet" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rng = np.random.default_rng(7)
for split, n in (("train", 4), ("val", 2)):
    for c in range(2):
        d = os.path.join(root, split, "class%d" % c)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((256, 256, 3)) * 255).astype("uint8")).save(os.path.join(d, "%d.png" % i))
EOF
fi
profile() { # profile KEY BATCH DATA [extra --set ...]
    local k=$1 b=$2 data=$3
    shift 3
    [ -f "$W/dryrun/$k.txt" ] || return 0
    log "profile $k (batch $b)"
    "$T" --config "${CFG[$k]}" --set data.path="$data" --set data.batch="$b" --set train.max_steps=5 \
        --set train.eval=false --set train.checkpoint= --set train.log= --set train.print_every=1000 "$@" \
        --profile "$W/prof/$k.json" >"$W/prof/$k.log" 2>&1 || { log "$k: profile failed (see $W/prof/$k.log)"; rm -f "$W/prof/$k.json"; }
}
profile resnet110 16 "$D/cifar"
profile resnet50 2 "$D/imagenet"
profile resnet152 1 "$D/imagenet"
profile alexnet 4 "$D/imagenet"
profile vgg19 1 "$D/imagenet"
# arch=lstm: ./train --profile lists no layers for the speech path, so the report models the
# LSTM from its parameter count and FLOPs alone (scripts/reproduce_report.py synthetic_profile).
rm -f "$W/prof/lstm.json"

# ---- 4. measured on the netcluster --------------------------------------------------------------
if [ $measure = 1 ] && [ $can_net = 1 ]; then
    log "measured: resnet110, 2 ranks, 100mbit"
    "$here/compare.sh" "${CFG[resnet110]}" --ranks 2 --netcluster 100mbit --variants none,qsgd:b=4 --profile \
        --out "$W/measured/resnet110" --set data.path="$D/cifar" --set data.batch=16 --set train.max_steps=24 \
        --set train.eval_limit=256 --set train.print_every=1000 || log "resnet110 measurement failed"
    if [ -f "$W/dryrun/alexnet.txt" ]; then
        log "measured: alexnet, 2 ranks, 1gbit"
        "$here/compare.sh" "${CFG[alexnet]}" --ranks 2 --netcluster 1gbit --variants none,qsgd:b=4 --profile \
            --out "$W/measured/alexnet" --set data.path="$D/imagenet" --set data.batch=4 --set train.max_steps=6 \
            --set train.eval=false --set train.print_every=1000 || log "alexnet measurement failed"
    fi
elif [ $measure = 1 ]; then
    note "Measured column: not run (needs root and network namespaces)."
fi

# ---- 5. validation of the scaling model -----------------------------------------------------------
if [ $validate = 1 ] && [ $can_net = 1 ]; then
    V=$W/validation
    [ -f "$D/qs/data_batch_1.bin" ] || "$GEN" "$D/qs" --train 4000 --test 500 --seed 1 >/dev/null 2>&1
    for n in 2 4; do
        for rate in 25mbit 200mbit; do
            log "validation: $n ranks at $rate"
            "$here/compare.sh" configs/quickstart.ini --ranks $n --netcluster $rate --variants none,qsgd:b=4 \
                --profile --out "$V/n${n}_$rate" --set data.path="$D/qs" --set train.max_steps=30 \
                --set train.eval=false --set train.print_every=1000 || log "validation n=$n $rate failed"
        done
    done
elif [ $validate = 1 ]; then
    echo "Not run: needs root and network namespaces." >"$W/validation_notes.md"
fi

# ---- 6. reports ---------------------------------------------------------------------------------------
note ""
note "Run time of scripts/reproduce_qsgd.sh: $(( $(date +%s) - t_start )) s on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))."
"$PY" "$here/reproduce_report.py" qsgd "$W" "$R/qsgd_table1.md" "$R/qsgd_scaling.png"
# The committed quickstart comparison (run with --profile) is validated too when present.
extra=()
for d in "$R"/compare_quickstart_4r_200mbit "$R"/compare_quickstart_4r_25mbit; do
    [ -f "$d/manifest" ] && extra+=("$d")
done
if [ $validate = 1 ]; then
    "$PY" "$here/reproduce_report.py" validation "$W" "$R/scaling_validation.md" "${extra[@]+"${extra[@]}"}"
fi
log "wrote $R/qsgd_table1.md$([ $validate = 1 ] && echo " and $R/scaling_validation.md")"
