#!/usr/bin/env python3
"""Parsing and reporting helpers for scripts/bench.sh (standard library only).

Subcommands:
  tcp FILE              iperf3 -J output of a TCP test  -> "GBIT_PER_S RETRANSMITS"
  udp FILE SECONDS LEN  iperf3 -J output of a UDP test  -> "RX_KPPS SENT_KPPS LOSS_PCT"
  ping FILE             plain ping output               -> "P50_US P99_US AVG_US LOSS_PCT RECEIVED"
  freeport ADDR         a TCP port on ADDR that is free right now
  iperf-tail FILE       text output of an iperf3 server (-i 1) -> its last interval lines, on one line
  report --meta F --results F [--scale F]   markdown fragment on stdout

The result files are tab-separated: "case round metric value" for the side-by-side run and
"pairs metric value" for the scaling run. A metric "error" carries a text instead of a number.
Cases named nat-* (sandbox to the host's loopback through a NAT) get tables of their own, and
so do cases named vm-* (a QEMU guest's TCP send, tests/vm_bench.rs), compared with vm-passt.
"""

import json
import math
import re
import socket
import statistics
import sys
from collections import defaultdict


def die(msg):
    print(f"benchlib: {msg}", file=sys.stderr)
    sys.exit(1)


def load_iperf(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{path}: not iperf3 JSON ({e})")
    if "error" in doc:
        die(f"{path}: iperf3 error: {doc['error']}")
    return doc


def cmd_tcp(path):
    end = load_iperf(path)["end"]
    gbps = end["sum_received"]["bits_per_second"] / 1e9
    retr = end.get("sum_sent", {}).get("retransmits", 0)
    print(f"{gbps:.3f} {retr}")


def cmd_udp(path, seconds, length):
    end = load_iperf(path)["end"]
    rx = end["sum_received"]
    sent = end["sum_sent"]
    # Receiver's count: datagrams it saw (highest sequence number minus the gaps). Divide by
    # the nominal test length: the receiver's own interval includes the idle tail.
    received = rx["packets"] - rx["lost_packets"]
    if received <= 0 and rx.get("bytes"):
        received = rx["bytes"] // int(length)
    secs = float(seconds)
    sent_pkts = sent["packets"] or sent["bytes"] // int(length)
    loss = 100.0 * (1 - received / sent_pkts) if sent_pkts else 100.0
    print(f"{received / secs / 1e3:.1f} {sent_pkts / secs / 1e3:.1f} {max(loss, 0.0):.2f}")


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def cmd_ping(path):
    times = []
    transmitted = None
    with open(path) as f:
        for line in f:
            m = re.search(r"time[=<]([0-9.]+) ms", line)
            if m:
                times.append(float(m.group(1)) * 1000.0)
            m = re.search(r"(\d+) packets transmitted", line)
            if m:
                transmitted = int(m.group(1))
    if not times:
        die(f"{path}: no replies")
    times.sort()
    sent = transmitted or len(times)
    loss = 100.0 * (sent - len(times)) / sent
    print(
        f"{statistics.median(times):.0f} {percentile(times, 99):.0f} "
        f"{statistics.mean(times):.0f} {loss:.1f} {len(times)}"
    )


def cmd_freeport(addr):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.bind((addr, 0))
    print(s.getsockname()[1])
    s.close()


def cmd_iperf_tail(path):
    lines = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if re.search(r"\bsec\b.*bits/sec", line) and "receiver" not in line and "sender" not in line:
                    text = " ".join(line.split()[2:])
                    if text not in lines:  # the summary a killed server prints repeats intervals
                        lines.append(text)
    except OSError:
        pass
    total = len(lines)
    print(f"{total} intervals; last: " + " | ".join(lines[-3:]) if lines else "no intervals")


# ---------------------------------------------------------------- report

CASE_LABELS = {
    "bridge": "Linux bridge + 2 veth (kernel)",
    "bridge6": "Linux bridge + 2 veth (kernel), over IPv6",
    "tapnet6": "tapnet (offload on), over IPv6",
    "tapnet": "tapnet (default: offload on, io_uring)",
    "tapnet-nooff": "tapnet --offload off",
    "tapnet-uring": "tapnet --datapath-io uring",
    "tapnet-epoll": "tapnet --datapath-io epoll",
    "tapnet-impair-other": "tapnet, impairment on another port",
    "tapnet-capture": "tapnet, one capture running",
    "tapnet-napi": "tapnet, TAPs with IFF_NAPI",
    "vde": "VDE vde_switch, 2 TAP",
    "ovs": "OVS netdev datapath, 2 internal (TAP) ports",
    "ovs-tso": "OVS netdev + userspace-tso-enable",
    "nat-veth": "kernel: veth + local delivery (reference)",
    "nat-tapnet-1500": "tapnet gateway NAT, MTU 1500",
    "nat-tapnet-65520": "tapnet gateway NAT, MTU 65520",
    "nat-slirp-1500": "slirp4netns, MTU 1500",
    "nat-slirp-65520": "slirp4netns, MTU 65520",
    "nat-pasta-1500": "pasta, MTU 1500",
    "nat-pasta-65520": "pasta, MTU 65520",
    "nat-veth6": "kernel: veth + local delivery, over IPv6 (reference)",
    "nat-tapnet6-1500": "tapnet gateway NAT, MTU 1500, over IPv6",
    "nat-pasta6-1500": "pasta, MTU 1500, over IPv6",
    "vm-tapnet-socket": "tapnet socket port (-netdev stream) → sandbox",
    "vm-tapnet-vhost": "tapnet vhost-user port → sandbox",
    "vm-qemu-user": "QEMU user networking (-netdev user) → host loopback",
    "vm-passt": "passt (-netdev stream) → host loopback (reference)",
}

# (metric, header, decimals, ratio to the bridge?)
MAIN_COLUMNS = [
    ("tcp1_gbps", "TCP 1 stream Gbit/s", None, True),
    ("tcp4_gbps", "TCP 4 streams Gbit/s", None, True),
    ("udp_rx_kpps", "UDP 64 B rx kpps", 0, True),
    ("ping_p50_us", "ping p50 µs", 0, True),
    ("ping_p99_us", "ping p99 µs", 0, True),
    ("cpu1_pct", "switch CPU % (TCP 1)", 0, False),
    ("rss_mib", "switch RSS MiB", 1, False),
]


def fmt(v, decimals=None):
    if v is None:
        return "n/a"
    if decimals is None:  # throughput: 3 significant-ish digits
        decimals = 2 if abs(v) < 10 else 1
    return f"{v:.{decimals}f}"


def read_kv(path):
    meta = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def read_results(path):
    vals = defaultdict(lambda: defaultdict(list))  # case -> metric -> [values]
    errors = defaultdict(list)
    order = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            case, rnd, metric, value = parts
            if case not in order:
                order.append(case)
            if metric == "error":
                errors[case].append(f"round {rnd}: {value}")
                continue
            try:
                vals[case][metric].append(float(value))
            except ValueError:
                pass
    return order, vals, errors


def med(xs):
    return statistics.median(xs) if xs else None


def spread(xs, decimals=None):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt(xs[0], decimals)
    return f"{fmt(med(xs), decimals)} [{fmt(min(xs), decimals)}-{fmt(max(xs), decimals)}]"


# The kernel case each case is compared with: its own address family's bridge.
KERNEL_CASES = ("bridge", "bridge6")


def kernel_of(case):
    return "bridge6" if case.endswith("6") and not case.startswith("nat-") else "bridge"


def main_table(order, vals, meta):
    out = ["| case | " + " | ".join(c[1] for c in MAIN_COLUMNS) + " |"]
    out.append("|---" * (len(MAIN_COLUMNS) + 1) + "|")
    for case in order:
        cells = []
        base = vals.get(kernel_of(case), {})
        for metric, _, dec, ratio in MAIN_COLUMNS:
            v = med(vals[case].get(metric, []))
            if metric in ("cpu1_pct", "rss_mib") and case in KERNEL_CASES:
                cells.append("kernel")
                continue
            cell = fmt(v, dec)
            b = med(base.get(metric, []))
            if ratio and v is not None and b:
                cell += f" ({v / b:.2f}x)"
            if metric == "rss_mib" and v is not None:
                extra = med(vals[case].get("rss_extra_mib", []))
                if extra:
                    cell += f" (+{extra:.1f} ovsdb)"
            cells.append(cell)
        label = CASE_LABELS.get(case, case)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def detail_table(order, vals, meta):
    cols = [
        ("rounds ok", lambda v: str(len(v.get("tcp1_gbps", [])))),
        ("TCP 1 [min-max]", lambda v: spread(v.get("tcp1_gbps", []))),
        ("retransmits TCP 1", lambda v: fmt(med(v.get("tcp1_retr", [])), 0)),
        ("TCP 4 [min-max]", lambda v: spread(v.get("tcp4_gbps", []))),
        ("retransmits TCP 4", lambda v: fmt(med(v.get("tcp4_retr", [])), 0)),
        ("UDP rx kpps [min-max]", lambda v: spread(v.get("udp_rx_kpps", []), 0)),
        ("UDP sent kpps", lambda v: fmt(med(v.get("udp_tx_kpps", [])), 0)),
        ("UDP loss %", lambda v: fmt(med(v.get("udp_loss_pct", [])), 1)),
        ("ping avg µs", lambda v: fmt(med(v.get("ping_avg_us", [])), 0)),
        ("ping loss %", lambda v: fmt(med(v.get("ping_loss_pct", [])), 1)),
        ("switch CPU % (TCP 4)", lambda v: fmt(med(v.get("cpu4_pct", [])), 0)),
        ("switch peak RSS MiB", lambda v: fmt(med(v.get("hwm_mib", [])), 1)),
        ("setup s", lambda v: fmt(med(v.get("setup_s", [])), 2)),
    ]
    out = ["| case | " + " | ".join(c[0] for c in cols) + " |"]
    out.append("|---" * (len(cols) + 1) + "|")
    for case in order:
        v = vals[case]
        cells = [c[1](v) for c in cols]
        if case in KERNEL_CASES:
            cells[10] = cells[11] = "kernel"
        out.append(f"| {CASE_LABELS.get(case, case)} | " + " | ".join(cells) + " |")
    return out


def scale_table(path, meta):
    rows = defaultdict(dict)
    errors = defaultdict(list)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            pairs, metric, value = parts
            if metric == "error":
                errors[int(pairs)].append(value)
                continue
            try:
                rows[int(pairs)][metric] = float(value)
            except ValueError:
                pass
    out = [
        "| pairs | sandboxes | create all s (ms per sandbox) | daemon RSS MiB after create "
        "| RSS after traffic | ping p50 / p99 µs (pair 1) | pairs running iperf3 "
        "| aggregate TCP Gbit/s | daemon CPU % | reset s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pairs in sorted(set(rows) | set(errors)):
        r = rows.get(pairs, {})
        g = r.get
        create = g("create_s")
        per = f" ({1000 * create / (2 * pairs):.0f})" if create is not None else ""
        out.append(
            f"| {pairs} | {2 * pairs} | {fmt(create, 2)}{per} | {fmt(g('rss_mib'), 1)} "
            f"| {fmt(g('rss_after_mib'), 1)} | {fmt(g('ping_p50_us'), 0)} / {fmt(g('ping_p99_us'), 0)} "
            f"| {fmt(g('iperf_pairs'), 0)} | {fmt(g('agg_gbps'))} | {fmt(g('cpu_pct'), 0)} "
            f"| {fmt(g('reset_s'), 2)} |"
        )
    notes = [f"- {p} pairs: {e}" for p in sorted(errors) for e in errors[p]]
    return out, notes


# The kernel reference each NAT case is compared with: the veth of its own address family
# (nat-veth6 for the IPv6 cases, whose tool part ends in 6: nat-tapnet6-1500).
NAT_KERNEL_CASES = ("nat-veth", "nat-veth6")


def nat_kernel_of(case):
    return "nat-veth6" if case.split("-")[1].endswith("6") else "nat-veth"


# (metric, header, decimals, ratio to the case's nat_kernel_of()?)
NAT_COLUMNS = [
    ("tcp_up_gbps", "TCP sandbox→host Gbit/s", None, True),
    ("tcp_down_gbps", "TCP host→sandbox Gbit/s", None, True),
    ("conn_per_s", "connections/s", 0, True),
    ("cpu_up_pct", "NAT CPU % (→host)", 0, False),
    ("cpu_down_pct", "NAT CPU % (→sandbox)", 0, False),
    ("cpu_conn_pct", "NAT CPU % (conn)", 0, False),
    ("rss_tcp_mib", "NAT RSS MiB after TCP", 1, False),
    ("rss_mib", "NAT RSS MiB after conns", 1, False),
]


def nat_table(order, vals, rounds):
    out = ["| case | " + " | ".join(c[1] for c in NAT_COLUMNS) + " |"]
    out.append("|---" * (len(NAT_COLUMNS) + 1) + "|")
    for case in order:
        cells = []
        n = len(rounds[case])
        base = vals.get(nat_kernel_of(case), {})
        for metric, _, dec, ratio in NAT_COLUMNS:
            xs = vals[case].get(metric, [])
            if case in NAT_KERNEL_CASES and not ratio:
                cells.append("kernel")
                continue
            v = med(xs)
            cell = fmt(v, dec)
            b = med(base.get(metric, []))
            if ratio and v is not None and b:
                cell += f" ({v / b:.2f}x)"
            if ratio and len(xs) < n:
                stalls = len(vals[case].get("stall_" + metric.split("_")[1], []))
                what = f", {stalls} stalled" if stalls and metric.startswith("tcp_") else ""
                cell += f" [{len(xs)} of {n} rounds ok{what}]" if xs else f" [0 of {n} rounds ok{what}]"
            cells.append(cell)
        out.append(f"| {CASE_LABELS.get(case, case)} | " + " | ".join(cells) + " |")
    return out


def nat_detail_table(order, vals):
    def stalls(v, d):
        k = len(v.get("stall_" + d, []))
        return str(k)
    cols = [
        ("TCP →host [min-max]", lambda v: spread(v.get("tcp_up_gbps", []))),
        ("retransmits →host", lambda v: fmt(med(v.get("tcp_up_retr", [])), 0)),
        ("stalls →host", lambda v: stalls(v, "up")),
        ("TCP →sandbox [min-max]", lambda v: spread(v.get("tcp_down_gbps", []))),
        ("retransmits →sandbox", lambda v: fmt(med(v.get("tcp_down_retr", [])), 0)),
        ("stalls →sandbox", lambda v: stalls(v, "down")),
        ("conn/s [min-max]", lambda v: spread(v.get("conn_per_s", []), 0)),
        ("conn mean / p99 ms", lambda v: f"{fmt(med(v.get('conn_mean_ms', [])), 2)} / "
                                         f"{fmt(med(v.get('conn_p99_ms', [])), 2)}"),
        ("failed conns", lambda v: fmt(med(v.get("conn_failed", [])), 0)),
        ("NAT peak RSS MiB", lambda v: fmt(med(v.get("hwm_mib", [])), 1)),
        ("setup s", lambda v: fmt(med(v.get("setup_s", [])), 2)),
    ]
    out = ["| case | " + " | ".join(c[0] for c in cols) + " |"]
    out.append("|---" * (len(cols) + 1) + "|")
    for case in order:
        v = vals[case]
        cells = [c[1](v) for c in cols]
        if case in NAT_KERNEL_CASES:
            cells[9] = "kernel"
        cells[8] = cells[8] if v.get("conn_per_s") else "n/a"
        out.append(f"| {CASE_LABELS.get(case, case)} | " + " | ".join(cells) + " |")
    return out


def goal_line(vals):
    t = med(vals.get("nat-tapnet-1500", {}).get("tcp_up_gbps", []))
    s = med(vals.get("nat-slirp-65520", {}).get("tcp_up_gbps", []))
    if t is None or s is None:
        return []
    verdict = "met" if t >= s else "not met"
    return ["", f"Goal (tapnet NAT at MTU 1500 at least as fast as slirp4netns at MTU 65520, "
                f"sandbox→host): {fmt(t)} vs {fmt(s)} Gbit/s, {t / s:.2f}x: **{verdict}**."]


VM_BASE = "vm-passt"

# (metric, header, decimals, ratio to vm-passt?)
VM_COLUMNS = [
    ("vm_mbit", "guest→receiver TCP Mbit/s", 1, True),
    ("switch_cpu_s_per_gib", "switch CPU s per GiB", 1, True),
    ("qemu_cpu_s_per_gib", "QEMU CPU s per GiB", 1, False),
    ("qemu_cpu_pct", "QEMU CPU % during the send", 0, False),
]


def vm_table(order, vals, rounds):
    out = ["| case | " + " | ".join(c[1] for c in VM_COLUMNS) + " |"]
    out.append("|---" * (len(VM_COLUMNS) + 1) + "|")
    base = vals.get(VM_BASE, {})
    for case in order:
        cells = []
        n = len(rounds[case])
        for metric, _, dec, ratio in VM_COLUMNS:
            xs = vals[case].get(metric, [])
            v = med(xs)
            cell = fmt(v, dec)
            if metric == "switch_cpu_s_per_gib" and case == "vm-qemu-user" and v is not None:
                cell += " (all of QEMU)"
            else:
                b = med(base.get(metric, []))
                if ratio and v is not None and b:
                    cell += f" ({v / b:.2f}x)"
            if ratio and len(xs) < n:
                cell += f" [{len(xs)} of {n} rounds ok]"
            cells.append(cell)
        out.append(f"| {CASE_LABELS.get(case, case)} | " + " | ".join(cells) + " |")
    return out


def vm_detail_table(order, vals):
    cols = [
        ("rounds ok", lambda v: str(len(v.get("vm_mbit", [])))),
        ("Mbit/s [min-max]", lambda v: spread(v.get("vm_mbit", []), 1)),
        ("switch CPU s/GiB [min-max]", lambda v: spread(v.get("switch_cpu_s_per_gib", []), 1)),
        ("QEMU CPU s/GiB [min-max]", lambda v: spread(v.get("qemu_cpu_s_per_gib", []), 1)),
        ("send s", lambda v: fmt(med(v.get("secs", [])), 2)),
        ("boot s", lambda v: fmt(med(v.get("boot_s", [])), 1)),
    ]
    out = ["| case | " + " | ".join(c[0] for c in cols) + " |"]
    out.append("|---" * (len(cols) + 1) + "|")
    for case in order:
        cells = [c[1](vals[case]) for c in cols]
        out.append(f"| {CASE_LABELS.get(case, case)} | " + " | ".join(cells) + " |")
    return out


def vm_goal_lines(vals, accel):
    def m(case, metric="vm_mbit"):
        return med(vals.get(case, {}).get(metric, []))
    p, sock, vhost = m("vm-passt"), m("vm-tapnet-socket"), m("vm-tapnet-vhost")
    others = [x for x in (sock, m("vm-qemu-user"), p) if x is not None]
    tcg = "tcg" in (accel or "")
    caveat = (" Under TCG the guest's emulation bounds every case (see QEMU CPU %), so these "
              "verdicts measure QEMU more than the switches; the CPU per GiB columns compare "
              "the switches." if tcg else "")
    out = []
    if p and sock is not None:
        verdict = "met" if sock >= p else "not met"
        out.append(f"- socket port at least passt's throughput: {fmt(sock, 1)} vs {fmt(p, 1)} "
                   f"Mbit/s, {sock / p:.2f}x: **{verdict}**")
    if p and vhost is not None:
        verdict = "met" if vhost >= 2 * p and all(vhost >= x for x in others) else "not met"
        out.append(f"- vhost-user the fastest and at least 2x passt: {fmt(vhost, 1)} vs "
                   f"{fmt(p, 1)} Mbit/s, {vhost / p:.2f}x: **{verdict}**")
    if not out:
        return []
    return ["", "Goals of issue 21 (medians of this run)." + caveat, ""] + out


def read_rounds(path):
    rounds = defaultdict(set)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                rounds[parts[0]].add(parts[1])
    return rounds


def cmd_report(args):
    opts = dict(zip(args[0::2], args[1::2]))
    meta = read_kv(opts["--meta"])
    order, vals, errors = read_results(opts["--results"])
    rounds = read_rounds(opts["--results"])
    nat_order = [c for c in order if c.startswith("nat-")]
    vm_order = [c for c in order if c.startswith("vm-")]
    sw_order = [c for c in order if not c.startswith(("nat-", "vm-"))]
    m = meta.get
    out = [
        f"### tapnet benchmark, {m('date', '?')}",
        "",
        f"- command: `{m('command', '?')}`",
        f"- machine: {m('cpu', '?')}, {m('cores', '?')} cores, kernel {m('kernel', '?')}, "
        f"{m('distro', '?')}, TCP congestion control {m('cc', '?')}",
        f"- load average at start / end: {m('load_start', '?')} / {m('load_end', '?')}",
        f"- tools: {m('versions', '?')}",
    ]
    if m("tapnet_version"):
        out.append(f"- tapnet: {m('tapnet_version')}; extra daemon args: "
                   f"`{m('tapnet_args', '') or '(none)'}`")
    if sw_order:
        out.append(
            f"- per switch case and round: iperf3 TCP `-t {m('tcp_secs')}` (1 stream, then `-P 4`), "
            f"UDP `-u -l 64 -b 0 -t {m('udp_secs')}`, ping `-c {m('ping_count')} -i 0.01`; "
            f"{m('rounds')} round(s), cases interleaved per round, median reported, MTU 1500")
    if nat_order:
        out.append(
            f"- per NAT case and round: iperf3 single stream `-t {m('tcp_secs')}` sandbox→host and "
            f"`-R`, killed as stalled {m('nat_grace')} s after its nominal end; connection rate "
            f"for {m('conn_secs')} s (one connection after the other: connect, 1 byte each way, "
            f"close); servers on the host's loopback (the kernel reference: on the veth's host end)")
    if vm_order:
        out.append(
            f"- per VM case and round: tests/vm_bench.rs boots one guest (QEMU, "
            f"accelerator: {m('vm_accel', '?')}; KVM probe: {m('vm_kvm_probe', '?')}), writes "
            f"{m('vm_mib', '?')} MiB of zeros to its /tmp and times busybox `nc` sending them "
            f"over TCP (guest MTU 1500), checksum checked at the receiver")
    out.append("")
    if sw_order:
        out.append("Medians over the rounds; ratios are against the Linux bridge of the same run "
                   "(the IPv6 cases: against the bridge over IPv6; for ping, lower is better).")
        out.append("")
        out += main_table(sw_order, vals, meta)
        out += ["", "Spread and extra counters (median [min-max] over the rounds):", ""]
        out += detail_table(sw_order, vals, meta)
    if nat_order:
        if sw_order:
            out.append("")
        out.append("Sandbox to the host's loopback through a NAT: medians over the rounds; ratios "
                   "are against the kernel veth reference of the same run (the IPv6 cases: against "
                   "the veth over IPv6). CPU is the NAT "
                   "process's (all threads) during each test, 100 % = one core.")
        out.append("")
        out += nat_table(nat_order, vals, rounds)
        out += goal_line(vals)
        out += ["", "Spread and extra counters of the NAT cases (median [min-max] over the "
                    "rounds):", ""]
        out += nat_detail_table(nat_order, vals)
    if vm_order:
        if sw_order or nat_order:
            out.append("")
        out.append("A VM's TCP send: medians over the rounds; ratios are against passt of the same "
                   "run. Switch CPU is the switch process's (tapnet daemon or passt, all threads) "
                   "utime+stime over the send, per GiB moved; QEMU user networking's switch is "
                   "inside QEMU, so its figure is all of QEMU's CPU, guest emulation included. "
                   "100 % = one core.")
        out.append("")
        out += vm_table(vm_order, vals, rounds)
        out += vm_goal_lines(vals, m("vm_accel"))
        out += ["", "Spread of the VM cases (median [min-max] over the rounds):", ""]
        out += vm_detail_table(vm_order, vals)
    if errors:
        out += ["", "Failures:", ""]
        for case in order:
            for e in errors.get(case, []):
                out.append(f"- {CASE_LABELS.get(case, case)}: {e}")
    scale = opts.get("--scale")
    if scale:
        rows, notes = scale_table(scale, meta)
        out += [
            "",
            f"Scaling, tapnet only: N sandbox pairs on one network (one daemon, offload on). "
            f"Ping is pair 1 while all sandboxes exist; the aggregate is the sum of "
            f"concurrent single-stream iperf3 `-t {m('scale_tcp_secs')}` runs on at most "
            f"{m('scale_max_iperf')} pairs at once.",
            "",
        ]
        out += rows
        if notes:
            out += ["", "Scaling failures:", ""] + notes
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tcp":
        cmd_tcp(*args)
    elif cmd == "udp":
        cmd_udp(*args)
    elif cmd == "ping":
        cmd_ping(*args)
    elif cmd == "freeport":
        cmd_freeport(*args)
    elif cmd == "iperf-tail":
        cmd_iperf_tail(*args)
    elif cmd == "report":
        cmd_report(args)
    else:
        die(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
