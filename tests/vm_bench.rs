//! The VM case of scripts/bench.sh: one guest (tests/support/guest.rs) sends a file over TCP
//! through one of four ways out of a VM, and the line it prints is what bench.sh records.
//!
//! `VM_BENCH_CASE` picks the way (unset: the test says so and does nothing, so a plain
//! `cargo test -- --ignored` stays harmless):
//!
//! - `tapnet-socket`: a tapnet socket port (`--qemu-socket`, QEMU's `-netdev stream`), to a
//!   traffic.py server in a sandbox on the same network;
//! - `tapnet-vhost`: a tapnet vhost-user port (`--vhost-user`), to the same;
//! - `qemu-user`: QEMU's own user networking (`-netdev user`, slirp inside QEMU), to a server on
//!   the host's loopback (the guest's 10.0.2.2);
//! - `passt`: passt on a unix socket, QEMU's `-netdev stream` to it, to a server on the host's
//!   loopback (passt maps its gateway address, 10.0.2.2 here, to the host).
//!
//! `VM_BENCH_MIB` (32, at most 64: the file lives in the guest's RAM) MiB of `VM_BENCH_DATA`
//! (`zero` or `urandom`, default `zero`) are written to the guest's /tmp first; only the `nc`
//! send is timed. `VM_BENCH_ACCEL` is `auto`
//! (default: KVM if a guest comes up under it within 20 s, else TCG), `tcg`, `kvm-host` (or
//! `kvm`) or `kvm-qemu64` (what `accel=` printed, so later runs can skip the probe).
//!
//! Printed, one line: `VMBENCH case=... accel=... mib=... secs=... mbit=...
//! switch_cpu_s=... switch_cpu_s_per_gib=... qemu_cpu_s_per_gib=... qemu_cpu_pct=... boot_s=...`.
//! The switch is the tapnet daemon, or passt (utime+stime of all their threads, from
//! /proc/PID/stat, over the send); for `qemu-user` the switch is inside QEMU, so its figure is
//! QEMU's whole CPU (guest included) and `switch=qemu` says so. The test asserts that the bytes
//! arrived intact, never a speed.

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Tapnet;
use common::skip::{need, require};
use guest::{Accel, Netdev, Vm, VmSpec};

/// A directory for sockets and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tapnet-vmbench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of process `pid` (all its threads), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat's comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz.max(1) as f64
}

/// The accelerator to use: KVM if a guest comes up under it within 20 s (`-cpu host`, then
/// `-cpu qemu64`), else TCG. Probed with a guest of its own on QEMU's user networking, so a
/// failed try never touches the switch under test. Also returns what the probe saw.
fn probe_accel(g: &guest::Guest) -> (Accel, String) {
    let spec = VmSpec {
        socket: Path::new(""),
        mac: "52:54:00:12:34:56",
        ip: "10.0.2.15/24",
        gateway: "10.0.2.2",
        dhcp: false,
        netdev: Netdev::User,
    };
    let mut seen = Vec::new();
    for cpu in ["host", "qemu64"] {
        let accel = Accel::Kvm(cpu);
        match Vm::boot_with(g, &spec, None, accel, Duration::from_secs(20)) {
            Ok(_vm) => return (accel, format!("{}:ok", accel.name())),
            Err(e) => {
                let first = e.lines().next().unwrap_or("").to_string();
                let why = if e.contains("QEMU exited") {
                    "exited"
                } else if first.contains("timed out") {
                    "no-ready-in-20s"
                } else {
                    "failed"
                };
                seen.push(format!("{}:{why}", accel.name()));
            }
        }
    }
    (Accel::Tcg, seen.join(","))
}

/// Where the guest sends, and who switches its frames.
struct Setup {
    netdev: Netdev,
    socket: PathBuf,
    mac: String,
    cidr: String,
    gateway: String,
    /// The receiver's address: in the sandbox `sb` (port 5001), or on the host's loopback (a
    /// port the kernel picks). Started just before the send: traffic.py waits 60 s at most.
    target_ip: String,
    in_sandbox: bool,
    /// The switch process, or None when it is QEMU itself.
    switch: Option<(&'static str, u32)>,
    _passt: Option<Reaped>,
}

fn sandbox_ip(t: &Tapnet, sandbox: &str) -> String {
    let view = t.json(&["sandbox", "inspect", sandbox]);
    let cidr = view["interfaces"][0]["ipv4"]
        .as_str()
        .expect("sandbox ipv4");
    cidr.split('/').next().unwrap_or_default().to_string()
}

fn setup_tapnet(t: &mut Tapnet, dir: &Path, netdev: Netdev) -> Setup {
    let socket = dir.join("vm.sock");
    let kind = match netdev {
        Netdev::VhostUser => "--vhost-user",
        _ => "--qemu-socket",
    };
    t.ok(&["network", "create", "vmbnet", "--subnet", "10.79.0.0/24"]);
    t.ok(&["sandbox", "create", "sb", "--net", "vmbnet"]);
    t.ok(&[
        "port",
        "add",
        "vmbnet",
        "vm1",
        kind,
        socket.to_str().expect("utf-8 path"),
    ]);
    let ports = t.json(&["port", "ls"]);
    let mac = ports[0]["mac"].as_str().expect("mac").to_string();
    let cidr = ports[0]["ipv4"].as_str().expect("ipv4").to_string();
    let ip = sandbox_ip(t, "sb");
    let pid = t.pid().expect("daemon pid") as u32;
    Setup {
        netdev,
        socket,
        mac,
        cidr,
        gateway: "10.79.0.1".to_string(),
        target_ip: ip,
        in_sandbox: true,
        switch: Some(("tapnet", pid)),
        _passt: None,
    }
}

/// The guest's side of QEMU user networking (and of passt here): 10.0.2.15/24, gateway
/// 10.0.2.2, the host's loopback.
fn setup_qemu_user() -> Setup {
    Setup {
        netdev: Netdev::User,
        socket: PathBuf::new(),
        mac: "52:54:00:12:34:56".to_string(),
        cidr: "10.0.2.15/24".to_string(),
        gateway: "10.0.2.2".to_string(),
        target_ip: "10.0.2.2".to_string(),
        in_sandbox: false,
        switch: None,
        _passt: None,
    }
}

fn setup_passt(dir: &Path) -> Setup {
    // passt, started as root, changes to "nobody" before it binds its socket.
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a user nobody (passt changes to it)");
    let sockdir = dir.join("passt");
    std::fs::create_dir_all(&sockdir).expect("passt socket dir");
    std::os::unix::fs::chown(
        &sockdir,
        Some(nobody.uid.as_raw()),
        Some(nobody.gid.as_raw()),
    )
    .expect("chown passt socket dir");
    let socket = sockdir.join("passt.sock");
    let log = std::fs::File::create(dir.join("passt.log")).expect("passt log");
    // IPv4 only, no port forwarding into the guest; its address and gateway as QEMU's user
    // networking has them, and the gateway address mapped to the host (passt's default), with
    // outbound sockets bound to 127.0.0.1. passt drops to "nobody" as it would for a user.
    let child = Command::new("passt")
        .args(["-f", "-e", "-4", "-s"])
        .arg(&socket)
        .args([
            "-a",
            "10.0.2.15",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "-o",
            "127.0.0.1",
            "-t",
            "none",
            "-u",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("start passt");
    let passt = Reaped(child);
    let pid = passt.0.id();
    let up = common::wait_until(Duration::from_secs(10), || socket.exists());
    assert!(
        up,
        "passt did not create {}: {}",
        socket.display(),
        std::fs::read_to_string(dir.join("passt.log")).unwrap_or_default()
    );
    Setup {
        netdev: Netdev::Stream,
        socket,
        mac: "52:54:00:12:34:56".to_string(),
        cidr: "10.0.2.15/24".to_string(),
        gateway: "10.0.2.2".to_string(),
        target_ip: "10.0.2.2".to_string(),
        in_sandbox: false,
        switch: Some(("passt", pid)),
        _passt: Some(passt),
    }
}

#[test]
#[ignore = "a benchmark for scripts/bench.sh: set VM_BENCH_CASE"]
fn vm_throughput_for_bench() {
    let Ok(case) = std::env::var("VM_BENCH_CASE") else {
        eprintln!(
            "vm_throughput_for_bench: VM_BENCH_CASE is unset; skipped (scripts/bench.sh --cases vm \
             runs it; cases: tapnet-socket tapnet-vhost qemu-user passt)"
        );
        return;
    };
    let mut needs = vec![
        need("qemu-system-x86_64", "qemu-system-x86"),
        need("apt-get", "apt"),
        need("dpkg-deb", "dpkg"),
        need("/bin/busybox", "busybox-static"),
    ];
    if case == "passt" {
        needs.push(need("passt", "passt"));
    }
    if !require("qemu", &needs) {
        return;
    }
    let mib: usize = std::env::var("VM_BENCH_MIB")
        .ok()
        .map(|v| v.parse().expect("VM_BENCH_MIB: a number of MiB"))
        .unwrap_or(32);
    // The file lives in the guest's rootfs, in its 256 MiB of RAM: 96 MiB already fail.
    assert!(
        (1..=64).contains(&mib),
        "VM_BENCH_MIB: 1 to 64 (the file lives in the guest's 256 MiB of RAM), not {mib}"
    );
    let data = std::env::var("VM_BENCH_DATA").unwrap_or_else(|_| "zero".to_string());
    assert!(
        data == "zero" || data == "urandom",
        "VM_BENCH_DATA: zero or urandom, not {data}"
    );
    let accel_want = std::env::var("VM_BENCH_ACCEL").unwrap_or_else(|_| "auto".to_string());

    let g = guest::guest();
    let (accel, probe) = match accel_want.as_str() {
        "auto" => probe_accel(&g),
        "tcg" => (Accel::Tcg, "not-probed".to_string()),
        "kvm" | "kvm-host" => (Accel::Kvm("host"), "not-probed".to_string()),
        "kvm-qemu64" => (Accel::Kvm("qemu64"), "not-probed".to_string()),
        other => panic!("VM_BENCH_ACCEL: auto, tcg, kvm-host (kvm) or kvm-qemu64, not {other}"),
    };
    eprintln!("vm_bench: accelerator {} (probe: {probe})", accel.name());

    let dir = TempDir::new();
    let mut t = Tapnet::new("vmbench");
    let setup = match case.as_str() {
        "tapnet-socket" => setup_tapnet(&mut t, &dir.0, Netdev::Stream),
        "tapnet-vhost" => setup_tapnet(&mut t, &dir.0, Netdev::VhostUser),
        "qemu-user" => setup_qemu_user(),
        "passt" => setup_passt(&dir.0),
        other => {
            panic!("VM_BENCH_CASE: tapnet-socket, tapnet-vhost, qemu-user or passt, not {other}")
        }
    };
    let spec = VmSpec {
        socket: &setup.socket,
        mac: &setup.mac,
        ip: &setup.cidr,
        gateway: &setup.gateway,
        dhcp: false,
        netdev: setup.netdev,
    };
    let mut vm = Vm::boot_with(&g, &spec, None, accel, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("vm_bench: {case}: guest up in {:.1} s", vm.boot_secs);

    let bytes = mib * 1024 * 1024;
    let sent = vm.make_file(
        "/tmp/f",
        &format!("/dev/{data}"),
        mib * 1024,
        Duration::from_secs(300),
    );
    let ip = &setup.target_ip;
    let (server, port) = if setup.in_sandbox {
        let index = t.spawn_server("sb", &["tcp-serve", ip, "5001"]);
        (index, "5001".to_string())
    } else {
        t.spawn_host_server_on_free_port(&["tcp-serve", "127.0.0.1", "0"])
    };
    let qemu = vm.pid();
    let switch_pid = setup.switch.map_or(qemu, |(_, pid)| pid);
    let (sw0, q0) = (cpu_secs(switch_pid), cpu_secs(qemu));
    let start = Instant::now();
    vm.ok(
        &format!("nc {ip} {port} < /tmp/f"),
        Duration::from_secs(120 + 10 * mib as u64),
    );
    let secs = start.elapsed().as_secs_f64();
    let (sw1, q1) = (cpu_secs(switch_pid), cpu_secs(qemu));
    let received = t.server_output(server);
    assert_eq!(
        received,
        format!("{bytes} {sent}"),
        "the receiver got other bytes than the guest sent"
    );
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let mbit = bytes as f64 * 8.0 / secs / 1e6;
    let switch_name = setup.switch.map_or("qemu", |(name, _)| name);
    println!(
        "VMBENCH case={case} accel={} kvm_probe={probe} mib={mib} data={data} secs={secs:.3} \
         mbit={mbit:.1} switch={switch_name} switch_cpu_s={:.2} switch_cpu_s_per_gib={:.2} \
         qemu_cpu_s_per_gib={:.2} qemu_cpu_pct={:.0} boot_s={:.1}",
        accel.name(),
        sw1 - sw0,
        (sw1 - sw0) / gib,
        (q1 - q0) / gib,
        100.0 * (q1 - q0) / secs,
        vm.boot_secs
    );
    drop(vm);
}
