//! Rootless mode: every command runs as an unprivileged test user (no capabilities), whose
//! daemon makes its own user and mount namespaces through a holder process and keeps its state
//! in $XDG_RUNTIME_DIR/tapnet. The same features as with root, and clear errors where the host
//! does not allow rootless operation.

mod common;

use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

/// The user with a subordinate ID range (newuidmap path); `tapnet-test1` has none.
const USER: &str = "tapnet-test";
const SINGLE_ID_USER: &str = "tapnet-test1";

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port().to_string())
        .expect("port")
}

#[test]
fn seed_topology_with_live_connect_tcp_and_names() {
    let mut t = Tapnet::rootless("rl-seed", USER);
    t.ok(&["network", "create", "backend"]);
    t.ok(&["network", "create", "frontend"]);
    t.ok(&["sandbox", "create", "container1", "--net", "backend"]);
    t.ok(&["sandbox", "create", "container2", "--net", "backend"]);
    t.ok(&["sandbox", "create", "container3", "--net", "frontend"]);
    t.ok(&["network", "connect", "frontend", "container2"]);

    let info = t.json(&["info"]);
    assert_eq!(info["mode"], "rootless", "{info}");
    assert!(info["holder_pid"].as_i64().is_some(), "{info}");
    let state_dir = t.dir.display().to_string();
    assert_eq!(info["state_dir"].as_str(), Some(state_dir.as_str()));
    // A subordinate range is mapped besides the user: "0 UID 1 1 START COUNT".
    let map: Vec<&str> = info["uid_map"].as_str().unwrap_or("").split(' ').collect();
    assert_eq!(map.len(), 6, "{info}");
    assert_eq!(map[0], "0");
    let uid = t
        .user
        .as_ref()
        .map(|u| u.uid.to_string())
        .unwrap_or_default();
    assert_eq!(map[1], uid);

    // Commands run as root of the user namespace, with the sandbox's names and /etc files.
    assert_eq!(t.exec_ok("container2", &["id", "-u"]).trim(), "0");
    assert_eq!(t.exec_ok("container2", &["hostname"]).trim(), "container2");
    let hosts = t.exec_ok("container2", &["cat", "/etc/hosts"]);
    assert!(hosts.contains("172.18.0.3\tcontainer2"), "{hosts}");
    let links = t.exec_ok("container2", &["ls", "/sys/class/net"]);
    assert!(
        links.contains("eth1"),
        "live connect shows in /sys: {links}"
    );

    assert!(t.ping("container1", "172.18.0.3"));
    assert!(
        t.ping("container3", "172.19.0.3"),
        "across the live connect"
    );
    assert!(!t.ping("container1", "172.19.0.2"), "networks are isolated");
    let resolved = t.exec_ok("container1", &["getent", "hosts", "container2"]);
    assert!(resolved.contains("172.18.0.3"), "{resolved}");
    let (sent, received) = t.tcp_transfer("container1", "container2", "172.18.0.3", 8 << 20);
    assert_eq!(sent, received, "8 MiB with matching SHA-256");

    // Entering by hand, as inspect says, works from the user's shell.
    let enter = t.json(&["sandbox", "inspect", "container1"])["enter"]
        .as_str()
        .unwrap_or("")
        .replace("CMD", "hostname");
    let user = t.user.clone().expect("rootless");
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--", "sh", "-c", &enter])
        .output()
        .expect("nsenter");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "container1",
        "{enter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nat_published_ports_and_capture_as_the_user() {
    let mut t = Tapnet::rootless("rl-nat", USER);
    t.ok(&["network", "create", "n", "--opt", "host_loopback=on"]);
    let web = free_port();
    let publish = format!("{web}:80");
    t.ok(&["sandbox", "create", "a", "--net", "n", "-p", &publish]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);

    // NAT: the gateway address is the user's loopback.
    let port = free_port();
    let server = t.spawn_host_server(&["tcp-serve", "127.0.0.1", &port]);
    let sent = t.traffic(
        "a",
        &["tcp-send", "172.18.0.1", &port, &(4 << 20).to_string()],
    );
    assert_eq!(
        sent,
        t.server_output(server),
        "4 MiB through the user's NAT"
    );

    // A published port at or above ip_unprivileged_port_start is the user's own socket.
    let server = t.spawn_server("a", &["tcp-serve", "0.0.0.0", "80"]);
    let client = Command::new("python3")
        .arg(common::traffic_script())
        .args(["tcp-send", "127.0.0.1", &web, &(1 << 20).to_string()])
        .output()
        .expect("client");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout).trim(),
        t.server_output(server)
    );
    // Below it, a clear error that names the sysctl, and nothing is made.
    let err = t.fails(&["sandbox", "create", "low", "--net", "n", "-p", "80:80"]);
    assert!(err.contains("net.ipv4.ip_unprivileged_port_start"), "{err}");
    assert!(
        t.json(&["sandbox", "ls"])
            .as_array()
            .is_some_and(|a| a.len() == 2)
    );

    // Capture, written by the user's client.
    assert!(t.ping("a", "172.18.0.3"));
    let file = t.dir.with_file_name("rl.pcap");
    let file_arg = file.display().to_string();
    let capture = t
        .command(&["capture", "n", "-w", &file_arg, "-c", "20"])
        .spawn()
        .expect("capture");
    std::thread::sleep(Duration::from_millis(300));
    t.exec_ok("a", &["ping", "-c", "15", "-i", "0.05", "172.18.0.3"]);
    let status = capture.wait_with_output().expect("capture").status;
    assert!(status.success());
    let read = Command::new("tcpdump")
        .args(["-nn", "-r", &file_arg])
        .output()
        .expect("tcpdump -r");
    let text = String::from_utf8_lossy(&read.stdout);
    // 20 frames: mostly the pings' requests and replies, and the odd IPv6 announcement.
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.matches("ICMP echo").count() >= 12, "{text}");
}

#[test]
fn kill_9_restart_restores_sandboxes_and_keeps_tcp() {
    let mut t = Tapnet::rootless("rl-restart", USER);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.3"));
    let before = t.json(&["sandbox", "inspect", "b"]);
    let holder = t.json(&["info"])["holder_pid"].clone();

    let server = t.spawn_server("b", &["tcp-serve", "0.0.0.0", "5001"]);
    let sender = t.spawn_trickle("a", "172.18.0.3", 2_000_000, 4);
    std::thread::sleep(Duration::from_millis(800));
    t.stop_daemon(Signal::SIGKILL);
    let started = Instant::now();
    assert!(
        t.ping("a", "172.18.0.3"),
        "traffic flows again after kill -9"
    );
    eprintln!(
        "traffic again {:?} after the first command",
        started.elapsed()
    );
    assert_eq!(t.json(&["sandbox", "inspect", "b"]), before);
    assert_eq!(
        t.json(&["info"])["holder_pid"],
        holder,
        "the new daemon joined the same holder"
    );
    let sent = sender.wait_with_output().expect("sender");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        t.server_output(server),
        "the TCP connection survived the restart"
    );
}

#[test]
fn a_user_without_subordinate_ids_gets_a_single_id_mapping() {
    let t = Tapnet::rootless("rl-single", SINGLE_ID_USER);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let uid = t.user.as_ref().map(|u| u.uid).unwrap_or_default();
    assert_eq!(t.json(&["info"])["uid_map"], format!("0 {uid} 1"));
    assert!(t.ping("a", "172.18.0.3"));
}

/// Run tapnet as the test user inside a private mount namespace of root's, in which `prepare`
/// (a shell snippet) has changed what the user sees; returns (status, stderr).
fn as_user_in_private_mounts(t: &Tapnet, prepare: &str, args: &str) -> (i32, String) {
    let user = t.user.clone().expect("rootless");
    let runtime = t.runtime_dir.clone().expect("rootless");
    let public = common::public_bin();
    let script = format!(
        "{prepare} && exec setpriv --reuid={} --regid={} --clear-groups -- env XDG_RUNTIME_DIR={} {} {args}",
        user.uid,
        user.gid,
        runtime.display(),
        public.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clear_errors_where_rootless_cannot_work() {
    let t = Tapnet::rootless("rl-errors", USER);
    let scratch = t.dir.with_file_name("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    // Positive control: the same wrapper works when nothing is changed.
    let (code, err) = as_user_in_private_mounts(&t, "true", "network ls");
    assert_eq!(code, 0, "{err}");
    let (code, _) = as_user_in_private_mounts(&t, "true", "system reset");
    assert_eq!(code, 0);

    // /dev/net/tun not accessible: a 0600 node of root's over it.
    let node = scratch.join("tun");
    let prepare = format!(
        "mknod -m 0600 {n} c 10 200 && mount --bind {n} /dev/net/tun",
        n = node.display()
    );
    let (code, err) = as_user_in_private_mounts(&t, &prepare, "network ls");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/dev/net/tun is mode 0600") && err.contains("0666"),
        "{err}"
    );
    // Missing altogether.
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let prepare = format!("mount --bind {} /dev/net", empty.display());
    let (code, err) = as_user_in_private_mounts(&t, &prepare, "network ls");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/dev/net/tun does not exist"), "{err}");

    // No XDG_RUNTIME_DIR: says what to set.
    let user = t.user.clone().expect("rootless");
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--", "env", "-u", "XDG_RUNTIME_DIR"])
        .arg(common::public_bin())
        .args(["network", "ls"])
        .output()
        .expect("tapnet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("XDG_RUNTIME_DIR is not set"), "{err}");
}

#[test]
fn user_namespaces_disabled_is_a_clear_error() {
    let t = Tapnet::rootless("rl-nouserns", USER);
    let user = t.user.clone().expect("rootless");
    let runtime = t.runtime_dir.clone().expect("rootless");
    let bin = common::public_bin();
    // Inside a user namespace of the user's own, allow one more level only: the one `unshare`
    // below takes. tapnet then finds no room for its own (the same error a host with
    // user.max_user_namespaces=0 gives).
    let daemon = |limit: &str| {
        let script = format!(
            "echo {limit} > /proc/sys/user/max_user_namespaces && \
             exec unshare --user --map-user={uid} --map-group={gid} env XDG_RUNTIME_DIR={rt} {bin} daemon",
            uid = user.uid,
            gid = user.gid,
            rt = runtime.display(),
            bin = bin.display()
        );
        Command::new("setpriv")
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .args([
                "--clear-groups",
                "--",
                "unshare",
                "--user",
                "--map-root-user",
                "sh",
                "-c",
            ])
            .arg(script)
            .output()
            .expect("unshare")
    };
    let out = daemon("1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot create a user namespace") && err.contains("max_user_namespaces"),
        "{err}"
    );
}

#[test]
fn sandbox_creation_is_reliable_in_a_private_mount_namespace() {
    // Root mode, daemon and clients inside a mount namespace of their own, made on CPU 0,
    // the daemon on CPU 1: pinning a sandbox's mount namespace failed here about half the time.
    let t = Tapnet::new("mntns-loop");
    let bin = common::bin();
    let dir = t.dir.display().to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mine, daemons) = if cpus > 1 { ("0", "1") } else { ("0", "0") };
    let script = format!(
        r#"set -e
ip link set lo up 2>/dev/null || true
taskset -c {daemons} {bin} --state-dir {dir} daemon >{dir}.log 2>&1 &
for i in $(seq 1 50); do {bin} --state-dir {dir} network ls >/dev/null 2>&1 && break; sleep 0.1; done
fails=0
for i in $(seq 1 30); do
  taskset -c {mine} {bin} --state-dir {dir} sandbox create s$i >/dev/null 2>>{dir}.err || fails=$((fails+1))
done
taskset -c {daemons} {bin} --state-dir {dir} exec s30 -- hostname
echo "fails=$fails"
{bin} --state-dir {dir} system reset
"#
    );
    let out = Command::new("taskset")
        .args([
            "-c",
            mine,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors = std::fs::read_to_string(format!("{dir}.err")).unwrap_or_default();
    let _ = std::fs::remove_file(format!("{dir}.err"));
    let _ = std::fs::remove_file(format!("{dir}.log"));
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("s30\n"), "{stdout}");
    assert!(stdout.contains("fails=0"), "{stdout}: {errors}");
    assert!(wait_until(Duration::from_secs(5), || !t.dir.exists()));
}

#[test]
fn impairments_and_trace_work_rootless() {
    let t = Tapnet::rootless("rl-lab", USER);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let rtt = |t: &Tapnet| -> f64 {
        let out = t.exec_ok("a", &["ping", "-c", "10", "-i", "0.05", "-q", "172.18.0.3"]);
        // rtt min/avg/max/mdev = 0.061/0.074/0.101/0.011 ms
        out.lines()
            .find_map(|l| l.split(" = ").nth(1))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rtt in {out}"))
    };
    let base = rtt(&t);
    t.ok(&["link", "set", "b", "n", "--delay", "20ms"]);
    let delayed = rtt(&t);
    assert!(
        (18.0..=22.0).contains(&(delayed - base)),
        "rootless 20 ms delay: {base:.3} -> {delayed:.3} ms"
    );
    let report = t.json(&["trace", "n", "--in", "a", "--dst", "172.18.0.3"]);
    assert_eq!(report["decision"], "unicast", "{report}");
    assert!(
        report["steps"].to_string().contains("delay 20ms"),
        "{report}"
    );
    t.ok(&["link", "reset"]);
    assert!(rtt(&t) < base + 2.0, "reset restores the link");
}

#[test]
fn the_demo_runs_rootless_and_cleans_up() {
    let t = Tapnet::rootless("rl-demo", USER);
    let out = t.ok(&["demo"]);
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("tapnet demo: state dir "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    // Within a network the transfers work, across networks the gateway refuses them, and the
    // host's loopback is reached through NAT.
    assert!(out.contains("ok ("), "{out}");
    assert!(out.contains("unreachable (connection refused)"), "{out}");
    assert!(out.contains("172.18.0.1:"), "{out}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    // Nor its daemon's namespace holder (the demo joins the holder, then must still stop it).
    let holders: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            let p = e.path();
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == "tapnet-nsholder")
                && std::fs::read(p.join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        holders.is_empty(),
        "holders of {dir} left running: {holders:?}"
    );
}
