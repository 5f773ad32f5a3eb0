#!/usr/bin/env bash
# The README's quickstart claim: configs/quickstart.ini on 2 ranks with 4-bit QSGD reaches
# the top-1 the README states (within 2 points: another CPU may pick other BLAS kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
want=$(grep -o '\*\*[0-9.]*% top-1\*\*' README.md | head -1 | sed 's/[^0-9.]*\([0-9.]*\)%.*/\1/')
[ -n "$want" ] || fail "README states no quickstart accuracy"
"$BUILD/tools/gen_cifar_like" "$T/data" --train 10000 --test 2000 --seed 1 >/dev/null || fail "generator"
timeout 600 scripts/mpirun.sh -np 2 ./train --config configs/quickstart.ini --set data.path="$T/data" \
    --set train.log="$T/m.jsonl" --set train.checkpoint="$T/ck" 2>"$T/err" || { tail -5 "$T/err"; fail "quickstart run"; }
got=$(grep '"eval": true' "$T/m.jsonl" | tail -1 | sed 's/.*"top1": \([0-9.]*\).*/\1/')
echo "quickstart top-1: $got (README: $want%)"
awk -v g="$got" -v w="$want" 'BEGIN { d = 100 * g - w; exit !(d > -2 && d < 2) }' || fail "top-1 $got vs README $want%"
grep -q '"compression_ratio": 6' "$T/m.jsonl" || fail "QSGD compression not reported"
echo "quickstart: ok"
