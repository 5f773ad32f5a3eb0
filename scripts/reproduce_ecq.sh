#!/usr/bin/env bash
# reproduce_ecq.sh — ECQ-SGD's CIFAR-10 ResNet-20 result (compression at equal accuracy:
# ECQ vs QSGD with l2 and max scaling vs 32-bit) with qtrain: reports/ecq_cifar.md and
# reports/ecq_cifar/ (the compare.sh report and its plots).
#
#   scripts/reproduce_ecq.sh [--data DIR] [--epochs E] [--train N] [--ranks R] [--work DIR]
#                            [--variants LIST] [--reports DIR]
#
# Default (about 11-13 minutes on a 2-core machine): generated CIFAR-format data
# (tools/gen_cifar_like, 4000 train / 1000 test images, seed 1), ResNet-20
# (configs/resnet20_cifar10.ini), 2 ranks x batch 64, 5 epochs, cosine LR from 0.1 with a
# 0.2-epoch warm-up, every tensor of >= 1000 elements quantized (quant.min_size=1000, so that
# the compression is not capped by fp32 layers: the paper does not say what it left in fp32),
# 2-bit codecs (s = 1: ternary levels, bucket 128) with Huffman coding of the levels (the
# paper's "more efficient coding"; lossless, so it changes bytes, not accuracy).
# --data DIR uses a real CIFAR-10 binary folder (cifar-10-batches-bin) instead; then raise
# --epochs (the paper trains to convergence, ~160 epochs) as time allows.
# Variants: none, qsgd l2, qsgd max, ecq l2, ecq max (alpha 1.0, beta 0.8: qtrain's defaults),
# and qsgd l2 / ecq l2 with bucket 1024 (sparser levels, so Huffman compresses more).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${QT_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
data="" epochs=5 ntrain=4000 ranks=2 W=runs/reproduce/ecq R=reports
variants="none,qsgd:b=2:norm=l2:enc=huffman,qsgd:b=2:norm=max:enc=huffman,ecq:b=2:norm=l2:enc=huffman,ecq:b=2:norm=max:enc=huffman"
variants="$variants,qsgd:b=2:norm=l2:d=1024:enc=huffman,ecq:b=2:norm=l2:d=1024:enc=huffman"
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --train) ntrain=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --work) W=$2; shift 2 ;;
        --variants) variants=$2; shift 2 ;;
        --reports) R=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: reproduce_ecq: unknown option '$1'" >&2; exit 2 ;;
    esac
done
BUILD=${QT_BUILD:-build}
GEN=$BUILD/tools/gen_cifar_like
[ -x "${QT_TRAIN:-./train}" ] || { echo "error: reproduce_ecq: ./train not built (make train)" >&2; exit 1; }
mkdir -p "$W" "$R/ecq_cifar"
t0=$(date +%s)
if [ -z "$data" ]; then
    data=$W/data
    [ -f "$data/data_batch_1.bin" ] && [ "$(cat "$W/data.n" 2>/dev/null)" = "$ntrain" ] || {
        [ -x "$GEN" ] || { echo "error: reproduce_ecq: $GEN not built" >&2; exit 1; }
        "$GEN" "$data" --train "$ntrain" --test 1000 --seed 1 >/dev/null
        echo "$ntrain" >"$W/data.n"
    }
    what="generated CIFAR-format data ($ntrain train / 1000 test images, tools/gen_cifar_like seed 1)"
else
    [ -f "$data/data_batch_1.bin" ] || { echo "error: reproduce_ecq: $data: no data_batch_1.bin (CIFAR-10 binary)" >&2; exit 1; }
    what="CIFAR-10 from $data"
fi
scripts/compare.sh configs/resnet20_cifar10.ini --ranks "$ranks" --variants "$variants" --out "$W/compare" \
    --set data.path="$data" --set data.batch=64 --set train.epochs="$epochs" --set optim.schedule=cosine \
    --set optim.warmup_epochs=0.2 --set quant.min_size=1000 --set train.print_every=1000
{
    echo "Data: $what. Run time: $(( $(date +%s) - t0 )) s on $(nproc) cores (load average at the end:" \
         "$(cut -d' ' -f1-3 /proc/loadavg)). Plots: [accuracy vs time](ecq_cifar/acc_vs_time.png)," \
         "[loss vs step](ecq_cifar/loss_vs_step.png), [time per step](ecq_cifar/time_breakdown.png)."
} >"$W/compare/notes.md"
cp "$W/compare"/*.png "$R/ecq_cifar/"
sed 's#](\([a-z_]*\.png\))#](\1)#' "$W/compare/report.md" >"$R/ecq_cifar/report.md"
"$PY" scripts/reproduce_report.py ecq "$W/compare" "$R/ecq_cifar.md"
echo "reproduce_ecq: wrote $R/ecq_cifar.md and $R/ecq_cifar/" >&2
