#!/usr/bin/env bash
# Resume equivalence: a run stopped at step 17 and resumed produces the same losses, bit
# for bit, as the uninterrupted run; a corrupted or truncated checkpoint is refused with
# one line and the files already written stay intact.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BUILD/tools/gen_cifar_like" "$T/data" --train 1200 --test 200 --seed 5 >/dev/null || fail "generator"
common=(--config configs/quickstart.ini --set data.path="$T/data" --set quant.method=none --set data.batch=32
        --set train.epochs=2 --set train.threads=2 --set train.eval=false)
./train "${common[@]}" --set train.log="$T/full.jsonl" --set train.checkpoint="$T/ckA" 2>/dev/null \
    || fail "uninterrupted run"
./train "${common[@]}" --set train.log="$T/part.jsonl" --set train.checkpoint="$T/ckB" --set train.max_steps=17 \
    2>/dev/null || fail "first half"
./train "${common[@]}" --set train.log="$T/part.jsonl" --set train.checkpoint="$T/ckB" --resume \
    2>"$T/resume.err" || { cat "$T/resume.err"; fail "resume"; }
grep -q "resumed from" "$T/resume.err" || fail "resume did not say where it resumed"
extract() { grep '"step"' "$1" | grep -v '"eval"' | sed 's/.*"step": \([0-9]*\),.*"loss": \([-0-9.e]*\),.*/\1 \2/'; }
extract "$T/full.jsonl" >"$T/a"
extract "$T/part.jsonl" >"$T/b"
[ "$(wc -l <"$T/a")" -ge 60 ] || fail "too few steps: $(wc -l <"$T/a")"
diff "$T/a" "$T/b" >/dev/null || { diff "$T/a" "$T/b" | head; fail "resumed losses differ"; }
echo "resume: $(wc -l <"$T/a") steps, identical losses"

# Corruption: flip one byte of the newest checkpoint -> refused, nothing overwritten.
latest=$(ls "$T/ckB"/ckpt-*.qtc | sort | tail -1)
sum_before=$(md5sum "$latest" | cut -d' ' -f1)
printf '\xff' | dd of="$latest" bs=1 seek=300 conv=notrunc 2>/dev/null
sum_corrupt=$(md5sum "$latest" | cut -d' ' -f1)
[ "$sum_before" != "$sum_corrupt" ] || fail "corruption did not change the file"
./train "${common[@]}" --set train.epochs=3 --set train.checkpoint="$T/ckB" --resume >/dev/null 2>"$T/err" \
    && fail "corrupted checkpoint accepted"
grep -q "error: .*ckpt-.*checksum\|error: .*ckpt-.*corrupt" "$T/err" || { cat "$T/err"; fail "corruption message"; }
[ "$(md5sum "$latest" | cut -d' ' -f1)" = "$sum_corrupt" ] || fail "refused checkpoint was modified"
truncate -s 1000 "$latest"
./train "${common[@]}" --set train.epochs=3 --set train.checkpoint="$T/ckB" --resume >/dev/null 2>"$T/err" \
    && fail "truncated checkpoint accepted"
grep -q "error: .*truncated" "$T/err" || { cat "$T/err"; fail "truncation message"; }
# A different configuration is refused too.
./train "${common[@]}" --set optim.lr=0.3 --set train.checkpoint="$T/ckA" --resume >/dev/null 2>"$T/err" \
    && fail "checkpoint of another configuration accepted"
grep -q "different configuration" "$T/err" || { cat "$T/err"; fail "config mismatch message"; }
echo "train_resume: ok"
