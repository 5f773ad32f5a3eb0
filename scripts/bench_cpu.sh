#!/usr/bin/env bash
# CPU speed against the peer, in one run on this machine: one training step of
# ResNet-20 (CIFAR, batch 32 and 128) and of a 2x256 LSTM (40 features, T=100, batch 32),
# 2 threads, in qtrain (tools/stepbench, tools/lstmbench) and in PyTorch
# (shared/bench/torch_cpu_baseline.py, Debian's python3-torch). Prints both and the ratio
# qtrain / PyTorch per row (target <= 1.0).
# Usage: scripts/bench_cpu.sh [THREADS]   (QT_BUILD=build dir, default build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
THREADS=${1:-2}
PEER=${QT_PEER:-../shared/bench/torch_cpu_baseline.py}
for tool in stepbench lstmbench; do
    [ -x "$BUILD/tools/$tool" ] || make --no-print-directory BUILD="$BUILD" "$BUILD/tools/$tool" >/dev/null
done
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo "bench_cpu: installing the peer (python3-torch)" >&2
    QT_DEPS_EXTRA=1 scripts/deps.sh
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1 /proc/loadavg)"
echo "qtrain:"
for b in 32 128; do
    "$BUILD/tools/stepbench" --depth 20 --variant cifar --batch $b --threads "$THREADS" --iters 10 | tee -a "$T/q"
done
"$BUILD/tools/lstmbench" --threads "$THREADS" | tee -a "$T/q"
echo "pytorch ($(/usr/bin/python3 -c 'import torch; print(torch.__version__)')):"
/usr/bin/python3 "$PEER" "$THREADS" | tee "$T/p"
/usr/bin/python3 - "$T/q" "$T/p" <<'PY'
import json, sys
load = lambda f: [json.loads(l) for l in open(f) if l.strip().startswith("{")]
def key(r):
    m = r["model"]
    return ("resnet20" if m.startswith("resnet20") else "lstm" if m.startswith("lstm2x256") else m, r["batch"])
q = {key(r): r["ms_per_step"] for r in load(sys.argv[1])}
p = {key(r): r["ms_per_step"] for r in load(sys.argv[2])}
print("%-26s %6s %12s %12s %8s" % ("model", "batch", "qtrain ms", "pytorch ms", "ratio"))
worst = 0
for k in sorted(q):
    if k in p:
        r = q[k] / p[k]; worst = max(worst, r)
        print("%-26s %6d %12.1f %12.1f %8.2f" % (k[0] + " step", k[1], q[k], p[k], r))
print("worst ratio (qtrain / pytorch, <= 1.0 is the target): %.2f %s" % (worst, "OK" if worst <= 1.0 else "SLOWER"))
PY
