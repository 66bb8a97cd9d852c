//! `tapnet-cni` never takes over an interface: ADD makes its TAP exclusively and refuses, with
//! CNI's error and touching nothing, a `CNI_IFNAME` the namespace already has (a TAP someone
//! made, or another container's attachment); DEL removes only what its ADD made; invalid
//! interface names and container ids are refused; DEL and CHECK print nothing on success.

mod common;

use common::Tapnet;
use common::cni::{CniRun as Run, Netns, run_cni as cni};

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
