#!/usr/bin/env bash
# Where a ping round trip through tapnet goes: one daemon, one network, two sandboxes a and b,
# `ping -c COUNT -i 0.01` from a to b while bpftrace counts, for the daemon's threads only:
# system calls per round trip (by thread and call), wake-ups of each thread, how many
# different datapath threads read frames (a hand-off between workers shows as two), and the
# time spent inside each worker's read, write and epoll_wait (the write includes the receiving
# sandbox's stack, which runs inline in it). Must run as root; installs bpftrace if missing.
#
#   scripts/profile-rtt.sh [COUNT] [-- extra daemon args, e.g. --tap-queues single]
#
# Environment: TAPNET (binary; default: cargo build --release); SWITCH=vde profiles VDE's
# vde_switch the same way instead (two TAPs of its own moved into namespaces a and b), for the
# side-by-side comparison in BENCHMARKS.md "Ping latency against VDE".
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${1:-1000}
shift || true
[ "${1:-}" != "--" ] || shift
# shellcheck source=scripts/profile/need.sh
. "$REPO/scripts/profile/need.sh"
need_root "bpftrace and namespaces"
need_tools bpftrace:bpftrace
need_tracefs
if [ "${SWITCH:-tapnet}" = vde ]; then
    need_tools vde_switch:vde2
    # shellcheck source=scripts/profile/vde-pair.sh
    . "$REPO/scripts/profile/vde-pair.sh"
    THREADS=vde_switch
else
    # shellcheck source=scripts/profile/two-sandboxes.sh
    . "$REPO/scripts/profile/two-sandboxes.sh"
    THREADS=datapath
fi
nsenter --net="$DIR/netns/a" ping -c 20 -i 0.01 -q "$B_IP" >/dev/null # learn MACs, warm up

cat >"$DIR/rtt.bt" <<'EOF'
tracepoint:syscalls:sys_enter_read,tracepoint:syscalls:sys_enter_write,
tracepoint:syscalls:sys_enter_epoll_wait,tracepoint:syscalls:sys_enter_epoll_pwait,
tracepoint:syscalls:sys_enter_poll,tracepoint:syscalls:sys_enter_ppoll
/pid == $1 && strncmp(comm, str($2), 8) == 0/ { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_read /@start[tid]/ {
  @read_ns[comm] = stats(nsecs - @start[tid]); delete(@start[tid]);
  if (args->ret > 0) { @frames_read_by[comm] = count(); } else { @empty_reads[comm] = count(); } }
tracepoint:syscalls:sys_exit_write /@start[tid]/ {
  @write_ns[comm] = stats(nsecs - @start[tid]); delete(@start[tid]); }
tracepoint:syscalls:sys_exit_epoll_wait,tracepoint:syscalls:sys_exit_epoll_pwait,
tracepoint:syscalls:sys_exit_poll,tracepoint:syscalls:sys_exit_ppoll /@start[tid]/ {
  $d = nsecs - @start[tid]; delete(@start[tid]);
  if (args->ret == 0) { @epoll_empty[comm] = count(); }
  else if ($d < 4000) { @epoll_ready_at_once[comm] = count(); }
  else { @epoll_slept[comm] = count(); @epoll_sleep_ns[comm] = stats($d); } }
tracepoint:raw_syscalls:sys_enter /pid == $1/ { @syscalls[comm] = count(); }
tracepoint:sched:sched_wakeup /args->pid != 0/ { @waker_of[args->pid] = count(); }
tracepoint:sched:sched_switch /pid == $1/ { @cpu_switches_in[comm] = count(); }
EOF
bpftrace "$DIR/rtt.bt" "$PID" "$THREADS" >"$DIR/bt.out" 2>"$DIR/bt.err" &
BT=$!
sleep 3
nsenter --net="$DIR/netns/a" ping -c "$COUNT" -i 0.01 -q "$B_IP" >"$DIR/ping.out"
kill -INT "$BT"
wait "$BT" || true

echo "# ${SWITCH:-tapnet} ping round trip profile: $COUNT round trips, daemon args: ${*:-(none)}"
echo "# $(tail -1 "$DIR/ping.out")"
echo "# per round trip (counts divided by $COUNT), daemon threads only"
python3 - "$DIR/bt.out" "$COUNT" "$PID" <<'EOF'
import re, sys, os
out, count, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tids = {}
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        tids[t] = open(f"/proc/{pid}/task/{t}/comm").read().strip()
    except OSError:
        pass
wakes = {}
for line in open(out):
    m = re.match(r"@(\w+)\[(.*?)\]: (.*)", line.strip())
    if not m:
        continue
    name, key, val = m.groups()
    if name == "waker_of":
        if key in tids:
            wakes[tids[key]] = wakes.get(tids[key], 0) + int(val)
        continue
    if name.endswith("_ns"):
        s = dict(re.findall(r"(\w+) (\d+)", val))
        print(f"{name:22} {key:16} calls/rtt {int(s['count'])/count:6.2f}  mean {int(s['average'])/1000:7.2f} us")
    else:
        print(f"{name:22} {key:16} per rtt   {int(val)/count:6.2f}")
for comm, n in sorted(wakes.items()):
    if n / count >= 0.05:
        print(f"{'wake-ups':22} {comm:16} per rtt   {n/count:6.2f}")
EOF
