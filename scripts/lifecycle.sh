#!/usr/bin/env bash
# Figures of RELIABILITY.md for the daemon's life: restart after kill -9, many sandboxes,
# many clients at once, and a soak with churn. Must run as root. Everything happens in a
# throwaway state dir and in namespaces the script makes; NAT may reach the host's loopback only.
#
#   scripts/lifecycle.sh restart [ROUNDS]        kill -9 with a TCP stream open; time from the
#                                                first command to traffic again (default 5)
#   scripts/lifecycle.sh scale [COUNT]           COUNT sandboxes on one network (default 1000),
#                                                each pings the gateway; create time per hundred,
#                                                daemon RSS, fds and threads
#   scripts/lifecycle.sh churn [CLIENTS] [EACH]  CLIENTS clients at once (default 50), each
#                                                creating and removing EACH sandboxes (default 4);
#                                                duplicate addresses, leaks
#   scripts/lifecycle.sh soak [SECONDS]          traffic and sandbox churn for SECONDS (default
#                                                180); RSS, fds and threads every 10 s
#
# TAPNET: the binary (default target/release/tapnet, built if missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRAFFIC=$REPO/tests/support/traffic.py
TAPNET=${TAPNET:-$REPO/target/release/tapnet}
[ -x "$TAPNET" ] || (cd "$REPO" && cargo build --release --locked)
STATE=$(mktemp -d /tmp/tapnet-lifecycle-XXXXXX)
export TAPNET_NAT_ALLOW=127.0.0.0/8
PIDS=()

tn() { "$TAPNET" --state-dir "$STATE" "$@"; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    tn --no-autostart system reset >/dev/null 2>&1 || true
    rm -rf "$STATE"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$1" "$(now)"; }
daemon_pid() { cat "$STATE/tapnet.pid"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$(daemon_pid)/status"; }
fds() { ls "/proc/$(daemon_pid)/fd" | wc -l; }
threads() { ls "/proc/$(daemon_pid)/task" | wc -l; }
mounts() { grep -c "$STATE" /proc/self/mountinfo || true; }

restart() {
    local rounds=${1:-5} i t0 ms
    tn network create n >/dev/null
    tn sandbox create a --net n >/dev/null
    tn sandbox create b --net n >/dev/null
    tn exec b -- python3 "$TRAFFIC" tcp-serve 0.0.0.0 5001 > "$STATE/served" &
    PIDS+=($!)
    sleep 0.5
    # About 10 s of trickle: every restart happens inside this one connection.
    tn exec a -- python3 "$TRAFFIC" tcp-trickle 172.18.0.3 5001 20000000 $((rounds * 2 + 2)) > "$STATE/sent" &
    local sender=$!
    sleep 1
    for i in $(seq 1 "$rounds"); do
        kill -9 "$(daemon_pid)"
        t0=$(now)
        # The first command after the kill: it must start a new daemon, which restores the
        # sandboxes; then the first ping that gets through.
        until tn exec a -- ping -c1 -W1 -q 172.18.0.3 >/dev/null 2>&1; do :; done
        ms=$(since "$t0")
        echo "round $i: traffic again ${ms} ms after the first command"
        sleep 1
    done
    wait "$sender"
    sleep 0.5
    if [ "$(cat "$STATE/sent")" = "$(tail -n1 "$STATE/served")" ]; then
        echo "TCP connection across $rounds restarts: survived, $(cut -d' ' -f1 "$STATE/sent") bytes, SHA-256 equal"
    else
        echo "TCP connection across $rounds restarts: BROKEN (sent '$(cat "$STATE/sent")', served '$(tail -n1 "$STATE/served")')"
    fi
}

scale() {
    local count=${1:-1000} i t0 tb ms failed=0
    tn network create big --subnet 10.77.0.0/16 >/dev/null
    echo "sandboxes  ms-per-create(last 100)  rss-MiB  fds  threads"
    tb=$(now)
    for i in $(seq 1 "$count"); do
        tn sandbox create "s$i" --net big >/dev/null
        if [ $((i % 100)) -eq 0 ]; then
            ms=$(since "$tb")
            echo "$i  $((ms / 100))  $(( $(rss_kib) / 1024 ))  $(fds)  $(threads)"
            tb=$(now)
        fi
    done
    t0=$(now)
    for i in $(seq 1 "$count"); do
        tn exec "s$i" -- ping -c1 -W2 -q 10.77.0.1 >/dev/null 2>&1 || failed=$((failed + 1))
    done
    echo "every sandbox pinged the gateway: $((count - failed)) of $count answered, $(since "$t0") ms in all"
    t0=$(now)
    for i in $(seq 1 "$count"); do tn sandbox rm "s$i" >/dev/null; done
    echo "removed $count sandboxes in $(since "$t0") ms; daemon now $(( $(rss_kib) / 1024 )) MiB, $(fds) fds, $(threads) threads"
}

churn() {
    local clients=${1:-50} each=${2:-4} c f0 t0 m0 dup
    tn network create n --subnet 10.78.0.0/16 >/dev/null
    f0=$(fds); t0=$(threads); m0=$(mounts)
    for c in $(seq 1 "$clients"); do
        (
            for i in $(seq 1 "$each"); do
                tn sandbox create "c$c-$i" --net n >/dev/null
            done
            tn sandbox ls --format json > "$STATE/ls-$c.json"
            for i in $(seq 1 "$each"); do
                tn sandbox rm "c$c-$i" >/dev/null
            done
        ) &
    done
    wait
    dup=$(python3 - "$STATE" <<'PY'
import glob, json, sys, collections
seen = collections.Counter()
for f in glob.glob(sys.argv[1] + "/ls-*.json"):
    views = json.load(open(f))
    # Each snapshot is one moment: an address twice in it is a duplicate.
    addrs = [i["ipv4"] for v in views for i in v["interfaces"] if i["ipv4"]]
    seen[len(addrs) - len(set(addrs))] += 1
print(sum(k * v for k, v in seen.items()))
PY
)
    echo "$clients clients x $each creates and removes: duplicate addresses seen in any listing: $dup"
    echo "left: $(tn sandbox ls --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') sandboxes; fds $f0 -> $(fds), threads $t0 -> $(threads), mounts under the state dir $m0 -> $(mounts)"
}

soak() {
    local secs=${1:-180} start i=0
    tn network create n >/dev/null
    tn sandbox create a --net n >/dev/null
    tn sandbox create b --net n >/dev/null
    echo "second  rss-KiB  fds  threads  sandboxes"
    start=$(date +%s)
    while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
        tn exec b -- python3 "$TRAFFIC" tcp-serve 0.0.0.0 5001 >/dev/null &
        sleep 0.3
        tn exec a -- python3 "$TRAFFIC" tcp-send 172.18.0.3 5001 $((32 << 20)) >/dev/null
        wait
        tn sandbox create "x$i" --net n >/dev/null
        tn exec "x$i" -- ping -c1 -W1 -q 172.18.0.1 >/dev/null || true
        tn sandbox rm "x$i" >/dev/null
        i=$((i + 1))
        if [ $((i % 10)) -eq 0 ]; then
            echo "$(( $(date +%s) - start ))  $(rss_kib)  $(fds)  $(threads)  $(tn sandbox ls --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
        fi
    done
    echo "soak: $i rounds of a 32 MiB transfer and a sandbox created, pinged and removed"
}

case "${1:-}" in
    restart) shift; restart "$@" ;;
    scale) shift; scale "$@" ;;
    churn) shift; churn "$@" ;;
    soak) shift; soak "$@" ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
esac
