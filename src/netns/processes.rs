//! Finding the processes that live in a sandbox's network namespace, for `sandbox rm`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A process inside a namespace: its PID and command name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub name: String,
}

/// Processes whose network namespace is the one pinned at `netns`.
pub fn in_netns(netns: &Path) -> Vec<Process> {
    let Ok(target) = std::fs::metadata(netns) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.ino() == target.ino() && ns.dev() == target.dev() {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            out.push(Process { pid, name });
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// SIGKILL every process in the namespace and wait (up to 5 s) until none is left.
pub fn kill_all(netns: &Path) -> Vec<Process> {
    // A test hook: make this slow on purpose, as a process stuck in the kernel would, so that
    // a test can show the daemon keeps answering meanwhile.
    if let Some(ms) = std::env::var("TAPNET_TEST_SLOW_KILL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = in_netns(netns);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        for p in &left {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
