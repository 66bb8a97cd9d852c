//! Published ports keep the client's address: a client in a namespace of its own, reaching the
//! host over a veth pair, is seen in the sandbox from its own address and port, over TCP and
//! UDP, IPv4 and IPv6, and gets its answers; a client on the host's loopback (or of the other
//! family) is seen from the gateway's address. A sandbox's own connections to the client's
//! address still go through outbound NAT.

mod common;

use common::Tapnet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A server in the sandbox: ADDR PORT COUNT tcp|udp. Each client gets "PEERIP PEERPORT " and
/// what it sent; the server prints each peer.
const SERVER: &str = r#"
import socket, sys
addr, port, count, udp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "udp"
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.settimeout(30)
if not udp:
    s.listen(8)
print("ready", flush=True)
for _ in range(count):
    if udp:
        data, peer = s.recvfrom(2048)
        s.sendto(("%s %d " % peer[:2]).encode() + data, peer)
    else:
        conn, peer = s.accept()
        conn.settimeout(30)
        data = conn.recv(2048)
        conn.sendall(("%s %d " % peer[:2]).encode() + data)
        conn.close()
    print(peer[0], peer[1], flush=True)
"#;

/// A client: ADDR PORT tcp|udp. Prints "LOCALIP LOCALPORT SEENIP SEENPORT hello".
const CLIENT: &str = r#"
import socket, sys
addr, port, udp = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "udp"
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
s.settimeout(5)
s.connect((addr, port))
s.send(b"hello")
if udp:
    reply = s.recv(2048)
else:
    reply = b""
    while True:
        chunk = s.recv(2048)
        if not chunk:
            break
        reply += chunk
local = s.getsockname()
print(local[0], local[1], reply.decode())
"#;

/// A client namespace joined to the test's (the host's) by a veth pair, with an IPv4 and an
/// IPv6 address at each end and no route beyond the pair; removed on drop.
struct ClientNs {
    ns: String,
    host_if: String,
    host4: String,
    client4: String,
    subnet4: String,
    host6: String,
    client6: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ClientNs {
    fn new() -> ClientNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}", (pid << 4 | n as u32) & 0xfffff);
        let third = (pid as usize * 4 + n) % 250;
        let client = ClientNs {
            ns: format!("tpsrc-{tag}"),
            host_if: format!("tps{tag}h"),
            host4: format!("10.251.{third}.1"),
            client4: format!("10.251.{third}.2"),
            subnet4: format!("10.251.{third}.0/24"),
            host6: format!("fd7e:5c:{third:x}::1"),
            client6: format!("fd7e:5c:{third:x}::2"),
        };
        let peer_if = format!("tps{tag}c");
        ip(&["netns", "add", &client.ns]);
        ip(&[
            "link",
            "add",
            &client.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "netns",
            &client.ns,
        ]);
        let host4 = format!("{}/24", client.host4);
        let host6 = format!("{}/64", client.host6);
        ip(&["addr", "add", &host4, "dev", &client.host_if]);
        ip(&["-6", "addr", "add", &host6, "dev", &client.host_if, "nodad"]);
        ip(&["link", "set", &client.host_if, "up"]);
        let client4 = format!("{}/24", client.client4);
        let client6 = format!("{}/64", client.client6);
        let ns = client.ns.clone();
        ip(&["-n", &ns, "addr", "add", &client4, "dev", &peer_if]);
        ip(&[
            "-n", &ns, "-6", "addr", "add", &client6, "dev", &peer_if, "nodad",
        ]);
        ip(&["-n", &ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        client
    }

    /// Run `python3 -c SCRIPT ARGS` in the client namespace.
    fn py(&self, script: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", script])
            .args(args)
            .output()
            .expect("client")
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn free_port() -> u16 {
    // A port free for TCP and UDP on every address of both families ([::] without V6ONLY).
    loop {
        let port = TcpListener::bind("[::]:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        if UdpSocket::bind(("::", port)).is_ok() {
            return port;
        }
    }
}

/// The words a client printed: local ip, local port, seen ip, seen port, the echo.
fn words(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(words.len(), 5, "{words:?}");
    assert_eq!(words[4], "hello", "the answer came back: {words:?}");
    words
}

/// A server in a sandbox (`python3 -c SCRIPT ARGS`), killed on drop if still running.
struct Server(Option<std::process::Child>);

impl Server {
    fn start(t: &Tapnet, sandbox: &str, script: &str, args: &[&str]) -> Server {
        let mut full = vec!["exec", sandbox, "--", "python3", "-c", script];
        full.extend(args);
        Server::spawn(t.command(&full))
    }

    /// Run `cmd` and wait until it prints "ready".
    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("server output");
        assert_eq!(line.trim(), "ready", "{cmd:?} did not start");
        child.stdout = Some(reader.into_inner());
        Server(Some(child))
    }

    /// What it printed after "ready", once it has exited.
    fn output(mut self) -> String {
        let child = self.0.take().expect("running");
        let out = child.wait_with_output().expect("server exit");
        assert!(out.status.success(), "server failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn host_client(args: &[&str]) -> Output {
    Command::new("python3")
        .args(["-c", CLIENT])
        .args(args)
        .output()
        .expect("host client")
}

/// Three clients of one published port, `proto`: from the client namespace over IPv4 (seen
/// as itself), over IPv6 (another family than the sandbox's: the gateway) and from the host's
/// loopback (the gateway).
fn ipv4_sandbox_sees(t: &Tapnet, c: &ClientNs, port: u16, proto: &str) {
    let server = Server::start(t, "web", SERVER, &["0.0.0.0", "80", "3", proto]);
    let port = port.to_string();
    let direct = words(&c.py(CLIENT, &[&c.host4, &port, proto]));
    assert_eq!(direct[0], c.client4, "{proto}: {direct:?}");
    assert_eq!(
        &direct[2..4],
        &direct[0..2],
        "{proto}: the sandbox sees the client's own address and port"
    );
    let other_family = words(&c.py(CLIENT, &[&c.host6, &port, proto]));
    assert_eq!(other_family[2], "10.77.0.1", "{proto}: {other_family:?}");
    let loopback = words(&host_client(&["127.0.0.1", &port, proto]));
    assert_eq!(
        loopback[2], "10.77.0.1",
        "{proto}: the host's loopback is seen as the gateway"
    );
    let seen = server.output();
    assert_eq!(
        seen,
        format!(
            "{} {}\n10.77.0.1 {}\n10.77.0.1 {}",
            direct[0], direct[1], other_family[3], loopback[3]
        ),
        "{proto}"
    );
}

#[test]
fn ipv4_clients_keep_their_address_loopback_ones_are_the_gateway() {
    let t = Tapnet::new("pubsrc");
    let c = ClientNs::new();
    // The daemon's outbound NAT may reach the client's subnet too (for the last check).
    let allow = format!("127.0.0.0/8,{}", c.subnet4);
    let out = t
        .command(&["network", "create", "n", "--subnet", "10.77.0.0/24"])
        .env("TAPNET_NAT_ALLOW", &allow)
        .output()
        .expect("tapnet");
    assert!(out.status.success(), "{out:?}");
    let (tcp, udp) = (free_port(), free_port());
    let (tcp_map, udp_map) = (format!("{tcp}:80"), format!("{udp}:80/udp"));
    t.ok(&[
        "sandbox", "create", "web", "--net", "n", "-p", &tcp_map, "-p", &udp_map,
    ]);
    ipv4_sandbox_sees(&t, &c, tcp, "tcp");
    ipv4_sandbox_sees(&t, &c, udp, "udp");

    // The sandbox's own flows to the client's address (its published peers still remembered)
    // go through outbound NAT: the client sees the host's address on the veth.
    for proto in ["tcp", "udp"] {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &c.ns, "python3", "-c", SERVER])
            .args(["0.0.0.0", "8080", "1", proto]);
        let server = Server::spawn(cmd);
        let out = t.exec("web", &["python3", "-c", CLIENT, &c.client4, "8080", proto]);
        let reply = words(&out);
        assert_eq!(reply[2], c.host4, "{proto}: NATed to the host's address");
        assert_eq!(server.output(), format!("{} {}", reply[2], reply[3]));
    }
}

#[test]
fn ipv6_clients_keep_their_address_on_an_ipv6_only_network() {
    let t = Tapnet::new("pubsrc6");
    let c = ClientNs::new();
    t.ok(&[
        "network",
        "create",
        "o6",
        "--ipv6",
        "--no-ipv4",
        "--subnet",
        "fd00:e7::/64",
    ]);
    let (tcp, udp) = (free_port(), free_port());
    let (tcp_map, udp_map) = (format!("{tcp}:80"), format!("{udp}:80/udp"));
    t.ok(&[
        "sandbox", "create", "web", "--net", "o6", "-p", &tcp_map, "-p", &udp_map,
    ]);
    for (port, proto) in [(tcp, "tcp"), (udp, "udp")] {
        let server = Server::start(&t, "web", SERVER, &["::", "80", "3", proto]);
        let port = port.to_string();
        let direct = words(&c.py(CLIENT, &[&c.host6, &port, proto]));
        assert_eq!(direct[0], c.client6, "{proto}: {direct:?}");
        assert_eq!(&direct[2..4], &direct[0..2], "{proto}: seen as itself");
        let v4 = words(&c.py(CLIENT, &[&c.host4, &port, proto]));
        assert_eq!(v4[2], "fd00:e7::1", "{proto}: IPv4 client, IPv6 sandbox");
        let loopback = words(&host_client(&["::1", &port, proto]));
        assert_eq!(loopback[2], "fd00:e7::1", "{proto}: ::1 is the gateway");
        let seen = server.output();
        assert_eq!(
            seen,
            format!(
                "{} {}\nfd00:e7::1 {}\nfd00:e7::1 {}",
                direct[0], direct[1], v4[3], loopback[3]
            ),
            "{proto}"
        );
    }
}

/// A dual-stack sandbox: each client reaches the sandbox's address of its own family and is
/// seen as itself, IPv4 and IPv6, TCP and UDP; the loopbacks of both families are the gateway
/// of theirs.
#[test]
fn dual_stack_sandboxes_see_clients_of_both_families() {
    let t = Tapnet::new("pubsrc46");
    let c = ClientNs::new();
    t.ok(&[
        "network",
        "create",
        "d46",
        "--ipv6",
        "--subnet",
        "10.78.0.0/24",
        "--subnet",
        "fd00:e8::/64",
    ]);
    let (tcp, udp) = (free_port(), free_port());
    let (tcp_map, udp_map) = (format!("{tcp}:80"), format!("{udp}:80/udp"));
    t.ok(&[
        "sandbox", "create", "web", "--net", "d46", "-p", &tcp_map, "-p", &udp_map,
    ]);
    for (port, proto) in [(tcp, "tcp"), (udp, "udp")] {
        let server = Server::start(&t, "web", SERVER, &["::", "80", "4", proto]);
        let port = port.to_string();
        let v6 = words(&c.py(CLIENT, &[&c.host6, &port, proto]));
        assert_eq!(
            &v6[2..4],
            &v6[0..2],
            "{proto}: the IPv6 client seen as itself"
        );
        assert_eq!(v6[0], c.client6, "{proto}: {v6:?}");
        let v4 = words(&c.py(CLIENT, &[&c.host4, &port, proto]));
        assert_eq!(v4[0], c.client4, "{proto}: {v4:?}");
        // A dual-stack socket shows an IPv4 peer v4-mapped.
        assert_eq!(
            v4[2],
            format!("::ffff:{}", c.client4),
            "{proto}: the IPv4 client"
        );
        let lo6 = words(&host_client(&["::1", &port, proto]));
        assert_eq!(lo6[2], "fd00:e8::1", "{proto}: ::1 is the IPv6 gateway");
        let lo4 = words(&host_client(&["127.0.0.1", &port, proto]));
        assert_eq!(
            lo4[2], "::ffff:10.78.0.1",
            "{proto}: 127.0.0.1 is the IPv4 gateway"
        );
        drop(server);
    }
}

/// A client: ADDR PORT_A PORT_B tcp|udp, from one local port to both. Prints the local port,
/// then "SEENIP SEENPORT" as each port's answer tells it.
const TWICE: &str = r#"
import socket, sys
addr, ports, udp = sys.argv[1], [int(p) for p in sys.argv[2:4]], sys.argv[4] == "udp"
kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
local, socks = 0, []
for port in ports:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", local))
    local = s.getsockname()[1]
    s.settimeout(5)
    s.connect((addr, port))
    socks.append(s)
print(local)
for s in socks:
    s.send(b"hello")
for s in socks:
    reply = s.recv(2048).decode().split()
    print(reply[0], reply[1])
"#;

/// The same client address and port to two host ports of one sandbox port: the sandbox could
/// not tell the two apart, so the second is seen from the gateway (TCP and UDP).
#[test]
fn one_client_port_to_two_host_ports_of_one_sandbox_port_is_told_apart() {
    let t = Tapnet::new("pubsrc2");
    let c = ClientNs::new();
    t.ok(&["network", "create", "n", "--subnet", "10.77.0.0/24"]);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let maps = [
        format!("{}:80", ports[0]),
        format!("{}:80", ports[1]),
        format!("{}:80/udp", ports[2]),
        format!("{}:80/udp", ports[3]),
    ];
    let mut args = vec!["sandbox", "create", "web", "--net", "n"];
    for map in &maps {
        args.extend(["-p", map.as_str()]);
    }
    t.ok(&args);
    for (pair, proto) in [(&ports[0..2], "tcp"), (&ports[2..4], "udp")] {
        let server = Server::start(&t, "web", SERVER, &["0.0.0.0", "80", "2", proto]);
        let (a, b) = (pair[0].to_string(), pair[1].to_string());
        let out = c.py(TWICE, &[&c.host4, &a, &b, proto]);
        assert!(out.status.success(), "{proto}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{proto}: {text}");
        let direct = format!("{} {}", c.client4, lines[0]);
        let mut seen = vec![lines[1], lines[2]];
        seen.sort_by_key(|line| !line.starts_with("10.77.0.1 "));
        assert!(
            seen[0].starts_with("10.77.0.1 "),
            "{proto}: one from the gateway: {text}"
        );
        assert_eq!(seen[1], direct, "{proto}: the other as the client: {text}");
        let mut printed: Vec<String> = server.output().lines().map(str::to_string).collect();
        printed.sort_by_key(|line| !line.starts_with("10.77.0.1 "));
        assert_eq!(printed, seen, "{proto}");
    }
}

/// A client: ADDR PORT COUNT. COUNT connections in turn from one local port (each sends
/// "hello" and reads the answer to its end); prints how many took longer than 0.5 s.
const AGAIN: &str = r#"
import errno, socket, sys, time
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
local, slow = 0, 0
for _ in range(count):
    for attempt in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", local))
        local = s.getsockname()[1]
        s.settimeout(10)
        start = time.monotonic()
        try:
            s.connect((addr, port))
            break
        except OSError as e:
            # The last connection's 4-tuple is not free yet.
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            s.close()
            time.sleep(0.05)
    s.send(b"hello")
    while s.recv(2048):
        pass
    s.close()
    slow += time.monotonic() - start > 0.5
    time.sleep(0.05)
print(slow)
"#;

/// A client that comes back from the same port finds the sandbox's end of its last
/// connection in TIME_WAIT, and must still get in at once (the gateway's SYN carries a newer
/// timestamp); positive control: every connection gets its answer.
#[test]
fn a_client_back_from_the_same_port_gets_in_at_once() {
    let t = Tapnet::new("pubsrc3");
    let c = ClientNs::new();
    t.ok(&["network", "create", "n", "--subnet", "10.77.0.0/24"]);
    let port = free_port();
    let map = format!("{port}:80");
    t.ok(&["sandbox", "create", "web", "--net", "n", "-p", &map]);
    let server = Server::start(&t, "web", SERVER, &["0.0.0.0", "80", "12", "tcp"]);
    let out = c.py(AGAIN, &[&c.host4, &port.to_string(), "12"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "none slow"
    );
    let printed = server.output();
    let peers: std::collections::BTreeSet<&str> = printed.lines().collect();
    assert_eq!(printed.lines().count(), 12, "{printed}");
    assert_eq!(peers.len(), 1, "all from the one client port: {printed}");
    assert!(printed.starts_with(&format!("{} ", c.client4)), "{printed}");
}
