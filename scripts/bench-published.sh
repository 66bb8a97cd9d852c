#!/bin/sh
# Published-port benchmark: 2,000 sequential TCP connects (the server in the sandbox sends one
# byte and closes) and a 4 GiB iperf3 transfer through a published port, from the host's
# loopback (seen in the sandbox as the gateway) and from a client namespace over a veth pair
# (seen as the client itself). Prints connections/s and Gbit/s, and the gateway thread's CPU
# time per 1000 connections and per GiB (steadier than rates on a busy machine). Must run as
# root; traffic stays on the host's loopback and the veth pair it makes (10.250.77.0/24).
#
#   scripts/bench-published.sh [TAPNET_BINARY] [LABEL]     (default target/release/tapnet)
#
# Compare two builds by running it for each, a few rounds, interleaved.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$REPO/target/release/tapnet}
LABEL=${2:-tapnet}
D=$(mktemp -d /tmp/tapnet-bench-published.XXXXXX)
NS=tpbench$$; H=tpb$$h; C=tpb$$c
export TAPNET_NAT_ALLOW=127.0.0.0/8
T() { "$BIN" --state-dir "$D" "$@"; }
SRV1=; SRV2=
cleanup() {
  [ -n "$SRV1" ] && kill "$SRV1" 2>/dev/null || true
  [ -n "$SRV2" ] && kill "$SRV2" 2>/dev/null || true
  T system reset >/dev/null 2>&1 || true
  ip link del "$H" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
ip netns add "$NS"
ip link add "$H" type veth peer name "$C" netns "$NS"
ip addr add 10.250.77.1/24 dev "$H"; ip link set "$H" up
ip -n "$NS" addr add 10.250.77.2/24 dev "$C"
ip -n "$NS" link set "$C" up; ip -n "$NS" link set lo up
T network create n --subnet 10.78.0.0/24 >/dev/null
T sandbox create web --net n -p 47001:5001 -p 47201:5201 >/dev/null
T exec web -- python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(128)
while True:
    c, _ = s.accept(); c.sendall(b"x"); c.close()
' & SRV1=$!
T exec web -- iperf3 -s -p 5201 >/dev/null 2>&1 & SRV2=$!
sleep 1
PID=$(cat "$D/tapnet.pid")
GW=$(dirname "$(grep -l '^gateway-n$' /proc/"$PID"/task/*/comm | head -1)")
cpu() { awk '{print $14 + $15}' "$GW/stat"; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))
CONN='
import socket, sys, time
addr, n = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
for _ in range(n):
    c = socket.create_connection((addr, 47001), timeout=5)
    while c.recv(16):
        pass
    c.close()
print("%.0f" % (n / (time.monotonic() - start)))
'
for where in loopback veth; do
  if [ $where = loopback ]; then run=""; addr=127.0.0.1; else run="ip netns exec $NS"; addr=10.250.77.1; fi
  c0=$(cpu)
  cps=$($run python3 -c "$CONN" $addr 2000)
  c1=$(cpu)
  gbit=$($run iperf3 -c $addr -p 47201 -n 4G -f g | awk '/receiver/ {print $7}')
  c2=$(cpu)
  echo "$LABEL $where: $cps connections/s, gateway $(( (c1 - c0) * TICK_MS / 2 )) ms CPU per 1000;" \
    "$gbit Gbit/s, gateway $(( (c2 - c1) * TICK_MS / 4 )) ms CPU per GiB"
done
