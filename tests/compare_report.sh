#!/usr/bin/env bash
# compare_report.sh — scripts/compare.sh on the quickstart config, 2 ranks, two variants,
# each run twice (--repeat 2), on a small generated data set:
#  - every number of report.md's tables equals what tests/compare_report_check.py computes
#    from the JSONL files itself, and the plots are 800x500 PNGs linked from the report;
#  - both runs of a variant took the same seeded trajectory (loss digest, top-1);
#  - --report-only rebuilds an identical report.md from the folder;
#  - a bad variant is refused with one error line before anything runs.
# Needs ./train (or $QT_TRAIN) and $QT_BUILD/tools/gen_cifar_like (make train build/tools/gen_cifar_like).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
PY=${QT_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
fail() { echo "FAIL: $*"; exit 1; }
TRAIN=${QT_TRAIN:-./train}
[ -x "$TRAIN" ] || { echo "skip: $TRAIN not built"; exit 77; }
[ -x "$BUILD/tools/gen_cifar_like" ] || { echo "skip: $BUILD/tools/gen_cifar_like not built"; exit 77; }
"$PY" -c 'import matplotlib' 2>/dev/null || QT_DEPS_EXTRA=1 scripts/deps.sh >/dev/null 2>&1
"$PY" -c 'import matplotlib' 2>/dev/null || { echo "skip: no matplotlib for $PY"; exit 77; }
T=$(mktemp -d /tmp/qtrain-cmptest.XXXXXX)
trap 'rm -rf "$T"' EXIT

"$BUILD/tools/gen_cifar_like" "$T/data" --train 768 --test 256 --seed 5 >/dev/null 2>&1 || fail "generator"

# A bad variant: one line, non-zero, nothing run.
scripts/compare.sh configs/quickstart.ini --ranks 2 --variants none,zip:b=3 --out "$T/bad" 2>"$T/err" &&
    fail "accepted an unknown method"
grep "unknown method 'zip'" "$T/err" >/dev/null || fail "error line: $(cat "$T/err")"
[ "$(grep -c . "$T/err")" = 1 ] || fail "more than one error line: $(cat "$T/err")"
[ -e "$T/bad/runs/none.r1.jsonl" ] && fail "ran although a variant was bad"

out="$T/cmp"
scripts/compare.sh configs/quickstart.ini --ranks 2 --variants none,qsgd:b=4 --repeat 2 --out "$out" \
    --set data.path="$T/data" --set data.batch=32 --set train.epochs=2 --set train.print_every=1000 \
    2>"$T/log" || { tail -20 "$T/log"; fail "compare.sh failed"; }
"$PY" tests/compare_report_check.py "$out" 800 500 || fail "report does not match its metrics"
grep -E '^\| (none|qsgd:b=4) \|' "$out/report.md" | sed 's/^/   /'

cp "$out/report.md" "$T/report1.md"
scripts/compare.sh --report-only --out "$out" 2>/dev/null || fail "--report-only failed"
cmp -s "$out/report.md" "$T/report1.md" || { diff "$T/report1.md" "$out/report.md"; fail "--report-only changed report.md"; }
echo "PASS"
