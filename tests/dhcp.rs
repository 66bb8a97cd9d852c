//! The gateway's DHCPv4 server seen from inside sandboxes: busybox `udhcpc` gets exactly the
//! sandbox's own IPAM address, the gateway as router and DNS server, and the network's MTU; a
//! sandbox that forges a DHCP server's message is dropped by port security (and, on a network
//! with `port_security=off`, the positive control, its neighbour receives it).

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::skip::need;
use common::{Tapnet, port_stats};
use tapnet::wire::MacAddr;

const BUSYBOX: &str = "/bin/busybox";
/// The rootless tests' user (scripts/test.sh creates it).
const USER: &str = "tapnet-test";

/// The udhcpc script: print what the server gave on `bound`, change nothing (the sandbox keeps
/// its static configuration).
const SCRIPT: &str = "#!/bin/sh\n\
    [ \"$1\" = bound ] && echo \"lease: ip=$ip subnet=$subnet router=$router dns=$dns \
    mtu=$mtu lease=$lease serverid=$serverid\"\n\
    exit 0\n";

/// The static busybox (its udhcpc), which scripts/test.sh installs: missing, the test fails,
/// unless `TAPNET_TEST_SKIP` names `busybox`.
fn busybox() -> Option<&'static str> {
    common::skip::require("busybox", &[need(BUSYBOX, "busybox-static")]).then_some(BUSYBOX)
}

/// A script that, once bound, makes udhcpc renew (SIGUSR1: a unicast REQUEST to the gateway)
/// and, once renewed, quit (SIGTERM: with -R, a RELEASE first).
const CYCLE_SCRIPT: &str = "#!/bin/sh\n\
    case \"$1\" in\n\
    bound) kill -USR1 $PPID ;;\n\
    renew) echo \"renewed: ip=$ip router=$router\"; kill -TERM $PPID ;;\n\
    esac\n\
    exit 0\n";

fn script(t: &Tapnet) -> PathBuf {
    write_script(t, "udhcpc.sh", SCRIPT)
}

fn write_script(t: &Tapnet, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // Rootless: in the user's runtime dir, which it can read; with root: in the state dir.
    let dir = t.runtime_dir.clone().unwrap_or_else(|| t.dir.clone());
    std::fs::create_dir_all(&dir).expect("test dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write udhcpc script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if let Some(user) = &t.user {
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).expect("chown");
    }
    path
}

/// Run udhcpc once in `sandbox` (quit when bound, release on exit); the `key=value` pairs the
/// script printed.
fn udhcpc(t: &Tapnet, sandbox: &str, busybox: &str, script: &Path) -> Vec<(String, String)> {
    let s = script.to_str().unwrap_or("");
    let out = t.exec(
        sandbox,
        &[
            busybox, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-R", "-t", "4", "-T", "1", "-s", s,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "udhcpc in {sandbox} failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("lease: "))
        .unwrap_or_else(|| panic!("no lease in {sandbox}: {text}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(lease: &'a [(String, String)], key: &str) -> &'a str {
    lease
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The sandbox's IPAM address (without the prefix length) and MAC.
fn ipam(t: &Tapnet, sandbox: &str) -> (Ipv4Addr, MacAddr) {
    let v = t.json(&["sandbox", "inspect", sandbox]);
    let ip = v["interfaces"][0]["ipv4"]
        .as_str()
        .and_then(|c| c.split('/').next()?.parse().ok())
        .expect("an IPv4 address");
    let mac = v["interfaces"][0]["mac"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .expect("a MAC");
    (ip, mac)
}

fn dhcp_counters(t: &Tapnet, net: &str) -> serde_json::Value {
    t.json(&["network", "inspect", net])["nat"]["dhcp"].clone()
}

#[test]
fn udhcpc_in_each_sandbox_gets_its_own_address_router_dns_and_mtu() {
    let Some(bb) = busybox() else {
        return;
    };
    let t = Tapnet::new("dhcp");
    t.ok(&["network", "create", "n", "--mtu", "1400"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let gateway = t.json(&["network", "inspect", "n"])["gateway"]
        .as_str()
        .expect("gateway")
        .to_string();
    let s = script(&t);
    for sandbox in ["a", "b"] {
        let (ip, _) = ipam(&t, sandbox);
        let lease = udhcpc(&t, sandbox, bb, &s);
        assert_eq!(get(&lease, "ip"), ip.to_string(), "{sandbox}: {lease:?}");
        assert_eq!(get(&lease, "subnet"), "255.255.0.0", "{lease:?}");
        assert_eq!(get(&lease, "router"), gateway, "{lease:?}");
        assert_eq!(get(&lease, "dns"), gateway, "{lease:?}");
        assert_eq!(get(&lease, "serverid"), gateway, "{lease:?}");
        assert_eq!(get(&lease, "mtu"), "1400", "{lease:?}");
        assert_eq!(get(&lease, "lease"), "86400", "{lease:?}");
        // The static configuration stays.
        let addr = t.exec_ok(sandbox, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains(&format!("{ip}/16")), "{addr}");
    }
    let d = dhcp_counters(&t, "n");
    assert_eq!(d["offers"], 2, "{d}");
    assert_eq!(d["acks"], 2, "{d}");
    assert_eq!(d["naks"], 0, "{d}");
    assert_eq!(d["releases"], 0, "{d}");
    for port in ["a/eth0", "b/eth0"] {
        let stats = port_stats(&t, port);
        assert_eq!(
            stats["rx_spoofed"], 0,
            "DHCP clients pass port security: {stats}"
        );
    }
    let inspect = t.ok(&["network", "inspect", "n"]);
    assert!(inspect.contains("2 offers, 2 acks, 0 naks"), "{inspect}");
    let rows = t.json(&["stats", "n"]);
    let gw = rows
        .as_array()
        .and_then(|r| r.iter().find(|row| !row["dhcp"].is_null()))
        .unwrap_or_else(|| panic!("no gateway row with DHCP counters: {rows}"));
    assert_eq!(gw["dhcp"]["acks"], 2, "{gw}");
    assert!(t.ok(&["stats"]).contains("DHCP OFFERS"));
    // A bound client renews by unicast to the gateway and releases on exit.
    let cycle = write_script(&t, "cycle.sh", CYCLE_SCRIPT);
    let c = cycle.to_str().unwrap_or("");
    let out = t.exec(
        "a",
        &[
            "timeout", "20", bb, "udhcpc", "-i", "eth0", "-f", "-R", "-t", "4", "-T", "1", "-s", c,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (ip, _) = ipam(&t, "a");
    assert!(
        text.contains(&format!("renewed: ip={ip} router={gateway}")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released = common::wait_until(std::time::Duration::from_secs(5), || {
        dhcp_counters(&t, "n")["releases"] == 1
    });
    let d = dhcp_counters(&t, "n");
    assert!(released, "the release is counted: {d}");
    // A selecting REQUEST and at least one renewal (udhcpc may retransmit).
    assert_eq!(d["offers"], 3, "{d}");
    assert!(d["acks"].as_u64().unwrap_or(0) >= 4, "{d}");
    // An internal network offers no router.
    t.ok(&["network", "create", "inside", "--internal"]);
    t.ok(&["sandbox", "create", "c", "--net", "inside"]);
    let (ip, _) = ipam(&t, "c");
    let lease = udhcpc(&t, "c", bb, &s);
    assert_eq!(get(&lease, "ip"), ip.to_string(), "{lease:?}");
    assert_eq!(get(&lease, "router"), "", "no default route: {lease:?}");
}

/// An Ethernet/IPv4/UDP frame from `from` (MAC, address) to the broadcast address, 67 → 68,
/// carrying a DHCP OFFER of `offered` to `client`, as hex for traffic.py raw-send.
fn forged_offer(from: (MacAddr, Ipv4Addr), client: MacAddr, offered: Ipv4Addr) -> String {
    let mut m = vec![0u8; 240];
    m[0] = 2;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    m[16..20].copy_from_slice(&offered.octets());
    m[28..34].copy_from_slice(&client.0);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, 2, 54, 4]);
    m.extend_from_slice(&from.1.octets());
    m.extend_from_slice(&[3, 4]);
    m.extend_from_slice(&from.1.octets());
    m.push(255);
    m.resize(300, 0);
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(from.0.0, [0xff; 6])
        .ipv4(from.1.octets(), [255; 4], 64)
        .udp(67, 68)
        .write(&mut frame, &m)
        .expect("build the forged offer");
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_sandbox_cannot_answer_dhcp_for_the_gateway() {
    let mut t = Tapnet::new("dhcpsrv");
    t.ok(&["network", "create", "guarded"]);
    t.ok(&["network", "create", "open", "--opt", "port_security=off"]);
    for (s, net) in [
        ("a", "guarded"),
        ("b", "guarded"),
        ("a2", "open"),
        ("b2", "open"),
    ] {
        t.ok(&["sandbox", "create", s, "--net", net]);
    }
    let filter = ["udp", "port", "68"];
    let on_b = t.spawn_capture("b", "eth0", &filter);
    let on_b2 = t.spawn_capture("b2", "eth0", &filter);
    let script = t.script();
    let script = script.to_str().unwrap_or("");
    for (from, to) in [("a", "b"), ("a2", "b2")] {
        let (ip, mac) = ipam(&t, from);
        let (_, victim) = ipam(&t, to);
        let offer = forged_offer((mac, ip), victim, Ipv4Addr::new(10, 66, 0, 9));
        t.exec_ok(from, &["python3", script, "raw-send", "eth0", &offer]);
    }
    let seen = t.captured(on_b);
    let seen2 = t.captured(on_b2);
    assert_eq!(
        seen2.len(),
        1,
        "positive control: b2 sees the offer: {seen2:?}"
    );
    assert!(seen.is_empty(), "b sees nothing: {seen:?}");
    let spoofed = port_stats(&t, "a/eth0")["spoofed_by"]["dhcp_server"].clone();
    assert_eq!(spoofed, 1, "counted as dhcp_server");
    let stats = t.ok(&["stats"]);
    assert!(stats.contains("dhcp_server"), "{stats}");
    // `tapnet trace` explains the drop.
    let (_, b_mac) = ipam(&t, "b");
    let report = t.json(&["trace", "guarded", "--in", "a", "--dst", &b_mac.to_string()]);
    let steps = report["steps"].to_string();
    assert!(
        steps.contains("dropped 1 frame(s) from a/eth0 as dhcp_server"),
        "{steps}"
    );
}

#[test]
fn udhcpc_gets_its_address_rootless() {
    let Some(bb) = busybox() else {
        return;
    };
    let t = Tapnet::rootless("rl-dhcp", USER);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let gateway = t.json(&["network", "inspect", "n"])["gateway"]
        .as_str()
        .expect("gateway")
        .to_string();
    let (ip, _) = ipam(&t, "a");
    let lease = udhcpc(&t, "a", bb, &script(&t));
    assert_eq!(get(&lease, "ip"), ip.to_string(), "{lease:?}");
    assert_eq!(get(&lease, "router"), gateway, "{lease:?}");
    assert_eq!(get(&lease, "dns"), gateway, "{lease:?}");
    assert_eq!(get(&lease, "mtu"), "1500", "{lease:?}");
}

#[test]
fn a_mac_tapnet_does_not_know_gets_no_answer() {
    let Some(bb) = busybox() else {
        return;
    };
    // Without port security a sandbox may change its MAC; the server still answers only MACs
    // the controller gave out.
    let t = Tapnet::new("dhcpunknown");
    t.ok(&["network", "create", "open", "--opt", "port_security=off"]);
    t.ok(&["sandbox", "create", "a", "--net", "open"]);
    let (ip, mac) = ipam(&t, "a");
    let set_mac = |m: &str| {
        for args in [
            vec!["ip", "link", "set", "eth0", "down"],
            vec!["ip", "link", "set", "eth0", "address", m],
            vec!["ip", "link", "set", "eth0", "up"],
        ] {
            t.exec_ok("a", &args);
        }
    };
    set_mac("02:00:5e:10:00:99");
    let s = script(&t);
    let s = s.to_str().unwrap_or("");
    let out = t.exec(
        "a",
        &[
            bb, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "2", "-T", "1", "-s", s,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "no lease for a stranger: {text}");
    assert!(!text.contains("lease:"), "{text}");
    let d = dhcp_counters(&t, "open");
    assert!(d["unknown_clients"].as_u64().unwrap_or(0) >= 1, "{d}");
    assert_eq!(d["offers"], 0, "{d}");
    // Positive control: with its own MAC back, the same client gets its address.
    set_mac(&mac.to_string());
    let lease = udhcpc(&t, "a", bb, &script(&t));
    assert_eq!(get(&lease, "ip"), ip.to_string(), "{lease:?}");
}
