//! Dual-stack and IPv6-only networks: `--ipv6`, IPv6 `--subnet`/`--gateway`, `--no-ipv4`,
//! `--ip6`; addresses, routes and sysctls in the sandboxes; traffic between them over IPv6; the
//! daemon's ULA pool across a restart; refused prefixes; the JSON shapes.

mod common;

use common::Tapnet;
use nix::sys::signal::Signal;

fn ip(bits: u128) -> String {
    std::net::Ipv6Addr::from(bits).to_string()
}

fn ip6_addrs(t: &Tapnet, sandbox: &str) -> String {
    t.exec_ok(sandbox, &["ip", "-6", "addr", "show", "dev", "eth0"])
}

fn ping6(t: &Tapnet, sandbox: &str, ip: &str) -> bool {
    t.exec(
        sandbox,
        &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip],
    )
    .status
    .success()
}

/// Two sandboxes on `--ipv6 --subnet fd00:a::/64`: their addresses, routes, sysctls and /etc
/// files; ping and a checksummed 4 MiB TCP transfer between them over IPv6.
fn dual_stack_pair(t: &mut Tapnet) {
    t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:a::/64",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "d6"]);
    t.ok(&["sandbox", "create", "b", "--net", "d6"]);

    let a = ip6_addrs(t, "a");
    assert!(a.contains("inet6 fd00:a::2/64 scope global"), "{a}");
    // The link-local address derives from the MAC (EUI-64): 02:42:ac:12:00:02.
    assert!(a.contains("inet6 fe80::42:acff:fe12:2/64"), "{a}");
    let b = ip6_addrs(t, "b");
    assert!(b.contains("inet6 fd00:a::3/64 scope global"), "{b}");
    let routes = t.exec_ok("a", &["ip", "-6", "route", "show", "default"]);
    assert!(
        routes.contains("default via fd00:a::1 dev eth0"),
        "{routes}"
    );
    // IPv4 is there too, as Docker gives it.
    let v4 = t.exec_ok("a", &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(v4.contains("inet 172.18.0.2/16"), "{v4}");
    for key in ["all", "default", "eth0"] {
        let ra = t.exec_ok(
            "a",
            &["cat", &format!("/proc/sys/net/ipv6/conf/{key}/accept_ra")],
        );
        assert_eq!(ra.trim(), "0", "accept_ra of {key}");
    }
    let mode = t.exec_ok("a", &["cat", "/proc/sys/net/ipv6/conf/eth0/addr_gen_mode"]);
    assert_eq!(mode.trim(), "0");
    let hosts = t.exec_ok("a", &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("172.18.0.2\ta\n") && hosts.contains("fd00:a::2\ta\n"),
        "{hosts}"
    );
    let resolv = t.exec_ok("a", &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        resolv,
        "nameserver 172.18.0.1\nnameserver fd00:a::1\noptions ndots:0\n"
    );

    assert!(ping6(t, "a", "fd00:a::3"), "a pings b over IPv6");
    assert!(ping6(t, "b", "fd00:a::2"), "b pings a over IPv6");
    let (sent, received) = t.tcp_transfer("a", "b", "fd00:a::3", 4 << 20);
    assert!(sent.starts_with(&format!("{} ", 4 << 20)), "{sent}");
    assert_eq!(sent, received);
}

#[test]
fn dual_stack_sandboxes_talk_over_ipv6() {
    let mut t = Tapnet::new("v6pair");
    dual_stack_pair(&mut t);
}

/// The same as an unprivileged user (rootless mode, as tests/rootless.rs runs it).
#[test]
fn dual_stack_sandboxes_talk_over_ipv6_rootless() {
    let mut t = Tapnet::rootless("v6rl", "tapnet-test");
    dual_stack_pair(&mut t);
}

#[test]
fn ip6_is_honoured_and_refused_when_outside_or_taken() {
    let t = Tapnet::new("v6ip6");
    t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:b::/64",
    ]);
    t.ok(&[
        "sandbox",
        "create",
        "a",
        "--net",
        "d6",
        "--ip6",
        "fd00:b::99",
    ]);
    assert!(ip6_addrs(&t, "a").contains("inet6 fd00:b::99/64"));
    // Positive control of the refusals below: a free address in the subnet is taken.
    t.ok(&["sandbox", "create", "b", "--net", "bridge"]);
    t.ok(&["network", "connect", "d6", "b", "--ip6", "fd00:b::7"]);
    let b = t.exec_ok("b", &["ip", "-6", "addr", "show", "dev", "eth1"]);
    assert!(b.contains("inet6 fd00:b::7/64"), "{b}");
    // On the bridge network first: its IPv6 default route comes from d6.
    let routes = t.exec_ok("b", &["ip", "-6", "route", "show", "default"]);
    assert!(
        routes.contains("default via fd00:b::1 dev eth1"),
        "{routes}"
    );

    // Disconnecting takes the route with it.
    t.ok(&["network", "disconnect", "d6", "b"]);
    let routes = t.exec_ok("b", &["ip", "-6", "route", "show", "default"]);
    assert!(routes.trim().is_empty(), "{routes}");

    let before = t.json(&["sandbox", "ls"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "sandbox",
                "create",
                "c",
                "--net",
                "d6",
                "--ip6",
                "fd00:c::5",
            ],
            "address fd00:c::5 is not a usable address of subnet fd00:b::/64",
        ),
        (
            &[
                "sandbox",
                "create",
                "c",
                "--net",
                "d6",
                "--ip6",
                "fd00:b::99",
            ],
            "address fd00:b::99 is already in use",
        ),
        (
            &[
                "sandbox",
                "create",
                "c",
                "--net",
                "d6",
                "--ip6",
                "fd00:b::1",
            ],
            "is the network's gateway",
        ),
        (
            &[
                "sandbox",
                "create",
                "c",
                "--net",
                "bridge",
                "--ip6",
                "fd00:b::5",
            ],
            "network bridge has no IPv6 subnet",
        ),
    ];
    for (args, want) in cases {
        let err = t.fails(args);
        assert!(err.contains(want), "{args:?}: {err} does not say {want}");
    }
    assert_eq!(t.json(&["sandbox", "ls"]), before, "nothing changed");
    let usage = t.misuse(&["sandbox", "create", "c", "--net", "d6", "--ip6", "10.0.0.1"]);
    assert!(usage.contains("is not an IPv6 address"), "{usage}");
    let usage = t.misuse(&["network", "connect", "d6", "a", "--ip6", "fd00::zz"]);
    assert!(usage.contains("is not an IPv6 address"), "{usage}");
}

#[test]
fn ula_pool_gives_successive_64s_of_one_48_across_a_restart() {
    let t = Tapnet::new("v6ula");
    let subnet6 = |name: &str| -> String {
        let v = t.json(&["network", "inspect", name]);
        v["subnet6"].as_str().unwrap_or_default().to_string()
    };
    t.ok(&["network", "create", "p1", "--ipv6"]);
    t.ok(&["network", "create", "p2", "--ipv6"]);
    let (p1, p2) = (subnet6("p1"), subnet6("p2"));
    let net = |s: &str| -> (u128, u8) {
        let (addr, len) = s.split_once('/').expect("CIDR");
        let addr: std::net::Ipv6Addr = addr.parse().expect("address");
        (u128::from(addr), len.parse().expect("length"))
    };
    let ((a, la), (b, lb)) = (net(&p1), net(&p2));
    assert_eq!((la, lb), (64, 64), "{p1} {p2}");
    assert_eq!(a >> 120, 0xfd, "ULA: {p1}");
    assert_eq!(a >> 80, b >> 80, "one /48: {p1} {p2}");
    assert_eq!(b - a, 1 << 64, "successive /64s: {p1} {p2}");

    t.ok(&[
        "sandbox",
        "create",
        "old",
        "--net",
        "p2",
        "--ip6",
        &ip(b | 9),
    ]);
    t.stop_daemon(Signal::SIGKILL);
    t.ok(&["network", "create", "p3", "--ipv6"]);
    // The restarted daemon wires the sandbox it found again, with its IPv6 address and route.
    assert!(ip6_addrs(&t, "old").contains(&format!("inet6 {}/64", ip(b | 9))));
    let routes = t.exec_ok("old", &["ip", "-6", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("via {} dev eth0", ip(b | 1))),
        "{routes}"
    );
    let (c, _) = net(&subnet6("p3"));
    assert_eq!(c >> 80, a >> 80, "the same /48 after a restart");
    assert_eq!(c - b, 1 << 64, "the next /64 after a restart");
    // A sandbox on the pool's network gets prefix::2.
    t.ok(&["sandbox", "create", "s", "--net", "p3"]);
    let want = format!("inet6 {}/64", ip(c | 2));
    assert!(ip6_addrs(&t, "s").contains(&want), "{want}");
}

#[test]
fn refused_ipv6_prefixes_give_one_line_and_change_nothing() {
    let t = Tapnet::new("v6bad");
    t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:a::/64",
    ]);
    let before = t.json(&["network", "ls"]);
    let cases: &[(&str, &str)] = &[
        ("ff02::/64", "ff00::/8 (multicast)"),
        ("fe80::/64", "fe80::/10 (link-local)"),
        ("::/96", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("2001:db8::/64", "2001:db8::/32 (documentation)"),
        ("fd00:a::/112", "overlaps fd00:a::/64 of network d6"),
        ("fd00:d::/48", "/64 to /120"),
        ("fd00:d::/124", "/64 to /120"),
        ("fd00:d::1/64", "host bits"),
    ];
    for (subnet, want) in cases {
        let err = t.fails(&["network", "create", "x", "--ipv6", "--subnet", subnet]);
        assert!(err.contains(want), "{subnet}: {err} does not say {want}");
    }
    let err = t.fails(&[
        "network",
        "create",
        "x",
        "--ipv6",
        "--subnet",
        "fd00:e::/64",
        "--gateway",
        "fd00:f::1",
    ]);
    assert!(
        err.contains("gateway fd00:f::1 is not a usable address"),
        "{err}"
    );
    let err = t.fails(&["network", "create", "x", "--subnet", "fd00:e::/64"]);
    assert!(err.contains("needs --ipv6"), "{err}");
    let err = t.fails(&["network", "create", "x", "--no-ipv4"]);
    assert!(err.contains("--no-ipv4 needs --ipv6"), "{err}");
    assert_eq!(t.json(&["network", "ls"]), before, "nothing changed");
    // Malformed forms never reach the daemon.
    for args in [
        &["network", "create", "x", "--ipv6", "--subnet", "fd00::/129"][..],
        &["network", "create", "x", "--ipv6", "--gateway", "fd00::zz"],
        &[
            "network",
            "create",
            "x",
            "--ipv6",
            "--subnet",
            "fd00:1::/64",
            "--subnet",
            "fd00:2::/64",
        ],
    ] {
        t.misuse(args);
    }
    // Positive control: a good prefix is taken.
    t.ok(&[
        "network",
        "create",
        "x",
        "--ipv6",
        "--subnet",
        "fd00:e::/64",
        "--gateway",
        "fd00:e::fe",
    ]);
    assert_eq!(
        t.json(&["network", "inspect", "x"])["gateway6"],
        "fd00:e::fe"
    );
}

#[test]
fn ipv6_only_network() {
    let t = Tapnet::new("v6only");
    t.ok(&[
        "network",
        "create",
        "o6",
        "--ipv6",
        "--no-ipv4",
        "--subnet",
        "fd00:c::/64",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "o6"]);
    t.ok(&["sandbox", "create", "b", "--net", "o6"]);
    let v = t.json(&["network", "inspect", "o6"]);
    assert!(v["subnet"].is_null() && v["gateway"].is_null(), "{v}");
    assert_eq!(v["subnet6"], "fd00:c::/64");
    assert_eq!(v["gateway6"], "fd00:c::1");
    let v4 = t.exec_ok("a", &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(!v4.contains("inet "), "no IPv4 address: {v4}");
    assert!(ip6_addrs(&t, "a").contains("inet6 fd00:c::2/64"));
    assert!(ping6(&t, "a", "fd00:c::3"));
    let resolv = t.exec_ok("a", &["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "nameserver fd00:c::1\noptions ndots:0\n");
    let err = t.fails(&["sandbox", "create", "c", "--net", "o6", "--ip", "10.0.0.5"]);
    assert!(err.contains("network o6 has no IPv4 subnet"), "{err}");
}

#[test]
fn json_shapes_of_dual_stack_and_ipv4_only_objects() {
    let t = Tapnet::new("v6json");
    t.ok(&["network", "create", "plain"]);
    t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:a::/64",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "plain"]);
    t.ok(&["network", "connect", "d6", "a"]);

    let plain = t.json(&["network", "inspect", "plain"]);
    let text = plain.to_string();
    assert!(
        !text.contains("subnet6") && !text.contains("gateway6") && !text.contains("ipv6"),
        "{plain}"
    );
    let d6 = t.json(&["network", "inspect", "d6"]);
    assert_eq!(d6["subnet"], "172.19.0.0/16");
    assert_eq!(d6["subnet6"], "fd00:a::/64");
    assert_eq!(d6["gateway6"], "fd00:a::1");
    assert_eq!(d6["endpoints"][0]["ipv4"], "172.19.0.2/16");
    assert_eq!(d6["endpoints"][0]["ipv6"], "fd00:a::2/64");
    let ls = t.json(&["network", "ls"]);
    let listed = ls
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == "d6"))
        .expect("d6 listed");
    assert_eq!(listed["subnet6"], "fd00:a::/64");

    let sb = t.json(&["sandbox", "inspect", "a"]);
    let ifs = sb["interfaces"].as_array().expect("interfaces");
    assert!(ifs[0].get("ipv6").is_none(), "{sb}");
    assert_eq!(ifs[1]["ipv6"], "fd00:a::2/64");
    // The tables show the IPv6 side beside the IPv4 one.
    let table = t.ok(&["network", "ls"]);
    assert!(
        table.contains("172.19.0.0/16, fd00:a::/64") && table.contains("172.19.0.1, fd00:a::1"),
        "{table}"
    );
    let table = t.ok(&["sandbox", "inspect", "a"]);
    assert!(table.contains("172.19.0.2/16, fd00:a::2/64"), "{table}");
}

/// No neighbour can give a sandbox an IPv6 address, on an IPv4-only network too: its namespace
/// and interfaces refuse Router Advertisements.
#[test]
fn sandboxes_on_ipv4_only_networks_refuse_router_advertisements() {
    let t = Tapnet::new("v6ra");
    // Positive control: a new namespace accepts them unless told otherwise.
    let fresh = std::process::Command::new("unshare")
        .args(["-n", "cat", "/proc/sys/net/ipv6/conf/default/accept_ra"])
        .output()
        .expect("run unshare");
    assert_eq!(String::from_utf8_lossy(&fresh.stdout).trim(), "1");
    t.ok(&["network", "create", "plain"]);
    t.ok(&["sandbox", "create", "a", "--net", "plain"]);
    for key in ["all", "default", "eth0"] {
        let ra = t.exec_ok(
            "a",
            &["cat", &format!("/proc/sys/net/ipv6/conf/{key}/accept_ra")],
        );
        assert_eq!(ra.trim(), "0", "accept_ra of {key}");
    }
    let routes = t.exec_ok("a", &["ip", "-6", "route", "show", "default"]);
    assert!(routes.trim().is_empty(), "no IPv6 default route: {routes}");
    let addrs = ip6_addrs(&t, "a");
    assert!(!addrs.contains("scope global"), "{addrs}");
}

/// An IPv6-only Docker network as dockerd 28 (`--ipv4=false`) sends it to a plugin: no IPv4
/// pool, one IPv6 pool. One endpoint with dockerd's IPv6 address, one without any, for which
/// tapnet picks one and answers it in CreateEndpoint (dockerd's remote driver takes an address
/// it did not send). The TAPs are moved into namespaces and addressed as dockerd does at
/// Join; they reach each other and the gateway over IPv6.
#[test]
fn docker_plugin_ipv6_only_network() {
    use common::cni::Netns;
    use common::plugin_http::post_ok;
    use serde_json::json;
    let t = Tapnet::new("docker6only");
    t.ok(&["network", "ls"]);
    let plugin = format!("tn6o{}", std::process::id());
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let socket = std::path::PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let id = |n: u64| format!("{:064x}", n * 0x1_0000_0000 + u64::from(std::process::id()));
    let network = id(0x6a);
    post_ok(
        &socket,
        "/NetworkDriver.CreateNetwork",
        &json!({
            "NetworkID": network,
            "IPv4Data": [],
            "IPv6Data": [{"Pool": "fd00:d6::/64", "Gateway": "fd00:d6::1/64"}],
        }),
    );
    let name = format!("docker-{}", &network[..12]);
    let view = t.json(&["network", "inspect", &name]);
    assert!(view["subnet"].is_null(), "no IPv4 subnet: {view}");
    assert_eq!(view["subnet6"], "fd00:d6::/64", "{view}");
    let given = post_ok(
        &socket,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": network, "EndpointID": id(1),
                "Interface": {"AddressIPv6": "fd00:d6::10/64"}}),
    );
    let given: serde_json::Value = serde_json::from_str(&given).expect("JSON");
    assert!(
        given["Interface"].get("AddressIPv6").is_none(),
        "dockerd's own address is not answered back: {given}"
    );
    let picked = post_ok(
        &socket,
        "/NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": network, "EndpointID": id(2), "Interface": {}}),
    );
    let picked: serde_json::Value = serde_json::from_str(&picked).expect("JSON");
    assert_eq!(
        picked["Interface"]["AddressIPv6"], "fd00:d6::2/64",
        "{picked}"
    );
    assert!(picked["Interface"]["MacAddress"].is_string(), "{picked}");
    let a = Netns::new("d6oa");
    let b = Netns::new("d6ob");
    for (ep, ns, ip6) in [(id(1), &a, "fd00:d6::10/64"), (id(2), &b, "fd00:d6::2/64")] {
        let joined = post_ok(
            &socket,
            "/NetworkDriver.Join",
            &json!({"NetworkID": network, "EndpointID": ep, "SandboxKey": ns.path()}),
        );
        let joined: serde_json::Value = serde_json::from_str(&joined).expect("JSON");
        assert!(joined.get("Gateway").is_none(), "no IPv4 gateway: {joined}");
        assert_eq!(joined["GatewayIPv6"], "fd00:d6::1", "{joined}");
        let tap = joined["InterfaceName"]["SrcName"].as_str().expect("a TAP");
        // What dockerd does with the TAP: into the container's namespace, renamed, addressed.
        let ns_name = ns.path().rsplit('/').next().unwrap_or_default().to_string();
        let moved = std::process::Command::new("ip")
            .args(["link", "set", tap, "netns", &ns_name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(moved, "move {tap} into {ns_name}");
        for args in [
            vec!["ip", "link", "set", tap, "name", "eth0"],
            vec!["ip", "addr", "add", ip6, "dev", "eth0", "nodad"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "-6", "route", "add", "default", "via", "fd00:d6::1"],
        ] {
            let out = ns.exec(&args);
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
    }
    let ping = a.exec(&["ping", "-6", "-c", "2", "-W", "2", "fd00:d6::2"]);
    assert!(ping.status.success(), "a reaches tapnet's pick: {ping:?}");
    let ping = b.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:d6::1"]);
    assert!(ping.status.success(), "b reaches the gateway: {ping:?}");
    let inspect = t.json(&["network", "inspect", &name]);
    let shown = inspect.to_string();
    assert!(
        shown.contains("fd00:d6::10/64") && shown.contains("fd00:d6::2/64"),
        "inspect shows both IPv6 addresses: {inspect}"
    );
    drop((a, b));
    for ep in [id(1), id(2)] {
        for call in ["/NetworkDriver.Leave", "/NetworkDriver.DeleteEndpoint"] {
            post_ok(
                &socket,
                call,
                &json!({"NetworkID": network, "EndpointID": ep}),
            );
        }
    }
    post_ok(
        &socket,
        "/NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": network}),
    );
    assert!(!t.network_names().contains(&name));
    t.ok(&["plugin", "docker", "--name", &plugin, "--stop"]);
}

/// Frames the switch wrote to the ports of `network` so far.
fn written_on(t: &Tapnet, network: &str) -> u64 {
    let rows = t.json(&["stats"]);
    rows.as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["network"] == network)
                .filter_map(|r| r["tx_packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// An endpoint of a network without IPv6 has IPv6 off on its interface, as Docker's have: no
/// link-local address, so a new sandbox multicasts no DAD, MLD or Router Solicitation that the
/// switch would copy to every port (at 500 sandboxes that was 25,000 frames per create). The
/// positive control: the same arrival on a dual-stack network does multicast.
#[test]
fn a_new_sandbox_on_an_ipv4_only_network_multicasts_nothing() {
    let t = Tapnet::new("v4quiet");
    t.ok(&["network", "create", "v4n", "--subnet", "10.91.0.0/24"]);
    t.ok(&[
        "network",
        "create",
        "v6n",
        "--subnet",
        "10.92.0.0/24",
        "--ipv6",
    ]);
    for s in ["a", "b"] {
        t.ok(&["sandbox", "create", &format!("{s}4"), "--net", "v4n"]);
        t.ok(&["sandbox", "create", &format!("{s}6"), "--net", "v6n"]);
    }
    // Let the first ones' own DAD and MLD end.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (v4, v6) = (written_on(&t, "v4n"), written_on(&t, "v6n"));
    t.ok(&["sandbox", "create", "c4", "--net", "v4n"]);
    t.ok(&["sandbox", "create", "c6", "--net", "v6n"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (v4_after, v6_after) = (written_on(&t, "v4n"), written_on(&t, "v6n"));
    assert_eq!(v4_after, v4, "frames written on the IPv4-only network");
    assert!(
        v6_after > v6,
        "no multicast on the dual-stack network: the control failed"
    );
    let off = t.exec_ok("c4", &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    assert_eq!(off.trim(), "1");
    assert!(
        ip6_addrs(&t, "c4").trim().is_empty(),
        "{}",
        ip6_addrs(&t, "c4")
    );
    // IPv4 between them is untouched.
    assert!(t.ping("c4", "10.91.0.2"));
}
