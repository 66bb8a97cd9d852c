#!/usr/bin/env bash
# Figures of RELIABILITY.md for what one sandbox can do to the others and to the daemon: a
# source-MAC flood while two neighbours ping and stream TCP, and DNS / UDP NAT hammering while
# the daemon's fds and threads are sampled from /proc. Must run as root. Everything happens in
# a throwaway state dir and namespaces the script makes; NAT may reach the host's loopback only.
#
#   scripts/reliability.sh mac-flood [MACS]          (default 1000000 distinct source MACs, cycled
#                                                     for 12 s; with port security on, then off)
#   scripts/reliability.sh dns-hammer [RATE] [SECS]  (default 1000 queries/s for 30 s)
#   scripts/reliability.sh udp-hammer [COUNT]        (default 20000 datagrams, a new port each)
#
# TAPNET: the binary (default target/release/tapnet, built if missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HAMMER=$REPO/tests/support/hammer.py
TAPNET=${TAPNET:-$REPO/target/release/tapnet}
[ -x "$TAPNET" ] || (cd "$REPO" && cargo build --release --locked)
STATE=$(mktemp -d /tmp/tapnet-reliability-XXXXXX)
export TAPNET_NAT_ALLOW=127.0.0.0/8
PIDS=()

tn() { "$TAPNET" --state-dir "$STATE" "$@"; }
hammer() { local sb=$1; shift; tn exec "$sb" -- python3 "$HAMMER" "$@"; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    tn --no-autostart system reset >/dev/null 2>&1 || true
    rm -rf "$STATE"
}
trap cleanup EXIT

daemon_pid() { cat "$STATE/tapnet.pid"; }
fds() { ls "/proc/$(daemon_pid)/fd" | wc -l; }
threads() { ls "/proc/$(daemon_pid)/task" | wc -l; }

# Sample fds and threads every 0.2 s until the file $1 exists; print "max_fds max_threads".
sample_until() {
    local stop=$1 max_f=0 max_t=0 f t
    while [ ! -e "$stop" ]; do
        f=$(fds); t=$(threads)
        [ "$f" -gt "$max_f" ] && max_f=$f
        [ "$t" -gt "$max_t" ] && max_t=$t
        sleep 0.2
    done
    echo "$max_f $max_t"
}

gbits() { python3 -c "import sys; b, s = map(float, sys.argv[1:3]); print(round(b * 8 / s / 1e9, 2))" "$@"; }

# Ping and a TCP stream between b (.3) and c (.4) for SECS; prints a summary line.
neighbours() {
    local net=$1 secs=$2 label=$3 out
    tn exec c -- python3 "$HAMMER" tcp-sink "$net.4" 5001 > "$STATE/sink.out" &
    PIDS+=($!)
    sleep 0.5
    hammer b ping "$net.4" $((secs * 10)) 0.1 > "$STATE/ping.out" &
    local ping=$!
    out=$(hammer b tcp-stream "$net.4" 5001 "$secs")
    wait "$ping"
    read -r sent received rtt < "$STATE/ping.out"
    read -r bytes took <<< "$out"
    echo "$label: ping b->c $received/$sent answered (loss $(( (sent - received) * 100 / sent ))%), avg rtt ${rtt} ms; TCP b->c $(gbits "$bytes" "$took") Gbit/s over ${took} s"
}

mac_flood() {
    local frames=${1:-1000000} security net
    for security in on off; do
        net=10.90.0
        tn network create flood --subnet "$net.0/24" --opt "port_security=$security" >/dev/null
        for s in a b c; do tn sandbox create "$s" --net flood >/dev/null; done
        echo "== port_security=$security, $frames random source MACs from a"
        neighbours "$net" 5 "  baseline"
        # The same FRAMES distinct MACs, cycled for 12 s: the neighbours measure 10 s inside it.
        hammer a mac-flood eth0 "$frames" 12 > "$STATE/flood.out" &
        local flood=$!
        sleep 1
        # A station that arrives during the flood (d, .5), and what the flooder overhears of
        # the others' IPv4 meanwhile: their unicast, were it flooded.
        tn sandbox create d --net flood >/dev/null
        hammer a raw-count eth0 0800 11 > "$STATE/overheard.out" &
        local overheard=$!
        hammer b ping "$net.5" 50 0.2 > "$STATE/late.out" &
        local late=$!
        neighbours "$net" 10 "  during the flood"
        wait "$flood" "$overheard" "$late"
        read -r lsent lreceived lrtt < "$STATE/late.out"
        echo "  late station d: b->d ping $lreceived/$lsent answered; the flooder a overheard $(tail -1 "$STATE/overheard.out") IPv4 frames of b, c and d"
        read -r sent took < "$STATE/flood.out"
        echo "  flood: $sent frames ($frames distinct source MACs) in $took s ($(python3 -c "print(int($sent / $took))") frames/s offered)"
        tn stats flood --format json | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    if r["port"] == "a/eth0":
        print("  a/eth0: rx_packets %d rx_spoofed %s learn_refused %s" % (r["rx_packets"], r.get("rx_spoofed", "-"), r.get("learn_refused", "-")))'
        echo "  MAC table: $(tn fdb flood --format json | python3 -c '
import json, sys, collections
c = collections.Counter(r["port"] for r in json.load(sys.stdin))
print(", ".join("%s %d" % kv for kv in sorted(c.items())))')"
        for s in a b c d; do tn sandbox rm "$s" >/dev/null; done
        tn network rm flood >/dev/null
    done
}

# A UDP socket on the host's loopback that never answers: $1 gets its port.
silent_udp() {
    python3 -c 'import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True); time.sleep(100000)' > "$STATE/silent.$1" &
    PIDS+=($!)
    while [ ! -s "$STATE/silent.$1" ]; do sleep 0.05; done
}

dns_hammer() {
    local rate=${1:-1000} secs=${2:-30}
    # Forwarded names go to an upstream that never answers: the worst case for forwarders.
    silent_udp upstream
    TAPNET_DNS_UPSTREAM=127.0.0.1:$(cat "$STATE/silent.upstream") tn daemon 2>/dev/null &
    PIDS+=($!)
    while [ ! -S "$STATE/tapnet.sock" ]; do sleep 0.05; done
    tn network create dns --subnet 10.91.0.0/24 >/dev/null
    tn sandbox create h --net dns >/dev/null
    tn sandbox create q --net dns >/dev/null
    echo "== $rate DNS queries/s for $secs s from h, each from a new source port, for a name forwarded to a silent upstream"
    echo "  daemon before: $(fds) fds, $(threads) threads"
    rm -f "$STATE/stop"
    sample_until "$STATE/stop" > "$STATE/sample.out" &
    local sampler=$!
    hammer h dns-rate 10.91.0.1 "$rate" "$secs" > "$STATE/rate.out" &
    local burst=$!
    local ok=0 tries=0
    while kill -0 "$burst" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$(hammer q dns-burst 10.91.0.1 1 2 h)" = "1 1" ] && ok=$((ok + 1))
        sleep 1
    done
    touch "$STATE/stop"; wait "$sampler"
    read -r max_f max_t < "$STATE/sample.out"
    echo "  sent $(cat "$STATE/rate.out") queries; daemon max during: $max_f fds, $max_t threads"
    echo "  neighbour q resolving a local name meanwhile: $ok of $tries answered"
    echo "  NAT flows after: $(tn network inspect dns --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nat"])')"
}

udp_hammer() {
    local count=${1:-20000}
    silent_udp sink
    local port
    port=$(cat "$STATE/silent.sink")
    tn network create udp --subnet 10.92.0.0/24 --opt host_loopback=on >/dev/null
    tn sandbox create h --net udp >/dev/null
    tn sandbox create q --net udp >/dev/null
    echo "== $count datagrams from h to the host's loopback, each from a new source port"
    echo "  daemon before: $(fds) fds, $(threads) threads"
    rm -f "$STATE/stop"
    sample_until "$STATE/stop" > "$STATE/sample.out" &
    local sampler=$!
    local start end
    start=$(date +%s.%N)
    hammer h udp-burst 10.92.0.1 "$port" "$count" >/dev/null
    end=$(date +%s.%N)
    # The neighbour's UDP still goes out and back (an echo server on the host).
    python3 "$REPO/tests/support/traffic.py" udp-echo 127.0.0.1 0 20 > "$STATE/echo.out" &
    PIDS+=($!)
    while [ ! -s "$STATE/echo.out" ]; do sleep 0.05; done
    local echo_port
    echo_port=$(awk '{print $2}' "$STATE/echo.out")
    local echoed
    echoed=$(tn exec q -- python3 "$REPO/tests/support/traffic.py" udp-ping 10.92.0.1 "$echo_port" 20)
    touch "$STATE/stop"; wait "$sampler"
    read -r max_f max_t < "$STATE/sample.out"
    echo "  sent in $(python3 -c "print(round($end - $start, 2))") s; daemon max during: $max_f fds, $max_t threads"
    echo "  neighbour q: $echoed of 20 datagrams echoed by the host"
    echo "  NAT flows after: $(tn network inspect udp --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nat"])')"
}

case ${1:-} in
    mac-flood) shift; mac_flood "$@" ;;
    dns-hammer) shift; dns_hammer "$@" ;;
    udp-hammer) shift; udp_hammer "$@" ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
esac
