//! Overlay networks: two daemons (two hosts) whose sandboxes share one L2 domain over tapnet's
//! userspace VTEPs, and a Linux kernel vxlan device as the wire-compatibility peer. VTEPs bind
//! loopback addresses of their own (127.78.P.N, P from the test process) or, for the kernel
//! peer, one end of a veth pair whose other end is in a namespace the test makes: no packet
//! leaves the machine.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Tapnet, traffic_script};

static NEXT_ADDR: AtomicU32 = AtomicU32::new(2);

/// A loopback address no other test (of this run) uses, so every VTEP can take port 4789.
fn loopback() -> String {
    let n = NEXT_ADDR.fetch_add(1, Ordering::SeqCst);
    format!("127.78.{}.{n}", std::process::id() % 250)
}

/// One host: a daemon and the address of its VTEP.
struct Host {
    t: Tapnet,
    vtep: String,
}

fn host(tag: &str) -> Host {
    Host {
        t: Tapnet::new(tag),
        vtep: loopback(),
    }
}

/// Create overlay network `name` (VNI `vni`, `subnet`, addresses from `range`) on `h`,
/// peering with `peers`; its gateway address leads to the host's loopback (the NAT test's
/// server listens there).
fn overlay(h: &Host, name: &str, vni: u32, subnet: &str, range: &str, peers: &[&str]) {
    let vtep = format!("vtep={}", h.vtep);
    let peers = format!("peers={}", peers.join(","));
    let vni = vni.to_string();
    h.t.ok(&[
        "network",
        "create",
        name,
        "--driver",
        "overlay",
        "--vni",
        &vni,
        "--subnet",
        subnet,
        "--ip-range",
        range,
        "--opt",
        &vtep,
        "--opt",
        &peers,
        "--opt",
        "host_loopback=on",
    ]);
}

fn inspect(h: &Host, net: &str) -> serde_json::Value {
    h.t.json(&["network", "inspect", net])
}

fn ip_of(h: &Host, sandbox: &str) -> String {
    let v = h.t.json(&["sandbox", "inspect", sandbox]);
    let cidr = v["interfaces"][0]["ipv4"]
        .as_str()
        .unwrap_or("")
        .to_string();
    cidr.split('/').next().unwrap_or("").to_string()
}

/// TCP transfer of `bytes` from `from` on `a` to `server_ip` in `to` on `b`: both sides'
/// "BYTES SHA256".
fn tcp_across(
    a: &Host,
    from: &str,
    b: &mut Host,
    to: &str,
    server_ip: &str,
    bytes: usize,
) -> (String, String) {
    let server = b.t.spawn_server(to, &["tcp-serve", server_ip, "5001"]);
    let script = traffic_script();
    let sent = a.t.exec_ok(
        from,
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "tcp-send",
            server_ip,
            "5001",
            &bytes.to_string(),
        ],
    );
    (sent.trim().to_string(), b.t.server_output(server))
}

#[test]
fn sandboxes_on_two_daemons_share_one_overlay_network() {
    let mut a = host("ova");
    let mut b = host("ovb");
    overlay(&a, "ov", 4200, "10.78.0.0/24", "10.78.0.0/25", &[&b.vtep]);
    overlay(&b, "ov", 4200, "10.78.0.0/24", "10.78.0.128/25", &[&a.vtep]);
    a.t.ok(&["sandbox", "create", "left", "--net", "ov"]);
    b.t.ok(&["sandbox", "create", "right", "--net", "ov"]);
    let (left, right) = (ip_of(&a, "left"), ip_of(&b, "right"));
    assert_ne!(left, right);

    let mtu = a.t.exec_ok("left", &["ip", "-o", "link", "show", "eth0"]);
    assert!(mtu.contains("mtu 1450"), "{mtu}");
    assert!(
        a.t.ping("left", &right),
        "left cannot ping right across the overlay"
    );
    assert!(
        b.t.ping("right", &left),
        "right cannot ping left across the overlay"
    );
    // Each host's gateway is local (same address on both): reachable, and never crosses.
    assert!(a.t.ping("left", "10.78.0.1"));
    assert!(b.t.ping("right", "10.78.0.1"));
    // NAT leaves from the sandbox's own host, through its local gateway.
    let (server, port) =
        b.t.spawn_host_server_on_free_port(&["tcp-serve", "127.0.0.1", "0"]);
    let sent =
        b.t.traffic("right", &["tcp-send", "10.78.0.1", &port, "1000000"]);
    assert_eq!(
        sent,
        b.t.server_output(server),
        "1 MB through the overlay's NAT"
    );

    // 10 MB both ways, checksummed: super-frames are segmented before encapsulation.
    let (sent, received) = tcp_across(&a, "left", &mut b, "right", &right, 10_000_000);
    assert!(sent.starts_with("10000000 "), "{sent}");
    assert_eq!(sent, received);
    let (sent, received) = tcp_across(&b, "right", &mut a, "left", &left, 10_000_000);
    assert!(sent.starts_with("10000000 "), "{sent}");
    assert_eq!(sent, received);

    // inspect shows the VTEP, its peer, and the remote sandbox learned against the peer.
    let v = inspect(&a, "ov");
    assert_eq!(v["driver"], "overlay");
    assert_eq!(v["vni"], 4200);
    let o = &v["overlay"];
    assert_eq!(o["vtep"], format!("{}:4789", a.vtep), "{v}");
    assert_eq!(o["peers"][0], format!("{}:4789", b.vtep), "{v}");
    let right_mac = b.t.json(&["sandbox", "inspect", "right"])["interfaces"][0]["mac"].clone();
    let remote = o["remote"].as_array().cloned().unwrap_or_default();
    assert!(
        remote
            .iter()
            .any(|r| r["mac"] == right_mac && r["vtep"] == o["peers"][0]),
        "{v}"
    );
    assert!(o["tx_packets"].as_u64() > Some(1000), "{v}");
    assert_eq!(o["rx_malformed"], 0, "{v}");
}

/// Frames each datapath worker of `h` has read (TAP queues and VTEP sockets).
fn frames_read(h: &Host) -> Vec<u64> {
    let info = h.t.json(&["info"]);
    info["frames_read"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Decapsulation runs in every datapath worker, each on its own socket of the VTEP's
/// `SO_REUSEPORT` group: 64 UDP flows from a sandbox on one host to a sandbox on the other
/// are read by both of the receiving daemon's workers. (When one VTEP thread decapsulated,
/// its frames entered the switch through one worker: the other read only what the receiving
/// sandbox sent back, a few ICMP errors at most, under the bar below.)
#[test]
fn every_datapath_worker_decapsulates_a_share_of_the_flows() {
    // 64 sockets, one flow each: the flows differ in their source port.
    flows_spread_over_the_receiving_workers("ovw", 4250, "10.80.0", |right, flows, each| {
        format!(
            "import socket, time\n\
             socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({flows})]\n\
             for _ in range({each}):\n    \
                 for s in socks:\n        s.sendto(b'x' * 64, ('{right}', 9))\n    \
                 time.sleep(0.01)\n"
        )
    });
}

/// Flows that differ only in their destination port, the last bytes the VTEP's flow hash
/// takes (one server's replies to one client's connections), spread too: with FNV-1a alone
/// they all got one outer source port, left through one socket and reached one worker.
#[test]
fn flows_that_differ_only_in_their_destination_port_spread_over_the_workers() {
    // One socket to 64 ports, two apart as Linux hands out a client's ephemeral ports.
    flows_spread_over_the_receiving_workers("ovd", 4251, "10.83.0", |right, flows, each| {
        format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range({each}):\n    \
                 for i in range({flows}):\n        s.sendto(b'x' * 64, ('{right}', 40000 + 2 * i))\n    \
                 time.sleep(0.01)\n"
        )
    });
}

/// Two hosts on overlay network `tag` (VNI `vni`, `{prefix}.0/24`), the receiving daemon with
/// two workers; the sandbox on the first sends 64 UDP flows of 25 datagrams each with the
/// Python program `script(destination, flows, each)` builds, and each receiving worker must
/// have read at least a tenth of what arrived.
fn flows_spread_over_the_receiving_workers(
    tag: &str,
    vni: u32,
    prefix: &str,
    script: impl Fn(&str, u64, u64) -> String,
) {
    let a = host(&format!("{tag}a"));
    let b = host(&format!("{tag}b"));
    let daemon = common::Daemon::start(&b.t, &["--datapath-threads", "2"]);
    let subnet = format!("{prefix}.0/24");
    overlay(&a, tag, vni, &subnet, &format!("{prefix}.0/25"), &[&b.vtep]);
    overlay(
        &b,
        tag,
        vni,
        &subnet,
        &format!("{prefix}.128/25"),
        &[&a.vtep],
    );
    a.t.ok(&["sandbox", "create", "left", "--net", tag]);
    b.t.ok(&["sandbox", "create", "right", "--net", tag]);
    let right = ip_of(&b, "right");
    assert!(a.t.ping("left", &right), "left cannot ping right");
    let before = frames_read(&b);
    assert_eq!(before.len(), 2, "{before:?}");
    const FLOWS: u64 = 64;
    const EACH: u64 = 25;
    a.t.exec_ok("left", &["python3", "-c", &script(&right, FLOWS, EACH)]);
    let sent = FLOWS * EACH;
    // What arrived: the VTEP counts every datagram it took.
    let arrived = || {
        inspect(&b, tag)["overlay"]["rx_packets"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        common::wait_until(std::time::Duration::from_secs(5), || arrived() >= sent / 2),
        "{} of {sent} datagrams arrived: {}",
        arrived(),
        inspect(&b, tag)
    );
    let after = frames_read(&b);
    let read: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = read.iter().sum();
    eprintln!("frames read by each worker: {read:?} of {sent} sent");
    assert!(total >= sent / 2, "{read:?} of {sent} sent");
    for (worker, n) in read.iter().enumerate() {
        assert!(
            *n >= total / 10,
            "worker {worker} read {n} of {total} frames ({read:?}): flows did not spread"
        );
    }
    drop(b);
    drop(daemon);
}

#[test]
fn overlay_networks_with_other_vnis_are_isolated() {
    let a = host("ovisoa");
    let b = host("ovisob");
    // Same subnet, different VNIs: nothing crosses, and the receiver counts foreign VNIs.
    overlay(&a, "red", 4301, "10.79.0.0/24", "10.79.0.0/25", &[&b.vtep]);
    overlay(
        &b,
        "blue",
        4302,
        "10.79.0.0/24",
        "10.79.0.128/25",
        &[&a.vtep],
    );
    // Positive control on the same two VTEPs: matching VNIs do connect.
    overlay(
        &a,
        "green",
        4303,
        "10.79.1.0/24",
        "10.79.1.0/25",
        &[&b.vtep],
    );
    overlay(
        &b,
        "green",
        4303,
        "10.79.1.0/24",
        "10.79.1.128/25",
        &[&a.vtep],
    );
    a.t.ok(&["sandbox", "create", "r", "--net", "red"]);
    b.t.ok(&["sandbox", "create", "u", "--net", "blue"]);
    a.t.ok(&["sandbox", "create", "g1", "--net", "green"]);
    b.t.ok(&["sandbox", "create", "g2", "--net", "green"]);
    assert!(
        a.t.ping("g1", &ip_of(&b, "g2")),
        "the positive control failed"
    );
    assert!(!a.t.ping("r", &ip_of(&b, "u")), "VNI 4301 reached VNI 4302");
    let foreign = inspect(&b, "blue")["overlay"]["rx_foreign_vni"].as_u64();
    assert!(foreign > Some(0), "no foreign VNI counted: {foreign:?}");
}

#[test]
fn bad_overlay_requests_fail_cleanly() {
    let a = host("ovbad");
    let vtep = format!("vtep={}", a.vtep);
    for (args, want) in [
        (vec!["--vni", "0"], "out of range"),
        (vec!["--vni", "16777216"], "out of range"),
        (vec!["--opt", "colour=blue"], "unknown option colour"),
        (vec!["--opt", "peers=nowhere"], "option peers"),
        (vec![], "needs a VTEP"),
    ] {
        let mut full = vec!["network", "create", "x", "--driver", "overlay"];
        full.extend(args);
        let err = a.t.fails(&full);
        assert!(err.contains(want), "{err} does not say {want}");
    }
    a.t.ok(&[
        "network", "create", "x", "--driver", "overlay", "--vni", "7", "--opt", &vtep,
    ]);
    let err = a.t.fails(&[
        "network", "create", "y", "--driver", "overlay", "--vni", "7", "--opt", &vtep,
    ]);
    assert!(err.contains("VNI 7 is taken by network x"), "{err}");
    let err = a.t.fails(&["network", "create", "y", "--vni", "8"]);
    assert!(err.contains("overlay networks only"), "{err}");
    assert!(!a.t.network_names().contains(&"y".to_string()));
    // Removing the network frees the VTEP's address: a new network binds it again.
    a.t.ok(&["network", "rm", "x"]);
    a.t.ok(&[
        "network", "create", "z", "--driver", "overlay", "--opt", &vtep,
    ]);
    assert_eq!(inspect(&a, "z")["vni"], 256);
}

/// A network namespace with one end of a veth pair (the other in ours) and a kernel vxlan
/// device on it; removed on drop.
struct KernelPeer {
    ns: String,
    host_if: String,
    /// The root namespace's end of the veth: the tapnet VTEP binds it.
    host_ip: String,
    ns_ip: String,
    children: Vec<Child>,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl KernelPeer {
    /// A Linux vxlan device `vx0` (VNI `vni`, addresses `inner_cidrs`) in a namespace of its
    /// own, its underlay a veth pair: IPv4 (10.250.K.4N/30) or IPv6 (fd7b:K:N::/64), N
    /// counting the peers of this run, so that tests running at once do not meet.
    fn new(vni: u32, inner_cidrs: &[&str], ipv6_underlay: bool) -> KernelPeer {
        static NEXT_PEER: AtomicU32 = AtomicU32::new(0);
        let n = NEXT_PEER.fetch_add(1, Ordering::SeqCst);
        let id = std::process::id() % 100_000;
        let k = std::process::id() % 250;
        let (host_ip, ns_ip, prefix) = if ipv6_underlay {
            // Written as the daemon prints them.
            let ip = |last| std::net::Ipv6Addr::new(0xfd7b, k as u16, n as u16, 0, 0, 0, 0, last);
            (ip(1).to_string(), ip(2).to_string(), 64)
        } else {
            (
                format!("10.250.{k}.{}", 4 * n + 1),
                format!("10.250.{k}.{}", 4 * n + 2),
                30,
            )
        };
        let peer = KernelPeer {
            ns: format!("tapnet-vx{n}-{id}"),
            host_if: format!("tvx{n}{id}h"),
            host_ip,
            ns_ip,
            children: Vec::new(),
        };
        let ns_if = format!("tvx{n}{id}n");
        let host_cidr = format!("{}/{prefix}", peer.host_ip);
        let ns_cidr = format!("{}/{prefix}", peer.ns_ip);
        let vni = vni.to_string();
        // No duplicate address detection: the VTEP binds the address at once.
        let nodad: &[&str] = if ipv6_underlay { &["nodad"] } else { &[] };
        let mut steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &peer.ns],
            vec![
                "ip",
                "link",
                "add",
                &peer.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
                "netns",
                &peer.ns,
            ],
            [
                &["ip", "addr", "add", &host_cidr, "dev", &peer.host_if][..],
                nodad,
            ]
            .concat(),
            vec!["ip", "link", "set", &peer.host_if, "up"],
            vec!["ip", "-n", &peer.ns, "link", "set", "lo", "up"],
            vec!["ip", "-n", &peer.ns, "link", "set", &ns_if, "up"],
            [
                &["ip", "-n", &peer.ns, "addr", "add", &ns_cidr, "dev", &ns_if][..],
                nodad,
            ]
            .concat(),
            // A veth never computes checksums: the kernel would hand the inner TCP checksum
            // still partial to our UDP socket. A real wire computes it; so does a veth without
            // tx offload.
            vec![
                "ip", "netns", "exec", &peer.ns, "ethtool", "-K", &ns_if, "tx", "off",
            ],
        ];
        for step in steps.drain(..) {
            if let Err(e) = sh(&step) {
                panic!("setting up the kernel peer: {e}");
            }
        }
        // The kernel's VXLAN is the reference: without the module there is no interop test.
        let _ = Command::new("modprobe").arg("vxlan").output();
        if let Err(e) = sh(&[
            "ip",
            "-n",
            &peer.ns,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            &vni,
            "remote",
            &peer.host_ip,
            "local",
            &peer.ns_ip,
            "dstport",
            "4789",
            "dev",
            &ns_if,
        ]) {
            panic!("the kernel's vxlan is needed for the interop test (modprobe vxlan): {e}");
        }
        for cidr in inner_cidrs {
            let mut add = vec!["ip", "-n", &peer.ns, "addr", "add", cidr, "dev", "vx0"];
            if cidr.contains(':') {
                add.push("nodad");
            }
            sh(&add).expect("vx0 address");
        }
        // 1500 on the veth, less VXLAN's overhead over the underlay's family.
        let mtu = if ipv6_underlay { "1430" } else { "1450" };
        sh(&["ip", "-n", &peer.ns, "link", "set", "vx0", "mtu", mtu, "up"]).expect("vx0 up");
        peer
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// A traffic.py server in the namespace; waits until it listens.
    fn serve(&mut self, args: &[&str]) -> usize {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3"])
            .arg(traffic_script())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server in the kernel peer");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("server output");
        assert_eq!(line.trim(), "ready");
        child.stdout = Some(reader.into_inner());
        self.children.push(child);
        self.children.len() - 1
    }

    fn server_output(&mut self, index: usize) -> String {
        let child = self.children.remove(index);
        let out = child.wait_with_output().expect("server exit");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for KernelPeer {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
    }
}

#[test]
fn a_linux_kernel_vxlan_device_exchanges_ping_and_tcp_with_a_sandbox() {
    let mut kernel = KernelPeer::new(4400, &["10.77.7.200/24"], false);
    let mut a = Host {
        t: Tapnet::new("ovkernel"),
        vtep: kernel.host_ip.clone(),
    };
    let peer = kernel.ns_ip.clone();
    overlay(&a, "ov", 4400, "10.77.7.0/24", "10.77.7.0/25", &[&peer]);
    a.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    let s_ip = ip_of(&a, "s");

    assert!(
        a.t.ping("s", "10.77.7.200"),
        "sandbox cannot ping the kernel's vxlan"
    );
    let out = kernel.run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", &s_ip]);
    assert!(
        out.status.success(),
        "kernel vxlan cannot ping the sandbox: {out:?}"
    );

    // TCP both ways, checksummed.
    let server = kernel.serve(&["tcp-serve", "10.77.7.200", "5001"]);
    let script = traffic_script();
    let script = script.to_str().unwrap_or("");
    let sent = a.t.exec_ok(
        "s",
        &[
            "python3",
            script,
            "tcp-send",
            "10.77.7.200",
            "5001",
            "5000000",
        ],
    );
    assert!(sent.starts_with("5000000 "), "{sent}");
    assert_eq!(sent.trim(), kernel.server_output(server));

    let server = a.t.spawn_server("s", &["tcp-serve", &s_ip, "5001"]);
    let out = kernel.run(&["python3", script, "tcp-send", &s_ip, "5001", "5000000"]);
    assert!(out.status.success(), "{out:?}");
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(sent.starts_with("5000000 "), "{sent}");
    assert_eq!(sent, a.t.server_output(server));

    // The kernel's packets passed every check: none was dropped.
    let o = &inspect(&a, "ov")["overlay"];
    for counter in [
        "rx_malformed",
        "rx_bad_flags",
        "rx_foreign_vni",
        "rx_unknown_peer",
    ] {
        assert_eq!(o[counter], 0, "{counter}: {o}");
    }
}

fn ip6_of(h: &Host, sandbox: &str) -> String {
    let v = h.t.json(&["sandbox", "inspect", sandbox]);
    let cidr = v["interfaces"][0]["ipv6"]
        .as_str()
        .unwrap_or("")
        .to_string();
    cidr.split('/').next().unwrap_or("").to_string()
}

fn ping6(h: &Host, sandbox: &str, ip: &str) -> bool {
    h.t.exec(
        sandbox,
        &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip],
    )
    .status
    .success()
}

/// A dual-stack overlay network (`--ipv6 --subnet SUBNET6`) on `h`, with `options`.
fn overlay_dual(h: &Host, vni: u32, subnets: (&str, &str), range: &str, options: &[String]) {
    let vni = vni.to_string();
    let mut args = vec![
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--vni",
        &vni,
        "--subnet",
        subnets.0,
        "--ip-range",
        range,
        "--ipv6",
        "--subnet",
        subnets.1,
    ];
    for o in options {
        args.extend(["--opt", o.as_str()]);
    }
    h.t.ok(&args);
}

/// Ping both ways over `family` ("-4" or "-6") between sandbox `s` of `a` and the kernel peer.
fn pings_with_kernel(a: &Host, kernel: &KernelPeer, s_ip: &str, kernel_ip: &str, family: &str) {
    assert!(
        a.t.exec(
            "s",
            &["ping", family, "-c", "2", "-i", "0.2", "-W", "1", kernel_ip]
        )
        .status
        .success(),
        "sandbox cannot ping the kernel's vxlan at {kernel_ip}"
    );
    let out = kernel.run(&["ping", family, "-c", "2", "-i", "0.2", "-W", "1", s_ip]);
    assert!(
        out.status.success(),
        "kernel vxlan cannot ping the sandbox at {s_ip}: {out:?}"
    );
}

/// A checksummed TCP transfer of 5 MB from sandbox `s` to the kernel peer at `kernel_ip` and
/// one back to the sandbox at `s_ip`.
fn tcp_with_kernel(a: &mut Host, kernel: &mut KernelPeer, s_ip: &str, kernel_ip: &str) {
    let script = traffic_script();
    let script = script.to_str().unwrap_or("");
    let server = kernel.serve(&["tcp-serve", kernel_ip, "5001"]);
    let sent = a.t.exec_ok(
        "s",
        &["python3", script, "tcp-send", kernel_ip, "5001", "5000000"],
    );
    assert!(sent.starts_with("5000000 "), "{sent}");
    assert_eq!(sent.trim(), kernel.server_output(server));

    let server = a.t.spawn_server("s", &["tcp-serve", s_ip, "5001"]);
    let out = kernel.run(&["python3", script, "tcp-send", s_ip, "5001", "5000000"]);
    assert!(out.status.success(), "{out:?}");
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(sent.starts_with("5000000 "), "{sent}");
    assert_eq!(sent, a.t.server_output(server));
}

fn no_drops(a: &Host) {
    let o = &inspect(a, "ov")["overlay"];
    for counter in [
        "rx_malformed",
        "rx_bad_flags",
        "rx_foreign_vni",
        "rx_unknown_peer",
    ] {
        assert_eq!(o[counter], 0, "{counter}: {o}");
    }
}

#[test]
fn a_linux_kernel_vxlan_device_speaks_ipv6_with_a_sandbox_over_an_ipv4_underlay() {
    let mut kernel = KernelPeer::new(4410, &["10.77.8.200/24", "fd77:8::200/64"], false);
    let mut a = Host {
        t: Tapnet::new("ovk6in4"),
        vtep: kernel.host_ip.clone(),
    };
    let options = [
        format!("vtep={}", a.vtep),
        format!("peers={}", kernel.ns_ip),
    ];
    overlay_dual(
        &a,
        4410,
        ("10.77.8.0/24", "fd77:8::/64"),
        "10.77.8.0/25",
        &options,
    );
    a.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    let s6 = ip6_of(&a, "s");
    assert_eq!(s6, "fd77:8::2");

    // Neighbour Discovery crosses (its multicast is flooded to the peer) both ways.
    pings_with_kernel(&a, &kernel, &s6, "fd77:8::200", "-6");
    pings_with_kernel(&a, &kernel, &ip_of(&a, "s"), "10.77.8.200", "-4");
    tcp_with_kernel(&mut a, &mut kernel, &s6, "fd77:8::200");
    no_drops(&a);
}

#[test]
fn a_linux_kernel_vxlan_device_over_an_ipv6_underlay_carries_ipv4_and_ipv6() {
    let mut kernel = KernelPeer::new(4420, &["10.77.9.200/24", "fd77:9::200/64"], true);
    let mut a = Host {
        t: Tapnet::new("ovk6u"),
        vtep: kernel.host_ip.clone(),
    };
    // Bare IPv6 addresses: port 4789.
    let options = [
        format!("vtep={}", a.vtep),
        format!("peers={}", kernel.ns_ip),
    ];
    overlay_dual(
        &a,
        4420,
        ("10.77.9.0/24", "fd77:9::/64"),
        "10.77.9.0/25",
        &options,
    );
    let v = inspect(&a, "ov");
    assert_eq!(v["overlay"]["vtep"], format!("[{}]:4789", a.vtep), "{v}");
    assert_eq!(v["mtu"], 1430, "an IPv6 underlay's default MTU: {v}");
    a.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    let mtu = a.t.exec_ok("s", &["ip", "-o", "link", "show", "eth0"]);
    assert!(mtu.contains("mtu 1430"), "{mtu}");
    let (s4, s6) = (ip_of(&a, "s"), ip6_of(&a, "s"));

    // IPv4 in IPv6, and IPv6 in IPv6.
    pings_with_kernel(&a, &kernel, &s4, "10.77.9.200", "-4");
    pings_with_kernel(&a, &kernel, &s6, "fd77:9::200", "-6");
    tcp_with_kernel(&mut a, &mut kernel, &s4, "10.77.9.200");
    tcp_with_kernel(&mut a, &mut kernel, &s6, "fd77:9::200");
    no_drops(&a);
}

#[test]
fn two_daemons_share_a_dual_stack_overlay_over_ipv6_vteps() {
    // Both VTEPs on ::1, told apart by port: the only IPv6 loopback address.
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    let a = Host {
        t: Tapnet::new("ov6a"),
        vtep: format!("[::1]:{base}"),
    };
    let mut b = Host {
        t: Tapnet::new("ov6b"),
        vtep: format!("[::1]:{}", base + 1),
    };
    // a's VTEP from the daemon's --vtep, b's from the network's option.
    let mut daemon = start_daemon(&a.t, &["--vtep", &a.vtep]);
    let subnets = ("10.82.0.0/24", "fd78::/64");
    overlay_dual(
        &a,
        4700,
        subnets,
        "10.82.0.0/25",
        &[format!("peers={}", b.vtep)],
    );
    let options = [format!("vtep={}", b.vtep), format!("peers={}", a.vtep)];
    overlay_dual(&b, 4700, subnets, "10.82.0.128/25", &options);
    a.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    // IPv6 addresses are allocated per host, as IPv4 ones without a store: one is given.
    b.t.ok(&[
        "sandbox",
        "create",
        "t",
        "--net",
        "ov",
        "--ip6",
        "fd78::100",
    ]);
    let mtu = a.t.exec_ok("s", &["ip", "-o", "link", "show", "eth0"]);
    assert!(mtu.contains("mtu 1430"), "the daemon's IPv6 --vtep: {mtu}");
    assert_eq!(inspect(&a, "ov")["overlay"]["vtep"], a.vtep);

    let (t4, s6) = (ip_of(&b, "t"), ip6_of(&a, "s"));
    assert!(a.t.ping("s", &t4), "IPv4 over IPv6 VTEPs");
    assert!(ping6(&a, "s", "fd78::100"), "IPv6 over IPv6 VTEPs");
    assert!(ping6(&b, "t", &s6), "IPv6 over IPv6 VTEPs, back");
    // Super-frames segmented, sent with UDP GSO and received with GRO over IPv6.
    let (sent, received) = tcp_across(&a, "s", &mut b, "t", "fd78::100", 10_000_000);
    assert!(sent.starts_with("10000000 "), "{sent}");
    assert_eq!(sent, received);
    let o = &inspect(&b, "ov")["overlay"];
    assert_eq!(o["rx_unknown_peer"], 0, "{o}");
    assert_eq!(o["rx_malformed"], 0, "{o}");

    // A peer of the other family is refused by name (an IPv6 VTEP cannot reach it).
    let err = a.t.fails(&[
        "network",
        "create",
        "mixed",
        "--driver",
        "overlay",
        "--subnet",
        "10.83.0.0/24",
        "--opt",
        &format!("vtep=[::1]:{}", base + 2),
        "--opt",
        "peers=127.0.0.1",
    ]);
    assert!(err.contains("127.0.0.1:4789 is IPv4"), "{err}");

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}

/// Start `tapnet daemon ARGS` for `t` in the background and wait until it answers.
fn start_daemon(t: &Tapnet, args: &[&str]) -> Child {
    let mut full = vec!["daemon"];
    full.extend(args);
    let child = t
        .command(&full)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || t.dir.join("tapnet.sock").exists()
    ));
    child
}

/// A VXLAN packet for `vni` carrying an Ethernet frame from `src` (broadcast, IPv4 ethertype).
fn packet(flags: u8, vni: u32, src: [u8; 6]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut p = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    p.extend_from_slice(&[0xff; 6]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&[0u8; 46]);
    p
}

#[test]
fn the_daemon_vtep_survives_bad_packets_and_a_restart() {
    let a = host("ovdaemon");
    let b = host("ovdaemonb");
    let vtep_flag = a.vtep.clone();
    let mut daemon = start_daemon(&a.t, &["--vtep", &vtep_flag]);
    // No vtep= here: the daemon's --vtep is used, and kept with the network.
    let peers = format!("peers={}", b.vtep);
    a.t.ok(&[
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--vni",
        "4500",
        "--subnet",
        "10.80.0.0/24",
        "--ip-range",
        "10.80.0.0/25",
        "--opt",
        &peers,
    ]);
    overlay(&b, "ov", 4500, "10.80.0.0/24", "10.80.0.128/25", &[&a.vtep]);
    a.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    b.t.ok(&["sandbox", "create", "t", "--net", "ov"]);
    let t_ip = ip_of(&b, "t");
    assert!(a.t.ping("s", &t_ip));
    assert_eq!(
        inspect(&a, "ov")["options"]["vtep"],
        format!("{}:4789", a.vtep)
    );

    // Bad packets from the peer's address, and a good-looking one from a stranger.
    let to = format!("{}:4789", a.vtep);
    let from_peer = std::net::UdpSocket::bind(format!("{}:0", b.vtep)).expect("bind as the peer");
    let good_src = [2, 0x42, 10, 80, 0, 250];
    for p in [
        vec![0x08, 0, 0],              // runt
        packet(0x00, 4500, good_src),  // I flag clear
        packet(0x88, 4500, good_src),  // GBP: not implemented
        packet(0x08, 4501, good_src),  // foreign VNI
        packet(0x08, 4500, [0xff; 6]), // multicast source MAC
    ] {
        from_peer.send_to(&p, &to).expect("send");
    }
    let stranger = std::net::UdpSocket::bind(format!("{}:0", loopback())).expect("bind");
    stranger
        .send_to(&packet(0x08, 4500, good_src), &to)
        .expect("send");
    let counted = common::wait_until(std::time::Duration::from_secs(3), || {
        let o = inspect(&a, "ov")["overlay"].clone();
        o["rx_malformed"].as_u64() >= Some(2)
            && o["rx_bad_flags"].as_u64() >= Some(2)
            && o["rx_foreign_vni"].as_u64() >= Some(1)
            && o["rx_unknown_peer"].as_u64() >= Some(1)
    });
    assert!(counted, "{}", inspect(&a, "ov"));
    let remote = inspect(&a, "ov")["overlay"]["remote"].to_string();
    assert!(
        !remote.contains("02:42:0a:50:00:fa"),
        "a dropped packet was learned: {remote}"
    );
    assert!(a.t.ping("s", &t_ip), "the VTEP stopped after bad packets");

    // A restarted daemon (autostarted, without --vtep) binds the network's VTEP again.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    assert!(a.t.ping("s", &t_ip), "no overlay after a restart");
}

#[test]
fn a_rootless_daemon_shares_an_overlay_with_a_root_daemon() {
    // The rootless daemon's VTEP is a plain UDP socket in the user's network namespace.
    let mut a = Host {
        t: Tapnet::rootless("ovrootless", "tapnet-test"),
        vtep: loopback(),
    };
    let b = host("ovrootlessb");
    overlay(&a, "ov", 4600, "10.81.0.0/24", "10.81.0.0/25", &[&b.vtep]);
    overlay(&b, "ov", 4600, "10.81.0.0/24", "10.81.0.128/25", &[&a.vtep]);
    a.t.ok(&["sandbox", "create", "r", "--net", "ov"]);
    b.t.ok(&["sandbox", "create", "s", "--net", "ov"]);
    let (r_ip, s_ip) = (ip_of(&a, "r"), ip_of(&b, "s"));
    assert!(
        a.t.ping("r", &s_ip),
        "rootless sandbox cannot reach the root daemon's"
    );
    assert!(
        b.t.ping("s", &r_ip),
        "root sandbox cannot reach the rootless daemon's"
    );
    let server = a.t.spawn_server("r", &["tcp-serve", &r_ip, "5001"]);
    let sent = b.t.traffic("s", &["tcp-send", &r_ip, "5001", "2000000"]);
    assert!(sent.starts_with("2000000 "), "{sent}");
    assert_eq!(sent, a.t.server_output(server));
}
