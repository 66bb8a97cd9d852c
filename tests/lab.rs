//! The lab tools on real traffic: link impairments and blocks, trace, metrics, topology files.

mod common;

use common::{Tapnet, traffic_script};
use nix::sys::signal::Signal;

const A: &str = "10.61.0.2";
const B: &str = "10.61.0.3";
const C: &str = "10.61.0.4";

/// Network `n` (10.61.0.0/24) with sandboxes a, b, c at .2, .3, .4.
fn three_sandboxes(tag: &str) -> Tapnet {
    let t = Tapnet::new(tag);
    t.ok(&["network", "create", "n", "--subnet", "10.61.0.0/24"]);
    for (s, ip) in [("a", A), ("b", B), ("c", C)] {
        t.ok(&["sandbox", "create", s, "--net", "n", "--ip", ip]);
    }
    t
}

/// `ping` summary: (transmitted, received, minimum RTT in ms). The minimum, not the average:
/// the machine running the tests may be loaded, and a scheduling hiccup only ever adds time.
fn ping_stats(t: &Tapnet, from: &str, args: &[&str]) -> (u32, u32, f64) {
    let mut full = vec!["ping", "-q", "-n"];
    full.extend(args);
    let out = t.exec(from, &full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let counts = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let num = |i: usize| -> u32 {
        counts
            .split(',')
            .nth(i)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad ping summary: {counts}"))
    };
    let min = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (num(0), num(1), min)
}

/// Pin the neighbours both ways so that no ARP frame draws from a seeded link.
fn static_neighbours(t: &Tapnet, x: (&str, &str), y: (&str, &str)) {
    let mac = |ip: &str| {
        let o: Vec<u8> = ip.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    };
    for ((s, _), (_, ip)) in [(x, y), (y, x)] {
        t.exec_ok(
            s,
            &[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac(ip),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
}

#[test]
fn delay_raises_rtt_and_survives_a_restart() {
    let t = three_sandboxes("lab-delay");
    let (_, got, base) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", B]);
    assert_eq!(got, 20, "baseline pings all answered");
    t.ok(&["link", "set", "b", "n", "--delay", "20ms"]);
    let (_, got, delayed) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", B]);
    assert_eq!(got, 20);
    let added = delayed - base;
    eprintln!("delay 20ms: rtt {base:.3} -> {delayed:.3} ms (+{added:.2})");
    assert!(
        (18.0..=22.0).contains(&added),
        "20 ms delay added {added:.2} ms (base {base:.3}, delayed {delayed:.3})"
    );
    // Another port is not slowed by b's delay queue (positive control: b's is).
    let (_, _, other) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", C]);
    assert!(other < base + 2.0, "c slowed to {other:.3} ms");
    let view = t.json(&["sandbox", "inspect", "b"]);
    assert_eq!(view["interfaces"][0]["impairment"]["delay_us"], 20_000);
    assert!(t.ok(&["sandbox", "inspect", "b"]).contains("delay 20ms"));

    t.stop_daemon(Signal::SIGTERM);
    let rows = t.json(&["link", "show"]);
    assert_eq!(rows[0]["sandbox"], "b", "{rows}");
    let (_, got, after) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", B]);
    assert_eq!(got, 20);
    assert!(after - base > 18.0, "delay after restart: {after:.3} ms");

    t.ok(&["link", "reset"]);
    let (_, _, reset) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", B]);
    assert!(reset < base + 2.0, "reset left {reset:.3} ms");
    assert!(
        t.json(&["link", "show"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );

    // --both: the request waits on the way to b, the reply on the way from b.
    t.ok(&["link", "set", "b", "n", "--delay", "10ms", "--both"]);
    let (_, got, both) = ping_stats(&t, "a", &["-c", "20", "-i", "0.05", B]);
    assert_eq!(got, 20);
    let added = both - base;
    eprintln!("delay 10ms --both: rtt {base:.3} -> {both:.3} ms (+{added:.2})");
    assert!(
        (18.0..=22.0).contains(&added),
        "10 ms each way added {added:.2} ms"
    );
}

#[test]
fn seeded_loss_loses_the_same_pings() {
    let t = three_sandboxes("lab-loss");
    static_neighbours(&t, ("a", A), ("b", B));
    // Nothing but the pings may cross b's link: each frame takes one draw from the seed.
    for s in ["a", "b", "c"] {
        t.exec_ok(s, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        t.exec_ok(s, &["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
    }
    let flood = ["-c", "2000", "-i", "0.002", "-W", "1", B];
    let mut lost = Vec::new();
    for _ in 0..2 {
        // Setting the link (again) starts its draws from the seed.
        t.ok(&["link", "set", "b", "n", "--loss", "10%", "--seed", "42"]);
        let (sent, got, _) = ping_stats(&t, "a", &flood);
        assert_eq!(sent, 2000);
        lost.push(sent - got);
    }
    assert!(
        (140..=260).contains(&lost[0]),
        "10% loss lost {} of 2000",
        lost[0]
    );
    eprintln!("loss 10% seed 42: lost {lost:?} of 2000 pings");
    assert_eq!(lost[0], lost[1], "same seed, same losses");
    let rows = t.json(&["link", "show", "n"]);
    assert_eq!(
        rows[0]["stats"]["dropped_loss"],
        lost[0] + lost[1],
        "{rows}"
    );
}

#[test]
fn rate_limits_a_tcp_transfer() {
    let mut t = three_sandboxes("lab-rate");
    t.ok(&["link", "set", "b", "n", "--rate", "10mbit"]);
    let server = t.spawn_server("b", &["tcp-serve", B, "5001"]);
    let script = traffic_script();
    let bytes = 6_000_000;
    let sent = t.exec_ok(
        "a",
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "tcp-send-timed",
            B,
            "5001",
            &bytes.to_string(),
        ],
    );
    let received = t.server_output(server);
    assert!(received.starts_with(&bytes.to_string()), "{received}");
    let secs: f64 = sent
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad output {sent}"));
    let mbit = bytes as f64 * 8.0 / secs / 1e6;
    eprintln!("rate 10mbit: {bytes} bytes in {secs:.3} s = {mbit:.2} Mbit/s");
    assert!(
        (8.5..=11.5).contains(&mbit),
        "10mbit link carried {mbit:.2} Mbit/s"
    );
}

#[test]
fn down_up_block_unblock() {
    let t = three_sandboxes("lab-down");
    assert!(t.ping("a", B));
    t.ok(&["link", "set", "b", "n", "--down"]);
    assert!(!t.ping("a", B), "down link carries nothing");
    assert!(t.ping("a", C), "other links still work");
    t.ok(&["link", "set", "b", "n", "--up"]);
    assert!(t.ping("a", B), "up again");

    t.ok(&["link", "block", "a", "b"]);
    assert!(!t.ping("a", B), "blocked a -> b");
    assert!(!t.ping("b", A), "blocked b -> a");
    assert!(t.ping("a", C) && t.ping("b", C), "others unaffected");
    let view = t.json(&["sandbox", "inspect", "a"]);
    assert_eq!(view["interfaces"][0]["blocked"][0], "b");
    t.ok(&["link", "unblock", "a", "b", "--net", "n"]);
    assert!(t.ping("a", B), "unblocked");

    // A block goes with the sandbox: a new b of the same name is not cut off.
    t.ok(&["link", "block", "a", "b"]);
    t.ok(&["sandbox", "rm", "b"]);
    t.ok(&["sandbox", "create", "b", "--net", "n", "--ip", B]);
    assert!(t.ping("a", B), "the new b is reachable");
    let view = t.json(&["sandbox", "inspect", "a"]);
    assert!(view["interfaces"][0].get("blocked").is_none(), "{view}");

    // Bad input: one error line, nothing changes.
    t.misuse(&["link", "set", "b", "n", "--loss", "150%"]);
    t.misuse(&["link", "set", "b", "n", "--delay", "20"]);
    t.fails(&["link", "set", "b", "n", "--delay", "1ms", "--jitter", "5ms"]);
    t.fails(&["link", "set", "zz", "n", "--delay", "1ms"]);
    t.fails(&["link", "block", "a", "zz"]);
    assert!(
        t.json(&["link", "show"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
}

/// A strict reader of the Prometheus text format 0.0.4: every line must be a `# HELP`, a
/// `# TYPE` or a sample of a declared family. Returns `name{labels}` -> value.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    use std::collections::{BTreeMap, HashMap};
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = BTreeMap::new();
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            assert!(is_name(name), "bad HELP line: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(is_name(name), "bad TYPE line: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type: {line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line: {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(is_name(name), "bad metric name: {line}");
        let kind = types
            .get(name)
            .unwrap_or_else(|| panic!("sample before TYPE: {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter without _total: {line}");
            assert!(value >= 0.0, "negative counter: {line}");
        }
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad label set: {line}"));
                // name="value" pairs; values escape \ " and newline.
                let mut rest = inner;
                while !rest.is_empty() {
                    let (label, after) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(is_name(label), "bad label name: {line}");
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (escaped, c) {
                            (true, '\\' | '"' | 'n') => escaped = false,
                            (true, _) => panic!("bad escape: {line}"),
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated label: {line}"));
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series twice: {line}"
        );
    }
    samples
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to metrics");
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send scrape");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read scrape");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let t = Tapnet::new("lab-metrics");
    // The first command autostarts the daemon, which inherits the metrics address.
    let out = t
        .command(&["network", "create", "n", "--subnet", "10.61.0.0/24"])
        .env("TAPNET_METRICS", &addr)
        .output()
        .expect("run tapnet");
    assert!(out.status.success(), "{out:?}");
    for (s, ip) in [("a", A), ("b", B)] {
        t.ok(&["sandbox", "create", s, "--net", "n", "--ip", ip]);
    }
    let before = parse_prometheus(&scrape(&addr));
    let rx_a = r#"tapnet_port_rx_packets_total{network="n",sandbox="a",interface="eth0"}"#;
    let tx_b = r#"tapnet_port_tx_packets_total{network="n",sandbox="b",interface="eth0"}"#;
    let created = r#"tapnet_control_requests_total{kind="sandbox_create",result="ok"}"#;
    let failed = r#"tapnet_control_requests_total{kind="network_inspect",result="error"}"#;
    assert_eq!(before.get(created), Some(&2.0), "{before:?}");
    t.exec_ok("a", &["ping", "-c", "10", "-i", "0.01", "-q", B]);
    t.fails(&["network", "inspect", "nope"]);
    // A name of the network, answered by its DNS server.
    assert!(t.exec_ok("a", &["getent", "hosts", "b"]).contains(B));
    let after = parse_prometheus(&scrape(&addr));
    let moved =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert!(moved(rx_a) >= 10.0, "a's rx moved {}", moved(rx_a));
    assert!(moved(tx_b) >= 10.0, "b's tx moved {}", moved(tx_b));
    assert_eq!(moved(failed), 1.0);
    let answered = r#"tapnet_dns_answers_total{network="n",source="local",rcode="noerror"}"#;
    assert!(
        moved(answered) >= 1.0,
        "DNS answers moved {}",
        moved(answered)
    );
    assert!(moved(r#"tapnet_dns_queries_total{network="n",transport="udp"}"#) >= 1.0);
    assert!(after[r#"tapnet_fdb_entries{network="n"}"#] >= 2.0);
    assert!(after.contains_key(r#"tapnet_nat_flows{network="n",proto="tcp"}"#));
    assert!(after.contains_key(
        r#"tapnet_port_drops_total{network="n",sandbox="a",interface="eth0",reason="impairment_loss"}"#
    ));
    // A link drop shows under its reason.
    t.ok(&["link", "set", "b", "n", "--down"]);
    assert!(!t.ping("a", B));
    let down = parse_prometheus(&scrape(&addr));
    let key =
        r#"tapnet_port_drops_total{network="n",sandbox="b",interface="eth0",reason="link_down"}"#;
    assert!(down[key] >= 2.0, "{}", down[key]);
}

/// Start `tapnet trace --live` with `args`, wait until the daemon streams, return the child.
fn spawn_live(t: &Tapnet, args: &[&str]) -> std::process::Child {
    let mut full = vec![
        "trace",
        "n",
        "--live",
        "--timeout",
        "10",
        "--format",
        "json",
    ];
    full.extend(args);
    let child = t
        .command(&full)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn trace --live");
    // The sink is registered before the daemon's answer; give the client time to get it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    child
}

fn live_lines(child: std::process::Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().expect("trace --live exit");
    assert!(out.status.success(), "trace --live failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad live line {l}: {e}")))
        .collect()
}

#[test]
fn trace_explains_what_traffic_then_does() {
    let t = three_sandboxes("lab-trace");
    t.ok(&["network", "create", "m", "--subnet", "10.62.0.0/24"]);
    t.ok(&["sandbox", "create", "d", "--net", "m", "--ip", "10.62.0.2"]);
    assert!(t.ping("a", B));

    // Unicast hit: the trace and the real frames agree.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", B]);
    assert_eq!(report["decision"], "unicast", "{report}");
    assert_eq!(report["outputs"][0]["port"], "b/eth0");
    assert!(
        report["steps"].to_string().contains("hit on b/eth0"),
        "{report}"
    );
    let live = spawn_live(&t, &["--in", "a", "--dst", B, "--proto", "icmp", "-c", "3"]);
    t.exec_ok("a", &["ping", "-c", "3", "-i", "0.1", B]);
    let lines = live_lines(live);
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["decision"], "unicast", "{l}");
        assert_eq!(l["output"], "b/eth0", "{l}");
        assert_eq!(l["ingress"], "a/eth0", "{l}");
    }

    // Miss: flood to every other port, and c really receives the frame.
    let unknown = "02:00:00:00:00:99";
    let report = t.json(&["trace", "n", "--in", "a", "--dst", unknown]);
    assert_eq!(report["decision"], "flood", "{report}");
    let outs = report["outputs"].to_string();
    assert!(outs.contains("b/eth0") && outs.contains("c/eth0") && outs.contains("gateway"));
    let live = spawn_live(&t, &["--dst", unknown, "-c", "1"]);
    let c_before = common::port_stats(&t, "c/eth0")["tx_packets"]
        .as_u64()
        .unwrap_or(0);
    let frame = format!(
        "{}{}88b5{}",
        unknown.replace(':', ""),
        "02420a3d0002",
        "ab".repeat(50)
    );
    let script = traffic_script();
    t.exec_ok(
        "a",
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "raw-send",
            "eth0",
            &frame,
        ],
    );
    let lines = live_lines(live);
    assert_eq!(lines[0]["decision"], "flood", "{}", lines[0]);
    let c_after = common::port_stats(&t, "c/eth0")["tx_packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(c_after > c_before, "c got the flooded frame");

    // The gateway: ping answered; TCP to its address is refused, the host's loopback being
    // closed by default (trace_follows_ipv6_destinations opens it and sees the NAT flow).
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "10.61.0.1"]);
    assert!(
        report["gateway"]
            .as_str()
            .unwrap_or("")
            .contains("answers the ping"),
        "{report}"
    );
    assert!(t.ping("a", "10.61.0.1"));
    let report = t.json(&[
        "trace",
        "n",
        "--in",
        "a",
        "--dst",
        "10.61.0.1",
        "--proto",
        "tcp",
        "--dport",
        "5999",
    ]);
    assert!(
        report["gateway"]
            .as_str()
            .unwrap_or("")
            .contains("refused (TCP RST, UDP port unreachable): the network keeps the host's loopback closed (host_loopback=off)"),
        "{report}"
    );

    // Isolation: another network's address goes to the gateway, which does not carry it.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "10.62.0.2"]);
    assert_eq!(
        report["outputs"].as_array().map(|o| o.len()),
        Some(1),
        "{report}"
    );
    assert!(
        report["gateway"]
            .as_str()
            .unwrap_or("")
            .contains("on network m"),
        "{report}"
    );
    assert!(!t.ping("a", "10.62.0.2"), "isolated");

    // Blocks and impairments in force show on the output.
    t.ok(&["link", "block", "a", "b"]);
    let report = t.json(&["trace", "n", "--in", "a", "--dst", B]);
    assert!(
        report["outputs"][0]["link"]
            .as_str()
            .unwrap_or("")
            .contains("blocked")
    );
    assert_eq!(report["outputs"][0]["dropped"], true);
    assert!(!t.ping("a", B));
    t.ok(&["link", "reset"]);

    t.misuse(&["trace", "n", "--in", "a", "--dst", "nonsense"]);
    t.fails(&["trace", "n", "--in", "zz", "--dst", B]);
    t.fails(&["trace", "n", "--in", "d", "--dst", B]);
    t.fails(&[
        "trace", "n", "--in", "a", "--dst", B, "--dport", "80", "--proto", "icmp",
    ]);
    let table = t.ok(&["trace", "n", "--in", "a", "--dst", B]);
    assert!(table.contains("Decision: unicast -> b/eth0\n"), "{table}");
}

fn ping6(t: &Tapnet, sandbox: &str, ip: &str) -> bool {
    t.exec(
        sandbox,
        &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip],
    )
    .status
    .success()
}

/// The `gateway` verdict of a trace, or "".
fn verdict(report: &serde_json::Value) -> String {
    report["gateway"].as_str().unwrap_or("").to_string()
}

#[test]
fn trace_follows_ipv6_destinations() {
    let t = Tapnet::new("lab-trace6");
    for (net, v4, v6) in [
        ("n", "10.63.0.0/24", "fd00:63::/64"),
        ("m6", "10.64.0.0/24", "fd00:64::/64"),
    ] {
        t.ok(&[
            "network",
            "create",
            net,
            "--subnet",
            v4,
            "--ipv6",
            "--subnet",
            v6,
            "--opt",
            "host_loopback=on",
        ]);
    }
    t.ok(&["network", "create", "n4", "--subnet", "10.65.0.0/24"]);
    for (s, net, ip, ip6) in [
        ("a", "n", "10.63.0.2", "fd00:63::2"),
        ("b", "n", "10.63.0.3", "fd00:63::3"),
        ("d", "m6", "10.64.0.2", "fd00:64::2"),
    ] {
        t.ok(&[
            "sandbox", "create", s, "--net", net, "--ip", ip, "--ip6", ip6,
        ]);
    }
    t.ok(&["sandbox", "create", "e", "--net", "n4", "--ip", "10.65.0.2"]);
    // The positive control of the isolation below: a reaches its sibling over IPv6.
    assert!(ping6(&t, "a", "fd00:63::3"));

    // A sibling's IPv6 address: neighbour discovery gives its MAC, unicast to its port.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "fd00:63::3"]);
    assert_eq!(report["decision"], "unicast", "{report}");
    assert_eq!(report["outputs"][0]["port"], "b/eth0", "{report}");
    assert_eq!(report["dst_mac"], "02:42:0a:3f:00:03", "{report}");
    assert!(
        report["steps"]
            .to_string()
            .contains("neighbour discovery resolves fd00:63::3"),
        "{report}"
    );
    // Its link-local address, derived from its MAC, goes the same way.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "fe80::42:aff:fe3f:3"]);
    assert_eq!(report["outputs"][0]["port"], "b/eth0", "{report}");
    // The live trace, filtered on the IPv6 address, sees the real frames go there.
    let live = spawn_live(
        &t,
        &[
            "--in",
            "a",
            "--dst",
            "fd00:63::3",
            "--proto",
            "icmp",
            "-c",
            "3",
        ],
    );
    t.exec_ok("a", &["ping", "-6", "-c", "3", "-i", "0.1", "fd00:63::3"]);
    let lines = live_lines(live);
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["output"], "b/eth0", "{l}");
        assert_eq!(l["frame"]["dst_ip6"], "fd00:63::3", "{l}");
    }

    // The IPv6 gateway answers the ping itself; TCP to it is NAT to the host's ::1
    // (host_loopback=on).
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "fd00:63::1"]);
    assert_eq!(report["outputs"][0]["port"], "gateway", "{report}");
    assert!(verdict(&report).contains("answers the ping"), "{report}");
    assert!(ping6(&t, "a", "fd00:63::1"));
    let report = t.json(&[
        "trace",
        "n",
        "--in",
        "a",
        "--dst",
        "fd00:63::1",
        "--proto",
        "tcp",
        "--dport",
        "5999",
    ]);
    assert!(
        verdict(&report).contains("TCP flow to [::1]:5999"),
        "{report}"
    );

    // Outside the prefix: to the default gateway, which would carry it by NAT but for the
    // policy every test daemon runs with (the host's loopback only), as the trace says.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "2001:db8::7"]);
    assert_eq!(report["dst_mac"], "02:42:0a:3f:00:01", "{report}");
    assert!(
        verdict(&report).contains("the NAT policy (--nat-allow) does not admit 2001:db8::7"),
        "{report}"
    );
    let report = t.json(&[
        "trace",
        "n",
        "--in",
        "a",
        "--dst",
        "2001:db8::7",
        "--proto",
        "udp",
        "--dport",
        "443",
    ]);
    assert_eq!(report["outputs"][0]["port"], "gateway", "{report}");
    assert!(verdict(&report).contains("--nat-allow"), "{report}");

    // Another network's IPv6 prefix: the gateway refuses it (isolation), as real traffic.
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "fd00:64::2"]);
    assert_eq!(
        report["outputs"].as_array().map(|o| o.len()),
        Some(1),
        "{report}"
    );
    let v = verdict(&report);
    assert!(
        v.contains("refused") && v.contains("on network m6"),
        "{report}"
    );
    assert!(!ping6(&t, "a", "fd00:64::2"), "isolated");

    // No IPv6 address to send from; a malformed address is a usage error.
    let err = t.fails(&["trace", "n4", "--in", "e", "--dst", "fd00:63::3"]);
    assert!(
        err.contains("sandbox e has no IPv6 address on network n4"),
        "{err}"
    );
    t.misuse(&["trace", "n", "--in", "a", "--dst", "fd00:63::zz"]);
}

fn example(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// After `down`: only the default networks, no sandbox, no record, no impaired link.
fn assert_nothing_left(t: &Tapnet) {
    assert_eq!(t.network_names(), ["bridge", "host", "none"]);
    assert!(
        t.json(&["sandbox", "ls"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    assert!(
        t.json(&["link", "show"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    assert!(
        !t.dir.join("topologies").exists(),
        "topology record left behind"
    );
}

#[test]
fn seed_example_up_twice_then_down() {
    let t = Tapnet::new("lab-seed-up");
    let file = example("seed.toml");
    let plan = t.ok(&["up", &file, "--dry-run"]);
    assert!(plan.contains("would create network backend"), "{plan}");
    assert_eq!(
        t.network_names(),
        ["bridge", "host", "none"],
        "dry run changed nothing"
    );
    t.ok(&["up", &file]);
    let again = t.ok(&["up", &file]);
    assert!(again.contains("nothing to do"), "{again}");
    assert!(t.ping("container2", "172.18.0.2") && t.ping("container2", "172.19.0.2"));
    assert!(
        !t.ping("container1", "172.19.0.2"),
        "backend and frontend are isolated"
    );
    // container3's command serves on the published port.
    let served = common::wait_until(std::time::Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect("127.0.0.1:28731") else {
            return false;
        };
        let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut reply = String::new();
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
            && c.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.0 200")
    });
    assert!(
        served,
        "container3's http.server answers through the published port"
    );
    t.ok(&["down", &file]);
    assert_nothing_left(&t);
}

#[test]
fn impaired_lab_example_up_change_down() {
    let t = Tapnet::new("lab-impaired-up");
    let file = example("impaired-lab.toml");
    t.ok(&["up", &file]);
    assert!(t.ok(&["up", &file]).contains("nothing to do"));
    let (_, got, rtt) = ping_stats(&t, "client", &["-c", "10", "-i", "0.05", "10.80.0.3"]);
    assert!(got >= 8, "{got} of 10 through a 1% lossy link");
    assert!(
        (22.0..=30.0).contains(&rtt),
        "20 ms + 5 ms links: {rtt:.2} ms"
    );
    assert!(!t.ping("intruder", "10.80.0.3"), "intruder is blocked");
    assert!(t.ping("intruder", "10.80.0.2"), "but reaches the client");
    let connected = common::wait_until(std::time::Duration::from_secs(10), || {
        t.traffic("client", &["tcp-connect", "10.80.0.3", "8000"])
            .starts_with("ok")
    });
    assert!(connected, "the server's command listens");

    // A changed file changes only what differs: the client's link goes, nothing is recreated.
    let text = std::fs::read_to_string(&file).expect("read example");
    let changed = t.dir.join("changed-lab.toml");
    std::fs::write(
        &changed,
        text.replace(
            "[[link]]\nsandbox = \"client\"\nnetwork = \"lab\"\ndelay = \"5ms\"\n",
            "",
        ),
    )
    .expect("write changed file");
    let changed_s = changed.to_string_lossy().into_owned();
    let plan = t.ok(&["up", &changed_s]);
    assert_eq!(plan.trim(), "clear link client lab", "{plan}");
    let (_, _, rtt) = ping_stats(&t, "client", &["-c", "10", "-i", "0.05", "10.80.0.3"]);
    assert!(
        (18.0..=24.0).contains(&rtt),
        "only the server's 20 ms left: {rtt:.2} ms"
    );
    t.ok(&["down", &changed_s]);
    let _ = std::fs::remove_file(&changed);
    assert_nothing_left(&t);

    // Bad files fail with one line and change nothing.
    let bad = t.dir.join("bad.toml");
    std::fs::write(&bad, "[[network]]\nname = \"x\"\nsubnett = \"1\"\n").expect("write");
    let err = t.fails(&["up", &bad.to_string_lossy()]);
    assert!(err.contains("line 3"), "{err}");
    let _ = std::fs::remove_file(&bad);
    assert_eq!(t.network_names(), ["bridge", "host", "none"]);
}

#[test]
fn two_daemon_overlay_example_up_twice_then_down() {
    let one = Tapnet::new("lab-ov1");
    let two = Tapnet::new("lab-ov2");
    let (first, second) = (example("overlay-host1.toml"), example("overlay-host2.toml"));
    one.ok(&["up", &first]);
    two.ok(&["up", &second]);
    // Across the overlay, from one daemon's sandbox to the other's.
    assert!(one.ping("web1", "10.42.0.130"), "web1 -> web2 over VXLAN");
    assert!(two.ping("web2", "10.42.0.10"), "web2 -> web1 over VXLAN");
    // Twice changes nothing.
    let plan = one.ok(&["up", &first, "--dry-run"]);
    assert!(plan.contains("nothing to do"), "{plan}");
    two.ok(&["down", &second]);
    one.ok(&["down", &first]);
    assert_nothing_left(&one);
    assert_nothing_left(&two);
}

/// The IPv6 address (without its length) of `sandbox` on `network`.
fn ipv6_of(t: &Tapnet, sandbox: &str, network: &str) -> String {
    let view = t.json(&["sandbox", "inspect", sandbox]);
    view["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["network"] == network))
        .and_then(|i| i["ipv6"].as_str())
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// `up` of examples/dual-stack.toml (as root, or as `user` rootless), its addresses, routes and
/// pings over IPv6, a second `up` that changes nothing, and `down`.
fn dual_stack_example(t: &Tapnet, file: &str) {
    let plan = t.ok(&["up", file, "--dry-run"]);
    assert!(plan.contains("(subnet6 fd00:81::/64)"), "{plan}");
    assert!(plan.contains("a on dual=10.81.0.2,fd00:81::2"), "{plan}");
    t.ok(&["up", file]);
    let again = t.ok(&["up", file]);
    assert!(again.contains("nothing to do"), "{again}");
    let dual = t.json(&["network", "inspect", "dual"]);
    assert_eq!(dual["subnet6"], "fd00:81::/64", "{dual}");
    let dual2 = t.json(&["network", "inspect", "dual2"]);
    let ula = dual2["subnet6"].as_str().unwrap_or_default().to_string();
    assert!(ula.starts_with("fd") && ula.ends_with("::/64"), "{dual2}");
    assert_eq!(ipv6_of(t, "a", "dual"), "fd00:81::2");
    assert_eq!(ipv6_of(t, "b", "dual"), "fd00:81::3");
    let addrs = t.exec_ok("a", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:81::2/64"), "{addrs}");
    let route = t.exec_ok("a", &["ip", "-6", "route"]);
    assert!(route.contains("default via fd00:81::1 dev eth0"), "{route}");
    assert!(t.ping("b", "fd00:81::2"), "b reaches a over IPv6");
    assert!(t.ping("a", "fd00:81::3"), "a reaches b over IPv6");
    assert!(t.ping("a", "10.81.0.3"), "and over IPv4");
    let c6 = ipv6_of(t, "c", "dual2");
    assert!(!c6.is_empty(), "c has an IPv6 address on dual2");
    assert!(t.ping("b", &c6), "b reaches c over IPv6 on dual2");
    assert!(!t.ping("a", &c6), "a, on dual only, does not reach c");
    let only6 = t.json(&["network", "inspect", "only6"]);
    assert!(only6["subnet"].is_null(), "IPv6-only: {only6}");
    assert_eq!(only6["subnet6"], "fd00:83::/64", "{only6}");
    assert_eq!(ipv6_of(t, "c", "only6"), "fd00:83::2");
    let v4 = t.exec_ok("c", &["ip", "-4", "addr", "show", "dev", "eth1"]);
    assert!(!v4.contains("inet "), "no IPv4 on only6: {v4}");
    assert!(t.ping("c", "fd00:83::1"), "c reaches only6's gateway");
    t.ok(&["down", file]);
    assert_nothing_left(t);
}

#[test]
fn dual_stack_example_up_twice_then_down() {
    let t = Tapnet::new("lab-dual-up");
    dual_stack_example(&t, &example("dual-stack.toml"));
}

#[test]
fn dual_stack_example_rootless() {
    let t = Tapnet::rootless("lab-dual-rl", "tapnet-test");
    // A copy the test user can read, in its runtime dir (the state dir's parent).
    let file = t
        .dir
        .parent()
        .expect("the runtime dir")
        .join("dual-stack.toml");
    std::fs::copy(example("dual-stack.toml"), &file).expect("copy the example");
    let _ = std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    dual_stack_example(&t, &file.to_string_lossy());
}

/// A directory of a test's own for a topology file and the sockets it names, removed on drop.
struct FileDir(std::path::PathBuf);

impl FileDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tapnet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the file's dir");
        FileDir(dir)
    }
}

impl Drop for FileDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const VM_LAB: &str = r#"
name = "vm-lab-test"

[[network]]
name = "vmlab"
subnet = "10.85.0.0/24"

[[sandbox]]
name = "client"
networks = ["vmlab"]

[[port]]
name = "vm1"
network = "vmlab"
qemu_socket = "vm1.sock"
ip = "10.85.0.5"

[[link]]
sandbox = "vm1"
network = "vmlab"
delay = "20ms"
"#;

/// `port ls`'s only row.
fn only_port(t: &Tapnet) -> serde_json::Value {
    let ports = t.json(&["port", "ls"]);
    assert_eq!(ports.as_array().map(|a| a.len()), Some(1), "{ports}");
    ports[0].clone()
}

#[test]
fn vm_port_in_a_topology_file_up_change_down() {
    // Declared first, dropped last: the daemon is reset before the directory goes.
    let dir = FileDir::new("lab-vm-up");
    let t = Tapnet::new("lab-vm-up");
    let file = dir.0.join("vm-lab.toml");
    let file_s = file.to_string_lossy().into_owned();
    std::fs::write(&file, VM_LAB).expect("write the file");
    // The relative socket path is the file's directory's.
    let socket = dir.0.join("vm1.sock");
    let socket_s = socket.to_string_lossy().into_owned();

    let plan = t.ok(&["up", &file_s]);
    assert!(
        plan.contains(&format!(
            "create port vm1 on vmlab=10.85.0.5 (qemu-socket {socket_s})"
        )),
        "{plan}"
    );
    assert!(plan.contains("set link vm1 vmlab: delay 20ms"), "{plan}");
    let port = only_port(&t);
    assert_eq!(port["name"], "vm1", "{port}");
    assert_eq!(port["kind"], "qemu-socket", "{port}");
    assert_eq!(port["path"], socket_s.as_str(), "{port}");
    assert_eq!(port["ipv4"], "10.85.0.5/24", "{port}");
    assert_eq!(port["impairment"]["delay_us"], 20_000, "{port}");
    let is_socket = |p: &std::path::Path| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
    };
    assert!(is_socket(&socket), "the daemon listens on {socket_s}");
    let again = t.ok(&["up", &file_s]);
    assert!(again.contains("nothing to do"), "{again}");

    // Another address in the file: the port is replaced (the positive control of "nothing to
    // do"), and its link set again on the new one.
    std::fs::write(&file, VM_LAB.replace("10.85.0.5", "10.85.0.9")).expect("rewrite");
    let plan = t.ok(&["up", &file_s]);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(
        lines,
        [
            "remove port vm1",
            &format!("create port vm1 on vmlab=10.85.0.9 (qemu-socket {socket_s})"),
            "set link vm1 vmlab: delay 20ms",
        ],
        "{plan}"
    );
    let port = only_port(&t);
    assert_eq!(port["ipv4"], "10.85.0.9/24", "{port}");
    assert_eq!(port["impairment"]["delay_us"], 20_000, "{port}");
    assert!(is_socket(&socket), "listening again on {socket_s}");
    let again = t.ok(&["up", &file_s]);
    assert!(again.contains("nothing to do"), "{again}");

    let down = t.ok(&["down", &file_s]);
    assert!(down.contains("remove port vm1"), "{down}");
    assert!(
        t.json(&["port", "ls"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    assert!(!socket.exists(), "{socket_s} left behind");
    assert_nothing_left(&t);
}
