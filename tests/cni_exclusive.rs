//! `tapnet-cni` never takes over an interface: ADD makes its TAP exclusively and refuses, with
//! CNI's error and touching nothing, a `CNI_IFNAME` the namespace already has (a TAP someone
//! made, or another container's attachment); DEL removes only what its ADD made; invalid
//! interface names and container ids are refused; DEL and CHECK print nothing on success.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Tapnet;

/// A named network namespace of the test (`ip netns`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("tncx-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
    fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }
    /// The names of the namespace's links.
    fn links(&self) -> Vec<String> {
        self.text(&["ip", "-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
    fn mac(&self, dev: &str) -> String {
        let out = self.text(&["cat", &format!("/sys/class/net/{dev}/address")]);
        assert!(!out.trim().is_empty(), "{dev} has a MAC in {}", self.0);
        out.trim().to_string()
    }
    fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", ip])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One plugin run: its exit code, its stdout as text, and that parsed as JSON (`Null` if not).
struct Run {
    code: i32,
    stdout: String,
    json: serde_json::Value,
}

fn cni(command: &str, id: &str, netns: &str, ifname: &str, conf: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapnet-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TAPNET_NAT_ALLOW", "127.0.0.0/8")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tapnet-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait tapnet-cni");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        stdout,
    }
}

fn conf(t: &Tapnet, name: &str, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "tapnet-cni",
        "subnet": subnet,
        "stateDir": t.dir.display().to_string(),
    })
    .to_string()
}

/// A refused ADD: status 1, CNI error JSON with code 4 or 7 naming the interface and namespace.
fn assert_refused(r: &Run, ifname: &str, netns: &str) {
    assert_eq!(r.code, 1, "ADD must fail: {}", r.stdout);
    let code = r.json["code"].as_u64();
    assert!(matches!(code, Some(4 | 7)), "CNI code 4 or 7: {}", r.stdout);
    let msg = r.json["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(ifname) && msg.contains(netns),
        "the message names {ifname} and {netns}: {}",
        r.stdout
    );
}

#[test]
fn add_never_takes_over_an_existing_interface() {
    let t = Tapnet::new("cni-excl");
    t.ok(&["network", "ls"]);
    let conf = conf(&t, "exclnet", "10.252.0.0/24");

    // A multi-queue TAP someone made in the namespace beforehand.
    let pre = Netns::new("pre");
    let made = pre.exec(&[
        "ip",
        "tuntap",
        "add",
        "dev",
        "tnpre",
        "mode",
        "tap",
        "multi_queue",
    ]);
    assert!(made.status.success(), "ip tuntap add: {made:?}");
    let mac = pre.mac("tnpre");
    let r = cni("ADD", "ctr-pre", &pre.path(), "tnpre", &conf);
    assert_refused(&r, "tnpre", &pre.path());
    assert_eq!(pre.mac("tnpre"), mac, "the TAP keeps its MAC");
    let addrs = pre.text(&["ip", "-o", "-4", "addr", "show", "dev", "tnpre"]);
    assert!(addrs.trim().is_empty(), "no address added: {addrs}");
    let routes = pre.text(&["ip", "-4", "route"]);
    assert!(routes.trim().is_empty(), "no route added: {routes}");
    let mut links = pre.links();
    links.sort();
    assert_eq!(links, ["lo", "tnpre"], "no other link left behind");
    // DEL of the refused ADD succeeds, says nothing, and leaves the TAP it did not make.
    let r = cni("DEL", "ctr-pre", &pre.path(), "tnpre", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "silent DEL");
    assert_eq!(pre.mac("tnpre"), mac, "DEL leaves the TAP it did not make");

    // Two attachments that work (the positive control: ADD does make and wire a TAP).
    let a = Netns::new("a");
    let b = Netns::new("b");
    let ra = cni("ADD", "ctr-a", &a.path(), "eth0", &conf);
    assert_eq!(ra.code, 0, "{}", ra.stdout);
    let ip_a = ra.json["ips"][0]["address"].as_str().unwrap_or_default();
    let ip_a = ip_a.split('/').next().unwrap_or_default().to_string();
    let rb = cni("ADD", "ctr-b", &b.path(), "eth0", &conf);
    assert_eq!(rb.code, 0, "{}", rb.stdout);
    let ip_b = rb.json["ips"][0]["address"].as_str().unwrap_or_default();
    let ip_b = ip_b.split('/').next().unwrap_or_default().to_string();
    assert!(a.ping(&ip_b), "a reaches b");
    let mac_a = a.mac("eth0");

    // Another container's ADD into a's namespace with the same CNI_IFNAME: refused, and a's
    // attachment is as it was (one address, its MAC, traffic).
    let r = cni("ADD", "ctr-intruder", &a.path(), "eth0", &conf);
    assert_refused(&r, "eth0", &a.path());
    let addrs = a.text(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert_eq!(addrs.lines().count(), 1, "one address on eth0: {addrs}");
    assert_eq!(a.mac("eth0"), mac_a);
    let mut links = a.links();
    links.sort();
    assert_eq!(links, ["eth0", "lo"], "no other link left behind");
    assert!(a.ping(&ip_b), "a still reaches b");
    // Its DEL (it has no attachment) is silent and removes nothing of ctr-a's.
    let r = cni("DEL", "ctr-intruder", &a.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "silent DEL");
    assert!(a.ping(&ip_b), "a still reaches b after the intruder's DEL");

    // CHECK and DEL print nothing on success; DEL removes what its ADD made.
    let r = cni("CHECK", "ctr-a", &a.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "silent CHECK");
    let r = cni("DEL", "ctr-a", &a.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "silent DEL");
    assert_eq!(a.links(), ["lo"], "a's TAP is gone");
    assert!(!b.ping(&ip_a), "a's address is gone");
    // DEL again, of what is gone: still silent success.
    let r = cni("DEL", "ctr-a", &a.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "idempotent DEL");
    // Errors still print CNI's error JSON.
    let r = cni("CHECK", "ctr-a", &a.path(), "eth0", &conf);
    assert_eq!(r.code, 1);
    assert!(r.json["code"].is_u64(), "error JSON: {}", r.stdout);
    let r = cni("DEL", "ctr-b", &b.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "silent DEL");

    // `system reset` leaves the TAP the refused ADD found.
    t.ok(&["system", "reset"]);
    assert_eq!(
        pre.mac("tnpre"),
        mac,
        "reset leaves the pre-made TAP as it was"
    );
    let addrs = pre.text(&["ip", "-o", "-4", "addr", "show", "dev", "tnpre"]);
    assert!(addrs.trim().is_empty(), "no address after reset: {addrs}");
}

#[test]
fn invalid_interface_names_and_container_ids_are_refused() {
    let t = Tapnet::new("cni-names");
    t.ok(&["network", "ls"]);
    let conf = conf(&t, "namesnet", "10.253.0.0/24");
    let ns = Netns::new("names");
    // `e%d` would become e0 (the kernel expands %d); the others break CNI's or the kernel's rules.
    for ifname in [
        "e%d",
        "eth%d",
        ".",
        "..",
        "a/b",
        "a:b",
        "a b",
        "eth\n0",
        "sixteen-chars-xx",
    ] {
        let r = cni("ADD", "ctr-ok", &ns.path(), ifname, &conf);
        assert_eq!(r.code, 1, "{ifname:?}: {}", r.stdout);
        assert_eq!(r.json["code"], 4, "{ifname:?}: {}", r.stdout);
        assert!(
            r.json["msg"]
                .as_str()
                .is_some_and(|m| m.contains("CNI_IFNAME")),
            "{ifname:?}: {}",
            r.stdout
        );
    }
    for id in ["ctr\nx", "-ctr", ".ctr", "ctr/x", "ctr x", "ctr:x"] {
        for command in ["ADD", "CHECK", "DEL"] {
            let r = cni(command, id, &ns.path(), "eth0", &conf);
            assert_eq!(r.code, 1, "{command} {id:?}: {}", r.stdout);
            assert_eq!(r.json["code"], 4, "{command} {id:?}: {}", r.stdout);
            assert!(
                r.json["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("CNI_CONTAINERID")),
                "{command} {id:?}: {}",
                r.stdout
            );
        }
    }
    assert_eq!(ns.links(), ["lo"], "nothing created in the namespace");
    let stats = t.ok(&["stats"]);
    assert!(!stats.contains("cni:"), "no CNI port: {stats}");
    // The positive control: a valid ADD into the same namespace makes its TAP.
    let r = cni("ADD", "ctr-ok", &ns.path(), "eth0", &conf);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(ns.links(), ["lo", "eth0"]);
    assert!(t.ok(&["stats"]).contains("cni:"), "the control shows up");
    let r = cni("DEL", "ctr-ok", &ns.path(), "eth0", &conf);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
}
