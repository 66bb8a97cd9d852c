//! Hardening (issue 8, items 4 to 6): input that cannot work is refused before anything is
//! created, a sandbox cannot take over the MAC table or pose as another, and no sandbox can
//! exhaust the daemon's threads, fds or flows while its neighbours' traffic keeps working.

mod common;

use common::Tapnet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

/// Open fds and threads of the daemon, from /proc.
fn daemon_fds_and_threads(t: &Tapnet) -> (usize, usize) {
    let pid = t.pid().expect("daemon pid");
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("read /proc/{pid}/{what}: {e}"))
    };
    (count("fd"), count("task"))
}

#[test]
fn special_use_subnets_are_refused_and_leak_nothing() {
    let t = Tapnet::new("badsubnet");
    t.ok(&["network", "create", "good1", "--subnet", "10.71.0.0/24"]);
    let before = daemon_fds_and_threads(&t);
    let cases = [
        ("224.0.0.0/24", "multicast"),
        ("127.0.0.0/24", "loopback"),
        ("0.0.0.0/24", "this network"),
        ("240.0.0.0/24", "reserved"),
        ("255.255.255.0/24", "reserved"),
        ("169.254.0.0/24", "link-local"),
    ];
    for _ in 0..3 {
        for (subnet, why) in cases {
            let line = t.fails(&["network", "create", "bad", "--subnet", subnet]);
            assert!(line.contains(why), "{subnet}: {line}");
        }
    }
    assert_eq!(t.network_names().iter().filter(|n| *n == "bad").count(), 0);
    let after = daemon_fds_and_threads(&t);
    assert_eq!(before, after, "fds and threads (before, after) 18 refusals");
    // Positive control: a good network does add fds and threads (port, DNS, gateway), so the
    // measure above would have seen a leak.
    t.ok(&["network", "create", "good2", "--subnet", "10.72.0.0/24"]);
    let grown = daemon_fds_and_threads(&t);
    assert!(
        grown.0 > after.0 && grown.1 > after.1,
        "{after:?} -> {grown:?}"
    );
    t.ok(&["sandbox", "create", "s1", "--net", "good2"]);
    let reply = t.traffic("s1", &["tcp-connect", "10.72.0.1", "53"]);
    assert!(reply.starts_with("ok"), "the daemon still works: {reply}");
}

fn hammer_script() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/hammer.py")
        .to_string_lossy()
        .into_owned()
}

/// Run hammer.py in `sandbox`; what it printed.
fn hammer(t: &Tapnet, sandbox: &str, args: &[&str]) -> String {
    let script = hammer_script();
    let mut full = vec!["python3", script.as_str()];
    full.extend(args);
    t.exec_ok(sandbox, &full).trim().to_string()
}

/// A hammer.py probe running in the background; killed if the test ends first.
struct Probe(Option<Child>);

impl Probe {
    /// Start a mode that prints "ready" once it listens.
    fn start(t: &Tapnet, sandbox: &str, args: &[&str]) -> Probe {
        let script = hammer_script();
        let mut full = vec!["exec", sandbox, "--", "python3", script.as_str()];
        full.extend(args);
        let mut child = t
            .command(&full)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn probe");
        let mut reader = BufReader::new(child.stdout.take().expect("probe stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("probe output");
        assert_eq!(
            line.trim(),
            "ready",
            "probe {args:?} in {sandbox} did not start"
        );
        child.stdout = Some(reader.into_inner());
        Probe(Some(child))
    }

    /// Wait for the probe to finish; what it printed after "ready".
    fn output(mut self) -> String {
        let child = self.0.take().expect("probe running");
        let out = child.wait_with_output().expect("probe exit");
        assert!(out.status.success(), "probe failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// MACs in `tapnet fdb NET` behind `port`.
fn fdb_macs(t: &Tapnet, net: &str, port: &str) -> Vec<String> {
    t.json(&["fdb", net])
        .as_array()
        .expect("fdb rows")
        .iter()
        .filter(|r| r["port"] == port)
        .map(|r| r["mac"].as_str().unwrap_or("").to_string())
        .collect()
}

/// One sandbox floods 20,000 random source MACs; on a network with the default per-port limit
/// it owns 64 entries and the stations that come after it are learned, so their unicast does
/// not flood to it. Positive control: with the limit lifted, the same flood fills the table,
/// the late stations are not learned and their traffic floods to the flooder.
#[test]
fn a_mac_flood_is_bounded_per_port_and_late_stations_stay_private() {
    let t = Tapnet::new("macflood");
    let nets = [
        ("bounded", "10.73.0", "max_macs_per_port=64"),
        ("open", "10.74.0", "max_macs_per_port=100000"),
    ];
    let mut private = Vec::new();
    for (net, prefix, limit) in nets {
        let subnet = format!("{prefix}.0/24");
        t.ok(&[
            "network",
            "create",
            net,
            "--subnet",
            &subnet,
            "--opt",
            "port_security=off",
            "--opt",
            limit,
        ]);
        let flooder = format!("{net}-a");
        t.ok(&["sandbox", "create", &flooder, "--net", net]);
        let out = hammer(&t, &flooder, &["mac-flood", "eth0", "20000"]);
        assert!(out.starts_with("20000 "), "{out}");
        for s in ["b", "c"] {
            t.ok(&["sandbox", "create", &format!("{net}-{s}"), "--net", net]);
        }
        let flooder_port = format!("{flooder}/eth0");
        let owned = fdb_macs(&t, net, &flooder_port).len();
        let watch = Probe::start(&t, &flooder, &["raw-count", "eth0", "0800", "3"]);
        let c_ip = format!("{prefix}.4"); // a .2, b .3, c .4
        let ping = hammer(&t, &format!("{net}-b"), &["ping", &c_ip, "5", "0.1"]);
        assert!(ping.starts_with("5 5 "), "{net}: b pings c: {ping}");
        let overheard: u64 = watch.output().parse().expect("count");
        let c_learned = fdb_macs(&t, net, &format!("{net}-c/eth0")).len();
        let stats = common::port_stats(&t, &flooder_port);
        // Every frame the switch took from the flooder (a TAP queue drops some of a burst)
        // beyond the ones it owns was refused.
        let refused = num(&stats["learn_refused"]) + owned as u64 + 50 >= num(&stats["rx_packets"])
            && num(&stats["learn_refused"]) >= 1000;
        private.push((net, owned, c_learned, overheard, refused));
    }
    let (_, owned, c_learned, overheard, refused) = private[0];
    assert!(owned <= 64, "bounded: the flooder owns {owned} entries");
    assert!(refused, "bounded: the refusals are counted");
    assert_eq!(c_learned, 1, "bounded: c is learned");
    assert_eq!(overheard, 0, "bounded: the flooder heard b's pings to c");
    let (_, owned, c_learned, overheard, _) = private[1];
    assert!(owned >= 3000, "open: the flood filled the table ({owned})");
    assert_eq!(c_learned, 0, "open: c is not learned");
    assert!(
        overheard >= 5,
        "open: the flooder hears b's pings ({overheard})"
    );
}

fn mac_hex(ip: [u8; 4]) -> String {
    format!("0242{:02x}{:02x}{:02x}{:02x}", ip[0], ip[1], ip[2], ip[3])
}

fn ip_hex(ip: [u8; 4]) -> String {
    ip.iter().map(|b| format!("{b:02x}")).collect()
}

/// Frames a sandbox at `own` sends while posing as `other` in turn: its MAC, its address in
/// ARP, its address in IPv4; then one honest frame.
fn spoofing_frames(own: [u8; 4], other: [u8; 4]) -> Vec<String> {
    let bcast = "ffffffffffff";
    let (me, them) = (mac_hex(own), mac_hex(other));
    let pad = "00".repeat(46);
    vec![
        format!("{bcast}{them}88b5{pad}"),
        format!(
            "{bcast}{me}08060001080006040001{me}{}000000000000{}",
            ip_hex(other),
            ip_hex([own[0], own[1], own[2], 1])
        ),
        format!(
            "{bcast}{me}08004500001c0000000040110000{}{}0007000700080000",
            ip_hex(other),
            ip_hex([own[0], own[1], own[2], 255])
        ),
        format!("{bcast}{me}88b5{pad}"),
    ]
}

/// By default a sandbox may only send as itself: a spoofed MAC, ARP sender or IPv4 source is
/// dropped and counted on its port, and its honest frame passes. With `port_security=off` the
/// same frames all pass (positive control: the probes would have seen them).
#[test]
fn port_security_drops_spoofed_frames_unless_turned_off() {
    let t = Tapnet::new("spoof");
    for (net, third, security) in [("secure", 75u8, "on"), ("research", 76, "off")] {
        let subnet = format!("10.{third}.0.0/24");
        let opt = format!("port_security={security}");
        t.ok(&["network", "create", net, "--subnet", &subnet, "--opt", &opt]);
        let (a, b) = (format!("{net}-a"), format!("{net}-b"));
        t.ok(&["sandbox", "create", &a, "--net", net]);
        t.ok(&["sandbox", "create", &b, "--net", net]);
        t.ok(&["sandbox", "create", &format!("{net}-c"), "--net", net]);
        let probes: Vec<Probe> = ["88b5", "0806", "0800"]
            .iter()
            .map(|ethertype| Probe::start(&t, &b, &["raw-count", "eth0", ethertype, "2"]))
            .collect();
        let frames = spoofing_frames([10, third, 0, 2], [10, third, 0, 4]);
        let script = common::traffic_script();
        let mut args = vec![script.to_str().unwrap_or(""), "raw-send", "eth0"];
        args.extend(frames.iter().map(String::as_str));
        let mut full = vec!["python3"];
        full.extend(args);
        t.exec_ok(&a, &full);
        let seen: Vec<u64> = probes
            .into_iter()
            .map(|p| p.output().parse().expect("count"))
            .collect();
        let spoofed = num(&common::port_stats(&t, &format!("{a}/eth0"))["rx_spoofed"]);
        if security == "on" {
            assert_eq!(seen, [1, 0, 0], "{net}: only the honest frame arrives");
            assert_eq!(spoofed, 3, "{net}: three violations counted");
        } else {
            assert_eq!(seen, [2, 1, 1], "{net}: everything arrives");
            assert_eq!(spoofed, 0, "{net}: nothing counted");
        }
    }
    // Honest traffic is untouched by port security.
    let ping = hammer(&t, "secure-a", &["ping", "10.75.0.3", "3", "0.1"]);
    assert!(ping.starts_with("3 3 "), "{ping}");
}
