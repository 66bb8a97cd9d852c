#!/usr/bin/env bash
# Where the CPU goes while one TCP stream (iperf3, STREAMS parallel streams) runs between two
# tapnet sandboxes: `perf record -a` (cpu-clock, so it works without hardware counters) for
# SECS seconds in the middle of the transfer, then the share of all samples by thread, and of
# the datapath threads' samples by kind of work: copying, checksums, the receiving TCP/IP
# stack (which runs inside the worker's `write`), tun itself, system call entry and exit,
# scheduling, tapnet's own code. Root; installs linux-perf and iperf3 if missing.
#
#   scripts/profile-tcp.sh [STREAMS] [SECS] [-- extra daemon args]
#
# Environment: TAPNET (binary; default: cargo build --release).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STREAMS=${1:-1}
SECS=${2:-4}
shift 2 || shift $#
[ "${1:-}" != "--" ] || shift
# shellcheck source=scripts/profile/need.sh
. "$REPO/scripts/profile/need.sh"
need_root "perf -a and namespaces"
need_tools perf:linux-perf iperf3:iperf3
# shellcheck source=scripts/profile/two-sandboxes.sh
. "$REPO/scripts/profile/two-sandboxes.sh"
nsenter --net="$DIR/netns/b" iperf3 -s -1 -p 5399 >/dev/null 2>&1 &
sleep 0.5
nsenter --net="$DIR/netns/a" iperf3 -c "$B_IP" -p 5399 -P "$STREAMS" -t $((SECS + 4)) -J \
    >"$DIR/iperf.json" &
IPERF=$!
sleep 2
perf record -q -F 1999 -e cpu-clock -a -g -o "$DIR/perf.data" -- sleep "$SECS" >/dev/null 2>&1
wait "$IPERF"

echo "# tapnet TCP profile: $STREAMS stream(s), $SECS s of perf record -a, daemon args: ${*:-(none)}"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("# %.2f Gbit/s" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$DIR/iperf.json"
perf report -i "$DIR/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null |
    awk '/%/ && $1+0 >= 1 {printf "%-8s %s\n", $1, $2}' | sed 's/^/share of all samples: /'
perf report -i "$DIR/perf.data" --no-children --comm datapath-0,datapath-1,datapath-2,datapath-3 \
    --sort sym --stdio -g none 2>/dev/null | python3 -c '
import re, sys
kinds = [
    ("copying", r"copy|memcpy|memmove|movs|clear_page"),
    ("checksums", r"csum|checksum"),
    ("receiving TCP/IP stack", r"tcp_|ip_|inet_|__netif|netif_|napi|gro|skb_|sk_|sock_|__dev|dev_|raw_v4|udp_|icmp|nf_|fib_|neigh"),
    ("tun", r"tun_"),
    ("system call entry/exit", r"syscall|entry_|exit_to_user|do_syscall|fdget|fput|vfs_|ksys_|rw_verify|security_"),
    ("scheduling and wake-ups", r"schedule|switch|wake|_raw_spin|try_to_wake|enqueue|dequeue|pick_|update_curr|ttwu|finish_task"),
    ("epoll", r"epoll|ep_"),
    ("tapnet (userspace)", r"tapnet::|Worker|forward|mio::"),
    ("memory allocation", r"alloc|free|kmem|slab|page_|folio"),
]
totals = {k: 0.0 for k, _ in kinds}
other = 0.0
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(\S+)", line)
    if not m:
        continue
    share, sym = float(m.group(1)), m.group(2)
    for k, pat in kinds:
        if re.search(pat, sym):
            totals[k] += share
            break
    else:
        other += share
for k, _ in kinds:
    print(f"datapath threads, {k}: {totals[k]:.1f} %")
print(f"datapath threads, other: {other:.1f} %")
'
