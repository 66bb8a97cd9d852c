# Sourced by scripts/profile-*.sh: a tapnet daemon (built unless TAPNET is set; extra daemon
# arguments from "$@") in a throwaway state dir, one network and two sandboxes a and b.
# Sets TAPNET, DIR (the state dir), PID (the daemon) and B_IP, and removes everything on exit.
# shellcheck source=scripts/profile/need.sh
. "$REPO/scripts/profile/need.sh"
need_tapnet

DIR=$(mktemp -d /tmp/tnprof.XXXXXX)
PID=""
cleanup() {
    "$TAPNET" --state-dir "$DIR" system reset >/dev/null 2>&1 || true
    [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$TAPNET" --state-dir "$DIR" daemon "$@" >"$DIR/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -S "$DIR/tapnet.sock" ] && break; sleep 0.1; done
"$TAPNET" --state-dir "$DIR" network create profnet >/dev/null
"$TAPNET" --state-dir "$DIR" sandbox create a --net profnet >/dev/null
"$TAPNET" --state-dir "$DIR" sandbox create b --net profnet >/dev/null
B_IP=$("$TAPNET" --state-dir "$DIR" sandbox inspect b --format json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["interfaces"][0]["ipv4"].split("/")[0])')
