#!/usr/bin/env bash
# Restart without teardown, measured (RELIABILITY.md, "Restart without teardown"): make N
# sandboxes on one network in a fresh state dir, then, with the fd keeper and without it
# (TAPNET_FD_KEEPER=off, the old behaviour), `kill -9` the daemon ROUNDS times and print how long
# the killed process took to go (its lock free) and how long the next `sandbox ls` (which starts
# the next daemon) took. Root; removes everything it made (`system reset`) at the end.
#
#   scripts/restart-bench.sh [N [ROUNDS [BIN]]]      # defaults: 300 2 target/debug/tapnet
set -euo pipefail
N=${1:-300}
ROUNDS=${2:-2}
BIN=${3:-"$(dirname "$0")/../target/debug/tapnet"}
S=$(mktemp -d /tmp/tapnet-restart-bench.XXXXXX)
trap '"$BIN" --state-dir "$S" --no-autostart system reset >/dev/null 2>&1 || true' EXIT
T() { "$BIN" --state-dir "$S" "$@"; }
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
serving() { until T --no-autostart sandbox ls >/dev/null 2>&1; do T sandbox ls >/dev/null 2>&1 || sleep 0.5; done; }

round() {
    serving
    local pid t0 rc
    pid=$(cat "$S/tapnet.pid")
    t0=$(date +%s%N)
    kill -9 "$pid"
    until flock -n "$S/tapnet.lock" true; do sleep 0.005; done
    echo "  killed daemon gone after $(ms "$t0") ms"
    t0=$(date +%s%N)
    if T sandbox ls >/dev/null 2>"$S.err"; then rc=ok; else rc="failed: $(head -c 120 "$S.err")"; fi
    echo "  then sandbox ls: $rc, $(ms "$t0") ms"
}

T network create n >/dev/null
seq 0 $((N - 1)) | xargs -P 3 -I{} "$BIN" --state-dir "$S" sandbox create s{} --net n >/dev/null
echo "$N sandboxes, with the fd keeper:"
for _ in $(seq "$ROUNDS"); do round; done
serving
T_STOP=$(date +%s%N)
kill -TERM "$(cat "$S/tapnet.pid")"
while [ -e "$S/tapnet.pid" ] || [ -e "$S/fdkeeper.pid" ]; do sleep 0.1; done
echo "clean stop (SIGTERM, TAPs removed): $(ms "$T_STOP") ms"
echo "$N sandboxes, without it (TAPNET_FD_KEEPER=off):"
export TAPNET_FD_KEEPER=off
for _ in $(seq "$ROUNDS"); do round; done
rm -f "$S.err"
