//! The control socket under misuse: idle connections cost no threads and delay nobody, and a
//! client talks only to a daemon of its own user (or root), never to a socket someone else
//! planted where it looks.

mod common;

use common::{Tapnet, wait_until};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn threads_of(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).expect("setrlimit");
}

#[test]
fn idle_control_connections_cost_no_threads_and_delay_nobody() {
    const IDLE: usize = 3000;
    raise_fd_limit(IDLE as u64 + 1024);
    let t = Tapnet::new("idleconn");
    t.ok(&["network", "create", "n"]);
    let pid = t.pid().expect("pid");
    let before = threads_of(pid);
    let socket = t.dir.join("tapnet.sock");
    let idle: Vec<UnixStream> = (0..IDLE)
        .map(|i| UnixStream::connect(&socket).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Give the daemon time to accept them all (it would spawn a thread each, if it did).
    std::thread::sleep(Duration::from_millis(500));
    let during = threads_of(pid);
    let started = Instant::now();
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let answered = started.elapsed();
    eprintln!(
        "daemon threads: {before} before, {during} with {IDLE} idle connections; \
         a create took {answered:?} meanwhile"
    );
    assert!(
        during <= before + 2,
        "{IDLE} idle connections made {} threads",
        during - before
    );
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    // A half-sent request holds nobody up either, and is answered once it is whole.
    use std::io::{BufRead, BufReader, Write};
    let mut slow = UnixStream::connect(&socket).expect("connect");
    slow.write_all(br#"{"op":"#).expect("write");
    t.ok(&["sandbox", "ls"]);
    slow.write_all(b"\"ping\"}\n").expect("write");
    let mut answer = String::new();
    BufReader::new(&slow).read_line(&mut answer).expect("read");
    assert!(answer.contains("\"ok\""), "{answer}");
    drop(idle);
}

/// A fake daemon: a unix socket at `path` served by `python3` as `uid`, which writes the
/// number of bytes it received to `path` + ".got" when its peer hangs up.
fn fake_daemon(path: &Path, uid: u32) -> Child {
    let script = format!(
        "import socket,os\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.bind({path:?})\n\
         s.listen(8)\n\
         while True:\n\
         \x20   c,_=s.accept()\n\
         \x20   c.settimeout(5)\n\
         \x20   n=0\n\
         \x20   try:\n\
         \x20       while True:\n\
         \x20           d=c.recv(4096)\n\
         \x20           if not d: break\n\
         \x20           n+=len(d)\n\
         \x20           if b'\\n' in d: c.sendall(b'{{\"ok\":{{\"result\":null}}}}\\n')\n\
         \x20   except Exception: pass\n\
         \x20   open({got:?},'a').write(str(n)+'\\n')\n\
         \x20   c.close()\n",
        path = path.to_string_lossy(),
        got = format!("{}.got", path.to_string_lossy()),
    );
    let child = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        // Debian's python3: one a user's PATH finds may be a shim that nobody can read.
        .args(["--clear-groups", "--", "/usr/bin/python3", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fake daemon");
    assert!(
        wait_until(Duration::from_secs(5), || path.exists()),
        "the fake daemon listens"
    );
    child
}

/// What the fake daemon received, connection by connection.
fn received(path: &Path) -> String {
    std::fs::read_to_string(format!("{}.got", path.to_string_lossy())).unwrap_or_default()
}

struct Scratch(PathBuf, Vec<Child>);
impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_client_talks_only_to_its_own_users_daemon() {
    const NOBODY: u32 = 65534;
    let t = Tapnet::new("trust");
    let mut scratch = Scratch(t.dir.with_extension("planted"), Vec::new());
    let root = scratch.0.clone();
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let client = |dir: &Path| {
        Command::new(common::bin())
            .arg("--state-dir")
            .arg(dir)
            .args(["--no-autostart", "network", "create", "secret-name"])
            .output()
            .expect("client")
    };

    // Positive control: the fake daemon run as root gets the client's request.
    let own = root.join("own");
    std::fs::create_dir(&own).expect("mkdir");
    scratch.1.push(fake_daemon(&own.join("tapnet.sock"), 0));
    let out = client(&own);
    assert!(
        wait_until(Duration::from_secs(5), || !received(
            &own.join("tapnet.sock")
        )
        .is_empty()),
        "positive control: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(received(&own.join("tapnet.sock")).trim(), "0");

    // A state dir of another user (as a rename under a world-writable parent leaves it).
    let planted = root.join("planted");
    std::fs::create_dir(&planted).expect("mkdir");
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).expect("chown");
    scratch
        .1
        .push(fake_daemon(&planted.join("tapnet.sock"), NOBODY));
    let out = client(&planted);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("belongs to uid {NOBODY}")), "{err}");

    // A root-owned dir and socket file, but the daemon behind the socket runs as nobody:
    // SO_PEERCRED tells.
    let peer = root.join("peer");
    std::fs::create_dir(&peer).expect("mkdir");
    std::fs::set_permissions(&peer, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = peer.join("tapnet.sock");
    scratch.1.push(fake_daemon(&socket, NOBODY));
    std::os::unix::fs::chown(&socket, Some(0), Some(0)).expect("chown");
    let out = client(&peer);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("runs as uid {NOBODY}")), "{err}");

    // Neither fake daemon of nobody's got a byte.
    std::thread::sleep(Duration::from_millis(300));
    for socket in [planted.join("tapnet.sock"), socket] {
        let got = received(&socket);
        assert!(
            got.lines().all(|n| n.trim() == "0"),
            "{} received {got:?}",
            socket.display()
        );
    }
}
