//! Shared harness of the end-to-end tests: drive the built `tapnet` binary as a user would, each
//! test with its own state dir, and tear everything down on success and on failure (Drop).
#![allow(dead_code)]

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod cni;
pub mod plugin_http;
pub mod skip;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tapnet")
}

pub fn traffic_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/traffic.py")
}

/// An unprivileged user that rootless tests run tapnet as. scripts/test.sh creates
/// `tapnet-test` (with a subordinate ID range) and `tapnet-test1` (without one).
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn test_user(name: &str) -> TestUser {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, name])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "test user {name} is missing: scripts/test.sh creates it (useradd {name})"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    TestUser {
        name: name.to_string(),
        uid: id("-u"),
        gid: id("-g"),
    }
}

const PUBLIC_COPIES: &str = "tapnet-e2e-bin-";

/// The copies of test processes that have exited (a static has no Drop to remove its own):
/// each is a 100+ MiB binary, and a day of test runs filled a disk with them.
fn remove_stale_copies() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PUBLIC_COPIES))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The tapnet binary and the traffic script, copied where an unprivileged user can run them
/// (the checkout may live in a directory only root can enter).
fn public_copies() -> &'static (PathBuf, PathBuf) {
    static COPIES: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    COPIES.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        remove_stale_copies();
        let dir = std::env::temp_dir().join(format!("{PUBLIC_COPIES}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create public bin dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin_copy = dir.join("tapnet");
        std::fs::copy(bin(), &bin_copy).expect("copy tapnet");
        let script = dir.join("traffic.py");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/traffic.py"),
            &script,
        )
        .expect("copy traffic.py");
        for f in [&bin_copy, &script] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        (bin_copy, script)
    })
}

/// The tapnet binary, where an unprivileged user can run it.
pub fn public_bin() -> PathBuf {
    public_copies().0.clone()
}

/// One daemon's world: a unique state dir under /tmp, reset when dropped. A rootless one runs
/// every command as a test user, with its state dir under a private XDG_RUNTIME_DIR.
pub struct Tapnet {
    pub dir: PathBuf,
    children: Vec<Option<Child>>,
    pub user: Option<TestUser>,
    /// The rootless user's XDG_RUNTIME_DIR (the state dir is its `tapnet`).
    pub runtime_dir: Option<PathBuf>,
}

impl Tapnet {
    pub fn new(tag: &str) -> Self {
        assert!(
            nix_is_root(),
            "the end-to-end tests need root (namespaces and TAP devices); run scripts/test.sh as root"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tapnet-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Tapnet {
            dir,
            children: Vec::new(),
            user: None,
            runtime_dir: None,
        }
    }

    /// A world whose commands run as `user` (rootless mode), with the default state dir
    /// `$XDG_RUNTIME_DIR/tapnet`. Needs /dev/net/tun mode 0666 (scripts/test.sh sees to it).
    pub fn rootless(tag: &str, user: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let user = test_user(user);
        let mode = std::fs::metadata("/dev/net/tun")
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(
            mode, 0o666,
            "rootless tests need /dev/net/tun mode 0666 (scripts/test.sh sets it for the run)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let runtime =
            std::env::temp_dir().join(format!("tapnet-rl-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runtime);
        std::fs::create_dir_all(&runtime).expect("create runtime dir");
        std::os::unix::fs::chown(&runtime, Some(user.uid), Some(user.gid)).expect("chown");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        public_copies();
        Tapnet {
            dir: runtime.join("tapnet"),
            children: Vec::new(),
            user: Some(user),
            runtime_dir: Some(runtime),
        }
    }

    /// The traffic script's path, readable by whoever runs the commands.
    pub fn script(&self) -> PathBuf {
        match self.user {
            Some(_) => public_copies().1.clone(),
            None => traffic_script(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match (&self.user, &self.runtime_dir) {
            (Some(user), Some(runtime)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .args(["--clear-groups", "--"])
                    .arg(&public_copies().0)
                    .env("XDG_RUNTIME_DIR", runtime)
                    .env("HOME", runtime)
                    .current_dir(runtime);
                cmd
            }
            _ => {
                let mut cmd = Command::new(bin());
                cmd.arg("--state-dir").arg(&self.dir);
                cmd
            }
        };
        cmd.args(args);
        // Outbound NAT of every daemon a test starts reaches the host's loopback only: no test
        // can send a packet off this machine, whatever it does.
        cmd.env("TAPNET_NAT_ALLOW", "127.0.0.0/8");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tapnet {args:?}: {e}"))
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tapnet {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The committed state as JSON text (`tapnet system export`): what state.json holds once
    /// the daemon has stopped (while it runs, commits go to the journal after the snapshot).
    #[allow(dead_code)]
    pub fn exported_state(&self) -> String {
        self.ok(&["system", "export"])
    }

    /// Run and insist on exit status 1 with one `tapnet: error:` line; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "tapnet {args:?} should fail with status 1: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.starts_with("tapnet: error: "), "stderr: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one error line: {stderr}"
        );
        stderr
    }

    /// Run and insist on exit status 2 (a usage error: nothing was sent to the daemon); returns
    /// stderr, which names what is wrong.
    pub fn misuse(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(2),
            "tapnet {args:?} should be a usage error (status 2): stdout {} stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("error: "), "stderr: {stderr}");
        stderr
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let out = self.ok(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {out}"))
    }

    /// Names from `network ls`, in order.
    pub fn network_names(&self) -> Vec<String> {
        self.json(&["network", "ls"])
            .as_array()
            .expect("network list")
            .iter()
            .map(|n| n["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// `tapnet exec SANDBOX -- ARGS`, returning the whole output.
    pub fn exec(&self, sandbox: &str, args: &[&str]) -> Output {
        let mut full = vec!["exec", sandbox, "--"];
        full.extend(args);
        self.run(&full)
    }

    pub fn exec_ok(&self, sandbox: &str, args: &[&str]) -> String {
        let out = self.exec(sandbox, args);
        assert!(
            out.status.success(),
            "exec in {sandbox} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ping(&self, sandbox: &str, ip: &str) -> bool {
        self.exec(sandbox, &["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
            .status
            .success()
    }

    /// Start a traffic.py server in `sandbox` and wait until it listens.
    /// `traffic.py tcp-trickle`: `bytes` from `sandbox` to `ip`:5001 spread over `secs`, for a
    /// stream that must live through a restart; its stdout (the sender's report) piped.
    #[allow(dead_code)]
    pub fn spawn_trickle(
        &self,
        sandbox: &str,
        ip: &str,
        bytes: u64,
        secs: u32,
    ) -> std::process::Child {
        let script = self.script().display().to_string();
        let (bytes, secs) = (bytes.to_string(), secs.to_string());
        self.command(&[
            "exec",
            sandbox,
            "--",
            "python3",
            &script,
            "tcp-trickle",
            ip,
            "5001",
            &bytes,
            &secs,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("trickle sender")
    }

    /// `ip -o link` in the sandbox's network namespace, entered by its pin with nsenter (not
    /// `tapnet exec`, which would start the daemon again).
    #[allow(dead_code)]
    pub fn links_without_daemon(&self, sandbox: &str) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!(
                "--net={}",
                self.dir.join("netns").join(sandbox).display()
            ))
            .args(["ip", "-o", "link"])
            .output()
            .expect("nsenter");
        let links = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && links.contains("lo"), "{links}");
        links
    }

    pub fn spawn_server(&mut self, sandbox: &str, args: &[&str]) -> usize {
        let script = self.script();
        let mut full = vec![
            "exec",
            sandbox,
            "--",
            "python3",
            script.to_str().unwrap_or(""),
        ];
        full.extend(args);
        let mut child = self
            .command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("server output");
        assert_eq!(line.trim(), "ready", "server in {sandbox} did not start");
        child.stdout = Some(reader.into_inner());
        self.children.push(Some(child));
        self.children.len() - 1
    }

    /// Start a traffic.py server in the daemon's (this test's) own namespace, on loopback.
    pub fn spawn_host_server(&mut self, args: &[&str]) -> usize {
        self.spawn_host(args).0
    }

    /// `spawn_host_server` with PORT 0 in `args`: the server binds a port the kernel picks and
    /// holds it, so no other test can take it between a guess and the bind. Returns the index
    /// and the port.
    pub fn spawn_host_server_on_free_port(&mut self, args: &[&str]) -> (usize, String) {
        let (index, port) = self.spawn_host(args);
        (index, port.expect("server reports its port"))
    }

    fn spawn_host(&mut self, args: &[&str]) -> (usize, Option<String>) {
        let mut child = Command::new("python3")
            .arg(traffic_script())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn host server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("server output");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "host server did not start");
        let port = words.next().map(str::to_string);
        child.stdout = Some(reader.into_inner());
        self.children.push(Some(child));
        (self.children.len() - 1, port)
    }

    /// Run traffic.py in `sandbox` and return what it printed.
    pub fn traffic(&self, sandbox: &str, args: &[&str]) -> String {
        let script = self.script();
        let mut full = vec!["python3", script.to_str().unwrap_or("")];
        full.extend(args);
        self.exec_ok(sandbox, &full).trim().to_string()
    }

    /// Wait for server `index` to exit and return what it printed after "ready".
    pub fn server_output(&mut self, index: usize) -> String {
        let child = self.children[index]
            .take()
            .expect("child already collected");
        let out = child.wait_with_output().expect("server exit");
        assert!(out.status.success(), "server failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// TCP transfer of `bytes` from `from` to `server_ip` in `to`; both sides' "BYTES SHA256".
    pub fn tcp_transfer(
        &mut self,
        from: &str,
        to: &str,
        server_ip: &str,
        bytes: usize,
    ) -> (String, String) {
        let port = "5001";
        let server = self.spawn_server(to, &["tcp-serve", server_ip, port]);
        let script = self.script();
        let sent = self.exec_ok(
            from,
            &[
                "python3",
                script.to_str().unwrap_or(""),
                "tcp-send",
                server_ip,
                port,
                &bytes.to_string(),
            ],
        );
        let received = self.server_output(server);
        (sent.trim().to_string(), received)
    }

    /// Start tcpdump on `iface` in `sandbox` for 4 s with a capture filter; waits until it
    /// listens. Read the result with `capture_count`.
    pub fn spawn_capture(&mut self, sandbox: &str, iface: &str, filter: &[&str]) -> usize {
        let mut full = vec![
            "exec", sandbox, "--", "timeout", "4", "tcpdump", "-i", iface, "-nn", "-l", "-c",
            "1000",
        ];
        full.extend(filter);
        let mut child = self
            .command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let n = reader.read_line(&mut line).expect("tcpdump output");
            assert!(n > 0, "tcpdump in {sandbox} did not start");
        }
        self.children.push(Some(child));
        self.children.len() - 1
    }

    /// The frames the capture `index` saw, one line each (waits for its 4 s to end).
    pub fn captured(&mut self, index: usize) -> Vec<String> {
        let child = self.children[index]
            .take()
            .expect("child already collected");
        let out = child.wait_with_output().expect("tcpdump exit");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Send `signal` to the daemon and wait until it is gone: its lock is free, so every thread
    /// has exited and its fds are closed. (The main thread turns zombie earlier, and nobody may
    /// reap it: the client that started it has exited.)
    pub fn stop_daemon(&self, signal: Signal) {
        let pid = self.pid().expect("daemon pid");
        kill(Pid::from_raw(pid), signal).expect("signal daemon");
        let lock = self.dir.join("tapnet.lock");
        let gone = wait_until(Duration::from_secs(10), || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&lock)
                .map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok())
                .unwrap_or(true)
        });
        assert!(gone, "daemon {pid} did not stop on {signal:?}");
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("tapnet.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Tapnet {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The daemon's side of the story, before reset deletes it.
            let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
            eprintln!("--- daemon.log of {} ---\n{log}", self.dir.display());
        }
        let _ = self
            .command(&["--no-autostart", "system", "reset"])
            .output();
        if self.dir.exists() {
            eprintln!("warning: {} survived system reset", self.dir.display());
        }
        if let Some(runtime) = &self.runtime_dir {
            let _ = std::fs::remove_dir_all(runtime);
        }
    }
}

/// A daemon started with `args`, its stderr in a file of its own; killed on drop if the
/// `Tapnet` guard's reset has not stopped it already.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(t: &Tapnet, args: &[&str]) -> Daemon {
        Self::start_with(t, args, |_| {})
    }

    /// `prepare` may change the daemon's command before it is spawned.
    pub fn start_with(t: &Tapnet, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Daemon {
        let log = t.dir.with_extension("log");
        let file = std::fs::File::create(&log).expect("daemon log");
        let mut full = vec!["daemon"];
        full.extend(args);
        let mut cmd = t.command(&full);
        prepare(&mut cmd);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("daemon");
        assert!(
            wait_until(Duration::from_secs(5), || t
                .dir
                .join("tapnet.sock")
                .exists()),
            "daemon did not start"
        );
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Counters of one port from `tapnet stats --format json`.
pub fn port_stats(t: &Tapnet, port: &str) -> serde_json::Value {
    let rows = t.json(&["stats"]);
    rows.as_array()
        .and_then(|a| a.iter().find(|r| r["port"] == port).cloned())
        .unwrap_or_else(|| panic!("no port {port} in {rows}"))
}

/// Wait until a `tapnet capture -w PATH` has written its pcap header: the daemon sends it only
/// once every datapath worker has acknowledged the capture, so frames sent afterwards are in it.
pub fn wait_for_capture(path: &Path) {
    let started = wait_until(Duration::from_secs(10), || {
        std::fs::metadata(path).is_ok_and(|m| m.len() >= 24)
    });
    assert!(started, "capture into {} did not start", path.display());
}

/// A container image tarball made of the static busybox binary and its applet links, under
/// `dir` (no registry needed): for `docker import` and `podman import`.
pub fn busybox_tarball(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("image dir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy /bin/busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    let tar = dir.join("busybox.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar the busybox image");
    tar
}
