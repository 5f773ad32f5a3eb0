#!/usr/bin/env bash
# compare.sh — train one config once per gradient-exchange variant and write a report.
#
#   scripts/compare.sh CONFIG --ranks N --variants V1,V2,... [--netcluster RATE[,DELAY]]
#                      [--out DIR] [--target ACC] [--band B] [--set section.key=value ...]
#                      [--repeat R] [--profile] [--report-only]
#
# A variant is METHOD[:key=value...], e.g. none, fp16, qsgd:b=4, qsgd:b=8:bucket=512,
# ecq:b=2, qsgd:b=4:norm=l2:coll=rsag, onebit, terngrad:clip=2.5, topk:topk=0.01.
# Short keys: b|bits, s|levels, d|bucket, norm, enc|encoding, alpha, beta, topk, clip,
# min_size, warmup_steps (-> [quant]); coll|collective, overlap, bucket_kb,
# fp16_allreduce (-> [dist]); a key with a dot (optim.lr=0.05) is passed as it is;
# mca.NAME=V sets the Open MPI parameter NAME for that variant's run (e.g.
# none:mca.coll_libnbc_iallreduce_algorithm=1, the ring instead of libnbc's binomial tree).
# `none` runs on dist.collective=allreduce unless it names another: the fp32 baseline is
# the bandwidth-optimal allreduce, as in the papers. A codec variant whose config says
# allreduce is moved to allgather (QSGD's Algorithm 1) and the report says so.
#
# Every variant runs the same config with the same seed (same initial weights and the same
# data order on every rank); checkpoints are off. Output in DIR (default
# runs/compare/CONFIGNAME-nN[-RATE]):
#   runs/LABEL.rK.jsonl  metrics   runs/LABEL.rK.log  stderr   runs/LABEL.rK.meta  run facts
#   report.md, acc_vs_time.png, loss_vs_step.png, time_breakdown.png  (scripts/compare_report.py)
# --repeat R runs the whole list R times, round-robin (v1 v2 v3 v1 v2 v3 ...), so that a
# neighbour's load on a shared machine hits every variant alike; the report takes the
# median of the timing columns and checks that the seeded columns agree across repeats.
# --report-only rebuilds report.md and the plots from DIR's files without training.
# --profile also writes runs/LABEL.rK.profile.json (./train --profile: per-layer times of
# that run, what scripts/scaling_model.py reads).
#
# --netcluster RATE[,DELAY]: runs every variant on scripts/netcluster.sh's namespaces (one
# rank per namespace, Open MPI forced onto TCP over the shaped veth links: pml ob1,
# btl tcp,self, no shared memory), records the veth byte counters around each run, and
# tears the namespaces down on exit, error or Ctrl-C. Needs root.
# Environment: QT_TRAIN (binary, default ./train; copied once so a rebuild mid-run does not
# mix binaries), QT_NETCLUSTER_PREFIX (namespace prefix, default qtn), QT_PYTHON
# (default /usr/bin/python3, Debian's, which has numpy and matplotlib).
set -euo pipefail

die() { echo "error: compare: $*" >&2; exit 1; }
usage() { sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
PY=${QT_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3

config="" ranks="" variants="" net="" out="" target="" band="" report_only=0 repeat=1 profile=0
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ranks) ranks=${2:-}; shift 2 ;;
        --variants) variants=${2:-}; shift 2 ;;
        --netcluster) net=${2:-}; shift 2 ;;
        --out) out=${2:-}; shift 2 ;;
        --target) target=${2:-}; shift 2 ;;
        --band) band=${2:-}; shift 2 ;;
        --set) sets+=("${2:-}"); shift 2 ;;
        --repeat) repeat=${2:-}; shift 2 ;;
        --report-only) report_only=1; shift ;;
        --profile) profile=1; shift ;;
        -h|--help) usage ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) [ -z "$config" ] || die "two configs given: '$config' and '$1'"; config=$1; shift ;;
    esac
done
if [ $report_only = 1 ]; then
    # Only DIR's files are read: CONFIG, --ranks and --variants come from its manifest.
    [ -n "$out" ] || die "--report-only needs --out DIR"
    [ -f "$out/manifest" ] || die "$out/manifest: missing (not a compare.sh folder)"
    "$PY" -c 'import matplotlib' 2>/dev/null || QT_DEPS_EXTRA=1 "$here/deps.sh" >&2 || true
    exec "$PY" "$here/compare_report.py" "$out"
fi
[ -n "$config" ] || usage
[ -f "$config" ] || die "$config: no such config file"
[[ "$ranks" =~ ^[0-9]+$ ]] && [ "$ranks" -ge 1 ] || die "--ranks N (N >= 1) is required"
[ -n "$variants" ] || die "--variants V1,V2,... is required"
[[ "$repeat" =~ ^[0-9]+$ ]] && [ "$repeat" -ge 1 ] || die "--repeat R needs R >= 1"
for s in "${sets[@]+"${sets[@]}"}"; do
    [[ "$s" == *.*=* ]] || die "--set '$s': expected section.key=value"
done
net_rate="" net_delay=0
if [ -n "$net" ]; then
    net_rate=${net%%,*}
    [[ "$net" == *,* ]] && net_delay=${net#*,}
fi
cfgname=$(basename "$config" .ini)
[ -n "$out" ] || out="runs/compare/$cfgname-n$ranks${net_rate:+-$net_rate}"
mkdir -p "$out/runs"

# ---- variants -> (label, --set list) --------------------------------------------------

# Reads the config's [dist] collective (or a --set override) to decide codec placement.
config_collective() {
    local c
    c=$("$PY" -c 'import configparser, sys
p = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
p.read(sys.argv[1])
print(p.get("dist", "collective", fallback="allgather"))' "$config")
    for s in "${sets[@]+"${sets[@]}"}"; do [[ "$s" == dist.collective=* ]] && c=${s#dist.collective=}; done
    echo "$c"
}

# Prints one `section.key=value` per line for variant $1; fails on an unknown key.
variant_sets() {
    local v=$1 method rest kv k val
    method=${v%%:*}
    rest=""
    [[ "$v" == *:* ]] && rest=${v#*:}
    case "$method" in
        none|fp16|bf16|qsgd|ecq|onebit|terngrad|topk) ;;
        *) die "variant '$v': unknown method '$method' (none fp16 bf16 qsgd ecq onebit terngrad topk)" ;;
    esac
    echo "quant.method=$method"
    local have_coll=0
    IFS=':' read -r -a kvs <<<"$rest"
    for kv in "${kvs[@]+"${kvs[@]}"}"; do
        [ -n "$kv" ] || continue
        [[ "$kv" == *=* ]] || die "variant '$v': '$kv' is not key=value"
        k=${kv%%=*}
        val=${kv#*=}
        case "$k" in
            b|bits) echo "quant.bits=$val" ;;
            s|levels) echo "quant.levels=$val" ;;
            d|bucket) echo "quant.bucket=$val" ;;
            enc|encoding) echo "quant.encoding=$val" ;;
            norm|alpha|beta|topk|clip|min_size|warmup_steps) echo "quant.$k=$val" ;;
            coll|collective) echo "dist.collective=$val"; have_coll=1 ;;
            overlap|bucket_kb|fp16_allreduce) echo "dist.$k=$val" ;;
            mca.*) [[ "${k#mca.}" =~ ^[a-z0-9_]+$ ]] || die "variant '$v': bad MCA name '$k'"
                echo "OMPI_MCA_${k#mca.}=$val" ;;
            *.*) echo "$k=$val"; [[ "$k" == dist.collective ]] && have_coll=1 ;;
            *) die "variant '$v': unknown key '$k'" ;;
        esac
    done
    if [ $have_coll = 0 ]; then
        local cc
        cc=$(config_collective)
        if [ "$method" = none ]; then
            echo "dist.collective=allreduce"
        elif [ "$cc" = allreduce ] && [ "$method" != fp16 ] && [ "$method" != bf16 ]; then
            echo "dist.collective=allgather"
        fi
    fi
}

label_file() { echo "$1" | sed 's/[^A-Za-z0-9._-]/_/g'; }

IFS=',' read -r -a vlist <<<"$variants"
declare -A seen=()
for v in "${vlist[@]}"; do
    f=$(label_file "$v")
    [ -z "${seen[$f]:-}" ] || die "variant '$v' given twice"
    seen[$f]=1
    variant_sets "$v" >/dev/null
done

ensure_matplotlib() {
    "$PY" -c 'import matplotlib' 2>/dev/null && return 0
    echo "compare: matplotlib missing: installing python3-matplotlib (scripts/deps.sh)" >&2
    QT_DEPS_EXTRA=1 "$here/deps.sh" >&2 || true
    "$PY" -c 'import matplotlib' 2>/dev/null || echo "warning: compare: no matplotlib: report without plots" >&2
}

# ---- the manifest the report reads ----------------------------------------------------
{
    echo "config=$config"
    echo "ranks=$ranks"
    echo "variants=$variants"
    echo "netcluster=$net"
    echo "target=$target"
    echo "band=$band"
    echo "repeat=$repeat"
    echo "sets=${sets[*]+"${sets[*]}"}"
    echo "host_cores=$(nproc)"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/manifest"

# ---- runs -----------------------------------------------------------------------------
tmp=$(mktemp -d /tmp/qtrain-compare.XXXXXX)
train_bin="$tmp/train"
cp "${QT_TRAIN:-./train}" "$train_bin" || die "cannot copy ${QT_TRAIN:-./train} (build it first: make train)"
# `make sanitize` also writes ./train: an ASan build runs several times slower (timings are
# meaningless) and LeakSanitizer turns every exit into a failure.
if ldd "$train_bin" 2>/dev/null | grep -q libasan; then
    echo "warning: compare: ${QT_TRAIN:-./train} is a sanitizer build: timings are not representative" \
         "(rebuild with make train, or point QT_TRAIN at a release binary)" >&2
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
    echo "sanitizer_build=1" >>"$out/manifest"
fi
NC=()
net_up=0
cleanup() {
    local rc=$?
    if [ $net_up = 1 ]; then "$here/netcluster.sh" down >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

prefix=${QT_NETCLUSTER_PREFIX:-qtn}
if [ -n "$net" ]; then
    [ "$(id -u)" = 0 ] || die "--netcluster needs root (network namespaces)"
    # One user of a prefix at a time: a second `up` would tear this cluster down.
    exec 9>"/tmp/qtrain-netcluster-$prefix.lock"
    flock -n 9 || die "another compare.sh is using the netcluster '$prefix' (set QT_NETCLUSTER_PREFIX)"
    net_up=1
    "$here/netcluster.sh" up "$ranks" "$net_rate" "$net_delay" 2> >(grep -v 'quantum of class' >&2)
    state=$("$here/netcluster.sh" status)
    subnet=$(echo "$state" | sed -n 's/^subnet=//p')
    iface=$(echo "$state" | sed -n 's/^iface=//p')
    swns=$(echo "$state" | sed -n 's/^switch_ns=//p')
    echo "$state" | sed 's/^/netcluster_/' >>"$out/manifest"
fi

# Bytes each rank's veth has sent so far, space-separated in rank order.
veth_tx() {
    local k out=""
    for ((k = 0; k < ranks; k++)); do
        out="$out $(ip netns exec "$prefix$k" cat "/sys/class/net/$iface/statistics/tx_bytes")"
    done
    echo $out
}

failed=0
for ((rep = 1; rep <= repeat; rep++)); do
for v in "${vlist[@]}"; do
    f=$(label_file "$v").r$rep
    args=(--config "$config")
    for s in "${sets[@]+"${sets[@]}"}"; do args+=(--set "$s"); done
    mapfile -t vs < <(variant_sets "$v")
    envs=()
    for s in "${vs[@]}"; do
        if [[ "$s" == OMPI_MCA_* ]]; then envs+=("$s"); else args+=(--set "$s"); fi
    done
    args+=(--set "train.log=$out/runs/$f.jsonl" --set "train.checkpoint=")
    [ $profile = 1 ] && args+=(--profile "$out/runs/$f.profile.json")
    rm -f "$out/runs/$f.jsonl" "$out/runs/$f.log" "$out/runs/$f.meta" "$out/runs/$f.profile.json"
    echo "compare: [$v] (run $rep/$repeat) ${vs[*]}" >&2
    tx0=""
    [ -n "$net" ] && tx0=$(veth_tx)
    t0=$(date +%s.%N)
    rc=0
    if [ -n "$net" ]; then
        app=()
        for ((k = 0; k < ranks; k++)); do
            [ $k -gt 0 ] && app+=(:)
            app+=(-np 1 ip netns exec "$prefix$k" "$train_bin" "${args[@]}")
        done
        # mpirun lives in the switch namespace: the ranks reach its PMIx server over the
        # links (the only way out of their namespaces), and ranks reach each other only
        # over TCP on $subnet (no vader/sm shortcut although they share a host).
        ip netns exec "$swns" env "${envs[@]+"${envs[@]}"}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
            PMIX_MCA_ptl_tcp_remote_connections=1 PMIX_MCA_ptl_tcp_if_include="$subnet" \
            mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self \
            --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet" \
            --mca coll '^sm,han' "${app[@]}" 2>"$out/runs/$f.log" || rc=$?
    elif [ "$ranks" = 1 ]; then
        env "${envs[@]+"${envs[@]}"}" "$train_bin" "${args[@]}" 2>"$out/runs/$f.log" || rc=$?
    else
        env "${envs[@]+"${envs[@]}"}" "$here/mpirun.sh" -np "$ranks" "$train_bin" "${args[@]}" \
            2>"$out/runs/$f.log" || rc=$?
    fi
    t1=$(date +%s.%N)
    per_rank=""
    if [ -n "$net" ]; then
        read -r -a a0 <<<"$tx0"
        read -r -a a1 <<<"$(veth_tx)"
        for ((k = 0; k < ranks; k++)); do per_rank="$per_rank${per_rank:+,}$((a1[k] - a0[k]))"; done
    fi
    {
        echo "variant=$v"
        echo "sets=${vs[*]}"
        echo "rc=$rc"
        echo "wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')"
        echo "veth_tx_bytes_per_rank=$per_rank"
        echo "done_line=$(grep -a 'done:' "$out/runs/$f.log" | tail -1)"
    } >"$out/runs/$f.meta"
    if [ $rc != 0 ]; then
        echo "warning: compare: [$v] failed (exit $rc); last lines of $out/runs/$f.log:" >&2
        tail -5 "$out/runs/$f.log" >&2
        failed=1
    else
        grep -a 'done:' "$out/runs/$f.log" | tail -1 | sed "s/^/compare: [$v] /" >&2 || true
    fi
done
done
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/manifest"

ensure_matplotlib
"$PY" "$here/compare_report.py" "$out" || failed=1
echo "compare: report: $out/report.md" >&2
exit $failed
