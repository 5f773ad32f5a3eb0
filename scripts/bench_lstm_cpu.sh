#!/usr/bin/env bash
# CPU LSTM speed against the peer, in one run on this machine: one training step of a
# 2 x 256 LSTM (40 features, T=100, batch 32, linear 256->40, cross-entropy, SGD momentum)
# in qtrain (tools/lstmbench) and in PyTorch (shared/bench/torch_cpu_baseline.py, its
# lstm2x256-T100 line). The machine is shared, so lstmbench runs REPS times and the median
# of its per-run medians is compared. Prints both and the ratio qtrain / PyTorch (target <= 1.0).
# Usage: scripts/bench_lstm_cpu.sh [THREADS]   (QT_BUILD=build dir, default build;
#        QT_REPS=5; QT_PEER_MS=<ms> skips the PyTorch run and uses that number)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QT_BUILD:-build}
THREADS=${1:-2}
REPS=${QT_REPS:-5}
PEER=${QT_PEER:-../shared/bench/torch_cpu_baseline.py}
[ -x "$BUILD/tools/lstmbench" ] || make --no-print-directory BUILD="$BUILD" "$BUILD/tools/lstmbench" >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "qtrain:"
for _ in $(seq "$REPS"); do
    "$BUILD/tools/lstmbench" --threads "$THREADS" | tee -a "$out"
done
if [ -n "${QT_PEER_MS:-}" ]; then
    echo "{\"model\": \"lstm2x256-T100\", \"batch\": 32, \"threads\": $THREADS, \"ms_per_step\": $QT_PEER_MS, \"peer\": 1}" >>"$out"
    echo "pytorch: $QT_PEER_MS ms (given)"
else
    if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
        echo "bench_lstm_cpu: installing the peer (python3-torch)" >&2
        QT_DEPS_EXTRA=1 scripts/deps.sh
    fi
    echo "pytorch ($(/usr/bin/python3 -c 'import torch; print(torch.__version__)')):"
    /usr/bin/python3 "$PEER" "$THREADS" | grep lstm2x256 | sed 's/}$/, "peer": 1}/' | tee -a "$out"
fi
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
q = [r["ms_per_step"] for r in rows if "peer" not in r]
p = [r["ms_per_step"] for r in rows if "peer" in r]
qm = statistics.median(q)
print("%-24s %12s %12s %8s" % ("model", "qtrain ms", "pytorch ms", "ratio"))
print("%-24s %12.1f %12.1f %8.2f" % ("lstm2x256-T100 b32 step", qm, p[0], qm / p[0]))
print("ratio (qtrain / pytorch, <= 1.0 is the target): %.2f %s" % (qm / p[0], "OK" if qm <= p[0] else "SLOWER"))
PY
