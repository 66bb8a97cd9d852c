# Sourced by scripts/bench.sh and scripts/profile-overlay.sh: one overlay network (VNI 42) across
# two running daemons, the two "hosts" (VTEPs on 127.77.0.2 and 127.77.0.3, each daemon
# handing out its half of 10.77.3.0/24), and one sandbox on each: a on the first, b on the
# second. Uses $TAPNET.
#
#   overlay_pair FIRST_STATE_DIR SECOND_STATE_DIR NETWORK
overlay_pair() {
    local first=$1 second=$2 net=$3
    "$TAPNET" --state-dir "$first" network create "$net" --driver overlay --vni 42 \
        --subnet 10.77.3.0/24 --ip-range 10.77.3.0/25 -o vtep=127.77.0.2 -o peers=127.77.0.3 >/dev/null
    "$TAPNET" --state-dir "$second" network create "$net" --driver overlay --vni 42 \
        --subnet 10.77.3.0/24 --ip-range 10.77.3.128/25 -o vtep=127.77.0.3 -o peers=127.77.0.2 >/dev/null
    "$TAPNET" --state-dir "$first" sandbox create a --net "$net" >/dev/null
    "$TAPNET" --state-dir "$second" sandbox create b --net "$net" >/dev/null
}
