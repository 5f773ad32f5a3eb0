#!/usr/bin/env bash
# netcluster.sh — tests of scripts/netcluster.sh:
#  1. down with nothing up, up twice, down twice: always the right set of namespaces, and
#     afterwards no namespace, no interface and no qdisc of ours anywhere (the root
#     namespace's interfaces and qdiscs are compared before and after);
#  2. a previous run's leftovers (namespaces with a process still inside) are cleared by up;
#  3. `run` tears down on a failing command and on Ctrl-C (SIGINT to the process group);
#  4. a 2-rank MPI run (tests/netcluster_bw.c, built here with mpicc) across a 100mbit
#     cluster moves its bytes over the veth links (interface counters) at a rate within
#     20% of the limit.
# Exit 0 pass, 1 fail, 77 skip (not root, or network namespaces / tc not permitted here).
set -uo pipefail
cd "$(dirname "$0")/.."
NC=scripts/netcluster.sh
export QT_NETCLUSTER_PREFIX=qtnt
tmp=$(mktemp -d /tmp/qtrain-nctest.XXXXXX)
export QT_NETCLUSTER_STATE_DIR=$tmp
cleanup() { $NC down >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "skip: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null && command -v tc >/dev/null || skip "needs iproute2"
ip netns add qtntprobe 2>/dev/null || skip "network namespaces not permitted here"
ip -n qtntprobe link add qtprobe type veth peer name qtprobe1 2>/dev/null &&
    ip netns exec qtntprobe tc qdisc add dev qtprobe root handle 1: htb 2>/dev/null
ok=$?
ip netns del qtntprobe
[ $ok = 0 ] || skip "tc htb not available"

ours() { ip netns list | awk '{print $1}' | grep -E '^qtnt([0-9]+|sw)$' | sort | tr '\n' ' '; }
root_links() { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' '; }
root_qdiscs() { tc qdisc show | sort | tr '\n' ';'; }
links0=$(root_links)
qdiscs0=$(root_qdiscs)

# ---- 1. idempotent up/down ----------------------------------------------------------------
$NC down || fail "down with nothing up failed"
[ -z "$(ours)" ] || fail "namespaces after down: $(ours)"
$NC up 3 100mbit 2>/dev/null || fail "up 3 failed"
[ "$(ours)" = "qtnt0 qtnt1 qtnt2 qtntsw " ] || fail "after up 3: '$(ours)'"
$NC up 2 100mbit 2>/dev/null || fail "second up failed"
[ "$(ours)" = "qtnt0 qtnt1 qtntsw " ] || fail "after up 2 over up 3: '$(ours)'"
$NC status | grep -x 'n=2' >/dev/null || fail "status does not say n=2"
ip netns exec qtnt0 tc qdisc show dev qteth | grep 'htb 1:' >/dev/null || fail "no htb on qtnt0's link"
ip netns exec qtntsw tc qdisc show dev qtntp1 | grep 'htb 1:' >/dev/null || fail "no htb on the switch port of rank 1"
ip netns exec qtnt0 tc class show dev qteth | grep "rate 100Mbit" >/dev/null || fail "rank 0's class is not 100Mbit"
ip -n qtnt1 addr show qteth | grep '10.213.0.2/24' >/dev/null || fail "rank 1 has no 10.213.0.2/24"
ip -o addr show | grep '10\.213\.' >/dev/null && fail "a 10.213.0.0/24 address leaked into the root namespace"
[ "$(root_links)" = "$links0" ] || fail "root namespace interfaces changed: '$links0' -> '$(root_links)'"
$NC down || fail "down failed"
$NC down || fail "second down failed"
[ -z "$(ours)" ] || fail "namespaces left after down: $(ours)"
$NC status >/dev/null 2>&1 && fail "status says up after down"
[ "$(root_links)" = "$links0" ] || fail "interfaces left in the root namespace"
[ "$(root_qdiscs)" = "$qdiscs0" ] || fail "qdiscs changed in the root namespace"
echo "ok 1: up/down idempotent, nothing left behind"

# ---- 2. leftovers of an interrupted run ------------------------------------------------------
$NC up 2 100mbit 2>/dev/null || fail "up failed"
ip netns exec qtnt1 sleep 300 &
stray=$!
sleep 0.3
ip netns pids qtnt1 | grep -x "$stray" >/dev/null || fail "test setup: the stray process is not in qtnt1"
$NC up 2 100mbit 2>/dev/null || fail "up over leftovers failed"
wait "$stray" 2>/dev/null
kill -0 "$stray" 2>/dev/null && fail "the process left in qtnt1 survived up"
[ "$(ours)" = "qtnt0 qtnt1 qtntsw " ] || fail "after up over leftovers: '$(ours)'"
[ -z "$(ip netns pids qtnt1)" ] || fail "processes in the fresh qtnt1"
$NC down
echo "ok 2: up clears a previous run's namespaces and processes"

# ---- 3. run: teardown on failure and on Ctrl-C -------------------------------------------------
$NC run 2 100mbit -- sh -c 'ip netns list | grep qtnt1 >/dev/null && exit 3' 2>/dev/null
rc=$?
[ $rc = 3 ] || fail "run did not pass the command's exit status (got $rc, want 3)"
[ -z "$(ours)" ] || fail "run left namespaces after a failing command: $(ours)"
set -m
$NC run 2 100mbit -- sleep 30 2>/dev/null &
job=$!
set +m
for _ in $(seq 50); do [ "$(ours)" = "qtnt0 qtnt1 qtntsw " ] && break; sleep 0.1; done
[ "$(ours)" = "qtnt0 qtnt1 qtntsw " ] || fail "run did not bring the cluster up"
sleep 0.3
kill -INT -- -"$job"
wait "$job"
rc=$?
[ $rc = 130 ] || fail "run after Ctrl-C exited $rc, want 130"
[ -z "$(ours)" ] || fail "Ctrl-C left namespaces: $(ours)"
echo "ok 3: run tears down on a failing command and on Ctrl-C"

# ---- 4. the rate, measured by MPI over the links ----------------------------------------------
command -v mpicc >/dev/null && command -v mpirun >/dev/null || skip "no Open MPI (mpicc, mpirun) for the rate test"
mpicc -O2 -o "$tmp/bw" tests/netcluster_bw.c || fail "cannot build tests/netcluster_bw.c"
$NC up 2 100mbit 2>/dev/null || fail "up failed"
tx() { ip netns exec "$1" cat /sys/class/net/qteth/statistics/tx_bytes; }
a0=$(tx qtnt0)
b0=$(tx qtnt1)
out=$(ip netns exec qtntsw env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    PMIX_MCA_ptl_tcp_remote_connections=1 PMIX_MCA_ptl_tcp_if_include=10.213.0.0/24 \
    timeout 60 mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self \
    --mca btl_tcp_if_include 10.213.0.0/24 --mca oob_tcp_if_include 10.213.0.0/24 \
    -np 1 ip netns exec qtnt0 "$tmp/bw" 12 3 4096 : -np 1 ip netns exec qtnt1 "$tmp/bw" 12 3 4096 2>&1)
rc=$?
a1=$(tx qtnt0)
b1=$(tx qtnt1)
[ $rc = 0 ] || fail "MPI run across the namespaces failed: $out"
line=$(echo "$out" | grep '^bw:')
rate=$(echo "$line" | sed -n 's/.*mbit_s=\([0-9.]*\).*/\1/p')
[ -n "$rate" ] || fail "no rate in: $out"
sent=$((a1 - a0))
back=$((b1 - b0))
echo "   $line; veth tx rank0 $sent B, rank1 $back B"
payload=$((3 * 12 * 1048576))
[ $sent -ge $payload ] || fail "rank 0's veth sent $sent B < the $payload B payload: traffic bypassed the link"
[ $back -lt $((payload / 10)) ] || fail "rank 1 sent $back B: more than acknowledgements"
awk -v r="$rate" 'BEGIN{exit !(r >= 80 && r <= 120)}' || fail "measured $rate Mbit/s, not within 20% of 100"
$NC down
[ -z "$(ours)" ] || fail "namespaces left: $(ours)"
echo "ok 4: 2-rank MPI transfer at $rate Mbit/s over a 100mbit link (within 20%), bytes on the veths"
echo "PASS"
