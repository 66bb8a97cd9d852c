//! tapnet as a Docker network plugin, driven by an unmodified private dockerd: networks,
//! containers that reach each other by name, a checksummed TCP transfer, live connect and
//! disconnect, NAT to the host's loopback, a published port, a daemon restart, and removal of
//! everything.
//! Needs `docker.io` and `busybox-static` (scripts/test.sh installs them); without them the test
//! fails, unless `TAPNET_TEST_SKIP` names `docker` (see tests/common/skip.rs).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::skip::need;
use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;

/// One private dockerd at a time: both share /run/docker and /run/containerd, which the first
/// to finish would remove under the other.
static DOCKERD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A private dockerd: its own data root, exec root, pid file and API socket, no iptables, no
/// forwarding, no default bridge. Dropping it removes every container and network it has,
/// stops it and removes what it left behind that was not there before.
struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
    plugin_socket: PathBuf,
    /// Paths dockerd (or the plugin) creates that did not exist before the test.
    created: Vec<PathBuf>,
}

const LEFTOVERS: &[&str] = &["/etc/docker/key.json", "/run/docker", "/run/containerd"];

/// The paths dockerd and the plugin leave behind that do not exist yet.
fn missing_leftovers() -> Vec<PathBuf> {
    LEFTOVERS
        .iter()
        .map(PathBuf::from)
        .filter(|p| !p.exists())
        .collect()
}

impl Dockerd {
    /// `created`: the leftovers that did not exist before the test (`missing_leftovers`, taken
    /// before anything, the plugin's socket dir included, was made).
    fn start(tag: &str, plugin: &str, created: Vec<PathBuf>) -> Dockerd {
        let dir = std::env::temp_dir().join(format!("tapnet-dockerd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create dockerd dir");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--iptables=false")
            .arg("--ip-forward=false")
            .arg("--ip-masq=false")
            .arg("--bridge=none")
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .arg(format!("-H=unix://{}", dir.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd {
            dir,
            child: Some(child),
            plugin_socket: PathBuf::from(format!("/run/docker/plugins/{plugin}.sock")),
            created,
        };
        let up = wait_until(Duration::from_secs(30), || {
            d.run(&["version"]).status.success()
        });
        assert!(up, "dockerd did not come up:\n{}", d.log());
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// A busybox image from the static busybox binary: no registry needed.
    fn import_busybox(&self, image: &str) {
        let tar = common::busybox_tarball(&self.dir);
        self.ok(&["import", &tar.display().to_string(), image]);
    }

    fn exec(&self, container: &str, script: &str) -> Output {
        self.run(&["exec", container, "sh", "-c", script])
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- dockerd.log (last lines, newest first) ---");
            for l in tail {
                eprintln!("{l}");
            }
        }
        // Containers and networks go while the plugin still answers.
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        let nets = self.run(&["network", "ls", "-q", "--filter", "type=custom"]);
        for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
            let _ = self.run(&["network", "rm", id]);
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.plugin_socket);
        let _ = std::fs::remove_dir_all(&self.dir);
        for p in &self.created {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The tapnet network made for Docker network `name`.
fn tapnet_network(d: &Dockerd, name: &str) -> String {
    let id = d.ok(&["network", "inspect", "-f", "{{.Id}}", name]);
    format!("docker-{}", &id[..12])
}

/// TAP names (`tn...`) of the Docker endpoints on a tapnet network.
fn endpoint_taps(t: &Tapnet, network: &str) -> Vec<String> {
    let view = t.json(&["network", "inspect", network]);
    view["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .filter_map(|e| e["interface"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /index.html` from 127.0.0.1:`port`, the whole answer.
fn http_get(port: u16) -> std::io::Result<String> {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

fn host_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn docker_containers_on_a_tapnet_network() {
    if !common::skip::require(
        "docker",
        &[
            need("dockerd", "docker.io"),
            need("docker", "docker.io"),
            need("/bin/busybox", "busybox-static"),
        ],
    ) {
        return;
    }
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let plugin = format!("tntest{}", std::process::id());
    let created = missing_leftovers();
    let t = Tapnet::new("docker");
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let d = Dockerd::start("docker", &plugin, created);
    d.import_busybox("tapnet-busybox:test");
    let img = "tapnet-busybox:test";

    // A network: tapnet gets Docker's pool and gateway.
    d.ok(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        "10.231.0.0/24",
        "--gateway",
        "10.231.0.1",
        // The test reaches a server on the host's loopback at the gateway address.
        "-o",
        "host_loopback=on",
        "front",
    ]);
    let front = tapnet_network(&d, "front");
    let view = t.json(&["network", "inspect", &front]);
    assert_eq!(view["subnet"], "10.231.0.0/24", "{view}");
    assert_eq!(view["gateway"], "10.231.0.1", "{view}");
    // tapnet's own commands leave Docker's network alone.
    let err = t.fails(&["network", "rm", &front]);
    assert!(err.contains("belongs to Docker plugin"), "{err}");
    let err = t.fails(&["sandbox", "create", "x", "--net", &front]);
    assert!(err.contains("belongs to Docker plugin"), "{err}");
    // A bad --opt is tapnet's error, and nothing is made.
    let err = d.fails(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        "10.232.0.0/24",
        "-o",
        "bogus=1",
        "bad",
    ]);
    assert!(err.contains("bogus"), "{err}");
    assert_eq!(
        t.network_names()
            .iter()
            .filter(|n| n.starts_with("docker-"))
            .count(),
        1
    );

    // Two containers: ping by name (dockerd's DNS), no docker_gwbridge, the default route via
    // tapnet's gateway.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "front",
        img,
        "sleep",
        "600",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "front",
        img,
        "sleep",
        "600",
    ]);
    let links = String::from_utf8_lossy(&d.exec("c1", "ip -o link").stdout).to_string();
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");
    assert!(links.contains("eth0"), "{links}");
    let route = String::from_utf8_lossy(&d.exec("c1", "ip route").stdout).to_string();
    assert!(route.contains("default via 10.231.0.1 dev eth0"), "{route}");
    let taps = endpoint_taps(&t, &front);
    assert_eq!(taps.len(), 2, "{taps:?}");
    for tap in &taps {
        assert!(!host_link_exists(tap), "{tap} was moved into its container");
    }
    let out = d.exec("c1", "ping -c 2 -W 2 c2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Traffic went through tapnet's switch: both ports counted frames.
    let stats = t.json(&["stats", &front]);
    let busy = stats
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["port"].as_str().is_some_and(|s| s.starts_with("docker:")))
                .filter(|r| r["rx_packets"].as_u64().unwrap_or(0) > 0)
                .count()
        })
        .unwrap_or(0);
    assert_eq!(busy, 2, "{stats}");

    // 4 MiB over TCP by name, checksum compared.
    let _ = d.run(&[
        "exec",
        "-d",
        "c2",
        "sh",
        "-c",
        "sleep 60 | nc -l -p 5000 > /got",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let sent = d.exec(
        "c1",
        "dd if=/dev/urandom of=/f bs=1024 count=4096 2>/dev/null && \
         nc -w 2 c2 5000 < /f; md5sum /f",
    );
    let sent = String::from_utf8_lossy(&sent.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sent.len(), 32, "md5 of the sent file: {sent:?}");
    let same = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&d.exec("c2", "md5sum /got").stdout).starts_with(&sent)
    });
    assert!(
        same,
        "the received file has the sender's checksum {sent}: {:?} {:?}",
        d.exec("c2", "ls -l /got; md5sum /got; ps"),
        d.exec("c1", "ls -l /f")
    );

    // The host's loopback through tapnet's NAT, at the gateway's address.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(b"hello-through-nat\n");
        }
    });
    let out = d.exec("c1", &format!("nc -w 5 10.231.0.1 {port}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-through-nat",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = server.join();

    // Live connect and disconnect: Join and Leave on a running container.
    d.ok(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--subnet",
        "10.233.0.0/24",
        "back",
    ]);
    let back = tapnet_network(&d, "back");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c3",
        "--network",
        "back",
        img,
        "sleep",
        "600",
    ]);
    d.ok(&["network", "connect", "back", "c1"]);
    let links = String::from_utf8_lossy(&d.exec("c1", "ip -o link").stdout).to_string();
    assert!(links.contains("eth1"), "{links}");
    let out = d.exec("c3", "ping -c 1 -W 2 c1");
    assert!(out.status.success(), "c3 reaches c1 once connected");
    let joined = endpoint_taps(&t, &back);
    assert_eq!(joined.len(), 2, "{joined:?}");
    d.ok(&["network", "disconnect", "back", "c1"]);
    let links = String::from_utf8_lossy(&d.exec("c1", "ip -o link").stdout).to_string();
    assert!(!links.contains("eth1"), "{links}");
    let out = d.exec("c3", "ping -c 1 -W 1 10.233.0.3");
    assert!(!out.status.success(), "c1's old address is gone from back");
    assert_eq!(endpoint_taps(&t, &back).len(), 1);
    // c1 is still on front.
    assert!(d.exec("c1", "ping -c 1 -W 2 c2").status.success());

    // A published port (`-p`): the host's loopback reaches a server in a container through
    // tapnet's gateway; removing the container frees the host port.
    let host_port = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("addr").port()
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "-p",
        &format!("127.0.0.1:{host_port}:8000"),
        img,
        "sh",
        "-c",
        "echo published-through-tapnet > /index.html && exec httpd -f -p 8000 -h /",
    ]);
    let mut page = String::new();
    let fetched = wait_until(Duration::from_secs(10), || {
        page = http_get(host_port).unwrap_or_default();
        page.contains("published-through-tapnet")
    });
    assert!(fetched, "GET through the published port: {page:?}");
    d.ok(&["rm", "-f", "web"]);
    let freed = wait_until(Duration::from_secs(5), || {
        TcpListener::bind(("127.0.0.1", host_port)).is_ok()
    });
    assert!(
        freed,
        "host port {host_port} is free once the container is gone"
    );

    // A restarted tapnet daemon serves the plugin again with the networks dockerd made
    // (dockerd does not replay CreateNetwork): a new container joins front.
    t.stop_daemon(Signal::SIGTERM);
    t.ok(&["network", "ls"]);
    let served = wait_until(Duration::from_secs(5), || {
        std::os::unix::net::UnixStream::connect(&d.plugin_socket).is_ok()
    });
    assert!(
        served,
        "the restarted daemon serves {}",
        d.plugin_socket.display()
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c4",
        "--network",
        "front",
        img,
        "sleep",
        "600",
    ]);
    let out = d.exec("c4", "ping -c 1 -W 2 10.231.0.1");
    assert!(out.status.success(), "c4 reaches tapnet's gateway");
    // Running containers keep their links: the daemon attached to their TAPs again.
    let out = d.exec("c1", "ping -c 1 -W 2 c2");
    assert!(
        out.status.success(),
        "c1 still reaches c2 after the restart: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = d.exec("c4", "ping -c 1 -W 2 c1");
    assert!(out.status.success(), "c4 reaches c1 after the restart");

    // Removal of everything: the TAPs, the endpoints and the tapnet networks go.
    let all_taps: Vec<String> = endpoint_taps(&t, &front);
    d.ok(&["rm", "-f", "c1", "c2", "c3", "c4"]);
    // dockerd releases a removed container's endpoints a moment after `rm -f` returns, and
    // refuses the network meanwhile ("has active endpoints"): give it that moment.
    for net in ["front", "back"] {
        let removed = wait_until(Duration::from_secs(10), || {
            let out = d.run(&["network", "rm", net]);
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("No such network")
        });
        assert!(removed, "docker network rm {net}");
    }
    let names = t.network_names();
    assert!(
        !names.iter().any(|n| n == &front || n == &back),
        "{names:?}"
    );
    for tap in &all_taps {
        assert!(!host_link_exists(tap), "{tap} is gone");
    }
    let state: serde_json::Value = serde_json::from_str(&t.exported_state()).expect("state json");
    let plugins = &state["docker_plugins"];
    assert_eq!(plugins[0]["name"], plugin.as_str(), "{plugins}");
    assert_eq!(plugins[0]["networks"], serde_json::json!({}), "{plugins}");
    assert_eq!(plugins[0]["endpoints"], serde_json::json!({}), "{plugins}");

    // --stop removes the socket; dockerd then cannot use the driver.
    t.ok(&["plugin", "docker", "--name", &plugin, "--stop"]);
    assert!(!d.plugin_socket.exists());
    eprintln!("docker test took {:?}", started.elapsed());
}

#[test]
fn docker_ipv6_containers_on_a_tapnet_network() {
    if !common::skip::require(
        "docker",
        &[
            need("dockerd", "docker.io"),
            need("docker", "docker.io"),
            need("/bin/busybox", "busybox-static"),
        ],
    ) {
        return;
    }
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let plugin = format!("tntest6{}", std::process::id());
    let created = missing_leftovers();
    let t = Tapnet::new("docker6");
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let d = Dockerd::start("docker6", &plugin, created);
    d.import_busybox("tapnet-busybox:test");
    let img = "tapnet-busybox:test";

    // A dual-stack network: Docker's IPv6 pool and gateway become tapnet's.
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.233.0.0/24",
        "--subnet",
        "fd00:d0c::/64",
        "-d",
        &plugin,
        "n6",
    ]);
    let n6 = tapnet_network(&d, "n6");
    let view = t.json(&["network", "inspect", &n6]);
    assert_eq!(view["subnet"], "10.233.0.0/24", "{view}");
    assert_eq!(view["subnet6"], "fd00:d0c::/64", "{view}");
    assert_eq!(view["gateway6"], "fd00:d0c::1", "{view}");

    for (name, ip6) in [("c1", "fd00:d0c::10"), ("c2", "fd00:d0c::11")] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "n6",
            "--ip6",
            ip6,
            img,
            "sleep",
            "600",
        ]);
    }
    let addrs =
        String::from_utf8_lossy(&d.exec("c1", "ip -6 addr show dev eth0").stdout).to_string();
    assert!(addrs.contains("fd00:d0c::10/64"), "{addrs}");
    let route = String::from_utf8_lossy(&d.exec("c1", "ip -6 route").stdout).to_string();
    assert!(
        route.contains("default via fd00:d0c::1 dev eth0"),
        "{route}"
    );
    // The plugin keeps the address dockerd gave, and refuses nothing it should not.
    let state = t.exported_state();
    assert!(
        state.contains("fd00:d0c::10") && state.contains("fd00:d0c::11"),
        "{state}"
    );
    // Both families between the containers, over tapnet's switch.
    let out = d.exec("c1", "ping -6 -c 2 -W 2 fd00:d0c::11");
    assert!(
        out.status.success(),
        "ping6 c1 -> c2: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.exec("c2", "ping -c 1 -W 2 10.233.0.2");
    assert!(out.status.success(), "ping c2 -> c1 over IPv4");
    // The v6 gateway answers too (tapnet's gateway speaks IPv6 on a dual-stack network).
    let out = d.exec("c2", "ping -6 -c 1 -W 2 fd00:d0c::1");
    assert!(out.status.success(), "ping6 the gateway");

    for c in ["c1", "c2"] {
        d.ok(&["rm", "-f", c]);
    }
    let removed = wait_until(Duration::from_secs(10), || {
        let out = d.run(&["network", "rm", "n6"]);
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("No such network")
    });
    assert!(removed, "docker network rm n6");
    assert!(!t.network_names().contains(&n6));
    t.ok(&["plugin", "docker", "--name", &plugin, "--stop"]);
}
