#!/usr/bin/env bash
# ./train end to end on one process: --dry-run parameter counts, CLI and config errors
# (one line, non-zero exit), bad data refused, a short run that learns.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Parameter counts equal torchvision's (resnet50/152) and the option-B CIFAR ResNet's.
for pair in resnet152:60192808 resnet50:25557032 resnet20_cifar10:272474 resnet56_cifar10:855770 \
            resnet110_cifar10:1730714; do
    cfg=${pair%%:*}; want=${pair##*:}
    got=$(./train --config configs/$cfg.ini --dry-run | awk '/^params:/ {print $2}')
    [ "$got" = "$want" ] || fail "$cfg: params $got, expected $want"
done
./train --config configs/resnet50.ini --dry-run | grep -q '^flops_per_sample: 8' || fail "resnet50 flops line"

# Errors: one line starting with error:, naming the file, exit status non-zero.
expect_err() { # expect_err NEEDLE CMD...
    local needle=$1; shift
    "$@" >"$T/out" 2>"$T/err" && fail "accepted: $*"
    grep -q -- "$needle" "$T/err" || { cat "$T/err"; fail "'$needle' not in the error of: $*"; }
    [ "$(grep -c . "$T/err")" -eq 1 ] || { cat "$T/err"; fail "more than one line: $*"; }
}
printf '[model]\ndepth = 20\nwidth = 3\n' >"$T/bad.ini"
expect_err "bad.ini:3: \[model\] unknown key 'width'" ./train --config "$T/bad.ini" --dry-run
expect_err "missing.ini: cannot open config" ./train --config "$T/missing.ini"
expect_err "must be between" ./train --config configs/quickstart.ini --set data.batch=-4 --dry-run
expect_err "unknown argument" ./train --config configs/quickstart.ini --frobnicate
expect_err "missing --config" ./train

# Data: generate a small set, then break it.
"$BUILD/tools/gen_cifar_like" "$T/data" --train 3000 --test 500 --seed 3 >/dev/null || fail "generator"
cp -r "$T/data" "$T/trunc"
truncate -s 100000 "$T/trunc/data_batch_2.bin"
expect_err "data_batch_2.bin: truncated" ./train --config configs/quickstart.ini --set data.path="$T/trunc" \
    --set train.checkpoint= --set train.log=
expect_err "nodata: not a folder" ./train --config configs/quickstart.ini --set data.path="$T/nodata" \
    --set train.checkpoint= --set train.log=

# A short single-process run learns: ResNet-8, 2 epochs of 3000 images.
./train --config configs/quickstart.ini --set data.path="$T/data" --set quant.method=none \
    --set train.epochs=2 --set train.log="$T/m.jsonl" --set train.checkpoint="$T/ck" --set train.threads=2 \
    2>"$T/run.err" || { cat "$T/run.err"; fail "training run"; }
top1=$(grep '"eval": true' "$T/m.jsonl" | tail -1 | sed 's/.*"top1": \([0-9.]*\).*/\1/')
echo "2-epoch top1 on the generated set: $top1 (chance 0.10)"
awk -v a="$top1" 'BEGIN { exit !(a > 0.35) }' || fail "top1 $top1 not well above chance"
ls "$T/ck"/ckpt-*.qtc >/dev/null 2>&1 || fail "no checkpoint written"
grep -q '"t_comm_exposed"' "$T/m.jsonl" || fail "metrics lack t_comm_exposed"
echo "train_cli: ok"
