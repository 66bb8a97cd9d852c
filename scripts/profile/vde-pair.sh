# Sourced by scripts/profile-rtt.sh with SWITCH=vde: VDE's vde_switch with two TAPs of its own,
# moved into network namespaces a and b (pinned under a throwaway dir, addressed 10.77.0.1 and
# .2/24, no route out). Sets DIR, PID (the switch) and B_IP; removes everything on exit.
DIR=$(mktemp -d /tmp/tnprof.XXXXXX)
PID=""
P=vp$$
TAPS="${P}a ${P}b"
cleanup() {
    [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
    for ns in a b; do
        umount "$DIR/netns/$ns" 2>/dev/null || true
    done
    for t in $TAPS; do ip link del "$t" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR/netns"
for ns in a b; do
    touch "$DIR/netns/$ns"
    unshare --net="$DIR/netns/$ns" true
done
mkfifo "$DIR/console"
# vde_switch makes the TAPs and exits on EOF of its console: a fifo opened read-write never ends.
vde_switch -s "$DIR/ctl" -M "$DIR/mgmt" -t "${P}a" -t "${P}b" 0<>"$DIR/console" >"$DIR/vde.log" 2>&1 &
PID=$!
for _ in $(seq 50); do ip link show "${P}b" >/dev/null 2>&1 && break; sleep 0.1; done
i=1
for ns in a b; do
    ip link set "${P}${ns}" netns "$DIR/netns/$ns"
    nsenter --net="$DIR/netns/$ns" ip addr add "10.77.0.$i/24" dev "${P}${ns}"
    nsenter --net="$DIR/netns/$ns" ip link set "${P}${ns}" up
    nsenter --net="$DIR/netns/$ns" ip link set lo up
    i=$((i + 1))
done
B_IP=10.77.0.2
