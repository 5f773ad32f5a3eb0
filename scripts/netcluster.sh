#!/usr/bin/env bash
# netcluster.sh — a bandwidth-limited "cluster" on one machine, made of network namespaces.
#
#   scripts/netcluster.sh up N RATE [DELAY]   make N rank namespaces + 1 switch namespace
#   scripts/netcluster.sh down                remove everything this prefix made (idempotent)
#   scripts/netcluster.sh status              print the state file (exit 1 if not up)
#   scripts/netcluster.sh run N RATE [DELAY] -- CMD ...   up, run CMD, down on any exit
#
# Layout (PREFIX defaults to "qtn"; set QT_NETCLUSTER_PREFIX to run several side by side):
#   ${PREFIX}sw          the switch namespace: bridge "qtbr" with address 10.213.0.254/24
#   ${PREFIX}0..N-1      one namespace per rank: interface "qteth", address 10.213.0.(K+1)/24
#   each rank's link is a veth pair qteth <-> ${PREFIX}p K (the latter a bridge port in the
#   switch namespace), created directly inside the namespaces: nothing is ever added to the
#   root namespace, and the 10.213.0.0/24 addresses exist only inside these namespaces.
# Every link is shaped in both directions (a full-duplex link of RATE): an htb class of
# RATE on the rank's egress (qteth) and on the switch port's egress (toward the rank).
# DELAY (e.g. 100us, 1ms) is a netem qdisc under that class on the rank's egress, so one
# rank-to-rank message sees DELAY once. If the kernel has no sch_netem (as in some
# sandboxes) the delay is NOT applied: a warning says so and the state file records
# delay_applied=0, so nothing downstream claims a delay that was not there.
#
# Invariants: `up` first tears down whatever this prefix left behind (namespaces and the
# processes still running inside them, which only this script's users started); `down`
# leaves no namespace, veth or qdisc of this prefix; the state file
# ${QT_NETCLUSTER_STATE_DIR:-/run}/qtrain-netcluster-PREFIX.env describes what is up.
# `run` tears down on normal exit, error, Ctrl-C and TERM.
set -euo pipefail

PREFIX=${QT_NETCLUSTER_PREFIX:-qtn}
STATE_DIR=${QT_NETCLUSTER_STATE_DIR:-/run}
[ -d "$STATE_DIR" ] && [ -w "$STATE_DIR" ] || STATE_DIR=/tmp
STATE="$STATE_DIR/qtrain-netcluster-$PREFIX.env"
SUBNET=10.213.0
IFACE=qteth
BRIDGE=qtbr

die() { echo "error: netcluster: $*" >&2; exit 1; }
warn() { echo "warning: netcluster: $*" >&2; }

usage() {
    sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ "$PREFIX" =~ ^[a-z][a-z0-9]{1,7}$ ]] || die "QT_NETCLUSTER_PREFIX '$PREFIX' must be 2-8 lowercase letters/digits"

# The namespaces this prefix owns: PREFIX + digits, and PREFIX + "sw".
owned_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}([0-9]+|sw)\$" || true
}

# Converts a tc rate (e.g. 200mbit, 1gbit, 500kbit, 10mbps) to bits per second.
rate_bps() {
    local r=${1,,} n unit
    [[ "$r" =~ ^([0-9]+(\.[0-9]+)?)([a-z]*)$ ]] || return 1
    n=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[3]}
    case "$unit" in
        ""|bit) awk -v n="$n" 'BEGIN{printf "%.0f", n}' ;;
        kbit) awk -v n="$n" 'BEGIN{printf "%.0f", n*1e3}' ;;
        mbit) awk -v n="$n" 'BEGIN{printf "%.0f", n*1e6}' ;;
        gbit) awk -v n="$n" 'BEGIN{printf "%.0f", n*1e9}' ;;
        kbps) awk -v n="$n" 'BEGIN{printf "%.0f", n*8e3}' ;;
        mbps) awk -v n="$n" 'BEGIN{printf "%.0f", n*8e6}' ;;
        gbps) awk -v n="$n" 'BEGIN{printf "%.0f", n*8e9}' ;;
        *) return 1 ;;
    esac
}

# Converts a delay (e.g. 100us, 1ms, 0) to seconds.
delay_s() {
    local d=${1,,}
    [[ "$d" =~ ^([0-9]+(\.[0-9]+)?)(s|ms|us|usec|msec|)$ ]] || return 1
    case "${BASH_REMATCH[3]}" in
        s|"") awk -v n="${BASH_REMATCH[1]}" 'BEGIN{printf "%.9g", n}' ;;
        ms|msec) awk -v n="${BASH_REMATCH[1]}" 'BEGIN{printf "%.9g", n/1e3}' ;;
        us|usec) awk -v n="${BASH_REMATCH[1]}" 'BEGIN{printf "%.9g", n/1e6}' ;;
    esac
}

cmd_down() {
    local ns pid
    for ns in $(owned_namespaces); do
        # Processes left inside (a rank of an interrupted run): ours by construction.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    done
    local waited=0
    for ns in $(owned_namespaces); do
        while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ $waited -lt 20 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    # Deleting a namespace destroys its veth ends (and so their peers) and their qdiscs.
    for ns in $(owned_namespaces); do ip netns del "$ns" 2>/dev/null || warn "could not delete namespace $ns"; done
    rm -f "$STATE"
    [ -z "$(owned_namespaces)" ] || die "namespaces still present: $(owned_namespaces | tr '\n' ' ')"
}

# Shapes DEV's egress to RATE inside namespace NS; with DELAY_ARG, adds netem under it.
shape() {
    local ns=$1 dev=$2 rate=$3 delay=$4 bps burst
    bps=$(rate_bps "$rate")
    # Burst: 1 ms of traffic, at least two full-size (64 KiB GSO) frames, so the shaper
    # does not throttle below RATE on a veth that hands it GSO super-packets.
    burst=$(awk -v b="$bps" 'BEGIN{x=b/8/1000; if (x < 131072) x = 131072; printf "%.0f", x}')
    ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: htb default 10
    ip netns exec "$ns" tc class add dev "$dev" parent 1: classid 1:10 htb rate "$rate" ceil "$rate" quantum 65536 \
        burst "$burst" cburst "$burst"
    if [ -n "$delay" ]; then
        ip netns exec "$ns" tc qdisc add dev "$dev" parent 1:10 handle 10: netem delay "$delay" limit 100000
    else
        ip netns exec "$ns" tc qdisc add dev "$dev" parent 1:10 handle 10: pfifo limit 10000
    fi
}

netem_available() {
    local ns=$1
    ip netns exec "$ns" ip link add qtnetemprobe type veth peer name qtnetemprobe1 2>/dev/null || return 1
    local ok=1
    ip netns exec "$ns" tc qdisc add dev qtnetemprobe root netem delay 1ms 2>/dev/null && ok=0
    ip netns exec "$ns" ip link del qtnetemprobe 2>/dev/null || true
    return $ok
}

cmd_up() {
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    local n=$1 rate=$2 delay=${3:-0}
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "N must be 1..250, got '$n'"
    rate_bps "$rate" >/dev/null || die "RATE '$rate' is not a tc rate such as 200mbit, 1gbit, 500kbit"
    delay_s "$delay" >/dev/null || die "DELAY '$delay' is not a delay such as 100us, 1ms, 0"
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces and tc)"
    command -v ip >/dev/null && command -v tc >/dev/null || die "needs iproute2 (ip, tc)"
    cmd_down
    local sw="${PREFIX}sw"
    ip netns add "$sw" || die "cannot create network namespace $sw (not permitted here?)"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add "$BRIDGE" type bridge
    ip -n "$sw" addr add "$SUBNET.254/24" dev "$BRIDGE"
    ip -n "$sw" link set "$BRIDGE" up
    local delay_applied=0 netem_delay=""
    if [ "$(delay_s "$delay")" != 0 ]; then
        if netem_available "$sw"; then
            delay_applied=1
            netem_delay=$delay
        else
            warn "this kernel has no sch_netem: DELAY $delay is NOT applied (rate limit only)"
        fi
    fi
    local k ns port
    for ((k = 0; k < n; k++)); do
        ns="${PREFIX}$k"
        port="${PREFIX}p$k"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$ns" link add "$IFACE" type veth peer name "$port" netns "$sw"
        ip -n "$sw" link set "$port" master "$BRIDGE"
        ip -n "$sw" link set "$port" up
        ip -n "$ns" addr add "$SUBNET.$((k + 1))/24" dev "$IFACE"
        ip -n "$ns" link set "$IFACE" up
        shape "$ns" "$IFACE" "$rate" "$netem_delay"
        shape "$sw" "$port" "$rate" ""
    done
    {
        echo "prefix=$PREFIX"
        echo "n=$n"
        echo "rate=$rate"
        echo "rate_bps=$(rate_bps "$rate")"
        echo "delay=$delay"
        echo "delay_s=$(delay_s "$delay")"
        echo "delay_applied=$delay_applied"
        echo "iface=$IFACE"
        echo "subnet=$SUBNET.0/24"
        echo "switch_ns=$sw"
        echo "switch_addr=$SUBNET.254"
    } >"$STATE"
    echo "netcluster: $n namespaces ${PREFIX}0..${PREFIX}$((n - 1)) on $SUBNET.0/24, $rate per link," \
         "delay $delay$([ $delay_applied = 1 ] || [ "$(delay_s "$delay")" = 0 ] || echo ' (not applied)')" >&2
}

cmd_status() {
    [ -f "$STATE" ] || { echo "netcluster: $PREFIX is down" >&2; return 1; }
    cat "$STATE"
}

cmd_run() {
    local args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
    [ "${1:-}" = "--" ] || usage
    shift
    [ $# -ge 1 ] || usage
    trap 'cmd_down' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    cmd_up "${args[@]}"
    local rc=0
    "$@" || rc=$?
    exit $rc
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; [ $# -eq 0 ] || [ $# -le 3 ] || usage; cmd_down ;;
    status) cmd_status ;;
    run) shift; cmd_run "$@" ;;
    *) usage ;;
esac
