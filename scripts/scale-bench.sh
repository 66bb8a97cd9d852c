#!/usr/bin/env bash
# Many sandboxes on one daemon, measured (RELIABILITY.md, "Many sandboxes"; the `many` case of
# scripts/bench.sh): N sandboxes on one network in a fresh state dir, made through the CLI one
# after another, in blocks; per block the wall time and the daemon's CPU time per create, its
# RSS and the kernel memory per sandbox (MemAvailable). Then, at N: how long `sandbox ls`,
# `network inspect`, `stats` and a refused `network rm` take; a name resolved by the gateway's
# DNS; CLIENTS clients creating at once (per-create time, duplicate addresses); `kill -9` of the
# daemon with a TCP stream running between two sandboxes (the first command's time, the stream's
# bytes and checksum at both ends); `system reset` and what it leaves behind.
#
#   scripts/scale-bench.sh [N [BLOCK [BIN]]]     # defaults: 1000 250 target/release/tapnet
#
# Environment: THREADS (datapath workers, 1: one TAP queue fd per sandbox, so 10,000 fit under
# a hard RLIMIT_NOFILE of 20,000), CLIENTS (16), PER_CLIENT (creates per client, 10),
# AS_USER (run rootless as this user, e.g. tapnet-test: the daemon, the CLI and the traffic),
# STATE_FS=tmpfs (the state dir on a tmpfs of its own, as the default /run/tapnet is on a
# usual host; otherwise under /tmp, whatever file system that is: each sandbox makes six
# inodes there, and ext4's inode allocation grows with the directory's size).
# Root to start (it reads the daemon's /proc entries and, with AS_USER, switches user).
# Removes everything it made at the end, also on failure.
set -euo pipefail
N=${1:-1000}
BLOCK=${2:-250}
BIN=${3:-"$(dirname "$0")/../target/release/tapnet"}
BIN=$(realpath "$BIN")
THREADS=${THREADS:-1}
CLIENTS=${CLIENTS:-16}
PER_CLIENT=${PER_CLIENT:-10}
TRAFFIC=$(realpath "$(dirname "$0")/../tests/support/traffic.py")
WORK=$(mktemp -d /tmp/tapnet-scale-bench.XXXXXX)
if [ "${STATE_FS:-}" = tmpfs ]; then
    mount -t tmpfs -o size=4g tapnet-scale-bench "$WORK"
fi
chmod 755 "$WORK"
S=$WORK/state

if [ -n "${AS_USER:-}" ]; then
    uid=$(id -u "$AS_USER")
    gid=$(id -g "$AS_USER")
    # The binary and the traffic script where the user may run them; its runtime dir.
    cp "$BIN" "$TRAFFIC" "$WORK/"
    BIN=$WORK/tapnet
    TRAFFIC=$WORK/traffic.py
    mkdir -p "$WORK/run"
    chown -R "$uid:$gid" "$WORK/run"
    # In a directory of the user's, which `system reset` may then remove.
    S=$WORK/run/state
    T() {
        setpriv --reuid="$uid" --regid="$gid" --clear-groups -- env XDG_RUNTIME_DIR="$WORK/run" \
            HOME="$WORK/run" "$BIN" --state-dir "$S" "$@"
    }
    mkdir -p "$S"
    chown "$uid:$gid" "$S"
    chmod 700 "$S"
else
    T() { "$BIN" --state-dir "$S" "$@"; }
fi
cleanup() {
    T --no-autostart system reset >/dev/null 2>&1 || true
    if [ "${STATE_FS:-}" = tmpfs ]; then
        umount -l "$WORK" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
daemon_pid() { cat "$S/tapnet.pid"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(daemon_pid)/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$(daemon_pid)/status"; }
avail_kib() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }
tick=$(getconf CLK_TCK)

# Namespaces and TAPs of an earlier run are still being freed by the kernel for a while: the
# figures below need a quiet machine.
idle() { vmstat 1 2 | awk 'END {exit !($15 >= 90)}'; }
for _ in $(seq 60); do idle && break; done
T daemon --datapath-threads "$THREADS" >"$WORK/daemon.log" 2>&1 &
until T --no-autostart sandbox ls >/dev/null 2>&1; do sleep 0.1; done
T network create big --subnet 10.90.0.0/16 >/dev/null
echo "scale-bench: $N sandboxes, blocks of $BLOCK, $THREADS datapath thread(s)${AS_USER:+, rootless as $AS_USER}, state dir on $(stat -f -c %T "$WORK"); $(uname -r), $(nproc) cores"
echo "| sandboxes | wall per create (ms) | daemon CPU per create (ms) | daemon RSS (MiB) | kernel memory per sandbox (KiB) | load |"
echo "|---|---|---|---|---|---|"
made=0
avail0=$(avail_kib)
first=$BLOCK
[ "$N" -gt 100 ] && [ "$BLOCK" -gt 100 ] && first=100
size=$first
while [ "$made" -lt "$N" ]; do
    [ $((made + size)) -gt "$N" ] && size=$((N - made))
    c0=$(cpu_ticks)
    t0=$(now)
    for i in $(seq $((made + 1)) $((made + size))); do
        T sandbox create "s$i" --net big >/dev/null
    done
    wall=$(($(now) - t0))
    c1=$(cpu_ticks)
    made=$((made + size))
    echo "| $made | $(echo "scale=1; $wall / 1000000 / $size" | bc) | $(echo "scale=1; ($c1 - $c0) * 1000 / $tick / $size" | bc) | $(rss_mib) | $(((avail0 - $(avail_kib)) / made)) | $(cut -d' ' -f1 /proc/loadavg) |"
    size=$BLOCK
    [ "$made" -eq "$first" ] && size=$((BLOCK - first)) && [ "$size" -le 0 ] && size=$BLOCK
done

timed() {
    local t0 rc=0
    t0=$(now)
    "$@" >"$WORK/out" 2>&1 || rc=$?
    echo "$(ms "$t0") ms (exit $rc)"
}
echo
echo "at $N sandboxes:"
echo "- sandbox ls: $(timed T sandbox ls), $(($(wc -l <"$WORK/out") - 1)) rows"
echo "- network inspect big: $(timed T network inspect big)"
echo "- stats: $(timed T stats)"
echo "- network rm big (refused, in use): $(timed T network rm big): $(head -c 100 "$WORK/out")"
echo "- DNS: s1 resolves s$N: $(timed T exec s1 getent hosts "s$N"): $(tr -s ' \n' ' ' <"$WORK/out")"

# CLIENTS clients creating at once.
t0=$(now)
c0=$(cpu_ticks)
clients=()
for c in $(seq "$CLIENTS"); do
    (for i in $(seq "$PER_CLIENT"); do T sandbox create "c$c-$i" --net big >/dev/null; done) &
    clients+=($!)
done
wait "${clients[@]}"
wall=$(($(now) - t0))
c1=$(cpu_ticks)
total=$((CLIENTS * PER_CLIENT))
T sandbox ls --format json >"$WORK/ls.json"
dups=$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
ips = [i["ipv4"] for r in rows for i in r.get("interfaces", []) if i.get("ipv4")]
print(len(ips) - len(set(ips)))' "$WORK/ls.json")
echo "- $CLIENTS clients x $PER_CLIENT creates at once: $(echo "scale=1; $wall / 1000000 / $total" | bc) ms wall per create (all clients together), $(echo "scale=1; ($c1 - $c0) * 1000 / $tick / $total" | bc) ms daemon CPU per create; duplicate addresses: $dups"

# kill -9 with a TCP stream running from s1 to s2.
b_ip=$(T sandbox inspect s2 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv4"].split("/")[0])')
T exec s2 python3 "$TRAFFIC" tcp-serve 0.0.0.0 5001 >"$WORK/served" 2>&1 &
server=$!
sleep 0.5
T exec s1 python3 "$TRAFFIC" tcp-trickle "$b_ip" 5001 4000000 6 >"$WORK/sent" 2>&1 &
sender=$!
sleep 1.5
t0=$(now)
kill -9 "$(daemon_pid)"
# The next daemon with the same options (an autostarted one would poll another number of TAP
# queues and so make every TAP anew).
T daemon --datapath-threads "$THREADS" >>"$WORK/daemon.log" 2>&1 &
tries=0
until T --no-autostart sandbox ls >/dev/null 2>&1; do tries=$((tries + 1)); sleep 0.01; done
echo "- kill -9 during a TCP stream: the next daemon started at once answered sandbox ls after $(ms "$t0") ms ($tries refused tries before)"
sender_rc=0
wait "$sender" || sender_rc=$?
wait "$server" || true
echo "  the stream: sender exit $sender_rc, sent '$(cat "$WORK/sent")', received '$(cat "$WORK/served")'"

keeper=$(cat "$S/fdkeeper.pid" 2>/dev/null || echo 0)
t0=$(now)
T system reset >/dev/null
echo "- system reset of $((N + total)) sandboxes: the command took $(ms "$t0") ms"
# The keeper closes the TAPs' last fds as it exits, each an RCU grace period of the kernel's.
while [ "$keeper" != 0 ] && [ -e "/proc/$keeper" ] && ! grep -q '^State:.*Z' "/proc/$keeper/status" 2>/dev/null; do
    sleep 0.1
done
echo "  and the fd keeper had closed the last TAP $(ms "$t0") ms after it began"
left_mounts=$(grep -c "$S" /proc/self/mountinfo || true)
left_procs=$(pgrep -f -- "--state-dir $S" | wc -l || true)
left_keeper=$([ "$keeper" != 0 ] && [ -e "/proc/$keeper" ] && ! grep -q '^State:.*Z' "/proc/$keeper/status" && echo 1 || echo 0)
echo "- left behind: $left_mounts mounts under the state dir, $left_procs tapnet processes, $left_keeper fd keeper, state dir: $(ls -A "$S" 2>/dev/null | tr '\n' ' ')"
