//! IPv6 through the gateway: TCP, UDP and ping from sandboxes to the host's `::1` (by the
//! gateway's IPv6 address) and to a host IPv6 address; published ports on IPv6; the gateway of
//! an IPv6-only network.
//!
//! Each test runs its daemon in a network namespace it makes (`unshare --net`), with only `lo`:
//! the "host" addresses are that namespace's (`::1` and an address the test adds to its `lo`),
//! ping sockets can be allowed there, and nothing the sandboxes send can leave it, so the daemon
//! needs no `--nat-allow` list. The machine's own namespace is not touched.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Tapnet, wait_until};

/// The host address each test's namespace gets on its `lo`.
const HOST6: &str = "fd99:6e:a7::1";

/// A daemon in a namespace of its own, and the servers started there; stopped on drop.
struct NsDaemon {
    t: Tapnet,
    daemon: Child,
    servers: Vec<Child>,
}

impl NsDaemon {
    fn start(tag: &str) -> NsDaemon {
        Self::start_with(tag, "")
    }

    /// [`Self::start`] with more `daemon` arguments (words without spaces).
    fn start_with(tag: &str, daemon_args: &str) -> NsDaemon {
        let t = Tapnet::new(tag);
        std::fs::create_dir_all(&t.dir).expect("state dir");
        let setup = format!(
            "ip link set lo up && ip addr add {HOST6}/128 dev lo && \
             sysctl -qw net.ipv4.ping_group_range='0 2147483647' && \
             exec {} --state-dir {} daemon {daemon_args}",
            common::bin(),
            t.dir.display()
        );
        let daemon = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &setup])
            .env_remove("TAPNET_NAT_ALLOW")
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon in its own namespace");
        let ns = NsDaemon {
            t,
            daemon,
            servers: Vec::new(),
        };
        assert!(
            wait_until(Duration::from_secs(5), || ns
                .t
                .dir
                .join("tapnet.sock")
                .exists()),
            "the daemon started"
        );
        ns
    }

    /// Run `python3 -c SCRIPT ARGS` in the daemon's namespace; it prints "ready PORT" once it
    /// listens. Returns the server's index and port.
    fn server(&mut self, script: &str, args: &[&str]) -> (usize, String) {
        let mut cmd = self.on_host(script, args);
        self.start_server(&mut cmd)
    }

    /// `python3 -c SCRIPT ARGS` in the daemon's namespace (the "host").
    fn on_host(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.daemon.id().to_string())
            .args(["-n", "python3", "-c", script])
            .args(args);
        cmd
    }

    /// What `python3 -c SCRIPT ARGS` prints, run on the host.
    fn host_py(&self, script: &str, args: &[&str]) -> String {
        let out = self.on_host(script, args).output().expect("host client");
        assert!(out.status.success(), "host client failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A server in `sandbox`: `python3 -c SCRIPT ARGS`.
    fn sandbox_server(&mut self, sandbox: &str, script: &str, args: &[&str]) -> usize {
        let mut full = vec!["exec", sandbox, "--", "python3", "-c", script];
        full.extend(args);
        let mut cmd = self.t.command(&full);
        self.start_server(&mut cmd).0
    }

    fn start_server(&mut self, cmd: &mut Command) -> (usize, String) {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("server output");
        let port = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("host server did not start: {line:?}"))
            .trim()
            .to_string();
        child.stdout = Some(reader.into_inner());
        self.servers.push(child);
        (self.servers.len() - 1, port)
    }

    /// What server `index` printed after "ready", once it exits.
    fn output(&mut self, index: usize) -> String {
        let child = std::mem::replace(
            &mut self.servers[index],
            Command::new("true").spawn().expect("true"),
        );
        let out = child.wait_with_output().expect("server exit");
        assert!(out.status.success(), "server failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn py(&self, sandbox: &str, script: &str, args: &[&str]) -> String {
        let mut full = vec!["python3", "-c", script];
        full.extend(args);
        self.t.exec_ok(sandbox, &full).trim().to_string()
    }

    fn ping6(&self, sandbox: &str, ip: &str) -> bool {
        self.t
            .exec(
                sandbox,
                &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip],
            )
            .status
            .success()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.t.command(&["system", "reset"]).output();
        if !wait_until(Duration::from_secs(5), || {
            matches!(self.daemon.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }
}

/// Accept one connection on (ADDR, 0), send BYTES of a pattern, print "BYTES SHA256".
const GIVE: &str = r#"
import hashlib, socket, sys
addr, n = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
srv.bind((addr, 0)); srv.listen(1); srv.settimeout(30)
print("ready", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
block = bytes((i * 31 >> 3) & 0xFF for i in range(65536))
data = (block * (n // len(block) + 1))[:n]
conn.sendall(data); conn.close()
print(n, hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// Connect to (ADDR, PORT), read to EOF, print "BYTES SHA256".
const FETCH: &str = r#"
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
d, n = hashlib.sha256(), 0
while True:
    chunk = s.recv(1 << 16)
    if not chunk:
        break
    d.update(chunk); n += len(chunk)
print(n, d.hexdigest())
"#;

/// Accept one connection on (ADDR, PORT or 0), read to EOF, print "BYTES SHA256".
const TAKE: &str = r#"
import hashlib, socket, sys
addr = sys.argv[1]
srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
srv.bind((addr, int(sys.argv[2]) if len(sys.argv) > 2 else 0)); srv.listen(1); srv.settimeout(30)
print("ready", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
d, n = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    d.update(chunk); n += len(chunk)
print(n, d.hexdigest(), flush=True)
"#;

/// Connect to (ADDR, PORT), send BYTES of a pattern, print "BYTES SHA256".
const SEND: &str = r#"
import hashlib, socket, sys
n = int(sys.argv[3])
block = bytes((i * 31 >> 3) & 0xFF for i in range(65536))
data = (block * (n // len(block) + 1))[:n]
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1)
print(n, hashlib.sha256(data).hexdigest())
"#;

/// Echo COUNT UDP datagrams on (ADDR, PORT or 0).
const UDP_ECHO: &str = r#"
import socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, int(sys.argv[3]) if len(sys.argv) > 3 else 0)); s.settimeout(30)
print("ready", s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[2])):
    m, peer = s.recvfrom(65535); s.sendto(m, peer)
"#;

/// Send COUNT datagrams to (ADDR, PORT); print how many echoes came back.
const UDP_PING: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
ok = 0
for i in range(int(sys.argv[3])):
    m = b"datagram %d" % i
    s.send(m)
    try:
        ok += s.recv(65535) == m
    except OSError:
        pass
print(ok)
"#;

/// Try to connect to (ADDR, PORT): print "ok" or the errno's name.
const CONNECT: &str = r#"
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"#;

const MIB4: usize = 4 << 20;

/// A dual-stack network's sandbox fetches and sends 4 MiB over TCP to the host's `::1` (by the
/// gateway's address) and to a host IPv6 address, echoes UDP and pings both.
#[test]
fn dual_stack_tcp_udp_and_ping_reach_the_host_over_ipv6() {
    let mut ns = NsDaemon::start("v6nat");
    ns.t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:e1::/64",
        "--opt",
        "host_loopback=on",
    ]);
    ns.t.ok(&["sandbox", "create", "a", "--net", "d6"]);
    let gateway6 = "fd00:e1::1";
    for (listen, dial) in [("::1", gateway6), (HOST6, HOST6)] {
        let (server, port) = ns.server(GIVE, &[listen, &MIB4.to_string()]);
        let got = ns.py("a", FETCH, &[dial, &port]);
        let given = ns.output(server);
        assert!(given.starts_with(&format!("{MIB4} ")), "{given}");
        assert_eq!(got, given, "fetched from [{listen}] by [{dial}]");

        let (server, port) = ns.server(TAKE, &[listen]);
        let sent = ns.py("a", SEND, &[dial, &port, &MIB4.to_string()]);
        assert_eq!(sent, ns.output(server), "sent to [{listen}] by [{dial}]");

        let (_, port) = ns.server(UDP_ECHO, &[listen, "3"]);
        assert_eq!(
            ns.py("a", UDP_PING, &[dial, &port, "3"]),
            "3",
            "UDP to {dial}"
        );
    }
    // Pings: of the gateway (it answers itself), and of the host's address (a ping socket).
    assert!(ns.ping6("a", gateway6), "ping6 of the gateway");
    assert!(ns.ping6("a", HOST6), "ping6 of the host's address");
    let flows = ns.t.json(&["network", "inspect", "d6"]);
    assert!(flows.to_string().contains("tcp_flows"), "{flows}");
}

/// An `--internal` dual-stack network carries nothing beyond its gateway over IPv6: the
/// connection is refused at once. Positive control: the same server is reached from a network
/// with NAT.
#[test]
fn an_internal_network_refuses_ipv6_connections_to_the_host() {
    let mut ns = NsDaemon::start("v6int");
    ns.t.ok(&[
        "network",
        "create",
        "in6",
        "--internal",
        "--ipv6",
        "--subnet",
        "fd00:e2::/64",
    ]);
    ns.t.ok(&[
        "network",
        "create",
        "out6",
        "--ipv6",
        "--subnet",
        "fd00:e3::/64",
    ]);
    ns.t.ok(&["sandbox", "create", "i", "--net", "in6"]);
    ns.t.ok(&["sandbox", "create", "o", "--net", "out6"]);
    let (_, port) = ns.server(TAKE, &[HOST6]);
    let refused = ns.py("i", CONNECT, &[HOST6, &port]);
    assert_ne!(refused, "ok", "the internal network reached the host");
    assert!(!ns.ping6("i", HOST6), "ping6 from the internal network");
    assert_eq!(ns.py("o", CONNECT, &[HOST6, &port]), "ok");
}

/// `--nat-allow` takes IPv6 prefixes: the listed one is reached, and the host's loopback
/// follows 127.0.0.1's rule over both families (not listed here: refused both ways). Positive
/// control: the same servers from a daemon without a list (the test above reaches `::1` and
/// the host address).
#[test]
fn nat_allow_takes_ipv6_prefixes_and_the_loopback_follows_127_0_0_1() {
    let mut ns = NsDaemon::start_with("v6allow", "--nat-allow fd99:6e:a7::/64");
    ns.t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:e4::/64",
        "--opt",
        "host_loopback=on",
    ]);
    ns.t.ok(&["sandbox", "create", "a", "--net", "d6"]);
    let (_, listed) = ns.server(TAKE, &[HOST6]);
    let (_, loop6) = ns.server(TAKE, &["::1"]);
    let (_, loop4) = ns.server(TAKE, &["127.0.0.1"]);
    assert_eq!(
        ns.py("a", CONNECT, &[HOST6, &listed]),
        "ok",
        "the listed prefix"
    );
    assert_ne!(
        ns.py("a", CONNECT, &["fd00:e4::1", &loop6]),
        "ok",
        "[gateway6] is ::1, which 127.0.0.1's rule refuses"
    );
    let gw4 = ns.t.json(&["network", "inspect", "d6"])["gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(
        ns.py("a", CONNECT, &[&gw4, &loop4]),
        "ok",
        "a list of IPv6 prefixes restricts IPv4 too"
    );
}

/// An IPv6-only network has a gateway too: its sandboxes get router advertisements' answers,
/// resolve a sibling's AAAA, and reach the host over TCP, UDP and ping.
#[test]
fn an_ipv6_only_networks_sandbox_reaches_the_host_and_resolves_its_siblings() {
    let mut ns = NsDaemon::start("v6only");
    ns.t.ok(&[
        "network",
        "create",
        "o6",
        "--ipv6",
        "--no-ipv4",
        "--subnet",
        "fd00:e4::/64",
        "--opt",
        "host_loopback=on",
    ]);
    ns.t.ok(&["sandbox", "create", "a", "--net", "o6"]);
    ns.t.ok(&["sandbox", "create", "b", "--net", "o6"]);
    let gateway6 = "fd00:e4::1";
    let resolv = ns.t.exec_ok("a", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {gateway6}")),
        "{resolv}"
    );
    let b = ns.t.exec_ok("a", &["getent", "ahostsv6", "b"]);
    assert!(b.contains("fd00:e4::3"), "b's AAAA: {b}");
    assert!(ns.ping6("a", gateway6), "ping6 of the gateway");
    assert!(ns.ping6("a", HOST6), "ping6 of the host's address");
    for (listen, dial) in [("::1", gateway6), (HOST6, HOST6)] {
        let (server, port) = ns.server(GIVE, &[listen, &MIB4.to_string()]);
        let got = ns.py("a", FETCH, &[dial, &port]);
        assert_eq!(
            got,
            ns.output(server),
            "fetched from [{listen}] by [{dial}]"
        );
        let (_, port) = ns.server(UDP_ECHO, &[listen, "2"]);
        assert_eq!(
            ns.py("a", UDP_PING, &[dial, &port, "2"]),
            "2",
            "UDP to {dial}"
        );
    }
}

/// Published ports listen on IPv6: `-p [::1]:H:P` on `::1` only, `-p H:P` on 0.0.0.0 and [::];
/// an IPv6 client reaches a dual-stack sandbox's IPv4 address, and any client an IPv6-only
/// sandbox's IPv6 address. UDP too.
#[test]
fn published_ports_listen_on_ipv6_and_reach_either_family() {
    let mut ns = NsDaemon::start("v6pub");
    ns.t.ok(&[
        "network",
        "create",
        "d6",
        "--ipv6",
        "--subnet",
        "fd00:e5::/64",
    ]);
    ns.t.ok(&[
        "network",
        "create",
        "o6",
        "--ipv6",
        "--no-ipv4",
        "--subnet",
        "fd00:e6::/64",
    ]);
    // The daemon's namespace is the test's own: these ports are free there.
    ns.t.ok(&[
        "sandbox",
        "create",
        "a",
        "--net",
        "d6",
        "-p",
        "18080:80",
        "-p",
        "[::1]:18081:81",
        "-p",
        "[::1]:15353:53/udp",
    ]);
    ns.t.ok(&[
        "sandbox",
        "create",
        "b",
        "--net",
        "o6",
        "-p",
        "[::1]:18090:80",
        "-p",
        "18091:81",
    ]);
    let ports = ns.t.json(&["sandbox", "inspect", "a"])["ports"].clone();
    assert_eq!(
        ports,
        serde_json::json!([
            "0.0.0.0:18080->80/tcp",
            "[::]:18080->80/tcp",
            "[::1]:18081->81/tcp",
            "[::1]:15353->53/udp"
        ])
    );
    // Malformed IPv6 bindings are usage errors, before the daemon hears of them.
    for bad in [
        "[::1:18082:80",
        "[::1]18082:80",
        "[nope]:18082:80",
        "::1:18082:80",
    ] {
        let err =
            ns.t.misuse(&["sandbox", "create", "c", "--net", "d6", "-p", bad]);
        assert!(err.contains("malformed port mapping"), "{bad}: {err}");
    }
    let megs = MIB4.to_string();
    // A dual-stack sandbox: an IPv6 client reaches its IPv6 address (as Docker's ip6tables
    // path does, so that the client's address can be kept), taken by a server on `::`.
    let server = ns.sandbox_server("a", TAKE, &["::", "80"]);
    let sent = ns.host_py(SEND, &["::1", "18080", &megs]);
    assert_eq!(sent, ns.output(server), "[::1]:18080 to a's port 80");
    // [::1] only: not on 127.0.0.1 (refused at once), but on ::1.
    let server = ns.sandbox_server("a", TAKE, &["::", "81"]);
    assert_eq!(ns.host_py(CONNECT, &["127.0.0.1", "18081"]), "ECONNREFUSED");
    let sent = ns.host_py(SEND, &["::1", "18081", "1000"]);
    assert_eq!(sent, ns.output(server), "[::1]:18081 to a's port 81");
    ns.sandbox_server("a", UDP_ECHO, &["::", "2", "53"]);
    assert_eq!(
        ns.host_py(UDP_PING, &["::1", "15353", "2"]),
        "2",
        "UDP [::1]:15353"
    );
    // An IPv6-only sandbox: reached from an IPv6 client, and from an IPv4 one.
    let server = ns.sandbox_server("b", TAKE, &["::", "80"]);
    let sent = ns.host_py(SEND, &["::1", "18090", &megs]);
    assert_eq!(sent, ns.output(server), "[::1]:18090 to b's port 80");
    let server = ns.sandbox_server("b", TAKE, &["::", "81"]);
    let sent = ns.host_py(SEND, &["127.0.0.1", "18091", "1000"]);
    assert_eq!(sent, ns.output(server), "127.0.0.1:18091 to b's port 81");
}
