#!/usr/bin/env bash
# Rootless benchmark: tapnet's NAT run by an unprivileged user, beside slirp4netns and pasta run
# by the same user, and sandbox-to-sandbox TCP rootless beside root mode, all in one run,
# ROUNDS rounds, cases interleaved. Must run as root (it starts everything as BENCH_USER with
# setpriv, and measures from inside the namespaces with nsenter). Traffic goes only to the
# host's loopback and between namespaces the script makes.
#
#   scripts/bench-rootless.sh            ROUNDS=3 TCP_SECS=5 BENCH_USER=tapnet-test
#
# NAT cases: iperf3 from the namespace to a server on 127.0.0.1 ("up") and back ("down", -R).
# s2s cases: iperf3 between two sandboxes of one network. Prints a Markdown table of medians
# [min-max] in Gbit/s and the ratios the goals are stated in.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${TCP_SECS:-5}
USER_NAME=${BENCH_USER:-tapnet-test}
PORT=${BENCH_PORT:-15301}
TAPNET_SRC=${TAPNET:-$REPO/target/release/tapnet}
[ "$(id -u)" = 0 ] || { echo "bench-rootless.sh: run as root" >&2; exit 1; }
[ -x "$TAPNET_SRC" ] || (cd "$REPO" && cargo build --release --locked)
for tool in iperf3 slirp4netns pasta setpriv; do
    command -v "$tool" >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 slirp4netns passt util-linux >/dev/null
        break
    }
done
id "$USER_NAME" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
[ "$(stat -c %a /dev/net/tun)" = 666 ] || { echo "bench-rootless.sh: /dev/net/tun must be mode 0666" >&2; exit 1; }

WORK=$(mktemp -d /tmp/tapnet-bench-rl-XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/tapnet
cp "$TAPNET_SRC" "$BIN"
chmod 755 "$BIN"
UID_=$(id -u "$USER_NAME")
GID_=$(id -g "$USER_NAME")
AS=(setpriv "--reuid=$UID_" "--regid=$GID_" --clear-groups --)
RESULTS=$WORK/results
PIDS=()
export TAPNET_NAT_ALLOW=127.0.0.0/8

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    pkill -u "$USER_NAME" -x sleep 2>/dev/null
    for d in "$WORK"/rt-* "$WORK"/root-*; do
        [ -d "$d" ] || continue
        case $d in
            */rt-*) XDG_RUNTIME_DIR=$d "${AS[@]}" "$BIN" --no-autostart system reset >/dev/null 2>&1 ;;
            *) "$BIN" --state-dir "$d" --no-autostart system reset >/dev/null 2>&1 ;;
        esac
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[bench-rootless %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# iperf3 client in the case's namespace (the command prefix is in IN_A); prints Gbit/s.
gbps() {
    "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e9, 2))'
}
PYTHON=python3

measure_nat() {   # measure_nat CASE TARGET
    local case=$1 target=$2 dir out
    for dir in up down; do
        iperf3 -s -B 127.0.0.1 -p "$PORT" -1 >/dev/null 2>&1 &
        local srv=$!
        sleep 0.3
        local flag=""
        [ "$dir" = down ] && flag=-R
        if out=$(timeout $((SECS + 20)) "${IN_A[@]}" iperf3 -c "$target" -p "$PORT" -t "$SECS" $flag -J 2>/dev/null | gbps); then
            echo "$case $dir $out" >>"$RESULTS"
        else
            echo "$case $dir 0" >>"$RESULTS"
            log "$case $dir: no result"
        fi
        kill "$srv" 2>/dev/null || true
        wait "$srv" 2>/dev/null || true
    done
}

measure_s2s() {   # measure_s2s CASE IP_OF_B
    local case=$1 ip=$2 out
    "${IN_B[@]}" iperf3 -s -p "$PORT" -1 >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    out=$(timeout $((SECS + 20)) "${IN_A[@]}" iperf3 -c "$ip" -p "$PORT" -t "$SECS" -J 2>/dev/null | gbps) || out=0
    echo "$case s2s $out" >>"$RESULTS"
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
}

# tapnet rootless: the user's daemon; we enter the holder's mount namespace to see the pins.
tapnet_rl() {   # tapnet_rl MTU KIND
    local mtu=$1 kind=$2 rt="$WORK/rt-$RANDOM$RANDOM"
    mkdir -p "$rt"; chown "$UID_:$GID_" "$rt"; chmod 700 "$rt"
    local tn=(env "XDG_RUNTIME_DIR=$rt" "${AS[@]}" "$BIN")
    "${tn[@]}" network create n --mtu "$mtu" --opt host_loopback=on >/dev/null
    "${tn[@]}" sandbox create a --net n >/dev/null
    "${tn[@]}" sandbox create b --net n >/dev/null
    local holder netns_a netns_b
    holder=$("${tn[@]}" info --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["holder_pid"])')
    netns_a=$("${tn[@]}" sandbox inspect a --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["netns"])')
    netns_b=$("${tn[@]}" sandbox inspect b --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["netns"])')
    IN_A=(nsenter -t "$holder" -m -- nsenter "--net=$netns_a")
    IN_B=(nsenter -t "$holder" -m -- nsenter "--net=$netns_b")
    if [ "$kind" = nat ]; then measure_nat "nat-tapnet-rootless-$mtu" 172.18.0.1; else measure_s2s "s2s-tapnet-rootless" 172.18.0.3; fi
    "${tn[@]}" --no-autostart system reset >/dev/null 2>&1 || true
    rm -rf "$rt"
}

tapnet_root() {   # tapnet_root MTU KIND
    local mtu=$1 kind=$2 dir="$WORK/root-$RANDOM$RANDOM"
    local tn=("$BIN" --state-dir "$dir")
    "${tn[@]}" network create n --mtu "$mtu" --opt host_loopback=on >/dev/null
    "${tn[@]}" sandbox create a --net n >/dev/null
    "${tn[@]}" sandbox create b --net n >/dev/null
    IN_A=(nsenter "--net=$dir/netns/a")
    IN_B=(nsenter "--net=$dir/netns/b")
    if [ "$kind" = nat ]; then measure_nat "nat-tapnet-root-$mtu" 172.18.0.1; else measure_s2s "s2s-tapnet-root" 172.18.0.3; fi
    "${tn[@]}" --no-autostart system reset >/dev/null 2>&1 || true
}

# A namespace of the user's own (user + network), as rootless Podman makes one.
user_netns() {
    "${AS[@]}" unshare -Urn sleep 3600 &
    local waiter=$!
    PIDS+=("$waiter")
    local pid=""
    for _ in $(seq 50); do
        pid=$(pgrep -n -u "$USER_NAME" -x sleep || true)
        [ -n "$pid" ] && [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break
        sleep 0.1
    done
    NS_PID=$pid
    IN_A=(nsenter -t "$pid" -n)
}

slirp() {   # slirp MTU
    local mtu=$1
    user_netns
    "${AS[@]}" slirp4netns --configure --mtu="$mtu" --disable-dns --outbound-addr=127.0.0.1 "$NS_PID" tap0 >/dev/null 2>&1 &
    local s=$!
    PIDS+=("$s")
    sleep 1
    measure_nat "nat-slirp4netns-$mtu" 10.0.2.2
    kill "$s" "$NS_PID" 2>/dev/null || true
}

pasta_() {   # pasta_ MTU
    local mtu=$1
    user_netns
    "${AS[@]}" pasta -f -q -4 --config-net --no-icmp --no-dhcp --no-ndp --no-dhcpv6 --no-ra \
        -a 10.0.2.100 -n 24 -g 10.0.2.2 -I tap0 -m "$mtu" -o 127.0.0.1 \
        -t none -u none -T none -U none "$NS_PID" >/dev/null 2>&1 &
    local p=$!
    PIDS+=("$p")
    sleep 1
    measure_nat "nat-pasta-$mtu" 10.0.2.2
    kill "$p" "$NS_PID" 2>/dev/null || true
}

: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    tapnet_root 1500 nat
    tapnet_rl 1500 nat
    tapnet_rl 65520 nat
    slirp 1500
    slirp 65520
    pasta_ 1500
    pasta_ 65520
    tapnet_root 1500 s2s
    tapnet_rl 1500 s2s
done

"$PYTHON" - "$RESULTS" "$ROUNDS" "$SECS" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, direction, value = line.split()
    rows[(case, direction)].append(float(value))
def cell(key):
    v = rows.get(key)
    if not v:
        return "-"
    return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"
def med(key):
    v = rows.get(key)
    return statistics.median(v) if v else 0.0
print(f"Rootless benchmark: {sys.argv[2]} rounds, iperf3 single stream {sys.argv[3]} s, Gbit/s, median [min-max].\n")
print("| case | up (namespace to host loopback) | down (host to namespace) |")
print("|---|---|---|")
cases = ["nat-tapnet-root-1500", "nat-tapnet-rootless-1500", "nat-tapnet-rootless-65520",
         "nat-slirp4netns-1500", "nat-slirp4netns-65520", "nat-pasta-1500", "nat-pasta-65520"]
for c in cases:
    print(f"| {c} | {cell((c, 'up'))} | {cell((c, 'down'))} |")
print()
print("| case | sandbox to sandbox |")
print("|---|---|")
for c in ["s2s-tapnet-root", "s2s-tapnet-rootless"]:
    print(f"| {c} | {cell((c, 's2s'))} |")
print()
for d in ["up", "down"]:
    best = max(med(("nat-slirp4netns-65520", d)), med(("nat-pasta-65520", d)))
    if best > 0:
        r1500 = med(("nat-tapnet-rootless-1500", d)) / best
        r65520 = med(("nat-tapnet-rootless-65520", d)) / best
        print(f"- {d}: rootless tapnet at MTU 1500 is {r1500:.2f}x the best peer at MTU 65520 (goal >= 1.0); at MTU 65520 {r65520:.2f}x (goal >= 1.3)")
root = med(("s2s-tapnet-root", "s2s"))
if root > 0:
    print(f"- sandbox to sandbox: rootless is {med(('s2s-tapnet-rootless', 's2s')) / root:.2f}x root mode (goal >= 0.9)")
PY
