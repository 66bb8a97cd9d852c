//! `tapnet system reset`: stop the daemon and remove everything the state dir owns.
//! Works from the files alone, so it also cleans up after a daemon that was killed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::api::client::Client;
use crate::api::types::Request;
use crate::error::{Context, Result};
use crate::netns::{namespace, processes};
use crate::paths::StateDir;
use crate::rootless::holder;
use crate::state_dir;

fn daemon_pid(dirs: &StateDir) -> Option<Pid> {
    let text = std::fs::read_to_string(dirs.pid_file()).ok()?;
    let pid = Pid::from_raw(text.trim().parse().ok()?);
    (!is_gone(pid)).then_some(pid)
}

/// Gone, or a zombie: an autostarted daemon's parent has exited, and the machine's init may
/// be slow (or unwilling) to reap it.
fn is_gone(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn wait_gone(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stop the daemon of `dirs`, politely first.
pub fn stop_daemon(client: &Client) {
    let dirs = client.dirs();
    let pid = daemon_pid(dirs);
    if client.daemon_running() {
        // Never start a daemon only to stop it.
        let _ = Client::new(dirs.clone(), false).call_value(&Request::Shutdown);
    }
    if let Some(pid) = pid
        && !wait_gone(pid, Duration::from_secs(10))
    {
        let _ = kill(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(2));
    }
    // The main thread exits first; wait for the rest so that its TAPs are closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state_dir::lock_is_free(dirs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mount points at or below `root`, deepest first.
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(namespace::unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Every process (other than the holder and this one, which may have joined it, as the demo
/// does) in the user namespace of rootless holder `holder`:
/// whatever `tapnet exec` started in sandboxes.
fn in_userns_of(holder: i32) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(format!("/proc/{holder}/ns/user")) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != holder && pid != std::process::id() as i32)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/user"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

/// Rootless: kill what runs in sandboxes, then the holder; its namespaces, and with them every
/// sandbox's, go when it does.
fn stop_holder(dirs: &StateDir) {
    let Some(holder) = holder::find(dirs) else {
        let _ = std::fs::remove_file(dirs.holder_pid_file());
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = in_userns_of(holder);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    holder::stop(dirs);
}

pub fn reset(client: &Client) -> Result<()> {
    let dirs = client.dirs().clone();
    stop_daemon(client);
    let root = dirs.root();
    if !root.exists() {
        return Ok(());
    }
    stop_holder(&dirs);
    // The TAPs a killed daemon left to its keeper go with it.
    crate::keeper::client::stop(&dirs);
    // Kill what runs inside sandboxes, but never anything in our own namespace (host-network
    // sandboxes pin the daemon's namespace, which is everybody's).
    let own = std::fs::metadata("/proc/self/ns/net")
        .map(|m| (m.dev(), m.ino()))
        .ok();
    if let Ok(entries) = std::fs::read_dir(dirs.netns_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            let id = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
            if namespace::is_mounted_ns(&path) && id != own {
                processes::kill_all(&path);
            }
        }
    }
    for mount in mounts_below(root) {
        namespace::remove(&mount);
    }
    // A copy of a pin directory in the mount namespace of a `tapnet exec` that just ended can
    // outlive the process for a moment (the kernel frees namespaces lazily): EBUSY, try again.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match std::fs::remove_dir_all(root) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => {
                return result.context(|| format!("remove state dir {}", root.display()));
            }
        }
    }
}
