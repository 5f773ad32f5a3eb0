#!/usr/bin/env bash
# ./train under mpirun: data-parallel equivalence (1 rank x 4B == 4 ranks x B, fp32, for
# every collective), bit-identical replicas with qsgd/ecq, a configuration mismatch and a
# killed rank end the job cleanly (bounded by timeouts: no hang).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
T=$(mktemp -d)
trap 'pkill -f "$T" 2>/dev/null; rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
MPI="timeout 120 scripts/mpirun.sh"
"$BUILD/tools/gen_cifar_like" "$T/data" --train 1600 --test 200 --seed 7 >/dev/null || fail "generator"
base=(--config configs/quickstart.ini --set data.path="$T/data" --set train.eval=false --set train.checkpoint=
      --set train.log= --set train.threads=1 --set train.max_steps=6 --set optim.schedule=constant
      --set optim.warmup_epochs=0 --set optim.lr=0.05)

# 1. Equivalence without BatchNorm (its batch statistics are per rank by design).
eq=("${base[@]}" --set model.batchnorm=false --set quant.method=none)
./train "${eq[@]}" --set data.batch=32 --dump-params "$T/one.f32" 2>"$T/err" || { cat "$T/err"; fail "1 rank"; }
for coll in allreduce allgather rsag; do
    $MPI -np 4 ./train "${eq[@]}" --set data.batch=8 --set dist.collective=$coll --dump-params "$T/four-$coll.f32" \
        2>"$T/err" || { cat "$T/err"; fail "4 ranks $coll"; }
    # Same sums in another order: agreement to ~1e-6 of the largest weight after 6 steps.
    "$BUILD/tools/f32diff" "$T/one.f32" "$T/four-$coll.f32" --tol 2e-5 || fail "1x32 vs 4x8 with $coll"
    for r in 1 2 3; do cmp -s "$T/four-$coll.f32" "$T/four-$coll.f32.r$r" || fail "$coll: rank $r differs from rank 0"; done
done

# 2. Quantized exchange keeps the replicas bit-identical (every rank applies the same decoded sum).
for v in qsgd:allgather qsgd:rsag ecq:rsag ecq:allgather; do
    m=${v%%:*}; coll=${v##*:}
    $MPI -np 2 ./train "${base[@]}" --set data.batch=16 --set quant.method=$m --set quant.bits=4 \
        --set dist.collective=$coll --set quant.min_size=100 --dump-params "$T/$m-$coll.f32" 2>"$T/err" \
        || { cat "$T/err"; fail "$m/$coll"; }
    cmp -s "$T/$m-$coll.f32" "$T/$m-$coll.f32.r1" || fail "$m/$coll: replicas differ"
    cmp -s "$T/$m-$coll.f32" "$T/one.f32" && fail "$m/$coll: identical to the fp32 run (codec not applied?)"
done

# 3. A rank with another configuration: every rank stops with one clear line, quickly.
start=$(date +%s)
timeout 60 scripts/mpirun.sh -np 1 ./train "${base[@]}" : -np 1 ./train "${base[@]}" --set optim.lr=0.2 \
    >/dev/null 2>"$T/err" && fail "mismatched configuration accepted"
grep -q "configuration differs from rank 0" "$T/err" || { cat "$T/err"; fail "mismatch message"; }
[ $(( $(date +%s) - start )) -lt 30 ] || fail "mismatch took too long to end the job"

# 4. A rank killed mid-run: the job ends within seconds, non-zero, no hang.
cp ./train "$T/train-kill"
timeout 90 scripts/mpirun.sh -np 2 "$T/train-kill" "${base[@]}" --set train.max_steps=0 --set train.epochs=100 \
    --set train.log="$T/kill.jsonl" >/dev/null 2>"$T/kill.err" &
job=$!
for _ in $(seq 100); do [ -s "$T/kill.jsonl" ] && break; sleep 0.2; done
[ -s "$T/kill.jsonl" ] || fail "training did not start"
victim=$(pgrep -x train-kill | tail -1)  # a rank, not mpirun (whose arguments name it too)
[ -n "$victim" ] || fail "no rank process found"
kill -9 "$victim"
killed_at=$(date +%s)
wait $job
rc=$?
[ $rc -ne 0 ] || fail "job exited 0 after a rank was killed"
[ $rc -ne 124 ] || fail "job hung after a rank was killed"
[ $(( $(date +%s) - killed_at )) -lt 20 ] || fail "job took too long to end after the kill"
echo "mpi_train: ok"
