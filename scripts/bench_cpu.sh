#!/usr/bin/env bash
# CPU speed against the peer, in one run on this machine: one training step of
# ResNet-20 (CIFAR, batch 32 and 128, 2 threads) in qtrain (tools/stepbench) and in
# PyTorch (shared/bench/torch_cpu_baseline.py, Debian's python3-torch). Prints both and
# the ratio qtrain / PyTorch (target <= 1.0).
# Usage: scripts/bench_cpu.sh [THREADS]   (QT_BUILD=build dir, default build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
THREADS=${1:-2}
PEER=${QT_PEER:-../shared/bench/torch_cpu_baseline.py}
[ -x "$BUILD/tools/stepbench" ] || make --no-print-directory "$BUILD/tools/stepbench" >/dev/null
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo "bench_cpu: installing the peer (python3-torch)" >&2
    QT_DEPS_EXTRA=1 scripts/deps.sh
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "qtrain:"
for b in 32 128; do
    "$BUILD/tools/stepbench" --depth 20 --variant cifar --batch $b --threads "$THREADS" --iters 10 | tee -a "$out"
done
echo "pytorch ($(/usr/bin/python3 -c 'import torch; print(torch.__version__)')):"
/usr/bin/python3 "$PEER" "$THREADS" | grep resnet20 | tee -a "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
q = {r["batch"]: r["ms_per_step"] for r in rows if r["model"].startswith("resnet20-cifar") and "min_ms" in r}
p = {r["batch"]: r["ms_per_step"] for r in rows if r["model"] == "resnet20-cifar" and "min_ms" not in r}
print("%-22s %6s %12s %12s %8s" % ("model", "batch", "qtrain ms", "pytorch ms", "ratio"))
worst = 0
for b in sorted(q):
    if b in p:
        r = q[b] / p[b]; worst = max(worst, r)
        print("%-22s %6d %12.1f %12.1f %8.2f" % ("resnet20 cifar step", b, q[b], p[b], r))
print("ratio (qtrain / pytorch, <= 1.0 is the target): %.2f %s" % (worst, "OK" if worst <= 1.0 else "SLOWER"))
PY
