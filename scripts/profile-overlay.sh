#!/usr/bin/env bash
# Where the time goes while TCP (iperf3, STREAMS parallel streams) crosses an overlay network
# between two tapnet daemons on this machine (two "hosts", VTEPs on 127.77.0.2 and 127.77.0.3,
# one sandbox each): `perf record -a` (cpu-clock) for SECS seconds in the middle of the
# transfer, then the share of all samples by thread and the sending iperf3's copy into its
# socket (`_copy_from_iter` under `tcp_sendmsg`); and, with bpftrace, the datagrams each of
# the receiving daemon's workers took from its socket of the VTEP's SO_REUSEPORT group, which
# shows how the kernel's hash placed the flows. Root; installs linux-perf, bpftrace and iperf3
# if missing. BENCHMARKS.md ("The final runs, and the four-stream overlay taken apart") was
# measured this way.
#
#   scripts/profile-overlay.sh [STREAMS] [SECS] [-- extra daemon args]
#
# Environment: TAPNET (binary; default: cargo build --release), IPERF_ARGS (more client
# arguments, e.g. "-w 256K" to cap the window).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STREAMS=${1:-4}
SECS=${2:-3}
shift 2 || shift $#
[ "${1:-}" != "--" ] || shift
# shellcheck source=scripts/profile/need.sh
. "$REPO/scripts/profile/need.sh"
need_root "perf -a, bpftrace and namespaces"
need_tools perf:linux-perf bpftrace:bpftrace iperf3:iperf3
need_tracefs
need_tapnet

DIR=$(mktemp -d /tmp/tnprofov.XXXXXX)
PIDS=()
cleanup() {
    local host
    for host in 1 2; do
        "$TAPNET" --state-dir "$DIR/$host" system reset >/dev/null 2>&1 || true
    done
    [ ${#PIDS[@]} -eq 0 ] || kill "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# Two daemons, each its own state dir: the two hosts.
for host in 1 2; do
    mkdir -p "$DIR/$host"
    "$TAPNET" --state-dir "$DIR/$host" daemon --offload on "$@" >"$DIR/daemon$host.log" 2>&1 &
    PIDS+=($!)
done
for host in 1 2; do
    for _ in $(seq 100); do [ -S "$DIR/$host/tapnet.sock" ] && break; sleep 0.1; done
done
# shellcheck source=scripts/profile/overlay-pair.sh
. "$REPO/scripts/profile/overlay-pair.sh"
overlay_pair "$DIR/1" "$DIR/2" profov
B_IP=$("$TAPNET" --state-dir "$DIR/2" sandbox inspect b --format json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv4"].split("/")[0])')
RECEIVER=${PIDS[1]}

nsenter --net="$DIR/2/netns/b" iperf3 -s -1 -p 5398 >/dev/null 2>&1 &
sleep 0.5
# shellcheck disable=SC2086
nsenter --net="$DIR/1/netns/a" iperf3 -c "$B_IP" -p 5398 -P "$STREAMS" -t $((SECS + 4)) \
    ${IPERF_ARGS:-} -J >"$DIR/iperf.json" &
IPERF=$!
sleep 2
# Datagrams per receiving thread: recvmmsg's result, summed by thread id.
timeout -s INT $((SECS + 1)) bpftrace -q -e "tracepoint:syscalls:sys_exit_recvmmsg
    /(pid == ${PIDS[0]} || pid == $RECEIVER) && args->ret > 0/ { @[tid] = sum(args->ret); }" \
    >"$DIR/bpf.out" 2>&1 &
BPF=$!
perf record -q -F 1999 -e cpu-clock -a -g -o "$DIR/perf.data" -- sleep "$SECS" >/dev/null 2>&1
wait "$BPF" || true
wait "$IPERF"

echo "# tapnet overlay TCP profile: $STREAMS stream(s), $SECS s of perf record -a," \
    "iperf3 args: ${IPERF_ARGS:-(none)}, daemon args: ${*:-(none)}"
python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["end"]
print("# %.2f Gbit/s, %d retransmits" % (e["sum_received"]["bits_per_second"] / 1e9,
                                        e["sum_sent"].get("retransmits", 0)))' "$DIR/iperf.json"
# By thread, each of the daemons' threads named by its daemon.
perf report -i "$DIR/perf.data" --no-children --sort pid --stdio -g none 2>/dev/null |
    awk '/%/ && $1+0 >= 1 {print $1, $2}' | while read -r share thread; do
        tid=${thread%%:*} who=""
        [ ! -d "/proc/${PIDS[0]}/task/$tid" ] || who="sending daemon, "
        [ ! -d "/proc/$RECEIVER/task/$tid" ] || who="receiving daemon, "
        printf 'share of all samples: %-8s %s%s\n' "$share" "$who" "${thread#*:}"
    done
# Samples whose innermost frame is _copy_from_iter called from tcp_sendmsg: the sending
# iperf3 copying into its socket.
perf script -i "$DIR/perf.data" -F comm,ip,sym 2>/dev/null | python3 -c '
import sys
total = hits = 0
for sample in sys.stdin.read().split("\n\n"):
    lines = sample.strip().splitlines()
    if len(lines) < 2:
        continue
    total += 1
    frames = [l.split()[-1] for l in lines[1:] if l.split()]
    if frames[0] == "_copy_from_iter" and "tcp_sendmsg" in frames:
        hits += 1
if total:
    print(f"the client copying into its socket (_copy_from_iter under tcp_sendmsg): "
          f"{100 * hits / total:.1f} % of all samples")
'
# Datagrams from the VTEP sockets per worker: the data at the receiving daemon, the ACKs at
# the sending one.
for tid in $(grep -o '^@\[[0-9]*\]' "$DIR/bpf.out" | tr -dc '0-9\n'); do
    for who in "sending daemon:${PIDS[0]}" "receiving daemon:$RECEIVER"; do
        [ -d "/proc/${who#*:}/task/$tid" ] || continue
        echo "${who%:*}, $(cat "/proc/${who#*:}/task/$tid/comm"):" \
            "$(sed -n "s/^@\[$tid\]: //p" "$DIR/bpf.out") datagrams received"
    done
done
