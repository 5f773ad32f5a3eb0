#!/usr/bin/env bash
# configs/resnet50.ini and resnet152.ini train from an ImageNet-layout folder (a small
# generated one: JPEG and PNG files in train/<class>/ and val/<class>/), through the real
# JPEG/PNG loader, and evaluate on its val split.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BUILD/tools/gen_cifar_like" "$T/imagenet" --train 120 --test 40 --seed 4 --classes 5 --imagefolder 72 >/dev/null \
    || fail "generator"
[ -d "$T/imagenet/train/class_00" ] && [ -d "$T/imagenet/val" ] || fail "layout"
for cfg in resnet50 resnet152; do
    ./train --config configs/$cfg.ini --set data.path="$T/imagenet" --set data.image_size=32 --set data.resize=40 \
        --set data.batch=8 --set train.epochs=1 --set train.max_steps=3 --set train.log="$T/$cfg.jsonl" \
        --set train.checkpoint= --set train.threads=2 --set quant.method=none 2>"$T/err" \
        || { cat "$T/err"; fail "$cfg on an image folder"; }
    [ "$(grep -c '"step"' "$T/$cfg.jsonl")" -eq 3 ] || fail "$cfg: expected 3 steps in the log"
    grep -q '"loss": [0-9]' "$T/$cfg.jsonl" || fail "$cfg: no finite loss"
done
# Evaluation over val/ (full epoch of the small set, then eval).
./train --config configs/resnet50.ini --set model.depth=18 --set data.path="$T/imagenet" --set data.image_size=32 \
    --set data.resize=40 --set data.batch=8 --set train.epochs=1 --set train.log="$T/e.jsonl" --set train.checkpoint= \
    --set train.threads=2 --set quant.method=none 2>"$T/err" || { cat "$T/err"; fail "epoch + eval"; }
grep -q '"eval": true' "$T/e.jsonl" || fail "no evaluation line"
echo "train_imagefolder: ok"
