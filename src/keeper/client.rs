//! The daemon's side of the fd keeper. One per daemon process (a global: the controller's
//! drivers reach it from where they make and remove TAPs without another field to thread
//! through). Failures never fail what the daemon was doing: an endpoint the keeper does not hold
//! works as before and is only made anew after a `kill -9`; the first failure is logged and the
//! keeper is not used again by this daemon.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::socket::{UnixAddr, connect, getsockopt, sockopt};

use super::proto::{self, MAX_MESSAGE, Reply};
use super::{KEEPER_COMM, process};
use crate::error::{Context, Error, Result};
use crate::paths::StateDir;

struct Keeper {
    conn: Mutex<OwnedFd>,
    /// The fds the keeper handed back on start, by key, until `restore` claims them.
    /// Ordered, so that a sandbox's keys (one prefix) are found without a scan of all.
    restored: Mutex<BTreeMap<String, Vec<OwnedFd>>>,
    /// The keys whose TAPs the restore took as they were.
    reused: Mutex<HashSet<String>>,
    /// Did the keeper give anything back on start?
    gave_back: bool,
    broken: AtomicBool,
}

static KEEPER: OnceLock<Keeper> = OnceLock::new();

/// The key of a sandbox endpoint's TAP: the sandbox and the interface name in it.
pub fn endpoint_key(sandbox: &str, interface: &str) -> String {
    format!("ep/{sandbox}/{interface}")
}

/// Is `pid` a live keeper (not a zombie that keeps its name)?
fn is_keeper(pid: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    comm.trim() == KEEPER_COMM && !zombie
}

fn connect_to(dirs: &StateDir) -> Result<OwnedFd> {
    let path = dirs.keeper_socket();
    let conn = process::seqpacket()?;
    let addr = UnixAddr::new(&path).context(|| format!("address {}", path.display()))?;
    connect(conn.as_raw_fd(), &addr).context(|| format!("connect to {}", path.display()))?;
    let peer = getsockopt(&conn, sockopt::PeerCredentials)
        .context(|| format!("credentials of {}", path.display()))?;
    if peer.uid() != nix::unistd::geteuid().as_raw() || !is_keeper(peer.pid()) {
        return Err(Error::invalid(format!(
            "{} is not served by a tapnet fd keeper of this user (pid {}, uid {})",
            path.display(),
            peer.pid(),
            peer.uid()
        )));
    }
    let timeout = nix::sys::time::TimeVal::new(10, 0);
    let _ = nix::sys::socket::setsockopt(&conn, sockopt::ReceiveTimeout, &timeout);
    Ok(conn)
}

/// Connect to the keeper of `dirs`, starting one when there is none, and take back every fd it
/// holds. The caller must be single-threaded (a keeper is forked).
pub fn start(dirs: &StateDir) -> Result<()> {
    let conn = match connect_to(dirs) {
        Ok(c) => c,
        Err(_) => {
            let pid = process::spawn(dirs)?;
            let mut tries = 0;
            loop {
                match connect_to(dirs) {
                    Ok(c) => break c,
                    Err(_) if tries < 500 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        return Err(Error::invalid(format!("reach the fd keeper {pid}: {e}")));
                    }
                }
            }
        }
    };
    let restored = take_all(&conn)?;
    if !restored.is_empty() {
        eprintln!(
            "tapnet: the fd keeper gave back the TAPs of {} endpoint(s)",
            restored.len()
        );
    }
    let _ = KEEPER.set(Keeper {
        gave_back: !restored.is_empty(),
        reused: Mutex::new(HashSet::new()),
        conn: Mutex::new(conn),
        restored: Mutex::new(restored),
        broken: AtomicBool::new(false),
    });
    Ok(())
}

fn take_all(conn: &OwnedFd) -> Result<BTreeMap<String, Vec<OwnedFd>>> {
    let fail = |what: String| Error::invalid(format!("take the fd keeper's fds: {what}"));
    proto::send(conn.as_fd(), b"T", &[]).map_err(|e| fail(e.to_string()))?;
    let mut out = BTreeMap::new();
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        let (len, fds) = proto::recv(conn.as_fd(), &mut buf)
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("the keeper closed the connection".into()))?;
        match proto::parse_reply(&buf[..len], fds.len()) {
            Some(Reply::Kept(key)) => {
                out.insert(key.to_string(), fds);
            }
            Some(Reply::End) => return Ok(out),
            other => return Err(fail(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Send one request and wait for its `O`.
fn call(conn: &OwnedFd, msg: &[u8], fds: &[RawFd]) -> Result<()> {
    let fail = |what: String| Error::invalid(format!("fd keeper: {what}"));
    proto::send(conn.as_fd(), msg, fds).map_err(|e| fail(e.to_string()))?;
    let mut buf = [0u8; MAX_MESSAGE];
    let (len, fds) = proto::recv(conn.as_fd(), &mut buf)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("the keeper closed the connection".into()))?;
    match proto::parse_reply(&buf[..len], fds.len()) {
        Some(Reply::Ok) => Ok(()),
        Some(Reply::Failed(text)) => Err(fail(text.to_string())),
        other => Err(fail(format!("unexpected answer {other:?}"))),
    }
}

fn with_keeper(what: &str, f: impl FnOnce(&OwnedFd) -> Result<()>) {
    let Some(k) = KEEPER.get() else { return };
    if k.broken.load(Ordering::Relaxed) {
        return;
    }
    let conn = lock(&k.conn);
    if let Err(e) = f(&conn) {
        k.broken.store(true, Ordering::Relaxed);
        eprintln!(
            "tapnet: {what}: {e}; TAPs are no longer kept across a kill of this daemon \
             (restart it to use the keeper again)"
        );
    }
}

/// Keep a second reference to `fds`, the queues of the TAP `key`, in the keeper.
pub fn put(key: &str, fds: &[impl AsRawFd]) {
    if fds.is_empty() || fds.len() > proto::MAX_FDS || !proto::valid_key(key.as_bytes()) {
        return;
    }
    // A TAP the restore took back from the keeper: it holds these very files already.
    if KEEPER.get().is_some_and(|k| lock(&k.reused).contains(key)) {
        return;
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let (msg, n) = proto::message(b'P', key);
    with_keeper(&format!("keep the TAP of {key}"), |c| {
        call(c, &msg[..n], &raw)
    });
}

/// Close the keeper's references to the TAP `key` (before the daemon closes its own, so that
/// the TAP goes with them).
pub fn forget(key: &str) {
    if !proto::valid_key(key.as_bytes()) {
        return;
    }
    if let Some(k) = KEEPER.get() {
        lock(&k.restored).remove(key);
        lock(&k.reused).remove(key);
    }
    let (msg, n) = proto::message(b'D', key);
    with_keeper(&format!("drop the TAP of {key}"), |c| {
        call(c, &msg[..n], &[])
    });
}

/// The fds of TAP `key` the keeper gave back on start, once.
pub fn take_restored(key: &str) -> Option<Vec<OwnedFd>> {
    lock(&KEEPER.get()?.restored).remove(key)
}

/// The restore took the kept TAP `key` as it was.
pub fn mark_reused(key: &str) {
    if let Some(k) = KEEPER.get() {
        lock(&k.reused).insert(key.to_string());
    }
}

/// Did the restore take the TAP of every interface in `interfaces` of `sandbox` as it was, and
/// did the keeper give back nothing else of that sandbox (an endpoint whose removal a killed
/// daemon had begun)? Then its routes are as the last daemon left them.
pub fn all_reused(sandbox: &str, interfaces: &[&str]) -> bool {
    let Some(k) = KEEPER.get() else { return false };
    let prefix = endpoint_key(sandbox, "");
    let reused = lock(&k.reused);
    !interfaces.is_empty()
        && interfaces
            .iter()
            .all(|i| reused.contains(&endpoint_key(sandbox, i)))
        && !lock(&k.restored)
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(key, _)| key.starts_with(&prefix))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// After the restore: the fds no endpoint claimed (a sandbox that is gone, or made anew) are
/// closed here and in the keeper.
pub fn forget_unclaimed() {
    let Some(k) = KEEPER.get() else { return };
    let keys: Vec<String> = lock(&k.restored).keys().cloned().collect();
    for key in keys {
        forget(&key);
    }
}

/// A clean stop: the keeper closes everything and exits (the TAPs go, as they did before the
/// keeper); wait for it, as long as their teardown takes, so that the stop is complete when the
/// daemon exits. Then its socket is removed.
pub fn quit(dirs: &StateDir) {
    let Some(k) = KEEPER.get() else { return };
    let conn = lock(&k.conn);
    // Teardown of many TAPs takes long (an RCU grace period each).
    let timeout = nix::sys::time::TimeVal::new(300, 0);
    let _ = nix::sys::socket::setsockopt(&*conn, sockopt::ReceiveTimeout, &timeout);
    if let Err(e) = call(&conn, b"Q", &[]) {
        eprintln!("tapnet: stop the fd keeper: {e}");
    }
    let _ = std::fs::remove_file(dirs.keeper_socket());
    let _ = std::fs::remove_file(dirs.keeper_pid_file());
    k.broken.store(true, Ordering::Relaxed);
}

/// A daemon that could not start: `quit` a keeper that gave nothing back (it holds only what
/// this start made); one that did keeps its TAPs for the next start.
pub fn quit_if_nothing_was_kept(dirs: &StateDir) {
    if KEEPER.get().is_some_and(|k| !k.gave_back) {
        quit(dirs);
    }
}

/// `system reset`: end the keeper of `dirs` (the TAPs it holds go with it) and remove its files.
pub fn stop(dirs: &StateDir) {
    if let Ok(text) = std::fs::read_to_string(dirs.keeper_pid_file())
        && let Ok(pid) = text.trim().parse::<i32>()
        && is_keeper(pid)
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..3000 {
            if !is_keeper(pid.as_raw()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(dirs.keeper_socket());
    let _ = std::fs::remove_file(dirs.keeper_pid_file());
}
