#!/usr/bin/env bash
# End-to-end benchmark: tapnet against the kernel bridge, VDE and Open vSwitch (userspace datapath),
# each wiring two network namespaces together, measured side by side in one run; and tapnet's
# gateway NAT against slirp4netns and pasta, a namespace reaching a server on the host's loopback.
# See BENCHMARKS.md for what each case and column means. Must run as root.
#
#   scripts/bench.sh [--quick] [--rounds N] [--cases "bridge tapnet ..."] [--out FILE]
#                    [--no-scaling] [--scale "1 2 10 100"] [--many N]
#
# Environment (flags win): ROUNDS (3), CASES, OUT (bench-results/latest.md), TAPNET (tapnet binary;
# default: cargo build --release, honouring CARGO_TARGET_DIR), TAPNET_ARGS (extra `tapnet daemon`
# args, e.g. "--datapath-threads 1"), TCP_SECS (5), UDP_SECS (5), PING_COUNT (200),
# SCALING (1/0), SCALE_PAIRS ("1 2 10 100"), SCALE_TCP_SECS (3), SCALE_MAX_IPERF (10), PYTHON,
# CONN_SECS (3, connection-rate test of the NAT cases), NAT_GRACE (15, seconds a NAT test may
# overrun before it is killed and recorded as stalled), VM_MIB (32, MiB a VM case sends; at
# most 64: the guest holds them in RAM), VM_ACCEL (auto), VM_BENCH_BIN (the built
# tests/vm_bench.rs).
# Cases (default all but the VM cases, in this order): switch cases bridge tapnet tapnet-nooff
# tapnet-epoll vde ovs ovs-tso (tapnet-epoll: the tapnet case with `daemon --datapath-io epoll`,
# the fallback; tapnet-uring, named only: `--datapath-io uring`, the default, explicitly);
# NAT cases nat-veth nat-tapnet-1500 nat-tapnet-65520 nat-slirp-1500 nat-slirp-65520
# nat-pasta-1500 nat-pasta-65520; lab cases tapnet-impair-other (a third sandbox whose link has
# delay and loss: the measured pair's ports have none) and tapnet-capture (one capture of the
# network running, written to /dev/null), to compare with the plain tapnet case; overlay cases
# (`--cases overlay` adds the plain tapnet case) vxlan-kernel (two namespaces joined by Linux
# vxlan devices over a veth underlay) and tapnet-overlay (two daemons, one sandbox each, on one
# overlay network with VTEPs on 127.77.0.2 and 127.77.0.3); IPv6 cases (`--cases ipv6` adds
# bridge and tapnet) bridge6 and tapnet6: the same pairs measured over IPv6, each tapnet case
# compared with the bridge of its own family; IPv6 NAT cases (`--cases nat6`) nat-veth6,
# nat-tapnet6-1500 and nat-pasta6-1500: the NAT cases over IPv6 (server on ::1, or on the veth's
# host end), compared with nat-veth6.
# Lab case tapnet-napi: the tapnet case with TAPNET_TAP_NAPI=1 (the TAPs made with IFF_NAPI: the
# kernel takes the frames tapnet writes through NAPI and GRO); compare with the tapnet case.
# Lab case tapnet-policy: the tapnet pair behind 10 policy rules, the last allowing a to b (the
# others deny addresses nobody uses), so every flow walks them once and then takes the
# connection table; compare with the tapnet case in the same run.
# VM cases (`--cases vm`; not in the default run, which they would lengthen by about 15 minutes
# at 3 rounds under TCG): a QEMU guest (tests/support/guest.rs) sends VM_MIB MiB over TCP through
# vm-tapnet-socket (a tapnet socket port, -netdev stream, to a sandbox), vm-tapnet-vhost (a
# vhost-user port, to a sandbox), vm-qemu-user (QEMU's -netdev user, to the host's loopback) and
# vm-passt (passt, -netdev stream, to the host's loopback); each round runs the ignored test
# tests/vm_bench.rs (built once with cargo test --release --no-run, honouring CARGO_TARGET_DIR;
# VM_BENCH_BIN overrides). Recorded: throughput, and the switch process's CPU seconds per GiB
# (tapnet daemon, passt; for QEMU user networking all of QEMU), which compares the switches
# even when the guest's emulation is the bottleneck. KVM is tried (20 s) before TCG; VM_ACCEL
# (auto, tcg, kvm-host, kvm-qemu64) skips the probe. Compared with vm-passt.
# "switch", "nat", "lab" (tapnet plus the lab cases) and "vm" in CASES stand for each group.
# --quick: 1 round, 2 s tests, 50 pings, no scaling run (a smoke check, about two minutes).
# --many N (env MANY): the many-sandboxes case after the others: scripts/scale-bench.sh with N
# sandboxes on one network of one daemon (per-create time, RSS and kernel memory as the count
# grows; list, inspect and stats at N; 16 clients at once; kill -9 with a TCP stream running;
# reset), appended to the report. Not in the default run: 10,000 take about 10 minutes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB="$REPO/scripts/bench/benchlib.py"
# shellcheck source=scripts/profile/overlay-pair.sh
. "$REPO/scripts/profile/overlay-pair.sh"
# The exact command, with the knobs that came from the environment, for the report.
ORIG_CMD=""
for v in ROUNDS CASES OUT TAPNET TAPNET_ARGS TCP_SECS UDP_SECS PING_COUNT SCALING SCALE_PAIRS \
         SCALE_TCP_SECS SCALE_MAX_IPERF CONN_SECS NAT_GRACE VM_MIB VM_ACCEL MANY CARGO_TARGET_DIR; do
    [ -z "${!v:-}" ] || ORIG_CMD+="$v=\"${!v}\" "
done
ORIG_CMD+=$0
for a in "$@"; do
    case $a in *[[:space:]]*|"") ORIG_CMD+=" \"$a\"" ;; *) ORIG_CMD+=" $a" ;; esac
done

SWITCH_CASES="bridge tapnet tapnet-nooff tapnet-epoll vde ovs ovs-tso"
NAT_CASES="nat-veth nat-tapnet-1500 nat-tapnet-65520 nat-slirp-1500 nat-slirp-65520 nat-pasta-1500 nat-pasta-65520"
LAB_CASES="tapnet-impair-other tapnet-capture tapnet-policy tapnet-napi"
OVERLAY_CASES="vxlan-kernel tapnet-overlay"
IPV6_CASES="bridge6 tapnet6"
NAT6_CASES="nat-veth6 nat-tapnet6-1500 nat-pasta6-1500"
VM_CASES="vm-tapnet-socket vm-tapnet-vhost vm-qemu-user vm-passt"
DEFAULT_CASES="$SWITCH_CASES $NAT_CASES $LAB_CASES $OVERLAY_CASES $IPV6_CASES $NAT6_CASES"
ALL_CASES="$DEFAULT_CASES $VM_CASES"
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-$DEFAULT_CASES}
OUT=${OUT:-$REPO/bench-results/latest.md}
TCP_SECS=${TCP_SECS:-5}
UDP_SECS=${UDP_SECS:-5}
PING_COUNT=${PING_COUNT:-200}
SCALING=${SCALING:-1}
SCALE_PAIRS=${SCALE_PAIRS:-"1 2 10 100"}
SCALE_TCP_SECS=${SCALE_TCP_SECS:-3}
SCALE_MAX_IPERF=${SCALE_MAX_IPERF:-10}
CONN_SECS=${CONN_SECS:-3}
NAT_GRACE=${NAT_GRACE:-15}
VM_MIB=${VM_MIB:-32}
VM_ACCEL=${VM_ACCEL:-auto}
TAPNET_ARGS=${TAPNET_ARGS:-}
MANY=${MANY:-0}
PYTHON=${PYTHON:-python3}
UDP_LEN=64
IPERF_PORT=5201
# Addresses of the two namespaces in the non-tapnet cases (each case has its own namespaces).
IP_A=10.77.0.2 IP_B=10.77.0.3 PREFIXLEN=24
# ... and over IPv6 (the bridge6 case).
IP6_A=fd77::2 IP6_B=fd77::3
# NAT cases: the kernel reference's point-to-point veth (host end / namespace end, /32 each, so
# the host namespace gains one host route to our namespace and nothing else), and the addresses
# of the slirp4netns/pasta namespaces (their gateway 10.0.2.2 is the host's loopback).
VETH_HOST=10.77.1.1 VETH_NS=10.77.1.2
SLIRP_NS=10.0.2.100 SLIRP_GW=10.0.2.2
# ... and over IPv6: the veth reference's two ends, tapnet's dual-stack network, and pasta's
# namespace address and gateway (the gateway is the host's ::1).
VETH6_HOST=fd77:1::1 VETH6_NS=fd77:1::2
TAPNET6_SUBNET=fd77:2::/64
PASTA6_NS=fd77:3::100 PASTA6_GW=fd77:3::2
CONNRATE="$REPO/scripts/bench/connrate.py"

usage() { sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        --quick) ROUNDS=1 TCP_SECS=2 UDP_SECS=2 PING_COUNT=50 SCALING=0 ;;
        --rounds) ROUNDS=$2; shift ;;
        --cases) CASES=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-scaling) SCALING=0 ;;
        --scale) SCALE_PAIRS=$2; SCALING=1; shift ;;
        --many) MANY=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
expanded=""
for c in $CASES; do
    case $c in
        switch) expanded+=" $SWITCH_CASES" ;;
        nat) expanded+=" $NAT_CASES" ;;
        lab) expanded+=" tapnet $LAB_CASES" ;;
        overlay) expanded+=" tapnet $OVERLAY_CASES" ;;
        ipv6) expanded+=" bridge tapnet $IPV6_CASES" ;;
        nat6) expanded+=" $NAT6_CASES" ;;
        vm) expanded+=" $VM_CASES" ;;
        *) expanded+=" $c" ;;
    esac
done
CASES=${expanded# }
for c in $CASES; do
    case " $ALL_CASES " in *" $c "*) ;; *) echo "bench.sh: unknown case $c (known: $ALL_CASES)" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: must run as root (namespaces, TAP devices)" >&2; exit 1; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ cleanup registry
# Everything the script creates is written to a registry file as it is made; cleanup undoes a
# registry in reverse order. Each case round has its own registry (cleaned by its subshell), and
# the EXIT trap of the main shell cleans all of them again in case a subshell was killed.

# Unique prefix for host-side link names: "tnb" + PID is at most 10 chars, so 5 remain.
P="tnb$$"
WORK=$(mktemp -d "/tmp/tnb$$.XXXXXX")
REG_MAIN="$WORK/reg.main"
REG=$REG_MAIN
: >"$REG_MAIN"
SUB=""   # PID of the running case subshell

reg() { printf '%s\n' "$*" >>"$REG"; }

# Stop a process we started, but only if the PID still belongs to the same program.
stop_pid() {
    local pid=$1 comm=$2 i
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        # Gone, or a zombie waiting for us to reap it.
        [ -r "/proc/$pid/stat" ] || break
        case $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) in Z|"") break ;; esac
        sleep 0.1
    done
    if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true   # reap it if it is our child
}

cleanup_from() {
    local file=$1 kind a b
    [ -f "$file" ] || return 0
    while read -r kind a b; do
        case $kind in
            pid) stop_pid "$a" "$b" ;;
            tapnet) TAPNET_STATE_DIR=$a timeout 30 "$TAPNET" --no-autostart system reset >/dev/null 2>&1 ||
                        log "warning: tapnet system reset failed for $a" ;;
            link) ! ip link show "$a" >/dev/null 2>&1 || ip link del "$a" 2>/dev/null || true ;;
            netns) ! mountpoint -q "$a" 2>/dev/null || umount "$a" 2>/dev/null || umount -l "$a" || true
                   rm -f "$a" ;;
            dir) rm -rf "$a" ;;
        esac
    done < <(tac "$file")
    : >"$file"
}

SAVED_POLICY=""
cleanup_all() {
    local rc=$? f
    trap - EXIT INT TERM
    set +e
    # Let the running case subshell tear down its own topology first (it reaps its children).
    if [ -n "$SUB" ]; then kill -TERM "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null; fi
    for f in "$WORK"/reg.*; do [ "$f" = "$REG_MAIN" ] || cleanup_from "$f"; done
    cleanup_from "$REG_MAIN"
    [ -z "$SAVED_POLICY" ] || rm -f /usr/sbin/policy-rc.d
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ packages and binaries

need_pkgs() {
    local want=() c
    command -v iperf3 >/dev/null || want+=(iperf3)
    command -v ping >/dev/null || want+=(iputils-ping)
    command -v ip >/dev/null && command -v ss >/dev/null || want+=(iproute2)
    command -v pgrep >/dev/null || want+=(procps)
    command -v nsenter >/dev/null && command -v unshare >/dev/null || want+=(util-linux)
    for c in $CASES; do
        case $c in
            vde) command -v vde_switch >/dev/null || want+=(vde2) ;;
            ovs|ovs-tso) command -v ovs-vswitchd >/dev/null || want+=(openvswitch-switch) ;;
            nat-slirp-*) command -v slirp4netns >/dev/null || want+=(slirp4netns) ;;
            nat-pasta-*|nat-pasta6-*) command -v pasta >/dev/null || want+=(passt) ;;
            vm-passt) command -v passt >/dev/null || want+=(passt) ;;&
            vm-*) command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
                  [ -x /bin/busybox ] || want+=(busybox-static) ;;
        esac
    done
    printf '%s\n' "${want[@]}" | sort -u | grep -v '^$' || true
}

# PIDs of processes whose name is exactly $1 (from /proc: pgrep may not be installed yet).
pids_named() {
    local f
    for f in /proc/[0-9]*/comm; do
        [ "$(cat "$f" 2>/dev/null)" != "$1" ] || { f=${f#/proc/}; echo "${f%/comm}"; }
    done
}

install_pkgs() {
    local pkgs before after p
    mapfile -t pkgs < <(need_pkgs)
    [ ${#pkgs[@]} -gt 0 ] || return 0
    log "installing: ${pkgs[*]}"
    # The OVS package would start the system's ovsdb-server/ovs-vswitchd. A policy-rc.d that
    # says "no" (101) keeps invoke-rc.d from starting services; we add one only if none exists.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        SAVED_POLICY=1
    fi
    before=$(pids_named ovsdb-server; pids_named ovs-vswitchd)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
    if [ -n "$SAVED_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; SAVED_POLICY=""; fi
    # Belt and braces: stop OVS daemons that the installation started (not ones running before).
    after=$(pids_named ovsdb-server; pids_named ovs-vswitchd)
    for p in $after; do
        if ! grep -qx "$p" <<<"$before"; then
            log "stopping OVS daemon $p started by the package installation"
            stop_pid "$p" "$(cat "/proc/$p/comm")"
        fi
    done
}

resolve_tapnet() {
    if [ -n "${TAPNET:-}" ]; then
        [ -x "$TAPNET" ] || { echo "bench.sh: TAPNET=$TAPNET is not executable" >&2; exit 1; }
        return
    fi
    local target=${CARGO_TARGET_DIR:-target}
    case $target in /*) ;; *) target="$REPO/$target" ;; esac
    log "building tapnet (cargo build --release, target dir $target)"
    (cd "$REPO" && cargo build --release >&2)
    TAPNET="$target/release/tapnet"
}

# The VM cases' harness: tests/vm_bench.rs, built once (release, like the tapnet binary).
resolve_vm_bench() {
    if [ -n "${VM_BENCH_BIN:-}" ]; then
        [ -x "$VM_BENCH_BIN" ] || { echo "bench.sh: VM_BENCH_BIN=$VM_BENCH_BIN is not executable" >&2; exit 1; }
        return
    fi
    log "building tests/vm_bench.rs (cargo test --release --no-run)"
    VM_BENCH_BIN=$(cd "$REPO" && cargo test --release --no-run --test vm_bench --message-format=json |
        "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "vm_bench" and m.get("executable"):
        print(m["executable"])')
    [ -x "$VM_BENCH_BIN" ] || { echo "bench.sh: no tests/vm_bench.rs executable from cargo" >&2; exit 1; }
}

# ------------------------------------------------------------------ small helpers

# A persistent network namespace bound to a file in our work dir (not /run/netns, so nothing
# shows up in `ip netns` and no shared mount is left behind). `ip` accepts the path for `netns`.
new_netns() {
    local path=$1
    : >"$path"
    reg netns "$path"
    unshare --net="$path" true
    nsenter --net="$path" ip link set lo up
}

in_ns() { local ns=$1; shift; nsenter --net="$ns" "$@"; }

# Configure the address of an interface that is already inside namespace $1.
addr_up() {
    in_ns "$1" ip addr add "$3/$PREFIXLEN" dev "$2"
    in_ns "$1" ip link set "$2" up
}

wait_for() {   # wait_for SECONDS CMD...: retry CMD every 0.1 s
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# Sum of user+system CPU ticks of the given PIDs (all threads).
cpu_ticks() {
    local t=0 p s
    for p in "$@"; do
        s=$(cat "/proc/$p/stat")
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

rss_mib() {   # rss_mib PID [VmRSS|VmHWM]
    awk -v k="${2:-VmRSS}:" '$1 == k { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

# ------------------------------------------------------------------ topologies
# Each setup_* builds two namespaces A and B joined by one switch and sets:
#   NS_A NS_B   paths of the namespaces, IPB   address of B,
#   SW_PIDS     the switch's process(es) for CPU time (empty for the kernel),
#   SW_EXTRA    a helper process whose RSS is reported separately (ovsdb-server).
# $D is this case round's private directory, $T a short tag for link names.

setup_bridge() {
    NS_A="$D/ns-a" NS_B="$D/ns-b" IPB=$IP_B SW_PIDS="" SW_EXTRA=""
    new_netns "$NS_A"; new_netns "$NS_B"
    reg link "${T}br"
    ip link add "${T}br" type bridge
    ip link set "${T}br" up
    local side ns ip
    for side in a b; do
        if [ $side = a ]; then ns=$NS_A ip=$IP_A; else ns=$NS_B ip=$IP_B; fi
        reg link "${T}$side"
        ip link add "${T}$side" type veth peer name eth0 netns "$ns"
        ip link set "${T}$side" master "${T}br" up
        addr_up "$ns" eth0 "$ip"
    done
}

# The bridge case with IPv6 addresses beside the IPv4 ones (no DAD wait), measured over IPv6.
setup_bridge6() {
    setup_bridge
    in_ns "$NS_A" ip -6 addr add "$IP6_A/64" dev eth0 nodad
    in_ns "$NS_B" ip -6 addr add "$IP6_B/64" dev eth0 nodad
    IPB=$IP6_B
}

setup_vde() {
    NS_A="$D/ns-a" NS_B="$D/ns-b" IPB=$IP_B SW_EXTRA=""
    new_netns "$NS_A"; new_netns "$NS_B"
    mkfifo "$D/console"
    reg link "${T}a"; reg link "${T}b"
    # vde_switch creates the TAPs itself and exits on EOF of its console: opening the fifo
    # read-write as its stdin means it never sees EOF.
    vde_switch -s "$D/ctl" -M "$D/mgmt" -t "${T}a" -t "${T}b" 0<>"$D/console" >"$D/vde.log" 2>&1 &
    SW_PIDS=$!
    reg pid "$SW_PIDS" vde_switch
    wait_for 5 ip link show "${T}b"
    ip link set "${T}a" netns "$NS_A"
    ip link set "${T}b" netns "$NS_B"
    addr_up "$NS_A" "${T}a" "$IP_A"
    addr_up "$NS_B" "${T}b" "$IP_B"
}

# OVS userspace datapath; $1 = true to enable userspace TSO. Daemons run from files in $D only.
setup_ovs_common() {
    local tso=$1
    NS_A="$D/ns-a" NS_B="$D/ns-b" IPB=$IP_B
    new_netns "$NS_A"; new_netns "$NS_B"
    export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
    local db="unix:$D/db.sock"
    ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --unixctl="$D/ovsdb.ctl" \
        --pidfile="$D/ovsdb.pid" --log-file="$D/ovsdb.log" >"$D/ovsdb.out" 2>&1 &
    SW_EXTRA=$!
    reg pid "$SW_EXTRA" ovsdb-server
    wait_for 5 test -S "$D/db.sock"
    ovs-vsctl --db="$db" --no-wait init
    # userspace-tso-enable is read once at start, so set it before ovs-vswitchd runs.
    [ "$tso" = true ] && ovs-vsctl --db="$db" --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
    reg link "${T}br"; reg link "${T}a"; reg link "${T}b"
    # The netdev datapath adds a persistent TAP "ovs-netdev" (its local port) that outlives
    # ovs-vswitchd. Remove it afterwards, but only if it is ours (did not exist before).
    if ip link show ovs-netdev >/dev/null 2>&1; then
        log "  note: a link ovs-netdev exists already (not ours); leaving it alone"
    else
        reg link ovs-netdev
    fi
    ovs-vswitchd "$db" --unixctl="$D/vswitchd.ctl" --pidfile="$D/vswitchd.pid" \
        --log-file="$D/vswitchd.log" >"$D/vswitchd.out" 2>&1 &
    SW_PIDS=$!
    reg pid "$SW_PIDS" ovs-vswitchd
    # Internal ports of a netdev bridge are TAP devices owned by ovs-vswitchd. The bridge's own
    # local port is one too; it stays down in the host namespace.
    ovs-vsctl --db="$db" --timeout=20 add-br "${T}br" -- set bridge "${T}br" datapath_type=netdev \
        -- add-port "${T}br" "${T}a" -- set interface "${T}a" type=internal \
        -- add-port "${T}br" "${T}b" -- set interface "${T}b" type=internal
    wait_for 5 ip link show "${T}b"
    ip link set "${T}a" netns "$NS_A"
    ip link set "${T}b" netns "$NS_B"
    addr_up "$NS_A" "${T}a" "$IP_A"
    addr_up "$NS_B" "${T}b" "$IP_B"
}
setup_ovs() { setup_ovs_common false; }
setup_ovs_tso() { setup_ovs_common true; }

# Start a tapnet daemon on a fresh state dir; sets TN_DIR and TN_PID.
start_tapnet() {
    TN_DIR="$D/tapnet"
    mkdir -p "$TN_DIR"
    reg tapnet "$TN_DIR"
    # shellcheck disable=SC2086
    "$TAPNET" --state-dir "$TN_DIR" daemon $TAPNET_ARGS "$@" >"$D/tapnet-daemon.log" 2>&1 &
    TN_PID=$!
    reg pid "$TN_PID" "$(basename "$TAPNET" | cut -c1-15)"
    export TAPNET_STATE_DIR=$TN_DIR
    wait_for 10 test -S "$TN_DIR/tapnet.sock"
    wait_for 5 "$TAPNET" --no-autostart network ls
}

tn_netns() { "$TAPNET" sandbox inspect "$1" --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["netns"])'; }
tn_ip() { "$TAPNET" sandbox inspect "$1" --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv4"].split("/")[0])'; }

setup_tapnet_common() {
    start_tapnet "$@"
    SW_PIDS=$TN_PID SW_EXTRA=""
    "$TAPNET" network create benchnet >/dev/null
    "$TAPNET" sandbox create a --net benchnet >/dev/null
    "$TAPNET" sandbox create b --net benchnet >/dev/null
    NS_A=$(tn_netns a) NS_B=$(tn_netns b) IPB=$(tn_ip b)
}
setup_tapnet() { setup_tapnet_common --offload on; }
# The tapnet case on a dual-stack network, measured over IPv6.
setup_tapnet6() {
    start_tapnet --offload on
    SW_PIDS=$TN_PID SW_EXTRA=""
    "$TAPNET" network create benchnet --ipv6 --subnet fd77::/64 >/dev/null
    "$TAPNET" sandbox create a --net benchnet >/dev/null
    "$TAPNET" sandbox create b --net benchnet >/dev/null
    NS_A=$(tn_netns a) NS_B=$(tn_netns b)
    IPB=$("$TAPNET" sandbox inspect b --format json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv6"].split("/")[0])')
}
setup_tapnet_nooff() { setup_tapnet_common --offload off; }
setup_tapnet_uring() { setup_tapnet_common --offload on --datapath-io uring; }
setup_tapnet_epoll() { setup_tapnet_common --offload on --datapath-io epoll; }
setup_tapnet_napi() { TAPNET_TAP_NAPI=1 setup_tapnet_common --offload on; }
# Kernel VXLAN between two namespaces over a veth underlay: the reference for tapnet-overlay.
setup_vxlan_kernel() {
    NS_A="$D/ns-a" NS_B="$D/ns-b" IPB=$IP_B SW_PIDS="" SW_EXTRA=""
    new_netns "$NS_A"; new_netns "$NS_B"
    reg link "${T}u"
    ip link add "${T}u" type veth peer name "${T}v"
    ip link set "${T}u" netns "$NS_A"
    ip link set "${T}v" netns "$NS_B"
    in_ns "$NS_A" ip addr add 10.77.2.1/30 dev "${T}u"
    in_ns "$NS_A" ip link set "${T}u" up
    in_ns "$NS_B" ip addr add 10.77.2.2/30 dev "${T}v"
    in_ns "$NS_B" ip link set "${T}v" up
    in_ns "$NS_A" ip link add eth0 type vxlan id 42 remote 10.77.2.2 local 10.77.2.1 dstport 4789 dev "${T}u"
    in_ns "$NS_B" ip link add eth0 type vxlan id 42 remote 10.77.2.1 local 10.77.2.2 dstport 4789 dev "${T}v"
    addr_up "$NS_A" eth0 "$IP_A"
    addr_up "$NS_B" eth0 "$IP_B"
}
# Two tapnet daemons (two hosts) with one sandbox each on one overlay network; VTEPs on loopback.
setup_tapnet_overlay() {
    start_tapnet --offload on
    local first=$TN_DIR first_pid=$TN_PID second="$D/tapnet2"
    mkdir -p "$second"
    reg tapnet "$second"
    # shellcheck disable=SC2086
    "$TAPNET" --state-dir "$second" daemon $TAPNET_ARGS --offload on >"$D/tapnet-daemon2.log" 2>&1 &
    local second_pid=$!
    reg pid "$second_pid" "$(basename "$TAPNET" | cut -c1-15)"
    wait_for 10 test -S "$second/tapnet.sock"
    # CPU and RSS columns take one process: the sending side's daemon.
    SW_PIDS=$first_pid SW_EXTRA=""
    overlay_pair "$first" "$second" benchnet
    NS_A=$(tn_netns a)
    NS_B=$(TAPNET_STATE_DIR=$second tn_netns b) IPB=$(TAPNET_STATE_DIR=$second tn_ip b)
}
# An impairment configured on another port of the network: the measured frames take the plain
# path, and this shows whether they pay for it.
setup_tapnet_impair_other() {
    setup_tapnet_common --offload on
    "$TAPNET" sandbox create c --net benchnet >/dev/null
    "$TAPNET" link set c benchnet --delay 10ms --loss 1% --seed 1 >/dev/null
}
# 10 policy rules, the last matching the measured pair: flows are checked and tracked.
setup_tapnet_policy() {
    setup_tapnet_common --offload on
    local i
    for i in $(seq 1 9); do
        "$TAPNET" policy add benchnet --name "other$i" --to "192.0.2.$i/32" --deny >/dev/null
    done
    "$TAPNET" policy add benchnet --name pair --from a --to b --allow >/dev/null
}
# One capture of the whole network running (pcap to /dev/null).
setup_tapnet_capture() {
    setup_tapnet_common --offload on
    "$TAPNET" capture benchnet -w - >/dev/null 2>"$D/capture.err" &
    reg pid "$!" "$(basename "$TAPNET" | cut -c1-15)"
}

# ------------------------------------------------------------------ NAT topologies
# Each setup_nat_* builds one namespace A (the sandbox) whose traffic reaches the script's own
# namespace (the host), and sets: NS_A, TARGET (the address A connects to), SRV_ADDR (the address
# the servers bind to in the host namespace: 127.0.0.1 except for the kernel reference),
# SW_PIDS (the NAT process, empty for the kernel), SW_EXTRA (unused). Nothing gets a route to
# anything but the host's loopback (or, for nat-veth, the veth's host end).

# Kernel reference: a veth pair, point to point: host end $VETH_HOST/32 peer $VETH_NS, namespace
# end the reverse. The servers bind to the host end's address (the kernel would not route to
# 127.0.0.1 from another namespace without route_localnet and DNAT), so this is veth plus local
# delivery in the host namespace: what a NAT would cost at best.
setup_nat_veth() {
    NS_A="$D/ns-a" TARGET=$VETH_HOST SRV_ADDR=$VETH_HOST SW_PIDS="" SW_EXTRA=""
    if ip -4 -o addr show | grep -q " inet $VETH_HOST/"; then
        record error "$VETH_HOST is already assigned in the host namespace; not touching it"
        return 1
    fi
    new_netns "$NS_A"
    reg link "${T}v"
    ip link add "${T}v" type veth peer name eth0 netns "$NS_A"
    ip addr add "$VETH_HOST/32" peer "$VETH_NS/32" dev "${T}v"
    ip link set "${T}v" up
    in_ns "$NS_A" ip addr add "$VETH_NS/32" peer "$VETH_HOST/32" dev eth0
    in_ns "$NS_A" ip link set eth0 up
}

# The kernel reference over IPv6: the same point-to-point veth with /128 addresses (no DAD wait).
setup_nat_veth6() {
    NS_A="$D/ns-a" TARGET=$VETH6_HOST SRV_ADDR=$VETH6_HOST SW_PIDS="" SW_EXTRA=""
    if ip -6 -o addr show | grep -q " inet6 $VETH6_HOST/"; then
        record error "$VETH6_HOST is already assigned in the host namespace; not touching it"
        return 1
    fi
    new_netns "$NS_A"
    reg link "${T}v"
    ip link add "${T}v" type veth peer name eth0 netns "$NS_A"
    # IPv6's `peer` makes no route to the peer as IPv4's does: a /128 route each way instead.
    ip -6 addr add "$VETH6_HOST/128" dev "${T}v" nodad
    ip link set "${T}v" up
    ip -6 route add "$VETH6_NS/128" dev "${T}v"
    in_ns "$NS_A" ip -6 addr add "$VETH6_NS/128" dev eth0 nodad
    in_ns "$NS_A" ip link set eth0 up
    in_ns "$NS_A" ip -6 route add "$VETH6_HOST/128" dev eth0
}

# tapnet's gateway: a daemon that may NAT only to loopback, one network with the given MTU, one
# sandbox; the sandbox connects to its network's gateway address.
setup_nat_tapnet() {
    local mtu=$1
    start_tapnet --nat-allow 127.0.0.0/8
    SW_PIDS=$TN_PID SW_EXTRA="" SRV_ADDR=127.0.0.1
    "$TAPNET" network create natnet --mtu "$mtu" --opt host_loopback=on >/dev/null
    "$TAPNET" sandbox create a --net natnet >/dev/null
    NS_A=$(tn_netns a)
    TARGET=$("$TAPNET" network inspect natnet --format json |
        "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d, list) else d; print(d["gateway"].split("/")[0])')
}

# The same over IPv6: a dual-stack network; the sandbox connects to the network's IPv6 gateway,
# which the daemon maps to ::1 (127.0.0.0/8 in --nat-allow admits ::1).
setup_nat_tapnet6() {
    local mtu=$1
    start_tapnet --nat-allow 127.0.0.0/8
    SW_PIDS=$TN_PID SW_EXTRA="" SRV_ADDR=::1
    "$TAPNET" network create natnet --mtu "$mtu" --ipv6 --subnet "$TAPNET6_SUBNET" \
        --opt host_loopback=on >/dev/null
    "$TAPNET" sandbox create a --net natnet >/dev/null
    NS_A=$(tn_netns a)
    TARGET=$("$TAPNET" network inspect natnet --format json |
        "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d, list) else d; print(d["gateway6"].split("/")[0])')
}

# slirp4netns and pasta get a TAP "tap0" in A that the script configures itself: address
# $SLIRP_NS/24, the MTU, no default route (so only their gateway, i.e. the host's loopback, is
# reachable). Their own outbound sockets are bound to 127.0.0.1 as well.
config_tap0() {   # config_tap0 MTU
    wait_for 5 in_ns "$NS_A" ip link show tap0 || { record error "tap0 did not appear"; return 1; }
    in_ns "$NS_A" ip link set tap0 mtu "$1"
    in_ns "$NS_A" ip addr add "$SLIRP_NS/24" dev tap0
    in_ns "$NS_A" ip link set tap0 up
}

setup_nat_slirp() {
    local mtu=$1
    NS_A="$D/ns-a" TARGET=$SLIRP_GW SRV_ADDR=127.0.0.1 SW_EXTRA=""
    new_netns "$NS_A"
    slirp4netns --netns-type=path --disable-dns --mtu "$mtu" --outbound-addr=127.0.0.1 \
        "$NS_A" tap0 >"$D/slirp4netns.log" 2>&1 &
    SW_PIDS=$!
    reg pid "$SW_PIDS" slirp4netns
    config_tap0 "$mtu"
}

setup_nat_pasta() {
    local mtu=$1
    NS_A="$D/ns-a" TARGET=$SLIRP_GW SRV_ADDR=127.0.0.1 SW_EXTRA=""
    new_netns "$NS_A"
    # As root, pasta changes to "nobody" by default and then may not join a namespace that
    # belongs to the initial user namespace ("Couldn't switch to pasta namespaces"): keep root.
    pasta -f -q -4 --runas 0:0 --no-icmp --no-dhcp --no-ndp --no-dhcpv6 --no-ra -a "$SLIRP_NS" -n 24 \
        -g "$SLIRP_GW" -I tap0 -m "$mtu" -o 127.0.0.1 -t none -u none -T none -U none \
        --netns "$NS_A" >"$D/pasta.log" 2>&1 &
    SW_PIDS=$!
    reg pid "$SW_PIDS" pasta
    config_tap0 "$mtu"
    # pasta re-executes itself as passt.avx2 where the CPU has AVX2: register the name it has now.
    reg pid "$SW_PIDS" "$(cat "/proc/$SW_PIDS/comm")"
}

# pasta over IPv6 only: its gateway address is mapped to the host's ::1 (pasta's default
# without --no-map-gw), as -g does for IPv4. Unlike the IPv4 case: NDP and ICMP stay on (the
# namespace resolves the gateway's MAC by NDP, which this pasta answers only with its ICMPv6
# handler on; it answers ARP regardless), and no -o (this pasta rejects `-o ::1` as "Invalid or
# redundant outbound address"; its sockets to ::1 get ::1 as source anyway). No -d: this pasta
# crashes (SIGSEGV) logging the first IPv6 TCP connection.
setup_nat_pasta6() {
    local mtu=$1
    NS_A="$D/ns-a" TARGET=$PASTA6_GW SRV_ADDR=::1 SW_EXTRA=""
    new_netns "$NS_A"
    pasta -f -q -6 --runas 0:0 --no-dhcpv6 --no-ra -a "$PASTA6_NS" \
        -g "$PASTA6_GW" -I tap0 -m "$mtu" -t none -u none -T none -U none \
        --netns "$NS_A" >"$D/pasta.log" 2>&1 &
    SW_PIDS=$!
    reg pid "$SW_PIDS" pasta
    wait_for 5 in_ns "$NS_A" ip link show tap0 || { record error "tap0 did not appear"; return 1; }
    in_ns "$NS_A" ip link set tap0 mtu "$mtu"
    in_ns "$NS_A" ip -6 addr add "$PASTA6_NS/64" dev tap0 nodad
    in_ns "$NS_A" ip link set tap0 up
    reg pid "$SW_PIDS" "$(cat "/proc/$SW_PIDS/comm")"
}

# ------------------------------------------------------------------ measurements

# Clients run in the background and are waited for: bash defers a trap until a foreground
# command ends, so this keeps a TERM to the case subshell effective at once.
CLIENTS="" SERVERS=""
client_bg() {   # client_bg LIMIT-SECONDS OUTFILE CMD... ; PID in CLIENT
    local limit=$1 out=$2; shift 2
    timeout "$limit" "$@" >"$out" 2>&1 &
    CLIENT=$!
    CLIENTS+=" $CLIENT"
}
client() { client_bg "$@"; wait "$CLIENT"; }

# EXIT trap of a case subshell: stop clients, show the logs on failure, undo the registry.
sub_exit() {
    local rc=$? p
    set +e
    for p in $CLIENTS; do kill -TERM "$p" 2>/dev/null; done
    for p in $CLIENTS; do wait "$p" 2>/dev/null; done
    [ "$rc" = 0 ] || tail -n 5 "$D"/*.log 2>/dev/null >&2
    cleanup_from "$REG"
    exit "$rc"
}

# The measure_* functions write "case round metric value" lines to $RESULTS; a failed test
# records an "error" line and the round goes on. Clients run in A, the iperf3 server in B.
record() { printf '%s\t%s\t%s\t%s\n' "$CASE" "$ROUND" "$1" "$2" >>"$RESULTS"; }

start_iperf_server() {   # start_iperf_server NS -> pid in IPERF_PID
    # nsenter (not the in_ns function) so that $! is iperf3 itself, not a forked subshell.
    nsenter --net="$1" iperf3 -s -p "$IPERF_PORT" >"$D/iperf-server-$RANDOM.log" 2>&1 &
    IPERF_PID=$!
    SERVERS+=" $IPERF_PID"
    reg pid "$IPERF_PID" iperf3
    wait_for 5 bash -c "nsenter --net='$1' ss -Hltn 'sport = :$IPERF_PORT' | grep -q ."
}

# Until B answers (ARP resolved, FDB learned), at most 10 s.
wait_reachable() { wait_for 10 in_ns "$1" ping -c 1 -W 1 "$2"; }

measure_tcp() {   # measure_tcp STREAMS METRIC-PREFIX CPU-METRIC
    local n=$1 out="$D/tcp$1.json" t0 t1 c0 c1 wall res
    c0=$([ -z "$SW_PIDS" ] || cpu_ticks "$SW_PIDS")
    t0=$(now)
    client $((TCP_SECS + 30)) "$out" nsenter --net="$NS_A" \
        iperf3 -c "$IPB" -p "$IPERF_PORT" -t "$TCP_SECS" -P "$n" -J ||
        { record error "TCP -P $n: iperf3 failed or timed out ($(head -c 200 "$out" | tr '\n\t' '  '))"; return 0; }
    t1=$(now)
    res=$("$PYTHON" "$LIB" tcp "$out") || { record error "TCP -P $n: unparsable"; return 0; }
    record "${2}_gbps" "${res% *}"
    record "${2}_retr" "${res#* }"
    if [ -n "$SW_PIDS" ]; then
        c1=$(cpu_ticks "$SW_PIDS")
        wall=$(elapsed "$t0" "$t1")
        record "$3" "$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w="$wall" 'BEGIN { printf "%.1f", 100 * d / hz / w }')"
    fi
    log "  $CASE TCP -P $n: ${res% *} Gbit/s, ${res#* } retransmits"
}

measure_udp() {
    local out="$D/udp.json" res a b c
    client $((UDP_SECS + 30)) "$out" nsenter --net="$NS_A" \
        iperf3 -c "$IPB" -p "$IPERF_PORT" -u -l "$UDP_LEN" -b 0 -t "$UDP_SECS" -J ||
        { record error "UDP: iperf3 failed or timed out"; return 0; }
    res=$("$PYTHON" "$LIB" udp "$out" "$UDP_SECS" "$UDP_LEN") || { record error "UDP: unparsable"; return 0; }
    read -r a b c <<<"$res"
    record udp_rx_kpps "$a"; record udp_tx_kpps "$b"; record udp_loss_pct "$c"
    log "  $CASE UDP 64 B: rx $a kpps (sent $b kpps, loss $c %)"
}

measure_ping() {
    local out="$D/ping.txt" res p50 p99 avg loss n
    client $((PING_COUNT / 50 + 20)) "$out" nsenter --net="$NS_A" \
        ping -n -c "$PING_COUNT" -i 0.01 -W 1 "$IPB" || true
    res=$("$PYTHON" "$LIB" ping "$out") || { record error "ping: no replies"; return 0; }
    read -r p50 p99 avg loss n <<<"$res"
    record ping_p50_us "$p50"; record ping_p99_us "$p99"; record ping_avg_us "$avg"; record ping_loss_pct "$loss"
    log "  $CASE ping: p50 $p50 us, p99 $p99 us, loss $loss %"
}

# ------------------------------------------------------------------ NAT measurements
# Servers run in the script's own namespace (the host), bound to $SRV_ADDR; clients run in A.

PY_COMM=""   # comm of a $PYTHON process, for stop_pid

start_connrate_server() {   # sets CR_PORT
    "$PYTHON" "$CONNRATE" serve "$SRV_ADDR" "$D/connrate.port" >"$D/connrate-server.log" 2>&1 &
    reg pid "$!" "$PY_COMM"
    wait_for 5 test -s "$D/connrate.port" || { record error "connection-rate server did not start"; return 1; }
    CR_PORT=$(cat "$D/connrate.port")
}

cpu_pct_since() {   # cpu_pct_since TICKS0 T0 -> CPU % of SW_PIDS since then
    awk -v d=$(($(cpu_ticks "$SW_PIDS") - $1)) -v hz="$CLK_TCK" -v w="$(elapsed "$2" "$(now)")" \
        'BEGIN { printf "%.1f", 100 * d / hz / w }'
}

# measure_nat_tcp up|down: iperf3 single stream A -> host (up) or host -> A (down, -R), against a
# one-off server on a free port. A test that has not finished NAT_GRACE s after its nominal end
# is killed and recorded as stalled, with what the server saw (iperf3 prints nothing before the
# end in JSON mode).
measure_nat_tcp() {
    local dir=$1 rev=() port spid out="$D/tcp-$1.json" slog="$D/iperf-server-$1.txt" c0 t0 rc res sa
    [ "$dir" = down ] && rev=(-R)
    port=$("$PYTHON" "$LIB" freeport "$SRV_ADDR")
    iperf3 -s -1 -B "$SRV_ADDR" -p "$port" -i 1 --forceflush >"$slog" 2>&1 &
    spid=$!
    reg pid "$spid" iperf3
    case $SRV_ADDR in *:*) sa="[$SRV_ADDR]" ;; *) sa=$SRV_ADDR ;; esac
    wait_for 5 bash -c "ss -Hltn 'src $sa and sport = :$port' | grep -q ." ||
        { record error "TCP $dir: iperf3 server did not start"; stop_pid "$spid" iperf3; return 0; }
    c0=$([ -z "$SW_PIDS" ] || cpu_ticks "$SW_PIDS")
    t0=$(now)
    rc=0
    client $((TCP_SECS + NAT_GRACE)) "$out" nsenter --net="$NS_A" \
        iperf3 -c "$TARGET" -p "$port" -t "$TCP_SECS" "${rev[@]}" --connect-timeout 5000 -J || rc=$?
    [ -z "$SW_PIDS" ] || record "cpu_${dir}_pct" "$(cpu_pct_since "$c0" "$t0")"
    stop_pid "$spid" iperf3
    if [ $rc -eq 124 ]; then
        record error "TCP $dir: stalled, killed after $((TCP_SECS + NAT_GRACE)) s; server's last intervals: $("$PYTHON" "$LIB" iperf-tail "$slog")"
        record "stall_$dir" 1
        log "  $CASE TCP $dir: stalled (killed after $((TCP_SECS + NAT_GRACE)) s)"
        return 0
    fi
    if [ $rc -ne 0 ] || ! res=$("$PYTHON" "$LIB" tcp "$out" 2>"$D/tcp-$dir.err"); then
        record error "TCP $dir: iperf3 failed (exit $rc: $(head -c 200 "$D/tcp-$dir.err" "$out" 2>/dev/null | tr '\n\t' '  '))"
        return 0
    fi
    record "tcp_${dir}_gbps" "${res% *}"
    record "tcp_${dir}_retr" "${res#* }"
    log "  $CASE TCP $dir: ${res% *} Gbit/s, ${res#* } retransmits"
}

measure_connrate() {
    local out="$D/conn.txt" c0 t0 rc=0 rate ndone failed mean p99
    c0=$([ -z "$SW_PIDS" ] || cpu_ticks "$SW_PIDS")
    t0=$(now)
    client $((CONN_SECS + NAT_GRACE)) "$out" nsenter --net="$NS_A" \
        "$PYTHON" "$CONNRATE" client "$TARGET" "$CR_PORT" "$CONN_SECS" || rc=$?
    if [ $rc -ne 0 ]; then
        record error "connection rate: client failed (exit $rc: $(head -c 200 "$out" | tr '\n\t' '  '))"
        return 0
    fi
    [ -z "$SW_PIDS" ] || record cpu_conn_pct "$(cpu_pct_since "$c0" "$t0")"
    read -r rate ndone failed mean p99 <"$out"
    record conn_per_s "$rate"; record conn_failed "$failed"
    record conn_mean_ms "$mean"; record conn_p99_ms "$p99"
    log "  $CASE connections: $rate/s ($ndone in ${CONN_SECS} s, $failed failed, mean $mean ms)"
}

# Body of a NAT case round (called by case_round).
nat_round() {
    local t0 mtu=${CASE##*-}
    t0=$(now)
    case $CASE in
        nat-veth) setup_nat_veth ;;
        nat-veth6) setup_nat_veth6 ;;
        nat-tapnet-*) setup_nat_tapnet "$mtu" ;;
        nat-tapnet6-*) setup_nat_tapnet6 "$mtu" ;;
        nat-slirp-*) setup_nat_slirp "$mtu" ;;
        nat-pasta-*) setup_nat_pasta "$mtu" ;;
        nat-pasta6-*) setup_nat_pasta6 "$mtu" ;;
    esac
    start_connrate_server
    # Reachable when one connection gets the server's answer (at most 10 s).
    wait_for 10 in_ns "$NS_A" "$PYTHON" "$CONNRATE" client "$TARGET" "$CR_PORT" 0.1 ||
        { record error "host ($TARGET:$CR_PORT) not reachable from the sandbox after setup"; exit 1; }
    record setup_s "$(elapsed "$t0" "$(now)")"
    measure_nat_tcp up
    measure_nat_tcp down
    [ -z "$SW_PIDS" ] || record rss_tcp_mib "$(rss_mib "$SW_PIDS")"
    measure_connrate
    if [ -n "$SW_PIDS" ]; then
        record rss_mib "$(rss_mib "$SW_PIDS")"
        record hwm_mib "$(rss_mib "$SW_PIDS" VmHWM)"
    fi
}

# Body of a VM case round (called by case_round): one run of tests/vm_bench.rs, which boots the
# guest, sends VM_MIB MiB and prints one "VMBENCH key=value ..." line. The first round that
# probed the accelerator leaves its answer in $WORK/vm.accel for the others (no 20 s probe each).
vm_round() {
    local out="$D/vm.log" accel=$VM_ACCEL rc=0 line kv k v
    [ "$accel" != auto ] || [ ! -s "$WORK/vm.accel" ] || accel=$(cat "$WORK/vm.accel")
    client 900 "$out" env VM_BENCH_CASE="${CASE#vm-}" VM_BENCH_MIB="$VM_MIB" VM_BENCH_ACCEL="$accel" \
        "$VM_BENCH_BIN" --ignored --exact vm_throughput_for_bench --nocapture --test-threads 1 || rc=$?
    line=$(grep -m1 '^VMBENCH ' "$out" || true)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        record error "VM run failed (exit $rc): $(grep -m3 -E 'panicked|assertion|left:|right:|did not' "$out" | tr '\n\t' '  ' | head -c 300)"
        return 0
    fi
    for kv in ${line#VMBENCH }; do
        k=${kv%%=*} v=${kv#*=}
        case $k in
            mbit) record vm_mbit "$v" ;;
            secs|switch_cpu_s|switch_cpu_s_per_gib|qemu_cpu_s_per_gib|qemu_cpu_pct|boot_s) record "$k" "$v" ;;
            accel) [ -s "$WORK/vm.accel" ] || echo "$v" >"$WORK/vm.accel"
                   echo "$CASE $ROUND $v" >>"$WORK/vm.accels" ;;
            kvm_probe) [ "$v" = not-probed ] || echo "$v" >"$WORK/vm.probe" ;;
        esac
    done
    log "  $CASE: $(tr ' ' '\n' <<<"$line" | grep -E '^(accel|mbit|switch_cpu_s_per_gib|qemu_cpu_s_per_gib)=' | tr '\n' ' ')"
}

# One case, one round, in a subshell so that `set -e` aborts only this case: the subshell's
# EXIT trap tears its topology down, and its children are reaped by it (this machine's init
# does not reap orphans).
case_round() {
    CASE=$1 ROUND=$2
    D="$WORK/$CASE.$ROUND"
    REG="$WORK/reg.$CASE.$ROUND"
    : >"$REG"
    mkdir -p "$D"
    reg dir "$D"
    # Link name tag: prefix + one letter per case + round, plus a/b/br stays <= 15 chars.
    local code
    case $CASE in bridge) code=k ;; bridge6) code=K ;; vde) code=v ;; ovs) code=o ;; ovs-tso) code=s ;; nat-*) code=n ;; *) code=t ;; esac
    T="${P}${code}${ROUND}"
    trap sub_exit EXIT
    trap 'exit 143' TERM
    case $CASE in nat-*) nat_round; return ;; vm-*) vm_round; return ;; esac

    local t0
    t0=$(now)
    "setup_${CASE//-/_}"
    wait_reachable "$NS_A" "$IPB" || { record error "B ($IPB) not reachable from A after setup"; exit 1; }
    record setup_s "$(elapsed "$t0" "$(now)")"
    start_iperf_server "$NS_B"

    measure_tcp 1 tcp1 cpu1_pct
    measure_tcp 4 tcp4 cpu4_pct
    # Memory after the bulk tests: the switch has seen full queues by now.
    if [ -n "$SW_PIDS" ]; then
        record rss_mib "$(rss_mib "$SW_PIDS")"
        record hwm_mib "$(rss_mib "$SW_PIDS" VmHWM)"
    fi
    [ -z "$SW_EXTRA" ] || record rss_extra_mib "$(rss_mib "$SW_EXTRA")"
    measure_udp
    measure_ping
}

# Run "$@" in a subshell with its own `set -e`, in the background so that a signal to this
# script is handled at once (cleanup_all then stops the subshell); sets RC.
run_sub() {
    set +e
    (set -e; "$@") &
    SUB=$!
    wait "$SUB"
    RC=$?
    SUB=""
    set -e
}

run_case_round() {
    local rc
    log "round $2/$ROUNDS: $1"
    run_sub case_round "$1" "$2"
    rc=$RC
    if [ $rc -ne 0 ]; then
        log "round $2: case $1 failed (exit $rc)"
        grep -q "^$1	$2	error	" "$RESULTS" || printf '%s\t%s\terror\tsetup or measurement aborted (exit %s)\n' "$1" "$2" "$rc" >>"$RESULTS"
    fi
    [ $rc -ne 130 ] && [ $rc -ne 143 ] || exit $rc
}

# ------------------------------------------------------------------ scaling (tapnet only)

srecord() { printf '%s\t%s\t%s\n' "$PAIRS" "$1" "$2" >>"$SCALE_RESULTS"; }

scale_run() {
    PAIRS=$1
    D="$WORK/scale.$PAIRS"
    REG="$WORK/reg.scale.$PAIRS"
    : >"$REG"
    mkdir -p "$D"
    reg dir "$D"
    trap sub_exit EXIT
    trap 'exit 143' TERM

    local i t0 k out pids=() c0 c1 t1 sum res
    start_tapnet --offload on
    "$TAPNET" network create benchnet >/dev/null
    t0=$(now)
    for i in $(seq "$PAIRS"); do
        "$TAPNET" sandbox create "a$i" --net benchnet >/dev/null
        "$TAPNET" sandbox create "b$i" --net benchnet >/dev/null
    done
    srecord create_s "$(elapsed "$t0" "$(now)")"
    # Sanity: they all exist.
    i=$("$TAPNET" sandbox ls --format json | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$i" -eq $((2 * PAIRS)) ] || srecord error "expected $((2 * PAIRS)) sandboxes, sandbox ls shows $i"
    srecord rss_mib "$(rss_mib "$TN_PID")"

    NS_A=$(tn_netns a1) IPB=$(tn_ip b1)
    wait_reachable "$NS_A" "$IPB" || { srecord error "pair 1 not reachable"; exit 1; }
    out="$D/ping.txt"
    client $((PING_COUNT / 50 + 20)) "$out" nsenter --net="$NS_A" ping -n -c "$PING_COUNT" -i 0.01 -W 1 "$IPB" || true
    if res=$("$PYTHON" "$LIB" ping "$out"); then
        srecord ping_p50_us "$(cut -d' ' -f1 <<<"$res")"
        srecord ping_p99_us "$(cut -d' ' -f2 <<<"$res")"
    else
        srecord error "ping: no replies"
    fi

    # Concurrent single-stream iperf3 on the first k pairs, started together.
    k=$((PAIRS < SCALE_MAX_IPERF ? PAIRS : SCALE_MAX_IPERF))
    local ips=() nss=()
    for i in $(seq "$k"); do
        nss[i]=$(tn_netns "a$i"); ips[i]=$(tn_ip "b$i")
        start_iperf_server "$(tn_netns "b$i")"
        wait_reachable "${nss[i]}" "${ips[i]}" || srecord error "pair $i not reachable"
    done
    c0=$(cpu_ticks "$TN_PID"); t0=$(now)
    for i in $(seq "$k"); do
        client_bg $((SCALE_TCP_SECS + 30)) "$D/agg$i.json" nsenter --net="${nss[i]}" \
            iperf3 -c "${ips[i]}" -p "$IPERF_PORT" -t "$SCALE_TCP_SECS" -J
        pids+=("$CLIENT")
    done
    for i in "${!pids[@]}"; do wait "${pids[i]}" || srecord error "iperf3 pair $((i + 1)) failed"; done
    t1=$(now); c1=$(cpu_ticks "$TN_PID")
    sum=0
    for i in $(seq "$k"); do
        res=$("$PYTHON" "$LIB" tcp "$D/agg$i.json" 2>/dev/null) || continue
        sum=$(awk -v s="$sum" -v r="${res% *}" 'BEGIN { print s + r }')
    done
    srecord iperf_pairs "$k"
    srecord agg_gbps "$sum"
    srecord cpu_pct "$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", 100 * d / hz / w }')"
    srecord rss_after_mib "$(rss_mib "$TN_PID")"
    log "  scaling $PAIRS pairs: aggregate $sum Gbit/s over $k pairs"

    # Time the teardown of everything (it is part of what a user waits for). Stop our iperf3
    # servers first: reset would SIGKILL them, and they are not part of the switch's work.
    for i in $SERVERS; do stop_pid "$i" iperf3; done
    t0=$(now)
    "$TAPNET" system reset >/dev/null
    srecord reset_s "$(elapsed "$t0" "$(now)")"
}

run_scale() {
    local rc
    log "scaling: $1 pair(s)"
    run_sub scale_run "$1"
    rc=$RC
    if [ $rc -ne 0 ]; then
        log "scaling $1 pairs failed (exit $rc)"
        printf '%s\terror\taborted (exit %s)\n' "$1" "$rc" >>"$SCALE_RESULTS"
    fi
    [ $rc -ne 130 ] && [ $rc -ne 143 ] || exit $rc
}

# ------------------------------------------------------------------ main

install_pkgs
for c in iperf3 ping ip ss nsenter unshare "$PYTHON"; do
    command -v "$c" >/dev/null || { echo "bench.sh: $c not found" >&2; exit 1; }
done
case " $CASES " in *" tapnet"*|*" nat-tapnet"*) resolve_tapnet ;; *) [ "$SCALING" = 0 ] && [ "$MANY" = 0 ] || resolve_tapnet ;; esac
case " $CASES " in *" vm-"*) resolve_vm_bench ;; esac
PY_COMM=$(basename "$(command -v "$PYTHON")" | cut -c1-15)
TAPNET=${TAPNET:-/bin/false}   # the cleanup refers to it even when no tapnet case runs
[ -e /dev/net/tun ] || { echo "bench.sh: /dev/net/tun is missing" >&2; exit 1; }

RESULTS="$WORK/results.tsv"
SCALE_RESULTS="$WORK/scale.tsv"
META="$WORK/meta"
: >"$RESULTS"; : >"$SCALE_RESULTS"

{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command=$ORIG_CMD"
    echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "cores=$(nproc)"
    echo "kernel=$(uname -r)"
    # shellcheck disable=SC1091
    echo "distro=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "cc=$(cat /proc/sys/net/ipv4/tcp_congestion_control)"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    vers="iperf3 $(iperf3 --version | awk 'NR==1 { print $2 }')"
    if command -v vde_switch >/dev/null; then
        pkg=$(dpkg -S "$(command -v vde_switch)" 2>/dev/null | cut -d: -f1) || pkg=vde2
        vers+=", vde_switch ($pkg) $(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || echo '?')"
    fi
    ! command -v ovs-vswitchd >/dev/null || vers+=", Open vSwitch $(ovs-vswitchd --version | awk 'NR==1 { print $NF }')"
    ! command -v slirp4netns >/dev/null || vers+=", slirp4netns $(dpkg-query -W -f '${Version}' slirp4netns 2>/dev/null || slirp4netns --version | awk 'NR==1 { print $NF }')"
    ! command -v pasta >/dev/null || vers+=", pasta (passt) $(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo '?')"
    case " $CASES " in *" vm-"*)
        vers+=", QEMU $(qemu-system-x86_64 --version 2>/dev/null | awk 'NR==1 { print $4 }')"
        vers+=", guest $(ls "${CARGO_TARGET_DIR:-$REPO/target}/tmp/vm-guest" 2>/dev/null | grep -m1 linux-image || echo '?')" ;;
    esac
    echo "versions=$vers"
    if [ "$TAPNET" != /bin/false ]; then
        echo "tapnet_version=$("$TAPNET" --version 2>/dev/null) (git $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'))"
    fi
    echo "tapnet_args=$TAPNET_ARGS"
    echo "rounds=$ROUNDS"; echo "tcp_secs=$TCP_SECS"; echo "udp_secs=$UDP_SECS"; echo "ping_count=$PING_COUNT"
    echo "scale_tcp_secs=$SCALE_TCP_SECS"; echo "scale_max_iperf=$SCALE_MAX_IPERF"
    echo "conn_secs=$CONN_SECS"; echo "nat_grace=$NAT_GRACE"; echo "vm_mib=$VM_MIB"
} >"$META"

log "cases: $CASES; rounds: $ROUNDS; work dir $WORK"
for round in $(seq "$ROUNDS"); do
    for c in $CASES; do run_case_round "$c" "$round"; done
done
if [ "$SCALING" != 0 ]; then
    for n in $SCALE_PAIRS; do run_scale "$n"; done
fi
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"
if [ -s "$WORK/vm.accels" ]; then
    echo "vm_accel=$(awk '{ print $3 }' "$WORK/vm.accels" | sort | uniq -c | awk '{ printf "%s%s (%s runs)", (NR > 1 ? ", " : ""), $2, $1 }')" >>"$META"
    echo "vm_kvm_probe=$(cat "$WORK/vm.probe" 2>/dev/null || echo "not probed (VM_ACCEL=$VM_ACCEL)")" >>"$META"
fi

mkdir -p "$(dirname "$OUT")"
report_args=(--meta "$META" --results "$RESULTS")
[ "$SCALING" = 0 ] || report_args+=(--scale "$SCALE_RESULTS")
"$PYTHON" "$LIB" report "${report_args[@]}" >"$OUT"
# Raw numbers next to the table, for anyone who wants to recompute.
cp "$RESULTS" "${OUT%.md}.tsv"
[ "$SCALING" = 0 ] || cp "$SCALE_RESULTS" "${OUT%.md}-scaling.tsv"
if [ "$MANY" != 0 ]; then
    log "many sandboxes: $MANY"
    { echo; echo "## Many sandboxes"; echo; echo '```'; "$REPO/scripts/scale-bench.sh" "$MANY" 1000 "$TAPNET"; echo '```'; } >>"$OUT"
fi
log "results written to $OUT"
cat "$OUT"
