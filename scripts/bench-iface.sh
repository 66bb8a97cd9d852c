#!/bin/sh
# `--iface` port benchmark: the port's packet socket with mmap'd rings (the default) against
# plain reads and writes (TAPNET_IFACE_RING=0), alternating, ROUNDS rounds (default 3). A
# sandbox on a tapnet network; a namespace behind a veth pair whose other end is the port.
# Per mode and round: iperf3 TCP, one stream, 5 s, namespace to sandbox and back (-R); iperf3
# UDP 64-byte datagrams at full speed (-b 0), 5 s, both ways (receiver's packets/s and loss);
# ping namespace to sandbox, 200 at 10 ms, p50 and p99. Must run as root; traffic stays in the
# namespace, the veth pair and the sandbox it makes.
#
#   scripts/bench-iface.sh [TAPNET_BINARY] [ROUNDS]     (default target/release/tapnet, 3)
#   SHOW_STATS=1 scripts/bench-iface.sh ...             (and the port's counters after each)
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$REPO/target/release/tapnet}
ROUNDS=${2:-3}
NS=tpif$$; H=tpif$$h
D=
SRV=
T() { "$BIN" --state-dir "$D" "$@"; }
stop() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  SRV=
  if [ -n "$D" ]; then
    T system reset >/dev/null 2>&1 || true
    [ -f "$D/tapnet.pid" ] && kill "$(cat "$D/tapnet.pid")" 2>/dev/null || true
    rm -rf "$D"
  fi
  D=
}
cleanup() {
  stop
  ip link del "$H" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip link add "$H" type veth peer name eth0 netns "$NS"
ip -n "$NS" link set lo up
N() { ip netns exec "$NS" "$@"; }
JSON='
import json, sys
e = json.load(sys.stdin)["end"]
bps = e["sum_received"]["bits_per_second"]
if sys.argv[1] == "tcp":
    print("%.2f Gbit/s" % (bps / 1e9))
else:
    lost = e.get("sum", {}).get("lost_percent", float("nan"))
    print("%.0f kpps received (%.1f%% lost)" % (bps / (64 * 8) / 1e3, lost))
'
PING='
import re, sys
t = sorted(float(m) for m in re.findall(r"time=([0-9.]+)", sys.stdin.read()))
print("p50 %.3f ms, p99 %.3f ms (%d replies)" % (t[len(t) // 2], t[int(len(t) * 0.99)], len(t)) if t else "no replies")
'
bench() {
  mode=$1
  D=$(mktemp -d /tmp/tapnet-bench-iface.XXXXXX)
  if [ "$mode" = plain ]; then export TAPNET_IFACE_RING=0; else unset TAPNET_IFACE_RING; fi
  T network create ifb --subnet 10.77.9.0/24 >/dev/null
  T sandbox create sb --net ifb >/dev/null
  T port add ifb ext --iface "$H" >/dev/null
  io=$(T port ls --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("io"))')
  eval "$(T port ls --format json | python3 -c '
import json, sys
p = json.load(sys.stdin)[0]
print("MAC=%s CIDR=%s" % (p["mac"], p["ipv4"]))')"
  ip -n "$NS" addr flush dev eth0
  ip -n "$NS" link set eth0 address "$MAC"
  ip -n "$NS" addr add "$CIDR" dev eth0
  ip -n "$NS" link set eth0 up
  ip -n "$NS" route replace default via 10.77.9.1
  SB=$(T sandbox inspect sb --format json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["interfaces"][0]["ipv4"].split("/")[0])')
  T exec sb -- iperf3 -s >/dev/null 2>&1 & SRV=$!
  sleep 1
  N ping -c 3 -i 0.2 -W 2 "$SB" >/dev/null
  for dir in "" -R; do
    r=$(N iperf3 -c "$SB" -t 5 -J $dir | python3 -c "$JSON" tcp)
    echo "round $round $mode ($io): tcp ${dir:-ns->sb}${dir:+ sb->ns}: $r"
  done
  for dir in "" -R; do
    r=$(N iperf3 -c "$SB" -u -l 64 -b 0 -t 5 -J $dir | python3 -c "$JSON" udp)
    echo "round $round $mode ($io): udp64 ${dir:-ns->sb}${dir:+ sb->ns}: $r"
  done
  r=$(N ping -c 200 -i 0.01 "$SB" | python3 -c "$PING")
  echo "round $round $mode ($io): ping ns->sb: $r"
  # SHOW_STATS=1: the port's counters (tx_dropped: frames the port could not take).
  [ -n "${SHOW_STATS:-}" ] && T stats | grep -E 'PORT|port:ext' || true
  stop
}
round=1
while [ $round -le "$ROUNDS" ]; do
  for mode in ring plain; do bench $mode; done
  round=$((round + 1))
done
