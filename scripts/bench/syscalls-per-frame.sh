#!/usr/bin/env bash
# System calls of a tapnet daemon per forwarded frame, during a UDP 64 B flood between two
# sandboxes: `perf stat -e raw_syscalls:sys_enter --per-thread` on the daemon for 3 s, frames
# from `tapnet stats` (rx_packets of every port) just before and after; a bpftrace pass after it
# breaks the calls down by thread and number. Root; nothing else should load the machine:
#
#   scripts/bench/syscalls-per-frame.sh epoll|uring
#
# TAPNET: the binary (default target/release/tapnet). The frame count spans perf's start and
# stop too, so per-frame figures come out a few per cent low, alike for both modes.
set -euo pipefail
MODE=${1:?usage: syscalls-per-frame.sh epoll|uring}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=${TAPNET:-$REPO/target/release/tapnet}
S=$(mktemp -d /tmp/tapnet-sc.XXXXXX)
export TAPNET_STATE_DIR=$S/state
"$T" --state-dir "$S/state" daemon --datapath-io "$MODE" >"$S/daemon.log" 2>&1 &
DPID=$!
cleanup() {
    timeout 30 "$T" --no-autostart system reset >/dev/null 2>&1 || kill "$DPID" 2>/dev/null || true
    rm -rf "$S"
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$S/state/tapnet.sock" ] && break; sleep 0.1; done
"$T" network create sc >/dev/null
"$T" sandbox create a --net sc >/dev/null
"$T" sandbox create b --net sc >/dev/null
IPB=$("$T" sandbox inspect b --format json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv4"].split("/")[0])')
nsenter --net="$S/state/netns/b" iperf3 -s -1 -p 5301 >/dev/null 2>&1 &
sleep 0.5
nsenter --net="$S/state/netns/a" iperf3 -c "$IPB" -p 5301 -u -b 0 -l 64 -t 8 >"$S/iperf" 2>&1 &
IPERF=$!
sleep 2
frames() {
    "$T" stats --format json | python3 -c '
import json, sys
print(sum(r.get("stats", r)["rx_packets"] for r in json.load(sys.stdin)))'
}
ticks() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
F0=$(frames) C0=$(ticks)
perf stat -x, -e raw_syscalls:sys_enter --per-thread -p "$DPID" -- sleep 3 2>"$S/perf"
C1=$(ticks) F1=$(frames)
timeout -s INT 3 bpftrace -q -e "tracepoint:raw_syscalls:sys_enter /pid == $DPID/ { @[comm, args->id] = count(); }" \
    >"$S/bt" 2>&1 || true
wait "$IPERF" || true
grep "datapath I/O" "$S/daemon.log" || true
python3 - "$S/perf" "$((F1 - F0))" "$((C1 - C0))" "$(getconf CLK_TCK)" <<'PY'
import sys
calls = dp = 0
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[1].isdigit():
        calls += int(f[1])
        dp += int(f[1]) if f[0].startswith("datapath") else 0
frames, ticks, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"frames {frames} ({frames / 3 / 1000:.0f} k/s); system calls: datapath threads {dp}, "
      f"whole daemon {calls}; per frame {dp / max(frames, 1):.3f} (datapath), "
      f"{calls / max(frames, 1):.3f} (daemon); daemon CPU {ticks / hz:.2f} s, "
      f"{ticks / hz / max(frames, 1) * 1e6:.2f} µs a frame")
PY
echo "by thread and syscall number (bpftrace, 3 s):"
grep datapath "$S/bt" | sort -t: -k2 -nr | head -6
grep -E "VmRSS|VmHWM" "/proc/$DPID/status" | tr -s ' \t\n' ' '; echo
tail -4 "$S/iperf" | head -2
