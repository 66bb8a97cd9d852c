//! IPv6 port security seen from inside sandboxes: a sandbox cannot take another's link-local
//! address with a Neighbor Advertisement, cannot act as a router (Router Advertisement,
//! Redirect) or as a DHCPv6 server, and link-local ping6 still works. Each attack is also made
//! on a network with `port_security=off`, where it does take effect: the positive control.

mod common;

use std::net::Ipv6Addr;
use std::time::Duration;

use common::{Tapnet, port_stats, wait_until};
use tapnet::wire::MacAddr;
use tapnet::wire::ipv6::{NEXT_ICMPV6, NEXT_UDP, checksum};

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
/// The prefix the rogue Router Advertisement offers (a ULA: nothing outside the test).
const ROGUE_PREFIX: &str = "fd00:bad:1";

/// One sandbox's station: its MAC and the link-local address its kernel made.
#[derive(Clone, Copy, Debug)]
struct Station {
    mac: MacAddr,
    ll: Ipv6Addr,
}

fn station(t: &Tapnet, sandbox: &str) -> Station {
    let mac = t
        .exec_ok(sandbox, &["cat", "/sys/class/net/eth0/address"])
        .trim()
        .parse()
        .expect("a MAC in sysfs");
    // The link-local address appears once the kernel's DAD is over (about a second).
    let mut ll = None;
    let found = wait_until(Duration::from_secs(10), || {
        let out = t.exec_ok(
            sandbox,
            &[
                "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
            ],
        );
        ll = out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next()?.parse().ok());
        ll.is_some() && !out.contains("tentative")
    });
    assert!(found, "{sandbox} has no link-local address");
    Station {
        mac,
        ll: ll.unwrap_or(Ipv6Addr::UNSPECIFIED),
    }
}

/// An Ethernet frame carrying IPv6 from `src` to `dst` (hop limit 255, as NDP needs) with
/// `upper` as protocol `next`, whose checksum (at `csum_at` in `upper`) is filled in.
fn frame(
    (eth_src, eth_dst): (MacAddr, MacAddr),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    next: u8,
    mut upper: Vec<u8>,
    csum_at: usize,
) -> String {
    let sum = checksum(src, dst, next, &upper);
    upper[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut f = eth_dst.0.to_vec();
    f.extend_from_slice(&eth_src.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(upper.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&upper);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// `from` tells every node that `target` is at `from`'s MAC (override flag set).
fn unsolicited_na(from: Station, target: Ipv6Addr) -> String {
    let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&from.mac.0);
    frame(
        (from.mac, ALL_NODES_MAC),
        (from.ll, ALL_NODES),
        NEXT_ICMPV6,
        m,
        2,
    )
}

/// `from` advertises itself as the default router and `ROGUE_PREFIX::/64` for SLAAC.
fn router_advertisement(from: Station) -> String {
    let mut m = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&from.mac.0);
    // Prefix information: /64, on-link and autonomous, valid 1 day, preferred 4 h.
    m.extend_from_slice(&[
        3, 4, 64, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0,
    ]);
    let prefix: Ipv6Addr = format!("{ROGUE_PREFIX}::").parse().expect("prefix");
    m.extend_from_slice(&prefix.octets());
    frame(
        (from.mac, ALL_NODES_MAC),
        (from.ll, ALL_NODES),
        NEXT_ICMPV6,
        m,
        2,
    )
}

/// `from` tells `to` that `target` is a better first hop towards fd00::99.
fn redirect(from: Station, to: Station, target: Ipv6Addr) -> String {
    let mut m = vec![137, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99).octets());
    frame((from.mac, to.mac), (from.ll, to.ll), NEXT_ICMPV6, m, 2)
}

/// A DHCPv6 Advertise from `from`'s server port to `to`'s client port.
fn dhcpv6_advertise(from: Station, to: Station) -> String {
    let mut u = vec![0x02, 0x23, 0x02, 0x22, 0, 12, 0, 0];
    u.extend_from_slice(&[2, 0xab, 0xcd, 0xef]); // ADVERTISE, transaction id
    frame((from.mac, to.mac), (from.ll, to.ll), NEXT_UDP, u, 6)
}

fn raw_send(t: &Tapnet, sandbox: &str, frames: &[String]) {
    let script = t.script();
    let mut args = vec!["python3", script.to_str().unwrap_or(""), "raw-send", "eth0"];
    args.extend(frames.iter().map(String::as_str));
    t.exec_ok(sandbox, &args);
}

/// `ip -6 neigh` of `sandbox` for `ip`: the MAC it resolves to, if any.
fn neighbour(t: &Tapnet, sandbox: &str, ip: Ipv6Addr) -> Option<MacAddr> {
    let out = t.exec_ok(
        sandbox,
        &["ip", "-6", "neigh", "show", &ip.to_string(), "dev", "eth0"],
    );
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .and_then(|m| m.parse().ok())
}

fn ping6(t: &Tapnet, sandbox: &str, to: Ipv6Addr, count: &str) -> bool {
    let dst = format!("{to}%eth0");
    t.exec(
        sandbox,
        &["ping", "-6", "-c", count, "-i", "0.2", "-W", "1", &dst],
    )
    .status
    .success()
}

/// A destination MAC for `tapnet trace` (any station will do).
fn b_mac(t: &Tapnet) -> String {
    station(t, "b").mac.to_string()
}

fn spoofed(t: &Tapnet, port: &str, reason: &str) -> u64 {
    port_stats(t, port)["spoofed_by"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Three sandboxes on a new dual-stack network `net` (`--opt` as given); their stations. (An
/// IPv4-only network's endpoints have IPv6 off: no link-local address to guard.)
fn trio(t: &Tapnet, net: &str, opts: &[&str], names: [&str; 3]) -> [Station; 3] {
    let mut args = vec!["network", "create", net, "--ipv6"];
    args.extend(opts);
    t.ok(&args);
    for s in names {
        t.ok(&["sandbox", "create", s, "--net", net]);
    }
    names.map(|s| station(t, s))
}

#[test]
fn sandboxes_get_their_eui64_link_local_and_ping6_it() {
    let t = Tapnet::new("v6ll");
    let [a, b, _] = trio(&t, "n", &[], ["a", "b", "c"]);
    for s in [a, b] {
        assert_eq!(
            s.ll,
            tapnet::wire::ipv6::link_local_eui64(s.mac),
            "the kernel's link-local is what port security allows"
        );
    }
    assert!(ping6(&t, "a", b.ll, "3"), "link-local ping6 a -> b");
    assert!(ping6(&t, "b", a.ll, "3"), "link-local ping6 b -> a");
    for port in ["a/eth0", "b/eth0"] {
        let stats = port_stats(&t, port);
        assert_eq!(stats["rx_spoofed"], 0, "{stats}");
    }
}

/// Reads one TCP connection on [::]:5001 to its end and prints the bytes it got.
const TCP6_SINK: &str = r#"
import socket
s = socket.socket(socket.AF_INET6)
s.bind(("::", 5001))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    n += len(d)
print(n, flush=True)
"#;

/// Sends argv[2] bytes to [argv[1]]:5001 (a scoped link-local address).
const TCP6_SOURCE: &str = r#"
import socket, sys
addr = socket.getaddrinfo(sys.argv[1], 5001, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
c = socket.socket(socket.AF_INET6)
c.settimeout(10)
c.connect(addr)
c.sendall(b"x" * int(sys.argv[2]))
c.close()
"#;

/// TCP over IPv6 with offloads on: the sender's kernel hands the switch GSO super-frames,
/// whose IPv6 payload length port security checks like any other.
#[test]
fn tcp_over_link_local_ipv6_passes_port_security() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let t = Tapnet::new("v6tcp");
    let [_, b, _] = trio(&t, "n", &[], ["a", "b", "c"]);
    let mut sink = t
        .command(&["exec", "b", "--", "python3", "-c", TCP6_SINK])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sink in b");
    let mut out = BufReader::new(sink.stdout.take().expect("sink stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("sink ready");
    assert_eq!(line.trim(), "ready");
    let bytes = 8 << 20;
    let dst = format!("{}%eth0", b.ll);
    t.exec_ok(
        "a",
        &["python3", "-c", TCP6_SOURCE, &dst, &bytes.to_string()],
    );
    line.clear();
    out.read_line(&mut line).expect("sink count");
    let _ = sink.wait();
    assert_eq!(line.trim(), bytes.to_string(), "all bytes arrived");
    let stats = port_stats(&t, "a/eth0");
    assert_eq!(stats["rx_spoofed"], 0, "{stats}");
    assert!(
        stats["rx_packets"].as_u64().unwrap_or(0) < 2000,
        "super-frames, not {} wire-size frames: {stats}",
        bytes / 1500
    );
}

#[test]
fn neighbor_advertisement_for_anothers_address_is_dropped() {
    let t = Tapnet::new("v6na");
    let [a, b, _] = trio(&t, "guarded", &[], ["a", "b", "c"]);
    let [a2, b2, _] = trio(
        &t,
        "open",
        &["--opt", "port_security=off"],
        ["a2", "b2", "c2"],
    );
    // c knows b (an unsolicited NA only updates an existing entry).
    assert!(ping6(&t, "c", b.ll, "1"));
    assert!(ping6(&t, "c2", b2.ll, "1"));
    assert_eq!(neighbour(&t, "c", b.ll), Some(b.mac));
    raw_send(&t, "a", &[unsolicited_na(a, b.ll)]);
    raw_send(&t, "a2", &[unsolicited_na(a2, b2.ll)]);
    // Positive control: without port security c2's table now sends b2's traffic to a2.
    assert!(
        wait_until(Duration::from_secs(3), || neighbour(&t, "c2", b2.ll)
            == Some(a2.mac)),
        "the poisoning works where port security is off: {:?}",
        neighbour(&t, "c2", b2.ll)
    );
    assert_eq!(neighbour(&t, "c", b.ll), Some(b.mac), "c still has b's MAC");
    assert!(ping6(&t, "c", b.ll, "5"), "c's pings still reach b");
    assert_eq!(neighbour(&t, "c", b.ll), Some(b.mac));
    assert_eq!(spoofed(&t, "a/eth0", "neighbor_advertisement"), 1);
    assert_eq!(port_stats(&t, "a/eth0")["rx_spoofed"], 1);
    assert_eq!(spoofed(&t, "a2/eth0", "neighbor_advertisement"), 0);
}

#[test]
fn router_advertisement_from_a_sandbox_configures_nobody() {
    let t = Tapnet::new("v6ra");
    let [a, _, _] = trio(&t, "guarded", &[], ["a", "b", "c"]);
    let [a2, _, _] = trio(
        &t,
        "open",
        &["--opt", "port_security=off"],
        ["a2", "b2", "c2"],
    );
    // Sandboxes refuse RAs themselves (accept_ra=0); a guest that configures itself (a VM,
    // or a process that turns it on) accepts them, and the guard must stop them then too.
    for s in ["c", "c2"] {
        t.exec_ok(
            s,
            &[
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/eth0/accept_ra",
            ],
        );
    }
    raw_send(&t, "a", &[router_advertisement(a)]);
    raw_send(&t, "a2", &[router_advertisement(a2)]);
    let addrs = |s: &str| t.exec_ok(s, &["ip", "-6", "addr", "show", "dev", "eth0"]);
    let routes = |s: &str| t.exec_ok(s, &["ip", "-6", "route", "show", "default"]);
    // Positive control: the RA gives c2 an address in the prefix and a default route via a2.
    assert!(
        wait_until(Duration::from_secs(5), || addrs("c2")
            .contains(ROGUE_PREFIX)),
        "c2 took no address from the RA: {}",
        addrs("c2")
    );
    assert!(
        routes("c2").contains(&a2.ll.to_string()),
        "{}",
        routes("c2")
    );
    assert!(!addrs("c").contains(ROGUE_PREFIX), "{}", addrs("c"));
    assert!(!routes("c").contains(&a.ll.to_string()), "{}", routes("c"));
    assert_eq!(spoofed(&t, "a/eth0", "router_advertisement"), 1);
    assert_eq!(spoofed(&t, "a2/eth0", "router_advertisement"), 0);
    // `tapnet trace` says what the port may send and what was dropped, and why.
    let report = t.json(&["trace", "guarded", "--in", "a", "--dst", &b_mac(&t)]);
    let steps = report["steps"].to_string();
    assert!(steps.contains(&a.ll.to_string()), "{steps}");
    assert!(
        steps.contains("dropped 1 frame(s) from a/eth0 as router_advertisement"),
        "{steps}"
    );
    let open = t.json(&["trace", "open", "--in", "a2", "--dst", &b_mac(&t)]);
    assert!(
        !open["steps"].to_string().contains("port security"),
        "{open}"
    );
}

#[test]
fn redirect_and_dhcpv6_server_messages_are_dropped() {
    let mut t = Tapnet::new("v6rd");
    let [a, b, c] = trio(&t, "guarded", &[], ["a", "b", "c"]);
    let [a2, b2, c2] = trio(
        &t,
        "open",
        &["--opt", "port_security=off"],
        ["a2", "b2", "c2"],
    );
    let filter = [
        "udp", "port", "546", "or", "(icmp6", "and", "ip6[40]", "==", "137)",
    ];
    let on_c = t.spawn_capture("c", "eth0", &filter);
    let on_c2 = t.spawn_capture("c2", "eth0", &filter);
    raw_send(&t, "a", &[redirect(a, c, b.ll), dhcpv6_advertise(a, c)]);
    raw_send(
        &t,
        "a2",
        &[redirect(a2, c2, b2.ll), dhcpv6_advertise(a2, c2)],
    );
    let seen = t.captured(on_c);
    let seen2 = t.captured(on_c2);
    assert_eq!(seen2.len(), 2, "positive control: c2 sees both: {seen2:?}");
    assert!(seen.is_empty(), "c sees neither: {seen:?}");
    assert_eq!(spoofed(&t, "a/eth0", "redirect"), 1);
    assert_eq!(spoofed(&t, "a/eth0", "dhcpv6_server"), 1);
    let stats = t.ok(&["stats"]);
    assert!(
        stats.contains("SPOOFED BY REASON") && stats.contains("dhcpv6_server"),
        "{stats}"
    );
}
