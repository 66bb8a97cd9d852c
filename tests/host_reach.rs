//! Reachability of and from the host: the host's loopback is closed to sandboxes unless a
//! network opts in (`host_loopback=on`), `host.tapnet.internal` names the host's own addresses,
//! and `host_access=on` gives the host an interface on a network.
//!
//! Each test runs its daemon in a named network namespace it makes (the "host": only `lo` and
//! what the test adds to it), entered with `nsenter --net` so the daemon shares the test's mount
//! namespace (its pins stay visible to `tapnet exec`). Nothing the sandboxes send can leave that
//! namespace, and the machine's own namespace is not touched. The guard resets the daemon and
//! deletes the namespace, and with it every interface the test made there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Tapnet, wait_until};

/// A daemon in a network namespace of its own; servers started there. Cleaned up on drop.
struct HostNs {
    t: Tapnet,
    netns: String,
    daemon_args: Vec<String>,
    daemon: Option<Child>,
    servers: Vec<Child>,
}

impl HostNs {
    fn start(tag: &str, daemon_args: &[&str]) -> HostNs {
        let t = Tapnet::new(tag);
        std::fs::create_dir_all(&t.dir).expect("state dir");
        let netns = format!("tnr-{tag}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {netns}");
        let mut ns = HostNs {
            t,
            netns,
            daemon_args: daemon_args.iter().map(|s| s.to_string()).collect(),
            daemon: None,
            servers: Vec::new(),
        };
        ns.host(&["ip", "link", "set", "lo", "up"]);
        ns.start_daemon();
        ns
    }

    fn start_daemon(&mut self) {
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(common::bin())
            .arg("--state-dir")
            .arg(&self.t.dir)
            .arg("daemon")
            .args(&self.daemon_args)
            .env_remove("TAPNET_NAT_ALLOW")
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon in the test's namespace");
        self.daemon = Some(daemon);
        assert!(
            wait_until(Duration::from_secs(5), || self.t.pid().is_some()
                && self.t.dir.join("tapnet.sock").exists()
                && self.t.run(&["--no-autostart", "info"]).status.success()),
            "the daemon started"
        );
    }

    /// Stop the daemon (SIGTERM) and start it again in the same namespace.
    fn restart_daemon(&mut self) {
        self.t.stop_daemon(nix::sys::signal::Signal::SIGTERM);
        if let Some(mut d) = self.daemon.take() {
            let _ = d.wait();
        }
        let _ = std::fs::remove_file(self.t.dir.join("tapnet.sock"));
        self.start_daemon();
    }

    /// A command in the host namespace.
    fn host_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .args(args);
        cmd
    }

    /// Run `args` in the host namespace, insisting on success; its stdout.
    fn host(&self, args: &[&str]) -> String {
        let out = self.host_command(args).output().expect("host command");
        assert!(out.status.success(), "{args:?} on the host: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Does `args` succeed in the host namespace?
    fn host_succeeds(&self, args: &[&str]) -> bool {
        self.host_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `python3 -c SCRIPT ARGS` on the host, printing "ready PORT" once it listens.
    fn server(&mut self, script: &str, args: &[&str]) -> String {
        let mut cmd = self.host_command(&["python3", "-c", script]);
        cmd.args(args);
        self.start_server(cmd)
    }

    /// `python3 -c SCRIPT ARGS` in `sandbox`, printing "ready PORT" once it listens.
    fn sandbox_server(&mut self, sandbox: &str, script: &str, args: &[&str]) -> String {
        let mut full = vec!["exec", sandbox, "--", "python3", "-c", script];
        full.extend(args);
        let cmd = self.t.command(&full);
        self.start_server(cmd)
    }

    fn start_server(&mut self, mut cmd: Command) -> String {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server output");
        self.servers.push(child);
        line.strip_prefix("ready ")
            .unwrap_or_else(|| panic!("server did not start: {line:?}"))
            .trim()
            .to_string()
    }

    fn py(&self, sandbox: &str, script: &str, args: &[&str]) -> String {
        let mut full = vec!["python3", "-c", script];
        full.extend(args);
        self.t.exec_ok(sandbox, &full).trim().to_string()
    }

    fn inspect(&self, net: &str) -> serde_json::Value {
        self.t.json(&["network", "inspect", net])
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self
            .t
            .command(&["--no-autostart", "system", "reset"])
            .output();
        if let Some(mut daemon) = self.daemon.take() {
            if !wait_until(Duration::from_secs(5), || {
                matches!(daemon.try_wait(), Ok(Some(_)))
            }) {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Accept connections on (ADDR, 0) until killed; each gets "hello from PEER\n".
const GREET: &str = r#"
import socket, sys
addr = sys.argv[1]
srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
srv.bind((addr, 0)); srv.listen(16)
print("ready", srv.getsockname()[1], flush=True)
while True:
    conn, peer = srv.accept()
    conn.sendall(("hello from %s\n" % peer[0]).encode()); conn.close()
"#;

/// Echo UDP datagrams on (ADDR, 0) until killed.
const UDP_ECHO: &str = r#"
import socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 0))
print("ready", s.getsockname()[1], flush=True)
while True:
    m, peer = s.recvfrom(65535); s.sendto(m, peer)
"#;

/// Connect to (ADDR, PORT): print what the server said (first line) or the errno's name, and
/// the milliseconds it took.
const CONNECT: &str = r#"
import errno, socket, sys, time
start = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.settimeout(5)
    out = s.makefile().readline().strip().replace(" ", "_")
except OSError as e:
    out = errno.errorcode.get(e.errno, "timeout")
print(out, int((time.monotonic() - start) * 1000))
"#;

/// Send a datagram to (ADDR, PORT) from a connected socket: "echo", "ECONNREFUSED" (ICMP port
/// unreachable came back) or "timeout".
const UDP_PROBE: &str = r#"
import errno, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"probe")
try:
    print("echo" if s.recv(100) == b"probe" else "other")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"#;

fn refused_count(ns: &HostNs, net: &str) -> u64 {
    ns.inspect(net)["nat"]["host_loopback_refused"]
        .as_u64()
        .unwrap_or(0)
}

/// A default network's sandbox cannot reach the host's loopback at its gateway's addresses:
/// TCP is refused at once (RST: ECONNREFUSED well within 1 s), UDP gets port unreachable, both
/// counted; DNS and ping of the gateway still work. Positive control: a network with
/// `host_loopback=on` reaches the same servers, over both families.
#[test]
fn the_host_loopback_is_closed_by_default_and_opened_per_network() {
    // The namespace is the test's own: any port is free there.
    let mut ns = HostNs::start("hlo", &["--metrics", "127.0.0.1:9464"]);
    ns.t.ok(&[
        "network",
        "create",
        "shut",
        "--subnet",
        "10.91.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:91::/64",
    ]);
    ns.t.ok(&[
        "network",
        "create",
        "open",
        "--subnet",
        "10.92.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:92::/64",
        "--opt",
        "host_loopback=on",
    ]);
    ns.t.ok(&["sandbox", "create", "s", "--net", "shut"]);
    ns.t.ok(&["sandbox", "create", "o", "--net", "open"]);
    let tcp4 = ns.server(GREET, &["127.0.0.1"]);
    let tcp6 = ns.server(GREET, &["::1"]);
    let udp4 = ns.server(UDP_ECHO, &["127.0.0.1"]);
    let udp6 = ns.server(UDP_ECHO, &["::1"]);

    for (gw, tcp, udp) in [("10.91.0.1", &tcp4, &udp4), ("fd00:91::1", &tcp6, &udp6)] {
        let out = ns.py("s", CONNECT, &[gw, tcp]);
        let (result, ms) = out.split_once(' ').expect("result and time");
        assert_eq!(result, "ECONNREFUSED", "TCP to [{gw}]:{tcp}: {out}");
        assert!(
            ms.parse::<u64>().expect("ms") < 1000,
            "refused at once: {out}"
        );
        assert_eq!(
            ns.py("s", UDP_PROBE, &[gw, udp]),
            "ECONNREFUSED",
            "UDP to {gw}"
        );
    }
    assert_eq!(refused_count(&ns, "shut"), 4, "{}", ns.inspect("shut"));
    let stats = ns.t.json(&["stats", "shut"]);
    let gateway = stats
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["port"] == "gateway"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(gateway["host_loopback_refused"], 4, "{stats}");
    let scrape = ns.host(&[
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode())",
    ]);
    assert!(
        scrape.contains("tapnet_host_loopback_refused_total{network=\"shut\"} 4"),
        "{scrape}"
    );
    // What the gateway serves itself still answers: DNS (here over TCP too), ping.
    let dig =
        ns.t.exec_ok("s", &["dig", "+tcp", "+short", "@10.91.0.1", "s"]);
    assert_eq!(dig.trim(), "10.91.0.2");
    assert!(ns.t.ping("s", "10.91.0.1"));
    let trace = ns.t.json(&[
        "trace",
        "shut",
        "--in",
        "s",
        "--dst",
        "10.91.0.1",
        "--proto",
        "tcp",
        "--dport",
        &tcp4,
    ]);
    assert!(
        trace.to_string().contains("host_loopback=off"),
        "trace says why: {trace}"
    );

    // Positive control: the same servers through the open network's gateway.
    for (gw, tcp, udp) in [("10.92.0.1", &tcp4, &udp4), ("fd00:92::1", &tcp6, &udp6)] {
        let out = ns.py("o", CONNECT, &[gw, tcp]);
        assert!(out.starts_with("hello_from_"), "TCP to [{gw}]:{tcp}: {out}");
        assert_eq!(ns.py("o", UDP_PROBE, &[gw, udp]), "echo", "UDP to {gw}");
    }
    assert_eq!(refused_count(&ns, "open"), 0);
}

/// `host.tapnet.internal` and `host.docker.internal` (any case) resolve in a sandbox to the
/// host's own non-loopback addresses, A and AAAA, and a server bound on such an address is
/// reached through them by NAT, from a network whose host loopback is closed.
#[test]
fn host_tapnet_internal_names_the_hosts_own_addresses() {
    const HOST4: &str = "10.213.0.1";
    const HOST6: &str = "fd7a:213::1";
    let mut ns = HostNs::start(
        "hname",
        &[
            "--nat-allow",
            "127.0.0.0/8",
            "--nat-allow",
            &format!("{HOST4}/32"),
            "--nat-allow",
            &format!("{HOST6}/128"),
        ],
    );
    // The host's own addresses: on its `lo` (a namespace of the test's; no dummy module
    // needed), beside the loopback ones the names must leave out.
    ns.host(&["ip", "addr", "add", &format!("{HOST4}/32"), "dev", "lo"]);
    ns.host(&["ip", "addr", "add", &format!("{HOST6}/128"), "dev", "lo"]);
    ns.t.ok(&[
        "network",
        "create",
        "n",
        "--subnet",
        "10.93.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:93::/64",
    ]);
    ns.t.ok(&["sandbox", "create", "a", "--net", "n"]);

    for name in ["host.tapnet.internal", "HOST.Docker.Internal"] {
        let v4 =
            ns.t.exec_ok("a", &["dig", "+short", "@10.93.0.1", name, "A"]);
        assert_eq!(v4.trim(), HOST4, "A of {name}");
        let v6 =
            ns.t.exec_ok("a", &["dig", "+short", "@10.93.0.1", name, "AAAA"]);
        assert_eq!(v6.trim(), HOST6, "AAAA of {name}");
    }
    let hosts =
        ns.t.exec_ok("a", &["getent", "ahosts", "host.tapnet.internal"]);
    assert!(hosts.contains(HOST4) && hosts.contains(HOST6), "{hosts}");

    for (host, family) in [(HOST4, "IPv4"), (HOST6, "IPv6")] {
        let port = ns.server(GREET, &[host]);
        let out = ns.py("a", CONNECT, &["host.tapnet.internal", &port]);
        assert!(
            out.starts_with("hello_from_"),
            "{family}: the host's server through host.tapnet.internal: {out}"
        );
    }
    // The loopback stays closed on this network.
    let lo = ns.server(GREET, &["127.0.0.1"]);
    let out = ns.py("a", CONNECT, &["10.93.0.1", &lo]);
    assert!(out.starts_with("ECONNREFUSED"), "{out}");
}

/// Does `ping` from the host namespace reach `ip`?
fn host_pings(ns: &HostNs, ip: &str) -> bool {
    ns.host_succeeds(&["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
}

/// `host_access=on`: the host gets `tn-NAME` with the network's first free addresses, pings a
/// sandbox and connects to it over both families, and the sandbox sees the host interface's
/// address as the peer. A network without the option gives the host no route (its sandbox's
/// server is reached by a neighbour, not by the host). The interface shows in inspect, stats
/// and fdb, comes back after a daemon restart, and goes with `network rm`.
#[test]
fn host_access_gives_the_host_an_interface_on_the_network() {
    let mut ns = HostNs::start("hacc", &[]);
    ns.t.ok(&[
        "network",
        "create",
        "ha",
        "--subnet",
        "10.95.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:95::/64",
        "--opt",
        "host_access=on",
    ]);
    ns.t.ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.94.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:94::/64",
    ]);
    ns.t.ok(&["sandbox", "create", "a", "--net", "ha"]);
    ns.t.ok(&["sandbox", "create", "b", "--net", "plain"]);
    ns.t.ok(&["sandbox", "create", "c", "--net", "plain"]);

    let view = ns.inspect("ha");
    assert_eq!(view["host"]["interface"], "tn-ha", "{view}");
    assert_eq!(view["host"]["ipv4"], "10.95.0.2/24", "{view}");
    assert_eq!(view["host"]["ipv6"], "fd00:95::2/64", "{view}");
    let table = ns.t.ok(&["network", "inspect", "ha"]);
    assert!(
        table.contains("tn-ha (10.95.0.2/24, fd00:95::2/64)"),
        "{table}"
    );
    assert!(ns.inspect("plain").get("host").is_none());
    let a4 = "10.95.0.3";
    let a6 = "fd00:95::3";
    let ips = ns.t.exec_ok("a", &["ip", "-o", "addr", "show", "eth0"]);
    assert!(
        ips.contains(a4) && ips.contains(a6),
        "IPAM skipped the host's: {ips}"
    );
    let link = ns.host(&["ip", "-o", "addr", "show", "dev", "tn-ha"]);
    assert!(
        link.contains("10.95.0.2/24") && link.contains("fd00:95::2/64"),
        "{link}"
    );

    // Host to sandbox: ping, and TCP with the host interface's address as the peer.
    assert!(host_pings(&ns, a4), "ping {a4} from the host");
    assert!(host_pings(&ns, a6), "ping {a6} from the host");
    let port = ns.sandbox_server("a", GREET, &["::"]);
    for (dst, peer) in [(a4, "10.95.0.2"), (a6, "fd00:95::2")] {
        let mut cmd = ns.host_command(&["python3", "-c", CONNECT, dst, &port]);
        let out = String::from_utf8_lossy(&cmd.output().expect("host client").stdout).to_string();
        let peer = peer.to_string();
        // An IPv4 peer of a dual-stack listener shows as ::ffff:ADDR.
        assert!(
            out.starts_with("hello_from_") && out.contains(&peer),
            "{dst}: the sandbox sees the host's {peer}: {out}"
        );
    }
    let stats = ns.t.json(&["stats", "ha"]).to_string();
    assert!(stats.contains("\"port\":\"host\""), "{stats}");
    let fdb = ns.t.json(&["fdb", "ha"]).to_string();
    assert!(fdb.contains("\"port\":\"host\""), "{fdb}");

    // Without the option: no route from the host, though the server listens (a neighbour on
    // the same network reaches it).
    let port_b = ns.sandbox_server("b", GREET, &["0.0.0.0"]);
    let refused = ns
        .host_command(&["python3", "-c", CONNECT, "10.94.0.2", &port_b])
        .output();
    let refused = String::from_utf8_lossy(&refused.expect("host client").stdout).to_string();
    assert!(
        !refused.starts_with("hello"),
        "the host reached plain's sandbox: {refused}"
    );
    assert!(!host_pings(&ns, "10.94.0.2"));
    assert!(!ns.host_succeeds(&["ip", "link", "show", "tn-plain"]));
    let from_c = ns.py("c", CONNECT, &["10.94.0.2", &port_b]);
    assert!(from_c.starts_with("hello_from_10.94.0.3"), "{from_c}");

    // A restarted daemon makes the interface again, with the same addresses.
    ns.restart_daemon();
    let link = ns.host(&["ip", "-o", "addr", "show", "dev", "tn-ha"]);
    assert!(
        link.contains("10.95.0.2/24") && link.contains("fd00:95::2/64"),
        "{link}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || host_pings(&ns, a4)),
        "ping {a4} from the host after a restart"
    );
    assert!(host_pings(&ns, a6));

    // `network rm` takes the interface away.
    ns.t.ok(&["sandbox", "rm", "a", "--force"]);
    ns.t.ok(&["network", "rm", "ha"]);
    assert!(
        !ns.host_succeeds(&["ip", "link", "show", "tn-ha"]),
        "tn-ha survived network rm"
    );
}

/// `host_access` is refused on a rootless daemon, with one line saying why, and nothing is
/// made; the same network without it is made (positive control).
#[test]
fn host_access_is_refused_rootless() {
    let t = Tapnet::rootless("hacc-rl", "tapnet-test");
    let err = t.fails(&["network", "create", "ha", "--opt", "host_access=on"]);
    assert!(err.contains("host_access=on needs a root daemon"), "{err}");
    assert!(!t.network_names().contains(&"ha".to_string()));
    t.ok(&["network", "create", "ha"]);
    assert!(t.network_names().contains(&"ha".to_string()));
}

/// `system reset` of a daemon with a host interface leaves no interface behind.
#[test]
fn system_reset_removes_the_host_interface() {
    let ns = HostNs::start("hreset", &[]);
    ns.t.ok(&[
        "network",
        "create",
        "hr",
        "--subnet",
        "10.96.0.0/24",
        "--opt",
        "host_access=on",
    ]);
    assert!(ns.host_succeeds(&["ip", "link", "show", "tn-hr"]));
    ns.t.ok(&["system", "reset"]);
    assert!(
        wait_until(Duration::from_secs(5), || !ns
            .host_succeeds(&["ip", "link", "show", "tn-hr"])),
        "tn-hr survived system reset"
    );
}
