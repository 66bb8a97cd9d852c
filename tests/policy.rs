//! Network policy in the switch: `icc=false` (sandboxes reach the gateway, not each other)
//! and `tapnet policy` rules (first match, then the network's default; replies of admitted
//! flows pass), in both families, with their counters, persistence and trace.

mod common;

use common::Tapnet;

const A: &str = "10.63.0.2";
const B: &str = "10.63.0.3";
const C: &str = "10.63.0.4";
const A6: &str = "fd00:63::2";
const B6: &str = "fd00:63::3";
const GW: &str = "10.63.0.1";

/// A dual-stack network `n` (with `opts`) and sandboxes a, b, c on it.
fn network(tag: &str, opts: &[&str]) -> Tapnet {
    let t = Tapnet::new(tag);
    let mut create = vec![
        "network",
        "create",
        "n",
        "--subnet",
        "10.63.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:63::/64",
    ];
    for o in opts {
        create.extend(["--opt", o]);
    }
    t.ok(&create);
    for (s, ip, ip6) in [("a", A, A6), ("b", B, B6), ("c", C, "fd00:63::4")] {
        t.ok(&[
            "sandbox", "create", s, "--net", "n", "--ip", ip, "--ip6", ip6,
        ]);
    }
    t
}

fn ping6(t: &Tapnet, sandbox: &str, ip: &str) -> bool {
    t.exec(
        sandbox,
        &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip],
    )
    .status
    .success()
}

/// `tcp-connect` from `sandbox` to `ip:port`: "ok", "timeout", "ECONNREFUSED", ...
fn connect(t: &Tapnet, sandbox: &str, ip: &str, port: &str) -> String {
    let out = t.traffic(sandbox, &["tcp-connect", ip, port]);
    out.split_whitespace().next().unwrap_or("").to_string()
}

fn policy(t: &Tapnet) -> serde_json::Value {
    t.json(&["policy", "ls", "n"])
}

fn rule<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rule {name}: {view}"))
}

#[test]
fn icc_false_isolates_sandboxes_but_keeps_gateway_nat_and_dns() {
    let mut t = network("pol-icc", &["icc=false", "host_loopback=on"]);
    // Sandbox to sandbox: nothing, either family. ARP and NDP between sandboxes fail too, so
    // a knows b's MAC statically: the switch itself must drop the unicast IP.
    let b = t.json(&["sandbox", "inspect", "b"]);
    let mac = b["interfaces"][0]["mac"]
        .as_str()
        .expect("b's MAC")
        .to_string();
    for ip in [B, B6] {
        t.exec_ok(
            "a",
            &[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
    assert!(!t.ping("a", B), "ping a -> b refused");
    assert!(!ping6(&t, "a", B6), "ping6 a -> b refused");
    t.spawn_server("b", &["tcp-count-serve", B, "5001", "1"]);
    assert_eq!(connect(&t, "a", B, "5001"), "timeout", "TCP a -> b refused");
    // The gateway: ping, NAT to a host loopback server, DNS.
    assert!(t.ping("a", GW), "the gateway answers");
    assert!(ping6(&t, "a", "fd00:63::1"), "the gateway answers IPv6");
    let (_server, port) =
        t.spawn_host_server_on_free_port(&["tcp-count-serve", "127.0.0.1", "0", "1"]);
    assert_eq!(connect(&t, "a", GW, &port), "ok", "NAT through the gateway");
    let names = t.exec_ok("a", &["getent", "ahostsv4", "b"]);
    assert!(names.contains(B), "DNS answers: {names}");
    let view = policy(&t);
    assert_eq!(view["icc"], false);
    assert!(view["drops"]["icc"].as_u64().unwrap_or(0) > 0, "{view}");
    let a = common::port_stats(&t, "a/eth0");
    assert!(a["rx_policy"].as_u64().unwrap_or(0) > 0, "{a}");
    let trace = t.json(&["trace", "n", "--in", "a", "--dst", B]);
    let steps = trace["steps"].to_string();
    assert!(steps.contains("icc=false"), "{steps}");
    assert_eq!(trace["decision"], "drop", "{trace}");
}

#[test]
fn icc_on_is_the_positive_control() {
    let mut t = network("pol-iccon", &["icc=true"]);
    assert!(t.ping("a", B));
    assert!(ping6(&t, "a", B6));
    t.spawn_server("b", &["tcp-count-serve", B, "5001", "1"]);
    assert_eq!(connect(&t, "a", B, "5001"), "ok");
    assert_eq!(policy(&t)["drops"]["icc"], 0);
    // Docker's spelling, as its plugin passes it; a disagreement is refused.
    t.ok(&[
        "network",
        "create",
        "d",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
    ]);
    assert_eq!(t.json(&["policy", "ls", "d", "--json"])["icc"], false);
    t.fails(&[
        "network",
        "create",
        "e",
        "--opt",
        "icc=true",
        "--opt",
        "com.docker.network.bridge.enable_icc=false",
    ]);
}

#[test]
fn a_deny_rule_drops_its_flows_only_and_counts_them() {
    let t = network("pol-deny", &[]);
    assert!(t.ping("a", B), "positive control before the rule");
    t.ok(&[
        "policy", "add", "n", "--name", "no-ab", "--from", "a", "--to", "b", "--proto", "icmp",
        "--deny",
    ]);
    assert!(!t.ping("a", B), "a -> b denied");
    assert!(
        !ping6(&t, "a", B6),
        "a -> b denied in IPv6 too (the name's both addresses)"
    );
    assert!(t.ping("a", C), "a -> c still allowed (default allow)");
    assert!(t.ping("b", A), "b -> a is not the rule's direction");
    let view = policy(&t);
    let r = rule(&view, "no-ab");
    assert!(r["packets"].as_u64().unwrap_or(0) >= 2, "{view}");
    assert!(r["bytes"].as_u64().unwrap_or(0) > 0, "{view}");
    assert!(view["drops"]["rule"].as_u64().unwrap_or(0) >= 2, "{view}");
    let trace = t.json(&["trace", "n", "--in", "a", "--dst", B, "--proto", "icmp"]);
    assert!(trace["steps"].to_string().contains("rule no-ab"), "{trace}");
    t.ok(&["policy", "rm", "n", "no-ab"]);
    assert!(t.ping("a", B), "removed: allowed again");
    t.fails(&["policy", "rm", "n", "no-ab"]);
    t.fails(&["policy", "add", "n", "--port", "80", "--allow"]);
    t.fails(&["policy", "add", "n", "--to", "10.0.0.0/40", "--allow"]);
}

#[test]
fn default_deny_admits_allowed_flows_and_their_replies_and_survives_restart() {
    let mut t = network("pol-default", &["policy_default=deny"]);
    assert!(!t.ping("a", B), "default deny");
    assert!(!ping6(&t, "a", B6), "default deny, IPv6");
    t.ok(&[
        "policy", "add", "n", "--name", "web", "--from", "a", "--to", "b", "--proto", "tcp",
        "--port", "5001", "--allow",
    ]);
    // The allowed flow works both ways (the transfer needs b's replies).
    let (sent, received) = t.tcp_transfer("a", "b", B, 100_000);
    assert_eq!(sent, received, "TCP a -> b:5001 allowed with its replies");
    let (sent, received) = t.tcp_transfer("a", "b", B6, 100_000);
    assert_eq!(sent, received, "and over IPv6");
    // But b may not open a flow to a, nor a reach b otherwise.
    assert!(!t.ping("b", A), "b -> a: default deny");
    assert!(!t.ping("a", B), "ICMP a -> b: no rule allows it");
    let view = policy(&t);
    assert!(
        rule(&view, "web")["packets"].as_u64().unwrap_or(0) >= 2,
        "{view}"
    );
    assert!(view["drops"]["default"].as_u64().unwrap_or(0) > 0, "{view}");
    assert!(view["max_flows"].as_u64().unwrap_or(0) > 0, "{view}");
    let trace = t.json(&["trace", "n", "--in", "b", "--dst", A, "--proto", "icmp"]);
    assert!(
        trace["steps"].to_string().contains("policy_default=deny"),
        "{trace}"
    );
    // Restart: the rule is still there and still enforced.
    t.stop_daemon(nix::sys::signal::Signal::SIGTERM);
    let view = policy(&t);
    assert_eq!(rule(&view, "web")["action"], "allow", "{view}");
    assert!(!t.ping("a", B), "still default deny after restart");
    let (sent, received) = t.tcp_transfer("a", "b", B, 10_000);
    assert_eq!(sent, received, "the rule still admits after restart");
    let state = t.exported_state();
    assert!(state.contains("\"web\""), "rules persist in the state");
}

/// Overlay networks: rules apply at the ingress host; frames from the VTEP are not checked
/// again but enter the connection table, so the local sandbox's reply passes.
#[test]
fn overlay_rules_apply_at_the_ingress_host() {
    let lo = |n: u32| format!("127.79.{}.{n}", std::process::id() % 250);
    let (va, vb) = (lo(2), lo(3));
    let hosts = [
        (Tapnet::new("pol-ova"), &va, &vb, "10.79.0.0/25"),
        (Tapnet::new("pol-ovb"), &vb, &va, "10.79.0.128/25"),
    ];
    for (t, vtep, peer, range) in &hosts {
        t.ok(&[
            "network",
            "create",
            "ov",
            "--driver",
            "overlay",
            "--vni",
            "4790",
            "--subnet",
            "10.79.0.0/24",
            "--ip-range",
            range,
            "--opt",
            &format!("vtep={vtep}"),
            "--opt",
            &format!("peers={peer}"),
            "--opt",
            "policy_default=deny",
        ]);
    }
    let (a, b) = (&hosts[0].0, &hosts[1].0);
    a.ok(&[
        "sandbox",
        "create",
        "left",
        "--net",
        "ov",
        "--ip",
        "10.79.0.10",
    ]);
    b.ok(&[
        "sandbox",
        "create",
        "right",
        "--net",
        "ov",
        "--ip",
        "10.79.0.130",
    ]);
    assert!(!a.ping("left", "10.79.0.130"), "default deny on a");
    a.ok(&[
        "policy",
        "add",
        "ov",
        "--to",
        "10.79.0.128/25",
        "--proto",
        "icmp",
        "--allow",
    ]);
    assert!(
        a.ping("left", "10.79.0.130"),
        "allowed at a; b admits the reply of a flow that came from its VTEP"
    );
    assert!(
        !b.ping("right", "10.79.0.10"),
        "b's default deny still holds"
    );
}

/// The same policy rootless: rules persist and decide, icc off isolates.
#[test]
fn policy_works_rootless() {
    let t = Tapnet::rootless("pol-rl", "tapnet-test");
    t.ok(&["network", "create", "n", "--subnet", "10.64.0.0/24"]);
    t.ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.65.0.0/24",
        "--opt",
        "icc=false",
    ]);
    for (s, ip, ip2) in [
        ("a", "10.64.0.2", "10.65.0.2"),
        ("b", "10.64.0.3", "10.65.0.3"),
    ] {
        t.ok(&["sandbox", "create", s, "--net", "n", "--ip", ip]);
        t.ok(&["network", "connect", "iso", s, "--ip", ip2]);
    }
    assert!(t.ping("a", "10.64.0.3"), "positive control");
    assert!(!t.ping("a", "10.65.0.3"), "icc=false isolates");
    assert!(
        t.ping("a", "10.65.0.1"),
        "the gateway answers under icc=false"
    );
    t.ok(&[
        "policy", "add", "n", "--name", "no-b", "--to", "b", "--proto", "icmp", "--deny",
    ]);
    assert!(!t.ping("a", "10.64.0.3"), "denied by rule no-b");
    let view = t.json(&["policy", "ls", "n"]);
    assert!(
        view["rules"][0]["packets"].as_u64().unwrap_or(0) > 0,
        "{view}"
    );
}

/// A ping of 30 echoes from `sandbox` to `ip` running while `during` runs (after 1 s): the
/// replies it got.
fn ping_during(t: &Tapnet, sandbox: &str, ip: &str, during: impl FnOnce()) -> u32 {
    let child = t
        .command(&[
            "exec", sandbox, "--", "ping", "-n", "-q", "-c", "30", "-i", "0.1", "-w", "8", ip,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ping");
    std::thread::sleep(std::time::Duration::from_secs(1));
    during();
    let out = child.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {text}"))
}

/// A rule change leaves admitted flows alone; `--reset-flows` applies it to them too.
#[test]
fn rule_changes_affect_new_flows_unless_reset_flows() {
    let t = network("pol-reset", &[]);
    let deny = |name: &str, reset: bool| {
        let mut args = vec![
            "policy", "add", "n", "--name", name, "--from", "a", "--to", "b", "--proto", "icmp",
            "--deny",
        ];
        if reset {
            args.push("--reset-flows");
        }
        t.ok(&args);
    };
    // Flows are tracked from the network's first rule (or a deny default) on: one that
    // matches nothing makes the table exist before the ping starts.
    t.ok(&[
        "policy",
        "add",
        "n",
        "--name",
        "other",
        "--to",
        "192.0.2.1",
        "--deny",
    ]);
    let got = ping_during(&t, "a", B, || deny("d1", false));
    assert_eq!(
        got, 30,
        "the running echo flow was admitted before the rule"
    );
    assert!(!t.ping("a", B), "a new flow is denied");
    t.ok(&["policy", "rm", "n", "d1"]);
    let got = ping_during(&t, "a", B, || deny("d2", true));
    assert!(
        (1..30).contains(&got),
        "--reset-flows cut the running flow: {got} of 30 replies"
    );
}
